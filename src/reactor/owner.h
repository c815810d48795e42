/* Internal: which thread a reactor belongs to, for the reactor's own checks
 * and those of the layers built on it, which see no more of the reactor. */
#ifndef TW_REACTOR_OWNER_H
#define TW_REACTOR_OWNER_H

#include <twine/reactor.h>

/* The thread that may call r's functions now: the creating thread
 * before the loop runs, the loop thread while it runs and shuts down, or 0
 * once shut down, when any thread may clean up. The TW_DEBUG thread checks
 * of the reactor and of every layer built on it use it (TW_API: the
 * component libraries' too). loop_thread is read relaxed: it can equal
 * tw__self() only for the thread that stored it. */
TW_API uint32_t tw__reactor_thread(const tw_reactor *r);

#endif
