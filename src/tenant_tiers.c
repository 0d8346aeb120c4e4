/*
 * Copyright (C) ngx_tenant_module authors
 */


#include <stdio.h>
#include <string.h>

#include "tenant_tiers.h"


#define TENANT_TIERS_ERR_NAME_MAX  TENANT_NAME_MAX


static int tenant_tiers_valid_name(const char *name, size_t len,
    int allow_dash);
static int tenant_tiers_register(tenant_tiers_t *t, const char *name,
    size_t len);
static void tenant_tiers_printable(char *dst, const char *src, size_t len);
static void tenant_tiers_error(char *err, size_t errlen, const char *what,
    const char *name, size_t len, const char *why);


int
tenant_tiers_add(tenant_tiers_t *t, const char *name, size_t name_len,
    const char *spec, size_t spec_len, char *err, size_t errlen)
{
    int             f;
    size_t          i, start, saved;
    tenant_tier_t   tier;

    if (!tenant_tiers_valid_name(name, name_len, 1)) {
        tenant_tiers_error(err, errlen, "invalid tier name", name, name_len,
                           " (expected [a-z0-9_-], 1 to 48 bytes)");
        return -1;
    }

    if (tenant_tiers_find(t, name, name_len) != NULL) {
        tenant_tiers_error(err, errlen, "duplicate tier", name, name_len,
                           "");
        return -1;
    }

    if (t->ntiers >= TENANT_TIERS_MAX) {
        tenant_tiers_error(err, errlen, "cannot add tier", name, name_len,
                           ": too many tiers (at most 16)");
        return -1;
    }

    memset(&tier, 0, sizeof(tenant_tier_t));
    memcpy(tier.name, name, name_len);
    tier.name_len = name_len;

    /*
     * features registered by this spec are appended to the table;
     * on error they are dropped again, so a failed add changes nothing
     */

    saved = t->nfeatures;

    start = 0;

    for (i = 0; spec_len != 0 && i <= spec_len; i++) {

        /* spec[start .. i) is one element when i is at a comma or the end */

        if (i < spec_len && spec[i] != ',') {
            continue;
        }

        if (i - start == 1 && spec[start] == '*') {
            tier.all = 1;
            start = i + 1;
            continue;
        }

        if (!tenant_tiers_valid_name(&spec[start], i - start, 0)) {
            tenant_tiers_error(err, errlen, "invalid feature name",
                               &spec[start], i - start,
                               " (expected [a-z0-9_], 1 to 48 bytes, "
                               "or \"*\")");
            goto failed;
        }

        f = tenant_tiers_register(t, &spec[start], i - start);

        if (f < 0) {
            tenant_tiers_error(err, errlen, "cannot add feature",
                               &spec[start], i - start,
                               ": too many features (at most 64)");
            goto failed;
        }

        tier.features |= (uint64_t) 1 << f;

        start = i + 1;
    }

    t->tiers[t->ntiers++] = tier;

    return 0;

failed:

    for (i = saved; i < t->nfeatures; i++) {
        memset(t->features[i], 0, TENANT_NAME_MAX + 1);
        t->feature_len[i] = 0;
    }

    t->nfeatures = saved;

    return -1;
}


int
tenant_tiers_feature(const tenant_tiers_t *t, const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < t->nfeatures; i++) {
        if (t->feature_len[i] == len
            && memcmp(t->features[i], name, len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


const tenant_tier_t *
tenant_tiers_find(const tenant_tiers_t *t, const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < t->ntiers; i++) {
        if (t->tiers[i].name_len == len
            && memcmp(t->tiers[i].name, name, len) == 0)
        {
            return &t->tiers[i];
        }
    }

    return NULL;
}


int
tenant_tier_has(const tenant_tier_t *tier, int f)
{
    if (tier == NULL || f < 0 || f >= TENANT_FEATURES_MAX) {
        return 0;
    }

    if (tier->all) {
        return 1;
    }

    return (int) ((tier->features >> f) & 1);
}


const tenant_tier_t *
tenant_tiers_lowest_with(const tenant_tiers_t *t, int f)
{
    size_t  i;

    if (f < 0 || (size_t) f >= t->nfeatures) {
        return NULL;
    }

    for (i = 0; i < t->ntiers; i++) {
        if (tenant_tier_has(&t->tiers[i], f)) {
            return &t->tiers[i];
        }
    }

    /* not reached: a feature is registered by the tier that lists it,
     * and a failed tier add unregisters what it registered */

    return NULL;
}


static int
tenant_tiers_valid_name(const char *name, size_t len, int allow_dash)
{
    size_t         i;
    unsigned char  c;

    if (name == NULL || len == 0 || len > TENANT_NAME_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) name[i];

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
            continue;
        }

        if (c == '-' && allow_dash) {
            continue;
        }

        return 0;
    }

    return 1;
}


/* The index of a (valid) feature name, appended if new; -1 if full. */

static int
tenant_tiers_register(tenant_tiers_t *t, const char *name, size_t len)
{
    int  f;

    f = tenant_tiers_feature(t, name, len);

    if (f >= 0) {
        return f;
    }

    if (t->nfeatures >= TENANT_FEATURES_MAX) {
        return -1;
    }

    memcpy(t->features[t->nfeatures], name, len);
    t->features[t->nfeatures][len] = '\0';
    t->feature_len[t->nfeatures] = len;

    return (int) t->nfeatures++;
}


/*
 * Copies at most TENANT_TIERS_ERR_NAME_MAX bytes of a name into dst as a
 * NUL-terminated string ("..." after a longer one), with bytes that are
 * not printable ASCII (and '"') replaced by '?', so that a bad name cannot
 * break the log line it ends up in.
 */

static void
tenant_tiers_printable(char *dst, const char *src, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (src == NULL) {
        len = 0;
    }

    if (len > TENANT_TIERS_ERR_NAME_MAX) {
        memcpy(&dst[TENANT_TIERS_ERR_NAME_MAX], "...", sizeof("..."));
        len = TENANT_TIERS_ERR_NAME_MAX;

    } else {
        dst[len] = '\0';
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) src[i];
        dst[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char) c : '?';
    }
}


/* err: <what> "<name>"<why> */

static void
tenant_tiers_error(char *err, size_t errlen, const char *what,
    const char *name, size_t len, const char *why)
{
    char  buf[TENANT_TIERS_ERR_NAME_MAX + sizeof("...")];

    if (err == NULL || errlen == 0) {
        return;
    }

    tenant_tiers_printable(buf, name, len);

    snprintf(err, errlen, "%s \"%s\"%s", what, buf, why);
}
