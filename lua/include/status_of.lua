-- A status string from its JSON text (a JSON string).
local function status_of(json)
  if string.find(json, '\\', 1, true) then return cjson.decode(json) end
  return string.sub(json, 2, -2)
end
