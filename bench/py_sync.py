#!/usr/bin/env python3
"""CPython's threading primitives on the workloads of bench/sync_bench.c.

Same workloads, fewer iterations (an interpreted loop costs far more than the
primitive), reported in the same units: ns per operation, operations per
second, microseconds per round trip. Each measurement is repeated 5 times,
round-robin over the implementations of a workload; the CSV gets the median
(the headline figure), the best, the worst and every repetition, as `workload,impl,metric,value,unit`.

usage: py_sync.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pybench.py is next to this file
import pybench
from pybench import PIN_CPU, REPS, check

N_UNCONTENDED = 1_000_000
N_CONTENDED = 500_000  # per thread
N_PINGPONG = 20_000  # round trips, pinned
N_PINGPONG_UNPINNED = 10_000  # cross-CPU wake-ups are slow on a VM: see sync_bench.c


# ---- lock_uncontended -------------------------------------------------------

def uncontended(make_lock, n):
    lock = make_lock()
    acquire, release = lock.acquire, lock.release
    count = 0
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        count += 1
        release()
    t1 = time.perf_counter()
    return (t1 - t0) * 1e9 / n, count


# ---- lock_contended and cond_pingpong ------------------------------------------

def run_pair(body, pin):
    """Runs body(0) and body(1) in two threads started together; seconds from
    the first start to the last end, as each thread reads the clock itself."""
    gate = threading.Barrier(2)
    cpu = PIN_CPU
    times = [None, None]

    def start(me):
        if pin:
            os.sched_setaffinity(0, {cpu})  # pid 0: the calling thread only
        gate.wait()
        t0 = time.perf_counter()
        body(me)
        times[me] = (t0, time.perf_counter())

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(t[1] for t in times) - min(t[0] for t in times)


def contended(make_lock, n):
    lock = make_lock()
    box = [0]

    def body(me):
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            box[0] += 1
            release()

    secs = run_pair(body, False)
    return 2 * n / secs, box[0]


def pingpong_cond(n, pin):
    cond = threading.Condition()  # its own RLock, the default
    state = {"turn": 0, "flips": 0}

    def body(me):
        for _ in range(n):
            with cond:
                while state["turn"] != me:
                    cond.wait()
                state["turn"] = 1 - me
                state["flips"] += 1
                cond.notify()

    secs = run_pair(body, pin)
    return secs * 1e6 / n, state["flips"]


def pingpong_events(n, pin):
    ev = [threading.Event(), threading.Event()]
    flips = [0]

    def body(me):
        if me == 0:
            for _ in range(n):
                flips[0] += 1
                ev[1].set()
                ev[0].wait()
                ev[0].clear()
        else:
            for _ in range(n):
                ev[1].wait()
                ev[1].clear()
                flips[0] += 1
                ev[0].set()

    secs = run_pair(body, pin)
    return secs * 1e6 / n, flips[0]


# ---- driver -----------------------------------------------------------------

def run_workload(run, workload, unit, higher_is_better, impls, n):
    print(f"{workload}: {n} iterations, {REPS} round-robin repetitions", flush=True)
    samples = {name: [] for name, _, _ in impls}
    for _ in range(REPS):
        for name, fn, want in impls:
            value, count = fn()
            check(workload, name, count, want)
            samples[name].append(value)
    for name, _, _ in impls:
        run.record(workload, name, unit, higher_is_better, samples[name])


def main(run):
    if run.selected("lock_uncontended"):
        # A second thread exists and sleeps, as in the C workload.
        stop = threading.Event()
        parked = threading.Thread(target=stop.wait)
        parked.start()
        n = run.scaled(N_UNCONTENDED)
        run_workload(run, "lock_uncontended", "ns/op", False, [
            ("python Lock", lambda: uncontended(threading.Lock, n), n),
            ("python RLock", lambda: uncontended(threading.RLock, n), n),
        ], n)
        stop.set()
        parked.join()
    if run.selected("lock_contended"):
        n = run.scaled(N_CONTENDED)
        run_workload(run, "lock_contended", "ops/s", True, [
            ("python Lock", lambda: contended(threading.Lock, n), 2 * n),
        ], n)
    for pin in (True, False):
        workload = "cond_pingpong_pinned" if pin else "cond_pingpong_unpinned"
        if not run.selected(workload):
            continue
        if pin:
            print(f"(pinned: both threads on CPU {PIN_CPU})")
        n = run.scaled(N_PINGPONG if pin else N_PINGPONG_UNPINNED)
        run_workload(run, workload, "us/roundtrip", False, [
            ("python Condition", lambda: pingpong_cond(n, pin), 2 * n),
            ("python Event pair", lambda: pingpong_events(n, pin), 2 * n),
        ], n)


if __name__ == "__main__":
    sys.exit(pybench.main("py_sync", __doc__, main))
