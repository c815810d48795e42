/* Internal: starting threads, with a failure-injection hook for tests. */
#ifndef TW_BASE_THREAD_START_H
#define TW_BASE_THREAD_START_H

#include <pthread.h>
#include <stddef.h>

/* Starts a joinable (or, if detached, a detached) thread running fn(arg).
 * 0, or TW_ESYS if the system refuses (or the test hook says to fail). */
int tw__thread_start(pthread_t *t, void *(*fn)(void *), void *arg, size_t stack_size,
                     int detached);

/* Tests: the nth thread start from now fails (1 = the next one); 0 disarms.
 * It stays armed until that many starts have happened: disarm after use. */
void tw__thread_fail_nth(unsigned nth);

#endif
