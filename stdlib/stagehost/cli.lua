-- The command line, as lua.c is Lua's: host/main.c sets the runtime up and calls
-- cli.main(argv, host); everything after that is here — `stagehost FILE.lua [args]`, `-e CODE`,
-- --version, --help, every command with its options and help, and the one mapping from how the
-- command ended to the exit code:
--   an error object with an integer exit_code  -> its message on one line, that code
--   a cancellation of the main task            -> its reason on one line, 3
--   any other error                            -> the message and a traceback, 1
-- A signal (128+N), tasks stuck on each other and failed tasks nobody joined stay with the host.
-- Loaded when first needed, as the commands are: `stagehost -e ''` starts in about lua(1)'s time.
local function errors() return require("stagehost.errors") end
local cli = {}

-- The commands, their options and the help: loaded when one is asked for.
local function commands() return require("stagehost.cli.commands") end
-- cli.run_pipeline, cli.load, cli.commands, ... are the commands module's
setmetatable(cli, { __index = function(_, key) return commands()[key] end })

-- The stdlib's entries lead package.path (host/main.c puts them there); a script's directory
-- goes right after them, so a script or pipeline can keep helper modules beside itself.
local LIB = debug.getinfo(1, "S").source:match("^@(.*)/stagehost/cli%.lua$")

function cli.add_script_dir(path)
  local dir = path and path ~= "-" and path:match("^(.*)/[^/]*$")
  if not dir then return end
  local entry = (dir == "" and "" or dir) .. "/?.lua;"
  if package.path:find(entry, 1, true) then return end
  local lib = LIB and (LIB .. "/?.lua;" .. LIB .. "/?/init.lua;")
  if lib and package.path:sub(1, #lib) == lib then
    package.path = lib .. entry .. package.path:sub(#lib + 1)
  else
    package.path = entry .. package.path
  end
end

-- `arg` as lua(1) makes it: the script (or the command) at 0, what precedes it below 0.
local function set_arg(argv, at)
  local t = {}
  for i = 0, argv.n do t[i - at] = argv[i] end
  arg = t
end

-- Calls a loaded chunk through select, so that its traceback calls it "main chunk" as lua(1) does.
local function call_chunk(fn, ...)
  return select(1, fn)(...)
end

local function start(argv, host)
  argv.n = argv.n or #argv
  local codes, target, forced = {}, nil, false
  local i = 1
  while i <= argv.n do
    local a = argv[i]
    if a == "--" then
      target, forced = i + 1, true
      break
    elseif a == "-" or a:sub(1, 1) ~= "-" then
      target = i
      break
    elseif a == "-e" then
      if i == argv.n then commands().usage(nil, "option '-e' needs an argument (Lua code)") end
      codes[#codes + 1] = argv[i + 1]
      i = i + 2
    elseif a == "--version" then
      io.stdout:write(("stagehost %s (%s, libuv %s)\n"):format(host.version, host.lua, host.libuv))
      return 0
    elseif a == "--help" or a == "-h" then
      io.stdout:write(commands().help())
      return 0
    else
      commands().usage(nil, "unknown option '%s'%s", a, commands().did_you_mean(a, { "-e", "--version", "--help" }))
    end
  end
  if target and target > argv.n then target = nil end
  if not target and #codes == 0 then commands().usage(nil, "nothing to run: give a script, a command or -e CODE") end
  -- load everything before running anything
  local chunks = {}
  for k, code in ipairs(codes) do
    local fn, err = load(code, "=(command line)", "t")
    if not fn then errors().exit(2, "%s", err) end
    chunks[k] = fn
  end
  local word = target and argv[target]
  -- a command's name has no '/' or '.': a script path is run without loading the commands
  local cmd = word and not forced and word ~= "-" and not word:find("[/.]") and commands().command(word)
  local script
  if word and not cmd then
    if not forced and word ~= "-" and not word:find("[/.]") then
      local f = io.open(word)
      if not f then commands().usage(nil, "unknown command '%s'%s", word, commands().which_command(word)) end
      f:close()
    end
    local err
    script, err = loadfile(word ~= "-" and word or nil, "t")
    if not script then
      if err:find("^cannot %a+ ") then err = err .. " (check the script's path)" end
      if err:find("binary chunk", 1, true) then err = word .. ": precompiled Lua is not loaded; give the source" end
      errors().exit(2, "%s", err)
    end
    cli.add_script_dir(word)
  end
  set_arg(argv, target or 0)
  for _, fn in ipairs(chunks) do call_chunk(fn) end
  local rest = {}
  for k = (target or argv.n) + 1, argv.n do rest[#rest + 1] = argv[k] end
  if cmd then return commands().run_command(cmd, rest) end
  if not script then return 0 end
  local results = table.pack(call_chunk(script, table.unpack(rest)))
  local pipeline = package.loaded["stagehost.pipeline"]
  if pipeline and pipeline.is(results[1]) then return commands().run_pipeline(results[1], rest) end
  return 0
end

-- ---- from an error to an exit code ----

local Traceback = { __name = "stagehost.cli.traceback" }

-- tostring that never raises: an error object's __tostring may itself fail.
local function message_of(e)
  if type(e) == "string" then return e end
  local ok, s = pcall(tostring, e)
  if ok and type(s) == "string" then return s end
  return ("(error object is a %s value)"):format(type(e))
end

local function is_exit(e)
  return type(e) == "table" and math.type(rawget(e, "exit_code")) == "integer"
end

local function is_cancel(e) return errors().is_cancel(e) end -- a timeout, too

-- A traceback without the frames of this file below the script's: they say nothing about it.
local function trimmed_traceback(msg)
  local lines = {}
  for line in (debug.traceback(msg, 3) .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local last = #lines
  while last > 2 and (lines[last]:find("stagehost/cli%.lua:") or lines[last]:find("stagehost/cli/commands%.lua:") or lines[last]:find("^%s*stagehost:%d+:")
      or lines[last]:find("%[C%]: in function 'xpcall'") or lines[last]:find("%[C%]: in %?")
      or lines[last]:find("%(%.%.%.tail calls%.%.%.%)")) do
    last = last - 1
  end
  if lines[last] == "stack traceback:" then last = #lines end -- nothing but this file: keep it all
  return table.concat(lines, "\n", 1, last)
end

-- xpcall's message handler: runs where the error was raised, so the traceback is still there.
local function on_error(e)
  if is_exit(e) or is_cancel(e) then return e end
  return setmetatable({ text = trimmed_traceback(message_of(e)) }, Traceback)
end

local function report(line)
  io.stdout:flush()
  io.stderr:write(require("stagehost.log").masked(line), "\n")
  io.stderr:flush()
end

-- Raised to the host once reported: a failed main task stops the loop at once, even while a
-- server or a timer would keep it running; the host exits with exit_code.
local Reported = { __name = "stagehost.exit", __tostring = function() return "" end }
local function leave(code)
  error(setmetatable({ exit_code = code }, Reported), 0)
end

-- cli.main(argv, host) -> exit code: argv as lua.c has it (argv[0] the program, n), host the
-- build's facts (version, lua, libuv) and host.signal() (the signal received, if any).
-- Lua's loader takes precompiled chunks, which it does not check: mutated bytecode crashes the
-- host. Every file stagehost loads is text: scripts, pipelines, stages, decisions and modules.
local function text_only_searcher(name)
  local path, err = package.searchpath(name, package.path)
  if not path then return "\n\t" .. err:gsub("^\n\t", "") end
  local chunk, lerr = loadfile(path, "t")
  if not chunk then error(("error loading module '%s' from file '%s':\n\t%s"):format(name, path, lerr), 2) end
  return chunk, path
end

function cli.main(argv, host)
  package.searchers[2] = text_only_searcher
  local ok, e = xpcall(start, on_error, argv, host or {})
  if ok then return math.type(e) == "integer" and e or 0 end
  -- a signal's exit code and report are the host's (128+N and its log line)
  local signalled = host and host.signal and host.signal()
  if is_cancel(e) then
    if not signalled then report("stagehost: " .. message_of(e)) end
    return 3 -- returned, not raised: the cancelled tasks wind down with their grace periods
  end
  if is_exit(e) then
    local text = type(rawget(e, "message")) == "string" and rawget(e, "message") or message_of(e)
    local cmd = rawget(e, "command")
    if text ~= "" and not signalled then report(("stagehost%s: %s"):format(cmd and (" " .. cmd) or "", text)) end
    leave(e.exit_code)
  end
  -- an uncaught error; or one raised outside the handler (out of memory, an error in the handler)
  if not signalled then report("stagehost: " .. (getmetatable(e) == Traceback and e.text or message_of(e))) end
  leave(1)
end

return cli
