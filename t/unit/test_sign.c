/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_sign.c: HKDF against RFC 5869, the precomputed
 * HMAC against OpenSSL's one-shot HMAC over an independently derived key,
 * a fixed known answer for backend implementers, and the small helpers.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "tap.h"
#include "tenant_sign.h"


/*
 * The known answer, computed once with the openssl command line:
 *
 *   ikm=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
 *   key=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 \
 *         -kdfopt hexkey:$ikm \
 *         -kdfopt 'info:capliquify tenant headers v1' HKDF \
 *         | tr -d ':' | tr A-F a-f)
 *   printf 'v2\n1700000000\nGET\n/api/products?page=2\n'\
 *   '0123456789abcdef0123456789abcdef\nt1\nacme\n'\
 *   'tenant_acme\nprofessional\norg_1\nuser_1\norg:admin' \
 *   | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key
 *
 * A backend verifying X-Tenant-Signature must get the same value.
 */

#define KAT_KEY                                                              \
    "9460621557db2c6d957e48e7b9aa2c6640fdedd25fa5939e2276f6cd011e425f"
#define KAT_MESSAGE                                                          \
    "v2\n1700000000\nGET\n/api/products?page=2\n"                           \
    "0123456789abcdef0123456789abcdef\nt1\nacme\ntenant_acme\n"             \
    "professional\norg_1\nuser_1\norg:admin"
#define KAT_MAC                                                              \
    "39c6c8d58d63c0c2c29ce8556a793ca7dc39ac0ef854e89935af8948e1b793ce"

/* "v2\n-1\n\n\n\nt1\n\n\n\n\n\n": absent values are empty strings */
#define KAT_MAC_EMPTY                                                        \
    "fe9642a496b95f51c05f5762539f306da65250f90d2d97e51bc9420a48160bb8"


static const char *hex(const unsigned char *p, size_t len);
static size_t unhex(unsigned char *dst, const char *src);
static int ref_hkdf(unsigned char *out, size_t out_len,
    const unsigned char *ikm, size_t ikm_len, const unsigned char *salt,
    size_t salt_len, const unsigned char *info, size_t info_len);
static int ref_hmac(unsigned char out[32], const unsigned char *key,
    const unsigned char *msg, size_t len);
static void test_rfc5869(void);
static void test_init_errors(void);
static void test_known_answer(void);
static void test_against_reference(void);
static void test_message(void);
static void test_sha256(void);
static void test_hex(void);
static void test_ct_equal(void);
static void test_secret(void);


int
main(void)
{
    test_rfc5869();
    test_init_errors();
    test_known_answer();
    test_against_reference();
    test_message();
    test_sha256();
    test_hex();
    test_ct_equal();
    test_secret();

    return done_testing();
}


/* Lowercase hex of p in a static buffer (big enough for these tests). */

static const char *
hex(const unsigned char *p, size_t len)
{
    size_t             i;
    static char        buf[1024];
    static const char  digits[] = "0123456789abcdef";

    for (i = 0; i < len && 2 * i + 2 < sizeof(buf); i++) {
        buf[2 * i] = digits[p[i] >> 4];
        buf[2 * i + 1] = digits[p[i] & 0x0f];
    }

    buf[2 * i] = '\0';

    return buf;
}


/* Test-side hex decoding (lowercase, even length), independent. */

static size_t
unhex(unsigned char *dst, const char *src)
{
    size_t        i, n;
    unsigned int  b;

    n = strlen(src) / 2;

    for (i = 0; i < n; i++) {
        sscanf(&src[2 * i], "%2x", &b);
        dst[i] = (unsigned char) b;
    }

    return n;
}


/*
 * The reference HKDF goes through a different OpenSSL interface than the
 * implementation (EVP_PKEY_derive with EVP_PKEY_HKDF, not EVP_KDF).
 */

static int
ref_hkdf(unsigned char *out, size_t out_len, const unsigned char *ikm,
    size_t ikm_len, const unsigned char *salt, size_t salt_len,
    const unsigned char *info, size_t info_len)
{
    int            rc;
    size_t         len;
    EVP_PKEY_CTX  *pctx;

    pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    if (pctx == NULL) {
        return -1;
    }

    len = out_len;

    rc = EVP_PKEY_derive_init(pctx) > 0
         && EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) > 0
         && (salt_len == 0
             || EVP_PKEY_CTX_set1_hkdf_salt(pctx, salt, (int) salt_len) > 0)
         && EVP_PKEY_CTX_set1_hkdf_key(pctx, ikm, (int) ikm_len) > 0
         && (info_len == 0
             || EVP_PKEY_CTX_add1_hkdf_info(pctx, info, (int) info_len) > 0)
         && EVP_PKEY_derive(pctx, out, &len) > 0
         && len == out_len;

    EVP_PKEY_CTX_free(pctx);

    return rc ? 0 : -1;
}


/* The reference HMAC: OpenSSL's one-shot EVP_Q_mac. */

static int
ref_hmac(unsigned char out[32], const unsigned char *key,
    const unsigned char *msg, size_t len)
{
    size_t  n;

    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, msg, len,
                  out, 32, &n)
        == NULL || n != 32)
    {
        return -1;
    }

    return 0;
}


static void
test_rfc5869(void)
{
    size_t         i;
    unsigned char  ikm[80], salt[80], info[80], okm[82];

    /* Test Case 1: basic */

    memset(ikm, 0x0b, 22);

    for (i = 0; i < 13; i++) {
        salt[i] = (unsigned char) i;
    }

    for (i = 0; i < 10; i++) {
        info[i] = (unsigned char) (0xf0 + i);
    }

    memset(okm, 0, sizeof(okm));
    is_int(ref_hkdf(okm, 42, ikm, 22, salt, 13, info, 10), 0,
           "RFC 5869 case 1: reference derivation runs");
    is_str(hex(okm, 42),
           "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
           "34007208d5b887185865",
           "RFC 5869 case 1: reference derivation OKM");

    memset(okm, 0, sizeof(okm));
    is_int(tenant_hkdf_sha256(okm, 42, ikm, 22, salt, 13, info, 10), 0,
           "RFC 5869 case 1: tenant_hkdf_sha256 runs");
    is_str(hex(okm, 42),
           "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
           "34007208d5b887185865",
           "RFC 5869 case 1: tenant_hkdf_sha256 OKM");

    /* Test Case 2: longer inputs and outputs */

    for (i = 0; i < 80; i++) {
        ikm[i] = (unsigned char) i;
        salt[i] = (unsigned char) (0x60 + i);
        info[i] = (unsigned char) (0xb0 + i);
    }

    memset(okm, 0, sizeof(okm));
    is_int(tenant_hkdf_sha256(okm, 82, ikm, 80, salt, 80, info, 80), 0,
           "RFC 5869 case 2: tenant_hkdf_sha256 runs");
    is_str(hex(okm, 82),
           "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
           "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
           "cc30c58179ec3e87c14c01d5c1f3434f1d87",
           "RFC 5869 case 2: tenant_hkdf_sha256 OKM");

    /* Test Case 3: empty salt and info, as tenant_sign_init's salt */

    memset(ikm, 0x0b, 22);

    memset(okm, 0, sizeof(okm));
    is_int(ref_hkdf(okm, 42, ikm, 22, NULL, 0, NULL, 0), 0,
           "RFC 5869 case 3: reference derivation runs");
    is_str(hex(okm, 42),
           "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
           "9d201395faa4b61a96c8",
           "RFC 5869 case 3: reference derivation OKM");

    memset(okm, 0, sizeof(okm));
    is_int(tenant_hkdf_sha256(okm, 42, ikm, 22, NULL, 0, NULL, 0), 0,
           "RFC 5869 case 3: tenant_hkdf_sha256 runs");
    is_str(hex(okm, 42),
           "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
           "9d201395faa4b61a96c8",
           "RFC 5869 case 3: tenant_hkdf_sha256 OKM");
}


static void
test_init_errors(void)
{
    char               err[128];
    unsigned char      ikm[33], out[TENANT_SHA256_LEN];
    tenant_sign_key_t  k;

    memset(ikm, 0x42, sizeof(ikm));

    memset(&k, 0xa5, sizeof(k));
    err[0] = '\0';
    is_int(tenant_sign_init(&k, ikm, 31, err, sizeof(err)), -1,
           "init refuses 31 bytes of key");
    ok(err[0] != '\0', "with a reason: %s", err);
    ok(strstr(err, "4242") == NULL && strstr(err, "BBBB") == NULL,
       "the reason does not show the key");
    ok(k.md == NULL && k.inner == NULL && k.outer == NULL && k.work == NULL,
       "a failed init leaves no pointers behind");
    is_int(tenant_sign(&k, (const unsigned char *) "x", 1, out), -1,
           "sign with a failed key fails");
    is_int(tenant_sha256(&k, (const unsigned char *) "x", 1, out), -1,
           "sha256 with a failed key fails");
    tenant_sign_free(&k);
    tenant_sign_free(&k);
    ok(1, "free after a failed init, twice");

    err[0] = '\0';
    is_int(tenant_sign_init(&k, ikm, 33, err, sizeof(err)), -1,
           "init refuses 33 bytes of key");
    ok(err[0] != '\0', "with a reason");

    is_int(tenant_sign_init(&k, ikm, 0, err, sizeof(err)), -1,
           "init refuses an empty key");
    is_int(tenant_sign_init(&k, NULL, 32, err, sizeof(err)), -1,
           "init refuses a NULL key");
    is_int(tenant_sign_init(&k, ikm, 16, NULL, 0), -1,
           "init refuses a short key without an err buffer");
    is_int(tenant_sign_init(&k, ikm, 16, err, 1), -1,
           "init refuses a short key with a 1-byte err buffer");
    is_int(err[0], '\0', "which holds just the NUL");

    /* an err buffer with errlen 0 is never written */

    memset(err, 'X', sizeof(err));
    is_int(tenant_sign_init(&k, ikm, 16, err, 0), -1,
           "init refuses a short key with errlen 0");
    ok(err[0] == 'X' && err[1] == 'X', "  and leaves err untouched");
    ok(k.md == NULL && k.work == NULL, "  and holds nothing");
}


static void
test_known_answer(void)
{
    char               err[128], msg[256], sig[2 * TENANT_SHA256_LEN + 1];
    size_t             i, len;
    unsigned char      ikm[32], key[32], mac[TENANT_SHA256_LEN];
    tenant_sign_key_t  k;
    tenant_str_t       fields[TENANT_SIGN_NFIELDS];

    static const char  *values[TENANT_SIGN_NFIELDS] = {
        "GET", "/api/products?page=2", "0123456789abcdef0123456789abcdef",
        "t1", "acme", "tenant_acme", "professional", "org_1", "user_1",
        "org:admin"
    };

    for (i = 0; i < 32; i++) {
        ikm[i] = (unsigned char) i;
    }

    /* the derived key, independently, as the openssl command line had it */

    is_int(ref_hkdf(key, 32, ikm, 32, NULL, 0,
                    (const unsigned char *) TENANT_SIGN_INFO,
                    strlen(TENANT_SIGN_INFO)),
           0, "reference derivation of the signing key");
    is_str(hex(key, 32), KAT_KEY, "derived key matches openssl kdf");

    is_int(tenant_hkdf_sha256(key, 32, ikm, 32, NULL, 0,
                              (const unsigned char *) TENANT_SIGN_INFO,
                              strlen(TENANT_SIGN_INFO)),
           0, "tenant_hkdf_sha256 of the signing key");
    is_str(hex(key, 32), KAT_KEY, "tenant_hkdf_sha256 matches openssl kdf");

    is_int(tenant_sign_init(&k, ikm, sizeof(ikm), err, sizeof(err)), 0,
           "init with 32 bytes");

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        fields[i].value = values[i];
        fields[i].len = strlen(values[i]);
    }

    len = tenant_sign_message(msg, 1700000000, fields);
    msg[len] = '\0';
    is_str(msg, KAT_MESSAGE, "canonical message");
    is_int(len, strlen(KAT_MESSAGE), "canonical message length");

    is_int(tenant_sign(&k, (const unsigned char *) msg, len, mac), 0,
           "sign the message");
    tenant_hex_encode(sig, mac, sizeof(mac));
    sig[sizeof(sig) - 1] = '\0';
    is_str(sig, KAT_MAC, "known answer (openssl dgst -mac HMAC)");

    /* the same again: the precomputed states are not consumed */

    memset(mac, 0, sizeof(mac));
    is_int(tenant_sign(&k, (const unsigned char *) msg, len, mac), 0,
           "sign the message again");
    is_str(hex(mac, sizeof(mac)), KAT_MAC, "same signature the second time");

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        fields[i].value = (i == TENANT_SIGN_TENANT_ID) ? "t1" : NULL;
        fields[i].len = (i == TENANT_SIGN_TENANT_ID) ? 2 : 0;
    }

    len = tenant_sign_message(msg, -1, fields);
    is_int(tenant_sign(&k, (const unsigned char *) msg, len, mac), 0,
           "sign a message with absent values");
    is_str(hex(mac, sizeof(mac)), KAT_MAC_EMPTY,
           "known answer with absent values and a negative timestamp");

    tenant_sign_free(&k);
    ok(k.md == NULL && k.work == NULL, "free clears the key");
}


static void
test_against_reference(void)
{
    int                all;
    char               err[128];
    size_t             i, j;
    unsigned char      ikm[32], key[32], *msg, got[32], want[32];
    tenant_sign_key_t  k, k2;

    static const size_t  lens[] = {
        0, 1, 2, 31, 32, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000,
        4096
    };

    msg = malloc(4096);
    if (msg == NULL) {
        ok(0, "malloc");
        return;
    }

    for (i = 0; i < 4096; i++) {
        msg[i] = (unsigned char) (i * 131 + 7);
    }

    /* a few keys, each checked over message lengths around the blocks */

    for (j = 0; j < 4; j++) {

        for (i = 0; i < 32; i++) {
            ikm[i] = (unsigned char) (j * 0x51 + i * 0x1d);
        }

        if (j == 0 || j == 3) {
            memset(ikm, j == 0 ? 0x00 : 0xff, sizeof(ikm));
        }

        if (tenant_sign_init(&k, ikm, 32, err, sizeof(err)) != 0
            || ref_hkdf(key, 32, ikm, 32, NULL, 0,
                        (const unsigned char *) TENANT_SIGN_INFO,
                        strlen(TENANT_SIGN_INFO))
               != 0)
        {
            ok(0, "key %zu: init (%s)", j, err);
            continue;
        }

        all = 1;

        for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            memset(got, 0, sizeof(got));
            memset(want, 1, sizeof(want));

            if (tenant_sign(&k, msg, lens[i], got) != 0
                || ref_hmac(want, key, msg, lens[i]) != 0
                || memcmp(got, want, 32) != 0)
            {
                all = 0;
                printf("# key %zu, length %zu: got %s", j, lens[i],
                       hex(got, 32));
                printf(" expected %s\n", hex(want, 32));
            }

            /* a digest in between must not disturb the HMAC states */

            if (tenant_sha256(&k, msg, lens[i], got) != 0) {
                all = 0;
            }
        }

        ok(all, "key %zu: HMAC equals EVP_Q_mac over the reference key "
           "for %zu message lengths", j,
           sizeof(lens) / sizeof(lens[0]));

        tenant_sign_free(&k);
    }

    /* two keys side by side do not share state */

    memset(ikm, 1, sizeof(ikm));
    is_int(tenant_sign_init(&k, ikm, 32, err, sizeof(err)), 0, "key one");
    memset(ikm, 2, sizeof(ikm));
    is_int(tenant_sign_init(&k2, ikm, 32, err, sizeof(err)), 0, "key two");

    tenant_sign(&k, msg, 10, got);
    tenant_sign(&k2, msg, 10, want);
    ok(memcmp(got, want, 32) != 0, "different keys, different signatures");

    tenant_sign(&k, msg, 10, want);
    ok(memcmp(got, want, 32) == 0, "key one again, same signature");

    tenant_sign(&k, msg, 11, want);
    ok(memcmp(got, want, 32) != 0, "a longer message, another signature");

    tenant_sign_free(&k);
    tenant_sign_free(&k2);

    free(msg);
}


static void
test_message(void)
{
    char          buf[256];
    size_t        i, j, n, m, save_len;
    const char   *save;
    tenant_str_t  fields[TENANT_SIGN_NFIELDS];

    static const char  *values[TENANT_SIGN_NFIELDS] = {
        "POST", "/x?a=1", "r1", "a", "bb", "", "ccc", "d", "", "e"
    };

    static const char  *bad[] = {
        "\n", "a\nb", "\r", "\t", "\0", "\x1f", "\x7f", "tail\n"
    };

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        fields[i].value = values[i];
        fields[i].len = strlen(values[i]);
    }

    n = tenant_sign_message(NULL, 0, fields);
    memset(buf, '#', sizeof(buf));
    m = tenant_sign_message(buf, 0, fields);
    is_int(m, n, "measure and write agree");
    is_int(buf[m], '#', "nothing written past the returned length");
    buf[m] = '\0';
    is_str(buf, "v2\n0\nPOST\n/x?a=1\nr1\na\nbb\n\nccc\nd\n\ne",
           "timestamp 0, method, target, empty values");

    fields[TENANT_SIGN_TENANT_ID].len = 0;
    fields[TENANT_SIGN_TENANT_ID].value = "ignored";
    m = tenant_sign_message(buf, 9, fields);
    buf[m] = '\0';
    is_str(buf, "v2\n9\nPOST\n/x?a=1\nr1\n\nbb\n\nccc\nd\n\ne",
           "value_len 0 is empty");

    fields[TENANT_SIGN_TENANT_SLUG].value = "bbbb";
    fields[TENANT_SIGN_TENANT_SLUG].len = 2;
    m = tenant_sign_message(buf, 9, fields);
    buf[m] = '\0';
    is_str(buf, "v2\n9\nPOST\n/x?a=1\nr1\n\nbb\n\nccc\nd\n\ne",
           "only len bytes of a value");

    /* 8-bit bytes (a target as sent) are kept as they are */

    fields[TENANT_SIGN_TARGET].value = "/caf\xc3\xa9";
    fields[TENANT_SIGN_TARGET].len = 6;
    m = tenant_sign_message(buf, 9, fields);
    buf[m] = '\0';
    is_str(buf, "v2\n9\nPOST\n/caf\xc3\xa9\nr1\n\nbb\n\nccc\nd\n\ne",
           "8-bit bytes kept");

    /* a control byte in any field: no message (it could shift fields) */

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        save = fields[i].value;
        save_len = fields[i].len;

        for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
            fields[i].value = bad[j];
            fields[i].len = (j == 4) ? 1 : strlen(bad[j]);

            memset(buf, '#', sizeof(buf));
            is_int(tenant_sign_message(NULL, 9, fields), 0,
                   "field %zu with control byte case %zu: not measured",
                   i, j);
            is_int(tenant_sign_message(buf, 9, fields), 0,
                   "  and not written");
            ok(buf[0] == '#', "  nothing written");
        }

        fields[i].value = save;
        fields[i].len = save_len;
    }

    /* a newline past len is not the field's */

    fields[TENANT_SIGN_METHOD].value = "GET\n";
    fields[TENANT_SIGN_METHOD].len = 3;
    ok(tenant_sign_message(NULL, 9, fields) != 0,
       "a control byte past len does not count");

    for (i = 0; i < TENANT_SIGN_NFIELDS; i++) {
        fields[i].value = NULL;
        fields[i].len = 0;
    }

    n = tenant_sign_message(NULL, INT64_MIN, fields);
    m = tenant_sign_message(buf, INT64_MIN, fields);
    buf[m] = '\0';
    is_int(m, n, "INT64_MIN: measure and write agree");
    is_str(buf, "v2\n-9223372036854775808\n\n\n\n\n\n\n\n\n\n",
           "INT64_MIN");

    m = tenant_sign_message(buf, INT64_MAX, fields);
    buf[m] = '\0';
    is_str(buf, "v2\n9223372036854775807\n\n\n\n\n\n\n\n\n\n",
           "INT64_MAX");

    m = tenant_sign_message(buf, -1700000000, fields);
    buf[m] = '\0';
    is_str(buf, "v2\n-1700000000\n\n\n\n\n\n\n\n\n\n",
           "negative timestamp");
}


static void
test_sha256(void)
{
    char               err[128];
    unsigned char      ikm[32], out[32];
    tenant_sign_key_t  k;

    memset(ikm, 7, sizeof(ikm));

    if (tenant_sign_init(&k, ikm, 32, err, sizeof(err)) != 0) {
        ok(0, "init: %s", err);
        return;
    }

    is_int(tenant_sha256(&k, (const unsigned char *) "abc", 3, out), 0,
           "sha256 of abc");
    is_str(hex(out, 32),
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "FIPS 180-2 abc");

    is_int(tenant_sha256(&k, (const unsigned char *) "", 0, out), 0,
           "sha256 of nothing");
    is_str(hex(out, 32),
           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "sha256 of the empty string");

    tenant_sign(&k, (const unsigned char *) "abc", 3, out);
    tenant_sha256(&k, (const unsigned char *)
                  "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                  56, out);
    is_str(hex(out, 32),
           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
           "FIPS 180-2 two-block message, right after a signature");

    tenant_sign_free(&k);
}


static void
test_hex(void)
{
    char           buf[64];
    unsigned char  bin[32], want[32];

    static const unsigned char  bytes[] = { 0x00, 0x01, 0x7f, 0x80, 0xab,
                                            0xff };

    memset(buf, '#', sizeof(buf));
    tenant_hex_encode(buf, bytes, sizeof(bytes));
    is_int(buf[12], '#', "encode writes 2 * len bytes, no NUL");
    buf[12] = '\0';
    is_str(buf, "00017f80abff", "encode in lowercase");

    memset(bin, 0, sizeof(bin));
    is_int(tenant_hex_decode(bin, "00017f80abff", 12), 6, "decode 6 bytes");
    ok(memcmp(bin, bytes, 6) == 0, "decoded bytes");

    memset(bin, 0, sizeof(bin));
    is_int(tenant_hex_decode(bin, "00017F80ABFF", 12), 6,
           "decode uppercase");
    ok(memcmp(bin, bytes, 6) == 0, "decoded uppercase bytes");

    is_int(tenant_hex_decode(bin, "aBcD", 4), 2, "decode mixed case");
    ok(bin[0] == 0xab && bin[1] == 0xcd, "mixed case bytes");

    is_int(tenant_hex_decode(bin, "", 0), 0, "decode nothing");
    is_int(tenant_hex_decode(bin, "abc", 3), -1, "odd length refused");
    is_int(tenant_hex_decode(bin, "0g", 2), -1, "'g' refused");
    is_int(tenant_hex_decode(bin, "g0", 2), -1, "leading 'g' refused");
    is_int(tenant_hex_decode(bin, "0x01", 4), -1, "0x prefix refused");
    is_int(tenant_hex_decode(bin, " 001", 4), -1, "space refused");
    is_int(tenant_hex_decode(bin, "00\0" "1", 4), -1, "NUL refused");
    is_int(tenant_hex_decode(bin, "0:01", 4), -1, "':' refused");
    is_int(tenant_hex_decode(bin, "`0@0", 4), -1,
           "bytes next to the digit ranges refused");
    is_int(tenant_hex_decode(bin, "\xc0\xb0", 2), -1, "8-bit bytes refused");

    unhex(want, KAT_KEY);
    is_int(tenant_hex_decode(bin, KAT_KEY, 64), 32,
           "a 64-digit ENCRYPTION_KEY decodes to 32 bytes");
    ok(memcmp(bin, want, 32) == 0, "and to the right ones");
    is_int(tenant_hex_decode(bin, KAT_KEY, 63), -1, "63 digits refused");
}


static void
test_ct_equal(void)
{
    const unsigned char  *a, *b;

    a = (const unsigned char *) "secret-value";
    b = (const unsigned char *) "secret-valuf";

    is_int(tenant_ct_equal(a, 12, a, 12), 1, "equal");
    is_int(tenant_ct_equal(a, 12, b, 12), 0, "last byte differs");
    is_int(tenant_ct_equal(a, 12, (const unsigned char *) "Secret-value",
                           12), 0, "first byte differs");
    is_int(tenant_ct_equal(a, 11, b, 11), 1, "equal prefixes");
    is_int(tenant_ct_equal(a, 12, a, 11), 0, "longer vs prefix");
    is_int(tenant_ct_equal(a, 11, a, 12), 0, "prefix vs longer");
    is_int(tenant_ct_equal(a, 0, b, 0), 1, "both empty");
    is_int(tenant_ct_equal(NULL, 0, NULL, 0), 1, "both empty, NULL");
    is_int(tenant_ct_equal(a, 0, b, 1), 0, "empty vs one byte");
    is_int(tenant_ct_equal((const unsigned char *) "\x80", 1,
                           (const unsigned char *) "\x00", 1), 0,
           "high bit differs");
}


/* tenant_secret_digest/_matches: the SHA-256 of the secret (checked
 * against EVP_Digest's one-shot answer), the secret itself matches, a
 * token of the same length, a prefix, a longer one and the empty one do
 * not. */

static void
test_secret(void)
{
    unsigned char         d[32], want[32];
    const unsigned char  *s;

    s = (const unsigned char *) "0123456789abcdef0123456789abcdef";

    is_int(tenant_secret_digest(s, 32, d), 0, "secret digest");
    ok(EVP_Digest(s, 32, want, NULL, EVP_sha256(), NULL) == 1
       && memcmp(d, want, 32) == 0, "secret digest is its SHA-256");

    is_int(tenant_secret_matches(d, s, 32), 1, "the secret matches");
    is_int(tenant_secret_matches(d,
               (const unsigned char *) "0123456789abcdef0123456789abcdeF",
               32), 0, "same length, last byte differs");
    is_int(tenant_secret_matches(d, s, 31), 0, "a prefix does not match");
    is_int(tenant_secret_matches(d,
               (const unsigned char *) "0123456789abcdef0123456789abcdef0",
               33), 0, "a longer token does not match");
    is_int(tenant_secret_matches(d, (const unsigned char *) "", 0), 0,
           "the empty token does not match");
    is_int(tenant_secret_matches(d, want, 32), 0,
           "the digest itself is not the secret");
}
