"""Where apply_updates.lua spends its time: Redis time per update, by phase.

    python -m bench.phases [--shape a|c] [--jobs 2000] [--updates 246000] [--batch 20000] [--repeats 2]

The engine benchmark's workload goes through Engine.apply (1 batch in
flight) on a private redis-server, alternately with the script as shipped
(the baseline) and with an instrumented copy.  The copy reads the clock
(redis.call('TIME')) at each phase boundary, adds each phase's time up per
call, and leaves the sums in a hash that this program reads.  It prints
microseconds per update for each phase and the instrumentation's overhead
(the copy's Redis CPU per update minus the baseline's, from INFO cpu).

The phases, in the script's order:
    validate  reading and checking every update of the packed batch
    apply     each tree's records read (HMGET) and its updates applied and
              rolled up their paths (apply_single, or apply_update on a copy
              of the tree), records unpacked and packed again
    touch     the keys of rare writes touched first (Redis Cluster), the
              watch markers' MGET
    write     the HSETs of the records and cold parts, ZADDs of wide
              parents, RPUSH of leftovers, publishing
    finish    the outbox, packing the reply
"""
from __future__ import annotations

import argparse
import hashlib

import redis.asyncio as aredis
import uvloop

from sca_progress.engine import Engine

from .common import PrivateRedis, machine, median
import time

from .engine import apply_all, batches, one_per_tree_batches, rounds, workload

TIMING_KEY = "bench:phases"

CLOCK = """
local _phase_last, _phase_sum = nil, {}
local function phase(name)
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if _phase_last then _phase_sum[name] = (_phase_sum[name] or 0) + (us - _phase_last) end
  _phase_last = us
end
phase('start')
"""

#: (text in apply_updates.lua, the same text with a clock reading before or after it)
MARKERS = [
    ("local now = tonumber(ARGV[1])", CLOCK + "local now = tonumber(ARGV[1])"),
    ("local statuses, ended = {}, {}\n", "phase('validate')\nlocal statuses, ended = {}, {}\n"),
    ("-- On a Redis Cluster, while", "phase('apply')\n-- On a Redis Cluster, while"),
    ("for i = 1, #KEYS do\n  local out, written, tree = {}, nil, trees[i]", "phase('touch')\nfor i = 1, #KEYS do\n  local out, written, tree = {}, nil, trees[i]"),
    ("-- Completion events: each node", "phase('write')\n-- Completion events: each node"),
    ("return cmsgpack.pack({ statuses, changed, events, created })",
     "local reply = cmsgpack.pack({ statuses, changed, events, created })\nphase('finish')\n"
     f"for k, v in pairs(_phase_sum) do redis.call('HINCRBY', '{TIMING_KEY}', k, v) end\nreturn reply"),
]
PHASES = ["validate", "apply", "touch", "write", "finish"]


def instrumented(source: str) -> str:
    """apply_updates.lua with a clock reading at each phase boundary.  Fails
    loudly when the script no longer has one of the marker lines."""
    for marker, replacement in MARKERS:
        if source.count(marker) != 1:
            raise SystemExit(f"apply_updates.lua changed: {marker.strip()!r} not found once; update bench/phases.py")
        source = source.replace(marker, replacement)
    return source


async def one_run(bs: list[list], instrument: bool) -> dict:
    server = PrivateRedis()
    try:
        redis = aredis.Redis.from_url(server.url)
        engine = Engine(redis, prefix="phases")
        engine.scripts.use_functions = False  # the instrumented copy is an EVAL script
        if instrument:
            src = instrumented(engine.scripts.source["apply_updates"])
            engine.scripts.source["apply_updates"] = src
            engine.scripts.sha["apply_updates"] = hashlib.sha1(src.encode()).hexdigest()
        await engine.start()
        cpu0 = server.cpu_seconds()
        t0 = time.perf_counter()
        await apply_all(engine, bs)
        wall = time.perf_counter() - t0
        cpu = server.cpu_seconds() - cpu0
        sums = {k.decode(): int(v) for k, v in (await redis.hgetall(TIMING_KEY)).items()}
        await redis.aclose()
        n = sum(len(b) for b in bs)
        return {"rate": n / wall, "cpu_us": cpu / n * 1e6, "phases": {k: sums.get(k, 0) / n for k in PHASES}}
    finally:
        server.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=246_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--shape", choices=("a", "c"), default="a",
                    help="a: one update per tree per call (rounds of every job, --batch trees a call); "
                         "c: the jobs' streams shuffled together (coalescing)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.shape == "a":
        bs = one_per_tree_batches(rounds(args.jobs, max(1, args.updates // args.jobs)), args.batch)
    else:
        bs = batches(workload(args.jobs, args.updates), args.batch)
    base, timed = [], []
    for _ in range(args.repeats):
        base.append(await one_run(bs, instrument=False))
        timed.append(await one_run(bs, instrument=True))
    base_cpu = median([r["cpu_us"] for r in base])
    timed_cpu = median([r["cpu_us"] for r in timed])
    print(f"Machine: {machine()}.")
    print(f"Command: `python -m bench.phases --shape {args.shape} --jobs {args.jobs} --updates {args.updates} "
          f"--batch {args.batch} --repeats {args.repeats}`\n")
    print("| phase | µs per update (median) |")
    print("|---|---:|")
    for p in PHASES:
        print(f"| {p} | {median([r['phases'][p] for r in timed]):.1f} |")
    total = median([sum(r["phases"].values()) for r in timed])
    print(f"| **all phases** | **{total:.1f}** |\n")
    print(f"Redis CPU per update (INFO cpu, medians of {args.repeats}): as shipped {base_cpu:.1f} µs, "
          f"instrumented {timed_cpu:.1f} µs; the clock readings cost {timed_cpu - base_cpu:.1f} µs per update.")


if __name__ == "__main__":
    uvloop.run(main())
