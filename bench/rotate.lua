-- SPDX-License-Identifier: Apache-2.0
-- wrk script of the httpd benchmark (bench/httpd_bench.py).
--
--   wrk -t2 -c32 -d10s -s bench/rotate.lua http://127.0.0.1:PORT/PATH HEADERS_FILE [NTHREADS]
--
-- HEADERS_FILE holds one Authorization header value per line ("cpanel
-- USER:TOKEN", "Basic ..."). Every request carries the next one, in turn, so
-- that a run rotates over many distinct credentials; each thread starts at a
-- different place in the list. Requests are formatted once, in init(), so
-- the per-request cost of the script is the same on every location (/open
-- included, which ignores the header).
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

local requests = {}
local count = 0
local next_index = 0
statuses = {}

function init(args)
   local file = args[1]
   if file == nil then
      error("rotate.lua: usage: wrk ... URL HEADERS_FILE")
   end
   for line in io.lines(file) do
      if line ~= "" then
         count = count + 1
         requests[count] = wrk.format("GET", wrk.path, { ["Authorization"] = line })
      end
   end
   if count == 0 then
      error("rotate.lua: no header in " .. file)
   end
   -- Threads start apart: thread k of NTHREADS at k/NTHREADS of the list.
   local nthreads = tonumber(args[2] or "1")
   if nthreads < 1 then nthreads = 1 end
   next_index = math.floor(thread_index * count / nthreads) % count
end

function request()
   next_index = next_index + 1
   if next_index > count then
      next_index = 1
   end
   return requests[next_index]
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
