-- The console channel: one log line per message (a warning for a failure), with the stage's
-- prefix when a stage sends it.
--   {channel = "console"}
local log = require("stagehost.log")

local function flat(s) return (tostring(s):gsub("%s*[\r\n]+%s*", " ")) end

return {
  settings = {},
  send = function(m)
    local parts = { ("notify %s%s: %s"):format(m.event, m.phase and (" [" .. m.phase .. "]") or "", flat(m.title)) }
    if m.text and m.text ~= "" then parts[#parts + 1] = " — " .. flat(m.text) end
    if #m.fields > 0 then
      local fs = {}
      for i, f in ipairs(m.fields) do fs[i] = ("%s: %s"):format(flat(f.name), flat(f.value)) end
      parts[#parts + 1] = " (" .. table.concat(fs, "; ") .. ")"
    end
    local line = table.concat(parts)
    if m.status == "failure" then log.warn(line) else log.info(line) end
    return true
  end,
}
