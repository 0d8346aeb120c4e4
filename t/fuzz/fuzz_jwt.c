/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: tenant_jwt_verify() and tenant_base64url_decode().
 *
 * The first byte of the input selects the mode, the rest is the data:
 *
 *   bit 0   0: the data is a compact JWT, verified as it is;
 *           1: the data is a header and a payload (JSON, not encoded),
 *              from which the harness builds a token whose signature is
 *              valid, so that the payload reaches the claims parser
 *   bit 1   signed mode: RS256 (else ES256)
 *   bit 2   signed mode: the header is the data up to the first 0xff
 *           byte, the payload the rest (else the harness writes the
 *           header and the whole data is the payload)
 *   bit 3   signed mode, ES256, harness header: no kid, signed with the
 *           key that has none (Clerk's networkless PEM key)
 *   bit 4-5 the policy's role_claim: NULL, "metadata.role",
 *           "public_metadata.org.role", "role"
 *   bit 6   the policy checks neither issuer nor azp
 *   bit 7   the policy allows RS256 only
 *
 * The keys are fixed (fuzz_keys.h), so the seed tokens in corpus/jwt/
 * verify.  Checks, abort() on violation: the claims are NUL-terminated
 * strings of their recorded length without control characters; a token
 * accepted agrees with an independent reading of its payload (sub, org,
 * version, exp, nbf, iss, azp); a token the harness signed with a known
 * key is never refused for its shape or its signature; a base64url
 * decoding has the expected length and encodes back to its input.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tenant_jwks.h"
#include "tenant_jwt.h"

#include "../unit/jwt_util.h"
#include "fuzz_keys.h"


#define FUZZ_NOW          1700000000
#define FUZZ_LEEWAY       60
#define FUZZ_ISSUER       "https://clerk.example.com"

#define FUZZ_SIGNED       0x01
#define FUZZ_RSA          0x02
#define FUZZ_OWN_HEADER   0x04
#define FUZZ_NO_KID       0x08
#define FUZZ_ROLE_SHIFT   4
#define FUZZ_NO_ISS_AZP   0x40
#define FUZZ_RS256_ONLY   0x80


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *fuzz_load_key(const char *pem);
static void fuzz_add_key(EVP_PKEY *pkey, const char *kid);
static void fuzz_signed(unsigned mode, const uint8_t *data, size_t size,
    const tenant_jwt_policy_t *policy);
static void fuzz_check(tenant_jwt_status_t rc, const char *token,
    size_t len, const tenant_jwt_policy_t *policy,
    const tenant_jwt_claims_t *claims);
static void fuzz_check_packed(const tenant_jwt_claims_t *claims);
static void fuzz_check_claims(const tenant_jwt_claims_t *claims);
static void fuzz_check_string(const char *s, uint16_t len);
static void fuzz_check_payload(json_t *payload,
    const tenant_jwt_policy_t *policy, const tenant_jwt_claims_t *claims);
static void fuzz_check_member(json_t *v, const char *s, uint16_t len);
static void fuzz_base64url(const uint8_t *data, size_t size);


static tenant_keyset_t  fuzz_keys;
static EVP_PKEY        *fuzz_rsa;
static EVP_PKEY        *fuzz_ec;
static EVP_PKEY        *fuzz_ec2;

static const char      *fuzz_azp[] = {
    "https://app.example.com", "http://localhost:3000"
};

static const char      *fuzz_roles[] = {
    NULL, "metadata.role", "public_metadata.org.role", "role"
};


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    fuzz_rsa = fuzz_load_key(fuzz_rsa_key);
    fuzz_ec = fuzz_load_key(fuzz_ec_key);
    fuzz_ec2 = fuzz_load_key(fuzz_ec2_key);

    /* through the real PEM loader, as tenant_jwt_key does */

    fuzz_add_key(fuzz_rsa, FUZZ_RSA_KID);
    fuzz_add_key(fuzz_ec, FUZZ_EC_KID);
    fuzz_add_key(fuzz_ec2, NULL);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned              mode;
    tenant_jwt_claims_t   claims;
    tenant_jwt_status_t   rc;
    tenant_jwt_policy_t   policy;

    fuzz_base64url(data, size);

    if (size == 0) {
        return 0;
    }

    mode = data[0];
    data++;
    size--;

    memset(&policy, 0, sizeof(tenant_jwt_policy_t));
    policy.algorithms = (mode & FUZZ_RS256_ONLY)
                        ? TENANT_JWT_RS256
                        : TENANT_JWT_RS256 | TENANT_JWT_ES256;
    policy.now = FUZZ_NOW;
    policy.leeway = FUZZ_LEEWAY;
    policy.role_claim = fuzz_roles[(mode >> FUZZ_ROLE_SHIFT) & 3];

    if (!(mode & FUZZ_NO_ISS_AZP)) {
        policy.issuer = FUZZ_ISSUER;
        policy.issuer_len = sizeof(FUZZ_ISSUER) - 1;
        policy.azp = fuzz_azp;
        policy.nazp = sizeof(fuzz_azp) / sizeof(fuzz_azp[0]);
    }

    if (mode & FUZZ_SIGNED) {
        fuzz_signed(mode, data, size, &policy);
        return 0;
    }

    rc = tenant_jwt_verify(data, size, &fuzz_keys, &policy, &claims);

    fuzz_check(rc, (const char *) data, size, &policy, &claims);

    return 0;
}


static EVP_PKEY *
fuzz_load_key(const char *pem)
{
    BIO       *bio;
    EVP_PKEY  *pkey;

    bio = BIO_new_mem_buf(pem, -1);
    pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);

    if (pkey == NULL) {
        abort();
    }

    return pkey;
}


static void
fuzz_add_key(EVP_PKEY *pkey, const char *kid)
{
    char    pem[4096], err[256];
    size_t  n;

    n = pem_of(pkey, pem, sizeof(pem));

    if (tenant_keyset_add_pem(&fuzz_keys, (unsigned char *) pem, n, kid,
                              err, sizeof(err))
        != 0)
    {
        abort();
    }
}


/* A token built from the data and signed for real with a known key. */

static void
fuzz_signed(unsigned mode, const uint8_t *data, size_t size,
    const tenant_jwt_policy_t *policy)
{
    char                 *token;
    size_t                hlen, plen, n, slen;
    EVP_PKEY             *pkey;
    const char           *header;
    tenant_jwt_claims_t   claims;
    tenant_jwt_status_t   rc;
    const uint8_t        *sep, *payload;
    unsigned char         sig[1024];

    if (mode & FUZZ_RSA) {
        pkey = fuzz_rsa;
        header = "{\"alg\":\"RS256\",\"kid\":\"" FUZZ_RSA_KID "\","
                 "\"typ\":\"JWT\"}";

    } else if (mode & FUZZ_NO_KID) {
        pkey = fuzz_ec2;
        header = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";

    } else {
        pkey = fuzz_ec;
        header = "{\"alg\":\"ES256\",\"kid\":\"" FUZZ_EC_KID "\","
                 "\"typ\":\"JWT\"}";
    }

    if (mode & FUZZ_OWN_HEADER) {
        sep = memchr(data, 0xff, size);

        if (sep == NULL) {
            return;
        }

        header = (const char *) data;
        hlen = sep - data;
        payload = sep + 1;
        plen = size - hlen - 1;

    } else {
        hlen = strlen(header);
        payload = data;
        plen = size;
    }

    /* signing a token that is refused for its size anyway is slow */

    if ((hlen + plen) / 3 * 4 > TENANT_JWT_MAX_LEN) {
        return;
    }

    token = malloc((hlen + 2) / 3 * 4 + (plen + 2) / 3 * 4
                   + sizeof(sig) / 3 * 4 + 8);
    if (token == NULL) {
        abort();
    }

    n = b64url(token, (const unsigned char *) header, hlen);
    token[n++] = '.';
    n += b64url(token + n, payload, plen);

    slen = sign_raw(pkey, token, n, sig, 0);

    token[n++] = '.';
    n += b64url(token + n, sig, slen);

    rc = tenant_jwt_verify((unsigned char *) token, n, &fuzz_keys, policy,
                           &claims);

    fuzz_check(rc, token, n, policy, &claims);

    /*
     * The signature is valid and made by a key of the set that the
     * header names: only the size, the policy's algorithms or the payload
     * may be refused.
     */

    if (!(mode & FUZZ_OWN_HEADER) && plen > 0
        && n <= TENANT_JWT_MAX_LEN
        && (rc == TENANT_JWT_MALFORMED || rc == TENANT_JWT_BAD_HEADER
            || (rc == TENANT_JWT_ALG_NOT_ALLOWED
                && (policy->algorithms & ((mode & FUZZ_RSA)
                                          ? TENANT_JWT_RS256
                                          : TENANT_JWT_ES256)))
            || rc == TENANT_JWT_UNKNOWN_KID
            || rc == TENANT_JWT_BAD_SIGNATURE || rc == TENANT_JWT_ERROR))
    {
        abort();
    }

    free(token);
}


static void
fuzz_check(tenant_jwt_status_t rc, const char *token, size_t len,
    const tenant_jwt_policy_t *policy, const tenant_jwt_claims_t *claims)
{
    long           n;
    json_t        *payload;
    const char    *dot1, *dot2;
    unsigned char *buf;

    if ((unsigned) rc > TENANT_JWT_ERROR
        || tenant_jwt_status_code(rc) == NULL
        || tenant_jwt_status_text(rc) == NULL)
    {
        abort();
    }

    if (len > TENANT_JWT_MAX_LEN && rc != TENANT_JWT_TOO_LARGE) {
        abort();
    }

    fuzz_check_claims(claims);

    if (rc != TENANT_JWT_OK) {
        return;
    }

    fuzz_check_packed(claims);

    /* accepted: read the payload independently and compare */

    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', token + len - dot1 - 1) : NULL;

    if (dot2 == NULL) {
        abort();
    }

    buf = malloc(len);
    if (buf == NULL) {
        abort();
    }

    n = tenant_base64url_decode(buf, (const unsigned char *) dot1 + 1,
                                dot2 - dot1 - 1);
    if (n <= 0) {
        abort();
    }

    payload = json_loadb((const char *) buf, n, JSON_REJECT_DUPLICATES,
                         NULL);
    if (!json_is_object(payload)) {
        abort();
    }

    fuzz_check_payload(payload, policy, claims);

    json_decref(payload);
    free(buf);
}


/*
 * What the token cache keeps: packed, or refused when the strings do not
 * fit; unpacked, every claim the gateway reads as verification gave it.
 */

static void
fuzz_check_packed(const tenant_jwt_claims_t *claims)
{
    size_t               total;
    tenant_jwt_packed_t  packed;
    tenant_jwt_claims_t  back;

    total = (size_t) claims->sub_len + claims->org_id_len
            + claims->org_role_len + claims->metadata_role_len;

    if (tenant_jwt_pack(claims, &packed) != 0) {
        if (total <= TENANT_JWT_PACKED_STR) {
            abort();
        }

        return;
    }

    memset(&back, 0xa5, sizeof(back));

    if (total > TENANT_JWT_PACKED_STR
        || tenant_jwt_unpack(&packed, &back) != 0
        || back.exp != claims->exp || back.nbf != claims->nbf
        || back.session != claims->session
        || back.version != claims->version
        || back.sub_len != claims->sub_len
        || back.org_id_len != claims->org_id_len
        || back.org_role_len != claims->org_role_len
        || back.metadata_role_len != claims->metadata_role_len
        || memcmp(back.sub, claims->sub, claims->sub_len + 1) != 0
        || memcmp(back.org_id, claims->org_id, claims->org_id_len + 1) != 0
        || memcmp(back.org_role, claims->org_role,
                  claims->org_role_len + 1) != 0
        || memcmp(back.metadata_role, claims->metadata_role,
                  claims->metadata_role_len + 1) != 0)
    {
        abort();
    }

    fuzz_check_claims(&back);
}


static void
fuzz_check_claims(const tenant_jwt_claims_t *claims)
{
    fuzz_check_string(claims->sub, claims->sub_len);
    fuzz_check_string(claims->org_id, claims->org_id_len);
    fuzz_check_string(claims->org_role, claims->org_role_len);
    fuzz_check_string(claims->org_slug, claims->org_slug_len);
    fuzz_check_string(claims->metadata_role, claims->metadata_role_len);
}


static void
fuzz_check_string(const char *s, uint16_t len)
{
    size_t  i;

    if (len > TENANT_CLAIM_MAX || s[len] != '\0') {
        abort();
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
            abort();
        }
    }
}


static void
fuzz_check_payload(json_t *payload, const tenant_jwt_policy_t *policy,
    const tenant_jwt_claims_t *claims)
{
    size_t       i;
    json_t      *v, *o;
    json_int_t   version;
    const char  *p, *dot;
    char         name[TENANT_JWT_ROLE_PATH_MAX + 1];

    if (claims->sub_len == 0) {
        abort();
    }

    fuzz_check_member(json_object_get(payload, "sub"), claims->sub,
                      claims->sub_len);

    if (claims->exp < policy->now - policy->leeway
        || claims->nbf > policy->now + policy->leeway)
    {
        abort();
    }

    v = json_object_get(payload, "exp");

    if (json_is_integer(v) && json_integer_value(v) != claims->exp) {
        abort();
    }

    v = json_object_get(payload, "v");
    version = json_is_integer(v) ? json_integer_value(v) : 1;

    if (version != claims->version) {
        abort();
    }

    v = json_object_get(payload, "sid");

    if (claims->session != (json_is_string(v) && json_string_length(v) > 0)) {
        abort();
    }

    if (version == 1) {
        fuzz_check_member(json_object_get(payload, "org_id"),
                          claims->org_id, claims->org_id_len);
        fuzz_check_member(json_object_get(payload, "org_role"),
                          claims->org_role, claims->org_role_len);
        fuzz_check_member(json_object_get(payload, "org_slug"),
                          claims->org_slug, claims->org_slug_len);

    } else {
        o = json_object_get(payload, "o");

        fuzz_check_member(json_object_get(o, "id"), claims->org_id,
                          claims->org_id_len);
        fuzz_check_member(json_object_get(o, "rol"), claims->org_role,
                          claims->org_role_len);
        fuzz_check_member(json_object_get(o, "slg"), claims->org_slug,
                          claims->org_slug_len);
    }

    /* the role at its path */

    p = policy->role_claim ? policy->role_claim : "metadata.role";
    o = payload;

    for ( ;; ) {
        dot = strchr(p, '.');
        i = dot ? (size_t) (dot - p) : strlen(p);

        memcpy(name, p, i);
        name[i] = '\0';

        v = json_object_get(o, name);

        if (dot == NULL || v == NULL || json_is_null(v)) {
            break;
        }

        o = v;
        p = dot + 1;
    }

    fuzz_check_member(dot == NULL ? v : NULL, claims->metadata_role,
                      claims->metadata_role_len);

    if (policy->issuer != NULL) {
        v = json_object_get(payload, "iss");

        if (!json_is_string(v)
            || json_string_length(v) != policy->issuer_len
            || memcmp(json_string_value(v), policy->issuer,
                      policy->issuer_len)
               != 0)
        {
            abort();
        }
    }

    if (policy->nazp > 0) {
        v = json_object_get(payload, "azp");

        if (!json_is_string(v)) {
            abort();
        }

        for (i = 0; i < policy->nazp; i++) {
            if (strcmp(json_string_value(v), policy->azp[i]) == 0
                && json_string_length(v) == strlen(policy->azp[i]))
            {
                break;
            }
        }

        if (i == policy->nazp) {
            abort();
        }
    }

    v = json_object_get(payload, "sts");

    if (json_is_string(v) && strcmp(json_string_value(v), "pending") == 0
        && json_string_length(v) == 7)
    {
        abort();        /* a pending session is TENANT_JWT_SESSION_PENDING */
    }
}


/* A claim copied: absent or null is empty, else the same bytes. */

static void
fuzz_check_member(json_t *v, const char *s, uint16_t len)
{
    if (v == NULL || json_is_null(v)) {
        if (len != 0) {
            abort();
        }

        return;
    }

    if (!json_is_string(v)
        || json_string_length(v) != len
        || memcmp(json_string_value(v), s, len) != 0)
    {
        abort();
    }
}


/*
 * Decodes the whole input: -1 exactly when a byte is outside the
 * alphabet, the length is 1 mod 4 or the bits past the last byte are not
 * zero; otherwise the expected length, and encoding it gives the input.
 */

static void
fuzz_base64url(const uint8_t *data, size_t size)
{
    int             bad;
    long            n;
    char           *enc;
    size_t          i, want;
    const char     *p;
    unsigned char  *dst;

    static const char  abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    dst = malloc(size * 3 / 4 + 3);
    enc = malloc(size + 4);

    if (dst == NULL || enc == NULL) {
        abort();
    }

    n = tenant_base64url_decode(dst, data, size);

    bad = (size % 4 == 1);

    for (i = 0; i < size && !bad; i++) {
        p = (data[i] != '\0') ? strchr(abc, data[i]) : NULL;

        if (p == NULL) {
            bad = 1;

        } else if (i == size - 1 && size % 4 == 2) {
            bad = ((p - abc) & 0x0f) != 0;

        } else if (i == size - 1 && size % 4 == 3) {
            bad = ((p - abc) & 0x03) != 0;
        }
    }

    if (bad) {
        if (n != -1) {
            abort();
        }

    } else {
        want = size / 4 * 3 + (size % 4 ? size % 4 - 1 : 0);

        if (n < 0 || (size_t) n != want) {
            abort();
        }

        if (b64url(enc, dst, (size_t) n) != size
            || memcmp(enc, data, size) != 0)
        {
            abort();
        }
    }

    free(dst);
    free(enc);
}
