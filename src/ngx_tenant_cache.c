/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Slab allocation failures are handled by evicting (LRU) and trying once
 * more; a put that still finds no room fails, and callers carry on without
 * the entry.  Tests fill zones (t/140) but cannot make a retry after
 * eviction fail (class A of docs/coverage-gaps.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_tenant_cache.h"


#define NGX_TENANT_CACHE_EXPIRE_STEP   2     /* expired entries per put */
#define NGX_TENANT_CACHE_EVICT_MAX     16    /* LRU victims per put */

/*
 * How long a tombstone stays: longer than any answer can be in flight
 * (a database wait is bounded by tenant_database's timeout, seconds).
 * Not needed for correctness: a tombstone dropped earlier raises the
 * zone's floor, which only refuses more answers than needed.
 */
#define NGX_TENANT_CACHE_TOMBSTONE     60


typedef struct {
    u_char                    color;
    u_char                    tomb;          /* invalidated: no value */
    u_short                   key_len;
    ngx_queue_t               queue;
    time_t                    expire;
    ngx_uint_t                generation;    /* of its last invalidation */
    u_char                    data[1];       /* key, then value */
} ngx_tenant_cache_node_t;


/*
 * The value starts key_max bytes into data, key_max being aligned: the
 * handlers of apply/update/walk get a pointer to a struct in place, which
 * must be aligned for its type (data is: the node comes from the slab
 * allocator and data is 40 bytes into it).
 */

#define ngx_tenant_cache_value(cache, cn)  ((cn)->data + (cache)->key_max)


static ngx_uint_t  ngx_tenant_cache_tag;


static ngx_int_t ngx_tenant_cache_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_tenant_cache_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_rbtree_node_t *ngx_tenant_cache_lookup(ngx_tenant_cache_t *cache,
    u_char *key, size_t key_len, uint32_t hash);
static ngx_tenant_cache_node_t *ngx_tenant_cache_find_or_add(
    ngx_tenant_cache_t *cache, u_char *key, size_t key_len);
static ngx_int_t ngx_tenant_cache_store(ngx_tenant_cache_t *cache,
    u_char *key, size_t key_len, void *value, time_t expire,
    ngx_uint_t check, ngx_uint_t since);
static void ngx_tenant_cache_free_node(ngx_tenant_cache_t *cache,
    ngx_rbtree_node_t *node);
static void ngx_tenant_cache_expire(ngx_tenant_cache_t *cache, time_t now,
    ngx_uint_t n, ngx_uint_t force);


ngx_tenant_cache_t *
ngx_tenant_cache_add(ngx_conf_t *cf, ngx_str_t *spec, const char *kind,
    size_t key_max, size_t value_size)
{
    u_char              *p;
    ssize_t              size;
    ngx_str_t            name, s;
    ngx_tenant_cache_t  *cache;

    p = (u_char *) ngx_strlchr(spec->data, spec->data + spec->len, ':');

    if (p == NULL || p == spec->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected name:size", spec);
        return NULL;
    }

    name.data = spec->data;
    name.len = p - spec->data;

    s.data = p + 1;
    s.len = spec->data + spec->len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", spec);
        return NULL;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small", spec);
        return NULL;
    }

    cache = ngx_pcalloc(cf->pool, sizeof(ngx_tenant_cache_t));
    if (cache == NULL) {
        return NULL;
    }

    cache->kind = kind;
    cache->value_size = value_size;
    cache->key_max = ngx_align(key_max, NGX_ALIGNMENT);
    cache->name = name;

    cache->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                            &ngx_tenant_cache_tag);
    if (cache->shm_zone == NULL) {
        return NULL;
    }

    if (cache->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NULL;
    }

    cache->shm_zone->init = ngx_tenant_cache_init_zone;
    cache->shm_zone->data = cache;

    return cache;
}


static ngx_int_t
ngx_tenant_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_tenant_cache_t  *ocache = data;

    size_t               len;
    ngx_tenant_cache_t  *cache;

    cache = shm_zone->data;

    if (ocache) {

        /* by name: compact tenant and token entries are of one size;
         * the sizes too, for a module built with other ones */

        if (ngx_strcmp(ocache->kind, cache->kind) != 0
            || ocache->value_size != cache->value_size
            || ocache->key_max != cache->key_max)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "tenant: zone \"%V\" holds entries of another "
                          "kind; use another zone name or restart",
                          &shm_zone->shm.name);
            return NGX_ERROR;
        }

        cache->sh = ocache->sh;
        cache->shpool = ocache->shpool;

        return NGX_OK;
    }

    cache->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {         /* Windows only */
        cache->sh = cache->shpool->data;
        return NGX_OK;
    }

    cache->sh = ngx_slab_calloc(cache->shpool, sizeof(ngx_tenant_cache_sh_t));
    if (cache->sh == NULL) {
        return NGX_ERROR;
    }

    cache->shpool->data = cache->sh;
    cache->sh->value_size = cache->value_size;

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_tenant_cache_rbtree_insert_value);

    ngx_queue_init(&cache->sh->queue);

    len = sizeof(" in tenant zone \"\"") + shm_zone->shm.name.len;

    cache->shpool->log_ctx = ngx_slab_alloc(cache->shpool, len);
    if (cache->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cache->shpool->log_ctx, " in tenant zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* evictions are normal here: do not log every failed allocation */
    cache->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_int_t
ngx_tenant_cache_get(ngx_tenant_cache_t *cache, u_char *key, size_t key_len,
    void *value)
{
    uint32_t                  hash;
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node;
    ngx_tenant_cache_node_t  *cn;

    hash = ngx_crc32_short(key, key_len);
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&cache->shpool->mutex);

    node = ngx_tenant_cache_lookup(cache, key, key_len, hash);

    if (node) {
        cn = (ngx_tenant_cache_node_t *) &node->color;

        if (cn->tomb) {
            /* a miss; the tombstone stays until its time is up */

        } else if (cn->expire > ngx_tenant_cache_now(cache)) {
            ngx_queue_remove(&cn->queue);
            ngx_queue_insert_head(&cache->sh->queue, &cn->queue);

            ngx_memcpy(value, ngx_tenant_cache_value(cache, cn),
                       cache->value_size);
            rc = NGX_OK;

        } else {
            ngx_tenant_cache_free_node(cache, node);
        }
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);

    (void) ngx_atomic_fetch_add(rc == NGX_OK ? &cache->sh->hits
                                             : &cache->sh->misses, 1);

    return rc;
}


ngx_int_t
ngx_tenant_cache_put(ngx_tenant_cache_t *cache, u_char *key, size_t key_len,
    void *value, time_t expire)
{
    return ngx_tenant_cache_store(cache, key, key_len, value, expire, 0, 0);
}


ngx_uint_t
ngx_tenant_cache_generation(ngx_tenant_cache_t *cache)
{
    return cache->sh->generation;
}


ngx_int_t
ngx_tenant_cache_put_since(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, void *value, time_t expire, ngx_uint_t since)
{
    return ngx_tenant_cache_store(cache, key, key_len, value, expire, 1,
                                  since);
}


static ngx_int_t
ngx_tenant_cache_store(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, void *value, time_t expire, ngx_uint_t check,
    ngx_uint_t since)
{
    ngx_rbtree_node_t        *node;
    ngx_tenant_cache_node_t  *cn;

    /* defensive: every caller's key fits (a SHA-256, an org id of at
     * most TENANT_ORG_ID_MAX bytes, a rate key built to fit) */

    if (key_len > cache->key_max) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&cache->shpool->mutex);

    if (check) {

        /* an answer asked for before the last invalidation of its key,
         * or before one that was forgotten, may be the old value */

        if (since < cache->sh->forgotten) {
            goto refused;
        }

        node = ngx_tenant_cache_lookup(cache, key, key_len,
                                       ngx_crc32_short(key, key_len));
        if (node) {
            cn = (ngx_tenant_cache_node_t *) &node->color;

            if (since < cn->generation) {
                goto refused;
            }
        }
    }

    cn = ngx_tenant_cache_find_or_add(cache, key, key_len);

    if (cn == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_tenant_cache_value(cache, cn), value, cache->value_size);
    cn->expire = expire;
    cn->tomb = 0;

    ngx_shmtx_unlock(&cache->shpool->mutex);

    return NGX_OK;

refused:

    ngx_shmtx_unlock(&cache->shpool->mutex);

    return NGX_DECLINED;
}


ngx_int_t
ngx_tenant_cache_apply(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, ngx_tenant_cache_update_pt handler, void *data,
    time_t expire)
{
    ngx_int_t                 rc;
    ngx_tenant_cache_node_t  *cn;

    /* defensive: every caller's key fits (a SHA-256, an org id of at
     * most TENANT_ORG_ID_MAX bytes, a rate key built to fit) */

    if (key_len > cache->key_max) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&cache->shpool->mutex);

    cn = ngx_tenant_cache_find_or_add(cache, key, key_len);

    if (cn == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_ERROR;
    }

    if (cn->expire <= ngx_tenant_cache_now(cache) || cn->tomb) {
        ngx_memzero(ngx_tenant_cache_value(cache, cn), cache->value_size);
    }

    rc = handler(ngx_tenant_cache_value(cache, cn), data);
    cn->expire = expire;
    cn->tomb = 0;

    ngx_shmtx_unlock(&cache->shpool->mutex);

    return rc;
}


/*
 * Under the mutex: the key's node, moved to the head of the LRU queue, or
 * a new one with a zeroed value and expire 0, made room for by dropping
 * expired entries and, when the zone is full, the least recently used.
 */

static ngx_tenant_cache_node_t *
ngx_tenant_cache_find_or_add(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len)
{
    size_t                    size;
    uint32_t                  hash;
    ngx_uint_t                tries;
    ngx_rbtree_node_t        *node;
    ngx_tenant_cache_node_t  *cn;

    hash = ngx_crc32_short(key, key_len);

    node = ngx_tenant_cache_lookup(cache, key, key_len, hash);

    if (node) {
        cn = (ngx_tenant_cache_node_t *) &node->color;

        ngx_queue_remove(&cn->queue);
        ngx_queue_insert_head(&cache->sh->queue, &cn->queue);

        return cn;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_tenant_cache_node_t, data)
           + cache->key_max + cache->value_size;

    ngx_tenant_cache_expire(cache, ngx_tenant_cache_now(cache),
                            NGX_TENANT_CACHE_EXPIRE_STEP, 0);

    for (tries = 0; /* void */; tries++) {

        node = ngx_slab_alloc_locked(cache->shpool, size);
        if (node) {
            break;
        }

        if (tries == 1 || ngx_queue_empty(&cache->sh->queue)) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "tenant: could not allocate an entry in zone "
                          "\"%V\" even after evicting", &cache->name);
            return NULL;
        }

        ngx_tenant_cache_expire(cache, ngx_tenant_cache_now(cache),
                                NGX_TENANT_CACHE_EVICT_MAX, 1);
    }

    node->key = hash;

    cn = (ngx_tenant_cache_node_t *) &node->color;

    cn->key_len = (u_short) key_len;
    cn->tomb = 0;
    cn->expire = 0;
    cn->generation = 0;
    ngx_memcpy(cn->data, key, key_len);
    ngx_memzero(ngx_tenant_cache_value(cache, cn), cache->value_size);

    ngx_rbtree_insert(&cache->sh->rbtree, node);
    ngx_queue_insert_head(&cache->sh->queue, &cn->queue);
    cache->sh->entries++;

    return cn;
}


ngx_int_t
ngx_tenant_cache_update(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, ngx_tenant_cache_update_pt handler, void *data)
{
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node;
    ngx_tenant_cache_node_t  *cn;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&cache->shpool->mutex);

    /* the entry may have gone or expired since the caller read it (a
     * race with another worker or a NOTIFY: not provoked by tests) */

    node = ngx_tenant_cache_lookup(cache, key, key_len,
                                   ngx_crc32_short(key, key_len));
    if (node) {
        cn = (ngx_tenant_cache_node_t *) &node->color;

        if (!cn->tomb && cn->expire > ngx_tenant_cache_now(cache)) {
            rc = handler(ngx_tenant_cache_value(cache, cn), data);
        }
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);

    return rc;
}


void
ngx_tenant_cache_invalidate(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len)
{
    ngx_uint_t                generation;
    ngx_tenant_cache_node_t  *cn;

    ngx_shmtx_lock(&cache->shpool->mutex);

    generation = ++cache->sh->generation;

    cn = (key_len <= cache->key_max)
         ? ngx_tenant_cache_find_or_add(cache, key, key_len) : NULL;

    if (cn) {
        ngx_memzero(ngx_tenant_cache_value(cache, cn), cache->value_size);
        cn->tomb = 1;
        cn->generation = generation;
        cn->expire = ngx_tenant_cache_now(cache) + NGX_TENANT_CACHE_TOMBSTONE;

    } else {
        /* no room even for a tombstone (logged): older answers are
         * refused for every key */
        cache->sh->forgotten = generation;
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


void
ngx_tenant_cache_walk(ngx_tenant_cache_t *cache,
    ngx_tenant_cache_update_pt handler, void *data, ngx_uint_t invalidate)
{
    time_t                    now;
    ngx_queue_t              *q, *next;
    ngx_rbtree_node_t        *node;
    ngx_tenant_cache_node_t  *cn;

    now = ngx_tenant_cache_now(cache);

    ngx_shmtx_lock(&cache->shpool->mutex);

    if (invalidate) {
        cache->sh->forgotten = ++cache->sh->generation;
    }

    for (q = ngx_queue_head(&cache->sh->queue);
         q != ngx_queue_sentinel(&cache->sh->queue);
         q = next)
    {
        next = ngx_queue_next(q);

        cn = ngx_queue_data(q, ngx_tenant_cache_node_t, queue);

        if (cn->tomb && cn->expire > now) {
            continue;
        }

        if (!cn->tomb && cn->expire > now
            && handler(ngx_tenant_cache_value(cache, cn), data)
               != NGX_DECLINED)
        {
            continue;
        }

        node = (ngx_rbtree_node_t *)
                   ((u_char *) cn - offsetof(ngx_rbtree_node_t, color));

        ngx_tenant_cache_free_node(cache, node);
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


static ngx_rbtree_node_t *
ngx_tenant_cache_lookup(ngx_tenant_cache_t *cache, u_char *key,
    size_t key_len, uint32_t hash)
{
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_tenant_cache_node_t  *cn;

    node = cache->sh->rbtree.root;
    sentinel = cache->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        cn = (ngx_tenant_cache_node_t *) &node->color;

        rc = ngx_memn2cmp(key, cn->data, key_len, (size_t) cn->key_len);

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_tenant_cache_free_node(ngx_tenant_cache_t *cache, ngx_rbtree_node_t *node)
{
    ngx_tenant_cache_node_t  *cn;

    cn = (ngx_tenant_cache_node_t *) &node->color;

    /* what the entry remembered is now the whole zone's to remember */

    if (cn->generation > cache->sh->forgotten) {
        cache->sh->forgotten = cn->generation;
    }

    ngx_queue_remove(&cn->queue);
    ngx_rbtree_delete(&cache->sh->rbtree, node);
    ngx_slab_free_locked(cache->shpool, node);

    cache->sh->entries--;
}


/*
 * Frees up to n entries from the LRU end: expired ones only, or, with
 * force, the least recently used ones whatever their age (evictions).
 */

static void
ngx_tenant_cache_expire(ngx_tenant_cache_t *cache, time_t now, ngx_uint_t n,
    ngx_uint_t force)
{
    ngx_queue_t              *q;
    ngx_rbtree_node_t        *node;
    ngx_tenant_cache_node_t  *cn;

    while (n-- && !ngx_queue_empty(&cache->sh->queue)) {

        q = ngx_queue_last(&cache->sh->queue);
        cn = ngx_queue_data(q, ngx_tenant_cache_node_t, queue);

        if (!force && cn->expire > now) {
            return;
        }

        if (cn->expire > now) {
            cache->sh->evictions++;
        }

        node = (ngx_rbtree_node_t *)
                   ((u_char *) cn - offsetof(ngx_rbtree_node_t, color));

        ngx_tenant_cache_free_node(cache, node);
    }
}


static void
ngx_tenant_cache_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_tenant_cache_node_t   *cn, *cnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            cn = (ngx_tenant_cache_node_t *) &node->color;
            cnt = (ngx_tenant_cache_node_t *) &temp->color;

            p = (ngx_memn2cmp(cn->data, cnt->data, cn->key_len,
                              cnt->key_len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}
