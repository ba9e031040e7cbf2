--@include prelude
-- Progress history: each node's progress sampled on a time grid that
-- coarsens as the node ages, so a bounded number of samples spans its whole
-- life (engine/history.py reads it; docs/storage.md has the reasons).
--
--   '<prefix>:{<root>}:h:<id>'  string, one per node (by node id: a node
--          created again at the same key starts a history of its own)
--   value  step (uint32): ms between samples, HIST_STEP × a power of 2
--          then one uint16 per sample: sample j is the progress at
--          start_time + j × step (0..65534 for 0..1, 65535 none)
--
-- The step is a function of the node's age: the smallest HIST_STEP × 2^k
-- under which its age holds at most HIST_N grid points.  A sample is written
-- when an update crosses a grid point: a node updated at upd and again at
-- now held its old progress over [upd, now), so every grid point in there
-- gets that value.  Every crossing is written, so the samples stored are
-- exactly the grid points before the node's update_time: how many there are,
-- and under which step, follow from the record (start_time, update_time)
-- alone, and the usual write is one APPEND, with nothing read.  When the
-- step doubles, every other sample is dropped (the ones left stay exact):
-- the value is read and rewritten, a few times in a node's life.  A check of
-- the smallest grid decides from the record whether anything is crossed
-- (every grid point of a coarser step is one of it); rise inlines it.

-- Most samples a node keeps (0: no history), the finest step (ms), and
-- whether to touch each history key before the call writes anything (on a
-- Redis Cluster, see apply_updates.lua); set from each call's arguments.
local HIST_N, HIST_STEP, HIST_TOUCH = 0, 1000, false
-- Since when (ms) the prefix's histories are written under HIST_N and
-- HIST_STEP (engine.py, _note_history_settings): a node last sampled before
-- then may hold another grid, so its next sample rewrites it whole.
local HIST_SINCE = 0
local HIST_NONE = 65535

-- Note in due (a flat list: tree base T, id, start, update time, progress;
-- due.n values) that node id changed at now, after holding progress p since
-- upd, if that crosses a grid point.
local function history_due(due, T, id, start, upd, p, now)
  local a = upd - start
  if a + (-a) % HIST_STEP < now - start then
    local m = due.n
    due[m + 1], due[m + 2], due[m + 3], due[m + 4], due[m + 5] = T, id, start, upd, p
    due.n = m + 5
  end
end

-- The step of a node age ms old, and its grid points before that age.
local function grid(age)
  local step = HIST_STEP
  while age > HIST_N * step do step = step * 2 end
  local points = age / step
  if points % 1 ~= 0 then points = points - points % 1 + 1 end -- ceil, in VM ops
  return step, points
end

-- r -> the pattern of a group of r samples that captures the first one.
local STRIDES = {}
local function stride(r)
  local pattern = '(..)' .. string.rep('..', r - 1)
  STRIDES[r] = pattern
  return pattern
end

-- The whole value of a history whose stored value is v (false: none), made
-- right for step and points grid points: sample i (at i × step) is the
-- stored one at the last of its grid points not after that time (when the
-- step doubled, every other sample, from the first: those stay exact; a
-- value stored under another finest step is resampled so, rather than
-- relabelled), then padded with sample (a packed uint16).
local function rebuilt(v, step, points, sample)
  local body = ''
  if v and #v >= 4 then
    local stored = sunpack('<I4', v)
    local old = ssub(v, 5)
    local have = (#old - #old % 2) / 2 -- whole samples stored
    if stored == step then
      body = old
    elseif stored > 0 and step % stored == 0 and step / stored <= 64 then
      -- The step grew r-fold (it doubled, the usual case): sample i is the
      -- stored sample i * r, so keep the first of every r in one gsub (about
      -- half the instructions of a loop with a string.sub a sample), and
      -- drop what is left of a last group that was not whole.
      local r = step / stored
      body = sgsub(ssub(old, 1, 2 * have), STRIDES[r] or stride(r), '%1')
      local kept = (have + r - 1 - (have + r - 1) % r) / r -- ceil(have / r), in VM ops
      if #body > 2 * kept then body = ssub(body, 1, 2 * kept) end
    elseif stored > 0 then
      local out = {}
      for i = 0, points - 1 do
        local j = mfloor(i * step / stored)
        if j >= have then break end
        out[i + 1] = ssub(old, 2 * j + 1, 2 * j + 2)
      end
      body = table.concat(out)
    end
  end
  if #body > 2 * points then body = ssub(body, 1, 2 * points) end
  if #body < 2 * points then body = body .. string.rep(sample, points - #body / 2) end
  return spack('<I4', step) .. body
end

-- What writing the samples that due names takes, decided before the call
-- writes anything (reads first, for a cluster): 7 values a node: key, 'a'
-- with the samples to APPEND or 's' with the whole value to SET, the length
-- the value will have, then step, grid points and sample (for a repair).
local function plan_histories(due, now)
  local plan, m = {}, 0
  for e = 1, due.n, 5 do
    local T, id, start, upd, p = due[e], due[e + 1], due[e + 2], due[e + 3], due[e + 4]
    local key = T .. 'h:' .. sformat('%d', id)
    local step0, have = grid(upd - start)
    local step, points = grid(now - start)
    local code = HIST_NONE
    if p == p then
      code = p * 65534 + 0.5
      code = code - code % 1 -- floor, in VM ops
    end
    local sample = spack('<H', code)
    if HIST_TOUCH and (have == 0 or step0 == step) then rcall('EXISTS', key) end
    if step0 == step and have > 0 and upd > HIST_SINCE then
      plan[m + 2] = 'a'
      plan[m + 3] = points - have == 1 and sample or string.rep(sample, points - have)
    else
      -- The first samples, the step doubled, or a value perhaps written under
      -- other settings (last sampled before HIST_SINCE): written whole.
      plan[m + 2] = 's'
      plan[m + 3] = rebuilt(have > 0 and rcall('GET', key), step, points, sample)
    end
    plan[m + 1], plan[m + 4], plan[m + 5], plan[m + 6], plan[m + 7] = key, 4 + 2 * points, step, points, sample
    m = m + 7
  end
  return plan
end

-- Write what plan_histories decided.  An APPEND that does not give the
-- length expected (a history written under other settings, or a change the
-- history did not see) has its value rebuilt from what it held before.
local function write_histories(plan)
  for w = 1, #plan, 7 do
    local key, data = plan[w], plan[w + 2]
    if plan[w + 1] == 's' then
      rcall('SET', key, data)
    elseif rcall('APPEND', key, data) ~= plan[w + 3] then
      local v = rcall('GET', key)
      rcall('SET', key, rebuilt(ssub(v, 1, #v - #data), plan[w + 4], plan[w + 5], plan[w + 6]))
    end
  end
end
