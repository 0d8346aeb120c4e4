/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Makes one call that blockguard.so must report, or one it must let
 * pass, for t/000-nonblocking.t:
 *
 *     LD_PRELOAD=build/guard/blockguard.so blockguard_test CASE [conninfo]
 *
 * The process first "serves" as an nginx worker does (one epoll_wait()),
 * except for the cases named before-*.  Exits 0 when the call was made;
 * the guard's report, if any, is on stderr.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>


static void
fail(const char *what)
{
    perror(what);
    exit(2);
}


static void
serve(void)
{
    int                 ep;
    struct epoll_event  ev;

    ep = epoll_create1(0);
    if (ep == -1 || epoll_wait(ep, &ev, 1, 0) == -1) {
        fail("epoll");
    }
}


static PGconn *
pg(const char *conninfo)
{
    PGconn  *conn;

    if (conninfo == NULL) {
        fprintf(stderr, "conninfo needed\n");
        exit(2);
    }

    conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(conn));
        exit(2);
    }

    return conn;
}


/* a listening socket on 127.0.0.1 and a socket to connect to it */

static int
peer(struct sockaddr_in *sin, int nonblocking)
{
    int        ls, s;
    socklen_t  len;

    ls = socket(AF_INET, SOCK_STREAM, 0);
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*sin);

    if (ls == -1 || bind(ls, (struct sockaddr *) sin, len) != 0
        || listen(ls, 1) != 0
        || getsockname(ls, (struct sockaddr *) sin, &len) != 0)
    {
        fail("listen");
    }

    s = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (s == -1) {
        fail("socket");
    }

    return s;
}


int
main(int argc, char **argv)
{
    int                  fds[2], s;
    char                 c;
    FILE                *f;
    PGconn              *conn;
    PGresult            *res;
    const char          *what;
    struct pollfd        pfd;
    struct addrinfo     *ai, hints;
    struct timespec      ts;
    struct sockaddr_in   sin;

    if (argc < 2) {
        fprintf(stderr, "usage: blockguard_test CASE [conninfo]\n");
        return 2;
    }

    what = argv[1];
    conn = NULL;

    /* connections are made before serving: that is allowed */

    if (strncmp(what, "pq", 2) == 0) {
        conn = pg(argc > 2 ? argv[2] : NULL);
    }

    if (strcmp(what, "pq-getresult-ready") == 0) {
        if (!PQsendQuery(conn, "select 1")) {
            fail("PQsendQuery");
        }

        while (PQconsumeInput(conn) && PQisBusy(conn)) {
            pfd.fd = PQsocket(conn);
            pfd.events = POLLIN;
            (void) poll(&pfd, 1, 100);
        }
    }

    if (strncmp(what, "before-", 7) != 0) {
        serve();
    }

    if (strcmp(what, "sleep") == 0 || strcmp(what, "before-sleep") == 0) {
        sleep(1);

    } else if (strcmp(what, "usleep") == 0) {
        usleep(1000);

    } else if (strcmp(what, "nanosleep") == 0) {
        ts.tv_sec = 0;
        ts.tv_nsec = 1000000;
        nanosleep(&ts, NULL);

    } else if (strcmp(what, "getaddrinfo-name") == 0) {
        if (getaddrinfo("localhost", "5432", NULL, &ai) == 0) {
            freeaddrinfo(ai);
        }

    } else if (strcmp(what, "getaddrinfo-numeric") == 0) {
        memset(&hints, 0, sizeof(hints));
        hints.ai_flags = AI_NUMERICHOST;
        if (getaddrinfo("127.0.0.1", "5432", &hints, &ai) == 0) {
            freeaddrinfo(ai);
        }

    } else if (strcmp(what, "gethostbyname") == 0) {
        (void) gethostbyname("localhost");

    } else if (strcmp(what, "getpwuid") == 0) {
        (void) getpwuid(getuid());

    } else if (strcmp(what, "poll-timeout") == 0) {
        (void) poll(NULL, 0, 1);

    } else if (strcmp(what, "poll-zero") == 0) {
        (void) poll(NULL, 0, 0);

    } else if (strcmp(what, "connect-blocking") == 0
               || strcmp(what, "connect-nonblocking") == 0)
    {
        s = peer(&sin, what[8] == 'n');
        (void) connect(s, (struct sockaddr *) &sin, sizeof(sin));

    } else if (strcmp(what, "read-pipe-blocking") == 0
               || strcmp(what, "read-pipe-nonblocking") == 0)
    {
        if (pipe2(fds, what[10] == 'n' ? O_NONBLOCK : 0) != 0
            || write(fds[1], "x", 1) != 1)
        {
            fail("pipe");
        }

        if (read(fds[0], &c, 1) != 1) {
            fail("read");
        }

    } else if (strcmp(what, "fopen") == 0) {
        f = fopen("/etc/passwd", "r");
        if (f != NULL) {
            fclose(f);
        }

    } else if (strcmp(what, "pq-exec") == 0) {
        res = PQexec(conn, "select 1");
        PQclear(res);

    } else if (strcmp(what, "pq-getresult-busy") == 0) {
        if (!PQsendQuery(conn, "select pg_sleep(0.05)")) {
            fail("PQsendQuery");
        }

        while ((res = PQgetResult(conn)) != NULL) {
            PQclear(res);
        }

    } else if (strcmp(what, "pq-getresult-ready") == 0) {
        while ((res = PQgetResult(conn)) != NULL) {
            PQclear(res);
        }

    } else if (strcmp(what, "connectdb") == 0) {
        PQfinish(pg(argc > 2 ? argv[2] : NULL));

    } else {
        fprintf(stderr, "unknown case %s\n", what);
        return 2;
    }

    if (conn != NULL) {
        PQfinish(conn);
    }

    return 0;
}
