/* Shared helpers for the test executables: cmocka, threads, scaling. */
#ifndef TW_TEST_HARNESS_H
#define TW_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <twine.h>

/* Stress sizes are multiplied by TW_TEST_SCALE (a number in (0, 1], default 1),
 * which the sanitizer and valgrind runs lower. Only sizes scale, never checks.
 * The result is at least `floor`. */
uint64_t tw_test_scaled(uint64_t n, uint64_t floor);

/* Starts n threads running fn(arg_i) where arg_i = base + i * stride (bytes);
 * joins them all. Fails the test if a thread cannot be created. */
void tw_test_run_threads(int n, void *(*fn)(void *), void *base, size_t stride);

/* A started thread, for tests that need to join later. */
pthread_t tw_test_start(void *(*fn)(void *), void *arg);
void *tw_test_join(pthread_t t);

/* Monotonic seconds, for timing assertions (only where timing is the behaviour). */
double tw_test_now(void);

#endif
