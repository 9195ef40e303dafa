---@meta stagehost.errors
-- LuaLS annotations for `require "stagehost.errors"` (stdlib/stagehost/errors.lua).
-- Definitions only: this file is never loaded by stagehost.

---An error object: `tostring(e)` is its message. C and Lua make them with one constructor and
---one metatable (`errors.Error`, registered as "stagehost.error"). One with `exit_code` ends the
---host with that code and one line, no traceback.
---@class stagehost.errors.Error
---@field kind string "cancelled", "timeout", "transport", "config", "exit", "usage", ...
---@field code? string an errno-like name: a transport failure's "ECONNREFUSED", "ETIMEDOUT", "ENOTFOUND", "TLS", "EIO", "EREDIRECTS", "ETRANSPORT"
---@field message string
---@field exit_code? integer
---@field reason? string a cancellation's reason; a transport failure's words from libcurl
---@field origin? string "stage" for `ctx:cancel`'s cancellation (it cancels the whole run)
---@field url? string a transport failure's URL, credentials shown as ***
---@field method? string a transport failure's HTTP method

---One error model for the library and the scripts.
---@class stagehost.errors
---@field Error table the metatable of error objects (`__tostring` is the message)
local errors = {}

---@param kind string
---@param message any
---@param fields? table copied into the error
---@return stagehost.errors.Error
function errors.new(kind, message, fields) end

---Is e an error object (of this kind, when one is given)?
---@param e any
---@param kind? string
---@return boolean
function errors.is(e, kind) end

---Is e a cancellation (kind "cancelled" or "timeout"): the scheduler's, `ctx:cancel`'s or a
---rejected approval's?
---@param e any
---@return boolean
function errors.is_cancel(e) end

---@param reason string
---@param fields? table copied into the error
---@return stagehost.errors.Error
function errors.cancelled(reason, fields) end

---Raises an error that ends the host with `code` and one line.
---@param code integer
---@param fmt? string
---@param ... any
function errors.exit(code, fmt, ...) end

---Raises a configuration or usage mistake: one line, exit 2.
---@param fmt string
---@param ... any
function errors.config(fmt, ...) end

---Raises "bad argument #n to 'fname' (...)" at the caller of the function that checks.
---@param n integer
---@param fname string
---@param fmt string
---@param ... any
function errors.argument(n, fname, fmt, ...) end

---`value` when it is a table; otherwise raises "bad argument #n to 'fname' (table expected, got
---TYPE)" like `errors.argument`, blaming the caller of the function that calls this.
---@generic T
---@param value T
---@param n integer
---@param fname string
---@return T
function errors.check_table(value, n, fname) end

---Raises the same message at `level`, as `error` counts it from the function that calls this
---(for a helper that checks for a public function: 3 blames the public function's caller).
---@param level integer
---@param n integer
---@param fname string
---@param fmt string
---@param ... any
function errors.argument_at(level, n, fname, fmt, ...) end

---The message `errors.argument` raises (the one text C's misuse messages have too).
---@param n integer
---@param fname string
---@param fmt string
---@param ... any
---@return string
function errors.argument_message(n, fname, fmt, ...) end

---The first line of any error value.
---@param e any
---@return string
function errors.first_line(e) end

return errors
