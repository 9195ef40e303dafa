---@meta stagehost.github
-- LuaLS annotations for `require "stagehost.github"` (stdlib/stagehost/github.lua): a GitHub
-- REST client that follows pagination, waits out rate limits and retries safely. Answers are
-- GitHub's own JSON objects (see docs.github.com/rest). Definitions only: never loaded.

---@class stagehost.github.ClientOptions
---@field token? string default GITHUB_TOKEN; masked from now on
---@field repo? string "owner/name", default GITHUB_REPOSITORY (repository methods need it)
---@field api_url? string default GITHUB_API_URL, else https://api.github.com (Enterprise: https://HOST/api/v3)
---@field max_wait? number longest wait for a rate limit to reset, seconds (900)
---@field retries? integer extra attempts after a rate limit, a 5xx or a cut connection (3)
---@field backoff? number first backoff ceiling, seconds (1)
---@field secondary_wait? number pause after a secondary rate limit without Retry-After (60)
---@field timeout? number seconds for each request (300)

---@class stagehost.github.ConfigureOptions
---@field token? string
---@field repo? string
---@field api_url? string

---@class stagehost.github.RequestOptions
---@field query? table<string, string|number|boolean>
---@field body? string|table a table is sent as JSON
---@field json? any
---@field headers? table<string, string|number> replace the defaults of the same name

---A non-2xx answer (raised); prints as one line.
---@class stagehost.github.Error
---@field status integer
---@field message? string
---@field documentation_url? string
---@field errors? table[]
---@field method string
---@field path string
---@field text string the one line it prints as

---@class stagehost.github.CreateReleaseFields
---@field tag_name string
---@field name? string
---@field body? string
---@field draft? boolean
---@field prerelease? boolean
---@field target_commitish? string
---@field generate_release_notes? boolean

---@class stagehost.github.GenerateNotesFields
---@field tag_name string
---@field previous_tag_name? string
---@field target_commitish? string
---@field configuration_file_path? string

---@class stagehost.github.Asset
---@field name? string default: the basename of path (required with content)
---@field path? string a file, streamed
---@field content? string
---@field content_type? string default application/octet-stream
---@field label? string

---@class stagehost.github.IssueFields
---@field title string
---@field body? string
---@field labels? (string|table)[]
---@field assignees? string[]
---@field milestone? integer

---@alias stagehost.github.StatusState "error"|"failure"|"pending"|"success"

---@class stagehost.github.StatusFields
---@field state stagehost.github.StatusState
---@field target_url? string
---@field description? string
---@field context? string

---@class stagehost.github.DeploymentFields
---@field ref string
---@field environment? string
---@field description? string
---@field auto_merge? boolean default false (GitHub's default, true, would merge the default branch first)
---@field required_contexts? string[]
---@field payload? table|string
---@field task? string
---@field transient_environment? boolean
---@field production_environment? boolean

---@alias stagehost.github.DeploymentState "error"|"failure"|"inactive"|"in_progress"|"queued"|"pending"|"success"

---@class stagehost.github.DeploymentStatusFields
---@field state stagehost.github.DeploymentState
---@field environment_url? string
---@field log_url? string
---@field description? string
---@field environment? string
---@field auto_inactive? boolean

---A client (`github.client{...}`).
---@class stagehost.github.Client
---@field repo? string
---@field api_url string
---@field max_wait number
---@field retries integer
---@field backoff number
---@field secondary_wait number
---@field timeout number
local Client = {}

---Any call: path relative to api_url ("/repos/o/r") or an absolute URL on its host.
---@param method string upper case
---@param path string
---@param opts? stagehost.github.RequestOptions
---@return any data the decoded JSON (nil for an empty body)
---@return stagehost.http.Response response
function Client:request(method, path, opts) end

---Every item of every page (per_page = 100 unless given), following the Link header.
---@param path string
---@param query? table<string, string|number|boolean>
---@return table[]
function Client:paginate(path, query) end

---A conditional GET (If-None-Match): data is nil when GitHub answers 304 Not Modified, which
---costs no rate limit. One page.
---@param path string
---@param etag? string the ETag of the last answer
---@param query? table<string, string|number|boolean>
---@return any data nil when unchanged
---@return string? etag the answer's ETag (the one given, when unchanged)
---@return stagehost.http.Response response
function Client:get_if_changed(path, etag, query) end

---Every member of an organization's team (the token needs read:org).
---@param org string
---@param team_slug string
---@return table[]
function Client:list_team_members(org, team_slug) end

---@return table repository
function Client:get_repo() end

---The release of a tag, or nil when the tag has none.
---@param tag string
---@return table? release
function Client:get_release_by_tag(tag) end

---@param fields stagehost.github.CreateReleaseFields
---@return table release
function Client:create_release(fields) end

---@param release_id integer
---@param fields table
---@return table release
function Client:update_release(release_id, fields) end

---@param fields stagehost.github.GenerateNotesFields
---@return {name: string, body: string}
function Client:generate_release_notes(fields) end

---@param release table|integer a release (with upload_url) or its id
---@param asset stagehost.github.Asset
---@return table asset
function Client:upload_release_asset(release, asset) end

---@param fields stagehost.github.IssueFields
---@return table issue
function Client:create_issue(fields) end

---Every issue of every page (GitHub lists pull requests too).
---@param query? table<string, string|number|boolean>
---@return table[]
function Client:list_issues(query) end

---@param issue_number integer
---@param body string
---@return table comment
function Client:comment(issue_number, body) end

---@param issue_number integer
---@return table[]
function Client:list_comments(issue_number) end

---@param issue_number integer
---@param state_reason? "completed"|"not_planned"|string
---@return table issue
function Client:close_issue(issue_number, state_reason) end

---@param sha string
---@param fields stagehost.github.StatusFields
---@return table status
function Client:create_status(sha, fields) end

---Every status of the ref, newest first.
---@param ref string
---@return table[]
function Client:list_statuses(ref) end

---@param fields stagehost.github.DeploymentFields
---@return table deployment
function Client:create_deployment(fields) end

---@param deployment_id integer
---@param fields stagehost.github.DeploymentStatusFields
---@return table status
function Client:create_deployment_status(deployment_id, fields) end

---@param query? table<string, string|number|boolean>
---@return table[]
function Client:list_deployments(query) end

---@param deployment_id integer
---@return table[]
function Client:list_deployment_statuses(deployment_id) end

---GitHub's REST API.
---@class stagehost.github
---@field routes table[] the route table behind the client's methods, parsed (read-only)
---@field Error table the metatable of the errors calls raise: `getmetatable(e) == github.Error`
local github = {}

---@param opts? stagehost.github.ClientOptions
---@return stagehost.github.Client
function github.client(opts) end

---Process-wide defaults (`--sandbox` sets them); each beats its environment variable.
---@param opts stagehost.github.ConfigureOptions
---@return stagehost.github.ConfigureOptions previous
function github.configure(opts) end

---Checks X-Hub-Signature-256 in constant time; a missing header is false.
---@param secret string
---@param body string
---@param signature_header? string
---@return boolean
function github.verify_webhook(secret, body, signature_header) end

return github
