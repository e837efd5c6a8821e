-- Batched mode's sync: charge hits that a replica already admitted locally, unconditionally,
-- and return the bucket's state so the replica can refresh its local mirror.
--
-- KEYS[1]  bucket key, hash-tagged by tenant ({t:<tenant>})
-- ARGV[1]  hits admitted locally since the last sync (0 only reads)
-- ARGV[2]  emission interval in microseconds (period / count)
-- Returns  {tat_us, now_us}: the theoretical arrival time after the charge, and Redis' clock
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local hits = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
tat = tat + hits * tonumber(ARGV[2])
if hits > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return {tat, now}
