-- The AWS::Serverless-2016-10-31 transform, as far as the sandbox needs it: each SAM resource
-- type becomes the CloudFormation type SAM deploys, and the resources SAM adds implicitly
-- (a function's role, the ServerlessRestApi / ServerlessHttpApi of its events, their stages
-- and permissions) are added under the names SAM gives them, so templates that refer to them
-- (${ServerlessRestApi}, !GetAtt HelloFunctionRole.Arn) resolve. Not all of SAM: no policy
-- templates, no layers' content, no nested applications' templates.
local sam = {}

sam.TRANSFORM = "AWS::Serverless-2016-10-31"
sam.STACK_TYPE = "AWS::CloudFormation::Stack"

-- SAM types that only change their name.
local RENAMED = {
  ["AWS::Serverless::HttpApi"] = "AWS::ApiGatewayV2::Api",
  ["AWS::Serverless::SimpleTable"] = "AWS::DynamoDB::Table",
  ["AWS::Serverless::LayerVersion"] = "AWS::Lambda::LayerVersion",
  ["AWS::Serverless::StateMachine"] = "AWS::StepFunctions::StateMachine",
  ["AWS::Serverless::Application"] = sam.STACK_TYPE,
}

-- A function: Globals.Function's properties where it has none, an implicit role unless it
-- names one, and the implicit APIs its Api and HttpApi events need.
local function expand_function(logical, def, props, globals, add)
  for k, v in pairs(type(globals.Function) == "table" and globals.Function or {}) do
    if props[k] == nil then props[k] = v end
  end
  def.Type, def.Properties = "AWS::Lambda::Function", props
  if props.Role == nil then
    add(logical .. "Role", { Type = "AWS::IAM::Role", Properties = { AssumeRolePolicyDocument = {} } })
    props.Role = { ["Fn::GetAtt"] = { logical .. "Role", "Arn" } }
  end
  for event_name, event in pairs(type(props.Events) == "table" and props.Events or {}) do
    local event_props = type(event) == "table" and event.Properties or {}
    if event.Type == "Api" and event_props.RestApiId == nil then
      add("ServerlessRestApi", { Type = "AWS::ApiGateway::RestApi", Properties = { Name = { Ref = "AWS::StackName" } } })
      add("ServerlessRestApiProdStage", { Type = "AWS::ApiGateway::Stage",
        Properties = { StageName = "Prod", RestApiId = { Ref = "ServerlessRestApi" } } })
      add(logical .. event_name .. "PermissionProd", { Type = "AWS::Lambda::Permission",
        Properties = { FunctionName = { Ref = logical }, SourceArn = { Ref = "ServerlessRestApi" } } })
    elseif event.Type == "HttpApi" and event_props.ApiId == nil then
      add("ServerlessHttpApi", { Type = "AWS::ApiGatewayV2::Api", Properties = {} })
      add("ServerlessHttpApiApiGatewayDefaultStage", { Type = "AWS::ApiGatewayV2::Stage",
        Properties = { StageName = "$default", ApiId = { Ref = "ServerlessHttpApi" } } })
    end
  end
  props.Events = nil
end

-- sam.expand(template): rewrites template.Resources in place. A resource the template declares
-- itself wins over an implicit one of the same name.
function sam.expand(template)
  local resources, extra = template.Resources, {}
  local globals = type(template.Globals) == "table" and template.Globals or {}
  local function add(logical, def) if resources[logical] == nil then extra[logical] = def end end
  for logical, def in pairs(resources) do
    local kind = type(def) == "table" and def.Type
    local props = type(def) == "table" and def.Properties or {}
    if kind == "AWS::Serverless::Function" then
      expand_function(logical, def, props, globals, add)
    elseif kind == "AWS::Serverless::Api" then
      def.Type = "AWS::ApiGateway::RestApi"
      local stage = props.StageName or "Prod"
      add(logical .. (type(stage) == "string" and stage or "Prod") .. "Stage", { Type = "AWS::ApiGateway::Stage",
        Properties = { StageName = stage, RestApiId = { Ref = logical } } })
    elseif RENAMED[kind] then
      def.Type = RENAMED[kind]
    end
  end
  for logical, def in pairs(extra) do resources[logical] = def end
end

return sam
