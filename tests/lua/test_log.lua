local T = require("harness")
local proc = require("stagehost.proc")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

local function host(code, env)
  return proc.run{ STAGEHOST, "-e", code, env = env, timeout = 30 }
end

T.test("levels, timestamps and the level filter", function()
  local code = "local log = require 'stagehost.log' log.debug('d') log.info('i', 42, true) log.warn('w') log.error('e')"
  local r = host(code)
  T.eq(r.code, 0)
  T.match(r.stderr, "^%d%d:%d%d:%d%d%.%d%d%d INFO  i 42 true\n")
  T.match(r.stderr, "WARN  w\n"); T.match(r.stderr, "ERROR e\n")
  T.no_match(r.stderr, "DEBUG")
  T.eq(r.stdout, "", "logs go to stderr")
  local warn = host(code, { STAGEHOST_LOG_LEVEL = "warn" })
  T.no_match(warn.stderr, "INFO"); T.match(warn.stderr, "WARN  w")
  local dbg = host(code, { STAGEHOST_LOG_LEVEL = "debug" })
  T.match(dbg.stderr, "DEBUG d\n")
  T.match(dbg.stderr, "DEBUG task 1 spawned", "task state changes are logged at debug level")
  T.eq(host(code, { STAGEHOST_LOG_LEVEL = "off" }).stderr, "")
end)

T.test("log.level gets and sets; bad names are refused", function()
  local r = host([[
    local log = require("stagehost.log")
    print(log.level(), log.level('error'), log.level())
    log.warn('hidden')
    print(pcall(log.level, 'loud'))
  ]])
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "^info\terror\terror\n")
  T.match(r.stdout, "false\t.*bad argument #1 to '.*level' %(expected \"debug\"")
  T.eq(r.stderr, "")
end)

T.test("values of TOKEN/SECRET/PASSWORD/KEY variables are masked from the start", function()
  local env = { DB_PASSWORD = "hunter2hunter2", MY_SECRET_THING = "sesame-open", aws_access_key_id = "AKIAEXAMPLE123",
    PLAIN_VALUE = "visible-value" }
  local r = host([[
    local log = require("stagehost.log")
    for _, name in ipairs{ 'DB_PASSWORD', 'MY_SECRET_THING', 'aws_access_key_id', 'PLAIN_VALUE' } do
      log.info(name, os.getenv(name))
      print(name, os.getenv(name))
    end
  ]], env)
  T.eq(r.code, 0, r.stderr)
  for _, secret in ipairs{ "hunter2hunter2", "sesame%-open", "AKIAEXAMPLE123" } do
    T.no_match(r.stdout .. r.stderr, secret)
  end
  T.match(r.stdout, "DB_PASSWORD\t%*%*%*")
  T.match(r.stderr, "aws_access_key_id %*%*%*")
  T.match(r.stdout, "PLAIN_VALUE\tvisible%-value")
end)

T.test("log.mask refuses secrets too short to mask, masked() applies masking", function()
  local r = host([[
    local log = require("stagehost.log")
    print(pcall(log.mask, 'abc'))
    log.mask('longer-secret')
    io.stdout:write(log.masked('a longer-secret b'), '\n')
  ]])
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "false\tlog.mask: a secret shorter than 4 characters")
  T.match(r.stdout, "a %*%*%* b\n")
end)

T.test("log.secrets_in lists the registered secrets in a string, each once, longest first", function()
  -- print would mask them: the child prints each found secret reversed
  local r = host([[
    local log = require("stagehost.log")
    log.mask('abcd-secret')
    log.mask('abcd-secret-longer')
    log.mask('other-secret')
    log.mask('unused-secret')
    local function show(list)
      local out = {}
      for i, s in ipairs(list) do out[i] = s:reverse() end
      print(#list .. ':' .. table.concat(out, ','))
    end
    show(log.secrets_in('x abcd-secret-longer y abcd-secret z other-secret abcd-secret'))
    show(log.secrets_in('only abcd-secret here, twice: abcd-secret'))
    show(log.secrets_in('the env one: ' .. os.getenv('DEPLOY_TOKEN') .. '!'))
    show(log.secrets_in('nothing secret'))
    show(log.secrets_in(''))
    show(log.secrets_in('abcd-secre'))
    print(pcall(log.secrets_in, {}))
  ]], { DEPLOY_TOKEN = "tok-1234567" })
  T.eq(r.code, 0, r.stderr)
  local lines = {}
  for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
  T.eq(lines[1], "3:regnol-terces-dcba,terces-rehto,terces-dcba", "longest first, a secret inside another too")
  T.eq(lines[2], "1:terces-dcba", "each once")
  T.eq(lines[3], "1:7654321-kot", "a secret from the environment")
  T.eq(lines[4], "0:", "no secret")
  T.eq(lines[5], "0:", "empty string")
  T.eq(lines[6], "0:", "a secret cut short is not there")
  T.match(lines[7], "^false\tbad argument #1 to '[%w.]*secrets_in' %(string expected, got table%)")
end)

T.test("log.group frames a section, passes results and errors through", function()
  local code = [[
    local log = require("stagehost.log")
    print(log.group('deploy infra', function(a) log.info('inside') return a, 'b' end, 'a'))
    print(pcall(log.group, 'failing', function() error('broke', 0) end))
  ]]
  local r = host(code)
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "^a\tb\nfalse\tbroke\n")
  T.match(r.stderr, "▶ deploy infra.*inside.*✓ deploy infra %(%d+%.%ds%)")
  T.match(r.stderr, "✗ failing failed after")
  local gha = host(code, { GITHUB_ACTIONS = "true" })
  T.match(gha.stdout, "^::group::deploy infra\n::endgroup::\na\tb\n::group::failing\n::endgroup::\n")
end)

T.test("print under a log context goes through the log: its file, and the console with the prefix", function()
  local file = os.tmpname()
  local r = host(([[
    local log = require("stagehost.log")
    local task = require("stagehost.task")
    log.echo_output(true)
    print('before any context')
    local secret = log.mask('print-secret-value')
    task.spawn(function()
      log.bind('deploy', %q)
      print('first line', 42)
      print('second line with ' .. secret)
    end):join()
    print('after, in the main task')
  ]]):format(file))
  T.eq(r.code, 0, r.stderr)
  local logged = assert(io.open(file)):read("a")
  os.remove(file)
  T.match(logged, "^%d%d:%d%d:%d%d%.%d%d%d %[deploy%] first line\t42\n"
    .. "%d%d:%d%d:%d%d%.%d%d%d %[deploy%] second line with %*%*%*\n$", "the context's file has both lines")
  local console = r.stdout .. r.stderr
  for _, line in ipairs{ "first line\t42", "second line with %*%*%*" } do
    T.eq(select(2, console:gsub(line, "")), 1, "once on the console: " .. line)
    T.match(r.stderr, "%d %[deploy%] " .. line .. "\n", "with the prefix: " .. line)
  end
  T.no_match(console, "print%-secret", "masked")
  T.eq(r.stdout, "before any context\nafter, in the main task\n", "without a context print is plain stdout")
  -- output echo off (a plain script): the lines go to the file only, as a child's would
  local quiet_file = os.tmpname()
  local q = host(([[
    local log = require("stagehost.log")
    log.bind('build', %q)
    print('only in the file')
  ]]):format(quiet_file))
  T.eq(q.code, 0, q.stderr)
  T.no_match(q.stdout .. q.stderr, "only in the file")
  T.match(assert(io.open(quiet_file)):read("a"), "%[build%] only in the file\n")
  os.remove(quiet_file)
end)

T.test("log.context_console(false): lines under a context with a file stay off the console only", function()
  local file = os.tmpname()
  local r = host(([[
    local log = require("stagehost.log")
    local task = require("stagehost.task")
    local proc = require("stagehost.proc")
    log.echo_output(true)
    print('was', log.context_console(false), log.context_console(false))
    task.spawn(function()
      log.bind('tests', %q)
      log.info('stage info line')
      log.error('stage error line')
      print('stage print line')
      proc.run{ 'echo', 'stage child line' }
      task.spawn(function() log.info('sub-task line') end):join()
    end):join()
    task.spawn(function()
      log.bind('no-file')
      log.info('context without a file')
    end):join()
    log.info('run-level line')
    proc.run{ 'echo', 'run-level child line' }
    log.context_console(true)
    task.spawn(function()
      log.bind('tests', %q)
      log.info('console again')
    end):join()
  ]]):format(file, file))
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "^was\ttrue\tfalse\n", "returns the previous setting")
  for _, line in ipairs{ "stage info line", "stage error line", "stage print line", "stage child line", "sub%-task line" } do
    T.no_match(r.stdout .. r.stderr, line, "off the console")
  end
  T.match(r.stderr, "INFO  run%-level line\n", "a line without a context prints")
  T.match(r.stderr, "echo%[%d+%]| run%-level child line\n")
  T.match(r.stderr, "INFO  %[no%-file%] context without a file\n", "a context without a file has nowhere else to go")
  T.match(r.stderr, "INFO  %[tests%] console again\n", "switched back on")
  local logged = assert(io.open(file)):read("a")
  os.remove(file)
  for _, line in ipairs{ "INFO  %[tests%] stage info line", "ERROR %[tests%] stage error line", "%[tests%] stage print line",
    "%[tests%] echo%[%d+%]| stage child line", "INFO  %[tests%] sub%-task line", "console again" } do
    T.match(logged, line, "in the file")
  end
  local bad = host("print(pcall(require('stagehost.log').context_console, 'no'))")
  T.match(bad.stdout, "^false\t.*bad argument #1 to '[%w.]*context_console' %(boolean expected, got string%)")
end)

T.run()
