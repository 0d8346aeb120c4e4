/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Parsing JSON (tokens, JWKS documents, admin bodies) with jansson, safe
 * from its handling of a failed allocation: jansson 2.14 drops the byte
 * it could not append to its token buffer and parses on (load.c,
 * lex_save), so a document can parse into other values: a token verified
 * with another org_id, or reach an assert() and abort.  jansson's
 * allocations go through here: a parse during which one failed is
 * completed from a reserve, then refused (see tenant_json.c).
 */

#ifndef _TENANT_JSON_H_INCLUDED_
#define _TENANT_JSON_H_INCLUDED_


#include <stddef.h>

#include <jansson.h>


/*
 * json_loadb(), but NULL whenever an allocation failed during the parse;
 * then json_error_code(e) is json_error_out_of_memory.  e is always set.
 */
json_t *tenant_json_loadb(const char *buf, size_t len, size_t flags,
    json_error_t *e);

/* The allocator under the counters (malloc/free unless set): tests. */
void tenant_json_allocator(void *(*alloc)(size_t), void (*release)(void *));


#endif /* _TENANT_JSON_H_INCLUDED_ */
