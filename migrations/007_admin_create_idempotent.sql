-- 007_admin_create_idempotent.sql
--
-- A create whose client went away (a lost connection, a proxy's timeout)
-- still commits when its statement had reached the server, so clients
-- retry it.  public.admin_create_tenant_once() is
-- public.admin_create_tenant() (migration 005) that answers such a retry
-- with the tenant instead of a conflict: when the slug or the
-- organization exists already and that tenant still is what this body
-- makes (the same name, slug, organization, tier, owner email and trial
-- length), it returns it with created = false and writes no audit row
-- (nothing was created).  Any other conflict is raised as before.
--
-- Two identical creates at once: the second one's INSERT waits for the
-- first one's row (the unique indexes), fails when that commits, and the
-- handler, with a new snapshot (READ COMMITTED), finds the committed row:
-- one tenant, one schema, one tenant.create audit row, both answered with
-- it.  Should the first roll back, the second creates it.


CREATE OR REPLACE FUNCTION public.admin_create_tenant_once(
    p_name text, p_slug text, p_clerk_org_id text, p_tier text,
    p_owner_email text, p_trial_days integer, p_actor text,
    p_details jsonb, p_lock_ms integer)
RETURNS TABLE (created boolean, tenant public.tenants)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_tenant  public.tenants;
BEGIN
    -- here too: what the block below sets is undone when it fails
    PERFORM public.admin_lock_timeout(p_lock_ms);

    BEGIN
        SELECT * INTO STRICT v_tenant
          FROM public.admin_create_tenant(p_name, p_slug, p_clerk_org_id,
                                          p_tier, p_owner_email,
                                          p_trial_days, p_actor, p_details,
                                          p_lock_ms);
        created := true;

    EXCEPTION WHEN unique_violation OR duplicate_schema THEN
        -- trial_ends_at was now() + the trial, created_at now(): the same
        -- transaction's now(), so equal unless the trial end was changed
        SELECT * INTO v_tenant
          FROM public.tenants t
         WHERE t.slug = p_slug
           AND t.clerk_organization_id = p_clerk_org_id
           AND t.name = p_name
           AND t.subscription_tier = coalesce(p_tier, 'starter')
           AND t.owner_email = p_owner_email
           AND t.trial_ends_at IS NOT DISTINCT FROM
               t.created_at + make_interval(days => p_trial_days);

        IF NOT FOUND THEN
            RAISE;
        END IF;

        created := false;
    END;

    tenant := v_tenant;
    RETURN NEXT;
END
$fn$;
