/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Sending problem+json (RFC 9457) and JSON responses from any phase.
 *
 * Allocation and send failures return NGX_ERROR or 500 to nginx, which
 * closes the connection; tests do not provoke them (class A of
 * docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"


ngx_int_t
ngx_tenant_problem_send(ngx_http_request_t *r, tenant_problem_t *p)
{
    u_char     *body;
    size_t      len;
    ngx_str_t   type = ngx_string("application/problem+json");

    len = tenant_problem_render(NULL, 0, p);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* defensive: rendering is deterministic, the length cannot differ */

    if (tenant_problem_render((char *) body, len, p) != len) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_tenant_body_send(r, p->status, &type, body, len);
}


/*
 * The problem answer of a content handler (admin API, cron job): its type
 * under the location's tenant_problem_type_base; a 401 gets
 * "WWW-Authenticate: Bearer" unless the caller set one, a 503
 * "Retry-After: 5".  pb may carry members already.
 */

ngx_int_t
ngx_tenant_problem_answer(ngx_http_request_t *r, tenant_problem_t *pb,
    ngx_uint_t status, char *code, char *title, char *detail)
{
    ngx_tenant_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tenant_module);

    pb->type_base = (char *) tlcf->problem_type_base.data;
    pb->type_base_len = tlcf->problem_type_base.len;
    pb->code = code;
    pb->status = (int) status;
    pb->title = title;
    pb->detail = detail;
    pb->detail_len = detail ? ngx_strlen(detail) : 0;

    if (status == NGX_HTTP_UNAUTHORIZED
        && r->headers_out.www_authenticate == NULL
        && ngx_tenant_header_out(r, "WWW-Authenticate", (u_char *) "Bearer",
                                 sizeof("Bearer") - 1)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE
        && ngx_tenant_header_out(r, "Retry-After", (u_char *) "5", 1) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_tenant_problem_send(r, pb);
}


ngx_int_t
ngx_tenant_empty_send(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


ngx_int_t
ngx_tenant_json_send(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    ngx_str_t  type = ngx_string("application/json");

    return ngx_tenant_body_send(r, status, &type, body, len);
}


ngx_int_t
ngx_tenant_body_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    /* a malformed body gets nginx's own 400, not a 500 */

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = status;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = len;

    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = (len != 0);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* Adds a response header; value is kept as is (allocated by the caller). */

ngx_table_elt_t *
ngx_tenant_header_out(ngx_http_request_t *r, char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return h;
}
