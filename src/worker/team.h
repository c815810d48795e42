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

/* Makes dispatch refuse a task instead of backlogging it when the team has
 * no member and cannot make one. For teams whose coordinator runs messages
 * synchronously in the submitting thread (the pool's lock worker): the
 * refused node is reported to that thread by tw__team_take_refused. */
void tw__team_refuse_unrunnable(tw_team *t);

/* The node the calling thread's last dispatch refused (restored as it was
 * submitted), or NULL; clears it. */
tw_task *tw__team_take_refused(void);

#endif
