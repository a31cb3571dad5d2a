-- SPDX-License-Identifier: Apache-2.0
-- wrk script of the httpd benchmark (bench/httpd_bench.py).
--
--   wrk -t2 -c32 -d10s -s bench/rotate.lua http://127.0.0.1:PORT/PATH HEADERS_FILE [NTHREADS [GO_FILE]]
--
-- HEADERS_FILE holds one Authorization header value per line ("cpanel
-- USER:TOKEN", "Basic ..."). Every request carries the next one, in turn, so
-- that a run rotates over many distinct credentials; each thread starts at a
-- different place in the list. A request is the same text around the value
-- (made once, in init()) joined with it, so the per-request cost of the
-- script is the same on every location (/open included, which ignores the
-- header).
--
-- wrk starts each thread as soon as its init() has run (in wrk's main
-- thread, one after the other), and its clock only once every thread has
-- started: requests sent meanwhile would be counted without their time.
-- With a million lines that head start was seconds long (7 s when requests
-- were formatted in init(); 0.35 s a thread now, to read the file). So with
-- GO_FILE (a path that must not exist), the last thread creates it at the
-- end of its init(), and every other thread's first request() waits for
-- it. wrk takes a request's start time after request() returns, so the
-- wait is in no latency, and no response comes before the clock starts:
-- req/s, CPU per request, p50 and p99 all describe the same requests.
--
-- Every response's status is counted per thread (response()); done() adds the
-- threads' counts (setup() keeps the threads, thread:get() reads them) and
-- prints one line for the Python side:
--
--   CPTBENCH {"requests":N,"duration_us":N,"p50_us":N,"p99_us":N,
--             "errors":{"connect":N,"read":N,"write":N,"timeout":N,"status":N},
--             "statuses":{"200":N,...}}

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   threads[#threads + 1] = thread
end

-- The file is kept as one string, each line as its bounds in FFI arrays,
-- which the garbage collector does not walk: a Lua table of a million
-- strings made every collection cycle visit a million objects, and those
-- pauses in the client were most of the 1M-token rows' p99 (a plain /open
-- with a million headers: p99 64-90 ms; this way 11 ms, as with 2,000).
local ffi = require("ffi")
local text, starts, ends
local count = 0
local next_index = 0
local before, after = "", ""
local go_file = nil
local waiting = false
local verifying = false
statuses = {}

function init(args)
   local file = args[1]
   if file == nil then
      error("rotate.lua: usage: wrk ... URL HEADERS_FILE [NTHREADS [GO_FILE]]")
   end
   local f = assert(io.open(file, "rb"))
   text = f:read("*a")
   f:close()
   local lines = 1
   for _ in text:gmatch("\n") do lines = lines + 1 end
   starts = ffi.new("uint32_t[?]", lines + 1)
   ends = ffi.new("uint32_t[?]", lines + 1)
   local at = 1
   while at <= #text do
      local newline = text:find("\n", at, true) or (#text + 1)
      if newline > at then
         count = count + 1
         starts[count], ends[count] = at, newline - 1
      end
      at = newline + 1
   end
   if count == 0 then
      error("rotate.lua: no header in " .. file)
   end
   local marker = "\1CPTBENCH-VALUE\1"
   local text = wrk.format("GET", wrk.path, { ["Authorization"] = marker })
   local from, to = text:find(marker, 1, true)
   before, after = text:sub(1, from - 1), text:sub(to + 1)
   -- Threads start apart: thread k of NTHREADS at k/NTHREADS of the list.
   local nthreads = tonumber(args[2] or "1")
   if nthreads < 1 then nthreads = 1 end
   next_index = math.floor(thread_index * count / nthreads) % count
   go_file = args[3]
   if go_file ~= nil then
      if thread_index == nthreads - 1 then
         local f = assert(io.open(go_file, "w"))
         f:close()
      else
         waiting = true
         -- wrk's main thread calls thread 0's request() once, before starting
         -- any thread, to check the request's syntax: that call must not wait.
         verifying = thread_index == 0
      end
   end
end

-- Blocks this wrk thread until GO_FILE exists: sleeping, not polling, so
-- that wrk's main thread, running the last init(), has a CPU. Two minutes
-- at most.
local function wait_for_go()
   for _ = 1, 12000 do
      local f = io.open(go_file, "r")
      if f ~= nil then
         f:close()
         return
      end
      os.execute("sleep 0.01")
   end
   error("rotate.lua: " .. go_file .. " did not appear: the last thread's init() failed?")
end

function request()
   if verifying then
      verifying = false
   elseif waiting then
      wait_for_go()
      waiting = false
   end
   next_index = next_index + 1
   if next_index > count then
      next_index = 1
   end
   return before .. text:sub(starts[next_index], ends[next_index]) .. after
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, reqs)
   local total = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses")
      if counts ~= nil then
         for status, n in pairs(counts) do
            total[status] = (total[status] or 0) + n
         end
      end
   end
   local parts = {}
   for status, n in pairs(total) do
      parts[#parts + 1] = string.format('"%d":%d', status, n)
   end
   local e = summary.errors
   io.write(string.format(
      'CPTBENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
      '"statuses":{%s}}\n',
      summary.requests, summary.duration,
      latency:percentile(50.0), latency:percentile(99.0),
      e.connect, e.read, e.write, e.timeout, e.status,
      table.concat(parts, ",")))
end
