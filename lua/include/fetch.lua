--@include prelude
--@include record
-- A call's copy of a tree's records (tree.lua) is filled here.
-- Fetch the records of every key of the paths (lists of keys) not fetched
-- yet into tree.raw, in HMGET calls of at most 1000 fields.
local function fetch_paths(tree, paths)
  local raw, want = tree.raw, {}
  for _, ks in ipairs(paths) do
    for _, k in ipairs(ks) do
      if raw[k] == nil then
        raw[k] = false
        want[#want + 1] = k
      end
    end
  end
  local t = tree.T .. 't'
  for i = 1, #want, 1000 do
    local last = i + 999
    if last > #want then last = #want end
    local got = rcall('HMGET', t, unpack(want, i, last))
    for j = i, last do raw[want[j]] = got[j - i + 1] end
  end
end

-- Fetch the cold parts (from '<prefix>:{<root>}:p') of the parents among
-- keys (fetched already) not fetched yet into tree.cold, in HMGET calls of
-- at most 1000 fields.
local function fetch_colds(tree, keys)
  local raw, cold, want = tree.raw, tree.cold, {}
  for _, k in ipairs(keys) do
    local rec = raw[k]
    if rec and cold[k] == nil and sbyte(rec, 1) == PARENT then
      cold[k] = false
      want[#want + 1] = k
    end
  end
  local p = tree.T .. 'p'
  for i = 1, #want, 1000 do
    local last = i + 999
    if last > #want then last = #want end
    local got = rcall('HMGET', p, unpack(want, i, last))
    for j = i, last do cold[want[j]] = got[j - i + 1] end
  end
end

-- The cold part of the parent at key (its hot part in tree.raw), read now
-- if this call has not yet.  A parent without one is a broken record.
local function cold_of(tree, key)
  local c = tree.cold[key]
  if c == nil then
    c = rcall('HGET', tree.T .. 'p', key)
    tree.cold[key] = c
  end
  if not c then error(bad_record(key), 0) end
  return c
end

-- The state of the node at key from this call's copy (nil: no record).
local function node_state(tree, key)
  local rec = tree.raw[key]
  if not rec then return nil end
  if record_kind(rec, key) == LEAF then return leaf_state(rec) end
  return parent_state(rec, cold_of(tree, key))
end

-- The whole record of the node at key (hot .. cold for a parent), or false.
local function whole_record(tree, key)
  local rec = tree.raw[key]
  if rec and sbyte(rec, 1) == PARENT then return rec .. cold_of(tree, key) end
  return rec
end

-- The status of the node at key ('' none); its record is in tree.raw.
local function status_of(tree, key)
  local rec = tree.raw[key]
  if record_kind(rec, key) == LEAF then return leaf_status(rec) end
  return cold_status(cold_of(tree, key))
end
