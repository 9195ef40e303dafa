-- How a stage's or a run's status looks, everywhere it is shown: one glyph per status for the
-- terminal and the reports, one heading emoji for GitHub's job summary, and the colours of the
-- seed diagrams. A status not listed here shows as "pending" (status.known).
local status = {}

-- The order the reports list statuses in (legend, CSS).
status.ORDER = { "success", "failure", "cancelled", "skipped", "running", "pending" }

status.symbol = { success = "✓", failure = "✗", skipped = "○", cancelled = "■", running = "…", pending = "·",
  waiting = "⏸" } -- waiting: an approval gate of a detached run (run --detach)

-- The terminal leaves a stage that has not started blank, so the ones that did stand out.
status.terminal = setmetatable({ pending = " " }, { __index = status.symbol })

-- The emoji before a run's name in a markdown heading.
status.heading = { success = "✅", failure = "❌", cancelled = "🚫", running = "⏳", pending = "⏳", skipped = "⏭️", waiting = "⏸️" }

-- Fills are the seed diagrams' colours; strokes are darker shades of the same hue, so a box
-- keeps its meaning in a greyscale print; text is dark enough to read on the fill.
status.fill = { success = "#e1f5e1", failure = "#ffe1e1", cancelled = "#ffe1e1", skipped = "#eeeeee",
  running = "#fff4e1", pending = "#ffffff" }
status.stroke = { success = "#2e7d32", failure = "#c62828", cancelled = "#8e0000", skipped = "#9e9e9e",
  running = "#ef6c00", pending = "#9e9e9e" }
status.text = { success = "#1b5e20", failure = "#8e0000", cancelled = "#8e0000", skipped = "#555555",
  running = "#8a3c00", pending = "#555555" }

-- s when it is a status listed here, else "pending".
function status.known(s)
  return status.fill[s] and s or "pending"
end

return status
