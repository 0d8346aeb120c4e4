/*
 * Copyright (C) ngx_tenant_module authors
 */


#include <string.h>

#include "tenant_request.h"


static int tenant_is_token68(unsigned char ch);
static int tenant_header_prefix(const unsigned char *name, size_t len,
    const char *want, size_t want_len);
static int tenant_is_tchar(unsigned char ch);
static int tenant_is_host_char(unsigned char ch);
static int tenant_is_alnum_or(unsigned char ch, const char *more);
static int tenant_caseless_is(const unsigned char *s, size_t len,
    const char *want, size_t want_len);
static int tenant_authority(const unsigned char *a, size_t len,
    unsigned long dport, size_t *host_len, unsigned long *port);


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


int
tenant_media_type_json(const unsigned char *value, size_t len)
{
    size_t                i, name, name_len, val, val_len;
    static const char     json[] = "application/json";

    i = 0;

    while (i < len && (value[i] == ' ' || value[i] == '\t')) {
        i++;
    }

    if (len - i < sizeof(json) - 1
        || !tenant_caseless_is(&value[i], sizeof(json) - 1, json,
                               sizeof(json) - 1))
    {
        return 0;
    }

    i += sizeof(json) - 1;

    /* *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] ) OWS */

    for ( ;; ) {
        while (i < len && (value[i] == ' ' || value[i] == '\t')) {
            i++;
        }

        if (i == len) {
            return 1;
        }

        if (value[i] != ';') {
            return 0;
        }

        i++;

        while (i < len && (value[i] == ' ' || value[i] == '\t')) {
            i++;
        }

        if (i == len || value[i] == ';') {
            continue;
        }

        name = i;

        while (i < len && tenant_is_tchar(value[i])) {
            i++;
        }

        name_len = i - name;

        if (name_len == 0 || i == len || value[i] != '=') {
            return 0;
        }

        i++;

        if (i < len && value[i] == '"') {
            val = ++i;

            while (i < len && value[i] != '"') {
                if (value[i] == '\\') {
                    i++;
                }

                if (i == len
                    || (value[i] < 0x20 && value[i] != '\t')
                    || value[i] == 0x7f)
                {
                    return 0;
                }

                i++;
            }

            if (i == len) {
                return 0;
            }

            val_len = i++ - val;

        } else {
            val = i;

            while (i < len && tenant_is_tchar(value[i])) {
                i++;
            }

            val_len = i - val;

            if (val_len == 0) {
                return 0;
            }
        }

        /* a quoted "utf-8" with escapes in it is refused too: strict */

        if (tenant_caseless_is(&value[name], name_len, "charset",
                               sizeof("charset") - 1)
            && !tenant_caseless_is(&value[val], val_len, "utf-8",
                                   sizeof("utf-8") - 1))
        {
            return 0;
        }
    }
}


int
tenant_origin_is(const unsigned char *origin, size_t len,
    const unsigned char *scheme, size_t scheme_len,
    const unsigned char *host, size_t host_len)
{
    size_t          o_len, h_len;
    unsigned long   dport, o_port, h_port;

    if (tenant_caseless_is(scheme, scheme_len, "http", 4)) {
        dport = 80;

    } else if (tenant_caseless_is(scheme, scheme_len, "https", 5)) {
        dport = 443;

    } else {
        return 0;
    }

    if (len < scheme_len + 3
        || !tenant_caseless_is(origin, scheme_len, (const char *) scheme,
                               scheme_len)
        || memcmp(&origin[scheme_len], "://", 3) != 0)
    {
        return 0;
    }

    origin += scheme_len + 3;
    len -= scheme_len + 3;

    if (tenant_authority(origin, len, dport, &o_len, &o_port) != 0
        || tenant_authority(host, host_len, dport, &h_len, &h_port) != 0)
    {
        return 0;
    }

    return o_port == h_port
           && tenant_caseless_is(origin, o_len, (const char *) host, h_len);
}


/*
 * host [":" [port]] as a whole: 0 with the host's length and the port
 * (dport when there is none), or -1.  The host is a name or an address,
 * [IPv6] included; no userinfo, path, query or fragment.
 */

static int
tenant_authority(const unsigned char *a, size_t len, unsigned long dport,
    size_t *host_len, unsigned long *port)
{
    size_t          i, digits;
    unsigned long   n;

    i = 0;

    if (len && a[0] == '[') {
        for (i = 1; i < len && a[i] != ']'; i++) {
            if (!tenant_is_host_char(a[i]) && a[i] != ':') {
                return -1;
            }
        }

        if (i == len || i == 1) {
            return -1;
        }

        i++;

    } else {
        while (i < len && tenant_is_host_char(a[i])) {
            i++;
        }
    }

    if (i == 0) {
        return -1;
    }

    *host_len = i;
    *port = dport;

    if (i == len) {
        return 0;
    }

    if (a[i++] != ':') {
        return -1;
    }

    n = 0;

    for (digits = 0; i < len; i++, digits++) {
        if (a[i] < '0' || a[i] > '9' || digits == 5) {
            return -1;
        }

        n = n * 10 + (a[i] - '0');
    }

    if (n > 65535) {
        return -1;
    }

    if (digits) {
        *port = n;
    }

    return 0;
}


/* Whether len bytes of s are want, ASCII letters in any case. */

static int
tenant_caseless_is(const unsigned char *s, size_t len, const char *want,
    size_t want_len)
{
    size_t         i;
    unsigned char  c, w;

    if (len != want_len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];
        w = (unsigned char) want[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (w >= 'A' && w <= 'Z') {
            w |= 0x20;
        }

        if (c != w) {
            return 0;
        }
    }

    return 1;
}


/* RFC 9110 tchar */

static int
tenant_is_tchar(unsigned char ch)
{
    return tenant_is_alnum_or(ch, "!#$%&'*+-.^_`|~");
}


/* RFC 3986 reg-name, and the letters, digits and dots of addresses */

static int
tenant_is_host_char(unsigned char ch)
{
    return tenant_is_alnum_or(ch, "-._~%!$&'()*+,;=");
}


/* An ASCII letter or digit, or one of the characters of more. */

static int
tenant_is_alnum_or(unsigned char ch, const char *more)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
        || (ch >= '0' && ch <= '9'))
    {
        return 1;
    }

    return ch != 0 && strchr(more, ch) != NULL;
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


/*
 * A table: the bearer token (about 1 KB) is scanned on every request,
 * and the comparisons cost twice the instructions of a load.
 */

static int
tenant_is_token68(unsigned char ch)
{
    static const unsigned char  token68[256] = {
        ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['+'] = 1, ['/'] = 1,
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
        ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
        ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
        ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
        ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
        ['Y'] = 1, ['Z'] = 1,
        ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
        ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
        ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
        ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
        ['y'] = 1, ['z'] = 1
    };

    return token68[ch];
}
