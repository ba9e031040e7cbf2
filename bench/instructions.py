"""Redis instructions per update, counted by callgrind: exact where timings scatter.

    python -m bench.instructions [--jobs 500] [--rounds 123] [--every MS] [--history N]
                                 [--baseline DIR] [--keep DIR] [--split]

On the shared machines this project runs on, the same timing run twice can
differ by 2x; valgrind's callgrind counts the instructions a redis-server
executes instead, which repeat to within a fraction of a percent whatever
else the machine does.  This starts redis-server (the PATH's) under
callgrind, drives it through ``Engine`` and prints instructions per update:

    (a) creation   the first half of shape (a)'s rounds (bench/engine.py):
                   one update per tree per call, most creating nodes
    (a) steady     the third quarter, the trees all there
    (a) steady, naive  the last quarter, one script call per update (the
                   naive baseline of bench.engine)
    (b) single     single-update calls of existing 5-node paths
    read           depth-1 reads of a tree root

Only the engine's script calls are counted (the namespace index calls are
left out), from the first update after the counters are zeroed to the last.
With --baseline DIR (a checkout of another version, e.g. a git worktree of an
earlier commit), the same runs go through that version's engine too, and the
table shows both.  --every 1000 runs shape (a) on the clock of jobs that
report every second (under callgrind, a round on the wall clock takes
seconds, so a job lives minutes); --split prints, for (a) steady and (b),
where the instructions go by function (needs a redis-server with symbols
first on the PATH; bench/README.md says how to build one).  Needs valgrind (Debian's `valgrind`).  Slow: callgrind
runs Redis ~50x slower, so the defaults are smaller than bench.engine's.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

from .common import free_port, machine

WORKER = r'''
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import redis.asyncio as aredis
from sca_progress.engine import Engine
from bench.engine import SimulatedClock, one_per_tree_batches, rounds

async def main(port, jobs, n_rounds, every_ms, history):
    r = aredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=None)
    e = Engine(r, prefix="ir", **({"history_samples": history} if history >= 0 else {}))
    await e.start()
    # With --every MS the engine's clock is simulated: round k of shape (a)
    # is applied k * MS ms after the first, as jobs reporting every MS ms
    # would send it, however slowly callgrind runs (each call 1 ms apart
    # within a round).  Without it, the wall clock.
    clock = SimulatedClock(every_ms)
    if every_ms:
        clock.install()
    at = clock.at

    async def counted(label, plans, n):
        print(json.dumps({"zero": label}), flush=True)
        assert sys.stdin.readline().strip() == "go"
        for p in plans:
            calls = p.calls[getattr(p, "n_index", 0):]  # the apply calls only
            for reply in await e.scripts.run(r, calls):
                assert not isinstance(reply, Exception), reply
        print(json.dumps({"dump": label, "updates": n}), flush=True)
        assert sys.stdin.readline().strip() == "go"

    # (round, index of the call in its round, batch) of every call of shape (a)
    bs = [(k, c, b) for k, rd in enumerate(rounds(jobs, n_rounds))
          for c, b in enumerate(one_per_tree_batches([rd], 1000))]

    def planned(calls):
        out = []
        for k, c, b in calls:
            at(k, c)
            out.append(e.plan(b, snapshots="none"))
        return out

    half = len(bs) // 2
    plans = planned(bs[:half])
    await counted("(a) creation", plans, sum(len(b) for _, _, b in bs[:half]))
    third = half + (len(bs) - half) // 2
    plans = planned(bs[half:third])
    await counted("(a) steady", plans, sum(len(b) for _, _, b in bs[half:third]))
    plans = planned([(k, c * 1000 + i, [u]) for k, c, b in bs[third:] for i, u in enumerate(b)])
    await counted("(a) steady, naive", plans, sum(len(b) for _, _, b in bs[third:]))
    keys = [f"_ir.t{t}.n0.n1.n2.leaf" for t in range(200)]
    at(n_rounds, 0)
    await e.apply([(k, {"progress": 0.1, "msg": "x", "status": "running"}) for k in keys])
    plans = []
    for i, k in enumerate(keys):
        at(n_rounds + 1, i)
        plans.append(e.plan([(k, {"progress": 0.2, "msg": "y"})], snapshots="updated"))
    await counted("(b) single", plans, len(keys))
    print(json.dumps({"zero": "read"}), flush=True)
    assert sys.stdin.readline().strip() == "go"
    for _ in range(50):
        await e.read("_ir.t1", depth=1)
    print(json.dumps({"dump": "read", "updates": 50}), flush=True)
    sys.stdin.readline()
    if hasattr(e, "close"):  # a baseline from before the engine had its own connection has none
        await e.close()
    await r.aclose()

asyncio.run(main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])))
'''


#: Functions of redis-server (7.0) whose inclusive cost names where an update's
#: instructions go; they show only in a redis-server with symbols (Debian's is
#: stripped: bench/README.md says how to build one).
GROUPS = (("luaRedisCallCommand", "redis.call: arguments, command, reply"),
          ("parseReply", "  of which the reply turned into Lua values"),
          ("scriptCall", "  of which the command itself"),
          ("b_pack", "struct.pack"), ("b_unpack", "struct.unpack"),
          ("luaS_newlstr", "Lua strings made (each hashed whole)"),
          ("luaC_step", "Lua garbage collection"))


def by_function(text: str) -> tuple[Counter, dict[str, tuple[int, int]]]:
    """From a callgrind dump written with --compress-strings=no: each
    function's own instructions, and each callee's calls and inclusive
    instructions summed over its callers."""
    own, called = Counter(), {}
    fn = callee = None
    calls = None
    for line in text.splitlines():
        if line.startswith("fn="):
            fn = line[3:]
        elif line.startswith("cfn="):
            callee = line[4:]
        elif line.startswith("calls="):
            calls = int(line[6:].split()[0])
        elif (line[:1].isdigit() or line[:1] in "+-*") and len(parts := line.split()) > 1:
            cost = int(parts[1])
            if calls is None:
                own[fn] += cost
            else:
                n, c = called.get(callee, (0, 0))
                called[callee] = (n + calls, c + cost)
                calls = None
    return own, called


def split_table(text: str, updates: int, top: int = 12) -> list[str]:
    """Markdown: the functions with most instructions of their own, and the
    GROUPS' inclusive costs, per update."""
    own, called = by_function(text)
    total = sum(own.values())
    lines = ["| function (own instructions) | per update | share |", "|---|---:|---:|"]
    for name, c in own.most_common(top):
        lines.append(f"| `{name}` | {c / updates:,.0f} | {100 * c / total:.1f} % |")
    lines += ["", "| inclusive | calls per update | instructions per update | share |", "|---|---:|---:|---:|"]
    for name, label in GROUPS:
        if name in called:
            n, c = called[name]
            lines.append(f"| {label} (`{name}`) | {n / updates:.2f} | {c / updates:,.0f} | {100 * c / total:.1f} % |")
    return lines


def count(repo: str, jobs: int, n_rounds: int, keep: str | None = None, every_ms: int = 0,
          history: int = -1, split: bool = False) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Instructions per update of each run, for the engine of checkout *repo*,
    and (with *split*) where those of shape (a) steady and (b) go."""
    import json

    import redis

    port = free_port()
    out_dir = tempfile.mkdtemp(prefix="bench-callgrind-")
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p",
                               # names written out in every dump, so each kept one reads on its own
                               "--compress-strings=no", "--compress-pos=no",
                               shutil.which("redis-server") or "redis-server", "--port", str(port),
                               "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(600):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)

        def callgrind(*args) -> None:
            subprocess.run(["callgrind_control", *args, str(server.pid)], capture_output=True, check=False)

        # The engine is imported from *repo* (its package dirs mapped as sca_progress).
        pkg = tempfile.mkdtemp(prefix="bench-pkg-")
        os.makedirs(f"{pkg}/sca_progress")
        for part in ("engine", "lua", "server"):
            os.symlink(os.path.join(repo, part), f"{pkg}/sca_progress/{part}")
        env = {**os.environ, "PYTHONPATH": f"{pkg}:{repo}"}
        worker = subprocess.Popen([sys.executable, "-c", WORKER, repo, str(port), str(jobs), str(n_rounds),
                                   str(every_ms), str(history)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=repo)
        result, splits = {}, {}
        for line in worker.stdout:
            msg = json.loads(line)
            if "zero" in msg:
                callgrind("-z")
            else:
                before = set(glob.glob(f"{out_dir}/cg.*"))
                callgrind("-d")
                for _ in range(100):
                    new = set(glob.glob(f"{out_dir}/cg.*")) - before
                    if new:
                        break
                    time.sleep(0.1)
                time.sleep(0.5)
                dump = sorted(new, key=os.path.getmtime)[-1]
                text = open(dump).read()
                if keep:  # for callgrind_annotate: where the instructions go, by function
                    os.makedirs(keep, exist_ok=True)
                    name = re.sub(r"[^a-z0-9]+", "-", msg["dump"].lower()).strip("-")
                    shutil.copy(dump, os.path.join(keep, f"{os.path.basename(repo.rstrip('/'))}-{name}.cg"))
                total = int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))
                result[msg["dump"]] = total / msg["updates"]
                if split and msg["dump"] in ("(a) steady", "(b) single"):
                    splits[msg["dump"]] = split_table(text, msg["updates"])
                print(f"  {os.path.basename(repo.rstrip('/'))}: {msg['dump']}: "
                      f"{result[msg['dump']]:,.0f} instructions per update", flush=True)
            worker.stdin.write("go\n")
            worker.stdin.flush()
        worker.wait()
        shutil.rmtree(pkg, ignore_errors=True)
        return result, splits
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(out_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=123)
    ap.add_argument("--baseline", help="a checkout of another version, counted the same way")
    ap.add_argument("--every", type=int, default=0, metavar="MS",
                    help="simulate the engine's clock: each round of shape (a) MS ms after the one before, "
                         "as jobs reporting every MS ms send them (default: the wall clock, on which a "
                         "round under callgrind takes seconds)")
    ap.add_argument("--history", type=int, default=-1, metavar="N",
                    help="progress-history samples a node keeps (0: none; default: the engine's)")
    ap.add_argument("--keep", metavar="DIR", help="keep each run's callgrind dump in DIR")
    ap.add_argument("--split", action="store_true",
                    help="also print where the instructions of (a) steady and (b) single go, by function "
                         "(needs a redis-server with symbols first on the PATH: bench/README.md)")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not on the PATH: apt-get install valgrind")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = [("this version", here)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    counts, splits = {}, {}
    for label, repo in sides:
        counts[label], splits[label] = count(repo, args.jobs, args.rounds, args.keep, args.every, args.history,
                                             args.split)
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    print(f"\nMachine: {machine()}; redis-server {version} under callgrind.")
    print(f"Command: `python -m bench.instructions --jobs {args.jobs} --rounds {args.rounds}"
          + (f" --every {args.every}" if args.every else "")
          + (f" --history {args.history}" if args.history >= 0 else "")
          + (" --baseline <checkout>`" if args.baseline else "`") + "\n")
    head = "| run | " + " | ".join(f"{label}: instructions per update" for label, _ in sides)
    print(head + (" | baseline / this |" if args.baseline else " |"))
    print("|---|" + "---:|" * (len(sides) + (1 if args.baseline else 0)))
    for run in counts["this version"]:
        cells = [f"{counts[label].get(run, float('nan')):,.0f}" for label, _ in sides]
        if args.baseline:
            cells.append(f"{counts['baseline'].get(run, float('nan')) / counts['this version'][run]:.2f}x")
        print(f"| {run} | " + " | ".join(cells) + " |")
    for label, _ in sides:
        for run, lines in splits[label].items():
            print(f"\n{label}, {run}: where the instructions go\n")
            print("\n".join(lines))


if __name__ == "__main__":
    main()
