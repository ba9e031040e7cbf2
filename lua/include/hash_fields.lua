-- A hash's fields as a table name -> value ({} when the key does not exist).
local function hash_fields(h)
  local raw = redis.call('HGETALL', h)
  local f = {}
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  return f
end
