/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Compact JWT verification for Clerk session tokens (RS256, ES256).
 *
 * OpenSSL allocation failures refuse the token (never admit it);
 * t/unit/test_alloc.c makes every allocation fail in turn.
 */


#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "tenant_json.h"
#include "tenant_jwt.h"


#define TENANT_JWT_ES256_SIG_LEN  64    /* raw r || s, RFC 7518 3.4 */
#define TENANT_JWT_DER_SIG_MAX    72    /* DER ECDSA-Sig-Value for P-256 */

/*
 * Time claims (exp, nbf, iat) outside +-2^62, integer or real, are
 * refused: exp + leeway or nbf - leeway in int64_t or time_t cannot
 * overflow.
 */
#define TENANT_JWT_TIME_MAX       4611686018427387904LL

/* tenant_jwt_unpack checks only the sum of the packed lengths */
#if (TENANT_JWT_PACKED_STR > TENANT_CLAIM_MAX)
#error "a packed claim would not fit its tenant_jwt_claims_t field"
#endif


static tenant_jwt_status_t tenant_jwt_split(const unsigned char *token,
    size_t len, const unsigned char **seg, size_t *seg_len);
static tenant_jwt_status_t tenant_jwt_parse_header(const unsigned char *hdr,
    size_t len, const tenant_jwt_policy_t *policy, unsigned *alg,
    char *kid, size_t *kid_len, int *has_kid);
static tenant_jwt_status_t tenant_jwt_verify_signature(
    const tenant_key_t *key, const unsigned char *input, size_t input_len,
    const unsigned char *sig, size_t sig_len);
static EVP_PKEY_CTX *tenant_jwt_verify_ctx(const tenant_key_t *key);
static tenant_jwt_status_t tenant_jwt_es256_der(const unsigned char *raw,
    unsigned char *der, size_t *der_len);
static tenant_jwt_status_t tenant_jwt_role(json_t *payload,
    const char *path, tenant_jwt_claims_t *claims);
static tenant_jwt_status_t tenant_jwt_parse_claims(json_t *payload,
    const tenant_jwt_policy_t *policy,
    tenant_jwt_claims_t *claims, int *pending);
static tenant_jwt_status_t tenant_jwt_check_policy(json_t *payload,
    const tenant_jwt_policy_t *policy, const tenant_jwt_claims_t *claims);
static tenant_jwt_status_t tenant_jwt_copy_claim(json_t *value, char *dst,
    uint16_t *dst_len);
static tenant_jwt_status_t tenant_jwt_number(json_t *value, int64_t *out);
static int tenant_jwt_absent(json_t *value);
static int tenant_jwt_string_eq(json_t *value, const char *s, size_t len);


/* base64url alphabet, -1 for every other byte (RFC 4648 section 5) */

static const signed char  tenant_base64url_table[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
};


static const char  *tenant_jwt_codes[] = {
    "ok",
    "token_too_large",
    "token_malformed",
    "token_bad_header",
    "algorithm_not_allowed",
    "unknown_key",
    "bad_signature",
    "token_bad_payload",
    "bad_claim",
    "token_expired",
    "token_not_yet_valid",
    "bad_issuer",
    "bad_authorized_party",
    "session_pending",
    "verification_error"
};


static const char  *tenant_jwt_texts[] = {
    "the token is valid",
    "the token is too large",
    "the token is not a well-formed compact JWT",
    "the token header is invalid",
    "the token's signing algorithm is not allowed",
    "no known key matches the token's key id and algorithm",
    "the token signature is invalid",
    "the token payload is not a JSON object",
    "a token claim is missing, of the wrong type or invalid",
    "the token has expired",
    "the token is not valid yet",
    "the token was issued by an unexpected issuer",
    "the token's authorized party is not allowed",
    "the session is pending and not active yet",
    "the token could not be verified because of an internal error"
};


/*
 * Kept from one verification to the next (workers are single-threaded):
 * the SHA-256 implementation, fetched once, a digest context, and for
 * each key a verification context set up once (EVP_PKEY_verify_init
 * fetches the signature algorithm and exports the key to its provider:
 * more work than the RSA verification itself).
 *
 * A context holds a reference to its key: while it is in the table, no
 * other key can be allocated at its key's address, so a key of the
 * current set whose address is in the table is that very key.  The
 * table is small and reused in turn: a replaced context releases its key
 * (a key of an old JWKS lives on until then, at most
 * TENANT_JWT_VCTX_MAX of them).
 */

#define TENANT_JWT_VCTX_MAX       (2 * TENANT_JWKS_MAX_KEYS)

typedef struct {
    const EVP_PKEY       *pkey;
    EVP_PKEY_CTX         *ctx;
} tenant_jwt_vctx_t;


static EVP_MD             *tenant_jwt_sha256;
static EVP_MD_CTX         *tenant_jwt_md_ctx;
static tenant_jwt_vctx_t   tenant_jwt_vctx[TENANT_JWT_VCTX_MAX];
static size_t              tenant_jwt_vctx_next;


tenant_jwt_status_t
tenant_jwt_verify(const unsigned char *token, size_t len,
    const tenant_keyset_t *keys, const tenant_jwt_policy_t *policy,
    tenant_jwt_claims_t *claims)
{
    int                   has_kid, pending, unknown;
    long                  n;
    size_t                seg_len[3], kid_len, hdr_len, pl_len, sig_len, pos;
    json_t               *payload;
    unsigned              alg;
    json_error_t          error;
    unsigned char        *hdr, *pl, *sig;
    tenant_jwt_status_t   rc;
    const tenant_key_t   *key;
    tenant_key_type_t     type;
    const unsigned char  *seg[3];
    char                  kid[TENANT_KID_MAX + 1];
    unsigned char         buf[TENANT_JWT_MAX_LEN];

    memset(claims, 0, sizeof(tenant_jwt_claims_t));

    if (len > TENANT_JWT_MAX_LEN) {
        return TENANT_JWT_TOO_LARGE;
    }

    rc = tenant_jwt_split(token, len, seg, seg_len);
    if (rc != TENANT_JWT_OK) {
        return rc;
    }

    /*
     * Each decoded segment is at most 3/4 of its encoded length, so the
     * three fit one after the other in a buffer of the maximal token size.
     */

    hdr = buf;
    n = tenant_base64url_decode(hdr, seg[0], seg_len[0]);
    if (n <= 0) {
        return TENANT_JWT_MALFORMED;
    }
    hdr_len = (size_t) n;

    pl = hdr + hdr_len;
    n = tenant_base64url_decode(pl, seg[1], seg_len[1]);
    if (n <= 0) {
        return TENANT_JWT_MALFORMED;
    }
    pl_len = (size_t) n;

    sig = pl + pl_len;
    n = tenant_base64url_decode(sig, seg[2], seg_len[2]);
    if (n < 0) {
        return TENANT_JWT_MALFORMED;
    }
    sig_len = (size_t) n;

    rc = tenant_jwt_parse_header(hdr, hdr_len, policy, &alg, kid, &kid_len,
                                 &has_kid);
    if (rc != TENANT_JWT_OK) {
        return rc;
    }

    /* the algorithm is allowed: now, and only now, look at the keys */

    if (keys == NULL) {
        return TENANT_JWT_UNKNOWN_KID;
    }

    /*
     * Every key that may have signed it, in order: the one its kid names,
     * or, when the kid names none, each key without kid (a rotation with
     * two PEM keys).  At most TENANT_JWKS_MAX_KEYS verifications.
     *
     * A kid that names no key stays an unknown kid when no key without
     * kid verifies it either: the key may be one the set does not have
     * yet (a rotation at the identity provider), and UNKNOWN_KID is what
     * has the caller fetch the keys again, a PEM key next to them or not.
     */

    type = (alg == TENANT_JWT_RS256) ? TENANT_KEY_RSA : TENANT_KEY_EC_P256;
    pos = 0;
    rc = TENANT_JWT_UNKNOWN_KID;
    unknown = has_kid && !tenant_keyset_names(keys, kid, kid_len);

    for ( ;; ) {
        key = tenant_keyset_next(keys, has_kid ? kid : NULL, kid_len, type,
                                 &pos);
        if (key == NULL) {
            return unknown ? TENANT_JWT_UNKNOWN_KID : rc;
        }

        /* defensive: both keyset add paths set pkey or fail */

        if (key->pkey == NULL) {
            continue;
        }

        /* the signing input is "header.payload", as sent */

        rc = tenant_jwt_verify_signature(key, token,
                                         seg_len[0] + 1 + seg_len[1],
                                         sig, sig_len);
        if (rc == TENANT_JWT_OK) {
            break;
        }

        if (rc != TENANT_JWT_BAD_SIGNATURE) {
            return rc;
        }
    }

    payload = tenant_json_loadb((const char *) pl, pl_len,
                                JSON_REJECT_DUPLICATES, &error);
    if (payload == NULL) {
        return json_error_code(&error) == json_error_out_of_memory
               ? TENANT_JWT_ERROR : TENANT_JWT_BAD_PAYLOAD;
    }

    if (!json_is_object(payload)) {
        json_decref(payload);
        return TENANT_JWT_BAD_PAYLOAD;
    }

    pending = 0;

    rc = tenant_jwt_parse_claims(payload, policy, claims, &pending);

    if (rc == TENANT_JWT_OK) {
        rc = tenant_jwt_check_policy(payload, policy, claims);
    }

    json_decref(payload);

    if (rc == TENANT_JWT_OK && pending) {
        rc = TENANT_JWT_SESSION_PENDING;
    }

    return rc;
}


int
tenant_jwt_pack(const tenant_jwt_claims_t *claims, tenant_jwt_packed_t *packed)
{
    char    *p;
    size_t   total;

    total = (size_t) claims->sub_len + claims->org_id_len
            + claims->org_role_len + claims->metadata_role_len;

    /* the lengths fit a byte: each is at most TENANT_CLAIM_MAX (128) */

    if (total > TENANT_JWT_PACKED_STR) {
        return -1;
    }

    memset(packed, 0, sizeof(tenant_jwt_packed_t));

    packed->exp = claims->exp;
    packed->nbf = claims->nbf;
    packed->sub_len = (uint8_t) claims->sub_len;
    packed->org_id_len = (uint8_t) claims->org_id_len;
    packed->org_role_len = (uint8_t) claims->org_role_len;
    packed->metadata_role_len = (uint8_t) claims->metadata_role_len;
    packed->session = claims->session;
    packed->version = claims->version;

    p = packed->str;

    memcpy(p, claims->sub, claims->sub_len);
    p += claims->sub_len;
    memcpy(p, claims->org_id, claims->org_id_len);
    p += claims->org_id_len;
    memcpy(p, claims->org_role, claims->org_role_len);
    p += claims->org_role_len;
    memcpy(p, claims->metadata_role, claims->metadata_role_len);

    return 0;
}


int
tenant_jwt_unpack(const tenant_jwt_packed_t *packed,
    tenant_jwt_claims_t *claims)
{
    const char  *p;

    /* each length is a byte, at most 255: the sum is the only bound to
     * check (TENANT_JWT_PACKED_STR < TENANT_CLAIM_MAX) */

    if ((size_t) packed->sub_len + packed->org_id_len + packed->org_role_len
        + packed->metadata_role_len > TENANT_JWT_PACKED_STR)
    {
        return -1;
    }

    claims->exp = packed->exp;
    claims->nbf = packed->nbf;
    claims->iat = 0;
    claims->session = packed->session;
    claims->version = packed->version;

    p = packed->str;

    memcpy(claims->sub, p, packed->sub_len);
    claims->sub[packed->sub_len] = '\0';
    claims->sub_len = packed->sub_len;
    p += packed->sub_len;

    memcpy(claims->org_id, p, packed->org_id_len);
    claims->org_id[packed->org_id_len] = '\0';
    claims->org_id_len = packed->org_id_len;
    p += packed->org_id_len;

    memcpy(claims->org_role, p, packed->org_role_len);
    claims->org_role[packed->org_role_len] = '\0';
    claims->org_role_len = packed->org_role_len;
    p += packed->org_role_len;

    memcpy(claims->metadata_role, p, packed->metadata_role_len);
    claims->metadata_role[packed->metadata_role_len] = '\0';
    claims->metadata_role_len = packed->metadata_role_len;

    claims->org_slug[0] = '\0';
    claims->org_slug_len = 0;

    return 0;
}


const char *
tenant_jwt_status_code(tenant_jwt_status_t status)
{
    if ((size_t) status >= sizeof(tenant_jwt_codes) / sizeof(char *)) {
        return "verification_error";
    }

    return tenant_jwt_codes[status];
}


const char *
tenant_jwt_status_text(tenant_jwt_status_t status)
{
    if ((size_t) status >= sizeof(tenant_jwt_texts) / sizeof(char *)) {
        return "the token could not be verified";
    }

    return tenant_jwt_texts[status];
}


long
tenant_base64url_decode(unsigned char *dst, const unsigned char *src,
    size_t len)
{
    int             a, b, c, d;
    size_t          i, rem;
    unsigned char  *p;

    rem = len % 4;

    if (rem == 1) {
        return -1;
    }

    p = dst;

    for (i = 0; i + 4 <= len; i += 4) {
        a = tenant_base64url_table[src[i]];
        b = tenant_base64url_table[src[i + 1]];
        c = tenant_base64url_table[src[i + 2]];
        d = tenant_base64url_table[src[i + 3]];

        if ((a | b | c | d) < 0) {
            return -1;
        }

        *p++ = (unsigned char) (a << 2 | b >> 4);
        *p++ = (unsigned char) (b << 4 | c >> 2);
        *p++ = (unsigned char) (c << 6 | d);
    }

    /*
     * A partial last group: the bits past the last whole byte must be
     * zero, so that each byte string has exactly one encoding.
     */

    if (rem == 2) {
        a = tenant_base64url_table[src[i]];
        b = tenant_base64url_table[src[i + 1]];

        if ((a | b) < 0 || (b & 0x0f) != 0) {
            return -1;
        }

        *p++ = (unsigned char) (a << 2 | b >> 4);

    } else if (rem == 3) {
        a = tenant_base64url_table[src[i]];
        b = tenant_base64url_table[src[i + 1]];
        c = tenant_base64url_table[src[i + 2]];

        if ((a | b | c) < 0 || (c & 0x03) != 0) {
            return -1;
        }

        *p++ = (unsigned char) (a << 2 | b >> 4);
        *p++ = (unsigned char) (b << 4 | c >> 2);
    }

    return (long) (p - dst);
}


static tenant_jwt_status_t
tenant_jwt_split(const unsigned char *token, size_t len,
    const unsigned char **seg, size_t *seg_len)
{
    size_t                n, i;
    const unsigned char  *start;

    n = 0;
    start = token;

    for (i = 0; i < len; i++) {
        if (token[i] != '.') {
            continue;
        }

        if (n == 2) {
            return TENANT_JWT_MALFORMED;
        }

        seg[n] = start;
        seg_len[n] = &token[i] - start;
        n++;

        start = &token[i + 1];
    }

    if (n != 2) {
        return TENANT_JWT_MALFORMED;
    }

    seg[2] = start;
    seg_len[2] = &token[len] - start;

    /* the signature may be empty here: "alg": "none" is refused later */

    if (seg_len[0] == 0 || seg_len[1] == 0) {
        return TENANT_JWT_MALFORMED;
    }

    return TENANT_JWT_OK;
}


static tenant_jwt_status_t
tenant_jwt_parse_header(const unsigned char *hdr, size_t len,
    const tenant_jwt_policy_t *policy, unsigned *alg, char *kid,
    size_t *kid_len, int *has_kid)
{
    size_t                n;
    json_t               *header, *v;
    json_error_t          error;
    tenant_jwt_status_t   rc;

    header = tenant_json_loadb((const char *) hdr, len,
                               JSON_REJECT_DUPLICATES, &error);
    if (header == NULL) {
        return json_error_code(&error) == json_error_out_of_memory
               ? TENANT_JWT_ERROR : TENANT_JWT_BAD_HEADER;
    }

    rc = TENANT_JWT_BAD_HEADER;

    if (!json_is_object(header)) {
        goto done;
    }

    v = json_object_get(header, "alg");
    if (!json_is_string(v)) {
        goto done;
    }

    /* an allowlist: "none", HS*, PS*, anything unknown is refused */

    if (tenant_jwt_string_eq(v, "RS256", 5)) {
        *alg = TENANT_JWT_RS256;

    } else if (tenant_jwt_string_eq(v, "ES256", 5)) {
        *alg = TENANT_JWT_ES256;

    } else {
        rc = TENANT_JWT_ALG_NOT_ALLOWED;
        goto done;
    }

    if ((policy->algorithms & *alg) == 0) {
        rc = TENANT_JWT_ALG_NOT_ALLOWED;
        goto done;
    }

    /* no extension is understood, so any critical one is refused */

    if (json_object_get(header, "crit") != NULL) {
        goto done;
    }

    *has_kid = 0;
    *kid_len = 0;
    kid[0] = '\0';

    v = json_object_get(header, "kid");

    if (v != NULL) {
        if (!json_is_string(v)) {
            goto done;
        }

        n = json_string_length(v);
        if (n > TENANT_KID_MAX) {
            goto done;
        }

        memcpy(kid, json_string_value(v), n);
        kid[n] = '\0';
        *kid_len = n;
        *has_kid = 1;
    }

    rc = TENANT_JWT_OK;

done:

    json_decref(header);

    return rc;
}


static tenant_jwt_status_t
tenant_jwt_verify_signature(const tenant_key_t *key,
    const unsigned char *input, size_t input_len, const unsigned char *sig,
    size_t sig_len)
{
    int                   n;
    size_t                der_len;
    unsigned int          md_len;
    EVP_PKEY_CTX         *ctx;
    tenant_jwt_status_t   rc;
    unsigned char         der[TENANT_JWT_DER_SIG_MAX];
    unsigned char         md[EVP_MAX_MD_SIZE];

    if (key->type == TENANT_KEY_RSA) {

        /* RSASSA-PKCS1-v1_5: the signature is exactly the modulus size */

        /* n <= 0 is defensive: the keyset holds RSA keys of 2048 bits
         * or more */

        n = EVP_PKEY_get_size(key->pkey);
        if (n <= 0 || sig_len != (size_t) n) {
            return TENANT_JWT_BAD_SIGNATURE;
        }

    } else {
        if (sig_len != TENANT_JWT_ES256_SIG_LEN) {
            return TENANT_JWT_BAD_SIGNATURE;
        }

        rc = tenant_jwt_es256_der(sig, der, &der_len);
        if (rc != TENANT_JWT_OK) {
            return rc;
        }

        sig = der;
        sig_len = der_len;
    }

    if (tenant_jwt_md_ctx == NULL) {
        if (tenant_jwt_sha256 == NULL) {
            tenant_jwt_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
            if (tenant_jwt_sha256 == NULL) {
                ERR_clear_error();
                return TENANT_JWT_ERROR;
            }
        }

        tenant_jwt_md_ctx = EVP_MD_CTX_new();
        if (tenant_jwt_md_ctx == NULL) {
            ERR_clear_error();
            return TENANT_JWT_ERROR;
        }
    }

    ctx = tenant_jwt_verify_ctx(key);
    if (ctx == NULL) {
        ERR_clear_error();
        return TENANT_JWT_ERROR;
    }

    if (EVP_DigestInit_ex(tenant_jwt_md_ctx, tenant_jwt_sha256, NULL) != 1
        || EVP_DigestUpdate(tenant_jwt_md_ctx, input, input_len) != 1
        || EVP_DigestFinal_ex(tenant_jwt_md_ctx, md, &md_len) != 1)
    {
        ERR_clear_error();
        return TENANT_JWT_ERROR;
    }

    /*
     * 1 is a valid signature; 0 and the negative values OpenSSL returns
     * for malformed signatures are all refusals.
     */

    n = EVP_PKEY_verify(ctx, sig, sig_len, md, md_len);

    if (n != 1) {
        ERR_clear_error();
        return TENANT_JWT_BAD_SIGNATURE;
    }

    return TENANT_JWT_OK;
}


/*
 * The key's verification context: PKCS #1 v1.5 padding for RSA, SHA-256
 * for both types, set up on the key's first verification; NULL on
 * failure (out of memory).
 */

static EVP_PKEY_CTX *
tenant_jwt_verify_ctx(const tenant_key_t *key)
{
    size_t              i;
    EVP_PKEY_CTX       *ctx;
    tenant_jwt_vctx_t  *v;

    for (i = 0; i < TENANT_JWT_VCTX_MAX; i++) {
        if (tenant_jwt_vctx[i].pkey == key->pkey) {
            return tenant_jwt_vctx[i].ctx;
        }
    }

    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (ctx == NULL) {
        return NULL;
    }

    if (EVP_PKEY_verify_init(ctx) != 1
        || (key->type == TENANT_KEY_RSA
            && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0)
        || EVP_PKEY_CTX_set_signature_md(ctx, tenant_jwt_sha256) <= 0)
    {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }

    v = &tenant_jwt_vctx[tenant_jwt_vctx_next];
    tenant_jwt_vctx_next = (tenant_jwt_vctx_next + 1) % TENANT_JWT_VCTX_MAX;

    /* releases the replaced context's key reference */
    EVP_PKEY_CTX_free(v->ctx);

    v->pkey = key->pkey;
    v->ctx = ctx;

    return ctx;
}


static tenant_jwt_status_t
tenant_jwt_es256_der(const unsigned char *raw, unsigned char *der,
    size_t *der_len)
{
    int             n;
    BIGNUM         *r, *s;
    ECDSA_SIG      *es;
    unsigned char  *p;

    r = BN_bin2bn(raw, TENANT_JWT_ES256_SIG_LEN / 2, NULL);
    s = BN_bin2bn(raw + TENANT_JWT_ES256_SIG_LEN / 2,
                  TENANT_JWT_ES256_SIG_LEN / 2, NULL);
    es = ECDSA_SIG_new();

    if (r == NULL || s == NULL || es == NULL) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        ERR_clear_error();
        return TENANT_JWT_ERROR;
    }

    /* ECDSA_SIG_set0() owns r and s from here on; it fails only for NULL
     * r or s, tested above (defensive) */

    if (ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        ERR_clear_error();
        return TENANT_JWT_ERROR;
    }

    n = i2d_ECDSA_SIG(es, NULL);

    /* n <= 0 on allocation failure; an ES256 DER signature is at most 72
     * bytes, so the bound is defensive */

    if (n <= 0 || n > TENANT_JWT_DER_SIG_MAX) {
        ECDSA_SIG_free(es);
        ERR_clear_error();
        return TENANT_JWT_ERROR;
    }

    p = der;
    n = i2d_ECDSA_SIG(es, &p);

    ECDSA_SIG_free(es);

    if (n <= 0) {
        ERR_clear_error();
        return TENANT_JWT_ERROR;
    }

    *der_len = (size_t) n;

    return TENANT_JWT_OK;
}


static tenant_jwt_status_t
tenant_jwt_parse_claims(json_t *payload, const tenant_jwt_policy_t *policy,
    tenant_jwt_claims_t *claims,
    int *pending)
{
    json_t               *v, *o;
    json_int_t            version;
    tenant_jwt_status_t   rc;

    /* sub: a non-empty string */

    v = json_object_get(payload, "sub");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        return TENANT_JWT_BAD_CLAIM;
    }

    rc = tenant_jwt_copy_claim(v, claims->sub, &claims->sub_len);
    if (rc != TENANT_JWT_OK) {
        return rc;
    }

    /* exp: required; nbf, iat: optional */

    v = json_object_get(payload, "exp");
    if (tenant_jwt_absent(v)) {
        return TENANT_JWT_BAD_CLAIM;
    }

    rc = tenant_jwt_number(v, &claims->exp);
    if (rc != TENANT_JWT_OK) {
        return rc;
    }

    v = json_object_get(payload, "nbf");
    if (!tenant_jwt_absent(v)) {
        rc = tenant_jwt_number(v, &claims->nbf);
        if (rc != TENANT_JWT_OK) {
            return rc;
        }
    }

    v = json_object_get(payload, "iat");
    if (!tenant_jwt_absent(v)) {
        rc = tenant_jwt_number(v, &claims->iat);
        if (rc != TENANT_JWT_OK) {
            return rc;
        }
    }

    /* Clerk token version: absent means 1 */

    v = json_object_get(payload, "v");
    if (tenant_jwt_absent(v)) {
        version = 1;

    } else if (json_is_integer(v)) {
        version = json_integer_value(v);

    } else {
        return TENANT_JWT_BAD_CLAIM;
    }

    if (version != 1 && version != 2) {
        return TENANT_JWT_BAD_CLAIM;
    }

    claims->version = (uint8_t) version;

    /* the active organization, when there is one */

    if (version == 1) {
        rc = tenant_jwt_copy_claim(json_object_get(payload, "org_id"),
                                   claims->org_id, &claims->org_id_len);
        if (rc != TENANT_JWT_OK) {
            return rc;
        }

        rc = tenant_jwt_copy_claim(json_object_get(payload, "org_role"),
                                   claims->org_role, &claims->org_role_len);
        if (rc != TENANT_JWT_OK) {
            return rc;
        }

        rc = tenant_jwt_copy_claim(json_object_get(payload, "org_slug"),
                                   claims->org_slug, &claims->org_slug_len);
        if (rc != TENANT_JWT_OK) {
            return rc;
        }

    } else {
        o = json_object_get(payload, "o");

        if (!tenant_jwt_absent(o)) {
            if (!json_is_object(o)) {
                return TENANT_JWT_BAD_CLAIM;
            }

            rc = tenant_jwt_copy_claim(json_object_get(o, "id"),
                                       claims->org_id, &claims->org_id_len);
            if (rc != TENANT_JWT_OK) {
                return rc;
            }

            rc = tenant_jwt_copy_claim(json_object_get(o, "rol"),
                                       claims->org_role,
                                       &claims->org_role_len);
            if (rc != TENANT_JWT_OK) {
                return rc;
            }

            rc = tenant_jwt_copy_claim(json_object_get(o, "slg"),
                                       claims->org_slug,
                                       &claims->org_slug_len);
            if (rc != TENANT_JWT_OK) {
                return rc;
            }
        }
    }

    /* the role, by default "metadata": {"role": ...} from a session
     * token template */

    rc = tenant_jwt_role(payload, policy->role_claim ? policy->role_claim
                                                     : "metadata.role",
                         claims);
    if (rc != TENANT_JWT_OK) {
        return rc;
    }

    /*
     * sid: what tells a session token from a JWT template token.  Clerk
     * gives session tokens the session's id and template tokens none
     * (templates cannot set it: "Session tokens" and "JWT templates" in
     * Clerk's documentation).  Only whether it is there is kept.
     */

    v = json_object_get(payload, "sid");
    claims->session = json_is_string(v) && json_string_length(v) > 0;

    /* iss, azp, sts: only their types here, their values later */

    v = json_object_get(payload, "iss");
    if (!tenant_jwt_absent(v) && !json_is_string(v)) {
        return TENANT_JWT_BAD_CLAIM;
    }

    v = json_object_get(payload, "azp");
    if (!tenant_jwt_absent(v) && !json_is_string(v)) {
        return TENANT_JWT_BAD_CLAIM;
    }

    v = json_object_get(payload, "sts");
    if (!tenant_jwt_absent(v)) {
        if (!json_is_string(v)) {
            return TENANT_JWT_BAD_CLAIM;
        }

        *pending = tenant_jwt_string_eq(v, "pending", 7);
    }

    return TENANT_JWT_OK;
}


static tenant_jwt_status_t
tenant_jwt_check_policy(json_t *payload, const tenant_jwt_policy_t *policy,
    const tenant_jwt_claims_t *claims)
{
    size_t   i, len;
    json_t  *v;

    /* now > exp + leeway, written so that no sum can overflow */

    if (policy->now - policy->leeway > claims->exp) {
        return TENANT_JWT_EXPIRED;
    }

    if (policy->now + policy->leeway < claims->nbf) {
        return TENANT_JWT_NOT_YET_VALID;
    }

    if (policy->issuer != NULL) {
        len = policy->issuer_len ? policy->issuer_len
                                 : strlen(policy->issuer);

        v = json_object_get(payload, "iss");
        if (!tenant_jwt_string_eq(v, policy->issuer, len)) {
            return TENANT_JWT_BAD_ISSUER;
        }
    }

    if (policy->azp != NULL && policy->nazp > 0) {
        v = json_object_get(payload, "azp");

        for (i = 0; i < policy->nazp; i++) {
            len = policy->azp_len ? policy->azp_len[i]
                                  : strlen(policy->azp[i]);

            if (tenant_jwt_string_eq(v, policy->azp[i], len)) {
                break;
            }
        }

        if (i == policy->nazp) {
            return TENANT_JWT_BAD_AZP;
        }
    }

    return TENANT_JWT_OK;
}


/*
 * Copies an optional string claim: absent (or JSON null) leaves dst
 * empty; anything but a short string of printable bytes is refused, so
 * that a claim can never split or forge a header line.
 */

/*
 * The claim at a dot-separated path ("metadata.role", "role"): absent
 * when a member on the way is; an object expected on the way and found
 * of another type is a bad claim.
 */

static tenant_jwt_status_t
tenant_jwt_role(json_t *payload, const char *path, tenant_jwt_claims_t *claims)
{
    size_t       len;
    json_t      *o, *v;
    const char  *p, *dot;
    char         name[TENANT_JWT_ROLE_PATH_MAX + 1];

    o = payload;
    p = path;

    for ( ;; ) {
        dot = strchr(p, '.');
        len = dot ? (size_t) (dot - p) : strlen(p);

        /* the module validates claim= paths at configuration; for other
         * callers an empty or over-long segment finds no role */

        if (len == 0 || len > TENANT_JWT_ROLE_PATH_MAX) {
            return TENANT_JWT_OK;
        }

        memcpy(name, p, len);
        name[len] = '\0';

        v = json_object_get(o, name);

        if (dot == NULL) {
            return tenant_jwt_copy_claim(v, claims->metadata_role,
                                         &claims->metadata_role_len);
        }

        if (tenant_jwt_absent(v)) {
            return TENANT_JWT_OK;
        }

        if (!json_is_object(v)) {
            return TENANT_JWT_BAD_CLAIM;
        }

        o = v;
        p = dot + 1;
    }
}


static tenant_jwt_status_t
tenant_jwt_copy_claim(json_t *value, char *dst, uint16_t *dst_len)
{
    size_t                len, i;
    const unsigned char  *s;

    if (tenant_jwt_absent(value)) {
        return TENANT_JWT_OK;
    }

    if (!json_is_string(value)) {
        return TENANT_JWT_BAD_CLAIM;
    }

    len = json_string_length(value);
    if (len > TENANT_CLAIM_MAX) {
        return TENANT_JWT_BAD_CLAIM;
    }

    s = (const unsigned char *) json_string_value(value);

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return TENANT_JWT_BAD_CLAIM;
        }
    }

    memcpy(dst, s, len);
    dst[len] = '\0';
    *dst_len = (uint16_t) len;

    return TENANT_JWT_OK;
}


/* NumericDate (RFC 7519 section 2): an integer or a real, in seconds */

static tenant_jwt_status_t
tenant_jwt_number(json_t *value, int64_t *out)
{
    double      d;
    json_int_t  i;

    if (json_is_integer(value)) {
        i = json_integer_value(value);

        if (i <= -TENANT_JWT_TIME_MAX || i >= TENANT_JWT_TIME_MAX) {
            return TENANT_JWT_BAD_CLAIM;
        }

        *out = (int64_t) i;
        return TENANT_JWT_OK;
    }

    if (json_is_real(value)) {
        d = json_real_value(value);

        /* also false for a NaN */

        if (!(d > (double) -TENANT_JWT_TIME_MAX
              && d < (double) TENANT_JWT_TIME_MAX))
        {
            return TENANT_JWT_BAD_CLAIM;
        }

        *out = (int64_t) d;
        return TENANT_JWT_OK;
    }

    return TENANT_JWT_BAD_CLAIM;
}


static int
tenant_jwt_absent(json_t *value)
{
    return value == NULL || json_is_null(value);
}


static int
tenant_jwt_string_eq(json_t *value, const char *s, size_t len)
{
    return json_is_string(value)
           && json_string_length(value) == len
           && memcmp(json_string_value(value), s, len) == 0;
}
