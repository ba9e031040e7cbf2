--@include slots
--@include unpacked
--@include weight_units
--@include status_of
-- Apply one validated update to a loaded node state, in memory only.
--   u = { seq, key, ts|false, name1, json1, name2, json2, ... }; json "" removes.
-- progress sets the node's own and shown progress; every other field goes to
-- its client fields (weight and status also to their record slots).
-- Returns 1 applied, 0 ignored as stale (u's ts older than the node's last
-- applied ts; an equal ts applies), or 2 refused because the node would hold
-- more than max_fields client fields.
local function apply_update(s, u, max_fields)
  local ts = u[3]
  if ts and ts < s[TS] then return 0 end -- false while the node has no ts (NaN)
  local n = #u
  local fields
  if n > 5 or u[4] ~= 'progress' then
    fields = unpacked(s, FIELDS)
    local grow = 0
    for j = 4, n, 2 do
      local name = u[j]
      if name ~= 'progress' and u[j + 1] ~= '' and fields[name] == nil then grow = grow + 1 end
    end
    if grow > 0 then
      local have = 0
      for _ in pairs(fields) do have = have + 1 end
      if have + grow > max_fields then return 2 end
    end
  end
  for j = 4, n, 2 do
    local name, v = u[j], u[j + 1]
    if name == 'progress' then
      if v == '' then s[OWN] = 0 / 0 else s[OWN] = tonumber(v) end
      s[P] = s[OWN]
      s[POSTED] = u[1]
    else
      if v == '' then fields[name] = nil else fields[name] = v end
      if name == 'weight' then
        s[WM] = v == '' and 1000 or weight_units(v)
      elseif name == 'status' then
        s[STATUS] = v == '' and '' or status_of(v)
      end
    end
  end
  if ts then s[TS] = ts end
  s[APPLIED] = u[1]
  return 1
end
