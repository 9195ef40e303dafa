-- Reports of a run, written when it ends: report.html (a self-contained page: header, stage
-- graph, timeline, stages, tests, artifacts), junit.xml from the stages' outputs.tests, and
-- markdown appended to GitHub's job summary. The writers live in report/: text.lua (masking and
-- escaping, which every text taken from the run goes through), view.lua (the run as the reports
-- see it), svg.lua (graph and timeline), html.lua, junit.lua, markdown.lua.
local fs = require("stagehost.fs")
local time = require("stagehost.util.time")
local text = require("stagehost.pipeline.report.text")
local html = require("stagehost.pipeline.report.html")
local junit = require("stagehost.pipeline.report.junit")
local markdown = require("stagehost.pipeline.report.markdown")

local report = {}

-- report.clean(v) -> v as text, masked and without bytes a parser refuses.
report.clean = text.clean

-- report.epoch(iso) -> seconds since the epoch of an ISO 8601 time, or nil.
report.epoch = time.parse_iso8601

-- report.html(run, p) -> string: one page that works offline from the run's directory.
report.html = html.page

-- report.junit(run) -> string, or nil when no stage reported outputs.tests.
report.junit = junit.xml

-- report.github_summary(run, p) -> markdown for $GITHUB_STEP_SUMMARY.
report.github_summary = markdown.summary

-- Writes one report file and notes its path in written; nil, message when it cannot.
local function put(written, path, content)
  local ok, err = fs.write(path, content)
  if not ok then return nil, ("cannot write %s: %s"):format(path, err) end
  written[#written + 1] = path
  return true
end

-- report.write_all(run, p) -> list of paths written, or nil, message. report.html and junit.xml
-- go beside run.json; the summary is appended, as GitHub expects of every step.
function report.write_all(run, p)
  local written = {}
  if run.dir then
    local ok, err = put(written, run.dir .. "/report.html", report.html(run, p))
    if not ok then return nil, err end
    local xml, path = report.junit(run), run.dir .. "/junit.xml"
    if xml then
      ok, err = put(written, path, xml)
      if not ok then return nil, err end
    elseif fs.exists(path) then
      fs.remove(path) -- a resumed run that no longer has tests must not keep an old verdict
    end
  end
  local summary = os.getenv("GITHUB_STEP_SUMMARY")
  if summary and summary ~= "" then
    local f, err = io.open(summary, "a")
    if not f then return nil, ("cannot append to GITHUB_STEP_SUMMARY: %s"):format(err) end
    local ok, werr = f:write(report.github_summary(run, p))
    f:close()
    if not ok then return nil, ("cannot append to GITHUB_STEP_SUMMARY: %s"):format(werr) end
    written[#written + 1] = summary
  end
  return written
end

return report
