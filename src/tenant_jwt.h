/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Compact JWT (RFC 7519) parsing and verification for Clerk session
 * tokens.  nginx-agnostic: plain C, OpenSSL and jansson only, so unit
 * tests and fuzzers link it without nginx.
 */

#ifndef _TENANT_JWT_H_INCLUDED_
#define _TENANT_JWT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tenant_jwks.h"


#define TENANT_JWT_MAX_LEN        8192    /* longer tokens are refused */
#define TENANT_CLAIM_MAX          128     /* bytes, without the NUL */
#define TENANT_JWT_ROLE_PATH_MAX  127     /* the role claim's path */

#define TENANT_JWT_RS256          0x01
#define TENANT_JWT_ES256          0x02


typedef enum {
    TENANT_JWT_OK = 0,
    TENANT_JWT_TOO_LARGE,         /* token longer than TENANT_JWT_MAX_LEN */
    TENANT_JWT_MALFORMED,         /* not three base64url segments */
    TENANT_JWT_BAD_HEADER,        /* header not a JSON object, no alg */
    TENANT_JWT_ALG_NOT_ALLOWED,   /* alg not in the allowlist (none, HS*) */
    TENANT_JWT_UNKNOWN_KID,       /* no key with that kid, and none without
                                     kid verifies it (or no key at all) */
    TENANT_JWT_BAD_SIGNATURE,     /* signature does not verify */
    TENANT_JWT_BAD_PAYLOAD,       /* payload not a JSON object */
    TENANT_JWT_BAD_CLAIM,         /* claim of the wrong type, too long or
                                     with control characters; sub or exp
                                     missing */
    TENANT_JWT_EXPIRED,           /* now > exp + leeway */
    TENANT_JWT_NOT_YET_VALID,     /* now < nbf - leeway */
    TENANT_JWT_BAD_ISSUER,        /* iss != configured issuer */
    TENANT_JWT_BAD_AZP,           /* azp not among the authorized parties */
    TENANT_JWT_SESSION_PENDING,   /* Clerk v2 token with sts "pending" */
    TENANT_JWT_ERROR              /* out of memory, OpenSSL failure */
} tenant_jwt_status_t;


/* What the gateway keeps of a verified token.  Fixed size, no pointers:
 * it is copied as is into the shared-memory token cache. */

typedef struct {
    int64_t       exp;
    int64_t       nbf;            /* 0 if absent */
    int64_t       iat;            /* 0 if absent */

    /* each string is NUL-terminated, its length in *_len */
    char          sub[TENANT_CLAIM_MAX + 1];
    char          org_id[TENANT_CLAIM_MAX + 1];
    char          org_role[TENANT_CLAIM_MAX + 1];
    char          org_slug[TENANT_CLAIM_MAX + 1];
    char          metadata_role[TENANT_CLAIM_MAX + 1];   /* "metadata.role" */

    uint16_t      sub_len;
    uint16_t      org_id_len;
    uint16_t      org_role_len;
    uint16_t      org_slug_len;
    uint16_t      metadata_role_len;

    uint8_t       version;        /* Clerk token version: 1 or 2 */

    /* a non-empty string "sid": Clerk puts the session's id in session
     * tokens, and in no JWT template token */
    uint8_t       session;
} tenant_jwt_claims_t;


/*
 * What a token cache hit needs, packed: the claims the gateway reads
 * (sub, org_id, org_role, metadata_role, session, exp, nbf, version),
 * the four strings one after the other, without NULs, in str.  Not kept:
 * iat and org_slug, which nothing reads after verification.  144 bytes:
 * with the cache's node it fills a 256-byte slab chunk.
 */

#define TENANT_JWT_PACKED_STR     120

typedef struct {
    int64_t       exp;
    int64_t       nbf;
    uint8_t       sub_len;
    uint8_t       org_id_len;
    uint8_t       org_role_len;
    uint8_t       metadata_role_len;
    uint8_t       session;
    uint8_t       version;
    char          str[TENANT_JWT_PACKED_STR];
} tenant_jwt_packed_t;


typedef struct {
    unsigned          algorithms;     /* TENANT_JWT_RS256 | TENANT_JWT_ES256 */
    int64_t           now;            /* seconds since the epoch */
    int64_t           leeway;         /* seconds, for exp and nbf */

    const char       *issuer;         /* NULL: not checked */
    size_t            issuer_len;

    const char      **azp;            /* NULL or nazp == 0: not checked */
    size_t           *azp_len;
    size_t            nazp;

    /* where claims->metadata_role comes from: a dot-separated path of
     * object members, NUL-terminated; NULL: "metadata.role" */
    const char       *role_claim;
} tenant_jwt_policy_t;


/*
 * Verifies a compact JWT against the key set and the policy and fills
 * *claims.  Order of checks: size, shape, header JSON, alg allowlist
 * (before any key is touched), kid -> key (the key's type must match the
 * alg: an RSA key never verifies ES256 and vice versa), signature, payload
 * JSON, claim types and bounds, exp, nbf, iss, azp, sts.
 *
 * Org claims: v1 tokens carry org_id / org_role / org_slug at the top
 * level; v2 tokens ("v": 2) carry an object "o" with id / rol / slg
 * (Clerk's v2 "rol" has no "org:" prefix; it is stored as given).
 * A claim that is present but not a string, longer than TENANT_CLAIM_MAX
 * or containing bytes < 0x20 or 0x7f gives TENANT_JWT_BAD_CLAIM.
 * claims->session is 1 when "sid" is a non-empty string, 0 otherwise
 * (absent, empty or of another type: not a session token, no refusal).
 */
tenant_jwt_status_t tenant_jwt_verify(const unsigned char *token, size_t len,
    const tenant_keyset_t *keys, const tenant_jwt_policy_t *policy,
    tenant_jwt_claims_t *claims);

/*
 * tenant_jwt_pack: 0, or -1 when the four strings together are longer
 * than TENANT_JWT_PACKED_STR (the token is then not cached: verified
 * again each time, never admitted with a claim cut short).
 * tenant_jwt_unpack: sets every field of *claims the pack kept, with
 * NUL-terminated strings, and empties the others (iat 0, org_slug ""):
 * 0, or -1 (nothing written) when the lengths add up to more than str.
 */
int tenant_jwt_pack(const tenant_jwt_claims_t *claims,
    tenant_jwt_packed_t *packed);
int tenant_jwt_unpack(const tenant_jwt_packed_t *packed,
    tenant_jwt_claims_t *claims);

/* A short stable identifier ("token_expired") and a human sentence
 * ("the token has expired") for each status; never mention key material. */
const char *tenant_jwt_status_code(tenant_jwt_status_t status);
const char *tenant_jwt_status_text(tenant_jwt_status_t status);

/* base64url without padding (RFC 4648 section 5); returns decoded length
 * or -1 on a bad character or impossible length.  dst must hold
 * (len * 3) / 4 + 3 bytes. */
long tenant_base64url_decode(unsigned char *dst, const unsigned char *src,
    size_t len);


#endif /* _TENANT_JWT_H_INCLUDED_ */
