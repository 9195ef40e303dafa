-- A real nginx for tests: its own config and directories in a temp dir, on a free loopback
-- port, in the foreground as a child of the test; stopped when the handle is closed.
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local task = require("stagehost.task")
local http = require("stagehost.http")

local M = {}

-- A free port on 127.0.0.1 (the kernel picks it; nginx needs a number up front).
function M.free_port()
  local r = proc.run{ "python3", "-c",
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" }
  return assert(tonumber(r.stdout), "no free port: " .. r.stderr)
end

-- `user root` keeps the worker able to write the test's own (root-owned) dirs when CI runs as
-- root; run as anyone else, nginx ignores it with a warning.
local CONF = [[
user root;
worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  fastcgi_temp_path %s/tmp/fastcgi;
  uwsgi_temp_path %s/tmp/uwsgi;
  scgi_temp_path %s/tmp/scgi;
  keepalive_requests 1000000;
  client_max_body_size 64m;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:%d;
    root %s/html;
    location = /redirect { return 302 /1k.txt; }
    location = /redirect-loop { return 302 /redirect-loop; }
    location = /host { return 200 "host=$host uri=$request_uri"; }
    location = /upload { return 200 "length=$content_length type=$content_type method=$request_method"; }
    location = /headers { add_header X-Multi one; add_header X-Multi two; return 200 "ok"; }
    location = /status/503 { return 503 "busy"; }
    location /slow/ { limit_rate 32k; alias %s/html/; }
    location /dav/ { dav_methods PUT DELETE; create_full_put_path on; }
    location = /nginx_status { stub_status; }
  }
}
]]

-- Line i of big.bin (8 MiB of 1 KiB lines, each saying its number).
function M.big_line(i) return ("%8d"):format(i) .. ("."):rep(1015) .. "\n" end

-- M.start() -> server with .port, .url(path), .dir, and :close()
function M.start()
  local dir = os.tmpname()
  os.remove(dir)
  for _, d in ipairs{ dir, dir .. "/html", dir .. "/tmp" } do assert(fs.mkdir(d)) end
  assert(fs.write(dir .. "/html/1k.txt", ("0123456789abcdef"):rep(64)))
  local big = {}
  for i = 1, 8 * 1024 do big[i] = M.big_line(i) end
  assert(fs.write(dir .. "/html/big.bin", table.concat(big)))
  local port = M.free_port()
  assert(fs.write(dir .. "/nginx.conf", CONF:format(dir, dir, dir, dir, dir, dir, dir, port, dir, dir)))
  local p = proc.spawn{ "nginx", "-c", dir .. "/nginx.conf", "-p", dir, name = "nginx" }
  local server = { port = port, dir = dir }
  function server.url(path) return ("http://127.0.0.1:%d%s"):format(port, path) end
  function server.close()
    p:kill("TERM")
    p:wait()
    fs.remove(dir, { recursive = true })
  end
  -- ready when it answers
  local deadline = task.now() + 10
  while true do
    local ok, r = pcall(http.request, { url = server.url("/1k.txt"), timeout = 1 })
    if ok and r.status == 200 then break end
    if task.now() > deadline then
      server.close()
      error("nginx did not start: " .. (fs.read(dir .. "/error.log") or "?"))
    end
    task.sleep(0.02)
  end
  -- connections nginx has accepted so far (stub_status)
  function server.accepted()
    local r = http.request{ url = server.url("/nginx_status") }
    return tonumber(r.body:match("\n%s*(%d+)%s+%d+%s+%d+"))
  end
  return setmetatable(server, { __close = server.close })
end

return M
