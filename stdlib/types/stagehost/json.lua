---@meta stagehost.json
-- LuaLS annotations for `require "stagehost.json"` (bindings/json.c, on cJSON).
-- Definitions only: this file is never loaded by stagehost.

---@class stagehost.json.EncodeOptions
---@field pretty? boolean indented output

---JSON: object keys written sorted; decoded arrays and objects remember their kind.
---@class stagehost.json
---@field null lightuserdata JSON null (decoded `null`, and encodes as `null`)
local json = {}

---Encodes a value; raises naming the path of a bad value (`$.stages[2].name`).
---@param value any
---@param opts? stagehost.json.EncodeOptions
---@return string
function json.encode(value, opts) end

---Decodes a document. Bad input returns nil and "line L, column C: reason" (as `xml.decode` and
---`yaml.decode` do); only a non-string argument raises. `null` decodes to `json.null`, never nil.
---@param text string
---@return any value
---@return string? message
function json.decode(text) end

---Marks a table (a new one when nil) as a JSON array, so `{}` encodes as `[]`.
---@generic T: table
---@param t? T
---@return T
function json.array(t) end

---Marks a table (a new one when nil) as a JSON object.
---@generic T: table
---@param t? T
---@return T
function json.object(t) end

---Would this table encode as an array?
---@param t any
---@return boolean
function json.is_array(t) end

return json
