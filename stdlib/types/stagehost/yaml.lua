---@meta stagehost.yaml
-- LuaLS annotations for `require "stagehost.yaml"` (bindings/yaml.c, on libyaml).
-- Definitions only: this file is never loaded by stagehost.

---YAML: the 1.2 core schema, anchors, aliases, merge keys, CloudFormation's short tags.
---@class stagehost.yaml
local yaml = {}

---Decodes one document; mappings and sequences keep their kind for `json.encode`.
---@param text string
---@return any value
---@return string? message "line L, column C: reason" (with a nil value)
function yaml.decode(text) end

return yaml
