--@include prelude
-- Reading one update from the packed batch of apply_updates.lua, and
-- checking it: the Python side validates first, but a script must refuse
-- anything that would corrupt the sums before its first write.
--
-- An update in the batch, at position pos (engine/updates.py writes it):
--   seq (uint32); the number d of the key's ancestors below the root (uint8);
--   d + 1 strings, each a uint8 length and its bytes: those ancestors' keys,
--   the root's side first, then the key itself (all relative to the tree
--   root; the root itself is d = 0 and ''); then
--   ts (double, NaN: none), progress (double: -1 absent, -2 null),
--   slots (uint8: status + 3 * msg + 9 * extra; status and msg 0 absent,
--   1 set, 2 null; extra 0 absent, 1 present), status (uint16 length, raw
--   text), msg (uint32 length, JSON text), extra (uint32 length, cmsgpack
--   array { name1, json1, ... } of the other client fields; json true is null)
-- The path comes split (the script cuts no key): its keys are checked to
-- grow by a non-empty segment each, not to be prefixes of one another.
-- It becomes u = { seq, key, ts|false, progress, status, msg, extra|false,
-- path }, path = { '', ancestors..., key } (just { '' } for the root),
-- progress, status and msg false when absent, true when null.
local REST_FORMAT = '<ddBHc0I4c0I4c0'
local PATH_FORMATS = {} -- d -> the struct format of a path of d ancestors
local RESERVED = { key = true, start_time = true, update_time = true, end_time = true, run_time = true,
                   eta = true, tasks = true, ts = true, progress = true, status = true, msg = true }

-- The update at pos and the position after it, or nil and why it is
-- malformed.  A truncated update raises (the caller reads the whole batch
-- under one pcall).
local function read_update(batch, pos)
  local seq, d = sunpack('<I4B', batch, pos)
  local f = PATH_FORMATS[d]
  if not f then
    if d > 31 then return nil, 'bad-batch path of update ' .. seq end
    f = '<' .. string.rep('Bc0', d + 1)
    PATH_FORMATS[d] = f
  end
  local ks = { '', sunpack(f, batch, pos + 5) }
  local n = d + 2
  pos, ks[n + 1] = ks[n + 1], nil
  local key = ks[n]
  if key == '' and d == 0 then
    ks[2], n = nil, 1
  else
    local least = 1
    for i = 2, n do
      local len = #ks[i]
      if len < least then return nil, 'bad-key ' .. key end
      least = len + 2
    end
  end
  local ts, progress, slots, status, msg, extra, after = sunpack(REST_FORMAT, batch, pos)
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
  elseif not sfind(msg, '^".*"$') then
    return nil, 'bad-value ' .. key .. ' msg'
  end
  if slots < 9 then return { seq, key, ts, progress, status, msg, false, ks }, after end
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
  return { seq, key, ts, progress, status, msg, list, ks }, after
end
