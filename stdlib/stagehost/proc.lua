-- Child processes. proc.run waits for the child and returns its result; proc.spawn returns a
-- handle (wait, read_line, write, close_stdin, kill, pid). Each child leads its own process
-- group; a timeout or a cancel sends SIGTERM to the group, then SIGKILL after `grace` seconds.
local core = require "stagehost.core.proc"

local proc = {}

local function argerror(fname, msg)
  error(("bad argument #1 to '%s' (%s)"):format(fname, msg), 3)
end

local function spawn(fname, opts, lines)
  if type(opts) ~= "table" then argerror(fname, "table expected, got " .. type(opts)) end
  local ok, p = pcall(core.spawn, opts, fname, lines)
  if not ok then error(p, 3) end -- blame the caller's line, not this file
  return p
end

-- proc.run{argv..., cwd=, env=, stdin=, timeout=, grace=, on_line=fn(stream, line), shell=,
--          stdout=PATH, stderr=PATH, max_output=, name=}
-- -> {ok, code, signal, stdout, stderr, duration, timed_out, pid}
function proc.run(opts)
  local on_line = type(opts) == "table" and opts.on_line or nil
  if on_line ~= nil and type(on_line) ~= "function" then
    argerror("proc.run", "on_line must be a function, got " .. type(on_line))
  end
  local p <close> = spawn("proc.run", opts, on_line ~= nil)
  if on_line then
    for stream, line in p.read_line, p do on_line(stream, line) end
  end
  return p:wait()
end

-- proc.spawn{...same options, stdin = true for a pipe you write to} -> handle
function proc.spawn(opts)
  return spawn("proc.spawn", opts, type(opts) == "table" and opts.lines or false)
end

return proc
