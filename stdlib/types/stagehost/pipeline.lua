---@meta stagehost.pipeline
-- LuaLS annotations for `require "stagehost.pipeline"` (stdlib/stagehost/pipeline.lua): a
-- pipeline file returns pipeline.define{...}. `stagehost.Ctx` and `stagehost.RunView` are in
-- ctx.lua beside this file. Definitions only: this file is never loaded by stagehost.

---Seconds, or like "500ms", "10s", "30m", "24h", "1h30m".
---@alias stagehost.pipeline.Duration number|string

---When a stage runs: "success" (default: every need succeeded), "failure" (anything before
---it failed), "always" (its needs ended, also after a cancellation), "cancelled" (the run was
---cancelled), a decision file ("decisions/x.lua", returning function(run) -> boolean) or a
---decision function.
---@alias stagehost.pipeline.When "success"|"failure"|"always"|"cancelled"|string|stagehost.DecisionFunction

---@class stagehost.pipeline.Trigger
---@field tags? string|string[] patterns like "rc-*" (GitHub's: * is anything but /, ** anything, ? one character)
---@field branches? string|string[] branches whose GitHub Actions pushes run it
---@field manual? boolean runs by hand allowed (default true)

---@class stagehost.pipeline.ConcurrencySpec
---@field group string|fun(run: stagehost.RunView): string
---@field cancel_in_progress? boolean cancel the older run instead of waiting

---A group name, a function(run) -> group, or a spec, as in GitHub Actions.
---@alias stagehost.pipeline.Concurrency string|fun(run: stagehost.RunView): string|stagehost.pipeline.ConcurrencySpec

---A stage of `pipeline.define{stages = {...}}`. Unknown fields are load errors.
---@class stagehost.pipeline.StageSpec
---@field name string letters, digits, '-', '_' or '.'
---@field run string|stagehost.StageFunction a file relative to the pipeline returning function(ctx), or a function
---@field needs? string|string[] stage names
---@field when? stagehost.pipeline.When
---@field timeout? stagehost.pipeline.Duration
---@field retry? integer extra attempts
---@field continue_on_error? boolean its failure does not fail the run
---@field concurrency? stagehost.pipeline.Concurrency
---@field gate? boolean an approval gate: never skipped by --from/--only/rerun unless it passed for the same commit
---@field description? string

---What `pipeline.define` takes. Unknown fields are load errors.
---@class stagehost.pipeline.Spec
---@field name string
---@field stages stagehost.pipeline.StageSpec[]
---@field description? string
---@field trigger? stagehost.pipeline.Trigger
---@field env? table<string, string|number|boolean> reaches every process the stages start, and ctx.env
---@field concurrency? stagehost.pipeline.Concurrency
---@field cleanup_timeout? stagehost.pipeline.Duration bounds the cleanup of a cancelled run (default "5m")
---@field notify? stagehost.notify.ChannelConfig[] the channels of its notifications
---@field auto_approve? boolean `run --auto-approve` is taken without --sandbox (a development pipeline)

---A checked stage.
---@class stagehost.pipeline.Stage
---@field name string
---@field index integer
---@field needs string[]
---@field dependents string[]
---@field when "success"|"failure"|"always"|"cancelled"|"decision"
---@field decision? stagehost.DecisionFunction
---@field decision_name? string
---@field run? stagehost.StageFunction
---@field run_file? string
---@field run_name? string
---@field timeout? number seconds
---@field timeout_text? string
---@field retry integer
---@field continue_on_error boolean
---@field gate boolean
---@field concurrency? {group: string|function, cancel_in_progress: boolean}
---@field description? string

---A checked pipeline (`pipeline.define`'s result).
---@class stagehost.pipeline.Pipeline
---@field name string
---@field description? string
---@field trigger {manual: boolean, tags?: string[], branches?: string[]}
---@field stages stagehost.pipeline.Stage[]
---@field by_name table<string, stagehost.pipeline.Stage>
---@field file string
---@field dir string
---@field where string "file:line" of the define
---@field env table<string, string>
---@field concurrency? {group: string|function, cancel_in_progress: boolean}
---@field cleanup_timeout number seconds

---@class stagehost.pipeline
---@field loading? string the file being loaded as a pipeline (set by the loader)
local pipeline = {}

---Checks a pipeline when its file loads; every mistake is one line with file:line, exit 2.
---@param spec stagehost.pipeline.Spec
---@return stagehost.pipeline.Pipeline
function pipeline.define(spec) end

---Is value a pipeline made by `define`?
---@param value any
---@return boolean
function pipeline.is(value) end

---A duration in seconds; nil when unreadable.
---@param value stagehost.pipeline.Duration
---@return number?
function pipeline.seconds(value) end

---Does s match a tag or branch pattern as GitHub Actions reads it?
---@param pattern string
---@param s string
---@return boolean
function pipeline.glob_match(pattern, s) end

---Nil when the run may start, else why not.
---@param p stagehost.pipeline.Pipeline
---@param facts {tag?: string, branch?: string, manual?: boolean}
---@return string?
function pipeline.trigger_refusal(p, facts) end

---The candidate within two edits of word ("did you mean").
---@param word string
---@param candidates string[]
---@param strict? boolean also fewer edits than half the word
---@return string?
function pipeline.closest(word, candidates, strict) end

---Raises a configuration error: one line "where: message", exit 2.
---@param where string
---@param fmt string
---@param ... any
function pipeline.config_error(where, fmt, ...) end

---The stages as a mermaid graph; statuses colours the nodes.
---@param p stagehost.pipeline.Pipeline
---@param statuses? table<string, stagehost.StageState>
---@return string
function pipeline.mermaid(p, statuses) end

---The stages as a Graphviz dot graph.
---@param p stagehost.pipeline.Pipeline
---@return string
function pipeline.dot(p) end

---The pipeline as plain data (`stagehost graph --format json`).
---@param p stagehost.pipeline.Pipeline
---@return table
function pipeline.describe(p) end

---Runs the pipeline as `stagehost FILE.lua [args]` does.
---@param p stagehost.pipeline.Pipeline
---@param args? string[]
---@return any
function pipeline.main(p, args) end

return pipeline
