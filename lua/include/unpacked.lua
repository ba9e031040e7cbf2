-- Slot `slot` of state s as a table, unpacking its cmsgpack map on first use.
local function unpacked(s, slot)
  local v = s[slot]
  if type(v) == 'string' then
    v = v ~= '' and cmsgpack.unpack(v) or {}
    s[slot] = v
  end
  return v
end
