/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Feature routes (tenant_feature_route): a path prefix that needs a
 * feature, matched on the request's path the way any backend could read
 * it, whichever nginx location matched.  nginx-agnostic, fuzzed.
 *
 * A backend may or may not decode %2F and treat '\' as '/', cut the path
 * at '#', resolve "." and "..", strip ";params" from segments, merge
 * repeated slashes.  The path is normalized under each of these readings
 * (the flags below) that makes a difference for it, and a route applies
 * when it matches under any one of them.  Every reading percent-decodes
 * once (invalid escapes stay literal) and folds ASCII case.
 */

#ifndef _TENANT_ROUTE_H_INCLUDED_
#define _TENANT_ROUTE_H_INCLUDED_


#include <stddef.h>

#include "tenant_tiers.h"


#define TENANT_ROUTE_PREFIX_MAX   256

/* the readings of a path */
#define TENANT_ROUTE_SLASH        0x01  /* %2F, %5C and '\' separate */
#define TENANT_ROUTE_FRAGMENT     0x02  /* '#' ends the path */
#define TENANT_ROUTE_DOTS         0x04  /* "." and ".." are resolved */
#define TENANT_ROUTE_PARAMS       0x08  /* ";..." is cut from segments */
#define TENANT_ROUTE_MERGE        0x10  /* empty segments are dropped */
#define TENANT_ROUTE_ALL          0x1f

/* tenant_route_denied(): some reading climbs above the root */
#define TENANT_ROUTE_INVALID      -2


typedef struct {
    unsigned char   prefix[TENANT_ROUTE_PREFIX_MAX + 1];
    size_t          len;
    int             feature;          /* index in the tiers' table */
    char            feature_name[TENANT_NAME_MAX + 1];
    size_t          feature_name_len;
} tenant_route_t;


/*
 * A configured prefix: '/' then segments of [A-Za-z0-9._~-], none empty,
 * "." or "..", an optional trailing '/', at most TENANT_ROUTE_PREFIX_MAX
 * bytes.  Writes its canonical form (lower case, no trailing '/'; "/"
 * for the root) to route->prefix.  Returns 0, or -1 with a one-line
 * reason in err.
 */
int tenant_route_prefix(tenant_route_t *route, const unsigned char *in,
    size_t len, char *err, size_t errlen);

/* The readings (TENANT_ROUTE_*) that can make a difference for path. */
unsigned tenant_route_flags(const unsigned char *path, size_t len);

/*
 * The path (without its query string) read as flags say, into out
 * (len + 1 bytes): decoded once, case-folded, '/' first.  Returns 0, or
 * -1 when ".." climbs above the root (TENANT_ROUTE_DOTS only).
 */
int tenant_route_normalize(const unsigned char *path, size_t len,
    unsigned flags, unsigned char *out, size_t *out_len);

/*
 * 1 if a normalized path is under a canonical prefix: equal to it, or
 * continuing it with '/', or with a byte that cannot continue a name
 * after its last segment (".json", ";x", " ", "%", "~", NUL, ...; not
 * [a-z0-9_-] nor bytes >= 0x80: "/ai" is not "/aircraft").
 */
int tenant_route_match(const unsigned char *prefix, size_t plen,
    const unsigned char *path, size_t len);

/*
 * The first of routes[0 .. n) that matches path under some reading and
 * whose feature tier lacks (a NULL tier has none): its index.  Else
 * TENANT_ROUTE_INVALID when some reading climbs above the root, else -1.
 * buf: len + 1 bytes of scratch.
 */
int tenant_route_denied(const tenant_route_t *routes, size_t n,
    const tenant_tier_t *tier, const unsigned char *path, size_t len,
    unsigned char *buf);


#endif /* _TENANT_ROUTE_H_INCLUDED_ */
