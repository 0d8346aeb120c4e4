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
    TENANT_KEY_ANY = 0,
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
 * without kid is tried for tokens whose kid names no key (Clerk's
 * networkless verification: the PEM key has no kid, its tokens have one).
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

/*
 * The keys that may have signed a token, one per call: start with
 * *pos = 0; NULL when there is no other.  When the token's kid (NULL or
 * kid_len 0: none) names a key, only that key, if it is of the type;
 * otherwise every key without kid of the type (PEM keys: Clerk's
 * networkless key, or an old and a new key during a rotation).
 * TENANT_KEY_ANY matches every type.
 */
const tenant_key_t *tenant_keyset_next(const tenant_keyset_t *ks,
    const char *kid, size_t kid_len, tenant_key_type_t type, size_t *pos);

/*
 * 1 when a key of the set (of any type) has this kid (NULL or kid_len 0:
 * none), else 0: a token whose kid names no key was signed by a key the
 * set does not have yet, or by one of its keys without kid.
 */
int tenant_keyset_names(const tenant_keyset_t *ks, const char *kid,
    size_t kid_len);

/* The first of them, of any type, or NULL. */
const tenant_key_t *tenant_keyset_find(const tenant_keyset_t *ks,
    const char *kid, size_t kid_len);

/*
 * Appends src's keys to dst, sharing their EVP_PKEYs (reference counted):
 * the keys of the configuration and those of a fetched JWKS in one set.
 * Returns 0, or -1 when dst cannot hold them all (dst is then unchanged).
 */
int tenant_keyset_copy(tenant_keyset_t *dst, const tenant_keyset_t *src);

/* Frees every EVP_PKEY and empties the set. */
void tenant_keyset_free(tenant_keyset_t *ks);


#endif /* _TENANT_JWKS_H_INCLUDED_ */
