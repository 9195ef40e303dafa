-- The sandbox's GitHub REST emulator: enough of api.github.com for stagehost.github and for
-- @octokit/rest to run releases, issues, commit statuses and deployments against it, with
-- GitHub's pagination (Link headers), rate-limit headers, errors and authentication.
--
-- It answers only whom it knows, as GitHub does: a request with no token is 401 "Requires
-- authentication", one with a token it was not given 401 "Bad credentials", one about a
-- repository it does not have 404 "Not Found". sandbox.start{github = {repos = {"o/n"},
-- tokens = {"t"}, user = "login"}} says what it has; without them it has the repository
-- "stagehost/sandbox" and one random token, sb.github_token (sb.github_repo is the first
-- repository); sb:use() adds the repository it configures.
--
-- The world lives in sb.state.github, which tests may read and seed:
--   tokens   the list of tokens accepted
--   user     the login every token acts as ("stagehost-bot")
--   token_users  [token] = login: a token that acts as someone else (an approver commenting)
--   teams    ["org/team-slug"] = {"login", ...}: GET /orgs/{org}/teams/{team_slug}/members
--
-- Every 200 answer to a GET carries an ETag (the sha256 of its body); a GET whose
-- If-None-Match names it gets 304 Not Modified with no body, and, as on GitHub, costs no rate
-- limit. sb.requests' entries get the answer's status (304 included).
--   repos    ["owner/name"] = { issues = {...}, releases = {...}, comments = {[n] = {...}},
--            statuses = {[sha] = {...}}, deployments = {...}, deployment_statuses = {[id] = {...}} }
--            for each repository it has: a test may add one by seeding it. A seeded issue needs
--            only a title: {title = "x", state = "closed"}; the missing fields (number, id, urls,
--            user, times) are filled in when it is first seen.
--   assets   [asset id] = the bytes uploaded
--   rate     {limit = 5000, used = 0, reset = epoch}: the X-RateLimit-* headers of every answer
--   rate_limit  nil, or {remaining = n, reset = epoch} set by a test: n more requests pass, then
--            each is refused with GitHub's 403 and X-RateLimit-Remaining: 0 until reset
--
-- Malformed input gets GitHub's answers (400 "Problems parsing JSON", 422 "Validation Failed"
-- naming the fields) before anything changes; a handler that fails anyway answers a JSON 500,
-- logged, so the world stays usable for the next request.
--
-- Faults (sb:fail_next{service = "github", action = "GET /repos/{owner}/{repo}/issues",
-- status =, headers =, message =, body =}) replace the next matching answer: body, when given,
-- is sent as is (a malformed one, say); otherwise {"message", "documentation_url"} is.
local json = require("stagehost.json")
local crypto = require("stagehost.crypto")
local log = require("stagehost.log")

local emulator = {}

local DOCS = "https://docs.github.com/rest"
local HTML_BASE = "https://github.com"
local DEFAULT_PER_PAGE, MAX_PER_PAGE = 30, 100

-- Plumbing ----------------------------------------------------------------------------------

local function now_iso()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

local url_decode = require("stagehost.util.url").decode
local url_encode = require("stagehost.util.url").encode
local sorted_keys = require("stagehost.util.tables").sorted_keys

local function parse_query(q)
  local out = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[url_decode(k, true)] = url_decode(v, true)
  end
  return out
end

local function encode_query(params)
  local parts = {}
  for _, k in ipairs(sorted_keys(params)) do parts[#parts + 1] = url_encode(k) .. "=" .. url_encode(params[k]) end
  return table.concat(parts, "&")
end

local function node_id(kind, id)
  return (crypto.base64_encode(("%s:%d"):format(kind, id)):gsub("=", ""))
end

local function next_id(gh)
  gh.next_id = gh.next_id + 1
  return gh.next_id
end

local function array(t)
  local out = json.array{}
  for i, v in ipairs(t or {}) do out[i] = v end
  return out
end

local function or_null(v)
  if v == nil then return json.null end
  return v
end

local function user_object(ctx, login)
  login = login or ctx.login or ctx.gh.user
  local id = 100000 + #login -- stable per login, as GitHub's ids are
  for i = 1, #login do id = (id * 31 + login:byte(i)) % 90000000 end
  return {
    login = login, id = id, node_id = node_id("User", id), type = "User", site_admin = false,
    avatar_url = ("https://avatars.githubusercontent.com/u/%d?v=4"):format(id), gravatar_id = "",
    url = ctx.base .. "/users/" .. login, html_url = HTML_BASE .. "/" .. login,
  }
end

-- Answers -----------------------------------------------------------------------------------

-- the headers GitHub puts on every answer, the rate limit counted per request
local function standard_headers(gh)
  local rate = gh.rate
  if os.time() >= rate.reset then
    rate.used, rate.reset = 0, os.time() + 3600
  end
  local limited = gh.rate_limit
  if limited then
    rate.reset = limited.reset or rate.reset
    rate.used = rate.limit - math.max(0, math.min(rate.limit, limited.remaining or 0))
  end
  return {
    ["Content-Type"] = "application/json; charset=utf-8",
    ["X-GitHub-Media-Type"] = "github.v3; format=json",
    ["X-GitHub-Api-Version-Selected"] = "2022-11-28",
    ["X-RateLimit-Limit"] = tostring(rate.limit),
    ["X-RateLimit-Remaining"] = tostring(math.max(0, rate.limit - rate.used)),
    ["X-RateLimit-Used"] = tostring(rate.used),
    ["X-RateLimit-Reset"] = tostring(rate.reset),
    ["X-RateLimit-Resource"] = "core",
    -- octokit names it in every error it logs
    ["X-GitHub-Request-Id"] = crypto.hex_encode(crypto.random(8)):upper():gsub("(%x%x%x%x)", "%1:", 3),
  }
end

local function answer(ctx, status, value, extra_headers)
  local headers = standard_headers(ctx.gh)
  for k, v in pairs(extra_headers or {}) do headers[k] = v end
  local body = value ~= nil and json.encode(value) or ""
  return { status = status, headers = headers, body = body }
end

local function fail(ctx, status, message, errors)
  local value = { message = message, documentation_url = DOCS }
  if errors then value.errors = array(errors) end
  return answer(ctx, status, value)
end

local function not_found(ctx)
  return fail(ctx, 404, "Not Found")
end

local function validation_failed(ctx, errors)
  return fail(ctx, 422, "Validation Failed", errors)
end

-- Input checks: what each field must be when given (JSON null counts as not given).
local function is_list(v, item_ok)
  if type(v) ~= "table" or not json.is_array(v) then return false end
  for _, item in ipairs(v) do
    if not item_ok(item) then return false end
  end
  return true
end

local function is_string(v) return type(v) == "string" end

local KINDS = {
  string = is_string,
  boolean = function(v) return type(v) == "boolean" end,
  integer = function(v) return math.type(v) == "integer" end,
  strings = function(v) return is_list(v, is_string) end,
  -- a label is its name, or an object with one
  labels = function(v)
    return is_list(v, function(l) return type(l) == "string" or (type(l) == "table" and is_string(l.name)) end)
  end,
  milestone = function(v) return math.type(v) == "integer" or type(v) == "string" end,
  title = function(v) return type(v) == "string" or math.type(v) == "integer" end,
  payload = function(v) return type(v) == "string" or (type(v) == "table" and not json.is_array(v)) end,
}

-- {resource, code = "invalid", field} for each field of body that is not of its kind
local function invalid_fields(resource, body, fields)
  local errors = {}
  for _, f in ipairs(fields) do
    local v = body[f[1]]
    if v ~= nil and v ~= json.null and not KINDS[f[2]](v) then
      errors[#errors + 1] = { resource = resource, code = "invalid", field = f[1] }
    end
  end
  return errors
end

-- a query parameter as an integer in [lo, hi]; garbage counts as absent, as GitHub takes it
local function int_param(value, default, lo, hi)
  local n = tonumber(value)
  if not n or n ~= n then return default end
  return math.floor(math.max(lo, math.min(hi, n)))
end

-- One page of a list, with GitHub's Link header: absolute URLs to the same path and query,
-- only the page changed; next/last from a page before the last, first/prev after the first.
local function paginated(ctx, items)
  local per_page = int_param(ctx.query.per_page, DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
  -- far past any list, and small enough that page * per_page stays exact
  local page = int_param(ctx.query.page, 1, 1, 1000000000)
  local last = math.max(1, (#items + per_page - 1) // per_page)
  local slice = json.array{}
  for i = (page - 1) * per_page + 1, math.min(#items, page * per_page) do slice[#slice + 1] = items[i] end
  local function link(p, rel)
    local params = {}
    for k, v in pairs(ctx.query) do params[k] = v end
    params.page = tostring(p)
    return ("<%s%s?%s>; rel=\"%s\""):format(ctx.base, ctx.req.path, encode_query(params), rel)
  end
  local links = {}
  if page > 1 then
    links[#links + 1] = link(math.min(page - 1, last), "prev")
  end
  if page < last then
    links[#links + 1] = link(page + 1, "next")
    links[#links + 1] = link(last, "last")
  end
  if page > 1 then links[#links + 1] = link(1, "first") end
  return answer(ctx, 200, slice, #links > 0 and { Link = table.concat(links, ", ") } or nil)
end

-- The world ---------------------------------------------------------------------------------

local DEFAULT_REPO = "stagehost/sandbox"

local function check_repo_name(name)
  if type(name) ~= "string" or not name:match("^[%w%-_.]+/[%w%-_.]+$") then
    error(("%q is not a repository name (owner/name)"):format(tostring(name)), 0)
  end
end

-- emulator.add_repo(sb, "owner/name"): the repository exists from now on (empty, if new).
function emulator.add_repo(sb, full_name)
  check_repo_name(full_name)
  local repos = sb.state.github.repos
  repos[full_name] = repos[full_name] or {}
end

function emulator.init(sb, opts)
  local gh = sb.state.github
  opts = opts or {}
  gh.repos = gh.repos or {}
  local repos = opts.repos or { DEFAULT_REPO }
  if type(repos) ~= "table" or #repos == 0 then error("github.repos must be a list of \"owner/name\"", 0) end
  for _, name in ipairs(repos) do emulator.add_repo(sb, name) end
  sb.github_repo = repos[1]
  local tokens = opts.tokens or { "ghs_sandbox" .. crypto.hex_encode(crypto.random(16)) }
  if type(tokens) ~= "table" or #tokens == 0 then error("github.tokens must be a list of tokens", 0) end
  for _, token in ipairs(tokens) do
    if type(token) ~= "string" or token == "" then error("github.tokens must be a list of non-empty strings", 0) end
  end
  gh.tokens = tokens
  sb.github_token = tokens[1]
  gh.user = opts.user or gh.user
  gh.assets = gh.assets or {}
  gh.user = gh.user or "stagehost-bot"
  gh.next_id = gh.next_id or 1000
  gh.rate = gh.rate or { limit = 5000, used = 0, reset = os.time() + 3600 }
end

local function repo_url(ctx, repo)
  return ctx.base .. "/repos/" .. repo.full_name
end

local function complete_issue(ctx, repo, issue)
  local gh = ctx.gh
  if issue.id then return end
  if not issue.number then
    repo.next_number = repo.next_number + 1
    issue.number = repo.next_number
  end
  repo.next_number = math.max(repo.next_number, issue.number)
  local url = repo_url(ctx, repo) .. "/issues/" .. issue.number
  issue.url = url
  issue.repository_url = repo_url(ctx, repo)
  issue.labels_url = url .. "/labels{/name}"
  issue.comments_url = url .. "/comments"
  issue.events_url = url .. "/events"
  issue.html_url = ("%s/%s/issues/%d"):format(HTML_BASE, repo.full_name, issue.number)
  issue.title = issue.title or ("issue " .. issue.number)
  issue.body = or_null(issue.body)
  issue.user = issue.user or user_object(ctx)
  issue.state = issue.state or "open"
  issue.state_reason = or_null(issue.state_reason)
  issue.locked = issue.locked or false
  local labels = json.array{}
  for i, label in ipairs(issue.labels or {}) do
    if type(label) == "table" then
      labels[i] = label
    else
      local id = next_id(gh)
      labels[i] = { name = tostring(label), id = id, node_id = node_id("Label", id), color = "ededed",
        default = false, description = json.null, url = repo_url(ctx, repo) .. "/labels/" .. url_encode(label) }
    end
  end
  issue.labels = labels
  issue.assignees = array(issue.assignees)
  issue.assignee = issue.assignees[1] or json.null
  issue.milestone = or_null(issue.milestone)
  issue.comments = issue.comments or 0
  issue.author_association = issue.author_association or "OWNER"
  issue.created_at = issue.created_at or now_iso()
  issue.updated_at = issue.updated_at or issue.created_at
  issue.closed_at = or_null(issue.closed_at or (issue.state == "closed" and issue.updated_at or nil))
  -- the id marks the issue complete: set last, so a seeded issue that failed halfway is
  -- completed again once a test repairs it
  issue.id = next_id(gh)
  issue.node_id = node_id("Issue", issue.id)
end

-- The repository's state, nil when the sandbox does not have it; issues a test seeded are
-- completed here.
local function repository(ctx, owner, name)
  local gh = ctx.gh
  local full_name = owner .. "/" .. name
  local repo = gh.repos[full_name]
  if not repo then return nil end
  if not repo.id then
    repo.id = next_id(gh)
    repo.full_name, repo.owner, repo.name = full_name, owner, name
    repo.created_at = now_iso()
    repo.issues = repo.issues or {}
    repo.releases = repo.releases or {}
    repo.comments = repo.comments or {}
    repo.statuses = repo.statuses or {}
    repo.deployments = repo.deployments or {}
    repo.deployment_statuses = repo.deployment_statuses or {}
    repo.next_number = 0
  end
  for _, issue in ipairs(repo.issues) do
    if issue.number then repo.next_number = math.max(repo.next_number, issue.number) end
  end
  for _, issue in ipairs(repo.issues) do complete_issue(ctx, repo, issue) end
  return repo
end

local function repo_object(ctx, repo)
  local url = repo_url(ctx, repo)
  local owner = user_object(ctx, repo.owner)
  owner.type = repo.owner == ctx.gh.user and "User" or "Organization"
  return {
    id = repo.id, node_id = node_id("Repository", repo.id), name = repo.name, full_name = repo.full_name,
    owner = owner, private = false, visibility = "public", fork = false, archived = false, disabled = false,
    description = json.null, homepage = json.null, default_branch = "main",
    html_url = HTML_BASE .. "/" .. repo.full_name, url = url,
    clone_url = HTML_BASE .. "/" .. repo.full_name .. ".git",
    releases_url = url .. "/releases{/id}", issues_url = url .. "/issues{/number}",
    deployments_url = url .. "/deployments", statuses_url = url .. "/statuses/{sha}",
    created_at = repo.created_at, updated_at = now_iso(), pushed_at = now_iso(),
    open_issues_count = (function()
      local n = 0
      for _, issue in ipairs(repo.issues) do if issue.state == "open" then n = n + 1 end end
      return n
    end)(),
    permissions = { admin = true, maintain = true, push = true, triage = true, pull = true },
  }
end

local function find_by(list, field, value)
  for _, item in ipairs(list) do
    if item[field] == value then return item end
  end
  return nil
end

-- A ref is deployed as a commit: a sha stays itself, a branch or tag gets a stable fake sha.
local function sha_of(ref)
  if ref:match("^%x+$") and #ref == 40 then return ref:lower() end
  return crypto.sha256(ref):sub(1, 40)
end

-- Releases ----------------------------------------------------------------------------------

local function previous_release(repo, tag)
  for i = #repo.releases, 1, -1 do
    local r = repo.releases[i]
    if r.tag_name ~= tag and not r.draft then return r end
  end
  return nil
end

local function release_notes(ctx, repo, tag, previous)
  previous = previous or (previous_release(repo, tag) or {}).tag_name
  local closed = {}
  for _, issue in ipairs(repo.issues) do
    if issue.state == "closed" then
      closed[#closed + 1] = ("* %s by @%s in %s"):format(issue.title, issue.user.login, issue.html_url)
    end
  end
  local lines = { "## What's Changed" }
  for _, line in ipairs(closed) do lines[#lines + 1] = line end
  if #closed == 0 then lines[#lines + 1] = "* No changes recorded" end
  lines[#lines + 1] = ""
  if previous then
    lines[#lines + 1] = ("**Full Changelog**: %s/%s/compare/%s...%s"):format(HTML_BASE, repo.full_name, previous, tag)
  else
    lines[#lines + 1] = ("**Full Changelog**: %s/%s/commits/%s"):format(HTML_BASE, repo.full_name, tag)
  end
  return { name = tag, body = table.concat(lines, "\n") }
end

local RELEASE_FIELDS = { "tag_name", "target_commitish", "name", "body", "draft", "prerelease",
  "make_latest", "discussion_category_name" }

local function check_release_fields(body)
  local errors = invalid_fields("Release", body, { { "tag_name", "string" }, { "target_commitish", "string" },
    { "name", "string" }, { "body", "string" }, { "make_latest", "string" },
    { "discussion_category_name", "string" }, { "generate_release_notes", "boolean" } })
  for _, field in ipairs{ "draft", "prerelease" } do
    if body[field] ~= nil and type(body[field]) ~= "boolean" then
      errors[#errors + 1] = { resource = "Release", code = "invalid", field = field }
    end
  end
  return errors
end

local function create_release(ctx)
  local body = ctx.body
  local repo = ctx.repo
  local errors = check_release_fields(body)
  if type(body.tag_name) ~= "string" or body.tag_name == "" then
    errors[#errors + 1] = { resource = "Release", code = "missing_field", field = "tag_name" }
  elseif find_by(repo.releases, "tag_name", body.tag_name) then
    errors[#errors + 1] = { resource = "Release", code = "already_exists", field = "tag_name" }
  end
  if #errors > 0 then return validation_failed(ctx, errors) end
  local id = next_id(ctx.gh)
  local url = repo_url(ctx, repo) .. "/releases/" .. id
  local notes = body.generate_release_notes == true and release_notes(ctx, repo, body.tag_name) or nil
  local draft = body.draft == true
  local release = {
    id = id, node_id = node_id("Release", id), url = url,
    html_url = ("%s/%s/releases/tag/%s"):format(HTML_BASE, repo.full_name, url_encode(body.tag_name)),
    assets_url = url .. "/assets",
    upload_url = ("%s/uploads/repos/%s/releases/%d/assets{?name,label}"):format(ctx.base, repo.full_name, id),
    tarball_url = repo_url(ctx, repo) .. "/tarball/" .. url_encode(body.tag_name),
    zipball_url = repo_url(ctx, repo) .. "/zipball/" .. url_encode(body.tag_name),
    tag_name = body.tag_name, target_commitish = body.target_commitish or "main",
    name = or_null(body.name or (notes and notes.name)), body = or_null(body.body or (notes and notes.body)),
    draft = draft, prerelease = body.prerelease == true, immutable = false,
    author = user_object(ctx), assets = json.array{},
    created_at = now_iso(), published_at = draft and json.null or now_iso(),
  }
  repo.releases[#repo.releases + 1] = release
  return answer(ctx, 201, release, { Location = url })
end

local function update_release(ctx)
  local release = find_by(ctx.repo.releases, "id", tonumber(ctx.params.release_id))
  if not release then return not_found(ctx) end
  local body = ctx.body
  local errors = check_release_fields(body)
  if type(body.tag_name) == "string" and body.tag_name ~= release.tag_name
      and find_by(ctx.repo.releases, "tag_name", body.tag_name) then
    errors[#errors + 1] = { resource = "Release", code = "already_exists", field = "tag_name" }
  end
  if #errors > 0 then return validation_failed(ctx, errors) end
  for _, field in ipairs(RELEASE_FIELDS) do
    if body[field] ~= nil then release[field] = body[field] end
  end
  if release.draft == false and release.published_at == json.null then release.published_at = now_iso() end
  return answer(ctx, 200, release)
end

local function upload_asset(ctx)
  local release = find_by(ctx.repo.releases, "id", tonumber(ctx.params.release_id))
  if not release then return not_found(ctx) end
  local name = ctx.query.name
  if not name or name == "" then
    return fail(ctx, 422, "Bad Content-Length or name", { { resource = "ReleaseAsset", code = "missing_field", field = "name" } })
  end
  if find_by(release.assets, "name", name) then
    return validation_failed(ctx, { { resource = "ReleaseAsset", code = "already_exists", field = "name" } })
  end
  local id = next_id(ctx.gh)
  local asset = {
    id = id, node_id = node_id("ReleaseAsset", id),
    url = repo_url(ctx, ctx.repo) .. "/releases/assets/" .. id,
    browser_download_url = ("%s/%s/releases/download/%s/%s"):format(HTML_BASE, ctx.repo.full_name,
      url_encode(release.tag_name), url_encode(name)),
    name = name, label = or_null(ctx.query.label), state = "uploaded",
    content_type = ctx.req.headers["content-type"] or "application/octet-stream",
    size = #ctx.req.body, digest = "sha256:" .. crypto.sha256(ctx.req.body), download_count = 0,
    created_at = now_iso(), updated_at = now_iso(), uploader = user_object(ctx),
  }
  ctx.gh.assets[id] = ctx.req.body
  release.assets[#release.assets + 1] = asset
  return answer(ctx, 201, asset)
end

-- DELETE /repos/{o}/{r}/releases/assets/{asset_id} -> 204 (a re-run replaces its assets)
local function delete_asset(ctx)
  local id = tonumber(ctx.params.asset_id)
  for _, release in ipairs(ctx.repo.releases) do
    for i, asset in ipairs(release.assets) do
      if asset.id == id then
        table.remove(release.assets, i)
        ctx.gh.assets[id] = nil
        return answer(ctx, 204, nil)
      end
    end
  end
  return not_found(ctx)
end

-- Issues ------------------------------------------------------------------------------------

local ISSUE_FIELDS = { { "title", "title" }, { "body", "string" }, { "labels", "labels" },
  { "assignees", "strings" }, { "assignee", "string" }, { "milestone", "milestone" } }

local function create_issue(ctx)
  local body = ctx.body
  local errors = invalid_fields("Issue", body, ISSUE_FIELDS)
  if body.title == nil or body.title == json.null or body.title == "" then
    errors[#errors + 1] = { resource = "Issue", code = "missing_field", field = "title" }
  end
  if #errors > 0 then return validation_failed(ctx, errors) end
  local labels = {}
  for i, label in ipairs(body.labels ~= json.null and body.labels or {}) do
    labels[i] = type(label) == "table" and label.name or label
  end
  local issue = { title = tostring(body.title), body = body.body ~= json.null and body.body or nil,
    labels = labels, assignees = {}, state = "open",
    milestone = body.milestone ~= json.null and body.milestone or nil }
  local logins = body.assignees ~= json.null and body.assignees or {}
  if #logins == 0 and type(body.assignee) == "string" then logins = { body.assignee } end
  for i, login in ipairs(logins) do
    issue.assignees[i] = user_object(ctx, login)
  end
  -- listed only once whole: a half-made issue would break every later listing
  complete_issue(ctx, ctx.repo, issue)
  ctx.repo.issues[#ctx.repo.issues + 1] = issue
  return answer(ctx, 201, issue, { Location = issue.url })
end

local ISSUE_SORT_KEYS = { created = "created_at", updated = "updated_at", comments = "comments" }

local function list_issues(ctx)
  local q = ctx.query
  local state = q.state or "open"
  if state ~= "open" and state ~= "closed" and state ~= "all" then
    return validation_failed(ctx, { { resource = "Issue", code = "invalid", field = "state" } })
  end
  local wanted_labels = {}
  for label in (q.labels or ""):gmatch("[^,]+") do wanted_labels[#wanted_labels + 1] = label end
  local items = {}
  for _, issue in ipairs(ctx.repo.issues) do
    local keep = state == "all" or issue.state == state
    for _, label in ipairs(wanted_labels) do
      if keep and not find_by(issue.labels, "name", label) then keep = false end
    end
    if keep then items[#items + 1] = issue end
  end
  local key = ISSUE_SORT_KEYS[q.sort or "created"] or "created_at"
  local ascending = q.direction == "asc"
  table.sort(items, function(a, b)
    if a[key] ~= b[key] then
      if ascending then return a[key] < b[key] end
      return a[key] > b[key]
    end
    if ascending then return a.number < b.number end
    return a.number > b.number
  end)
  return paginated(ctx, items)
end

local function issue_of(ctx)
  return find_by(ctx.repo.issues, "number", tonumber(ctx.params.issue_number))
end

local function get_issue(ctx)
  local issue = issue_of(ctx)
  if not issue then return not_found(ctx) end
  return answer(ctx, 200, issue)
end

local STATE_REASONS = { completed = true, not_planned = true, reopened = true }

local function update_issue(ctx)
  local issue = issue_of(ctx)
  if not issue then return not_found(ctx) end
  local body = ctx.body
  local errors = invalid_fields("Issue", body, ISSUE_FIELDS)
  if body.state ~= nil and body.state ~= "open" and body.state ~= "closed" then
    errors[#errors + 1] = { resource = "Issue", code = "invalid", field = "state" }
  end
  if body.state_reason ~= nil and body.state_reason ~= json.null and not STATE_REASONS[body.state_reason] then
    errors[#errors + 1] = { resource = "Issue", code = "invalid", field = "state_reason" }
  end
  if #errors > 0 then return validation_failed(ctx, errors) end
  if body.title ~= nil and body.title ~= json.null then issue.title = tostring(body.title) end
  if body.body ~= nil then issue.body = body.body end
  issue.updated_at = now_iso()
  if body.state and body.state ~= issue.state then
    issue.state = body.state
    if body.state == "closed" then
      issue.closed_at = issue.updated_at
      issue.closed_by = user_object(ctx)
      issue.state_reason = body.state_reason ~= json.null and body.state_reason or "completed"
    else
      issue.closed_at, issue.closed_by, issue.state_reason = json.null, nil, "reopened"
    end
  end
  return answer(ctx, 200, issue)
end

local function create_comment(ctx)
  local issue = issue_of(ctx)
  if not issue then return not_found(ctx) end
  if type(ctx.body.body) ~= "string" or ctx.body.body == "" then
    return validation_failed(ctx, { { resource = "IssueComment", code = "missing_field", field = "body" } })
  end
  local id = next_id(ctx.gh)
  local comment = {
    id = id, node_id = node_id("IssueComment", id),
    url = repo_url(ctx, ctx.repo) .. "/issues/comments/" .. id,
    html_url = ("%s#issuecomment-%d"):format(issue.html_url, id), issue_url = issue.url,
    body = ctx.body.body, user = user_object(ctx), author_association = "OWNER",
    created_at = now_iso(), updated_at = now_iso(),
  }
  local list = ctx.repo.comments[issue.number] or {}
  ctx.repo.comments[issue.number] = list
  list[#list + 1] = comment
  issue.comments = #list
  issue.updated_at = comment.created_at
  return answer(ctx, 201, comment, { Location = comment.url })
end

local function list_comments(ctx)
  local issue = issue_of(ctx)
  if not issue then return not_found(ctx) end
  return paginated(ctx, ctx.repo.comments[issue.number] or {})
end

local function team_members(ctx)
  local members = (ctx.gh.teams or {})[ctx.params.org .. "/" .. ctx.params.team_slug]
  if not members then return not_found(ctx) end
  local list = {}
  for i, login in ipairs(members) do list[i] = user_object(ctx, login) end
  return paginated(ctx, list)
end

-- Commit statuses ---------------------------------------------------------------------------

local STATUS_STATES = { error = true, failure = true, pending = true, success = true }

-- A commit is named by its full SHA-1 (or SHA-256) in hex; GitHub looks no branch or tag up here.
local function is_sha(s)
  return type(s) == "string" and (#s == 40 or #s == 64) and s:match("^%x+$") ~= nil
end

local function create_status(ctx)
  if not is_sha(ctx.params.sha) then
    return fail(ctx, 422, ("No commit found for SHA: %s"):format(ctx.params.sha))
  end
  local body = ctx.body
  if not STATUS_STATES[body.state] then
    return validation_failed(ctx, { { resource = "Status", code = "custom", field = "state",
      message = "state is not included in the list" } })
  end
  local errors = invalid_fields("Status", body, { { "target_url", "string" }, { "description", "string" },
    { "context", "string" } })
  if #errors > 0 then return validation_failed(ctx, errors) end
  local sha = sha_of(ctx.params.sha)
  local id = next_id(ctx.gh)
  local status = {
    id = id, node_id = node_id("StatusContext", id),
    url = repo_url(ctx, ctx.repo) .. "/statuses/" .. sha,
    avatar_url = user_object(ctx).avatar_url, state = body.state,
    description = or_null(body.description), target_url = or_null(body.target_url),
    context = type(body.context) == "string" and body.context or "default", creator = user_object(ctx),
    created_at = now_iso(), updated_at = now_iso(),
  }
  local list = ctx.repo.statuses[sha] or {}
  ctx.repo.statuses[sha] = list
  table.insert(list, 1, status) -- newest first, as GitHub lists them
  return answer(ctx, 201, status, { Location = status.url })
end

local function list_statuses(ctx)
  return paginated(ctx, ctx.repo.statuses[sha_of(ctx.params.ref)] or {})
end

-- Deployments -------------------------------------------------------------------------------

local DEPLOYMENT_STATES = { error = true, failure = true, inactive = true, in_progress = true, queued = true,
  pending = true, success = true }

-- GitHub refuses a deployment whose required contexts (every context, when none are named)
-- have not succeeded on the commit: 409 with the contexts in the way.
local function failing_contexts(repo, sha, required)
  local latest = {}
  for _, s in ipairs(repo.statuses[sha] or {}) do
    if latest[s.context] == nil then latest[s.context] = s.state end
  end
  local failing = {}
  if required == nil then
    for context, state in pairs(latest) do
      if state ~= "success" then failing[#failing + 1] = { context = context, state = state } end
    end
  else
    for _, context in ipairs(required) do
      if latest[context] ~= "success" then
        failing[#failing + 1] = { context = context, state = latest[context] or "missing" }
      end
    end
  end
  table.sort(failing, function(a, b) return a.context < b.context end)
  return failing
end

local function create_deployment(ctx)
  local body = ctx.body
  if type(body.ref) ~= "string" or body.ref == "" then
    return validation_failed(ctx, { { resource = "Deployment", code = "missing_field", field = "ref" } })
  end
  -- an empty object where GitHub wants a list is refused ("strings" takes only a JSON array),
  -- so a client that sends {} for [] is caught here as it would be there
  local errors = invalid_fields("Deployment", body, { { "required_contexts", "strings" }, { "task", "string" },
    { "environment", "string" }, { "description", "string" }, { "auto_merge", "boolean" },
    { "transient_environment", "boolean" }, { "production_environment", "boolean" }, { "payload", "payload" } })
  if #errors > 0 then return validation_failed(ctx, errors) end
  local required = body.required_contexts ~= json.null and body.required_contexts or nil
  local sha = sha_of(body.ref)
  local failing = failing_contexts(ctx.repo, sha, required)
  if #failing > 0 then
    return answer(ctx, 409, { message = ("Conflict: Commit status checks failed for %s."):format(body.ref),
      documentation_url = DOCS,
      errors = array{ { resource = "Deployment", field = "required_contexts", code = "invalid",
        contexts = array(failing) } } })
  end
  local id = next_id(ctx.gh)
  local url = repo_url(ctx, ctx.repo) .. "/deployments/" .. id
  local environment = type(body.environment) == "string" and body.environment or "production"
  local payload = body.payload
  if type(payload) == "string" then
    local decoded = json.decode(payload)
    payload = decoded or payload
  end
  local deployment = {
    id = id, node_id = node_id("Deployment", id), url = url, sha = sha, ref = body.ref,
    task = body.task or "deploy", payload = payload or json.object{},
    original_environment = environment, environment = environment,
    description = or_null(body.description), creator = user_object(ctx),
    created_at = now_iso(), updated_at = now_iso(),
    statuses_url = url .. "/statuses", repository_url = repo_url(ctx, ctx.repo),
    transient_environment = body.transient_environment == true,
    production_environment = body.production_environment == nil and environment == "production"
      or body.production_environment == true,
  }
  table.insert(ctx.repo.deployments, 1, deployment)
  return answer(ctx, 201, deployment, { Location = url })
end

local function list_deployments(ctx)
  local q = ctx.query
  local items = {}
  for _, d in ipairs(ctx.repo.deployments) do
    if (not q.sha or d.sha == q.sha) and (not q.ref or d.ref == q.ref) and (not q.task or d.task == q.task)
        and (not q.environment or d.environment == q.environment) then
      items[#items + 1] = d
    end
  end
  return paginated(ctx, items)
end

local function create_deployment_status(ctx)
  local deployment = find_by(ctx.repo.deployments, "id", tonumber(ctx.params.deployment_id))
  if not deployment then return not_found(ctx) end
  local body = ctx.body
  local errors = invalid_fields("DeploymentStatus", body, { { "description", "string" }, { "environment", "string" },
    { "environment_url", "string" }, { "log_url", "string" }, { "target_url", "string" },
    { "auto_inactive", "boolean" } })
  if not DEPLOYMENT_STATES[body.state] then
    errors[#errors + 1] = { resource = "DeploymentStatus", code = "invalid", field = "state" }
  end
  if #errors > 0 then return validation_failed(ctx, errors) end
  local id = next_id(ctx.gh)
  local environment = type(body.environment) == "string" and body.environment or deployment.environment
  local status = {
    id = id, node_id = node_id("DeploymentStatus", id),
    url = deployment.url .. "/statuses/" .. id, state = body.state, creator = user_object(ctx),
    description = body.description or "", environment = environment,
    target_url = body.log_url or body.target_url or "", log_url = body.log_url or body.target_url or "",
    environment_url = body.environment_url or "",
    created_at = now_iso(), updated_at = now_iso(),
    deployment_url = deployment.url, repository_url = deployment.repository_url,
  }
  local list = ctx.repo.deployment_statuses[deployment.id] or {}
  ctx.repo.deployment_statuses[deployment.id] = list
  table.insert(list, 1, status)
  deployment.updated_at = status.created_at
  if environment ~= deployment.environment then deployment.environment = environment end
  return answer(ctx, 201, status, { Location = status.url })
end

local function list_deployment_statuses(ctx)
  local deployment = find_by(ctx.repo.deployments, "id", tonumber(ctx.params.deployment_id))
  if not deployment then return not_found(ctx) end
  return paginated(ctx, ctx.repo.deployment_statuses[deployment.id] or {})
end

-- Routes ------------------------------------------------------------------------------------

local R = "/repos/{owner}/{repo}"
local ROUTES = {
  { "GET", R, function(ctx) return answer(ctx, 200, repo_object(ctx, ctx.repo)) end },
  { "GET", R .. "/releases", function(ctx)
    local newest_first = {}
    for i = #ctx.repo.releases, 1, -1 do newest_first[#newest_first + 1] = ctx.repo.releases[i] end
    return paginated(ctx, newest_first)
  end },
  { "POST", R .. "/releases", create_release },
  { "POST", R .. "/releases/generate-notes", function(ctx)
    local body = ctx.body
    local errors = invalid_fields("Release", body, { { "previous_tag_name", "string" },
      { "target_commitish", "string" }, { "configuration_file_path", "string" } })
    if type(body.tag_name) ~= "string" or body.tag_name == "" then
      errors[#errors + 1] = { resource = "Release", code = "missing_field", field = "tag_name" }
    end
    if #errors > 0 then return validation_failed(ctx, errors) end
    local previous = body.previous_tag_name ~= json.null and body.previous_tag_name or nil
    return answer(ctx, 200, release_notes(ctx, ctx.repo, body.tag_name, previous))
  end },
  { "GET", R .. "/releases/tags/{tag}", function(ctx)
    local release = find_by(ctx.repo.releases, "tag_name", ctx.params.tag)
    if not release or release.draft then return not_found(ctx) end -- drafts have no tag yet
    return answer(ctx, 200, release)
  end },
  { "GET", R .. "/releases/{release_id}", function(ctx)
    local release = find_by(ctx.repo.releases, "id", tonumber(ctx.params.release_id))
    if not release then return not_found(ctx) end
    return answer(ctx, 200, release)
  end },
  { "PATCH", R .. "/releases/{release_id}", update_release },
  { "GET", R .. "/releases/{release_id}/assets", function(ctx)
    local release = find_by(ctx.repo.releases, "id", tonumber(ctx.params.release_id))
    if not release then return not_found(ctx) end
    return paginated(ctx, release.assets)
  end },
  { "POST", "/uploads" .. R .. "/releases/{release_id}/assets", upload_asset, raw_body = true },
  { "DELETE", R .. "/releases/assets/{asset_id}", delete_asset },
  { "GET", R .. "/issues", list_issues },
  { "POST", R .. "/issues", create_issue },
  { "GET", R .. "/issues/{issue_number}", get_issue },
  { "PATCH", R .. "/issues/{issue_number}", update_issue },
  { "GET", R .. "/issues/{issue_number}/comments", list_comments },
  { "POST", R .. "/issues/{issue_number}/comments", create_comment },
  { "GET", "/orgs/{org}/teams/{team_slug}/members", team_members, no_repo = true },
  { "POST", R .. "/statuses/{sha}", create_status },
  { "GET", R .. "/commits/{ref}/statuses", list_statuses },
  { "GET", R .. "/deployments", list_deployments },
  { "POST", R .. "/deployments", create_deployment },
  { "GET", R .. "/deployments/{deployment_id}/statuses", list_deployment_statuses },
  { "POST", R .. "/deployments/{deployment_id}/statuses", create_deployment_status },
}

for _, route in ipairs(ROUTES) do
  route.segments = {}
  for seg in route[2]:gmatch("[^/]+") do route.segments[#route.segments + 1] = seg end
end

-- The route for a method and path, with its parameters (percent-decoded); nil when none.
local function match_route(method, path)
  local segments = {}
  for seg in path:gmatch("[^/]+") do segments[#segments + 1] = url_decode(seg) end
  for _, route in ipairs(ROUTES) do
    if route[1] == method and #route.segments == #segments then
      local params = {}
      for i, want in ipairs(route.segments) do
        local name = want:match("^{(.+)}$")
        if name then
          params[name] = segments[i]
        elseif want ~= segments[i] then
          params = nil
          break
        end
      end
      if params then return route, params end
    end
  end
  return nil
end

local function bearer_token(headers)
  local auth = headers["authorization"]
  if type(auth) ~= "string" then return nil end
  local token = auth:match("^[Bb]earer%s+(%S+)%s*$") or auth:match("^[Tt]oken%s+(%S+)%s*$")
  return token
end

local function token_accepted(gh, token)
  for k, v in pairs(gh.tokens or {}) do
    if v == token or (k == token and v == true) then return true end
  end
  return false
end

local function render_fault(ctx, fault)
  local headers = standard_headers(ctx.gh)
  for k, v in pairs(fault.headers or {}) do headers[k] = tostring(v) end
  local status = fault.status or (fault.body and 200) or 500
  local body = fault.body
  if body == nil then
    body = json.encode{ message = fault.message or "Internal Server Error",
      documentation_url = fault.documentation_url or DOCS }
  end
  return { status = status, headers = headers, body = body }
end

-- github.handle(sb, req): req.path has lost its /github prefix already
function emulator.handle(sb, req)
  local gh = sb.state.github
  local host = req.headers["host"]
  local ctx = {
    sb = sb, gh = gh, req = req, query = parse_query(req.query),
    -- absolute URLs point back at this sandbox, under the prefix the client used
    base = (host and ("http://" .. host) or sb.url) .. "/github",
  }
  local route, params = match_route(req.method, req.path)
  local key = req.method .. " " .. (route and route[2] or req.path)
  sb:record("github", key, req)
  local entry = sb.requests[#sb.requests]
  local result = emulator.answer(sb, req, ctx, route, params, key)
  entry.status = result.status
  return result
end

-- A 200 answer to a GET gets its ETag; a request that names it gets 304 and its request is not
-- counted against the rate limit (GitHub's rule for conditional requests).
local function conditional(ctx, req, result)
  if req.method ~= "GET" or result.status ~= 200 then return result end
  local etag = ('"%s"'):format(crypto.sha256(result.body or ""))
  result.headers["ETag"] = etag
  local asked = req.headers["if-none-match"]
  if asked and (asked == etag or asked == "W/" .. etag or asked == "*") then
    ctx.gh.rate.used = math.max(0, ctx.gh.rate.used - 1)
    result.headers["X-RateLimit-Used"] = tostring(ctx.gh.rate.used)
    result.headers["X-RateLimit-Remaining"] = tostring(math.max(0, ctx.gh.rate.limit - ctx.gh.rate.used))
    result.headers["Content-Type"] = nil
    result.status, result.body = 304, ""
  end
  return result
end

function emulator.answer(sb, req, ctx, route, params, key)
  local gh = sb.state.github
  local fault = sb:take_fault("github", key)
  if fault then return render_fault(ctx, fault) end
  local token = bearer_token(req.headers)
  if not token or token == "" then
    return fail(ctx, 401, "Requires authentication")
  elseif not token_accepted(gh, token) then
    return fail(ctx, 401, "Bad credentials")
  end
  local limited = gh.rate_limit
  if limited and os.time() >= (limited.reset or 0) then
    gh.rate_limit, limited = nil, nil -- the window is over: the limit is lifted
  end
  if limited and (limited.remaining or 0) <= 0 then
    return answer(ctx, 403, { message = ("API rate limit exceeded for user ID %d."):format(user_object(ctx).id),
      documentation_url = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api" })
  end
  if limited then limited.remaining = limited.remaining - 1 end
  gh.rate.used = gh.rate.used + 1
  ctx.login = (gh.token_users or {})[token]
  if not route then return not_found(ctx) end
  ctx.params = params
  if not route.raw_body then
    ctx.body = {}
    if req.body and req.body:find("%S") then
      local decoded = json.decode(req.body)
      -- GitHub's bodies are objects; a list or a scalar is as unreadable to it as bad syntax
      if type(decoded) ~= "table" or json.is_array(decoded) then
        return fail(ctx, 400, "Problems parsing JSON")
      end
      ctx.body = decoded
    end
  end
  -- a seeded world a handler trips on, or a bug here, must still answer as GitHub does: a
  -- raw text 500 would make the client's error say nothing and octokit choke on it
  local ok, result = xpcall(function()
    if route.no_repo then return route[3](ctx) end
    ctx.repo = repository(ctx, params.owner, params.repo)
    if not ctx.repo then return not_found(ctx) end -- as GitHub answers for a repository it hides too
    return route[3](ctx)
  end, debug.traceback)
  if ok then return conditional(ctx, req, result) end
  log.error(("sandbox github: %s %s failed: %s"):format(req.method, req.path, tostring(result)))
  return fail(ctx, 500, "Internal Server Error")
end

return emulator
