/*
 * Copyright (C) ngx_tenant_module authors
 *
 * tenant_jwks: PEM and JWKS parsing into a key set, and the kid rules,
 * with freshly generated keys.
 */


#include "tap.h"
#include "jwt_util.h"

#include <limits.h>
#include <stdint.h>

#include <openssl/encoder.h>

#include "tenant_jwks.h"
#include "tenant_jwt.h"


#define PAYLOAD   "{\"sub\":\"user_1\",\"exp\":1700000600}"


static EVP_PKEY  *rsa, *rsa2, *ec, *ec2;
static char       err[256];
static char       doc[16384];


static int
add_pem(tenant_keyset_t *ks, const char *pem, const char *kid)
{
    err[0] = '\0';

    return tenant_keyset_add_pem(ks, (const unsigned char *) pem,
                                 strlen(pem), kid, err, sizeof(err));
}


static int
add_jwks(tenant_keyset_t *ks, const char *json)
{
    err[0] = '\0';

    return tenant_keyset_add_jwks(ks, (const unsigned char *) json,
                                  strlen(json), err, sizeof(err));
}


/* a JWKS {"keys":[jwk1, jwk2]} of public keys with extra members */

static const char *
jwks2(EVP_PKEY *k1, const char *x1, EVP_PKEY *k2, const char *x2)
{
    char  a[4096], b[4096];

    jwk_of(k1, x1, a, sizeof(a));

    if (k2 == NULL) {
        snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", a);

    } else {
        jwk_of(k2, x2, b, sizeof(b));
        snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", a, b);
    }

    return doc;
}


static tenant_jwt_status_t
verify_with(tenant_keyset_t *ks, EVP_PKEY *pkey, const char *header)
{
    char                 tok[TOKEN_MAX];
    tenant_jwt_claims_t  claims;
    tenant_jwt_policy_t  policy;

    memset(&policy, 0, sizeof(policy));
    policy.algorithms = TENANT_JWT_RS256 | TENANT_JWT_ES256;
    policy.now = 1700000000;

    make_token(tok, pkey, header, PAYLOAD);

    return tenant_jwt_verify((const unsigned char *) tok, strlen(tok), ks,
                             &policy, &claims);
}


static int
err_has_no(const char *needle)
{
    return strstr(err, needle) == NULL;
}


static void
test_pem(void)
{
    char              pem[4096], bad[4096];
    EVP_PKEY         *k;
    tenant_keyset_t   ks;
    BIO              *bio;
    char             *p;
    long              n;
    int               dlen;
    unsigned char    *der, dbuf[1024];
    OSSL_ENCODER_CTX *ectx;

    memset(&ks, 0, sizeof(ks));

    pem_of(rsa, pem, sizeof(pem));
    is_int(add_pem(&ks, pem, "k1"), 0, "PEM RSA-2048 accepted");
    is_int(ks.nkeys, 1, "  one key");
    is_int(ks.keys[0].type, TENANT_KEY_RSA, "  of type RSA");
    is_str(ks.keys[0].kid, "k1", "  with its kid");
    is_int(ks.keys[0].kid_len, 2, "  and kid_len");
    ok(ks.keys[0].pkey != NULL, "  and an EVP_PKEY");

    pem_of(ec, pem, sizeof(pem));
    is_int(add_pem(&ks, pem, NULL), 0, "PEM EC P-256 accepted");
    is_int(ks.nkeys, 2, "  two keys");
    is_int(ks.keys[1].type, TENANT_KEY_EC_P256, "  of type EC P-256");
    is_int(ks.keys[1].kid_len, 0, "  without kid");
    is_str(ks.keys[1].kid, "", "  kid empty");

    /* refused: other types and sizes, garbage, private keys */

    k = gen_rsa(1024);
    pem_of(k, pem, sizeof(pem));
    is_int(add_pem(&ks, pem, NULL), -1, "PEM RSA-1024 refused");
    ok(strstr(err, "1024") != NULL, "  reason names the size: %s", err);
    ok(err_has_no("MII") && err_has_no("BEGIN"), "  no key material");

    /* a private key PEM */

    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(bio, &p);
    memcpy(bad, p, n);
    bad[n] = '\0';
    BIO_free(bio);
    EVP_PKEY_free(k);

    is_int(add_pem(&ks, bad, NULL), -1, "PEM private key refused");
    ok(err[0] != '\0' && err_has_no("MII"), "  reason without key: %s", err);

    k = gen_ec("P-384");
    pem_of(k, pem, sizeof(pem));
    EVP_PKEY_free(k);
    is_int(add_pem(&ks, pem, NULL), -1, "PEM EC P-384 refused");
    ok(strstr(err, "P-256") != NULL, "  reason: %s", err);

    k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (k == NULL) {
        bail("ED25519 keygen");
    }
    pem_of(k, pem, sizeof(pem));
    EVP_PKEY_free(k);
    is_int(add_pem(&ks, pem, NULL), -1, "PEM Ed25519 refused");
    ok(strstr(err, "unsupported") != NULL, "  reason: %s", err);

    /* PKCS#1 "RSA PUBLIC KEY": not SubjectPublicKeyInfo */

    ectx = OSSL_ENCODER_CTX_new_for_pkey(rsa, EVP_PKEY_PUBLIC_KEY, "PEM",
                                         "type-specific", NULL);
    bio = BIO_new(BIO_s_mem());
    if (ectx == NULL || OSSL_ENCODER_to_bio(ectx, bio) != 1) {
        bail("OSSL_ENCODER");
    }
    n = BIO_get_mem_data(bio, &p);
    memcpy(bad, p, n);
    bad[n] = '\0';
    BIO_free(bio);
    OSSL_ENCODER_CTX_free(ectx);

    ok(strstr(bad, "BEGIN RSA PUBLIC KEY") != NULL, "PKCS#1 PEM built");
    is_int(add_pem(&ks, bad, NULL), -1, "PEM PKCS#1 RSA PUBLIC KEY refused");

    /* a PUBLIC KEY block whose DER has trailing bytes */

    der = NULL;
    dlen = i2d_PUBKEY(rsa, &der);
    if (dlen <= 0) {
        bail("i2d_PUBKEY");
    }
    memcpy(dbuf, der, dlen);
    OPENSSL_free(der);
    dbuf[dlen] = 0x05;
    dbuf[dlen + 1] = 0x00;

    bio = BIO_new(BIO_s_mem());
    PEM_write_bio(bio, "PUBLIC KEY", "", dbuf, dlen + 2);
    n = BIO_get_mem_data(bio, &p);
    memcpy(bad, p, n);
    bad[n] = '\0';
    BIO_free(bio);
    is_int(add_pem(&ks, bad, NULL), -1, "PEM with trailing DER bytes refused");

    bio = BIO_new(BIO_s_mem());
    PEM_write_bio(bio, "PUBLIC KEY", "", dbuf, dlen);
    n = BIO_get_mem_data(bio, &p);
    memcpy(bad, p, n);
    bad[n] = '\0';
    BIO_free(bio);
    is_int(add_pem(&ks, bad, "d"), 0, "  the same DER without them accepted");
    is_int(ks.nkeys, 3, "  three keys");
    ks.nkeys--;
    EVP_PKEY_free(ks.keys[2].pkey);
    ks.keys[2].pkey = NULL;

    is_int(add_pem(&ks, "hello", NULL), -1, "garbage refused");
    is_int(add_pem(&ks, "", NULL), -1, "empty PEM refused");

    pem_of(rsa, pem, sizeof(pem));
    strcpy(bad, pem);
    bad[strlen(bad) / 2] = '\0';
    is_int(add_pem(&ks, bad, NULL), -1, "truncated PEM refused");

    strcpy(bad, pem);
    bad[40] = (bad[40] == 'A') ? 'B' : 'A';
    bad[41] = '*';
    is_int(add_pem(&ks, bad, NULL), -1, "corrupted PEM refused");

    is_int(add_pem(&ks, pem,
                   "0123456789abcdef0123456789abcdef0123456789abcdef"
                   "0123456789abcdef0123456789abcdef0123456789abcdef"
                   "0123456789abcdef0123456789abcdef!"), -1,
           "kid longer than TENANT_KID_MAX refused");

    is_int(ks.nkeys, 2, "refusals add nothing");

    is_int(tenant_keyset_add_pem(&ks, (const unsigned char *) "x", 1, NULL,
                                 NULL, 0),
           -1, "NULL err buffer tolerated");

    tenant_keyset_free(&ks);
    is_int(ks.nkeys, 0, "free empties the set");
    ok(ks.keys[0].pkey == NULL && ks.keys[1].pkey == NULL,
       "free clears the keys");
    tenant_keyset_free(&ks);
    ok(1, "free twice is harmless");
}


static void
test_full(void)
{
    int               i, rc;
    char              pem[4096];
    tenant_keyset_t   ks;

    memset(&ks, 0, sizeof(ks));
    pem_of(ec, pem, sizeof(pem));

    rc = 0;

    for (i = 0; i < TENANT_JWKS_MAX_KEYS; i++) {
        rc |= add_pem(&ks, pem, NULL);
    }

    is_int(rc, 0, "%d keys fit", TENANT_JWKS_MAX_KEYS);
    is_int(add_pem(&ks, pem, NULL), -1, "one more is refused");
    ok(strstr(err, "too many") != NULL, "  reason: %s", err);
    is_int(ks.nkeys, TENANT_JWKS_MAX_KEYS, "  set unchanged");

    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":\"a\"", NULL, NULL)), -1,
           "JWKS into a full set refused");

    tenant_keyset_free(&ks);

    /* a JWKS that does not fit is not half added */

    for (i = 0; i < TENANT_JWKS_MAX_KEYS - 1; i++) {
        add_pem(&ks, pem, NULL);
    }

    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":\"a\"", ec, "\"kid\":\"b\"")),
           -1, "JWKS of 2 keys into a set with room for 1 refused");
    is_int(ks.nkeys, TENANT_JWKS_MAX_KEYS - 1, "  nothing added");
    ok(ks.keys[TENANT_JWKS_MAX_KEYS - 1].pkey == NULL, "  slot left clean");

    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":\"a\",\"use\":\"enc\"",
                               ec, "\"kid\":\"b\"")),
           0, "JWKS of 1 usable key + 1 skipped fits in 1 slot");
    is_int(ks.nkeys, TENANT_JWKS_MAX_KEYS, "  set full");

    tenant_keyset_free(&ks);
}


static void
test_jwks(void)
{
    char                 n64[1400], e64[64], x64[64], jwk[4096];
    EVP_PKEY            *k;
    unsigned char        bin[600];
    tenant_keyset_t      ks;
    const tenant_key_t  *key;
    int                  nbin;
    BIGNUM              *bn;

    memset(&ks, 0, sizeof(ks));

    /* Clerk's shape: use, kty, kid, alg, n, e */

    is_int(add_jwks(&ks, jwks2(rsa, "\"use\":\"sig\",\"kid\":\"ins_a\","
                                    "\"alg\":\"RS256\"",
                               ec, "\"use\":\"sig\",\"kid\":\"ins_b\","
                                   "\"alg\":\"ES256\"")),
           0, "JWKS with an RSA and an EC key");
    is_int(ks.nkeys, 2, "  two keys");

    key = tenant_keyset_find(&ks, "ins_a", 5);
    ok(key != NULL && key->type == TENANT_KEY_RSA,
       "  kid ins_a is the RSA key");
    key = tenant_keyset_find(&ks, "ins_b", 5);
    ok(key != NULL && key->type == TENANT_KEY_EC_P256,
       "  kid ins_b is the EC key");
    ok(tenant_keyset_find(&ks, "ins_c", 5) == NULL, "  kid ins_c: none");
    ok(tenant_keyset_find(&ks, NULL, 0) == NULL, "  no kid: none");

    is_int(verify_with(&ks, rsa, "{\"alg\":\"RS256\",\"kid\":\"ins_a\"}"),
           TENANT_JWT_OK, "RS256 token verifies with the JWKS RSA key");
    is_int(verify_with(&ks, ec, "{\"alg\":\"ES256\",\"kid\":\"ins_b\"}"),
           TENANT_JWT_OK, "ES256 token verifies with the JWKS EC key");
    is_int(verify_with(&ks, rsa2, "{\"alg\":\"RS256\",\"kid\":\"ins_a\"}"),
           TENANT_JWT_BAD_SIGNATURE, "another RSA key's token does not");
    is_int(verify_with(&ks, ec2, "{\"alg\":\"ES256\",\"kid\":\"ins_b\"}"),
           TENANT_JWT_BAD_SIGNATURE, "another EC key's token does not");
    is_int(verify_with(&ks, rsa, "{\"alg\":\"RS256\",\"kid\":\"ins_b\"}"),
           TENANT_JWT_UNKNOWN_KID, "RS256 naming the EC kid refused");

    /* a second document adds to the set */

    is_int(add_jwks(&ks, jwks2(rsa2, "\"kid\":\"ins_c\"", NULL, NULL)), 0,
           "second JWKS added");
    is_int(ks.nkeys, 3, "  three keys");
    is_int(verify_with(&ks, rsa2, "{\"alg\":\"RS256\",\"kid\":\"ins_c\"}"),
           TENANT_JWT_OK, "  its key verifies");

    tenant_keyset_free(&ks);

    /* skipped keys */

    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":\"e\",\"use\":\"enc\"",
                               ec, "\"kid\":\"s\",\"use\":\"sig\"")),
           0, "JWKS with an enc key and a sig key");
    is_int(ks.nkeys, 1, "  only the sig key added");
    ok(tenant_keyset_find(&ks, "e", 1) == NULL, "  enc key not found");
    ok(tenant_keyset_find(&ks, "s", 1) != NULL, "  sig key found");
    tenant_keyset_free(&ks);

    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":\"e\",\"use\":\"enc\"",
                               NULL, NULL)),
           -1, "JWKS with only an enc key refused");
    ok(strstr(err, "use") != NULL, "  reason: %s", err);

    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":\"e\",\"use\":1", NULL, NULL)),
           -1, "non-string use skipped");

    is_int(add_jwks(&ks, jwks2(rsa, "\"alg\":\"RS512\"",
                               ec, "\"alg\":\"ES256\"")),
           0, "JWKS with an RS512 key and an ES256 key");
    is_int(ks.nkeys, 1, "  RS512 key skipped");
    is_int(ks.keys[0].type, TENANT_KEY_EC_P256, "  ES256 key kept");
    tenant_keyset_free(&ks);

    is_int(add_jwks(&ks, jwks2(rsa, "\"alg\":\"ES256\"", NULL, NULL)), -1,
           "RSA key announced as ES256 skipped");
    is_int(add_jwks(&ks, jwks2(ec, "\"alg\":\"RS256\"", NULL, NULL)), -1,
           "EC key announced as RS256 skipped");
    is_int(add_jwks(&ks, jwks2(rsa, "\"kid\":7", NULL, NULL)), -1,
           "numeric kid skipped");

    is_int(add_jwks(&ks, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"),
           -1, "symmetric (oct) key skipped");
    ok(strstr(err, "kty") != NULL, "  reason: %s", err);
    is_int(add_jwks(&ks, "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                         "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\""
                         "}]}"),
           -1, "OKP key skipped");

    k = gen_ec("P-384");
    jwk_of(k, "", jwk, sizeof(jwk));
    EVP_PKEY_free(k);
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    *strstr(doc, "P-256") = 'X';
    is_int(add_jwks(&ks, doc), -1, "EC key on another curve skipped");

    /* malformed documents */

    is_int(add_jwks(&ks, "MIIBIjANBgkqhkiG9w0BAQEFAAOC"), -1,
           "garbage refused");
    ok(err[0] != '\0' && err_has_no("MIIBIj"),
       "  reason does not quote the input: %s", err);
    is_int(add_jwks(&ks, ""), -1, "empty document refused");
    is_int(add_jwks(&ks, "[]"), -1, "array refused");
    is_int(add_jwks(&ks, "{}"), -1, "object without keys refused");
    is_int(add_jwks(&ks, "{\"keys\":[]}"), -1, "empty keys array refused");
    ok(strstr(err, "no keys") != NULL, "  reason: %s", err);
    is_int(add_jwks(&ks, "{\"keys\":{}}"), -1, "keys an object refused");
    is_int(add_jwks(&ks, "{\"keys\":[1,\"x\",null]}"), -1,
           "keys of the wrong types refused");
    is_int(add_jwks(&ks, "{\"keys\":[],\"keys\":[]}"), -1,
           "duplicate keys member refused");

    jwk_of(rsa, "\"kid\":\"a\",\"kid\":\"b\"", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    is_int(add_jwks(&ks, doc), -1, "duplicate kid member in a JWK refused");

    jwk_of(rsa, "\"kid\":\"a\"", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]} trailing", jwk);
    is_int(add_jwks(&ks, doc), -1, "trailing bytes refused");

    is_int(ks.nkeys, 0, "refused documents add nothing");

    /* weak and broken keys */

    k = gen_rsa(1024);
    bn_b64url(k, OSSL_PKEY_PARAM_RSA_N, 0, n64);
    is_int(add_jwks(&ks, jwks2(k, "\"kid\":\"weak\"", NULL, NULL)), -1,
           "JWKS RSA-1024 refused");
    ok(strstr(err, "1024") != NULL, "  reason names the size: %s", err);
    n64[16] = '\0';
    ok(err_has_no(n64), "  reason does not quote n");
    is_int(add_jwks(&ks, jwks2(k, "\"kid\":\"weak\"", rsa, "\"kid\":\"ok\"")),
           0, "RSA-1024 next to an RSA-2048 key: the strong one is kept");
    is_int(ks.nkeys, 1, "  one key");
    is_str(ks.keys[0].kid, "ok", "  the strong one");
    tenant_keyset_free(&ks);
    EVP_PKEY_free(k);

    bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_N, 0, n64);
    bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_E, 0, e64);

    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\"}]}", n64);
    is_int(add_jwks(&ks, doc), -1, "RSA key without e refused");

    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s=\",\"e\":\"%s\"}]}",
             n64, e64);
    is_int(add_jwks(&ks, doc), -1, "RSA n with padding refused");

    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"n\":%s,\"e\":\"%s\"}]}",
             "12345", e64);
    is_int(add_jwks(&ks, doc), -1, "numeric n refused");

    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AA\"}]}",
             n64);
    is_int(add_jwks(&ks, doc), -1, "RSA e = 0 refused");

    /* n with a leading zero byte still is the same 2048-bit key */

    bn = NULL;
    EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &bn);
    bin[0] = 0;
    nbin = BN_bn2bin(bn, bin + 1);
    BN_free(bn);
    b64url(n64, bin, (size_t) nbin + 1);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"z\",\"n\":\"%s\","
             "\"e\":\"%s\"}]}", n64, e64);
    is_int(add_jwks(&ks, doc), 0, "RSA n with a leading zero byte accepted");
    is_int(verify_with(&ks, rsa, "{\"alg\":\"RS256\",\"kid\":\"z\"}"),
           TENANT_JWT_OK, "  and verifies");
    tenant_keyset_free(&ks);

    /* EC coordinates: full size, on the curve */

    bn_b64url(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32, x64);

    jwk_of(ec, "", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    memcpy(strstr(doc, "\"x\":\"") + 5, "AAAA", 4);
    is_int(add_jwks(&ks, doc), -1, "EC point off the curve refused");

    memset(bin, 0, 31);
    b64url(x64, bin, 31);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\","
             "\"y\":\"%s\"}]}", x64, x64);
    is_int(add_jwks(&ks, doc), -1, "EC coordinates of 31 bytes refused");

    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\"}]}",
             x64);
    is_int(add_jwks(&ks, doc), -1, "EC key without y refused");

    is_int(ks.nkeys, 0, "broken keys add nothing");

    /* a JWKS with "kid": "" is a kid-less key */

    is_int(add_jwks(&ks, jwks2(ec, "\"kid\":\"\"", NULL, NULL)), 0,
           "JWKS key with an empty kid");
    ok(tenant_keyset_find(&ks, "anything", 8) == &ks.keys[0],
       "  lone kid-less key matches any kid");
    tenant_keyset_free(&ks);
}


/*
 * Several PEM keys without kid (an RSA and an EC key, or an old and a new
 * key during a rotation): a token verifies with whichever signed it.
 */

static void
test_rotation(void)
{
    char             pem[4096];
    tenant_keyset_t  ks;

    memset(&ks, 0, sizeof(ks));

    pem_of(rsa, pem, sizeof(pem));
    add_pem(&ks, pem, NULL);
    pem_of(ec, pem, sizeof(pem));
    add_pem(&ks, pem, NULL);
    pem_of(rsa2, pem, sizeof(pem));
    add_pem(&ks, pem, NULL);

    is_int(ks.nkeys, 3, "three kid-less PEM keys");

    is_int(verify_with(&ks, rsa, "{\"alg\":\"RS256\"}"), TENANT_JWT_OK,
           "  RS256 by the first key");
    is_int(verify_with(&ks, rsa2, "{\"alg\":\"RS256\"}"), TENANT_JWT_OK,
           "  RS256 by the third key");
    is_int(verify_with(&ks, ec, "{\"alg\":\"ES256\"}"), TENANT_JWT_OK,
           "  ES256 by the EC key");
    is_int(verify_with(&ks, rsa2,
                       "{\"alg\":\"RS256\",\"kid\":\"ins_x\"}"),
           TENANT_JWT_OK, "  a kid that names no key: the kid-less keys");
    is_int(verify_with(&ks, ec2, "{\"alg\":\"ES256\"}"),
           TENANT_JWT_BAD_SIGNATURE, "  ES256 by another EC key: refused");

    tenant_keyset_free(&ks);
}


/*
 * A key rotation at the identity provider, for every combination of key
 * sources the README documents: a PEM key (kid-less, Clerk's networkless
 * key), a JWKS file, keys fetched from a URL.  The old key is rsa (kid
 * ins_old in a JWKS), the new one rsa2 (kid ins_new).  A token of the new
 * kid must come out TENANT_JWT_UNKNOWN_KID with the keys held before the
 * rotation, whatever else is configured, because that is what has the
 * gateway fetch again; with the fetched document of the new key, it
 * verifies.
 */

static void
test_rotation_sources(void)
{
    char             pem[4096], old_doc[4096], new_doc[4096], name[128];
    size_t           i;
    EVP_PKEY        *stranger;
    tenant_keyset_t  conf, before, after;

    static const struct {
        const char  *name;
        int          pem, file, url;
    } combos[] = {
        { "PEM only", 1, 0, 0 },
        { "file only", 0, 1, 0 },
        { "URL only", 0, 0, 1 },
        { "PEM + URL", 1, 0, 1 },
        { "file + URL", 0, 1, 1 },
        { "PEM + file", 1, 1, 0 },
        { "PEM + file + URL", 1, 1, 1 },
    };

#define NEW_KID  "{\"alg\":\"RS256\",\"kid\":\"ins_new\"}"
#define OLD_KID  "{\"alg\":\"RS256\",\"kid\":\"ins_old\"}"
#define NO_KID   "{\"alg\":\"RS256\"}"

    stranger = gen_rsa(2048);

    pem_of(rsa, pem, sizeof(pem));
    snprintf(old_doc, sizeof(old_doc), "%s",
             jwks2(rsa, "\"kid\":\"ins_old\"", NULL, NULL));
    snprintf(new_doc, sizeof(new_doc), "%s",
             jwks2(rsa2, "\"kid\":\"ins_new\"", NULL, NULL));

    for (i = 0; i < sizeof(combos) / sizeof(combos[0]); i++) {
        memset(&conf, 0, sizeof(conf));
        memset(&before, 0, sizeof(before));
        memset(&after, 0, sizeof(after));

        /* the configuration's keys: the PEM (old key), the file (old) */

        if (combos[i].pem && add_pem(&conf, pem, NULL) != 0) {
            bail("add_pem");
        }

        if (combos[i].file && add_jwks(&conf, old_doc) != 0) {
            bail("add_jwks");
        }

        /* a worker's set: the configuration's plus the fetched document,
         * the old one before the rotation, the new one after */

        if (tenant_keyset_copy(&before, &conf) != 0
            || tenant_keyset_copy(&after, &conf) != 0
            || (combos[i].url && add_jwks(&before, old_doc) != 0)
            || (combos[i].url && add_jwks(&after, new_doc) != 0))
        {
            bail("key sets");
        }

        snprintf(name, sizeof(name), "%s: the old kid verifies",
                 combos[i].name);
        is_int(verify_with(&before, rsa, OLD_KID), TENANT_JWT_OK, name);

        snprintf(name, sizeof(name),
                 "%s: the new kid is unknown (a fetch, if a URL is set)",
                 combos[i].name);
        is_int(verify_with(&before, rsa2, NEW_KID), TENANT_JWT_UNKNOWN_KID,
               name);

        snprintf(name, sizeof(name),
                 "%s: an invented kid, signed by a stranger: unknown",
                 combos[i].name);
        is_int(verify_with(&before, stranger,
                           "{\"alg\":\"RS256\",\"kid\":\"made_up\"}"),
               TENANT_JWT_UNKNOWN_KID, name);

        if (combos[i].file || combos[i].url) {
            snprintf(name, sizeof(name),
                     "%s: the old kid signed by a stranger: bad signature "
                     "(no other key tried)", combos[i].name);
            is_int(verify_with(&before, stranger, OLD_KID),
                   TENANT_JWT_BAD_SIGNATURE, name);
        }

        if (combos[i].pem) {
            snprintf(name, sizeof(name),
                     "%s: no kid, signed by a stranger: bad signature",
                     combos[i].name);
            is_int(verify_with(&before, stranger, NO_KID),
                   TENANT_JWT_BAD_SIGNATURE, name);

            snprintf(name, sizeof(name),
                     "%s: an unknown kid signed by the PEM key verifies",
                     combos[i].name);
            is_int(verify_with(&before, rsa,
                               "{\"alg\":\"RS256\",\"kid\":\"ins_z\"}"),
                   TENANT_JWT_OK, name);
        }

        if (combos[i].url) {
            snprintf(name, sizeof(name),
                     "%s: after the fetch, the new kid verifies",
                     combos[i].name);
            is_int(verify_with(&after, rsa2, NEW_KID), TENANT_JWT_OK, name);

            /* the configuration's keys stay in use besides the fetched
             * ones: the old key goes only with the last of its sources */

            snprintf(name, sizeof(name), "%s: after the fetch, the old kid "
                     "%s", combos[i].name,
                     combos[i].file ? "verifies (the file's key)"
                     : combos[i].pem ? "verifies (the PEM key)"
                     : "is unknown");
            is_int(verify_with(&after, rsa, OLD_KID),
                   combos[i].file || combos[i].pem ? TENANT_JWT_OK
                                                   : TENANT_JWT_UNKNOWN_KID,
                   name);
        }

        tenant_keyset_free(&conf);
        tenant_keyset_free(&before);
        tenant_keyset_free(&after);
    }

#undef NEW_KID
#undef OLD_KID
#undef NO_KID

    EVP_PKEY_free(stranger);
}


static void
test_find(void)
{
    char                 pem[4096];
    tenant_keyset_t      ks;
    const tenant_key_t  *key;

    memset(&ks, 0, sizeof(ks));

    ok(tenant_keyset_find(&ks, "a", 1) == NULL, "empty set: kid a none");
    ok(tenant_keyset_find(&ks, NULL, 0) == NULL, "empty set: no kid none");

    /* one key without kid: Clerk's networkless PEM */

    pem_of(rsa, pem, sizeof(pem));
    add_pem(&ks, pem, NULL);

    ok(tenant_keyset_find(&ks, "ins_anything", 12) == &ks.keys[0],
       "lone kid-less key matches any kid");
    ok(tenant_keyset_find(&ks, NULL, 0) == &ks.keys[0],
       "lone kid-less key matches no kid");

    /* plus one key with kid */

    pem_of(ec, pem, sizeof(pem));
    add_pem(&ks, pem, "k");

    key = tenant_keyset_find(&ks, "k", 1);
    ok(key == &ks.keys[1], "kid k: the keyed key");
    ok(tenant_keyset_find(&ks, "zzz", 3) == &ks.keys[0],
       "two keys: an unknown kid falls back to the kid-less key");
    {
        size_t  pos = 0;

        ok(tenant_keyset_next(&ks, "zzz", 3, TENANT_KEY_EC_P256, &pos)
           == NULL, "  but not of another type");
        pos = 0;
        ok(tenant_keyset_next(&ks, "k", 1, TENANT_KEY_RSA, &pos) == NULL,
           "  a kid that names a key of another type: no key");
    }
    ok(tenant_keyset_find(&ks, NULL, 0) == &ks.keys[0],
       "two keys: no kid matches the kid-less key");
    ok(tenant_keyset_find(&ks, "kx", 1) == &ks.keys[1],
       "kid_len is honoured (kid not NUL-terminated)");
    ok(tenant_keyset_find(&ks, "k", 0) == &ks.keys[0],
       "kid of length 0 is no kid");
    ok(tenant_keyset_find(&ks, "K", 1) == &ks.keys[0],
       "kid is case-sensitive (K is not k: the kid-less key)");

    tenant_keyset_free(&ks);

    /* one key with a kid */

    add_pem(&ks, pem, "only");

    ok(tenant_keyset_find(&ks, "only", 4) == &ks.keys[0], "kid only: found");
    ok(tenant_keyset_find(&ks, NULL, 0) == NULL,
       "lone keyed key does not match a token without kid");
    ok(tenant_keyset_find(&ks, "other", 5) == NULL,
       "lone keyed key does not match another kid");
    ok(tenant_keyset_find(&ks, "onl", 3) == NULL, "kid prefix: none");
    ok(tenant_keyset_find(&ks, "only1", 5) == NULL, "longer kid: none");

    tenant_keyset_free(&ks);
}


/*
 * The configuration's keys copied into a set of their own, then a fetched
 * JWKS added: both verify; the copy outlives the original (shared
 * EVP_PKEYs are reference counted); a set that would overflow is refused
 * and left as it was.
 */

static void
test_copy(void)
{
    char             pem[4096];
    size_t           i;
    tenant_keyset_t  conf, live, full;

    memset(&conf, 0, sizeof(conf));
    memset(&live, 0, sizeof(live));
    memset(&full, 0, sizeof(full));

    pem_of(rsa, pem, sizeof(pem));
    add_pem(&conf, pem, NULL);

    is_int(tenant_keyset_copy(&live, &conf), 0, "copy: the PEM key");
    is_int(add_jwks(&live, jwks2(ec, "\"kid\":\"ec-1\"", rsa2,
                                 "\"kid\":\"rsa-2\"")), 0,
           "  plus a fetched JWKS of two keys");
    is_int(live.nkeys, 3, "  three keys");
    is_int(conf.nkeys, 1, "  the configuration's set is unchanged");

    tenant_keyset_free(&conf);

    is_int(verify_with(&live, rsa, "{\"alg\":\"RS256\"}"), TENANT_JWT_OK,
           "  the copied key verifies after the original set is freed");
    is_int(verify_with(&live, ec, "{\"alg\":\"ES256\",\"kid\":\"ec-1\"}"),
           TENANT_JWT_OK, "  the fetched EC key verifies");
    is_int(verify_with(&live, rsa2,
                       "{\"alg\":\"RS256\",\"kid\":\"rsa-2\"}"),
           TENANT_JWT_OK, "  the fetched RSA key verifies");
    is_int(verify_with(&live, rsa2,
                       "{\"alg\":\"RS256\",\"kid\":\"rsa-9\"}"),
           TENANT_JWT_UNKNOWN_KID,
           "  an unknown kid the kid-less PEM key does not verify: "
           "unknown key");

    /* room for two keys, three to copy */

    for (i = 0; i < TENANT_JWKS_MAX_KEYS - 2; i++) {
        pem_of(ec2, pem, sizeof(pem));
        add_pem(&full, pem, NULL);
    }

    is_int(tenant_keyset_copy(&full, &live), -1,
           "copy into a set without room: refused");
    is_int(full.nkeys, TENANT_JWKS_MAX_KEYS - 2, "  and the set unchanged");

    tenant_keyset_free(&full);
    tenant_keyset_free(&live);
}


/*
 * Size bounds and malformed members (docs/coverage-gaps.md, C rows for
 * tenant_jwks.c): every refusal returns -1 with a reason that quotes no
 * key material, and leaves the set exactly as it was.
 */

static tenant_keyset_t  before;


/* a set holding one PEM key, and a snapshot of it */

static void
bounds_set(tenant_keyset_t *ks)
{
    char  pem[4096];

    memset(ks, 0, sizeof(tenant_keyset_t));
    pem_of(rsa2, pem, sizeof(pem));

    if (add_pem(ks, pem, "base") != 0) {
        bail("bounds_set");
    }

    before = *ks;
}


/* refused, set unchanged, reason contains want, does not contain secret */

static void
refused(tenant_keyset_t *ks, const char *json, const char *want,
    const char *secret, const char *name)
{
    int  rc;

    rc = add_jwks(ks, json);

    is_int(rc, -1, "%s: refused", name);
    ok(memcmp(ks, &before, sizeof(tenant_keyset_t)) == 0,
       "  set unchanged");
    ok(want == NULL || strstr(err, want) != NULL, "  reason: %s", err);
    ok(secret == NULL || err_has_no(secret), "  reason quotes no material");
}


/* the base64url of len bytes: first byte first, the others fill, last */

static void
fake_b64(char *dst, size_t len, unsigned char first, unsigned char fill,
    unsigned char last)
{
    static unsigned char  bin[4096];

    if (len > sizeof(bin)) {
        bail("fake_b64");
    }

    memset(bin, fill, len);
    bin[0] = first;
    bin[len - 1] = last;
    b64url(dst, bin, len);
}


static void
test_pem_bounds(void)
{
    char             pem[4096], kid[301];
    tenant_keyset_t  ks;

    bounds_set(&ks);

    /* a PUBLIC KEY block that decodes (3 zero bytes) but is no SPKI */

    is_int(add_pem(&ks, "-----BEGIN PUBLIC KEY-----\nAAAA\n"
                        "-----END PUBLIC KEY-----\n", NULL),
           -1, "PEM block that is not DER SubjectPublicKeyInfo refused");
    ok(strstr(err, "no valid PEM") != NULL, "  reason: %s", err);

    /* an "encrypted" public key: the password callback declines */

    is_int(add_pem(&ks, "-----BEGIN PUBLIC KEY-----\n"
                        "Proc-Type: 4,ENCRYPTED\n"
                        "DEK-Info: AES-128-CBC,"
                        "00112233445566778899AABBCCDDEEFF\n"
                        "\n"
                        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
                        "-----END PUBLIC KEY-----\n", NULL),
           -1, "encrypted PEM refused without a password prompt");
    ok(err[0] != '\0' && err_has_no("MIIBIj") && err_has_no("0011223344"),
       "  reason without material: %s", err);

    /* a kid of 300 bytes: refused (PEM keys are refused, not skipped) */

    memset(kid, 'K', 300);
    memcpy(kid, "secretkid", 9);
    kid[300] = '\0';
    pem_of(ec, pem, sizeof(pem));
    is_int(add_pem(&ks, pem, kid), -1, "PEM with a 300-byte kid refused");
    ok(strstr(err, "kid") != NULL && err_has_no("secretkid")
       && err_has_no("KKKKKKKK"), "  reason: %s", err);

    kid[TENANT_KID_MAX] = '\0';
    is_int(add_pem(&ks, pem, kid), 0, "PEM with a 128-byte kid accepted");
    ok(tenant_keyset_find(&ks, kid, TENANT_KID_MAX) == &ks.keys[1],
       "  found by its 128-byte kid");
    EVP_PKEY_free(ks.keys[1].pkey);
    memset(&ks.keys[1], 0, sizeof(tenant_key_t));
    ks.nkeys--;

    /* a length above INT_MAX is refused before the buffer is read */

#if SIZE_MAX > INT_MAX
    err[0] = '\0';
    is_int(tenant_keyset_add_pem(&ks, (const unsigned char *) pem,
                                 (size_t) INT_MAX + 1, NULL, err,
                                 sizeof(err)),
           -1, "PEM length > INT_MAX refused");
    ok(strstr(err, "oversized") != NULL, "  reason: %s", err);
#endif

    /* errlen 0: err is not written */

    strcpy(err, "untouched");
    is_int(tenant_keyset_add_pem(&ks, (const unsigned char *) "x", 1, NULL,
                                 err, 0),
           -1, "errlen 0: refused");
    is_str(err, "untouched", "  err not written");

    strcpy(err, "untouched");
    is_int(tenant_keyset_add_jwks(&ks, (const unsigned char *) "{}", 2, err,
                                  0),
           -1, "JWKS errlen 0: refused");
    is_str(err, "untouched", "  err not written");

    is_int(tenant_keyset_add_jwks(&ks, (const unsigned char *) "{}", 2, err,
                                  8),
           -1, "JWKS errlen 8: refused");
    is_int(strlen(err), 7, "  reason truncated and terminated");

    ok(memcmp(&ks, &before, sizeof(ks)) == 0, "PEM refusals: set unchanged");

    tenant_keyset_free(&ks);
}


static void
test_jwks_kid_bounds(void)
{
    char             kid[301], extra[400], jwk[4096], good[4096];
    tenant_keyset_t  ks;

    bounds_set(&ks);

    memset(kid, 'K', 300);
    memcpy(kid, "secretkid", 9);
    kid[300] = '\0';

    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kid\":\"%s\",\"kty\":\"EC\",\"crv\":\"P-256\"}]}",
             kid);
    refused(&ks, doc, "longer than 128", "secretkid",
            "JWKS key with a 300-byte kid");

    kid[TENANT_KID_MAX + 1] = '\0';
    snprintf(jwk, sizeof(jwk), "\"kid\":\"%s\"", kid);
    refused(&ks, jwks2(ec, jwk, NULL, NULL), "kid", "secretkid",
            "JWKS key with a 129-byte kid");

    /* next to a usable key, the long-kid key is skipped */

    kid[300] = '\0';
    snprintf(extra, sizeof(extra), "\"kid\":\"%s\"", kid);
    jwk_of(ec, extra, jwk, sizeof(jwk));
    jwk_of(rsa, "\"kid\":\"ok\"", good, sizeof(good));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", jwk, good);

    is_int(add_jwks(&ks, doc), 0,
           "300-byte kid next to a good key: document accepted");
    is_int(ks.nkeys, 2, "  only the good key added");
    is_str(ks.keys[1].kid, "ok", "  the good one");
    ok(tenant_keyset_find(&ks, kid, 300) == NULL,
       "  the 300-byte kid names no key");
    EVP_PKEY_free(ks.keys[1].pkey);
    memset(&ks.keys[1], 0, sizeof(tenant_key_t));
    ks.nkeys--;

    /* exactly TENANT_KID_MAX is fine */

    kid[TENANT_KID_MAX] = '\0';
    snprintf(jwk, sizeof(jwk), "\"kid\":\"%s\"", kid);
    is_int(add_jwks(&ks, jwks2(ec, jwk, NULL, NULL)), 0,
           "JWKS key with a 128-byte kid accepted");
    is_int(ks.keys[1].kid_len, TENANT_KID_MAX, "  kid_len 128");
    ok(tenant_keyset_find(&ks, kid, TENANT_KID_MAX) == &ks.keys[1],
       "  found by its kid");

    tenant_keyset_free(&ks);
}


static void
test_jwks_rsa_bounds(void)
{
    char             n64[3000], e64[64], big[3000], ee[64];
    tenant_keyset_t  ks;

    bounds_set(&ks);

    bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_N, 0, n64);
    bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_E, 0, e64);

#define RSA_DOC(n, e)                                                        \
    (snprintf(doc, sizeof(doc),                                              \
              "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"%s\","      \
              "\"e\":\"%s\"}]}", (n), (e)), doc)

    /* n longer than its buffer: refused by length before decoding */

    fake_b64(big, 2048, 0xc3, 0x5a, 0x01);          /* 16384 bits */
    is_int(strlen(big), 2731, "n of a 16384-bit modulus: 2731 chars");
    big[16] = '\0';
    strcpy(ee, big);
    fake_b64(big, 2048, 0xc3, 0x5a, 0x01);
    refused(&ks, RSA_DOC(big, e64), "\"n\"", ee,
            "RSA n of 16384 bits (2731 chars)");

    fake_b64(big, 1030, 0xc3, 0x5a, 0x01);          /* 8240 bits */
    is_int(strlen(big), 1374, "n of 1030 bytes: 1374 chars");
    refused(&ks, RSA_DOC(big, e64), "\"n\"", NULL,
            "RSA n of 1030 bytes (over the n buffer)");

    /* n that fits the buffer but is over 8192 bits: refused by size */

    fake_b64(big, 1029, 0xc3, 0x5a, 0x01);          /* 8232 bits */
    refused(&ks, RSA_DOC(big, e64), "8232 bits", "w1pa",
            "RSA n of 8232 bits");

    fake_b64(big, 1025, 0x01, 0x5a, 0x01);          /* 8193 bits */
    refused(&ks, RSA_DOC(big, e64), "8193 bits", "w1pa",
            "RSA n of 8193 bits");

    fake_b64(big, 256, 0x7f, 0x5a, 0x01);           /* 2047 bits */
    refused(&ks, RSA_DOC(big, e64), "2047 bits", NULL,
            "RSA n of 2047 bits");

    /* an even 2048-bit n: the size is right, the validation refuses it */

    fake_b64(big, 256, 0xc3, 0x5a, 0x02);
    refused(&ks, RSA_DOC(big, e64), "validation", NULL,
            "RSA even n of 2048 bits");

    /* n not base64url */

    strcpy(big, n64);
    big[100] = '+';
    refused(&ks, RSA_DOC(big, e64), "base64url", NULL,
            "RSA n with a '+'");
    strcpy(big, n64);
    big[100] = '/';
    refused(&ks, RSA_DOC(big, e64), "base64url", NULL,
            "RSA n with a '/'");
    refused(&ks, RSA_DOC("", e64), "base64url", NULL, "RSA empty n");

    /* e: at most 8 bytes, odd, > 1 */

    fake_b64(ee, 9, 0x01, 0x00, 0x01);
    refused(&ks, RSA_DOC(n64, ee), "\"e\"", NULL, "RSA e of 9 bytes");

    fake_b64(ee, 12, 0x01, 0x00, 0x01);
    refused(&ks, RSA_DOC(n64, ee), "\"e\"", NULL, "RSA e of 12 bytes");

    fake_b64(ee, 30, 0x01, 0x00, 0x01);             /* over the e buffer */
    refused(&ks, RSA_DOC(n64, ee), "\"e\"", NULL, "RSA e of 30 bytes");

    refused(&ks, RSA_DOC(n64, "AQAA"), "validation", NULL,
            "RSA even e (65536)");
    refused(&ks, RSA_DOC(n64, "AQ"), "validation", NULL, "RSA e = 1");
    refused(&ks, RSA_DOC(n64, ""), "\"e\"", NULL, "RSA empty e");
    refused(&ks, RSA_DOC(n64, "AQ*B"), "\"e\"", NULL, "RSA e not base64url");
    refused(&ks, RSA_DOC(n64, "AQAB="), "\"e\"", NULL, "RSA e with padding");

    fake_b64(ee, 8, 0x01, 0x00, 0x01);              /* 2^56 + 1 */
    is_int(add_jwks(&ks, RSA_DOC(n64, ee)), 0, "RSA e of 8 bytes accepted");
    is_int(ks.nkeys, 2, "  added");

#undef RSA_DOC

    tenant_keyset_free(&ks);
}


static void
test_jwks_ec_bounds(void)
{
    char             x64[200], y64[200], bad[200], jwk[4096];
    tenant_keyset_t  ks;

    bounds_set(&ks);

    bn_b64url(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32, x64);
    bn_b64url(ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32, y64);

#define EC_DOC(crv, x, y)                                                    \
    (snprintf(doc, sizeof(doc),                                              \
              "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e\",%s"                  \
              "\"x\":\"%s\",\"y\":\"%s\"}]}", (crv), (x), (y)), doc)
#define P256  "\"crv\":\"P-256\","

    is_int(add_jwks(&ks, EC_DOC(P256, x64, y64)), 0,
           "EC control: the real point accepted");
    EVP_PKEY_free(ks.keys[1].pkey);
    memset(&ks.keys[1], 0, sizeof(tenant_key_t));
    ks.nkeys--;

    /* coordinates of the wrong length, or longer than their buffer */

    fake_b64(bad, 75, 0x11, 0x22, 0x33);            /* 100 chars */
    is_int(strlen(bad), 100, "x of 100 chars");
    refused(&ks, EC_DOC(P256, bad, y64), "32-byte", "ESIi", "EC x of 75 bytes");
    refused(&ks, EC_DOC(P256, x64, bad), "32-byte", "ESIi", "EC y of 75 bytes");

    fake_b64(bad, 33, 0x00, 0x22, 0x33);            /* 44 chars */
    refused(&ks, EC_DOC(P256, bad, y64), "32-byte", NULL, "EC x of 33 bytes");

    fake_b64(bad, 31, 0x11, 0x22, 0x33);
    refused(&ks, EC_DOC(P256, x64, bad), "32-byte", NULL,
            "EC x right, y of 31 bytes");

    fake_b64(bad, 34, 0x11, 0x22, 0x33);            /* 46 chars */
    refused(&ks, EC_DOC(P256, x64, bad), "32-byte", NULL,
            "EC x right, y of 34 bytes (over the buffer)");

    /* not base64url */

    strcpy(bad, x64);
    bad[5] = '*';
    refused(&ks, EC_DOC(P256, bad, y64), "32-byte", NULL, "EC x with a '*'");
    strcpy(bad, y64);
    bad[42] = '+';
    refused(&ks, EC_DOC(P256, x64, bad), "32-byte", NULL, "EC y with a '+'");
    strcpy(bad, y64);
    strcat(bad, "=");
    refused(&ks, EC_DOC(P256, x64, bad), "32-byte", NULL, "EC y with padding");

    /* not a point of P-256 */

    strcpy(bad, y64);
    bad[10] = (bad[10] == 'A') ? 'B' : 'A';
    refused(&ks, EC_DOC(P256, x64, bad), "could not be imported", NULL,
            "EC point off the curve (y changed)");

    fake_b64(bad, 32, 0x00, 0x00, 0x00);
    refused(&ks, EC_DOC(P256, bad, bad), "could not be imported", NULL,
            "EC point (0, 0)");

    fake_b64(bad, 32, 0xff, 0xff, 0xff);            /* >= p */
    refused(&ks, EC_DOC(P256, bad, bad), "could not be imported", NULL,
            "EC coordinates >= p");

    /* the curve */

    refused(&ks, EC_DOC("\"crv\":\"P-384\",", x64, y64), "P-256", NULL,
            "EC P-256 point labelled P-384");
    refused(&ks, EC_DOC("\"crv\":\"p-256\",", x64, y64), "P-256", NULL,
            "EC crv p-256 (case)");
    refused(&ks, EC_DOC("\"crv\":\"P-256 \",", x64, y64), "P-256", NULL,
            "EC crv with a trailing space");
    refused(&ks, EC_DOC("\"crv\":256,", x64, y64), "P-256", NULL,
            "EC numeric crv");
    refused(&ks, EC_DOC("", x64, y64), "P-256", NULL, "EC without crv");
    refused(&ks, EC_DOC("\"crv\":\"secp256k1\",", x64, y64), "P-256", NULL,
            "EC crv secp256k1");

    /* kty of the wrong type or case */

    jwk_of(ec, "", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    memcpy(strstr(doc, "\"EC\""), "\"ec\"", 4);
    refused(&ks, doc, "kty", NULL, "EC kty in lower case");

#undef EC_DOC
#undef P256

    tenant_keyset_free(&ks);
}


/* more keys in one document than a set holds */

static void
test_jwks_count(void)
{
    int              i;
    char             jwk[4096], kid[32];
    size_t           len;
    tenant_keyset_t  ks;

    memset(&ks, 0, sizeof(ks));
    memset(&before, 0, sizeof(before));

#define MANY(nkeys, nskip)                                                   \
    do {                                                                     \
        len = (size_t) snprintf(doc, sizeof(doc), "{\"keys\":[");            \
        for (i = 0; i < (nkeys) + (nskip); i++) {                            \
            snprintf(kid, sizeof(kid), "\"kid\":\"k%d\"%s", i,               \
                     i < (nskip) ? ",\"use\":\"enc\"" : "");                 \
            jwk_of(ec, kid, jwk, sizeof(jwk));                               \
            len += (size_t) snprintf(doc + len, sizeof(doc) - len, "%s%s",   \
                                     i ? "," : "", jwk);                     \
        }                                                                    \
        snprintf(doc + len, sizeof(doc) - len, "]}");                        \
        if (len + 3 >= sizeof(doc)) {                                        \
            bail("MANY: doc too small");                                     \
        }                                                                    \
    } while (0)

    MANY(TENANT_JWKS_MAX_KEYS + 1, 0);
    refused(&ks, doc, "too many", NULL, "JWKS of 17 keys into an empty set");
    is_int(ks.nkeys, 0, "  no key added");
    ok(ks.keys[0].pkey == NULL && ks.keys[TENANT_JWKS_MAX_KEYS - 1].pkey
       == NULL, "  slots left clean");

    MANY(TENANT_JWKS_MAX_KEYS, 0);
    is_int(add_jwks(&ks, doc), 0, "JWKS of 16 keys accepted");
    is_int(ks.nkeys, TENANT_JWKS_MAX_KEYS, "  16 keys");
    tenant_keyset_free(&ks);

    MANY(TENANT_JWKS_MAX_KEYS, 4);
    is_int(add_jwks(&ks, doc), 0, "JWKS of 16 keys + 4 skipped accepted");
    is_int(ks.nkeys, TENANT_JWKS_MAX_KEYS, "  16 keys");
    ok(tenant_keyset_find(&ks, "k0", 2) == NULL, "  the skipped ones absent");
    tenant_keyset_free(&ks);

    bounds_set(&ks);
    MANY(TENANT_JWKS_MAX_KEYS, 0);
    refused(&ks, doc, "too many", NULL,
            "JWKS of 16 keys into a set holding one");

#undef MANY

    tenant_keyset_free(&ks);
}


int
main(void)
{
    rsa = gen_rsa(2048);
    rsa2 = gen_rsa(2048);
    ec = gen_ec("P-256");
    ec2 = gen_ec("P-256");

    test_pem();
    test_full();
    test_jwks();
    test_find();
    test_rotation();
    test_rotation_sources();
    test_copy();
    test_pem_bounds();
    test_jwks_kid_bounds();
    test_jwks_rsa_bounds();
    test_jwks_ec_bounds();
    test_jwks_count();

    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec2);

    return done_testing();
}
