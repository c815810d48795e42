#!/usr/bin/env python3
"""Prints bench/results/*.csv (sync.csv, pool.csv) as one table, with ratios and the issue's targets.

usage: table.py CSV [--markdown]

Rows are grouped by workload in the order they first appear. The headline
figure is the median of the repetitions; the ratio column is median / median
of the fastest C peer of the same workload.
Implementation names starting with "twine " are twine, "python " are CPython;
every other name is a C peer. For time units (ns/op, us/roundtrip) lower is
better and the fastest peer has the smallest value; for ops/s and tasks/s it is
the largest. Extra metrics (submit, work_only, mean) are listed under the table.
"""

import csv
import sys

HIGHER_IS_BETTER = {"ops/s", "tasks/s"}

# (description, workload, twine impl, peer, comparison, limit)
#   peer: an impl name; None for the fastest C peer; "NAME*" for the best of
#   the impls whose name starts with NAME (e.g. both libuv pool sizes)
#   comparison: "le" = ratio must be <= limit, "ge" = ratio must be >= limit
# A target is listed when the CSV has any workload of its suite (pool_* is
# the pool suite, the rest the sync suite).
TARGETS = [
    ("uncontended Lock <= 1.0x the fastest C peer",
     "lock_uncontended", "twine Lock", None, "le", 1.0),
    ("contended Lock throughput >= 1.0x the fastest C peer",
     "lock_contended", "twine Lock", None, "ge", 1.0),
    ("pinned Condition ping-pong <= 1.0x nsync_cv",
     "cond_pingpong_pinned", "twine Condition", "nsync_cv", "le", 1.0),
    ("uncontended RLock <= 1.0x recursive pthread_mutex",
     "lock_uncontended", "twine RLock", "pthread_mutex recursive", "le", 1.0),
    ("pool throughput >= 2x libuv's best",
     "pool_throughput", "twine pool submit", "libuv*", "ge", 2.0),
    ("pinned pool round trip median <= 0.8x libuv",
     "pool_roundtrip_pinned", "twine pool submit", "libuv*", "le", 0.8),
]


def suite(workload):
    return "pool" if workload.startswith("pool_") else "sync"


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
            entry = data[w].setdefault(impl, {"unit": row["unit"]})
            entry[row["metric"]] = float(row["value"])
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


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e5:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


PROBE = "machine_probe"


def probe_lines(data):
    """The machine probe (not a workload): cache-line round trip between the
    two benchmark threads, measured around lock_contended."""
    return [f"{impl}: {fmt(e['median'])} {e['unit']} (median; best {fmt(e['best'])})"
            for impl, e in data.get(PROBE, {}).items()]


def rows(data, order):
    for w in order:
        if w == PROBE:
            continue
        impls = data[w]
        peer_name, peer_val = fastest_peer(impls)
        for impl, e in impls.items():
            ratio = e["median"] / peer_val if peer_val else None
            yield (w, impl, e["unit"], e["median"], e.get("best"), e.get("worst"), ratio,
                   impl == peer_name)


def targets(data):
    out = []
    suites = {suite(w) for w in data}
    for desc, w, mine, peer, cmp, limit in TARGETS:
        if suite(w) not in suites:
            continue
        impls = data.get(w, {})
        if mine not in impls:
            out.append((desc, None, None, "not measured"))
            continue
        if peer is None:
            peer, peer_val = fastest_peer(impls)
        elif peer.endswith("*"):
            peer, peer_val = fastest_peer(impls, peer[:-1])
        else:
            peer_val = impls.get(peer, {}).get("median")
        if not peer_val:
            out.append((desc, None, peer, "peer not measured"))
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
        out.append((desc, r, peer, verdict))
    return out


# Secondary figures some workloads record (median over the repetitions).
EXTRAS = [
    ("submit", "submitting thread's time per task"),
    ("work_only", "libuv, counted to the last work callback instead of the last after_work"),
    ("mean", "mean round trip"),
]


def extra_lines(data, order):
    lines = []
    for w in order:
        for metric, what in EXTRAS:
            vals = [(impl, e[metric]) for impl, e in data[w].items() if metric in e]
            if not vals:
                continue
            unit = "ns/task" if metric == "submit" else next(iter(data[w].values()))["unit"]
            parts = ", ".join(f"{impl} {fmt(v)}" for impl, v in vals)
            lines.append(f"{w}, {what} ({unit}): {parts}")
    return lines


def print_text(data, order):
    hdr = (f"{'workload':<24} {'impl':<26} {'median':>12} {'best':>12} {'worst':>12} "
           f"{'unit':<13} {'x fastest C peer':>16}")
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
        print(f"{w:<24} {impl:<26} {fmt(median):>12} {b:>12} {x:>12} {unit:<13} {r:>16}")
    print("(median of 5 repetitions; * = the fastest C peer of the workload;")
    if any(suite(w) == "pool" for w in data):
        print(" tasks/s: higher is better, us/roundtrip: lower is better)")
    else:
        print(" ops/s: higher is better, ns/op and us/roundtrip: lower is better)")
    for line in probe_lines(data):
        print(f"machine probe, two threads handing a cache line back and forth: {line}")
    for line in extra_lines(data, order):
        print(line)
    print()
    print("targets:")
    for desc, r, peer, verdict in targets(data):
        rs = f"{r:.2f}x" if r is not None else "-"
        print(f"  {desc:<55} {rs:>7} (vs {peer})  {verdict}")


def print_markdown(data, order):
    print("| workload | impl | median | best | worst | unit | × fastest C peer |")
    print("|---|---|---:|---:|---:|---|---:|")
    for w, impl, unit, median, best, worst, ratio, is_peer in rows(data, order):
        r = f"{ratio:.2f}×" if ratio is not None else "–"
        if is_peer:
            r = f"**{r}** (peer)"
        name = f"**{impl}**" if family(impl) == "twine" else impl
        b = fmt(best) if best is not None else "–"
        x = fmt(worst) if worst is not None else "–"
        print(f"| {w} | {name} | {fmt(median)} | {b} | {x} | {unit} | {r} |")
    print()
    for line in probe_lines(data):
        print(f"Machine probe (two threads handing one cache line back and forth): {line}  ")
    for line in extra_lines(data, order):
        print(f"{line}  ")
    print()
    print("| target | ratio | vs | result |")
    print("|---|---:|---|---|")
    for desc, r, peer, verdict in targets(data):
        rs = f"{r:.2f}×" if r is not None else "–"
        print(f"| {desc} | {rs} | {peer} | {verdict} |")


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
