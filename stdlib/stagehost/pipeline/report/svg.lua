-- The report's two drawings, as inline SVG: the stage graph (columns by dependency depth, rows
-- in declaration order, edges styled by how a stage follows its needs) and the timeline (a
-- gantt chart like the seed's, on an axis in mm:ss from the run's start).
local statuses = require("stagehost.util.status")
local time = require("stagehost.util.time")
local text = require("stagehost.pipeline.report.text")
local view = require("stagehost.pipeline.report.view")

local svg = {}

local clean, esc, url_segment = text.clean, text.esc, text.url_segment
local record, spec, edge_kind, when_label = view.record, view.spec, view.edge_kind, view.when_label
local fmt_duration = time.duration_fine
local FILL, STROKE, SYMBOL, known = statuses.fill, statuses.stroke, statuses.symbol, statuses.known

-- Edges by kind; the legend under the graph shows the same.
svg.EDGE_KINDS = { "success", "failure", "always", "decision" }
svg.EDGE_COLOUR = { success = "#555555", failure = "#c62828", always = "#555555", decision = "#ef6c00" }
local EDGE_COLOUR = svg.EDGE_COLOUR

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

-- svg.graph(run, p, names) -> the stage graph; each box links to its row (#stage-NAME).
function svg.graph(run, p, names)
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
    local status = known(rec.status)
    local label = SYMBOL[status] .. " " .. status
    if rec.duration then label = label .. " · " .. fmt_duration(rec.duration) end
    return label
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
  local out, w = text.buffer()
  -- the natural size is the most it grows to; it shrinks with the window down to 60 %, then the
  -- wrapper scrolls, so names stay readable
  w(('<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" '
    .. 'style="min-width:%dpx" role="img" aria-label="stage graph">\n'):format(width, height, width, height,
    math.floor(width * 0.6)))
  w("<defs>")
  for _, kind in ipairs(svg.EDGE_KINDS) do
    local colour = EDGE_COLOUR[kind]
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
    local status = known(rec.status)
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
function svg.timeline(run, names)
  local spans, last = view.timing(run, names)
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
  local out, w = text.buffer()
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
    local status = known(rec.status)
    local y = TOP + (i - 1) * ROW_H
    w(('<text x="%d" y="%d" class="row-label">%s</text>'):format(label_w - 12, y + 17, esc(n)))
    local sp = spans[n]
    if sp and not sp.instant then
      local x = label_w + sp.from * scale
      local bw = math.max(3, (sp.to - sp.from) * scale)
      local label = fmt_duration(rec.duration or (sp.to - sp.from))
      if (rec.attempts or 0) > 1 then label = label .. (" · %d tries"):format(rec.attempts) end
      w(('<rect x="%s" y="%d" width="%s" height="%d" rx="3" fill="%s" stroke="%s" stroke-width="1.2">'
        .. '<title>%s: %s, %s</title></rect>'):format(f1(x), y + 5, f1(bw), ROW_H - 10, FILL[status],
        STROKE[status], esc(n), status, esc(label)))
      -- the label goes after the bar, or inside it when the bar reaches the right edge
      if x + bw + text_width(label, 11, false) + 8 > label_w + CHART_W + RIGHT then
        w(('<text x="%s" y="%d" class="bar-label" text-anchor="end">%s</text>'):format(f1(x + bw - 6), y + 17, esc(label)))
      else
        w(('<text x="%s" y="%d" class="bar-label">%s</text>'):format(f1(x + bw + 6), y + 17, esc(label)))
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

return svg
