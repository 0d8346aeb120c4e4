/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Counters in a shared-memory zone ("tenant_metrics", created with the
 * module's configuration and kept across reloads), so that every
 * worker's requests are counted once, and the tenant_metrics handler
 * that exposes them in Prometheus' text format (version 0.0.4), to the
 * machine itself and, with tenant_metrics_token, to the bearer of the
 * token.
 */

#ifndef _NGX_TENANT_METRICS_H_INCLUDED_
#define _NGX_TENANT_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"
#include "ngx_tenant_redis.h"


/* tier slots: 0 for requests without a tenant, then one per tier name
 * seen since the zone was made, the last one for any other */
#define NGX_TENANT_METRIC_TIERS    (TENANT_TIERS_MAX + 2)
#define NGX_TENANT_METRIC_NONE     0
#define NGX_TENANT_METRIC_OTHER    (NGX_TENANT_METRIC_TIERS - 1)


struct ngx_tenant_metrics_sh_s {
    u_char                  tier[NGX_TENANT_METRIC_TIERS][TENANT_NAME_MAX + 1];
    ngx_atomic_t            requests[NGX_TENANT_METRIC_TIERS]
                                    [NGX_TENANT_NOUTCOMES];
    ngx_tenant_pg_stats_t   db;
    ngx_tenant_redis_stats_t redis;

    /* the worker that listens for tenant changes (0: none), and when the
     * last one stopped listening (ngx_tenant_listen.c) */
    ngx_atomic_t            listener;
    ngx_atomic_t            listener_lost;
};


ngx_int_t ngx_tenant_metrics_init_conf(ngx_conf_t *cf,
    ngx_tenant_main_conf_t *tmcf);
ngx_int_t ngx_tenant_metrics_log_handler(ngx_http_request_t *r);
char *ngx_tenant_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_tenant_metrics_token(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_TENANT_METRICS_H_INCLUDED_ */
