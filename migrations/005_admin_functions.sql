-- 005_admin_functions.sql
--
-- The admin API's writes, each one function call (one statement, one
-- transaction) with its audit row, under a lock_timeout the gateway
-- passes a little under its own timeout (p_lock_ms): a write that waits
-- for a lock longer than the gateway waits for its answer fails and rolls
-- back instead of committing after the client was told 503.  (Only lock
-- waits are bounded so: a write slow for another reason can still commit
-- after the gateway gave up.)  The functions return the tenant rows they
-- touched.
--
-- A tenant is named by its id or, when the text is not a uuid, its slug:
-- a slug shaped like another tenant's id never selects two rows.


-- An id given as text, or NULL when it is not a canonical uuid.

CREATE OR REPLACE FUNCTION public.admin_tenant_id(p_ident text)
RETURNS uuid
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN p_ident ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN p_ident::uuid END;
$$;


CREATE OR REPLACE FUNCTION public.admin_tenant_match(t public.tenants,
                                                    p_ident text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN public.admin_tenant_id(p_ident) IS NOT NULL
                THEN t.id = public.admin_tenant_id(p_ident)
                ELSE t.slug = p_ident END;
$$;


CREATE OR REPLACE FUNCTION public.admin_lock_timeout(p_lock_ms integer)
RETURNS void
LANGUAGE sql
AS $$
    SELECT set_config('lock_timeout', greatest(p_lock_ms, 1)::text || 'ms',
                      true);
$$;


CREATE OR REPLACE FUNCTION public.admin_create_tenant(
    p_name text, p_slug text, p_clerk_org_id text, p_tier text,
    p_owner_email text, p_trial_days integer, p_actor text,
    p_details jsonb, p_lock_ms integer)
RETURNS SETOF public.tenants
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_tenant  public.tenants;
BEGIN
    PERFORM public.admin_lock_timeout(p_lock_ms);

    v_tenant := public.create_tenant(p_name, p_slug, p_clerk_org_id, p_tier,
                                     p_owner_email, p_trial_days);

    INSERT INTO public.tenant_audit_log (tenant_id, actor, action, details)
    VALUES (v_tenant.id, p_actor, 'tenant.create', p_details);

    RETURN NEXT v_tenant;
END
$fn$;


-- p_ident: the tenant's id or slug.  NULL p_tier / p_status: unchanged;
-- p_trial / p_rate: 'keep' unchanged, '' cleared, else the new value.

CREATE OR REPLACE FUNCTION public.admin_update_tenant(
    p_ident text, p_tier text, p_status text, p_trial text, p_rate text,
    p_actor text, p_details jsonb, p_lock_ms integer)
RETURNS SETOF public.tenants
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_tenant  public.tenants;
BEGIN
    PERFORM public.admin_lock_timeout(p_lock_ms);

    UPDATE public.tenants t SET
        subscription_tier   = coalesce(p_tier, t.subscription_tier),
        subscription_status = coalesce(p_status, t.subscription_status),
        trial_ends_at = CASE p_trial WHEN 'keep' THEN t.trial_ends_at
                                     WHEN '' THEN NULL
                                     ELSE p_trial::timestamptz END,
        rate_limit_override = CASE p_rate WHEN 'keep' THEN t.rate_limit_override
                                          WHEN '' THEN NULL
                                          ELSE p_rate::integer END
     WHERE public.admin_tenant_match(t, p_ident)
    RETURNING t.* INTO v_tenant;

    IF FOUND THEN
        INSERT INTO public.tenant_audit_log (tenant_id, actor, action,
                                             details)
        VALUES (v_tenant.id, p_actor, 'tenant.update', p_details);

        RETURN NEXT v_tenant;
    END IF;
END
$fn$;


-- p_purge false: status cancelled; true: the schema and the row dropped
-- (the audit trail stays).

CREATE OR REPLACE FUNCTION public.admin_delete_tenant(
    p_ident text, p_purge boolean, p_actor text, p_lock_ms integer)
RETURNS SETOF public.tenants
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_tenant  public.tenants;
BEGIN
    PERFORM public.admin_lock_timeout(p_lock_ms);

    IF p_purge THEN
        SELECT * INTO v_tenant FROM public.tenants t
         WHERE public.admin_tenant_match(t, p_ident)
           FOR UPDATE;

        IF NOT FOUND THEN
            RETURN;
        END IF;

        PERFORM public.drop_tenant_schema(v_tenant.id);

        INSERT INTO public.tenant_audit_log (tenant_id, actor, action,
                                             details)
        VALUES (v_tenant.id, p_actor, 'tenant.purge',
                jsonb_build_object('slug', v_tenant.slug));
    ELSE
        UPDATE public.tenants t SET subscription_status = 'cancelled'
         WHERE public.admin_tenant_match(t, p_ident)
        RETURNING t.* INTO v_tenant;

        IF NOT FOUND THEN
            RETURN;
        END IF;

        INSERT INTO public.tenant_audit_log (tenant_id, actor, action)
        VALUES (v_tenant.id, p_actor, 'tenant.cancel');
    END IF;

    RETURN NEXT v_tenant;
END
$fn$;
