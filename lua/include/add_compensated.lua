-- s[hi] + s[lo] += x, with Neumaier's compensated summation: s[lo] carries
-- the rounding error of every addition to s[hi].  A running sum that a child
-- of weight 1e6 entered and left again returns to its exact value, instead
-- of keeping that child's rounding error (about 1e-7) forever.
local function add_compensated(s, hi, lo, x)
  local a = s[hi]
  local t = a + x
  if math.abs(a) >= math.abs(x) then
    s[lo] = s[lo] + ((a - t) + x)
  else
    s[lo] = s[lo] + ((x - t) + a)
  end
  s[hi] = t
end
