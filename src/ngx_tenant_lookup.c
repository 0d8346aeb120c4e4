/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Organization -> tenant: the row in the shared-memory cache, else one
 * query to PostgreSQL (public.tenants), whose answer fills the cache.  A
 * cached row past its TTL is served while one background query refreshes
 * it.  Lookups live in pools of their own: they outlive the requests
 * that started them, and their answers still go into the cache.  An
 * answer that was on its way when the organization changed (an
 * invalidation, ngx_tenant_cache.h) is not cached, and a request waiting
 * for it asks again.
 *
 * Allocation failures answer 500 and are not provoked by tests (class A
 * of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_md5.h>

#include <libpq-fe.h>
#include <openssl/sha.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"
#include "ngx_tenant_pg.h"
#include "ngx_tenant_metrics.h"


static const char  ngx_tenant_lookup_sql[] =
    "SELECT id::text, slug, schema_name, subscription_tier,"
    " subscription_status,"
    " coalesce(extract(epoch FROM trial_ends_at)::bigint, 0)::text,"
    " clerk_organization_id, coalesce(rate_limit_override, 0)::text"
    " FROM public.tenants WHERE clerk_organization_id = $1";


/*
 * A tenant lookup, in a pool of its own: it outlives the request that
 * started it (a background refresh; a request whose client went away),
 * and its answer still goes into the cache.
 */

typedef struct {
    ngx_str_node_t            sn;            /* in ngx_tenant_lookups */
    ngx_pool_t               *pool;
    ngx_tenant_main_conf_t   *tmcf;
    ngx_queue_t               waiters;       /* ngx_tenant_lookup_waiter_t */
    ngx_tenant_pg_req_t       query;
    ngx_uint_t                generation;    /* the cache's, when sent */
    unsigned                  refresh:1;
    unsigned                  superseded:1;  /* changed while in flight */
    unsigned                  again:1;       /* sent a second time */
    unsigned                  shared:1;      /* in ngx_tenant_lookups */
    unsigned                  answering:1;   /* waking its waiters */
    size_t                    org_id_len;
    u_char                    org_id[TENANT_ORG_ID_MAX + 1];
    size_t                    key_len;
    u_char                    key[NGX_TENANT_KEY_MAX];
} ngx_tenant_lookup_t;


typedef struct {
    time_t                    fetched;
    time_t                    now;
    time_t                    until;
} ngx_tenant_claim_t;


/* A request waiting for a lookup, in the request's pool. */

typedef struct {
    ngx_queue_t               queue;
    ngx_http_request_t       *request;
    ngx_tenant_lookup_t      *lookup;        /* NULL: answered */
} ngx_tenant_lookup_waiter_t;


static size_t ngx_tenant_lookup_key(u_char *org_id, size_t len,
    u_char *key);
static size_t ngx_tenant_lookup_schema(u_char *slug, size_t len,
    u_char *schema);
static ngx_int_t ngx_tenant_lookup_pack(ngx_tenant_record_t *rec,
    ngx_tenant_entry_t *e);
static void ngx_tenant_lookup_unpack(ngx_tenant_entry_t *e,
    ngx_tenant_record_t *rec, u_char *org_id, size_t len);
static ngx_int_t ngx_tenant_lookup_fresh(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_record_t *t);
static ngx_int_t ngx_tenant_lookup_query(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx);
static ngx_tenant_lookup_t *ngx_tenant_lookup_create(
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx);
static ngx_int_t ngx_tenant_lookup_send(ngx_tenant_lookup_t *lk);
static void ngx_tenant_lookup_done(ngx_tenant_pg_req_t *req,
    PGresult *res);
static ngx_tenant_db_result_e ngx_tenant_lookup_store(
    ngx_tenant_lookup_t *lk, PGresult *res, ngx_tenant_record_t *rec,
    ngx_log_t *log);
static void ngx_tenant_lookup_refresh(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx);
static void ngx_tenant_lookup_refresh_failed(ngx_tenant_lookup_t *lk);
static ngx_int_t ngx_tenant_lookup_refresh_claim(void *value, void *data);
static ngx_int_t ngx_tenant_lookup_record(PGresult *res,
    ngx_tenant_record_t *rec);
static void ngx_tenant_lookup_cleanup(void *data);
static void ngx_tenant_lookup_unshare(ngx_tenant_lookup_t *lk);


/*
 * The lookups of this worker that requests wait for, by organization:
 * a request whose organization is being looked up waits for that query
 * instead of sending one of its own (single flight).  Per worker: a
 * request of another worker has no way to be woken by this one's answer
 * but polling the zone on a timer, and a mark in the zone would need an
 * expiry for a worker that dies with its lookup out; N workers make at
 * most N queries for one organization (t/087: 160 for 150 organizations
 * with two workers).
 */

static ngx_rbtree_t       ngx_tenant_lookups;
static ngx_rbtree_node_t  ngx_tenant_lookups_sentinel;


/*
 * The request's tenant: NGX_OK with ctx->db_result (and ctx->tenant when
 * found) set; NGX_AGAIN while its lookup is in flight (the answer sets
 * ctx->state to NGX_TENANT_STATE_RESOLVED and runs the request again);
 * else an HTTP status.
 */

ngx_int_t
ngx_tenant_lookup(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx)
{
    size_t              key_len;
    u_char              key[NGX_TENANT_KEY_MAX];
    ngx_tenant_entry_t  e;

    key_len = ngx_tenant_lookup_key(ctx->org_id, ctx->org_id_len, key);

    if (ngx_tenant_cache_get(tmcf->tenant_cache, key, key_len, &e)
        == NGX_OK)
    {
        ngx_tenant_lookup_unpack(&e, &ctx->tenant, ctx->org_id,
                                 ctx->org_id_len);

        if (!ctx->tenant.found) {
            ctx->db_result = NGX_TENANT_DB_NOT_FOUND;
            return NGX_OK;
        }

        switch (ngx_tenant_lookup_fresh(tmcf, &ctx->tenant)) {

        case NGX_OK:
            ctx->db_result = NGX_TENANT_DB_FOUND;
            return NGX_OK;

        case NGX_AGAIN:

            /*
             * Past its TTL: served as it is while one background query
             * refreshes it, so a slow or stalled database slows no
             * request whose tenant is cached.  Within "stale" of its TTL
             * only.
             */

            ngx_tenant_lookup_refresh(r, tmcf, ctx);

            ctx->db_result = NGX_TENANT_DB_FOUND;
            return NGX_OK;

        default: /* NGX_DECLINED: past "stale" too */
            break;
        }
    }

    return ngx_tenant_lookup_query(r, tmcf, ctx);
}


/*
 * A cached row: NGX_OK (current), NGX_AGAIN (past its TTL, or to be
 * checked again: refreshed in the background) or NGX_DECLINED (past
 * "stale" too: looked up as if it were not cached).
 *
 * While the listener is up (ngx_tenant_listen.c), changes arrive pushed,
 * and rows live for listen_ttl.  Else for ttl from the last time they are
 * known to have been current: when they were fetched, or, for a row
 * fetched while the listener was up, when it stopped, at the latest
 * listen_ttl after the fetch.  A row cached while nobody listened is
 * marked to be checked again when the listener starts: a change made
 * while it reconnected is seen at the row's next use.
 */

static ngx_int_t
ngx_tenant_lookup_fresh(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_record_t *t)
{
    time_t                    now, seen, ttl, lost;
    ngx_tenant_metrics_sh_t  *sh;

    now = ngx_time();
    seen = t->fetched;
    ttl = tmcf->tenant_ttl;

    sh = tmcf->metrics;

    if (tmcf->listen_info && sh
        && tmcf->tenant_listen_ttl > tmcf->tenant_ttl)
    {

        if (sh->listener) {
            ttl = tmcf->tenant_listen_ttl;

        } else {
            ngx_memory_barrier();
            lost = (time_t) sh->listener_lost;

            if (lost > seen) {
                seen = ngx_min(lost, t->fetched + tmcf->tenant_listen_ttl);
            }
        }
    }

    if (t->recheck) {
        return NGX_AGAIN;
    }

    if (now < seen + ttl) {
        return NGX_OK;
    }

    if (now < seen + ttl + tmcf->tenant_stale) {
        return NGX_AGAIN;
    }

    return NGX_DECLINED;
}


/*
 * A cache miss.  A lookup of the organization already in flight in this
 * worker is joined, unless the zone saw an invalidation since it was sent
 * (its answer could be from before a change this request could know of):
 * then a query of its own, which later requests join instead.
 */

static ngx_int_t
ngx_tenant_lookup_query(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx)
{
    uint32_t                     hash;
    ngx_str_t                    key;
    ngx_str_node_t              *sn;
    ngx_http_cleanup_t          *cln;
    ngx_tenant_lookup_t         *lk;
    ngx_tenant_lookup_waiter_t  *w;

    if (ngx_tenant_lookups.root == NULL) {
        ngx_rbtree_init(&ngx_tenant_lookups, &ngx_tenant_lookups_sentinel,
                        ngx_str_rbtree_insert_value);
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    w = ngx_palloc(r->pool, sizeof(ngx_tenant_lookup_waiter_t));
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.data = ctx->org_id;
    key.len = ctx->org_id_len;
    hash = ngx_crc32_short(key.data, key.len);

    sn = ngx_str_rbtree_lookup(&ngx_tenant_lookups, &key, hash);
    lk = (ngx_tenant_lookup_t *) sn;

    if (lk
        && lk->generation
           != ngx_tenant_cache_generation(tmcf->tenant_cache))
    {
        ngx_tenant_lookup_unshare(lk);
        lk = NULL;
    }

    if (lk) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "tenant: waiting for the lookup of organization "
                       "\"%s\" in flight", ctx->org_id);

    } else {
        lk = ngx_tenant_lookup_create(tmcf, ctx);
        if (lk == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_tenant_lookup_send(lk) == NGX_DECLINED) {
            ngx_destroy_pool(lk->pool);

            /* the database failed moments ago: do not wait for it again */
            ctx->db_result = NGX_TENANT_DB_ERROR;

            return NGX_OK;
        }

        lk->sn.node.key = hash;
        lk->sn.str.data = lk->org_id;
        lk->sn.str.len = lk->org_id_len;
        ngx_rbtree_insert(&ngx_tenant_lookups, &lk->sn.node);
        lk->shared = 1;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "tenant: looking up organization \"%s\"",
                       ctx->org_id);
    }

    w->request = r;
    w->lookup = lk;
    ngx_queue_insert_tail(&lk->waiters, &w->queue);

    ctx->query = &lk->query;
    ctx->state = NGX_TENANT_STATE_WAIT_DB;

    cln->handler = ngx_tenant_lookup_cleanup;
    cln->data = w;

    /* a client that goes away ends the request meanwhile (499) */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/* Later requests of its organization no longer join the lookup. */

static void
ngx_tenant_lookup_unshare(ngx_tenant_lookup_t *lk)
{
    if (lk->shared) {
        ngx_rbtree_delete(&ngx_tenant_lookups, &lk->sn.node);
        lk->shared = 0;
    }
}


static ngx_tenant_lookup_t *
ngx_tenant_lookup_create(ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx)
{
    ngx_pool_t           *pool;
    ngx_tenant_lookup_t  *lk;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    lk = ngx_pcalloc(pool, sizeof(ngx_tenant_lookup_t));
    if (lk == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    lk->pool = pool;
    lk->tmcf = tmcf;
    ngx_queue_init(&lk->waiters);
    lk->org_id_len = ctx->org_id_len;
    ngx_memcpy(lk->org_id, ctx->org_id, ctx->org_id_len + 1);
    lk->key_len = ngx_tenant_lookup_key(lk->org_id, lk->org_id_len, lk->key);

    lk->query.handler = ngx_tenant_lookup_done;
    lk->query.data = lk;
    lk->query.sql = ngx_tenant_lookup_sql;
    lk->query.nparams = 1;
    lk->query.values[0] = (const char *) lk->org_id;
    lk->query.lengths[0] = (int) lk->org_id_len;
    lk->query.resend = 1;

    return lk;
}


/*
 * The cache's generation is read before the query leaves: an
 * invalidation of the organization after this point makes the answer
 * unfit for the cache (ngx_tenant_lookup_store).
 */

static ngx_int_t
ngx_tenant_lookup_send(ngx_tenant_lookup_t *lk)
{
    lk->generation = ngx_tenant_cache_generation(lk->tmcf->tenant_cache);
    lk->superseded = 0;

    return ngx_tenant_pg_query(lk->tmcf->pg, &lk->query);
}


/*
 * The answer of a lookup.  The requests waiting for it are resumed, each
 * with the same answer; when the organization changed while the answer
 * was on its way (an invalidation came after the query left), the lookup
 * asks once more instead of letting them act on what may be the old row,
 * and they act on the second answer (cached only if nothing changed
 * meanwhile again).  A lookup nobody waits for (a background refresh,
 * requests whose clients went away) only fills the cache.
 */

static void
ngx_tenant_lookup_done(ngx_tenant_pg_req_t *req, PGresult *res)
{
    ngx_log_t                   *log;
    ngx_queue_t                 *q;
    ngx_connection_t            *c;
    ngx_tenant_ctx_t            *ctx;
    ngx_http_request_t          *r;
    ngx_tenant_lookup_t         *lk;
    ngx_tenant_record_t          rec;
    ngx_tenant_db_result_e       rc;
    ngx_tenant_lookup_waiter_t  *w;

    lk = req->data;

    if (ngx_queue_empty(&lk->waiters)) {
        log = ngx_cycle->log;

    } else {
        w = ngx_queue_data(ngx_queue_head(&lk->waiters),
                           ngx_tenant_lookup_waiter_t, queue);
        log = w->request->connection->log;
    }

    rc = ngx_tenant_lookup_store(lk, res, &rec, log);

    if (ngx_queue_empty(&lk->waiters)) {
        ngx_tenant_lookup_unshare(lk);

        if (rc == NGX_TENANT_DB_ERROR && lk->refresh) {
            ngx_tenant_lookup_refresh_failed(lk);
            return;
        }

        ngx_destroy_pool(lk->pool);
        return;
    }

    if (lk->superseded && !lk->again) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "tenant: organization \"%s\" changed during its "
                       "lookup, looking it up again", lk->org_id);

        lk->again = 1;

        if (ngx_tenant_lookup_send(lk) == NGX_AGAIN) {
            return;
        }

        rc = NGX_TENANT_DB_ERROR;
    }

    /* requests that come from now on look the organization up afresh */

    ngx_tenant_lookup_unshare(lk);
    lk->answering = 1;

    while (!ngx_queue_empty(&lk->waiters)) {
        q = ngx_queue_head(&lk->waiters);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_tenant_lookup_waiter_t, queue);
        w->lookup = NULL;

        r = w->request;
        c = r->connection;

        ctx = ngx_http_get_module_ctx(r, ngx_tenant_module);

        ctx->query = NULL;
        ctx->state = NGX_TENANT_STATE_RESOLVED;
        ctx->db_result = rc;

        if (rc != NGX_TENANT_DB_ERROR) {
            ctx->tenant = rec;
        }

        ngx_http_set_log_request(c->log, r);

        r->read_event_handler = ngx_http_block_reading;
        r->write_event_handler(r);
        ngx_http_run_posted_requests(c);
    }

    ngx_destroy_pool(lk->pool);
}


/*
 * Caches what the lookup found (or that it found nothing), unless the
 * organization was invalidated after the query left: lk->superseded.
 */

static ngx_tenant_db_result_e
ngx_tenant_lookup_store(ngx_tenant_lookup_t *lk, PGresult *res,
    ngx_tenant_record_t *rec, ngx_log_t *log)
{
    u_char                  *msg, *p;
    time_t                   expire;
    ngx_tenant_entry_t       e;
    ngx_tenant_main_conf_t  *tmcf;
    ngx_tenant_db_result_e   rc;

    if (res == NULL) {
        return NGX_TENANT_DB_ERROR;
    }

    tmcf = lk->tmcf;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        msg = (u_char *) PQresultErrorMessage(res);
        for (p = msg; *p && *p != '\n'; p++) { /* void */ }

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tenant: tenant lookup failed: %*s",
                      (size_t) (p - msg), msg);
        return NGX_TENANT_DB_ERROR;
    }

    ngx_memzero(rec, sizeof(ngx_tenant_record_t));
    rec->fetched = ngx_time();

    if (PQntuples(res) == 0) {
        rc = NGX_TENANT_DB_NOT_FOUND;
        expire = rec->fetched + tmcf->tenant_negative_ttl;

    } else if (ngx_tenant_lookup_record(res, rec) == NGX_OK) {
        rc = NGX_TENANT_DB_FOUND;
        expire = rec->fetched + tmcf->tenant_listen_ttl
                 + tmcf->tenant_stale;

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tenant: the tenants row of organization \"%*s\" "
                      "has a value out of bounds", lk->org_id_len,
                      lk->org_id);
        return NGX_TENANT_DB_ERROR;
    }

    if (ngx_tenant_lookup_pack(rec, &e) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tenant: the tenants row of organization \"%*s\" "
                      "is too long to be cached (%d bytes of text, %d fit)",
                      lk->org_id_len, lk->org_id,
                      (int) (rec->id_len + rec->slug_len + rec->schema_len
                             + rec->tier_len + rec->status_len),
                      NGX_TENANT_PACKED_MAX);
        return rc;
    }

    if (ngx_tenant_cache_put_since(tmcf->tenant_cache, lk->key,
                                   lk->key_len, &e, expire,
                                   lk->generation)
        == NGX_DECLINED)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "tenant: organization \"%s\" changed since its "
                       "lookup was sent: answer not cached", lk->org_id);
        lk->superseded = 1;
    }

    return rc;
}


/*
 * A background lookup for a cached row past its TTL.  The row in the
 * zone is marked first, so that other requests (of any worker) do not
 * start another one while this one runs; the query lives in a pool of its
 * own, not in the request that started it.
 */

static void
ngx_tenant_lookup_refresh(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx)
{
    time_t                   now;
    size_t                   key_len;
    ngx_tenant_claim_t       claim;
    ngx_tenant_lookup_t     *lk;
    u_char                   key[NGX_TENANT_KEY_MAX];

    now = ngx_time();

    if (ctx->tenant.refresh_at > now) {
        return;
    }

    /*
     * Claim the refresh in the zone, so that it runs once for all.  It is
     * refused when another worker claimed it (or the row changed, went,
     * expired) between this request's read of the row and here: a race
     * between workers, not provoked by tests (t/145 checks the outcome:
     * one refresh query for a burst on two workers).
     */

    claim.fetched = ctx->tenant.fetched;
    claim.now = now;
    claim.until = now + (time_t) (tmcf->db_timeout / 1000) + 1;

    key_len = ngx_tenant_lookup_key(ctx->org_id, ctx->org_id_len, key);

    if (ngx_tenant_cache_update(tmcf->tenant_cache, key, key_len,
                                ngx_tenant_lookup_refresh_claim, &claim)
        != NGX_OK)
    {
        return;
    }

    lk = ngx_tenant_lookup_create(tmcf, ctx);
    if (lk == NULL) {
        return;
    }

    lk->refresh = 1;
    lk->query.cancelable = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tenant: refreshing organization \"%s\"", lk->org_id);

    if (ngx_tenant_lookup_send(lk) != NGX_AGAIN) {
        ngx_tenant_lookup_refresh_failed(lk);
    }
}


/* The stale row stays in use until it is refreshed or expires. */

static void
ngx_tenant_lookup_refresh_failed(ngx_tenant_lookup_t *lk)
{
    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "tenant: database unavailable, serving the cached tenant "
                  "of organization \"%s\" past its TTL", lk->org_id);

    ngx_destroy_pool(lk->pool);
}


/* Under the zone's mutex: the same row, and nobody refreshing it. */

static ngx_int_t
ngx_tenant_lookup_refresh_claim(void *value, void *data)
{
    ngx_tenant_entry_t  *rec = value;
    ngx_tenant_claim_t  *claim = data;

    if (!rec->found || rec->fetched != claim->fetched
        || rec->refresh_at > claim->now)
    {
        return NGX_DECLINED;
    }

    rec->refresh_at = claim->until;

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_lookup_record(PGresult *res, ngx_tenant_record_t *rec)
{
    int          i, len;
    char        *v;
    ngx_int_t    n;

    /* the query's columns but trial_ends_at (5) and the rate (7) */

    struct {
        int      column;
        u_char  *dst;
        u_char  *len;
        size_t   max;
    } f[] = {
        { 0, rec->id, &rec->id_len, sizeof(rec->id) },
        { 1, rec->slug, &rec->slug_len, sizeof(rec->slug) },
        { 2, rec->schema, &rec->schema_len, sizeof(rec->schema) },
        { 3, rec->tier, &rec->tier_len, sizeof(rec->tier) },
        { 4, rec->status, &rec->status_len, sizeof(rec->status) },
        { 6, rec->org_id, &rec->org_id_len, sizeof(rec->org_id) }
    };

    /* the SELECT list is fixed: defensive, against a query edited
     * without this function */

    if (PQnfields(res) != 8) {
        return NGX_ERROR;
    }

    for (i = 0; i < (int) (sizeof(f) / sizeof(f[0])); i++) {
        v = PQgetvalue(res, 0, f[i].column);
        len = PQgetlength(res, 0, f[i].column);

        /*
         * These values become request headers: visible ASCII only (a
         * tier "a b" is tested, t/020).  Empty or over the buffer cannot
         * happen with the schema's CHECKs and the org id already valid.
         */
        if (len <= 0 || (size_t) len > f[i].max
            || !tenant_org_id_valid((u_char *) v, len))
        {
            return NGX_ERROR;
        }

        ngx_memcpy(f[i].dst, v, len);
        *f[i].len = (u_char) len;
    }

    v = PQgetvalue(res, 0, 5);
    n = ngx_atotm((u_char *) v, PQgetlength(res, 0, 5));

    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    rec->trial_ends_at = (time_t) n;

    /* coalesce(rate_limit_override, 0) and its CHECK (> 0) give digits:
     * n == NGX_ERROR is defensive; n over the limit is tested (t/020) */

    v = PQgetvalue(res, 0, 7);
    n = ngx_atoi((u_char *) v, PQgetlength(res, 0, 7));

    if (n == NGX_ERROR || n > TENANT_RATE_MAX_LIMIT) {
        return NGX_ERROR;
    }

    rec->rate_limit = (uint32_t) n;
    rec->found = 1;

    return NGX_OK;
}


/*
 * A request goes away while it waits for a lookup (its client went away:
 * ngx_http_test_reading() while it waits; worker_shutdown_timeout): the
 * other requests waiting for it wait on.  When it was the last one, the
 * query runs on, detached, on its connection, which stays in the pool,
 * and its answer fills the cache (ngx_tenant_lookup_done); one still
 * waiting for a connection is dropped.
 */

static void
ngx_tenant_lookup_cleanup(void *data)
{
    ngx_tenant_lookup_waiter_t  *w = data;

    ngx_tenant_ctx_t     *ctx;
    ngx_tenant_lookup_t  *lk;

    lk = w->lookup;

    if (lk == NULL) {
        return;
    }

    w->lookup = NULL;
    ngx_queue_remove(&w->queue);

    ctx = ngx_http_get_module_ctx(w->request, ngx_tenant_module);
    if (ctx) {
        ctx->query = NULL;
    }

    /* the others wait on; the lookup waking them frees itself */

    if (lk->answering || !ngx_queue_empty(&lk->waiters)) {
        return;
    }

    if (ngx_tenant_pg_orphan(&lk->query) != NGX_AGAIN) {
        ngx_tenant_lookup_unshare(lk);
        ngx_destroy_pool(lk->pool);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "tenant: request gone, its lookup of organization "
                   "\"%s\" runs on", lk->org_id);
}


/* Drops the organization's row (a change), leaving a tombstone. */

void
ngx_tenant_lookup_invalidate(ngx_tenant_main_conf_t *tmcf, u_char *org_id,
    size_t len)
{
    size_t  key_len;
    u_char  key[NGX_TENANT_KEY_MAX];

    if (len == 0 || len > TENANT_ORG_ID_MAX) {
        return;
    }

    key_len = ngx_tenant_lookup_key(org_id, len, key);

    ngx_tenant_cache_invalidate(tmcf->tenant_cache, key, key_len);
}


/*
 * The cache's key of an organization: its id, up to NGX_TENANT_KEY_MAX - 1
 * bytes (Clerk's are 31); the SHA-256 of a longer one, of a length no id
 * has.  Keys of one size keep the zone's nodes of one slab size.
 */

static size_t
ngx_tenant_lookup_key(u_char *org_id, size_t len, u_char *key)
{
    if (len < NGX_TENANT_KEY_MAX) {
        ngx_memcpy(key, org_id, len);
        return len;
    }

    (void) SHA256(org_id, len, key);

    return SHA256_DIGEST_LENGTH;
}


static ngx_int_t
ngx_tenant_lookup_pack(ngx_tenant_record_t *rec, ngx_tenant_entry_t *e)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   derived;
    u_char       schema[NGX_TENANT_SCHEMA_MAX];

    ngx_memzero(e, sizeof(ngx_tenant_entry_t));

    e->fetched = rec->fetched;
    e->trial_ends_at = rec->trial_ends_at;
    e->refresh_at = rec->refresh_at;
    e->rate_limit = rec->rate_limit;
    e->found = rec->found;

    if (!rec->found) {
        return NGX_OK;
    }

    /* the schema public.create_tenant() gives the slug: not stored */

    len = ngx_tenant_lookup_schema(rec->slug, rec->slug_len, schema);

    derived = (len == rec->schema_len
               && ngx_memcmp(schema, rec->schema, len) == 0);

    len = rec->id_len + rec->slug_len + (derived ? 0 : rec->schema_len)
          + rec->tier_len + rec->status_len;

    if (len > NGX_TENANT_PACKED_MAX) {
        return NGX_DECLINED;
    }

    p = e->text;
    p = ngx_cpymem(p, rec->id, rec->id_len);
    p = ngx_cpymem(p, rec->slug, rec->slug_len);

    if (!derived) {
        p = ngx_cpymem(p, rec->schema, rec->schema_len);
        e->schema_len = rec->schema_len;
    }

    p = ngx_cpymem(p, rec->tier, rec->tier_len);
    (void) ngx_cpymem(p, rec->status, rec->status_len);

    e->id_len = rec->id_len;
    e->slug_len = rec->slug_len;
    e->tier_len = rec->tier_len;
    e->status_len = rec->status_len;

    return NGX_OK;
}


/* The entry's lengths were checked by ngx_tenant_lookup_pack(). */

static void
ngx_tenant_lookup_unpack(ngx_tenant_entry_t *e, ngx_tenant_record_t *rec,
    u_char *org_id, size_t len)
{
    u_char  *p;

    rec->fetched = e->fetched;
    rec->trial_ends_at = e->trial_ends_at;
    rec->refresh_at = e->refresh_at;
    rec->rate_limit = e->rate_limit;
    rec->found = e->found;
    rec->recheck = e->recheck;

    rec->id_len = e->id_len;
    rec->slug_len = e->slug_len;
    rec->tier_len = e->tier_len;
    rec->status_len = e->status_len;

    p = e->text;

    ngx_memcpy(rec->id, p, e->id_len);
    p += e->id_len;

    ngx_memcpy(rec->slug, p, e->slug_len);
    p += e->slug_len;

    if (e->schema_len) {
        ngx_memcpy(rec->schema, p, e->schema_len);
        rec->schema_len = e->schema_len;
        p += e->schema_len;

    } else if (e->found) {
        rec->schema_len = (u_char) ngx_tenant_lookup_schema(rec->slug,
                                                            rec->slug_len,
                                                            rec->schema);

    } else {
        rec->schema_len = 0;
    }

    ngx_memcpy(rec->tier, p, e->tier_len);
    p += e->tier_len;

    ngx_memcpy(rec->status, p, e->status_len);

    ngx_memcpy(rec->org_id, org_id, len);
    rec->org_id_len = (u_char) len;
}


/*
 * The schema of a slug, as public.tenant_schema_name() (migrations/002)
 * names it: tenant_<slug, - as _>, or, over 63 bytes, tenant_<the first
 * 47 of those>_<the first 8 hex digits of the MD5 of the slug>.  The
 * slug is at most 63 bytes (the schema's CHECK and this file's bounds).
 */

static size_t
ngx_tenant_lookup_schema(u_char *slug, size_t len, u_char *schema)
{
    u_char     *p;
    size_t      i, n;
    ngx_md5_t   md5;
    u_char      digest[16];

    p = ngx_cpymem(schema, "tenant_", sizeof("tenant_") - 1);

    n = (sizeof("tenant_") - 1 + len <= 63) ? len : 47;

    for (i = 0; i < n; i++) {
        *p++ = (slug[i] == '-') ? '_' : slug[i];
    }

    if (n < len) {
        ngx_md5_init(&md5);
        ngx_md5_update(&md5, slug, len);
        ngx_md5_final(digest, &md5);

        *p++ = '_';
        p = ngx_hex_dump(p, digest, 4);
    }

    return p - schema;
}
