/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The gateway's Redis client (see ngx_tenant_redis.h): the tenant_redis
 * directive, and one connection per worker on nginx's event loop.
 *
 * Commands are encoded into one write buffer, flushed from the write
 * event, and queued in the order sent: Redis answers in that order, so
 * the queue's head owns the next reply.  A command that times out or is
 * cancelled stays in the queue, without its handler, until its reply
 * comes and is dropped: the stream keeps its framing.
 *
 * The handshake's commands (AUTH, SELECT, SCRIPT LOAD) are pipelined at
 * once and are commands of the queue like any other, marked with their
 * step; the connect timer (connect_timeout) covers the TCP connect and
 * all their replies.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include <time.h>

#include "ngx_tenant.h"
#include "ngx_tenant_redis.h"


#define NGX_TENANT_REDIS_BACKOFF_MIN   100
#define NGX_TENANT_REDIS_BACKOFF_MAX   1000
#define NGX_TENANT_REDIS_LOG_EVERY     10      /* s, a failing connection */

/* the script's answer: TENANT_RATE_REDIS_REPLY integers per key, a few
 * keys; PING, SCRIPT LOAD and errors need far less */
#define NGX_TENANT_REDIS_VALUES        64
#define NGX_TENANT_REDIS_DEPTH         2
#define NGX_TENANT_REDIS_STRING_MAX    (16 * 1024)

#define NGX_TENANT_REDIS_RBUF          4096
#define NGX_TENANT_REDIS_RBUF_MAX      (64 * 1024)
#define NGX_TENANT_REDIS_WBUF          4096
/* beyond this much unsent, Redis is not keeping up: send() says NULL */
#define NGX_TENANT_REDIS_WBUF_MAX      (1024 * 1024)

#define NGX_TENANT_REDIS_DEFAULT_TIMEOUT 5
#define NGX_TENANT_REDIS_DEFAULT_CONNECT 1000
#define NGX_TENANT_REDIS_INSTANCES_MAX 1000

/* connection states */
#define NGX_TENANT_REDIS_IDLE          0       /* none: backoff, exiting */
#define NGX_TENANT_REDIS_CONNECTING    1
#define NGX_TENANT_REDIS_HANDSHAKE     2
#define NGX_TENANT_REDIS_READY         3

/* a command's step; 0: the caller's */
#define NGX_TENANT_REDIS_STEP_AUTH     1
#define NGX_TENANT_REDIS_STEP_SELECT   2
#define NGX_TENANT_REDIS_STEP_LOAD     3       /* of the handshake */
#define NGX_TENANT_REDIS_STEP_RELOAD   4       /* after NOSCRIPT */


struct ngx_tenant_redis_cmd_s {
    ngx_queue_t                   queue;     /* in sent, or in free */
    ngx_tenant_redis_t           *client;
    ngx_tenant_redis_handler_pt   handler;
    void                         *data;
    ngx_event_t                   timer;
    uint64_t                      start_us;  /* first sent */
    ngx_msec_t                    queued;    /* last sent */
    u_char                       *buf;       /* encoded: to resend */
    size_t                        len;
    size_t                        size;
    ngx_uint_t                    step;
    unsigned                      done:1;    /* handler called, cancelled */
    unsigned                      resent:1;
};


struct ngx_tenant_redis_s {
    ngx_tenant_redis_conf_t      *conf;
    ngx_tenant_redis_stats_t     *stats;
    ngx_tenant_redis_stats_t      own;       /* without a metrics zone */
    ngx_log_t                    *log;
    ngx_log_t                     quiet;     /* see ngx_tenant_redis_connect */

    ngx_peer_connection_t         pc;
    ngx_connection_t             *c;
    ngx_uint_t                    state;
    ngx_uint_t                    next_addr;
    ngx_uint_t                    handshake;   /* replies awaited */

    ngx_queue_t                   sent;
    ngx_queue_t                   free;

    u_char                       *wbuf;
    size_t                        wsize;
    size_t                        wpos;
    size_t                        wlast;

    u_char                       *rbuf;
    size_t                        rsize;
    size_t                        rpos;      /* the reply under way */
    size_t                        rlast;

    tenant_resp_parser_t          parser;
    tenant_resp_value_t           values[NGX_TENANT_REDIS_VALUES];

    ngx_event_t                   connect_timer;
    ngx_event_t                   reconnect;
    ngx_event_t                   stall;

    ngx_msec_t                    backoff;
    ngx_uint_t                    attempts;
    ngx_uint_t                    failures;    /* since the last log line */
    time_t                        logged;

    unsigned                      failing:1;
    unsigned                      counted:1;   /* in stats->ready */
    unsigned                      exiting:1;
};


static void ngx_tenant_redis_connect(ngx_tenant_redis_t *rc);
static void ngx_tenant_redis_connected(ngx_tenant_redis_t *rc);
static ngx_err_t ngx_tenant_redis_test_connect(ngx_connection_t *c);
static void ngx_tenant_redis_connect_failed(ngx_tenant_redis_t *rc,
    ngx_err_t err);
static void ngx_tenant_redis_write_handler(ngx_event_t *wev);
static void ngx_tenant_redis_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_tenant_redis_flush(ngx_tenant_redis_t *rc);
static void ngx_tenant_redis_reply(ngx_tenant_redis_t *rc,
    tenant_resp_value_t *reply);
static void ngx_tenant_redis_handshake_reply(ngx_tenant_redis_t *rc,
    ngx_tenant_redis_cmd_t *cmd, tenant_resp_value_t *reply);
static ngx_tenant_redis_cmd_t *ngx_tenant_redis_queue(ngx_tenant_redis_t *rc,
    const tenant_resp_arg_t *argv, size_t argc, ngx_uint_t step);
static ngx_int_t ngx_tenant_redis_append(ngx_tenant_redis_t *rc,
    u_char *data, size_t len);
static ngx_int_t ngx_tenant_redis_queue_load(ngx_tenant_redis_t *rc,
    ngx_uint_t step);
static void ngx_tenant_redis_free_cmd(ngx_tenant_redis_t *rc,
    ngx_tenant_redis_cmd_t *cmd);
static void ngx_tenant_redis_cmd_timeout(ngx_event_t *ev);
static void ngx_tenant_redis_connect_timeout(ngx_event_t *ev);
static void ngx_tenant_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_tenant_redis_stall_handler(ngx_event_t *ev);
static void ngx_tenant_redis_fail(ngx_tenant_redis_t *rc,
    ngx_atomic_t *counter, const char *fmt, ...);
static void ngx_tenant_redis_close(ngx_tenant_redis_t *rc,
    ngx_uint_t notify);
static void ngx_tenant_redis_latency(ngx_tenant_redis_t *rc, uint64_t us);
static uint64_t ngx_tenant_redis_now_us(void);


/* le of tenant_redis_command_duration_seconds, in microseconds */
static uint64_t  ngx_tenant_redis_bounds[NGX_TENANT_REDIS_BUCKETS - 1] = {
    250, 500, 1000, 2000, 5000, 10000, 25000, 50000, 100000
};


/*
 * tenant_redis redis://[user:password@]host[:port][/db]
 *              [timeout=5ms] [connect_timeout=1s] [fallback=local|open]
 *              [instances=N] [prefix=tenant:rl:];
 *
 * Nothing said about a bad URL quotes it: it may hold the password.
 */

char *
ngx_tenant_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tenant_main_conf_t *tmcf = conf;

    u_char                   *p;
    char                      err[256];
    ngx_str_t                *value, s, name;
    ngx_url_t                 u;
    ngx_int_t                 n;
    ngx_uint_t                i;
    ngx_msec_t                ms;
    ngx_tenant_redis_conf_t  *rcf;

    if (tmcf->redis) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rcf = ngx_pcalloc(cf->pool, sizeof(ngx_tenant_redis_conf_t));
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tenant_redis_url_parse(&rcf->url, (const char *) value[1].data,
                               value[1].len, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "tenant_redis: %s", err);
        return NGX_CONF_ERROR;
    }

    rcf->timeout = NGX_TENANT_REDIS_DEFAULT_TIMEOUT;
    rcf->connect_timeout = NGX_TENANT_REDIS_DEFAULT_CONNECT;
    rcf->fallback = NGX_TENANT_REDIS_FALLBACK_LOCAL;
    rcf->instances = 1;
    ngx_str_set(&rcf->prefix, TENANT_RATE_REDIS_PREFIX);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0
            || ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0)
        {
            p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            ms = ngx_parse_time(&s, 0);

            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0 || ms > 60000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "tenant_redis: invalid \"%V\" "
                                   "(a time from 1ms to 60s)", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (value[i].data[0] == 't') {
                rcf->timeout = ms;

            } else {
                rcf->connect_timeout = ms;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "fallback=local") == 0) {
            rcf->fallback = NGX_TENANT_REDIS_FALLBACK_LOCAL;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fallback=open") == 0) {
            rcf->fallback = NGX_TENANT_REDIS_FALLBACK_OPEN;
            continue;
        }

        if (ngx_strncmp(value[i].data, "instances=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);

            if (n == NGX_ERROR || n < 1
                || n > NGX_TENANT_REDIS_INSTANCES_MAX)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "tenant_redis: invalid \"%V\" "
                                   "(a number from 1 to %d)", &value[i],
                                   NGX_TENANT_REDIS_INSTANCES_MAX);
                return NGX_CONF_ERROR;
            }

            rcf->instances = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rcf->prefix.data = value[i].data + 7;
            rcf->prefix.len = value[i].len - 7;

            if (rcf->prefix.len == 0
                || rcf->prefix.len > TENANT_RATE_REDIS_PREFIX_MAX)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "tenant_redis: invalid prefix "
                                   "(1 to %d bytes)",
                                   TENANT_RATE_REDIS_PREFIX_MAX);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        /*
         * Named by what precedes "=" only, and only if that is a plain
         * word: a misplaced URL must not be echoed with its password.
         */

        name.data = value[i].data;
        name.len = 0;

        while (name.len < value[i].len && name.len < 32
               && ((value[i].data[name.len] >= 'a'
                    && value[i].data[name.len] <= 'z')
                   || value[i].data[name.len] == '_'))
        {
            name.len++;
        }

        if (name.len
            && (name.len == value[i].len || value[i].data[name.len] == '='))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "tenant_redis: unknown parameter \"%V\" "
                               "(timeout=, connect_timeout=, fallback=, "
                               "instances=, prefix=)", &name);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "tenant_redis: parameter %ui is not one of "
                               "timeout=, connect_timeout=, fallback=, "
                               "instances=, prefix= (the URL is the first "
                               "and only one)", i);
        }

        return NGX_CONF_ERROR;
    }

    /* resolved here, never on a request's path; a reload resolves again */

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.len = rcf->url.host_len + (rcf->url.ipv6 ? 2 : 0);
    u.url.data = ngx_pnalloc(cf->pool, u.url.len);
    if (u.url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (rcf->url.ipv6) {
        ngx_sprintf(u.url.data, "[%*s]", rcf->url.host_len, rcf->url.host);

    } else {
        ngx_memcpy(u.url.data, rcf->url.host, rcf->url.host_len);
    }

    u.default_port = (in_port_t) rcf->url.port;
    u.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "tenant_redis: cannot resolve the host \"%*s\": "
                           "%s", rcf->url.host_len, rcf->url.host,
                           u.err ? u.err : "no address");
        return NGX_CONF_ERROR;
    }

    rcf->addrs = u.addrs;
    rcf->naddrs = u.naddrs;

    if (tenant_rate_redis_sha1(rcf->sha) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "tenant_redis: the rate script's SHA1 failed");
        return NGX_CONF_ERROR;
    }

    tmcf->redis = rcf;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_tenant_redis_init_worker(ngx_cycle_t *cycle, ngx_tenant_redis_conf_t *rcf,
    ngx_tenant_redis_stats_t *stats)
{
    ngx_tenant_redis_t  *rc;

    rc = ngx_calloc(sizeof(ngx_tenant_redis_t), cycle->log);
    if (rc == NULL) {
        return NGX_ERROR;
    }

    rc->conf = rcf;
    rc->stats = stats ? stats : &rc->own;
    rc->log = cycle->log;

    /*
     * ngx_event_connect_peer() logs a refused connect() at [error] each
     * time; through this log it says nothing below [crit], and the client
     * logs a failing connection once (ngx_tenant_redis_fail).
     */

    rc->quiet = *cycle->log;
    rc->quiet.log_level = NGX_LOG_CRIT;
    rc->quiet.next = NULL;

    ngx_queue_init(&rc->sent);
    ngx_queue_init(&rc->free);

    rc->wbuf = ngx_alloc(NGX_TENANT_REDIS_WBUF, cycle->log);
    rc->rbuf = ngx_alloc(NGX_TENANT_REDIS_RBUF, cycle->log);

    if (rc->wbuf == NULL || rc->rbuf == NULL) {
        ngx_free(rc->wbuf);
        ngx_free(rc->rbuf);
        ngx_free(rc);
        return NGX_ERROR;
    }

    rc->wsize = NGX_TENANT_REDIS_WBUF;
    rc->rsize = NGX_TENANT_REDIS_RBUF;

    /* every timer cancelable: none of them keeps an exiting worker */

    rc->connect_timer.handler = ngx_tenant_redis_connect_timeout;
    rc->connect_timer.data = rc;
    rc->connect_timer.log = rc->log;
    rc->connect_timer.cancelable = 1;

    rc->reconnect.handler = ngx_tenant_redis_reconnect_handler;
    rc->reconnect.data = rc;
    rc->reconnect.log = rc->log;
    rc->reconnect.cancelable = 1;

    rc->stall.handler = ngx_tenant_redis_stall_handler;
    rc->stall.data = rc;
    rc->stall.log = rc->log;
    rc->stall.cancelable = 1;

    rc->backoff = NGX_TENANT_REDIS_BACKOFF_MIN;
    rc->next_addr = ngx_worker;

    rcf->worker = rc;

    ngx_tenant_redis_connect(rc);

    return NGX_OK;
}


void
ngx_tenant_redis_exit_worker(ngx_tenant_redis_conf_t *rcf)
{
    ngx_queue_t             *q;
    ngx_tenant_redis_t      *rc;
    ngx_tenant_redis_cmd_t  *cmd;

    if (rcf == NULL || rcf->worker == NULL) {
        return;
    }

    rc = rcf->worker;
    rc->exiting = 1;

    /* the requests are gone: no handler is called */

    while (!ngx_queue_empty(&rc->sent)) {
        q = ngx_queue_head(&rc->sent);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_tenant_redis_cmd_t, queue);
        cmd->done = 1;
        ngx_tenant_redis_free_cmd(rc, cmd);
    }

    ngx_tenant_redis_close(rc, 0);

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    while (!ngx_queue_empty(&rc->free)) {
        q = ngx_queue_head(&rc->free);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_tenant_redis_cmd_t, queue);
        ngx_free(cmd->buf);
        ngx_free(cmd);
    }

    ngx_free(rc->wbuf);
    ngx_free(rc->rbuf);
    ngx_free(rc);

    rcf->worker = NULL;
}


ngx_uint_t
ngx_tenant_redis_ready(ngx_tenant_redis_conf_t *rcf)
{
    return rcf && rcf->worker
           && rcf->worker->state == NGX_TENANT_REDIS_READY;
}


ngx_tenant_redis_cmd_t *
ngx_tenant_redis_send(ngx_tenant_redis_conf_t *rcf,
    const tenant_resp_arg_t *argv, size_t argc,
    ngx_tenant_redis_handler_pt handler, void *data)
{
    ngx_tenant_redis_t      *rc;
    ngx_tenant_redis_cmd_t  *cmd;

    if (!ngx_tenant_redis_ready(rcf)) {
        return NULL;
    }

    rc = rcf->worker;

    cmd = ngx_tenant_redis_queue(rc, argv, argc, 0);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;

    ngx_add_timer(&cmd->timer, rcf->timeout);

    (void) ngx_atomic_fetch_add(&rc->stats->commands, 1);

    /*
     * Written from the write event, after the current handler: a handler
     * is never called from inside send() (a write error closes the
     * connection and fails the commands), and the commands of one event
     * loop iteration go out together.
     */

    if (!rc->c->write->posted) {
        ngx_post_event(rc->c->write, &ngx_posted_events);
    }

    return cmd;
}


void
ngx_tenant_redis_cancel(ngx_tenant_redis_cmd_t *cmd)
{
    if (cmd == NULL || cmd->done) {
        return;
    }

    cmd->done = 1;
    cmd->handler = NULL;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }
}


static void
ngx_tenant_redis_connect(ngx_tenant_redis_t *rc)
{
    ngx_err_t          err;
    ngx_int_t          rv;
    ngx_addr_t        *addr;
    ngx_connection_t  *c;

    if (rc->exiting || ngx_exiting || ngx_terminate) {
        return;
    }

    if (rc->attempts++) {
        (void) ngx_atomic_fetch_add(&rc->stats->reconnects, 1);
    }

    addr = &rc->conf->addrs[rc->next_addr++ % rc->conf->naddrs];

    ngx_memzero(&rc->pc, sizeof(ngx_peer_connection_t));

    rc->pc.sockaddr = addr->sockaddr;
    rc->pc.socklen = addr->socklen;
    rc->pc.name = &addr->name;
    rc->pc.get = ngx_event_get_peer;
    rc->pc.log = &rc->quiet;
    rc->pc.log_error = NGX_ERROR_INFO;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "tenant redis: connect to %V", rc->pc.name);

    rv = ngx_event_connect_peer(&rc->pc);

    if (rv == NGX_ERROR || rv == NGX_BUSY || rv == NGX_DECLINED) {
        /* connect()'s, kept by the close() after it */
        err = ngx_socket_errno;

        if (rc->pc.connection) {
            ngx_close_connection(rc->pc.connection);
            rc->pc.connection = NULL;
        }

        ngx_tenant_redis_connect_failed(rc, err);
        return;
    }

    c = rc->pc.connection;
    rc->c = c;

    c->data = rc;
    c->log = rc->log;
    c->read->log = rc->log;
    c->write->log = rc->log;
    c->log_error = NGX_ERROR_INFO;
    c->read->handler = ngx_tenant_redis_read_handler;
    c->write->handler = ngx_tenant_redis_write_handler;

    rc->state = NGX_TENANT_REDIS_CONNECTING;

    ngx_add_timer(&rc->connect_timer, rc->conf->connect_timeout);

    if (rv == NGX_OK) {
        ngx_tenant_redis_connected(rc);
    }

    /* NGX_AGAIN: the write event says when */
}


/* TCP is up: the handshake, all of it at once */

static void
ngx_tenant_redis_connected(ngx_tenant_redis_t *rc)
{
    size_t              n;
    u_char              db[NGX_INT_T_LEN];
    tenant_resp_arg_t   argv[3];

    rc->state = NGX_TENANT_REDIS_HANDSHAKE;
    rc->handshake = 0;

    /* constant bounds, within the parser's ranges */

    (void) tenant_resp_parser_init(&rc->parser, rc->values,
                                   NGX_TENANT_REDIS_VALUES,
                                   NGX_TENANT_REDIS_STRING_MAX,
                                   NGX_TENANT_REDIS_DEPTH);

    if (rc->conf->url.auth) {
        n = 0;
        argv[n].data = (const unsigned char *) "AUTH";
        argv[n++].len = 4;

        if (rc->conf->url.user_len) {
            argv[n].data = (const unsigned char *) rc->conf->url.user;
            argv[n++].len = rc->conf->url.user_len;
        }

        argv[n].data = (const unsigned char *) rc->conf->url.password;
        argv[n++].len = rc->conf->url.password_len;

        if (ngx_tenant_redis_queue(rc, argv, n, NGX_TENANT_REDIS_STEP_AUTH)
            == NULL)
        {
            goto failed;
        }

        rc->handshake++;
    }

    if (rc->conf->url.db) {
        argv[0].data = (const unsigned char *) "SELECT";
        argv[0].len = 6;
        argv[1].data = db;
        argv[1].len = ngx_sprintf(db, "%ui", (ngx_uint_t) rc->conf->url.db)
                      - db;

        if (ngx_tenant_redis_queue(rc, argv, 2, NGX_TENANT_REDIS_STEP_SELECT)
            == NULL)
        {
            goto failed;
        }

        rc->handshake++;
    }

    if (ngx_tenant_redis_queue_load(rc, NGX_TENANT_REDIS_STEP_LOAD)
        != NGX_OK)
    {
        goto failed;
    }

    rc->handshake++;

    if (ngx_tenant_redis_flush(rc) != NGX_OK) {
        ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                              "cannot write to Redis at %V", rc->pc.name);
    }

    return;

failed:

    ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                          "no memory for the Redis handshake");
}


/* the result of a non-blocking connect(): 0, or its error */

static ngx_err_t
ngx_tenant_redis_test_connect(ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    return err;
}


static void
ngx_tenant_redis_connect_failed(ngx_tenant_redis_t *rc, ngx_err_t err)
{
    u_char  *p, text[NGX_MAX_ERROR_STR];

    if (err == 0) {
        ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                              "cannot connect to Redis at %V", rc->pc.name);
        return;
    }

    p = ngx_strerror(err, text, sizeof(text));

    ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                          "cannot connect to Redis at %V (%d: %*s)",
                          rc->pc.name, err, p - text, text);
}


static void
ngx_tenant_redis_write_handler(ngx_event_t *wev)
{
    ngx_err_t            err;
    ngx_connection_t    *c;
    ngx_tenant_redis_t  *rc;

    c = wev->data;
    rc = c->data;

    if (rc->state == NGX_TENANT_REDIS_CONNECTING) {
        err = ngx_tenant_redis_test_connect(c);

        if (err) {
            ngx_tenant_redis_connect_failed(rc, err);
            return;
        }

        ngx_tenant_redis_connected(rc);
        return;
    }

    if (ngx_tenant_redis_flush(rc) != NGX_OK) {
        ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                              "the connection to Redis at %V was lost "
                              "(write)", rc->pc.name);
    }
}


static ngx_int_t
ngx_tenant_redis_flush(ngx_tenant_redis_t *rc)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = rc->c;

    while (rc->wpos < rc->wlast) {

        n = c->send(c, rc->wbuf + rc->wpos, rc->wlast - rc->wpos);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        rc->wpos += n;
    }

    if (rc->wpos == rc->wlast) {
        rc->wpos = 0;
        rc->wlast = 0;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_tenant_redis_read_handler(ngx_event_t *rev)
{
    int                  rv;
    u_char              *p;
    size_t               used, size;
    ssize_t              n;
    ngx_err_t            err;
    ngx_connection_t    *c;
    ngx_tenant_redis_t  *rc;

    c = rev->data;
    rc = c->data;

    if (rc->state == NGX_TENANT_REDIS_CONNECTING) {
        /* the write event completes the connect; an error may come here */

        err = ngx_tenant_redis_test_connect(c);

        if (err) {
            ngx_tenant_redis_connect_failed(rc, err);
        }

        return;
    }

    for ( ;; ) {

        if (rc->rlast == rc->rsize) {

            if (rc->rpos) {
                /* the parser allows its reply's bytes to move */
                ngx_memmove(rc->rbuf, rc->rbuf + rc->rpos,
                            rc->rlast - rc->rpos);
                rc->rlast -= rc->rpos;
                rc->rpos = 0;

            } else if (rc->rsize < NGX_TENANT_REDIS_RBUF_MAX) {
                size = rc->rsize * 2;

                p = ngx_alloc(size, rc->log);
                if (p == NULL) {
                    ngx_tenant_redis_fail(rc, &rc->stats->errors_protocol,
                                          "no memory for a Redis reply");
                    return;
                }

                ngx_memcpy(p, rc->rbuf, rc->rlast);
                ngx_free(rc->rbuf);
                rc->rbuf = p;
                rc->rsize = size;

            } else {
                ngx_tenant_redis_fail(rc, &rc->stats->errors_protocol,
                                      "a reply of Redis at %V is longer "
                                      "than %uz bytes", rc->pc.name,
                                      (size_t) NGX_TENANT_REDIS_RBUF_MAX);
                return;
            }
        }

        n = c->recv(c, rc->rbuf + rc->rlast, rc->rsize - rc->rlast);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                                  "the connection to Redis at %V was lost",
                                  rc->pc.name);
            return;
        }

        rc->rlast += n;

        while (rc->rpos < rc->rlast) {

            rv = tenant_resp_parse(&rc->parser, rc->rbuf + rc->rpos,
                                   rc->rlast - rc->rpos, &used);

            if (rv == TENANT_RESP_AGAIN) {
                break;
            }

            if (rv == TENANT_RESP_INVALID) {
                ngx_tenant_redis_fail(rc, &rc->stats->errors_protocol,
                                      "Redis at %V broke the protocol: %s",
                                      rc->pc.name, rc->parser.error);
                return;
            }

            rc->rpos += used;

            ngx_tenant_redis_reply(rc, rc->values);

            if (rc->c != c) {
                /* the reply closed the connection */
                return;
            }
        }

        if (rc->rpos == rc->rlast) {
            rc->rpos = 0;
            rc->rlast = 0;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                              "the connection to Redis at %V was lost",
                              rc->pc.name);
    }
}


/* The reply of the queue's head. */

static void
ngx_tenant_redis_reply(ngx_tenant_redis_t *rc, tenant_resp_value_t *reply)
{
    ngx_queue_t             *q;
    ngx_tenant_redis_cmd_t  *cmd;

    if (ngx_queue_empty(&rc->sent)) {
        ngx_tenant_redis_fail(rc, &rc->stats->errors_protocol,
                              "Redis at %V answered a command not sent",
                              rc->pc.name);
        return;
    }

    q = ngx_queue_head(&rc->sent);
    cmd = ngx_queue_data(q, ngx_tenant_redis_cmd_t, queue);

    if (cmd->step) {
        ngx_tenant_redis_handshake_reply(rc, cmd, reply);
        return;
    }

    /*
     * NOSCRIPT: Redis restarted or its scripts were flushed.  Loaded
     * again, and the command sent again after it, once, within its own
     * timer; the caller sees only the second answer.
     */

    if (tenant_resp_error_code(reply, "NOSCRIPT")
        && !cmd->resent && !cmd->done)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "tenant redis: NOSCRIPT, loading the script again");

        ngx_queue_remove(q);

        if (ngx_tenant_redis_queue_load(rc, NGX_TENANT_REDIS_STEP_RELOAD)
            == NGX_OK
            && ngx_tenant_redis_append(rc, cmd->buf, cmd->len) == NGX_OK)
        {
            cmd->resent = 1;
            cmd->queued = ngx_current_msec;
            ngx_queue_insert_tail(&rc->sent, &cmd->queue);

            if (!rc->c->write->posted) {
                ngx_post_event(rc->c->write, &ngx_posted_events);
            }

            return;
        }

        ngx_queue_insert_head(&rc->sent, &cmd->queue);

        /* no memory: the caller gets the NOSCRIPT */
    }

    (void) ngx_atomic_fetch_add(&rc->stats->replies, 1);
    ngx_tenant_redis_latency(rc, ngx_tenant_redis_now_us() - cmd->start_us);

    if (reply->type == TENANT_RESP_ERROR) {
        (void) ngx_atomic_fetch_add(&rc->stats->errors_reply, 1);
    }

    ngx_queue_remove(q);

    if (!cmd->done) {
        cmd->done = 1;

        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        if (cmd->handler) {
            cmd->handler(cmd->data, NGX_TENANT_REDIS_REPLY, reply);
        }

    } else {
        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "tenant redis: late reply dropped");
    }

    ngx_tenant_redis_free_cmd(rc, cmd);
}


static void
ngx_tenant_redis_handshake_reply(ngx_tenant_redis_t *rc,
    ngx_tenant_redis_cmd_t *cmd, tenant_resp_value_t *reply)
{
    size_t       len;
    ngx_uint_t   step;
    const char  *what;

    step = cmd->step;

    ngx_queue_remove(&cmd->queue);
    ngx_tenant_redis_free_cmd(rc, cmd);

    switch (step) {

    case NGX_TENANT_REDIS_STEP_AUTH:
        what = "AUTH";
        if (tenant_resp_simple_is(reply, "OK")) {
            goto next;
        }
        break;

    case NGX_TENANT_REDIS_STEP_SELECT:
        what = "SELECT";
        if (tenant_resp_simple_is(reply, "OK")) {
            goto next;
        }
        break;

    default: /* NGX_TENANT_REDIS_STEP_LOAD, NGX_TENANT_REDIS_STEP_RELOAD */
        what = "SCRIPT LOAD";
        if (reply->type == TENANT_RESP_BULK
            && reply->len == TENANT_RATE_REDIS_SHA1_HEX
            && ngx_strncmp(reply->data, rc->conf->sha,
                           TENANT_RATE_REDIS_SHA1_HEX) == 0)
        {
            if (step == NGX_TENANT_REDIS_STEP_RELOAD) {
                return;
            }

            goto next;
        }
        break;
    }

    /* Redis's own words: they never hold the password */

    if (reply->type == TENANT_RESP_ERROR) {
        len = ngx_min(reply->len, 200);

        ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                              "Redis at %V refused %s: %*s", rc->pc.name,
                              what, len, reply->data);

    } else {
        ngx_tenant_redis_fail(rc, &rc->stats->errors_protocol,
                              "Redis at %V answered %s unexpectedly",
                              rc->pc.name, what);
    }

    return;

next:

    if (--rc->handshake) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "tenant redis: %V ready", rc->pc.name);

    rc->state = NGX_TENANT_REDIS_READY;
    rc->backoff = NGX_TENANT_REDIS_BACKOFF_MIN;

    if (rc->connect_timer.timer_set) {
        ngx_del_timer(&rc->connect_timer);
    }

    if (!rc->counted) {
        rc->counted = 1;
        (void) ngx_atomic_fetch_add(&rc->stats->ready, 1);
    }

    if (rc->failing) {
        ngx_log_error(NGX_LOG_NOTICE, rc->log, 0,
                      "tenant: Redis at %V is ready again (%ui failures "
                      "since the last report)", rc->pc.name, rc->failures);
        rc->failing = 0;
        rc->failures = 0;
    }
}


/* Encodes, queues and appends a command to the write buffer. */

static ngx_tenant_redis_cmd_t *
ngx_tenant_redis_queue(ngx_tenant_redis_t *rc, const tenant_resp_arg_t *argv,
    size_t argc, ngx_uint_t step)
{
    size_t                   len;
    ngx_queue_t             *q;
    ngx_tenant_redis_cmd_t  *cmd;

    len = tenant_resp_command_len(argv, argc);
    if (len == 0 || len > NGX_TENANT_REDIS_WBUF_MAX) {
        return NULL;
    }

    if (!ngx_queue_empty(&rc->free)) {
        q = ngx_queue_head(&rc->free);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_tenant_redis_cmd_t, queue);

    } else {
        cmd = ngx_calloc(sizeof(ngx_tenant_redis_cmd_t), rc->log);
        if (cmd == NULL) {
            return NULL;
        }

        cmd->client = rc;
        cmd->timer.handler = ngx_tenant_redis_cmd_timeout;
        cmd->timer.data = cmd;
        cmd->timer.log = rc->log;
        cmd->timer.cancelable = 1;
    }

    if (cmd->size < len) {
        ngx_free(cmd->buf);

        cmd->buf = ngx_alloc(len, rc->log);
        if (cmd->buf == NULL) {
            cmd->size = 0;
            ngx_queue_insert_head(&rc->free, &cmd->queue);
            return NULL;
        }

        cmd->size = len;
    }

    cmd->len = tenant_resp_command(cmd->buf, cmd->size, argv, argc);

    if (ngx_tenant_redis_append(rc, cmd->buf, cmd->len) != NGX_OK) {
        ngx_queue_insert_head(&rc->free, &cmd->queue);
        return NULL;
    }

    cmd->handler = NULL;
    cmd->data = NULL;
    cmd->step = step;
    cmd->done = 0;
    cmd->resent = 0;
    cmd->start_us = ngx_tenant_redis_now_us();
    cmd->queued = ngx_current_msec;

    ngx_queue_insert_tail(&rc->sent, &cmd->queue);

    if (!rc->stall.timer_set) {
        ngx_add_timer(&rc->stall, rc->conf->connect_timeout);
    }

    return cmd;
}


static ngx_int_t
ngx_tenant_redis_append(ngx_tenant_redis_t *rc, u_char *data, size_t len)
{
    u_char  *p;
    size_t   size;

    if (rc->wsize - rc->wlast < len && rc->wpos) {
        ngx_memmove(rc->wbuf, rc->wbuf + rc->wpos, rc->wlast - rc->wpos);
        rc->wlast -= rc->wpos;
        rc->wpos = 0;
    }

    if (rc->wsize - rc->wlast < len) {
        size = rc->wsize;

        while (size - rc->wlast < len) {
            size *= 2;
        }

        if (size > NGX_TENANT_REDIS_WBUF_MAX) {
            return NGX_DECLINED;
        }

        p = ngx_alloc(size, rc->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, rc->wbuf, rc->wlast);
        ngx_free(rc->wbuf);
        rc->wbuf = p;
        rc->wsize = size;
    }

    ngx_memcpy(rc->wbuf + rc->wlast, data, len);
    rc->wlast += len;

    return NGX_OK;
}


static ngx_int_t
ngx_tenant_redis_queue_load(ngx_tenant_redis_t *rc, ngx_uint_t step)
{
    tenant_resp_arg_t  argv[3];

    argv[0].data = (const unsigned char *) "SCRIPT";
    argv[0].len = 6;
    argv[1].data = (const unsigned char *) "LOAD";
    argv[1].len = 4;
    argv[2].data = (const unsigned char *) tenant_rate_redis_script;
    argv[2].len = tenant_rate_redis_script_len;

    return ngx_tenant_redis_queue(rc, argv, 3, step) ? NGX_OK : NGX_ERROR;
}


/* cmd is out of the sent queue */

static void
ngx_tenant_redis_free_cmd(ngx_tenant_redis_t *rc, ngx_tenant_redis_cmd_t *cmd)
{
    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    cmd->handler = NULL;
    cmd->data = NULL;

    ngx_queue_insert_head(&rc->free, &cmd->queue);
}


static void
ngx_tenant_redis_cmd_timeout(ngx_event_t *ev)
{
    ngx_tenant_redis_cmd_t  *cmd = ev->data;

    /* stays queued: its reply, if it comes, is read and dropped */

    cmd->done = 1;

    (void) ngx_atomic_fetch_add(&cmd->client->stats->timeouts, 1);

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "tenant redis: command timed out");

    if (cmd->handler) {
        cmd->handler(cmd->data, NGX_TENANT_REDIS_TIMEOUT, NULL);
    }
}


static void
ngx_tenant_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_tenant_redis_t  *rc = ev->data;

    ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                          "Redis at %V did not %s within %M ms",
                          rc->pc.name,
                          rc->state == NGX_TENANT_REDIS_CONNECTING
                          ? "accept the connection" : "answer the handshake",
                          rc->conf->connect_timeout);
}


static void
ngx_tenant_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_tenant_redis_connect(ev->data);
}


/*
 * A ready connection whose oldest command has waited connect_timeout
 * is stalled (a stopped or overloaded Redis): every later command would
 * time out too, so it is closed and made again.
 */

static void
ngx_tenant_redis_stall_handler(ngx_event_t *ev)
{
    ngx_tenant_redis_t  *rc = ev->data;

    ngx_msec_t               age;
    ngx_tenant_redis_cmd_t  *cmd;

    if (rc->c == NULL || ngx_queue_empty(&rc->sent)) {
        return;
    }

    cmd = ngx_queue_data(ngx_queue_head(&rc->sent), ngx_tenant_redis_cmd_t,
                         queue);

    age = ngx_current_msec - cmd->queued;

    if (age < rc->conf->connect_timeout) {
        ngx_add_timer(&rc->stall, rc->conf->connect_timeout - age);
        return;
    }

    if (rc->state != NGX_TENANT_REDIS_READY) {
        /* the connect timer's */
        return;
    }

    ngx_tenant_redis_fail(rc, &rc->stats->errors_connect,
                          "Redis at %V left a command unanswered for %M ms",
                          rc->pc.name, age);
}


/*
 * A connection failed, or a connect did: closed, its commands failed,
 * another connect after the backoff.  Logged at [error] when the client
 * starts failing, then at most every NGX_TENANT_REDIS_LOG_EVERY seconds
 * with how many failures since: a Redis outage is one line, not one per
 * retry.
 */

static void
ngx_tenant_redis_fail(ngx_tenant_redis_t *rc, ngx_atomic_t *counter,
    const char *fmt, ...)
{
    u_char   *p, msg[NGX_MAX_ERROR_STR];
    va_list   args;

    (void) ngx_atomic_fetch_add(counter, 1);

    rc->failures++;

    if (!rc->failing
        || ngx_time() - rc->logged >= NGX_TENANT_REDIS_LOG_EVERY)
    {
        va_start(args, fmt);
        p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
        va_end(args);

        if (rc->failing) {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                          "tenant: %*s (%ui failures in %T s)",
                          p - msg, msg, rc->failures,
                          ngx_time() - rc->logged);

        } else {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0, "tenant: %*s",
                          p - msg, msg);
        }

        rc->failing = 1;
        rc->failures = 0;
        rc->logged = ngx_time();
    }

    ngx_tenant_redis_close(rc, 1);

    if (rc->exiting || ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_add_timer(&rc->reconnect, rc->backoff);

    rc->backoff = ngx_min(rc->backoff * 2, NGX_TENANT_REDIS_BACKOFF_MAX);
}


/*
 * Closes the connection; with notify, the commands waiting on it are
 * told NGX_TENANT_REDIS_FAILED.  Their handlers may send again: they
 * get NULL, the client not being ready.
 */

static void
ngx_tenant_redis_close(ngx_tenant_redis_t *rc, ngx_uint_t notify)
{
    ngx_queue_t              failed, *q;
    ngx_tenant_redis_cmd_t  *cmd;

    if (rc->counted) {
        rc->counted = 0;
        (void) ngx_atomic_fetch_add(&rc->stats->ready, -1);
    }

    rc->state = NGX_TENANT_REDIS_IDLE;

    if (rc->c) {
        ngx_close_connection(rc->c);
        rc->c = NULL;
    }

    rc->pc.connection = NULL;

    if (rc->connect_timer.timer_set) {
        ngx_del_timer(&rc->connect_timer);
    }

    if (rc->stall.timer_set) {
        ngx_del_timer(&rc->stall);
    }

    rc->wpos = 0;
    rc->wlast = 0;
    rc->rpos = 0;
    rc->rlast = 0;
    rc->handshake = 0;

    /* taken out first: a handler must find the client consistent */

    ngx_queue_init(&failed);

    while (!ngx_queue_empty(&rc->sent)) {
        q = ngx_queue_head(&rc->sent);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&failed, q);
    }

    while (!ngx_queue_empty(&failed)) {
        q = ngx_queue_head(&failed);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_tenant_redis_cmd_t, queue);

        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        if (notify && !cmd->done && cmd->handler) {
            cmd->done = 1;
            cmd->handler(cmd->data, NGX_TENANT_REDIS_FAILED, NULL);
        }

        ngx_tenant_redis_free_cmd(rc, cmd);
    }
}


static void
ngx_tenant_redis_latency(ngx_tenant_redis_t *rc, uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_TENANT_REDIS_BUCKETS - 1; i++) {
        if (us <= ngx_tenant_redis_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&rc->stats->latency[i], 1);
    (void) ngx_atomic_fetch_add(&rc->stats->latency_us_sum, us);
}


/* a command's latency is below the event loop's millisecond clock */

static uint64_t
ngx_tenant_redis_now_us(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return (uint64_t) ngx_current_msec * 1000;
    }

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
