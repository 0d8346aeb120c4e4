/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Public keys for JWT verification: PEM (SPKI) and JWKS (RFC 7517).
 *
 * OpenSSL allocation failures refuse the key (or the whole document);
 * t/unit/test_alloc.c makes every allocation fail in turn.
 */


#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/pem.h>

#include "tenant_json.h"
#include "tenant_jwks.h"
#include "tenant_jwt.h"


#define TENANT_RSA_MIN_BITS       2048
#define TENANT_RSA_MAX_BITS       8192
#define TENANT_RSA_MAX_E          8         /* bytes of the public exponent */
#define TENANT_EC_P256_COORD      32        /* bytes of x and of y */

/* decoded base64url: at most 3/4 of the encoded length, plus slack */
#define TENANT_B64_BUF(n)         (((n) * 3) / 4 + 3)

/* a key that could not be imported for want of memory, not for its content */
#define TENANT_JWKS_NOMEM         -2


static int tenant_jwks_parse_key(json_t *jwk, tenant_key_t *key, char *err,
    size_t errlen);
static EVP_PKEY *tenant_jwks_rsa(json_t *jwk, int *nomem, char *err,
    size_t errlen);
static EVP_PKEY *tenant_jwks_ec(json_t *jwk, int *nomem, char *err,
    size_t errlen);
static long tenant_jwks_member(json_t *jwk, const char *name,
    unsigned char *dst, size_t size);
static EVP_PKEY *tenant_jwks_fromdata(const char *type,
    OSSL_PARAM_BLD *bld);
static int tenant_key_check(EVP_PKEY *pkey, tenant_key_type_t built,
    tenant_key_type_t *type, char *err, size_t errlen);
static int tenant_ossl_nomem(void);
static int tenant_jwks_no_password(char *buf, int size, int rwflag,
    void *data);
static int tenant_jwks_str_eq(json_t *value, const char *s);
static void tenant_jwks_error(char *err, size_t errlen, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));


int
tenant_keyset_add_pem(tenant_keyset_t *ks, const unsigned char *pem,
    size_t len, const char *kid, char *err, size_t errlen)
{
    BIO                  *bio;
    long                  der_len;
    size_t                kid_len;
    EVP_PKEY             *pkey;
    tenant_key_t         *key;
    unsigned char        *der;
    tenant_key_type_t     type;
    const unsigned char  *p;

    if (ks->nkeys >= TENANT_JWKS_MAX_KEYS) {
        tenant_jwks_error(err, errlen, "too many keys (at most %d)",
                          TENANT_JWKS_MAX_KEYS);
        return -1;
    }

    kid_len = (kid != NULL) ? strlen(kid) : 0;

    if (kid_len > TENANT_KID_MAX) {
        tenant_jwks_error(err, errlen, "kid longer than %d bytes",
                          TENANT_KID_MAX);
        return -1;
    }

    if (len == 0 || len > INT_MAX) {
        tenant_jwks_error(err, errlen, "empty or oversized PEM key");
        return -1;
    }

    bio = BIO_new_mem_buf(pem, (int) len);
    if (bio == NULL) {
        ERR_clear_error();
        tenant_jwks_error(err, errlen, "out of memory");
        return -1;
    }

    /*
     * Only a "PUBLIC KEY" block, decoded as SubjectPublicKeyInfo:
     * PEM_read_bio_PUBKEY() would also take a PKCS#1 "RSA PUBLIC KEY".
     */

    der = NULL;
    pkey = NULL;

    if (PEM_bytes_read_bio(&der, &der_len, NULL, PEM_STRING_PUBLIC, bio,
                           tenant_jwks_no_password, NULL)
        == 1)
    {
        p = der;
        pkey = d2i_PUBKEY(NULL, &p, der_len);

        if (pkey != NULL && p != der + der_len) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }

        OPENSSL_free(der);
    }

    BIO_free(bio);

    if (pkey == NULL) {
        ERR_clear_error();
        tenant_jwks_error(err, errlen,
                          "no valid PEM \"PUBLIC KEY\" "
                          "(SubjectPublicKeyInfo) found");
        return -1;
    }

    if (tenant_key_check(pkey, TENANT_KEY_ANY, &type, err, errlen) != 0) {
        EVP_PKEY_free(pkey);
        return -1;
    }

    key = &ks->keys[ks->nkeys];

    memcpy(key->kid, kid ? kid : "", kid_len);
    key->kid[kid_len] = '\0';
    key->kid_len = kid_len;
    key->type = type;
    key->pkey = pkey;

    ks->nkeys++;

    return 0;
}


int
tenant_keyset_add_jwks(tenant_keyset_t *ks, const unsigned char *json,
    size_t len, char *err, size_t errlen)
{
    int            rc;
    size_t         i, n, added;
    json_t        *doc, *keys;
    json_error_t   error;
    tenant_key_t   key;
    char           why[96], reason[128];

    doc = tenant_json_loadb((const char *) json, len, JSON_REJECT_DUPLICATES,
                            &error);

    if (doc == NULL && json_error_code(&error) == json_error_out_of_memory) {
        tenant_jwks_error(err, errlen, "JWKS could not be parsed (out of "
                          "memory)");
        return -1;
    }

    if (doc == NULL) {
        /* error.text may quote the input: report the position only */
        tenant_jwks_error(err, errlen,
                          "JWKS is not valid JSON (line %d, column %d)",
                          error.line, error.column);
        return -1;
    }

    keys = json_object_get(doc, "keys");

    if (!json_is_object(doc) || !json_is_array(keys)) {
        json_decref(doc);
        tenant_jwks_error(err, errlen,
                          "JWKS is not an object with a \"keys\" array");
        return -1;
    }

    n = json_array_size(keys);
    added = 0;
    reason[0] = '\0';

    /*
     * Keys are stored after the ones already in the set and counted only
     * when the whole document is accepted.
     */

    for (i = 0; i < n; i++) {

        rc = tenant_jwks_parse_key(json_array_get(keys, i), &key, why,
                                   sizeof(why));

        if (rc == TENANT_JWKS_NOMEM) {
            /*
             * Not the key's fault: the document is refused whole (the
             * caller keeps its previous keys) rather than accepted
             * without a key that tokens may name.
             */
            tenant_jwks_error(err, errlen, "JWKS key #%zu: %s", i, why);
            goto failed;
        }

        if (rc != 0) {
            /* skipped: not for us, or not usable; the last reason is kept */
            (void) snprintf(reason, sizeof(reason), "key #%zu: %s", i, why);
            continue;
        }

        if (ks->nkeys + added >= TENANT_JWKS_MAX_KEYS) {
            EVP_PKEY_free(key.pkey);
            tenant_jwks_error(err, errlen, "too many keys (at most %d)",
                              TENANT_JWKS_MAX_KEYS);
            goto failed;
        }

        ks->keys[ks->nkeys + added] = key;
        added++;
    }

    json_decref(doc);

    if (added == 0) {
        if (reason[0] == '\0') {
            tenant_jwks_error(err, errlen, "JWKS has no keys");

        } else {
            tenant_jwks_error(err, errlen, "JWKS has no usable key (%s)",
                              reason);
        }

        return -1;
    }

    ks->nkeys += added;

    return 0;

failed:

    json_decref(doc);

    while (added > 0) {
        added--;
        EVP_PKEY_free(ks->keys[ks->nkeys + added].pkey);
        memset(&ks->keys[ks->nkeys + added], 0, sizeof(tenant_key_t));
    }

    return -1;
}


const tenant_key_t *
tenant_keyset_next(const tenant_keyset_t *ks, const char *kid,
    size_t kid_len, tenant_key_type_t type, size_t *pos)
{
    int                  exact;
    size_t               i;
    const tenant_key_t  *key;

    if (kid == NULL) {
        kid_len = 0;
    }

    /* does the kid name a key (of any type)? then only that key */

    exact = tenant_keyset_names(ks, kid, kid_len);

    for (i = *pos; i < ks->nkeys; i++) {
        key = &ks->keys[i];

        if (type != TENANT_KEY_ANY && key->type != type) {
            continue;
        }

        if (exact ? (key->kid_len == kid_len
                     && memcmp(key->kid, kid, kid_len) == 0)
                  : key->kid_len == 0)
        {
            *pos = i + 1;
            return key;
        }
    }

    *pos = ks->nkeys;

    return NULL;
}


int
tenant_keyset_names(const tenant_keyset_t *ks, const char *kid,
    size_t kid_len)
{
    size_t  i;

    if (kid == NULL || kid_len == 0) {
        return 0;
    }

    for (i = 0; i < ks->nkeys; i++) {
        if (ks->keys[i].kid_len == kid_len
            && memcmp(ks->keys[i].kid, kid, kid_len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


const tenant_key_t *
tenant_keyset_find(const tenant_keyset_t *ks, const char *kid,
    size_t kid_len)
{
    size_t  pos;

    pos = 0;

    return tenant_keyset_next(ks, kid, kid_len, TENANT_KEY_ANY, &pos);
}


int
tenant_keyset_copy(tenant_keyset_t *dst, const tenant_keyset_t *src)
{
    size_t  i;

    if (dst->nkeys + src->nkeys > TENANT_JWKS_MAX_KEYS) {
        return -1;
    }

    /* EVP_PKEY_up_ref() does not allocate: its failure is defensive */

    for (i = 0; i < src->nkeys; i++) {
        if (EVP_PKEY_up_ref(src->keys[i].pkey) != 1) {
            while (i--) {
                dst->nkeys--;
                EVP_PKEY_free(dst->keys[dst->nkeys].pkey);
                memset(&dst->keys[dst->nkeys], 0, sizeof(tenant_key_t));
            }

            return -1;
        }

        dst->keys[dst->nkeys++] = src->keys[i];
    }

    return 0;
}


void
tenant_keyset_free(tenant_keyset_t *ks)
{
    size_t  i;

    for (i = 0; i < ks->nkeys; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
    }

    memset(ks, 0, sizeof(tenant_keyset_t));
}


/*
 * Returns 0 with *key filled, -1 when the key is skipped (not for us, or
 * not usable) or TENANT_JWKS_NOMEM when it could not be imported for want
 * of memory, with the reason in err.
 */

static int
tenant_jwks_parse_key(json_t *jwk, tenant_key_t *key, char *err,
    size_t errlen)
{
    int                 rc, try, nomem;
    size_t              kid_len;
    json_t             *kid, *use, *alg, *kty;
    EVP_PKEY           *pkey;
    tenant_key_type_t   built, type;

    if (!json_is_object(jwk)) {
        tenant_jwks_error(err, errlen, "not an object");
        return -1;
    }

    kid = json_object_get(jwk, "kid");
    kid_len = 0;

    if (kid != NULL) {
        if (!json_is_string(kid)) {
            tenant_jwks_error(err, errlen, "\"kid\" is not a string");
            return -1;
        }

        kid_len = json_string_length(kid);

        if (kid_len > TENANT_KID_MAX) {
            tenant_jwks_error(err, errlen, "\"kid\" longer than %d bytes",
                              TENANT_KID_MAX);
            return -1;
        }
    }

    use = json_object_get(jwk, "use");

    if (use != NULL && !tenant_jwks_str_eq(use, "sig")) {
        tenant_jwks_error(err, errlen, "\"use\" is not \"sig\"");
        return -1;
    }

    kty = json_object_get(jwk, "kty");
    alg = json_object_get(jwk, "alg");

    if (tenant_jwks_str_eq(kty, "RSA")) {
        if (alg != NULL && !tenant_jwks_str_eq(alg, "RS256")) {
            tenant_jwks_error(err, errlen, "\"alg\" is not RS256");
            return -1;
        }

        built = TENANT_KEY_RSA;

    } else if (tenant_jwks_str_eq(kty, "EC")) {
        if (alg != NULL && !tenant_jwks_str_eq(alg, "ES256")) {
            tenant_jwks_error(err, errlen, "\"alg\" is not ES256");
            return -1;
        }

        if (!tenant_jwks_str_eq(json_object_get(jwk, "crv"), "P-256")) {
            tenant_jwks_error(err, errlen, "EC curve is not P-256");
            return -1;
        }

        built = TENANT_KEY_EC_P256;

    } else {
        tenant_jwks_error(err, errlen, "\"kty\" is neither RSA nor EC");
        return -1;
    }

    /*
     * OpenSSL 3.0 does not always queue ERR_R_MALLOC_FAILURE when an
     * allocation fails inside EVP_PKEY_fromdata(): an import that failed
     * without saying why is tried once more.  A key's content fails again
     * the same way; a failed allocation does not, or shows in the second
     * try (the first allocations of an import fail only for memory).
     */

    for (try = 0; try < 2; try++) {
        pkey = (built == TENANT_KEY_RSA) ? tenant_jwks_rsa(jwk, &nomem, err,
                                                           errlen)
                                         : tenant_jwks_ec(jwk, &nomem, err,
                                                          errlen);
        if (pkey != NULL || nomem) {
            break;
        }
    }

    if (pkey == NULL) {
        return nomem ? TENANT_JWKS_NOMEM : -1;
    }

    rc = tenant_key_check(pkey, built, &type, err, errlen);

    if (rc != 0) {
        EVP_PKEY_free(pkey);
        return rc;
    }

    if (kid_len) {
        memcpy(key->kid, json_string_value(kid), kid_len);
    }

    key->kid[kid_len] = '\0';
    key->kid_len = kid_len;
    key->type = type;
    key->pkey = pkey;

    return 0;
}


static EVP_PKEY *
tenant_jwks_rsa(json_t *jwk, int *nomem, char *err, size_t errlen)
{
    int              bits;
    long             nlen, elen;
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
    OSSL_PARAM_BLD  *bld;
    unsigned char    nbuf[TENANT_RSA_MAX_BITS / 8 + 8];
    unsigned char    ebuf[TENANT_RSA_MAX_E + 8];

    nlen = tenant_jwks_member(jwk, "n", nbuf, sizeof(nbuf));
    elen = tenant_jwks_member(jwk, "e", ebuf, sizeof(ebuf));

    *nomem = 0;

    if (nlen <= 0 || elen <= 0 || elen > TENANT_RSA_MAX_E) {
        tenant_jwks_error(err, errlen,
                          "RSA key without valid base64url \"n\" and \"e\"");
        return NULL;
    }

    n = BN_bin2bn(nbuf, (int) nlen, NULL);
    e = BN_bin2bn(ebuf, (int) elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    pkey = NULL;

    /*
     * The size is the key's own: checked here, where no failure inside
     * OpenSSL can stand for it (see tenant_key_check).
     */

    bits = (n != NULL) ? BN_num_bits(n) : TENANT_RSA_MIN_BITS;

    if (bits < TENANT_RSA_MIN_BITS || bits > TENANT_RSA_MAX_BITS) {
        tenant_jwks_error(err, errlen, "RSA key of %d bits (%d to %d "
                          "required)", bits, TENANT_RSA_MIN_BITS,
                          TENANT_RSA_MAX_BITS);

    } else if (n != NULL && e != NULL && bld != NULL
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
    {
        pkey = tenant_jwks_fromdata("RSA", bld);
    }

    if (pkey == NULL
        && bits >= TENANT_RSA_MIN_BITS && bits <= TENANT_RSA_MAX_BITS)
    {
        /* the first three fail only for want of memory */
        *nomem = tenant_ossl_nomem() || n == NULL || e == NULL || bld == NULL;
        tenant_jwks_error(err, errlen, "RSA key could not be imported%s",
                          *nomem ? " (out of memory)" : "");
    }

    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);

    return pkey;
}


static EVP_PKEY *
tenant_jwks_ec(json_t *jwk, int *nomem, char *err, size_t errlen)
{
    long             xlen, ylen;
    EVP_PKEY        *pkey;
    OSSL_PARAM_BLD  *bld;
    unsigned char    x[TENANT_B64_BUF(44)], y[TENANT_B64_BUF(44)];
    unsigned char    point[1 + 2 * TENANT_EC_P256_COORD];

    /* RFC 7518 6.2.1.2: coordinates are the full size of the field */

    xlen = tenant_jwks_member(jwk, "x", x, sizeof(x));
    ylen = tenant_jwks_member(jwk, "y", y, sizeof(y));

    *nomem = 0;

    if (xlen != TENANT_EC_P256_COORD || ylen != TENANT_EC_P256_COORD) {
        tenant_jwks_error(err, errlen,
                          "EC key without valid 32-byte \"x\" and \"y\"");
        return NULL;
    }

    /* an uncompressed point: 0x04 || x || y */

    point[0] = 0x04;
    memcpy(&point[1], x, TENANT_EC_P256_COORD);
    memcpy(&point[1 + TENANT_EC_P256_COORD], y, TENANT_EC_P256_COORD);

    bld = OSSL_PARAM_BLD_new();
    pkey = NULL;

    if (bld != NULL
        && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                           "prime256v1", 0)
        && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                            point, sizeof(point)))
    {
        pkey = tenant_jwks_fromdata("EC", bld);
    }

    if (pkey == NULL) {
        *nomem = tenant_ossl_nomem() || bld == NULL;
        tenant_jwks_error(err, errlen, "EC key could not be imported (%s)",
                          *nomem ? "out of memory" : "not a point of P-256?");
    }

    OSSL_PARAM_BLD_free(bld);

    return pkey;
}


/* Decodes a base64url member of a JWK into dst; -1 if absent or bad. */

static long
tenant_jwks_member(json_t *jwk, const char *name, unsigned char *dst,
    size_t size)
{
    size_t   len;
    json_t  *v;

    v = json_object_get(jwk, name);
    if (!json_is_string(v)) {
        return -1;
    }

    len = json_string_length(v);
    if (TENANT_B64_BUF(len) > size) {
        return -1;
    }

    return tenant_base64url_decode(dst,
                                   (const unsigned char *) json_string_value(v),
                                   len);
}


static EVP_PKEY *
tenant_jwks_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY      *pkey;
    OSSL_PARAM    *params;
    EVP_PKEY_CTX  *ctx;

    pkey = NULL;

    params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL) {
        return NULL;
    }

    ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);

    if (ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        pkey = NULL;
    }

    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);

    return pkey;
}


/*
 * RSA of 2048 to 8192 bits or EC on P-256, passing OpenSSL's checks.  A key
 * built from JWK parameters (built: its type, else TENANT_KEY_ANY) has the
 * type, the size and the curve it was built with: when OpenSSL cannot tell
 * them, it failed inside (OpenSSL 3.0 does not always queue
 * ERR_R_MALLOC_FAILURE for it), and the key is not to blame.
 */

static int
tenant_key_check(EVP_PKEY *pkey, tenant_key_type_t built,
    tenant_key_type_t *type, char *err, size_t errlen)
{
    int            bits, rc;
    char           group[64];
    size_t         group_len;
    EVP_PKEY_CTX  *ctx;

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        bits = EVP_PKEY_get_bits(pkey);

        if (bits < TENANT_RSA_MIN_BITS || bits > TENANT_RSA_MAX_BITS) {
            ERR_clear_error();
            tenant_jwks_error(err, errlen,
                              "RSA key of %d bits (%d to %d required)",
                              bits, TENANT_RSA_MIN_BITS,
                              TENANT_RSA_MAX_BITS);
            goto failed;
        }

        *type = TENANT_KEY_RSA;

    } else if (EVP_PKEY_is_a(pkey, "EC")) {

        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &group_len)
            != 1
            || strcmp(group, "prime256v1") != 0)
        {
            ERR_clear_error();
            tenant_jwks_error(err, errlen, "EC key not on curve P-256");
            goto failed;
        }

        *type = TENANT_KEY_EC_P256;

    } else {
        ERR_clear_error();
        tenant_jwks_error(err, errlen,
                          "unsupported key type (RSA or EC P-256 expected)");
        goto failed;
    }

    if (built != TENANT_KEY_ANY && *type != built) {
        goto failed;
    }

    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL) {
        ERR_clear_error();
        tenant_jwks_error(err, errlen, "out of memory");
        return TENANT_JWKS_NOMEM;
    }

    rc = EVP_PKEY_public_check(ctx);

    EVP_PKEY_CTX_free(ctx);

    if (rc != 1) {
        if (tenant_ossl_nomem()) {
            tenant_jwks_error(err, errlen, "public key could not be checked "
                              "(out of memory)");
            return TENANT_JWKS_NOMEM;
        }

        tenant_jwks_error(err, errlen, "public key fails validation");
        return -1;
    }

    return 0;

failed:

    if (built == TENANT_KEY_ANY) {
        return -1;
    }

    tenant_jwks_error(err, errlen, "key could not be checked (out of memory)");

    return TENANT_JWKS_NOMEM;
}


/*
 * Empties OpenSSL's error queue; returns whether it held an allocation
 * failure (a key that failed for it says nothing about the key).
 */

static int
tenant_ossl_nomem(void)
{
    int            nomem;
    unsigned long  e;

    nomem = 0;

    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_REASON(e) == ERR_GET_REASON(ERR_R_MALLOC_FAILURE)) {
            nomem = 1;
        }
    }

    return nomem;
}


/* A public key is never encrypted: never prompt on a terminal. */

static int
tenant_jwks_no_password(char *buf, int size, int rwflag, void *data)
{
    (void) buf;
    (void) size;
    (void) rwflag;
    (void) data;

    return 0;
}


static int
tenant_jwks_str_eq(json_t *value, const char *s)
{
    size_t  len;

    len = strlen(s);

    return json_is_string(value)
           && json_string_length(value) == len
           && memcmp(json_string_value(value), s, len) == 0;
}


static void
tenant_jwks_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    (void) vsnprintf(err, errlen, fmt, args);
    va_end(args);
}
