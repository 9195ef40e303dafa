-- require "stagehost" gives every module; each loads on first use, so a script that only
-- needs proc does not pay for the others.
local modules = {
  task = true, proc = true, fs = true, json = true, log = true, http = true, crypto = true,
  xml = true, yaml = true, aws = true, github = true, sandbox = true, pipeline = true, errors = true, notify = true,
  approval = true,
}

return setmetatable({}, {
  __name = "stagehost",
  __index = function(self, name)
    if not modules[name] then
      error(("stagehost has no module '%s'"):format(tostring(name)), 2)
    end
    local m = require("stagehost." .. name)
    rawset(self, name, m)
    return m
  end,
})
