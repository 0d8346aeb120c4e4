/*
 * Copyright (C) ngx_tenant_module authors
 *
 * application/problem+json bodies (RFC 9457) and JSON string escaping.
 */

#ifndef _TENANT_PROBLEM_H_INCLUDED_
#define _TENANT_PROBLEM_H_INCLUDED_


#include <stddef.h>


#define TENANT_PROBLEM_MAX_MEMBERS  8


typedef struct {
    const char      *name;        /* member name, plain ASCII, not escaped */
    const char      *value;       /* escaped on output */
    size_t           value_len;
    int              number;      /* 1: value is emitted as a bare number */
    int              raw;         /* 1: value is emitted as is: valid JSON,
                                     the caller guarantees it; NULL or
                                     empty is emitted as null */
} tenant_problem_member_t;


typedef struct {
    const char      *type_base;   /* e.g. "https://capliquify.com/problems/" */
    size_t           type_base_len;
    const char      *code;        /* e.g. "feature_not_available" */
    int              status;      /* HTTP status */
    const char      *title;       /* short, fixed per code */
    const char      *detail;      /* may be NULL */
    size_t           detail_len;

    tenant_problem_member_t  members[TENANT_PROBLEM_MAX_MEMBERS];
    size_t                   nmembers;
} tenant_problem_t;


/*
 * Renders
 *   {"type":"<type_base><code>","title":"...","status":N,"detail":"...",
 *    "code":"<code>", <members...>}
 * into buf and returns the number of bytes the whole body takes.  With
 * buf NULL nothing is written (a sizing pass); when the body is longer
 * than size, nothing is written either and the needed length is returned,
 * so a caller renders with a buffer of the returned size.  Every string is
 * JSON-escaped; invalid UTF-8 bytes become U+FFFD.  A raw member (an array
 * of errors, say) is copied unchecked: it takes precedence over number.
 */
size_t tenant_problem_render(char *buf, size_t size,
    const tenant_problem_t *p);

/* JSON string escaping without the quotes: returns the escaped length;
 * with dst NULL only measures.  Control characters become \u00XX, '"'
 * and '\\' are escaped, '/' is not, invalid UTF-8 becomes \ufffd. */
size_t tenant_json_escape(char *dst, const char *src, size_t len);


#endif /* _TENANT_PROBLEM_H_INCLUDED_ */
