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
 * With tenant_redis the limits are counted in Redis instead, one atomic
 * script per request for all of its keys (tenant_ratelimit_redis.h), and
 * the access phase waits for the answer (NGX_AGAIN).  A key Redis refused
 * until T is refused here until T without asking again (the hold, kept in
 * the key's zone entry, so that every worker knows it).  Without an answer
 * (no ready connection, the command's timeout, an error) the request is
 * limited locally, at limit / instances (fallback=local) or not at all
 * (fallback=open): never refused, never made to wait, for Redis's sake.
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
#include "ngx_tenant_metrics.h"
#include "ngx_tenant_redis.h"


#define NGX_TENANT_RL_KEY_MAX   (NGX_TENANT_ID_MAX + 1 + TENANT_CLAIM_MAX)

/* EVALSHA sha n key_1 key_2 t_1 tau_1 t_2 tau_2 */
#define NGX_TENANT_RL_KEYS      2
#define NGX_TENANT_RL_ARGS      (3 + 3 * NGX_TENANT_RL_KEYS)

/* a fallback is logged at most once per interval per worker */
#define NGX_TENANT_RL_LOG_EVERY 10000


typedef struct {
    tenant_rate_t          *rate;
    tenant_rate_result_t   *result;
    ngx_uint_t              refund;
} ngx_tenant_rl_op_t;


typedef struct {
    tenant_rate_redis_answer_t  *answer;
    int64_t                      sent_us;
    tenant_rate_t               *rate;
} ngx_tenant_rl_hold_op_t;


/* A request's Redis command: what the answer's groups are about. */

typedef struct {
    ngx_http_request_t     *request;
    ngx_uint_t              nkeys;
    tenant_rate_t          *rate[NGX_TENANT_RL_KEYS];
    tenant_rate_result_t   *result[NGX_TENANT_RL_KEYS];
    u_char                 *key[NGX_TENANT_RL_KEYS];    /* the zone's */
    size_t                  len[NGX_TENANT_RL_KEYS];
    int64_t                 sent_us;
} ngx_tenant_rl_redis_t;


static ngx_int_t ngx_tenant_ratelimit_redis(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx, u_char *key,
    size_t len, ngx_str_t *value);
static ngx_uint_t ngx_tenant_ratelimit_held(ngx_tenant_main_conf_t *tmcf,
    u_char *key, size_t len, tenant_rate_t *rate, int64_t now,
    tenant_rate_result_t *result);
static void ngx_tenant_ratelimit_answer(void *data, ngx_uint_t rc,
    tenant_resp_value_t *reply);
static ngx_int_t ngx_tenant_ratelimit_read(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_rl_redis_t *rr, ngx_tenant_ctx_t *ctx,
    tenant_resp_value_t *reply);
static ngx_int_t ngx_tenant_ratelimit_hold(void *value, void *data);
static void ngx_tenant_ratelimit_fallback(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx, u_char *key,
    size_t len, ngx_uint_t reason, tenant_resp_value_t *reply);
static void ngx_tenant_ratelimit_local(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx, u_char *key, size_t len);
static void ngx_tenant_ratelimit_key(ngx_tenant_main_conf_t *tmcf,
    u_char *key, size_t len, tenant_rate_t *rate,
    tenant_rate_result_t *result, ngx_uint_t refund);
static time_t ngx_tenant_ratelimit_expire(ngx_tenant_main_conf_t *tmcf,
    tenant_rate_t *rate);
static ngx_int_t ngx_tenant_ratelimit_gcra(void *value, void *data);
static ngx_int_t ngx_tenant_ratelimit_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_tenant_ratelimit_header(ngx_http_request_t *r,
    ngx_tenant_ctx_t *ctx);
static ngx_table_elt_t *ngx_tenant_ratelimit_push(ngx_http_request_t *r,
    char *name, size_t len);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

/* this worker's fallbacks not yet logged, and when it last logged one */
static ngx_uint_t  ngx_tenant_rl_fallbacks;
static ngx_msec_t  ngx_tenant_rl_logged;
static ngx_uint_t  ngx_tenant_rl_ever_logged;


/*
 * Decides the request's limits: NGX_OK with ctx->rl_refused set or not,
 * NGX_AGAIN when Redis's answer will (the access phase is run again with
 * the state NGX_TENANT_STATE_RATED), NGX_ERROR.
 */

ngx_int_t
ngx_tenant_ratelimit(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx)
{
    u_char               *p;
    size_t                len;
    ngx_int_t             rc;
    ngx_str_t             value;
    tenant_rate_t         rate;
    const tenant_tier_t  *tier;
    u_char               *key;

    ctx->rl_refused = 0;
    ctx->rl_source = NGX_TENANT_RL_NONE;

    if (tmcf->rl_zone == NULL) {
        return NGX_OK;
    }

    /* the narrower limit, per value within the tenant (e.g. per user) */

    len = 0;
    key = NULL;
    ngx_str_null(&value);

    if (tlcf->rl_by) {
        if (ngx_http_complex_value(r, tlcf->rl_by, &value) != NGX_OK) {
            return NGX_ERROR;
        }

        value.len = ngx_min(value.len, (size_t) TENANT_CLAIM_MAX);

        if (value.len) {
            key = ngx_pnalloc(r->pool, NGX_TENANT_RL_KEY_MAX);
            if (key == NULL) {
                return NGX_ERROR;
            }

            p = ngx_cpymem(key, ctx->tenant.id, ctx->tenant.id_len);
            *p++ = '\n';
            p = ngx_cpymem(p, value.data, value.len);

            len = p - key;

            ctx->rl_by_rate = tlcf->rl_by_rate;
            ctx->rl_by_set = 1;
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

    if (rate.limit) {
        ctx->rl_rate = rate;
        ctx->rl_set = 1;
    }

    if (!ctx->rl_set && !ctx->rl_by_set) {
        return NGX_OK;
    }

    if (tmcf->redis) {
        rc = ngx_tenant_ratelimit_redis(r, tmcf, ctx, key, len, &value);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* a rate Redis cannot count exactly: here, in full */
    }

    ngx_tenant_ratelimit_local(tmcf, ctx, key, len);

    return NGX_OK;
}


/*
 * One EVALSHA for all of the request's keys (the narrower first, as
 * ngx_tenant_ratelimit_local() checks them), unless a key is held: NGX_OK
 * when decided here (held, or a fallback), NGX_AGAIN when the answer will
 * decide, NGX_DECLINED when Redis cannot count these rates.
 */

static ngx_int_t
ngx_tenant_ratelimit_redis(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx, u_char *key,
    size_t len, ngx_str_t *value)
{
    u_char                   *p, *num;
    size_t                    klen;
    int64_t                   now;
    uint64_t                  t, tau;
    ngx_uint_t                i, n;
    tenant_resp_arg_t         argv[NGX_TENANT_RL_ARGS];
    ngx_tenant_rl_redis_t    *rr;
    ngx_tenant_redis_cmd_t   *cmd;
    ngx_tenant_redis_conf_t  *rcf;

    rcf = tmcf->redis;

    rr = ngx_pcalloc(r->pool, sizeof(ngx_tenant_rl_redis_t));
    if (rr == NULL) {
        return NGX_ERROR;
    }

    rr->request = r;

    if (ctx->rl_by_set) {
        rr->rate[rr->nkeys] = &ctx->rl_by_rate;
        rr->result[rr->nkeys] = &ctx->rl_by;
        rr->key[rr->nkeys] = key;
        rr->len[rr->nkeys] = len;
        rr->nkeys++;
    }

    if (ctx->rl_set) {
        rr->rate[rr->nkeys] = &ctx->rl_rate;
        rr->result[rr->nkeys] = &ctx->rl;
        rr->key[rr->nkeys] = ctx->tenant.id;
        rr->len[rr->nkeys] = ctx->tenant.id_len;
        rr->nkeys++;
    }

    n = rr->nkeys;

    /*
     * A key refused until later is refused without asking: no other
     * gateway can make it pass sooner.  The keys after it are not looked
     * at (as Redis would not), and the narrower one before a held
     * tenant's is not counted: it is left out of the headers.
     */

    now = tenant_rate_now();

    for (i = 0; i < n; i++) {
        if (ngx_tenant_ratelimit_held(tmcf, rr->key[i], rr->len[i],
                                      rr->rate[i], now, rr->result[i]))
        {
            if (rr->result[i] == &ctx->rl_by) {
                ctx->rl_set = 0;

            } else {
                ctx->rl_by_set = 0;
            }

            ctx->rl_refused = 1;
            ctx->rl_source = NGX_TENANT_RL_HOLD;

            if (tmcf->metrics) {
                (void) ngx_atomic_fetch_add(&tmcf->metrics->redis.held, 1);
            }

            return NGX_OK;
        }
    }

    /* EVALSHA sha n key_1 .. key_n t_1 tau_1 .. t_n tau_n */

    p = ngx_pnalloc(r->pool, n * (TENANT_RATE_REDIS_KEY_MAX
                                  + 2 * NGX_INT64_LEN)
                             + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    argv[0].data = (const unsigned char *) "EVALSHA";
    argv[0].len = sizeof("EVALSHA") - 1;
    argv[1].data = (const unsigned char *) rcf->sha;
    argv[1].len = TENANT_RATE_REDIS_SHA1_HEX;

    num = p;
    p = ngx_sprintf(p, "%ui", n);
    argv[2].data = num;
    argv[2].len = p - num;

    for (i = 0; i < n; i++) {
        if (tenant_rate_redis_args(rr->rate[i], &t, &tau) != 0) {
            return NGX_DECLINED;
        }

        klen = tenant_rate_redis_key((char *) p, TENANT_RATE_REDIS_KEY_MAX,
                                     (char *) rcf->prefix.data,
                                     rcf->prefix.len,
                                     (char *) ctx->tenant.id,
                                     ctx->tenant.id_len, rr->rate[i],
                                     rr->result[i] == &ctx->rl_by
                                     ? (char *) value->data : NULL,
                                     rr->result[i] == &ctx->rl_by
                                     ? value->len : 0);
        if (klen == 0) {
            return NGX_DECLINED;
        }

        argv[3 + i].data = p;
        argv[3 + i].len = klen;
        p += klen;

        num = p;
        p = ngx_sprintf(p, "%uL", t);
        argv[3 + n + 2 * i].data = num;
        argv[3 + n + 2 * i].len = p - num;

        num = p;
        p = ngx_sprintf(p, "%uL", tau);
        argv[3 + n + 2 * i + 1].data = num;
        argv[3 + n + 2 * i + 1].len = p - num;
    }

    rr->sent_us = now;

    cmd = ngx_tenant_redis_send(rcf, argv, 3 + 3 * n,
                                ngx_tenant_ratelimit_answer, rr);

    if (cmd == NULL) {
        ngx_tenant_ratelimit_fallback(r, tmcf, ctx, key, len,
                                      NGX_TENANT_REDIS_FB_DOWN, NULL);
        return NGX_OK;
    }

    ctx->rl_cmd = cmd;
    ctx->rl_redis = rr;

    return NGX_AGAIN;
}


/* 1 if the key is held at the rate at now: *result is the refusal. */

static ngx_uint_t
ngx_tenant_ratelimit_held(ngx_tenant_main_conf_t *tmcf, u_char *key,
    size_t len, tenant_rate_t *rate, int64_t now,
    tenant_rate_result_t *result)
{
    ngx_tenant_rl_value_t  v;

    if (ngx_tenant_cache_get(tmcf->rl_zone, key, len, &v) != NGX_OK) {
        return 0;
    }

    if (v.hold_rate.limit != rate->limit
        || v.hold_rate.window_ms != rate->window_ms
        || v.hold_rate.burst != rate->burst)
    {
        return 0;
    }

    return tenant_rate_hold_check(&v.hold, now, result);
}


/* Redis's answer, or none: the request goes on (NGX_TENANT_STATE_RATED). */

static void
ngx_tenant_ratelimit_answer(void *data, ngx_uint_t rc,
    tenant_resp_value_t *reply)
{
    ngx_tenant_rl_redis_t *rr = data;

    ngx_uint_t               reason;
    ngx_connection_t        *c;
    ngx_tenant_ctx_t        *ctx;
    ngx_http_request_t      *r;
    ngx_tenant_main_conf_t  *tmcf;

    r = rr->request;
    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_tenant_module);
    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    ctx->rl_cmd = NULL;

    ngx_http_set_log_request(c->log, r);

    if (rc == NGX_TENANT_REDIS_REPLY
        && ngx_tenant_ratelimit_read(tmcf, rr, ctx, reply) == NGX_OK)
    {
        ctx->rl_source = NGX_TENANT_RL_REDIS;

    } else {
        reason = (rc == NGX_TENANT_REDIS_TIMEOUT) ? NGX_TENANT_REDIS_FB_TIMEOUT
                                                  : NGX_TENANT_REDIS_FB_ERROR;

        ngx_tenant_ratelimit_fallback(r, tmcf, ctx,
                                      ctx->rl_by_set ? rr->key[0] : NULL,
                                      ctx->rl_by_set ? rr->len[0] : 0,
                                      reason,
                                      rc == NGX_TENANT_REDIS_REPLY ? reply
                                                                   : NULL);
    }

    ctx->state = NGX_TENANT_STATE_RATED;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}


/*
 * The script's answer: TENANT_RATE_REDIS_REPLY integers per key looked
 * at, all admissions but maybe the last.  Anything else is NGX_ERROR (the
 * request is then limited locally).
 */

static ngx_int_t
ngx_tenant_ratelimit_read(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_rl_redis_t *rr, ngx_tenant_ctx_t *ctx,
    tenant_resp_value_t *reply)
{
    int64_t                      v[NGX_TENANT_RL_KEYS
                                   * TENANT_RATE_REDIS_REPLY];
    ngx_uint_t                   i, groups;
    ngx_tenant_rl_hold_op_t      op;
    tenant_rate_redis_answer_t   answer[NGX_TENANT_RL_KEYS];

    if (reply->type != TENANT_RESP_ARRAY
        || reply->len == 0
        || reply->len % TENANT_RATE_REDIS_REPLY
        || reply->len > rr->nkeys * TENANT_RATE_REDIS_REPLY)
    {
        return NGX_ERROR;
    }

    groups = reply->len / TENANT_RATE_REDIS_REPLY;

    if (tenant_resp_integers(reply, v, reply->len) != 0) {
        return NGX_ERROR;
    }

    for (i = 0; i < groups; i++) {
        if (tenant_rate_redis_result(&v[i * TENANT_RATE_REDIS_REPLY],
                                     &answer[i])
            != 0)
        {
            return NGX_ERROR;
        }

        /* only the last key looked at may refuse, and one left out must
         * have been after a refusal */

        if ((i + 1 < groups && !answer[i].result.allowed)
            || (i + 1 == groups && groups < rr->nkeys
                && answer[i].result.allowed))
        {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < groups; i++) {
        *rr->result[i] = answer[i].result;

        if (answer[i].result.allowed) {
            continue;
        }

        ctx->rl_refused = 1;

        /* the tenant's was not looked at */

        if (rr->result[i] == &ctx->rl_by) {
            ctx->rl_set = 0;
        }

        /*
         * Held until it would pass, counted from when the command left
         * (before Redis ran the script: the hold never outlasts the
         * refusal).  No room in the zone: no hold, Redis is asked again.
         */

        op.answer = &answer[i];
        op.sent_us = rr->sent_us;
        op.rate = rr->rate[i];

        (void) ngx_tenant_cache_apply(tmcf->rl_zone, rr->key[i], rr->len[i],
                                      ngx_tenant_ratelimit_hold, &op,
                                      ngx_tenant_ratelimit_expire(tmcf,
                                                              rr->rate[i]));
    }

    return NGX_OK;
}


/* Under the zone's mutex. */

static ngx_int_t
ngx_tenant_ratelimit_hold(void *value, void *data)
{
    ngx_tenant_rl_hold_op_t  *op = data;

    ngx_tenant_rl_value_t  *v = value;

    tenant_rate_hold_set(&v->hold, op->answer, op->sent_us);
    v->hold_rate = *op->rate;

    return NGX_OK;
}


/*
 * No answer from Redis for this request: limited locally at limit /
 * instances (the limit the headers then show), or let through.  Logged
 * at most once per NGX_TENANT_RL_LOG_EVERY per worker, with how many
 * requests since; counted by reason in /metrics.
 */

static void
ngx_tenant_ratelimit_fallback(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx, u_char *key,
    size_t len, ngx_uint_t reason, tenant_resp_value_t *reply)
{
    size_t                    elen;
    ngx_uint_t                d;
    const u_char             *err;
    ngx_tenant_redis_conf_t  *rcf;

    static const char  *why[NGX_TENANT_REDIS_FB_REASONS] = {
        "no connection", "no answer in time", "a failure"
    };

    rcf = tmcf->redis;

    if (tmcf->metrics) {
        (void) ngx_atomic_fetch_add(&tmcf->metrics->redis.fallbacks[reason],
                                    1);
    }

    ngx_tenant_rl_fallbacks++;

    if (!ngx_tenant_rl_ever_logged
        || ngx_current_msec - ngx_tenant_rl_logged >= NGX_TENANT_RL_LOG_EVERY)
    {
        /* an error reply's text is Redis's, never a secret of ours */

        err = (const u_char *) "";
        elen = 0;

        if (reply && reply->type == TENANT_RESP_ERROR) {
            err = reply->data;
            elen = ngx_min(reply->len, 200);
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "tenant: redis: %s%s%*s, rate limits counted %s "
                      "(%ui requests in %M s)",
                      why[reason], elen ? ": " : "", elen, err,
                      rcf->fallback == NGX_TENANT_REDIS_FALLBACK_OPEN
                      ? "nowhere: fallback=open" : "locally",
                      ngx_tenant_rl_fallbacks,
                      ngx_tenant_rl_ever_logged
                      ? (ngx_current_msec - ngx_tenant_rl_logged) / 1000
                      : 0);

        ngx_tenant_rl_fallbacks = 0;
        ngx_tenant_rl_logged = ngx_current_msec;
        ngx_tenant_rl_ever_logged = 1;
    }

    if (rcf->fallback == NGX_TENANT_REDIS_FALLBACK_OPEN) {
        ctx->rl_set = 0;
        ctx->rl_by_set = 0;
        ctx->rl_refused = 0;
        ctx->rl_source = NGX_TENANT_RL_OPEN;
        return;
    }

    /* this instance's share, rounded up: never a limit of 0 */

    d = rcf->instances;

    if (d > 1) {
        if (ctx->rl_set) {
            ctx->rl_rate.limit = (ctx->rl_rate.limit + d - 1) / d;
            ctx->rl_rate.burst = (ctx->rl_rate.burst + d - 1) / d;
        }

        if (ctx->rl_by_set) {
            ctx->rl_by_rate.limit = (ctx->rl_by_rate.limit + d - 1) / d;
            ctx->rl_by_rate.burst = (ctx->rl_by_rate.burst + d - 1) / d;
        }
    }

    ngx_tenant_ratelimit_local(tmcf, ctx, key, len);
}


/*
 * The local limiter, in the zone shared by the workers.  The narrower
 * limit first: a request it refuses costs the tenant nothing.  One the
 * tenant's limit then refuses is given back to the narrower one: a
 * refusal by either costs the other nothing.  (Each key is checked and
 * advanced under the zone's mutex; meanwhile another request of the
 * narrower key may find the quota this one holds until it gives it back:
 * a refusal too many at worst, never an admission too many.)
 */

static void
ngx_tenant_ratelimit_local(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx, u_char *key, size_t len)
{
    ctx->rl_refused = 0;
    ctx->rl_source = NGX_TENANT_RL_LOCAL;

    if (ctx->rl_by_set) {
        ngx_tenant_ratelimit_key(tmcf, key, len, &ctx->rl_by_rate,
                                 &ctx->rl_by, 0);

        if (!ctx->rl_by.allowed) {
            /* the tenant's was not looked at */
            ctx->rl_set = 0;
            ctx->rl_refused = 1;
            return;
        }
    }

    if (!ctx->rl_set) {
        return;
    }

    ngx_tenant_ratelimit_key(tmcf, ctx->tenant.id, ctx->tenant.id_len,
                             &ctx->rl_rate, &ctx->rl, 0);

    if (ctx->rl.allowed) {
        return;
    }

    ctx->rl_refused = 1;

    if (ctx->rl_by_set) {
        ngx_tenant_ratelimit_key(tmcf, key, len, &ctx->rl_by_rate,
                                 &ctx->rl_by, 1);
    }
}


/* A request for the key, or with refund the one it admitted given back. */

static void
ngx_tenant_ratelimit_key(ngx_tenant_main_conf_t *tmcf, u_char *key,
    size_t len, tenant_rate_t *rate, tenant_rate_result_t *result,
    ngx_uint_t refund)
{
    ngx_tenant_rl_op_t  op;

    op.rate = rate;
    op.result = result;
    op.refund = refund;

    if (ngx_tenant_cache_apply(tmcf->rl_zone, key, len,
                               ngx_tenant_ratelimit_gcra, &op,
                               ngx_tenant_ratelimit_expire(tmcf, rate))
        != NGX_OK)
    {
        /* no room even after evictions (logged): do not refuse for it */
        result->allowed = 1;
        result->remaining = 0;
        result->reset_ms = 0;
    }
}


/*
 * A key idle until its whole burst is back is as good as new: let it go
 * then, not before (burst / limit windows; bounded by the parser: a day
 * times 10^8 fits 64 bits).  A hold never lasts longer than that either.
 */

static time_t
ngx_tenant_ratelimit_expire(ngx_tenant_main_conf_t *tmcf, tenant_rate_t *rate)
{
    uint64_t  bucket_ms;

    /* burst is never 0 (tenant_rate_parse() defaults it to the limit);
     * the test keeps a zero out of the division's numerator anyway */

    bucket_ms = rate->window_ms * (rate->burst ? rate->burst : rate->limit)
                / rate->limit;

    return ngx_tenant_cache_now(tmcf->rl_zone) + (time_t) (bucket_ms / 1000)
           + 2;
}


/* Under the zone's mutex. */

static ngx_int_t
ngx_tenant_ratelimit_gcra(void *value, void *data)
{
    ngx_tenant_rl_op_t  *op = data;

    int64_t                 now;
    ngx_tenant_rl_value_t  *v = value;

    now = tenant_rate_now();

    if (op->refund) {
        tenant_rate_refund(op->rate, &v->tat, now, op->result);

    } else {
        tenant_rate_check(op->rate, &v->tat, now, op->result);
    }

    return NGX_OK;
}


void
ngx_tenant_ratelimit_cancel(ngx_tenant_ctx_t *ctx)
{
    ngx_tenant_redis_cancel(ctx->rl_cmd);
    ctx->rl_cmd = NULL;
}


ngx_str_t *
ngx_tenant_ratelimit_source(ngx_tenant_ctx_t *ctx)
{
    static ngx_str_t  names[] = {
        ngx_null_string,
        ngx_string("local"),
        ngx_string("redis"),
        ngx_string("hold"),
        ngx_string("open")
    };

    return &names[ctx->rl_source];
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
