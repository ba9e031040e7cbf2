--@include prelude
--@include record
--@include counts
--@include history
-- The roll-up math.  Updates are applied one by one, in batch order, and each
-- one walks its node's path to the root (O(depth); siblings are never read):
--
--   sums      a parent's sw (Σ child weight units, an exact integer) and swp
--             (Σ child weight units × child progress, a compensated sum:
--             swp + swpc is exact) move by what the changed child held
--             before and holds now.  A child without progress counts as 0.
--   progress  a parent below which something changed takes swp / sw when
--             sw > 0, else its own value (own: the progress last posted to
--             it, none if never).  Progress posted to a parent stands until
--             the next change below it.  Values within 1e-10 of 0 or 1 snap
--             to them, so float drift never leaves a finished parent at
--             99.99999999 %.
--   counts    a parent counts its children by status ('none' for none).
--   times     update_time = now on the node and every ancestor; start_time
--             when created; end_time set when the status changes to
--             finished, failed or canceled, cleared when it changes to
--             anything else; began when the node first runs (status running
--             or terminal, or progress above 0).
--   rate      er, an exponentially weighted rate of progress per ms over a
--             time constant tau.  Its last sample is the node's (p, upd); a
--             change dt ms later samples inst = Δp / dt with weight
--             a = max(1 - exp(-dt/tau), dt/age): while the node is younger
--             than tau, that is the plain average rate since its start.
--             Changes within one ms count as dt = 1 ms: for small dt the
--             average moves by about Δp/tau (or Δp/age) whatever dt is, so
--             no progress is lost from it.  A node created in this ms has
--             one sample, no rate.  The eta is derived from it when read.

local SNAP = 1e-10
local TERMINAL = { finished = true, failed = true, canceled = true }

-- sum + comp += x (Neumaier): comp carries the rounding error of every
-- addition, so a sum that a child of weight 1e6 entered and left again
-- returns to its exact value instead of keeping that child's rounding error.
-- (rise inlines the same lines: it runs for every ancestor of every update.)
local function add_compensated(sum, comp, x)
  local t = sum + x
  if (sum < 0 and -sum or sum) >= (x < 0 and -x or x) then comp = comp + ((sum - t) + x)
  else comp = comp + ((x - t) + sum) end
  return t, comp
end

-- A parent's progress from its sums, or own when its children weigh nothing.
local function from_sums(sw, swp, swpc, own)
  if sw <= 0 then return own end
  local q = (swp + swpc) / sw
  if q < SNAP then return 0 elseif q > 1 - SNAP then return 1 end
  return q
end

-- The rate after the progress went from p0 (at upd) to p (at now).
local function next_rate(er, p, p0, start, upd, now, tau)
  if start >= now then return er end -- created in this ms: its first sample
  local dt = now - upd
  if dt < 1 then dt = 1 end
  local x = dt / tau
  local a = x < 1e-3 and x - x * x / 2 or 1 - mexp(-x) -- 1 - exp(-x), to 1e-10 below 1e-3
  local age = now - start
  if dt / age > a then a = dt / age end
  if a > 1 then a = 1 end
  local inst = (p - p0) / dt
  if er == er then return er + a * (inst - er) end
  return inst
end

-- Roll the change of the node at depth i of a path (whose parent's id is
-- cpid) up to the root: its weight units, progress (NaN as 0) and status
-- went from (ow, op, ost) to (nw, np, nst).  recs[1..i-1] are the records
-- of its ancestors, the root first; each is replaced by its new one in
-- recs.  Returns false when the path is not intact (an ancestor missing, or
-- not the parent whose id the child names: a leftover of a deleted
-- subtree); recs may then be changed in part.  With due (history.lua; nil:
-- no history), each ancestor of tree base T whose update crosses a grid
-- point of its history is noted there.
local function rise(recs, i, cpid, ow, op, ost, nw, np, nst, now, tau, due, T)
  -- from_sums and next_rate are inlined below: this runs for every ancestor
  -- of every update.  Ancestors sampled dt ms ago share exp(-dt / tau).
  local last_x, last_a
  for j = i - 1, 1, -1 do
    local rec = recs[j]
    if not rec or #rec < HOT_BYTES then return false end
    local kind, id, pid, wm, start, p, upd, er, began, own, sw, swp, swpc = sunpack(PARENT_HOT, rec)
    if kind ~= PARENT or id ~= cpid then return false end
    if due then -- history_due, inlined
      local a = upd - start
      if a + (-a) % HIST_STEP < now - start then
        local m = due.n
        due[m + 1], due[m + 2], due[m + 3], due[m + 4], due[m + 5] = T, id, start, upd, p
        due.n = m + 5
      end
    end
    local s
    if nst ~= ost then -- the child's status moved: this parent's counts change too
      s = read_node(rec)
      s[COUNTS] = recount(s[COUNTS], ost, nst)
    end
    if nw ~= ow or np ~= op then
      if nw ~= ow then sw = sw + (nw - ow) end
      local x = nw * np
      local t = swp + x
      if (swp < 0 and -swp or swp) >= (x < 0 and -x or x) then swpc = swpc + ((swp - t) + x)
      else swpc = swpc + ((x - t) + swp) end
      x, swp = -(ow * op), t
      t = swp + x
      if (swp < 0 and -swp or swp) >= (x < 0 and -x or x) then swpc = swpc + ((swp - t) + x)
      else swpc = swpc + ((x - t) + swp) end
      swp = t
      if sw <= 0 then sw, swp, swpc = 0, 0, 0 end
    end
    local p0 = p == p and p or 0
    if sw > 0 then
      p = (swp + swpc) / sw
      if p < SNAP then p = 0 elseif p > 1 - SNAP then p = 1 end
    else
      p = own
    end
    local p1 = p == p and p or 0
    if start < now then
      local dt = now - upd
      if dt < 1 then dt = 1 end
      local x = dt / tau
      local a
      if x == last_x then
        a = last_a
      else
        a = x < 1e-3 and x - x * x / 2 or 1 - mexp(-x)
        last_x, last_a = x, a
      end
      local b = dt / (now - start)
      if b > a then a = b > 1 and 1 or b end
      local inst = (p1 - p0) / dt
      if er == er then er = er + a * (inst - er) else er = inst end
    end
    if began ~= began and p1 > 0 then began = now end
    if s then
      s[P], s[UPD], s[ER], s[BEGAN], s[SW], s[SWP], s[SWPC] = p, now, er, began, sw, swp, swpc
      recs[j] = pack_node(s)
    else
      recs[j] = spack(HOT_TAIL, PARENT, id, pid, wm, start, p, now, er, began, own, sw, swp, swpc,
        ssub(rec, HOT_BYTES + 1))
    end
    ow, op, nw, np, ost, nst, cpid = wm, p0, wm, p1, true, true, pid
  end
  return cpid == 0
end

-- Times, rate and end of node state s after an update changed it at time
-- now: from progress p0 (NaN as 0) and status st0.  Returns true when its
-- status entered a terminal one.
local function finish_node(s, p0, st0, now, tau)
  local p = s[P]
  if p ~= p then p = 0 end
  s[ER] = next_rate(s[ER], p, p0, s[START], s[UPD], now, tau)
  s[UPD] = now
  local status = s[STATUS]
  if s[BEGAN] ~= s[BEGAN] and (p > 0 or status == 'running' or TERMINAL[status]) then s[BEGAN] = now end
  if status ~= st0 then
    if TERMINAL[status] then
      s[FIN] = now
      return true
    end
    s[FIN] = 0 / 0
  end
  return false
end
