--@include prelude
-- A node is stored in its tree's record hash '<prefix>:{<root>}:t' under its
-- key relative to the root ('' for the root itself, 'a.b' for '<root>.a.b').
-- Record format 3, little-endian, no padding (engine/records.py mirrors it).
--
-- A leaf's record is its whole state.  A parent's is its *hot* part, the
-- numbers every update below it rewrites (81 bytes); its *cold* part, which
-- changes only when the parent itself is updated, gains or loses a child,
-- or a child's status moves, is in the tree's hash '<prefix>:{<root>}:p'
-- under the same key.  An update below a parent so reads and writes 81
-- bytes of it, however long its message, fields and list of children, and
-- the record hash holds one field per node (HLEN counts the nodes).
-- hot .. cold is the parent's whole record: what scripts return and
-- engine/records.py reads (it is format 2's parent record, split in two).
--
-- First what a roll-up reads and rewrites (a leaf's record starts the same):
--   kind   2: a leaf, 3: a parent (it has, or had, children)
--   id     node id (the key of a wide node's children index is 'c:<id>')
--   pid    parent's id (0 for the root); a record whose pid is not its
--          parent's id is a leftover of a deleted subtree: it does not exist
--   wm     weight in units of 1/1000 (an exact integer)          uint32
--   start  start_time (ms)
--   p      progress shown (NaN: none)
--   upd    update_time (ms)
--   er     rate of progress per ms (float32, NaN: none).  The rate's last
--          sample is the node's own (p, upd), so the eta, upd + (1 - p) / er,
--          is derived when read, never stored.
--   began  when the node first ran (ms, NaN: not yet)
--   parents only (the rest of the hot part):
--   own    progress posted to the node itself (NaN: none)
--   sw     Σ child weight units       swp  Σ child weight units × progress
--   swpc   the rounding error of swp's running sum, carried (compensated
--          summation), so swp + swpc stays exact after big children leave
-- then (a parent's cold part):
--   parents only: n, nc (uint32): children ever created (their first-seen
--          positions) and children now
--   ts     largest producer ts applied (NaN: none)
--   fin    end_time (ms, NaN: none)
--   parents only: counts, the children's status counts (JSON object text
--          status -> count, '' none; uint32 length-prefixed); then where the
--          children are listed (uint8: 0 here, 1 in the sorted set 'c:<id>')
--          and, while here, the list itself (uint32 length-prefixed): each
--          child's first-seen position (uint32) and last key segment
--          (uint8 length), in first-seen order (see children.lua)
--   status (raw text, '' none; uint16 length), msg (its JSON text, '' none)
--   and fields (a cmsgpack map name -> JSON text of the other client
--   fields, '' none), uint32 length-prefixed.
-- Format 1 records (before the kind byte existed) start with a 0 byte;
-- format 2 kept a parent's record whole (engine/migrate.py splits them).
local LEAF, PARENT = 2, 3
local LEAF_FORMAT = '<BI4I4I4dddfdddHc0I4c0I4c0'
local PARENT_HOT = '<BI4I4I4dddfddddd'
local HOT_BYTES = 81
local PARENT_COLD = '<I4I4ddI4c0BI4c0Hc0I4c0I4c0'
local PARENT_FORMAT = PARENT_HOT .. 'I4I4ddI4c0BI4c0Hc0I4c0I4c0'

-- Slots of a node state (node_state in tree.lua), in the parent format's order:
local KIND, ID, PID, WM, START, P, UPD, ER, BEGAN = 1, 2, 3, 4, 5, 6, 7, 8, 9
local OWN, SW, SWP, SWPC, N, NC, TS, FIN, COUNTS = 10, 11, 12, 13, 14, 15, 16, 17, 18
local WIDE, KIDS, STATUS, MSG, FIELDS = 19, 20, 21, 22, 23

-- Why a record cannot be read (raised, so the call fails before any write).
local function bad_record(key)
  return 'bad-record ' .. key .. ': not record format 3 (written by an older version?)'
end

-- The state (an array of the slots above) of a leaf's record, or of a
-- parent's hot and cold parts.  Client fields and counts stay packed until
-- needed.
local function leaf_state(raw)
  local k, id, pid, wm, start, p, upd, er, began, ts, fin, status, msg, fields = sunpack(LEAF_FORMAT, raw)
  return { k, id, pid, wm, start, p, upd, er, began, nil, nil, nil, nil, nil, nil, ts, fin, nil, nil, nil,
           status, msg, fields }
end

local function parent_state(hot, cold)
  return { sunpack(PARENT_FORMAT, hot .. cold) }
end

-- The state of a node created at time now: a leaf of weight 1, no progress.
local function new_node(id, pid, now)
  local NONE = 0 / 0
  return { LEAF, id, pid, 1000, now, NONE, now, NONE, NONE, nil, nil, nil, nil, nil, nil, NONE, NONE, nil, nil,
           nil, '', '', '' }
end

-- Turn leaf state s into a parent (its first child is being created).
local function make_parent(s)
  if s[KIND] == LEAF then
    s[KIND], s[N], s[NC], s[SW], s[SWP], s[SWPC], s[OWN], s[COUNTS] = PARENT, 0, 0, 0, 0, 0, s[P], ''
    s[WIDE], s[KIDS] = 0, ''
  end
end

-- The record of leaf state s; the hot and the cold part of parent state s.
-- Client fields and status counts that were unpacked (tables) are packed again.
local function pack_node(s)
  local fields = s[FIELDS]
  if type(fields) == 'table' then fields = next(fields) and cmsgpack.pack(fields) or '' end
  local status, msg = s[STATUS], s[MSG]
  if s[KIND] == LEAF then
    return spack(LEAF_FORMAT, LEAF, s[ID], s[PID], s[WM], s[START], s[P], s[UPD], s[ER], s[BEGAN], s[TS], s[FIN],
      #status, status, #msg, msg, #fields, fields)
  end
  local counts = s[COUNTS]
  if type(counts) == 'table' then counts = next(counts) and cjson.encode(counts) or '' end
  return spack(PARENT_HOT, PARENT, s[ID], s[PID], s[WM], s[START], s[P], s[UPD], s[ER], s[BEGAN], s[OWN],
      s[SW], s[SWP], s[SWPC]),
    spack(PARENT_COLD, s[N], s[NC], s[TS], s[FIN], #counts, counts, s[WIDE], #s[KIDS], s[KIDS],
      #status, status, #msg, msg, #fields, fields)
end

-- The kind of a record (a leaf's, or a parent's hot part), raising on any other.
local function record_kind(raw, key)
  local kind = sbyte(raw, 1)
  if kind ~= LEAF and kind ~= PARENT then error(bad_record(key or ''), 0) end
  return kind
end

-- id and parent id of a record, without reading the rest.
local function record_links(raw, key)
  local kind, id, pid = sunpack('<BI4I4', raw)
  if kind ~= LEAF and kind ~= PARENT then error(bad_record(key or ''), 0) end
  return id, pid, kind
end

-- From a parent's cold part: its number of children, where they are listed
-- (wide: 1 in 'c:<id>', 0 in the list kids; children.lua) and its counts.
local function cold_children(cold)
  local _, nc, _, _, counts, wide, kids = sunpack(PARENT_COLD, cold)
  return nc, wide, kids, counts
end

-- The status of a leaf record, or of a parent's cold part ('' none).
local function leaf_status(raw)
  local _, _, _, _, _, _, _, _, _, _, _, status = sunpack(LEAF_FORMAT, raw)
  return status
end

local function cold_status(cold)
  local _, _, _, _, _, _, _, status = sunpack(PARENT_COLD, cold)
  return status
end
