/*
 * Unit tests for coroutine stacks (twine/async.h): an overflow faults on the
 * guard below the stack and is named on stderr before the process dies of
 * SIGSEGV; faults that are not overflows, and the overflow's own fault after
 * its message, reach the SIGSEGV handler that was installed before; the
 * stack size setting; the per-thread cache of freed stacks.
 *
 * The faults happen in forked children, each of which makes its first
 * coroutine itself (the handler is installed then, once per process): the
 * parent makes none before them.
 */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* ==== children =================================================================== */

struct child {
    char out[4096]; /* what the child wrote on stderr */
    int status;     /* from waitpid */
};

/* Runs fn in a child whose stderr goes to out. */
static void run_child(void (*fn)(void), struct child *c)
{
    int fds[2];
    size_t len = 0;
    ssize_t n;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The test runner's own SIGSEGV handler (cmocka's) is not the one
         * under test: the child starts from the default. */
        signal(SIGSEGV, SIG_DFL);
        struct rlimit no_core = {0, 0}; /* the faults are expected: no core files */
        setrlimit(RLIMIT_CORE, &no_core);
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        fn();
        _exit(0);
    }
    close(fds[1]);
    while ((n = read(fds[0], c->out + len, sizeof c->out - 1 - len)) > 0)
        len += (size_t)n;
    c->out[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &c->status, 0), pid);
}

/* Deep enough recursion for any stack: frames of 2 KiB that the compiler
 * can neither merge nor turn into a loop. */
static volatile int dig_limit = 1 << 30;

static __attribute__((noinline)) int dig(int n, volatile char *up)
{
    volatile char frame[2048];
    if (n >= dig_limit)
        return 0;
    frame[0] = (char)n;
    frame[sizeof frame - 1] = up ? up[0] : 0;
    return dig(n + 1, frame) + frame[0];
}

/* The site the overflowing coroutine is started from, as the message must name it. */
#define OVERFLOW_FILE "overflowing_caller.c"
#define OVERFLOW_LINE 321

static tw_result co_overflows(void *arg)
{
    (void)arg;
    return tw_result_value((void *)(intptr_t)dig(0, NULL), NULL);
}

static void child_overflows(void)
{
    tw_deferred *d;
    tw_async_set_stack_size(32 * 1024);
    tw_async_at(co_overflows, NULL, &d, OVERFLOW_FILE, OVERFLOW_LINE);
    fprintf(stderr, "the overflow did not fault\n");
}

static void previous_handler(int sig, siginfo_t *si, void *uc)
{
    static const char msg[] = "previous handler ran\n";
    (void)sig, (void)si, (void)uc;
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(7);
}

static void install_previous(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = previous_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

static void child_overflows_after_own_handler(void)
{
    install_previous();
    child_overflows();
}

static tw_result co_ready(void *arg)
{
    (void)arg;
    return tw_result_none();
}

/* An address nothing is mapped at. */
static volatile int *volatile bad_pointer = (volatile int *)(uintptr_t)24;

static tw_result co_bad_pointer(void *arg)
{
    (void)arg;
    return tw_result_value((void *)(intptr_t)*bad_pointer, NULL);
}

/* A fault that is not an overflow, in a coroutine, with a handler installed
 * before the library's. */
static void child_bad_pointer_after_own_handler(void)
{
    tw_deferred *d;
    install_previous();
    tw_async(co_bad_pointer, NULL, &d);
}

/* A fault on the thread's own stack, with the default action. */
static void child_bad_pointer_outside(void)
{
    tw_deferred *d;
    tw_async(co_ready, NULL, &d); /* the handler is installed */
    tw_deferred_unref(d);
    fprintf(stderr, "%d\n", *bad_pointer);
}

static void expect_overflow_message(const struct child *c)
{
    char want[256];
    snprintf(want, sizeof want, "twine: stack overflow in the coroutine started at %s:%d: "
             "its stack of %d bytes is used up", OVERFLOW_FILE, OVERFLOW_LINE, 32 * 1024);
    if (!strstr(c->out, want))
        fail_msg("no overflow message on stderr; it had: %s", c->out);
    assert_non_null(strstr(c->out, "tw_async_set_stack_size"));
    assert_non_null(strstr(c->out, "guard page hit at 0x"));
}

static void test_overflow_faults_on_the_guard_with_a_message(void **state)
{
    struct child c;
    (void)state;
    run_child(child_overflows, &c);
    expect_overflow_message(&c);
    assert_null(strstr(c.out, "did not fault"));
    assert_true(WIFSIGNALED(c.status));
    assert_int_equal(WTERMSIG(c.status), SIGSEGV);
}

static void test_overflow_then_reaches_the_previous_handler(void **state)
{
    struct child c;
    (void)state;
    run_child(child_overflows_after_own_handler, &c);
    expect_overflow_message(&c);
    assert_non_null(strstr(c.out, "previous handler ran"));
    assert_true(WIFEXITED(c.status));
    assert_int_equal(WEXITSTATUS(c.status), 7);
}

static void test_other_faults_go_to_the_previous_handler(void **state)
{
    struct child c;
    (void)state;
    run_child(child_bad_pointer_after_own_handler, &c);
    assert_null(strstr(c.out, "stack overflow"));
    assert_non_null(strstr(c.out, "previous handler ran"));
    assert_true(WIFEXITED(c.status));
    assert_int_equal(WEXITSTATUS(c.status), 7);

    run_child(child_bad_pointer_outside, &c);
    assert_null(strstr(c.out, "stack overflow"));
    assert_true(WIFSIGNALED(c.status));
    assert_int_equal(WTERMSIG(c.status), SIGSEGV);
}

/* ==== size and cache (in this process) ============================================== */

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

static void test_stack_size_setting(void **state)
{
    size_t old = tw_async_stack_size();
    long page = sysconf(_SC_PAGESIZE);
    (void)state;
    assert_true(old >= 64 * 1024);
    assert_rc(tw_async_set_stack_size(16 * 1024 - 1), TW_EINVAL);
    assert_rc(tw_async_set_stack_size(((size_t)1 << 30) + 1), TW_EINVAL);
    assert_int_equal(tw_async_stack_size(), old);
    assert_rc(tw_async_set_stack_size(40000), 0);
    assert_int_equal(tw_async_stack_size(), (40000 + (size_t)page - 1) / (size_t)page * (size_t)page);
    assert_rc(tw_async_set_stack_size(old), 0);
}

/* A coroutine may use most of its stack. */
static __attribute__((noinline)) int use_stack(int kib)
{
    volatile char frame[1024];
    frame[0] = 1;
    return kib ? use_stack(kib - 1) + frame[0] : frame[0];
}

static tw_result co_uses(void *arg)
{
    return tw_result_value((void *)(intptr_t)use_stack((int)(intptr_t)arg), NULL);
}

static void test_a_coroutine_uses_its_stack(void **state)
{
    size_t old = tw_async_stack_size();
    tw_deferred *d;
    tw_result r;
    (void)state;
    assert_rc(tw_async_set_stack_size(4 * 1024 * 1024), 0);
    assert_rc(tw_async(co_uses, (void *)(intptr_t)3000, &d), 0); /* ~3 MiB of frames */
    assert_true(tw_deferred_peek(d, &r));
    assert_int_equal((intptr_t)r.ptr, 3001);
    tw_deferred_unref(d);
    assert_rc(tw_async_set_stack_size(old), 0);
}

static uintptr_t seen_frame;

static tw_result co_note_frame(void *arg)
{
    (void)arg;
    seen_frame = (uintptr_t)__builtin_frame_address(0);
    return tw_result_none();
}

static tw_result co_await_src(void *arg)
{
    return tw_await(tw_deferred_ref(*(tw_deferred **)arg));
}

static void start_and_finish(void)
{
    tw_deferred *d;
    assert_rc(tw_async(co_note_frame, NULL, &d), 0);
    assert_true(tw_deferred_called(d));
    tw_deferred_unref(d);
}

/* A freed stack is reused by the next coroutine; the cache is bounded; a
 * size change retires the stacks of the old size. */
static void test_freed_stacks_are_cached(void **state)
{
    tw_async_stats st0, st;
    uintptr_t first;
    tw_deferred *src, *outs[100];
    (void)state;
    start_and_finish();
    tw_async_stats_get(&st0);
    assert_true(st0.stacks_cached >= 1);
    first = seen_frame;
    start_and_finish();
    assert_int_equal(seen_frame, first); /* the same stack, at the same depth */
    tw_async_stats_get(&st);
    assert_int_equal(st.stacks_mapped, st0.stacks_mapped);

    /* 100 at once, then all finish: the cache keeps 64 */
    assert_rc(tw_deferred_create(&src, NULL, NULL), 0);
    for (int i = 0; i < 100; i++)
        assert_rc(tw_async(co_await_src, &src, &outs[i]), 0);
    tw_async_stats_get(&st);
    assert_int_equal(st.running, st0.running + 100);
    assert_int_equal(st.stacks_cached, 0);
    assert_rc(tw_deferred_callback(src, tw_result_none()), 0);
    for (int i = 0; i < 100; i++)
        tw_deferred_unref(outs[i]);
    tw_deferred_unref(src);
    tw_async_stats_get(&st);
    assert_int_equal(st.running, st0.running);
    assert_int_equal(st.stacks_cached, 64);

    /* another size: the next coroutine retires the cached stacks of the old one */
    size_t old = tw_async_stack_size();
    assert_rc(tw_async_set_stack_size(old * 2), 0);
    start_and_finish();
    tw_async_stats_get(&st);
    assert_int_equal(st.stacks_cached, 1);
    assert_int_equal(st.stacks_mapped, st0.stacks_mapped - st0.stacks_cached + 1);
    assert_rc(tw_async_set_stack_size(old), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* first: the parent makes no coroutine before these */
        cmocka_unit_test(test_overflow_faults_on_the_guard_with_a_message),
        cmocka_unit_test(test_overflow_then_reaches_the_previous_handler),
        cmocka_unit_test(test_other_faults_go_to_the_previous_handler),
        cmocka_unit_test_setup_teardown(test_stack_size_setting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_coroutine_uses_its_stack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_stacks_are_cached, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
