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
--@include prelude
--@include listing

bind()

local now = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV do
  added = added + list_child(KEYS[1], ARGV[i], now)
end
return added
