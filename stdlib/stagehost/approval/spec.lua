-- The options of approval.request, checked: spec.check(opts) -> the checked spec, or nil and
-- what is wrong (approval.request raises it as "bad argument #1 to 'approval.request' (...)").
local json = require("stagehost.json")
local identity = require("stagehost.approval.identity")

local spec = {}

local KNOWN = { "title", "checklist", "preview", "approvers", "required", "timeout", "forbid", "remind",
  "channels", "require_comment", "authors_of", "votes" }
local KNOWN_SET = {}
for _, k in ipairs(KNOWN) do KNOWN_SET[k] = true end

-- Where votes can come from (entries of stagehost.approval.channels): the command line
-- (`stagehost approve`, through the state database), the web page (`stagehost serve`'s, else
-- the waiting host's own; Slack's buttons come in through serve too), the terminal prompt and
-- GitHub comments.
spec.CHANNELS = { "cli", "web", "terminal", "github" }

local FORBID = { actor = true, authors = true }
local DECISIONS = { approved = true, rejected = true }

local function seconds(v) return require("stagehost.pipeline").seconds(v) end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function names(list, what)
  if not is_list(list) or #list == 0 then return nil, ("%s must be a non-empty list of names"):format(what) end
  local out, seen = json.array{}, {}
  for i, who in ipairs(list) do
    local bad = identity.bad_name(who)
    if bad then return nil, ("%s[%d]: %s"):format(what, i, bad) end
    if seen[who:lower()] then return nil, ("%s: '%s' is listed twice"):format(what, who) end
    seen[who:lower()] = true
    out[#out + 1] = who
  end
  return out
end

local function groups_of(list)
  local out, teams = json.array{}, {}
  for i, grp in ipairs(list) do
    local where = ("approvers[%d]"):format(i)
    if type(grp) ~= "table" then return nil, where .. ": a group is {team = NAME, members = {...}, required = N}" end
    for k in pairs(grp) do
      if k ~= "team" and k ~= "members" and k ~= "required" then
        return nil, ("%s: unknown field '%s' (a group has team, members and required)"):format(where, tostring(k))
      end
    end
    if type(grp.team) ~= "string" or grp.team == "" then return nil, where .. ".team must be a name" end
    if teams[grp.team] then return nil, ("approvers: team '%s' is listed twice"):format(grp.team) end
    teams[grp.team] = true
    local members, err = names(grp.members, where .. ".members")
    if not members then return nil, err end
    local required = grp.required == nil and 1 or grp.required
    if math.type(required) ~= "integer" or required < 1 or required > #members then
      return nil, ("%s.required must be a whole number from 1 to %d (its members), got %s"):format(where, #members, tostring(grp.required))
    end
    out[#out + 1] = { team = grp.team, members = members, required = required }
  end
  return out
end

local function durations(list, what)
  if type(list) == "string" or type(list) == "number" then list = { list } end
  if not is_list(list) then return nil, what .. " must be a list of durations like \"1h\" or \"15m\"" end
  local out = json.array{}
  for i, v in ipairs(list) do
    local s = seconds(v)
    if not s or s <= 0 then return nil, ("%s[%d] must be a duration like \"1h\" or \"15m\" (got %s)"):format(what, i, tostring(v)) end
    out[#out + 1] = { text = tostring(v), seconds = s }
  end
  return out
end

local function forbid_of(v)
  if v == nil then return json.array{} end
  if type(v) == "string" then v = { v } end
  if not is_list(v) then return nil, "forbid must be \"actor\", \"authors\" or a list of them" end
  local out = json.array{}
  for i, f in ipairs(v) do
    if not FORBID[f] then return nil, ("forbid[%d] must be \"actor\" or \"authors\" (got %s)"):format(i, tostring(f)) end
    out[#out + 1] = f
  end
  return out
end

local function text(v, what, max)
  if v == nil then return nil end
  if type(v) ~= "string" then return nil, ("%s must be a string (got %s)"):format(what, type(v)) end
  if #v > max then return nil, ("%s is %d bytes long (at most %d)"):format(what, #v, max) end
  return v
end

-- A comment as a vote carries it: nil for none or blank, else the text (at most 2000 bytes, no
-- control characters but newlines and tabs). -> comment, or nil and what is wrong.
function spec.comment(c)
  if c == nil then return nil end
  if type(c) ~= "string" then return nil, ("a comment is a string (got %s)"):format(type(c)) end
  if c:match("^%s*$") then return nil end
  if #c > 2000 then return nil, ("the comment is %d bytes long (at most 2000)"):format(#c) end
  if c:find("[%z\1-\8\11\12\14-\31\127]") then return nil, "the comment holds a control character" end
  return c
end

local function votes_of(list)
  if list == nil then return json.array{} end
  if not is_list(list) then return nil, "votes must be a list of {who =, decision = \"approved\"|\"rejected\", comment =, via =}" end
  local out = json.array{}
  for i, v in ipairs(list) do
    local where = ("votes[%d]"):format(i)
    if type(v) ~= "table" then return nil, where .. " must be a table" end
    for k in pairs(v) do
      if k ~= "who" and k ~= "decision" and k ~= "comment" and k ~= "via" then
        return nil, ("%s: unknown field '%s' (a vote has who, decision, comment and via)"):format(where, tostring(k))
      end
    end
    if not DECISIONS[v.decision] then return nil, ("%s.decision must be \"approved\" or \"rejected\" (got %s)"):format(where, tostring(v.decision)) end
    if v.who ~= nil then
      local bad = identity.bad_name(v.who)
      if bad then return nil, where .. ".who: " .. bad end
    end
    local comment, cerr = spec.comment(v.comment)
    if cerr then return nil, where .. ": " .. cerr end
    if v.via ~= nil and (type(v.via) ~= "string" or v.via == "") then return nil, where .. ".via must be a string" end
    out[#out + 1] = { who = v.who, decision = v.decision, comment = comment, via = v.via or "stage" }
  end
  return out
end

-- spec.check(opts) -> spec, or nil and what is wrong. The spec is what the gate stores: plain
-- data, JSON arrays where lists are.
function spec.check(opts)
  if type(opts) ~= "table" then return nil, ("table expected, got %s"):format(type(opts)) end
  for k in pairs(opts) do
    if not KNOWN_SET[k] then
      local near = type(k) == "string" and require("stagehost.pipeline").closest(k, KNOWN)
      return nil, ("unknown option '%s'%s"):format(tostring(k), near and (" (did you mean '" .. near .. "'?)") or "")
    end
  end
  local s, err = {}, nil
  if type(opts.title) ~= "string" or opts.title:match("^%s*$") then return nil, "title must be a non-empty string" end
  s.title, err = text(opts.title, "title", 200)
  if err then return nil, err end
  if opts.title:find("[%c]") then return nil, "title must be one line" end
  s.checklist, err = text(opts.checklist, "checklist", 1000000)
  if err then return nil, err end
  s.preview, err = text(opts.preview, "preview", 10000000)
  if err then return nil, err end

  local approvers = opts.approvers
  if approvers ~= nil then
    if type(approvers) == "string" then approvers = { approvers } end
    if not is_list(approvers) or #approvers == 0 then return nil, "approvers must be a list of names or of groups {team =, members =, required =}" end
    local tables = 0
    for _, a in ipairs(approvers) do if type(a) == "table" then tables = tables + 1 end end
    if tables == #approvers then
      s.groups, err = groups_of(approvers)
    elseif tables == 0 then
      s.approvers, err = names(approvers, "approvers")
    else
      err = "approvers is either a list of names or a list of groups, not both"
    end
    if err then return nil, err end
  end
  local everyone = {}
  for _, grp in ipairs(s.groups or {}) do
    for _, m in ipairs(grp.members) do everyone[m:lower()] = true end
  end
  local distinct = 0
  for _ in pairs(everyone) do distinct = distinct + 1 end
  local required = opts.required
  if required == nil then
    required = 1
    if s.groups then -- one person per place: two groups of one each need two people
      required = 0
      for _, grp in ipairs(s.groups) do required = required + grp.required end
      required = math.min(required, distinct)
    end
  end
  local most = s.approvers and #s.approvers or (s.groups and distinct) or math.maxinteger
  if math.type(required) ~= "integer" or required < 1 or required > most then
    return nil, ("required must be a whole number from 1 to %s, got %s"):format(most == math.maxinteger and "any" or tostring(most), tostring(opts.required))
  end
  s.required = required

  local timeout = opts.timeout == nil and "24h" or opts.timeout
  s.timeout = seconds(timeout)
  if not s.timeout then return nil, ("timeout must be a duration like \"24h\", \"30m\" or seconds (got %s)"):format(tostring(timeout)) end
  s.timeout_text = tostring(timeout)

  s.forbid, err = forbid_of(opts.forbid)
  if err then return nil, err end
  s.remind = json.array{}
  if opts.remind ~= nil then
    s.remind, err = durations(opts.remind, "remind")
    if err then return nil, err end
  end
  if opts.require_comment ~= nil and type(opts.require_comment) ~= "boolean" then
    return nil, ("require_comment must be true or false (got %s)"):format(type(opts.require_comment))
  end
  s.require_comment = opts.require_comment == true

  if opts.authors_of ~= nil then
    local a = opts.authors_of
    local from, to = type(a) == "table" and (a[1] or a.from), type(a) == "table" and (a[2] or a.to)
    if type(from) ~= "string" or from == "" or (to ~= nil and (type(to) ~= "string" or to == "")) then
      return nil, "authors_of must be {FROM, TO}: two git revisions (TO defaults to HEAD)"
    end
    if from:find("^%-") or (to and to:find("^%-")) then return nil, "authors_of: a revision cannot start with '-'" end
    s.authors_of = { from, to }
  end

  local channels = opts.channels
  s.channels = json.array{}
  if channels == nil then channels = { "cli", "web", "terminal" } end
  if type(channels) == "string" then channels = { channels } end
  if not is_list(channels) then return nil, "channels must be a list of names" end
  for i, c in ipairs(channels) do
    local ok = false
    for _, known in ipairs(spec.CHANNELS) do ok = ok or c == known end
    if not ok then
      return nil, ("channels[%d]: no channel '%s' (there is: %s)"):format(
        i, tostring(c), table.concat(spec.CHANNELS, ", "))
    end
    s.channels[#s.channels + 1] = c
  end

  s.votes, err = votes_of(opts.votes)
  if err then return nil, err end
  return s
end

-- What the gate keeps of a spec (the rest is in its own columns or used once).
function spec.stored(s, authors, authors_error)
  return { approvers = s.approvers, groups = s.groups, required = s.required, timeout = s.timeout,
    timeout_text = s.timeout_text, forbid = s.forbid, remind = s.remind, require_comment = s.require_comment,
    channels = s.channels, authors = authors, authors_error = authors_error,
    authors_of = s.authors_of and (s.authors_of[1] .. ".." .. (s.authors_of[2] or "HEAD")) or nil }
end

return spec
