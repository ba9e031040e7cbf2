--@include json_name
-- The public JSON object of a node from its hash fields: client fields and
-- server fields are stored as JSON text already; internal fields (leading
-- '_') are left out, except the children's status counts ('_c:<status>'),
-- which become "_status_counts".
local function node_json(key, f)
  local parts = {'{"key":"', key, '"'}
  local n = 3
  local counts
  for name, v in pairs(f) do
    if string.byte(name, 1) ~= 95 then
      parts[n + 1] = ','
      parts[n + 2] = json_name(name)
      parts[n + 3] = ':'
      parts[n + 4] = v
      n = n + 4
    elseif string.sub(name, 1, 3) == '_c:' then
      counts = counts or {}
      counts[#counts + 1] = json_name(string.sub(name, 4)) .. ':' .. v
    end
  end
  if counts then
    parts[n + 1] = ',"_status_counts":{' .. table.concat(counts, ',') .. '}'
    n = n + 1
  end
  parts[n + 1] = '}'
  return table.concat(parts)
end
