-- Child processes. proc.run waits for the child and returns its result; proc.spawn returns a
-- handle (wait, read_line, write, close_stdin, kill, pid). Each child leads its own process
-- group; a timeout or a cancel sends SIGTERM to the group, then SIGKILL after `grace` seconds.
local core = require "stagehost.core.proc"

local proc = {}

-- Start the child, or return the message of why not; callers raise it at their caller's line.
local function start(fname, opts, lines)
  if type(opts) ~= "table" then
    return nil, ("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(opts))
  end
  local ok, p = pcall(core.spawn, opts, fname, lines)
  if not ok then return nil, p end
  return p
end

-- proc.run{argv..., cwd=, env=, stdin=, timeout=, grace=, on_line=fn(stream, line), shell=,
--          stdout=PATH, stderr=PATH, max_output=, name=}
-- -> {ok, code, signal, stdout, stderr, duration, timed_out, pid}
function proc.run(opts)
  local on_line = type(opts) == "table" and opts.on_line or nil
  if on_line ~= nil and type(on_line) ~= "function" then
    error(("bad argument #1 to 'proc.run' (on_line must be a function, got %s)"):format(type(on_line)), 2)
  end
  local p <close>, err = start("proc.run", opts, on_line ~= nil)
  if not p then error(err, 2) end
  if on_line then
    for stream, line in p.read_line, p do on_line(stream, line) end
  end
  return p:wait()
end

-- proc.spawn{...same options, stdin = true for a pipe to write to, lines = true for
-- read_line} -> handle
function proc.spawn(opts)
  local p, err = start("proc.spawn", opts, type(opts) == "table" and opts.lines or false)
  if not p then error(err, 2) end
  return p
end

proc.executable = core.executable
proc.stop_leftovers = core.stop_leftovers

return proc
