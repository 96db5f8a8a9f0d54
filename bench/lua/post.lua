-- wrk: POST /users with an email unique per thread and request (thread id + counter), an optional
-- pause per request (BENCH_DELAY_MS, for a target rate), an optional cap on the requests of each
-- thread (BENCH_MAX_PER_THREAD), and one JSON line of figures at the end.
-- setup() and done() come from common.lua, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local counter = 0

function init(args)
   counter = 0
   run = os.getenv("BENCH_RUN") or "r"
   delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
   -- BENCH_MAX_PER_THREAD: the thread stops after that many answers (0: no limit)
   max_per_thread = tonumber(os.getenv("BENCH_MAX_PER_THREAD") or "0")
   answers = 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function delay()
   return delay_ms
end

function request()
   counter = counter + 1
   local body = string.format('{"name": "Bench User %d-%d", "email": "w-%s-%d-%d@example.com"}',
      tid, counter, run, tid, counter)
   return wrk.format("POST", "/users", nil, body)
end

function response(status, headers, body)
   answers = answers + 1
   if max_per_thread > 0 and answers >= max_per_thread then
      wrk.thread:stop()
   end
end
