-- 002_tenant_schema_functions.sql
--
-- Tenant provisioning.  Each tenant gets its own schema,
-- tenant_<slug with - replaced by _>, holding the product's 9 tables and
-- 14 explicitly created indexes.
--
--   public.tenant_schema_name(slug)        the schema a slug maps to
--   public.create_tenant(name, slug, clerk_org_id, tier, owner_email
--                        [, trial_days = 14])  row + schema, atomically
--   public.drop_tenant_schema(tenant_id)   schema (cascade) + row
--   public.tenant_schema_counts(schema)    (tables, indexes) for checks
--
-- A PL/pgSQL function runs inside its caller's transaction, and an error
-- anywhere in it rolls back everything it did: the row, the schema and
-- every table.  Provisioning succeeds whole or leaves nothing behind.
--
-- Identifiers are interpolated only with format('%I'); values only as
-- parameters.


-- The schema of a slug: tenant_ + the slug with '-' replaced by '_'.
-- Slugs are at most 63 characters but identifiers are too (longer ones
-- would be silently truncated), so a name that would not fit keeps 47
-- characters of the slug and adds 8 hex digits of its MD5 to stay unique.
CREATE OR REPLACE FUNCTION public.tenant_schema_name(p_slug text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN octet_length('tenant_' || replace(p_slug, '-', '_')) <= 63
        THEN 'tenant_' || replace(p_slug, '-', '_')
        ELSE 'tenant_' || left(replace(p_slug, '-', '_'), 47)
             || '_' || left(md5(p_slug), 8)
    END
$$;


CREATE OR REPLACE FUNCTION public.create_tenant(
    p_name        text,
    p_slug        text,
    p_clerk_org_id text,
    p_tier        text,
    p_owner_email text,
    p_trial_days  integer DEFAULT 14)
RETURNS public.tenants
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_schema  text;
    v_tenant  public.tenants;
BEGIN
    IF p_slug IS NULL OR p_slug !~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$' THEN
        RAISE EXCEPTION 'invalid tenant slug "%"', p_slug
            USING ERRCODE = 'check_violation',
                  HINT = '3 to 63 characters a-z, 0-9 and "-", starting '
                         'and ending with a letter or digit';
    END IF;

    IF p_trial_days IS NULL OR p_trial_days < 0 THEN
        RAISE EXCEPTION 'invalid trial length % (days)', p_trial_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    v_schema := public.tenant_schema_name(p_slug);

    -- The row first: a duplicate slug or organization fails here, before
    -- any DDL.  The unique indexes also serialize concurrent attempts.
    INSERT INTO public.tenants
        (name, slug, clerk_organization_id, schema_name,
         subscription_tier, subscription_status, trial_ends_at, owner_email)
    VALUES
        (p_name, p_slug, p_clerk_org_id, v_schema,
         coalesce(p_tier, 'starter'), 'trial',
         now() + make_interval(days => p_trial_days), p_owner_email)
    RETURNING * INTO v_tenant;

    -- No IF NOT EXISTS: a leftover schema of that name is an error (and
    -- rolls the row back), never silently adopted.
    EXECUTE format('CREATE SCHEMA %I', v_schema);

    -- One statement batch for all tables and indexes; %1$I is the schema.
    --
    -- 9 tables.  14 indexes are created explicitly with CREATE INDEX
    -- (numbered below); the indexes PostgreSQL builds by itself for
    -- PRIMARY KEY and UNIQUE constraints are not counted among them
    -- (public.tenant_schema_counts() counts the same way).  Foreign keys
    -- whose column leads a UNIQUE constraint need no index of their own.
    EXECUTE format($ddl$
        CREATE TABLE %1$I.products (
            id                uuid          PRIMARY KEY
                                            DEFAULT gen_random_uuid(),
            sku               text          NOT NULL UNIQUE,
            name              text          NOT NULL,
            description       text,
            category          text,
            unit_of_measure   text          NOT NULL DEFAULT 'each',
            unit_cost         numeric(14,4) NOT NULL DEFAULT 0
                                            CHECK (unit_cost >= 0),
            unit_price        numeric(14,4) CHECK (unit_price >= 0),
            lead_time_days    integer       CHECK (lead_time_days >= 0),
            reorder_point     numeric(14,3) CHECK (reorder_point >= 0),
            is_active         boolean       NOT NULL DEFAULT true,
            created_at        timestamptz   NOT NULL DEFAULT now(),
            updated_at        timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE %1$I.customers (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            name               text          NOT NULL,
            email              text,
            country            text          CHECK (country ~ '^[A-Z]{2}$'),
            currency           text          NOT NULL DEFAULT 'USD'
                                             CHECK (currency ~ '^[A-Z]{3}$'),
            payment_terms_days integer       NOT NULL DEFAULT 30
                                             CHECK (payment_terms_days >= 0),
            credit_limit       numeric(16,2) CHECK (credit_limit >= 0),
            is_active          boolean       NOT NULL DEFAULT true,
            created_at         timestamptz   NOT NULL DEFAULT now(),
            updated_at         timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE %1$I.suppliers (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            name               text          NOT NULL,
            email              text,
            country            text          CHECK (country ~ '^[A-Z]{2}$'),
            currency           text          NOT NULL DEFAULT 'USD'
                                             CHECK (currency ~ '^[A-Z]{3}$'),
            payment_terms_days integer       NOT NULL DEFAULT 30
                                             CHECK (payment_terms_days >= 0),
            lead_time_days     integer       CHECK (lead_time_days >= 0),
            is_active          boolean       NOT NULL DEFAULT true,
            created_at         timestamptz   NOT NULL DEFAULT now(),
            updated_at         timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE %1$I.inventory_levels (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            product_id         uuid          NOT NULL
                               REFERENCES %1$I.products (id)
                               ON DELETE CASCADE,
            location           text          NOT NULL DEFAULT 'main',
            quantity_on_hand   numeric(14,3) NOT NULL DEFAULT 0,
            quantity_reserved  numeric(14,3) NOT NULL DEFAULT 0
                                             CHECK (quantity_reserved >= 0),
            quantity_on_order  numeric(14,3) NOT NULL DEFAULT 0
                                             CHECK (quantity_on_order >= 0),
            unit_cost          numeric(14,4) CHECK (unit_cost >= 0),
            counted_at         timestamptz,
            updated_at         timestamptz   NOT NULL DEFAULT now(),
            UNIQUE (product_id, location)
        );

        CREATE TABLE %1$I.sales_orders (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            order_number       text          NOT NULL UNIQUE,
            customer_id        uuid          NOT NULL
                               REFERENCES %1$I.customers (id),
            product_id         uuid          NOT NULL
                               REFERENCES %1$I.products (id),
            quantity           numeric(14,3) NOT NULL CHECK (quantity > 0),
            unit_price         numeric(14,4) NOT NULL CHECK (unit_price >= 0),
            total_amount       numeric(16,2) GENERATED ALWAYS AS
                                   (round(quantity * unit_price, 2)) STORED,
            currency           text          NOT NULL DEFAULT 'USD'
                                             CHECK (currency ~ '^[A-Z]{3}$'),
            status             text          NOT NULL DEFAULT 'draft'
                               CHECK (status IN ('draft', 'confirmed',
                                   'shipped', 'invoiced', 'paid',
                                   'cancelled')),
            order_date         date          NOT NULL DEFAULT current_date,
            ship_date          date,
            invoice_date       date,
            due_date           date,
            paid_at            timestamptz,
            created_at         timestamptz   NOT NULL DEFAULT now(),
            updated_at         timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE %1$I.purchase_orders (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            order_number       text          NOT NULL UNIQUE,
            supplier_id        uuid          NOT NULL
                               REFERENCES %1$I.suppliers (id),
            product_id         uuid          NOT NULL
                               REFERENCES %1$I.products (id),
            quantity           numeric(14,3) NOT NULL CHECK (quantity > 0),
            unit_cost          numeric(14,4) NOT NULL CHECK (unit_cost >= 0),
            total_amount       numeric(16,2) GENERATED ALWAYS AS
                                   (round(quantity * unit_cost, 2)) STORED,
            currency           text          NOT NULL DEFAULT 'USD'
                                             CHECK (currency ~ '^[A-Z]{3}$'),
            status             text          NOT NULL DEFAULT 'draft'
                               CHECK (status IN ('draft', 'ordered',
                                   'received', 'invoiced', 'paid',
                                   'cancelled')),
            order_date         date          NOT NULL DEFAULT current_date,
            expected_date      date,
            received_date      date,
            due_date           date,
            paid_at            timestamptz,
            created_at         timestamptz   NOT NULL DEFAULT now(),
            updated_at         timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE %1$I.demand_forecasts (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            product_id         uuid          NOT NULL
                               REFERENCES %1$I.products (id)
                               ON DELETE CASCADE,
            model              text          NOT NULL
                                             DEFAULT 'moving_average',
            period_start       date          NOT NULL,
            period_end         date          NOT NULL,
            forecast_quantity  numeric(14,3) NOT NULL
                                             CHECK (forecast_quantity >= 0),
            lower_bound        numeric(14,3),
            upper_bound        numeric(14,3),
            confidence         numeric(5,4)
                               CHECK (confidence BETWEEN 0 AND 1),
            created_at         timestamptz   NOT NULL DEFAULT now(),
            CHECK (period_end >= period_start),
            UNIQUE (product_id, model, period_start)
        );

        CREATE TABLE %1$I.cash_flow_entries (
            id                 uuid          PRIMARY KEY
                                             DEFAULT gen_random_uuid(),
            entry_date         date          NOT NULL,
            category           text          NOT NULL
                               CHECK (category IN ('operating', 'investing',
                                                   'financing')),
            direction          text          NOT NULL
                               CHECK (direction IN ('inflow', 'outflow')),
            amount             numeric(16,2) NOT NULL CHECK (amount > 0),
            currency           text          NOT NULL DEFAULT 'USD'
                                             CHECK (currency ~ '^[A-Z]{3}$'),
            is_forecast        boolean       NOT NULL DEFAULT false,
            description        text,
            sales_order_id     uuid
                               REFERENCES %1$I.sales_orders (id)
                               ON DELETE SET NULL,
            purchase_order_id  uuid
                               REFERENCES %1$I.purchase_orders (id)
                               ON DELETE SET NULL,
            created_at         timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE %1$I.working_capital_snapshots (
            id                        uuid          PRIMARY KEY
                                                    DEFAULT gen_random_uuid(),
            snapshot_date             date          NOT NULL UNIQUE,
            cash                      numeric(16,2) NOT NULL DEFAULT 0,
            accounts_receivable       numeric(16,2) NOT NULL DEFAULT 0,
            inventory_value           numeric(16,2) NOT NULL DEFAULT 0,
            other_current_assets      numeric(16,2) NOT NULL DEFAULT 0,
            accounts_payable          numeric(16,2) NOT NULL DEFAULT 0,
            other_current_liabilities numeric(16,2) NOT NULL DEFAULT 0,
            working_capital           numeric(16,2) GENERATED ALWAYS AS
                (cash + accounts_receivable + inventory_value
                 + other_current_assets - accounts_payable
                 - other_current_liabilities) STORED,
            dso                       numeric(8,2),
            dio                       numeric(8,2),
            dpo                       numeric(8,2),
            cash_conversion_cycle     numeric(8,2) GENERATED ALWAYS AS
                                          (dso + dio - dpo) STORED,
            created_at                timestamptz   NOT NULL DEFAULT now()
        );

        /*  1 */ CREATE INDEX products_category_idx
                     ON %1$I.products (category);
        /*  2 */ CREATE INDEX customers_name_idx
                     ON %1$I.customers (lower(name));
        /*  3 */ CREATE INDEX suppliers_name_idx
                     ON %1$I.suppliers (lower(name));
        /*  4 */ CREATE INDEX inventory_levels_location_idx
                     ON %1$I.inventory_levels (location);
        /*  5 */ CREATE INDEX sales_orders_customer_idx
                     ON %1$I.sales_orders (customer_id);
        /*  6 */ CREATE INDEX sales_orders_product_idx
                     ON %1$I.sales_orders (product_id);
        /*  7 */ CREATE INDEX sales_orders_status_due_idx
                     ON %1$I.sales_orders (status, due_date);
        /*  8 */ CREATE INDEX purchase_orders_supplier_idx
                     ON %1$I.purchase_orders (supplier_id);
        /*  9 */ CREATE INDEX purchase_orders_product_idx
                     ON %1$I.purchase_orders (product_id);
        /* 10 */ CREATE INDEX purchase_orders_status_expected_idx
                     ON %1$I.purchase_orders (status, expected_date);
        /* 11 */ CREATE INDEX demand_forecasts_period_idx
                     ON %1$I.demand_forecasts (period_start);
        /* 12 */ CREATE INDEX cash_flow_entries_date_idx
                     ON %1$I.cash_flow_entries (entry_date);
        /* 13 */ CREATE INDEX cash_flow_entries_sales_order_idx
                     ON %1$I.cash_flow_entries (sales_order_id)
                     WHERE sales_order_id IS NOT NULL;
        /* 14 */ CREATE INDEX cash_flow_entries_purchase_order_idx
                     ON %1$I.cash_flow_entries (purchase_order_id)
                     WHERE purchase_order_id IS NOT NULL;
    $ddl$, v_schema);

    RETURN v_tenant;
END
$fn$;

COMMENT ON FUNCTION public.create_tenant(text, text, text, text, text, integer)
    IS 'Creates a tenant row (status trial) and its schema with 9 tables '
       'and 14 indexes, in the caller''s transaction.';


-- Drops the tenant's schema (and everything in it) and deletes its row.
-- false when no tenant has that id.
CREATE OR REPLACE FUNCTION public.drop_tenant_schema(p_tenant_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $fn$
DECLARE
    v_schema  text;
BEGIN
    DELETE FROM public.tenants
    WHERE id = p_tenant_id
    RETURNING schema_name INTO v_schema;

    IF NOT FOUND THEN
        RETURN false;
    END IF;

    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', v_schema);
    RETURN true;
END
$fn$;


-- Tables (ordinary and partitioned) and explicitly created indexes of a
-- schema.  Indexes that implement a PRIMARY KEY, UNIQUE or EXCLUDE
-- constraint are not counted.
CREATE OR REPLACE FUNCTION public.tenant_schema_counts(
    p_schema  text,
    OUT tables  integer,
    OUT indexes integer)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT
        (SELECT count(*)::integer
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = p_schema
            AND c.relkind IN ('r', 'p')),
        (SELECT count(*)::integer
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = p_schema
            AND NOT EXISTS (SELECT 1
                              FROM pg_constraint k
                             WHERE k.conindid = i.indexrelid
                               AND k.contype IN ('p', 'u', 'x')))
$$;


-- Provisioning and deprovisioning are for the owner and administrators,
-- not every role that can connect.
REVOKE ALL ON FUNCTION
    public.create_tenant(text, text, text, text, text, integer),
    public.drop_tenant_schema(uuid)
    FROM PUBLIC;
