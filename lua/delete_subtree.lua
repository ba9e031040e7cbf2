--[[
  Detach a node and its whole subtree, and correct every ancestor at once.
  The subtree becomes unreachable in this call (its nodes are addressed
  through its id); its storage is queued for collect_garbage.lua.

  Input:
    KEYS[1]   root hash of the tree, '<prefix>:{<root>}:root'
    ARGV[1]   now, milliseconds since the epoch
    ARGV[2]   eta time constant, milliseconds
    ARGV[3]   key of the node to delete (the tree root or a node below it)
  Output:
    msgpack { found, changed }
      found    1 when the node existed and was detached, 0 otherwise
      changed  flat array key1, json1, ...: every ancestor's new state,
               ancestors first (empty when the root itself was deleted)
  Errors (before any write):
    bad-key <key>   the key is not in this tree
]]
local now = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local key = ARGV[3]

--@include load_node
--@include rollup
--@include write_node
--@include node_json

local root = string.match(KEYS[1], '{(.*)}:root$')
if root == nil or not (key == root or string.sub(key, 1, #root + 1) == root .. '.') then
  return redis.error_reply('bad-key ' .. key)
end
local tree = { T = string.sub(KEYS[1], 1, -5), root = root, nodes = {}, levels = {}, deepest = 0 }
local s = load_node(tree, key, false)
if s == nil then return cmsgpack.pack({ 0, {} }) end

redis.call('DEL', s.h)
redis.call('RPUSH', tree.T .. 'gc', s.id)
local out = {}
local parent = s.parent
if parent then
  redis.call('ZREM', tree.T .. 'c:' .. parent.id, s.seg)
  parent.dsw = parent.dsw - s.wm0
  parent.dswp = parent.dswp - s.wm0 * s.p0
  count_status(parent, s.status0, -1)
  parent.below = 1
  for _, a in ipairs(rollup(tree, now, tau)) do
    write_node(tree, a)
    out[#out + 1] = a.key
    out[#out + 1] = node_json(a.key, a.f)
  end
end
return cmsgpack.pack({ 1, out })
