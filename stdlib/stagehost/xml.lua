-- XML on expat: decode (elements as { name, attrs, text, [i] = child }), escape; and helpers
-- to walk a decoded tree: child, children, path, text.
local core = require("stagehost.core.xml")

local M = { decode = core.decode, escape = core.escape }

-- The first child element named name, or nil.
function M.child(node, name)
  if type(node) ~= "table" then return nil end
  for _, c in ipairs(node) do
    if c.name == name then return c end
  end
  return nil
end

-- Every child element named name, in document order (an empty array when there is none).
function M.children(node, name)
  local out = {}
  if type(node) ~= "table" then return out end
  for _, c in ipairs(node) do
    if c.name == name then out[#out + 1] = c end
  end
  return out
end

-- Descend through the named children: path(root, "DescribeStacksResult", "Stacks"); nil
-- as soon as one is missing.
function M.path(node, ...)
  for i = 1, select("#", ...) do
    node = M.child(node, (select(i, ...)))
    if not node then return nil end
  end
  return node
end

-- The text of the element at that path, trimmed; nil when the element is missing.
function M.text(node, ...)
  node = M.path(node, ...)
  -- like the other helpers, anything but an element is "not there"
  if type(node) ~= "table" or type(node.text) ~= "string" then return nil end
  return (node.text:match("^%s*(.-)%s*$"))
end

return M
