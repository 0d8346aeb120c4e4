/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Per-tenant rate limits in the access phase, after the tenant is known
 * (nginx's limit_req runs in the preaccess phase, before that), and the
 * RateLimit-Policy / RateLimit response headers
 * (draft-ietf-httpapi-ratelimit-headers-10).
 *
 * The state of each key (the tenant's id, or the id and a value of
 * tenant_rate_limit_by) is one GCRA timestamp in a shared-memory zone,
 * read and advanced under the zone's mutex, so that all workers share one
 * limit exactly; see tenant_ratelimit.h for the arithmetic.  Its clock is
 * the monotonic clock (tenant_rate_now(), read under the mutex, as
 * ngx_current_msec is cached per worker and may lag another worker's):
 * the same in every worker and across reloads, which keep the zone, and
 * not moved by a step of the wall clock (NTP), which would refuse or
 * refill every recently active key.  The zone expires its entries by
 * ngx_current_msec, the same clock in whole seconds.
 *
 * A rate-limit zone without room even after evicting lets the request
 * through (fails open, logged at [alert] by the cache): a full
 * zone must not refuse every tenant.  Header allocation failures answer
 * 500.  Tests fill zones (t/140) but do not reach these (class A of
 * docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"


#define NGX_TENANT_RL_KEY_MAX   (NGX_TENANT_ID_MAX + 1 + TENANT_CLAIM_MAX)


typedef struct {
    tenant_rate_t          *rate;
    tenant_rate_result_t   *result;
    ngx_uint_t              refund;
} ngx_tenant_rl_op_t;


static void ngx_tenant_ratelimit_key(ngx_tenant_main_conf_t *tmcf,
    u_char *key, size_t len, tenant_rate_t *rate,
    tenant_rate_result_t *result, ngx_uint_t refund);
static ngx_int_t ngx_tenant_ratelimit_gcra(void *value, void *data);
static ngx_int_t ngx_tenant_ratelimit_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_tenant_ratelimit_header(ngx_http_request_t *r,
    ngx_tenant_ctx_t *ctx);
static ngx_table_elt_t *ngx_tenant_ratelimit_push(ngx_http_request_t *r,
    char *name, size_t len);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


ngx_int_t
ngx_tenant_ratelimit(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx)
{
    u_char               *p;
    size_t                len;
    ngx_str_t             value;
    tenant_rate_t         rate;
    const tenant_tier_t  *tier;
    u_char                key[NGX_TENANT_RL_KEY_MAX];

    if (tmcf->rl_zone == NULL) {
        return NGX_OK;
    }

    /*
     * The narrower limit first: a request it refuses costs the tenant
     * nothing.  One the tenant's limit then refuses is given back to the
     * narrower one: a refusal by either costs the other nothing.  (Each
     * key is checked and advanced under the zone's mutex; meanwhile
     * another request of the narrower key may find the quota this one
     * holds until it gives it back: a refusal too many at worst, never an
     * admission too many.)
     */

    len = 0;

    if (tlcf->rl_by) {
        if (ngx_http_complex_value(r, tlcf->rl_by, &value) != NGX_OK) {
            return NGX_ERROR;
        }

        if (value.len) {
            p = ngx_cpymem(key, ctx->tenant.id, ctx->tenant.id_len);
            *p++ = '\n';
            p = ngx_cpymem(p, value.data,
                           ngx_min(value.len, (size_t) TENANT_CLAIM_MAX));

            len = p - key;

            ctx->rl_by_rate = tlcf->rl_by_rate;
            ctx->rl_by_set = 1;

            ngx_tenant_ratelimit_key(tmcf, key, len, &ctx->rl_by_rate,
                                     &ctx->rl_by, 0);

            if (!ctx->rl_by.allowed) {
                return NGX_DECLINED;
            }
        }
    }

    /* the tenant's: its override, else its tier's, else the default */

    rate = tmcf->rl_default;

    tier = tenant_tiers_find(tmcf->tiers, (char *) ctx->tenant.tier,
                             ctx->tenant.tier_len);

    if (tier && tmcf->tier_rate[tier - tmcf->tiers->tiers].limit) {
        rate = tmcf->tier_rate[tier - tmcf->tiers->tiers];
    }

    if (ctx->tenant.rate_limit) {
        /* per the tier's or the default window; else per minute, as the
         * deployment guide's RATE_LIMIT_WINDOW; at most one request per
         * microsecond, as tenant_rate_parse() allows */

        if (rate.window_ms == 0) {
            rate.window_ms = 60000;
        }

        rate.limit = ngx_min((uint64_t) ctx->tenant.rate_limit,
                             rate.window_ms * 1000);
        rate.burst = rate.limit;
    }

    if (rate.limit == 0) {
        return NGX_OK;
    }

    ctx->rl_rate = rate;
    ctx->rl_set = 1;

    ngx_tenant_ratelimit_key(tmcf, ctx->tenant.id, ctx->tenant.id_len,
                             &ctx->rl_rate, &ctx->rl, 0);

    if (ctx->rl.allowed) {
        return NGX_OK;
    }

    if (len) {
        ngx_tenant_ratelimit_key(tmcf, key, len, &ctx->rl_by_rate,
                                 &ctx->rl_by, 1);
    }

    return NGX_DECLINED;
}


/* A request for the key, or with refund the one it admitted given back. */

static void
ngx_tenant_ratelimit_key(ngx_tenant_main_conf_t *tmcf, u_char *key,
    size_t len, tenant_rate_t *rate, tenant_rate_result_t *result,
    ngx_uint_t refund)
{
    uint64_t             bucket_ms;
    ngx_tenant_rl_op_t   op;

    op.rate = rate;
    op.result = result;
    op.refund = refund;

    /*
     * A key idle until its whole burst is back is as good as new: let it
     * go then, not before (burst / limit windows; bounded by the parser:
     * a day times 10^8 fits 64 bits).
     */

    /* burst is never 0 (tenant_rate_parse() defaults it to the limit);
     * the test keeps a zero out of the division's numerator anyway */

    bucket_ms = rate->window_ms * (rate->burst ? rate->burst : rate->limit)
                / rate->limit;

    if (ngx_tenant_cache_apply(tmcf->rl_zone, key, len,
                               ngx_tenant_ratelimit_gcra, &op,
                               ngx_tenant_cache_now(tmcf->rl_zone)
                               + (time_t) (bucket_ms / 1000) + 2)
        != NGX_OK)
    {
        /* no room even after evictions (logged): do not refuse for it */
        result->allowed = 1;
        result->remaining = 0;
        result->reset_ms = 0;
    }
}


/* Under the zone's mutex. */

static ngx_int_t
ngx_tenant_ratelimit_gcra(void *value, void *data)
{
    ngx_tenant_rl_op_t  *op = data;

    int64_t  tat, now;

    ngx_memcpy(&tat, value, sizeof(int64_t));

    now = tenant_rate_now();

    if (op->refund) {
        tenant_rate_refund(op->rate, &tat, now, op->result);

    } else {
        tenant_rate_check(op->rate, &tat, now, op->result);
    }

    ngx_memcpy(value, &tat, sizeof(int64_t));

    return NGX_OK;
}


ngx_int_t
ngx_tenant_ratelimit_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_tenant_ratelimit_header_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_ratelimit_header_filter(ngx_http_request_t *r)
{
    ngx_tenant_ctx_t  *ctx;

    if (r == r->main) {
        /* also after an error_page redirect, which clears module ctxs */

        ctx = ngx_tenant_get_ctx(r);

        if (ctx && (ctx->rl_set || ctx->rl_by_set)) {
            if (ngx_tenant_ratelimit_header(r, ctx) != NGX_OK) {
                return NGX_ERROR;
            }
        }
    }

    return ngx_http_next_header_filter(r);
}


/*
 * RateLimit-Policy: "tenant";q=100;w=60, "user";q=20;w=60
 * RateLimit: "tenant";r=42;t=35, "user";r=3;t=12
 */

static ngx_int_t
ngx_tenant_ratelimit_header(ngx_http_request_t *r, ngx_tenant_ctx_t *ctx)
{
    u_char           *p, *q;
    size_t            len;
    ngx_table_elt_t  *policy, *limit;

    len = 2 * (sizeof("\"tenant\";q=;w=, ") + 2 * NGX_INT64_LEN);

    policy = ngx_tenant_ratelimit_push(r, "RateLimit-Policy", len);
    limit = ngx_tenant_ratelimit_push(r, "RateLimit", len);

    if (policy == NULL || limit == NULL) {
        return NGX_ERROR;
    }

    p = policy->value.data;
    q = limit->value.data;

    if (ctx->rl_set) {
        p = ngx_sprintf(p, "\"tenant\";q=%uL;w=%uL", ctx->rl_rate.limit,
                        (ctx->rl_rate.window_ms + 999) / 1000);
        q = ngx_sprintf(q, "\"tenant\";r=%uL;t=%uL", ctx->rl.remaining,
                        ngx_tenant_ratelimit_seconds(&ctx->rl));
    }

    if (ctx->rl_by_set) {
        if (ctx->rl_set) {
            p = ngx_cpymem(p, ", ", 2);
            q = ngx_cpymem(q, ", ", 2);
        }

        p = ngx_sprintf(p, "\"user\";q=%uL;w=%uL", ctx->rl_by_rate.limit,
                        (ctx->rl_by_rate.window_ms + 999) / 1000);
        q = ngx_sprintf(q, "\"user\";r=%uL;t=%uL", ctx->rl_by.remaining,
                        ngx_tenant_ratelimit_seconds(&ctx->rl_by));
    }

    policy->value.len = p - policy->value.data;
    limit->value.len = q - limit->value.data;

    return NGX_OK;
}


/*
 * Seconds, rounded up: until the quota is whole again when admitted,
 * until the next request passes when refused (the Retry-After value).
 */

uint64_t
ngx_tenant_ratelimit_seconds(tenant_rate_result_t *res)
{
    return ((res->allowed ? res->reset_ms : res->retry_after_ms) + 999)
           / 1000;
}


static ngx_table_elt_t *
ngx_tenant_ratelimit_push(ngx_http_request_t *r, char *name, size_t len)
{
    u_char  *value;

    value = ngx_pnalloc(r->pool, len);
    if (value == NULL) {
        return NULL;
    }

    return ngx_tenant_header_out(r, name, value, 0);
}
