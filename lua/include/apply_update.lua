--@include fmt
-- Apply one validated update to a loaded node state, in memory only.
--   u = { seq, key, ts|false, name1, json1, name2, json2, ... }; json "" removes.
-- Returns 1 applied, 0 ignored as stale (u's ts older than the node's last
-- applied ts; an equal ts applies), or 2 refused because the node would hold
-- more than max_fields client fields.
local function apply_update(s, u, max_fields)
  local f = s.f
  local ts = u[3]
  if ts and f._ts and ts < tonumber(f._ts) then return 0 end
  local grow = 0
  for j = 4, #u, 2 do
    if u[j + 1] == '' then
      if f[u[j]] ~= nil then grow = grow - 1 end
    elseif f[u[j]] == nil then
      grow = grow + 1
    end
  end
  if grow > 0 then
    if s.nclient == nil then
      local SERVER = { start_time = true, update_time = true, end_time = true, eta = true }
      local n = 0
      for name in pairs(f) do
        if string.byte(name, 1) ~= 95 and not SERVER[name] then n = n + 1 end
      end
      s.nclient = n
    end
    if s.nclient + grow > max_fields then return 2 end
  end
  if s.nclient then s.nclient = s.nclient + grow end
  for j = 4, #u, 2 do
    local name, v = u[j], u[j + 1]
    if v == '' then v = nil end
    f[name] = v
    s.dirty[name] = true
    if name == 'progress' then
      -- The node's own value: what it shows while its children weigh nothing.
      f._own = v
      s.dirty._own = true
      s.posted = u[1]
    end
  end
  if ts then
    f._ts = fmt(ts)
    s.dirty._ts = true
  end
  s.applied = u[1]
  return 1
end
