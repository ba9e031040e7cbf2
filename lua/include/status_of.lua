-- A node's status string from its stored JSON text, or nil when it has none.
local function status_of(json)
  if json == nil then return nil end
  if string.find(json, '\\', 1, true) then return cjson.decode(json) end
  return string.sub(json, 2, -2)
end
