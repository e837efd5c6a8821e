-- Batched mode's sync: charge hits that a replica already admitted locally, unconditionally,
-- and return the bucket's state so the replica can refresh its local mirror.
--
-- KEYS[1]  bucket key, hash-tagged by tenant ({t:<tenant>})
-- ARGV[1]  hits admitted locally since the last sync (0 only reads)
-- ARGV[2]  emission interval in microseconds (period / count)
-- ARGV[3]  floor in microseconds, on this clock as the replica estimates it: the bucket's tat
--          before these hits as the replica saw it. The hits count from there, not from now,
--          so the time since they were admitted is credited; a floor past now (a clock
--          estimate off, a failover to another clock) counts as now.
-- Returns  {tat_us, now_us}: the theoretical arrival time after the charge, and Redis' clock
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local hits = tonumber(ARGV[1])
local floor = math.min(tonumber(ARGV[3]), now)
local tat = tonumber(redis.call('GET', KEYS[1])) or floor
if tat < floor then tat = floor end
tat = tat + hits * tonumber(ARGV[2])
-- A tat at or before now is a full bucket, as an absent key is: nothing to store.
if hits > 0 and tat > now then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return {tat, now}
