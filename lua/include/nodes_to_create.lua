-- How many nodes loading `key` of `tree` with create=true would create: the
-- key and its ancestors that are neither loaded in this call nor stored.  A
-- stored leftover of a deleted subtree counts as stored, so the tree's node
-- cap is approximate while its garbage is being collected.
local function nodes_to_create(tree, key)
  local n = 0
  while key and tree.nodes[key] == nil and not tree.raw[key] do
    n = n + 1
    if key == tree.root then break end
    key = tree.up[key][1] -- path_keys split every key of the call already
  end
  return n
end
