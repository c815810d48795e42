/* Internal: twine's allocation entry points (see tw_set_allocator). */
#ifndef TW_BASE_ALLOC_H
#define TW_BASE_ALLOC_H

#include <stddef.h>

#include <twine/base.h>

void *tw__alloc(size_t size);
void *tw__zalloc(size_t size);
/* On failure returns NULL and leaves ptr untouched. */
void *tw__realloc(void *ptr, size_t old_size, size_t new_size);
void tw__free(void *ptr, size_t size);

#define TW__NEW(type) ((type *)tw__zalloc(sizeof(type)))
#define TW__DELETE(p) tw__free((p), sizeof *(p))

#endif
