-- GCRA over every bucket a request counts against, atomically: all admit and all are charged,
-- or none is charged. Time is Redis' own clock (TIME) so every replica shares one clock.
--
-- KEYS[i]    bucket key i, all hash-tagged by one tenant ({t:<tenant>}) so they share a slot
-- ARGV[1]    cost: hits to charge (0 only reads the state)
-- ARGV[2i]   emission interval of bucket i in microseconds (period / count)
-- ARGV[2i+1] tolerance of bucket i in microseconds (burst x interval)
-- Returns    {admitted (1|0), now_us, then per bucket: remaining, reset_us, retry_us}
--            reset_us: until the bucket is full again; retry_us: until this cost would pass.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cost = tonumber(ARGV[1])
local admitted = 1
local tats = {}
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tats[i] = tat
  if tat + cost * tonumber(ARGV[2 * i]) - tonumber(ARGV[2 * i + 1]) - now > 0 then
    admitted = 0
  end
end
local new_tats = {}
local out = {0, now}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tats[i]
  local new_tat = tat + cost * interval
  local retry = new_tat - tolerance - now
  if admitted == 1 then
    new_tats[i] = new_tat
    out[#out + 1] = math.floor((tolerance - (new_tat - now)) / interval)
    out[#out + 1] = new_tat - now
  else
    -- Refused: nothing is charged, so every bucket reports its state as it is, the ones that
    -- would have admitted too (a replica's batched mirror learns from these).
    out[#out + 1] = math.max(0, math.floor((tolerance - (tat - now)) / interval))
    out[#out + 1] = tat - now
  end
  out[#out + 1] = math.max(0, retry)
end
if admitted == 1 and cost > 0 then
  for i = 1, #KEYS do
    -- A key expires once its bucket is full again: an absent key and a full bucket are the same.
    local ttl_ms = math.ceil((new_tats[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', new_tats[i]), 'PX', ttl_ms)
  end
end
out[1] = admitted
return out
