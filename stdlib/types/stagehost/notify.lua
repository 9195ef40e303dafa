---@meta stagehost.notify
-- LuaLS annotations for `require "stagehost.notify"` (stdlib/stagehost/notify.lua).
-- Definitions only: this file is never loaded by stagehost.

---@alias stagehost.notify.Event "run.started"|"checks.completed"|"approval.requested"|"approval.reminder"|"approval.decided"|"deploy.success"|"deploy.failure"|string

---A channel's configuration: `channel` names a built-in (console, slack, teams, webhook, email,
---github), one added with notify.channel, or a file channels/NAME.lua; the other fields are its
---settings (url, secret, from, to, username, password, tls, issue, deployment, ...).
---@class stagehost.notify.ChannelConfig
---@field channel string
---@field on? string[] event patterns: "deploy.*", "approval.?ecided"
---@field name? string a name for the results and log lines
---@field enabled? boolean
---@field retry? integer attempts
---@field timeout? number seconds
---@field [string] any

---@class stagehost.notify.Field
---@field name string
---@field value string

---@class stagehost.notify.Message
---@field event stagehost.notify.Event
---@field title string
---@field text? string
---@field phase? "validation"|"infrastructure"|"frontend"|"tests"|"release"|string
---@field status? "success"|"failure"|"cancelled"|"info"|string
---@field fields? stagehost.notify.Field[]|table<string, string>
---@field run? {id?: string, pipeline?: string, tag?: string, url?: string}
---@field deployment? integer GitHub deployment id (github channel)
---@field sha? string commit (github channel)

---@class stagehost.notify.Result
---@field ok boolean
---@field error? string

---A channel implementation: a function, or a table with `send` and what it needs.
---@alias stagehost.notify.Impl fun(message: stagehost.notify.Message, config: stagehost.notify.ChannelConfig)|{send: fun(message: stagehost.notify.Message, config: stagehost.notify.ChannelConfig), required?: string[]|table<string, string>, secrets?: string[], settings?: table<string, string>, check?: function, payload?: function}

---@class stagehost.notify
---@field EVENTS string[] the events stagehost sends
---@field PHASES string[] the phases of deploy.failure
---@field BUILTIN string[] the built-in channels
local notify = {}

---Send to every configured channel whose `on` matches, concurrently, with retries; a failing
---channel is logged and never raises.
---@param message stagehost.notify.Message
---@return table<string, stagehost.notify.Result>
function notify.send(message) end

---Set the channels of this host (a pipeline's `notify = {...}` does it for its run).
---@param list stagehost.notify.ChannelConfig[]|nil
---@param opts? {run?: table, dir?: string, where?: string}
---@return table previous
function notify.configure(list, opts) end

---Check a list of channels as a pipeline's load does (exit 2 naming what is wrong).
---@param list stagehost.notify.ChannelConfig[]
---@param where? string file:line for the messages
---@param dir? string the pipeline's directory, where channels/NAME.lua files are found
---@return table checked
function notify.check(list, where, dir) end

---Add a channel by name.
---@param name string
---@param impl stagehost.notify.Impl
function notify.channel(name, impl) end

---A channel (for notify.channel or a channel file) that POSTs `payload(message, config)` as JSON
---to a secret webhook URL, as the slack and teams channels do: `url` is required, masked and
---must be http(s); `settings` adds the channel's own to `url` and `insecure`.
---@param spec {payload: fun(message: stagehost.notify.Message, config: stagehost.notify.ChannelConfig): any, example: string, url_is: string, settings?: table<string, string>}
---@return stagehost.notify.Impl
function notify.json_webhook(spec) end

---The POST every HTTP channel makes; raises an error object (kind "delivery") on failure.
---@param url string
---@param opts? {headers?: table<string, string>, timeout?: number, insecure?: boolean, json?: any, body?: string}
---@return table response
function notify.post(url, opts) end

---The message as plain text (for e-mail and simple channels).
---@param message stagehost.notify.Message
---@return string
function notify.plain(message) end

---A copy of a value with every string masked.
---@generic T
---@param value T
---@return T
function notify.masked(value) end

---Shell-style match of an event name: '*' any run of characters, '?' one.
---@param pattern string
---@param event string
---@return boolean
function notify.glob(pattern, event) end

---Called by the engine when a run starts: its pipeline's channels, then run.started.
---@param run table
function notify.run_started(run) end

return notify
