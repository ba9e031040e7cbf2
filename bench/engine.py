"""Engine benchmark: batched apply against a naive baseline, wide nodes, big reads.

    python -m bench.engine [--jobs 2000] [--updates 200000] [--batch 5000]

Runs against a private redis-server it starts (so the Redis CPU it reports is
the benchmark's alone) and prints Markdown tables for bench/README.md:

1. Throughput.  The same pre-generated updates from J simulated jobs (trees of
   depth 5: root / step / group / part / leaf; see workload()) go through
   - engine:   Engine.apply per batch (validation, coalescing, one pipelined
               round trip of apply_updates.lua calls, snapshot decoding),
               with 1 and with 2 batches in flight;
   - naive:    the same batches, one pipelined EVALSHA of apply_updates.lua
               per update (no coalescing, no shared ancestors);
   reporting updates/s end to end from Python and Redis CPU µs per update
   (INFO cpu delta of the Redis process: commandstats counts commands run
   inside scripts twice).
2. Width.  The same updates (batches of 1,000, each touching 1,000 distinct
   children) under parents of 1,000, 10,000 and 100,000 children: the cost
   per update must not grow with width.
3. Reads.  The first page of the 100,000-child node (depth 1), and a
   10,000-child node at depth 2, median of repeated reads.
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

from sca_progress.engine import Engine
from sca_progress.engine.scripts import pack

from .common import PrivateRedis, machine, median

STEPS = (("stage_input", 10), ("process", 100), ("output", 2))  # the spec's weights


def job_leaves(job: int) -> list[str]:
    """Leaf keys of one simulated job: 3 steps x 2 groups x 2 parts x 2 leaves."""
    return [f"_bench.job{job}.{step}.g{g}.p{p}.f{f}"
            for step, _ in STEPS for g in range(2) for p in range(2) for f in range(2)]


def workload(jobs: int, updates: int, seed: int = 1) -> list[tuple[str, dict]]:
    """Updates of many jobs interleaved as they would arrive.

    Each job announces its three weighted steps, then each of its 24 leaves
    reports 0, 0.25, 0.5, 0.75 and 1 (running, then finished) with a message;
    the jobs' streams are shuffled together, each leaf's own reports staying
    in order.  Stops at *updates* (2,000 jobs make 246,000 updates).
    """
    rng = random.Random(seed)
    streams = []
    for j in range(jobs):
        stream = [(f"_bench.job{j}.{step}", {"weight": w, "msg": f"{step} of job {j}"}) for step, w in STEPS]
        leaves = job_leaves(j)
        steps = {leaf: 0 for leaf in leaves}
        while leaves:
            leaf = rng.choice(leaves)
            p = steps[leaf] / 4
            steps[leaf] += 1
            if steps[leaf] == 5:
                leaves.remove(leaf)
            stream.append((leaf, {"progress": p, "status": "finished" if p == 1 else "running",
                                  "msg": f"at {p:.0%}"}))
        streams.append(stream[::-1])
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


def batches(updates: list, size: int) -> list[list]:
    return [updates[i:i + size] for i in range(0, len(updates), size)]


async def run_engine(engine: Engine, bs: list[list], in_flight: int, snapshots: str = "none") -> float:
    queue = list(reversed(bs))

    async def worker():
        while queue:
            await engine.apply(queue.pop(), snapshots=snapshots)  # what an ingester with no watchers asks

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - t0


async def run_naive(engine: Engine, bs: list[list]) -> float:
    """One EVALSHA per update: each call carries one update of one tree."""
    from sca_progress.engine.keys import tree_root
    from sca_progress.engine.updates import encode_update

    t0 = time.perf_counter()
    for batch in bs:
        calls = []
        now = int(time.time() * 1000)
        for key, fields in batch:
            root, enc = encode_update(key, fields, engine.limits)
            calls.append(("apply_updates", [engine.keys.records(root)],
                          (now, engine.eta_window_ms, engine.limits.max_fields_per_node,
                           pack([[tree_root(key), [[1, *enc[1:]]], 0]]))))
        for reply in await engine.scripts.run(engine.redis, calls):
            if isinstance(reply, Exception):
                raise reply
    return time.perf_counter() - t0


async def throughput(server: PrivateRedis, args) -> list[dict]:
    updates = workload(args.jobs, args.updates)
    rows = []
    modes = [("naive: one EVALSHA per update, pipelined", "naive", args.batches[0], 1)]
    for size in args.batches:
        modes += [(f"engine: Engine.apply, batches of {size:,}, 1 in flight", "engine", size, 1),
                  (f"engine: Engine.apply, batches of {size:,}, 2 in flight", "engine", size, 2)]
    for label, mode, size, in_flight in modes:
        bs = batches(updates, size)
        server.client.flushall()
        client = aredis.from_url(server.url)
        engine = Engine(client, prefix="bench")
        await engine.start()
        cpu0 = server.cpu_seconds()
        if mode == "naive":
            secs = await run_naive(engine, bs)
        else:
            secs = await run_engine(engine, bs, in_flight)
        cpu = server.cpu_seconds() - cpu0
        tree = await engine.read("_bench.job0", depth=1)
        await client.aclose()
        assert tree.get("progress") == 1, tree  # every job of the workload ends finished
        rows.append({"mode": label, "updates": len(updates), "seconds": secs,
                     "updates_per_s": len(updates) / secs, "redis_cpu_us_per_update": cpu / len(updates) * 1e6})
        print(f"  {label}: {len(updates) / secs:,.0f} updates/s, "
              f"{cpu / len(updates) * 1e6:.1f} µs Redis CPU/update", flush=True)
    return rows


async def width(server: PrivateRedis, args) -> list[dict]:
    server.client.flushall()
    client = aredis.from_url(server.url)
    engine = Engine(client, prefix="bench")
    await engine.start()
    rows = []
    # The same work under parents of growing width: batches of 1,000 updates,
    # each batch touching 1,000 distinct children (round robin), so every
    # update costs one leaf, with the parent and root shared per batch.
    for n in (1_000, 10_000, 100_000):
        parent = f"_bench.w{n}.p"
        for chunk in batches([(f"{parent}.c{i}", {"progress": 0}) for i in range(n)], 5000):
            await engine.apply(chunk, snapshots="none")
        ups = [(f"{parent}.c{(i * 7919) % n}", {"progress": (i % 100) / 100}) for i in range(args.width_updates)]
        bs = batches(ups, 1000)
        cpu0 = server.cpu_seconds()
        secs = await run_engine(engine, bs, 1)
        cpu = server.cpu_seconds() - cpu0
        label = f"{n:,} children"
        rows.append({"parent": label, "updates": len(ups), "updates_per_s": len(ups) / secs,
                     "redis_cpu_us_per_update": cpu / len(ups) * 1e6})
        print(f"  {label}: {len(ups) / secs:,.0f} updates/s, {cpu / len(ups) * 1e6:.1f} µs/update", flush=True)

    # A 10,000-child node for the depth-2 read.
    for chunk in batches([(f"_bench.tenk.p.c{i}", {"progress": 0.5, "msg": f"child {i}"})
                          for i in range(10_000)], 5000):
        await engine.apply(chunk, snapshots="none")
    reads = []
    for label, key, depth, limit in (("first page (1,000) of a 100,000-child node, depth 1", "_bench.w100000.p", 1, None),
                                     ("10,000-child node, depth 2 (limit 10000)", "_bench.tenk.p", 2, 10_000)):
        times = []
        for _ in range(args.reads):
            t0 = time.perf_counter()
            node = await engine.read(key, depth=depth, limit=limit)
            times.append(time.perf_counter() - t0)
        assert node["_children_total"] in (10_000, 100_000)
        reads.append({"read": label, "median_ms": median(times) * 1000, "min_ms": min(times) * 1000,
                      "max_ms": max(times) * 1000, "repeats": len(times)})
        print(f"  {label}: median {median(times) * 1000:.1f} ms", flush=True)
    await client.aclose()
    return rows, reads


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; Redis {result['redis']} (private, no persistence).",
             f"Command: `{result['command']}`", "",
             "| mode | updates | updates/s | Redis CPU µs/update |", "|---|---:|---:|---:|"]
    for r in result["throughput"]:
        lines.append(f"| {r['mode']} | {r['updates']:,} | {r['updates_per_s']:,.0f} | {r['redis_cpu_us_per_update']:.1f} |")
    naive = result["throughput"][0]
    lines += [""] + [f"- {r['mode']}: {r['updates_per_s'] / naive['updates_per_s']:.1f}x the naive rate, "
                     f"{naive['redis_cpu_us_per_update'] / r['redis_cpu_us_per_update']:.1f}x less Redis CPU"
                     for r in result["throughput"][1:]]
    lines += ["",
              "| parent | updates | updates/s | Redis CPU µs/update |", "|---|---:|---:|---:|"]
    for r in result["width"]:
        lines.append(f"| {r['parent']} | {r['updates']:,} | {r['updates_per_s']:,.0f} | {r['redis_cpu_us_per_update']:.1f} |")
    lines += ["", "| read | median ms | min ms | max ms | repeats |", "|---|---:|---:|---:|---:|"]
    for r in result["reads"]:
        lines.append(f"| {r['read']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} | {r['repeats']} |")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=246_000)
    ap.add_argument("--batches", type=lambda v: [int(x) for x in v.split(",")], default=[5000, 20000],
                    help="comma-separated batch sizes (default 5000,20000)")
    ap.add_argument("--width-updates", type=int, default=50_000)
    ap.add_argument("--reads", type=int, default=15)
    ap.add_argument("--out", default="bench/out/engine.json")
    args = ap.parse_args()
    server = PrivateRedis()
    try:
        print(f"throughput ({args.updates:,} updates, {args.jobs:,} jobs):")
        tp = await throughput(server, args)
        print("width and reads:")
        wd, reads = await width(server, args)
        result = {"machine": machine(), "redis": server.version,
                  "command": "python -m bench.engine " + " ".join(
                      f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                      for k, v in vars(args).items() if k != "out"),
                  "throughput": tp, "width": wd, "reads": reads}
    finally:
        server.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print()
    print(markdown(result))


if __name__ == "__main__":
    uvloop.run(main())
