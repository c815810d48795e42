/* Coroutine stacks: mappings with a guard below, a per-thread cache, and the
 * report of an overflow.
 *
 * A stack is one anonymous mapping (MAP_NORESERVE: only the pages a
 * coroutine touches cost memory) whose lowest TW__GUARD bytes are PROT_NONE.
 * A stack that runs into them faults at once instead of overwriting whatever
 * lies below. The guard is several pages so that a frame of up to that size
 * cannot step over it; a single frame larger than the guard can.
 *
 * The report. A fault on the guard of the running coroutine's stack is told
 * apart from other faults by a SIGSEGV handler, installed once per process
 * when the first coroutine is made, with SA_ONSTACK: the overflowed stack
 * has no room left for the handler, so every thread that makes coroutines
 * gets an alternate signal stack (unless it has one already, as under
 * AddressSanitizer). On a guard hit the handler writes one line naming the
 * coroutine, puts the previous handler back and returns: the faulting
 * instruction runs again and faults into that handler (by default the
 * process dies of SIGSEGV, with a core dump if enabled). Any other fault
 * goes straight to the previous handler, so an application's own SIGSEGV
 * handling keeps working.
 *
 * The cache. Each thread keeps up to TW__STACK_CACHE freed stacks of the
 * current size, so a loop that starts and finishes coroutines maps nothing.
 * A thread's cache and alternate stack are unmapped when it exits. Stacks of
 * coroutines that never finish are never unmapped. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "async/coro.h"
#include "async/sanitize.h"

#define TW__STACK_MIN (16 * 1024)
#define TW__STACK_MAX ((size_t)1 << 30)
#define TW__ALT_STACK (64 * 1024)

/* Under a sanitizer frames are larger (redzones, instrumentation). */
#if defined(TW__ASAN) || defined(TW__TSAN)
#define TW__STACK_DEFAULT (256 * 1024)
#else
#define TW__STACK_DEFAULT (64 * 1024)
#endif

size_t tw__stack_setting = TW__STACK_DEFAULT; /* relaxed: read once per stack taken */
static size_t mapped;                        /* process-wide count, relaxed */

_Thread_local struct tw__stacks tw__stacks __attribute__((tls_model("initial-exec")));
#define me tw__stacks

static size_t page_size(void)
{
    static size_t page;
    size_t p = __atomic_load_n(&page, __ATOMIC_RELAXED);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        __atomic_store_n(&page, p, __ATOMIC_RELAXED);
    }
    return p;
}

int tw_async_set_stack_size(size_t bytes)
{
    size_t page = page_size();
    if (bytes < TW__STACK_MIN || bytes > TW__STACK_MAX)
        return TW_EINVAL;
    bytes = (bytes + page - 1) & ~(page - 1);
    __atomic_store_n(&tw__stack_setting, bytes, __ATOMIC_RELAXED);
    return 0;
}

size_t tw_async_stack_size(void)
{
    return __atomic_load_n(&tw__stack_setting, __ATOMIC_RELAXED);
}

size_t tw__stack_cached(void)
{
    return me.cached;
}

size_t tw__stack_mapped(void)
{
    return __atomic_load_n(&mapped, __ATOMIC_RELAXED);
}

/* ---- the overflow report -------------------------------------------------- */

static struct sigaction prev; /* written before our handler is installed */

/* Async-signal-safe appending: no stdio in a signal handler. */
static char *put_str(char *p, char *end, const char *s)
{
    while (*s && p < end)
        *p++ = *s++;
    return p;
}

static char *put_num(char *p, char *end, uintptr_t v, unsigned base)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n && p < end)
        *p++ = tmp[--n];
    return p;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    tw__co *co = tw__co_current;
    char *a = si ? (char *)si->si_addr : NULL;
    int saved = errno;

    if (co && si && si->si_code > 0 && a >= co->st.base && a < co->st.base + co->st.guard) {
        char msg[512], *p = msg, *end = msg + sizeof msg - 1;
        p = put_str(p, end, "twine: stack overflow in the coroutine started at ");
        p = put_str(p, end, co->file ? co->file : "?");
        p = put_str(p, end, ":");
        p = put_num(p, end, (uintptr_t)(co->line > 0 ? co->line : 0), 10);
        p = put_str(p, end, ": its stack of ");
        p = put_num(p, end, co->st.size - co->st.guard, 10);
        p = put_str(p, end, " bytes is used up (guard page hit at 0x");
        p = put_num(p, end, (uintptr_t)a, 16);
        p = put_str(p, end, "); give coroutines larger stacks with tw_async_set_stack_size()\n");
        ssize_t ignored = write(STDERR_FILENO, msg, (size_t)(p - msg));
        (void)ignored;
        /* The fault comes again on return, to the previous handler. */
        sigaction(SIGSEGV, &prev, NULL);
        errno = saved;
        return;
    }
    if (prev.sa_flags & SA_SIGINFO) {
        prev.sa_sigaction(sig, si, uc);
    } else if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
        /* A fault comes again on return; the kernel's default action then
         * applies (it applies to an ignored SIGSEGV from a fault as well). */
        sigaction(SIGSEGV, &prev, NULL);
    } else {
        prev.sa_handler(sig);
    }
    errno = saved;
}

static void install_handler(void)
{
    struct sigaction sa;
    if (sigaction(SIGSEGV, NULL, &prev) != 0)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

/* ---- the thread's exit ------------------------------------------------------ */

static pthread_key_t exit_key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool have_key;

static void unmap(tw__stack *s)
{
    tw__valgrind_deregister(s->vg_id);
    munmap(s->base, s->size);
    __atomic_fetch_sub(&mapped, 1, __ATOMIC_RELAXED);
}

static void on_thread_exit(void *unused)
{
    (void)unused;
    while (me.cache) {
        tw__stack *s = me.cache;
        me.cache = s->next;
        unmap(s);
    }
    me.cached = 0;
    if (me.alt) {
        stack_t ss, old;
        memset(&ss, 0, sizeof ss);
        ss.ss_flags = SS_DISABLE;
        /* Only our own, and never while running on it. */
        if (sigaltstack(NULL, &old) == 0 && old.ss_sp == me.alt && !(old.ss_flags & SS_ONSTACK) &&
            sigaltstack(&ss, NULL) == 0)
            munmap(me.alt, TW__ALT_STACK);
        me.alt = NULL;
    }
    me.ready = false;
}

static void init_once(void)
{
    have_key = pthread_key_create(&exit_key, on_thread_exit) == 0;
    install_handler();
}

/* The thread's first stack: the handler, an alternate signal stack, the exit
 * hook. Failing any of them costs only the overflow's message. */
static void thread_ready(void)
{
    stack_t old;
    pthread_once(&once, init_once);
    if (have_key)
        pthread_setspecific(exit_key, &me);
    if (sigaltstack(NULL, &old) == 0 && (old.ss_flags & SS_DISABLE)) {
        void *p = mmap(NULL, TW__ALT_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (p != MAP_FAILED) {
            stack_t ss;
            memset(&ss, 0, sizeof ss);
            ss.ss_sp = p;
            ss.ss_size = TW__ALT_STACK;
            if (sigaltstack(&ss, NULL) == 0)
                me.alt = p;
            else
                munmap(p, TW__ALT_STACK);
        }
    }
    me.ready = true;
}

/* ---- taking and giving back -------------------------------------------------- */

static tw__co *block_of(tw__stack *s)
{
    uintptr_t top = (uintptr_t)s->base + s->size;
    return (tw__co *)((top - sizeof(tw__co)) & ~(uintptr_t)63);
}

static tw__co *map_stack(size_t bytes)
{
    size_t size = bytes + TW__GUARD;
    char *base = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base, TW__GUARD, PROT_NONE) != 0) {
        munmap(base, size);
        return NULL;
    }
    __atomic_fetch_add(&mapped, 1, __ATOMIC_RELAXED);
    tw__stack s = {base, size, TW__GUARD, 0, NULL};
    tw__co *co = block_of(&s);
    co->st = s;
    co->st.vg_id = tw__valgrind_register(tw__co_stack_lo(co), (char *)co);
    return co;
}

tw__co *tw__stack_take_slow(void)
{
    size_t size = tw__stack_want();
    tw__co *co = NULL;

    if (__builtin_expect(!me.ready, 0))
        thread_ready();
    while (me.cache) {
        tw__stack *s = me.cache;
        me.cache = s->next;
        me.cached--;
        if (s->size == size) {
            co = (tw__co *)s; /* st is the block's first member */
            break;
        }
        unmap(s); /* cached under an older size setting */
    }
    if (!co) {
        co = map_stack(size - TW__GUARD);
        if (!co)
            return NULL;
    } else {
        tw__asan_unpoison(tw__co_stack_lo(co), tw__co_stack_size(co));
    }
    return co;
}

void tw__stack_give_slow(tw__co *co)
{
    unmap(&co->st);
}
