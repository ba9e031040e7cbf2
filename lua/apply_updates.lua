--[[
  Apply a batch of progress updates to one or more trees and roll each tree's
  changes up to its root: every touched node is read once and written once.

  Input:
    KEYS[i]   record hash of the i-th tree of the batch, '<prefix>:{<root>}:t'.
              Every other key of that tree is derived from it and shares its
              hash slot (see engine/keys.py for the layout).
    ARGV[1]   now, milliseconds since the epoch (the server's clock)
    ARGV[2]   eta time constant, milliseconds
    ARGV[3]   most client fields one node may hold
    ARGV[4]   msgpack array, one entry per KEYS[i]: { root_key, { update, ... }, snapshots }
                update = { seq, node_key, ts|false, name1, json1, name2, json2, ... }
                  seq    1-based position of the update in this call
                  ts     producer timestamp in ms, or false
                  jsonN  the field's new value as JSON text; "" removes the field
                snapshots  which nodes' records to return: 0 none, 1 the
                           updated nodes, 2 every node whose state changed
              Updates of one node are applied in the order given.
    ARGV[5]   "1": record completion events in each tree's outbox hash
              '<prefix>:{<root>}:out' and return them; "0": neither
    ARGV[6]   live feed: "PUBLISH" or "SPUBLISH" (sharded, Redis 7) to publish
              the changes of each tree that is watched (its key
              '<prefix>:{<root>}:w' exists) on its channel '<prefix>:{<root>}:f';
              "" to publish nothing
              message: msgpack { now, { key1, record1, ... }, false }
    ARGV[7]   most nodes a tree may hold (0: no cap): an update that would
              create nodes past it is refused (status 3)
  Output:
    msgpack { statuses, changed, events }
      statuses  one per update, by seq: 1 applied, 0 ignored as stale,
                2 refused (the node would hold too many fields),
                3 refused (the tree would hold more than ARGV[7] nodes)
      changed   flat array key1, record1, key2, record2, ...: the stored
                record (record_format.lua) of each node asked for, ancestors
                first within a tree
      events    flat array id1, event1, ...: a node whose status became
                finished, failed or canceled in this call; id is
                '<key>@<end ms>', event a msgpack array
                { key, status, start_time, end_time } (ms)
  Errors (before any write):
    bad-batch <reason>          ARGV[4] malformed or not aligned with KEYS
    bad-key <key>               node key not valid or not in its tree
    bad-progress <key>          progress not a number in [0, 1]
    bad-weight <key>            weight not 0 or a number in [0.001, 1e6]
    bad-status <key>            status not a non-empty JSON string
    reserved-field <key> <name> a name starting with '_' or a server field
]]
local now = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local max_fields = tonumber(ARGV[3])
local ok, batch = pcall(cmsgpack.unpack, ARGV[4])
local record_events = ARGV[5] == '1'
local feed = ARGV[6] or ''
local max_nodes = tonumber(ARGV[7] or '0')

--@include check_update
--@include path_keys
--@include fetch_records
--@include load_node
--@include apply_update
--@include nodes_to_create
--@include rollup
--@include write_tree
--@include new_tree
--@include publish_if_watched

if not ok or type(batch) ~= 'table' or #batch ~= #KEYS then
  return redis.error_reply('bad-batch packed batch does not match KEYS')
end
for i, entry in ipairs(batch) do
  local root = entry[1]
  if type(root) ~= 'string' or type(entry[2]) ~= 'table' or type(entry[3]) ~= 'number'
      or string.sub(KEYS[i], -(#root + 4)) ~= '{' .. root .. '}:t' then
    return redis.error_reply('bad-batch tree ' .. i .. ' does not match its key')
  end
  local prefix = root .. '.'
  for _, u in ipairs(entry[2]) do
    local err = check_update(root, prefix, u)
    if err then return redis.error_reply(err) end
  end
end

local statuses, trees = {}, {}
for i, entry in ipairs(batch) do
  local tree = new_tree(KEYS[i], entry[1])
  local keys = {}
  for _, u in ipairs(entry[2]) do path_keys(tree, u[2], keys) end
  fetch_records(tree, keys)
  local room = max_nodes > 0 and max_nodes - redis.call('HLEN', tree.T .. 't') or nil
  for _, u in ipairs(entry[2]) do
    local new = room and nodes_to_create(tree, u[2]) or 0
    if room and new > room then
      statuses[u[1]] = 3
    else
      if room then room = room - new end
      statuses[u[1]] = apply_update(load_node(tree, u[2], true), u, max_fields)
    end
  end
  tree.changed = rollup(tree, now, tau)
  trees[i] = tree
end

local out, events = {}, {}
for i, tree in ipairs(trees) do
  local written = write_tree(tree, tree.changed)
  if #written > 0 then publish_if_watched(feed, tree.T, cmsgpack.pack({ now, written, false })) end
  if record_events and #tree.ended > 0 then
    local outbox = {}
    for _, s in ipairs(tree.ended) do
      local id = s[KEY] .. '@' .. string.format('%d', s[FIN])
      local event = cmsgpack.pack({ s[KEY], s[STATUS], s[START], s[FIN] })
      outbox[#outbox + 1] = id
      outbox[#outbox + 1] = event
      events[#events + 1] = id
      events[#events + 1] = event
    end
    call_chunked('HSET', tree.T .. 'out', outbox, 2)
  end
  local mode = batch[i][3]
  if mode > 0 then
    for j, s in ipairs(tree.changed) do
      if mode == 2 or s[APPLIED] > 0 then
        out[#out + 1] = written[2 * j - 1]
        out[#out + 1] = written[2 * j]
      end
    end
  end
end
return cmsgpack.pack({ statuses, out, events })
