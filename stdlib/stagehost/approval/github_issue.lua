-- The approval channel "github": an issue in the run's repository asks for the approval — its
-- title, the checklist, the approvers and the commands — and comments answer it:
--
--   /approve [comment]        /reject REASON
--
-- from a listed approver: a login among `approvers`, or a member of a team listed as
-- "@org/team-slug" (resolved once through GET /orgs/{org}/teams/{team_slug}/members). A comment
-- by anyone else is ignored with one log line; a refused vote (self-approval, no reason) is
-- answered in the issue. The comments are polled with ETags (If-None-Match): while nothing
-- changes GitHub answers 304, which costs no rate limit. When the gate decides, the issue gets
-- a comment with the outcome and is closed (completed when approved, not planned otherwise); a
-- run that detaches leaves it open, and its resume picks the same issue up again.
--
-- The client is github.client{} (GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL, or what
-- --sandbox configured). STAGEHOST_GITHUB_POLL sets the seconds between polls (default 10).
-- The issue's number and the last comment read are kept in the state database (table
-- gate_channels), so a resumed run neither opens a second issue nor counts a comment twice.
local task = require("stagehost.task")
local log = require("stagehost.log")
local json = require("stagehost.json")
local errors = require("stagehost.errors")
local gate = require("stagehost.approval.gate")

local channel = {}

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS gate_channels (
  gate_id TEXT NOT NULL, channel TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (gate_id, channel)
);
]]

local function noop() end

local function load_state(store, id)
  if not store then return {} end
  store:ensure("approval_channels", SCHEMA)
  local row = store:query("SELECT data FROM gate_channels WHERE gate_id = ? AND channel = 'github'", id)[1]
  return row and json.decode(row.data) or {}
end

local function save_state(store, id, state)
  if not store then return end
  store:query([[INSERT INTO gate_channels (gate_id, channel, data) VALUES (?, 'github', ?)
    ON CONFLICT(gate_id, channel) DO UPDATE SET data = excluded.data]], id, json.encode(state))
end

-- The issue's body: what the approvers see, and how to answer.
local function body_of(view, approvers, spec)
  local lines = {
    ("**Approval needed:** %s"):format(view.title), "",
    ("Run `%s`, stage `%s`, gate `%s`; %d approval%s needed, until %s."):format(view.run, view.stage, view.gate,
      spec.required, spec.required == 1 and "" or "s", gate.iso(view.deadline)), "",
    "### Checklist", "", view.checklist or "_(none)_", "",
    "### How to answer", "",
    "Comment `/approve` (anything after it is your comment), or `/reject REASON`. Approvers: "
      .. (approvers and table.concat(approvers, ", ") or "anyone") .. ".",
    "",
    ("From a terminal that can reach the state directory: `%s`, or `%s`."):format(view.approve, view.reject),
    "", ("<sub>Votes are bound to what is shown: sha256 `%s`.</sub>"):format(view.shown_sha256),
  }
  return log.masked(table.concat(lines, "\n"))
end

-- "/approve looks good" -> "approved", "looks good"; anything else -> nil.
function channel.parse(text)
  local first, rest = tostring(text or ""):match("^%s*(/%a+)([^\n]*)")
  if not first then return nil end
  local cmd = first:lower()
  local comment = rest:gsub("^%s+", ""):gsub("%s+$", "")
  local more = tostring(text):match("^%s*/%a+[^\n]*\n(.*)$")
  if more and more:find("%S") then comment = (comment ~= "" and (comment .. "\n") or "") .. more:gsub("%s+$", "") end
  if comment == "" then comment = nil end
  if cmd == "/approve" then return "approved", comment end
  if cmd == "/reject" then return "rejected", comment end
  return nil
end

-- Who may vote: {logins = {[lower] = true}, teams = {["@org/team"] = {[lower] = true}}}, or nil
-- when anyone may. A team that cannot be read is logged and counts for nobody.
local function resolve(gh, listed)
  if not listed then return nil end
  local out = { logins = {}, teams = {} }
  for _, name in ipairs(listed) do
    local org, slug = name:match("^@([^/]+)/(.+)$")
    if org then
      local ok, members = pcall(gh.list_team_members, gh, org, slug)
      local set = {}
      if ok then
        for _, m in ipairs(members) do if type(m) == "table" and m.login then set[m.login:lower()] = true end end
      else
        if errors.is_cancel(members) then error(members, 0) end
        log.warn(("approval github: team %s could not be read (%s): its members cannot vote here"):format(name,
          errors.first_line(members)))
      end
      out.teams[name] = set
    else
      out.logins[name:lower()] = true
    end
  end
  return out
end

-- nil when `login` may not vote; else true and the team it votes through (or nil for a name).
local function allowed(who, login)
  if not who then return true end
  local l = login:lower()
  if who.logins[l] then return true end
  for team, set in pairs(who.teams) do
    if set[l] then return true, team end
  end
  return nil
end

-- channels.github.open(view, api) -> close(how)
function channel.open(view, api)
  local ok, gh = pcall(require("stagehost.github").client, {})
  if not ok then
    log.warn(("approval github: no GitHub client (%s): the GitHub channel is off"):format(errors.first_line(gh)))
    return noop
  end
  local store = api.store
  local g = store and gate.load(store, view.gate)
  local spec = g and g.spec or { required = 1 }
  local listed = g and gate.approvers(spec) or nil
  local state = load_state(store, view.gate)
  if not state.issue then
    local made, issue = pcall(gh.create_issue, gh, { title = ("Approval needed: %s"):format(view.title),
      body = body_of(view, listed, spec), labels = { "stagehost-approval" } })
    if not made then
      if errors.is_cancel(issue) then error(issue, 0) end
      log.warn(("approval github: the issue could not be opened (%s): the GitHub channel is off"):format(errors.first_line(issue)))
      return noop
    end
    state.issue, state.url, state.seen = issue.number, issue.html_url, 0
    save_state(store, view.gate, state)
    log.info(("approval github: issue #%d asks for the approval (%s)"):format(issue.number, tostring(issue.html_url)))
  else
    log.info(("approval github: issue #%d still asks for the approval"):format(state.issue))
  end
  local number = state.issue
  local path = ("/repos/%s/issues/%d/comments"):format(gh.repo, number)
  local every = tonumber(os.getenv("STAGEHOST_GITHUB_POLL") or "") or 10
  local etag
  local who -- resolved on the first comment that needs it
  local ignored = {}

  local function handle(c)
    local decision, comment = channel.parse(c.body)
    local login = type(c.user) == "table" and c.user.login or nil
    if not decision or not login then return end
    who = who or resolve(gh, listed) or false
    local may, team = allowed(who or nil, login)
    if not may then
      if not ignored[c.id] then
        ignored[c.id] = true
        log.info(("approval github: %s's %s on issue #%d is ignored: not an approver of gate %s"):format(login,
          decision == "approved" and "/approve" or "/reject", number, view.gate))
      end
      return
    end
    local r, why = api.vote{ who = login, decision = decision, comment = comment, via = "github", member_of = team }
    if not r then
      log.info(("approval github: %s's vote on issue #%d was refused: %s"):format(login, number, why))
      pcall(gh.comment, gh, number, ("@%s your vote was not counted: %s"):format(login, why))
    end
  end

  local poller = task.spawn(function()
    while true do
      local fine, data, tag = pcall(gh.get_if_changed, gh, path, etag, { per_page = 100 })
      if not fine then
        if errors.is_cancel(data) then error(data, 0) end
        log.warn(("approval github: reading issue #%d's comments failed: %s"):format(number, errors.first_line(data)))
      elseif data then
        etag = tag
        for _, c in ipairs(data) do
          if type(c) == "table" and math.type(c.id) == "integer" and c.id > (state.seen or 0) then
            handle(c)
            state.seen = c.id
            save_state(store, view.gate, state)
          end
        end
      end
      task.sleep(every)
    end
  end)

  return function(how)
    poller:cancel("the gate stopped waiting")
    if how and how.detached then return end -- the resumed run goes on with the same issue
    local decision = how and how.decision
    local text = decision and ("The gate is decided: **%s**."):format(decision)
      or "The run stopped waiting for this approval (cancelled or failed); it is no longer open."
    local finish = function()
      pcall(gh.comment, gh, number, text)
      local closed, err = pcall(gh.close_issue, gh, number, decision == "approved" and "completed" or "not_planned")
      if closed then log.info(("approval github: issue #%d closed (%s)"):format(number, decision or "not decided"))
      else log.warn(("approval github: issue #%d could not be closed: %s"):format(number, errors.first_line(err))) end
    end
    -- the stage's own task may be unwinding from a cancel: the closing words go in a task of
    -- the run, which the run waits for
    if api.run and api.run.spawn then api.run:spawn(finish) else task.spawn(finish) end
  end
end

return channel
