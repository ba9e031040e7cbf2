-- Add `key` and each of its ancestors up to the tree root to the list `out`,
-- each once, and note each one's parent key and last segment in tree.up
-- (key -> { parent_key, segment }) so no key is split twice.
local function path_keys(tree, key, out)
  local up = tree.up
  while up[key] == nil do
    out[#out + 1] = key
    if key == tree.root then
      up[key] = false
      return
    end
    local pkey, seg = string.match(key, '^(.+)%.([^.]+)$')
    up[key] = { pkey, seg }
    key = pkey
  end
end
