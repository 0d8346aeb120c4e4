/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Test helpers shared by test_jwt.c and test_jwks.c: real keys, real
 * signatures, base64url encoding and JWK export, all with OpenSSL,
 * independently of the code under test.
 */

#ifndef _JWT_UTIL_H_INCLUDED_
#define _JWT_UTIL_H_INCLUDED_


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>


#define TOKEN_MAX                 32768


static inline void
bail(const char *what)
{
    printf("Bail out! %s\n", what);
    exit(255);
}


static inline size_t
b64url(char *dst, const unsigned char *src, size_t len)
{
    size_t             i, n;
    unsigned long      v;
    static const char  abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    n = 0;

    for (i = 0; i + 3 <= len; i += 3) {
        v = (unsigned long) src[i] << 16 | src[i + 1] << 8 | src[i + 2];
        dst[n++] = abc[(v >> 18) & 63];
        dst[n++] = abc[(v >> 12) & 63];
        dst[n++] = abc[(v >> 6) & 63];
        dst[n++] = abc[v & 63];
    }

    if (len - i == 1) {
        v = (unsigned long) src[i] << 16;
        dst[n++] = abc[(v >> 18) & 63];
        dst[n++] = abc[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = (unsigned long) src[i] << 16 | src[i + 1] << 8;
        dst[n++] = abc[(v >> 18) & 63];
        dst[n++] = abc[(v >> 12) & 63];
        dst[n++] = abc[(v >> 6) & 63];
    }

    dst[n] = '\0';

    return n;
}


static inline EVP_PKEY *
gen_rsa(unsigned bits)
{
    EVP_PKEY  *pkey;

    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
    if (pkey == NULL) {
        bail("RSA keygen");
    }

    return pkey;
}


static inline EVP_PKEY *
gen_ec(const char *curve)
{
    EVP_PKEY  *pkey;

    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    if (pkey == NULL) {
        bail("EC keygen");
    }

    return pkey;
}


/* public key as PEM "PUBLIC KEY", NUL-terminated in dst */

static inline size_t
pem_of(EVP_PKEY *pkey, char *dst, size_t size)
{
    BIO   *bio;
    char  *p;
    long   n;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_PUBKEY(bio, pkey) != 1) {
        bail("PEM_write_bio_PUBKEY");
    }

    n = BIO_get_mem_data(bio, &p);
    if (n <= 0 || (size_t) n >= size) {
        bail("PEM too large");
    }

    memcpy(dst, p, n);
    dst[n] = '\0';
    BIO_free(bio);

    return (size_t) n;
}


static inline size_t
bn_b64url(EVP_PKEY *pkey, const char *param, size_t pad, char *dst)
{
    int             n;
    BIGNUM         *bn;
    unsigned char   bin[1024];

    bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1) {
        bail("EVP_PKEY_get_bn_param");
    }

    n = pad ? BN_bn2binpad(bn, bin, (int) pad) : BN_bn2bin(bn, bin);
    BN_free(bn);

    if (n <= 0) {
        bail("BN_bn2bin");
    }

    return b64url(dst, bin, (size_t) n);
}


/*
 * A JWK object for the public part of pkey, with extra members (e.g.
 * "\"kid\":\"a\",\"use\":\"sig\"") first.
 */

static inline void
jwk_of(EVP_PKEY *pkey, const char *extra, char *dst, size_t size)
{
    int   pad;
    char  a[1400], b[1400];

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        bn_b64url(pkey, OSSL_PKEY_PARAM_RSA_N, 0, a);
        bn_b64url(pkey, OSSL_PKEY_PARAM_RSA_E, 0, b);
        snprintf(dst, size, "{%s%s\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}",
                 extra, *extra ? "," : "", a, b);

    } else {
        pad = (EVP_PKEY_get_bits(pkey) + 7) / 8;
        bn_b64url(pkey, OSSL_PKEY_PARAM_EC_PUB_X, pad, a);
        bn_b64url(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, pad, b);
        snprintf(dst, size,
                 "{%s%s\"kty\":\"EC\",\"crv\":\"P-256\","
                 "\"x\":\"%s\",\"y\":\"%s\"}",
                 extra, *extra ? "," : "", a, b);
    }
}


/* signature over data: RSA PKCS#1 v1.5 or raw r || s for ES256 */

static inline size_t
sign_raw(EVP_PKEY *pkey, const char *data, size_t len, unsigned char *sig,
    int der)
{
    size_t           n;
    EVP_MD_CTX      *ctx;
    ECDSA_SIG       *es;
    const BIGNUM    *r, *s;
    const unsigned char  *p;
    unsigned char    buf[1024];

    ctx = EVP_MD_CTX_new();
    n = sizeof(buf);

    if (ctx == NULL
        || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1
        || EVP_DigestSign(ctx, buf, &n, (const unsigned char *) data, len)
           != 1)
    {
        bail("EVP_DigestSign");
    }

    EVP_MD_CTX_free(ctx);

    if (EVP_PKEY_is_a(pkey, "RSA") || der) {
        memcpy(sig, buf, n);
        return n;
    }

    p = buf;
    es = d2i_ECDSA_SIG(NULL, &p, (long) n);
    if (es == NULL) {
        bail("d2i_ECDSA_SIG");
    }

    ECDSA_SIG_get0(es, &r, &s);

    if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)
    {
        bail("BN_bn2binpad");
    }

    ECDSA_SIG_free(es);

    return 64;
}


/* "b64(header).b64(payload)" into dst; returns its length */

static inline size_t
signing_input(char *dst, const char *header, const char *payload)
{
    size_t  n;

    n = b64url(dst, (const unsigned char *) header, strlen(header));
    dst[n++] = '.';
    n += b64url(dst + n, (const unsigned char *) payload, strlen(payload));

    return n;
}


/* a signed compact JWT; der != 0 leaves an ECDSA signature in DER */

static inline size_t
make_token_ex(char *dst, EVP_PKEY *pkey, const char *header,
    const char *payload, int der)
{
    size_t         n, slen;
    unsigned char  sig[1024];

    if (strlen(header) + strlen(payload) > (TOKEN_MAX - 2000) / 4 * 3) {
        bail("token too large for the buffer");
    }

    n = signing_input(dst, header, payload);
    slen = sign_raw(pkey, dst, n, sig, der);
    dst[n++] = '.';
    n += b64url(dst + n, sig, slen);

    return n;
}


static inline size_t
make_token(char *dst, EVP_PKEY *pkey, const char *header,
    const char *payload)
{
    return make_token_ex(dst, pkey, header, payload, 0);
}


/* HS256 with an arbitrary secret (the classic key confusion attack) */

static inline size_t
make_hs256(char *dst, const unsigned char *secret, size_t secret_len,
    const char *header, const char *payload)
{
    size_t         n, mlen;
    unsigned char  mac[EVP_MAX_MD_SIZE];

    n = signing_input(dst, header, payload);

    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, secret_len,
                  (const unsigned char *) dst, n, mac, sizeof(mac), &mlen)
        == NULL)
    {
        bail("EVP_Q_mac");
    }

    dst[n++] = '.';
    n += b64url(dst + n, mac, mlen);

    return n;
}


#endif /* _JWT_UTIL_H_INCLUDED_ */
