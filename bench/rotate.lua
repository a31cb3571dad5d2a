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
-- wrk starts each thread as soon as its init() has run, and its clock only
-- once every thread has started: the first threads' requests made while
-- the others read the file are counted, but not their time. With a million
-- lines that head start was seconds long (before requests were made
-- lazily: 7 s, counting four times the requests of the measured 3 s). So
-- with GO_FILE (a path that must not exist), the last thread creates it at
-- the end of its init(), and a thread counts a response in "requests" only
-- once it has seen that file (it looks every 64 responses until then);
-- "requests_all" counts every response, for the CPU a request costs.
--
-- Every response's status is counted per thread (response()); done() adds the
-- threads' counts (setup() keeps the threads, thread:get() reads them) and
-- prints one line for the Python side:
--
--   CPTBENCH {"requests":N,"requests_all":N,"duration_us":N,"p50_us":N,"p99_us":N,
--             "errors":{"connect":N,"read":N,"write":N,"timeout":N,"status":N},
--             "statuses":{"200":N,...}}

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   threads[#threads + 1] = thread
end

local values = {}
local count = 0
local next_index = 0
local before, after = "", ""
local go_file = nil
local since_look = 0
statuses = {}
counted = 0
counting = true

function init(args)
   local file = args[1]
   if file == nil then
      error("rotate.lua: usage: wrk ... URL HEADERS_FILE [NTHREADS [GO_FILE]]")
   end
   for line in io.lines(file) do
      if line ~= "" then
         count = count + 1
         values[count] = line
      end
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
         counting = false
      end
   end
end

function request()
   next_index = next_index + 1
   if next_index > count then
      next_index = 1
   end
   return before .. values[next_index] .. after
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if counting then
      counted = counted + 1
      return
   end
   since_look = since_look + 1
   if since_look >= 64 then
      since_look = 0
      local f = io.open(go_file, "r")
      if f ~= nil then
         f:close()
         counting = true
      end
   end
end

function done(summary, latency, reqs)
   local total = {}
   local in_window = 0
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses")
      if counts ~= nil then
         for status, n in pairs(counts) do
            total[status] = (total[status] or 0) + n
         end
      end
      in_window = in_window + (thread:get("counted") or 0)
   end
   local parts = {}
   for status, n in pairs(total) do
      parts[#parts + 1] = string.format('"%d":%d', status, n)
   end
   local e = summary.errors
   io.write(string.format(
      'CPTBENCH {"requests":%d,"requests_all":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
      '"statuses":{%s}}\n',
      in_window, summary.requests, summary.duration,
      latency:percentile(50.0), latency:percentile(99.0),
      e.connect, e.read, e.write, e.timeout, e.status,
      table.concat(parts, ",")))
end
