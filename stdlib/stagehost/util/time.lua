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

return time
