-- Read the records of `keys` (a list) from the tree's record hash into
-- tree.raw (key -> record, or false when there is none), in HMGET calls of
-- at most 1000 fields.
local function fetch_records(tree, keys)
  local t = tree.T .. 't'
  for i = 1, #keys, 1000 do
    local last = math.min(i + 999, #keys)
    local got = redis.call('HMGET', t, unpack(keys, i, last))
    for j = i, last do tree.raw[keys[j]] = got[j - i + 1] end
  end
end
