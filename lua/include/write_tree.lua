--@include prelude
--@include record
--@include call_chunked
--@include children
--@include fetch
--@include tree
-- Write what a call changed in a tree: the records of its changed nodes
-- and the cold parts of its changed parents (HSET, 500 a call; a cold part
-- that is no more, HDEL), new children's first-seen entries (one ZADD per
-- parent), the status indexes of wide parents (children.lua) and the
-- leftovers replaced by new nodes, queued for collect_garbage.lua.
local function write_tree(tree)
  local T, raw = tree.T, tree.raw
  local fields = {}
  for _, key in ipairs(tree.dirty) do
    fields[#fields + 1] = key
    fields[#fields + 1] = raw[key]
  end
  call_chunked('HSET', T .. 't', fields, 2)
  local cd = tree.cdirty
  if cd then
    local colds, gone = {}, {}
    for _, key in ipairs(cd) do
      local cold = tree.cold[key]
      if cold then
        colds[#colds + 1] = key
        colds[#colds + 1] = cold
      else
        gone[#gone + 1] = key
      end
    end
    if #gone > 0 then call_chunked('HDEL', T .. 'p', gone) end
    call_chunked('HSET', T .. 'p', colds, 2)
  end
  if tree.born then
    for pid, args in pairs(tree.born) do
      call_chunked('ZADD', T .. 'c:' .. sformat('%d', pid), args, 2)
    end
  end
  if tree.moved then write_moved(tree) end
  if tree.gc then call_chunked('RPUSH', T .. 'gc', tree.gc) end
end

-- The flat list key1, record1, key2, record2, ... of the whole records of
-- the changed nodes (all of them, or with only_updated those an update
-- applied to), in the order they first changed.  The cold parts of changed
-- parents not read by the call are read here, in one HMGET.
local function snapshots(tree, only_updated)
  local keys = {}
  for _, key in ipairs(tree.dirty) do
    if not only_updated or tree.mark[key] == 2 then keys[#keys + 1] = key end
  end
  fetch_colds(tree, keys)
  local out = {}
  for _, key in ipairs(keys) do
    out[#out + 1] = key
    out[#out + 1] = whole_record(tree, key)
  end
  return out
end

-- A copy of a tree (tree.lua) holding what apply_single (apply_update.lua)
-- changed, as if apply_update had: for snapshots.
local function single_tree(done)
  local ks, fields = done[2], done[3]
  local n = #ks
  local tree = new_tree(done[1] .. 't')
  for j = 1, n do
    local key = ks[j == 1 and n or j - 1]
    tree.raw[key] = fields[2 * j]
    tree.dirty[j] = key
    tree.mark[key] = j == 1 and 2 or 1
  end
  if done[6] then tree.cold[ks[n - 1]] = done[6] end
  return tree
end
