/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_admin.c: the admin API's create and patch bodies,
 * the errors array of the 400 response, and UUIDs in paths.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "tenant_admin.h"


#define REQUIRED    "is required"
#define STRING      "must be a string"
#define EMPTY       "must not be empty"
#define TOO_LONG    "is too long"
#define BAD_UTF8    "is not valid UTF-8"
#define CONTROL     "must not contain control characters"
#define SLUG        "must match ^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
#define ORG_ID      "must be visible ASCII characters only"
#define TIER        "is not a configured tier"
#define EMAIL       "is not an email address"
#define DAYS        "must be an integer from 0 to 365"
#define STATUS                                                               \
    "must be one of active, trial, past_due, suspended, cancelled, expired"
#define TIMESTAMP                                                            \
    "must be null or an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.fff]Z or "  \
    "+HH:MM or -HH:MM)"
#define RATE_LIMIT  "must be null or an integer from 1 to 100000000"
#define UNKNOWN     "unknown member"
#define NO_MEMBER                                                            \
    "must have at least one of subscriptionTier, subscriptionStatus, "       \
    "trialEndsAt, rateLimitOverride"
#define NOT_JSON    "is not JSON"
#define NOT_OBJECT  "must be a JSON object"
#define DUPLICATE   "must not repeat a member name"
#define MORE        "has more errors than listed"

#define MB          (1024 * 1024)

/* a string literal and its length */
#define L(s)        s, sizeof(s) - 1


typedef struct {
    const char  *value;
    const char  *reason;          /* NULL: valid */
    const char  *what;
} string_case_t;


static tenant_tiers_t  tiers;


static json_t *valid_create(void);
static int parse_create(const char *body, size_t len,
    tenant_admin_create_t *out, tenant_admin_errors_t *errs);
static int parse_patch(const char *body, size_t len,
    tenant_admin_patch_t *out, tenant_admin_errors_t *errs);
static int create_json(json_t *body, tenant_admin_create_t *out,
    tenant_admin_errors_t *errs);
static int create_with(const char *field, json_t *v,
    tenant_admin_create_t *out, tenant_admin_errors_t *errs);
static int patch_json(json_t *body, tenant_admin_patch_t *out,
    tenant_admin_errors_t *errs);
static int only(const tenant_admin_errors_t *errs, const char *field,
    const char *reason);
static char *errors_json(const tenant_admin_errors_t *errs);
static char *repeat(int c, size_t n);
static int zeroed(const void *p, size_t len);
static void test_create_valid(void);
static void test_create_missing(void);
static void test_create_types(void);
static void test_create_name(void);
static void test_create_slug(void);
static void test_create_org_id(void);
static void test_create_tier(void);
static void test_create_email(void);
static void test_create_trial_days(void);
static void test_create_body(void);
static void test_create_several(void);
static void test_patch(void);
static void test_patch_timestamps(void);
static void test_patch_rate_limit(void);
static void test_errors_json(void);
static void test_mutations(void);
static void test_uuid(void);


int
main(void)
{
    char  err[128];

    memset(&tiers, 0, sizeof(tenant_tiers_t));

    if (tenant_tiers_add(&tiers, "starter", 7, "dashboard", 9, err,
                         sizeof(err))
        != 0
        || tenant_tiers_add(&tiers, "professional", 12,
                            "dashboard,ai_forecasting", 24, err, sizeof(err))
           != 0
        || tenant_tiers_add(&tiers, "enterprise", 10, "*", 1, err,
                            sizeof(err))
           != 0)
    {
        printf("Bail out! tiers: %s\n", err);
        return 1;
    }

    test_create_valid();
    test_create_missing();
    test_create_types();
    test_create_name();
    test_create_slug();
    test_create_org_id();
    test_create_tier();
    test_create_email();
    test_create_trial_days();
    test_create_body();
    test_create_several();
    test_patch();
    test_patch_timestamps();
    test_patch_rate_limit();
    test_errors_json();
    test_mutations();
    test_uuid();

    return done_testing();
}


/* The deployment guide's example body. */

static json_t *
valid_create(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}",
                     "name", "Acme Manufacturing",
                     "slug", "acme-mfg",
                     "clerkOrganizationId", "org_2abcDEF123",
                     "subscriptionTier", "professional",
                     "ownerEmail", "owner@acme.example.com");
}


static int
parse_create(const char *body, size_t len, tenant_admin_create_t *out,
    tenant_admin_errors_t *errs)
{
    return tenant_admin_parse_create((const unsigned char *) body, len,
                                     &tiers, out, errs);
}


static int
parse_patch(const char *body, size_t len, tenant_admin_patch_t *out,
    tenant_admin_errors_t *errs)
{
    return tenant_admin_parse_patch((const unsigned char *) body, len,
                                    &tiers, out, errs);
}


/* Serializes body (the reference is taken): a string to free, or NULL. */

static char *
dump(json_t *body)
{
    char  *s;

    s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);

    if (s == NULL) {
        printf("# cannot build the body\n");
    }

    return s;
}


/* Serializes body (the reference is taken) and parses it as a create. */

static int
create_json(json_t *body, tenant_admin_create_t *out,
    tenant_admin_errors_t *errs)
{
    int    rc;
    char  *s;

    s = dump(body);
    if (s == NULL) {
        errs->n = 0;
        return -2;
    }

    rc = parse_create(s, strlen(s), out, errs);
    free(s);

    return rc;
}


/* The valid body with member field set to v (taken), or removed (NULL). */

static int
create_with(const char *field, json_t *v, tenant_admin_create_t *out,
    tenant_admin_errors_t *errs)
{
    json_t  *body;

    body = valid_create();

    if (v == NULL) {
        json_object_del(body, field);

    } else {
        json_object_set_new(body, field, v);
    }

    return create_json(body, out, errs);
}


static int
patch_json(json_t *body, tenant_admin_patch_t *out,
    tenant_admin_errors_t *errs)
{
    int    rc;
    char  *s;

    s = dump(body);
    if (s == NULL) {
        errs->n = 0;
        return -2;
    }

    rc = parse_patch(s, strlen(s), out, errs);
    free(s);

    return rc;
}


/* 1 if errs is exactly one error, of field for reason; says otherwise. */

static int
only(const tenant_admin_errors_t *errs, const char *field,
    const char *reason)
{
    char  *s;

    if (errs->n == 1 && errs->e[0].field != NULL
        && errs->e[0].reason != NULL
        && strcmp(errs->e[0].field, field) == 0
        && strcmp(errs->e[0].reason, reason) == 0)
    {
        return 1;
    }

    s = errors_json(errs);
    printf("# errors: %s\n# wanted: %s: %s\n", s ? s : "(null)", field,
           reason);
    free(s);

    return 0;
}


/* tenant_admin_errors_json into a malloc()ed string, both passes agree. */

static char *
errors_json(const tenant_admin_errors_t *errs)
{
    char    *buf;
    size_t   n, m;

    n = tenant_admin_errors_json(NULL, errs);

    buf = malloc(n + 1);
    if (buf == NULL) {
        return NULL;
    }

    memset(buf, '#', n + 1);

    m = tenant_admin_errors_json(buf, errs);

    if (m != n || buf[n] != '#') {
        free(buf);
        return NULL;
    }

    buf[n] = '\0';

    return buf;
}


/* n bytes of c, NUL-terminated, malloc()ed. */

static char *
repeat(int c, size_t n)
{
    char  *s;

    s = malloc(n + 1);
    if (s == NULL) {
        printf("Bail out! out of memory\n");
        exit(1);
    }

    memset(s, c, n);
    s[n] = '\0';

    return s;
}


/* 1 if the len bytes at p are all zero. */

static int
zeroed(const void *p, size_t len)
{
    size_t                i;
    const unsigned char  *c;

    c = p;

    for (i = 0; i < len; i++) {
        if (c[i] != 0) {
            return 0;
        }
    }

    return 1;
}


static void
test_create_valid(void)
{
    int                    rc;
    json_t                *body;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out;

    rc = create_json(valid_create(), &out, &errs);
    is_int(rc, 0, "create: the guide's body is accepted");
    is_int(errs.n, 0, "create: no errors");
    is_str(out.name, "Acme Manufacturing", "create: name");
    is_str(out.slug, "acme-mfg", "create: slug");
    is_str(out.org_id, "org_2abcDEF123", "create: clerkOrganizationId");
    is_str(out.tier, "professional", "create: subscriptionTier");
    is_str(out.email, "owner@acme.example.com", "create: ownerEmail");
    is_int(out.trial_days, 14, "create: trialDays absent: 14");

    rc = create_with("trialDays", json_integer(30), &out, &errs);
    is_int(rc, 0, "create: with trialDays");
    is_int(out.trial_days, 30, "create: trialDays 30");

    rc = create_with("trialDays", json_integer(0), &out, &errs);
    ok(rc == 0 && out.trial_days == 0, "create: trialDays 0");

    rc = create_with("trialDays", json_integer(365), &out, &errs);
    ok(rc == 0 && out.trial_days == 365, "create: trialDays 365");

    /* members in any order, whitespace around everything */

    rc = parse_create(L(" {\n\t\"ownerEmail\" : \"a@b.co\" , \"trialDays\":7,"
                        "\"subscriptionTier\":\"starter\",\"slug\":\"abc\","
                        "\"clerkOrganizationId\":\"org_1\",\"name\":\"A\"}"
                        "\r\n"),
                      &out, &errs);
    ok(rc == 0 && out.trial_days == 7 && strcmp(out.slug, "abc") == 0
       && strcmp(out.email, "a@b.co") == 0,
       "create: another order, whitespace");

    /* unicode and escapes in the name */

    body = valid_create();
    json_object_set_new(body, "name",
                        json_string("Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
                                    " \"Q\" \\ /"));
    rc = create_json(body, &out, &errs);
    ok(rc == 0 && strcmp(out.name, "Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
                         " \"Q\" \\ /") == 0,
       "create: a UTF-8 name with quotes round-trips");

    rc = parse_create(L("{\"name\":\"\\u00e9\\ud83d\\ude00\",\"slug\":\"abc\","
                        "\"clerkOrganizationId\":\"o\",\"subscriptionTier\":"
                        "\"starter\",\"ownerEmail\":\"a@b.co\"}"),
                      &out, &errs);
    ok(rc == 0 && strcmp(out.name, "\xc3\xa9\xf0\x9f\x98\x80") == 0,
       "create: \\u escapes and a surrogate pair in the name");

    rc = create_with("name", json_string("SQL'); DROP TABLE tenants;--"),
                     &out, &errs);
    ok(rc == 0, "create: SQL metacharacters in a name are only text");
}


static void
test_create_missing(void)
{
    size_t                 i;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out;

    static const char  *fields[] = {
        "name", "slug", "clerkOrganizationId", "subscriptionTier",
        "ownerEmail"
    };

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        is_int(create_with(fields[i], NULL, &out, &errs), -1,
               "create: without %s: refused", fields[i]);
        ok(only(&errs, fields[i], REQUIRED), "create: %s is required",
           fields[i]);
    }

    is_int(parse_create(L("{}"), &out, &errs), -1, "create: {}");
    is_int(errs.n, 5, "create: {}: five errors");

    for (i = 0; i < 5 && i < errs.n; i++) {
        ok(strcmp(errs.e[i].field, fields[i]) == 0
           && strcmp(errs.e[i].reason, REQUIRED) == 0,
           "create: {}: %s is required, in order", fields[i]);
    }
}


static void
test_create_types(void)
{
    size_t                 i, k;
    json_t                *v;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out;

    static const char  *fields[] = {
        "name", "slug", "clerkOrganizationId", "subscriptionTier",
        "ownerEmail"
    };

    static const char  *types[] = {
        "number", "null", "array", "object", "true", "real"
    };

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        for (k = 0; k < sizeof(types) / sizeof(types[0]); k++) {

            switch (k) {
            case 0:
                v = json_integer(42);
                break;
            case 1:
                v = json_null();
                break;
            case 2:
                v = json_pack("[s]", "acme");
                break;
            case 3:
                v = json_pack("{s:s}", "value", "acme");
                break;
            case 4:
                v = json_true();
                break;
            default:
                v = json_real(1.5);
            }

            is_int(create_with(fields[i], v, &out, &errs), -1,
                   "create: %s as %s: refused", fields[i], types[k]);
            ok(only(&errs, fields[i], STRING), "create: %s as %s: " STRING,
               fields[i], types[k]);
        }
    }
}


static void
test_create_name(void)
{
    char                   *s;
    size_t                  i;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    create_with("name", json_string(""), &out, &errs);
    ok(only(&errs, "name", EMPTY), "name: empty");

    s = repeat('n', 200);
    is_int(create_with("name", json_string(s), &out, &errs), 0,
           "name: 200 bytes");
    is_int(strlen(out.name), 200, "name: all 200 kept");
    free(s);

    s = repeat('n', 201);
    create_with("name", json_string(s), &out, &errs);
    ok(only(&errs, "name", TOO_LONG), "name: 201 bytes");
    free(s);

    /* 100 two-byte characters are 200 bytes; 67 three-byte ones 201 */

    s = repeat('x', 201);
    memset(s, 0, 201);

    for (i = 0; i < 100; i++) {
        memcpy(&s[2 * i], "\xc3\xa9", 2);
    }

    is_int(create_with("name", json_string(s), &out, &errs), 0,
           "name: 100 two-byte characters (200 bytes)");
    free(s);

    s = repeat('x', 201);

    for (i = 0; i < 67; i++) {
        memcpy(&s[3 * i], "\xe2\x82\xac", 3);
    }

    create_with("name", json_string(s), &out, &errs);
    ok(only(&errs, "name", TOO_LONG), "name: 67 euro signs (201 bytes)");
    free(s);

    s = repeat('n', MB);
    is_int(create_with("name", json_string(s), &out, &errs), -1,
           "name: a 1 MB string");
    ok(only(&errs, "name", TOO_LONG), "name: 1 MB: too long");
    free(s);

    create_with("name", json_string("Acme\nInc"), &out, &errs);
    ok(only(&errs, "name", CONTROL), "name: LF");

    create_with("name", json_string("Acme\tInc"), &out, &errs);
    ok(only(&errs, "name", CONTROL), "name: TAB");

    create_with("name", json_string("Acme\x1b[31m"), &out, &errs);
    ok(only(&errs, "name", CONTROL), "name: ESC");

    create_with("name", json_string("Acme\x7f"), &out, &errs);
    ok(only(&errs, "name", CONTROL), "name: DEL");

    create_with("name", json_string("Acme\xc2\x85"), &out, &errs);
    ok(only(&errs, "name", CONTROL), "name: U+0085 (C1 control)");

    create_with("name", json_stringn("Ac\0me", 5), &out, &errs);
    ok(only(&errs, "name", CONTROL), "name: NUL (\\u0000)");

    is_int(create_with("name", json_string("Acme\xc2\xa0Inc"), &out, &errs),
           0, "name: U+00A0 is not a control character");

    /* raw invalid UTF-8 is not JSON (RFC 8259): jansson refuses it */

    parse_create(L("{\"name\":\"Acme \xff\",\"slug\":\"abc\","
                   "\"clerkOrganizationId\":\"o\",\"subscriptionTier\":"
                   "\"starter\",\"ownerEmail\":\"a@b.co\"}"), &out, &errs);
    ok(only(&errs, "body", BAD_UTF8), "name: raw byte 0xff");

    parse_create(L("{\"name\":\"\xc0\xaf\",\"slug\":\"abc\","
                   "\"clerkOrganizationId\":\"o\",\"subscriptionTier\":"
                   "\"starter\",\"ownerEmail\":\"a@b.co\"}"), &out, &errs);
    ok(only(&errs, "body", BAD_UTF8), "name: overlong encoding");

    parse_create(L("{\"name\":\"\xed\xa0\x80\",\"slug\":\"abc\","
                   "\"clerkOrganizationId\":\"o\",\"subscriptionTier\":"
                   "\"starter\",\"ownerEmail\":\"a@b.co\"}"), &out, &errs);
    ok(only(&errs, "body", BAD_UTF8), "name: encoded surrogate");

    parse_create(L("{\"name\":\"\\ud800\",\"slug\":\"abc\","
                   "\"clerkOrganizationId\":\"o\",\"subscriptionTier\":"
                   "\"starter\",\"ownerEmail\":\"a@b.co\"}"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "name: lone surrogate escape");
}


static void
test_create_slug(void)
{
    char                   *s;
    size_t                  i;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    static const string_case_t  cases[] = {
        { "abc", NULL, "3 characters" },
        { "a-b", NULL, "3 with an inner '-'" },
        { "a--b", NULL, "inner '--'" },
        { "123", NULL, "digits" },
        { "0-0", NULL, "digits and '-'" },
        { "acme-manufacturing-2", NULL, "a usual slug" },
        { "ab", SLUG, "2 characters" },
        { "a", SLUG, "1 character" },
        { "", SLUG, "empty" },
        { "Acme", SLUG, "uppercase" },
        { "ACME", SLUG, "all uppercase" },
        { "-abc", SLUG, "leading '-'" },
        { "abc-", SLUG, "trailing '-'" },
        { "---", SLUG, "only '-'" },
        { "a_b", SLUG, "underscore" },
        { "a.b", SLUG, "dot" },
        { "a b", SLUG, "space" },
        { " abc", SLUG, "leading space" },
        { "abc\n", SLUG, "trailing LF" },
        { "\xc3\xa9" "cho", SLUG, "unicode \"\xc3\xa9" "cho\"" },
        { "e\xcc\x81" "cho", SLUG, "combining accent" },
        { "x'; drop table--", SLUG, "SQL metacharacters" },
        { "abc\"", SLUG, "a quote" },
        { "a/b", SLUG, "a slash" },
        { "../etc", SLUG, "path" },
        { "a%20b", SLUG, "percent encoding" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].reason == NULL) {
            is_int(create_with("slug", json_string(cases[i].value), &out,
                               &errs),
                   0, "slug: %s", cases[i].what);
            is_str(out.slug, cases[i].value, "slug: %s: kept",
                   cases[i].what);

        } else {
            create_with("slug", json_string(cases[i].value), &out, &errs);
            ok(only(&errs, "slug", cases[i].reason), "slug: %s: refused",
               cases[i].what);
        }
    }

    create_with("slug", json_stringn("ab\0c", 4), &out, &errs);
    ok(only(&errs, "slug", SLUG), "slug: NUL inside");

    s = repeat('a', 63);
    s[30] = '-';
    is_int(create_with("slug", json_string(s), &out, &errs), 0,
           "slug: 63 characters");
    is_str(out.slug, s, "slug: 63 kept");
    free(s);

    s = repeat('a', 64);
    create_with("slug", json_string(s), &out, &errs);
    ok(only(&errs, "slug", SLUG), "slug: 64 characters");
    free(s);

    s = repeat('a', MB);
    create_with("slug", json_string(s), &out, &errs);
    ok(only(&errs, "slug", SLUG), "slug: 1 MB");
    free(s);
}


static void
test_create_org_id(void)
{
    char                   *s;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    is_int(create_with("clerkOrganizationId", json_string("o';DROP--"),
                       &out, &errs),
           0, "org id: SQL metacharacters are visible ASCII");

    create_with("clerkOrganizationId", json_string(""), &out, &errs);
    ok(only(&errs, "clerkOrganizationId", EMPTY), "org id: empty");

    create_with("clerkOrganizationId", json_string("org 1"), &out, &errs);
    ok(only(&errs, "clerkOrganizationId", ORG_ID), "org id: space");

    create_with("clerkOrganizationId", json_string("org\r\nX: 1"), &out,
                &errs);
    ok(only(&errs, "clerkOrganizationId", ORG_ID), "org id: CR LF");

    create_with("clerkOrganizationId", json_string("org_\xc3\xa9"), &out,
                &errs);
    ok(only(&errs, "clerkOrganizationId", ORG_ID), "org id: UTF-8");

    create_with("clerkOrganizationId", json_stringn("org\0", 4), &out,
                &errs);
    ok(only(&errs, "clerkOrganizationId", ORG_ID), "org id: NUL");

    s = repeat('o', 128);
    is_int(create_with("clerkOrganizationId", json_string(s), &out, &errs),
           0, "org id: 128 bytes");
    is_str(out.org_id, s, "org id: 128 kept");
    free(s);

    s = repeat('o', 129);
    create_with("clerkOrganizationId", json_string(s), &out, &errs);
    ok(only(&errs, "clerkOrganizationId", TOO_LONG), "org id: 129 bytes");
    free(s);

    s = repeat('o', MB);
    create_with("clerkOrganizationId", json_string(s), &out, &errs);
    ok(only(&errs, "clerkOrganizationId", TOO_LONG), "org id: 1 MB");
    free(s);
}


static void
test_create_tier(void)
{
    char                   *s;
    json_t                 *j;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    is_int(create_with("subscriptionTier", json_string("starter"), &out,
                       &errs),
           0, "tier: starter");
    is_str(out.tier, "starter", "tier: kept");
    is_int(create_with("subscriptionTier", json_string("enterprise"), &out,
                       &errs),
           0, "tier: enterprise");

    create_with("subscriptionTier", json_string("gold"), &out, &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: unknown");

    create_with("subscriptionTier", json_string("Starter"), &out, &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: case matters");

    create_with("subscriptionTier", json_string("starter "), &out, &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: trailing space");

    create_with("subscriptionTier", json_string(""), &out, &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: empty");

    create_with("subscriptionTier", json_stringn("starter\0x", 9), &out,
                &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: NUL then more");

    create_with("subscriptionTier", json_string("starter' OR '1'='1"), &out,
                &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: SQL metacharacters");

    s = repeat('t', MB);
    create_with("subscriptionTier", json_string(s), &out, &errs);
    ok(only(&errs, "subscriptionTier", TIER), "tier: 1 MB");
    free(s);

    s = json_dumps(j = valid_create(), JSON_COMPACT);
    json_decref(j);
    is_int(tenant_admin_parse_create((const unsigned char *) s,
                                     s ? strlen(s) : 0, NULL, &out, &errs),
           -1, "tier: no table: refused");
    free(s);
    ok(only(&errs, "subscriptionTier", TIER), "tier: no table: not a tier");
}


static void
test_create_email(void)
{
    char                   *s;
    size_t                  i;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    static const string_case_t  cases[] = {
        { "owner@acme.example.com", NULL, "plain" },
        { "first.last+tag@sub.example.co.uk", NULL, "dots, plus, subdomain" },
        { "o'brien@example.ie", NULL, "apostrophe" },
        { "x@a-b.io", NULL, "'-' in the domain" },
        { "UPPER@EXAMPLE.COM", NULL, "uppercase" },
        { "", EMAIL, "empty" },
        { "owner.example.com", EMAIL, "no @" },
        { "a@b@example.com", EMAIL, "two @" },
        { "@example.com", EMAIL, "empty local part" },
        { "owner@", EMAIL, "empty domain" },
        { "owner @example.com", EMAIL, "space in the local part" },
        { "owner@exa mple.com", EMAIL, "space in the domain" },
        { " owner@example.com", EMAIL, "leading space" },
        { "owner@example.com ", EMAIL, "trailing space" },
        { "owner@localhost", EMAIL, "no dot in the domain" },
        { "owner@.example.com", EMAIL, "domain starts with a dot" },
        { "owner@example.com.", EMAIL, "domain ends with a dot" },
        { "owner@example..com", EMAIL, "two dots in the domain" },
        { ".owner@example.com", EMAIL, "local part starts with a dot" },
        { "owner.@example.com", EMAIL, "local part ends with a dot" },
        { "ow..ner@example.com", EMAIL, "two dots in the local part" },
        { "owner@example.com\r\nBcc: x@y.z", EMAIL, "CR LF" },
        { "owner\t@example.com", EMAIL, "TAB" },
        { "a@b.com,c@d.com", EMAIL, "a list" },
        { "Owner <owner@example.com>", EMAIL, "a display name" },
        { "\"o\"@example.com", EMAIL, "a quoted local part" },
        { "owner@[127.0.0.1]", EMAIL, "a domain literal" },
        { "owner@ex_ample.com", EMAIL, "'_' in the domain" },
        { "x'; drop table--@a.b", EMAIL, "SQL metacharacters, space" },
        { "\xc3\xa9t\xc3\xa9@example.com", EMAIL, "UTF-8 local part" },
        { "owner@b\xc3\xbc" "cher.de", EMAIL, "UTF-8 domain" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].reason == NULL) {
            is_int(create_with("ownerEmail", json_string(cases[i].value),
                               &out, &errs),
                   0, "email: %s", cases[i].what);
            is_str(out.email, cases[i].value, "email: %s: kept",
                   cases[i].what);

        } else {
            create_with("ownerEmail", json_string(cases[i].value), &out,
                        &errs);
            ok(only(&errs, "ownerEmail", cases[i].reason),
               "email: %s: refused", cases[i].what);
        }
    }

    create_with("ownerEmail", json_stringn("a@b.co\0", 7), &out, &errs);
    ok(only(&errs, "ownerEmail", EMAIL), "email: NUL at the end");

    /* 64 + 1 + 189 = 254 bytes */

    s = repeat('d', 254);
    memset(s, 'l', 64);
    s[64] = '@';
    s[200] = '.';
    is_int(create_with("ownerEmail", json_string(s), &out, &errs), 0,
           "email: 254 bytes");
    is_int(strlen(out.email), 254, "email: all 254 kept");
    free(s);

    s = repeat('d', 255);
    memset(s, 'l', 64);
    s[64] = '@';
    s[200] = '.';
    create_with("ownerEmail", json_string(s), &out, &errs);
    ok(only(&errs, "ownerEmail", TOO_LONG), "email: 255 bytes");
    free(s);

    s = repeat('l', 80);
    memcpy(&s[65], "@example.com", 12);
    s[77] = '\0';
    create_with("ownerEmail", json_string(s), &out, &errs);
    ok(only(&errs, "ownerEmail", EMAIL), "email: 65-byte local part");
    free(s);

    s = repeat('e', MB);
    s[10] = '@';
    s[20] = '.';
    create_with("ownerEmail", json_string(s), &out, &errs);
    ok(only(&errs, "ownerEmail", TOO_LONG), "email: 1 MB");
    free(s);
}


static void
test_create_trial_days(void)
{
    char                   body[256];
    size_t                 i;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out;

    static const char  *bad[] = {
        "-1", "366", "1.5", "14.0", "1e2", "\"14\"", "null", "true", "[14]",
        "{\"days\":14}", "-9223372036854775808", "9223372036854775807"
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"name\":\"A\",\"slug\":\"abc\",\"clerkOrganizationId\":"
                 "\"o\",\"subscriptionTier\":\"starter\",\"ownerEmail\":"
                 "\"a@b.co\",\"trialDays\":%s}", bad[i]);

        is_int(parse_create(body, strlen(body), &out, &errs), -1,
               "trialDays %s: refused", bad[i]);
        ok(only(&errs, "trialDays", DAYS), "trialDays %s: " DAYS, bad[i]);
    }

    snprintf(body, sizeof(body),
             "{\"name\":\"A\",\"slug\":\"abc\",\"clerkOrganizationId\":"
             "\"o\",\"subscriptionTier\":\"starter\",\"ownerEmail\":"
             "\"a@b.co\",\"trialDays\":99999999999999999999}");
    parse_create(body, strlen(body), &out, &errs);
    ok(only(&errs, "body", "has a number out of range"),
       "trialDays beyond 64 bits: the body is refused");
}


static void
test_create_body(void)
{
    int                     rc;
    char                   *s, *key, *body;
    size_t                  i, len, failures;
    json_t                 *j;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    rc = parse_create(L(""), &out, &errs);
    ok(rc == -1 && only(&errs, "body", "is empty"), "body: empty");

    rc = tenant_admin_parse_create(NULL, 0, &tiers, &out, &errs);
    ok(rc == -1 && only(&errs, "body", "is empty"), "body: NULL");

    parse_create(L("name=Acme&slug=acme"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: a form");

    parse_create(L("   "), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: whitespace");

    parse_create(L("{\"name\":\"A\"} x"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: trailing garbage");

    parse_create(L("{\"name\":\"A\"}{}"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: two objects");

    parse_create(L("{'name':'A'}"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: single quotes");

    parse_create(L("{\"name\":\"A\",}"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: trailing comma");

    parse_create(L("{\"a\":1}\0{}"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: NUL byte after the object");

    parse_create(L("[]"), &out, &errs);
    ok(only(&errs, "body", NOT_OBJECT), "body: an array");

    parse_create(L("[{\"name\":\"A\"}]"), &out, &errs);
    ok(only(&errs, "body", NOT_OBJECT), "body: an object in an array");

    parse_create(L("\"acme\""), &out, &errs);
    ok(only(&errs, "body", NOT_OBJECT), "body: a string");

    parse_create(L("42"), &out, &errs);
    ok(only(&errs, "body", NOT_OBJECT), "body: a number");

    parse_create(L("null"), &out, &errs);
    ok(only(&errs, "body", NOT_OBJECT), "body: null");

    /*
     * a refused body leaves *out zeroed, the default trialDays too, be it
     * empty, not JSON, not an object or an object with a bad member
     * (fuzz_admin: t/fuzz/corpus/admin/regress-create-empty-body)
     */

    memset(&out, 0xa5, sizeof(tenant_admin_create_t));
    parse_create(L(""), &out, &errs);
    ok(zeroed(&out, sizeof(tenant_admin_create_t)), "body: empty: zeroed");

    memset(&out, 0xa5, sizeof(tenant_admin_create_t));
    parse_create(L("{"), &out, &errs);
    ok(zeroed(&out, sizeof(tenant_admin_create_t)),
       "body: not JSON: zeroed");

    memset(&out, 0xa5, sizeof(tenant_admin_create_t));
    parse_create(L("[{\"name\":\"A\"}]"), &out, &errs);
    ok(zeroed(&out, sizeof(tenant_admin_create_t)),
       "body: not an object: zeroed");

    memset(&out, 0xa5, sizeof(tenant_admin_create_t));
    parse_create(L("{\"name\":\"A\"}"), &out, &errs);
    ok(zeroed(&out, sizeof(tenant_admin_create_t)),
       "body: members missing: zeroed");

    parse_create(L("{\"name\":\"A\",\"slug\":\"abc\",\"name\":\"B\"}"), &out,
                 &errs);
    ok(only(&errs, "body", DUPLICATE), "body: duplicate member");

    parse_create(L("{\"name\":\"A\",\"x\":{\"a\":1,\"a\":2}}"), &out, &errs);
    ok(only(&errs, "body", DUPLICATE), "body: duplicate in a nested object");

    /* nesting: jansson stops at 2048 levels */

    s = repeat('[', 100000);
    parse_create(s, 100000, &out, &errs);
    ok(only(&errs, "body", "is nested too deeply"), "body: 100000 '['");
    free(s);

    /* every truncation of a valid body is refused as a whole */

    body = json_dumps(j = valid_create(), JSON_COMPACT);
    json_decref(j);
    len = body ? strlen(body) : 0;
    failures = 0;

    for (i = 0; i < len; i++) {
        rc = parse_create(body, i, &out, &errs);

        if (rc != -1 || errs.n != 1 || strcmp(errs.e[0].field, "body") != 0
            || strcmp(errs.e[0].reason, i ? NOT_JSON : "is empty") != 0)
        {
            failures++;
            printf("# prefix of %zu bytes: rc %d\n", i, rc);
        }
    }

    ok(len > 0 && failures == 0,
       "body: each of %zu truncations refused as not JSON", len);
    is_int(parse_create(body, len, &out, &errs), 0,
           "body: and the whole is fine");
    free(body);

    /* unknown members */

    j = valid_create();
    json_object_set_new(j, "plan", json_string("gold"));
    create_json(j, &out, &errs);
    ok(only(&errs, "plan", UNKNOWN), "body: unknown member");

    j = valid_create();
    json_object_set_new(j, "Name", json_string("B"));
    create_json(j, &out, &errs);
    ok(only(&errs, "Name", UNKNOWN), "body: member names are case-sensitive");

    j = valid_create();
    json_object_set_new(j, "trial_days", json_integer(3));
    create_json(j, &out, &errs);
    ok(only(&errs, "trial_days", UNKNOWN), "body: snake_case is unknown");

    j = valid_create();
    json_object_set_new(j, "", json_null());
    create_json(j, &out, &errs);
    ok(only(&errs, "", UNKNOWN), "body: empty member name");

    j = valid_create();
    json_object_set_new(j, "\xc3\xa9" "cho\"\\", json_null());
    create_json(j, &out, &errs);
    ok(only(&errs, "\xc3\xa9" "cho\"\\", UNKNOWN),
       "body: unicode, quote and backslash in a member name");

    /* a long name is cut at 63 bytes, and not inside a character */

    key = repeat('k', 70);
    j = valid_create();
    json_object_set_new(j, key, json_null());
    create_json(j, &out, &errs);
    key[63] = '\0';
    ok(only(&errs, key, UNKNOWN), "body: a 70-byte name is cut at 63");
    free(key);

    key = repeat('k', 70);
    memcpy(&key[62], "\xc3\xa9", 2);
    j = valid_create();
    json_object_set_new(j, key, json_null());
    create_json(j, &out, &errs);
    key[62] = '\0';
    ok(only(&errs, key, UNKNOWN),
       "body: cut before a character that crosses byte 63");
    free(key);

    key = repeat('k', MB);
    j = valid_create();
    json_object_set_new(j, key, json_null());
    create_json(j, &out, &errs);
    key[63] = '\0';
    ok(only(&errs, key, UNKNOWN), "body: a 1 MB member name");
    free(key);

    parse_create(L("{\"a\\u0000b\":1}"), &out, &errs);
    ok(only(&errs, "body", NOT_JSON), "body: NUL in a member name");
}


static void
test_create_several(void)
{
    int                    rc;
    char                   name[16];
    size_t                 i;
    json_t                *j;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out;

    static const char  *want[][2] = {
        { "name", EMPTY },
        { "slug", SLUG },
        { "clerkOrganizationId", ORG_ID },
        { "subscriptionTier", TIER },
        { "ownerEmail", EMAIL },
        { "trialDays", DAYS },
        { "zzz", UNKNOWN },
        { "extra", UNKNOWN },
    };

    rc = parse_create(L("{\"zzz\":0,\"trialDays\":999,\"ownerEmail\":\"x\","
                        "\"subscriptionTier\":\"gold\","
                        "\"clerkOrganizationId\":\"a b\",\"slug\":\"A\","
                        "\"name\":\"\",\"extra\":[]}"),
                      &out, &errs);
    is_int(rc, -1, "several: refused");
    is_int(errs.n, 8, "several: eight errors");

    for (i = 0; i < 8 && i < errs.n; i++) {
        ok(strcmp(errs.e[i].field, want[i][0]) == 0
           && strcmp(errs.e[i].reason, want[i][1]) == 0,
           "several: %zu is %s: %s", i, want[i][0], want[i][1]);
    }

    /* wrong types and missing members together */

    rc = parse_create(L("{\"name\":1,\"slug\":null,\"trialDays\":\"14\"}"),
                      &out, &errs);
    ok(rc == -1 && errs.n == 6
       && strcmp(errs.e[0].reason, STRING) == 0
       && strcmp(errs.e[1].reason, STRING) == 0
       && strcmp(errs.e[2].reason, REQUIRED) == 0
       && strcmp(errs.e[5].field, "trialDays") == 0,
       "several: types and missing members");

    /* more errors than the list holds */

    j = valid_create();

    for (i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "m%02zu", i);
        json_object_set_new(j, name, json_integer((json_int_t) i));
    }

    create_json(j, &out, &errs);
    is_int(errs.n, TENANT_ADMIN_MAX_ERRORS, "overflow: the list is full");
    is_str(errs.e[0].field, "m00", "overflow: first unknown member");
    is_str(errs.e[14].field, "m14", "overflow: fifteenth");
    ok(strcmp(errs.e[15].field, "body") == 0
       && strcmp(errs.e[15].reason, MORE) == 0,
       "overflow: the last entry says there are more");

    /* the caller's own errors: a body over the configured size */

    errs.n = 0;
    tenant_admin_error_add(&errs, "body", "is too large");
    ok(only(&errs, "body", "is too large"), "error_add");
}


static void
test_patch(void)
{
    int                    rc;
    size_t                 i;
    char                  *s;
    tenant_admin_errors_t  errs;
    tenant_admin_patch_t   out;

    static const char  *statuses[] = {
        "active", "trial", "past_due", "suspended", "cancelled", "expired"
    };

    rc = patch_json(json_pack("{s:s}", "subscriptionTier", "enterprise"),
                    &out, &errs);
    ok(rc == 0 && out.has_tier && !out.has_status && !out.has_trial_ends_at
       && !out.has_rate_limit && strcmp(out.tier, "enterprise") == 0,
       "patch: tier only");

    patch_json(json_pack("{s:s}", "subscriptionTier", "gold"), &out, &errs);
    ok(only(&errs, "subscriptionTier", TIER), "patch: unknown tier");
    ok(!out.has_tier, "patch: refused: has_tier clear");

    patch_json(json_pack("{s:n}", "subscriptionTier"), &out, &errs);
    ok(only(&errs, "subscriptionTier", STRING), "patch: tier null");

    patch_json(json_pack("{s:i}", "subscriptionTier", 2), &out, &errs);
    ok(only(&errs, "subscriptionTier", STRING), "patch: tier number");

    for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        rc = patch_json(json_pack("{s:s}", "subscriptionStatus",
                                  statuses[i]),
                        &out, &errs);
        ok(rc == 0 && out.has_status && !out.has_tier
           && strcmp(out.status, statuses[i]) == 0,
           "patch: status %s", statuses[i]);
    }

    patch_json(json_pack("{s:s}", "subscriptionStatus", "Active"), &out,
               &errs);
    ok(only(&errs, "subscriptionStatus", STATUS), "patch: status Active");

    patch_json(json_pack("{s:s}", "subscriptionStatus", "deleted"), &out,
               &errs);
    ok(only(&errs, "subscriptionStatus", STATUS), "patch: status deleted");

    patch_json(json_pack("{s:s}", "subscriptionStatus", ""), &out, &errs);
    ok(only(&errs, "subscriptionStatus", STATUS), "patch: status empty");

    patch_json(json_pack("{s:s#}", "subscriptionStatus", "trial\0x", 7),
               &out, &errs);
    ok(only(&errs, "subscriptionStatus", STATUS), "patch: status NUL");

    patch_json(json_pack("{s:s}", "subscriptionStatus", "active'--"), &out,
               &errs);
    ok(only(&errs, "subscriptionStatus", STATUS), "patch: status SQL");

    patch_json(json_pack("{s:n}", "subscriptionStatus"), &out, &errs);
    ok(only(&errs, "subscriptionStatus", STRING), "patch: status null");

    patch_json(json_pack("{s:[s]}", "subscriptionStatus", "active"), &out,
               &errs);
    ok(only(&errs, "subscriptionStatus", STRING), "patch: status array");

    s = repeat('a', MB);
    patch_json(json_pack("{s:s}", "subscriptionStatus", s), &out, &errs);
    ok(only(&errs, "subscriptionStatus", STATUS), "patch: status 1 MB");
    free(s);

    /* everything at once */

    rc = patch_json(json_pack("{s:s, s:s, s:s, s:i}",
                              "subscriptionTier", "starter",
                              "subscriptionStatus", "active",
                              "trialEndsAt", "2026-12-31T23:59:59Z",
                              "rateLimitOverride", 5000),
                    &out, &errs);
    ok(rc == 0 && out.has_tier && out.has_status && out.has_trial_ends_at
       && out.has_rate_limit && strcmp(out.tier, "starter") == 0
       && strcmp(out.status, "active") == 0
       && strcmp(out.trial_ends_at, "2026-12-31T23:59:59Z") == 0
       && out.rate_limit == 5000,
       "patch: all four members");

    /* nulls clear */

    rc = patch_json(json_pack("{s:n, s:n}", "trialEndsAt",
                              "rateLimitOverride"),
                    &out, &errs);
    ok(rc == 0 && out.has_trial_ends_at && out.trial_ends_at[0] == '\0'
       && out.has_rate_limit && out.rate_limit == -1 && !out.has_tier
       && !out.has_status,
       "patch: nulls clear trialEndsAt and rateLimitOverride");

    /* no member */

    rc = parse_patch(L("{}"), &out, &errs);
    ok(rc == -1 && only(&errs, "body", NO_MEMBER), "patch: {}");

    rc = parse_patch(L("{\"status\":\"active\"}"), &out, &errs);
    ok(rc == -1 && errs.n == 2 && strcmp(errs.e[0].field, "body") == 0
       && strcmp(errs.e[0].reason, NO_MEMBER) == 0
       && strcmp(errs.e[1].field, "status") == 0
       && strcmp(errs.e[1].reason, UNKNOWN) == 0,
       "patch: only an unknown member: both errors");

    rc = parse_patch(L("{\"subscriptionTier\":\"starter\",\"name\":\"B\"}"),
                     &out, &errs);
    ok(rc == -1 && only(&errs, "name", UNKNOWN) && !out.has_tier,
       "patch: create's members are unknown here");

    rc = parse_patch(L("{\"subscriptionTier\":\"starter\","
                       "\"subscriptionStatus\":\"gone\"}"), &out, &errs);
    ok(rc == -1 && only(&errs, "subscriptionStatus", STATUS)
       && !out.has_tier,
       "patch: one bad member refuses the whole, has_* cleared");

    rc = parse_patch(L("{\"subscriptionTier\":\"starter\","
                       "\"subscriptionTier\":\"enterprise\"}"), &out, &errs);
    ok(rc == -1 && only(&errs, "body", DUPLICATE), "patch: duplicate");

    rc = parse_patch(L("[{\"subscriptionTier\":\"starter\"}]"), &out, &errs);
    ok(rc == -1 && only(&errs, "body", NOT_OBJECT), "patch: an array");

    rc = parse_patch(L("{\"subscriptionTier\":\"starter\""), &out, &errs);
    ok(rc == -1 && only(&errs, "body", NOT_JSON), "patch: truncated");

    rc = parse_patch(L(""), &out, &errs);
    ok(rc == -1 && only(&errs, "body", "is empty"), "patch: empty");

    rc = parse_patch(L("{\"subscriptionStatus\":\"\xff\"}"), &out, &errs);
    ok(rc == -1 && only(&errs, "body", BAD_UTF8), "patch: invalid UTF-8");
}


static void
test_patch_timestamps(void)
{
    int                    rc;
    char                  *s;
    size_t                 i;
    tenant_admin_errors_t  errs;
    tenant_admin_patch_t   out;

    static const string_case_t  cases[] = {
        { "2026-12-31T23:59:59Z", NULL, "UTC" },
        { "2026-01-01T00:00:00Z", NULL, "midnight" },
        { "2028-02-29T12:00:00+01:00", NULL, "leap day, +01:00" },
        { "2000-02-29T12:00:00Z", NULL, "leap day of 2000" },
        { "2026-06-30T10:00:00.1Z", NULL, "one fraction digit" },
        { "2026-06-30T10:00:00.123Z", NULL, "milliseconds" },
        { "2026-06-30T10:00:00.123456789-05:30", NULL, "nanoseconds, -05:30" },
        { "2026-06-30T10:00:00-00:00", NULL, "-00:00" },
        { "2026-06-30T10:00:00+23:59", NULL, "+23:59" },
        { "0001-01-01T00:00:00Z", NULL, "year 1" },
        { "9999-12-31T23:59:59Z", NULL, "year 9999" },
        { "2026-02-30T00:00:00Z", TIMESTAMP, "February 30" },
        { "2026-02-29T00:00:00Z", TIMESTAMP, "February 29, 2026" },
        { "1900-02-29T00:00:00Z", TIMESTAMP, "February 29, 1900" },
        { "2026-04-31T00:00:00Z", TIMESTAMP, "April 31" },
        { "2026-01-32T00:00:00Z", TIMESTAMP, "January 32" },
        { "2026-01-00T00:00:00Z", TIMESTAMP, "day 0" },
        { "2026-00-10T00:00:00Z", TIMESTAMP, "month 0" },
        { "2026-13-10T00:00:00Z", TIMESTAMP, "month 13" },
        { "0000-01-01T00:00:00Z", TIMESTAMP, "year 0" },
        { "2026-01-01T24:00:00Z", TIMESTAMP, "24:00" },
        { "2026-01-01T23:60:00Z", TIMESTAMP, "minute 60" },
        { "2026-01-01T23:59:60Z", TIMESTAMP, "leap second" },
        { "2026-01-01T00:00:00", TIMESTAMP, "missing zone" },
        { "2026-01-01T00:00:00.5", TIMESTAMP, "fraction, missing zone" },
        { "2026-01-01", TIMESTAMP, "date only" },
        { "2026-01-01 00:00:00Z", TIMESTAMP, "space instead of T" },
        { "2026-01-01t00:00:00z", TIMESTAMP, "lowercase t and z" },
        { "2026-1-01T00:00:00Z", TIMESTAMP, "one-digit month" },
        { "26-01-01T00:00:00Z", TIMESTAMP, "two-digit year" },
        { "+2026-01-01T00:00:00Z", TIMESTAMP, "signed year" },
        { "2026-01-01T00:00:00.Z", TIMESTAMP, "empty fraction" },
        { "2026-01-01T00:00:00.1234567890Z", TIMESTAMP, "ten digits" },
        { "2026-01-01T00:00:00,5Z", TIMESTAMP, "decimal comma" },
        { "2026-01-01T00:00:00+24:00", TIMESTAMP, "offset +24:00" },
        { "2026-01-01T00:00:00+05:60", TIMESTAMP, "offset minute 60" },
        { "2026-01-01T00:00:00+0530", TIMESTAMP, "offset without colon" },
        { "2026-01-01T00:00:00+05", TIMESTAMP, "offset hours only" },
        { "2026-01-01T00:00:00+05:30:00", TIMESTAMP, "offset seconds" },
        { "2026-01-01T00:00:00+0a:00", TIMESTAMP, "offset hour not digits" },
        { "2026-01-01T00:00:00-05-30", TIMESTAMP, "offset with '-' for ':'" },
        { "2026-01-01T00:00:00+05:3x", TIMESTAMP,
          "offset minute not digits" },
        { "2026-01-01T00:00:00Zx", TIMESTAMP, "after Z" },
        { "2026-01-01T00:00:00ZZ", TIMESTAMP, "ZZ" },
        { "2026-01-01T00:00:00 UTC", TIMESTAMP, "UTC as a word" },
        { "now", TIMESTAMP, "now" },
        { "infinity", TIMESTAMP, "infinity" },
        { "", TIMESTAMP, "empty" },
        { "2026-01-01T00:00:00Z'; DROP TABLE tenants;--", TIMESTAMP, "SQL" },
        { "\xd9\xa2\xd9\xa0\xd9\xa2\xd9\xa6-01-01T00:00:00Z", TIMESTAMP,
          "Arabic-Indic digits" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rc = patch_json(json_pack("{s:s}", "trialEndsAt", cases[i].value),
                        &out, &errs);

        if (cases[i].reason == NULL) {
            ok(rc == 0 && out.has_trial_ends_at
               && strcmp(out.trial_ends_at, cases[i].value) == 0,
               "timestamp: %s", cases[i].what);

        } else {
            ok(rc == -1 && only(&errs, "trialEndsAt", cases[i].reason)
               && !out.has_trial_ends_at,
               "timestamp: %s: refused", cases[i].what);
        }
    }

    patch_json(json_pack("{s:s#}", "trialEndsAt", "2026-01-01T00:00:00Z\0",
                         21),
               &out, &errs);
    ok(only(&errs, "trialEndsAt", TIMESTAMP), "timestamp: NUL after Z");

    patch_json(json_pack("{s:i}", "trialEndsAt", 1767225600), &out, &errs);
    ok(only(&errs, "trialEndsAt", TIMESTAMP), "timestamp: a number");

    patch_json(json_pack("{s:b}", "trialEndsAt", 0), &out, &errs);
    ok(only(&errs, "trialEndsAt", TIMESTAMP), "timestamp: false");

    patch_json(json_pack("{s:{}}", "trialEndsAt"), &out, &errs);
    ok(only(&errs, "trialEndsAt", TIMESTAMP), "timestamp: an object");

    s = repeat('2', MB);
    patch_json(json_pack("{s:s}", "trialEndsAt", s), &out, &errs);
    ok(only(&errs, "trialEndsAt", TIMESTAMP), "timestamp: 1 MB");
    free(s);
}


static void
test_patch_rate_limit(void)
{
    int                    rc;
    char                   body[128];
    size_t                 i;
    tenant_admin_errors_t  errs;
    tenant_admin_patch_t   out;

    static const struct {
        const char  *json;
        long long    want;       /* 0: refused */
    } cases[] = {
        { "1", 1 },
        { "1000", 1000 },
        { "100000000", 100000000 },
        { "null", -1 },
        { "0", 0 },
        { "-1", 0 },
        { "100000001", 0 },
        { "2147483648", 0 },
        { "1.5", 0 },
        { "1000.0", 0 },
        { "1e3", 0 },
        { "\"1000\"", 0 },
        { "true", 0 },
        { "[1000]", 0 },
        { "{}", 0 },
        { "-9223372036854775808", 0 },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body), "{\"rateLimitOverride\":%s}",
                 cases[i].json);

        rc = parse_patch(body, strlen(body), &out, &errs);

        if (cases[i].want) {
            ok(rc == 0 && out.has_rate_limit
               && out.rate_limit == cases[i].want,
               "rateLimitOverride %s", cases[i].json);

        } else {
            ok(rc == -1 && only(&errs, "rateLimitOverride", RATE_LIMIT)
               && !out.has_rate_limit,
               "rateLimitOverride %s: refused", cases[i].json);
        }
    }
}


static void
test_errors_json(void)
{
    char                   *s, buf[64];
    size_t                  i, n;
    json_t                 *j, *e;
    json_error_t            err;
    tenant_admin_errors_t   errs;
    tenant_admin_create_t   out;

    errs.n = 0;
    s = errors_json(&errs);
    is_str(s, "[]", "errors_json: none: []");
    free(s);

    is_int(tenant_admin_errors_json(NULL, NULL), 2, "errors_json: NULL: []");

    tenant_admin_error_add(&errs, "slug", SLUG);
    s = errors_json(&errs);
    is_str(s, "[{\"field\":\"slug\",\"reason\":\"" SLUG "\"}]",
           "errors_json: one error");
    free(s);

    /* a body with every kind of error, weird member names included */

    parse_create(L("{\"name\":\"\",\"slug\":\"x'; drop table--\","
                   "\"ownerEmail\":\"a@@b\",\"trialDays\":1.5,"
                   "\"we\\\"ird\\\\\":1,\"\\u00e9\\n\\u0001\":2,"
                   "\"</script>\":3}"), &out, &errs);
    is_int(errs.n, 9, "errors_json: nine errors");

    s = errors_json(&errs);
    ok(s != NULL, "errors_json: sizing and writing passes agree");

    j = s ? json_loads(s, JSON_REJECT_DUPLICATES, &err) : NULL;
    ok(json_is_array(j), "errors_json: parses as an array (%s)",
       j ? "" : err.text);
    is_int(json_array_size(j), errs.n, "errors_json: one element each");

    n = 0;

    json_array_foreach(j, i, e) {
        if (i < errs.n && json_object_size(e) == 2
            && json_is_string(json_object_get(e, "field"))
            && json_is_string(json_object_get(e, "reason"))
            && strcmp(json_string_value(json_object_get(e, "field")),
                      errs.e[i].field) == 0
            && strcmp(json_string_value(json_object_get(e, "reason")),
                      errs.e[i].reason) == 0)
        {
            n++;
        }
    }

    is_int(n, errs.n, "errors_json: every element matches its error");
    is_str(json_string_value(json_object_get(json_array_get(j, 6), "field")),
           "we\"ird\\", "errors_json: quote and backslash round-trip");
    is_str(json_string_value(json_object_get(json_array_get(j, 7), "field")),
           "\xc3\xa9\n\x01", "errors_json: control characters round-trip");
    ok(s != NULL && strstr(s, "\\u000a\\u0001") != NULL,
       "errors_json: control characters escaped");

    json_decref(j);
    free(s);

    /* the exact writing bounds */

    errs.n = 0;
    tenant_admin_error_add(&errs, "a", "b");
    memset(buf, '#', sizeof(buf));
    n = tenant_admin_errors_json(buf, &errs);
    is_int(n, 28, "errors_json: length");
    ok(memcmp(buf, "[{\"field\":\"a\",\"reason\":\"b\"}]#", 29) == 0,
       "errors_json: nothing past the length");
}


/*
 * Random damage to valid bodies: whatever comes out, the parsers return
 * 0 or -1, -1 with 1..16 errors whose JSON parses, and never crash (the
 * test runs under valgrind and sanitizers).
 */

static void
test_mutations(void)
{
    int                    rc;
    char                  *base[2], buf[512], *s;
    size_t                 i, k, b, len, failures;
    json_t                *j;
    uint32_t               x;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  cout;
    tenant_admin_patch_t   pout;

    static const char  bytes[] = "{}[]\":,\\ 0123456789.-+eEtrufalsn\xc3\xff"
                                 "\x00\x01\x80";

    j = valid_create();
    json_object_set_new(j, "trialDays", json_integer(30));
    base[0] = json_dumps(j, JSON_COMPACT);
    json_decref(j);

    base[1] = strdup("{\"subscriptionTier\":\"starter\",\"subscriptionStatus"
                     "\":\"active\",\"trialEndsAt\":\"2026-01-01T00:00:00Z\","
                     "\"rateLimitOverride\":100}");

    x = 2463534242u;
    failures = 0;

    for (i = 0; i < 20000; i++) {
        b = i % 2;

        if (base[b] == NULL) {
            failures++;
            continue;
        }

        len = strlen(base[b]);
        memcpy(buf, base[b], len);

        for (k = 0; k < 1 + i % 4; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;

            switch (x % 3) {
            case 0:
                buf[(x >> 8) % len] = bytes[(x >> 16) % (sizeof(bytes) - 1)];
                break;
            case 1:
                len = (x >> 8) % (len + 1);
                break;
            default:
                if (len < sizeof(buf) - 1) {
                    buf[len++] = bytes[(x >> 16) % (sizeof(bytes) - 1)];
                }
            }

            if (len == 0) {
                break;
            }
        }

        if (b == 0) {
            rc = parse_create(buf, len, &cout, &errs);

        } else {
            rc = parse_patch(buf, len, &pout, &errs);
        }

        if (rc == 0 && errs.n == 0) {
            continue;
        }

        if (rc != -1 || errs.n == 0 || errs.n > TENANT_ADMIN_MAX_ERRORS) {
            failures++;
            continue;
        }

        s = errors_json(&errs);
        j = s ? json_loads(s, 0, NULL) : NULL;

        if (!json_is_array(j) || json_array_size(j) != errs.n) {
            failures++;
            printf("# bad errors JSON: %s\n", s ? s : "(null)");
        }

        json_decref(j);
        free(s);
    }

    is_int(failures, 0, "20000 damaged bodies: -1 with valid errors or 0");

    free(base[0]);
    free(base[1]);
}


static void
test_uuid(void)
{
    size_t  i;

    static const struct {
        const char  *s;
        int          want;
        const char  *what;
    } cases[] = {
        { "3f2504e0-4f89-11d3-9a0c-0305e82c3301", 1, "lowercase" },
        { "00000000-0000-0000-0000-000000000000", 1, "nil" },
        { "ffffffff-ffff-ffff-ffff-ffffffffffff", 1, "max" },
        { "3F2504E0-4F89-11D3-9A0C-0305E82C3301", 0, "uppercase" },
        { "3f2504e0-4f89-11d3-9a0c-0305e82c330", 0, "35 characters" },
        { "3f2504e0-4f89-11d3-9a0c-0305e82c33011", 0, "37 characters" },
        { "3f2504e04f8911d39a0c0305e82c3301", 0, "no hyphens" },
        { "3f2504e0-4f8911d3-9a0c-0305e82c3301-", 0, "misplaced hyphen" },
        { "3f2504e0_4f89_11d3_9a0c_0305e82c3301", 0, "underscores" },
        { "{3f2504e0-4f89-11d3-9a0c-0305e82c330}", 0, "braces" },
        { "3f2504g0-4f89-11d3-9a0c-0305e82c3301", 0, "'g'" },
        { "3f2504e0-4f89-11d3-9a0c-0305e82c330 ", 0, "trailing space" },
        { "acme-mfg", 0, "a slug" },
        { "", 0, "empty" },
        { "------------------------------------", 0, "36 hyphens" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        is_int(tenant_admin_is_uuid(cases[i].s, strlen(cases[i].s)),
               cases[i].want, "uuid: %s", cases[i].what);
    }

    is_int(tenant_admin_is_uuid("3f2504e0-4f89-11d3-9a0c-0305e82c3301x", 36),
           1, "uuid: len bounds the string");
    is_int(tenant_admin_is_uuid("3f2504e0-4f89-11d3-9a0c-0305\0" "82c3301",
                                36),
           0, "uuid: NUL inside");
    is_int(tenant_admin_is_uuid(NULL, 36), 0, "uuid: NULL");
}
