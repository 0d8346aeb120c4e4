-- wrk script of bench/soak: a constant request rate with a mix of kinds.
--
--   wrk -tT -cC -dD -s soak.lua URL -- TOKENS RATE T MIX
--
-- TOKENS  "kind<TAB>ai<TAB>token" lines (bench/soak.d/prepare.pl)
-- RATE    requests per second, all threads together
-- T       the thread count (-t)
-- MIX     "kind=percent,..." the share of each kind of request; "missing"
--         needs no token (no Authorization header)
--
-- Pacing: Debian's wrk (4.1) has no --rate (that is wrk2, not packaged), but
-- calls delay() before every request of every connection.  Each thread
-- keeps a schedule of send times, one every T / RATE seconds, and every
-- connection that is ready takes the next free time and waits for it
-- (LuaJIT's FFI reads CLOCK_MONOTONIC; delay() has millisecond resolution,
-- but the schedule is absolute, so rounding does not drift).  When every
-- connection is busy the schedule falls behind and the connections catch
-- up, as wrk2 does, for at most a second: slots older than that are
-- dropped and counted ("dropped"), so an overloaded machine shows as a
-- lower rate instead of a burst.  Latency is wrk's: from the moment the
-- request is written to its response (the wait for the slot is not in it).
--
-- The kind rides in the query string (?k=kind) for the gateway's access
-- log; the status of every response is counted here (response()).

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clk_id, soak_timespec *tp);
]]
local ts = ffi.new("soak_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- setup phase (its own Lua state) -----------------------------------------

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("thread_no", #threads)
end

-- running phase (one Lua state per thread) --------------------------------

local kinds, cum = {}, {}       -- kinds and cumulative shares, 0..1
local tokens, ai = {}, {}       -- per kind: tokens; per kind: ai flags
local interval, next_at
statuses = {}                   -- status -> count (read by done())
dropped = 0                     -- schedule slots given up (read by done())
lag_max = 0                     -- furthest behind the schedule, ms

local function parse_mix(mix)
    local total = 0
    for name, pct in string.gmatch(mix, "([%w_]+)=([%d.]+)") do
        table.insert(kinds, name)
        total = total + tonumber(pct)
        table.insert(cum, total)
    end
    for i = 1, #cum do cum[i] = cum[i] / total end
end

function init(args)
    local file, rate, nthreads, mix = args[1], tonumber(args[2]),
                                      tonumber(args[3]), args[4]
    assert(file and rate and rate > 0 and nthreads and mix,
           "soak.lua: -- TOKENS RATE THREADS MIX")
    interval = 1000 * nthreads / rate
    parse_mix(mix)
    for _, k in ipairs(kinds) do tokens[k], ai[k] = {}, {} end
    local f = assert(io.open(file, "r"))
    for line in f:lines() do
        local kind, flag, token = string.match(line, "^([%w_]+)\t(%d)\t(.+)$")
        if kind and tokens[kind] then
            local list = tokens[kind]
            list[#list + 1] = token
            ai[kind][#list] = flag == "1"
        end
    end
    f:close()
    for _, k in ipairs(kinds) do
        assert(k == "missing" or #tokens[k] > 0, "soak.lua: no token of kind " .. k)
    end
    math.randomseed(os.time() * 100 + (thread_no or 0))
end

function delay()
    local now = now_ms()
    if next_at == nil then
        next_at = now
    end
    local behind = now - next_at
    if behind > lag_max then lag_max = behind end
    if behind > 1000 then
        dropped = dropped + math.floor(behind / interval)
        next_at = now
    end
    local d = next_at - now
    next_at = next_at + interval
    if d <= 0 then return 0 end
    return math.floor(d + 0.5)
end

local function pick()
    local r = math.random()
    for i = 1, #cum do
        if r < cum[i] then return kinds[i] end
    end
    return kinds[#kinds]
end

function request()
    local kind = pick()
    if kind == "missing" then
        return wrk.format("GET", "/api/v1/items?k=missing")
    end
    local list = tokens[kind]
    local i = math.random(#list)
    local path = "/api/v1/items?k=" .. kind
    if kind == "feature" then
        path = "/api/forecasts/ai?k=feature"
    elseif kind == "ok" and ai[kind][i] and math.random() < 0.3 then
        path = "/api/forecasts/ai?k=ok_ai"
    end
    return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. list[i] })
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

-- done phase (the setup state) --------------------------------------------

function done(summary, latency, requests)
    local all, drop, lag = {}, 0, 0
    for _, t in ipairs(threads) do
        for status, n in pairs(t:get("statuses") or {}) do
            all[status] = (all[status] or 0) + n
        end
        drop = drop + (t:get("dropped") or 0)
        lag = math.max(lag, t:get("lag_max") or 0)
    end
    local e = summary.errors
    io.write(string.format("soak: requests %d\n", summary.requests))
    io.write(string.format("soak: duration_us %d\n", summary.duration))
    io.write(string.format("soak: errors connect=%d read=%d write=%d timeout=%d\n",
                           e.connect, e.read, e.write, e.timeout))
    io.write(string.format("soak: dropped_slots %d\n", drop))
    io.write(string.format("soak: lag_max_ms %.1f\n", lag))
    for _, p in ipairs({ 50, 90, 99, 99.9 }) do
        io.write(string.format("soak: latency_p%s_us %d\n", p, latency:percentile(p)))
    end
    io.write(string.format("soak: latency_mean_us %.0f\n", latency.mean))
    io.write(string.format("soak: latency_max_us %d\n", latency.max))
    for status, n in pairs(all) do
        io.write(string.format("soak: status %d %d\n", status, n))
    end
end
