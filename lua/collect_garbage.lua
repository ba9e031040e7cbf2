--[[
  Free the storage of detached subtrees of one tree, a bounded chunk at a time.

  Input:
    KEYS[1]   record hash of the tree, '<prefix>:{<root>}:t'; the tree's
              'gc' list, the 'c:<id>' children and 's:<id>' status indexes of
              wide nodes and the 'ids' counter are derived from it.  A gc entry names a detached
              node whose children are still stored: '<id> <key>' when they
              are in 'c:<id>', '<id> <key>|<seg> <seg> ...' when its record
              listed them (children.lua); keys relative to the root.
    ARGV[1]   budget: most nodes to free in this call (an entry of listed
              children is taken whole: at most 64 more)
  Output:
    number of entries still queued; 0 means the tree has no garbage left
    (and when its root is gone too, its id counter is dropped)
  Errors:
    bad-record   a stored record of another format
]]
--@include prelude
--@include record
--@include children

bind()

local t = KEYS[1]
local T = ssub(t, 1, -2)
local budget = tonumber(ARGV[1])
local gc = T .. 'gc'

-- Free child (the node at key child, if its record is still the one under
-- parent id pid), queueing its own children.
local function free(child, pid)
  local raw = rcall('HGET', t, child)
  if not raw then return end
  local id, rpid = record_links(raw, child)
  -- A record under another parent id belongs to a newer node at the same
  -- key; whoever replaced the leftover queued it already.
  if rpid ~= pid then return end
  rcall('HDEL', t, child)
  rcall('DEL', T .. 'h:' .. sformat('%d', id)) -- its progress history (history.lua)
  local entry = gc_entry(raw, child)
  if entry then rcall('RPUSH', gc, entry) end
end

while budget > 0 do
  local entry = rcall('LINDEX', gc, 0)
  if not entry then break end
  local id, key, listed = string.match(entry, '^(%d+) ([^|]*)|?(.*)$')
  local pid, prefix = tonumber(id), key == '' and '' or key .. '.'
  if string.find(entry, '|', 1, true) then
    for seg in string.gmatch(listed, '[^ ]+') do
      free(prefix .. seg, pid)
      budget = budget - 1
    end
    rcall('LPOP', gc)
  else
    local popped = rcall('ZPOPMIN', T .. 'c:' .. id, budget)
    if #popped == 0 then
      rcall('UNLINK', T .. 's:' .. id) -- its status index (children.lua), freed off the main thread
      rcall('LPOP', gc)
    else
      for j = 1, #popped, 2 do free(prefix .. popped[j], pid) end
      budget = budget - #popped / 2
    end
  end
end
local left = rcall('LLEN', gc)
if left == 0 and rcall('HEXISTS', t, '') == 0 then
  rcall('DEL', T .. 'ids', T .. 'lc') -- the tree is gone: its id counter, its lifecycle state (server/lifecycle.py)
end
return left
