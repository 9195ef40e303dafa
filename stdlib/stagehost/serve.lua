-- `stagehost serve`: the approval page (stagehost.approval.web) and Slack's callbacks for a
-- state directory, and the continuation of detached runs whose gate has decided. Loopback
-- (127.0.0.1:8787) unless --listen says otherwise; the address is recorded in
-- STATE_DIR/serve.json so that waiting hosts link to it instead of serving the page themselves.
--   --trust-header NAME (or $STAGEHOST_TRUST_HEADER): the header a trusted proxy sets to the
--     signed-in user's name; never trusted unless given
--   --public-url URL (or $STAGEHOST_PUBLIC_URL): the address people reach, for the links
--   $SLACK_SIGNING_SECRET: turns on /slack/interactive
local errors = require("stagehost.errors")
local log = require("stagehost.log")
local task = require("stagehost.task")

local serve = {}

serve.DEFAULT = "127.0.0.1:8787"

-- "HOST:PORT", "[V6]:PORT" or "PORT" -> host, port; nil and why for anything else.
function serve.listen(text)
  local host, port = text:match("^%[([%x:]+)%]:(%d+)$")
  if not host then host, port = text:match("^([^:]+):(%d+)$") end
  if not host and text:match("^%d+$") then host, port = "127.0.0.1", text end
  port = tonumber(port)
  if not host or not port or port > 65535 then
    return nil, ("--listen wants ADDR:PORT like 127.0.0.1:8787 (got '%s')"):format(text)
  end
  return host, math.tointeger(port)
end

-- The Slack handler, when a signing secret is set.
local function slack_of(store)
  local secret = os.getenv("SLACK_SIGNING_SECRET")
  if not secret or secret == "" then return nil, function() end end
  log.mask(secret)
  return require("stagehost.approval.slack").handler{ store = store, secret = secret,
    insecure = os.getenv("STAGEHOST_SLACK_INSECURE") == "1" }
end

-- serve.run(dir, {listen, ["trust-header"], ["public-url"]}) -> exit code (runs until stopped)
function serve.run(dir, opts)
  local host, port = serve.listen(opts.listen or serve.DEFAULT)
  if not host then errors.exit(2, "%s", port) end
  local trust = opts["trust-header"] or os.getenv("STAGEHOST_TRUST_HEADER")
  if trust == "" then trust = nil end
  if trust and not trust:match("^[%w%-]+$") then errors.exit(2, "--trust-header wants a header name like X-Forwarded-User (got '%s')", trust) end
  local public = opts["public-url"] or os.getenv("STAGEHOST_PUBLIC_URL")
  if public == "" then public = nil end
  if public and not public:match("^https?://[^%s]+$") then errors.exit(2, "--public-url wants an http(s):// URL (got '%s')", public) end
  local links = require("stagehost.approval.links")
  local store = require("stagehost.pipeline.runner").open_store(dir)
  require("stagehost.approval.gate").ensure(store)
  local slack_handle, slack_watch = slack_of(store)
  local handler = require("stagehost.approval.web").handler{ store = store, dir = dir, trust_header = trust, slack = slack_handle }
  local ok, srv = pcall(require("stagehost.http").serve, { host = host, port = port, handler = handler })
  if not ok then
    store:close()
    errors.exit(2, "cannot serve on %s: %s (--listen ADDR:PORT picks another)", opts.listen or serve.DEFAULT,
      tostring(srv):match("cannot listen on [^:]+:%d+: (.*)$") or errors.first_line(srv))
  end
  local page = ("http://%s:%d"):format(host:find(":") and ("[" .. host .. "]") or host, srv.port)
  links.register(dir, page, public and public:gsub("/+$", "") or nil)
  -- on Ctrl-C or SIGTERM too: the record first (a cancelled task cannot wait for srv:close)
  local _ <close> = setmetatable({}, { __close = function()
    links.unregister(dir)
    pcall(srv.close, srv)
    store:close()
  end })
  if host ~= "127.0.0.1" and host ~= "::1" and host ~= "localhost" then
    log.warn(("serve: listening on %s, beyond loopback: put it behind TLS and a proxy you trust"):format(host))
  end
  log.info(("serve: approvals at %s/ (state %s%s%s)"):format(page, dir, trust and (", trusting " .. trust) or "",
    slack_handle and ", Slack callbacks at /slack/interactive" or ""))
  io.stdout:write(("serving approvals on %s/\n"):format(page))
  io.stdout:flush()
  while true do
    task.sleep(1)
    local dok, detach = pcall(require, "stagehost.approval.detach")
    if dok then
      local tok, err = pcall(detach.tick, store, { state_dir = dir })
      if not tok then
        if errors.is_cancel(err) then error(err, 0) end
        log.warn("serve: continuing detached runs failed: " .. errors.first_line(err))
      end
    end
    slack_watch()
  end
end

return serve
