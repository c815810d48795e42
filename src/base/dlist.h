/* Internal: an intrusive doubly linked list with a head pointer, for records
 * that must leave the middle of a list in O(1). Not thread-safe: the owner
 * of the head serialises every call. */
#ifndef TW_BASE_DLIST_H
#define TW_BASE_DLIST_H

#include <stddef.h>

typedef struct tw__dlink {
    struct tw__dlink *prev, *next;
} tw__dlink;

/* The record that holds link l as its member `field`. */
#define TW__DLIST_ITEM(l, type, field) ((type *)(void *)((char *)(l) - offsetof(type, field)))

/* Adds l at the front; l must not be in a list. */
static inline void tw__dlist_push(tw__dlink **head, tw__dlink *l)
{
    l->prev = NULL;
    l->next = *head;
    if (*head)
        (*head)->prev = l;
    *head = l;
}

/* Removes l from the list it is in. */
static inline void tw__dlist_unlink(tw__dlink **head, tw__dlink *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        *head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

#endif
