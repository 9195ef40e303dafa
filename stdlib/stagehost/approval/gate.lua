-- Approval gates in the state database: the durable half of approval.request. A gate is one
-- row of `gates` (what was asked, of whom, until when, bound to what was shown) and an
-- append-only list of rows of `gate_events` (requested, reminded, voted, voided, decided), each
-- carrying the hash of the one before: hash = sha256(prev_hash .. canonical JSON of the
-- event), the first one's prev_hash the sha256 of the gate's id. Whether a gate is decided is
-- computed from its events every time (gate.tally), never kept apart from them; the `decided`
-- event only records what the tally said when the waiting stage saw it.
--
-- Everything here that writes runs inside store:transaction (one process at a time holds the
-- write lock, so a vote and the decision cannot interleave) and never waits.
local json = require("stagehost.json")
local crypto = require("stagehost.crypto")
local log = require("stagehost.log")
local identity = require("stagehost.approval.identity")

local gate = {}

gate.SCHEMA = [[
CREATE TABLE IF NOT EXISTS gates (
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT NOT NULL, n INTEGER NOT NULL,
  title TEXT NOT NULL, spec TEXT NOT NULL, actor TEXT, checklist TEXT, preview TEXT,
  subject TEXT NOT NULL, shown_sha256 TEXT NOT NULL,
  requested_at TEXT NOT NULL, deadline REAL NOT NULL, status TEXT NOT NULL, decided_at TEXT,
  events INTEGER NOT NULL, head_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gates_run ON gates(run_id);
CREATE INDEX IF NOT EXISTS gates_status ON gates(status);
CREATE TABLE IF NOT EXISTS gate_events (
  gate_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL,
  who TEXT, via TEXT, decision TEXT, comment TEXT, shown_sha256 TEXT, data TEXT,
  prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
  PRIMARY KEY (gate_id, seq)
);
]]

function gate.ensure(store)
  store:ensure("approval", gate.SCHEMA)
end

-- Does this database have gates at all? (A read-only store cannot create the tables.)
function gate.exists(store)
  return #store:query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gate_events'") > 0
end

-- The wall clock, from SQLite so that every process reads the same one with milliseconds:
-- -> epoch seconds (a float), ISO 8601 with milliseconds.
function gate.clock(store)
  local r = store:query([[SELECT (julianday('now') - 2440587.5) * 86400.0 AS now,
    strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS at]])[1]
  return r.now, r.at
end

function gate.iso(epoch)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(epoch))
end

-- ---- what was shown ----

-- The subject a vote is bound to: the checklist, the preview, the commit and the tag (and the
-- commit the tag points to where the checkout has it). -> subject table, its sha256.
function gate.subject(checklist, preview, commit, tag, tag_commit)
  local s = { checklist_sha256 = crypto.sha256(checklist or ""), preview_sha256 = preview and crypto.sha256(preview) or nil,
    commit = commit, tag = tag, tag_commit = tag_commit }
  return s, crypto.sha256(json.encode(s))
end

-- What changed between two subjects, for people: "the commit moved from abc to def".
function gate.moved(old, new)
  local parts = {}
  local function short(v) return v and tostring(v):sub(1, 12) or "none" end
  if old.commit ~= new.commit then parts[#parts + 1] = ("the commit moved from %s to %s"):format(short(old.commit), short(new.commit)) end
  if old.tag ~= new.tag then parts[#parts + 1] = ("the tag changed from %s to %s"):format(old.tag or "none", new.tag or "none") end
  if old.tag_commit ~= new.tag_commit then
    parts[#parts + 1] = ("tag %s moved from %s to %s"):format(new.tag or old.tag or "?", short(old.tag_commit), short(new.tag_commit))
  end
  if old.checklist_sha256 ~= new.checklist_sha256 then parts[#parts + 1] = "the checklist changed" end
  if old.preview_sha256 ~= new.preview_sha256 then parts[#parts + 1] = "the preview changed" end
  return #parts > 0 and table.concat(parts, "; ") or "what is shown changed"
end

-- ---- rows ----

local function decode_gate(row)
  if not row then return nil end
  row.spec_text = row.spec -- as stored: what the `requested` event's hash covers
  row.spec = json.decode(row.spec)
  row.subject = json.decode(row.subject)
  return row
end

function gate.load(store, id)
  return decode_gate(store:query("SELECT * FROM gates WHERE id = ?", id)[1])
end

-- Gates of a run, in the order they were asked for.
function gate.of_run(store, run_id)
  local rows = store:query("SELECT * FROM gates WHERE run_id = ? ORDER BY requested_at, stage, n", run_id)
  for i, r in ipairs(rows) do rows[i] = decode_gate(r) end
  return rows
end

-- Gates still waiting (whatever their runs' hosts are doing), with their runs' host rows.
function gate.pending(store)
  local rows = store:query([[SELECT g.*, r.status AS run_status, r.pid AS run_pid, r.host_started AS run_host_started
    FROM gates g JOIN runs r ON r.id = g.run_id WHERE g.status = 'pending' ORDER BY g.deadline, g.id]])
  for i, r in ipairs(rows) do rows[i] = decode_gate(r) end
  return rows
end

function gate.events(store, id, after)
  return store:query("SELECT * FROM gate_events WHERE gate_id = ? AND seq > ? ORDER BY seq", id, after or 0)
end

-- ---- the hash chain ----

function gate.genesis(id)
  return crypto.sha256("stagehost approval gate " .. id)
end

-- The canonical text of an event: its fields (not its hashes) as JSON with sorted keys; `data`
-- stays the JSON text it was stored as, so nothing is re-encoded on the way.
function gate.canonical(e)
  return json.encode{ gate = e.gate_id, seq = e.seq, kind = e.kind, at = e.at, who = e.who, via = e.via,
    decision = e.decision, comment = e.comment, shown_sha256 = e.shown_sha256, data = e.data }
end

function gate.hash_of(prev, e)
  return crypto.sha256(prev .. gate.canonical(e))
end

-- Check the chain of events[from..] against what comes before it (prev: the hash before
-- events[from], the genesis for 1). -> nil, or the seq where it breaks and why.
function gate.check_chain(id, events, from, prev)
  from = from or 1
  prev = prev or gate.genesis(id)
  for i = from, #events do
    local e = events[i]
    if e.seq ~= i then return i, ("event %d is missing (the next one stored is %s)"):format(i, tostring(e.seq)) end
    if e.prev_hash ~= prev then return i, ("event %d does not follow event %d (its prev_hash is not that event's hash)"):format(i, i - 1) end
    if gate.hash_of(prev, e) ~= e.hash then return i, ("event %d (%s) was edited: its content does not match its hash"):format(i, e.kind) end
    prev = e.hash
  end
  return nil, prev
end

-- The whole record of a gate: the chain, its end against the gate's row, and the row's
-- deadline and subject against the events that set them. -> nil, or seq (0 for the row) and why.
function gate.verify(g, events)
  local at, head = gate.check_chain(g.id, events)
  if at then return at, head end
  if #events == 0 or events[1].kind ~= "requested" then return 1, "the first event is not 'requested'" end
  if g.events ~= #events or g.head_hash ~= head then
    return #events + 1, ("the gate records %d events ending in %s, the chain has %d ending in %s: events were removed or added"):format(
      g.events, tostring(g.head_hash):sub(1, 12), #events, tostring(head):sub(1, 12))
  end
  local first = json.decode(events[1].data)
  if first.deadline ~= g.deadline or first.spec ~= g.spec_text then
    return 0, "the gate's row was edited: its deadline or approvers differ from its 'requested' event"
  end
  local shown = events[1].shown_sha256
  for _, e in ipairs(events) do
    if e.kind == "voided" then shown = e.shown_sha256 end
  end
  if shown ~= g.shown_sha256 then return 0, "the gate's row was edited: what it says was shown differs from its events" end
  return nil
end

-- Append an event to g (inside a transaction): the row, then the gate's count and head.
-- e: {kind, at, who, via, decision, comment, shown_sha256, data (a table)}.
function gate.append(store, g, e)
  local ev = { gate_id = g.id, seq = g.events + 1, kind = e.kind, at = e.at, who = e.who, via = e.via,
    decision = e.decision, comment = e.comment, shown_sha256 = e.shown_sha256,
    data = e.data ~= nil and json.encode(e.data) or nil }
  ev.prev_hash = g.head_hash
  ev.hash = gate.hash_of(ev.prev_hash, ev)
  store:query([[INSERT INTO gate_events (gate_id, seq, kind, at, who, via, decision, comment, shown_sha256, data,
    prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)]], ev.gate_id, ev.seq, ev.kind, ev.at, ev.who, ev.via,
    ev.decision, ev.comment, ev.shown_sha256, ev.data, ev.prev_hash, ev.hash)
  store:query("UPDATE gates SET events = ?, head_hash = ? WHERE id = ?", ev.seq, ev.hash, g.id)
  g.events, g.head_hash = ev.seq, ev.hash
  return ev
end

-- Create a gate and its `requested` event (inside a transaction). f: id, run_id, stage, n,
-- title, spec, actor, checklist, preview, subject, shown, now, at, deadline.
function gate.create(store, f)
  local spec_text = json.encode(f.spec)
  store:query([[INSERT INTO gates (id, run_id, stage, n, title, spec, actor, checklist, preview, subject, shown_sha256,
    requested_at, deadline, status, events, head_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',0,?)]],
    f.id, f.run_id, f.stage, f.n, f.title, spec_text, f.actor, f.checklist, f.preview, json.encode(f.subject),
    f.shown, f.at, f.deadline, gate.genesis(f.id))
  local g = gate.load(store, f.id)
  gate.append(store, g, { kind = "requested", at = f.at, who = f.actor, via = "stage " .. f.stage,
    shown_sha256 = f.shown, data = { title = f.title, spec = spec_text, subject = f.subject, deadline = f.deadline } })
  return g
end

-- ---- deciding ----

local function lower(s) return s and tostring(s):lower() end

local function member(list, who)
  local w = lower(who)
  for _, name in ipairs(list or {}) do
    if lower(name) == w then return true end
  end
  return false
end
gate.member = member

-- Every name that may vote, or nil when anyone may.
function gate.approvers(spec)
  if spec.groups then
    local all, seen = {}, {}
    for _, grp in ipairs(spec.groups) do
      for _, m in ipairs(grp.members) do
        if not seen[lower(m)] then seen[lower(m)], all[#all + 1] = true, m end
      end
    end
    return all
  end
  return spec.approvers
end

-- gate.tally(g, events, now) -> {decision = nil|"approved"|"rejected"|"timeout", votes (the
-- counted ones: the latest of each person since the last void, in the order they came),
-- approvals, required, groups = {{team, have, required}}, reminded = {[text] = true},
-- recorded (the `decided` event, if any)}. Votes decide before the deadline does: a vote
-- recorded in time counts even when the waiting host sees it late.
function gate.tally(g, events, now)
  local latest, reminded, recorded = {}, {}, nil
  for _, e in ipairs(events) do
    if e.kind == "voided" then
      latest = {}
    elseif e.kind == "voted" then
      latest[lower(e.who)] = e
    elseif e.kind == "reminded" then
      local d = e.data and json.decode(e.data)
      if d and d.before then reminded[d.before] = true end
    elseif e.kind == "decided" then
      recorded = e
    end
  end
  local votes = {}
  for _, e in pairs(latest) do votes[#votes + 1] = e end
  table.sort(votes, function(a, b) return a.seq < b.seq end)
  local spec = g.spec
  local approvals, rejected = {}, nil
  for _, v in ipairs(votes) do
    if v.decision == "rejected" then rejected = rejected or v
    elseif v.decision == "approved" then approvals[#approvals + 1] = v.who end
  end
  local t = { votes = votes, approvals = #approvals, required = spec.required, reminded = reminded, recorded = recorded }
  local enough = #approvals >= spec.required
  if spec.groups then
    t.groups = {}
    for _, grp in ipairs(spec.groups) do
      local have = 0
      for _, who in ipairs(approvals) do
        if member(grp.members, who) then have = have + 1 end
      end
      t.groups[#t.groups + 1] = { team = grp.team, have = have, required = grp.required }
      if have < grp.required then enough = false end
    end
  end
  if recorded then t.decision = recorded.decision
  elseif g.status ~= "pending" then t.decision = g.status
  elseif rejected then t.decision, t.rejection = "rejected", rejected
  elseif enough then t.decision = "approved"
  elseif now >= g.deadline then t.decision = "timeout" end
  return t
end

-- "1 of 2" or "sre 1/1, leads 0/1 (1 of 2)": how far a gate is, for people.
function gate.progress(t)
  local text = ("%d of %d"):format(t.approvals, t.required)
  if t.groups then
    local parts = {}
    for _, grp in ipairs(t.groups) do parts[#parts + 1] = ("%s %d/%d"):format(grp.team, grp.have, grp.required) end
    text = table.concat(parts, ", ") .. " (" .. text .. ")"
  end
  return text
end

-- Why a vote cannot be recorded on g now, or nil. vote: {who, decision, comment, via,
-- member_of}: member_of, a GitHub team slug listed among the approvers ("@org/team") that the
-- channel has checked `who` belongs to (the GitHub channel, through the teams API).
function gate.refusal(g, events, now, vote, tally)
  local t = tally or gate.tally(g, events, now)
  if t.decision == "timeout" then
    return ("gate %s timed out at %s: votes are no longer taken"):format(g.id, gate.iso(g.deadline))
  elseif t.decision then
    return ("gate %s is already decided (%s): votes are no longer taken"):format(g.id, t.decision)
  end
  local spec, who = g.spec, vote.who
  local forbid = {}
  for _, f in ipairs(spec.forbid or {}) do forbid[f] = true end
  if forbid.actor and g.actor and lower(g.actor) == lower(who) then
    return "you started this run: someone else must approve it"
  end
  if forbid.authors and identity.is_author(spec.authors, who) then
    return "you wrote commits being deployed: someone else must approve it"
  end
  local listed = gate.approvers(spec)
  if listed and not member(listed, who) and not (vote.member_of and member(listed, vote.member_of)) then
    return ("%s is not an approver of gate %s (approvers: %s)"):format(who, g.id, table.concat(listed, ", "))
  end
  if vote.decision == "rejected" and not vote.comment then
    return "a rejection needs a reason: give a comment (--comment TEXT)"
  end
  if spec.require_comment and not vote.comment then
    return "this gate needs a comment with every vote: give one (--comment TEXT)"
  end
  return nil
end

-- A vote as what is given back: {who, decision, comment, at, via, shown_sha256}.
function gate.vote_of(e)
  return { who = e.who, decision = e.decision, comment = e.comment, at = e.at, via = e.via, shown_sha256 = e.shown_sha256 }
end

-- An event as `--audit --json` and run.json have it.
function gate.event_of(e)
  return { seq = e.seq, kind = e.kind, at = e.at, who = e.who, via = e.via, decision = e.decision,
    comment = e.comment, shown_sha256 = e.shown_sha256, data = e.data and json.decode(e.data) or nil,
    prev_hash = e.prev_hash, hash = e.hash }
end

-- Masked for storage: what a gate stores is what a person may see.
function gate.masked(s)
  return s and log.masked(s)
end

return gate
