-- Where votes come from. Every vote, whatever its channel, is recorded by approval.vote into the
-- state database, and the waiting stage reads them from there; a channel only carries the
-- question out and the answer back. A channel is an entry here:
--
--   channels.NAME = { open = function(view, api) -> close() }
--
-- view: {gate, run, stage, title, checklist, preview, shown_sha256, deadline, approve, reject}
-- (approve/reject: the commands that vote from a terminal); api.vote{who, decision, comment,
-- via} -> approval.vote's result, or nil and the refusal. open is called once the gate is
-- recorded and close(how) when the stage stops waiting: how = {decision = "approved"|"rejected"|
-- "timeout"|nil, detached = true when the run left with the gate open (run --detach)}. api also
-- has run (the Run, for its log and live view) and actor (the run's actor).
--
-- Built: "cli" — `stagehost approve RUN` from any terminal that can reach the state directory,
-- which writes the database directly, so it has nothing to open; "web" — the approval page
-- (Slack's buttons answer through `stagehost serve`); "terminal" — the prompt under the live
-- view; "github" — an issue answered by /approve and /reject comments.
local channels = {}

channels.cli = { open = function() return function() end end }

-- "web": the approval page. A running `stagehost serve` (STATE_DIR/serve.json, its pid alive)
-- serves it; else the waiting host serves it itself on a free loopback port while it waits
-- (view.url tells the signed links where; a run that detaches links to serve's default
-- address). Runs without a state directory have no page.
channels.web = { open = function(view, api)
  if not view.state_dir or not api.store then return function() end end
  local links = require("stagehost.approval.links")
  if links.server(view.state_dir) then return function() end end
  -- a run that detaches leaves at once: its links point where `stagehost serve` listens by default
  if api.run and api.run.opts and api.run.opts.detach then
    view.url = "http://" .. require("stagehost.serve").DEFAULT
    return function() end
  end
  -- a page that cannot be served (an unusable key file) is a warning: the other channels still vote
  local ok, srv = pcall(function()
    local trust = os.getenv("STAGEHOST_TRUST_HEADER")
    local handler = require("stagehost.approval.web").handler{ store = api.store, dir = view.state_dir,
      trust_header = trust ~= "" and trust or nil,
      wake = function() if api.run and api.run.wake then api.run:wake() end end }
    return require("stagehost.http").serve{ host = "127.0.0.1", port = 0, handler = handler }
  end)
  local log = require("stagehost.log")
  if not ok then
    if require("stagehost.errors").is_cancel(srv) then error(srv, 0) end
    log.warn("approval page: not served: " .. require("stagehost.errors").first_line(srv))
    return function() end
  end
  view.url = ("http://127.0.0.1:%d"):format(srv.port)
  log.info(("approval page: %s"):format(links.page(view.url, view.gate)))
  return function() srv:close() end
end }

-- "terminal": the prompt under the live view when the run is attached to a TTY;
-- "github": an issue answered by /approve and /reject comments (stagehost.approval.terminal,
-- stagehost.approval.github_issue).
channels.terminal = { open = function(view, api) return require("stagehost.approval.terminal").open(view, api) end }
channels.github = { open = function(view, api) return require("stagehost.approval.github_issue").open(view, api) end }

local CLOSER = { __close = function(self) self:close() end }
CLOSER.__index = { close = function(self)
  for i = #self, 1, -1 do
    local close = self[i]
    self[i] = nil
    pcall(close, { decision = self.decision, detached = self.detached })
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
