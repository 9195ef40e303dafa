-- Streaming benchmark, stagehost side: a child writes SIZE bytes of zeros straight into PATH.
-- usage: stagehost stream.lua PATH [SIZE=268435456]; run.sh checks the file's size itself.
local proc = require("stagehost.proc")

local path = arg[1] or error("usage: stagehost stream.lua PATH [SIZE]")
local size = arg[2] or "268435456"

local r = proc.run{"head", "-c", size, "/dev/zero", stdout = path}
if not r.ok then
  io.stderr:write(("stream.lua: head exited with %s: %s\n"):format(tostring(r.code), tostring(r.stderr)))
  os.exit(1)
end
print("ok " .. size)
