--[[
  Free the storage of detached subtrees of one tree, a bounded chunk at a time.

  Input:
    KEYS[1]   root hash of the tree, '<prefix>:{<root>}:root'; the tree's
              'gc' list (ids of detached nodes whose children are still
              stored), 'c:<id>' indexes, 'n:<id>/<seg>' hashes and 'ids'
              counter are derived from it
    ARGV[1]   budget: most node hashes to delete in this call
  Output:
    number of detached ids still queued; 0 means the tree has no garbage
    left (and when its root is gone too, its id counter is dropped)
]]
local T = string.sub(KEYS[1], 1, -5)
local budget = tonumber(ARGV[1])
local gc = T .. 'gc'

while budget > 0 do
  local id = redis.call('LINDEX', gc, 0)
  if not id then break end
  local c = T .. 'c:' .. id
  local popped = redis.call('ZPOPMIN', c, budget)
  if #popped == 0 then
    redis.call('LPOP', gc)
  else
    for j = 1, #popped, 2 do
      local h = T .. 'n:' .. id .. '/' .. popped[j]
      local child = redis.call('HGET', h, '_id')
      redis.call('DEL', h)
      if child and redis.call('EXISTS', T .. 'c:' .. child) == 1 then
        redis.call('RPUSH', gc, child)
      end
    end
    budget = budget - #popped / 2
  end
end
local left = redis.call('LLEN', gc)
if left == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', T .. 'ids')
end
return left
