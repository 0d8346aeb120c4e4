/*
 * Copyright (C) ngx_tenant_module authors
 *
 * jansson's allocation failures become a 400-class parse error; they are
 * provoked by t/unit/test_alloc.c.
 */


#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "tenant_problem.h"
#include "tenant_admin.h"
#include "tenant_json.h"


#define TENANT_ADMIN_JSON_FLAGS                                              \
    (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

#define TENANT_ADMIN_REQUIRED     "is required"
#define TENANT_ADMIN_STRING       "must be a string"
#define TENANT_ADMIN_EMPTY        "must not be empty"
#define TENANT_ADMIN_TOO_LONG     "is too long"
#define TENANT_ADMIN_BAD_UTF8     "is not valid UTF-8"
#define TENANT_ADMIN_CONTROL      "must not contain control characters"
#define TENANT_ADMIN_SLUG         "must match ^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
#define TENANT_ADMIN_ORG_ID       "must be visible ASCII characters only"
#define TENANT_ADMIN_TIER         "is not a configured tier"
#define TENANT_ADMIN_EMAIL        "is not an email address"
#define TENANT_ADMIN_TRIAL_DAYS_R "must be an integer from 0 to 365"
#define TENANT_ADMIN_STATUS                                                  \
    "must be one of active, trial, past_due, suspended, cancelled, expired"
#define TENANT_ADMIN_TIMESTAMP                                               \
    "must be null or an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.fff]Z or "  \
    "+HH:MM or -HH:MM)"
#define TENANT_ADMIN_RATE_LIMIT                                              \
    "must be null or an integer from 1 to 100000000"
#define TENANT_ADMIN_UNKNOWN      "unknown member"
#define TENANT_ADMIN_NO_MEMBER                                               \
    "must have at least one of subscriptionTier, subscriptionStatus, "       \
    "trialEndsAt, rateLimitOverride"
#define TENANT_ADMIN_MORE         "has more errors than listed"

/* RFC 5321: at most 64 bytes before the '@' */
#define TENANT_ADMIN_EMAIL_LOCAL_MAX  64


static json_t *tenant_admin_load(const unsigned char *body, size_t len,
    tenant_admin_errors_t *errs);
static int tenant_admin_string(json_t *obj, const char *field,
    const char **s, size_t *len, tenant_admin_errors_t *errs);
static void tenant_admin_set(tenant_admin_errors_t *errs, const char *field,
    const char *reason, char *dst, const char *s, size_t len);
static void tenant_admin_unknown(json_t *obj, const char *const *known,
    tenant_admin_errors_t *errs);
static const char *tenant_admin_check_name(const char *s, size_t len);
static const char *tenant_admin_check_slug(const char *s, size_t len);
static const char *tenant_admin_check_org_id(const char *s, size_t len);
static const char *tenant_admin_check_tier(const char *s, size_t len,
    const tenant_tiers_t *tiers);
static const char *tenant_admin_check_email(const char *s, size_t len);
static const char *tenant_admin_check_status(const char *s, size_t len);
static const char *tenant_admin_check_timestamp(const char *s, size_t len);
static int tenant_admin_email_valid(const unsigned char *s, size_t len);
static int tenant_admin_dots_valid(const unsigned char *s, size_t len);
static int tenant_admin_timestamp_valid(const unsigned char *s, size_t len);
static int tenant_admin_digits(const unsigned char *s, size_t n, int *v);
static size_t tenant_admin_utf8(const unsigned char *s, size_t len,
    uint32_t *cp);
static size_t tenant_admin_out(char *dst, size_t n, const char *s,
    size_t len);


static const char *const  tenant_admin_create_members[] = {
    "name", "slug", "clerkOrganizationId", "subscriptionTier", "ownerEmail",
    "trialDays", NULL
};

static const char *const  tenant_admin_patch_members[] = {
    "subscriptionTier", "subscriptionStatus", "trialEndsAt",
    "rateLimitOverride", NULL
};

static const char *const  tenant_admin_statuses[] = {
    "active", "trial", "past_due", "suspended", "cancelled", "expired", NULL
};


int
tenant_admin_parse_create(const unsigned char *body, size_t len,
    const tenant_tiers_t *tiers, tenant_admin_create_t *out,
    tenant_admin_errors_t *errs)
{
    size_t       n;
    json_t      *root, *v;
    json_int_t   days;
    const char  *s;

    memset(out, 0, sizeof(tenant_admin_create_t));

    errs->n = 0;

    root = tenant_admin_load(body, len, errs);
    if (root == NULL) {
        return -1;
    }

    out->trial_days = TENANT_ADMIN_TRIAL_DAYS;

    if (tenant_admin_string(root, "name", &s, &n, errs)) {
        tenant_admin_set(errs, "name", tenant_admin_check_name(s, n),
                         out->name, s, n);
    }

    if (tenant_admin_string(root, "slug", &s, &n, errs)) {
        tenant_admin_set(errs, "slug", tenant_admin_check_slug(s, n),
                         out->slug, s, n);
    }

    if (tenant_admin_string(root, "clerkOrganizationId", &s, &n, errs)) {
        tenant_admin_set(errs, "clerkOrganizationId",
                         tenant_admin_check_org_id(s, n), out->org_id, s, n);
    }

    if (tenant_admin_string(root, "subscriptionTier", &s, &n, errs)) {
        tenant_admin_set(errs, "subscriptionTier",
                         tenant_admin_check_tier(s, n, tiers), out->tier,
                         s, n);
    }

    if (tenant_admin_string(root, "ownerEmail", &s, &n, errs)) {
        tenant_admin_set(errs, "ownerEmail", tenant_admin_check_email(s, n),
                         out->email, s, n);
    }

    v = json_object_get(root, "trialDays");

    if (v != NULL) {
        days = json_is_integer(v) ? json_integer_value(v) : -1;

        if (days < 0 || days > TENANT_ADMIN_TRIAL_DAYS_MAX) {
            tenant_admin_error_add(errs, "trialDays",
                                   TENANT_ADMIN_TRIAL_DAYS_R);

        } else {
            out->trial_days = (int) days;
        }
    }

    tenant_admin_unknown(root, tenant_admin_create_members, errs);

    json_decref(root);

    if (errs->n) {
        memset(out, 0, sizeof(tenant_admin_create_t));
        return -1;
    }

    return 0;
}


int
tenant_admin_parse_patch(const unsigned char *body, size_t len,
    const tenant_tiers_t *tiers, tenant_admin_patch_t *out,
    tenant_admin_errors_t *errs)
{
    size_t        n;
    json_t       *root, *v;
    json_int_t    limit;
    const char   *s, *reason;

    memset(out, 0, sizeof(tenant_admin_patch_t));

    errs->n = 0;

    root = tenant_admin_load(body, len, errs);
    if (root == NULL) {
        return -1;
    }

    if (json_object_get(root, "subscriptionTier") == NULL
        && json_object_get(root, "subscriptionStatus") == NULL
        && json_object_get(root, "trialEndsAt") == NULL
        && json_object_get(root, "rateLimitOverride") == NULL)
    {
        tenant_admin_error_add(errs, "body", TENANT_ADMIN_NO_MEMBER);
    }

    if (json_object_get(root, "subscriptionTier") != NULL
        && tenant_admin_string(root, "subscriptionTier", &s, &n, errs))
    {
        reason = tenant_admin_check_tier(s, n, tiers);
        tenant_admin_set(errs, "subscriptionTier", reason, out->tier, s, n);
        out->has_tier = (reason == NULL);
    }

    if (json_object_get(root, "subscriptionStatus") != NULL
        && tenant_admin_string(root, "subscriptionStatus", &s, &n, errs))
    {
        reason = tenant_admin_check_status(s, n);
        tenant_admin_set(errs, "subscriptionStatus", reason, out->status,
                         s, n);
        out->has_status = (reason == NULL);
    }

    v = json_object_get(root, "trialEndsAt");

    if (json_is_null(v)) {
        out->has_trial_ends_at = 1;

    } else if (json_is_string(v)) {
        s = json_string_value(v);
        n = json_string_length(v);

        reason = tenant_admin_check_timestamp(s, n);
        tenant_admin_set(errs, "trialEndsAt", reason, out->trial_ends_at,
                         s, n);
        out->has_trial_ends_at = (reason == NULL);

    } else if (v != NULL) {
        tenant_admin_error_add(errs, "trialEndsAt", TENANT_ADMIN_TIMESTAMP);
    }

    v = json_object_get(root, "rateLimitOverride");

    if (json_is_null(v)) {
        out->has_rate_limit = 1;
        out->rate_limit = -1;

    } else if (v != NULL) {
        limit = json_is_integer(v) ? json_integer_value(v) : 0;

        if (limit < 1 || limit > TENANT_ADMIN_RATE_LIMIT_MAX) {
            tenant_admin_error_add(errs, "rateLimitOverride",
                                   TENANT_ADMIN_RATE_LIMIT);

        } else {
            out->has_rate_limit = 1;
            out->rate_limit = (long long) limit;
        }
    }

    tenant_admin_unknown(root, tenant_admin_patch_members, errs);

    json_decref(root);

    if (errs->n) {
        out->has_tier = 0;
        out->has_status = 0;
        out->has_trial_ends_at = 0;
        out->has_rate_limit = 0;
        return -1;
    }

    return 0;
}


void
tenant_admin_error_add(tenant_admin_errors_t *errs, const char *field,
    const char *reason)
{
    tenant_admin_error_t  *e;

    if (errs->n < TENANT_ADMIN_MAX_ERRORS) {
        e = &errs->e[errs->n++];
        e->field = field;
        e->reason = reason;
        return;
    }

    /* one too many: the last entry says that the list is incomplete */

    e = &errs->e[TENANT_ADMIN_MAX_ERRORS - 1];
    e->field = "body";
    e->reason = TENANT_ADMIN_MORE;
}


size_t
tenant_admin_errors_json(char *dst, const tenant_admin_errors_t *errs)
{
    size_t       i, n, count;
    const char  *field, *reason;

    /* the cap and the NULL tests are defensive: tenant_admin_error_add()
     * keeps n within the cap and sets both strings */

    count = errs ? errs->n : 0;

    if (count > TENANT_ADMIN_MAX_ERRORS) {
        count = TENANT_ADMIN_MAX_ERRORS;
    }

    n = tenant_admin_out(dst, 0, "[", 1);

    for (i = 0; i < count; i++) {
        field = errs->e[i].field ? errs->e[i].field : "";
        reason = errs->e[i].reason ? errs->e[i].reason : "";

        if (i) {
            n = tenant_admin_out(dst, n, ",", 1);
        }

        n = tenant_admin_out(dst, n, "{\"field\":\"", 10);
        n += tenant_json_escape(dst ? dst + n : NULL, field, strlen(field));
        n = tenant_admin_out(dst, n, "\",\"reason\":\"", 12);
        n += tenant_json_escape(dst ? dst + n : NULL, reason,
                                strlen(reason));
        n = tenant_admin_out(dst, n, "\"}", 2);
    }

    return tenant_admin_out(dst, n, "]", 1);
}


int
tenant_admin_is_uuid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (s == NULL || len != 36) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }

            continue;
        }

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


/*
 * The body as a JSON object, or NULL with the reason in errs.  Strings
 * may hold NUL (\u0000) so that the member checks, which all measure by
 * length, can name the field; jansson refuses invalid UTF-8, lone
 * surrogates, duplicate names, nesting deeper than 2048 and integers
 * beyond 64 bits.
 */

static json_t *
tenant_admin_load(const unsigned char *body, size_t len,
    tenant_admin_errors_t *errs)
{
    json_t        *root;
    const char    *reason;
    json_error_t   e;

    if (body == NULL || len == 0) {
        tenant_admin_error_add(errs, "body", "is empty");
        return NULL;
    }

    root = tenant_json_loadb((const char *) body, len, TENANT_ADMIN_JSON_FLAGS,
                             &e);

    if (root == NULL) {

        switch (json_error_code(&e)) {

        case json_error_invalid_utf8:
            reason = TENANT_ADMIN_BAD_UTF8;
            break;

        case json_error_duplicate_key:
            reason = "must not repeat a member name";
            break;

        case json_error_numeric_overflow:
            reason = "has a number out of range";
            break;

        case json_error_stack_overflow:
            reason = "is nested too deeply";
            break;

        case json_error_out_of_memory:
            reason = "could not be parsed (out of memory)";
            break;

        default:
            reason = "is not JSON";
        }

        tenant_admin_error_add(errs, "body", reason);
        return NULL;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        tenant_admin_error_add(errs, "body", "must be a JSON object");
        return NULL;
    }

    return root;
}


/*
 * The string member field of obj: 1 with *s and *len set, or 0 with an
 * error (absent, or not a string).
 */

static int
tenant_admin_string(json_t *obj, const char *field, const char **s,
    size_t *len, tenant_admin_errors_t *errs)
{
    json_t  *v;

    v = json_object_get(obj, field);

    if (v == NULL) {
        tenant_admin_error_add(errs, field, TENANT_ADMIN_REQUIRED);
        return 0;
    }

    if (!json_is_string(v)) {
        tenant_admin_error_add(errs, field, TENANT_ADMIN_STRING);
        return 0;
    }

    *s = json_string_value(v);
    *len = json_string_length(v);

    return 1;
}


/* The checked string into dst, or the error: the check bounds len. */

static void
tenant_admin_set(tenant_admin_errors_t *errs, const char *field,
    const char *reason, char *dst, const char *s, size_t len)
{
    if (reason != NULL) {
        tenant_admin_error_add(errs, field, reason);
        return;
    }

    memcpy(dst, s, len);
    dst[len] = '\0';
}


/* An error for every member of obj not in known, in the body's order. */

static void
tenant_admin_unknown(json_t *obj, const char *const *known,
    tenant_admin_errors_t *errs)
{
    char         *name;
    size_t        i, len;
    json_t       *v;
    const char   *key;

    json_object_foreach(obj, key, v) {

        for (i = 0; known[i] != NULL; i++) {
            if (strcmp(key, known[i]) == 0) {
                break;
            }
        }

        if (known[i] != NULL) {
            continue;
        }

        if (errs->n >= TENANT_ADMIN_MAX_ERRORS) {
            tenant_admin_error_add(errs, "body", TENANT_ADMIN_MORE);
            return;
        }

        /*
         * the first TENANT_ADMIN_FIELD_MAX bytes, back to the start of
         * the character they cut (keys are valid UTF-8 without NUL)
         */

        for (len = 0; len <= TENANT_ADMIN_FIELD_MAX && key[len]; len++) {
            /* void */
        }

        if (len > TENANT_ADMIN_FIELD_MAX) {
            len = TENANT_ADMIN_FIELD_MAX;

            /* back to a lead byte; len > 0 is defensive: a valid key
             * starts with one */

            while (len > 0 && ((unsigned char) key[len] & 0xc0) == 0x80) {
                len--;
            }
        }

        name = errs->names[errs->n];
        memcpy(name, key, len);
        name[len] = '\0';

        tenant_admin_error_add(errs, name, TENANT_ADMIN_UNKNOWN);
    }
}


static const char *
tenant_admin_check_name(const char *s, size_t len)
{
    size_t                n, i;
    uint32_t              cp;
    const unsigned char  *p;

    if (len == 0) {
        return TENANT_ADMIN_EMPTY;
    }

    if (len > TENANT_ADMIN_NAME_MAX) {
        return TENANT_ADMIN_TOO_LONG;
    }

    p = (const unsigned char *) s;

    for (i = 0; i < len; i += n) {
        n = tenant_admin_utf8(&p[i], len - i, &cp);

        /* jansson validated the string: defensive (see the callee) */

        if (n == 0) {
            return TENANT_ADMIN_BAD_UTF8;
        }

        /* C0, DEL and C1 */

        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
            return TENANT_ADMIN_CONTROL;
        }
    }

    return NULL;
}


/* ^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$, as the tenants table checks it */

static const char *
tenant_admin_check_slug(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len < 3 || len > TENANT_ADMIN_SLUG_MAX
        || s[0] == '-' || s[len - 1] == '-')
    {
        return TENANT_ADMIN_SLUG;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
        {
            return TENANT_ADMIN_SLUG;
        }
    }

    return NULL;
}


static const char *
tenant_admin_check_org_id(const char *s, size_t len)
{
    if (len == 0) {
        return TENANT_ADMIN_EMPTY;
    }

    if (len > TENANT_ORG_ID_MAX) {
        return TENANT_ADMIN_TOO_LONG;
    }

    if (!tenant_org_id_valid((const unsigned char *) s, len)) {
        return TENANT_ADMIN_ORG_ID;
    }

    return NULL;
}


static const char *
tenant_admin_check_tier(const char *s, size_t len,
    const tenant_tiers_t *tiers)
{
    if (tiers == NULL || len > TENANT_NAME_MAX
        || tenant_tiers_find(tiers, s, len) == NULL)
    {
        return TENANT_ADMIN_TIER;
    }

    return NULL;
}


static const char *
tenant_admin_check_email(const char *s, size_t len)
{
    if (len > TENANT_ADMIN_EMAIL_MAX) {
        return TENANT_ADMIN_TOO_LONG;
    }

    if (!tenant_admin_email_valid((const unsigned char *) s, len)) {
        return TENANT_ADMIN_EMAIL;
    }

    return NULL;
}


static const char *
tenant_admin_check_status(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; tenant_admin_statuses[i] != NULL; i++) {
        if (strlen(tenant_admin_statuses[i]) == len
            && memcmp(tenant_admin_statuses[i], s, len) == 0)
        {
            return NULL;
        }
    }

    return TENANT_ADMIN_STATUS;
}


static const char *
tenant_admin_check_timestamp(const char *s, size_t len)
{
    if (!tenant_admin_timestamp_valid((const unsigned char *) s, len)) {
        return TENANT_ADMIN_TIMESTAMP;
    }

    return NULL;
}


/*
 * local@domain, deliberately narrower than RFC 5322: visible ASCII only,
 * exactly one '@', no specials ()<>,;:\"[] (no quoted local parts, no
 * address lists), a local part of 1..64 bytes, a domain of letters,
 * digits, '-' and '.' with at least one dot; neither part starts or ends
 * with a dot or has two in a row.  len is at most 254.
 */

static int
tenant_admin_email_valid(const unsigned char *s, size_t len)
{
    int            dot;
    size_t         i, at;
    unsigned char  c;

    at = len;

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c <= 0x20 || c >= 0x7f || strchr("()<>,;:\\\"[]", c) != NULL) {
            return 0;
        }

        if (c == '@') {
            if (at != len) {
                return 0;
            }

            at = i;
        }
    }

    if (at == len || at == 0 || at > TENANT_ADMIN_EMAIL_LOCAL_MAX
        || !tenant_admin_dots_valid(s, at)
        || !tenant_admin_dots_valid(&s[at + 1], len - at - 1))
    {
        return 0;
    }

    dot = 0;

    for (i = at + 1; i < len; i++) {
        c = s[i];

        if (c == '.') {
            dot = 1;
            continue;
        }

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-'))
        {
            return 0;
        }
    }

    return dot;
}


/* 1 if s is not empty, neither starts nor ends with '.' and has no "..". */

static int
tenant_admin_dots_valid(const unsigned char *s, size_t len)
{
    size_t  i;

    if (len == 0 || s[0] == '.' || s[len - 1] == '.') {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (s[i] == '.' && s[i - 1] == '.') {
            return 0;
        }
    }

    return 1;
}


/* YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM), each part in range */

static int
tenant_admin_timestamp_valid(const unsigned char *s, size_t len)
{
    int     year, month, day, hour, minute, second, mday, oh, om;
    size_t  i, start;

    static const int  days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (len < sizeof("YYYY-MM-DDTHH:MM:SSZ") - 1
        || len > TENANT_ADMIN_TIMESTAMP_MAX)
    {
        return 0;
    }

    if (!tenant_admin_digits(&s[0], 4, &year) || s[4] != '-'
        || !tenant_admin_digits(&s[5], 2, &month) || s[7] != '-'
        || !tenant_admin_digits(&s[8], 2, &day) || s[10] != 'T'
        || !tenant_admin_digits(&s[11], 2, &hour) || s[13] != ':'
        || !tenant_admin_digits(&s[14], 2, &minute) || s[16] != ':'
        || !tenant_admin_digits(&s[17], 2, &second))
    {
        return 0;
    }

    if (year < 1 || month < 1 || month > 12 || day < 1
        || hour > 23 || minute > 59 || second > 59)
    {
        return 0;
    }

    mday = days[month - 1];

    if (month == 2
        && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
    {
        mday = 29;
    }

    if (day > mday) {
        return 0;
    }

    i = 19;

    if (s[i] == '.') {
        start = ++i;

        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }

        if (i == start || i - start > 9) {
            return 0;
        }
    }

    if (i == len) {
        return 0;                               /* the zone is required */
    }

    if (s[i] == 'Z') {
        return i + 1 == len;
    }

    if ((s[i] != '+' && s[i] != '-') || len - i != sizeof("+HH:MM") - 1) {
        return 0;
    }

    return tenant_admin_digits(&s[i + 1], 2, &oh) && s[i + 3] == ':'
           && tenant_admin_digits(&s[i + 4], 2, &om) && oh <= 23
           && om <= 59;
}


/* n decimal digits as *v; 0 if any is not a digit. */

static int
tenant_admin_digits(const unsigned char *s, size_t n, int *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }

        *v = *v * 10 + (s[i] - '0');
    }

    return 1;
}


/*
 * The length of the UTF-8 character at s (len > 0) and its code point,
 * or 0 if it is ill-formed (overlong, a surrogate, above U+10FFFF,
 * truncated).  Its only input, a string from a parsed body, was already
 * validated by jansson, so the ill-formed branches are not reached; they
 * keep the function correct on its own.
 */

static size_t
tenant_admin_utf8(const unsigned char *s, size_t len, uint32_t *cp)
{
    size_t    need, k;
    uint32_t  c, min;

    c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;

    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        c &= 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if (len <= need) {
        return 0;
    }

    for (k = 1; k <= need; k++) {
        if ((s[k] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (s[k] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    *cp = c;

    return need + 1;
}


/* Appends len bytes of s at dst + n unless dst is NULL; the new length. */

static size_t
tenant_admin_out(char *dst, size_t n, const char *s, size_t len)
{
    if (dst != NULL) {
        memcpy(dst + n, s, len);
    }

    return n + len;
}
