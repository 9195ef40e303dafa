-- The standard AWS credential chain, in the SDKs' order: environment variables, web identity
-- (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE: the GitHub Actions OIDC route), the shared
-- config and credentials files (AWS_PROFILE, role_arn + source_profile), ECS container
-- credentials, then EC2 instance metadata (IMDSv2). Temporary credentials are cached until five
-- minutes before they expire; tasks asking at the same time share one refresh. Every secret is
-- masked the moment it is read.
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")
local task = require("stagehost.task")
local errors = require("stagehost.errors")

local credentials = {}

local REFRESH_MARGIN = 300 -- seconds before expiry at which cached credentials are renewed

local function env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

local function masked(creds)
  if creds.secret_access_key and #creds.secret_access_key >= 4 then log.mask(creds.secret_access_key) end
  if creds.session_token and #creds.session_token >= 4 then log.mask(creds.session_token) end
  return creds
end

local function home()
  return env("HOME") or "."
end

-- ---- shared files ----

-- The INI dialect of ~/.aws/config and ~/.aws/credentials: [section], key = value, comments
-- with # or ;, and indented sub-keys (s3 = ...) that we do not need and skip.
local function parse_ini(text, path)
  local sections, current = {}, nil
  local lineno = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    line = line:gsub("\r$", "")
    if line:match("^%s*[#;]") or line:match("^%s*$") then -- comment or blank
    elseif line:match("^%s+%S") and current then -- a nested sub-property
    else
      local name = line:match("^%s*%[%s*(.-)%s*%]%s*$")
      if name then
        current = sections[name] or {}
        sections[name] = current
      else
        local k, v = line:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
        if not k or not current then
          error(("aws: %s:%d: cannot read this line (expected [profile] or key = value)"):format(path, lineno), 0)
        end
        current[k:lower()] = v
      end
    end
  end
  return sections
end

local function config_path() return env("AWS_CONFIG_FILE") or (home() .. "/.aws/config") end
local function credentials_path() return env("AWS_SHARED_CREDENTIALS_FILE") or (home() .. "/.aws/credentials") end

-- Both files as one table of profiles: name -> settings (credentials file wins for keys).
local function load_profiles()
  local profiles = {}
  local cpath = config_path()
  local text = fs.read(cpath)
  if text then
    for section, values in pairs(parse_ini(text, cpath)) do
      local name = section == "default" and "default" or section:match("^profile%s+(.+)$")
      if name then
        profiles[name] = profiles[name] or {}
        for k, v in pairs(values) do profiles[name][k] = v end
      end
    end
  end
  local kpath = credentials_path()
  text = fs.read(kpath)
  if text then
    for name, values in pairs(parse_ini(text, kpath)) do
      profiles[name] = profiles[name] or {}
      for k, v in pairs(values) do profiles[name][k] = v end
    end
  end
  return profiles
end

local function profile_name(opts)
  return (opts and opts.profile) or env("AWS_PROFILE") or env("AWS_DEFAULT_PROFILE") or "default"
end

-- The region of the active profile's config, or nil.
function credentials.profile_region(profile)
  local ok, profiles = pcall(load_profiles)
  if not ok then return nil end
  local p = profiles[profile or profile_name()]
  return p and p.region or nil
end

-- ---- sources ----

local function from_environment()
  local id, secret = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")
  if not id and not secret then return nil, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set" end
  if not id or not secret then
    error(("aws: %s is set but %s is not: set both, or neither"):format(
      id and "AWS_ACCESS_KEY_ID" or "AWS_SECRET_ACCESS_KEY", id and "AWS_SECRET_ACCESS_KEY" or "AWS_ACCESS_KEY_ID"), 0)
  end
  return masked{ access_key_id = id, secret_access_key = secret, session_token = env("AWS_SESSION_TOKEN"),
    source = "environment" }
end

local function sts_client(region, creds)
  return require("stagehost.aws.sts").new{ region = region, credentials = creds }
end

local function web_identity(role_arn, token_file, session_name, region)
  local token = fs.read(token_file)
  if not token or token:match("^%s*$") then
    error(("aws: web identity: cannot read a token from %s (AWS_WEB_IDENTITY_TOKEN_FILE)"):format(token_file), 0)
  end
  token = token:gsub("%s+$", "")
  if #token >= 4 then log.mask(token) end
  return sts_client(region):assume_role_with_web_identity{ role_arn = role_arn, token = token,
    session_name = session_name or env("AWS_ROLE_SESSION_NAME") }
end

local function from_web_identity()
  local role, file = env("AWS_ROLE_ARN"), env("AWS_WEB_IDENTITY_TOKEN_FILE")
  if not role and not file then return nil, "AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE are not set" end
  if not role or not file then
    return nil, (role and "AWS_WEB_IDENTITY_TOKEN_FILE" or "AWS_ROLE_ARN") .. " is not set"
  end
  return web_identity(role, file, nil, nil)
end

local resolve_profile

local function credential_source(kind, name)
  if kind == "Environment" then return (from_environment()) end
  if kind == "EcsContainer" then return (credentials.container()) end
  if kind == "Ec2InstanceMetadata" then return (credentials.instance_metadata()) end
  error(("aws: profile '%s': unknown credential_source '%s' (Environment, EcsContainer or Ec2InstanceMetadata)"):format(name, kind), 0)
end

-- A profile's credentials: static keys, a role assumed from a source profile or a credential
-- source, or a web identity token file.
resolve_profile = function(profiles, name, seen)
  local p = profiles[name]
  if not p then return nil end
  if seen[name] then
    error(("aws: profile '%s': source_profile chain loops back to itself"):format(name), 0)
  end
  seen[name] = true
  if p.role_arn then
    if p.web_identity_token_file then
      return web_identity(p.role_arn, p.web_identity_token_file, p.role_session_name, p.region)
    end
    local source
    if p.source_profile then
      local sp = profiles[p.source_profile]
      -- a source profile's own keys are used as they are, unless it assumes a role itself
      -- (a chain of roles); a profile may name itself as its source to use its own keys
      if sp and (p.source_profile == name or (sp.role_arn == nil and sp.aws_access_key_id)) then
        if not (sp.aws_access_key_id and sp.aws_secret_access_key) then
          error(("aws: profile '%s' has no aws_access_key_id and aws_secret_access_key to assume %s with"):format(
            p.source_profile, p.role_arn), 0)
        end
        source = masked{ access_key_id = sp.aws_access_key_id, secret_access_key = sp.aws_secret_access_key,
          session_token = sp.aws_session_token, source = "profile " .. p.source_profile }
      elseif sp then
        source = resolve_profile(profiles, p.source_profile, seen)
      end
      if not source then
        error(("aws: profile '%s': source_profile '%s' is not in %s or %s"):format(name, p.source_profile,
          config_path(), credentials_path()), 0)
      end
    elseif p.credential_source then
      source = credential_source(p.credential_source, name)
      if not source then
        error(("aws: profile '%s': credential_source %s gave no credentials"):format(name, p.credential_source), 0)
      end
    else
      error(("aws: profile '%s' has role_arn but no source_profile or credential_source: add one"):format(name), 0)
    end
    local creds = sts_client(p.region, source):assume_role{ role_arn = p.role_arn,
      session_name = p.role_session_name, external_id = p.external_id,
      duration = tonumber(p.duration_seconds) }
    creds.source = ("profile %s (role %s)"):format(name, p.role_arn)
    return creds
  end
  if p.aws_access_key_id or p.aws_secret_access_key then
    if not (p.aws_access_key_id and p.aws_secret_access_key) then
      error(("aws: profile '%s' has only one of aws_access_key_id and aws_secret_access_key: set both"):format(name), 0)
    end
    return masked{ access_key_id = p.aws_access_key_id, secret_access_key = p.aws_secret_access_key,
      session_token = p.aws_session_token, source = "profile " .. name }
  end
  return nil
end

local function from_profile(opts)
  local name = profile_name(opts)
  local explicit = (opts and opts.profile) or env("AWS_PROFILE") or env("AWS_DEFAULT_PROFILE")
  local profiles = load_profiles()
  if not profiles[name] then
    if explicit then
      error(("aws: profile '%s' (AWS_PROFILE) is not in %s or %s: add it, or unset AWS_PROFILE"):format(name,
        config_path(), credentials_path()), 0)
    end
    return nil, ("no profile '%s' in %s or %s"):format(name, config_path(), credentials_path())
  end
  local creds = resolve_profile(profiles, name, {})
  if not creds then return nil, ("profile '%s' has no credentials"):format(name) end
  return creds
end

-- One request, no retries (the chain moves on to the next source instead): the response, or
-- nil and http.request's transport error; a cancellation raises through.
local function fetch(req)
  local ok, res = pcall(require("stagehost.http").request, req)
  if ok then return res end
  if errors.is(res, "transport") then return nil, res end
  error(res, 0)
end

-- Container credentials answer {AccessKeyId, SecretAccessKey, Token, Expiration}. Temporary
-- credentials without a readable Expiration would be cached forever and fail hours later:
-- refuse them now.
local function from_json_endpoint(url, headers, what)
  local res, why = fetch{ url = url, headers = headers, timeout = 2, connect_timeout = 1 }
  if not res then return nil, ("%s: no answer from %s (%s)"):format(what, url, tostring(why)) end
  if res.status ~= 200 then return nil, ("%s: %s answered HTTP %d"):format(what, url, res.status) end
  local doc = json.decode(res.body)
  if type(doc) ~= "table" or type(doc.AccessKeyId) ~= "string" or type(doc.SecretAccessKey) ~= "string" then
    error(("aws: %s: %s answered something that is not credentials JSON"):format(what, url), 0)
  end
  local expires = require("stagehost.util.time").parse_iso8601(doc.Expiration)
  if not expires then
    error(("aws: %s: %s answered credentials without a valid Expiration"):format(what, url), 0)
  end
  return masked{ access_key_id = doc.AccessKeyId, secret_access_key = doc.SecretAccessKey,
    session_token = doc.Token, expires = expires, source = what }
end

-- The SDKs send the container token over plain HTTP only to loopback and to the ECS and EKS
-- agents' link-local addresses; anywhere else it must be HTTPS.
local CONTAINER_HOSTS = { ["169.254.170.2"] = true, ["169.254.170.23"] = true, ["[fd00:ec2::23]"] = true,
  ["localhost"] = true, ["[::1]"] = true }

local function container_url_allowed(url)
  local scheme, host = url:match("^(%a[%w+.-]*)://(%[[^%]]+%])") -- an IPv6 literal
  if not scheme then scheme, host = url:match("^(%a[%w+.-]*)://([^/:?#]+)") end
  if not scheme or not host then return false end
  scheme, host = scheme:lower(), host:lower()
  if scheme == "https" then return true end
  return scheme == "http" and (CONTAINER_HOSTS[host] or host:match("^127%.%d+%.%d+%.%d+$") ~= nil)
end

function credentials.container()
  local relative, full = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
  if not relative and not full then
    return nil, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set"
  end
  local url = relative and ("http://169.254.170.2" .. relative) or full
  if not relative and not container_url_allowed(full) then
    error(("aws: AWS_CONTAINER_CREDENTIALS_FULL_URI %s is neither https nor a loopback or ECS/EKS agent address: the token would travel in the clear"):format(full), 0)
  end
  local headers = {}
  local token
  local token_file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  if token_file then
    token = fs.read(token_file)
    if not token then
      error(("aws: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s"):format(token_file), 0)
    end
  else
    token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN")
  end
  if token then
    token = token:gsub("%s+$", "")
    if token:find("[\r\n]") then
      error("aws: the container authorization token holds a line break: check AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)", 0)
    end
    if #token >= 4 then log.mask(token) end
    headers.Authorization = token
  end
  return from_json_endpoint(url, headers, "container credentials")
end

-- IMDSv2: a session token first (PUT), then the role name, then its credentials.
function credentials.instance_metadata()
  if (env("AWS_EC2_METADATA_DISABLED") or ""):lower() == "true" then
    return nil, "AWS_EC2_METADATA_DISABLED=true"
  end
  local base = (env("AWS_EC2_METADATA_SERVICE_ENDPOINT") or "http://169.254.169.254"):gsub("/+$", "")
  local res = fetch{ method = "PUT", url = base .. "/latest/api/token",
    headers = { ["X-aws-ec2-metadata-token-ttl-seconds"] = "21600" }, timeout = 1, connect_timeout = 1 }
  if not res or res.status ~= 200 then
    return nil, ("no instance metadata service at %s"):format(base)
  end
  if #res.body >= 4 then log.mask(res.body) end
  local headers = { ["X-aws-ec2-metadata-token"] = res.body }
  local list = base .. "/latest/meta-data/iam/security-credentials/"
  local roles = fetch{ url = list, headers = headers, timeout = 1, connect_timeout = 1 }
  if not roles or roles.status ~= 200 then
    return nil, "the instance has no IAM role attached"
  end
  local role = roles.body:match("^%s*([^\r\n]+)")
  if not role then return nil, "the instance has no IAM role attached" end
  return from_json_endpoint(list .. role, headers, "instance metadata (role " .. role .. ")")
end

local SOURCES = {
  { "environment", from_environment },
  { "web identity", from_web_identity },
  { "shared config", from_profile },
  { "container", function() return credentials.container() end },
  { "instance metadata", function() return credentials.instance_metadata() end },
}

local function run_chain(opts)
  local tried = {}
  for _, source in ipairs(SOURCES) do
    -- a profile asked for by name means that profile, as the SDKs do, not the environment's keys
    if opts and opts.profile and source[1] ~= "shared config" then goto continue end
    local creds, why = source[2](opts)
    if creds then return creds end
    tried[#tried + 1] = ("%s (%s)"):format(source[1], why)
    ::continue::
  end
  error("aws: no credentials found; tried " .. table.concat(tried, "; ") ..
    ". Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE", 0)
end

-- ---- the cache ----

local cache = {}      -- profile -> credentials
local refreshing = {} -- profile -> the task refreshing them

local function fresh(creds)
  return creds and (creds.expires == nil or creds.expires - REFRESH_MARGIN > os.time())
end

-- credentials.resolve{profile=, refresh=} -> {access_key_id, secret_access_key, session_token,
-- expires, source}
function credentials.resolve(opts)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argument(1, "aws.credentials", "table expected, got %s", type(opts))
  end
  local key = profile_name(opts)
  -- environment keys are read every time: a script may change them, and reading is free
  if not (opts and opts.profile) then
    local creds = from_environment()
    if creds then return creds end
  end
  if not (opts and opts.refresh) and fresh(cache[key]) then return cache[key] end
  -- one refresh at a time per profile; it files its own result, so a waiter that is cancelled
  -- or times out leaves nothing stale behind
  local pending = refreshing[key]
  if not pending then
    pending = task.spawn(function()
      local ok, creds = pcall(run_chain, opts)
      refreshing[key] = nil
      if not ok then error(creds, 0) end
      cache[key] = creds
      if creds.expires then
        log.debug(("aws: credentials from %s, valid until %s"):format(creds.source,
          require("stagehost.util.time").iso8601(creds.expires)))
      end
      return creds
    end)
    refreshing[key] = pending
  end
  local ok, creds = pending:join()
  if not ok then error(creds, 0) end
  return creds
end

return credentials
