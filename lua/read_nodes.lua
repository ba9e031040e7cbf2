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
    ARGV[4]   most child keys this call may list in all ("" for no limit)
  Output:
    msgpack array, one entry per request:
      'k'  a reply, or false when there is no such node
      'c'  an array with a reply per segment (false for a child that is
           gone), or false when the parent no longer has that id (it was
           deleted after the caller read it: its children are garbage)
    reply = { record, id, children_total, next_cursor|false, seg1, seg2, ... }
      record       the stored record (record_format.lua)
      next_cursor  first-seen position of the last listed child when more follow
  Errors:
    bad-batch <reason>       a malformed request
    too-many-nodes <limit>   listing the children would pass ARGV[4]
]]
local limit = tonumber(ARGV[1])
local first_cursor = ARGV[2]
local ok, requests = pcall(cmsgpack.unpack, ARGV[3])
local budget = tonumber(ARGV[4] or '')
local over = false

--@include path_keys
--@include fetch_records
--@include load_node
--@include new_tree

if not ok or type(requests) ~= 'table' or limit == nil or limit < 1 or limit > 10000 then
  return redis.error_reply('bad-batch malformed read request')
end

-- The reply for a node of tree T: its record, and a page of its children
-- when it has nc of them.
local function reply(T, raw, id, nc, cursor)
  local rep = { raw, id, nc, false }
  if nc > 0 then
    local min = (cursor and cursor ~= '') and ('(' .. cursor) or '-inf'
    local page = redis.call('ZRANGEBYSCORE', T .. 'c:' .. id, min, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
    local n = #page / 2
    if n > limit then
      n = limit
      rep[4] = page[2 * limit]
    end
    if budget then
      budget = budget - n
      if budget < 0 then over = true end
    end
    for j = 1, n do rep[4 + j] = page[2 * j - 1] end
  end
  return rep
end

local out = {}
for r, q in ipairs(requests) do
  local t = KEYS[q[2]]
  local root = t and string.match(t, '{(.*)}:t$')
  if root == nil then return redis.error_reply('bad-batch request ' .. r .. ' names no tree') end
  local tree = new_tree(t, root)
  if q[1] == 'k' then
    local keys = {}
    path_keys(tree, q[3], keys)
    fetch_records(tree, keys)
    local s = load_node(tree, q[3], false)
    out[r] = s and reply(tree.T, tree.raw[q[3]], string.format('%d', s[ID]), s[NC],
                         r == 1 and first_cursor) or false
  elseif q[1] == 'c' then
    local parent = load_node(tree, q[3], false)
    if parent == nil or string.format('%d', parent[ID]) ~= q[4] then
      out[r] = false
    else
      local keys = {}
      for j = 5, #q do keys[#keys + 1] = q[3] .. '.' .. q[j] end
      fetch_records(tree, keys)
      local pid = parent[ID]
      local replies = {}
      for j, key in ipairs(keys) do
        local raw = tree.raw[key]
        replies[j] = false
        if raw then
          -- Only the first four numbers matter here: id, parent id, n, nc.
          local id, rpid, _, nc = struct.unpack('<dddd', raw)
          if rpid == pid then replies[j] = reply(tree.T, raw, string.format('%d', id), nc, nil) end
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
