#!/usr/bin/env python3
"""Prints a bench/results/*.csv (one suite: sync, pool, deferred, reactor, async, http, redis, net, ...) as one table, with ratios and the targets.

usage: table.py CSV [--markdown]

Rows are grouped by workload in the order they first appear. The headline
figure is the median of the repetitions; the ratio column is median / median
of the fastest C peer of the same workload. A workload without a C peer (the
deferred suite, where Twisted is the only peer) is compared with twine instead:
its ratio column is median / median of twine's row, so Twisted's row reads as
"Twisted / twine" (how many times slower Twisted is).
Implementation names starting with "twine " are twine, "python " are CPython;
every other name is a C peer. For time units (ns/op, us/roundtrip) lower is
better and the fastest peer has the smallest value; for ops/s, tasks/s and
callbacks/s it is the largest. Extra metrics (submit, work_only, mean, allocs,
frees, post) are listed under the table.
"""

import csv
import sys

HIGHER_IS_BETTER = {"ops/s", "tasks/s", "callbacks/s", "roundtrips/s", "MB/s", "conns/s"}

# (description, workload, twine impl, peer, comparison, limit)
#   peer: an impl name; None for the fastest C peer; "NAME*" for the best of
#   the impls whose name starts with NAME (e.g. both libuv pool sizes);
#   "NAME|NAME..." for the best of the impls named
#   comparison: "le" = ratio must be <= limit, "ge" = ratio must be >= limit,
#   "speedup" = how many times faster twine is (peer / twine for times,
#   twine / peer for throughputs) must be >= limit,
#   "worst_ge" = twine's worst repetition / the peer's median must be >= limit,
#   "metric" = peer names extra metrics of twine's row (comma-separated, e.g.
#   allocs,allocs_cold), the largest of whose values must be <= limit
# A target is listed when the CSV has any workload of its suite (pool_* is
# the pool suite, deferred_* the deferred suite, call_from_thread* and
# defer_to_thread* the reactor suite, async_* the async suite, tcp_* the net
# suite, the rest the sync suite).
TARGETS = [
    ("uncontended Lock <= 1.0x the fastest C peer",
     "lock_uncontended", "twine Lock", None, "le", 1.0),
    ("contended Lock throughput >= 1.0x the fastest C peer",
     "lock_contended", "twine Lock", None, "ge", 1.0),
    ("pinned Condition ping-pong <= 1.0x nsync_cv",
     "cond_pingpong_pinned", "twine Condition", "nsync_cv", "le", 1.0),
    ("uncontended RLock <= 1.0x recursive pthread_mutex",
     "lock_uncontended", "twine RLock", "pthread_mutex recursive", "le", 1.0),
    ("tracked (TW_DEBUG) uncontended Lock <= 3x the untracked one",
     "lock_uncontended", "twine Lock tracked", "twine Lock", "le", 3.0),
    ("tracked (TW_DEBUG) nested Locks, stack seen before, <= 3x the untracked ones",
     "lock_nested", "twine Lock tracked", "twine Lock", "le", 3.0),
    ("pool throughput >= 2x libuv's best",
     "pool_throughput", "twine pool submit", "libuv*", "ge", 2.0),
    ("pinned pool round trip median <= 0.8x libuv",
     "pool_roundtrip_pinned", "twine pool submit", "libuv*", "le", 0.8),
    ("Deferred chain >= 100x faster than Twisted",
     "deferred_chain", "twine Deferred", "python Twisted Deferred", "speedup", 100.0),
    ("chain fired first >= 100x faster than Twisted",
     "deferred_chain_fired_first", "twine Deferred", "python Twisted Deferred", "speedup", 100.0),
    ("DeferredLock.run >= 100x faster than Twisted",
     "deferred_lock", "twine DeferredLock", "python Twisted DeferredLock", "speedup", 100.0),
    ("Deferred chain <= 1 allocation per Deferred",
     "deferred_chain", "twine Deferred", "allocs,allocs_cold", "metric", 1.0),
    ("DeferredLock.run: no allocation beyond its 2 Deferreds",
     "deferred_lock", "twine DeferredLock", "allocs,allocs_cold", "metric", 2.0),
    ("call_from_thread, worst of 10 fresh processes >= 1.0x libuv prealloc's median",
     "call_from_thread_fresh", "twine call_from_thread", "libuv async+mutex prealloc",
     "worst_ge", 1.0),
    ("call_from_thread >= 1.5x libuv async + mutex queue",
     "call_from_thread", "twine call_from_thread", "libuv async+mutex queue", "ge", 1.5),
    ("pinned defer_to_thread median <= 0.8x libuv",
     "defer_to_thread_pinned", "twine defer_to_thread", "libuv uv_queue_work", "le", 0.8),
    ("call_from_thread >= 50x Twisted callFromThread",
     "call_from_thread", "twine call_from_thread", "python Twisted callFromThread",
     "speedup", 50.0),
    ("unpinned defer_to_thread >= 50x faster than Twisted",
     "defer_to_thread_unpinned", "twine defer_to_thread", "python Twisted deferToThread",
     "speedup", 50.0),
    ("pinned defer_to_thread >= 50x faster than Twisted",
     "defer_to_thread_pinned", "twine defer_to_thread", "python Twisted deferToThread",
     "speedup", 50.0),
    ("HTTP GETs, 100 at once: time <= 1.1x libuv + curl multi",
     "http_get_concurrent", "twine http client", "libuv + curl multi", "le", 1.1),
    ("HTTP GETs, 100 at once: CPU <= 1.1x libuv + curl multi",
     "http_get_concurrent_cpu", "twine http client", "libuv + curl multi", "le", 1.1),
    ("uncontended Redis lock <= 1.3x two hiredis PINGs (the floor)",
     "redis_lock_uncontended", "twine redis lock", "hiredis 2 x PING (floor)", "le", 1.3),
    ("uncontended Redis lock >= 1.5x faster than redis-py's Lock",
     "redis_lock_uncontended", "twine redis lock", "python redis-py Lock", "speedup", 1.5),
    ("contended Redis lock (8 processes) >= 1.5x redis-py's acquisitions/s",
     "redis_lock_contended", "twine redis lock", "python redis-py Lock", "speedup", 1.5),
    ("contended: the least busy process gets >= half an even share",
     "redis_lock_contended", "twine redis lock", "least_busy_shortfall", "metric", 0.5),
    ("queue put+get+ack >= 1.2x a redis-py Streams consumer",
     "redis_queue", "twine queue COUNT 16", "python redis-py streams COUNT 16", "speedup", 1.2),
    ("suspend + resume <= 20 ns",
     "async_switch", "twine suspend+resume", "ns", "metric", 20.0),
    ("suspend + resume >= 10x faster than swapcontext",
     "async_switch", "twine suspend+resume", "swapcontext", "speedup", 10.0),
    ("await of a fired Deferred <= 1.2x adding a callback to it",
     "async_await_ready", "twine await", "twine add_callback", "le", 1.2),
    ("NetworkCounter await style <= 1.3x callback style",
     "async_network_counter", "twine await", "twine callbacks", "le", 1.3),
    ("NetworkCounter await >= 100x faster than Twisted inlineCallbacks",
     "async_network_counter", "twine await", "python Twisted inlineCallbacks", "speedup", 100.0),
    ("ping-pong round trips/s >= 0.97x the epoll floor",
     "tcp_pingpong", "twine net", "epoll floor", "ge", 0.97),
    ("ping-pong server CPU per round trip <= libuv's",
     "tcp_pingpong_cpu", "twine net", "libuv uv_tcp", "le", 1.0),
    ("streaming MB/s >= the better of libuv and libevent",
     "tcp_stream", "twine net", "libuv uv_tcp|libevent bufferevent", "ge", 1.0),
    ("streaming server CPU per MB <= libuv's",
     "tcp_stream_cpu", "twine net", "libuv uv_tcp", "le", 1.0),
    ("accepting connections/s >= libuv's",
     "tcp_accept", "twine net", "libuv uv_tcp", "ge", 1.0),
    ("accepting server CPU per connection <= libuv's",
     "tcp_accept_cpu", "twine net", "libuv uv_tcp", "le", 1.0),
    ("write coalescing MB/s >= 2x libuv's (one uv_write each)",
     "tcp_write_batch", "twine net", "libuv uv_tcp", "ge", 2.0),
]

# A missed speedup target on a pinned workload also says how far the
# machine's pinned floor (defer_to_thread_floor: the two context switches of
# any round trip on one CPU) would let any implementation go.
FLOOR = {"defer_to_thread_pinned": "defer_to_thread_floor"}


def suite(workload):
    if workload.startswith("pool_"):
        return "pool"
    if workload.startswith("deferred_"):
        return "deferred"
    if workload.startswith(("call_from_thread", "defer_to_thread")):
        return "reactor"
    if workload.startswith("http_"):
        return "http"
    if workload.startswith("redis_"):
        return "redis"
    if workload.startswith("async_"):
        return "async"
    if workload.startswith("tcp_"):
        return "net"
    return "sync"


def family(impl):
    if impl.startswith("twine "):
        return "twine"
    if impl.startswith("python "):
        return "python"
    return "c"


def load(path):
    data = {}  # workload -> impl -> {metric: value, "unit": unit}
    order = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            w, impl = row["workload"], row["impl"]
            if w not in data:
                data[w] = {}
                order.append(w)
            entry = data[w].setdefault(impl, {"unit": row["unit"], "units": {}})
            entry[row["metric"]] = float(row["value"])
            entry["units"][row["metric"]] = row["unit"]
    return data, order


def fastest_peer(impls, prefix=None):
    peers = [(name, e) for name, e in impls.items()
             if family(name) == "c" and "median" in e
             and (prefix is None or name.startswith(prefix))]
    if not peers:
        return None, None
    unit = peers[0][1]["unit"]
    pick = max if unit in HIGHER_IS_BETTER else min
    name, e = pick(peers, key=lambda p: p[1]["median"])
    return name, e["median"]


def twine_ref(impls):
    """A workload's twine row, the reference of its ratio column when the
    workload has no C peer."""
    for name, e in impls.items():
        if family(name) == "twine" and "median" in e:
            return name, e["median"]
    return None, None


def reference(impls):
    """The fastest C peer, or, without one, twine's row."""
    name, val = fastest_peer(impls)
    if name is None:
        name, val = twine_ref(impls)
    return name, val


def vs_twine(data):
    """Whether this table's ratios are against twine (no workload has a C peer)."""
    return all(fastest_peer(impls)[0] is None for w, impls in data.items() if w not in PROBES)


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e5:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if 0 < v < 0.01:
        return f"{v:.2g}"  # e.g. allocations per operation amortised by a cache
    return f"{v:.2f}"


# Probes: measurements of the machine, not workloads; printed under the table.
PROBES = {
    # cache-line round trip between the two benchmark threads, around lock_contended
    "machine_probe": "machine probe, two threads handing a cache line back and forth",
    # the two context switches any round trip between threads on one CPU costs
    "defer_to_thread_floor": "pinned floor, two threads on one CPU handing a word back and "
                             "forth with sched_yield (no pinned round trip can be faster)",
    # ping-pong with no event loop at all: blocking send and recv in two threads
    "tcp_pingpong_kernel": "kernel, the same ping-pong between two threads with blocking "
                           "send and recv (no event loop)",
}


def probe_lines(data):
    return [f"{what}: {impl}: {fmt(e['median'])} {e['unit']} (median; best {fmt(e['best'])})"
            for w, what in PROBES.items() for impl, e in data.get(w, {}).items()]


def rows(data, order):
    for w in order:
        if w in PROBES:
            continue
        impls = data[w]
        peer_name, peer_val = reference(impls)
        for impl, e in impls.items():
            ratio = e["median"] / peer_val if peer_val else None
            yield (w, impl, e["unit"], e["median"], e.get("best"), e.get("worst"), ratio,
                   impl == peer_name)


def targets(data):
    out = []
    suites = {suite(w) for w in data}
    for desc, w, mine, peer, cmp, limit in TARGETS:
        kind = cmp
        if suite(w) not in suites:
            continue
        impls = data.get(w, {})
        if mine not in impls:
            out.append((desc, None, None, "not measured", kind))
            continue
        if cmp == "metric":
            names = peer.split(",")
            vals = [impls[mine][m] for m in names if m in impls[mine]]
            v = max(vals) if len(vals) == len(names) else None
            unit = impls[mine].get("units", {}).get(names[0], "")
            if v is None:
                out.append((desc, None, unit, "not measured", kind))
            elif v <= limit:
                out.append((desc, v, unit, "met", kind))
            else:
                out.append((desc, v, unit,
                            f"MISSED: {v:.3g} {unit}, the target is at most {limit:g}", kind))
            continue
        if peer is None:
            peer, peer_val = fastest_peer(impls)
        elif peer.endswith("*"):
            peer, peer_val = fastest_peer(impls, peer[:-1])
        elif "|" in peer:
            named = {n: impls[n] for n in peer.split("|") if "median" in impls.get(n, {})}
            peer, peer_val = fastest_peer(named) if named else (peer, None)
        else:
            peer_val = impls.get(peer, {}).get("median")
        if not peer_val:
            out.append((desc, None, peer, "peer not measured", kind))
            continue
        if cmp == "speedup":
            if impls[mine]["unit"] in HIGHER_IS_BETTER:
                r = impls[mine]["median"] / peer_val
            else:
                r = peer_val / impls[mine]["median"]
            verdict = "met" if r >= limit else (
                f"MISSED: {r:.1f}x faster, the target is at least {limit:g}x")
            floor = next(iter(data.get(FLOOR.get(w, ""), {}).values()), {}).get("median")
            if r < limit and floor:
                verdict += (f" (the pinned floor, {fmt(floor)} {impls[mine]['unit']}, "
                            f"allows at most {peer_val / floor:.0f}x)")
            out.append((desc, r, peer, verdict, kind))
            continue
        if cmp == "worst_ge":
            # twine's worst repetition (of fresh processes) against the peer's median
            r = impls[mine]["worst"] / peer_val
            verdict = "met" if r >= limit else (
                f"MISSED: the worst is {r:.2f}x the peer's median, the target is at least {limit:g}x")
            out.append((desc, r, peer, verdict, kind))
            continue
        r = impls[mine]["median"] / peer_val
        ok = r <= limit if cmp == "le" else r >= limit
        if ok:
            verdict = "met"
        elif limit != 1.0:
            verdict = (f"MISSED: {r:.3f}x, the target is {'at most' if cmp == 'le' else 'at least'} "
                       f"{limit:g}x")
        elif cmp == "le":
            verdict = f"MISSED: {(r - 1) * 100:.0f}% slower"
        else:
            verdict = f"MISSED: {(1 - r) * 100:.0f}% less throughput"
        out.append((desc, r, peer, verdict, kind))
    return out


# Secondary figures some workloads record (median over the repetitions).
EXTRAS = [
    ("submit", "submitting thread's time per task"),
    ("work_only", "libuv, counted to the last work callback instead of the last after_work"),
    ("mean", "mean round trip"),
    ("allocs", "allocator calls (alloc + realloc) per operation over a timed run"),
    ("allocs_cold", "allocator calls of one operation with the per-thread block cache empty"),
    ("post", "posting thread's time per call"),
    ("latency", "median round trip after the pool sat idle for the gap"),
    ("least_busy_shortfall", "1 - the least busy process's share / an even share"),
    ("client_cmds_per_acq", "commands the clients sent per acquisition"),
    ("server_calls_per_acq", "Redis calls per acquisition (INFO commandstats, script calls included)"),
    ("cpu", "the thread's CPU time per operation, without the time other processes had the CPU"),
    ("server_busy", "server's CPU time over the run's wall time"),
    ("client_busy", "load client's CPU time over the run's wall time"),
    ("client", "the load client's own CPU per operation"),
    ("user", "share of the server's CPU spent in user space (the rest is the kernel's)"),
    ("syscw", "write and writev calls per 1000 messages in the timed runs (/proc/PID/io syscw; "
              "not send, sendto, sendmsg)"),
]


def twisted_lines(data, order):
    """The net suite's twine rows against Twisted's on the same runs: how many
    times more throughput, or how many times less CPU, twine has."""
    lines = []
    for w in order:
        mine = data[w].get("twine net", {}).get("median")
        theirs = data[w].get("python Twisted", {}).get("median")
        if not mine or not theirs:
            continue
        unit = data[w]["twine net"]["unit"]
        if unit in HIGHER_IS_BETTER:
            lines.append(f"{w}: twine {fmt(mine)} vs Twisted {fmt(theirs)} {unit}: "
                         f"{mine / theirs:.2f}x Twisted's")
        else:
            lines.append(f"{w}: twine {fmt(mine)} vs Twisted {fmt(theirs)} {unit}: "
                         f"Twisted takes {theirs / mine:.2f}x twine's")
    return lines


def extra_lines(data, order):
    lines = []
    for w in order:
        for metric, what in EXTRAS:
            vals = [(impl, e[metric]) for impl, e in data[w].items() if metric in e]
            if not vals:
                continue
            unit = next(e["units"][metric] for e in data[w].values() if metric in e)
            parts = ", ".join(f"{impl} {fmt(v)}" for impl, v in vals)
            lines.append(f"{w}, {what} ({unit}): {parts}")
    return lines


def target_shown(r, peer, kind, md):
    """A target's figure and what it is measured against, as printed."""
    x = "×" if md else "x"
    if r is None:
        return ("–" if md else "-"), peer
    if kind == "metric":
        return f"{r:.2f} {peer}", ("–" if md else "-")
    if kind == "speedup":
        return (f"{r:.0f}{x}" if r >= 10 else f"{r:.2f}{x}"), peer
    return f"{r:.2f}{x}", peer


def repetitions(data):
    """How many repetitions the medians are of: "5", or "5-9" when workloads differ
    (single counts, such as the net suite's strace row, left aside)."""
    counts = {sum(1 for m in e if m.startswith("rep")) for impls in data.values()
              for e in impls.values()} - {0, 1}
    if not counts:
        return "1"
    lo, hi = min(counts), max(counts)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def print_text(data, order):
    against_twine = vs_twine(data)
    ww = max([24] + [len(w) for w in order])
    iw = max([26] + [len(i) for w in order for i in data[w]])
    label = "x twine" if against_twine else "x fastest C peer"
    hdr = (f"{'workload':<{ww}} {'impl':<{iw}} {'median':>12} {'best':>12} {'worst':>12} "
           f"{'unit':<13} {label:>16}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    for w, impl, unit, median, best, worst, ratio, is_peer in rows(data, order):
        if last is not None and w != last:
            print()
        last = w
        r = f"{ratio:.2f}x" if ratio is not None else "-"
        if is_peer:
            r += " *"
        b = fmt(best) if best is not None else "-"
        x = fmt(worst) if worst is not None else "-"
        print(f"{w:<{ww}} {impl:<{iw}} {fmt(median):>12} {b:>12} {x:>12} {unit:<13} {r:>16}")
    if against_twine:
        print(f"(median of {repetitions(data)} repetitions; * = twine, the reference of the ratio column, so a")
        print(" Twisted row's ratio is Twisted / twine; ns/op: lower is better)")
    else:
        print(f"(median of {repetitions(data)} repetitions; * = the fastest C peer of the workload;")
        if any(suite(w) == "pool" for w in data):
            print(" tasks/s: higher is better, us/roundtrip: lower is better)")
        elif any(suite(w) == "reactor" for w in data):
            print(" callbacks/s: higher is better, us/roundtrip: lower is better)")
        elif any(suite(w) == "http" for w in data):
            print(" us/request: lower is better)")
        elif any(suite(w) == "net" for w in data):
            print(" roundtrips/s, MB/s, conns/s: higher is better; CPU and writes per operation:")
            print(" lower is better)")
        else:
            print(" ops/s: higher is better, ns/op and us/roundtrip: lower is better)")
    for line in probe_lines(data):
        print(line)
    for line in extra_lines(data, order):
        print(line)
    for line in twisted_lines(data, order):
        print(line)
    print()
    print("targets:")
    for desc, r, peer, verdict, kind in targets(data):
        rs, vs = target_shown(r, peer, kind, False)
        print(f"  {desc:<55} {rs:>7} (vs {vs})  {verdict}")


def print_markdown(data, order):
    against_twine = vs_twine(data)
    label = "× twine (Twisted / twine)" if against_twine else "× fastest C peer"
    print(f"| workload | impl | median | best | worst | unit | {label} |")
    print("|---|---|---:|---:|---:|---|---:|")
    for w, impl, unit, median, best, worst, ratio, is_peer in rows(data, order):
        r = f"{ratio:.2f}×" if ratio is not None else "–"
        if is_peer:
            r = f"**{r}** ({'twine' if against_twine else 'peer'})"
        name = f"**{impl}**" if family(impl) == "twine" else impl
        b = fmt(best) if best is not None else "–"
        x = fmt(worst) if worst is not None else "–"
        print(f"| {w} | {name} | {fmt(median)} | {b} | {x} | {unit} | {r} |")
    print()
    for line in probe_lines(data):
        print(f"{line[0].upper()}{line[1:]}  ")
    for line in extra_lines(data, order) + twisted_lines(data, order):
        print(f"{line}  ")
    print()
    print("| target | result | vs | verdict |" if against_twine else
          "| target | ratio | vs | result |")
    print("|---|---:|---|---|")
    for desc, r, peer, verdict, kind in targets(data):
        rs, vs = target_shown(r, peer, kind, True)
        print(f"| {desc} | {rs} | {vs} | {verdict} |")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    data, order = load(argv[1])
    if "--markdown" in argv[2:]:
        print_markdown(data, order)
    else:
        print_text(data, order)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
