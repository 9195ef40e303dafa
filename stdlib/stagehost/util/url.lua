-- Percent-encoding as RFC 3986 has it: every byte but the unreserved A-Z a-z 0-9 - . _ ~ as
-- %XX. AWS (SigV4, the Query protocol), GitHub and report links all want exactly this.
local url = {}

function url.encode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- %XX back to bytes; a broken escape stays as it was. plus_is_space for form bodies.
function url.decode(s, plus_is_space)
  if plus_is_space then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

return url
