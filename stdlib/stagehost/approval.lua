-- Approvals: a stage asks people to decide, and waits.
--
--   local approval = require "stagehost.approval"
--   local r = approval.request{ title = "Deploy rc-1.4.0 to staging", checklist = text,
--     approvers = {"alice", "bob", "carol"}, required = 2, timeout = "24h", forbid = "actor",
--     remind = {"1h", "15m"} }
--   -- r = {decision = "approved"|"rejected"|"timeout", votes = {{who, decision, comment, at, via,
--   --      shown_sha256}}, gate = "RUN/STAGE/1", shown_sha256, ...}
--
-- Durable: the gate (its deadline, its checklist and what its votes are bound to) and every
-- vote are committed to the state database before anything is shown, as hash-chained events
-- (stagehost.approval.gate). A resumed stage's Nth request finds the gate of the Nth request
-- before the host died: same deadline, same votes, and a deadline that passed meanwhile is a
-- timeout. Votes come from `stagehost approve RUN` (approval.vote), which any process that
-- can reach the state directory may run; the run's watcher looks at the database's
-- data_version every half second and wakes the waiting stage when another process committed
-- (Run:watch), so a vote reaches it within a second and a waiting host costs < 10 ms of CPU a
-- minute (bench/approval_wait.sh).
--
-- `run --detach`: a gate that must wait is recorded, its channels open (the GitHub issue is
-- made) and the stage stops with the run suspended (status "waiting"); `resume` runs the
-- stage again and this request finds its gate, votes and deadline kept.
local task = require("stagehost.task")
local log = require("stagehost.log")
local json = require("stagehost.json")
local errors = require("stagehost.errors")
local time = require("stagehost.util.time")
local gate = require("stagehost.approval.gate")
local spec = require("stagehost.approval.spec")
local identity = require("stagehost.approval.identity")
local channels = require("stagehost.approval.channels")

local approval = {}

local POLL = 0.5     -- seconds between looks at the database while waiting
local RECHECK = 120  -- seconds between looks at the checkout (has the commit or the tag moved?); each spawns git: a cost while waiting

-- Runs without a state database (pipelines run in-process, tests) keep their gates in one
-- in-memory database each: the same code, nothing outside the host can vote.
local private = setmetatable({}, { __mode = "k" })
-- The requests each stage attempt (its ctx) has made: the Nth one is gate RUN/STAGE/N.
local counters = setmetatable({}, { __mode = "k" })

local function memory_store()
  local db = assert(require("stagehost.core.sqlite").open(":memory:"))
  local s = { db = db, path = ":memory:" }
  function s.query(self, sql, ...)
    local rows, err, code = self.db:query(sql, ...)
    if not rows then error(("approval state: %s (%s)"):format(err, code), 2) end
    return rows
  end
  function s.transaction(self, fn, ...) return self.db:transaction(fn, self, ...) end
  function s.ensure(self, _, schema)
    if not self.ensured then
      assert(self.db:exec(schema))
      self.ensured = true
    end
  end
  return s
end

local function store_of(run)
  local s = run.store
  if type(s) == "table" and s.query and s.transaction and s.ensure then return s end
  private[run] = private[run] or memory_store()
  return private[run]
end

-- ---- notifications ----

-- notify.send in a task of the run (a slow channel never delays the gate), if the notify
-- module is there; its failures are its own (logged by it), never the run's.
local function announce(run, message)
  local ok, notify = pcall(require, "stagehost.notify")
  if not ok or type(notify) ~= "table" or type(notify.send) ~= "function" then
    log.debug("approval: no notification module; not sending " .. message.event)
    return
  end
  local function send()
    local sent, err = pcall(notify.send, message)
    if not sent then
      if errors.is_cancel(err) then error(err, 0) end
      log.warn(("approval: %s was not sent: %s"):format(message.event, errors.first_line(err)))
    end
  end
  if run.spawn then run:spawn(send) else task.spawn(send) end
end

local function fields(g, extra)
  local out = { { name = "Gate", value = g.id }, { name = "Run", value = g.run_id }, { name = "Stage", value = g.stage } }
  if g.subject.commit then out[#out + 1] = { name = "Commit", value = g.subject.commit:sub(1, 12) } end
  if g.subject.tag then out[#out + 1] = { name = "Tag", value = g.subject.tag } end
  for _, f in ipairs(extra or {}) do out[#out + 1] = f end
  return out
end

-- ---- what people are told ----

local function commands(run, g)
  local state = run.opts and run.opts.state_dir
  local where = ""
  if state and state ~= ".stagehost" and state ~= os.getenv("STAGEHOST_STATE_DIR") then where = " --state " .. state end
  local target = run.id
  return ("stagehost approve %s%s"):format(target, where),
    ("stagehost approve %s --reject --comment WHY%s"):format(target, where)
end

local function who_list(spec_)
  local listed = gate.approvers(spec_)
  return listed and table.concat(listed, ", ") or "anyone"
end

local function deadline_text(g)
  return time.human(gate.iso(g.deadline))
end

local function waiting_text(run, g, t)
  local approve, reject = commands(run, g)
  local voters = {}
  for _, v in ipairs(t.votes) do
    if v.decision == "approved" then voters[#voters + 1] = v.who end
  end
  return ("Waiting for approval: %s — %s approvals%s from %s, until %s. To approve, run '%s'; to reject, '%s'.")
    :format(g.title, gate.progress(t), #voters > 0 and (" (" .. table.concat(voters, ", ") .. ")") or "",
      who_list(g.spec), deadline_text(g), approve, reject)
end

local function say_vote(e, t)
  local comment = e.comment and (": " .. e.comment:gsub("%s*\n%s*", " ")) or ""
  log.info(("vote: %s %s via %s (%s)%s"):format(e.who, e.decision, e.via or "?", gate.progress(t), comment))
end

-- ---- the database, inside one transaction ----

-- fn(store, g, events, now, at) inside a transaction, on the gate and its events as they are
-- now (another process may have added some); refuses to write onto an edited record.
local function record(store, id, fn)
  return store:transaction(function(st)
    local g = gate.load(st, id)
    local events = gate.events(st, id)
    local at_seq, why = gate.verify(g, events)
    if at_seq then error(("approval gate %s: its record was edited (%s); nothing was decided"):format(id, why), 0) end
    local now, at = gate.clock(st)
    return fn(st, g, events, now, at)
  end)
end

local function result_of(g, t, decided_at)
  local votes = json.array{}
  for i, e in ipairs(t.votes) do votes[i] = gate.vote_of(e) end
  local r = { decision = t.decision, votes = votes, gate = g.id, shown_sha256 = g.shown_sha256, title = g.title,
    approvals = t.approvals, required = t.required, decided_at = decided_at, commit = g.subject.commit, tag = g.subject.tag }
  if t.decision == "rejected" then
    for _, v in ipairs(t.votes) do
      if v.decision == "rejected" then r.rejected_by, r.reason = v.who, v.comment end
    end
  end
  return r
end

-- Record the decision the tally reached (once: a `decided` event and the row's status).
-- -> the tally as recorded (its decision may be nil if a void came in between).
local function decide(store, id)
  return record(store, id, function(st, g, events, now, at)
    local t = gate.tally(g, events, now)
    if t.recorded or not t.decision then return t, g end
    local who = json.array{}
    for _, v in ipairs(t.votes) do who[#who + 1] = { who = v.who, decision = v.decision } end
    gate.append(st, g, { kind = "decided", at = at, decision = t.decision, via = "stage " .. g.stage,
      shown_sha256 = g.shown_sha256, data = { approvals = t.approvals, required = t.required, votes = who } })
    st:query("UPDATE gates SET status = ?, decided_at = ? WHERE id = ?", t.decision, at, id)
    g.status, g.decided_at = t.decision, at
    t.decided_now, t.decided_at = true, at
    return t, g
  end)
end

-- Bind the gate to what is shown now: if it moved, earlier votes are void. -> g, what moved.
local function rebind(store, id, subject, shown, checklist, preview)
  return record(store, id, function(st, g, _, _, at)
    if g.status ~= "pending" or g.shown_sha256 == shown then return g, nil end
    local moved = gate.moved(g.subject, subject)
    gate.append(st, g, { kind = "voided", at = at, via = "stage " .. g.stage, shown_sha256 = shown,
      data = { reason = moved, from = g.subject, to = subject } })
    st:query("UPDATE gates SET subject = ?, shown_sha256 = ?, checklist = ?, preview = ? WHERE id = ?",
      json.encode(subject), shown, checklist, preview, id)
    g.subject, g.shown_sha256, g.checklist, g.preview = subject, shown, checklist, preview
    return g, moved
  end)
end

local function told_void(run, g, moved)
  log.warn(("approval: %s since the votes were cast: earlier votes on '%s' are void; vote again"):format(moved, g.title))
  local approve = commands(run, g)
  announce(run, { event = "approval.requested", status = "pending",
    title = ("Approval needed again: %s"):format(g.title),
    text = ("%s: earlier votes are void. Vote again with '%s' before %s."):format(moved, approve, deadline_text(g)),
    fields = fields(g, { { name = "Approvers", value = who_list(g.spec) } }) })
end

-- ---- waiting ----

-- Wait until the gate is decided: read its row (one small query) when the run's watcher says
-- another process committed, or the deadline or a reminder is due, or the checkout is to be
-- looked at again (without a watcher: every POLL seconds); only when it has new events do
-- more. -> the recorded tally and the gate.
local function wait(w)
  local store, run, ctx, id = w.store, w.run, w.ctx, w.g.id
  local g, events = w.g, w.events
  local now = gate.clock(store)
  local t
  local shown_text
  local next_recheck = task.now() + RECHECK
  -- the next reminder: at deadline - r, each once, if that falls after the request
  local function next_reminder()
    local due, which = math.huge, nil
    for _, r in ipairs(g.spec.remind or {}) do
      local at = g.deadline - r.seconds
      if r.seconds < g.spec.timeout and not t.reminded[r.text] and at < due then due, which = at, r end
    end
    return due, which
  end
  local reminder_due, reminder
  local function refresh()
    t = gate.tally(g, events, now)
    reminder_due, reminder = next_reminder()
    local text = waiting_text(run, g, t)
    if text ~= shown_text then
      shown_text = text
      ctx:waiting(text)
    end
  end
  refresh()
  while true do
    if t.decision then
      local final
      final, g = decide(store, id)
      if final.decision then return final, g end
      events = gate.events(store, id) -- a void came in just before: go on waiting
      refresh()
    end
    -- a run that watches its state database (Run:watch, one cheap look every half second)
    -- wakes this nap when another process commits; only then, or when the deadline, a
    -- reminder or the recheck is due, is the gate read again
    local cap = run.watching and (next_recheck - task.now()) or POLL
    if run.nap then run:nap(math.max(0.01, math.min(cap, g.deadline - now, reminder_due - now)))
    else task.sleep(math.max(0.01, math.min(POLL, g.deadline - now, reminder_due - now))) end
    local row = store:query([[SELECT events, (julianday('now') - 2440587.5) * 86400.0 AS now
      FROM gates WHERE id = ?]], id)[1]
    now = row.now
    local dirty = now >= g.deadline
    if row.events ~= #events then
      dirty = true
      local n = #events
      for _, e in ipairs(gate.events(store, id, n)) do events[#events + 1] = e end
      local bad, why = gate.check_chain(id, events, n + 1, n > 0 and events[n].hash or nil)
      if bad then error(("approval gate %s: its record was edited (%s); nothing was decided"):format(id, why), 0) end
      g = gate.load(store, id)
      for i = n + 1, #events do
        local e = events[i]
        if e.kind == "voted" then say_vote(e, gate.tally(g, { table.unpack(events, 1, i) }, now)) end
      end
    end
    if now >= reminder_due and now < g.deadline then
      dirty = true
      local r = reminder
      local sent = record(store, id, function(st, fresh_g, evs, _, at)
        if gate.tally(fresh_g, evs, now).reminded[r.text] then return false end
        gate.append(st, fresh_g, { kind = "reminded", at = at, via = "stage " .. fresh_g.stage,
          shown_sha256 = fresh_g.shown_sha256, data = { before = r.text, left = math.floor(fresh_g.deadline - now) } })
        return true
      end)
      events, g = gate.events(store, id), gate.load(store, id)
      if sent then
        local approve = commands(run, g)
        local left = time.duration(math.max(0, g.deadline - now))
        log.info(("approval reminder: '%s' times out in %s (%s approvals so far)"):format(g.title, left, gate.progress(t)))
        announce(run, { event = "approval.reminder", status = "pending",
          title = ("Approval reminder: %s"):format(g.title),
          text = ("%s approvals so far; the gate times out at %s. Vote with '%s'."):format(gate.progress(t), deadline_text(g), approve),
          fields = fields(g, { { name = "Left", value = left }, { name = "Approvers", value = who_list(g.spec) } }) })
      end
    end
    if task.now() >= next_recheck then
      next_recheck = task.now() + RECHECK
      local commit, tag_commit = identity.checkout(run.p and run.p.dir, run.tag, run.commit)
      local subject, shown = gate.subject(g.checklist, g.preview, commit, run.tag, tag_commit)
      if shown ~= g.shown_sha256 then
        dirty = true
        local moved
        g, moved = rebind(store, id, subject, shown, g.checklist, g.preview)
        if moved then told_void(run, g, moved) end
        events = gate.events(store, id)
      end
    end
    if dirty then refresh() end
  end
end

-- approval.request{title, checklist, preview, approvers, required, timeout, forbid, remind,
-- require_comment, authors_of, channels, votes} -> result (see the top of this file).
function approval.request(opts)
  local cur = require("stagehost.pipeline.run").current()
  if not cur then error("approval.request: call it inside a stage (its function, or what that calls)", 2) end
  local s, err = spec.check(opts)
  if not s then errors.argument(1, "approval.request", "%s", err) end
  local run, ctx = cur.run, cur.ctx
  local store = store_of(run)
  gate.ensure(store)
  counters[ctx] = (counters[ctx] or 0) + 1
  local n = counters[ctx]
  local id = ("%s/%s/%d"):format(run.id, cur.stage, n)
  local actor = identity.actor(run)
  local dir = run.p and run.p.dir
  -- what is shown, and who wrote it: git runs here, before the transaction (which cannot wait)
  local commit, tag_commit = identity.checkout(dir, run.tag, run.commit)
  local checklist, preview = gate.masked(s.checklist), gate.masked(s.preview)
  local subject, shown = gate.subject(checklist, preview, commit, run.tag, tag_commit)
  local existing = gate.load(store, id)
  local authors, authors_error
  if not existing then
    for _, f in ipairs(s.forbid) do
      if f == "authors" then
        authors, authors_error = identity.authors(dir, s.authors_of, commit)
        if not authors then
          log.warn(("approval: forbid = \"authors\": %s, so no author is barred from voting"):format(authors_error))
        end
      end
    end
  end
  local os_user = identity.os_user()

  local requested -- the approval.requested notification, when this request made the gate
  local g, created = store:transaction(function(st)
    local found = gate.load(st, id)
    if found then return found, false end
    local now, at = gate.clock(st)
    local made = gate.create(st, { id = id, run_id = run.id, stage = cur.stage, n = n, title = s.title,
      spec = spec.stored(s, authors and json.array(authors) or nil, authors_error), actor = actor,
      checklist = checklist, preview = preview, subject = subject, shown = shown, at = at,
      deadline = now + s.timeout })
    for i, v in ipairs(s.votes) do -- votes that come with the request (the seed's --var approve)
      local vote = { who = v.who or actor, decision = v.decision, comment = gate.masked(v.comment), via = v.via }
      local refusal = gate.refusal(made, gate.events(st, id), now, vote)
      if refusal then error(("approval.request: votes[%d] (%s) was refused: %s"):format(i, vote.who, refusal), 0) end
      gate.append(st, made, { kind = "voted", at = at, who = vote.who, via = vote.via, decision = vote.decision,
        comment = vote.comment, shown_sha256 = made.shown_sha256, data = { os_user = os_user } })
    end
    if run.auto_approve then -- accepted only for sandbox runs and pipelines that allow it (cli)
      gate.append(st, made, { kind = "voted", at = at, who = actor, via = "--auto-approve", decision = "approved",
        comment = "approved by --auto-approve", shown_sha256 = made.shown_sha256, data = { os_user = os_user } })
      gate.append(st, made, { kind = "decided", at = at, decision = "approved", via = "--auto-approve",
        shown_sha256 = made.shown_sha256, data = { auto_approve = true } })
      st:query("UPDATE gates SET status = 'approved', decided_at = ? WHERE id = ?", at, id)
      made.status, made.decided_at = "approved", at
    end
    return made, true
  end)

  if created then
    local approve, reject = commands(run, g)
    log.info(("approval requested: '%s' — %d approval%s from %s, until %s (gate %s, what is shown: sha256 %s)"):format(g.title,
      g.spec.required, g.spec.required == 1 and "" or "s", who_list(g.spec), deadline_text(g), g.id, g.shown_sha256:sub(1, 16)))
    log.info(("to approve, run '%s'; to reject, '%s'"):format(approve, reject))
    -- sent once the channels are open: the web channel's page is where the signed links point
    requested = { event = "approval.requested", status = "pending", title = ("Approval needed: %s"):format(g.title),
      text = ("%s\n\nApprove with '%s', reject with '%s', before %s."):format(checklist or "", approve, reject, deadline_text(g)),
      fields = fields(g, { { name = "Approvers", value = who_list(g.spec) },
        { name = "Required", value = tostring(g.spec.required) }, { name = "Deadline", value = deadline_text(g) } }) }
  elseif g.status == "pending" then
    log.info(("approval: gate %s is still open ('%s', until %s): its votes and deadline are kept"):format(g.id, g.title, deadline_text(g)))
    if g.shown_sha256 ~= shown then
      local moved
      g, moved = rebind(store, id, subject, shown, checklist, preview)
      if moved then told_void(run, g, moved) end
    end
  elseif g.status == "approved" and g.shown_sha256 ~= shown then
    error(("approval gate %s was approved for what was shown then; %s since: start a new run to approve what is there now"):format(
      g.id, gate.moved(g.subject, subject)), 0)
  end

  local events = gate.events(store, id)
  local at_seq, why = gate.verify(g, events)
  if at_seq then error(("approval gate %s: its record was edited (%s); nothing was decided"):format(id, why), 0) end
  local approve, reject = commands(run, g)
  local view = { gate = g.id, run = run.id, stage = g.stage, title = g.title, checklist = g.checklist, preview = g.preview,
    shown_sha256 = g.shown_sha256, deadline = g.deadline, approve = approve, reject = reject,
    state_dir = run.opts and run.opts.state_dir }
  local close <close> = channels.open(g.spec.channels or {}, view,
    { vote = function(v)
        local r, why, code = approval.vote(store, g.id, v)
        if r and run.wake then run:wake() end -- this host's own write: data_version does not show it
        return r, why, code
      end, store = store, run = run, actor = actor })
  if requested then
    requested.approval = require("stagehost.approval.links").message_part(view.state_dir, g, view.url)
    announce(run, requested)
  end
  if run.opts and run.opts.detach and run.detach and not gate.tally(g, events, gate.clock(store)).decision then
    -- run --detach: the gate and its channels are out; the host leaves (see the top of this file)
    log.info(("approval: '%s' has %s approvals; the run detaches (--detach) and goes on when the gate decides"):format(
      g.title, gate.progress(gate.tally(g, events, gate.clock(store)))))
    run:detach(cur.stage, g)
    close.detached = true
    error(errors.cancelled(("waiting for approval '%s' (gate %s)"):format(g.title, g.id), { origin = "detach", gate = g.id }), 0)
  end
  local t
  t, g = wait{ store = store, run = run, ctx = ctx, g = g, events = events }
  close.decision = t.decision
  ctx:waiting(nil)
  local decided_at = t.decided_at or g.decided_at
  local r = result_of(g, t, decided_at)
  local lines = {}
  for _, v in ipairs(r.votes) do
    lines[#lines + 1] = ("%s %s%s"):format(v.who, v.decision, v.comment and (": " .. v.comment) or "")
  end
  local said = #lines > 0 and (" — " .. table.concat(lines, "; "):gsub("%s*\n%s*", " ")) or ""
  if r.decision == "approved" then log.info(("approval: '%s' approved%s"):format(g.title, said))
  elseif r.decision == "rejected" then log.warn(("approval: '%s' rejected%s"):format(g.title, said))
  else log.warn(("approval: '%s' timed out at %s with %s approvals%s"):format(g.title, deadline_text(g), gate.progress(t), said)) end
  if t.decided_now then
    announce(run, { event = "approval.decided",
      status = r.decision == "approved" and "success" or (r.decision == "rejected" and "failure" or "cancelled"),
      title = ("Approval %s: %s"):format(r.decision == "timeout" and "timed out" or r.decision, g.title),
      text = #lines > 0 and table.concat(lines, "\n") or "No votes.",
      fields = fields(g, { { name = "Decision", value = r.decision }, { name = "Votes", value = gate.progress(t) } }) })
  end
  return r
end

-- ---- voting, listing, auditing ----

-- Find the gate a vote is for: a gate id, or {run = ID, stage = NAME (optional)}.
-- -> gate row, or nil and why.
local function target_gate(store, target)
  if type(target) == "string" then
    local g = gate.load(store, target)
    if not g then return nil, ("no approval gate '%s'"):format(target) end
    return g
  end
  local rows = store:query("SELECT id, stage, status FROM gates WHERE run_id = ? ORDER BY requested_at DESC, n DESC", target.run)
  local pending, stages = {}, {}
  for _, r in ipairs(rows) do
    if r.status == "pending" and (not target.stage or r.stage == target.stage) then
      pending[#pending + 1] = r
      stages[#stages + 1] = r.stage
    end
  end
  if #pending == 0 then -- the latest gate says why it takes no vote (decided), if there is one
    for _, r in ipairs(rows) do
      if not target.stage or r.stage == target.stage then return gate.load(store, r.id) end
    end
    return nil, ("run %s has no approval gate%s"):format(target.run, target.stage and (" in stage '" .. target.stage .. "'") or "")
  end
  if #pending > 1 and not target.stage then
    return nil, ("run %s waits on %d gates (stages %s): say which with --stage"):format(target.run, #pending, table.concat(stages, ", "))
  end
  return gate.load(store, pending[1].id)
end

-- approval.vote(store, target, {who, decision = "approved"|"rejected", comment, via, member_of}) -> what
-- was recorded ({gate, who, decision, comment, at, via, shown_sha256, decision_now, progress,
-- title, subject}), or nil, why, "refused". A refused vote changes nothing.
function approval.vote(store, target, v)
  if type(store) ~= "table" or not store.query then errors.argument(1, "approval.vote", "a state store expected, got %s", type(store)) end
  if type(target) ~= "string" and not (type(target) == "table" and type(target.run) == "string") then
    errors.argument(2, "approval.vote", "a gate id or {run = ID, stage = NAME} expected, got %s", type(target))
  end
  if type(v) ~= "table" then errors.argument(3, "approval.vote", "table expected, got %s", type(v)) end
  local bad = identity.bad_name(v.who)
  if bad then return nil, ("who votes? %s"):format(bad), "refused" end
  if v.decision ~= "approved" and v.decision ~= "rejected" then
    return nil, ("a vote is \"approved\" or \"rejected\" (got %s)"):format(tostring(v.decision)), "refused"
  end
  local comment, cerr = spec.comment(v.comment)
  if cerr then return nil, cerr, "refused" end
  comment = gate.masked(comment)
  if type(v.via) ~= "string" or v.via == "" then errors.argument(3, "approval.vote", "via must name the channel") end
  if not gate.exists(store) then
    return nil, ("run %s has no approval gate"):format(type(target) == "table" and target.run or target), "refused"
  end
  local g, why = target_gate(store, target)
  if not g then return nil, why, "refused" end
  local os_user = identity.os_user()
  local ok, result, refusal = pcall(record, store, g.id, function(st, fresh, events, now, at)
    local vote = { who = v.who, decision = v.decision, comment = comment, via = v.via, member_of = v.member_of }
    local no = gate.refusal(fresh, events, now, vote)
    if no then return nil, no end
    local e = gate.append(st, fresh, { kind = "voted", at = at, who = v.who, via = v.via, decision = v.decision,
      comment = comment, shown_sha256 = fresh.shown_sha256, data = { os_user = os_user, member_of = v.member_of } })
    events[#events + 1] = e
    local t = gate.tally(fresh, events, now)
    local out = gate.vote_of(e)
    out.gate, out.title, out.subject, out.progress, out.decision_now = fresh.id, fresh.title, fresh.subject, gate.progress(t), t.decision
    out.deadline = gate.iso(fresh.deadline)
    out.approvals, out.required = t.approvals, t.required
    return out
  end)
  if not ok then
    if errors.is_cancel(result) or type(result) ~= "string" or not result:find("its record was edited", 1, true) then error(result, 0) end
    return nil, ("%s; see 'stagehost approvals --audit %s'"):format(result, g.run_id), "refused"
  end
  if not result then return nil, refusal, "refused" end
  return result
end

-- approval.pending(store) -> the gates still waiting in the state database, of runs whose host
-- is running or can be resumed: {gate, run, stage, title, approvals, required, progress, groups,
-- votes, approvers, deadline, left (seconds), host ("running"|"interrupted"|"waiting": detached), shown_sha256,
-- commit, tag}.
function approval.pending(store)
  local out = json.array{}
  if not gate.exists(store) then return out end
  local now = gate.clock(store)
  local effective = require("stagehost.pipeline.store").effective_status
  for _, g in ipairs(gate.pending(store)) do
    local host = effective({ status = g.run_status, pid = g.run_pid, host_started = g.run_host_started })
    if host == "running" or host == "interrupted" or host == "waiting" then
      local events = gate.events(store, g.id)
      local t = gate.tally(g, events, now)
      local votes = json.array{}
      for i, e in ipairs(t.votes) do votes[i] = gate.vote_of(e) end
      out[#out + 1] = { gate = g.id, run = g.run_id, stage = g.stage, title = g.title, approvals = t.approvals,
        required = t.required, progress = gate.progress(t), groups = t.groups, votes = votes,
        approvers = gate.approvers(g.spec) or json.array{}, deadline = gate.iso(g.deadline),
        left = math.max(0, math.floor(g.deadline - now)), host = host, shown_sha256 = g.shown_sha256,
        commit = g.subject.commit, tag = g.subject.tag, decision = t.decision }
    end
  end
  return out
end

-- approval.audit(store, run_id) -> every gate of the run with every event and whether its
-- hash chain holds: {gate, stage, title, status, deadline, verified, broken_at, problem, events}.
function approval.audit(store, run_id)
  local out = json.array{}
  if not gate.exists(store) then return out end
  for _, g in ipairs(gate.of_run(store, run_id)) do
    local events = gate.events(store, g.id)
    local at_seq, problem = gate.verify(g, events)
    local list = json.array{}
    for i, e in ipairs(events) do list[i] = gate.event_of(e) end
    out[#out + 1] = { gate = g.id, stage = g.stage, title = g.title, status = g.status, deadline = gate.iso(g.deadline),
      shown_sha256 = g.shown_sha256, verified = at_seq == nil, broken_at = at_seq, problem = problem, events = list }
  end
  return out
end

-- approval.record_of(run) -> the run's gates with their audit trail, for run.json's
-- `approvals`; [] when it has none. A run written again without its store (prune) keeps what
-- its run.json had.
function approval.record_of(run)
  local ok, list = pcall(function()
    local store = run.store
    if not (type(store) == "table" and store.query) then store = private[run] end
    if store then return approval.audit(store, run.id) end
    local text = run.dir and require("stagehost.fs").read(run.dir .. "/run.json")
    local old = text and json.decode(text)
    return old and old.approvals or json.array{}
  end)
  if not ok then
    log.warn(("run %s: its approvals could not be read for run.json: %s"):format(tostring(run.id), errors.first_line(list)))
    return json.array{}
  end
  return list
end

return approval
