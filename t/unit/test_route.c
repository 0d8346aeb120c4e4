/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_route.c: tenant_feature_route's prefixes, the
 * readings of a request path, matching at segment boundaries, and the
 * table of URL variants an attacker would try against a gated route.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tenant_route.h"


#define S(s)  (const unsigned char *) (s), strlen(s)

#define ALL   TENANT_ROUTE_ALL
#define NONE  0


typedef struct {
    const char  *path;
    unsigned     flags;
    const char  *want;                      /* NULL: above the root */
} route_norm_case_t;


typedef struct {
    const char  *path;
    int          starter;                   /* tenant_route_denied() */
    int          professional;
} route_variant_t;


static void test_prefix(void);
static void test_flags(void);
static void test_normalize(void);
static void test_match(void);
static void test_variants(void);
static void test_order(void);
static const char *normalized(const char *path, unsigned flags);


static tenant_tiers_t  tiers;


int
main(void)
{
    char  err[256];

    if (tenant_tiers_add(&tiers, "starter", 7,
                         "dashboard,inventory,basic_forecasting", 37,
                         err, sizeof(err)) != 0
        || tenant_tiers_add(&tiers, "professional", 12,
                            "dashboard,inventory,basic_forecasting,"
                            "ai_forecasting,working_capital,integrations",
                            81, err, sizeof(err)) != 0
        || tenant_tiers_add(&tiers, "enterprise", 10, "*,sso", 5,
                            err, sizeof(err)) != 0)
    {
        printf("Bail out! tiers: %s\n", err);
        return 1;
    }

    test_prefix();
    test_flags();
    test_normalize();
    test_match();
    test_variants();
    test_order();

    return done_testing();
}


static void
test_prefix(void)
{
    size_t           i;
    char             err[256];
    tenant_route_t   r;

    static const char  *good[][2] = {
        { "/api/forecasts/ai", "/api/forecasts/ai" },
        { "/api/forecasts/ai/", "/api/forecasts/ai" },
        { "/API/Forecasts/AI", "/api/forecasts/ai" },
        { "/", "/" },
        { "/a.b/c~d/e_f-g/0", "/a.b/c~d/e_f-g/0" },
        { "/...", "/..." },
    };

    static const char  *bad[] = {
        "", "api/forecasts", "//api", "/api//ai", "/api/./ai",
        "/api/../ai", "/.", "/..", "/api/ai//", "/api/%61i", "/api/a;b",
        "/api/a b", "/api/a?b", "/api/a#b", "/api/a\\b", "/api/\xc3\xa9",
        "/api/a\001",
    };

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        memset(&r, 0, sizeof(r));
        err[0] = '\0';

        ok(tenant_route_prefix(&r, S(good[i][0]), err, sizeof(err)) == 0,
           "prefix \"%s\" accepted %s", good[i][0], err);
        is_str((char *) r.prefix, good[i][1], "... canonical \"%s\"",
               good[i][1]);
        is_int(r.len, strlen(good[i][1]), "... its length");
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';

        ok(tenant_route_prefix(&r, S(bad[i]), err, sizeof(err)) == -1,
           "prefix \"%s\" refused", bad[i]);
        ok(strncmp(err, "the route prefix ", 17) == 0
           && strstr(err, "e.g. /api/forecasts/ai") != NULL,
           "... with a reason: %s", err);
    }

    {
        char  *longer;

        longer = malloc(TENANT_ROUTE_PREFIX_MAX + 2);
        if (longer == NULL) {
            abort();
        }

        memset(longer, 'a', TENANT_ROUTE_PREFIX_MAX + 1);
        longer[0] = '/';

        ok(tenant_route_prefix(&r, (unsigned char *) longer,
                               TENANT_ROUTE_PREFIX_MAX, err,
                               sizeof(err)) == 0,
           "a prefix of 256 bytes is accepted");
        ok(tenant_route_prefix(&r, (unsigned char *) longer,
                               TENANT_ROUTE_PREFIX_MAX + 1, err,
                               sizeof(err)) == -1,
           "257 bytes are refused: %s", err);

        free(longer);
    }
}


static void
test_flags(void)
{
    is_int(tenant_route_flags(S("/api/forecasts/ai")), 0,
           "a plain path has one reading");
    is_int(tenant_route_flags(S("/api/forecasts/ai/run")), 0,
           "... so has a longer one");
    is_int(tenant_route_flags(S("/api/forecasts/ai.json")), 0,
           "a '.' inside a name: one reading");
    is_int(tenant_route_flags(S("/a/.../b.")), 0, "\"...\" is a name");
    is_int(tenant_route_flags(S("/a/./b")),
           TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE, "\".\": dots and merge");
    is_int(tenant_route_flags(S("..")),
           TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE, "\"..\" alone");
    is_int(tenant_route_flags(S("/a/..;x/b")),
           TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE | TENANT_ROUTE_PARAMS,
           "\"..;x\"");
    is_int(tenant_route_flags(S("/a/..#x")),
           TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE | TENANT_ROUTE_FRAGMENT,
           "\"..#x\"");
    is_int(tenant_route_flags(S("/a\\..\\b")),
           TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE | TENANT_ROUTE_SLASH,
           "\"\\..\\\"");
    is_int(tenant_route_flags(S("/a/x;..")), TENANT_ROUTE_PARAMS,
           "\"..\" among the params");
    is_int(tenant_route_flags(S("/a;b")), TENANT_ROUTE_PARAMS, "';'");
    is_int(tenant_route_flags(S("/a#b")), TENANT_ROUTE_FRAGMENT, "'#'");
    is_int(tenant_route_flags(S("/a\\b")), TENANT_ROUTE_SLASH, "'\\'");
    is_int(tenant_route_flags(S("/a%41")),
           TENANT_ROUTE_SLASH | TENANT_ROUTE_DOTS | TENANT_ROUTE_PARAMS
           | TENANT_ROUTE_MERGE, "'%%': anything it may decode to");
    is_int(tenant_route_flags(S("/a%2e#;\\")), ALL, "all of them");
}


static void
test_normalize(void)
{
    size_t              i;
    const char         *got;
    route_norm_case_t  *c;

    static route_norm_case_t  cases[] = {
        { "/api/forecasts/ai", ALL, "/api/forecasts/ai" },
        { "/API/Forecasts/Ai", ALL, "/api/forecasts/ai" },
        { "/", ALL, "/" },
        { "", ALL, "/" },
        { "api/x", ALL, "/api/x" },
        { "/api/forecasts/ai/", ALL, "/api/forecasts/ai" },
        { "/api/forecasts/ai/", NONE, "/api/forecasts/ai/" },
        { "/api//forecasts//ai", ALL, "/api/forecasts/ai" },
        { "/api//forecasts//ai", NONE, "/api//forecasts//ai" },
        { "//", NONE, "//" },
        { "//", ALL, "/" },

        /* percent-decoding: once, invalid escapes literal */
        { "/api/forecasts/%61i", NONE, "/api/forecasts/ai" },
        { "/api/forecasts/a%49", NONE, "/api/forecasts/ai" },
        { "/api/forecasts/%2561i", ALL, "/api/forecasts/%61i" },
        { "/a%zz%4", ALL, "/a%zz%4" },
        { "/a%", ALL, "/a%" },
        { "/a%00b", ALL, "/a\0b" },  /* is_str stops at the NUL: "/a" */
        { "/a%20", ALL, "/a " },

        /* %2F, %5C and '\': separators or not */
        { "/api%2fforecasts/ai", TENANT_ROUTE_SLASH, "/api/forecasts/ai" },
        { "/api%2Fforecasts/ai", NONE, "/api%2fforecasts/ai" },
        { "/api%5cforecasts%5Cai", TENANT_ROUTE_SLASH,
          "/api/forecasts/ai" },
        { "/api%5cforecasts", NONE, "/api%5cforecasts" },
        { "/api\\forecasts\\ai", TENANT_ROUTE_SLASH, "/api/forecasts/ai" },
        { "/api\\forecasts", NONE, "/api\\forecasts" },
        { "/api/forecasts/ai%2F", TENANT_ROUTE_SLASH | TENANT_ROUTE_MERGE,
          "/api/forecasts/ai" },

        /* '#' */
        { "/api/forecasts/ai#/../../x", TENANT_ROUTE_FRAGMENT
                                        | TENANT_ROUTE_DOTS,
          "/api/forecasts/ai" },
        { "/api/forecasts/ai#/../../x", TENANT_ROUTE_DOTS, "/api/x" },
        { "/api/forecasts/ai#/../../x", NONE,
          "/api/forecasts/ai#/../../x" },

        /* dot segments */
        { "/api/forecasts/./ai", TENANT_ROUTE_DOTS, "/api/forecasts/ai" },
        { "/api/forecasts/./ai", NONE, "/api/forecasts/./ai" },
        { "/api/x/../forecasts/ai", TENANT_ROUTE_DOTS,
          "/api/forecasts/ai" },
        { "/api/x/%2e%2E/forecasts/ai", TENANT_ROUTE_DOTS,
          "/api/forecasts/ai" },
        { "/api/forecasts/ai/..", TENANT_ROUTE_DOTS, "/api/forecasts" },
        { "/api/forecasts/ai/.", TENANT_ROUTE_DOTS, "/api/forecasts/ai" },
        { "/..", TENANT_ROUTE_DOTS, NULL },
        { "/api/../..", TENANT_ROUTE_DOTS, NULL },
        { "/api/../../forecasts", ALL, NULL },
        { "/api/..\\..\\x", TENANT_ROUTE_DOTS | TENANT_ROUTE_SLASH, NULL },
        { "/api/..\\..\\x", TENANT_ROUTE_DOTS, "/api/..\\..\\x" },
        { "/...", TENANT_ROUTE_DOTS, "/..." },
        { "/a/../", TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE, "/" },
        /* WHATWG: ".." pops an empty segment when empties are kept */
        { "/api/forecasts//../ai", TENANT_ROUTE_DOTS, "/api/forecasts/ai" },
        { "/api/forecasts//../ai", TENANT_ROUTE_DOTS | TENANT_ROUTE_MERGE,
          "/api/ai" },

        /* ;params */
        { "/api;v=1/forecasts;x/ai;y=2", TENANT_ROUTE_PARAMS,
          "/api/forecasts/ai" },
        { "/api/forecasts/ai;x=1", NONE, "/api/forecasts/ai;x=1" },
        { "/api/forecasts/ai%3bx", TENANT_ROUTE_PARAMS,
          "/api/forecasts/ai" },
        { "/api/x/..;/forecasts/ai", TENANT_ROUTE_PARAMS
                                     | TENANT_ROUTE_DOTS,
          "/api/forecasts/ai" },
        { "/api/;x/ai", TENANT_ROUTE_PARAMS | TENANT_ROUTE_MERGE,
          "/api/ai" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = &cases[i];
        got = normalized(c->path, c->flags);

        if (c->want == NULL) {
            ok(got == NULL, "\"%s\" (flags %#x): above the root",
               c->path, c->flags);
            continue;
        }

        is_str(got, c->want, "\"%s\" (flags %#x) reads as \"%s\"",
               c->path, c->flags, c->want);
    }

    {
        size_t          len;
        unsigned char   out[16];

        ok(tenant_route_normalize(S("/a%00b"), ALL, out, &len) == 0
           && len == 4 && memcmp(out, "/a\0b", 4) == 0,
           "%%00 decodes to a NUL inside the segment");
    }

    /* the output never needs more than len + 1 bytes */

    {
        size_t          len, n;
        unsigned        f;
        unsigned char  *out;

        static const char  *worst[] = {
            "a", "a/b", "%2f%2f%2f", "%5c", "\\\\", "x%2F", ";", "",
        };

        for (n = 0; n < sizeof(worst) / sizeof(worst[0]); n++) {
            for (f = 0; f <= ALL; f++) {
                out = malloc(strlen(worst[n]) + 1);
                if (out == NULL) {
                    abort();
                }

                if (tenant_route_normalize(S(worst[n]), f, out, &len) == 0
                    && len > strlen(worst[n]) + 1)
                {
                    ok(0, "\"%s\" flags %#x: %zu bytes", worst[n], f, len);
                }

                free(out);
            }
        }

        ok(1, "outputs fit in len + 1 bytes (under valgrind/ASan: exact)");
    }
}


static void
test_match(void)
{
    size_t  i;

    static const struct {
        const char  *prefix;
        const char  *path;
        int          want;
    } cases[] = {
        { "/api/forecasts/ai", "/api/forecasts/ai", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai/", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai/run", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai.json", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai;x=1", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai ", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai~", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai%2f", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai?", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai#x", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai\\x", 1 },
        { "/api/forecasts/ai", "/api/forecasts/ai\001", 1 },
        { "/api/forecasts/ai", "/api/forecasts/aircraft", 0 },
        { "/api/forecasts/ai", "/api/forecasts/air", 0 },
        { "/api/forecasts/ai", "/api/forecasts/ai-v2", 0 },
        { "/api/forecasts/ai", "/api/forecasts/ai_x", 0 },
        { "/api/forecasts/ai", "/api/forecasts/ai9", 0 },
        { "/api/forecasts/ai", "/api/forecasts/ai\xc3\xa9", 0 },
        { "/api/forecasts/ai", "/api/forecasts", 0 },
        { "/api/forecasts/ai", "/api/forecasts/", 0 },
        { "/api/forecasts/ai", "/api/forecastsx/ai", 0 },
        { "/api/forecasts/ai", "/api/forecasts.json/ai", 0 },
        { "/api/forecasts/ai", "/x/api/forecasts/ai", 0 },
        { "/api/forecasts/ai", "/", 0 },
        { "/", "/", 1 },
        { "/", "/anything/at/all", 1 },
        { "/api", "/api", 1 },
        { "/api", "/apis", 0 },
        { "/api", "/api.v1/x", 1 },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        is_int(tenant_route_match(S(cases[i].prefix), S(cases[i].path)),
               cases[i].want, "%s %s \"%s\"", cases[i].prefix,
               cases[i].want ? "matches" : "does not match", cases[i].path);
    }
}


/*
 * The variants of /api/forecasts/ai an attacker would try: each must be
 * refused to a starter tenant (route 0, or TENANT_ROUTE_INVALID) and let
 * through for a professional one; the negatives at the end are not
 * gated at all.
 */

static void
test_variants(void)
{
    int               f, starter, professional;
    size_t            i;
    unsigned char    *buf;
    char              err[256];
    tenant_route_t    route;
    const tenant_tier_t  *st, *pro;

    static const route_variant_t  cases[] = {
        { "/api/forecasts/ai", 0, -1 },
        { "/api/forecasts/ai/", 0, -1 },
        { "/api/forecasts/AI", 0, -1 },
        { "/API/Forecasts/Ai", 0, -1 },
        { "/api/forecasts/ai/run", 0, -1 },
        { "/api/forecasts/ai.json", 0, -1 },
        { "/api/forecasts/ai;x=1", 0, -1 },
        { "/api;x/forecasts;y/ai", 0, -1 },
        { "/api//forecasts//ai", 0, -1 },
        { "/api/forecasts/./ai", 0, -1 },
        { "/api/x/../forecasts/ai", 0, -1 },
        { "/api/x/%2e%2e/forecasts/ai", 0, -1 },
        { "/api/forecasts/%61i", 0, -1 },
        { "/api/forecasts/a%49", 0, -1 },
        { "/api/forecasts/%2561i", -1, -1 },   /* decoded once: "%61i" */
        { "/api%2fforecasts/ai", 0, -1 },
        { "/api%2Fforecasts%2Fai", 0, -1 },
        { "/api%5cforecasts%5cai", 0, -1 },
        { "/api\\forecasts\\ai", 0, -1 },
        { "/api/forecasts/ai%2F", 0, -1 },
        { "/api/forecasts/ai%20", 0, -1 },
        { "/api/forecasts/ai%00", 0, -1 },
        { "/api/forecasts/ai%3F", 0, -1 },
        { "/api/forecasts/ai%23", 0, -1 },
        { "/api/forecasts/ai#x", 0, -1 },
        { "/api/forecasts/ai#/../../products", 0, -1 },
        { "/api/forecasts/ai/../../products", 0, -1 },
        { "/api/forecasts/ai/..%2f..%2fproducts", 0, -1 },
        { "/api/forecasts//../ai", 0, -1 },
        { "/api/x/..;/forecasts/ai", 0, -1 },
        { "/api/products/..%5c..%5c..%5c..", TENANT_ROUTE_INVALID, -1 },
        { "/api/forecasts/aircraft", -1, -1 },
        { "/api/forecasts/air", -1, -1 },
        { "/api/forecasts", -1, -1 },
        { "/api/forecasts/", -1, -1 },
        { "/api/forecasts/ai-v2", -1, -1 },
        { "/api/products", -1, -1 },
        { "/api/products.json", -1, -1 },
        { "/api/forecasts/x/../air", -1, -1 },
    };

    if (tenant_route_prefix(&route, S("/api/forecasts/ai"), err,
                            sizeof(err)) != 0)
    {
        printf("Bail out! prefix: %s\n", err);
        exit(1);
    }

    f = tenant_tiers_feature(&tiers, "ai_forecasting", 14);
    route.feature = f;

    st = tenant_tiers_find(&tiers, "starter", 7);
    pro = tenant_tiers_find(&tiers, "professional", 12);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf = malloc(strlen(cases[i].path) + 1);
        if (buf == NULL) {
            abort();
        }

        starter = tenant_route_denied(&route, 1, st, S(cases[i].path), buf);
        professional = tenant_route_denied(&route, 1, pro, S(cases[i].path),
                                           buf);

        is_int(starter, cases[i].starter, "starter %s \"%s\"",
               cases[i].starter == 0 ? "refused"
               : cases[i].starter == -1 ? "admitted" : "refused (invalid)",
               cases[i].path);
        is_int(professional, cases[i].professional,
               "professional admitted \"%s\"", cases[i].path);

        /* no tier at all (an unknown one): refused like starter */
        is_int(tenant_route_denied(&route, 1, NULL, S(cases[i].path), buf),
               cases[i].starter, "... and a tenant without a tier alike");

        free(buf);
    }
}


/* Several routes: the first one (in order) the tier lacks is named. */

static void
test_order(void)
{
    char             err[256];
    unsigned char    buf[64];
    tenant_route_t   routes[3];
    const tenant_tier_t  *st, *pro, *ent;

    if (tenant_route_prefix(&routes[0], S("/api/settings/sso"), err,
                            sizeof(err)) != 0
        || tenant_route_prefix(&routes[1], S("/api/working-capital"), err,
                               sizeof(err)) != 0
        || tenant_route_prefix(&routes[2], S("/api"), err,
                               sizeof(err)) != 0)
    {
        printf("Bail out! prefix: %s\n", err);
        exit(1);
    }

    routes[0].feature = tenant_tiers_feature(&tiers, "sso", 3);
    routes[1].feature = tenant_tiers_feature(&tiers, "working_capital", 15);
    routes[2].feature = tenant_tiers_feature(&tiers, "dashboard", 9);

    st = tenant_tiers_find(&tiers, "starter", 7);
    pro = tenant_tiers_find(&tiers, "professional", 12);
    ent = tenant_tiers_find(&tiers, "enterprise", 10);

    is_int(tenant_route_denied(routes, 3, st, S("/api/settings/sso"), buf),
           0, "starter, sso route: the sso route");
    is_int(tenant_route_denied(routes, 3, pro, S("/API/Settings/SSO/"),
                               buf),
           0, "professional, sso route: the sso route");
    is_int(tenant_route_denied(routes, 3, ent, S("/api/settings/sso"),
                               buf),
           -1, "enterprise: every feature");
    is_int(tenant_route_denied(routes, 3, st,
                               S("/api/working-capital/x"), buf),
           1, "starter, working capital: the second route");
    is_int(tenant_route_denied(routes, 3, pro,
                               S("/api/working-capital/x"), buf),
           -1, "professional, working capital: admitted");
    is_int(tenant_route_denied(routes, 3, pro, S("/api/..%2f.."), buf),
           TENANT_ROUTE_INVALID,
           "professional lacks sso: a path above the root is invalid");
    is_int(tenant_route_denied(routes, 3, ent, S("/api/..%2f.."), buf),
           -1, "enterprise lacks nothing: not looked at");
    is_int(tenant_route_denied(routes, 0, st, S("/api/..%2f.."), buf),
           -1, "no routes: nothing to refuse");
}


/* The path as read with flags, in a static buffer; NULL above the root. */

static const char *
normalized(const char *path, unsigned flags)
{
    size_t                len;
    static unsigned char  out[256];

    if (tenant_route_normalize(S(path), flags, out, &len) != 0) {
        return NULL;
    }

    out[len] = '\0';

    return (const char *) out;
}
