--[[
  List one tree in every namespace above it if the call before this one, in
  the same round trip, wrote it: the write path's way to list a tree that
  its update may have just created without waiting for that call's answer
  (engine/namespaces.py).  A tree whose updates were all refused or stale
  was not written at now, so it is not listed (nor does its recency move).
  Only on a single Redis: the keys lie in different hash slots.

  Input:
    KEYS[1]   record hash of the tree, '<prefix>:{<root>}:t'
    KEYS[2..] first-seen index of each namespace that lists the tree or a
              namespace above it, '<prefix>:{<ns>}:ns', innermost first
    ARGV[1]   now, milliseconds since the epoch (the write call's)
    ARGV[2..] the child each of those namespaces lists (aligned with KEYS[2..])
  Output:
    1 when the tree was written at now and so listed, else 0
  Errors:
    bad-record <key>   the root's record is of another format
]]
--@include prelude
--@include record
--@include listing

bind()

local now = tonumber(ARGV[1])
local root = rcall('HGET', KEYS[1], '')
if not root then return 0 end
if #root < 37 or (sbyte(root, 1) ~= LEAF and sbyte(root, 1) ~= PARENT) then
  return redis.error_reply(bad_record(KEYS[1]))
end
-- update_time: the third double after kind, id, pid and weight (record.lua)
if sunpack('<d', root, 30) ~= now then return 0 end
for i = 2, #KEYS do list_child(KEYS[i], ARGV[i], now) end
return 1
