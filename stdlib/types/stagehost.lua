---@meta stagehost
-- LuaLS annotations for `require "stagehost"` (stdlib/stagehost/init.lua): every module, each
-- loaded on first use (`stagehost.util.retry` is required by its own name). Definitions only:
-- this file is never loaded by stagehost.

---@class stagehost
---@field task stagehost.task
---@field proc stagehost.proc
---@field fs stagehost.fs
---@field json stagehost.json
---@field log stagehost.log
---@field http stagehost.http
---@field crypto stagehost.crypto
---@field xml stagehost.xml
---@field yaml stagehost.yaml
---@field aws stagehost.aws
---@field github stagehost.github
---@field sandbox stagehost.sandbox
---@field pipeline stagehost.pipeline
---@field errors stagehost.errors
---@field notify stagehost.notify
---@field approval stagehost.approval
local stagehost = {}

return stagehost
