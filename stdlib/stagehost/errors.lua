-- One error model. An error object is a table {kind, code, message, ...} whose __tostring is its
-- message; C and Lua make them with one constructor (bindings/auxlib.c, sh_error_push), so they
-- share one metatable, errors.Error (registered as "stagehost.error"). Kinds in use:
--   "cancelled", "timeout"  a task's cancellation, made by the scheduler (reason; a timeout's
--                           scope), or by ctx:cancel (origin = "stage") and approvals
--   "transport"             http.request's transport failure (code ECONNREFUSED, ETIMEDOUT, …)
--   "exit", "config", "usage"  end the host with exit_code and one line, no traceback
-- Misuse is not an error object: it raises a string in luaL_argerror's form (errors.argument).
local core = require("stagehost.core.errors")

local errors = {}

errors.Error = core.Error

-- errors.new(kind, message [, fields]) -> error object (fields are copied in)
errors.new = core.new

-- Is e an error object (of this kind, when one is given)?
function errors.is(e, kind)
  return getmetatable(e) == core.Error and (kind == nil or rawget(e, "kind") == kind)
end

-- A cancellation: the scheduler's (a cancel or a timeout), ctx:cancel's or a rejected
-- approval's; what C's sh_is_cancel_error says too.
function errors.is_cancel(e)
  return errors.is(e, "cancelled") or errors.is(e, "timeout")
end

-- errors.cancelled(reason [, fields]) -> a cancellation error object with that reason
function errors.cancelled(reason, fields)
  local e = core.new("cancelled", reason, fields)
  e.reason = reason
  return e
end

-- Raise an error that ends the host with `code` and one line (no traceback).
function errors.exit(code, fmt, ...)
  error(core.new("exit", fmt and fmt:format(...) or "", { exit_code = code }), 0)
end

-- A configuration or usage mistake: one line, exit 2.
function errors.config(fmt, ...)
  error(core.new("config", fmt:format(...), { exit_code = 2 }), 0)
end

-- Misuse of a function, in the form of luaL_argerror (the same text C's sh_argerror makes):
-- "bad argument #2 to 'f' (what)". errors.argument is called by the public function itself and
-- blames the line that called it; a helper that checks for it uses errors.argument_at with
-- error()'s level as seen from the helper (2: the helper's caller, 3: the caller's caller).
function errors.argument_message(n, fname, fmt, ...)
  return core.argument_message(n, fname, fmt:format(...))
end

function errors.argument_at(level, n, fname, fmt, ...)
  error(core.argument_message(n, fname, fmt:format(...)), level + 1)
end

function errors.argument(n, fname, fmt, ...)
  error(core.argument_message(n, fname, fmt:format(...)), 3)
end

-- value, when it is a table; otherwise misuse ("table expected, got nil"), blamed like
-- errors.argument on the line that called the public function calling this.
function errors.check_table(value, n, fname)
  if type(value) ~= "table" then
    error(core.argument_message(n, fname, ("table expected, got %s"):format(type(value))), 3)
  end
  return value
end

-- Where stagehost's own Lua modules are (this file's directory's parent): a position in them
-- ("/usr/local/share/stagehost/lua/stagehost/pipeline/store.lua:560: ") says nothing to whoever
-- reads a one-line report, so first_line drops it; a position in a stage or pipeline file stays.
local LIBRARY = debug.getinfo(1, "S").source:match("^@(.*/)stagehost/errors%.lua$")
local LIBRARY_POSITION = LIBRARY and (LIBRARY:gsub("%p", "%%%0") .. "stagehost/[%w_/%-%.]-%.lua:%d+: ")

-- The first line of any error value, for one-line reports.
function errors.first_line(e)
  local line = tostring(e):match("^[^\n]*")
  if LIBRARY_POSITION then line = line:gsub(LIBRARY_POSITION, "") end
  return line
end

return errors
