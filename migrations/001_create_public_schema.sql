-- 001_create_public_schema.sql
--
-- The shared (public) part of the database: one row per tenant, read by
-- the gateway (ngx_tenant_module) to resolve X-Organization-ID, and an
-- audit log for administrative actions.
--
-- Applied by scripts/migrate.sh inside one transaction, together with its
-- record in public.schema_migrations.  Written to be re-runnable by hand
-- as well (IF NOT EXISTS / OR REPLACE), but migrate.sh applies it once.
--
-- gen_random_uuid() is built into PostgreSQL 13+: no extension needed.


-- Tenants --------------------------------------------------------------

CREATE TABLE IF NOT EXISTS public.tenants (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name                  text        NOT NULL
                          CHECK (char_length(name) BETWEEN 1 AND 200),

    -- URL-safe handle; also names the tenant's schema (tenant_<slug>).
    slug                  text        NOT NULL UNIQUE
                          CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),

    -- Clerk organization id (org_...): what clients send as
    -- X-Organization-ID and what the gateway looks tenants up by.
    clerk_organization_id text        NOT NULL UNIQUE
                          CHECK (char_length(clerk_organization_id)
                                 BETWEEN 1 AND 128),

    -- tenant_<slug with - replaced by _>, set by public.create_tenant().
    schema_name           text        NOT NULL UNIQUE
                          CHECK (schema_name ~ '^tenant_[a-z0-9_]+$'
                                 AND octet_length(schema_name) <= 63),

    -- A tier name of the gateway's tenant_tier directive
    -- (starter, professional, enterprise, ...): same naming rule.
    subscription_tier     text        NOT NULL DEFAULT 'starter'
                          CHECK (subscription_tier ~ '^[a-z0-9_-]{1,48}$'),

    subscription_status   text        NOT NULL DEFAULT 'trial'
                          CHECK (subscription_status IN
                                 ('active', 'trial', 'past_due',
                                  'suspended', 'cancelled', 'expired')),

    trial_ends_at         timestamptz,

    owner_email           text        NOT NULL
                          CHECK (owner_email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),

    -- Requests per window for this tenant; NULL means the tier's default.
    rate_limit_override   integer
                          CHECK (rate_limit_override > 0),

    settings              jsonb       NOT NULL DEFAULT '{}'
                          CHECK (jsonb_typeof(settings) = 'object'),

    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.tenants IS
    'One row per tenant (Clerk organization); data lives in schema_name.';
COMMENT ON COLUMN public.tenants.rate_limit_override IS
    'Requests per rate-limit window; NULL = the subscription tier default.';

-- Lookups by clerk_organization_id, slug and schema_name use the indexes
-- of their UNIQUE constraints.
CREATE INDEX IF NOT EXISTS tenants_status_idx
    ON public.tenants (subscription_status);

-- For the trial-expiration job: trials ending soonest first.
CREATE INDEX IF NOT EXISTS tenants_trial_ends_at_idx
    ON public.tenants (trial_ends_at)
    WHERE subscription_status = 'trial';


CREATE OR REPLACE FUNCTION public.tenants_set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER tenants_set_updated_at
    BEFORE UPDATE ON public.tenants
    FOR EACH ROW
    EXECUTE FUNCTION public.tenants_set_updated_at();


-- Audit log ------------------------------------------------------------

-- No foreign key on tenant_id: the trail outlives a deleted tenant.
CREATE TABLE IF NOT EXISTS public.tenant_audit_log (
    id          bigserial   PRIMARY KEY,
    tenant_id   uuid,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS tenant_audit_log_tenant_idx
    ON public.tenant_audit_log (tenant_id, created_at);
