-- The post-deploy smoke check: the deployed API answers a real round trip (register, log in,
-- read the session back) and the site serves its page. In development a failure here rolls
-- the environment back to its last good release; a pass records this one as good.
local http = require("stagehost.http")
local json = require("stagehost.json")
local App = require("lib.app")
local deploy = require("lib.deploy")

local function call(method, url, body, headers)
  local ok, r = pcall(http.request, { method = method, url = url, timeout = 30, headers = headers,
    json = body })
  if not ok then return nil, tostring(r) end
  return r
end

local function expect(what, r, err, status)
  if not r then error(("smoke check: %s: %s"):format(what, err), 0) end
  if r.status ~= status then
    error(("smoke check: %s answered %d, expected %d: %s"):format(what, r.status, status, (r.body or ""):sub(1, 200)), 0)
  end
  return r
end

return function(ctx)
  local app = App.of(ctx)
  -- what was deployed: by this run's deploy stages, or put back by the rollback pipeline
  local back = ctx.outputs.rollback
  if back and not back.api_url then back = nil end -- a rollback stage that did not run
  local api_url = back and back.api_url or ctx.outputs["deploy-infrastructure"].api_url
  local front = back or ctx.outputs["deploy-frontend"]
  local api = tostring(api_url):gsub("/*$", "")
  local user = { username = ("smoke-%s"):format(ctx.run.id:gsub("[^%w]", ""):sub(-12)), password = "smoke-check-" .. ctx.run.id }
  local r, err = call("POST", api .. "/auth/register", user)
  if r and r.status == 409 then r.status = 201 end -- a resumed check registered already
  expect("POST /auth/register", r, err, 201)
  r, err = call("POST", api .. "/auth/login", user)
  local token = json.decode(expect("POST /auth/login", r, err, 200).body).token
  r, err = call("GET", api .. "/auth/me", nil, { authorization = "Bearer " .. tostring(token) })
  expect("GET /auth/me", r, err, 200)
  r, err = call("GET", front.url)
  expect("GET " .. tostring(front.url), r, err, 200)
  ctx.log.info(("smoke check passed: %s and %s answer"):format(api, front.url))
  -- a new deployment that works is the release a later rollback goes back to
  local record = ctx.outputs.validate and deploy.record_release(ctx, app) or nil
  return { passed = true, release = record }
end
