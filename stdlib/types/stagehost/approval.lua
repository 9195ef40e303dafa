---@meta stagehost.approval
-- LuaLS annotations for `require "stagehost.approval"` (stdlib/stagehost/approval.lua).
-- Definitions only: this file is never loaded by stagehost.

---@alias stagehost.approval.Decision "approved"|"rejected"|"timeout"

---A group of approvers: `required` of its `members` must approve (AND across groups).
---@class stagehost.approval.Group
---@field team string
---@field members string[]
---@field required? integer default 1

---A vote as a gate counts it.
---@class stagehost.approval.Vote
---@field who string
---@field decision "approved"|"rejected"
---@field comment? string
---@field at string ISO 8601 with milliseconds, UTC
---@field via string the channel: "command line", "command line (--var approve)", "stage", ...
---@field shown_sha256 string the sha256 of what the voter was shown (checklist, preview, commit, tag)

---A vote that comes with the request (`votes = {...}`): checked like any other.
---@class stagehost.approval.GivenVote
---@field who? string default: the run's actor
---@field decision "approved"|"rejected"
---@field comment? string
---@field via? string default "stage"

---@class stagehost.approval.RequestOptions
---@field title string one line
---@field checklist? string what the approvers are asked to check (markdown)
---@field preview? string the change-set preview, where the flow has one
---@field approvers? string[]|stagehost.approval.Group[] names, or groups; default: anyone
---@field required? integer approvals needed (default 1; with groups, the sum of theirs)
---@field timeout? number|string seconds or "24h" (the default); a timeout is a decision
---@field forbid? "actor"|"authors"|("actor"|"authors")[] who may not approve
---@field authors_of? string[] {FROM, TO}: the commits whose authors `forbid = "authors"` bars (default: the run's commit)
---@field remind? (string|number)[] e.g. {"1h", "15m"}: an approval.reminder that long before the deadline
---@field require_comment? boolean every vote needs a comment (a rejection always does)
---@field channels? string[] where votes come from: "cli", "web", "terminal", "github" (default {"cli", "web", "terminal"})
---@field votes? stagehost.approval.GivenVote[] votes recorded with the request (the seed's --var approve)

---What approval.request returns.
---@class stagehost.approval.Result
---@field decision stagehost.approval.Decision
---@field votes stagehost.approval.Vote[] the counted votes: each person's latest since what was shown last changed
---@field gate string the gate's id, RUN/STAGE/N
---@field shown_sha256 string
---@field title string
---@field approvals integer
---@field required integer
---@field decided_at? string
---@field commit? string
---@field tag? string
---@field rejected_by? string
---@field reason? string the rejection's comment

---A vote for approval.vote.
---@class stagehost.approval.Ballot
---@field who string
---@field decision "approved"|"rejected"
---@field comment? string
---@field via string the channel
---@field member_of? string a team listed among the approvers ("@org/team") the channel checked `who` is in

---What approval.vote recorded.
---@class stagehost.approval.Recorded: stagehost.approval.Vote
---@field gate string
---@field title string
---@field subject table {checklist_sha256, preview_sha256, commit, tag, tag_commit}
---@field progress string "1 of 2", or "sre 1/1, leads 0/1 (1 of 2)"
---@field decision_now? stagehost.approval.Decision the gate's decision once this vote counts
---@field deadline string
---@field approvals integer approvals counted, this one included
---@field required integer

---A gate waiting for votes, as approval.pending lists it.
---@class stagehost.approval.Pending
---@field gate string
---@field run string
---@field stage string
---@field title string
---@field approvals integer
---@field required integer
---@field progress string
---@field groups? {team: string, have: integer, required: integer}[]
---@field votes stagehost.approval.Vote[]
---@field approvers string[] empty when anyone may approve
---@field deadline string
---@field left integer seconds
---@field host "running"|"interrupted"|"waiting" waiting: a detached run (run --detach)
---@field shown_sha256 string
---@field commit? string
---@field tag? string
---@field decision? stagehost.approval.Decision already reached, not yet recorded by the host

---One event of a gate's audit trail.
---@class stagehost.approval.Event
---@field seq integer
---@field kind "requested"|"reminded"|"voted"|"voided"|"decided"
---@field at string
---@field who? string
---@field via? string
---@field decision? string
---@field comment? string
---@field shown_sha256? string
---@field data? table
---@field prev_hash string
---@field hash string sha256(prev_hash .. canonical JSON of the event)

---A gate with its audit trail (approval.audit, run.json's `approvals`).
---@class stagehost.approval.Audit
---@field gate string
---@field stage string
---@field title string
---@field status "pending"|stagehost.approval.Decision
---@field deadline string
---@field shown_sha256 string
---@field verified boolean the hash chain holds and the gate's row agrees with it
---@field broken_at? integer the event where it breaks (0: the gate's row)
---@field problem? string
---@field events stagehost.approval.Event[]

---Approval gates: durable, hash-chained, voted on from any terminal.
---@class stagehost.approval
local approval = {}

---Inside a stage: record a gate (or find the one a resumed stage asked for) and wait until it
---is decided. Rejected and timed out are results: the stage decides what follows (the seed
---cancels the run).
---@param opts stagehost.approval.RequestOptions
---@return stagehost.approval.Result
function approval.request(opts) end

---Record a vote on a gate (what `stagehost approve` does; channels to come call it too).
---@param store table the state store (a run's run.store, or what the command line opens)
---@param target string|{run: string, stage?: string} a gate id, or a run (and stage) waiting on one
---@param vote stagehost.approval.Ballot
---@return stagehost.approval.Recorded|nil recorded
---@return string? refusal why the vote was refused (nothing changed)
---@return "refused"? code
function approval.vote(store, target, vote) end

---The gates waiting for votes, of runs whose host runs or can be resumed.
---@param store table
---@return stagehost.approval.Pending[]
function approval.pending(store) end

---Every gate of a run with every event and whether its hash chain holds.
---@param store table
---@param run_id string
---@return stagehost.approval.Audit[]
function approval.audit(store, run_id) end

---The `approvals` field of run.json.
---@param run table a Run (or a stored run being written again)
---@return stagehost.approval.Audit[]
function approval.record_of(run) end

return approval
