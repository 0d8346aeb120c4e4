/*
 * Copyright (C) ngx_tenant_module authors
 */


#include <string.h>

#include "tenant_request.h"


static int tenant_is_token68(unsigned char ch);
static int tenant_header_prefix(const unsigned char *name, size_t len,
    const char *want, size_t want_len);


int
tenant_bearer_token(const unsigned char *auth, size_t len,
    const unsigned char **token, size_t *token_len)
{
    size_t                i, start, end;
    static const char     scheme[] = "bearer";

    if (len < sizeof(scheme)) {
        return -1;
    }

    for (i = 0; i < sizeof(scheme) - 1; i++) {
        if ((auth[i] | 0x20) != (unsigned char) scheme[i]) {
            return -1;
        }
    }

    if (auth[i] != ' ') {
        return -1;
    }

    while (i < len && auth[i] == ' ') {
        i++;
    }

    start = i;

    while (i < len && tenant_is_token68(auth[i])) {
        i++;
    }

    /* 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */

    if (i == start) {
        return -1;
    }

    while (i < len && auth[i] == '=') {
        i++;
    }

    end = i;

    while (i < len && auth[i] == ' ') {
        i++;
    }

    if (i != len) {
        return -1;
    }

    *token = auth + start;
    *token_len = end - start;

    return 0;
}


int
tenant_cookie_value(const unsigned char *cookie, size_t len,
    const char *name, size_t name_len, const unsigned char **value,
    size_t *value_len)
{
    int                    found;
    size_t                 i, n, v, vend;

    found = 0;
    i = 0;

    while (i < len) {

        while (i < len && (cookie[i] == ' ' || cookie[i] == '\t'
                           || cookie[i] == ';'))
        {
            i++;
        }

        n = i;

        while (i < len && cookie[i] != '=' && cookie[i] != ';') {
            i++;
        }

        if (i == len || cookie[i] == ';') {
            continue;               /* a crumb without '=' */
        }

        /* cookie[i] == '=' */

        v = i + 1;
        vend = v;

        while (vend < len && cookie[vend] != ';') {
            vend++;
        }

        i = vend;

        /* names are case-sensitive (RFC 6265 section 5.4) */

        if (v - 1 - n != name_len
            || memcmp(cookie + n, name, name_len) != 0)
        {
            continue;
        }

        while (vend > v && (cookie[vend - 1] == ' '
                            || cookie[vend - 1] == '\t'))
        {
            vend--;
        }

        if (vend - v >= 2 && cookie[v] == '"' && cookie[vend - 1] == '"') {
            v++;
            vend--;
        }

        if (!found) {
            *value = cookie + v;
            *value_len = vend - v;
            found = 1;
            continue;
        }

        /* the same name again: only another copy of the value is fine */

        if (vend - v != *value_len || memcmp(cookie + v, *value, vend - v))
        {
            return TENANT_COOKIE_AMBIGUOUS;
        }
    }

    return found ? 0 : -1;
}


int
tenant_org_id_valid(const unsigned char *id, size_t len)
{
    size_t  i;

    if (len == 0 || len > TENANT_ORG_ID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (id[i] < 0x21 || id[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


int
tenant_header_name_is(const unsigned char *name, size_t len,
    const char *want, size_t want_len)
{
    return len == want_len && tenant_header_prefix(name, len, want, want_len);
}


int
tenant_header_reserved(const unsigned char *name, size_t len)
{
    return tenant_header_prefix(name, len, "x-tenant-",
                                sizeof("x-tenant-") - 1)
           || tenant_header_prefix(name, len, "x-user-",
                                   sizeof("x-user-") - 1)
           || tenant_header_name_is(name, len, "x-org-role",
                                    sizeof("x-org-role") - 1)
           || tenant_header_name_is(name, len, "x-organization-id",
                                    sizeof("x-organization-id") - 1);
}


/* Whether name starts with want (lowercase, '-'): any case, '_' as '-'. */

static int
tenant_header_prefix(const unsigned char *name, size_t len,
    const char *want, size_t want_len)
{
    size_t         i;
    unsigned char  c;

    if (len < want_len) {
        return 0;
    }

    for (i = 0; i < want_len; i++) {
        c = name[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;

        } else if (c == '_') {
            c = '-';
        }

        if (c != (unsigned char) want[i]) {
            return 0;
        }
    }

    return 1;
}


static int
tenant_is_token68(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
        || (ch >= '0' && ch <= '9'))
    {
        return 1;
    }

    return ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '+'
           || ch == '/';
}
