-- Who is who for approvals: the OS user, a voter's name, the run's actor, the authors of the
-- commits being deployed, and the commit and tag a gate is bound to (from git, quietly).
local log = require("stagehost.log")
local task = require("stagehost.task")

local identity = {}

-- The OS user: $USER, else $LOGNAME, else the name /etc/passwd gives this process's uid.
function identity.os_user()
  local name = os.getenv("USER") or os.getenv("LOGNAME")
  if name and name ~= "" then return name end
  local f = io.open("/proc/self/status")
  local uid = f and f:read("a"):match("\nUid:%s*(%d+)")
  if f then f:close() end
  if not uid then return nil end
  for line in io.lines("/etc/passwd") do
    local user, id = line:match("^([^:]+):[^:]*:(%d+):")
    if id == uid then return user end
  end
  return "uid" .. uid
end

-- The run's actor (--actor, else GITHUB_ACTOR, else the OS user, as the run recorded it).
function identity.actor(run)
  return run.actor or identity.os_user()
end

-- Who votes from this terminal: --as NAME, else GITHUB_ACTOR, else the OS user.
function identity.voter(as)
  if as ~= nil then return as end
  local gh = os.getenv("GITHUB_ACTOR")
  if gh and gh ~= "" then return gh end
  return identity.os_user()
end

-- What is wrong with a name given as an identity, or nil.
function identity.bad_name(who)
  if type(who) ~= "string" then return ("a name is a string (got %s)"):format(type(who)) end
  if who == "" then return "the name is empty" end
  if #who > 100 then return ("the name is %d characters long (at most 100)"):format(#who) end
  if who:find("[%c]") then return "the name holds a control character" end
  if who:find("^%s") or who:find("%s$") then return "the name starts or ends with a space" end
  return nil
end

-- ---- git ----

-- `git -C dir ARGS` -> its stdout, or nil. The child's lines stay off the console and out of
-- the stage's log (a recheck every half minute would fill it with hashes).
function identity.git(dir, ...)
  local argv = { "git", "-C", dir, ... }
  argv.quiet, argv.timeout = true, 10
  local t = task.spawn(function()
    log.bind("git", "/dev/null")
    local ok, r = pcall(require("stagehost.proc").run, argv)
    if ok and r.ok then return r.stdout end
    return nil
  end)
  local ok, done, out = pcall(t.join, t)
  if not ok then -- this task was cancelled: so is git
    t:cancel("cancelled")
    error(done, 0)
  end
  return done and out or nil
end

-- The commit being deployed: GITHUB_SHA, else the pipeline's git HEAD, else the run's record.
-- And the commit the run's tag points to, where the checkout has the tag.
function identity.checkout(dir, tag, recorded)
  local commit = os.getenv("GITHUB_SHA")
  if not (commit and commit:match("^%x+$")) then
    local out = dir and identity.git(dir, "rev-parse", "HEAD")
    commit = out and out:match("^(%x+)") or recorded
  end
  local tag_commit
  if tag and dir then
    local out = identity.git(dir, "rev-parse", "-q", "--verify", "refs/tags/" .. tag .. "^{commit}")
    tag_commit = out and out:match("^(%x+)")
  end
  return commit, tag_commit
end

-- The authors of the commits being deployed: of the range from..to (authors_of = {from, to}),
-- else of the one commit. -> list of {name, email}, or nil and why.
function identity.authors(dir, range, commit)
  local args
  if range then
    args = { "log", "--format=%an%x09%ae", range[1] .. ".." .. (range[2] or "HEAD"), "--" }
  else
    args = { "log", "-1", "--format=%an%x09%ae", commit or "HEAD", "--" }
  end
  local out = dir and identity.git(dir, table.unpack(args))
  if not out then
    return nil, ("git log %s in %s failed"):format(range and (range[1] .. ".." .. (range[2] or "HEAD")) or (commit or "HEAD"), tostring(dir))
  end
  local list, seen = {}, {}
  for name, email in out:gmatch("([^\t\n]*)\t([^\n]*)") do
    local key = name .. "\t" .. email
    if not seen[key] then
      seen[key] = true
      list[#list + 1] = { name = name, email = email }
    end
  end
  return list
end

-- Is `who` one of the authors: their name, their e-mail or its local part (a GitHub login is
-- often that), compared without case.
function identity.is_author(authors, who)
  local w = tostring(who):lower()
  for _, a in ipairs(authors or {}) do
    local name, email = (a.name or ""):lower(), (a.email or ""):lower()
    if w == name or w == email or (email:match("^([^@]+)@") == w) then return true end
    -- GitHub's noreply addresses: 12345+login@users.noreply.github.com
    if email:match("^%d+%+([^@]+)@users%.noreply%.github%.com$") == w then return true end
  end
  return false
end

return identity
