-- Pre-deployment checks, the first phase of the staging flow, run on this repository: four
-- checks at once with their output live, then a checklist. Until the pipeline engine lands,
-- this is the README's main job.
--
--   stagehost scripts/checks.lua [--fail-fast]
local task = require "stagehost.task"
local proc = require "stagehost.proc"
local log = require "stagehost.log"

local root = arg[0]:match("^(.*)/scripts/[^/]*$") or "."

-- Each check is one command; edit freely. `shell` runs through /bin/sh -c in the repo root.
local checks = {
  { name = "lint",        shell = "find stdlib scripts tests -name '*.lua' -print0 | xargs -0 -n1 luac5.4 -p && echo 'all Lua files parse'" },
  { name = "typecheck",   shell = "cc -fsyntax-only -std=gnu11 -Wall -Wextra -Werror $(pkg-config --cflags lua5.4 libuv libcjson libcurl libcrypto) -DSTAGEHOST_VERSION='\"0\"' host/*.c bindings/*.c && echo 'C sources compile cleanly'" },
  { name = "unit-tests",  argv = { arg[-1], "tests/lua/test_json.lua" } },
  { name = "secret-scan", shell = "! grep -rnE 'AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|-----BEGIN [A-Z ]*PRIVATE KEY' --include='*.lua' --include='*.c' --include='*.h' --include='*.md' . && echo 'no credentials in the sources'" },
}

local function run_check(check)
  local opts = check.argv and { table.unpack(check.argv) } or { shell = check.shell }
  opts.cwd, opts.name, opts.timeout = root, check.name, 600
  opts.on_line = function(_, line) print(("[%-11s] %s"):format(check.name, line)) end
  return proc.run(opts)
end

log.info(("running %d checks in parallel in %s"):format(#checks, root))
local started = task.now()
local fns = {}
for i, check in ipairs(checks) do fns[i] = function() return run_check(check) end end
local results = task.all(fns)

-- The checklist the approval step will show.
print("\n## Pre-deployment checklist\n")
local failed = 0
for i, check in ipairs(checks) do
  local r = results[i]
  if not r.ok then failed = failed + 1 end
  print(("- [%s] %-11s %s in %.1fs"):format(r.ok and "x" or " ", check.name,
    r.ok and "passed" or ("FAILED (exit " .. r.code .. ")"), r.duration))
end
print(("\n%d of %d checks passed in %.1fs"):format(#checks - failed, #checks, task.now() - started))
if failed > 0 then os.exit(1) end
