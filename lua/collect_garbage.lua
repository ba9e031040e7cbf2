--[[
  Free the storage of detached subtrees of one tree, a bounded chunk at a time.

  Input:
    KEYS[1]   record hash of the tree, '<prefix>:{<root>}:t'; the tree's
              'gc' list (entries '<id> <key>': detached nodes whose children
              are still stored), 'c:<id>' children indexes and 'ids'
              counter are derived from it
    ARGV[1]   budget: most nodes to free in this call
  Output:
    number of entries still queued; 0 means the tree has no garbage left
    (and when its root is gone too, its id counter is dropped)
]]
local t = KEYS[1]
local T = string.sub(t, 1, -2)
local root = string.match(t, '{(.*)}:t$')
local budget = tonumber(ARGV[1])
local gc = T .. 'gc'

while budget > 0 do
  local entry = redis.call('LINDEX', gc, 0)
  if not entry then break end
  local id, key = string.match(entry, '^(%d+) (.*)$')
  local popped = redis.call('ZPOPMIN', T .. 'c:' .. id, budget)
  if #popped == 0 then
    redis.call('LPOP', gc)
  else
    for j = 1, #popped, 2 do
      local child = key .. '.' .. popped[j]
      local raw = redis.call('HGET', t, child)
      if raw then
        local cid, pid = struct.unpack('<dd', raw)
        -- A record under another parent id belongs to a newer node at the
        -- same key; whoever replaced the leftover queued it already.
        if pid == tonumber(id) then
          local c = string.format('%d', cid)
          redis.call('HDEL', t, child)
          if redis.call('EXISTS', T .. 'c:' .. c) == 1 then
            redis.call('RPUSH', gc, c .. ' ' .. child)
          end
        end
      end
    end
    budget = budget - #popped / 2
  end
end
local left = redis.call('LLEN', gc)
if left == 0 and redis.call('HEXISTS', t, root) == 0 then
  redis.call('DEL', T .. 'ids')
end
return left
