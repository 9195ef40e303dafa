-- Reports of a run: a self-contained HTML page (header, stage graph, timeline, stages, tests,
-- artifacts), JUnit XML from the stages' outputs.tests, and markdown for GitHub's job summary.
-- Every text taken from the run goes through log.masked before it is escaped: a secret a stage
-- printed or returned must not reach a page that is uploaded or mailed around.
local log = require "stagehost.log"
local fs = require "stagehost.fs"
local json = require "stagehost.json"
local pipeline = require "stagehost.pipeline"
local engine = require "stagehost.pipeline.engine"

local report = {}

-- Node fills are the seed diagrams' colours; the strokes are darker shades of the same hue so a
-- bar or box keeps its meaning in a greyscale print.
local FILL = { success = "#e1f5e1", failure = "#ffe1e1", cancelled = "#ffe1e1", skipped = "#eeeeee",
  running = "#fff4e1", pending = "#ffffff" }
local STROKE = { success = "#2e7d32", failure = "#c62828", cancelled = "#8e0000", skipped = "#9e9e9e",
  running = "#ef6c00", pending = "#9e9e9e" }
local SYMBOL = { success = "✓", failure = "✗", skipped = "○", cancelled = "■", running = "…", pending = "·" }
local EDGE_COLOUR = { success = "#555555", failure = "#c62828", always = "#555555", decision = "#ef6c00" }

-- ---- text ----

-- Bytes a parser refuses: invalid UTF-8 becomes U+FFFD, control characters (and the colour
-- codes of terminal output) go, since XML 1.0 cannot carry them even as references.
local function sanitize(s)
  s = s:gsub("\27%[[%d;?]*[%a@]", ""):gsub("[%z\1-\8\11\12\14-\31\127]", "")
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local n, bad = utf8.len(s, i)
    if n then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1) .. "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

-- Masked before anything else: escaping first could split a secret ("a<b" -> "a&lt;b") so the
-- mask no longer recognises it.
local function clean(v)
  if v == nil then return "" end
  return sanitize(log.masked(tostring(v)))
end
report.clean = clean

local ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- HTML and XML text and attribute values alike.
local function esc(v)
  return (clean(v):gsub("[&<>\"']", ENTITIES))
end

-- One path segment of a relative link; masked first, so a secret in a file name is not in the
-- href either (the link then breaks, which is the lesser harm).
local function url_segment(v)
  return require("stagehost.util.url").encode(clean(v))
end

-- Markdown table cells and inline text: one line, no pipes, no raw HTML, no emphasis by accident.
local function md(v)
  local s = clean(v):gsub("[\r\n]+", " "):gsub("[&<>]", ENTITIES)
  return (s:gsub("([\\`*_%[%]|#~])", "\\%1"))
end

local function basename(path)
  return tostring(path):match("([^/]*)$")
end

-- ---- time ----

-- ISO 8601 UTC -> seconds since the epoch. Computed from the civil date (H. Hinnant's
-- days_from_civil) because os.time would read the fields as local time.
local function epoch(iso)
  if type(iso) ~= "string" then return nil end
  local y, mo, d, h, mi, s = iso:match("^(%d%d%d%d)-(%d%d)-(%d%d)[T ](%d%d):(%d%d):(%d%d%.?%d*)")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * ((mo + 9) % 12) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return (era * 146097 + doe - 719468) * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end
report.epoch = epoch

local function fmt_duration(s)
  if type(s) ~= "number" then return "" end
  if s < 1 then return ("%dms"):format(math.floor(s * 1000 + 0.5)) end
  return engine.fmt_duration(s)
end

local function clock(iso) return type(iso) == "string" and iso:match("T(%d%d:%d%d:%d%d)") or "" end

local function human_time(iso)
  if type(iso) ~= "string" then return "" end
  local d, t = iso:match("^(%d%d%d%d%-%d%d%-%d%d)T(%d%d:%d%d:%d%d)")
  return d and (d .. " " .. t .. " UTC") or iso
end

local function human_size(n)
  if type(n) ~= "number" then return "" end
  if n < 1024 then return ("%d B"):format(n) end
  if n < 1024 * 1024 then return ("%.1f KiB"):format(n / 1024) end
  if n < 1024 ^ 3 then return ("%.1f MiB"):format(n / 1024 ^ 2) end
  return ("%.1f GiB"):format(n / 1024 ^ 3)
end

-- ---- the run, seen through its pipeline ----

local function stage_names(run, p)
  local names, seen = {}, {}
  local function add(n)
    if not seen[n] then seen[n], names[#names + 1] = true, n end
  end
  for _, n in ipairs(run.order or {}) do add(n) end
  if p then for _, st in ipairs(p.stages) do add(st.name) end end
  return names
end

local function record(run, name)
  return (run.stages and run.stages[name]) or { name = name, status = "pending" }
end

local function spec(p, name)
  return p and p.by_name and p.by_name[name]
end

local function edge_kind(st)
  local when = st and st.when or "success"
  if when == "failure" or when == "always" or when == "decision" then return when end
  return "success"
end

local function when_label(st)
  local kind = edge_kind(st)
  if kind == "success" then return nil end
  if kind == "decision" then
    return "if " .. tostring(st.decision_name or "decision"):gsub("%.lua$", ""):gsub("^.*/", "")
  end
  return "when " .. kind
end

-- outputs.tests when it is a non-empty list of tables, else nil.
local function tests_of(rec)
  local t = type(rec.outputs) == "table" and rec.outputs.tests
  if type(t) ~= "table" then return nil end
  local cases = {}
  for _, c in ipairs(t) do
    if type(c) == "table" then cases[#cases + 1] = c end
  end
  return #cases > 0 and cases or nil
end

local function case_kind(c)
  local s = tostring(c.status or "passed"):lower()
  if s == "failed" or s == "failure" or s == "fail" then return "failure" end
  if s == "error" or s == "errored" then return "error" end
  if s == "skipped" or s == "skip" or s == "pending" then return "skipped" end
  return "passed"
end

local function count_cases(cases)
  local n = { tests = #cases, failure = 0, error = 0, skipped = 0, passed = 0, time = 0 }
  for _, c in ipairs(cases) do
    local k = case_kind(c)
    n[k] = n[k] + 1
    if type(c.time) == "number" then n.time = n.time + c.time end
  end
  return n
end

-- Offsets in seconds from the run's start, for the timeline. Timestamps have whole seconds, the
-- duration is exact: a bar is placed by the first and sized by the second.
local function timing(run, names)
  local t0 = epoch(run.started_at)
  if not t0 then
    for _, n in ipairs(names) do
      local s = epoch(record(run, n).started_at)
      if s and (not t0 or s < t0) then t0 = s end
    end
  end
  local spans, last = {}, 0
  if not t0 then return spans, 0 end
  for _, n in ipairs(names) do
    local rec = record(run, n)
    local s, f = epoch(rec.started_at), epoch(rec.finished_at)
    local span
    if s then
      local finish = type(rec.duration) == "number" and (s + rec.duration) or f
        or (rec.status == "running" and os.time()) or s
      span = { from = s - t0, to = finish - t0 }
    elseif f then -- decided without running (a broken decision): a point in time
      span = { from = f - t0, to = f - t0, instant = true }
    end
    if span then
      spans[n] = span
      if span.to > last then last = span.to end
    end
  end
  local rf = epoch(run.finished_at)
  if rf and rf - t0 > last then last = rf - t0 end
  return spans, last
end

-- The run's length: its own timestamps (whole seconds), or the end of its last stage when that
-- is later (exact durations). Nothing while the run has not finished.
local function total_duration(run, names)
  if not (epoch(run.started_at) and epoch(run.finished_at)) then return nil end
  local _, last = timing(run, names)
  return last
end

-- ---- SVG: the stage graph ----

-- Long names go on two lines, split at the '-', '_' or '.' nearest the middle, so the seed's
-- nine-stage chain still fits a laptop screen without scrolling.
local function name_lines(name)
  if #name <= 15 then return { name } end
  local best
  for i = 2, #name - 1 do
    if name:sub(i, i):match("[-_.]") and (not best or math.abs(i - #name / 2) < math.abs(best - #name / 2)) then
      best = i
    end
  end
  if not best then return { name } end
  return { name:sub(1, best), name:sub(best + 1) }
end

-- Width of text in the page's sans-serif at size px, estimated (there is no font metrics here):
-- generous, so a label never spills out of its box.
local function text_width(s, px, bold)
  return utf8.len(s) * px * (bold and 0.62 or 0.56)
end

local function f1(n) return ("%.1f"):format(n) end

local function graph_svg(run, p, names)
  local col, visiting = {}, {}
  -- column = 1 + the largest column among the needs: a stage sits right of all it waits for
  local function column(n)
    if col[n] then return col[n] end
    if visiting[n] then return 1 end -- a cycle cannot pass pipeline.define; be safe anyway
    visiting[n] = true
    local c = 1
    local st = spec(p, n)
    for _, need in ipairs(st and st.needs or {}) do
      if spec(p, need) or (run.stages and run.stages[need]) then c = math.max(c, column(need) + 1) end
    end
    visiting[n] = nil
    col[n] = c
    return c
  end
  -- rows in declaration order within a column: the pipeline's order, then the run's own
  local decl, seen = {}, {}
  if p then for _, st in ipairs(p.stages) do decl[#decl + 1], seen[st.name] = st.name, true end end
  for _, n in ipairs(names) do if not seen[n] then decl[#decl + 1] = n end end

  -- what each box says: its name, status and duration, then how it runs when that is unusual
  local function status_line(rec)
    local status = FILL[rec.status] and rec.status or "pending"
    local text = SYMBOL[status] .. " " .. status
    if rec.duration then text = text .. " · " .. fmt_duration(rec.duration) end
    return text
  end
  local function extra_line(n, rec)
    local bits = { when_label(spec(p, n)) }
    if (rec.attempts or 0) > 1 then bits[#bits + 1] = ("%d tries"):format(rec.attempts) end
    if rec.allowed_failure then bits[#bits + 1] = "allowed to fail" end
    return #bits > 0 and table.concat(bits, " · ") or nil
  end

  local rows, ncols, nrows, row = {}, 0, 0, {}
  local widest, max_lines, any_extra = 0, 1, false
  for _, n in ipairs(decl) do
    local c = column(n)
    rows[c] = (rows[c] or 0) + 1
    row[n] = rows[c]
    ncols, nrows = math.max(ncols, c), math.max(nrows, rows[c])
    local lines = name_lines(clean(n))
    max_lines = math.max(max_lines, #lines)
    for _, l in ipairs(lines) do widest = math.max(widest, text_width(l, 13, true)) end
    local rec = record(run, n)
    widest = math.max(widest, text_width(status_line(rec), 11.5, false))
    local extra = extra_line(n, rec)
    if extra then
      any_extra = true
      widest = math.max(widest, text_width(extra, 10.5, false))
    end
  end
  local NODE_W = math.max(120, math.ceil(widest) + 20)
  local NODE_H = 14 + max_lines * 16 + 16 + (any_extra and 14 or 0)
  local GAP_X, GAP_Y, PAD, LANE_H = 44, 22, 12, 12

  local function box(n)
    return PAD + (col[n] - 1) * (NODE_W + GAP_X), (row[n] - 1) * (NODE_H + GAP_Y) -- y before the lanes
  end

  -- Edges between adjacent columns, or over columns with nothing in the way, are curves; the
  -- others run in lanes above the graph so they never cross a box.
  local edges = {}
  for _, n in ipairs(decl) do
    local st = spec(p, n)
    for _, need in ipairs(st and st.needs or {}) do
      if col[need] then
        local e = { from = need, to = n, kind = edge_kind(st) }
        local x1, y1 = box(need)
        local x2, y2 = box(n)
        local lo, hi = math.min(y1, y2), math.max(y1, y2) + NODE_H
        for _, other in ipairs(decl) do
          if col[other] > col[need] and col[other] < col[n] then
            local _, oy = box(other)
            if oy < hi + 4 and oy + NODE_H > lo - 4 then e.lane = true end
          end
        end
        edges[#edges + 1] = e
      end
    end
  end
  local laned = {}
  for _, e in ipairs(edges) do if e.lane then laned[#laned + 1] = e end end
  -- the widest span takes the outermost lane, so nested spans never cross each other
  table.sort(laned, function(a, b)
    local sa, sb = col[a.to] - col[a.from], col[b.to] - col[b.from]
    if sa ~= sb then return sa > sb end
    return col[a.from] < col[b.from]
  end)
  -- Where a laned edge rises and drops: in the gap beside its box, the outer lane nearest the
  -- source box and nearest the target box, so lanes that share a box do not cross each other.
  local rank_out, rank_in = {}, {}
  for i, e in ipairs(laned) do
    e.lane = i
    rank_out[e.from] = (rank_out[e.from] or 0) + 1
    rank_in[e.to] = (rank_in[e.to] or 0) + 1
    e.rise, e.drop = math.min(rank_out[e.from] - 1, 3) * 7, math.min(rank_in[e.to] - 1, 3) * 7
  end
  local top = PAD + #laned * LANE_H + (#laned > 0 and 6 or 0)

  -- Ports: where edges leave and enter a box. Laned edges use the top ports in lane order,
  -- curves the rest ordered by the other end's height, so lines fan out instead of piling up.
  local outs, ins = {}, {}
  for _, e in ipairs(edges) do
    outs[e.from] = outs[e.from] or {}
    ins[e.to] = ins[e.to] or {}
    table.insert(outs[e.from], e)
    table.insert(ins[e.to], e)
  end
  local function order_ports(list, other_end)
    table.sort(list, function(a, b)
      if a.lane and b.lane then return a.lane < b.lane end
      if a.lane or b.lane then return a.lane ~= nil end
      local ra, rb = row[other_end(a)], row[other_end(b)]
      if ra ~= rb then return ra < rb end
      return col[other_end(a)] < col[other_end(b)]
    end)
    local step = math.min(14, (NODE_H - 12) / math.max(1, #list))
    for i, e in ipairs(list) do
      list[i] = { edge = e, dy = (i - (#list + 1) / 2) * step }
    end
  end
  local port_out, port_in = {}, {}
  for n, list in pairs(outs) do
    order_ports(list, function(e) return e.to end)
    for _, pe in ipairs(list) do port_out[pe.edge] = pe.dy end
    outs[n] = nil
  end
  for n, list in pairs(ins) do
    order_ports(list, function(e) return e.from end)
    for _, pe in ipairs(list) do port_in[pe.edge] = pe.dy end
    ins[n] = nil
  end

  local width = PAD * 2 + ncols * NODE_W + (ncols - 1) * GAP_X
  local height = top + nrows * NODE_H + (nrows - 1) * GAP_Y + PAD
  local out = {}
  local function w(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  -- the natural size is the most it grows to; it shrinks with the window down to 60 %, then the
  -- wrapper scrolls, so names stay readable
  w(('<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" '
    .. 'style="min-width:%dpx" role="img" aria-label="stage graph">\n'):format(width, height, width, height,
    math.floor(width * 0.6)))
  w("<defs>")
  for kind, colour in pairs(EDGE_COLOUR) do
    w(('<marker id="arrow-%s" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" '
      .. 'markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>'):format(kind, colour))
  end
  w("</defs>\n")

  for _, e in ipairs(edges) do
    local x1, y1 = box(e.from)
    local x2, y2 = box(e.to)
    x1, y1 = x1 + NODE_W, top + y1 + NODE_H / 2 + port_out[e]
    y2 = top + y2 + NODE_H / 2 + port_in[e]
    x2 = x2 - 2 -- the arrow's tip touches the box
    local d
    if e.lane then
      local ly = PAD + (e.lane - 0.5) * LANE_H
      local a, b, r = x1 + 10 + e.rise, x2 - 16 - e.drop, 6
      d = ("M%s,%s H%s Q%s,%s %s,%s V%s Q%s,%s %s,%s H%s Q%s,%s %s,%s V%s Q%s,%s %s,%s H%s"):format(
        f1(x1), f1(y1), f1(a - r), f1(a), f1(y1), f1(a), f1(y1 - r), f1(ly + r), f1(a), f1(ly), f1(a + r), f1(ly),
        f1(b - r), f1(b), f1(ly), f1(b), f1(ly + r), f1(y2 - r), f1(b), f1(y2), f1(b + r), f1(y2), f1(x2))
    else
      local mid = (x2 - x1) / 2
      d = ("M%s,%s C%s,%s %s,%s %s,%s"):format(f1(x1), f1(y1), f1(x1 + mid), f1(y1), f1(x2 - mid), f1(y2),
        f1(x2), f1(y2))
    end
    w(('<path class="edge edge-%s" d="%s" fill="none" stroke="%s" stroke-width="1.6"%s marker-end="url(#arrow-%s)">'
      .. '<title>%s → %s%s</title></path>\n'):format(e.kind, d, EDGE_COLOUR[e.kind],
      e.kind ~= "success" and ' stroke-dasharray="6 4"' or "", e.kind, esc(e.from), esc(e.to),
      e.kind ~= "success" and (" (" .. esc(when_label(spec(p, e.to))) .. ")") or ""))
  end

  for _, n in ipairs(decl) do
    local rec = record(run, n)
    local status = FILL[rec.status] and rec.status or "pending"
    local x, y = box(n)
    y = top + y
    w(('<a href="#stage-%s"><g class="node status-%s">'):format(url_segment(n), status))
    w(('<title>%s: %s%s</title>'):format(esc(n), esc(status),
      (rec.error or rec.reason) and (" — " .. esc(rec.error or rec.reason)) or ""))
    w(('<rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="%s" stroke="%s" stroke-width="%s"/>'):format(
      x, y, NODE_W, NODE_H, FILL[status], STROKE[status], status == "failure" and "2" or "1.3"))
    local ty = y + 14 + 12
    for _, l in ipairs(name_lines(clean(n))) do
      w(('<text x="%s" y="%d" class="node-name" text-anchor="middle">%s</text>'):format(f1(x + NODE_W / 2), ty, esc(l)))
      ty = ty + 16
    end
    w(('<text x="%s" y="%d" class="node-status" text-anchor="middle" fill="%s">%s</text>'):format(
      f1(x + NODE_W / 2), ty + 1, STROKE[status], esc(status_line(rec))))
    local extra = extra_line(n, rec)
    if extra then
      w(('<text x="%s" y="%d" class="node-when" text-anchor="middle">%s</text>'):format(f1(x + NODE_W / 2), ty + 15, esc(extra)))
    end
    w("</g></a>\n")
  end
  w("</svg>")
  return table.concat(out)
end

-- ---- SVG: the timeline ----

local TICK_STEPS = { 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400 }

local function tick_label(s, long)
  s = math.floor(s + 0.5)
  if long then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%02d:%02d"):format(s // 60, s % 60)
end

-- A gantt chart like the seed's "Timeline": one row per stage, a shared axis in mm:ss from the
-- run's start.
local function timeline_svg(run, names)
  local spans, last = timing(run, names)
  local span = math.max(last, 1)
  local step
  for _, s in ipairs(TICK_STEPS) do
    if span / s <= 10 then step = s break end
  end
  step = step or 86400 * math.ceil(span / 86400 / 10) -- a run that took weeks: whole days
  span = math.ceil(span / step) * step -- the axis ends on a tick
  local label_w = 0
  for _, n in ipairs(names) do label_w = math.max(label_w, text_width(clean(n), 12, false)) end
  label_w = math.ceil(label_w) + 24
  local CHART_W, ROW_H, AXIS_H, RIGHT, TOP = 940, 26, 28, 100, 6
  local width = label_w + CHART_W + RIGHT
  local height = TOP + #names * ROW_H + AXIS_H
  local scale = CHART_W / span
  local out = {}
  local function w(s) out[#out + 1] = s end
  w(('<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" '
    .. 'style="min-width:%dpx" role="img" aria-label="timeline">\n'):format(width, height, width, height,
    math.floor(width * 0.7)))
  for i = 1, #names do
    if i % 2 == 0 then
      w(('<rect x="0" y="%d" width="%d" height="%d" fill="#f6f8fa"/>'):format(TOP + (i - 1) * ROW_H, width, ROW_H))
    end
  end
  local long = span >= 3600
  for t = 0, span, step do
    local x = label_w + t * scale
    w(('<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#d0d7de" stroke-width="1"/>'):format(f1(x), TOP, f1(x),
      TOP + #names * ROW_H + 4))
    w(('<text x="%s" y="%d" class="tick" text-anchor="middle">%s</text>'):format(f1(x), TOP + #names * ROW_H + 18,
      tick_label(t, long)))
  end
  for i, n in ipairs(names) do
    local rec = record(run, n)
    local status = FILL[rec.status] and rec.status or "pending"
    local y = TOP + (i - 1) * ROW_H
    w(('<text x="%d" y="%d" class="row-label">%s</text>'):format(label_w - 12, y + 17, esc(n)))
    local sp = spans[n]
    if sp and not sp.instant then
      local x = label_w + sp.from * scale
      local bw = math.max(3, (sp.to - sp.from) * scale)
      local text = fmt_duration(rec.duration or (sp.to - sp.from))
      if (rec.attempts or 0) > 1 then text = text .. (" · %d tries"):format(rec.attempts) end
      w(('<rect x="%s" y="%d" width="%s" height="%d" rx="3" fill="%s" stroke="%s" stroke-width="1.2">'
        .. '<title>%s: %s, %s</title></rect>'):format(f1(x), y + 5, f1(bw), ROW_H - 10, FILL[status],
        STROKE[status], esc(n), status, esc(text)))
      -- the label goes after the bar, or inside it when the bar reaches the right edge
      if x + bw + text_width(text, 11, false) + 8 > label_w + CHART_W + RIGHT then
        w(('<text x="%s" y="%d" class="bar-label" text-anchor="end">%s</text>'):format(f1(x + bw - 6), y + 17, esc(text)))
      else
        w(('<text x="%s" y="%d" class="bar-label">%s</text>'):format(f1(x + bw + 6), y + 17, esc(text)))
      end
    else
      local x = label_w + (sp and sp.from * scale or 0)
      if sp then
        w(('<path d="M%s,%d l5,8 l-5,8 l-5,-8 z" fill="%s" stroke="%s"/>'):format(f1(x), y + 5, FILL[status], STROKE[status]))
        x = x + 8
      end
      w(('<text x="%s" y="%d" class="bar-label muted">%s %s</text>'):format(f1(x + 4), y + 17, SYMBOL[status], status))
    end
  end
  w("</svg>")
  return table.concat(out)
end

-- ---- HTML ----

local CSS = [[
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; background: #ffffff; color: #1f2328;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 17px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
a { color: #0969da; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; border: 1px solid; font-size: 13px;
  font-weight: 600; white-space: nowrap; }
.status-success { background: #e1f5e1; border-color: #2e7d32; color: #1b5e20; }
.status-failure { background: #ffe1e1; border-color: #c62828; color: #8e0000; }
.status-cancelled { background: #ffe1e1; border-color: #8e0000; color: #8e0000; }
.status-skipped { background: #eeeeee; border-color: #9e9e9e; color: #555555; }
.status-running { background: #fff4e1; border-color: #ef6c00; color: #8a3c00; }
.status-pending { background: #ffffff; border-color: #9e9e9e; color: #555555; }
.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 6px 24px; margin: 14px 0 0; }
.meta div { min-width: 0; }
.meta dt { font-size: 11.5px; text-transform: uppercase; letter-spacing: .04em; color: #656d76; }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px; background: #ffffff; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font-family: inherit; }
.node-name { font-size: 13px; font-weight: 600; fill: #1f2328; }
.node-status { font-size: 11.5px; }
.node-when { font-size: 10.5px; font-style: italic; fill: #656d76; }
.row-label { font-size: 12px; fill: #1f2328; text-anchor: end; }
.tick { font-size: 11px; fill: #656d76; }
.bar-label { font-size: 11px; fill: #1f2328; }
.muted { fill: #656d76; color: #656d76; font-style: italic; }
.legend { font-size: 12px; color: #656d76; margin-top: 6px; display: flex; gap: 18px; flex-wrap: wrap; }
.legend svg { display: inline-block; vertical-align: middle; margin-right: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #656d76; background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.nowrap, td.name { white-space: nowrap; }
td.note-cell { min-width: 16em; }
.table-scroll { overflow-x: auto; }
.note { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.sha { font-size: 11.5px; overflow-wrap: anywhere; color: #424a53; }
details { margin: 6px 0; }
summary { cursor: pointer; }
pre.outputs { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 8px 10px; overflow: auto;
  max-height: 360px; margin: 6px 0 0; }
footer { margin-top: 36px; color: #656d76; font-size: 12px; }
]]

local function badge(status, text)
  local s = FILL[status] and status or "pending"
  return ('<span class="badge status-%s">%s %s</span>'):format(s, SYMBOL[s], esc(text or status))
end

local function legend()
  local items = {
    { "success", "needs succeeded", "" },
    { "failure", "when failure", ' stroke-dasharray="6 4"' },
    { "always", "when always", ' stroke-dasharray="6 4"' },
    { "decision", "if a decision says so", ' stroke-dasharray="6 4"' },
  }
  local out = { '<div class="legend">' }
  for _, it in ipairs(items) do
    out[#out + 1] = ('<span><svg width="30" height="10" viewBox="0 0 30 10"><line x1="0" y1="5" x2="30" y2="5" '
      .. 'stroke="%s" stroke-width="1.6"%s/></svg>%s</span>'):format(EDGE_COLOUR[it[1]], it[3], it[2])
  end
  for _, s in ipairs({ "success", "failure", "skipped", "cancelled", "running" }) do
    out[#out + 1] = badge(s)
  end
  out[#out + 1] = "</div>"
  return table.concat(out)
end

local function encode_outputs(outputs)
  local ok, text = pcall(json.encode, outputs, { pretty = true })
  if not ok then text = tostring(outputs) end
  if #text > 16000 then text = text:sub(1, 16000) .. "\n… (cut at 16000 bytes)" end
  return text
end

-- report.html(run, p) -> string: one page that works offline, from the run's directory (links are
-- relative: logs/STAGE.log, artifacts/FILE).
function report.html(run, p)
  local names = stage_names(run, p)
  local out = {}
  local function w(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  local title = ("%s — run %s — %s"):format(clean(run.pipeline or (p and p.name) or "pipeline"), clean(run.id),
    clean(run.status))
  w('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    -- nothing may load or run, whatever a stage managed to put into the page
    [[<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">]],
    "\n<title>", esc(title), "</title>\n<style>\n", CSS, "</style>\n</head>\n<body>\n")

  -- header
  local total = total_duration(run, names)
  w("<header>\n<h1>", esc(run.pipeline or (p and p.name) or "pipeline"), " ", badge(run.status or "pending"), "</h1>\n")
  w('<dl class="meta">')
  local function meta(label, value, mono)
    if value == nil or value == "" then return end
    w("<div><dt>", label, "</dt><dd", mono and ' class="mono"' or "", ">", esc(value), "</dd></div>")
  end
  meta("run", run.id, true)
  meta("tag", run.tag, true)
  meta("environment", run.env)
  meta("actor", run.actor)
  meta("started", human_time(run.started_at))
  meta("finished", human_time(run.finished_at))
  meta("duration", total and fmt_duration(total))
  meta("pipeline file", run.file or (p and p.file), true)
  local vars = type(run.vars) == "table" and run.vars or {}
  local var_keys = {}
  for k in pairs(vars) do var_keys[#var_keys + 1] = k end
  table.sort(var_keys, function(a, b) return tostring(a) < tostring(b) end)
  if #var_keys > 0 then
    local lines = {}
    for _, k in ipairs(var_keys) do lines[#lines + 1] = esc(k) .. "=" .. esc(vars[k]) end
    w('<div><dt>vars</dt><dd class="mono">', table.concat(lines, "<br>"), "</dd></div>")
  end
  w("</dl>\n</header>\n")

  -- graph
  w('<h2>Job dependencies</h2>\n<div class="scroll">', graph_svg(run, p, names), "</div>\n", legend(), "\n")

  -- timeline
  w('<h2>Timeline</h2>\n<div class="scroll">', timeline_svg(run, names), "</div>\n")

  -- stages
  w('<h2>Stages</h2>\n<div class="table-scroll"><table class="stages">\n<thead><tr><th>Stage</th><th>Status</th><th>Started</th>',
    "<th>Duration</th><th>Attempts</th><th>Error / reason</th><th>Log</th></tr></thead>\n<tbody>\n")
  for _, n in ipairs(names) do
    local rec = record(run, n)
    local status = rec.status or "pending"
    local note = {}
    if rec.error then note[#note + 1] = esc(rec.error) end
    if rec.reason then note[#note + 1] = esc(rec.reason) end
    if rec.allowed_failure then note[#note + 1] = '<span class="muted">allowed to fail (continue_on_error)</span>' end
    local cases = tests_of(rec)
    if cases then
      local c = count_cases(cases)
      note[#note + 1] = ("tests: %d passed, %d failed, %d skipped"):format(c.passed, c.failure + c.error, c.skipped)
    end
    local log_cell = '<span class="muted">none</span>'
    local log_path = run.dir and (run.dir .. "/logs/" .. n .. ".log")
    -- a stage that never ran (not selected, skipped before its start) has no log file
    if not log_path or fs.exists(log_path) then
      log_cell = ('<a href="logs/%s.log">%s.log</a>'):format(url_segment(n), esc(n))
    end
    w(('<tr id="stage-%s"><td class="name"><strong>%s</strong></td><td class="nowrap">%s</td><td class="nowrap">%s</td>'
      .. '<td class="num">%s</td><td class="num">%s</td><td class="note-cell"><div class="note">%s</div></td>'
      .. '<td class="nowrap">%s</td></tr>\n'):format(
      url_segment(n), esc(n), badge(status), esc(clock(rec.started_at)), esc(fmt_duration(rec.duration)),
      (rec.attempts or 0) > 0 and tostring(rec.attempts) or "", table.concat(note, "\n"), log_cell))
  end
  w("</tbody>\n</table></div>\n")

  -- tests that did not pass
  local failed_cases, any_tests = {}, false
  for _, n in ipairs(names) do
    for _, c in ipairs(tests_of(record(run, n)) or {}) do
      any_tests = true
      if case_kind(c) ~= "passed" then failed_cases[#failed_cases + 1] = { stage = n, case = c } end
    end
  end
  if any_tests then
    w('<h2>Tests</h2>\n<p>JUnit XML: <a href="junit.xml">junit.xml</a></p>\n')
    if #failed_cases > 0 then
      w("<table>\n<thead><tr><th>Stage</th><th>Test</th><th>Status</th><th>Time</th><th>Message</th></tr></thead>\n<tbody>\n")
      for _, fc in ipairs(failed_cases) do
        local c, k = fc.case, case_kind(fc.case)
        local shown = k == "skipped" and "skipped" or "failure"
        w(("<tr><td>%s</td><td>%s%s</td><td>%s</td><td class=\"num\">%s</td><td><div class=\"note\">%s</div></td></tr>\n"):format(
          esc(fc.stage), c.classname and (esc(c.classname) .. " › ") or "", esc(c.name or "(unnamed)"),
          badge(shown, k == "error" and "error" or (k == "failure" and "failed" or "skipped")),
          type(c.time) == "number" and esc(fmt_duration(c.time)) or "", esc(c.message or "")))
      end
      w("</tbody>\n</table>\n")
    else
      w("<p>Every test passed.</p>\n")
    end
  end

  -- artifacts
  w("<h2>Artifacts</h2>\n")
  -- a retried stage stores its artifact again under the same path: one row, the newest entry
  local arts, at = {}, {}
  for _, n in ipairs(names) do
    for _, a in ipairs(record(run, n).artifacts or {}) do
      local key = a.path or (tostring(a.stage) .. "\0" .. tostring(a.name))
      if at[key] then arts[at[key]] = a else arts[#arts + 1], at[key] = a, #arts + 1 end
    end
  end
  if #arts == 0 then
    w('<p class="muted">No artifacts.</p>\n')
  else
    w("<table>\n<thead><tr><th>Artifact</th><th>Stage</th><th>Size</th><th>SHA-256</th><th>Created</th></tr></thead>\n<tbody>\n")
    for _, a in ipairs(arts) do
      local file = basename(a.path or a.name or "")
      w(('<tr><td><a href="artifacts/%s">%s</a></td><td>%s</td><td class="num">%s</td><td class="mono sha">%s</td>'
        .. '<td class="nowrap">%s</td></tr>\n'):format(url_segment(file), esc(a.name or file), esc(a.stage),
        esc(human_size(a.size)), esc(a.sha256), esc(human_time(a.created_at))))
    end
    w("</tbody>\n</table>\n")
  end

  -- outputs
  local with_outputs = {}
  for _, n in ipairs(names) do
    local o = record(run, n).outputs
    if type(o) == "table" and next(o) ~= nil then with_outputs[#with_outputs + 1] = n end
  end
  if #with_outputs > 0 then
    w("<h2>Outputs</h2>\n")
    for _, n in ipairs(with_outputs) do
      w("<details><summary><strong>", esc(n), '</strong></summary><pre class="outputs">',
        esc(encode_outputs(record(run, n).outputs)), "</pre></details>\n")
    end
  end

  w("<footer>Generated by stagehost at ", esc(human_time(os.date("!%Y-%m-%dT%H:%M:%SZ"))),
    ". Links are relative to the run's directory.</footer>\n</body>\n</html>\n")
  return table.concat(out)
end

-- ---- JUnit ----

local function num(n) return ("%.3f"):format(type(n) == "number" and n or 0) end

-- report.junit(run) -> string, or nil when no stage reported outputs.tests.
function report.junit(run)
  local names = stage_names(run, nil)
  local suites, all = {}, { tests = 0, failure = 0, error = 0, skipped = 0, time = 0 }
  for _, n in ipairs(names) do
    local rec = record(run, n)
    local cases = tests_of(rec)
    if cases then
      local c = count_cases(cases)
      local time = type(rec.duration) == "number" and rec.duration or c.time
      for _, k in ipairs({ "tests", "failure", "error", "skipped" }) do all[k] = all[k] + c[k] end
      all.time = all.time + time
      local s = { ('  <testsuite name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%s"%s>'):format(
        esc(n), c.tests, c.failure, c.error, c.skipped, num(time),
        rec.started_at and (' timestamp="%s"'):format(esc(tostring(rec.started_at):gsub("Z$", ""))) or "") }
      for _, case in ipairs(cases) do
        local k = case_kind(case)
        local head = ('    <testcase name="%s" classname="%s" time="%s"'):format(esc(case.name or "(unnamed)"),
          esc(case.classname or n), num(case.time))
        if k == "passed" then
          s[#s + 1] = head .. "/>"
        else
          local tag = k == "skipped" and "skipped" or k
          local msg = case.message and esc(case.message)
          local first = msg and msg:match("^[^\n]*") or ""
          s[#s + 1] = head .. ">"
          if msg then
            s[#s + 1] = ('      <%s message="%s">%s</%s>'):format(tag, first, msg, tag)
          else
            s[#s + 1] = ("      <%s/>"):format(tag)
          end
          s[#s + 1] = "    </testcase>"
        end
      end
      s[#s + 1] = "  </testsuite>"
      suites[#suites + 1] = table.concat(s, "\n")
    end
  end
  if #suites == 0 then return nil end
  return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="%s" tests="%d" failures="%d" errors="%d" '
    .. 'skipped="%d" time="%s">\n%s\n</testsuites>\n'):format(esc((run.pipeline or "pipeline") .. " " .. (run.id or "")),
    all.tests, all.failure, all.error, all.skipped, num(all.time), table.concat(suites, "\n"))
end

-- ---- GitHub job summary ----

local HEADING_SYMBOL = { success = "✅", failure = "❌", cancelled = "🚫", running = "⏳", pending = "⏳", skipped = "⏭️" }

-- report.github_summary(run, p) -> markdown for $GITHUB_STEP_SUMMARY.
function report.github_summary(run, p)
  local names = stage_names(run, p)
  local out = {}
  local function w(s) out[#out + 1] = s end
  w(("## %s %s: %s\n\n"):format(HEADING_SYMBOL[run.status] or "•", md(run.pipeline or (p and p.name) or "pipeline"),
    md(run.status or "pending")))
  local facts = { ("run %s"):format(md(run.id)) }
  if run.tag then facts[#facts + 1] = "tag " .. md(run.tag) end
  if run.env then facts[#facts + 1] = "env " .. md(run.env) end
  if run.actor then facts[#facts + 1] = "by " .. md(run.actor) end
  if run.started_at then facts[#facts + 1] = "started " .. md(human_time(run.started_at)) end
  local total = total_duration(run, names)
  if total then facts[#facts + 1] = "took " .. md(fmt_duration(total)) end
  w(table.concat(facts, " · ") .. "\n\n")
  if p then
    local statuses = {}
    for _, n in ipairs(names) do statuses[n] = record(run, n).status end
    w("```mermaid\n" .. clean(pipeline.mermaid(p, statuses)) .. "```\n\n")
  end
  w("| stage | status | started | duration | note |\n|---|---|---|---|---|\n")
  for _, n in ipairs(names) do
    local rec = record(run, n)
    local note = {}
    if rec.error then note[#note + 1] = md(rec.error) end
    if rec.reason then note[#note + 1] = md(rec.reason) end
    if rec.allowed_failure then note[#note + 1] = "allowed to fail" end
    if (rec.attempts or 0) > 1 then note[#note + 1] = ("%d attempts"):format(rec.attempts) end
    local cases = tests_of(rec)
    if cases then
      local c = count_cases(cases)
      note[#note + 1] = ("tests: %d passed, %d failed, %d skipped"):format(c.passed, c.failure + c.error, c.skipped)
    end
    w(("| %s | %s %s | %s | %s | %s |\n"):format(md(n), SYMBOL[rec.status] or "", md(rec.status or "pending"),
      clock(rec.started_at), fmt_duration(rec.duration), table.concat(note, "; ")))
  end
  w("\n")
  return table.concat(out)
end

-- ---- writing ----

-- report.write_all(run, p) -> list of paths written, or nil, message. report.html and junit.xml
-- go beside run.json; the summary is appended, as GitHub expects of every step.
function report.write_all(run, p)
  local written = {}
  if run.dir then
    local path = run.dir .. "/report.html"
    local ok, err = fs.write(path, report.html(run, p))
    if not ok then return nil, ("cannot write %s: %s"):format(path, err) end
    written[#written + 1] = path
    local xml = report.junit(run)
    path = run.dir .. "/junit.xml"
    if xml then
      ok, err = fs.write(path, xml)
      if not ok then return nil, ("cannot write %s: %s"):format(path, err) end
      written[#written + 1] = path
    elseif fs.exists(path) then
      fs.remove(path) -- a resumed run that no longer has tests must not keep an old verdict
    end
  end
  local summary = os.getenv("GITHUB_STEP_SUMMARY")
  if summary and summary ~= "" then
    local f, err = io.open(summary, "a")
    if not f then return nil, ("cannot append to GITHUB_STEP_SUMMARY: %s"):format(err) end
    local ok, werr = f:write(report.github_summary(run, p))
    f:close()
    if not ok then return nil, ("cannot append to GITHUB_STEP_SUMMARY: %s"):format(werr) end
    written[#written + 1] = summary
  end
  return written
end

return report
