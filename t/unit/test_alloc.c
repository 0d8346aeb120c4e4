/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Allocation failures in the nginx-agnostic code (docs/coverage-gaps.md,
 * class A of tenant_jwks.c, tenant_jwt.c, tenant_sign.c, tenant_admin.c).
 *
 * Every allocation of OpenSSL (CRYPTO_set_mem_functions) and of jansson
 * (json_set_alloc_funcs) goes through a counter.  For each operation a
 * counting pass measures how many allocations it makes (after a warm-up:
 * OpenSSL 3 caches provider fetches on first use); then the k-th
 * allocation fails, alone ("alone") or with all later ones ("with the
 * rest").  Each run must end in an error, or in the very result of a run
 * without failures: never a crash, never a key set holding another key,
 * never a verified token with other claims, never an accepted token that
 * must be refused, never a signature that differs.  Under valgrind (make
 * test-valgrind) no run may leak what it allocated before the failure.
 *
 * Operations: loading a JWKS document (RSA, EC, both) and a PEM key (RSA,
 * EC); verifying RS256 and ES256 tokens (valid, bad signature, expired),
 * the very first verification included (it fetches SHA-256);
 * tenant_sign_init, tenant_sign, tenant_sha256, tenant_hkdf_sha256;
 * parsing admin create and patch bodies (valid and invalid).
 *
 * Sampling: an operation with more allocations than its budget has k
 * taken at even steps from 1 to N (1 and N included); the budgets are a
 * quarter under valgrind.  Loading an RSA key costs a primality test of
 * the modulus (EVP_PKEY_public_check), so those budgets are small.  The
 * counts and the runs made are printed.
 *
 * jansson 2.14 ignores a failed allocation of its token buffer (load.c,
 * lex_save) and goes on with a byte less, so a document can parse into
 * other values, or hit an assert() and abort: tenant_json_loadb() keeps
 * jansson from seeing the failure and refuses the parse (the sweeps of a
 * long org_id and of long admin names, and the abort cases, show it).
 * A JWKS key whose import fails for want of memory refuses the whole
 * document, so that no accepted set lacks one of its keys (partial_sets,
 * checked in main; with every allocation of the two-key document failing
 * in turn, not only the sampled ones, 0 partial sets: 75 before the fix).
 */


#include "tap.h"
#include "jwt_util.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "tenant_admin.h"
#include "tenant_json.h"
#include "tenant_jwks.h"
#include "tenant_jwt.h"
#include "tenant_sign.h"


#define NOW       1700000000
#define HDR_RS    "{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"JWT\"}"
#define HDR_ES    "{\"alg\":\"ES256\",\"kid\":\"e1\",\"typ\":\"JWT\"}"
#define CLAIMS                                                               \
    "\"sub\":\"user_2abc\",\"iss\":\"https://clerk.example.com\","           \
    "\"org_id\":\"org_2xyz\",\"org_role\":\"org:admin\","                    \
    "\"org_slug\":\"acme\",\"metadata\":{\"role\":\"owner\"},"               \
    "\"iat\":1699999990,\"nbf\":1699999990"
#define PAYLOAD          "{" CLAIMS ",\"exp\":1700000600}"
#define PAYLOAD_EXPIRED  "{" CLAIMS ",\"exp\":1699999999}"

/*
 * A Clerk-sized organization id (31 bytes), the first token of 16 bytes
 * or more: jansson's token buffer grows while it is read.
 */
#define PAYLOAD_ORG                                                          \
    "{\"org_id\":\"org_2ZfWq8kVbqfS3F8x1Zt3M3vFZsm\","                       \
    "\"iss\":\"https://clerk.example.com\",\"sub\":\"user_2abc\","           \
    "\"exp\":1700000600}"

#define SHOW_MAX  5         /* wrong outcomes printed per sweep */


typedef int (*op_pt)(int *accepted);


/* --- the allocation counter --- */

static long         alloc_n;          /* allocations since the last reset */
static long         alloc_fail_at;    /* 0: none fails */
static int          alloc_fail_rest;  /* the later ones fail too */
static long         alloc_failed;

static const char  *cur_op;           /* for the crash message */
static long         cur_k;


static int
alloc_fails(void)
{
    alloc_n++;

    if (alloc_fail_at != 0
        && (alloc_n == alloc_fail_at
            || (alloc_fail_rest && alloc_n > alloc_fail_at)))
    {
        alloc_failed++;
        return 1;
    }

    return 0;
}


static void *
ossl_malloc(size_t n, const char *file, int line)
{
    (void) file;
    (void) line;

    return alloc_fails() ? NULL : malloc(n);
}


static void *
ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void) file;
    (void) line;

    if (p == NULL) {
        return alloc_fails() ? NULL : malloc(n);
    }

    if (n == 0) {
        free(p);
        return NULL;
    }

    return alloc_fails() ? NULL : realloc(p, n);
}


static void
ossl_free(void *p, const char *file, int line)
{
    (void) file;
    (void) line;

    free(p);
}


static void *
json_malloc(size_t n)
{
    return alloc_fails() ? NULL : malloc(n);
}


static void
json_free(void *p)
{
    free(p);
}


static void
arm(long k, int rest)
{
    alloc_n = 0;
    alloc_failed = 0;
    alloc_fail_rest = rest;
    alloc_fail_at = k;
}


static void
disarm(void)
{
    alloc_fail_at = 0;
}


static void
on_crash(int sig)
{
    char  msg[160];
    int   n;

    fflush(stdout);

    n = snprintf(msg, sizeof(msg),
                 "Bail out! signal %d in \"%s\" with allocation %ld "
                 "failing\n", sig, cur_op ? cur_op : "(setup)", cur_k);

    if (n > 0) {
        (void) write(STDOUT_FILENO, msg, (size_t) n);
    }

    _exit(255);
}


/* --- fixtures, built without failures --- */

static EVP_PKEY              *rsa, *ec;
static char                   pem_rsa[4096], pem_ec[1024];
static char                   doc_rsa[4200], doc_ec[1100], doc_both[5300];
static char                   tok_rs[TOKEN_MAX], tok_es[TOKEN_MAX];
static char                   tok_rs_sig[TOKEN_MAX], tok_es_sig[TOKEN_MAX];
static char                   tok_rs_exp[TOKEN_MAX], tok_es_exp[TOKEN_MAX];
static char                   tok_rs_org[TOKEN_MAX];
static tenant_jwt_claims_t    want_org_claims;
static tenant_keyset_t        ks;
static tenant_jwt_policy_t    policy;
static tenant_jwt_claims_t    want_claims;
static int                    refusals[TENANT_JWT_ERROR + 1];

static unsigned char          ikm[32];
static tenant_sign_key_t      sk;
static unsigned char          want_sign[TENANT_SHA256_LEN];
static unsigned char          want_sha[TENANT_SHA256_LEN];
static unsigned char          want_hkdf[42];
static const char             msg[] =
    "v1\n1700000000\n7f9c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e0f\nacme\n"
    "tenant_acme\nprofessional\norg_2xyz\nuser_2abc\norg:admin";

static tenant_tiers_t         tiers;
static tenant_admin_create_t  want_create, want_create_long, want_create_utf8;
static tenant_admin_patch_t   want_patch;
static tenant_admin_errors_t  want_errs;

static const char  body_create[] =
    "{\"name\":\"Acme Caf\xc3\xa9\",\"slug\":\"acme-cafe\","
    "\"clerkOrganizationId\":\"org_2xyz\",\"subscriptionTier\":\"starter\","
    "\"ownerEmail\":\"owner@acme.example\",\"trialDays\":30}";
/*
 * The name, 31 bytes, is the first token of 16 bytes or more (not 30: its
 * closing quote would then be the byte jansson drops, and its copy of
 * the string overran, without tenant_json_loadb()).
 */
static const char  body_create_long[] =
    "{\"name\":\"Acme Corporation Internationale\",\"slug\":\"acme\","
    "\"clerkOrganizationId\":\"org_2xyz\",\"subscriptionTier\":\"starter\","
    "\"ownerEmail\":\"owner@acme.example\"}";
/*
 * The name's byte at index 15 of its token is a UTF-8 continuation byte:
 * dropped by jansson, the name is no longer valid UTF-8.
 */
static const char  body_create_utf8[] =
    "{\"name\":\"Acme Corporat\xc3\xa9" "e Internationale\",\"slug\":\"acme\","
    "\"clerkOrganizationId\":\"org_2xyz\",\"subscriptionTier\":\"starter\","
    "\"ownerEmail\":\"owner@acme.example\"}";
static const char  body_create_bad[] =
    "{\"name\":\"\",\"slug\":\"-x\",\"clerkOrganizationId\":\"org 1\","
    "\"subscriptionTier\":\"gold\",\"ownerEmail\":\"nobody\","
    "\"trialDays\":400,\"colour\":\"red\",\"extra\":[1,2,{\"a\":null}]}";
static const char  body_patch[] =
    "{\"subscriptionTier\":\"professional\",\"subscriptionStatus\":\"active\","
    "\"trialEndsAt\":\"2027-01-31T23:59:59.5+01:00\","
    "\"rateLimitOverride\":5000}";


/*
 * The first verification of the process fetches SHA-256 (tenant_jwt.c
 * keeps it in a static): with the allocations failing from some k on, it
 * ends in TENANT_JWT_ERROR, and a later verification fetches it again.
 * Returns 1 if one did, before any other verification of the process.
 */

static int  first_fetch;


static int
first_verification(void)
{
    long                 k;
    tenant_jwt_claims_t  c;
    tenant_jwt_status_t  rc;

    for (k = 1; k < 1000; k++) {
        arm(k, 1);
        rc = tenant_jwt_verify((const unsigned char *) tok_rs, strlen(tok_rs),
                               &ks, &policy, &c);
        disarm();

        if (rc == TENANT_JWT_ERROR) {
            return 1;
        }

        if (alloc_failed == 0) {
            break;              /* ran to its end: fetched */
        }
    }

    return 0;
}


/* the token tok with one character of its signature changed */

static void
bad_signature(char *dst, const char *tok)
{
    size_t  n;

    strcpy(dst, tok);
    n = strlen(dst);
    dst[n - 10] = (dst[n - 10] == 'A') ? 'B' : 'A';
}


static void
fixtures(void)
{
    char                   a[4096], b[1024], e[256];
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  create;

    rsa = gen_rsa(2048);
    ec = gen_ec("P-256");

    pem_of(rsa, pem_rsa, sizeof(pem_rsa));
    pem_of(ec, pem_ec, sizeof(pem_ec));

    jwk_of(rsa, "\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\"", a,
           sizeof(a));
    jwk_of(ec, "\"kid\":\"e1\",\"use\":\"sig\",\"alg\":\"ES256\"", b,
           sizeof(b));

    snprintf(doc_rsa, sizeof(doc_rsa), "{\"keys\":[%s]}", a);
    snprintf(doc_ec, sizeof(doc_ec), "{\"keys\":[%s]}", b);
    snprintf(doc_both, sizeof(doc_both), "{\"keys\":[%s,%s]}", a, b);

    make_token(tok_rs, rsa, HDR_RS, PAYLOAD);
    make_token(tok_es, ec, HDR_ES, PAYLOAD);
    make_token(tok_rs_exp, rsa, HDR_RS, PAYLOAD_EXPIRED);
    make_token(tok_es_exp, ec, HDR_ES, PAYLOAD_EXPIRED);
    make_token(tok_rs_org, rsa, HDR_RS, PAYLOAD_ORG);
    bad_signature(tok_rs_sig, tok_rs);
    bad_signature(tok_es_sig, tok_es);

    memset(&ks, 0, sizeof(ks));

    if (tenant_keyset_add_jwks(&ks, (const unsigned char *) doc_both,
                               strlen(doc_both), e, sizeof(e))
        != 0)
    {
        bail(e);
    }

    memset(&policy, 0, sizeof(policy));
    policy.algorithms = TENANT_JWT_RS256 | TENANT_JWT_ES256;
    policy.now = NOW;
    policy.issuer = "https://clerk.example.com";

    first_fetch = first_verification();

    if (tenant_jwt_verify((const unsigned char *) tok_rs, strlen(tok_rs),
                          &ks, &policy, &want_claims)
        != TENANT_JWT_OK)
    {
        bail("the reference token does not verify");
    }

    if (tenant_jwt_verify((const unsigned char *) tok_rs_org,
                          strlen(tok_rs_org), &ks, &policy, &want_org_claims)
        != TENANT_JWT_OK)
    {
        bail("the token with a long org_id does not verify");
    }

    memset(ikm, 0x5a, sizeof(ikm));

    if (tenant_sign_init(&sk, ikm, sizeof(ikm), e, sizeof(e)) != 0
        || tenant_sign(&sk, (const unsigned char *) msg, sizeof(msg) - 1,
                       want_sign) != 0
        || tenant_sha256(&sk, (const unsigned char *) msg, sizeof(msg) - 1,
                         want_sha) != 0
        || tenant_hkdf_sha256(want_hkdf, sizeof(want_hkdf), ikm, sizeof(ikm),
                              (const unsigned char *) "salt", 4,
                              (const unsigned char *) "info", 4) != 0)
    {
        bail("signing fixtures");
    }

    memset(&tiers, 0, sizeof(tiers));

    if (tenant_tiers_add(&tiers, "starter", 7, "dashboard", 9, e, sizeof(e))
        != 0
        || tenant_tiers_add(&tiers, "professional", 12, "*", 1, e, sizeof(e))
           != 0)
    {
        bail(e);
    }

    if (tenant_admin_parse_create((const unsigned char *) body_create,
                                  sizeof(body_create) - 1, &tiers,
                                  &want_create, &errs) != 0
        || tenant_admin_parse_create((const unsigned char *) body_create_long,
                                     sizeof(body_create_long) - 1, &tiers,
                                     &want_create_long, &errs) != 0
        || tenant_admin_parse_create((const unsigned char *) body_create_utf8,
                                     sizeof(body_create_utf8) - 1, &tiers,
                                     &want_create_utf8, &errs) != 0
        || tenant_admin_parse_patch((const unsigned char *) body_patch,
                                    sizeof(body_patch) - 1, &tiers,
                                    &want_patch, &errs) != 0
        || tenant_admin_parse_create((const unsigned char *) body_create_bad,
                                     sizeof(body_create_bad) - 1, &tiers,
                                     &create, &want_errs) != -1
        || want_errs.n < 8)
    {
        bail("admin fixtures");
    }
}


/* --- the sweep --- */

static int   under_valgrind;


/*
 * Runs op without failures (it must succeed), counts its allocations,
 * then fails the k-th of them, alone and with all later ones, for every k
 * or, above the budget, for k at even steps.
 */

static void
sweep(const char *name, op_pt op, long budget)
{
    int    good, accepted, rest, shown;
    long   n, i, k, runs, bad, errors, successes;
    char   what[256];

    cur_op = name;
    cur_k = 0;

    good = op(&accepted);
    ok(good && accepted, "%s: succeeds without failures", name);

    arm(0, 0);
    op(&accepted);
    n = alloc_n;

    if (under_valgrind) {
        budget = (budget + 3) / 4;
    }

    runs = (n <= budget) ? n : budget;

    ok(n > 0, "%s: %ld allocations, %ld of them failed in turn", name, n,
       runs);

    for (rest = 0; rest <= 1; rest++) {
        bad = 0;
        errors = 0;
        successes = 0;
        shown = 0;

        for (i = 0; i < runs; i++) {
            k = (runs == n) ? i + 1 : 1 + i * (n - 1) / (runs - 1);

            cur_k = k;

            arm(k, rest);
            good = op(&accepted);
            disarm();

            if (accepted) {
                successes++;

            } else {
                errors++;
            }

            if (!good) {
                bad++;

                if (shown++ < SHOW_MAX) {
                    printf("#   allocation %ld failing (%s): %s\n", k,
                           rest ? "and the rest" : "alone",
                           accepted ? "a wrong success" : "a wrong error");
                }
            }
        }

        snprintf(what, sizeof(what),
                 "%s: allocation k of %ld failing %s: an error or the right "
                 "result (%ld errors, %ld successes)",
                 name, n, rest ? "with the rest" : "alone", errors,
                 successes);

        ok(bad == 0 && errors > 0, "%s", what);
    }

    cur_k = 0;

    good = op(&accepted);
    ok(good && accepted, "%s: succeeds again afterwards", name);

    cur_op = NULL;
}


/* --- key loading --- */

/*
 * A loaded key set must hold the keys of the document, each verifying its
 * own token; a refused one must be left empty.  A set that lacks a key of
 * the document is counted in partial_sets (checked in main).
 */

static long  partial_sets;


static int
key_good(const tenant_key_t *key)
{
    int                  rsa_key;
    tenant_keyset_t      one;
    tenant_jwt_claims_t  c;

    rsa_key = (key->kid_len == 2 && memcmp(key->kid, "r1", 2) == 0);

    if (!rsa_key && !(key->kid_len == 2 && memcmp(key->kid, "e1", 2) == 0)) {
        return 0;
    }

    if (key->type != (rsa_key ? TENANT_KEY_RSA : TENANT_KEY_EC_P256)) {
        return 0;
    }

    /* the key alone must verify the token signed with it */

    memset(&one, 0, sizeof(one));
    one.keys[0] = *key;
    one.nkeys = 1;

    return tenant_jwt_verify((const unsigned char *) (rsa_key ? tok_rs
                                                              : tok_es),
                             strlen(rsa_key ? tok_rs : tok_es), &one,
                             &policy, &c)
           == TENANT_JWT_OK
           && memcmp(&c, &want_claims, sizeof(c)) == 0;
}


static int
keyset_good(int rc, tenant_keyset_t *set, const char *err, size_t nkeys)
{
    size_t           i;
    tenant_keyset_t  empty;

    memset(&empty, 0, sizeof(empty));

    if (rc != 0) {
        return rc == -1 && err[0] != '\0'
               && memcmp(set, &empty, sizeof(empty)) == 0;
    }

    if (set->nkeys == 0 || set->nkeys > nkeys) {
        return 0;
    }

    for (i = 0; i < set->nkeys; i++) {
        if (!key_good(&set->keys[i])) {
            return 0;
        }
    }

    if (set->nkeys < nkeys) {
        partial_sets++;
    }

    return 1;
}


static int
load_jwks(const char *json, size_t nkeys, int *accepted)
{
    int              rc, good;
    char             e[256];
    tenant_keyset_t  set;

    memset(&set, 0, sizeof(set));
    e[0] = '\0';

    rc = tenant_keyset_add_jwks(&set, (const unsigned char *) json,
                                strlen(json), e, sizeof(e));
    disarm();

    good = keyset_good(rc, &set, e, nkeys);
    *accepted = (rc == 0);

    tenant_keyset_free(&set);

    return good;
}


static int
load_pem(const char *pem, const char *kid, int *accepted)
{
    int              rc, good;
    char             e[256];
    tenant_keyset_t  set;

    memset(&set, 0, sizeof(set));
    e[0] = '\0';

    rc = tenant_keyset_add_pem(&set, (const unsigned char *) pem,
                               strlen(pem), kid, e, sizeof(e));
    disarm();

    good = keyset_good(rc, &set, e, 1);
    *accepted = (rc == 0);

    tenant_keyset_free(&set);

    return good;
}


static int
op_jwks_rsa(int *accepted)
{
    return load_jwks(doc_rsa, 1, accepted);
}


static int
op_jwks_ec(int *accepted)
{
    return load_jwks(doc_ec, 1, accepted);
}


static int
op_jwks_both(int *accepted)
{
    return load_jwks(doc_both, 2, accepted);
}


static int
op_pem_rsa(int *accepted)
{
    return load_pem(pem_rsa, "r1", accepted);
}


static int
op_pem_ec(int *accepted)
{
    return load_pem(pem_ec, "e1", accepted);
}


/* --- verification --- */

/* A valid token: accepted with exactly its claims, or refused (counted). */

static int
verify_good(const char *tok, const tenant_jwt_claims_t *want, int *accepted)
{
    tenant_jwt_claims_t  c;
    tenant_jwt_status_t  rc;

    rc = tenant_jwt_verify((const unsigned char *) tok, strlen(tok), &ks,
                           &policy, &c);
    disarm();

    *accepted = (rc == TENANT_JWT_OK);

    if (rc != TENANT_JWT_OK) {
        if ((size_t) rc < sizeof(refusals) / sizeof(refusals[0])) {
            refusals[rc]++;
        }

        return 1;
    }

    return memcmp(&c, want, sizeof(c)) == 0;
}


static int
op_verify_rs(int *accepted)
{
    return verify_good(tok_rs, &want_claims, accepted);
}


static int
op_verify_es(int *accepted)
{
    return verify_good(tok_es, &want_claims, accepted);
}


static int
op_verify_org(int *accepted)
{
    return verify_good(tok_rs_org, &want_org_claims, accepted);
}


/* a token to refuse: "accepted" here means refused with the right code */

static int
refused_with(const char *tok, tenant_jwt_status_t want, int *accepted)
{
    tenant_jwt_claims_t  c;
    tenant_jwt_status_t  rc;

    rc = tenant_jwt_verify((const unsigned char *) tok, strlen(tok), &ks,
                           &policy, &c);
    disarm();

    *accepted = (rc == want);

    return rc != TENANT_JWT_OK;
}


static int
op_refuse_rs_sig(int *accepted)
{
    return refused_with(tok_rs_sig, TENANT_JWT_BAD_SIGNATURE, accepted);
}


static int
op_refuse_es_sig(int *accepted)
{
    return refused_with(tok_es_sig, TENANT_JWT_BAD_SIGNATURE, accepted);
}


static int
op_refuse_rs_exp(int *accepted)
{
    return refused_with(tok_rs_exp, TENANT_JWT_EXPIRED, accepted);
}


static int
op_refuse_es_exp(int *accepted)
{
    return refused_with(tok_es_exp, TENANT_JWT_EXPIRED, accepted);
}


/* --- signing --- */

static int
op_sign_init(int *accepted)
{
    int                rc, good;
    char               e[128];
    unsigned char      out[TENANT_SHA256_LEN];
    tenant_sign_key_t  k;

    e[0] = '\0';

    rc = tenant_sign_init(&k, ikm, sizeof(ikm), e, sizeof(e));
    disarm();

    *accepted = (rc == 0);

    if (rc == 0) {
        good = tenant_sign(&k, (const unsigned char *) msg, sizeof(msg) - 1,
                           out) == 0
               && memcmp(out, want_sign, sizeof(out)) == 0;

    } else {
        good = rc == -1 && e[0] != '\0' && k.md == NULL && k.inner == NULL
               && k.outer == NULL && k.work == NULL;
    }

    tenant_sign_free(&k);

    return good;
}


/* a failed call leaves the key usable: the next one signs right */

static int
op_sign(int *accepted)
{
    int            rc, good;
    unsigned char  out[TENANT_SHA256_LEN];

    rc = tenant_sign(&sk, (const unsigned char *) msg, sizeof(msg) - 1, out);
    disarm();

    *accepted = (rc == 0);
    good = (rc != 0 || memcmp(out, want_sign, sizeof(out)) == 0);

    rc = tenant_sign(&sk, (const unsigned char *) msg, sizeof(msg) - 1, out);

    return good && rc == 0 && memcmp(out, want_sign, sizeof(out)) == 0;
}


static int
op_sha256(int *accepted)
{
    int            rc, good;
    unsigned char  out[TENANT_SHA256_LEN];

    rc = tenant_sha256(&sk, (const unsigned char *) msg, sizeof(msg) - 1,
                       out);
    disarm();

    *accepted = (rc == 0);
    good = (rc != 0 || memcmp(out, want_sha, sizeof(out)) == 0);

    rc = tenant_sha256(&sk, (const unsigned char *) msg, sizeof(msg) - 1,
                       out);

    return good && rc == 0 && memcmp(out, want_sha, sizeof(out)) == 0;
}


static int
op_hkdf(int *accepted)
{
    int            rc;
    unsigned char  out[sizeof(want_hkdf)];

    rc = tenant_hkdf_sha256(out, sizeof(out), ikm, sizeof(ikm),
                            (const unsigned char *) "salt", 4,
                            (const unsigned char *) "info", 4);
    disarm();

    *accepted = (rc == 0);

    return rc == -1 || (rc == 0 && memcmp(out, want_hkdf, sizeof(out)) == 0);
}


/* --- admin bodies --- */

/*
 * A body refused under failures: at least one error, and nothing of the
 * body kept.  Whether the errors say "out of memory" is counted (see
 * admin_sweeps).
 */

static long  oom_said, oom_not_said;


static void
oom_count(const tenant_admin_errors_t *errs)
{
    if (errs->n == 1 && strcmp(errs->e[0].field, "body") == 0
        && strcmp(errs->e[0].reason, "could not be parsed (out of memory)")
           == 0)
    {
        oom_said++;

    } else {
        oom_not_said++;
    }
}


static int
same_errors(const tenant_admin_errors_t *a, const tenant_admin_errors_t *b)
{
    size_t  i;

    if (a->n != b->n) {
        return 0;
    }

    for (i = 0; i < a->n; i++) {
        if (strcmp(a->e[i].field, b->e[i].field) != 0
            || strcmp(a->e[i].reason, b->e[i].reason) != 0)
        {
            return 0;
        }
    }

    return 1;
}


static int
create_good(const char *body, size_t len, const tenant_admin_create_t *want,
    int *accepted)
{
    int                    rc;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out, zero;

    rc = tenant_admin_parse_create((const unsigned char *) body, len, &tiers,
                                   &out, &errs);
    disarm();

    *accepted = (rc == 0);

    if (rc == 0) {
        return errs.n == 0 && memcmp(&out, want, sizeof(out)) == 0;
    }

    oom_count(&errs);
    memset(&zero, 0, sizeof(zero));

    return rc == -1 && errs.n > 0 && memcmp(&out, &zero, sizeof(out)) == 0;
}


static int
op_create(int *accepted)
{
    return create_good(body_create, sizeof(body_create) - 1, &want_create,
                       accepted);
}


static int
op_create_long(int *accepted)
{
    return create_good(body_create_long, sizeof(body_create_long) - 1,
                       &want_create_long, accepted);
}


/*
 * A dropped continuation byte makes the name ill-formed UTF-8, which
 * tenant_admin_check_name() refuses ("is not valid UTF-8"): that check is
 * reachable although jansson validated the body, and the refusal is
 * right.  (The byte dropped when the buffer grows from 32 bytes is an
 * ASCII one: a wrong success, as with the long name.)
 */

static int
op_create_utf8(int *accepted)
{
    return create_good(body_create_utf8, sizeof(body_create_utf8) - 1,
                       &want_create_utf8, accepted);
}


/* an invalid body: "accepted" here means refused with all its errors */

static int
op_create_bad(int *accepted)
{
    int                    rc;
    tenant_admin_errors_t  errs;
    tenant_admin_create_t  out;

    rc = tenant_admin_parse_create((const unsigned char *) body_create_bad,
                                   sizeof(body_create_bad) - 1, &tiers, &out,
                                   &errs);
    disarm();

    *accepted = (rc == -1 && same_errors(&errs, &want_errs));

    if (!*accepted) {
        oom_count(&errs);
    }

    return rc == -1 && errs.n > 0;
}


static int
op_patch(int *accepted)
{
    int                    rc;
    tenant_admin_errors_t  errs;
    tenant_admin_patch_t   out;

    rc = tenant_admin_parse_patch((const unsigned char *) body_patch,
                                  sizeof(body_patch) - 1, &tiers, &out,
                                  &errs);
    disarm();

    *accepted = (rc == 0);

    if (rc == 0) {
        return errs.n == 0 && memcmp(&out, &want_patch, sizeof(out)) == 0;
    }

    oom_count(&errs);

    return rc == -1 && errs.n > 0 && !out.has_tier && !out.has_status
           && !out.has_trial_ends_at && !out.has_rate_limit;
}


/*
 * Parses body in a child process (an abort must not end the test) with
 * each allocation failing in turn.  1 if no run died.  Each body puts a
 * byte at index 15 of jansson's first long token: the byte whose append
 * grows the token buffer from 16 bytes, and is dropped when that fails.
 */

static int
survives(const char *body)
{
    int                    status;
    long                   n, k;
    pid_t                  pid;
    tenant_admin_errors_t  errs;
    tenant_admin_patch_t   patch;

    fflush(stdout);

    pid = fork();

    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        alarm(10);

        if (freopen("/dev/null", "w", stderr) == NULL) {
            _exit(2);
        }

        arm(0, 0);
        tenant_admin_parse_patch((const unsigned char *) body, strlen(body),
                                 &tiers, &patch, &errs);
        n = alloc_n;

        for (k = 1; k <= n; k++) {
            arm(k, 0);
            tenant_admin_parse_patch((const unsigned char *) body,
                                     strlen(body), &tiers, &patch, &errs);
            disarm();
        }

        _exit(0);
    }

    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        bail("fork");
    }

    if (WIFSIGNALED(status)) {
        printf("#   the child died of signal %d\n", WTERMSIG(status));
    }

    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}


/*
 * json_loadb() with its k-th allocation failing: does it set the error
 * code (the last byte of text), which json_error_code() returns?  The
 * code byte is preset to a value jansson never uses.
 */

static int
loadb_sets_code(long k)
{
    json_t        *j;
    json_error_t   e;

    memset(&e, 0x7f, sizeof(e));

    arm(k, 0);
    j = tenant_json_loadb("{\"a\":\"b\"}", 9, 0, &e);
    disarm();

    json_decref(j);

    return j == NULL && alloc_failed == 1
           && json_error_code(&e) == json_error_out_of_memory;
}


/* The admin sweeps (called from main). */

static void
admin_sweeps(void)
{
    char  what[256];

    oom_said = 0;
    oom_not_said = 0;

    sweep("admin create body", op_create, 400);
    sweep("admin create body with 8 errors", op_create_bad, 400);
    sweep("admin patch body", op_patch, 400);

    /*
     * jansson 2.14 itself never reports json_error_out_of_memory: a valid
     * body failed for want of memory was "not JSON", or missed a member
     * whose name lost a byte (a 400 blaming the client).  Through
     * tenant_json_loadb() it says out of memory.
     */

    snprintf(what, sizeof(what),
             "admin bodies refused for want of memory say so (%ld did, "
             "%ld blamed the body)", oom_said, oom_not_said);
    ok(oom_said > 0 && oom_not_said == 0, what);

    /* a name that lost a byte is refused, not created with another name */

    sweep("admin create body with a long name", op_create_long, 400);
    sweep("admin create body with a long UTF-8 name", op_create_utf8, 400);
}


/* --- main --- */

static void
print_refusals(const char *what)
{
    size_t  i;

    printf("# %s refused under failures as:", what);

    for (i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        if (refusals[i]) {
            printf(" %s x%d", tenant_jwt_status_code((tenant_jwt_status_t) i),
                   refusals[i]);
        }
    }

    printf("\n");

    memset(refusals, 0, sizeof(refusals));
}


int
main(void)
{
    int              rc;
    const char      *preload;
    tenant_keyset_t  set;

    /* before any allocation of OpenSSL */

    rc = CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
    tenant_json_allocator(json_malloc, json_free);

    if (rc != 1) {
        bail("CRYPTO_set_mem_functions refused (an allocation came first)");
    }

    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGABRT, on_crash);
    signal(SIGFPE, on_crash);

    preload = getenv("LD_PRELOAD");
    under_valgrind = (preload != NULL && strstr(preload, "vgpreload"));

    fixtures();

    ok(first_fetch, "the first verification, SHA-256 not fetched for "
       "want of memory: verification_error, then fetched by the next one");

    /* the hooks see the allocations: a failure makes a load fail */

    memset(&set, 0, sizeof(set));
    arm(1, 1);
    rc = tenant_keyset_add_pem(&set, (const unsigned char *) pem_rsa,
                               strlen(pem_rsa), NULL, NULL, 0);
    disarm();
    ok(rc == -1 && set.nkeys == 0 && alloc_failed > 0,
       "with every allocation failing, a PEM key is refused");

    /* budgets: runs per mode; loading an RSA key costs a primality test */

    sweep("JWKS with an RSA key", op_jwks_rsa, 250);
    sweep("JWKS with an EC key", op_jwks_ec, 400);
    sweep("PEM RSA key", op_pem_rsa, 100);
    sweep("PEM EC key", op_pem_ec, 400);

    partial_sets = 0;
    sweep("JWKS with an RSA and an EC key", op_jwks_both, 100);

    /*
     * A key whose import fails for want of memory is not skipped like a
     * key "not for us": the document is refused whole (the caller keeps
     * its previous keys), else tokens of that kid would fail with
     * unknown_key until the next fetch.
     */

    ok(partial_sets == 0, "JWKS with two keys: a failed allocation never "
       "drops one of them from an accepted set (%ld partial sets)",
       partial_sets);

    sweep("RS256 valid token", op_verify_rs, 400);
    print_refusals("RS256 valid token");
    sweep("ES256 valid token", op_verify_es, 400);
    print_refusals("ES256 valid token");
    sweep("RS256 token with a bad signature", op_refuse_rs_sig, 400);
    sweep("ES256 token with a bad signature", op_refuse_es_sig, 400);
    sweep("RS256 expired token", op_refuse_rs_exp, 400);
    sweep("ES256 expired token", op_refuse_es_exp, 400);

    /*
     * jansson 2.14 drops the byte whose buffer growth failed and parses
     * on: a failure while reading a 31-byte org_id verified the token
     * with another org_id.  tenant_json_loadb() refuses such a parse.
     */

    sweep("RS256 token with a long org_id", op_verify_org, 400);
    print_refusals("RS256 token with a long org_id");

    sweep("tenant_sign_init", op_sign_init, 400);
    sweep("tenant_sign", op_sign, 400);
    sweep("tenant_sha256", op_sha256, 400);
    sweep("tenant_hkdf_sha256", op_hkdf, 400);

    /*
     * When json_loadb() fails an allocation early, jansson 2.14 returns
     * NULL without setting the error: tenant_admin_load's switch read an
     * unset byte (valgrind).  tenant_json_loadb() sets it.
     */

    ok(loadb_sets_code(1) && loadb_sets_code(2),
       "tenant_json_loadb failing its 1st or 2nd allocation says out of "
       "memory");

    admin_sweeps();

    /*
     * jansson 2.14 (load.c lex_scan_string, lex_unget_unsave): the byte
     * dropped may be the 'u' of an escape or the byte after a number,
     * which hit an assert() and aborted; or the closing quote of a string,
     * whose copy then ran past its buffer.  tenant_json_loadb() serves a
     * failed allocation from its reserve, so jansson drops nothing.  Each
     * in a child process, which would die of the abort.
     */

    ok(survives("{\"x\":\"abcdefghijklm\\u0061\"}"),
       "a failure under an escape: no abort (jansson's assert(0))");
    ok(survives("{\"x\":1234567890.1234,\"y\":1}"),
       "a failure under a number: no abort (jansson's assert(c == d))");

    tenant_keyset_free(&ks);
    tenant_sign_free(&sk);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);

    return done_testing();
}
