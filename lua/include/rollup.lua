--@include fmt
--@include weight_units
--@include status_of
--@include count_status
-- Roll this call's changes up the tree, deepest nodes first, so every node is
-- computed and written once per call however many of its descendants changed.
--
-- A node takes part when it is new, had an update applied (s.applied: batch
-- position of its last applied update) or had a descendant change (s.below:
-- the latest such position; a delete sets it on the detached node's parent).
-- For each such node, in this order:
--   sums      _sw (Σ child weight units, an exact integer) and _swp (Σ child
--             weight units × child progress) move by the deltas its children
--             left in s.dsw and s.dswp: siblings are never read.
--   progress  when a descendant changed after the node's own last progress
--             post in this call (s.below > s.posted): _swp / _sw if _sw > 0,
--             else the node's own value (_own: the progress last posted to it
--             directly, none if never).  Otherwise the posted value stands.
--             Values within 1e-10 of 0 or 1 snap to them, so float drift
--             never leaves a finished parent at 99.99999999 %.
--   times     start_time when new; update_time = now; end_time set when the
--             status changes to finished, failed or canceled, removed when it
--             changes to anything else.
--   eta       r, an exponentially weighted rate of progress per ms over a
--             time constant tau, sampled whenever the node changes (a stall
--             lowers it).  The weight of a sample of dt ms is
--             max(1 - exp(-dt/tau), dt/age): while the node is younger than
--             tau that is the plain average rate since its start.  With two
--             samples, r > 0 and 0 < p < 1: eta = now + (1 - p) / r;
--             otherwise no eta.  Samples within the same ms are merged.
-- Then it leaves its own deltas in its parent: weight units, weighted
-- progress and the status count (children without a status count as 'none').
-- Returns the changed states, ancestors first.
local function rollup(tree, now, tau)
  local TERMINAL = { finished = true, failed = true, canceled = true }
  local SNAP = 1e-10
  local MAX_ETA_MS = 3.2e11 -- about ten years; a slower rate gives no eta
  local now_s = fmt(now)
  local changed = {}
  for depth = tree.deepest, 0, -1 do
    for _, s in ipairs(tree.levels[depth] or {}) do
      if s.new or s.applied > 0 or s.below > 0 then
        local f, dirty = s.f, s.dirty

        if s.dsw ~= 0 or s.dswp ~= 0 then
          local sw = (tonumber(f._sw) or 0) + s.dsw
          local swp = (tonumber(f._swp) or 0) + s.dswp
          if sw <= 0 then sw, swp = 0, 0 end
          f._sw, f._swp = fmt(sw), fmt(swp)
          dirty._sw, dirty._swp = true, true
        end

        if s.below > s.posted then
          local sw = tonumber(f._sw) or 0
          if sw > 0 then
            local p = tonumber(f._swp) / sw
            if p < SNAP then p = 0 elseif p > 1 - SNAP then p = 1 end
            f.progress = fmt(p)
          else
            f.progress = f._own
          end
          dirty.progress = true
        end
        local p = tonumber(f.progress) or 0

        if s.new then
          f.start_time = now_s
          dirty.start_time = true
        end
        f.update_time = now_s
        dirty.update_time = true
        local status = status_of(f.status)
        if status ~= s.status0 then
          if TERMINAL[status] then f.end_time = now_s else f.end_time = nil end
          dirty.end_time = true
        end

        local t0 = tonumber(f._eT)
        if t0 == nil then
          f._eP, f._eT = fmt(p), now_s
          dirty._eP, dirty._eT = true, true
        elseif now > t0 then
          local dt = now - t0
          local inst = (p - tonumber(f._eP)) / dt
          local a = 1 - math.exp(-dt / tau)
          local age = now - (tonumber(f.start_time) or t0)
          if dt / age > a then a = dt / age end
          local r = tonumber(f._eR)
          if r then r = r + a * (inst - r) else r = inst end
          f._eR, f._eP, f._eT = fmt(r), fmt(p), now_s
          dirty._eR, dirty._eP, dirty._eT = true, true, true
        end
        local r = tonumber(f._eR)
        local eta = nil
        if r and r > 0 and p > 0 and p < 1 and (1 - p) / r < MAX_ETA_MS then
          eta = fmt(math.floor(now + (1 - p) / r + 0.5))
        end
        if eta ~= f.eta then
          f.eta = eta
          dirty.eta = true
        end

        local parent = s.parent
        if parent then
          local wm = weight_units(f.weight)
          if s.new then
            parent.dsw = parent.dsw + wm
            parent.dswp = parent.dswp + wm * p
          else
            parent.dsw = parent.dsw + (wm - s.wm0)
            parent.dswp = parent.dswp + (wm * p - s.wm0 * s.p0)
          end
          if s.new or status ~= s.status0 then
            if not s.new then count_status(parent, s.status0, -1) end
            count_status(parent, status, 1)
          end
          local b = s.applied > s.below and s.applied or s.below
          if b > parent.below then parent.below = b end
        end
        changed[#changed + 1] = s
      end
    end
  end
  local n = #changed
  for i = 1, math.floor(n / 2) do
    changed[i], changed[n + 1 - i] = changed[n + 1 - i], changed[i]
  end
  return changed
end
