--@include slots
--@include count_status
--@include add_compensated
-- Roll this call's changes up the tree, deepest nodes first, so every node is
-- computed and written once per call however many of its descendants changed.
--
-- A node takes part when it had an update applied (APPLIED) or had a
-- descendant change (BELOW; a delete sets it on the detached node's parent).
-- For each such node, in this order:
--   sums      sw (Σ child weight units, an exact integer) and swp (Σ child
--             weight units × child progress) move by the deltas its children
--             left in DSW and DSWP: siblings are never read.  swp and its
--             deltas are compensated sums (add_compensated.lua): swp + swpc
--             is the exact sum of what the children hold now.
--   progress  when a descendant changed after the node's own last progress
--             post in this call (BELOW > POSTED): swp / sw if sw > 0, else
--             the node's own value (own: the progress last posted to it
--             directly, none if never).  Otherwise the posted value stands.
--             Values within 1e-10 of 0 or 1 snap to them, so float drift
--             never leaves a finished parent at 99.99999999 %.
--   times     start_time when new; update_time = now; end_time set when the
--             status changes to finished, failed or canceled (the node is then
--             listed in tree.ended), cleared when it changes to anything else.
--   eta       r, an exponentially weighted rate of progress per ms over a
--             time constant tau, sampled whenever the node changes (so a
--             stall lowers it).  A sample spanning dt ms weighs
--             max(1 - exp(-dt/tau), dt/age): while the node is younger than
--             tau that is the plain average rate since its start.  With two
--             samples, r > 0 and 0 < p < 1: eta = now + (1 - p) / r;
--             otherwise none.  Samples within the same ms are merged.
-- Then it leaves its own deltas in its parent: weight units, weighted
-- progress and the status count (children without a status count as 'none').
-- Returns the changed states, ancestors first.
local TERMINAL = { finished = true, failed = true, canceled = true }
local function rollup(tree, now, tau)
  local SNAP = 1e-10
  local MAX_ETA_MS = 3.2e11 -- about ten years; a slower rate gives no eta
  local NONE = 0 / 0
  local changed = {}
  for depth = tree.deepest, 0, -1 do
    local level = tree.levels[depth]
    for i = 1, level and #level or 0 do
      local s = level[i]
      if s[APPLIED] == 0 and s[BELOW] == 0 then
        -- Nothing applied at or below it: a node created for an update that
        -- was then refused is not created after all.
        if s[NEW] and s[PARENT] then s[PARENT][NC] = s[PARENT][NC] - 1 end
      else
        if s[DSW] ~= 0 or s[DSWP] ~= 0 or s[DSWPC] ~= 0 then
          s[SW] = s[SW] + s[DSW]
          add_compensated(s, SWP, SWPC, s[DSWP])
          add_compensated(s, SWP, SWPC, s[DSWPC])
          if s[SW] <= 0 then s[SW], s[SWP], s[SWPC] = 0, 0, 0 end
        end
        if s[BELOW] > s[POSTED] then
          if s[SW] > 0 then
            local q = (s[SWP] + s[SWPC]) / s[SW]
            if q < SNAP then q = 0 elseif q > 1 - SNAP then q = 1 end
            s[P] = q
          else
            s[P] = s[OWN]
          end
        end
        local p = s[P]
        if p ~= p then p = 0 end

        if s[NEW] then s[START] = now end
        s[UPD] = now
        local status = s[STATUS]
        if status ~= s[STATUS0] then
          if TERMINAL[status] then
            s[FIN] = now
            tree.ended[#tree.ended + 1] = s
          else
            s[FIN] = NONE
          end
        end

        local eT = s[ET]
        if eT ~= eT then
          s[EP], s[ET] = p, now
        elseif now > eT then
          local dt = now - eT
          local inst = (p - s[EP]) / dt
          local a = 1 - math.exp(-dt / tau)
          local age = now - s[START]
          if dt / age > a then a = dt / age end
          local r = s[ER]
          if r == r then s[ER] = r + a * (inst - r) else s[ER] = inst end
          s[EP], s[ET] = p, now
        end
        local r = s[ER]
        if r > 0 and p > 0 and p < 1 and (1 - p) / r < MAX_ETA_MS then -- NaN r fails r > 0
          s[ETA] = math.floor(now + (1 - p) / r + 0.5)
        else
          s[ETA] = NONE
        end

        local parent = s[PARENT]
        if parent then
          local wm = s[WM]
          parent[DSW] = parent[DSW] + (wm - s[WM0])
          add_compensated(parent, DSWP, DSWPC, wm * p)
          add_compensated(parent, DSWP, DSWPC, -(s[WM0] * s[P0]))
          if s[NEW] then
            count_status(parent, status, 1)
          elseif status ~= s[STATUS0] then
            count_status(parent, s[STATUS0], -1)
            count_status(parent, status, 1)
          end
          local b = s[APPLIED] > s[BELOW] and s[APPLIED] or s[BELOW]
          if b > parent[BELOW] then parent[BELOW] = b end
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
