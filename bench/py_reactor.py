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

import argparse
import csv
import importlib.util
import math
import os
import statistics
import sys
import threading
import time

REPS = 5  # as BENCH_REPS in bench_util.h
N_CALLS = 100_000
N_DEFER = 10_000
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
    from twisted.internet import defer, reactor

    reactor.suggestThreadPoolSize(POOL_THREADS)
    calls, defers = [], {}
    failure = []

    @defer.inlineCallbacks
    def main():
        try:
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
        except Exception as e:  # reported after the reactor stops
            failure.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run()
    if failure:
        raise failure[0]
    return calls, defers


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
        print(f"py_reactor: Twisted is not installed for {sys.executable} "
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
        call_n = scaled(N_CALLS) if selected("call_from_thread") else 0
        jobs = [(w, scaled(N_DEFER), pin)
                for w, pin in (("defer_to_thread_pinned", True),
                               ("defer_to_thread_unpinned", False))
                if selected(w)]
        if not call_n and not jobs:
            return 0
        calls, defers = run_all(call_n, jobs)
        if call_n:
            name = "python Twisted callFromThread"
            for _, _, ran, disorder in calls:
                check("call_from_thread", name, ran, call_n)
                check("call_from_thread", name + " (out of order)", disorder, 0)
            record(out, "call_from_thread", name, "callbacks/s", True, [c[0] for c in calls],
                   {"post": ([c[1] for c in calls], "ns/call")})
        name = "python Twisted deferToThread"
        for workload, n, _ in jobs:
            medians, p99s, means = [], [], []
            for lats, tasks, checked in defers[workload]:
                check(workload, name, tasks, n + 1)
                check(workload, name + " (values)", checked, n + 1)
                check(workload, name + " (round trips)", len(lats), n)
                means.append(statistics.fmean(lats))
                lats.sort()
                medians.append(percentile(lats, 0.5))
                p99s.append(percentile(lats, 0.99))
            record(out, workload, name, "us/roundtrip", False, medians,
                   {"mean": (means, "us/roundtrip")})
            record(out, workload + "_p99", name, "us/roundtrip", False, p99s)
    except CountError as e:
        print(f"py_reactor: {e} - the run is invalid", file=sys.stderr)
        return 2
    finally:
        if f:
            f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
