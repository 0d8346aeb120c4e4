/*
 * Copyright (C) ngx_tenant_module authors
 *
 * What the gateway reads from a request before trusting anything: the
 * bearer token (Authorization header or __session cookie), the
 * organization id, and the media type and origin of the admin API's
 * requests.  nginx-agnostic, fuzzed.
 */

#ifndef _TENANT_REQUEST_H_INCLUDED_
#define _TENANT_REQUEST_H_INCLUDED_


#include <stddef.h>


#define TENANT_ORG_ID_MAX         128


/*
 * "Bearer <token>": the scheme is case-insensitive (RFC 7235), one or
 * more spaces follow it, the token is token68 characters
 * ([A-Za-z0-9-._~+/]+ and trailing '=') followed by optional spaces only.
 * Returns 0 and points *token into auth, or -1 (another scheme, empty or
 * malformed token).
 */
int tenant_bearer_token(const unsigned char *auth, size_t len,
    const unsigned char **token, size_t *token_len);

#define TENANT_COOKIE_AMBIGUOUS   -2


/*
 * The value of cookie "name" in a Cookie header value ("a=1; b=2"): the
 * name compared byte for byte (case-sensitive), blanks before a name and
 * after a value dropped, a value in double quotes unquoted.  Returns 0
 * and points *value into cookie, -1 when the cookie is absent, or
 * TENANT_COOKIE_AMBIGUOUS when it appears twice with different values
 * (a copy of the same value is fine).
 */
int tenant_cookie_value(const unsigned char *cookie, size_t len,
    const char *name, size_t name_len, const unsigned char **value,
    size_t *value_len);

/*
 * An organization id as a client may send it: 1..TENANT_ORG_ID_MAX
 * visible ASCII bytes (0x21..0x7e).  Anything else (spaces, control
 * characters, UTF-8) is refused before it reaches a query or a header.
 * Returns 1 if acceptable.
 */
int tenant_org_id_valid(const unsigned char *id, size_t len);

/*
 * Whether header name "name" is "want" (given lowercase, with '-') read
 * as backends read header names: in any case, and with '_' for any '-'.
 * nginx passes "X_Tenant_ID" with underscores_in_headers on (or
 * ignore_invalid_headers off), and CGI, WSGI, Rack and PHP fold it into
 * the same variable as "X-Tenant-ID".  1 if it is.
 */
int tenant_header_name_is(const unsigned char *name, size_t len,
    const char *want, size_t want_len);

/*
 * Whether a request header name is one the gateway sets, read as above:
 * X-Tenant-*, X-User-*, X-Org-Role or X-Organization-ID.  1 if so.
 */
int tenant_header_reserved(const unsigned char *name, size_t len);

/*
 * Whether a Content-Type value names application/json (RFC 9110, 8.3.1):
 * the type and subtype in any case, blanks (SP, HTAB) around them and
 * around each ";" parameter (name=token or name="quoted string"); a
 * charset parameter must be utf-8, in any case (RFC 8259: JSON is UTF-8).
 * Another type (text/plain, a +json type, application/json-seq) or a
 * malformed parameter: not JSON.  Returns 1 if JSON.
 */
int tenant_media_type_json(const unsigned char *value, size_t len);

/*
 * Whether an Origin header value (RFC 6454: scheme "://" host [":" port],
 * nothing more) is the origin scheme://host, where scheme is "http" or
 * "https" and host is as a Host header gives it (a name, an IPv4 address
 * or an [IPv6] address, and an optional port).  Schemes and hosts are
 * compared in any case; a missing or empty port is the scheme's default
 * (80, 443).  "null", a path, userinfo, another scheme, an empty host or
 * a malformed port are never the origin.  Returns 1 if it is.
 */
int tenant_origin_is(const unsigned char *origin, size_t len,
    const unsigned char *scheme, size_t scheme_len,
    const unsigned char *host, size_t host_len);


#endif /* _TENANT_REQUEST_H_INCLUDED_ */
