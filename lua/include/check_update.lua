--@include prelude
-- Reading one update from the packed batch of apply_updates.lua, and
-- checking it: the Python side validates first, but a script must refuse
-- anything that would corrupt the sums before its first write.
--
-- An update in the batch, at position pos (engine/updates.py writes it):
--   seq (uint32), key (uint8 length; relative to the tree root, '' the root),
--   ts (double, NaN: none), progress (double: -1 absent, -2 null),
--   slots (uint8: status + 3 * msg + 9 * extra; status and msg 0 absent,
--   1 set, 2 null; extra 0 absent, 1 present), status (uint16 length, raw
--   text), msg (uint32 length, JSON text), extra (uint32 length, cmsgpack
--   array { name1, json1, ... } of the other client fields; json true is null)
-- It becomes u = { seq, key, ts|false, progress, status, msg, extra|false },
-- progress, status and msg false when absent, true when null.
local UPDATE_FORMAT = '<I4Bc0ddBHc0I4c0I4c0'
local RESERVED = { key = true, start_time = true, update_time = true, end_time = true, run_time = true,
                   eta = true, tasks = true, ts = true, progress = true, status = true, msg = true }

-- The update at pos and the position after it, or nil and why it is malformed.
local function read_update(batch, pos)
  local ok, seq, key, ts, progress, slots, status, msg, extra, after = pcall(sunpack, UPDATE_FORMAT, batch, pos)
  if not ok then return nil, 'bad-batch truncated update' end
  if sfind(key, '..', 1, true) or sbyte(key, 1) == 46 or sbyte(key, -1) == 46 then return nil, 'bad-key ' .. key end
  if ts ~= ts then ts = false end
  if progress == -1 then
    progress = false
  elseif progress == -2 then
    progress = true
  elseif not (progress >= 0 and progress <= 1) then
    return nil, 'bad-progress ' .. key
  end
  if slots > 17 then return nil, 'bad-batch slots of ' .. key end
  local s = slots % 3
  local m = ((slots - s) / 3) % 3
  if s == 0 then
    status = false
  elseif s == 2 then
    status = true
  elseif status == '' then
    return nil, 'bad-status ' .. key
  end
  if m == 0 then
    msg = false
  elseif m == 2 then
    msg = true
  elseif #msg < 2 or sbyte(msg, 1) ~= 34 or sbyte(msg, -1) ~= 34 then
    return nil, 'bad-value ' .. key .. ' msg'
  end
  if slots < 9 then return { seq, key, ts, progress, status, msg, false }, after end
  local good, list = pcall(cmsgpack.unpack, extra)
  if not good or type(list) ~= 'table' or #list % 2 ~= 0 then return nil, 'bad-batch field list of ' .. key end
  for j = 1, #list, 2 do
    local name, v = list[j], list[j + 1]
    if type(name) ~= 'string' or name == '' or (v ~= true and type(v) ~= 'string') then
      return nil, 'bad-batch field of ' .. key
    end
    if sbyte(name, 1) == 95 or RESERVED[name] then return nil, 'reserved-field ' .. key .. ' ' .. name end
    if name == 'weight' and v ~= true then
      local w = tonumber(v)
      if w == nil or not (w == 0 or (w >= 0.001 and w <= 1e6)) then return nil, 'bad-weight ' .. key end
    end
  end
  return { seq, key, ts, progress, status, msg, list }, after
end
