--@include hash_fields
--@include weight_units
--@include status_of
-- The state of node `key` of `tree`, loaded once per call together with every
-- ancestor up to the tree root (tree.nodes caches them by key, tree.levels
-- groups them by depth below the root).
--   tree     { T = '<prefix>:{<root>}:', root = '<root key>', nodes = {}, levels = {} }
--   create   true: a missing node (and missing ancestors) is created: it gets
--            an id from the tree's counter and the next first-seen position
--            under its parent.  false: a missing node returns nil.
-- A state holds the hash key `h`, the fields `f` (name -> stored text), what
-- the node contributed to its parent when loaded (`wm0` weight units, `p0`
-- progress, `status0`), and the bookkeeping of the roll-up (see rollup.lua).
local function load_node(tree, key, create)
  local s = tree.nodes[key]
  if s then return s end
  local parent, seg, h
  if key == tree.root then
    h = tree.T .. 'root'
  else
    local pkey
    pkey, seg = string.match(key, '^(.+)%.([^.]+)$')
    parent = load_node(tree, pkey, create)
    if parent == nil then return nil end
    h = tree.T .. 'n:' .. parent.id .. '/' .. seg
  end
  -- Nothing can exist below a node created in this call.
  local f = (parent and parent.new) and {} or hash_fields(h)
  local new = f._id == nil
  if new and not create then return nil end
  s = { key = key, seg = seg, parent = parent, h = h, f = f, new = new, dirty = {},
        depth = parent and parent.depth + 1 or 0,
        applied = 0, below = 0, posted = 0, dsw = 0, dswp = 0 }
  if new then
    s.id = tostring(redis.call('INCR', tree.T .. 'ids'))
    f._id = s.id
    s.dirty._id = true
    if parent then
      local n = (tonumber(parent.f._n) or 0) + 1
      parent.f._n = tostring(n)
      parent.dirty._n = true
      s.order = n
    end
  else
    s.id = f._id
    s.wm0 = weight_units(f.weight)
    s.p0 = tonumber(f.progress) or 0
    s.status0 = status_of(f.status)
  end
  tree.nodes[key] = s
  local level = tree.levels[s.depth]
  if level == nil then
    level = {}
    tree.levels[s.depth] = level
  end
  level[#level + 1] = s
  if s.depth > tree.deepest then tree.deepest = s.depth end
  return s
end
