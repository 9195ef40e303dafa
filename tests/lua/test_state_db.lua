-- The state database under stress and damage: its WAL stays bounded, damage past the header is
-- one line and exit 2 with nothing written, a read-only state directory can still be read, and
-- a bad retention_days writes nothing.
local T = require("harness")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")
local crypto = require("stagehost.crypto")

local sh = T.stagehost

local ONE_STAGE = [[
local pipeline = require("stagehost.pipeline")
return pipeline.define{ name = "one", stages = {
  { name = "a", run = function() print("hello from a") return { x = 1 } end },
} }
]]

local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

T.test("20,000 checkpoints keep the WAL under a few MB, and it is empty after the run", function()
  local dir = T.project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "many", stages = {
      { name = "a", run = function(ctx)
        local largest = 0
        for i = 1, 20000 do
          ctx:checkpoint("k" .. (i % 50), ("v"):rep(100) .. i)
          if i % 500 == 0 then
            local f = io.open(".stagehost/state.db-wal", "rb")
            if f then largest = math.max(largest, f:seek("end")); f:close() end
          end
        end
        return { largest = largest }
      end },
    } }
  ]] }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local st = require("stagehost.json").decode(sh(dir, { "status", id, "--json" }).stdout)
  local largest = st.stages[1].outputs.largest
  T.ok(largest > 0, "the WAL was measured")
  T.ok(largest < 8 * 1024 * 1024, ("the WAL reached %d bytes"):format(largest))
  T.eq(size_of(dir .. "/.stagehost/state.db-wal"), 0, "no WAL left after the run")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("damage past the header: every command says so in one line naming the file, exit 2, nothing written", function()
  local dir = T.project{ ["p.lua"] = ONE_STAGE }
  for _ = 1, 3 do T.eq(sh(dir, { "run", "p.lua" }).code, 0) end
  local db = dir .. "/.stagehost/state.db"
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local bytes = assert(fs.read(db))
  T.ok(#bytes >= 5 * 4096, "a database of several pages")
  -- the header page stays whole: opening alone does not notice
  assert(fs.write(db, bytes:sub(1, 8192) .. ("\165"):rep(3 * 4096) .. bytes:sub(8192 + 3 * 4096 + 1)))
  local damaged = crypto.sha256(assert(fs.read(db)))
  for _, args in ipairs{ { "runs" }, { "status", id }, { "run", "p.lua" }, { "prune" }, { "resume", id } } do
    local r = sh(dir, args)
    local what = table.concat(args, " ")
    T.eq(r.code, 2, what .. ": " .. r.stderr)
    T.match(r.stderr, "^stagehost: [^\n]*%.stagehost/state%.db is damaged [^\n]*\n$", what)
  end
  T.eq(crypto.sha256(assert(fs.read(db))), damaged, "the database is unchanged")
  T.eq(#assert(fs.list(dir .. "/.stagehost/runs")), 3, "no run directory was made")
  T.eq(size_of(db .. "-wal"), 0, "no WAL was written")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- Run argv as a user who cannot write the state directory: as root (who can write anything) as
-- nobody, with the tree made readable to all; otherwise as this user, the tree made read-only.
local function read_only_run(dir, args)
  local argv = { os.getenv("STAGEHOST_BIN") }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local me = proc.run{ "id", "-u" }.stdout:match("%d+")
  if me == "0" then
    table.insert(argv, 1, "--clear-groups")
    table.insert(argv, 1, "--regid=65534")
    table.insert(argv, 1, "--reuid=65534")
    table.insert(argv, 1, "setpriv")
  end
  argv.cwd = dir
  return proc.run(argv)
end

T.test("a read-only state directory can still be read: runs, status and logs", function()
  local dir = T.project{ ["p.lua"] = ONE_STAGE }
  T.eq(sh(dir, { "run", "p.lua" }).code, 0)
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local before = crypto.sha256(assert(fs.read(dir .. "/.stagehost/state.db")))
  -- the temp dir's parents must be passable for another user, its files readable, none writable
  assert(proc.run{ "chmod", "-R", "a+rX,a-w", dir }.ok)
  assert(proc.run{ "chmod", "a+x", (dir:match("^(.*)/[^/]+$")) }.ok)
  local runs = read_only_run(dir, { "runs" })
  T.eq(runs.code, 0, runs.stderr)
  T.has(runs.stdout, id)
  local status = read_only_run(dir, { "status", id })
  T.eq(status.code, 0, status.stderr)
  T.match(status.stdout, "success")
  local logs = read_only_run(dir, { "logs", id, "a" })
  T.eq(logs.code, 0, logs.stderr)
  T.has(logs.stdout .. logs.stderr, "hello from a")
  T.eq(crypto.sha256(assert(fs.read(dir .. "/.stagehost/state.db"))), before, "nothing was written")
  assert(proc.run{ "chmod", "-R", "u+w", dir }.ok)
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a bad retention_days is refused before any file is written", function()
  local dir = T.project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "keep", stages = {
      { name = "a", run = function(ctx) ctx:artifact("x.txt", "data", { retention_days = -1 }) end },
    } }
  ]] }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 1)
  T.has(r.stderr, "retention_days must be a number of days")
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  T.eq(fs.exists(dir .. "/.stagehost/runs/" .. id .. "/artifacts/a/x.txt"), false, "no untracked file")
  fs.remove(dir, { recursive = true })
end)

local function leftovers_case(in_subtask)
  local dir = T.project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local fs = require("stagehost.fs")
    local task = require("stagehost.task")
    local function alive(pid)
      local stat = fs.read("/proc/" .. pid .. "/stat")
      return stat ~= nil and stat:match("%) (%a)") ~= "Z"
    end
    return pipeline.define{ name = "leftovers", stages = {
      { name = "deploy", run = function()
        if fs.exists("pids") then -- the resumed attempt: is the first one's work still running?
          local alive_now = {}
          for pid in fs.read("pids"):gmatch("%d+") do if alive(pid) then alive_now[#alive_now + 1] = pid end end
          fs.write("seen-on-resume", table.concat(alive_now, " "))
          return { resumed = true }
        end
        local function start()
          return require("stagehost.proc").spawn{ "sh", "-c", "sleep 300 & echo $! > child.pid; exec sleep 300" }
        end
        -- IN_SUBTASK: started from a task the stage spawned (task.all), as the checks stage does
        local p = IN_SUBTASK and task.all{ start }[1] or start()
        while not fs.exists("child.pid") or fs.read("child.pid") == "" do task.sleep(0.02) end
        fs.write("pids", p.pid .. " " .. fs.read("child.pid"):match("%d+"))
        task.sleep(300)
      end },
    } }
  ]] }
  local source = fs.read(dir .. "/p.lua"):gsub("IN_SUBTASK", tostring(in_subtask))
  assert(fs.write(dir .. "/p.lua", source))
  local host = proc.spawn{ os.getenv("STAGEHOST_BIN"), "run", "p.lua", cwd = dir }
  T.wait_for(dir .. "/pids")
  local pids = {}
  for pid in fs.read(dir .. "/pids"):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  T.eq(#pids, 2)
  host:kill("KILL")
  local dead = host:wait()
  T.eq(dead.signal, "SIGKILL")
  for _, pid in ipairs(pids) do T.ok(T.alive(pid), "the stage's process " .. pid .. " outlived its host") end
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local r = sh(dir, { "resume", id })
  T.eq(r.code, 0, r.stderr)
  T.eq(fs.read(dir .. "/seen-on-resume"), "", "none of the old processes ran beside the resumed stage")
  T.match(r.stderr, ("stopped 2 processes left by the dead host %%(pid %d%%)"):format(dead.pid))
  for _, pid in ipairs(pids) do T.ok(T.gone(pid), "process " .. pid .. " is gone") end
  -- the records went with them: another resume has nothing to stop
  local rows = require("stagehost.core.sqlite").open(dir .. "/.stagehost/state.db"):query("SELECT * FROM procs")
  T.eq(#rows, 0, "no process group recorded any more")
  fs.remove(dir, { recursive = true })
end

T.test("after kill -9, resume stops the stage's processes the dead host left before running it again", function()
  leftovers_case(false)
end, { timeout = 120 })

T.test("... also those a task of the stage started (task.all)", function()
  leftovers_case(true)
end, { timeout = 120 })

T.run()
