/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: the Redis limiter's nginx-agnostic parts
 * (src/tenant_ratelimit_redis.h): key names, the script's arguments, the
 * check of its answer and the over-limit hold.  The input is 24 bytes of
 * rate (limit, window, burst: little-endian 64-bit, so zero and huge
 * values come too), 32 bytes of an answer (four 64-bit integers), 8 bytes
 * of a time step, then a prefix, a newline, an id, a newline and a value
 * (any bytes; missing parts are empty).
 *
 * Checks, abort() on violation:
 *   - a key is named exactly when its arguments are in range, fits
 *     TENANT_RATE_REDIS_KEY_MAX and an exact heap buffer (ASan), not one
 *     byte less, and reads back as prefix "{" id "}" ":" limit ":" window
 *     ":" burst (the limit for 0) [":u:" the value's first 128 bytes];
 *   - the arguments are the local limiter's t and tau, refused exactly
 *     when tau is above 2^51;
 *   - an answer accepted is one the script can give, rounded up to
 *     milliseconds; a hold refuses from the sending time until
 *     retry_after_us later, with a Retry-After never above the answer's.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tenant_ratelimit_redis.h"


#define FUZZ_HEAD  (24 + 32 + 8)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t fuzz_u64(const uint8_t *p);
static void fuzz_key(const tenant_rate_t *rate, const char *prefix,
    size_t prefix_len, const char *id, size_t id_len, const char *value,
    size_t value_len);
static void fuzz_answer(const int64_t *v, uint64_t step);
static uint64_t fuzz_ms(uint64_t us);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             i;
    size_t          n, prefix_len, id_len, value_len;
    int64_t         v[4];
    uint64_t        t, tau, lt, ltau;
    const char     *rest, *prefix, *id, *value, *nl;
    tenant_rate_t   rate;

    if (size < FUZZ_HEAD) {
        return 0;
    }

    rate.limit = fuzz_u64(data);
    rate.window_ms = fuzz_u64(data + 8);
    rate.burst = fuzz_u64(data + 16);

    for (i = 0; i < 4; i++) {
        v[i] = (int64_t) fuzz_u64(data + 24 + 8 * i);
    }

    /* the parts, each a heap copy of its own size (ASan sees overreads) */

    rest = (const char *) data + FUZZ_HEAD;
    n = size - FUZZ_HEAD;

    prefix = rest;
    nl = memchr(rest, '\n', n);
    prefix_len = nl ? (size_t) (nl - rest) : n;

    id = nl ? nl + 1 : rest + n;
    n -= nl ? prefix_len + 1 : prefix_len;
    nl = memchr(id, '\n', n);
    id_len = nl ? (size_t) (nl - id) : n;

    value = nl ? nl + 1 : id + n;
    value_len = nl ? n - id_len - 1 : 0;

    {
        char  *pc, *ic, *vc;

        pc = malloc(prefix_len + 1);
        ic = malloc(id_len + 1);
        vc = malloc(value_len + 1);

        if (pc && ic && vc) {
            memcpy(pc, prefix, prefix_len);
            memcpy(ic, id, id_len);
            memcpy(vc, value, value_len);

            fuzz_key(&rate, pc, prefix_len, ic, id_len, vc, value_len);
            fuzz_key(&rate, NULL, 0, ic, id_len, NULL, 0);
        }

        free(pc);
        free(ic);
        free(vc);
    }

    /* the script's arguments: the local limiter's, exact range only */

    if (tenant_rate_redis_args(&rate, &t, &tau) == 0) {
        if (tau > TENANT_RATE_REDIS_MAX_TAU) {
            abort();
        }

    } else if (tau <= TENANT_RATE_REDIS_MAX_TAU) {
        abort();
    }

    tenant_rate_bucket(&rate, &lt, &ltau);

    if (t != lt || tau != ltau || t == 0 || tau < t) {
        abort();
    }

    fuzz_answer(v, fuzz_u64(data + 56));

    return 0;
}


static void
fuzz_key(const tenant_rate_t *rate, const char *prefix, size_t prefix_len,
    const char *id, size_t id_len, const char *value, size_t value_len)
{
    int        valid;
    char      *buf, *p, num[80];
    size_t     len, exact, keep, want_prefix_len;
    const char *want_prefix;

    buf = malloc(TENANT_RATE_REDIS_KEY_MAX);
    if (buf == NULL) {
        return;
    }

    len = tenant_rate_redis_key(buf, TENANT_RATE_REDIS_KEY_MAX, prefix,
                                prefix_len, id, id_len, rate, value,
                                value_len);

    want_prefix = prefix ? prefix : TENANT_RATE_REDIS_PREFIX;
    want_prefix_len = prefix ? prefix_len
                             : sizeof(TENANT_RATE_REDIS_PREFIX) - 1;

    valid = want_prefix_len <= TENANT_RATE_REDIS_PREFIX_MAX
            && id_len > 0 && id_len <= TENANT_RATE_REDIS_ID_MAX
            && memchr(id, '}', id_len) == NULL
            && rate->limit != 0 && rate->window_ms != 0;

    if (valid != (len != 0) || len > TENANT_RATE_REDIS_KEY_MAX) {
        abort();
    }

    if (len == 0) {
        free(buf);
        return;
    }

    /* read it back */

    p = buf;

    if (memcmp(p, want_prefix, want_prefix_len) != 0) {
        abort();
    }

    p += want_prefix_len;

    if (*p++ != '{' || memcmp(p, id, id_len) != 0) {
        abort();
    }

    p += id_len;

    snprintf(num, sizeof(num), "}:%llu:%llu:%llu",
             (unsigned long long) rate->limit,
             (unsigned long long) rate->window_ms,
             (unsigned long long) (rate->burst ? rate->burst : rate->limit));

    if (memcmp(p, num, strlen(num)) != 0) {
        abort();
    }

    p += strlen(num);

    keep = value_len < TENANT_RATE_REDIS_VALUE_MAX
           ? value_len : TENANT_RATE_REDIS_VALUE_MAX;
    if (value == NULL) {
        keep = 0;
    }

    if (keep) {
        if (memcmp(p, ":u:", 3) != 0 || memcmp(p + 3, value, keep) != 0) {
            abort();
        }

        p += 3 + keep;
    }

    if ((size_t) (p - buf) != len) {
        abort();
    }

    /* an exact buffer, and one byte less */

    exact = len;
    free(buf);

    buf = malloc(exact);
    if (buf == NULL) {
        return;
    }

    if (tenant_rate_redis_key(buf, exact, prefix, prefix_len, id, id_len,
                              rate, value, value_len) != exact
        || tenant_rate_redis_key(buf, exact - 1, prefix, prefix_len, id,
                                 id_len, rate, value, value_len) != 0)
    {
        abort();
    }

    free(buf);
}


static void
fuzz_answer(const int64_t *v, uint64_t step)
{
    int64_t                      sent, now;
    tenant_rate_hold_t           hold;
    tenant_rate_result_t         res;
    tenant_rate_redis_answer_t   a;

    if (tenant_rate_redis_result(v, &a) != 0) {
        return;
    }

    if ((a.result.allowed != 0 && a.result.allowed != 1)
        || a.result.retry_after_ms != fuzz_ms(a.retry_after_us)
        || a.result.reset_ms != fuzz_ms(a.reset_us)
        || (a.result.allowed && a.retry_after_us != 0)
        || (!a.result.allowed
            && (a.retry_after_us == 0 || a.result.remaining != 0)))
    {
        abort();
    }

    /* a monotonic clock's time, then a step below 2^60 */

    sent = (int64_t) 1 << 50;
    now = sent + (int64_t) (step >> 4);

    hold.until_us = 0;
    hold.reset_us = 0;

    tenant_rate_hold_set(&hold, &a, sent);

    if (tenant_rate_hold_check(&hold, now, &res)) {
        if (a.result.allowed
            || (uint64_t) (now - sent) >= a.retry_after_us
            || res.allowed || res.remaining
            || res.retry_after_ms == 0
            || res.retry_after_ms > a.result.retry_after_ms
            || res.reset_ms > a.result.reset_ms)
        {
            abort();
        }

    } else if (!a.result.allowed
               && (uint64_t) (now - sent) < a.retry_after_us)
    {
        abort();
    }
}


static uint64_t
fuzz_u64(const uint8_t *p)
{
    int       i;
    uint64_t  n;

    n = 0;

    for (i = 7; i >= 0; i--) {
        n = n << 8 | p[i];
    }

    return n;
}


static uint64_t
fuzz_ms(uint64_t us)
{
    return us / 1000 + (us % 1000 != 0);
}
