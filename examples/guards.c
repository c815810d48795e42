/*
 * guards — a critical section that fails part-way must still release its lock.
 *
 * A small name table is protected by one tw_lock. Adding a name can fail in the
 * middle of the critical section: the name is empty, the table is full, or the
 * name is already there. Written as acquire ... release by hand, every early
 * exit between the two is a way to leave the lock held, and then every later
 * caller waits forever. That is the bug in buggy_add below.
 *
 * twine's answers:
 *   TW_WITH(&lock) { ... }   the lock is released on every way out of the
 *                            block: return, break, goto, or falling off the end;
 *   tw_lock_run(&lock, fn, arg)
 *                            fn runs with the lock held, and the lock is
 *                            released however fn returns.
 * After each failure below the program checks that the lock is free, so the
 * next caller goes straight in.
 */
#include <stdio.h>
#include <string.h>

#include <twine.h>

enum { TABLE_SIZE = 3 };

static tw_lock table_lock = TW_LOCK_INIT; /* guards names and n_names */
static const char *names[TABLE_SIZE];
static int n_names;

/* Helpers called with table_lock held. */
static bool contains(const char *name)
{
    for (int i = 0; i < n_names; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* The seed's bug: the early return skips the release. */
static int buggy_add(const char *name)
{
    tw_lock_acquire(&table_lock);
    if (name[0] == '\0')
        return TW_EINVAL; /* BUG: returns with table_lock still held */
    names[n_names++] = name;
    tw_lock_release(&table_lock);
    return 0;
}

/* Fails by returning from inside the block. */
static int add_or_return(const char *name)
{
    TW_WITH(&table_lock) {
        if (name[0] == '\0')
            return TW_EINVAL;
        if (n_names == TABLE_SIZE)
            return TW_EFULL;
        names[n_names++] = name;
    }
    return 0;
}

/* Fails by breaking out of the block. */
static int add_or_break(const char *name)
{
    int rc = TW_EFULL;
    TW_WITH(&table_lock) {
        if (n_names == TABLE_SIZE)
            break;
        names[n_names++] = name;
        rc = 0;
    }
    return rc;
}

/* Fails by jumping to a cleanup label outside the block. */
static int add_or_goto(const char *name)
{
    TW_WITH(&table_lock) {
        if (contains(name))
            goto duplicate;
        if (n_names == TABLE_SIZE)
            goto full;
        names[n_names++] = name;
    }
    return 0;
duplicate:
    return TW_EALREADY;
full:
    return TW_EFULL;
}

/* The critical section as a function, for tw_lock_run. */
static int add_locked(void *arg)
{
    const char *name = arg;
    if (contains(name))
        return TW_EALREADY;
    if (n_names == TABLE_SIZE)
        return TW_EFULL;
    names[n_names++] = name;
    return 0;
}

static int ok = 1;

/* Reports one failed call and checks the lock was released behind it. */
static void after_failure(const char *how, int rc, int want)
{
    bool held = tw_lock_locked(&table_lock);
    printf("  %-30s -> %-12s lock %s\n", how, tw_err_name(rc), held ? "HELD" : "free");
    ok &= rc == want && !held;
}

int main(void)
{
    int rc;

    printf("manual acquire/release, failing with an early return:\n");
    rc = buggy_add("");
    printf("  buggy_add(\"\")                  -> %-12s lock %s\n", tw_err_name(rc),
           tw_lock_locked(&table_lock) ? "HELD" : "free");
    rc = tw_lock_try_acquire(&table_lock);
    printf("  the next caller's try_acquire  -> %-12s (a plain acquire would wait forever)\n",
           tw_err_name(rc));
    ok &= rc == TW_EBUSY;
    /* Any thread may release a tw_lock: clean up after the buggy function. */
    rc = tw_lock_release(&table_lock);
    printf("  cleaning up: tw_lock_release   -> %s\n", tw_err_name(rc));
    ok &= rc == 0 && !tw_lock_locked(&table_lock);

    printf("the same failures under TW_WITH and tw_lock_run:\n");
    ok &= add_or_return("ada") == 0 && add_or_goto("bob") == 0;
    after_failure("TW_WITH, return on empty name", add_or_return(""), TW_EINVAL);
    after_failure("TW_WITH, goto on duplicate", add_or_goto("ada"), TW_EALREADY);
    after_failure("tw_lock_run, fn fails", tw_lock_run(&table_lock, add_locked, "bob"),
                  TW_EALREADY);
    ok &= tw_lock_run(&table_lock, add_locked, "cy") == 0; /* the table is now full */
    after_failure("TW_WITH, break on full table", add_or_break("dee"), TW_EFULL);
    after_failure("TW_WITH, return on full table", add_or_return("dee"), TW_EFULL);
    after_failure("TW_WITH, goto on full table", add_or_goto("dee"), TW_EFULL);

    /* The next caller is not stuck behind any of those failures. */
    rc = tw_lock_acquire_timeout(&table_lock, 1.0);
    printf("next caller: acquire -> %s; table holds %d names:", tw_err_name(rc), n_names);
    for (int i = 0; i < n_names; i++)
        printf(" %s", names[i]);
    printf("\n");
    ok &= rc == 0 && n_names == TABLE_SIZE;
    if (rc == 0)
        tw_lock_release(&table_lock);

    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
