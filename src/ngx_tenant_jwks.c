/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Keys from a JWKS URL: "tenant_jwks_request /uri" fetches the document
 * through an in-memory subrequest to an internal location that proxies
 * to the identity provider, so that DNS, TLS and timeouts are nginx's own
 * and no worker ever blocks.
 *
 * The raw document lives in a shared-memory zone ("tenant_jwks") with a
 * generation counter; parsed keys (EVP_PKEYs) cannot, so each worker
 * re-parses the document when the generation moves.  A fetch is claimed
 * in the zone: one at a time for the whole instance, at most one per
 * "interval", whatever asks for it (the TTL, a token with an unknown kid,
 * the very first request).  A failed fetch keeps the last good document.
 *
 * Requests that need the keys while a fetch is under way wait in their
 * worker's queue, with no timer of their own: the worker that fetches
 * wakes its queue when the fetch ends; every other worker looks at the
 * zone on one timer of its own (NGX_TENANT_JWKS_POLL) while its queue is
 * not empty, and wakes the queue when the claim they wait for is gone.
 *
 * Failures to allocate, to create the subrequest or to register events
 * keep the last good keys and are logged; tests do not provoke them
 * (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"


#define NGX_TENANT_JWKS_MAX        65536          /* document, bytes */
#define NGX_TENANT_JWKS_ZONE       (256 * 1024)
#define NGX_TENANT_JWKS_CLAIM      30000          /* ms: a fetch's bound */
#define NGX_TENANT_JWKS_POLL       20             /* ms, one per worker */


/*
 * Times: the wall clock (seconds) for what is reported, ngx_current_msec
 * (the monotonic clock, the same in every worker) for the TTL and the
 * interval, which whole seconds would round by up to a second.  0: never.
 */

typedef struct {
    ngx_atomic_t               generation;   /* moves with the document */
    uint32_t                   uri_crc;
    uint32_t                   crc;          /* of the document */
    time_t                     fetched;      /* last good fetch */
    ngx_msec_t                 fetched_ms;
    ngx_msec_t                 attempted_ms; /* last fetch started */
    ngx_uint_t                 fetching;     /* the claim's id, 0: none */
    ngx_msec_t                 fetching_until_ms;
    ngx_uint_t                 next_id;
    ngx_msec_t                 logged_ms;    /* last failure logged */
    ngx_atomic_t               fetches_ok;
    ngx_atomic_t               fetches_failed;
    ngx_uint_t                 nkeys;
    size_t                     len;          /* 0: no document yet */
    u_char                     data[NGX_TENANT_JWKS_MAX];
} ngx_tenant_jwks_sh_t;


struct ngx_tenant_jwks_s {
    ngx_str_t                  uri;
    uint32_t                   uri_crc;
    ngx_msec_t                 ttl;
    ngx_msec_t                 interval;
    ngx_tenant_main_conf_t    *tmcf;

    ngx_shm_zone_t            *shm_zone;
    ngx_slab_pool_t           *shpool;
    ngx_tenant_jwks_sh_t      *sh;

    /* the worker's: static keys plus the document's, parsed */
    ngx_atomic_uint_t          generation;
    tenant_keyset_t           *keys;         /* NULL: the static ones */
    uint32_t                   policy;
    u_char                    *buf;

    /* the worker's requests waiting for the fetch of claim wait_id */
    ngx_queue_t                waiters;
    ngx_uint_t                 wait_id;
    ngx_event_t                poll;
};


typedef struct {
    ngx_tenant_jwks_t         *jwks;
    ngx_uint_t                 id;           /* the claim */
    size_t                     size;         /* of the body so far */
    unsigned                   done:1;
    unsigned                   too_big:1;
} ngx_tenant_jwks_fetch_t;


typedef struct {
    ngx_queue_t                queue;
    ngx_http_request_t        *request;
    ngx_tenant_jwks_t         *jwks;
    ngx_uint_t                 id;           /* the claim waited for */
    unsigned                   queued:1;
} ngx_tenant_jwks_waiter_t;


static ngx_int_t ngx_tenant_jwks_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_tenant_jwks_claim(ngx_tenant_jwks_t *jwks,
    ngx_uint_t *id);
static void ngx_tenant_jwks_release(ngx_tenant_jwks_t *jwks, ngx_uint_t id);
static ngx_int_t ngx_tenant_jwks_fetch(ngx_http_request_t *r,
    ngx_tenant_jwks_t *jwks, ngx_uint_t id, ngx_uint_t background,
    ngx_tenant_jwks_fetch_t **fetch);
static ngx_int_t ngx_tenant_jwks_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc);
static void ngx_tenant_jwks_store(ngx_tenant_jwks_fetch_t *f, u_char *doc,
    size_t len, ngx_log_t *log);
static void ngx_tenant_jwks_failed(ngx_tenant_jwks_fetch_t *f,
    const char *why, ngx_log_t *log);
static void ngx_tenant_jwks_cleanup(void *data);
static void ngx_tenant_jwks_install(ngx_tenant_jwks_t *jwks,
    tenant_keyset_t *ks, uint32_t crc, ngx_uint_t gen);
static tenant_keyset_t *ngx_tenant_jwks_build(ngx_tenant_jwks_t *jwks,
    u_char *doc, size_t len, char *err, size_t errlen);
static ngx_int_t ngx_tenant_jwks_enqueue(ngx_http_request_t *r,
    ngx_tenant_jwks_t *jwks, ngx_uint_t id, ngx_tenant_ctx_t *ctx);
static ngx_uint_t ngx_tenant_jwks_busy(ngx_tenant_jwks_t *jwks,
    ngx_uint_t id);
static void ngx_tenant_jwks_sleep(ngx_tenant_jwks_waiter_t *w);
static void ngx_tenant_jwks_poll(ngx_event_t *ev);
static void ngx_tenant_jwks_wake(ngx_tenant_jwks_t *jwks);
static void ngx_tenant_jwks_resume(ngx_http_request_t *r);
static void ngx_tenant_jwks_waiter_cleanup(void *data);
static ngx_int_t ngx_tenant_jwks_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;


static ngx_uint_t  ngx_tenant_jwks_tag;


/*
 * Less than "span" ms since "since", by this worker's clock, which may be
 * a little behind the one that wrote "since": signed arithmetic.
 */

static ngx_inline ngx_uint_t
ngx_tenant_jwks_within(ngx_msec_t since, ngx_msec_t span)
{
    return (ngx_msec_int_t) (ngx_current_msec - since)
           < (ngx_msec_int_t) span;
}


/* tenant_jwks_request uri [ttl=time] [interval=time]; */

char *
ngx_tenant_jwks_request(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_msec_t          *t;
    ngx_str_t           *value, s;
    ngx_uint_t           i;
    ngx_shm_zone_t      *zone;
    ngx_tenant_jwks_t   *jwks;

    static ngx_str_t  name = ngx_string("tenant_jwks");

    if (tmcf->jwks) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_jwks_request\" needs the URI of a "
                           "location, \"%V\" does not start with \"/\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    jwks = ngx_pcalloc(cf->pool, sizeof(ngx_tenant_jwks_t));
    if (jwks == NULL) {
        return NGX_CONF_ERROR;
    }

    jwks->uri = value[1];
    jwks->ttl = 600000;
    jwks->interval = 30000;
    jwks->tmcf = tmcf;

    ngx_queue_init(&jwks->waiters);

    /* not cancelable: a graceful shutdown lets the waiters finish */
    jwks->poll.handler = ngx_tenant_jwks_poll;
    jwks->poll.data = jwks;
    jwks->poll.log = &cf->cycle->new_log;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;
            t = &jwks->ttl;

        } else if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
            t = &jwks->interval;

        } else {
            goto invalid;
        }

        *t = ngx_parse_time(&s, 0);
        if (*t == (ngx_msec_t) NGX_ERROR || *t < 1000) {
            goto invalid;
        }
    }

    zone = ngx_shared_memory_add(cf, &name, NGX_TENANT_JWKS_ZONE,
                                 &ngx_tenant_jwks_tag);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->init = ngx_tenant_jwks_init_zone;
    zone->data = jwks;

    jwks->shm_zone = zone;
    tmcf->jwks = jwks;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" (ttl= and interval= take "
                       "a time of at least 1s)", &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * The document outlives reloads while the URI stays: the new workers
 * start with the keys the old ones had, without a fetch.
 */

static ngx_int_t
ngx_tenant_jwks_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_tenant_jwks_t  *ojwks = data;

    uint32_t               crc;
    ngx_slab_pool_t       *shpool;
    ngx_tenant_jwks_t     *jwks;
    ngx_tenant_jwks_sh_t  *sh;

    jwks = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    crc = ngx_crc32_short(jwks->uri.data, jwks->uri.len);

    jwks->shpool = shpool;
    jwks->uri_crc = crc;

    if (ojwks) {
        sh = ojwks->sh;

    } else if (shm_zone->shm.exists) {  /* Windows only */
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_tenant_jwks_sh_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        shpool->data = sh;
        sh->uri_crc = crc;
    }

    jwks->sh = sh;

    if (sh->uri_crc != crc) {
        /*
         * Another endpoint: what the old one said does not count, nor
         * does a fetch from it still running in an old worker (its
         * claim is dropped, and its answer refused for its URI).
         */
        ngx_shmtx_lock(&shpool->mutex);

        sh->uri_crc = crc;
        sh->fetching = 0;
        sh->len = 0;
        sh->crc = 0;
        sh->nkeys = 0;
        sh->fetched = 0;
        sh->fetched_ms = 0;
        sh->attempted_ms = 0;
        sh->logged_ms = 0;
        sh->generation++;

        ngx_shmtx_unlock(&shpool->mutex);
    }

    return NGX_OK;
}


/*
 * The keys a token is verified with, and the token cache's policy that
 * goes with them: the configuration's keys, plus the fetched document's,
 * parsed in this worker when the document changed (the worker that
 * fetched it keeps the set it validated then).
 */

tenant_keyset_t *
ngx_tenant_jwks_keys(ngx_tenant_main_conf_t *tmcf, ngx_log_t *log,
    uint32_t *policy)
{
    size_t                 len;
    uint32_t               crc;
    ngx_uint_t             gen;
    tenant_keyset_t       *ks;
    ngx_tenant_jwks_t     *jwks;
    ngx_tenant_jwks_sh_t  *sh;
    char                   err[256];

    jwks = tmcf->jwks;

    if (jwks == NULL) {
        *policy = tmcf->policy;
        return tmcf->keys;
    }

    sh = jwks->sh;

    if (sh->generation != jwks->generation) {

        if (jwks->buf == NULL) {
            jwks->buf = ngx_alloc(NGX_TENANT_JWKS_MAX, log);
            if (jwks->buf == NULL) {
                goto done;
            }
        }

        ngx_shmtx_lock(&jwks->shpool->mutex);

        gen = sh->generation;
        len = sh->len;
        crc = sh->crc;
        ngx_memcpy(jwks->buf, sh->data, len);

        ngx_shmtx_unlock(&jwks->shpool->mutex);

        ks = NULL;
        err[0] = '\0';

        if (len) {
            ks = ngx_tenant_jwks_build(jwks, jwks->buf, len, err,
                                       sizeof(err));
            if (ks == NULL) {
                /* it parsed in the worker that fetched it */
                ngx_log_error(NGX_LOG_ALERT, log, 0,
                              "tenant: JWKS of generation %ui not usable: "
                              "%s", gen, err);
                jwks->generation = gen;
                goto done;
            }
        }

        ngx_tenant_jwks_install(jwks, ks, crc, gen);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "tenant: JWKS generation %ui, %uz keys", gen,
                       ks ? ks->nkeys : tmcf->keys->nkeys);
    }

done:

    if (jwks->keys == NULL) {
        *policy = tmcf->policy;
        return tmcf->keys;
    }

    *policy = jwks->policy;
    return jwks->keys;
}


/* Frees the worker's parsed keys (exit_process). */

void
ngx_tenant_jwks_exit(ngx_tenant_main_conf_t *tmcf)
{
    ngx_tenant_jwks_t  *jwks;

    jwks = tmcf->jwks;

    if (jwks == NULL) {
        return;
    }

    if (jwks->keys) {
        tenant_keyset_free(jwks->keys);
        ngx_free(jwks->keys);
        jwks->keys = NULL;
    }

    if (jwks->buf) {
        ngx_free(jwks->buf);
        jwks->buf = NULL;
    }
}


/*
 * A verified token's request: past the TTL, one fetch in the background
 * (the request goes on with the keys it has).
 */

void
ngx_tenant_jwks_refresh(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf)
{
    ngx_uint_t             id;
    ngx_tenant_jwks_t     *jwks;
    ngx_tenant_jwks_sh_t  *sh;

    jwks = tmcf->jwks;

    /* defensive: the caller tests tmcf->jwks, and nginx runs no access
     * phase in subrequests, so the gateway never sees one */

    if (jwks == NULL || r != r->main) {
        return;
    }

    sh = jwks->sh;

    /* unlocked reads: the claim decides */

    if (sh->len && ngx_tenant_jwks_within(sh->fetched_ms, jwks->ttl)) {
        return;
    }

    if (sh->fetching
        || (sh->attempted_ms
            && ngx_tenant_jwks_within(sh->attempted_ms, jwks->interval)))
    {
        return;
    }

    /* refused only if another worker claimed it since the unlocked look
     * above: a race of two workers, not provoked by tests */

    if (ngx_tenant_jwks_claim(jwks, &id) != NGX_OK) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tenant: JWKS refresh in the background");

    (void) ngx_tenant_jwks_fetch(r, jwks, id, 1, NULL);
}


/*
 * A token whose kid names no key (or no key at all): fetch and wait, or
 * wait for the fetch under way.  NGX_AGAIN: waiting (the phases run again
 * when it ends); NGX_DECLINED: no fetch now (one ran within the interval,
 * or this is a subrequest), the token is judged with the keys there are.
 *
 * background: the liveness check (tenant_health live) of a worker that
 * has no key.  Its fetch is a background subrequest and the request waits
 * for it in the worker's queue like a token waiting for another's fetch,
 * so that the check may answer before the fetch ends (its own timer,
 * ngx_tenant_jwks_stop_waiting()) while the fetch goes on.
 */

ngx_int_t
ngx_tenant_jwks_wait(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx, ngx_uint_t background)
{
    ngx_int_t                 rc;
    ngx_uint_t                id;
    ngx_tenant_jwks_t        *jwks;
    ngx_tenant_jwks_fetch_t  *f;

    jwks = tmcf->jwks;

    /* defensive: as in ngx_tenant_jwks_refresh() */

    if (jwks == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    rc = ngx_tenant_jwks_claim(jwks, &id);

    if (rc == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    if (rc == NGX_BUSY) {
        /* another request, maybe in another worker, is fetching (claim
         * id): wait in the worker's queue */
        return ngx_tenant_jwks_enqueue(r, jwks, id, ctx);
    }

    if (background) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "tenant: JWKS fetch %ui for the liveness check", id);

        if (ngx_tenant_jwks_fetch(r, jwks, id, 1, NULL) != NGX_OK) {
            return NGX_DECLINED;
        }

        return ngx_tenant_jwks_enqueue(r, jwks, id, ctx);
    }

    if (ngx_tenant_jwks_fetch(r, jwks, id, 0, &f) != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx->state = NGX_TENANT_STATE_WAIT_KEYS;
    ctx->jwks_fetch = f;

    return NGX_AGAIN;
}


/*
 * A request waiting in the queue (ngx_tenant_jwks_wait, background) stops: it is
 * taken out and its phases run again, as if the fetch had ended.  One
 * already woken (its phases are posted) is left alone.
 */

void
ngx_tenant_jwks_stop_waiting(ngx_tenant_ctx_t *ctx)
{
    ngx_http_request_t        *r;
    ngx_tenant_jwks_waiter_t  *w;

    w = ctx->jwks_waiter;

    if (w == NULL || !w->queued) {
        return;
    }

    ngx_tenant_jwks_waiter_cleanup(w);

    r = w->request;
    r->write_event_handler = ngx_tenant_jwks_resume;

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * Into the worker's queue for the fetch of claim id, detached by the
 * cleanup when the client goes away.  NGX_AGAIN, or NGX_DECLINED when
 * out of memory.
 */

static ngx_int_t
ngx_tenant_jwks_enqueue(ngx_http_request_t *r, ngx_tenant_jwks_t *jwks,
    ngx_uint_t id, ngx_tenant_ctx_t *ctx)
{
    ngx_pool_cleanup_t        *cln;
    ngx_tenant_jwks_waiter_t  *w;

    w = ngx_pcalloc(r->pool, sizeof(ngx_tenant_jwks_waiter_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (w == NULL || cln == NULL) {
        return NGX_DECLINED;
    }

    w->request = r;
    w->jwks = jwks;
    w->id = id;

    cln->handler = ngx_tenant_jwks_waiter_cleanup;
    cln->data = w;

    ctx->state = NGX_TENANT_STATE_WAIT_KEYS;
    ctx->jwks_waiter = w;

    ngx_tenant_jwks_sleep(w);
    return NGX_AGAIN;
}


/*
 * Called when the phases run again for a waiting request: NGX_AGAIN while
 * the fetch goes on, NGX_OK when it ended (well or not).
 */

ngx_int_t
ngx_tenant_jwks_waiting(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_ctx_t *ctx)
{
    ngx_tenant_jwks_fetch_t   *f;
    ngx_tenant_jwks_waiter_t  *w;

    f = ctx->jwks_fetch;

    if (f) {
        /* our own subrequest: it posts this request when it ends; AGAIN
         * is defensive, should anything else run the phases before */
        return f->done ? NGX_OK : NGX_AGAIN;
    }

    w = ctx->jwks_waiter;

    /* defensive: only ngx_tenant_jwks_resume() runs the phases of a
     * waiting request, after taking it out of the queue */

    if (w->queued) {
        return NGX_AGAIN;
    }

    /*
     * Woken: the claim it waited for is gone (the fetch ended, well or
     * not, or took over 30 s, NGX_TENANT_JWKS_CLAIM).  Woken with the
     * claim still there (the queue is woken whole when one of another
     * claim joins it): back to the queue.
     */

    if (ngx_tenant_jwks_busy(tmcf->jwks, w->id)) {
        ngx_tenant_jwks_sleep(w);
        return NGX_AGAIN;
    }

    return NGX_OK;
}


/* The fetch of claim id is under way (and not over 30 s old). */

static ngx_uint_t
ngx_tenant_jwks_busy(ngx_tenant_jwks_t *jwks, ngx_uint_t id)
{
    ngx_uint_t             busy;
    ngx_tenant_jwks_sh_t  *sh;

    sh = jwks->sh;

    ngx_shmtx_lock(&jwks->shpool->mutex);

    busy = (sh->fetching == id
            && (ngx_msec_int_t) (sh->fetching_until_ms - ngx_current_msec)
               > 0);

    ngx_shmtx_unlock(&jwks->shpool->mutex);

    return busy;
}


/*
 * Into the worker's queue, without a timer of its own; the client's
 * socket is watched for a close (ngx_http_test_reading finalizes the
 * request, and the pool cleanup takes it out of the queue).
 */

static void
ngx_tenant_jwks_sleep(ngx_tenant_jwks_waiter_t *w)
{
    ngx_http_request_t  *r;
    ngx_tenant_jwks_t   *jwks;

    jwks = w->jwks;
    r = w->request;

    /* the queue waits for one claim: one of another joins it only once
     * the first is gone, so the queue is woken (they find out) */

    if (!ngx_queue_empty(&jwks->waiters) && jwks->wait_id != w->id) {
        ngx_tenant_jwks_wake(jwks);
    }

    jwks->wait_id = w->id;

    ngx_queue_insert_tail(&jwks->waiters, &w->queue);
    w->queued = 1;

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (!jwks->poll.timer_set) {
        ngx_add_timer(&jwks->poll, NGX_TENANT_JWKS_POLL);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tenant: JWKS wait for fetch %ui", w->id);
}


/* The worker's timer: is the fetch its queue waits for over? */

static void
ngx_tenant_jwks_poll(ngx_event_t *ev)
{
    ngx_tenant_jwks_t  *jwks = ev->data;

    if (ngx_queue_empty(&jwks->waiters)) {
        return;
    }

    if (ngx_tenant_jwks_busy(jwks, jwks->wait_id)) {
        ngx_add_timer(ev, NGX_TENANT_JWKS_POLL);
        return;
    }

    ngx_tenant_jwks_wake(jwks);
}


/* Every request of the worker's queue runs its phases again. */

static void
ngx_tenant_jwks_wake(ngx_tenant_jwks_t *jwks)
{
    ngx_queue_t               *q;
    ngx_http_request_t        *r;
    ngx_tenant_jwks_waiter_t  *w;

    while (!ngx_queue_empty(&jwks->waiters)) {
        q = ngx_queue_head(&jwks->waiters);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_tenant_jwks_waiter_t, queue);
        w->queued = 0;

        r = w->request;
        r->write_event_handler = ngx_tenant_jwks_resume;

        ngx_post_event(r->connection->write, &ngx_posted_events);
    }

    if (jwks->poll.timer_set) {
        ngx_del_timer(&jwks->poll);
    }
}


static void
ngx_tenant_jwks_waiter_cleanup(void *data)
{
    ngx_tenant_jwks_waiter_t *w = data;

    ngx_tenant_jwks_t  *jwks;

    if (!w->queued) {
        return;
    }

    jwks = w->jwks;

    ngx_queue_remove(&w->queue);
    w->queued = 0;

    if (ngx_queue_empty(&jwks->waiters) && jwks->poll.timer_set) {
        ngx_del_timer(&jwks->poll);
    }
}


static void
ngx_tenant_jwks_resume(ngx_http_request_t *r)
{
    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


/*
 * NGX_OK: this worker fetches now (*id is the claim); NGX_BUSY: a fetch
 * is under way (*id is its claim); NGX_DECLINED: one started less than
 * "interval" ago.
 */

static ngx_int_t
ngx_tenant_jwks_claim(ngx_tenant_jwks_t *jwks, ngx_uint_t *id)
{
    ngx_int_t              rc;
    ngx_msec_t             now;
    ngx_tenant_jwks_sh_t  *sh;

    sh = jwks->sh;
    now = ngx_current_msec;

    ngx_shmtx_lock(&jwks->shpool->mutex);

    /*
     * A claim outlives NGX_TENANT_JWKS_CLAIM (30 s) only if its fetch
     * takes longer than that, or its worker died mid-fetch: then it is
     * taken over, and the slow fetch, when it ends, finds itself
     * superseded (store/failed leave "fetching" alone).  No test waits
     * 30 s for it.
     */

    if (sh->fetching
        && (ngx_msec_int_t) (sh->fetching_until_ms - now) > 0)
    {
        *id = sh->fetching;
        rc = NGX_BUSY;

    } else if (sh->attempted_ms
               && ngx_tenant_jwks_within(sh->attempted_ms, jwks->interval))
    {
        rc = NGX_DECLINED;

    } else {
        /* 0 means "nobody": skipped, after 2^64 fetches */
        *id = ++sh->next_id ? sh->next_id : ++sh->next_id;
        sh->fetching = *id;
        sh->fetching_until_ms = now + NGX_TENANT_JWKS_CLAIM;
        sh->attempted_ms = now;
        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&jwks->shpool->mutex);

    return rc;
}


static void
ngx_tenant_jwks_release(ngx_tenant_jwks_t *jwks, ngx_uint_t id)
{
    ngx_shmtx_lock(&jwks->shpool->mutex);

    /* not ours any more: superseded after 30 s, or reset by a reload to
     * another URI */

    if (jwks->sh->fetching == id) {
        jwks->sh->fetching = 0;
    }

    ngx_shmtx_unlock(&jwks->shpool->mutex);
}


static ngx_int_t
ngx_tenant_jwks_fetch(ngx_http_request_t *r, ngx_tenant_jwks_t *jwks,
    ngx_uint_t id, ngx_uint_t background, ngx_tenant_jwks_fetch_t **fetch)
{
    ngx_uint_t                   flags;
    ngx_pool_cleanup_t          *cln;
    ngx_http_request_t          *sr;
    ngx_tenant_jwks_fetch_t     *f;
    ngx_http_post_subrequest_t  *ps;

    f = ngx_pcalloc(r->pool, sizeof(ngx_tenant_jwks_fetch_t));
    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (f == NULL || ps == NULL || cln == NULL) {
        ngx_tenant_jwks_release(jwks, id);
        return NGX_ERROR;
    }

    f->jwks = jwks;
    f->id = id;

    /* a request that ends before its subrequest gives the claim back */
    cln->handler = ngx_tenant_jwks_cleanup;
    cln->data = f;

    ps->handler = ngx_tenant_jwks_done;
    ps->data = f;

    flags = NGX_HTTP_SUBREQUEST_IN_MEMORY
            | (background ? NGX_HTTP_SUBREQUEST_BACKGROUND
                          : NGX_HTTP_SUBREQUEST_WAITED);

    if (ngx_http_subrequest(r, &jwks->uri, NULL, &sr, ps, flags) != NGX_OK) {
        f->done = 1;
        ngx_tenant_jwks_failed(f, "the subrequest could not be made",
                               r->connection->log);
        return NGX_ERROR;
    }

    /*
     * None of the client's headers or body go to the identity provider:
     * the location sets what it needs (proxy_set_header Authorization).
     */

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_array_init(&sr->headers_in.cookies, r->pool, 1,
                          sizeof(ngx_table_elt_t *))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->headers_in.content_length_n = -1;
    sr->headers_in.keep_alive_n = -1;
    sr->request_body = NULL;

    if (fetch) {
        *fetch = f;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_jwks_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_tenant_jwks_fetch_t *f = data;

    u_char      *doc;
    size_t       len;
    ngx_buf_t   *b;
    u_char       why[64];

    if (f->done) {
        return rc;
    }

    f->done = 1;

    if (f->too_big) {
        ngx_tenant_jwks_failed(f, "larger than "
                               "subrequest_output_buffer_size",
                               r->connection->log);
        return rc;
    }

    /* every endpoint failure tested (500, refused, timeout, truncated)
     * arrives as a status; NGX_ERROR only from an internal nginx failure */

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE
        || r->headers_out.status != NGX_HTTP_OK)
    {
        ngx_snprintf(why, sizeof(why), "status %ui%Z",
                     r->headers_out.status ? r->headers_out.status
                     : (rc > 0 ? (ngx_uint_t) rc : 0));
        ngx_tenant_jwks_failed(f, (char *) why, r->connection->log);
        return rc;
    }

    /* the body, as the postpone filter keeps an in-memory subrequest's
     * (a 200 without a body gets an empty buffer: r->out NULL is
     * defensive) */

    b = r->out ? r->out->buf : NULL;

    if (b == NULL || b->last == b->pos) {
        ngx_tenant_jwks_failed(f, "empty response", r->connection->log);
        return rc;
    }

    doc = b->pos;
    len = b->last - b->pos;

    if (len > NGX_TENANT_JWKS_MAX) {
        ngx_tenant_jwks_failed(f, "larger than 64k", r->connection->log);
        return rc;
    }

    ngx_tenant_jwks_store(f, doc, len, r->connection->log);

    return rc;
}


static void
ngx_tenant_jwks_store(ngx_tenant_jwks_fetch_t *f, u_char *doc, size_t len,
    ngx_log_t *log)
{
    size_t                 nkeys;
    uint32_t               crc;
    ngx_uint_t             changed, gen;
    tenant_keyset_t       *ks;
    ngx_tenant_jwks_t     *jwks;
    ngx_tenant_jwks_sh_t  *sh;
    char                   err[256];

    jwks = f->jwks;
    sh = jwks->sh;

    err[0] = '\0';

    ks = ngx_tenant_jwks_build(jwks, doc, len, err, sizeof(err));
    if (ks == NULL) {
        ngx_tenant_jwks_failed(f, err, log);
        return;
    }

    nkeys = ks->nkeys - jwks->tmcf->keys->nkeys;
    crc = ngx_crc32_long(doc, len);

    ngx_shmtx_lock(&jwks->shpool->mutex);

    if (sh->uri_crc != jwks->uri_crc) {
        /* fetched for the configuration before a reload to another URI */
        ngx_shmtx_unlock(&jwks->shpool->mutex);

        tenant_keyset_free(ks);
        ngx_free(ks);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tenant: JWKS from \"%V\" not used: the "
                      "configuration now fetches another URI", &jwks->uri);
        return;
    }

    changed = (sh->len != len || sh->crc != crc
               || ngx_memcmp(sh->data, doc, len) != 0);

    if (changed) {
        ngx_memcpy(sh->data, doc, len);
        sh->len = len;
        sh->crc = crc;
        sh->nkeys = nkeys;
        sh->generation++;
    }

    gen = sh->generation;
    sh->fetched = ngx_time();
    sh->fetched_ms = ngx_current_msec;
    sh->logged_ms = 0;

    /* not ours any more: a fetch over 30 s, superseded (see claim) */

    if (sh->fetching == f->id) {
        sh->fetching = 0;
    }

    ngx_shmtx_unlock(&jwks->shpool->mutex);

    /* the worker's waiters need not wait for its timer */
    ngx_tenant_jwks_wake(jwks);

    /* this worker keeps the set it validated: no second parse */

    if (jwks->generation != gen) {
        ngx_tenant_jwks_install(jwks, ks, crc, gen);

    } else {
        tenant_keyset_free(ks);
        ngx_free(ks);
    }

    (void) ngx_atomic_fetch_add(&sh->fetches_ok, 1);

    if (changed) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tenant: JWKS from \"%V\": %uz keys (generation %ui)",
                      &jwks->uri, nkeys, gen);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "tenant: JWKS from \"%V\" unchanged", &jwks->uri);
    }
}


/* The last good document stays; said once per interval. */

static void
ngx_tenant_jwks_failed(ngx_tenant_jwks_fetch_t *f, const char *why,
    ngx_log_t *log)
{
    time_t                 now, fetched;
    ngx_uint_t             say, nkeys;
    ngx_tenant_jwks_t     *jwks;
    ngx_tenant_jwks_sh_t  *sh;

    jwks = f->jwks;
    sh = jwks->sh;
    now = ngx_time();

    ngx_shmtx_lock(&jwks->shpool->mutex);

    if (sh->uri_crc != jwks->uri_crc) {
        /* for the configuration before a reload to another URI */
        ngx_shmtx_unlock(&jwks->shpool->mutex);
        return;
    }

    say = (sh->logged_ms == 0
           || !ngx_tenant_jwks_within(sh->logged_ms, jwks->interval));

    if (say) {
        sh->logged_ms = ngx_current_msec;
    }

    fetched = sh->fetched;
    nkeys = sh->len ? sh->nkeys : 0;

    /* not ours any more: a fetch over 30 s, superseded (see claim) */

    if (sh->fetching == f->id) {
        sh->fetching = 0;
    }

    ngx_shmtx_unlock(&jwks->shpool->mutex);

    ngx_tenant_jwks_wake(jwks);

    (void) ngx_atomic_fetch_add(&sh->fetches_failed, 1);

    if (!say) {
        return;
    }

    if (fetched) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tenant: JWKS from \"%V\" not used: %s; the %ui keys "
                      "fetched %T s ago stay in use",
                      &jwks->uri, why, nkeys, now - fetched);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tenant: JWKS from \"%V\" not used: %s; no key "
                      "fetched yet, next attempt in %M ms at the earliest",
                      &jwks->uri, why, jwks->interval);
    }
}


/*
 * The postpone filter collects a fetch's body in one buffer of
 * subrequest_output_buffer_size and, should the body outgrow it, fails
 * the connection the subrequest shares with the client: a refresh would
 * take a client's request down with it.  Ahead of it, this filter lets a
 * fetch's body through only while it fits, and swallows it otherwise;
 * the fetch then fails on its own.
 */

ngx_int_t
ngx_tenant_jwks_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_tenant_jwks_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_jwks_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                      len;
    ngx_chain_t               *cl;
    ngx_tenant_jwks_fetch_t   *f;
    ngx_http_core_loc_conf_t  *clcf;

    if (r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_tenant_jwks_done)
    {
        return ngx_http_next_body_filter(r, in);
    }

    f = r->post_subrequest->data;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!f->too_big) {
        len = 0;

        for (cl = in; cl; cl = cl->next) {
            len += ngx_buf_size(cl->buf);
        }

        /*
         * The postpone filter refuses a declared length over its buffer
         * at its first call, hence the first test; with proxy_pass the
         * tests never see one set here (t/135 sends Content-Length):
         * the second, on the body, is what catches them.
         */

        if (r->headers_out.content_length_n
            > (off_t) clcf->subrequest_output_buffer_size
            || f->size + len > clcf->subrequest_output_buffer_size)
        {
            f->too_big = 1;

        } else {
            f->size += len;
            return ngx_http_next_body_filter(r, in);
        }
    }

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    return NGX_OK;
}


static void
ngx_tenant_jwks_cleanup(void *data)
{
    ngx_tenant_jwks_fetch_t *f = data;

    if (!f->done) {
        f->done = 1;
        ngx_tenant_jwks_release(f->jwks, f->id);
        ngx_tenant_jwks_wake(f->jwks);
    }
}


/* The worker's keys become ks (NULL: the configuration's only). */

static void
ngx_tenant_jwks_install(ngx_tenant_jwks_t *jwks, tenant_keyset_t *ks,
    uint32_t crc, ngx_uint_t gen)
{
    if (jwks->keys) {
        tenant_keyset_free(jwks->keys);
        ngx_free(jwks->keys);
    }

    jwks->keys = ks;
    jwks->policy = jwks->tmcf->policy ^ (crc * 13 + 7);
    jwks->generation = gen;
}


/* The configuration's keys and the document's, in a set of its own. */

static tenant_keyset_t *
ngx_tenant_jwks_build(ngx_tenant_jwks_t *jwks, u_char *doc, size_t len,
    char *err, size_t errlen)
{
    tenant_keyset_t  *ks;

    ks = ngx_calloc(sizeof(tenant_keyset_t), ngx_cycle->log);
    if (ks == NULL) {
        ngx_cpystrn((u_char *) err, (u_char *) "out of memory", errlen);
        return NULL;
    }

    /* into an empty set, of at most TENANT_JWKS_MAX_KEYS keys: fails only
     * to allocate */

    if (tenant_keyset_copy(ks, jwks->tmcf->keys) != 0) {
        ngx_cpystrn((u_char *) err, (u_char *) "cannot copy the keys",
                    errlen);
        ngx_free(ks);
        return NULL;
    }

    if (tenant_keyset_add_jwks(ks, doc, len, err, errlen) != 0) {
        tenant_keyset_free(ks);
        ngx_free(ks);
        return NULL;
    }

    return ks;
}


/* For tenant_metrics. */

void
ngx_tenant_jwks_stats(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_jwks_stats_t *st)
{
    ngx_tenant_jwks_sh_t  *sh;

    ngx_memzero(st, sizeof(ngx_tenant_jwks_stats_t));

    if (tmcf->jwks == NULL) {
        return;
    }

    sh = tmcf->jwks->sh;

    ngx_shmtx_lock(&tmcf->jwks->shpool->mutex);

    st->configured = 1;
    st->keys = sh->len ? sh->nkeys : 0;
    st->age = sh->fetched ? ngx_time() - sh->fetched : -1;
    st->ok = sh->fetches_ok;
    st->failed = sh->fetches_failed;

    ngx_shmtx_unlock(&tmcf->jwks->shpool->mutex);
}
