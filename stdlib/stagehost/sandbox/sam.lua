-- The AWS::Serverless-2016-10-31 transform, as far as the sandbox needs it: each SAM resource
-- type becomes the CloudFormation types SAM deploys, under the logical ids SAM gives them, so
-- templates that refer to them (${ServerlessRestApi}, !GetAtt HelloFunctionRole.Arn) resolve
-- and a change set lists what CloudFormation would list. tests/lua/test_sandbox_oracles.lua
-- checks the ids and types against AWS's own samtranslator for every SAM template in the tests.
--
-- What is made (X a function, E one of its events):
--   Function      X (Lambda::Function); XRole (IAM::Role) unless it names a Role; with
--                 AutoPublishAlias A: XVersion<hash> (Lambda::Version) and XAliasA (Lambda::Alias)
--   Api event     the implicit ServerlessRestApi (RestApi) with ServerlessRestApiDeployment<hash>
--                 and ServerlessRestApiProdStage, or the AWS::Serverless::Api its RestApiId
--                 names; XEPermission<stage> (Lambda::Permission)
--   HttpApi event the implicit ServerlessHttpApi (ApiGatewayV2::Api) and its
--                 ServerlessHttpApiApiGatewayDefaultStage, or the AWS::Serverless::HttpApi its
--                 ApiId names; XEPermission
--   Schedule, CloudWatchEvent, EventBridgeRule: XE (Events::Rule), XEPermission; SNS: XE
--                 (SNS::Subscription), XEPermission; S3, AlexaSkill: XEPermission; Cognito:
--                 XCognitoPermission; CloudWatchLogs: XE (Logs::SubscriptionFilter),
--                 XEPermission; IoTRule: XE (IoT::TopicRule), XEPermission; ScheduleV2: XE
--                 (Scheduler::Schedule), XERole; SQS, Kinesis, DynamoDB, MSK, MQ,
--                 SelfManagedKafka, DocumentDB: XE (Lambda::EventSourceMapping)
--   Api           RestApi, <Api>Deployment<hash>, <Api><StageName>Stage (StageName required)
--   HttpApi       ApiGatewayV2::Api, <Api>ApiGatewayDefaultStage (or <Api><StageName>Stage)
--   StateMachine  StepFunctions::StateMachine, <SM>Role unless it names a Role
--   LayerVersion  Lambda::LayerVersion renamed <Layer><hash>, every Ref to it following
--   SimpleTable   DynamoDB::Table; Application: CloudFormation::Stack
-- Generated resources carry their function's Condition. A Deployment's hash covers its routes,
-- so a changed route replaces the deployment, as SAM's does.
--
-- What SAM refuses is refused here with its words: a function without code ('CodeUri' must be
-- an s3:// URI or {Bucket, Key}: a template is packaged before it is deployed), an Api without
-- StageName, an Api event without Path or Method, an event missing a required property, an
-- unknown event type. sam.expand returns nil and the message CloudFormation puts on the change
-- set ("Transform AWS::Serverless-2016-10-31 failed with: ...").
-- Not SAM's whole surface: no policy templates, no OpenAPI bodies, no nested applications'
-- templates, no Connectors.
local crypto = require("stagehost.crypto")
local json = require("stagehost.json")

local sam = {}

sam.TRANSFORM = "AWS::Serverless-2016-10-31"
sam.STACK_TYPE = "AWS::CloudFormation::Stack"

-- SAM types that only change their name.
local RENAMED = {
  ["AWS::Serverless::SimpleTable"] = "AWS::DynamoDB::Table",
  ["AWS::Serverless::Application"] = sam.STACK_TYPE,
}

-- Event types: what each makes besides its permission, and the properties SAM requires.
-- kind "rule" is XE of that type plus XEPermission; "pull" is XE, an event source mapping;
-- "permission" is XEPermission alone.
local EVENTS = {
  Api = { kind = "api" }, HttpApi = { kind = "httpapi" },
  Schedule = { kind = "rule", type = "AWS::Events::Rule", required = { "Schedule" } },
  CloudWatchEvent = { kind = "rule", type = "AWS::Events::Rule" },
  EventBridgeRule = { kind = "rule", type = "AWS::Events::Rule" },
  SNS = { kind = "rule", type = "AWS::SNS::Subscription", required = { "Topic" } },
  CloudWatchLogs = { kind = "rule", type = "AWS::Logs::SubscriptionFilter", required = { "LogGroupName", "FilterPattern" } },
  IoTRule = { kind = "rule", type = "AWS::IoT::TopicRule", required = { "Sql" } },
  S3 = { kind = "permission", required = { "Bucket", "Events" } },
  AlexaSkill = { kind = "permission" },
  Cognito = { kind = "cognito", required = { "UserPool", "Trigger" } },
  ScheduleV2 = { kind = "schedulev2", required = { "ScheduleExpression" } },
  SQS = { kind = "pull", required = { "Queue" } },
  Kinesis = { kind = "pull", required = { "Stream", "StartingPosition" } },
  DynamoDB = { kind = "pull", required = { "Stream", "StartingPosition" } },
  MSK = { kind = "pull", required = { "Stream", "StartingPosition", "Topics" } },
  MQ = { kind = "pull", required = { "Broker", "Queues", "SourceAccessConfigurations" } },
  SelfManagedKafka = { kind = "pull", required = { "KafkaBootstrapServers", "Topics", "SourceAccessConfigurations" } },
  DocumentDB = { kind = "pull", required = { "Cluster", "DatabaseName", "SourceAccessConfigurations" } },
}

local function is_table(v) return type(v) == "table" end

-- The first ten hex digits of a value's sha256: SAM's suffix for Deployments, Versions and
-- layers, stable for one definition.
local function hash10(value)
  local ok, text = pcall(json.encode, value)
  return crypto.sha256(ok and text or tostring(value)):sub(1, 10)
end

-- Globals under a resource's own properties: maps merge (the resource's keys win), anything
-- else the resource gives replaces the global.
local function merge_globals(props, globals)
  for k, v in pairs(is_table(globals) and globals or {}) do
    if props[k] == nil then
      props[k] = v
    elseif is_table(props[k]) and is_table(v) and not json.is_array(v) and not json.is_array(props[k])
        and props[k].Ref == nil and next(props[k]) and not tostring(next(props[k])):match("^Fn::") then
      merge_globals(props[k], v)
    end
  end
end

-- A Ref to a resource of the template: its logical id, else nil.
local function ref_of(v)
  if is_table(v) and type(v.Ref) == "string" then return v.Ref end
  return nil
end

-- Rewrite every Ref, GetAtt and ${name} of `old` in v to `new` (a renamed layer).
local function rename_refs(v, old, new)
  if not is_table(v) then return v end
  if v.Ref == old then v.Ref = new end
  local getatt = v["Fn::GetAtt"]
  if is_table(getatt) and getatt[1] == old then getatt[1] = new end
  if type(getatt) == "string" and getatt:sub(1, #old + 1) == old .. "." then v["Fn::GetAtt"] = new .. getatt:sub(#old + 1) end
  local sub = v["Fn::Sub"]
  local function sub_text(s)
    return (s:gsub("%${" .. old:gsub("%p", "%%%0") .. "([%.}])", "${" .. new .. "%1"))
  end
  if type(sub) == "string" then v["Fn::Sub"] = sub_text(sub) end
  if is_table(sub) and type(sub[1]) == "string" then sub[1] = sub_text(sub[1]) end
  for _, x in pairs(v) do rename_refs(x, old, new) end
  return v
end

---------------------------------------------------------------------------------------------------

-- One expansion: the template's resources, what is added, the problems found.
local Expansion = {}
Expansion.__index = Expansion

function Expansion:add(logical, def, condition)
  if self.resources[logical] == nil and self.extra[logical] == nil then
    def.Condition = condition
    self.extra[logical] = def
  end
end

function Expansion:invalid(logical, message)
  self.errors[#self.errors + 1] = ("Resource with id [%s] is invalid. %s"):format(logical, message)
end

local function lambda_permission(fn, principal, source_arn)
  return { Type = "AWS::Lambda::Permission", Properties = { Action = "lambda:InvokeFunction",
    FunctionName = { Ref = fn }, Principal = principal, SourceArn = source_arn } }
end

-- The code a function runs must be deployable as it stands: an S3 object (CodeUri s3://bucket/key
-- or {Bucket, Key}), inline code, or an image. A local path means the template was not packaged.
local function check_code(self, logical, props)
  if props.PackageType == "Image" then
    if props.ImageUri == nil then self:invalid(logical, "'ImageUri' must be set.") end
    return
  end
  local code = props.CodeUri
  if code == nil and props.InlineCode == nil then
    self:invalid(logical, "Only one of 'InlineCode' or 'CodeUri' can be set.")
  elseif type(code) == "string" and not code:match("^s3://[^/]+/.+") then
    self:invalid(logical, "'CodeUri' is not a valid S3 Uri of the form 's3://bucket/key' with optional versionId query parameter.")
  elseif is_table(code) and code.Ref == nil and code["Fn::Sub"] == nil and code["Fn::If"] == nil
      and (code.Bucket == nil or code.Key == nil) then
    self:invalid(logical, "'CodeUri' requires Bucket and Key properties to be specified.")
  end
end

-- The API a route goes to: {logical, stage, routes, explicit}
function Expansion:rest_api(logical)
  local api = self.rest_apis[logical]
  if not api then
    api = { logical = logical, stage = "Prod", routes = {}, explicit = false }
    self.rest_apis[logical] = api
  end
  return api
end

function Expansion:event(fn, event_name, event, condition)
  local id = fn .. event_name
  local kind = is_table(event) and event.Type
  local spec = EVENTS[kind]
  if not spec then
    self:invalid(fn, ("Event with id [%s] is invalid. Resource dict has missing or invalid value for key Type. Event Type is: %s.")
      :format(event_name, tostring(kind)))
    return
  end
  local props = is_table(event.Properties) and event.Properties or {}
  for _, name in ipairs(spec.required or {}) do
    if props[name] == nil then
      self:invalid(id, ("Missing required property '%s'."):format(name))
      return
    end
  end
  local fn_arn = { ["Fn::GetAtt"] = { fn, "Arn" } }
  if spec.kind == "api" then
    for _, name in ipairs{ "Path", "Method" } do
      if props[name] == nil then
        self:invalid(fn, ("Event with id [%s] is invalid. Property '%s' is required."):format(event_name, name))
        return
      end
    end
    local api_logical = "ServerlessRestApi"
    if props.RestApiId ~= nil then
      api_logical = ref_of(props.RestApiId)
      if self.sam_types[api_logical or ""] ~= "AWS::Serverless::Api" then
        self:invalid(fn, ("Event with id [%s] is invalid. RestApiId must be a valid reference to an 'AWS::Serverless::Api' resource in same template."):format(event_name))
        return
      end
    end
    local api = self:rest_api(api_logical)
    api.routes[#api.routes + 1] = { path = props.Path, method = props.Method, fn = fn }
    local stage = api.stage
    self:add(id .. "Permission" .. (type(stage) == "string" and stage or "Prod"), lambda_permission(fn,
      "apigateway.amazonaws.com", { ["Fn::Sub"] = { "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/*/*",
        { Api = { Ref = api_logical } } } }), condition)
  elseif spec.kind == "httpapi" then
    if (props.Path == nil) ~= (props.Method == nil) then
      self:invalid(fn, ("Event with id [%s] is invalid. Property '%s' is required."):format(event_name,
        props.Path == nil and "Path" or "Method"))
      return
    end
    local api_logical = "ServerlessHttpApi"
    if props.ApiId ~= nil then
      api_logical = ref_of(props.ApiId)
      if self.sam_types[api_logical or ""] ~= "AWS::Serverless::HttpApi" and api_logical ~= "ServerlessHttpApi" then
        self:invalid(fn, ("Event with id [%s] is invalid. ApiId must be a valid reference to an 'AWS::Serverless::HttpApi' resource in same template."):format(event_name))
        return
      end
    end
    if api_logical == "ServerlessHttpApi" then self.implicit_http = true end
    self:add(id .. "Permission", lambda_permission(fn, "apigateway.amazonaws.com",
      { ["Fn::Sub"] = { "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/*", { Api = { Ref = api_logical } } } }),
      condition)
  elseif spec.kind == "rule" then
    local def
    if spec.type == "AWS::Events::Rule" then
      def = { ScheduleExpression = props.Schedule, EventPattern = props.Pattern, State = props.State,
        Targets = { { Arn = fn_arn, Id = id .. "LambdaTarget" } } }
    elseif spec.type == "AWS::SNS::Subscription" then
      def = { Endpoint = fn_arn, Protocol = "lambda", TopicArn = props.Topic }
    elseif spec.type == "AWS::Logs::SubscriptionFilter" then
      def = { DestinationArn = fn_arn, FilterPattern = props.FilterPattern, LogGroupName = props.LogGroupName }
    else
      def = { TopicRulePayload = { Sql = props.Sql, Actions = { { Lambda = { FunctionArn = fn_arn } } } } }
    end
    self:add(id, { Type = spec.type, Properties = def }, condition)
    self:add(id .. "Permission", lambda_permission(fn, kind == "SNS" and "sns.amazonaws.com" or "events.amazonaws.com"), condition)
  elseif spec.kind == "permission" then
    self:add(id .. "Permission", lambda_permission(fn, kind == "S3" and "s3.amazonaws.com" or "alexa-appkit.amazon.com"), condition)
  elseif spec.kind == "cognito" then
    self:add(fn .. "CognitoPermission", lambda_permission(fn, "cognito-idp.amazonaws.com"), condition)
  elseif spec.kind == "schedulev2" then
    self:add(id .. "Role", { Type = "AWS::IAM::Role", Properties = { AssumeRolePolicyDocument = {} } }, condition)
    self:add(id, { Type = "AWS::Scheduler::Schedule", Properties = { ScheduleExpression = props.ScheduleExpression,
      FlexibleTimeWindow = { Mode = "OFF" }, Target = { Arn = fn_arn, RoleArn = { ["Fn::GetAtt"] = { id .. "Role", "Arn" } } } } },
      condition)
  elseif spec.kind == "pull" then
    self:add(id, { Type = "AWS::Lambda::EventSourceMapping", Properties = { FunctionName = { Ref = fn },
      EventSourceArn = props.Queue or props.Stream or props.Broker or props.Cluster,
      StartingPosition = props.StartingPosition, BatchSize = props.BatchSize } }, condition)
  end
end

-- The Lambda Code property of a SAM function's code: a changed object or inline code is a
-- changed property of the function, as after SAM's transform.
local function lambda_code(props)
  local uri = props.CodeUri
  if type(uri) == "string" then
    local bucket, key, version = uri:match("^s3://([^/]+)/([^?]+)%??(.*)$")
    return { S3Bucket = bucket, S3Key = key, S3ObjectVersion = version and version:match("versionId=([^&]+)") }
  elseif is_table(uri) and uri.Bucket ~= nil then
    return { S3Bucket = uri.Bucket, S3Key = uri.Key, S3ObjectVersion = uri.Version }
  elseif uri ~= nil then
    return uri
  elseif props.InlineCode ~= nil then
    return { ZipFile = props.InlineCode }
  elseif props.ImageUri ~= nil then
    return { ImageUri = props.ImageUri }
  end
  return nil
end

function Expansion:function_(logical, def, props)
  merge_globals(props, self.globals.Function)
  check_code(self, logical, props)
  local condition = def.Condition
  def.Type = "AWS::Lambda::Function"
  props.Code = lambda_code(props)
  if props.Role == nil then
    -- the policies SAM attaches are the role's: a changed policy modifies the role
    self:add(logical .. "Role", { Type = "AWS::IAM::Role", Properties = { AssumeRolePolicyDocument = {},
      Policies = props.Policies } }, condition)
    props.Role = { ["Fn::GetAtt"] = { logical .. "Role", "Arn" } }
  end
  if props.AutoPublishAlias ~= nil then
    local version = logical .. "Version" .. hash10{ props.CodeUri, props.InlineCode, props.ImageUri }
    self:add(version, { Type = "AWS::Lambda::Version", DeletionPolicy = "Retain",
      Properties = { FunctionName = { Ref = logical } } }, condition)
    self:add(logical .. "Alias" .. tostring(props.AutoPublishAlias), { Type = "AWS::Lambda::Alias", Properties = {
      Name = props.AutoPublishAlias, FunctionName = { Ref = logical },
      FunctionVersion = { ["Fn::GetAtt"] = { version, "Version" } } } }, condition)
  end
  local events = is_table(props.Events) and props.Events or {}
  local names = {}
  for name in pairs(events) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do self:event(logical, name, events[name], condition) end
  -- what SAM consumes is not a property of the Lambda function
  for _, key in ipairs{ "Events", "AutoPublishAlias", "DeploymentPreference", "Policies", "CodeUri", "InlineCode",
    "ImageUri", "VersionDescription", "ProvisionedConcurrencyConfig", "AutoPublishCodeSha256", "FunctionUrlConfig" } do
    props[key] = nil
  end
end

function Expansion:api(logical, def, props)
  merge_globals(props, self.globals.Api)
  def.Type = "AWS::ApiGateway::RestApi"
  if props.StageName == nil then
    self:invalid(logical, "Missing required property 'StageName'.")
    return
  end
  local api = self:rest_api(logical)
  api.explicit, api.stage, api.condition = true, props.StageName, def.Condition
end

function Expansion:http_api(logical, def, props)
  merge_globals(props, self.globals.HttpApi)
  def.Type = "AWS::ApiGatewayV2::Api"
  local stage = props.StageName
  local stage_logical = logical .. (type(stage) == "string" and stage ~= "$default" and (stage .. "Stage") or "ApiGatewayDefaultStage")
  self:add(stage_logical, { Type = "AWS::ApiGatewayV2::Stage", Properties = { ApiId = { Ref = logical },
    StageName = stage or "$default", AutoDeploy = true } }, def.Condition)
end

-- The deployment and stage of each REST API, once every route is known.
function Expansion:finish_apis()
  for logical, api in pairs(self.rest_apis) do
    if not api.explicit then
      self:add(logical, { Type = "AWS::ApiGateway::RestApi", Properties = { Name = { Ref = "AWS::StackName" } } })
    end
    table.sort(api.routes, function(a, b)
      return tostring(a.path) .. tostring(a.method) < tostring(b.path) .. tostring(b.method)
    end)
    local deployment = logical .. "Deployment" .. hash10{ logical, api.routes }
    self:add(deployment, { Type = "AWS::ApiGateway::Deployment", Properties = { RestApiId = { Ref = logical },
      Description = "RestApi deployment id: " .. deployment:sub(-10) } }, api.condition)
    local stage = type(api.stage) == "string" and api.stage or "Prod"
    self:add(logical .. stage .. "Stage", { Type = "AWS::ApiGateway::Stage", Properties = { StageName = api.stage,
      RestApiId = { Ref = logical }, DeploymentId = { Ref = deployment } } }, api.condition)
  end
  if self.implicit_http then
    self:add("ServerlessHttpApi", { Type = "AWS::ApiGatewayV2::Api", Properties = {
      Name = { Ref = "AWS::StackName" }, ProtocolType = "HTTP" } })
    self:add("ServerlessHttpApiApiGatewayDefaultStage", { Type = "AWS::ApiGatewayV2::Stage", Properties = {
      ApiId = { Ref = "ServerlessHttpApi" }, StageName = "$default", AutoDeploy = true } })
  end
end

-- sam.expand(template) -> true, or nil and the transform's failure as CloudFormation reports
-- it. Rewrites template.Resources in place (also when it fails: the caller discards it then).
-- A resource the template declares itself wins over an implicit one of the same name.
function sam.expand(template)
  local self = setmetatable({ resources = template.Resources, extra = {}, errors = {}, rest_apis = {},
    globals = is_table(template.Globals) and template.Globals or {} }, Expansion)
  local logicals = {}
  self.sam_types = {} -- the types as declared, before any is rewritten
  for logical, def in pairs(self.resources) do
    logicals[#logicals + 1] = logical
    self.sam_types[logical] = is_table(def) and def.Type or nil
  end
  table.sort(logicals)
  -- APIs first: an event finds the stage of the API it names
  for _, logical in ipairs(logicals) do
    local def = self.resources[logical]
    local props = is_table(def) and is_table(def.Properties) and def.Properties or {}
    if is_table(def) and def.Type == "AWS::Serverless::Api" then
      def.Properties = props
      self:api(logical, def, props)
    elseif is_table(def) and def.Type == "AWS::Serverless::HttpApi" then
      def.Properties = props
      self:http_api(logical, def, props)
    end
  end
  local renames = {}
  for _, logical in ipairs(logicals) do
    local def = self.resources[logical]
    local kind = is_table(def) and def.Type
    local props = is_table(def) and is_table(def.Properties) and def.Properties or {}
    if kind == "AWS::Serverless::Function" then
      def.Properties = props
      self:function_(logical, def, props)
    elseif kind == "AWS::Serverless::StateMachine" then
      def.Type, def.Properties = "AWS::StepFunctions::StateMachine", props
      if props.Role == nil then
        self:add(logical .. "Role", { Type = "AWS::IAM::Role", Properties = { AssumeRolePolicyDocument = {} } }, def.Condition)
        props.RoleArn = { ["Fn::GetAtt"] = { logical .. "Role", "Arn" } }
      else
        props.RoleArn, props.Role = props.Role, nil
      end
      props.Events, props.Policies = nil, nil
    elseif kind == "AWS::Serverless::LayerVersion" then
      def.Type, def.Properties = "AWS::Lambda::LayerVersion", props
      renames[#renames + 1] = { logical, logical .. hash10(props) }
    elseif RENAMED[kind] then
      def.Type = RENAMED[kind]
    end
  end
  self:finish_apis()
  for logical, def in pairs(self.extra) do self.resources[logical] = def end
  for _, r in ipairs(renames) do
    local old, new = r[1], r[2]
    self.resources[new], self.resources[old] = self.resources[old], nil
    rename_refs(self.resources, old, new)
    rename_refs(template.Outputs, old, new)
  end
  if #self.errors > 0 then
    table.sort(self.errors)
    return nil, ("Transform %s failed with: Invalid Serverless Application Specification document. Number of errors found: %d. %s")
      :format(sam.TRANSFORM, #self.errors, table.concat(self.errors, " "))
  end
  return true
end

return sam
