-- 004_tenant_change_notifications.sql
--
-- Every change to public.tenants is announced on the channel
-- "tenant_changed" with the organization id as payload (both the old and
-- the new one when it changes), so that every gateway instance drops its
-- cached row at once instead of waiting for the TTL: a tier changed in
-- psql, a tenant created (its negative cache entry), suspended or deleted.
-- Notifications are sent when the transaction commits, never before.
--
-- public.expire_trials(actor) ends every trial past trial_ends_at in one
-- statement, writes the audit log, and returns the tenants it expired
-- (the cron job of POST /api/cron/expire-trials).  Running it twice is
-- harmless: the second run finds nothing.


CREATE OR REPLACE FUNCTION public.tenants_notify_change()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('tenant_changed', OLD.clerk_organization_id);
    END IF;

    IF TG_OP = 'INSERT'
       OR (TG_OP = 'UPDATE'
           AND NEW.clerk_organization_id IS DISTINCT FROM
               OLD.clerk_organization_id)
    THEN
        PERFORM pg_notify('tenant_changed', NEW.clerk_organization_id);
    END IF;

    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER tenants_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON public.tenants
    FOR EACH ROW
    EXECUTE FUNCTION public.tenants_notify_change();


CREATE OR REPLACE FUNCTION public.expire_trials(p_actor text)
RETURNS TABLE (id uuid, slug text, clerk_organization_id text,
               trial_ends_at timestamptz)
LANGUAGE sql
AS $$
    WITH expired AS (
        UPDATE public.tenants t
           SET subscription_status = 'expired'
         WHERE t.subscription_status = 'trial'
           AND t.trial_ends_at < now()
        RETURNING t.id, t.slug, t.clerk_organization_id, t.trial_ends_at
    ), audit AS (
        INSERT INTO public.tenant_audit_log (tenant_id, actor, action,
                                             details)
        SELECT e.id, p_actor, 'trial_expired',
               jsonb_build_object('trialEndsAt', e.trial_ends_at)
          FROM expired e
    )
    SELECT e.id, e.slug, e.clerk_organization_id, e.trial_ends_at
      FROM expired e
     ORDER BY e.trial_ends_at, e.slug;
$$;
