-- Text from a run made safe for a report: masked first, then cleaned of what a parser refuses,
-- then escaped for HTML/XML, a link, or markdown. Every writer takes run text through here: a
-- secret a stage printed or returned must not reach a page that is uploaded or mailed around.
local log = require("stagehost.log")
local url = require("stagehost.util.url")

local text = {}

-- Bytes a parser refuses: invalid UTF-8 becomes U+FFFD, control characters (and the colour
-- codes of terminal output) go, since XML 1.0 cannot carry them even as references.
local function sanitize(s)
  s = s:gsub("\27%[[%d;?]*[%a@]", ""):gsub("[%z\1-\8\11\12\14-\31\127]", "")
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local n, bad = utf8.len(s, i)
    if n then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1) .. "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

-- Masked before anything else: escaping first could split a secret ("a<b" -> "a&lt;b") so the
-- mask no longer recognises it. And masked again once cleaned: a colour code or a control
-- character inside a secret ("pa55\27[1mword") hides it from the first pass, and cleaning joins
-- it back together.
function text.clean(v)
  if v == nil then return "" end
  return log.masked(sanitize(log.masked(tostring(v))))
end
local clean = text.clean

local ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- HTML and XML text and attribute values alike.
function text.esc(v)
  return (clean(v):gsub("[&<>\"']", ENTITIES))
end

-- One path segment of a relative link; masked first, so a secret in a file name is not in the
-- href either (the link then breaks, which is the lesser harm).
function text.url_segment(v)
  return url.encode(clean(v))
end

-- Markdown table cells and inline text: one line, no pipes, no raw HTML, no emphasis by accident.
function text.md(v)
  local s = clean(v):gsub("[\r\n]+", " "):gsub("[&<>]", ENTITIES)
  return (s:gsub("([\\`*_%[%]|#~])", "\\%1"))
end

-- A list to build a document in, and the function that appends its arguments to it.
function text.buffer()
  local out = {}
  return out, function(...)
    for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end
  end
end

return text
