--@include slots
--@include record_format
-- A node state (see slots.lua) from its stored record, built by one array
-- constructor.  Client fields and status counts stay packed until needed.
local function unpack_record(raw, key, seg, parent, depth)
  local id, pid, n, nc, wm, p, own, sw, swp, ts, start, upd, fin, eP, eT, eR, eta, swpc, status, fields, pos =
    struct.unpack(RECORD_FORMAT, raw)
  return { id, pid, n, nc, wm, p, own, sw, swp, ts, start, upd, fin, eP, eT, eR, eta, status, fields,
           string.sub(raw, pos), key, seg or false, parent or false, depth, 0, 0, 0, 0, 0,
           wm, (p == p) and p or 0, status, false, false, swpc, 0 }
end
