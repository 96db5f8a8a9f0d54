-- wrk: what post.lua and put.lua share: a thread id per thread (setup) and one JSON line of
-- figures at the end (done), which bench/bench.py reads.
local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   io.write(string.format('BENCH {"requests": %d, "seconds": %.4f, "non2xx": %d, "errors": %d, ' ..
      '"p50_ms": %.4f, "p99_ms": %.4f, "max_ms": %.4f}\n',
      summary.requests, summary.duration / 1e6, summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
