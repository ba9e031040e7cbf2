-- Why update u of the tree `root` is malformed, or nil when it is fine.
-- A second line of defence: the Python side validates first, but a script
-- must refuse anything that would corrupt the sums before its first write.
local function check_update(root, u)
  local RESERVED = { key = true, start_time = true, update_time = true,
                     end_time = true, eta = true, tasks = true, ts = true }
  if type(u) ~= 'table' or type(u[1]) ~= 'number' or type(u[2]) ~= 'string' then
    return 'bad-batch malformed update'
  end
  local key = u[2]
  if not (key == root or string.sub(key, 1, #root + 1) == root .. '.')
      or string.find(key, '[^%w_:@~%-%.]') or string.find(key, '..', 1, true)
      or string.sub(key, -1) == '.' then
    return 'bad-key ' .. key
  end
  if u[3] ~= false and type(u[3]) ~= 'number' then return 'bad-batch ts of ' .. key end
  if #u % 2 ~= 1 then return 'bad-batch odd field list of ' .. key end
  for j = 4, #u, 2 do
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
        if p == nil or p ~= p or p < 0 or p > 1 then return 'bad-progress ' .. key end
      elseif name == 'weight' then
        local w = tonumber(v)
        if w == nil or w ~= w or w < 0 or w > 1e6 or (w > 0 and w < 0.001) then
          return 'bad-weight ' .. key
        end
      elseif name == 'status' then
        if string.byte(v, 1) ~= 34 or string.byte(v, -1) ~= 34 or #v < 3 then
          return 'bad-status ' .. key
        end
      end
    end
  end
  return nil
end
