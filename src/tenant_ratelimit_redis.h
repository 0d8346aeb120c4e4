/*
 * Copyright (C) ngx_tenant_module authors
 *
 * The global form of the per-tenant limiter: the same GCRA as
 * tenant_ratelimit.c, run by Redis (or Valkey) as one atomic Lua script
 * per request, on Redis's clock, so that every gateway instance shares one
 * state per key.  nginx-agnostic: the script, its SHA1 (for EVALSHA), the
 * key names, the script's arguments, the check of its answer, and the
 * local over-limit "hold" (a key refused until T is refused locally until
 * T, without asking Redis).  The client that sends the script is not here.
 *
 * The script
 *
 *     EVALSHA sha n key_1 .. key_n t_1 tau_1 .. t_n tau_n
 *
 * checks the keys in order (the narrowest limit first, the tenant's last,
 * as ngx_tenant_ratelimit() does): t_i and tau_i are the emission interval
 * and the bucket of key i in microseconds (tenant_rate_redis_args()).  A
 * refusal stops there: the later keys are not looked at and the earlier
 * ones are not advanced (the same, to the microsecond, as the local
 * check-then-refund).  The answer is TENANT_RATE_REDIS_REPLY integers per
 * key looked at (allowed, remaining, retry_after_us, reset_us): n groups
 * when every key admits the request, fewer when one refuses it (the last
 * group is the refusal).  Microseconds, not the headers' milliseconds: the
 * hold needs them, and tenant_rate_redis_result() rounds them as the local
 * limiter does.  An argument out of range gets an error reply
 * ("ERR tenant: ..."), never a wrong answer.
 *
 * Each key holds its theoretical arrival time, a decimal number of
 * microseconds since TENANT_RATE_REDIS_EPOCH (Unix time) on Redis's clock,
 * and expires when its bucket is full again: Redis keeps no key longer
 * than the quota it records.
 *
 * Exactness: Lua's numbers are doubles, exact for integers below 2^53.
 * Every quantity the script computes is below 2^53 while the time since
 * the epoch is below 2^52 us (until the year 2166) and tau below 2^51 us
 * (71 years): tenant_rate_redis_args() refuses a longer bucket (a rate
 * such as "1r/d" with a burst above 26,000), which the caller then limits
 * locally; the script refuses such arguments too.
 */

#ifndef _TENANT_RATELIMIT_REDIS_H_INCLUDED_
#define _TENANT_RATELIMIT_REDIS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "tenant_ratelimit.h"


#define TENANT_RATE_REDIS_PREFIX      "tenant:rl:"
#define TENANT_RATE_REDIS_PREFIX_MAX  64
#define TENANT_RATE_REDIS_ID_MAX      64
#define TENANT_RATE_REDIS_VALUE_MAX   128     /* bytes kept of a value */

/* prefix "{" id "}" 3 x (":" number) ":u:" value */
#define TENANT_RATE_REDIS_KEY_MAX                                            \
    (TENANT_RATE_REDIS_PREFIX_MAX + 1 + TENANT_RATE_REDIS_ID_MAX + 1        \
     + 3 * 21 + 3 + TENANT_RATE_REDIS_VALUE_MAX)

#define TENANT_RATE_REDIS_EPOCH       1700000000         /* s: 2023-11-14 */
#define TENANT_RATE_REDIS_MAX_TAU     ((uint64_t) 1 << 51)
#define TENANT_RATE_REDIS_MAX_NOW     ((uint64_t) 1 << 52)
#define TENANT_RATE_REDIS_REPLY       4       /* integers per key */
#define TENANT_RATE_REDIS_SHA1_HEX    40


/*
 * The script, in three parts: helpers, the clock (Redis's TIME, and key
 * lifetimes on it), the limiter.  tenant_rate_redis_script is the three
 * together, what EVALSHA runs; a test may put its own clock between the
 * other two (the production script has no way to be given a time).
 */
extern const char    tenant_rate_redis_lua_head[];
extern const char    tenant_rate_redis_lua_clock[];
extern const char    tenant_rate_redis_lua_gcra[];
extern const char    tenant_rate_redis_script[];
extern const size_t  tenant_rate_redis_script_len;


/* The answer of the script about one key. */
typedef struct {
    tenant_rate_result_t  result;            /* as tenant_rate_check()'s */
    uint64_t              retry_after_us;
    uint64_t              reset_us;
} tenant_rate_redis_answer_t;


/*
 * A key's local over-limit hold: refused until until_us (0: none), on
 * the local clock (tenant_rate_now()).
 */
typedef struct {
    int64_t               until_us;
    int64_t               reset_us;
} tenant_rate_hold_t;


/*
 * The SHA1 of tenant_rate_redis_script in lower-case hex, NUL-terminated
 * (hex has room for TENANT_RATE_REDIS_SHA1_HEX + 1): what SCRIPT LOAD
 * answers and EVALSHA takes.  0, or -1 if OpenSSL fails.
 */
int tenant_rate_redis_sha1(char *hex);

/*
 * Names the Redis key of a limit: prefix (at most
 * TENANT_RATE_REDIS_PREFIX_MAX bytes; NULL: TENANT_RATE_REDIS_PREFIX),
 * the tenant's id in braces (a Redis Cluster hash tag: a tenant's keys
 * share a slot, as one script's keys must), the rate (limit, window in ms,
 * burst: a tier change or a new override starts from a new key, never
 * from the state of another rate) and, for a tenant_rate_limit_by limit,
 * ":u:" and the value's first TENANT_RATE_REDIS_VALUE_MAX bytes (any
 * bytes; value NULL or empty: the tenant's own limit):
 *
 *     tenant:rl:{7d9f...}:100:60000:100
 *     tenant:rl:{7d9f...}:60:60000:60:u:user_2abc
 *
 * The id (1 to TENANT_RATE_REDIS_ID_MAX bytes) may not contain '}', so
 * that a name reads back one way only.  The length written (no NUL), or 0
 * if an argument is out of range or the key does not fit in size bytes
 * (TENANT_RATE_REDIS_KEY_MAX always does).
 */
size_t tenant_rate_redis_key(char *buf, size_t size, const char *prefix,
    size_t prefix_len, const char *id, size_t id_len,
    const tenant_rate_t *rate, const char *value, size_t value_len);

/*
 * The script's arguments for a rate: t and tau as tenant_rate_check()
 * computes them.  0, or -1 when the bucket is longer than
 * TENANT_RATE_REDIS_MAX_TAU (the script would not be exact: limit that
 * key locally).
 */
int tenant_rate_redis_args(const tenant_rate_t *rate, uint64_t *t,
    uint64_t *tau);

/*
 * Reads one key's TENANT_RATE_REDIS_REPLY integers of the script's answer
 * into *answer, its result in milliseconds rounded up as the local
 * limiter's.  0, or -1 for an answer the script cannot give (a negative
 * or huge number, an admission with a retry time, a refusal without one):
 * the caller then decides locally.
 */
int tenant_rate_redis_result(const int64_t *v,
    tenant_rate_redis_answer_t *answer);

/*
 * True for an error reply (its text, without the "-") that says the
 * script is not loaded ("NOSCRIPT ..."): load it (SCRIPT LOAD) and send
 * the EVALSHA again.
 */
int tenant_rate_redis_noscript(const char *err, size_t len);

/*
 * The over-limit hold, as Envoy's local over-limit cache: after an answer
 * about a key, sent_us being the local time at which the request was
 * sent to Redis (before Redis ran the script: so the hold never outlasts
 * the refusal), a refusal holds the key until sent_us + retry_after_us; an
 * admission lifts the hold.  Until then no other gateway can make the key
 * pass sooner (requests only use quota, and a key's rate is in its name),
 * so tenant_rate_hold_check() refuses without asking.
 */
void tenant_rate_hold_set(tenant_rate_hold_t *hold,
    const tenant_rate_redis_answer_t *answer, int64_t sent_us);

/*
 * 1 if the key is held at now_us: *res is the refusal (retry_after_ms and
 * reset_ms counted down from the held answer, rounded up); 0: ask Redis.
 */
int tenant_rate_hold_check(const tenant_rate_hold_t *hold, int64_t now_us,
    tenant_rate_result_t *res);


#endif /* _TENANT_RATELIMIT_REDIS_H_INCLUDED_ */
