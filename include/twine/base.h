/*
 * twine/base.h — error codes, monotonic time and deadlines, diagnostics, version.
 *
 * Every twine function that can fail returns 0 on success or a negative TW_E*
 * code; none of them sets errno. One table gives each code a name and a message:
 *
 *     int rc = tw_lock_acquire_timeout(&lock, 0.25);
 *     if (rc == TW_ETIMEDOUT)
 *         fprintf(stderr, "busy: %s (%s)\n", tw_strerror(rc), tw_err_name(rc));
 *
 * Time is always the monotonic clock. Public waits take a relative timeout in
 * seconds as a double, the way Python does: a negative value waits forever, 0
 * does not block, NaN is TW_EINVAL. Inside, a timeout becomes an absolute
 * deadline in nanoseconds (tw_deadline), so a wait that wakes spuriously and
 * sleeps again never stretches the caller's timeout:
 *
 *     tw_deadline d;
 *     if (tw_deadline_from_timeout(1.5, &d) == 0)
 *         while (!done() && tw_now_ns() < d) ...;
 *
 * Misuse that cannot be returned as an error (a guard given NULL, later an
 * unhandled Deferred failure) goes to one diagnostic hook, which prints one line
 * on stderr unless the application installs its own with tw_set_diag_hook().
 */
#ifndef TWINE_BASE_H
#define TWINE_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Symbols of the shared library are hidden unless marked TW_API. */
#if defined(__GNUC__) || defined(__clang__)
#define TW_API __attribute__((visibility("default")))
#else
#define TW_API
#endif

/* ---- version ------------------------------------------------------------ */

#define TW_VERSION_MAJOR 0
#define TW_VERSION_MINOR 1
#define TW_VERSION_PATCH 0
#define TW_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for compile-time comparisons. */
#define TW_VERSION_NUMBER (TW_VERSION_MAJOR * 10000 + TW_VERSION_MINOR * 100 + TW_VERSION_PATCH)

/* The version of the library actually linked, which may differ from the
 * header's when twine is loaded as a shared library. */
TW_API const char *tw_version(void);
TW_API int tw_version_number(void);

/* ---- errors --------------------------------------------------------------
 * X(name, value, message). Values are stable: they are part of the ABI. */
#define TW_ERROR_TABLE(X)                                                               \
    X(TW_OK, 0, "success")                                                              \
    X(TW_EINVAL, -1, "invalid argument")                                                \
    X(TW_EPERM, -2, "operation not permitted: the caller does not hold what it releases") \
    X(TW_ETIMEDOUT, -3, "timed out")                                                    \
    X(TW_EBUSY, -4, "busy: the operation would block")                                  \
    X(TW_EOVERFLOW, -5, "value would exceed its bound")                                 \
    X(TW_EUNDERFLOW, -6, "too many waiters")                                            \
    X(TW_EBROKEN, -7, "barrier is broken")                                              \
    X(TW_EQUIT, -8, "worker has quit")                                                  \
    X(TW_EALREADY, -9, "already done")                                                  \
    X(TW_ECANCELED, -10, "canceled")                                                    \
    X(TW_EDEADLK, -11, "operation would deadlock")                                      \
    X(TW_ENOMEM, -12, "out of memory")                                                  \
    X(TW_ESHUTDOWN, -13, "shut down")                                                   \
    X(TW_EEMPTY, -14, "empty")                                                          \
    X(TW_EFULL, -15, "full")                                                            \
    X(TW_ENOTSUP, -16, "not supported")                                                 \
    X(TW_ESYS, -17, "system resource unavailable")                                      \
    X(TW_EABANDONED, -18, "abandoned: released before it produced a result")            \
    X(TW_ECONNREFUSED, -19, "connection refused")                                       \
    X(TW_ECONNRESET, -20, "connection reset by peer")                                   \
    X(TW_ECONNDONE, -21, "connection closed cleanly")                                   \
    X(TW_ECONNLOST, -22, "connection lost")                                             \
    X(TW_ECONNABORTED, -23, "connection aborted")                                       \
    X(TW_EUNREACH, -24, "host or network unreachable")                                  \
    X(TW_ENOTFOUND, -25, "name not found")                                              \
    X(TW_EADDRINUSE, -26, "address already in use")                                     \
    X(TW_EIO, -27, "input/output error")                                                \
    X(TW_EPROTO, -28, "protocol error")                                                 \
    X(TW_EREMOTE, -29, "error reported by the remote server")                           \
    X(TW_ENOTCONN, -30, "not connected")                                                \
    X(TW_ETLS, -31, "TLS error")                                                        \
    X(TW_ELEASE, -32, "lease lost")                                                     \
    X(TW_EACCES, -33, "permission denied")                                              \
    X(TW_ESTALE, -34, "stale: a newer fencing token has been seen")

enum tw_error {
#define TW__ERROR_ENUM(name, value, msg) name = value,
    TW_ERROR_TABLE(TW__ERROR_ENUM)
#undef TW__ERROR_ENUM
};

/* Message for a code; "unknown error" for a value outside the table. Never NULL. */
TW_API const char *tw_strerror(int code);
/* Symbolic name for a code ("TW_ETIMEDOUT"); "TW_E?" outside the table. Never NULL. */
TW_API const char *tw_err_name(int code);

/* ---- thread identity -----------------------------------------------------
 * Internal, for the inline paths of later layers (an RLock's owner): a
 * non-zero id per thread, unique among all threads the process has had
 * (until 2^32 - 1 have asked), one thread-local load after the first call. */
TW_API extern _Thread_local uint32_t tw__my_id;
TW_API uint32_t tw__thread_id_slow(void);

static inline uint32_t tw__self(void)
{
    uint32_t id = tw__my_id;
    return __builtin_expect(id != 0, 1) ? id : tw__thread_id_slow();
}

/* ---- monotonic time and deadlines ---------------------------------------- */

/* Absolute time on the monotonic clock, in nanoseconds. */
typedef int64_t tw_deadline;
#define TW_DEADLINE_NEVER INT64_MAX

/* Now on the monotonic clock, in nanoseconds (CLOCK_MONOTONIC). */
TW_API int64_t tw_now_ns(void);

/* Converts a relative timeout in seconds to an absolute deadline.
 * seconds < 0 or +inf -> TW_DEADLINE_NEVER; 0 -> now (do not block);
 * NaN -> TW_EINVAL and *out untouched; out == NULL -> TW_EINVAL.
 * Timeouts beyond the representable range saturate to TW_DEADLINE_NEVER. */
TW_API int tw_deadline_from_timeout(double seconds, tw_deadline *out);

/* Seconds left before d (0 when it has passed; -1 for TW_DEADLINE_NEVER). */
TW_API double tw_deadline_remaining(tw_deadline d);

/* ---- allocator -----------------------------------------------------------
 * Every allocation twine makes (worker layer and up; the sync layer never
 * allocates) goes through one swappable allocator. free and realloc are told
 * the size of the block, so pool allocators need no headers. A failed
 * allocation is TW_ENOMEM to the caller, with nothing half-done left behind.
 *
 * The allocator can only be changed while no block it handed out is still
 * live (TW_EBUSY otherwise), so a block is always freed by the allocator that
 * made it. */
typedef struct tw_allocator {
    void *(*alloc)(void *ctx, size_t size);                 /* NULL on failure */
    void *(*realloc)(void *ctx, void *ptr, size_t old_size, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
    void *ctx;
} tw_allocator;

/* Installs a copy of *a (NULL restores malloc/realloc/free). TW_EINVAL if a
 * function is missing; TW_EBUSY while blocks from the current one are live. */
TW_API int tw_set_allocator(const tw_allocator *a);
/* Number of blocks currently allocated through twine's allocator. twine keeps
 * a few freed Deferreds per thread for reuse; the calling thread's are given
 * back to the allocator first (tw_set_allocator does the same), so on a
 * single thread the count is exact. */
TW_API size_t tw_allocator_live(void);

/* ---- diagnostics ----------------------------------------------------------
 * Reports of misuse and trouble that no return value can carry. The hook may
 * be called from any thread and must not call back into twine objects that
 * the reporting thread may hold. */
enum tw_diag_kind {
    TW_DIAG_MISUSE = 1, /* an API was used against its contract */
    TW_DIAG_WARNING = 2, /* something looks wrong (a probable deadlock, a wedge) */
    TW_DIAG_UNHANDLED = 3 /* a failure nobody handled (a Deferred freed with it) */
};

typedef struct tw_diag {
    enum tw_diag_kind kind;
    int code;             /* the TW_E* code that describes it */
    const char *function; /* the twine function that noticed */
    const char *message;  /* one line, no trailing newline */
} tw_diag;

typedef void (*tw_diag_fn)(void *ctx, const tw_diag *diag);

/* Installs fn (NULL restores the default, which writes one line to stderr).
 * Thread-safe and allocation-free; a report already in progress may still
 * reach the old hook. */
TW_API void tw_set_diag_hook(tw_diag_fn fn, void *ctx);

/* Sends a report to the current hook. */
TW_API void tw_diag_report(enum tw_diag_kind kind, int code, const char *function,
                           const char *message);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_BASE_H */
