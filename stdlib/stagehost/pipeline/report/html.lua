-- The report's HTML page: header, stage graph, timeline, stages, tests that did not pass,
-- artifacts and outputs, in one file that loads nothing and runs nothing (a strict CSP), so it
-- opens offline from the run's directory and survives being mailed around.
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local statuses = require("stagehost.util.status")
local time = require("stagehost.util.time")
local text = require("stagehost.pipeline.report.text")
local view = require("stagehost.pipeline.report.view")
local svg = require("stagehost.pipeline.report.svg")

local html = {}

local clean, esc, url_segment = text.clean, text.esc, text.url_segment
local record, tests_of, case_kind = view.record, view.tests_of, view.case_kind
local fmt_duration, human_time, clock = time.duration_fine, time.human, time.clock

local function basename(path)
  return tostring(path):match("([^/]*)$")
end

local function human_size(n)
  if type(n) ~= "number" then return "" end
  if n < 1024 then return ("%d B"):format(n) end
  if n < 1024 * 1024 then return ("%.1f KiB"):format(n / 1024) end
  if n < 1024 ^ 3 then return ("%.1f MiB"):format(n / 1024 ^ 2) end
  return ("%.1f GiB"):format(n / 1024 ^ 3)
end

-- a badge per status, in the shared status colours
local STATUS_CSS = {}
for _, s in ipairs(statuses.ORDER) do
  STATUS_CSS[#STATUS_CSS + 1] = (".status-%s { background: %s; border-color: %s; color: %s; }\n"):format(s,
    statuses.fill[s], statuses.stroke[s], statuses.text[s])
end
STATUS_CSS = table.concat(STATUS_CSS)

local CSS = [[
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; background: #ffffff; color: #1f2328;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 17px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
a { color: #0969da; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; border: 1px solid; font-size: 13px;
  font-weight: 600; white-space: nowrap; }
]] .. STATUS_CSS .. [[
.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 6px 24px; margin: 14px 0 0; }
.meta div { min-width: 0; }
.meta dt { font-size: 11.5px; text-transform: uppercase; letter-spacing: .04em; color: #656d76; }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px; background: #ffffff; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font-family: inherit; }
.node-name { font-size: 13px; font-weight: 600; fill: #1f2328; }
.node-status { font-size: 11.5px; }
.node-when { font-size: 10.5px; font-style: italic; fill: #656d76; }
.row-label { font-size: 12px; fill: #1f2328; text-anchor: end; }
.tick { font-size: 11px; fill: #656d76; }
.bar-label { font-size: 11px; fill: #1f2328; }
.muted { fill: #656d76; color: #656d76; font-style: italic; }
.legend { font-size: 12px; color: #656d76; margin-top: 6px; display: flex; gap: 18px; flex-wrap: wrap; }
.legend svg { display: inline-block; vertical-align: middle; margin-right: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #656d76; background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.nowrap, td.name { white-space: nowrap; }
td.note-cell { min-width: 16em; }
.table-scroll { overflow-x: auto; }
.note { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.sha { font-size: 11.5px; overflow-wrap: anywhere; color: #424a53; }
details { margin: 6px 0; }
summary { cursor: pointer; }
pre.outputs { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 8px 10px; overflow: auto;
  max-height: 360px; margin: 6px 0 0; }
footer { margin-top: 36px; color: #656d76; font-size: 12px; }
]]

-- Opens a table (open: its tag, and what wraps it) with its header row; rows and "</tbody>" follow.
local function table_open(w, open, headers)
  w(open, "\n<thead><tr>")
  for _, h in ipairs(headers) do w("<th>", h, "</th>") end
  w("</tr></thead>\n<tbody>\n")
end

local function badge(status, label)
  local s = statuses.known(status)
  return ('<span class="badge status-%s">%s %s</span>'):format(s, statuses.symbol[s], esc(label or status))
end

local function legend()
  local items = {
    { "success", "needs succeeded", "" },
    { "failure", "when failure", ' stroke-dasharray="6 4"' },
    { "always", "when always", ' stroke-dasharray="6 4"' },
    { "decision", "if a decision says so", ' stroke-dasharray="6 4"' },
  }
  local out = { '<div class="legend">' }
  for _, it in ipairs(items) do
    out[#out + 1] = ('<span><svg width="30" height="10" viewBox="0 0 30 10"><line x1="0" y1="5" x2="30" y2="5" '
      .. 'stroke="%s" stroke-width="1.6"%s/></svg>%s</span>'):format(svg.EDGE_COLOUR[it[1]], it[3], it[2])
  end
  for _, s in ipairs({ "success", "failure", "skipped", "cancelled", "running" }) do
    out[#out + 1] = badge(s)
  end
  out[#out + 1] = "</div>"
  return table.concat(out)
end

local function encode_outputs(outputs)
  local ok, encoded = pcall(json.encode, outputs, { pretty = true })
  if not ok then encoded = tostring(outputs) end
  if #encoded > 16000 then encoded = encoded:sub(1, 16000) .. "\n… (cut at 16000 bytes)" end
  return encoded
end

-- <head>: the title, the styles, and a policy under which nothing loads or runs, whatever a
-- stage managed to put into the page.
local function head(w, run, p)
  local title = ("%s — run %s — %s"):format(clean(run.pipeline or (p and p.name) or "pipeline"), clean(run.id),
    clean(run.status))
  w('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    [[<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">]],
    "\n<title>", esc(title), "</title>\n<style>\n", CSS, "</style>\n</head>\n<body>\n")
end

-- The run's name and status, then its facts: id, tag, environment, times, vars.
local function header(w, run, p, names)
  local total = view.total_duration(run, names)
  w("<header>\n<h1>", esc(run.pipeline or (p and p.name) or "pipeline"), " ", badge(run.status or "pending"), "</h1>\n")
  w('<dl class="meta">')
  local function meta(label, value, mono)
    if value == nil or value == "" then return end
    w("<div><dt>", label, "</dt><dd", mono and ' class="mono"' or "", ">", esc(value), "</dd></div>")
  end
  meta("run", run.id, true)
  meta("tag", run.tag, true)
  meta("environment", run.env)
  meta("actor", run.actor)
  meta("started", human_time(run.started_at))
  meta("finished", human_time(run.finished_at))
  meta("duration", total and fmt_duration(total))
  meta("pipeline file", run.file or (p and p.file), true)
  local vars = type(run.vars) == "table" and run.vars or {}
  local var_keys = {}
  for k in pairs(vars) do var_keys[#var_keys + 1] = k end
  table.sort(var_keys, function(a, b) return tostring(a) < tostring(b) end)
  if #var_keys > 0 then
    local lines = {}
    for _, k in ipairs(var_keys) do lines[#lines + 1] = esc(k) .. "=" .. esc(vars[k]) end
    w('<div><dt>vars</dt><dd class="mono">', table.concat(lines, "<br>"), "</dd></div>")
  end
  w("</dl>\n</header>\n")
end

-- A row per stage: status, start, duration, attempts, what went wrong, its log.
local function stages_table(w, run, names)
  w("<h2>Stages</h2>\n")
  table_open(w, '<div class="table-scroll"><table class="stages">',
    { "Stage", "Status", "Started", "Duration", "Attempts", "Error / reason", "Log" })
  for _, n in ipairs(names) do
    local rec = record(run, n)
    local note = view.outcome_notes(rec, esc)
    if rec.allowed_failure then note[#note + 1] = '<span class="muted">allowed to fail (continue_on_error)</span>' end
    note[#note + 1] = view.tests_note(rec)
    local log_cell = '<span class="muted">none</span>'
    local log_path = run.dir and (run.dir .. "/logs/" .. n .. ".log")
    -- a stage that never ran (not selected, skipped before its start) has no log file
    if not log_path or fs.exists(log_path) then
      log_cell = ('<a href="logs/%s.log">%s.log</a>'):format(url_segment(n), esc(n))
    end
    w(('<tr id="stage-%s"><td class="name"><strong>%s</strong></td><td class="nowrap">%s</td><td class="nowrap">%s</td>'
      .. '<td class="num">%s</td><td class="num">%s</td><td class="note-cell"><div class="note">%s</div></td>'
      .. '<td class="nowrap">%s</td></tr>\n'):format(
      url_segment(n), esc(n), badge(rec.status or "pending"), esc(clock(rec.started_at)), esc(fmt_duration(rec.duration)),
      (rec.attempts or 0) > 0 and tostring(rec.attempts) or "", table.concat(note, "\n"), log_cell))
  end
  w("</tbody>\n</table></div>\n")
end

-- The test cases that did not pass, when any stage reported tests.
local function tests_section(w, run, names)
  local failed_cases, any_tests = {}, false
  for _, n in ipairs(names) do
    for _, c in ipairs(tests_of(record(run, n)) or {}) do
      any_tests = true
      if case_kind(c) ~= "passed" then failed_cases[#failed_cases + 1] = { stage = n, case = c } end
    end
  end
  if not any_tests then return end
  w('<h2>Tests</h2>\n<p>JUnit XML: <a href="junit.xml">junit.xml</a></p>\n')
  if #failed_cases == 0 then
    w("<p>Every test passed.</p>\n")
    return
  end
  table_open(w, "<table>", { "Stage", "Test", "Status", "Time", "Message" })
  for _, fc in ipairs(failed_cases) do
    local c, k = fc.case, case_kind(fc.case)
    local shown = k == "skipped" and "skipped" or "failure"
    w(("<tr><td>%s</td><td>%s%s</td><td>%s</td><td class=\"num\">%s</td><td><div class=\"note\">%s</div></td></tr>\n"):format(
      esc(fc.stage), c.classname and (esc(c.classname) .. " › ") or "", esc(c.name or "(unnamed)"),
      badge(shown, k == "error" and "error" or (k == "failure" and "failed" or "skipped")),
      type(c.time) == "number" and esc(fmt_duration(c.time)) or "", esc(c.message or "")))
  end
  w("</tbody>\n</table>\n")
end

-- Every stage's artifacts, linked: artifacts/STAGE/NAME (older records: artifacts/FILE).
local function artifacts_section(w, run, names)
  w("<h2>Artifacts</h2>\n")
  -- a retried stage stores its artifact again under the same path: one row, the newest entry
  local arts, at = {}, {}
  for _, n in ipairs(names) do
    for _, a in ipairs(record(run, n).artifacts or {}) do
      local key = tostring(a.stage) .. "\0" .. tostring(a.name)
      if at[key] then arts[at[key]] = a else arts[#arts + 1], at[key] = a, #arts + 1 end
    end
  end
  if #arts == 0 then
    w('<p class="muted">No artifacts.</p>\n')
    return
  end
  table_open(w, "<table>", { "Artifact", "Stage", "Size", "SHA-256", "Created" })
  for _, a in ipairs(arts) do
    local href = a.file and a.file:gsub("[^/]+", url_segment)
      or ("artifacts/" .. url_segment(basename(a.path or a.name or "")))
    w(('<tr><td><a href="%s">%s</a></td><td>%s</td><td class="num">%s</td><td class="mono sha">%s</td>'
      .. '<td class="nowrap">%s</td></tr>\n'):format(href, esc(a.name or a.file), esc(a.stage),
      esc(human_size(a.size)), esc(a.sha256), esc(human_time(a.created_at))))
  end
  w("</tbody>\n</table>\n")
end

-- What each stage returned, folded, as JSON.
local function outputs_section(w, run, names)
  local with_outputs = {}
  for _, n in ipairs(names) do
    local o = record(run, n).outputs
    if type(o) == "table" and next(o) ~= nil then with_outputs[#with_outputs + 1] = n end
  end
  if #with_outputs == 0 then return end
  w("<h2>Outputs</h2>\n")
  for _, n in ipairs(with_outputs) do
    w("<details><summary><strong>", esc(n), '</strong></summary><pre class="outputs">',
      esc(encode_outputs(record(run, n).outputs)), "</pre></details>\n")
  end
end

-- html.page(run, p) -> string: one page that works offline, from the run's directory (links are
-- relative: logs/STAGE.log, artifacts/STAGE/NAME, junit.xml).
function html.page(run, p)
  local names = view.stage_names(run, p)
  local out, w = text.buffer()
  head(w, run, p)
  header(w, run, p, names)
  w('<h2>Job dependencies</h2>\n<div class="scroll">', svg.graph(run, p, names), "</div>\n", legend(), "\n")
  w('<h2>Timeline</h2>\n<div class="scroll">', svg.timeline(run, names), "</div>\n")
  stages_table(w, run, names)
  tests_section(w, run, names)
  artifacts_section(w, run, names)
  outputs_section(w, run, names)
  w("<footer>Generated by stagehost at ", esc(human_time(time.now_iso())),
    ". Links are relative to the run's directory.</footer>\n</body>\n</html>\n")
  return table.concat(out)
end

return html
