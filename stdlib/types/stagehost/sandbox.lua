---@meta stagehost.sandbox
-- LuaLS annotations for `require "stagehost.sandbox"` (stdlib/stagehost/sandbox/): an emulator
-- of CloudFormation, STS, Amplify, S3 and the GitHub REST API on loopback, which also serves what
-- is deployed (REST APIs run with node, Amplify apps) and stub OAuth and AI providers.
-- Definitions only.

---@class stagehost.sandbox.StartOptions
---@field host? string default "127.0.0.1"
---@field port? integer default 0: a free port (with persist: the saved world's port when free)
---@field aws? {keys?: table<string, string>, oidc?: table<string, string[]>}
---@field github? {repos?: string[], tokens?: string[], user?: string}
---@field persist? string a directory: the world is loaded from and saved to DIR/world.lua (and the request log to DIR/requests.jsonl) after every request
---@field step_seconds? number simulated seconds per step of a stack operation or Amplify job (default 0.2)
---@field amplify_auto_create? boolean Amplify apps and branches exist on first use
---@field faults? stagehost.sandbox.Fault[]|string faults queued at start (or their JSON text); {service = "amplify", action = "StartJob", outcome = "PENDING"|"FAILED"|"CANCELLED"} queues a job outcome

---A queued fault: the next `times` requests matching service (and action) get it.
---@class stagehost.sandbox.Fault
---@field service string "cloudformation", "sts", "amplify", "s3", "github" or "stub" (action "oauth" or "ai")
---@field action? string e.g. "DescribeStacks"; any action when nil
---@field status? integer
---@field code? string e.g. "Throttling"
---@field message? string
---@field times? integer default 1
---@field headers? table<string, string>
---@field body? string an answer sent as it is (a malformed one, say)
---@field documentation_url? string GitHub's
---@field outcome? "PENDING"|"FAILED"|"CANCELLED" (start option faults only) an Amplify job outcome, not an error

---@class stagehost.sandbox.UseOptions
---@field region? string default "us-east-1"
---@field repo? string default GITHUB_REPOSITORY, else "stagehost/sandbox"

---A running sandbox (`sandbox.start{}`).
---@class stagehost.sandbox.Sandbox
---@field url string "http://127.0.0.1:PORT": AWS_ENDPOINT_URL for every AWS service
---@field github_url string url .. "/github": GITHUB_API_URL
---@field port integer
---@field state {aws: table, github: table, stubs: table} the emulated world (tests may look and seed)
---@field requests {service: string, action?: string, method: string, path: string, time: number}[] every request seen
---@field credentials {access_key_id: string, secret_access_key: string} a key pair it accepts
---@field github_token string
---@field github_repo string
---@field oauth_url string the stub OAuth token endpoint (code "sandbox-code" -> {access_token})
---@field oauth_authorize_url string the stub OAuth authorize endpoint (redirects with code=sandbox-code)
---@field ai_url string the stub AI endpoint (POST {prompt} -> {text})
---@field work_dir? string where deployed code is unpacked (removed by close)
---@field invocations? {name: string, request_id: string, code: integer, duration: number, logs: string}[] Lambda runs
---@field persist? table the persistence state (start option persist)
---@field faults stagehost.sandbox.Fault[] queued faults
---@field server stagehost.http.Server?
---@field verify_signature? fun(req: stagehost.http.Request, service: string, region: string): boolean, string?, string? checks SigV4 when set
local Sandbox = {}

---Queues a fault.
---@param fault stagehost.sandbox.Fault
function Sandbox:fail_next(fault) end

---The queued fault for this service and action, consumed; nil when none applies.
---@param service string
---@param action? string
---@return stagehost.sandbox.Fault?
function Sandbox:take_fault(service, action) end

---Records a request in `requests`.
---@param service string
---@param action? string
---@param req stagehost.http.Request
function Sandbox:record(service, action, req) end

---Points this process's AWS and GitHub clients at the sandbox (with credentials it issued and
---verifies), whatever the environment says.
---@param opts? stagehost.sandbox.UseOptions
---@return fun() restore puts the previous configuration back
function Sandbox:use(opts) end

function Sandbox:close() end

---Where the sandbox serves a deployed Amplify branch: URL/_app/APP_ID/BRANCH/.
---@param app_id string
---@param branch string
---@return string
function Sandbox:app_url(app_id, branch) end

---@class stagehost.sandbox
local sandbox = {}

---Starts the emulator on a free loopback port.
---@param opts? stagehost.sandbox.StartOptions
---@return stagehost.sandbox.Sandbox
function sandbox.start(opts) end

---A function for `sb.verify_signature` that checks SigV4 with the keys in sb.state.aws.keys.
---@param sb stagehost.sandbox.Sandbox
---@return fun(req: stagehost.http.Request, service: string, region: string): boolean, string?, string?
function sandbox.signature_verifier(sb) end

---The sandbox `sb:use()` pointed this process at (`stagehost run --sandbox`), or nil.
---@return stagehost.sandbox.Sandbox?
function sandbox.current() end

---An API Gateway (https://ID.execute-api.REGION.amazonaws.com/...) or Amplify
---(https://BRANCH.APP.amplifyapp.com/...) URL as the sandbox serves it; other URLs unchanged.
---@param url string
---@param sb? stagehost.sandbox.Sandbox default sandbox.current()
---@return string
function sandbox.local_url(url, sb) end

return sandbox
