#!/usr/bin/env python3
"""Twisted's Deferred and DeferredLock on the workloads of bench/deferred_bench.c.

Same workloads, fewer iterations, same unit (ns per operation):
  deferred_chain              Deferred(); 10 x addCallback; callback(value); the
                              Deferred dropped; 10^5 times
  deferred_chain_fired_first  Deferred(); callback(value); 10 x addCallback (each
                              runs at once); the Deferred dropped; 10^5 times
  deferred_lock               DeferredLock.run(f), f returning succeed(value); 10^5 times
  deferred_nest_{outer,inner}_first_{1e4,1e5}
                              a nest of N + 1 Deferreds (N = 10^4 or 10^5): d[i]'s
                              first callback returns d[i+1], its second adds 1;
                              d[0..N-1] fired outermost or innermost first, each
                              then waiting on the next, d[N] last; 10^5 links a
                              run, as in C; the figure is ns per link
Every callback adds one to a counter and returns its input unchanged; the tenth
also checks that it received the value the Deferred was fired with. The lock's
f counts its calls, and every run's Deferred must have fired with f's value.
A run whose counts are not exact is invalid (exit 2): nine step callbacks and
one final callback per Deferred, every final one on the expected value.

Each measurement is repeated 5 times; the CSV gets the median (the headline
figure), the best, the worst and every repetition, as
`workload,impl,metric,value,unit`.

Twisted's Deferred needs no reactor; none is started. Bound methods are looked
up once per Deferred (add = d.addCallback), and the loop is unrolled, so the
figures charge Twisted as little interpreter overhead as plain code allows.

Needs Twisted (Debian: python3-twisted, for /usr/bin/python3); bench/run.sh
picks an interpreter that has it.

usage: py_deferred.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pybench.py is next to this file
import pybench
from pybench import REPS, CountError, check

N_CHAIN = 100_000
N_LOCK = 100_000
N_NEST_LINKS = 100_000  # links per run, for every nest depth (as in C)
WARM_UP = 2_000  # untimed iterations before the first repetition


# ---- the workloads ------------------------------------------------------------------
# Each returns (seconds, step callbacks run, final callbacks that saw the right value).

def chain(n):
    from twisted.internet.defer import Deferred

    steps = 0
    hits = 0
    expect = 0

    def step(x):
        nonlocal steps
        steps += 1
        return x

    def last(x):
        nonlocal steps, hits
        steps += 1
        if x == expect:
            hits += 1
        return x

    t0 = time.perf_counter()
    for i in range(1, n + 1):
        d = Deferred()
        add = d.addCallback
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(last)
        expect = i
        d.callback(i)
        del d, add
    t1 = time.perf_counter()
    return t1 - t0, steps, hits


def chain_fired_first(n):
    from twisted.internet.defer import Deferred

    steps = 0
    hits = 0
    expect = 0

    def step(x):
        nonlocal steps
        steps += 1
        return x

    def last(x):
        nonlocal steps, hits
        steps += 1
        if x == expect:
            hits += 1
        return x

    t0 = time.perf_counter()
    for i in range(1, n + 1):
        d = Deferred()
        expect = i
        d.callback(i)
        add = d.addCallback
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(step)
        add(last)
        del d, add
    t1 = time.perf_counter()
    return t1 - t0, steps, hits


def lock_run(n):
    from twisted.internet.defer import DeferredLock, succeed

    lock = DeferredLock()
    run = lock.run
    calls = 0
    hits = 0
    value = 0

    def f():
        nonlocal calls
        calls += 1
        return succeed(value)

    t0 = time.perf_counter()
    for i in range(1, n + 1):
        value = i
        d = run(f)
        # run's Deferred has fired with f's value (a Failure, or no result
        # yet, would not compare equal)
        if getattr(d, "result", None) == i:
            hits += 1
        del d
    t1 = time.perf_counter()
    if lock.locked or lock.waiting:
        raise CountError("deferred_lock: the DeferredLock is still held after the run")
    return t1 - t0, calls, hits


def nest(n, depth, inner_first):
    """n links: nests of `depth` and, when depth does not divide n (a --scale
    run), one shallower nest for the rest. Returns (seconds, adding callbacks
    run, links that ended in a nest whose outermost got the right value)."""
    from twisted.internet.defer import Deferred

    adds = 0
    good = 0

    def add(x):
        nonlocal adds
        adds += 1
        return x + 1

    t0 = time.perf_counter()
    done = 0
    while done < n:
        m = min(depth, n - done)
        ds = [Deferred() for _ in range(m + 1)]
        for i in range(m):
            nxt = ds[i + 1]
            ds[i].addCallback(lambda _, nxt=nxt: nxt)
            ds[i].addCallback(add)
        order = range(m - 1, -1, -1) if inner_first else range(m)
        for k in order:
            ds[k].callback(None)
        ds[m].callback(7)
        if getattr(ds[0], "result", None) == 7 + m:
            good += m
        del ds
        done += m
    t1 = time.perf_counter()
    return t1 - t0, adds, good


def nest_runner(depth, inner_first):
    return lambda n: nest(n, depth, inner_first)


WORKLOADS = [
    # (workload, impl, function, iterations, step callbacks per iteration)
    ("deferred_chain", "python Twisted Deferred", chain, N_CHAIN, 10),
    ("deferred_chain_fired_first", "python Twisted Deferred", chain_fired_first, N_CHAIN, 10),
    ("deferred_lock", "python Twisted DeferredLock", lock_run, N_LOCK, 1),
    ("deferred_nest_outer_first_1e4", "python Twisted Deferred", nest_runner(10_000, False),
     N_NEST_LINKS, 1),
    ("deferred_nest_outer_first_1e5", "python Twisted Deferred", nest_runner(100_000, False),
     N_NEST_LINKS, 1),
    ("deferred_nest_inner_first_1e4", "python Twisted Deferred", nest_runner(10_000, True),
     N_NEST_LINKS, 1),
    ("deferred_nest_inner_first_1e5", "python Twisted Deferred", nest_runner(100_000, True),
     N_NEST_LINKS, 1),
]


# ---- driver ------------------------------------------------------------------------

def main(run):
    for workload, name, fn, base_n, per_op in WORKLOADS:
        # "deferred_chain" is a prefix of "deferred_chain_fired_first": an
        # --only entry selects by prefix, as in the C programs.
        if not run.selected(workload):
            continue
        n = run.scaled(base_n)
        print(f"{workload}: {n} operations, {REPS} repetitions", flush=True)
        fn(min(n, WARM_UP))
        s = []
        for _ in range(REPS):
            secs, count, hits = fn(n)
            check(workload, name, count, per_op * n)
            check(workload, name + " (right value)", hits, n)
            s.append(secs * 1e9 / n)
        run.record(workload, name, "ns/op", False, s, widths=(29, 28))


if __name__ == "__main__":
    sys.exit(pybench.main("py_deferred", __doc__, main, needs_twisted=True))
