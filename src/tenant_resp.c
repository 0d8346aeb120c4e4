/*
 * Copyright (C) ngx_tenant_module authors
 *
 * RESP2 commands and replies, and REDIS_URL (see tenant_resp.h).
 *
 * The reply parser is a loop over the reply's lines, with an explicit
 * stack of the arrays open (at most TENANT_RESP_DEPTH_MAX): nothing the
 * server sends makes it recurse, allocate, or wait for more than its
 * bounds.  Numbers are read as Redis writes them: plain decimal, no '+',
 * no leading zero, no "-0"; lengths and counts are -1 or not negative.
 * Every line ends in CRLF; a lone CR or LF is an error.
 */


#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tenant_resp.h"


#define TENANT_RESP_ST_LINE       0     /* at a value's first byte */
#define TENANT_RESP_ST_BULK       1     /* at a bulk string's bytes */
#define TENANT_RESP_ST_DONE       2     /* a reply was returned */
#define TENANT_RESP_ST_FAILED     3


static size_t tenant_resp_digits(size_t n);
static unsigned char *tenant_resp_number(unsigned char *p, size_t n);
static int tenant_resp_line(tenant_resp_parser_t *p,
    const unsigned char *buf, size_t len, size_t *eol);
static int tenant_resp_value(tenant_resp_parser_t *p,
    const unsigned char *buf, size_t eol);
static int tenant_resp_length(const unsigned char *s, size_t len,
    size_t max, size_t *out);
static int tenant_resp_int64(const unsigned char *s, size_t len,
    int64_t *out);
static int tenant_resp_fail(tenant_resp_parser_t *p, const char *why);
static int tenant_redis_url_decode(char *out, size_t max, size_t *out_len,
    const char *in, size_t len, const char **why);
static int tenant_redis_url_number(const char *s, size_t len,
    unsigned max, unsigned *out);
static int tenant_redis_url_hex(unsigned char c);


/* commands */

size_t
tenant_resp_command_len(const tenant_resp_arg_t *argv, size_t argc)
{
    size_t  i, n, a;

    if (argc == 0) {
        return 0;
    }

    /* "*" argc CRLF, then "$" len CRLF data CRLF for each */

    n = 1 + tenant_resp_digits(argc) + 2;

    for (i = 0; i < argc; i++) {
        a = 1 + tenant_resp_digits(argv[i].len) + 2 + 2;

        if (argv[i].len > SIZE_MAX - a || n > SIZE_MAX - a - argv[i].len) {
            return 0;
        }

        n += a + argv[i].len;
    }

    return n;
}


size_t
tenant_resp_command(unsigned char *buf, size_t size,
    const tenant_resp_arg_t *argv, size_t argc)
{
    size_t          i, n;
    unsigned char  *p;

    n = tenant_resp_command_len(argv, argc);

    if (n == 0 || n > size) {
        return 0;
    }

    p = buf;

    *p++ = '*';
    p = tenant_resp_number(p, argc);
    *p++ = '\r'; *p++ = '\n';

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = tenant_resp_number(p, argv[i].len);
        *p++ = '\r'; *p++ = '\n';

        if (argv[i].len) {
            memcpy(p, argv[i].data, argv[i].len);
            p += argv[i].len;
        }

        *p++ = '\r'; *p++ = '\n';
    }

    return n;
}


static size_t
tenant_resp_digits(size_t n)
{
    size_t  d;

    for (d = 1; n >= 10; d++) {
        n /= 10;
    }

    return d;
}


static unsigned char *
tenant_resp_number(unsigned char *p, size_t n)
{
    size_t  d, i;

    d = tenant_resp_digits(n);

    for (i = d; i > 0; i--) {
        p[i - 1] = (unsigned char) ('0' + n % 10);
        n /= 10;
    }

    return p + d;
}


/* replies */

int
tenant_resp_parser_init(tenant_resp_parser_t *p, tenant_resp_value_t *values,
    size_t nvalues, size_t max_string, size_t max_depth)
{
    memset(p, 0, sizeof(tenant_resp_parser_t));

    if (values == NULL || nvalues == 0 || nvalues > SIZE_MAX / 2
        || max_depth > TENANT_RESP_DEPTH_MAX
        || max_string > SIZE_MAX / 2)
    {
        p->state = TENANT_RESP_ST_FAILED;
        p->error = "invalid parser bounds";
        return -1;
    }

    p->values = values;
    p->nvalues = nvalues;
    p->max_string = max_string;
    p->max_depth = max_depth;
    p->state = TENANT_RESP_ST_LINE;

    return 0;
}


int
tenant_resp_parse(tenant_resp_parser_t *p, const unsigned char *buf,
    size_t len, size_t *used)
{
    int                   rc;
    size_t                i, eol;
    tenant_resp_value_t  *v;
    tenant_resp_frame_t  *f;

    if (p->state == TENANT_RESP_ST_FAILED) {
        return TENANT_RESP_INVALID;
    }

    if (p->state == TENANT_RESP_ST_DONE) {
        p->state = TENANT_RESP_ST_LINE;
        p->pos = 0;
        p->scan = 0;
        p->n = 0;
        p->pending = 0;
        p->depth = 0;
    }

    if (len < p->pos || len < p->scan) {
        return tenant_resp_fail(p, "the reply's bytes were taken back");
    }

    for ( ;; ) {

        if (p->state == TENANT_RESP_ST_BULK) {
            v = &p->values[p->bulk];

            /* v->len <= max_string <= SIZE_MAX / 2: no overflow */

            if (len - p->pos < v->len + 2) {
                return TENANT_RESP_AGAIN;
            }

            if (buf[p->pos + v->len] != '\r'
                || buf[p->pos + v->len + 1] != '\n')
            {
                return tenant_resp_fail(p, "a bulk string is not followed "
                                           "by CRLF");
            }

            v->off = p->pos;
            p->pos += v->len + 2;
            p->scan = p->pos;
            p->state = TENANT_RESP_ST_LINE;

        } else {
            rc = tenant_resp_line(p, buf, len, &eol);

            if (rc != TENANT_RESP_OK) {
                return rc;
            }

            rc = tenant_resp_value(p, buf, eol);

            if (rc != TENANT_RESP_OK) {
                /* INVALID, or AGAIN: a bulk string's bytes or an array's
                 * elements come next */

                if (rc == TENANT_RESP_INVALID) {
                    return rc;
                }

                continue;
            }
        }

        /* a value is complete, and so are the arrays it completes */

        p->values[p->n - 1].next = p->n;

        for ( ;; ) {
            if (p->depth == 0) {
                goto done;
            }

            f = &p->stack[p->depth - 1];

            if (f->left) {
                break;
            }

            p->values[f->index].next = p->n;
            p->depth--;
        }
    }

done:

    for (i = 0; i < p->n; i++) {
        v = &p->values[i];

        switch (v->type) {

        case TENANT_RESP_SIMPLE:
        case TENANT_RESP_ERROR:
        case TENANT_RESP_BULK:
            v->data = buf + v->off;
            break;

        default:
            v->data = NULL;
        }
    }

    *used = p->pos;
    p->state = TENANT_RESP_ST_DONE;

    return TENANT_RESP_OK;
}


/*
 * Finds the end of the line at p->pos: OK with *eol at its CR, AGAIN, or
 * INVALID.  A line longer than its type allows fails before its end.
 */

static int
tenant_resp_line(tenant_resp_parser_t *p, const unsigned char *buf,
    size_t len, size_t *eol)
{
    size_t         i, max;
    unsigned char  c;

    if (p->pos == len) {
        return TENANT_RESP_AGAIN;
    }

    switch (buf[p->pos]) {

    case '+':
    case '-':
        max = p->max_string;
        break;

    case ':':
    case '$':
    case '*':
        max = TENANT_RESP_NUMBER_MAX;
        break;

    case '_': case ',': case '#': case '!': case '=': case '(':
    case '%': case '~': case '>': case '|':
        return tenant_resp_fail(p, "a RESP3 type (this client speaks "
                                   "RESP2: no HELLO 3)");

    default:
        return tenant_resp_fail(p, "an unknown type byte");
    }

    /*
     * Each byte is judged as it comes, so that the reason for a refusal
     * does not depend on where the reply was split.
     */

    i = (p->scan > p->pos) ? p->scan : p->pos + 1;

    for ( /* void */ ; i < len; i++) {
        c = buf[i];

        if (c == '\n') {
            return tenant_resp_fail(p, "a line feed without a carriage "
                                       "return");
        }

        if (c != '\r') {
            if (i - p->pos > max) {
                return tenant_resp_fail(p, (max == TENANT_RESP_NUMBER_MAX)
                                           ? "a number's line is too long"
                                           : "a simple string or error is "
                                             "longer than the limit");
            }

            continue;
        }

        if (i + 1 == len) {
            p->scan = i;
            return TENANT_RESP_AGAIN;
        }

        if (buf[i + 1] != '\n') {
            return tenant_resp_fail(p, "a carriage return without a line "
                                       "feed");
        }

        *eol = i;
        return TENANT_RESP_OK;
    }

    p->scan = len;

    return TENANT_RESP_AGAIN;
}


/*
 * The value of the line buf[p->pos .. eol): OK when it is complete, AGAIN
 * when a bulk string's bytes or an array's elements follow, INVALID.
 */

static int
tenant_resp_value(tenant_resp_parser_t *p, const unsigned char *buf,
    size_t eol)
{
    size_t                 n, room;
    unsigned char          type;
    const unsigned char   *s;
    tenant_resp_value_t   *v;

    type = buf[p->pos];
    s = buf + p->pos + 1;
    n = eol - p->pos - 1;

    if (p->n == p->nvalues) {
        /* cannot happen: counts are checked against the room below */
        return tenant_resp_fail(p, "the reply has more values than the "
                                   "limit");
    }

    v = &p->values[p->n];
    memset(v, 0, sizeof(tenant_resp_value_t));

    switch (type) {

    case '+':
    case '-':
        v->type = (type == '+') ? TENANT_RESP_SIMPLE : TENANT_RESP_ERROR;
        v->off = p->pos + 1;
        v->len = n;
        break;

    case ':':
        if (tenant_resp_int64(s, n, &v->integer) != 0) {
            return tenant_resp_fail(p, "an invalid integer");
        }

        v->type = TENANT_RESP_INTEGER;
        break;

    case '$':
        switch (tenant_resp_length(s, n, p->max_string, &v->len)) {
        case -1:
            return tenant_resp_fail(p, "an invalid bulk string length");
        case -2:
            return tenant_resp_fail(p, "a bulk string is longer than the "
                                       "limit");
        case 1:
            v->type = TENANT_RESP_NULL;
            break;
        default:
            v->type = TENANT_RESP_BULK;
        }

        break;

    default: /* '*' */

        /*
         * room: the values that neither came before nor are promised to
         * the open arrays (this one's own place among them included)
         */

        room = p->nvalues - p->n - (p->depth ? p->pending : 1);

        switch (tenant_resp_length(s, n, room, &v->len)) {
        case -1:
            return tenant_resp_fail(p, "an invalid array length");
        case -2:
            return tenant_resp_fail(p, "the reply has more values than the "
                                       "limit");
        case 1:
            v->type = TENANT_RESP_NULL;
            break;
        default:
            v->type = TENANT_RESP_ARRAY;

            if (p->depth == p->max_depth) {
                return tenant_resp_fail(p, "arrays are nested deeper than "
                                           "the limit");
            }
        }
    }

    /* the value begins: its array has one element less to wait for */

    if (p->depth) {
        p->stack[p->depth - 1].left--;
        p->pending--;
    }

    p->n++;
    p->pos = eol + 2;
    p->scan = p->pos;

    if (v->type == TENANT_RESP_BULK) {
        p->bulk = p->n - 1;
        p->state = TENANT_RESP_ST_BULK;
        return TENANT_RESP_AGAIN;
    }

    if (v->type == TENANT_RESP_ARRAY && v->len) {
        p->stack[p->depth].index = p->n - 1;
        p->stack[p->depth].left = v->len;
        p->depth++;
        p->pending += v->len;
        return TENANT_RESP_AGAIN;
    }

    return TENANT_RESP_OK;
}


/*
 * A length or count: 0, or 1 for "-1" (null), -1 when it is not a plain
 * decimal, -2 when it is larger than max.
 */

static int
tenant_resp_length(const unsigned char *s, size_t len, size_t max,
    size_t *out)
{
    size_t  i, n;

    if (len == 2 && s[0] == '-' && s[1] == '1') {
        *out = 0;
        return 1;
    }

    if (len == 0 || (s[0] == '0' && len > 1)) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
    }

    for (i = 0; i < len; i++) {
        if (n > max / 10) {
            return -2;
        }

        n *= 10;

        if ((size_t) (s[i] - '0') > max - n) {
            return -2;
        }

        n += (size_t) (s[i] - '0');
    }

    *out = n;

    return 0;
}


static int
tenant_resp_int64(const unsigned char *s, size_t len, int64_t *out)
{
    int       neg;
    size_t    i;
    uint64_t  n, max, d;

    neg = (len && s[0] == '-');

    if (neg) {
        s++;
        len--;
    }

    /* no "", "-", leading zero, "-0" */

    if (len == 0 || (s[0] == '0' && (len > 1 || neg))) {
        return -1;
    }

    max = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        d = (uint64_t) (s[i] - '0');

        if (n > (max - d) / 10) {
            return -1;
        }

        n = n * 10 + d;
    }

    if (neg) {
        *out = (n == (uint64_t) INT64_MAX + 1) ? INT64_MIN : -(int64_t) n;

    } else {
        *out = (int64_t) n;
    }

    return 0;
}


static int
tenant_resp_fail(tenant_resp_parser_t *p, const char *why)
{
    p->state = TENANT_RESP_ST_FAILED;
    p->error = why;

    return TENANT_RESP_INVALID;
}


int
tenant_resp_error_code(const tenant_resp_value_t *v, const char *code)
{
    size_t  n;

    n = strlen(code);

    return v->type == TENANT_RESP_ERROR
           && v->len >= n
           && memcmp(v->data, code, n) == 0
           && (v->len == n || v->data[n] == ' ');
}


int
tenant_resp_simple_is(const tenant_resp_value_t *v, const char *s)
{
    size_t  n;

    n = strlen(s);

    return v->type == TENANT_RESP_SIMPLE
           && v->len == n
           && memcmp(v->data, s, n) == 0;
}


int
tenant_resp_integers(const tenant_resp_value_t *values, int64_t *out,
    size_t n)
{
    size_t  i;

    if (values[0].type != TENANT_RESP_ARRAY || values[0].len != n) {
        return -1;
    }

    /* elements of integers are values[1 .. n] */

    for (i = 0; i < n; i++) {
        if (values[1 + i].type != TENANT_RESP_INTEGER) {
            return -1;
        }

        out[i] = values[1 + i].integer;
    }

    return 0;
}


/* REDIS_URL */

int
tenant_redis_url_parse(tenant_redis_url_t *u, const char *in, size_t len,
    char *err, size_t errlen)
{
    size_t                i, end, at, colon, hb, he;
    unsigned char         c;
    const char           *why, *s;
    unsigned char         addr[16];
    char                  ip[TENANT_REDIS_HOST_MAX + 1];

    memset(u, 0, sizeof(tenant_redis_url_t));
    u->port = TENANT_REDIS_PORT;

    why = NULL;

    for (i = 0; i < len; i++) {
        c = (unsigned char) in[i];

        if (c < 0x20 || c == 0x7f) {
            why = "has a control character (a line break at its end?)";
            goto invalid;
        }

        if (c >= 0x80 || c == ' ') {
            why = "has a space or a non-ASCII byte";
            goto invalid;
        }
    }

    if (len >= 9 && strncasecmp(in, "rediss://", 9) == 0) {
        why = "is rediss:// (TLS), which the gateway's Redis client does "
              "not speak: use the instance's internal redis:// URL";
        goto invalid;
    }

    if (len < 8 || strncasecmp(in, "redis://", 8) != 0) {
        why = "does not start with redis://";
        goto invalid;
    }

    s = in + 8;
    len -= 8;

    /* the authority ends at the first '/', '?' or '#' */

    for (end = 0; end < len; end++) {
        if (s[end] == '/' || s[end] == '?' || s[end] == '#') {
            break;
        }
    }

    if (memchr(s + end, '@', len - end) != NULL) {
        why = "has an '@' after the host: percent-encode '/', '?', '#' and "
              "'@' in the user and password";
        goto invalid;
    }

    /* the path: "", "/" or "/db"; no query, no fragment */

    for (i = end; i < len; i++) {
        if (s[i] == '?' || s[i] == '#') {
            why = "has a query or fragment ('?' or '#')";
            goto invalid;
        }
    }

    if (end + 1 < len) {
        if (tenant_redis_url_number(s + end + 1, len - end - 1,
                                    TENANT_REDIS_DB_MAX, &u->db) != 0)
        {
            why = "has a path other than a database number /0 .. /15";
            goto invalid;
        }
    }

    /* user:password@ */

    at = end;

    for (i = 0; i < end; i++) {
        if (s[i] == '@') {
            if (at != end) {
                why = "has more than one '@': percent-encode '@' in the "
                      "password as %40";
                goto invalid;
            }

            at = i;
        }
    }

    if (at != end) {
        colon = at;

        for (i = 0; i < at; i++) {
            c = (unsigned char) s[i];

            if (c == ':' && colon == at) {
                colon = i;
                continue;
            }

            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                  || (c >= '0' && c <= '9') || strchr("-._~%!$&'()*+,;=:", c)))
            {
                why = "has a character in the user or password that must "
                      "be percent-encoded";
                goto invalid;
            }
        }

        if (colon == at) {
            why = "has a user without a password (for a password alone: "
                  "redis://:PASSWORD@host)";
            goto invalid;
        }

        if (tenant_redis_url_decode(u->user, TENANT_REDIS_USER_MAX,
                                    &u->user_len, s, colon, &why) != 0
            || tenant_redis_url_decode(u->password,
                                       TENANT_REDIS_PASSWORD_MAX,
                                       &u->password_len, s + colon + 1,
                                       at - colon - 1, &why) != 0)
        {
            goto invalid;
        }

        if (u->password_len == 0) {
            why = "has an empty password";
            goto invalid;
        }

        u->auth = 1;
        at++;

    } else {
        at = 0;
    }

    /* host[:port] in s[at .. end) */

    if (at < end && s[at] == '[') {
        for (he = at + 1; he < end && s[he] != ']'; he++) {
            /* void */
        }

        if (he == end) {
            why = "has an IPv6 address without its ']'";
            goto invalid;
        }

        hb = at + 1;
        i = he + 1;

        if (he - hb == 0 || he - hb > 45) {
            why = "has an invalid IPv6 address";
            goto invalid;
        }

        memcpy(ip, s + hb, he - hb);
        ip[he - hb] = '\0';

        if (memchr(ip, '%', he - hb) != NULL) {
            why = "has an IPv6 zone (%25eth0), which is not supported";
            goto invalid;
        }

        if (inet_pton(AF_INET6, ip, addr) != 1) {
            why = "has an invalid IPv6 address";
            goto invalid;
        }

        u->ipv6 = 1;

    } else {
        hb = at;

        for (he = at; he < end && s[he] != ':'; he++) {
            c = (unsigned char) s[he];

            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                  || (c >= '0' && c <= '9') || c == '.' || c == '-'
                  || c == '_'))
            {
                why = (c == '[' || c == ']')
                      ? "has an invalid IPv6 address"
                      : "has a host name with a byte other than "
                        "[A-Za-z0-9.-_]";
                goto invalid;
            }
        }

        i = he;
    }

    if (he == hb) {
        why = "has an empty host";
        goto invalid;
    }

    if (he - hb > TENANT_REDIS_HOST_MAX) {
        why = "has a host name longer than 253 bytes";
        goto invalid;
    }

    if (i < end) {
        if (s[i] != ':') {
            why = "has something other than ':port' after the IPv6 address";
            goto invalid;
        }

        if (i + 1 == end) {
            why = "has an empty port after ':'";
            goto invalid;
        }

        if (tenant_redis_url_number(s + i + 1, end - i - 1, 65535,
                                    &u->port) != 0
            || u->port == 0)
        {
            why = "has a port other than a number 1 .. 65535";
            goto invalid;
        }
    }

    memcpy(u->host, s + hb, he - hb);
    u->host[he - hb] = '\0';
    u->host_len = he - hb;

    return 0;

invalid:

    memset(u, 0, sizeof(tenant_redis_url_t));

    snprintf(err, errlen, "the Redis URL %s", why);

    return -1;
}


static int
tenant_redis_url_decode(char *out, size_t max, size_t *out_len,
    const char *in, size_t len, const char **why)
{
    int            hi, lo;
    size_t         i, n;
    unsigned char  c;

    n = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) in[i];

        if (c == '%') {
            hi = (i + 2 < len)
                 ? tenant_redis_url_hex((unsigned char) in[i + 1]) : -1;
            lo = (hi >= 0) ? tenant_redis_url_hex((unsigned char) in[i + 2])
                           : -1;

            if (hi < 0 || lo < 0) {
                *why = "has an invalid percent-encoding in the user or "
                       "password";
                return -1;
            }

            c = (unsigned char) (hi << 4 | lo);
            i += 2;

            if (c == '\0') {
                *why = "has %00 in the user or password";
                return -1;
            }
        }

        if (n == max) {
            *why = (max == TENANT_REDIS_USER_MAX)
                   ? "has a user longer than 256 bytes"
                   : "has a password longer than 512 bytes";
            return -1;
        }

        out[n++] = (char) c;
    }

    out[n] = '\0';
    *out_len = n;

    return 0;
}


/* plain decimal: no sign, no leading zero, at most max */

static int
tenant_redis_url_number(const char *s, size_t len, unsigned max,
    unsigned *out)
{
    size_t    i;
    unsigned  n;

    if (len == 0 || len > 5 || (s[0] == '0' && len > 1)) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        n = n * 10 + (unsigned) (s[i] - '0');
    }

    if (n > max) {
        return -1;
    }

    *out = n;

    return 0;
}


static int
tenant_redis_url_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}
