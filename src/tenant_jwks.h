/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Public keys for JWT verification: a PEM public key (Clerk's
 * CLERK_JWT_KEY) or a JWKS document (RFC 7517) with keys selected by kid.
 * Parsed once (configuration time, or when a new JWKS arrives) into
 * OpenSSL EVP_PKEYs that live in the worker's memory.
 */

#ifndef _TENANT_JWKS_H_INCLUDED_
#define _TENANT_JWKS_H_INCLUDED_


#include <stddef.h>

#include <openssl/evp.h>


#define TENANT_JWKS_MAX_KEYS      16
#define TENANT_KID_MAX            128


typedef enum {
    TENANT_KEY_RSA = 1,           /* RS256 */
    TENANT_KEY_EC_P256            /* ES256 */
} tenant_key_type_t;


typedef struct {
    char                 kid[TENANT_KID_MAX + 1];   /* "" when none */
    size_t               kid_len;
    tenant_key_type_t    type;
    EVP_PKEY            *pkey;
} tenant_key_t;


typedef struct {
    tenant_key_t         keys[TENANT_JWKS_MAX_KEYS];
    size_t               nkeys;
} tenant_keyset_t;


/*
 * Each returns 0 on success, -1 on failure with a one-line reason (never
 * key material) in err.  Adding to a full set is a failure.
 *
 * tenant_keyset_add_pem: a PEM "PUBLIC KEY" (SPKI), RSA (>= 2048 bits) or
 * EC P-256; other key types or sizes are refused.  kid may be NULL: a key
 * without kid matches tokens without kid and, when it is the only key,
 * tokens with any kid (Clerk's networkless verification).
 *
 * tenant_keyset_add_jwks: a JWKS JSON document {"keys":[...]}; keys with
 * "kty":"RSA" (n, e) or "kty":"EC","crv":"P-256" (x, y) are added; keys
 * whose "use" is present and not "sig", or whose "alg" is present and is
 * neither RS256 nor ES256, are skipped; a document that yields no key is a
 * failure.
 */
int tenant_keyset_add_pem(tenant_keyset_t *ks, const unsigned char *pem,
    size_t len, const char *kid, char *err, size_t errlen);
int tenant_keyset_add_jwks(tenant_keyset_t *ks, const unsigned char *json,
    size_t len, char *err, size_t errlen);

/* The key for a token's kid (kid NULL when the header has none), per the
 * rules above, or NULL. */
const tenant_key_t *tenant_keyset_find(const tenant_keyset_t *ks,
    const char *kid, size_t kid_len);

/* Frees every EVP_PKEY and empties the set. */
void tenant_keyset_free(tenant_keyset_t *ks);


#endif /* _TENANT_JWKS_H_INCLUDED_ */
