---@meta _
-- LuaLS annotations for what a stage gets, `ctx` (stdlib/stagehost/pipeline/ctx.lua), and what
-- a decision gets, `run` (Run:view in stdlib/stagehost/pipeline/run.lua). There is no module
-- to require: annotate the function a stage file returns,
--
--   ---@param ctx stagehost.Ctx
--   return function(ctx) ... end
--
-- or a decision's, `---@param run stagehost.RunView`. A function given inline as a stage's
-- `run` or `when` in pipeline.define{...} gets these types without annotations.
-- Definitions only: this file is never loaded by stagehost.

---How a stage ended.
---@alias stagehost.StageStatus "success"|"failure"|"skipped"|"cancelled"

---A stage's status while the run goes on: one that has not ended is pending or running, or
---waiting (its approval gate waits while the run is detached: run --detach).
---@alias stagehost.StageState stagehost.StageStatus|"pending"|"running"|"waiting"

---A stage as `ctx.stages[name]` and a decision's `run.stages[name]` show it (read-only).
---@class stagehost.StageView
---@field status stagehost.StageState
---@field outputs? table what the stage returned
---@field error? string why it failed (first line)
---@field reason? string why it was skipped or cancelled
---@field started? string ISO 8601
---@field finished? string ISO 8601
---@field duration? number seconds
---@field attempts integer
---@field reused_from? string the run whose outputs it reused (rerun, --from, --only)

---`ctx.run`: this run.
---@class stagehost.RunInfo
---@field id string
---@field tag? string --tag, or the tag of GITHUB_REF
---@field env? string --env
---@field actor? string --actor, else GITHUB_ACTOR, else the OS user
---@field pipeline string the pipeline's name
---@field sandbox? boolean run with --sandbox
---@field attempt integer 1, then 2, 3 ... for reruns
---@field commit? string GITHUB_SHA, else the pipeline's git HEAD
---@field dir? string the run's directory (logs, artifacts)

---`ctx.pipeline`.
---@class stagehost.PipelineInfo
---@field name string
---@field file string
---@field dir string

---@class stagehost.ArtifactOptions
---@field retention_days? number 0 to 36500 (default 30)

---What a stage script gets.
---@class stagehost.Ctx
---@field stage string this stage's name
---@field run stagehost.RunInfo
---@field vars table<string, string> the --var NAME=VALUE variables
---@field env table<string, string> the pipeline's env = {...}
---@field outputs table<string, table> the outputs of a stage that ended (read-only)
---@field stages table<string, stagehost.StageView> every stage (read-only)
---@field log stagehost.log the log module; its lines go to the console with [stage] and to the stage's log
---@field pipeline stagehost.PipelineInfo
---@field dir? string this run's directory
local Ctx = {}

---Stores a string, or a table as JSON, masked, as runs/ID/artifacts/STAGE/NAME, with its
---sha256 in the state.
---@param name string a file name without '/' and not starting with '.'
---@param content string|table
---@param opts? stagehost.ArtifactOptions
---@return string path
function Ctx:artifact(name, content, opts) end

---The stage's part of the job summary ($GITHUB_STEP_SUMMARY), shown below the table of stages;
---kept as its artifact summary.md (masked); a second call replaces the first.
---@param markdown string
---@return string path
function Ctx:summary(markdown) end

---With a value, stores it at once (and returns it); without, reads it back, also after a resume.
---@param key string
---@param value? any
---@return any
function Ctx:checkpoint(key, value) end

---Ends the whole run as cancelled (exit 3); `when = "always"`/`"cancelled"` stages still run.
---@param reason? string
function Ctx:cancel(reason) end

---The stage waits for a person: the live view shows the whole text; `ctx:waiting(nil)` ends it.
---@param text string?
function Ctx:waiting(text) end

---What a decision gets.
---@class stagehost.RunView
---@field id string
---@field tag? string
---@field env? string
---@field vars table<string, string>
---@field actor? string
---@field pipeline string
---@field attempt integer
---@field cancelled boolean the run is being cancelled
---@field stages table<string, stagehost.StageView>

---A stage: `return function(ctx) ... end`; what it returns (plain data) becomes its outputs.
---@alias stagehost.StageFunction fun(ctx: stagehost.Ctx): table?

---A decision: `return function(run) ... end`.
---@alias stagehost.DecisionFunction fun(run: stagehost.RunView): boolean
