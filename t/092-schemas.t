#!/usr/bin/perl
# Tenant schemas through the admin API (issue 12, items 3 and 5): slugs
# whose schema names collide, a leftover schema (POST
# /api/admin/tenants), and what a purge may drop (DELETE
# /api/admin/tenants/{id-or-slug}?purge=true, migrations/006:
# public.purge_tenant_schema, drop_tenant_schema,
# tenant_schema_dependents).
#
#   1 leftover       a schema without a row: create answers 409
#                    schema_exists (GET says 404: not "slug exists")
#   2 collision      a 56-character slug crafted to map to a long slug's
#                    hashed schema name, either order: 409 schema_exists
#   3 plain purge    the report ("purged"), the audit row, the log line
#   4 row edited     schema_name swapped with another tenant's, set to a
#                    shared schema (tenant_shared), to one the CHECK
#                    refuses; the slug edited so that it maps to another
#                    tenant's schema (either way round): 409
#                    schema_mismatch, nothing dropped
#   5 dependents     a view over all tenant schemas, a foreign key, a
#                    trigger: 409 schema_has_dependents naming them,
#                    nothing dropped; force=true drops and reports them
#                    (the other tenant and the referencing table stay)
#   6 already gone   the schema dropped by hand: 200, schemaExisted false
#   7 SQL            drop_tenant_schema() by hand refuses the same way

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Digest::MD5 qw(md5_hex);
use JSON::XS    ();


my $JSON = JSON::XS->new->utf8->canonical;
my $COLL = '/api/admin/tenants';
my $ADMIN_SUB = 'user_admin_091';
my $ADMIN = mint_token(sub => $ADMIN_SUB, metadata => { role => 'admin' },
                       exp => int(time) + 600);

sub api {
    my ($method, $path, %o) = @_;
    my $body = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
    return http(method => $method, path => $path,
                headers => [Authorization => "Bearer $ADMIN",
                            (defined $body ? ('Content-Type' => 'application/json') : ())],
                (defined $body ? (body => $body) : ()));
}

my $SEQ = 0;

sub create {
    my (%o) = @_;
    my $n = ++$SEQ;
    return api(POST => $COLL, body => {
        name => "Purge Test $n", slug => "purge-test-$n",
        clerkOrganizationId => "org_purge_$n", subscriptionTier => 'starter',
        ownerEmail => "owner$n\@example.com", %o });
}

sub made { my $r = create(@_); is $r->{status}, 201, "created $r->{json}{slug}"; return $r->{json} }

sub code  { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub brief { my ($r) = @_; return { status => $r->{status}, body => $r->{body} } }

sub problem {
    my ($r, $status, $code, $name) = @_;
    my $ok = is $r->{status}, $status, "$name: $status";
    $ok &&= like +($r->{headers}{'content-type'} || [])->[0] // '',
                 qr{^application/problem\+json}, "$name: problem+json";
    $ok &&= is code($r), $code, "$name: code $code";
    diag explain brief($r) unless $ok;
    return $ok;
}

sub schema_exists { sql_value('SELECT count(*) FROM pg_namespace WHERE nspname = $1', $_[0]) }
sub rel_exists    { sql_value('SELECT count(*) FROM pg_class WHERE oid = to_regclass($1)', $_[0]) }
sub row_count     { sql_value('SELECT count(*) FROM public.tenants WHERE id = $1', $_[0]) }
sub tables_in     { sql_value(q{SELECT count(*) FROM pg_class c JOIN pg_namespace n
                                 ON n.oid = c.relnamespace WHERE n.nspname = $1
                                 AND c.relkind = 'r'}, $_[0]) }

sub purges {
    my ($id) = @_;
    return sql_value(q{SELECT count(*) FROM public.tenant_audit_log
                        WHERE tenant_id = $1 AND action = 'tenant.purge'}, $id);
}

sub log_since { my ($mark) = @_; return error_log(since => $mark) }


pg_start();
nginx_start(http => <<'EOF');
    tenant_database     "%%PG%%" timeout=3s;
    tenant_cache        zone=tenants:1m ttl=30s;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef;
    tenant_tier         starter features=dashboard;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/admin/tenants {
            tenant_gateway admin;
            tenant_admin;
        }
    }
EOF


# --- 1. a leftover schema without a row ---------------------------------------

{
    sql('CREATE SCHEMA tenant_left_behind');
    my $r = create(slug => 'left-behind');
    problem $r, 409, 'schema_exists', 'leftover schema: create refused';
    is $r->{json}{field}, 'slug', 'leftover schema: field slug';
    like $r->{json}{detail} // '', qr/no tenant has this slug.*left over/, 'leftover schema: detail says left over';
    problem api(GET => "$COLL/left-behind"), 404, 'not_found', 'leftover schema: GET says 404 (consistent)';
    is sql_value(q{SELECT count(*) FROM public.tenants WHERE slug = 'left-behind'}), 0,
        'leftover schema: no row';
    sql('DROP SCHEMA tenant_left_behind');
    is create(slug => 'left-behind')->{status}, 201, 'leftover dropped: create 201';
}


# --- 2. two slugs, one schema name --------------------------------------------

{
    my $long = 'collide-' . ('y' x 47) . '-long-63';
    is length $long, 63, 'long slug, 63 characters';
    my $name = 'tenant_' . (substr($long, 0, 47) =~ tr/-/_/r) . '_' . substr(md5_hex($long), 0, 8);
    my $crafted = substr($name, 7) =~ tr/_/-/r;

    # long first, then the crafted short one
    my $l = made(slug => $long);
    is $l->{schemaName}, $name, "long slug: hashed schema name $name";
    my $r = create(slug => $crafted);
    problem $r, 409, 'schema_exists', 'crafted slug after the long one: refused';
    is $r->{json}{field}, 'slug', '... field slug';
    like $r->{json}{detail} // '', qr/another tenant/, '... detail: another tenant\'s schema';
    problem api(GET => "$COLL/$crafted"), 404, 'not_found', '... and no tenant has that slug';
    is tables_in($name), 9, "... $name untouched";

    # the other order
    is api(DELETE => "$COLL/$long?purge=true")->{status}, 200, 'long slug purged';
    my $s = made(slug => $crafted);
    is $s->{schemaName}, $name, 'crafted slug alone: the same schema name';
    problem create(slug => $long), 409, 'schema_exists', 'long slug after the crafted one: refused';
    is sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $long), 0, '... no row';
}


# --- 3. a plain purge: what was dropped is answered, audited, logged ----------

{
    my $t = made();
    my $mark = log_mark();
    my $r = api(DELETE => "$COLL/$t->{slug}?purge=true");
    is $r->{status}, 200, 'plain purge: 200' or diag explain brief($r);
    is $r->{json}{id}, $t->{id}, 'plain purge: the answer is the tenant';
    is_deeply $r->{json}{purged},
        { schemaName => $t->{schemaName}, schemaExisted => JSON::XS::true,
          dependentsDropped => [] }, 'plain purge: "purged" reports the schema, nothing else';
    is schema_exists($t->{schemaName}), 0, 'plain purge: schema gone';
    is row_count($t->{id}), 0, 'plain purge: row gone';

    my ($d) = sql(q{SELECT actor, details FROM public.tenant_audit_log
                     WHERE tenant_id = $1 AND action = 'tenant.purge'}, $t->{id});
    is $d->{actor}, $ADMIN_SUB, 'plain purge: audit actor';
    is_deeply $JSON->decode($d->{details}),
        { slug => $t->{slug}, force => JSON::XS::false, schemaName => $t->{schemaName},
          schemaExisted => JSON::XS::true, dependentsDropped => [] },
        'plain purge: audit details: slug, force, the report';

    like log_since($mark),
        qr/\[notice\].*tenant: purged tenant "\Q$t->{slug}\E" \(\Q$t->{id}\E\) for \Q$ADMIN_SUB\E: its row and schema "\Q$t->{schemaName}\E"/,
        'plain purge: a [notice] names the tenant, the admin and the schema';

    # force=true without purge=true cancels, as without it
    my $u = made();
    $r = api(DELETE => "$COLL/$u->{slug}?force=true");
    is $r->{status}, 200, 'force=true alone: 200';
    is $r->{json}{subscriptionStatus}, 'cancelled', 'force=true alone: cancelled';
    ok !exists $r->{json}{purged}, 'force=true alone: no "purged"';
    is schema_exists($u->{schemaName}), 1, 'force=true alone: schema kept';
}


# --- 4. a row edited by hand: only the schema the slug maps to ----------------

{
    my $a = made();
    my $b = made();
    my ($sa, $sb) = ($a->{schemaName}, $b->{schemaName});

    # schema_name is UNIQUE (checked row by row): swap through a third name
    sql(q{UPDATE public.tenants SET schema_name = 'tenant_swap_tmp' WHERE id = $1}, $b->{id});
    sql(q{UPDATE public.tenants SET schema_name = $2 WHERE id = $1}, $a->{id}, $sb);
    sql(q{UPDATE public.tenants SET schema_name = $2 WHERE id = $1}, $b->{id}, $sa);

    my $mark = log_mark();
    my $r = api(DELETE => "$COLL/$a->{slug}?purge=true");
    problem $r, 409, 'schema_mismatch', 'swapped schema_name: purge refused';
    like $r->{json}{detail} // '', qr/names schema "\Q$sb\E" but its slug maps to "\Q$sa\E"/,
        'swapped schema_name: detail names both schemas';
    is schema_exists($sb), 1, "swapped schema_name: the other tenant's schema $sb is intact";
    is tables_in($sb), 9, '... with its 9 tables';
    is schema_exists($sa), 1, "swapped schema_name: $sa kept too";
    is row_count($a->{id}), 1, 'swapped schema_name: the row is kept';
    is purges($a->{id}), 0, 'swapped schema_name: no audit row';
    like log_since($mark), qr/\[warn\].*tenant: purge of "\Q$a->{slug}\E" refused: .*nothing was dropped/,
        'swapped schema_name: a [warn] says why';

    problem api(DELETE => "$COLL/$a->{slug}?purge=true&force=true"), 409, 'schema_mismatch',
        'swapped schema_name: force does not override';
    is schema_exists($sb), 1, '... the other schema still intact';

    # put them back: both purge normally
    sql(q{UPDATE public.tenants SET schema_name = 'tenant_swap_tmp' WHERE id = $1}, $b->{id});
    sql(q{UPDATE public.tenants SET schema_name = $2 WHERE id = $1}, $a->{id}, $sa);
    sql(q{UPDATE public.tenants SET schema_name = $2 WHERE id = $1}, $b->{id}, $sb);
    is api(DELETE => "$COLL/$a->{id}?purge=true")->{status}, 200, 'row corrected: purge 200';
    is schema_exists($sa), 0, "row corrected: $sa dropped";
    is schema_exists($sb), 1, "row corrected: $sb not";

    # a shared schema whose name passes the CHECK
    sql('CREATE SCHEMA tenant_shared');
    sql('CREATE TABLE tenant_shared.plans (id int)');
    sql(q{UPDATE public.tenants SET schema_name = 'tenant_shared' WHERE id = $1}, $b->{id});
    problem api(DELETE => "$COLL/$b->{slug}?purge=true"), 409, 'schema_mismatch',
        'schema_name set to tenant_shared: purge refused';
    is rel_exists('tenant_shared.plans'), 1, 'tenant_shared: intact';
    is schema_exists($sb), 1, "tenant_shared: $sb intact";

    # one the CHECK refuses never gets there
    ok !eval { sql(q{UPDATE public.tenants SET schema_name = 'public' WHERE id = $1}, $b->{id}); 1 },
        'schema_name set to public: the CHECK refuses the UPDATE';
    sql(q{UPDATE public.tenants SET schema_name = $2 WHERE id = $1}, $b->{id}, $sb);

    # the slug edited too, so that it maps to the schema of tenant $owner
    # (whose row is moved elsewhere meanwhile): B is refused, then both
    # rows are put back
    my $edited_slug_refused = sub {
        my ($owner, $slug, $what) = @_;
        sql(q{UPDATE public.tenants SET schema_name = 'tenant_moved' WHERE id = $1}, $owner->{id});
        sql(q{UPDATE public.tenants SET slug = $2, schema_name = $3 WHERE id = $1},
            $b->{id}, $slug, $owner->{schemaName});
        my $r = api(DELETE => "$COLL/$b->{id}?purge=true");
        problem $r, 409, 'schema_mismatch', "$what: refused";
        like $r->{json}{detail} // '', qr/also the schema of tenant "\Q$owner->{slug}\E"/,
            "$what: the detail names tenant $owner->{slug}";
        is tables_in($owner->{schemaName}), 9, "$what: $owner->{schemaName} intact";
        sql(q{UPDATE public.tenants SET slug = $2, schema_name = $3 WHERE id = $1},
            $b->{id}, $b->{slug}, $sb);
        sql(q{UPDATE public.tenants SET schema_name = $2 WHERE id = $1},
            $owner->{id}, $owner->{schemaName});
    };

    my $long = 'long-' . ('x' x 39) . '-slug-for-collision';
    is length $long, 63, 'a 63-character slug';
    my $l = made(slug => $long);
    my $crafted = substr($l->{schemaName}, 7) =~ tr/_/-/r;
    is length $crafted, 56, "crafted slug $crafted: 56 characters";

    $edited_slug_refused->($l, $crafted, 'slug edited to a 56-character one that maps to a long slug\'s schema');
    is api(DELETE => "$COLL/$long?purge=true")->{status}, 200, 'long slug: purge 200';
    is schema_exists($l->{schemaName}), 0, 'long slug: its hashed schema dropped';

    # the other way round: the crafted slug's tenant owns the schema
    $edited_slug_refused->(made(slug => $crafted), $long,
                           'slug edited to the long slug whose hashed name a 56-character slug has');
    sql('DROP SCHEMA tenant_shared CASCADE');
}


# --- 5. objects outside the schema that depend on it --------------------------

{
    my $a = made();
    my $b = made();
    my ($sa, $sb) = ($a->{schemaName}, $b->{schemaName});

    # a view over all tenant schemas, a foreign key and a trigger function
    sql(qq{CREATE VIEW public.all_products AS
           SELECT 'a' AS tenant, sku FROM $sa.products
           UNION ALL SELECT 'b', sku FROM $sb.products});
    sql(qq{CREATE TABLE public.price_watch (id int PRIMARY KEY,
           product_id uuid REFERENCES $sa.products (id))});
    sql(q{INSERT INTO public.price_watch VALUES (1, NULL)});

    my $mark = log_mark();
    my $r = api(DELETE => "$COLL/$a->{slug}?purge=true");
    problem $r, 409, 'schema_has_dependents', 'dependents: purge refused';
    is_deeply $r->{json}{dependents},
        ['constraint price_watch_product_id_fkey on table public.price_watch',
         'view public.all_products'], 'dependents: named in "dependents"';
    like $r->{json}{detail} // '', qr/2 object\(s\) outside schema "\Q$sa\E" depend on it: nothing was dropped/,
        'dependents: detail';
    is tables_in($sa), 9, 'dependents: schema intact';
    is row_count($a->{id}), 1, 'dependents: row kept';
    is rel_exists('public.all_products'), 1, 'dependents: view kept';
    is purges($a->{id}), 0, 'dependents: no audit row';
    like log_since($mark), qr/\[notice\].*tenant: purge of "\Q$a->{slug}\E" refused: .*"view public\.all_products"/,
        'dependents: a [notice] names them';

    for my $q ('purge=true&force=1', 'purge=true&force=TRUE', 'purge=true&force=') {
        problem api(DELETE => "$COLL/$a->{slug}?$q"), 409, 'schema_has_dependents',
            "dependents: ?$q is not force";
    }

    $mark = log_mark();
    $r = api(DELETE => "$COLL/$a->{slug}?purge=true&force=true");
    is $r->{status}, 200, 'dependents, force=true: 200' or diag explain brief($r);
    is_deeply $r->{json}{purged},
        { schemaName => $sa, schemaExisted => JSON::XS::true,
          dependentsDropped => ['constraint price_watch_product_id_fkey on table public.price_watch',
                                'view public.all_products'] },
        'dependents, force=true: "purged" reports them';
    is schema_exists($sa), 0, 'force: schema dropped';
    is rel_exists('public.all_products'), 0, 'force: the view dropped';
    is rel_exists('public.price_watch'), 1, 'force: the referencing table stays (its constraint went)';
    is sql_value('SELECT count(*) FROM public.price_watch'), 1, '... with its row';
    is tables_in($sb), 9, "force: the other tenant's schema $sb intact";
    my ($d) = sql(q{SELECT details FROM public.tenant_audit_log
                     WHERE tenant_id = $1 AND action = 'tenant.purge'}, $a->{id});
    is $JSON->decode($d->{details})->{force}, JSON::XS::true, 'force: audited with force';
    is scalar @{ $JSON->decode($d->{details})->{dependentsDropped} }, 2, 'force: audit lists the 2 objects';
    like log_since($mark),
        qr/\[notice\].*tenant: purged tenant "\Q$a->{slug}\E" .* with force: its row, schema "\Q$sa\E" and the objects outside it that depended on it: \["constraint price_watch_product_id_fkey on table public\.price_watch", "view public\.all_products"\]/,
        'force: a [notice] names what was dropped';

    # a trigger on an outside table calling a function in the schema
    sql(qq{CREATE FUNCTION $sb.touch() RETURNS trigger LANGUAGE plpgsql
           AS 'BEGIN RETURN NEW; END'});
    sql(qq{CREATE TRIGGER touch BEFORE INSERT ON public.price_watch
           FOR EACH ROW EXECUTE FUNCTION $sb.touch()});
    $r = api(DELETE => "$COLL/$b->{id}?purge=true");
    problem $r, 409, 'schema_has_dependents', 'trigger: purge refused';
    is_deeply $r->{json}{dependents}, ['trigger touch on table public.price_watch'],
        'trigger: named';
    is api(DELETE => "$COLL/$b->{id}?purge=true&force=true")->{status}, 200, 'trigger: force 200';
    is rel_exists('public.price_watch'), 1, 'trigger: the table stays';
    sql('DROP TABLE public.price_watch');
}


# --- 6. a schema already dropped by hand --------------------------------------

{
    my $t = made();
    sql(qq{DROP SCHEMA $t->{schemaName} CASCADE});
    my $mark = log_mark();
    my $r = api(DELETE => "$COLL/$t->{slug}?purge=true");
    is $r->{status}, 200, 'schema already gone: 200' or diag explain brief($r);
    is $r->{json}{purged}{schemaExisted}, JSON::XS::false, 'schema already gone: schemaExisted false';
    is row_count($t->{id}), 0, 'schema already gone: row deleted';
    like log_since($mark), qr/\[notice\].*tenant: purged tenant "\Q$t->{slug}\E" .*: its row; its schema "\Q$t->{schemaName}\E" did not exist/,
        'schema already gone: the [notice] says so';
}


# --- 7. by hand: drop_tenant_schema() refuses the same way --------------------

{
    my $t = create_tenant();
    sql(qq{CREATE VIEW public.over_one AS SELECT sku FROM $t->{schema_name}.products});
    is_deeply [map { $_->{d} } sql('SELECT public.tenant_schema_dependents($1) AS d', $t->{schema_name})],
        ['view public.over_one'], 'tenant_schema_dependents lists the view';
    ok !eval { sql('SELECT public.drop_tenant_schema($1)', $t->{id}); 1 },
        'drop_tenant_schema with a dependent view: error';
    like $@, qr/outside schema .* depend on it: nothing was dropped/, '... the message';
    is rel_exists('public.over_one'), 1, '... the view stays';
    is sql_value(q{SELECT public.purge_tenant_schema($1, true)->'dependentsDropped'}, $t->{id}),
        '["view public.over_one"]', 'purge_tenant_schema(id, true): drops and reports the view';
    is schema_exists($t->{schema_name}), 0, '... schema gone';
}

done_testing();
