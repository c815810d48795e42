/* Internal: what the pool needs from the team beyond the public API. */
#ifndef TW_WORKER_TEAM_H
#define TW_WORKER_TEAM_H

#include "worker/worker.h"

/* Coordinator context only. If w is an idle member and `keep` is below the
 * team's worker count, retires it and returns true. */
bool tw__team_retire_if_idle(tw_team *t, tw_worker *w, size_t keep);

/* Coordinator context only. Creates workers while the factory accepts and
 * backlog is waiting (used when a limit is raised). */
void tw__team_fill(tw_team *t);

/* Members (idle + busy), a snapshot. */
size_t tw__team_members(tw_team *t);

/* Coordinator context only: grow by up to n now / retire n now (idle first,
 * busy ones as they finish). */
void tw__team_grow_now(tw_team *t, size_t n);
void tw__team_shrink_now(tw_team *t, size_t n);

/* Coordinator context only: takes task back out of the backlog if it is
 * still there (true), restoring the node as submitted. */
bool tw__team_retract(tw_team *t, tw_task *task);

/* Hooks for the pool. */
typedef struct tw__team_hooks {
    /* Coordinator context. Called once, just before the team quits its
     * coordinator: the team is finished (no member, no message, no backlog)
     * and will never make a worker again. May be NULL. */
    void (*finished)(void *ctx);
    void *ctx;
} tw__team_hooks;

/* Before the first task. */
void tw__team_set_hooks(tw_team *t, const tw__team_hooks *hooks);

#endif
