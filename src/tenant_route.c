/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Feature routes: prefixes, path normalization and matching (see
 * tenant_route.h).
 */


#include <stdio.h>
#include <string.h>

#include "tenant_route.h"


static int tenant_route_segment(unsigned char *out, size_t seg, size_t *o,
    unsigned flags);
static int tenant_route_hex(unsigned char c);
static int tenant_route_name_byte(unsigned char c);


int
tenant_route_prefix(tenant_route_t *route, const unsigned char *in,
    size_t len, char *err, size_t errlen)
{
    size_t          i, seg;
    unsigned char   c;
    const char     *why;

    why = NULL;

    if (len == 0 || in[0] != '/') {
        why = "does not start with \"/\"";
        goto invalid;
    }

    if (len > TENANT_ROUTE_PREFIX_MAX) {
        why = "is longer than 256 bytes";
        goto invalid;
    }

    /* a trailing '/' says nothing more: "/a/" is "/a" */

    if (len > 1 && in[len - 1] == '/') {
        len--;
    }

    seg = 1;

    for (i = 1; i <= len; i++) {

        if (i < len && in[i] != '/') {
            c = in[i];

            if (c >= 0x80
                || !(tenant_route_name_byte(c) || c == '.' || c == '~'))
            {
                why = "has a byte other than [A-Za-z0-9._~-] in a segment";
                goto invalid;
            }

            continue;
        }

        /* in[seg .. i) is a segment */

        if (len > 1
            && (i == seg
                || (i - seg == 1 && in[seg] == '.')
                || (i - seg == 2 && in[seg] == '.' && in[seg + 1] == '.')))
        {
            why = "has an empty, \".\" or \"..\" segment";
            goto invalid;
        }

        seg = i + 1;
    }

    for (i = 0; i < len; i++) {
        c = in[i];
        route->prefix[i] = (c >= 'A' && c <= 'Z') ? (c | 0x20) : c;
    }

    route->prefix[len] = '\0';
    route->len = len;

    return 0;

invalid:

    snprintf(err, errlen, "the route prefix %s (expected \"/\" and "
             "segments of [A-Za-z0-9._~-], e.g. /api/forecasts/ai)", why);

    return -1;
}


unsigned
tenant_route_flags(const unsigned char *path, size_t len)
{
    size_t          i, dots;
    unsigned        flags, plain;
    unsigned char   c;

    flags = 0;

    /* the segment's name so far: "plain" dots only, and how many */

    dots = 0;
    plain = 1;

    for (i = 0; i <= len; i++) {
        c = (i < len) ? path[i] : '/';

        switch (c) {

        case '%':
            /* %2F and %5C, %2E, %3B */
            flags |= TENANT_ROUTE_SLASH | TENANT_ROUTE_DOTS
                     | TENANT_ROUTE_PARAMS;
            plain = 0;
            break;

        case '.':
            dots++;
            break;

        case '/':
        case '\\':
        case '#':
        case ';':
            /* where a name ends in some reading: "." or ".." before it */

            if (plain && (dots == 1 || dots == 2)) {
                flags |= TENANT_ROUTE_DOTS;
            }

            if (c == '/' || c == '\\') {
                flags |= (c == '\\') ? TENANT_ROUTE_SLASH : 0;
                dots = 0;
                plain = 1;
                break;
            }

            flags |= (c == '#') ? TENANT_ROUTE_FRAGMENT : TENANT_ROUTE_PARAMS;
            plain = 0;
            break;

        default:
            plain = 0;
        }
    }

    /*
     * Without dot segments, keeping empty segments never matches where
     * dropping them does not; with them, ".." may pop an empty segment
     * ("/a/b//../c" is "/a/b/c" to a WHATWG URL parser): both readings.
     */

    if (flags & TENANT_ROUTE_DOTS) {
        flags |= TENANT_ROUTE_MERGE;
    }

    return flags;
}


int
tenant_route_normalize(const unsigned char *path, size_t len,
    unsigned flags, unsigned char *out, size_t *out_len)
{
    int             h1, h2;
    size_t          i, o, seg;
    unsigned char   c;

    /* the root's '/' (a path a client sends starts with it) */

    i = (len && path[0] == '/') ? 1 : 0;

    out[0] = '/';
    o = 1;
    seg = 1;

    for ( /* void */ ; i < len; i++) {
        c = path[i];

        if (c == '#' && (flags & TENANT_ROUTE_FRAGMENT)) {
            break;
        }

        if (c == '%' && i + 2 < len
            && (h1 = tenant_route_hex(path[i + 1])) >= 0
            && (h2 = tenant_route_hex(path[i + 2])) >= 0)
        {
            c = (unsigned char) (h1 << 4 | h2);
            i += 2;

            if ((c == '/' || c == '\\') && !(flags & TENANT_ROUTE_SLASH)) {
                /* kept as it was sent: not a separator in this reading */
                out[o++] = '%';
                out[o++] = (c == '/') ? '2' : '5';
                out[o++] = (c == '/') ? 'f' : 'c';
                continue;
            }

        } else if (c == '\\' && !(flags & TENANT_ROUTE_SLASH)) {
            out[o++] = c;
            continue;
        }

        if (c == '/' || c == '\\') {
            if (tenant_route_segment(out, seg, &o, flags) != 0) {
                return -1;
            }

            out[o++] = '/';
            seg = o;
            continue;
        }

        out[o++] = (c >= 'A' && c <= 'Z') ? (c | 0x20) : c;
    }

    if (tenant_route_segment(out, seg, &o, flags) != 0) {
        return -1;
    }

    if (o == 0) {
        out[o++] = '/';
    }

    *out_len = o;

    return 0;
}


/*
 * Ends the segment out[seg .. *o), whose '/' is out[seg - 1]: cuts its
 * ";params", drops it when empty or ".", pops the one before for "..".
 * -1 when ".." has nothing to pop.
 */

static int
tenant_route_segment(unsigned char *out, size_t seg, size_t *o,
    unsigned flags)
{
    size_t          n;
    unsigned char  *semi;

    n = *o - seg;

    if (flags & TENANT_ROUTE_PARAMS) {
        semi = memchr(&out[seg], ';', n);
        if (semi) {
            n = semi - &out[seg];
            *o = seg + n;
        }
    }

    if (flags & TENANT_ROUTE_DOTS) {

        if (n == 1 && out[seg] == '.') {
            *o = seg - 1;
            return 0;
        }

        if (n == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            n = seg - 1;

            if (n == 0) {
                return -1;
            }

            while (out[n - 1] != '/') {
                n--;
            }

            *o = n - 1;
            return 0;
        }
    }

    if (n == 0 && (flags & TENANT_ROUTE_MERGE)) {
        *o = seg - 1;
    }

    return 0;
}


int
tenant_route_match(const unsigned char *prefix, size_t plen,
    const unsigned char *path, size_t len)
{
    if (plen == 1) {
        return 1;                                   /* "/": everything */
    }

    if (len < plen || memcmp(path, prefix, plen) != 0) {
        return 0;
    }

    if (len == plen || path[plen] == '/') {
        return 1;
    }

    return !tenant_route_name_byte(path[plen]);
}


int
tenant_route_denied(const tenant_route_t *routes, size_t n,
    const tenant_tier_t *tier, const unsigned char *path, size_t len,
    unsigned char *buf)
{
    int       found, invalid;
    size_t    i, out_len;
    unsigned  mask, v, flags;

    for (i = 0; i < n; i++) {
        if (!tenant_tier_has(tier, routes[i].feature)) {
            break;
        }
    }

    if (i == n) {
        return -1;                          /* the tier has them all */
    }

    mask = tenant_route_flags(path, len);
    found = -1;
    invalid = 0;

    /* every subset of the readings that make a difference */

    v = mask;

    for ( ;; ) {
        flags = v;

        if (!(mask & TENANT_ROUTE_MERGE)) {
            flags |= TENANT_ROUTE_MERGE;
        }

        if (tenant_route_normalize(path, len, flags, buf, &out_len) != 0) {
            invalid = 1;

        } else {
            for (i = 0; i < n && (found == -1 || i < (size_t) found); i++) {
                if (!tenant_tier_has(tier, routes[i].feature)
                    && tenant_route_match(routes[i].prefix, routes[i].len,
                                          buf, out_len))
                {
                    found = (int) i;
                    break;
                }
            }
        }

        if (v == 0 || found == 0) {
            break;                      /* all read, or none comes before */
        }

        v = (v - 1) & mask;
    }

    if (found >= 0) {
        return found;
    }

    return invalid ? TENANT_ROUTE_INVALID : -1;
}


static int
tenant_route_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* a byte that may continue a name: [A-Za-z0-9_-] and non-ASCII */

static int
tenant_route_name_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '-' || c >= 0x80;
}
