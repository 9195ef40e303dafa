-- The GitHub emulator's fidelity, judged by the real @octokit/rest (tests/node/octokit.mjs):
-- releases, an asset upload at the upload_url, issues paginated over four pages, comments,
-- statuses and deployments, and the refusals GitHub answers (401 for a wrong or missing token,
-- 404 for an unknown repository, 422 for a status on a branch name). Node and its packages
-- come from .ci/install-deps; without them
-- this test fails rather than skips, since a skipped fidelity check proves nothing.
local T = require("harness")
local sandbox = require("stagehost.sandbox")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")

local source_dir = os.getenv("STAGEHOST_SOURCE_DIR")
  or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]*$") or "."
local node_dir = source_dir .. "/tests/node"

T.test("@octokit/rest runs releases, issues, statuses and deployments against the sandbox, and is refused as by GitHub", function()
  local which = proc.run{ "/bin/sh", "-c", "command -v node" }
  T.ok(which.ok, "node is not installed: run .ci/install-deps")
  T.ok(fs.exists(node_dir .. "/node_modules/@octokit/rest/package.json"),
    "tests/node/node_modules is missing: run .ci/install-deps (it runs npm ci --prefix tests/node)")
  -- the sandbox has the one repository the script uses and accepts its one token
  local sb = sandbox.start{ github = { repos = { "acme/octo-widgets" }, tokens = { "ghp_octokitSandboxToken0123456789" } } }
  local ok, r = pcall(proc.run, { "node", node_dir .. "/octokit.mjs", sb.github_url, sb.github_token, cwd = node_dir,
    timeout = 120 })
  local issues = sb.state.github.repos["acme/octo-widgets"]
  sb:close()
  if not ok then error(r, 0) end
  T.eq(r.code, 0, "octokit.mjs: " .. r.stderr .. r.stdout)
  T.match(r.stdout, "octokit ok\n$")
  -- what octokit did reached the emulated world, not some other server
  T.eq(#issues.issues, 35)
  T.eq(#issues.releases, 1)
  T.eq(#issues.releases[1].assets, 1)
  T.eq(sb.state.github.repos["acme/no-such-repo"], nil, "the refused calls made no repository")
  T.eq(sb.state.github.assets[issues.releases[1].assets[1].id], "sha256  stagehost-3.1.0.tar.gz\n")
end, { timeout = 150 })

T.run()
