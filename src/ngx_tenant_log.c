/*
 * Copyright (C) ngx_tenant_module authors
 *
 * What the error log says about a request.  nginx ends every line it or a
 * module logs for a request with its context: the request line, the
 * upstream's URI, the Host and the Referer.  A query string (the request's,
 * the upstream's, the referring page's) may carry a token, as Clerk's
 * development __clerk_db_jwt does: this handler, set on every request once
 * its headers are read, writes the same context up to each "?" (the rest
 * becomes "?..."), as the shipped access log logs $uri and not
 * $request_uri.
 *
 * Lines nginx writes while it reads the headers keep its own handler;
 * the shipped configuration logs those at notice and above only (they
 * quote header lines).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tenant.h"


static u_char *ngx_tenant_log_error_handler(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static u_char *ngx_tenant_log_value(u_char *buf, u_char *last,
    const char *name, u_char *data, size_t n, ngx_uint_t line);


ngx_int_t
ngx_tenant_log_post_read_handler(ngx_http_request_t *r)
{
    if (r == r->main) {
        r->log_handler = ngx_tenant_log_error_handler;
    }

    return NGX_DECLINED;
}


/* ngx_http_log_error_handler() of nginx 1.22, without query strings */

static u_char *
ngx_tenant_log_error_handler(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    char                      *sep;
    u_char                    *last;
    ngx_http_upstream_t       *u;
    ngx_http_core_srv_conf_t  *cscf;

    last = buf + len;
    cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);

    buf = ngx_slprintf(buf, last, ", server: %V", &cscf->server_name);

    if (r->request_line.len) {
        buf = ngx_tenant_log_value(buf, last, "request", r->request_line.data,
                                   r->request_line.len, 1);
    }

    if (r != sr) {
        buf = ngx_slprintf(buf, last, ", subrequest: \"%V\"", &sr->uri);
    }

    u = sr->upstream;

    if (u && u->peer.name) {
        sep = "";

#if (NGX_HAVE_UNIX_DOMAIN)
        if (u->peer.sockaddr && u->peer.sockaddr->sa_family == AF_UNIX) {
            sep = ":";
        }
#endif

        buf = ngx_slprintf(buf, last, ", upstream: \"%V%V%s", &u->schema,
                           u->peer.name, sep);
        buf = ngx_tenant_log_value(buf, last, NULL, u->uri.data, u->uri.len,
                                   0);
    }

    if (r->headers_in.host) {
        buf = ngx_slprintf(buf, last, ", host: \"%V\"",
                           &r->headers_in.host->value);
    }

    if (r->headers_in.referer) {
        buf = ngx_tenant_log_value(buf, last, "referrer",
                                   r->headers_in.referer->value.data,
                                   r->headers_in.referer->value.len, 0);
    }

    return buf;
}


/*
 * Appends ', NAME: "DATA' (NAME NULL: DATA only) up to the first "?" of
 * DATA, then "?..." when there is one and, for a request LINE, its last
 * word (the protocol: " HTTP/1.1", " HTTP/2.0"), then the closing quote.
 */

static u_char *
ngx_tenant_log_value(u_char *buf, u_char *last, const char *name,
    u_char *data, size_t n, ngx_uint_t line)
{
    u_char  *q, *p, *end;

    end = data + n;
    q = ngx_strlchr(data, end, '?');

    if (name) {
        buf = ngx_slprintf(buf, last, ", %s: \"", name);
    }

    if (q == NULL) {
        return ngx_slprintf(buf, last, "%*s\"", n, data);
    }

    buf = ngx_slprintf(buf, last, "%*s?...", (size_t) (q - data), data);

    if (line) {
        for (p = end; p > q && p[-1] != ' '; p--) { /* void */ }

        if (p > q) {
            buf = ngx_slprintf(buf, last, " %*s", (size_t) (end - p), p);
        }
    }

    return ngx_slprintf(buf, last, "\"");
}
