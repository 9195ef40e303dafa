---@meta stagehost.fs
-- LuaLS annotations for `require "stagehost.fs"` (bindings/fs.c). Each call runs on libuv's
-- thread pool and yields the task (synchronously where a task cannot wait). Failures return
-- `nil, "fs.read: cannot open 'x': No such file or directory", "ENOENT"`.
-- Definitions only: this file is never loaded by stagehost.

---@alias stagehost.fs.Kind "file"|"directory"|"other"

---@class stagehost.fs.WriteOptions
---@field mode? integer permission bits set exactly (0..4095; 0600 is 384, 0644 is 420)
---@field exclusive? boolean create only if nothing is at the path (else nil, message, "EEXIST")

---@class stagehost.fs.MkdirOptions
---@field mode? integer permission bits of every directory it creates

---@class stagehost.fs.RemoveOptions
---@field recursive? boolean remove a directory and everything in it

---Files.
---@class stagehost.fs
local fs = {}

---@param path string
---@return string|nil content
---@return string? message
---@return string? code e.g. "ENOENT"
function fs.read(path) end

---Writes atomically: a temporary file beside the target, fsynced, renamed over it.
---@param path string
---@param data string
---@param opts? stagehost.fs.WriteOptions
---@return true|nil ok
---@return string? message
---@return string? code e.g. "EEXIST"
function fs.write(path, data, opts) end

---Whether something is at path, what it is and its permission bits (420 for 0644).
---@param path string
---@return boolean|nil exists nil on failure
---@return stagehost.fs.Kind|string|nil kind (on failure: the message)
---@return integer|string|nil mode (on failure: the code)
function fs.exists(path) end

---The names in a directory, sorted.
---@param dir string
---@return string[]|nil names
---@return string? message
---@return string? code
function fs.list(dir) end

---Creates a directory with its parents; an existing one is left as it is.
---@param path string
---@param opts? stagehost.fs.MkdirOptions
---@return true|nil ok
---@return string? message
---@return string? code
function fs.mkdir(path, opts) end

---@param path string
---@param opts? stagehost.fs.RemoveOptions
---@return true|nil ok
---@return string? message
---@return string? code
function fs.remove(path, opts) end

---The process's working directory.
---@return string
function fs.cwd() end

return fs
