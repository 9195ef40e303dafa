-- Child processes. proc.run waits for the child and returns its result; proc.spawn returns a
-- handle (wait, read_line, write, close_stdin, kill, pid). Each child leads its own process
-- group; a timeout or a cancel sends SIGTERM to the group, then SIGKILL after `grace` seconds.
local core = require("stagehost.core.proc")
local core_log = require("stagehost.core.log")
local errors = require("stagehost.errors")

local proc = {}

-- What proc.default_env and proc.observe set (each puts back what was there with the restore()
-- it returns):
--   defaults  the variables every child gets beneath its own `env` (a pipeline's `env = {...}`
--             while it runs)
--   observer  who is told of each child started and of each one proc.run has seen end (a
--             pipeline run, which records a stage's process groups so that a resume after kill -9
--             can stop them)
local hooks = {}

-- fname(value | nil) -> restore(): sets hooks[key] to value (of type want), passed through
-- normalise when given; restore() puts back the previous one.
local function hook_setter(fname, key, want, normalise)
  return function(value)
    if value ~= nil and type(value) ~= want then
      errors.argument(1, fname, "%s expected, got %s", want, type(value))
    end
    local before = hooks[key]
    if normalise then value = normalise(value) end
    hooks[key] = value
    return function() hooks[key] = before end
  end
end

-- proc.default_env(vars) -> restore(): set the variables every child gets (under the child's
-- own env); restore() puts back what was there before.
proc.default_env = hook_setter("proc.default_env", "defaults", "table", function(vars)
  return vars and next(vars) ~= nil and vars or nil
end)

-- The options with the defaults under their env; the caller's table is left as it was.
local function with_defaults(opts)
  local defaults = hooks.defaults
  if not defaults then return opts end
  local copy, env = {}, {}
  for k, v in pairs(opts) do copy[k] = v end
  for k, v in pairs(defaults) do env[k] = v end
  if type(opts.env) == "table" then for k, v in pairs(opts.env) do env[k] = v end
  elseif opts.env ~= nil then return opts end -- a wrong type: let spawn say so
  copy.env = env
  return copy
end

-- proc.observe(fn | nil) -> restore(): fn("start", pid) after each child starts (its pid leads
-- its group), fn("end", pid) once proc.run has waited for it; restore() puts back the previous.
proc.observe = hook_setter("proc.observe", "observer", "function")

-- Start the child, or return the message of why not; callers raise it at their caller's line.
local function start(fname, opts, lines)
  if type(opts) ~= "table" then
    return nil, errors.argument_message(1, fname, "table expected, got %s", type(opts))
  end
  local ok, p = pcall(core.spawn, with_defaults(opts), fname, lines)
  if not ok then return nil, p end
  if hooks.observer then
    local seen, err = pcall(hooks.observer, "start", p.pid)
    if not seen then -- the child must not run unrecorded
      p:kill("KILL")
      pcall(p.wait, p)
      return nil, err
    end
  end
  return p
end

-- The command as a shell would read it: arguments joined, each quoted when it needs to be.
local function shell_words(opts)
  if opts.shell then return tostring(opts.shell) end
  local words = {}
  for i = 1, #opts do
    local a = tostring(opts[i])
    if a == "" or a:find("[^%w%-_./=:,+@%%^]") then a = "'" .. a:gsub("'", [['\'']]) .. "'" end
    words[i] = a
  end
  return table.concat(words, " ")
end

-- The last lines of a stream's captured tail: at most `lines` lines and `bytes` bytes.
local function tail(s, lines, bytes)
  local e = #s
  while e > 0 and s:find("^%s", e) do e = e - 1 end -- not gsub("%s+$"): quadratic on blank runs
  s = s:sub(math.max(1, e - bytes + 1), e)
  if e > bytes then
    s = s:match("\n(.*)$") or s -- from a line's start, when there is one
  end
  local starts = {}
  for at in s:gmatch("()[^\n]*") do starts[#starts + 1] = at end
  if #starts > lines then s = s:sub(starts[#starts - lines + 1]) end
  return s
end

local CHECK_TAIL_LINES, CHECK_TAIL_BYTES, CHECK_COMMAND_BYTES = 20, 2048, 300

-- check = true: why the child failed, on the first line (the command, how it ended, the last
-- line of its stderr -- of its stdout when stderr is empty), then the tail of that output.
-- Masked before anything is cut, so no cut can leave a piece of a secret unmasked.
local function failure_message(opts, r)
  local masked = core_log.masked
  local command = masked(shell_words(opts))
  if #command > CHECK_COMMAND_BYTES then command = command:sub(1, CHECK_COMMAND_BYTES) .. "..." end
  local how
  if r.timed_out then
    how = ("timed out after %gs (code %d)"):format(opts.timeout, r.code)
  elseif r.signal then
    how = ("was killed by %s (code %d)"):format(r.signal, r.code)
  else
    how = ("exited with code %d"):format(r.code)
  end
  local quote = command:find("'", 1, true) and '"' or "'"
  local msg = ("proc.run: %s%s%s %s"):format(quote, command, quote, how)
  local out = tail(masked(r.stderr or ""), CHECK_TAIL_LINES, CHECK_TAIL_BYTES)
  if out == "" then out = tail(masked(r.stdout or ""), CHECK_TAIL_LINES, CHECK_TAIL_BYTES) end
  if out ~= "" then
    local last = out:match("([^\n]*)$")
    msg = msg .. ": " .. last
    if last ~= out then msg = msg .. "\n" .. out end
  end
  return msg
end

-- proc.run{argv..., cwd=, env=, stdin=, timeout=, grace=, on_line=fn(stream, line), shell=,
--          stdout=PATH, stderr=PATH, max_output=, name=, check=, quiet=}
-- -> {ok, code, signal, stdout, stderr, duration, timed_out, pid}
-- check = true raises, at the caller's line, when the child does not exit with 0.
function proc.run(opts)
  local on_line = type(opts) == "table" and opts.on_line or nil
  if on_line ~= nil and type(on_line) ~= "function" then
    errors.argument(1, "proc.run", "on_line must be a function, got %s", type(on_line))
  end
  local check = type(opts) == "table" and opts.check or nil
  if check ~= nil and type(check) ~= "boolean" then
    errors.argument(1, "proc.run", "check must be a boolean, got %s", type(check))
  end
  local p <close>, err = start("proc.run", opts, on_line ~= nil)
  if not p then error(err, 2) end
  if on_line then
    for stream, line in p.read_line, p do on_line(stream, line) end
  end
  local r = p:wait()
  if hooks.observer then hooks.observer("end", r.pid) end
  if check and not r.ok then error(failure_message(opts, r), 2) end
  return r
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
proc.signal_group = core.signal_group

return proc
