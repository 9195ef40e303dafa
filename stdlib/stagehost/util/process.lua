-- Processes as /proc shows them: a pid with its start time names a process for good (a pid
-- alone may be reused once its process died), which is how a host, a server or a process
-- group recorded in the state directory is recognised later.
local process = {}

-- process.start_time(pid) -> the start time (clock ticks since boot, field 22 of
-- /proc/PID/stat, as a string), or nil when there is no such process.
function process.start_time(pid)
  local f = io.open("/proc/" .. tostring(pid) .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  -- the command name (field 2) is in parentheses and may hold spaces and parentheses itself
  local after = stat and stat:match("^%d+ %b() (.*)$")
  if not after then return nil end
  local fields = {}
  for v in after:gmatch("%S+") do fields[#fields + 1] = v end
  return fields[20]
end

-- process.self() -> this process's pid
function process.self()
  local f = io.open("/proc/self/stat")
  local pid = f and tonumber(f:read("a"):match("^(%d+)"))
  if f then f:close() end
  return pid
end

-- process.alive(pid, started) -> whether the process recorded as (pid, start time) still runs
function process.alive(pid, started)
  local now = pid and process.start_time(pid)
  return now ~= nil and now == started
end

return process
