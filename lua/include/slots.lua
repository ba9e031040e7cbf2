-- Slots of a node state.  A state is an array, not a table of named fields:
-- it is built for every node a call touches, and an array of 34 values costs
-- a third of the time and a fifth of the memory (bench/README.md).
-- 1-19 are the stored record (record_format.lua), in its order:
local ID, PID, N, NC, WM, P, OWN, SW, SWP, TS = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local START, UPD, FIN, EP, ET, ER, ETA, STATUS, FIELDS, COUNTS = 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
-- 21-34 exist only during a call:
--   KEY, SEG     node key and its last segment      PARENT  parent state or false
--   DEPTH        levels below the tree root
--   APPLIED      batch position of the node's last applied update (0: none)
--   BELOW        latest batch position of a change below it (0: none)
--   POSTED       batch position of its last progress post (0: none)
--   DSW, DSWP    deltas its children left in sw and swp
--   WM0, P0, STATUS0  weight units, progress and status it had when loaded
--                (what its parent's sums and counts hold for it)
--   NEW          created in this call        ORDER  its first-seen position (new only)
local KEY, SEG, PARENT, DEPTH, APPLIED, BELOW, POSTED = 21, 22, 23, 24, 25, 26, 27
local DSW, DSWP, WM0, P0, STATUS0, NEW, ORDER = 28, 29, 30, 31, 32, 33, 34
-- 35 is stored too (after eta in the record): SWPC, the compensation of SWP.
-- 36 exists only during a call: DSWPC, the compensation of DSWP.
local SWPC, DSWPC = 35, 36
