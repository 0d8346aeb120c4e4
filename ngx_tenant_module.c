/*
 * Copyright (C) ngx_tenant_module authors
 *
 * ngx_tenant_module: the edge gateway of a multi-tenant SaaS.  In the
 * access phase of a protected location it verifies the Clerk session
 * token, resolves the organization to a tenant (PostgreSQL, cached in
 * shared memory), checks the tenant's status and its tier's features, and
 * hands proxy_pass signed tenant headers.
 *
 * This file is the table of contents: directives, configuration and the
 * module's hooks.  The work is done in src/.
 *
 * Configuration-time allocation failures (pools, arrays, OpenSSL contexts,
 * libpq's conninfo parser) fail the configuration with nginx's own
 * message; no test provokes them (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"
#include "ngx_tenant_pg.h"
#include "ngx_tenant_metrics.h"
#include "ngx_tenant_redis.h"


static ngx_int_t ngx_tenant_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_tenant_postconfiguration(ngx_conf_t *cf);
static void *ngx_tenant_create_main_conf(ngx_conf_t *cf);
static char *ngx_tenant_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_tenant_create_loc_conf(ngx_conf_t *cf);
static char *ngx_tenant_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);

static char *ngx_tenant_database(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_database_listen(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_tenant_pg_conn_info_t *ngx_tenant_conninfo(ngx_conf_t *cf,
    ngx_str_t *conninfo);
static ngx_tenant_pg_conn_info_t *ngx_tenant_conninfo_keepalive(
    ngx_conf_t *cf, ngx_tenant_pg_conn_info_t *info);
static char *ngx_tenant_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_token_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_jwt_algorithms(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_jwt_authorized_parties(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_tenant_tier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_feature_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_merge_routes(ngx_conf_t *cf,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *prev,
    ngx_tenant_loc_conf_t *conf);
static char *ngx_tenant_upgrade_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_signing_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_admin_role(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_rate_limit_by(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tenant_rate_params(ngx_conf_t *cf, ngx_str_t *value,
    ngx_uint_t n, ngx_uint_t first, tenant_rate_t *rate, ngx_str_t *zone,
    ngx_uint_t features);

static ngx_int_t ngx_tenant_read_file(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *out);
static char *ngx_tenant_pstrdup0(ngx_pool_t *pool, const char *s);
static void ngx_tenant_cleanup_keys(void *data);
static void ngx_tenant_cleanup_sign(void *data);
static ngx_int_t ngx_tenant_init_process(ngx_cycle_t *cycle);
static void ngx_tenant_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_tenant_gateway_modes[] = {
    { ngx_string("off"), NGX_TENANT_GATEWAY_OFF },
    { ngx_string("on"), NGX_TENANT_GATEWAY_ON },
    { ngx_string("admin"), NGX_TENANT_GATEWAY_ADMIN },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_tenant_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_tenant_commands[] = {

    { ngx_string("tenant_database"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_database,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_database_listen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_tenant_database_listen,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_cron_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_tenant_main_conf_t, cron_secret),
      NULL },

    { ngx_string("tenant_cron_expire_trials"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tenant_cron_expire_trials,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_token_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_tenant_token_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_jwt_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_tenant_jwt_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_jwks_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_tenant_jwt_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("tenant_jwks_request"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_jwks_request,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_jwt_algorithms"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_jwt_algorithms,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_tenant_main_conf_t, leeway),
      NULL },

    { ngx_string("tenant_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_tenant_main_conf_t, issuer),
      NULL },

    { ngx_string("tenant_jwt_authorized_parties"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_jwt_authorized_parties,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_tier"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_tier,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_signing_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_tenant_signing_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tenant_loc_conf_t, gateway),
      &ngx_tenant_gateway_modes },

    { ngx_string("tenant_admin_role"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_tenant_admin_role,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_admin_require_session"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_tenant_main_conf_t, admin_session),
      NULL },

    { ngx_string("tenant_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tenant_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_require_feature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tenant_loc_conf_t, feature_name),
      NULL },

    { ngx_string("tenant_feature_route"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_tenant_feature_route,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_cors_preflight"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tenant_loc_conf_t, cors_preflight),
      NULL },

    { ngx_string("tenant_refusal_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tenant_loc_conf_t, refusal_log_level),
      &ngx_tenant_log_levels },

    { ngx_string("tenant_upgrade_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_tenant_upgrade_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tenant_loc_conf_t, upgrade_url),
      NULL },

    { ngx_string("tenant_problem_type_base"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tenant_loc_conf_t, problem_type_base),
      NULL },

    { ngx_string("tenant_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_tenant_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_rate_limit"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_tenant_rate_limit,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_rate_limit_by"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_tenant_rate_limit_by,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tenant_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tenant_metrics_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_tenant_metrics_token,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_tenant_module_ctx = {
    ngx_tenant_preconfiguration,           /* preconfiguration */
    ngx_tenant_postconfiguration,          /* postconfiguration */

    ngx_tenant_create_main_conf,           /* create main configuration */
    ngx_tenant_init_main_conf,             /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_tenant_create_loc_conf,            /* create location configuration */
    ngx_tenant_merge_loc_conf              /* merge location configuration */
};


ngx_module_t  ngx_tenant_module = {
    NGX_MODULE_V1,
    &ngx_tenant_module_ctx,                /* module context */
    ngx_tenant_commands,                   /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_tenant_init_process,               /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_tenant_exit_process,               /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_tenant_preconfiguration(ngx_conf_t *cf)
{
    if (ngx_tenant_variables_add(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_tenant_headers_init(cf);
}


static ngx_int_t
ngx_tenant_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_tenant_log_post_read_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_tenant_access_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_tenant_metrics_log_handler;

    if (ngx_tenant_jwks_filter_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_tenant_ratelimit_filter_init(cf);
}


static void *
ngx_tenant_create_main_conf(ngx_conf_t *cf)
{
    ngx_pool_cleanup_t      *cln;
    ngx_tenant_main_conf_t  *tmcf;

    tmcf = ngx_pcalloc(cf->pool, sizeof(ngx_tenant_main_conf_t));
    if (tmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     tmcf->db_conninfo = { 0, NULL };
     *     tmcf->pg = NULL;
     *     tmcf->tenant_cache = NULL;
     *     tmcf->token_cache = NULL;
     *     tmcf->issuer = { 0, NULL };
     *     tmcf->azp = NULL;
     *     tmcf->policy = 0;
     *     tmcf->sign = NULL;
     */

    tmcf->db_pool_size = NGX_CONF_UNSET_UINT;
    tmcf->db_timeout = NGX_CONF_UNSET_MSEC;
    tmcf->tenant_ttl = NGX_CONF_UNSET;
    tmcf->tenant_negative_ttl = NGX_CONF_UNSET;
    tmcf->tenant_stale = NGX_CONF_UNSET;
    tmcf->tenant_listen_ttl = NGX_CONF_UNSET;
    tmcf->algorithms = NGX_CONF_UNSET_UINT;
    tmcf->leeway = NGX_CONF_UNSET;
    tmcf->admin_session = NGX_CONF_UNSET;

    tmcf->keys = ngx_pcalloc(cf->pool, sizeof(tenant_keyset_t));
    tmcf->tiers = ngx_pcalloc(cf->pool, sizeof(tenant_tiers_t));

    if (tmcf->keys == NULL || tmcf->tiers == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_tenant_cleanup_keys;
    cln->data = tmcf->keys;

    return tmcf;
}


static char *
ngx_tenant_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    uint32_t     crc;
    ngx_str_t   *azp;
    ngx_uint_t   i;

    ngx_conf_init_uint_value(tmcf->db_pool_size, 4);
    ngx_conf_init_msec_value(tmcf->db_timeout, 3000);
    ngx_conf_init_value(tmcf->tenant_ttl, 30);
    ngx_conf_init_value(tmcf->tenant_negative_ttl, 5);
    ngx_conf_init_value(tmcf->tenant_stale, 300);

    /*
     * Rows live longer while changes arrive pushed, by default only with
     * a connection of tenant_database_listen's own: a listener on
     * tenant_database's may be behind PgBouncer, where LISTEN succeeds and
     * notifications do not come.
     */

    ngx_conf_init_value(tmcf->tenant_listen_ttl,
                        (tmcf->listen_set && tmcf->listen_info)
                        ? 3600 : tmcf->tenant_ttl);

    if (tmcf->tenant_listen_ttl < tmcf->tenant_ttl) {
        tmcf->tenant_listen_ttl = tmcf->tenant_ttl;
    }

    ngx_conf_init_uint_value(tmcf->algorithms,
                             TENANT_JWT_RS256|TENANT_JWT_ES256);
    ngx_conf_init_value(tmcf->leeway, 5);

    if (tmcf->azp) {
        azp = tmcf->azp->elts;

        tmcf->azp_ptrs = ngx_palloc(cf->pool,
                                    tmcf->azp->nelts * sizeof(char *));
        tmcf->azp_lens = ngx_palloc(cf->pool,
                                    tmcf->azp->nelts * sizeof(size_t));
        if (tmcf->azp_ptrs == NULL || tmcf->azp_lens == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 0; i < tmcf->azp->nelts; i++) {
            tmcf->azp_ptrs[i] = (const char *) azp[i].data;
            tmcf->azp_lens[i] = azp[i].len;
        }
    }

    /*
     * The token cache survives reloads: an entry is only used while the
     * policy it was verified under (keys, algorithms, issuer, parties) is
     * the policy in force.  tmcf->policy already holds the keys' crc.
     */

    crc = tmcf->policy;
    crc ^= ngx_crc32_short((u_char *) &tmcf->algorithms,
                           sizeof(tmcf->algorithms));
    crc ^= ngx_crc32_short((u_char *) &tmcf->leeway, sizeof(tmcf->leeway))
           * 7;
    crc ^= ngx_crc32_short(tmcf->issuer.data, tmcf->issuer.len) * 3;

    if (tmcf->role_claim) {
        crc ^= ngx_crc32_short((u_char *) tmcf->role_claim,
                               ngx_strlen(tmcf->role_claim)) * 11;
    }

    if (tmcf->azp) {
        azp = tmcf->azp->elts;

        for (i = 0; i < tmcf->azp->nelts; i++) {
            crc ^= ngx_crc32_short(azp[i].data, azp[i].len) * (i + 5);
        }
    }

    tmcf->policy = crc;

    if (!tmcf->listen_set) {
        tmcf->listen_info = tmcf->db_info;
    }

    if (tmcf->listen_info) {
        tmcf->listen_info = ngx_tenant_conninfo_keepalive(cf,
                                                          tmcf->listen_info);
        if (tmcf->listen_info == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (tmcf->admin_role.data == NULL) {
        ngx_str_set(&tmcf->admin_role, "admin");
    }

    ngx_conf_init_value(tmcf->admin_session, 1);

    if (tmcf->cron_secret.len && tmcf->cron_secret.len < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_cron_secret\" must be at least 32 "
                           "characters");
        return NGX_CONF_ERROR;
    }

    if (tmcf->cron_secret.len
        && !ngx_tenant_is_bearer_token(&tmcf->cron_secret))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_cron_secret\" must be a bearer token: "
                           "letters, digits and -._~+/ (trailing =)");
        return NGX_CONF_ERROR;
    }

    /* compared by digest: the time tells nothing of the secret's length */

    if (tmcf->cron_secret.len
        && tenant_secret_digest(tmcf->cron_secret.data, tmcf->cron_secret.len,
                                tmcf->cron_digest)
           != 0)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 0; tmcf->rl_zone == NULL && i < tmcf->tiers->ntiers; i++) {
        if (tmcf->tier_rate[i].limit) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the rate of tenant_tier \"%s\" needs "
                               "\"tenant_rate_limit zone=...\"",
                               tmcf->tiers->tiers[i].name);
            return NGX_CONF_ERROR;
        }
    }

    if (tmcf->db_conninfo.len || tmcf->tiers->ntiers || tmcf->redis) {
        if (ngx_tenant_metrics_init_conf(cf, tmcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_tenant_create_loc_conf(ngx_conf_t *cf)
{
    ngx_tenant_loc_conf_t  *tlcf;

    tlcf = ngx_pcalloc(cf->pool, sizeof(ngx_tenant_loc_conf_t));
    if (tlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     tlcf->feature_name = { 0, NULL };
     *     tlcf->routes = NULL;
     *     tlcf->problem_type_base = { 0, NULL };
     *     tlcf->rl_by_rate = { 0, 0, 0 };
     */

    tlcf->gateway = NGX_CONF_UNSET_UINT;
    tlcf->feature = NGX_CONF_UNSET;
    tlcf->cors_preflight = NGX_CONF_UNSET;
    tlcf->refusal_log_level = NGX_CONF_UNSET_UINT;
    tlcf->upgrade_url = NGX_CONF_UNSET_PTR;
    tlcf->rl_by = NGX_CONF_UNSET_PTR;
    tlcf->metrics_token = NGX_CONF_UNSET_PTR;

    return tlcf;
}


static char *
ngx_tenant_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_tenant_loc_conf_t *prev = parent;
    ngx_tenant_loc_conf_t *conf = child;

    ngx_http_compile_complex_value_t   ccv;
    ngx_tenant_main_conf_t            *tmcf;

    static ngx_str_t  default_upgrade_url = ngx_string(
        "https://app.capliquify.com/settings/billing"
        "?plan=$tenant_required_tier&org=$tenant_org_id");

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_tenant_module);

    ngx_conf_merge_uint_value(conf->gateway, prev->gateway,
                              NGX_TENANT_GATEWAY_OFF);
    ngx_conf_merge_str_value(conf->feature_name, prev->feature_name, "");
    ngx_conf_merge_value(conf->cors_preflight, prev->cors_preflight, 1);
    ngx_conf_merge_uint_value(conf->refusal_log_level,
                              prev->refusal_log_level, NGX_LOG_INFO);
    ngx_conf_merge_str_value(conf->problem_type_base,
                             prev->problem_type_base,
                             "https://capliquify.com/problems/");

    ngx_conf_merge_ptr_value(conf->upgrade_url, prev->upgrade_url, NULL);
    ngx_conf_merge_ptr_value(conf->metrics_token, prev->metrics_token,
                             NULL);

    if (conf->rl_by == NGX_CONF_UNSET_PTR) {
        conf->rl_by = (prev->rl_by == NGX_CONF_UNSET_PTR) ? NULL : prev->rl_by;
        conf->rl_by_rate = prev->rl_by_rate;
    }

    if (conf->rl_by && tmcf->rl_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_rate_limit_by\" needs "
                           "\"tenant_rate_limit\" and its zone");
        return NGX_CONF_ERROR;
    }

    if (conf->upgrade_url == NULL) {
        conf->upgrade_url = ngx_palloc(cf->pool,
                                       sizeof(ngx_http_complex_value_t));
        if (conf->upgrade_url == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &default_upgrade_url;
        ccv.complex_value = conf->upgrade_url;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        prev->upgrade_url = conf->upgrade_url;
    }

    conf->feature = -1;

    if (conf->feature_name.len) {
        conf->feature = tenant_tiers_feature(tmcf->tiers,
                                             (char *) conf->feature_name.data,
                                             conf->feature_name.len);
        if (conf->feature == -1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "feature \"%V\" is not listed by any "
                               "tenant_tier", &conf->feature_name);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_tenant_merge_routes(cf, tmcf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->gateway == NGX_TENANT_GATEWAY_OFF) {
        return NGX_CONF_OK;
    }

    if (tmcf->keys->nkeys == 0 && tmcf->jwks == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_gateway\" needs \"tenant_jwt_key\", "
                           "\"tenant_jwks_file\" or \"tenant_jwks_request\"");
        return NGX_CONF_ERROR;
    }

    if (tmcf->db_conninfo.len == 0 || tmcf->tenant_cache == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_gateway\" needs \"tenant_database\" "
                           "and \"tenant_cache\"");
        return NGX_CONF_ERROR;
    }

    if (tmcf->sign == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_gateway\" needs \"tenant_signing_key\"");
        return NGX_CONF_ERROR;
    }

    if (tmcf->tiers->ntiers == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_gateway\" needs at least one "
                           "\"tenant_tier\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The feature routes of a level are those of the levels above it, then
 * its own: a location adds routes, it cannot drop one (unlike add_header,
 * where one directive in a location hides all of the server's).  Their
 * features are looked up here, where every tenant_tier is known.
 */

static char *
ngx_tenant_merge_routes(ngx_conf_t *cf, ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_loc_conf_t *prev, ngx_tenant_loc_conf_t *conf)
{
    ngx_uint_t       i;
    ngx_array_t     *all;
    tenant_route_t  *route;

    if (prev->routes && prev->routes != conf->routes) {

        if (conf->routes == NULL) {
            conf->routes = prev->routes;

        } else {
            all = ngx_array_create(cf->pool,
                                   prev->routes->nelts + conf->routes->nelts,
                                   sizeof(tenant_route_t));
            if (all == NULL) {
                return NGX_CONF_ERROR;
            }

            /* never fails: the array has room for both */

            ngx_memcpy(ngx_array_push_n(all, prev->routes->nelts),
                       prev->routes->elts,
                       prev->routes->nelts * sizeof(tenant_route_t));
            ngx_memcpy(ngx_array_push_n(all, conf->routes->nelts),
                       conf->routes->elts,
                       conf->routes->nelts * sizeof(tenant_route_t));

            conf->routes = all;
        }
    }

    if (conf->routes == NULL) {
        return NGX_CONF_OK;
    }

    route = conf->routes->elts;

    for (i = 0; i < conf->routes->nelts; i++) {
        if (route[i].feature >= 0) {
            continue;
        }

        route[i].feature = tenant_tiers_feature(tmcf->tiers,
                                                route[i].feature_name,
                                                route[i].feature_name_len);
        if (route[i].feature == -1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "feature \"%s\" of tenant_feature_route "
                               "\"%s\" is not listed by any tenant_tier",
                               route[i].feature_name, route[i].prefix);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* tenant_feature_route <path prefix> <feature>; */

static char *
ngx_tenant_feature_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_loc_conf_t *tlcf = conf;

    char             err[256];
    ngx_str_t       *value;
    tenant_route_t  *route;

    value = cf->args->elts;

    if (value[2].len == 0 || value[2].len > TENANT_NAME_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid feature name \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (tlcf->routes == NULL) {
        tlcf->routes = ngx_array_create(cf->pool, 2, sizeof(tenant_route_t));
        if (tlcf->routes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    route = ngx_array_push(tlcf->routes);
    if (route == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(route, sizeof(tenant_route_t));

    if (tenant_route_prefix(route, value[1].data, value[1].len, err,
                            sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s", &value[1],
                           err);
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(route->feature_name, value[2].data, value[2].len);
    route->feature_name_len = value[2].len;
    route->feature = -1;

    return NGX_CONF_OK;
}


/*
 * tenant_upgrade_url <url>: variables allowed, the module's own only.
 * Their values are inserted as URI components (ngx_tenant_variable);
 * any other variable would be inserted as it is: $http_cookie would
 * reflect the session cookie into refusal bodies, $host or $arg_* put an
 * upgrade link of the client's choosing there.  nginx has no escape for
 * "$": a literal one is written %24.
 */

static char *
ngx_tenant_upgrade_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char     *p, *last, ch;
    ngx_str_t  *value, name;

    value = cf->args->elts;

    p = value[1].data;
    last = p + value[1].len;

    /* variable names as ngx_http_script_compile() reads them */

    while ((p = ngx_strlchr(p, last, '$')) != NULL) {

        p++;

        if (p < last && *p == '{') {
            p++;
        }

        for (name.data = p; p < last; p++) {
            ch = *p;

            if ((ch < 'a' || ch > 'z') && (ch < 'A' || ch > 'Z')
                && (ch < '0' || ch > '9') && ch != '_')
            {
                break;
            }
        }

        name.len = p - name.data;

        /* an empty name or a missing "}": nginx's own message below */

        if (name.len && !ngx_tenant_variable_is_own(&name)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "variable \"$%V\" is not allowed in \"%V\": "
                               "only the module's own $tenant_* variables "
                               "(a literal \"$\" is written %%24)",
                               &name, &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_set_complex_value_slot(cf, cmd, conf);
}


/* tenant_database <conninfo or URL> [pool=N] [timeout=time]; */

static char *
ngx_tenant_database(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i;

    if (tmcf->db_conninfo.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "pool=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n <= 0 || n > 256) {
                goto invalid;
            }

            tmcf->db_pool_size = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            tmcf->db_timeout = ngx_parse_time(&s, 0);
            if (tmcf->db_timeout == (ngx_msec_t) NGX_ERROR
                || tmcf->db_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    tmcf->db_info = ngx_tenant_conninfo(cf, &value[1]);
    if (tmcf->db_info == NULL) {
        return NGX_CONF_ERROR;
    }

    tmcf->db_conninfo = value[1];

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * tenant_database_listen <conninfo or URL> | off;
 *
 * The connection that LISTENs for tenant changes (one per instance): by
 * default tenant_database's.  Through PgBouncer in transaction mode
 * LISTEN cannot work: give a direct connection string here.
 */

static char *
ngx_tenant_database_listen(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_str_t  *value;

    if (tmcf->listen_set) {
        return "is duplicate";
    }

    tmcf->listen_set = 1;
    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        return NGX_CONF_OK;
    }

    tmcf->listen_info = ngx_tenant_conninfo(cf, &value[1]);
    if (tmcf->listen_info == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * A libpq connection string into PQconnectStartParams' arrays.  A host
 * name is resolved here, at configuration time, and handed to libpq with
 * every address as hostaddr: libpq would otherwise resolve it with a
 * blocking getaddrinfo() inside PQconnectStartParams, on a worker.
 */

static ngx_tenant_pg_conn_info_t *
ngx_tenant_conninfo(ngx_conf_t *cf, ngx_str_t *conninfo)
{
    char                 *errmsg, *host, *hostaddr, *service;
    u_char               *p, *q, *addrs, *hosts;
    ngx_int_t             n;
    ngx_url_t             u;
    ngx_uint_t            i, k, hidx;
    const char          **keywords, **values;
    PQconninfoOption     *opts, *o;
    ngx_tenant_pg_conn_info_t  *info;

    if (conninfo->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty PostgreSQL connection string");
        return NULL;
    }

    p = ngx_pnalloc(cf->pool, conninfo->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, conninfo->data, conninfo->len);
    p[conninfo->len] = '\0';

    opts = PQconninfoParse((char *) p, &errmsg);

    if (opts == NULL) {
        /* the message may quote the conninfo: do not log it, it may hold
         * a password */
        if (errmsg) {
            PQfreemem(errmsg);
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid PostgreSQL connection string");
        return NULL;
    }

    n = 0;
    host = NULL;
    hostaddr = NULL;
    service = NULL;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        n++;

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = o->val;

        } else if (ngx_strcmp(o->keyword, "service") == 0) {
            service = o->val;
        }
    }

    keywords = ngx_pcalloc(cf->pool, (n + 3) * sizeof(char *));
    values = ngx_pcalloc(cf->pool, (n + 3) * sizeof(char *));
    if (keywords == NULL || values == NULL) {
        goto failed;
    }

    k = 0;
    hidx = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        keywords[k] = ngx_tenant_pstrdup0(cf->pool, o->keyword);
        values[k] = ngx_tenant_pstrdup0(cf->pool, o->val);
        if (keywords[k] == NULL || values[k] == NULL) {
            goto failed;
        }

        if (o->val == host) {
            hidx = k;
        }

        k++;
    }

    if (service) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"service\" in tenant_database would read the "
                           "service file on every connection; give the "
                           "parameters themselves");
        goto failed;
    }

    if (host && hostaddr == NULL && host[0] != '/' && host[0] != '@') {

        if (ngx_strchr(host, ',')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "several hosts in tenant_database need "
                               "\"hostaddr\": libpq would resolve them on "
                               "a worker");
            goto failed;
        }

        /* every address, in libpq's multi-host form: host=h,h hostaddr=a,b */

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.host.data = (u_char *) host;
        u.host.len = ngx_strlen(host);

        /* naddrs == 0 is defensive: ngx_inet_resolve_host() fails when it
         * finds no address */

        if (ngx_inet_resolve_host(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "host \"%s\" of tenant_database could not be "
                               "resolved", host);
            goto failed;
        }

        addrs = ngx_pnalloc(cf->pool, u.naddrs * (NGX_SOCKADDR_STRLEN + 1));
        hosts = ngx_pnalloc(cf->pool, u.naddrs * (u.host.len + 1));
        if (addrs == NULL || hosts == NULL) {
            goto failed;
        }

        p = addrs;
        q = hosts;

        for (i = 0; i < u.naddrs; i++) {
            if (i) {
                *p++ = ',';
                *q++ = ',';
            }

            p += ngx_sock_ntop(u.addrs[i].sockaddr, u.addrs[i].socklen, p,
                               NGX_SOCKADDR_STRLEN, 0);
            q = ngx_cpymem(q, u.host.data, u.host.len);
        }

        *p = '\0';
        *q = '\0';

        values[hidx] = (char *) hosts;

        keywords[k] = "hostaddr";
        values[k] = (char *) addrs;
        k++;
    }

    info = ngx_palloc(cf->pool, sizeof(ngx_tenant_pg_conn_info_t));
    if (info == NULL) {
        goto failed;
    }

    info->keywords = keywords;
    info->values = values;

    PQconninfoFree(opts);

    return info;

failed:

    PQconninfoFree(opts);
    return NULL;
}




/*
 * The listener's connection sits idle for hours: TCP keepalives make a
 * peer that vanished without closing (a NAT or load balancer forgetting
 * it, a failover) show up as an error, and the listener reconnects.  The
 * connection string's own keepalives settings win.
 */

static ngx_tenant_pg_conn_info_t *
ngx_tenant_conninfo_keepalive(ngx_conf_t *cf, ngx_tenant_pg_conn_info_t *info)
{
    ngx_uint_t                  n, i, k, j;
    ngx_tenant_pg_conn_info_t  *ka;

    static const char  *keys[] = {
        "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count"
    };

    static const char  *vals[] = { "1", "60", "10", "3" };

    for (n = 0; info->keywords[n]; n++) { /* void */ }

    ka = ngx_palloc(cf->pool, sizeof(ngx_tenant_pg_conn_info_t));
    if (ka == NULL) {
        return NULL;
    }

    ka->keywords = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    ka->values = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    if (ka->keywords == NULL || ka->values == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        ka->keywords[i] = info->keywords[i];
        ka->values[i] = info->values[i];
    }

    k = n;

    for (j = 0; j < 4; j++) {
        for (i = 0; i < n; i++) {
            if (ngx_strcmp(info->keywords[i], keys[j]) == 0) {
                break;
            }
        }

        if (i == n) {
            ka->keywords[k] = keys[j];
            ka->values[k] = vals[j];
            k++;
        }
    }

    return ka;
}


/* tenant_cache zone=name:size [ttl=30s] [negative_ttl=5s] [stale=5m]
 *     [listen_ttl=1h]; */

static char *
ngx_tenant_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    time_t       *t;
    ngx_str_t    *value, s;
    ngx_uint_t    i, len;

    if (tmcf->tenant_cache) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            tmcf->tenant_cache = ngx_tenant_cache_add(cf, &s, "tenant",
                                                NGX_TENANT_KEY_MAX,
                                                sizeof(ngx_tenant_entry_t));
            if (tmcf->tenant_cache == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            t = &tmcf->tenant_ttl;
            len = 4;

        } else if (ngx_strncmp(value[i].data, "negative_ttl=", 13) == 0) {
            t = &tmcf->tenant_negative_ttl;
            len = 13;

        } else if (ngx_strncmp(value[i].data, "stale=", 6) == 0) {
            t = &tmcf->tenant_stale;
            len = 6;

        } else if (ngx_strncmp(value[i].data, "listen_ttl=", 11) == 0) {
            t = &tmcf->tenant_listen_ttl;
            len = 11;

        } else {
            goto invalid;
        }

        s.data = value[i].data + len;
        s.len = value[i].len - len;

        *t = ngx_parse_time(&s, 1);
        if (*t == (time_t) NGX_ERROR) {
            goto invalid;
        }
    }

    if (tmcf->tenant_cache == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* tenant_token_cache zone=name:size; */

static char *
ngx_tenant_token_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_str_t  *value, s;

    if (tmcf->token_cache) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "zone=", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    s.data = value[1].data + 5;
    s.len = value[1].len - 5;

    tmcf->token_cache = ngx_tenant_cache_add(cf, &s, "token",
                                             TENANT_SHA256_LEN,
                                             sizeof(ngx_tenant_token_t));
    if (tmcf->token_cache == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * tenant_jwt_key <PEM file>;     (cmd->offset 0)
 * tenant_jwks_file <JSON file>;  (cmd->offset 1)
 *
 * Files are read here, at configuration time, never on a request.
 */

static char *
ngx_tenant_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    int         rc;
    char        err[256];
    ngx_str_t  *value, content;

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_tenant_read_file(cf, &value[1], &content) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    err[0] = '\0';

    if (cmd->offset == 0) {
        rc = tenant_keyset_add_pem(tmcf->keys, content.data, content.len,
                                   NULL, err, sizeof(err));
    } else {
        rc = tenant_keyset_add_jwks(tmcf->keys, content.data, content.len,
                                    err, sizeof(err));
    }

    if (rc != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key in \"%V\": %s", &value[1], err);
        return NGX_CONF_ERROR;
    }

    /* multiplied by the key's position: the same file twice still counts */
    tmcf->policy ^= ngx_crc32_long(content.data, content.len)
                    * (uint32_t) (2 * tmcf->keys->nkeys + 1);

    return NGX_CONF_OK;
}


static char *
ngx_tenant_jwt_algorithms(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (tmcf->algorithms != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    tmcf->algorithms = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 5
            && ngx_strncmp(value[i].data, "RS256", 5) == 0)
        {
            tmcf->algorithms |= TENANT_JWT_RS256;

        } else if (value[i].len == 5
                   && ngx_strncmp(value[i].data, "ES256", 5) == 0)
        {
            tmcf->algorithms |= TENANT_JWT_ES256;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unsupported algorithm \"%V\", "
                               "only RS256 and ES256 are allowed", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_tenant_jwt_authorized_parties(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_str_t   *value, *azp;
    ngx_uint_t   i;

    if (tmcf->azp) {
        return "is duplicate";
    }

    tmcf->azp = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                 sizeof(ngx_str_t));
    if (tmcf->azp == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        azp = ngx_array_push(tmcf->azp);
        if (azp == NULL) {
            return NGX_CONF_ERROR;
        }

        *azp = value[i];
    }

    return NGX_CONF_OK;
}


/* tenant_tier <name> [features=a,b,c|*] [rate=1000r/m] [burst=N]; */

static char *
ngx_tenant_tier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    char           err[256];
    ngx_str_t     *value, spec;
    ngx_uint_t     i, n;
    tenant_rate_t  rate;

    value = cf->args->elts;

    ngx_str_null(&spec);
    n = cf->args->nelts;

    for (i = 2; i < n; i++) {
        if (ngx_strncmp(value[i].data, "features=", 9) == 0) {
            spec.data = value[i].data + 9;
            spec.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) != 0
            && ngx_strncmp(value[i].data, "burst=", 6) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (tenant_tiers_add(tmcf->tiers, (char *) value[1].data, value[1].len,
                         (char *) spec.data, spec.len, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid tier \"%V\": %s",
                           &value[1], err);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&rate, sizeof(tenant_rate_t));

    if (ngx_tenant_rate_params(cf, value, n, 2, &rate, NULL, 1)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    tmcf->tier_rate[tmcf->tiers->ntiers - 1] = rate;

    return NGX_CONF_OK;
}


/*
 * tenant_rate_limit zone=name:size [rate=100/60000ms] [burst=N];
 *
 * The zone of the per-tenant limits, and the rate of tenants whose tier
 * sets none (no rate: only tiers with a rate are limited).
 */

static char *
ngx_tenant_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    ngx_str_t  zone;

    if (tmcf->rl_zone) {
        return "is duplicate";
    }

    ngx_str_null(&zone);

    if (ngx_tenant_rate_params(cf, cf->args->elts, cf->args->nelts, 1,
                               &tmcf->rl_default, &zone, 0)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (zone.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    tmcf->rl_zone = ngx_tenant_cache_add(cf, &zone, "ratelimit",
                                         NGX_TENANT_ID_MAX + 1
                                         + TENANT_CLAIM_MAX,
                                         sizeof(ngx_tenant_rl_value_t));
    if (tmcf->rl_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    /* GCRA states are ngx_current_msec times: they expire by that clock */

    tmcf->rl_zone->monotonic = 1;

    return NGX_CONF_OK;
}


/* tenant_rate_limit_by <value> rate=60r/m [burst=N]; */

static char *
ngx_tenant_rate_limit_by(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_loc_conf_t *tlcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (tlcf->rl_by != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    tlcf->rl_by = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (tlcf->rl_by == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = tlcf->rl_by;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_tenant_rate_params(cf, value, cf->args->nelts, 2,
                               &tlcf->rl_by_rate, NULL, 0)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* defensive: NGX_CONF_2MORE gives a parameter, and every one but
     * rate= is refused above (burst= alone as "burst without rate") */

    if (tlcf->rl_by_rate.limit == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"rate\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The rate=, burst= (and, when zone is not NULL, zone=) parameters of
 * value[first .. n - 1]; features= is left to the caller (a tier's) when
 * "features" is set, refused otherwise, as is anything else.
 */

static char *
ngx_tenant_rate_params(ngx_conf_t *cf, ngx_str_t *value, ngx_uint_t n,
    ngx_uint_t first, tenant_rate_t *rate, ngx_str_t *zone,
    ngx_uint_t features)
{
    char        err[256];
    ngx_int_t   burst;
    ngx_uint_t  i;

    burst = 0;

    for (i = first; i < n; i++) {

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            if (tenant_rate_parse((char *) value[i].data + 5,
                                  value[i].len - 5, rate, err, sizeof(err))
                != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\": %s", &value[i],
                                   err);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (burst <= 0 || burst > TENANT_RATE_MAX_LIMIT) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid burst \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (zone && ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zone->data = value[i].data + 5;
            zone->len = value[i].len - 5;
            continue;
        }

        /* with features set (tenant_tier), every other parameter was
         * refused by ngx_tenant_tier() already */

        if (features && ngx_strncmp(value[i].data, "features=", 9) == 0) {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (burst) {
        if (rate->limit == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"burst\" without \"rate\"");
            return NGX_CONF_ERROR;
        }

        rate->burst = burst;
    }

    return NGX_CONF_OK;
}


/*
 * tenant_admin_role <value> [claim=<path>];
 *
 * The claim that makes a token an administrator's: by default
 * metadata.role (Clerk: public_metadata through a session token template).
 */

static char *
ngx_tenant_admin_role(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    u_char      *p;
    ngx_str_t   *value, path;
    ngx_uint_t   i;

    if (tmcf->admin_role.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > TENANT_CLAIM_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid role \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    tmcf->admin_role = value[1];

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[2].data, "claim=", 6) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    path.data = value[2].data + 6;
    path.len = value[2].len - 6;

    /* member names joined by dots: a.b.c */

    for (i = 0; i < path.len; i++) {
        if (path.data[i] == '.'
            ? (i == 0 || i == path.len - 1 || path.data[i - 1] == '.')
            : !(isalnum(path.data[i]) || path.data[i] == '_'
                || path.data[i] == '-'))
        {
            break;
        }
    }

    if (path.len == 0 || path.len > TENANT_JWT_ROLE_PATH_MAX
        || i != path.len)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid claim path \"%V\", expected member "
                           "names joined by dots", &path);
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, path.len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, path.data, path.len);
    p[path.len] = '\0';

    tmcf->role_claim = (char *) p;

    return NGX_CONF_OK;
}


/* tenant_signing_key <64 hex digits>;  (ENCRYPTION_KEY) */

static char *
ngx_tenant_signing_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    char                 err[256];
    u_char               ikm[32];
    ngx_str_t           *value;
    ngx_pool_cleanup_t  *cln;

    if (tmcf->sign) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the key itself is never quoted in a message */

    if (value[1].len != 64
        || tenant_hex_decode(ikm, (char *) value[1].data, 64) != 32)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be 64 hexadecimal digits", &cmd->name);
        return NGX_CONF_ERROR;
    }

    tmcf->sign = ngx_pcalloc(cf->pool, sizeof(tenant_sign_key_t));
    if (tmcf->sign == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tenant_sign_init(tmcf->sign, ikm, sizeof(ikm), err, sizeof(err))
        != 0)
    {
        ngx_explicit_memzero(ikm, sizeof(ikm));
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s", &cmd->name, err);
        return NGX_CONF_ERROR;
    }

    ngx_explicit_memzero(ikm, sizeof(ikm));

    cln->handler = ngx_tenant_cleanup_sign;
    cln->data = tmcf->sign;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_tenant_read_file(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *out)
{
    ssize_t          n;
    ngx_file_t       file;
    ngx_file_info_t  fi;

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = *name;
    file.log = cf->log;

    /* non-blocking: opening a FIFO must not hang the configuration */

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                            NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", name);
        return NGX_ERROR;
    }

    /* fstat() of a descriptor just opened fails only on EIO or
     * EOVERFLOW */

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi)
        || ngx_file_size(&fi) > 1024 * 1024)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not a readable file of at most 1m",
                           name);
        goto failed;
    }

    out->len = ngx_file_size(&fi);
    out->data = ngx_pnalloc(cf->pool, out->len + 1);
    if (out->data == NULL) {
        goto failed;
    }

    /* a short read only if the file shrank since fstat() */

    n = ngx_read_file(&file, out->data, out->len, 0);
    if (n != (ssize_t) out->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "could not read \"%V\"", name);
        goto failed;
    }

    out->data[out->len] = '\0';

    ngx_close_file(file.fd);
    return NGX_OK;

failed:

    ngx_close_file(file.fd);
    return NGX_ERROR;
}


/* Whether "Bearer <s>" would parse: a secret clients can present. */

ngx_uint_t
ngx_tenant_is_bearer_token(ngx_str_t *s)
{
    u_char               *auth;
    size_t                len;
    const unsigned char  *token;

    auth = ngx_alloc(s->len + sizeof("Bearer "), ngx_cycle->log);
    if (auth == NULL) {
        return 0;
    }

    ngx_memcpy(ngx_cpymem(auth, "Bearer ", 7), s->data, s->len);

    len = 0;

    if (tenant_bearer_token(auth, s->len + 7, &token, &len) != 0) {
        len = 0;
    }

    ngx_free(auth);

    return len == s->len;
}


static char *
ngx_tenant_pstrdup0(ngx_pool_t *pool, const char *s)
{
    char    *p;
    size_t   len;

    len = ngx_strlen(s);

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len + 1);

    return p;
}


static void
ngx_tenant_cleanup_keys(void *data)
{
    tenant_keyset_free(data);
}


static void
ngx_tenant_cleanup_sign(void *data)
{
    tenant_sign_free(data);
}


static ngx_int_t
ngx_tenant_init_process(ngx_cycle_t *cycle)
{
    u_char                  *name;
    ngx_tenant_main_conf_t  *tmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    tmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_tenant_module);

    if (tmcf == NULL) {
        return NGX_OK;
    }

    tmcf->start_time = ngx_time();

    if (tmcf->redis
        && ngx_tenant_redis_init_worker(cycle, tmcf->redis,
                                        tmcf->metrics ? &tmcf->metrics->redis
                                                      : NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (tmcf->db_info == NULL) {
        return NGX_OK;
    }

    name = ngx_pnalloc(cycle->pool, sizeof("ngx_tenant worker ")
                                    + NGX_INT_T_LEN);
    if (name == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name, "ngx_tenant worker %ui%Z", ngx_worker);

    tmcf->pg = ngx_tenant_pg_pool_create(cycle, tmcf->db_info->keywords,
                                         tmcf->db_info->values,
                                         tmcf->db_pool_size,
                                         tmcf->db_timeout,
                                         &tmcf->metrics->db,
                                         (const char *) name);
    if (tmcf->pg == NULL) {
        return NGX_ERROR;
    }

    /* one listener per instance: the first worker's */

    if (tmcf->listen_info && tmcf->tenant_cache
        && (ngx_process == NGX_PROCESS_SINGLE || ngx_worker == 0))
    {
        if (ngx_tenant_listen_init(cycle, tmcf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_tenant_exit_process(ngx_cycle_t *cycle)
{
    ngx_tenant_main_conf_t  *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_tenant_module);

    if (tmcf) {
        ngx_tenant_jwks_exit(tmcf);
        ngx_tenant_redis_exit_worker(tmcf->redis);
    }

    if (tmcf && tmcf->pg) {
        ngx_tenant_pg_pool_destroy(tmcf->pg);
        tmcf->pg = NULL;
    }

    if (tmcf && tmcf->listen_pool) {
        ngx_tenant_listen_exit(tmcf);
        ngx_tenant_pg_pool_destroy(tmcf->listen_pool);
        tmcf->listen_pool = NULL;
    }
}
