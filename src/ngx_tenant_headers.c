/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The request headers the gateway trusts, removes and adds, and the
 * $tenant_* variables.
 *
 * Allocation and HMAC failures while adding the signed headers answer
 * 500, so no request reaches the upstream unsigned; tests do not provoke
 * them (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"


typedef enum {
    NGX_TENANT_VAR_ID = 0,
    NGX_TENANT_VAR_SLUG,
    NGX_TENANT_VAR_SCHEMA,
    NGX_TENANT_VAR_TIER,
    NGX_TENANT_VAR_STATUS,
    NGX_TENANT_VAR_ORG_ID,
    NGX_TENANT_VAR_USER_ID,
    NGX_TENANT_VAR_ORG_ROLE,
    NGX_TENANT_VAR_OUTCOME,
    NGX_TENANT_VAR_REQUIRED_TIER,
    NGX_TENANT_VAR_FEATURE,
    NGX_TENANT_VAR_RL_LIMIT,
    NGX_TENANT_VAR_RL_REMAINING,
    NGX_TENANT_VAR_RL_SOURCE
} ngx_tenant_var_e;


typedef struct {
    ngx_str_t          name;
    ngx_str_t          lowcase;
    ngx_uint_t         hash;
} ngx_tenant_header_t;


static ngx_int_t ngx_tenant_headers_target(ngx_http_request_t *r,
    ngx_str_t *target);
static void ngx_tenant_headers_own_origin(ngx_http_request_t *r,
    ngx_str_t *scheme, ngx_str_t *host);
static ngx_table_elt_t *ngx_tenant_headers_next(ngx_http_request_t *r,
    ngx_list_part_t **part, ngx_uint_t *i);
static ngx_int_t ngx_tenant_header_add(ngx_http_request_t *r,
    ngx_tenant_header_t *h, u_char *value, size_t len);
static ngx_int_t ngx_tenant_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


/* in the order of the signed message after the method and the target */

static ngx_tenant_header_t  ngx_tenant_headers[] = {
    { ngx_string("X-Tenant-ID"), ngx_string("x-tenant-id"), 0 },
    { ngx_string("X-Tenant-Slug"), ngx_string("x-tenant-slug"), 0 },
    { ngx_string("X-Tenant-Schema"), ngx_string("x-tenant-schema"), 0 },
    { ngx_string("X-Tenant-Tier"), ngx_string("x-tenant-tier"), 0 },
    { ngx_string("X-Organization-ID"), ngx_string("x-organization-id"), 0 },
    { ngx_string("X-User-ID"), ngx_string("x-user-id"), 0 },
    { ngx_string("X-Org-Role"), ngx_string("x-org-role"), 0 },
    { ngx_string("X-Tenant-Timestamp"), ngx_string("x-tenant-timestamp"), 0 },
    { ngx_string("X-Tenant-Signature"), ngx_string("x-tenant-signature"), 0 },
    { ngx_string("X-Tenant-Request-ID"), ngx_string("x-tenant-request-id"),
      0 }
};

#define NGX_TENANT_H_ORG_ID      4
#define NGX_TENANT_H_TIMESTAMP   7
#define NGX_TENANT_H_SIGNATURE   8
#define NGX_TENANT_H_REQUEST_ID  9
#define NGX_TENANT_NSIGNED       7


static ngx_http_variable_t  ngx_tenant_vars[] = {

    { ngx_string("tenant_id"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_slug"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_SLUG, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_schema"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_SCHEMA, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_tier"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_TIER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_status"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_org_id"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_ORG_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_user_id"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_USER_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_org_role"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_ORG_ROLE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_outcome"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_OUTCOME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_required_tier"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_REQUIRED_TIER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_feature"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_FEATURE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_ratelimit_limit"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_RL_LIMIT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_ratelimit_remaining"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_RL_REMAINING, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tenant_ratelimit_source"), NULL, ngx_tenant_variable,
      NGX_TENANT_VAR_RL_SOURCE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t   ngx_tenant_request_id = ngx_string("request_id");
static ngx_uint_t  ngx_tenant_request_id_hash;


ngx_int_t
ngx_tenant_headers_init(ngx_conf_t *cf)
{
    ngx_uint_t  i;

    for (i = 0; i < sizeof(ngx_tenant_headers) / sizeof(ngx_tenant_headers[0]);
         i++)
    {
        ngx_tenant_headers[i].hash =
            ngx_hash_key(ngx_tenant_headers[i].lowcase.data,
                         ngx_tenant_headers[i].lowcase.len);
    }

    ngx_tenant_request_id_hash = ngx_hash_key(ngx_tenant_request_id.data,
                                              ngx_tenant_request_id.len);

    return NGX_OK;
}


/*
 * The client's X-Organization-ID: *org (len 0 when absent) and *count,
 * the number of such headers, spelled in any case and with '_' for '-' as
 * the backends read them (X_Organization_ID next to X-Organization-ID is
 * two of them, refused as ambiguous; alone, it is the header).
 */

void
ngx_tenant_headers_read_org(ngx_http_request_t *r, ngx_str_t *org,
    ngx_uint_t *count)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_str_null(org);
    *count = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (tenant_header_name_is(h[i].key.data, h[i].key.len,
                                  "x-organization-id",
                                  sizeof("x-organization-id") - 1))
        {
            *org = h[i].value;
            (*count)++;
        }
    }
}


/*
 * The admin API and the cron job refuse what a page of another site could
 * make a browser send them: an Origin header other than the gateway's own
 * origin (403 cross_origin; none, from curl or a server, is fine), and a
 * Content-Type other than application/json (415 unsupported_media_type),
 * which is what an HTML form sends (text/plain, urlencoded, multipart);
 * with body set, also a request without a Content-Type.  Every copy of
 * both headers is checked.  NGX_DECLINED when the request may go on,
 * else the problem answer's return code.
 */

ngx_int_t
ngx_tenant_headers_same_origin(ngx_http_request_t *r, ngx_uint_t body)
{
    ngx_str_t                scheme, host;
    ngx_uint_t               i, typed;
    ngx_list_part_t         *part;
    ngx_table_elt_t         *h;
    tenant_problem_t         pb;
    ngx_tenant_loc_conf_t   *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tenant_module);

    ngx_tenant_headers_own_origin(r, &scheme, &host);

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    typed = 0;
    part = NULL;

    while ((h = ngx_tenant_headers_next(r, &part, &i)) != NULL) {

        if (tenant_header_name_is(h->key.data, h->key.len, "origin",
                                  sizeof("origin") - 1)
            && !tenant_origin_is(h->value.data, h->value.len, scheme.data,
                                 scheme.len, host.data, host.len))
        {
            ngx_log_error(tlcf->refusal_log_level, r->connection->log, 0,
                          "tenant: refused with 403 cross_origin "
                          "(Origin \"%V\" is not %V://%V)",
                          &h->value, &scheme, &host);

            return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_FORBIDDEN,
                       "cross_origin", "Cross-origin request refused",
                       "the Origin header is not this gateway's origin");
        }

        if (!tenant_header_name_is(h->key.data, h->key.len, "content-type",
                                   sizeof("content-type") - 1))
        {
            continue;
        }

        typed = 1;

        if (!tenant_media_type_json(h->value.data, h->value.len)) {
            ngx_log_error(tlcf->refusal_log_level, r->connection->log, 0,
                          "tenant: refused with 415 unsupported_media_type "
                          "(Content-Type \"%V\")", &h->value);
            break;
        }
    }

    if (h == NULL && (typed || !body)) {
        return NGX_DECLINED;
    }

    return ngx_tenant_problem_answer(r, &pb,
                                     NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                     "unsupported_media_type",
                                     "Unsupported media type",
                                     "the body must be application/json");
}


/*
 * The gateway's origin as the client sees it: the scheme and host of the
 * first X-Forwarded-Proto and X-Forwarded-Host (their first element, as
 * a TLS proxy such as Render's sets them), else the connection's scheme
 * and the Host header.  A page cannot make a browser send these headers
 * to another site (they are not CORS-safelisted), so they cannot turn a
 * foreign Origin into this one.
 */

static void
ngx_tenant_headers_own_origin(ngx_http_request_t *r, ngx_str_t *scheme,
    ngx_str_t *host)
{
    u_char           *p, *last;
    ngx_uint_t        i, seen, bit;
    ngx_str_t        *v;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_str_set(scheme, "http");

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        ngx_str_set(scheme, "https");
    }
#endif

    ngx_str_null(host);

    if (r->headers_in.host) {
        *host = r->headers_in.host->value;
    }

    seen = 0;
    part = NULL;

    while ((h = ngx_tenant_headers_next(r, &part, &i)) != NULL) {

        if (tenant_header_name_is(h->key.data, h->key.len,
                                  "x-forwarded-proto",
                                  sizeof("x-forwarded-proto") - 1))
        {
            v = scheme;
            bit = 1;

        } else if (tenant_header_name_is(h->key.data, h->key.len,
                                         "x-forwarded-host",
                                         sizeof("x-forwarded-host") - 1))
        {
            v = host;
            bit = 2;

        } else {
            continue;
        }

        /* the first header only: a proxy appends its own after it */

        if (seen & bit) {
            continue;
        }

        seen |= bit;

        p = h->value.data;
        last = p + h->value.len;

        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        v->data = p;

        while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        v->len = p - v->data;
    }
}


/* The request headers one by one: *part NULL to start; NULL at the end. */

static ngx_table_elt_t *
ngx_tenant_headers_next(ngx_http_request_t *r, ngx_list_part_t **part,
    ngx_uint_t *i)
{
    if (*part == NULL) {
        *part = &r->headers_in.headers.part;
        *i = 0;

    } else {
        (*i)++;
    }

    while (*i >= (*part)->nelts) {
        if ((*part)->next == NULL) {
            return NULL;
        }

        *part = (*part)->next;
        *i = 0;
    }

    return &((ngx_table_elt_t *) (*part)->elts)[*i];
}


/*
 * Removes every client-sent header named like one the gateway sets:
 * X-Tenant-*, X-User-*, X-Org-Role, X-Organization-ID, in any case and
 * with '_' for '-' (tenant_header_reserved()).  Elements of
 * r->headers_in.headers are pointed to by r->headers_in.host and others,
 * so they are not moved: a new list is built without the reserved ones,
 * and only when there is one (rarely: a client that tries).
 */

ngx_int_t
ngx_tenant_headers_strip(ngx_http_request_t *r)
{
    ngx_uint_t        i, n, total;
    ngx_list_part_t  *part, old;
    ngx_table_elt_t  *h, *nh;

    n = 0;
    total = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        total++;
        n += tenant_header_reserved(h[i].key.data, h[i].key.len);
    }

    if (n == 0) {
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tenant: removing %ui client-sent tenant headers", n);

    /*
     * The old list is walked from a copy of its first part (the list's
     * "last" may point into r->headers_in.headers itself); the new list
     * is built in place.
     */

    old = r->headers_in.headers.part;

    if (ngx_list_init(&r->headers_in.headers, r->pool, total + 10,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    part = &old;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (tenant_header_reserved(h[i].key.data, h[i].key.len)) {
            continue;
        }

        nh = ngx_list_push(&r->headers_in.headers);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        *nh = h[i];
    }

    return NGX_OK;
}


/*
 * Adds the tenant headers and their signature (see tenant_sign.h for the
 * message).  Every value comes from the database row or from a verified
 * claim that tenant_jwt checked for control characters and length; the
 * method and the target from nginx's request line parser, which refuses
 * control characters.
 */

ngx_int_t
ngx_tenant_headers_inject(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx)
{
    u_char                     *msg, *p;
    size_t                      len;
    time_t                      now;
    ngx_str_t                   target;
    ngx_uint_t                  i;
    tenant_str_t                f[TENANT_SIGN_NFIELDS], *v;
    unsigned char               mac[TENANT_SHA256_LEN];
    ngx_http_variable_value_t  *id;
    u_char                      ts[NGX_TIME_T_LEN];
    u_char                      sig[sizeof(TENANT_SIGN_VERSION "=") - 1
                                    + 2 * TENANT_SHA256_LEN];

    if (ngx_tenant_headers_target(r, &target) != NGX_OK) {
        return NGX_ERROR;
    }

    f[TENANT_SIGN_METHOD].value = (char *) r->method_name.data;
    f[TENANT_SIGN_METHOD].len = r->method_name.len;
    f[TENANT_SIGN_TARGET].value = (char *) target.data;
    f[TENANT_SIGN_TARGET].len = target.len;

    /*
     * $request_id, the value the access log and X-Request-ID have: unique
     * per request, so that a backend can refuse a header set it has seen
     */

    id = ngx_http_get_variable(r, &ngx_tenant_request_id,
                               ngx_tenant_request_id_hash);

    if (id == NULL || id->not_found || id->len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: no $request_id to sign");
        return NGX_ERROR;
    }

    f[TENANT_SIGN_REQUEST_ID].value = (char *) id->data;
    f[TENANT_SIGN_REQUEST_ID].len = id->len;

    v = &f[TENANT_SIGN_TENANT_ID];

    v[0].value = (char *) ctx->tenant.id;
    v[0].len = ctx->tenant.id_len;
    v[1].value = (char *) ctx->tenant.slug;
    v[1].len = ctx->tenant.slug_len;
    v[2].value = (char *) ctx->tenant.schema;
    v[2].len = ctx->tenant.schema_len;
    v[3].value = (char *) ctx->tenant.tier;
    v[3].len = ctx->tenant.tier_len;
    v[4].value = (char *) ctx->tenant.org_id;
    v[4].len = ctx->tenant.org_id_len;
    v[5].value = ctx->claims.sub;
    v[5].len = ctx->claims.sub_len;
    v[6].value = ctx->claims.org_role;
    v[6].len = ctx->claims.org_role_len;

    for (i = 0; i < NGX_TENANT_NSIGNED; i++) {
        if (v[i].len == 0) {
            continue;
        }

        if (ngx_tenant_header_add(r, &ngx_tenant_headers[i],
                                  (u_char *) v[i].value, v[i].len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    now = ngx_time();

    len = tenant_sign_message(NULL, now, f);

    if (len == 0) {
        /* not from a client: nginx refuses control characters in the
         * request line; only the configuration ("set $args") could */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: a control character in the request line "
                      "or a tenant value, the headers are not signed");
        return NGX_ERROR;
    }

    msg = ngx_pnalloc(r->pool, len);
    if (msg == NULL) {
        return NGX_ERROR;
    }

    (void) tenant_sign_message((char *) msg, now, f);

    if (tenant_sign(tmcf->sign, msg, len, mac) != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: signing the tenant headers failed");
        return NGX_ERROR;
    }

    p = ngx_cpymem(sig, TENANT_SIGN_VERSION "=",
                   sizeof(TENANT_SIGN_VERSION "=") - 1);
    tenant_hex_encode((char *) p, mac, TENANT_SHA256_LEN);

    p = ngx_sprintf(ts, "%T", now);

    if (ngx_tenant_header_add(r, &ngx_tenant_headers[NGX_TENANT_H_TIMESTAMP],
                              ts, p - ts)
        != NGX_OK
        || ngx_tenant_header_add(r,
                                 &ngx_tenant_headers[NGX_TENANT_H_REQUEST_ID],
                                 id->data, id->len)
           != NGX_OK
        || ngx_tenant_header_add(r,
                                 &ngx_tenant_headers[NGX_TENANT_H_SIGNATURE],
                                 sig, sizeof(sig))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The request target the upstream receives from "proxy_pass" without a
 * URI part, as ngx_http_proxy_create_request() of nginx 1.22 builds it:
 * the client's own target while no rewrite or internal redirect changed
 * the URI, else the URI, escaped when it was decoded or is internal, and
 * the arguments.  proxy_pass with a URI part ("proxy_pass http://b/v1/;")
 * replaces the location's prefix after the access phase, too late to be
 * signed: the README says how a backend verifies then.
 */

static ngx_int_t
ngx_tenant_headers_target(ngx_http_request_t *r, ngx_str_t *target)
{
    u_char     *p;
    size_t      len;
    uintptr_t   escape;

    if (r->valid_unparsed_uri && r == r->main) {
        *target = r->unparsed_uri;
        return NGX_OK;
    }

    escape = 0;

    if (r->quoted_uri || r->internal) {
        escape = 2 * ngx_escape_uri(NULL, r->uri.data, r->uri.len,
                                    NGX_ESCAPE_URI);
    }

    len = r->uri.len + escape + (r->args.len ? 1 + r->args.len : 0);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    target->data = p;
    target->len = len;

    if (escape) {
        (void) ngx_escape_uri(p, r->uri.data, r->uri.len, NGX_ESCAPE_URI);
        p += r->uri.len + escape;

    } else {
        p = ngx_cpymem(p, r->uri.data, r->uri.len);
    }

    if (r->args.len) {
        *p++ = '?';
        ngx_memcpy(p, r->args.data, r->args.len);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_header_add(ngx_http_request_t *r, ngx_tenant_header_t *th,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = th->name;
    h->lowcase_key = th->lowcase.data;
    h->hash = th->hash;

    h->value.data = ngx_pnalloc(r->pool, len);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(h->value.data, value, len);
    h->value.len = len;

    return NGX_OK;
}


/* names are case-insensitive, as ngx_http_get_variable_index() reads them */

ngx_uint_t
ngx_tenant_variable_is_own(ngx_str_t *name)
{
    ngx_http_variable_t  *v;

    for (v = ngx_tenant_vars; v->name.len; v++) {
        if (v->name.len == name->len
            && ngx_strncasecmp(v->name.data, name->data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_tenant_variables_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_tenant_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                 *p, *e;
    size_t                  len;
    uintptr_t               n;
    ngx_tenant_ctx_t       *ctx;
    ngx_tenant_loc_conf_t  *tlcf;

    ctx = ngx_tenant_get_ctx(r->main);

    p = NULL;
    len = 0;

    if (data == NGX_TENANT_VAR_FEATURE) {
        /* the feature refused (maybe a route's), else the location's */

        if (ctx && ctx->feature.len) {
            p = ctx->feature.data;
            len = ctx->feature.len;

        } else {
            tlcf = ngx_http_get_module_loc_conf(r, ngx_tenant_module);
            p = tlcf->feature_name.data;
            len = tlcf->feature_name.len;
        }

    } else if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_TENANT_VAR_ID:
        p = ctx->tenant.id;
        len = ctx->has_tenant ? ctx->tenant.id_len : 0;
        break;

    case NGX_TENANT_VAR_SLUG:
        p = ctx->tenant.slug;
        len = ctx->has_tenant ? ctx->tenant.slug_len : 0;
        break;

    case NGX_TENANT_VAR_SCHEMA:
        p = ctx->tenant.schema;
        len = ctx->has_tenant ? ctx->tenant.schema_len : 0;
        break;

    case NGX_TENANT_VAR_TIER:
        p = ctx->tenant.tier;
        len = ctx->has_tenant ? ctx->tenant.tier_len : 0;
        break;

    case NGX_TENANT_VAR_STATUS:
        p = ctx->tenant.status;
        len = ctx->has_tenant ? ctx->tenant.status_len : 0;
        break;

    case NGX_TENANT_VAR_ORG_ID:
        p = ctx->org_id;
        len = ctx->org_id_len;
        break;

    case NGX_TENANT_VAR_USER_ID:
        p = (u_char *) ctx->claims.sub;
        len = ctx->claims.sub_len;
        break;

    case NGX_TENANT_VAR_ORG_ROLE:
        p = (u_char *) ctx->claims.org_role;
        len = ctx->claims.org_role_len;
        break;

    case NGX_TENANT_VAR_OUTCOME:
        p = ctx->outcome.data;
        len = ctx->outcome.len;
        break;

    case NGX_TENANT_VAR_REQUIRED_TIER:
        p = ctx->required_tier.data;
        len = ctx->required_tier.len;
        break;

    case NGX_TENANT_VAR_RL_LIMIT:
    case NGX_TENANT_VAR_RL_REMAINING:

        if (!ctx->rl_set) {
            break;
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        len = ngx_sprintf(p, "%uL", data == NGX_TENANT_VAR_RL_LIMIT
                                    ? ctx->rl_rate.limit
                                    : ctx->rl.remaining)
              - p;
        break;

    case NGX_TENANT_VAR_RL_SOURCE:
        p = ngx_tenant_ratelimit_source(ctx)->data;
        len = ngx_tenant_ratelimit_source(ctx)->len;
        break;

    default: /* NGX_TENANT_VAR_FEATURE */
        break;
    }

    if (len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* in tenant_upgrade_url: every byte but ALPHA DIGIT - . _ ~ escaped */

    if (ctx && ctx->url_escape) {
        n = ngx_escape_uri(NULL, p, len, NGX_ESCAPE_URI_COMPONENT);

        if (n) {
            e = ngx_pnalloc(r->pool, len + 2 * n);
            if (e == NULL) {
                return NGX_ERROR;
            }

            ngx_escape_uri(e, p, len, NGX_ESCAPE_URI_COMPONENT);

            p = e;
            len += 2 * n;
        }
    }

    v->data = p;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
