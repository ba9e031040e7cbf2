--@include prelude
-- Listing a child (a tree, or an inner namespace) in a namespace's indexes:
-- the first-seen index first ('<prefix>:{<ns>}:ns', a sorted set scored by
-- the counter first .. 'n') and the recency index first .. 'r' (scored by
-- the last update's ms, only ever raised).  Returns 1 when the child was
-- listed for the first time, else 0.
local function list_child(first, child, now)
  local added = 0
  if rcall('ZSCORE', first, child) == false then
    rcall('ZADD', first, rcall('INCR', first .. 'n'), child)
    added = 1
  end
  rcall('ZADD', first .. 'r', 'GT', now, child)
  return added
end
