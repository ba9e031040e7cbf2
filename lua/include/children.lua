--@include prelude
--@include record
-- The children of a parent, in first-seen order.  Up to MAX_LISTED of them
-- are listed in the parent's own record: each entry its first-seen position
-- (uint32) and last key segment (uint8 length).  Past that the parent is
-- *wide*: its children move to the sorted set '<prefix>:{<root>}:c:<id>'
-- (score: first-seen position), where adding, removing and paging stay
-- O(log n) however many there are.  A small tree so needs no key besides
-- its record hash, and a record's list costs a few bytes a child.
local MAX_LISTED = 64
local ENTRY = '<I4Bc0'

-- The (position, segment) pairs of a list, as a flat array.
local function listed(kids)
  local out, pos = {}, 1
  while pos <= #kids do
    local order, seg
    order, seg, pos = sunpack(ENTRY, kids, pos)
    out[#out + 1] = order
    out[#out + 1] = seg
  end
  return out
end

-- Add child seg at first-seen position order to parent state s (of tree T,
-- key prefix '<prefix>:{<root>}:').  A wide parent's new children are
-- collected in born (id -> ZADD arguments) and written in one ZADD.
local function add_child(T, s, order, seg, born)
  if s[WIDE] == 1 then
    local args = born[s[ID]]
    if args == nil then
      args = {}
      born[s[ID]] = args
    end
    args[#args + 1] = order
    args[#args + 1] = seg
  elseif s[NC] <= MAX_LISTED then -- s[NC] counts the new child already
    s[KIDS] = s[KIDS] .. spack(ENTRY, order, #seg, seg)
  else
    local args = listed(s[KIDS])
    args[#args + 1] = order
    args[#args + 1] = seg
    rcall('ZADD', T .. 'c:' .. sformat('%d', s[ID]), unpack(args))
    s[WIDE], s[KIDS] = 1, ''
  end
end

-- Remove child seg from parent state s.
local function remove_child(T, s, seg)
  if s[WIDE] == 1 then
    rcall('ZREM', T .. 'c:' .. sformat('%d', s[ID]), seg)
    return
  end
  local pairs_ = listed(s[KIDS])
  local parts = {}
  for j = 1, #pairs_, 2 do
    if pairs_[j + 1] ~= seg then parts[#parts + 1] = spack(ENTRY, pairs_[j], #pairs_[j + 1], pairs_[j + 1]) end
  end
  s[KIDS] = table.concat(parts)
end

-- One page of the children of a parent record: up to limit segments after
-- first-seen position cursor ('' or nil: from the first), in out[first..],
-- and the cursor of the next page (the last position listed) or false.
local function children_page(T, raw, id, limit, cursor, out, first)
  local wide, kids = record_children(raw)
  local after = (cursor and cursor ~= '') and tonumber(cursor) or -1
  local n = 0
  local last
  if wide == 1 then
    local page = rcall('ZRANGEBYSCORE', T .. 'c:' .. id, after < 0 and '-inf' or '(' .. sformat('%d', after),
                       '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
    for j = 1, #page, 2 do
      if n == limit then return n, last end
      n = n + 1
      out[first + n - 1] = page[j]
      last = page[j + 1]
    end
    return n, false
  end
  local pos = 1
  while pos <= #kids do
    local order, seg
    order, seg, pos = sunpack(ENTRY, kids, pos)
    if order > after then
      if n == limit then return n, sformat('%d', last) end
      n = n + 1
      out[first + n - 1] = seg
      last = order
    end
  end
  return n, false
end

-- What collect_garbage.lua needs to free the children of a detached parent
-- record: its entry for the tree's gc list, '<id> <key>' for a wide one
-- (whose children it pops from 'c:<id>'), '<id> <key>|<seg> <seg> ...' for
-- one that listed them itself; nil when it had none.
local function gc_entry(raw, key)
  local id, _, nc = record_links(raw, key)
  if nc == 0 then return nil end
  local wide, kids = record_children(raw)
  local head = sformat('%d', id) .. ' ' .. key
  if wide == 1 then return head end
  local segs = listed(kids)
  local names = {}
  for j = 2, #segs, 2 do names[#names + 1] = segs[j] end
  return head .. '|' .. table.concat(names, ' ')
end
