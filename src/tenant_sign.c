/*
 * Copyright (C) ngx_tenant_module authors
 *
 * OpenSSL allocation failures return -1 and the caller answers 500;
 * t/unit/test_alloc.c makes every allocation fail in turn.
 */


#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "tenant_sign.h"


#define TENANT_SIGN_IKM_LEN       32      /* ENCRYPTION_KEY, decoded */
#define TENANT_SHA256_BLOCK       64


static int tenant_sign_pad(tenant_sign_key_t *k, EVP_MD_CTX *ctx,
    const unsigned char *key, size_t key_len, unsigned char pad);
static size_t tenant_sign_int64(char *dst, int64_t v);


int
tenant_sign_init(tenant_sign_key_t *k, const unsigned char *ikm,
    size_t ikm_len, char *err, size_t errlen)
{
    const char     *reason;
    unsigned char   key[TENANT_SHA256_LEN];

    k->md = NULL;
    k->inner = NULL;
    k->outer = NULL;
    k->work = NULL;

    if (ikm == NULL || ikm_len != TENANT_SIGN_IKM_LEN) {
        reason = "the key must be 32 bytes (64 hex digits)";
        goto failed;
    }

    k->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (k->md == NULL) {
        reason = "SHA-256 is not available";
        goto failed;
    }

    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    k->work = EVP_MD_CTX_new();

    if (k->inner == NULL || k->outer == NULL || k->work == NULL) {
        reason = "out of memory";
        goto failed;
    }

    if (tenant_hkdf_sha256(key, sizeof(key), ikm, ikm_len, NULL, 0,
                           (const unsigned char *) TENANT_SIGN_INFO,
                           sizeof(TENANT_SIGN_INFO) - 1)
        != 0)
    {
        OPENSSL_cleanse(key, sizeof(key));
        reason = "HKDF-SHA256 failed";
        goto failed;
    }

    /* HMAC (RFC 2104): the hash states after key ^ ipad and key ^ opad */

    if (tenant_sign_pad(k, k->inner, key, sizeof(key), 0x36) != 0
        || tenant_sign_pad(k, k->outer, key, sizeof(key), 0x5c) != 0)
    {
        OPENSSL_cleanse(key, sizeof(key));
        reason = "SHA-256 failed";
        goto failed;
    }

    OPENSSL_cleanse(key, sizeof(key));

    return 0;

failed:

    tenant_sign_free(k);

    if (err && errlen) {
        snprintf(err, errlen, "%s", reason);
    }

    return -1;
}


void
tenant_sign_free(tenant_sign_key_t *k)
{
    /* the contexts hold key-dependent state: free cleanses them */

    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    EVP_MD_CTX_free(k->work);
    EVP_MD_free(k->md);

    k->inner = NULL;
    k->outer = NULL;
    k->work = NULL;
    k->md = NULL;
}


int
tenant_hkdf_sha256(unsigned char *out, size_t out_len,
    const unsigned char *ikm, size_t ikm_len, const unsigned char *salt,
    size_t salt_len, const unsigned char *info, size_t info_len)
{
    int            rc;
    size_t         n;
    EVP_KDF       *kdf;
    OSSL_PARAM     params[5];
    EVP_KDF_CTX   *ctx;

    kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
    if (kdf == NULL) {
        return -1;
    }

    ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);

    if (ctx == NULL) {
        return -1;
    }

    /*
     * an empty salt is left out: RFC 5869 then uses HashLen zero bytes,
     * which HMAC pads to the same key as no salt at all
     */

    n = 0;

    params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                   (char *) "SHA256", 0);
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                    (void *) ikm, ikm_len);

    if (salt_len) {
        params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                        (void *) salt,
                                                        salt_len);
    }

    if (info_len) {
        params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                        (void *) info,
                                                        info_len);
    }

    params[n] = OSSL_PARAM_construct_end();

    rc = EVP_KDF_derive(ctx, out, out_len, params);

    EVP_KDF_CTX_free(ctx);

    return (rc == 1) ? 0 : -1;
}


int
tenant_sign(tenant_sign_key_t *k, const unsigned char *msg, size_t len,
    unsigned char out[TENANT_SHA256_LEN])
{
    int            rc;
    unsigned char  ihash[TENANT_SHA256_LEN];

    if (k->work == NULL) {
        return -1;
    }

    rc = EVP_MD_CTX_copy_ex(k->work, k->inner)
         && EVP_DigestUpdate(k->work, msg, len)
         && EVP_DigestFinal_ex(k->work, ihash, NULL)
         && EVP_MD_CTX_copy_ex(k->work, k->outer)
         && EVP_DigestUpdate(k->work, ihash, sizeof(ihash))
         && EVP_DigestFinal_ex(k->work, out, NULL);

    OPENSSL_cleanse(ihash, sizeof(ihash));

    return rc ? 0 : -1;
}


size_t
tenant_sign_message(char *dst, int64_t timestamp,
    const tenant_str_t fields[TENANT_SIGN_NFIELDS])
{
    char                 *p;
    size_t                n, i, j, len;
    const unsigned char  *v;

    n = sizeof(TENANT_SIGN_VERSION "\n") - 1
        + tenant_sign_int64(NULL, timestamp);

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        len = fields[i].value ? fields[i].len : 0;
        v = (const unsigned char *) fields[i].value;

        for (j = 0; j < len; j++) {
            if (v[j] < 0x20 || v[j] == 0x7f) {
                return 0;
            }
        }

        n += 1 + len;
    }

    if (dst == NULL) {
        return n;
    }

    p = dst;

    memcpy(p, TENANT_SIGN_VERSION "\n", sizeof(TENANT_SIGN_VERSION "\n") - 1);
    p += sizeof(TENANT_SIGN_VERSION "\n") - 1;

    p += tenant_sign_int64(p, timestamp);

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        *p++ = '\n';

        len = fields[i].value ? fields[i].len : 0;

        if (len) {
            memcpy(p, fields[i].value, len);
            p += len;
        }
    }

    return n;
}


int
tenant_sha256(tenant_sign_key_t *k, const unsigned char *data, size_t len,
    unsigned char out[TENANT_SHA256_LEN])
{
    if (k->work == NULL) {
        return -1;
    }

    if (EVP_DigestInit_ex(k->work, k->md, NULL)
        && EVP_DigestUpdate(k->work, data, len)
        && EVP_DigestFinal_ex(k->work, out, NULL))
    {
        return 0;
    }

    return -1;
}


void
tenant_hex_encode(char *dst, const unsigned char *src, size_t len)
{
    size_t             i;

    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < len; i++) {
        dst[2 * i] = hex[src[i] >> 4];
        dst[2 * i + 1] = hex[src[i] & 0x0f];
    }
}


long
tenant_hex_decode(unsigned char *dst, const char *src, size_t len)
{
    int            d, v;
    size_t         i;
    unsigned char  c;

    if (len % 2 || len / 2 > (size_t) LONG_MAX) {
        return -1;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) src[i];

        if (c >= '0' && c <= '9') {
            d = c - '0';

        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;

        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;

        } else {
            return -1;
        }

        if (i % 2 == 0) {
            v = d << 4;

        } else {
            dst[i / 2] = (unsigned char) (v | d);
        }
    }

    return (long) (len / 2);
}


int
tenant_ct_equal(const unsigned char *a, size_t alen, const unsigned char *b,
    size_t blen)
{
    int  same;

    /* the common prefix in constant time, then the lengths (not secret) */

    same = CRYPTO_memcmp(a, b, alen < blen ? alen : blen) == 0;

    return same & (alen == blen);
}


int
tenant_secret_digest(const unsigned char *secret, size_t len,
    unsigned char digest[TENANT_SHA256_LEN])
{
    return EVP_Digest(secret, len, digest, NULL, EVP_sha256(), NULL) ? 0
                                                                     : -1;
}


int
tenant_secret_matches(const unsigned char digest[TENANT_SHA256_LEN],
    const unsigned char *token, size_t len)
{
    unsigned char  d[TENANT_SHA256_LEN];

    if (tenant_secret_digest(token, len, d) != 0) {
        return -1;
    }

    return tenant_ct_equal(d, TENANT_SHA256_LEN, digest, TENANT_SHA256_LEN);
}


/* ctx := SHA-256 state after the 64-byte block (key padded) ^ pad. */

static int
tenant_sign_pad(tenant_sign_key_t *k, EVP_MD_CTX *ctx,
    const unsigned char *key, size_t key_len, unsigned char pad)
{
    int            rc;
    size_t         i;
    unsigned char  block[TENANT_SHA256_BLOCK];

    for (i = 0; i < TENANT_SHA256_BLOCK; i++) {
        block[i] = (unsigned char) ((i < key_len ? key[i] : 0) ^ pad);
    }

    rc = EVP_DigestInit_ex(ctx, k->md, NULL)
         && EVP_DigestUpdate(ctx, block, sizeof(block));

    OPENSSL_cleanse(block, sizeof(block));

    return rc ? 0 : -1;
}


/* Decimal digits of v; with dst NULL only measures. */

static size_t
tenant_sign_int64(char *dst, int64_t v)
{
    char      buf[sizeof("-9223372036854775808")], *p;
    size_t    n;
    uint64_t  u;

    u = (v < 0) ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;

    p = buf + sizeof(buf);

    do {
        *--p = (char) ('0' + u % 10);
        u /= 10;
    } while (u);

    if (v < 0) {
        *--p = '-';
    }

    n = (size_t) (buf + sizeof(buf) - p);

    if (dst) {
        memcpy(dst, p, n);
    }

    return n;
}
