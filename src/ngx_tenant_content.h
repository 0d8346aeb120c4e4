/*
 * Copyright (C) ngx_tenant_module authors
 *
 * A content handler that waits for one PostgreSQL statement, then
 * answers (the admin API, the trial job): the request is held while the
 * statement runs, resumed in its answer's event with its own log
 * context, answered and finalized.  "Tenant directory unavailable" (503)
 * when the database cannot be asked (it failed moments ago) or did not
 * answer (no connection, timeout); the caller builds every other answer.
 *
 * A client that closes its connection is not noticed while its request
 * waits (reading is blocked, as for any content handler): what ends a
 * waiting request early is ngx_http_terminate_request (in practice
 * worker_shutdown_timeout), whose cleanup cancels the statement
 * (ngx_tenant_pg_cancel: a statement in flight loses its connection).
 */

#ifndef _NGX_TENANT_CONTENT_H_INCLUDED_
#define _NGX_TENANT_CONTENT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_pg.h"


/* The answer to a statement that ran: res is never NULL.  Returns what
 * ngx_http_finalize_request() takes (a send's result, or a status). */
typedef ngx_int_t (*ngx_tenant_content_answer_pt)(ngx_http_request_t *r,
    void *data, PGresult *res);


typedef struct {
    ngx_http_request_t            *request;

    /* the caller's: the answer, its data, and query.sql, .nparams,
     * .values, .lengths, .resend (the handler and its data are ours) */
    ngx_tenant_content_answer_pt   answer;
    void                          *data;
    ngx_tenant_pg_req_t            query;

    unsigned                       waiting:1;
} ngx_tenant_content_t;


/*
 * Sends cq->query for r (cq lives in r's pool): NGX_DONE, and cq->answer
 * finalizes r later; or what the content handler returns at once (an
 * error status, or the 503's send result).  hold: take a reference to r
 * for the wait, as a content handler that returns NGX_DONE must; not from
 * a request body handler, where the body read's reference is the wait's.
 */
ngx_int_t ngx_tenant_content_query(ngx_http_request_t *r,
    ngx_tenant_pg_pool_t *pool, ngx_tenant_content_t *cq, ngx_uint_t hold);

/* Finalizes r, which waited, from the event that ended its wait, and
 * runs the requests posted meanwhile on its connection. */
void ngx_tenant_content_finalize(ngx_http_request_t *r, ngx_int_t rc);


#endif /* _NGX_TENANT_CONTENT_H_INCLUDED_ */
