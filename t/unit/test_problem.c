/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_problem.c: problem+json bodies, parsed back with
 * jansson, and JSON string escaping.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "tenant_problem.h"


#define TYPE_BASE  "https://capliquify.com/problems/"


typedef struct {
    const char  *in;
    size_t       len;
    const char  *out;
    const char  *what;
} escape_case_t;


static char *render(const tenant_problem_t *p, size_t *len);
static char *escape(const char *s, size_t len);
static void problem_init(tenant_problem_t *p);
static void test_render(void);
static void test_order(void);
static void test_sizing(void);
static void test_members(void);
static void test_edges(void);
static void test_raw(void);
static void test_escape(void);
static void test_escape_random(void);


int
main(void)
{
    test_render();
    test_order();
    test_sizing();
    test_members();
    test_edges();
    test_raw();
    test_escape();
    test_escape_random();

    return done_testing();
}


/* Renders p into a malloc()ed NUL-terminated string, as a caller would. */

static char *
render(const tenant_problem_t *p, size_t *len)
{
    char    *buf;
    size_t   n, m;

    n = tenant_problem_render(NULL, 0, p);

    buf = malloc(n + 1);
    if (buf == NULL) {
        return NULL;
    }

    m = tenant_problem_render(buf, n, p);
    if (m != n) {
        free(buf);
        return NULL;
    }

    buf[n] = '\0';

    if (len) {
        *len = n;
    }

    return buf;
}


/* tenant_json_escape into a malloc()ed string; NULL if the passes differ. */

static char *
escape(const char *s, size_t len)
{
    char    *buf;
    size_t   n, m;

    n = tenant_json_escape(NULL, s, len);

    buf = malloc(n + 1);
    if (buf == NULL) {
        return NULL;
    }

    memset(buf, '#', n + 1);

    m = tenant_json_escape(buf, s, len);

    if (m != n || buf[n] != '#') {
        free(buf);
        return NULL;
    }

    buf[n] = '\0';

    return buf;
}


static void
problem_init(tenant_problem_t *p)
{
    static const char  detail[] =
        "The \"what_if\" feature needs the professional tier.";

    memset(p, 0, sizeof(tenant_problem_t));

    p->type_base = TYPE_BASE;
    p->type_base_len = sizeof(TYPE_BASE) - 1;
    p->code = "feature_not_available";
    p->status = 403;
    p->title = "Feature not available";
    p->detail = detail;
    p->detail_len = sizeof(detail) - 1;
}


static void
test_render(void)
{
    char              *s;
    size_t             len;
    json_t            *j;
    json_error_t       e;
    tenant_problem_t   p;

    problem_init(&p);

    p.members[0].name = "upgradeUrl";
    p.members[0].value = "https://app.capliquify.com/billing?plan=pro";
    p.members[0].value_len = strlen(p.members[0].value);
    p.members[1].name = "requiredTier";
    p.members[1].value = "professional";
    p.members[1].value_len = 12;
    p.members[2].name = "retryAfter";
    p.members[2].value = "30";
    p.members[2].value_len = 2;
    p.members[2].number = 1;
    p.nmembers = 3;

    s = render(&p, &len);
    if (s == NULL) {
        ok(0, "render");
        return;
    }

    is_str(s,
           "{\"type\":\"https://capliquify.com/problems/feature_not_available"
           "\",\"title\":\"Feature not available\",\"status\":403,"
           "\"detail\":\"The \\\"what_if\\\" feature needs the professional"
           " tier.\",\"code\":\"feature_not_available\","
           "\"upgradeUrl\":\"https://app.capliquify.com/billing?plan=pro\","
           "\"requiredTier\":\"professional\",\"retryAfter\":30}",
           "the whole body");
    is_int(len, strlen(s), "the returned length is the body's");

    j = json_loadb(s, len, 0, &e);
    ok(j != NULL && json_is_object(j), "jansson parses it (%s)", e.text);

    if (j) {
        is_str(json_string_value(json_object_get(j, "type")),
               TYPE_BASE "feature_not_available", "type");
        is_str(json_string_value(json_object_get(j, "title")),
               "Feature not available", "title");
        ok(json_is_integer(json_object_get(j, "status")), "status is a "
           "number");
        is_int(json_integer_value(json_object_get(j, "status")), 403,
               "status 403");
        is_str(json_string_value(json_object_get(j, "detail")),
               "The \"what_if\" feature needs the professional tier.",
               "detail round-trips");
        is_str(json_string_value(json_object_get(j, "code")),
               "feature_not_available", "code");
        is_int(json_integer_value(json_object_get(j, "retryAfter")), 30,
               "retryAfter is the number 30");
        is_int(json_object_size(j), 8, "eight members");
        json_decref(j);
    }

    free(s);

    /* without detail */

    p.detail = NULL;
    p.detail_len = 10;
    p.nmembers = 0;

    s = render(&p, NULL);
    is_str(s,
           "{\"type\":\"https://capliquify.com/problems/feature_not_available"
           "\",\"title\":\"Feature not available\",\"status\":403,"
           "\"code\":\"feature_not_available\"}",
           "detail NULL: left out");
    free(s);

    /* detail present but empty */

    p.detail = "";
    p.detail_len = 0;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"detail\":\"\",") != NULL,
       "an empty detail is kept");
    free(s);
}


static void
test_order(void)
{
    char              *s;
    size_t             i;
    json_t            *j, *v;
    const char        *key;
    json_error_t       e;
    tenant_problem_t   p;

    static const char  *names[TENANT_PROBLEM_MAX_MEMBERS] = {
        "zeta", "alpha", "limit", "remaining", "reset", "upgradeUrl",
        "tier", "b"
    };

    static const char  *want[] = {
        "type", "title", "status", "detail", "code",
        "zeta", "alpha", "limit", "remaining", "reset", "upgradeUrl",
        "tier", "b"
    };

    problem_init(&p);

    for (i = 0; i < TENANT_PROBLEM_MAX_MEMBERS; i++) {
        p.members[i].name = names[i];
        p.members[i].value = "1";
        p.members[i].value_len = 1;
        p.members[i].number = (int) (i % 2);
    }

    p.nmembers = TENANT_PROBLEM_MAX_MEMBERS;

    s = render(&p, NULL);
    j = s ? json_loads(s, 0, &e) : NULL;

    ok(j != NULL, "eight members: valid JSON");

    if (j == NULL) {
        free(s);
        return;
    }

    i = 0;

    /* jansson 2.8 and later keep objects in insertion order */

    json_object_foreach(j, key, v) {
        if (i < sizeof(want) / sizeof(want[0])) {
            is_str(key, want[i], "member %zu is %s", i, want[i]);
        }

        i++;
    }

    is_int(i, sizeof(want) / sizeof(want[0]), "thirteen members");
    ok(json_is_integer(json_object_get(j, "alpha")), "number: integer");
    ok(json_is_string(json_object_get(j, "zeta")), "not number: string");

    json_decref(j);
    free(s);
}


static void
test_sizing(void)
{
    char              buf[1024];
    size_t            n, m, i;
    tenant_problem_t  p;

    problem_init(&p);

    n = tenant_problem_render(NULL, 0, &p);
    ok(n > 0 && n < sizeof(buf) - 1, "sizing pass: %zu bytes", n);
    is_int(tenant_problem_render(NULL, 100000, &p), n,
           "buf NULL: only sized, whatever the size");

    memset(buf, '#', sizeof(buf));
    m = tenant_problem_render(buf, n - 1, &p);
    is_int(m, n, "one byte short: the needed length");

    for (i = 0; i < sizeof(buf) && buf[i] == '#'; i++) { /* void */ }
    is_int(i, sizeof(buf), "one byte short: nothing written");

    m = tenant_problem_render(buf, 0, &p);
    is_int(m, n, "size 0: the needed length");
    is_int(buf[0], '#', "size 0: nothing written");

    m = tenant_problem_render(buf, n, &p);
    is_int(m, n, "exact size: written");
    is_int(buf[0], '{', "starts with {");
    is_int(buf[n - 1], '}', "ends with }");
    is_int(buf[n], '#', "exact size: no NUL or anything past the end");

    memset(buf, '#', sizeof(buf));
    m = tenant_problem_render(buf, sizeof(buf), &p);
    is_int(m, n, "larger buffer: same length");
    is_int(buf[n], '#', "larger buffer: nothing past the body");
}


static void
test_members(void)
{
    char              *s;
    json_t            *j;
    json_error_t       e;
    tenant_problem_t   p;

    problem_init(&p);
    p.detail = NULL;
    p.code = "rate_limited";
    p.title = "Too many requests";
    p.status = 429;

    p.members[0].name = "limit";
    p.members[0].value = "1000";
    p.members[0].value_len = 4;
    p.members[0].number = 1;
    p.members[1].name = "negative";
    p.members[1].value = "-5";
    p.members[1].value_len = 2;
    p.members[1].number = 1;
    p.members[2].name = "zero";
    p.members[2].value = "0";
    p.members[2].value_len = 1;
    p.members[2].number = 1;
    p.members[3].name = "big";
    p.members[3].value = "18446744073709551615999";
    p.members[3].value_len = 23;
    p.members[3].number = 1;
    p.nmembers = 4;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"limit\":1000,\"negative\":-5,\"zero\":0,"
                           "\"big\":18446744073709551615999}") != NULL,
       "numbers emitted bare: %s", s ? s : "(null)");
    free(s);

    /* a number member that breaks the promise of digits stays valid JSON */

    p.members[0].value = "10; \"x\":1";
    p.members[0].value_len = strlen(p.members[0].value);
    p.members[1].value = "";
    p.members[1].value_len = 0;
    p.members[2].value = "007";
    p.members[2].value_len = 3;
    p.members[3].value = NULL;
    p.members[3].value_len = 0;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"limit\":\"10; \\\"x\\\":1\",\"negative\":"
                           "\"\",\"zero\":\"007\",\"big\":\"\"}") != NULL,
       "non-digits of a number member go out as strings: %s",
       s ? s : "(null)");
    j = s ? json_loads(s, 0, &e) : NULL;
    ok(j != NULL, "and the body parses");
    json_decref(j);
    free(s);

    /* a lone sign, and a sign after the digits, are not integers either */

    p.members[0].value = "-";
    p.members[0].value_len = 1;
    p.members[1].value = "1+";
    p.members[1].value_len = 2;
    p.members[2].value = "-0";
    p.members[2].value_len = 2;
    p.members[3].value = "-12";
    p.members[3].value_len = 3;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"limit\":\"-\",\"negative\":\"1+\","
                           "\"zero\":-0,\"big\":-12}") != NULL,
       "number members \"-\" and \"1+\" go out as strings: %s",
       s ? s : "(null)");
    j = s ? json_loads(s, 0, &e) : NULL;
    ok(j != NULL, "  and the body parses");
    json_decref(j);
    free(s);

    /* strings of members are escaped, names too */

    p.members[0].name = "upgradeUrl";
    p.members[0].value = "https://x/?a=\"1\"&b=\\\r\n";
    p.members[0].value_len = strlen(p.members[0].value);
    p.members[0].number = 0;
    p.members[1].name = "we\"ird";
    p.members[1].value = "v";
    p.members[1].value_len = 1;
    p.members[1].number = 0;
    p.members[2].name = NULL;
    p.nmembers = 3;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, "\"upgradeUrl\":\"https://x/?a=\\\"1\\\"&b="
                           "\\\\\\u000d\\u000a\",\"we\\\"ird\":\"v\"}")
                    != NULL,
       "values and names escaped, a NULL name skipped: %s",
       s ? s : "(null)");
    j = s ? json_loads(s, 0, &e) : NULL;
    ok(j != NULL, "parses");
    is_str(json_string_value(json_object_get(j, "upgradeUrl")),
           "https://x/?a=\"1\"&b=\\\r\n", "value round-trips");
    is_str(json_string_value(json_object_get(j, "we\"ird")), "v",
           "name round-trips");
    json_decref(j);
    free(s);

    /* more members than the array holds are not read */

    p.nmembers = TENANT_PROBLEM_MAX_MEMBERS + 100;

    s = render(&p, NULL);
    j = s ? json_loads(s, 0, &e) : NULL;
    ok(j != NULL, "nmembers too large: clamped, valid JSON");
    json_decref(j);
    free(s);
}


static void
test_edges(void)
{
    char              *s;
    json_t            *j;
    json_error_t       e;
    tenant_problem_t   p;

    memset(&p, 0, sizeof(p));

    s = render(&p, NULL);
    is_str(s, "{\"type\":\"\",\"title\":\"\",\"status\":0,\"code\":\"\"}",
           "all NULL: empty strings, no detail");
    free(s);

    p.status = -2147483647 - 1;
    s = render(&p, NULL);
    ok(s != NULL && strstr(s, "\"status\":-2147483648,") != NULL,
       "INT_MIN status");
    free(s);

    /* type_base and code are both escaped; only type_base_len bytes */

    p.type_base = "https://x/\"/trailing";
    p.type_base_len = 11;
    p.code = "c\\d";
    p.title = "caf\xc3\xa9 \xff";
    p.status = 402;
    p.detail = "line\nbreak\x01\x7f";
    p.detail_len = 12;

    s = render(&p, NULL);
    is_str(s, "{\"type\":\"https://x/\\\"c\\\\d\",\"title\":\"caf\xc3\xa9 "
           "\\ufffd\",\"status\":402,\"detail\":\"line\\u000abreak\\u0001"
           "\x7f\",\"code\":\"c\\\\d\"}",
           "escaping in every string");

    j = s ? json_loads(s, 0, &e) : NULL;
    ok(j != NULL, "parses (%s)", j ? "" : e.text);
    is_str(json_string_value(json_object_get(j, "title")),
           "caf\xc3\xa9 \xef\xbf\xbd", "invalid byte is U+FFFD");
    is_str(json_string_value(json_object_get(j, "type")),
           "https://x/\"c\\d", "type round-trips");
    json_decref(j);
    free(s);
}


static void
test_raw(void)
{
    char              *s;
    json_t            *j, *errors;
    json_error_t       e;
    tenant_problem_t   p;

    static const char  array[] =
        "[{\"field\":\"slug\",\"reason\":\"is required\"},"
        "{\"field\":\"we\\\"ird\",\"reason\":\"unknown member\"}]";

    problem_init(&p);
    p.detail = NULL;
    p.code = "validation_failed";
    p.title = "Invalid request body";
    p.status = 400;

    p.members[0].name = "errors";
    p.members[0].value = array;
    p.members[0].value_len = sizeof(array) - 1;
    p.members[0].raw = 1;
    p.nmembers = 1;

    s = render(&p, NULL);
    is_str(s,
           "{\"type\":\"https://capliquify.com/problems/validation_failed\","
           "\"title\":\"Invalid request body\",\"status\":400,"
           "\"code\":\"validation_failed\",\"errors\":[{\"field\":"
           "\"slug\",\"reason\":\"is required\"},{\"field\":"
           "\"we\\\"ird\",\"reason\":\"unknown member\"}]}",
           "raw: the array as is");

    j = s ? json_loads(s, JSON_REJECT_DUPLICATES, &e) : NULL;
    ok(j != NULL, "raw: parses (%s)", j ? "" : e.text);

    errors = json_object_get(j, "errors");
    ok(json_is_array(errors) && json_array_size(errors) == 2,
       "raw: errors is an array of two");
    is_str(json_string_value(json_object_get(json_array_get(errors, 1),
                                             "field")),
           "we\"ird", "raw: its strings are not escaped twice");
    json_decref(j);
    free(s);

    /* raw wins over number; other members unchanged around it */

    p.members[0].value = "{\"a\":[1,2]}";
    p.members[0].value_len = 11;
    p.members[0].number = 1;
    p.members[1].name = "retryAfter";
    p.members[1].value = "5";
    p.members[1].value_len = 1;
    p.members[1].number = 1;
    p.members[2].name = "note";
    p.members[2].value = "[1]";
    p.members[2].value_len = 3;
    p.nmembers = 3;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"errors\":{\"a\":[1,2]},\"retryAfter\":5,"
                           "\"note\":\"[1]\"}") != NULL,
       "raw: an object; raw over number; not raw: a string: %s",
       s ? s : "(null)");
    free(s);

    /* value_len, not NUL, bounds the value */

    p.members[0].value = "[true]garbage";
    p.members[0].value_len = 6;
    p.nmembers = 1;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"errors\":[true]}") != NULL,
       "raw: value_len bytes only");
    free(s);

    /* nothing to emit: null keeps the body valid */

    p.members[0].value = NULL;
    p.members[0].value_len = 5;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"errors\":null}") != NULL,
       "raw: NULL value is null");
    j = s ? json_loads(s, 0, &e) : NULL;
    ok(json_is_null(json_object_get(j, "errors")), "raw: null parses");
    json_decref(j);
    free(s);

    p.members[0].value = "[]";
    p.members[0].value_len = 0;

    s = render(&p, NULL);
    ok(s != NULL && strstr(s, ",\"errors\":null}") != NULL,
       "raw: empty value is null");
    free(s);

    /* the sizing pass counts raw bytes */

    p.members[0].value = array;
    p.members[0].value_len = sizeof(array) - 1;

    is_int(tenant_problem_render(NULL, 0, &p),
           strlen("{\"type\":\"https://capliquify.com/problems/"
                  "validation_failed\",\"title\":\"Invalid request body\","
                  "\"status\":400,\"code\":\"validation_failed\","
                  "\"errors\":}") + sizeof(array) - 1,
           "raw: sized exactly");
}


static void
test_escape(void)
{
    char    *s;
    size_t   i;

    static const escape_case_t  cases[] = {
        { "", 0, "", "empty" },
        { "plain ascii", 11, "plain ascii", "plain ASCII as is" },
        { "a/b", 3, "a/b", "'/' not escaped" },
        { "\"", 1, "\\\"", "quote" },
        { "\\", 1, "\\\\", "backslash" },
        { "\b\f\n\r\t", 5, "\\u0008\\u000c\\u000a\\u000d\\u0009",
          "short-form controls as \\u00XX" },
        { "\0\x1f", 2, "\\u0000\\u001f", "NUL and 0x1f" },
        { " ~\x7f", 3, " ~\x7f", "0x20, 0x7e, DEL as is" },
        { "\xc3\xa9", 2, "\xc3\xa9", "2-byte UTF-8 kept" },
        { "\xe2\x82\xac", 3, "\xe2\x82\xac", "3-byte UTF-8 kept" },
        { "\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80", "4-byte UTF-8 kept" },
        { "\xe0\xa0\x80", 3, "\xe0\xa0\x80", "U+0800, lowest 3-byte" },
        { "\xed\x9f\xbf", 3, "\xed\x9f\xbf", "U+D7FF, below surrogates" },
        { "\xef\xbf\xbd", 3, "\xef\xbf\xbd", "a real U+FFFD kept raw" },
        { "\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf", "U+10FFFF kept" },
        { "\xe2\x80\xa8", 3, "\xe2\x80\xa8", "U+2028 kept" },
        { "\x80", 1, "\\ufffd", "lone continuation byte" },
        { "\xbf\x80", 2, "\\ufffd\\ufffd", "two continuation bytes" },
        { "\xc0\xaf", 2, "\\ufffd\\ufffd", "overlong '/' (C0 AF)" },
        { "\xc1\xbf", 2, "\\ufffd\\ufffd", "overlong (C1 BF)" },
        { "\xe0\x9f\x80", 3, "\\ufffd\\ufffd\\ufffd", "overlong 3-byte" },
        { "\xf0\x8f\xbf\xbf", 4, "\\ufffd\\ufffd\\ufffd\\ufffd",
          "overlong 4-byte" },
        { "\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd", "surrogate D800" },
        { "\xed\xbf\xbf", 3, "\\ufffd\\ufffd\\ufffd", "surrogate DFFF" },
        { "\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd",
          "above U+10FFFF" },
        { "\xf5\x80", 2, "\\ufffd\\ufffd", "F5" },
        { "\xfe\xff", 2, "\\ufffd\\ufffd", "FE FF" },
        { "\xc3", 1, "\\ufffd", "truncated 2-byte at the end" },
        { "\xe2\x82", 2, "\\ufffd", "truncated 3-byte: one U+FFFD" },
        { "\xf0\x9f\x98", 3, "\\ufffd", "truncated 4-byte: one U+FFFD" },
        { "\xe2\x82" "x", 3, "\\ufffdx", "truncated 3-byte, then ASCII" },
        { "a\xc3(b", 4, "a\\ufffd(b", "lead byte then ASCII" },
        { "\xc3\xa9\xa9", 3, "\xc3\xa9\\ufffd", "valid, then a stray" },
        { "\xc3\"", 2, "\\ufffd\\\"", "lead byte then a quote" },
        { "\xe2\n", 2, "\\ufffd\\u000a", "lead byte then LF" },
        { "ab\0cd", 5, "ab\\u0000cd", "len, not NUL, ends the string" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s = escape(cases[i].in, cases[i].len);
        is_str(s, cases[i].out, "escape: %s", cases[i].what);
        free(s);
    }
}


/*
 * Random strings biased towards the interesting bytes: the escaped form
 * must parse as a JSON string; jansson, whose UTF-8 check is independent
 * of ours, must agree on which inputs are valid UTF-8; valid ones must
 * come back unchanged.
 */

static void
test_escape_random(void)
{
    char          in[64], *s, *quoted;
    size_t        i, k, len, n, failures;
    json_t       *j, *raw;
    uint32_t      x;
    json_error_t  e;

    static const unsigned char  bytes[] = {
        0x00, 0x0a, 0x1f, '"', '\\', '/', 'a', 0x7f, 0x80, 0x8f, 0x90, 0x9f,
        0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee,
        0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff
    };

    x = 2463534242u;
    failures = 0;

    for (i = 0; i < 20000; i++) {

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;

        len = x % sizeof(in);

        for (k = 0; k < len; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            in[k] = (char) ((x & 0x100) ? bytes[x % sizeof(bytes)]
                                        : (x >> 9) & 0xff);
        }

        s = escape(in, len);
        if (s == NULL) {
            failures++;
            continue;
        }

        n = strlen(s);
        quoted = malloc(n + 3);
        if (quoted == NULL) {
            free(s);
            failures++;
            continue;
        }

        quoted[0] = '"';
        memcpy(quoted + 1, s, n);
        quoted[n + 1] = '"';
        quoted[n + 2] = '\0';

        j = json_loads(quoted, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        raw = json_stringn(in, len);

        if (j == NULL || !json_is_string(j)) {
            failures++;
            printf("# does not parse: %s (%s)\n", quoted, e.text);

        } else if (raw != NULL
                   && (json_string_length(j) != len
                       || memcmp(json_string_value(j), in, len) != 0))
        {
            failures++;
            printf("# valid UTF-8 changed: %s\n", quoted);

        } else if (raw == NULL && strstr(s, "\\ufffd") == NULL) {
            failures++;
            printf("# invalid UTF-8 without U+FFFD: %s\n", quoted);

        } else if (raw != NULL && strstr(s, "\\ufffd") != NULL) {
            failures++;
            printf("# U+FFFD in valid UTF-8: %s\n", quoted);
        }

        json_decref(j);
        json_decref(raw);
        free(quoted);
        free(s);
    }

    is_int(failures, 0, "20000 random strings: valid JSON, UTF-8 verdicts "
           "agree with jansson's");
}
