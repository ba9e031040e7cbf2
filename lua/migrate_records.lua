--[[
  Bring one tree's records from format 2 to format 3, a bounded chunk at a
  time: format 2 kept a parent's record whole; format 3 keeps its hot part
  in the record hash and the rest in the hash '<prefix>:{<root>}:p'
  (record.lua).  Leaves are
  the same in both.  Records already in format 3 are left as they are, so
  running it twice, or beside a server writing format 3, is harmless.

  Input:
    KEYS[1]   record hash of the tree, '<prefix>:{<root>}:t'
    ARGV[1]   HSCAN cursor ('0' to start)
    ARGV[2]   how many fields to look at (the HSCAN COUNT hint)
  Output:
    { next cursor ('0': done), records split }
]]
--@include prelude
--@include record

bind()

local t = KEYS[1]
local cold = ssub(t, 1, -2) .. 'p'
local page = rcall('HSCAN', t, ARGV[1], 'COUNT', tonumber(ARGV[2]))
local split = 0
local items = page[2]
for j = 1, #items, 2 do
  local key, rec = items[j], items[j + 1]
  if #rec > HOT_BYTES and sbyte(rec, 1) == PARENT then
    rcall('HSET', cold, key, ssub(rec, HOT_BYTES + 1))
    rcall('HSET', t, key, ssub(rec, 1, HOT_BYTES))
    split = split + 1
  end
end
return { page[1], split }
