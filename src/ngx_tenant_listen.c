/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Changes made elsewhere (psql, another gateway, the admin API of another
 * instance) reach this instance's tenant cache at once: one worker keeps
 * a connection that LISTENs on "tenant_changed" (migrations/004 notifies
 * it with the organization id on every change of public.tenants) and
 * drops the named rows from the shared cache, so every worker sees the
 * change.  The connection is asynchronous like the pool's, and comes back
 * by itself after a failure (1 s, doubling up to 30 s).  Notifications
 * sent while it was away are lost: each time it starts listening, every
 * cached row is marked to be checked again (served while a background
 * lookup refreshes it, and while the database is down) and every negative
 * entry dropped.  Both are invalidations (ngx_tenant_cache.h): a lookup
 * that was sent before one cannot put its answer in the cache after it.
 *
 * While it listens, every cached row is known to be current: the metrics
 * zone says so to all workers (listener: its pid), and rows live for
 * tenant_cache's listen_ttl instead of its ttl (ngx_tenant_lookup.c).
 * When it stops, the time is noted (listener_lost): a row cached before
 * was current until then, and lives for ttl from then on.
 *
 * Allocation failures at worker start fail that start, as nginx does for
 * its own modules; tests do not provoke them (class A of
 * docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"
#include "ngx_tenant_pg.h"
#include "ngx_tenant_metrics.h"


#define NGX_TENANT_LISTEN_CHANNEL   "tenant_changed"
#define NGX_TENANT_LISTEN_RETRY     1000
#define NGX_TENANT_LISTEN_RETRY_MAX 30000


typedef struct {
    ngx_tenant_main_conf_t   *tmcf;
    ngx_tenant_pg_pool_t     *pool;
    ngx_tenant_pg_req_t       req;
    ngx_event_t               retry;
    ngx_tenant_pg_stats_t     stats;         /* not the pool's metrics */
    ngx_msec_t                backoff;
    unsigned                  listening:1;
} ngx_tenant_listen_t;


static void ngx_tenant_listen_start(ngx_tenant_listen_t *ls);
static void ngx_tenant_listen_ready(ngx_tenant_pg_req_t *req, PGresult *res);
static ngx_int_t ngx_tenant_listen_stale(void *value, void *data);
static void ngx_tenant_listen_notify(void *data, const char *channel,
    const char *payload);
static void ngx_tenant_listen_lost(void *data);
static void ngx_tenant_listen_later(ngx_tenant_listen_t *ls);
static void ngx_tenant_listen_retry(ngx_event_t *ev);
static void ngx_tenant_listen_stopped(ngx_tenant_main_conf_t *tmcf,
    ngx_atomic_uint_t pid);


ngx_int_t
ngx_tenant_listen_init(ngx_cycle_t *cycle, ngx_tenant_main_conf_t *tmcf)
{
    ngx_tenant_listen_t  *ls;

    ls = ngx_pcalloc(cycle->pool, sizeof(ngx_tenant_listen_t));
    if (ls == NULL) {
        return NGX_ERROR;
    }

    ls->pool = ngx_tenant_pg_pool_create(cycle, tmcf->listen_info->keywords,
                                         tmcf->listen_info->values, 1,
                                         tmcf->db_timeout, &ls->stats,
                                         "ngx_tenant listener");
    if (ls->pool == NULL) {
        return NGX_ERROR;
    }

    ngx_tenant_pg_pool_watch(ls->pool, ngx_tenant_listen_notify,
                             ngx_tenant_listen_lost, ls);

    ls->tmcf = tmcf;
    ls->backoff = NGX_TENANT_LISTEN_RETRY;

    ls->retry.handler = ngx_tenant_listen_retry;
    ls->retry.data = ls;
    ls->retry.log = cycle->log;
    ls->retry.cancelable = 1;

    tmcf->listen_pool = ls->pool;

    /* a listener of a worker that died, or of the previous cycle's
     * workers, is not listening for this one */

    ngx_tenant_listen_stopped(tmcf, 0);

    ngx_tenant_listen_start(ls);

    return NGX_OK;
}


static void
ngx_tenant_listen_start(ngx_tenant_listen_t *ls)
{
    ngx_memzero(&ls->req, sizeof(ngx_tenant_pg_req_t));

    ls->req.handler = ngx_tenant_listen_ready;
    ls->req.data = ls;
    ls->req.sql = "LISTEN " NGX_TENANT_LISTEN_CHANNEL;
    ls->req.cancelable = 1;
    ls->req.resend = 1;

    if (ngx_tenant_pg_query(ls->pool, &ls->req) != NGX_AGAIN) {
        ngx_tenant_listen_later(ls);
    }
}


static void
ngx_tenant_listen_ready(ngx_tenant_pg_req_t *req, PGresult *res)
{
    ngx_tenant_listen_t  *ls = req->data;

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {

        /* no result: the pool logged why (tested, t/085); an answer:
         * say it here (only a server in recovery refuses LISTEN: tests
         * would need a standby, they have none) */

        if (res) {
            ngx_log_error(NGX_LOG_ERR, ls->retry.log, 0,
                          "tenant: LISTEN refused: %s",
                          ngx_tenant_pg_result_error(res));
        }

        ngx_tenant_listen_later(ls);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, ls->retry.log, 0,
                  "tenant: listening for tenant changes");

    /* what changed while nobody listened is not known: look again */

    ngx_tenant_cache_walk(ls->tmcf->tenant_cache, ngx_tenant_listen_stale,
                          NULL, 1);

    /* from now on, rows cached are current while it listens */

    ngx_memory_barrier();
    ls->tmcf->metrics->listener = (ngx_atomic_uint_t) ngx_pid;

    ls->listening = 1;
    ls->backoff = NGX_TENANT_LISTEN_RETRY;
}


/* Under the zone's mutex: rows to be checked, negative entries gone. */

static ngx_int_t
ngx_tenant_listen_stale(void *value, void *data)
{
    ngx_tenant_entry_t  *rec = value;

    if (!rec->found) {
        return NGX_DECLINED;
    }

    rec->recheck = 1;
    rec->refresh_at = 0;

    return NGX_OK;
}


static void
ngx_tenant_listen_notify(void *data, const char *channel,
    const char *payload)
{
    ngx_tenant_listen_t  *ls = data;

    size_t  len;

    /* defensive: this connection LISTENs on that one channel only */

    if (ngx_strcmp(channel, NGX_TENANT_LISTEN_CHANNEL) != 0) {
        return;
    }

    len = ngx_strlen(payload);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ls->retry.log, 0,
                   "tenant: organization \"%*s\" changed", len, payload);

    if (len && len <= TENANT_ORG_ID_MAX) {
        ngx_tenant_lookup_invalidate(ls->tmcf, (u_char *) payload, len);
    }
}


static void
ngx_tenant_listen_lost(void *data)
{
    ngx_tenant_listen_t  *ls = data;

    if (ls->listening) {
        ngx_log_error(NGX_LOG_WARN, ls->retry.log, 0,
                      "tenant: stopped listening for tenant changes, "
                      "cached rows live until their TTL meanwhile");
        ls->listening = 0;
    }

    ngx_tenant_listen_stopped(ls->tmcf, (ngx_atomic_uint_t) ngx_pid);

    ngx_tenant_listen_later(ls);
}


static void
ngx_tenant_listen_later(ngx_tenant_listen_t *ls)
{
    if (ls->retry.timer_set || ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_add_timer(&ls->retry, ls->backoff);

    ls->backoff = ngx_min(2 * ls->backoff, NGX_TENANT_LISTEN_RETRY_MAX);
}


static void
ngx_tenant_listen_retry(ngx_event_t *ev)
{
    ngx_tenant_listen_start(ev->data);
}


/* The worker exits: its listener stops (with its connection). */

void
ngx_tenant_listen_exit(ngx_tenant_main_conf_t *tmcf)
{
    ngx_tenant_listen_stopped(tmcf, (ngx_atomic_uint_t) ngx_pid);
}


/*
 * Nobody listens from now on (pid: only if this worker's listener was the
 * one; 0: whoever it was).  The time is noted first: a worker that reads
 * "no listener" reads the time of its end.
 */

static void
ngx_tenant_listen_stopped(ngx_tenant_main_conf_t *tmcf,
    ngx_atomic_uint_t pid)
{
    ngx_tenant_metrics_sh_t  *sh;

    sh = tmcf->metrics;

    if (sh->listener == 0 || (pid && sh->listener != pid)) {
        return;
    }

    sh->listener_lost = (ngx_atomic_uint_t) ngx_time();
    ngx_memory_barrier();

    (void) ngx_atomic_cmp_set(&sh->listener, pid ? pid : sh->listener, 0);
}
