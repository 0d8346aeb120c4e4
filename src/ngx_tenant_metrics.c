/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Allocation failures fail the configuration (the zone) or answer
 * /metrics with 500; tests do not provoke them (class A of
 * docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"
#include "ngx_tenant_cache.h"
#include "ngx_tenant_metrics.h"


#define NGX_TENANT_METRICS_SIZE   (64 * 1024)


static ngx_int_t ngx_tenant_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_tenant_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_tenant_metrics_authorize(ngx_http_request_t *r,
    u_char *digest);
static ngx_uint_t ngx_tenant_metrics_loopback(struct sockaddr *sa);
static ngx_int_t ngx_tenant_metrics_refuse(ngx_http_request_t *r,
    ngx_uint_t sent);
static u_char *ngx_tenant_metrics_family(u_char *p, char *name,
    char *type, char *help);
static u_char *ngx_tenant_metrics_redis(u_char *p,
    ngx_tenant_redis_stats_t *st);
static u_char *ngx_tenant_metrics_caches(u_char *p,
    ngx_tenant_main_conf_t *tmcf, char *family, ngx_uint_t field);


#define NGX_TENANT_CACHE_HITS       0
#define NGX_TENANT_CACHE_MISSES     1
#define NGX_TENANT_CACHE_ENTRIES    2
#define NGX_TENANT_CACHE_EVICTIONS  3


static ngx_str_t  ngx_tenant_outcome_names[] = {
    ngx_string("admitted"),
    ngx_string("preflight"),
    ngx_string("unauthorized"),
    ngx_string("bad_request"),
    ngx_string("forbidden"),
    ngx_string("feature_denied"),
    ngx_string("trial_expired"),
    ngx_string("rate_limited"),
    ngx_string("unavailable"),
    ngx_string("error")
};


/* upper bounds of the database latency buckets (ngx_tenant_pg.c counts
 * them in ms: 1, 2, 5, ... 5000) */

static char  *ngx_tenant_pg_bounds_text[NGX_TENANT_PG_BUCKETS] = {
    "0.001", "0.002", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5"
};


static ngx_uint_t  ngx_tenant_metrics_tag;


ngx_int_t
ngx_tenant_metrics_init_conf(ngx_conf_t *cf, ngx_tenant_main_conf_t *tmcf)
{
    ngx_shm_zone_t  *zone;

    static ngx_str_t  name = ngx_string("tenant_metrics");

    zone = ngx_shared_memory_add(cf, &name, NGX_TENANT_METRICS_SIZE,
                                 &ngx_tenant_metrics_tag);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_tenant_metrics_init_zone;
    zone->data = tmcf;

    tmcf->metrics_zone = zone;

    return NGX_OK;
}


/*
 * The zone outlives reloads; tier names get a slot each the first time
 * they are configured, and keep it, so that counters stay with their tier
 * whatever the order of tenant_tier directives.
 */

static ngx_int_t
ngx_tenant_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_tenant_main_conf_t  *otmcf = data;

    size_t                    len;
    ngx_uint_t                i, s;
    ngx_slab_pool_t          *shpool;
    ngx_tenant_main_conf_t   *tmcf;
    ngx_tenant_metrics_sh_t  *sh;

    tmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (otmcf) {
        sh = otmcf->metrics;

    } else if (shm_zone->shm.exists) {  /* Windows only */
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_tenant_metrics_sh_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        shpool->data = sh;
    }

    tmcf->metrics = sh;

    for (i = 0; i < tmcf->tiers->ntiers; i++) {
        len = tmcf->tiers->tiers[i].name_len;

        for (s = 1; s < NGX_TENANT_METRIC_OTHER; s++) {
            if (sh->tier[s][0] == '\0'
                || (ngx_strlen(sh->tier[s]) == len
                    && ngx_strncmp(sh->tier[s], tmcf->tiers->tiers[i].name,
                                   len) == 0))
            {
                break;
            }
        }

        if (s < NGX_TENANT_METRIC_OTHER && sh->tier[s][0] == '\0') {
            ngx_memcpy(sh->tier[s], tmcf->tiers->tiers[i].name, len);
            sh->tier[s][len] = '\0';
        }

        tmcf->tier_slot[i] = s;
    }

    return NGX_OK;
}


/* Log phase: every request of a gateway location counts once. */

ngx_int_t
ngx_tenant_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t               slot;
    ngx_tenant_ctx_t        *ctx;
    const tenant_tier_t     *tier;
    ngx_tenant_main_conf_t  *tmcf;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_tenant_get_ctx(r);

    /* counted is defensive: the log phase runs once per main request */

    if (ctx == NULL || ctx->counted) {
        return NGX_OK;
    }

    ctx->counted = 1;

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);

    /* defensive: a ctx exists only under tenant_gateway, which needs
     * tenant_database, which adds the metrics zone */

    if (tmcf->metrics == NULL) {
        return NGX_OK;
    }

    slot = NGX_TENANT_METRIC_NONE;

    if (ctx->has_tenant) {
        tier = tenant_tiers_find(tmcf->tiers, (char *) ctx->tenant.tier,
                                 ctx->tenant.tier_len);

        slot = tier ? tmcf->tier_slot[tier - tmcf->tiers->tiers]
                    : NGX_TENANT_METRIC_OTHER;
    }

    (void) ngx_atomic_fetch_add(
               &tmcf->metrics->requests[slot][ctx->outcome_id], 1);

    return NGX_OK;
}


char *
ngx_tenant_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_tenant_metrics_handler;

    return NGX_CONF_OK;
}


/*
 * tenant_metrics_token: the token is kept as its SHA-256 only (see
 * ngx_tenant_metrics_authorize()); at least 32 characters that a client
 * can send after "Bearer ", like tenant_cron_secret.
 */

char *
ngx_tenant_metrics_token(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_loc_conf_t *tlcf = conf;

    ngx_str_t  *value;

    if (tlcf->metrics_token != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_metrics_token\" must be at least 32 "
                           "characters");
        return NGX_CONF_ERROR;
    }

    if (!ngx_tenant_is_bearer_token(&value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_metrics_token\" must be a bearer "
                           "token: letters, digits and -._~+/ (trailing =)");
        return NGX_CONF_ERROR;
    }

    tlcf->metrics_token = ngx_palloc(cf->pool, TENANT_SHA256_LEN);
    if (tlcf->metrics_token == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tenant_secret_digest(value[1].data, value[1].len, tlcf->metrics_token)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tenant_metrics_token\": SHA-256 failed");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_tenant_metrics_handler(ngx_http_request_t *r)
{
    u_char                   *body, *p;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_str_t                 type = ngx_string("text/plain; version=0.0.4");
    ngx_uint_t                s, o, i, cum, open, busy, workers;
    ngx_core_conf_t          *ccf;
    ngx_tenant_metrics_sh_t  *m;
    ngx_tenant_loc_conf_t    *tlcf;
    ngx_tenant_main_conf_t   *tmcf;
    ngx_tenant_jwks_stats_t   jwks;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tenant_module);

    if (tlcf->metrics_token) {
        rc = ngx_tenant_metrics_authorize(r, tlcf->metrics_token);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tenant_module);
    m = tmcf->metrics;

    if (m == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    len = 4096
          + NGX_TENANT_METRIC_TIERS * NGX_TENANT_NOUTCOMES
            * (sizeof("tenant_requests_total{outcome=\"\",tier=\"\"} \n")
               + 16 + TENANT_NAME_MAX + NGX_ATOMIC_T_LEN)
          + 4 * 1024
          + NGX_TENANT_PG_BUCKETS * 96
          + 4 * 1024
          + NGX_TENANT_REDIS_BUCKETS * 96;

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = body;

    p = ngx_tenant_metrics_family(p, "tenant_requests_total", "counter",
            "Requests to gateway locations, by outcome and by the tenant's "
            "tier (\"\": no tenant resolved).");

    for (s = 0; s < NGX_TENANT_METRIC_TIERS; s++) {

        if (s != NGX_TENANT_METRIC_NONE && s != NGX_TENANT_METRIC_OTHER
            && m->tier[s][0] == '\0')
        {
            continue;
        }

        for (o = 0; o < NGX_TENANT_NOUTCOMES; o++) {

            if (s == NGX_TENANT_METRIC_OTHER && m->requests[s][o] == 0) {
                continue;
            }

            p = ngx_sprintf(p, "tenant_requests_total{outcome=\"%V\","
                            "tier=\"%s\"} %uA\n",
                            &ngx_tenant_outcome_names[o],
                            s == NGX_TENANT_METRIC_OTHER ? (u_char *) "other"
                                                         : m->tier[s],
                            m->requests[s][o]);
        }
    }

    p = ngx_tenant_metrics_family(p, "tenant_cache_hits_total", "counter",
            "Lookups answered by a shared-memory cache.");
    p = ngx_tenant_metrics_caches(p, tmcf, "tenant_cache_hits_total",
                                  NGX_TENANT_CACHE_HITS);

    p = ngx_tenant_metrics_family(p, "tenant_cache_misses_total", "counter",
            "Lookups a shared-memory cache could not answer.");
    p = ngx_tenant_metrics_caches(p, tmcf, "tenant_cache_misses_total",
                                  NGX_TENANT_CACHE_MISSES);

    p = ngx_tenant_metrics_family(p, "tenant_cache_entries", "gauge",
            "Entries in a shared-memory zone.");
    p = ngx_tenant_metrics_caches(p, tmcf, "tenant_cache_entries",
                                  NGX_TENANT_CACHE_ENTRIES);

    p = ngx_tenant_metrics_family(p, "tenant_cache_evictions_total", "counter",
            "Entries dropped before their time to make room.");
    p = ngx_tenant_metrics_caches(p, tmcf, "tenant_cache_evictions_total",
                                  NGX_TENANT_CACHE_EVICTIONS);

    p = ngx_tenant_metrics_family(p, "tenant_db_queries_total", "counter",
            "Queries sent to PostgreSQL.");
    p = ngx_sprintf(p, "tenant_db_queries_total %uA\n", m->db.queries);

    p = ngx_tenant_metrics_family(p, "tenant_db_errors_total", "counter",
            "Queries and connections that failed or timed out.");
    p = ngx_sprintf(p, "tenant_db_errors_total %uA\n",
                    m->db.errors + m->db.connect_errors);

    p = ngx_tenant_metrics_family(p, "tenant_db_connects_total", "counter",
            "Connections opened to PostgreSQL (reconnects included).");
    p = ngx_sprintf(p, "tenant_db_connects_total %uA\n", m->db.connects);

    open = 0;
    busy = 0;
    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);
    workers = ngx_min((ngx_uint_t) ccf->worker_processes,
                      NGX_TENANT_PG_WORKERS);

    for (i = 0; i < workers; i++) {
        open += m->db.open[i];
        busy += m->db.busy[i];
    }

    p = ngx_tenant_metrics_family(p, "tenant_db_connections", "gauge",
            "Connections of the workers' pools to PostgreSQL, open and "
            "busy with a query.");
    p = ngx_sprintf(p, "tenant_db_connections{state=\"open\"} %ui\n"
                    "tenant_db_connections{state=\"busy\"} %ui\n",
                    open, busy);

    p = ngx_tenant_metrics_family(p, "tenant_db_pool_capacity", "gauge",
            "Connections the workers' pools may open (pool= times the "
            "workers).");
    p = ngx_sprintf(p, "tenant_db_pool_capacity %ui\n",
                    tmcf->db_pool_size * workers);

    p = ngx_tenant_metrics_family(p, "tenant_db_query_duration_seconds",
            "histogram", "Time from sending a query to its result.");

    cum = 0;

    for (i = 0; i < NGX_TENANT_PG_BUCKETS; i++) {
        cum += m->db.latency[i];
        p = ngx_sprintf(p, "tenant_db_query_duration_seconds_bucket"
                        "{le=\"%s\"} %ui\n",
                        ngx_tenant_pg_bounds_text[i], cum);
    }

    cum += m->db.latency[NGX_TENANT_PG_BUCKETS];

    p = ngx_sprintf(p, "tenant_db_query_duration_seconds_bucket{le=\"+Inf\"} "
                    "%ui\n"
                    "tenant_db_query_duration_seconds_sum %uA.%03uA\n"
                    "tenant_db_query_duration_seconds_count %ui\n",
                    cum, m->db.latency_ms / 1000, m->db.latency_ms % 1000,
                    cum);

    if (tmcf->redis) {
        p = ngx_tenant_metrics_redis(p, &m->redis);
    }

    ngx_tenant_jwks_stats(tmcf, &jwks);

    if (jwks.configured) {
        p = ngx_tenant_metrics_family(p, "tenant_jwks_fetches_total",
                "counter", "JWKS fetches (tenant_jwks_request), by result: "
                "\"error\" kept the last good keys.");
        p = ngx_sprintf(p, "tenant_jwks_fetches_total{result=\"ok\"} %uA\n"
                        "tenant_jwks_fetches_total{result=\"error\"} %uA\n",
                        jwks.ok, jwks.failed);

        p = ngx_tenant_metrics_family(p, "tenant_jwks_keys", "gauge",
                "Keys of the fetched JWKS in use.");
        p = ngx_sprintf(p, "tenant_jwks_keys %ui\n", jwks.keys);

        p = ngx_tenant_metrics_family(p, "tenant_jwks_age_seconds", "gauge",
                "Time since the JWKS was last fetched well (-1: never).");
        p = ngx_sprintf(p, "tenant_jwks_age_seconds %T\n", jwks.age);
    }

    return ngx_tenant_body_send(r, NGX_HTTP_OK, &type, body, p - body);
}


/*
 * With a token, a connection from this machine is served without one (the
 * container's own checks, an operator's shell): both its ends on a
 * loopback address.  The local end cannot be forged by a header, and
 * packets to a loopback address come from this machine only; the peer's
 * address is the one nginx's allow/deny see, which the realip module may
 * have replaced (a proxy on this machine forwarding public requests).
 * Every other request needs "Authorization: Bearer <token>" (the scheme
 * in any case), its SHA-256 compared in constant time with the token's:
 * neither the token nor its length shows in the time taken.  A second
 * Authorization header is nginx's 400 before any handler runs.
 * NGX_DECLINED: go on; anything else is the refusal's answer.
 */

static ngx_int_t
ngx_tenant_metrics_authorize(ngx_http_request_t *r, u_char *digest)
{
    size_t                len;
    ngx_connection_t     *c;
    ngx_table_elt_t      *h;
    const unsigned char  *token;

    c = r->connection;

    /* ngx_connection_local_sockaddr() fails only when getsockname() or
     * an allocation does: then the token decides */

    if (ngx_connection_local_sockaddr(c, NULL, 0) == NGX_OK
        && ngx_tenant_metrics_loopback(c->local_sockaddr)
        && ngx_tenant_metrics_loopback(c->sockaddr))
    {
        return NGX_DECLINED;
    }

    h = r->headers_in.authorization;

    if (h == NULL) {
        return ngx_tenant_metrics_refuse(r, 0);
    }

    if (tenant_bearer_token(h->value.data, h->value.len, &token, &len) != 0
        || tenant_secret_matches(digest, token, len) != 1)
    {
        return ngx_tenant_metrics_refuse(r, 1);
    }

    return NGX_DECLINED;
}


/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104; a unix socket is not */

static ngx_uint_t
ngx_tenant_metrics_loopback(struct sockaddr *sa)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            return sin6->sin6_addr.s6_addr[12] == 127;
        }

        return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
#endif

    default:
        return 0;
    }
}


/*
 * 401 problem+json with "WWW-Authenticate: Bearer realm="metrics"", and
 * error="invalid_token" when credentials were sent (RFC 6750, 3).  The
 * log line says which; never what was sent.
 */

static ngx_int_t
ngx_tenant_metrics_refuse(ngx_http_request_t *r, ngx_uint_t sent)
{
    ngx_str_t               value;
    ngx_table_elt_t        *h;
    tenant_problem_t        pb;
    ngx_tenant_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tenant_module);

    ngx_log_error(tlcf->refusal_log_level, r->connection->log, 0,
                  "tenant: metrics refused: %s",
                  sent ? "not the metrics token" : "no bearer token");

    if (sent) {
        ngx_str_set(&value,
                    "Bearer realm=\"metrics\", error=\"invalid_token\"");

    } else {
        ngx_str_set(&value, "Bearer realm=\"metrics\"");
    }

    h = ngx_tenant_header_out(r, "WWW-Authenticate", value.data, value.len);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.www_authenticate = h;

    ngx_memzero(&pb, sizeof(tenant_problem_t));

    if (sent) {
        return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_UNAUTHORIZED,
                                         "invalid_token",
                                         "Invalid metrics token", NULL);
    }

    return ngx_tenant_problem_answer(r, &pb, NGX_HTTP_UNAUTHORIZED,
                                     "authentication_required",
                                     "Metrics token required", NULL);
}


static u_char *
ngx_tenant_metrics_family(u_char *p, char *name, char *type, char *help)
{
    return ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                       type);
}


/* tenant_redis: the workers' clients and the limiter's fallbacks */

static u_char *
ngx_tenant_metrics_redis(u_char *p, ngx_tenant_redis_stats_t *st)
{
    ngx_uint_t         i, cum;
    ngx_atomic_int_t   ready;

    static char  *bounds[NGX_TENANT_REDIS_BUCKETS - 1] = {
        "0.00025", "0.0005", "0.001", "0.002", "0.005", "0.01", "0.025",
        "0.05", "0.1"
    };

    /* a worker that died without its exit_process leaves its count */
    ready = (ngx_atomic_int_t) st->ready;

    p = ngx_tenant_metrics_family(p, "tenant_redis_up", "gauge",
            "1 if a worker has a ready connection to Redis, else 0.");
    p = ngx_sprintf(p, "tenant_redis_up %d\n", ready > 0 ? 1 : 0);

    p = ngx_tenant_metrics_family(p, "tenant_redis_commands_total",
            "counter", "Commands sent to Redis (the handshake's not "
            "counted).");
    p = ngx_sprintf(p, "tenant_redis_commands_total %uA\n", st->commands);

    p = ngx_tenant_metrics_family(p, "tenant_redis_timeouts_total",
            "counter", "Commands unanswered within the timeout.");
    p = ngx_sprintf(p, "tenant_redis_timeouts_total %uA\n", st->timeouts);

    p = ngx_tenant_metrics_family(p, "tenant_redis_errors_total", "counter",
            "Failures, by kind: connect (connect, handshake, connection "
            "lost or stalled), protocol (a reply that is not RESP), reply "
            "(an error reply to a command).");
    p = ngx_sprintf(p, "tenant_redis_errors_total{kind=\"connect\"} %uA\n"
                    "tenant_redis_errors_total{kind=\"protocol\"} %uA\n"
                    "tenant_redis_errors_total{kind=\"reply\"} %uA\n",
                    st->errors_connect, st->errors_protocol,
                    st->errors_reply);

    p = ngx_tenant_metrics_family(p, "tenant_redis_reconnects_total",
            "counter", "Connections to Redis made again after one failed "
            "or was lost.");
    p = ngx_sprintf(p, "tenant_redis_reconnects_total %uA\n",
                    st->reconnects);

    p = ngx_tenant_metrics_family(p, "tenant_redis_command_duration_seconds",
            "histogram", "Time from sending a command to its reply (late "
            "replies included).");

    cum = 0;

    for (i = 0; i < NGX_TENANT_REDIS_BUCKETS - 1; i++) {
        cum += st->latency[i];
        p = ngx_sprintf(p, "tenant_redis_command_duration_seconds_bucket"
                        "{le=\"%s\"} %ui\n", bounds[i], cum);
    }

    cum += st->latency[NGX_TENANT_REDIS_BUCKETS - 1];

    p = ngx_sprintf(p, "tenant_redis_command_duration_seconds_bucket"
                    "{le=\"+Inf\"} %ui\n"
                    "tenant_redis_command_duration_seconds_sum %uA.%06uA\n"
                    "tenant_redis_command_duration_seconds_count %ui\n",
                    cum, st->latency_us_sum / 1000000,
                    st->latency_us_sum % 1000000, cum);

    p = ngx_tenant_metrics_family(p, "tenant_redis_fallbacks_total",
            "counter", "Limits decided without Redis, by reason: down (no "
            "ready connection), timeout, error.");
    p = ngx_sprintf(p, "tenant_redis_fallbacks_total{reason=\"down\"} %uA\n"
                    "tenant_redis_fallbacks_total{reason=\"timeout\"} %uA\n"
                    "tenant_redis_fallbacks_total{reason=\"error\"} %uA\n",
                    st->fallbacks[NGX_TENANT_REDIS_FB_DOWN],
                    st->fallbacks[NGX_TENANT_REDIS_FB_TIMEOUT],
                    st->fallbacks[NGX_TENANT_REDIS_FB_ERROR]);

    p = ngx_tenant_metrics_family(p, "tenant_redis_held_total", "counter",
            "Refusals answered from the local over-limit hold, without a "
            "command.");
    p = ngx_sprintf(p, "tenant_redis_held_total %uA\n", st->held);

    return p;
}


/* One line per zone: the tenant, token and rate-limit zones. */

static u_char *
ngx_tenant_metrics_caches(u_char *p, ngx_tenant_main_conf_t *tmcf,
    char *family, ngx_uint_t field)
{
    ngx_uint_t              i;
    ngx_atomic_uint_t       v;
    ngx_tenant_cache_t     *caches[3];
    ngx_tenant_cache_sh_t  *sh;

    static char  *names[3] = { "tenant", "token", "ratelimit" };

    caches[0] = tmcf->tenant_cache;
    caches[1] = tmcf->token_cache;
    caches[2] = tmcf->rl_zone;

    for (i = 0; i < 3; i++) {
        /* sh == NULL is defensive: every zone's init sets it */

        if (caches[i] == NULL || caches[i]->sh == NULL) {
            continue;
        }

        sh = caches[i]->sh;

        switch (field) {

        case NGX_TENANT_CACHE_HITS:
            if (i == 2) {
                continue;
            }

            v = sh->hits;
            break;

        case NGX_TENANT_CACHE_MISSES:
            if (i == 2) {
                continue;
            }

            v = sh->misses;
            break;

        case NGX_TENANT_CACHE_ENTRIES:
            v = sh->entries;
            break;

        default: /* NGX_TENANT_CACHE_EVICTIONS */
            v = sh->evictions;
            break;
        }

        p = ngx_sprintf(p, "%s{cache=\"%s\"} %uA\n", family, names[i], v);
    }

    return p;
}
