--@include prelude
-- redis.call(command, key, list...) in calls of at most 1000 list items (Lua's
-- unpack fails past about 8000 values).  `step` keeps pairs together: 2 for
-- field/value lists.
local function call_chunked(command, key, list, step)
  local size = 1000 - 1000 % (step or 1)
  for i = 1, #list, size do
    rcall(command, key, unpack(list, i, math.min(i + size - 1, #list)))
  end
end
