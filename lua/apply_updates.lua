--[[
  Apply a batch of progress updates to one or more trees, one update after the
  other in batch order, each rolled up its node's path to the root.  Every
  node a call touches is read once and written once.

  Input:
    KEYS[i]   record hash of the i-th tree of the batch, '<prefix>:{<root>}:t'.
              Every other key of that tree is derived from it and shares its
              hash slot (see engine/keys.py for the layout).
    ARGV[1]   now, milliseconds since the epoch (the server's clock)
    ARGV[2]   eta time constant, milliseconds
    ARGV[3]   most client fields one node may hold
    ARGV[4]   the batch, packed: for each KEYS[i] in order, the number of its
              updates (uint32), then each update as check_update.lua reads it
              (its seq: 1-based position in this call; its path from the
              root, split).  Updates of one tree are applied in the order
              given; a tree's only update of the common kind takes
              apply_single (apply_update.lua), any other a copy of the tree.
    ARGV[5]   "1": record completion events in each tree's outbox hash
              '<prefix>:{<root>}:out' and return them; "0": neither
    ARGV[6]   live feed: "PUBLISH" or "SPUBLISH" (sharded, Redis 7) to publish
              the changes of each tree that is watched (its key
              '<prefix>:{<root>}:w' exists) on its channel '<prefix>:{<root>}:f';
              "" to publish nothing
              message: msgpack { now, { key1, record1, ... }, false } (keys
              relative to the root)
    ARGV[7]   most nodes a tree may hold (0: no cap): an update that would
              create nodes past it is refused (status 3)
    ARGV[8]   which records to return: 0 none, 1 those of updated nodes,
              2 those of every node that changed
    ARGV[9]   most progress-history samples a node keeps (0 or absent: no
              history), ARGV[10] the finest step between them, ms, ARGV[11]
              "1" on a Redis Cluster (history.lua; '<prefix>:{<root>}:h:<id>'),
              ARGV[12] since when (ms) histories are written under these
              settings (0 or absent: always)
  Output:
    msgpack { statuses, changed, events, created }
      statuses  one per update, by seq: 1 applied, 0 ignored as stale,
                2 refused (the node would hold too many client fields),
                3 refused (the tree would hold more than ARGV[7] nodes)
      changed   one entry per KEYS[i]: flat array key1, record1, ... (keys
                relative to the root; records in record.lua's format)
      events    flat array id1, event1, ...: a node whose status became
                finished, failed or canceled in this call; id is
                '<key>@<end ms>' (full key), event a msgpack array
                { key, status, start_time, end_time, run_time|false } (ms,
                full key; run_time: when the node first ran)
      created   the i of each tree whose root this call created
  Errors (before any write but node ids taken from a tree's counter):
    bad-batch <reason>          ARGV[4] malformed or not aligned with KEYS
    bad-key <key>               node key not valid
    bad-progress <key>          progress not absent, null or a number in [0, 1]
    bad-weight <key>            weight not 0 or a number in [0.001, 1e6]
    bad-status <key>            status not a non-empty string
    bad-value <key> msg         msg not JSON text of a string
    reserved-field <key> <name> a name starting with '_' or a server field
    bad-record <key>            a stored record of another format
]]
local now = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local max_fields = tonumber(ARGV[3])
local batch = ARGV[4]
local record_events = ARGV[5] == '1'
local feed = ARGV[6]
local max_nodes = tonumber(ARGV[7])
local mode = tonumber(ARGV[8])
local history_samples = tonumber(ARGV[9] or '0')
local history_step = tonumber(ARGV[10] or '1000')

--@include prelude
--@include check_update
--@include record
--@include tree
--@include apply_update
--@include write_tree
--@include history

bind()

if not mode or not history_samples or not history_step or history_step < 1 then
  return redis.error_reply('bad-batch ARGV malformed')
end
HIST_N, HIST_STEP, HIST_TOUCH = history_samples, history_step, ARGV[11] == '1'
HIST_SINCE = tonumber(ARGV[12] or '0') or 0
-- The nodes whose progress history takes a sample in this call (history.lua).
local due = history_samples > 0 and { n = 0 } or nil

-- Every update of every tree is read and checked before the first write.
local function read_batch()
  local trees, pos = {}, 1
  for i = 1, #KEYS do
    local count
    count, pos = sunpack('<I4', batch, pos)
    local updates = {}
    for j = 1, count do
      local u, after = read_update(batch, pos)
      if not u then return nil, after end
      updates[j], pos = u, after
    end
    trees[i] = updates
  end
  if pos ~= #batch + 1 then return nil, 'bad-batch the batch does not match KEYS' end
  return trees
end
local good, trees, err = pcall(read_batch)
if not good then return redis.error_reply('bad-batch truncated batch') end
if not trees then return redis.error_reply(err) end

local statuses, ended = {}, {}
-- Each tree's changes, computed before anything is written: a tree with one
-- update of the common kind as apply_single's result (single[i]), any other
-- as its copy (tree.lua) with every update applied (trees[i]).
-- bases[i] is the tree's key prefix '<prefix>:{<root>}:', cut once.
local single, bases = {}, {}
for i, updates in ipairs(trees) do
  local done, fetched
  bases[i] = ssub(KEYS[i], 1, -2)
  if #updates == 1 then
    done, fetched = apply_single(bases[i], updates[1], max_fields, max_nodes, now, tau, due)
  end
  if done then
    statuses[updates[1][1]] = 1
    single[i] = done
    if done[4] then ended[#ended + 1] = { { T = done[1] }, done[2][#done[2]], done[4] } end
    trees[i] = false
  else
    local tree = new_tree(KEYS[i])
    if fetched then
      local ks = updates[1][8]
      for j = 1, #ks do tree.raw[ks[j]] = fetched[j] end
    elseif #updates == 1 then
      fetch_paths(tree, { updates[1][8] })
    else
      local paths = {}
      for j, u in ipairs(updates) do paths[j] = u[8] end
      fetch_paths(tree, paths)
    end
    for _, u in ipairs(updates) do
      statuses[u[1]] = apply_update(tree, u, max_fields, max_nodes, now, tau, ended, due)
    end
    trees[i] = tree
  end
end

-- On a Redis Cluster, while the slot of a tree migrates, a key that is not on
-- this node (moved already, or not created yet) cannot be touched here: the
-- access fails the call.  The records were read above; touch every other key
-- the writes below use first, so that such a call fails before it has written
-- anything, and is retried whole (engine/cluster.py).  Rare keys only: the
-- children of wide parents and their status indexes, the garbage list, the
-- events outbox, replaced leftovers' histories (history.lua touches its own).
for _, tree in ipairs(trees) do
  if tree and #tree.dirty > 0 then
    if tree.born then
      for pid in pairs(tree.born) do rcall('EXISTS', tree.T .. 'c:' .. sformat('%d', pid)) end
    end
    if tree.moved then resolve_moved(tree) end
    if tree.gc then rcall('EXISTS', tree.T .. 'gc') end
    if tree.replaced then
      for _, key in ipairs(tree.replaced) do rcall('EXISTS', key) end
    end
  end
end
if record_events then
  for _, e in ipairs(ended) do rcall('EXISTS', e[1].T .. 'out') end
end
local histories = due and due.n > 0 and plan_histories(due, now)

local changed, created = {}, {}
-- The trees watched by a live feed: one MGET for the whole call.
local watched = {}
if feed ~= '' then
  local marks = {}
  for i = 1, #KEYS do marks[i] = bases[i] .. 'w' end
  for i = 1, #marks, 1000 do
    local got = rcall('MGET', unpack(marks, i, math.min(i + 999, #marks)))
    for j = 1, #got do watched[i + j - 1] = got[j] end
  end
end
for i = 1, #KEYS do
  local out, written, tree = {}, nil, trees[i]
  local done = single[i]
  if done then
    write_single(done)
    if watched[i] or mode == 2 then written = single_written(done) end
    if mode == 1 then out = { done[2][#done[2]], done[3][#done[2]] } end
  elseif #tree.dirty > 0 then
    written = write_tree(tree)
    if tree.new_root then created[#created + 1] = i end
    if mode == 1 then
      for j, key in ipairs(tree.dirty) do
        if tree.mark[key] == 2 then
          out[#out + 1] = key
          out[#out + 1] = written[2 * j]
        end
      end
    end
  end
  if written then
    if watched[i] then rcall(feed, bases[i] .. 'f', cmsgpack.pack({ now, written, false })) end
    if mode == 2 then out = written end
  end
  changed[i] = out
end
if histories then write_histories(histories) end

-- Completion events: each node whose status entered finished, failed or
-- canceled, once per id (an entry and its end time).
local events, seen, outboxes = {}, {}, {}
if record_events then
  for _, e in ipairs(ended) do
    local tree, key, s = e[1], e[2], e[3]
    local root = string.match(tree.T, '{(.*)}:$')
    local full = key == '' and root or root .. '.' .. key
    local id = full .. '@' .. sformat('%d', s[FIN])
    if not seen[id] then
      seen[id] = true
      local began = s[BEGAN]
      local event = cmsgpack.pack({ full, s[STATUS], s[START], s[FIN], began == began and began or false })
      events[#events + 1] = id
      events[#events + 1] = event
      local box = outboxes[tree]
      if box == nil then
        box = {}
        outboxes[tree] = box
      end
      box[#box + 1] = id
      box[#box + 1] = event
    end
  end
  for tree, box in pairs(outboxes) do call_chunked('HSET', tree.T .. 'out', box, 2) end
end
return cmsgpack.pack({ statuses, changed, events, created })
