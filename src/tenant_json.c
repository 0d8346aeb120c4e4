/*
 * Copyright (C) ngx_tenant_module authors
 *
 * See tenant_json.h.  Every process (nginx worker, unit test) installs
 * the counting functions on its first parse; nothing else in the
 * process uses jansson.
 *
 * Counting is not enough: after the dropped byte jansson may also reach
 * an assert() (an escape without its 'u', a number without the byte
 * after it) and abort the worker.  So jansson never sees a failure
 * during a parse: an allocation the allocator refuses is served from a
 * static reserve instead, the parse completes, and its result is
 * refused; the reserve is empty again once the result is freed.  Only
 * a parse that outgrows the reserve too gets a NULL from here.
 */


#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tenant_json.h"


#define TENANT_JSON_RESERVE   (256 * 1024)
#define TENANT_JSON_ALIGN     16        /* malloc's, on x86-64 and arm64 */


static void *tenant_json_malloc(size_t size);
static void tenant_json_free(void *p);


static void          *(*tenant_json_alloc)(size_t) = malloc;
static void           (*tenant_json_release)(void *) = free;
static int             tenant_json_installed;
static int             tenant_json_parsing;
static unsigned long   tenant_json_failures;

static union {
    long double        align;
    void              *align_ptr;
    unsigned char      data[TENANT_JSON_RESERVE];
}                      tenant_json_reserve;
static size_t          tenant_json_reserved;


json_t *
tenant_json_loadb(const char *buf, size_t len, size_t flags,
    json_error_t *e)
{
    json_t         *doc;
    unsigned long   failures;

    if (!tenant_json_installed) {
        json_set_alloc_funcs(tenant_json_malloc, tenant_json_free);
        tenant_json_installed = 1;
    }

    /* jansson leaves e unset when an allocation fails early */
    memset(e, 0, sizeof(json_error_t));

    failures = tenant_json_failures;

    tenant_json_parsing = 1;
    doc = json_loadb(buf, len, flags, e);
    tenant_json_parsing = 0;

    if (tenant_json_failures == failures) {
        return doc;
    }

    /* what the reserve served is free again after this */
    json_decref(doc);
    tenant_json_reserved = 0;

    memset(e, 0, sizeof(json_error_t));
    strcpy(e->text, "out of memory");

    /* where json_error_code() reads the code, as jansson sets it */
    e->text[JSON_ERROR_TEXT_LENGTH - 1] = (char) json_error_out_of_memory;

    return NULL;
}


void
tenant_json_allocator(void *(*alloc)(size_t), void (*release)(void *))
{
    tenant_json_alloc = alloc ? alloc : malloc;
    tenant_json_release = release ? release : free;

    json_set_alloc_funcs(tenant_json_malloc, tenant_json_free);
    tenant_json_installed = 1;
}


static void *
tenant_json_malloc(size_t size)
{
    void    *p;
    size_t   n;

    p = tenant_json_alloc(size);

    if (p != NULL) {
        return p;
    }

    tenant_json_failures++;

    if (!tenant_json_parsing) {
        return NULL;
    }

    n = (size + TENANT_JSON_ALIGN - 1) & ~(TENANT_JSON_ALIGN - 1);

    if (n < size || n > TENANT_JSON_RESERVE - tenant_json_reserved) {
        return NULL;
    }

    p = tenant_json_reserve.data + tenant_json_reserved;
    tenant_json_reserved += n;

    return p;
}


static void
tenant_json_free(void *p)
{
    unsigned char  *b = p;

    if (b >= tenant_json_reserve.data
        && b < tenant_json_reserve.data + TENANT_JSON_RESERVE)
    {
        return;
    }

    tenant_json_release(p);
}
