/* Internal: what the pool needs from the team beyond the public API.
 *
 * "[C]" below means: coordinator context only — a task running on the
 * team's coordinator, or (for the pool, whose coordinator is a lock worker
 * over its mutex) any code holding that mutex. */
#ifndef TW_WORKER_TEAM_H
#define TW_WORKER_TEAM_H

#include "worker/worker.h"

/* [C] If w is an idle member and `keep` is below the team's worker count,
 * retires it and returns true. */
bool tw__team_retire_if_idle(tw_team *t, tw_worker *w, size_t keep);

/* Members (idle + busy), a snapshot. */
size_t tw__team_members(tw_team *t);

/* [C] Grows by up to n members now; they take waiting tasks at once. */
void tw__team_grow_now(tw_team *t, size_t n);

/* Makes a synchronous dispatch (the pool's lock-worker coordinator runs it
 * in the submitting thread) refuse a task instead of backlogging it when the
 * team has no member and cannot make one: the submitter learns of it through
 * tw__team_take_refused, which returns the refused node (restored as it was
 * submitted) or NULL, and clears it. */
void tw__team_refuse_unrunnable(tw_team *t);
tw_task *tw__team_take_refused(void);

/* ---- the incoming list (opt-in; the pool uses it) -------------------------
 * A lock-free intrusive stack that submitters push onto without involving
 * the coordinator, while every member is busy and the factory is at its
 * limit, so a new task could only wait in the backlog anyway. Busy members
 * move it into the backlog (oldest first) when they finish a task. The whole
 * protocol, its invariants and its memory-order pairings are described at
 * the top of team.c and in docs/worker.md. A team that has not opted in
 * behaves exactly as before: none of this runs. */
typedef struct tw__team_hooks {
    /* [C] How many members the factory allows now: it refuses a new worker
     * at that many because of its limit (a refusal below it is a failure).
     * Required for the incoming list. The team holds to it: members above a
     * lowered limit start no new task (see tw__team_limits_changed). */
    size_t (*limit)(void *ctx);
    /* [C] A task has been left waiting while every member is busy at the
     * limit: the condition under which tasks can wedge (the pool starts its
     * watch here). May be NULL. */
    void (*saturated)(void *ctx);
    /* [C] Called once, just before the team quits its coordinator: the team
     * is finished (no member, no message, no backlog). May be NULL. */
    void (*finished)(void *ctx);
    void *ctx;
} tw__team_hooks;

/* Before the first task. With hooks->limit set, enables the incoming list. */
void tw__team_set_hooks(tw_team *t, const tw__team_hooks *hooks);

/* tw__team_offer's answers besides 0 (taken: a busy member will run it) and
 * TW_EQUIT (the team has quit; the node is untouched). */
#define TW__TEAM_SLOW 1 /* not taken: submit through the coordinator */
#define TW__TEAM_KICK 2 /* taken, but the fast path closed meanwhile: call
                           tw__team_kick before returning from the submit */

/* Any thread. Pushes task on the incoming list if the fast path is open.
 * `ticket` must be an address no other submission can use while this one is
 * in progress (a local variable of the submitting call) and be passed to
 * tw__team_kick; `held` as for the team's own submit (twine allocated the
 * node). */
int tw__team_offer(tw_team *t, tw_task *task, bool held, void *ticket);

/* ---- test probes -------------------------------------------------------------
 * Tests only: probe(where, task) is called at each point below, so that a test
 * can hold the calling thread inside a race window while it changes the team
 * (or the pool) under it. NULL (the default) turns it off. Set it only while
 * no thread it could concern is running. */
enum tw__team_point {
    TW__TEAM_AT_OFFER = 1, /* tw__team_offer found the fast path open; before its
                              push (task: the submitted node) */
    TW__TEAM_AT_POST,      /* a submit, grow or shrink passed the quit check; before
                              its message is counted and posted (task: the message) */
    TW__TEAM_AT_RECYCLE,   /* a member's worker has run its task(s); before it sends
                              the recycle message (task: NULL) */
};
void tw__team_set_probe(void (*probe)(int where, tw_task *task));

/* tw__team_kick's answer when no member exists and the task could only have
 * waited for one that cannot be made: it was taken back (node restored). */
#define TW__TEAM_ALONE 3

/* [C] For an offer that answered TW__TEAM_KICK: moves the incoming list into
 * the backlog and dispatches it. 0: the task is accepted (it will run, or
 * already ran). TW_EQUIT: the team finished before the task could be seen;
 * it was taken back and the node restored. TW__TEAM_ALONE: see above. */
int tw__team_kick(tw_team *t, tw_task *task, void *ticket);

/* [C] Moves the incoming list into the backlog and gives what it can to idle
 * members, never to new ones (before reading statistics, or judging a
 * wedge: neither may start threads). */
void tw__team_absorb(tw_team *t);

/* [C] hooks.limit's answer changed (raised or lowered). Closes the fast path
 * (a task that could now get a new worker must not wait for a busy one) and
 * moves the incoming list into the backlog. Over the limit: takes back the
 * tasks lined up in the ready ring and retires idle members until the limit
 * is met; busy ones retire when their task ends, whatever waits (so a lowered
 * limit holds at once, and a limit of 0 pauses). Under it: recruits workers
 * for the waiting tasks, oldest first. */
void tw__team_limits_changed(tw_team *t);

/* [C] Whether a wedge can form now: the fast path is open (every member busy
 * at the limit, and new tasks may pile up without the coordinator), or a task
 * waits while every member is busy at the limit. */
bool tw__team_saturated(tw_team *t);

#endif
