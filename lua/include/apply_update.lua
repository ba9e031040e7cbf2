--@include prelude
--@include record
--@include counts
--@include tree
--@include children
--@include rollup
--@include weight_units
-- Apply one validated update (check_update.lua) to its tree and roll it up
-- to the root, in this call's copy of the records (tree.raw).
--   u = { seq, key, ts|false, progress, status, msg, extra|false, path }
--       progress, status, msg: false absent, true removes, else the value
--       (progress a number, status raw text, msg JSON text)
--       extra: { name1, json1, name2, json2, ... }, json true removes
--       path: the keys from the root to key (check_update.lua)
-- Returns 1 applied, 0 ignored as stale (u's ts older than the node's last
-- applied ts; an equal ts applies), 2 refused (the node would hold more
-- than max_fields client fields), 3 refused (the tree would hold more than
-- max_nodes nodes; 0 is no cap).  A node whose status entered a terminal
-- one is added to ended.

-- The client-field map of state s, unpacked on first use.
local function fields_of(s)
  local f = s[FIELDS]
  if type(f) == 'string' then
    f = f ~= '' and cmsgpack.unpack(f) or {}
    s[FIELDS] = f
  end
  return f
end

-- Would u take s (nil: a node not created yet) past max_fields client fields?
local function too_many_fields(s, u, max_fields)
  local status, msg, extra = u[5], u[6], u[7]
  local grow = 0
  if type(status) == 'string' and (s == nil or s[STATUS] == '') then grow = grow + 1 end
  if type(msg) == 'string' and (s == nil or s[MSG] == '') then grow = grow + 1 end
  local fields = s and extra and fields_of(s) or nil
  if extra then
    for j = 1, #extra, 2 do
      if extra[j + 1] ~= true and (fields == nil or fields[extra[j]] == nil) then grow = grow + 1 end
    end
  end
  if grow == 0 or s == nil then return grow > max_fields end
  local have = 0
  for _ in pairs(fields or fields_of(s)) do have = have + 1 end
  if s[STATUS] ~= '' then have = have + 1 end
  if s[MSG] ~= '' then have = have + 1 end
  return have + grow > max_fields
end

-- Keep the status index of a wide parent (of key pkey) right: node key, of
-- state s, was just updated from status st0 (children.lua).
local function note_moved(tree, pkey, key, s, st0)
  local pid = s[PID]
  local byseg = tree.moved and tree.moved[pid]
  if not byseg and s[STATUS] == st0 then return end -- the common case: nothing to note
  local seg = pkey == '' and key or ssub(key, #pkey + 2)
  if byseg and byseg[seg] then
    byseg[seg][3] = s[STATUS]
  elseif s[STATUS] ~= st0 and record_wide(tree.raw[pkey]) == 1 then
    note_status(tree, pid, seg, nil, st0, s[STATUS])
  end
end

-- Change node state s as update u says, at time now: its progress, status,
-- msg, client fields and ts, then its times and rate (finish_node).
-- Returns the node's progress (NaN as 0), status and weight units before,
-- and whether its status entered a terminal one.
local function change_node(s, u, now, tau)
  local p0, st0 = s[P], s[STATUS]
  if p0 ~= p0 then p0 = 0 end
  local ow = s[WM]
  local progress, status, msg, extra = u[4], u[5], u[6], u[7]
  if progress then
    if progress == true then progress = 0 / 0 end
    s[P] = progress
    if s[KIND] == PARENT then s[OWN] = progress end
  end
  if status then s[STATUS] = status == true and '' or status end
  if msg then s[MSG] = msg == true and '' or msg end
  if extra then
    local fields = fields_of(s)
    for j = 1, #extra, 2 do
      local name, v = extra[j], extra[j + 1]
      if v == true then fields[name] = nil else fields[name] = v end
      if name == 'weight' then s[WM] = v == true and 1000 or weight_units(v) end
    end
  end
  if u[3] then s[TS] = u[3] end
  return p0, st0, ow, finish_node(s, p0, st0, now, tau)
end

local function apply_update(tree, u, max_fields, max_nodes, now, tau, ended, due)
  local ks = u[8]
  local n = #ks
  local key, ts = ks[n], u[3]
  local raw = tree.raw
  local rec = raw[key]
  local s = rec and read_node(rec, key) or nil
  for attempt = 1, 2 do
    if s then
      if (ts and ts < s[TS]) or ((u[5] or u[6] or u[7]) and too_many_fields(s, u, max_fields)) then
        -- Refused: unless the node is only a leftover of a deleted subtree.
        if intact(tree, ks) == n then return (ts and ts < s[TS]) and 0 or 2 end
        s = nil
      end
    end
    if s == nil then
      local m = intact(tree, ks) + 1
      if too_many_fields(nil, u, max_fields) then return 2 end
      if max_nodes > 0 then
        if tree.room == nil then tree.room = max_nodes - rcall('HLEN', tree.T .. 't') end
        if n - m + 1 > tree.room then return 3 end
        tree.room = tree.room - (n - m + 1)
      end
      s = create_path(tree, ks, m, now)
    end
    local upd0, hp0, due0 = s[UPD], s[P], due and due.n
    local p0, st0, ow, entered = change_node(s, u, now, tau)
    local p1 = s[P]
    if p1 ~= p1 then p1 = 0 end
    local recs = {}
    for j = 1, n - 1 do recs[j] = raw[ks[j]] end
    if rise(recs, n, s[PID], ow, p0, st0, s[WM], p1, s[STATUS], now, tau, due, tree.T) then
      if due then history_due(due, tree.T, s[ID], s[START], upd0, hp0, now) end
      raw[key] = pack_node(s)
      mark(tree, key, 2)
      for j = 1, n - 1 do
        raw[ks[j]] = recs[j]
        mark(tree, ks[j], 1)
      end
      if entered then ended[#ended + 1] = { tree, key, s } end
      if n > 1 then note_moved(tree, ks[n - 1], key, s, st0) end
      return 1
    end
    s = nil -- the path is not intact: the node is a leftover; create it anew
    if due then due.n = due0 end
  end
  error('apply_update: path of ' .. key .. ' still broken after creating it')
end

-- The commonest updates, applied without a copy of their tree (tree.lua)
-- and its bookkeeping: the only update of its tree in the call, to a leaf
-- that exists, or that it creates below a parent that lists its children
-- itself (children.lua), on an intact path, whose status move (if any)
-- needs no status index.  Its tree's base key is T.  Returns nil when the
-- update is not such a case (nothing changed; and, when nothing was changed
-- in them, the records of the path read, for the caller's copy of the
-- tree), else what apply_update would have stored, ready to write
-- (write_single): { T, path, the path's new records (root first), leaf
-- state if its status entered a terminal one (else false) }.
local function apply_single(T, u, max_fields, max_nodes, now, tau, due)
  local ks = u[8]
  local n = #ks
  local recs = rcall('HMGET', T .. 't', unpack(ks))
  local rec = recs[n]
  local s, parent
  if rec then
    s = read_node(rec, ks[n])
    if s[KIND] ~= LEAF or (u[3] and u[3] < s[TS])
      or ((u[5] or u[6] or u[7]) and too_many_fields(s, u, max_fields)) then
      return nil, recs
    end
  else
    local prec = n > 1 and recs[n - 1]
    if not prec or sbyte(prec, 1) ~= PARENT or too_many_fields(nil, u, max_fields)
      or (max_nodes > 0 and rcall('HLEN', T .. 't') >= max_nodes) then
      return nil, recs
    end
    parent = read_node(prec, ks[n - 1])
    if parent[WIDE] == 1 or parent[NC] >= MAX_LISTED then return nil, recs end
    s = new_node(rcall('INCRBY', T .. 'ids', 1), parent[ID], now)
  end
  local upd0, hp0, due0 = s[UPD], s[P], due and due.n
  local p0, st0, ow, entered = change_node(s, u, now, tau)
  local p1 = s[P]
  if p1 ~= p1 then p1 = 0 end
  if parent then
    -- The new child counts in its parent from nothing (weight 0, no progress).
    local seg = n == 2 and ks[n] or ssub(ks[n], #ks[n - 1] + 2)
    parent[N], parent[NC] = parent[N] + 1, parent[NC] + 1
    parent[COUNTS] = recount(parent[COUNTS], false, s[STATUS])
    parent[KIDS] = parent[KIDS] .. spack(ENTRY, parent[N], #seg, seg)
    recs[n - 1] = pack_node(parent)
    if not rise(recs, n, s[PID], 0, 0, true, s[WM], p1, true, now, tau, due, T) then
      if due then due.n = due0 end
      return nil
    end
  else
    -- A wide parent's status index is apply_update's (rise proved recs[n - 1] a parent).
    if not rise(recs, n, s[PID], ow, p0, st0, s[WM], p1, s[STATUS], now, tau, due, T)
      or (n > 1 and s[STATUS] ~= st0 and record_wide(recs[n - 1]) == 1) then
      if due then due.n = due0 end
      return nil
    end
    if due then history_due(due, T, s[ID], s[START], upd0, hp0, now) end
  end
  recs[n] = pack_node(s)
  return { T, ks, recs, entered and s }
end

-- Write what apply_single did (done): the path's records in one HSET.  The
-- usual depths pass their arguments directly: building and unpacking an
-- argument table costs a table that grows, for every update of shape (a).
local function write_single(done)
  local t, ks, r = done[1] .. 't', done[2], done[3]
  local n = #ks
  if n == 5 then
    rcall('HSET', t, ks[5], r[5], ks[1], r[1], ks[2], r[2], ks[3], r[3], ks[4], r[4])
  elseif n == 4 then
    rcall('HSET', t, ks[4], r[4], ks[1], r[1], ks[2], r[2], ks[3], r[3])
  elseif n == 3 then
    rcall('HSET', t, ks[3], r[3], ks[1], r[1], ks[2], r[2])
  elseif n == 2 then
    rcall('HSET', t, ks[2], r[2], ks[1], r[1])
  else
    local args = {}
    for j = 1, n do
      args[2 * j - 1], args[2 * j] = ks[j], r[j]
    end
    rcall('HSET', t, unpack(args))
  end
end

-- What apply_single changed, as write_tree lists it: key1, record1, ... in
-- the order the nodes first changed (the leaf, then the root downwards).
local function single_written(done)
  local ks, r = done[2], done[3]
  local n = #ks
  local out = { ks[n], r[n] }
  for j = 1, n - 1 do
    out[2 * j + 1], out[2 * j + 2] = ks[j], r[j]
  end
  return out
end
