-- Small table helpers that several modules share.
local tables = {}

-- The keys of t, sorted.
function tables.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The matches of pattern in s, in order: tables.matches("a b", "%S+") -> {"a", "b"}.
function tables.matches(s, pattern)
  local out = {}
  for m in s:gmatch(pattern) do out[#out + 1] = m end
  return out
end

-- A copy of value with every string (keys too) passed through mask; metatables are kept, so a
-- JSON array stays one. Below max_depth levels of tables, values are kept as they are.
function tables.masked_copy(value, mask, max_depth, depth)
  depth = depth or 0
  if type(value) == "string" then return mask(value) end
  if type(value) ~= "table" or depth > max_depth then return value end
  local out = setmetatable({}, getmetatable(value))
  for k, v in pairs(value) do
    out[type(k) == "string" and mask(k) or k] = tables.masked_copy(v, mask, max_depth, depth + 1)
  end
  return out
end

return tables
