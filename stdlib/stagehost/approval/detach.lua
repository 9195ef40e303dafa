-- Continuing detached runs: a run started with `--detach` leaves when one of its approval
-- gates must wait (status "waiting", nothing running). detach.tick(store, {state_dir}) finds
-- the waiting runs whose gate has decided (approved, rejected, or its deadline passed) and
-- continues each by starting `stagehost resume RUN --state DIR` as a child process, in the
-- directory the run was started from. `stagehost serve` calls it once a second.
--
-- Never twice: this process remembers the runs it has started a resume for until that child
-- ends, and across processes the child's Store:claim (one transaction turning "waiting" into
-- "running" with its pid) lets only one host have the run; a second child is refused (exit 2).
local proc = require("stagehost.proc")
local task = require("stagehost.task")
local log = require("stagehost.log")
local fs = require("stagehost.fs")
local gate = require("stagehost.approval.gate")

local detach = {}

-- run id -> {pid, task} of the resume this process started and that has not ended yet
local started = {}

-- store -> what the last tick saw: {key (the database's version and its last vote), due (the
-- earliest deadline of a waiting run's gate)}; while both hold, a tick reads nothing more, so
-- `serve` holding hundreds of waiting runs spends two small queries a second on them.
local seen = setmetatable({}, { __mode = "k" })

-- Changes when another process commits (data_version) or this one records a vote (the last
-- gate event: data_version does not count this connection's own writes).
local function version_of(store)
  local v = store:query("PRAGMA data_version")[1]
  local e = store:query("SELECT MAX(rowid) AS last FROM gate_events")[1]
  return ("%s:%s"):format(tostring(v and v.data_version), tostring(e and e.last))
end

local function absolute(dir)
  if dir:sub(1, 1) == "/" then return dir end
  return fs.cwd() .. "/" .. dir
end

-- The decision that lets a waiting run go on: any of its pending gates decided by its votes or
-- its deadline (as the resumed stage will see it). -> decision, gate id; or nil.
local function decided(store, run_id, now)
  for _, g in ipairs(gate.of_run(store, run_id)) do
    if g.status == "pending" then
      local t = gate.tally(g, gate.events(store, g.id), now)
      if t.decision then return t.decision, g.id end
    end
  end
  return nil
end

-- detach.tick(store, {state_dir}) -> the resumes started now: {{run, gate, decision, pid, task}}.
-- Each started resume logs one line when it starts and one when it ends; task joins it.
function detach.tick(store, opts)
  local dir = assert(opts and opts.state_dir, "detach.tick: opts.state_dir is required")
  local out = {}
  if not gate.exists(store) then return out end
  local key = version_of(store)
  local last = seen[store]
  local now = gate.clock(store)
  if last and last.key == key and now < last.due then return out end
  local rows = store:query("SELECT id, cwd FROM runs WHERE status = 'waiting' ORDER BY started_at, id")
  local due = math.huge
  for _, d in ipairs(store:query([[SELECT MIN(g.deadline) AS due FROM gates g JOIN runs r ON r.id = g.run_id
      WHERE r.status = 'waiting' AND g.status = 'pending']])) do
    due = d.due or due
  end
  -- a resume that could not start, or is still starting, is looked at again next time
  local busy = false
  for _, row in ipairs(rows) do
    local decision, gate_id = nil, nil
    if started[row.id] then busy = true else decision, gate_id = decided(store, row.id, now) end
    if decision then
      local argv = { proc.executable(), "resume", row.id, "--state", absolute(dir),
        cwd = row.cwd or fs.cwd(), stdout = absolute(dir) .. "/runs/" .. row.id .. "/resume.log" }
      local ok, p = pcall(proc.spawn, argv)
      busy = true
      if not ok then
        log.error(("detached run %s: gate %s %s, but 'stagehost resume' could not start: %s"):format(row.id, gate_id,
          decision, tostring(p)))
      else
        local entry = { run = row.id, gate = gate_id, decision = decision, pid = p.pid }
        started[row.id] = entry
        log.info(("detached run %s: gate %s %s; resuming it (pid %d, output in %s)"):format(row.id, gate_id, decision,
          entry.pid, argv.stdout))
        entry.task = task.spawn(function()
          local r = p:wait()
          started[row.id] = nil
          seen[store] = nil -- a resume that did not take the run (exit 2) may be tried again
          local how = r.code == 0 and "succeeded" or r.code == 3 and "was cancelled"
            or r.code == 2 and "was not resumed" or ("failed (exit %s)"):format(tostring(r.code))
          local said = (r.stderr or ""):match("([^\n]+)\n?$")
          log.info(("detached run %s: its resume %s%s"):format(row.id, how, r.code ~= 0 and said and (": " .. said) or ""))
          return r
        end)
        out[#out + 1] = entry
      end
    end
  end
  seen[store] = not busy and { key = key, due = due } or nil
  return out
end

return detach
