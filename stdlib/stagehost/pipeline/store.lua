-- Durable run state in SQLite (WAL) at DIR/state.db: runs, stages, events, checkpoints,
-- artifacts. The engine writes every transition here before acting on it, so `stagehost
-- resume ID` after a kill -9 knows exactly what finished. WAL with synchronous=NORMAL: a
-- committed transition survives the host being killed; the database stays whole either way.
local sqlite = require "stagehost.core.sqlite"
local json = require "stagehost.json"
local fs = require "stagehost.fs"
local log = require "stagehost.log"

-- What is stored has every secret masked, as what is printed does (a resumed run sees *** where
-- a secret was: it is never written down).
local function stored(value) return log.masked(json.encode(value)) end
local function stored_text(s) return s and log.masked(tostring(s)) end

local Store = {}
Store.__index = Store
Store.__name = "stagehost.store"

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, file TEXT NOT NULL, cwd TEXT, args TEXT,
  tag TEXT, env TEXT, actor TEXT, vars TEXT, status TEXT NOT NULL,
  started_at TEXT, finished_at TEXT, pid INTEGER, host_started TEXT,
  cancel_requested TEXT
);
CREATE TABLE IF NOT EXISTS stages (
  run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL, position INTEGER,
  status TEXT NOT NULL, started_at TEXT, finished_at TEXT, duration REAL, attempts INTEGER,
  outputs TEXT, error TEXT, reason TEXT, allowed_failure INTEGER,
  PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT, at TEXT NOT NULL, kind TEXT NOT NULL, message TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id);
CREATE TABLE IF NOT EXISTS checkpoints (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
  PRIMARY KEY (run_id, stage, key)
);
CREATE TABLE IF NOT EXISTS artifacts (
  id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT, name TEXT NOT NULL, path TEXT NOT NULL,
  sha256 TEXT, size INTEGER, created_at TEXT NOT NULL, expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_expiry ON artifacts(expires_at);
]]

local function fail(fmt, ...)
  local cli = require "stagehost.cli"
  cli.exit(2, fmt, ...)
end

-- This process's start time (clock ticks since boot): with the pid it names a host for good,
-- since a pid alone may be reused after the host died.
local function start_time_of(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  local after = stat:match("^%d+ %b() (.*)$")
  if not after then return nil end
  local fields = {}
  for v in after:gmatch("%S+") do fields[#fields + 1] = v end
  return fields[20] -- field 22 of the whole line
end

local function self_pid()
  local f = io.open("/proc/self/stat")
  local pid = f and tonumber(f:read("a"):match("^(%d+)"))
  if f then f:close() end
  return pid
end

-- Store.open(dir) -> store. A corrupt or locked database is a clear error, never overwritten.
function Store.open(dir, opts)
  local ok, err = fs.mkdir(dir)
  if not ok then fail("cannot use state directory '%s': %s", dir, err) end
  local path = dir .. "/state.db"
  local wait = tonumber(os.getenv("STAGEHOST_STATE_TIMEOUT") or "") or 5000 -- ms to wait for a lock
  local db, msg, code = sqlite.open(path, { readonly = opts and opts.readonly, busy_timeout = math.floor(wait) })
  if not db then
    if code == "SQLITE_NOTADB" or code == "SQLITE_CORRUPT" then
      fail("%s is not a usable state database (%s); move it aside to start afresh, nothing was changed", path, msg)
    end
    fail("cannot open state database %s: %s", path, msg)
  end
  if not (opts and opts.readonly) then
    -- checkpoints of the WAL into the database fsync; done when the store closes rather than
    -- every ~1000 pages in the middle of a run, where they stall the loop
    local done, xerr, xcode = db:exec("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;" .. SCHEMA)
    if not done then
      db:close()
      if xcode == "SQLITE_BUSY" then fail("state database %s is locked by another process: %s", path, xerr) end
      fail("state database %s: %s", path, xerr)
    end
  end
  return setmetatable({ db = db, dir = dir, path = path, readonly = opts and opts.readonly }, Store)
end

function Store:close()
  if self.closed then return end
  self.closed = true
  if not self.readonly then self.db:query("PRAGMA wal_checkpoint(PASSIVE)") end -- never waits on readers
  self.db:close()
end

local function q(self, sql, ...)
  local rows, err, code = self.db:query(sql, ...)
  if code == "SQLITE_BUSY" then
    fail("state database %s is locked by another process (waited STAGEHOST_STATE_TIMEOUT ms); this change was not written: %s",
      self.path, err)
  end
  if not rows then error(("state database %s: %s (%s)"):format(self.path, err, code), 2) end
  return rows
end

local function now_iso() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

-- ---- the engine's interface ----

local function list_of(t)
  local out = json.array{}
  for i = 1, #(t or {}) do out[i] = t[i] end
  return out
end

function Store:save_run(run)
  if not self.host_pid then
    self.host_pid = self_pid()
    self.host_started = start_time_of(self.host_pid)
  end
  q(self, [[INSERT INTO runs (id, pipeline, file, cwd, args, tag, env, actor, vars, status, started_at,
      finished_at, pid, host_started) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT(id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at,
      pid = excluded.pid, host_started = excluded.host_started]],
    run.id, run.pipeline, run.file, run.cwd, stored(list_of(run.args)), run.tag, run.env,
    run.actor, stored(run.vars or {}), run.status, run.started_at, run.finished_at,
    self.host_pid, self.host_started)
end

function Store:save_stage(run, rec)
  self.db:transaction(self.save_stage_now, self, run, rec) -- the row and its event together
end

function Store.save_stage_now(self, run, rec)
  local position = 0
  for i, name in ipairs(run.order or {}) do if name == rec.name then position = i end end
  q(self, [[INSERT INTO stages (run_id, name, position, status, started_at, finished_at, duration,
      attempts, outputs, error, reason, allowed_failure) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT(run_id, name) DO UPDATE SET status = excluded.status, started_at = excluded.started_at,
      finished_at = excluded.finished_at, duration = excluded.duration, attempts = excluded.attempts,
      outputs = excluded.outputs, error = excluded.error, reason = excluded.reason,
      allowed_failure = excluded.allowed_failure]],
    run.id, rec.name, position, rec.status, rec.started_at, rec.finished_at, rec.duration, rec.attempts,
    stored(rec.outputs or {}), stored_text(rec.error), stored_text(rec.reason), rec.allowed_failure and 1 or 0)
  q(self, "INSERT INTO events (run_id, stage, at, kind, message) VALUES (?,?,?,?,?)",
    run.id, rec.name, now_iso(), rec.status, stored_text(rec.error or rec.reason))
end

function Store:event(run_id, stage, kind, message)
  q(self, "INSERT INTO events (run_id, stage, at, kind, message) VALUES (?,?,?,?,?)",
    run_id, stage, now_iso(), kind, stored_text(message))
end

-- ctx:checkpoint: set writes at once (and returns the value); get reads it back.
function Store:checkpoint(run_id, stage, key, value, set)
  if set then
    q(self, [[INSERT INTO checkpoints (run_id, stage, key, value) VALUES (?,?,?,?)
      ON CONFLICT(run_id, stage, key) DO UPDATE SET value = excluded.value]],
      run_id, stage, key, stored({ v = value }))
    return value
  end
  local rows = q(self, "SELECT value FROM checkpoints WHERE run_id = ? AND stage = ? AND key = ?", run_id, stage, key)
  return rows[1] and json.decode(rows[1].value).v
end

function Store:artifact(run, a)
  local expires = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + (a.retention_days or 30) * 86400)
  q(self, [[INSERT INTO artifacts (run_id, stage, name, path, sha256, size, created_at, expires_at)
    VALUES (?,?,?,?,?,?,?,?)]], run.id, a.stage, a.name, a.path, a.sha256, a.size, a.created_at, expires)
  a.expires_at = expires
end

function Store:cancel_requested(run_id)
  local rows = q(self, "SELECT cancel_requested FROM runs WHERE id = ?", run_id)
  return rows[1] and rows[1].cancel_requested
end

-- ---- reading, for runs/status/logs/resume/cancel ----

-- A run recorded as running whose host is gone (killed, power loss) is "interrupted".
local function effective_status(row)
  if row.status ~= "running" then return row.status end
  local started = row.pid and start_time_of(row.pid)
  if started and started == row.host_started then return "running" end
  return "interrupted"
end
Store.effective_status = effective_status

function Store:runs(limit)
  local rows = q(self, "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT ?", limit or 50)
  for _, r in ipairs(rows) do r.status = effective_status(r) end
  return rows
end

function Store:run(id)
  local rows = q(self, "SELECT * FROM runs WHERE id = ?", id)
  local r = rows[1]
  if not r then
    -- a unique prefix is enough, as with git
    rows = q(self, "SELECT * FROM runs WHERE id LIKE ? ORDER BY id LIMIT 2", id .. "%")
    if #rows == 1 then r = rows[1] end
  end
  if not r then return nil end
  r.recorded_status = r.status
  r.status = effective_status(r)
  r.vars = r.vars and json.decode(r.vars) or {}
  r.args = r.args and json.decode(r.args) or {}
  r.stages = q(self, "SELECT * FROM stages WHERE run_id = ? ORDER BY position", r.id)
  for _, s in ipairs(r.stages) do
    s.outputs = s.outputs and json.decode(s.outputs) or {}
    s.allowed_failure = s.allowed_failure == 1
  end
  r.artifacts = q(self, "SELECT * FROM artifacts WHERE run_id = ? ORDER BY id", r.id)
  return r
end

function Store:request_cancel(id)
  q(self, "UPDATE runs SET cancel_requested = ? WHERE id = ?", now_iso(), id)
end

-- Remove expired artifacts: the file first, then its row, so a crash in between leaves a row
-- without a file (pruned again next time), never a file nobody tracks.
function Store:prune(older_than_seconds)
  local cutoff = older_than_seconds and os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - older_than_seconds)
  local rows = cutoff
    and q(self, "SELECT * FROM artifacts WHERE created_at <= ? OR expires_at <= ?", cutoff, now_iso())
    or q(self, "SELECT * FROM artifacts WHERE expires_at <= ?", now_iso())
  local removed, bytes = 0, 0
  for _, a in ipairs(rows) do
    local ok, err, code = fs.remove(a.path)
    if ok or code == "ENOENT" then
      q(self, "DELETE FROM artifacts WHERE id = ?", a.id)
      removed, bytes = removed + 1, bytes + (a.size or 0)
    else
      error(("cannot remove artifact %s: %s"):format(a.path, err), 0)
    end
  end
  return removed, bytes
end

return Store
