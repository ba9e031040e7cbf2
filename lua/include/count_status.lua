-- Move a parent's count of children in `status` (nil counts as 'none') by
-- delta; a count that reaches 0 is removed.
local function count_status(parent, status, delta)
  local name = '_c:' .. (status or 'none')
  local c = (tonumber(parent.f[name]) or 0) + delta
  if c > 0 then parent.f[name] = tostring(c) else parent.f[name] = nil end
  parent.dirty[name] = true
end
