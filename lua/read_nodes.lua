--[[
  Read nodes' records, each with the first page of its children's segments.

  Input:
    KEYS[i]   record hash of the i-th tree involved, '<prefix>:{<root>}:t'
    ARGV[1]   children page size, 1 to 10000
    ARGV[2]   cursor for the children of request 1: a first-seen position,
              exclusive lower bound; "" starts at the first child
    ARGV[3]   msgpack array of requests:
                { 'k', i, node_key }   the node node_key of tree i
                { 'c', i, parent_key, parent_id, seg1, seg2, ... }
                                       children of a node read before
              (node keys relative to the tree root, '' the root)
    ARGV[4]   most child keys this call may list in all ("" for no limit)
    ARGV[5]   list only the children of request 1 in this status ('none' for
              none; "" or absent: all of them)
  Output:
    msgpack array, one entry per request:
      'k'  a reply, or false when there is no such node
      'c'  an array with a reply per segment (false for a child that is
           gone), or false when the parent no longer has that id (it was
           deleted after the caller read it: its children are garbage)
    reply = { record, id, children_total, next_cursor|false, seg1, seg2, ... }
      record       the stored record (record.lua)
      children_total  of request 1 with ARGV[5], its children in that status
      next_cursor  first-seen position of the last listed child when more follow
  Errors:
    bad-batch <reason>       a malformed request
    too-many-nodes <limit>   listing the children would pass ARGV[4]
    bad-record <key>         a stored record of another format
]]
local limit = tonumber(ARGV[1])
local first_cursor = ARGV[2]
local ok, requests = pcall(cmsgpack.unpack, ARGV[3])
local budget = tonumber(ARGV[4] or '')
local in_status = ARGV[5] or ''
local over = false

--@include prelude
--@include record
--@include tree
--@include children

bind()

if not ok or type(requests) ~= 'table' or limit == nil or limit < 1 or limit > 10000 then
  return redis.error_reply('bad-batch malformed read request')
end

-- The reply for the node key of tree whose record is raw: its record, and a
-- page of its children when it has nc of them (only those in status name,
-- when given).
local function reply(tree, key, raw, id, nc, cursor, name)
  local rep = { raw, id, nc, false }
  if name then
    local counts = select(COUNTS, sunpack(PARENT_FORMAT, raw))
    nc = counts ~= '' and cjson.decode(counts)[name] or 0
    rep[3] = nc
  end
  if nc > 0 then
    local n, nxt
    if name then
      n, nxt = children_page_in(tree, key, raw, id, name, limit, cursor, rep, 5)
    else
      n, nxt = children_page(tree.T, raw, id, limit, cursor, rep, 5)
    end
    rep[4] = nxt
    if budget then
      budget = budget - n
      if budget < 0 then over = true end
    end
  end
  return rep
end

local out = {}
for r, q in ipairs(requests) do
  local t = KEYS[q[2]]
  local root = t and string.match(t, '{(.*)}:t$')
  if root == nil then return redis.error_reply('bad-batch request ' .. r .. ' names no tree') end
  local tree = new_tree(t, root)
  if type(q[3]) ~= 'string' then return redis.error_reply('bad-batch request ' .. r .. ' names no node') end
  local ks = path_of(q[3])
  if ks == nil then return redis.error_reply('bad-batch request ' .. r .. ' names no node') end
  if q[1] == 'k' then
    fetch_paths(tree, { ks })
    if intact(tree, ks) == #ks then
      local raw = tree.raw[q[3]]
      local id, _, nc = record_links(raw, q[3])
      local name = r == 1 and in_status ~= '' and nc > 0 and in_status or nil
      out[r] = reply(tree, q[3], raw, sformat('%d', id), nc, r == 1 and first_cursor, name)
    else
      out[r] = false
    end
  elseif q[1] == 'c' then
    fetch_paths(tree, { ks })
    local pid = intact(tree, ks) == #ks and record_links(tree.raw[q[3]], q[3])
    if not pid or sformat('%d', pid) ~= q[4] then
      out[r] = false
    else
      local keys = {}
      local prefix = q[3] == '' and '' or q[3] .. '.'
      for j = 5, #q do keys[#keys + 1] = prefix .. q[j] end
      fetch_paths(tree, { keys })
      local replies = {}
      for j, key in ipairs(keys) do
        local raw = tree.raw[key]
        replies[j] = false
        if raw then
          local id, rpid, nc = record_links(raw, key)
          if rpid == pid then replies[j] = reply(tree, key, raw, sformat('%d', id), nc, nil, nil) end
        end
      end
      out[r] = replies
    end
  else
    return redis.error_reply('bad-batch unknown request kind')
  end
  if over then return redis.error_reply('too-many-nodes ' .. ARGV[4]) end
end
return cmsgpack.pack(out)
