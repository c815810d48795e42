/*
 * Pool fast path (the team's incoming list), one interleaving at a time.
 *
 * A submit that finds every thread busy at the limit pushes its task without
 * the pool mutex. Each test holds one submitter inside its race window — it
 * has seen the fast path open but not pushed yet — through the team's test
 * hook (tw__team_set_probe), changes the pool under it, then lets it
 * go, and checks what the submit returned and whether the task ran:
 *
 *   open        nothing changed: the task is taken without a kick, waits
 *               behind the backlog (statistics count it) and runs in order.
 *   idle        the only thread went idle meanwhile: the submitter kicks and
 *               the task runs on it.
 *   finished    the pool was stopped and the team finished meanwhile: the
 *               submit returns TW_EQUIT, the node comes back as submitted,
 *               the task never runs, and the pool can be destroyed.
 *   no thread   the thread exited and no new one can be started: the submit
 *               returns TW_ESYS with the node as submitted; the pool works
 *               afterwards.
 *   resize      max was raised meanwhile: the kick gives the task a new
 *               thread at once, while the old one is still blocked.
 */
#include "harness.h"

#include <string.h>
#include <time.h>

#include "base/thread_start.h"
#include "worker/team.h"

#define HANG_LIMIT 10.0

static void nap(void)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

static void wait_event(tw_event *e)
{
    assert_int_equal(tw_event_wait_timeout(e, HANG_LIMIT), 0);
}

static tw_pool_stats stats(tw_pool *p)
{
    tw_pool_stats s;
    memset(&s, 0xff, sizeof s);
    assert_int_equal(tw_pool_stats_get(p, &s), 0);
    return s;
}

/* ==== the pause ============================================================== */

static struct {
    tw_task *target; /* atomic: the node to hold */
    tw_event paused, resume;
} hold;

static void pause_hook(int where, tw_task *task)
{
    if (where != TW__TEAM_AT_OFFER || task != __atomic_load_n(&hold.target, __ATOMIC_SEQ_CST))
        return;
    tw_event_set(&hold.paused);
    tw_event_wait_timeout(&hold.resume, HANG_LIMIT);
}

static void hold_begin(tw_task *target)
{
    memset(&hold, 0, sizeof hold);
    __atomic_store_n(&hold.target, target, __ATOMIC_SEQ_CST);
    tw__team_set_probe(pause_hook);
}

static int teardown(void **state)
{
    (void)state;
    tw__team_set_probe(NULL);
    tw__thread_fail_nth(0);
    tw_set_diag_hook(NULL, NULL);
    return 0;
}

/* ==== tasks and the submitter ================================================= */

typedef struct gate {
    tw_event started, release;
} gate;

static int gate_task(void *arg)
{
    gate *g = arg;
    tw_event_set(&g->started);
    tw_event_wait_timeout(&g->release, HANG_LIMIT);
    return 0;
}

typedef struct rec {
    tw_lock lock;
    int n;
    int order[8];
    tw_event ran[8];
} rec;

typedef struct rec_arg {
    rec *r;
    int id;
} rec_arg;

static int rec_task(void *arg)
{
    rec_arg *a = arg;
    tw_lock_acquire(&a->r->lock);
    if (a->r->n < 8)
        a->r->order[a->r->n] = a->id;
    a->r->n++;
    tw_lock_release(&a->r->lock);
    tw_event_set(&a->r->ran[a->id]);
    return 0;
}

static int rec_count(rec *r)
{
    tw_lock_acquire(&r->lock);
    int n = r->n;
    tw_lock_release(&r->lock);
    return n;
}

typedef struct submitter {
    tw_pool *p;
    tw_task *node;
    int rc;
} submitter;

static void *submit_thread(void *arg)
{
    submitter *s = arg;
    s->rc = tw_pool_submit(s->p, s->node);
    return NULL;
}

static void quiet_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    (void)d;
}

/* Pool(0, 1): the thread blocked in a gate task, task 0 in the backlog (which
 * opens the fast path), and a thread submitting `node`, held before its
 * push. */
typedef struct scene {
    tw_pool *p;
    gate g;
    rec r;
    rec_arg args[8];
    tw_task node;
    submitter sub;
    pthread_t th;
} scene;

static void scene_start(scene *sc, double idle_timeout)
{
    tw_pool_config cfg = TW_POOL_CONFIG_INIT(0, 1);
    memset(sc, 0, sizeof *sc);
    cfg.idle_timeout = idle_timeout;
    cfg.wedge_timeout = 0;
    assert_int_equal(tw_pool_create_with(&cfg, &sc->p), 0);
    for (int i = 0; i < 8; i++)
        sc->args[i] = (rec_arg){&sc->r, i};
    assert_int_equal(tw_pool_do(sc->p, gate_task, &sc->g), 0);
    wait_event(&sc->g.started);
    assert_int_equal(tw_pool_do(sc->p, rec_task, &sc->args[0]), 0);
    tw_task_init(&sc->node, rec_task, &sc->args[1]);
    hold_begin(&sc->node);
    sc->sub = (submitter){sc->p, &sc->node, 12345};
    sc->th = tw_test_start(submit_thread, &sc->sub);
    wait_event(&hold.paused); /* saw the fast path open; has not pushed */
}

static int scene_let_go(scene *sc)
{
    tw_event_set(&hold.resume);
    tw_test_join(sc->th);
    return sc->sub.rc;
}

/* ==== tests ==================================================================== */

static void test_fastpath_open(void **state)
{
    (void)state;
    scene sc;
    scene_start(&sc, -1);
    assert_int_equal(scene_let_go(&sc), 0);
    /* Pushed, not yet seen by the coordinator: statistics count it. */
    tw_pool_stats s = stats(sc.p);
    assert_int_equal(s.team.backlog, 2);
    assert_int_equal(s.team.busy, 1);
    assert_int_equal(s.threads, 1);
    assert_int_equal(tw_pool_do(sc.p, rec_task, &sc.args[2]), 0);
    assert_int_equal(rec_count(&sc.r), 0);
    tw_event_set(&sc.g.release);
    wait_event(&sc.r.ran[2]);
    assert_int_equal(rec_count(&sc.r), 3);
    assert_int_equal(sc.r.order[0], 0); /* FIFO through backlog and incoming */
    assert_int_equal(sc.r.order[1], 1);
    assert_int_equal(sc.r.order[2], 2);
    assert_int_equal(tw_pool_destroy(sc.p), 0);
}

static void test_fastpath_kick_after_idle(void **state)
{
    (void)state;
    scene sc;
    scene_start(&sc, -1);
    tw_event_set(&sc.g.release); /* the thread runs task 0, then goes idle */
    wait_event(&sc.r.ran[0]);
    double end = tw_test_now() + HANG_LIMIT;
    while (stats(sc.p).team.idle != 1) {
        if (tw_test_now() > end)
            fail_msg("the thread never went idle");
        nap();
    }
    assert_int_equal(scene_let_go(&sc), 0); /* pushed, saw the path closed, kicked */
    wait_event(&sc.r.ran[1]);
    tw_pool_stats s = stats(sc.p);
    assert_int_equal(s.team.backlog, 0);
    assert_int_equal(s.threads, 1);
    assert_int_equal(tw_pool_destroy(sc.p), 0);
    assert_int_equal(rec_count(&sc.r), 2);
}

static void test_fastpath_kick_after_finish(void **state)
{
    (void)state;
    scene sc;
    scene_start(&sc, -1);
    tw_event_set(&sc.g.release);
    /* The backlog runs, the thread retires, the team finishes. */
    assert_int_equal(tw_pool_stop(sc.p, HANG_LIMIT, NULL), 0);
    assert_int_equal(rec_count(&sc.r), 1);
    assert_int_equal(scene_let_go(&sc), TW_EQUIT);
    assert_ptr_equal(sc.node.fn, rec_task); /* given back as submitted */
    assert_ptr_equal(sc.node.arg, &sc.args[1]);
    tw_pool_stats s = stats(sc.p);
    assert_int_equal(s.team.completed, 2); /* the gate and task 0 */
    assert_int_equal(s.team.backlog, 0);
    assert_int_equal(s.threads, 0);
    assert_int_equal(tw_pool_destroy(sc.p), 0);
    assert_int_equal(rec_count(&sc.r), 1); /* never ran */
}

static void test_fastpath_kick_without_thread(void **state)
{
    (void)state;
    scene sc;
    tw_set_diag_hook(quiet_hook, NULL);
    scene_start(&sc, 0.001); /* the thread exits soon after it idles */
    tw_event_set(&sc.g.release);
    wait_event(&sc.r.ran[0]);
    double end = tw_test_now() + HANG_LIMIT;
    while (stats(sc.p).threads != 0) {
        if (tw_test_now() > end)
            fail_msg("the idle thread never exited");
        nap();
    }
    tw__thread_fail_nth(1);
    assert_int_equal(scene_let_go(&sc), TW_ESYS);
    tw__thread_fail_nth(0);
    assert_ptr_equal(sc.node.fn, rec_task);
    assert_ptr_equal(sc.node.arg, &sc.args[1]);
    tw_pool_stats s = stats(sc.p);
    assert_int_equal(s.team.backlog, 0);
    assert_int_equal(s.threads, 0);
    /* The pool still works, and the refused task never runs. */
    assert_int_equal(tw_pool_do(sc.p, rec_task, &sc.args[2]), 0);
    wait_event(&sc.r.ran[2]);
    assert_int_equal(tw_pool_destroy(sc.p), 0);
    assert_int_equal(rec_count(&sc.r), 2);
    assert_int_equal(sc.r.order[1], 2);
}

static void test_fastpath_kick_after_resize(void **state)
{
    (void)state;
    scene sc;
    scene_start(&sc, -1);
    /* A raised max takes task 0 at once and closes the fast path. */
    assert_int_equal(tw_pool_resize(sc.p, 0, 3), 0);
    wait_event(&sc.r.ran[0]);
    assert_int_equal(scene_let_go(&sc), 0); /* kicked: a new thread, or the idle one */
    wait_event(&sc.r.ran[1]);               /* while the gate still holds thread 1 */
    assert_false(tw_event_is_set(&sc.g.release));
    tw_event_set(&sc.g.release);
    assert_int_equal(tw_pool_destroy(sc.p), 0);
    assert_int_equal(rec_count(&sc.r), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fastpath_open, teardown),
        cmocka_unit_test_teardown(test_fastpath_kick_after_idle, teardown),
        cmocka_unit_test_teardown(test_fastpath_kick_after_finish, teardown),
        cmocka_unit_test_teardown(test_fastpath_kick_without_thread, teardown),
        cmocka_unit_test_teardown(test_fastpath_kick_after_resize, teardown),
    };
    return cmocka_run_group_tests_name("pool_fastpath", tests, NULL, NULL);
}
