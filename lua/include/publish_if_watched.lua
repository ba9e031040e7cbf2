-- Publish `message` on the channel '<base>f' when '<base>w' (a watch marker
-- some server keeps alive while it has live-feed subscribers) exists.
-- `feed` is "PUBLISH", "SPUBLISH" or "" (no live feed).
local function publish_if_watched(feed, base, message)
  if feed ~= '' and redis.call('EXISTS', base .. 'w') == 1 then
    redis.call(feed, base .. 'f', message)
  end
end
