-- wrk: PUT /users/{id} on users 1..BENCH_USERS (made beforehand with email u<id>@example.com,
-- which each update keeps, so no update collides with another user's email).
-- setup() and done() come from common.lua, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

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
