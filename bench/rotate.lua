-- wrk script for bench/run.sh: requests that rotate pre-minted session
-- tokens, each with its organization in X-Organization-ID.
--
--   BENCH_TOKENS=FILE [BENCH_PATH=/api/x] [BENCH_OFFSET=0] \
--       wrk -s bench/rotate.lua URL
--
-- FILE has one "<token> <organization id>" a line (bench/mint.js writes
-- it).  Request k (from 0) carries line (BENCH_OFFSET + k) mod lines + 1:
-- round-robin, no line again before all the others, and a run that
-- continues where the previous one stopped when BENCH_OFFSET is its
-- position.  The requests are built once, before the run, so that wrk's
-- own work per request is the same for one token or forty thousand.

local file = os.getenv("BENCH_TOKENS")
local path = os.getenv("BENCH_PATH") or "/api/x"
local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")

local reqs = {}
local n = 0
local k = 0

function init(args)
    local f = assert(io.open(file, "r"))
    for line in f:lines() do
        local token, org = line:match("^(%S+) (%S+)$")
        if token then
            n = n + 1
            reqs[n] = wrk.format("GET", path, {
                ["Authorization"] = "Bearer " .. token,
                ["X-Organization-ID"] = org,
            })
        end
    end
    f:close()
    assert(n > 0, "no tokens in " .. file)
    k = offset % n
end

function request()
    local r = reqs[k + 1]
    k = (k + 1) % n
    return r
end
