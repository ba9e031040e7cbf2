-- A string as a JSON string literal; only strings that need escaping pay for cjson.
local function json_name(s)
  if string.find(s, '[%c"\\]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end
