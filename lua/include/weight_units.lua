-- A node's weight as an exact integer of 1/1000 units, from its stored JSON
-- text; an absent weight is 1.  Integer sums never drift, so a parent's
-- total weight is exactly 0 when all its children weigh 0.
local function weight_units(json)
  if json == nil then return 1000 end
  return math.floor(tonumber(json) * 1000 + 0.5)
end
