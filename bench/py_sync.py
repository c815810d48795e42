#!/usr/bin/env python3
"""CPython's threading primitives on the workloads of bench/sync_bench.c.

Same workloads, fewer iterations (an interpreted loop costs far more than the
primitive), reported in the same units: ns per operation, operations per
second, microseconds per round trip. Each measurement is repeated 5 times,
round-robin over the implementations of a workload; the CSV gets the median
(the headline figure), the best, the worst and every repetition, as `workload,impl,metric,value,unit`.

usage: py_sync.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import argparse
import csv
import os
import statistics
import sys
import threading
import time

REPS = 5  # as BENCH_REPS in bench_util.h
N_UNCONTENDED = 1_000_000
N_CONTENDED = 500_000  # per thread
N_PINGPONG = 20_000  # round trips, pinned
N_PINGPONG_UNPINNED = 10_000  # cross-CPU wake-ups are slow on a VM: see sync_bench.c


class CountError(Exception):
    pass


def check(workload, impl, got, want):
    if got != want:
        raise CountError(f"{workload} / {impl}: count is {got}, expected {want}")


def pin_cpu():
    """CPU 0 if this process may run there, else the lowest allowed CPU."""
    allowed = os.sched_getaffinity(0)
    return 0 if 0 in allowed else min(allowed)


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
    cpu = pin_cpu()
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

def run_workload(out, workload, unit, higher_is_better, impls, n):
    print(f"{workload}: {n} iterations, {REPS} round-robin repetitions", flush=True)
    samples = {name: [] for name, _, _ in impls}
    for _ in range(REPS):
        for name, fn, want in impls:
            value, count = fn()
            check(workload, name, count, want)
            samples[name].append(value)
    for name, _, _ in impls:
        s = samples[name]
        best = max(s) if higher_is_better else min(s)
        worst = min(s) if higher_is_better else max(s)
        median = statistics.median(s)
        print(f"  {workload:<24} {name:<26} median {median:12.4g}  best {best:12.4g}  "
              f"worst {worst:12.4g}  {unit}", flush=True)
        if out:
            out.writerow([workload, name, "median", f"{median:.6g}", unit])
            out.writerow([workload, name, "best", f"{best:.6g}", unit])
            out.writerow([workload, name, "worst", f"{worst:.6g}", unit])
            for i, v in enumerate(s, 1):
                out.writerow([workload, name, f"rep{i}", f"{v:.6g}", unit])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only")
    args = ap.parse_args()

    def scaled(n):
        return max(1, int(n * args.scale))

    def selected(workload):
        if not args.only:
            return True
        return any(p and workload.startswith(p) for p in args.only.split(","))

    f = open(args.csv, "w", newline="") if args.csv else None
    out = csv.writer(f, lineterminator="\n") if f else None
    if out:
        out.writerow(["workload", "impl", "metric", "value", "unit"])

    try:
        if selected("lock_uncontended"):
            # A second thread exists and sleeps, as in the C workload.
            stop = threading.Event()
            parked = threading.Thread(target=stop.wait)
            parked.start()
            n = scaled(N_UNCONTENDED)
            run_workload(out, "lock_uncontended", "ns/op", False, [
                ("python Lock", lambda: uncontended(threading.Lock, n), n),
                ("python RLock", lambda: uncontended(threading.RLock, n), n),
            ], n)
            stop.set()
            parked.join()
        if selected("lock_contended"):
            n = scaled(N_CONTENDED)
            run_workload(out, "lock_contended", "ops/s", True, [
                ("python Lock", lambda: contended(threading.Lock, n), 2 * n),
            ], n)
        for pin in (True, False):
            workload = "cond_pingpong_pinned" if pin else "cond_pingpong_unpinned"
            if not selected(workload):
                continue
            if pin:
                print(f"(pinned: both threads on CPU {pin_cpu()})")
            n = scaled(N_PINGPONG if pin else N_PINGPONG_UNPINNED)
            run_workload(out, workload, "us/roundtrip", False, [
                ("python Condition", lambda: pingpong_cond(n, pin), 2 * n),
                ("python Event pair", lambda: pingpong_events(n, pin), 2 * n),
            ], n)
    except CountError as e:
        print(f"py_sync: {e} - the run is invalid", file=sys.stderr)
        return 2
    finally:
        if f:
            f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
