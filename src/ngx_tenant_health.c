/*
 * Copyright (C) ngx_tenant_module authors
 *
 * tenant_health: GET /api/health answers whether PostgreSQL answers a
 * ping through the worker's pool, as the deployment guide expects:
 *   200 {"status":"healthy","uptime":N,"database":"connected"}
 *   503 {"status":"unhealthy","uptime":N,"database":"disconnected"}
 *
 * The endpoint needs no token, so a flood of it must not take the pool
 * from tenant lookups: a worker runs at most one ping at a time, requests
 * that arrive meanwhile wait for its answer, and an answer is reused for
 * NGX_TENANT_HEALTH_REUSE milliseconds.
 *
 * Allocation failures answer 500; tests do not provoke them (class A of
 * docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_pg.h"


#define NGX_TENANT_HEALTH_REUSE   1000


typedef struct {
    ngx_tenant_pg_req_t    query;          /* static: outlives requests */
    ngx_queue_t            waiting;        /* of ngx_tenant_health_ctx_t */
    ngx_msec_t             answered_at;
    unsigned               running:1;
    unsigned               answered:1;
    unsigned               ok:1;
} ngx_tenant_health_ping_t;


typedef struct {
    ngx_http_request_t    *request;
    ngx_queue_t            queue;
    unsigned               waiting:1;
} ngx_tenant_health_ctx_t;


static ngx_int_t ngx_tenant_health_handler(ngx_http_request_t *r);
static void ngx_tenant_health_done(ngx_tenant_pg_req_t *req, PGresult *res);
static void ngx_tenant_health_answer(ngx_uint_t ok);
static ngx_int_t ngx_tenant_health_send(ngx_http_request_t *r,
    ngx_uint_t ok);
static void ngx_tenant_health_cleanup(void *data);


static ngx_tenant_health_ping_t  ngx_tenant_health_ping;


char *
ngx_tenant_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_tenant_health_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_tenant_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_cleanup_t        *cln;
    ngx_tenant_health_ctx_t   *ctx;
    ngx_tenant_main_conf_t    *tmcf;
    ngx_tenant_health_ping_t  *ping;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    ping = &ngx_tenant_health_ping;

    if (tmcf->pg == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: tenant_health without tenant_database");
        return ngx_tenant_health_send(r, 0);
    }

    if (ping->answered
        && ngx_current_msec - ping->answered_at < NGX_TENANT_HEALTH_REUSE)
    {
        return ngx_tenant_health_send(r, ping->ok);
    }

    if (!ping->running) {
        if (ping->waiting.next == NULL) {
            ngx_queue_init(&ping->waiting);
        }

        ngx_memzero(&ping->query, sizeof(ngx_tenant_pg_req_t));
        ping->query.handler = ngx_tenant_health_done;
        ping->query.sql = "SELECT 1";
        ping->query.resend = 1;

        rc = ngx_tenant_pg_query(tmcf->pg, &ping->query);

        if (rc == NGX_DECLINED) {
            /* the database failed moments ago */
            return ngx_tenant_health_send(r, 0);
        }

        ping->running = 1;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_tenant_health_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->waiting = 1;
    ngx_queue_insert_tail(&ping->waiting, &ctx->queue);

    cln->handler = ngx_tenant_health_cleanup;
    cln->data = ctx;

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_tenant_health_done(ngx_tenant_pg_req_t *req, PGresult *res)
{
    /* no result: the pool logged why */

    if (res && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "tenant: health ping failed: %s",
                      ngx_tenant_pg_result_error(res));
    }

    ngx_tenant_health_answer(res != NULL
                             && PQresultStatus(res) == PGRES_TUPLES_OK);
}


static void
ngx_tenant_health_answer(ngx_uint_t ok)
{
    ngx_int_t                  rc;
    ngx_queue_t               *q;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_tenant_health_ctx_t   *ctx;
    ngx_tenant_health_ping_t  *ping;

    ping = &ngx_tenant_health_ping;

    ping->running = 0;
    ping->answered = 1;
    ping->answered_at = ngx_current_msec;
    ping->ok = ok;

    while (!ngx_queue_empty(&ping->waiting)) {
        q = ngx_queue_head(&ping->waiting);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_tenant_health_ctx_t, queue);
        ctx->waiting = 0;

        r = ctx->request;
        c = r->connection;

        ngx_http_set_log_request(c->log, r);

        rc = ngx_tenant_health_send(r, ok);

        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}


static ngx_int_t
ngx_tenant_health_send(ngx_http_request_t *r, ngx_uint_t ok)
{
    u_char                  *body, *p;
    size_t                   len;
    time_t                   uptime;
    ngx_tenant_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    uptime = ngx_time() - tmcf->start_time;

    len = sizeof("{\"status\":\"unhealthy\",\"uptime\":,"
                 "\"database\":\"disconnected\"}") + NGX_TIME_T_LEN;

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ok) {
        p = ngx_sprintf(body, "{\"status\":\"healthy\",\"uptime\":%T,"
                        "\"database\":\"connected\"}", uptime);

    } else {
        p = ngx_sprintf(body, "{\"status\":\"unhealthy\",\"uptime\":%T,"
                        "\"database\":\"disconnected\"}", uptime);
    }

    return ngx_tenant_json_send(r, ok ? NGX_HTTP_OK
                                      : NGX_HTTP_SERVICE_UNAVAILABLE,
                                body, p - body);
}


/*
 * A waiting request that goes away leaves the ping running for the
 * others; the last one cancels it: nothing else would, and its timer
 * would keep an exiting worker (worker_shutdown_timeout terminates the
 * waiting requests) until the database timeout.
 */

static void
ngx_tenant_health_cleanup(void *data)
{
    ngx_tenant_health_ctx_t  *ctx = data;

    ngx_tenant_health_ping_t  *ping;

    if (!ctx->waiting) {
        return;
    }

    ngx_queue_remove(&ctx->queue);
    ctx->waiting = 0;

    ping = &ngx_tenant_health_ping;

    if (ping->running && ngx_queue_empty(&ping->waiting)) {
        ngx_tenant_pg_cancel(&ping->query);
        ping->running = 0;
    }
}
