-- The live view of a run on a terminal: a line per stage — status, name, elapsed time, last
-- log line — redrawn in place. A stage waiting for a person (ctx:waiting) shows its whole
-- text, wrapped, never cut. The console's log lines stay off meanwhile (they are in the
-- stage logs).
local task = require("stagehost.task")
local log = require("stagehost.log")
local time = require("stagehost.util.time")

local live = {}

local SYMBOLS = require("stagehost.util.status").terminal
live.SYMBOLS = SYMBOLS
local SPIN = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" }

local function columns()
  return tonumber(os.getenv("COLUMNS") or "") or 100
end

-- Words of `text` in lines of at most `width` characters (a longer word gets a line of its own).
function live.wrap(text, width)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line == "" then line = word
    elseif utf8.len(line) and utf8.len(line) + 1 + (utf8.len(word) or #word) > width then
      lines[#lines + 1], line = line, word
    else
      line = line .. " " .. word
    end
  end
  if line ~= "" then lines[#lines + 1] = line end
  return lines
end

-- The lines of one frame.
function live.frame(run, n)
  local out = {}
  local width = math.max(40, columns() - 40)
  for _, name in ipairs(run.order) do
    local r = run.records[name]
    local info = run.live[name] or {}
    local symbol = r.status == "running" and (info.waiting and "⏸" or SPIN[n % #SPIN + 1]) or (SYMBOLS[r.status] or " ")
    local elapsed = r.duration or (info.t0 and task.now() - info.t0)
    local head = ("%s %-26s %8s  "):format(symbol, name, elapsed and time.duration(elapsed) or "")
    if r.status == "running" and info.waiting then
      local text = log.masked(info.waiting):gsub("%c", " ")
      for i, l in ipairs(live.wrap(text, width)) do
        out[#out + 1] = (i == 1 and head or (" "):rep(39)) .. l
      end
    else
      local last = r.status == "skipped" and (r.reason or "") or (info.log and info.log:last() or "")
      last = last:gsub("%c", " ")
      if utf8.len(last) and utf8.len(last) > width then last = last:sub(1, utf8.offset(last, width) - 1) .. "…" end
      out[#out + 1] = head .. last
    end
  end
  return out
end

-- live.start(run) -> stop(): draws every 0.1 s until stopped (not while run.prompting: a
-- prompt holds the terminal); stop draws the final frame.
function live.start(run)
  local n, drawn = 0, 0
  local function draw()
    n = n + 1
    local lines = live.frame(run, n)
    local out = {}
    if drawn > 0 then out[1] = ("\27[%dA"):format(drawn) end
    for _, l in ipairs(lines) do out[#out + 1] = "\27[2K" .. l .. "\n" end
    -- a frame shorter than the one before leaves no stale lines below it
    for _ = #lines + 1, drawn do out[#out + 1] = "\27[2K\n" end
    io.stdout:write(table.concat(out))
    io.stdout:flush()
    drawn = math.max(drawn, #lines)
  end
  log.console(false)
  local t = task.spawn(function()
    while true do
      -- a prompt on the terminal (the approval channel "terminal") holds the screen: the view
      -- starts afresh below it when it is done
      if run.prompting then drawn = 0 else draw() end
      task.sleep(0.1)
    end
  end)
  return function()
    t:cancel("run finished")
    draw()
    log.console(true)
  end
end

return live
