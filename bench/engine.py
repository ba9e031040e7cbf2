"""Engine benchmark: the shapes real traffic has, each beside a naive baseline in the same run.

    python -m bench.engine [--jobs 2000] [--rounds 30] [--only a,b,c,d,memory,breakdown,reads]

Runs against a private redis-server it starts (so the Redis figures are the
benchmark's alone) and prints Markdown tables for bench/README.md.  Every
shape is measured twice in the same run: through ``Engine.apply`` and
through the *naive* baseline, one pipelined script call per update (the
engine's own call for a batch of that one update, so nothing is coalesced
and every update pays a whole call).

Shapes
    (a) one update per tree per call: J jobs (depth-5 trees: root / step /
        group / part / leaf) each send their next update in every round, so a
        call of T trees carries exactly one update of each (what a 50 ms AMQP
        batch or a fleet's batch POST holds); calls of 1,000 and 2,000 trees
    (b) single-update calls, one after the other, as ``POST /status/<key>``
        makes them: to trees that exist, and a job's first (creating its tree)
    (c) the coalescing shape: the jobs' streams interleaved at random and
        applied in batches of 5,000 and 20,000 (~10 updates of a tree per call)
    (d) a wide node: calls of 1,000 updates to 1,000 distinct children of
        parents of 1,000, 10,000 and 100,000 children

Breakdown
    Chains of depth D (D nodes per update) in calls of T trees, one update per
    tree: a least-squares fit of Redis time per update = per-call / T +
    per-update + per-node x D separates the three costs.

Memory
    ``used_memory`` delta over the nodes stored, for >= 200,000 nodes of whole
    job trees (their full streams applied).

Figures per row
    updates/s       end to end from this Python process
    Redis CPU       INFO cpu delta of the Redis process per update (parsing,
                    networking and scripts)
    script          commandstats usec of the script calls per update (what a
                    script's Lua and its commands cost)
    Python CPU      this process's CPU per update (validation, packing,
                    decoding: what the server process pays)
    round trips     pipelines or commands sent per call of Engine.apply
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import redis.asyncio as aredis
import uvloop

from sca_progress.engine import Engine, now_ms
from sca_progress.engine import engine as engine_module
from sca_progress.engine.link import RedisLink

from .common import PrivateRedis, machine, median

STEPS = (("stage_input", 10), ("process", 100), ("output", 2))  # the spec's weights


def job_leaves(job: int) -> list[str]:
    """Leaf keys of one simulated job: 3 steps x 2 groups x 2 parts x 2 leaves."""
    return [f"_bench.job{job}.{step}.g{g}.p{p}.f{f}"
            for step, _ in STEPS for g in range(2) for p in range(2) for f in range(2)]


def job_stream(job: int, rng: random.Random) -> list[tuple[str, dict]]:
    """What one job sends, in order: its three weighted steps, then each of its
    24 leaves reports 0, 0.25, 0.5, 0.75 and 1 (running, then finished) with a
    message, the leaves interleaved at random (123 updates)."""
    stream = [(f"_bench.job{job}.{step}", {"weight": w, "msg": f"{step} of job {job}"}) for step, w in STEPS]
    leaves = job_leaves(job)
    steps = {leaf: 0 for leaf in leaves}
    while leaves:
        leaf = rng.choice(leaves)
        p = steps[leaf] / 4
        steps[leaf] += 1
        if steps[leaf] == 5:
            leaves.remove(leaf)
        stream.append((leaf, {"progress": p, "status": "finished" if p == 1 else "running",
                              "msg": f"at {p:.0%}"}))
    return stream


def workload(jobs: int, updates: int, seed: int = 1) -> list[tuple[str, dict]]:
    """Shape (c): the jobs' streams shuffled together (each job's own updates
    stay in order), stopping at *updates* (2,000 jobs make 246,000)."""
    rng = random.Random(seed)
    streams = [job_stream(j, rng)[::-1] for j in range(jobs)]
    out: list[tuple[str, dict]] = []
    live = list(range(jobs))
    while live and len(out) < updates:
        i = rng.randrange(len(live))
        stream = streams[live[i]]
        out.append(stream.pop())
        if not stream:
            live[i] = live[-1]
            live.pop()
    return out


def rounds(jobs: int, n_rounds: int, seed: int = 1) -> list[list[tuple[str, dict]]]:
    """Shape (a): in round r every job sends the r-th update of its stream, so
    any run of consecutive updates of one round holds one update per tree."""
    rng = random.Random(seed)
    streams = [job_stream(j, rng) for j in range(jobs)]
    return [[s[r] for s in streams if r < len(s)] for r in range(n_rounds)]


def one_per_tree_batches(rs: list[list], trees_per_call: int) -> list[list]:
    return [r[i:i + trees_per_call] for r in rs for i in range(0, len(r), trees_per_call)]


def batches(updates: list, size: int) -> list[list]:
    return [updates[i:i + size] for i in range(0, len(updates), size)]


def chain_rounds(trees: int, depth: int, n_rounds: int) -> list[list[tuple[str, dict]]]:
    """Chains of *depth* nodes (root, then depth - 2 inner nodes, then one of 4
    leaves); in each round every tree gets one progress update of a leaf."""
    inner = "".join(f".n{i}" for i in range(depth - 2))
    out = []
    for r in range(n_rounds):
        leaf = "" if depth == 1 else f".l{r % 4}"
        out.append([(f"_chain.t{t}{inner}{leaf}", {"progress": (r + 1) / (n_rounds + 1), "msg": f"round {r}"})
                    for t in range(trees)])
    return out


# -- measuring -----------------------------------------------------------------

class RoundTrips:
    """Counts what this process sends to Redis and waits for: the engine's
    link calls, redis-py pipelines and single commands."""

    def __init__(self) -> None:
        self.count = 0
        pipe, client = aredis.client.Pipeline, aredis.Redis
        self._saved = (pipe.execute, client.execute_command, RedisLink.execute)
        counter = self

        def counted(original):
            async def call(self, *a, **k):
                counter.count += 1
                return await original(self, *a, **k)
            return call

        pipe.execute, client.execute_command, RedisLink.execute = (counted(f) for f in self._saved)

    def close(self) -> None:
        aredis.client.Pipeline.execute, aredis.Redis.execute_command, RedisLink.execute = self._saved


async def fresh_engine(server: PrivateRedis, **kw) -> tuple[Engine, aredis.Redis]:
    server.client.flushall()
    client = aredis.from_url(server.url)
    engine = Engine(client, prefix="bench", **kw)
    await engine.start()
    return engine, client


async def apply_all(engine: Engine, bs: list[list], in_flight: int = 1, snapshots: str = "none") -> None:
    queue = list(reversed(bs))

    async def worker():
        while queue:
            await engine.apply(queue.pop(), snapshots=snapshots)

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def naive_all(engine: Engine, bs: list[list]) -> None:
    """The naive baseline: per batch, one pipelined script call per update."""
    for batch in bs:
        calls = []
        for update in batch:
            calls.extend(engine.plan([update], snapshots="none").calls)
        for reply in await engine.scripts.run(engine.redis, calls):
            if isinstance(reply, Exception):
                raise reply


async def measure(server: PrivateRedis, label: str, run, bs: list[list], engine_kw: dict | None = None,
                  prepare=None) -> dict:
    """Run *run(engine, bs)* on a fresh database; the row of its figures."""
    engine, client = await fresh_engine(server, **(engine_kw or {}))
    if prepare is not None:
        await prepare(engine)
    n = sum(len(b) for b in bs)
    trips = RoundTrips()
    meter = server.meter().start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        await run(engine, bs)
    finally:
        secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        trips.close()
    m = meter.stop()
    await client.aclose()
    row = {"label": label, "updates": n, "calls": len(bs), "seconds": secs, "updates_per_s": n / secs,
           "redis_cpu_us": m["cpu_s"] / n * 1e6, "script_us": m["script_s"] / n * 1e6,
           "script_calls_per_update": m["script_calls"] / n, "python_cpu_us": cpu / n * 1e6,
           "round_trips_per_call": trips.count / len(bs)}
    print(f"  {label}: {row['updates_per_s']:,.0f} updates/s, Redis CPU {row['redis_cpu_us']:.1f} µs, "
          f"script {row['script_us']:.1f} µs, Python {row['python_cpu_us']:.1f} µs per update, "
          f"{row['round_trips_per_call']:.2f} round trips per call", flush=True)
    return row


class SimulatedClock:
    """The engine's clock, simulated while this is used as a context manager:
    at(k, i) sets it to round k of jobs reporting every *every_ms* ms, plus i
    ms (round 0 being now), however fast or slow the benchmark goes."""

    def __init__(self, every_ms: int) -> None:
        self.every_ms, self.t0 = every_ms, now_ms()
        self.now = self.t0

    def at(self, round_index: int, offset_ms: int = 0) -> None:
        self.now = self.t0 + round_index * self.every_ms + offset_ms

    def install(self) -> "SimulatedClock":
        """From now on the engine reads this clock (until uninstall)."""
        engine_module.now_ms = lambda: self.now
        return self

    def uninstall(self) -> None:
        engine_module.now_ms = now_ms

    def __enter__(self) -> "SimulatedClock":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()


def on_clock(run, per_round: int, every_ms: int = 1000):
    """*run*, one batch at a time, on a SimulatedClock: round k (batches
    k * per_round onwards) is applied k * every_ms ms after the first, 1 ms a
    batch within its round."""
    async def clocked(engine, bs):
        with SimulatedClock(every_ms) as clock:
            for i, batch in enumerate(bs):
                clock.at(i // per_round, i % per_round)
                await run(engine, [batch])
    return clocked


def engine_run(in_flight: int = 1):
    return lambda engine, bs: apply_all(engine, bs, in_flight)


# -- the shapes ------------------------------------------------------------------

async def shape_a(server, args) -> list[dict]:
    rs = rounds(args.jobs, args.rounds)
    rows = []
    for trees in (1000, 2000):
        bs = one_per_tree_batches(rs, trees)
        rows.append(await measure(server, f"(a) naive, {trees:,} trees a batch", naive_all, bs))
        rows.append(await measure(server, f"(a) engine, calls of {trees:,} trees", engine_run(), bs))
    # One process, two calls in flight: the next call is validated and packed
    # while Redis runs the one before (what concurrent REST clients give).
    rows.append(await measure(server, "(a) engine, calls of 1,000 trees, 2 in flight", engine_run(2),
                              one_per_tree_batches(rs, 1000)))
    # The same calls on the clock of jobs that report every second (the rows
    # above run a job's 123 updates in seconds): each node's progress history
    # then takes a sample on most of its updates, as it does for real jobs in
    # their first quarter of an hour.
    bs, per_round = one_per_tree_batches(rs, 1000), -(-args.jobs // 1000)
    rows.append(await measure(server, "(a) naive, 1,000 trees a batch, 1 s clock",
                              on_clock(naive_all, per_round), bs))
    rows.append(await measure(server, "(a) engine, calls of 1,000 trees, 1 s clock",
                              on_clock(apply_all, per_round), bs))
    rows.append(await measure(server, "(a) engine, calls of 1,000 trees, 1 s clock, no history",
                              on_clock(apply_all, per_round), bs, {"history_samples": 0}))
    return rows


#: What a script call costs Redis with no work in it (shape (b)'s floor).
NOOP_LIBRARY = "#!lua name=bench_noop\nredis.register_function('bench_noop', function(keys, args) return 1 end)"


async def shape_b(server, args) -> list[dict]:
    """Single updates, awaited one by one, of three kinds:
    - a leaf's first update, which creates it in its job's tree (the (a)
      stream from round 3 on, after each job's announcements came as
      batches: the first time each leaf key appears);
    - a later update of a leaf that exists (what a running job sends most:
      the same stream, each leaf's second to fifth updates, after the
      leaves were created unmeasured);
    - each job's very first update, which creates its tree (and lists it in
      its namespace);
    and, first, the floor: a function that does nothing, called as often
    (what a round trip costs Redis before any script work)."""
    rs = rounds(args.jobs, args.rounds)
    seen: set[str] = set()
    creating, existing = [], []
    for update in (u for r in rs[3:] for u in r):
        if update[0] in seen:
            existing.append([update])
        else:
            seen.add(update[0])
            creating.append([update])
    creating = creating[:args.singles]
    made = {b[0][0] for b in creating}
    existing = [b for b in existing if b[0][0] in made][:args.singles]

    async def announced(engine):
        for b in one_per_tree_batches(rs[:3], 1000):
            await engine.apply(b, snapshots="none")

    async def created(engine):
        await announced(engine)
        for b in batches([b[0] for b in creating], 1000):
            await engine.apply(b, snapshots="none")

    async def noop_loaded(engine):
        await engine.redis.execute_command("FUNCTION", "LOAD", "REPLACE", NOOP_LIBRARY)

    async def noop_calls(engine, bs):
        for _ in bs:
            await engine.redis.execute_command("FCALL", "bench_noop", 1, "bench:{x}:t", "1")

    first = one_per_tree_batches(rs[:1], 1)[:args.singles]
    floor = []
    if int(server.version.split(".")[0]) >= 7:
        floor = [await measure(server, "(b) floor: an FCALL of a function that returns 1", noop_calls, existing,
                               prepare=noop_loaded)]
    return floor + [
            await measure(server, "(b) naive: one script call, a leaf's later update", naive_all, existing,
                          prepare=created),
            await measure(server, "(b) engine: a leaf's later update (the leaf exists)", engine_run(), existing,
                          prepare=created),
            await measure(server, "(b) engine: a leaf's first update (creates it in its tree)", engine_run(),
                          creating, prepare=announced),
            await measure(server, "(b) engine: a job's first update (creates its tree)", engine_run(), first)]


async def shape_c(server, args) -> list[dict]:
    updates = workload(args.jobs, args.coalesce_updates)
    rows = [await measure(server, "(c) naive, batches of 5,000", naive_all, batches(updates, 5000))]
    for size in (5000, 20000):
        for in_flight in (1, 2):
            rows.append(await measure(server, f"(c) engine, batches of {size:,}, {in_flight} in flight",
                                      engine_run(in_flight), batches(updates, size)))
    return rows


async def shape_d(server, args) -> list[dict]:
    rows = []
    for n in (1_000, 10_000, 100_000):
        parent = f"_bench.w{n}.p"

        async def fill(engine, parent=parent, n=n):
            for chunk in batches([(f"{parent}.c{i}", {"progress": 0}) for i in range(n)], 5000):
                await engine.apply(chunk, snapshots="none")

        ups = [(f"{parent}.c{(i * 7919) % n}", {"progress": (i % 100) / 100}) for i in range(args.width_updates)]
        bs = batches(ups, 1000)
        rows.append(await measure(server, f"(d) naive, {n:,} children", naive_all, bs, prepare=fill))
        rows.append(await measure(server, f"(d) engine, {n:,} children", engine_run(), bs, prepare=fill))
    # Every update a status change: the wide parent's status index moves too.
    parent, n = "_bench.w100000.p", 100_000
    ups = [(f"{parent}.c{(i * 7919) % n}", {"progress": (i % 100) / 100, "status": ("running", "failed")[i % 2]})
           for i in range(args.width_updates)]

    async def fill(engine):
        for chunk in batches([(f"{parent}.c{i}", {"progress": 0}) for i in range(n)], 5000):
            await engine.apply(chunk, snapshots="none")

    bs = batches(ups, 1000)
    rows.append(await measure(server, "(d) naive, 100,000 children, each update a status change", naive_all, bs,
                              prepare=fill))
    rows.append(await measure(server, "(d) engine, 100,000 children, each update a status change", engine_run(),
                              bs, prepare=fill))
    return rows


async def breakdown(server, args) -> dict:
    """Fit Redis script time per update = c_call / T + c_update + c_node * D."""
    points = []
    for depth, trees in ((5, 1), (5, 10), (5, 100), (5, 1000), (1, 1000), (2, 1000), (3, 1000), (4, 1000)):
        n_rounds = max(2, min(40, 20_000 // trees))
        bs = one_per_tree_batches(chain_rounds(trees, depth, n_rounds), trees)
        if trees < 100:
            bs = bs[:2000]
        row = await measure(server, f"chain depth {depth}, {trees:,} trees a call", engine_run(), bs)
        row.update(depth=depth, trees=trees)
        points.append(row)
    fit = {}
    for metric in ("script_us", "redis_cpu_us", "python_cpu_us"):
        fit[metric] = _lstsq([(1 / p["trees"], 1.0, p["depth"]) for p in points], [p[metric] for p in points])
    return {"points": points, "fit": fit}


def _lstsq(xs: list[tuple], ys: list[float]) -> list[float]:
    """Least squares for y = a*x0 + b*x1 + c*x2 (normal equations, 3x3)."""
    k = len(xs[0])
    m = [[sum(x[i] * x[j] for x in xs) for j in range(k)] for i in range(k)]
    v = [sum(x[i] * y for x, y in zip(xs, ys)) for i in range(k)]
    for c in range(k):  # Gauss-Jordan
        piv = max(range(c, k), key=lambda r: abs(m[r][c]))
        m[c], m[piv], v[c], v[piv] = m[piv], m[c], v[piv], v[c]
        for r in range(k):
            if r != c and m[c][c]:
                f = m[r][c] / m[c][c]
                m[r] = [a - f * b for a, b in zip(m[r], m[c])]
                v[r] -= f * v[c]
    return [v[i] / m[i][i] for i in range(k)]


async def memory(server, args) -> dict:
    """Bytes of Redis memory per stored node, whole job trees (full streams):
    without progress history, with the few samples a fast run leaves, and
    with every node's history full (each leaf updated once more on a clock
    moved on by history_samples steps, so every node holds all its samples)."""
    jobs = args.memory_jobs
    row = {"jobs": jobs, "nodes": jobs * (1 + 3 + 6 + 12 + 24)}
    for label, options in (("no_history", {"history_samples": 0}), ("history", {})):
        engine, client = await fresh_engine(server, **options)
        before = server.used_memory()
        rng = random.Random(7)
        pending: list = []
        chunks: list = []  # (when a chunk of whole jobs was stored, its leaves)
        for j in range(jobs):
            pending.extend(job_stream(j, rng))
            if len(pending) >= 2000 or j == jobs - 1:
                started = now_ms()
                for b in batches(pending, 2000):
                    await engine.apply(b, snapshots="none")
                chunks.append((started, now_ms() - started, sorted({k for k, _ in pending if k.count(".") == 5})))
                pending = []
        tree = await engine.read("_bench.job0", depth=5)
        assert tree["progress"] == 1, tree
        row[f"bytes_{label}"] = server.used_memory() - before
        if options.get("history_samples", 64):
            # Each chunk's leaves once more, (samples - 1/2) steps after the chunk was
            # stored: every node of it then lies between samples - 1 and samples steps
            # old (the chunk took less than half a step), so it holds them all.
            step, n = engine.history_step_ms, engine.history_samples
            assert max(took for _, took, _ in chunks) < step / 2, "chunks too slow for full histories"
            with SimulatedClock(0) as clock:
                for started, _, leaves in chunks:
                    clock.now = started + int((n - 0.5) * step)
                    await engine.apply([(k, {"msg": "again"}) for k in leaves], snapshots="none")
            for key in ("_bench.job0", f"_bench.job{jobs - 1}"):
                h = (await engine.read(key, history=True))["_history"]
                assert len(h["samples"]) == n, (key, h)
            row["bytes_full_history"] = server.used_memory() - before
        await client.aclose()
    nodes = row["nodes"]
    for k in ("no_history", "history", "full_history"):
        row[f"per_node_{k}"] = row[f"bytes_{k}"] / nodes
    row["bytes_per_node"] = row["per_node_history"]
    print(f"  memory per node over {nodes:,} nodes: {row['per_node_no_history']:.0f} B without history, "
          f"{row['per_node_history']:.0f} B with this run's few samples, {row['per_node_full_history']:.0f} B "
          f"with every history full", flush=True)
    return row


async def reads(server, args) -> list[dict]:
    """First pages of big nodes; children by status (the index) beside an
    ordinary page, and beside finding them without it (reading every child)."""
    engine, client = await fresh_engine(server)
    before = server.used_memory()
    for chunk in batches([(f"_bench.hk.p.c{i}", {"progress": 0.5}) for i in range(100_000)], 5000):
        await engine.apply(chunk, snapshots="none")
    wide_bytes = (server.used_memory() - before) / 100_000
    print(f"  memory: {wide_bytes:.0f} B per child of a 100,000-child node", flush=True)
    failed = [f"_bench.hk.p.c{i * 1999 + 7}" for i in range(50)]  # 50 failures, spread over the node
    await engine.apply([(k, {"status": "failed", "msg": "exit code 1"}) for k in failed], snapshots="none")
    for chunk in batches([(f"_bench.tenk.p.c{i}", {"progress": 0.5, "msg": f"child {i}"})
                          for i in range(10_000)], 5000):
        await engine.apply(chunk, snapshots="none")
    out = []

    async def scan_failed(engine, key, limit):
        """Without the index: page through every child (depth 2), keep the failed."""
        found, cursor = [], None
        while len(found) < limit:
            node = await engine.read(key, depth=2, limit=10_000, cursor=cursor)
            found += [t["key"] for t in node.get("tasks", []) if t.get("status") == "failed"]
            cursor = node.get("_children_next")
            if not cursor:
                break
        return {"_children": found[:limit], "_children_total": 100_000}

    hk = "_bench.hk.p"
    for label, read, repeats in (
            ("first page (1,000) of a 100,000-child node, depth 1", lambda: engine.read(hk), args.reads),
            ("10,000-child node, depth 2 (limit 10000)",
             lambda: engine.read("_bench.tenk.p", depth=2, limit=10_000), args.reads),
            ("100,000-child node, depth 2, first page of 50 children",
             lambda: engine.read(hk, depth=2, limit=50), args.reads),
            ("the same node, depth 2, first page of its 50 failed children (status=failed)",
             lambda: engine.read(hk, depth=2, limit=50, status="failed"), args.reads),
            ("100,000-child node, depth 2, first page of 1,000 children",
             lambda: engine.read(hk, depth=2), args.reads),
            ("the same node, depth 2, status=failed with the default limit (1,000)",
             lambda: engine.read(hk, depth=2, status="failed"), args.reads),
            ("no index: its 50 failed children by reading all 100,000 (depth 2, pages of 10,000)",
             lambda: scan_failed(engine, hk, 50), max(3, args.reads // 5))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            node = await read()
            times.append(time.perf_counter() - t0)
        assert node["_children_total"] in (10_000, 100_000) or node.get("_children_status") == "failed"
        if "failed" in label:
            assert sorted(node["_children"]) == sorted(failed), label
        out.append({"read": label, "median_ms": median(times) * 1000, "min_ms": min(times) * 1000,
                    "max_ms": max(times) * 1000, "repeats": len(times)})
        print(f"  {label}: median {median(times) * 1000:.1f} ms", flush=True)
    await client.aclose()
    return {"reads": out, "wide_bytes_per_child": wide_bytes}


# -- report ------------------------------------------------------------------------

def table(rows: list[dict]) -> list[str]:
    lines = ["| run | updates | updates/s | Redis CPU µs/update | script µs/update | Python CPU µs/update "
             "| round trips/call |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['updates']:,} | {r['updates_per_s']:,.0f} | {r['redis_cpu_us']:.1f} "
                     f"| {r['script_us']:.1f} | {r['python_cpu_us']:.1f} | {r['round_trips_per_call']:.2f} |")
    return lines


def ratios(rows: list[dict]) -> list[str]:
    """Each engine row against the naive row before it."""
    out, naive = [], None
    for r in rows:
        if "naive" in r["label"]:
            naive = r
        elif naive is not None and "first update" not in r["label"]:  # creations have no naive twin
            out.append(f"- {r['label']}: {r['updates_per_s'] / naive['updates_per_s']:.1f}x the naive rate, "
                       f"{naive['script_us'] / r['script_us']:.1f}x less script time and "
                       f"{naive['redis_cpu_us'] / r['redis_cpu_us']:.1f}x less Redis CPU per update")
    return out


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; Redis {result['redis']} (private, no persistence).",
             f"Command: `{result['command']}`", ""]
    for shape in ("a", "b", "c", "d"):
        if shape in result:
            lines += table(result[shape]) + [""] + ratios(result[shape]) + [""]
    if "breakdown" in result:
        lines += table(result["breakdown"]["points"]) + [""]
        lines += ["| fit: µs per update = per call / trees a call + per update + per node x depth "
                  "| per call | per update | per node |", "|---|---:|---:|---:|"]
        for metric, (a, b, c) in result["breakdown"]["fit"].items():
            lines.append(f"| {metric} | {a:.1f} | {b:.2f} | {c:.2f} |")
        lines.append("")
    if "memory" in result:
        m = result["memory"]
        lines += [f"Memory per node ({m['nodes']:,} nodes of {m['jobs']:,} whole jobs, used_memory delta): "
                  f"{m['per_node_no_history']:.0f} B without progress history, {m['per_node_history']:.0f} B "
                  f"with the few samples of a fast run, {m['per_node_full_history']:.0f} B with every node's "
                  f"history full.", ""]
    if "reads" in result:
        lines += [f"Memory: {result['reads']['wide_bytes_per_child']:.0f} B per child of a 100,000-child node "
                  f"(records, children and status index).", ""]
        lines += ["| read | median ms | min ms | max ms | repeats |", "|---|---:|---:|---:|---:|"]
        for r in result["reads"]["reads"]:
            lines.append(f"| {r['read']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} "
                         f"| {r['repeats']} |")
    return "\n".join(lines)


SECTIONS = {"a": shape_a, "b": shape_b, "c": shape_c, "d": shape_d, "breakdown": breakdown, "memory": memory,
            "reads": reads}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=123,
                    help="rounds of shape (a): one update of every job each (123: their whole streams)")
    ap.add_argument("--singles", type=int, default=5000, help="updates of shape (b)")
    ap.add_argument("--coalesce-updates", type=int, default=100_000)
    ap.add_argument("--width-updates", type=int, default=50_000)
    ap.add_argument("--memory-jobs", type=int, default=5000, help="whole jobs (46 nodes each) for the memory figure")
    ap.add_argument("--reads", type=int, default=15)
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    ap.add_argument("--out", default="bench/out/engine.json")
    args = ap.parse_args()
    server = PrivateRedis()
    result = {"machine": machine(), "redis": server.version,
              "command": "python -m bench.engine " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")}
    try:
        for name in args.only.split(","):
            print(f"{name}:", flush=True)
            result[name] = await SECTIONS[name](server, args)
    finally:
        server.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print()
    print(markdown(result))


if __name__ == "__main__":
    uvloop.run(main())
