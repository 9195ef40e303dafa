-- GitHub REST client for pipelines: releases, issues, commit statuses, deployments. It follows
-- pagination, waits out GitHub's rate limits (the task yields, the loop goes on) and checks
-- webhook signatures.
--
--   local github = require "stagehost.github"
--   local gh = github.client{ token =, repo = "owner/name", api_url =, max_wait = 900,
--                             retries = 3, backoff = 1, secondary_wait = 60, timeout = 300 }
--
--   token           GITHUB_TOKEN by default; masked in every line stagehost writes from now on
--   repo            GITHUB_REPOSITORY by default; the repository methods below need it
--   api_url         GITHUB_API_URL, else https://api.github.com (Enterprise: https://HOST/api/v3)
--   max_wait        longest wait for a rate limit to reset, seconds; beyond it the call raises
--   retries         extra attempts after a rate limit (any method: GitHub refused, so did nothing)
--                   or a 5xx (GET, HEAD, PUT and DELETE only: a POST or PATCH that failed late
--                   may have created the issue or comment already, and a second one would
--                   duplicate it); a refused or cut connection is retried for GET and HEAD.
--                   One budget for all of these (stagehost.util.retry); a redirect starts anew
--   backoff         ceiling of the first pause after a 5xx or a cut connection, doubled each
--                   time up to 30 s; the pause is drawn below it (full jitter)
--   secondary_wait  pause after a secondary rate limit that names no Retry-After, doubled
--                   each time (GitHub asks for at least a minute)
--   timeout         seconds for each request, uploads included
--
-- Generic
--   gh:request(method, path, {query =, body = string | table, json =, headers =}) -> data, response
--       path is relative to api_url ("/repos/o/r") or an absolute URL on api_url's host; data
--       is the decoded JSON (nil for an empty body); a table body is sent as JSON; headers
--       replace the defaults of the same name, whatever its case (accept = ... for Accept)
--   gh:paginate(path [, query]) -> every item of every page (per_page = 100 unless given),
--       following the Link header's rel="next" (a link back to a page already fetched raises)
--   gh:get_repo() -> repository
--   gh:get_if_changed(path, etag [, query]) -> data, etag, response: a conditional GET
--       (If-None-Match: etag); data is nil when GitHub answers 304 Not Modified, which costs no
--       rate limit, so polling with it is free while nothing changes. One page, no pagination
-- Releases
--   gh:get_release_by_tag(tag) -> release, or nil when the tag has none
--   gh:create_release{tag_name, name, body, draft, prerelease, target_commitish,
--                     generate_release_notes} -> release
--   gh:update_release(id, fields) -> release
--   gh:generate_release_notes{tag_name, previous_tag_name, target_commitish} -> {name, body}
--   gh:upload_release_asset(release | release_id, {name, path | content, content_type,
--                           label}) -> asset (a path is streamed; name defaults to its basename)
-- Issues
--   gh:create_issue{title, body, labels, assignees, milestone} -> issue
--   gh:list_issues([query]) -> every issue of every page (GitHub lists pull requests too)
--   gh:comment(number, body) -> comment
--   gh:list_comments(number) -> every comment
--   gh:close_issue(number [, state_reason]) -> issue
-- Teams
--   gh:list_team_members(org, team_slug) -> every member (the token needs read:org)
-- Commit statuses
--   gh:create_status(sha, {state, target_url, description, context}) -> status
--   gh:list_statuses(ref) -> every status of the ref, newest first
-- Deployments
--   gh:create_deployment{ref, environment, description, auto_merge = false, required_contexts,
--                        payload, task, transient_environment, production_environment} -> deployment
--   gh:create_deployment_status(id, {state, environment_url, log_url, description,
--                               environment, auto_inactive}) -> status
--   gh:list_deployments([query]) -> every deployment
--   gh:list_deployment_statuses(id) -> every status of the deployment
-- Webhooks
--   github.verify_webhook(secret, body, signature_header) -> true | false
--
-- Redirects (301, 302, 307, 308) are followed, at most 5 in a row; the token goes only to the
-- origin the call started at, and a POST or PATCH is not sent to another origin at all.
-- Asset uploads go only to api_url's origin, or uploads.github.com for api.github.com.
--
-- A non-2xx answer raises a table {status, message, documentation_url, errors, method, path}
-- whose tostring is one line: "github: POST /repos/o/r/releases: 422 Validation Failed
-- (Release.tag_name already_exists)". A body that is not JSON raises "github: GET /path:
-- malformed JSON in the response: at line L, column C ...". Misuse raises, at the caller's line,
-- "bad argument #N to 'client:NAME' (... expected, got ...)" for a method (arguments counted
-- after the client) and "... to 'github.NAME' ..." for a function of the module; ids and numbers
-- are integers. The methods but request, paginate and upload_release_asset are rows of one route
-- table (ROUTES below); github.routes lists them parsed, read-only.
local http = require("stagehost.http")
local json = require("stagehost.json")
local log = require("stagehost.log")
local tables = require("stagehost.util.tables")
local task = require("stagehost.task")
local retry = require("stagehost.util.retry")
local errors = require("stagehost.errors")
local crypto = require("stagehost.crypto")
local fs = require("stagehost.fs")

local github = {}

local DEFAULT_API_URL = "https://api.github.com"
local API_VERSION = "2022-11-28"

-- Errors ------------------------------------------------------------------------------------

local GitHubError = { __name = "github.error" }
GitHubError.__index = GitHubError
GitHubError.__tostring = function(e) return e.text end

-- "Release.tag_name already_exists; body is too long": what GitHub says went wrong, in short
local function describe_details(errors)
  if type(errors) ~= "table" then return nil end
  local parts = {}
  for _, e in ipairs(errors) do
    if type(e) == "string" then
      parts[#parts + 1] = e
    elseif type(e) == "table" then
      if type(e.message) == "string" and e.message ~= "" then
        parts[#parts + 1] = e.message
      else
        local where = table.concat({ type(e.resource) == "string" and e.resource or nil,
          type(e.field) == "string" and e.field or nil }, ".")
        local code = type(e.code) == "string" and e.code or "invalid"
        parts[#parts + 1] = where ~= "" and (where .. " " .. code) or code
      end
    end
  end
  if #parts == 0 then return nil end
  return table.concat(parts, "; ")
end

-- A copy with every string masked: GitHub's error details echo what was sent, which may hold a
-- secret. Metatables are kept so a JSON array stays one.
local function masked_copy(value, depth)
  return tables.masked_copy(value, log.masked, 16, depth)
end

local function one_line(s)
  return (tostring(s):gsub("%s*[\r\n]+%s*", " "))
end

-- The error every failed call raises. Its text goes through the mask: a server that echoes the
-- Authorization header back must not put the token into a log or a report.
local function api_error(fields, text)
  local e = setmetatable(fields, GitHubError)
  if not text then
    local message = e.message ~= nil and one_line(e.message) or "(no message)"
    text = ("github: %s %s: %s %s"):format(e.method, e.path, tostring(e.status), message)
    local details = describe_details(e.errors)
    if details then text = text .. " (" .. one_line(details) .. ")" end
  end
  e.text = log.masked(text)
  if type(e.message) == "string" then e.message = log.masked(e.message) end
  if type(e.documentation_url) == "string" then e.documentation_url = log.masked(e.documentation_url) end
  if e.errors ~= nil then e.errors = masked_copy(e.errors, 0) end
  return e
end

-- Misuse ------------------------------------------------------------------------------------

-- The one form of every misuse message, lauxlib's: "bad argument #2 to 'client:comment'
-- (string expected, got nil)". who is the call as the caller wrote it: 'client:NAME' for a
-- method (arguments counted after the client), 'github.NAME' for a function of the module.
-- level is error()'s, seen from argerror: 3, the default, blames the caller of its caller.
local function argerror(who, n, what, level)
  errors.argument_at(level or 3, n, who, "%s", what)
end

-- What is wrong with value as expected ("string", "table|integer", "[string]" for a list of
-- strings: keys 1..n, no holes; a string where a list belongs is a mistake, not []), or nil.
-- "integer" takes a number with an integer value (7 or 7.0): ids go into paths as digits.
local function mismatch(value, expected, field)
  local prefix = field and (field .. ": ") or ""
  local items = expected:match("^%[(.*)%]$")
  if items then
    if type(value) ~= "table" then return ("%sa list expected, got %s"):format(prefix, type(value)) end
    local count = 0
    for k in pairs(value) do
      count = count + 1
      if math.type(k) ~= "integer" or k < 1 then
        return ("%sa list expected, got a table with the key %s"):format(prefix, tostring(k))
      end
    end
    if count ~= #value then return prefix .. "a list expected, got a table with holes" end
    for i, item in ipairs(value) do
      local wrong = mismatch(item, items, ("%s[%d]"):format(field or "", i))
      if wrong then return wrong end
    end
    return nil
  end
  local kind = type(value)
  for want in expected:gmatch("[^|]+") do
    if kind == want or (want == "integer" and kind == "number" and math.tointeger(value)) then return nil end
  end
  -- 1.5 says more than "number" when an integer was wanted
  local got = kind == "number" and expected:find("integer", 1, true) and tostring(value) or kind
  return ("%s%s expected, got %s"):format(prefix, (expected:gsub("|", " or ")), got)
end

-- check_arg("client:comment", 2, body, "string") raises, at the caller's line, "bad argument #2
-- to 'client:comment' (string expected, got nil)"; field names a field of a table argument.
local function check_arg(who, n, value, expected, optional, field)
  if value == nil and optional then return end
  local wrong = mismatch(value, expected, field)
  if wrong then argerror(who, n, wrong, 4) end
end

-- URLs --------------------------------------------------------------------------------------

local url_encode = require("stagehost.util.url").encode

-- Sorted keys, so the same query always gives the same URL; lists are joined with commas, as
-- GitHub takes them (labels=bug,ui).
local function encode_query(query)
  if not query then return "" end
  local keys = {}
  for k in pairs(query) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = query[k]
    if type(v) == "table" then
      local items = {}
      for i, item in ipairs(v) do items[i] = tostring(item) end
      v = table.concat(items, ",")
    end
    parts[#parts + 1] = url_encode(k) .. "=" .. url_encode(v)
  end
  return table.concat(parts, "&")
end

local function with_query(url, query)
  local q = encode_query(query)
  if q == "" then return url end
  return url .. (url:find("?", 1, true) and "&" or "?") .. q
end

local DEFAULT_PORTS = { http = "80", https = "443" }

-- An absolute http(s) URL as scheme, authority and the rest, the scheme and the host
-- lower-cased and a default port dropped, so HTTPS://API.github.com:443/x is on the same
-- origin as https://api.github.com; nil for anything else.
local function split_url(url)
  local scheme, authority, rest = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil end
  scheme = scheme:lower()
  if not DEFAULT_PORTS[scheme] or authority == "" then return nil end
  -- user:password@ keeps its case; it is part of the origin, so a URL with one never matches
  local userinfo, hostport = authority:match("^(.*@)(.*)$")
  hostport = (hostport or authority):lower()
  local host, port = hostport:match("^(.*):(%d*)$")
  if host and (port == "" or port == DEFAULT_PORTS[scheme]) then hostport = host end
  return scheme, (userinfo or "") .. hostport, rest
end

local function origin_of(url)
  local scheme, authority = split_url(url)
  return scheme and (scheme .. "://" .. authority) or nil
end

-- the same URL with its origin written the one way origin_of writes it
local function canonical_url(url)
  local scheme, authority, rest = split_url(url)
  return scheme and (scheme .. "://" .. authority .. rest) or url
end

local function is_absolute(s)
  return s:match("^%a[%w+.-]*:") ~= nil
end

-- RFC 3986 section 5.2.4, on a path that starts with "/"
local function remove_dot_segments(path)
  local segments, start = {}, 1
  while true do
    local slash = path:find("/", start, true)
    segments[#segments + 1] = path:sub(start, (slash or 0) - 1)
    if not slash then break end
    start = slash + 1
  end
  local out = {}
  for i, seg in ipairs(segments) do
    if seg == ".." or seg == "." then
      if seg == ".." and #out > 1 then out[#out] = nil end -- out[1] is the "" before the first /
      if i == #segments then out[#out + 1] = "" end
    else
      out[#out + 1] = seg
    end
  end
  return table.concat(out, "/")
end

-- A reference (a Link target, a Location) made absolute against the URL it came with.
local function resolve_url(base, ref)
  ref = ref:match("^%s*(.-)%s*$")
  if is_absolute(ref) then return ref end
  local scheme, authority, rest = split_url(base)
  if not scheme then return ref end
  if ref:sub(1, 2) == "//" then return scheme .. ":" .. ref end
  local origin = scheme .. "://" .. authority
  local path, query = rest:match("^([^?#]*)([^#]*)")
  if path == "" then path = "/" end
  ref = ref:gsub("#.*$", "")
  if ref == "" then return origin .. path .. query end
  if ref:sub(1, 1) == "?" then return origin .. path .. ref end
  local merged = ref:sub(1, 1) == "/" and ref or (path:gsub("[^/]*$", "") .. ref)
  local merged_path, merged_query = merged:match("^([^?]*)(.*)$")
  return origin .. remove_dot_segments(merged_path) .. merged_query
end

-- Split on sep where it is outside <...> and quoted strings (a title="a, b" holds a comma).
local function split_outside(s, sep)
  local parts, start, i = {}, 1, 1
  local in_angle, in_quote = false, false
  while i <= #s do
    local c = s:sub(i, i)
    if in_quote then
      if c == "\\" then i = i + 1 elseif c == '"' then in_quote = false end
    elseif in_angle then
      if c == ">" then in_angle = false end
    elseif c == '"' then
      in_quote = true
    elseif c == "<" then
      in_angle = true
    elseif c == sep then
      parts[#parts + 1] = s:sub(start, i - 1)
      start = i + 1
    end
    i = i + 1
  end
  parts[#parts + 1] = s:sub(start)
  return parts
end

-- The target of the first link whose rel names rel, as RFC 8288 reads a Link header:
--   <https://api.github.com/repositories/1/issues?page=2>; rel="next", <...>; rel="last"
-- Parameter names and relation types are case-insensitive, the value a token or a quoted
-- string, rel a space-separated list; a link's second rel parameter is ignored.
local function link_rel(header, rel)
  if type(header) ~= "string" then return nil end
  for _, value in ipairs(split_outside(header, ",")) do
    local target, params = value:match("^%s*<([^>]*)>(.*)$")
    if target then
      for _, param in ipairs(split_outside(params, ";")) do
        local name, v = param:match("^%s*([^%s=]+)%s*=%s*(.-)%s*$")
        if name and name:lower() == "rel" then
          local quoted = v:match('^"(.*)"$')
          if quoted then v = quoted:gsub("\\(.)", "%1") end
          for r in v:gmatch("%S+") do
            if r:lower() == rel then return target end
          end
          break
        end
      end
    end
  end
  return nil
end

-- A copy of a list that encodes as a JSON array even when empty (required_contexts = {} means
-- "no checks", which an empty object would not). check_arg has vetted it.
local function as_array(list)
  if list == nil then return nil end
  local out = json.array{}
  for i, v in ipairs(list) do out[i] = v end
  return out
end

local function copy(t)
  local out = {}
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

-- The client --------------------------------------------------------------------------------

local Client = { __name = "github.client" }
Client.__index = Client
Client.__tostring = function(c)
  return ("github client for %s at %s"):format(c.repo or "(no repository)", c.api_url)
end

-- the tokens live here rather than on the client, so printing or encoding a client shows none
local tokens = setmetatable({}, { __mode = "k" })

-- gh.comment(1, "x") for gh:comment(1, "x"): lauxlib's "calling 'f' on bad self", at the
-- caller's line
local function method_check(self, name)
  if getmetatable(self) ~= Client then
    error(("calling 'client:%s' on bad self (call it as a method of a client, gh:%s(...))"):format(name, name), 3)
  end
end

-- github.client{token, repo, api_url, max_wait, retries, backoff, secondary_wait, timeout}
-- Defaults set for the whole process (stagehost run --sandbox points every client at the
-- sandbox); each beats the environment variable it stands for, an explicit option beats it.
local defaults = {}

-- github.configure{token =, repo =, api_url =} -> the previous defaults
function github.configure(opts)
  check_arg("github.configure", 1, opts, "table")
  local previous = defaults
  defaults = {}
  for _, name in ipairs{ "token", "repo", "api_url" } do
    check_arg("github.configure", 1, opts[name], "string", true, name)
    defaults[name] = opts[name]
  end
  return previous
end

function github.client(opts)
  check_arg("github.client", 1, opts, "table", true)
  opts = opts or {}
  for _, name in ipairs{ "token", "repo", "api_url" } do
    check_arg("github.client", 1, opts[name], "string", true, name)
  end
  for _, name in ipairs{ "max_wait", "retries", "backoff", "secondary_wait", "timeout" } do
    local v = opts[name]
    if v ~= nil and (type(v) ~= "number" or v < 0) then
      argerror("github.client", 1, ("%s: a number >= 0 expected, got %s"):format(name,
        type(v) == "number" and tostring(v) or type(v)))
    end
  end
  local token = opts.token or defaults.token or os.getenv("GITHUB_TOKEN")
  if token == nil or token == "" then
    error("github.client: no token: set GITHUB_TOKEN or pass token = ...", 2)
  end
  -- a token shorter than the mask accepts is not a GitHub token; let the server say so
  if #token >= 4 then log.mask(token) end
  local repo = opts.repo or defaults.repo or os.getenv("GITHUB_REPOSITORY")
  if repo == "" then repo = nil end
  if repo and not repo:match("^[%w%-%._]+/[%w%-%._]+$") then
    error(("github.client: repo must be \"owner/name\", got %q"):format(repo), 2)
  end
  local api_url = opts.api_url or defaults.api_url or os.getenv("GITHUB_API_URL")
  if api_url == nil or api_url == "" then api_url = DEFAULT_API_URL end
  api_url = api_url:gsub("/+$", "")
  if not origin_of(api_url) then
    error(("github.client: api_url must be an http:// or https:// URL, got %q"):format(api_url), 2)
  end
  api_url = canonical_url(api_url)
  local self = setmetatable({
    repo = repo,
    api_url = api_url,
    max_wait = opts.max_wait or 900,
    retries = math.floor(opts.retries or 3),
    backoff = opts.backoff or 1,
    secondary_wait = opts.secondary_wait or 60,
    timeout = opts.timeout or 300,
  }, Client)
  tokens[self] = token
  return self
end

-- A path template of GitHub's docs filled in: expand(self, "/repos/{owner}/{repo}/releases/{id}",
-- {id = 7}) -> "/repos/o/r/releases/7", each value one percent-encoded segment (a tag "rc/1"
-- stays one). {owner} and {repo} come from the client: one clear line, at the caller's, when
-- it has no repository.
local function expand(self, template, values)
  if not self.repo and template:find("{repo}", 1, true) then
    error("github: no repository: set GITHUB_REPOSITORY (owner/name) or pass repo = ... to github.client", 3)
  end
  local owner, name = (self.repo or ""):match("^([^/]*)/(.*)$")
  return (template:gsub("{([%w_]+)}", function(hole)
    local v
    if hole == "owner" then v = owner elseif hole == "repo" then v = name else v = values[hole] end
    return url_encode(math.type(v) == "float" and math.tointeger(v) or v)
  end))
end

-- what errors and logs call a URL: the part after api_url (or after the host, for uploads)
local function display_path(self, url, with_query)
  local shown
  url = canonical_url(url)
  if url:sub(1, #self.api_url) == self.api_url then
    shown = url:sub(#self.api_url + 1)
  else
    local _, _, rest = split_url(url)
    shown = rest or url
  end
  shown = shown:gsub(with_query and "#.*$" or "[?#].*$", "")
  if shown == "" or shown:sub(1, 1) == "?" then shown = "/" .. shown end
  return shown
end

-- The methods whose 5xx may be retried: repeating them does what one success would have
-- done. A POST or PATCH may have taken effect before the server failed.
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true }

local REDIRECTS = { [301] = true, [302] = true, [307] = true, [308] = true }
local MAX_REDIRECTS = 5

-- Set a header over any of the same name in another case: two Accept or two Authorization
-- headers would both be sent.
local function set_header(headers, name, value)
  local lname = name:lower()
  for k in pairs(headers) do
    if k:lower() == lname then headers[k] = nil end
  end
  headers[name] = value
end

-- How long to wait before trying again after this answer, or nil when it is final. Raises
-- when a rate limit resets later than max_wait allows.
local function wait_before_retry(self, res, method, shown, secondary_hits)
  local h = res.headers
  local status = res.status
  -- the wait, or one line when it is longer than max_wait allows; `longer` (a format, for the
  -- rest of the arguments) ends in "than" or "exceed", before "max_wait = N s"
  local function within_max_wait(wait, reason, fields, longer, ...)
    if wait > self.max_wait then
      fields.status, fields.method, fields.path = status, method, shown
      error(api_error(fields, ("github: %s %s: %d %s max_wait = %d s"):format(method, shown, status,
        longer:format(...), self.max_wait)), 0)
    end
    return wait, reason
  end
  if status == 403 or status == 429 then
    local retry_after = retry.after(h)
    if retry_after then
      return within_max_wait(retry_after, "secondary rate limit", { message = "secondary rate limit" },
        "secondary rate limit: GitHub asks to wait %d s, more than", retry_after)
    end
    if h["x-ratelimit-remaining"] == "0" then
      local reset = tonumber(h["x-ratelimit-reset"])
      -- the reset time has one-second resolution and clocks drift: one more second of margin
      local wait = reset and math.max(0, reset - os.time()) + 1 or 60
      local when = reset and os.date("!%Y-%m-%d %H:%M:%S UTC", reset) or "an unknown time"
      return within_max_wait(wait, "rate limit exhausted", { rate_limit_reset = reset, message = "API rate limit exceeded" },
        "API rate limit exceeded; it resets at %s, in %d s, more than", when, wait)
    end
    -- a secondary limit without Retry-After: GitHub says wait at least a minute, then longer
    local body = type(res.body) == "string" and res.body:lower() or ""
    if status == 429 or body:find("secondary rate limit", 1, true) then
      local wait = self.secondary_wait * 2 ^ secondary_hits
      return within_max_wait(wait, "secondary rate limit", { message = "secondary rate limit" },
        "secondary rate limit: the next wait, %d s, would exceed", wait)
    end
    return nil
  end
  if status >= 500 and IDEMPOTENT[method] then return "backoff", "server error" end
  return nil
end

-- the largest backoff ceiling after a 5xx or a cut connection (a rate limit waits as asked)
local BACKOFF_CAP = 30

-- One call: rate limits and server errors waited out, redirects followed, the answer
-- decoded, a failure raised. allow = {[404] = true} returns those statuses instead of
-- raising. -> data, response, the URL that answered
local function send(self, method, target, opts)
  opts = opts or {}
  local url = with_query(is_absolute(target) and target or (self.api_url .. target), opts.query)
  local shown = display_path(self, url)
  local headers = {
    ["Accept"] = "application/vnd.github+json",
    ["X-GitHub-Api-Version"] = API_VERSION,
    ["Authorization"] = "Bearer " .. tokens[self],
    ["User-Agent"] = "stagehost",
  }
  for k, v in pairs(opts.headers or {}) do set_header(headers, k, v) end
  local req = { method = method, url = url, headers = headers, timeout = self.timeout }
  if opts.json ~= nil then
    req.json = opts.json
  elseif opts.body_file then
    req.body_file = opts.body_file
  elseif opts.body ~= nil then
    req.body = opts.body
  end
  -- This client's rules as a stagehost.util.retry classifier, run by http.request: rate limits
  -- for any method (GitHub refused, so did nothing), 5xx for the idempotent methods, and a
  -- refused or cut connection only for reads (a POST cut after it was sent may have created
  -- the release already). Secondary-limit waits double over the whole call.
  local secondary_hits = 0
  req.retry = {
    attempts = self.retries + 1, base = self.backoff, cap = BACKOFF_CAP, max_wait = self.max_wait,
    classify = function(o)
      local res = o.response
      if res then
        if res.status < 300 or (opts.allow and opts.allow[res.status]) then return false end
        local wait, why = wait_before_retry(self, res, method, shown, secondary_hits)
        if not wait then return false end
        if why == "secondary rate limit" and o.attempt < o.attempts then secondary_hits = secondary_hits + 1 end
        return true, ("HTTP %d %s"):format(res.status, why), wait ~= "backoff" and wait or nil
      end
      if o.raised or not (method == "GET" or method == "HEAD") or not retry.TRANSIENT_KINDS[o.kind] then
        return false
      end
      local e = o.error
      return true, ("%s %s failed: %s"):format(e.method, e.url, e.reason)
    end,
  }
  local res
  local hops = 0
  local start_origin = origin_of(url)
  while true do
    req.retry.name = ("github: %s %s"):format(method, shown)
    local started = task.now()
    local ok, result = pcall(http.request, req)
    if not ok then
      if not errors.is(result, "transport") then error(result, 0) end -- a cancellation passes untouched
      error(log.masked(("github: %s %s: %s %s failed: %s"):format(method, shown, result.method, result.url,
        result.reason)), 0)
    end
    res = result
    log.debug(("github: %s %s: %d (%.2fs)"):format(method, shown, res.status, task.now() - started))
    if res.status < 300 or (opts.allow and opts.allow[res.status]) then break end
    -- rate limits and server errors were waited out above; a redirect is followed here, and
    -- starts its own attempts
    local location = REDIRECTS[res.status] and res.headers["location"]
    if type(location) ~= "string" or location == "" then break end
    local next_url = resolve_url(req.url, location)
    local next_origin = origin_of(next_url)
    local same = next_origin == start_origin
    -- elsewhere only reads go, and without the token; a POST there could act for us
    if not next_origin or not (same or method == "GET" or method == "HEAD") then break end
    hops = hops + 1
    if hops > MAX_REDIRECTS then
      error(api_error({ status = res.status, method = method, path = shown, message = "too many redirects" },
        ("github: %s %s: %d: more than %d redirects in a row"):format(method, shown, res.status,
          MAX_REDIRECTS)), 0)
    end
    if not same then set_header(req.headers, "Authorization", nil) end
    log.debug(("github: %s %s: %d, redirected to %s"):format(method, shown, res.status,
      same and display_path(self, next_url) or next_origin .. display_path(self, next_url)))
    req.url = canonical_url(next_url)
    shown = display_path(self, req.url)
  end
  local data
  if res.body and res.body:find("%S") then
    local decoded, where = json.decode(res.body)
    if decoded ~= nil then
      data = decoded
    elseif res.status < 300 then
      error(api_error({ status = res.status, method = method, path = shown, message = "malformed JSON in the response" },
        ("github: %s %s: malformed JSON in the response: at %s"):format(method, shown, where)), 0)
    else -- an HTML page from a proxy, say: its first line says more than nothing
      data = { message = res.body:match("^%s*([^\r\n]*)"):sub(1, 200) }
    end
  end
  if res.status >= 300 and not (opts.allow and opts.allow[res.status]) then
    local body = type(data) == "table" and data or {}
    error(api_error({
      status = res.status, method = method, path = shown,
      message = type(body.message) == "string" and body.message or nil,
      documentation_url = type(body.documentation_url) == "string" and body.documentation_url or nil,
      errors = type(body.errors) == "table" and body.errors or nil,
    }), 0)
  end
  return data, res, req.url
end

-- A path the caller gave, as send and collect take it: relative to api_url ("/" added), or an
-- absolute URL on api_url's origin made canonical. Anything else raises at the caller's line.
local function api_target(self, who, n, path)
  if is_absolute(path) then
    if origin_of(path) ~= origin_of(self.api_url) then
      argerror(who, n, ("a path under %s expected; the token is not sent elsewhere"):format(self.api_url), 4)
    end
    return canonical_url(path)
  end
  return path:sub(1, 1) == "/" and path or ("/" .. path)
end

-- The list on a page: most endpoints answer an array; a few wrap it ({total_count, items}).
local function page_items(data)
  if type(data) ~= "table" then return {} end
  if json.is_array(data) or data[1] ~= nil then return data end
  for key, value in pairs(data) do
    if type(value) == "table" and json.is_array(value) and key ~= "errors" then return value end
  end
  return {}
end

-- path is under api_url or an absolute URL on its origin (made canonical by the caller)
local function collect(self, path, query)
  local q = copy(query)
  if q.per_page == nil and not path:find("[?&]per_page=") then q.per_page = 100 end
  local items = {}
  local api_origin = origin_of(self.api_url)
  local url = with_query(is_absolute(path) and path or (self.api_url .. path), q)
  -- the next link carries the whole query: pages are told apart by their whole URL
  local fetched = {}
  while url do
    fetched[url] = true
    local data, res, answered = send(self, "GET", url)
    for _, item in ipairs(page_items(data)) do items[#items + 1] = item end
    local target = link_rel(res.headers["link"], "next")
    if target then
      target = resolve_url(answered, target)
      if origin_of(target) ~= api_origin then
        error(log.masked(("github: GET %s: the next page is on another host (%s); the token is not sent there"):format(
          display_path(self, answered), origin_of(target) or target)), 0)
      end
      target = canonical_url(target)
      if fetched[target] then
        error(log.masked(("github: GET %s: the next page, %s, was fetched already; the Link header loops"):format(
          display_path(self, answered), display_path(self, target, true))), 0)
      end
    end
    url = target
  end
  return json.array(items)
end

function Client:request(method, path, opts)
  method_check(self, "request")
  check_arg("client:request", 1, method, "string")
  check_arg("client:request", 2, path, "string")
  check_arg("client:request", 3, opts, "table", true)
  if not method:match("^[A-Z]+$") then
    argerror("client:request", 1, ("an upper-case HTTP method expected, got %q"):format(method))
  end
  opts = opts or {}
  if opts.body ~= nil and opts.json ~= nil then
    argerror("client:request", 3, "give either body or json, not both")
  end
  check_arg("client:request", 3, opts.headers, "table", true, "headers")
  for k, v in pairs(opts.headers or {}) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      argerror("client:request", 3, ("headers: names and string values expected, got %s = %s"):format(type(k), type(v)))
    end
  end
  local call = { query = opts.query, headers = opts.headers }
  if type(opts.body) == "table" then call.json = opts.body
  elseif opts.body ~= nil then call.body = opts.body
  else call.json = opts.json end
  local data, res = send(self, method, api_target(self, "client:request", 2, path), call)
  return data, res
end

function Client:get_if_changed(path, etag, query)
  method_check(self, "get_if_changed")
  check_arg("client:get_if_changed", 1, path, "string")
  check_arg("client:get_if_changed", 2, etag, "string", true)
  check_arg("client:get_if_changed", 3, query, "table", true)
  local data, res = send(self, "GET", api_target(self, "client:get_if_changed", 1, path),
    { query = query, headers = etag and { ["If-None-Match"] = etag } or nil, allow = { [304] = true } })
  if res.status == 304 then return nil, etag, res end
  return data, res.headers["etag"], res
end

function Client:paginate(path, query)
  method_check(self, "paginate")
  check_arg("client:paginate", 1, path, "string")
  check_arg("client:paginate", 2, query, "table", true)
  return collect(self, api_target(self, "client:paginate", 1, path), query)
end

-- The routes ----------------------------------------------------------------------------------

-- Each method below is one row: its name, "METHOD /path" as GitHub's REST docs write it, then
-- its arguments in order as "name: type" (a type as check_arg takes it, "?" when it may be
-- nil). Where an argument goes follows from its name: a {hole} of the path (one percent-encoded
-- segment; {owner} and {repo} are the client's), "query" (the query string), "body" (a table
-- sent as the JSON body, copied) or "body.FIELD" (one field of it). Then, all optional:
--   fields    checks on the body table's fields, "name: type" again; a list type ("[string]")
--             is sent as a JSON array even when empty
--   defaults  body fields set when the caller left them nil
--   paginate  GET every page (gh:paginate) and return every item
--   nil_on    a status that answers nil instead of raising
-- Every method checks its arguments (misuse raises "bad argument #N to 'client:NAME' (...)" at
-- the caller's line) and returns the decoded answer. Methods with logic of their own
-- (request, paginate, upload_release_asset) are functions below, on the same check_arg.
local ROUTES = {
  { "get_repo",                 "GET   /repos/{owner}/{repo}" },
  -- Releases
  { "get_release_by_tag",       "GET   /repos/{owner}/{repo}/releases/tags/{tag}", "tag: string", nil_on = 404 },
  { "create_release",           "POST  /repos/{owner}/{repo}/releases", "body: table", fields = { "tag_name: string" } },
  { "update_release",           "PATCH /repos/{owner}/{repo}/releases/{release_id}", "release_id: integer", "body: table" },
  { "generate_release_notes",   "POST  /repos/{owner}/{repo}/releases/generate-notes", "body: table",
    fields = { "tag_name: string" } },
  -- Issues
  { "create_issue",             "POST  /repos/{owner}/{repo}/issues", "body: table",
    fields = { "title: string", "labels: [string|table]?", "assignees: [string]?" } },
  { "list_issues",              "GET   /repos/{owner}/{repo}/issues", "query: table?", paginate = true },
  { "comment",                  "POST  /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "issue_number: integer", "body.body: string" },
  { "list_comments",            "GET   /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "issue_number: integer", paginate = true },
  { "close_issue",              "PATCH /repos/{owner}/{repo}/issues/{issue_number}",
    "issue_number: integer", "body.state_reason: string?", defaults = { state = "closed" } },
  -- Teams
  { "list_team_members",        "GET   /orgs/{org}/teams/{team_slug}/members", "org: string", "team_slug: string",
    paginate = true },
  -- Commit statuses
  { "create_status",            "POST  /repos/{owner}/{repo}/statuses/{sha}", "sha: string", "body: table",
    fields = { "state: string" } },
  { "list_statuses",            "GET   /repos/{owner}/{repo}/commits/{ref}/statuses", "ref: string", paginate = true },
  -- Deployments. GitHub merges the default branch into ref first unless told not to: a
  -- deployment of an exact build must not change what it deploys.
  { "create_deployment",        "POST  /repos/{owner}/{repo}/deployments", "body: table",
    fields = { "ref: string", "required_contexts: [string]?" }, defaults = { auto_merge = false } },
  { "create_deployment_status", "POST  /repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
    "deployment_id: integer", "body: table", fields = { "state: string" } },
  { "list_deployments",         "GET   /repos/{owner}/{repo}/deployments", "query: table?", paginate = true },
  { "list_deployment_statuses", "GET   /repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
    "deployment_id: integer", paginate = true },
}

-- "tag_name: string?" -> {name = "tag_name", type = "string", optional = true}
local function parse_param(route, text)
  local name, kind, optional = text:match("^([%w_.]+):%s*(%S-)(%??)$")
  assert(name, ("github: route %s: %q is not \"name: type\""):format(route.name, text))
  return { name = name, type = kind, optional = optional == "?" }
end

-- A row of ROUTES as the method needs it, checked once at load: every hole of the path has an
-- argument and every argument a place.
local function parse_route(row)
  local route = { name = row[1], paginate = row.paginate == true, nil_on = row.nil_on,
    defaults = row.defaults, args = {}, fields = {} }
  route.method, route.path = row[2]:match("^(%u+)%s+(/%S*)$")
  assert(route.method, ("github: route %s: %q is not \"METHOD /path\""):format(route.name, row[2]))
  local holes = {}
  for hole in route.path:gmatch("{([%w_]+)}") do holes[hole] = hole == "owner" or hole == "repo" end
  for i = 3, #row do
    local a = parse_param(route, row[i])
    if holes[a.name] == false then
      assert(not a.optional and (a.type == "string" or a.type == "integer"),
        ("github: route %s: the path's {%s} must be a required string or integer"):format(route.name, a.name))
      a.into, holes[a.name] = "path", true
    elseif a.name == "query" or a.name == "body" then
      a.into = a.name
    else
      a.into, a.field = "body", a.name:match("^body%.([%w_]+)$")
      assert(a.field, ("github: route %s: argument %s goes nowhere"):format(route.name, a.name))
    end
    route.args[#route.args + 1] = a
  end
  for hole, filled in pairs(holes) do
    assert(filled, ("github: route %s: nothing fills {%s}"):format(route.name, hole))
  end
  for _, text in ipairs(row.fields or {}) do route.fields[#route.fields + 1] = parse_param(route, text) end
  return route
end

-- The method of one route. Every check is called from here, so check_arg and expand blame the
-- method's caller.
local function define(route)
  local who = "client:" .. route.name
  Client[route.name] = function(self, ...)
    method_check(self, route.name)
    local args = table.pack(...)
    for n, a in ipairs(route.args) do
      check_arg(who, n, args[n], a.type, a.optional, nil)
      if a.name == "body" and args[n] ~= nil then
        for _, f in ipairs(route.fields) do check_arg(who, n, args[n][f.name], f.type, f.optional, f.name) end
      end
    end
    local values, query, body = {}, nil, nil
    for n, a in ipairs(route.args) do
      local v = args[n]
      if a.into == "path" then values[a.name] = v
      elseif a.into == "query" then query = v
      elseif a.field then body = body or {}; body[a.field] = v
      else body = copy(v) end
    end
    local path = expand(self, route.path, values)
    if route.paginate then return (collect(self, path, query)) end
    if route.defaults then
      body = body or {}
      for k, v in pairs(route.defaults) do
        if body[k] == nil then body[k] = v end
      end
    end
    for _, f in ipairs(route.fields) do
      if f.type:sub(1, 1) == "[" then body[f.name] = as_array(body[f.name]) end
    end
    local data, res = send(self, route.method, path, { query = query, json = body,
      allow = route.nil_on and { [route.nil_on] = true } or nil })
    if res.status == route.nil_on then return nil end
    return data
  end
end

-- github.routes: the parsed rows, in order, for tests and tools; read them, do not change them
github.routes = {}
for i, row in ipairs(ROUTES) do
  github.routes[i] = parse_route(row)
  define(github.routes[i])
end

-- Release assets ----------------------------------------------------------------------------

function Client:upload_release_asset(release, asset)
  local who = "client:upload_release_asset"
  method_check(self, "upload_release_asset")
  check_arg(who, 1, release, "table|integer")
  check_arg(who, 2, asset, "table")
  if (asset.path == nil) == (asset.content == nil) then argerror(who, 2, "give either path or content") end
  check_arg(who, 2, asset.path, "string", true, "path")
  check_arg(who, 2, asset.content, "string", true, "content")
  check_arg(who, 2, asset.name, "string", asset.path ~= nil, "name")
  check_arg(who, 2, asset.content_type, "string", true, "content_type")
  check_arg(who, 2, asset.label, "string", true, "label")
  if type(release) == "number" then
    local path = expand(self, "/repos/{owner}/{repo}/releases/{release_id}", { release_id = release })
    local res
    release, res = send(self, "GET", path)
    if type(release) ~= "table" or type(release.upload_url) ~= "string" then
      local what = release == nil and "an empty body" or release == json.null and "null"
        or type(release) == "table" and "no upload_url" or "a " .. type(release)
      error(api_error({ status = res.status, method = "GET", path = path, message = "not a release" },
        ("github: GET %s: %d, but the answer is not a release (%s)"):format(path, res.status, what)), 0)
    end
  end
  if type(release.upload_url) ~= "string" then argerror(who, 1, "a release with an upload_url expected") end
  -- the token goes where GitHub puts uploads: uploads.github.com for api.github.com, the
  -- API's own host on Enterprise; a release from elsewhere must not redirect it
  local api_origin, upload_origin = origin_of(self.api_url), origin_of(release.upload_url)
  if upload_origin ~= api_origin
      and not (api_origin == "https://api.github.com" and upload_origin == "https://uploads.github.com") then
    argerror(who, 1, ("upload_url on %s, not %s's host; the token is not sent there"):format(
      upload_origin or ("%q"):format(release.upload_url), self.api_url))
  end
  local name = asset.name or asset.path:match("([^/]+)$")
  if asset.path then
    local exists, kind = fs.exists(asset.path)
    if not exists or kind ~= "file" then
      error(("%s: cannot read '%s': %s"):format(who, asset.path,
        exists and "not a regular file" or "No such file or directory"), 2)
    end
  end
  -- upload_url is a URI template: ".../assets{?name,label}"
  local url = canonical_url(release.upload_url):gsub("{[^}]*}$", "")
  local data = send(self, "POST", url, {
    query = { name = name, label = asset.label },
    headers = { ["Content-Type"] = asset.content_type or "application/octet-stream" },
    body = asset.content, body_file = asset.path,
  })
  return data
end

-- Webhooks ----------------------------------------------------------------------------------

-- github.verify_webhook(secret, body, signature_header) -> bool. A missing header (nil) is a
-- delivery that fails verification, not a mistake in the caller.
function github.verify_webhook(secret, body, signature_header)
  check_arg("github.verify_webhook", 1, secret, "string")
  if secret == "" then argerror("github.verify_webhook", 1, "the webhook secret is empty") end
  check_arg("github.verify_webhook", 2, body, "string")
  check_arg("github.verify_webhook", 3, signature_header, "string", true)
  if signature_header == nil then return false end
  local given = signature_header:match("^sha256=(%x+)$")
  if not given or #given ~= 64 then return false end
  return crypto.equal(given:lower(), crypto.hmac_sha256(secret, body))
end

github.Error = GitHubError

return github
