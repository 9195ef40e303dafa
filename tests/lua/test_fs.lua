local T = require("harness")
local fs = require("stagehost.fs")
local task = require("stagehost.task")
local proc = require("stagehost.proc")

local counter = 0

-- A fresh, empty directory for one test; removed afterwards whether the test passed or not.
-- os.tmpname() creates a new unique file; the directory is named after it, so no other run
-- (even one that crashed and left its directory behind) can have the same name.
local function with_dir(fn)
  counter = counter + 1
  local base = os.tmpname()
  local dir = ("%s-stagehost-test-fs-%d"):format(base, counter)
  T.eq(fs.exists(dir), false, "fresh temp dir name")
  assert(fs.mkdir(dir))
  local ok, err = xpcall(fn, debug.traceback, dir)
  local removed, rerr = fs.remove(dir, { recursive = true })
  os.remove(base)
  if not ok then error(err, 0) end
  assert(removed, rerr)
  T.eq(fs.exists(dir), false, "temp dir removed")
end


local function list_eq(actual, expected, what)
  T.eq(type(actual), "table", what)
  T.eq(table.concat(actual, ","), table.concat(expected, ","), what)
end

-- 256 byte values, so every byte (NUL included) is in the data
local all_bytes = {}
for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
all_bytes = table.concat(all_bytes)

T.test("write then read back: binary data, empty file, 5 MiB", function()
  with_dir(function(dir)
    local bin = "\0head\0" .. all_bytes .. "\0\0tail\r\n\0"
    T.eq(fs.write(dir .. "/bin", bin), true)
    local back = fs.read(dir .. "/bin")
    T.eq(#back, #bin, "length of binary data")
    T.ok(back == bin, "binary data round trips")

    T.eq(fs.write(dir .. "/empty", ""), true)
    T.eq(fs.read(dir .. "/empty"), "", "empty file")
    local ok, kind = fs.exists(dir .. "/empty")
    T.eq(ok, true)
    T.eq(kind, "file")

    local big = string.rep(all_bytes, 5 * 4096) -- 5 MiB
    T.eq(#big, 5 * 1024 * 1024)
    T.eq(fs.write(dir .. "/big", big), true)
    local bigback = fs.read(dir .. "/big")
    T.eq(#bigback, #big, "length of 5 MiB")
    T.ok(bigback == big, "5 MiB round trips")

    -- overwrite with something shorter: no stale tail
    T.eq(fs.write(dir .. "/big", "short"), true)
    T.eq(fs.read(dir .. "/big"), "short")
  end)
end)

T.test("write replaces atomically and leaves no temp files", function()
  with_dir(function(dir)
    local path = dir .. "/target"
    for i = 1, 20 do
      T.eq(fs.write(path, ("version %d\n"):format(i):rep(i)), true)
    end
    list_eq(fs.list(dir), { "target" }, "only the target after 20 writes")
    T.eq(fs.read(path), ("version %d\n"):format(20):rep(20))
    -- a failed write (the target is a directory) leaves no temp file either
    T.ok(fs.mkdir(dir .. "/sub"))
    local ok, msg, code = fs.write(dir .. "/sub", "x")
    T.eq(ok, nil, "writing over a directory fails")
    T.has(msg, dir .. "/sub")
    T.eq(type(code), "string")
    list_eq(fs.list(dir), { "sub", "target" }, "no temp file after a failed write")
    list_eq(fs.list(dir .. "/sub"), {}, "nothing written into the directory")
  end)
end)

T.test("a concurrent reader only ever sees one complete version", function()
  with_dir(function(dir)
    local path = dir .. "/data"
    local function version(i)
      -- different sizes (up to ~60 KiB) and contents; the header says which version it is
      local size = (i * 7919) % 60000 + 1
      local fill = string.char(65 + i % 26)
      return ("v%d:%d\n"):format(i, size) .. fill:rep(size) .. ("\nend %d\n"):format(i)
    end
    assert(fs.write(path, version(0)))
    local writer_done = false
    local reads, seen, bad = 0, {}, nil
    local reader = task.spawn(function()
      while not writer_done do
        local s, err = fs.read(path)
        if not s then
          bad = "read failed: " .. tostring(err)
          return
        end
        reads = reads + 1
        local i = tonumber(s:match("^v(%d+):"))
        if not i or s ~= version(i) then
          bad = ("read %d saw a partial or mixed file (%d bytes, starts %q)"):format(reads, #s, s:sub(1, 20))
          return
        end
        seen[i] = true
      end
    end)
    local writer = task.spawn(function()
      for i = 1, 200 do
        local ok, err = fs.write(path, version(i))
        assert(ok, err)
      end
      writer_done = true
    end)
    local wok, werr = writer:join()
    writer_done = true
    local rok, rerr = reader:join()
    T.ok(wok, "writer: " .. tostring(werr))
    T.ok(rok, "reader: " .. tostring(rerr))
    T.eq(bad, nil)
    T.ok(reads > 0, "the reader read at least once")
    T.eq(fs.read(path), version(200), "the last version wins")
    list_eq(fs.list(dir), { "data" }, "no temp files left after 200 rewrites")
  end)
end, { timeout = 120 })

T.test("write with {mode = 384} creates the file as 0600", function()
  with_dir(function(dir)
    local path = dir .. "/secret"
    T.eq(fs.write(path, "s3cret", { mode = 384 }), true)
    local r = proc.run { "stat", "-c", "%a", path }
    T.ok(r.ok, "stat ran")
    T.eq(r.stdout:gsub("%s+$", ""), "600")
    T.eq(fs.read(path), "s3cret")
    -- replacing it keeps the requested mode too
    T.eq(fs.write(path, "again", { mode = 384 }), true)
    T.eq(proc.run { "stat", "-c", "%a", path }.stdout:gsub("%s+$", ""), "600")
  end)
end)

-- Permission bits as `stat -c %a` shows them, and as fs.exists returns them.
local function mode_of(path)
  local r = proc.run { "stat", "-c", "%a", path }
  T.ok(r.ok, "stat " .. path .. ": " .. r.stderr)
  local via_exists = select(3, fs.exists(path))
  local shown = r.stdout:gsub("%s+$", "")
  T.eq(via_exists and ("%o"):format(via_exists), shown, "fs.exists's mode of " .. path)
  return shown
end

-- Runs code in a child stagehost under the given umask; the child's fs calls must all succeed.
local function under_umask(mask, code)
  local bin = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
  local r = proc.run { "sh", "-c", 'umask "$1" && exec "$2" -e "$3"', "sh", mask, bin,
    "local fs = require 'stagehost.fs' " .. code, timeout = 30 }
  T.eq(r.code, 0, "child under umask " .. mask .. ": " .. r.stderr)
  return r
end

T.test("fs.exists returns the permission bits", function()
  with_dir(function(dir)
    assert(fs.write(dir .. "/f", "x", { mode = 416 }))
    local ok, kind, mode = fs.exists(dir .. "/f")
    T.eq(ok, true)
    T.eq(kind, "file")
    T.eq(mode, 416, "0640")
    T.eq(mode_of(dir .. "/f"), "640")
    T.eq(select("#", fs.exists(dir .. "/missing")), 1, "nothing more for a missing path")
  end)
end)

T.test("write: a new file honours the umask, a replaced one keeps its mode", function()
  with_dir(function(dir)
    for _, c in ipairs { { "077", "600" }, { "022", "644" }, { "027", "640" }, { "000", "666" } } do
      local mask, mode = c[1], c[2]
      under_umask(mask, ("assert(fs.write(%q, 'a'))"):format(dir .. "/u" .. mask))
      T.eq(mode_of(dir .. "/u" .. mask), mode, "umask " .. mask)
    end
    -- replacing keeps the old mode even where the umask would take bits away
    assert(fs.write(dir .. "/kept", "old", { mode = 436 })) -- 0664
    under_umask("077", ("assert(fs.write(%q, 'new'))"):format(dir .. "/kept"))
    T.eq(mode_of(dir .. "/kept"), "664", "replaced under umask 077")
    T.eq(fs.read(dir .. "/kept"), "new")
  end)
end)

T.test("write {mode} sets the mode exactly whatever the umask", function()
  with_dir(function(dir)
    -- the umask, the mode asked for, that mode in octal
    for _, c in ipairs { { "077", 493, "755" }, { "000", 384, "600" } } do
      local mask, mode, octal = c[1], c[2], c[3]
      under_umask(mask, ("assert(fs.write(%q, 'a', {mode = %d}))"):format(dir .. "/m" .. octal, mode))
      T.eq(mode_of(dir .. "/m" .. octal), octal, ("0%s under umask %s"):format(octal, mask))
    end
    -- a mode given for an existing file replaces its mode
    assert(fs.write(dir .. "/m", "a", { mode = 420 }))
    assert(fs.write(dir .. "/m", "b", { mode = 256 }))
    T.eq(mode_of(dir .. "/m"), "400", "0400 over 0644")
    T.eq(fs.read(dir .. "/m"), "b")
    list_eq(fs.list(dir), { "m", "m600", "m755" }, "no temp files")
  end)
end)

T.test("write {exclusive = true} fails with EEXIST and leaves the file as it was", function()
  with_dir(function(dir)
    local path = dir .. "/key"
    T.eq(fs.write(path, "first", { exclusive = true, mode = 384 }), true, "creates a missing file")
    T.eq(fs.read(path), "first")
    T.eq(mode_of(path), "600")
    local ok, msg, code = fs.write(path, "second", { exclusive = true, mode = 420 })
    T.eq(ok, nil, "the second exclusive write fails")
    T.eq(code, "EEXIST")
    T.match(msg, "^fs%.write: ")
    T.has(msg, path, "message names the path")
    T.match(msg, "[Ff]ile exists$")
    T.eq(fs.read(path), "first", "content unchanged")
    T.eq(mode_of(path), "600", "mode unchanged")
    -- a dangling symbolic link is in the way too: nothing is created where it points
    T.ok(proc.run { "ln", "-s", dir .. "/nowhere", dir .. "/link" }.ok, "ln -s")
    ok, msg, code = fs.write(dir .. "/link", "x", { exclusive = true })
    T.eq(code, "EEXIST", "over a dangling link: " .. tostring(msg))
    T.eq(fs.exists(dir .. "/nowhere"), false, "the link's target was not created")
    -- and so is a directory
    assert(fs.mkdir(dir .. "/sub"))
    T.eq(select(3, fs.write(dir .. "/sub", "x", { exclusive = true })), "EEXIST", "over a directory")
    -- false is a plain replacing write
    T.eq(fs.write(path, "third", { exclusive = false }), true)
    T.eq(fs.read(path), "third")
    list_eq(fs.list(dir), { "key", "link", "sub" }, "no temp files left")
  end)
end)

-- n racers at once each try to create path exclusively with content of their own: racer(i, path)
-- -> "won" or the error code. Exactly one wins, every other gets EEXIST, and the file holds the
-- winner's whole content(i). what names a racer in messages.
local function race(what, n, path, racer, content)
  local results = T.concurrently(n, function(i) return racer(i, path) end)
  local winners = {}
  for i = 1, n do
    if results[i] == "won" then winners[#winners + 1] = i else T.eq(results[i], "EEXIST", what .. " " .. i) end
  end
  T.eq(#winners, 1, "one " .. what .. " won")
  T.eq(fs.read(path), content(winners[1]), "the winning " .. what .. "'s whole content")
end

T.test("write {exclusive = true}: of 30 racing tasks and 4 processes exactly one wins", function()
  with_dir(function(dir)
    local function task_content(i) return ("task %d "):format(i):rep(1000) end
    race("task", 30, dir .. "/contested", function(i, path)
      local ok, _, code = fs.write(path, task_content(i), { exclusive = true })
      return ok and "won" or code
    end, task_content)
    list_eq(fs.list(dir), { "contested" }, "no temp files left")

    local bin = assert(os.getenv("STAGEHOST_BIN"))
    race("process", 4, dir .. "/raced", function(i, path)
      local code = ("local ok, _, c = require('stagehost.fs').write(%q, ('proc %d '):rep(5000), {exclusive = true}) "
        .. "io.write(ok and 'won' or c)"):format(path, i)
      return proc.run { bin, "-e", code, timeout = 30 }.stdout
    end, function(i) return ("proc %d "):format(i):rep(5000) end)
    list_eq(fs.list(dir), { "contested", "raced" }, "no temp files left by the processes")
  end)
end, { timeout = 120 })

T.test("mkdir {mode} gives the directories it creates that mode; existing ones are left alone", function()
  with_dir(function(dir)
    T.eq(fs.mkdir(dir .. "/a/b/c", { mode = 448 }), true)
    for _, d in ipairs { "/a", "/a/b", "/a/b/c" } do T.eq(mode_of(dir .. d), "700", d) end
    under_umask("077", ("assert(fs.mkdir(%q, {mode = 493}))"):format(dir .. "/open"))
    T.eq(mode_of(dir .. "/open"), "755", "0755 under umask 077")
    under_umask("027", ("assert(fs.mkdir(%q))"):format(dir .. "/default"))
    T.eq(mode_of(dir .. "/default"), "750", "no mode: 0777 less umask 027")
    -- existing: untouched, even with another mode asked for; only the new child gets it
    T.eq(fs.mkdir(dir .. "/open/new", { mode = 456 }), true)
    T.eq(mode_of(dir .. "/open"), "755", "existing parent untouched")
    T.eq(mode_of(dir .. "/open/new"), "710", "new child 0710")
    T.eq(fs.mkdir(dir .. "/a", { mode = 511 }), true, "an existing directory is fine")
    T.eq(mode_of(dir .. "/a"), "700", "and keeps its mode")
    -- a file in the way still fails
    assert(fs.write(dir .. "/f", "x"))
    T.eq(select(3, fs.mkdir(dir .. "/f", { mode = 448 })), "EEXIST")
  end)
end)

T.test("write and mkdir options of the wrong type raise naming the function", function()
  with_dir(function(dir)
    local p = dir .. "/never"
    for _, bad in ipairs { "384", -1, 4096, 1.5, true, {} } do
      local err = T.raises(fs.write, "bad argument #3 to 'fs.write' (option 'mode' must be an integer permission", p, "x", { mode = bad })
      T.no_match(err, "\n")
      T.raises(fs.mkdir, "bad argument #2 to 'fs.mkdir' (option 'mode' must be an integer permission", p, { mode = bad })
    end
    T.raises(fs.write, ", got 4096)", p, "x", { mode = 4096 })
    T.raises(fs.write, ", got string)", p, "x", { mode = "0600" })
    for _, bad in ipairs { "yes", 1, {} } do
      T.raises(fs.write, "bad argument #3 to 'fs.write' (option 'exclusive' must be a boolean", p, "x", { exclusive = bad })
    end
    T.raises(fs.mkdir, "bad argument #2 to '", p, 448)
    T.raises(fs.mkdir, "table expected, got string", p, "0700")
    list_eq(fs.list(dir), {}, "nothing was created")
  end)
end)

T.test("mkdir creates parents, accepts an existing directory, fails when a file is in the way", function()
  with_dir(function(dir)
    local deep = dir .. "/a/b/c/d"
    T.eq(fs.mkdir(deep), true)
    local ok, kind = fs.exists(deep)
    T.eq(ok, true)
    T.eq(kind, "directory")
    T.eq(fs.mkdir(deep), true, "existing directory is fine")
    T.eq(fs.mkdir(dir .. "/a"), true, "existing parent is fine")
    T.eq(fs.mkdir(deep .. "/"), true, "trailing slash is fine")

    assert(fs.write(dir .. "/file", "x"))
    local r, msg, code = fs.mkdir(dir .. "/file")
    T.eq(r, nil, "mkdir over a file fails")
    T.has(msg, dir .. "/file", "message names the path")
    T.match(msg, "^fs%.mkdir: ")
    T.eq(code, "EEXIST")
    r, msg, code = fs.mkdir(dir .. "/file/sub/deeper")
    T.eq(r, nil, "mkdir below a file fails")
    T.has(msg, dir .. "/file", "message names the path")
    T.eq(code, "ENOTDIR")
    T.eq(fs.read(dir .. "/file"), "x", "the file is untouched")
  end)
end)

T.test("list returns sorted names without . and ..", function()
  with_dir(function(dir)
    list_eq(fs.list(dir), {}, "empty directory")
    for _, name in ipairs { "b", "a", "C", "a2", "_x", ".hidden", "10", "9" } do
      assert(fs.write(dir .. "/" .. name, name))
    end
    assert(fs.mkdir(dir .. "/dir"))
    local names = fs.list(dir)
    list_eq(names, { ".hidden", "10", "9", "C", "_x", "a", "a2", "b", "dir" })
    for _, n in ipairs(names) do
      T.ok(n ~= "." and n ~= "..", "no . or ..")
    end
    local r, msg, code = fs.list(dir .. "/missing")
    T.eq(r, nil)
    T.has(msg, dir .. "/missing")
    T.eq(code, "ENOENT")
    r, msg, code = fs.list(dir .. "/a")
    T.eq(r, nil, "list of a file fails")
    T.eq(code, "ENOTDIR")
  end)
end)

T.test("remove: a file, an empty dir, a tree; errors for missing and non-empty", function()
  with_dir(function(dir)
    assert(fs.write(dir .. "/f", "x"))
    T.eq(fs.remove(dir .. "/f"), true, "remove a file")
    T.eq(fs.exists(dir .. "/f"), false)

    assert(fs.mkdir(dir .. "/empty"))
    T.eq(fs.remove(dir .. "/empty"), true, "remove an empty dir")
    T.eq(fs.exists(dir .. "/empty"), false)

    assert(fs.mkdir(dir .. "/tree/a/b"))
    assert(fs.mkdir(dir .. "/tree/c"))
    assert(fs.write(dir .. "/tree/a/b/f1", "1"))
    assert(fs.write(dir .. "/tree/a/f2", "2"))
    assert(fs.write(dir .. "/tree/top", "3"))
    local r, msg, code = fs.remove(dir .. "/tree")
    T.eq(r, nil, "a non-empty dir without recursive fails")
    T.has(msg, dir .. "/tree")
    T.match(msg, "^fs%.remove: ")
    T.ok(code == "ENOTEMPTY" or code == "EEXIST", "code " .. tostring(code))
    T.eq(fs.read(dir .. "/tree/top"), "3", "nothing was removed")
    T.eq(fs.remove(dir .. "/tree", { recursive = true }), true, "remove a tree")
    T.eq(fs.exists(dir .. "/tree"), false)

    r, msg, code = fs.remove(dir .. "/missing")
    T.eq(r, nil, "removing a missing path fails")
    T.has(msg, dir .. "/missing", "message names the path")
    T.eq(code, "ENOENT")
    r, msg, code = fs.remove(dir .. "/missing", { recursive = true })
    T.eq(r, nil, "recursive remove of a missing path fails too")
    T.eq(code, "ENOENT")
    list_eq(fs.list(dir), {}, "everything is gone")
  end)
end)

T.test("exists tells files from directories", function()
  with_dir(function(dir)
    assert(fs.write(dir .. "/f", "x"))
    local ok, kind = fs.exists(dir .. "/f")
    T.eq(ok, true)
    T.eq(kind, "file")
    ok, kind = fs.exists(dir)
    T.eq(ok, true)
    T.eq(kind, "directory")
    T.eq(fs.exists(dir .. "/missing"), false)
    T.eq(select("#", fs.exists(dir .. "/missing")), 1, "only false for a missing path")
    T.eq(fs.exists(dir .. "/f/below"), false)
  end)
end)

T.test("read of a missing file and of a directory", function()
  with_dir(function(dir)
    local r, msg, code = fs.read(dir .. "/missing")
    T.eq(r, nil)
    T.eq(type(msg), "string")
    T.has(msg, dir .. "/missing", "message names the path")
    T.match(msg, "^fs%.read: ")
    T.no_match(msg, "\n")
    T.eq(code, "ENOENT")
    r, msg, code = fs.read(dir)
    T.eq(r, nil)
    T.has(msg, dir)
    T.eq(code, "EISDIR")
  end)
end)

T.test("many concurrent fs operations from 50 tasks", function()
  with_dir(function(dir)
    local results = T.concurrently(50, function(i)
      local sub = ("%s/t%02d"):format(dir, i)
      assert(fs.mkdir(sub .. "/nested"))
      local data = ("task %d "):format(i):rep(i * 10)
      for j = 1, 5 do
        assert(fs.write(("%s/f%d"):format(sub, j), data .. j))
      end
      for j = 1, 5 do
        local got = assert(fs.read(("%s/f%d"):format(sub, j)))
        assert(got == data .. j, "content of task " .. i)
      end
      -- everybody also writes the same shared file
      assert(fs.write(dir .. "/shared", ("shared by %d"):format(i)))
      local names = assert(fs.list(sub))
      assert(#names == 6, "six entries in " .. sub)
      local ok, kind = fs.exists(sub .. "/nested")
      assert(ok and kind == "directory")
      assert(fs.remove(sub .. "/f1"))
      assert(fs.remove(sub, { recursive = true }))
      return i
    end)
    for i = 1, 50 do T.eq(results[i], i) end
    list_eq(fs.list(dir), { "shared" }, "only the shared file is left")
    T.match(fs.read(dir .. "/shared"), "^shared by %d+$")
  end)
end, { timeout = 120 })

T.test("fs works synchronously where the task cannot yield", function()
  with_dir(function(dir)
    -- a module's top-level code runs through require, which cannot yield
    local modname = "stagehost_fs_toplevel_" .. counter
    local src = ([[
      local fs = require("stagehost.fs")
      local dir = %q
      assert(fs.mkdir(dir .. "/m/n"))
      assert(fs.write(dir .. "/m/n/file", "written at top level"))
      local ok, kind = fs.exists(dir .. "/m/n/file")
      local names = fs.list(dir .. "/m/n")
      local data = fs.read(dir .. "/m/n/file")
      local missing = { fs.read(dir .. "/nope") }
      assert(fs.remove(dir .. "/m", { recursive = true }))
      return { data = data, ok = ok, kind = kind, names = names, missing = missing,
               gone = fs.exists(dir .. "/m") }
    ]]):format(dir)
    assert(fs.mkdir(dir .. "/mods"))
    assert(fs.write(dir .. "/mods/" .. modname .. ".lua", src))
    local saved = package.path
    package.path = dir .. "/mods/?.lua;" .. package.path
    local ok, m = pcall(require, modname)
    package.path = saved
    package.loaded[modname] = nil
    T.ok(ok, "require ran: " .. tostring(m))
    T.eq(m.data, "written at top level")
    T.eq(m.ok, true)
    T.eq(m.kind, "file")
    list_eq(m.names, { "file" })
    T.eq(m.missing[1], nil)
    T.eq(m.missing[3], "ENOENT")
    T.eq(m.gone, false)

    -- inside a metamethod (__tostring is called from C, so it cannot yield either)
    assert(fs.write(dir .. "/meta", "from a metamethod"))
    local obj = setmetatable({}, {
      __tostring = function()
        assert(fs.write(dir .. "/meta2", "copied"))
        return fs.read(dir .. "/meta")
      end,
    })
    T.eq(tostring(obj), "from a metamethod")
    T.eq(fs.read(dir .. "/meta2"), "copied")

    -- inside table.sort's comparator
    local order = { "b", "a" }
    table.sort(order, function(x, y)
      assert(fs.exists(dir .. "/meta"))
      return x < y
    end)
    T.eq(table.concat(order), "ab")

    -- inside a plain coroutine (not a stagehost task)
    local co = coroutine.wrap(function()
      assert(fs.write(dir .. "/co", "coroutine"))
      coroutine.yield(fs.read(dir .. "/co"))
      return fs.list(dir)
    end)
    T.eq(co(), "coroutine")
    list_eq(co(), { "co", "meta", "meta2", "mods" })
  end)
end)

T.test("fs rejects bad arguments", function()
  T.raises(fs.read, "bad argument #1", {})
  T.raises(fs.read, "bad argument #1", nil)
  T.raises(fs.read, "non-empty path", "")
  T.raises(fs.read, "without NUL", "/tmp/a\0b")
  T.raises(fs.write, "bad argument #2", "/tmp/stagehost-never-written", {})
  T.raises(fs.write, "bad argument #2", "/tmp/stagehost-never-written")
  T.raises(fs.write, "bad argument #3", "/tmp/stagehost-never-written", "x", 42)
  T.raises(fs.remove, "bad argument #2", "/tmp/stagehost-never-written", 42)
  T.eq(fs.exists("/tmp/stagehost-never-written"), false)
end)

T.run()
