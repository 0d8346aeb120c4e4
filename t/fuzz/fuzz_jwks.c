/*
 * Copyright (C) ngx_tenant_module authors
 *
 * libFuzzer target: tenant_keyset_add_jwks() and tenant_keyset_add_pem()
 * on the input, into a set that is empty, or already holds 15 or 16 keys
 * (the first byte of the input chooses), then the lookups.
 *
 * Checks, abort() on violation: a failure leaves the set as it was and
 * says why in err; a success adds keys of a known type with a pkey and a
 * NUL-terminated kid of the recorded length, never more than
 * TENANT_JWKS_MAX_KEYS; every key added is found by its kid.  The set is
 * freed after each input, so a leaked key is a LeakSanitizer report.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tenant_jwks.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_run(unsigned fill, const uint8_t *data, size_t size,
    int pem);
static void fuzz_check_set(const tenant_keyset_t *ks);


/* a key to fill the set with: shared, reference counted */
static tenant_keyset_t  fuzz_base;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    EVP_PKEY  *pkey;

    (void) argc;
    (void) argv;

    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pkey == NULL) {
        abort();
    }

    fuzz_base.keys[0].type = TENANT_KEY_EC_P256;
    fuzz_base.keys[0].pkey = pkey;
    memcpy(fuzz_base.keys[0].kid, "base", sizeof("base"));
    fuzz_base.keys[0].kid_len = 4;
    fuzz_base.nkeys = 1;

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned  fill;

    if (size == 0) {
        return 0;
    }

    /* keys already in the set: mostly none, sometimes (almost) full */

    switch (data[0] & 0x0f) {
    case 0x0e:
        fill = TENANT_JWKS_MAX_KEYS - 1;
        break;
    case 0x0f:
        fill = TENANT_JWKS_MAX_KEYS;
        break;
    default:
        fill = data[0] & 0x03;
    }

    fuzz_run(fill, data + 1, size - 1, 0);
    fuzz_run(fill, data + 1, size - 1, 1);

    return 0;
}


static void
fuzz_run(unsigned fill, const uint8_t *data, size_t size, int pem)
{
    int                  rc;
    size_t               i, pos;
    tenant_keyset_t      ks, before;
    const tenant_key_t  *key;
    char                 err[256];

    memset(&ks, 0, sizeof(tenant_keyset_t));

    for (i = 0; i < fill; i++) {
        if (tenant_keyset_copy(&ks, &fuzz_base) != 0) {
            abort();
        }
    }

    before = ks;

    err[0] = '\0';
    memset(err + 1, 'x', sizeof(err) - 1);

    if (pem) {
        rc = tenant_keyset_add_pem(&ks, data, size, fill ? "pem" : NULL,
                                   err, sizeof(err));

    } else {
        rc = tenant_keyset_add_jwks(&ks, data, size, err, sizeof(err));
    }

    if (rc != 0 && rc != -1) {
        abort();
    }

    if (rc == -1) {
        if (memcmp(&ks, &before, sizeof(tenant_keyset_t)) != 0
            || err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
        {
            abort();
        }

    } else {
        if (ks.nkeys <= before.nkeys || ks.nkeys > TENANT_JWKS_MAX_KEYS
            || (pem && ks.nkeys != before.nkeys + 1)
            || memcmp(&ks.keys, &before.keys,
                      before.nkeys * sizeof(tenant_key_t))
               != 0)
        {
            abort();
        }

        for (i = before.nkeys; i < ks.nkeys; i++) {
            key = &ks.keys[i];

            if (key->pkey == NULL
                || (key->type != TENANT_KEY_RSA
                    && key->type != TENANT_KEY_EC_P256)
                || key->kid_len > TENANT_KID_MAX
                || key->kid[key->kid_len] != '\0'
                || strlen(key->kid) != key->kid_len)
            {
                abort();
            }

            /* a key with a kid is the one that kid finds */

            if (key->kid_len && tenant_keyset_find(&ks, key->kid,
                                                   key->kid_len)
                                == NULL)
            {
                abort();
            }
        }

        for (i = ks.nkeys; i < TENANT_JWKS_MAX_KEYS; i++) {
            if (ks.keys[i].pkey != NULL) {
                abort();
            }
        }
    }

    fuzz_check_set(&ks);

    /* the lookups, with the input as a kid */

    pos = 0;

    while (tenant_keyset_next(&ks, (const char *) data,
                              size > TENANT_KID_MAX ? TENANT_KID_MAX : size,
                              TENANT_KEY_ANY, &pos)
           != NULL)
    {
        if (pos > ks.nkeys) {
            abort();
        }
    }

    tenant_keyset_free(&ks);

    if (ks.nkeys != 0) {
        abort();
    }
}


/* next() walks each key of a type at most once, in order */

static void
fuzz_check_set(const tenant_keyset_t *ks)
{
    size_t               i, pos, last, n;
    const tenant_key_t  *key, *k;

    for (i = 0; i < ks->nkeys; i++) {
        key = &ks->keys[i];

        pos = 0;
        last = 0;
        n = 0;

        while ((k = tenant_keyset_next(ks, key->kid, key->kid_len,
                                       key->type, &pos))
               != NULL)
        {
            if (pos <= last || pos > ks->nkeys || k->type != key->type) {
                abort();
            }

            last = pos;
            n++;
        }

        if (n == 0) {
            abort();            /* the key itself, at least */
        }
    }
}
