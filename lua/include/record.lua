--@include prelude
-- A node is one record in its tree's record hash '<prefix>:{<root>}:t'; the
-- hash field is the node key relative to the root ('' for the root itself,
-- 'a.b' for '<root>.a.b').  Record format 2, little-endian, no padding
-- (engine/records.py mirrors it).  First what a roll-up reads and rewrites:
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
--   parents only:
--   own    progress posted to the node itself (NaN: none)
--   sw     Σ child weight units       swp  Σ child weight units × progress
--   swpc   the rounding error of swp's running sum, carried (compensated
--          summation), so swp + swpc stays exact after big children leave
-- then the rest:
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
-- A roll-up rewrites an ancestor's first part and copies the rest as it is.
-- Format 1 records (before the kind byte existed) start with a 0 byte.
local LEAF, PARENT = 2, 3
local LEAF_FORMAT = '<BI4I4I4dddfdddHc0I4c0I4c0'
local PARENT_HOT = '<BI4I4I4dddfddddd'
local PARENT_FORMAT = PARENT_HOT .. 'I4I4ddI4c0BI4c0Hc0I4c0I4c0'
-- A roll-up rewrites the first HOT_BYTES of a parent's record and appends the
-- rest as it was: struct.pack's 'c0' takes a string whole.
local HOT_BYTES = 81
local HOT_TAIL = PARENT_HOT .. 'c0'

-- Slots of a node state (read_node), in the parent format's order:
local KIND, ID, PID, WM, START, P, UPD, ER, BEGAN = 1, 2, 3, 4, 5, 6, 7, 8, 9
local OWN, SW, SWP, SWPC, N, NC, TS, FIN, COUNTS = 10, 11, 12, 13, 14, 15, 16, 17, 18
local WIDE, KIDS, STATUS, MSG, FIELDS = 19, 20, 21, 22, 23

-- Why a record cannot be read (raised, so the call fails before any write).
local function bad_record(key)
  return 'bad-record ' .. key .. ': not record format 2 (written by an older version?)'
end

-- The state (an array of the slots above) of a stored record; leaves have no
-- parent block.  Client fields and counts stay packed until needed.
local function read_node(raw, key)
  local kind = sbyte(raw, 1)
  if kind == PARENT then return { sunpack(PARENT_FORMAT, raw) } end
  if kind ~= LEAF then error(bad_record(key), 0) end
  local k, id, pid, wm, start, p, upd, er, began, ts, fin, status, msg, fields = sunpack(LEAF_FORMAT, raw)
  return { k, id, pid, wm, start, p, upd, er, began, nil, nil, nil, nil, nil, nil, ts, fin, nil, nil, nil,
           status, msg, fields }
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

-- The record of state s.  Client fields and status counts that were
-- unpacked (tables) are packed again.
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
  return spack(PARENT_FORMAT, PARENT, s[ID], s[PID], s[WM], s[START], s[P], s[UPD], s[ER], s[BEGAN], s[OWN],
    s[SW], s[SWP], s[SWPC], s[N], s[NC], s[TS], s[FIN], #counts, counts, s[WIDE], #s[KIDS], s[KIDS],
    #status, status, #msg, msg, #fields, fields)
end

-- id, parent id and number of children of a record, without reading the rest.
local function record_links(raw, key)
  local kind, id, pid = sunpack('<BI4I4', raw)
  if kind == PARENT then return id, pid, (sunpack('<I4', raw, 86)) end
  if kind ~= LEAF then error(bad_record(key or ''), 0) end
  return id, pid, 0
end

-- Whether a parent record lists its children in 'c:<id>' (1, wide) or
-- itself (0), without reading the rest.
local function record_wide(raw)
  return sbyte(raw, HOT_BYTES + 29 + sunpack('<I4', raw, HOT_BYTES + 25))
end

-- Where a parent record lists its children: wide (1: in 'c:<id>') and, when
-- not wide, the list (children.lua).
local function record_children(raw)
  local _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, wide, kids = sunpack(PARENT_FORMAT, raw)
  return wide, kids
end

-- The status of a record ('' none), without reading the rest.
local function record_status(raw)
  if sbyte(raw, 1) == PARENT then
    local _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, status = sunpack(PARENT_FORMAT, raw)
    return status
  end
  local _, _, _, _, _, _, _, _, _, _, _, status = sunpack(LEAF_FORMAT, raw)
  return status
end
