---@meta stagehost.markdown
-- LuaLS annotations for `require "stagehost.markdown"` (bindings/markdown.c, on libcmark).
-- Definitions only: this file is never loaded by stagehost.

---@class stagehost.markdown.Options
---@field smart? boolean curly quotes and dashes
---@field hardbreaks? boolean every newline is a line break

---CommonMark to HTML, in safe mode (no raw HTML, no javascript: links).
---@class stagehost.markdown
local markdown = {}

---Render text as HTML; invalid UTF-8 becomes U+FFFD.
---@param text string
---@param opts? stagehost.markdown.Options
---@return string
function markdown.html(text, opts) end

---The version of libcmark, like "0.30.2".
---@return string
function markdown.version() end

return markdown
