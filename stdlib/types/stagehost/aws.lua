---@meta stagehost.aws
-- LuaLS annotations for `require "stagehost.aws"` (stdlib/stagehost/aws/*.lua and
-- bindings/aws_sigv4.c): SigV4, the credential chain, signed requests with retries, and the
-- CloudFormation, Amplify and STS clients. Definitions only: never loaded by stagehost.

---@class stagehost.aws.Credentials
---@field access_key_id string
---@field secret_access_key string
---@field session_token? string
---@field expires? number epoch seconds, for temporary credentials
---@field source? string where they came from ("environment", "web identity ...", ...)

---@class stagehost.aws.CredentialsOptions
---@field profile? string this profile of ~/.aws/config and ~/.aws/credentials, even when the environment has keys
---@field refresh? boolean ignore the cache

---@class stagehost.aws.SignOptions
---@field method string
---@field url string
---@field headers? table<string, string|string[]>
---@field body? string
---@field service string signing name, e.g. "cloudformation"
---@field region string
---@field credentials stagehost.aws.Credentials
---@field time? integer|string epoch seconds or "20150830T123600Z" (default now)
---@field unsigned_payload? boolean sign "UNSIGNED-PAYLOAD" instead of the body's hash

---@class stagehost.aws.SignDebug
---@field canonical_request string
---@field string_to_sign string
---@field signed_headers string
---@field signature string
---@field scope string

---@class stagehost.aws.RequestOptions
---@field service string e.g. "cloudformation"
---@field region? string default: configured, AWS_REGION, AWS_DEFAULT_REGION, the profile's
---@field method? string default "POST"
---@field path? string default "/"
---@field query? table|string
---@field headers? table<string, string>
---@field body? string
---@field form? table Query-protocol parameters (nested values flattened as Name.member.N.Field)
---@field json? any
---@field credentials? stagehost.aws.Credentials default `aws.credentials()`
---@field endpoint? string base URL (default `aws.endpoint(service, region)`)
---@field operation? string for messages and retry rules (default form.Action or path)
---@field timeout? number seconds (60)
---@field connect_timeout? number seconds (10)
---@field retry? integer|false attempts (default AWS_MAX_ATTEMPTS, else 5); false is one
---@field retry_base? number first backoff ceiling, seconds (1)
---@field idempotent? boolean safe to repeat after a 5xx or a broken connection (default: GET, HEAD, Describe*/List*/Get*/Validate*)
---@field unsigned? boolean send without a signature
---@field raw? boolean leave a successful answer's body undecoded (no .xml / .json): S3 objects

---@class stagehost.aws.Response: stagehost.http.Response
---@field xml? stagehost.xml.Element an XML answer, decoded
---@field json? any a JSON answer, decoded
---@field request_id? string

---An AWS error (raised); prints as one line. `aws.is_error(e [, code])` tells them apart.
---@class stagehost.aws.Error
---@field code string e.g. "ValidationError", "Throttling", "MalformedResponse", "TransportError"
---@field message? string
---@field request_id? string
---@field status? integer
---@field service? string
---@field operation? string
---@field kind? string a transport failure's kind
---@field failed_resources? stagehost.aws.FailedResource[] of a failed `deploy`

---@class stagehost.aws.Arn
---@field partition string
---@field service string
---@field region string
---@field account string
---@field resource string

---@class stagehost.aws.ConfigureOptions
---@field endpoint? string
---@field region? string
---@field credentials? stagehost.aws.Credentials
---@field poll? {min?: number, max?: number} the waiters' interval bounds for clients made without `poll` (the sandbox's simulated time)

---@class stagehost.aws.ClientOptions
---@field region? string
---@field credentials? stagehost.aws.Credentials
---@field endpoint? string
---@field retry_base? number
---@field poll? {min?: number, max?: number} seconds between polls of the waiters

-- ---- CloudFormation ----

---@alias stagehost.aws.ChangeSetId string|stagehost.aws.ChangeSetRef

---@class stagehost.aws.Template
---@field body? string the template as text
---@field template? table the template as a Lua table (sent as JSON)
---@field url? string an S3 URL

---@class stagehost.aws.CreateChangeSetOptions: stagehost.aws.Template
---@field stack_name string
---@field parameters? table<string, string|number|boolean|{use_previous: boolean}> true or {use_previous = true} keeps the previous value
---@field capabilities? string[] default CAPABILITY_IAM, CAPABILITY_NAMED_IAM, CAPABILITY_AUTO_EXPAND
---@field tags? table<string, string>
---@field change_set_name? string
---@field description? string
---@field role_arn? string

---@class stagehost.aws.DeployOptions: stagehost.aws.CreateChangeSetOptions
---@field timeout? number seconds to wait for the stack (3600)

---@class stagehost.aws.ChangeSetRef
---@field id string
---@field stack_id? string
---@field type "CREATE"|"UPDATE"
---@field name string
---@field stack_name string

---@class stagehost.aws.Change
---@field action? string "Add", "Modify", "Remove", ...
---@field logical_id? string
---@field physical_id? string
---@field type? string
---@field replacement? string "True", "False", "Conditional"

---@class stagehost.aws.ChangeSet
---@field id string
---@field name? string
---@field stack_name? string
---@field stack_id? string
---@field status? string
---@field status_reason? string
---@field execution_status? string
---@field changes stagehost.aws.Change[]
---@field preview string one readable line per change
---@field no_changes? boolean CloudFormation found nothing to change (a result, not a failure)

---@class stagehost.aws.StackOutput
---@field key string
---@field value string
---@field description? string
---@field export_name? string

---@class stagehost.aws.Stack
---@field name string
---@field id string
---@field status string
---@field status_reason? string
---@field description? string
---@field creation_time? string
---@field last_updated_time? string
---@field outputs table<string, string>
---@field output_list stagehost.aws.StackOutput[]
---@field parameters table<string, string>
---@field capabilities string[]
---@field tags table<string, string>

---@class stagehost.aws.StackEvent
---@field id string
---@field logical_id? string
---@field physical_id? string
---@field type? string
---@field status? string
---@field reason? string
---@field time? string

---@class stagehost.aws.FailedResource
---@field logical_id? string
---@field type? string
---@field status? string
---@field reason? string

---@class stagehost.aws.StackResult
---@field status string
---@field ok boolean
---@field reason? string
---@field failed_resources stagehost.aws.FailedResource[] the root cause first
---@field outputs? table<string, string>
---@field stack? stagehost.aws.Stack

---@class stagehost.aws.DeployResult: stagehost.aws.StackResult
---@field no_changes? boolean
---@field changes stagehost.aws.Change[]
---@field preview string
---@field type? "CREATE"|"UPDATE"

---@class stagehost.aws.TemplateParameter
---@field key string
---@field default? string
---@field no_echo boolean
---@field description? string

---@class stagehost.aws.ValidateResult
---@field description? string
---@field parameters stagehost.aws.TemplateParameter[]
---@field capabilities string[]
---@field capabilities_reason? string
---@field transforms string[]

---A CloudFormation client (`aws.cloudformation{...}`).
---@class stagehost.aws.CloudFormation
---@field region string
---@field credentials? stagehost.aws.Credentials
---@field endpoint? string
---@field poll_min number
---@field poll_max number
local CloudFormation = {}

---One Query-protocol call: the <ActionResult> element and the response.
---@param action string
---@param params? table
---@return stagehost.xml.Element result
---@return stagehost.aws.Response response
function CloudFormation:call(action, params) end

---@param opts stagehost.aws.Template
---@return stagehost.aws.ValidateResult
function CloudFormation:validate_template(opts) end

---The stack, or nil when there is no such stack.
---@param name string
---@return stagehost.aws.Stack?
function CloudFormation:describe_stack(name) end

---The stack's outputs; raises when it does not exist.
---@param name string
---@return table<string, string>
function CloudFormation:outputs(name) end

---Stack events, newest first, stopping at `stop_id` (exclusive) or after `max_pages` (10).
---@param name string
---@param stop_id? string
---@param max_pages? integer
---@return stagehost.aws.StackEvent[]
function CloudFormation:events(name, stop_id, max_pages) end

---Polls with backoff, logs every new stack event once, returns how the stack ended.
---@param name string
---@param opts? {timeout?: number, since?: integer}
---@return stagehost.aws.StackResult
function CloudFormation:wait_stack(name, opts) end

---CREATE when the stack does not exist (or only had an unexecuted change set), UPDATE otherwise.
---@param opts stagehost.aws.CreateChangeSetOptions
---@return stagehost.aws.ChangeSetRef
function CloudFormation:create_change_set(opts) end

---@param cs stagehost.aws.ChangeSetId
---@param stack_name? string
---@return stagehost.aws.ChangeSet
function CloudFormation:describe_change_set(cs, stack_name) end

---Waits until the change set is ready; `no_changes = true` when there is nothing to change.
---@param cs stagehost.aws.ChangeSetId
---@param opts? {timeout?: number, stack_name?: string}
---@return stagehost.aws.ChangeSet
function CloudFormation:wait_change_set(cs, opts) end

---@param cs stagehost.aws.ChangeSetId
---@param stack_name? string
function CloudFormation:execute_change_set(cs, stack_name) end

---@param cs stagehost.aws.ChangeSetId
---@param stack_name? string
function CloudFormation:delete_change_set(cs, stack_name) end

---Deletes a stack; with `wait = true` waits and returns how it ended.
---@param name string
---@param opts? {wait?: boolean, timeout?: number}
---@return stagehost.aws.StackResult?
function CloudFormation:delete_stack(name, opts) end

---Create, wait for and execute a change set, then wait for the stack; raises with the failed
---resources' reasons.
---@param opts stagehost.aws.DeployOptions
---@return stagehost.aws.DeployResult
function CloudFormation:deploy(opts) end

-- ---- Amplify ----

---@class stagehost.aws.AmplifyJobStep
---@field name? string
---@field status? string
---@field reason? string
---@field log_url? string

---@class stagehost.aws.AmplifyJobResult
---@field status string "SUCCEED", "FAILED" or "CANCELLED"
---@field ok boolean
---@field failed_step? stagehost.aws.AmplifyJobStep
---@field steps table[] Amplify's steps (stepName, status, statusReason, logUrl, ...)
---@field job table Amplify's job (summary, steps)

---@class stagehost.aws.AmplifyStartJobOptions
---@field commit_id? string
---@field commit_message? string
---@field job_reason? string
---@field job_type? string default "RELEASE"
---@field job_id? string the job a "RETRY" redeploys

---An Amplify Hosting client (`aws.amplify{...}`). Apps, branches and jobs are Amplify's JSON
---objects (camelCase fields).
---@class stagehost.aws.Amplify
---@field region string
---@field credentials? stagehost.aws.Credentials
---@field endpoint? string
---@field poll_min number
---@field poll_max number
local Amplify = {}

---One REST-JSON call: the decoded answer.
---@param method string
---@param path string
---@param operation string
---@param body? table
---@return table
function Amplify:call(method, path, operation, body) end

---@param app_id string
---@return table app
function Amplify:get_app(app_id) end

---@param app_id string
---@param branch string
---@return table branch
function Amplify:get_branch(app_id, branch) end

---Fields in snake_case or camelCase; `environment_variables` are merged into the branch's.
---@param app_id string
---@param branch string
---@param fields table
---@return table branch
function Amplify:update_branch(app_id, branch, fields) end

---Starts a job (RELEASE by default).
---@param app_id string
---@param branch string
---@param opts? stagehost.aws.AmplifyStartJobOptions
---@return table job_summary (jobId, status, ...)
function Amplify:start_job(app_id, branch, opts) end

---@param app_id string
---@param branch string
---@param job_id string|integer
---@return table job {summary, steps}
function Amplify:get_job(app_id, branch, job_id) end

---Polls the job, logging each step's status; returns how it ended.
---@param app_id string
---@param branch string
---@param job_id string|integer
---@param opts? {timeout?: number, pending_timeout?: number} a job PENDING past pending_timeout (default 600 s) raises JobStuckPending
---@return stagehost.aws.AmplifyJobResult
function Amplify:wait_job(app_id, branch, job_id, opts) end

---Every app of the account and region (all pages).
---@return table[]
function Amplify:list_apps() end

---The app of that name, or nil.
---@param name string
---@return table?
function Amplify:find_app(name) end

---CreateApp; fields in snake_case or camelCase.
---@param fields {name: string, platform?: string, environment_variables?: table<string, string>}|table
---@return table app
function Amplify:create_app(fields) end

---CreateBranch; fields in snake_case or camelCase.
---@param app_id string
---@param branch string
---@param fields? {stage?: string, environment_variables?: table<string, string>}|table
---@return table branch
function Amplify:create_branch(app_id, branch, fields) end

---"https://<branch display name>.<app's default domain>"
---@param app_id string
---@param branch string
---@return string
function Amplify:branch_url(app_id, branch) end

-- ---- STS ----

---@class stagehost.aws.CallerIdentity
---@field account? string
---@field arn? string
---@field user_id? string

---@class stagehost.aws.AssumeRoleOptions
---@field role_arn string
---@field session_name? string default "stagehost-<time>"
---@field duration? integer seconds
---@field external_id? string

---@class stagehost.aws.AssumeRoleWithWebIdentityOptions
---@field role_arn string
---@field token string the OIDC token (the call is unsigned: the token is the proof)
---@field session_name? string
---@field duration? integer

---An STS client (`aws.sts{...}`); its region defaults to us-east-1.
---@class stagehost.aws.STS
---@field region string
---@field credentials? stagehost.aws.Credentials
---@field endpoint? string
local STS = {}

---@param action string
---@param params? table
---@param extra? table options of aws.query
---@return stagehost.xml.Element result
---@return stagehost.aws.Response response
function STS:call(action, params, extra) end

---@return stagehost.aws.CallerIdentity
function STS:get_caller_identity() end

---@param opts stagehost.aws.AssumeRoleOptions
---@return stagehost.aws.Credentials
function STS:assume_role(opts) end

---@param opts stagehost.aws.AssumeRoleWithWebIdentityOptions
---@return stagehost.aws.Credentials
function STS:assume_role_with_web_identity(opts) end

-- ---- S3 ----

---@class stagehost.aws.S3BucketOptions
---@field bucket string

---@class stagehost.aws.S3ObjectOptions
---@field bucket string
---@field key string

---@class stagehost.aws.S3PutOptions: stagehost.aws.S3ObjectOptions
---@field body? string the object's bytes (or `file`)
---@field file? string a path to read them from
---@field content_type? string default "application/octet-stream"
---@field metadata? table<string, string> x-amz-meta-* headers

---@class stagehost.aws.S3Head
---@field etag string the quoted MD5 hex, as S3 sends it
---@field size integer
---@field content_type? string
---@field last_modified? string
---@field metadata table<string, string>

---@class stagehost.aws.S3Object
---@field body string
---@field etag string
---@field content_type? string
---@field metadata table<string, string>

---S3, path-style (ENDPOINT/bucket/key): what deployments need of it.
---@class stagehost.aws.S3
---@field region string
---@field credentials? stagehost.aws.Credentials
---@field endpoint? string
---@field retry_base? number
local S3 = {}

---One signed S3 request (x-amz-content-sha256 set), retried as idempotent.
---@param operation string e.g. "PutObject"
---@param method string
---@param path string "/bucket/key", encoded
---@param opts? {body?: string, headers?: table<string, string>, query?: table|string}
---@return stagehost.aws.Response
function S3:call(operation, method, path, opts) end

---Creates the bucket; one you already own is fine.
---@param opts stagehost.aws.S3BucketOptions
---@return {created: boolean}
function S3:create_bucket(opts) end

---@param opts stagehost.aws.S3PutOptions
---@return {etag: string, size: integer}
function S3:put_object(opts) end

---The object's headers, or nil when S3 answers 404.
---@param opts stagehost.aws.S3ObjectOptions
---@return stagehost.aws.S3Head?
function S3:head_object(opts) end

---@param opts stagehost.aws.S3ObjectOptions
---@return stagehost.aws.S3Object
function S3:get_object(opts) end

---@param opts stagehost.aws.S3ObjectOptions
function S3:delete_object(opts) end

-- ---- the module ----

---AWS: SigV4, credentials, requests and clients.
---
---The service clients, each made from the same options (region, endpoint, credentials):
---@class stagehost.aws
---@field cloudformation fun(opts?: stagehost.aws.ClientOptions): stagehost.aws.CloudFormation
---@field amplify fun(opts?: stagehost.aws.ClientOptions): stagehost.aws.Amplify
---@field sts fun(opts?: stagehost.aws.ClientOptions): stagehost.aws.STS
---@field s3 fun(opts?: stagehost.aws.ClientOptions): stagehost.aws.S3
local aws = {}

---Process-wide defaults (`--sandbox` sets them); each beats the environment.
---@param opts stagehost.aws.ConfigureOptions
---@return stagehost.aws.ConfigureOptions previous
function aws.configure(opts) end

---Signature Version 4: the headers to add, and what was signed.
---@param opts stagehost.aws.SignOptions
---@return table<string, string> headers Authorization, X-Amz-Date, ...
---@return stagehost.aws.SignDebug debug
function aws.sign(opts) end

---The standard credential chain: environment, web identity, profiles, container, IMDSv2.
---@param opts? stagehost.aws.CredentialsOptions
---@return stagehost.aws.Credentials
function aws.credentials(opts) end

---Signs and sends a request, with AWS's retry rules; raises a `stagehost.aws.Error`.
---@param opts stagehost.aws.RequestOptions
---@return stagehost.aws.Response
function aws.request(opts) end

---The Query protocol: the <ActionResult> element and the response.
---@param service string
---@param region? string
---@param action string
---@param version string
---@param params? table
---@param opts? stagehost.aws.RequestOptions extra options of aws.request
---@return stagehost.xml.Element result
---@return stagehost.aws.Response response
function aws.query(service, region, action, version, params, opts) end

---The region to use: the one given, else AWS_REGION, AWS_DEFAULT_REGION or the profile's, checked.
---@param region? string
---@return string
function aws.region(region) end

---The region, as `aws.region`, with messages naming `who` and a fallback.
---@param region? string
---@param who? string
---@param fallback? string
---@return string
function aws.resolve_region(region, who, fallback) end

---The fields a service client starts with: `region` (as `aws.resolve_region`), `credentials`,
---`endpoint` and `retry_base` from a constructor's options.
---@param opts table
---@param who? string
---@param fallback? string
---@return {region: string, credentials: any, endpoint: string?, retry_base: number?}
function aws.client_fields(opts, who, fallback) end

---A service client's class and its constructor: add methods to the class; new(opts) makes a
---client with the fields of `aws.client_fields`, and poll_min/poll_max when `poll` is given.
---@param who string the constructor's name in messages ("aws.s3")
---@param defaults? {region?: string, poll?: number[]}
---@return table class
---@return fun(opts?: table): table new
function aws.client_class(who, defaults) end

---AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL, else the regional endpoint.
---@param service string
---@param region? string
---@return string
function aws.endpoint(service, region) end

---Raises one line for a malformed ARN.
---@param arn string
---@return stagehost.aws.Arn
function aws.parse_arn(arn) end

---An AWS time (ISO 8601 or epoch seconds) as epoch seconds.
---@param value string|number|nil
---@return number?
function aws.parse_time(value) end

---Query-protocol parameters as a sorted, encoded form body.
---@param params table
---@return string
function aws.form(params) end

---RFC 3986 percent-encoding.
---@param s string
---@return string
function aws.uri_encode(s) end

---Makes a table an AWS error (prints as one line).
---@param fields table
---@return stagehost.aws.Error
function aws.error(fields) end

---Is e an AWS error (of this code)?
---@param e any
---@param code? string
---@return boolean
function aws.is_error(e, code) end

return aws
