--[[
  Index trees (or inner namespaces) under a namespace, so they can be listed
  in first-seen order and by their last update.

  Input:
    KEYS[1]   first-seen index of the namespace, '<prefix>:{<ns>}:ns';
              the recency index ('..r') and the first-seen counter ('..n')
              are derived from it
    ARGV[1]   now, milliseconds since the epoch
    ARGV[2]   live feed: "PUBLISH", "SPUBLISH" or "" (see apply_updates.lua); when
              the namespace is watched ('<prefix>:{<ns>}:w' exists) its channel
              '<prefix>:{<ns>}:f' gets msgpack { now, { child1, ... }, false }
    ARGV[3..] keys of children updated in this batch
  Output:
    number of children indexed for the first time
]]
--@include publish_if_watched

local first = KEYS[1]
local recent = first .. 'r'
local counter = first .. 'n'
local now = tonumber(ARGV[1])
local feed = ARGV[2]
local added = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', first, ARGV[i]) == false then
    redis.call('ZADD', first, redis.call('INCR', counter), ARGV[i])
    added = added + 1
  end
  redis.call('ZADD', recent, 'GT', now, ARGV[i])
end
if feed ~= '' then
  local children = {}
  for i = 3, #ARGV do children[#children + 1] = ARGV[i] end
  publish_if_watched(feed, string.sub(first, 1, -3), cmsgpack.pack({ now, children, false }))
end
return added
