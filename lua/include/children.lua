--@include prelude
--@include record
--@include counts
--@include call_chunked
--@include fetch
-- The children of a parent, in first-seen order.  Up to MAX_LISTED of them
-- are listed in the parent's own record: each entry its first-seen position
-- (uint32) and last key segment (uint8 length).  Past that the parent is
-- *wide*: its children move to the sorted set '<prefix>:{<root>}:c:<id>'
-- (score: first-seen position), where adding, removing and paging stay
-- O(log n) however many there are.  A small tree so needs no key besides
-- its record hash, and a record's list costs a few bytes a child.
--
-- A wide parent also keeps its children by status, for paging through only
-- the failed ones (say) of 100,000: the sorted set '<prefix>:{<root>}:s:<id>',
-- every member of score 0, ordered by its bytes (ZRANGE ... BYLEX): the
-- child's status (uint16 length, big-endian, then the text; 'none' for
-- none), its first-seen position (uint32, big-endian) and its segment.  One
-- status's children are thus one range, in first-seen order.  A call notes
-- each child of a wide parent that it creates or whose status it changes
-- (tree.moved) and writes the net change once (write_tree).  A listed
-- parent's children by status are found by reading its (at most 64) records.
local MAX_LISTED = 64
local ENTRY = '<I4Bc0'
local BY_STATUS = '>Hc0I4'

-- The keys of the children (segments in a flat array of position, segment
-- pairs, as listed returns) of the node pkey.
local function listed_keys(pkey, entries)
  local prefix = pkey == '' and '' or pkey .. '.'
  local keys = {}
  for j = 2, #entries, 2 do keys[#keys + 1] = prefix .. entries[j] end
  return keys
end

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

-- The index member of a child in status name at first-seen position order.
local function status_member(name, order, seg)
  return spack(BY_STATUS, #name, name, order) .. seg
end

-- Note that the child seg (at first-seen position order, nil when not known
-- yet) of the wide parent of id pid went from status old (false: it is new)
-- to new.  A child noted twice in one call keeps its first old status.
local function note_status(tree, pid, seg, order, old, new)
  local moved = tree.moved
  if not moved then
    moved = {}
    tree.moved = moved
  end
  local byseg = moved[pid]
  if not byseg then
    byseg = {}
    moved[pid] = byseg
  end
  local e = byseg[seg]
  if e then e[3] = new else byseg[seg] = { order, old, new } end
end

-- Add child seg at first-seen position order to parent state s, of key pkey
-- in tree (tree.lua).  A wide parent's new children are collected in
-- tree.born (id -> ZADD arguments) and written in one ZADD.  A parent that
-- turns wide moves its listed children there, and into its status index.
local function add_child(tree, pkey, s, order, seg)
  if s[WIDE] == 0 and s[NC] <= MAX_LISTED then -- s[NC] counts the new child already
    s[KIDS] = s[KIDS] .. spack(ENTRY, order, #seg, seg)
    return
  end
  local born = tree.born
  local args = born[s[ID]]
  if args == nil then
    args = {}
    born[s[ID]] = args
  end
  if s[WIDE] == 0 then
    local kids = listed(s[KIDS])
    local keys = listed_keys(pkey, kids)
    fetch_paths(tree, { keys })
    for j = 1, #kids, 2 do
      args[#args + 1] = kids[j]
      args[#args + 1] = kids[j + 1]
      local raw = tree.raw[keys[(j + 1) / 2]]
      note_status(tree, s[ID], kids[j + 1], kids[j], false, raw and record_status(raw) or '')
    end
    s[WIDE], s[KIDS] = 1, ''
  end
  args[#args + 1] = order
  args[#args + 1] = seg
  note_status(tree, s[ID], seg, order, false, '')
end

-- Remove child seg, in status status, from parent state s (of tree T).
local function remove_child(T, s, seg, status)
  if s[WIDE] == 1 then
    local id = sformat('%d', s[ID])
    local order = rcall('ZSCORE', T .. 'c:' .. id, seg)
    rcall('ZREM', T .. 'c:' .. id, seg)
    if order then rcall('ZREM', T .. 's:' .. id, status_member(status_name(status), tonumber(order), seg)) end
    return
  end
  local pairs_ = listed(s[KIDS])
  local parts = {}
  for j = 1, #pairs_, 2 do
    if pairs_[j + 1] ~= seg then parts[#parts + 1] = spack(ENTRY, pairs_[j], #pairs_[j + 1], pairs_[j + 1]) end
  end
  s[KIDS] = table.concat(parts)
end

-- Before a call writes: the first-seen positions of the noted children of
-- wide parents whose status really moved (read here, so that on a Redis
-- Cluster a migrating slot fails the call before its first write).
local function resolve_moved(tree)
  for pid, byseg in pairs(tree.moved) do
    local c = tree.T .. 'c:' .. sformat('%d', pid)
    for seg, e in pairs(byseg) do
      if e[1] == nil and status_name(e[2]) ~= status_name(e[3]) then
        local order = rcall('ZSCORE', c, seg)
        e[1] = order and tonumber(order) or false -- false: not listed (never so in a sound tree)
      end
    end
    rcall('EXISTS', tree.T .. 's:' .. sformat('%d', pid))
  end
end

-- Write the net status moves of a call's noted children (resolve_moved ran).
local function write_moved(tree)
  for pid, byseg in pairs(tree.moved) do
    local gone, added = {}, {}
    for seg, e in pairs(byseg) do
      local order, old, new = e[1], e[2], e[3]
      if order and not (old and status_name(old) == status_name(new)) then
        if old then gone[#gone + 1] = status_member(status_name(old), order, seg) end
        added[#added + 1] = 0
        added[#added + 1] = status_member(status_name(new), order, seg)
      end
    end
    local key = tree.T .. 's:' .. sformat('%d', pid)
    if #gone > 0 then call_chunked('ZREM', key, gone) end
    if #added > 0 then call_chunked('ZADD', key, added, 2) end
  end
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

-- One page of the children in status name (a status_name) of a parent
-- record (of key pkey in tree, tree.lua), after first-seen position cursor:
-- as children_page.  A wide parent's come from its status index; a listed
-- one's records are read.
local function children_page_in(tree, pkey, raw, id, name, limit, cursor, out, first)
  local wide, kids = record_children(raw)
  local after = (cursor and cursor ~= '') and tonumber(cursor) or -1
  local n, last = 0, nil
  if wide == 1 then
    local head = spack('>Hc0', #name, name)
    local page = rcall('ZRANGE', tree.T .. 's:' .. id, '[' .. head .. spack('>I4', after + 1),
                       '[' .. head .. '\255\255\255\255\255', 'BYLEX', 'LIMIT', 0, limit + 1)
    for j = 1, #page do
      if n == limit then return n, sformat('%d', last) end
      local _, order, pos = sunpack(BY_STATUS, page[j])
      n = n + 1
      out[first + n - 1] = ssub(page[j], pos)
      last = order
    end
    return n, false
  end
  local entries = listed(kids)
  local keys = listed_keys(pkey, entries)
  fetch_paths(tree, { keys })
  for j = 1, #entries, 2 do
    local order, rec = entries[j], tree.raw[keys[(j + 1) / 2]]
    if order > after and rec and status_name(record_status(rec)) == name then
      if n == limit then return n, sformat('%d', last) end
      n = n + 1
      out[first + n - 1] = entries[j + 1]
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
