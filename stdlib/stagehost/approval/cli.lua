-- `stagehost approve` and `stagehost approvals`: the command-line channel of approvals. cli.lua
-- parses the options (its command table has their entries) and calls these.
local errors = require("stagehost.errors")
local json = require("stagehost.json")
local fs = require("stagehost.fs")
local time = require("stagehost.util.time")

local M = {}

-- One line naming the command, exit 2; nothing was written.
local function refuse(cmd, fmt, ...)
  error(errors.new("refused", fmt:format(...), { exit_code = 2, command = cmd }), 0)
end

-- The run RUN names (a unique prefix will do); a run that is not there is this command's refusal.
local function find_run(store, cmd, id)
  local ok, row = pcall(require("stagehost.pipeline.runner").need_run, store, id)
  if ok then return row end
  if type(row) == "table" and row.exit_code == 2 then refuse(cmd, "%s", tostring(row.message or row)) end
  error(row, 0)
end

local function open(dir, cmd, writable)
  if not fs.exists(dir .. "/state.db") then
    refuse(cmd, "no state database in %s (see 'stagehost runs'; --state DIR names another)", dir)
  end
  return require("stagehost.pipeline.runner").open_store(dir, not writable)
end

local function left_text(seconds)
  if seconds <= 0 then return "expired" end
  return time.duration(seconds)
end

-- stagehost approve RUN [--reject] [--comment TEXT] [--as NAME] [--stage S] [--resume] [--state DIR]
-- resume(run_id) -> exit code: `stagehost resume RUN` in this process, for --resume once the
-- gate has decided and no host runs the run.
function M.approve(dir, run_arg, opts, resume)
  local identity = require("stagehost.approval.identity")
  local who = identity.voter(opts.as)
  if not who then refuse("approve", "cannot tell who you are: give --as NAME") end
  local code, continue = M.vote(dir, run_arg, opts, who)
  if continue and opts.resume then return resume(continue) end
  return code
end

-- The vote of `stagehost approve`; -> 0, and the run to resume when the gate has decided and
-- no host runs it. The store is closed before anything resumes.
function M.vote(dir, run_arg, opts, who)
  local approval = require("stagehost.approval")
  local store <close> = setmetatable({ s = open(dir, "approve", true) }, { __close = function(h) h.s:close() end })
  local row = find_run(store.s, "approve", run_arg)
  if row.status ~= "running" and row.status ~= "interrupted" and row.status ~= "waiting" then
    refuse("approve", "run %s ended (%s): it has no open gate", row.id, row.status)
  end
  local decision = opts.reject and "rejected" or "approved"
  local r, why = approval.vote(store.s, { run = row.id, stage = opts.stage },
    { who = who, decision = decision, comment = opts.comment, via = "command line" })
  if not r then refuse("approve", "%s", why) end
  local s = r.subject or {}
  print(("gate %s: '%s'"):format(r.gate, r.title))
  print(("  bound to what was shown: sha256 %s (commit %s, tag %s)"):format(r.shown_sha256,
    s.commit and s.commit:sub(1, 12) or "none", s.tag or "none"))
  print(("%s as %s%s: %s approvals"):format(decision, r.who, r.comment and (' ("' .. r.comment:gsub("%s*\n%s*", " ") .. '")') or "", r.progress))
  local no_host = row.status == "waiting" and "the run is detached" or "its host is gone"
  if r.decision_now then
    local next_step = row.status == "running" and "the waiting host goes on within a second"
      or opts.resume and "continuing the run here"
      or ("%s: 'stagehost resume %s' continues the run"):format(no_host, row.id)
    print(("the gate is decided: %s — %s"):format(r.decision_now, next_step))
  else
    local missing = math.max(0, (r.required or 0) - (r.approvals or 0))
    local still = missing > 0 and ("%d more approval%s needed"):format(missing, missing == 1 and " is" or "s are")
      or "more approvals are needed (" .. r.progress .. ")"
    if opts.resume then
      print(("%s: not resuming yet; 'stagehost approve %s --resume' by the last approver continues it"):format(still, row.id))
    elseif row.status ~= "running" then
      print(("%s: the vote is kept; 'stagehost resume %s' continues the run once the gate decides"):format(no_host, row.id))
    end
  end
  return 0, r.decision_now ~= nil and row.status ~= "running" and row.id or nil
end

local function print_pending(list, dir)
  if #list == 0 then
    print("no pending approvals in " .. dir)
    return
  end
  print(("%-22s %-20s %-30s %-14s %-10s %s"):format("RUN", "STAGE", "TITLE", "VOTES", "LEFT", "HOST"))
  for _, p in ipairs(list) do
    local title = #p.title > 30 and (p.title:sub(1, 27) .. "...") or p.title
    local votes = p.groups and p.progress:gsub(" %(.*%)$", "") or ("%d/%d"):format(p.approvals, p.required)
    print(("%-22s %-20s %-30s %-14s %-10s %s"):format(p.run, p.stage, title, votes, left_text(p.left), p.host))
  end
end

local function event_line(e)
  local detail = {}
  if e.decision then detail[#detail + 1] = e.decision end
  if e.comment then detail[#detail + 1] = '"' .. e.comment:gsub("%s*\n%s*", " ") .. '"' end
  local d = e.data or {}
  if e.kind == "requested" then
    local spec = json.decode(d.spec or "{}")
    detail[#detail + 1] = ("%d required, until %s"):format(spec.required or 1, time.human(os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(d.deadline or 0))))
  elseif e.kind == "reminded" then
    detail[#detail + 1] = ("%s before the deadline"):format(tostring(d.before))
  elseif e.kind == "voided" then
    detail[#detail + 1] = tostring(d.reason)
  elseif e.kind == "decided" then
    detail[#detail + 1] = ("%s of %s approvals"):format(tostring(d.approvals), tostring(d.required))
  end
  if e.shown_sha256 then detail[#detail + 1] = "shown " .. e.shown_sha256:sub(1, 12) end
  return ("  %3d  %-24s %-9s %-12s %-22s %s"):format(e.seq, e.at, e.kind, e.who or "-", e.via or "-", table.concat(detail, "; "))
end

-- stagehost approvals [--audit RUN] [--json] [--state DIR]
function M.approvals(dir, opts)
  local approval = require("stagehost.approval")
  if not opts.audit then
    if not fs.exists(dir .. "/state.db") then
      if opts.json then print("[]") else print("no pending approvals in " .. dir) end
      return 0
    end
    local store = open(dir, "approvals", false)
    local ok, list = pcall(approval.pending, store)
    store:close()
    if not ok then error(list, 0) end
    if opts.json then print(json.encode(list, { pretty = true })) else print_pending(list, dir) end
    return 0
  end
  local store = open(dir, "approvals", false)
  local ok, row, gates = pcall(function()
    local r = find_run(store, "approvals", opts.audit)
    return r, approval.audit(store, r.id)
  end)
  store:close()
  if not ok then error(row, 0) end
  local broken
  for _, g in ipairs(gates) do
    if not g.verified then broken = broken or g end
  end
  if opts.json then
    print(json.encode({ run = row.id, verified = broken == nil, gates = gates }, { pretty = true }))
  else
    if #gates == 0 then print(("run %s has no approval gates"):format(row.id)) end
    for i, g in ipairs(gates) do
      if i > 1 then print("") end
      print(("gate %s — '%s' (%s)"):format(g.gate, g.title, g.status))
      print(("  %3s  %-24s %-9s %-12s %-22s %s"):format("#", "AT", "EVENT", "WHO", "VIA", "DETAIL"))
      for _, e in ipairs(g.events) do
        print(event_line(e) .. ((g.broken_at == e.seq) and "   <-- BROKEN" or ""))
      end
      if g.verified then
        print(("  chain: %d events, each bound to the one before; verified (head %s)"):format(#g.events,
          #g.events > 0 and g.events[#g.events].hash:sub(1, 16) or "-"))
      else
        print(("  chain: BROKEN at %s: %s"):format(g.broken_at == 0 and "the gate's row" or ("event " .. g.broken_at), g.problem))
      end
    end
  end
  if broken then
    refuse("approvals", "the approval record of run %s was edited: gate %s, %s", row.id, broken.gate, broken.problem)
  end
  return 0
end

return M
