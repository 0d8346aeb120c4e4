/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Writes the generated seeds of corpus/jwt/ (Clerk-like session tokens,
 * v1 and v2, signed with the keys of fuzz_keys.h) and corpus/jwks/ (JWKS
 * documents and PEM keys).  Run at authoring time, the output committed;
 * not part of any build (ECDSA signatures differ on every run):
 *
 *   cc -Isrc -o /tmp/gen_seeds t/fuzz/gen_seeds.c -lcrypto
 *   /tmp/gen_seeds t/fuzz/corpus
 *
 * A seed starts with the mode byte of its harness (see fuzz_jwt.c and
 * fuzz_jwks.c).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../unit/jwt_util.h"
#include "fuzz_keys.h"


#define NOW         "1700000000"

#define HDR_RSA     "{\"alg\":\"RS256\",\"kid\":\"" FUZZ_RSA_KID "\"," \
                    "\"typ\":\"JWT\"}"
#define HDR_EC      "{\"alg\":\"ES256\",\"kid\":\"" FUZZ_EC_KID "\","   \
                    "\"typ\":\"JWT\"}"
#define HDR_EC2     "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"

#define TIMES       "\"iat\":1699999900,\"nbf\":1699999890,"              \
                    "\"exp\":1700003500"
#define CLERK       "\"azp\":\"https://app.example.com\","                \
                    "\"iss\":\"https://clerk.example.com\","              \
                    "\"sid\":\"sess_2b7Qm3kXyZ\",\"sub\":\"user_2aBcD9\""

#define V1          "{" CLERK "," TIMES ",\"org_id\":\"org_2xYz77\","     \
                    "\"org_role\":\"org:admin\",\"org_slug\":\"acme\","   \
                    "\"metadata\":{\"role\":\"cfo\"}}"
#define V2          "{" CLERK "," TIMES ",\"v\":2,\"fva\":[3,-1],"        \
                    "\"sts\":\"active\",\"o\":{\"id\":\"org_2xYz77\","    \
                    "\"rol\":\"admin\",\"slg\":\"acme\",\"per\":"         \
                    "\"read,manage\",\"fpm\":\"3\"}}"


static void seed(const char *dir, const char *name, unsigned mode,
    const char *data, size_t len);
static void token(const char *dir, const char *name, unsigned mode,
    EVP_PKEY *pkey, const char *header, const char *payload);
static void unsigned_token(const char *dir, const char *name,
    const char *header, const char *payload, const char *sig);
static EVP_PKEY *load(const char *pem);
static size_t pkcs1_pem(EVP_PKEY *pkey, char *dst, size_t size);


int
main(int argc, char **argv)
{
    char       dir[512], buf[8192], a[2048], b[2048];
    size_t     n;
    EVP_PKEY  *rsa, *ec, *ec2, *p384, *rsa1024, *ed25519;

    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds CORPUS_DIR\n");
        return 2;
    }

    rsa = load(fuzz_rsa_key);
    ec = load(fuzz_ec_key);
    ec2 = load(fuzz_ec2_key);
    p384 = gen_ec("P-384");
    rsa1024 = gen_rsa(1024);
    ed25519 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

    /* jwt: real tokens (mode 0), then headers and payloads to sign */

    snprintf(dir, sizeof(dir), "%s/jwt", argv[1]);

    token(dir, "v1-rs256", 0x00, rsa, HDR_RSA, V1);
    token(dir, "v2-es256", 0x00, ec, HDR_EC, V2);
    token(dir, "v1-es256-no-kid", 0x00, ec2, HDR_EC2,
          "{" CLERK "," TIMES "}");
    token(dir, "v2-pending", 0x00, ec, HDR_EC,
          "{" CLERK "," TIMES ",\"v\":2,\"sts\":\"pending\"}");
    token(dir, "v1-expired", 0x00, rsa, HDR_RSA,
          "{" CLERK ",\"iat\":1600000000,\"exp\":1600003600}");
    token(dir, "v1-role-path", 0x20, rsa, HDR_RSA,
          "{" CLERK "," TIMES ",\"public_metadata\":{\"org\":"
          "{\"role\":\"controller\"}}}");
    token(dir, "v1-kid-unknown", 0x00, ec2, "{\"alg\":\"ES256\","
          "\"kid\":\"ins_rotated\"}", "{" CLERK "," TIMES "}");
    unsigned_token(dir, "alg-none", "{\"alg\":\"none\",\"typ\":\"JWT\"}",
                   V1, "");
    unsigned_token(dir, "alg-hs256", "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                   V1, "c2lnbmF0dXJl");

    seed(dir, "signed-v1-es256", 0x01, V1, strlen(V1));
    seed(dir, "signed-v2-rs256", 0x03, V2, strlen(V2));
    seed(dir, "signed-no-kid", 0x09, "{\"sub\":\"user_1\",\"exp\":1700000100,"
         "\"iss\":\"https://clerk.example.com\","
         "\"azp\":\"http://localhost:3000\"}", 0);
    seed(dir, "signed-no-policy", 0x41,
         "{\"sub\":\"u\",\"exp\":1.7e9,\"nbf\":null,\"v\":1}", 0);
    seed(dir, "signed-role", 0x71,
         "{\"sub\":\"u\",\"exp\":1700000000,\"role\":\"admin\"}", 0);

    n = snprintf(buf, sizeof(buf), "%s\xff%s", HDR_EC, V2);
    seed(dir, "signed-own-header", 0x05, buf, n);

    /* refusals, one per check, with valid signatures */

    seed(dir, "signed-not-object", 0x01, "[{\"sub\":\"u\"}]", 0);
    seed(dir, "signed-v2-o-string", 0x41,
         "{\"sub\":\"u\",\"exp\":1700000000,\"v\":2,\"o\":\"org_1\"}", 0);
    seed(dir, "signed-v2-o-types", 0x41,
         "{\"sub\":\"u\",\"exp\":1700000000,\"v\":2,"
         "\"o\":{\"id\":\"org_1\",\"rol\":\"admin\",\"slg\":7}}", 0);
    seed(dir, "signed-v3", 0x41, "{\"sub\":\"u\",\"exp\":1700000000,\"v\":3}",
         0);
    seed(dir, "signed-claim-control", 0x41,
         "{\"sub\":\"u\",\"exp\":1700000000,"
         "\"org_role\":\"org:admin\\r\\nX-Tenant-ID: 1\"}", 0);
    seed(dir, "signed-exp-string", 0x41,
         "{\"sub\":\"u\",\"exp\":\"1700000000\"}", 0);
    seed(dir, "signed-iss-number", 0x41,
         "{\"sub\":\"u\",\"exp\":1700000000,\"iss\":5}", 0);
    seed(dir, "signed-azp-array", 0x41,
         "{\"sub\":\"u\",\"exp\":1700000000,\"azp\":[]}", 0);
    seed(dir, "signed-sts-number", 0x41,
         "{\"sub\":\"u\",\"exp\":1700000000,\"sts\":1}", 0);
    seed(dir, "signed-times", 0x41,
         "{\"sub\":\"u\",\"exp\":1e300,\"nbf\":1700000061,"
         "\"iat\":1699999999.5}", 0);
    seed(dir, "signed-role-not-object", 0x61,
         "{\"sub\":\"u\",\"exp\":1700000000,\"public_metadata\":"
         "{\"org\":\"admin\"}}", 0);
    seed(dir, "signed-bad-issuer-azp", 0x01,
         "{\"sub\":\"u\",\"exp\":1700000000,"
         "\"iss\":\"https://clerk.evil.example\","
         "\"azp\":\"https://app.example.com.evil\"}", 0);
    seed(dir, "signed-es256-rs256-only", 0x81,
         "{\"sub\":\"u\",\"exp\":1700000000}", 0);

    seed(dir, "header-not-object", 0x05,
         "[\"ES256\"]\xff{\"sub\":\"u\",\"exp\":1700000000}", 0);
    seed(dir, "header-crit", 0x07,
         "{\"alg\":\"RS256\",\"crit\":[\"b64\"],\"b64\":false}"
         "\xff{\"sub\":\"u\",\"exp\":1700000000}", 0);
    seed(dir, "header-kid-types", 0x05,
         "{\"alg\":\"ES256\",\"kid\":7}\xff{\"sub\":\"u\"}", 0);
    seed(dir, "header-ps256", 0x07,
         "{\"alg\":\"PS256\",\"kid\":\"" FUZZ_RSA_KID "\"}"
         "\xff{\"sub\":\"u\",\"exp\":1700000000}", 0);
    seed(dir, "header-kid-of-other-type", 0x05,
         "{\"alg\":\"ES256\",\"kid\":\"" FUZZ_RSA_KID "\"}"
         "\xff{\"sub\":\"u\",\"exp\":1700000000}", 0);

    /* just over TENANT_JWT_MAX_LEN once encoded and signed */

    n = snprintf(buf, sizeof(buf), "{\"sub\":\"u\",\"exp\":1700000000,"
                 "\"pad\":\"%06000d\"}", 0);
    seed(dir, "signed-too-large", 0x03, buf, n);

    /* jwks: documents (and PEM keys) to add to an empty or full set */

    snprintf(dir, sizeof(dir), "%s/jwks", argv[1]);

    jwk_of(rsa, "\"use\":\"sig\",\"kid\":\"" FUZZ_RSA_KID "\","
           "\"alg\":\"RS256\"", a, sizeof(a));
    jwk_of(ec, "\"use\":\"sig\",\"kid\":\"" FUZZ_EC_KID "\"", b, sizeof(b));
    n = snprintf(buf, sizeof(buf), "{\"keys\":[%s,%s]}", a, b);
    seed(dir, "clerk-rsa-ec", 0x00, buf, n);
    seed(dir, "clerk-rsa-ec-full", 0x0e, buf, n);

    jwk_of(ec2, "", a, sizeof(a));
    n = snprintf(buf, sizeof(buf), "{\"keys\":[%s]}", a);
    seed(dir, "ec-no-kid", 0x01, buf, n);

    jwk_of(p384, "\"kid\":\"p384\"", a, sizeof(a));
    jwk_of(rsa1024, "\"kid\":\"small\"", b, sizeof(b));
    n = snprintf(buf, sizeof(buf),
                 "{\"keys\":[%s,%s,{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
                 "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\","
                 "\"e\":\"AQAB\"},{\"kty\":\"EC\",\"alg\":\"HS256\"}]}",
                 a, b);
    seed(dir, "skipped-keys", 0x00, buf, n);

    seed(dir, "empty-keys", 0x00, "{\"keys\":[]}", 0);

    n = pem_of(rsa, buf, sizeof(buf));
    seed(dir, "pem-rsa", 0x00, buf, n);

    n = pem_of(ec, buf, sizeof(buf));
    seed(dir, "pem-ec-full", 0x0f, buf, n);

    n = pem_of(p384, buf, sizeof(buf));
    seed(dir, "pem-p384", 0x00, buf, n);

    n = pkcs1_pem(rsa, buf, sizeof(buf));
    seed(dir, "pem-pkcs1", 0x00, buf, n);

    n = pem_of(ed25519, buf, sizeof(buf));
    seed(dir, "pem-ed25519", 0x00, buf, n);

    jwk_of(ec2, "\"kid\":5", a, sizeof(a));
    jwk_of(ec, "\"kid\":\"k0123456789abcdef0123456789abcdef0123456789"
           "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
           "abcdef0123456789abcdef\"", b, sizeof(b));
    n = snprintf(buf, sizeof(buf), "{\"keys\":[%s,%s,7,null]}", a, b);
    seed(dir, "kid-types", 0x00, buf, n);

    return 0;
}


static void
seed(const char *dir, const char *name, unsigned mode, const char *data,
    size_t len)
{
    FILE  *f;
    char   path[1024];

    if (len == 0) {
        len = strlen(data);
    }

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    f = fopen(path, "wb");
    if (f == NULL) {
        bail(path);
    }

    fputc((int) mode, f);
    fwrite(data, 1, len, f);
    fclose(f);
}


static void
token(const char *dir, const char *name, unsigned mode, EVP_PKEY *pkey,
    const char *header, const char *payload)
{
    size_t  n;
    char    buf[TOKEN_MAX];

    n = make_token(buf, pkey, header, payload);
    seed(dir, name, mode, buf, n);
}


static void
unsigned_token(const char *dir, const char *name, const char *header,
    const char *payload, const char *sig)
{
    size_t  n;
    char    buf[TOKEN_MAX];

    n = signing_input(buf, header, payload);
    n += snprintf(buf + n, sizeof(buf) - n, ".%s", sig);
    seed(dir, name, 0x00, buf, n);
}


static EVP_PKEY *
load(const char *pem)
{
    BIO       *bio;
    EVP_PKEY  *pkey;

    bio = BIO_new_mem_buf(pem, -1);
    pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

    if (pkey == NULL) {
        bail("PEM_read_bio_PrivateKey");
    }

    BIO_free(bio);

    return pkey;
}


/* "RSA PUBLIC KEY" (PKCS#1), which tenant_keyset_add_pem() refuses */

static size_t
pkcs1_pem(EVP_PKEY *pkey, char *dst, size_t size)
{
    size_t             len;
    unsigned char     *p;
    OSSL_ENCODER_CTX  *ctx;

    p = NULL;
    ctx = OSSL_ENCODER_CTX_new_for_pkey(pkey, EVP_PKEY_PUBLIC_KEY, "PEM",
                                        "type-specific", NULL);

    if (ctx == NULL || OSSL_ENCODER_to_data(ctx, &p, &len) != 1
        || len >= size)
    {
        bail("OSSL_ENCODER_to_data");
    }

    memcpy(dst, p, len);
    dst[len] = '\0';

    OPENSSL_free(p);
    OSSL_ENCODER_CTX_free(ctx);

    return len;
}
