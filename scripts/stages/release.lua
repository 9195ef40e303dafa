-- Mark the release ready: release notes from the commits since the previous tag of this
-- environment (with who approved it and what they said), a GitHub prerelease for the rc-*
-- tag carrying the notes and the deployment's artifacts, and the stakeholders notified.
local fs = require("stagehost.fs")
local github = require("stagehost.github")
local notify = require("stagehost.notify")
local proc = require("stagehost.proc")
local App = require("lib.app")
local deploy = require("lib.deploy")

-- The artifacts that go with the release: {stage, name}
local ASSETS = {
  { "pre-deployment-checks", "checklist.md" }, { "validate", "change-set.md" },
  { "deploy-infrastructure", "stack-outputs.json" }, { "integration-tests", "integration-tests.xml" },
}

local function git(app, ...)
  local argv = { "git", ... }
  argv.cwd, argv.quiet = app.root, true
  local r = proc.run(argv)
  return r.ok and (r.stdout:gsub("%s+$", "")) or nil
end

-- The newest tag before this one that the environment deploys (rc-* for staging).
local function previous_tag(app, tag)
  local pattern = app.policy.tags and app.policy.tags[1] or "*"
  local from = tag and git(app, "rev-parse", "--verify", "-q", tag .. "^{commit}") and (tag .. "^") or "HEAD"
  return git(app, "describe", "--tags", "--abbrev=0", "--match", pattern, from)
end

local function notes_of(ctx, app)
  local tag = ctx.run.tag
  local since = previous_tag(app, tag)
  local range = since and (since .. ".." .. (tag and git(app, "rev-parse", "--verify", "-q", tag) and tag or "HEAD")) or "HEAD"
  local log = git(app, "log", "--no-merges", "--format=- %s (%h, %an)", "-n", "200", range) or "(no git history here)"
  local lines = { ("# %s"):format(tag or ("%s run %s"):format(app.env, ctx.run.id)), "",
    since and ("Changes since %s:"):format(since) or "Changes:", "", log ~= "" and log or "(no new commits)", "" }
  local gate = ctx.outputs["approval-gate"]
  if gate and gate.votes then
    lines[#lines + 1] = "## Approval"
    lines[#lines + 1] = ""
    for _, v in ipairs(gate.votes) do
      lines[#lines + 1] = ("- %s %s via %s%s"):format(v.who, v.decision, v.via or "?", v.comment and (": " .. v.comment) or "")
    end
    lines[#lines + 1] = ""
  end
  local infra, front = ctx.outputs["deploy-infrastructure"], ctx.outputs["deploy-frontend"]
  lines[#lines + 1] = ("Deployed to %s: API %s, site %s."):format(app.env, tostring(infra.api_url), tostring(front.url))
  return table.concat(lines, "\n") .. "\n", since
end

return function(ctx)
  local app = App.of(ctx)
  local notes, since = notes_of(ctx, app)
  local notes_path = ctx:artifact("release-notes.md", notes)
  local record = deploy.record_release(ctx, app)

  local release
  if ctx.run.tag and (os.getenv("GITHUB_TOKEN") or ctx.run.sandbox) then
    local gh = github.client{}
    release = gh:get_release_by_tag(ctx.run.tag)
    local fields = { name = ("%s (%s)"):format(ctx.run.tag, app.env), body = notes, prerelease = app.env ~= "production" }
    if release then
      release = gh:update_release(release.id, fields)
    else
      fields.tag_name = ctx.run.tag
      release = gh:create_release(fields)
    end
    local files = { { name = "release-notes.md", path = notes_path } }
    for _, a in ipairs(ASSETS) do
      local path = ("%s/artifacts/%s/%s"):format(ctx.dir, a[1], a[2])
      if fs.exists(path) then files[#files + 1] = { name = a[2], path = path } end
    end
    -- a release made by an earlier run of this tag has these assets already: replace them
    local old = {}
    for _, asset in ipairs(release.assets or {}) do old[asset.name] = asset.id end
    for _, f in ipairs(files) do
      if old[f.name] then gh:request("DELETE", ("/repos/%s/releases/assets/%s"):format(gh.repo, old[f.name])) end
      gh:upload_release_asset(release, f)
    end
    ctx.log.info(("GitHub %s %s: %s (%d assets)"):format(fields.prerelease and "prerelease" or "release",
      ctx.run.tag, tostring(release.html_url), #files))
  else
    ctx.log.info("no GitHub release: the run has no tag or no GITHUB_TOKEN (the notes are an artifact)")
  end

  notify.send{ event = "release.ready", status = "success",
    title = ("%s is ready for %s"):format(ctx.run.tag or ctx.run.id, app.env == "staging" and "production" or "use"),
    text = notes, fields = { { name = "Release", value = release and tostring(release.html_url) or "(notes only)" } } }
  return { ready = true, notes = notes, previous_tag = since, release_url = release and release.html_url,
    release = record }
end
