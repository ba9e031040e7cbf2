-- The name a status counts under (and is indexed by, children.lua): '' is 'none'.
local function status_name(status)
  return status ~= '' and status or 'none'
end

-- Children's status counts (JSON object text status -> count, '' for none)
-- after a child moved from status old to status new ('' counts as 'none';
-- false is no child).
local function recount(counts, old, new)
  local c = counts ~= '' and cjson.decode(counts) or {}
  if old then
    local k = status_name(old)
    local v = (c[k] or 0) - 1
    if v > 0 then c[k] = v else c[k] = nil end
  end
  if new then
    local k = status_name(new)
    c[k] = (c[k] or 0) + 1
  end
  return next(c) and cjson.encode(c) or ''
end
