local T = require "harness"
local proc = require "stagehost.proc"

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
    local log = require 'stagehost.log'
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
    local log = require 'stagehost.log'
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
    local log = require 'stagehost.log'
    print(pcall(log.mask, 'abc'))
    log.mask('longer-secret')
    io.stdout:write(log.masked('a longer-secret b'), '\n')
  ]])
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "false\tlog.mask: a secret shorter than 4 characters")
  T.match(r.stdout, "a %*%*%* b\n")
end)

T.test("log.group frames a section, passes results and errors through", function()
  local code = [[
    local log = require 'stagehost.log'
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

T.run()
