-- One error model. An error is a table {kind, code, message, ...} whose __tostring is its
-- message; the host prints one that carries exit_code as one line with that exit code, no
-- traceback. A task's cancellation (made by the scheduler in C) has kind "cancelled" or
-- "timeout" and a reason; errors.is_cancel recognises it and ours alike.
local errors = {}

local Error = { __name = "stagehost.error" }
Error.__index = Error
Error.__tostring = function(e) return e.message end
errors.Error = Error

-- errors.new(kind, message [, fields]) -> error object
function errors.new(kind, message, fields)
  local e = { kind = kind, message = tostring(message) }
  for k, v in pairs(fields or {}) do e[k] = v end
  return setmetatable(e, Error)
end

function errors.is(e, kind)
  return type(e) == "table" and e.kind == kind
end

-- A cancellation: the scheduler's, ctx:cancel's or a rejected approval's.
function errors.is_cancel(e)
  return type(e) == "table" and e.kind == "cancelled"
end

function errors.cancelled(reason)
  return errors.new("cancelled", reason, { reason = reason })
end

-- Raise an error that ends the host with `code` and one line (no traceback).
function errors.exit(code, fmt, ...)
  error(errors.new("exit", fmt and fmt:format(...) or "", { exit_code = code }), 0)
end

-- A configuration or usage mistake: one line, exit 2.
function errors.config(fmt, ...)
  error(errors.new("config", fmt:format(...), { exit_code = 2 }), 0)
end

-- Misuse of a function, in the form of luaL_argerror: "bad argument #2 to 'f' (what)", raised
-- at the caller of the function that checks.
function errors.argument(n, fname, fmt, ...)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, fmt:format(...)), 3)
end

-- The first line of any error value, for one-line reports.
function errors.first_line(e)
  return (tostring(e):match("^[^\n]*"))
end

return errors
