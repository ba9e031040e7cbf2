--@include slots
--@include pack_record
--@include call_chunked
-- Write the changed states of a tree: their records (HSET, 500 a call),
-- new children's first-seen entries (one ZADD per parent), and the leftovers
-- replaced by new nodes, queued for collect_garbage.lua.  Returns the flat
-- list key1, record1, key2, record2, ... of what it wrote.
local function write_tree(tree, changed)
  local T = tree.T
  local records = {}
  local born = {} -- parent id -> ZADD arguments of its new children
  for _, s in ipairs(changed) do
    records[#records + 1] = s[KEY]
    records[#records + 1] = pack_record(s)
    local parent = s[PARENT]
    if s[NEW] and parent then
      local args = born[parent[ID]]
      if args == nil then
        args = {}
        born[parent[ID]] = args
      end
      args[#args + 1] = s[ORDER]
      args[#args + 1] = s[SEG]
    end
  end
  call_chunked('HSET', T .. 't', records, 2)
  for pid, args in pairs(born) do
    call_chunked('ZADD', T .. 'c:' .. string.format('%d', pid), args, 2)
  end
  call_chunked('RPUSH', T .. 'gc', tree.gc)
  return records
end
