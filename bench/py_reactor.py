#!/usr/bin/env python3
"""Twisted's reactor on the workloads of bench/reactor_bench.c.

Same workloads, fewer iterations, same units:
  call_from_thread          one thread that is not the reactor's calls
                            reactor.callFromThread 10^5 times while the reactor
                            runs; callbacks/s from just before the first call to
                            the moment the last callback has run
  defer_to_thread_pinned    deferToThread of one task and its Deferred's callback
  defer_to_thread_unpinned  on the reactor, the next issued from that callback,
                            10^4 times (the reactor's pool limited to 2 threads);
                            every thread on one CPU, or placed freely; median
                            round trip of a run, and its 99th percentile as
                            defer_to_thread_*_p99, in us
Checks: every callFromThread callback carries its sequence number and must run
in the order posted, and all must run; every task returns 2x + 1 of its input
and the callback checks the value. A failed check invalidates the run (exit
status 2, no figure). Each measurement is repeated 5 times; the CSV gets the
median (the headline figure), the best, the worst and every repetition, as
`workload,impl,metric,value,unit`, plus `post` (ns per call spent in the
posting thread) and `mean` (round trips).

All of it runs in one reactor.run (a reactor cannot be restarted).

Needs Twisted (Debian: python3-twisted, for /usr/bin/python3); bench/run.sh
picks an interpreter that has it.

usage: py_reactor.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pybench.py is next to this file
import pybench
from pybench import PIN_CPU, REPS, check, place_self

N_CALLS = 100_000
N_DEFER = 10_000
POOL_THREADS = 2


# ---- call_from_thread --------------------------------------------------------------

def calls_from_thread(reactor, n):
    """Deferred firing with (callbacks/s, post ns/call, ran, disorder) once the
    n calls a poster thread makes have run."""
    from twisted.internet import defer

    result = defer.Deferred()
    st = {"next": 0, "ran": 0, "disorder": 0, "end": 0.0, "start": 0.0, "posted": 0.0}
    warm = threading.Event()

    def call(i):
        if i < 0:
            warm.set()
            return
        if i != st["next"]:
            st["disorder"] += 1
        st["next"] = i + 1
        st["ran"] += 1
        if st["ran"] == n:
            st["end"] = time.perf_counter()
            # the poster is past its last callFromThread: it only stamps the
            # time and returns (untimed)
            poster.join()
            result.callback((n / (st["end"] - st["start"]),
                             (st["posted"] - st["start"]) * 1e9 / n, st["ran"], st["disorder"]))

    def post():
        cft = reactor.callFromThread
        cft(call, -1)  # untimed: the reactor is running and has run one
        warm.wait()
        st["start"] = time.perf_counter()
        for i in range(n):
            cft(call, i)
        st["posted"] = time.perf_counter()

    poster = threading.Thread(target=post)
    poster.start()
    return result


# ---- defer_to_thread ---------------------------------------------------------------

def defer_roundtrips(n, pin):
    """Deferred firing with (latencies in us, tasks run, values checked) after
    n + 1 round trips, the first one a warm-up."""
    from twisted.internet import defer
    from twisted.internet.threads import deferToThread

    result = defer.Deferred()
    lat = []
    lock = threading.Lock()
    st = {"start": 0.0, "tasks": 0, "checked": 0, "x": 0}

    def task(x):
        place_self(pin)
        with lock:
            st["tasks"] += 1
        return 2 * x + 1

    def issue():
        st["x"] = len(lat) + 1
        d = deferToThread(task, st["x"])
        d.addCallback(back)
        d.addErrback(result.errback)

    def back(v):
        t = time.perf_counter()
        if v == 2 * st["x"] + 1:
            st["checked"] += 1
        lat.append((t - st["start"]) * 1e6)
        st["start"] = t
        if len(lat) <= n:
            issue()
        else:
            result.callback((lat[1:], st["tasks"], st["checked"]))

    place_self(pin)
    st["start"] = time.perf_counter()
    issue()
    return result


# ---- driver ------------------------------------------------------------------------

def run_all(call_n, defer_jobs):
    """Runs everything on one reactor run; returns ({"call_from_thread": [...]},
    {workload: [...]})."""
    calls, defers = [], {}

    def steps(reactor):
        if call_n:
            print(f"call_from_thread: {call_n} calls, {REPS} repetitions", flush=True)
            for _ in range(REPS):
                calls.append((yield calls_from_thread(reactor, call_n)))
        for workload, n, pin in defer_jobs:
            if pin:
                print(f"(pinned: every thread on CPU {PIN_CPU})")
            print(f"{workload}: {n} round trips, {REPS} repetitions", flush=True)
            for _ in range(REPS):
                defers.setdefault(workload, []).append((yield defer_roundtrips(n, pin)))
            place_self(False)

    pybench.run_in_reactor(steps, POOL_THREADS)
    return calls, defers


def main(run):
    call_n = run.scaled(N_CALLS) if run.selected("call_from_thread") else 0
    jobs = [(w, run.scaled(N_DEFER), pin)
            for w, pin in (("defer_to_thread_pinned", True),
                           ("defer_to_thread_unpinned", False))
            if run.selected(w)]
    if not call_n and not jobs:
        return
    calls, defers = run_all(call_n, jobs)
    if call_n:
        name = "python Twisted callFromThread"
        for _, _, ran, disorder in calls:
            check("call_from_thread", name, ran, call_n)
            check("call_from_thread", name + " (out of order)", disorder, 0)
        run.record("call_from_thread", name, "callbacks/s", True, [c[0] for c in calls],
                   {"post": ([c[1] for c in calls], "ns/call")})
    name = "python Twisted deferToThread"
    for workload, n, _ in jobs:
        for lats, tasks, checked in defers[workload]:
            check(workload, name, tasks, n + 1)
            check(workload, name + " (values)", checked, n + 1)
            check(workload, name + " (round trips)", len(lats), n)
        run.record_roundtrips(workload, name, [r[0] for r in defers[workload]])


if __name__ == "__main__":
    sys.exit(pybench.main("py_reactor", __doc__, main, needs_twisted=True))
