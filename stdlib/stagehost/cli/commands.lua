-- The commands of the command line (run, graph, runs, status, logs, resume, rerun, cancel,
-- prune, approve, approvals, serve, help), their options and help texts, and `stagehost FILE.lua` for a
-- file that returns a pipeline. Loaded by stagehost.cli only when a command or the help is
-- asked for: a script or -e CODE does not pay for compiling it.
local errors = require("stagehost.errors")
local log = require("stagehost.log")

local cli = {}

-- The exit codes every help text draws from.
local EXIT_CODES = {
  { 0, "success" },
  { 1, "the pipeline or script failed" },
  { 2, "usage or configuration error" },
  { 3, "cancelled (an approval rejected or timed out, 'stagehost cancel')" },
  { 130, "interrupted (SIGINT)" },
  { 143, "terminated (SIGTERM)" },
}
local RUN_EXITS = { 0, 1, 2, 3, 130, 143 } -- commands that run a pipeline
local QUERY_EXITS = { 0, 2 }               -- the others

-- Raise an error that ends the host with `code` and one line (kept for stagehost.pipeline.vault).
cli.exit = errors.exit

-- A usage mistake in `stagehost CMD ...` (cmd nil: before any command): one line that names
-- the command and where its help is, exit 2.
local function usage(cmd, fmt, ...)
  local see = (cmd and cmd.name ~= "help") and ("see 'stagehost help " .. cmd.name .. "'") or "see 'stagehost --help'"
  error(errors.new("usage", ("%s; %s"):format(fmt:format(...), see),
    { exit_code = 2, command = cmd and cmd.name }), 0)
end

-- A missing argument names itself, with its own pointer (like "see 'stagehost runs'").
local function missing(cmd, a)
  error(errors.new("usage", a.missing:format(cmd.name), { exit_code = 2, command = cmd.name }), 0)
end

local function closest(word, candidates) return require("stagehost.pipeline").closest(word, candidates, true) end

local function did_you_mean(word, candidates)
  local c = closest(word, candidates)
  return c and (" (did you mean '" .. c .. "'?)") or ""
end

-- For a command name: the closest command, else all of them.
local function which_command(word, names)
  local c = closest(word, names)
  return c and (" (did you mean '" .. c .. "'?)") or (" (did you mean one of " .. table.concat(names, ", ") .. "?)")
end

-- ---- options ----

-- opt(flag, metavar, help [, fields]): kind "flag" without a metavar, else "value"; fields.kind
-- "list" splits at commas and adds up over repeats, "var" takes NAME=VALUE split at the first '='.
local function opt(flag, metavar, help, fields)
  local o = { flag = flag, key = flag:sub(3), metavar = metavar, help = help, kind = metavar and "value" or "flag" }
  for k, v in pairs(fields or {}) do o[k] = v end
  return o
end

local STATE = opt("--state", "DIR", "the state directory (default: $STAGEHOST_STATE_DIR, else .stagehost)")

local RUN_OPTIONS = {
  opt("--tag", "T", "the tag being deployed (ctx.run.tag); checked against the pipeline's trigger.tags"),
  opt("--env", "E", "the target environment (ctx.run.env)"),
  opt("--var", "NAME=VALUE", "set ctx.vars.NAME; split at the first '=' only (VALUE may hold '=' and ','); repeatable",
    { kind = "var", repeatable = true }),
  opt("--only", "S[,S...]", "run only these stages (comma-separated, repeatable); what they need comes from the last successful run",
    { kind = "list", repeatable = true }),
  opt("--from", "S", "run stage S and every stage after it; what it needs comes from the last successful run"),
  STATE,
  opt("--actor", "NAME", "who starts the run (default: $GITHUB_ACTOR, else $USER)"),
  opt("--sandbox", nil, "run against stagehost's emulator of AWS and GitHub on loopback: nothing leaves this machine"),
  opt("--auto-approve", nil, "approve every approval gate of the run at once (as its actor): accepted only with --sandbox or by a pipeline that says auto_approve = true"),
  opt("--dry-run", nil, "print the plan and stop: nothing runs, nothing is written"),
  opt("--detach", nil, "at an approval gate that must wait, record it and exit 0 (status 'waiting'); 'stagehost resume', 'approve --resume' or 'stagehost serve' continue the run"),
}

local RUN_ARG = { name = "RUN", help = "the run's ID, or any unique prefix of it",
  missing = "give the run ID (see 'stagehost runs')" }
local PIPELINE_ARG = { name = "PIPELINE.lua", help = "a Lua file that returns pipeline.define{...}",
  missing = "give the pipeline file (see 'stagehost help %s')" }

-- parse(cmd, args [, first]) -> opts, positionals, the index of each positional in args.
-- `--name value` and `--name=value`; `--` ends the options. Raises a usage error for an
-- unknown option, a missing or unwanted value.
local function parse(cmd, args, first)
  local opts, pos, at = {}, {}, {}
  local by_flag, flags = {}, {}
  for _, o in ipairs(cmd.options) do
    by_flag[o.flag] = o
    flags[#flags + 1] = o.flag
  end
  local i, ended = first or 1, false
  while i <= #args do
    local a = args[i]
    if ended or a == "-" or a:sub(1, 1) ~= "-" then
      pos[#pos + 1], at[#at + 1] = a, i
    elseif a == "--" then
      ended = true
    else
      local flag, inline = a:match("^(%-%-[^=]+)=(.*)$")
      flag = flag or a
      local o = by_flag[flag]
      if not o then usage(cmd, "unknown option '%s'%s", flag, did_you_mean(flag, flags)) end
      if o.kind == "flag" then
        if inline then usage(cmd, "option '%s' takes no value (got '%s')", flag, inline) end
        opts[o.key] = true
      else
        local v = inline
        if not v then
          v = args[i + 1]
          if v == nil or (v:sub(1, 2) == "--" and #v > 2) then usage(cmd, "option '%s' needs a value: %s %s", flag, flag, o.metavar) end
          i = i + 1
        end
        if o.choices and not o.choices[v] then
          usage(cmd, "%s must be %s (got '%s')", flag, o.choices_text, v)
        end
        if o.kind == "list" then
          local list = opts[o.key] or {}
          for part in v:gmatch("[^,]+") do list[#list + 1] = part end
          if #list == 0 then usage(cmd, "option '%s' needs a value: %s %s", flag, flag, o.metavar) end
          opts[o.key] = list
        elseif o.kind == "var" then
          local name, value = v:match("^([^=]*)=(.*)$")
          if not name then usage(cmd, "%s wants NAME=VALUE (got '%s')", flag, v) end
          if name == "" then usage(cmd, "%s wants a name before the '=' (got '%s')", flag, v) end
          if not name:match("^[%w_.-]+$") then
            usage(cmd, "%s: a name is letters, digits, '_', '.' and '-' (got '%s')", flag, name)
          end
          opts[o.key] = opts[o.key] or {}
          opts[o.key][name] = value
        else
          opts[o.key] = v
        end
      end
    end
    i = i + 1
  end
  return opts, pos, at
end

-- Check the positionals against cmd.args: each missing one names itself, an extra one is an error.
local function check_args(cmd, pos)
  for k, a in ipairs(cmd.args) do
    if pos[k] == nil and not a.optional then missing(cmd, a) end
  end
  if #pos > #cmd.args then usage(cmd, "unexpected argument '%s'", pos[#cmd.args + 1]) end
end

function cli.state_dir(opts)
  return (opts and opts.state) or os.getenv("STAGEHOST_STATE_DIR") or ".stagehost"
end

-- ---- scripts and pipeline files ----

local function add_script_dir(path) return require("stagehost.cli").add_script_dir(path) end

-- Load a pipeline file: it must return pipeline.define{...}.
function cli.load(path)
  local pipeline = require("stagehost.pipeline")
  if not path then errors.exit(2, "give the pipeline file") end
  local chunk, err = loadfile(path, "t")
  if not chunk then
    if err:find("^cannot open ") then errors.exit(2, "cannot open pipeline '%s' (check the path)", path) end
    if err:find("binary chunk", 1, true) then errors.exit(2, "%s: precompiled Lua is not loaded; give the source", path) end
    errors.exit(2, "%s", err)
  end
  add_script_dir(path)
  pipeline.loading = path
  local ok, p = pcall(chunk)
  pipeline.loading = nil
  if not ok then
    if type(p) == "table" and p.exit_code then error(p, 0) end
    errors.exit(2, "%s", tostring(p))
  end
  if not pipeline.is(p) then errors.exit(2, "%s does not return pipeline.define{...} (it returned %s)", path, type(p)) end
  return p
end

local RUN_COMMAND -- the `run` entry of COMMANDS, for parsing run options anywhere

-- The options of a run from its arguments (those of `stagehost run` after the pipeline, or
-- those stored with a run, for resume and rerun). Positionals are left to the script they came with.
local function run_options(args)
  local opts = parse(RUN_COMMAND, args)
  return { tag = opts.tag, env = opts.env, actor = opts.actor, vars = opts.var or {}, only = opts.only,
    from = opts.from, state = opts.state, dry_run = opts["dry-run"], sandbox = opts.sandbox,
    auto_approve = opts["auto-approve"], detach = opts.detach, args = args }
end

local cmd_help_of -- below: --help anywhere before `--` prints a command's help

-- Run pipeline p with command-line args (`stagehost FILE.lua ARGS`); an exit object for anything
-- but success.
function cli.run_pipeline(p, args)
  if cmd_help_of(RUN_COMMAND, args) then return 0 end
  return require("stagehost.pipeline.runner").run(p, run_options(args))
end

-- ---- the commands ----

-- The options were checked already (parse): the pipeline loads only for a command line that is right.
local function cmd_run(_, pos, args, at)
  local rest = {} -- what the run keeps for resume and rerun: its arguments but the pipeline
  for i = 1, #args do
    if i ~= at[1] then rest[#rest + 1] = args[i] end
  end
  return cli.run_pipeline(cli.load(pos[1]), rest)
end

local function cmd_graph(opts, pos)
  local pipeline = require("stagehost.pipeline")
  local p = cli.load(pos[1])
  local format = opts.format or "mermaid"
  if format == "mermaid" then io.stdout:write(pipeline.mermaid(p))
  elseif format == "dot" then io.stdout:write(pipeline.dot(p))
  else io.stdout:write(require("stagehost.json").encode(pipeline.describe(p), { pretty = true }), "\n") end
  return 0
end

local function cmd_runs(opts)
  local json = require("stagehost.json")
  local dir = cli.state_dir(opts)
  if not require("stagehost.fs").exists(dir .. "/state.db") then
    if opts.json then print("[]") else print("no runs yet in " .. dir) end
    return 0
  end
  local store = require("stagehost.pipeline.runner").open_store(dir, true)
  local rows = store:runs(50)
  store:close()
  if opts.json then
    local out = json.array{}
    for _, r in ipairs(rows) do
      out[#out + 1] = { id = r.id, pipeline = r.pipeline, status = r.status, tag = r.tag, env = r.env,
        started_at = r.started_at, finished_at = r.finished_at }
    end
    print(json.encode(out, { pretty = true }))
    return 0
  end
  print(("%-22s %-16s %-12s %-20s %s"):format("RUN", "PIPELINE", "STATUS", "STARTED", "TAG"))
  for _, r in ipairs(rows) do
    print(("%-22s %-16s %-12s %-20s %s"):format(r.id, r.pipeline, r.status, r.started_at or "", r.tag or ""))
  end
  return 0
end

-- The stored run `id` in the state of opts (read-only unless writable).
local function stored_run(opts, id, writable)
  local runner = require("stagehost.pipeline.runner")
  local store = runner.open_store(cli.state_dir(opts), not writable)
  return runner.need_run(store, id), store
end

local function cmd_status(opts, pos)
  local json = require("stagehost.json")
  local r, store = stored_run(opts, pos[1])
  store:close()
  if opts.json then
    r.recorded_status = nil
    for _, s in ipairs(r.stages) do s.run_id = nil end
    r.stages = json.array(r.stages)
    r.artifacts = json.array(r.artifacts)
    print(json.encode(r, { pretty = true }))
    return 0
  end
  local duration, symbols = require("stagehost.util.time").duration, require("stagehost.util.status").terminal
  print(("run %s: %s — pipeline '%s' (%s)%s"):format(r.id, r.status, r.pipeline, r.file,
    r.tag and (", tag " .. r.tag) or ""))
  for _, s in ipairs(r.stages) do
    local extra = s.duration and duration(s.duration) or ""
    if s.status == "skipped" and s.reason then extra = s.reason end
    if s.error then extra = extra .. "  " .. s.error end
    print(("  %s %-28s %-9s %s"):format(symbols[s.status] or "?", s.name, s.status, extra))
  end
  if r.status == "interrupted" then print("\nits host is gone: 'stagehost resume " .. r.id .. "' continues it") end
  if r.status == "waiting" then
    print(("\nit waits for approval, detached: 'stagehost approve %s' votes, 'stagehost resume %s' (or 'approve --resume') continues it once the gate decides"):format(r.id, r.id))
  end
  return 0
end

local function cmd_logs(opts, pos)
  local r, store = stored_run(opts, pos[1])
  store:close()
  local names = {}
  if pos[2] then
    local known, found = {}, false
    for _, s in ipairs(r.stages) do
      known[#known + 1] = s.name
      found = found or s.name == pos[2]
    end
    if not found then errors.exit(2, "run %s has no stage '%s'%s", r.id, pos[2], did_you_mean(pos[2], known)) end
    names = { pos[2] }
  else
    for _, s in ipairs(r.stages) do names[#names + 1] = s.name end
  end
  local fs = require("stagehost.fs")
  for _, name in ipairs(names) do
    local text = fs.read(cli.state_dir(opts) .. "/runs/" .. r.id .. "/logs/" .. name .. ".log")
    if text then
      if #names > 1 then print("== " .. name) end
      io.stdout:write(text)
    end
  end
  return 0
end

local function cmd_resume(opts, pos)
  return require("stagehost.pipeline.runner").resume(cli.state_dir(opts), pos[1], cli.load, run_options)
end

local function cmd_rerun(opts, pos, _, _, cmd)
  if opts.failed and opts.from then usage(cmd, "give --failed or --from S, not both") end
  return require("stagehost.pipeline.runner").rerun(cli.state_dir(opts), pos[1],
    { failed = opts.failed, from = opts.from }, cli.load, run_options)
end

local function cmd_cancel(opts, pos)
  local r, store = stored_run(opts, pos[1], true)
  if r.status == "waiting" then
    store:close()
    errors.exit(2, "run %s waits for approval, detached: reject its gate to cancel it ('stagehost approve %s --reject --comment WHY --resume')", r.id, r.id)
  end
  if r.status ~= "running" then
    store:close()
    errors.exit(2, "run %s is not running (%s)", r.id, r.status)
  end
  store:request_cancel(r.id)
  store:close()
  print(("cancel requested for run %s (host pid %d)"):format(r.id, r.pid))
  return 0
end

local function cmd_prune(opts, _, _, _, cmd)
  local older
  if opts["older-than"] then
    older = require("stagehost.pipeline").seconds(opts["older-than"])
    if not older then usage(cmd, "--older-than wants a duration like 30d or 12h (got '%s')", opts["older-than"]) end
  end
  local dir = cli.state_dir(opts)
  if not require("stagehost.fs").exists(dir .. "/state.db") then print("nothing to prune in " .. dir) return 0 end
  local n = require("stagehost.pipeline.runner").prune(dir, older)
  print(("pruned %d run(s) and %d artifact(s), %d bytes"):format(n.runs, n.artifacts, n.bytes))
  return 0
end

local cmd_help -- below: it reads COMMANDS

-- Every command, in the order the help lists them. An entry: name, args (positionals: name,
-- help, missing = the line when it is not given, optional), options, summary (one line),
-- about (more), usage (when the generated synopsis would not say it), exits, handler(opts,
-- positionals, args, their indices, entry), hidden (not listed: a command that moved).
local COMMANDS = {
  { name = "run", args = { PIPELINE_ARG }, options = RUN_OPTIONS, exits = RUN_EXITS, handler = cmd_run,
    summary = "run a pipeline",
    about = "Runs the pipeline's stages in the order of their needs, concurrently where they can. "
      .. "Prints 'run ID' first, then each stage's lines, then a summary; records the run in the state "
      .. "directory. 'stagehost PIPELINE.lua [OPTIONS]' does the same." },
  { name = "graph", args = { PIPELINE_ARG }, exits = QUERY_EXITS, handler = cmd_graph,
    options = { opt("--format", "mermaid|dot|json", "the graph's format: mermaid (the default), dot or json",
      { choices = { mermaid = true, dot = true, json = true }, choices_text = "mermaid, dot or json" }) },
    summary = "print a pipeline's stages and their needs as a graph" },
  { name = "runs", args = {}, exits = QUERY_EXITS, handler = cmd_runs,
    options = { opt("--json", nil, "print the runs as a JSON array"), STATE },
    summary = "list the latest 50 runs" },
  { name = "status", args = { RUN_ARG }, exits = QUERY_EXITS, handler = cmd_status,
    options = { opt("--json", nil, "print the run's whole record as JSON"), STATE },
    summary = "show a run and each of its stages" },
  { name = "logs", args = { RUN_ARG, { name = "STAGE", optional = true, help = "only this stage's log" } },
    options = { STATE }, exits = QUERY_EXITS, handler = cmd_logs,
    summary = "print a run's stage logs" },
  { name = "resume", args = { RUN_ARG }, options = { STATE }, exits = RUN_EXITS, handler = cmd_resume,
    summary = "continue a run whose host died, or a detached run (run --detach) waiting for approval",
    about = "Finished stages are not run again and keep their outputs; a pending approval keeps its deadline "
      .. "and votes, and a deadline that passed meanwhile is a timeout." },
  { name = "rerun", args = { RUN_ARG }, exits = RUN_EXITS, handler = cmd_rerun,
    usage = "stagehost rerun RUN [--failed | --from S] [--state DIR]",
    options = {
      opt("--failed", nil, "run again only the stages that did not succeed; the others keep their outputs"),
      opt("--from", "S", "run again stage S and every stage after it; the stages before keep their outputs"),
      STATE },
    summary = "run a finished run again, as a new run linked to it",
    about = "Without --failed or --from every stage runs again, with the run's tag, env and variables." },
  { name = "cancel", args = { RUN_ARG }, options = { STATE }, exits = QUERY_EXITS, handler = cmd_cancel,
    summary = "ask the host running RUN to stop it",
    about = "The host stops the run's stages, runs its cleanup stages and records it as cancelled (its exit code is 3)." },
  { name = "prune", args = {}, exits = QUERY_EXITS, handler = cmd_prune,
    options = { opt("--older-than", "AGE", "remove the runs that ended more than AGE ago (like 30d or 12h; default 30d)"), STATE },
    summary = "remove old runs and expired artifacts",
    about = "Runs older than AGE go whole (their rows and files); expired artifacts of the runs kept go too." },
  -- approve and approvals: the command-line channel of approvals (stdlib/stagehost/approval/cli.lua);
  -- serve: the web page and Slack's callbacks (stdlib/stagehost/serve.lua). The parser, the help
  -- and `stagehost --help` pick them up from this table.
  { name = "approve", args = { RUN_ARG }, exits = RUN_EXITS, -- with --resume it runs the rest
    options = {
      opt("--reject", nil, "vote to reject (a rejection needs --comment)"),
      opt("--comment", "TEXT", "why: needed to reject, and for every vote on a gate with require_comment"),
      opt("--as", "NAME", "who votes (default: $GITHUB_ACTOR, else $USER, else the OS user)"),
      opt("--stage", "S", "the stage whose gate it is, when the run waits on more than one"),
      opt("--resume", nil, "when this vote decides the gate of a run no host runs (detached or interrupted), continue the run here, as 'stagehost resume' does"),
      STATE },
    summary = "approve (or reject) the approval a run is waiting for",
    about = "The vote is recorded in the state database, bound to the sha256 of what the gate shows "
      .. "(checklist, preview, commit, tag), and reaches the waiting host within a second; a run whose "
      .. "host died gets it when resumed. One vote per person: a later one replaces an earlier one. "
      .. "A vote that cannot count (not an approver, the run's own actor where the gate forbids it, "
      .. "a rejection without a reason, a decided gate) is refused with one line and changes nothing.",
    handler = function(opts, pos)
      return require("stagehost.approval.cli").approve(cli.state_dir(opts), pos[1], opts, function(id)
        return require("stagehost.pipeline.runner").resume(cli.state_dir(opts), id, cli.load, run_options)
      end)
    end },
  { name = "approvals", args = {}, exits = QUERY_EXITS,
    options = {
      opt("--audit", "RUN", "every event of RUN's gates (requested, reminded, voted, voided, decided) with who, channel and time, its hash chain checked"),
      opt("--json", nil, "print JSON instead of a table"),
      STATE },
    summary = "list the approvals waiting for a vote, or audit a run's",
    about = "Lists the pending gates of the state directory: run, stage, title, votes so far and required, "
      .. "time left, and whether the run's host is running. With --audit, an edited record (an event "
      .. "that no longer matches its hash) is shown where the chain breaks and ends with exit 2.",
    handler = function(opts) return require("stagehost.approval.cli").approvals(cli.state_dir(opts), opts) end },
  { name = "serve", args = {}, exits = QUERY_EXITS,
    options = {
      opt("--listen", "ADDR:PORT", "where to listen (default 127.0.0.1:8787: loopback only)"),
      opt("--trust-header", "NAME", "take the voter's name from this header, set by a proxy you trust (default: $STAGEHOST_TRUST_HEADER; none)"),
      opt("--public-url", "URL", "the address people reach the page at, for signed links (default: $STAGEHOST_PUBLIC_URL)"),
      STATE },
    summary = "serve the approval page (and Slack's callbacks), and continue detached runs",
    about = "Pending gates, each with its checklist, change set, commit, tag and votes, and a form to approve "
      .. "or reject with a comment. Voters come from the signed links of the approval.requested notification, "
      .. "or from --trust-header. With $SLACK_SIGNING_SECRET set, Slack's buttons post to /slack/interactive. "
      .. "Runs until stopped (Ctrl-C).",
    handler = function(opts) return require("stagehost.serve").run(cli.state_dir(opts), opts) end },
  { name = "help", args = { { name = "COMMAND", optional = true, help = "the command to explain" } }, options = {},
    exits = QUERY_EXITS, summary = "print the help of stagehost or of a command",
    handler = function(opts, pos) return cmd_help(opts, pos) end },
  { name = "artifacts", hidden = true, args = {}, options = {}, exits = QUERY_EXITS,
    handler = function(_, _, _, _, cmd)
      error(errors.new("usage", "'stagehost artifacts prune' is now 'stagehost prune [--older-than AGE]'; see 'stagehost help prune'",
        { exit_code = 2, command = cmd.name }), 0)
    end },
}

local BY_NAME, VISIBLE = {}, {}
for _, c in ipairs(COMMANDS) do
  BY_NAME[c.name] = c
  if not c.hidden then VISIBLE[#VISIBLE + 1] = c.name end
end
RUN_COMMAND = BY_NAME.run

cli.commands = COMMANDS
function cli.command(name) return BY_NAME[name] end

-- ---- help ----

local TOP_OPTIONS = {
  { "-e CODE", "run the Lua CODE first (repeatable; before the script or the command)" },
  { "--version", "print the version and exit" },
  { "-h, --help", "print this help and exit" },
  { "--", "end of options: the next argument is the script, even when named like a command" },
}

-- Words into lines of at most width columns; lines after the first start with indent.
local function wrap(words, width, indent)
  local lines, line = {}, ""
  for _, w in ipairs(words) do
    if line ~= "" and #line + 1 + #w > width then
      lines[#lines + 1] = line
      line = indent .. w
    else
      line = line == "" and w or (line .. " " .. w)
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

local function words_of(text) return require("stagehost.util.tables").matches(text, "%S+") end

-- The synopsis of a command, wrapped after `lead` (text before "NAME") and aligned after the
-- command's positionals: NAME ARGS [--opt V]... .
local function synopsis(cmd, lead)
  local words = cmd.usage and words_of(cmd.usage:gsub("^stagehost ", "")) or nil
  if not words then
    words = { cmd.name }
    for _, a in ipairs(cmd.args) do words[#words + 1] = a.optional and ("[" .. a.name .. "]") or a.name end
    for _, o in ipairs(cmd.options) do
      words[#words + 1] = "[" .. o.flag .. (o.metavar and (" " .. o.metavar) or "") .. "]" .. (o.repeatable and "..." or "")
    end
  end
  local head = lead .. table.remove(words, 1)
  while words[1] and not words[1]:find("^%[%-") do head = head .. " " .. table.remove(words, 1) end
  table.insert(words, 1, head)
  return wrap(words, 80, (" "):rep(#head + 1))
end

-- Two columns: a name, and its meaning wrapped beside it.
local function rows(list, width)
  local out, pad = {}, (" "):rep(width + 2)
  for _, r in ipairs(list) do
    local text = wrap(words_of(r[2]), 80 - #pad, ""):gsub("\n", "\n" .. pad)
    out[#out + 1] = (#r[1] < width) and ("  %-" .. width .. "s%s"):format(r[1], text)
      or ("  %s\n%s%s"):format(r[1], pad, text)
  end
  return table.concat(out, "\n")
end

local function exit_rows(codes)
  local list = {}
  for _, e in ipairs(EXIT_CODES) do
    for _, c in ipairs(codes) do
      if c == e[1] then list[#list + 1] = { tostring(e[1]), e[2] } end
    end
  end
  return rows(list, 6)
end

-- `stagehost help CMD`, `stagehost CMD --help`.
function cli.command_help(cmd)
  local out = { synopsis(cmd, "usage: stagehost "), "" }
  out[#out + 1] = wrap(words_of(cmd.summary:sub(1, 1):upper() .. cmd.summary:sub(2) .. "."
    .. (cmd.about and (" " .. cmd.about) or "")), 80, "")
  if #cmd.args > 0 then
    local list = {}
    for _, a in ipairs(cmd.args) do list[#list + 1] = { a.name, a.help } end
    out[#out + 1] = "\narguments:\n" .. rows(list, 20)
  end
  local list = {}
  for _, o in ipairs(cmd.options) do
    list[#list + 1] = { o.flag .. (o.metavar and (" " .. o.metavar) or ""), o.help }
  end
  list[#list + 1] = { "-h, --help", "print this help" }
  out[#out + 1] = "\noptions:\n" .. rows(list, 20)
  out[#out + 1] = "\nexit codes:\n" .. exit_rows(cmd.exits)
  return table.concat(out, "\n") .. "\n"
end

-- `stagehost --help`: every command with every option, the global options, the environment.
function cli.help()
  local out = {
    "usage: stagehost [-e CODE]... SCRIPT.lua [ARG]...",
    "       stagehost [-e CODE]... COMMAND [ARG]...",
    "       stagehost --version | --help | help COMMAND",
    "",
    wrap(words_of("SCRIPT.lua runs as a task on stagehost's event loop, with its arguments in arg and ... as "
      .. "lua(1) gives them; '-' reads the script from standard input. A script that returns "
      .. "pipeline.define{...} runs that pipeline, and its arguments are the options of 'run'."), 80, ""),
    "",
    "commands:",
  }
  for _, name in ipairs(VISIBLE) do
    local cmd = BY_NAME[name]
    out[#out + 1] = synopsis(cmd, "  ")
    out[#out + 1] = "        " .. cmd.summary
  end
  out[#out + 1] = "\n'stagehost help COMMAND' (or 'stagehost COMMAND --help') explains each option of a command."
  out[#out + 1] = "\noptions:\n" .. rows(TOP_OPTIONS, 14)
  out[#out + 1] = "\nenvironment:\n" .. rows({
    { "STAGEHOST_PATH", "the directory holding the Lua library (stagehost/init.lua)" },
    { "STAGEHOST_STATE_DIR", "the state directory when --state is not given (default .stagehost)" },
    { "STAGEHOST_STATE_TIMEOUT", "ms to wait for a state database another process has locked (5000)" },
    { "STAGEHOST_STATE_KEY", "the key that seals secrets in the state (else DIR/state.key)" },
    { "STAGEHOST_LOG_LEVEL", "debug, info (the default), warn, error or off" },
    { "STAGEHOST_GC_STRESS", "1: a full garbage collection after every resume (hunting lifetime bugs)" },
    { "STAGEHOST_CHECK_HANDLES", "1: exit 70 when a libuv handle is left open at exit" },
  }, 25)
  out[#out + 1] = "\nexit codes:\n" .. exit_rows(RUN_EXITS)
  return table.concat(out, "\n") .. "\n"
end

cmd_help = function(_, pos)
  local name = pos[1]
  if not name then io.stdout:write(cli.help()) return 0 end
  local cmd = BY_NAME[name]
  if cmd and cmd.hidden then cmd.handler(nil, nil, nil, nil, cmd) end
  if not cmd then usage(BY_NAME.help, "no command '%s'%s", name, which_command(name, VISIBLE)) end
  io.stdout:write(cli.command_help(cmd))
  return 0
end

-- ---- dispatch ----

-- Prints cmd's help when args ask for it (-h or --help before any `--`); whether they did.
cmd_help_of = function(cmd, args)
  for _, a in ipairs(args) do
    if a == "--" then return false end
    if a == "--help" or a == "-h" then
      io.stdout:write(cli.command_help(cmd))
      return true
    end
  end
  return false
end

-- `stagehost CMD ARGS...`
local function run_command(cmd, args)
  if cmd.hidden then return cmd.handler(nil, nil, args, nil, cmd) end
  if cmd_help_of(cmd, args) then return 0 end
  local opts, pos, at = parse(cmd, args)
  check_args(cmd, pos)
  return cmd.handler(opts, pos, args, at, cmd)
end

cli.run_command = run_command
cli.usage = usage
function cli.which_command(word) return which_command(word, VISIBLE) end
cli.did_you_mean = did_you_mean

return cli
