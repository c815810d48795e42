#!/usr/bin/env python3
"""Twisted's inlineCallbacks on the Deferred workloads of bench/async_bench.c.

Same workloads, fewer iterations, same unit (ns per operation):
  async_await_ready           inside one inlineCallbacks generator, `x = yield
                              succeed(i)`; 10^5 times
  async_await_pending         the generator yields a new Deferred, the driver
                              fires it; 10^5 times
  async_network_counter       seed 000's NetworkCounter.next(): two overlapping
                              calls, then a task.Clock "network" completes the
                              records RECORD_DELAY seconds after they were sent
                              (advanced by one delay twice); 5*10^4 calls.
                              "python Twisted inlineCallbacks": the coroutine
                              version (acquire, try/finally release);
                              "python Twisted DeferredLock.run": the seed's
                              callback version
  async_network_counter_bare  the same over a deque of record Deferreds that
                              the driver fires, oldest first
The extra metric `cpu` is each run's thread CPU time per operation (on a
shared machine wall time also counts other processes' time). Every await
checks the value it got; every next() must answer its position
(1, 2, 3, ... in call order), and the lock must end free. A run whose counts
are not exact is invalid (exit 2). Each measurement is repeated 5 times; the
CSV gets the median, the best, the worst and every repetition, as
`workload,impl,metric,value,unit`. No reactor runs (none is needed).

Needs Twisted (Debian: python3-twisted, for /usr/bin/python3); bench/run.sh
picks an interpreter that has it.

usage: py_async.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pybench.py is next to this file
import pybench
from pybench import REPS, CountError, check

N_AWAIT = 100_000
N_COUNTER = 50_000
WARM_UP = 2_000  # untimed operations before the first repetition
RECORD_DELAY = 0.5


# ---- awaits ---------------------------------------------------------------------------
# Each returns (seconds, operations, operations that saw the right value).

def await_ready(n):
    from twisted.internet.defer import inlineCallbacks, succeed

    @inlineCallbacks
    def co():
        hits = 0
        for i in range(1, n + 1):
            x = yield succeed(i)
            if x == i:
                hits += 1
        return hits

    t0 = time.perf_counter()
    d = co()
    t1 = time.perf_counter()
    return t1 - t0, n, getattr(d, "result", 0)


def await_pending(n):
    from twisted.internet.defer import Deferred, inlineCallbacks

    pend = [None]

    @inlineCallbacks
    def co():
        hits = 0
        for i in range(1, n + 1):
            pend[0] = d = Deferred()
            x = yield d
            if x == i:
                hits += 1
        return hits

    t0 = time.perf_counter()
    out = co()
    for i in range(1, n + 1):
        pend[0].callback(i)
    t1 = time.perf_counter()
    return t1 - t0, n, getattr(out, "result", 0)


# ---- NetworkCounter ----------------------------------------------------------------------

class Network:
    """Records in flight: on a task.Clock (clock=True) or a deque the driver
    empties, oldest first."""

    def __init__(self, clock):
        from twisted.internet.task import Clock
        self.clock = Clock() if clock else None
        self.fifo = collections.deque()

    def record(self, value):
        from twisted.internet.defer import Deferred
        d = Deferred()
        if self.clock:
            self.clock.callLater(RECORD_DELAY, d.callback, None)
        else:
            self.fifo.append(d)
        return d

    def run(self):
        if self.clock:  # two records at most, one after the other
            self.clock.advance(RECORD_DELAY)
            self.clock.advance(RECORD_DELAY)
            return
        fifo = self.fifo
        while fifo:
            fifo.popleft().callback(None)


class NetworkCounter:
    def __init__(self, network):
        from twisted.internet.defer import DeferredLock
        self._count = 0
        self._lock = DeferredLock()
        self._network = network

    # the coroutine version
    def next_ic(self):
        return self._next_ic()

    # the seed's callback version
    def next_cb(self):
        return self._lock.run(self._next)

    def _next(self):
        self._count += 1
        recording = self._network.record(self._count)

        def recorded(ignored):
            return self._count
        recording.addCallback(recorded)
        return recording


def _make_next_ic():
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def _next_ic(self):
        yield self._lock.acquire()
        try:
            self._count += 1
            yield self._network.record(self._count)
            return self._count
        finally:
            self._lock.release()
    return _next_ic


def counter(n, coroutine, clock):
    if not hasattr(NetworkCounter, "_next_ic"):
        NetworkCounter._next_ic = _make_next_ic()
    network = Network(clock)
    c = NetworkCounter(network)
    nxt = c.next_ic if coroutine else c.next_cb
    state = {"expect": 0, "hits": 0, "calls": 0}

    def answer(value):
        state["calls"] += 1
        state["expect"] += 1
        if value == state["expect"]:
            state["hits"] += 1
        return value

    t0 = time.perf_counter()
    for _ in range(0, n, 2):
        nxt().addCallback(answer)
        nxt().addCallback(answer)
        network.run()
    t1 = time.perf_counter()
    if c._lock.locked or c._lock.waiting:
        raise CountError("async_network_counter: the DeferredLock is still held after the run")
    return t1 - t0, state["calls"], state["hits"]


WORKLOADS = [
    # (workload, impl, function, iterations)
    ("async_await_ready", "python Twisted inlineCallbacks", await_ready, N_AWAIT),
    ("async_await_pending", "python Twisted inlineCallbacks", await_pending, N_AWAIT),
    ("async_network_counter", "python Twisted DeferredLock.run",
     lambda n: counter(n, False, True), N_COUNTER),
    ("async_network_counter", "python Twisted inlineCallbacks",
     lambda n: counter(n, True, True), N_COUNTER),
    ("async_network_counter_bare", "python Twisted DeferredLock.run",
     lambda n: counter(n, False, False), N_COUNTER),
    ("async_network_counter_bare", "python Twisted inlineCallbacks",
     lambda n: counter(n, True, False), N_COUNTER),
]


# ---- driver ------------------------------------------------------------------------

def main(run):
    by_workload = collections.OrderedDict()
    for w in WORKLOADS:
        by_workload.setdefault(w[0], []).append(w)
    for workload, impls in by_workload.items():
        # --only selects by prefix, as in the C program: async_network_counter
        # selects its _bare twin too.
        if not run.selected(workload):
            continue
        ns = {name: [] for _, name, _, _ in impls}
        cpu = {name: [] for _, name, _, _ in impls}
        n = {name: run.scaled(base) + run.scaled(base) % 2 for _, name, _, base in impls}
        print(f"{workload}: {', '.join(str(v) for v in n.values())} operations, {REPS} "
              f"repetitions, taking turns", flush=True)
        for _, name, fn, _ in impls:
            fn(min(n[name], WARM_UP))
        for _ in range(REPS):
            for _, name, fn, _ in impls:
                c0 = time.thread_time()
                secs, count, hits = fn(n[name])
                cpu[name].append((time.thread_time() - c0) * 1e9 / n[name])
                check(workload, name, count, n[name])
                check(workload, name + " (right value)", hits, n[name])
                ns[name].append(secs * 1e9 / n[name])
        for _, name, _, _ in impls:
            run.record(workload, name, "ns/op", False, ns[name],
                       {"cpu": (cpu[name], "ns/op")}, widths=(26, 32))


if __name__ == "__main__":
    sys.exit(pybench.main("py_async", __doc__, main, needs_twisted=True))
