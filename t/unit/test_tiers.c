/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_tiers.c: the tenant_tier directive's table.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "tenant_tiers.h"


#define ADD(t, name, spec, err)                                              \
    tenant_tiers_add(t, name, strlen(name), spec, strlen(spec), err,         \
                     sizeof(err))

#define FEATURE(t, name)                                                     \
    tenant_tiers_feature(t, name, strlen(name))

#define FIND(t, name)                                                        \
    tenant_tiers_find(t, name, strlen(name))


static const char *lowest(const tenant_tiers_t *t, const char *feature);
static void test_plans(void);
static void test_star(void);
static void test_names(void);
static void test_specs(void);
static void test_limits(void);


int
main(void)
{
    test_plans();
    test_star();
    test_names();
    test_specs();
    test_limits();

    return done_testing();
}


/* The name of the lowest tier with a feature, "(none)" or "(unknown)". */

static const char *
lowest(const tenant_tiers_t *t, const char *feature)
{
    int                   f;
    const tenant_tier_t  *tier;

    f = FEATURE(t, feature);
    if (f < 0) {
        return "(unknown)";
    }

    tier = tenant_tiers_lowest_with(t, f);

    return tier ? tier->name : "(none)";
}


static void
test_plans(void)
{
    int                   f;
    char                  err[256];
    tenant_tiers_t        t;
    const tenant_tier_t  *starter, *pro, *ent;

    memset(&t, 0, sizeof(t));

    is_int(ADD(&t, "starter", "dashboard,forecast", err), 0, "starter");
    is_int(ADD(&t, "professional", "dashboard,forecast,what_if,api", err),
           0, "professional");
    is_int(ADD(&t, "enterprise", "*", err), 0, "enterprise: every feature");

    is_int(t.ntiers, 3, "three tiers");
    is_int(t.nfeatures, 4, "four distinct features");

    is_int(FEATURE(&t, "dashboard"), 0, "features are numbered in order");
    is_int(FEATURE(&t, "forecast"), 1, "forecast is 1");
    is_int(FEATURE(&t, "what_if"), 2, "what_if is 2");
    is_int(FEATURE(&t, "api"), 3, "api is 3");
    is_int(FEATURE(&t, "sso"), -1, "sso is unknown");
    is_int(FEATURE(&t, "API"), -1, "feature names are case-sensitive");
    is_int(FEATURE(&t, "ap"), -1, "no prefix match");
    is_int(FEATURE(&t, "apix"), -1, "no longer match");
    is_int(tenant_tiers_feature(&t, "api", 2), -1, "length counts");

    starter = FIND(&t, "starter");
    pro = FIND(&t, "professional");
    ent = FIND(&t, "enterprise");

    ok(starter == &t.tiers[0], "find starter");
    ok(pro == &t.tiers[1], "find professional");
    ok(ent == &t.tiers[2], "find enterprise");
    ok(FIND(&t, "Starter") == NULL, "find is case-sensitive");
    ok(FIND(&t, "start") == NULL, "find does not match prefixes");
    ok(tenant_tiers_find(&t, "starterx", 7) == starter,
       "find uses the given length");
    ok(FIND(&t, "free") == NULL, "unknown tier");

    if (starter == NULL || pro == NULL || ent == NULL) {
        ok(0, "tiers missing, skipping the rest");
        return;
    }

    is_str(starter->name, "starter", "name is NUL-terminated");
    is_int(starter->name_len, 7, "name_len");

    f = FEATURE(&t, "what_if");
    is_int(tenant_tier_has(starter, f), 0, "starter has no what_if");
    is_int(tenant_tier_has(pro, f), 1, "professional has what_if");
    is_int(tenant_tier_has(ent, f), 1, "enterprise has what_if (*)");
    is_int(tenant_tier_has(starter, FEATURE(&t, "dashboard")), 1,
           "starter has dashboard");
    is_int(tenant_tier_has(starter, -1), 0, "feature -1: no");
    is_int(tenant_tier_has(ent, -1), 0, "feature -1: not even with *");
    is_int(tenant_tier_has(ent, TENANT_FEATURES_MAX), 0,
           "feature 64: not even with *");

    is_str(lowest(&t, "dashboard"), "starter", "dashboard from starter");
    is_str(lowest(&t, "forecast"), "starter", "forecast from starter");
    is_str(lowest(&t, "what_if"), "professional",
           "what_if from professional");
    is_str(lowest(&t, "api"), "professional", "api from professional");
    ok(tenant_tiers_lowest_with(&t, -1) == NULL, "lowest_with(-1): NULL");
    ok(tenant_tiers_lowest_with(&t, 4) == NULL,
       "lowest_with(unknown index): NULL");

    /* a feature first named after the * tier: the * tier has it too */

    is_int(ADD(&t, "custom", "sso,api", err), 0, "custom after enterprise");
    f = FEATURE(&t, "sso");
    is_int(f, 4, "sso registered by a later tier");
    is_int(tenant_tier_has(ent, f), 1, "enterprise has the later sso");
    is_int(tenant_tier_has(pro, f), 0, "professional has no sso");
    is_str(lowest(&t, "sso"), "enterprise",
           "sso: first declared tier with it is enterprise (*)");
    is_str(lowest(&t, "api"), "professional", "api still professional");
}


static void
test_star(void)
{
    int                   sso, wl, api;
    char                  err[256];
    tenant_tiers_t        t;
    const tenant_tier_t  *tier;

    memset(&t, 0, sizeof(t));

    is_int(ADD(&t, "free", "", err), 0, "empty spec: no features");
    is_int(t.tiers[0].features, 0, "free has no feature bits");
    is_int(t.tiers[0].all, 0, "free is not *");

    is_int(ADD(&t, "basic", "api", err), 0, "basic: api");
    is_int(ADD(&t, "enterprise", "*,sso,white_label", err), 0,
           "enterprise: *,sso,white_label");

    sso = FEATURE(&t, "sso");
    wl = FEATURE(&t, "white_label");
    api = FEATURE(&t, "api");

    is_int(api, 0, "api is 0");
    is_int(sso, 1, "* with names registers sso");
    is_int(wl, 2, "* with names registers white_label");

    tier = FIND(&t, "enterprise");
    ok(tier != NULL && tier->all == 1, "enterprise is *");
    is_int(tenant_tier_has(tier, api), 1, "enterprise has api");
    is_int(tenant_tier_has(tier, sso), 1, "enterprise has sso");

    tier = FIND(&t, "free");
    is_int(tenant_tier_has(tier, api), 0, "free has no api");
    ok(tenant_tiers_lowest_with(&t, api) == &t.tiers[1],
       "api from basic");
    ok(tenant_tiers_lowest_with(&t, sso) == &t.tiers[2],
       "sso from enterprise");

    is_int(ADD(&t, "all2", "sso,*", err), 0, "* after a name");
    ok(t.tiers[3].all == 1, "all2 is *");
    is_int(ADD(&t, "all3", "*,*", err), 0, "* twice");
    ok(t.tiers[4].all == 1, "all3 is *");

    is_int(ADD(&t, "dup", "api,api,sso,api", err), 0,
           "a repeated feature is fine");
    is_int(t.tiers[5].features, (1 << api) | (1 << sso),
           "and counted once");
    is_int(t.nfeatures, 3, "no new feature from the repeats");
}


static void
test_names(void)
{
    char            err[256], name[64];
    tenant_tiers_t  t;

    memset(&t, 0, sizeof(t));

    is_int(ADD(&t, "pro-2024_b", "a", err), 0, "tier names take - and _");
    is_int(ADD(&t, "0", "", err), 0, "a one-digit tier name");

    memset(name, 'x', sizeof(name));
    name[48] = '\0';
    is_int(ADD(&t, name, "", err), 0, "a 48-byte tier name");
    ok(FIND(&t, name) != NULL, "is found");
    name[48] = 'x';
    name[49] = '\0';
    err[0] = '\0';
    is_int(ADD(&t, name, "", err), -1, "a 49-byte tier name is refused");
    ok(strstr(err, "invalid tier name \"xxxxxxxx") != NULL
       && strstr(err, "xxxxxxxx...\" (") != NULL, "reason: %s", err);

    err[0] = '\0';
    is_int(ADD(&t, "", "", err), -1, "an empty tier name is refused");
    ok(err[0] != '\0', "reason: %s", err);

    is_int(ADD(&t, "Pro", "", err), -1, "uppercase tier name refused");
    is_int(ADD(&t, "pro plan", "", err), -1, "space in a tier name refused");
    is_int(ADD(&t, "pro.plan", "", err), -1, "dot in a tier name refused");
    is_int(ADD(&t, "caf\xc3\xa9", "", err), -1,
           "UTF-8 in a tier name refused");
    ok(strchr(err, '\xc3') == NULL, "the reason shows no raw 8-bit bytes");
    is_int(ADD(&t, "a\"b\nc", "", err), -1, "quote and LF refused");
    ok(strchr(err, '\n') == NULL && strstr(err, "\"a?b?c\"") != NULL,
       "the reason masks them: %s", err);
    is_int(tenant_tiers_add(&t, "pro\0x", 5, "", 0, err, sizeof(err)), -1,
           "NUL in a tier name refused");
    is_int(tenant_tiers_add(&t, NULL, 0, "", 0, err, sizeof(err)), -1,
           "NULL tier name refused");

    err[0] = '\0';
    is_int(ADD(&t, "pro-2024_b", "", err), -1, "duplicate tier refused");
    ok(strstr(err, "duplicate tier \"pro-2024_b\"") != NULL,
       "reason: %s", err);
    is_int(t.ntiers, 3, "failed adds add no tier");

    is_int(ADD(&t, "x1", "a-b", err), -1, "- in a feature name refused");
    ok(strstr(err, "invalid feature name \"a-b\"") != NULL,
       "reason: %s", err);
    is_int(ADD(&t, "x1", "Sso", err), -1, "uppercase feature refused");
    is_int(ADD(&t, "x1", "a b", err), -1, "space in a feature refused");
    is_int(ADD(&t, "x1", "a, b", err), -1, "space after a comma refused");
    is_int(ADD(&t, "x1", "**", err), -1, "** refused");
    is_int(ADD(&t, "x1", "*a", err), -1, "*a refused");

    memset(name, 'f', sizeof(name));
    name[48] = '\0';
    is_int(ADD(&t, "x1", name, err), 0, "a 48-byte feature name");
    name[48] = 'f';
    name[49] = '\0';
    is_int(ADD(&t, "x2", name, err), -1, "a 49-byte feature name refused");

    is_int(tenant_tiers_add(&t, "Bad", 3, "", 0, NULL, 0), -1,
           "refused without an err buffer");
    is_int(tenant_tiers_add(&t, "Bad", 3, "", 0, err, 1), -1,
           "refused with a 1-byte err buffer");
    is_int(err[0], '\0', "which holds just the NUL");
}


static void
test_specs(void)
{
    char            err[256];
    size_t          n;
    tenant_tiers_t  t;

    memset(&t, 0, sizeof(t));

    is_int(ADD(&t, "a", "one", err), 0, "one feature");

    err[0] = '\0';
    is_int(ADD(&t, "b", "two,,three", err), -1, "empty element refused");
    ok(strstr(err, "invalid feature name \"\"") != NULL, "reason: %s", err);
    is_int(ADD(&t, "b", ",two", err), -1, "leading comma refused");
    is_int(ADD(&t, "b", "two,", err), -1, "trailing comma refused");
    is_int(ADD(&t, "b", ",", err), -1, "a lone comma refused");

    /* a failed add registers none of the names it did parse */

    n = t.nfeatures;
    is_int(ADD(&t, "b", "two,three,BAD", err), -1, "bad name at the end");
    is_int(t.nfeatures, n, "features before it were rolled back");
    is_int(FEATURE(&t, "two"), -1, "two is not known");
    is_int(FEATURE(&t, "three"), -1, "three is not known");
    ok(FIND(&t, "b") == NULL, "tier b is not there");

    is_int(ADD(&t, "b", "two,three", err), 0, "b added after all");
    is_int(FEATURE(&t, "two"), 1, "two is 1, no gap");
    is_int(FEATURE(&t, "three"), 2, "three is 2");

    is_int(tenant_tiers_add(&t, "c", 1, "four,five", 4, err, sizeof(err)), 0,
           "spec_len limits the spec");
    is_int(FEATURE(&t, "four"), 3, "four known");
    is_int(FEATURE(&t, "five"), -1, "five beyond spec_len not read");

    is_int(tenant_tiers_add(&t, "d", 1, NULL, 0, err, sizeof(err)), 0,
           "NULL spec of length 0: no features");
    is_int(t.tiers[3].features, 0, "d has no features");
}


static void
test_limits(void)
{
    char            err[256], name[16], spec[64 * 8];
    size_t          i, len;
    tenant_tiers_t  t;

    memset(&t, 0, sizeof(t));

    for (i = 0; i < TENANT_TIERS_MAX; i++) {
        snprintf(name, sizeof(name), "tier%zu", i);
        if (ADD(&t, name, "", err) != 0) {
            break;
        }
    }

    is_int(i, TENANT_TIERS_MAX, "16 tiers");

    err[0] = '\0';
    is_int(ADD(&t, "tier16", "", err), -1, "a 17th tier refused");
    ok(strstr(err, "too many tiers") != NULL, "reason: %s", err);
    is_int(t.ntiers, TENANT_TIERS_MAX, "still 16 tiers");

    /* 64 features over two tiers, then one more */

    memset(&t, 0, sizeof(t));

    len = 0;
    for (i = 0; i < 40; i++) {
        len += (size_t) snprintf(spec + len, sizeof(spec) - len, "%sf%zu",
                                 i ? "," : "", i);
    }

    is_int(ADD(&t, "a", spec, err), 0, "40 features");

    len = 0;
    for (i = 30; i < 64; i++) {
        len += (size_t) snprintf(spec + len, sizeof(spec) - len, "%sf%zu",
                                 i > 30 ? "," : "", i);
    }

    is_int(ADD(&t, "b", spec, err), 0, "24 more, 10 shared: 64 in all");
    is_int(t.nfeatures, TENANT_FEATURES_MAX, "64 features");
    is_int(FEATURE(&t, "f63"), 63, "f63 is 63");
    ok(tenant_tier_has(&t.tiers[1], 63), "b has feature 63 (the top bit)");
    ok(!tenant_tier_has(&t.tiers[0], 63), "a has not");
    ok(tenant_tier_has(&t.tiers[1], 30) && tenant_tier_has(&t.tiers[0], 30),
       "both have f30");
    is_str(lowest(&t, "f63"), "b", "f63 from b");

    err[0] = '\0';
    is_int(ADD(&t, "c", "f1,f64", err), -1, "a 65th feature refused");
    ok(strstr(err, "too many features") != NULL, "reason: %s", err);
    is_int(t.nfeatures, TENANT_FEATURES_MAX, "still 64 features");
    ok(FIND(&t, "c") == NULL, "c not added");

    is_int(ADD(&t, "c", "f1,f63,*", err), 0,
           "known features only: fine at the limit");

    /* API guards: a NULL tier has no feature; errlen 0 leaves err alone */

    ok(!tenant_tier_has(NULL, 0), "NULL tier: no feature 0");
    ok(!tenant_tier_has(NULL, 63), "NULL tier: no feature 63");

    memset(err, 'X', sizeof(err));
    is_int(tenant_tiers_add(&t, "Bad", 3, "", 0, err, 0), -1,
           "errlen 0: a bad tier name still refused");
    ok(err[0] == 'X' && err[1] == 'X', "errlen 0: err not written");
    is_int(tenant_tiers_add(&t, "c", 1, "", 0, NULL, 0), -1,
           "err NULL: a duplicate still refused");
}
