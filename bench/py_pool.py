#!/usr/bin/env python3
"""Twisted's thread pool on the workloads of bench/pool_bench.c.

Same workloads, fewer iterations, same units:
  pool_throughput          10^5 empty tasks given to twisted.python.threadpool.ThreadPool(2, 2)
                           with callInThread from one thread; tasks/s from the first
                           call to the moment the last task has run
  pool_roundtrip_pinned    deferToThread of one task and its Deferred's callback on
  pool_roundtrip_unpinned  the reactor, 10^4 times in sequence (the reactor's pool
                           limited to 2 threads); every thread on one CPU, or placed
                           freely; median round trip of a run, and its 99th
                           percentile as pool_roundtrip_*_p99, in us
Each task counts itself and every run checks the count. Each measurement is
repeated 5 times; the CSV gets the median (the headline figure), the best, the
worst and every repetition, as `workload,impl,metric,value,unit`.

Needs Twisted (Debian: python3-twisted, for /usr/bin/python3); bench/run.sh
picks an interpreter that has it.

usage: py_pool.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import itertools
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pybench.py is next to this file
import pybench
from pybench import PIN_CPU, REPS, check, place_self

N_THROUGHPUT = 100_000
N_ROUNDTRIP = 10_000
POOL_THREADS = 2


# ---- pool_throughput ----------------------------------------------------------

def throughput(n):
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(POOL_THREADS, POOL_THREADS)
    pool.start()
    # warm-up: one task, so the threads exist before the clock starts
    warm = threading.Event()
    pool.callInThread(warm.set)
    warm.wait()

    counter = itertools.count(1)  # next() is atomic under the GIL
    done = threading.Event()
    end = [0.0]

    def task():
        if next(counter) == n:
            end[0] = time.perf_counter()
            done.set()

    call = pool.callInThread
    t0 = time.perf_counter()
    for _ in range(n):
        call(task)
    done.wait()
    pool.stop()
    return n / (end[0] - t0), next(counter) - 1


# ---- pool_roundtrip -------------------------------------------------------------

def roundtrips(reactor, n, pin):
    """Deferred firing with (latencies in us, tasks run) after n + 1 round trips,
    the first one a warm-up."""
    from twisted.internet import defer
    from twisted.internet.threads import deferToThread

    result = defer.Deferred()
    lat = []
    count = itertools.count(1)
    state = {"start": 0.0, "ran": 0}

    def task():
        place_self(pin)
        state["ran"] = next(count)

    def back(_):
        t = time.perf_counter()
        lat.append((t - state["start"]) * 1e6)
        state["start"] = t
        if len(lat) <= n:
            d = deferToThread(task)
            d.addCallback(back)
            d.addErrback(result.errback)
        else:
            result.callback((lat[1:], state["ran"]))

    place_self(pin)
    state["start"] = time.perf_counter()
    d = deferToThread(task)
    d.addCallback(back)
    d.addErrback(result.errback)
    return result


def run_roundtrips(jobs):
    """Runs jobs [(workload, n, pin)] REPS times each on one reactor run (a
    reactor cannot be restarted); returns {workload: [(lats, ran), ...]}."""
    out = {}

    def steps(reactor):
        for workload, n, pin in jobs:
            if pin:
                print(f"(pinned: every thread on CPU {PIN_CPU})")
            print(f"{workload}: {n} round trips, {REPS} repetitions", flush=True)
            for _ in range(REPS):
                r = yield roundtrips(reactor, n, pin)
                out.setdefault(workload, []).append(r)
        place_self(False)

    pybench.run_in_reactor(steps, POOL_THREADS)
    return out


# ---- driver ------------------------------------------------------------------------

def main(run):
    if run.selected("pool_throughput"):
        n = run.scaled(N_THROUGHPUT)
        name = "python Twisted ThreadPool"
        print(f"pool_throughput: {n} tasks, {REPS} repetitions", flush=True)
        s = []
        for _ in range(REPS):
            value, count = throughput(n)
            check("pool_throughput", name, count, n)
            s.append(value)
        run.record("pool_throughput", name, "tasks/s", True, s)

    jobs = [(w, run.scaled(N_ROUNDTRIP), pin)
            for w, pin in (("pool_roundtrip_pinned", True), ("pool_roundtrip_unpinned", False))
            if run.selected(w)]
    if jobs:
        name = "python deferToThread"
        results = run_roundtrips(jobs)
        for workload, n, _ in jobs:
            for _, ran in results[workload]:
                check(workload, name, ran, n + 1)
            run.record_roundtrips(workload, name, [lats for lats, _ in results[workload]])


if __name__ == "__main__":
    sys.exit(pybench.main("py_pool", __doc__, main, needs_twisted=True))
