/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The admin API (tenant_admin), behind "tenant_gateway admin" (a verified
 * token whose metadata.role is tenant_admin_role):
 *
 *   POST   /api/admin/tenants                 create (201, Location; 200
 *                                             for a retry that finds
 *                                             the same tenant)
 *   GET    /api/admin/tenants?limit=&after=   list, keyset by slug
 *   GET    /api/admin/tenants/{id-or-slug}    one
 *   PATCH  /api/admin/tenants/{id-or-slug}    tier, status, trial end,
 *                                             rate-limit override
 *   DELETE /api/admin/tenants/{id-or-slug}    cancel; ?purge=true drops
 *                                             the schema and the row
 *                                             (&force=true: and objects
 *                                             outside that depend on it)
 *
 * The token comes from Authorization only (never the __session cookie,
 * which a browser sends with requests other sites make it send), a
 * foreign Origin is refused and bodies must be application/json
 * (ngx_tenant_headers_same_origin()).
 *
 * Bodies are validated (src/tenant_admin.c) before any SQL; each change is
 * one statement (so one transaction) with its audit row, and the tenant's
 * cached row is dropped at once.
 *
 * Allocation failures answer 500 before any statement is sent; tests do
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
#include "tenant_admin.h"
#include "tenant_json.h"


#define NGX_TENANT_ADMIN_BODY_MAX   65536
#define NGX_TENANT_ADMIN_LIST_MAX   100


#define NGX_TENANT_ADMIN_TS(col)                                            \
    " to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* the tenant as the API shows it, text columns in this order */
#define NGX_TENANT_ADMIN_COLS                                               \
    " t.id::text, t.name, t.slug, t.schema_name, t.clerk_organization_id,"  \
    " t.subscription_tier, t.subscription_status,"                          \
    " coalesce(" NGX_TENANT_ADMIN_TS("t.trial_ends_at") ", ''),"           \
    " t.owner_email, coalesce(t.rate_limit_override::text, ''),"            \
    NGX_TENANT_ADMIN_TS("t.created_at") ","                                 \
    NGX_TENANT_ADMIN_TS("t.updated_at")

#define NGX_TENANT_ADMIN_NCOLS      12
#define NGX_TENANT_ADMIN_COL_ORG    4

/* a purge's columns after the tenant's: its report (jsonb), the schema,
 * whether it existed, the objects outside it dropped with it (json) */
#define NGX_TENANT_ADMIN_COL_PURGED   NGX_TENANT_ADMIN_NCOLS
#define NGX_TENANT_ADMIN_PURGE_NCOLS  (NGX_TENANT_ADMIN_NCOLS + 4)

/*
 * The writes are functions of migrations/005: each runs under a
 * lock_timeout a little under the pool's timeout (the last parameter), so
 * a write the gateway gives up on while it waits for a lock rolls back
 * instead of committing later.
 */

/*
 * A create also says whether it created the tenant (the last column): a
 * retry of a create that committed gets the tenant, not a conflict
 * (migrations/006).
 */

static const char  ngx_tenant_admin_create_sql[] =
    "SELECT" NGX_TENANT_ADMIN_COLS ", c.created::text"
    " FROM public.admin_create_tenant_once($1, $2, $3, $4, $5, $6::integer,"
    " $7, $8::jsonb, $9::integer) c CROSS JOIN LATERAL"
    " (SELECT (c.tenant).*) t";

static const char  ngx_tenant_admin_get_sql[] =
    "SELECT" NGX_TENANT_ADMIN_COLS " FROM public.tenants t"
    " WHERE CASE WHEN public.admin_tenant_id($1) IS NOT NULL"
    " THEN t.id = public.admin_tenant_id($1) ELSE t.slug = $1 END";

static const char  ngx_tenant_admin_list_sql[] =
    "SELECT" NGX_TENANT_ADMIN_COLS " FROM public.tenants t"
    " WHERE t.slug > $1 ORDER BY t.slug LIMIT $2::integer";

static const char  ngx_tenant_admin_patch_sql[] =
    "SELECT" NGX_TENANT_ADMIN_COLS " FROM public.admin_update_tenant($1, $2,"
    " $3, $4, $5, $6, $7::jsonb, $8::integer) t";

static const char  ngx_tenant_admin_cancel_sql[] =
    "SELECT" NGX_TENANT_ADMIN_COLS " FROM public.admin_delete_tenant($1,"
    " false, $2, $3::integer) t";

/* migrations/006: only the schema the slug maps to; refused (nothing
 * dropped) when objects outside it depend on it, unless $4 (force) */

static const char  ngx_tenant_admin_purge_sql[] =
    "SELECT" NGX_TENANT_ADMIN_COLS ", p.purged::text,"
    " p.purged->>'schemaName', p.purged->>'schemaExisted',"
    " (p.purged->'dependentsDropped')::text"
    " FROM public.admin_purge_tenant($1, $4::boolean, $2, $3::integer) p,"
    " LATERAL (SELECT (p.tenant).*) t";


typedef enum {
    NGX_TENANT_ADMIN_CREATE = 0,
    NGX_TENANT_ADMIN_GET,
    NGX_TENANT_ADMIN_LIST,
    NGX_TENANT_ADMIN_PATCH,
    NGX_TENANT_ADMIN_DELETE
} ngx_tenant_admin_op_e;


typedef struct {
    ngx_tenant_content_t      content;        /* the statement */
    ngx_tenant_admin_op_e     op;
    ngx_str_t                 ident;          /* id or slug */
    ngx_uint_t                limit;
    unsigned                  purge:1;
    unsigned                  force:1;

    tenant_admin_create_t     create;
    tenant_admin_patch_t      patch;
    u_char                   *body;           /* NUL-terminated */
    size_t                    body_len;
    u_char                    param[3][32];
    u_char                    lock_ms[NGX_INT_T_LEN + 1];
} ngx_tenant_admin_ctx_t;


static ngx_int_t ngx_tenant_admin_handler(ngx_http_request_t *r);
static void ngx_tenant_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_tenant_admin_run(ngx_http_request_t *r,
    ngx_tenant_admin_ctx_t *ctx, ngx_uint_t hold);
static ngx_int_t ngx_tenant_admin_answer(ngx_http_request_t *r,
    void *data, PGresult *res);
static u_char *ngx_tenant_admin_row(u_char *p, PGresult *res, int row);
static size_t ngx_tenant_admin_row_len(PGresult *res, int row);
static ngx_int_t ngx_tenant_admin_problem(ngx_http_request_t *r,
    ngx_uint_t status, char *code, char *title, char *detail,
    tenant_admin_errors_t *errs, char *field);
static ngx_int_t ngx_tenant_admin_purge_refused(ngx_http_request_t *r,
    ngx_tenant_admin_ctx_t *ctx, PGresult *res, char *state);
static void ngx_tenant_admin_purge_log(ngx_http_request_t *r,
    PGresult *res);


static const char  *ngx_tenant_admin_names[NGX_TENANT_ADMIN_NCOLS] = {
    "id", "name", "slug", "schemaName", "clerkOrganizationId",
    "subscriptionTier", "subscriptionStatus", "trialEndsAt", "ownerEmail",
    "rateLimitOverride", "createdAt", "updatedAt"
};


char *
ngx_tenant_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_tenant_admin_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_tenant_admin_handler(ngx_http_request_t *r)
{
    u_char                    *p, *last;
    ngx_int_t                  rc, n;
    ngx_str_t                  arg;
    ngx_tenant_ctx_t          *tctx;
    ngx_tenant_admin_ctx_t    *ctx;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_tenant_main_conf_t    *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    tctx = ngx_http_get_module_ctx(r, ngx_tenant_module);

    /* without tenant_database nothing here can work: the server's
     * configuration, not the client, is at fault (as for the cron job) */

    if (tmcf->pg == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: tenant_admin needs tenant_database");
        return ngx_tenant_admin_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "admin_unavailable",
                                        "The admin API is not configured",
                                        NULL, NULL, NULL);
    }

    /* the access phase ("tenant_gateway admin") admitted an admin */

    if (tctx == NULL || !tctx->admin) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: tenant_admin needs \"tenant_gateway admin\" "
                      "in its location");
        return ngx_tenant_admin_problem(r, NGX_HTTP_FORBIDDEN,
                                        "admin_required",
                                        "Administrator token required",
                                        NULL, NULL, NULL);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_tenant_admin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the URI after the location's name: "" or "/<id-or-slug>" */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data + ngx_min(clcf->name.len, r->uri.len);
    last = r->uri.data + r->uri.len;

    if (p < last) {
        if (*p != '/') {
            return ngx_tenant_admin_problem(r, NGX_HTTP_NOT_FOUND,
                                            "not_found", "No such tenant",
                                            NULL, NULL, NULL);
        }

        p++;
    }

    ctx->ident.data = p;
    ctx->ident.len = last - p;

    if (ctx->ident.len
        && (ctx->ident.len > 64
            || ngx_strlchr(ctx->ident.data, last, '/') != NULL))
    {
        return ngx_tenant_admin_problem(r, NGX_HTTP_NOT_FOUND, "not_found",
                                        "No such tenant", NULL, NULL, NULL);
    }

    switch (r->method) {

    case NGX_HTTP_POST:
        if (ctx->ident.len) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        ctx->op = NGX_TENANT_ADMIN_CREATE;
        break;

    case NGX_HTTP_GET:
        ctx->op = ctx->ident.len ? NGX_TENANT_ADMIN_GET
                                 : NGX_TENANT_ADMIN_LIST;
        break;

    case NGX_HTTP_PATCH:
    case NGX_HTTP_DELETE:
        if (ctx->ident.len == 0) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        ctx->op = (r->method == NGX_HTTP_PATCH) ? NGX_TENANT_ADMIN_PATCH
                                                : NGX_TENANT_ADMIN_DELETE;
        break;

    default:
        return NGX_HTTP_NOT_ALLOWED;
    }

    /* no request another site's page could have made; JSON bodies only */

    rc = ngx_tenant_headers_same_origin(r,
                                        ctx->op == NGX_TENANT_ADMIN_CREATE
                                        || ctx->op == NGX_TENANT_ADMIN_PATCH);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ctx->op == NGX_TENANT_ADMIN_LIST) {
        ctx->limit = 20;

        if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
            n = ngx_atoi(arg.data, arg.len);

            if (n <= 0 || n > NGX_TENANT_ADMIN_LIST_MAX) {
                return ngx_tenant_admin_problem(r, NGX_HTTP_BAD_REQUEST,
                           "invalid_request", "Invalid parameter",
                           "limit must be an integer from 1 to 100",
                           NULL, "limit");
            }

            ctx->limit = n;
        }

        ngx_str_null(&ctx->ident);

        if (ngx_http_arg(r, (u_char *) "after", 5, &arg) == NGX_OK) {
            if (arg.len > 63 || !tenant_org_id_valid(arg.data, arg.len)) {
                return ngx_tenant_admin_problem(r, NGX_HTTP_BAD_REQUEST,
                           "invalid_request", "Invalid parameter",
                           "after must be a slug", NULL, "after");
            }

            ctx->ident = arg;
        }
    }

    if (ctx->op == NGX_TENANT_ADMIN_DELETE
        && ngx_http_arg(r, (u_char *) "purge", 5, &arg) == NGX_OK
        && arg.len == 4 && ngx_strncmp(arg.data, "true", 4) == 0)
    {
        ctx->purge = 1;

        if (ngx_http_arg(r, (u_char *) "force", 5, &arg) == NGX_OK
            && arg.len == 4 && ngx_strncmp(arg.data, "true", 4) == 0)
        {
            ctx->force = 1;
        }
    }

    tctx->admin_ctx = ctx;

    if (ctx->op == NGX_TENANT_ADMIN_CREATE
        || ctx->op == NGX_TENANT_ADMIN_PATCH)
    {
        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r, ngx_tenant_admin_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_tenant_admin_run(r, ctx, 1);
}


static void
ngx_tenant_admin_body(ngx_http_request_t *r)
{
    u_char                  *p;
    size_t                   len;
    ngx_int_t                rc;
    ngx_chain_t             *cl;
    ngx_tenant_ctx_t        *tctx;
    tenant_admin_errors_t    errs;
    ngx_tenant_admin_ctx_t  *ctx;
    ngx_tenant_main_conf_t  *tmcf;

    tctx = ngx_http_get_module_ctx(r, ngx_tenant_module);
    ctx = tctx->admin_ctx;
    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    /* tenant bodies are small: one in a temporary file is refused, which
     * also keeps file reads off the worker (r->request_body is never NULL
     * here: ngx_http_read_client_request_body() allocated it) */

    if (r->request_body == NULL || r->request_body->temp_file) {
        rc = ngx_tenant_admin_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                 "body_too_large", "Request body too large",
                 "the body must fit client_body_buffer_size", NULL, "body");
        ngx_http_finalize_request(r, rc);
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    if (len > NGX_TENANT_ADMIN_BODY_MAX) {
        rc = ngx_tenant_admin_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                 "body_too_large", "Request body too large",
                 "at most 64 KB", NULL, "body");
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx->body = ngx_pnalloc(r->pool, len + 1);
    if (ctx->body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ctx->body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    *p = '\0';
    ctx->body_len = len;

    ngx_memzero(&errs, sizeof(tenant_admin_errors_t));

    if (ctx->op == NGX_TENANT_ADMIN_CREATE) {
        rc = tenant_admin_parse_create(ctx->body, len, tmcf->tiers,
                                       &ctx->create, &errs);
    } else {
        rc = tenant_admin_parse_patch(ctx->body, len, tmcf->tiers,
                                      &ctx->patch, &errs);
    }

    if (rc != 0) {
        rc = ngx_tenant_admin_problem(r, NGX_HTTP_BAD_REQUEST,
                                      "validation_failed",
                                      "Invalid request body", NULL, &errs,
                                      NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* the reference ngx_http_read_client_request_body() took is the
     * query's: its answer finalizes the request */

    rc = ngx_tenant_admin_run(r, ctx, 0);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * Sends the statement: NGX_DONE, or a status to answer at once.  hold: the
 * request needs a reference of its own while it waits (a content handler
 * that returns NGX_DONE), not when reading the body already took one.
 */

static ngx_int_t
ngx_tenant_admin_run(ngx_http_request_t *r, ngx_tenant_admin_ctx_t *ctx,
    ngx_uint_t hold)
{
    ngx_tenant_ctx_t        *tctx;
    ngx_tenant_pg_req_t     *q;
    ngx_tenant_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    tctx = ngx_http_get_module_ctx(r, ngx_tenant_module);

    ctx->content.answer = ngx_tenant_admin_answer;
    ctx->content.data = ctx;

    q = &ctx->content.query;

    /* a write waits for locks a little less long than the pool for it */

    ngx_sprintf(ctx->lock_ms, "%M%Z",
                tmcf->db_timeout > 1000 ? tmcf->db_timeout - 500
                                        : tmcf->db_timeout / 2);

    /* the ident and the admin's sub are NUL-terminated copies */

    switch (ctx->op) {

    case NGX_TENANT_ADMIN_CREATE:
        ngx_sprintf(ctx->param[0], "%d%Z", ctx->create.trial_days);

        q->sql = ngx_tenant_admin_create_sql;
        q->nparams = 9;
        q->values[8] = (char *) ctx->lock_ms;
        q->values[0] = ctx->create.name;
        q->values[1] = ctx->create.slug;
        q->values[2] = ctx->create.org_id;
        q->values[3] = ctx->create.tier;
        q->values[4] = ctx->create.email;
        q->values[5] = (char *) ctx->param[0];
        q->values[6] = tctx->claims.sub;
        q->values[7] = (char *) ctx->body;
        break;

    case NGX_TENANT_ADMIN_GET:
        q->sql = ngx_tenant_admin_get_sql;
        q->nparams = 1;
        q->resend = 1;
        break;

    case NGX_TENANT_ADMIN_LIST:
        /* one more than asked: whether there is a next page */
        ngx_sprintf(ctx->param[0], "%ui%Z", ctx->limit + 1);

        q->sql = ngx_tenant_admin_list_sql;
        q->nparams = 2;
        q->values[1] = (char *) ctx->param[0];
        q->resend = 1;
        break;

    case NGX_TENANT_ADMIN_PATCH:
        if (ctx->patch.has_rate_limit && ctx->patch.rate_limit >= 0) {
            ngx_sprintf(ctx->param[1], "%L%Z", ctx->patch.rate_limit);
        } else {
            ngx_sprintf(ctx->param[1], "%s%Z",
                        ctx->patch.has_rate_limit ? "" : "keep");
        }

        q->sql = ngx_tenant_admin_patch_sql;
        q->nparams = 8;
        q->values[7] = (char *) ctx->lock_ms;
        q->values[1] = ctx->patch.has_tier ? ctx->patch.tier : NULL;
        q->values[2] = ctx->patch.has_status ? ctx->patch.status : NULL;
        q->values[3] = ctx->patch.has_trial_ends_at
                       ? ctx->patch.trial_ends_at : "keep";
        q->values[4] = (char *) ctx->param[1];
        q->values[5] = tctx->claims.sub;
        q->values[6] = (char *) ctx->body;
        break;

    default: /* NGX_TENANT_ADMIN_DELETE */
        q->sql = ctx->purge ? ngx_tenant_admin_purge_sql
                            : ngx_tenant_admin_cancel_sql;
        q->nparams = ctx->purge ? 4 : 3;
        q->values[1] = tctx->claims.sub;
        q->values[2] = (char *) ctx->lock_ms;
        q->values[3] = ctx->force ? "true" : "false";
        break;
    }

    if (ctx->op != NGX_TENANT_ADMIN_CREATE) {
        q->values[0] = (char *) ngx_pnalloc(r->pool, ctx->ident.len + 1);
        if (q->values[0] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *ngx_cpymem((u_char *) q->values[0], ctx->ident.data,
                    ctx->ident.len) = '\0';
    }

    return ngx_tenant_content_query(r, tmcf->pg, &ctx->content, hold);
}


static ngx_int_t
ngx_tenant_admin_answer(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_tenant_admin_ctx_t  *ctx = data;

    int                      i, n, rows;
    char                    *state, *constraint, *v;
    u_char                  *body, *p, *loc;
    size_t                   len;
    ngx_uint_t               status, level;
    ngx_tenant_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {

        /* state is NULL only in a result libpq makes itself (a lost
         * connection), which the pool passes on as res == NULL */

        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

        if (state && (ngx_strcmp(state, "42P06") == 0
                      || (ngx_strcmp(state, "23505") == 0 && constraint
                          && ngx_strstr(constraint, "schema_name") != NULL)))
        {
            /*
             * The slug's schema exists: left over without a row (GET
             * says 404: not "slug exists"), or another tenant's, whose
             * long slug maps to the same hashed name.
             */

            return ngx_tenant_admin_problem(r, NGX_HTTP_CONFLICT,
                       "schema_exists", "Tenant schema exists",
                       state[0] == '4'
                       ? "no tenant has this slug, but a schema of the name"
                         " it maps to exists (left over): drop or rename"
                         " that schema, or choose another slug"
                       : "the slug maps to the schema name of another"
                         " tenant (long slugs are shortened with a hash):"
                         " choose another slug",
                       NULL, "slug");
        }

        if (state && ngx_strcmp(state, "23505") == 0) {
            /* unique violation: the slug or the organization */
            v = (constraint
                 && ngx_strstr(constraint, "clerk_organization") != NULL)
                ? "clerkOrganizationId" : "slug";

            return ngx_tenant_admin_problem(r, NGX_HTTP_CONFLICT,
                       "conflict", "Tenant already exists",
                       ngx_strcmp(v, "slug") == 0
                       ? "a tenant with this slug exists"
                       : "a tenant of this organization exists",
                       NULL, v);
        }

        if (ctx->purge && state && (ngx_strcmp(state, "55000") == 0
                                    || ngx_strcmp(state, "2BP01") == 0))
        {
            return ngx_tenant_admin_purge_refused(r, ctx, res, state);
        }

        if (state && state[0] == '2' && (state[1] == '2' || state[1] == '3')) {

            /*
             * Data exceptions (a timestamp out of range, ...), and other
             * integrity violations (a CHECK the body's validation let
             * through, which is worth a warning): the client's value.
             */

            level = (state[1] == '3') ? NGX_LOG_WARN : NGX_LOG_INFO;

            ngx_log_error(level, r->connection->log, 0,
                          "tenant: admin statement refused a value: %s %s",
                          state,
                          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));

            return ngx_tenant_admin_problem(r, NGX_HTTP_BAD_REQUEST,
                       "validation_failed", "Invalid request body",
                       "the database refused a value", NULL, NULL);
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tenant: admin statement failed: %s %s",
                      state ? state : "", PQresStatus(PQresultStatus(res)));

        return ngx_tenant_admin_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "tenant_unavailable",
                                        "Tenant directory unavailable",
                                        NULL, NULL, NULL);
    }

    /* the column list is fixed: defensive, against a query edited
     * without ngx_tenant_admin_names[] */

    if (PQnfields(res) != (ctx->purge ? NGX_TENANT_ADMIN_PURGE_NCOLS
                                      : NGX_TENANT_ADMIN_NCOLS
                                        + (ctx->op == NGX_TENANT_ADMIN_CREATE)))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rows = PQntuples(res);

    if (ctx->op != NGX_TENANT_ADMIN_LIST && rows == 0) {
        return ngx_tenant_admin_problem(r, NGX_HTTP_NOT_FOUND, "not_found",
                                        "No such tenant", NULL, NULL, NULL);
    }


    /* a changed row, or a new one that was a negative entry: no worker
     * may serve what it cached (tenant_cache is always set: tenant_admin
     * needs a gateway, which needs tenant_cache) */

    if (tmcf->tenant_cache && ctx->op != NGX_TENANT_ADMIN_GET
        && ctx->op != NGX_TENANT_ADMIN_LIST)
    {
        v = PQgetvalue(res, 0, NGX_TENANT_ADMIN_COL_ORG);
        ngx_tenant_lookup_invalidate(tmcf, (u_char *) v, ngx_strlen(v));
    }

    n = (ctx->op == NGX_TENANT_ADMIN_LIST)
        ? ngx_min(rows, (int) ctx->limit) : 1;

    len = sizeof("{\"tenants\":[],\"next\":\"\"}") + 64;

    for (i = 0; i < n; i++) {
        len += ngx_tenant_admin_row_len(res, i) + 1;
    }

    if (ctx->purge) {
        len += sizeof(",\"purged\":")
               + PQgetlength(res, 0, NGX_TENANT_ADMIN_COL_PURGED);
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = body;

    if (ctx->op == NGX_TENANT_ADMIN_LIST) {
        p = ngx_cpymem(p, "{\"tenants\":[", sizeof("{\"tenants\":[") - 1);

        for (i = 0; i < n; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_tenant_admin_row(p, res, i);
        }

        if (rows > n) {
            v = PQgetvalue(res, n - 1, 2);
            p = ngx_cpymem(p, "],\"next\":\"", sizeof("],\"next\":\"") - 1);
            p += tenant_json_escape((char *) p, v, ngx_strlen(v));
            p = ngx_cpymem(p, "\"}", 2);

        } else {
            p = ngx_cpymem(p, "],\"next\":null}",
                           sizeof("],\"next\":null}") - 1);
        }

    } else {
        p = ngx_tenant_admin_row(p, res, 0);
    }

    if (ctx->purge) {

        /* the tenant as it was, and what was dropped: the report is
         * jsonb, so its text is valid JSON */

        p--;
        p = ngx_cpymem(p, ",\"purged\":", sizeof(",\"purged\":") - 1);
        p = ngx_cpymem(p, PQgetvalue(res, 0, NGX_TENANT_ADMIN_COL_PURGED),
                       PQgetlength(res, 0, NGX_TENANT_ADMIN_COL_PURGED));
        *p++ = '}';

        ngx_tenant_admin_purge_log(r, res);
    }

    status = NGX_HTTP_OK;

    if (ctx->op == NGX_TENANT_ADMIN_CREATE) {

        /* 200 for a retry that found the tenant made by an earlier one */

        v = PQgetvalue(res, 0, NGX_TENANT_ADMIN_NCOLS);
        status = (v[0] == 't') ? NGX_HTTP_CREATED : NGX_HTTP_OK;

        /*
         * Location: the collection's URI and the new id, relative (RFC
         * 9110, 10.2.2).  Not r->headers_out.location, which nginx's
         * header filter would make absolute from the connection's scheme
         * and the listening port: http://host:10000/... behind a TLS proxy.
         */

        v = PQgetvalue(res, 0, 0);
        n = r->uri.len;

        while (n && r->uri.data[n - 1] == '/') {
            n--;
        }

        len = n + 1 + ngx_strlen(v);

        loc = ngx_pnalloc(r->pool, len);
        if (loc == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(loc, "%*s/%s", (size_t) n, r->uri.data, v);

        if (ngx_tenant_header_out(r, "Location", loc, len) == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_tenant_json_send(r, status, body, p - body);
}


static size_t
ngx_tenant_admin_row_len(PGresult *res, int row)
{
    int     j;
    size_t  len;

    len = sizeof("{}");

    for (j = 0; j < NGX_TENANT_ADMIN_NCOLS; j++) {
        len += sizeof(",\"\":\"\"") + ngx_strlen(ngx_tenant_admin_names[j])
               + tenant_json_escape(NULL, PQgetvalue(res, row, j),
                                    PQgetlength(res, row, j));
    }

    return len;
}


/* A tenant: strings, null for an empty trialEndsAt or override. */

static u_char *
ngx_tenant_admin_row(u_char *p, PGresult *res, int row)
{
    int     j, len;
    char   *v;

    *p++ = '{';

    for (j = 0; j < NGX_TENANT_ADMIN_NCOLS; j++) {
        v = PQgetvalue(res, row, j);
        len = PQgetlength(res, row, j);

        p = ngx_sprintf(p, "%s\"%s\":", j ? "," : "",
                        ngx_tenant_admin_names[j]);

        /* only these two columns can be NULL (the schema's NOT NULLs) */

        if (len == 0 && (j == 7 || j == 9)) {
            p = ngx_cpymem(p, "null", 4);
            continue;
        }

        if (j == 9) {
            /* rateLimitOverride: an integer from the database */
            p = ngx_cpymem(p, v, len);
            continue;
        }

        *p++ = '"';
        p += tenant_json_escape((char *) p, v, len);
        *p++ = '"';
    }

    *p++ = '}';

    return p;
}


static ngx_int_t
ngx_tenant_admin_problem(ngx_http_request_t *r, ngx_uint_t status,
    char *code, char *title, char *detail, tenant_admin_errors_t *errs,
    char *field)
{
    char              *json;
    size_t             len;
    tenant_problem_t   pb;

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    if (field) {
        pb.members[0].name = "field";
        pb.members[0].value = field;
        pb.members[0].value_len = ngx_strlen(field);
        pb.nmembers = 1;
    }

    /* callers pass errs only with errors in it */

    if (errs && errs->n) {
        len = tenant_admin_errors_json(NULL, errs);

        json = ngx_pnalloc(r->pool, len);
        if (json == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        (void) tenant_admin_errors_json(json, errs);

        pb.members[pb.nmembers].name = "errors";
        pb.members[pb.nmembers].value = json;
        pb.members[pb.nmembers].value_len = len;
        pb.members[pb.nmembers].raw = 1;
        pb.nmembers++;
    }

    return ngx_tenant_problem_answer(r, &pb, status, code, title, detail);
}


/*
 * A purge that migrations/006 refused, nothing dropped.  55000: the row
 * names another schema than its slug maps to, or another tenant's slug
 * maps to it as well (rows edited by hand: fix them).  2BP01: objects
 * outside the schema depend on it, their descriptions a JSON array in the
 * error's DETAIL (drop them, or purge with force=true).
 */

static ngx_int_t
ngx_tenant_admin_purge_refused(ngx_http_request_t *r,
    ngx_tenant_admin_ctx_t *ctx, PGresult *res, char *state)
{
    char              *msg, *deps;
    size_t             i;
    json_t            *list;
    ngx_uint_t         valid;
    json_error_t       e;
    tenant_problem_t   pb;

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (state[0] == '5') {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "tenant: purge of \"%V\" refused: %s",
                      &ctx->ident, msg ? msg : "");

        return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_CONFLICT,
                                         "schema_mismatch",
                                         "Tenant schema mismatch", msg);
    }

    /* the list goes out as is only when it is the array of strings the
     * function puts there */

    deps = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);

    list = deps ? tenant_json_loadb(deps, ngx_strlen(deps), 0, &e) : NULL;
    valid = json_is_array(list);

    for (i = 0; valid && i < json_array_size(list); i++) {
        valid = json_is_string(json_array_get(list, i));
    }

    json_decref(list);

    if (valid) {
        pb.members[0].name = "dependents";
        pb.members[0].value = deps;
        pb.members[0].value_len = ngx_strlen(deps);
        pb.members[0].raw = 1;
        pb.nmembers = 1;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "tenant: purge of \"%V\" refused: %s: %s",
                  &ctx->ident, msg ? msg : "", valid ? deps : "");

    return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_CONFLICT,
                                     "schema_has_dependents",
                                     "Objects outside the schema depend on it",
                                     msg);
}


/* What a purge dropped, for the operator (the audit row has it too). */

static void
ngx_tenant_admin_purge_log(ngx_http_request_t *r, PGresult *res)
{
    char              *id, *slug, *schema, *deps;
    ngx_tenant_ctx_t  *tctx;

    tctx = ngx_http_get_module_ctx(r, ngx_tenant_module);

    id = PQgetvalue(res, 0, 0);
    slug = PQgetvalue(res, 0, 2);
    schema = PQgetvalue(res, 0, NGX_TENANT_ADMIN_COL_PURGED + 1);
    deps = PQgetvalue(res, 0, NGX_TENANT_ADMIN_COL_PURGED + 3);

    if (PQgetvalue(res, 0, NGX_TENANT_ADMIN_COL_PURGED + 2)[0] != 't') {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "tenant: purged tenant \"%s\" (%s) for %s: its row;"
                      " its schema \"%s\" did not exist",
                      slug, id, tctx->claims.sub, schema);
        return;
    }

    if (ngx_strcmp(deps, "[]") == 0) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "tenant: purged tenant \"%s\" (%s) for %s: its row"
                      " and schema \"%s\"",
                      slug, id, tctx->claims.sub, schema);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "tenant: purged tenant \"%s\" (%s) for %s with force:"
                  " its row, schema \"%s\" and the objects outside it that"
                  " depended on it: %s",
                  slug, id, tctx->claims.sub, schema, deps);
}
