/*
 * Copyright (C) ngx_tenant_module authors
 *
 * POST /api/cron/expire-trials (tenant_cron_expire_trials), the trial
 * expiration job of the deployment guide, called by a Render cron job
 * with "Authorization: Bearer $CRON_SECRET" (no Origin but its own, no
 * Content-Type but application/json): every trial past
 * trial_ends_at becomes "expired" in one statement
 * (public.expire_trials(), migrations/004), with an audit row each; the
 * answer lists them, and their cached rows are dropped at once.  Running
 * it twice is harmless.
 *
 * Allocation failures answer 500 before the statement is sent; tests do
 * not provoke them (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"
#include "ngx_tenant_pg.h"
#include "ngx_tenant_content.h"


static ngx_int_t ngx_tenant_cron_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_tenant_cron_authorized(ngx_http_request_t *r,
    u_char *digest);
static ngx_int_t ngx_tenant_cron_done(ngx_http_request_t *r, void *data,
    PGresult *res);
static ngx_int_t ngx_tenant_cron_answer(ngx_http_request_t *r,
    PGresult *res);
static ngx_int_t ngx_tenant_cron_refuse(ngx_http_request_t *r,
    ngx_uint_t status, char *code, char *title);


static const char  ngx_tenant_cron_sql[] =
    "SELECT id::text, slug, clerk_organization_id,"
    " to_char(trial_ends_at AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    " FROM public.expire_trials('cron')";


char *
ngx_tenant_cron_expire_trials(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_tenant_cron_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_tenant_cron_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_tenant_content_t    *cq;
    ngx_tenant_main_conf_t  *tmcf;

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    if (tmcf->pg == NULL || tmcf->cron_secret.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: tenant_cron_expire_trials needs "
                      "tenant_database and tenant_cron_secret");
        return ngx_tenant_cron_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "cron_unavailable",
                                      "The job is not configured");
    }

    rc = ngx_tenant_headers_same_origin(r, 0);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (!ngx_tenant_cron_authorized(r, tmcf->cron_digest)) {
        return ngx_tenant_cron_refuse(r, NGX_HTTP_UNAUTHORIZED,
                                      "unauthorized",
                                      "Bearer CRON_SECRET required");
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    cq = ngx_pcalloc(r->pool, sizeof(ngx_tenant_content_t));
    if (cq == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cq->answer = ngx_tenant_cron_done;
    cq->query.sql = ngx_tenant_cron_sql;
    cq->query.resend = 1;                   /* expiring twice is harmless */

    return ngx_tenant_content_query(r, tmcf->pg, cq, 1);
}


/*
 * "Bearer <CRON_SECRET>", compared by SHA-256 digest in constant time:
 * the time depends on the token sent, never on the secret or its length.
 */

static ngx_uint_t
ngx_tenant_cron_authorized(ngx_http_request_t *r, u_char *digest)
{
    size_t                len;
    ngx_table_elt_t      *h;
    const unsigned char  *token;

    h = r->headers_in.authorization;

    if (h == NULL
        || tenant_bearer_token(h->value.data, h->value.len, &token, &len)
           != 0)
    {
        return 0;
    }

    return tenant_secret_matches(digest, token, len) == 1;
}


static ngx_int_t
ngx_tenant_cron_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    /* PQnfields() != 4 is defensive: the SELECT list is fixed */

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 4) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: expiring trials failed: %s",
                      PQresStatus(PQresultStatus(res)));

        return ngx_tenant_cron_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "tenant_unavailable",
                                      "Tenant directory unavailable");
    }

    return ngx_tenant_cron_answer(r, res);
}


/*
 * {"expired":N,"tenants":[{"id":"...","slug":"...","organizationId":
 * "...","trialEndsAt":"..."}, ...]}, and their cached rows dropped.
 */

static ngx_int_t
ngx_tenant_cron_answer(ngx_http_request_t *r, PGresult *res)
{
    int                      i, j, n;
    char                    *v;
    u_char                  *body, *p;
    size_t                   len;
    ngx_tenant_main_conf_t  *tmcf;

    static const char  *names[4] = {
        "id", "slug", "organizationId", "trialEndsAt"
    };

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    n = PQntuples(res);

    len = sizeof("{\"expired\":,\"tenants\":[]}") + NGX_INT_T_LEN;

    for (i = 0; i < n; i++) {
        len += sizeof("{},");

        for (j = 0; j < 4; j++) {
            len += sizeof("\"\":\"\",") + ngx_strlen(names[j])
                   + tenant_json_escape(NULL, PQgetvalue(res, i, j),
                                        PQgetlength(res, i, j));
        }
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"expired\":%d,\"tenants\":[", n);

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        *p++ = '{';

        for (j = 0; j < 4; j++) {
            v = PQgetvalue(res, i, j);

            p = ngx_sprintf(p, "%s\"%s\":\"", j ? "," : "", names[j]);
            p += tenant_json_escape((char *) p, v, PQgetlength(res, i, j));
            *p++ = '"';
        }

        *p++ = '}';

        /* the row changed: no worker may serve the old one */
        if (tmcf->tenant_cache) {
            v = PQgetvalue(res, i, 2);
            ngx_tenant_lookup_invalidate(tmcf, (u_char *) v, ngx_strlen(v));
        }
    }

    p = ngx_cpymem(p, "]}", 2);

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "tenant: %d trials expired", n);

    return ngx_tenant_json_send(r, NGX_HTTP_OK, body, p - body);
}


static ngx_int_t
ngx_tenant_cron_refuse(ngx_http_request_t *r, ngx_uint_t status, char *code,
    char *title)
{
    tenant_problem_t  pb;

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    return ngx_tenant_problem_answer(r, &pb, status, code, title, NULL);
}
