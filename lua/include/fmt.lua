-- A number as the shortest text that reads back as the same double.
-- (tostring and cjson keep only 14 significant digits.)
local function fmt(x)
  local s = string.format('%.15g', x)
  if tonumber(s) ~= x then s = string.format('%.17g', x) end
  return s
end
