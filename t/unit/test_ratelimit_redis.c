/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_ratelimit_redis.c: key names, arguments, answers
 * and the over-limit hold without a server; then the script in a real
 * redis-server (started here on a unix socket in a temporary directory,
 * --save '' --appendonly no, stopped by its PID):
 *
 *   - SCRIPT LOAD gives the SHA1 computed here;
 *   - the same semantics: the script's limiter, given the times by a test
 *     clock (the production script cannot be given one: the test joins
 *     the script's head and limiter with its own clock part), answers
 *     random sequences of requests on one and two keys exactly as
 *     tenant_rate_check() and tenant_rate_refund() do, to the microsecond,
 *     with the same state, up to the edges of the exact range;
 *   - bad arguments and an out-of-range clock are error replies;
 *   - the production script on Redis's clock: a burst, the refill, key
 *     lifetimes (a key is gone once its bucket is full again), NOSCRIPT
 *     after SCRIPT FLUSH, a tier change using a new key, the hold.
 *
 * REDIS_SERVER names the server binary (default: redis-server in PATH).
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "tenant_ratelimit_redis.h"


#define MAX_INTS      16
#define STR_MAX       512
#define SEQUENCES     200
#define STEPS         120


typedef struct {
    int          type;                  /* + - : $ *, 0: protocol error */
    int          nil;
    long long    integer;
    size_t       len;
    char         str[STR_MAX];
    size_t       n;
    int64_t      ints[MAX_INTS];
    int          non_int;               /* an array element not an int */
} reply_t;


typedef struct {
    tenant_rate_t   rate;
    uint64_t        t;
    uint64_t        tau;
    int64_t         tat;                /* the oracle's state */
    char            key[TENANT_RATE_REDIS_KEY_MAX];
    size_t          key_len;
} lim_t;


static void test_key(void);
static void test_args(void);
static void test_result(void);
static void test_hold(void);
static int redis_start(void);
static void redis_stop(void);
static int redis_cmd(reply_t *r, int argc, const char **argv,
    const size_t *lens);
static int redis_cmds(reply_t *r, const char *a0, const char *a1,
    const char *a2);
static int read_reply(reply_t *r, int depth);
static void test_load(void);
static void test_arith(void);
static void test_same(void);
static void test_edges(void);
static void test_errors(void);
static void test_production(void);
static void test_noscript(void);
static void test_tier(void);
static int eval_lims(reply_t *r, const char *sha, lim_t *lims, int n,
    int64_t now, int with_now);
static int oracle(lim_t *lims, int n, int64_t now, int64_t *want);
static uint64_t rnd(void);
static uint64_t rnd_below(uint64_t n);
static uint64_t rnd_log(uint64_t max);
static int64_t mono_us(void);
static void sleep_ms(long ms);


static pid_t     redis_pid;
static int       redis_fd = -1;
static FILE     *redis_in;
static char      redis_dir[64];
static char      redis_sock[128];
static char      sha[TENANT_RATE_REDIS_SHA1_HEX + 1];
static char      test_sha[TENANT_RATE_REDIS_SHA1_HEX + 1];
static uint64_t  rnd_state = 0x2545f4914f6cdd1dULL;


/* the test's clock: "now" is the last argument, keys live a day */

static const char  test_clock[] =
    "local narg = #ARGV - 1\n"
    "local now = int(ARGV[#ARGV])\n"
    "local function lifetime(us)\n"
    "  return 86400000\n"
    "end\n";


int
main(void)
{
    test_key();
    test_args();
    test_result();
    test_hold();

    if (!ok(redis_start() == 0, "redis-server started on %s", redis_sock)) {
        redis_stop();
        return done_testing();
    }

    test_load();
    test_arith();
    test_same();
    test_edges();
    test_errors();
    test_production();
    test_noscript();
    test_tier();

    redis_stop();

    return done_testing();
}


static void
test_key(void)
{
    char           buf[TENANT_RATE_REDIS_KEY_MAX + 1], other[64];
    char           id[TENANT_RATE_REDIS_ID_MAX + 1];
    char           prefix[TENANT_RATE_REDIS_PREFIX_MAX + 1];
    char           value[TENANT_RATE_REDIS_VALUE_MAX + 10];
    size_t         len, len2;
    tenant_rate_t  rate = { 100, 60000, 100 }, rate2;

    len = tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "org_1", 5,
                                &rate, NULL, 0);
    buf[len] = '\0';
    is_str(buf, "tenant:rl:{org_1}:100:60000:100", "the tenant's key");

    rate.burst = 0;
    len = tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "org_1", 5,
                                &rate, "", 0);
    buf[len] = '\0';
    is_str(buf, "tenant:rl:{org_1}:100:60000:100",
           "burst 0 is the limit; an empty value is the tenant's key");

    len = tenant_rate_redis_key(buf, sizeof(buf), "gw:", 3, "org_1", 5,
                                &rate, "user_2", 6);
    buf[len] = '\0';
    is_str(buf, "gw:{org_1}:100:60000:100:u:user_2",
           "a value's key, another prefix");

    /* a tier change: every part of the rate is in the name */

    rate = (tenant_rate_t) { 100, 60000, 100 };
    len = tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "org_1", 5,
                                &rate, NULL, 0);

    rate2 = rate;
    rate2.limit = 1000;
    len2 = tenant_rate_redis_key(other, sizeof(other), NULL, 0, "org_1", 5,
                                 &rate2, NULL, 0);
    ok(len2 && (len != len2 || memcmp(buf, other, len) != 0),
       "another limit, another key");

    rate2 = rate;
    rate2.window_ms = 1000;
    len2 = tenant_rate_redis_key(other, sizeof(other), NULL, 0, "org_1", 5,
                                 &rate2, NULL, 0);
    ok(len2 && (len != len2 || memcmp(buf, other, len) != 0),
       "another window, another key");

    rate2 = rate;
    rate2.burst = 10;
    len2 = tenant_rate_redis_key(other, sizeof(other), NULL, 0, "org_1", 5,
                                 &rate2, NULL, 0);
    ok(len2 && (len != len2 || memcmp(buf, other, len) != 0),
       "another burst, another key");

    /* bounds */

    memset(id, 'i', sizeof(id));
    memset(prefix, 'p', sizeof(prefix));
    memset(value, 'v', sizeof(value));
    value[3] = '\0';
    value[4] = '\n';

    len = tenant_rate_redis_key(buf, TENANT_RATE_REDIS_KEY_MAX,
                                prefix, TENANT_RATE_REDIS_PREFIX_MAX,
                                id, TENANT_RATE_REDIS_ID_MAX,
                                &(tenant_rate_t) { UINT64_MAX, UINT64_MAX,
                                                   UINT64_MAX },
                                value, sizeof(value));
    is_int(len, TENANT_RATE_REDIS_KEY_MAX,
           "the longest key fills TENANT_RATE_REDIS_KEY_MAX exactly");
    ok(len && memcmp(buf + len - TENANT_RATE_REDIS_VALUE_MAX - 3, ":u:\0\0\0",
                     3) == 0
       && memcmp(buf + len - TENANT_RATE_REDIS_VALUE_MAX, value,
                 TENANT_RATE_REDIS_VALUE_MAX) == 0,
       "a value's first %d bytes, any bytes", TENANT_RATE_REDIS_VALUE_MAX);

    ok(tenant_rate_redis_key(buf, TENANT_RATE_REDIS_KEY_MAX - 1,
                             prefix, TENANT_RATE_REDIS_PREFIX_MAX,
                             id, TENANT_RATE_REDIS_ID_MAX,
                             &(tenant_rate_t) { UINT64_MAX, UINT64_MAX,
                                                UINT64_MAX },
                             value, sizeof(value)) == 0,
       "a buffer a byte short: 0");

    ok(tenant_rate_redis_key(buf, sizeof(buf), prefix,
                             TENANT_RATE_REDIS_PREFIX_MAX + 1, "o", 1,
                             &rate, NULL, 0) == 0,
       "a prefix too long: 0");
    ok(tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, id,
                             TENANT_RATE_REDIS_ID_MAX + 1, &rate, NULL, 0)
       == 0, "an id too long: 0");
    ok(tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "", 0, &rate,
                             NULL, 0) == 0,
       "an empty id: 0");
    ok(tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "a}b", 3, &rate,
                             NULL, 0) == 0,
       "an id with '}': 0");
    ok(tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "a{b", 3, &rate,
                             NULL, 0) != 0,
       "an id with '{' is fine (the tag ends at the first '}')");
    ok(tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "o", 1,
                             &(tenant_rate_t) { 0, 1000, 1 }, NULL, 0) == 0,
       "a zero limit: 0");
    ok(tenant_rate_redis_key(buf, sizeof(buf), NULL, 0, "o", 1,
                             &(tenant_rate_t) { 1, 0, 1 }, NULL, 0) == 0,
       "a zero window: 0");
    ok(tenant_rate_redis_key(NULL, 0, NULL, 0, "o", 1, &rate, NULL, 0) == 0,
       "no buffer: 0");
}


static void
test_args(void)
{
    uint64_t       t, tau, lt, ltau;
    tenant_rate_t  rate;

    rate = (tenant_rate_t) { 3, 1000, 5 };
    ok(tenant_rate_redis_args(&rate, &t, &tau) == 0, "args of 3r/s");
    tenant_rate_bucket(&rate, &lt, &ltau);
    is_int(t, 333334, "t rounded up as the local limiter");
    is_int(tau, 5 * 333334, "tau = t * burst");
    ok(t == lt && tau == ltau, "the local limiter's t and tau");

    /* the longest bucket kept exact: 1r/d, burst 26062 */

    rate = (tenant_rate_t) { 1, 86400000, 26062 };
    ok(tenant_rate_redis_args(&rate, &t, &tau) == 0
       && tau <= TENANT_RATE_REDIS_MAX_TAU, "1r/d burst=26062: exact");

    rate.burst = 26063;
    ok(tenant_rate_redis_args(&rate, &t, &tau) == -1,
       "1r/d burst=26063: longer than 2^51 us, limited locally");

    rate = (tenant_rate_t) { 100000000, 86400000, 100000000 };
    ok(tenant_rate_redis_args(&rate, &t, &tau) == 0 && t == 864,
       "10^8r/d burst=10^8: exact");
}


static void
test_result(void)
{
    size_t                       i;
    tenant_rate_redis_answer_t   a;

    static const int64_t  good_ok[4] = { 1, 7, 0, 1001 };
    static const int64_t  good_no[4] = { 0, 0, 1, 999999 };
    static const int64_t  bad[][4] = {
        { 2, 0, 0, 0 }, { -1, 0, 1, 0 }, { 1, -1, 0, 0 },
        { 1, 0, 5, 0 },                 /* admitted with a retry time */
        { 0, 0, 0, 5 },                 /* refused without one */
        { 0, 3, 5, 5 },                 /* refused with remaining */
        { 1, 0, 0, -1 }, { 0, 0, -5, 0 },
        { 1, (int64_t) 1 << 53, 0, 0 }, { 0, 0, INT64_MAX, 0 },
    };

    ok(tenant_rate_redis_result(good_ok, &a) == 0
       && a.result.allowed == 1 && a.result.remaining == 7
       && a.result.retry_after_ms == 0 && a.result.reset_ms == 2
       && a.reset_us == 1001,
       "an admission: reset 1001 us is 2 ms");

    ok(tenant_rate_redis_result(good_no, &a) == 0
       && a.result.allowed == 0 && a.result.remaining == 0
       && a.result.retry_after_ms == 1 && a.result.reset_ms == 1000
       && a.retry_after_us == 1,
       "a refusal: retry 1 us is 1 ms, reset 999999 us is 1000 ms");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(tenant_rate_redis_result(bad[i], &a) == -1,
           "impossible answer %zu refused", i);
    }

    ok(tenant_rate_redis_noscript("NOSCRIPT No matching script. Please use "
                                  "EVAL.", 45),
       "NOSCRIPT recognized");
    ok(tenant_rate_redis_noscript("NOSCRIPT", 8), "bare NOSCRIPT");
    ok(!tenant_rate_redis_noscript("NOSCRIPTS", 9), "NOSCRIPTS is not");
    ok(!tenant_rate_redis_noscript("ERR tenant: bad t or tau", 24),
       "another error is not");
    ok(!tenant_rate_redis_noscript("NOSCR", 5), "a short error is not");
}


static void
test_hold(void)
{
    tenant_rate_result_t         r;
    tenant_rate_hold_t           h;
    tenant_rate_redis_answer_t   a;

    static const int64_t  no[4] = { 0, 0, 250500, 900000 };
    static const int64_t  yes[4] = { 1, 3, 0, 100 };

    memset(&h, 0, sizeof(h));
    ok(tenant_rate_hold_check(&h, 5, &r) == 0, "no hold: ask");

    tenant_rate_redis_result(no, &a);
    tenant_rate_hold_set(&h, &a, 1000000);

    ok(tenant_rate_hold_check(&h, 1000000, &r) == 1
       && r.allowed == 0 && r.remaining == 0
       && r.retry_after_ms == 251 && r.reset_ms == 900,
       "held when sent: the answer's own numbers");

    ok(tenant_rate_hold_check(&h, 1200000, &r) == 1
       && r.retry_after_ms == 51 && r.reset_ms == 700,
       "held 200 ms later: counted down");

    ok(tenant_rate_hold_check(&h, 1250499, &r) == 1
       && r.retry_after_ms == 1,
       "held until the last microsecond");

    ok(tenant_rate_hold_check(&h, 1250500, &r) == 0,
       "at sent + retry_after: ask Redis again");

    tenant_rate_hold_set(&h, &a, 1000000);
    tenant_rate_redis_result(yes, &a);
    tenant_rate_hold_set(&h, &a, 1100000);
    ok(tenant_rate_hold_check(&h, 1100001, &r) == 0,
       "an admission lifts the hold");
}


/* redis-server on a unix socket in a new directory; 0 when it answers */

static int
redis_start(void)
{
    int                  i, fd;
    const char          *bin;
    char                 log[128];
    struct sockaddr_un   sa;

    bin = getenv("REDIS_SERVER");
    if (bin == NULL || *bin == '\0') {
        bin = "redis-server";
    }

    strcpy(redis_dir, "/tmp/tenant-redis-XXXXXX");
    if (mkdtemp(redis_dir) == NULL) {
        printf("# mkdtemp: %s\n", strerror(errno));
        return -1;
    }

    snprintf(redis_sock, sizeof(redis_sock), "%s/redis.sock", redis_dir);
    snprintf(log, sizeof(log), "%s/redis.log", redis_dir);

    fflush(stdout);

    redis_pid = fork();
    if (redis_pid < 0) {
        return -1;
    }

    if (redis_pid == 0) {
        /* the server goes with the test, even one that crashes */
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);

        fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }

        execlp(bin, bin, "--port", "0", "--unixsocket", redis_sock,
               "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
               "--dir", redis_dir, "--daemonize", "no",
               "--maxmemory", "64mb", (char *) NULL);

        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, redis_sock);

    for (i = 0; i < 100; i++) {
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0) {
            return -1;
        }

        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
            redis_fd = fd;
            redis_in = fdopen(dup(fd), "r");
            return redis_in ? 0 : -1;
        }

        close(fd);

        if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
            redis_pid = 0;
            printf("# %s exited; is it installed (scripts/deps.sh)?\n", bin);
            return -1;
        }

        sleep_ms(50);
    }

    printf("# %s did not answer on %s in 5 s\n", bin, redis_sock);

    return -1;
}


static void
redis_stop(void)
{
    char  path[192];

    if (redis_in) {
        fclose(redis_in);
        redis_in = NULL;
    }

    if (redis_fd >= 0) {
        close(redis_fd);
        redis_fd = -1;
    }

    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }

    if (redis_dir[0]) {
        snprintf(path, sizeof(path), "%s/redis.log", redis_dir);
        unlink(path);
        unlink(redis_sock);
        rmdir(redis_dir);
    }
}


/* One command (binary-safe arguments: lens may be NULL), its reply. */

static int
redis_cmd(reply_t *r, int argc, const char **argv, const size_t *lens)
{
    int      i;
    char     head[32];
    size_t   len, off;
    ssize_t  n;
    char     buf[8192];

    off = (size_t) snprintf(buf, sizeof(buf), "*%d\r\n", argc);

    for (i = 0; i < argc; i++) {
        len = lens ? lens[i] : strlen(argv[i]);
        snprintf(head, sizeof(head), "$%zu\r\n", len);

        if (off + strlen(head) + len + 2 > sizeof(buf)) {
            return -1;
        }

        memcpy(buf + off, head, strlen(head));
        off += strlen(head);
        memcpy(buf + off, argv[i], len);
        off += len;
        memcpy(buf + off, "\r\n", 2);
        off += 2;
    }

    for (len = 0; len < off; len += (size_t) n) {
        n = write(redis_fd, buf + len, off - len);
        if (n <= 0) {
            return -1;
        }
    }

    return read_reply(r, 0);
}


static int
redis_cmds(reply_t *r, const char *a0, const char *a1, const char *a2)
{
    const char  *argv[3] = { a0, a1, a2 };

    return redis_cmd(r, a2 ? 3 : (a1 ? 2 : 1), argv, NULL);
}


static int
read_reply(reply_t *r, int depth)
{
    char       line[STR_MAX + 8];
    size_t     i, len;
    long long  n;
    reply_t    e;

    memset(r, 0, sizeof(reply_t));

    if (fgets(line, sizeof(line), redis_in) == NULL) {
        return -1;
    }

    len = strlen(line);
    if (len < 3 || line[len - 2] != '\r' || line[len - 1] != '\n') {
        return -1;
    }

    line[len - 2] = '\0';
    r->type = line[0];

    switch (line[0]) {

    case '+':
    case '-':
        r->len = len - 3;
        memcpy(r->str, line + 1, r->len + 1);
        return 0;

    case ':':
        r->integer = strtoll(line + 1, NULL, 10);
        return 0;

    case '$':
        n = strtoll(line + 1, NULL, 10);
        if (n < 0) {
            r->nil = 1;
            return 0;
        }

        if (n >= STR_MAX - 2
            || fread(r->str, 1, (size_t) n + 2, redis_in) != (size_t) n + 2)
        {
            return -1;
        }

        r->len = (size_t) n;
        r->str[n] = '\0';
        return 0;

    case '*':
        n = strtoll(line + 1, NULL, 10);
        if (n < 0) {
            r->nil = 1;
            return 0;
        }

        if (n > MAX_INTS || depth > 0) {
            return -1;
        }

        r->n = (size_t) n;

        for (i = 0; i < r->n; i++) {
            if (read_reply(&e, depth + 1) != 0) {
                return -1;
            }

            if (e.type == ':') {
                r->ints[i] = e.integer;

            } else {
                r->non_int = 1;
            }
        }

        return 0;
    }

    r->type = 0;

    return -1;
}


static void
test_load(void)
{
    reply_t  r;
    char    *script;
    size_t   len;
    const char  *argv[3];
    size_t       lens[3];

    ok(tenant_rate_redis_sha1(sha) == 0 && strlen(sha) == 40,
       "the script's SHA1: %s", sha);

    argv[0] = "SCRIPT";
    argv[1] = "LOAD";
    argv[2] = tenant_rate_redis_script;
    lens[0] = 6;
    lens[1] = 4;
    lens[2] = tenant_rate_redis_script_len;

    ok(redis_cmd(&r, 3, argv, lens) == 0 && r.type == '$'
       && strcmp(r.str, sha) == 0,
       "SCRIPT LOAD answers the same SHA1");

    if (r.type == '-') {
        printf("#   %s\n", r.str);
    }

    /* the test's variant: the same head and limiter, the test's clock */

    len = strlen(tenant_rate_redis_lua_head) + strlen(test_clock)
          + strlen(tenant_rate_redis_lua_gcra);
    script = malloc(len + 1);
    if (script == NULL) {
        return;
    }

    strcpy(script, tenant_rate_redis_lua_head);
    strcat(script, test_clock);
    strcat(script, tenant_rate_redis_lua_gcra);

    ok(strstr(tenant_rate_redis_script, "ARGV[#ARGV]") == NULL
       && strstr(tenant_rate_redis_script, "redis.call('TIME')") != NULL,
       "the production script takes no time from its arguments");

    ok(strlen(tenant_rate_redis_script)
       == strlen(tenant_rate_redis_lua_head)
          + strlen(tenant_rate_redis_lua_clock)
          + strlen(tenant_rate_redis_lua_gcra)
       && strstr(tenant_rate_redis_script, tenant_rate_redis_lua_gcra)
          != NULL,
       "the production script is head, clock and the same limiter");

    lens[2] = len;
    argv[2] = script;

    ok(redis_cmd(&r, 3, argv, lens) == 0 && r.type == '$' && r.len == 40,
       "SCRIPT LOAD of the test's variant");
    memcpy(test_sha, r.str, 41);

    free(script);
}


/*
 * The script's integer arithmetic in Redis's Lua: idiv() is the exact
 * floor for any a < 2^53 (chosen ones just below a multiple, random
 * ones), lifetime() rounds microseconds up to milliseconds.
 */

static void
test_arith(void)
{
    int          i, j, bad, argc;
    char        *script, nums[16][24];
    size_t       len;
    reply_t      r;
    uint64_t     a[8], b[8], top;
    const char  *argv[20];

    static const char  div_body[] =
        "local r = {}\n"
        "for i = 1, #ARGV, 2 do\n"
        "  r[#r + 1] = idiv(int(ARGV[i]), int(ARGV[i + 1]))\n"
        "end\n"
        "return r\n";

    static const char  life_body[] =
        "local r = {}\n"
        "for i = 1, #ARGV do\n"
        "  r[#r + 1] = lifetime(int(ARGV[i]))\n"
        "end\n"
        "return r\n";

    static const uint64_t  life[8][2] = {
        { 1, 1 }, { 999, 1 }, { 1000, 1 }, { 1001, 2 }, { 333334, 334 },
        { 2251799813685248ULL, 2251799813686ULL },
        { 4503599627369000ULL, 4503599627369ULL },
        { 4503599627369001ULL, 4503599627370ULL },
    };

    len = strlen(tenant_rate_redis_lua_head) + strlen(div_body)
          + strlen(tenant_rate_redis_lua_clock) + strlen(life_body);
    script = malloc(len + 1);
    if (script == NULL) {
        return;
    }

    top = ((uint64_t) 1 << 53) - 1;
    bad = 0;

    strcpy(script, tenant_rate_redis_lua_head);
    strcat(script, div_body);

    for (i = 0; i < 200; i++) {
        for (j = 0; j < 8; j++) {
            if (i == 0) {
                /* just below the largest multiple under 2^53 */
                b[j] = j < 4 ? (uint64_t) (2 + j)
                             : ((uint64_t) 1 << (6 * j + 8)) + 1;
                a[j] = top / b[j] * b[j] - 1;

            } else {
                b[j] = 1 + rnd_log(top - 1);
                a[j] = rnd_below(2) ? rnd_below(top + 1)
                                    : (rnd_below(top / b[j]) + 1) * b[j]
                                      - rnd_below(2);
            }

            snprintf(nums[2 * j], 24, "%llu", (unsigned long long) a[j]);
            snprintf(nums[2 * j + 1], 24, "%llu", (unsigned long long) b[j]);
        }

        argc = 0;
        argv[argc++] = "EVAL";
        argv[argc++] = script;
        argv[argc++] = "0";
        for (j = 0; j < 16; j++) {
            argv[argc++] = nums[j];
        }

        if (redis_cmd(&r, argc, argv, NULL) != 0 || r.type != '*'
            || r.n != 8 || r.non_int)
        {
            bad++;
            printf("#   %c %s\n", r.type, r.str);
            continue;
        }

        for (j = 0; j < 8; j++) {
            if ((uint64_t) r.ints[j] != a[j] / b[j]) {
                bad++;
                printf("#   idiv(%s, %s) = %lld, not %llu\n", nums[2 * j],
                       nums[2 * j + 1], (long long) r.ints[j],
                       (unsigned long long) (a[j] / b[j]));
            }
        }
    }

    ok(bad == 0, "idiv() in Redis's Lua is C's integer division for 1600 "
       "pairs below 2^53");

    strcpy(script, tenant_rate_redis_lua_head);
    strcat(script, tenant_rate_redis_lua_clock);
    strcat(script, life_body);

    argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = "0";
    for (j = 0; j < 8; j++) {
        snprintf(nums[j], 24, "%llu", (unsigned long long) life[j][0]);
        argv[argc++] = nums[j];
    }

    bad = redis_cmd(&r, argc, argv, NULL) != 0 || r.type != '*' || r.n != 8;

    for (j = 0; !bad && j < 8; j++) {
        if ((uint64_t) r.ints[j] != life[j][1]) {
            bad++;
            printf("#   lifetime(%llu) = %lld\n",
                   (unsigned long long) life[j][0], (long long) r.ints[j]);
        }
    }

    ok(!bad, "the production clock's key lifetime: microseconds rounded up "
       "to milliseconds (1001 us: 2 ms)");

    free(script);
}


/*
 * EVALSHA of the keys (with now as the last argument if with_now); the
 * reply in *r.  0, or -1 on a protocol error.
 */

static int
eval_lims(reply_t *r, const char *s, lim_t *lims, int n, int64_t now,
    int with_now)
{
    int          i, argc;
    char         nums[8][24], nk[8];
    const char  *argv[16];
    size_t       lens[16];

    argc = 0;
    argv[argc] = "EVALSHA"; lens[argc++] = 7;
    argv[argc] = s; lens[argc++] = 40;
    snprintf(nk, sizeof(nk), "%d", n);
    argv[argc] = nk; lens[argc++] = strlen(nk);

    for (i = 0; i < n; i++) {
        argv[argc] = lims[i].key;
        lens[argc++] = lims[i].key_len;
    }

    for (i = 0; i < n; i++) {
        snprintf(nums[2 * i], 24, "%llu", (unsigned long long) lims[i].t);
        snprintf(nums[2 * i + 1], 24, "%llu",
                 (unsigned long long) lims[i].tau);
        argv[argc] = nums[2 * i]; lens[argc] = strlen(argv[argc]); argc++;
        argv[argc] = nums[2 * i + 1]; lens[argc] = strlen(argv[argc]); argc++;
    }

    if (with_now) {
        snprintf(nums[7], 24, "%lld", (long long) now);
        argv[argc] = nums[7]; lens[argc] = strlen(argv[argc]); argc++;
    }

    return redis_cmd(r, argc, argv, lens);
}


/*
 * What ngx_tenant_ratelimit() does with the local limiter: the keys in
 * order, the first refusal ends it and the keys before it get their
 * request back.  want[] is what the script should answer, in
 * microseconds (from the states before and after); the count of integers.
 */

static int
oracle(lim_t *lims, int n, int64_t now, int64_t *want)
{
    int                    i, j;
    int64_t                before, prev[2];
    uint64_t               d;
    tenant_rate_result_t   res;

    for (i = 0; i < n; i++) {
        before = lims[i].tat;
        prev[i] = before;
        tenant_rate_check(&lims[i].rate, &lims[i].tat, now, &res);

        d = before > now ? (uint64_t) (before - now) : 0;
        if (d > lims[i].tau) {
            d = lims[i].tau;
        }

        if (!res.allowed) {
            want[4 * i] = 0;
            want[4 * i + 1] = 0;
            want[4 * i + 2] = (int64_t) (d + lims[i].t - lims[i].tau);
            want[4 * i + 3] = (int64_t) d;

            for (j = 0; j < i; j++) {
                tenant_rate_refund(&lims[j].rate, &lims[j].tat, now, &res);
                d = lims[j].tat > now ? (uint64_t) (lims[j].tat - now) : 0;
                want[4 * j + 1] = (int64_t) res.remaining;
                want[4 * j + 3] = (int64_t) d;

                /*
                 * A key whose state was in the past: the refund moves it
                 * to now, the script leaves it (both a full bucket).  Only
                 * a clock that goes back tells them apart, and Redis's
                 * can (the local one is monotonic): then the script's
                 * request is the one not made at all.
                 */

                if (d == 0 && prev[j] <= now) {
                    lims[j].tat = prev[j];
                }
            }

            return 4 * (i + 1);
        }

        want[4 * i] = 1;
        want[4 * i + 1] = (int64_t) res.remaining;
        want[4 * i + 2] = 0;
        want[4 * i + 3] = lims[i].tat - now;
    }

    return 4 * n;
}


static int
random_lim(lim_t *l, int k, int by)
{
    char      id[16], value[16];
    uint64_t  limit, window;

    for ( ;; ) {
        window = 1 + rnd_log(TENANT_RATE_MAX_WINDOW - 1);
        limit = 1 + rnd_log(TENANT_RATE_MAX_LIMIT - 1);

        if (window * 1000 < limit) {
            continue;
        }

        l->rate.limit = limit;
        l->rate.window_ms = window;
        l->rate.burst = rnd_below(3) == 0 ? limit
                                          : 1 + rnd_log(TENANT_RATE_MAX_LIMIT
                                                        - 1);

        if (tenant_rate_redis_args(&l->rate, &l->t, &l->tau) == 0) {
            break;
        }
    }

    l->tat = 0;

    snprintf(id, sizeof(id), "seq%d", k);
    snprintf(value, sizeof(value), "user%d", k);

    l->key_len = tenant_rate_redis_key(l->key, sizeof(l->key), "test:", 5,
                                       id, strlen(id), &l->rate,
                                       by ? value : NULL, by ? 5 : 0);

    return l->key_len ? 0 : -1;
}


/* Random sequences on one or two keys: the script answers as the oracle. */

static void
test_same(void)
{
    int                          k, s, n, i, cnt, bad, calls, refused;
    int                          two, clamps, near;
    int64_t                      now, want[8], gap;
    uint64_t                     span;
    reply_t                      r, g;
    lim_t                        lims[2];
    tenant_rate_redis_answer_t   a;
    tenant_rate_result_t         res;
    int64_t                      tat_copy;

    bad = 0;
    calls = 0;
    refused = 0;
    two = 0;
    clamps = 0;
    near = 0;

    for (k = 0; k < SEQUENCES && bad < 5; k++) {
        n = 1 + (int) rnd_below(2);

        for (i = 0; i < n; i++) {
            if (random_lim(&lims[i], k, n == 2 && i == 0) != 0) {
                bad++;
            }
        }

        /* some sequences at the top of the exact range */

        span = lims[n - 1].tau * 4 + 1000000;
        now = (k % 5 == 0)
              ? (int64_t) (TENANT_RATE_REDIS_MAX_NOW - 1 - span)
              : (int64_t) rnd_below(TENANT_RATE_REDIS_MAX_NOW / 2);

        if (k % 5 == 0) {
            near++;
        }

        for (s = 0; s < STEPS && bad < 5; s++) {
            switch (rnd_below(8)) {
            case 0:
            case 1:
            case 2:
                gap = 0;
                break;
            case 3:
                gap = (int64_t) rnd_below(lims[n - 1].t + 1);
                break;
            case 4:
                gap = (int64_t) lims[n - 1].t;
                break;
            case 5:
                gap = (int64_t) rnd_below(lims[n - 1].tau + 1);
                break;
            case 6:
                gap = (int64_t) rnd_below(lims[0].t * 3 + 1);
                break;
            default:
                /* the clock goes back (a Redis failover, a step) */
                gap = -(int64_t) rnd_below(lims[n - 1].tau + 1);
                break;
            }

            if (now + gap < 0
                || (uint64_t) (now + gap) >= TENANT_RATE_REDIS_MAX_NOW)
            {
                gap = 0;
            }

            now += gap;

            for (i = 0; i < n; i++) {
                tat_copy = lims[i].tat;
                if (tat_copy > now
                    && (uint64_t) (tat_copy - now) > lims[i].tau)
                {
                    clamps++;
                }
            }

            cnt = oracle(lims, n, now, want);

            calls++;
            if (cnt < 4 * n) {
                refused++;
            }
            if (n == 2) {
                two++;
            }

            if (eval_lims(&r, test_sha, lims, n, now, 1) != 0
                || r.type != '*' || r.non_int || (int) r.n != cnt
                || memcmp(r.ints, want, cnt * sizeof(int64_t)) != 0)
            {
                bad++;
                ok(0, "sequence %d step %d: the script answers as "
                   "tenant_rate_check()", k, s);
                printf("#   t %llu tau %llu now %lld keys %d: got type %c "
                       "%s n %zu\n", (unsigned long long) lims[n - 1].t,
                       (unsigned long long) lims[n - 1].tau, (long long) now,
                       n, r.type ? r.type : '?', r.str, r.n);
                for (i = 0; i < cnt; i++) {
                    printf("#   [%d] got %lld want %lld\n", i,
                           i < (int) r.n ? (long long) r.ints[i] : -1LL,
                           (long long) want[i]);
                }
                continue;
            }

            /* rounded, the answer is the local limiter's */

            for (i = 0; i < cnt / 4; i++) {
                if (tenant_rate_redis_result(&r.ints[4 * i], &a) != 0) {
                    bad++;
                    ok(0, "sequence %d step %d: a valid answer", k, s);
                }
            }

            /* the stored states are the oracle's (or both in the past) */

            for (i = 0; i < n; i++) {
                const char  *argv[2] = { "GET", lims[i].key };
                size_t       lens[2] = { 3, lims[i].key_len };
                long long    v;

                if (redis_cmd(&g, 2, argv, lens) != 0) {
                    bad++;
                    continue;
                }

                v = g.nil ? 0 : strtoll(g.str, NULL, 10);

                if (!((v <= now && lims[i].tat <= now)
                      || v == lims[i].tat))
                {
                    bad++;
                    ok(0, "sequence %d step %d key %d: state %lld, the "
                       "oracle's %lld", k, s, i, v, (long long) lims[i].tat);
                }
            }
        }
    }

    ok(bad == 0, "%d requests in %d sequences (%d on two keys, %d refused, "
       "%d states beyond the bucket, %d sequences near 2^52 us): the "
       "script's answers and states are the local limiter's", calls, k,
       two, refused, clamps, near);

    ok(refused > calls / 20 && refused < calls - calls / 20 && two > 0
       && clamps > 0,
       "the sequences exercised admissions, refusals, two keys and a "
       "clock going back");

    /* rounding: the answer read back is tenant_rate_check()'s, field by
     * field (the memcmp above is on microseconds) */

    lims[0].rate = (tenant_rate_t) { 3, 1000, 2 };
    tenant_rate_redis_args(&lims[0].rate, &lims[0].t, &lims[0].tau);
    lims[0].key_len = tenant_rate_redis_key(lims[0].key, sizeof(lims[0].key),
                                            "round:", 6, "o", 1,
                                            &lims[0].rate, NULL, 0);
    lims[0].tat = 0;

    for (s = 0, bad = 0; s < 4; s++) {
        now = 5000000 + s * 1;
        tenant_rate_check(&lims[0].rate, &lims[0].tat, now, &res);

        if (eval_lims(&r, test_sha, lims, 1, now, 1) != 0 || r.n != 4
            || tenant_rate_redis_result(r.ints, &a) != 0
            || a.result.allowed != res.allowed
            || a.result.remaining != res.remaining
            || a.result.retry_after_ms != res.retry_after_ms
            || a.result.reset_ms != res.reset_ms)
        {
            bad++;
        }
    }

    ok(bad == 0, "3r/s burst=2: allowed, remaining, retry_after_ms, "
       "reset_ms as tenant_rate_check() (333334 us is 334 ms)");
}


/* The ends of the exact range, and a state that is not a number. */

static void
test_edges(void)
{
    int                   i, bad;
    int64_t               now, want[8];
    reply_t               r;
    lim_t                 l;
    const char           *argv[3];
    size_t                lens[3];

    /* the longest bucket, at the last microsecond of the range */

    l.rate = (tenant_rate_t) { 1, 86400000, 26062 };
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), "edge:", 5,
                                      "o", 1, &l.rate, NULL, 0);
    l.tat = 0;

    now = (int64_t) TENANT_RATE_REDIS_MAX_NOW - 1 - (int64_t) l.tau;
    bad = 0;

    for (i = 0; i < 26062 + 3; i++) {
        if (i == 26062) {
            now += 1;                   /* refusals 1 us later */
        }

        oracle(&l, 1, now, want);

        if (eval_lims(&r, test_sha, &l, 1, now, 1) != 0 || r.n != 4
            || memcmp(r.ints, want, 4 * sizeof(int64_t)) != 0)
        {
            bad++;
        }
    }

    ok(bad == 0, "1r/d burst=26062 (tau %llu us) from 2^52 - 1 - tau: "
       "26062 admitted, then refused, to the microsecond",
       (unsigned long long) l.tau);

    now = (int64_t) TENANT_RATE_REDIS_MAX_NOW - 1;
    oracle(&l, 1, now, want);
    ok(eval_lims(&r, test_sha, &l, 1, now, 1) == 0 && r.n == 4
       && memcmp(r.ints, want, 4 * sizeof(int64_t)) == 0,
       "now = 2^52 - 1: as the local limiter");

    /* one microsecond a request, the largest burst */

    l.rate = (tenant_rate_t) { 1000, 1, 100000000 };
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), "edge:", 5,
                                      "o", 1, &l.rate, NULL, 0);
    l.tat = 0;
    now = 123456789;

    for (i = 0, bad = 0; i < 50; i++) {
        now += (int64_t) rnd_below(3);
        oracle(&l, 1, now, want);

        if (eval_lims(&r, test_sha, &l, 1, now, 1) != 0 || r.n != 4
            || memcmp(r.ints, want, 4 * sizeof(int64_t)) != 0)
        {
            bad++;
        }
    }

    ok(bad == 0, "t = 1 us, burst 10^8: as the local limiter");

    /* a state that is not a number is a new key, as tat 0 locally */

    argv[0] = "SET";
    argv[1] = l.key;
    argv[2] = "garbage";
    lens[0] = 3;
    lens[1] = l.key_len;
    lens[2] = 7;

    redis_cmd(&r, 3, argv, lens);

    l.tat = 0;
    oracle(&l, 1, now, want);
    ok(eval_lims(&r, test_sha, &l, 1, now, 1) == 0 && r.n == 4
       && memcmp(r.ints, want, 4 * sizeof(int64_t)) == 0
       && r.ints[1] == 100000000 - 1,
       "a state that is not a number reads as a new key");

    argv[2] = "-5";
    lens[2] = 2;
    redis_cmd(&r, 3, argv, lens);
    ok(eval_lims(&r, test_sha, &l, 1, now, 1) == 0 && r.n == 4
       && r.ints[0] == 1 && r.ints[1] == 100000000 - 1,
       "a negative state reads as a new key");

    argv[2] = "1e300";
    lens[2] = 5;
    redis_cmd(&r, 3, argv, lens);
    ok(eval_lims(&r, test_sha, &l, 1, now, 1) == 0 && r.n == 4
       && r.ints[0] == 1 && r.ints[1] == 100000000 - 1,
       "a huge state reads as a new key");
}


static void
test_errors(void)
{
    size_t       i;
    reply_t      r;
    const char  *argv[10];

    static const struct {
        int          argc;
        const char  *args[7];
        const char  *what;
    } cases[] = {
        { 6, { "1", "k", "10", "100", "4503599627370496" },
          "now = 2^52: clock out of range" },
        { 6, { "1", "k", "10", "100", "-1" }, "now < 0" },
        { 6, { "1", "k", "10", "100", "1.5" }, "a fractional now" },
        { 6, { "1", "k", "0", "100", "5" }, "t = 0" },
        { 6, { "1", "k", "10", "9", "5" }, "tau < t" },
        { 6, { "1", "k", "10", "2251799813685249", "5" }, "tau > 2^51" },
        { 6, { "1", "k", "10", "x", "5" }, "tau not a number" },
        { 5, { "1", "k", "10", "5" }, "t without tau" },
        { 7, { "2", "k", "j", "10", "100", "5" }, "two keys, one pair" },
        { 4, { "0", "10", "100" }, "no key" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        argv[0] = "EVALSHA";
        argv[1] = test_sha;
        memcpy(&argv[2], cases[i].args, (cases[i].argc - 1) * sizeof(char *));

        ok(redis_cmd(&r, cases[i].argc + 1, argv, NULL) == 0
           && r.type == '-' && strncmp(r.str, "ERR tenant: ", 12) == 0,
           "%s: an error reply (%s)", cases[i].what, r.str);
    }

    ok(redis_cmds(&r, "EXISTS", "k", NULL) == 0 && r.integer == 0,
       "and nothing written");
}


/* The production script, Redis's clock: burst, refill, lifetimes, hold. */

static void
test_production(void)
{
    int                          i, all;
    int64_t                      sent, start;
    long long                    ttl;
    reply_t                      r;
    lim_t                        l;
    tenant_rate_hold_t           hold;
    tenant_rate_result_t         res;
    tenant_rate_redis_answer_t   a;

    l.rate = (tenant_rate_t) { 10, 1000, 10 };      /* t 100 ms, tau 1 s */
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), NULL, 0,
                                      "prod", 4, &l.rate, NULL, 0);
    l.key[l.key_len] = '\0';

    start = mono_us();
    all = 1;

    for (i = 0; i < 10; i++) {
        if (eval_lims(&r, sha, &l, 1, 0, 0) != 0 || r.type != '*'
            || r.n != 4 || r.ints[0] != 1 || r.ints[1] != 9 - i)
        {
            all = 0;
            printf("#   request %d: type %c %s n %zu allowed %lld\n", i,
                   r.type, r.str, r.n, (long long) r.ints[0]);
        }
    }

    ok(all, "TIME then SET in a script: 10r/s admits a burst of 10, "
       "remaining 9 .. 0");

    ttl = redis_cmds(&r, "PTTL", l.key, NULL) == 0 && r.type == ':'
          ? r.integer : -100;
    ok(ttl > 1000 - 200 && ttl <= 1000,
       "the key lives until its bucket is full: PTTL %lld ms", ttl);

    sent = mono_us();
    memset(&a, 0, sizeof(a));
    all = eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.n == 4
          && tenant_rate_redis_result(r.ints, &a) == 0;
    ok(all && !a.result.allowed
       && a.retry_after_us > 0 && a.retry_after_us <= 100000
       && (int64_t) a.retry_after_us >= 100000 - (sent - start) - 20000,
       "the 11th is refused, retry after %llu us",
       (unsigned long long) a.retry_after_us);

    tenant_rate_hold_set(&hold, &a, sent);
    ok(tenant_rate_hold_check(&hold, mono_us(), &res) == 1
       && res.retry_after_ms <= a.result.retry_after_ms,
       "held locally: refused without asking");

    while (tenant_rate_hold_check(&hold, mono_us(), &res)) {
        sleep_ms(1);
    }

    ok(eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.n == 4 && r.ints[0] == 1
       && r.ints[1] == 0,
       "when the hold ends, Redis admits the next one");

    /* lifetimes: a key is gone once its bucket is full again */

    l.rate = (tenant_rate_t) { 5, 200, 5 };          /* t 40 ms */
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), NULL, 0,
                                      "ttl", 3, &l.rate, NULL, 0);
    l.key[l.key_len] = '\0';

    eval_lims(&r, sha, &l, 1, 0, 0);
    ttl = redis_cmds(&r, "PTTL", l.key, NULL) == 0 ? r.integer : -100;
    ok(ttl > 20 && ttl <= 40,
       "one request of 5/200ms: the key lives 40 ms (PTTL %lld)", ttl);

    for (i = 0; i < 4; i++) {
        eval_lims(&r, sha, &l, 1, 0, 0);
    }

    all = r.n == 4 && r.ints[0] == 1 && r.ints[1] == 0;
    ttl = redis_cmds(&r, "PTTL", l.key, NULL) == 0 ? r.integer : -100;
    ok(all && ttl > 150 && ttl <= 200, "five: 200 ms (PTTL %lld)", ttl);

    sleep_ms(100);
    ok(redis_cmds(&r, "EXISTS", l.key, NULL) == 0 && r.integer == 1,
       "still there 100 ms later, while the bucket refills");

    sleep_ms(130);
    ok(redis_cmds(&r, "EXISTS", l.key, NULL) == 0 && r.integer == 0,
       "gone once the bucket is full again");

    ok(eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.n == 4 && r.ints[0] == 1
       && r.ints[1] == 4,
       "and the next request finds a full bucket");

    /* two keys: the narrower refuses, the tenant's is not touched */

    {
        lim_t  two[2];

        two[0].rate = (tenant_rate_t) { 1, 60000, 1 };
        two[1].rate = (tenant_rate_t) { 100, 60000, 100 };

        for (i = 0; i < 2; i++) {
            tenant_rate_redis_args(&two[i].rate, &two[i].t, &two[i].tau);
            two[i].key_len = tenant_rate_redis_key(two[i].key,
                                                   sizeof(two[i].key), NULL,
                                                   0, "pair", 4,
                                                   &two[i].rate,
                                                   i ? NULL : "u1",
                                                   i ? 0 : 2);
            two[i].key[two[i].key_len] = '\0';
        }

        ok(eval_lims(&r, sha, two, 2, 0, 0) == 0 && r.n == 8
           && r.ints[0] == 1 && r.ints[4] == 1 && r.ints[5] == 99,
           "two keys: both admit");

        ok(eval_lims(&r, sha, two, 2, 0, 0) == 0 && r.n == 4
           && r.ints[0] == 0,
           "the caller's key refuses: one answer");

        ttl = redis_cmds(&r, "PTTL", two[1].key, NULL) == 0
              ? r.integer : -100;
        ok(ttl > 500 && ttl <= 600,
           "the tenant's key was advanced once only (PTTL %lld of 600)",
           ttl);
    }
}


static void
test_noscript(void)
{
    reply_t      r;
    lim_t        l;
    const char  *argv[3];
    size_t       lens[3];

    l.rate = (tenant_rate_t) { 3, 60000, 3 };
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), NULL, 0,
                                      "flush", 5, &l.rate, NULL, 0);

    ok(eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.n == 4 && r.ints[1] == 2,
       "before SCRIPT FLUSH: remaining 2");

    ok(redis_cmds(&r, "SCRIPT", "FLUSH", NULL) == 0 && r.type == '+',
       "SCRIPT FLUSH");

    ok(eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.type == '-'
       && tenant_rate_redis_noscript(r.str, r.len),
       "EVALSHA after a flush: NOSCRIPT (%s)", r.str);

    argv[0] = "SCRIPT";
    argv[1] = "LOAD";
    argv[2] = tenant_rate_redis_script;
    lens[0] = 6;
    lens[1] = 4;
    lens[2] = tenant_rate_redis_script_len;

    ok(redis_cmd(&r, 3, argv, lens) == 0 && r.type == '$'
       && strcmp(r.str, sha) == 0, "loaded again");

    ok(eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.type == '*' && r.n == 4
       && r.ints[0] == 1 && r.ints[1] == 1,
       "the retry is answered, from the state kept: remaining 1");
}


static void
test_tier(void)
{
    int      i;
    reply_t  r;
    lim_t    l;

    l.rate = (tenant_rate_t) { 2, 60000, 2 };
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), NULL, 0,
                                      "tier", 4, &l.rate, NULL, 0);

    for (i = 0; i < 3; i++) {
        eval_lims(&r, sha, &l, 1, 0, 0);
    }

    ok(r.n == 4 && r.ints[0] == 0, "the starter tier's 2 per minute used");

    l.rate = (tenant_rate_t) { 50, 60000, 50 };
    tenant_rate_redis_args(&l.rate, &l.t, &l.tau);
    l.key_len = tenant_rate_redis_key(l.key, sizeof(l.key), NULL, 0,
                                      "tier", 4, &l.rate, NULL, 0);

    ok(eval_lims(&r, sha, &l, 1, 0, 0) == 0 && r.n == 4 && r.ints[0] == 1
       && r.ints[1] == 49,
       "after an upgrade to 50 per minute: a new key, a full bucket");
}


/* xorshift64*: a fixed sequence, so a failure is reproducible */

static uint64_t
rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;

    return rnd_state * 0x2545f4914f6cdd1dULL;
}


static uint64_t
rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}


/* 0 .. max, about evenly over the orders of magnitude */

static uint64_t
rnd_log(uint64_t max)
{
    uint64_t  bound;

    bound = (uint64_t) 1 << rnd_below(40);

    return rnd_below((bound < max ? bound : max) + 1);
}


static int64_t
mono_us(void)
{
    return tenant_rate_now();
}


static void
sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* void */
    }
}
