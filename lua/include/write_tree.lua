--@include prelude
--@include call_chunked
--@include children
-- Write what a call changed in a tree: the records of its changed nodes
-- (HSET, 500 a call), new children's first-seen entries (one ZADD per
-- parent), the status indexes of wide parents (children.lua) and the
-- leftovers replaced by new nodes, queued for collect_garbage.lua (their
-- progress histories, tree.replaced, dropped at once).  Returns the flat
-- list key1, record1, key2, record2, ... of what it wrote, in the order the
-- nodes first changed.
local function write_tree(tree)
  local T, raw = tree.T, tree.raw
  local records = {}
  for _, key in ipairs(tree.dirty) do
    records[#records + 1] = key
    records[#records + 1] = raw[key]
  end
  call_chunked('HSET', T .. 't', records, 2)
  if tree.born then
    for pid, args in pairs(tree.born) do
      call_chunked('ZADD', T .. 'c:' .. sformat('%d', pid), args, 2)
    end
  end
  if tree.moved then write_moved(tree) end
  if tree.gc then call_chunked('RPUSH', T .. 'gc', tree.gc) end
  if tree.replaced then
    for _, key in ipairs(tree.replaced) do rcall('DEL', key) end
  end
  return records
end
