--@include prelude
--@include record
--@include counts
--@include fetch
--@include path
--@include children
-- The per-call state of one tree, and the paths of its nodes.
--   tree = { T = '<prefix>:{<root>}:', raw = {}, mark = {},
--            dirty = {}, born = false, moved = false, gc = false, room = nil }
--   raw    key -> the node's record as it stands in this call (false: none);
--          filled by fetch_paths, written back by write_tree
--   mark   key -> 1 changed, 2 an update applied to it; dirty lists the
--          changed keys in the order they first changed
--   moved  id of a wide parent -> segment -> { position|nil, old status|false,
--          new status } of its children created or moved in status
--          (children.lua's status index)
--   born   id of a wide parent -> ZADD arguments (position, segment) of its new
--          children (children.lua)
--   gc     '<id> <key>' of leftovers replaced by new nodes (collect_garbage.lua)
--   room   how many more nodes the tree may hold (counted when first needed)
--   replaced  the progress-history keys of leftovers replaced by new nodes
--   new_root  true once this call created the tree's root
-- Keys here are relative to the tree root (record.lua).
local function new_tree(t)
  return { T = ssub(t, 1, -2), raw = {}, mark = {}, dirty = {}, born = false, moved = false, gc = false }
end

-- Note that key changed (how: 1, or 2 when an update applied to it).
local function mark(tree, key, how)
  local m = tree.mark[key]
  if m == nil then
    tree.dirty[#tree.dirty + 1] = key
    tree.mark[key] = how
  elseif how > m then
    tree.mark[key] = how
  end
end

-- How many keys of path ks, from the first, name nodes that exist: records
-- present, each under its parent's id (a record under another id is a
-- leftover of a deleted subtree).
local function intact(tree, ks)
  local raw, pid = tree.raw, 0
  for i, k in ipairs(ks) do
    local rec = raw[k]
    if not rec then return i - 1 end
    local id, p = record_links(rec, k)
    if p ~= pid then return i - 1 end
    pid = id
  end
  return #ks
end

-- Create the nodes ks[m..#ks] (the first m - 1 exist), each a leaf of
-- weight 1 without progress or status, counted in its parent's sums and
-- counts at once.  Ids come from the tree's counter, in blocks of 64.
-- Returns the state of the last one (its record is in tree.raw too).
local function create_path(tree, ks, m, now)
  local raw = tree.raw
  if m == 1 then tree.new_root = true end
  local parent = m > 1 and read_node(raw[ks[m - 1]], ks[m - 1]) or nil
  for i = m, #ks do
    local key = ks[i]
    local old = raw[key]
    if old then -- a leftover: whatever hangs below it must be freed too, and its history
      local entry = gc_entry(old, key)
      if entry then
        tree.gc = tree.gc or {}
        tree.gc[#tree.gc + 1] = entry
      end
      tree.replaced = tree.replaced or {}
      tree.replaced[#tree.replaced + 1] = tree.T .. 'h:' .. sformat('%d', (record_links(old, key)))
    end
    if tree.next_id == nil or tree.next_id > tree.last_id then
      tree.last_id = rcall('INCRBY', tree.T .. 'ids', 64)
      tree.next_id = tree.last_id - 63
    end
    local s = new_node(tree.next_id, parent and parent[ID] or 0, now)
    tree.next_id = tree.next_id + 1
    if parent then
      make_parent(parent)
      parent[N] = parent[N] + 1
      parent[NC] = parent[NC] + 1
      parent[SW] = parent[SW] + 1000
      parent[COUNTS] = recount(parent[COUNTS], false, '')
      tree.born = tree.born or {}
      add_child(tree, ks[i - 1], parent, parent[N], i == 2 and key or ssub(key, #ks[i - 1] + 2))
      raw[ks[i - 1]] = pack_node(parent)
      mark(tree, ks[i - 1], 1)
    end
    raw[key] = pack_node(s)
    mark(tree, key, 1)
    parent = s
  end
  return parent
end
