-- Durable run state in SQLite (WAL) at DIR/state.db: runs, stages, events, checkpoints,
-- artifacts, concurrency locks. The engine writes every transition here before acting on it,
-- so `stagehost resume ID` after a kill -9 knows exactly what finished. WAL with
-- synchronous=NORMAL (asked for here; the binding's default is FULL): a committed transition
-- survives the host being killed, and the database stays whole after a power loss, which may
-- lose its last transitions. FULL would fsync every transition: a 50-stage run took 90 ms in
-- the engine instead of 35 ms on the development machine (bench/run.sh, pipeline). The directory is 0700 and the
-- database 0600: it holds logs and outputs.
local sqlite = require("stagehost.core.sqlite")
local json = require("stagehost.json")
local fs = require("stagehost.fs")
local log = require("stagehost.log")
local errors = require("stagehost.errors")
local process = require("stagehost.util.process")
local time = require("stagehost.util.time")
local task = require("stagehost.task")

-- What is stored in the clear has every secret masked, as what is printed does. A stage's
-- outputs that held a secret are also kept sealed (AES-256-GCM, see vault.lua), so a resumed
-- run gets the real value back while status, run.json and reports show ***.
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
  cancel_requested TEXT, attempt INTEGER, rerun_of TEXT, commit_sha TEXT, host_error TEXT
);
CREATE TABLE IF NOT EXISTS stages (
  run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL, position INTEGER,
  status TEXT NOT NULL, started_at TEXT, finished_at TEXT, duration REAL, attempts INTEGER,
  outputs TEXT, error TEXT, reason TEXT, allowed_failure INTEGER,
  sealed TEXT, reused_from TEXT, approved_by TEXT,
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
CREATE TABLE IF NOT EXISTS locks (
  grp TEXT PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT, pid INTEGER, host_started TEXT, acquired_at TEXT
);
CREATE TABLE IF NOT EXISTS procs (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, pgid INTEGER NOT NULL, started TEXT,
  host_pid INTEGER, host_started TEXT, PRIMARY KEY (run_id, pgid)
);
]]

-- Columns added since the first schema: an older state database gets them on open.
local ADDED_COLUMNS = {
  runs = { "attempt INTEGER", "rerun_of TEXT", "commit_sha TEXT", "host_error TEXT" },
  stages = { "sealed TEXT", "reused_from TEXT", "approved_by TEXT" },
  artifacts = { "file TEXT" },
}

local function fail(fmt, ...)
  errors.exit(2, fmt, ...)
end

-- The WAL is checkpointed as it passes 1000 pages (SQLite's default; a passive checkpoint that
-- never waits for readers) and cut back to 4 MiB after one: with checkpoints only at close,
-- 20,000 ctx:checkpoint calls grew it to 82 MB, and a small tmpfs filled up.
local WAL_BOUNDS = "PRAGMA wal_autocheckpoint=1000; PRAGMA journal_size_limit=4194304;"

local function damaged(path, why)
  fail("%s is damaged (%s); move it aside to start afresh, nothing was changed", path, why)
end

-- PRAGMA quick_check before anything is written: damage past the header (which opening alone
-- does not read) is one line and exit 2, not a traceback halfway through a write. Returns the
-- error and its code when the check could not run (a lock).
local function check_whole(db, path)
  local rows, err, code = db:query("PRAGMA quick_check")
  if not rows then
    if code == "SQLITE_CORRUPT" or code == "SQLITE_NOTADB" then
      damaged(path, (tostring(err):gsub("^db:query: ", ""):gsub(" %(SQL: .*%)$", "")))
    end
    return nil, err, code
  end
  local first = rows[1] and rows[1].quick_check
  if first ~= "ok" then damaged(path, ("quick_check: %s"):format(tostring(first):match("^[^\n]*"))) end
  return true
end

-- A read-only state directory has no room for the -shm file a WAL reader needs: a database that
-- was closed cleanly (no -wal left) is then read as immutable, which needs no file beside it.
local function open_immutable(path)
  local wal = io.open(path .. "-wal", "rb")
  local size = wal and wal:seek("end") or 0
  if wal then wal:close() end
  if size > 0 then return nil end
  local uri = "file:" .. path:gsub("[%%?#]", function(c) return ("%%%02X"):format(c:byte()) end) .. "?immutable=1"
  return (sqlite.open(uri, { readonly = true, busy_timeout = 0 }))
end

-- Store.open(dir) -> store. A corrupt or locked database is a clear error, never overwritten.
function Store.open(dir, opts)
  local ok, err = fs.mkdir(dir, { mode = 448 }) -- 0700
  if not ok then fail("cannot use state directory '%s': %s", dir, err) end
  local path = dir .. "/state.db"
  if not (opts and opts.readonly) and not fs.exists(path) then
    -- SQLite takes an empty file for a new database, and gives its WAL the file's mode
    local made, merr, code = fs.write(path, "", { mode = 384, exclusive = true }) -- 0600
    if not made and code ~= "EEXIST" then fail("cannot create state database %s: %s", path, merr) end
  end
  local wait = tonumber(os.getenv("STAGEHOST_STATE_TIMEOUT") or "") or 5000 -- ms to wait for a lock
  -- SQLite's own busy handler would sleep on the loop thread: the store waits instead (locked)
  -- opening (WAL set-up) and the schema may meet another process's lock too: waited for alike
  local deadline, delay = task.now() + wait / 1000, 0.005
  local db
  while true do
    local msg, code, xerr, xcode
    db, msg, code = sqlite.open(path, { readonly = opts and opts.readonly, busy_timeout = 0, synchronous = "normal" })
    if not db and opts and opts.readonly and (code == "SQLITE_READONLY" or code == "SQLITE_CANTOPEN") and fs.exists(path) then
      db = open_immutable(path)
    end
    if not db then
      if code == "SQLITE_NOTADB" or code == "SQLITE_CORRUPT" then
        fail("%s is not a usable state database (%s); move it aside to start afresh, nothing was changed", path, msg)
      end
      xerr, xcode = msg, code
    else
      local done
      done, xerr, xcode = check_whole(db, path)
      if done and opts and opts.readonly then break end
      if done then done, xerr, xcode = db:exec(WAL_BOUNDS .. SCHEMA) end
      if done then done, xerr, xcode = Store.migrate(db) end
      if done then break end
      db:close()
    end
    if xcode ~= "SQLITE_BUSY" then fail("state database %s: %s", path, xerr) end
    if task.now() >= deadline then
      fail("state database %s is locked by another process (waited STAGEHOST_STATE_TIMEOUT=%d ms): %s", path, wait, xerr)
    end
    task.sleep(delay)
    delay = math.min(delay * 2, 0.2)
  end
  return setmetatable({ db = db, dir = dir, path = path, readonly = opts and opts.readonly, wait_ms = wait }, Store)
end

function Store.migrate(db)
  for tbl, columns in pairs(ADDED_COLUMNS) do
    local have = {}
    local rows, err, code = db:query("PRAGMA table_info(" .. tbl .. ")")
    if not rows then return nil, err, code end
    for _, r in ipairs(rows) do have[r.name] = true end
    for _, col in ipairs(columns) do
      if not have[col:match("^%S+")] then
        local ok, aerr, acode = db:exec(("ALTER TABLE %s ADD COLUMN %s"):format(tbl, col))
        if not ok then return nil, aerr, acode end
      end
    end
  end
  return true
end

-- The key that seals secret outputs, opened on first use (a run with no secret needs none).
function Store:vault()
  if not self.vault_ then self.vault_ = require("stagehost.pipeline.vault").open(self.dir) end
  return self.vault_
end

function Store:close()
  if self.closed then return end
  self.closed = true
  -- TRUNCATE leaves an empty WAL; with no busy timeout it never waits on readers either
  if not self.readonly then self.db:query("PRAGMA wal_checkpoint(TRUNCATE)") end
  self.db:close()
end

local BUSY = {}

local function q(self, sql, ...)
  local rows, err, code = self.db:query(sql, ...)
  if code == "SQLITE_BUSY" then error(BUSY, 0) end
  if not rows then error(("state database %s: %s (%s)"):format(self.path, err, code), 2) end
  return rows
end

local function is_busy(e)
  return e == BUSY or (type(e) == "string" and e:find("(SQLITE_BUSY)", 1, true) ~= nil)
end

-- Run fn(self, ...) until no other process holds the database's lock, waiting with a timer
-- (5 ms doubling to 200 ms) rather than in SQLite's busy handler, which would sleep on the
-- loop thread; after STAGEHOST_STATE_TIMEOUT ms it is a clear error saying nothing was written.
local function locked(fn)
  return function(self, ...)
    local deadline, delay
    while true do
      local result = table.pack(pcall(fn, self, ...))
      if result[1] then return table.unpack(result, 2, result.n) end
      if not is_busy(result[2]) then error(result[2], 0) end
      deadline = deadline or task.now() + (self.wait_ms or 5000) / 1000
      if task.now() >= deadline then
        fail("state database %s is locked by another process (waited STAGEHOST_STATE_TIMEOUT=%d ms); this change was not written",
          self.path, self.wait_ms or 5000)
      end
      delay = math.min((delay or 0.0025) * 2, 0.2)
      task.sleep(delay)
    end
  end
end

local function now_iso() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

-- ---- the engine's interface ----

local function list_of(t)
  local out = json.array{}
  for i = 1, #(t or {}) do out[i] = t[i] end
  return out
end

-- A copy of a value with every string masked one by one: masking the JSON text instead would
-- miss a secret that JSON escapes (one holding '"' or '\').
local function masked_copy(v, seen)
  if type(v) == "string" then return log.masked(v) end
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = setmetatable({}, getmetatable(v))
  seen[v] = out
  for k, x in pairs(v) do out[masked_copy(k, seen)] = masked_copy(x, seen) end
  return out
end
local function stored_value(v) return json.encode(masked_copy(v)) end

-- The registered secrets that occur anywhere in a value's strings.
local function secrets_of(v, found, seen)
  found, seen = found or {}, seen or {}
  if type(v) == "string" then
    for _, s in ipairs(log.secrets_in(v)) do found[s] = true end
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do
      secrets_of(k, found, seen)
      secrets_of(x, found, seen)
    end
  end
  return found
end

-- Outputs with a secret in them, sealed with the state key; nil when there is none.
function Store:seal_outputs(run_id, rec)
  local found = secrets_of(rec.outputs or {})
  if next(found) == nil then return nil end
  local list = {}
  for secret in pairs(found) do list[#list + 1] = secret end
  table.sort(list)
  return self:vault():seal({ outputs = rec.outputs, secrets = list }, run_id .. "/" .. rec.name)
end

-- The sealed outputs back, their secrets masked again from now on.
function Store:unseal_outputs(run_id, name, text)
  local value, err = self:vault():unseal(text, run_id .. "/" .. name)
  if not value then fail("the outputs of stage '%s' of run %s cannot be read: %s", name, run_id, err) end
  for _, secret in ipairs(value.secrets or {}) do log.mask(secret) end
  return value.outputs
end

-- This host's pid and start time on the store, once: what the rows it writes or claims carry.
local function note_host(self)
  if not self.host_pid then
    self.host_pid = process.self()
    self.host_started = process.start_time(self.host_pid)
  end
end

function Store:save_run(run)
  note_host(self)
  q(self, [[INSERT INTO runs (id, pipeline, file, cwd, args, tag, env, actor, vars, status, started_at,
      finished_at, pid, host_started, attempt, rerun_of, commit_sha, host_error)
      VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT(id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at,
      pid = excluded.pid, host_started = excluded.host_started, host_error = excluded.host_error]],
    run.id, run.pipeline, run.file, run.cwd, stored_value(list_of(run.args)), stored_text(run.tag),
    stored_text(run.env), stored_text(run.actor), stored_value(run.vars or {}), run.status, run.started_at,
    run.finished_at, self.host_pid, self.host_started, run.attempt or 1, run.rerun_of, run.commit,
    stored_text(run.host_error))
end

function Store:save_stage(run, rec)
  -- sealing may need the key file: done before the transaction, which cannot wait
  local sealed = self:seal_outputs(run.id, rec)
  self.db:transaction(self.save_stage_now, self, run, rec, sealed) -- the row and its event together
end

function Store.save_stage_now(self, run, rec, sealed)
  local position = 0
  for i, name in ipairs(run.order or {}) do if name == rec.name then position = i end end
  q(self, [[INSERT INTO stages (run_id, name, position, status, started_at, finished_at, duration,
      attempts, outputs, error, reason, allowed_failure, sealed, reused_from, approved_by)
      VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT(run_id, name) DO UPDATE SET status = excluded.status, started_at = excluded.started_at,
      finished_at = excluded.finished_at, duration = excluded.duration, attempts = excluded.attempts,
      outputs = excluded.outputs, error = excluded.error, reason = excluded.reason,
      allowed_failure = excluded.allowed_failure, sealed = excluded.sealed,
      reused_from = excluded.reused_from, approved_by = excluded.approved_by]],
    run.id, rec.name, position, rec.status, rec.started_at, rec.finished_at, rec.duration, rec.attempts,
    stored_value(rec.outputs or {}), stored_text(rec.error), stored_text(rec.reason), rec.allowed_failure and 1 or 0,
    sealed, rec.reused_from, stored_text(rec.approved_by))
  q(self, "INSERT INTO events (run_id, stage, at, kind, message) VALUES (?,?,?,?,?)",
    run.id, rec.name, time.now_iso(), rec.status, stored_text(rec.error or rec.reason))
end

function Store:event(run_id, stage, kind, message)
  q(self, "INSERT INTO events (run_id, stage, at, kind, message) VALUES (?,?,?,?,?)",
    run_id, stage, time.now_iso(), kind, stored_text(message))
end

-- ctx:checkpoint: set writes at once (and returns the value); get reads it back.
function Store:checkpoint(run_id, stage, key, value, set)
  if set then
    q(self, [[INSERT INTO checkpoints (run_id, stage, key, value) VALUES (?,?,?,?)
      ON CONFLICT(run_id, stage, key) DO UPDATE SET value = excluded.value]],
      run_id, stage, key, stored_value({ v = value }))
    return value
  end
  local rows = q(self, "SELECT value FROM checkpoints WHERE run_id = ? AND stage = ? AND key = ?", run_id, stage, key)
  return rows[1] and assert(json.decode(rows[1].value)).v
end

-- An artifact's row; its file is named relative to the state directory, so the database can
-- be used (pruned) from any working directory.
function Store:artifact(run, a)
  local expires = time.iso8601(os.time() + (a.retention_days or 30) * 86400)
  local file = "runs/" .. run.id .. "/" .. a.file
  self.db:transaction(function() -- made again (a retry, a resume): the newer one replaces it
    q(self, "DELETE FROM artifacts WHERE run_id = ? AND stage = ? AND name = ?", run.id, a.stage, a.name)
    q(self, [[INSERT INTO artifacts (run_id, stage, name, path, file, sha256, size, created_at, expires_at)
      VALUES (?,?,?,?,?,?,?,?,?)]], run.id, a.stage, a.name, file, a.file, a.sha256, a.size, a.created_at, expires)
  end)
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
  if process.alive(row.pid, row.host_started) then return "running" end
  return "interrupted"
end
Store.effective_status = effective_status

function Store:runs(limit)
  local rows = q(self, "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT ?", limit or 50)
  for _, r in ipairs(rows) do r.status = effective_status(r) end
  return rows
end

-- The artifacts of a run, each with its file relative to the run's directory.
local function artifacts_of(self, run_id)
  local rows = q(self, "SELECT * FROM artifacts WHERE run_id = ? ORDER BY id", run_id)
  for _, a in ipairs(rows) do
    a.file = a.file or ("artifacts/" .. tostring(a.path):match("([^/]*)$"))
  end
  return rows
end

-- store:run(id [, {unseal = true}]) -> the run's row with stages and artifacts, or nil.
-- unseal: stages get their real outputs back (for resume and rerun); otherwise masked ones.
function Store:run(id, opts)
  local rows = q(self, "SELECT * FROM runs WHERE id = ?", id)
  local r = rows[1]
  if not r then
    -- a unique prefix is enough, as with git
    rows = q(self, "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 2",
      id:gsub("[\\%%_]", "\\%0") .. "%")
    if #rows == 1 then r = rows[1] end
  end
  if not r then return nil end
  r.recorded_status = r.status
  r.status = effective_status(r)
  r.vars = r.vars and assert(json.decode(r.vars)) or {}
  r.args = r.args and assert(json.decode(r.args)) or {}
  r.attempt = r.attempt or 1
  r.commit = r.commit_sha
  r.stages = q(self, "SELECT * FROM stages WHERE run_id = ? ORDER BY position", r.id)
  r.artifacts = artifacts_of(self, r.id)
  for _, s in ipairs(r.stages) do
    s.outputs = s.outputs and assert(json.decode(s.outputs)) or {}
    if opts and opts.unseal and s.sealed then s.outputs = self:unseal_outputs(r.id, s.name, s.sealed) end
    s.has_secrets = s.sealed ~= nil
    s.sealed = nil
    s.allowed_failure = s.allowed_failure == 1
    s.artifacts = {}
    for _, a in ipairs(r.artifacts) do
      if a.stage == s.name then s.artifacts[#s.artifacts + 1] = a end
    end
  end
  return r
end

-- The newest run of a pipeline that ended in success, optionally with the same tag (and
-- commit); for --from/--only, which take the outputs of the stages they skip from it.
-- need (optional): a set of stage names that must have succeeded in that run; a successful run
-- made with --only or --from has stages it did not run, and those cannot stand in for anything.
function Store:latest_success(pipeline, tag, commit, need)
  local rows = q(self, [[SELECT id FROM runs WHERE pipeline = ? AND status = 'success'
      AND (tag IS ? OR ? IS NULL) AND (commit_sha IS ? OR ? IS NULL)
    ORDER BY finished_at DESC, id DESC LIMIT 100]], pipeline, tag, tag, commit, commit)
  for _, row in ipairs(rows) do
    local ok = true
    if need then
      local done = {}
      for _, st in ipairs(q(self, "SELECT name FROM stages WHERE run_id = ? AND status = 'success'", row.id)) do
        done[st.name] = true
      end
      for name in pairs(need) do ok = ok and done[name] == true end
    end
    if ok then return self:run(row.id, { unseal = true }) end
  end
  return nil
end

-- The newest run of the pipeline, tag and commit in which the stage succeeded: the only runs
-- whose approval gate may stand for a gate a run skips.
function Store:latest_stage_success(pipeline, tag, commit, stage)
  local rows = q(self, [[SELECT r.id FROM runs r JOIN stages s ON s.run_id = r.id
      WHERE r.pipeline = ? AND r.tag IS ? AND r.commit_sha IS ? AND s.name = ? AND s.status = 'success'
        AND s.reused_from IS NULL
      ORDER BY s.finished_at DESC, r.id DESC LIMIT 1]], pipeline, tag, commit, stage)
  return rows[1] and self:run(rows[1].id, { unseal = true })
end

function Store:next_attempt(run)
  local root = run.rerun_of or run.id
  local rows = q(self, "SELECT MAX(attempt) AS n FROM runs WHERE id = ? OR rerun_of = ?", root, root)
  return (rows[1] and rows[1].n or 1) + 1, root
end

-- Take over an interrupted or waiting (detached) run for this host, in one transaction: of two
-- hosts resuming the same run at once, one wins and the other sees it alive. -> true, or false and the holder's row.
function Store:claim(id)
  note_host(self)
  return self.db:transaction(function()
    local row = q(self, "SELECT pid, host_started, status FROM runs WHERE id = ?", id)[1]
    if not row then return false, {} end
    if row.status == "waiting" then -- suspended by run --detach: nobody holds it
      q(self, "UPDATE runs SET status = 'running', pid = ?, host_started = ? WHERE id = ?", self.host_pid, self.host_started, id)
      return true
    end
    if row.status ~= "running" or (process.alive(row.pid, row.host_started)
        and not (row.pid == self.host_pid and row.host_started == self.host_started)) then
      return false, row
    end
    q(self, "UPDATE runs SET pid = ?, host_started = ? WHERE id = ?", self.host_pid, self.host_started, id)
    return true
  end)
end

function Store:request_cancel(id)
  q(self, "UPDATE runs SET cancel_requested = ? WHERE id = ?", time.now_iso(), id)
end

-- ---- concurrency groups ----

-- Take the group's lock for a run (one transaction: two hosts cannot both win). A lock whose
-- host is gone is taken over. -> true, or false and the holder's row.
function Store:lock(group, run_id, stage)
  note_host(self)
  return self.db:transaction(function()
    local rows = q(self, "SELECT * FROM locks WHERE grp = ?", group)
    local held = rows[1]
    if held and held.run_id ~= run_id and process.alive(held.pid, held.host_started) then return false, held end
    q(self, [[INSERT INTO locks (grp, run_id, stage, pid, host_started, acquired_at) VALUES (?,?,?,?,?,?)
      ON CONFLICT(grp) DO UPDATE SET run_id = excluded.run_id, stage = excluded.stage, pid = excluded.pid,
        host_started = excluded.host_started, acquired_at = excluded.acquired_at]],
      group, run_id, stage, self.host_pid, self.host_started, time.now_iso())
    return true
  end)
end

function Store:unlock(group, run_id)
  q(self, "DELETE FROM locks WHERE grp = ? AND run_id = ?", group, run_id)
end

-- ---- pruning ----

-- Remove runs that ended more than `older_than` seconds ago (default: 30 days) whole: their
-- directory (logs, artifacts, run.json, report) and every row. Files go first, rows last, so a
-- crash in between leaves rows to prune again, never files nobody tracks. Artifacts whose own
-- retention ran out in a run that is kept are removed too, and that run's record and report
-- are written again without them: a report never links to a deleted file.
function Store:prune(older_than)
  local cutoff = time.iso8601(os.time() - (older_than or 30 * 86400))
  local runs = q(self, [[SELECT id FROM runs WHERE status <> 'running' AND finished_at IS NOT NULL
    AND finished_at <= ?]], cutoff)
  local removed_runs, removed_files, bytes = 0, 0, 0
  for _, r in ipairs(runs) do
    for _, a in ipairs(q(self, "SELECT size FROM artifacts WHERE run_id = ?", r.id)) do
      removed_files, bytes = removed_files + 1, bytes + (a.size or 0)
    end
    local dir = self.dir .. "/runs/" .. r.id
    local ok, err, code = fs.remove(dir, { recursive = true })
    if not ok and code ~= "ENOENT" then error(("cannot remove %s: %s"):format(dir, err), 0) end
    self.db:transaction(function()
      for _, tbl in ipairs{ "artifacts", "checkpoints", "events", "stages", "locks", "procs" } do
        q(self, ("DELETE FROM %s WHERE run_id = ?"):format(tbl), r.id)
      end
      q(self, "DELETE FROM runs WHERE id = ?", r.id)
    end)
    removed_runs = removed_runs + 1
  end
  local expired = q(self, "SELECT * FROM artifacts WHERE expires_at <= ?", time.now_iso())
  local touched = {}
  for _, a in ipairs(expired) do
    local path = self.dir .. "/" .. (a.file and ("runs/" .. a.run_id .. "/" .. a.file) or a.path)
    local ok, err, code = fs.remove(path)
    if not ok and code ~= "ENOENT" then error(("cannot remove artifact %s: %s"):format(path, err), 0) end
    q(self, "DELETE FROM artifacts WHERE id = ?", a.id)
    removed_files, bytes = removed_files + 1, bytes + (a.size or 0)
    touched[a.run_id] = true
  end
  return { runs = removed_runs, artifacts = removed_files, bytes = bytes, rewrite = touched }
end

-- ---- a stage's process groups, for a resume after kill -9 ----

-- A stage started a child, which leads its own group: recorded with its start time and this
-- host, so that a resume after this host died can stop the group before the stage runs again.
function Store:add_proc(run_id, stage, pgid)
  note_host(self)
  q(self, [[INSERT OR REPLACE INTO procs (run_id, stage, pgid, started, host_pid, host_started)
      VALUES (?, ?, ?, ?, ?, ?)]], run_id, stage, pgid, process.start_time(pgid), self.host_pid, self.host_started)
end

-- The group ended (pgid), or every group of the stage did (pgid nil).
function Store:remove_procs(run_id, stage, pgid)
  if pgid then q(self, "DELETE FROM procs WHERE run_id = ? AND pgid = ?", run_id, pgid)
  else q(self, "DELETE FROM procs WHERE run_id = ? AND stage = ?", run_id, stage) end
end

-- The groups of the run recorded by hosts that are gone (not this one, not a live one).
function Store:left_procs(run_id)
  note_host(self)
  local out = {}
  for _, r in ipairs(q(self, "SELECT * FROM procs WHERE run_id = ? ORDER BY pgid", run_id)) do
    local mine = r.host_pid == self.host_pid and r.host_started == self.host_started
    if not mine and not process.alive(r.host_pid, r.host_started) then out[#out + 1] = r end
  end
  return out
end

-- For modules that keep their own tables in the state database (approval gates): a query, and
-- a transaction (fn(store) cannot wait inside it), both waiting out another process's lock.
function Store:query(sql, ...)
  return q(self, sql, ...)
end

function Store:transaction(fn, ...)
  return self.db:transaction(fn, self, ...)
end

-- Their schema, applied once per store: CREATE ... IF NOT EXISTS statements.
function Store:ensure(name, schema)
  self.ensured = self.ensured or {}
  if self.ensured[name] then return end
  local ok, err, code = self.db:exec(schema)
  if not ok then
    if code == "SQLITE_BUSY" then error(BUSY, 0) end
    error(("state database %s: %s (%s)"):format(self.path, err, code), 0)
  end
  self.ensured[name] = true
end

-- Every method that reads or writes the database waits out another process's lock.
for _, name in ipairs{ "save_run", "save_stage", "event", "checkpoint", "artifact", "cancel_requested",
  "runs", "run", "latest_success", "latest_stage_success", "next_attempt", "claim", "request_cancel", "lock", "unlock",
  "query", "transaction", "ensure", "add_proc", "remove_procs", "left_procs",
  "prune" } do
  Store[name] = locked(Store[name])
end

return Store
