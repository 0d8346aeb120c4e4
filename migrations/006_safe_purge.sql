-- 006_safe_purge.sql
--
-- A purge drops the schema the tenant's slug maps to, and nothing else
-- unless asked:
--
--   public.tenant_schema_dependents(schema)  objects OUTSIDE the schema
--                                            that DROP SCHEMA ... CASCADE
--                                            would drop with it
--   public.purge_tenant_schema(id, force)    drops the schema and deletes
--                                            the row; a report (jsonb)
--   public.drop_tenant_schema(id)            the same without force
--                                            (replaces 002's)
--   public.admin_purge_tenant(ident, force, actor, lock_ms)
--                                            the admin API's purge, with
--                                            its audit row and report
--
-- 002's drop_tenant_schema ran DROP SCHEMA ... CASCADE on whatever the
-- row's schema_name said: a row edited to name another tenant's schema
-- (or any schema the CHECK lets through, tenant_shared say) dropped that
-- one, and the cascade dropped, without a word, views, foreign keys,
-- triggers ... in other schemas that depended on the tenant's tables.
-- Now:
--
-- - the schema is public.tenant_schema_name(slug); a row whose
--   schema_name says otherwise, or whose schema another tenant's slug
--   maps to as well (the hashed form of long slugs can collide), is
--   refused (SQLSTATE 55000, object_not_in_prerequisite_state) and
--   nothing is dropped;
-- - objects outside the schema that depend on it are refused (SQLSTATE
--   2BP01, dependent_objects_still_exist; DETAIL: a JSON array of their
--   descriptions) unless force is true, and then dropped and reported;
-- - a schema already gone (dropped by hand) is no error: the row goes,
--   the report says the schema did not exist.
--
-- The report: {"schemaName": ..., "schemaExisted": bool,
-- "dependentsDropped": [descriptions, ...]}.


-- What DROP SCHEMA p_schema CASCADE would drop outside p_schema, one
-- pg_describe_object() text per object, sorted; nothing when the schema
-- does not exist.  PostgreSQL's own cascade is followed through
-- pg_depend: every object that depends on a dropped one (a whole object,
-- or the very column), and the owner of a dropped internal part (a view
-- whose rule depends on a tenant table).  Inside the schema are its
-- members and what belongs to them (toast tables, triggers, rules,
-- owned sequences); parts of a reported object (a view's rule and row
-- type) are not listed apart.
CREATE OR REPLACE FUNCTION public.tenant_schema_dependents(p_schema text)
RETURNS SETOF text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE
    dropped (classid, objid, objsubid) AS (
        SELECT 'pg_namespace'::regclass::oid, n.oid, 0
          FROM pg_namespace n
         WHERE n.nspname = p_schema
      UNION
        SELECT e.classid, e.objid, e.objsubid
          FROM dropped x
         CROSS JOIN LATERAL (
                SELECT d.classid, d.objid, d.objsubid
                  FROM pg_depend d
                 WHERE d.refclassid = x.classid
                   AND d.refobjid = x.objid
                   AND (x.objsubid = 0 OR d.refobjsubid = x.objsubid)
              UNION ALL
                SELECT d.refclassid, d.refobjid, 0
                  FROM pg_depend d
                 WHERE d.classid = x.classid
                   AND d.objid = x.objid
                   AND d.deptype = 'i'
               ) e
    ),
    inside (classid, objid) AS (
        SELECT x.classid, x.objid
          FROM dropped x
         WHERE x.classid = 'pg_namespace'::regclass
            OR (pg_identify_object(x.classid, x.objid, 0)).schema = p_schema
      UNION
        SELECT x.classid, x.objid
          FROM inside i
          JOIN pg_depend d ON d.refclassid = i.classid
                          AND d.refobjid = i.objid
                          AND d.deptype IN ('i', 'a')
          JOIN dropped x ON x.classid = d.classid AND x.objid = d.objid
    )
    SELECT DISTINCT pg_describe_object(x.classid, x.objid, x.objsubid)
      FROM dropped x
     WHERE NOT EXISTS (SELECT 1 FROM inside i
                        WHERE i.classid = x.classid AND i.objid = x.objid)
       AND NOT EXISTS (SELECT 1
                         FROM pg_depend d
                         JOIN dropped o ON o.classid = d.refclassid
                                       AND o.objid = d.refobjid
                        WHERE d.classid = x.classid
                          AND d.objid = x.objid
                          AND d.deptype = 'i')
     ORDER BY 1
$$;


-- Drops the schema of tenant p_tenant_id and deletes its row; NULL when
-- no tenant has that id, else the report.  Refusals (nothing changed):
-- 55000 when the row and the slug disagree, 2BP01 when objects outside
-- the schema depend on it and p_force is false.
CREATE OR REPLACE FUNCTION public.purge_tenant_schema(p_tenant_id uuid,
                                                      p_force boolean)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $fn$
DECLARE
    v_tenant   public.tenants;
    v_schema   text;
    v_other    text;
    v_tables   text;
    v_deps     text[] := '{}';
    v_existed  boolean;
BEGIN
    SELECT * INTO v_tenant FROM public.tenants
     WHERE id = p_tenant_id
       FOR UPDATE;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    v_schema := public.tenant_schema_name(v_tenant.slug);

    IF v_tenant.schema_name IS DISTINCT FROM v_schema THEN
        RAISE EXCEPTION 'tenant "%" names schema "%" but its slug maps to '
                        '"%": nothing was dropped',
                        v_tenant.slug, v_tenant.schema_name, v_schema
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Correct public.tenants.schema_name by hand, '
                         'then purge again.';
    END IF;

    -- Another tenant whose slug maps to the same name (a slug edited by
    -- hand): the one slug whose plain name it is (by the slug's index),
    -- or, for a name of the hashed form's 63 bytes, a long slug.

    SELECT t.slug INTO v_other FROM public.tenants t
     WHERE t.slug = translate(substr(v_schema, 8), '_', '-')
       AND t.id <> v_tenant.id;

    IF v_other IS NULL AND octet_length(v_schema) = 63 THEN
        SELECT t.slug INTO v_other FROM public.tenants t
         WHERE t.id <> v_tenant.id
           AND octet_length(t.slug) > 56
           AND public.tenant_schema_name(t.slug) = v_schema
         LIMIT 1;
    END IF;

    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'schema "%" of tenant "%" is also the schema of '
                        'tenant "%": nothing was dropped',
                        v_schema, v_tenant.slug, v_other
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Correct the slugs by hand, then purge again.';
    END IF;

    v_existed := EXISTS (SELECT 1 FROM pg_namespace
                          WHERE nspname = v_schema);

    IF v_existed THEN

        -- Its tables locked first: no view or foreign key can come to
        -- depend on them between the look at the dependents and the drop.

        SELECT string_agg(format('%I.%I', v_schema, c.relname), ', ')
          INTO v_tables
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = v_schema
           AND c.relkind IN ('r', 'p');

        IF v_tables IS NOT NULL THEN
            EXECUTE 'LOCK TABLE ' || v_tables || ' IN ACCESS EXCLUSIVE MODE';
        END IF;

        v_deps := ARRAY(SELECT public.tenant_schema_dependents(v_schema));

        IF cardinality(v_deps) > 0 AND NOT coalesce(p_force, false) THEN
            RAISE EXCEPTION '% object(s) outside schema "%" depend on it: '
                            'nothing was dropped',
                            cardinality(v_deps), v_schema
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = to_jsonb(v_deps)::text,
                      HINT = 'Drop them first, or purge with force to '
                             'drop them with the schema.';
        END IF;

        EXECUTE format('DROP SCHEMA %I CASCADE', v_schema);
    END IF;

    DELETE FROM public.tenants WHERE id = v_tenant.id;

    RETURN jsonb_build_object('schemaName', v_schema,
                              'schemaExisted', v_existed,
                              'dependentsDropped', to_jsonb(v_deps));
END
$fn$;


-- 002's function, now without force: true when the tenant was purged,
-- false when no tenant has that id.
CREATE OR REPLACE FUNCTION public.drop_tenant_schema(p_tenant_id uuid)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT public.purge_tenant_schema(p_tenant_id, false) IS NOT NULL
$$;


-- The admin API's DELETE ...?purge=true[&force=true]: the tenant as it
-- was and the report; no row when no tenant has that id or slug.  The
-- audit row's details: the slug, the report and force.
CREATE OR REPLACE FUNCTION public.admin_purge_tenant(
    p_ident text, p_force boolean, p_actor text, p_lock_ms integer,
    OUT tenant public.tenants, OUT purged jsonb)
RETURNS SETOF record
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM public.admin_lock_timeout(p_lock_ms);

    SELECT * INTO tenant FROM public.tenants t
     WHERE public.admin_tenant_match(t, p_ident)
       FOR UPDATE;

    IF NOT FOUND THEN
        RETURN;
    END IF;

    purged := public.purge_tenant_schema(tenant.id, p_force);

    INSERT INTO public.tenant_audit_log (tenant_id, actor, action, details)
    VALUES (tenant.id, p_actor, 'tenant.purge',
            jsonb_build_object('slug', tenant.slug,
                               'force', coalesce(p_force, false))
            || purged);

    RETURN NEXT;
END
$fn$;


-- As 002's drop_tenant_schema: for the owner and administrators.
REVOKE ALL ON FUNCTION public.purge_tenant_schema(uuid, boolean) FROM PUBLIC;
