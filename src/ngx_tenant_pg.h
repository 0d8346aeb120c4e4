/*
 * Copyright (C) ngx_tenant_module authors
 *
 * A per-worker pool of PostgreSQL connections driven by nginx events
 * through libpq's asynchronous API: PQconnectStartParams/PQconnectPoll,
 * PQsendQueryParams, PQflush, PQconsumeInput.  Nothing here blocks.
 */

#ifndef _NGX_TENANT_PG_H_INCLUDED_
#define _NGX_TENANT_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"


#define NGX_TENANT_PG_MAX_PARAMS   10


typedef struct ngx_tenant_pg_conn_s  ngx_tenant_pg_conn_t;

/* A notification (LISTEN) and a connection lost while idle. */
typedef void (*ngx_tenant_pg_notify_pt)(void *data, const char *channel,
    const char *payload);
typedef void (*ngx_tenant_pg_closed_pt)(void *data);

/* res is NULL when the query could not be run (no connection, timeout);
 * it is freed by the pool after the handler returns.  An answer that
 * comes after the timeout is never handed to anyone. */
typedef void (*ngx_tenant_pg_handler_pt)(ngx_tenant_pg_req_t *req,
    PGresult *res);


struct ngx_tenant_pg_req_s {
    ngx_tenant_pg_handler_pt   handler;
    void                      *data;

    const char                *sql;
    int                        nparams;
    const char                *values[NGX_TENANT_PG_MAX_PARAMS];
    int                        lengths[NGX_TENANT_PG_MAX_PARAMS];

    /* nobody waits for the answer: an exiting worker does not either */
    unsigned                   cancelable:1;

    /* running it twice does no harm (reads; the trial job): sent again
     * on a new connection if the server closed this one meanwhile */
    unsigned                   resend:1;

    /* set by the pool */
    ngx_tenant_pg_pool_t      *pool;
    ngx_tenant_pg_conn_t      *conn;
    ngx_queue_t                queue;
    ngx_event_t                timer;
    ngx_msec_t                 sent_at;
    unsigned                   queued:1;
    unsigned                   failed:1;
    unsigned                   retried:1;
};


/* keywords/values: NULL-terminated, as PQconnectStartParams takes them;
 * they must live as long as the cycle.  name: the connections'
 * application_name in pg_stat_activity unless the connection string sets
 * one (libpq's fallback_application_name). */
ngx_tenant_pg_pool_t *ngx_tenant_pg_pool_create(ngx_cycle_t *cycle,
    const char *const *keywords, const char *const *values, ngx_uint_t size,
    ngx_msec_t timeout, ngx_tenant_pg_stats_t *stats, const char *name);
void ngx_tenant_pg_pool_destroy(ngx_tenant_pg_pool_t *pool);

/*
 * Runs req->sql with req->values: NGX_AGAIN, and req->handler is called
 * later (always from an event handler, never from inside this call);
 * or NGX_DECLINED at once when the database failed within the last
 * second (callers answer without waiting).
 */
ngx_int_t ngx_tenant_pg_query(ngx_tenant_pg_pool_t *pool,
    ngx_tenant_pg_req_t *req);

/* An error result's SQLSTATE and primary message, for the log. */
const char *ngx_tenant_pg_result_error(PGresult *res);

/* The caller no longer wants the answer (its request is going away). */
void ngx_tenant_pg_cancel(ngx_tenant_pg_req_t *req);

/*
 * The caller no longer waits, but the answer is still of use (a lookup
 * fills the cache): a query on a connection runs on, within its timeout,
 * and keeps the connection; the handler is called as usual (NGX_AGAIN).
 * One still waiting for a connection is dropped: NGX_DECLINED.
 */
ngx_int_t ngx_tenant_pg_orphan(ngx_tenant_pg_req_t *req);

/*
 * What the pool last knew of the database, without asking it: CONNECTED
 * (a connection is open), DISCONNECTED (the last attempt failed, no
 * connection has been made since) or UNKNOWN (nothing open, nothing
 * failed: not used yet, or idle connections the server closed).
 */
typedef enum {
    NGX_TENANT_PG_DB_UNKNOWN = 0,
    NGX_TENANT_PG_DB_CONNECTED,
    NGX_TENANT_PG_DB_DISCONNECTED
} ngx_tenant_pg_db_state_e;

ngx_tenant_pg_db_state_e ngx_tenant_pg_pool_state(
    ngx_tenant_pg_pool_t *pool);

/* For a pool that LISTENs: notifications, and losses of the connection
 * (after which it must LISTEN again on a new one). */
void ngx_tenant_pg_pool_watch(ngx_tenant_pg_pool_t *pool,
    ngx_tenant_pg_notify_pt notify, ngx_tenant_pg_closed_pt closed,
    void *data);


#endif /* _NGX_TENANT_PG_H_INCLUDED_ */
