#!/usr/bin/env python3
"""redis-py (Debian python3-redis) on the workloads of bench/redis_bench.c.

  redis_ping              r.ping(), one at a time; us/roundtrip
  redis_lock_uncontended  lock.acquire(); lock.release() with redis-py's Lock
                          (SET NX PX, then a Lua release: two round trips);
                          us/op
  redis_lock_contended    8 processes, each looping "with lock: GET, SET
                          counter + 1" for a few seconds with redis-py's Lock
                          as documented (a blocking acquire polls every 0.1 s);
                          the counter must equal the acquisitions counted;
                          ops/s, plus least_busy_shortfall (1 - the least busy
                          process's share / an even share) and
                          server_calls_per_acq (INFO commandstats, calls made
                          inside scripts included)
  redis_queue             one producer process (XADD, pipelined 64 at a time)
                          and one consumer (XREADGROUP COUNT 16 or 1, BLOCK
                          100, then XACK and XDEL per entry, as a redis-py
                          Streams consumer does); 100-byte payloads; ops/s

The program starts its own redis-server (a free port on 127.0.0.1, a
temporary directory, no persistence) and stops it at the end.

usage: py_redis.py [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
"""

import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pybench.py is next to this file
import pybench
from pybench import REPS, CountError, check

N_PING = 20_000
N_LOCK = 5_000
N_QUEUE = 20_000
CONTEND_PROCS = 8
CONTEND_SECONDS = 3.0


# ---- a redis-server of our own ----------------------------------------------------------

class Server:
    def __init__(self):
        if not shutil.which("redis-server"):
            raise SystemExit("py_redis.py: redis-server is not installed (Debian: redis-server)")
        self.dir = tempfile.mkdtemp(prefix="twine-pybench-redis-")
        self.proc = None
        for _ in range(20):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
            s.close()
            log = open(os.path.join(self.dir, "server.log"), "w")
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", self.dir, "--daemonize", "no", "--save", "", "--appendonly", "no"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            import redis
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if redis.Redis(port=self.port).ping():
                        return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.01)
            self.stop(keep_dir=True)
        raise SystemExit("py_redis.py: redis-server did not start")

    def stop(self, keep_dir=False):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        import redis
        return redis.Redis(port=self.port)


def calls_total(r):
    return sum(v["calls"] for k, v in r.info("commandstats").items())


def evalsha_calls(r):
    st = r.info("commandstats")
    return st.get("cmdstat_evalsha", {}).get("calls", 0)


# ---- the workloads ---------------------------------------------------------------------

def ping(r, n):
    t0 = time.perf_counter()
    for _ in range(n):
        r.ping()
    return (time.perf_counter() - t0) / n * 1e6


def lock_uncontended(r, n):
    lock = r.lock("pybench:uncontended", timeout=10)
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t0) / n * 1e6


def contender(port, seconds, ready, go, out):
    import redis
    r = redis.Redis(port=port)
    lock = r.lock("pybench:contended", timeout=10)
    r.ping()
    ready.put(1)
    go.wait()
    end = time.monotonic() + seconds
    done = 0
    while time.monotonic() < end:
        with lock:
            v = int(r.get("pybench:counter") or 0)
            r.set("pybench:counter", v + 1)
        done += 1
    out.put(done)


def lock_contended(srv, seconds):
    r = srv.client()
    r.delete("pybench:counter")
    ctx = mp.get_context("fork")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=contender, args=(srv.port, seconds, ready, go, out))
             for _ in range(CONTEND_PROCS)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=30)
    r.config_resetstat()
    calls0 = calls_total(r)
    t0 = time.perf_counter()
    go.set()
    done = [out.get(timeout=120) for _ in procs]
    t = time.perf_counter() - t0
    calls1 = calls_total(r)
    for p in procs:
        p.join()
    total = sum(done)
    check("redis_lock_contended", "python redis-py Lock counter",
          int(r.get("pybench:counter") or 0), total)
    least = min(done)
    return (total / t, 1 - least / (total / CONTEND_PROCS),
            (calls1 - calls0 - 1) / total)


def producer(port, stream, n, payload):
    import redis
    r = redis.Redis(port=port)
    sent = 0
    while sent < n:
        k = min(64, n - sent)
        p = r.pipeline(transaction=False)
        for _ in range(k):
            p.xadd(stream, {"d": payload})
        p.execute()
        sent += k


def queue(srv, n, count, stream):
    import redis
    r = srv.client()
    try:
        r.xgroup_create(stream, "pybench", id="0", mkstream=True)
    except redis.exceptions.ResponseError:
        pass
    payload = b"x" * 100
    ctx = mp.get_context("fork")
    prod = ctx.Process(target=producer, args=(srv.port, stream, n, payload))
    t0 = time.perf_counter()
    prod.start()
    got = 0
    while got < n:
        res = r.xreadgroup("pybench", "c", {stream: ">"}, count=count, block=100)
        for _, entries in res or []:
            for eid, fields in entries:
                if len(fields[b"d"]) != 100:
                    raise CountError("redis_queue: a payload of the wrong size")
                p = r.pipeline(transaction=False)
                p.xack(stream, "pybench", eid)
                p.xdel(stream, eid)
                acked, _ = p.execute()
                check("redis_queue", "python redis-py ack", acked, 1)
                got += 1
    t = time.perf_counter() - t0
    prod.join()
    check("redis_queue", "python redis-py stream length", r.xlen(stream), 0)
    r.delete(stream)
    return n / t


def body(run):
    try:
        import redis  # noqa: F401
    except ImportError:
        print("py_redis.py: redis-py is not installed (Debian: python3-redis)", file=sys.stderr)
        sys.exit(1)
    srv = Server()
    try:
        r = srv.client()
        if run.selected("redis_ping"):
            n = run.scaled(N_PING)
            run.record("redis_ping", "python redis-py PING", "us/roundtrip", False,
                       [ping(r, n) for _ in range(REPS)])
        if run.selected("redis_lock_uncontended"):
            n = run.scaled(N_LOCK)
            lock_uncontended(r, max(1, n // 20))
            run.record("redis_lock_uncontended", "python redis-py Lock", "us/op", False,
                       [lock_uncontended(r, n) for _ in range(REPS)])
        if run.selected("redis_lock_contended"):
            seconds = max(0.5, CONTEND_SECONDS * run.args.scale)
            res = [lock_contended(srv, seconds) for _ in range(REPS)]
            run.record("redis_lock_contended", "python redis-py Lock", "ops/s", True,
                       [x[0] for x in res],
                       {"least_busy_shortfall": ([x[1] for x in res], "share"),
                        "server_calls_per_acq": ([x[2] for x in res], "calls")})
        if run.selected("redis_queue"):
            n = run.scaled(N_QUEUE)
            queue(srv, max(1, n // 10), 16, "pybench:warm")
            c1 = [queue(srv, n, 1, "pybench:q1") for _ in range(REPS)]
            c16 = [queue(srv, n, 16, "pybench:q16") for _ in range(REPS)]
            run.record("redis_queue", "python redis-py streams COUNT 1", "ops/s", True, c1)
            run.record("redis_queue", "python redis-py streams COUNT 16", "ops/s", True, c16)
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(pybench.main("py_redis.py", __doc__, body))
