/*
 * Copyright (C) ngx_tenant_module authors
 *
 * tenant_jwt: verification of RS256 / ES256 Clerk tokens signed here with
 * freshly generated keys.
 */


#include "tap.h"
#include "jwt_util.h"

#include "tenant_jwks.h"
#include "tenant_jwt.h"


#define NOW                       1700000000LL

/* the claims every test token starts with (NOW - 10 <= valid <= NOW + 600) */
#define BASE                                                                 \
    "\"sub\":\"user_2abc\",\"iat\":1700000000,\"nbf\":1699999990,"           \
    "\"exp\":1700000600"

#define HDR_RS    "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"typ\":\"JWT\"}"
#define HDR_ES    "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}"

#define C128                                                                 \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"       \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


static EVP_PKEY             *rsa, *ec, *rsa_other, *ec_other;
static tenant_keyset_t       ks;
static tenant_jwt_policy_t   policy;
static tenant_jwt_claims_t   claims;
static char                  tok[TOKEN_MAX];
static char                  pl[TOKEN_MAX];
static char                  pem_rsa[4096];


static void
reset_policy(void)
{
    memset(&policy, 0, sizeof(policy));
    policy.algorithms = TENANT_JWT_RS256 | TENANT_JWT_ES256;
    policy.now = NOW;
    policy.leeway = 0;
}


static tenant_jwt_status_t
verify(const char *t)
{
    return tenant_jwt_verify((const unsigned char *) t, strlen(t), &ks,
                             &policy, &claims);
}


static const char *
P(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(pl, sizeof(pl), fmt, ap);
    va_end(ap);

    return pl;
}


static tenant_jwt_status_t
rs(const char *payload)
{
    make_token(tok, rsa, HDR_RS, payload);
    return verify(tok);
}


static tenant_jwt_status_t
es(const char *payload)
{
    make_token(tok, ec, HDR_ES, payload);
    return verify(tok);
}


/* token with the raw (not base64url) segment s in place of segment i */

static void
replace_segment(char *t, int i, const char *s)
{
    char   copy[TOKEN_MAX];
    char  *seg[3], *p;

    strcpy(copy, t);
    seg[0] = copy;
    p = strchr(copy, '.');
    *p = '\0';
    seg[1] = p + 1;
    p = strchr(seg[1], '.');
    *p = '\0';
    seg[2] = p + 1;
    seg[i] = (char *) s;

    sprintf(t, "%s.%s.%s", seg[0], seg[1], seg[2]);
}


static void
test_base64url(void)
{
    long           n;
    unsigned char  out[64];

    n = tenant_base64url_decode(out, (const unsigned char *) "TWFu", 4);
    ok(n == 3 && memcmp(out, "Man", 3) == 0, "b64: TWFu is Man");

    n = tenant_base64url_decode(out, (const unsigned char *) "TWE", 3);
    ok(n == 2 && memcmp(out, "Ma", 2) == 0, "b64: TWE is Ma");

    n = tenant_base64url_decode(out, (const unsigned char *) "TQ", 2);
    ok(n == 1 && out[0] == 'M', "b64: TQ is M");

    n = tenant_base64url_decode(out, (const unsigned char *) "-_-_", 4);
    ok(n == 3 && out[0] == 0xfb && out[1] == 0xff && out[2] == 0xbf,
       "b64: - and _ are 62 and 63");

    is_int(tenant_base64url_decode(out, (const unsigned char *) "", 0), 0,
           "b64: empty input");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "T", 1), -1,
           "b64: length 1 mod 4 refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TWFuT", 5),
           -1, "b64: length 5 refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TQ==", 4),
           -1, "b64: padding refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TWE=", 4),
           -1, "b64: single padding refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "+/+/", 4),
           -1, "b64: standard alphabet + / refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TW u", 4),
           -1, "b64: space refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TW\0u", 4),
           -1, "b64: NUL refused");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TR", 2),
           -1, "b64: non-zero trailing bits refused (2 chars)");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TWF", 3),
           -1, "b64: non-zero trailing bits refused (3 chars)");
}


static void
test_valid(void)
{
    tenant_jwt_status_t  rc;

    memset(&claims, 0xAA, sizeof(claims));

    rc = rs("{" BASE ",\"azp\":\"https://app.example.com\","
            "\"iss\":\"https://clerk.example.com\",\"sid\":\"sess_1\","
            "\"org_id\":\"org_123\",\"org_role\":\"org:admin\","
            "\"org_slug\":\"acme\",\"org_permissions\":[\"org:a:read\"],"
            "\"metadata\":{\"role\":\"cfo\",\"plan\":\"x\"}}");

    is_int(rc, TENANT_JWT_OK, "RS256 v1: valid");
    is_str(claims.sub, "user_2abc", "RS256 v1: sub");
    is_int(claims.sub_len, 9, "RS256 v1: sub_len");
    is_str(claims.org_id, "org_123", "RS256 v1: org_id");
    is_int(claims.org_id_len, 7, "RS256 v1: org_id_len");
    is_str(claims.org_role, "org:admin", "RS256 v1: org_role");
    is_int(claims.org_role_len, 9, "RS256 v1: org_role_len");
    is_str(claims.org_slug, "acme", "RS256 v1: org_slug");
    is_int(claims.org_slug_len, 4, "RS256 v1: org_slug_len");
    is_str(claims.metadata_role, "cfo", "RS256 v1: metadata.role");
    is_int(claims.metadata_role_len, 3, "RS256 v1: metadata_role_len");
    is_int(claims.version, 1, "RS256 v1: version 1");
    is_int(claims.exp, 1700000600, "RS256 v1: exp");
    is_int(claims.nbf, 1699999990, "RS256 v1: nbf");
    is_int(claims.iat, 1700000000, "RS256 v1: iat");

    memset(&claims, 0xAA, sizeof(claims));

    rc = es("{" BASE ",\"v\":2,\"sts\":\"active\",\"fva\":[5,-1],"
            "\"o\":{\"id\":\"org_456\",\"rol\":\"admin\",\"slg\":\"globex\","
            "\"per\":\"read,write\",\"fpm\":\"3\"}}");

    is_int(rc, TENANT_JWT_OK, "ES256 v2: valid");
    is_str(claims.sub, "user_2abc", "ES256 v2: sub");
    is_str(claims.org_id, "org_456", "ES256 v2: o.id");
    is_int(claims.org_id_len, 7, "ES256 v2: org_id_len");
    is_str(claims.org_role, "admin", "ES256 v2: o.rol stored as given");
    is_str(claims.org_slug, "globex", "ES256 v2: o.slg");
    is_int(claims.version, 2, "ES256 v2: version 2");
    is_int(claims.metadata_role_len, 0, "ES256 v2: no metadata.role");
    is_str(claims.metadata_role, "", "ES256 v2: metadata_role empty");

    rc = es("{" BASE ",\"org_id\":\"org_1\",\"org_role\":\"org:member\"}");
    is_int(rc, TENANT_JWT_OK, "ES256 v1: valid");
    is_str(claims.org_id, "org_1", "ES256 v1: org_id");
    is_str(claims.org_role, "org:member", "ES256 v1: org_role");
    is_int(claims.org_slug_len, 0, "ES256 v1: no org_slug");

    rc = rs("{" BASE ",\"v\":2,\"o\":{\"id\":\"org_7\",\"rol\":\"member\","
            "\"slg\":\"s\"}}");
    is_int(rc, TENANT_JWT_OK, "RS256 v2: valid");
    is_str(claims.org_id, "org_7", "RS256 v2: o.id");
    is_int(claims.version, 2, "RS256 v2: version");

    rc = rs("{" BASE ",\"v\":2,\"org_id\":\"org_top\"}");
    is_int(rc, TENANT_JWT_OK, "v2 without o: valid");
    is_int(claims.org_id_len, 0, "v2: top-level org_id ignored");

    rc = rs("{" BASE ",\"v\":1,\"o\":{\"id\":\"org_o\"}}");
    is_int(rc, TENANT_JWT_OK, "v1 with o: valid");
    is_int(claims.org_id_len, 0, "v1: o ignored");
    is_int(claims.version, 1, "explicit v 1");

    memset(&claims, 0xAA, sizeof(claims));
    rc = rs("{" BASE "}");
    is_int(rc, TENANT_JWT_OK, "no organization: valid");
    ok(claims.org_id[0] == '\0' && claims.org_id_len == 0
       && claims.org_role[0] == '\0' && claims.org_slug[0] == '\0'
       && claims.metadata_role[0] == '\0',
       "no organization: claims zeroed, not left over");

    rc = rs("{" BASE ",\"org_id\":null,\"metadata\":{\"role\":null}}");
    is_int(rc, TENANT_JWT_OK, "null optional claims are absent");
    is_int(claims.org_id_len + claims.metadata_role_len, 0,
           "null optional claims: nothing copied");

    rc = rs("{" BASE ",\"org_slug\":\"caf\xc3\xa9\"}");
    is_int(rc, TENANT_JWT_OK, "UTF-8 claim accepted");
    is_int(claims.org_slug_len, 5, "UTF-8 claim: bytes counted");
}


static void
test_algorithms(void)
{
    size_t               n;
    char                 t[TOKEN_MAX];
    tenant_jwt_status_t  rc;

    /* alg none, with an empty and with a real signature */

    n = signing_input(tok, "{\"alg\":\"none\"}", "{" BASE "}");
    strcpy(tok + n, ".");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "alg none refused");

    n = signing_input(tok, "{\"alg\":\"none\",\"kid\":\"rsa1\"}",
                      "{" BASE "}");
    strcpy(tok + n, ".");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "alg none with a kid refused");

    make_token(tok, rsa, "{\"alg\":\"none\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "alg none with a valid RSA signature refused");

    n = signing_input(tok, "{\"alg\":\"None\"}", "{" BASE "}");
    strcpy(tok + n, ".");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "alg None refused");

    n = signing_input(tok, "{\"alg\":\"NONE\"}", "{" BASE "}");
    strcpy(tok + n, ".");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "alg NONE refused");

    /* HS256 keyed with the public key: the classic confusion attack */

    make_hs256(tok, (const unsigned char *) pem_rsa, strlen(pem_rsa),
               "{\"alg\":\"HS256\",\"kid\":\"rsa1\",\"typ\":\"JWT\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "HS256 keyed with the RSA public PEM refused");

    make_hs256(tok, (const unsigned char *) pem_rsa, strlen(pem_rsa),
               "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "HS256 without kid refused");

    make_hs256(tok, (const unsigned char *) pem_rsa, strlen(pem_rsa),
               "{\"alg\":\"HS384\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "HS384 refused");

    make_hs256(tok, (const unsigned char *) pem_rsa, strlen(pem_rsa),
               "{\"alg\":\"HS512\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "HS512 refused");

    make_token(tok, rsa, "{\"alg\":\"RS512\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "RS512 refused");

    make_token(tok, rsa, "{\"alg\":\"PS256\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED, "PS256 refused");

    make_token(tok, rsa, "{\"alg\":\"rs256\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "alg compared case-sensitively");

    make_token(tok, rsa, "{\"alg\":\"RS256 \",\"kid\":\"rsa1\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "alg compared with its length");

    make_hs256(tok, (const unsigned char *) "k", 1,
               "{\"alg\":\"HS256\",\"kid\":\"no-such-key\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "alg checked before the kid is looked up");

    /* the policy's allowlist */

    make_token(t, ec, HDR_ES, "{" BASE "}");
    is_int(verify(t), TENANT_JWT_OK, "ES256 allowed by default policy");

    policy.algorithms = TENANT_JWT_RS256;
    is_int(verify(t), TENANT_JWT_ALG_NOT_ALLOWED,
           "ES256 refused when only RS256 is allowed");

    rc = rs("{" BASE "}");
    is_int(rc, TENANT_JWT_OK, "RS256 allowed when only RS256 is allowed");

    policy.algorithms = TENANT_JWT_ES256;
    is_int(verify(tok), TENANT_JWT_ALG_NOT_ALLOWED,
           "RS256 refused when only ES256 is allowed");
    is_int(verify(t), TENANT_JWT_OK, "ES256 allowed when only ES256 is");

    policy.algorithms = 0;
    is_int(verify(t), TENANT_JWT_ALG_NOT_ALLOWED,
           "nothing allowed: ES256 refused");

    reset_policy();

    /* header shape */

    make_token(tok, rsa, "{\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "no alg: bad header");

    make_token(tok, rsa, "{\"alg\":256,\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "numeric alg: bad header");

    make_token(tok, rsa, "{\"alg\":null,\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "null alg: bad header");

    make_token(tok, rsa, "{\"alg\":\"RS256\",\"kid\":1}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "numeric kid: bad header");

    make_token(tok, rsa,
               "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"crit\":[\"exp\"]}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "crit header refused");

    make_token(tok, rsa, "{\"alg\":\"RS256\",\"kid\":\"" C128 "x\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "kid too long: bad header");
}


static void
test_keys(void)
{
    tenant_keyset_t  empty, lone;

    /* key type must match alg */

    make_token(tok, rsa, "{\"alg\":\"RS256\",\"kid\":\"ec1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_UNKNOWN_KID,
           "RS256 header naming the EC key refused");

    make_token(tok, ec, "{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_UNKNOWN_KID,
           "ES256 header naming the RSA key refused");

    /* wrong keys */

    make_token(tok, rsa_other, HDR_RS, "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "RS256 signed by another RSA key");

    make_token(tok, ec_other, HDR_ES, "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "ES256 signed by another EC key");

    make_token(tok, rsa, "{\"alg\":\"RS256\",\"kid\":\"rsa9\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_UNKNOWN_KID, "unknown kid");

    make_token(tok, rsa, "{\"alg\":\"RS256\",\"kid\":\"rsa\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_UNKNOWN_KID, "kid prefix is not a match");

    make_token(tok, rsa, "{\"alg\":\"RS256\",\"kid\":\"rsa11\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_UNKNOWN_KID, "longer kid is not a match");

    make_token(tok, rsa, "{\"alg\":\"RS256\"}", "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_UNKNOWN_KID,
           "no kid, every key has one: unknown key");

    make_token(tok, rsa, HDR_RS, "{" BASE "}");

    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok), NULL,
                             &policy, &claims),
           TENANT_JWT_UNKNOWN_KID, "no key set: unknown key");

    memset(&empty, 0, sizeof(empty));
    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok),
                             &empty, &policy, &claims),
           TENANT_JWT_UNKNOWN_KID, "empty key set: unknown key");

    /* Clerk networkless verification: one PEM key without kid */

    memset(&lone, 0, sizeof(lone));
    if (tenant_keyset_add_pem(&lone, (const unsigned char *) pem_rsa,
                              strlen(pem_rsa), NULL, NULL, 0) != 0)
    {
        bail("add_pem");
    }

    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok),
                             &lone, &policy, &claims),
           TENANT_JWT_OK, "lone kid-less key verifies a token with a kid");

    make_token(tok, rsa, "{\"alg\":\"RS256\"}", "{" BASE "}");
    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok),
                             &lone, &policy, &claims),
           TENANT_JWT_OK, "lone kid-less key verifies a token without kid");

    make_token(tok, ec, "{\"alg\":\"ES256\"}", "{" BASE "}");
    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok),
                             &lone, &policy, &claims),
           TENANT_JWT_UNKNOWN_KID, "lone RSA key does not take ES256");

    /*
     * A rotation at Clerk: a token of a new kid, signed by a key the PEM
     * is not.  Its kid names no key: unknown key (what has the gateway
     * fetch the keys again), not bad signature.
     */

    make_token(tok, rsa_other, "{\"alg\":\"RS256\",\"kid\":\"ins_new\"}",
               "{" BASE "}");
    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok),
                             &lone, &policy, &claims),
           TENANT_JWT_UNKNOWN_KID,
           "lone kid-less key: a new kid it does not verify is unknown");

    make_token(tok, rsa_other, "{\"alg\":\"RS256\"}", "{" BASE "}");
    is_int(tenant_jwt_verify((const unsigned char *) tok, strlen(tok),
                             &lone, &policy, &claims),
           TENANT_JWT_BAD_SIGNATURE,
           "lone kid-less key: no kid, another key: bad signature");

    /* a kid that names a key: that key only, not the kid-less ones */

    make_token(tok, rsa_other, "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "a kid that names a key, signed by another: bad signature");

    tenant_keyset_free(&lone);
}


static void
test_signatures(void)
{
    size_t         n;
    char           t[TOKEN_MAX], hdr[128], *p;
    unsigned char  zero[64], sig[1024];

    /* tampered payload: same signature, other claims */

    make_token(tok, rsa, HDR_RS, "{" BASE "}");
    strcpy(t, tok);
    p = "{\"sub\":\"user_admin\",\"exp\":1700000600}";
    b64url(pl, (const unsigned char *) p, strlen(p));
    replace_segment(t, 1, pl);
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "RS256 tampered payload");

    strcpy(t, tok);
    p = "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}";
    b64url(hdr, (const unsigned char *) p, strlen(p));
    replace_segment(t, 0, hdr);
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "RS256 tampered header");

    strcpy(t, tok);
    p = strrchr(t, '.') + 5;
    *p = (*p == 'A') ? 'B' : 'A';
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "RS256 signature bit flip");

    strcpy(t, tok);
    t[strlen(t) - 2] = '\0';   /* 255 bytes, whole groups */
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "RS256 truncated signature");

    strcpy(t, tok);
    *(strrchr(t, '.') + 1) = '\0';
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "RS256 empty signature");

    make_token(tok, ec, HDR_ES, "{" BASE "}");
    strcpy(t, tok);
    replace_segment(t, 1, pl);
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "ES256 tampered payload");

    strcpy(t, tok);
    p = strrchr(t, '.') + 5;
    *p = (*p == 'A') ? 'B' : 'A';
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE, "ES256 signature bit flip");

    make_token_ex(tok, ec, HDR_ES, "{" BASE "}", 1);
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "ES256 with a DER signature refused (raw r||s required)");

    /* a valid r || s followed by one more byte */

    n = signing_input(tok, HDR_ES, "{" BASE "}");
    sign_raw(ec, tok, n, sig, 0);
    sig[64] = 0;
    tok[n] = '.';
    b64url(tok + n + 1, sig, 65);
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "ES256 signature of 65 bytes refused");
    b64url(tok + n + 1, sig, 64);
    is_int(verify(tok), TENANT_JWT_OK, "  the same 64 bytes verify");

    /* the same for RSA: a leading zero byte */

    n = signing_input(tok, HDR_RS, "{" BASE "}");
    sig[0] = 0;
    sign_raw(rsa, tok, n, sig + 1, 0);
    tok[n] = '.';
    b64url(tok + n + 1, sig, 257);
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "RS256 signature with a leading zero byte refused");
    b64url(tok + n + 1, sig + 1, 256);
    is_int(verify(tok), TENANT_JWT_OK, "  the same 256 bytes verify");

    memset(zero, 0, sizeof(zero));
    n = signing_input(tok, HDR_ES, "{" BASE "}");
    tok[n++] = '.';
    b64url(tok + n, zero, sizeof(zero));
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE, "ES256 r = s = 0 refused");

    memset(zero, 0xff, sizeof(zero));
    b64url(tok + n, zero, sizeof(zero));
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "ES256 r, s beyond the order refused");

    /* an ES256 signature verified with the bits of an RSA one */

    make_token(tok, rsa, HDR_RS, "{" BASE "}");
    strcpy(t, tok);
    make_token(tok, ec, HDR_ES, "{" BASE "}");
    replace_segment(tok, 2, strrchr(t, '.') + 1);
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "ES256 with an RSA-sized signature refused");
}


static void
test_shape(void)
{
    char  t[TOKEN_MAX];

    is_int(verify(""), TENANT_JWT_MALFORMED, "empty token");
    is_int(verify("abc"), TENANT_JWT_MALFORMED, "one segment");
    is_int(verify("abc.def"), TENANT_JWT_MALFORMED, "two segments");
    is_int(verify(".."), TENANT_JWT_MALFORMED, "three empty segments");
    is_int(verify("a.b.c.d.e"), TENANT_JWT_MALFORMED, "five segments (JWE)");

    make_token(tok, rsa, HDR_RS, "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_OK, "shape: the base token is valid");

    strcpy(t, tok);
    strcat(t, ".");
    is_int(verify(t), TENANT_JWT_MALFORMED, "four segments (trailing dot)");

    strcpy(t, tok);
    strcat(t, ".xyz");
    is_int(verify(t), TENANT_JWT_MALFORMED, "four segments");

    strcpy(t, strchr(tok, '.'));
    is_int(verify(t), TENANT_JWT_MALFORMED, "empty header segment");

    strcpy(t, tok);
    replace_segment(t, 1, "");
    is_int(verify(t), TENANT_JWT_MALFORMED, "empty payload segment");

    /* bad base64url */

    strcpy(t, tok);
    t[3] = '+';
    is_int(verify(t), TENANT_JWT_MALFORMED, "'+' in header");

    strcpy(t, tok);
    t[3] = '/';
    is_int(verify(t), TENANT_JWT_MALFORMED, "'/' in header");

    strcpy(t, tok);
    *(strchr(t, '.') + 2) = '*';
    is_int(verify(t), TENANT_JWT_MALFORMED, "'*' in payload");

    strcpy(t, tok);
    *(strrchr(t, '.') + 2) = '=';
    is_int(verify(t), TENANT_JWT_MALFORMED, "'=' in signature");

    strcpy(t, tok);
    replace_segment(t, 1, "eyJzdWIiOiJ4In0=");
    is_int(verify(t), TENANT_JWT_MALFORMED, "padded payload segment");

    strcpy(t, tok);
    replace_segment(t, 1, "eyJzdWIiOiJ4In0Ae");
    is_int(verify(t), TENANT_JWT_MALFORMED, "payload length 1 mod 4");

    strcpy(t, tok);
    do {
        strcat(t, "A");
    } while (strlen(strrchr(t, '.') + 1) % 4 != 1);
    is_int(verify(t), TENANT_JWT_MALFORMED, "signature length 1 mod 4");

    strcpy(t, tok);
    t[5] = ' ';
    is_int(verify(t), TENANT_JWT_MALFORMED, "space in token");

    is_int(tenant_jwt_verify((const unsigned char *) "eyJh\0ZXh.e30.e30", 16,
                             &ks, &policy, &claims),
           TENANT_JWT_MALFORMED, "NUL in token");
}


static void
test_json(void)
{
    char  t[TOKEN_MAX];

    make_token(tok, rsa, HDR_RS, "{" BASE "}");

    b64url(t, (const unsigned char *) "not json", 8);
    strcpy(pl, tok);
    replace_segment(pl, 0, t);
    is_int(verify(pl), TENANT_JWT_BAD_HEADER, "header not JSON");

    b64url(t, (const unsigned char *) "[\"RS256\"]", 9);
    strcpy(pl, tok);
    replace_segment(pl, 0, t);
    is_int(verify(pl), TENANT_JWT_BAD_HEADER, "header a JSON array");

    b64url(t, (const unsigned char *) "\"RS256\"", 7);
    strcpy(pl, tok);
    replace_segment(pl, 0, t);
    is_int(verify(pl), TENANT_JWT_BAD_HEADER, "header a JSON string");

    b64url(t, (const unsigned char *) "{\"alg\":\"RS256\"}x", 16);
    strcpy(pl, tok);
    replace_segment(pl, 0, t);
    is_int(verify(pl), TENANT_JWT_BAD_HEADER, "header with trailing bytes");

    make_token(tok, rsa,
               "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"alg\":\"none\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "duplicate alg in header");

    make_token(tok, rsa,
               "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"kid\":\"rsa9\"}",
               "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_HEADER, "duplicate kid in header");

    /* payloads signed for real, so only the JSON is wrong */

    is_int(rs("not json"), TENANT_JWT_BAD_PAYLOAD, "payload not JSON");
    is_int(rs("[1,2]"), TENANT_JWT_BAD_PAYLOAD, "payload a JSON array");
    is_int(rs("42"), TENANT_JWT_BAD_PAYLOAD, "payload a JSON number");
    is_int(rs("{" BASE "} {}"), TENANT_JWT_BAD_PAYLOAD,
           "payload with trailing JSON");
    is_int(rs("{" BASE ",\"sub\":\"user_admin\"}"), TENANT_JWT_BAD_PAYLOAD,
           "duplicate sub in payload");
    is_int(rs("{" BASE ",\"exp\":9999999999}"), TENANT_JWT_BAD_PAYLOAD,
           "duplicate exp in payload");
    is_int(rs("{" BASE ",\"o\":{\"id\":\"a\",\"id\":\"b\"},\"v\":2}"),
           TENANT_JWT_BAD_PAYLOAD, "duplicate key in nested object");
    is_int(rs("{" BASE ",\"x\":\"\\u0000\"}"), TENANT_JWT_BAD_PAYLOAD,
           "NUL escape in payload refused");
    is_int(rs("{" BASE ",\"x\":\"\xff\"}"), TENANT_JWT_BAD_PAYLOAD,
           "invalid UTF-8 in payload refused");
}


static void
test_size(void)
{
    int     found;
    size_t  n, pad, len;
    char    big[TOKEN_MAX / 2];

    memset(big, 'x', 16000);
    big[16000] = '\0';

    rs(P("{" BASE ",\"pad\":\"%s\"}", big));
    ok(strlen(tok) > 16384, "16 KB token built (%zu bytes)", strlen(tok));
    is_int(verify(tok), TENANT_JWT_TOO_LARGE, "16 KB token refused");

    /* find the padding giving a token of exactly TENANT_JWT_MAX_LEN */

    found = 0;

    for (pad = 5000; pad < 7000; pad++) {
        memset(big, 'x', pad);
        big[pad] = '\0';
        P("{" BASE ",\"pad\":\"%s\"}", big);

        n = strlen(pl);
        len = strlen(HDR_RS);
        len = (len * 4 + 2) / 3 + 1 + (n * 4 + 2) / 3 + 1 + 342;

        if (len == TENANT_JWT_MAX_LEN) {
            found = 1;
            break;
        }
    }

    if (!found) {
        bail("no padding for an 8192-byte token");
    }

    is_int(rs(pl), TENANT_JWT_OK, "token of exactly the maximal size valid");
    is_int(strlen(tok), TENANT_JWT_MAX_LEN, "  and it is %d bytes",
           TENANT_JWT_MAX_LEN);

    strcat(tok, "A");
    is_int(verify(tok), TENANT_JWT_TOO_LARGE, "one byte more: too large");

    is_int(tenant_jwt_verify((const unsigned char *) "x", (size_t) -1,
                             &ks, &policy, &claims),
           TENANT_JWT_TOO_LARGE, "huge length checked before reading");
}


static void
test_time(void)
{
    is_int(rs("{\"sub\":\"u\",\"exp\":1699999000}"), TENANT_JWT_EXPIRED,
           "expired");
    is_int(rs("{\"sub\":\"u\",\"exp\":1699999997}"), TENANT_JWT_EXPIRED,
           "expired 3 s ago, no leeway");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000000}"), TENANT_JWT_OK,
           "exp == now is still valid");
    is_int(rs("{\"sub\":\"u\",\"exp\":1699999999}"), TENANT_JWT_EXPIRED,
           "exp == now - 1 expired");

    policy.leeway = 5;
    is_int(rs("{\"sub\":\"u\",\"exp\":1699999997}"), TENANT_JWT_OK,
           "expired 3 s ago, leeway 5");
    is_int(rs("{\"sub\":\"u\",\"exp\":1699999994}"), TENANT_JWT_EXPIRED,
           "expired 6 s ago, leeway 5");
    policy.leeway = 0;

    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000100}"),
           TENANT_JWT_NOT_YET_VALID, "nbf in the future");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000003}"),
           TENANT_JWT_NOT_YET_VALID, "nbf 3 s ahead, no leeway");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000000}"),
           TENANT_JWT_OK, "nbf == now valid");

    policy.leeway = 5;
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000003}"),
           TENANT_JWT_OK, "nbf 3 s ahead, leeway 5");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000006}"),
           TENANT_JWT_NOT_YET_VALID, "nbf 6 s ahead, leeway 5");
    policy.leeway = 0;

    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600.75}"), TENANT_JWT_OK,
           "real exp accepted");
    is_int(claims.exp, 1700000600, "real exp truncated to seconds");
    is_int(rs("{\"sub\":\"u\",\"exp\":1.6e9}"), TENANT_JWT_EXPIRED,
           "real exp in the past expired");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1.0e9,"
              "\"iat\":1.0e9}"),
           TENANT_JWT_OK, "real nbf and iat accepted");
    is_int(claims.iat, 1000000000, "real iat stored");

    is_int(rs("{\"sub\":\"u\"}"), TENANT_JWT_BAD_CLAIM, "missing exp");
    is_int(rs("{\"sub\":\"u\",\"exp\":null}"), TENANT_JWT_BAD_CLAIM,
           "null exp");
    is_int(rs("{\"sub\":\"u\",\"exp\":\"1700000600\"}"), TENANT_JWT_BAD_CLAIM,
           "string exp");
    is_int(rs("{\"sub\":\"u\",\"exp\":true}"), TENANT_JWT_BAD_CLAIM,
           "boolean exp");
    is_int(rs("{\"sub\":\"u\",\"exp\":1e300}"), TENANT_JWT_BAD_CLAIM,
           "exp out of range");

    /*
     * Integer times outside +-2^62 are refused like real ones: exp + leeway
     * and nbf - leeway cannot overflow in the module's arithmetic.
     */

    is_int(rs("{\"sub\":\"u\",\"exp\":4611686018427387903}"),
           TENANT_JWT_OK, "exp 2^62 - 1 accepted");
    is_int(claims.exp, 4611686018427387903LL, "exp 2^62 - 1 stored");
    is_int(rs("{\"sub\":\"u\",\"exp\":4611686018427387904}"),
           TENANT_JWT_BAD_CLAIM, "exp 2^62 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":4611686018427387905}"),
           TENANT_JWT_BAD_CLAIM, "exp 2^62 + 1 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":9223372036854775807}"),
           TENANT_JWT_BAD_CLAIM, "exp 2^63 - 1 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":-9223372036854775808}"),
           TENANT_JWT_BAD_CLAIM, "exp -2^63 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":-4611686018427387904}"),
           TENANT_JWT_BAD_CLAIM, "exp -2^62 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":-4611686018427387903}"),
           TENANT_JWT_EXPIRED, "exp -2^62 + 1 in range, expired");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"nbf\":-4611686018427387903}"),
           TENANT_JWT_OK, "nbf -2^62 + 1 accepted");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"nbf\":-9223372036854775808}"),
           TENANT_JWT_BAD_CLAIM, "nbf -2^63 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"nbf\":-4611686018427387905}"),
           TENANT_JWT_BAD_CLAIM, "nbf -2^62 - 1 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"nbf\":9223372036854775807}"),
           TENANT_JWT_BAD_CLAIM, "nbf 2^63 - 1 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"iat\":4611686018427387905}"),
           TENANT_JWT_BAD_CLAIM, "iat 2^62 + 1 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"iat\":-9223372036854775808}"),
           TENANT_JWT_BAD_CLAIM, "iat -2^63 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"iat\":9223372036854775807}"),
           TENANT_JWT_BAD_CLAIM, "iat 2^63 - 1 refused");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,"
              "\"nbf\":4611686018427387904.0}"),
           TENANT_JWT_BAD_CLAIM, "real nbf 2^62 refused");

    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":\"0\"}"),
           TENANT_JWT_BAD_CLAIM, "string nbf");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"iat\":[1]}"),
           TENANT_JWT_BAD_CLAIM, "array iat");

    is_int(rs("{\"sub\":\"u\",\"exp\":1699999000,\"v\":2,\"sts\":\"pending\"}"),
           TENANT_JWT_EXPIRED, "expired is reported before pending");
}


static void
test_issuer_azp(void)
{
    const char  *azp[2];
    size_t       azp_len[2];

    policy.issuer = "https://clerk.example.com";
    policy.issuer_len = strlen(policy.issuer);

    is_int(rs("{" BASE ",\"iss\":\"https://clerk.example.com\"}"),
           TENANT_JWT_OK, "iss matches");
    is_int(rs("{" BASE ",\"iss\":\"https://evil.example.com\"}"),
           TENANT_JWT_BAD_ISSUER, "iss mismatch");
    is_int(rs("{" BASE ",\"iss\":\"https://clerk.example.com.evil\"}"),
           TENANT_JWT_BAD_ISSUER, "iss longer (configured one a prefix)");
    is_int(rs("{" BASE ",\"iss\":\"https://clerk.example.co\"}"),
           TENANT_JWT_BAD_ISSUER, "iss a prefix of the configured one");
    is_int(rs("{" BASE ",\"iss\":\"HTTPS://CLERK.EXAMPLE.COM\"}"),
           TENANT_JWT_BAD_ISSUER, "iss compared byte for byte");
    is_int(rs("{" BASE "}"), TENANT_JWT_BAD_ISSUER, "iss missing");
    is_int(rs("{" BASE ",\"iss\":42}"), TENANT_JWT_BAD_CLAIM,
           "iss not a string");

    policy.issuer = NULL;
    policy.issuer_len = 0;

    is_int(rs("{" BASE ",\"iss\":\"https://anything\"}"), TENANT_JWT_OK,
           "iss not checked without a configured issuer");

    azp[0] = "https://app.example.com";
    azp[1] = "https://admin.example.com";
    azp_len[0] = strlen(azp[0]);
    azp_len[1] = strlen(azp[1]);

    policy.azp = azp;
    policy.azp_len = azp_len;
    policy.nazp = 2;

    is_int(rs("{" BASE ",\"azp\":\"https://app.example.com\"}"),
           TENANT_JWT_OK, "azp first of the list");
    is_int(rs("{" BASE ",\"azp\":\"https://admin.example.com\"}"),
           TENANT_JWT_OK, "azp second of the list");
    is_int(rs("{" BASE ",\"azp\":\"https://evil.example.com\"}"),
           TENANT_JWT_BAD_AZP, "azp not in the list");
    is_int(rs("{" BASE ",\"azp\":\"https://app.example.com/\"}"),
           TENANT_JWT_BAD_AZP, "azp with an extra byte");
    is_int(rs("{" BASE ",\"azp\":\"https://app.example.co\"}"),
           TENANT_JWT_BAD_AZP, "azp a prefix of an allowed one");
    is_int(rs("{" BASE "}"), TENANT_JWT_BAD_AZP, "azp missing");
    is_int(rs("{" BASE ",\"azp\":[\"https://app.example.com\"]}"),
           TENANT_JWT_BAD_CLAIM, "azp not a string");

    policy.issuer = "https://clerk.example.com";
    policy.issuer_len = strlen(policy.issuer);

    is_int(rs("{" BASE ",\"azp\":\"https://evil.example.com\","
              "\"iss\":\"https://evil.example.com\"}"),
           TENANT_JWT_BAD_ISSUER, "iss is checked before azp");

    policy.nazp = 0;
    policy.issuer = NULL;

    is_int(rs("{" BASE ",\"azp\":\"https://evil.example.com\"}"),
           TENANT_JWT_OK, "azp not checked when nazp is 0");

    reset_policy();
}


static void
test_session_status(void)
{
    char  t[TOKEN_MAX], *p;

    is_int(es("{" BASE ",\"v\":2,\"sts\":\"pending\",\"o\":{\"id\":\"o\"}}"),
           TENANT_JWT_SESSION_PENDING, "v2 sts pending refused");
    strcpy(t, tok);

    is_int(es("{" BASE ",\"v\":2,\"sts\":\"active\"}"), TENANT_JWT_OK,
           "v2 sts active valid");
    is_int(rs("{" BASE ",\"v\":2,\"sts\":\"pendingx\"}"), TENANT_JWT_OK,
           "sts compared whole");
    is_int(rs("{" BASE ",\"v\":2,\"sts\":1}"), TENANT_JWT_BAD_CLAIM,
           "sts not a string");

    /* pending comes after the signature */

    p = strrchr(t, '.') + 3;
    *p = (*p == 'A') ? 'B' : 'A';
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE,
           "pending with a bad signature: bad signature");

    policy.issuer = "https://clerk.example.com";
    policy.issuer_len = strlen(policy.issuer);
    is_int(rs("{" BASE ",\"v\":2,\"sts\":\"pending\",\"iss\":\"x\"}"),
           TENANT_JWT_BAD_ISSUER, "pending with a bad issuer: bad issuer");
    reset_policy();
}


/*
 * claims.session: a non-empty string "sid" (Clerk session tokens), never a
 * refusal by itself; JWT template tokens have none.
 */

static void
test_session_id(void)
{
    is_int(rs("{" BASE ",\"sid\":\"sess_2abc\"}"), TENANT_JWT_OK,
           "v1 with sid valid");
    is_int(claims.session, 1, "  a session token");

    is_int(es("{" BASE ",\"v\":2,\"sts\":\"active\",\"sid\":\"sess_2abc\"}"),
           TENANT_JWT_OK, "v2 with sid valid");
    is_int(claims.session, 1, "  a session token");

    /* what a JWT template token looks like: jti, no sid */

    is_int(rs("{" BASE ",\"jti\":\"10db7f531a90cb2faea4\","
              "\"metadata\":{\"role\":\"admin\"}}"),
           TENANT_JWT_OK, "template token (jti, no sid) valid");
    is_int(claims.session, 0, "  not a session token");
    is_str(claims.metadata_role, "admin", "  its role is still read");

    is_int(rs("{" BASE ",\"sid\":\"\"}"), TENANT_JWT_OK, "empty sid valid");
    is_int(claims.session, 0, "  not a session token");

    is_int(rs("{" BASE ",\"sid\":null}"), TENANT_JWT_OK, "sid null valid");
    is_int(claims.session, 0, "  not a session token");

    is_int(rs("{" BASE ",\"sid\":12345}"), TENANT_JWT_OK, "numeric sid valid");
    is_int(claims.session, 0, "  not a session token");

    is_int(rs("{" BASE ",\"sid\":true}"), TENANT_JWT_OK, "sid true valid");
    is_int(claims.session, 0, "  not a session token");

    is_int(rs("{" BASE ",\"sid\":[\"sess_1\"]}"), TENANT_JWT_OK,
           "sid array valid");
    is_int(claims.session, 0, "  not a session token");

    is_int(rs("{" BASE ",\"sid\":{\"id\":\"sess_1\"}}"), TENANT_JWT_OK,
           "sid object valid");
    is_int(claims.session, 0, "  not a session token");

    /* only the top-level member counts: act.sid is an impersonator's */

    is_int(rs("{" BASE ",\"act\":{\"sid\":\"sess_456\",\"sub\":\"u\"},"
              "\"metadata\":{\"sid\":\"sess_1\"}}"),
           TENANT_JWT_OK, "sid only inside act and metadata valid");
    is_int(claims.session, 0, "  not a session token");

    /* nothing carries over from the previous token */

    rs("{" BASE ",\"sid\":\"sess_2abc\"}");
    is_int(rs("{" BASE "}"), TENANT_JWT_OK, "no sid after one with sid");
    is_int(claims.session, 0, "  not a session token");
}


static void
test_claims(void)
{
    tenant_jwt_claims_t  zero;

    is_int(rs("{" BASE ",\"org_id\":\"org_1\\r\\nX-Admin: 1\"}"),
           TENANT_JWT_BAD_CLAIM, "CR LF in org_id");
    is_int(rs("{" BASE ",\"org_role\":\"admin\\n\"}"), TENANT_JWT_BAD_CLAIM,
           "LF in org_role");
    is_int(rs("{" BASE ",\"org_slug\":\"a\\rb\"}"), TENANT_JWT_BAD_CLAIM,
           "CR in org_slug");
    is_int(rs("{\"sub\":\"user\\u007f\",\"exp\":1700000600}"),
           TENANT_JWT_BAD_CLAIM, "DEL in sub");
    is_int(rs("{\"sub\":\"user\\u001b[31m\",\"exp\":1700000600}"),
           TENANT_JWT_BAD_CLAIM, "ESC in sub");
    is_int(rs("{" BASE ",\"metadata\":{\"role\":\"a\\tb\"}}"),
           TENANT_JWT_BAD_CLAIM, "TAB in metadata.role");
    is_int(es("{" BASE ",\"v\":2,\"o\":{\"id\":\"o\",\"rol\":\"a\\r\\nb\"}}"),
           TENANT_JWT_BAD_CLAIM, "CR LF in v2 o.rol");
    is_int(es("{" BASE ",\"v\":2,\"o\":{\"slg\":\"\\n\"}}"),
           TENANT_JWT_BAD_CLAIM, "LF in v2 o.slg");

    /* lengths */

    is_int(rs("{" BASE ",\"org_slug\":\"" C128 "\"}"), TENANT_JWT_OK,
           "claim of exactly %d bytes accepted", TENANT_CLAIM_MAX);
    is_int(claims.org_slug_len, TENANT_CLAIM_MAX, "  and copied whole");
    is_int(strlen(claims.org_slug), TENANT_CLAIM_MAX, "  NUL-terminated");

    is_int(rs("{" BASE ",\"org_slug\":\"" C128 "x\"}"), TENANT_JWT_BAD_CLAIM,
           "claim of %d bytes refused", TENANT_CLAIM_MAX + 1);
    is_int(rs("{\"sub\":\"" C128 "x\",\"exp\":1700000600}"),
           TENANT_JWT_BAD_CLAIM, "sub too long");
    is_int(rs("{" BASE ",\"metadata\":{\"role\":\"" C128 "y\"}}"),
           TENANT_JWT_BAD_CLAIM, "metadata.role too long");
    is_int(es("{" BASE ",\"v\":2,\"o\":{\"id\":\"" C128 "z\"}}"),
           TENANT_JWT_BAD_CLAIM, "v2 o.id too long");

    /* types */

    is_int(rs("{\"sub\":42,\"exp\":1700000600}"), TENANT_JWT_BAD_CLAIM,
           "numeric sub");
    is_int(rs("{\"sub\":{\"id\":\"u\"},\"exp\":1700000600}"),
           TENANT_JWT_BAD_CLAIM, "object sub");
    is_int(rs("{\"sub\":null,\"exp\":1700000600}"), TENANT_JWT_BAD_CLAIM,
           "null sub");
    is_int(rs("{\"exp\":1700000600}"), TENANT_JWT_BAD_CLAIM, "missing sub");
    is_int(rs("{\"sub\":\"\",\"exp\":1700000600}"), TENANT_JWT_BAD_CLAIM,
           "empty sub");
    is_int(rs("{" BASE ",\"org_id\":123}"), TENANT_JWT_BAD_CLAIM,
           "numeric org_id");
    is_int(rs("{" BASE ",\"org_role\":[\"admin\"]}"), TENANT_JWT_BAD_CLAIM,
           "array org_role");
    is_int(rs("{" BASE ",\"v\":2,\"o\":\"org_1\"}"), TENANT_JWT_BAD_CLAIM,
           "v2 o not an object");
    is_int(rs("{" BASE ",\"v\":2,\"o\":{\"id\":7}}"), TENANT_JWT_BAD_CLAIM,
           "v2 numeric o.id");
    is_int(rs("{" BASE ",\"v\":3}"), TENANT_JWT_BAD_CLAIM,
           "unknown token version");
    is_int(rs("{" BASE ",\"v\":\"2\"}"), TENANT_JWT_BAD_CLAIM,
           "string token version");
    is_int(rs("{" BASE ",\"metadata\":\"cfo\"}"), TENANT_JWT_BAD_CLAIM,
           "metadata not an object");
    is_int(rs("{" BASE ",\"metadata\":{\"role\":1}}"), TENANT_JWT_BAD_CLAIM,
           "numeric metadata.role");
    is_int(rs("{" BASE ",\"metadata\":{}}"), TENANT_JWT_OK,
           "metadata without role");

    /* claims are zeroed first, whatever the outcome */

    memset(&zero, 0, sizeof(zero));

    memset(&claims, 0xAA, sizeof(claims));
    is_int(verify("garbage"), TENANT_JWT_MALFORMED, "garbage token");
    ok(memcmp(&claims, &zero, sizeof(claims)) == 0,
       "claims zeroed on an early failure");

    rs("{" BASE ",\"org_id\":\"org_1\"}");
    memset(&claims, 0xAA, sizeof(claims));
    is_int(verify("e30.e30.e30"), TENANT_JWT_BAD_HEADER, "bad header token");
    ok(memcmp(&claims, &zero, sizeof(claims)) == 0,
       "claims of a previous token do not survive");
}


static void
test_status_strings(void)
{
    int          i, j, unique, nonempty;
    const char  *a, *b;

    unique = 1;
    nonempty = 1;

    for (i = TENANT_JWT_OK; i <= TENANT_JWT_ERROR; i++) {
        a = tenant_jwt_status_code((tenant_jwt_status_t) i);
        b = tenant_jwt_status_text((tenant_jwt_status_t) i);

        if (a == NULL || b == NULL || *a == '\0' || *b == '\0') {
            nonempty = 0;
            continue;
        }

        for (j = TENANT_JWT_OK; j < i; j++) {
            if (strcmp(a, tenant_jwt_status_code((tenant_jwt_status_t) j))
                == 0)
            {
                unique = 0;
            }
        }
    }

    ok(nonempty, "every status has a code and a text");
    ok(unique, "status codes are distinct");

    is_str(tenant_jwt_status_code(TENANT_JWT_TOO_LARGE), "token_too_large",
           "code: too large");
    is_str(tenant_jwt_status_code(TENANT_JWT_MALFORMED), "token_malformed",
           "code: malformed");
    is_str(tenant_jwt_status_code(TENANT_JWT_BAD_HEADER), "token_bad_header",
           "code: bad header");
    is_str(tenant_jwt_status_code(TENANT_JWT_ALG_NOT_ALLOWED),
           "algorithm_not_allowed", "code: alg not allowed");
    is_str(tenant_jwt_status_code(TENANT_JWT_UNKNOWN_KID), "unknown_key",
           "code: unknown key");
    is_str(tenant_jwt_status_code(TENANT_JWT_BAD_SIGNATURE), "bad_signature",
           "code: bad signature");
    is_str(tenant_jwt_status_code(TENANT_JWT_BAD_PAYLOAD),
           "token_bad_payload", "code: bad payload");
    is_str(tenant_jwt_status_code(TENANT_JWT_BAD_CLAIM), "bad_claim",
           "code: bad claim");
    is_str(tenant_jwt_status_code(TENANT_JWT_EXPIRED), "token_expired",
           "code: expired");
    is_str(tenant_jwt_status_code(TENANT_JWT_NOT_YET_VALID),
           "token_not_yet_valid", "code: not yet valid");
    is_str(tenant_jwt_status_code(TENANT_JWT_BAD_ISSUER), "bad_issuer",
           "code: bad issuer");
    is_str(tenant_jwt_status_code(TENANT_JWT_BAD_AZP), "bad_authorized_party",
           "code: bad azp");
    is_str(tenant_jwt_status_code(TENANT_JWT_SESSION_PENDING),
           "session_pending", "code: session pending");
    is_str(tenant_jwt_status_code(TENANT_JWT_ERROR), "verification_error",
           "code: error");
    is_str(tenant_jwt_status_text(TENANT_JWT_EXPIRED), "the token has expired",
           "text: expired");
    ok(tenant_jwt_status_code((tenant_jwt_status_t) 999) != NULL
       && tenant_jwt_status_text((tenant_jwt_status_t) 999) != NULL,
       "out-of-range status still has strings");
}


/*
 * Uncovered paths of tenant_jwt.c (docs/coverage-gaps.md): an invalid
 * character in a 2-character tail group, reals below -2^62, an issuer and
 * authorized parties given without their lengths, and a configured role
 * claim path (with empty and over-long segments, which the module's
 * configuration refuses but the API tolerates).
 */

static void
test_gaps(void)
{
    size_t          n;
    char            t[TOKEN_MAX], path[200];
    const char     *azp[2];
    unsigned char   out[64];

    /* base64url: invalid characters in the last, partial group */

    is_int(tenant_base64url_decode(out, (const unsigned char *) "Q*", 2), -1,
           "b64: invalid char in a 2-char tail group");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "*A", 2), -1,
           "b64: invalid first char in a 2-char tail group");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "TWFuQ.", 6),
           -1, "b64: '.' in a 2-char tail group");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "Q\x80", 2),
           -1, "b64: byte >= 0x80 in a 2-char tail group");
    is_int(tenant_base64url_decode(out, (const unsigned char *) "QQ*", 3),
           -1, "b64: invalid char in a 3-char tail group");

    /* a token whose signature (342 chars: a 2-char tail) ends in "A*" */

    rs("{" BASE "}");
    strcpy(t, tok);
    n = strlen(t);
    is_int(n - (size_t) (strrchr(t, '.') + 1 - t), 342,
           "RS256 signature of 342 chars");
    t[n - 2] = 'A';
    t[n - 1] = '*';
    is_int(verify(t), TENANT_JWT_MALFORMED, "signature ending in A* malformed");
    t[n - 1] = 'A';
    is_int(verify(t), TENANT_JWT_BAD_SIGNATURE,
           "  the same ending in AA: well-formed, bad signature");

    /* reals beyond -2^62 */

    is_int(rs("{\"sub\":\"u\",\"exp\":-1e300}"), TENANT_JWT_BAD_CLAIM,
           "exp -1e300 out of range");
    is_int(rs("{\"sub\":\"u\",\"exp\":-4.7e18}"), TENANT_JWT_BAD_CLAIM,
           "exp -4.7e18 (below -2^62) out of range");
    is_int(rs("{\"sub\":\"u\",\"exp\":-4.6e18}"), TENANT_JWT_EXPIRED,
           "exp -4.6e18 (above -2^62) in range, expired");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":-1e300}"),
           TENANT_JWT_BAD_CLAIM, "nbf -1e300 out of range");
    is_int(rs("{\"sub\":\"u\",\"exp\":1700000600,\"iat\":-1e300}"),
           TENANT_JWT_BAD_CLAIM, "iat -1e300 out of range");

    /* issuer and azp without lengths: strlen */

    policy.issuer = "https://clerk.example.com";
    policy.issuer_len = 0;

    is_int(rs("{" BASE ",\"iss\":\"https://clerk.example.com\"}"),
           TENANT_JWT_OK, "issuer_len 0: iss matches by strlen");
    is_int(rs("{" BASE ",\"iss\":\"https://clerk.example.co\"}"),
           TENANT_JWT_BAD_ISSUER, "issuer_len 0: a prefix refused");
    is_int(rs("{" BASE ",\"iss\":\"https://clerk.example.com/\"}"),
           TENANT_JWT_BAD_ISSUER, "issuer_len 0: a longer iss refused");

    policy.issuer = NULL;

    azp[0] = "https://app.example.com";
    azp[1] = "https://admin.example.com";
    policy.azp = azp;
    policy.azp_len = NULL;
    policy.nazp = 2;

    is_int(rs("{" BASE ",\"azp\":\"https://admin.example.com\"}"),
           TENANT_JWT_OK, "azp_len NULL: azp matches by strlen");
    is_int(rs("{" BASE ",\"azp\":\"https://app.example.co\"}"),
           TENANT_JWT_BAD_AZP, "azp_len NULL: a prefix refused");
    is_int(rs("{" BASE ",\"azp\":\"https://evil.example.com\"}"),
           TENANT_JWT_BAD_AZP, "azp_len NULL: another azp refused");

    reset_policy();

    /* a configured role claim path */

    policy.role_claim = "role";
    is_int(rs("{" BASE ",\"role\":\"admin\",\"metadata\":{\"role\":\"x\"}}"),
           TENANT_JWT_OK, "role_claim role");
    is_str(claims.metadata_role, "admin", "  the top-level role");

    policy.role_claim = "public_metadata.gw-role";
    is_int(rs("{" BASE ",\"public_metadata\":{\"gw-role\":\"ops\"}}"),
           TENANT_JWT_OK, "role_claim public_metadata.gw-role");
    is_str(claims.metadata_role, "ops", "  the nested role");
    is_int(rs("{" BASE ",\"public_metadata\":\"ops\"}"),
           TENANT_JWT_BAD_CLAIM, "  a string on the way is a bad claim");
    is_int(rs("{" BASE "}"), TENANT_JWT_OK, "  absent: no role");
    is_int(claims.metadata_role_len, 0, "  role empty");

    policy.role_claim = "a..b";
    is_int(rs("{" BASE ",\"a\":{\"\":{\"b\":\"r\"}}}"), TENANT_JWT_OK,
           "role_claim with an empty segment: no role");
    is_int(claims.metadata_role_len, 0, "  role empty");

    policy.role_claim = "role.";
    is_int(rs("{" BASE ",\"role\":{\"\":\"r\"}}"), TENANT_JWT_OK,
           "role_claim with a trailing dot: no role");
    is_int(claims.metadata_role_len, 0, "  role empty");

    memset(path, 'r', TENANT_JWT_ROLE_PATH_MAX + 1);
    path[TENANT_JWT_ROLE_PATH_MAX + 1] = '\0';
    policy.role_claim = path;
    is_int(rs(P("{" BASE ",\"%s\":\"r\"}", path)), TENANT_JWT_OK,
           "role_claim segment of %d bytes: no role",
           TENANT_JWT_ROLE_PATH_MAX + 1);
    is_int(claims.metadata_role_len, 0, "  role empty");

    path[TENANT_JWT_ROLE_PATH_MAX] = '\0';
    is_int(rs(P("{" BASE ",\"%s\":\"r\"}", path)), TENANT_JWT_OK,
           "role_claim segment of %d bytes", TENANT_JWT_ROLE_PATH_MAX);
    is_str(claims.metadata_role, "r", "  the role");

    reset_policy();
}


/*
 * The token cache keeps tenant_jwt_pack's compact form: unpacked, it
 * gives every claim the gateway reads as verification gave it.
 */

static void
test_pack(void)
{
    size_t                i;
    tenant_jwt_packed_t   packed;
    tenant_jwt_claims_t   orig, back;
    char                  s60[61], s61[62];

    ok(sizeof(tenant_jwt_packed_t) <= 144,
       "packed claims: %zu bytes (<= 144)", sizeof(tenant_jwt_packed_t));

    is_int(rs("{" BASE ",\"sid\":\"sess_1\",\"org_id\":\"org_2xyz\","
              "\"org_role\":\"org:admin\",\"org_slug\":\"acme\","
              "\"metadata\":{\"role\":\"cfo\"}}"),
           TENANT_JWT_OK, "v1 token with every claim");
    orig = claims;

    is_int(tenant_jwt_pack(&orig, &packed), 0, "  packed");
    memset(&back, 0xaa, sizeof(back));
    is_int(tenant_jwt_unpack(&packed, &back), 0, "  unpacked");

    is_str(back.sub, "user_2abc", "  sub");
    is_int(back.sub_len, 9, "  sub_len");
    is_str(back.org_id, "org_2xyz", "  org_id");
    is_int(back.org_id_len, 8, "  org_id_len");
    is_str(back.org_role, "org:admin", "  org_role");
    is_int(back.org_role_len, 9, "  org_role_len");
    is_str(back.metadata_role, "cfo", "  metadata_role");
    is_int(back.metadata_role_len, 3, "  metadata_role_len");
    ok(back.exp == orig.exp && back.exp == 1700000600, "  exp");
    ok(back.nbf == orig.nbf && back.nbf == 1699999990, "  nbf");
    is_int(back.session, 1, "  session");
    is_int(back.version, orig.version, "  version");
    ok(back.iat == 0 && back.org_slug_len == 0 && back.org_slug[0] == '\0',
       "  iat and org_slug, which nothing reads, are empty");

    /* v2, no sid, no role claim: empty strings stay empty */

    is_int(es("{" BASE ",\"v\":2,\"o\":{\"id\":\"org_9\",\"rol\":\"member\"}}"),
           TENANT_JWT_OK, "v2 token");
    orig = claims;
    is_int(tenant_jwt_pack(&orig, &packed), 0, "  packed");
    memset(&back, 0xaa, sizeof(back));
    is_int(tenant_jwt_unpack(&packed, &back), 0, "  unpacked");
    is_str(back.org_id, "org_9", "  o.id");
    is_str(back.org_role, "member", "  o.rol");
    ok(back.metadata_role_len == 0 && back.metadata_role[0] == '\0',
       "  no metadata.role");
    is_int(back.session, 0, "  no session");
    is_int(back.version, 2, "  version 2");

    /* the bound: the four strings together in TENANT_JWT_PACKED_STR */

    memset(s60, 'a', 60);
    s60[60] = '\0';
    memset(s61, 'b', 61);
    s61[61] = '\0';

    is_int(rs(P("{\"sub\":\"%s\",\"exp\":1700000600,\"org_id\":\"%s\"}",
                s60, s60)),
           TENANT_JWT_OK, "claims of %d bytes together", 120);
    is_int(tenant_jwt_pack(&claims, &packed), 0, "  packed");
    is_int(tenant_jwt_unpack(&packed, &back), 0, "  unpacked");
    ok(back.sub_len == 60 && back.org_id_len == 60
       && memcmp(back.sub, s60, 61) == 0 && memcmp(back.org_id, s60, 61) == 0,
       "  whole");

    is_int(rs(P("{\"sub\":\"%s\",\"exp\":1700000600,\"org_id\":\"%s\"}",
                s60, s61)),
           TENANT_JWT_OK, "claims of %d bytes together", 121);
    is_int(tenant_jwt_pack(&claims, &packed), -1,
           "  not packed (never cut short)");

    /* lengths that do not add up: refused, nothing written */

    is_int(rs("{" BASE ",\"org_id\":\"org_1\"}"), TENANT_JWT_OK, "token");
    is_int(tenant_jwt_pack(&claims, &packed), 0, "  packed");

    for (i = 0; i < 4; i++) {
        tenant_jwt_packed_t  bad = packed;

        switch (i) {
        case 0: bad.sub_len = 255; break;
        case 1: bad.org_id_len = 121; break;
        case 2: bad.org_role_len = 112; break;
        default: bad.metadata_role_len = 200; break;
        }

        memset(&back, 0x55, sizeof(back));
        is_int(tenant_jwt_unpack(&bad, &back), -1,
               "unpack refuses lengths over the buffer (%zu)", i);
        ok(back.sub[0] == 0x55 && back.sub_len == 0x5555,
           "  and writes nothing");
    }
}


/*
 * Verification contexts are kept per key (by the key's address, which a
 * kept context holds on to).  Keys come and go, as with JWKS rotations,
 * many more than the contexts kept: each key verifies its own tokens
 * and no other key's, whatever address it got.
 */

static void
test_key_contexts(void)
{
    int               i, good, bad;
    EVP_PKEY         *key, *prev;
    tenant_keyset_t   set;
    char              pem[4096], t_prev[TOKEN_MAX];

    good = 0;
    bad = 0;
    prev = NULL;

    for (i = 0; i < 80; i++) {
        key = (i % 8 == 0) ? gen_rsa(2048) : gen_ec("P-256");

        memset(&set, 0, sizeof(set));
        pem_of(key, pem, sizeof(pem));

        if (tenant_keyset_add_pem(&set, (const unsigned char *) pem,
                                  strlen(pem), "k", NULL, 0) != 0)
        {
            bail("add_pem rotation");
        }

        make_token(tok, key,
                   (i % 8 == 0) ? "{\"alg\":\"RS256\",\"kid\":\"k\"}"
                                : "{\"alg\":\"ES256\",\"kid\":\"k\"}",
                   "{" BASE "}");

        if (tenant_jwt_verify((const unsigned char *) tok, strlen(tok), &set,
                              &policy, &claims)
            == TENANT_JWT_OK)
        {
            good++;
        }

        /* the previous key's token, of the same type or not: refused */

        if (prev != NULL
            && tenant_jwt_verify((const unsigned char *) t_prev,
                                 strlen(t_prev), &set, &policy, &claims)
               == TENANT_JWT_OK)
        {
            bad++;
        }

        strcpy(t_prev, tok);

        tenant_keyset_free(&set);
        EVP_PKEY_free(prev);
        prev = key;
    }

    EVP_PKEY_free(prev);

    is_int(good, 80, "80 keys in turn: each verifies its own token");
    is_int(bad, 0, "  and none the previous key's");

    /* the first keys again, after their contexts were replaced */

    make_token(tok, rsa, HDR_RS, "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_OK, "the first RSA key still verifies");
    make_token(tok, rsa_other, HDR_RS, "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_BAD_SIGNATURE,
           "  and refuses another key's signature");
    make_token(tok, ec, HDR_ES, "{" BASE "}");
    is_int(verify(tok), TENANT_JWT_OK, "the first EC key still verifies");
}


int
main(void)
{
    char  pem[4096];

    rsa = gen_rsa(2048);
    rsa_other = gen_rsa(2048);
    ec = gen_ec("P-256");
    ec_other = gen_ec("P-256");

    pem_of(rsa, pem_rsa, sizeof(pem_rsa));

    if (tenant_keyset_add_pem(&ks, (const unsigned char *) pem_rsa,
                              strlen(pem_rsa), "rsa1", NULL, 0) != 0)
    {
        bail("add_pem rsa");
    }

    pem_of(ec, pem, sizeof(pem));

    if (tenant_keyset_add_pem(&ks, (const unsigned char *) pem, strlen(pem),
                              "ec1", NULL, 0) != 0)
    {
        bail("add_pem ec");
    }

    reset_policy();

    test_base64url();
    test_valid();
    test_algorithms();
    test_keys();
    test_signatures();
    test_shape();
    test_json();
    test_size();
    test_time();
    test_issuer_azp();
    test_session_status();
    test_session_id();
    test_claims();
    test_status_strings();
    test_gaps();
    test_pack();
    test_key_contexts();

    tenant_keyset_free(&ks);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa_other);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec_other);

    return done_testing();
}
