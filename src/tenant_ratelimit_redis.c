/*
 * Copyright (C) ngx_tenant_module authors
 */


#include <string.h>

#include <openssl/evp.h>

#include "tenant_ratelimit_redis.h"


#define TENANT_RATE_REDIS_MAX_INT     ((uint64_t) 1 << 53)


/*
 * Lua 5.1 (Redis 7, Valkey).  Numbers are doubles: int() takes only whole
 * numbers in 0 .. 2^53, where they are exact.  For such a and b >= 1,
 * math.floor(a / b) is the exact floor: if a / b = k - r / b is not whole
 * (k whole, 1 <= r < b), it is below 2^53 / b, so half its ulp is below
 * 1 / b <= r / b, and rounding cannot reach k.  Numbers sent back to
 * Redis are formatted with "%d", not tostring(), which keeps 14 digits.
 */

#define TENANT_RATE_REDIS_LUA_HEAD                                           \
    "local MAX_NOW = 4503599627370496\n"                                     \
    "local MAX_TAU = 2251799813685248\n"                                     \
    "local MAX_INT = 9007199254740992\n"                                     \
    "local function int(s)\n"                                                \
    "  local v = tonumber(s)\n"                                              \
    "  if v and v >= 0 and v < MAX_INT and v == math.floor(v) then\n"        \
    "    return v\n"                                                         \
    "  end\n"                                                                \
    "  return nil\n"                                                         \
    "end\n"                                                                  \
    "local function idiv(a, b)\n"                                            \
    "  return math.floor(a / b)\n"                                           \
    "end\n"

/*
 * Redis's clock: TIME (seconds, microseconds) since TENANT_RATE_REDIS_EPOCH.
 * Calling TIME and then writing is allowed since scripts replicate their
 * effects (the default from Redis 5, the only way from Redis 7, and what
 * redis.replicate_commands() asks of Redis 3.2 and 4).  A key lives
 * until its state is in the past, rounded up to a millisecond.
 */

#define TENANT_RATE_REDIS_LUA_CLOCK                                          \
    "if redis.replicate_commands then redis.replicate_commands() end\n"      \
    "local clock = redis.call('TIME')\n"                                     \
    "local now = int((tonumber(clock[1]) - 1700000000) * 1000000\n"          \
    "                + tonumber(clock[2]))\n"                                \
    "local narg = #ARGV\n"                                                   \
    "local function lifetime(us)\n"                                          \
    "  return idiv(us + 999, 1000)\n"                                        \
    "end\n"

/*
 * GCRA as tenant_rate_check(): d is how far a key's state is ahead of
 * now (0 .. tau), a request passes if d + t <= tau.  A state beyond the
 * bucket (a clock that went back) is brought back to a full bucket.  The
 * first refusal ends the loop: the keys before it are not advanced, and
 * their answers are what they offer without this request, as
 * tenant_rate_refund() would leave them.
 */

#define TENANT_RATE_REDIS_LUA_GCRA                                           \
    "if not now or now >= MAX_NOW then\n"                                    \
    "  return redis.error_reply('ERR tenant: clock out of range')\n"         \
    "end\n"                                                                  \
    "local n = #KEYS\n"                                                      \
    "if n < 1 or narg ~= 2 * n then\n"                                       \
    "  return redis.error_reply('ERR tenant: expected t and tau per key')\n" \
    "end\n"                                                                  \
    "local reply, clamp, advance, seen = {}, {}, {}, {}\n"                   \
    "local function set(w)\n"                                                \
    "  redis.call('SET', w[1], string.format('%d', w[2]),\n"                 \
    "             'PX', string.format('%d', lifetime(w[3])))\n"              \
    "end\n"                                                                  \
    "for i = 1, n do\n"                                                      \
    "  local t, tau = int(ARGV[2 * i - 1]), int(ARGV[2 * i])\n"              \
    "  if not t or not tau or t < 1 or tau < t or tau > MAX_TAU then\n"      \
    "    return redis.error_reply('ERR tenant: bad t or tau')\n"             \
    "  end\n"                                                                \
    "  local tat = int(redis.call('GET', KEYS[i]))\n"                        \
    "  local d = 0\n"                                                        \
    "  if tat and tat > now then\n"                                          \
    "    d = tat - now\n"                                                    \
    "    if d > tau then\n"                                                  \
    "      d = tau\n"                                                        \
    "      clamp[#clamp + 1] = { KEYS[i], now + tau, tau }\n"                \
    "    end\n"                                                              \
    "  end\n"                                                                \
    "  local nd = d + t\n"                                                   \
    "  if nd > tau then\n"                                                   \
    "    for j = 1, i - 1 do\n"                                              \
    "      local s = seen[j]\n"                                              \
    "      reply[4 * j - 2] = idiv(s[2] - s[1], s[3])\n"                     \
    "      reply[4 * j] = s[1]\n"                                            \
    "    end\n"                                                              \
    "    for _, w in ipairs(clamp) do set(w) end\n"                          \
    "    reply[4 * i - 3] = 0\n"                                             \
    "    reply[4 * i - 2] = 0\n"                                             \
    "    reply[4 * i - 1] = nd - tau\n"                                      \
    "    reply[4 * i] = d\n"                                                 \
    "    return reply\n"                                                     \
    "  end\n"                                                                \
    "  seen[i] = { d, tau, t }\n"                                            \
    "  advance[i] = { KEYS[i], now + nd, nd }\n"                             \
    "  reply[4 * i - 3] = 1\n"                                               \
    "  reply[4 * i - 2] = idiv(tau - nd, t)\n"                               \
    "  reply[4 * i - 1] = 0\n"                                               \
    "  reply[4 * i] = nd\n"                                                  \
    "end\n"                                                                  \
    "for _, w in ipairs(advance) do set(w) end\n"                            \
    "return reply\n"


const char    tenant_rate_redis_lua_head[] = TENANT_RATE_REDIS_LUA_HEAD;
const char    tenant_rate_redis_lua_clock[] = TENANT_RATE_REDIS_LUA_CLOCK;
const char    tenant_rate_redis_lua_gcra[] = TENANT_RATE_REDIS_LUA_GCRA;

const char    tenant_rate_redis_script[] = TENANT_RATE_REDIS_LUA_HEAD
                                           TENANT_RATE_REDIS_LUA_CLOCK
                                           TENANT_RATE_REDIS_LUA_GCRA;

const size_t  tenant_rate_redis_script_len =
                                       sizeof(tenant_rate_redis_script) - 1;


static char *tenant_rate_redis_number(char *p, uint64_t n);
static uint64_t tenant_rate_redis_ms(uint64_t us);


int
tenant_rate_redis_sha1(char *hex)
{
    size_t          i;
    unsigned int    len;
    unsigned char   md[EVP_MAX_MD_SIZE];

    static const char  digits[] = "0123456789abcdef";

    if (EVP_Digest(tenant_rate_redis_script, tenant_rate_redis_script_len,
                   md, &len, EVP_sha1(), NULL)
        != 1 || len * 2 != TENANT_RATE_REDIS_SHA1_HEX)
    {
        hex[0] = '\0';
        return -1;
    }

    for (i = 0; i < len; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0xf];
    }

    hex[2 * len] = '\0';

    return 0;
}


size_t
tenant_rate_redis_key(char *buf, size_t size, const char *prefix,
    size_t prefix_len, const char *id, size_t id_len,
    const tenant_rate_t *rate, const char *value, size_t value_len)
{
    char      *p;
    char       tail[3 * 21];
    size_t     tail_len, len;
    uint64_t   burst;

    if (prefix == NULL) {
        prefix = TENANT_RATE_REDIS_PREFIX;
        prefix_len = sizeof(TENANT_RATE_REDIS_PREFIX) - 1;
    }

    if (prefix_len > TENANT_RATE_REDIS_PREFIX_MAX
        || id == NULL || id_len == 0 || id_len > TENANT_RATE_REDIS_ID_MAX
        || memchr(id, '}', id_len) != NULL
        || rate->limit == 0 || rate->window_ms == 0)
    {
        return 0;
    }

    if (value == NULL) {
        value_len = 0;
    }

    if (value_len > TENANT_RATE_REDIS_VALUE_MAX) {
        value_len = TENANT_RATE_REDIS_VALUE_MAX;
    }

    burst = rate->burst ? rate->burst : rate->limit;

    p = tail;
    *p++ = ':';
    p = tenant_rate_redis_number(p, rate->limit);
    *p++ = ':';
    p = tenant_rate_redis_number(p, rate->window_ms);
    *p++ = ':';
    p = tenant_rate_redis_number(p, burst);
    tail_len = (size_t) (p - tail);

    len = prefix_len + 1 + id_len + 1 + tail_len
          + (value_len ? 3 + value_len : 0);

    if (buf == NULL || len > size) {
        return 0;
    }

    p = buf;

    memcpy(p, prefix, prefix_len);
    p += prefix_len;
    *p++ = '{';
    memcpy(p, id, id_len);
    p += id_len;
    *p++ = '}';
    memcpy(p, tail, tail_len);
    p += tail_len;

    if (value_len) {
        memcpy(p, ":u:", 3);
        p += 3;
        memcpy(p, value, value_len);
        p += value_len;
    }

    return (size_t) (p - buf);
}


int
tenant_rate_redis_args(const tenant_rate_t *rate, uint64_t *t,
    uint64_t *tau)
{
    tenant_rate_bucket(rate, t, tau);

    return *tau > TENANT_RATE_REDIS_MAX_TAU ? -1 : 0;
}


int
tenant_rate_redis_result(const int64_t *v,
    tenant_rate_redis_answer_t *answer)
{
    int64_t  allowed, remaining, retry, reset;

    allowed = v[0];
    remaining = v[1];
    retry = v[2];
    reset = v[3];

    if (allowed < 0 || allowed > 1
        || remaining < 0 || (uint64_t) remaining >= TENANT_RATE_REDIS_MAX_INT
        || retry < 0 || (uint64_t) retry >= TENANT_RATE_REDIS_MAX_INT
        || reset < 0 || (uint64_t) reset >= TENANT_RATE_REDIS_MAX_INT
        || (allowed && retry != 0)
        || (!allowed && (retry == 0 || remaining != 0)))
    {
        return -1;
    }

    answer->result.allowed = (int) allowed;
    answer->result.remaining = (uint64_t) remaining;
    answer->result.retry_after_ms = tenant_rate_redis_ms((uint64_t) retry);
    answer->result.reset_ms = tenant_rate_redis_ms((uint64_t) reset);
    answer->retry_after_us = (uint64_t) retry;
    answer->reset_us = (uint64_t) reset;

    return 0;
}


int
tenant_rate_redis_noscript(const char *err, size_t len)
{
    return len >= 8 && memcmp(err, "NOSCRIPT", 8) == 0
           && (len == 8 || err[8] == ' ');
}


void
tenant_rate_hold_set(tenant_rate_hold_t *hold,
    const tenant_rate_redis_answer_t *answer, int64_t sent_us)
{
    /* the answer's times are below 2^53, sent_us a monotonic clock's:
     * no overflow */

    if (answer->result.allowed) {
        hold->until_us = 0;
        hold->reset_us = 0;
        return;
    }

    hold->until_us = sent_us + (int64_t) answer->retry_after_us;
    hold->reset_us = sent_us + (int64_t) answer->reset_us;
}


int
tenant_rate_hold_check(const tenant_rate_hold_t *hold, int64_t now_us,
    tenant_rate_result_t *res)
{
    if (hold->until_us == 0 || now_us >= hold->until_us) {
        return 0;
    }

    res->allowed = 0;
    res->remaining = 0;
    res->retry_after_ms = tenant_rate_redis_ms((uint64_t) (hold->until_us
                                                           - now_us));
    res->reset_ms = hold->reset_us > now_us
                    ? tenant_rate_redis_ms((uint64_t) (hold->reset_us
                                                       - now_us))
                    : 0;

    return 1;
}


/* Decimal digits of n at p (at most 20); the end. */

static char *
tenant_rate_redis_number(char *p, uint64_t n)
{
    char    digits[20];
    size_t  i;

    i = 0;

    do {
        digits[i++] = (char) ('0' + n % 10);
        n /= 10;
    } while (n);

    while (i) {
        *p++ = digits[--i];
    }

    return p;
}


/* Microseconds to milliseconds, rounded up, as tenant_rate_check(). */

static uint64_t
tenant_rate_redis_ms(uint64_t us)
{
    return us / 1000 + (us % 1000 != 0);
}
