--@include prelude
--@include call_chunked
-- Progress history: each node's progress sampled on a time grid that
-- coarsens as the node ages, so a bounded number of samples spans its whole
-- life (engine/history.py reads it; docs/storage.md has the reasons).
--
--   '<prefix>:{<root>}:h'  hash, field: the node key relative to the root
--   value  id (uint32): the node the history belongs to (a history under
--          another id is a leftover of a deleted node: started afresh)
--          step (uint32): ms between samples, HIST_STEP × a power of 2
--          then one uint16 per sample: sample j is the progress at
--          start_time + j × step (0..65534 for 0..1, 65535 none)
--
-- Samples are written only when an update crosses a grid point, never read
-- otherwise: a node updated at upd and again at now held its old progress
-- over [upd, now), so every grid point in there gets that value.  A check
-- of the smallest grid (HIST_STEP) decides, from the record alone, whether
-- any is crossed (every grid point of a coarser step is one of it).  When
-- the samples would pass HIST_N, every other one is dropped and the step
-- doubles; the remaining ones stay exact.

-- Most samples a node keeps (0: no history) and the finest step (ms); set
-- from each call's arguments (apply_updates.lua).
local HIST_N, HIST_STEP = 0, 1000
local HIST_HEAD = '<I4I4'
local HIST_NONE = 65535

-- Note in due (a flat list: tree base T, key, id, start, old progress; due.n
-- values) that the node changed at now, after holding progress p since upd,
-- crosses a grid point.  (rise inlines the check.)
local function history_due(due, T, key, id, start, upd, p, now)
  local a = upd - start
  if a + (-a) % HIST_STEP < now - start then
    local m = due.n
    due[m + 1], due[m + 2], due[m + 3], due[m + 4], due[m + 5] = T, key, id, start, p
    due.n = m + 5
  end
end

-- Every other sample of body, from the first.
local function thinned(body)
  local out = {}
  for j = 1, #body, 4 do out[#out + 1] = ssub(body, j, j + 1) end
  return table.concat(out)
end

-- The history h (false: none) of node id created at start, after it held
-- progress p (NaN: none) until now.  The common case appends to h as it is.
local function sampled(h, id, start, p, now)
  local step, have = HIST_STEP, 0
  if h then
    local hid, hstep = sunpack(HIST_HEAD, h)
    if hid == id then step, have = hstep, (#h - 8) / 2 else h = false end
  end
  local age = now - start
  local want = age / step -- the grid points before now: ceil(age / step), in VM ops
  if want % 1 ~= 0 then want = want - want % 1 + 1 end
  local code = HIST_NONE
  if p == p then
    code = p * 65534 + 0.5
    code = code - code % 1 -- floor, in VM ops
  end
  if h and want <= HIST_N then
    if want <= have then return h end
    if want == have + 1 then return h .. spack('<H', code) end
    return h .. string.rep(spack('<H', code), want - have)
  end
  local body = h and ssub(h, 9) or ''
  while want > HIST_N do
    body, step = thinned(body), step * 2
    want = math.ceil(age / step)
  end
  have = #body / 2
  if want > have then body = body .. string.rep(spack('<H', code), want - have) end
  return spack(HIST_HEAD, id, step) .. body
end

-- Read the histories that due names and compute their new values; nothing
-- is written yet (on a cluster the reads must come first).  Entries of one
-- tree are consecutive.  Returns a flat list: T, key, value (a tree's one
-- node) or T, { key1, value1, ... }, false (several).
local function sample_histories(due, now)
  local writes, e, w = {}, 1, 0
  while e <= due.n do
    local T, stop = due[e], e + 5
    while stop <= due.n and due[stop] == T do stop = stop + 5 end
    if stop == e + 5 then -- the usual case: one node of the tree
      local key = due[e + 1]
      writes[w + 1], writes[w + 2] = T, key
      writes[w + 3] = sampled(rcall('HGET', T .. 'h', key), due[e + 2], due[e + 3], due[e + 4], now)
    else
      local fields, args = {}, {}
      for b = e, stop - 1, 5 do fields[#fields + 1] = due[b + 1] end
      for i = 1, #fields, 1000 do
        local got = rcall('HMGET', T .. 'h', unpack(fields, i, math.min(i + 999, #fields)))
        for f = i, i + #got - 1 do
          local b = e + (f - 1) * 5
          args[2 * f - 1], args[2 * f] = fields[f], sampled(got[f - i + 1], due[b + 2], due[b + 3], due[b + 4], now)
        end
      end
      writes[w + 1], writes[w + 2], writes[w + 3] = T, args, false
    end
    w, e = w + 3, stop
  end
  return writes
end

-- Store what sample_histories computed.
local function write_histories(writes)
  for w = 1, #writes, 3 do
    local value = writes[w + 2]
    if value then
      rcall('HSET', writes[w] .. 'h', writes[w + 1], value)
    else
      call_chunked('HSET', writes[w] .. 'h', writes[w + 1], 2)
    end
  end
end
