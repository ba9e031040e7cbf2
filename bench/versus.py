"""This engine against another version of it, on one Redis, their calls alternating.

    python -m bench.versus --baseline DIR [--jobs 2000] [--step 4] [--singles 20000]
                           [--options JSON] [--baseline-options JSON]

Timings on the shared machines this project runs on drift by 30 % and more
between two runs a minute apart, so an A/B of two separate bench.engine runs
says little.  Here both versions drive the same private redis-server, each
from its own process and under its own key prefix (their function libraries
are named by a hash of their source, so both are loaded side by side), and
they take turns: a few calls of one, then the same calls of the other, then
the other way round.  Both meet the same machine, the same Redis and the same
working set; each turn's Redis CPU (INFO cpu) is divided by its updates, and
the medians and the median of the per-turn ratios are printed.

DIR is a checkout of the other version (a git worktree of an earlier commit),
or this one with other --baseline-options (Engine keyword arguments as a JSON
object: '{"history_samples": 0}' weighs the progress history).
Shapes (bench/engine.py's workload of 2,000 depth-5 jobs):
    (a) one update per tree per call, calls of 1,000 and 2,000 trees
    (b) single-update calls (the first --singles updates of the rounds)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from .common import PrivateRedis, machine

WORKER = r'''
import asyncio, json, sys
import redis as sredis
import redis.asyncio as aredis
from sca_progress.engine import Engine
from bench.engine import one_per_tree_batches, rounds

async def main(url, prefix, jobs, trees, singles, options):
    r, s = aredis.from_url(url), sredis.Redis.from_url(url)
    engine = Engine(r, prefix=prefix, **options)
    await engine.start()
    bs = one_per_tree_batches(rounds(jobs, 123), trees)
    if singles:
        bs = [[u] for b in bs for u in b][:singles]
    print(json.dumps({"calls": len(bs)}), flush=True)

    def cpu():
        info = s.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    for line in sys.stdin:
        first, last = map(int, line.split())
        c0, n = cpu(), 0
        for b in bs[first:last]:
            await engine.apply(b, snapshots="none")
            n += len(b)
        print(json.dumps({"us": (cpu() - c0) / n * 1e6}), flush=True)
    if hasattr(engine, "close"):
        await engine.close()
    await r.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                 json.loads(sys.argv[6])))
'''


def package_dir(repo: str) -> str:
    """A directory holding the package sca_progress of checkout *repo* (its
    folders linked), to put first on a worker's PYTHONPATH."""
    pkg = tempfile.mkdtemp(prefix="bench-versus-")
    os.makedirs(f"{pkg}/sca_progress")
    for part in ("client", "engine", "lua", "server"):
        if os.path.isdir(os.path.join(repo, part)):
            os.symlink(os.path.join(repo, part), f"{pkg}/sca_progress/{part}")
    return pkg


def duel(server: PrivateRedis, sides: dict[str, tuple[str, str]], jobs: int, trees: int, singles: int,
         step: int) -> dict:
    """Per-turn Redis CPU µs per update of each side (name: (checkout, Engine
    options as JSON)), turns alternating."""
    procs = {}
    for name, (repo, options) in sides.items():
        env = {**os.environ, "PYTHONPATH": f"{package_dir(repo)}:{repo}"}
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", WORKER, server.url, f"versus-{name}", str(jobs), str(trees), str(singles),
             options],
            cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    calls = [json.loads(p.stdout.readline())["calls"] for p in procs.values()][0]
    turns: dict[str, list[float]] = {name: [] for name in procs}
    names = list(procs)
    for k, first in enumerate(range(0, calls, step)):
        for name in (names if k % 2 == 0 else names[::-1]):
            p = procs[name]
            p.stdin.write(f"{first} {min(first + step, calls)}\n")
            p.stdin.flush()
            turns[name].append(json.loads(p.stdout.readline())["us"])
    for p in procs.values():
        p.stdin.close()
        p.wait()
    server.client.flushall()
    return turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="a checkout of the other version")
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--step", type=int, default=4, help="calls per turn of shape (a)")
    ap.add_argument("--singles", type=int, default=20000, help="single-update calls of shape (b)")
    ap.add_argument("--options", default="{}", help="Engine keyword arguments of this side (JSON)")
    ap.add_argument("--baseline-options", default="{}", help="Engine keyword arguments of the baseline (JSON)")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"this": (here, args.options), "baseline": (os.path.abspath(args.baseline), args.baseline_options)}
    server = PrivateRedis()
    rows = []
    try:
        for label, trees, singles, step in (("(a) calls of 1,000 trees", 1000, 0, args.step),
                                            ("(a) calls of 2,000 trees", 2000, 0, max(1, args.step // 2)),
                                            ("(b) single-update calls", 1, args.singles, 500)):
            turns = duel(server, sides, args.jobs, trees, singles, step)
            ratios = [b / t for b, t in zip(turns["baseline"], turns["this"])]
            row = (label, statistics.median(turns["baseline"]), statistics.median(turns["this"]),
                   statistics.median(ratios), len(ratios))
            print(f"  {label}: baseline {row[1]:.1f} µs, this {row[2]:.1f} µs of Redis CPU per update, "
                  f"ratio {row[3]:.2f} over {row[4]} turns", flush=True)
            rows.append(row)
    finally:
        server.close()
    print(f"\nMachine: {machine()}; Redis {server.version} (private, no persistence).")
    print(f"Command: `python -m bench.versus --baseline <checkout> --jobs {args.jobs} --step {args.step} "
          f"--singles {args.singles} --options '{args.options}' --baseline-options '{args.baseline_options}'`\n")
    print("| shape | baseline: Redis CPU µs/update (median turn) | this | baseline / this (median of turns) | turns |")
    print("|---|---:|---:|---:|---:|")
    for label, base, this, ratio, n in rows:
        print(f"| {label} | {base:.1f} | {this:.1f} | {ratio:.2f}x | {n} |")


if __name__ == "__main__":
    main()
