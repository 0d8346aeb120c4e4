#!/usr/bin/perl
# Tenant schemas through the admin API (issue 12, item 5): slugs whose
# schema names collide, a leftover schema (POST /api/admin/tenants).
#
#   1 leftover       a schema without a row: create answers 409
#                    schema_exists (GET says 404: not "slug exists")
#   2 collision      a 56-character slug crafted to map to a long slug's
#                    hashed schema name, either order: 409 schema_exists

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

done_testing();
