--[[
  Detach a node and its whole subtree, and correct every ancestor at once.
  The subtree is unreachable when this call returns (its records are only
  valid under their parents' ids); its storage is queued for
  collect_garbage.lua.

  Input:
    KEYS[1]   record hash of the tree, '<prefix>:{<root>}:t'
    ARGV[1]   now, milliseconds since the epoch
    ARGV[2]   eta time constant, milliseconds
    ARGV[3]   key of the node to delete (the tree root or a node below it)
    ARGV[4]   1 to return the ancestors' new records, 0 not to
    ARGV[5]   live feed: "PUBLISH", "SPUBLISH" or "" (see apply_updates.lua); a
              watched tree's channel gets msgpack { now, { key1, record1, ... }, key }
    ARGV[6]   "" to delete unconditionally, or an update time (ms): delete only
              when the node's update_time is not later (the retention sweep:
              a tree written since it was judged old stays)
  Output:
    msgpack { found, changed }
      found    1 when the node existed and was detached, 0 when there was no
               such node, 2 when it was updated after ARGV[6] (kept)
      changed  flat array key1, record1, ...: every ancestor's new record
               (record_format.lua), ancestors first (empty when the root
               itself was deleted)
  Errors (before any write):
    bad-key <key>   the key is not in this tree
]]
local now = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local key = ARGV[3]
local snapshots = ARGV[4] == '1'
local feed = ARGV[5] or ''
local not_after = tonumber(ARGV[6] or '')

--@include load_node
--@include rollup
--@include write_tree
--@include new_tree
--@include publish_if_watched

local root = string.match(KEYS[1], '{(.*)}:t$')
if root == nil or not (key == root or string.sub(key, 1, #root + 1) == root .. '.') then
  return redis.error_reply('bad-key ' .. key)
end
local tree = new_tree(KEYS[1], root)
local s = load_node(tree, key, false)
if s == nil then return cmsgpack.pack({ 0, {} }) end
if not_after and s[UPD] > not_after then return cmsgpack.pack({ 2, {} }) end

redis.call('HDEL', KEYS[1], key)
if s[NC] > 0 then tree.gc[#tree.gc + 1] = string.format('%d', s[ID]) .. ' ' .. key end
local out = {}
local parent = s[PARENT]
if parent then
  redis.call('ZREM', tree.T .. 'c:' .. string.format('%d', parent[ID]), s[SEG])
  parent[NC] = parent[NC] - 1
  parent[DSW] = parent[DSW] - s[WM0]
  add_compensated(parent, DSWP, DSWPC, -(s[WM0] * s[P0]))
  count_status(parent, s[STATUS0], -1)
  parent[BELOW] = 1
  local written = write_tree(tree, rollup(tree, now, tau))
  if snapshots then out = written end
  publish_if_watched(feed, tree.T, cmsgpack.pack({ now, written, key }))
else
  call_chunked('RPUSH', tree.T .. 'gc', tree.gc)
  publish_if_watched(feed, tree.T, cmsgpack.pack({ now, {}, key }))
end
return cmsgpack.pack({ 1, out })
