-- The HTML of the approval page (stagehost.approval.web decides what to show; this only writes
-- it). Every string that comes from a pipeline, a voter or a request goes through esc(); the
-- one exception is the checklist, which is libcmark's safe-mode HTML (raw HTML left out).
local markdown = require("stagehost.markdown")
local url = require("stagehost.util.url")

local html = {}

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local function esc(s) return (tostring(s == nil and "" or s):gsub("[&<>\"']", ESC)) end
html.esc = esc

html.CSS = [[
body{font:15px/1.45 system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#1b1f23}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}
.meta{color:#555}.box{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
pre{background:#f6f8fa;padding:.6rem;overflow:auto}.approved{color:#1a7f37}.rejected,.refused{color:#cf222e}
.notice{padding:.6rem 1rem;border-radius:6px;background:#fff8c5}.notice.refused{background:#ffebe9}.notice.ok{background:#dafbe1}
textarea{width:100%;min-height:4rem}button{padding:.4rem 1rem;margin-right:.5rem}
]]

-- The style is inline, allowed by its hash in the CSP: no second request (a waiting host's
-- server may be gone by then: the vote that decides the gate ends its wait).
html.CSS_HASH = "sha256-" .. require("stagehost.crypto").base64_encode(require("stagehost.crypto").sha256(html.CSS, "raw"))

local function page(title, body)
  return table.concat{ '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width,initial-scale=1">',
    '<style>', html.CSS, '</style><title>', esc(title), ' — stagehost</title></head><body>\n',
    body, '\n</body></html>\n' }
end

-- html.error(status_text, why) -> a page saying what went wrong
function html.error(title, why)
  return page(title, ('<h1>%s</h1><p class="notice refused" id="reason">%s</p><p><a href="/">All pending approvals</a></p>')
    :format(esc(title), esc(why)))
end

-- html.list(pending) -> the page listing pending gates (approval.pending's rows)
function html.list(pending)
  local rows = {}
  for _, p in ipairs(pending) do
    rows[#rows + 1] = ('<tr><td><a href="/gate?id=%s">%s</a></td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>')
      :format(esc(url.encode(p.gate)), esc(p.title), esc(p.run), esc(p.stage), esc(p.progress), esc(p.deadline), esc(p.host))
  end
  local body = #rows == 0 and '<p id="none">No approvals are waiting.</p>'
    or ('<table id="pending"><tr><th>Approval</th><th>Run</th><th>Stage</th><th>Votes</th><th>Deadline</th><th>Host</th></tr>%s</table>')
      :format(table.concat(rows, "\n"))
  return page("Pending approvals", "<h1>Pending approvals</h1>\n" .. body)
end

local function votes_table(votes)
  if #votes == 0 then return '<p id="votes">No votes yet.</p>' end
  local rows = {}
  for _, v in ipairs(votes) do
    rows[#rows + 1] = ('<tr><td>%s</td><td class="%s">%s</td><td>%s</td><td>%s</td><td>%s</td></tr>'):format(
      esc(v.who), esc(v.decision), esc(v.decision), esc(v.comment), esc(v.via), esc(v.at))
  end
  return ('<table id="votes"><tr><th>Who</th><th>Vote</th><th>Comment</th><th>Via</th><th>At</th></tr>%s</table>')
    :format(table.concat(rows, "\n"))
end

-- The form, for someone who may vote: identity shown, the token and CSRF token hidden.
local function form(v)
  if v.status ~= "pending" then
    return ('<p class="notice" id="decided">This approval is decided: <b class="%s">%s</b>.</p>'):format(esc(v.status), esc(v.status))
  end
  if not v.who then
    return '<p class="notice" id="no-identity">To vote, open the signed link you were sent (or use <code>stagehost approve</code>).</p>'
  end
  return table.concat{
    '<form method="post" action="/gate" id="vote" class="box">',
    ('<p>Voting as <b id="who">%s</b>%s</p>'):format(esc(v.who), v.via_header and " (from your sign-in)" or ""),
    ('<input type="hidden" name="id" value="%s">'):format(esc(v.gate)),
    v.token and ('<input type="hidden" name="t" value="%s">'):format(esc(v.token)) or "",
    ('<input type="hidden" name="csrf" value="%s">'):format(esc(v.csrf)),
    ('<input type="hidden" name="shown" value="%s">'):format(esc(v.shown_sha256)),
    '<label for="comment">Comment', v.require_comment and " (required)" or " (required to reject)", '</label>',
    '<textarea id="comment" name="comment" maxlength="4000"></textarea><p>',
    '<button type="submit" name="decision" value="approve" id="approve">Approve</button>',
    '<button type="submit" name="decision" value="reject" id="reject">Reject</button></p></form>' }
end

-- html.gate(v) -> one gate's page. v: {gate, title, run, stage, status, progress, deadline,
-- checklist, preview, commit, tag, shown_sha256, votes, approvers, who, token, csrf, notice,
-- notice_kind, require_comment, via_header}
function html.gate(v)
  local parts = { ('<p><a href="/">All pending approvals</a></p><h1 id="title">%s</h1>'):format(esc(v.title)) }
  if v.notice then
    parts[#parts + 1] = ('<p class="notice %s" id="%s">%s</p>'):format(esc(v.notice_kind or ""),
      v.notice_kind == "refused" and "reason" or "result", esc(v.notice))
  end
  parts[#parts + 1] = ('<p class="meta">Run <b>%s</b>, stage <b>%s</b> · commit <code id="commit">%s</code> · tag <code id="tag">%s</code></p>')
    :format(esc(v.run), esc(v.stage), esc(v.commit and v.commit:sub(1, 12) or "none"), esc(v.tag or "none"))
  parts[#parts + 1] = ('<p class="meta">Status <b id="status" class="%s">%s</b> · votes <b id="progress">%s</b> from %s · until %s</p>')
    :format(esc(v.status), esc(v.status), esc(v.progress), esc(v.approvers), esc(v.deadline))
  parts[#parts + 1] = '<h2>Checklist</h2><div class="box" id="checklist">' .. markdown.html(v.checklist or "") .. '</div>'
  if v.preview then
    parts[#parts + 1] = '<h2>Change set</h2><pre id="preview">' .. esc(v.preview) .. '</pre>'
  end
  parts[#parts + 1] = ('<p class="meta">A vote is bound to what is shown here: sha256 <code>%s</code>.</p>'):format(esc(v.shown_sha256))
  parts[#parts + 1] = '<h2>Votes</h2>' .. votes_table(v.votes)
  parts[#parts + 1] = form(v)
  return page(v.title, table.concat(parts, "\n"))
end

return html
