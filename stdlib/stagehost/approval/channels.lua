-- Where votes come from. Every vote, whatever its channel, is recorded by approval.vote into the
-- state database, and the waiting stage reads them from there; a channel only carries the
-- question out and the answer back. A channel is an entry here:
--
--   channels.NAME = { open = function(view, api) -> close() }
--
-- view: {gate, run, stage, title, checklist, preview, shown_sha256, deadline, approve, reject}
-- (approve/reject: the commands that vote from a terminal); api.vote{who, decision, comment,
-- via} -> approval.vote's result, or nil and the refusal. open is called once the gate is
-- recorded and close when the stage stops waiting (decided, cancelled, or failed).
--
-- Built: "cli" — `stagehost approve RUN` from any terminal that can reach the state directory,
-- which writes the database directly, so it has nothing to open. To come: the terminal prompt,
-- the web page of `stagehost serve`, GitHub comments (/approve, /reject) and Slack buttons.
local channels = {}

channels.cli = { open = function() return function() end end }

local CLOSER = { __close = function(self) self:close() end }
CLOSER.__index = { close = function(self)
  for i = #self, 1, -1 do
    local close = self[i]
    self[i] = nil
    pcall(close)
  end
end }

-- Open every channel a gate names; -> one object that closes them all (a to-be-closed value).
function channels.open(names, view, api)
  local closers = setmetatable({}, CLOSER)
  for _, name in ipairs(names) do
    local ch = channels[name]
    if type(ch) == "table" and ch.open then closers[#closers + 1] = ch.open(view, api) end
  end
  return closers
end

return channels
