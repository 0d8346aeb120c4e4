/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Unit tests for tenant_resp.c: commands encoded and parsed back, a table
 * of replies of every RESP2 type (what the gateway's Redis client gets:
 * EVALSHA's array of integers, NOSCRIPT, SCRIPT LOAD's SHA1, AUTH and
 * SELECT answers), protocol errors and bounds, a pipelined stream split at
 * every byte and every pair of bytes, and REDIS_URL.
 *
 * Every buffer the parser reads is a heap block of exactly the bytes it
 * is given, so that valgrind (make test-valgrind) sees a read beyond.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tenant_resp.h"


#define NVALUES     64
#define MAX_STRING  1024
#define MAX_DEPTH   4

#define SHA  "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"


typedef struct {
    const char  *in;          /* one reply, maybe followed by others */
    size_t       len;         /* 0: strlen(in) */
    int          rc;
    size_t       used;        /* OK: 0 is the whole input */
    const char  *want;        /* OK: dump(); INVALID: the reason */
} resp_case_t;


typedef struct {
    const char  *url;
    const char  *want;        /* "host port db user password", or the
                               * refusal's text after "the Redis URL " */
} url_case_t;


static void test_encode(void);
static void test_replies(void);
static void test_bounds(void);
static void test_again(void);
static void test_splits(void);
static void test_helpers(void);
static void test_urls(void);
static int parse(tenant_resp_parser_t *p, const char *in, size_t len,
    size_t *used);
static const char *dump(const tenant_resp_value_t *values);
static size_t dump_value(const tenant_resp_value_t *values, size_t i,
    char *out, size_t *o, size_t size);


static tenant_resp_value_t  values[NVALUES];


int
main(void)
{
    test_encode();
    test_replies();
    test_bounds();
    test_again();
    test_splits();
    test_helpers();
    test_urls();

    return done_testing();
}


static void
test_encode(void)
{
    int                   rc;
    size_t                n, used, i;
    unsigned char         buf[256];
    tenant_resp_arg_t     argv[16];
    tenant_resp_parser_t  p;

    static const unsigned char  bin[] = { 'a', '\r', '\n', 0, 0xff, '$' };

    argv[0].data = (const unsigned char *) "PING";
    argv[0].len = 4;

    is_int(tenant_resp_command_len(argv, 1), 14, "PING: 14 bytes");

    n = tenant_resp_command(buf, sizeof(buf), argv, 1);
    ok(n == 14 && memcmp(buf, "*1\r\n$4\r\nPING\r\n", 14) == 0,
       "PING encoded");

    is_int(tenant_resp_command_len(argv, 0), 0, "no argument: length 0");
    is_int(tenant_resp_command(buf, sizeof(buf), argv, 0), 0,
           "no argument: nothing written");

    /* EVALSHA sha 1 key arg, a binary argument and an empty one */

    argv[0].data = (const unsigned char *) "EVALSHA";
    argv[0].len = 7;
    argv[1].data = (const unsigned char *) SHA;
    argv[1].len = 40;
    argv[2].data = (const unsigned char *) "1";
    argv[2].len = 1;
    argv[3].data = bin;
    argv[3].len = sizeof(bin);
    argv[4].data = NULL;
    argv[4].len = 0;

    n = tenant_resp_command_len(argv, 5);
    is_int(n, 4 + 13 + 47 + 7 + 12 + 6, "EVALSHA: its length computed");

    memset(buf, 'X', sizeof(buf));
    is_int(tenant_resp_command(buf, n - 1, argv, 5), 0,
           "a buffer one byte short: 0");
    ok(buf[0] == 'X', "a buffer one byte short: nothing written");

    memset(buf, 'X', sizeof(buf));
    is_int(tenant_resp_command(buf, n, argv, 5), n,
           "a buffer of exactly its length");
    ok(buf[n] == 'X', "nothing written beyond it");
    ok(memcmp(buf, "*5\r\n$7\r\nEVALSHA\r\n$40\r\n" SHA "\r\n$1\r\n1\r\n"
                   "$6\r\na\r\n\0\xff$\r\n$0\r\n\r\n", n) == 0,
       "EVALSHA encoded, binary argument as it is");

    /* parsed back: an array of the same bulk strings */

    tenant_resp_parser_init(&p, values, NVALUES, MAX_STRING, 1);
    rc = parse(&p, (const char *) buf, n, &used);
    ok(rc == TENANT_RESP_OK && used == n && values[0].len == 5,
       "the command parses as a reply of 5 bulk strings");

    for (i = 0; rc == TENANT_RESP_OK && i < 5; i++) {
        ok(values[1 + i].type == TENANT_RESP_BULK
           && values[1 + i].len == argv[i].len
           && (argv[i].len == 0
               || memcmp(values[1 + i].data, argv[i].data, argv[i].len) == 0),
           "argument %zu parses back the same", i);
    }

    /* 12 arguments: a two-digit count */

    for (i = 0; i < 12; i++) {
        argv[i].data = (const unsigned char *) "k";
        argv[i].len = 1;
    }

    n = tenant_resp_command(buf, sizeof(buf), argv, 12);
    ok(n == 5 + 12 * 7 && memcmp(buf, "*12\r\n$1\r\nk\r\n", 12) == 0,
       "12 arguments: *12");

    /* lengths that do not fit */

    argv[0].len = SIZE_MAX - 5;
    argv[1].len = 1;
    is_int(tenant_resp_command_len(argv, 1), 0,
           "an argument of SIZE_MAX - 5 bytes: 0, no overflow");
    argv[0].len = SIZE_MAX / 2;
    argv[1].len = SIZE_MAX / 2;
    is_int(tenant_resp_command_len(argv, 2), 0,
           "two arguments of SIZE_MAX / 2: 0, no overflow");
}


static void
test_replies(void)
{
    int                   rc;
    size_t                i, len, used;
    const char           *got;
    tenant_resp_parser_t  p;

    static const resp_case_t  cases[] = {

        /* simple strings and errors */
        { "+OK\r\n", 0, TENANT_RESP_OK, 0, "+OK" },
        { "+PONG\r\n", 0, TENANT_RESP_OK, 0, "+PONG" },
        { "+\r\n", 0, TENANT_RESP_OK, 0, "+" },
        { "-ERR invalid password\r\n", 0, TENANT_RESP_OK, 0,
          "-ERR invalid password" },
        { "-NOSCRIPT No matching script. Please use EVAL.\r\n", 0,
          TENANT_RESP_OK, 0, "-NOSCRIPT No matching script. Please use EVAL." },
        { "-ERR DB index is out of range\r\n", 0, TENANT_RESP_OK, 0,
          "-ERR DB index is out of range" },
        { "+a\tb$*:\r\n", 0, TENANT_RESP_OK, 0, "+a\\x09b$*:" },

        /* integers */
        { ":0\r\n", 0, TENANT_RESP_OK, 0, ":0" },
        { ":1\r\n", 0, TENANT_RESP_OK, 0, ":1" },
        { ":-1\r\n", 0, TENANT_RESP_OK, 0, ":-1" },
        { ":9223372036854775807\r\n", 0, TENANT_RESP_OK, 0,
          ":9223372036854775807" },
        { ":-9223372036854775808\r\n", 0, TENANT_RESP_OK, 0,
          ":-9223372036854775808" },

        /* bulk strings */
        { "$0\r\n\r\n", 0, TENANT_RESP_OK, 0, "$0:" },
        { "$3\r\nabc\r\n", 0, TENANT_RESP_OK, 0, "$3:abc" },
        { "$40\r\n" SHA "\r\n", 0, TENANT_RESP_OK, 0, "$40:" SHA },
        { "$6\r\na\r\nb\0\xff\r\n", 12, TENANT_RESP_OK, 0,
          "$6:a\\x0d\\x0ab\\x00\\xff" },
        { "$-1\r\n", 0, TENANT_RESP_OK, 0, "nil" },

        /* arrays */
        { "*0\r\n", 0, TENANT_RESP_OK, 0, "[]" },
        { "*-1\r\n", 0, TENANT_RESP_OK, 0, "nil" },
        { "*4\r\n:1\r\n:99\r\n:0\r\n:60000\r\n", 0, TENANT_RESP_OK, 0,
          "[:1,:99,:0,:60000]" },
        { "*2\r\n*1\r\n:1\r\n*0\r\n", 0, TENANT_RESP_OK, 0, "[[:1],[]]" },
        { "*5\r\n+OK\r\n-ERR x\r\n$-1\r\n*-1\r\n$2\r\nhi\r\n", 0,
          TENANT_RESP_OK, 0, "[+OK,-ERR x,nil,nil,$2:hi]" },
        { "*3\r\n*2\r\n*1\r\n:7\r\n:8\r\n:9\r\n*1\r\n$1\r\nz\r\n", 0,
          TENANT_RESP_OK, 0, "[[[:7],:8],:9,[$1:z]]" },
        { "*1\r\n*1\r\n*1\r\n*1\r\n:4\r\n", 0, TENANT_RESP_OK, 0,
          "[[[[:4]]]]" },

        /* the next reply's bytes are left alone */
        { "+OK\r\n:1\r\n", 0, TENANT_RESP_OK, 5, "+OK" },
        { "$1\r\n\r\r\n+x", 0, TENANT_RESP_OK, 7, "$1:\\x0d" },
        { "*1\r\n:5\r\n*1\r\n", 0, TENANT_RESP_OK, 8, "[:5]" },

        /* lines: CRLF and nothing else */
        { "+OK\n", 0, TENANT_RESP_INVALID, 0,
          "a line feed without a carriage return" },
        { "+O\rK\r\n", 0, TENANT_RESP_INVALID, 0,
          "a carriage return without a line feed" },
        { "+OK\r\r\n", 0, TENANT_RESP_INVALID, 0,
          "a carriage return without a line feed" },
        { ":1\n\r", 0, TENANT_RESP_INVALID, 0,
          "a line feed without a carriage return" },
        { "$3\r\nabcd\r\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is not followed by CRLF" },
        { "$3\r\nab\r\n\r\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is not followed by CRLF" },
        { "$3\r\nabc\n\r", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is not followed by CRLF" },
        { "$0\r\n\n", 0, TENANT_RESP_AGAIN, 0, NULL },
        { "$0\r\n\n\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is not followed by CRLF" },

        /* types */
        { "\r\n", 0, TENANT_RESP_INVALID, 0, "an unknown type byte" },
        { "OK\r\n", 0, TENANT_RESP_INVALID, 0, "an unknown type byte" },
        { "\0", 1, TENANT_RESP_INVALID, 0, "an unknown type byte" },
        { "*1\r\nx", 0, TENANT_RESP_INVALID, 0, "an unknown type byte" },
        { "_\r\n", 0, TENANT_RESP_INVALID, 0,
          "a RESP3 type (this client speaks RESP2: no HELLO 3)" },
        { "%1\r\n", 0, TENANT_RESP_INVALID, 0,
          "a RESP3 type (this client speaks RESP2: no HELLO 3)" },
        { ">3\r\n", 0, TENANT_RESP_INVALID, 0,
          "a RESP3 type (this client speaks RESP2: no HELLO 3)" },
        { ",1.5\r\n", 0, TENANT_RESP_INVALID, 0,
          "a RESP3 type (this client speaks RESP2: no HELLO 3)" },
        { "#t\r\n", 0, TENANT_RESP_INVALID, 0,
          "a RESP3 type (this client speaks RESP2: no HELLO 3)" },

        /* integers as Redis writes them, and only those */
        { ":\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":-\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":+1\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":01\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":-0\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":1a\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ": 1\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":1.0\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid integer" },
        { ":9223372036854775808\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid integer" },
        { ":-9223372036854775809\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid integer" },
        { ":99999999999999999999\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid integer" },
        { ":18446744073709551616\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid integer" },
        { ":123456789012345678901\r\n", 0, TENANT_RESP_INVALID, 0,
          "a number's line is too long" },
        { ":123456789012345678901", 0, TENANT_RESP_INVALID, 0,
          "a number's line is too long" },

        /* lengths: -1 or plain decimal */
        { "$-2\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$-0\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$-10\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$-9223372036854775808\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$01\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$+1\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "$1x\r\n", 0, TENANT_RESP_INVALID, 0,
          "an invalid bulk string length" },
        { "*-2\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid array length" },
        { "*00\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid array length" },
        { "*\r\n", 0, TENANT_RESP_INVALID, 0, "an invalid array length" },

        /* lengths claimed: refused at once, before their bytes */
        { "$1025\r\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is longer than the limit" },
        { "$9223372036854775807\r\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is longer than the limit" },
        { "$18446744073709551615\r\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is longer than the limit" },
        { "$99999999999999999999\r\n", 0, TENANT_RESP_INVALID, 0,
          "a bulk string is longer than the limit" },
        { "*64\r\n", 0, TENANT_RESP_INVALID, 0,
          "the reply has more values than the limit" },
        { "*4294967296\r\n", 0, TENANT_RESP_INVALID, 0,
          "the reply has more values than the limit" },
        { "*18446744073709551615\r\n", 0, TENANT_RESP_INVALID, 0,
          "the reply has more values than the limit" },

        /* a bulk string of the limit waits for its bytes */
        { "$1024\r\n", 0, TENANT_RESP_AGAIN, 0, NULL },
        { "*63\r\n", 0, TENANT_RESP_AGAIN, 0, NULL },

        /* depth: 4 */
        { "*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n", 0, TENANT_RESP_INVALID, 0,
          "arrays are nested deeper than the limit" },
        { "*1\r\n*1\r\n*1\r\n*1\r\n*-1\r\n", 0, TENANT_RESP_OK, 0,
          "[[[[nil]]]]" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = cases[i].len ? cases[i].len : strlen(cases[i].in);

        tenant_resp_parser_init(&p, values, NVALUES, MAX_STRING, MAX_DEPTH);
        rc = parse(&p, cases[i].in, len, &used);

        if (rc != cases[i].rc) {
            ok(0, "reply %zu: rc %d, expected %d (%s)", i, rc, cases[i].rc,
               rc == TENANT_RESP_INVALID ? p.error : "");
            continue;
        }

        if (rc == TENANT_RESP_OK) {
            got = dump(values);

            if (!tap_ok(used == (cases[i].used ? cases[i].used : len)
                        && strcmp(got, cases[i].want) == 0,
                        __FILE__, __LINE__, "reply %zu: %s", i,
                        cases[i].want))
            {
                printf("#   got: '%s', %zu bytes\n", got, used);
            }

        } else if (rc == TENANT_RESP_INVALID) {
            is_str(p.error, cases[i].want, "reply %zu refused: %s", i,
                   cases[i].want);

            /* and for good: the framing is lost */

            rc = parse(&p, "+OK\r\n", 5, &used);
            is_int(rc, TENANT_RESP_INVALID, "reply %zu: the next call fails "
                   "too", i);

        } else {
            ok(1, "reply %zu: needs more", i);
        }
    }
}


static void
test_bounds(void)
{
    int                   rc;
    size_t                used;
    tenant_resp_parser_t  p;
    tenant_resp_value_t   few[5];

    ok(tenant_resp_parser_init(&p, values, 0, 1, 1) == -1,
       "init: no value refused");
    ok(tenant_resp_parser_init(&p, NULL, 5, 1, 1) == -1,
       "init: no table refused");
    ok(tenant_resp_parser_init(&p, values, 5, 1, TENANT_RESP_DEPTH_MAX + 1)
       == -1, "init: depth over TENANT_RESP_DEPTH_MAX refused");
    ok(parse(&p, "+OK\r\n", 5, &used) == TENANT_RESP_INVALID,
       "a parser refused at init parses nothing");
    ok(tenant_resp_parser_init(&p, values, 5, 1, TENANT_RESP_DEPTH_MAX) == 0,
       "init: depth TENANT_RESP_DEPTH_MAX");

    /* strings of up to 8 bytes */

    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "+12345678\r\n", 11, &used) == TENANT_RESP_OK,
       "a simple string of the limit");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "+123456789", 10, &used) == TENANT_RESP_INVALID,
       "a simple string over the limit: refused before its end");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "-123456789\r\n", 12, &used) == TENANT_RESP_INVALID,
       "an error over the limit");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "$8\r\n12345678\r\n", 14, &used) == TENANT_RESP_OK,
       "a bulk string of the limit");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "$9\r\n", 4, &used) == TENANT_RESP_INVALID,
       "a bulk string over the limit: refused before its bytes");

    /* 5 values: the array and 4 elements, at any depth */

    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", 20, &used)
       == TENANT_RESP_OK, "5 values in 5");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "*5\r\n", 4, &used) == TENANT_RESP_INVALID,
       "6 values in 5: refused at the array's line");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "*2\r\n*2\r\n:1\r\n:2\r\n*0\r\n", 20, &used)
       == TENANT_RESP_OK, "5 values nested in 5");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    rc = parse(&p, "*2\r\n*3\r\n", 8, &used);
    ok(rc == TENANT_RESP_INVALID,
       "the inner array's count with the outer's elements to come: "
       "refused at once");
    tenant_resp_parser_init(&p, few, 5, 8, 2);
    ok(parse(&p, "*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n", 20, &used)
       == TENANT_RESP_INVALID, "6 values in 5, nested");

    /* depth 0: no arrays */

    tenant_resp_parser_init(&p, few, 5, 8, 0);
    ok(parse(&p, ":1\r\n", 4, &used) == TENANT_RESP_OK, "depth 0: integer");
    tenant_resp_parser_init(&p, few, 5, 8, 0);
    ok(parse(&p, "*-1\r\n", 5, &used) == TENANT_RESP_OK,
       "depth 0: null array");
    tenant_resp_parser_init(&p, few, 5, 8, 0);
    ok(parse(&p, "*0\r\n", 4, &used) == TENANT_RESP_INVALID,
       "depth 0: an empty array refused");

    /* depth 16 */

    tenant_resp_parser_init(&p, values, NVALUES, 8, TENANT_RESP_DEPTH_MAX);
    ok(parse(&p, "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"
                 "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
             16 * 4 + 4, &used) == TENANT_RESP_OK, "16 arrays deep");
    tenant_resp_parser_init(&p, values, NVALUES, 8, TENANT_RESP_DEPTH_MAX);
    ok(parse(&p, "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"
                 "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n",
             17 * 4, &used) == TENANT_RESP_INVALID, "17 arrays deep");
}


/* resuming: the same bytes again, in another buffer, then more */

static void
test_again(void)
{
    int                   rc;
    size_t                used;
    tenant_resp_parser_t  p;

    tenant_resp_parser_init(&p, values, NVALUES, MAX_STRING, MAX_DEPTH);

    ok(parse(&p, "", 0, &used) == TENANT_RESP_AGAIN, "nothing: again");
    ok(parse(&p, "*2\r", 3, &used) == TENANT_RESP_AGAIN, "*2 CR: again");
    ok(parse(&p, "*2\r\n$3\r\nab", 10, &used) == TENANT_RESP_AGAIN,
       "half a bulk string: again");
    ok(parse(&p, "*2\r", 3, &used) == TENANT_RESP_INVALID,
       "fewer bytes than before: refused");

    tenant_resp_parser_init(&p, values, NVALUES, MAX_STRING, MAX_DEPTH);
    parse(&p, "*2\r\n$3\r\nab", 10, &used);
    rc = parse(&p, "*2\r\n$3\r\nabc\r\n-NOSCRIPT x\r\n", 26, &used);
    ok(rc == TENANT_RESP_OK && used == 26
       && strcmp(dump(values), "[$3:abc,-NOSCRIPT x]") == 0,
       "then the rest: the reply");

    ok(parse(&p, ":7\r\n", 4, &used) == TENANT_RESP_OK
       && values[0].integer == 7, "the next call: the next reply");
}


/*
 * A pipelined stream of the replies the gateway's client gets, cut at
 * every byte, at every pair of bytes, and fed one byte at a time: the
 * same replies every time.
 */

static const char  stream[] =
    "+OK\r\n"                                           /* AUTH */
    "+OK\r\n"                                           /* SELECT */
    "$40\r\n" SHA "\r\n"                                /* SCRIPT LOAD */
    "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    "*4\r\n:1\r\n:99\r\n:0\r\n:60000\r\n"               /* EVALSHA */
    "*2\r\n*0\r\n$-1\r\n"
    ":-9223372036854775808\r\n"
    "$5\r\n\r\n\r\n\0\r\n"
    "*-1\r\n"
    "+PONG\r\n";

static const char  *stream_want[] = {
    "+OK", "+OK", "$40:" SHA,
    "-NOSCRIPT No matching script. Please use EVAL.",
    "[:1,:99,:0,:60000]", "[[],nil]", ":-9223372036854775808",
    "$5:\\x0d\\x0a\\x0d\\x0a\\x00", "nil", "+PONG"
};

#define STREAM_REPLIES  (sizeof(stream_want) / sizeof(stream_want[0]))


/* feeds stream in chunks ending at cuts[], then the rest; 0 if all match */

static int
feed(const size_t *cuts, size_t ncuts, int bytewise)
{
    int                   rc;
    size_t                total, have, start, used, k, next;
    char                 *buf;
    tenant_resp_parser_t  p;

    total = sizeof(stream) - 1;
    have = 0;
    start = 0;
    k = 0;
    next = 0;

    tenant_resp_parser_init(&p, values, NVALUES, MAX_STRING, MAX_DEPTH);

    for ( ;; ) {
        buf = malloc(have - start + 1);
        if (buf == NULL) {
            return -1;
        }

        memcpy(buf, stream + start, have - start);
        rc = tenant_resp_parse(&p, (unsigned char *) buf, have - start,
                               &used);

        if (rc == TENANT_RESP_OK) {
            if (k == STREAM_REPLIES || strcmp(dump(values), stream_want[k]))
            {
                free(buf);
                return -1;
            }

            k++;
            start += used;
            free(buf);
            continue;
        }

        free(buf);

        if (rc != TENANT_RESP_AGAIN || have == total) {
            break;
        }

        /* the next read */

        if (bytewise) {
            have++;

        } else {
            have = (next < ncuts) ? cuts[next++] : total;
        }
    }

    return (k == STREAM_REPLIES && start == total && rc == TENANT_RESP_AGAIN)
           ? 0 : -1;
}


static void
test_splits(void)
{
    size_t  total, a, b, bad, pairs, cuts[2];

    total = sizeof(stream) - 1;

    cuts[0] = total;
    ok(feed(cuts, 1, 0) == 0, "the stream in one read: %zu replies",
       STREAM_REPLIES);

    bad = 0;

    for (a = 0; a <= total; a++) {
        cuts[0] = a;
        bad += (feed(cuts, 1, 0) != 0);
    }

    is_int(bad, 0, "the stream cut at each of its %zu bytes", total + 1);

    bad = 0;
    pairs = 0;

    for (a = 1; a < total; a++) {
        for (b = a; b < total; b++) {
            cuts[0] = a;
            cuts[1] = b;
            bad += (feed(cuts, 2, 0) != 0);
            pairs++;
        }
    }

    is_int(bad, 0, "the stream cut at each of %zu pairs of bytes", pairs);

    ok(feed(NULL, 0, 1) == 0, "the stream one byte at a time");
}


static void
test_helpers(void)
{
    int64_t               ints[4];
    size_t                used;
    tenant_resp_parser_t  p;

    tenant_resp_parser_init(&p, values, NVALUES, MAX_STRING, MAX_DEPTH);

    parse(&p, "-NOSCRIPT No matching script. Please use EVAL.\r\n", 48,
          &used);
    ok(tenant_resp_error_code(&values[0], "NOSCRIPT"), "NOSCRIPT recognised");
    ok(!tenant_resp_error_code(&values[0], "ERR"), "NOSCRIPT is not ERR");
    ok(!tenant_resp_error_code(&values[0], "NOSCRIP"),
       "the whole code: NOSCRIP is not it");

    parse(&p, "-NOSCRIPT\r\n", 11, &used);
    ok(tenant_resp_error_code(&values[0], "NOSCRIPT"), "a code alone");

    parse(&p, "-NOSCRIPTS x\r\n", 14, &used);
    ok(!tenant_resp_error_code(&values[0], "NOSCRIPT"),
       "NOSCRIPTS is not NOSCRIPT");

    parse(&p, "+NOSCRIPT\r\n", 11, &used);
    ok(!tenant_resp_error_code(&values[0], "NOSCRIPT"),
       "a simple string is no error");

    parse(&p, "-WRONGPASS invalid username-password pair or user is "
              "disabled.\r\n", 65, &used);
    ok(tenant_resp_error_code(&values[0], "WRONGPASS"), "WRONGPASS");

    parse(&p, "+OK\r\n", 5, &used);
    ok(tenant_resp_simple_is(&values[0], "OK"), "+OK is OK");
    ok(!tenant_resp_simple_is(&values[0], "O"), "+OK is not O");

    parse(&p, "$2\r\nOK\r\n", 8, &used);
    ok(!tenant_resp_simple_is(&values[0], "OK"), "$2 OK is no simple string");

    parse(&p, "*4\r\n:1\r\n:99\r\n:0\r\n:60000\r\n", 26, &used);
    ok(tenant_resp_integers(values, ints, 4) == 0 && ints[0] == 1
       && ints[1] == 99 && ints[2] == 0 && ints[3] == 60000,
       "EVALSHA's 4 integers");
    ok(tenant_resp_integers(values, ints, 3) == -1, "not 3 integers");

    parse(&p, "*2\r\n:1\r\n$1\r\n2\r\n", 15, &used);
    ok(tenant_resp_integers(values, ints, 2) == -1,
       "an array with a bulk string is not integers");

    parse(&p, "*2\r\n*1\r\n:1\r\n:2\r\n", 16, &used);
    ok(tenant_resp_integers(values, ints, 2) == -1,
       "an array with an array is not integers");

    parse(&p, ":1\r\n", 4, &used);
    ok(tenant_resp_integers(values, ints, 1) == -1,
       "an integer is not an array of one");
}


static void
test_urls(void)
{
    int                 rc;
    char                err[256], got[1100];
    size_t              i;
    tenant_redis_url_t  u;

    static const url_case_t  cases[] = {

        /* what Render's Key Value gives */
        { "redis://red-cu1abc2def3ghi4jk5l0:6379",
          "red-cu1abc2def3ghi4jk5l0 6379 0 - -" },
        { "redis://red-xxxx:p4ssW0rd@red-xxxx:6379",
          "red-xxxx 6379 0 red-xxxx p4ssW0rd" },
        { "redis://default:s3cret@red-xxxx:6379/2",
          "red-xxxx 6379 2 default s3cret" },
        { "redis://:s3cret@10.0.0.5:6380", "10.0.0.5 6380 0  s3cret" },

        /* defaults, db, case */
        { "redis://localhost", "localhost 6379 0 - -" },
        { "redis://localhost/", "localhost 6379 0 - -" },
        { "redis://localhost/0", "localhost 6379 0 - -" },
        { "redis://localhost/15", "localhost 6379 15 - -" },
        { "REDIS://Host_1.example.com:1/9", "Host_1.example.com 1 9 - -" },
        { "redis://h:65535", "h 65535 0 - -" },

        /* IPv6 */
        { "redis://[::1]:6380/3", "::1 6380 3 - -" },
        { "redis://[::1]", "::1 6379 0 - -" },
        { "redis://u:p@[2001:db8::7]:7000", "2001:db8::7 7000 0 u p" },
        { "redis://[::ffff:127.0.0.1]", "::ffff:127.0.0.1 6379 0 - -" },

        /* percent-decoding of the user and password only */
        { "redis://us%65r:p%40ss%3Aw%2Fo%3frd%25@h",
          "h 6379 0 user p@ss:w/o?rd%" },
        { "redis://u:a:b@h", "h 6379 0 u a:b" },
        { "redis://u:!$&'()*+,;=-._~@h", "h 6379 0 u !$&'()*+,;=-._~" },
        { "redis://u:%c3%a9@h", "h 6379 0 u \xc3\xa9" },

        /* refused */
        { "rediss://red-xxxx:6379",
          "is rediss:// (TLS), which the gateway's Redis client does not "
          "speak: use the instance's internal redis:// URL" },
        { "REDISS://u:p@h", "is rediss:// (TLS), which the gateway's Redis "
          "client does not speak: use the instance's internal redis:// URL" },
        { "http://h:6379", "does not start with redis://" },
        { "redis:/h", "does not start with redis://" },
        { "red-xxxx:6379", "does not start with redis://" },
        { "", "does not start with redis://" },
        { "unix:///tmp/redis.sock", "does not start with redis://" },
        { "redis://", "has an empty host" },
        { "redis://:6379", "has an empty host" },
        { "redis://u:p@", "has an empty host" },
        { "redis://u:p@:6379/1", "has an empty host" },
        { "redis://h:0", "has a port other than a number 1 .. 65535" },
        { "redis://h:65536", "has a port other than a number 1 .. 65535" },
        { "redis://h:99999", "has a port other than a number 1 .. 65535" },
        { "redis://h:100000", "has a port other than a number 1 .. 65535" },
        { "redis://h:06379", "has a port other than a number 1 .. 65535" },
        { "redis://h:+6379", "has a port other than a number 1 .. 65535" },
        { "redis://h:-1", "has a port other than a number 1 .. 65535" },
        { "redis://h:63a", "has a port other than a number 1 .. 65535" },
        { "redis://h:6379:1", "has a port other than a number 1 .. 65535" },
        { "redis://h:", "has an empty port after ':'" },
        { "redis://h/16", "has a path other than a database number /0 .. /15" },
        { "redis://h/-1", "has a path other than a database number /0 .. /15" },
        { "redis://h/+1", "has a path other than a database number /0 .. /15" },
        { "redis://h/01", "has a path other than a database number /0 .. /15" },
        { "redis://h/1x", "has a path other than a database number /0 .. /15" },
        { "redis://h/x1", "has a path other than a database number /0 .. /15" },
        { "redis://h/1/", "has a path other than a database number /0 .. /15" },
        { "redis://h//1", "has a path other than a database number /0 .. /15" },
        { "redis://h/db/1",
          "has a path other than a database number /0 .. /15" },
        { "redis://h/4294967297",
          "has a path other than a database number /0 .. /15" },
        { "redis://h:6379?db=1", "has a query or fragment ('?' or '#')" },
        { "redis://h/1?timeout=5", "has a query or fragment ('?' or '#')" },
        { "redis://h#x", "has a query or fragment ('?' or '#')" },
        { "redis://h:6379\n", "has a control character (a line break at its "
          "end?)" },
        { "redis://h\r", "has a control character (a line break at its "
          "end?)" },
        { "redis://h\t", "has a control character (a line break at its "
          "end?)" },
        { "redis://h\x7f", "has a control character (a line break at its "
          "end?)" },
        { "redis://h ", "has a space or a non-ASCII byte" },
        { "redis://h\xc3\xa9", "has a space or a non-ASCII byte" },
        { "redis://u:p@h@h2", "has more than one '@': percent-encode '@' in "
          "the password as %40" },
        { "redis://u:pa/ss@h", "has an '@' after the host: percent-encode "
          "'/', '?', '#' and '@' in the user and password" },
        { "redis://u:pa#ss@h", "has an '@' after the host: percent-encode "
          "'/', '?', '#' and '@' in the user and password" },
        { "redis://u@h", "has a user without a password (for a password "
          "alone: redis://:PASSWORD@host)" },
        { "redis://u:@h", "has an empty password" },
        { "redis://:@h", "has an empty password" },
        { "redis://u:p%4@h", "has an invalid percent-encoding in the user or "
          "password" },
        { "redis://u:p%@h", "has an invalid percent-encoding in the user or "
          "password" },
        { "redis://u:p%zz@h", "has an invalid percent-encoding in the user "
          "or password" },
        { "redis://u%4:p@h", "has an invalid percent-encoding in the user or "
          "password" },
        { "redis://u:p%00@h", "has %00 in the user or password" },
        { "redis://u:p\"@h", "has a character in the user or password that "
          "must be percent-encoded" },
        { "redis://u:p[@h", "has a character in the user or password that "
          "must be percent-encoded" },
        { "redis://h%41", "has a host name with a byte other than "
          "[A-Za-z0-9.-_]" },
        { "redis://h!", "has a host name with a byte other than "
          "[A-Za-z0-9.-_]" },
        { "redis://::1", "has an empty host" },
        { "redis://[::1", "has an IPv6 address without its ']'" },
        { "redis://[]", "has an invalid IPv6 address" },
        { "redis://[::g]", "has an invalid IPv6 address" },
        { "redis://[fe80::1%25eth0]", "has an IPv6 zone (%25eth0), which is "
          "not supported" },
        { "redis://[127.0.0.1]", "has an invalid IPv6 address" },
        { "redis://[1:2:3:4:5:6:7:8:9:a:b:c:d:e:f:0:1:2:3]",
          "has an invalid IPv6 address" },
        { "redis://[::1]x", "has something other than ':port' after the "
          "IPv6 address" },
        { "redis://[::1]:", "has an empty port after ':'" },
        { "redis://h]", "has an invalid IPv6 address" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        rc = tenant_redis_url_parse(&u, cases[i].url, strlen(cases[i].url),
                                    err, sizeof(err));

        if (rc == 0) {
            snprintf(got, sizeof(got), "%s %u %u %s %s", u.host, u.port, u.db,
                     u.auth ? u.user : "-", u.auth ? u.password : "-");

            ok(u.host_len == strlen(u.host)
               && u.user_len == strlen(u.user)
               && u.password_len == strlen(u.password)
               && u.ipv6 == (strchr(u.host, ':') != NULL),
               "url %zu: lengths and flags", i);

        } else {
            snprintf(got, sizeof(got), "%s",
                     strncmp(err, "the Redis URL ", 14) == 0 ? err + 14
                                                              : err);

            ok(u.auth == 0 && u.password_len == 0 && u.password[0] == '\0',
               "url %zu: nothing kept of a refused URL", i);
        }

        is_str(got, cases[i].want, "url %zu", i);
    }

    /* never the password in a reason */

    rc = tenant_redis_url_parse(&u, "redis://u:Sup3rSecr3t@h:0", 25, err,
                                sizeof(err));
    ok(rc == -1 && strstr(err, "Sup3rSecr3t") == NULL,
       "a refused URL's reason has no password");

    /* lengths, and a length that cuts the string */

    memset(got, 'a', 600);
    memcpy(got, "redis://u:", 10);
    memcpy(got + 10 + 512, "@h", 3);
    rc = tenant_redis_url_parse(&u, got, strlen(got), err, sizeof(err));
    ok(rc == 0 && u.password_len == 512, "a password of 512 bytes");

    memset(got, 'a', 600);
    memcpy(got, "redis://u:", 10);
    memcpy(got + 10 + 513, "@h", 3);
    rc = tenant_redis_url_parse(&u, got, strlen(got), err, sizeof(err));
    is_str(rc == -1 ? err : "", "the Redis URL has a password longer than 512 "
           "bytes", "a password of 513 bytes refused");

    memset(got, 'h', 300);
    memcpy(got, "redis://", 8);
    got[8 + 254] = '\0';
    rc = tenant_redis_url_parse(&u, got, strlen(got), err, sizeof(err));
    is_str(rc == -1 ? err : "", "the Redis URL has a host name longer than "
           "253 bytes", "a host of 254 bytes refused");

    got[8 + 253] = '\0';
    rc = tenant_redis_url_parse(&u, got, strlen(got), err, sizeof(err));
    ok(rc == 0 && u.host_len == 253, "a host of 253 bytes");

    rc = tenant_redis_url_parse(&u, "redis://h:6379/1", 12, err, sizeof(err));
    ok(rc == 0 && u.port == 63 && u.db == 0 && strcmp(u.host, "h") == 0,
       "only len bytes are read");

    rc = tenant_redis_url_parse(&u, "redis://h", 9, err, 16);
    ok(rc == 0, "a short err buffer is enough for success");
    rc = tenant_redis_url_parse(&u, "redis://h:0", 11, err, 16);
    ok(rc == -1 && strlen(err) == 15, "a refusal cut to the err buffer");
}


/* a one-shot parse of in[0 .. len) from a heap block of exactly len bytes */

static int
parse(tenant_resp_parser_t *p, const char *in, size_t len, size_t *used)
{
    int             rc;
    unsigned char  *buf;

    static unsigned char  *last;

    /* the values of the last reply point into the last block: kept */

    free(last);

    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        printf("Bail out! malloc\n");
        exit(1);
    }

    memcpy(buf, in, len);
    rc = tenant_resp_parse(p, buf, len, used);

    last = buf;

    return rc;
}


/* "[:1,$3:abc,nil,+OK,-ERR x]", bytes outside ' ' .. '~' as \xNN */

static const char *
dump(const tenant_resp_value_t *vals)
{
    size_t       o;
    static char  out[4096];

    o = 0;
    dump_value(vals, 0, out, &o, sizeof(out));
    out[o < sizeof(out) ? o : sizeof(out) - 1] = '\0';

    return out;
}


static size_t
dump_value(const tenant_resp_value_t *vals, size_t i, char *out, size_t *o,
    size_t size)
{
    size_t                     k, j;
    const tenant_resp_value_t  *v;

    v = &vals[i];

#define PUT(...)                                                             \
    *o += (size_t) snprintf(out + (*o < size ? *o : size),                   \
                            *o < size ? size - *o : 0, __VA_ARGS__)

    switch (v->type) {

    case TENANT_RESP_SIMPLE:
    case TENANT_RESP_ERROR:
    case TENANT_RESP_BULK:
        if (v->type == TENANT_RESP_BULK) {
            PUT("$%zu:", v->len);
        } else {
            PUT("%c", v->type == TENANT_RESP_SIMPLE ? '+' : '-');
        }

        for (k = 0; k < v->len; k++) {
            if (v->data[k] >= ' ' && v->data[k] <= '~') {
                PUT("%c", v->data[k]);
            } else {
                PUT("\\x%02x", v->data[k]);
            }
        }

        return i + 1 == v->next ? v->next : (size_t) -1;

    case TENANT_RESP_INTEGER:
        PUT(":%lld", (long long) v->integer);
        return i + 1 == v->next ? v->next : (size_t) -1;

    case TENANT_RESP_NULL:
        PUT("nil");
        return i + 1 == v->next ? v->next : (size_t) -1;

    case TENANT_RESP_ARRAY:
        PUT("[");
        j = i + 1;

        for (k = 0; k < v->len && j != (size_t) -1; k++) {
            if (k) {
                PUT(",");
            }

            j = dump_value(vals, j, out, o, size);
        }

        PUT("]");

        if (j != v->next) {
            PUT("(bad next)");
        }

        return j;

    default:
        PUT("?");
        return (size_t) -1;
    }

#undef PUT
}
