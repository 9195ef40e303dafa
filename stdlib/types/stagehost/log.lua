---@meta stagehost.log
-- LuaLS annotations for `require "stagehost.log"` (bindings/log.c and stdlib/stagehost/log.lua).
-- Definitions only: this file is never loaded by stagehost.

---@alias stagehost.log.Level "debug"|"info"|"warn"|"error"|"off"

---A task's log context (`log.bind`).
---@class stagehost.log.Context
local Context = {}

---The latest line logged under it (masked), or "".
---@return string
function Context:last() end

---Leveled, timestamped log lines on stderr, with secrets masked.
---@class stagehost.log
local log = {}

---Arguments are joined with spaces, like print.
---@param ... any
function log.debug(...) end

---@param ... any
function log.info(...) end

---@param ... any
function log.warn(...) end

---@param ... any
function log.error(...) end

---Masks a value from now on, everywhere stagehost writes (at least 4 characters).
---@generic S: string
---@param secret S
---@return S secret
function log.mask(secret) end

---The current level; with a name, sets it first.
---@param name? stagehost.log.Level
---@return stagehost.log.Level
function log.level(name) end

---s with every registered secret replaced by ***.
---@param s string
---@return string
function log.masked(s) end

---The registered secrets that occur in s, each once, longest first.
---@param s string
---@return string[]
function log.secrets_in(s) end

---Gives the running task (and the tasks it spawns from then on) a log context: its lines carry
---`[prefix]` on the console and also go to `file`.
---@param prefix? string
---@param file? string
---@return stagehost.log.Context
function log.bind(prefix, file) end

---A value naming the running task's log context, the same for every task sharing it (the
---stage's task and the tasks it spawned); nil when it has none.
---@return lightuserdata?
function log.context_id() end

---Children's output on the console whatever the level.
---@param on boolean
function log.echo_output(on) end

---Off while a live view owns the screen (files still get everything).
---@param on boolean
function log.console(on) end

---Is standard output a terminal that can redraw (not TERM=dumb)?
---@return boolean
function log.isatty() end

---Off: lines of tasks whose log context has a file go to that file only.
---@param on boolean
---@return boolean previous
function log.context_console(on) end

---A folded section (`::group::` under GitHub Actions); returns fn's results, errors pass through.
---@param name string
---@param fn fun(...): ...
---@param ... any
---@return any ...
function log.group(name, fn, ...) end

return log
