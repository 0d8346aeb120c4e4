/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Failures of libpq to allocate a connection, or of epoll_ctl(), fail the
 * request with 503 like a refused connection; tests do not provoke them
 * (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_tenant_pg.h"


#define NGX_TENANT_PG_RETRY        1000      /* ms after a failure */


typedef enum {
    NGX_TENANT_PG_FREE = 0,                  /* no PGconn */
    NGX_TENANT_PG_CONNECTING,
    NGX_TENANT_PG_IDLE,
    NGX_TENANT_PG_BUSY
} ngx_tenant_pg_state_e;


struct ngx_tenant_pg_conn_s {
    ngx_tenant_pg_state_e      state;
    PGconn                    *pgconn;
    ngx_connection_t          *c;
    ngx_tenant_pg_req_t       *req;
    PGresult                  *res;
    ngx_tenant_pg_pool_t      *pool;
    ngx_log_t                  log;          /* own copy, for its action */

    /* BUSY without a request: its query timed out, the answer is awaited
     * until this timer's deadline (ngx_tenant_pg_hold) */
    ngx_event_t                hold;
    ngx_msec_t                 sent_at;
    unsigned                   held:1;
};


struct ngx_tenant_pg_pool_s {
    const char *const         *keywords;
    const char *const         *values;
    ngx_msec_t                 timeout;
    ngx_log_t                 *log;

    ngx_tenant_pg_conn_t      *conns;
    ngx_uint_t                 size;

    ngx_queue_t                waiting;
    ngx_msec_t                 retry_at;     /* fail fast until then */
    ngx_uint_t                 down;

    ngx_tenant_pg_stats_t     *stats;        /* in shared memory */
    ngx_uint_t                 slot;         /* this worker's gauges */

    ngx_tenant_pg_notify_pt    notify;
    ngx_tenant_pg_closed_pt    closed;
    void                      *watch_data;
};


static ngx_int_t ngx_tenant_pg_connect(ngx_tenant_pg_conn_t *conn);
static ngx_int_t ngx_tenant_pg_attach(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_unregister(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_detach(ngx_tenant_pg_conn_t *conn);
static ngx_int_t ngx_tenant_pg_want_write(ngx_tenant_pg_conn_t *conn,
    ngx_uint_t want);
static void ngx_tenant_pg_poll(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_send(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_receive(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_event_handler(ngx_event_t *ev);
static void ngx_tenant_pg_timeout_handler(ngx_event_t *ev);
static void ngx_tenant_pg_fail(ngx_tenant_pg_conn_t *conn,
    const char *what);
static void ngx_tenant_pg_fail_later(ngx_tenant_pg_req_t *req);
static void ngx_tenant_pg_down(ngx_tenant_pg_pool_t *pool);
static u_char *ngx_tenant_pg_error(ngx_tenant_pg_conn_t *conn,
    size_t *len);
static void ngx_tenant_pg_close(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_hold(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_unhold(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_hold_handler(ngx_event_t *ev);
static void ngx_tenant_pg_state(ngx_tenant_pg_conn_t *conn,
    ngx_tenant_pg_state_e state);
static void ngx_tenant_pg_retry(ngx_tenant_pg_conn_t *conn,
    ngx_tenant_pg_req_t *req);
static void ngx_tenant_pg_dispatch(ngx_tenant_pg_pool_t *pool);
static void ngx_tenant_pg_latency(ngx_tenant_pg_pool_t *pool,
    ngx_tenant_pg_req_t *req);
static void ngx_tenant_pg_finish(ngx_tenant_pg_req_t *req, PGresult *res);
static void ngx_tenant_pg_notice(void *arg, const char *message);
static void ngx_tenant_pg_notifies(ngx_tenant_pg_conn_t *conn);
static void ngx_tenant_pg_lost(ngx_tenant_pg_pool_t *pool);


ngx_tenant_pg_pool_t *
ngx_tenant_pg_pool_create(ngx_cycle_t *cycle, const char *const *keywords,
    const char *const *values, ngx_uint_t size, ngx_msec_t timeout,
    ngx_tenant_pg_stats_t *stats, const char *name)
{
    ngx_uint_t             i, n;
    const char           **kw, **vals;
    ngx_tenant_pg_pool_t  *pool;

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_tenant_pg_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    /*
     * The pool's name as libpq's fallback_application_name: operators
     * tell the workers' and the listener's connections apart in
     * pg_stat_activity; an application_name in the connection string
     * wins.
     */

    for (n = 0; keywords[n]; n++) {
        if (ngx_strcmp(keywords[n], "fallback_application_name") == 0) {
            name = NULL;
        }
    }

    if (name) {
        kw = ngx_palloc(cycle->pool, (n + 2) * sizeof(char *));
        vals = ngx_palloc(cycle->pool, (n + 2) * sizeof(char *));
        if (kw == NULL || vals == NULL) {
            return NULL;
        }

        for (i = 0; i < n; i++) {
            kw[i] = keywords[i];
            vals[i] = values[i];
        }

        kw[n] = "fallback_application_name";
        vals[n] = name;
        kw[n + 1] = NULL;
        vals[n + 1] = NULL;

        keywords = kw;
        values = vals;
    }

    pool->conns = ngx_pcalloc(cycle->pool,
                              size * sizeof(ngx_tenant_pg_conn_t));
    if (pool->conns == NULL) {
        return NULL;
    }

    for (i = 0; i < size; i++) {
        pool->conns[i].pool = pool;
        pool->conns[i].log = *cycle->log;

        /* an exiting worker does not wait for a late answer */
        pool->conns[i].hold.handler = ngx_tenant_pg_hold_handler;
        pool->conns[i].hold.data = &pool->conns[i];
        pool->conns[i].hold.log = cycle->log;
        pool->conns[i].hold.cancelable = 1;
    }

    pool->keywords = keywords;
    pool->values = values;
    pool->size = size;
    pool->timeout = timeout;
    pool->log = cycle->log;
    pool->stats = stats;
    pool->slot = (ngx_process == NGX_PROCESS_WORKER)
                 ? ngx_min(ngx_worker, NGX_TENANT_PG_WORKERS - 1) : 0;

    stats->open[pool->slot] = 0;
    stats->busy[pool->slot] = 0;

    ngx_queue_init(&pool->waiting);

    return pool;
}


void
ngx_tenant_pg_pool_destroy(ngx_tenant_pg_pool_t *pool)
{
    ngx_uint_t  i;

    for (i = 0; i < pool->size; i++) {
        if (pool->conns[i].state != NGX_TENANT_PG_FREE) {
            ngx_tenant_pg_close(&pool->conns[i]);
        }
    }
}


ngx_tenant_pg_db_state_e
ngx_tenant_pg_pool_state(ngx_tenant_pg_pool_t *pool)
{
    ngx_uint_t  i;

    if (pool->down) {
        return NGX_TENANT_PG_DB_DISCONNECTED;
    }

    for (i = 0; i < pool->size; i++) {
        if (pool->conns[i].state == NGX_TENANT_PG_IDLE
            || pool->conns[i].state == NGX_TENANT_PG_BUSY)
        {
            return NGX_TENANT_PG_DB_CONNECTED;
        }
    }

    return NGX_TENANT_PG_DB_UNKNOWN;
}


ngx_int_t
ngx_tenant_pg_query(ngx_tenant_pg_pool_t *pool, ngx_tenant_pg_req_t *req)
{
    ngx_uint_t             i;
    ngx_tenant_pg_conn_t  *conn, *free;

    req->pool = pool;
    req->conn = NULL;
    req->queued = 0;
    req->failed = 0;
    req->retried = 0;

    ngx_memzero(&req->timer, sizeof(ngx_event_t));
    req->timer.handler = ngx_tenant_pg_timeout_handler;
    req->timer.data = req;
    req->timer.log = pool->log;
    req->timer.cancelable = req->cancelable;

    free = NULL;

    for (i = 0; i < pool->size; i++) {
        conn = &pool->conns[i];

        if (conn->req) {
            continue;
        }

        if (conn->state == NGX_TENANT_PG_IDLE) {
            conn->req = req;
            req->conn = conn;

            ngx_add_timer(&req->timer, pool->timeout);
            ngx_tenant_pg_send(conn);

            return NGX_AGAIN;
        }

        /* a connection without a request is IDLE, FREE, or BUSY and
         * held (ngx_tenant_pg_hold): every other path that unbinds a
         * request from a CONNECTING or BUSY one closes it */

        if (conn->state == NGX_TENANT_PG_FREE && free == NULL) {
            free = conn;
        }
    }

    if (pool->down && ngx_current_msec < pool->retry_at) {
        return NGX_DECLINED;
    }

    if (free) {
        free->req = req;
        req->conn = free;

        if (ngx_tenant_pg_connect(free) != NGX_OK) {
            /* fail() unbound it; the caller answers at once */
            return NGX_DECLINED;
        }

    } else {
        ngx_queue_insert_tail(&pool->waiting, &req->queue);
        req->queued = 1;
    }

    ngx_add_timer(&req->timer, pool->timeout);

    return NGX_AGAIN;
}


const char *
ngx_tenant_pg_result_error(PGresult *res)
{
    char        *state, *msg;
    static char  buf[256];

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    /* a server's error has both; one libpq makes itself may not */

    if (state == NULL || msg == NULL) {
        return PQresStatus(PQresultStatus(res));
    }

    ngx_snprintf((u_char *) buf, sizeof(buf) - 1, "%s %s%Z", state, msg);
    buf[sizeof(buf) - 1] = '\0';

    return buf;
}


void
ngx_tenant_pg_cancel(ngx_tenant_pg_req_t *req)
{
    ngx_tenant_pg_conn_t  *conn;

    /* a request being waited for is armed and either queued or bound;
     * the other cases are defensive (a caller cancelling twice) */

    if (req->timer.timer_set) {
        ngx_del_timer(&req->timer);
    }

    if (req->queued) {
        ngx_queue_remove(&req->queue);
        req->queued = 0;
        return;
    }

    conn = req->conn;

    if (conn == NULL) {
        return;
    }

    /*
     * libpq 15 has no non-blocking cancel: a connection with a query in
     * flight for a request that is gone is dropped; the pool opens a new
     * one when it needs it.  Unlike a timeout (ngx_tenant_pg_hold), this
     * happens only when a request is terminated while it waits: a client
     * that leaves is not noticed meanwhile (the lookups, which notice it,
     * orphan their query instead), so in practice on a worker's
     * shutdown, which closes the pool right after.
     */

    conn->req = NULL;
    req->conn = NULL;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, req->pool->log, 0,
                   "tenant: query cancelled, dropping its connection");

    ngx_tenant_pg_close(conn);
    ngx_tenant_pg_dispatch(req->pool);
}


ngx_int_t
ngx_tenant_pg_orphan(ngx_tenant_pg_req_t *req)
{
    /* an armed request is queued, or bound to a connection, or failed
     * (its handler runs at the next tick): the test is defensive */

    if (req->queued || !req->timer.timer_set) {
        ngx_tenant_pg_cancel(req);
        return NGX_DECLINED;
    }

    /* an exiting worker does not wait for it */
    req->timer.cancelable = 1;

    return NGX_AGAIN;
}


void
ngx_tenant_pg_pool_watch(ngx_tenant_pg_pool_t *pool,
    ngx_tenant_pg_notify_pt notify, ngx_tenant_pg_closed_pt closed,
    void *data)
{
    pool->notify = notify;
    pool->closed = closed;
    pool->watch_data = data;
}


static ngx_int_t
ngx_tenant_pg_connect(ngx_tenant_pg_conn_t *conn)
{
    ngx_tenant_pg_pool_t  *pool;

    pool = conn->pool;

    conn->log.action = "connecting to PostgreSQL";

    /* no host names here: they were resolved at configuration time */

    conn->pgconn = PQconnectStartParams(pool->keywords, pool->values, 0);

    if (conn->pgconn == NULL || PQstatus(conn->pgconn) == CONNECTION_BAD) {
        ngx_tenant_pg_fail(conn, "connecting to PostgreSQL");
        return NGX_ERROR;
    }

    PQsetNoticeProcessor(conn->pgconn, ngx_tenant_pg_notice, pool->log);

    conn->state = NGX_TENANT_PG_CONNECTING;

    if (ngx_tenant_pg_attach(conn) != NGX_OK
        || ngx_tenant_pg_want_write(conn, 1) != NGX_OK)
    {
        ngx_tenant_pg_fail(conn, "connecting to PostgreSQL");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* Wraps PQsocket() in a new nginx connection, reading level-triggered. */

static ngx_int_t
ngx_tenant_pg_attach(ngx_tenant_pg_conn_t *conn)
{
    int                fd;
    ngx_connection_t  *c;

    fd = PQsocket(conn->pgconn);

    /* defensive: called after a connect start or a poll that did not
     * fail, when libpq has a socket */

    if (fd == -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, conn->pool->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = conn;
    c->log = &conn->log;
    c->read->handler = ngx_tenant_pg_event_handler;
    c->write->handler = ngx_tenant_pg_event_handler;
    c->read->log = c->log;
    c->write->log = c->log;

    conn->c = c;

    /* level-triggered reads: a server that closes an idle connection is
     * noticed, and libpq need not drain the socket in one call */

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Takes the socket out of epoll while it is still open: PQconnectPoll()
 * may close it and open another (next address, SSL retry), which then
 * usually gets the same descriptor number.
 */

static void
ngx_tenant_pg_unregister(ngx_tenant_pg_conn_t *conn)
{
    ngx_connection_t  *c;

    c = conn->c;

    /* always active: attach adds the read event, and poll runs only on an
     * attached connection */

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* Forgets the nginx connection; libpq owns and closes the socket. */

static void
ngx_tenant_pg_detach(ngx_tenant_pg_conn_t *conn)
{
    ngx_connection_t  *c;

    c = conn->c;

    if (c == NULL) {
        return;
    }

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    /* posted events: only with accept_mutex on (events posted, then a
     * close in the same cycle), not run by tests */

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* defensive: the module arms no timer on these events (a request's
     * timer is its own); worker_shutdown_timeout may, some day */

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    conn->c = NULL;
}


static ngx_int_t
ngx_tenant_pg_want_write(ngx_tenant_pg_conn_t *conn, ngx_uint_t want)
{
    ngx_event_t  *wev;

    wev = conn->c->write;

    if (want && !wev->active) {
        return ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }

    if (!want && wev->active) {
        return ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }

    return NGX_OK;
}


static void
ngx_tenant_pg_event_handler(ngx_event_t *ev)
{
    u_char                *msg;
    size_t                 len;
    ngx_connection_t      *c;
    ngx_tenant_pg_conn_t  *conn;

    c = ev->data;
    conn = c->data;

    switch (conn->state) {

    case NGX_TENANT_PG_CONNECTING:
        ngx_tenant_pg_poll(conn);
        return;

    case NGX_TENANT_PG_BUSY:

        /*
         * Write events after the connect happen only when PQflush() could
         * not send a whole query: the module's statements and parameters
         * are small and fit the socket's buffer, so this is for
         * correctness, not seen in tests.
         */

        if (ev->write) {
            ngx_tenant_pg_send(conn);

        } else {
            ngx_tenant_pg_receive(conn);
        }

        return;

    case NGX_TENANT_PG_IDLE:

        if (ev->write) {
            (void) ngx_tenant_pg_want_write(conn, 0);
            return;
        }

        /* the server spoke to an idle connection: a notification, a
         * notice, or goodbye (libpq reports a close as a consumeInput
         * failure; the status test is defensive) */

        if (!PQconsumeInput(conn->pgconn)
            || PQstatus(conn->pgconn) != CONNECTION_OK)
        {
            msg = ngx_tenant_pg_error(conn, &len);
            ngx_log_error(NGX_LOG_INFO, conn->pool->log, 0,
                          "tenant: idle PostgreSQL connection closed: %*s",
                          len, msg);
            ngx_tenant_pg_close(conn);
            ngx_tenant_pg_dispatch(conn->pool);
            ngx_tenant_pg_lost(conn->pool);
            return;
        }

        ngx_tenant_pg_notifies(conn);

        return;

    default: /* FREE: without an nginx connection, hence no events */
        return;
    }
}


static void
ngx_tenant_pg_poll(ngx_tenant_pg_conn_t *conn)
{
    PostgresPollingStatusType  rc;

    ngx_tenant_pg_unregister(conn);

    rc = PQconnectPoll(conn->pgconn);

    /* whatever the socket is now, it is watched afresh */

    ngx_tenant_pg_detach(conn);

    if (rc == PGRES_POLLING_FAILED) {
        ngx_tenant_pg_fail(conn, "connecting to PostgreSQL");
        return;
    }

    if (ngx_tenant_pg_attach(conn) != NGX_OK
        || ngx_tenant_pg_want_write(conn, rc == PGRES_POLLING_WRITING)
           != NGX_OK)
    {
        ngx_tenant_pg_fail(conn, "connecting to PostgreSQL");
        return;
    }

    if (rc != PGRES_POLLING_OK) {
        return;
    }

    if (PQsetnonblocking(conn->pgconn, 1) != 0) {
        ngx_tenant_pg_fail(conn, "connecting to PostgreSQL");
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, conn->pool->log, 0,
                   "tenant: connected to PostgreSQL, fd:%d", conn->c->fd);

    (void) ngx_atomic_fetch_add(&conn->pool->stats->connects, 1);

    conn->log.action = "talking to PostgreSQL";
    conn->pool->down = 0;
    ngx_tenant_pg_state(conn, NGX_TENANT_PG_IDLE);

    /* a connection is opened for a request, and unbinding one from a
     * CONNECTING connection closes it: the dispatch is defensive */

    if (conn->req) {
        ngx_tenant_pg_send(conn);

    } else {
        ngx_tenant_pg_dispatch(conn->pool);
    }
}


static void
ngx_tenant_pg_send(ngx_tenant_pg_conn_t *conn)
{
    int                   rc;
    ngx_tenant_pg_req_t  *req;

    if (conn->state == NGX_TENANT_PG_IDLE) {
        req = conn->req;

        if (!PQsendQueryParams(conn->pgconn, req->sql, req->nparams, NULL,
                               req->values, req->lengths, NULL, 0))
        {
            if (req->retried) {
                ngx_tenant_pg_fail(conn, "sending a query to PostgreSQL");
                return;
            }

            /*
             * libpq refuses the send only when it already knows the
             * connection is bad, or lacks memory; a close by the server
             * it has not read yet shows at the read instead (libpq 15
             * ignores the send's EPIPE: ngx_tenant_pg_receive).  Nothing
             * was sent: once, the request gets a new connection.  Not
             * provoked by tests.
             */

            ngx_tenant_pg_retry(conn, req);
            return;
        }

        ngx_tenant_pg_state(conn, NGX_TENANT_PG_BUSY);
        req->sent_at = ngx_current_msec;
        conn->sent_at = req->sent_at;

        (void) ngx_atomic_fetch_add(&conn->pool->stats->queries, 1);
    }

    rc = PQflush(conn->pgconn);

    if (rc == -1) {
        ngx_tenant_pg_fail(conn, "sending a query to PostgreSQL");
        return;
    }

    if (ngx_tenant_pg_want_write(conn, rc == 1) != NGX_OK) {
        ngx_tenant_pg_fail(conn, "sending a query to PostgreSQL");
    }
}


static void
ngx_tenant_pg_receive(ngx_tenant_pg_conn_t *conn)
{
    PGresult             *res;
    ngx_tenant_pg_req_t  *req;

    if (!PQconsumeInput(conn->pgconn)) {
        req = conn->req;

        /*
         * A connection the server closed while it was idle is often
         * noticed only here: libpq 15 ignores the EPIPE of the send.
         * Once, a statement that may run twice goes on a new connection,
         * as a send failure does.
         */

        /* (a retried request whose new connection fails too: only if
         * the server closes twice in a row) */

        if (req && req->resend && !req->retried) {
            ngx_log_error(NGX_LOG_INFO, conn->pool->log, 0,
                          "tenant: PostgreSQL connection lost, sending the "
                          "query again on a new one");

            ngx_tenant_pg_retry(conn, req);
            return;
        }

        ngx_tenant_pg_fail(conn, "reading from PostgreSQL");
        return;
    }

    ngx_tenant_pg_notifies(conn);

    while (!PQisBusy(conn->pgconn)) {

        res = PQgetResult(conn->pgconn);

        if (res == NULL) {
            goto done;
        }

        /* the first result is kept; the module's queries are one
         * statement each, so a second is defensive */

        if (conn->res == NULL) {
            conn->res = res;

        } else {
            PQclear(res);
        }
    }

    return;

done:

    res = conn->res;
    conn->res = NULL;

    /* req is NULL when the connection was held: the answer of a query
     * that timed out, which nobody may see (neither its caller, answered
     * already, nor the cache); the connection is the pool's again */

    req = conn->req;
    conn->req = NULL;

    if (conn->held) {

        /* what it was: an admin write that timed out tells here whether
         * it committed after all */

        ngx_log_error(NGX_LOG_INFO, conn->pool->log, 0,
                      "tenant: PostgreSQL answered %Mms after the query "
                      "was sent, nobody waits for it any more: answer "
                      "(%s) dropped, connection kept",
                      ngx_current_msec - conn->sent_at,
                      res == NULL ? "none"
                      : PQresultStatus(res) == PGRES_FATAL_ERROR
                        ? ngx_tenant_pg_result_error(res)
                        : PQresStatus(PQresultStatus(res)));

        ngx_tenant_pg_unhold(conn);
    }

    ngx_tenant_pg_state(conn, NGX_TENANT_PG_IDLE);

    /* libpq 15 reports a server's close at the read, before a result
     * (t/145): a bad connection after a result is defensive */

    if (PQstatus(conn->pgconn) != CONNECTION_OK) {
        ngx_tenant_pg_close(conn);
    }

    ngx_tenant_pg_latency(conn->pool, req);

    if (req) {
        req->conn = NULL;
        ngx_tenant_pg_finish(req, res);
    }

    PQclear(res);

    ngx_tenant_pg_dispatch(conn->pool);
}


/* Once per request: the connection is replaced, the query sent on the new
 * one when it is up (a failure to connect fails the request). */

static void
ngx_tenant_pg_retry(ngx_tenant_pg_conn_t *conn, ngx_tenant_pg_req_t *req)
{
    req->retried = 1;
    ngx_tenant_pg_close(conn);
    conn->req = req;
    (void) ngx_tenant_pg_connect(conn);
}


static void
ngx_tenant_pg_timeout_handler(ngx_event_t *ev)
{
    ngx_tenant_pg_req_t   *req;
    ngx_tenant_pg_conn_t  *conn;
    ngx_tenant_pg_pool_t  *pool;

    req = ev->data;
    pool = req->pool;

    if (req->failed) {
        /* the failure was logged when it happened */
        ngx_tenant_pg_finish(req, NULL);
        return;
    }

    /*
     * Every connection was busy for the whole timeout: the pool is too
     * small, or the database slow; not a reason to mark it down.  Reached
     * when the connections are held ones (ngx_tenant_pg_hold): while one
     * still has its request, that one times out first (its timer was
     * armed earlier), marks the pool down and fails the whole queue.
     */

    if (req->queued) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "tenant: no PostgreSQL connection became free "
                      "within %Mms (pool of %ui)", pool->timeout,
                      pool->size);

        ngx_queue_remove(&req->queue);
        req->queued = 0;
        ngx_tenant_pg_finish(req, NULL);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                  "tenant: PostgreSQL did not answer within %Mms",
                  pool->timeout);

    (void) ngx_atomic_fetch_add(&pool->stats->errors, 1);

    /*
     * Neither failed nor queued: bound (the test is defensive).  A query
     * on the server keeps its connection until its answer arrives
     * (ngx_tenant_pg_hold); a connection still being made is dropped: a
     * backend that has not started its session ends when it reads the
     * close (or at the server's authentication_timeout).
     */

    conn = req->conn;

    if (conn && conn->state == NGX_TENANT_PG_BUSY) {
        ngx_tenant_pg_hold(conn);

    } else if (conn) {
        conn->req = NULL;
        req->conn = NULL;
        ngx_tenant_pg_close(conn);
    }

    ngx_tenant_pg_finish(req, NULL);
    ngx_tenant_pg_down(pool);
}


/* Logs why a connection failed once, drops it, fails its request. */

static void
ngx_tenant_pg_fail(ngx_tenant_pg_conn_t *conn, const char *what)
{
    u_char                *msg;
    size_t                 len;
    ngx_tenant_pg_req_t   *req;
    ngx_tenant_pg_pool_t  *pool;

    pool = conn->pool;

    msg = ngx_tenant_pg_error(conn, &len);

    ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                  "tenant: PostgreSQL failed while %s: %*s",
                  what, len, msg);

    /* a held connection's query was counted at its timeout */

    if (!conn->held) {
        (void) ngx_atomic_fetch_add(conn->state == NGX_TENANT_PG_BUSY
                                    ? &pool->stats->errors
                                    : &pool->stats->connect_errors, 1);
    }

    /* a connection fails while connecting or busy, with a request, or
     * held without one */

    req = conn->req;
    conn->req = NULL;

    ngx_tenant_pg_close(conn);

    if (req) {
        req->conn = NULL;
        ngx_tenant_pg_fail_later(req);
    }

    ngx_tenant_pg_down(pool);
    ngx_tenant_pg_lost(pool);
}


/*
 * The caller learns of a failure from an event, never from inside
 * ngx_tenant_pg_query(): the request fails on the next timer tick.  A
 * request whose timer is not armed yet is being started by
 * ngx_tenant_pg_query(), which answers NGX_DECLINED instead.
 */

static void
ngx_tenant_pg_fail_later(ngx_tenant_pg_req_t *req)
{
    req->failed = 1;

    if (req->timer.timer_set) {
        ngx_del_timer(&req->timer);
        ngx_add_timer(&req->timer, 1);
    }
}


/*
 * The database failed: for a second, requests are answered at once
 * instead of waiting for it again, and so are those already waiting for
 * a connection.
 */

static void
ngx_tenant_pg_down(ngx_tenant_pg_pool_t *pool)
{
    ngx_queue_t          *q;
    ngx_tenant_pg_req_t  *req;

    pool->down = 1;
    pool->retry_at = ngx_current_msec + NGX_TENANT_PG_RETRY;

    while (!ngx_queue_empty(&pool->waiting)) {
        q = ngx_queue_head(&pool->waiting);
        ngx_queue_remove(q);

        req = ngx_queue_data(q, ngx_tenant_pg_req_t, queue);
        req->queued = 0;

        ngx_tenant_pg_fail_later(req);
    }
}


/* The first line of libpq's message: its messages span lines. */

static u_char *
ngx_tenant_pg_error(ngx_tenant_pg_conn_t *conn, size_t *len)
{
    u_char  *msg, *p;

    msg = (u_char *) (conn->pgconn ? PQerrorMessage(conn->pgconn)
                                   : "out of memory");

    for (p = msg; *p && *p != '\n'; p++) { /* void */ }

    *len = p - msg;

    return msg;
}


static void
ngx_tenant_pg_close(ngx_tenant_pg_conn_t *conn)
{
    ngx_tenant_pg_unhold(conn);
    ngx_tenant_pg_detach(conn);

    /* a result kept while its statement's end is still on the way: only
     * when the two arrive in separate reads and the connection is closed
     * in between */

    if (conn->res) {
        PQclear(conn->res);
        conn->res = NULL;
    }

    if (conn->pgconn) {
        PQfinish(conn->pgconn);
        conn->pgconn = NULL;
    }

    ngx_tenant_pg_state(conn, NGX_TENANT_PG_FREE);
}


/*
 * A query that timed out keeps its connection, busy, out of the pool's
 * reach: libpq 15 cannot cancel without blocking, and a closed connection
 * leaves its backend on the server until the statement ends, while the
 * pool's next connection comes on top of it (a lock on public.tenants
 * held past the timeout would pile up backends up to the server's
 * max_connections).  The answer, when it comes, is dropped and the
 * connection goes back to the pool (ngx_tenant_pg_receive); a server's
 * close, or an error, closes it as usual; twice the timeout after the
 * query was sent, it is closed (ngx_tenant_pg_hold_handler).
 */

static void
ngx_tenant_pg_hold(ngx_tenant_pg_conn_t *conn)
{
    ngx_msec_t            elapsed, deadline;
    ngx_tenant_pg_req_t  *req;

    req = conn->req;
    conn->req = NULL;
    req->conn = NULL;

    conn->held = 1;

    elapsed = ngx_current_msec - conn->sent_at;
    deadline = 2 * conn->pool->timeout;

    ngx_add_timer(&conn->hold, elapsed < deadline ? deadline - elapsed : 1);
}


static void
ngx_tenant_pg_unhold(ngx_tenant_pg_conn_t *conn)
{
    if (conn->hold.timer_set) {
        ngx_del_timer(&conn->hold);
    }

    conn->held = 0;
}


static void
ngx_tenant_pg_hold_handler(ngx_event_t *ev)
{
    ngx_tenant_pg_conn_t  *conn;

    conn = ev->data;

    ngx_log_error(NGX_LOG_WARN, conn->pool->log, 0,
                  "tenant: PostgreSQL still busy %Mms after a query that "
                  "nobody waits for was sent: connection closed, its "
                  "backend may run on until the statement ends",
                  ngx_current_msec - conn->sent_at);

    ngx_tenant_pg_close(conn);
    ngx_tenant_pg_dispatch(conn->pool);
}


/* Moves a connection to another state, keeping the gauges in step. */

static void
ngx_tenant_pg_state(ngx_tenant_pg_conn_t *conn, ngx_tenant_pg_state_e state)
{
    ngx_uint_t              was_open, is_open;
    ngx_tenant_pg_stats_t  *st;

    st = conn->pool->stats;

    was_open = (conn->state == NGX_TENANT_PG_IDLE
                || conn->state == NGX_TENANT_PG_BUSY);
    is_open = (state == NGX_TENANT_PG_IDLE || state == NGX_TENANT_PG_BUSY);

    if (was_open != is_open) {
        (void) ngx_atomic_fetch_add(&st->open[conn->pool->slot],
                                    is_open ? 1 : -1);
    }

    if ((conn->state == NGX_TENANT_PG_BUSY) != (state == NGX_TENANT_PG_BUSY)) {
        (void) ngx_atomic_fetch_add(&st->busy[conn->pool->slot],
                                    state == NGX_TENANT_PG_BUSY ? 1 : -1);
    }

    conn->state = state;
}


/* Gives waiting requests the connections that are idle or can be made. */

static void
ngx_tenant_pg_dispatch(ngx_tenant_pg_pool_t *pool)
{
    ngx_uint_t             i;
    ngx_queue_t           *q;
    ngx_tenant_pg_req_t   *req;
    ngx_tenant_pg_conn_t  *conn;

    for (i = 0; i < pool->size && !ngx_queue_empty(&pool->waiting); i++) {
        conn = &pool->conns[i];

        if (conn->req) {
            continue;
        }

        /* the pool down with requests still queued, and a CONNECTING
         * connection without a request, are defensive:
         * ngx_tenant_pg_down() fails the whole queue, and unbinding a
         * request from such a connection closes it; a BUSY one without
         * a request is held (ngx_tenant_pg_hold) */

        if (conn->state == NGX_TENANT_PG_FREE) {
            if (pool->down && ngx_current_msec < pool->retry_at) {
                continue;
            }

        } else if (conn->state != NGX_TENANT_PG_IDLE) {
            continue;
        }

        q = ngx_queue_head(&pool->waiting);
        ngx_queue_remove(q);

        req = ngx_queue_data(q, ngx_tenant_pg_req_t, queue);
        req->queued = 0;
        req->conn = conn;
        conn->req = req;

        if (conn->state == NGX_TENANT_PG_IDLE) {
            ngx_tenant_pg_send(conn);

        } else {
            /* on failure, fail() unbinds the request and fails it on
             * the next tick, with every other waiting one */
            (void) ngx_tenant_pg_connect(conn);
        }
    }
}


/* The latency histogram: buckets of 1, 2, 5, ... 5000 ms, then +Inf. */

static void
ngx_tenant_pg_latency(ngx_tenant_pg_pool_t *pool, ngx_tenant_pg_req_t *req)
{
    ngx_uint_t  i;
    ngx_msec_t  ms;

    static ngx_msec_t  bounds[NGX_TENANT_PG_BUCKETS] = {
        1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000
    };

    /* a held connection's answer: nobody waited for it to the end */

    if (req == NULL) {
        return;
    }

    ms = ngx_current_msec - req->sent_at;

    for (i = 0; i < NGX_TENANT_PG_BUCKETS && ms > bounds[i]; i++) {
        /* void */
    }

    (void) ngx_atomic_fetch_add(&pool->stats->latency[i], 1);
    (void) ngx_atomic_fetch_add(&pool->stats->latency_ms, ms);
}


static void
ngx_tenant_pg_finish(ngx_tenant_pg_req_t *req, PGresult *res)
{
    if (req->timer.timer_set) {
        ngx_del_timer(&req->timer);
    }

    req->handler(req, res);
}


/* Hands every notification received to the pool's watcher. */

static void
ngx_tenant_pg_notifies(ngx_tenant_pg_conn_t *conn)
{
    PGnotify  *n;

    while ((n = PQnotifies(conn->pgconn)) != NULL) {

        /* only the listener's pool LISTENs, and it has a watcher; but
         * behind PgBouncer in transaction mode a pool's server connection
         * may be one the listener LISTENed on (t/100): dropped here */

        if (conn->pool->notify) {
            conn->pool->notify(conn->pool->watch_data, n->relname, n->extra);
        }

        PQfreemem(n);
    }
}


static void
ngx_tenant_pg_lost(ngx_tenant_pg_pool_t *pool)
{
    if (pool->closed) {
        pool->closed(pool->watch_data);
    }
}


static void
ngx_tenant_pg_notice(void *arg, const char *message)
{
    ngx_log_t  *log = arg;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0, "tenant: PostgreSQL: %s",
                   message);
}
