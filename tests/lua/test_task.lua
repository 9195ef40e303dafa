local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local errors = require("stagehost.errors")

T.test("spawn and join return results, join twice copies them", function()
  local t = task.spawn(function(a, b) task.sleep(0.01) return a + b, "x" end, 2, 3)
  local ok, sum, x = t:join()
  T.eq(ok, true); T.eq(sum, 5); T.eq(x, "x")
  local ok2, sum2 = t:join()
  T.eq(ok2, true); T.eq(sum2, 5)
  T.eq(t:status(), "success")
end)

T.test("a failing task: join gives false, the error and a traceback", function()
  local t = task.spawn(function() task.sleep(0) error("boom") end)
  local ok, err, tb = t:join()
  T.eq(ok, false)
  T.match(err, "test_task.lua:%d+: boom")
  T.match(tb, "stack traceback")
  T.eq(t:status(), "failure")
end)

T.test("yield inside pcall, nested calls, metamethods and xpcall handlers", function()
  local function deep(n)
    if n == 0 then task.sleep(0.001) return "bottom" end
    local ok, v = pcall(deep, n - 1)
    assert(ok, v)
    return v
  end
  T.eq(deep(50), "bottom")
  local ok, err = pcall(function() task.sleep(0.001) error("after yield", 0) end)
  T.eq(ok, false); T.eq(err, "after yield")
  local ok2, v = xpcall(function() task.sleep(0.001) return 7 end, debug.traceback)
  T.eq(ok2, true); T.eq(v, 7)
  -- a yield across table.sort's comparator is a C boundary: it must fail clearly, not crash
  T.raises(function() table.sort({ 3, 2, 1 }, function(a, b) task.sleep(0) return a < b end) end,
    "cannot wait here")
end)

-- a full GC after every resume makes this quadratic: the stress build checks lifetimes on fewer
local N = os.getenv("STAGEHOST_GC_STRESS") and 1000 or 10000

T.test(("%d concurrent tasks all finish and are all collected"):format(N), function()
  local n, done = N, 0
  local tasks = {}
  for i = 1, n do
    tasks[i] = task.spawn(function() task.sleep(0.05) done = done + 1 return i end)
  end
  T.eq(task.stats().tasks >= n, true, "tasks alive while sleeping")
  local sum = 0
  for i = 1, n do
    local ok, v = tasks[i]:join()
    assert(ok)
    sum = sum + v
  end
  T.eq(done, n)
  T.eq(sum, n * (n + 1) // 2)
end, { timeout = 60 })

T.test("sleep order follows deadlines", function()
  local order = {}
  local ts = {}
  for _, d in ipairs{ 0.05, 0.01, 0.03, 0.02, 0.04 } do
    ts[#ts + 1] = task.spawn(function() task.sleep(d) order[#order + 1] = d end)
  end
  for _, t in ipairs(ts) do t:join() end
  T.eq(table.concat(order, ","), "0.01,0.02,0.03,0.04,0.05")
end)

T.test("sleep never returns early", function()
  for _, d in ipairs{ 0.001, 0.02, 0.1 } do
    local t0 = task.now()
    task.sleep(d)
    T.ok(task.now() - t0 >= d, "slept at least " .. d)
  end
end)

T.test("cancel unwinds: pcall sees it and to-be-closed variables run", function()
  local closed, seen = false, nil
  local t = task.spawn(function()
    local _ <close> = setmetatable({}, { __close = function() closed = true end })
    local ok, err = pcall(task.sleep, 10)
    seen = err
    assert(not ok)
    error(err, 0) -- let it propagate
  end)
  task.sleep(0.01)
  T.eq(t:cancel("stop now"), true)
  local ok, err = t:join()
  T.eq(ok, false)
  T.eq(tostring(err), "stop now")
  T.eq(err.kind, "cancelled")
  T.ok(getmetatable(err) == errors.Error, "an error object of the one model")
  T.ok(errors.is_cancel(err)); T.eq(err.reason, "stop now"); T.eq(err.message, "stop now")
  T.eq(tostring(seen), "stop now")
  T.eq(closed, true, "to-be-closed variable ran")
  T.eq(t:status(), "cancelled")
  T.eq(t:cancel(), false, "cancelling a finished task")
end)

T.test("a cancelled task keeps failing at every wait (it cannot swallow the cancel)", function()
  local attempts = 0
  local t = task.spawn(function()
    for _ = 1, 5 do
      attempts = attempts + 1
      pcall(task.sleep, 10)
    end
    return "went on"
  end)
  task.sleep(0.01)
  local t0 = task.now()
  t:cancel()
  local ok, v = t:join()
  -- it may finish its loop, but no sleep took 10 s: a swallowed cancel would take 40 s more
  T.ok(task.now() - t0 < 5, "the four later sleeps failed at once, took " .. (task.now() - t0) .. " s")
  T.eq(ok, true); T.eq(v, "went on"); T.eq(attempts, 5)
end)

T.test("cancel before start: the function never runs", function()
  local ran = false
  local t = task.spawn(function() ran = true end)
  t:cancel("never mind")
  local ok, err = t:join()
  T.eq(ok, false); T.eq(tostring(err), "never mind"); T.eq(ran, false)
end)

T.test("cancel a task that yields with coroutine.yield (no primitive)", function()
  local t = task.spawn(function()
    while true do coroutine.yield() end
  end)
  task.sleep(0.01)
  t:cancel("spin stopped")
  local ok, err = t:join()
  T.eq(ok, false); T.eq(tostring(err), "spin stopped")
end)

T.test("cancel a task waiting in join cancels only the waiter", function()
  local inner = task.spawn(function() task.sleep(0.05) return "inner done" end)
  local outer = task.spawn(function() return inner:join() end)
  task.sleep(0.01)
  outer:cancel()
  T.eq((outer:join()), false)
  local ok, v = inner:join()
  T.eq(ok, true); T.eq(v, "inner done")
end)

T.test("timeout: in time, late, nested, and errors pass through", function()
  local ok, a, b = task.timeout(1, function(x) task.sleep(0.01) return x, "y" end, "x")
  T.eq(ok, true); T.eq(a, "x"); T.eq(b, "y")
  local t0 = task.now()
  local ok2, why = task.timeout(0.05, task.sleep, 10)
  T.eq(ok2, false); T.eq(why, "timeout")
  T.ok(task.now() - t0 < 1, "timeout fired promptly")
  -- the inner, longer timeout must not catch the outer one
  local ok3, why3 = task.timeout(0.05, function()
    local inner_ok = task.timeout(10, task.sleep, 10)
    return "inner returned " .. tostring(inner_ok)
  end)
  T.eq(ok3, false); T.eq(why3, "timeout")
  -- the inner, shorter timeout fires and the outer goes on
  local ok4, v4 = task.timeout(5, function()
    local inner_ok = task.timeout(0.02, task.sleep, 10)
    return inner_ok
  end)
  T.eq(ok4, true); T.eq(v4, false)
  T.raises(function() task.timeout(1, function() error("inner failure") end) end, "inner failure")
  -- what the function under an expired timeout sees: an error object of kind "timeout"
  local seen
  T.eq(task.timeout(0.02, function() local _, e = pcall(task.sleep, 10) seen = e error(e, 0) end), false)
  T.ok(errors.is(seen, "timeout")); T.ok(errors.is_cancel(seen))
  T.eq(tostring(seen), "timeout after 0.02s"); T.eq(seen.reason, "timeout after 0.02s")
end)

T.test("timeout aborts a running process and unwinds", function()
  local t0 = task.now()
  local ok = task.timeout(0.2, function() return proc.run{ "sleep", "30" } end)
  T.eq(ok, false)
  T.ok(task.now() - t0 < 5)
end)

T.test("task.all keeps the shape and raises after all ended when some failed", function()
  local r = task.all{ function() return 1 end, function() task.sleep(0.01) return 2 end }
  T.eq(r[1], 1); T.eq(r[2], 2)
  local m = task.all{ lint = function() return "ok" end, tests = function() return 42 end }
  T.eq(m.lint, "ok"); T.eq(m.tests, 42)
  local finished = 0
  local err = T.raises(function()
    task.all{
      a = function() error("a broke", 0) end,
      b = function() task.sleep(0.05) finished = finished + 1 end,
      c = function() error("c broke", 0) end,
    }
  end, "2 of 3 functions failed")
  T.match(tostring(err), "a: a broke")
  T.match(tostring(err), "c: c broke")
  T.eq(finished, 1, "the slow sibling was not cancelled")
  T.raises(function() task.all{ 1 } end, "function expected")
end)

T.test("task.all's first line names each failure with its own first line", function()
  local err = T.raises(function()
    task.all{
      tests = function() error("jest: 3 tests failed\n  at suite.spec.ts:12", 0) end,
      lint = function() task.sleep(0.01) error("eslint exited 1", 0) end,
      types = function() return "ok" end,
      scan = function() return "ok" end,
    }
  end, "task.all")
  local first, rest = tostring(err):match("^([^\n]*)\n(.*)$")
  T.match(first, "test_task%.lua:%d+: task%.all: 2 of 4 functions failed: lint: eslint exited 1; "
    .. "tests: jest: 3 tests failed$", "the first line, failures in key order")
  T.match(rest, "^  lint: eslint exited 1\n  tests: jest: 3 tests failed\n      at suite%.spec%.ts:12$",
    "the full messages follow")
  -- one function of one; an array's failures in index order (2 before 10), locations kept
  local one = T.raises(function() task.all{ function() error("only one") end } end, "task.all")
  T.match(tostring(one), "task%.all: 1 of 1 function failed: 1: [^\n]*test_task%.lua:%d+: only one\n")
  local fns = {}
  for i = 1, 10 do fns[i] = function() if i == 2 or i == 10 then error("no " .. i, 0) end end end
  local many = T.raises(function() task.all(fns) end, "task.all")
  T.match(tostring(many), "2 of 10 functions failed: 2: no 2; 10: no 10\n")
  -- a function that raised a table (a cancellation) is named by its message
  local cancelled = T.raises(function()
    task.all{ deploy = function() local t = task.spawn(task.sleep, 10) t:cancel("stack rolled back")
      local _, e = t:join() error(e, 0) end }
  end, "task.all")
  T.match(tostring(cancelled), "1 of 1 function failed: deploy: stack rolled back\n")
end)

T.test("cancelling task.all's caller cancels the functions still running", function()
  -- each child notes how its sleep ended: cancelled (as it must be) or slept to the end
  local ended = {}
  local function child(i)
    return function()
      local ok, e = pcall(task.sleep, 0.5)
      ended[i] = ok and "slept" or (type(e) == "table" and e.kind or tostring(e))
      if not ok then error(e, 0) end
    end
  end
  local caller_err
  local caller = task.spawn(function()
    local _, e = pcall(task.all, { child(1), child(2) })
    caller_err = e
    error(e, 0)
  end)
  task.sleep(0.02)
  caller:cancel("stop the checks")
  T.eq((caller:join()), false)
  T.eq(type(caller_err), "table", "the caller's cancellation passes through as it is")
  T.eq(caller_err.kind, "cancelled"); T.eq(tostring(caller_err), "stop the checks")
  -- wait past the children's own 0.5 s: had they not been cancelled, they would say "slept"
  task.sleep(0.7)
  T.eq(ended[1], "cancelled"); T.eq(ended[2], "cancelled")
  -- a timeout around task.all is the timeout's own, not one of task.all's failures
  local ok, why = task.timeout(0.05, task.all, { function() task.sleep(10) end })
  T.eq(ok, false); T.eq(why, "timeout")
end)

T.test("waiting outside a task fails clearly", function()
  local co = coroutine.create(function() task.sleep(0.01) end)
  local ok, err = coroutine.resume(co)
  T.eq(ok, false)
  T.match(err, "task.sleep: cannot wait here")
  local t = task.current()
  T.raises(function() t:join() end, "cannot join itself")
end)

T.test("a plain coroutine inside a task still works as a generator", function()
  local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
  task.sleep(0)
  T.eq(gen() + gen() + gen(), 6)
end)

T.test("now is monotonic seconds", function()
  local a = task.now()
  task.sleep(0.01)
  local b = task.now()
  T.ok(b > a)
  T.eq(math.type(a), "float")
end)

T.run()
