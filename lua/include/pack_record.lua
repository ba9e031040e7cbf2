--@include slots
--@include record_format
-- The stored record of state s (see record_format.lua).  Client fields and
-- status counts that were unpacked (tables) are packed again.
local function pack_record(s)
  local fields = s[FIELDS]
  if type(fields) == 'table' then fields = next(fields) and cmsgpack.pack(fields) or '' end
  local counts = s[COUNTS]
  if type(counts) == 'table' then counts = next(counts) and cmsgpack.pack(counts) or '' end
  local packed = struct.pack(RECORD_FORMAT, s[ID], s[PID], s[N], s[NC], s[WM], s[P], s[OWN], s[SW],
    s[SWP], s[TS], s[START], s[UPD], s[FIN], s[EP], s[ET], s[ER], s[ETA], s[SWPC], #s[STATUS], s[STATUS],
    #fields, fields)
  if counts == '' then return packed end
  return packed .. counts
end
