-- UTC calendar arithmetic without os.time, which reads a date table as local time.
local time = {}

-- Days since 1970-01-01 of a proleptic Gregorian date.
function time.days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

function time.epoch(y, m, d, hh, mm, ss)
  return time.days_from_civil(y, m, d) * 86400 + (hh or 0) * 3600 + (mm or 0) * 60 + (ss or 0)
end

-- ISO 8601 as AWS and GitHub write it ("2026-12-01T10:00:00Z", ".123Z", "+02:00") -> epoch
-- seconds, or nil when it is not such a time.
function time.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, hh, mm, ss, rest = s:match("^%s*(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)(.-)%s*$")
  if not y then return nil end
  local frac, zone = rest:match("^(%.?%d*)(.*)$")
  local t = time.epoch(tonumber(y), tonumber(mo), tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
  if frac ~= "" and frac ~= "." then t = t + tonumber("0" .. frac) end
  if zone == "Z" or zone == "" then return t end
  local sign, zh, zm = zone:match("^([%+%-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local offset = tonumber(zh) * 3600 + tonumber(zm) * 60
  return sign == "+" and t - offset or t + offset
end

function time.iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

-- The wall clock now, as the run records write it.
function time.now_iso() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

-- A run's length for people: 4.2s, 3m05s, 2h10m.
function time.duration(s)
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, (s % 3600) // 60)
end

-- time.duration, with milliseconds under a second (a unit test's 12ms); "" when s is no number.
function time.duration_fine(s)
  if type(s) ~= "number" then return "" end
  if s < 1 then return ("%dms"):format(math.floor(s * 1000 + 0.5)) end
  return time.duration(s)
end

-- An ISO 8601 time for people: "2026-12-01 10:00:00 UTC"; another string as it is, "" for none.
function time.human(iso)
  if type(iso) ~= "string" then return "" end
  local d, t = iso:match("^(%d%d%d%d%-%d%d%-%d%d)T(%d%d:%d%d:%d%d)")
  return d and (d .. " " .. t .. " UTC") or iso
end

-- The time of day of an ISO 8601 time, "10:00:00", or "".
function time.clock(iso)
  return type(iso) == "string" and iso:match("T(%d%d:%d%d:%d%d)") or ""
end

return time
