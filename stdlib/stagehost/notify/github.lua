-- The GitHub channel, through stagehost.github (its token, retries and rate limits):
--   * a commit status (the default) on `sha`, else the run's commit (GITHUB_SHA, else the
--     pipeline's git HEAD): state from the message's status, context `context` (default
--     "stagehost/PIPELINE"), the title as description (140 characters), the run's URL as target;
--   * a deployment status when a deployment id is given (`deployment` here, or in the message);
--   * an issue comment (markdown: title, text, fields as a table, the run) when `issue = N` is set.
--   {channel = "github", on = {"deploy.*"}, context =, sha =, deployment =, environment =,
--    issue =, token =, repo =, api_url =}
-- token, repo and api_url default to GITHUB_TOKEN, GITHUB_REPOSITORY and GITHUB_API_URL (and to
-- the sandbox under --sandbox).
local STATUS_STATE = { success = "success", failure = "failure", cancelled = "error" }
local DEPLOYMENT_STATE = { success = "success", failure = "failure", cancelled = "error", pending = "in_progress" }
local MARK = { success = "✅", failure = "❌", cancelled = "⛔", pending = "⏳", info = "ℹ️" }

local function cut(s, n)
  if #s <= n then return s end
  local i = n - 3
  while i > 0 and ((s:byte(i + 1) or 0) & 0xC0) == 0x80 do i = i - 1 end
  return s:sub(1, i) .. "…"
end

local function cell(s) return (s:gsub("|", "\\|"):gsub("[\r\n]+", "<br>")) end

local function markdown(m)
  local lines = { ("### %s %s"):format(MARK[m.status] or MARK.info, m.title:gsub("[\r\n]+", " ")), "" }
  if m.text and m.text ~= "" then lines[#lines + 1] = m.text; lines[#lines + 1] = "" end
  if #m.fields > 0 then
    lines[#lines + 1] = "| | |"
    lines[#lines + 1] = "|---|---|"
    for _, f in ipairs(m.fields) do lines[#lines + 1] = ("| **%s** | %s |"):format(cell(f.name), cell(f.value)) end
    lines[#lines + 1] = ""
  end
  local about = { "`" .. m.event .. "`" }
  if m.phase then about[#about + 1] = "phase **" .. m.phase .. "**" end
  local r = m.run
  if r and r.id then
    local run = r.url and ("[run %s](%s)"):format(r.id, r.url) or ("run " .. r.id)
    about[#about + 1] = (r.pipeline and (r.pipeline .. " ") or "") .. run
    if r.tag then about[#about + 1] = "tag `" .. r.tag .. "`" end
  end
  lines[#lines + 1] = "<sub>" .. table.concat(about, " · ") .. "</sub>"
  return table.concat(lines, "\n")
end

return {
  settings = { context = "string", sha = "string", deployment = "integer", environment = "string",
    issue = "integer", token = "string", repo = "string", api_url = "string", target_url = "string" },
  secrets = { "token" },
  markdown = markdown,
  send = function(m, config)
    local github = require("stagehost.github")
    local gh = github.client{ token = config.token, repo = config.repo, api_url = config.api_url, timeout = 30 }
    local run = m.run or {}
    local target = config.target_url or run.url
    if config.issue then
      local c = gh:comment(config.issue, markdown(m))
      return { url = c.html_url }
    end
    local deployment = m.deployment or config.deployment
    if deployment then
      local s = gh:create_deployment_status(deployment, { state = DEPLOYMENT_STATE[m.status] or "in_progress",
        description = cut(m.title, 140), log_url = target, environment = config.environment })
      return { id = s.id }
    end
    local sha = config.sha or m.sha or run.commit or os.getenv("GITHUB_SHA")
    if not sha or sha == "" then
      return nil, "no commit to set a status on: give sha = ... or run where GITHUB_SHA or the pipeline's git HEAD names one"
    end
    local s = gh:create_status(sha, { state = STATUS_STATE[m.status] or "pending", description = cut(m.title, 140),
      context = config.context or ("stagehost/" .. (run.pipeline or "notify")), target_url = target })
    return { id = s.id }
  end,
}
