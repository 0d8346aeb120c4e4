/*
 * Copyright (C) ngx_tenant_module authors
 *
 * A key -> fixed-size value cache in a shared-memory zone: rbtree and LRU
 * queue on the slab allocator, as ngx_http_limit_req_module keeps its
 * states.  Values are copied in and out under the zone's mutex; when the
 * zone is full, the least recently used entries make room.  The zone is
 * reused by nginx -s reload.
 *
 * Invalidations are counted: each one takes the next generation of the
 * zone, and leaves a tombstone that remembers it in place of the entry
 * (a miss for readers).  A writer that read the generation before asking
 * the source (ngx_tenant_cache_generation) stores its answer with
 * ngx_tenant_cache_put_since, which refuses it when the key was
 * invalidated since: an answer in flight cannot undo an invalidation.  A
 * tombstone that is dropped (its time is up, or the LRU evicts it) leaves
 * its generation in the zone's "forgotten" floor, which refuses every
 * answer older than it, whatever its key.
 */

#ifndef _NGX_TENANT_CACHE_H_INCLUDED_
#define _NGX_TENANT_CACHE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct ngx_tenant_cache_s  ngx_tenant_cache_t;


typedef struct {
    ngx_rbtree_t              rbtree;
    ngx_rbtree_node_t         sentinel;
    ngx_queue_t               queue;
    size_t                    value_size;
    ngx_atomic_t              entries;
    ngx_atomic_t              hits;
    ngx_atomic_t              misses;
    ngx_atomic_t              evictions;
    ngx_atomic_uint_t         generation;    /* of the last invalidation */
    ngx_atomic_uint_t         forgotten;     /* of a dropped tombstone */
} ngx_tenant_cache_sh_t;


struct ngx_tenant_cache_s {
    const char               *kind;          /* "tenant", "token", ... */
    ngx_tenant_cache_sh_t    *sh;
    ngx_slab_pool_t          *shpool;
    ngx_shm_zone_t           *shm_zone;
    size_t                    value_size;
    size_t                    key_max;
    ngx_str_t                 name;
    unsigned                  monotonic:1;   /* see ngx_tenant_cache_now() */
};


/* Called under the zone's mutex with the cached value: NGX_OK if it
 * changed it. */
typedef ngx_int_t (*ngx_tenant_cache_update_pt)(void *value, void *data);


/*
 * "name:size" from a directive's zone= parameter; NULL on error (logged).
 * Every node is allocated for keys of key_max bytes, so that all nodes
 * are of one slab size and evicting any of them makes room for any other.
 */
ngx_tenant_cache_t *ngx_tenant_cache_add(ngx_conf_t *cf, ngx_str_t *spec,
    const char *kind, size_t key_max, size_t value_size);

/* Copies the value out: NGX_OK, or NGX_DECLINED (absent or expired). */
ngx_int_t ngx_tenant_cache_get(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, void *value);

/*
 * The clock of a cache's "expire" times, in seconds: ngx_time(), or, for a
 * cache marked monotonic (whose values hold ngx_current_msec times, as the
 * rate limits do), ngx_current_msec / 1000, which a step of the wall
 * clock does not move: entries then neither expire early nor late.
 */
#define ngx_tenant_cache_now(cache)                                           \
    ((cache)->monotonic ? (time_t) (ngx_current_msec / 1000) : ngx_time())

/* Inserts or replaces; the entry is dropped at "expire" (seconds of
 * ngx_tenant_cache_now()).  NGX_OK, or NGX_ERROR when even evictions found
 * no room. */
ngx_int_t ngx_tenant_cache_put(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, void *value, time_t expire);

/* The zone's invalidation generation: read it before asking the source
 * of a value that ngx_tenant_cache_put_since will store. */
ngx_uint_t ngx_tenant_cache_generation(ngx_tenant_cache_t *cache);

/* As put, unless the key was invalidated after generation "since" (or a
 * tombstone of that age was forgotten): then NGX_DECLINED, and nothing
 * is stored. */
ngx_int_t ngx_tenant_cache_put_since(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, void *value, time_t expire, ngx_uint_t since);

/* Runs handler on the live value under the mutex (a compare-and-set):
 * its result, or NGX_DECLINED when the entry is absent or expired. */
ngx_int_t ngx_tenant_cache_update(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, ngx_tenant_cache_update_pt handler, void *data);

/*
 * Read-modify-write under the mutex, inserting a zeroed value first when
 * the key is absent or expired: handler's result (NGX_ERROR when no room
 * could be made).  The entry then expires at "expire".
 */
ngx_int_t ngx_tenant_cache_apply(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, ngx_tenant_cache_update_pt handler, void *data,
    time_t expire);

/* Drops the key's value, leaving a tombstone of the next generation. */
void ngx_tenant_cache_invalidate(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len);

/*
 * Runs handler on every live value under the mutex: NGX_DECLINED drops
 * the entry, anything else keeps it (as the handler left it).  With
 * "invalidate", it is an invalidation of every key: no answer asked for
 * before it is stored after it.
 */
void ngx_tenant_cache_walk(ngx_tenant_cache_t *cache,
    ngx_tenant_cache_update_pt handler, void *data, ngx_uint_t invalidate);


#endif /* _NGX_TENANT_CACHE_H_INCLUDED_ */
