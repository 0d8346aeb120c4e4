/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_ratelimit.c: the rate syntax and the GCRA
 * limiter (admission, remaining, retry-after, reset, long-run and
 * sliding-window bounds, a state beyond the bucket, large values, refunds,
 * random runs).
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "tenant_ratelimit.h"


#define BASE          ((int64_t) 1 << 52)     /* now_us of the tests */
#define MS            ((int64_t) 1000)
#define SEC           (1000 * MS)
#define DAY_MS        ((int64_t) 86400000)

#define CEIL_MS(us)   ((us) / 1000 + ((us) % 1000 != 0))

#define MAX_ADMITTED  60000
#define FUZZ_RUNS     100000
#define FUZZ_LEN      40


typedef struct {
    const char   *spec;
    uint64_t      limit;
    uint64_t      window_ms;
} valid_t;


typedef struct {
    const char   *spec;
    size_t        len;                     /* 0: strlen(spec) */
    const char   *err;
} invalid_t;


typedef struct {
    uint64_t      admitted;
    uint64_t      max_window;              /* most in any window */
    uint64_t      max_prefix_excess;       /* admitted - limit * windows */
    uint64_t      bad_refusals;
} sim_t;


static void test_parse_valid(void);
static void test_parse_invalid(void);
static void test_parse_err_buffer(void);
static void test_basic(void);
static void test_values(void);
static void test_burst(void);
static void test_refused_keep_state(void);
static void test_long_run(void);
static void test_uneven(void);
static void test_clock_back(void);
static void test_epoch(void);
static void test_large(void);
static void test_bad_rate(void);
static void test_refund(void);
static void test_now(void);
static void test_fuzz(void);
static tenant_rate_t rate_of(const char *spec, uint64_t burst);
static void simulate(const tenant_rate_t *rate, int64_t step_us,
    int64_t duration_us, sim_t *sim);
static uint64_t rnd(void);
static uint64_t rnd_below(uint64_t n);


static int64_t  admitted_at[MAX_ADMITTED];
static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;


int
main(void)
{
    test_parse_valid();
    test_parse_invalid();
    test_parse_err_buffer();
    test_basic();
    test_values();
    test_burst();
    test_refused_keep_state();
    test_long_run();
    test_uneven();
    test_clock_back();
    test_epoch();
    test_large();
    test_bad_rate();
    test_refund();
    test_now();
    test_fuzz();

    return done_testing();
}


static void
test_parse_valid(void)
{
    int             rc;
    char            err[128];
    size_t          i;
    tenant_rate_t   rate;

    static const valid_t  valid[] = {
        { "100r/s", 100, 1000 },
        { "1000r/m", 1000, 60000 },
        { "5000r/h", 5000, 3600000 },
        { "100r/d", 100, 86400000 },
        { "1r/s", 1, 1000 },
        { "100/60s", 100, 60000 },
        { "100/60000ms", 100, 60000 },
        { "100/1m", 100, 60000 },
        { "100/1h", 100, 3600000 },
        { "100/1d", 100, 86400000 },
        { "7/1500ms", 7, 1500 },
        { "10/90m", 10, 5400000 },
        { "1/86400000ms", 1, 86400000 },
        { "1/1440m", 1, 86400000 },
        { "1/24h", 1, 86400000 },
        { "100000000r/d", 100000000, 86400000 },
        { "100000000/100s", 100000000, 100000 },     /* 1 us a request */
        { "1000/1ms", 1000, 1 },                      /* 1 us a request */
    };

    for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        memset(&rate, 0, sizeof(rate));
        err[0] = '\0';

        rc = tenant_rate_parse(valid[i].spec, strlen(valid[i].spec), &rate,
                               err, sizeof(err));

        if (!ok(rc == 0, "parse \"%s\"", valid[i].spec)) {
            printf("#   error: %s\n", err);
        }

        is_int(rate.limit, valid[i].limit, "\"%s\": limit", valid[i].spec);
        is_int(rate.window_ms, valid[i].window_ms, "\"%s\": window",
               valid[i].spec);
        is_int(rate.burst, valid[i].limit, "\"%s\": burst is the limit",
               valid[i].spec);
    }

    /* the length bounds the rate, not a NUL */

    memset(&rate, 0, sizeof(rate));
    rc = tenant_rate_parse("100r/sXYZ", 6, &rate, err, sizeof(err));
    ok(rc == 0 && rate.limit == 100 && rate.window_ms == 1000,
       "only len bytes are read");

    rc = tenant_rate_parse("100r/s", 6, &rate, NULL, 0);
    ok(rc == 0, "err may be NULL on success");
}


static void
test_parse_invalid(void)
{
    int             rc;
    char            err[128];
    size_t          i, len;
    tenant_rate_t   rate;

    static const invalid_t  invalid[] = {
        { "", 0, "empty rate" },
        { " 100r/s", 0, "the rate does not begin with a number of requests" },
        { "+100r/s", 0, "the rate does not begin with a number of requests" },
        { "-1r/s", 0, "the rate does not begin with a number of requests" },
        { "r/s", 0, "the rate does not begin with a number of requests" },
        { "/60s", 0, "the rate does not begin with a number of requests" },
        { "0r/s", 0, "zero requests per window" },
        { "0/1s", 0, "zero requests per window" },
        { "0100r/s", 0, "leading zero in the number of requests" },
        { "00r/s", 0, "leading zero in the number of requests" },
        { "1000000000r/d", 0, "more than 100000000 requests per window" },
        { "100000001r/d", 0, "more than 100000000 requests per window" },
        { "99999999999999999999999r/s", 0,
          "more than 100000000 requests per window" },
        { "100", 0, "expected \"r/\" or \"/\" after the number of requests" },
        { "100 r/s", 0,
          "expected \"r/\" or \"/\" after the number of requests" },
        { "100R/s", 0,
          "expected \"r/\" or \"/\" after the number of requests" },
        { "1.5r/s", 0,
          "expected \"r/\" or \"/\" after the number of requests" },
        { "100r", 0, "\"r\" is not followed by \"/\"" },
        { "100rs", 0, "\"r\" is not followed by \"/\"" },
        { "100r/", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/x", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/ms", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/S", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/sec", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/60s", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r//s", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/mx", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "10r/_", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "10r/{", 0, "the unit after \"r/\" is not s, m, h or d" },
        { "100r/s ", 0, "unexpected characters after the time unit" },
        { "100r/s/", 0, "unexpected characters after the time unit" },
        { "100r/s\0", 7, "unexpected characters after the time unit" },
        { "100/s", 0, "no window length after \"/\"" },
        { "100//60s", 0, "no window length after \"/\"" },
        { "100/-60s", 0, "no window length after \"/\"" },
        { "100/", 0, "no window length after \"/\"" },
        { "100/060s", 0, "leading zero in the window length" },
        { "100/60", 0, "the window has no time unit (ms, s, m, h, d)" },
        { "100/60 s", 0, "the window has no time unit (ms, s, m, h, d)" },
        { "100/60x", 0, "unknown time unit in the window (ms, s, m, h, d)" },
        { "100/60sx", 0, "unknown time unit in the window (ms, s, m, h, d)" },
        { "100/60S", 0, "unknown time unit in the window (ms, s, m, h, d)" },
        { "100/60sec", 0,
          "unknown time unit in the window (ms, s, m, h, d)" },
        { "100/60mx", 0, "unknown time unit in the window (ms, s, m, h, d)" },
        { "100/60s_", 0, "unexpected characters after the time unit" },
        { "100/60s ", 0, "unexpected characters after the time unit" },
        { "100/60s5", 0, "unexpected characters after the time unit" },
        { "100/0s", 0, "zero-length window" },
        { "100/0ms", 0, "zero-length window" },
        { "100/2d", 0, "window longer than one day" },
        { "100/86400001ms", 0, "window longer than one day" },
        { "100/1441m", 0, "window longer than one day" },
        { "100/25h", 0, "window longer than one day" },
        { "1/1000000000ms", 0, "window longer than one day" },
        { "1/99999999999999999999d", 0, "window longer than one day" },
        { "1001/1ms", 0, "more than one request per microsecond" },
        { "100000000/99s", 0, "more than one request per microsecond" },
    };

    for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        rate.limit = 11;
        rate.window_ms = 22;
        rate.burst = 33;
        strcpy(err, "(unset)");

        len = invalid[i].len ? invalid[i].len : strlen(invalid[i].spec);

        rc = tenant_rate_parse(invalid[i].spec, len, &rate, err,
                               sizeof(err));

        ok(rc == -1 && rate.limit == 11 && rate.window_ms == 22
           && rate.burst == 33,
           "reject \"%s\", rate unchanged", invalid[i].spec);
        is_str(err, invalid[i].err, "\"%s\": reason", invalid[i].spec);
    }
}


static void
test_parse_err_buffer(void)
{
    int             rc;
    char            buf[32];
    tenant_rate_t   rate;

    memset(buf, 'X', sizeof(buf));
    rc = tenant_rate_parse("100r/x", 6, &rate, buf, 8);
    ok(rc == -1 && buf[7] == '\0' && buf[8] == 'X'
       && memcmp(buf, "the uni", 7) == 0,
       "a short err buffer is truncated and terminated");

    memset(buf, 'X', sizeof(buf));
    rc = tenant_rate_parse("100r/x", 6, &rate, buf, 0);
    ok(rc == -1 && buf[0] == 'X', "errlen 0: err untouched");

    rc = tenant_rate_parse("", 0, &rate, NULL, 0);
    ok(rc == -1, "err may be NULL on failure");
}


/* 5 requests per second, burst 5 (the default): T = 200 ms */

static void
test_basic(void)
{
    int                    i;
    int64_t                tat, now;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate = rate_of("5r/s", 0);
    tat = 0;
    now = BASE;

    for (i = 0; i < 5; i++) {
        tenant_rate_check(&rate, &tat, now, &res);
        ok(res.allowed, "5r/s: request %d at one instant allowed", i + 1);
        is_int(res.remaining, 4 - i, "5r/s: remaining after request %d",
               i + 1);
    }

    tenant_rate_check(&rate, &tat, now, &res);
    ok(!res.allowed, "5r/s: request 6 at the same instant refused");
    is_int(res.retry_after_ms, 200, "5r/s: retry after 200 ms");
    is_int(res.remaining, 0, "5r/s: nothing remaining");

    tenant_rate_check(&rate, &tat, now + 200 * MS - 1, &res);
    ok(!res.allowed, "5r/s: refused 1 us before the retry time");
    is_int(res.retry_after_ms, 1, "5r/s: retry after 1 us rounds up to 1 ms");

    tenant_rate_check(&rate, &tat, now + 200 * MS, &res);
    ok(res.allowed, "5r/s: allowed at the retry time");
    is_int(res.remaining, 0, "5r/s: remaining 0 then");

    tenant_rate_check(&rate, &tat, now + 200 * MS, &res);
    ok(!res.allowed, "5r/s: and the next one refused again");
    is_int(res.retry_after_ms, 200, "5r/s: for another 200 ms");

    /* the bucket is full again one window after the last admission */

    now += 200 * MS + SEC;

    for (i = 0; i < 5; i++) {
        tenant_rate_check(&rate, &tat, now, &res);
        ok(res.allowed && res.remaining == (uint64_t) (4 - i),
           "5r/s: after a window, request %d allowed, remaining %d",
           i + 1, 4 - i);
    }

    tenant_rate_check(&rate, &tat, now, &res);
    ok(!res.allowed, "5r/s: and the 6th refused");
}


static void
test_values(void)
{
    int                    i;
    int64_t                tat;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate = rate_of("5r/s", 0);
    tat = 0;

    for (i = 1; i <= 5; i++) {
        tenant_rate_check(&rate, &tat, BASE, &res);
        is_int(res.reset_ms, 200 * i, "5r/s: reset after request %d", i);
        is_int(res.retry_after_ms, 0, "5r/s: no retry-after when allowed");
    }

    is_int(tat, BASE + SEC, "5r/s: state one window ahead after the burst");

    tenant_rate_check(&rate, &tat, BASE, &res);
    is_int(res.reset_ms, 1000, "5r/s: refused: reset is the whole window");

    /* 300 ms later: 1.5 requests refilled, one passes */

    tenant_rate_check(&rate, &tat, BASE + 300 * MS, &res);
    ok(res.allowed, "5r/s: +300 ms allowed");
    is_int(res.remaining, 0, "5r/s: +300 ms remaining 0 (half a request)");
    is_int(res.reset_ms, 900, "5r/s: +300 ms reset 900");

    tenant_rate_check(&rate, &tat, BASE + 300 * MS, &res);
    ok(!res.allowed, "5r/s: +300 ms second refused");
    is_int(res.retry_after_ms, 100, "5r/s: retry after the other half");
    is_int(res.reset_ms, 900, "5r/s: refused reset 900");

    /* +700 ms: the state is 500 ms ahead */

    tenant_rate_check(&rate, &tat, BASE + 700 * MS, &res);
    ok(res.allowed, "5r/s: +700 ms allowed");
    is_int(res.remaining, 1, "5r/s: +700 ms remaining 1");
    is_int(res.reset_ms, 700, "5r/s: +700 ms reset 700");

    /* long idle: full bucket */

    tenant_rate_check(&rate, &tat, BASE + 3600 * SEC, &res);
    ok(res.allowed && res.remaining == 4 && res.reset_ms == 200,
       "5r/s: after an hour idle, remaining 4, reset 200");

    /* 3 r/s: T = 333334 us (rounded up), reset rounds up to ms */

    rate = rate_of("3r/s", 0);
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 2, "3r/s: first allowed, 2 left");
    is_int(res.reset_ms, 334, "3r/s: reset 333.334 ms rounds up");

    tenant_rate_check(&rate, &tat, BASE, &res);
    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 0, "3r/s: third allowed, none left");
    is_int(res.reset_ms, 1001, "3r/s: reset 1000.002 ms rounds up");

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed, "3r/s: fourth refused");
    is_int(res.retry_after_ms, 334, "3r/s: retry after 333.334 ms");
}


static void
test_burst(void)
{
    int                    i;
    int64_t                tat;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    /* burst 1: smooth, one request every 200 ms */

    rate = rate_of("5r/s", 1);
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 0 && res.reset_ms == 200,
       "burst=1: first allowed, remaining 0, reset 200");

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed, "burst=1: second at the same instant refused");
    is_int(res.retry_after_ms, 200, "burst=1: retry after 200 ms");
    is_int(res.reset_ms, 200, "burst=1: reset 200 ms");

    tenant_rate_check(&rate, &tat, BASE + 100 * MS, &res);
    ok(!res.allowed && res.retry_after_ms == 100,
       "burst=1: +100 ms refused, retry after 100 ms");

    tenant_rate_check(&rate, &tat, BASE + 200 * MS, &res);
    ok(res.allowed, "burst=1: +200 ms allowed");

    /* burst above the limit */

    rate = rate_of("5r/s", 10);
    tat = 0;

    for (i = 0; i < 10; i++) {
        tenant_rate_check(&rate, &tat, BASE, &res);
        if (!res.allowed || res.remaining != (uint64_t) (9 - i)) {
            break;
        }
    }

    is_int(i, 10, "burst=10: 10 at once, remaining 9 .. 0");
    is_int(res.reset_ms, 2000, "burst=10: reset 2 s");

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed && res.retry_after_ms == 200,
       "burst=10: the 11th refused, retry after 200 ms");

    /* burst 0 in a rate means the limit */

    rate = rate_of("5r/s", 0);
    rate.burst = 0;
    tat = 0;

    for (i = 0; i < 6; i++) {
        tenant_rate_check(&rate, &tat, BASE, &res);
        if (!res.allowed) {
            break;
        }
    }

    is_int(i, 5, "burst=0 means the limit: 5 at once");
}


static void
test_refused_keep_state(void)
{
    int                    i, changed;
    int64_t                tat, saved;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate = rate_of("5r/s", 0);
    tat = 0;

    for (i = 0; i < 5; i++) {
        tenant_rate_check(&rate, &tat, BASE, &res);
    }

    saved = tat;
    changed = 0;

    /* refused every microsecond until the retry time */

    for (i = 0; i < 200000; i++) {
        tenant_rate_check(&rate, &tat, BASE + i, &res);
        if (res.allowed || tat != saved) {
            changed++;
        }
    }

    is_int(changed, 0, "200000 refused requests leave the state alone");

    tenant_rate_check(&rate, &tat, BASE + 200 * MS, &res);
    ok(res.allowed, "the retry time is unmoved by refusals");
    is_int(tat, saved + 200 * MS, "allowed: the state moves by T");
}


static void
test_long_run(void)
{
    sim_t           sim;
    tenant_rate_t   rate;

    /* 1000 r/m, a request every ms for 10 minutes */

    rate = rate_of("1000r/m", 0);
    simulate(&rate, MS, 600 * SEC, &sim);

    ok(sim.admitted <= 1000 * 10 + 1000,
       "1000r/m, 10 min: admitted %llu <= limit * 10 + burst",
       (unsigned long long) sim.admitted);
    is_int(sim.admitted, 1000 * 10 + 1000 - 1,
           "1000r/m, 10 min: burst + one every 60 ms");
    ok(sim.max_prefix_excess <= 1000,
       "1000r/m: at most burst above the quota at any time (%llu)",
       (unsigned long long) sim.max_prefix_excess);
    is_int(sim.max_window, 1000 + 1000 - 1,
           "1000r/m: at most burst + limit - 1 in any 60 s");
    is_int(sim.bad_refusals, 0, "1000r/m: refusals sane, state kept");

    /* the same with a small burst */

    rate = rate_of("1000r/m", 10);
    simulate(&rate, MS, 600 * SEC, &sim);

    is_int(sim.admitted, 1000 * 10 + 10 - 1,
           "1000r/m burst=10, 10 min: admitted");
    ok(sim.max_window <= 10 + 1000 - 1,
       "1000r/m burst=10: %llu <= burst + limit - 1 in any 60 s",
       (unsigned long long) sim.max_window);
    is_int(sim.bad_refusals, 0, "1000r/m burst=10: refusals sane");
}


/*
 * A window that the limit does not divide: the interval is rounded up, so
 * the bounds still hold (rounded down, 7 r/s would let 14 requests pass
 * in one second, and 400 per ms about 500 per ms).
 */

static void
test_uneven(void)
{
    sim_t           sim;
    tenant_rate_t   rate;

    rate = rate_of("7r/s", 0);
    simulate(&rate, 1, 2500 * MS, &sim);

    ok(sim.max_window <= 7 + 7 - 1,
       "7r/s, a request every us: %llu <= burst + limit - 1 in any 1 s",
       (unsigned long long) sim.max_window);
    ok(sim.max_prefix_excess <= 7,
       "7r/s: at most burst above the quota at any time");
    is_int(sim.bad_refusals, 0, "7r/s: refusals sane");

    rate = rate_of("400/1ms", 0);
    simulate(&rate, 1, 100 * MS, &sim);

    ok(sim.admitted <= 400 * 100 + 400,
       "400/1ms, 100 ms: admitted %llu <= limit * 100 + burst",
       (unsigned long long) sim.admitted);
    ok(sim.max_window <= 400 + 400 - 1,
       "400/1ms: %llu <= burst + limit - 1 in any 1 ms",
       (unsigned long long) sim.max_window);
    is_int(sim.bad_refusals, 0, "400/1ms: refusals sane");
}


/*
 * The caller's clock is monotonic (tenant_rate_now(), read under the
 * zone's lock), so a state ahead of now by more than the bucket comes from
 * a rate whose bucket shrank (a reload, a tier change).  This test used to
 * step the clock
 * back 10 s and assert that the state stayed 10 s ahead, refusing with a
 * Retry-After of 200 ms until "the clock caught up": refusals that outlive
 * their Retry-After.  Now such a state reads as a full bucket and is
 * brought back to one: the request Retry-After later passes.
 */

static void
test_clock_back(void)
{
    int                    i;
    int64_t                tat;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate = rate_of("5r/s", 0);

    /* a state a little ahead of now: counted normally */

    tat = 0;
    tenant_rate_check(&rate, &tat, BASE + 100 * MS, &res);
    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed, "state 100 ms back: allowed");
    is_int(res.remaining, 2, "100 ms back: remaining 2");
    is_int(res.reset_ms, 500, "100 ms back: reset 500");
    is_int(tat, BASE + 500 * MS, "100 ms back: state advanced by T");

    /* a state 10 s beyond a 1 s bucket: one full bucket, not ten */

    tat = 0;
    for (i = 0; i < 5; i++) {
        tenant_rate_check(&rate, &tat, BASE + 10 * SEC, &res);
    }

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed, "state 11 s ahead, bucket 1 s: refused");
    is_int(res.retry_after_ms, 200, "state 11 s ahead: retry after T");
    is_int(res.reset_ms, 1000, "state 11 s ahead: reset one bucket");
    is_int(res.remaining, 0, "state 11 s ahead: remaining 0");
    is_int(tat, BASE + SEC, "state 11 s ahead: brought back to one bucket");

    tenant_rate_check(&rate, &tat, BASE + 200 * MS, &res);
    ok(res.allowed && res.remaining == 0,
       "state 11 s ahead: the request Retry-After later passes");

    tenant_rate_check(&rate, &tat, BASE + 200 * MS, &res);
    ok(!res.allowed && res.retry_after_ms == 200,
       "state 11 s ahead: then one every T, as for a full bucket");

    tenant_rate_check(&rate, &tat, BASE + 1400 * MS, &res);
    ok(res.allowed && res.remaining == 4,
       "state 11 s ahead: a bucket after it, the whole burst again");

    /* a state ahead of a clock that starts at 0 (just after boot) */

    tat = BASE;
    tenant_rate_check(&rate, &tat, 0, &res);
    ok(!res.allowed && res.retry_after_ms == 200 && res.reset_ms == 1000
       && tat == SEC,
       "now 0, state far ahead: bounded values, state one bucket ahead");

    tat = BASE;
    tenant_rate_check(&rate, &tat, INT64_MIN, &res);
    ok(!res.allowed && res.retry_after_ms == 200 && res.reset_ms == 1000
       && tat == INT64_MIN + SEC,
       "now INT64_MIN, state far ahead: bounded values, no overflow");

    /* a state from far in the future */

    tat = INT64_MAX;
    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed && res.retry_after_ms == 200 && res.reset_ms == 1000
       && tat == BASE + SEC,
       "state INT64_MAX: refused, bounded values, one bucket ahead");

    /* a state from far in the past reads as a new key */

    tat = INT64_MIN;
    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 4 && tat == BASE + 200 * MS,
       "state INT64_MIN: a full bucket");

    /* now at the end of the range: the state saturates, never wraps */

    tat = 0;
    tenant_rate_check(&rate, &tat, INT64_MAX - 10, &res);
    ok(res.allowed && tat == INT64_MAX, "now near INT64_MAX: saturated");
    tenant_rate_check(&rate, &tat, INT64_MAX - 10, &res);
    ok(res.allowed && tat == INT64_MAX && res.remaining <= 4
       && res.reset_ms <= 1000,
       "now near INT64_MAX again: no wrap");
}


/*
 * A clock at or before the epoch (now_us <= 0): nothing in the limiter
 * assumes a positive time; the state is now + T, with no saturation test
 * against INT64_MAX (docs/coverage-gaps.md D-41).
 */

static void
test_epoch(void)
{
    int                    i;
    int64_t                tat;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate = rate_of("5r/s", 0);

    tat = 0;
    tenant_rate_check(&rate, &tat, 0, &res);
    ok(res.allowed, "now 0, fresh state: allowed");
    is_int(res.remaining, 4, "now 0: remaining 4");
    is_int(tat, 200 * MS, "now 0: state is now + T");

    tat = INT64_MIN;
    tenant_rate_check(&rate, &tat, -10 * SEC, &res);
    ok(res.allowed, "now -10 s, state INT64_MIN: allowed");
    is_int(tat, -10 * SEC + 200 * MS, "now -10 s: state is now + T");

    for (i = 1; i < 5; i++) {
        tenant_rate_check(&rate, &tat, -10 * SEC, &res);
    }

    ok(res.allowed && res.remaining == 0, "now -10 s: the burst of 5 passes");
    is_int(tat, -10 * SEC + 1000 * MS, "now -10 s: state one window ahead");

    tenant_rate_check(&rate, &tat, -10 * SEC, &res);
    ok(!res.allowed && res.retry_after_ms == 200 && res.reset_ms == 1000,
       "now -10 s: the sixth refused, retry after T");

    tat = INT64_MIN;
    tenant_rate_check(&rate, &tat, INT64_MIN, &res);
    ok(res.allowed && tat == INT64_MIN + 200 * MS,
       "now INT64_MIN: allowed, state now + T, no wrap");
}


static void
test_large(void)
{
    int64_t                tat, tau;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    /* 10^8 a day: T = 864 us, the bucket one day */

    rate = rate_of("100000000r/d", 0);
    tau = 864 * (int64_t) 100000000;
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed, "1e8/d: allowed");
    is_int(res.remaining, 100000000 - 1, "1e8/d: remaining");
    is_int(res.reset_ms, 1, "1e8/d: reset 864 us rounds up to 1 ms");
    is_int(tat, BASE + 864, "1e8/d: state");

    tat = BASE + tau - 864;
    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 0, "1e8/d: the last of the burst");
    is_int(res.reset_ms, DAY_MS, "1e8/d: reset one day");
    is_int(tat, BASE + tau, "1e8/d: state a day ahead");

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed, "1e8/d: then refused");
    is_int(res.retry_after_ms, 1, "1e8/d: retry after 1 ms");
    is_int(res.reset_ms, DAY_MS, "1e8/d: refused reset one day");

    tenant_rate_check(&rate, &tat, BASE + 12 * 3600 * SEC, &res);
    ok(res.allowed, "1e8/d: allowed half a day later");
    is_int(res.remaining, 50000000 - 1, "1e8/d: half the burst remaining");

    /* 1 a day */

    rate = rate_of("1r/d", 0);
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 0 && res.reset_ms == DAY_MS,
       "1/d: allowed, reset one day");

    tenant_rate_check(&rate, &tat, BASE + 1, &res);
    ok(!res.allowed, "1/d: the second refused");
    is_int(res.retry_after_ms, DAY_MS, "1/d: retry after a day (rounded up)");

    /* a caller's huge burst: the bucket is capped, nothing overflows */

    rate = rate_of("1r/d", 100000000);
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining > 50000000 && res.remaining < 100000000
       && res.reset_ms == DAY_MS && tat == BASE + DAY_MS * 1000,
       "1/d burst=1e8: allowed, remaining %llu, no overflow",
       (unsigned long long) res.remaining);

    rate.burst = UINT64_MAX;
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining > 0 && tat == BASE + DAY_MS * 1000,
       "1/d burst=UINT64_MAX: allowed, no overflow");

    tat = INT64_MAX;
    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed && res.retry_after_ms == DAY_MS
       && res.reset_ms <= CEIL_MS((uint64_t) 1 << 62),
       "1/d burst=UINT64_MAX, state INT64_MAX: bounded values");
}


/* Rates the parser would not make do not crash the limiter. */

static void
test_bad_rate(void)
{
    int64_t                tat;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate.limit = 0;
    rate.window_ms = 0;
    rate.burst = 0;
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && tat > BASE, "limit 0, window 0: no division by zero");

    rate.limit = 1;
    rate.window_ms = UINT64_MAX;
    rate.burst = 1;
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && tat == BASE + DAY_MS * 1000 && res.reset_ms == DAY_MS,
       "window UINT64_MAX: taken as the longest, one day");

    rate.limit = UINT64_MAX;
    rate.window_ms = UINT64_MAX;
    rate.burst = UINT64_MAX;
    tat = 0;

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && tat > BASE, "all UINT64_MAX: no overflow");
}


/*
 * A request one limit admitted and another refused is given back: the
 * state is as if it had not been made, and the result what the key offers.
 */

static void
test_refund(void)
{
    int                    i;
    int64_t                tat;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    rate = rate_of("5r/s", 0);

    tat = 0;
    tenant_rate_check(&rate, &tat, BASE, &res);
    tenant_rate_refund(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 5 && res.reset_ms == 0
       && res.retry_after_ms == 0 && tat == BASE,
       "refund of a new key's first request: a full bucket again");

    for (i = 0; i < 5; i++) {
        tenant_rate_check(&rate, &tat, BASE, &res);
    }

    tenant_rate_refund(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 1 && res.reset_ms == 800
       && tat == BASE + 800 * MS,
       "refund of the fifth: remaining 1, reset 800 ms");

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 0 && tat == BASE + SEC,
       "after the refund: the fifth passes again");

    tenant_rate_check(&rate, &tat, BASE, &res);
    ok(!res.allowed, "and the sixth is refused");

    /* a key idle since: nothing to give back */

    tat = BASE - SEC;
    tenant_rate_refund(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 5 && res.reset_ms == 0
       && tat == BASE - SEC,
       "refund on an idle key: unchanged, a full bucket");

    /* less than T ahead: back to now, never before */

    tat = BASE + 50 * MS;
    tenant_rate_refund(&rate, &tat, BASE, &res);
    ok(tat == BASE && res.remaining == 5, "refund less than T ahead: now");

    /* extreme states and clocks: bounded, no overflow */

    tat = INT64_MAX;
    tenant_rate_refund(&rate, &tat, BASE, &res);
    ok(res.allowed && res.remaining == 0 && res.reset_ms == 1000
       && tat == INT64_MAX - 200 * MS,
       "refund, state INT64_MAX: bounded values");

    tat = INT64_MAX;
    tenant_rate_refund(&rate, &tat, INT64_MIN, &res);
    ok(res.allowed && res.remaining == 0 && res.reset_ms == 1000
       && tat == INT64_MAX - 200 * MS,
       "refund, state INT64_MAX, now INT64_MIN: no overflow");

    tat = INT64_MIN;
    tenant_rate_refund(&rate, &tat, INT64_MIN, &res);
    ok(res.allowed && res.remaining == 5 && tat == INT64_MIN,
       "refund, state and now INT64_MIN: unchanged");
}


/* The clock: positive (the monotonic clock counts from boot), never back. */

static void
test_now(void)
{
    int      i, back;
    int64_t  t0, t, prev;

    t0 = tenant_rate_now();
    ok(t0 > 0, "tenant_rate_now(): positive (%lld us)", (long long) t0);

    back = 0;
    prev = t0;

    for (i = 0; i < 1000000 && (t = tenant_rate_now()) == t0; i++) {
        /* void */
    }

    for (i = 0; i < 1000; i++) {
        t = tenant_rate_now();
        back += t < prev;
        prev = t;
    }

    ok(prev > t0 && back == 0, "tenant_rate_now(): advances, never back");
}


/*
 * Random rates and request sequences, compared with a straightforward
 * model of the contract, and checked against its invariants.
 */

static void
test_fuzz(void)
{
    int                    allowed, monotonic;
    int64_t                tat, old, now, t, tau, ntat, at, d;
    int64_t                times[FUZZ_LEN];
    uint64_t               run, i, j, k, n, limit, burst, win, count;
    uint64_t               remaining, retry, reset;
    uint64_t               model_bad, remain_bad, refused_bad, reset_bad;
    uint64_t               retry_bad, window_bad, idle_bad, calls;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    model_bad = remain_bad = refused_bad = reset_bad = 0;
    retry_bad = window_bad = idle_bad = calls = 0;

    for (run = 0; run < FUZZ_RUNS; run++) {

        switch (rnd_below(3)) {
        case 0:
            limit = 1 + rnd_below(10);
            break;
        case 1:
            limit = 1 + rnd_below(1000);
            break;
        default:
            limit = 1 + rnd_below(100000);
        }

        win = 1 + rnd_below(rnd_below(2) ? 2000 : 100000);
        if (win * 1000 < limit) {
            win = limit;
        }

        rate.limit = limit;
        rate.window_ms = win;

        switch (rnd_below(4)) {
        case 0:
            rate.burst = 0;
            break;
        case 1:
            rate.burst = 1 + rnd_below(2 * limit);
            break;
        default:
            rate.burst = limit;
        }

        burst = rate.burst ? rate.burst : limit;
        t = (int64_t) ((win * 1000 + limit - 1) / limit);
        tau = t * (int64_t) burst;

        tat = 0;
        now = BASE + (int64_t) rnd_below(1000000000);
        n = 1 + rnd_below(FUZZ_LEN);
        count = 0;
        monotonic = 1;

        for (i = 0; i < n; i++) {

            switch (rnd_below(8)) {
            case 0:
            case 1:
            case 2:
                break;
            case 3:
            case 4:
                now += (int64_t) rnd_below((uint64_t) t + 1);
                break;
            case 5:
                now += (int64_t) rnd_below((uint64_t) tau + 1);
                break;
            case 6:
                now += (int64_t) rnd_below(2 * win * 1000 + 1);
                break;
            default:
                if (rnd_below(4) == 0) {
                    now -= (int64_t) rnd_below(2 * win * 1000 + 1);
                    monotonic = 0;
                }
            }

            /* the model */

            old = tat;
            at = old > now ? old : now;
            d = at - now;

            if (d > tau) {
                allowed = 0;
                retry = CEIL_MS(t);
                reset = CEIL_MS(tau);
                remaining = 0;
                ntat = now + tau;

            } else if (at + t - tau > now) {
                allowed = 0;
                retry = CEIL_MS(at + t - tau - now);
                reset = CEIL_MS(d);
                remaining = 0;
                ntat = old;

            } else {
                allowed = 1;
                retry = 0;
                ntat = at + t;
                reset = CEIL_MS(ntat - now);
                remaining = (uint64_t) ((now + tau - ntat) / t);
            }

            tenant_rate_check(&rate, &tat, now, &res);
            calls++;

            if (res.allowed != allowed || res.retry_after_ms != retry
                || res.reset_ms != reset || res.remaining != remaining
                || tat != ntat)
            {
                if (model_bad++ == 0) {
                    printf("# model: limit %llu window %llu burst %llu "
                           "tat %lld now %lld: allowed %d/%d retry "
                           "%llu/%llu reset %llu/%llu remaining %llu/%llu "
                           "state %lld/%lld\n",
                           (unsigned long long) limit,
                           (unsigned long long) win,
                           (unsigned long long) rate.burst,
                           (long long) old, (long long) now,
                           res.allowed, allowed,
                           (unsigned long long) res.retry_after_ms,
                           (unsigned long long) retry,
                           (unsigned long long) res.reset_ms,
                           (unsigned long long) reset,
                           (unsigned long long) res.remaining,
                           (unsigned long long) remaining,
                           (long long) tat, (long long) ntat);
                }
            }

            /* the invariants, independently of the model */

            if (res.remaining > burst - 1) {
                remain_bad++;
            }

            if (!res.allowed
                && (res.retry_after_ms == 0 || res.remaining != 0
                    || tat != (old > now + tau ? now + tau : old)))
            {
                refused_bad++;
            }

            if (res.allowed
                && (res.retry_after_ms != 0 || tat <= old || tat <= now
                    || tat > now + tau))
            {
                refused_bad++;
            }

            if (res.reset_ms > (uint64_t) CEIL_MS(tau)) {
                reset_bad++;
            }

            /* T rounded up: the bucket may exceed the window by limit us */

            if (burst == limit && limit <= 1000 && res.reset_ms > win + 1) {
                reset_bad++;
            }

            if (res.retry_after_ms > win) {
                retry_bad++;
            }

            if (old <= now && !(res.allowed && res.remaining == burst - 1)) {
                idle_bad++;
            }

            if (res.allowed) {
                times[count++] = now;
            }
        }

        /* in any window of time, at most burst + limit - 1 */

        if (monotonic) {
            for (j = 0; j < count; j++) {
                for (k = j; k < count; k++) {
                    if (times[k] - times[j] >= (int64_t) win * 1000) {
                        break;
                    }
                }

                if (k - j > burst + limit - 1) {
                    window_bad++;
                    break;
                }
            }
        }
    }

    printf("# %llu random runs, %llu requests\n",
           (unsigned long long) run, (unsigned long long) calls);

    is_int(model_bad, 0, "random runs: results as the model");
    is_int(remain_bad, 0, "random runs: remaining <= burst - 1");
    is_int(refused_bad, 0,
           "random runs: refused: retry > 0, state kept (within the "
           "bucket); allowed: advanced");
    is_int(reset_bad, 0, "random runs: reset <= bucket (window + 1 ms)");
    is_int(retry_bad, 0, "random runs: retry-after <= window");
    is_int(idle_bad, 0, "random runs: an idle key passes with a full bucket");
    is_int(window_bad, 0,
           "random runs: at most burst + limit - 1 in any window");
}


static tenant_rate_t
rate_of(const char *spec, uint64_t burst)
{
    char           err[128];
    tenant_rate_t  rate;

    memset(&rate, 0, sizeof(rate));

    if (tenant_rate_parse(spec, strlen(spec), &rate, err, sizeof(err)) != 0) {
        printf("# cannot parse \"%s\": %s\n", spec, err);
    }

    if (burst) {
        rate.burst = burst;
    }

    return rate;
}


/*
 * A request every step_us from BASE for duration_us: the number admitted,
 * the most admitted in any window (half-open, of the rate's length), the
 * most by which the admitted ever exceed the quota so far (limit per
 * started window), and refusals that were odd (retry 0, state changed).
 */

static void
simulate(const tenant_rate_t *rate, int64_t step_us, int64_t duration_us,
    sim_t *sim)
{
    int64_t                tat, saved, now, w;
    uint64_t               i, j, quota;
    tenant_rate_result_t   res;

    memset(sim, 0, sizeof(sim_t));

    w = (int64_t) rate->window_ms * 1000;
    tat = 0;

    for (now = 0; now < duration_us; now += step_us) {
        saved = tat;
        tenant_rate_check(rate, &tat, BASE + now, &res);

        if (!res.allowed) {
            if (res.retry_after_ms == 0 || tat != saved) {
                sim->bad_refusals++;
            }
            continue;
        }

        if (sim->admitted == MAX_ADMITTED) {
            sim->bad_refusals++;
            continue;
        }

        admitted_at[sim->admitted++] = now;

        /* the quota of the windows started so far: [0, now] */

        quota = rate->limit * (uint64_t) (now / w + 1);

        if (sim->admitted > quota
            && sim->admitted - quota > sim->max_prefix_excess)
        {
            sim->max_prefix_excess = sim->admitted - quota;
        }
    }

    /* the quota over the whole run, whole windows */

    quota = rate->limit * (uint64_t) ((duration_us + w - 1) / w);
    if (sim->admitted > quota
        && sim->admitted - quota > sim->max_prefix_excess)
    {
        sim->max_prefix_excess = sim->admitted - quota;
    }

    for (i = 0, j = 0; i < sim->admitted; i++) {
        while (j < sim->admitted && admitted_at[j] - admitted_at[i] < w) {
            j++;
        }

        if (j - i > sim->max_window) {
            sim->max_window = j - i;
        }
    }
}


/* xorshift64*: a fixed sequence, so a failure is reproducible */

static uint64_t
rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;

    return rnd_state * 0x2545f4914f6cdd1dULL;
}


static uint64_t
rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}
