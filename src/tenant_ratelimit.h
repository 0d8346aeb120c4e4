/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Per-tenant rate limits: the rate syntax of the directives and the
 * arithmetic of the limiter.  nginx-agnostic; the state lives wherever
 * the caller keeps it (a shared-memory zone, under its mutex).
 *
 * The limiter is GCRA (the generic cell rate algorithm, a token bucket
 * that keeps one timestamp per key): a quota of `limit` requests per
 * `window` refills continuously, one request every window / limit
 * (rounded up to a whole microsecond, so that the bounds below hold), and
 * up to `burst` requests may be made at once (default: `limit`).  Over a
 * long time at most limit requests per window pass; in any one window of
 * that length at most burst + limit - 1.
 */

#ifndef _TENANT_RATELIMIT_H_INCLUDED_
#define _TENANT_RATELIMIT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TENANT_RATE_MAX_LIMIT     100000000    /* requests per window */
#define TENANT_RATE_MAX_WINDOW    86400000     /* ms: one day */


typedef struct {
    uint64_t     limit;          /* requests per window: the quota, q */
    uint64_t     window_ms;      /* w */
    uint64_t     burst;          /* requests at once; 0 in a spec: limit */
} tenant_rate_t;


typedef struct {
    int          allowed;        /* 1: admitted (and counted) */
    uint64_t     remaining;      /* requests that would pass right now */
    uint64_t     retry_after_ms; /* refused: until one would pass */
    uint64_t     reset_ms;       /* until the whole burst is available */
} tenant_rate_result_t;


/*
 * Parses a rate: "100r/s", "1000r/m", "5000r/h", "100r/d" (after "r/"
 * only s, m, h, d), or a count over a time, "100/60s", "100/60000ms",
 * "100/1m", "100/1h" (nginx's time units ms, s, m, h, d, in lower case).
 * Whole numbers without leading zeros, limit 1 ..
 * TENANT_RATE_MAX_LIMIT, window 1 ms .. TENANT_RATE_MAX_WINDOW, and at
 * least one microsecond per request (window / limit).  Sets burst to the
 * limit.  0, or -1 with a one-line reason in err.
 */
int tenant_rate_parse(const char *s, size_t len, tenant_rate_t *rate,
    char *err, size_t errlen);

/*
 * Microseconds of CLOCK_MONOTONIC: system-wide (the same in every process),
 * not moved by steps of the wall clock, restarted at boot.  Read under the
 * lock that guards the states, so that the times of successive updates of
 * a state never go back, whichever process makes them (a per-process
 * cached time, such as nginx's ngx_current_msec, can lag another's).
 */
int64_t tenant_rate_now(void);

/*
 * One request at now_us, microseconds of a clock that never goes back
 * (tenant_rate_now(): a wall clock stepped back would refuse every key
 * used within the step, one stepped forward would refill them all).
 * *tat_us is the key's state (0 for a new key); it is advanced only when
 * the request is allowed.  A state beyond the bucket (its rate's bucket
 * shrank) reads as a full bucket and is brought back to one, so that a
 * request retry_after_ms later passes; nothing in *res is ever negative or
 * larger than the bucket.
 */
void tenant_rate_check(const tenant_rate_t *rate, int64_t *tat_us,
    int64_t now_us, tenant_rate_result_t *res);

/*
 * Gives back the request an earlier tenant_rate_check() admitted (another
 * limit refused it), as if it had not been made: the state moves back by
 * one emission interval, never before now_us.  *res is then what the key
 * offers at now_us: allowed 1, remaining, reset_ms.
 */
void tenant_rate_refund(const tenant_rate_t *rate, int64_t *tat_us,
    int64_t now_us, tenant_rate_result_t *res);

/*
 * The emission interval t and the bucket tau of a rate, in microseconds,
 * as tenant_rate_check() computes them (t = window / limit rounded up,
 * tau = t * burst, at most 2^62): what another implementation of the same
 * limiter (the Redis script of tenant_ratelimit_redis.h) is given, so
 * that the rounding lives in one place.
 */
void tenant_rate_bucket(const tenant_rate_t *rate, uint64_t *t,
    uint64_t *tau);


#endif /* _TENANT_RATELIMIT_H_INCLUDED_ */
