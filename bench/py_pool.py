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

import argparse
import csv
import importlib.util
import itertools
import math
import os
import statistics
import sys
import threading
import time

REPS = 5  # as BENCH_REPS in bench_util.h
N_THROUGHPUT = 100_000
N_ROUNDTRIP = 10_000
POOL_THREADS = 2


class CountError(Exception):
    pass


def check(workload, impl, got, want):
    if got != want:
        raise CountError(f"{workload} / {impl}: count is {got}, expected {want}")


ALLOWED = os.sched_getaffinity(0)
PIN_CPU = 0 if 0 in ALLOWED else min(ALLOWED)  # as bench_pin_cpu() in bench_util.c
_placed = threading.local()


def place_self(pin):
    """Pins the calling thread to PIN_CPU, or gives it every allowed CPU; does
    nothing when the thread is already placed that way."""
    want = 1 if pin else 2
    if getattr(_placed, "v", 0) != want:
        os.sched_setaffinity(0, {PIN_CPU} if pin else ALLOWED)  # 0: the calling thread
        _placed.v = want


def percentile(sorted_v, p):
    """Nearest rank, as bench_percentile() in bench_util.c."""
    k = max(0, min(len(sorted_v) - 1, math.ceil(p * len(sorted_v)) - 1))
    return sorted_v[k]


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
    from twisted.internet import defer, reactor

    reactor.suggestThreadPoolSize(POOL_THREADS)
    out = {}
    failure = []

    @defer.inlineCallbacks
    def main():
        try:
            for workload, n, pin in jobs:
                if pin:
                    print(f"(pinned: every thread on CPU {PIN_CPU})")
                print(f"{workload}: {n} round trips, {REPS} repetitions", flush=True)
                for _ in range(REPS):
                    r = yield roundtrips(reactor, n, pin)
                    out.setdefault(workload, []).append(r)
            place_self(False)
        except Exception as e:  # reported after the reactor stops
            failure.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run()
    if failure:
        raise failure[0]
    return out


# ---- driver ------------------------------------------------------------------------

def record(out, workload, name, unit, higher_is_better, s, extra=None):
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
    for metric, (vals, eunit) in (extra or {}).items():
        m = statistics.median(vals)
        print(f"  {workload:<24} {name:<26} {metric} {m:.3g} {eunit}")
        if out:
            out.writerow([workload, name, metric, f"{m:.6g}", eunit])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only")
    args = ap.parse_args()
    if importlib.util.find_spec("twisted") is None:
        print(f"py_pool: Twisted is not installed for {sys.executable} "
              "(Debian: python3-twisted, for /usr/bin/python3)", file=sys.stderr)
        return 1

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
        if selected("pool_throughput"):
            n = scaled(N_THROUGHPUT)
            name = "python Twisted ThreadPool"
            print(f"pool_throughput: {n} tasks, {REPS} repetitions", flush=True)
            s = []
            for _ in range(REPS):
                value, count = throughput(n)
                check("pool_throughput", name, count, n)
                s.append(value)
            record(out, "pool_throughput", name, "tasks/s", True, s)

        jobs = [(w, scaled(N_ROUNDTRIP), pin)
                for w, pin in (("pool_roundtrip_pinned", True), ("pool_roundtrip_unpinned", False))
                if selected(w)]
        if jobs:
            name = "python deferToThread"
            results = run_roundtrips(jobs)
            for workload, n, _ in jobs:
                medians, p99s, means = [], [], []
                for lats, ran in results[workload]:
                    check(workload, name, ran, n + 1)
                    means.append(statistics.fmean(lats))
                    lats.sort()
                    medians.append(percentile(lats, 0.5))
                    p99s.append(percentile(lats, 0.99))
                record(out, workload, name, "us/roundtrip", False, medians,
                       {"mean": (means, "us/roundtrip")})
                record(out, workload + "_p99", name, "us/roundtrip", False, p99s)
    except CountError as e:
        print(f"py_pool: {e} - the run is invalid", file=sys.stderr)
        return 2
    finally:
        if f:
            f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
