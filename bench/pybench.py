"""What the Python benchmark programs (py_sync.py, py_pool.py, py_deferred.py,
py_reactor.py) share: their options, count checks, thread placement, the
nearest-rank percentile, and the rows they print and write to the CSV.

It mirrors bench_util.[ch] on the C side, so that both write the same rows:
every measurement is repeated REPS times and recorded as its median (the
headline figure), best and worst plus every repetition, in the CSV layout
`workload,impl,metric,value,unit`.

Each program runs as `python3 bench/py_X.py ...` (bench/run.sh gives the full
path); it finds this module next to itself, wherever it is run from.
"""

import argparse
import csv
import importlib.util
import math
import os
import statistics
import sys
import threading

REPS = 5  # as BENCH_REPS in bench_util.h


class CountError(Exception):
    """A workload's final count is not what it must be: the run is invalid."""


def check(workload, impl, got, want):
    if got != want:
        raise CountError(f"{workload} / {impl}: count is {got}, expected {want}")


# ---- thread placement ----------------------------------------------------------------

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


# ---- one run of a program -----------------------------------------------------------------

class Run:
    """A program's options (--csv PATH, --scale F, --only WORKLOAD[,...]) and
    its CSV writer (None without --csv)."""

    def __init__(self, args, out):
        self.args = args
        self.out = out

    def scaled(self, n):
        """n iterations times --scale, never below 1."""
        return max(1, int(n * self.args.scale))

    def selected(self, workload):
        """Whether an --only entry is a prefix of workload (all without --only),
        as bench_selected() in bench_util.c."""
        if not self.args.only:
            return True
        return any(p and workload.startswith(p) for p in self.args.only.split(","))

    def record(self, workload, name, unit, higher_is_better, s, extra=None, widths=(24, 26)):
        """Prints and writes the rows of one measured implementation: samples s
        in `unit`; higher_is_better picks whether best is the maximum
        (throughput) or the minimum (time). extra maps a secondary metric to
        (samples, unit); its median is recorded. widths: the printed columns
        of workload and name."""
        best = max(s) if higher_is_better else min(s)
        worst = min(s) if higher_is_better else max(s)
        median = statistics.median(s)
        ww, nw = widths
        print(f"  {workload:<{ww}} {name:<{nw}} median {median:12.4g}  best {best:12.4g}  "
              f"worst {worst:12.4g}  {unit}", flush=True)
        out = self.out
        if out:
            out.writerow([workload, name, "median", f"{median:.6g}", unit])
            out.writerow([workload, name, "best", f"{best:.6g}", unit])
            out.writerow([workload, name, "worst", f"{worst:.6g}", unit])
            for i, v in enumerate(s, 1):
                out.writerow([workload, name, f"rep{i}", f"{v:.6g}", unit])
        for metric, (vals, eunit) in (extra or {}).items():
            m = statistics.median(vals)
            print(f"  {workload:<{ww}} {name:<{nw}} {metric} {m:.3g} {eunit}")
            if out:
                out.writerow([workload, name, metric, f"{m:.6g}", eunit])

    def record_roundtrips(self, workload, name, runs):
        """Records round-trip latencies: runs holds one list of latencies (us)
        per repetition. The workload's figure is each run's median (its extra
        metric `mean`, each run's mean); workload_p99 gets each run's 99th
        percentile. Sorts the lists in place."""
        medians, p99s, means = [], [], []
        for lats in runs:
            means.append(statistics.fmean(lats))
            lats.sort()
            medians.append(percentile(lats, 0.5))
            p99s.append(percentile(lats, 0.99))
        self.record(workload, name, "us/roundtrip", False, medians,
                    {"mean": (means, "us/roundtrip")})
        self.record(workload + "_p99", name, "us/roundtrip", False, p99s)


def main(prog, doc, body, needs_twisted=False):
    """A program's main: parses the options (the first line of doc describes
    the program), checks for Twisted if it needs it (exit status 1 without),
    opens the CSV with its header and calls body(run). A CountError is the
    run's verdict: reported, exit status 2. Returns the exit status."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--csv")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only")
    args = ap.parse_args()
    if needs_twisted and importlib.util.find_spec("twisted") is None:
        print(f"{prog}: Twisted is not installed for {sys.executable} "
              "(Debian: python3-twisted, for /usr/bin/python3)", file=sys.stderr)
        return 1

    f = open(args.csv, "w", newline="") if args.csv else None
    out = csv.writer(f, lineterminator="\n") if f else None
    if out:
        out.writerow(["workload", "impl", "metric", "value", "unit"])

    try:
        body(Run(args, out))
    except CountError as e:
        print(f"{prog}: {e} - the run is invalid", file=sys.stderr)
        return 2
    finally:
        if f:
            f.close()
    return 0


# ---- Twisted's reactor ------------------------------------------------------------------

def run_in_reactor(steps, pool_threads):
    """Runs steps(reactor), a generator in the style of defer.inlineCallbacks,
    in one reactor.run (a reactor cannot be restarted) with the reactor's
    thread pool limited to pool_threads; stops the reactor when it ends. An
    exception it raises is raised again once the reactor has stopped."""
    from twisted.internet import defer, reactor

    reactor.suggestThreadPoolSize(pool_threads)
    failure = []

    @defer.inlineCallbacks
    def main():
        try:
            yield from steps(reactor)
        except Exception as e:  # reported after the reactor stops
            failure.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run()
    if failure:
        raise failure[0]
