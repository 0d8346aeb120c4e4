/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: the tenant_tier directive.  The input is a list of
 * lines (separated by newlines or ';') read as the directive's arguments
 * (separated by spaces or tabs, an optional leading "tenant_tier"):
 *
 *   name [features=a,b,c|*] [rate=1000r/m] [burst=N]
 *
 * handled as ngx_tenant_tier() does: tenant_tiers_add() with the
 * features= value, tenant_rate_parse() with the rate= value; then the
 * lookups (tenant_tiers_feature(), _find(), _lowest_with(), tenant_tier_has())
 * for every name in the table and every word of the input, and a few
 * requests through tenant_rate_check() at every rate parsed.
 *
 * Checks, abort() on violation: a failed add changes nothing in the table
 * and explains itself in printable ASCII; a tier added is found by name
 * with the features it lists; every feature is found at its index and its
 * lowest tier is the first one that has it; a rate parsed is within the
 * documented bounds, and at one instant exactly `burst` requests pass.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tenant_ratelimit.h"
#include "tenant_tiers.h"


#define FUZZ_ARGS_MAX   16


typedef struct {
    const char      *data;
    size_t           len;
} fuzz_str_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_line(tenant_tiers_t *t, const char *p, size_t len);
static void fuzz_added(const tenant_tiers_t *t, fuzz_str_t *name,
    fuzz_str_t *spec);
static void fuzz_rate(const char *s, size_t len, long burst);
static void fuzz_lookups(const tenant_tiers_t *t, const char *p,
    size_t len);
static void fuzz_check_table(const tenant_tiers_t *t);
static int fuzz_prefix(const fuzz_str_t *s, const char *prefix);
static void fuzz_check_err(const char *err, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t           i, start;
    const char      *p;
    tenant_tiers_t  *t;

    /* on the heap, so that ASan sees its bounds */

    t = calloc(1, sizeof(tenant_tiers_t));
    if (t == NULL) {
        abort();
    }

    p = (const char *) data;
    start = 0;

    for (i = 0; i <= size; i++) {
        if (i < size && p[i] != '\n' && p[i] != ';') {
            continue;
        }

        fuzz_line(t, &p[start], i - start);
        start = i + 1;
    }

    fuzz_check_table(t);
    fuzz_lookups(t, p, size);

    free(t);

    return 0;
}


static void
fuzz_line(tenant_tiers_t *t, const char *p, size_t len)
{
    int              rc;
    long             burst;
    char            *copy, *scopy;
    size_t           i, j, n, start, first;
    fuzz_str_t       arg[FUZZ_ARGS_MAX], spec, rate;
    tenant_tiers_t   before;
    char             err[256];

    /* the arguments, as nginx splits them (without quotes) */

    n = 0;
    start = 0;

    for (i = 0; i <= len && n < FUZZ_ARGS_MAX; i++) {
        if (i < len && p[i] != ' ' && p[i] != '\t') {
            continue;
        }

        if (i > start) {
            arg[n].data = &p[start];
            arg[n].len = i - start;
            n++;
        }

        start = i + 1;
    }

    first = (n > 0 && arg[0].len == 11
             && memcmp(arg[0].data, "tenant_tier", 11) == 0);

    if (n <= first) {
        return;
    }

    spec.data = NULL;
    spec.len = 0;
    rate.data = NULL;
    rate.len = 0;
    burst = 0;

    for (i = first + 1; i < n; i++) {
        if (fuzz_prefix(&arg[i], "features=")) {
            spec.data = arg[i].data + 9;
            spec.len = arg[i].len - 9;

        } else if (fuzz_prefix(&arg[i], "rate=")) {
            rate.data = arg[i].data + 5;
            rate.len = arg[i].len - 5;

        } else if (fuzz_prefix(&arg[i], "burst=")) {

            /* as ngx_atoi(): digits only, else -1 */

            burst = (arg[i].len > 6 && arg[i].len <= 6 + 9) ? 0 : -1;

            for (j = 6; burst >= 0 && j < arg[i].len; j++) {
                if (arg[i].data[j] < '0' || arg[i].data[j] > '9') {
                    burst = -1;
                    break;
                }

                burst = burst * 10 + (arg[i].data[j] - '0');
            }

        } else {
            return;             /* "invalid parameter" */
        }
    }

    /* the name and the spec in allocations of their own: exact bounds */

    copy = malloc(arg[first].len);
    scopy = malloc(spec.len ? spec.len : 1);

    if (copy == NULL || scopy == NULL) {
        abort();
    }

    memcpy(copy, arg[first].data, arg[first].len);
    arg[first].data = copy;

    if (spec.data) {
        spec.data = memcpy(scopy, spec.data, spec.len);
    }

    before = *t;

    memset(err, 'x', sizeof(err));

    rc = tenant_tiers_add(t, arg[first].data, arg[first].len, spec.data,
                          spec.len, err, sizeof(err));

    if (rc == -1) {
        if (memcmp(t, &before, sizeof(tenant_tiers_t)) != 0) {
            abort();            /* a failed add changes nothing */
        }

        fuzz_check_err(err, sizeof(err));

    } else if (rc == 0) {
        if (t->ntiers != before.ntiers + 1) {
            abort();
        }

        fuzz_added(t, &arg[first], &spec);

    } else {
        abort();
    }

    free(copy);
    free(scopy);

    if (rate.data) {
        fuzz_rate(rate.data, rate.len, burst);
    }
}


static void
fuzz_added(const tenant_tiers_t *t, fuzz_str_t *name, fuzz_str_t *spec)
{
    int                   f;
    size_t                i, start;
    const tenant_tier_t  *tier;

    tier = tenant_tiers_find(t, name->data, name->len);

    if (tier != &t->tiers[t->ntiers - 1]
        || tier->name_len != name->len
        || tier->name[name->len] != '\0'
        || name->len == 0 || name->len > TENANT_NAME_MAX)
    {
        abort();
    }

    start = 0;

    for (i = 0; spec->len && i <= spec->len; i++) {
        if (i < spec->len && spec->data[i] != ',') {
            continue;
        }

        if (i - start == 1 && spec->data[start] == '*') {
            if (!tier->all) {
                abort();
            }

        } else {
            f = tenant_tiers_feature(t, &spec->data[start], i - start);

            if (f < 0 || !tenant_tier_has(tier, f)) {
                abort();
            }
        }

        start = i + 1;
    }
}


static void
fuzz_rate(const char *s, size_t len, long burst)
{
    char                  *copy, err[256];
    uint64_t               i, t, tau, b;
    int64_t                tat, now;
    tenant_rate_t          rate;
    tenant_rate_result_t   res;

    copy = malloc(len ? len : 1);
    if (copy == NULL) {
        abort();
    }

    memcpy(copy, s, len);
    memset(&rate, 0, sizeof(tenant_rate_t));
    memset(err, 'x', sizeof(err));

    if (tenant_rate_parse(copy, len, &rate, err, sizeof(err)) != 0) {
        fuzz_check_err(err, sizeof(err));
        free(copy);
        return;
    }

    free(copy);

    if (rate.limit < 1 || rate.limit > TENANT_RATE_MAX_LIMIT
        || rate.window_ms < 1 || rate.window_ms > TENANT_RATE_MAX_WINDOW
        || rate.window_ms * 1000 < rate.limit
        || rate.burst != rate.limit)
    {
        abort();
    }

    if (burst > 0 && burst <= TENANT_RATE_MAX_LIMIT) {
        rate.burst = (uint64_t) burst;
    }

    /* the emission interval and the bucket, as documented */

    b = rate.burst;
    t = (rate.window_ms * 1000 + rate.limit - 1) / rate.limit;
    tau = t * b;

    if (b > 1000) {
        return;
    }

    /* at one instant, exactly burst requests pass */

    now = 1000000000000LL;
    tat = 0;

    for (i = 1; i <= b; i++) {
        tenant_rate_check(&rate, &tat, now, &res);

        if (!res.allowed || res.remaining != b - i
            || res.retry_after_ms != 0
            || res.reset_ms != (i * t + 999) / 1000)
        {
            abort();
        }
    }

    tenant_rate_check(&rate, &tat, now, &res);

    if (res.allowed || res.remaining != 0
        || res.retry_after_ms != (t + 999) / 1000)
    {
        abort();
    }

    /* one interval later, one more */

    tenant_rate_check(&rate, &tat, now + (int64_t) t, &res);

    if (!res.allowed || res.remaining != 0) {
        abort();
    }

    /*
     * a state far beyond the bucket (a reload that shrank it): read as a
     * full bucket and brought back to one, so the Retry-After holds
     */

    tat = INT64_MAX;
    tenant_rate_check(&rate, &tat, now, &res);

    if (res.allowed || res.retry_after_ms != (t + 999) / 1000
        || res.reset_ms != (tau + 999) / 1000
        || tat != now + (int64_t) tau)
    {
        abort();
    }

    tenant_rate_check(&rate, &tat, now + (int64_t) t, &res);

    if (!res.allowed || res.remaining != 0) {
        abort();
    }
}


/* every word of the input as a tier and as a feature name */

static void
fuzz_lookups(const tenant_tiers_t *t, const char *p, size_t len)
{
    int                   f;
    size_t                i, start;
    const tenant_tier_t  *tier;

    start = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && p[i] != ' ' && p[i] != '\n' && p[i] != ','
            && p[i] != '=' && p[i] != ';')
        {
            continue;
        }

        f = tenant_tiers_feature(t, &p[start], i - start);

        if (f >= 0
            && ((size_t) f >= t->nfeatures
                || t->feature_len[f] != i - start
                || memcmp(t->features[f], &p[start], i - start) != 0))
        {
            abort();
        }

        tier = tenant_tiers_find(t, &p[start], i - start);

        if (tier != NULL
            && (tier->name_len != i - start
                || memcmp(tier->name, &p[start], i - start) != 0))
        {
            abort();
        }

        start = i + 1;
    }
}


static void
fuzz_check_table(const tenant_tiers_t *t)
{
    int                   f;
    size_t                i, j;
    const tenant_tier_t  *tier;

    if (t->ntiers > TENANT_TIERS_MAX || t->nfeatures > TENANT_FEATURES_MAX) {
        abort();
    }

    for (i = 0; i < t->ntiers; i++) {
        if (tenant_tiers_find(t, t->tiers[i].name, t->tiers[i].name_len)
            != &t->tiers[i])
        {
            abort();            /* names are unique */
        }

        if (!t->tiers[i].all
            && t->nfeatures < 64
            && (t->tiers[i].features >> t->nfeatures) != 0)
        {
            abort();            /* no bit beyond the known features */
        }
    }

    for (f = 0; (size_t) f < t->nfeatures; f++) {
        if (tenant_tiers_feature(t, t->features[f], t->feature_len[f]) != f
            || t->feature_len[f] == 0
            || t->feature_len[f] > TENANT_NAME_MAX
            || t->features[f][t->feature_len[f]] != '\0')
        {
            abort();
        }

        tier = tenant_tiers_lowest_with(t, f);

        for (j = 0; j < t->ntiers; j++) {
            if (tenant_tier_has(&t->tiers[j], f)) {
                break;
            }
        }

        if (tier != (j < t->ntiers ? &t->tiers[j] : NULL)) {
            abort();
        }
    }

    if (tenant_tiers_lowest_with(t, -1) != NULL
        || tenant_tiers_lowest_with(t, (int) t->nfeatures) != NULL)
    {
        abort();
    }
}


static int
fuzz_prefix(const fuzz_str_t *s, const char *prefix)
{
    size_t  n;

    n = strlen(prefix);

    return s->len >= n && memcmp(s->data, prefix, n) == 0;
}


/* a one-line reason in printable ASCII, NUL-terminated in the buffer */

static void
fuzz_check_err(const char *err, size_t size)
{
    size_t  i;

    for (i = 0; i < size && err[i] != '\0'; i++) {
        if ((unsigned char) err[i] < 0x20 || (unsigned char) err[i] > 0x7e) {
            abort();
        }
    }

    if (i == 0 || i == size) {
        abort();
    }
}
