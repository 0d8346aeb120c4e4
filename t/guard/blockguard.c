/*
 * Copyright (C) ngx_tenant_module authors
 *
 * blockguard.so: the test suite's runtime check that a worker never
 * blocks (README, "Never blocking a worker").  The harness preloads it
 * into nginx (LD_PRELOAD of the master; workers inherit it, as they are
 * forked, not executed).  It interposes the calls that can block and, in
 * a process that serves (one that has entered nginx's event loop: its
 * first epoll_wait()), writes a line to stderr, which nginx has pointed
 * at its error log, in the log's format:
 *
 *     2026/12/05 12:00:00 [warn] 4242#4242: BLOCKING CALL: PQexec (pid
 *         4242) at ngx_tenant_module.so+0x1b2c4 < ngx_tenant_module.so(
 *         ngx_tenant_pg_query+0x284) < ...
 *
 * (one line; frames without a symbol are offsets: addr2line -f -e the .so
 * 0x1b2c4).
 * The harness's final error-log check fails the test file on the marker.
 * The master, configuration time and init_process are not checked: they
 * may read files and resolve names.
 *
 * Always a violation in a serving process:
 *   libpq's blocking calls: PQexec, PQexecParams, PQexecPrepared,
 *     PQprepare, PQdescribePrepared, PQdescribePortal, PQconnectdb,
 *     PQconnectdbParams, PQsetdbLogin, PQping, PQpingParams, PQreset,
 *     PQcancel, PQfn, and PQgetResult while PQisBusy (it would wait)
 *   name lookups: getaddrinfo (except AI_NUMERICHOST), gethostbyname*,
 *     gethostbyaddr, getpwnam*, getpwuid* (NSS may ask a directory)
 *   sleep, usleep, nanosleep, clock_nanosleep, system, popen
 *   poll, ppoll, select, pselect with a timeout other than zero (nginx
 *     waits in epoll_wait only)
 *   connect() on a blocking socket; read, readv, recv, recvfrom, recvmsg
 *     on a blocking socket or pipe
 * A violation only when the module's code is on the stack (nginx itself
 * opens static and temporary files by design):
 *   open, openat, fopen of a regular file or a directory; stat of any
 *   path (libpq's stat of ~/.pgpass that is not there is a lookup too)
 * "The module's code" is any object whose file name contains one of the
 * ':'-separated words of TENANT_BLOCKGUARD_CODE (default
 * "ngx_tenant_module:libpq.so").
 *
 * What it cannot see: calls that do not go through the dynamic linker
 * (a libc function calling another inside libc, e.g. fread's read, or
 * getpwuid's open of /etc/passwd: the outer call is what is checked), raw
 * syscall(), a non-blocking call that takes long (a big pread), CPU-bound
 * work (an RSA check), waits on a lock (nginx's shared-memory mutex may
 * sleep in a futex, by design), and paths the tests do not run.  A
 * process that never calls epoll_wait (nginx with "use poll;") is never
 * checked.
 */

#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>


#define GUARD_MAX_REPORTS  50          /* lines per process, then one more */
#define GUARD_FRAMES       32


typedef struct pg_conn    PGconn;
typedef struct pg_result  PGresult;
typedef struct pgNotify   PGnotify;
typedef struct {
    int   len;
    int   isint;
    union {
        int  *ptr;
        int   integer;
    } u;
} PQArgBlock;


static int           guard_serving;   /* entered the event loop */
static __thread int  guard_inside;    /* the guard's own calls pass */
static int           guard_reports;
static char          guard_code[256] = "ngx_tenant_module:libpq.so";


#define REAL(name)                                                           \
    static __typeof__(name) *real_##name;                                    \
    if (real_##name == NULL) {                                               \
        real_##name = (__typeof__(name) *) dlsym(RTLD_NEXT, #name);          \
    }

/* libpq is dlopen()ed with the module: resolved on first use, declared here */

#define REAL_PQ(ret, name, args)                                             \
    static ret (*real_##name) args;                                          \
    if (real_##name == NULL) {                                               \
        real_##name = (ret (*) args) dlsym(RTLD_NEXT, #name);                \
    }


/* Whether the check applies: a serving process, not the guard itself. */

static int
guard_on(void)
{
    return guard_serving && !guard_inside;
}


static const char *
guard_base(const char *path)
{
    const char  *p;

    p = strrchr(path, '/');
    return p ? p + 1 : path;
}


/* Whether an object of the module's code has frames [from, n). */

static int
guard_from_code(void **frames, int n)
{
    int          i;
    char         word[256];
    Dl_info      info;
    const char  *p, *q;

    for (i = 0; i < n; i++) {
        if (dladdr(frames[i], &info) == 0 || info.dli_fname == NULL) {
            continue;
        }

        for (p = guard_code; *p; p = (*q ? q + 1 : q)) {
            q = strchrnul(p, ':');

            if (q == p || (size_t) (q - p) >= sizeof(word)) {
                continue;
            }

            memcpy(word, p, q - p);
            word[q - p] = '\0';

            if (strstr(guard_base(info.dli_fname), word) != NULL) {
                return 1;
            }
        }
    }

    return 0;
}


/*
 * Writes the marker line with the call and the stack, or, with code_only,
 * only when the module's code is on the stack.
 */

static void
guard_report(int code_only, const char *fmt, ...)
{
    int        i, n, len, saved;
    char       line[4096];
    void      *frames[GUARD_FRAMES];
    time_t     now;
    va_list    args;
    Dl_info    info;
    struct tm  tm;

    saved = errno;
    guard_inside = 1;

    n = backtrace(frames, GUARD_FRAMES);

    if (code_only && !guard_from_code(frames + 1, n - 1)) {
        goto done;
    }

    now = time(NULL);
    localtime_r(&now, &tm);
    len = strftime(line, sizeof(line), "%Y/%m/%d %H:%M:%S", &tm);
    len += snprintf(line + len, sizeof(line) - len,
                    " [warn] %d#%d: BLOCKING CALL: ", (int) getpid(),
                    (int) getpid());

    if (guard_reports++ >= GUARD_MAX_REPORTS) {
        if (guard_reports == GUARD_MAX_REPORTS + 1) {
            len += snprintf(line + len, sizeof(line) - len,
                            "more in this process, not shown\n");
            (void) !write(STDERR_FILENO, line, len);
        }

        goto done;
    }

    va_start(args, fmt);
    len += vsnprintf(line + len, sizeof(line) - len, fmt, args);
    va_end(args);

    len += snprintf(line + len, sizeof(line) - len, " (pid %d) at",
                    (int) getpid());

    /* frame 0 is this function, 1 the hook */

    for (i = 2; i < n && len < (int) sizeof(line) - 200; i++) {
        if (dladdr(frames[i], &info) == 0 || info.dli_fname == NULL) {
            len += snprintf(line + len, sizeof(line) - len, "%s %p",
                            i > 2 ? " <" : "", frames[i]);
            continue;
        }

        if (info.dli_sname != NULL) {
            len += snprintf(line + len, sizeof(line) - len,
                            "%s %s(%s+0x%lx)", i > 2 ? " <" : "",
                            guard_base(info.dli_fname), info.dli_sname,
                            (unsigned long) ((char *) frames[i]
                                             - (char *) info.dli_saddr));

        } else {
            len += snprintf(line + len, sizeof(line) - len, "%s %s+0x%lx",
                            i > 2 ? " <" : "", guard_base(info.dli_fname),
                            (unsigned long) ((char *) frames[i]
                                             - (char *) info.dli_fbase));
        }
    }

    if (len > (int) sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }

    line[len++] = '\n';

    (void) !write(STDERR_FILENO, line, len);

done:

    guard_inside = 0;
    errno = saved;
}


static int
guard_blocking_fd(int fd)
{
    int  flags;

    flags = fcntl(fd, F_GETFL);
    return flags != -1 && !(flags & O_NONBLOCK);
}


/* A blocking socket or pipe: a read may wait for the peer. */

static int
guard_blocking_stream(int fd)
{
    struct stat  st;

    if (!guard_blocking_fd(fd) || fstat(fd, &st) != 0) {
        return 0;
    }

    return S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode);
}


static int
guard_file(const char *path)
{
    struct stat  st;

    REAL(stat)

    return path != NULL && real_stat(path, &st) == 0
           && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
}


__attribute__((constructor))
static void
guard_init(void)
{
    void        *frames[2];
    const char  *code;

    code = getenv("TENANT_BLOCKGUARD_CODE");

    /* localtime_r() reads the zone file on first use: now, not in a worker */

    tzset();

    if (code != NULL && strlen(code) < sizeof(guard_code)) {
        strcpy(guard_code, code);
    }

    /* backtrace() loads libgcc_s on first use: now, not in a worker */

    guard_inside = 1;
    (void) backtrace(frames, 2);
    guard_inside = 0;
}


/* --- the event loop: from its first wait on, the process serves --- */

int
epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    REAL(epoll_wait)

    guard_serving = 1;
    return real_epoll_wait(epfd, events, maxevents, timeout);
}


int
epoll_pwait(int epfd, struct epoll_event *events, int maxevents,
    int timeout, const sigset_t *sigmask)
{
    REAL(epoll_pwait)

    guard_serving = 1;
    return real_epoll_pwait(epfd, events, maxevents, timeout, sigmask);
}


/* --- libpq --- */

#define GUARD_PQ(ret, name, params, args)                                    \
    ret name params                                                          \
    {                                                                        \
        REAL_PQ(ret, name, params)                                           \
        if (guard_on()) {                                                    \
            guard_report(0, "%s", #name);                                    \
        }                                                                    \
        return real_##name args;                                             \
    }

GUARD_PQ(PGresult *, PQexec, (PGconn *conn, const char *query),
         (conn, query))
GUARD_PQ(PGresult *, PQexecParams,
         (PGconn *conn, const char *command, int nParams,
          const unsigned int *paramTypes, const char *const *paramValues,
          const int *paramLengths, const int *paramFormats,
          int resultFormat),
         (conn, command, nParams, paramTypes, paramValues, paramLengths,
          paramFormats, resultFormat))
GUARD_PQ(PGresult *, PQexecPrepared,
         (PGconn *conn, const char *stmtName, int nParams,
          const char *const *paramValues, const int *paramLengths,
          const int *paramFormats, int resultFormat),
         (conn, stmtName, nParams, paramValues, paramLengths, paramFormats,
          resultFormat))
GUARD_PQ(PGresult *, PQprepare,
         (PGconn *conn, const char *stmtName, const char *query,
          int nParams, const unsigned int *paramTypes),
         (conn, stmtName, query, nParams, paramTypes))
GUARD_PQ(PGresult *, PQdescribePrepared, (PGconn *conn, const char *stmt),
         (conn, stmt))
GUARD_PQ(PGresult *, PQdescribePortal, (PGconn *conn, const char *portal),
         (conn, portal))
GUARD_PQ(PGconn *, PQconnectdb, (const char *conninfo), (conninfo))
GUARD_PQ(PGconn *, PQconnectdbParams,
         (const char *const *keywords, const char *const *values,
          int expand_dbname),
         (keywords, values, expand_dbname))
GUARD_PQ(PGconn *, PQsetdbLogin,
         (const char *pghost, const char *pgport, const char *pgoptions,
          const char *pgtty, const char *dbName, const char *login,
          const char *pwd),
         (pghost, pgport, pgoptions, pgtty, dbName, login, pwd))
GUARD_PQ(int, PQping, (const char *conninfo), (conninfo))
GUARD_PQ(int, PQpingParams,
         (const char *const *keywords, const char *const *values,
          int expand_dbname),
         (keywords, values, expand_dbname))
GUARD_PQ(void, PQreset, (PGconn *conn), (conn))
GUARD_PQ(int, PQcancel, (void *cancel, char *errbuf, int errbufsize),
         (cancel, errbuf, errbufsize))
GUARD_PQ(PGresult *, PQfn,
         (PGconn *conn, int fnid, int *result_buf, int *result_len,
          int result_is_int, const PQArgBlock *args, int nargs),
         (conn, fnid, result_buf, result_len, result_is_int, args, nargs))


PGresult *
PQgetResult(PGconn *conn)
{
    REAL_PQ(PGresult *, PQgetResult, (PGconn *))
    REAL_PQ(int, PQisBusy, (PGconn *))

    if (guard_on() && conn != NULL && real_PQisBusy != NULL
        && real_PQisBusy(conn))
    {
        guard_report(0, "PQgetResult while PQisBusy (it waits for the "
                     "server)");
    }

    return real_PQgetResult(conn);
}


/* an interposer that reports every call made while serving */

#define GUARD_ALWAYS(ret, name, params, args, ...)                           \
    ret name params                                                          \
    {                                                                        \
        REAL(name)                                                           \
        if (guard_on()) {                                                    \
            guard_report(0, __VA_ARGS__);                                    \
        }                                                                    \
        return real_##name args;                                             \
    }


/* --- name lookups --- */

int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
    REAL(getaddrinfo)

    if (guard_on() && node != NULL
        && !(hints != NULL && (hints->ai_flags & AI_NUMERICHOST)))
    {
        guard_report(0, "getaddrinfo(\"%s\") (a name lookup)", node);
    }

    return real_getaddrinfo(node, service, hints, res);
}


GUARD_ALWAYS(struct hostent *, gethostbyname, (const char *name), (name),
             "gethostbyname(\"%s\")", name)


GUARD_ALWAYS(struct hostent *, gethostbyname2, (const char *name, int af),
             (name, af), "gethostbyname2(\"%s\")", name)


GUARD_ALWAYS(int, gethostbyname_r,
             (const char *name, struct hostent *ret, char *buf, size_t buflen,
              struct hostent **result, int *h_errnop),
             (name, ret, buf, buflen, result, h_errnop),
             "gethostbyname_r(\"%s\")", name)


GUARD_ALWAYS(struct hostent *, gethostbyaddr,
             (const void *addr, socklen_t len, int type), (addr, len, type),
             "%s", "gethostbyaddr")


GUARD_ALWAYS(struct passwd *, getpwnam, (const char *name), (name),
             "getpwnam(\"%s\") (a user database lookup)", name)


GUARD_ALWAYS(int, getpwnam_r,
             (const char *name, struct passwd *pwd, char *buf, size_t buflen,
              struct passwd **result),
             (name, pwd, buf, buflen, result),
             "getpwnam_r(\"%s\") (a user database lookup)", name)


GUARD_ALWAYS(struct passwd *, getpwuid, (uid_t uid), (uid),
             "getpwuid(%d) (a user database lookup)", (int) uid)


GUARD_ALWAYS(int, getpwuid_r,
             (uid_t uid, struct passwd *pwd, char *buf, size_t buflen,
              struct passwd **result),
             (uid, pwd, buf, buflen, result),
             "getpwuid_r(%d) (a user database lookup)", (int) uid)


/* --- waiting --- */

GUARD_ALWAYS(unsigned int, sleep, (unsigned int seconds), (seconds),
             "sleep(%u)", seconds)


GUARD_ALWAYS(int, usleep, (useconds_t usec), (usec),
             "usleep(%lu)", (unsigned long) usec)


GUARD_ALWAYS(int, nanosleep,
             (const struct timespec *req, struct timespec *rem), (req, rem),
             "%s", "nanosleep")


GUARD_ALWAYS(int, clock_nanosleep,
             (clockid_t clock, int flags, const struct timespec *req,
              struct timespec *rem),
             (clock, flags, req, rem), "%s", "clock_nanosleep")


int
poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    REAL(poll)

    if (guard_on() && timeout != 0) {
        guard_report(0, "poll with a timeout of %d ms", timeout);
    }

    return real_poll(fds, nfds, timeout);
}


int
__poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
    REAL(__poll_chk)

    if (guard_on() && timeout != 0) {
        guard_report(0, "poll with a timeout of %d ms", timeout);
    }

    return real___poll_chk(fds, nfds, timeout, fdslen);
}


int
ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
    const sigset_t *sigmask)
{
    REAL(ppoll)

    if (guard_on() && (tmo == NULL || tmo->tv_sec || tmo->tv_nsec)) {
        guard_report(0, "ppoll with a timeout");
    }

    return real_ppoll(fds, nfds, tmo, sigmask);
}


int
select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tmo)
{
    REAL(select)

    if (guard_on() && (tmo == NULL || tmo->tv_sec || tmo->tv_usec)) {
        guard_report(0, "select with a timeout");
    }

    return real_select(nfds, r, w, e, tmo);
}


int
pselect(int nfds, fd_set *r, fd_set *w, fd_set *e,
    const struct timespec *tmo, const sigset_t *sigmask)
{
    REAL(pselect)

    if (guard_on() && (tmo == NULL || tmo->tv_sec || tmo->tv_nsec)) {
        guard_report(0, "pselect with a timeout");
    }

    return real_pselect(nfds, r, w, e, tmo, sigmask);
}


GUARD_ALWAYS(int, system, (const char *command), (command),
             "%s", "system")


GUARD_ALWAYS(FILE *, popen, (const char *command, const char *type),
             (command, type), "%s", "popen")


/* --- sockets and pipes --- */

int
connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    REAL(connect)

    if (guard_on() && guard_blocking_fd(fd)) {
        guard_report(0, "connect() on a blocking socket");
    }

    return real_connect(fd, addr, len);
}


#define GUARD_READ(ret, name, params, args)                                  \
    ret name params                                                          \
    {                                                                        \
        REAL(name)                                                           \
        if (guard_on() && guard_blocking_stream(fd)) {                       \
            guard_report(0, "%s() on a blocking socket or pipe", #name);     \
        }                                                                    \
        return real_##name args;                                             \
    }

GUARD_READ(ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n))
GUARD_READ(ssize_t, __read_chk, (int fd, void *buf, size_t n, size_t buflen),
           (fd, buf, n, buflen))
GUARD_READ(ssize_t, readv, (int fd, const struct iovec *iov, int iovcnt),
           (fd, iov, iovcnt))
GUARD_READ(ssize_t, recv, (int fd, void *buf, size_t n, int flags),
           (fd, buf, n, flags))
GUARD_READ(ssize_t, __recv_chk,
           (int fd, void *buf, size_t n, size_t buflen, int flags),
           (fd, buf, n, buflen, flags))
GUARD_READ(ssize_t, recvfrom,
           (int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
            socklen_t *addrlen),
           (fd, buf, n, flags, addr, addrlen))
GUARD_READ(ssize_t, recvmsg, (int fd, struct msghdr *msg, int flags),
           (fd, msg, flags))


/* --- files: only from the module's code --- */

#define GUARD_OPEN_MODE(flags, mode)                                         \
    mode = 0;                                                                \
    if (((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE) {         \
        va_list  ap;                                                         \
        va_start(ap, flags);                                                 \
        mode = va_arg(ap, mode_t);                                           \
        va_end(ap);                                                          \
    }

#define GUARD_FILE(call, path)                                               \
    if (guard_on() && guard_file(path)) {                                    \
        guard_report(1, "%s(\"%s\") of a file", call, path);                 \
    }


int
open(const char *path, int flags, ...)
{
    mode_t  mode;

    REAL(open)
    GUARD_OPEN_MODE(flags, mode)
    GUARD_FILE("open", path)

    return real_open(path, flags, mode);
}


int
open64(const char *path, int flags, ...)
{
    mode_t  mode;

    REAL(open64)
    GUARD_OPEN_MODE(flags, mode)
    GUARD_FILE("open", path)

    return real_open64(path, flags, mode);
}


int
__open_2(const char *path, int flags)
{
    REAL(__open_2)
    GUARD_FILE("open", path)

    return real___open_2(path, flags);
}


int
__open64_2(const char *path, int flags)
{
    REAL(__open64_2)
    GUARD_FILE("open", path)

    return real___open64_2(path, flags);
}


int
openat(int dirfd, const char *path, int flags, ...)
{
    mode_t  mode;

    REAL(openat)
    GUARD_OPEN_MODE(flags, mode)
    GUARD_FILE("openat", path)

    return real_openat(dirfd, path, flags, mode);
}


int
openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t  mode;

    REAL(openat64)
    GUARD_OPEN_MODE(flags, mode)
    GUARD_FILE("openat", path)

    return real_openat64(dirfd, path, flags, mode);
}


FILE *
fopen(const char *path, const char *how)
{
    REAL(fopen)
    GUARD_FILE("fopen", path)

    return real_fopen(path, how);
}


FILE *
fopen64(const char *path, const char *how)
{
    REAL(fopen64)
    GUARD_FILE("fopen", path)

    return real_fopen64(path, how);
}


int
stat(const char *path, struct stat *st)
{
    REAL(stat)

    if (guard_on()) {
        guard_report(1, "stat(\"%s\")", path);
    }

    return real_stat(path, st);
}
