/*
 * Copyright (C) ngx_tenant_module authors
 *
 * tenant_health: GET /api/health answers whether PostgreSQL answers a
 * ping through the worker's pool, as the deployment guide expects:
 *   200 {"status":"healthy","uptime":N,"database":"connected"}
 *   503 {"status":"unhealthy","uptime":N,"database":"disconnected"}
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_pg.h"


typedef struct {
    ngx_http_request_t    *request;
    ngx_tenant_pg_req_t    query;
    unsigned               waiting:1;
} ngx_tenant_health_ctx_t;


static ngx_int_t ngx_tenant_health_handler(ngx_http_request_t *r);
static void ngx_tenant_health_done(ngx_tenant_pg_req_t *req, PGresult *res);
static ngx_int_t ngx_tenant_health_send(ngx_http_request_t *r,
    ngx_uint_t ok);
static void ngx_tenant_health_cleanup(void *data);


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
    ngx_int_t                 rc;
    ngx_http_cleanup_t       *cln;
    ngx_tenant_health_ctx_t  *ctx;
    ngx_tenant_main_conf_t   *tmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    if (tmcf->pg == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: tenant_health without tenant_database");
        return ngx_tenant_health_send(r, 0);
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
    ctx->query.handler = ngx_tenant_health_done;
    ctx->query.data = ctx;
    ctx->query.sql = "SELECT 1";

    rc = ngx_tenant_pg_query(tmcf->pg, &ctx->query);

    if (rc == NGX_DECLINED) {
        return ngx_tenant_health_send(r, 0);
    }

    ctx->waiting = 1;
    cln->handler = ngx_tenant_health_cleanup;
    cln->data = ctx;

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_tenant_health_done(ngx_tenant_pg_req_t *req, PGresult *res)
{
    ngx_int_t                 rc;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_tenant_health_ctx_t  *ctx;

    ctx = req->data;
    ctx->waiting = 0;

    r = ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    rc = ngx_tenant_health_send(r, res != NULL
                                   && PQresultStatus(res) == PGRES_TUPLES_OK);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
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

    r->headers_out.status = ok ? NGX_HTTP_OK : NGX_HTTP_SERVICE_UNAVAILABLE;

    return ngx_tenant_json_send(r, r->headers_out.status, body, p - body);
}


static void
ngx_tenant_health_cleanup(void *data)
{
    ngx_tenant_health_ctx_t  *ctx = data;

    if (ctx->waiting) {
        ngx_tenant_pg_cancel(&ctx->query);
        ctx->waiting = 0;
    }
}
