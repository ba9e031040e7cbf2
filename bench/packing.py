"""How to pass a batch to a script: one packed argument, or keys and arguments one by one.

    python -m bench.packing [--updates 5000] [--rounds 20]

The same batch of updates (key, three fields) goes to the same trivial script,
which only walks what it received, in three calling conventions:

- packed:     one msgpack argument holding every update (what the engine does);
- args:       every key and field as its own ARGV entry (2 + 2 per field);
- keys+args:  every node's Redis key in KEYS (as Redis Cluster wants declared
              keys) and its fields in ARGV.

It prints the median time per batch from Python's side (building, sending,
Redis running the script, reading the reply) and the Redis CPU per update
(INFO cpu), side by side in one run, for bench/README.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import msgpack
import redis

from .common import PrivateRedis, machine

PACKED = """
local batch = cmsgpack.unpack(ARGV[1])
local n = 0
for _, u in ipairs(batch) do n = n + #u[1] + #u[3] end
return n
"""
FLAT = """
local n = 0
for i = 1, #ARGV, 8 do n = n + #ARGV[i] + #ARGV[i + 3] end
return n
"""
KEYED = """
local n = 0
for i = 1, #KEYS do n = n + #KEYS[i] + #ARGV[6 * i - 4] end
return n
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    updates = [(f"_bench.job{i % 2000}.process.g{i % 2}.p{i % 3}.f{i % 5}",
                [b"progress", b"0.5", b"status", b'"running"', b"msg", b'"at 50%"']) for i in range(args.updates)]
    server = PrivateRedis()
    r = redis.Redis(port=server.port)
    shas = {name: r.script_load(src) for name, src in (("packed", PACKED), ("args", FLAT), ("keys+args", KEYED))}

    def call(name):
        if name == "packed":
            arg = msgpack.packb([[k, False, *f] for k, f in updates], use_bin_type=False)
            return r.evalsha(shas[name], 0, arg)
        if name == "args":
            flat = [x for k, f in updates for x in (k, b"", *f)]
            return r.evalsha(shas[name], 0, *flat)
        keys = [f"progress:{{{k.split('.', 2)[1]}}}:n:{k}" for k, _ in updates]
        flat = [x for _, f in updates for x in f]
        return r.evalsha(shas[name], len(keys), *keys, *flat)

    rows = []
    for name in shas:
        times = []
        cpu0 = server.cpu_seconds()
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            call(name)
            times.append(time.perf_counter() - t0)
        cpu = server.cpu_seconds() - cpu0
        rows.append((name, statistics.median(times) * 1000, cpu / (args.rounds * args.updates) * 1e6))
    r.close()
    version = server.version
    server.close()
    print(f"Machine: {machine()}; Redis {version}.")
    print(f"Command: `python -m bench.packing --updates {args.updates} --rounds {args.rounds}`\n")
    print("| calling convention | median ms per batch (Python side, end to end) | Redis CPU µs/update |")
    print("|---|---:|---:|")
    base = rows[0][1]
    for name, ms, us in rows:
        print(f"| {name} | {ms:.1f} ({ms / base:.1f}x) | {us:.2f} |")


if __name__ == "__main__":
    main()
