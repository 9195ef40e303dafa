-- HTTP server benchmark, stagehost side: a hello-world http.serve on 127.0.0.1, a free port.
-- usage: stagehost http_server.lua
-- prints the port on a line of its own once it listens, then serves until it is terminated;
-- run.sh drives it with wrk and checks the answers.
local http = require("stagehost.http")
local task = require("stagehost.task")

local server = http.serve{
  host = "127.0.0.1",
  port = 0,
  handler = function(req) return { status = 200, body = "hello" } end,
}
local port = math.tointeger(server and server.port)
if not port or port <= 0 then
  io.stderr:write("http_server.lua: http.serve returned no port (got ", tostring(server and server.port), ")\n")
  os.exit(1)
end
print(port)
io.stdout:flush()
-- keep the script (and so the server) alive whatever http.serve does with the loop's refs
while true do task.sleep(3600) end
