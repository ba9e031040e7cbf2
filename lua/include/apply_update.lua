--@include prelude
--@include record
--@include counts
--@include tree
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

-- A parent's cold part after one of its children moved from status old to
-- new (counts.lua), and whether the parent is wide (children.lua).
local function recount_cold(cold, old, new)
  local n, nc, ts, fin, counts, wide, kids, status, msg, fields = sunpack(PARENT_COLD, cold)
  counts = recount(counts, old, new)
  return spack(PARENT_COLD, n, nc, ts, fin, #counts, counts, wide, #kids, kids, #status, status, #msg, msg,
    #fields, fields), wide
end

-- The direct parent (of key pkey) of node key, of state s, after the node's
-- status went from st0 to s[STATUS]: its counts, and the status index of a
-- wide parent (children.lua).
local function note_moved(tree, pkey, key, s, st0)
  local pid = s[PID]
  local byseg = tree.moved and tree.moved[pid]
  if not byseg and s[STATUS] == st0 then return end -- the common case: nothing to note
  local wide = 0
  if s[STATUS] ~= st0 then
    local cold
    cold, wide = recount_cold(cold_of(tree, pkey), st0, s[STATUS])
    mark_cold(tree, pkey, cold)
  end
  local seg = pkey == '' and key or ssub(key, #pkey + 2)
  if byseg and byseg[seg] then
    byseg[seg][3] = s[STATUS]
  elseif wide == 1 then
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

local function apply_update(tree, u, max_fields, max_nodes, now, tau, ended)
  local ks = u[8]
  local n = #ks
  local key, ts = ks[n], u[3]
  local raw = tree.raw
  local s = node_state(tree, key)
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
    local p0, st0, ow, entered = change_node(s, u, now, tau)
    local p1 = s[P]
    if p1 ~= p1 then p1 = 0 end
    local recs = {}
    for j = 1, n - 1 do recs[j] = raw[ks[j]] end
    if rise(recs, n, s[PID], ow, p0, s[WM], p1, now, tau) then
      store(tree, key, s, 2)
      for j = 1, n - 1 do
        raw[ks[j]] = recs[j]
        mark(tree, ks[j], 1)
      end
      if entered then ended[#ended + 1] = { tree, key, s } end
      if n > 1 then note_moved(tree, ks[n - 1], key, s, st0) end
      return 1
    end
    s = nil -- the path is not intact: the node is a leftover; create it anew
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
-- tree), else what apply_update would have stored, ready to write: { T,
-- path, fields, count, leaf state if its status entered a terminal one
-- (else false), parent's new cold part or false } where fields[1..count]
-- are the HSET arguments of the records (the leaf's key and record, then
-- each ancestor's, root first).
local function apply_single(T, u, max_fields, max_nodes, now, tau)
  local ks = u[8]
  local n = #ks
  local recs = rcall('HMGET', T .. 't', unpack(ks))
  local rec = recs[n]
  local s, cold
  local pn, pnc, pts, pfin, pcounts, pwide, pkids, pstatus, pmsg, pfields -- a new leaf's parent's cold part
  if rec then
    if record_kind(rec, ks[n]) ~= LEAF then return nil, recs end
    s = leaf_state(rec)
    if (u[3] and u[3] < s[TS]) or ((u[5] or u[6] or u[7]) and too_many_fields(s, u, max_fields)) then
      return nil, recs
    end
  else
    local prec = n > 1 and recs[n - 1]
    if not prec or #prec ~= HOT_BYTES or too_many_fields(nil, u, max_fields)
      or (max_nodes > 0 and rcall('HLEN', T .. 't') >= max_nodes) then
      return nil, recs
    end
    local kind, pid = sunpack('<BI4', prec)
    cold = rcall('HGET', T .. 'p', ks[n - 1])
    if kind ~= PARENT or not cold then return nil, recs end
    pn, pnc, pts, pfin, pcounts, pwide, pkids, pstatus, pmsg, pfields = sunpack(PARENT_COLD, cold)
    if pwide == 1 or pnc >= MAX_LISTED then return nil, recs end
    s = new_node(rcall('INCRBY', T .. 'ids', 1), pid, now)
  end
  local p0, st0, ow, entered = change_node(s, u, now, tau)
  local p1 = s[P]
  if p1 ~= p1 then p1 = 0 end
  if rec then
    if not rise(recs, n, s[PID], ow, p0, s[WM], p1, now, tau) then return nil end
    if n > 1 and s[STATUS] ~= st0 then
      local pkey = ks[n - 1]
      local wide
      cold = rcall('HGET', T .. 'p', pkey)
      if not cold then error(bad_record(pkey), 0) end
      cold, wide = recount_cold(cold, st0, s[STATUS])
      if wide == 1 then return nil end
    end
  else
    -- The new child counts in its parent from nothing (weight 0, no progress).
    if not rise(recs, n, s[PID], 0, 0, s[WM], p1, now, tau) then return nil end
    local seg = n == 2 and ks[n] or ssub(ks[n], #ks[n - 1] + 2)
    local counts = recount(pcounts, false, s[STATUS])
    pkids = pkids .. spack(ENTRY, pn + 1, #seg, seg)
    cold = spack(PARENT_COLD, pn + 1, pnc + 1, pts, pfin, #counts, counts, 0, #pkids, pkids, #pstatus, pstatus,
      #pmsg, pmsg, #pfields, pfields)
  end
  local fields = { ks[n], pack_node(s), false, false, false, false, false, false, false, false }
  local count = 2
  for j = 1, n - 1 do
    fields[count + 1], fields[count + 2] = ks[j], recs[j]
    count = count + 2
  end
  return { T, ks, fields, count, entered and s, cold or false }
end
