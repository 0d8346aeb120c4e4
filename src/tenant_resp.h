/*
 * Copyright (C) ngx_tenant_module authors
 *
 * RESP2, the Redis protocol, without nginx: commands encoded as arrays of
 * bulk strings, replies parsed incrementally as their bytes arrive, and
 * the REDIS_URL of a Key Value instance.  The gateway's Redis client
 * (nginx events, timers, reconnects) calls these; unit tests and a fuzzer
 * call them directly.
 *
 * A reply is parsed into a flat table of values that the caller supplies
 * (no allocation at all), in pre-order: values[0] is the reply, an
 * array's elements follow it, each value's `next` is the index after it
 * and its elements.  Strings are views into the caller's buffer, not
 * copies.  The caller bounds everything: the longest string, the deepest
 * nesting of arrays, the number of values (the table's size).  A length
 * or count that the server claims is checked against these bounds as soon
 * as its line has arrived, before any of its bytes: nothing waits for, or
 * is sized by, what a server merely announces.
 */

#ifndef _TENANT_RESP_H_INCLUDED_
#define _TENANT_RESP_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* tenant_resp_parse() */
#define TENANT_RESP_OK            0     /* one complete reply */
#define TENANT_RESP_AGAIN         1     /* its bytes so far are valid */
#define TENANT_RESP_INVALID      -1     /* protocol error: see p->error */

/* the types of values */
#define TENANT_RESP_SIMPLE        1     /* +OK */
#define TENANT_RESP_ERROR         2     /* -NOSCRIPT No matching script. */
#define TENANT_RESP_INTEGER       3     /* :42 */
#define TENANT_RESP_BULK          4     /* $3 abc */
#define TENANT_RESP_NULL          5     /* $-1 or *-1 */
#define TENANT_RESP_ARRAY         6     /* *2 ... */

#define TENANT_RESP_DEPTH_MAX     16    /* bound of parser->max_depth */

/* a number's line: "-9223372036854775808" */
#define TENANT_RESP_NUMBER_MAX    20


typedef struct {
    int                    type;
    int64_t                integer;     /* INTEGER */
    const unsigned char   *data;        /* SIMPLE, ERROR, BULK; else NULL */
    size_t                 len;         /* of data; ARRAY: its elements */
    size_t                 next;        /* index after it and its elements */
    size_t                 off;         /* of data in the reply (internal) */
} tenant_resp_value_t;


typedef struct {
    size_t                 index;       /* of the array */
    size_t                 left;        /* elements not yet begun */
} tenant_resp_frame_t;


typedef struct {
    /* bounds, set by tenant_resp_parser_init() */
    tenant_resp_value_t   *values;
    size_t                 nvalues;     /* values in a reply, all depths */
    size_t                 max_string;  /* bytes of a string or error */
    size_t                 max_depth;   /* arrays within arrays */

    /* where the reply under way is */
    int                    state;
    size_t                 pos;         /* bytes of it consumed */
    size_t                 scan;        /* where the search for CR goes on */
    size_t                 n;           /* values begun */
    size_t                 pending;     /* elements announced, not begun */
    size_t                 bulk;        /* the bulk string awaited */
    size_t                 depth;
    tenant_resp_frame_t    stack[TENANT_RESP_DEPTH_MAX];

    const char            *error;       /* INVALID: a one-line reason */
} tenant_resp_parser_t;


typedef struct {
    const unsigned char   *data;
    size_t                 len;
} tenant_resp_arg_t;


/*
 * The bytes the command argv[0 .. argc) takes as a RESP array of bulk
 * strings ("*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n"); any bytes are allowed in
 * an argument.  0 when argc is 0 or the length does not fit in a size_t.
 */
size_t tenant_resp_command_len(const tenant_resp_arg_t *argv, size_t argc);

/*
 * Writes the command into buf; returns its length (as above), or 0 with
 * nothing written when it does not fit in size bytes.
 */
size_t tenant_resp_command(unsigned char *buf, size_t size,
    const tenant_resp_arg_t *argv, size_t argc);

/*
 * Readies p for a connection's replies: at most nvalues values per reply
 * (1 .. SIZE_MAX / 2; the table is the caller's and holds them), strings
 * of at most max_string bytes, arrays nested at most max_depth deep
 * (0 .. TENANT_RESP_DEPTH_MAX; 0: no arrays).  0, or -1 when a bound is
 * out of range.
 */
int tenant_resp_parser_init(tenant_resp_parser_t *p,
    tenant_resp_value_t *values, size_t nvalues, size_t max_string,
    size_t max_depth);

/*
 * Parses the reply that starts at buf[0], of which len bytes have arrived.
 * Call it again with the same bytes and more after TENANT_RESP_AGAIN: the
 * buffer may have moved, but its first len bytes must be those given
 * before; the parser goes on where it stopped and reads nothing at or
 * beyond buf[len].  Any split is fine, and bytes after the reply (the
 * next pipelined replies) are left alone.
 *
 *   TENANT_RESP_OK       the reply is buf[0 .. *used); p->values[0] is it,
 *                        valid until the next call; the next call starts
 *                        a new reply (at buf + *used, say)
 *   TENANT_RESP_AGAIN    more bytes are needed
 *   TENANT_RESP_INVALID  not RESP2, or out of bounds; p->error says why.
 *                        The stream has lost its framing: close the
 *                        connection.  Every later call fails the same way.
 */
int tenant_resp_parse(tenant_resp_parser_t *p, const unsigned char *buf,
    size_t len, size_t *used);

/*
 * 1 if v is an error reply whose first word (its code) is code:
 * "NOSCRIPT No matching script. Please use EVAL." is code "NOSCRIPT";
 * "WRONGPASS invalid username-password pair" is "WRONGPASS".
 */
int tenant_resp_error_code(const tenant_resp_value_t *v, const char *code);

/*
 * 1 if v is the simple string s ("OK", "PONG").
 */
int tenant_resp_simple_is(const tenant_resp_value_t *v, const char *s);

/*
 * The reply values[0] as an array of exactly n integers (what the rate
 * limit's script returns) into out.  0, or -1 when it is anything else.
 */
int tenant_resp_integers(const tenant_resp_value_t *values, int64_t *out,
    size_t n);


/* REDIS_URL */

#define TENANT_REDIS_HOST_MAX     253   /* a DNS name; an IPv6 address */
#define TENANT_REDIS_USER_MAX     256   /* decoded */
#define TENANT_REDIS_PASSWORD_MAX 512   /* decoded */
#define TENANT_REDIS_DB_MAX       15
#define TENANT_REDIS_PORT         6379


typedef struct {
    char       host[TENANT_REDIS_HOST_MAX + 1];   /* no brackets */
    size_t     host_len;
    int        ipv6;                            /* host was [...] */
    unsigned   port;
    unsigned   db;
    int        auth;              /* 1: AUTH [user] password at connect */
    char       user[TENANT_REDIS_USER_MAX + 1];   /* "": none */
    size_t     user_len;
    char       password[TENANT_REDIS_PASSWORD_MAX + 1];
    size_t     password_len;
} tenant_redis_url_t;


/*
 * Parses redis://[[user]:password@]host[:port][/db] as Render's Key Value
 * gives it: "redis://red-xxxx:6379", "redis://user:pass@red-xxxx:6379".
 * The scheme in any case; user and password percent-decoded (":pass@"
 * alone: AUTH pass; "user:pass@": AUTH user pass); host a name or IPv4
 * address of [A-Za-z0-9.-_] or an IPv6 address in brackets; port 1 ..
 * 65535 (default 6379), db 0 .. 15 (default 0; "/" alone is 0), both
 * plain decimal.  Refused with a one-line reason in err: rediss:// (this
 * client has no TLS) and other schemes, a path other than /db, a query or
 * fragment, an empty host, a user without a password, control or
 * non-ASCII bytes.  The reason never quotes the URL, so never its
 * password.  0, or -1.
 */
int tenant_redis_url_parse(tenant_redis_url_t *u, const char *in,
    size_t len, char *err, size_t errlen);


#endif /* _TENANT_RESP_H_INCLUDED_ */
