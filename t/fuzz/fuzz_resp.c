/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: RESP2 replies, commands and REDIS_URL
 * (src/tenant_resp.h).  The input is two bytes of settings, then a stream
 * of pipelined replies (or, in URL mode, a REDIS_URL):
 *
 *   byte 0: bits 0-1 mode (3: URL), bits 2-4 the depth bound (0 .. 7),
 *           bits 5-7 the value bound (1, 2, 3, 5, 8, 16, 64, 256)
 *   byte 1: bits 0-2 the string bound (0, 1, 2, 8, 40, 64, 512, 65536),
 *           all of it seeds where the stream is cut into reads
 *
 * Checks, abort() on violation:
 *   - the stream fed in reads cut at pseudo-random points (each read a
 *     heap block of exactly the bytes given, so ASan sees any read
 *     beyond, and a new block each time, so nothing relies on the buffer
 *     staying put) gives the same replies, lengths, values and refusal
 *     reasons as the stream parsed whole;
 *   - each complete reply of N bytes parses alone in exactly N bytes to
 *     the same values, and its prefixes are "need more", never complete
 *     nor invalid;
 *   - a reply's values are within the bounds (count, depth, string
 *     length), its views point into the reply, and written back as RESP
 *     they are the reply's bytes exactly (lossless; canonical numbers);
 *   - the stream cut into arguments, encoded as a command in a buffer of
 *     exactly tenant_resp_command_len() bytes (one byte less: nothing
 *     written), parses back to the same arguments;
 *   - a URL accepted is within its bounds, and written back (its user and
 *     password percent-encoded) parses to the same; a URL refused gives
 *     one printable line that quotes neither its user nor its password.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tenant_resp.h"


#define FUZZ_VALUES   256
#define FUZZ_READS    16


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_stream(const unsigned char *s, size_t len, size_t nvalues,
    size_t max_string, size_t max_depth, unsigned seed);
static int fuzz_parse(tenant_resp_parser_t *p, const unsigned char *s,
    size_t len, size_t *used, unsigned char **block);
static void fuzz_check_reply(const tenant_resp_parser_t *p,
    const unsigned char *buf, size_t len);
static void fuzz_same(const tenant_resp_value_t *a,
    const tenant_resp_value_t *b, size_t n);
static void fuzz_command(const unsigned char *s, size_t len,
    unsigned char sep);
static void fuzz_url(const unsigned char *s, size_t len);
static size_t fuzz_pct(char *out, const char *in, size_t len);
static unsigned fuzz_rand(unsigned *state);


static tenant_resp_value_t  fuzz_values[FUZZ_VALUES];
static tenant_resp_value_t  fuzz_ref[FUZZ_VALUES];
static tenant_resp_value_t  fuzz_alone[FUZZ_VALUES];

static const size_t  fuzz_nvalues[] = { 1, 2, 3, 5, 8, 16, 64, 256 };
static const size_t  fuzz_strings[] = { 0, 1, 2, 8, 40, 64, 512, 65536 };


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }

    if ((data[0] & 3) == 3) {
        fuzz_url(data + 2, size - 2);
        return 0;
    }

    fuzz_stream(data + 2, size - 2, fuzz_nvalues[data[0] >> 5],
                fuzz_strings[data[1] & 7], (data[0] >> 2) & 7,
                data[1] | (unsigned) size << 8);

    fuzz_command(data + 2, size - 2, data[1]);

    return 0;
}


static void
fuzz_stream(const unsigned char *s, size_t len, size_t nvalues,
    size_t max_string, size_t max_depth, unsigned seed)
{
    int                    rc, ref_rc;
    size_t                 start, have, used, ref_used, cut, n, k, i;
    const char            *ref_error;
    unsigned char         *block, *ref_block;
    tenant_resp_parser_t   p, ref;

    if (tenant_resp_parser_init(&p, fuzz_values, nvalues, max_string,
                                max_depth) != 0
        || tenant_resp_parser_init(&ref, fuzz_ref, nvalues, max_string,
                                   max_depth) != 0)
    {
        abort();
    }

    start = 0;
    have = 0;
    block = NULL;
    ref_block = NULL;

    for ( ;; ) {
        /* the reference: the rest of the stream at once */

        free(ref_block);
        ref_rc = fuzz_parse(&ref, s + start, len - start, &ref_used,
                            &ref_block);
        ref_error = ref.error;

        if (ref_rc == TENANT_RESP_OK) {
            fuzz_check_reply(&ref, ref_block, ref_used);
        }

        /* the same reply, in reads */

        for ( ;; ) {
            free(block);
            rc = fuzz_parse(&p, s + start, have - start, &used, &block);

            if (rc != TENANT_RESP_AGAIN || have == len) {
                break;
            }

            cut = 1 + fuzz_rand(&seed) % (len / FUZZ_READS + 1);
            have = (cut < len - have) ? have + cut : len;
        }

        if (rc != ref_rc) {
            abort();
        }

        if (rc == TENANT_RESP_INVALID) {
            if (p.error != ref_error || p.error == NULL) {
                abort();
            }

            /* and for good */

            if (tenant_resp_parse(&p, s, len, &used) != TENANT_RESP_INVALID)
            {
                abort();
            }

            break;
        }

        if (rc == TENANT_RESP_AGAIN) {
            break;
        }

        /* OK: the same reply */

        n = fuzz_values[0].next;

        if (used != ref_used || n != fuzz_ref[0].next) {
            abort();
        }

        fuzz_same(fuzz_values, fuzz_ref, n);

        for (i = 0; i < n; i++) {
            if (fuzz_values[i].data
                && fuzz_values[i].data != block + fuzz_values[i].off)
            {
                abort();
            }
        }

        /* alone, in exactly its bytes, and its prefixes */

        if (tenant_resp_parser_init(&ref, fuzz_alone, nvalues, max_string,
                                    max_depth) != 0)
        {
            abort();
        }

        free(ref_block);
        ref_block = NULL;

        if (fuzz_parse(&ref, s + start, used, &ref_used, &ref_block)
            != TENANT_RESP_OK || ref_used != used)
        {
            abort();
        }

        fuzz_same(fuzz_alone, fuzz_values, n);

        for (k = 0; k < 3; k++) {
            cut = (k == 0) ? used - 1 : fuzz_rand(&seed) % used;

            tenant_resp_parser_init(&ref, fuzz_alone, nvalues, max_string,
                                    max_depth);
            free(ref_block);
            ref_block = NULL;

            if (fuzz_parse(&ref, s + start, cut, &ref_used, &ref_block)
                != TENANT_RESP_AGAIN)
            {
                abort();
            }
        }

        tenant_resp_parser_init(&ref, fuzz_ref, nvalues, max_string,
                                max_depth);

        start += used;

        if (have < start) {
            abort();
        }
    }

    free(block);
    free(ref_block);
}


/* s[0 .. len) in a block of its own, which *block keeps */

static int
fuzz_parse(tenant_resp_parser_t *p, const unsigned char *s, size_t len,
    size_t *used, unsigned char **block)
{
    int  rc;

    *block = malloc(len ? len : 1);
    if (*block == NULL) {
        abort();
    }

    memcpy(*block, s, len);

    *used = (size_t) -1;
    rc = tenant_resp_parse(p, *block, len, used);

    if (rc == TENANT_RESP_OK && (*used == 0 || *used > len)) {
        abort();
    }

    if (rc != TENANT_RESP_OK && rc != TENANT_RESP_AGAIN
        && rc != TENANT_RESP_INVALID)
    {
        abort();
    }

    return rc;
}


/*
 * The reply buf[0 .. len) written back from its values, byte for byte;
 * bounds and structure on the way.
 */

static void
fuzz_check_reply(const tenant_resp_parser_t *p, const unsigned char *buf,
    size_t len)
{
    int                         m;
    size_t                      i, o, depth, left[TENANT_RESP_DEPTH_MAX + 1];
    char                        num[32];
    const tenant_resp_value_t  *v;

    o = 0;
    depth = 0;

    for (i = 0; i < p->values[0].next; i++) {
        v = &p->values[i];

        if (i >= p->nvalues || v->next <= i || v->next > p->values[0].next) {
            abort();
        }

        switch (v->type) {

        case TENANT_RESP_SIMPLE:
        case TENANT_RESP_ERROR:
            if (buf[o] != (v->type == TENANT_RESP_SIMPLE ? '+' : '-')
                || v->data != buf + o + 1 || v->len > p->max_string
                || memchr(v->data, '\r', v->len)
                || memchr(v->data, '\n', v->len))
            {
                abort();
            }

            o += 1 + v->len;
            break;

        case TENANT_RESP_INTEGER:
            m = snprintf(num, sizeof(num), ":%lld", (long long) v->integer);

            if (v->data || memcmp(buf + o, num, (size_t) m) != 0) {
                abort();
            }

            o += (size_t) m;
            break;

        case TENANT_RESP_BULK:
            m = snprintf(num, sizeof(num), "$%zu\r\n", v->len);

            if (memcmp(buf + o, num, (size_t) m) != 0
                || v->data != buf + o + m || v->len > p->max_string)
            {
                abort();
            }

            o += (size_t) m + v->len;
            break;

        case TENANT_RESP_NULL:
            if ((buf[o] != '$' && buf[o] != '*') || memcmp(buf + o + 1, "-1", 2)
                || v->data || v->next != i + 1)
            {
                abort();
            }

            o += 3;
            break;

        case TENANT_RESP_ARRAY:
            m = snprintf(num, sizeof(num), "*%zu", v->len);

            if (memcmp(buf + o, num, (size_t) m) != 0 || v->data) {
                abort();
            }

            o += (size_t) m;
            break;

        default:
            abort();
        }

        if (memcmp(buf + o, "\r\n", 2) != 0) {
            abort();
        }

        o += 2;

        if (v->type != TENANT_RESP_ARRAY && v->next != i + 1) {
            abort();
        }

        /* the open arrays: this value is one of the innermost's elements */

        if (depth) {
            left[depth - 1]--;
        }

        if (v->type == TENANT_RESP_ARRAY) {
            if (depth == p->max_depth) {
                abort();
            }

            left[depth++] = v->len;
        }

        while (depth && left[depth - 1] == 0) {
            depth--;
        }
    }

    if (o != len || depth != 0) {
        abort();
    }
}


static void
fuzz_same(const tenant_resp_value_t *a, const tenant_resp_value_t *b,
    size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (a[i].type != b[i].type || a[i].integer != b[i].integer
            || a[i].len != b[i].len || a[i].next != b[i].next
            || a[i].off != b[i].off
            || (a[i].data == NULL) != (b[i].data == NULL)
            || (a[i].data && memcmp(a[i].data, b[i].data, a[i].len) != 0))
        {
            abort();
        }
    }
}


static void
fuzz_command(const unsigned char *s, size_t len, unsigned char sep)
{
    int                   rc;
    size_t                argc, i, n, used, max;
    unsigned char        *buf;
    tenant_resp_arg_t     argv[FUZZ_VALUES - 1];
    tenant_resp_parser_t  p;

    /* the arguments: s cut at each sep, at most 255 */

    argc = 0;
    max = 0;
    argv[0].data = s;

    for (i = 0; i <= len && argc < FUZZ_VALUES - 1; i++) {
        if (i == len || s[i] == sep) {
            argv[argc].len = s + i - argv[argc].data;
            max = argv[argc].len > max ? argv[argc].len : max;
            argc++;

            if (argc < FUZZ_VALUES - 1) {
                argv[argc].data = s + i + 1;
            }
        }
    }

    n = tenant_resp_command_len(argv, argc);

    if (n == 0) {
        abort();
    }

    buf = malloc(n);
    if (buf == NULL) {
        abort();
    }

    if (tenant_resp_command(buf, n - 1, argv, argc) != 0
        || tenant_resp_command(buf, n, argv, argc) != n)
    {
        abort();
    }

    if (tenant_resp_parser_init(&p, fuzz_values, argc + 1, max, 1) != 0) {
        abort();
    }

    rc = tenant_resp_parse(&p, buf, n, &used);

    if (rc != TENANT_RESP_OK || used != n
        || fuzz_values[0].type != TENANT_RESP_ARRAY
        || fuzz_values[0].len != argc)
    {
        abort();
    }

    for (i = 0; i < argc; i++) {
        if (fuzz_values[1 + i].type != TENANT_RESP_BULK
            || fuzz_values[1 + i].len != argv[i].len
            || memcmp(fuzz_values[1 + i].data, argv[i].data, argv[i].len))
        {
            abort();
        }
    }

    free(buf);
}


static void
fuzz_url(const unsigned char *s, size_t len)
{
    char                 *in, err[256], again[4096];
    size_t                i, n, at, ui;
    const char           *e;
    tenant_redis_url_t    u, u2;

    in = malloc(len ? len : 1);
    if (in == NULL) {
        abort();
    }

    memcpy(in, s, len);

    if (tenant_redis_url_parse(&u, in, len, err, sizeof(err)) != 0) {
        if (strncmp(err, "the Redis URL ", 14) != 0) {
            abort();
        }

        for (i = 0; err[i]; i++) {
            if (err[i] < 0x20 || err[i] > 0x7e) {
                abort();
            }
        }

        /*
         * the user and password, between "://" and the last '@': not in
         * the reason (when it has a '~', which no reason has, so that
         * the fuzzer cannot make one of the reasons' words its password)
         */

        e = NULL;

        for (i = 0; i + 3 <= len; i++) {
            if (memcmp(in + i, "://", 3) == 0) {
                e = in + i + 3;
                break;
            }
        }

        for (at = len; e && at > (size_t) (e - in); at--) {
            if (in[at - 1] == '@') {
                break;
            }
        }

        ui = e ? (size_t) (e - in) : 0;

        if (e && at > ui + 8 && at - 1 - ui < sizeof(again)
            && memchr(in + ui, '~', at - 1 - ui) != NULL)
        {
            memcpy(again, in + ui, at - 1 - ui);
            again[at - 1 - ui] = '\0';

            if (memchr(again, '\0', at - 1 - ui) == NULL
                && strstr(err, again) != NULL)
            {
                abort();
            }
        }

        free(in);
        return;
    }

    free(in);

    if (u.host_len == 0 || u.host_len > TENANT_REDIS_HOST_MAX
        || u.host_len != strlen(u.host) || u.port == 0 || u.port > 65535
        || u.db > TENANT_REDIS_DB_MAX
        || u.user_len > TENANT_REDIS_USER_MAX
        || u.password_len > TENANT_REDIS_PASSWORD_MAX
        || (u.auth && u.password_len == 0)
        || (!u.auth && (u.user_len || u.password_len))
        || u.user_len != strlen(u.user)
        || u.password_len != strlen(u.password))
    {
        abort();
    }

    /* written back, and parsed again */

    n = (size_t) snprintf(again, sizeof(again), "redis://");

    if (u.auth) {
        n += fuzz_pct(again + n, u.user, u.user_len);
        again[n++] = ':';
        n += fuzz_pct(again + n, u.password, u.password_len);
        again[n++] = '@';
    }

    n += (size_t) snprintf(again + n, sizeof(again) - n,
                           u.ipv6 ? "[%s]:%u/%u" : "%s:%u/%u",
                           u.host, u.port, u.db);

    if (tenant_redis_url_parse(&u2, again, n, err, sizeof(err)) != 0
        || memcmp(&u, &u2, sizeof(tenant_redis_url_t)) != 0)
    {
        abort();
    }
}


static size_t
fuzz_pct(char *out, const char *in, size_t len)
{
    size_t         i, n;
    unsigned char  c;

    n = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) in[i];

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            out[n++] = (char) c;

        } else {
            n += (size_t) sprintf(out + n, "%%%02X", c);
        }
    }

    return n;
}


static unsigned
fuzz_rand(unsigned *state)
{
    unsigned  x;

    x = *state ? *state : 0x9e3779b9;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;

    return x;
}
