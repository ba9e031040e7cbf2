-- Write a changed node state: its dirty fields (HSET, or HDEL for removed
-- ones) and, when it is new, its entry in its parent's children index.
local function write_node(tree, s)
  local sets, dels = {}, {}
  for name in pairs(s.dirty) do
    local v = s.f[name]
    if v == nil then dels[#dels + 1] = name else
      sets[#sets + 1] = name
      sets[#sets + 1] = v
    end
  end
  if #sets > 0 then redis.call('HSET', s.h, unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', s.h, unpack(dels)) end
  if s.new and s.parent then
    redis.call('ZADD', tree.T .. 'c:' .. s.parent.id, s.order, s.seg)
  end
end
