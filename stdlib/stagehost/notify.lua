-- Notifications: notify.send{event, title, text, phase, status, fields} goes to every configured
-- channel at once, each with retries; a channel that fails is logged as one warning and
-- reported in the result, never raised, so a notification cannot fail a run.
--
--   local notify = require "stagehost.notify"
--   notify.configure{ {channel = "slack", url = os.getenv("SLACK_WEBHOOK_URL"), on = {"deploy.*"}},
--                     {channel = "email", url = "smtp://mail:587", from = "ci@x.org", to = "ops@x.org"} }
--   local results = notify.send{ event = "deploy.failure", phase = "infrastructure",
--                                title = "Staging deploy failed", text = "stack rolled back",
--                                fields = { {name = "Tag", value = "rc-1.2.0"} } }
--   -- results = { slack = {ok = true}, email = {ok = false, error = "smtp: ..."} }
--
--   notify.configure(list [, {run =, dir =, where =}]) -> the previous channels (pass them back to
--       restore); a mistake in list is a configuration error (exit 2, one line)
--   notify.check(list [, where [, dir]]) -> the checked channels: what pipeline.define{notify}
--       keeps; an unknown channel, a missing or misspelt setting, a channel file that does not
--       load: exit 2 naming it (where = "file:line" of the pipeline)
--   notify.send(message) -> {[channel] = {ok = true} | {ok = false, error = "..."}}
--   notify.channel(name, fn | {send = fn, required = {...}, secrets = {...}}) adds a channel
--   notify.post(url, {json = | body =, headers =, timeout =, insecure =}) -> response: POST for
--       channels; a transport failure or a non-2xx answer raises an error notify.send retries
--       (transport, 408, 429, 5xx) or reports
--   notify.plain(message) -> the message as plain text (e-mail bodies, simple channels)
--   notify.run_started(run): called by the pipeline engine as a run starts (pipeline/run.lua)
--
-- A message: {event, title, text, phase, status, fields = {{name =, value =}},
--   run = {id, pipeline, tag, env, actor, commit, url}, at}; status is "success", "failure",
--   "cancelled", "pending" or "info" (from the event when not given). Every string of it is
--   masked (log.masked) before any channel sees it.
--
-- A channel is a function(message, config): it succeeds by returning (anything but false, or
-- nil with an error), fails by raising or returning nil/false, error [, kind]. Built-in ones are
-- the modules stagehost.notify.NAME (tables {settings, required, secrets, check, send}); others
-- come from notify.channel or a file channels/NAME.lua beside the pipeline (or
-- scripts/channels/NAME.lua under the current directory) returning the function or such a table.
local task = require("stagehost.task")
local log = require("stagehost.log")
local tables = require("stagehost.util.tables")
local json = require("stagehost.json")
local errors = require("stagehost.errors")
local retry = require("stagehost.util.retry")
local time = require("stagehost.util.time")

local notify = {}

notify.EVENTS = { "run.started", "checks.completed", "approval.requested", "approval.reminder",
  "approval.decided", "deploy.success", "deploy.failure", "release.ready" }
notify.PHASES = { "validation", "infrastructure", "frontend", "tests", "release" }
notify.BUILTIN = { "console", "email", "github", "slack", "teams", "webhook" }

local BUILTIN = {}
for _, name in ipairs(notify.BUILTIN) do BUILTIN[name] = true end
local KNOWN_EVENT = {}
for _, name in ipairs(notify.EVENTS) do KNOWN_EVENT[name] = true end

-- Settings every channel takes, whatever its kind.
local COMMON = { channel = "string", on = "string|[string]", name = "string", enabled = "boolean",
  retry = "number|table", timeout = "number" }

-- Each channel's deliveries: 3 attempts, waits drawn below 1 s then 2 s, a Retry-After of at
-- most 30 s honoured; the whole delivery (retries included) within `timeout`.
local RETRY = { attempts = 3, base = 1, cap = 10, max_wait = 30 }
local TIMEOUT = 60

local STATUS_OF_EVENT = { ["deploy.success"] = "success", ["deploy.failure"] = "failure",
  ["run.started"] = "pending", ["approval.requested"] = "pending", ["approval.reminder"] = "pending" }

local CHECKED = { __name = "stagehost.notify.channels" }
local EMPTY = setmetatable({}, CHECKED)

local registered = {}   -- notify.channel(name, ...): name -> implementation
local files = {}        -- channel files loaded: full path -> implementation
-- What notify.send uses: the channels, who configured them ("pipeline" for a run's, so the next
-- run without its own does not inherit them), and the run the messages are about.
local active = { channels = EMPTY }

-- ---- helpers ----

local function one_line(s)
  return (tostring(s):gsub("%s*[\r\n]+%s*", " "))
end

-- A copy of value with every string (keys too) masked; metatables are kept, so a JSON array
-- stays one. Secrets are masked in the values, before any encoding: a secret holding '"' or
-- '\' would no longer match once escaped in JSON.
local function masked_copy(value, depth)
  return tables.masked_copy(value, log.masked, 32, depth)
end
notify.masked = function(value) return masked_copy(value, 0) end

-- "deploy.*" and "approval.?ecided": '*' is any run of characters, '?' one.
local function glob(pattern, s)
  local lua = pattern:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".")
  return s:match("^" .. lua .. "$") ~= nil
end
notify.glob = glob

local function matches(on, event)
  if not on then return true end
  for _, pattern in ipairs(on) do
    if glob(pattern, event) then return true end
  end
  return false
end

local sorted = tables.sorted_keys

-- What is wrong with value as `expected` ("string", "number|table", "[string]" a list), or nil.
local function mismatch(value, expected)
  for want in expected:gmatch("[^|]+") do
    local items = want:match("^%[(.*)%]$")
    if items then
      if type(value) == "table" and #value > 0 then
        local all = true
        for k, v in pairs(value) do
          if math.type(k) ~= "integer" or type(v) ~= items then all = false end
        end
        if all then return nil end
      end
    elseif want == "integer" then
      if math.type(value) == "integer" then return nil end
    elseif type(value) == want then
      return nil
    end
  end
  local words = expected:gsub("%[(%a+)%]", "a list of %1s"):gsub("|", " or ")
  return ("must be %s (got %s)"):format(words, type(value) == "table" and "a table" or type(value))
end

-- ---- channels ----

local function closest(word, candidates)
  return require("stagehost.pipeline").closest(word, candidates)
end

-- An implementation as check and send use it: {send, settings, required, secrets, check, hints}.
local function implementation(value, what, fail)
  if type(value) == "function" then return { send = value } end
  if type(value) == "table" and type(value.send) == "function" then
    local impl = {}
    for k, v in pairs(value) do impl[k] = v end
    -- required = {"url"} or {url = "an example value"} (shown in the message when missing)
    local req, hints = {}, {}
    for k, v in pairs(value.required or {}) do
      if math.type(k) == "integer" then req[#req + 1] = v else req[#req + 1], hints[k] = k, v end
    end
    table.sort(req)
    impl.required, impl.hints = req, hints
    return impl
  end
  fail("%s must return function(message, config) or {send = function(message, config), required = {...}} (it returned %s)",
    what, type(value))
end

local function builtin(name)
  local impl = require("stagehost.notify." .. name)
  if not impl.hints then
    impl = implementation(impl, "stagehost.notify." .. name, error)
    package.loaded["stagehost.notify." .. name] = impl
  end
  return impl
end

-- Find the channel `name`: built in, added with notify.channel, or a file channels/NAME.lua
-- beside the pipeline (dir) or scripts/channels/NAME.lua under the current directory.
local function resolve(name, dir, fail, label)
  if BUILTIN[name] then return builtin(name), "built-in" end
  if registered[name] then return registered[name], "notify.channel" end
  local places = {}
  if dir then places[#places + 1] = dir .. "/channels/" .. name .. ".lua" end
  places[#places + 1] = "scripts/channels/" .. name .. ".lua"
  for _, path in ipairs(places) do
    if files[path] then return files[path], path end
    local f = io.open(path, "r")
    if f then
      f:close()
      local chunk, err = loadfile(path, "t")
      if not chunk then fail("%s: the channel file %s does not load: %s", label, path, err) end
      local ok, value = pcall(chunk)
      if not ok then fail("%s: the channel file %s failed: %s", label, path, errors.first_line(value)) end
      local impl = implementation(value, "the channel file " .. path, function(fmt, ...) fail("%s: " .. fmt, label, ...) end)
      files[path] = impl
      return impl, path
    end
  end
  local known = {}
  for _, n in ipairs(notify.BUILTIN) do known[#known + 1] = n end
  for n in pairs(registered) do known[#known + 1] = n end
  table.sort(known)
  local hint = closest(name, known)
  fail("%s: unknown channel '%s'%s; the channels are %s, or a file %s", label, name,
    hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(known, ", "), table.concat(places, " or "))
end

-- notify.check(list [, where [, dir]]) -> the checked channels (see the top of this file)
function notify.check(list, where, dir)
  if getmetatable(list) == CHECKED then return list end
  where = where or "notify"
  local function fail(fmt, ...) errors.config("%s: " .. fmt, where, ...) end
  if type(list) ~= "table" then
    fail("notify must be a list of channels like {{channel = \"console\"}} (got %s)", type(list))
  end
  if list.channel ~= nil then list = { list } end -- one channel given without the list
  for k in pairs(list) do
    if math.type(k) ~= "integer" or k < 1 or k > #list then
      fail("notify must be a list of channels like {{channel = \"console\"}} (it has the key %s)", tostring(k))
    end
  end
  local out, keys = {}, {}
  for i, entry in ipairs(list) do
    local label = ("notify[%d]"):format(i)
    if type(entry) ~= "table" then fail("%s must be a table like {channel = \"console\"} (got %s)", label, type(entry)) end
    local name = entry.channel
    if type(name) ~= "string" or not name:match("^[%w][%w_%-]*$") then
      fail("%s needs channel = one of %s or the name of a channel file (got %s)", label,
        table.concat(notify.BUILTIN, ", "), type(name) == "string" and ("'" .. name .. "'") or tostring(name))
    end
    label = ("notify[%d] (%s)"):format(i, name)
    local impl, source = resolve(name, dir, fail, label)
    local enabled = entry.enabled ~= false
    for key, value in pairs(entry) do
      local want = COMMON[key] or (impl.settings and impl.settings[key])
      if type(key) ~= "string" then fail("%s: settings are named (got the key %s)", label, tostring(key)) end
      if not want and impl.settings then
        local candidates = sorted(impl.settings)
        for k in pairs(COMMON) do candidates[#candidates + 1] = k end
        table.sort(candidates)
        local hint = closest(key, candidates)
        fail("%s has an unknown setting '%s'%s (it takes %s)", label, key,
          hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(candidates, ", "))
      end
      local wrong = want and mismatch(value, want)
      if wrong then fail("%s: %s %s", label, key, wrong) end
    end
    if enabled then
      for _, key in ipairs(impl.required or {}) do
        if entry[key] == nil or entry[key] == "" then
          local hint = impl.hints and impl.hints[key]
          fail("%s needs %s%s", label, key, hint and (" = " .. (type(hint) == "string" and ("\"" .. hint .. "\"") or tostring(hint))) or "")
        end
      end
      if impl.check then
        local wrong = impl.check(entry)
        if wrong then fail("%s: %s", label, wrong) end
      end
    end
    local on = entry.on
    if type(on) == "string" then on = { on } end
    for _, pattern in ipairs(on or {}) do
      if not pattern:find("[*?]") and not KNOWN_EVENT[pattern] then
        local hint = closest(pattern, notify.EVENTS)
        if hint then fail("%s: on has '%s', which is not an event (did you mean '%s'?)", label, pattern, hint) end
      end
    end
    local policy = {}
    for k, v in pairs(RETRY) do policy[k] = v end
    if type(entry.retry) == "number" then
      policy.attempts = entry.retry
    elseif type(entry.retry) == "table" then
      for k, v in pairs(entry.retry) do policy[k] = v end
    end
    local ok, err = pcall(retry.check, policy, label, 1, "retry.")
    if not ok then fail("%s", tostring(err):gsub("^bad argument #1 to '[^']*' %((.*)%)$", label .. ": %1")) end
    if type(entry.timeout) == "number" and not (entry.timeout > 0) then fail("%s: timeout must be seconds > 0", label) end
    -- secrets are masked from now on, wherever stagehost writes
    for _, key in ipairs(impl.secrets or {}) do
      if type(entry[key]) == "string" and #entry[key] >= 4 then log.mask(entry[key]) end
    end
    local key = entry.name or name
    if keys[key] then
      local n = 2
      while keys[key .. "#" .. n] do n = n + 1 end
      key = key .. "#" .. n
    end
    keys[key] = true
    local config = {}
    for k, v in pairs(entry) do config[k] = v end
    out[#out + 1] = { key = key, channel = name, source = source, config = config, on = on, enabled = enabled,
      send = impl.send, retry = policy, timeout = entry.timeout or TIMEOUT }
  end
  return setmetatable(out, CHECKED)
end

-- notify.configure(list [, {run =, dir =, where =}]) -> the previous channels
function notify.configure(list, opts)
  if opts ~= nil and type(opts) ~= "table" then errors.argument(2, "notify.configure", "table expected, got %s", type(opts)) end
  opts = opts or {}
  local previous = active.channels
  local channels = list == nil and EMPTY or notify.check(list, opts.where or "notify.configure", opts.dir)
  active = { channels = channels, run = opts.run or active.run, source = opts.source }
  return previous
end

-- notify.channel(name, fn | {send, required, secrets, settings, check})
function notify.channel(name, impl)
  if type(name) ~= "string" or not name:match("^[%w][%w_%-]*$") then
    errors.argument(1, "notify.channel", "a name of letters, digits, '-' and '_' expected, got %s",
      type(name) == "string" and ("'" .. name .. "'") or type(name))
  end
  if BUILTIN[name] then
    errors.argument(1, "notify.channel", "'%s' is a built-in channel; give yours another name", name)
  end
  if type(impl) ~= "function" and not (type(impl) == "table" and type(impl.send) == "function") then
    errors.argument(2, "notify.channel", "function(message, config) or {send = function} expected, got %s", type(impl))
  end
  registered[name] = implementation(impl, "notify.channel", error)
end

-- ---- delivering ----

-- The POST every HTTP channel makes. A failure raises an error object (kind "delivery") that
-- says whether trying again may help: a connection refused, cut or timed out, or an answer 408,
-- 429 or 5xx (with its Retry-After).
function notify.post(url, opts)
  opts = opts or {}
  local http = require("stagehost.http")
  local req = { method = "POST", url = url, headers = opts.headers, timeout = opts.timeout or 15,
    insecure = opts.insecure, json = opts.json, body = opts.body }
  local ok, res = pcall(http.request, req)
  if not ok then
    if retry.is_cancellation(res) then error(res, 0) end
    local msg = retry.redact(one_line(tostring(res)))
    -- http.request raises "http.request: POST URL failed: ..." for a transport failure; a TLS
    -- problem or a malformed URL will not heal by waiting
    local transient = msg:find("http%.request: %u+ %S+ failed: ") ~= nil and not msg:find("SSL") and not msg:find("certificate")
    error(errors.new("delivery", msg, { transient = transient }), 0)
  end
  if res.status < 200 or res.status > 299 then
    local said = one_line(res.body or ""):sub(1, 200)
    error(errors.new("delivery", ("HTTP %d from %s%s"):format(res.status, retry.redact(url), said ~= "" and (": " .. said) or ""),
      { status = res.status, retry_after = retry.after(res.headers) }), 0)
  end
  return res
end

-- A channel that POSTs payload(message, config) as JSON to a secret webhook URL (Slack's
-- incoming webhooks, a Teams workflow): the URL is required (spec.example shows one in the
-- message when it is missing), masked, and must be http(s) ("url must be <url_is> https:// URL");
-- spec.settings adds the channel's own settings to url and insecure.
function notify.json_webhook(spec)
  errors.check_table(spec, 1, "notify.json_webhook")
  for _, want in ipairs{ { "payload", "function" }, { "example", "string" }, { "url_is", "string" } } do
    if type(spec[want[1]]) ~= want[2] then
      errors.argument(1, "notify.json_webhook", "%s must be a %s (got %s)", want[1], want[2], type(spec[want[1]]))
    end
  end
  if spec.settings ~= nil and type(spec.settings) ~= "table" then
    errors.argument(1, "notify.json_webhook", "settings must be a table of name = \"type\" (got %s)", type(spec.settings))
  end
  local settings = { url = "string", insecure = "boolean" }
  for k, v in pairs(spec.settings or {}) do settings[k] = v end
  return {
    settings = settings,
    required = { url = spec.example },
    secrets = { "url" },
    check = function(config)
      if not config.url:match("^https?://") then return ("url must be %s https:// URL"):format(spec.url_is) end
    end,
    payload = spec.payload,
    send = function(m, config)
      notify.post(config.url, { json = spec.payload(m, config), insecure = config.insecure })
      return true
    end,
  }
end

local TRANSIENT = { transient = true }
for k in pairs(retry.TRANSIENT_KINDS) do TRANSIENT[k] = true end

-- What notify.send tries again: transport failures and 408, 429, 5xx answers (notify.post's
-- errors), and nil, error, kind results whose kind may heal (the e-mail channel's). Anything
-- else — a 400, a bug in a channel, a GitHub error (its client has retried what is safe) — is
-- reported at once.
local function classify(o)
  if not o.raised then
    if o.result == false or (o.result == nil and o.error ~= nil) then
      return TRANSIENT[o.kind] == true, one_line(o.error or "failed")
    end
    return false
  end
  local e = o.error
  if errors.is(e, "delivery") then
    if e.transient then return true, e.message end
    local s = e.status
    if s and (s == 408 or s == 429 or s >= 500) then return true, e.message, e.retry_after end
  end
  return false
end

-- One channel, one message: retried, within the channel's timeout. -> {ok = true} or
-- {ok = false, error = "..."}; raises only a cancellation of the task.
local function deliver(ch, message)
  local policy = { name = "notify: " .. ch.key, classify = classify }
  for k, v in pairs(ch.retry) do policy[k] = v end
  local t0 = task.now()
  local ok, in_time, result, err = pcall(task.timeout, ch.timeout, retry.run, policy, function()
    return ch.send(message, ch.config)
  end)
  local problem
  if not ok then
    if retry.is_cancellation(in_time) then error(in_time, 0) end
    problem = in_time
  elseif not in_time then
    problem = ("no answer within %s"):format(time.duration(ch.timeout))
  elseif result == false or (result == nil and err ~= nil) then
    problem = err or "the channel returned false"
  end
  if problem ~= nil then
    local text = log.masked(one_line(errors.first_line(problem)))
    log.warn(("notify: %s did not deliver %s: %s"):format(ch.key, message.event, text))
    return { ok = false, error = text }
  end
  log.debug(("notify: %s delivered %s in %.2fs"):format(ch.key, message.event, task.now() - t0))
  return { ok = true }
end

local function check_string(msg, key, optional)
  local v = msg[key]
  if v == nil and optional then return nil end
  if type(v) == "number" then return tostring(v) end
  if type(v) ~= "string" then
    error(("bad argument #1 to 'notify.send' (%s must be a string, got %s)"):format(key, type(v)), 4)
  end
  return v
end

-- fields = {{name =, value =}, ...} or {{"name", "value"}, ...} or {Name = "value"} (sorted)
local function fields_of(fields)
  local out = json.array{}
  if fields == nil then return out end
  if type(fields) ~= "table" then
    error(("bad argument #1 to 'notify.send' (fields must be a list of {name =, value =}, got %s)"):format(type(fields)), 4)
  end
  local function text(v) return (type(v) == "string" or type(v) == "number" or type(v) == "boolean") and tostring(v) or nil end
  if #fields == 0 and next(fields) ~= nil then
    for _, k in ipairs(sorted(fields)) do
      local v = text(fields[k])
      if v then out[#out + 1] = { name = tostring(k), value = v } end
    end
    return out
  end
  for i, f in ipairs(fields) do
    local name, value
    if type(f) == "table" then name, value = text(f.name or f[1]), text(f.value or f[2]) end
    if not name or not value then
      error(("bad argument #1 to 'notify.send' (fields[%d] must be {name = \"...\", value = \"...\"})"):format(i), 4)
    end
    out[#out + 1] = { name = name, value = value }
  end
  return out
end

-- The message every channel gets, from what send was given: checked, completed, masked.
local function message_of(msg)
  local event = check_string(msg, "event")
  if not event:match("^[%w_%-]+[%w_.%-]*$") then
    error(("bad argument #1 to 'notify.send' (event must be a name like \"deploy.success\", got %q)"):format(event), 3)
  end
  local m = {
    event = event,
    title = check_string(msg, "title", true) or event,
    text = check_string(msg, "text", true),
    phase = check_string(msg, "phase", true),
    status = check_string(msg, "status", true) or STATUS_OF_EVENT[event] or "info",
    fields = fields_of(msg.fields),
    at = time.now_iso(),
  }
  if msg.deployment ~= nil then
    if math.type(msg.deployment) ~= "integer" then
      error("bad argument #1 to 'notify.send' (deployment must be an integer id)", 3)
    end
    m.deployment = msg.deployment
  end
  m.sha = check_string(msg, "sha", true)
  -- approval.requested's page and signed links ({gate, run, page, links = {{who, url}}})
  if type(msg.approval) == "table" then m.approval = msg.approval end
  local run = msg.run or active.run
  if run ~= nil then
    if type(run) ~= "table" then error("bad argument #1 to 'notify.send' (run must be a table)", 3) end
    m.run = {}
    for _, k in ipairs{ "id", "pipeline", "tag", "env", "actor", "commit", "url" } do
      if type(run[k]) == "string" then m.run[k] = run[k] end
    end
  end
  return masked_copy(m, 0)
end

-- notify.send{event, title, text, phase, status, fields, run, deployment, sha}
--   -> {[channel] = {ok = true} | {ok = false, error = "..."}}
function notify.send(msg)
  if type(msg) ~= "table" then errors.argument(1, "notify.send", "table expected, got %s", type(msg)) end
  local message = message_of(msg)
  local targets = {}
  for _, ch in ipairs(active.channels) do
    if ch.enabled and matches(ch.on, message.event) then targets[#targets + 1] = ch end
  end
  local results = {}
  if #targets == 0 then return results end
  local fns = {}
  for i, ch in ipairs(targets) do fns[i] = function() return deliver(ch, message) end end
  local outcomes = task.all(fns)
  for i, ch in ipairs(targets) do results[ch.key] = outcomes[i] end
  return results
end

-- The message as plain text: the text, the fields as "name: value", then where it comes from.
function notify.plain(m)
  local lines = {}
  if m.text and m.text ~= "" then lines[#lines + 1] = m.text; lines[#lines + 1] = "" end
  for _, f in ipairs(m.fields or {}) do lines[#lines + 1] = ("%s: %s"):format(f.name, f.value) end
  if m.fields and #m.fields > 0 then lines[#lines + 1] = "" end
  lines[#lines + 1] = ("Event: %s%s (%s)"):format(m.event, m.phase and (", phase " .. m.phase) or "", m.status)
  local r = m.run
  if r and r.id then
    lines[#lines + 1] = ("Run: %s%s%s"):format(r.id, r.pipeline and (" of " .. r.pipeline) or "",
      r.tag and (", tag " .. r.tag) or "")
    if r.url then lines[#lines + 1] = r.url end
  end
  return table.concat(lines, "\n")
end

-- The GitHub Actions page of this run, when running there.
local function actions_url()
  local server, repo, id = os.getenv("GITHUB_SERVER_URL"), os.getenv("GITHUB_REPOSITORY"), os.getenv("GITHUB_RUN_ID")
  if server and repo and id and server ~= "" and repo ~= "" and id ~= "" then
    return ("%s/%s/actions/runs/%s"):format(server, repo, id)
  end
end

-- Called by Run:execute once the run is recorded: the pipeline's channels for this run (a run
-- of a pipeline without notify = {...} keeps what a script configured, not another run's), then
-- run.started to them, as a task of the run (the run ends after it, but nothing waits for it).
function notify.run_started(run)
  local p = run.p
  if p.notify then
    active = { channels = p.notify, source = "pipeline" }
  elseif active.source == "pipeline" then
    active = { channels = EMPTY }
  end
  active.run = { id = run.id, pipeline = p.name, tag = run.tag, env = run.env, actor = run.actor,
    commit = run.commit, url = actions_url() }
  if #active.channels == 0 then return end
  local resumed = run.opts and run.opts.previous ~= nil
  local fields = {}
  for _, f in ipairs{ { "Tag", run.tag }, { "Environment", run.env }, { "Actor", run.actor },
    { "Commit", run.commit and run.commit:sub(1, 12) }, { "Attempt", (run.attempt or 1) > 1 and run.attempt or nil } } do
    if f[2] ~= nil then fields[#fields + 1] = { name = f[1], value = tostring(f[2]) } end
  end
  local spawn = run.spawn and function(fn) return run:spawn(fn) end or task.spawn
  spawn(function()
    notify.send{ event = "run.started", status = "pending", fields = fields,
      title = ("%s: run %s %s"):format(p.name, run.id, resumed and "resumed" or "started"),
      text = ("Pipeline %s %s%s."):format(p.name, resumed and "resumed" or "started",
        run.tag and (" for " .. run.tag) or "") }
  end)
end

return notify
