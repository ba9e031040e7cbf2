--@include prelude
-- Whether the changes under '<base>' go out on its live-feed channel
-- '<base>f': feed ("PUBLISH", "SPUBLISH" or "" for no live feed) is set and
-- the watch marker '<base>w' exists (some server keeps it alive while it has
-- subscribers).  Callers build the message only when it does.
local function watched(feed, base)
  return feed ~= '' and rcall('EXISTS', base .. 'w') == 1
end
