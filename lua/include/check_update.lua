-- Why update u of the tree `root` is malformed, or nil when it is fine.
-- `prefix` is root .. '.'.  A second line of defence: the Python side
-- validates first, but a script must refuse anything that would corrupt
-- the sums before its first write.
local RESERVED = { key = true, start_time = true, update_time = true,
                   end_time = true, eta = true, tasks = true, ts = true }
local function check_update(root, prefix, u)
  local key = u[2]
  if type(key) ~= 'string' or type(u[1]) ~= 'number' then return 'bad-batch malformed update' end
  if (key ~= root and string.find(key, prefix, 1, true) ~= 1)
      or string.find(key, '..', 1, true)
      or string.byte(key, -1) == 46 then
    return 'bad-key ' .. key
  end
  if u[3] ~= false and type(u[3]) ~= 'number' then return 'bad-batch ts of ' .. key end
  local n = #u
  if n % 2 ~= 1 then return 'bad-batch odd field list of ' .. key end
  for j = 4, n, 2 do
    local name, v = u[j], u[j + 1]
    if type(name) ~= 'string' or type(v) ~= 'string' or name == '' then
      return 'bad-batch field of ' .. key
    end
    if string.byte(name, 1) == 95 or RESERVED[name] then
      return 'reserved-field ' .. key .. ' ' .. name
    end
    if v ~= '' then
      if name == 'progress' then
        local p = tonumber(v)
        if p == nil or not (p >= 0 and p <= 1) then return 'bad-progress ' .. key end
      elseif name == 'weight' then
        local w = tonumber(v)
        if w == nil or not (w == 0 or (w >= 0.001 and w <= 1e6)) then
          return 'bad-weight ' .. key
        end
      elseif name == 'status' then
        if string.byte(v, 1) ~= 34 or string.byte(v, -1) ~= 34 or #v < 3
            or (string.find(v, '\\', 1, true) and not pcall(cjson.decode, v)) then
          return 'bad-status ' .. key
        end
      end
    end
  end
  return nil
end
