/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: tenant_feature_route's prefixes and the readings of a
 * request path (src/tenant_route.h).  The input is a prefix, a newline,
 * then a path (no newline: the whole input is the path, and the prefix is
 * "/api/forecasts/ai").
 *
 * Checks, abort() on violation:
 *   - a prefix accepted is canonical (lower case, no trailing '/') and
 *     accepted again unchanged; a refused one explains itself in one
 *     printable line;
 *   - under every one of the 32 readings, the normalized path fits in
 *     len + 1 bytes (an exact heap buffer: ASan), starts with '/', has no
 *     upper case ASCII, no '\' when '\' separates, no ';' when params are
 *     cut, no "." or ".." segment when dots are resolved, no empty
 *     segment when they are merged; without '%', '\' and '#' in it, it
 *     reads the same again;
 *   - tenant_route_match() agrees with a segment-by-segment reference;
 *   - tenant_route_denied() agrees with trying all 32 readings (the
 *     readings it skips as making no difference never match), does not
 *     depend on case, and refuses nothing to a tier with the feature.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tenant_route.h"
#include "tenant_tiers.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_prefix(tenant_route_t *route, const unsigned char *p,
    size_t len);
static void fuzz_readings(const tenant_route_t *route,
    const unsigned char *path, size_t len);
static void fuzz_check_output(const unsigned char *out, size_t len,
    unsigned flags);
static int fuzz_match(const tenant_route_t *route, const unsigned char *s,
    size_t len);
static void fuzz_denied(tenant_route_t *route, const unsigned char *path,
    size_t len);


static tenant_tiers_t  fuzz_tiers;
static int             fuzz_ready;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char             err[256];
    size_t           i;
    unsigned char   *path;
    tenant_route_t   route;

    if (!fuzz_ready) {
        if (tenant_tiers_add(&fuzz_tiers, "starter", 7, "dashboard", 9,
                             err, sizeof(err)) != 0
            || tenant_tiers_add(&fuzz_tiers, "professional", 12,
                                "dashboard,ai_forecasting", 24, err,
                                sizeof(err)) != 0)
        {
            abort();
        }

        fuzz_ready = 1;
    }

    memset(&route, 0, sizeof(route));

    for (i = 0; i < size && data[i] != '\n'; i++) {
        /* void */
    }

    if (i < size) {
        fuzz_prefix(&route, data, i);
        i++;

    } else {
        if (tenant_route_prefix(&route, (unsigned char *) "/api/forecasts/ai",
                                17, err, sizeof(err)) != 0)
        {
            abort();
        }

        i = 0;
    }

    /* the path in a heap buffer of its own size: reads past it are seen */

    path = malloc(size - i + 1);
    if (path == NULL) {
        abort();
    }

    memcpy(path, data + i, size - i);

    if (route.len) {
        fuzz_readings(&route, path, size - i);
        fuzz_denied(&route, path, size - i);
    }

    free(path);

    return 0;
}


static void
fuzz_prefix(tenant_route_t *route, const unsigned char *p, size_t len)
{
    char            err[256];
    size_t          i;
    tenant_route_t  again;

    err[0] = '\0';

    if (tenant_route_prefix(route, p, len, err, sizeof(err)) != 0) {
        if (strncmp(err, "the route prefix ", 17) != 0) {
            abort();
        }

        for (i = 0; err[i]; i++) {
            if (err[i] < 0x20 || err[i] > 0x7e) {
                abort();
            }
        }

        memset(route, 0, sizeof(tenant_route_t));
        return;
    }

    if (route->len == 0 || route->prefix[0] != '/'
        || route->len > TENANT_ROUTE_PREFIX_MAX
        || (route->len > 1 && route->prefix[route->len - 1] == '/'))
    {
        abort();
    }

    for (i = 0; i < route->len; i++) {
        if (route->prefix[i] >= 'A' && route->prefix[i] <= 'Z') {
            abort();
        }
    }

    if (tenant_route_prefix(&again, route->prefix, route->len, err,
                            sizeof(err)) != 0
        || again.len != route->len
        || memcmp(again.prefix, route->prefix, route->len) != 0)
    {
        abort();
    }
}


static void
fuzz_readings(const tenant_route_t *route, const unsigned char *path,
    size_t len)
{
    size_t          n, n2;
    unsigned        flags;
    unsigned char  *out, *again;

    out = malloc(len + 1);
    again = malloc(len + 2);

    if (out == NULL || again == NULL) {
        abort();
    }

    for (flags = 0; flags <= TENANT_ROUTE_ALL; flags++) {

        if (tenant_route_normalize(path, len, flags, out, &n) != 0) {
            if (!(flags & TENANT_ROUTE_DOTS)) {
                abort();                /* only ".." climbs */
            }

            continue;
        }

        if (n == 0 || n > len + 1) {
            abort();
        }

        fuzz_check_output(out, n, flags);

        if (tenant_route_match(route->prefix, route->len, out, n)
            != fuzz_match(route, out, n))
        {
            abort();
        }

        if (memchr(out, '%', n) || memchr(out, '\\', n)
            || memchr(out, '#', n))
        {
            continue;
        }

        if (tenant_route_normalize(out, n, flags, again, &n2) != 0
            || n2 != n || memcmp(out, again, n) != 0)
        {
            abort();
        }
    }

    free(out);
    free(again);
}


static void
fuzz_check_output(const unsigned char *out, size_t len, unsigned flags)
{
    size_t  i, seg;

    if (out[0] != '/') {
        abort();
    }

    for (i = 0; i < len; i++) {
        if (out[i] >= 'A' && out[i] <= 'Z') {
            abort();
        }

        if (out[i] == '\\' && (flags & TENANT_ROUTE_SLASH)) {
            abort();
        }

        if (out[i] == ';' && (flags & TENANT_ROUTE_PARAMS)) {
            abort();
        }
    }

    if (len == 1) {
        return;
    }

    /* segments: out[seg .. i) between slashes */

    seg = 1;

    for (i = 1; i <= len; i++) {
        if (i < len && out[i] != '/') {
            continue;
        }

        if ((flags & TENANT_ROUTE_MERGE) && i == seg) {
            abort();
        }

        if ((flags & TENANT_ROUTE_DOTS)
            && ((i - seg == 1 && out[seg] == '.')
                || (i - seg == 2 && out[seg] == '.' && out[seg + 1] == '.')))
        {
            abort();
        }

        seg = i + 1;
    }
}


/*
 * The reference: the prefix's segments are the path's first ones, the
 * last one equal, or followed in the path's segment by a byte that cannot
 * continue a name.
 */

static int
fuzz_match(const tenant_route_t *route, const unsigned char *s, size_t len)
{
    size_t                a, b, pa, pb;
    unsigned char         c;
    const unsigned char  *p;

    p = route->prefix;

    if (route->len == 1) {
        return 1;
    }

    pa = 1;
    a = 1;

    for ( ;; ) {
        if (a > len) {
            return 0;                   /* the path has fewer segments */
        }

        for (pb = pa; pb < route->len && p[pb] != '/'; pb++) { /* void */ }
        for (b = a; b < len && s[b] != '/'; b++) { /* void */ }

        if (pb == route->len) {
            /* the prefix's last segment */

            if (b - a < pb - pa || memcmp(&s[a], &p[pa], pb - pa) != 0) {
                return 0;
            }

            if (b - a == pb - pa) {
                return 1;
            }

            c = s[a + pb - pa];

            return !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                     || c == '_' || c == '-' || c >= 0x80);
        }

        if (b - a != pb - pa || memcmp(&s[a], &p[pa], pb - pa) != 0) {
            return 0;
        }

        pa = pb + 1;
        a = b + 1;
    }
}


static void
fuzz_denied(tenant_route_t *route, const unsigned char *path, size_t len)
{
    int                   got, want, upper, invalid;
    size_t                i, n;
    unsigned              flags;
    unsigned char        *buf, *up;
    const tenant_tier_t  *st, *pro;

    route->feature = tenant_tiers_feature(&fuzz_tiers, "ai_forecasting", 14);
    st = tenant_tiers_find(&fuzz_tiers, "starter", 7);
    pro = tenant_tiers_find(&fuzz_tiers, "professional", 12);

    buf = malloc(len + 1);
    up = malloc(len + 1);

    if (buf == NULL || up == NULL) {
        abort();
    }

    got = tenant_route_denied(route, 1, st, path, len, buf);

    /* all 32 readings */

    want = -1;
    invalid = 0;

    for (flags = 0; flags <= TENANT_ROUTE_ALL; flags++) {
        if (tenant_route_normalize(path, len, flags, buf, &n) != 0) {
            invalid = 1;

        } else if (tenant_route_match(route->prefix, route->len, buf, n)) {
            want = 0;
        }
    }

    if (want == -1 && invalid) {
        want = TENANT_ROUTE_INVALID;
    }

    if (got != want) {
        abort();
    }

    for (i = 0; i < len; i++) {
        up[i] = (path[i] >= 'a' && path[i] <= 'z') ? (path[i] & ~0x20)
                                                   : path[i];
    }

    upper = tenant_route_denied(route, 1, st, up, len, buf);

    if (upper != got) {
        abort();
    }

    if (tenant_route_denied(route, 1, pro, path, len, buf) != -1) {
        abort();
    }

    free(buf);
    free(up);
}
