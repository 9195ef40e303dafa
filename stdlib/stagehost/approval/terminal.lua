-- The approval channel "terminal": when the run's host is attached to a terminal (its output and
-- its input are a TTY, as for the live view), the gate's checklist is shown under the live view
-- and a prompt asks
--
--   approve? [y/N/c(omment)]
--
-- y approves; n rejects (it asks for the reason a rejection needs); c asks for a comment that
-- goes with the vote, then asks again; Enter alone (the N) casts no vote and goes on waiting.
-- The answer is read without blocking the loop (stagehost.core.tty): votes from every other
-- channel keep coming in, and the first decision wins; the prompt then ends with the outcome.
--
-- Who answers: the OS user at this keyboard ($USER, else the password database), not the run's
-- actor, whoever started the run: a terminal is a person. Where the gate would refuse that
-- person (forbid = "actor" and they started the run, not an approver) the prompt is not shown:
-- one line says why and the gate waits for the other channels. A vote refused for another
-- reason (a rejection without a reason) says why and asks again. Votes are recorded with
-- via = "terminal".
local task = require("stagehost.task")
local log = require("stagehost.log")
local gate = require("stagehost.approval.gate")
local identity = require("stagehost.approval.identity")

local terminal = {}

local function noop() end

local function say(text)
  io.stdout:write(text)
  io.stdout:flush()
end

-- Why `who` cannot vote on the gate at all (an approval with a comment would still be refused),
-- or nil. Without a state store (no state directory) nothing is refused in advance.
local function barred(api, view, who)
  if not api.store then return nil end
  local g = gate.load(api.store, view.gate)
  if not g then return nil end
  local now = gate.clock(api.store)
  return gate.refusal(g, gate.events(api.store, view.gate), now, { who = who, decision = "approved", comment = "-" })
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- One conversation: -> when it ended by itself (a vote counted, no input, barred).
local function converse(tty, view, api, who)
  local comment
  while true do
    say(("approve? [y/N/c(omment)]%s "):format(comment and " (with your comment)" or ""))
    local line, err = tty.read_line()
    if not line then
      say(("\n(no answer from this terminal%s; waiting for the other channels)\n"):format(err and (": " .. err) or ""))
      return
    end
    local answer = trim(line):lower()
    local decision
    if answer == "y" or answer == "yes" then
      decision = "approved"
    elseif answer == "n" or answer == "no" then
      if not comment then
        say("reason for rejecting: ")
        local reason = tty.read_line()
        if not reason then return end
        comment = trim(reason) ~= "" and trim(reason) or nil
      end
      decision = "rejected"
    elseif answer == "c" or answer == "comment" then
      say("comment: ")
      local text = tty.read_line()
      if not text then return end
      comment = trim(text) ~= "" and trim(text) or nil
    elseif answer == "" then
      say("no vote cast; still waiting (other channels too)\n")
    else
      say("answer y (approve), n (reject) or c (add a comment)\n")
    end
    if decision then
      local r, why = api.vote{ who = who, decision = decision, comment = comment, via = "terminal" }
      if r then
        say(("%s as %s: %s approvals%s\n"):format(decision, who, r.progress,
          r.decision_now and (" — the gate is decided: " .. r.decision_now) or "; waiting for the others"))
        return
      end
      say(("your vote was refused: %s\n"):format(why))
      if barred(api, view, who) then
        say("waiting for the other channels\n")
        return
      end
    end
  end
end

-- channels.terminal.open(view, api) -> close(how)
function terminal.open(view, api)
  if os.getenv("GITHUB_ACTIONS") == "true" or not log.isatty() then return noop end
  local ok, tty = pcall(require, "stagehost.core.tty")
  if not ok or not tty.is_tty() then return noop end
  local run = api.run
  if run and run.opts and run.opts.detach then return noop end -- the host is about to leave
  local who = identity.os_user()
  if not who then return noop end
  if run then run.prompting = true end
  local lines = { "", ("── approval needed: %s (gate %s)"):format(view.title, view.gate) }
  for l in (view.checklist or ""):gmatch("[^\n]+") do lines[#lines + 1] = "   " .. l end
  lines[#lines + 1] = ("   until %s; from another terminal: %s"):format(gate.iso(view.deadline), view.approve)
  say(log.masked(table.concat(lines, "\n")) .. "\n")
  local why = barred(api, view, who)
  local talk
  if why then
    say(("you (%s) cannot vote on this gate here: %s; waiting for the other channels\n"):format(who, why))
  else
    talk = task.spawn(converse, tty, view, api, who)
  end
  return function(how)
    if talk then
      talk:cancel("the gate stopped waiting")
      -- the reader closes once the prompt's wait is undone (a task reading cannot close it)
      task.spawn(function()
        talk:join()
        pcall(tty.close)
      end)
    end
    if how and how.decision then
      say(("\n── approval '%s': %s\n"):format(view.title, how.decision))
    elseif how and how.detached then
      say("\n── the run detaches; vote from any terminal, then resume it\n")
    end
    if run then run.prompting = nil end
  end
end

return terminal
