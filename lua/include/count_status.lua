--@include slots
--@include unpacked
-- Move a parent's count of children in `status` ('' counts as 'none') by delta.
local function count_status(parent, status, delta)
  local counts = unpacked(parent, COUNTS)
  local k = status ~= '' and status or 'none'
  local c = (counts[k] or 0) + delta
  if c > 0 then counts[k] = c else counts[k] = nil end
end
