/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Types shared by the nginx glue of ngx_tenant_module.
 */

#ifndef _NGX_TENANT_H_INCLUDED_
#define _NGX_TENANT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "tenant_jwt.h"
#include "tenant_jwks.h"
#include "tenant_tiers.h"
#include "tenant_problem.h"
#include "tenant_sign.h"
#include "tenant_request.h"
#include "tenant_ratelimit.h"
#include "tenant_ratelimit_redis.h"
#include "tenant_route.h"


#define NGX_TENANT_ID_MAX         40      /* uuid text is 36 */
#define NGX_TENANT_SLUG_MAX       64
#define NGX_TENANT_SCHEMA_MAX     72
#define NGX_TENANT_STATUS_MAX     16


typedef struct ngx_tenant_pg_pool_s  ngx_tenant_pg_pool_t;
typedef struct ngx_tenant_cache_s    ngx_tenant_cache_t;
typedef struct ngx_tenant_jwks_s     ngx_tenant_jwks_t;


typedef struct {
    ngx_uint_t                configured;
    ngx_uint_t                keys;            /* the document's */
    time_t                    age;             /* -1: never fetched */
    ngx_atomic_uint_t         ok;
    ngx_atomic_uint_t         failed;
} ngx_tenant_jwks_stats_t;


/* What became of a request on a gateway location, for metrics. */

typedef enum {
    NGX_TENANT_OUT_ADMITTED = 0,
    NGX_TENANT_OUT_PREFLIGHT,
    NGX_TENANT_OUT_UNAUTHORIZED,
    NGX_TENANT_OUT_BAD_REQUEST,
    NGX_TENANT_OUT_FORBIDDEN,
    NGX_TENANT_OUT_FEATURE_DENIED,
    NGX_TENANT_OUT_TRIAL_EXPIRED,
    NGX_TENANT_OUT_RATE_LIMITED,
    NGX_TENANT_OUT_UNAVAILABLE,
    NGX_TENANT_OUT_ERROR,
    NGX_TENANT_NOUTCOMES
} ngx_tenant_outcome_e;


#define NGX_TENANT_PG_BUCKETS     12
#define NGX_TENANT_PG_WORKERS     64      /* gauges kept per worker */


/*
 * The database pool's counters, in the metrics zone; the connection
 * gauges have a slot per worker (ngx_worker), zeroed when a worker
 * starts, so that a worker that died leaves nothing behind.
 */

typedef struct {
    ngx_atomic_t              open[NGX_TENANT_PG_WORKERS];
    ngx_atomic_t              busy[NGX_TENANT_PG_WORKERS];
    ngx_atomic_t              queries;
    ngx_atomic_t              errors;
    ngx_atomic_t              connects;
    ngx_atomic_t              connect_errors;
    ngx_atomic_t              latency[NGX_TENANT_PG_BUCKETS + 1];
    ngx_atomic_t              latency_ms;      /* sum */
} ngx_tenant_pg_stats_t;


typedef struct ngx_tenant_metrics_sh_s  ngx_tenant_metrics_sh_t;
typedef struct ngx_tenant_redis_conf_s  ngx_tenant_redis_conf_t;


/* libpq connection parameters, NULL-terminated, for PQconnectStartParams */

typedef struct {
    const char              **keywords;
    const char              **values;
} ngx_tenant_pg_conn_info_t;


/*
 * A tenant as a request sees it (ngx_tenant_ctx_t.tenant): every field
 * at its full size.  The cache keeps it packed (ngx_tenant_entry_t).
 */

typedef struct {
    time_t              fetched;          /* loaded from the database at */
    time_t              trial_ends_at;    /* 0: none */
    time_t              refresh_at;       /* a refresh runs until then */
    uint32_t            rate_limit;       /* per-tenant override, 0: none */
    u_char              found;            /* 0: negative entry */
    u_char              recheck;          /* refresh before its TTL */

    u_char              id_len;
    u_char              slug_len;
    u_char              schema_len;
    u_char              tier_len;
    u_char              status_len;
    u_char              org_id_len;

    u_char              id[NGX_TENANT_ID_MAX];
    u_char              slug[NGX_TENANT_SLUG_MAX];
    u_char              schema[NGX_TENANT_SCHEMA_MAX];
    u_char              tier[TENANT_NAME_MAX];
    u_char              status[NGX_TENANT_STATUS_MAX];
    u_char              org_id[TENANT_ORG_ID_MAX];
} ngx_tenant_record_t;


/*
 * A tenant as cached in shared memory: 152 bytes, so that with its key
 * (the organization id up to NGX_TENANT_KEY_MAX - 1 bytes, a SHA-256 of a
 * longer one) and the node's header it takes a slab chunk of 256 bytes:
 * 4,096 entries a MB, ~120,000 in 32 MB (t/089-tenant-entries.t).  The
 * texts are packed one after the other: id, slug, schema, tier, status; a
 * schema named after the slug (tenant_<slug, - as _>, as
 * public.create_tenant() names it) is not stored (schema_len 0).  A row
 * whose texts do not fit is not cached (ngx_tenant_lookup.c).
 */

#define NGX_TENANT_KEY_MAX        32
#define NGX_TENANT_PACKED_MAX     117

typedef struct {
    time_t              fetched;
    time_t              trial_ends_at;
    time_t              refresh_at;
    uint32_t            rate_limit;
    u_char              found;
    u_char              recheck;
    u_char              id_len;
    u_char              slug_len;
    u_char              schema_len;       /* 0: tenant_<slug> */
    u_char              tier_len;
    u_char              status_len;
    u_char              text[NGX_TENANT_PACKED_MAX];
} ngx_tenant_entry_t;


/* A verified token as cached in shared memory: 152 bytes, a node of 256
 * (t/138-token-cache.t counts the entries a zone holds). */

typedef struct {
    uint32_t             policy;          /* ngx_tenant_main_conf_t.policy */
    tenant_jwt_packed_t  claims;
} ngx_tenant_token_t;


typedef struct {
    /* PostgreSQL */
    ngx_str_t                 db_conninfo;
    ngx_uint_t                db_pool_size;
    ngx_msec_t                db_timeout;
    ngx_tenant_pg_conn_info_t *db_info;
    ngx_tenant_pg_pool_t     *pg;              /* per worker */
    ngx_tenant_pg_conn_info_t *listen_info;    /* NULL: off */
    ngx_uint_t                listen_set;
    ngx_tenant_pg_pool_t     *listen_pool;     /* the first worker's */
    ngx_str_t                 cron_secret;
    u_char                    cron_digest[TENANT_SHA256_LEN];
    ngx_str_t                 admin_role;
    char                     *role_claim;      /* NULL: metadata.role */
    ngx_flag_t                admin_session;   /* admin needs a "sid" */

    /* caches */
    ngx_tenant_cache_t       *tenant_cache;
    time_t                    tenant_ttl;
    time_t                    tenant_negative_ttl;
    time_t                    tenant_stale;
    time_t                    tenant_listen_ttl;  /* the listener up */
    ngx_tenant_cache_t       *token_cache;

    /* JWT */
    tenant_keyset_t          *keys;            /* the configuration's */
    ngx_tenant_jwks_t        *jwks;            /* tenant_jwks_request */
    ngx_uint_t                algorithms;
    time_t                    leeway;
    ngx_str_t                 issuer;
    ngx_array_t              *azp;             /* of ngx_str_t */
    const char              **azp_ptrs;
    size_t                   *azp_lens;
    uint32_t                  policy;          /* crc32 of all of the above */

    /* tiers and signing */
    tenant_tiers_t           *tiers;
    tenant_sign_key_t        *sign;

    /* rate limits: the tier's, else the default (limit 0: none) */
    ngx_tenant_cache_t       *rl_zone;
    tenant_rate_t             rl_default;
    tenant_rate_t             tier_rate[TENANT_TIERS_MAX];

    /* tenant_redis: the limits counted in Redis; NULL: locally */
    ngx_tenant_redis_conf_t  *redis;

    /* metrics */
    ngx_shm_zone_t           *metrics_zone;
    ngx_tenant_metrics_sh_t  *metrics;
    ngx_uint_t                tier_slot[TENANT_TIERS_MAX];

    time_t                    start_time;
} ngx_tenant_main_conf_t;


#define NGX_TENANT_GATEWAY_OFF    0
#define NGX_TENANT_GATEWAY_ON     1
#define NGX_TENANT_GATEWAY_ADMIN  2


typedef struct {
    ngx_uint_t                gateway;
    ngx_int_t                 feature;         /* -1: none */
    ngx_str_t                 feature_name;
    ngx_array_t              *routes;          /* of tenant_route_t */
    ngx_flag_t                cors_preflight;
    ngx_uint_t                refusal_log_level;
    ngx_str_t                 problem_type_base;
    ngx_http_complex_value_t *upgrade_url;

    /* a second limit, per value within the tenant (e.g. per user) */
    ngx_http_complex_value_t *rl_by;
    tenant_rate_t             rl_by_rate;

    /* tenant_metrics_token: the SHA-256 of the token; NULL: none */
    u_char                   *metrics_token;
} ngx_tenant_loc_conf_t;


typedef enum {
    NGX_TENANT_STATE_START = 0,
    NGX_TENANT_STATE_WAIT_KEYS,
    NGX_TENANT_STATE_WAIT_DB,
    NGX_TENANT_STATE_RESOLVED,
    NGX_TENANT_STATE_WAIT_RATE,
    NGX_TENANT_STATE_RATED,
    NGX_TENANT_STATE_DONE
} ngx_tenant_state_e;


typedef enum {
    NGX_TENANT_DB_FOUND = 1,
    NGX_TENANT_DB_NOT_FOUND,
    NGX_TENANT_DB_ERROR
} ngx_tenant_db_result_e;


typedef struct ngx_tenant_pg_req_s  ngx_tenant_pg_req_t;


/*
 * A key's value in the rate-limit zone: the local limiter's GCRA state
 * (a tenant_rate_now() time), and, with tenant_redis, the local
 * over-limit hold of the key at a rate (Redis counts each rate under its
 * own name: a hold at another rate, from before a reload or from another
 * location's tenant_rate_limit_by, says nothing).
 */
typedef struct {
    int64_t                   tat;
    tenant_rate_hold_t        hold;
    tenant_rate_t             hold_rate;       /* the rate refused at */
} ngx_tenant_rl_value_t;


/* $tenant_ratelimit_source */
typedef enum {
    NGX_TENANT_RL_NONE = 0,            /* no limit applied */
    NGX_TENANT_RL_LOCAL,               /* the local limiter */
    NGX_TENANT_RL_REDIS,               /* Redis answered */
    NGX_TENANT_RL_HOLD,                /* refused from the local hold */
    NGX_TENANT_RL_OPEN                 /* fallback=open, no answer */
} ngx_tenant_rl_source_e;


/* Per request. */

typedef struct {
    ngx_tenant_state_e        state;
    ngx_tenant_db_result_e    db_result;
    ngx_tenant_pg_req_t      *query;

    /* what the client said, read before its tenant headers are removed */
    ngx_str_t                 org;
    ngx_uint_t                norg;

    /* waiting for keys (tenant_jwks_request) */
    void                     *jwks_fetch;      /* our own subrequest */
    void                     *jwks_waiter;     /* or another's */
    unsigned                  jwks_waited:1;

    tenant_jwt_claims_t       claims;
    u_char                    org_id[TENANT_ORG_ID_MAX + 1];
    size_t                    org_id_len;

    ngx_tenant_record_t       tenant;
    unsigned                  has_tenant:1;
    unsigned                  admin:1;
    void                     *admin_ctx;
    unsigned                  admitted:1;

    ngx_str_t                 outcome;         /* for $tenant_outcome */
    ngx_tenant_outcome_e      outcome_id;
    unsigned                  counted:1;
    unsigned                  url_escape:1;    /* $tenant_* in a URL */
    ngx_str_t                 required_tier;
    ngx_str_t                 feature;         /* refused: its name */

    /* rate limits applied, for the RateLimit headers and variables */
    unsigned                  rl_set:1;
    unsigned                  rl_by_set:1;
    tenant_rate_t             rl_rate;
    tenant_rate_result_t      rl;
    tenant_rate_t             rl_by_rate;
    tenant_rate_result_t      rl_by;

    /* tenant_redis: the command out, what the limit was decided by */
    void                     *rl_cmd;
    void                     *rl_redis;        /* ngx_tenant_rl_redis_t */
    ngx_tenant_rl_source_e    rl_source;
    unsigned                  rl_refused:1;
} ngx_tenant_ctx_t;


extern ngx_module_t  ngx_tenant_module;


/* ngx_tenant_access.c */
ngx_int_t ngx_tenant_access_handler(ngx_http_request_t *r);
ngx_tenant_ctx_t *ngx_tenant_get_ctx(ngx_http_request_t *r);

/* ngx_tenant_lookup.c */
ngx_int_t ngx_tenant_lookup(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx);
void ngx_tenant_lookup_invalidate(ngx_tenant_main_conf_t *tmcf,
    u_char *org_id, size_t len);

/* ngx_tenant_log.c */
ngx_int_t ngx_tenant_log_post_read_handler(ngx_http_request_t *r);

/* ngx_tenant_ratelimit.c */
ngx_int_t ngx_tenant_ratelimit(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_loc_conf_t *tlcf,
    ngx_tenant_ctx_t *ctx);
ngx_int_t ngx_tenant_ratelimit_filter_init(ngx_conf_t *cf);
void ngx_tenant_ratelimit_cancel(ngx_tenant_ctx_t *ctx);
ngx_str_t *ngx_tenant_ratelimit_source(ngx_tenant_ctx_t *ctx);
uint64_t ngx_tenant_ratelimit_seconds(tenant_rate_result_t *res);

/* ngx_tenant_headers.c */
void ngx_tenant_headers_read_org(ngx_http_request_t *r,
    ngx_str_t *org, ngx_uint_t *count);
ngx_int_t ngx_tenant_headers_strip(ngx_http_request_t *r);
ngx_int_t ngx_tenant_headers_same_origin(ngx_http_request_t *r,
    ngx_uint_t body);
ngx_int_t ngx_tenant_headers_inject(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx);
ngx_int_t ngx_tenant_headers_init(ngx_conf_t *cf);
ngx_int_t ngx_tenant_variables_add(ngx_conf_t *cf);
ngx_uint_t ngx_tenant_variable_is_own(ngx_str_t *name);

/* ngx_tenant_problem.c */
ngx_int_t ngx_tenant_problem_send(ngx_http_request_t *r,
    tenant_problem_t *p);
ngx_int_t ngx_tenant_json_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);
ngx_int_t ngx_tenant_empty_send(ngx_http_request_t *r, ngx_uint_t status);
ngx_int_t ngx_tenant_problem_answer(ngx_http_request_t *r,
    tenant_problem_t *pb, ngx_uint_t status, char *code, char *title,
    char *detail);
ngx_int_t ngx_tenant_body_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len);
ngx_table_elt_t *ngx_tenant_header_out(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);

/* ngx_tenant_health.c */
char *ngx_tenant_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* ngx_tenant_jwks.c */
char *ngx_tenant_jwks_request(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
tenant_keyset_t *ngx_tenant_jwks_keys(ngx_tenant_main_conf_t *tmcf,
    ngx_log_t *log, uint32_t *policy);
void ngx_tenant_jwks_refresh(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf);
ngx_int_t ngx_tenant_jwks_wait(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx,
    ngx_uint_t background);
ngx_int_t ngx_tenant_jwks_waiting(ngx_http_request_t *r,
    ngx_tenant_main_conf_t *tmcf, ngx_tenant_ctx_t *ctx);
void ngx_tenant_jwks_stop_waiting(ngx_tenant_ctx_t *ctx);
void ngx_tenant_jwks_exit(ngx_tenant_main_conf_t *tmcf);
ngx_int_t ngx_tenant_jwks_filter_init(ngx_conf_t *cf);
void ngx_tenant_jwks_stats(ngx_tenant_main_conf_t *tmcf,
    ngx_tenant_jwks_stats_t *st);

/* ngx_tenant_listen.c */
ngx_int_t ngx_tenant_listen_init(ngx_cycle_t *cycle,
    ngx_tenant_main_conf_t *tmcf);
void ngx_tenant_listen_exit(ngx_tenant_main_conf_t *tmcf);

/* ngx_tenant_admin.c */
char *ngx_tenant_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* ngx_tenant_cron.c */
char *ngx_tenant_cron_expire_trials(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_tenant_module.c */
ngx_uint_t ngx_tenant_is_bearer_token(ngx_str_t *s);


#endif /* _NGX_TENANT_H_INCLUDED_ */
