/* Internal: reports shared by the layers. */
#ifndef TW_BASE_DIAG_H
#define TW_BASE_DIAG_H

#include <twine/base.h>

/* Reports (TW_DIAG_MISUSE, TW_EPERM) a call to `function` on an object that
 * belongs to thread `owner`, made from the calling thread; `what` names the
 * object ("the reactor", "a DeferredQueue", ...). The debug builds' thread
 * checks of every layer use it; exported for the component libraries. */
TW_API void tw__wrong_thread(const char *what, uint32_t owner, const char *function);

#endif
