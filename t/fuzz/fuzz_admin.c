/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: the admin API's bodies (src/tenant_admin.c).  The
 * first byte of the input chooses the parser (bit 0: PATCH, else POST)
 * and whether a tier table is given (bit 1: none); the rest is the body.
 * The input is also tried as a tenant id (tenant_admin_is_uuid()).
 *
 * Checks, abort() on violation: an accepted body gives values that pass
 * the documented rules, checked here independently; a refused one lists
 * 1 .. TENANT_ADMIN_MAX_ERRORS errors with a field and a reason and
 * leaves nothing filled in; the errors array is valid JSON, as jansson
 * reads it back, of the same length when measured and when written, and
 * so is the problem+json body it goes into.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tenant_admin.h"
#include "tenant_problem.h"
#include "tenant_request.h"
#include "tenant_tiers.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_create(const uint8_t *data, size_t size,
    const tenant_tiers_t *tiers);
static void fuzz_create_echo(const uint8_t *data, size_t size,
    const tenant_admin_create_t *out);
static void fuzz_patch(const uint8_t *data, size_t size,
    const tenant_tiers_t *tiers);
static void fuzz_errors(const tenant_admin_errors_t *errs);
static void fuzz_uuid(const uint8_t *data, size_t size);
static int fuzz_utf8_text(const char *s, size_t len);
static int fuzz_slug(const char *s, size_t len);
static int fuzz_email(const char *s, size_t len);
static int fuzz_all_zero(const void *p, size_t len);


static tenant_tiers_t  fuzz_tiers;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char  err[128];

    (void) argc;
    (void) argv;

    if (tenant_tiers_add(&fuzz_tiers, "starter", 7, "dashboard", 9, err,
                         sizeof(err))
        != 0
        || tenant_tiers_add(&fuzz_tiers, "professional", 12,
                            "dashboard,ai_forecasting", 24, err, sizeof(err))
           != 0
        || tenant_tiers_add(&fuzz_tiers, "enterprise", 10, "*", 1, err,
                            sizeof(err))
           != 0)
    {
        abort();
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const tenant_tiers_t  *tiers;

    fuzz_uuid(data, size);

    if (size == 0) {
        return 0;
    }

    tiers = (data[0] & 0x02) ? NULL : &fuzz_tiers;

    if (data[0] & 0x01) {
        fuzz_patch(data + 1, size - 1, tiers);

    } else {
        fuzz_create(data + 1, size - 1, tiers);
    }

    return 0;
}


static void
fuzz_create(const uint8_t *data, size_t size, const tenant_tiers_t *tiers)
{
    int                     rc;
    size_t                  n;
    tenant_admin_create_t   out;
    tenant_admin_errors_t   errs;

    memset(&errs, 0xa5, sizeof(tenant_admin_errors_t));

    rc = tenant_admin_parse_create(data, size, tiers, &out, &errs);

    if (rc == -1) {
        if (errs.n == 0 || errs.n > TENANT_ADMIN_MAX_ERRORS
            || !fuzz_all_zero(&out, sizeof(tenant_admin_create_t)))
        {
            abort();
        }

        fuzz_errors(&errs);
        return;
    }

    if (rc != 0 || errs.n != 0) {
        abort();
    }

    n = strlen(out.name);

    if (n == 0 || n > TENANT_ADMIN_NAME_MAX || !fuzz_utf8_text(out.name, n))
    {
        abort();
    }

    if (!fuzz_slug(out.slug, strlen(out.slug))) {
        abort();
    }

    if (!tenant_org_id_valid((unsigned char *) out.org_id,
                             strlen(out.org_id)))
    {
        abort();
    }

    if (tiers == NULL
        || tenant_tiers_find(tiers, out.tier, strlen(out.tier)) == NULL)
    {
        abort();
    }

    if (!fuzz_email(out.email, strlen(out.email))) {
        abort();
    }

    if (out.trial_days < 0 || out.trial_days > TENANT_ADMIN_TRIAL_DAYS_MAX) {
        abort();
    }

    fuzz_create_echo(data, size, &out);
}


/* The accepted body, read by jansson: the same strings. */

static void
fuzz_create_echo(const uint8_t *data, size_t size,
    const tenant_admin_create_t *out)
{
    size_t       i;
    json_t      *root, *v;
    const char  *values[5];

    static const char  *names[] = {
        "name", "slug", "clerkOrganizationId", "subscriptionTier",
        "ownerEmail"
    };

    values[0] = out->name;
    values[1] = out->slug;
    values[2] = out->org_id;
    values[3] = out->tier;
    values[4] = out->email;

    root = json_loadb((const char *) data, size,
                      JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

    if (!json_is_object(root) || json_object_size(root) < 5
        || json_object_size(root) > 6)
    {
        abort();
    }

    for (i = 0; i < 5; i++) {
        v = json_object_get(root, names[i]);

        if (!json_is_string(v)
            || json_string_length(v) != strlen(values[i])
            || strcmp(json_string_value(v), values[i]) != 0)
        {
            abort();
        }
    }

    json_decref(root);
}


static void
fuzz_patch(const uint8_t *data, size_t size, const tenant_tiers_t *tiers)
{
    int                    rc;
    size_t                 i, n;
    tenant_admin_patch_t   out;
    tenant_admin_errors_t  errs;

    static const char  *statuses[] = {
        "active", "trial", "past_due", "suspended", "cancelled", "expired"
    };

    memset(&errs, 0xa5, sizeof(tenant_admin_errors_t));

    rc = tenant_admin_parse_patch(data, size, tiers, &out, &errs);

    if (rc == -1) {
        if (errs.n == 0 || errs.n > TENANT_ADMIN_MAX_ERRORS
            || out.has_tier || out.has_status || out.has_trial_ends_at
            || out.has_rate_limit)
        {
            abort();
        }

        fuzz_errors(&errs);
        return;
    }

    if (rc != 0 || errs.n != 0) {
        abort();
    }

    if (!out.has_tier && !out.has_status && !out.has_trial_ends_at
        && !out.has_rate_limit)
    {
        abort();
    }

    if (out.has_tier
        && (tiers == NULL
            || tenant_tiers_find(tiers, out.tier, strlen(out.tier)) == NULL))
    {
        abort();
    }

    if (out.has_status) {
        for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
            if (strcmp(out.status, statuses[i]) == 0) {
                break;
            }
        }

        if (i == sizeof(statuses) / sizeof(statuses[0])) {
            abort();
        }
    }

    if (out.has_trial_ends_at) {
        n = strlen(out.trial_ends_at);

        /* "" (null) or YYYY-MM-DDTHH:MM:SS...: the shape only */

        if (n != 0
            && (n < 20 || n > TENANT_ADMIN_TIMESTAMP_MAX
                || out.trial_ends_at[4] != '-' || out.trial_ends_at[7] != '-'
                || out.trial_ends_at[10] != 'T'
                || out.trial_ends_at[13] != ':'
                || out.trial_ends_at[16] != ':'))
        {
            abort();
        }
    }

    if (out.has_rate_limit
        && out.rate_limit != -1
        && (out.rate_limit < 1
            || out.rate_limit > TENANT_ADMIN_RATE_LIMIT_MAX))
    {
        abort();
    }
}


/* The errors as JSON, alone and in a problem body: valid, as measured. */

static void
fuzz_errors(const tenant_admin_errors_t *errs)
{
    char              *buf, *body;
    size_t             i, n, need, len;
    json_t            *root, *e, *v;
    json_error_t       error;
    tenant_problem_t   p;

    for (i = 0; i < errs->n; i++) {
        /* an unknown member "" is named "" */

        if (errs->e[i].field == NULL || errs->e[i].reason == NULL
            || errs->e[i].reason[0] == '\0'
            || strlen(errs->e[i].field) > TENANT_ADMIN_FIELD_MAX)
        {
            abort();
        }
    }

    n = tenant_admin_errors_json(NULL, errs);

    buf = malloc(n);
    if (buf == NULL) {
        abort();
    }

    if (tenant_admin_errors_json(buf, errs) != n) {
        abort();
    }

    root = json_loadb(buf, n, 0, &error);
    if (!json_is_array(root) || json_array_size(root) != errs->n) {
        abort();
    }

    json_array_foreach(root, i, e) {
        v = json_object_get(e, "field");

        if (!json_is_string(v) || !json_is_string(json_object_get(e, "reason"))
            || json_object_size(e) != 2)
        {
            abort();
        }

        /* a field name is copied as it was, cut at a character */

        if (strcmp(json_string_value(v), errs->e[i].field) != 0) {
            abort();
        }
    }

    json_decref(root);

    /* the 400 response that carries it */

    memset(&p, 0, sizeof(tenant_problem_t));
    p.type_base = "https://capliquify.com/problems/";
    p.type_base_len = strlen(p.type_base);
    p.code = "validation_failed";
    p.status = 400;
    p.title = "Invalid request body";
    p.members[0].name = "errors";
    p.members[0].value = buf;
    p.members[0].value_len = n;
    p.members[0].raw = 1;
    p.nmembers = 1;

    need = tenant_problem_render(NULL, 0, &p);

    body = malloc(need);
    if (body == NULL) {
        abort();
    }

    len = tenant_problem_render(body, need, &p);

    if (len != need) {
        abort();
    }

    root = json_loadb(body, len, 0, &error);
    if (!json_is_object(root)
        || json_array_size(json_object_get(root, "errors")) != errs->n)
    {
        abort();
    }

    json_decref(root);
    free(body);
    free(buf);
}


/* tenant_admin_is_uuid() against a plain reading of 8-4-4-4-12 */

static void
fuzz_uuid(const uint8_t *data, size_t size)
{
    int     want;
    char    c;
    size_t  i;

    want = (size == 36);

    for (i = 0; want && i < size; i++) {
        c = (char) data[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            want = (c == '-');

        } else {
            want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        }
    }

    if (tenant_admin_is_uuid((const char *) data, size) != want) {
        abort();
    }
}


/* Well-formed UTF-8 without C0, DEL or C1: jansson says what UTF-8 is. */

static int
fuzz_utf8_text(const char *s, size_t len)
{
    size_t   i;
    json_t  *j;

    j = json_stringn(s, len);
    if (j == NULL) {
        return 0;
    }

    json_decref(j);

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
            return 0;
        }

        /* U+0080 .. U+009F are C2 80 .. C2 9F */

        if ((unsigned char) s[i] == 0xc2 && i + 1 < len
            && (unsigned char) s[i + 1] <= 0x9f)
        {
            return 0;
        }
    }

    return 1;
}


static int
fuzz_slug(const char *s, size_t len)
{
    size_t  i;

    if (len < 3 || len > 63 || s[0] == '-' || s[len - 1] == '-') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static int
fuzz_email(const char *s, size_t len)
{
    size_t       i;
    const char  *at, *dot;

    if (len == 0 || len > TENANT_ADMIN_EMAIL_MAX) {
        return 0;
    }

    at = memchr(s, '@', len);

    if (at == NULL || at == s || at - s > 64
        || memchr(at + 1, '@', s + len - at - 1) != NULL)
    {
        return 0;
    }

    dot = memchr(at + 1, '.', s + len - at - 1);

    if (dot == NULL || dot == at + 1 || s[len - 1] == '.'
        || strstr(s, "..") != NULL || s[0] == '.' || at[-1] == '.')
    {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] <= ' ' || (unsigned char) s[i] >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


static int
fuzz_all_zero(const void *p, size_t len)
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
