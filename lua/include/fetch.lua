--@include prelude
-- A call's copy of a tree's records (tree.lua) is filled here.
-- Fetch the records of every key of the paths (lists of keys) not fetched
-- yet into tree.raw, in HMGET calls of at most 1000 fields.
local function fetch_paths(tree, paths)
  local raw, want = tree.raw, {}
  for _, ks in ipairs(paths) do
    for _, k in ipairs(ks) do
      if raw[k] == nil then
        raw[k] = false
        want[#want + 1] = k
      end
    end
  end
  local t = tree.T .. 't'
  for i = 1, #want, 1000 do
    local last = i + 999
    if last > #want then last = #want end
    local got = rcall('HMGET', t, unpack(want, i, last))
    for j = i, last do raw[want[j]] = got[j - i + 1] end
  end
end
