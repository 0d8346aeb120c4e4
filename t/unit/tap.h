/*
 * Copyright (C) ngx_tenant_module authors
 *
 * A minimal TAP producer for the unit tests: prove reads their output.
 */

#ifndef _TAP_H_INCLUDED_
#define _TAP_H_INCLUDED_


#include <stdio.h>
#include <string.h>


static int  tap_n;
static int  tap_failed;


#define ok(cond, ...)                                                        \
    tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define is_int(got, want, ...)                                               \
    do {                                                                     \
        long long  g_ = (long long) (got), w_ = (long long) (want);          \
        if (!tap_ok(g_ == w_, __FILE__, __LINE__, __VA_ARGS__)) {            \
            printf("#   got: %lld\n#   expected: %lld\n", g_, w_);          \
        }                                                                    \
    } while (0)

#define is_str(got, want, ...)                                               \
    do {                                                                     \
        const char  *g_ = (got), *w_ = (want);                               \
        if (!tap_ok(g_ != NULL && strcmp(g_, w_) == 0, __FILE__, __LINE__,  \
                    __VA_ARGS__))                                            \
        {                                                                    \
            printf("#   got: '%s'\n#   expected: '%s'\n",                  \
                   g_ ? g_ : "(null)", w_);                                  \
        }                                                                    \
    } while (0)


static int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>

static int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list  ap;

    tap_n++;
    printf("%s %d - ", pass ? "ok" : "not ok", tap_n);

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);

    printf("\n");

    if (!pass) {
        tap_failed++;
        printf("#   Failed test at %s line %d.\n", file, line);
    }

    return pass;
}


static int
done_testing(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}


#endif /* _TAP_H_INCLUDED_ */
