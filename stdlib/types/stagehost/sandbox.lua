---@meta stagehost.sandbox
-- LuaLS annotations for `require "stagehost.sandbox"` (stdlib/stagehost/sandbox/): an emulator
-- of CloudFormation, STS, Amplify and the GitHub REST API on loopback. Definitions only.

---@class stagehost.sandbox.StartOptions
---@field host? string default "127.0.0.1"
---@field port? integer default 0: a free port

---A queued fault: the next `times` requests matching service (and action) get it.
---@class stagehost.sandbox.Fault
---@field service string "cloudformation", "sts", "amplify" or "github"
---@field action? string e.g. "DescribeStacks"; any action when nil
---@field status? integer
---@field code? string e.g. "Throttling"
---@field message? string
---@field times? integer default 1
---@field headers? table<string, string>
---@field body? string an answer sent as it is (a malformed one, say)
---@field documentation_url? string GitHub's

---@class stagehost.sandbox.UseOptions
---@field region? string default "us-east-1"
---@field repo? string default GITHUB_REPOSITORY, else "stagehost/sandbox"

---A running sandbox (`sandbox.start{}`).
---@class stagehost.sandbox.Sandbox
---@field url string "http://127.0.0.1:PORT": AWS_ENDPOINT_URL for every AWS service
---@field github_url string url .. "/github": GITHUB_API_URL
---@field port integer
---@field state {aws: table, github: table} the emulated world (tests may look and seed)
---@field requests {service: string, action?: string, method: string, path: string}[] every request seen
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

return sandbox
