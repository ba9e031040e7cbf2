--[[
  Read nodes, each with the first page of its children's segments.

  Input:
    KEYS[i]   root hash of the i-th tree involved, '<prefix>:{<root>}:root'
    ARGV[1]   children page size, 1 to 10000
    ARGV[2]   cursor for the children of request 1: its first-seen position
              is an exclusive lower bound; "" starts at the first child
    ARGV[3]   msgpack array of requests:
                { 'k', i, node_key }    the node node_key of tree i
                { 'c', i, parent_key, parent_hash, parent_id, seg1, seg2, ... }
                                        children of a node read before
  Output:
    msgpack array, one entry per request:
      'k'  a record, or false when there is no such node
      'c'  an array with a record per segment (false for a child that is
           gone), or false when the parent no longer has that id (it was
           deleted after the caller read it: its children are garbage)
    record = { json, hash_key, id, children_total, next_cursor|false, seg1, seg2, ... }
      json         the node's public JSON object (see node_json.lua)
      next_cursor  first-seen position of the last listed child when more follow
  Errors:
    bad-batch <reason>   a malformed request
]]
local limit = tonumber(ARGV[1])
local first_cursor = ARGV[2]
local ok, requests = pcall(cmsgpack.unpack, ARGV[3])

--@include hash_fields
--@include node_json

if not ok or type(requests) ~= 'table' or limit == nil or limit < 1 or limit > 10000 then
  return redis.error_reply('bad-batch malformed read request')
end

-- The record of the node stored in hash h under node key `key`.
local function record(T, key, h, f, cursor)
  local id = f._id
  local c = T .. 'c:' .. id
  local rec = { node_json(key, f), h, id, redis.call('ZCARD', c), false }
  if rec[4] > 0 then
    local min = (cursor and cursor ~= '') and ('(' .. cursor) or '-inf'
    local page = redis.call('ZRANGEBYSCORE', c, min, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
    local n = #page / 2
    if n > limit then
      n = limit
      rec[5] = page[2 * limit]
    end
    for j = 1, n do rec[5 + j] = page[2 * j - 1] end
  end
  return rec
end

local out = {}
for r, q in ipairs(requests) do
  local tk = KEYS[q[2]]
  if type(tk) ~= 'string' then return redis.error_reply('bad-batch request ' .. r .. ' names no tree') end
  local T = string.sub(tk, 1, -5)
  if q[1] == 'k' then
    local key = q[3]
    local root = string.match(tk, '{(.*)}:root$')
    local h = T .. 'root'
    local f = hash_fields(h)
    if f._id and key ~= root then
      for seg in string.gmatch(string.sub(key, #root + 2), '[^.]+') do
        h = T .. 'n:' .. f._id .. '/' .. seg
        f = hash_fields(h)
        if f._id == nil then break end
      end
    end
    if f._id then out[r] = record(T, key, h, f, r == 1 and first_cursor) else out[r] = false end
  elseif q[1] == 'c' then
    if redis.call('HGET', q[4], '_id') ~= q[5] then
      out[r] = false
    else
      local recs = {}
      for j = 6, #q do
        local h = T .. 'n:' .. q[5] .. '/' .. q[j]
        local f = hash_fields(h)
        if f._id then recs[j - 5] = record(T, q[3] .. '.' .. q[j], h, f, nil) else recs[j - 5] = false end
      end
      out[r] = recs
    end
  else
    return redis.error_reply('bad-batch unknown request kind')
  end
end
return cmsgpack.pack(out)
