-- The per-call state of tree `root` whose record hash is `t` (see load_node.lua).
local function new_tree(t, root)
  return { T = string.sub(t, 1, -2), root = root, raw = {}, up = {}, nodes = {},
           levels = {}, deepest = 0, gc = {}, ended = {} }
end
