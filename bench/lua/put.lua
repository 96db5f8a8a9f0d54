-- wrk: PUT /users/{id} on users 1..BENCH_USERS (made beforehand with email u<id>@example.com,
-- which each update keeps, so no update collides with another user's email).
local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   users = tonumber(os.getenv("BENCH_USERS") or "1000")
   math.randomseed(os.time() * 100 + tid)
   counter = 0
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   local id = math.random(1, users)
   local body = string.format('{"name": "Bench User %d-%d", "email": "u%d@example.com"}', tid,
      counter, id)
   return wrk.format("PUT", "/users/" .. id, nil, body)
end

function done(summary, latency, requests)
   io.write(string.format('BENCH {"requests": %d, "seconds": %.4f, "non2xx": %d, "errors": %d, ' ..
      '"p50_ms": %.4f, "p99_ms": %.4f, "max_ms": %.4f}\n',
      summary.requests, summary.duration / 1e6, summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
