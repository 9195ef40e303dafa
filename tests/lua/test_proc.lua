local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local log = require("stagehost.log")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
-- Under AddressSanitizer freed memory sits in a quarantine (256 MB by default), which would
-- hide what the memory tests measure; a child host measured for RSS gets a tiny one.
local MEASURED_ENV = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=1:thread_local_quarantine_size_kb=64" }

local function group_gone(pgid, within) return T.gone(-pgid, within) end

T.test("run: result fields", function()
  local r = proc.run{ "sh", "-c", "echo out; echo err >&2; exit 3" }
  T.eq(r.ok, false); T.eq(r.code, 3); T.eq(r.stdout, "out\n"); T.eq(r.stderr, "err\n")
  T.eq(r.timed_out, false); T.eq(r.signal, nil)
  T.ok(r.duration > 0 and r.duration < 5); T.ok(r.pid > 0)
  local ok = proc.run{ "true" }
  T.eq(ok.ok, true); T.eq(ok.code, 0)
  T.eq(proc.run{ "echo", 42, "x y" }.stdout, "42 x y\n")
  T.eq(proc.run{ shell = "echo $((1 + 2))" }.stdout, "3\n")
end)

T.test("env is merged over the inherited environment; false removes", function()
  local r = proc.run{ "env", env = { STAGEHOST_TEST_X = "1", HOME = false, N = 7 } }
  local child = {} -- the child's environment, by name
  for name, value in r.stdout:gmatch("([^\n=]+)=([^\n]*)") do child[name] = value end
  T.eq(child.STAGEHOST_TEST_X, "1")
  T.eq(child.N, "7")
  T.ok(child.PATH, "PATH inherited")
  T.eq(child.HOME, nil, "HOME removed")
end)

T.test("cwd, and a cwd that is not a directory", function()
  T.eq(proc.run{ "pwd", cwd = "/tmp" }.stdout, "/tmp\n")
  T.raises(function() proc.run{ "pwd", cwd = "/nonexistent-dir-xyz" } end,
    "cwd '/nonexistent-dir-xyz' is not a directory")
end)

T.test("stdin: small, large, and none (reads /dev/null, never the terminal)", function()
  T.eq(proc.run{ "cat", stdin = "hello\n" }.stdout, "hello\n")
  local big = ("0123456789abcdef"):rep(65536) -- 1 MiB, more than a pipe buffer
  T.eq(proc.run{ "wc", "-c", stdin = big }.stdout:match("%d+"), tostring(#big))
  T.eq(proc.run{ "cat" }.stdout, "")
  T.eq(proc.run{ "cat", stdin = "" }.stdout, "")
  -- on a terminal (script(1) gives the host one): a child still reads /dev/null, not the tty
  local r = proc.run{ "script", "-qfec", STAGEHOST .. [[ -e "
    local proc = require 'stagehost.proc'
    print('host:', proc.run{ 'sh', '-c', 'test -t 0 && echo tty || echo notty' }.stdout)
    print('cat:', #proc.run{ 'cat', timeout = 5 }.stdout)
    print('tty:', require('stagehost.log').isatty())
  "]], "/dev/null", timeout = 30 }
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "tty:\ttrue", "the host itself is on a terminal")
  T.match(r.stdout, "host:\tnotty")
  T.match(r.stdout, "cat:\t0")
end)

T.test("a missing program is an error naming it", function()
  T.raises(function() proc.run{ "no-such-program-xyz", "arg" } end,
    "program 'no-such-program-xyz' not found")
  T.raises(function() proc.run{ "./no/such/file" } end, "cannot run './no/such/file'")
  local plain = os.tmpname() -- exists, not executable
  T.raises(function() proc.run{ plain } end, "permission denied")
  os.remove(plain)
end)

T.test("timeout: exit code 124, the whole group gone", function()
  local pid
  local r = proc.run{ "sh", "-c", "echo $$; sleep 30 & sleep 30 & wait", timeout = 0.3,
    on_line = function(_, line) pid = pid or tonumber(line) end }
  T.eq(r.timed_out, true); T.eq(r.code, 124); T.eq(r.ok, false)
  T.ok(r.duration < 5, "stopped promptly")
  T.ok(pid and group_gone(pid), "no member of the group is left")
end)

T.test("timeout: a child ignoring SIGTERM gets SIGKILL after the grace period", function()
  local r = proc.run{ "sh", "-c", "trap '' TERM; sleep 30", timeout = 0.1, grace = 0.3 }
  T.eq(r.timed_out, true); T.eq(r.code, 124); T.eq(r.signal, "SIGKILL")
  T.ok(r.duration >= 0.35 and r.duration < 5, "killed after the grace: " .. r.duration)
end)

T.test("cancel while a process runs: its whole process group is gone", function()
  local pid
  local t = task.spawn(function()
    return proc.run{ "sh", "-c", "echo $$; sleep 30 & sleep 30 & wait",
      on_line = function(_, line) pid = pid or tonumber(line) end }
  end)
  while not pid do task.sleep(0.01) end
  T.ok(T.alive(-pid), "group running before the cancel")
  t:cancel("deploy cancelled")
  local ok, err = t:join()
  T.eq(ok, false); T.eq(tostring(err), "deploy cancelled")
  T.ok(group_gone(pid), "no member of the group is left")
end)

T.test("spawn: write, close_stdin, wait; kill", function()
  local p = proc.spawn{ "cat", stdin = true }
  T.eq(p:write("hello\n"), true)
  T.eq(p:write("again\n"), true)
  p:close_stdin()
  local r = p:wait()
  T.eq(r.stdout, "hello\nagain\n")
  local s = proc.spawn{ "sleep", "30" }
  T.ok(s.pid > 0)
  T.eq(s:kill(), true)
  local rs = s:wait()
  T.eq(rs.signal, "SIGTERM"); T.eq(rs.code, 143)
  T.eq(s:kill(), false, "kill after exit")
  local w = proc.spawn{ "true", stdin = true }
  w:wait()
  local ok, msg, code = w:write(("x"):rep(1 << 20))
  T.eq(ok, nil); T.match(msg, "process:write"); T.eq(code, "EPIPE")
end)

T.test("a handle closed by <close> terminates its child", function()
  local pid
  do
    local p <close> = proc.spawn{ "sleep", "30" }
    pid = p.pid
  end
  T.ok(group_gone(pid), "child gone after the handle closed")
end)

T.test("on_line streams lines as they come, in order, per stream", function()
  local seen, at = {}, {}
  local r = proc.run{ "sh", "-c", "echo one; echo two >&2; sleep 0.5; printf 'three\\r\\nfour'",
    on_line = function(stream, line)
      at[line] = task.now()
      seen[#seen + 1] = stream .. ":" .. line
    end }
  T.eq(r.ok, true)
  T.eq(table.concat(seen, "|"), "stdout:one|stderr:two|stdout:three|stdout:four")
  -- the child sleeps 0.5 s between them: streamed, "one" came that long before "three"
  T.ok(at.three - at.one >= 0.3, "first line arrived before the child ended (" .. (at.three - at.one) .. " s before the rest)")
  T.eq(r.stdout, "one\nthree\r\nfour", "the captured stdout is unchanged")
end)

T.test("an error in on_line stops the child", function()
  local pid
  T.raises(function()
    proc.run{ "sh", "-c", "echo $$; sleep 30", on_line = function(_, line)
      pid = tonumber(line)
      error("stop here")
    end }
  end, "stop here")
  T.ok(pid and group_gone(pid))
end)

T.test("stdout = PATH and stderr = PATH stream to files", function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(fs.mkdir(dir))
  local r = proc.run{ "sh", "-c", "seq 1 100000; echo oops >&2", stdout = dir .. "/out", stderr = dir .. "/err" }
  T.eq(r.ok, true); T.eq(r.stdout, nil); T.eq(r.stderr, nil)
  local out = assert(fs.read(dir .. "/out"))
  T.eq(#out, #table.concat((function() local t = {} for i = 1, 100000 do t[i] = i .. "\n" end return t end)()))
  T.eq(fs.read(dir .. "/err"), "oops\n")
  T.raises(function() proc.run{ "true", stdout = dir .. "/no/such/dir/file" } end, "cannot open stdout file")
  assert(fs.remove(dir, { recursive = true }))
end)

T.test("a child printing a lot: memory stays bounded, the tail is kept", function()
  -- measured in a fresh host so that earlier tests do not set its high-water mark
  local script = [[
    local proc = require("stagehost.proc")
    local r = proc.run{ "sh", "-c", "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 314572800; echo END" }
    local hwm = io.open("/proc/self/status"):read("a"):match("VmHWM:%s*(%d+)")
    print(#r.stdout, r.stdout_truncated, r.stdout:sub(-4), hwm)
  ]]
  local r = proc.run{ STAGEHOST, "-e", script, timeout = 120, env = MEASURED_ENV }
  T.eq(r.code, 0, r.stderr)
  local len, truncated, tail, hwm = r.stdout:match("^(%d+)\t(%a+)\t(%S+)\n?\t(%d+)")
  T.eq(tonumber(len), 4 * 1024 * 1024, "keeps max_output bytes")
  T.eq(truncated, "true")
  T.eq(tail, "END", "the newest output is the part kept")
  T.ok(tonumber(hwm) < 48 * 1024, "peak RSS " .. hwm .. " KiB for 300 MiB of output")
end, { timeout = 150 })

T.test("on_line on a fast child: reading pauses instead of queueing without bound", function()
  local script = [[
    local proc = require("stagehost.proc")
    local task = require("stagehost.task")
    local n = 0
    local r = proc.run{ "sh", "-c", "seq 1 3000000", max_output = 0,
      on_line = function(_, line) n = n + 1 if n % 100000 == 0 then task.sleep(0.001) end end }
    local hwm = io.open("/proc/self/status"):read("a"):match("VmHWM:%s*(%d+)")
    print(n, hwm)
  ]]
  local r = proc.run{ STAGEHOST, "-e", script, timeout = 120, env = MEASURED_ENV }
  T.eq(r.code, 0, r.stderr)
  local n, hwm = r.stdout:match("^(%d+)\t(%d+)")
  T.eq(tonumber(n), 3000000, "every line delivered")
  T.ok(tonumber(hwm) < 48 * 1024, "peak RSS " .. tostring(hwm) .. " KiB")
end, { timeout = 150 })

T.test("masking holds across chunk boundaries of streamed child output", function()
  local secret = "s3cr3t-value-XYZ"
  local script = [[
    local proc = require("stagehost.proc")
    local log = require("stagehost.log")
    local runtime = log.mask("runtime-secret-42")
    -- the secret arrives in two reads, split in the middle
    proc.run{ "sh", "-c", "printf 'token is s3cr3t-'; sleep 0.2; printf 'value-XYZ and more\n'" }
    -- a line longer than the 64 KiB line buffer, with the secret across the cut
    proc.run{ "sh", "-c", "head -c 65530 /dev/zero | tr '\\0' x; printf 's3cr3t-value-XYZ'; head -c 70000 /dev/zero | tr '\\0' y; echo" }
    proc.run{ "echo", runtime }
    print("print: s3cr3t-value-XYZ")
    log.info("log:", "s3cr3t-value-XYZ", runtime)
    local r = proc.run{ "echo", "captured s3cr3t-value-XYZ" }
    io.stdout:write(r.stdout == "captured s3cr3t-value-XYZ\n" and "capture raw\n" or "capture changed\n")
  ]]
  local r = proc.run{ STAGEHOST, "-e", script, env = { MY_API_TOKEN = secret, STAGEHOST_LOG_LEVEL = "debug" } }
  T.eq(r.code, 0, r.stderr)
  local all = r.stdout .. r.stderr
  T.no_match(all, secret, "the secret leaked")
  T.no_match(all, "runtime%-secret%-42", "the log.mask secret leaked")
  T.no_match(all, "s3cr3t%-", "a piece of the secret leaked")
  T.match(r.stderr, "token is %*%*%* and more", "the split secret is masked in the child's log line")
  T.ok(r.stderr:find("x%*%*%*") or r.stderr:find("| %*%*%*y"), "the secret across the long-line cut is masked")
  T.no_match(all, "value%-XYZ", "the second half of the secret leaked")
  T.match(r.stdout, "print: %*%*%*")
  T.match(r.stderr, "log: %*%*%* %*%*%*")
  T.match(r.stdout, "capture raw", "captured data is not altered")
end)

T.test("a grandchild holding the pipes does not keep run waiting", function()
  local r = proc.run{ "sh", "-c", "sleep 2 & echo started" }
  T.eq(r.ok, true); T.eq(r.stdout, "started\n")
  T.ok(r.duration < 1.9, "returned " .. r.duration .. "s after start")
end)

T.test("50 processes at once", function()
  local fns = {}
  for i = 1, 50 do fns[i] = function() return proc.run{ "sh", "-c", "echo " .. i }.stdout end end
  local out = task.all(fns)
  for i = 1, 50 do T.eq(out[i], i .. "\n") end
end)

T.test("check = true: a failed child raises at the caller's line with command, code and stderr tail", function()
  local err = T.raises(function()
    proc.run{ "sh", "-c", "echo progress; echo 'npm ERR! Test failed' >&2; exit 1", check = true }
  end, "proc.run")
  T.has(err, [[proc.run: "sh -c 'echo progress; echo '\''npm ERR! Test failed'\'' >&2; exit 1'" exited with code 1: npm ERR! Test failed]])
  T.match(err, "^[^\n]*test_proc%.lua:%d+: proc%.run: ", "at the caller's line")
  T.no_match(err, "\n", "a one-line stderr is not repeated")
  T.match(T.raises(function() proc.run{ "false", check = true } end), "proc%.run: 'false' exited with code 1$",
    "no output: no tail")
  T.match(T.raises(function() proc.run{ shell = "exit 4", check = true } end), "proc%.run: 'exit 4' exited with code 4$")
  -- arguments quoted as a shell would need them
  T.has(T.raises(function() proc.run{ "sh", "-c", "exit 5", "a b", "", "it's", "--x=1,2", check = true } end),
    [[proc.run: "sh -c 'exit 5' 'a b' '' 'it'\''s' --x=1,2" exited with code 5]])
  -- the first line carries stderr's last line, the next lines its tail (20 lines at most)
  local long = T.raises(function() proc.run{ "sh", "-c", "seq 1 50 >&2; exit 2", check = true } end)
  local first, rest = long:match("^([^\n]*)\n(.*)$")
  T.match(first, "exited with code 2: 50$")
  local expect = {}
  for i = 31, 50 do expect[#expect + 1] = tostring(i) end
  T.eq(rest, table.concat(expect, "\n"), "the last 20 lines of stderr")
  local huge = T.raises(function()
    proc.run{ "sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 3", check = true }
  end)
  T.ok(#huge < 2600, "a tail of about 2 KB, got " .. #huge .. " bytes")
  -- stdout's tail when stderr is empty (eslint and tsc report there)
  T.match(T.raises(function() proc.run{ "sh", "-c", "echo 'src/a.ts(3,1): error TS2304'; exit 2", check = true } end),
    "exited with code 2: src/a%.ts%(3,1%): error TS2304$")
end)

T.test("check = true: signals, timeouts, secrets; success and check = false return the result", function()
  T.match(T.raises(function() proc.run{ "sh", "-c", "kill -KILL $$", check = true } end),
    "proc%.run: \"sh %-c 'kill %-KILL %$%$'\" was killed by SIGKILL %(code 137%)$")
  T.match(T.raises(function() proc.run{ "sleep", "30", timeout = 0.1, check = true } end),
    "proc%.run: 'sleep 30' timed out after 0%.1s %(code 124%)$")
  local secret = log.mask("hunter2-deploy-key")
  local masked = T.raises(function()
    proc.run{ "sh", "-c", "echo \"denied for $1\" >&2; exit 1", "sh", secret, check = true }
  end)
  T.no_match(masked, "hunter2", "the secret is masked in the command and the tail")
  T.has(masked, [[' sh ***" exited with code 1: denied for ***]])
  T.raises(function() proc.run{ "no-such-program-xyz", check = true } end, "program 'no-such-program-xyz' not found")
  local r = proc.run{ "sh", "-c", "echo fine", check = true }
  T.eq(r.ok, true); T.eq(r.stdout, "fine\n")
  local failed = proc.run{ "sh", "-c", "exit 3", check = false }
  T.eq(failed.ok, false); T.eq(failed.code, 3)
end)

T.test("quiet = true keeps a child's output off the console, not out of the log file", function()
  local file = os.tmpname()
  local script = ([[
    local proc = require("stagehost.proc")
    local log = require("stagehost.log")
    log.echo_output(true)
    log.bind("build", %q)
    proc.run{ "echo", "loud child line" }
    local r = proc.run{ "echo", "quiet child line", quiet = true }
    io.stdout:write("captured: ", r.stdout)
    proc.spawn{ "echo", "quiet spawned line", quiet = true }:wait()
  ]]):format(file)
  local r = proc.run{ STAGEHOST, "-e", script, timeout = 30 }
  T.eq(r.code, 0, r.stderr)
  T.match(r.stderr, "%[build%] echo%[%d+%]| loud child line\n", "an echoed child is on the console")
  T.no_match(r.stderr, "quiet child line", "the quiet child's line is not on the console")
  T.eq(select(2, r.stdout:gsub("quiet child line", "")), 1, "stdout: only the captured copy")
  T.match(r.stdout, "captured: quiet child line\n", "its output is still captured")
  T.no_match(r.stdout .. r.stderr, "quiet spawned line")
  local logged = assert(fs.read(file))
  os.remove(file)
  T.match(logged, "%[build%] echo%[%d+%]| loud child line\n")
  T.match(logged, "%[build%] echo%[%d+%]| quiet child line\n", "the log file has the quiet child's line")
  T.match(logged, "%[build%] echo%[%d+%]| quiet spawned line\n")
end)

T.test("bad options fail clearly", function()
  T.raises(function() proc.run(42) end, "bad argument #1 to 'proc.run' (table expected, got number)")
  T.raises(function() proc.run{} end, "nothing to run")
  T.raises(function() proc.run{ "echo", shell = "echo" } end, "either argv or shell")
  T.raises(function() proc.run{ "echo", env = "x" } end, "'env' must be a table")
  T.raises(function() proc.run{ "echo", env = { X = {} } } end, "env.X must be a string")
  T.raises(function() proc.run{ "echo", timeout = "soon" } end, "'timeout' must be a number")
  T.raises(function() proc.run{ "echo", { "nested" } } end, "argv[2] must be a string")
  T.raises(function() proc.run{ "echo", on_line = 1 } end, "on_line must be a function")
  T.raises(function() proc.run{ "echo", stdin = 5 } end, "'stdin' must be a string")
  T.raises(function() proc.run{ "echo", check = "yes" } end,
    "bad argument #1 to 'proc.run' (check must be a boolean, got string)")
  T.raises(function() proc.run{ "echo", quiet = 1 } end, "bad argument #1 to 'proc.run' (option 'quiet' must be a boolean, got number)")
  T.raises(function() proc.spawn{ "echo", quiet = "no" } end, "bad argument #1 to 'proc.spawn' (option 'quiet' must be a boolean, got string)")
end)

T.run()
