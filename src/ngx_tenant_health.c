/*
 * Copyright (C) ngx_tenant_module authors
 *
 * tenant_health: GET /api/health answers whether PostgreSQL answers a
 * ping through the worker's pool, as the deployment guide expects:
 *   200 {"status":"healthy","uptime":N,"database":"connected"}
 *   503 {"status":"unhealthy","uptime":N,"database":"disconnected"}
 * With tenant_redis, a PING through the worker's Redis client goes with
 * it, and the body says "redis":"connected" if +PONG came within the
 * client's command timeout, else "disconnected".  It never changes the
 * status: the rate limits fall back without Redis, and a platform that
 * restarted every instance over a Redis outage would make it worse.
 *
 * The endpoint needs no token, so a flood of it must not take the pool
 * from tenant lookups: a worker runs at most one ping at a time, requests
 * that arrive meanwhile wait for its answer, and an answer is reused for
 * NGX_TENANT_HEALTH_REUSE milliseconds.
 *
 * tenant_health live: the platform's check (Render's healthCheckPath),
 * which must fail only when this instance cannot serve: the worker
 * answers and can verify a token, i.e. has a key (a static one, or one
 * fetched by tenant_jwks_request).  It never waits for or asks the
 * database; the body says what the worker last knew of it:
 *   200 {"status":"ok","uptime":N,"keys":K,"database":"connected"}
 *   503 problem+json "keys_unavailable", with uptime, keys and database
 * A worker with no key yet (keys from a URL only, a fresh instance)
 * starts the fetch itself, or joins the one under way, and waits for it
 * at most NGX_TENANT_HEALTH_LIVE_WAIT ms: the platform routes nothing to
 * an instance before its check passes, so no token would ever start it.
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
#include "ngx_tenant_redis.h"
#include "ngx_tenant_content.h"


#define NGX_TENANT_HEALTH_REUSE      1000

/* under Render's 5 s response timeout */
#define NGX_TENANT_HEALTH_LIVE_WAIT  3000


typedef struct {
    ngx_tenant_pg_req_t    query;          /* static: outlives requests */
    ngx_queue_t            waiting;        /* of ngx_tenant_health_ctx_t */
    ngx_tenant_redis_cmd_t *redis;          /* the PING under way */
    ngx_msec_t             answered_at;
    unsigned               running:1;
    unsigned               redis_running:1;
    unsigned               answered:1;
    unsigned               ok:1;
    unsigned               redis_ok:1;
} ngx_tenant_health_ping_t;


typedef struct {
    ngx_http_request_t    *request;
    ngx_queue_t            queue;
    unsigned               waiting:1;
} ngx_tenant_health_ctx_t;


/* A liveness check waiting for keys. */

typedef struct {
    ngx_http_request_t    *request;
    ngx_tenant_ctx_t       jwks;           /* the JWKS wait's state */
    ngx_event_t            timer;
    unsigned               timed_out:1;
} ngx_tenant_health_live_t;


static ngx_int_t ngx_tenant_health_handler(ngx_http_request_t *r);
static ngx_int_t ngx_tenant_health_live_handler(ngx_http_request_t *r);
static ngx_tenant_health_live_t *ngx_tenant_health_live_get(
    ngx_http_request_t *r);
static ngx_int_t ngx_tenant_health_live_send(ngx_http_request_t *r,
    tenant_keyset_t *keys, const char *detail);
static void ngx_tenant_health_live_timeout(ngx_event_t *ev);
static void ngx_tenant_health_live_cleanup(void *data);
static void ngx_tenant_health_done(ngx_tenant_pg_req_t *req, PGresult *res);
static void ngx_tenant_health_redis_done(void *data, ngx_uint_t rc,
    tenant_resp_value_t *reply);
static void ngx_tenant_health_answer(void);
static ngx_int_t ngx_tenant_health_send(ngx_http_request_t *r,
    ngx_uint_t ok, ngx_uint_t redis_ok);
static void ngx_tenant_health_cleanup(void *data);


static ngx_tenant_health_ping_t  ngx_tenant_health_ping;


/* tenant_health [live]; */

char *
ngx_tenant_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 1) {
        clcf->handler = ngx_tenant_health_handler;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "live") == 0) {
        clcf->handler = ngx_tenant_health_live_handler;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" (tenant_health takes "
                       "nothing, or \"live\")", &value[1]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_tenant_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    tenant_resp_arg_t          argv[1];
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
        return ngx_tenant_health_send(r, 0, 0);
    }

    if (ping->answered
        && ngx_current_msec - ping->answered_at < NGX_TENANT_HEALTH_REUSE)
    {
        return ngx_tenant_health_send(r, ping->ok, ping->redis_ok);
    }

    if (!ping->running && !ping->redis_running) {
        if (ping->waiting.next == NULL) {
            ngx_queue_init(&ping->waiting);
        }

        ngx_memzero(&ping->query, sizeof(ngx_tenant_pg_req_t));
        ping->query.handler = ngx_tenant_health_done;
        ping->query.sql = "SELECT 1";
        ping->query.resend = 1;

        rc = ngx_tenant_pg_query(tmcf->pg, &ping->query);

        /* NGX_DECLINED: the database failed moments ago */

        ping->running = (rc != NGX_DECLINED);
        ping->ok = 0;

        /* NULL: no ready connection, nothing to wait for */

        argv[0].data = (const unsigned char *) "PING";
        argv[0].len = 4;

        ping->redis = ngx_tenant_redis_send(tmcf->redis, argv, 1,
                                            ngx_tenant_health_redis_done,
                                            ping);
        ping->redis_running = (ping->redis != NULL);
        ping->redis_ok = 0;

        if (!ping->running && !ping->redis_running) {
            return ngx_tenant_health_send(r, 0, 0);
        }
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
    ngx_tenant_health_ping_t  *ping;

    /* no result: the pool logged why */

    if (res && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "tenant: health ping failed: %s",
                      ngx_tenant_pg_result_error(res));
    }

    ping = &ngx_tenant_health_ping;

    ping->running = 0;
    ping->ok = (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK);

    ngx_tenant_health_answer();
}


/* the client logs a lost connection; a timeout here is no news */

static void
ngx_tenant_health_redis_done(void *data, ngx_uint_t rc,
    tenant_resp_value_t *reply)
{
    ngx_tenant_health_ping_t  *ping = data;

    ping->redis_running = 0;
    ping->redis = NULL;
    ping->redis_ok = (rc == NGX_TENANT_REDIS_REPLY
                      && tenant_resp_simple_is(reply, "PONG"));

    ngx_tenant_health_answer();
}


/* when both the database and Redis have answered */

static void
ngx_tenant_health_answer(void)
{
    ngx_int_t                  rc;
    ngx_queue_t               *q;
    ngx_http_request_t        *r;
    ngx_tenant_health_ctx_t   *ctx;
    ngx_tenant_health_ping_t  *ping;

    ping = &ngx_tenant_health_ping;

    if (ping->running || ping->redis_running) {
        return;
    }

    ping->answered = 1;
    ping->answered_at = ngx_current_msec;

    while (!ngx_queue_empty(&ping->waiting)) {
        q = ngx_queue_head(&ping->waiting);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_tenant_health_ctx_t, queue);
        ctx->waiting = 0;

        r = ctx->request;

        ngx_http_set_log_request(r->connection->log, r);

        rc = ngx_tenant_health_send(r, ping->ok, ping->redis_ok);

        ngx_tenant_content_finalize(r, rc);
    }
}


static ngx_int_t
ngx_tenant_health_send(ngx_http_request_t *r, ngx_uint_t ok,
    ngx_uint_t redis_ok)
{
    u_char                  *body, *p;
    size_t                   len;
    time_t                   uptime;
    ngx_tenant_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    uptime = ngx_time() - tmcf->start_time;

    len = sizeof("{\"status\":\"unhealthy\",\"uptime\":,"
                 "\"database\":\"disconnected\","
                 "\"redis\":\"disconnected\"}") + NGX_TIME_T_LEN;

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ok) {
        p = ngx_sprintf(body, "{\"status\":\"healthy\",\"uptime\":%T,"
                        "\"database\":\"connected\"", uptime);

    } else {
        p = ngx_sprintf(body, "{\"status\":\"unhealthy\",\"uptime\":%T,"
                        "\"database\":\"disconnected\"", uptime);
    }

    if (tmcf->redis) {
        p = ngx_sprintf(p, ",\"redis\":\"%s\"",
                        redis_ok ? "connected" : "disconnected");
    }

    *p++ = '}';

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

    if (!ngx_queue_empty(&ping->waiting)) {
        return;
    }

    if (ping->running) {
        ngx_tenant_pg_cancel(&ping->query);
        ping->running = 0;
    }

    if (ping->redis_running) {
        ngx_tenant_redis_cancel(ping->redis);
        ping->redis = NULL;
        ping->redis_running = 0;
    }
}


/*
 * The liveness check.  A content handler that may wait: it runs again
 * (the phases run again from the content phase) when the JWKS fetch it
 * waits for ends, or when its timer fires; its state is found through
 * its pool cleanup.
 */

static ngx_int_t
ngx_tenant_health_live_handler(ngx_http_request_t *r)
{
    uint32_t                   policy;
    ngx_int_t                  rc;
    tenant_keyset_t           *keys;
    ngx_pool_cleanup_t        *cln;
    ngx_tenant_main_conf_t    *tmcf;
    ngx_tenant_health_live_t  *live;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    live = ngx_tenant_health_live_get(r);

    if (live) {
        /* again: the fetch ended, or the time is up */

        if (!live->timed_out) {
            rc = ngx_tenant_jwks_waiting(r, tmcf, &live->jwks);

            if (rc == NGX_AGAIN) {
                r->main->count++;
                return NGX_DONE;
            }
        }

        if (live->timer.timer_set) {
            ngx_del_timer(&live->timer);
        }

        keys = ngx_tenant_jwks_keys(tmcf, r->connection->log, &policy);

        if (keys->nkeys) {
            return ngx_tenant_health_live_send(r, keys, NULL);
        }

        return ngx_tenant_health_live_send(r, keys, live->timed_out
                   ? "no signing key yet: the JWKS fetch did not end "
                     "within 3 s"
                   : "no signing key could be fetched from the JWKS "
                     "endpoint (see the error log); it is tried again at "
                     "most once per interval");
    }

    keys = ngx_tenant_jwks_keys(tmcf, r->connection->log, &policy);

    if (keys->nkeys) {
        return ngx_tenant_health_live_send(r, keys, NULL);
    }

    if (tmcf->jwks == NULL) {
        return ngx_tenant_health_live_send(r, keys,
                   "no signing key is configured (tenant_jwt_key, "
                   "tenant_jwks_file or tenant_jwks_request)");
    }

    /* keys from a URL only, none yet: fetch them, or wait for the fetch
     * under way */

    live = ngx_pcalloc(r->pool, sizeof(ngx_tenant_health_live_t));
    if (live == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    live->request = r;

    cln->handler = ngx_tenant_health_live_cleanup;
    cln->data = live;

    rc = ngx_tenant_jwks_wait(r, tmcf, &live->jwks, 1);

    if (rc != NGX_AGAIN) {
        return ngx_tenant_health_live_send(r, keys,
                   "no signing key could be fetched from the JWKS "
                   "endpoint (see the error log); it is tried again at "
                   "most once per interval");
    }

    live->timer.handler = ngx_tenant_health_live_timeout;
    live->timer.data = live;
    live->timer.log = r->connection->log;

    ngx_add_timer(&live->timer, NGX_TENANT_HEALTH_LIVE_WAIT);

    r->main->count++;

    return NGX_DONE;
}


static ngx_tenant_health_live_t *
ngx_tenant_health_live_get(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_tenant_health_live_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


/* The time is up: the request runs again, and answers with what it has. */

static void
ngx_tenant_health_live_timeout(ngx_event_t *ev)
{
    ngx_tenant_health_live_t *live = ev->data;

    live->timed_out = 1;

    /* woken already, its phases posted: they find timed_out */

    ngx_tenant_jwks_stop_waiting(&live->jwks);
}


static void
ngx_tenant_health_live_cleanup(void *data)
{
    ngx_tenant_health_live_t *live = data;

    if (live->timer.timer_set) {
        ngx_del_timer(&live->timer);
    }
}


static ngx_int_t
ngx_tenant_health_live_send(ngx_http_request_t *r, tenant_keyset_t *keys,
    const char *detail)
{
    u_char                  *body, *p;
    size_t                   len;
    time_t                   uptime;
    tenant_problem_t         pb;
    ngx_tenant_main_conf_t  *tmcf;
    u_char                   nkeys[NGX_INT_T_LEN], up[NGX_TIME_T_LEN];

    static const char  *db[] = { "unknown", "connected", "disconnected" };

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    uptime = ngx_time() - tmcf->start_time;

    /* informational: never the reason for a failure */

    p = (u_char *) db[tmcf->pg ? ngx_tenant_pg_pool_state(tmcf->pg)
                               : NGX_TENANT_PG_DB_UNKNOWN];

    if (detail == NULL) {
        len = sizeof("{\"status\":\"ok\",\"uptime\":,\"keys\":,"
                     "\"database\":\"disconnected\"}")
              + NGX_TIME_T_LEN + NGX_INT_T_LEN;

        body = ngx_pnalloc(r->pool, len);
        if (body == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_sprintf(body, "{\"status\":\"ok\",\"uptime\":%T,"
                          "\"keys\":%ui,\"database\":\"%s\"}",
                          uptime, keys->nkeys, p)
              - body;

        return ngx_tenant_json_send(r, NGX_HTTP_OK, body, len);
    }

    /* not logged: the platform asks every few seconds, and a failed
     * fetch logs why itself (once per interval) */

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    pb.members[0].name = "uptime";
    pb.members[0].value = (char *) up;
    pb.members[0].value_len = ngx_sprintf(up, "%T", uptime) - up;
    pb.members[0].number = 1;

    pb.members[1].name = "keys";
    pb.members[1].value = (char *) nkeys;
    pb.members[1].value_len = ngx_sprintf(nkeys, "%ui", keys->nkeys) - nkeys;
    pb.members[1].number = 1;

    pb.members[2].name = "database";
    pb.members[2].value = (char *) p;
    pb.members[2].value_len = ngx_strlen(p);

    pb.nmembers = 3;

    return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "keys_unavailable",
                                     "Signing keys unavailable",
                                     (char *) detail);
}
