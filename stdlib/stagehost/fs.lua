-- Files: read, write (atomic), exists, mkdir (with parents), list, remove.
-- Each call runs on the thread pool and yields the task; failures return nil, message, code.
return require "stagehost.core.fs"
