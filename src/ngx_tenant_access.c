/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The access phase: token -> organization -> tenant -> status -> feature
 * -> signed headers.  Re-entrant: while the tenant is looked up in
 * PostgreSQL the handler returns NGX_AGAIN and the query's completion
 * runs the phases again; the per-request ctx says where it stands.
 *
 * Allocation failures (request pool, SHA-256 context) answer 500 and are
 * not provoked by tests (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"


#define NGX_TENANT_RETRY_AFTER    "5"

#define NGX_TENANT_ADMIN_BEARER_DETAIL                                       \
    "the admin API takes its token from Authorization: Bearer only"

#define NGX_TENANT_ADMIN_SESSION_DETAIL                                      \
    "administrator rights are accepted from Clerk session tokens only "      \
    "(a token with a \"sid\" claim), not from JWT template tokens"


typedef struct {
    const char              *code;
    ngx_uint_t               status;
    const char              *title;
    ngx_tenant_outcome_e     outcome;
} ngx_tenant_refusal_t;



typedef enum {
    NGX_TENANT_R_TOKEN_MISSING = 0,
    NGX_TENANT_R_TOKEN_INVALID,
    NGX_TENANT_R_ORG_REQUIRED,
    NGX_TENANT_R_ORG_INVALID,
    NGX_TENANT_R_ORG_AMBIGUOUS,
    NGX_TENANT_R_ORG_MISMATCH,
    NGX_TENANT_R_UNKNOWN_ORG,
    NGX_TENANT_R_TRIAL_EXPIRED,
    NGX_TENANT_R_SUSPENDED,
    NGX_TENANT_R_FEATURE,
    NGX_TENANT_R_UNAVAILABLE,
    NGX_TENANT_R_RATE_LIMITED,
    NGX_TENANT_R_ADMIN_REQUIRED,
    NGX_TENANT_R_ADMIN_SESSION,
    NGX_TENANT_R_KEYS_UNAVAILABLE,
    NGX_TENANT_R_PATH_INVALID
} ngx_tenant_refusal_e;


static ngx_tenant_refusal_t  ngx_tenant_refusals[] = {
    { "authentication_required", NGX_HTTP_UNAUTHORIZED,
      "Authentication required", NGX_TENANT_OUT_UNAUTHORIZED },
    { "invalid_token", NGX_HTTP_UNAUTHORIZED,
      "Invalid session token", NGX_TENANT_OUT_UNAUTHORIZED },
    { "organization_required", NGX_HTTP_BAD_REQUEST,
      "Organization required", NGX_TENANT_OUT_BAD_REQUEST },
    { "invalid_organization", NGX_HTTP_BAD_REQUEST,
      "Invalid organization id", NGX_TENANT_OUT_BAD_REQUEST },
    { "ambiguous_organization", NGX_HTTP_BAD_REQUEST,
      "More than one organization id", NGX_TENANT_OUT_BAD_REQUEST },
    { "organization_mismatch", NGX_HTTP_FORBIDDEN,
      "Organization does not match the session", NGX_TENANT_OUT_FORBIDDEN },
    { "unknown_organization", NGX_HTTP_FORBIDDEN,
      "Unknown organization", NGX_TENANT_OUT_FORBIDDEN },
    { "trial_expired", 402,
      "Trial expired", NGX_TENANT_OUT_TRIAL_EXPIRED },
    { "tenant_suspended", NGX_HTTP_FORBIDDEN,
      "Tenant suspended", NGX_TENANT_OUT_FORBIDDEN },
    { "feature_not_available", NGX_HTTP_FORBIDDEN,
      "Feature not available on this plan", NGX_TENANT_OUT_FEATURE_DENIED },
    { "tenant_unavailable", NGX_HTTP_SERVICE_UNAVAILABLE,
      "Tenant directory unavailable", NGX_TENANT_OUT_UNAVAILABLE },
    { "rate_limited", NGX_HTTP_TOO_MANY_REQUESTS,
      "Too many requests", NGX_TENANT_OUT_RATE_LIMITED },
    { "admin_required", NGX_HTTP_FORBIDDEN,
      "Administrator token required", NGX_TENANT_OUT_FORBIDDEN },
    { "admin_session_required", NGX_HTTP_FORBIDDEN,
      "Administrator rights need a session token", NGX_TENANT_OUT_FORBIDDEN },
    { "keys_unavailable", NGX_HTTP_SERVICE_UNAVAILABLE,
      "Signing keys unavailable", NGX_TENANT_OUT_UNAVAILABLE },
    { "invalid_path", NGX_HTTP_BAD_REQUEST,
      "Invalid request path", NGX_TENANT_OUT_BAD_REQUEST }
};


static ngx_int_t ngx_tenant_access_start(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx);
static ngx_int_t ngx_tenant_access_verify(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx);
static ngx_int_t ngx_tenant_access_resolved(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx);
static ngx_int_t ngx_tenant_access_rated(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx);
static ngx_int_t ngx_tenant_access_admin(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx);
static ngx_int_t ngx_tenant_access_token(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx, tenant_jwt_status_t *status);
static ngx_int_t ngx_tenant_access_cookie(ngx_http_request_t *r,
    const u_char **token, size_t *len);
static ngx_uint_t ngx_tenant_is_preflight(ngx_http_request_t *r);
static ngx_int_t ngx_tenant_refuse(ngx_http_request_t *r,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx,
    ngx_tenant_refusal_e reason, const char *detail, size_t detail_len);
static ngx_int_t ngx_tenant_refuse_token(ngx_http_request_t *r,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx,
    tenant_jwt_status_t status);
static ngx_int_t ngx_tenant_refuse_upgrade(ngx_http_request_t *r,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx,
    ngx_tenant_refusal_e reason, ngx_str_t *feature,
    const tenant_tier_t *required);
static ngx_int_t ngx_tenant_access_routes(ngx_http_request_t *r,
    ngx_tenant_loc_conf_t *tlcf, const tenant_tier_t *tier, int *denied);
static ngx_int_t ngx_tenant_refuse_rate(ngx_http_request_t *r,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx);
static void ngx_tenant_ctx_cleanup(void *data);
static ngx_int_t ngx_tenant_send(ngx_http_request_t *r,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx,
    tenant_problem_t *p, ngx_tenant_refusal_e reason);
static ngx_int_t ngx_tenant_set_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);


ngx_int_t
ngx_tenant_access_handler(ngx_http_request_t *r)
{
    ngx_tenant_ctx_t        *ctx;
    ngx_pool_cleanup_t      *cln;
    ngx_tenant_loc_conf_t   *tlcf;
    ngx_tenant_main_conf_t  *tmcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tenant_module);

    if (tlcf->gateway == NGX_TENANT_GATEWAY_OFF) {
        return NGX_DECLINED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    ctx = ngx_http_get_module_ctx(r, ngx_tenant_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_tenant_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* found again by ngx_tenant_get_ctx() after an error_page */

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_tenant_ctx_cleanup;
        cln->data = ctx;

        /* until an answer replaces it: a 500 logs and counts "error" */

        ngx_str_set(&ctx->outcome, "error");
        ctx->outcome_id = NGX_TENANT_OUT_ERROR;

        ngx_http_set_ctx(r, ctx, ngx_tenant_module);

        return ngx_tenant_access_start(r, tmcf, tlcf, ctx);
    }

    switch (ctx->state) {

    case NGX_TENANT_STATE_WAIT_KEYS:
        if (ngx_tenant_jwks_waiting(r, tmcf, ctx) == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        ctx->state = NGX_TENANT_STATE_START;
        ctx->jwks_waited = 1;

        return ngx_tenant_access_verify(r, tmcf, tlcf, ctx);

    case NGX_TENANT_STATE_WAIT_DB:
        return NGX_AGAIN;

    case NGX_TENANT_STATE_RESOLVED:
        return ngx_tenant_access_resolved(r, tmcf, tlcf, ctx);

    case NGX_TENANT_STATE_WAIT_RATE:
        return NGX_AGAIN;

    case NGX_TENANT_STATE_RATED:
        return ngx_tenant_access_rated(r, tmcf, tlcf, ctx);

    /*
     * Not reached: DONE is set with the final answer (NGX_OK moves the
     * request to the next phase, anything else finalizes it) and nginx
     * does not call an access handler again after either; an internal
     * redirect clears the ctx.  Kept so that a future state cannot fall
     * through to an admission.
     */

    case NGX_TENANT_STATE_DONE:
        return NGX_OK;

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


/*
 * The request's ctx for variables, logs and metrics, also after an
 * internal redirect (error_page, named locations), which clears module
 * contexts: found again through its pool cleanup, as the realip module
 * does.  The access handler itself does not use this: a redirect to
 * another protected location is checked afresh.
 */

ngx_tenant_ctx_t *
ngx_tenant_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    if (ngx_http_get_module_ctx(r, ngx_tenant_module) != NULL) {
        return ngx_http_get_module_ctx(r, ngx_tenant_module);
    }

    /* an internal redirect and ngx_http_filter_finalize_request() (the
     * range filter's 416, for one) clear module contexts; a request that
     * went through neither still has its ctx, if it ever had one */

    if (!r->internal && !r->filter_finalize) {
        return NULL;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_tenant_ctx_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


static void
ngx_tenant_ctx_cleanup(void *data)
{
    ngx_tenant_ctx_t  *ctx = data;

    /* also marks the ctx for ngx_tenant_get_ctx() */

    if (ctx->rl_cmd) {
        /* the request went away with its Redis command out */
        ngx_tenant_ratelimit_cancel(ctx);
    }
}


static ngx_int_t
ngx_tenant_access_start(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx)
{
    /* what the client says, before its tenant headers are removed */

    ngx_tenant_headers_read_org(r, &ctx->org, &ctx->norg);

    if (ngx_tenant_headers_strip(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (tlcf->cors_preflight && ngx_tenant_is_preflight(r)) {
        /*
         * Answered here, with the location's add_header ... always
         * headers: an unauthenticated request never reaches the upstream.
         */
        ngx_str_set(&ctx->outcome, "preflight");
        ctx->outcome_id = NGX_TENANT_OUT_PREFLIGHT;
        ctx->state = NGX_TENANT_STATE_DONE;

        ngx_http_finalize_request(r,
                                  ngx_tenant_empty_send(r, NGX_HTTP_NO_CONTENT));
        return NGX_DONE;
    }

    return ngx_tenant_access_verify(r, tmcf, tlcf, ctx);
}


/*
 * The token, then the organization and the tenant.  Again after a wait
 * for keys: a kid that named no key is looked up once more.
 */

static ngx_int_t
ngx_tenant_access_verify(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx)
{
    uint32_t              policy;
    ngx_int_t             rc;
    ngx_str_t             org;
    ngx_uint_t            norg;
    tenant_keyset_t      *keys;
    tenant_jwt_status_t   status;

    org = ctx->org;
    norg = ctx->norg;

    rc = ngx_tenant_access_token(r, tmcf, tlcf, ctx, &status);

    if (rc == NGX_DECLINED && tlcf->gateway == NGX_TENANT_GATEWAY_ADMIN) {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_TOKEN_MISSING,
                                 NGX_TENANT_ADMIN_BEARER_DETAIL,
                                 sizeof(NGX_TENANT_ADMIN_BEARER_DETAIL) - 1);
    }

    if (rc == NGX_DECLINED) {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_TOKEN_MISSING,
                                 NULL, 0);
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (tmcf->jwks) {

        if (status == TENANT_JWT_OK) {
            /* past the TTL: a fetch in the background */
            ngx_tenant_jwks_refresh(r, tmcf);

        } else if (status == TENANT_JWT_UNKNOWN_KID) {

            if (!ctx->jwks_waited) {
                rc = ngx_tenant_jwks_wait(r, tmcf, ctx, 0);

                if (rc == NGX_AGAIN) {
                    return NGX_AGAIN;
                }
            }

            keys = ngx_tenant_jwks_keys(tmcf, r->connection->log, &policy);

            if (keys->nkeys == 0) {
                return ngx_tenant_refuse(r, tlcf, ctx,
                                         NGX_TENANT_R_KEYS_UNAVAILABLE,
                                         "no signing key has been fetched "
                                         "yet",
                                         sizeof("no signing key has been "
                                                "fetched yet") - 1);
            }
        }
    }

    if (status != TENANT_JWT_OK) {
        return ngx_tenant_refuse_token(r, tlcf, ctx, status);
    }

    if (tlcf->gateway == NGX_TENANT_GATEWAY_ADMIN) {
        return ngx_tenant_access_admin(r, tmcf, tlcf, ctx);
    }

    /* the organization: the token's, which a header may only repeat */

    if (norg > 1) {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ORG_AMBIGUOUS,
                                 NULL, 0);
    }

    if (norg == 1 && !tenant_org_id_valid(org.data, org.len)) {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ORG_INVALID,
                                 NULL, 0);
    }

    if (ctx->claims.org_id_len) {

        if (norg == 1
            && (org.len != ctx->claims.org_id_len
                || ngx_memcmp(org.data, ctx->claims.org_id, org.len) != 0))
        {
            /* organizationId: the session's, never the header's */
            ngx_memcpy(ctx->org_id, ctx->claims.org_id,
                       ctx->claims.org_id_len);
            ctx->org_id[ctx->claims.org_id_len] = '\0';
            ctx->org_id_len = ctx->claims.org_id_len;

            return ngx_tenant_refuse(r, tlcf, ctx,
                                     NGX_TENANT_R_ORG_MISMATCH,
                                     "X-Organization-ID is not the "
                                     "session's active organization",
                                     sizeof("X-Organization-ID is not the "
                                            "session's active organization")
                                     - 1);
        }

        org.data = (u_char *) ctx->claims.org_id;
        org.len = ctx->claims.org_id_len;

        if (!tenant_org_id_valid(org.data, org.len)) {
            return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ORG_INVALID,
                                     NULL, 0);
        }

    } else if (norg == 1) {
        /*
         * A session without an active organization cannot choose one by
         * header: membership is what the token's org claim proves.
         */
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ORG_MISMATCH,
                                 "the session has no active organization",
                                 sizeof("the session has no active "
                                        "organization") - 1);

    } else {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ORG_REQUIRED,
                                 NULL, 0);
    }

    ngx_memcpy(ctx->org_id, org.data, org.len);
    ctx->org_id[org.len] = '\0';
    ctx->org_id_len = org.len;

    /* the tenant: shared memory, else PostgreSQL (ngx_tenant_lookup.c) */

    rc = ngx_tenant_lookup(r, tmcf, ctx);

    if (rc != NGX_OK) {
        return rc;
    }

    ctx->state = NGX_TENANT_STATE_RESOLVED;

    return ngx_tenant_access_resolved(r, tmcf, tlcf, ctx);
}


/*
 * "tenant_gateway admin": a verified token whose metadata.role claim is
 * tenant_admin_role; no organization or tenant.  With
 * tenant_admin_require_session (the default), a Clerk session token only:
 * a JWT template token (no "sid") may carry claims a template maps from
 * what users write themselves (unsafe_metadata).
 */

static ngx_int_t
ngx_tenant_access_admin(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx)
{
    if (ctx->claims.metadata_role_len != tmcf->admin_role.len
        || ngx_strncmp(ctx->claims.metadata_role, tmcf->admin_role.data,
                       tmcf->admin_role.len) != 0)
    {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ADMIN_REQUIRED,
                                 NULL, 0);
    }

    if (tmcf->admin_session && !ctx->claims.session) {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_ADMIN_SESSION,
                                 NGX_TENANT_ADMIN_SESSION_DETAIL,
                                 sizeof(NGX_TENANT_ADMIN_SESSION_DETAIL) - 1);
    }

    ngx_str_set(&ctx->outcome, "admitted");
    ctx->outcome_id = NGX_TENANT_OUT_ADMITTED;
    ctx->admin = 1;
    ctx->state = NGX_TENANT_STATE_DONE;

    return NGX_OK;
}


/*
 * The token from "Authorization: Bearer", else (except for the admin API)
 * the __session cookie: NGX_DECLINED when there is none, NGX_OK with
 * *status otherwise.
 */

static ngx_int_t
ngx_tenant_access_token(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx,
    tenant_jwt_status_t *status)
{
    size_t                len;
    time_t                now;
    ngx_int_t             rc;
    uint32_t              policy_crc;
    const u_char         *token;
    ngx_table_elt_t      *h;
    tenant_keyset_t      *keys;
    tenant_jwt_policy_t   policy;
    ngx_tenant_token_t    cached;
    u_char                key[TENANT_SHA256_LEN];

    h = r->headers_in.authorization;

    if (h) {
        if (tenant_bearer_token(h->value.data, h->value.len, &token, &len)
            != 0)
        {
            *status = TENANT_JWT_MALFORMED;
            return NGX_OK;
        }

    } else {
        /*
         * Not on "tenant_gateway admin": a browser sends the cookie with
         * requests that pages of other sites make it send (issue 12).
         */

        if (tlcf->gateway == NGX_TENANT_GATEWAY_ADMIN) {
            return NGX_DECLINED;
        }

        rc = ngx_tenant_access_cookie(r, &token, &len);

        if (rc == NGX_DECLINED) {
            return NGX_DECLINED;
        }

        if (rc != NGX_OK) {
            *status = TENANT_JWT_MALFORMED;
            return NGX_OK;
        }
    }

    if (len > TENANT_JWT_MAX_LEN) {
        *status = TENANT_JWT_TOO_LARGE;
        return NGX_OK;
    }

    now = ngx_time();

    /* the configuration's keys, and those of tenant_jwks_request */
    keys = ngx_tenant_jwks_keys(tmcf, r->connection->log, &policy_crc);

    if (tmcf->token_cache) {
        if (tenant_sha256(tmcf->sign, token, len, key) != 0) {
            return NGX_ERROR;
        }

        /*
         * The exp and nbf tests are defence in depth and do not fail in
         * practice: an entry expires at exp + leeway (cache_get refuses
         * it after), the leeway is part of policy_crc, and nbf - leeway
         * only moves further into the past once the token was admitted.
         */

        if (ngx_tenant_cache_get(tmcf->token_cache, key, sizeof(key),
                                 &cached)
            == NGX_OK
            && cached.policy == policy_crc
            && now <= cached.claims.exp + tmcf->leeway
            && now >= cached.claims.nbf - tmcf->leeway
            && tenant_jwt_unpack(&cached.claims, &ctx->claims) == 0)
        {
            *status = TENANT_JWT_OK;
            return NGX_OK;
        }
    }

    policy.algorithms = tmcf->algorithms;
    policy.now = now;
    policy.leeway = tmcf->leeway;
    policy.issuer = tmcf->issuer.len ? (const char *) tmcf->issuer.data
                                     : NULL;
    policy.issuer_len = tmcf->issuer.len;
    policy.azp = tmcf->azp_ptrs;
    policy.azp_len = tmcf->azp_lens;
    policy.nazp = tmcf->azp ? tmcf->azp->nelts : 0;
    policy.role_claim = tmcf->role_claim;

    *status = tenant_jwt_verify(token, len, keys, &policy,
                                &ctx->claims);

    if (*status != TENANT_JWT_OK) {
        /* nothing of a refused token reaches $tenant_user_id and logs */
        ngx_memzero(&ctx->claims, sizeof(tenant_jwt_claims_t));
        return NGX_OK;
    }

    /*
     * Only what a hit needs is kept (tenant_jwt_pack); a token whose
     * claims do not fit the compact entry is verified each time.
     */

    if (tmcf->token_cache) {
        cached.policy = policy_crc;

        if (tenant_jwt_pack(&ctx->claims, &cached.claims) == 0) {
            (void) ngx_tenant_cache_put(tmcf->token_cache, key, sizeof(key),
                                        &cached,
                                        (time_t) ctx->claims.exp
                                        + tmcf->leeway);

        } else {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "tenant: token claims too long to cache");
        }
    }

    return NGX_OK;
}


/*
 * The __session cookie, read by tenant_cookie_value() in every Cookie
 * header line: NGX_DECLINED when absent or empty, NGX_OK with the value,
 * NGX_ERROR when two lines, or two pairs of one line, carry different
 * values (cookie tossing from a sibling domain: which one is the
 * client's is not ours to guess).
 */

static ngx_int_t
ngx_tenant_access_cookie(ngx_http_request_t *r, const u_char **token,
    size_t *len)
{
    int                   rc;
    size_t                vlen;
    ngx_uint_t            i, found;
    const u_char         *v;
    ngx_table_elt_t     **h;

    found = 0;
    h = r->headers_in.cookies.elts;

    for (i = 0; i < r->headers_in.cookies.nelts; i++) {
        rc = tenant_cookie_value(h[i]->value.data, h[i]->value.len,
                                 "__session", sizeof("__session") - 1,
                                 &v, &vlen);

        if (rc == -1) {
            continue;
        }

        if (rc != 0) {
            return NGX_ERROR;
        }

        if (!found) {
            *token = v;
            *len = vlen;
            found = 1;
            continue;
        }

        if (vlen != *len || ngx_memcmp(v, *token, vlen) != 0) {
            return NGX_ERROR;
        }
    }

    if (!found || *len == 0) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_tenant_is_preflight(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->method != NGX_HTTP_OPTIONS) {
        return 0;
    }

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

        if (h[i].key.len == sizeof("Access-Control-Request-Method") - 1
            && ngx_strncasecmp(h[i].key.data,
                               (u_char *) "Access-Control-Request-Method",
                               sizeof("Access-Control-Request-Method") - 1)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}



static ngx_int_t
ngx_tenant_access_resolved(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx)
{
    time_t                now;
    ngx_tenant_record_t  *t;

    switch (ctx->db_result) {

    case NGX_TENANT_DB_FOUND:
        break;

    case NGX_TENANT_DB_NOT_FOUND:
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_UNKNOWN_ORG,
                                 NULL, 0);

    default: /* NGX_TENANT_DB_ERROR */
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_UNAVAILABLE,
                                 NULL, 0);
    }

    t = &ctx->tenant;
    ctx->has_tenant = 1;
    now = ngx_time();

    /*
     * status: any other value is refused as suspended (the schema's CHECK
     * allows suspended and cancelled, so a length that matches below
     * with other bytes does not occur)
     */

    if (t->status_len == 6 && ngx_strncmp(t->status, "active", 6) == 0) {
        /* void */

    } else if (t->status_len == 8
               && ngx_strncmp(t->status, "past_due", 8) == 0)
    {
        /* the backend nags; the gateway lets the customer in */

    } else if (t->status_len == 5
               && ngx_strncmp(t->status, "trial", 5) == 0)
    {
        if (t->trial_ends_at && now >= t->trial_ends_at) {
            return ngx_tenant_refuse_upgrade(r, tlcf, ctx,
                                             NGX_TENANT_R_TRIAL_EXPIRED,
                                             NULL, NULL);
        }

    } else if (t->status_len == 7
               && ngx_strncmp(t->status, "expired", 7) == 0)
    {
        return ngx_tenant_refuse_upgrade(r, tlcf, ctx,
                                         NGX_TENANT_R_TRIAL_EXPIRED, NULL,
                                         NULL);

    } else {
        return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_SUSPENDED,
                                 NULL, 0);
    }

    /* rate: decided here, or by Redis's answer (NGX_AGAIN) */

    switch (ngx_tenant_ratelimit(r, tmcf, tlcf, ctx)) {

    case NGX_OK:
        break;

    case NGX_AGAIN:
        ctx->state = NGX_TENANT_STATE_WAIT_RATE;

        /* a client that goes away ends the request meanwhile (499) */
        r->read_event_handler = ngx_http_test_reading;

        return NGX_AGAIN;

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_tenant_access_rated(r, tmcf, tlcf, ctx);
}


static ngx_int_t
ngx_tenant_access_rated(ngx_http_request_t *r, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *tlcf, ngx_tenant_ctx_t *ctx)
{
    int                   rc;
    ngx_int_t             feature;
    ngx_str_t             name;
    tenant_route_t       *route;
    const tenant_tier_t  *tier, *required;

    static ngx_str_t  above_root =
        ngx_string("the request path climbs above the root");

    if (ctx->rl_refused) {
        return ngx_tenant_refuse_rate(r, tlcf, ctx);
    }

    /*
     * feature: the location's (tenant_require_feature), then the routes'
     * (tenant_feature_route); a tier no tenant_tier declares has none
     */

    tier = tenant_tiers_find(tmcf->tiers, (char *) ctx->tenant.tier,
                             ctx->tenant.tier_len);
    feature = tlcf->feature;
    name = tlcf->feature_name;

    if (feature >= 0 && tenant_tier_has(tier, (int) feature)) {
        feature = -1;
    }

    if (feature == -1 && tlcf->routes) {
        if (ngx_tenant_access_routes(r, tlcf, tier, &rc) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == TENANT_ROUTE_INVALID) {
            return ngx_tenant_refuse(r, tlcf, ctx, NGX_TENANT_R_PATH_INVALID,
                                     (char *) above_root.data,
                                     above_root.len);
        }

        if (rc >= 0) {
            route = tlcf->routes->elts;
            feature = route[rc].feature;
            name.data = (u_char *) route[rc].feature_name;
            name.len = route[rc].feature_name_len;
        }
    }

    if (feature >= 0) {
        /* never NULL: a feature is registered by the tier that lists it,
         * and the directives take registered ones only;
         * ngx_tenant_refuse_upgrade() copes anyway */

        required = tenant_tiers_lowest_with(tmcf->tiers, (int) feature);

        return ngx_tenant_refuse_upgrade(r, tlcf, ctx, NGX_TENANT_R_FEATURE,
                                         &name, required);
    }

    if (ngx_tenant_headers_inject(r, tmcf, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&ctx->outcome, "admitted");
    ctx->outcome_id = NGX_TENANT_OUT_ADMITTED;
    ctx->admitted = 1;
    ctx->state = NGX_TENANT_STATE_DONE;

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_refuse_token(ngx_http_request_t *r, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx, tenant_jwt_status_t status)
{
    u_char            *p, *value;
    size_t             len;
    const char        *text;
    tenant_problem_t   pb;

    text = tenant_jwt_status_text(status);

    /* WWW-Authenticate: Bearer error="invalid_token", error_description */

    len = sizeof("Bearer error=\"invalid_token\", error_description=\"\"")
          - 1 + ngx_strlen(text);

    value = ngx_pnalloc(r->pool, len);
    if (value == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(value,
                    "Bearer error=\"invalid_token\", error_description=\"%s\"",
                    text);

    if (ngx_tenant_set_header(r, "WWW-Authenticate", value, p - value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    pb.detail = text;
    pb.detail_len = ngx_strlen(text);

    pb.members[0].name = "reason";
    pb.members[0].value = tenant_jwt_status_code(status);
    pb.members[0].value_len = ngx_strlen(pb.members[0].value);
    pb.nmembers = 1;

    return ngx_tenant_send(r, tlcf, ctx, &pb, NGX_TENANT_R_TOKEN_INVALID);
}


/*
 * *denied: the first of the location's feature routes that the request's
 * path matches (under any reading, see src/tenant_route.h) and whose
 * feature the tier lacks: its index; -1 for none; TENANT_ROUTE_INVALID
 * when some reading of the path climbs above the root.  Two paths are
 * read: the one the client sent without its query string (what
 * proxy_pass forwards), and nginx's decoded URI (what locations matched;
 * what proxy_pass forwards after a rewrite), decoded once more, so that
 * a double encoding is caught too.
 */

static ngx_int_t
ngx_tenant_access_routes(ngx_http_request_t *r, ngx_tenant_loc_conf_t *tlcf,
    const tenant_tier_t *tier, int *denied)
{
    int              rc, rc2;
    u_char          *buf, *q;
    size_t           n, len;
    tenant_route_t  *routes;

    routes = tlcf->routes->elts;
    n = tlcf->routes->nelts;

    len = r->unparsed_uri.len;

    q = ngx_strlchr(r->unparsed_uri.data, r->unparsed_uri.data + len, '?');
    if (q) {
        len = q - r->unparsed_uri.data;
    }

    buf = ngx_pnalloc(r->pool, ngx_max(len, r->uri.len) + 1);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    rc = tenant_route_denied(routes, n, tier, r->unparsed_uri.data, len, buf);

    if (rc < 0
        && (len != r->uri.len
            || ngx_strncmp(r->unparsed_uri.data, r->uri.data, len) != 0))
    {
        rc2 = tenant_route_denied(routes, n, tier, r->uri.data, r->uri.len,
                                  buf);
        if (rc2 != -1) {
            rc = rc2;
        }
    }

    *denied = rc;

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_refuse_upgrade(ngx_http_request_t *r, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx, ngx_tenant_refusal_e reason, ngx_str_t *feature,
    const tenant_tier_t *required)
{
    ngx_int_t          rc;
    ngx_str_t          url;
    ngx_uint_t         n;
    tenant_problem_t   pb;

    ngx_memzero(&pb, sizeof(tenant_problem_t));
    n = 0;

    if (reason == NGX_TENANT_R_FEATURE) {
        pb.detail = "the organization's plan does not include this feature";

        if (required) {
            ctx->required_tier.data = (u_char *) required->name;
            ctx->required_tier.len = required->name_len;
        }

        ctx->feature = *feature;

        pb.members[n].name = "feature";
        pb.members[n].value = (char *) feature->data;
        pb.members[n].value_len = feature->len;
        n++;

        pb.members[n].name = "currentTier";
        pb.members[n].value = (char *) ctx->tenant.tier;
        pb.members[n].value_len = ctx->tenant.tier_len;
        n++;

        if (required) {
            pb.members[n].name = "requiredTier";
            pb.members[n].value = required->name;
            pb.members[n].value_len = required->name_len;
            n++;
        }

    } else {
        pb.detail = "the organization's trial has ended";

        ctx->required_tier.data = ctx->tenant.tier;
        ctx->required_tier.len = ctx->tenant.tier_len;

        pb.members[n].name = "currentTier";
        pb.members[n].value = (char *) ctx->tenant.tier;
        pb.members[n].value_len = ctx->tenant.tier_len;
        n++;
    }

    pb.detail_len = ngx_strlen(pb.detail);

    /* the $tenant_* values as URI components: an organization id may
     * hold any visible ASCII byte, "&" and "#" too */

    ctx->url_escape = 1;
    rc = ngx_http_complex_value(r, tlcf->upgrade_url, &url);
    ctx->url_escape = 0;

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (url.len) {
        pb.members[n].name = "upgradeUrl";
        pb.members[n].value = (char *) url.data;
        pb.members[n].value_len = url.len;
        n++;
    }

    pb.nmembers = n;

    return ngx_tenant_send(r, tlcf, ctx, &pb, reason);
}


static ngx_int_t
ngx_tenant_refuse(ngx_http_request_t *r, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx, ngx_tenant_refusal_e reason, const char *detail,
    size_t detail_len)
{
    tenant_problem_t  pb;

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    pb.detail = detail;
    pb.detail_len = detail_len;

    if (reason == NGX_TENANT_R_TOKEN_MISSING) {
        if (ngx_tenant_set_header(r, "WWW-Authenticate",
                                  (u_char *) "Bearer",
                                  sizeof("Bearer") - 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (reason == NGX_TENANT_R_UNAVAILABLE
        || reason == NGX_TENANT_R_KEYS_UNAVAILABLE)
    {
        if (ngx_tenant_set_header(r, "Retry-After",
                                  (u_char *) NGX_TENANT_RETRY_AFTER,
                                  sizeof(NGX_TENANT_RETRY_AFTER) - 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (reason == NGX_TENANT_R_UNKNOWN_ORG
        || reason == NGX_TENANT_R_SUSPENDED
        || reason == NGX_TENANT_R_ORG_MISMATCH)
    {
        pb.members[0].name = "organizationId";
        pb.members[0].value = (char *) ctx->org_id;
        pb.members[0].value_len = ctx->org_id_len;
        pb.nmembers = ctx->org_id_len ? 1 : 0;
    }

    return ngx_tenant_send(r, tlcf, ctx, &pb, reason);
}


/* 429: limit, window, retryAfter, and Retry-After. */

static ngx_int_t
ngx_tenant_refuse_rate(ngx_http_request_t *r, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx)
{
    u_char                *p, *buf;
    uint64_t               retry;
    tenant_rate_t         *rate;
    tenant_problem_t       pb;
    tenant_rate_result_t  *res;

    if (ctx->rl_by_set && !ctx->rl_by.allowed) {
        rate = &ctx->rl_by_rate;
        res = &ctx->rl_by;

    } else {
        rate = &ctx->rl_rate;
        res = &ctx->rl;
    }

    retry = ngx_tenant_ratelimit_seconds(res);

    buf = ngx_pnalloc(r->pool, 3 * NGX_INT64_LEN);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    pb.detail = (rate == &ctx->rl_rate)
                ? "the organization's request quota is used up"
                : "this caller's request quota is used up";
    pb.detail_len = ngx_strlen(pb.detail);

    p = buf;

    pb.members[0].name = "limit";
    pb.members[0].value = (char *) p;
    p = ngx_sprintf(p, "%uL", rate->limit);
    pb.members[0].value_len = (char *) p - pb.members[0].value;
    pb.members[0].number = 1;

    pb.members[1].name = "window";
    pb.members[1].value = (char *) p;
    p = ngx_sprintf(p, "%uL", (rate->window_ms + 999) / 1000);
    pb.members[1].value_len = (char *) p - pb.members[1].value;
    pb.members[1].number = 1;

    pb.members[2].name = "retryAfter";
    pb.members[2].value = (char *) p;
    p = ngx_sprintf(p, "%uL", retry);
    pb.members[2].value_len = (char *) p - pb.members[2].value;
    pb.members[2].number = 1;

    pb.nmembers = 3;

    if (ngx_tenant_set_header(r, "Retry-After",
                              (u_char *) pb.members[2].value,
                              pb.members[2].value_len)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_tenant_send(r, tlcf, ctx, &pb, NGX_TENANT_R_RATE_LIMITED);
}


/* Logs the refusal once and answers; the access phase ends here. */

static ngx_int_t
ngx_tenant_send(ngx_http_request_t *r, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx, tenant_problem_t *p, ngx_tenant_refusal_e reason)
{
    ngx_int_t              rc;
    ngx_tenant_refusal_t  *rf;

    rf = &ngx_tenant_refusals[reason];

    p->type_base = (char *) tlcf->problem_type_base.data;
    p->type_base_len = tlcf->problem_type_base.len;
    p->code = rf->code;
    p->status = (int) rf->status;
    p->title = rf->title;

    ctx->outcome.data = (u_char *) rf->code;
    ctx->outcome.len = ngx_strlen(rf->code);
    ctx->outcome_id = rf->outcome;
    ctx->state = NGX_TENANT_STATE_DONE;

    ngx_log_error(tlcf->refusal_log_level, r->connection->log, 0,
                  "tenant: refused with %ui %s%s%*s%s",
                  rf->status, rf->code,
                  p->detail ? " (" : "",
                  p->detail ? p->detail_len : 0,
                  p->detail ? p->detail : "",
                  p->detail ? ")" : "");

    rc = ngx_tenant_problem_send(r, p);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_tenant_set_header(ngx_http_request_t *r, char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_tenant_header_out(r, name, value, len);
    if (h == NULL) {
        return NGX_ERROR;
    }

    if (ngx_strcmp(name, "WWW-Authenticate") == 0) {
        r->headers_out.www_authenticate = h;
    }

    return NGX_OK;
}
