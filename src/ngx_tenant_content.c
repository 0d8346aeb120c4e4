/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Content handlers that wait for one statement (ngx_tenant_content.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_pg.h"
#include "ngx_tenant_content.h"


static void ngx_tenant_content_done(ngx_tenant_pg_req_t *req, PGresult *res);
static ngx_int_t ngx_tenant_content_unavailable(ngx_http_request_t *r);
static void ngx_tenant_content_cleanup(void *data);


ngx_int_t
ngx_tenant_content_query(ngx_http_request_t *r, ngx_tenant_pg_pool_t *pool,
    ngx_tenant_content_t *cq, ngx_uint_t hold)
{
    ngx_http_cleanup_t  *cln;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cq->request = r;
    cq->query.handler = ngx_tenant_content_done;
    cq->query.data = cq;

    /* NGX_DECLINED: the database failed moments ago, nothing to wait for */

    if (ngx_tenant_pg_query(pool, &cq->query) != NGX_AGAIN) {
        return ngx_tenant_content_unavailable(r);
    }

    cq->waiting = 1;
    cln->handler = ngx_tenant_content_cleanup;
    cln->data = cq;

    if (hold) {
        r->main->count++;
    }

    return NGX_DONE;
}


/* The statement's answer, or none (res == NULL: the pool logged why). */

static void
ngx_tenant_content_done(ngx_tenant_pg_req_t *req, PGresult *res)
{
    ngx_int_t              rc;
    ngx_http_request_t    *r;
    ngx_tenant_content_t  *cq;

    cq = req->data;
    cq->waiting = 0;

    r = cq->request;

    ngx_http_set_log_request(r->connection->log, r);

    if (res == NULL) {
        rc = ngx_tenant_content_unavailable(r);

    } else {
        rc = cq->answer(r, cq->data, res);
    }

    ngx_tenant_content_finalize(r, rc);
}


void
ngx_tenant_content_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    /* r may be freed by its finalization, not its connection (closed,
     * c->destroyed says so to ngx_http_run_posted_requests()) */

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_tenant_content_unavailable(ngx_http_request_t *r)
{
    tenant_problem_t  pb;

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "tenant_unavailable",
                                     "Tenant directory unavailable", NULL);
}


/* The request ends before the answer (ngx_http_terminate_request). */

static void
ngx_tenant_content_cleanup(void *data)
{
    ngx_tenant_content_t  *cq = data;

    if (cq->waiting) {
        ngx_tenant_pg_cancel(&cq->query);
        cq->waiting = 0;
    }
}
