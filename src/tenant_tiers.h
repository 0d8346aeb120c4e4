/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Subscription tiers and their feature sets, as declared by the
 * tenant_tier directive, in declaration order (cheapest first).
 */

#ifndef _TENANT_TIERS_H_INCLUDED_
#define _TENANT_TIERS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TENANT_TIERS_MAX          16
#define TENANT_FEATURES_MAX       64
#define TENANT_NAME_MAX           48      /* tier and feature names */


typedef struct {
    char         name[TENANT_NAME_MAX + 1];
    size_t       name_len;
    uint64_t     features;        /* bit i: feature i of the table */
    unsigned     all;             /* features=* : every feature */
} tenant_tier_t;


typedef struct {
    tenant_tier_t   tiers[TENANT_TIERS_MAX];
    size_t          ntiers;

    char            features[TENANT_FEATURES_MAX][TENANT_NAME_MAX + 1];
    size_t          feature_len[TENANT_FEATURES_MAX];
    size_t          nfeatures;
} tenant_tiers_t;


/*
 * Adds a tier.  spec is the value of features=: a comma-separated list of
 * feature names ([a-z0-9_] 1..48 bytes each), where "*" means every
 * feature (it may be combined with names, which then become known
 * features).  An empty spec is a tier without features.  Names are
 * [a-z0-9_-] 1..48 bytes.  Duplicate tier names, bad names, too many tiers
 * or features: -1 with a one-line reason in err.  0 on success.
 */
int tenant_tiers_add(tenant_tiers_t *t, const char *name, size_t name_len,
    const char *spec, size_t spec_len, char *err, size_t errlen);

/* Index of a feature some tier lists by name, or -1. */
int tenant_tiers_feature(const tenant_tiers_t *t, const char *name,
    size_t len);

/* The tier of that name (exact, case-sensitive), or NULL. */
const tenant_tier_t *tenant_tiers_find(const tenant_tiers_t *t,
    const char *name, size_t len);

/* 1 if the tier has feature index f, else 0. */
int tenant_tier_has(const tenant_tier_t *tier, int f);

/* The first declared tier that has feature f, or NULL. */
const tenant_tier_t *tenant_tiers_lowest_with(const tenant_tiers_t *t,
    int f);


#endif /* _TENANT_TIERS_H_INCLUDED_ */
