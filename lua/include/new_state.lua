--@include slots
-- The state of a node created in this call (see slots.lua).
local function new_state(id, pid, key, seg, parent, depth)
  local NONE = 0 / 0
  return { id, pid, 0, 0, 1000, NONE, NONE, 0, 0, NONE, 0, 0, NONE, NONE, NONE, NONE, NONE, '', '',
           '', key, seg or false, parent or false, depth, 0, 0, 0, 0, 0, 0, 0, '', true, false, 0, 0 }
end
