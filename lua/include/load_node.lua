--@include slots
--@include unpack_record
--@include new_state
-- The state of node `key` of `tree`, loaded once per call together with every
-- ancestor up to the tree root (tree.nodes caches them by key, tree.levels
-- groups them by depth below the root).
--   tree    { T = '<prefix>:{<root>}:', root = '<root key>', raw = {}, up = {},
--             nodes = {}, levels = {}, deepest = 0, gc = {} }
--           tree.raw holds records fetched ahead (fetch_records) and tree.up
--           the keys split ahead (path_keys); anything else is done here.
--   create  true: a missing node (and missing ancestors) is created, with an
--           id from the tree's counter and the next first-seen position
--           under its parent.  false: a missing node returns nil.
-- A record is only valid under its parent's id: one left behind by a deleted
-- subtree counts as missing, and when a new node replaces it, its id and key
-- are queued in tree.gc so that its own leftovers get freed.
local function load_node(tree, key, create)
  local s = tree.nodes[key]
  if s then return s end
  local parent, seg, depth = nil, nil, 0
  if key ~= tree.root then
    local up = tree.up[key]
    local pkey
    if up then pkey, seg = up[1], up[2] else pkey, seg = string.match(key, '^(.+)%.([^.]+)$') end
    parent = load_node(tree, pkey, create)
    if parent == nil then return nil end
    depth = parent[DEPTH] + 1
  end
  local raw = tree.raw[key]
  if raw == nil then raw = redis.call('HGET', tree.T .. 't', key) end
  if raw then
    s = unpack_record(raw, key, seg, parent, depth)
    local valid
    if parent then valid = not parent[NEW] and s[PID] == parent[ID] else valid = s[PID] == 0 end
    if not valid then
      if create and s[NC] > 0 then tree.gc[#tree.gc + 1] = string.format('%d', s[ID]) .. ' ' .. key end
      s = nil
    end
  end
  if s == nil then
    if not create then return nil end
    -- Ids come from the tree's counter in blocks of 64, one INCRBY per block.
    if tree.next_id == nil or tree.next_id > tree.last_id then
      tree.last_id = redis.call('INCRBY', tree.T .. 'ids', 64)
      tree.next_id = tree.last_id - 63
    end
    s = new_state(tree.next_id, parent and parent[ID] or 0, key, seg, parent, depth)
    tree.next_id = tree.next_id + 1
    if parent then
      parent[N] = parent[N] + 1
      parent[NC] = parent[NC] + 1
      s[ORDER] = parent[N]
    end
  end
  tree.nodes[key] = s
  local level = tree.levels[depth]
  if level == nil then
    level = {}
    tree.levels[depth] = level
  end
  level[#level + 1] = s
  if depth > tree.deepest then tree.deepest = depth end
  return s
end
