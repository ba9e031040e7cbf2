--[[
  Index trees (or inner namespaces) under a namespace, so they can be listed
  in first-seen order and by their last update.

  Input:
    KEYS[1]   first-seen index of the namespace, '<prefix>:{<ns>}:ns';
              the recency index ('..r') and the first-seen counter ('..n')
              are derived from it
    ARGV[1]   now, milliseconds since the epoch
    ARGV[2..] keys of children updated (or created) since they were last indexed
  Output:
    number of children indexed for the first time
]]
local first = KEYS[1]
local recent = first .. 'r'
local counter = first .. 'n'
local now = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', first, ARGV[i]) == false then
    redis.call('ZADD', first, redis.call('INCR', counter), ARGV[i])
    added = added + 1
  end
  redis.call('ZADD', recent, 'GT', now, ARGV[i])
end
return added
