-- The sandbox's AWS emulator (CloudFormation, STS, Amplify) checked against the real awscli:
-- if Debian's aws parses what the sandbox answers, waits on it with its own waiters, retries
-- its throttling and prints its errors as it does against AWS, then the emulator speaks the
-- protocols faithfully enough for every client built to them. Raw requests check what awscli
-- never sends (no signature, unknown actions, broken bodies). awscli takes about a second to
-- start, so independent invocations run concurrently and the total stays under 40.
local T = require("harness")
local task = require("stagehost.task")
local json = require("stagehost.json")
local http = require("stagehost.http")
local sandbox = require("stagehost.sandbox")
local aws_sign = require("stagehost.aws").sign

local STEP = 0.05

local require_awscli, aws, aws_ok = T.require_awscli, T.awscli, T.awscli_ok

-- Run fn(sb) with a fresh sandbox on the fast simulated clock, closed whatever happens.
local function with_sandbox(fn) return T.with_sandbox({ step_seconds = STEP }, fn) end

local count_requests = T.sandbox_requests

-- A request signed (by stagehost's signer) with a key the sandbox knows: sb.credentials, or
-- the issued key access_key with its session token. opts.forge replaces the signature with
-- zeros. For what awscli never sends: query(sb, service, params[, access_key[, opts]])
local function signed(sb, req, service, access_key, opts)
  local key = access_key or sb.credentials.access_key_id
  local known = assert(sb.state.aws.keys[key], "a key the sandbox knows")
  local headers = {}
  for k, v in pairs(req.headers or {}) do headers[k] = v end
  local added = aws_sign{ method = req.method or "GET", url = req.url, headers = headers, body = req.body or "",
    service = service, region = "us-east-1", credentials = { access_key_id = key, secret_access_key = known.secret,
      session_token = known.token } }
  for k, v in pairs(added) do headers[k] = v end
  if opts and opts.forge then headers.Authorization = headers.Authorization:gsub("Signature=%x+", "Signature=" .. ("0"):rep(64)) end
  req.headers = headers
  return http.request(req)
end

local function query(sb, service, params, access_key, opts)
  local parts = {}
  for _, k in ipairs(params) do parts[#parts + 1] = k end
  return signed(sb, { method = "POST", url = sb.url .. "/", body = table.concat(parts, "&"),
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" } }, service, access_key, opts)
end

local function form_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Statuses of one logical resource, oldest first, from awscli's newest-first event list.
local function history(events, logical)
  local out = {}
  for i = #events, 1, -1 do
    if events[i].LogicalResourceId == logical then out[#out + 1] = events[i].ResourceStatus end
  end
  return table.concat(out, " ")
end

local function find(list, field, value)
  for _, item in ipairs(list or {}) do
    if item[field] == value then return item end
  end
  return nil
end

local function outputs_of(stack)
  local out = {}
  for _, o in ipairs(stack.Outputs or {}) do out[o.OutputKey] = o end
  return out
end

---------------------------------------------------------------------------------------------------

local TEMPLATE = json.encode{
  AWSTemplateFormatVersion = "2010-09-09",
  Description = "stagehost sandbox fidelity stack",
  Parameters = {
    Stage = { Type = "String", Default = "staging", AllowedValues = { "staging", "production" },
      Description = "where it runs" },
    ApiKey = { Type = "String", NoEcho = true },
  },
  Resources = {
    Site = { Type = "AWS::S3::Bucket" },
    Role = { Type = "AWS::IAM::Role", Properties = { AssumeRolePolicyDocument = { Version = "2012-10-17" } } },
    Handler = { Type = "AWS::Lambda::Function", Properties = {
      Role = { ["Fn::GetAtt"] = { "Role", "Arn" } },
      Environment = { Variables = { STAGE = { Ref = "Stage" }, BUCKET = { Ref = "Site" } } },
    } },
    Api = { Type = "AWS::ApiGateway::RestApi", DependsOn = "Handler",
      Properties = { Name = { ["Fn::Sub"] = "${AWS::StackName}-api" } } },
  },
  Outputs = {
    SiteBucket = { Value = { Ref = "Site" }, Description = "the site's bucket" },
    ApiUrl = { Value = { ["Fn::GetAtt"] = { "Api", "Url" } } },
    HandlerArn = { Value = { ["Fn::GetAtt"] = { "Handler", "Arn" } },
      Export = { Name = { ["Fn::Sub"] = "${AWS::StackName}-handler" } } },
    Summary = { Value = { ["Fn::Sub"] = "${Stage} in ${AWS::Region} for ${AWS::StackName}: ${Site}" } },
    Literal = { Value = "plain text" },
  },
}

local SAM_YAML = [[
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: a SAM app in YAML
Parameters:
  Stage:
    Type: String
    Default: staging
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Runtime: nodejs24.x
      CodeUri: s3://stagehost-artifacts/hello.zip
      Environment:
        Variables:
          STAGE: !Ref Stage
      Events:
        Root:
          Type: Api
          Properties: { Path: /, Method: get }
Outputs:
  Endpoint:
    Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com/Prod/"
  FunctionArn:
    Value: !GetAtt HelloFunction.Arn
]]

T.test("awscli is Debian's, at /usr/bin/aws", function()
  require_awscli()
  with_sandbox(function(sb)
    local r = aws(sb, { "--version" })
    T.eq(r.code, 0, r.stderr)
    T.match(r.stdout .. r.stderr, "^aws%-cli/2%.")
  end)
end)

T.test("cloudformation validate-template: JSON, and a SAM template in YAML", function()
  with_sandbox(function(sb)
    local r = task.all{
      function() return aws_ok(sb, { "cloudformation", "validate-template", "--template-body", TEMPLATE }) end,
      function() return aws_ok(sb, { "cloudformation", "validate-template", "--template-body", SAM_YAML }) end,
    }
    local plain, sam = r[1], r[2]
    T.eq(plain.Description, "stagehost sandbox fidelity stack")
    local stage, key = find(plain.Parameters, "ParameterKey", "Stage"), find(plain.Parameters, "ParameterKey", "ApiKey")
    T.eq(stage.DefaultValue, "staging"); T.eq(stage.NoEcho, false); T.eq(stage.Description, "where it runs")
    T.eq(key.NoEcho, true); T.eq(key.DefaultValue, nil)
    T.eq(table.concat(plain.Capabilities, ","), "CAPABILITY_IAM")
    T.eq(plain.CapabilitiesReason, "The following resource(s) require capabilities: [AWS::IAM::Role]")

    T.eq(sam.Description, "a SAM app in YAML")
    T.eq(find(sam.Parameters, "ParameterKey", "Stage").DefaultValue, "staging")
    T.eq(table.concat(sam.Capabilities, ","), "CAPABILITY_AUTO_EXPAND")
    T.has(sam.CapabilitiesReason, "AWS::Serverless-2016-10-31")
    T.eq(table.concat(sam.DeclaredTransforms, ","), "AWS::Serverless-2016-10-31")
    T.eq(count_requests(sb, "cloudformation", "ValidateTemplate"), 2)
  end)
end, { timeout = 120 })

T.test("cloudformation: change set, execute, wait, outputs and events; no-change and changed updates", function()
  with_sandbox(function(sb)
    -- small pages, so awscli's own pagination of DescribeStackEvents is exercised
    sb.state.aws.page_size = 4
    local name = "web-staging"
    local created = aws_ok(sb, { "cloudformation", "create-change-set", "--stack-name", name, "--change-set-name", "first",
      "--change-set-type", "CREATE", "--template-body", TEMPLATE, "--capabilities", "CAPABILITY_IAM",
      "--parameters", "ParameterKey=ApiKey,ParameterValue=k3y-value", "--tags", "Key=team,Value=web" })
    T.match(created.Id, "^arn:aws:cloudformation:us%-east%-1:123456789012:changeSet/first/[%x%-]+$")
    T.match(created.StackId, "^arn:aws:cloudformation:us%-east%-1:123456789012:stack/web%-staging/[%x%-]+$")

    aws_ok(sb, { "cloudformation", "wait", "change-set-create-complete", "--stack-name", name, "--change-set-name", "first" })
    local cs = aws_ok(sb, { "cloudformation", "describe-change-set", "--change-set-name", created.Id })
    T.eq(cs.Status, "CREATE_COMPLETE"); T.eq(cs.ExecutionStatus, "AVAILABLE"); T.eq(cs.StackName, name)
    local changes = {}
    for _, c in ipairs(cs.Changes) do
      T.eq(c.Type, "Resource")
      changes[#changes + 1] = c.ResourceChange.Action .. " " .. c.ResourceChange.LogicalResourceId .. " " .. c.ResourceChange.ResourceType
    end
    T.eq(table.concat(changes, ", "), "Add Role AWS::IAM::Role, Add Site AWS::S3::Bucket, "
      .. "Add Handler AWS::Lambda::Function, Add Api AWS::ApiGateway::RestApi", "dependency order")
    T.eq(find(cs.Parameters, "ParameterKey", "ApiKey").ParameterValue, "****", "NoEcho masked")
    T.eq(find(cs.Parameters, "ParameterKey", "Stage").ParameterValue, "staging", "the default applied")

    aws_ok(sb, { "cloudformation", "execute-change-set", "--stack-name", name, "--change-set-name", "first" })
    aws_ok(sb, { "cloudformation", "wait", "stack-create-complete", "--stack-name", name })
    local described = task.all{
      stacks = function() return aws_ok(sb, { "cloudformation", "describe-stacks", "--stack-name", name }) end,
      events = function() return aws_ok(sb, { "cloudformation", "describe-stack-events", "--stack-name", name }) end,
    }
    local stack = described.stacks.Stacks[1]
    T.eq(stack.StackStatus, "CREATE_COMPLETE"); T.eq(stack.StackId, created.StackId)
    T.eq(stack.Description, "stagehost sandbox fidelity stack")
    T.eq(table.concat(stack.Capabilities, ","), "CAPABILITY_IAM")
    T.eq(find(stack.Tags, "Key", "team").Value, "web")
    T.eq(find(stack.Parameters, "ParameterKey", "ApiKey").ParameterValue, "****")

    local resources = sb.state.aws.stacks[created.StackId].resources
    local out = outputs_of(stack)
    T.eq(out.SiteBucket.OutputValue, resources.Site.physical, "Ref is the physical id")
    T.match(out.SiteBucket.OutputValue, "^web%-staging%-site%-[%l%d]+$")
    T.eq(out.SiteBucket.Description, "the site's bucket")
    T.eq(out.HandlerArn.OutputValue, "arn:aws:lambda:us-east-1:123456789012:function:" .. resources.Handler.physical)
    T.eq(out.HandlerArn.ExportName, "web-staging-handler")
    -- the sandbox serves the APIs it deploys: the execute-api URL is shown as its own address for it
    T.eq(out.ApiUrl.OutputValue, ("%s/_api/%s/Prod/"):format(sb.url, resources.Api.physical))
    T.eq(out.Summary.OutputValue, "staging in us-east-1 for web-staging: " .. resources.Site.physical)
    T.eq(out.Literal.OutputValue, "plain text")

    local events = described.events.StackEvents
    T.ok(count_requests(sb, "cloudformation", "DescribeStackEvents") > 1, "awscli followed NextToken")
    T.eq(events[1].LogicalResourceId, name); T.eq(events[1].ResourceStatus, "CREATE_COMPLETE")
    T.eq(events[#events].ResourceStatus, "REVIEW_IN_PROGRESS")
    T.eq(history(events, name), "REVIEW_IN_PROGRESS CREATE_IN_PROGRESS CREATE_COMPLETE")
    for _, logical in ipairs{ "Role", "Site", "Handler", "Api" } do
      T.eq(history(events, logical), "CREATE_IN_PROGRESS CREATE_IN_PROGRESS CREATE_COMPLETE", logical)
    end
    local order = {}
    for i = #events, 1, -1 do
      if events[i].ResourceStatus == "CREATE_COMPLETE" then order[#order + 1] = events[i].LogicalResourceId end
    end
    T.eq(table.concat(order, " "), "Role Site Handler Api " .. name, "created in dependency order")
    T.eq(find(events, "ResourceStatus", "CREATE_COMPLETE").PhysicalResourceId, created.StackId)

    -- the same template and parameters again: AWS refuses to make an empty change set
    aws_ok(sb, { "cloudformation", "create-change-set", "--stack-name", name, "--change-set-name", "same",
      "--template-body", TEMPLATE, "--capabilities", "CAPABILITY_IAM",
      "--parameters", "ParameterKey=ApiKey,UsePreviousValue=true", "ParameterKey=Stage,ParameterValue=staging" })
    local waited = aws(sb, { "cloudformation", "wait", "change-set-create-complete", "--stack-name", name, "--change-set-name", "same" })
    T.eq(waited.code, 255, "the waiter fails on FAILED")
    T.has(waited.stderr, "Waiter ChangeSetCreateComplete failed")
    local same = aws_ok(sb, { "cloudformation", "describe-change-set", "--stack-name", name, "--change-set-name", "same" })
    T.eq(same.Status, "FAILED")
    T.eq(same.StatusReason, "The submitted information didn't contain changes. Submit different information to create a change set.")
    T.eq(same.ExecutionStatus, "UNAVAILABLE")

    -- a changed parameter modifies the one resource using it
    aws_ok(sb, { "cloudformation", "create-change-set", "--stack-name", name, "--change-set-name", "promote",
      "--template-body", TEMPLATE, "--capabilities", "CAPABILITY_IAM",
      "--parameters", "ParameterKey=ApiKey,UsePreviousValue=true", "ParameterKey=Stage,ParameterValue=production" })
    task.sleep(3 * STEP)
    local promote = aws_ok(sb, { "cloudformation", "describe-change-set", "--stack-name", name, "--change-set-name", "promote" })
    T.eq(promote.Status, "CREATE_COMPLETE")
    T.eq(#promote.Changes, 1, "only Handler changes")
    local change = promote.Changes[1].ResourceChange
    T.eq(change.Action, "Modify"); T.eq(change.LogicalResourceId, "Handler"); T.eq(change.Replacement, "False")
    T.eq(change.PhysicalResourceId, resources.Handler.physical)
    T.eq(change.Details[1].ChangeSource, "ParameterReference"); T.eq(change.Details[1].CausingEntity, "Stage")
    aws_ok(sb, { "cloudformation", "execute-change-set", "--stack-name", name, "--change-set-name", "promote" })
    aws_ok(sb, { "cloudformation", "wait", "stack-update-complete", "--stack-name", name })
    local updated = aws_ok(sb, { "cloudformation", "describe-stacks", "--stack-name", name }).Stacks[1]
    T.eq(updated.StackStatus, "UPDATE_COMPLETE")
    T.ok(updated.LastUpdatedTime, "LastUpdatedTime once updated")
    T.eq(outputs_of(updated).Summary.OutputValue, "production in us-east-1 for web-staging: " .. resources.Site.physical)
    T.eq(find(updated.Parameters, "ParameterKey", "Stage").ParameterValue, "production")
    T.eq(sb.state.aws.stacks[created.StackId].events[#sb.state.aws.stacks[created.StackId].events].status, "UPDATE_COMPLETE")
  end)
end, { timeout = 240 })

T.test("cloudformation: a failing resource rolls the create back; a missing stack as awscli prints it", function()
  with_sandbox(function(sb)
    local failing = json.encode{ Resources = {
      Queue = { Type = "AWS::SQS::Queue" },
      Db = { Type = "AWS::DynamoDB::Table", Metadata = { ["stagehost:fail"] = "Table limit exceeded for the account" },
        Properties = { StreamTarget = { Ref = "Queue" } } },
      Worker = { Type = "AWS::Lambda::Function", Properties = { Table = { Ref = "Db" } } },
    } }
    local first = task.all{
      create = function()
        return aws_ok(sb, { "cloudformation", "create-change-set", "--stack-name", "doomed", "--change-set-name", "c1",
          "--change-set-type", "CREATE", "--template-body", failing })
      end,
      missing = function() return aws(sb, { "cloudformation", "describe-stacks", "--stack-name", "no-such-stack" }) end,
    }
    T.eq(first.missing.code, 254)
    T.has(first.missing.stderr,
      "An error occurred (ValidationError) when calling the DescribeStacks operation: Stack with id no-such-stack does not exist")

    task.sleep(3 * STEP)
    aws_ok(sb, { "cloudformation", "execute-change-set", "--change-set-name", first.create.Id })
    local waited = aws(sb, { "cloudformation", "wait", "stack-create-complete", "--stack-name", "doomed" })
    T.eq(waited.code, 255, "the waiter fails")
    T.has(waited.stderr, "ROLLBACK_COMPLETE")
    local r = task.all{
      events = function() return aws_ok(sb, { "cloudformation", "describe-stack-events", "--stack-name", "doomed" }) end,
      stacks = function() return aws_ok(sb, { "cloudformation", "describe-stacks", "--stack-name", "doomed" }) end,
    }
    local stack = r.stacks.Stacks[1]
    T.eq(stack.StackStatus, "ROLLBACK_COMPLETE")
    T.eq(stack.StackStatusReason, "The following resource(s) failed to create: [Db]. Rollback requested by user.")
    T.eq(stack.Outputs, nil, "no outputs from a failed create")
    local events = r.events.StackEvents
    local failed = find(events, "ResourceStatus", "CREATE_FAILED")
    T.eq(failed.LogicalResourceId, "Db")
    T.eq(failed.ResourceStatusReason, "Table limit exceeded for the account")
    T.eq(history(events, "Queue"), "CREATE_IN_PROGRESS CREATE_IN_PROGRESS CREATE_COMPLETE DELETE_IN_PROGRESS DELETE_COMPLETE")
    T.eq(history(events, "Db"), "CREATE_IN_PROGRESS CREATE_IN_PROGRESS CREATE_FAILED DELETE_IN_PROGRESS DELETE_COMPLETE")
    T.eq(history(events, "Worker"), "", "nothing after the failure is created")
    T.eq(history(events, "doomed"), "REVIEW_IN_PROGRESS CREATE_IN_PROGRESS ROLLBACK_IN_PROGRESS ROLLBACK_COMPLETE")
    T.eq(find(events, "ResourceStatus", "ROLLBACK_IN_PROGRESS").ResourceStatusReason, stack.StackStatusReason)
  end)
end, { timeout = 180 })

T.test("a queued Throttling fault: awscli retries by itself and succeeds", function()
  with_sandbox(function(sb)
    sb:fail_next{ service = "cloudformation", action = "DescribeStacks", code = "Throttling", message = "Rate exceeded" }
    local listed = aws_ok(sb, { "cloudformation", "describe-stacks" })
    T.eq(#listed.Stacks, 0)
    T.eq(count_requests(sb, "cloudformation", "DescribeStacks"), 2, "the throttled call and its retry")
    T.eq(#sb.faults, 0, "the fault was consumed")
  end)
end, { timeout = 120 })

-- header.payload.signature with the claims a GitHub Actions OIDC token carries
local function oidc_token(claims)
  local crypto = require("stagehost.crypto")
  return crypto.base64url_encode(json.encode{ alg = "RS256", typ = "JWT" }) .. "."
    .. crypto.base64url_encode(json.encode(claims)) .. "." .. crypto.base64url_encode("not-a-real-signature")
end

T.test("sts: get-caller-identity, assume-role, the issued credentials, unsigned assume-role-with-web-identity", function()
  with_sandbox(function(sb)
    local ROLE = "arn:aws:iam::123456789012:role/deployer"
    local r = task.all{
      me = function() return aws_ok(sb, { "sts", "get-caller-identity" }) end,
      assumed = function()
        return aws_ok(sb, { "sts", "assume-role", "--role-arn", ROLE, "--role-session-name", "pipeline",
          "--duration-seconds", "900" })
      end,
    }
    T.eq(r.me.Account, "123456789012")
    T.eq(r.me.Arn, "arn:aws:iam::123456789012:user/stagehost-sandbox")
    T.match(r.me.UserId, "^AIDA[%u%d]+$")
    local creds = r.assumed.Credentials
    T.match(creds.AccessKeyId, "^ASIA[%u%d]+$"); T.eq(#creds.AccessKeyId, 20)
    local kept = sb.state.aws.keys[creds.AccessKeyId]
    T.eq(kept.secret, creds.SecretAccessKey); T.eq(kept.token, creds.SessionToken)
    T.eq(creds.Expiration, os.date("!%Y-%m-%dT%H:%M:%S+00:00", kept.expires), "the expiry awscli parsed")
    T.ok(math.abs(kept.expires - os.time() - 900) <= 5, "DurationSeconds honoured")
    T.eq(r.assumed.AssumedRoleUser.Arn, "arn:aws:sts::123456789012:assumed-role/deployer/pipeline")
    T.match(r.assumed.AssumedRoleUser.AssumedRoleId, "^AROA[%u%d]+:pipeline$")
    T.eq(sb.state.aws.issued, 1)

    -- awscli signs with the issued key and token; a real SigV4 check finds them in keys
    sb.verify_signature = sandbox.signature_verifier(sb)
    local as_role = aws_ok(sb, { "sts", "get-caller-identity" }, { AWS_ACCESS_KEY_ID = creds.AccessKeyId,
      AWS_SECRET_ACCESS_KEY = creds.SecretAccessKey, AWS_SESSION_TOKEN = creds.SessionToken })
    T.eq(as_role.Arn, r.assumed.AssumedRoleUser.Arn, "the assumed role is the caller")
    T.eq(as_role.UserId, r.assumed.AssumedRoleUser.AssumedRoleId)
    T.eq(query(sb, "sts", { "Action=GetCallerIdentity", "Version=2011-06-15" }, creds.AccessKeyId, { forge = true }).status,
      403, "the verifier was on: a forged signature is refused")

    -- a verifier refusing every signature: only an unsigned call can pass it
    local verified = 0
    sb.verify_signature = function(req, service, region)
      verified = verified + 1
      T.eq(region, "us-east-1"); T.eq(service, "sts"); T.ok(req.headers.authorization, "a signed request")
      return false, "SignatureDoesNotMatch", "refused by the test's verifier"
    end
    local token = oidc_token{ sub = "repo:acme/web:environment:staging", aud = "sts.amazonaws.com",
      iss = "https://token.actions.githubusercontent.com", exp = os.time() + 600 }
    r = task.all{
      web = function()
        return aws_ok(sb, { "sts", "assume-role-with-web-identity", "--role-arn", ROLE, "--role-session-name", "gha",
          "--web-identity-token", token })
      end,
      refused = function() return aws(sb, { "sts", "get-caller-identity" }) end,
    }
    T.eq(r.refused.code, 254)
    T.has(r.refused.stderr, "(SignatureDoesNotMatch) when calling the GetCallerIdentity operation: refused by the test's verifier")
    T.eq(verified, 1, "the web identity call was not signed")
    T.eq(r.web.SubjectFromWebIdentityToken, "repo:acme/web:environment:staging")
    T.eq(r.web.Audience, "sts.amazonaws.com")
    T.eq(r.web.Provider, "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com")
    T.eq(r.web.AssumedRoleUser.Arn, "arn:aws:sts::123456789012:assumed-role/deployer/gha")
    T.match(r.web.Credentials.AccessKeyId, "^ASIA")
    T.ok(sb.state.aws.keys[r.web.Credentials.AccessKeyId], "remembered for a verifier")
    T.eq(sb.state.aws.issued, 2)
  end)
end, { timeout = 120 })

-- What AWS refuses, the sandbox refuses, with AWS's codes: awscli (whose botocore signs and
-- parses) sees the same errors it would see from AWS.
T.test("refusals awscli sees as from AWS: a wrong secret, an unknown key, web identity tokens AWS would not take", function()
  local ROLE = "arn:aws:iam::123456789012:role/deployer"
  local GHA = "https://token.actions.githubusercontent.com"
  local function valid(claims)
    local c = { sub = "repo:acme/web:ref:refs/heads/main", aud = "sts.amazonaws.com", iss = GHA, exp = os.time() + 600,
      iat = os.time() }
    for k, v in pairs(claims) do c[k] = v end
    return oidc_token(c)
  end
  local opts = { step_seconds = STEP, aws = { keys = { AKIDEXTRA = "extra-secret-0123456789" },
    oidc = { ["https://oidc.example.com/tenant"] = { "my-app" } } } }
  T.with_sandbox(opts, function(sb)
    -- for task.all: awscli's args with env on top, and AssumeRoleWithWebIdentity with a token
    local function call(args, env) return function() return aws(sb, args, env) end end
    local function web_identity(token)
      return call{ "sts", "assume-role-with-web-identity", "--role-arn", ROLE, "--role-session-name", "gha",
        "--web-identity-token", token }
    end
    local wrong_secret = { AWS_SECRET_ACCESS_KEY = "not-the-sandbox-secret-00000000" }
    local unknown_key = { AWS_ACCESS_KEY_ID = "AKIDNOBODYKNOWS0000" }
    local r = task.all{
      wrong_secret = call({ "cloudformation", "describe-stacks" }, wrong_secret),
      unknown_key = call({ "cloudformation", "list-stacks" }, unknown_key),
      amplify_unknown = call({ "amplify", "list-apps" }, unknown_key),
      amplify_wrong = call({ "amplify", "list-apps" }, wrong_secret),
      extra_key = call({ "sts", "get-caller-identity" }, { AWS_ACCESS_KEY_ID = "AKIDEXTRA",
        AWS_SECRET_ACCESS_KEY = "extra-secret-0123456789" }),
      not_a_jwt = web_identity("notajwt"),
      opaque = web_identity("Atza|IQEBLjAsAhRFiXuWpUXuRvQ9PZL3GMFcYevydwIUFAHZwXZXXXXXXXX"),
      audience = web_identity(valid{ aud = "sigstore" }),
      issuer = web_identity(valid{ iss = "https://vstoken.actions.githubusercontent.com" }),
      no_aud = web_identity(valid{ aud = json.null }),
      expired = web_identity(valid{ exp = os.time() - 60 }),
      other_provider = web_identity(valid{ iss = "https://oidc.example.com/tenant", aud = { "other", "my-app" } }),
    }
    local function refused(result, code, message)
      T.eq(result.code, 254, code .. ": " .. result.stderr)
      T.has(result.stderr, ("An error occurred (%s)"):format(code))
      if message then T.has(result.stderr, message) end
    end
    refused(r.wrong_secret, "SignatureDoesNotMatch",
      "when calling the DescribeStacks operation: The request signature we calculated does not match the signature you provided")
    refused(r.unknown_key, "InvalidClientTokenId",
      "when calling the ListStacks operation: The security token included in the request is invalid.")
    refused(r.amplify_unknown, "UnrecognizedClientException", "ListApps")
    refused(r.amplify_wrong, "InvalidSignatureException", "ListApps")
    T.eq(r.extra_key.code, 0, "a key given to sandbox.start is accepted: " .. r.extra_key.stderr)
    refused(r.not_a_jwt, "InvalidIdentityToken", "The ID Token provided is not a valid JWT")
    refused(r.opaque, "InvalidIdentityToken", "not a valid JWT")
    refused(r.audience, "InvalidIdentityToken", "Incorrect token audience")
    refused(r.issuer, "InvalidIdentityToken",
      "No OpenIDConnect provider found in your account for https://vstoken.actions.githubusercontent.com")
    refused(r.no_aud, "InvalidIdentityToken", "Missing a required claim: aud")
    refused(r.expired, "ExpiredTokenException", "Token expired: current date/time")
    T.eq(r.other_provider.code, 0, "a provider given to sandbox.start, one of the token's audiences: " .. r.other_provider.stderr)
    local accepted = json.decode(r.other_provider.stdout)
    T.eq(accepted.Audience, "my-app")
    T.eq(accepted.Provider, "arn:aws:iam::123456789012:oidc-provider/oidc.example.com/tenant")
    T.eq(sb.state.aws.issued, 1, "only the accepted token got credentials")

    -- a SAM template as a developer keeps it (CodeUri: src/), deployed unpackaged: the change
    -- set is made, and fails with the transform's words
    local unpackaged = SAM_YAML:gsub("CodeUri: s3://stagehost%-artifacts/hello%.zip", "CodeUri: src/")
    local cs = aws_ok(sb, { "cloudformation", "create-change-set", "--stack-name", "unpackaged", "--change-set-name", "c1",
      "--change-set-type", "CREATE", "--template-body", unpackaged, "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND" })
    local waited = aws(sb, { "cloudformation", "wait", "change-set-create-complete", "--change-set-name", cs.Id })
    T.eq(waited.code, 255, "the waiter fails on FAILED")
    local failed = aws_ok(sb, { "cloudformation", "describe-change-set", "--change-set-name", cs.Id })
    T.eq(failed.Status, "FAILED"); T.eq(failed.ExecutionStatus, "UNAVAILABLE")
    T.eq(failed.StatusReason, "Transform AWS::Serverless-2016-10-31 failed with: Invalid Serverless Application "
      .. "Specification document. Number of errors found: 1. Resource with id [HelloFunction] is invalid. 'CodeUri' is "
      .. "not a valid S3 Uri of the form 's3://bucket/key' with optional versionId query parameter.")
  end)
end, { timeout = 120 })

T.test("amplify: app, branch, variables replaced, a release job succeeds, a failing step fails the job", function()
  with_sandbox(function(sb)
    local app = aws_ok(sb, { "amplify", "create-app", "--name", "web", "--environment-variables", "APP_LEVEL=1" }).app
    T.match(app.appId, "^d[%l%d]+$"); T.eq(#app.appId, 14)
    T.eq(app.defaultDomain, app.appId .. ".amplifyapp.com")
    T.eq(app.appArn, "arn:aws:amplify:us-east-1:123456789012:apps/" .. app.appId)
    T.eq(app.environmentVariables.APP_LEVEL, "1")
    local branch = aws_ok(sb, { "amplify", "create-branch", "--app-id", app.appId, "--branch-name", "main",
      "--stage", "PRODUCTION", "--environment-variables", "API_URL=https://api.example,KEEP=1" }).branch
    T.eq(branch.branchArn, app.appArn .. "/branches/main"); T.eq(branch.stage, "PRODUCTION")

    local r = task.all{
      app = function() return aws_ok(sb, { "amplify", "get-app", "--app-id", app.appId }) end,
      branch = function() return aws_ok(sb, { "amplify", "get-branch", "--app-id", app.appId, "--branch-name", "main" }) end,
      missing = function() return aws(sb, { "amplify", "get-app", "--app-id", "dmissing000000" }) end,
    }
    T.eq(r.app.app.name, "web"); T.eq(r.app.app.productionBranch.branchName, "main")
    T.eq(r.branch.branch.environmentVariables.API_URL, "https://api.example")
    T.eq(r.branch.branch.environmentVariables.KEEP, "1")
    T.eq(r.missing.code, 254)
    T.has(r.missing.stderr, "An error occurred (NotFoundException) when calling the GetApp operation: App dmissing000000 not found.")

    local started = task.now()
    local job = aws_ok(sb, { "amplify", "start-job", "--app-id", app.appId, "--branch-name", "main",
      "--job-type", "RELEASE", "--commit-id", "abc123" }).jobSummary
    T.eq(job.jobId, "1"); T.eq(job.jobType, "RELEASE"); T.eq(job.commitId, "abc123")
    T.ok(job.status == "PENDING" or job.status == "PROVISIONING" or job.status == "RUNNING", "not finished at once: " .. job.status)
    task.sleep(math.max(0, started + 6 * STEP - task.now()))
    local done = aws_ok(sb, { "amplify", "get-job", "--app-id", app.appId, "--branch-name", "main", "--job-id", "1" }).job
    T.eq(done.summary.status, "SUCCEED"); T.ok(done.summary.endTime, "an end time")
    local names = {}
    for i, s in ipairs(done.steps) do
      names[i] = s.stepName .. "=" .. s.status
      T.ok(s.endTime >= s.startTime, "awscli parsed the epoch timestamps in order")
    end
    T.eq(table.concat(names, " "), "BUILD=SUCCEED DEPLOY=SUCCEED VERIFY=SUCCEED")

    -- the API replaces the variables with what is sent (merging is the client's business)
    local updated = aws_ok(sb, { "amplify", "update-branch", "--app-id", app.appId, "--branch-name", "main",
      "--environment-variables", "STAGEHOST_FAIL_STEP=DEPLOY" }).branch
    T.eq(updated.environmentVariables.STAGEHOST_FAIL_STEP, "DEPLOY")
    T.eq(updated.environmentVariables.KEEP, nil, "replaced, not merged")

    started = task.now()
    job = aws_ok(sb, { "amplify", "start-job", "--app-id", app.appId, "--branch-name", "main", "--job-type", "RELEASE" }).jobSummary
    T.eq(job.jobId, "2")
    task.sleep(math.max(0, started + 6 * STEP - task.now()))
    local failed = aws_ok(sb, { "amplify", "get-job", "--app-id", app.appId, "--branch-name", "main", "--job-id", "2" }).job
    T.eq(failed.summary.status, "FAILED")
    names = {}
    for i, s in ipairs(failed.steps) do names[i] = s.stepName .. "=" .. s.status end
    T.eq(table.concat(names, " "), "BUILD=SUCCEED DEPLOY=FAILED", "nothing runs after the failing step")
    T.has(failed.steps[2].statusReason, "DEPLOY")

    -- the failing step's log, fetched from its logUrl as a client would (unsigned)
    local log = http.request{ url = failed.steps[2].logUrl }
    T.eq(log.status, 200)
    T.has(log.body, failed.steps[2].statusReason)
    T.has(log.body, "STAGEHOST_FAIL_STEP", "variable names are listed")
    -- timestamps go over the wire as epoch seconds, which is what awscli expects of REST-JSON
    local raw = signed(sb, { url = ("%s/apps/%s/branches/main/jobs/2"):format(sb.url, app.appId) }, "amplify")
    T.eq(type(json.decode(raw.body).job.summary.startTime), "number")
  end)
end, { timeout = 180 })

T.test("raw requests: missing or malformed signatures, unknown actions, broken bodies, template errors", function()
  with_sandbox(function(sb)
    local unsigned = http.request{ method = "POST", url = sb.url .. "/", body = "Action=DescribeStacks&Version=2010-05-15",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }
    T.eq(unsigned.status, 403)
    T.has(unsigned.body, "<Code>MissingAuthenticationToken</Code>")
    T.match(unsigned.headers["x-amzn-requestid"], "^%x+%-")

    local unsigned_rest = http.request{ url = sb.url .. "/apps" }
    T.eq(unsigned_rest.status, 403)
    T.eq(unsigned_rest.headers["x-amzn-errortype"], "MissingAuthenticationTokenException")
    T.ok(json.decode(unsigned_rest.body).message, "a message")

    local malformed = http.request{ method = "POST", url = sb.url .. "/", body = "Action=GetCallerIdentity&Version=2011-06-15",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded",
        Authorization = "AWS4-HMAC-SHA256 Credential=AKIDSANDBOX/20260101/us-east-1/sts/aws4_request" } }
    T.eq(malformed.status, 403)
    T.has(malformed.body, "<Code>IncompleteSignature</Code>")
    T.has(malformed.body, "Signature")

    local unknown = query(sb, "cloudformation", { "Action=DescribeEverything", "Version=2010-05-15" })
    T.eq(unknown.status, 400)
    T.has(unknown.body, "<Code>InvalidAction</Code>")
    T.has(unknown.body, "DescribeEverything")

    local broken = query(sb, "cloudformation", { "%zz=%", "&&=", "Action%", "==x" })
    T.eq(broken.status, 400)
    T.has(broken.body, "<Code>MissingAction</Code>")
    local still = query(sb, "cloudformation", { "Action=DescribeStacks", "Version=2010-05-15" })
    T.eq(still.status, 200, "the server still answers")
    T.has(still.body, "<DescribeStacksResponse")

    local bad_template = query(sb, "cloudformation", { "Action=ValidateTemplate", "Version=2010-05-15",
      "TemplateBody=" .. form_escape('{"Resources": {') })
    T.eq(bad_template.status, 400)
    T.has(bad_template.body, "<Code>ValidationError</Code>")
    T.has(bad_template.body, "Template format error: JSON not well-formed.")
    local dangling = query(sb, "cloudformation", { "Action=ValidateTemplate", "Version=2010-05-15",
      "TemplateBody=" .. form_escape(json.encode{ Resources = { A = { Type = "AWS::S3::Bucket",
        Properties = { Tag = { Ref = "Nowhere" } } } } }) })
    T.has(dangling.body, "Template format error: Unresolved resource dependencies [Nowhere] in the Resources block of the template")

    local sam = json.encode{ Transform = "AWS::Serverless-2016-10-31", Resources = {
      Fn = { Type = "AWS::Serverless::Function", Properties = { Handler = "x", Runtime = "nodejs24.x",
        InlineCode = "exports.handler = async () => 1" } } } }
    local needs = query(sb, "cloudformation", { "Action=CreateChangeSet", "Version=2010-05-15", "StackName=sam",
      "ChangeSetName=c1", "ChangeSetType=CREATE", "TemplateBody=" .. form_escape(sam), "Capabilities.member.1=CAPABILITY_IAM" })
    T.eq(needs.status, 400)
    T.has(needs.body, "<Code>InsufficientCapabilitiesException</Code>")
    T.has(needs.body, "Requires capabilities : [CAPABILITY_AUTO_EXPAND]")
    local update_missing = query(sb, "cloudformation", { "Action=CreateChangeSet", "Version=2010-05-15",
      "StackName=ghost", "ChangeSetName=c1", "TemplateBody=" .. form_escape(TEMPLATE) })
    T.has(update_missing.body, "<Message>Stack [ghost] does not exist</Message>")

    local bad_arn = query(sb, "sts", { "Action=AssumeRole", "Version=2011-06-15", "RoleArn=" .. form_escape("role/deployer-not-an-arn"),
      "RoleSessionName=x1" })
    T.eq(bad_arn.status, 400)
    T.has(bad_arn.body, "<Code>ValidationError</Code>")
    T.has(bad_arn.body, "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"")
    local no_token = http.request{ method = "POST", url = sb.url .. "/", headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
      body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" .. form_escape("arn:aws:iam::123456789012:role/x")
        .. "&RoleSessionName=s1&WebIdentityToken=" }
    T.eq(no_token.status, 400)
    T.has(no_token.body, "<Code>ValidationError</Code>", "the API's length rule (at least 4) comes first")
    T.has(no_token.body, "at 'webIdentityToken' failed to satisfy constraint: Member must have length greater than or equal to 4")

    -- the Query protocol's Version: an action exists only in its API's version
    local wrong_version = query(sb, "cloudformation", { "Action=ListStacks", "Version=2011-06-15" })
    T.eq(wrong_version.status, 400)
    T.has(wrong_version.body, "<Code>InvalidAction</Code><Message>Could not find operation ListStacks for version 2011-06-15</Message>")
    local no_version = query(sb, "sts", { "Action=GetCallerIdentity" })
    T.eq(no_version.status, 400)
    T.has(no_version.body, "Could not find operation GetCallerIdentity for version NO_VERSION_SPECIFIED")
    -- parameters the API requires, refused before anything is looked up
    local no_name = query(sb, "cloudformation", { "Action=DescribeChangeSet", "Version=2010-05-15" })
    T.has(no_name.body, "<Code>ValidationError</Code><Message>1 validation error detected: Value null at 'changeSetName' failed to satisfy constraint: Member must not be null</Message>")
    local no_role = query(sb, "sts", { "Action=AssumeRole", "Version=2011-06-15" })
    T.has(no_role.body, "2 validation errors detected: Value null at 'roleArn'")
    local no_template = query(sb, "cloudformation", { "Action=ValidateTemplate", "Version=2010-05-15" })
    T.has(no_template.body, "<Message>Either Template URL or Template Body must be specified.</Message>")

    local cfn_requests = count_requests(sb, "cloudformation", "DescribeStacks")
    T.eq(cfn_requests, 2, "every request recorded, refused ones too")
  end)
end)

T.test("raw requests: issued credentials expire; faults with raw bodies and REST-JSON throttling", function()
  with_sandbox(function(sb)
    sb.state.aws.credential_seconds = 1
    local assumed = query(sb, "sts", { "Action=AssumeRole", "Version=2011-06-15",
      "RoleArn=" .. form_escape("arn:aws:iam::123456789012:role/short"), "RoleSessionName=brief" })
    T.eq(assumed.status, 200, assumed.body)
    local key = assumed.body:match("<AccessKeyId>(.-)</AccessKeyId>")
    T.ok(sb.state.aws.keys[key].expires <= os.time() + 1, "credential_seconds caps the life")
    T.eq(query(sb, "sts", { "Action=GetCallerIdentity", "Version=2011-06-15" }, key).status, 200, "fresh: accepted")
    task.sleep(1.2)
    local expired = query(sb, "sts", { "Action=GetCallerIdentity", "Version=2011-06-15" }, key)
    T.eq(expired.status, 403)
    T.has(expired.body, "<Code>ExpiredToken</Code>")

    sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 200, body = "<DescribeStacksResponse><oops" }
    local raw = query(sb, "cloudformation", { "Action=DescribeStacks", "Version=2010-05-15" })
    T.eq(raw.status, 200); T.eq(raw.body, "<DescribeStacksResponse><oops")
    sb:fail_next{ service = "cloudformation", code = "ServiceUnavailable", message = "try later", status = 503, times = 2 }
    for _ = 1, 2 do
      local unavailable = query(sb, "cloudformation", { "Action=ListStacks", "Version=2010-05-15" })
      T.eq(unavailable.status, 503)
      T.has(unavailable.body, "<Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>try later</Message>")
    end
    T.eq(query(sb, "cloudformation", { "Action=ListStacks", "Version=2010-05-15" }).status, 200, "two times, then served")

    sb:fail_next{ service = "amplify", action = "ListApps", code = "TooManyRequestsException", message = "slow down" }
    local throttled = signed(sb, { url = sb.url .. "/apps" }, "amplify")
    T.eq(throttled.status, 429)
    T.eq(throttled.headers["x-amzn-errortype"], "TooManyRequestsException")
    T.eq(json.decode(throttled.body).message, "slow down")
  end)
end)

-- The template evaluator through stagehost's own client (no awscli: this is about template
-- semantics): conditions, mappings, list parameters, every intrinsic function, an export
-- imported by another stack, SAM's implicit HTTP API and role, then updates that flip a
-- condition (a resource added, then removed), replace a named resource, and roll back.
T.test("cloudformation templates: intrinsics, conditions, exports, SAM; updates add, replace, remove, roll back", function()
  local aws = require("stagehost.aws")
  with_sandbox(function(sb)
    local restore = sb:use{ region = "us-east-1" }
    local ok, err = pcall(function()
      local cfn = aws.cloudformation{ region = "us-east-1", poll = { min = 0.02, max = 0.1 } }
      local account = sb.state.aws.account_id
      cfn:deploy{ stack_name = "base", template = { Resources = { Topic = { Type = "AWS::SNS::Topic" } },
        Outputs = { Vpc = { Value = "vpc-0123", Export = { Name = "base-vpc" } } } } }
      local template = {
        Transform = "AWS::Serverless-2016-10-31",
        Parameters = {
          Env = { Type = "String", Default = "staging", AllowedValues = { "staging", "production" } },
          Zones = { Type = "CommaDelimitedList", Default = "za, zb ,zc" },
        },
        Mappings = { Sizes = { staging = { Memory = "128" }, production = { Memory = "1024" } } },
        Conditions = {
          IsProd = { ["Fn::Equals"] = { { Ref = "Env" }, "production" } },
          NotProd = { ["Fn::Not"] = { { Condition = "IsProd" } } },
          Small = { ["Fn::And"] = { { Condition = "NotProd" }, { ["Fn::Equals"] = { "x", "x" } } } },
          Any = { ["Fn::Or"] = { { Condition = "IsProd" }, { Condition = "Small" } } },
        },
        Globals = { Function = { Runtime = "nodejs24.x" } },
        Resources = {
          Assets = { Type = "AWS::S3::Bucket", Properties = {
            BucketName = { ["Fn::Join"] = { "-", { { Ref = "AWS::StackName" }, { Ref = "Env" }, "assets" } } },
            Tags = { ["Fn::If"] = { "IsProd", { { Key = "tier", Value = "prod" } }, { Ref = "AWS::NoValue" } } } } },
          ProdOnly = { Type = "AWS::SQS::Queue", Condition = "IsProd" },
          Fn = { Type = "AWS::Serverless::Function", Properties = { Handler = "app.handler",
            InlineCode = "exports.handler = async () => 1",
            MemorySize = { ["Fn::FindInMap"] = { "Sizes", { Ref = "Env" }, "Memory" } },
            Events = { Http = { Type = "HttpApi" } } } },
        },
        Outputs = {
          Bucket = { Value = { Ref = "Assets" } },
          BucketArn = { Value = { ["Fn::GetAtt"] = { "Assets", "Arn" } } },
          Domain = { Value = { ["Fn::GetAtt"] = "Assets.RegionalDomainName" } },
          SecondZone = { Value = { ["Fn::Select"] = { 1, { Ref = "Zones" } } } },
          Parts = { Value = { ["Fn::Join"] = { "+", { ["Fn::Split"] = { "/", "a/b//c" } } } } },
          Vpc = { Value = { ["Fn::ImportValue"] = "base-vpc" } },
          Encoded = { Value = { ["Fn::Base64"] = "hi" } },
          FirstAz = { Value = { ["Fn::Select"] = { 0, { ["Fn::GetAZs"] = "" } } } },
          Size = { Value = { ["Fn::If"] = { "Small", "small", "large" } } },
          Any = { Value = { ["Fn::If"] = { "Any", "yes", "no" } } },
          Memory = { Value = { ["Fn::FindInMap"] = { "Sizes", { Ref = "Env" }, "Memory" } } },
          Sub = { Value = { ["Fn::Sub"] = { "${Name}:${AWS::Region}:${!Literal}:${Assets.Arn}", { Name = { Ref = "Env" } } } } },
          Role = { Value = { ["Fn::GetAtt"] = { "FnRole", "Arn" } } },
          Api = { Value = { ["Fn::GetAtt"] = { "ServerlessHttpApi", "ApiEndpoint" } } },
          Queue = { Value = { Ref = "ProdOnly" }, Condition = "IsProd" },
        },
      }
      local r = cfn:deploy{ stack_name = "eval", template = template }
      local o = r.outputs
      T.eq(r.status, "CREATE_COMPLETE")
      T.eq(o.Bucket, "eval-staging-assets", "a named bucket's Ref is its name")
      T.eq(o.BucketArn, "arn:aws:s3:::eval-staging-assets")
      T.eq(o.Domain, "eval-staging-assets.s3.us-east-1.amazonaws.com")
      T.eq(o.SecondZone, "zb", "a list parameter's items, trimmed")
      T.eq(o.Parts, "a+b++c")
      T.eq(o.Vpc, "vpc-0123", "the other stack's export")
      T.eq(o.Encoded, "aGk=")
      T.eq(o.FirstAz, "us-east-1a")
      T.eq(o.Size, "small"); T.eq(o.Any, "yes"); T.eq(o.Memory, "128")
      T.eq(o.Sub, "staging:us-east-1:${Literal}:arn:aws:s3:::eval-staging-assets")
      T.match(o.Role, "^arn:aws:iam::" .. account .. ":role/eval%-FnRole%-[%u%d]+$")
      T.match(o.Api, "^https://%w+%.execute%-api%.us%-east%-1%.amazonaws%.com$")
      T.eq(o.Queue, nil, "an output whose condition is false is not there")
      local types = {}
      for _, e in ipairs(cfn:events("eval")) do types[e.logical_id] = e.type end
      T.eq(types.ServerlessHttpApi, "AWS::ApiGatewayV2::Api"); T.eq(types.Fn, "AWS::Lambda::Function")
      T.eq(types.ProdOnly, nil, "a resource whose condition is false is not created")

      -- production: the condition brings a queue; a new bucket name replaces the bucket
      template.Resources.Assets.Properties.BucketName = "eval-prod-assets"
      r = cfn:deploy{ stack_name = "eval", template = template, parameters = { Env = "production" } }
      T.eq(r.status, "UPDATE_COMPLETE")
      local changes = {}
      for _, c in ipairs(r.changes) do changes[c.logical_id] = c.action .. " " .. tostring(c.replacement) end
      T.eq(changes.ProdOnly, "Add nil"); T.eq(changes.Assets, "Modify True"); T.eq(changes.Fn, "Modify False")
      T.eq(r.outputs.Bucket, "eval-prod-assets"); T.eq(r.outputs.Size, "large"); T.eq(r.outputs.Any, "yes")
      T.eq(r.outputs.Memory, "1024")
      T.match(r.outputs.Queue, "^https://sqs%.us%-east%-1%.amazonaws%.com/" .. account .. "/eval%-ProdOnly%-[%u%d]+$")
      local deleted = {}
      for _, e in ipairs(cfn:events("eval")) do
        if e.status == "DELETE_COMPLETE" then deleted[#deleted + 1] = e.logical_id .. " " .. e.physical_id end
      end
      T.eq(table.concat(deleted, ","), "Assets eval-staging-assets", "the old bucket goes after the update")

      -- back to staging: the queue is removed
      r = cfn:deploy{ stack_name = "eval", template = template, parameters = { Env = "staging" } }
      changes = {}
      for _, c in ipairs(r.changes) do changes[c.logical_id] = c.action end
      T.eq(changes.ProdOnly, "Remove"); T.eq(r.outputs.Queue, nil); T.eq(r.outputs.Bucket, "eval-prod-assets")

      -- an update that fails rolls back; the outputs stay what they were
      template.Resources.Assets.Metadata = { ["stagehost:fail"] = "Bucket policy refused" }
      local failed, e = pcall(cfn.deploy, cfn, { stack_name = "eval", template = template })
      T.ok(not failed, "the deploy fails")
      T.has(tostring(e), "UPDATE_ROLLBACK_COMPLETE"); T.has(tostring(e), "Bucket policy refused")
      local stack = cfn:describe_stack("eval")
      T.eq(stack.status, "UPDATE_ROLLBACK_COMPLETE"); T.eq(stack.outputs.Bucket, "eval-prod-assets")

      -- what ValidateTemplate refuses, and what only a change set finds (cycles, DependsOn on nothing)
      local function refused(t)
        local fine, why = pcall(cfn.validate_template, cfn, { template = t })
        T.ok(not fine, "refused")
        return tostring(why)
      end
      local cyclic, why = pcall(cfn.create_change_set, cfn, { stack_name = "cycle", template = { Resources = {
        A = { Type = "AWS::S3::Bucket", DependsOn = "B" }, B = { Type = "AWS::S3::Bucket", DependsOn = "A" } } } })
      T.ok(not cyclic, "a cycle is refused")
      T.has(tostring(why), "Circular dependency between resources: [A, B]")
      T.has(refused{ Resources = { A = { Type = "AWS::S3::Bucket" } }, Extra = 1, Other = 2 },
        "Invalid template property or properties [Extra, Other]")
      T.has(refused{ Resources = { A = { Type = "AWS::Serverless::Function" }, B = { Type = "Nope" } } },
        "Unrecognized resource types: [AWS::Serverless::Function, Nope]")
      local dangling, missing = pcall(cfn.create_change_set, cfn, { stack_name = "dangling", template = { Resources = {
        A = { Type = "AWS::S3::Bucket", DependsOn = { "Z", "Y" } } } } })
      T.ok(not dangling, "DependsOn on nothing is refused")
      T.has(tostring(missing), "Unresolved resource dependencies [Y, Z] in the Resources block of the template")
      T.has(refused{ AWSTemplateFormatVersion = "2011-01-01", Resources = { A = { Type = "AWS::S3::Bucket" } } },
        "Unsupported template format version: 2011-01-01")
      local bad_param = pcall(cfn.deploy, cfn, { stack_name = "params", template = template, parameters = { Env = "dev" } })
      T.ok(not bad_param, "a value outside AllowedValues is refused")
    end)
    restore()
    if not ok then error(err, 0) end
  end)
end, { timeout = 120 })

T.run()
