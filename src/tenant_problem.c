/*
 * Copyright (C) ngx_tenant_module authors
 */


#include <stdio.h>
#include <string.h>

#include "tenant_problem.h"


#define TENANT_JSON_REPLACEMENT      "\\ufffd"
#define TENANT_JSON_REPLACEMENT_LEN  (sizeof(TENANT_JSON_REPLACEMENT) - 1)


/*
 * An output cursor: with p NULL it only counts, so that the sizing pass
 * and the writing pass run the same code.
 */

typedef struct {
    char            *p;
    size_t           len;
} tenant_out_t;


static size_t tenant_utf8_char(const unsigned char *s, size_t len,
    int *valid);
static void tenant_out_raw(tenant_out_t *o, const char *s, size_t len);
static void tenant_out_string(tenant_out_t *o, const char *s, size_t len);
static void tenant_out_name(tenant_out_t *o, const char *name, int first);
static int tenant_json_integer(const char *s, size_t len);
static void tenant_problem_out(tenant_out_t *o, const tenant_problem_t *p);


size_t
tenant_problem_render(char *buf, size_t size, const tenant_problem_t *p)
{
    size_t        need;
    tenant_out_t  o;

    o.p = NULL;
    o.len = 0;

    tenant_problem_out(&o, p);

    need = o.len;

    if (buf == NULL || need > size) {
        return need;
    }

    o.p = buf;
    o.len = 0;

    tenant_problem_out(&o, p);

    return need;
}


size_t
tenant_json_escape(char *dst, const char *src, size_t len)
{
    int                   valid;
    size_t                n, i, k;
    unsigned char         c;
    const unsigned char  *s;

    static const char     hex[] = "0123456789abcdef";

    s = (const unsigned char *) src;
    n = 0;
    i = 0;

    while (i < len) {
        c = s[i];

        if (c < 0x20) {
            if (dst) {
                dst[n] = '\\';
                dst[n + 1] = 'u';
                dst[n + 2] = '0';
                dst[n + 3] = '0';
                dst[n + 4] = hex[c >> 4];
                dst[n + 5] = hex[c & 0x0f];
            }

            n += 6;
            i++;
            continue;
        }

        if (c == '"' || c == '\\') {
            if (dst) {
                dst[n] = '\\';
                dst[n + 1] = (char) c;
            }

            n += 2;
            i++;
            continue;
        }

        if (c < 0x80) {
            if (dst) {
                dst[n] = (char) c;
            }

            n++;
            i++;
            continue;
        }

        k = tenant_utf8_char(&s[i], len - i, &valid);

        if (valid) {
            if (dst) {
                memcpy(&dst[n], &s[i], k);
            }

            n += k;

        } else {
            if (dst) {
                memcpy(&dst[n], TENANT_JSON_REPLACEMENT,
                       TENANT_JSON_REPLACEMENT_LEN);
            }

            n += TENANT_JSON_REPLACEMENT_LEN;
        }

        i += k;
    }

    return n;
}


/*
 * Decodes one UTF-8 character of s (len > 0) as RFC 3629 defines it: no
 * overlong forms, no surrogates, nothing above U+10FFFF.  Returns the
 * number of bytes it takes; *valid is 0 when these bytes are ill-formed,
 * and then they are the maximal subpart of an ill-formed sequence (one
 * byte at least), which the caller replaces with a single U+FFFD, as
 * Unicode recommends (section 3.9, "U+FFFD Substitution of Maximal
 * Subparts").
 */

static size_t
tenant_utf8_char(const unsigned char *s, size_t len, int *valid)
{
    size_t         need, k;
    unsigned char  c, lo, hi;

    c = s[0];

    lo = 0x80;
    hi = 0xbf;

    /* for callers other than tenant_json_escape(), which copies ASCII
     * itself */

    if (c < 0x80) {
        *valid = 1;
        return 1;

    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 1;

    } else if (c == 0xe0) {
        need = 2;
        lo = 0xa0;                          /* no overlong forms */

    } else if (c == 0xed) {
        need = 2;
        hi = 0x9f;                          /* no surrogates */

    } else if (c >= 0xe1 && c <= 0xef) {
        need = 2;

    } else if (c == 0xf0) {
        need = 3;
        lo = 0x90;                          /* no overlong forms */

    } else if (c >= 0xf1 && c <= 0xf3) {
        need = 3;

    } else if (c == 0xf4) {
        need = 3;
        hi = 0x8f;                          /* nothing above U+10FFFF */

    } else {
        /* a continuation byte, 0xc0, 0xc1 or 0xf5 .. 0xff */
        *valid = 0;
        return 1;
    }

    for (k = 1; k <= need; k++) {

        if (k == len || s[k] < lo || s[k] > hi) {
            *valid = 0;
            return k;
        }

        lo = 0x80;
        hi = 0xbf;
    }

    *valid = 1;

    return need + 1;
}


static void
tenant_out_raw(tenant_out_t *o, const char *s, size_t len)
{
    /* (every caller passes a non-empty piece: len is defensive) */

    if (o->p && len) {
        memcpy(o->p + o->len, s, len);
    }

    o->len += len;
}


/* A JSON string: quotes around the escaped bytes of s. */

static void
tenant_out_string(tenant_out_t *o, const char *s, size_t len)
{
    tenant_out_raw(o, "\"", 1);

    if (s == NULL) {
        len = 0;
    }

    o->len += tenant_json_escape(o->p ? o->p + o->len : NULL, s, len);

    tenant_out_raw(o, "\"", 1);
}


/* A member name with its colon, after a comma unless first. */

static void
tenant_out_name(tenant_out_t *o, const char *name, int first)
{
    if (!first) {
        tenant_out_raw(o, ",", 1);
    }

    /* name is never NULL: members without a name are skipped */

    tenant_out_string(o, name, name ? strlen(name) : 0);
    tenant_out_raw(o, ":", 1);
}


/* 1 if s is a JSON integer: an optional '-' and digits, no leading 0. */

static int
tenant_json_integer(const char *s, size_t len)
{
    size_t  i;

    if (s == NULL || len == 0) {
        return 0;
    }

    i = (s[0] == '-') ? 1 : 0;

    if (i == len || (s[i] == '0' && len - i > 1)) {
        return 0;
    }

    for ( /* void */ ; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}


static void
tenant_problem_out(tenant_out_t *o, const tenant_problem_t *p)
{
    int                             n;
    char                            status[sizeof("-2147483648")];
    size_t                          i, nmembers, type_base_len;
    const char                     *code, *title;
    const tenant_problem_member_t  *m;

    code = p->code ? p->code : "";
    title = p->title ? p->title : "";
    type_base_len = p->type_base ? p->type_base_len : 0;

    /* "type" is type_base and code escaped as one string */

    tenant_out_raw(o, "{", 1);
    tenant_out_name(o, "type", 1);
    tenant_out_raw(o, "\"", 1);
    o->len += tenant_json_escape(o->p ? o->p + o->len : NULL, p->type_base,
                                 type_base_len);
    o->len += tenant_json_escape(o->p ? o->p + o->len : NULL, code,
                                 strlen(code));
    tenant_out_raw(o, "\"", 1);

    tenant_out_name(o, "title", 0);
    tenant_out_string(o, title, strlen(title));

    n = snprintf(status, sizeof(status), "%d", p->status);

    tenant_out_name(o, "status", 0);
    tenant_out_raw(o, status, (size_t) n);

    if (p->detail) {
        tenant_out_name(o, "detail", 0);
        tenant_out_string(o, p->detail, p->detail_len);
    }

    tenant_out_name(o, "code", 0);
    tenant_out_string(o, code, strlen(code));

    nmembers = p->nmembers;

    if (nmembers > TENANT_PROBLEM_MAX_MEMBERS) {
        nmembers = TENANT_PROBLEM_MAX_MEMBERS;
    }

    for (i = 0; i < nmembers; i++) {
        m = &p->members[i];

        if (m->name == NULL) {
            continue;
        }

        tenant_out_name(o, m->name, 0);

        /*
         * the caller promises valid JSON for a raw member (an array, an
         * object, ...), and digits for a number; should a number be
         * anything else, it goes out as a string, so the body stays valid
         */

        if (m->raw) {

            if (m->value == NULL || m->value_len == 0) {
                tenant_out_raw(o, "null", 4);

            } else {
                tenant_out_raw(o, m->value, m->value_len);
            }

        } else if (m->number && tenant_json_integer(m->value, m->value_len))
        {
            tenant_out_raw(o, m->value, m->value_len);

        } else {
            tenant_out_string(o, m->value, m->value_len);
        }
    }

    tenant_out_raw(o, "}", 1);
}
