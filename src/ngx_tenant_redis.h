/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The gateway's Redis (or Valkey, Render Key Value) client: one
 * connection per worker on nginx's event loop (ngx_event_connect_peer),
 * commands pipelined on it, each with its own timer, replies parsed by
 * tenant_resp.c.  The server's address is resolved at configuration time;
 * nothing here blocks.  A connection is "ready" once its handshake
 * (AUTH, SELECT, SCRIPT LOAD of the rate script) has been answered;
 * commands are sent only on a ready connection.  A connection that fails,
 * answers garbage, or leaves a command unanswered for connect_timeout is
 * closed and made again after a backoff (100 ms doubling to 1 s), so that
 * a Redis that comes back is used again within about a second.
 */

#ifndef _NGX_TENANT_REDIS_H_INCLUDED_
#define _NGX_TENANT_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_tenant.h"
#include "tenant_resp.h"
#include "tenant_ratelimit_redis.h"


/* what a command's handler is told */
#define NGX_TENANT_REDIS_REPLY      0   /* reply is the answer */
#define NGX_TENANT_REDIS_TIMEOUT    1   /* none within the timeout */
#define NGX_TENANT_REDIS_FAILED     2   /* connection lost or broken */

/* fallback= of tenant_redis: what a limit does without an answer */
#define NGX_TENANT_REDIS_FALLBACK_LOCAL  0    /* local, limit / instances */
#define NGX_TENANT_REDIS_FALLBACK_OPEN   1    /* admit */

/* tenant_redis_fallbacks_total{reason} */
#define NGX_TENANT_REDIS_FB_DOWN     0    /* no ready connection */
#define NGX_TENANT_REDIS_FB_TIMEOUT  1
#define NGX_TENANT_REDIS_FB_ERROR    2    /* failed, error reply, bad answer */
#define NGX_TENANT_REDIS_FB_REASONS  3


typedef struct ngx_tenant_redis_cmd_s   ngx_tenant_redis_cmd_t;
typedef struct ngx_tenant_redis_s       ngx_tenant_redis_t;


/*
 * Called once per command, from an event handler (never from inside
 * ngx_tenant_redis_send()), unless the command was cancelled.  reply is
 * valid during the call only; NULL unless rc is NGX_TENANT_REDIS_REPLY.
 * An error reply is a reply (reply->type TENANT_RESP_ERROR), except
 * NOSCRIPT, which the client handles itself (SCRIPT LOAD, then the
 * command again, within the same timeout).
 */
typedef void (*ngx_tenant_redis_handler_pt)(void *data, ngx_uint_t rc,
    tenant_resp_value_t *reply);


/* tenant_redis, in the main conf (tmcf->redis); NULL: not configured */

struct ngx_tenant_redis_conf_s {
    tenant_redis_url_t        url;           /* parsed REDIS_URL */
    ngx_addr_t               *addrs;         /* resolved at conf time */
    ngx_uint_t                naddrs;
    ngx_msec_t                timeout;       /* per command: 5 ms */
    ngx_msec_t                connect_timeout;   /* and handshake: 1 s */
    ngx_uint_t                fallback;      /* NGX_TENANT_REDIS_FALLBACK_ */
    ngx_uint_t                instances;     /* fallback=local divisor: 1 */
    ngx_str_t                 prefix;        /* key prefix: "tenant:rl:" */
    char                      sha[TENANT_RATE_REDIS_SHA1_HEX + 1];

    ngx_tenant_redis_t       *worker;        /* this worker's client */
};


/* Shared-memory counters, in the metrics zone (ngx_tenant_metrics_sh_t). */

#define NGX_TENANT_REDIS_BUCKETS     10

typedef struct {
    ngx_atomic_t              ready;         /* workers with a ready conn */
    ngx_atomic_t              commands;      /* sent */
    ngx_atomic_t              replies;
    ngx_atomic_t              timeouts;
    ngx_atomic_t              errors_connect;
    ngx_atomic_t              errors_protocol;    /* garbage, framing */
    ngx_atomic_t              errors_reply;       /* -ERR ... replies */
    ngx_atomic_t              reconnects;
    /* latency of answered commands: le 0.25, 0.5, 1, 2, 5, 10, 25, 50,
     * 100 ms, +Inf (cumulative when exposed) */
    ngx_atomic_t              latency[NGX_TENANT_REDIS_BUCKETS];
    ngx_atomic_t              latency_us_sum;
    /* the limiter's (ngx_tenant_ratelimit.c) */
    ngx_atomic_t              fallbacks[NGX_TENANT_REDIS_FB_REASONS];
    ngx_atomic_t              held;          /* refused from the local hold */
} ngx_tenant_redis_stats_t;


/* tenant_redis url [timeout=5ms] [connect_timeout=1s]
 *              [fallback=local|open] [instances=N] [prefix=...]; */
char *ngx_tenant_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* init_process / exit_process: this worker's client, connected at once */
ngx_int_t ngx_tenant_redis_init_worker(ngx_cycle_t *cycle,
    ngx_tenant_redis_conf_t *rcf, ngx_tenant_redis_stats_t *stats);
void ngx_tenant_redis_exit_worker(ngx_tenant_redis_conf_t *rcf);

/* 1 while this worker's connection is ready */
ngx_uint_t ngx_tenant_redis_ready(ngx_tenant_redis_conf_t *rcf);

/*
 * Sends argv[0 .. argc) (copied: the caller's buffers may go at once).
 * Returns the command, whose handler is called later; or NULL at once,
 * with nothing sent, when there is no ready connection (Redis down,
 * connecting, stalled) or no memory: the caller decides without Redis.
 */
ngx_tenant_redis_cmd_t *ngx_tenant_redis_send(ngx_tenant_redis_conf_t *rcf,
    const tenant_resp_arg_t *argv, size_t argc,
    ngx_tenant_redis_handler_pt handler, void *data);

/* Its handler will not be called (the request went away); the reply,
 * when it comes, is read and dropped.  Only before the handler has been
 * called: after that the command is the client's (and may be reused). */
void ngx_tenant_redis_cancel(ngx_tenant_redis_cmd_t *cmd);


#endif /* _NGX_TENANT_REDIS_H_INCLUDED_ */
