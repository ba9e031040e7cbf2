"""The engine on a Redis Cluster beside one Redis, in the same run.

    python -m bench.cluster [--jobs 2000] [--rounds 40] [--trees 1000] [--repeats 3]

Shape (a) of bench/engine.py (each call carries one update of each of
--trees trees) through ``Engine.apply``: on a private single redis-server,
then on a private cluster of three masters (tests/cluster_support.py), the
two alternating --repeats times.  On a cluster each call is split by tree
and the pieces go to their masters concurrently, one write each
(engine/cluster.py).  Figures: updates/s, and Redis CPU per update summed
over every Redis process (INFO cpu), so the cluster's routing and its
smaller per-node batches show.  Every process shares this machine: with two
cores, three masters cannot run faster than one Redis here, so what this
measures is the cost of going through the cluster, not its capacity.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import redis
import redis.asyncio as aredis
import uvloop

from sca_progress.engine import Engine
from tests.cluster_support import LocalCluster

from .common import PrivateRedis, machine
from .engine import one_per_tree_batches, rounds


def cpu(ports: list[int]) -> list[float]:
    """CPU seconds of each Redis process so far."""
    out = []
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        out.append(info["used_cpu_sys"] + info["used_cpu_user"])
    return out


async def run(client, ports: list[int], batches: list[list], prefix: str) -> tuple[float, float, float]:
    """(updates/s, Redis CPU µs per update over all processes, busiest process / mean)."""
    engine = Engine(client, prefix=prefix)
    await engine.start()
    n = sum(len(b) for b in batches)
    c0, t0 = cpu(ports), time.perf_counter()
    for batch in batches:
        await engine.apply(batch, snapshots="none")
    secs = time.perf_counter() - t0
    used = [b - a for a, b in zip(c0, cpu(ports))]
    await engine.close()
    await client.aclose()
    return n / secs, sum(used) / n * 1e6, max(used) / (sum(used) / len(used))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--trees", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    batches = one_per_tree_batches(rounds(args.jobs, args.rounds), args.trees)
    single, cluster = PrivateRedis(), LocalCluster().start()
    rows: dict[str, list[tuple[float, float, float]]] = {"one Redis": [], "cluster of 3 masters": []}
    try:
        for r in range(args.repeats):
            single.client.flushall()
            for port in cluster.ports:
                redis.Redis(port=port).flushall()
            rows["one Redis"].append(uvloop.run(run(aredis.from_url(single.url), [single.port], batches, f"b{r}")))
            rows["cluster of 3 masters"].append(uvloop.run(run(
                aredis.RedisCluster.from_url(cluster.url), cluster.ports, batches, f"b{r}")))
            print(f"  round {r + 1}: " + "; ".join(f"{k} {v[-1][0]:,.0f} updates/s, {v[-1][1]:.1f} µs"
                                                   for k, v in rows.items()), flush=True)
    finally:
        single.close()
        cluster.stop()
    n = sum(len(b) for b in batches)
    print(f"\nMachine: {machine()}; private redis-server processes.")
    print(f"Command: `python -m bench.cluster --jobs {args.jobs} --rounds {args.rounds} --trees {args.trees} "
          f"--repeats {args.repeats}` ({n:,} updates, calls of {args.trees:,} trees)\n")
    print("| Redis | updates/s (median) | Redis CPU µs/update, all processes (median) | busiest process / mean "
          "| runs (updates/s) |")
    print("|---|---:|---:|---:|---|")
    for label, got in rows.items():
        print(f"| {label} | {statistics.median(g[0] for g in got):,.0f} | "
              f"{statistics.median(g[1] for g in got):.1f} | {statistics.median(g[2] for g in got):.2f} | "
              f"{', '.join(f'{g[0]:,.0f}' for g in got)} |")


if __name__ == "__main__":
    main()
