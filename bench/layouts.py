"""The floor of a leaf update's record I/O: today's layout beside a per-tree "spine",
and progress history in keys of its own beside history inside the records.

    python -m bench.layouts [--trees 2000] [--inner 4,8,22] [--repeats 7]
    python -m bench.layouts --history [--trees 2000] [--repeats 7]

Shape (a)'s Redis time (bench/engine.py) is mostly Lua work on the five
records of a depth-5 path.  This measures only that work, with no roll-up
math, validation or bookkeeping: for one update per tree, 1,000 trees a
script call, read the path's records, unpack them, change a few numbers,
pack them again and write them back.

    today   each node one packed record in its tree's hash (lua/include/record.lua):
            HMGET of 5 fields; the leaf unpacked and packed whole; each of the
            4 ancestors' first 81 bytes unpacked and packed, its rest copied;
            HSET of 5 fields
    spine   the ancestors' roll-up parts (64 B each) kept together in one field
            '^' of the tree's hash, at fixed offsets: HMGET of 2 fields; the
            4 parts unpacked at their offsets and packed; the spine rebuilt
            from them and its unchanged runs; HSET of 2 fields

--history compares, on the same record work (4 inner nodes), where a node's
progress history lives:

    append    today: a string per node ('h:<id>'); a node that takes a sample
              gets one APPEND (its key built from its id)
    inrecord  the samples at the end of each record (leaves: length-prefixed;
              parents: after the rest, their length not kept in this
              sketch), appended while the record is rewritten

each with no node of the path taking a sample (an old job: the grid's step
is longer than the time between updates) and with every node taking one (a
young job on a 1 s clock), the histories 60 samples long.

--inner sets how many inner nodes a tree has (the spine's length / 64).
Script time per update is the commandstats usec of the calls; both layouts
take turns, and the medians of the turns are printed.
"""
from __future__ import annotations

import argparse
import random
import statistics
import struct

from .common import PrivateRedis, machine

TODAY = r'''
local sunpack, spack, ssub = struct.unpack, struct.pack, string.sub
local batch, pos = ARGV[1], 1
for i = 1, #KEYS do
  local k1, k2, k3, k4, k5
  k1, k2, k3, k4, k5, pos = sunpack('<Bc0Bc0Bc0Bc0Bc0', batch, pos)
  local recs = redis.call('HMGET', KEYS[i], k1, k2, k3, k4, k5)
  local s = { sunpack('<BI4I4I4dddfdddHc0I4c0I4c0', recs[5]) }
  s[6], s[7] = s[6] + 0.001, s[7] + 1
  recs[5] = spack('<BI4I4I4dddfdddHc0I4c0I4c0', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10],
    s[11], #s[12], s[12], #s[13], s[13], #s[14], s[14])
  for j = 4, 1, -1 do
    local rec = recs[j]
    local kind, id, pid, wm, start, p, upd, er, began, own, sw, swp, swpc = sunpack('<BI4I4I4dddfddddd', rec)
    recs[j] = spack('<BI4I4I4dddfdddddc0', kind, id, pid, wm, start, p + 0.0001, upd + 1, er, began, own, sw,
      swp + 0.001, swpc, ssub(rec, 82))
  end
  redis.call('HSET', KEYS[i], k5, recs[5], k1, recs[1], k2, recs[2], k3, recs[3], k4, recs[4])
end
return 1
'''

SPINE = r'''
local sunpack, spack, ssub, concat = struct.unpack, struct.pack, string.sub, table.concat
local batch, pos = ARGV[1], 1
for i = 1, #KEYS do
  local leaf, a, b, c, d
  leaf, a, b, c, d, pos = sunpack('<Bc0I2I2I2I2', batch, pos)
  local recs = redis.call('HMGET', KEYS[i], leaf, '^')
  local s = { sunpack('<BI4I4I4dddfdddHc0I4c0I4c0', recs[1]) }
  s[6], s[7] = s[6] + 0.001, s[7] + 1
  local new = spack('<BI4I4I4dddfdddHc0I4c0I4c0', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10],
    s[11], #s[12], s[12], #s[13], s[13], #s[14], s[14])
  local spine, parts, last = recs[2], {}, 0
  for _, slot in ipairs({ a, b, c, d }) do -- ascending
    local off = slot * 64
    local pid, p, upd, er, began, sw, swp, swpc, own = sunpack('<I4dddfdddd', spine, off + 1)
    parts[#parts + 1] = ssub(spine, last + 1, off)
    parts[#parts + 1] = spack('<I4dddfdddd', pid, p + 0.0001, upd + 1, er, began, sw, swp + 0.001, swpc, own)
    last = off + 64
  end
  parts[#parts + 1] = ssub(spine, last + 1)
  redis.call('HSET', KEYS[i], leaf, new, '^', concat(parts))
end
return 1
'''

# Progress history (--history): today's layout with one APPEND of a sample to
# each node's history key (lua/include/history.lua), against the history kept
# at the end of each record, which the update rewrites anyway.  A node takes a
# sample when an update crosses a point of its time grid: every node of the
# path in a young job (ARGV[2] = 1), none in an old one (ARGV[2] = 0).
APPEND = r'''
local sunpack, spack, ssub, sformat = struct.unpack, struct.pack, string.sub, string.format
local batch, pos, crossed = ARGV[1], 1, ARGV[2] == '1'
for i = 1, #KEYS do
  local k1, k2, k3, k4, k5
  k1, k2, k3, k4, k5, pos = sunpack('<Bc0Bc0Bc0Bc0Bc0', batch, pos)
  local recs = redis.call('HMGET', KEYS[i], k1, k2, k3, k4, k5)
  local s = { sunpack('<BI4I4I4dddfdddHc0I4c0I4c0', recs[5]) }
  s[6], s[7] = s[6] + 0.001, s[7] + 1
  recs[5] = spack('<BI4I4I4dddfdddHc0I4c0I4c0', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10],
    s[11], #s[12], s[12], #s[13], s[13], #s[14], s[14])
  local ids = crossed and { s[2] } -- the nodes that take a sample (none: nothing more to do)
  for j = 4, 1, -1 do
    local rec = recs[j]
    local kind, id, pid, wm, start, p, upd, er, began, own, sw, swp, swpc = sunpack('<BI4I4I4dddfddddd', rec)
    recs[j] = spack('<BI4I4I4dddfdddddc0', kind, id, pid, wm, start, p + 0.0001, upd + 1, er, began, own, sw,
      swp + 0.001, swpc, ssub(rec, 82))
    if ids then ids[#ids + 1] = id end
  end
  redis.call('HSET', KEYS[i], k5, recs[5], k1, recs[1], k2, recs[2], k3, recs[3], k4, recs[4])
  if ids then
    local base = ssub(KEYS[i], 1, -2)
    for _, id in ipairs(ids) do redis.call('APPEND', base .. 'h:' .. sformat('%d', id), spack('<H', 30000)) end
  end
end
return 1
'''

IN_RECORD = r'''
local sunpack, spack, ssub = struct.unpack, struct.pack, string.sub
local batch, pos, crossed = ARGV[1], 1, ARGV[2] == '1'
for i = 1, #KEYS do
  local k1, k2, k3, k4, k5
  k1, k2, k3, k4, k5, pos = sunpack('<Bc0Bc0Bc0Bc0Bc0', batch, pos)
  local recs = redis.call('HMGET', KEYS[i], k1, k2, k3, k4, k5)
  local sample = crossed and spack('<H', 30000) or ''
  local s = { sunpack('<BI4I4I4dddfdddHc0I4c0I4c0I4c0', recs[5]) }
  s[6], s[7] = s[6] + 0.001, s[7] + 1
  recs[5] = spack('<BI4I4I4dddfdddHc0I4c0I4c0I4c0c0', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9],
    s[10], s[11], #s[12], s[12], #s[13], s[13], #s[14], s[14], #s[15] + #sample, s[15], sample)
  for j = 4, 1, -1 do
    local rec = recs[j]
    local kind, id, pid, wm, start, p, upd, er, began, own, sw, swp, swpc = sunpack('<BI4I4I4dddfddddd', rec)
    recs[j] = spack('<BI4I4I4dddfdddddc0c0', kind, id, pid, wm, start, p + 0.0001, upd + 1, er, began, own, sw,
      swp + 0.001, swpc, ssub(rec, 82), sample)
  end
  redis.call('HSET', KEYS[i], k5, recs[5], k1, recs[1], k2, recs[2], k3, recs[3], k4, recs[4])
end
return 1
'''

NOW = 1.7e12
NAN = float("nan")
LEAF = (struct.pack("<BIIIdddfdddH", 2, 9, 8, 1000, NOW, 0.5, NOW, 0.001, NOW, NAN, NAN, 8) + b"finished"
        + struct.pack("<I", 9) + b'"at 100%"' + struct.pack("<I", 0))
COLD = b"x" * 70  # a parent's counts, children list, status and msg
PARENT = struct.pack("<BIIIdddfddddd", 3, 5, 4, 1000, NOW, 0.5, NOW, 0.001, NOW, 0.5, 3000, 1500, 0) + COLD
SPINE_ENTRY = struct.pack("<Idddfdddd", 4, 0.5, NOW, 0.001, NOW, 3000, 1500, 0, 0.5)
LEAVES = 24
HISTORY = struct.pack("<I", 1000) + struct.pack("<H", 30000) * 60  # 60 of 64 samples


def load(r, trees: int, inner: int) -> None:
    pipe = r.pipeline(transaction=False)
    for t in range(trees):
        leaves = {f"a.b.c.f{i}": LEAF for i in range(LEAVES)}
        today = {**leaves, **{f"n{i}.x": PARENT for i in range(inner - 4)},
                 **{k: PARENT for k in ("", "a", "a.b", "a.b.c")}}
        spine = {**leaves, **{f"n{i}.x": COLD for i in range(inner)}, "^": SPINE_ENTRY * inner}
        pipe.hset(f"today:{{j{t}}}:t", mapping=today)
        pipe.hset(f"spine:{{j{t}}}:t", mapping=spine)
    pipe.execute()


def leaf_record(id_: int, pid: int) -> bytes:
    return struct.pack("<BIII", 2, id_, pid, 1000) + LEAF[13:]


def parent_record(id_: int, pid: int) -> bytes:
    return struct.pack("<BIII", 3, id_, pid, 1000) + PARENT[13:]


def load_history(r, trees: int) -> None:
    """For --history: each tree a depth-5 path of parents ids 1-4 over 24
    leaves (ids 10-33), its histories 60 samples long: in keys of their own
    ('append:'), or at the end of each record ('inrecord:')."""
    pipe = r.pipeline(transaction=False)
    for t in range(trees):
        records = {f"a.b.c.f{i}": leaf_record(10 + i, 4) for i in range(LEAVES)}
        records.update({k: parent_record(i + 1, i) for i, k in enumerate(("", "a", "a.b", "a.b.c"))})
        pipe.hset(f"append:{{j{t}}}:t", mapping=records)
        for id_ in [1, 2, 3, 4, *range(10, 10 + LEAVES)]:
            pipe.set(f"append:{{j{t}}}:h:{id_}", HISTORY)
        pipe.hset(f"inrecord:{{j{t}}}:t", mapping={
            k: v + (struct.pack("<I", len(HISTORY)) if v[0] == 2 else b"") + HISTORY for k, v in records.items()})
    pipe.execute()


def turn(r, layout: str, sha: str, trees: int, inner: int, rng: random.Random, crossed: bool = False) -> float:
    """Script µs per update of one update to every tree, 1,000 trees a call."""
    order = list(range(trees))
    rng.shuffle(order)
    r.config_resetstat()
    for c in range(0, trees, 1000):
        part = order[c:c + 1000]
        out = []
        for _ in part:
            leaf = f"a.b.c.f{rng.randrange(LEAVES)}".encode()
            if layout != "spine":
                for k in (b"", b"a", b"a.b", b"a.b.c", leaf):
                    out.append(bytes([len(k)]) + k)
            else:
                out.append(bytes([len(leaf)]) + leaf + struct.pack("<4H", *sorted(rng.sample(range(inner), 4))))
        r.evalsha(sha, len(part), *[f"{layout}:{{j{t}}}:t" for t in part], b"".join(out), int(crossed))
    return r.info("commandstats")["cmdstat_evalsha"]["usec"] / trees


def history_main(args) -> None:
    """--history: script µs per update of the four cases, taking turns."""
    server = PrivateRedis()
    cases = (("append", False), ("append", True), ("inrecord", False), ("inrecord", True))
    try:
        r = server.client
        shas = {"append": r.script_load(APPEND), "inrecord": r.script_load(IN_RECORD)}
        load_history(r, args.trees)
        rng = random.Random(1)
        got: dict[tuple, list[float]] = {case: [] for case in cases}
        for _ in range(args.repeats):
            for layout, crossed in cases:
                got[(layout, crossed)].append(turn(r, layout, shas[layout], args.trees, 4, rng, crossed))
        tree_bytes = {layout: statistics.mean(
            r.memory_usage(f"{layout}:{{j{t}}}:t", samples=0)
            + sum(r.memory_usage(k, samples=0) or 0 for k in r.scan_iter(f"{layout}:{{j{t}}}:h:*"))
            for t in range(0, args.trees, 50)) for layout in ("append", "inrecord")}
    finally:
        server.close()
    print(f"\nMachine: {machine()}; Redis {server.version} (private).")
    print(f"Command: `python -m bench.layouts --history --trees {args.trees} --repeats {args.repeats}`\n")
    print("| history kept | no node takes a sample: script µs/update | every node of the path takes one "
          "| bytes a tree (28 nodes) |")
    print("|---|---:|---:|---:|")
    names = {"append": "in a key per node, APPEND (today)", "inrecord": "at the end of each record"}
    for layout in ("append", "inrecord"):
        print(f"| {names[layout]} | {statistics.median(got[(layout, False)]):.1f} "
              f"| {statistics.median(got[(layout, True)]):.1f} | {tree_bytes[layout]:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", type=int, default=2000)
    ap.add_argument("--inner", default="4,8,22", help="inner nodes per tree, comma-separated")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--history", action="store_true",
                    help="progress history in keys of their own (today) against at the end of each record")
    args = ap.parse_args()
    if args.history:
        history_main(args)
        return
    server = PrivateRedis()
    rows = []
    try:
        r = server.client
        shas = {"today": r.script_load(TODAY), "spine": r.script_load(SPINE)}
        for inner in (int(x) for x in args.inner.split(",")):
            r.flushall()
            load(r, args.trees, inner)
            rng = random.Random(inner)
            got: dict[str, list[float]] = {"today": [], "spine": []}
            for _ in range(args.repeats):
                for layout in ("today", "spine"):
                    got[layout].append(turn(r, layout, shas[layout], args.trees, inner, rng))
            ratios = [t / s for t, s in zip(got["today"], got["spine"])]
            memory = {layout: statistics.mean(r.memory_usage(f"{layout}:{{j{t}}}:t", samples=0)
                                              for t in range(0, args.trees, 10)) for layout in got}
            rows.append((inner, statistics.median(got["today"]), statistics.median(got["spine"]),
                         statistics.median(ratios), memory["today"], memory["spine"]))
            print(f"  inner {inner}: today {rows[-1][1]:.1f} µs, spine {rows[-1][2]:.1f} µs", flush=True)
    finally:
        server.close()
    print(f"\nMachine: {machine()}; Redis {server.version} (private).")
    print(f"Command: `python -m bench.layouts --trees {args.trees} --inner {args.inner} --repeats {args.repeats}`\n")
    print("| inner nodes a tree | today: script µs/update | spine | today / spine (median of turns) "
          "| tree hash bytes: today | spine |")
    print("|---:|---:|---:|---:|---:|---:|")
    for inner, today, spine, ratio, mt, ms in rows:
        print(f"| {inner} | {today:.1f} | {spine:.1f} | {ratio:.2f}x | {mt:,.0f} | {ms:,.0f} |")


if __name__ == "__main__":
    main()
