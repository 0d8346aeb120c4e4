/*
 * Copyright (C) ngx_tenant_module authors
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tenant_ratelimit.h"


/* a count or a window length: 9 digits hold either maximum */
#define TENANT_RATE_MAX_DIGITS    9

/* the largest bucket, in microseconds: 2^62, about 146,000 years */
#define TENANT_RATE_MAX_TAU       ((uint64_t) 1 << 62)


static size_t tenant_rate_number(const char *p, const char *end,
    uint64_t *n);
static uint64_t tenant_rate_unit(const char *p, size_t len, int any);
static int tenant_rate_alpha(char c);
static void tenant_rate_interval(const tenant_rate_t *rate, uint64_t *t,
    uint64_t *tau);
static uint64_t tenant_rate_ms(uint64_t us);
static void tenant_rate_error(char *err, size_t errlen, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));


int
tenant_rate_parse(const char *s, size_t len, tenant_rate_t *rate,
    char *err, size_t errlen)
{
    size_t       n, digits, units;
    uint64_t     limit, count, unit, window;
    const char  *p, *end, *u;

    if (len == 0) {
        tenant_rate_error(err, errlen, "empty rate");
        return -1;
    }

    p = s;
    end = s + len;

    n = tenant_rate_number(p, end, &limit);

    if (n == 0) {
        tenant_rate_error(err, errlen,
                          "the rate does not begin with a number of requests");
        return -1;
    }

    if (n > 1 && *p == '0') {
        tenant_rate_error(err, errlen,
                          "leading zero in the number of requests");
        return -1;
    }

    if (n > TENANT_RATE_MAX_DIGITS || limit > TENANT_RATE_MAX_LIMIT) {
        tenant_rate_error(err, errlen, "more than %d requests per window",
                          TENANT_RATE_MAX_LIMIT);
        return -1;
    }

    if (limit == 0) {
        tenant_rate_error(err, errlen, "zero requests per window");
        return -1;
    }

    p += n;

    if (p < end && *p == 'r') {

        /* "100r/s": one unit of time */

        if (p + 1 == end || p[1] != '/') {
            tenant_rate_error(err, errlen, "\"r\" is not followed by \"/\"");
            return -1;
        }

        p += 2;
        count = 1;
        digits = 1;

        for (u = p; u < end && tenant_rate_alpha(*u); u++) {
            /* void */
        }

        units = (size_t) (u - p);
        unit = tenant_rate_unit(p, units, 0);

        if (unit == 0) {
            tenant_rate_error(err, errlen,
                              "the unit after \"r/\" is not s, m, h or d");
            return -1;
        }

    } else if (p < end && *p == '/') {

        /* "100/60s": a count of units of time */

        p++;
        digits = tenant_rate_number(p, end, &count);

        if (digits == 0) {
            tenant_rate_error(err, errlen,
                              "no window length after \"/\"");
            return -1;
        }

        if (digits > 1 && *p == '0') {
            tenant_rate_error(err, errlen,
                              "leading zero in the window length");
            return -1;
        }

        p += digits;

        for (u = p; u < end && tenant_rate_alpha(*u); u++) {
            /* void */
        }

        units = (size_t) (u - p);

        if (units == 0) {
            tenant_rate_error(err, errlen,
                              "the window has no time unit (ms, s, m, h, d)");
            return -1;
        }

        unit = tenant_rate_unit(p, units, 1);

        if (unit == 0) {
            tenant_rate_error(err, errlen,
                              "unknown time unit in the window "
                              "(ms, s, m, h, d)");
            return -1;
        }

    } else {
        tenant_rate_error(err, errlen,
                          "expected \"r/\" or \"/\" after the number of "
                          "requests");
        return -1;
    }

    if (u != end) {
        tenant_rate_error(err, errlen,
                          "unexpected characters after the time unit");
        return -1;
    }

    if (count == 0) {
        tenant_rate_error(err, errlen, "zero-length window");
        return -1;
    }

    /* at most 999999999 * 86400000: no overflow */

    window = count * unit;

    if (digits > TENANT_RATE_MAX_DIGITS || window > TENANT_RATE_MAX_WINDOW) {
        tenant_rate_error(err, errlen, "window longer than one day");
        return -1;
    }

    if (window * 1000 < limit) {
        tenant_rate_error(err, errlen,
                          "more than one request per microsecond");
        return -1;
    }

    rate->limit = limit;
    rate->window_ms = window;
    rate->burst = limit;

    return 0;
}


int64_t
tenant_rate_now(void)
{
    struct timespec  ts;

    /* fails only for an unknown clock (as nginx, not checked): then 0,
     * which the limiter takes */

    ts.tv_sec = 0;
    ts.tv_nsec = 0;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/*
 * GCRA, computed relative to now so that every quantity is a non-negative
 * number of microseconds:
 *
 *     d   how far the key's state (the theoretical arrival time) is ahead
 *         of now: the part of the bucket in use, 0 .. tau;
 *     t   the emission interval, window / limit rounded up, so that no
 *         more than limit requests pass in a window;
 *     tau the bucket, t * burst.
 *
 * A request is allowed if d + t <= tau; the state then becomes now + d + t.
 * An allowed request never leaves the state more than tau ahead: a state
 * further ahead was written under a larger bucket (the key's rate changed
 * on a reload or with its tier), or with a clock that went back; it is
 * brought back to a full bucket, not only read as one, else the refusals
 * would go on past their Retry-After.
 */

void
tenant_rate_check(const tenant_rate_t *rate, int64_t *tat_us,
    int64_t now_us, tenant_rate_result_t *res)
{
    uint64_t  t, tau, d, nd;

    tenant_rate_interval(rate, &t, &tau);

    d = 0;

    if (*tat_us > now_us) {
        d = (uint64_t) *tat_us - (uint64_t) now_us;

        if (d > tau) {
            d = tau;
            *tat_us = now_us + (int64_t) tau;
        }
    }

    nd = d + t;

    if (nd > tau) {
        res->allowed = 0;
        res->remaining = 0;
        res->retry_after_ms = tenant_rate_ms(nd - tau);
        res->reset_ms = tenant_rate_ms(d);
        return;
    }

    if (now_us > 0 && nd > (uint64_t) (INT64_MAX - now_us)) {
        *tat_us = INT64_MAX;

    } else {
        *tat_us = now_us + (int64_t) nd;
    }

    res->allowed = 1;
    res->remaining = (tau - nd) / t;
    res->retry_after_ms = 0;
    res->reset_ms = tenant_rate_ms(nd);
}


void
tenant_rate_refund(const tenant_rate_t *rate, int64_t *tat_us,
    int64_t now_us, tenant_rate_result_t *res)
{
    uint64_t  t, tau, d;

    tenant_rate_interval(rate, &t, &tau);

    d = 0;

    if (*tat_us > now_us) {
        d = (uint64_t) *tat_us - (uint64_t) now_us;

        if (d > t) {
            /* t < d = tat - now: no overflow */
            d -= t;
            *tat_us -= (int64_t) t;

        } else {
            d = 0;
            *tat_us = now_us;
        }

        if (d > tau) {
            d = tau;
        }
    }

    res->allowed = 1;
    res->remaining = (tau - d) / t;
    res->retry_after_ms = 0;
    res->reset_ms = tenant_rate_ms(d);
}


void
tenant_rate_bucket(const tenant_rate_t *rate, uint64_t *t, uint64_t *tau)
{
    tenant_rate_interval(rate, t, tau);
}


/* The digits at p: their count, and their value if there are at most 9. */

static size_t
tenant_rate_number(const char *p, const char *end, uint64_t *n)
{
    size_t  i;

    *n = 0;

    for (i = 0; p + i < end && p[i] >= '0' && p[i] <= '9'; i++) {
        if (i < TENANT_RATE_MAX_DIGITS) {
            *n = *n * 10 + (uint64_t) (p[i] - '0');
        }
    }

    return i;
}


/* A time unit in milliseconds, or 0; "ms" only if any. */

static uint64_t
tenant_rate_unit(const char *p, size_t len, int any)
{
    if (len == 2 && p[0] == 'm' && p[1] == 's') {
        return any ? 1 : 0;
    }

    if (len != 1) {
        return 0;
    }

    switch (p[0]) {

    case 's':
        return 1000;

    case 'm':
        return 60 * 1000;

    case 'h':
        return 60 * 60 * 1000;

    case 'd':
        return 24 * 60 * 60 * 1000;

    default:
        return 0;
    }
}


/* A letter: a unit is read as the whole run of them ("60sx" is unknown). */

static int
tenant_rate_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}


/*
 * The emission interval and the bucket of a rate, in microseconds.  A rate
 * outside the parser's bounds (a zero limit or window, a window above the
 * maximum, a huge burst) is brought within them rather than divided by
 * zero or overflowed.
 */

static void
tenant_rate_interval(const tenant_rate_t *rate, uint64_t *t, uint64_t *tau)
{
    uint64_t  limit, window, burst;

    limit = rate->limit ? rate->limit : 1;
    burst = rate->burst ? rate->burst : limit;

    window = rate->window_ms;
    if (window > TENANT_RATE_MAX_WINDOW) {
        window = TENANT_RATE_MAX_WINDOW;
    }

    window *= 1000;

    *t = window / limit + (window % limit != 0);
    if (*t == 0) {
        *t = 1;
    }

    if (burst > TENANT_RATE_MAX_TAU / *t) {
        *tau = TENANT_RATE_MAX_TAU;

    } else {
        *tau = *t * burst;
    }
}


/* Microseconds to milliseconds, rounded up. */

static uint64_t
tenant_rate_ms(uint64_t us)
{
    return us / 1000 + (us % 1000 != 0);
}


static void
tenant_rate_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    (void) vsnprintf(err, errlen, fmt, args);
    va_end(args);
}
