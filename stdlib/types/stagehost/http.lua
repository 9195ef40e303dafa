---@meta stagehost.http
-- LuaLS annotations for `require "stagehost.http"` (bindings/http_client.c,
-- bindings/http_server.c and stdlib/stagehost/http.lua). Definitions only: never loaded.

---`retry = {...}` of `http.request`: a `stagehost.util.retry` policy with http's defaults and
---`statuses` (retried on 408/425/429/500/502/503/504 by default).
---@class stagehost.http.RetryOptions: stagehost.util.retry.Policy
---@field statuses? table<integer, boolean> the statuses to retry, as a set `{[503] = true}`
---@field max? number read as `cap` (the old name)

---@class stagehost.http.RequestOptions
---@field url string http:// or https://; a malformed URL raises before anything is sent
---@field method? string upper case; default GET, or POST with a body
---@field headers? table<string, string|number>
---@field body? string sent as is, with no Content-Type unless given
---@field json? any encoded as the body, with `Content-Type: application/json`
---@field body_file? string a file streamed as the body
---@field timeout? number total seconds (none by default)
---@field connect_timeout? number seconds (default 30)
---@field retry? integer|false|stagehost.http.RetryOptions attempts, or a policy; nil or false is one attempt
---@field output? string stream the body into this file (written beside it, renamed when complete)
---@field follow? boolean follow redirects
---@field max_redirects? integer default 10
---@field insecure? boolean do not verify TLS (logs a warning)
---@field max_body? number decoded bytes of a body held in memory (default 64 MiB; past it: error code EBODYLIMIT)
---@field max_output? number decoded bytes written to `output` (no limit by default; past it: EBODYLIMIT)

---Any HTTP status is a result.
---@class stagehost.http.Response
---@field status integer
---@field headers table<string, string> lower-case names; repeated ones joined with ", "
---@field body? string absent with `output = path`
---@field url string the URL answered (after redirects)
---@field duration number seconds

---What a handler gets.
---@class stagehost.http.Request
---@field method string
---@field path string
---@field query? string the part after '?', undecoded
---@field url string the request target as sent
---@field version string "1.1"
---@field headers table<string, string> lower-case names
---@field body string chunked bodies decoded
---@field remote string the peer's address
local Request = {}

---@class stagehost.http.StreamOptions
---@field status? integer default 200
---@field headers? table<string, string|number>

---Starts a streamed (chunked) response.
---@param opts? stagehost.http.StreamOptions
---@return stagehost.http.Stream|nil stream
---@return string? message
---@return string? code "ECONNRESET" once the client is gone
function Request:stream(opts) end

---A chunked response body (`req:stream`).
---@class stagehost.http.Stream
local Stream = {}

---Sends a chunk; waits until written (backpressure).
---@param data string
---@return true|nil ok
---@return string? message
---@return string? code e.g. "ECONNRESET" once the client is gone
function Stream:write(data) end

---Sends the last chunk; idempotent, never waits.
function Stream:close() end

---What a handler returns: a table, or a string (200, text/plain).
---@class stagehost.http.HandlerResponse
---@field status? integer default 200
---@field headers? table<string, string|number>
---@field body? string

---@class stagehost.http.ServeOptions
---@field handler fun(req: stagehost.http.Request): stagehost.http.HandlerResponse|string|nil runs in its own task per request
---@field host? string default "127.0.0.1"
---@field port? integer default 0: any free port (see `server.port`)
---@field body_limit? number bytes (default 1 MiB; over it: 413)
---@field header_limit? number bytes (default 64 KiB; over it: 431)
---@field header_timeout? number seconds (default 10)
---@field body_timeout? number seconds (default 30)
---@field idle_timeout? number seconds (default 30)

---A server of `http.serve`; one never closed keeps the script running.
---@class stagehost.http.Server
---@field port integer the port it got
---@field host string
local Server = {}

---Stops accepting, closes idle connections and (inside a task) waits for requests in flight.
function Server:close() end

---HTTP client (libcurl on the event loop) and server (libuv + http-parser).
---@class stagehost.http
local http = {}

---Sends a request. Any HTTP status is a result; a transport failure (refused, timed out, TLS,
---cut off) raises an error naming the method and URL.
---@param opts stagehost.http.RequestOptions
---@return stagehost.http.Response
function http.request(opts) end

---Serves HTTP/1.1; each request's handler runs in its own task.
---@param opts stagehost.http.ServeOptions
---@return stagehost.http.Server
function http.serve(opts) end

---Seconds a Retry-After value (seconds or an HTTP date) asks for; nil when unreadable.
---@param value string|table<string, string>|nil a header value, or lower-case headers
---@param now? integer epoch seconds (default os.time())
---@return integer|number|nil
function http.retry_after(value, now) end

return http
