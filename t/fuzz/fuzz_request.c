/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: what the gateway reads from a request
 * (src/tenant_request.c) and the problem+json bodies it answers with
 * (src/tenant_problem.c).
 *
 * The whole input is tried as an Authorization header value
 * (tenant_bearer_token()), a Cookie header value (tenant_cookie_value()
 * for "__session"), an organization id (tenant_org_id_valid()) and a
 * header name (tenant_header_reserved()), each compared with an
 * independent reading of its rules, and as a Content-Type
 * (tenant_media_type_json()) and an Origin, host and origin cut at the
 * first 0xff byte (tenant_origin_is()): their answers must not depend on
 * the case of letters, an accepted media type starts with
 * application/json, and an origin is accepted the other way round too.
 * Cut at 0xff bytes, the chunks are the fields of a signed message
 * (tenant_sign_message(): method, target and the tenant values, from
 * the request line), which must split back into exactly those fields, or
 * be refused for a control byte.
 *
 * Then the input is cut at 0xff bytes into: control bytes, type_base,
 * code, title, detail, and (name, value) pairs for the members, and
 * rendered by tenant_problem_render() and tenant_json_escape().  The
 * control bytes: [0..3] the status, [4] the number of members (up to 12:
 * more than TENANT_PROBLEM_MAX_MEMBERS is clamped), [5 + i] member i:
 * bit 0 number, bit 1 raw (one of a few valid JSON texts, bits 2-4), bit 5
 * no name, bit 6 no value.  Also, the first chunk is tried as a cookie
 * name in the rest.
 *
 * Checks, abort() on violation: the body parses back with jansson as an
 * object, every string reads back as it was given (or with U+FFFD where
 * it was not UTF-8), the status as given; the sizing pass and the writing
 * pass agree, and a buffer too small is left untouched.
 */


#define _GNU_SOURCE                 /* memmem() */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "tenant_problem.h"
#include "tenant_request.h"
#include "tenant_sign.h"


#define FUZZ_CHUNKS_MAX   (5 + 2 * 12)


typedef struct {
    const char      *data;
    size_t           len;
} fuzz_str_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_bearer(const uint8_t *data, size_t size);
static void fuzz_cookie(const uint8_t *data, size_t size, const char *name,
    size_t name_len);
static void fuzz_org_id(const uint8_t *data, size_t size);
static void fuzz_header_name(const uint8_t *data, size_t size);
static void fuzz_sign_message(const uint8_t *data, size_t size);
static void fuzz_media_type(const uint8_t *data, size_t size);
static void fuzz_origin(const uint8_t *origin, size_t origin_len,
    const uint8_t *host, size_t host_len);
static uint8_t *fuzz_flip_case(const uint8_t *data, size_t size);
static void fuzz_problem(const uint8_t *data, size_t size);
static void fuzz_escape(const char *s, size_t len);
static void fuzz_check_string(json_t *v, const char *s, size_t len);
static int fuzz_utf8(const char *s, size_t len);
static char *fuzz_cstring(const fuzz_str_t *s);
static int fuzz_token68(unsigned char c);


static const char  *fuzz_raw[] = {
    "[]", "{}", "null", "[{\"field\":\"slug\",\"reason\":\"is too long\"}]",
    "{\"a\":[1,2.5,true,false,null,\"\\u00e9\"]}", "0", "\"x\"", ""
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t  *sep;

    fuzz_bearer(data, size);
    fuzz_cookie(data, size, "__session", 9);
    fuzz_org_id(data, size);
    fuzz_header_name(data, size);
    fuzz_sign_message(data, size);
    fuzz_media_type(data, size);

    sep = memchr(data, 0xff, size);

    if (sep != NULL) {
        fuzz_cookie(sep + 1, size - (sep - data) - 1, (const char *) data,
                    sep - data);
        fuzz_origin(data, sep - data, sep + 1, size - (sep - data) - 1);
    }

    fuzz_problem(data, size);

    return 0;
}


/*
 * Case never matters; an accepted value is blanks, application/json in
 * any case, then the end, a blank or ';'.
 */

static void
fuzz_media_type(const uint8_t *data, size_t size)
{
    int       rc;
    size_t    i;
    uint8_t  *flipped;

    rc = tenant_media_type_json(data, size);

    flipped = fuzz_flip_case(data, size);

    if (rc != tenant_media_type_json(flipped, size)) {
        abort();
    }

    free(flipped);

    if (!rc) {
        return;
    }

    for (i = 0; i < size && (data[i] == ' ' || data[i] == '\t'); i++) {
        /* void */
    }

    if (size - i < 16
        || strncasecmp((const char *) &data[i], "application/json", 16) != 0
        || (size - i > 16 && data[i + 16] != ' ' && data[i + 16] != '\t'
            && data[i + 16] != ';'))
    {
        abort();
    }
}


/*
 * For http and https: case never matters; an accepted origin is
 * scheme://host[:port], nothing after, and scheme://host is accepted
 * against the origin's authority (the relation is symmetric).
 */

static void
fuzz_origin(const uint8_t *origin, size_t origin_len, const uint8_t *host,
    size_t host_len)
{
    int           rc;
    size_t        i, n;
    uint8_t      *fo, *fh, *back;
    const char   *scheme;

    static const char  *schemes[] = { "http", "https" };

    fo = fuzz_flip_case(origin, origin_len);
    fh = fuzz_flip_case(host, host_len);

    for (i = 0; i < 2; i++) {
        scheme = schemes[i];
        n = strlen(scheme);

        rc = tenant_origin_is(origin, origin_len, (const uint8_t *) scheme,
                              n, host, host_len);

        if (rc != tenant_origin_is(fo, origin_len, (const uint8_t *) scheme,
                                   n, fh, host_len))
        {
            abort();
        }

        if (!rc) {
            continue;
        }

        if (origin_len < n + 3
            || strncasecmp((const char *) origin, scheme, n) != 0
            || memcmp(origin + n, "://", 3) != 0
            || memchr(origin + n + 3, '/', origin_len - n - 3) != NULL
            || memchr(origin + n + 3, '@', origin_len - n - 3) != NULL
            || memchr(origin + n + 3, '?', origin_len - n - 3) != NULL
            || memchr(origin + n + 3, '#', origin_len - n - 3) != NULL)
        {
            abort();
        }

        back = malloc(n + 3 + host_len + 1);
        if (back == NULL) {
            abort();
        }

        memcpy(back, scheme, n);
        memcpy(back + n, "://", 3);
        memcpy(back + n + 3, host, host_len);

        if (!tenant_origin_is(back, n + 3 + host_len,
                              (const uint8_t *) scheme, n, origin + n + 3,
                              origin_len - n - 3))
        {
            abort();
        }

        free(back);
    }

    free(fo);
    free(fh);
}


/* A copy with the case of every ASCII letter swapped. */

static uint8_t *
fuzz_flip_case(const uint8_t *data, size_t size)
{
    size_t    i;
    uint8_t  *p;

    p = malloc(size + 1);
    if (p == NULL) {
        abort();
    }

    for (i = 0; i < size; i++) {
        p[i] = data[i];

        if ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')) {
            p[i] ^= 0x20;
        }
    }

    return p;
}


/*
 * "Bearer" in any case, a space, spaces, 1*token68 *"=", spaces:
 * RFC 7235 token68 (one character at least before the padding).
 */

static void
fuzz_bearer(const uint8_t *data, size_t size)
{
    int                   rc, want;
    size_t                i, start, end, token_len;
    const unsigned char  *token;

    rc = tenant_bearer_token(data, size, &token, &token_len);

    want = (size > 7 && strncasecmp((const char *) data, "bearer", 6) == 0
            && data[6] == ' ');

    end = size;

    while (want && end > 7 && data[end - 1] == ' ') {
        end--;
    }

    for (start = 7; want && start < end && data[start] == ' '; start++) {
        /* void */
    }

    for (i = start; want && i < end && fuzz_token68(data[i]); i++) {
        /* void */
    }

    if (want && i == start) {
        want = 0;               /* no token68 character */
    }

    while (want && i < end && data[i] == '=') {
        i++;
    }

    if (want && i != end) {
        want = 0;
    }

    if (rc != (want ? 0 : -1)) {
        abort();
    }

    if (rc == 0
        && (token != data + start || token_len != end - start))
    {
        abort();
    }
}


/*
 * The pairs are split at ';'; spaces and tabs before a name are skipped,
 * those after a value dropped; a value in double quotes loses them; the
 * first pair whose name matches (byte for byte) is the value, unless
 * another one has a different value: ambiguous.
 */

static void
fuzz_cookie(const uint8_t *data, size_t size, const char *name,
    size_t name_len)
{
    int                   rc, found, ambiguous;
    size_t                value_len, want_len;
    const uint8_t        *p, *end, *semi, *eq, *v, *vend;
    const unsigned char  *value, *want;

    rc = tenant_cookie_value(data, size, name, name_len, &value, &value_len);

    found = 0;
    ambiguous = 0;
    want = NULL;
    want_len = 0;

    p = data;
    end = data + size;

    while (p < end) {
        semi = memchr(p, ';', end - p);
        if (semi == NULL) {
            semi = end;
        }

        while (p < semi && (*p == ' ' || *p == '\t')) {
            p++;
        }

        eq = memchr(p, '=', semi - p);

        if (eq != NULL && (size_t) (eq - p) == name_len
            && memcmp(p, name, name_len) == 0)
        {
            v = eq + 1;
            vend = semi;

            while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) {
                vend--;
            }

            if (vend - v >= 2 && *v == '"' && vend[-1] == '"') {
                v++;
                vend--;
            }

            if (!found) {
                found = 1;
                want = v;
                want_len = vend - v;

            } else if ((size_t) (vend - v) != want_len
                       || memcmp(v, want, want_len) != 0)
            {
                ambiguous = 1;
            }
        }

        p = semi + 1;
    }

    if (rc != (ambiguous ? TENANT_COOKIE_AMBIGUOUS : found ? 0 : -1)) {
        abort();
    }

    if (ambiguous) {
        return;
    }

    if (rc == 0 && (value != want || value_len != want_len)) {
        abort();
    }
}


static void
fuzz_org_id(const uint8_t *data, size_t size)
{
    int     want;
    size_t  i;

    want = (size >= 1 && size <= TENANT_ORG_ID_MAX);

    for (i = 0; want && i < size; i++) {
        want = (data[i] > ' ' && data[i] < 0x7f);
    }

    if (tenant_org_id_valid(data, size) != want) {
        abort();
    }
}


/*
 * X-Tenant-*, X-User-* (prefixes), X-Org-Role, X-Organization-ID (whole
 * names), compared after '_' becomes '-', ignoring case.
 */

static void
fuzz_header_name(const uint8_t *data, size_t size)
{
    int     want;
    char   *name;
    size_t  i;

    name = malloc(size + 1);
    if (name == NULL) {
        abort();
    }

    for (i = 0; i < size; i++) {
        name[i] = (data[i] == '_') ? '-' : (char) data[i];
    }

    name[size] = '\0';

    want = (size >= 9 && strncasecmp(name, "x-tenant-", 9) == 0)
           || (size >= 7 && strncasecmp(name, "x-user-", 7) == 0)
           || (size == 10 && strncasecmp(name, "x-org-role", 10) == 0)
           || (size == 17 && strncasecmp(name, "x-organization-id", 17) == 0);

    free(name);

    if (tenant_header_reserved(data, size) != want) {
        abort();
    }
}


static void
fuzz_sign_message(const uint8_t *data, size_t size)
{
    int             bad;
    char           *msg, *p, *nl;
    size_t          i, n, len, off;
    const uint8_t  *sep;
    tenant_str_t    f[TENANT_SIGN_NFIELDS];

    bad = 0;
    off = 0;

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        sep = (off < size) ? memchr(data + off, 0xff, size - off) : NULL;
        len = sep ? (size_t) (sep - data) - off : size - off;

        f[i].value = (const char *) data + off;
        f[i].len = len;

        for (n = 0; n < len; n++) {
            bad |= (data[off + n] < 0x20 || data[off + n] == 0x7f);
        }

        off = sep ? off + len + 1 : size;
    }

    n = tenant_sign_message(NULL, (int64_t) size - 7, f);

    if (bad) {
        if (n != 0) {
            abort();
        }
        return;
    }

    msg = malloc(n + 1);
    if (msg == NULL) {
        abort();
    }

    if (tenant_sign_message(msg, (int64_t) size - 7, f) != n) {
        abort();
    }

    msg[n] = '\0';

    /* "v2", the timestamp, then each field up to the next newline */

    if (memcmp(msg, "v2\n", 3) != 0) {
        abort();
    }

    p = strchr(msg + 3, '\n');
    if (p == NULL || strtoll(msg + 3, NULL, 10) != (long long) size - 7) {
        abort();
    }

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        p++;
        nl = memchr(p, '\n', (size_t) (msg + n - p));
        len = nl ? (size_t) (nl - p) : (size_t) (msg + n - p);

        if (len != f[i].len || memcmp(p, f[i].value, len) != 0) {
            abort();
        }

        if ((nl == NULL) != (i == TENANT_SIGN_NFIELDS - 1)) {
            abort();
        }

        p += len;
    }

    free(msg);
}


static void
fuzz_problem(const uint8_t *data, size_t size)
{
    int                       status;
    char                     *buf, *names[12], *code, *title;
    size_t                    i, n, nchunks, nmembers, need, len;
    json_t                   *root, *v;
    uint8_t                   flags;
    json_error_t              error;
    fuzz_str_t                chunk[FUZZ_CHUNKS_MAX];
    const uint8_t            *p, *end, *sep;
    tenant_problem_t          pr;
    tenant_problem_member_t  *m;

    nchunks = 0;
    p = data;
    end = data + size;

    while (nchunks < FUZZ_CHUNKS_MAX) {
        sep = memchr(p, 0xff, end - p);

        chunk[nchunks].data = (const char *) p;
        chunk[nchunks].len = (sep ? sep : end) - p;
        nchunks++;

        if (sep == NULL) {
            break;
        }

        p = sep + 1;
    }

    for (i = nchunks; i < FUZZ_CHUNKS_MAX; i++) {
        chunk[i].data = NULL;
        chunk[i].len = 0;
    }

    /* the control bytes */

    status = 0;

    for (i = 0; i < 4 && i < chunk[0].len; i++) {
        status = (int) ((unsigned) status << 8
                        | (uint8_t) chunk[0].data[i]);
    }

    nmembers = chunk[0].len > 4 ? (uint8_t) chunk[0].data[4] % 13 : 0;

    memset(&pr, 0, sizeof(tenant_problem_t));

    pr.type_base = chunk[1].data;
    pr.type_base_len = chunk[1].len;
    pr.status = status;

    code = fuzz_cstring(&chunk[2]);
    title = fuzz_cstring(&chunk[3]);
    pr.code = code;
    pr.title = title;

    if (chunk[4].data) {
        pr.detail = chunk[4].data;
        pr.detail_len = chunk[4].len;
    }

    for (i = 0; i < 12; i++) {
        names[i] = NULL;
    }

    pr.nmembers = nmembers;

    for (i = 0; i < nmembers && i < TENANT_PROBLEM_MAX_MEMBERS; i++) {
        m = &pr.members[i];
        flags = (chunk[0].len > 5 + i) ? (uint8_t) chunk[0].data[5 + i] : 0;

        names[i] = fuzz_cstring(&chunk[5 + 2 * i]);
        m->name = (flags & 0x20) ? NULL : names[i];

        m->number = flags & 0x01;
        m->raw = (flags & 0x02) ? 1 : 0;

        if (m->raw) {
            m->value = fuzz_raw[(flags >> 2) & 0x07];
            m->value_len = strlen(m->value);

        } else {
            m->value = chunk[6 + 2 * i].data;
            m->value_len = chunk[6 + 2 * i].len;

            /* jansson reads integers of 64 bits only */

            if (m->value_len > 18) {
                m->number = 0;
            }
        }

        if (flags & 0x40) {
            m->value = NULL;
            m->value_len = 0;
        }
    }

    /* the sizing pass, a buffer one byte short, then the real one */

    need = tenant_problem_render(NULL, 0, &pr);

    buf = malloc(need);
    if (buf == NULL) {
        abort();
    }

    memset(buf, 0x5a, need);

    if (tenant_problem_render(buf, need - 1, &pr) != need) {
        abort();
    }

    for (i = 0; i < need; i++) {
        if (buf[i] != 0x5a) {
            abort();            /* too small: nothing written */
        }
    }

    len = tenant_problem_render(buf, need, &pr);

    if (len != need) {
        abort();
    }

    root = json_loadb(buf, len, JSON_ALLOW_NUL, &error);

    if (!json_is_object(root)) {
        abort();
    }

    /*
     * The fixed members, unless a member of the same name comes after
     * them (a duplicate name: jansson keeps the last).
     */

    n = 0;

    for (i = 0; i < nmembers && i < TENANT_PROBLEM_MAX_MEMBERS; i++) {
        if (pr.members[i].name != NULL) {
            n++;
        }
    }

    if (n == 0) {
        v = json_object_get(root, "status");

        if (!json_is_integer(v) || json_integer_value(v) != status) {
            abort();
        }

        fuzz_check_string(json_object_get(root, "code"), code, strlen(code));
        fuzz_check_string(json_object_get(root, "title"), title,
                          strlen(title));

        if (pr.detail) {
            fuzz_check_string(json_object_get(root, "detail"), pr.detail,
                              pr.detail_len);

        } else if (json_object_get(root, "detail") != NULL) {
            abort();
        }

        if (json_object_size(root) != 4 + (pr.detail != NULL)) {
            abort();
        }
    }

    /* the last member of each name, when it has a plain string value */

    for (i = 0; i < nmembers && i < TENANT_PROBLEM_MAX_MEMBERS; i++) {
        m = &pr.members[i];

        if (m->name == NULL || m->raw || m->number
            || !fuzz_utf8(m->name, strlen(m->name)))
        {
            continue;
        }

        /*
         * a later name that is the same, or that is not UTF-8 and so may
         * become the same once its bad bytes are U+FFFD, hides this one
         */

        for (n = i + 1; n < nmembers && n < TENANT_PROBLEM_MAX_MEMBERS; n++)
        {
            if (pr.members[n].name != NULL
                && (strcmp(pr.members[n].name, m->name) == 0
                    || !fuzz_utf8(pr.members[n].name,
                                  strlen(pr.members[n].name))))
            {
                break;
            }
        }

        if (n < nmembers && n < TENANT_PROBLEM_MAX_MEMBERS) {
            continue;
        }

        fuzz_check_string(json_object_get(root, m->name),
                          m->value ? m->value : "", m->value_len);
    }

    json_decref(root);
    free(buf);

    fuzz_escape((const char *) data, size);

    free(code);
    free(title);

    for (i = 0; i < 12; i++) {
        free(names[i]);
    }
}


/* tenant_json_escape(): measured as written, a JSON string once quoted */

static void
fuzz_escape(const char *s, size_t len)
{
    char    *buf;
    size_t   n;
    json_t  *v;

    n = tenant_json_escape(NULL, s, len);

    buf = malloc(n + 2);
    if (buf == NULL) {
        abort();
    }

    buf[0] = '"';

    if (tenant_json_escape(buf + 1, s, len) != n) {
        abort();
    }

    buf[n + 1] = '"';

    v = json_loadb(buf, n + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

    fuzz_check_string(v, s, len);

    json_decref(v);
    free(buf);
}


/*
 * A string read back: the same bytes when they are UTF-8 (jansson
 * decides), else valid UTF-8 with at least one U+FFFD.
 */

static void
fuzz_check_string(json_t *v, const char *s, size_t len)
{
    if (!json_is_string(v)) {
        abort();
    }

    if (fuzz_utf8(s, len)) {
        if (json_string_length(v) != len
            || memcmp(json_string_value(v), s, len) != 0)
        {
            abort();
        }

        return;
    }

    if (memmem(json_string_value(v), json_string_length(v), "\xef\xbf\xbd",
               3)
        == NULL)
    {
        abort();
    }
}


/* 1 if s is UTF-8, as jansson decides */

static int
fuzz_utf8(const char *s, size_t len)
{
    json_t  *j;

    j = json_stringn(s, len);

    if (j == NULL) {
        return 0;
    }

    json_decref(j);

    return 1;
}


/* a NUL-terminated copy of a chunk (it may hold NULs: cut there) */

static char *
fuzz_cstring(const fuzz_str_t *s)
{
    char  *p;

    p = malloc(s->len + 1);
    if (p == NULL) {
        abort();
    }

    if (s->len) {
        memcpy(p, s->data, s->len);
    }

    p[s->len] = '\0';

    return p;
}


static int
fuzz_token68(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~' || c == '+' || c == '/';
}
