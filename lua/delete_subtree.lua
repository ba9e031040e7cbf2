--[[
  Detach a node and its whole subtree, and correct every ancestor at once.
  The subtree is unreachable when this call returns (its records are only
  valid under their parents' ids); its storage is queued for
  collect_garbage.lua.

  Input:
    KEYS[1]   record hash of the tree, '<prefix>:{<root>}:t'
    ARGV[1]   now, milliseconds since the epoch
    ARGV[2]   eta time constant, milliseconds
    ARGV[3]   key of the node to delete, relative to the root ('' the root)
    ARGV[4]   1 to return the ancestors' new records, 0 not to
    ARGV[5]   live feed: "PUBLISH", "SPUBLISH" or "" (see apply_updates.lua); a
              watched tree's channel gets msgpack { now, { key1, record1, ... }, key }
              (keys relative to the root)
    ARGV[6]   "" to delete unconditionally, or an update time (ms): delete only
              when the node's update_time is not later (the retention sweep:
              a tree written since it was judged old stays)
    ARGV[7]   most progress-history samples a node keeps (0 or absent: none),
              ARGV[8] the finest step (ms), ARGV[9] "1" on a Redis Cluster,
              ARGV[10] since when under these settings (history.lua): the
              ancestors whose progress the delete changes take the samples
              it crosses, as an update's ancestors do
  Output:
    msgpack { found, changed }
      found    1 when the node existed and was detached, 0 when there was no
               such node, 2 when it was updated after ARGV[6] (kept)
      changed  flat array key1, record1, ...: every ancestor's new record
               (record.lua), keys relative to the root (empty when the root
               itself was deleted)
  Errors (before any write):
    bad-key <key>      the key is not a valid relative key
    bad-record <key>   a stored record of another format
]]
local now = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local key = ARGV[3]
local snapshots = ARGV[4] == '1'
local feed = ARGV[5] or ''
local not_after = tonumber(ARGV[6] or '')
local history_samples = tonumber(ARGV[7] or '0')
local history_step = tonumber(ARGV[8] or '1000')

--@include prelude
--@include record
--@include tree
--@include rollup
--@include children
--@include write_tree
--@include watched
--@include history

bind()
if not history_samples or not history_step or history_step < 1 then
  return redis.error_reply('bad-batch ARGV malformed')
end
HIST_N, HIST_STEP, HIST_TOUCH = history_samples, history_step, ARGV[9] == '1'
HIST_SINCE = tonumber(ARGV[10] or '0') or 0

local root = string.match(KEYS[1], '{(.*)}:t$')
if root == nil or sfind(key, '..', 1, true) or sbyte(key, 1) == 46 or sbyte(key, -1) == 46 then
  return redis.error_reply('bad-key ' .. key)
end
local tree = new_tree(KEYS[1], root)
local ks = path_of(key)
local n = #ks
fetch_paths(tree, { ks })
if intact(tree, ks) < n then return cmsgpack.pack({ 0, {} }) end
local s = read_node(tree.raw[key], key)
if not_after and s[UPD] > not_after then return cmsgpack.pack({ 2, {} }) end

local gc = { gc_entry(tree.raw[key], key) }
local written = {}
if n > 1 then
  -- The parent loses the child: its count, weight, weighted progress and
  -- status; then every ancestor above it follows.  Their changes are
  -- computed first, and the progress-history samples they cross planned
  -- (which reads), before anything is written.
  local pkey = ks[n - 1]
  local parent = read_node(tree.raw[pkey], pkey)
  local p, hp0 = s[P], parent[P]
  local pp0 = hp0 == hp0 and hp0 or 0
  local due = history_samples > 0 and { n = 0 } or nil
  if due then history_due(due, tree.T, parent[ID], parent[START], parent[UPD], hp0, now) end
  parent[NC] = parent[NC] - 1
  parent[SW] = parent[SW] - s[WM]
  parent[SWP], parent[SWPC] = add_compensated(parent[SWP], parent[SWPC], -(s[WM] * (p == p and p or 0)))
  parent[COUNTS] = recount(parent[COUNTS], s[STATUS], false)
  if parent[SW] <= 0 then parent[SW], parent[SWP], parent[SWPC] = 0, 0, 0 end
  parent[P] = from_sums(parent[SW], parent[SWP], parent[SWPC], parent[OWN])
  finish_node(parent, pp0, parent[STATUS], now, tau)
  local pp1 = parent[P]
  if pp1 ~= pp1 then pp1 = 0 end
  local recs = {}
  for j = 1, n - 2 do recs[j] = tree.raw[ks[j]] end
  rise(recs, n - 1, parent[PID], parent[WM], pp0, parent[STATUS], parent[WM], pp1, parent[STATUS], now, tau,
    due, tree.T)
  local histories = due and due.n > 0 and plan_histories(due, now)
  rcall('DEL', tree.T .. 'h:' .. sformat('%d', s[ID])) -- its progress history (history.lua)
  rcall('HDEL', KEYS[1], key)
  remove_child(tree.T, parent, n == 2 and key or ssub(key, #pkey + 2), s[STATUS])
  tree.raw[pkey] = pack_node(parent)
  mark(tree, pkey, 1)
  for j = n - 2, 1, -1 do
    tree.raw[ks[j]] = recs[j]
    mark(tree, ks[j], 1)
  end
  tree.gc = gc
  written = write_tree(tree)
  if histories then write_histories(histories) end
else
  rcall('DEL', tree.T .. 'h:' .. sformat('%d', s[ID]))
  rcall('HDEL', KEYS[1], key)
  call_chunked('RPUSH', tree.T .. 'gc', gc)
end
if watched(feed, tree.T) then rcall(feed, tree.T .. 'f', cmsgpack.pack({ now, written, key })) end
return cmsgpack.pack({ 1, snapshots and written or {} })
