-- A weight's exact integer of 1/1000 units, from its JSON text.  Integer
-- sums never drift, so a parent's total weight is exactly 0 when all its
-- children weigh 0.
local function weight_units(json)
  return math.floor(tonumber(json) * 1000 + 0.5)
end
