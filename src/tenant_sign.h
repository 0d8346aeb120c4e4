/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Signed tenant headers, token fingerprints and small crypto helpers.
 *
 * The signing key is derived from ENCRYPTION_KEY (32 bytes given as 64
 * hex digits) with HKDF-SHA256 (RFC 5869): salt empty, info
 * TENANT_SIGN_INFO, 32 bytes of output.  The signature is
 * HMAC-SHA256(key, message) in lowercase hex, sent as
 * "X-Tenant-Signature: v2=<hex>", where message is the canonical string
 * built by tenant_sign_message():
 *
 *   "v2\n" timestamp "\n" method "\n" target "\n" request_id "\n"
 *   tenant_id "\n" tenant_slug "\n" tenant_schema "\n" tenant_tier "\n"
 *   organization_id "\n" user_id "\n" org_role
 *
 * method and target are the request line the upstream receives ("GET",
 * "/api/x?y=1"); the other values are exactly as sent in the
 * X-Tenant-Timestamp, X-Tenant-Request-ID, X-Tenant-ID, X-Tenant-Slug,
 * X-Tenant-Schema, X-Tenant-Tier, X-Organization-ID, X-User-ID and
 * X-Org-Role headers (an absent value is the empty string).  No field may hold a control byte,
 * so the fields cannot run into each other.
 *
 * v1 (the timestamp and the tenant values only) bound no request: a header
 * set seen once could be replayed on any method and path.  It is no
 * longer produced.
 */

#ifndef _TENANT_SIGN_H_INCLUDED_
#define _TENANT_SIGN_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>


#define TENANT_SIGN_INFO          "capliquify tenant headers v1"
#define TENANT_SHA256_LEN         32
#define TENANT_SIGN_VERSION       "v2"


/* the fields of the canonical message after the timestamp, in order */

enum {
    TENANT_SIGN_METHOD = 0,
    TENANT_SIGN_TARGET,
    TENANT_SIGN_REQUEST_ID,
    TENANT_SIGN_TENANT_ID,
    TENANT_SIGN_TENANT_SLUG,
    TENANT_SIGN_TENANT_SCHEMA,
    TENANT_SIGN_TENANT_TIER,
    TENANT_SIGN_ORGANIZATION_ID,
    TENANT_SIGN_USER_ID,
    TENANT_SIGN_ORG_ROLE,
    TENANT_SIGN_NFIELDS
};


typedef struct {
    EVP_MD          *md;          /* fetched once, reused */
    EVP_MD_CTX      *inner;       /* SHA-256 state after key ^ ipad */
    EVP_MD_CTX      *outer;       /* SHA-256 state after key ^ opad */
    EVP_MD_CTX      *work;        /* scratch, reused per call */
} tenant_sign_key_t;


typedef struct {
    const char      *value;
    size_t           len;
} tenant_str_t;


/* ikm is the 32 bytes of ENCRYPTION_KEY (hex-decoded by the caller); other
 * lengths are refused.  0 on success, -1 with a reason in err (never the
 * key).  tenant_sign_free() is safe after a failed init and twice. */
int tenant_sign_init(tenant_sign_key_t *k, const unsigned char *ikm,
    size_t ikm_len, char *err, size_t errlen);
void tenant_sign_free(tenant_sign_key_t *k);

/* HKDF-SHA256 (RFC 5869), as tenant_sign_init() derives the key; exposed
 * for the RFC test vectors.  0 or -1. */
int tenant_hkdf_sha256(unsigned char *out, size_t out_len,
    const unsigned char *ikm, size_t ikm_len, const unsigned char *salt,
    size_t salt_len, const unsigned char *info, size_t info_len);

/* HMAC-SHA256 with the derived key; 0 or -1. */
int tenant_sign(tenant_sign_key_t *k, const unsigned char *msg, size_t len,
    unsigned char out[TENANT_SHA256_LEN]);

/* The canonical message from fields[0 .. TENANT_SIGN_NFIELDS - 1] (in the
 * order of the enum above), after "v2\n" and the timestamp.  Returns its
 * length (never 0); with dst NULL only measures.  A field with value NULL
 * is empty.  Returns 0, writing nothing, when a field holds a byte below
 * 0x20 or 0x7f: such a message could be read with other fields. */
size_t tenant_sign_message(char *dst, int64_t timestamp,
    const tenant_str_t fields[TENANT_SIGN_NFIELDS]);

/* SHA-256 with the key's fetched digest (for token cache keys); 0 or -1. */
int tenant_sha256(tenant_sign_key_t *k, const unsigned char *data,
    size_t len, unsigned char out[TENANT_SHA256_LEN]);

/* Lowercase hex; dst holds 2 * len bytes (no NUL written). */
void tenant_hex_encode(char *dst, const unsigned char *src, size_t len);

/* Hex (either case) to bytes; returns the byte count or -1. */
long tenant_hex_decode(unsigned char *dst, const char *src, size_t len);

/* Constant-time equality of two byte strings of possibly different
 * lengths (the time depends on the lengths only); 1 if equal. */
int tenant_ct_equal(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen);

/* A configured secret kept as its SHA-256 (tenant_secret_digest()), and
 * whether a presented token is that secret: the token's SHA-256 compared
 * with tenant_ct_equal(), so that the time depends on the token's length
 * only, never on the secret nor its length.  Both return -1 when OpenSSL
 * fails; tenant_secret_matches() 1 if the token is the secret, else 0. */
int tenant_secret_digest(const unsigned char *secret, size_t len,
    unsigned char digest[TENANT_SHA256_LEN]);
int tenant_secret_matches(const unsigned char digest[TENANT_SHA256_LEN],
    const unsigned char *token, size_t len);


#endif /* _TENANT_SIGN_H_INCLUDED_ */
