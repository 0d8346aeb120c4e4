/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The bodies of the admin API, validated before any SQL: POST
 * /api/admin/tenants (create) and PATCH /api/admin/tenants/{id}, with
 * every problem listed per field for a 400 problem+json response.
 * nginx-agnostic: jansson and fixed buffers only.
 */

#ifndef _TENANT_ADMIN_H_INCLUDED_
#define _TENANT_ADMIN_H_INCLUDED_


#include <stddef.h>

#include "tenant_request.h"
#include "tenant_tiers.h"


#define TENANT_ADMIN_MAX_ERRORS       16
#define TENANT_ADMIN_FIELD_MAX        63      /* bytes of a member name kept */

#define TENANT_ADMIN_NAME_MAX         200
#define TENANT_ADMIN_SLUG_MAX         63
#define TENANT_ADMIN_EMAIL_MAX        254
#define TENANT_ADMIN_STATUS_MAX       15
#define TENANT_ADMIN_TIMESTAMP_MAX    39

#define TENANT_ADMIN_TRIAL_DAYS       14      /* when trialDays is absent */
#define TENANT_ADMIN_TRIAL_DAYS_MAX   365
#define TENANT_ADMIN_RATE_LIMIT_MAX   100000000


typedef struct {
    const char                *field;     /* JSON member name, or "body" */
    const char                *reason;    /* a static string */
} tenant_admin_error_t;


/*
 * The problems found in a body, in a fixed order: the body itself, then
 * the known members in the order of the API, then unknown members in the
 * order of the body.  Should there be more than TENANT_ADMIN_MAX_ERRORS,
 * the last entry says so ("body": "has more errors than listed").
 *
 * The field of an unknown member points into names[] (its first
 * TENANT_ADMIN_FIELD_MAX bytes, cut at a character boundary), so the
 * errors are valid as long as this structure is.
 */

typedef struct {
    tenant_admin_error_t       e[TENANT_ADMIN_MAX_ERRORS];
    size_t                     n;

    char                       names[TENANT_ADMIN_MAX_ERRORS]
                                    [TENANT_ADMIN_FIELD_MAX + 1];
} tenant_admin_errors_t;


/*
 * A valid create body, as NUL-terminated strings (none of them can hold a
 * NUL byte):
 *   name         1..200 bytes of UTF-8 without control characters
 *   slug         ^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$
 *   org_id       tenant_org_id_valid(): 1..128 visible ASCII bytes
 *   tier         the name of a tier of the table
 *   email        local@domain, at most 254 visible ASCII bytes
 *   trial_days   0..365, TENANT_ADMIN_TRIAL_DAYS when absent
 */

typedef struct {
    char        name[TENANT_ADMIN_NAME_MAX + 1];
    char        slug[TENANT_ADMIN_SLUG_MAX + 1];
    char        org_id[TENANT_ORG_ID_MAX + 1];
    char        tier[TENANT_NAME_MAX + 1];
    char        email[TENANT_ADMIN_EMAIL_MAX + 1];
    int         trial_days;
} tenant_admin_create_t;


typedef struct {
    unsigned    has_tier:1;
    unsigned    has_status:1;
    unsigned    has_trial_ends_at:1;
    unsigned    has_rate_limit:1;

    char        tier[TENANT_NAME_MAX + 1];

    /* active, trial, past_due, suspended, cancelled or expired */
    char        status[TENANT_ADMIN_STATUS_MAX + 1];

    /*
     * "" for JSON null (clear it), else an RFC 3339 timestamp
     * YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM), every part within
     * its range (no 24:00, no leap second, no February 30)
     */
    char        trial_ends_at[TENANT_ADMIN_TIMESTAMP_MAX + 1];

    long long   rate_limit;         /* -1 for JSON null (clear); 1..1e8 */
} tenant_admin_patch_t;


/*
 * The body of POST /api/admin/tenants: a JSON object with the string
 * members name, slug, clerkOrganizationId, subscriptionTier, ownerEmail
 * and the optional integer trialDays.  Unknown members, duplicate names,
 * null and wrong types are errors.  Returns 0 with *out filled, or -1
 * with every problem in errs and *out zeroed.  tiers may be NULL: no tier
 * is then acceptable.
 */
int tenant_admin_parse_create(const unsigned char *body, size_t len,
    const tenant_tiers_t *tiers, tenant_admin_create_t *out,
    tenant_admin_errors_t *errs);

/*
 * The body of PATCH /api/admin/tenants/{id}: a JSON object with at least
 * one of subscriptionTier, subscriptionStatus, trialEndsAt (string or
 * null) and rateLimitOverride (integer or null).  Returns 0 with *out
 * filled (has_* set for the members present), or -1 with errs and no
 * has_* set.
 */
int tenant_admin_parse_patch(const unsigned char *body, size_t len,
    const tenant_tiers_t *tiers, tenant_admin_patch_t *out,
    tenant_admin_errors_t *errs);

/*
 * Appends an error, for the checks the caller makes itself (a body over
 * the configured size: "body", "is too large").  field and reason must
 * outlive errs.
 */
void tenant_admin_error_add(tenant_admin_errors_t *errs, const char *field,
    const char *reason);

/*
 * The errors as a JSON array [{"field":"slug","reason":"..."},...], every
 * string escaped by tenant_json_escape(), for a raw problem member.
 * Returns the length; with dst NULL only measures.  No NUL is written.
 */
size_t tenant_admin_errors_json(char *dst, const tenant_admin_errors_t *errs);

/* 1 if s is a canonical lowercase UUID (8-4-4-4-12 hex digits), else 0. */
int tenant_admin_is_uuid(const char *s, size_t len);


#endif /* _TENANT_ADMIN_H_INCLUDED_ */
