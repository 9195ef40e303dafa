local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc") -- here, not in a test: its first load starts lasting handles
local fs = require("stagehost.fs")
local sqlite = require("stagehost.core.sqlite")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

-- A database path in /tmp, removed with its -wal, -shm and -journal files when the returned
-- guard goes out of scope:  local path, _ <close> = tmpdb()
local function remove_db(path)
  for _, suffix in ipairs { "", "-wal", "-shm", "-journal" } do os.remove(path .. suffix) end
end
local function tmpdb()
  local path = os.tmpname()
  return path, setmetatable({}, { __close = function() remove_db(path) end })
end

local function open(path, opts)
  local db, err, code = sqlite.open(path, opts)
  if not db then error(("open %s: %s (%s)"):format(path, tostring(err), tostring(code)), 2) end
  return db
end

-- query that must succeed
local function q(db, sql, ...)
  local rows, err, code = db:query(sql, ...)
  if not rows then error(("%s (%s)"):format(tostring(err), tostring(code)), 2) end
  return rows, err, code
end

local function count(db, sql, ...) return q(db, "SELECT count(*) AS n FROM " .. sql, ...)[1].n end

local function ids(db, sql)
  local out = {}
  for _, r in ipairs(q(db, sql)) do out[#out + 1] = r.id end
  return table.concat(out, ",")
end

-- ---- values ----

T.test("round trip: integers, floats, text, blobs, booleans, NULL", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  T.eq(db:exec [[
    CREATE TABLE v (id INTEGER PRIMARY KEY, x);  -- x has no affinity: values keep their type
    CREATE TABLE typed (i INTEGER, r REAL, t TEXT, b BLOB);
  ]], true)
  local all = {}
  for b = 0, 255 do all[#all + 1] = string.char(b) end
  all = table.concat(all)
  local values = {
    { math.maxinteger, "integer" }, { math.mininteger, "integer" }, { 0, "integer" }, { -1, "integer" },
    { 1 << 53 | 1, "integer" }, -- not exact as a double: must not pass through one
    { 0.5, "real" }, { -1.5e308, "real" }, { 4.9e-324, "real" }, { 2.0, "real" }, { -0.0, "real" },
    { math.huge, "real" }, { -math.huge, "real" }, { 1 / 3, "real" },
    { "", "text" }, { "plain", "text" }, { "h\u{e9}llo \u{2713} \u{1F680}", "text" },
    { ("long "):rep(100000), "text" },
    { "a\0b", "blob" }, { "\0", "blob" }, { "\xff\xfe", "blob" }, { "caf\xe9", "blob" },
    { "\xed\xa0\x80", "blob" },  -- an encoded surrogate is not UTF-8
    { "\xc0\xaf", "blob" },      -- nor is an overlong form
    { all, "blob" }, { all:rep(4096), "blob" }, -- 1 MiB
  }
  for i, v in ipairs(values) do
    local rows, changes, rowid = q(db, "INSERT INTO v (id, x) VALUES (?, ?)", i, v[1])
    T.eq(#rows, 0, "an INSERT returns no rows")
    T.eq(changes, 1, "changes")
    T.eq(rowid, i, "last_insert_rowid")
  end
  for i, v in ipairs(values) do
    local row = q(db, "SELECT x, typeof(x) AS type FROM v WHERE id = ?", i)[1]
    local what = ("value #%d (%s)"):format(i, v[2])
    T.eq(row.type, v[2], what .. ": stored type")
    T.eq(row.x, v[1], what)
    T.eq(math.type(row.x), math.type(v[1]), what .. ": Lua number type")
    if v[1] == 0 and math.type(v[1]) == "float" then T.eq(1 / row.x, 1 / v[1], "sign of zero") end
  end
  -- a blob parameter finds the blob it stored; text finds text
  local index = {}
  for i, v in ipairs(values) do index[v[1]] = index[v[1]] or i end
  T.eq(q(db, "SELECT id FROM v WHERE x = ?", "a\0b")[1].id, index["a\0b"])
  T.eq(q(db, "SELECT id FROM v WHERE x = ?", "plain")[1].id, index["plain"])
  T.eq(q(db, "SELECT id FROM v WHERE x = ?", "caf\xe9")[1].id, index["caf\xe9"])

  -- booleans are 0/1; nil is NULL, and a NULL column is absent from the row
  q(db, "INSERT INTO v (id, x) VALUES (?, ?), (?, ?), (?, ?)", 100, true, 101, false, 102, nil)
  T.eq(ids(db, "SELECT id FROM v WHERE x IS NULL"), "102")
  local rows = q(db, "SELECT id, x FROM v WHERE id >= 100 ORDER BY id")
  T.eq(rows[1].x, 1); T.eq(math.type(rows[1].x), "integer")
  T.eq(rows[2].x, 0)
  T.eq(rows[3].x, nil); T.eq(rows[3].id, 102)
  local n = 0
  for _ in pairs(rows[3]) do n = n + 1 end
  T.eq(n, 1, "only the non-NULL column is a key")

  -- column affinity still applies: an integral float into INTEGER becomes an integer
  q(db, "INSERT INTO typed VALUES (?, ?, ?, ?)", 7.0, 3, 42, "bytes\0")
  local r = q(db, "SELECT i, r, t, b, typeof(t) AS tt FROM typed")[1]
  T.eq(math.type(r.i), "integer"); T.eq(r.i, 7)
  T.eq(math.type(r.r), "float"); T.eq(r.r, 3.0)
  T.eq(r.t, "42"); T.eq(r.tt, "text")
  T.eq(r.b, "bytes\0")

  -- expressions, aliases, duplicate names (the last wins), an empty result
  r = q(db, "SELECT 1 + 1 AS two, 'x' || 'y' AS xy, 10 / 4 AS q, 10 / 4.0 AS f")[1]
  T.eq(r.two, 2); T.eq(r.xy, "xy"); T.eq(r.q, 2); T.eq(r.f, 2.5)
  T.eq(q(db, "SELECT 1 AS a, 2 AS a")[1].a, 2)
  T.eq(#q(db, "SELECT * FROM v WHERE id < 0"), 0)
end)

T.test("changes and last_insert_rowid", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE t (id INTEGER PRIMARY KEY, v)"
  local _, changes, rowid = q(db, "INSERT INTO t (v) VALUES (1), (2), (3)")
  T.eq(changes, 3); T.eq(rowid, 3)
  _, changes = q(db, "UPDATE t SET v = v + 1 WHERE v >= 2")
  T.eq(changes, 2)
  T.eq(db:changes(), 2)
  -- a statement that changes nothing reports 0, not the last UPDATE's count
  _, changes = q(db, "SELECT * FROM t")
  T.eq(changes, 0, "SELECT")
  T.eq(db:changes(), 2, "db:changes() is SQLite's, unchanged by a SELECT")
  _, changes = q(db, "UPDATE t SET v = 0 WHERE id > 100")
  T.eq(changes, 0, "UPDATE matching nothing")
  _, changes = q(db, "DELETE FROM t")
  T.eq(changes, 3)
  -- RETURNING gives rows and changes
  local rows
  rows, changes, rowid = q(db, "INSERT INTO t (v) VALUES (?) RETURNING id, v", "r")
  T.eq(#rows, 1); T.eq(rows[1].v, "r"); T.eq(changes, 1); T.eq(rowid, rows[1].id)
end)

-- ---- errors from SQLite ----

T.test("a syntax error returns nil, a message naming the SQL, and the code", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  local rows, err, code = db:query("SELEC * FROM runs WHERE id = ?", 1)
  T.eq(rows, nil)
  T.has(err, 'db:query: near "SELEC": syntax error')
  T.has(err, '"SELEC * FROM runs WHERE id = ?"', "the SQL is quoted")
  T.eq(code, "SQLITE_ERROR")
  -- long SQL is cut to its first 60 characters, whitespace runs collapsed
  local long = "SELECT\n    id,\n    name\n  FROM no_such_table WHERE " .. ("id = 1 AND "):rep(10) .. "1"
  rows, err, code = db:query(long)
  T.eq(rows, nil)
  T.has(err, "no such table: no_such_table")
  T.has(err, '"SELECT id, name FROM no_such_table WHERE id = 1 AND id = 1 A..."')
  T.eq(code, "SQLITE_ERROR")
  -- exec names the statement that failed; the ones before it are done, the ones after not
  local ok
  ok, err, code = db:exec "CREATE TABLE a (x); CREATE TABLE a (y); CREATE TABLE b (z)"
  T.eq(ok, nil)
  T.has(err, "db:exec: table a already exists")
  T.has(err, '"CREATE TABLE a (y);')
  T.eq(code, "SQLITE_ERROR")
  T.eq(count(db, "sqlite_master WHERE name = 'a'"), 1)
  T.eq(count(db, "sqlite_master WHERE name = 'b'"), 0)
  -- the connection is fine afterwards, and the failed statement can be fixed and rerun
  T.eq(db:exec "CREATE TABLE b (z)", true)
  T.eq(#q(db, "SELECT * FROM b"), 0)
end)

T.test("constraints, foreign keys enforced: nil, message, SQLITE_CONSTRAINT", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  T.eq(db:exec [[
    CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE stages (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT);
  ]], true)
  q(db, "INSERT INTO runs (id, name) VALUES (1, 'deploy')")
  local rows, err, code = db:query("INSERT INTO runs (name) VALUES (?)", "deploy")
  T.eq(rows, nil); T.has(err, "UNIQUE constraint failed: runs.name"); T.eq(code, "SQLITE_CONSTRAINT")
  rows, err, code = db:query("INSERT INTO runs (name) VALUES (?)", nil)
  T.eq(rows, nil); T.has(err, "NOT NULL constraint failed"); T.eq(code, "SQLITE_CONSTRAINT")
  rows, err, code = db:query("INSERT INTO stages (run_id, name) VALUES (?, ?)", 99, "build")
  T.eq(rows, nil); T.has(err, "FOREIGN KEY constraint failed"); T.eq(code, "SQLITE_CONSTRAINT")
  T.eq(q(db, "PRAGMA foreign_keys")[1].foreign_keys, 1)
  q(db, "INSERT INTO stages (run_id, name) VALUES (?, ?)", 1, "build")
  T.eq(count(db, "stages"), 1)
end)

-- ---- misuse raises ----

T.test("a parameter count that does not match the SQL raises", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE t (a, b)"
  T.raises(function() db:query("INSERT INTO t VALUES (?, ?)", 1) end,
    "bad argument #3 to 'query' (the SQL takes 2 parameters, 1 given")
  T.raises(function() db:query("INSERT INTO t VALUES (?, ?)", 1, 2, 3) end,
    "bad argument #4 to 'query' (the SQL takes 2 parameters, 3 given")
  T.raises(function() db:query("SELECT * FROM t", 1) end, "the SQL takes 0 parameters, 1 given")
  T.raises(function() db:query("SELECT ?") end, "the SQL takes 1 parameter, 0 given")
  -- an explicit trailing nil counts (it binds NULL)
  T.eq(q(db, "SELECT ? AS a, ? AS b", 1, nil)[1].a, 1)
  T.eq(count(db, "t"), 0, "nothing was inserted by the calls that raised")
  -- the same statement works after a mismatch (nothing stays bound)
  q(db, "INSERT INTO t VALUES (?, ?)", 1, 2)
  T.eq(count(db, "t WHERE a = 1 AND b = 2"), 1)
end)

T.test("wrong argument types raise naming the function", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  local calls = {
    { "bad argument #1 to 'open'", function() sqlite.open() end },
    { "bad argument #1 to 'open'", function() sqlite.open({}) end },
    { "bad argument #1 to 'open'", function() sqlite.open("a\0b") end },
    { "bad argument #2 to 'open'", function() sqlite.open(path, "readonly") end },
    { "unknown option 'readnly'", function() sqlite.open(path, { readnly = true }) end },
    { "option 'readonly' must be a boolean", function() sqlite.open(path, { readonly = 1 }) end },
    { "option 'create' must be a boolean", function() sqlite.open(path, { create = "no" }) end },
    { "option 'busy_timeout'", function() sqlite.open(path, { busy_timeout = "5s" }) end },
    { "option 'busy_timeout'", function() sqlite.open(path, { busy_timeout = -1 }) end },
    { "option 'busy_timeout'", function() sqlite.open(path, { busy_timeout = 0.5 }) end },
    { "bad argument #1 to 'query'", function() db:query() end },
    { "bad argument #1 to 'query'", function() db:query(42 == 42) end },
    { "bad argument #1 to 'query'", function() db:query("SELECT 1; SELECT 2") end },
    { "bad argument #1 to 'query'", function() db:query("  -- nothing") end },
    { "bad argument #2 to 'query' (SQL parameter 1 is a table", function() db:query("SELECT ?", {}) end },
    { "bad argument #3 to 'query' (SQL parameter 2 is a function", function() db:query("SELECT ?, ?", 1, print) end },
    { "SQL parameter 1 is a userdata", function() db:query("SELECT ?", io.stdout) end },
    { "bad argument #1 to 'exec'", function() db:exec() end },
    { "bad argument #1 to 'exec'", function() db:exec("SELECT ?") end },
    { "bad argument #2 to 'exec'", function() db:exec("SELECT 1", 1) end },
    { "bad argument #1 to 'transaction'", function() db:transaction() end },
    { "bad argument #1 to 'transaction'", function() db:transaction("BEGIN") end },
    { "bad argument #1 to 'query' (stagehost.sqlite.db expected, got string)", function() db.query("SELECT 1") end },
    { "bad argument #1 to 'close' (stagehost.sqlite.db expected, got table)", function() db.close({}) end },
  }
  local failures = {}
  for i, c in ipairs(calls) do
    local ok, err = pcall(T.raises, c[2], c[1])
    if not ok then failures[#failures + 1] = ("#%d: %s"):format(i, err) end
  end
  if #failures > 0 then error(table.concat(failures, "\n")) end
  -- the connection is untouched by all that
  T.eq(q(db, "SELECT 1 AS one")[1].one, 1)
end)

T.test("a closed database raises on use; close is idempotent; path stays", function()
  local path, _ <close> = tmpdb()
  local db = open(path)
  q(db, "CREATE TABLE t (x)")
  T.eq(db:close(), true)
  T.eq(db:close(), true, "twice")
  for _, call in ipairs {
    function() db:query("SELECT 1") end,
    function() db:exec("SELECT 1") end,
    function() db:transaction(function() end) end,
    function() db:changes() end,
  } do
    T.raises(call, "sqlite: the database is closed")
  end
  T.eq(db:path(), path)
  T.has(tostring(db), "closed")
  -- closing inside a transaction: rolled back, and transaction raises
  local db2 = open(path)
  T.raises(function()
    db2:transaction(function()
      q(db2, "INSERT INTO t VALUES (1)")
      db2:close()
    end)
  end, "closed inside the transaction")
  local db3 <close> = open(path)
  T.eq(count(db3, "t"), 0)
end)

T.test("to-be-closed and garbage-collected databases release their files", function()
  local path, _ <close> = tmpdb()
  local function nfds() return #assert(fs.list("/proc/self/fd")) end
  do local db <close> = open(path); q(db, "CREATE TABLE t (x)") end
  collectgarbage(); collectgarbage()
  local base = nfds()
  do
    local db <close> = open(path)
    q(db, "SELECT * FROM t")
    T.ok(nfds() > base, "an open database holds descriptors")
  end
  T.eq(nfds(), base, "closed by <close>")
  for _ = 1, 20 do
    local db = open(path)
    q(db, "INSERT INTO t VALUES (?)", 1)
  end
  collectgarbage(); collectgarbage()
  T.eq(nfds(), base, "closed by __gc")
  local db <close> = open(path)
  T.eq(count(db, "t"), 20)
end)

-- ---- open ----

T.test("WAL mode, synchronous=FULL, foreign keys; version and path", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  T.eq(q(db, "PRAGMA journal_mode")[1].journal_mode, "wal")
  T.eq(q(db, "PRAGMA synchronous")[1].synchronous, 2, "FULL")
  T.eq(q(db, "PRAGMA foreign_keys")[1].foreign_keys, 1)
  T.eq(q(db, "PRAGMA busy_timeout")[1].timeout, 5000)
  T.eq(db:path(), path)
  T.match(sqlite.version, "^3%.%d+%.%d+")
  T.eq(sqlite.version, q(db, "SELECT sqlite_version() AS v")[1].v)
  local other <close> = open(path, { busy_timeout = 250 })
  T.eq(q(other, "PRAGMA busy_timeout")[1].timeout, 250)
  -- WAL is a property of the file: a read-only connection sees it too
  local ro <close> = open(path, { readonly = true })
  T.eq(q(ro, "PRAGMA journal_mode")[1].journal_mode, "wal")
  T.match(tostring(db), "^stagehost%.sqlite%.db %(")
  -- in-memory databases work (without WAL, which they cannot have)
  local mem <close> = open(":memory:")
  T.eq(q(mem, "SELECT 40 + 2 AS n")[1].n, 42)
end)

T.test("open failures: nil, message naming the path, code", function()
  local garbage, _ <close> = tmpdb()
  local f = assert(io.open(garbage, "wb"))
  local noise = {}
  for i = 1, 4096 do noise[i] = string.char((i * 7919 + 13) % 251) end
  f:write(table.concat(noise)); f:close()
  local db, err, code = sqlite.open(garbage)
  T.eq(db, nil); T.eq(code, "SQLITE_NOTADB")
  T.has(err, garbage); T.has(err, "file is not a database")
  -- read-only too, and the garbage is left as it was
  db, err, code = sqlite.open(garbage, { readonly = true })
  T.eq(db, nil); T.eq(code, "SQLITE_NOTADB")
  T.eq(#assert(fs.read(garbage)), 4096)
  T.eq(fs.exists(garbage .. "-wal"), false, "no WAL created beside a non-database")

  local missing_dir = "/nonexistent-stagehost-dir/state.db"
  db, err, code = sqlite.open(missing_dir)
  T.eq(db, nil); T.eq(code, "SQLITE_CANTOPEN")
  T.has(err, "sqlite.open: cannot open '" .. missing_dir .. "'")
  T.has(err, "No such file or directory")

  local missing, _g <close> = tmpdb()
  os.remove(missing)
  db, err, code = sqlite.open(missing, { readonly = true })
  T.eq(db, nil); T.eq(code, "SQLITE_CANTOPEN"); T.has(err, missing)
  db, err, code = sqlite.open(missing, { create = false })
  T.eq(db, nil); T.eq(code, "SQLITE_CANTOPEN")
  T.eq(fs.exists(missing), false, "neither created the file")

  -- a directory is not a database file
  db, err, code = sqlite.open("/tmp")
  T.eq(db, nil); T.eq(code, "SQLITE_CANTOPEN")
end)

T.test("read-only connections read but cannot write", function()
  local path, _ <close> = tmpdb()
  local rw <close> = open(path)
  q(rw, "CREATE TABLE t (x)")
  q(rw, "INSERT INTO t VALUES (1)")
  local ro <close> = open(path, { readonly = true })
  T.eq(count(ro, "t"), 1)
  local rows, err, code = ro:query("INSERT INTO t VALUES (2)")
  T.eq(rows, nil); T.eq(code, "SQLITE_READONLY"); T.has(err, "readonly")
  q(rw, "INSERT INTO t VALUES (3)")
  T.eq(count(ro, "t"), 2, "sees the other connection's commit")
end)

-- ---- transactions ----

T.test("transaction: commit, results and arguments; rollback on error, error unchanged", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"
  local a, b, c, n = db:transaction(function(x, y)
    q(db, "INSERT INTO t VALUES (1, ?)", x)
    q(db, "INSERT INTO t VALUES (2, ?)", y)
    return "done", nil, 3
  end, "one", "two")
  T.eq(a, "done"); T.eq(b, nil); T.eq(c, 3); T.eq(n, nil)
  T.eq(select("#", db:transaction(function() return 1, nil, nil end)), 3, "trailing nils kept")
  T.eq(select("#", db:transaction(function() end)), 0)
  T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,2")

  -- a string error: rolled back, the same message (with its position) raised
  local ok, err = pcall(db.transaction, db, function()
    q(db, "INSERT INTO t VALUES (3, 'x')")
    q(db, "UPDATE t SET v = 'changed'")
    error("stage failed")
  end)
  T.eq(ok, false); T.match(err, "test_sqlite%.lua:%d+: stage failed$")
  T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,2")
  T.eq(count(db, "t WHERE v = 'changed'"), 0)
  -- an error object comes back as the same object
  local obj = setmetatable({ kind = "custom" }, { __tostring = function() return "custom error" end })
  ok, err = pcall(db.transaction, db, function() q(db, "DELETE FROM t"); error(obj) end)
  T.eq(ok, false); T.ok(rawequal(err, obj), "the same error object")
  T.eq(count(db, "t"), 2)
  -- a failed query inside, made into an error with assert
  ok, err = pcall(db.transaction, db, function()
    q(db, "INSERT INTO t VALUES (5, 'x')")
    assert(db:query("INSERT INTO t VALUES (1, 'dup')"))
  end)
  T.eq(ok, false); T.has(err, "UNIQUE constraint failed")
  T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,2")
  -- and the connection is out of the transaction each time
  T.eq(db:exec "BEGIN IMMEDIATE; COMMIT", true)
end)

T.test("transaction: nested calls are savepoints", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE t (id INTEGER PRIMARY KEY)"
  db:transaction(function()
    q(db, "INSERT INTO t VALUES (1)")
    local ok, err = pcall(db.transaction, db, function()
      q(db, "INSERT INTO t VALUES (2)")
      db:transaction(function() q(db, "INSERT INTO t VALUES (3)") end) -- released into level 2
      T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,2,3", "visible inside")
      error("inner failed")
    end)
    T.eq(ok, false); T.match(err, "inner failed")
    T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1", "the inner savepoint rolled back alone")
    local r = db:transaction(function() q(db, "INSERT INTO t VALUES (4)"); return "inner ok" end)
    T.eq(r, "inner ok")
  end)
  T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,4")
  -- an outer failure undoes released inner savepoints too
  pcall(db.transaction, db, function()
    db:transaction(function() q(db, "INSERT INTO t VALUES (5)") end)
    error("outer failed")
  end)
  T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,4")
  -- inside a transaction begun by hand, transaction is a savepoint and leaves it open
  db:exec "BEGIN"
  db:transaction(function() q(db, "INSERT INTO t VALUES (6)") end)
  pcall(db.transaction, db, function() q(db, "INSERT INTO t VALUES (7)"); error("x") end)
  db:exec "ROLLBACK"
  T.eq(ids(db, "SELECT id FROM t ORDER BY id"), "1,4")
end)

T.test("transaction: waiting inside raises and rolls back; ending it inside raises", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE t (id INTEGER PRIMARY KEY)"
  T.raises(function()
    db:transaction(function()
      q(db, "INSERT INTO t VALUES (1)")
      task.sleep(0.01)
      q(db, "INSERT INTO t VALUES (2)")
    end)
  end, "cannot wait here")
  T.eq(count(db, "t"), 0)
  T.raises(function()
    db:transaction(function() q(db, "INSERT INTO t VALUES (3)"); db:exec "COMMIT" end)
  end, "the transaction was ended inside fn")
  T.eq(count(db, "t"), 1, "the COMMIT inside did commit")
  T.eq(db:exec "BEGIN; COMMIT", true, "no transaction left open")
end)

-- ---- the statement cache ----

T.test("prepared-statement cache: 10,000 inserts in one transaction", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE events (id INTEGER PRIMARY KEY, run INTEGER, kind TEXT, at REAL, data BLOB)"
  local started = task.now()
  db:transaction(function()
    for i = 1, 10000 do
      q(db, "INSERT INTO events (run, kind, at, data) VALUES (?, ?, ?, ?)", i % 7, "stage.finished", i / 10, "\0" .. i)
    end
  end)
  local took = task.now() - started
  io.stdout:write(("    10,000 inserts in one transaction: %.3f s\n"):format(took))
  -- speed is bench/'s business; this only catches a statement compiled per call gone badly wrong
  T.ok(took < 10, ("10,000 inserts took %.3f s"):format(took))
  T.eq(count(db, "events"), 10000)
  T.eq(count(db, "events WHERE run = ?", 3), 1429) -- i = 3, 10, ..., 9999
  local r = q(db, "SELECT data, at FROM events WHERE id = 1234")[1]
  T.eq(r.data, "\0" .. 1234); T.eq(r.at, 123.4)
  -- the same SQL reused with different parameters in a read loop
  for i = 1, 1000 do T.eq(q(db, "SELECT id FROM events WHERE id = ?", i)[1].id, i) end
end)

T.test("prepared-statement cache: more distinct statements than it holds stay correct", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE t (id INTEGER PRIMARY KEY, v)"
  -- 200 distinct texts (past the 64 kept), each used several times in a mixed order
  for round = 1, 3 do
    for i = 1, 200 do
      local sql = ("INSERT INTO t (v) VALUES (? + %d)"):format(i)
      q(db, sql, round * 1000)
      T.eq(q(db, ("SELECT v FROM t WHERE id = last_insert_rowid() AND %d = %d"):format(i, i))[1].v, round * 1000 + i)
    end
  end
  T.eq(count(db, "t"), 600)
  -- a cached statement sees schema changes (SQLite re-prepares it)
  q(db, "SELECT * FROM t WHERE id = ?", 1)
  db:exec "ALTER TABLE t ADD COLUMN w DEFAULT 'new'"
  T.eq(q(db, "SELECT * FROM t WHERE id = ?", 1)[1].w, "new")
end)

-- ---- several connections and processes ----

T.test("two connections to one file: each sees the other's commits", function()
  local path, _ <close> = tmpdb()
  local a <close> = open(path)
  local b <close> = open(path)
  a:exec "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"
  q(a, "INSERT INTO t (who) VALUES ('a')")
  T.eq(q(b, "SELECT who FROM t")[1].who, "a")
  q(b, "INSERT INTO t (who) VALUES ('b')")
  T.eq(count(a, "t WHERE who = 'b'"), 1)
  -- an open transaction is invisible to the other until it commits (WAL: the reader is not blocked)
  a:exec "BEGIN IMMEDIATE"
  q(a, "INSERT INTO t (who) VALUES ('a2')")
  T.eq(count(b, "t"), 2)
  a:exec "COMMIT"
  T.eq(count(b, "t"), 3)
end)

local function host(code, opts)
  local args = { STAGEHOST, "-e", code, timeout = 30 }
  for k, v in pairs(opts or {}) do args[k] = v end
  local r = proc.run(args)
  if not r.ok then error(("child host failed (exit %s): %s%s"):format(r.code, r.stdout, r.stderr), 2) end
  return r.stdout
end

T.test("another process reads committed rows, and writes, while this one holds the database", function()
  local path, _ <close> = tmpdb()
  local db <close> = open(path)
  db:exec "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT, state TEXT)"
  db:transaction(function()
    for i = 1, 5 do q(db, "INSERT INTO runs (name, state) VALUES (?, 'done')", "run" .. i) end
  end)
  -- an uncommitted row in an open transaction must not be seen; the reader is not blocked by it
  db:exec "BEGIN IMMEDIATE"
  q(db, "INSERT INTO runs (name, state) VALUES ('pending', 'running')")
  local out = host(([[
    local sqlite = require("stagehost.core.sqlite")
    local db <close> = assert(sqlite.open(%q, { readonly = true }))
    local rows = assert(db:query("SELECT name FROM runs ORDER BY id"))
    local names = {}
    for _, r in ipairs(rows) do names[#names + 1] = r.name end
    print(#rows, table.concat(names, ","))
  ]]):format(path))
  T.eq(out, "5\trun1,run2,run3,run4,run5\n")
  db:exec "COMMIT"
  -- and the other way round: a write there shows here, with our connection still open
  out = host(([[
    local sqlite = require("stagehost.core.sqlite")
    local db <close> = assert(sqlite.open(%q))
    local _, changes, id = assert(db:query("INSERT INTO runs (name, state) VALUES (?, ?)", "from-child", "queued"))
    print(changes, id, #assert(db:query("SELECT * FROM runs")))
  ]]):format(path))
  T.eq(out, "1\t7\t7\n")
  T.eq(q(db, "SELECT name FROM runs WHERE id = 7")[1].name, "from-child")
end)

T.test("SQLITE_BUSY: a second writer gives up after its busy_timeout", function()
  local path, _ <close> = tmpdb()
  local holder <close> = open(path)
  holder:exec "CREATE TABLE t (x)"
  local other <close> = open(path, { busy_timeout = 100 })
  holder:exec "BEGIN IMMEDIATE"
  q(holder, "INSERT INTO t VALUES (1)")
  local started = task.now()
  local rows, err, code = other:query("INSERT INTO t VALUES (?)", 2)
  local waited = task.now() - started
  T.eq(rows, nil); T.eq(code, "SQLITE_BUSY"); T.has(err, "database is locked")
  T.has(err, "INSERT INTO t VALUES (?)")
  T.ok(waited >= 0.08, ("waited its timeout first (%.3f s)"):format(waited))
  T.ok(waited < 1, ("and gave up promptly (%.3f s)"):format(waited))
  -- reading is not blocked in WAL mode
  T.eq(count(other, "t"), 0)
  -- a transaction that cannot begin raises, naming the code, without running fn
  local ran = false
  T.raises(function() other:transaction(function() ran = true end) end, "SQLITE_BUSY")
  T.eq(ran, false)
  -- busy_timeout = 0 fails at once
  local impatient <close> = open(path, { busy_timeout = 0 })
  started = task.now()
  rows, err, code = impatient:query("DELETE FROM t")
  -- the default busy_timeout would wait 5 s
  T.eq(code, "SQLITE_BUSY"); T.ok(task.now() - started < 2, "no wait with busy_timeout = 0")
  holder:exec "COMMIT"
  q(other, "INSERT INTO t VALUES (?)", 2)
  T.eq(count(holder, "t"), 2)
end)

T.test("kill -9 mid-way: every committed transaction survives, integrity ok", function()
  local path, _ <close> = tmpdb()
  local code = ([[
    local sqlite = require("stagehost.core.sqlite")
    local db = assert(sqlite.open(%q))
    assert(db:exec "CREATE TABLE IF NOT EXISTS k (id INTEGER PRIMARY KEY, pad BLOB)")
    local pad = ("x"):rep(3000) -- a few pages per transaction
    for i = 1, 1000000 do
      db:transaction(function()
        assert(db:query("INSERT INTO k VALUES (?, ?)", i, pad))
        assert(db:query("INSERT INTO k VALUES (?, ?)", -i, pad .. i))
      end)
      io.stdout:write(i, "\n")
      io.stdout:flush()
    end
  ]]):format(path)
  local p <close> = proc.spawn { STAGEHOST, "-e", code, lines = true }
  local printed, stderr, killed = {}, {}, false
  for stream, line in p.read_line, p do
    if stream == "stdout" then
      printed[#printed + 1] = tonumber(line)
      if #printed == 300 and not killed then
        p:kill("KILL")
        killed = true
      end
    else
      stderr[#stderr + 1] = line
    end
  end
  local r = p:wait()
  T.eq(r.signal, "SIGKILL", "killed, not finished: " .. table.concat(stderr, "\n"))
  local last = printed[#printed]
  T.ok(last >= 300, "printed ids")
  for i, id in ipairs(printed) do T.eq(id, i, "printed in order") end
  io.stdout:write(("    %d transactions printed as committed before SIGKILL\n"):format(last))

  local db <close> = open(path)
  T.eq(q(db, "PRAGMA integrity_check")[1].integrity_check, "ok")
  T.eq(count(db, "k WHERE id BETWEEN 1 AND ?", last), last, "every printed id is present")
  T.eq(count(db, "k WHERE id BETWEEN ? AND -1", -last), last, "with its pair")
  -- at most the transaction after the last printed one committed too, and whole
  local n = count(db, "k WHERE id > 0")
  T.ok(n == last or n == last + 1, ("committed %d, printed %d"):format(n, last))
  T.eq(count(db, "k WHERE id < 0"), n, "no transaction half-applied")
  T.eq(q(db, "SELECT pad FROM k WHERE id = ?", -last)[1].pad, ("x"):rep(3000) .. last)
end, { timeout = 120 })

T.run()
