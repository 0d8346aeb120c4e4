/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests: bearer token, __session cookie and organization id
 * extraction, reserved header names, the admin API's media type and
 * origin checks (src/tenant_request.c).
 */


#include <string.h>

#include "tap.h"
#include "tenant_request.h"


static int
bearer(const char *auth, const char *want)
{
    size_t                len;
    const unsigned char  *tok;

    if (tenant_bearer_token((const unsigned char *) auth, strlen(auth),
                            &tok, &len)
        != 0)
    {
        return want == NULL;
    }

    return want != NULL && len == strlen(want)
           && memcmp(tok, want, len) == 0;
}


static int
cookie(const char *header, const char *name, const char *want)
{
    size_t                len;
    const unsigned char  *v;

    if (tenant_cookie_value((const unsigned char *) header, strlen(header),
                            name, strlen(name), &v, &len)
        != 0)
    {
        return want == NULL;
    }

    return want != NULL && len == strlen(want) && memcmp(v, want, len) == 0;
}


static int
cookie_rc(const char *header, const char *name)
{
    size_t                len;
    const unsigned char  *v;

    return tenant_cookie_value((const unsigned char *) header,
                               strlen(header), name, strlen(name), &v, &len);
}


static int
reserved(const char *name)
{
    return tenant_header_reserved((const unsigned char *) name, strlen(name));
}


static int
json_type(const char *v)
{
    return tenant_media_type_json((const unsigned char *) v, strlen(v));
}


/* the Origin o against scheme://host */

static int
origin(const char *o, const char *scheme, const char *host)
{
    return tenant_origin_is((const unsigned char *) o, strlen(o),
                            (const unsigned char *) scheme, strlen(scheme),
                            (const unsigned char *) host, strlen(host));
}


int
main(void)
{
    char  big[200];

    /* Authorization: Bearer */

    ok(bearer("Bearer abc.def.ghi", "abc.def.ghi"), "Bearer token");
    ok(bearer("bearer abc.def.ghi", "abc.def.ghi"),
       "scheme is case-insensitive (lower)");
    ok(bearer("BEARER abc.def.ghi", "abc.def.ghi"),
       "scheme is case-insensitive (upper)");
    ok(bearer("Bearer   abc.def  ", "abc.def"), "spaces around the token");
    ok(bearer("Bearer a-b_c.d~e+f/g==", "a-b_c.d~e+f/g=="),
       "every token68 character, trailing '='");
    ok(bearer("Bearer", NULL), "scheme without token");
    ok(bearer("Bearer ", NULL), "scheme, space, no token");
    ok(bearer("Bearerabc", NULL), "no space after the scheme");
    ok(bearer("Basic dXNlcjpwYXNz", NULL), "another scheme");
    ok(bearer("Bearer abc def", NULL), "two tokens");
    ok(bearer("Bearer abc\r\nX: y", NULL), "CR/LF in the token");
    ok(bearer("Bearer a=b", NULL), "'=' inside the token");
    ok(bearer("Bearer abc\"", NULL), "a quote in the token");
    ok(bearer("", NULL), "empty header");
    ok(bearer("Bear abc", NULL), "short scheme");

    /* token68 has a character before its '=' padding (fuzz_request:
     * t/fuzz/corpus/request/regress-bearer-only-padding) */

    ok(bearer("Bearer =", NULL), "token of one '='");
    ok(bearer("bEaReR ==    ", NULL), "token of '=' only, then spaces");
    ok(bearer("Bearer a=", "a="), "one character and '='");
    ok(bearer("Bearer ab{c", NULL), "'{' (just above 'z') in the token");
    ok(bearer("Bearer a:b", NULL), "':' (just above '9') in the token");

    /* Cookie */

    ok(cookie("__session=tok", "__session", "tok"), "the only cookie");
    ok(cookie("a=1; __session=tok; b=2", "__session", "tok"),
       "among others");
    ok(cookie("a=1;__session=tok", "__session", "tok"), "no space");
    ok(cookie("__session=\"tok\"", "__session", "tok"), "quoted value");
    ok(cookie("x__session=tok", "__session", NULL), "suffix of a name");
    ok(cookie("__session_x=tok", "__session", NULL), "prefix of a name");
    ok(cookie("a=1; b=2", "__session", NULL), "absent");
    ok(cookie("", "__session", NULL), "empty header");
    ok(cookie("__session", "__session", NULL), "name without '='");
    ok(cookie("junk; __session=tok", "__session", "tok"),
       "after a crumb without '='");
    ok(cookie("__session=", "__session", ""), "empty value");
    ok(cookie("a=x=y; __session=t=k", "__session", "t=k"),
       "'=' inside values");

    /*
     * The name is case-sensitive (RFC 6265); the same name twice with
     * different values is ambiguous, with the same value it is not.
     */

    ok(cookie("__Session=tok", "__session", NULL), "__Session is another name");
    ok(cookie("__SESSION=tok", "__session", NULL), "__SESSION is another name");
    ok(cookie("__Session=bad; __session=tok", "__session", "tok"),
       "__Session skipped, __session after it taken");
    is_int(cookie_rc("__session=first; __session=second", "__session"),
           TENANT_COOKIE_AMBIGUOUS, "two different values: ambiguous");
    is_int(cookie_rc("__session=tok; a=1; __session=tok2", "__session"),
           TENANT_COOKIE_AMBIGUOUS, "a value and a longer one: ambiguous");
    is_int(cookie_rc("__session=; __session=tok", "__session"),
           TENANT_COOKIE_AMBIGUOUS, "an empty value and a token: ambiguous");
    is_int(cookie_rc("__session=tok; __session=", "__session"),
           TENANT_COOKIE_AMBIGUOUS, "a token and an empty value: ambiguous");
    ok(cookie("__session=tok; a=1; __session=tok", "__session", "tok"),
       "the same value twice");
    ok(cookie("__session=tok; __session=\"tok\" ", "__session", "tok"),
       "the same value, once quoted");
    ok(cookie("__session=tok; __Session=other", "__session", "tok"),
       "__Session beside __session is not ambiguous");

    /* a name of the same length is another cookie (C-14) */

    ok(cookie("__sessioX=eyJ.a.b", "__session", NULL),
       "__sessioX (same length) is not taken");
    ok(cookie("__sessioX=bad; __session=tok", "__session", "tok"),
       "__sessioX skipped, __session after it taken");

    /* tabs separate cookies; blanks after a value are not part of it */

    ok(cookie("a=1;\t__session=tok", "__session", "tok"),
       "tab after ';'");
    ok(cookie("\t__session=tok", "__session", "tok"), "leading tab");
    ok(cookie("a=1; \t;", "__session", NULL),
       "only separators after the last cookie: absent");
    ok(cookie("__session=tok \t ; b=2", "__session", "tok"),
       "trailing blanks before ';' dropped");
    ok(cookie("__session=tok\t", "__session", "tok"),
       "trailing tab at the end dropped");
    ok(cookie("__session=\"tok\"  ", "__session", "tok"),
       "quoted value with trailing blanks: unquoted");
    ok(cookie("__session=   ", "__session", ""), "blanks only: empty value");

    /* one quote is not a quoted value: kept as sent */

    ok(cookie("__session=\"abc", "__session", "\"abc"),
       "a leading quote only: value kept with its quote");
    ok(cookie("__session=abc\"", "__session", "abc\""),
       "a trailing quote only: value kept with its quote");
    ok(cookie("__session=\"", "__session", "\""),
       "a lone quote: kept");
    ok(cookie("__session=\"\"", "__session", ""),
       "two quotes: the empty value");

    /* Organization id */

    ok(tenant_org_id_valid((const unsigned char *) "org_2abcDEF", 11),
       "a Clerk organization id");
    ok(tenant_org_id_valid((const unsigned char *) "o';DROP--", 9),
       "SQL metacharacters are visible ASCII: left to parameters");
    ok(!tenant_org_id_valid((const unsigned char *) "", 0), "empty");
    ok(!tenant_org_id_valid((const unsigned char *) "org 1", 5), "space");
    ok(!tenant_org_id_valid((const unsigned char *) "org\r\n1", 6),
       "CR/LF");
    ok(!tenant_org_id_valid((const unsigned char *) "org\0x", 5), "NUL");
    ok(!tenant_org_id_valid((const unsigned char *) "org\xc3\xa9", 5),
       "UTF-8");
    ok(!tenant_org_id_valid((const unsigned char *) "org\x7f", 4), "DEL");

    memset(big, 'a', sizeof(big));
    ok(tenant_org_id_valid((unsigned char *) big, TENANT_ORG_ID_MAX),
       "TENANT_ORG_ID_MAX bytes");
    ok(!tenant_org_id_valid((unsigned char *) big, TENANT_ORG_ID_MAX + 1),
       "one byte more");

    /* header names the gateway sets, as backends read them */

    ok(reserved("X-Tenant-ID"), "X-Tenant-ID");
    ok(reserved("x-tenant-id"), "x-tenant-id");
    ok(reserved("X_Tenant_ID"), "X_Tenant_ID");
    ok(reserved("x_TENANT-iD"), "x_TENANT-iD");
    ok(reserved("X-Tenant_Signature"), "X-Tenant_Signature");
    ok(reserved("X_TENANT_TIMESTAMP"), "X_TENANT_TIMESTAMP");
    ok(reserved("X-Tenant-"), "the bare prefix X-Tenant-");
    ok(reserved("x_tenant_"), "the bare prefix x_tenant_");
    ok(reserved("X-User-ID"), "X-User-ID");
    ok(reserved("X_User_Email"), "X_User_Email");
    ok(reserved("X-Org-Role"), "X-Org-Role");
    ok(reserved("X_Org_Role"), "X_Org_Role");
    ok(reserved("x-org_ROLE"), "x-org_ROLE");
    ok(reserved("X-Organization-ID"), "X-Organization-ID");
    ok(reserved("X_Organization_Id"), "X_Organization_Id");

    ok(!reserved("X-Tenant"), "X-Tenant (no dash after)");
    ok(!reserved("X-Tenants-ID"), "X-Tenants-ID");
    ok(!reserved("XTenant-ID"), "XTenant-ID");
    ok(!reserved("X--Tenant-ID"), "X--Tenant-ID");
    ok(!reserved("X.Tenant.ID"), "X.Tenant.ID");
    ok(!reserved("X-Org-Roles"), "X-Org-Roles");
    ok(!reserved("X-Org-Rol"), "X-Org-Rol");
    ok(!reserved("X-Organization-IDs"), "X-Organization-IDs");
    ok(!reserved("X-Organization"), "X-Organization");
    ok(!reserved("X-Request-ID"), "X-Request-ID");
    ok(!reserved("Authorization"), "Authorization");
    ok(!reserved(""), "empty");
    ok(!reserved("X\xadTenant-ID"), "0xad ('-' with the high bit) for '-'");
    ok(!reserved("X\x0dTenant-ID"), "CR ('-' without bit 5) for '-'");
    ok(!reserved("X\x7fTenant-ID"), "DEL for '-'");
    ok(!reserved("X-\xd4" "enant-ID"), "0xd4 ('T' with the high bit) for 'T'");
    ok(!reserved("X-Tenant\x7f"), "DEL for the prefix's last '-'");

    ok(tenant_header_name_is((const unsigned char *) "X_Organization_ID", 17,
                             "x-organization-id", 17),
       "name_is: X_Organization_ID");
    ok(!tenant_header_name_is((const unsigned char *) "X_Organization_ID",
                              17, "x-organization-i", 16),
       "name_is: longer name");
    ok(!tenant_header_name_is((const unsigned char *) "X_Organization_I", 16,
                              "x-organization-id", 17),
       "name_is: shorter name");

    /* Content-Type: application/json, and what a cross-site form sends */

    ok(json_type("application/json"), "application/json");
    ok(json_type("Application/JSON"), "Application/JSON (any case)");
    ok(json_type("APPLICATION/JSON"), "APPLICATION/JSON");
    ok(json_type("application/json; charset=utf-8"), "charset=utf-8");
    ok(json_type("application/json;charset=UTF-8"), "charset=UTF-8, no blank");
    ok(json_type("application/json ; charset=\"utf-8\" "),
       "quoted charset, blanks around");
    ok(json_type(" \tapplication/json\t"), "blanks around the type");
    ok(json_type("application/json;"), "an empty parameter (RFC 9110)");
    ok(json_type("application/json; ; x=1"), "an empty parameter, another");
    ok(json_type("application/json; profile=\"a;b \\\" c\""),
       "a quoted parameter with ';', a blank and an escaped quote");
    ok(!json_type("application/json; charset=iso-8859-1"),
       "charset=iso-8859-1");
    ok(!json_type("application/json; charset=utf-16"), "charset=utf-16");
    ok(!json_type("application/json; charset=\"utf\\-8\""),
       "charset utf-8 with an escape (strict)");
    ok(!json_type("application/json; charset="), "charset without a value");
    ok(!json_type("application/json; =utf-8"), "a parameter without a name");
    ok(!json_type("application/json; charset"), "a parameter without '='");
    ok(!json_type("application/json; x=\"open"), "an unclosed quote");
    ok(!json_type("application/json; x=\"a\x01\""),
       "a control character in a quoted value");
    ok(!json_type("application/json x"), "junk after the type");
    ok(!json_type("text/plain"), "text/plain");
    ok(!json_type("text/plain; charset=utf-8"), "text/plain; charset=utf-8");
    ok(!json_type("application/x-www-form-urlencoded"),
       "application/x-www-form-urlencoded");
    ok(!json_type("multipart/form-data; boundary=x"), "multipart/form-data");
    ok(!json_type("application/jsonx"), "application/jsonx");
    ok(!json_type("application/json-seq"), "application/json-seq");
    ok(!json_type("application/problem+json"), "application/problem+json");
    ok(!json_type("application/jso"), "application/jso");
    ok(!json_type("application/json\r\n"), "CR LF after the type");
    ok(!json_type("application /json"), "a blank inside the type");
    ok(!json_type(""), "empty");
    ok(!json_type("text/plain, application/json"), "a list");

    /* Origin: the gateway's own, as the client (and its proxy) sees it */

    ok(origin("http://localhost:8080", "http", "localhost:8080"),
       "origin: http, host with a port");
    ok(origin("https://gw.example.com", "https", "gw.example.com"),
       "origin: https behind a TLS proxy, no port");
    ok(origin("https://gw.example.com", "https", "gw.example.com:443"),
       "origin: https's default port in Host");
    ok(origin("https://gw.example.com:443", "https", "gw.example.com"),
       "origin: https's default port in the Origin");
    ok(origin("http://gw.example.com", "http", "gw.example.com:80"),
       "origin: http's default port");
    ok(origin("HTTPS://GW.Example.COM", "https", "gw.example.com"),
       "origin: any case");
    ok(origin("https://gw.example.com", "HTTPS", "GW.example.com"),
       "origin: scheme and Host in any case");
    ok(origin("http://[::1]:8080", "http", "[::1]:8080"), "origin: [::1]");
    ok(origin("http://127.0.0.1", "http", "127.0.0.1:"),
       "origin: an empty port is the default");

    ok(!origin("https://evil.example.com", "https", "gw.example.com"),
       "origin: a sibling subdomain");
    ok(!origin("https://gw.example.com.evil.net", "https", "gw.example.com"),
       "origin: the host as a prefix");
    ok(!origin("https://example.com", "https", "gw.example.com"),
       "origin: the parent domain");
    ok(!origin("http://gw.example.com", "https", "gw.example.com"),
       "origin: http page, https gateway");
    ok(!origin("https://gw.example.com", "http", "gw.example.com"),
       "origin: https page, http gateway");
    ok(!origin("https://gw.example.com:8443", "https", "gw.example.com"),
       "origin: another port");
    ok(!origin("http://localhost:8081", "http", "localhost:8080"),
       "origin: a neighbouring port");
    ok(origin("http://localhost:080", "http", "localhost"),
       "origin: 080 is port 80");
    ok(!origin("null", "https", "gw.example.com"), "origin: null");
    ok(!origin("", "https", "gw.example.com"), "origin: empty");
    ok(!origin("https://", "https", "gw.example.com"), "origin: no host");
    ok(!origin("https://gw.example.com/", "https", "gw.example.com"),
       "origin: a trailing slash");
    ok(!origin("https://gw.example.com/x", "https", "gw.example.com"),
       "origin: a path");
    ok(!origin("https://a@gw.example.com", "https", "gw.example.com"),
       "origin: userinfo");
    ok(!origin("https://gw.example.com:99999", "https",
               "gw.example.com:99999"), "origin: port over 65535");
    ok(!origin("https://gw.example.com:4430000", "https",
               "gw.example.com:4430000"), "origin: port of 7 digits");
    ok(!origin("https://gw.example.com:x", "https", "gw.example.com"),
       "origin: a port that is not a number");
    ok(!origin("file://gw.example.com", "file", "gw.example.com"),
       "origin: another scheme");
    ok(!origin("https:gw.example.com", "https", "gw.example.com"),
       "origin: no //");
    ok(!origin("https://gw.example.com", "https", ""), "origin: no Host");
    ok(!origin("https://gw example.com", "https", "gw example.com"),
       "origin: a blank in the host");
    ok(!origin("http://[::1", "http", "[::1"), "origin: an open bracket");
    ok(!origin("http://[]", "http", "[]"), "origin: empty brackets");
    ok(!origin("https://gw.example.com", "ftp", "gw.example.com"),
       "origin: the gateway's scheme is neither http nor https");

    return done_testing();
}
