-- 003_testing_queries.sql
--
-- Verification queries of the deployment guide ("Database Connectivity"),
-- plus casts that fail loudly when a function is missing.  Read-only:
-- plain SELECTs, safe to run any number of times, e.g.
--
--     psql "$DATABASE_URL" -f migrations/003_testing_queries.sql

-- The functions of 002 exist with the expected signatures (an error here
-- means 002 was not applied).
SELECT 'public.create_tenant(text,text,text,text,text,integer)'::regprocedure
           AS create_tenant,
       'public.drop_tenant_schema(uuid)'::regprocedure
           AS drop_tenant_schema,
       'public.tenant_schema_counts(text)'::regprocedure
           AS tenant_schema_counts;

-- Verify tenant functions exist
SELECT routine_name, routine_type
FROM information_schema.routines
WHERE routine_schema = 'public'
AND routine_name LIKE '%tenant%'
ORDER BY routine_name;

-- Count existing tenants
SELECT COUNT(*) FROM public.tenants;

-- List tenant schemas
SELECT schema_name FROM information_schema.schemata
WHERE schema_name LIKE 'tenant_%'
ORDER BY schema_name;

-- Each tenant's schema: 9 tables and 14 indexes expected
SELECT t.slug, t.schema_name, c.tables, c.indexes
FROM public.tenants t
CROSS JOIN LATERAL public.tenant_schema_counts(t.schema_name) c
ORDER BY t.slug;
