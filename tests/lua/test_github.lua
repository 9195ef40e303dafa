-- stagehost.github against the sandbox's GitHub emulator: every call over real HTTP on
-- loopback, the emulator's faults standing in for GitHub's rate limits and failures.
local T = require("harness")
local task = require("stagehost.task")
local github = require("stagehost.github")
local sandbox = require("stagehost.sandbox")
local http = require("stagehost.http")
local json = require("stagehost.json")
local log = require("stagehost.log")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")

local TOKEN = "sandboxtoken0stagehost0123456789abcdef"
local REPO = "acme/widgets"

-- A sandbox that has REPO and accepts TOKEN (and nothing else), and a client on it for one
-- test, closed whatever the test does.
local function with_github(fn, client_opts)
  return function()
    local sb = sandbox.start{ github = { repos = { REPO }, tokens = { TOKEN } } }
    local opts = { token = TOKEN, repo = REPO, api_url = sb.github_url, backoff = 0.05 }
    for k, v in pairs(client_opts or {}) do opts[k] = v end
    local gh = github.client(opts)
    local ok, err = xpcall(fn, debug.traceback, sb, gh)
    sb:close()
    if not ok then error(err, 0) end
  end
end

local function seen(sb, action)
  local n = 0
  for _, r in ipairs(sb.requests) do
    if r.service == "github" and r.action == action then n = n + 1 end
  end
  return n
end

-- pcall that returns the error object itself
local function caught(fn, ...)
  local ok, err = pcall(fn, ...)
  T.eq(ok, false, "the call should have raised")
  return err
end

T.test("list_issues follows the Link header across three pages", with_github(function(sb, gh)
  local issues = {}
  for i = 1, 250 do issues[i] = { title = "flaky test #" .. i } end
  for i = 1, 5 do issues[#issues + 1] = { title = "fixed #" .. i, state = "closed" } end
  sb.state.github.repos[REPO] = { issues = issues }
  local open = gh:list_issues()
  T.eq(#open, 250)
  T.eq(seen(sb, "GET /repos/{owner}/{repo}/issues"), 3, "one request per page of 100")
  local numbers = {}
  for i, issue in ipairs(open) do
    T.eq(issue.state, "open")
    T.ok(not numbers[issue.number], "issue " .. issue.number .. " listed twice")
    numbers[issue.number] = true
    if i > 1 then T.ok(issue.number < open[i - 1].number, "newest first") end
  end
  T.eq(#gh:list_issues{ state = "all" }, 255)
  local closed = gh:paginate("/repos/" .. REPO .. "/issues", { state = "closed", per_page = 2 })
  T.eq(#closed, 5)
  T.eq(closed[1].title, "fixed #5")
end))

T.test("the emulator's Link and rate-limit headers are GitHub's", with_github(function(sb)
  local issues = {}
  for i = 1, 7 do issues[i] = { title = "t" .. i } end
  sb.state.github.repos[REPO] = { issues = issues }
  local r = http.request{ url = sb.github_url .. "/repos/" .. REPO .. "/issues?per_page=3&page=2",
    headers = { Authorization = "Bearer " .. TOKEN } }
  T.eq(r.status, 200)
  T.eq(#json.decode(r.body), 3)
  local base = sb.github_url .. "/repos/" .. REPO .. "/issues?"
  T.has(r.headers.link, "<" .. base .. "page=3&per_page=3>; rel=\"next\"")
  T.has(r.headers.link, "<" .. base .. "page=3&per_page=3>; rel=\"last\"")
  T.has(r.headers.link, "<" .. base .. "page=1&per_page=3>; rel=\"prev\"")
  T.has(r.headers.link, "<" .. base .. "page=1&per_page=3>; rel=\"first\"")
  T.eq(r.headers["x-ratelimit-limit"], "5000")
  T.match(r.headers["x-ratelimit-remaining"], "^%d+$")
  T.ok(tonumber(r.headers["x-ratelimit-reset"]) > os.time(), "the reset is ahead")
  local last = http.request{ url = base .. "per_page=3&page=3", headers = { Authorization = "token " .. TOKEN } }
  T.eq(#json.decode(last.body), 1)
  T.no_match(last.headers.link, "rel=\"next\"")
  local anonymous = http.request{ url = sb.github_url .. "/repos/" .. REPO }
  T.eq(anonymous.status, 401)
  T.eq(json.decode(anonymous.body).message, "Requires authentication")
  T.ok(anonymous.headers["x-ratelimit-limit"], "rate-limit headers on a 401 too")
end))

-- The emulator knows its repositories and tokens, as GitHub does: nothing is made on first use.
T.test("a wrong token is 401 Bad credentials, an unknown repository 404, a status on a branch name 422",
  with_github(function(sb, gh)
    local wrong = github.client{ token = "ghp_notAtokenTheSandboxGave000000000", repo = REPO, api_url = sb.github_url }
    local err = caught(wrong.get_repo, wrong)
    T.eq(err.status, 401); T.eq(err.message, "Bad credentials")
    T.eq(tostring(err), "github: GET /repos/acme/widgets: 401 Bad credentials")
    local raw = http.request{ url = sb.github_url .. "/repos/" .. REPO, headers = { Authorization = "token wrong" } }
    T.eq(raw.status, 401)
    local body = json.decode(raw.body)
    T.eq(body.message, "Bad credentials"); T.match(body.documentation_url, "^https://docs%.github%.com/")

    local elsewhere = github.client{ token = TOKEN, repo = "acme/no-such-repo", api_url = sb.github_url }
    err = caught(elsewhere.create_issue, elsewhere, { title = "lost" })
    T.eq(err.status, 404); T.eq(err.message, "Not Found")
    T.eq(sb.state.github.repos["acme/no-such-repo"], nil, "nothing made on first use")
    T.eq(elsewhere:get_release_by_tag("v1"), nil, "nil_on = 404 still reads a missing repository as nothing")

    err = caught(gh.create_status, gh, "main", { state = "success", context = "ci" })
    T.eq(err.status, 422); T.eq(err.message, "No commit found for SHA: main")
    err = caught(gh.create_status, gh, "a1b2c3d", { state = "success", context = "ci" })
    T.eq(err.status, 422, "an abbreviated SHA is not a commit either")
    T.eq(#gh:list_statuses("main"), 0)

    -- a repository added to the world exists from then on; so does one seeded by a test
    sb.state.github.repos["acme/seeded"] = {}
    T.eq(github.client{ token = TOKEN, repo = "acme/seeded", api_url = sb.github_url }:get_repo().full_name, "acme/seeded")
  end))

T.test("sandbox.start's defaults: one repository, one random token; sb:use() configures both", function()
  local sb = sandbox.start{}
  local ok, err = pcall(function()
    T.eq(sb.github_repo, "stagehost/sandbox")
    T.match(sb.github_token, "^ghs_sandbox%x+$")
    local other = sandbox.start{}
    local different = other.github_token ~= sb.github_token
    other:close()
    T.ok(different, "each sandbox has its own token")
    local restore = sb:use{ repo = "acme/from-use" }
    local used = pcall(function()
      local gh = github.client{}
      T.eq(gh:get_repo().full_name, "acme/from-use", "the repository sb:use() configures exists")
      T.eq(gh:create_issue{ title = "hello" }.number, 1)
    end)
    restore()
    T.ok(used, "the configured client works")
    local guess = github.client{ token = "guess", repo = "stagehost/sandbox", api_url = sb.github_url }
    T.eq(caught(guess.get_repo, guess).status, 401)
    T.raises(function() sandbox.start{ github = { repos = { "not a repo" } } } end, "\"not a repo\" is not a repository name (owner/name)")
    T.raises(function() sandbox.start{ github = { tokens = {} } } end, "github.tokens must be a list")
  end)
  sb:close()
  if not ok then error(err, 0) end
end)

T.test("a secondary rate limit with Retry-After is waited out", with_github(function(sb, gh)
  sb:fail_next{ service = "github", action = "POST /repos/{owner}/{repo}/issues", status = 403,
    headers = { ["Retry-After"] = "1" }, message = "You have exceeded a secondary rate limit." }
  local started = task.now()
  local issue = gh:create_issue{ title = "after the limit" }
  T.ok(task.now() - started >= 1, "waited " .. (task.now() - started) .. " s")
  T.eq(issue.title, "after the limit")
  T.eq(seen(sb, "POST /repos/{owner}/{repo}/issues"), 2)
  T.eq(#sb.state.github.repos[REPO].issues, 1, "the refused attempt created nothing")
end))

T.test("a primary rate limit waits until X-RateLimit-Reset", with_github(function(sb, gh)
  local reset = os.time() + 1
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 403,
    headers = { ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Reset"] = tostring(reset) },
    message = "API rate limit exceeded for user ID 1." }
  local repo = gh:get_repo()
  T.eq(repo.full_name, REPO)
  T.ok(os.time() >= reset, "retried before the limit reset")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 2)
end))

T.test("a rate limit that resets after max_wait raises at once, saying when", with_github(function(sb, gh)
  local reset = os.time() + 3600
  sb:fail_next{ service = "github", status = 429,
    headers = { ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Reset"] = tostring(reset) },
    message = "API rate limit exceeded" }
  local started = task.now()
  local err = caught(gh.get_repo, gh)
  T.ok(task.now() - started < 1, "no waiting")
  T.eq(err.status, 429)
  T.eq(err.rate_limit_reset, reset)
  T.has(tostring(err), "github: GET /repos/acme/widgets: 429 API rate limit exceeded; it resets at "
    .. os.date("!%Y-%m-%d %H:%M:%S UTC", reset))
  T.has(tostring(err), "more than max_wait = 30 s")
end, { max_wait = 30 }))

T.test("a secondary limit without Retry-After backs off exponentially; a plain 403 is final", with_github(function(sb, gh)
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 403, times = 2,
    message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again." }
  local started = task.now()
  T.eq(gh:get_repo().full_name, REPO)
  T.ok(task.now() - started >= 0.2 + 0.4, "waited " .. (task.now() - started) .. " s: 0.2 then 0.4")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 3)
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 403,
    message = "Resource not accessible by integration" }
  local err = caught(gh.get_repo, gh)
  T.eq(err.status, 403)
  T.eq(tostring(err), "github: GET /repos/acme/widgets: 403 Resource not accessible by integration")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 4, "a permission error is not retried")
end, { secondary_wait = 0.2 }))

T.test("5xx answers are retried with backoff, then raised", with_github(function(sb, gh)
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 502, times = 2,
    message = "Server Error" }
  T.eq(gh:get_repo().name, "widgets")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 3)
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 503, times = 10,
    message = "Service Unavailable" }
  local err = caught(gh.get_repo, gh)
  T.eq(err.status, 503)
  T.eq(err.message, "Service Unavailable")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 3 + 3, "retries = 2: three attempts")
end, { retries = 2 }))

T.test("cut connections and 5xx answers share one budget of attempts; a cut POST is not repeated", function()
  local calls = 0
  -- odd calls: the connection is cut mid-answer; even calls: a 503
  local srv <close> = http.serve{ handler = function(req)
    calls = calls + 1
    if calls % 2 == 0 then return { status = 503, body = '{"message":"Service Unavailable"}' } end
    local s = req:stream{ status = 200, headers = { ["Content-Type"] = "application/json" } }
    s:write('{"partial":')
    error("the connection goes")
  end }
  local gh = github.client{ token = TOKEN, repo = REPO, api_url = ("http://127.0.0.1:%d"):format(srv.port),
    retries = 2, backoff = 0 }
  local err = caught(gh.get_repo, gh)
  T.eq(calls, 3, "three attempts in all (cut, 503, cut), not three per kind of failure")
  T.match(tostring(err), "^github: GET /repos/acme/widgets: GET http://127%.0%.0%.1:%d+/repos/acme/widgets failed: ")
  calls = 0
  err = caught(gh.create_issue, gh, { title = "once" })
  T.eq(calls, 1, "a POST cut after it was sent may have created the issue: not sent again")
end)

T.test("a refused connection is one line naming the call and the URL", function()
  local closed = http.serve{ handler = function() return "" end }
  local port = closed.port
  closed:close()
  local gh = github.client{ token = TOKEN, repo = REPO, api_url = ("http://127.0.0.1:%d"):format(port), retries = 0 }
  local err = caught(gh.get_repo, gh)
  T.eq(type(err), "string")
  T.match(err, ("^github: GET /repos/acme/widgets: GET http://127%%.0%%.0%%.1:%d/repos/acme/widgets failed: [^\n]*[Cc]ouldn't connect"):format(port))
  T.no_match(err, "\n")
end)

T.test("releases: create, get by tag, update, generate notes, upload assets", with_github(function(sb, gh)
  T.eq(gh:get_release_by_tag("v1.0.0"), nil)
  local first = gh:create_release{ tag_name = "v0.9.0", name = "0.9", body = "the first" }
  T.eq(first.tag_name, "v0.9.0")
  local release = gh:create_release{ tag_name = "v1.0.0", name = "1.0", body = "notes", draft = false,
    prerelease = false, target_commitish = "main" }
  T.ok(math.type(release.id) == "integer", "an integer id")
  T.ok(release.id ~= first.id, "ids differ")
  T.eq(release.prerelease, false)
  T.match(release.created_at, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$")
  T.has(release.upload_url, sb.github_url .. "/uploads/repos/acme/widgets/releases/" .. release.id .. "/assets{?name,label}")

  local by_tag = gh:get_release_by_tag("v1.0.0")
  T.eq(by_tag.id, release.id)
  T.eq(by_tag.body, "notes")

  local updated = gh:update_release(release.id, { prerelease = true, name = "1.0 RC" })
  T.eq(updated.prerelease, true)
  T.eq(updated.name, "1.0 RC")
  T.eq(gh:get_release_by_tag("v1.0.0").prerelease, true)

  local notes = gh:generate_release_notes{ tag_name = "v1.0.0", previous_tag_name = "v0.9.0" }
  T.eq(notes.name, "v1.0.0")
  T.has(notes.body, "compare/v0.9.0...v1.0.0")

  local from_content = gh:upload_release_asset(release, { name = "checksums.txt", content = "abc  stagehost\n",
    content_type = "text/plain" })
  T.eq(from_content.name, "checksums.txt")
  T.eq(from_content.size, 15)
  T.eq(from_content.content_type, "text/plain")
  T.eq(sb.state.github.assets[from_content.id], "abc  stagehost\n")

  local dir = T.tempdir()
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local blob = table.concat(bytes):rep(64)
  assert(fs.write(dir .. "/stagehost-linux.tar.gz", blob))
  local from_file = gh:upload_release_asset(release.id, { path = dir .. "/stagehost-linux.tar.gz", label = "Linux" })
  fs.remove(dir, { recursive = true })
  T.eq(from_file.name, "stagehost-linux.tar.gz")
  T.eq(from_file.label, "Linux")
  T.eq(from_file.content_type, "application/octet-stream")
  T.ok(sb.state.github.assets[from_file.id] == blob, "the file arrived byte for byte")
  T.eq(#gh:get_release_by_tag("v1.0.0").assets, 2)
  T.raises(function() gh:upload_release_asset(release, { path = "/no/such/asset.zip" }) end,
    "cannot read '/no/such/asset.zip'")
end))

T.test("a tag that already has a release: 422 raised as a table", with_github(function(_, gh)
  gh:create_release{ tag_name = "v2.0.0" }
  local err = caught(gh.create_release, gh, { tag_name = "v2.0.0" })
  T.eq(type(err), "table")
  T.eq(err.status, 422)
  T.eq(err.message, "Validation Failed")
  T.eq(err.method, "POST")
  T.eq(err.path, "/repos/acme/widgets/releases")
  T.eq(err.errors[1].code, "already_exists")
  T.eq(err.documentation_url, "https://docs.github.com/rest")
  T.eq(tostring(err), "github: POST /repos/acme/widgets/releases: 422 Validation Failed (Release.tag_name already_exists)")
  T.ok(getmetatable(err) == github.Error, "a github.Error")
end))

T.test("issues: create, comment, list comments, close", with_github(function(sb, gh)
  local issue = gh:create_issue{ title = "Deploy failed on staging", body = "see the log", labels = { "deploy", "bug" } }
  T.eq(issue.number, 1)
  T.eq(issue.state, "open")
  T.eq(issue.labels[2].name, "bug")
  T.eq(issue.user.login, "stagehost-bot")
  local second = gh:create_issue{ title = "second", labels = {} }
  T.eq(second.number, 2)
  T.ok(json.is_array(second.labels), "labels stay a list")
  for i = 1, 3 do
    local c = gh:comment(issue.number, "attempt " .. i)
    T.eq(c.body, "attempt " .. i)
  end
  local comments = gh:list_comments(issue.number)
  T.eq(#comments, 3)
  T.eq(comments[3].body, "attempt 3")
  local closed = gh:close_issue(issue.number)
  T.eq(closed.state, "closed")
  T.eq(closed.state_reason, "completed")
  T.match(closed.closed_at, "Z$")
  local open = gh:list_issues()
  T.eq(#open, 1)
  T.eq(open[1].number, 2)
  T.eq(#gh:list_issues{ state = "closed" }, 1)
  T.eq(#gh:list_issues{ state = "all", labels = "deploy" }, 1)
  T.eq(sb.state.github.repos[REPO].issues[1].comments, 3)
  local err = caught(gh.comment, gh, 99, "nobody")
  T.eq(err.status, 404)
  T.eq(tostring(err), "github: POST /repos/acme/widgets/issues/99/comments: 404 Not Found")
end))

T.test("commit statuses", with_github(function(_, gh)
  local sha = ("a1b2c3d4e5"):rep(4)
  local s = gh:create_status(sha, { state = "pending", context = "stagehost/deploy", description = "deploying",
    target_url = "https://ci.example/run/1" })
  T.eq(s.state, "pending")
  T.eq(s.context, "stagehost/deploy")
  gh:create_status(sha, { state = "success", context = "stagehost/deploy" })
  local statuses = gh:list_statuses(sha)
  T.eq(#statuses, 2)
  T.eq(statuses[1].state, "success", "newest first")
  local err = caught(gh.create_status, gh, sha, { state = "green" })
  T.eq(err.status, 422)
  T.has(tostring(err), "state is not included in the list")
end))

T.test("deployments and their statuses", with_github(function(_, gh)
  local sha = ("0123456789"):rep(4)
  gh:create_status(sha, { state = "failure", context = "lint" })
  -- every context must pass unless told which: GitHub answers 409
  local err = caught(gh.create_deployment, gh, { ref = sha, environment = "staging" })
  T.eq(err.status, 409)
  T.has(tostring(err), "Commit status checks failed")
  local d = gh:create_deployment{ ref = sha, environment = "staging", description = "rc-1", required_contexts = {} }
  T.eq(d.sha, sha)
  T.eq(d.environment, "staging")
  T.eq(d.description, "rc-1")
  local st = gh:create_deployment_status(d.id, { state = "in_progress", log_url = "https://ci.example/log" })
  T.eq(st.state, "in_progress")
  T.eq(st.log_url, "https://ci.example/log")
  gh:create_deployment_status(d.id, { state = "success", environment_url = "https://staging.example" })
  local statuses = gh:list_deployment_statuses(d.id)
  T.eq(#statuses, 2)
  T.eq(statuses[1].environment_url, "https://staging.example")
  local other = gh:create_deployment{ ref = sha, environment = "production", required_contexts = {} }
  T.eq(#gh:list_deployments(), 2)
  local staging = gh:list_deployments{ environment = "staging" }
  T.eq(#staging, 1)
  T.eq(staging[1].id, d.id)
  T.ok(other.id ~= d.id)
  T.eq(caught(gh.create_deployment_status, gh, 424242, { state = "success" }).status, 404)
end))

T.test("generic request and paginate", with_github(function(sb, gh)
  local data, res = gh:request("GET", "/repos/" .. REPO)
  T.eq(res.status, 200)
  T.eq(data.full_name, REPO)
  local issue = gh:request("POST", "repos/" .. REPO .. "/issues", { body = { title = "via request" } })
  T.eq(issue.title, "via request")
  local page = gh:request("GET", "/repos/" .. REPO .. "/issues", { query = { state = "all", per_page = 1 } })
  T.eq(#page, 1)
  T.eq(#gh:paginate("/repos/" .. REPO .. "/issues", { per_page = 1 }), 1)
  T.eq(seen(sb, "GET /repos/{owner}/{repo}/issues"), 2)
end))

T.test("malformed JSON from the server names the method and path", with_github(function(sb, gh)
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 200, body = "{oops" }
  local err = caught(gh.get_repo, gh)
  T.match(tostring(err), "^github: GET /repos/acme/widgets: malformed JSON in the response: at line 1, column %d+")
end))

T.test("the token never appears in an error or a log line", with_github(function(sb, gh)
  T.no_match(log.masked("Authorization: Bearer " .. TOKEN), TOKEN, "masked")
  local texts = {}
  -- a server that echoes the credentials back
  sb:fail_next{ service = "github", status = 400, message = "bad header: Bearer " .. TOKEN }
  texts[#texts + 1] = tostring(caught(gh.get_repo, gh))
  sb.state.github.tokens = { "another-token-entirely" }
  local refused = caught(gh.get_repo, gh)
  T.eq(refused.status, 401)
  T.eq(refused.message, "Bad credentials")
  texts[#texts + 1] = tostring(refused)
  texts[#texts + 1] = tostring(caught(gh.create_release, gh, { tag_name = "x" }))
  local url = sb.github_url
  sb:close()
  local gone = github.client{ token = TOKEN, repo = REPO, api_url = url, retries = 0 }
  texts[#texts + 1] = tostring(caught(gone.get_repo, gone))
  for _, text in ipairs(texts) do
    T.ok(#text > 0)
    T.ok(not text:find(TOKEN, 1, true), "token in: " .. log.masked(text))
  end
  T.has(texts[1], "400 bad header: Bearer ***")
end))

-- A bare server whose answers answer(req) decides, and a client with api_url under /api/v3 on it.
local function with_server(answer, fn)
  return function()
    local srv = http.serve{ port = 0, handler = answer }
    local api = ("http://127.0.0.1:%d/api/v3"):format(srv.port)
    local gh = github.client{ token = TOKEN, repo = REPO, api_url = api, retries = 0 }
    local ok, err = xpcall(fn, debug.traceback, gh, api, srv)
    srv:close()
    if not ok then error(err, 0) end
  end
end

T.test("a 5xx on a POST or PATCH is raised at once; PUT and DELETE are retried", with_github(function(sb, gh)
  sb:fail_next{ service = "github", action = "POST /repos/{owner}/{repo}/issues", status = 502, message = "Server Error" }
  local err = caught(gh.create_issue, gh, { title = "only once" })
  T.eq(err.status, 502)
  T.eq(seen(sb, "POST /repos/{owner}/{repo}/issues"), 1, "GitHub may have created the issue: no second POST")
  local number = gh:create_issue{ title = "to close" }.number
  sb:fail_next{ service = "github", action = "PATCH /repos/{owner}/{repo}/issues/{issue_number}", status = 503 }
  T.eq(caught(gh.close_issue, gh, number).status, 503)
  T.eq(seen(sb, "PATCH /repos/{owner}/{repo}/issues/{issue_number}"), 1)
  -- the emulator has no DELETE route: the retried attempt gets its 404
  local path = "/repos/" .. REPO .. "/labels/stale"
  sb:fail_next{ service = "github", action = "DELETE " .. path, status = 502 }
  T.eq(caught(gh.request, gh, "DELETE", path).status, 404)
  T.eq(seen(sb, "DELETE " .. path), 2, "DELETE is idempotent: retried")
end))

T.test("malformed input gets a 422 and leaves the emulated world usable", with_github(function(sb, gh)
  gh:create_issue{ title = "fine" }
  local function post(path, body)
    local r = http.request{ method = "POST", url = sb.github_url .. "/repos/" .. REPO .. path, body = body,
      headers = { Authorization = "Bearer " .. TOKEN, ["Content-Type"] = "application/json" } }
    return r.status, json.decode(r.body)
  end
  for _, case in ipairs{
    { "/issues", '{"title":"bad","labels":7}', "labels" },
    { "/issues", '{"title":"bad","assignees":[5]}', "assignees" },
    { "/issues", '{"title":"bad","assignees":[{}]}', "assignees" },
    { "/issues", '{"title":"bad","labels":[{}]}', "labels" },
    { "/issues", '{"title":{}}', "title" },
    { "/statuses/" .. ("abc0"):rep(10), '{"state":"success","context":5}', "context" },
    { "/deployments", '{"ref":"abc","required_contexts":[1,"a"]}', "required_contexts" },
    { "/releases/generate-notes", '{"tag_name":"v2","previous_tag_name":{}}', "previous_tag_name" },
  } do
    local status, body = post(case[1], case[2])
    T.eq(status, 422, case[2])
    T.eq(body.message, "Validation Failed", case[2])
    T.eq(body.errors[1].field, case[3], case[2])
  end
  T.eq((post("/issues", "[1,2]")), 400, "a list is not an issue")
  local open = gh:list_issues()
  T.eq(#open, 1, "the refused issues were not listed")
  T.eq(open[1].title, "fine")
  T.eq(#sb.state.github.repos[REPO].issues, 1)
  T.eq(#gh:list_statuses(("abc0"):rep(10)), 0)
  T.eq(gh:create_deployment{ ref = "abc" }.ref, "abc", "no status with a number for a context in the way")
  local number = open[1].number
  local status = post("/issues/" .. number, '{"state":"closed","state_reason":"bogus"}')
  T.eq(status, 404, "no POST route") -- PATCH is the one, through the client:
  local err = caught(gh.request, gh, "PATCH", "/repos/" .. REPO .. "/issues/" .. number,
    { body = { state = "closed", state_reason = "bogus" } })
  T.eq(err.status, 422)
  T.eq(gh:list_issues()[1].state, "open", "a refused update changed nothing")
end))

T.test("a handler that fails answers a JSON 500 with GitHub's headers", with_github(function(sb, gh)
  -- a seeded issue no handler can complete
  sb.state.github.repos[REPO] = { issues = { { title = "broken", labels = 7 } } }
  local r = http.request{ url = sb.github_url .. "/repos/" .. REPO .. "/issues",
    headers = { Authorization = "Bearer " .. TOKEN } }
  T.eq(r.status, 500)
  T.match(r.headers["content-type"], "^application/json")
  T.eq(json.decode(r.body).message, "Internal Server Error")
  T.ok(r.headers["x-ratelimit-limit"], "rate-limit headers on a 500 too")
  sb.state.github.repos[REPO].issues[1].labels = { "fixed" }
  T.eq(gh:list_issues()[1].labels[1].name, "fixed", "the emulator goes on")
end))

T.test("lists must be lists: labels, assignees, required_contexts", with_github(function(sb, gh)
  local where = T.raises(function() gh:create_issue{ title = "t", labels = "bug" } end,
    "bad argument #1 to 'client:create_issue' (labels: a list expected, got string)")
  T.match(tostring(where), "test_github%.lua:%d+:", "the error points at the caller")
  T.raises(function() gh:create_issue{ title = "t", labels = 7 } end, "labels: a list expected, got number")
  T.raises(function() gh:create_issue{ title = "t", assignees = { 5 } } end,
    "bad argument #1 to 'client:create_issue' (assignees[1]: string expected, got number)")
  T.raises(function() gh:create_issue{ title = "t", labels = { name = "bug" } } end, "labels: a list expected")
  T.raises(function() gh:create_deployment{ ref = "main", required_contexts = "ci/build" } end,
    "bad argument #1 to 'client:create_deployment' (required_contexts: a list expected, got string)")
  T.eq(#sb.requests, 0, "nothing was sent")
  local issue = gh:create_issue{ title = "t", labels = { "bug", { name = "ui" } }, assignees = { "octocat" } }
  T.eq(issue.labels[2].name, "ui")
  T.eq(issue.assignees[1].login, "octocat")
end))

T.test("Link headers are read as RFC 8288 has them; relative links resolve", function()
  local link_for, hits
  local srv = http.serve{ port = 0, handler = function(req)
    hits = hits + 1
    local page = tonumber(("&" .. (req.query or "")):match("&page=(%d+)")) or 1
    return { status = 200, headers = { ["Content-Type"] = "application/json", Link = page == 1 and link_for or nil },
      body = "[" .. page .. "]" }
  end }
  local api = ("http://127.0.0.1:%d/api/v3"):format(srv.port)
  local ok, err = pcall(function()
    local gh = github.client{ token = TOKEN, repo = REPO, api_url = api, retries = 0 }
    for _, link in ipairs{
      "<" .. api .. "/x?page=2>; rel=next",
      "<" .. api .. "/x?page=2>; REL=\"Next\"",
      "<" .. api .. "/x?page=2>; rel = \"last next\"",
      "<" .. api .. "/x?page=1>; rel=\"first\", <" .. api .. "/x?page=2>; title=\"a, b; rel=last\"; rel=\"next\"",
      "</api/v3/x?page=2>; rel=\"next\"",
      "<x?page=2>; rel=\"next\"",
      "<?page=2>; rel=\"next\"",
      "<" .. api:gsub("^http", "HTTP") .. "/x?page=2>; rel=\"next\"",
    } do
      link_for, hits = link, 0
      local items = gh:paginate("/x")
      T.eq(#items, 2, link)
      T.eq(items[2], 2, link)
      T.eq(hits, 2, link)
    end
    link_for, hits = "<" .. api .. "/x?page=2>; rel=\"nextish\"", 0
    T.eq(#gh:paginate("/x"), 1, "nextish is not next")
    link_for = "<http://elsewhere.example/x?page=2>; rel=next"
    T.raises(function() gh:paginate("/x") end, "the next page is on another host (http://elsewhere.example)")
  end)
  srv:close()
  if not ok then error(err, 0) end
end)

T.test("a Link header that points back at a fetched page raises", with_server(function(req)
  local self = ("<%s?%s>; rel=\"next\""):format(req.path, req.query)
  return { status = 200, headers = { ["Content-Type"] = "application/json", Link = self }, body = "[1]" }
end, function(gh)
  T.raises(function() gh:paginate("/loop") end,
    "github: GET /loop: the next page, /loop?per_page=100, was fetched already; the Link header loops")
end))

T.test("caller headers replace the defaults whatever their case", function()
  local got
  with_server(function(req)
    got = req.headers
    return { status = 200, headers = { ["Content-Type"] = "application/json" }, body = "{}" }
  end, function(gh)
    gh:request("GET", "/x", { headers = { accept = "application/vnd.github.raw" } })
    T.eq(got.accept, "application/vnd.github.raw", "one Accept, the caller's")
    T.eq(got.authorization, "Bearer " .. TOKEN)
    T.eq(got["x-github-api-version"], "2022-11-28")
    gh:request("GET", "/x", { headers = { AUTHORIZATION = "token other", ["user-agent"] = "mine" } })
    T.eq(got.authorization, "token other", "never two Authorization headers")
    T.eq(got["user-agent"], "mine")
    T.raises(function() gh:request("GET", "/x", { headers = { Accept = {} } }) end, "headers: names and string values")
  end)()
end)

T.test("every string of an error is masked", with_github(function(sb, gh)
  sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 422, body = json.encode{
    message = "Validation Failed", documentation_url = "https://docs.example/" .. TOKEN,
    errors = { { resource = "Issue", field = "title", code = "custom", message = "title has " .. TOKEN },
      "plain " .. TOKEN } } }
  local err = caught(gh.get_repo, gh)
  T.eq(err.errors[1].message, "title has ***")
  T.eq(err.errors[1].field, "title")
  T.eq(err.errors[2], "plain ***")
  T.eq(err.documentation_url, "https://docs.example/***")
  T.eq(tostring(err), "github: GET /repos/acme/widgets: 422 Validation Failed (title has ***; plain ***)")
end))

T.test("ids must be integers; a release fetch that is not a release is one clear error", with_github(function(sb, gh)
  T.raises(function() gh:comment(1.5, "x") end, "bad argument #1 to 'client:comment' (integer expected, got 1.5)")
  T.raises(function() gh:update_release(2 ^ 63, {}) end, "bad argument #1 to 'client:update_release' (integer expected, got")
  T.raises(function() gh:upload_release_asset(0.5, { name = "a", content = "x" }) end,
    "bad argument #1 to 'client:upload_release_asset' (table or integer expected, got 0.5)")
  local issue = gh:create_issue{ title = "floats with integer values do" }
  T.eq(gh:comment(issue.number + 0.0, "ok").body, "ok")
  for _, body in ipairs{ "", "null", "[1]" } do
    sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}/releases/{release_id}", status = 200, body = body }
    local err = caught(gh.upload_release_asset, gh, 5, { name = "a", content = "x" })
    T.has(tostring(err), "github: GET /repos/acme/widgets/releases/5: 200, but the answer is not a release", body)
  end
  T.raises(function() gh:upload_release_asset({ upload_url = "https://evil.example/assets{?name,label}" },
    { name = "a", content = "x" }) end, "upload_url on https://evil.example")
  T.eq(seen(sb, "POST /uploads/repos/{owner}/{repo}/releases/{release_id}/assets"), 0)
end))

T.test("paginate takes absolute URLs on api_url's origin", with_github(function(sb, gh)
  local issues = {}
  for i = 1, 5 do issues[i] = { title = "t" .. i } end
  sb.state.github.repos[REPO] = { issues = issues }
  T.eq(#gh:paginate(sb.github_url .. "/repos/" .. REPO .. "/issues", { per_page = 2 }), 5)
  T.eq(seen(sb, "GET /repos/{owner}/{repo}/issues"), 3)
  local shouting = sb.github_url:gsub("^http://127", "HTTP://127")
  T.eq(#gh:paginate(shouting .. "/repos/" .. REPO .. "/issues?per_page=4"), 5, "scheme case does not matter")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}/issues"), 5, "per_page from the URL is kept")
  T.raises(function() gh:paginate("https://elsewhere.example/repos/" .. REPO .. "/issues") end,
    "bad argument #1 to 'client:paginate' (a path under")
end))

T.test("redirects are followed; the token stays on its origin", function()
  local elsewhere_headers
  local other = http.serve{ port = 0, handler = function(req)
    elsewhere_headers = req.headers
    return { status = 200, headers = { ["Content-Type"] = "application/json" }, body = '{"moved":true}' }
  end }
  local other_url = ("http://127.0.0.1:%d"):format(other.port)
  local ok, err = pcall(with_github(function(sb, gh)
    sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 301,
      headers = { Location = "/github/repos/" .. REPO }, message = "Moved Permanently" }
    T.eq(gh:get_repo().full_name, REPO)
    T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 2)
    sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 302,
      headers = { Location = other_url .. "/download" }, message = "Found" }
    T.eq(gh:get_repo().moved, true)
    T.eq(elsewhere_headers.authorization, nil, "no token for another origin")
    elsewhere_headers = nil
    sb:fail_next{ service = "github", action = "POST /repos/{owner}/{repo}/issues", status = 307,
      headers = { Location = other_url .. "/issues" }, message = "Temporary Redirect" }
    T.eq(caught(gh.create_issue, gh, { title = "x" }).status, 307)
    T.eq(elsewhere_headers, nil, "a POST is not sent to another origin")
    sb:fail_next{ service = "github", action = "GET /repos/{owner}/{repo}", status = 308, times = 10,
      headers = { Location = sb.github_url .. "/repos/" .. REPO }, message = "Permanent Redirect" }
    T.has(tostring(caught(gh.get_repo, gh)), "more than 5 redirects")
    T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 2 + 1 + 6)
  end))
  other:close()
  if not ok then error(err, 0) end
end)

T.test("the emulator enforces an exhausted rate limit until its reset", with_github(function(sb, gh)
  local reset = os.time() + 1
  sb.state.github.rate_limit = { remaining = 1, reset = reset }
  T.eq(gh:get_repo().full_name, REPO)
  local r = http.request{ url = sb.github_url .. "/repos/" .. REPO, headers = { Authorization = "Bearer " .. TOKEN } }
  T.eq(r.status, 403)
  T.has(json.decode(r.body).message, "API rate limit exceeded")
  T.eq(r.headers["x-ratelimit-remaining"], "0")
  T.eq(r.headers["x-ratelimit-reset"], tostring(reset))
  T.eq(gh:get_repo().full_name, REPO)
  T.ok(os.time() >= reset, "the client waited for the reset")
  T.eq(seen(sb, "GET /repos/{owner}/{repo}"), 4)
  T.eq(sb.state.github.rate_limit, nil, "lifted at the reset")
end))

T.test("verify_webhook: GitHub's example, tampering, garbage, wrong types", function()
  local secret, payload = "It's a Secret to Everybody", "Hello, World!"
  local good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
  T.eq(github.verify_webhook(secret, payload, good), true)
  T.eq(github.verify_webhook(secret, payload, good:upper():gsub("^SHA256", "sha256")), true)
  T.eq(github.verify_webhook("another secret", payload, good), false)
  T.eq(github.verify_webhook(secret, "Hello, World?", good), false)
  T.eq(github.verify_webhook(secret, payload, good:sub(1, -2) .. "0"), false)
  T.eq(github.verify_webhook(secret, payload, good:sub(8)), false, "no sha256= prefix")
  T.eq(github.verify_webhook(secret, payload, "sha1=757107ea0eb2509fc211221cce984b8a37570b6d"), false)
  T.eq(github.verify_webhook(secret, payload, good .. "00"), false, "too long")
  T.eq(github.verify_webhook(secret, payload, "sha256=" .. ("zz"):rep(32)), false, "not hex")
  T.eq(github.verify_webhook(secret, payload, ""), false)
  T.eq(github.verify_webhook(secret, payload, nil), false, "a delivery without the header")
  T.raises(function() github.verify_webhook(secret, payload, 757107) end,
    "bad argument #3 to 'github.verify_webhook' (string expected, got number)")
  T.raises(function() github.verify_webhook(nil, payload, good) end,
    "bad argument #1 to 'github.verify_webhook' (string expected, got nil)")
  T.raises(function() github.verify_webhook("", payload, good) end, "the webhook secret is empty")
  T.raises(function() github.verify_webhook(secret, nil, good) end,
    "bad argument #2 to 'github.verify_webhook' (string expected, got nil)")
end)

T.test("misuse raises naming the function and the argument", function()
  local gh = github.client{ token = TOKEN, repo = REPO, api_url = "http://127.0.0.1:9" }
  T.raises(function() gh:get_release_by_tag(42) end,
    "bad argument #1 to 'client:get_release_by_tag' (string expected, got number)")
  T.raises(function() gh:create_release{ name = "no tag" } end,
    "bad argument #1 to 'client:create_release' (tag_name: string expected, got nil)")
  T.raises(function() gh:comment("7", "x") end, "bad argument #1 to 'client:comment' (integer expected, got string)")
  T.raises(function() gh:update_release(1) end, "bad argument #2 to 'client:update_release' (table expected, got nil)")
  T.raises(function() gh.comment(1, "x") end, "call it as a method of a client, gh:comment(...)")
  T.raises(function() gh:upload_release_asset({ upload_url = "x" }, { name = "a" }) end, "give either path or content")
  T.raises(function() gh:request("get", "/x") end, "an upper-case HTTP method expected")
  T.raises(function() gh:request("GET", "https://elsewhere.example/x") end, "the token is not sent elsewhere")
  T.raises(function() github.client("token") end, "bad argument #1 to 'github.client' (table expected, got string)")
  T.raises(function() github.client{ token = TOKEN, repo = "no-slash" } end, "repo must be \"owner/name\"")
  T.raises(function() github.client{ token = TOKEN, max_wait = "long" } end,
    "bad argument #1 to 'github.client' (max_wait: a number >= 0 expected, got string)")
  local where = T.raises(function() gh:list_comments() end, "client:list_comments")
  T.match(tostring(where), "test_github%.lua:%d+:", "the error points at the caller")
end)

-- The methods that are not rows of the route table: each has logic of its own.
local HAND_WRITTEN = { request = true, paginate = true, upload_release_asset = true, get_if_changed = true }

T.test("each route's method is on a client; the others are request, paginate, get_if_changed and upload_release_asset", function()
  local gh = github.client{ token = TOKEN, repo = REPO, api_url = "http://127.0.0.1:9" }
  T.eq(#github.routes, 17)
  local routed = {}
  for _, route in ipairs(github.routes) do
    T.eq(type(gh[route.name]), "function", "gh:" .. route.name)
    T.ok(not routed[route.name], route.name .. " is one route")
    routed[route.name] = true
    T.match(route.method, "^[A-Z]+$", route.name)
    if route.name == "list_team_members" then T.eq(route.path, "/orgs/{org}/teams/{team_slug}/members")
    else T.match(route.path, "^/repos/{owner}/{repo}", route.name) end
  end
  local count = 0
  for name, fn in pairs(getmetatable(gh).__index) do
    if type(fn) == "function" and not name:match("^__") then
      count = count + 1
      T.ok(routed[name] or HAND_WRITTEN[name], "gh:" .. name .. " is neither a route nor a known hand-written method")
    end
  end
  T.eq(count, 21, "21 methods in all")
end)

-- A value of the type spec wants ("string", "integer", "table|integer", "[string]"), with the
-- required fields a table argument of route needs.
local function good_value(spec, route)
  local kind = spec:match("^[^|]+")
  if kind:sub(1, 1) == "[" then return {} end
  if kind == "table" then
    local t = {}
    for _, f in ipairs(route and route.fields or {}) do
      if not f.optional then t[f.name] = good_value(f.type) end
    end
    return t
  end
  return ({ string = "x", integer = 7, boolean = true })[kind]
end

-- A value spec does not take, and the type name the message gives for it
local function wrong_value(spec)
  for _, v in ipairs{ true, "text", {} } do
    if not spec:find(type(v), 1, true) and not (type(v) == "table" and spec:sub(1, 1) == "[") then
      return v, type(v)
    end
  end
end

T.test("every route raises the one misuse form, at the caller's line, for each wrong-typed argument", function()
  local gh = github.client{ token = TOKEN, repo = REPO, api_url = "http://127.0.0.1:9", retries = 0 }
  local checked = 0
  for _, route in ipairs(github.routes) do
    local who = "client:" .. route.name
    local function call_with(args)
      -- not a tail call: the error must name this line
      local ok, err = pcall(function() local r = gh[route.name](gh, table.unpack(args, 1, #route.args)) return r end)
      T.eq(ok, false, who .. " should have raised")
      return tostring(err)
    end
    for n, a in ipairs(route.args) do
      local args = {}
      for i, b in ipairs(route.args) do args[i] = good_value(b.type, route) end
      local bad, got = wrong_value(a.type)
      args[n] = bad
      local err = call_with(args)
      T.has(err, ("bad argument #%d to '%s' (%s expected, got %s)"):format(n, who, a.type:gsub("|", " or "), got), who)
      T.match(err, "^[^\n]*test_github%.lua:%d+: bad argument", "at the caller's line: " .. err)
      checked = checked + 1
      if not a.optional then
        args[n] = nil
        T.has(call_with(args), ("bad argument #%d to '%s' (%s expected, got nil)"):format(n, who,
          a.type:gsub("|", " or ")), who)
      end
      if a.name == "body" then
        for _, f in ipairs(route.fields) do
          args[n] = good_value(a.type, route)
          local bad_field, got_field = wrong_value(f.type)
          args[n][f.name] = bad_field
          local expected = f.type:sub(1, 1) == "[" and "a list" or (f.type:gsub("|", " or "))
          T.has(call_with(args), ("bad argument #%d to '%s' (%s: %s expected, got %s)"):format(n, who, f.name,
            expected, got_field), who .. " " .. f.name)
          checked = checked + 1
        end
      end
    end
  end
  T.ok(checked >= 25, "checked " .. checked .. " arguments and fields")
  T.raises(function() gh.get_repo(42) end, "calling 'client:get_repo' on bad self")
end)

T.test("route paths: each argument is one percent-encoded segment, an id is digits", with_server(function(req)
  return { status = 200, headers = { ["Content-Type"] = "application/json", ["X-Path"] = req.path },
    body = '{"path":"' .. req.path .. '"}' }
end, function(gh)
  T.eq(gh:get_release_by_tag("rc/1 ü").path, "/api/v3/repos/acme/widgets/releases/tags/rc%2F1%20%C3%BC")
  T.eq(gh:update_release(12.0, {}).path, "/api/v3/repos/acme/widgets/releases/12")
  T.eq(gh:create_status("a?b#c", { state = "success" }).path, "/api/v3/repos/acme/widgets/statuses/a%3Fb%23c")
  T.eq(gh:get_repo().path, "/api/v3/repos/acme/widgets")
end))

T.test("settings come from GITHUB_TOKEN, GITHUB_REPOSITORY and GITHUB_API_URL", function()
  local script = [[
    local gh = require("stagehost.github").client()
    io.write(gh.repo, " ", gh.api_url, " ", tostring(gh))
  ]]
  local r = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", script, env = { GITHUB_TOKEN = TOKEN,
    GITHUB_REPOSITORY = "octo/cat", GITHUB_API_URL = "https://ghe.example/api/v3/" } }
  T.eq(r.code, 0, r.stderr)
  T.eq(r.stdout, "octo/cat https://ghe.example/api/v3 github client for octo/cat at https://ghe.example/api/v3")
  local default = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", "io.write(require('stagehost.github').client().api_url)",
    env = { GITHUB_TOKEN = TOKEN, GITHUB_REPOSITORY = false, GITHUB_API_URL = false } }
  T.eq(default.stdout, "https://api.github.com", default.stderr)
end)

T.test("a missing token or repository is one clear line", function()
  local no_token = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", "require('stagehost.github').client{ repo = 'o/r' }",
    env = { GITHUB_TOKEN = false } }
  T.eq(no_token.code, 1)
  T.has(no_token.stderr, "github.client: no token: set GITHUB_TOKEN or pass token = ...")
  local no_repo = proc.run{ os.getenv("STAGEHOST_BIN"), "-e",
    "require('stagehost.github').client{ token = 'abcdefgh', api_url = 'http://127.0.0.1:9' }:get_repo()",
    env = { GITHUB_REPOSITORY = false } }
  T.eq(no_repo.code, 1)
  T.has(no_repo.stderr, "github: no repository: set GITHUB_REPOSITORY (owner/name) or pass repo = ...")
  T.no_match(no_repo.stderr, "abcdefgh")
end)

T.run()
