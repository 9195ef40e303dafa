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
-- malformed JSON in the response: at line L, column C ...". Misuse raises "bad argument #N to
-- 'github.NAME' (...)", counting arguments after the client; ids and numbers are integers.
local http = require "stagehost.http"
local json = require "stagehost.json"
local log = require "stagehost.log"
local task = require "stagehost.task"
local retry = require "stagehost.util.retry"
local crypto = require "stagehost.crypto"
local fs = require "stagehost.fs"

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
  if type(value) == "string" then return log.masked(value) end
  if type(value) ~= "table" or depth > 16 then return value end
  local out = setmetatable({}, getmetatable(value))
  for k, v in pairs(value) do
    out[type(k) == "string" and log.masked(k) or k] = masked_copy(v, depth + 1)
  end
  return out
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

-- check_arg("comment", 2, body, "string") raises, at the caller's line, "bad argument #2 to
-- 'github.comment' (string expected, got nil)"; field names a field of a table argument.
-- "integer" takes a number with an integer value (7 or 7.0): ids go into paths with %d.
local function check_arg(fname, n, value, expected, optional, field)
  if value == nil and optional then return end
  local kind = type(value)
  for want in expected:gmatch("[^|]+") do
    if kind == want or (want == "integer" and kind == "number" and math.tointeger(value)) then return end
  end
  -- 1.5 says more than "number" when an integer was wanted
  local got = kind == "number" and expected:find("integer", 1, true) and tostring(value) or kind
  error(("bad argument #%d to 'github.%s' (%s%s expected, got %s)"):format(n, fname,
    field and (field .. ": ") or "", (expected:gsub("|", " or ")), got), 3)
end

-- check_list("create_issue", 1, fields.labels, "labels", "string|table"): nil or a list (keys
-- 1..n) whose items have those types; a string where a list belongs is a mistake, not [].
local function check_list(fname, n, value, field, item_types)
  if value == nil then return end
  local function bad(what)
    error(("bad argument #%d to 'github.%s' (%s)"):format(n, fname, what), 4)
  end
  if type(value) ~= "table" then
    bad(("%s: a list expected, got %s"):format(field, type(value)))
  end
  local count = 0
  for k in pairs(value) do
    count = count + 1
    if math.type(k) ~= "integer" or k < 1 then
      bad(("%s: a list expected, got a table with the key %s"):format(field, tostring(k)))
    end
  end
  if count ~= #value then bad(("%s: a list expected, got a table with holes"):format(field)) end
  for i, item in ipairs(value) do
    local ok = false
    for want in item_types:gmatch("[^|]+") do
      if type(item) == want then ok = true end
    end
    if not ok then
      bad(("%s[%d]: %s expected, got %s"):format(field, i, (item_types:gsub("|", " or ")), type(item)))
    end
  end
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
-- "no checks", which an empty object would not). check_list has vetted it.
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

local function method_check(self, fname)
  if getmetatable(self) ~= Client then
    error(("github.%s: call it as a method of a client, gh:%s(...)"):format(fname, fname), 3)
  end
end

-- github.client{token, repo, api_url, max_wait, retries, backoff, secondary_wait, timeout}
-- Defaults set for the whole process (stagehost run --sandbox points every client at the
-- sandbox); each beats the environment variable it stands for, an explicit option beats it.
local defaults = {}

-- github.configure{token =, repo =, api_url =} -> the previous defaults
function github.configure(opts)
  check_arg("configure", 1, opts, "table")
  local previous = defaults
  defaults = {}
  for _, name in ipairs{ "token", "repo", "api_url" } do
    check_arg("configure", 1, opts[name], "string", true, name)
    defaults[name] = opts[name]
  end
  return previous
end

function github.client(opts)
  check_arg("client", 1, opts, "table", true)
  opts = opts or {}
  for _, name in ipairs{ "token", "repo", "api_url" } do
    if opts[name] ~= nil and type(opts[name]) ~= "string" then
      error(("bad argument #1 to 'github.client' (%s must be a string, got %s)"):format(name, type(opts[name])), 2)
    end
  end
  for _, name in ipairs{ "max_wait", "retries", "backoff", "secondary_wait", "timeout" } do
    local v = opts[name]
    if v ~= nil and (type(v) ~= "number" or v < 0) then
      error(("bad argument #1 to 'github.client' (%s must be a number >= 0, got %s)"):format(name,
        type(v) == "number" and tostring(v) or type(v)), 2)
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

-- "/repos/owner/name" plus the rest; one clear line when no repository was given
local function repo_path(self, rest)
  if not self.repo then
    error("github: no repository: set GITHUB_REPOSITORY (owner/name) or pass repo = ... to github.client", 3)
  end
  return "/repos/" .. self.repo .. (rest or "")
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
  if status == 403 or status == 429 then
    local retry_after = retry.after(h)
    if retry_after then
      if retry_after > self.max_wait then
        error(api_error({ status = status, method = method, path = shown, message = "secondary rate limit" },
          ("github: %s %s: %d secondary rate limit: GitHub asks to wait %d s, more than max_wait = %d s"):format(
            method, shown, status, retry_after, self.max_wait)), 0)
      end
      return retry_after, "secondary rate limit"
    end
    if h["x-ratelimit-remaining"] == "0" then
      local reset = tonumber(h["x-ratelimit-reset"])
      -- the reset time has one-second resolution and clocks drift: one more second of margin
      local wait = reset and math.max(0, reset - os.time()) + 1 or 60
      if wait > self.max_wait then
        local when = reset and os.date("!%Y-%m-%d %H:%M:%S UTC", reset) or "an unknown time"
        error(api_error({ status = status, method = method, path = shown, rate_limit_reset = reset,
          message = "API rate limit exceeded" },
          ("github: %s %s: %d API rate limit exceeded; it resets at %s, in %d s, more than max_wait = %d s"):format(
            method, shown, status, when, wait, self.max_wait)), 0)
      end
      return wait, "rate limit exhausted"
    end
    -- a secondary limit without Retry-After: GitHub says wait at least a minute, then longer
    local body = type(res.body) == "string" and res.body:lower() or ""
    if status == 429 or body:find("secondary rate limit", 1, true) then
      local wait = self.secondary_wait * 2 ^ secondary_hits
      if wait > self.max_wait then
        error(api_error({ status = status, method = method, path = shown, message = "secondary rate limit" },
          ("github: %s %s: %d secondary rate limit: the next wait, %d s, would exceed max_wait = %d s"):format(
            method, shown, status, wait, self.max_wait)), 0)
      end
      return wait, "secondary rate limit"
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
      return true, (tostring(o.error):gsub("^http%.request: ", ""))
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
      if type(result) ~= "string" then error(result, 0) end -- a cancellation passes untouched
      error(log.masked(("github: %s %s: %s"):format(method, shown, (result:gsub("^.-http%.request: ", "")))), 0)
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
    local ok, decoded = pcall(json.decode, res.body)
    if ok then
      data = decoded
    elseif res.status < 300 then
      local where = tostring(decoded):gsub("^json%.decode: ", ""):gsub("^invalid JSON ", "")
      error(api_error({ status = res.status, method = method, path = shown, message = "malformed JSON in the response" },
        ("github: %s %s: malformed JSON in the response: %s"):format(method, shown, where)), 0)
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

function Client:request(method, path, opts)
  method_check(self, "request")
  check_arg("request", 1, method, "string")
  check_arg("request", 2, path, "string")
  check_arg("request", 3, opts, "table", true)
  if not method:match("^[A-Z]+$") then
    error(("bad argument #1 to 'github.request' (an upper-case HTTP method expected, got %q)"):format(method), 2)
  end
  opts = opts or {}
  if opts.body ~= nil and opts.json ~= nil then
    error("bad argument #3 to 'github.request' (give either body or json, not both)", 2)
  end
  check_arg("request", 3, opts.headers, "table", true, "headers")
  for k, v in pairs(opts.headers or {}) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      error(("bad argument #3 to 'github.request' (headers: names and string values expected, got %s = %s)"):format(
        type(k), type(v)), 2)
    end
  end
  local call = { query = opts.query, headers = opts.headers }
  if type(opts.body) == "table" then call.json = opts.body
  elseif opts.body ~= nil then call.body = opts.body
  else call.json = opts.json end
  if is_absolute(path) then
    if origin_of(path) ~= origin_of(self.api_url) then
      error(("bad argument #2 to 'github.request' (a path under %s expected; the token is not sent elsewhere)"):format(
        self.api_url), 2)
    end
    path = canonical_url(path)
  elseif path:sub(1, 1) ~= "/" then
    path = "/" .. path
  end
  local data, res = send(self, method, path, call)
  return data, res
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

function Client:paginate(path, query)
  method_check(self, "paginate")
  check_arg("paginate", 1, path, "string")
  check_arg("paginate", 2, query, "table", true)
  if is_absolute(path) then
    if origin_of(path) ~= origin_of(self.api_url) then
      error(("bad argument #1 to 'github.paginate' (a path under %s expected; the token is not sent elsewhere)"):format(
        self.api_url), 2)
    end
    path = canonical_url(path)
  elseif path:sub(1, 1) ~= "/" then
    path = "/" .. path
  end
  return collect(self, path, query)
end

function Client:get_repo()
  method_check(self, "get_repo")
  return (send(self, "GET", repo_path(self)))
end

-- Releases ----------------------------------------------------------------------------------

function Client:get_release_by_tag(tag)
  method_check(self, "get_release_by_tag")
  check_arg("get_release_by_tag", 1, tag, "string")
  local data, res = send(self, "GET", repo_path(self, "/releases/tags/" .. url_encode(tag)), { allow = { [404] = true } })
  if res.status == 404 then return nil end
  return data
end

function Client:create_release(fields)
  method_check(self, "create_release")
  check_arg("create_release", 1, fields, "table")
  check_arg("create_release", 1, fields.tag_name, "string", false, "tag_name")
  return (send(self, "POST", repo_path(self, "/releases"), { json = copy(fields) }))
end

function Client:update_release(id, fields)
  method_check(self, "update_release")
  check_arg("update_release", 1, id, "integer")
  check_arg("update_release", 2, fields, "table")
  return (send(self, "PATCH", repo_path(self, ("/releases/%d"):format(id)), { json = copy(fields) }))
end

function Client:generate_release_notes(fields)
  method_check(self, "generate_release_notes")
  check_arg("generate_release_notes", 1, fields, "table")
  check_arg("generate_release_notes", 1, fields.tag_name, "string", false, "tag_name")
  return (send(self, "POST", repo_path(self, "/releases/generate-notes"), { json = copy(fields) }))
end

function Client:upload_release_asset(release, asset)
  method_check(self, "upload_release_asset")
  check_arg("upload_release_asset", 1, release, "table|integer")
  check_arg("upload_release_asset", 2, asset, "table")
  if (asset.path == nil) == (asset.content == nil) then
    error("bad argument #2 to 'github.upload_release_asset' (give either path or content)", 2)
  end
  check_arg("upload_release_asset", 2, asset.path, "string", true, "path")
  check_arg("upload_release_asset", 2, asset.content, "string", true, "content")
  check_arg("upload_release_asset", 2, asset.name, "string", asset.path ~= nil, "name")
  check_arg("upload_release_asset", 2, asset.content_type, "string", true, "content_type")
  check_arg("upload_release_asset", 2, asset.label, "string", true, "label")
  if type(release) == "number" then
    local path = repo_path(self, ("/releases/%d"):format(release))
    local res
    release, res = send(self, "GET", path)
    if type(release) ~= "table" or type(release.upload_url) ~= "string" then
      local what = release == nil and "an empty body" or release == json.null and "null"
        or type(release) == "table" and "no upload_url" or "a " .. type(release)
      error(api_error({ status = res.status, method = "GET", path = path, message = "not a release" },
        ("github: GET %s: %d, but the answer is not a release (%s)"):format(path, res.status, what)), 0)
    end
  end
  if type(release.upload_url) ~= "string" then
    error("bad argument #1 to 'github.upload_release_asset' (a release with an upload_url expected)", 2)
  end
  -- the token goes where GitHub puts uploads: uploads.github.com for api.github.com, the
  -- API's own host on Enterprise; a release from elsewhere must not redirect it
  local api_origin, upload_origin = origin_of(self.api_url), origin_of(release.upload_url)
  if upload_origin ~= api_origin
      and not (api_origin == "https://api.github.com" and upload_origin == "https://uploads.github.com") then
    error(("bad argument #1 to 'github.upload_release_asset' (upload_url on %s, not %s's host; the token is not sent there)"):format(
      upload_origin or ("%q"):format(release.upload_url), self.api_url), 2)
  end
  local name = asset.name or asset.path:match("([^/]+)$")
  if asset.path then
    local exists, kind = fs.exists(asset.path)
    if not exists or kind ~= "file" then
      error(("github.upload_release_asset: cannot read '%s': %s"):format(asset.path,
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

-- Issues ------------------------------------------------------------------------------------

local function issue_fields(fields)
  local out = copy(fields)
  out.labels = as_array(fields.labels)
  out.assignees = as_array(fields.assignees)
  return out
end

function Client:create_issue(fields)
  method_check(self, "create_issue")
  check_arg("create_issue", 1, fields, "table")
  check_arg("create_issue", 1, fields.title, "string", false, "title")
  check_list("create_issue", 1, fields.labels, "labels", "string|table")
  check_list("create_issue", 1, fields.assignees, "assignees", "string")
  return (send(self, "POST", repo_path(self, "/issues"), { json = issue_fields(fields) }))
end

function Client:list_issues(query)
  method_check(self, "list_issues")
  check_arg("list_issues", 1, query, "table", true)
  return collect(self, repo_path(self, "/issues"), query)
end

function Client:comment(number, body)
  method_check(self, "comment")
  check_arg("comment", 1, number, "integer")
  check_arg("comment", 2, body, "string")
  return (send(self, "POST", repo_path(self, ("/issues/%d/comments"):format(number)), { json = { body = body } }))
end

function Client:list_comments(number)
  method_check(self, "list_comments")
  check_arg("list_comments", 1, number, "integer")
  return collect(self, repo_path(self, ("/issues/%d/comments"):format(number)))
end

function Client:close_issue(number, state_reason)
  method_check(self, "close_issue")
  check_arg("close_issue", 1, number, "integer")
  check_arg("close_issue", 2, state_reason, "string", true)
  return (send(self, "PATCH", repo_path(self, ("/issues/%d"):format(number)),
    { json = { state = "closed", state_reason = state_reason } }))
end

-- Commit statuses ---------------------------------------------------------------------------

function Client:create_status(sha, fields)
  method_check(self, "create_status")
  check_arg("create_status", 1, sha, "string")
  check_arg("create_status", 2, fields, "table")
  check_arg("create_status", 2, fields.state, "string", false, "state")
  return (send(self, "POST", repo_path(self, "/statuses/" .. url_encode(sha)), { json = copy(fields) }))
end

function Client:list_statuses(ref)
  method_check(self, "list_statuses")
  check_arg("list_statuses", 1, ref, "string")
  return collect(self, repo_path(self, "/commits/" .. url_encode(ref) .. "/statuses"))
end

-- Deployments -------------------------------------------------------------------------------

function Client:create_deployment(fields)
  method_check(self, "create_deployment")
  check_arg("create_deployment", 1, fields, "table")
  check_arg("create_deployment", 1, fields.ref, "string", false, "ref")
  local body = copy(fields)
  -- GitHub merges the default branch into ref first unless told not to: a deployment of an
  -- exact build must not change what it deploys
  if body.auto_merge == nil then body.auto_merge = false end
  check_list("create_deployment", 1, fields.required_contexts, "required_contexts", "string")
  body.required_contexts = as_array(fields.required_contexts)
  return (send(self, "POST", repo_path(self, "/deployments"), { json = body }))
end

function Client:create_deployment_status(id, fields)
  method_check(self, "create_deployment_status")
  check_arg("create_deployment_status", 1, id, "integer")
  check_arg("create_deployment_status", 2, fields, "table")
  check_arg("create_deployment_status", 2, fields.state, "string", false, "state")
  return (send(self, "POST", repo_path(self, ("/deployments/%d/statuses"):format(id)), { json = copy(fields) }))
end

function Client:list_deployments(query)
  method_check(self, "list_deployments")
  check_arg("list_deployments", 1, query, "table", true)
  return collect(self, repo_path(self, "/deployments"), query)
end

function Client:list_deployment_statuses(id)
  method_check(self, "list_deployment_statuses")
  check_arg("list_deployment_statuses", 1, id, "integer")
  return collect(self, repo_path(self, ("/deployments/%d/statuses"):format(id)))
end

-- Webhooks ----------------------------------------------------------------------------------

-- github.verify_webhook(secret, body, signature_header) -> bool. A missing header (nil) is a
-- delivery that fails verification, not a mistake in the caller.
function github.verify_webhook(secret, body, signature_header)
  check_arg("verify_webhook", 1, secret, "string")
  if secret == "" then
    error("bad argument #1 to 'github.verify_webhook' (the webhook secret is empty)", 2)
  end
  check_arg("verify_webhook", 2, body, "string")
  check_arg("verify_webhook", 3, signature_header, "string", true)
  if signature_header == nil then return false end
  local given = signature_header:match("^sha256=(%x+)$")
  if not given or #given ~= 64 then return false end
  return crypto.equal(given:lower(), crypto.hmac_sha256(secret, body))
end

github.Error = GitHubError

return github
