---@meta stagehost.proc
-- LuaLS annotations for `require "stagehost.proc"` (bindings/proc.c, bindings/proc_spawn.c and
-- stdlib/stagehost/proc.lua). Definitions only: this file is never loaded by stagehost.

---@alias stagehost.proc.Stream "stdout"|"stderr"

---A signal for `h:kill`, with or without the "SIG" prefix, or a number.
---@alias stagehost.proc.Signal "TERM"|"KILL"|"INT"|"HUP"|"QUIT"|"USR1"|"USR2"|"CONT"|"STOP"|"SIGTERM"|"SIGKILL"|"SIGINT"|"SIGHUP"|"SIGQUIT"|"SIGUSR1"|"SIGUSR2"|"SIGCONT"|"SIGSTOP"|integer

---Options both `proc.run` and `proc.spawn` take. The array part is the program (looked up in
---PATH) and its arguments; numbers are converted. Give either that or `shell`.
---@class stagehost.proc.Options
---@field [integer] string|number
---@field shell? string run through `/bin/sh -c` instead of argv
---@field cwd? string working directory (must exist)
---@field env? table<string, string|number|false> merged over the inherited environment (and `proc.default_env`); false removes a variable
---@field timeout? number seconds; then SIGTERM to the group, SIGKILL `grace` seconds later; code 124
---@field grace? number seconds between SIGTERM and SIGKILL (default 5)
---@field stdout? string a file the child writes its stdout to (raw, not masked); the result then has no `stdout`
---@field stderr? string a file the child writes its stderr to; the result then has no `stderr`
---@field max_output? number bytes of each stream kept in memory (default 4 MiB; the newest part is kept)
---@field name? string label of the child's lines in the log
---@field quiet? boolean keep the child's lines off the console (they still go to the log files)

---@class stagehost.proc.RunOptions: stagehost.proc.Options
---@field stdin? string data for the child's standard input (without it: /dev/null)
---@field on_line? fun(stream: stagehost.proc.Stream, line: string) called in the task for every line as it arrives
---@field check? boolean raise, at the caller's line, unless the child exits with 0

---@class stagehost.proc.SpawnOptions: stagehost.proc.Options
---@field stdin? string|boolean data for standard input, or true for a pipe `h:write` writes to
---@field lines? boolean queue output lines for `h:read_line`

---How a child ended. A non-zero exit is a result, not an error.
---@class stagehost.proc.Result
---@field ok boolean code == 0
---@field code integer exit code; 124 on timeout; 128+N when killed by signal N
---@field signal? string the signal that killed it, e.g. "SIGTERM"
---@field stdout? string captured output (absent with `stdout = PATH`)
---@field stderr? string
---@field stdout_truncated? boolean true when more than `max_output` bytes came
---@field stderr_truncated? boolean
---@field duration number seconds
---@field timed_out boolean
---@field pid integer

---A running child (`proc.spawn`). Garbage-collected or closed as a to-be-closed variable, it
---stops its child.
---@class stagehost.proc.Handle
---@field pid integer
local Handle = {}

---Waits for the child to exit and both pipes to end.
---@return stagehost.proc.Result
function Handle:wait() end

---The next output line (needs `lines = true`); nil at the end.
---@return stagehost.proc.Stream? stream
---@return string? line
function Handle:read_line() end

---Writes to the child's stdin (needs `stdin = true`); waits until written.
---@param data string
---@return true|nil ok
---@return string? message
---@return string? code "EPIPE" once the child is gone
function Handle:write(data) end

function Handle:close_stdin() end

---Signals the child's process group; "TERM" (the default) also arms the SIGKILL fallback.
---@param signal? stagehost.proc.Signal
---@return boolean sent false when the child had already exited
function Handle:kill(signal) end

---Child processes: each leads its own process group.
---@class stagehost.proc
local proc = {}

---Runs a program and waits for it. A missing program, a missing `cwd` or an unwritable `stdout`
---file is an error; a non-zero exit is a result (unless `check = true`).
---@param opts stagehost.proc.RunOptions
---@return stagehost.proc.Result
function proc.run(opts) end

---Starts a child and returns at once.
---@param opts stagehost.proc.SpawnOptions
---@return stagehost.proc.Handle
function proc.spawn(opts) end

---Sets variables every child gets beneath its own `env` (a pipeline's `env` while it runs).
---@param vars? table<string, string|number|false>
---@return fun() restore puts back what was there before
function proc.default_env(vars) end

---The path of the running stagehost, to run it again.
---@return string
function proc.executable() end

---Terminates the still-running children started under the calling task's log context.
---@return integer count
function proc.stop_leftovers() end

---Tells fn of each child started (`"start"`, pid: it leads its own group) and of each one
---`proc.run` has waited for (`"end"`, pid); a pipeline run records its stages' groups so.
---@param fn? fun(event: "start"|"end", pid: integer)
---@return fun() restore puts back the previous observer
function proc.observe(fn) end

---Signals a process group this host did not start (one a dead host left); check first that it
---is still the group meant (its leader's start time).
---@param pgid integer
---@param signal? string "TERM" (default), "KILL", "INT", "HUP", ...
---@return true|nil ok
---@return string? message
---@return string? code "ESRCH" when the group is gone, "EPERM"
function proc.signal_group(pgid, signal) end

return proc
