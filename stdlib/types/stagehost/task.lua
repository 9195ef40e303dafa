---@meta stagehost.task
-- LuaLS annotations for `require "stagehost.task"` (bindings/task.c + stdlib/stagehost/task.lua).
-- Definitions only: this file is never loaded by stagehost.

---What a task is doing, or how it ended.
---@alias stagehost.task.Status "running"|"success"|"failure"|"cancelled"

---The error a cancelled task (or one whose `task.timeout` passed) unwinds with; `tostring(err)`
---is the reason. `pcall` and to-be-closed variables see it.
---@class stagehost.task.Cancellation
---@field kind "cancelled"|"timeout"
---@field reason string

---What is alive, for leak checks.
---@class stagehost.task.Stats
---@field tasks integer
---@field timers integer
---@field handles integer

---A task: a coroutine on the event loop.
---@class stagehost.task.Task
local Task = {}

---Waits until the task ends: `true, results...`, or `false, err, traceback`. Join as often as you like.
---@return boolean ok
---@return any ...
function Task:join() end

---Cancels the task: what it waits on is aborted and it unwinds with a cancellation error.
---@param reason? string default "cancelled"
---@return boolean cancelled false when the task had already ended
function Task:cancel(reason) end

---@return stagehost.task.Status
function Task:status() end

---Tasks: spawn, join, cancel, sleep, timeout, all.
---@class stagehost.task
local task = {}

---Starts `fn(...)` as a task; it runs on the loop's next turn.
---@param fn fun(...): ...
---@param ... any
---@return stagehost.task.Task
function task.spawn(fn, ...) end

---`task.join(t)` is `t:join()`.
---@param t stagehost.task.Task
---@return boolean ok
---@return any ...
function task.join(t) end

---`task.cancel(t [, reason])` is `t:cancel(reason)`.
---@param t stagehost.task.Task
---@param reason? string
---@return boolean cancelled
function task.cancel(t, reason) end

---Waits `seconds` (a fraction is fine) without blocking the loop; only inside a task.
---@param seconds number
function task.sleep(seconds) end

---Monotonic seconds.
---@return number
function task.now() end

---Runs `fn(...)` in this task with a deadline: `true, results...` if it finished in time, or
---`false, "timeout"` when the deadline passed (the pending primitive is aborted and `fn`
---unwinds). Errors raised by `fn` propagate. Timeouts nest.
---@param seconds number
---@param fn fun(...): ...
---@param ... any
---@return boolean in_time
---@return any ...
function task.timeout(seconds, fn, ...) end

---The running task, or nil outside one.
---@return stagehost.task.Task?
function task.current() end

---@return stagehost.task.Stats
function task.stats() end

---Runs an array or a map of functions concurrently and returns their first results in the same
---shape once all have ended. If some raised, raises after all ended, naming each failure.
---@generic K
---@param fns table<K, fun(): any>
---@return table<K, any>
function task.all(fns) end

return task
