--@include prelude
-- The path of key (relative to its tree's root): the list of keys from the
-- root ('') down to key; nil when a segment is empty (a key with '..', or a
-- dot first or last).
local function path_of(key)
  local ks = { '' }
  if key == '' then return ks end
  local pos = 1
  while true do
    local dot = sfind(key, '.', pos, true)
    if not dot then break end
    if dot == pos then return nil end
    ks[#ks + 1] = ssub(key, 1, dot - 1)
    pos = dot + 1
  end
  if pos > #key then return nil end
  ks[#ks + 1] = key
  return ks
end
