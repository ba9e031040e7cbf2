-- Library functions as locals: a global lookup is two table lookups, and the
-- write path makes dozens per update.  Every script calls bind() before
-- anything else: a function library (engine/scripts.py) sees no globals
-- while it loads, only when its functions run.
local rcall, spack, sunpack, sbyte, ssub, sfind, sgsub, sformat, mexp, mabs, mfloor
local function bind()
  rcall, spack, sunpack = redis.call, struct.pack, struct.unpack
  sbyte, ssub, sfind, sgsub, sformat = string.byte, string.sub, string.find, string.gsub, string.format
  mexp, mabs, mfloor = math.exp, math.abs, math.floor
end
