-- Markdown for GitHub's job summary ($GITHUB_STEP_SUMMARY): a heading with the run's status, one
-- line of facts, the stage graph in mermaid with the statuses coloured, a row per stage.
local pipeline = require("stagehost.pipeline")
local statuses = require("stagehost.util.status")
local time = require("stagehost.util.time")
local text = require("stagehost.pipeline.report.text")
local view = require("stagehost.pipeline.report.view")

local markdown = {}

local md = text.md
local fmt_duration = time.duration_fine

-- markdown.summary(run, p) -> the job summary of a run.
function markdown.summary(run, p)
  local names = view.stage_names(run, p)
  local out, w = text.buffer()
  w(("## %s %s: %s\n\n"):format(statuses.heading[run.status] or "•", md(run.pipeline or (p and p.name) or "pipeline"),
    md(run.status or "pending")))
  local facts = { ("run %s"):format(md(run.id)) }
  if run.tag then facts[#facts + 1] = "tag " .. md(run.tag) end
  if run.env then facts[#facts + 1] = "env " .. md(run.env) end
  if run.actor then facts[#facts + 1] = "by " .. md(run.actor) end
  if run.started_at then facts[#facts + 1] = "started " .. md(time.human(run.started_at)) end
  local total = view.total_duration(run, names)
  if total then facts[#facts + 1] = "took " .. md(fmt_duration(total)) end
  w(table.concat(facts, " · ") .. "\n\n")
  if p then
    local by_stage = {}
    for _, n in ipairs(names) do by_stage[n] = view.record(run, n).status end
    w("```mermaid\n" .. text.clean(pipeline.mermaid(p, by_stage)) .. "```\n\n")
  end
  w("| stage | status | started | duration | note |\n|---|---|---|---|---|\n")
  for _, n in ipairs(names) do
    local rec = view.record(run, n)
    local note = view.outcome_notes(rec, md)
    if rec.allowed_failure then note[#note + 1] = "allowed to fail" end
    if (rec.attempts or 0) > 1 then note[#note + 1] = ("%d attempts"):format(rec.attempts) end
    note[#note + 1] = view.tests_note(rec)
    w(("| %s | %s %s | %s | %s | %s |\n"):format(md(n), statuses.symbol[rec.status] or "", md(rec.status or "pending"),
      time.clock(rec.started_at), fmt_duration(rec.duration), table.concat(note, "; ")))
  end
  w("\n")
  -- what the stages wrote for the summary (ctx:summary), in stage order
  for _, n in ipairs(names) do
    for _, a in ipairs(view.record(run, n).artifacts or {}) do
      if a.name == "summary.md" and run.dir and a.file then
        local f = io.open(run.dir .. "/" .. a.file, "r") -- small and local: the summary is the run's last write
        if f then
          w((text.clean(f:read("a") or ""):gsub("\n*$", "\n\n")))
          f:close()
        end
      end
    end
  end
  return table.concat(out)
end

return markdown
