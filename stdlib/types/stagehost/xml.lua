---@meta stagehost.xml
-- LuaLS annotations for `require "stagehost.xml"` (bindings/xml.c, on expat, and
-- stdlib/stagehost/xml.lua). Definitions only: this file is never loaded by stagehost.

---An element: its children in the array part.
---@class stagehost.xml.Element
---@field name string
---@field attrs table<string, string>
---@field text string the element's own text
---@field [integer] stagehost.xml.Element

---XML: decode (no DOCTYPE, nesting up to 512), escape, and helpers to walk a decoded tree.
---@class stagehost.xml
local xml = {}

---@param text string
---@return stagehost.xml.Element|nil root
---@return string? message "line L, column C: reason"
function xml.decode(text) end

---Escapes text and attribute values; raises on bytes XML cannot carry.
---@param s string
---@return string
function xml.escape(s) end

---The first child element named name, or nil.
---@param node stagehost.xml.Element?
---@param name string
---@return stagehost.xml.Element?
function xml.child(node, name) end

---Every child element named name, in document order.
---@param node stagehost.xml.Element?
---@param name string
---@return stagehost.xml.Element[]
function xml.children(node, name) end

---Descends through the named children; nil as soon as one is missing.
---@param node stagehost.xml.Element?
---@param ... string
---@return stagehost.xml.Element?
function xml.path(node, ...) end

---The trimmed text of the element at that path; nil when it is missing.
---@param node stagehost.xml.Element?
---@param ... string
---@return string?
function xml.text(node, ...) end

return xml
