#!/usr/bin/perl
# Tenant headers in other spellings: with underscores_in_headers on (or
# ignore_invalid_headers off) nginx passes X_Tenant_ID, which CGI, WSGI,
# Rack and PHP backends read as X-Tenant-ID.  No client-sent X-Tenant-*,
# X-User-*, X-Org-Role or X-Organization-ID reaches the upstream in any
# case or with '_' for '-'; X_Organization_ID is read as X-Organization-ID
# (it may only repeat the token's organization; both spellings together
# are ambiguous).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;

my $SIGNING_KEY = join '', map { sprintf '%02x', (13 * $_ + 5) % 256 } 0 .. 31;

pg_start();
my $t = create_tenant(tier => 'professional');
my $other = create_tenant(tier => 'starter');

my $ngx = nginx_start(http => <<"EOF");
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m ttl=30s negative_ttl=5s stale=5m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwt_key      %%RSA_PUB%%;
    tenant_tier         starter      features=api;
    tenant_tier         professional features=api;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;
        underscores_in_headers on;

        location /echo/ {
            tenant_gateway on;
            proxy_pass http://%%ECHO%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        ignore_invalid_headers off;

        location /echo/ {
            tenant_gateway on;
            proxy_pass http://%%ECHO%%;
        }
    }
EOF

sub token {
    return mint_token(sub => 'user_t066',
                      org => { id => $t->{clerk_organization_id}, role => 'org:member' });
}

my @underscored = (
    'X_Tenant_ID'        => '00000000-0000-0000-0000-000000000000',
    'x_tenant_tier'      => 'enterprise',
    'X-Tenant_Schema'    => 'public',
    'X_TENANT-SLUG'      => 'victim',
    'X_User_ID'          => 'user_admin',
    'x_user_email'       => 'admin@example.test',
    'X_Org_Role'         => 'org:admin',
    'X-Org_Role'         => 'org:owner',
    'X_Tenant_Signature' => 'v2=' . ('0' x 64),
    'X_Tenant_Timestamp' => '1',
    'x_tenant_request_id' => 'forged',
);

# The names of the upstream's headers that fold to a tenant header.
sub tenantish {
    my ($h) = @_;
    return [sort grep { (my $n = $_) =~ tr/_/-/;
                        $n =~ /^x-(tenant-|user-)|^x-org-role$|^x-organization-id$/ }
            keys %$h];
}

for my $c ([$ngx->{port}, 'underscores_in_headers on'],
           [$ngx->{port2}, 'ignore_invalid_headers off']) {
    my ($port, $what) = @$c;
    my $r = http(port => $port, path => '/echo/u',
                 headers => ['Authorization' => 'Bearer ' . token(), @underscored,
                             'X_Custom' => 'kept']);
    is $r->{status}, 200, "$what: admitted";
    my $h = ($r->{json} || {})->{headers} || {};
    is_deeply tenantish($h),
        [sort qw(x-tenant-id x-tenant-slug x-tenant-schema x-tenant-tier x-organization-id
                 x-user-id x-org-role x-tenant-timestamp x-tenant-signature
                 x-tenant-request-id)],
        "$what: only the gateway's tenant headers reached the upstream"
        or diag explain [keys %$h];
    is_deeply $h->{'x-tenant-tier'}, ['professional'], "$what: X-Tenant-Tier is the row's";
    is_deeply $h->{'x-tenant-id'}, [$t->{id}], "$what: X-Tenant-ID is the row's";
    is_deeply $h->{'x-org-role'}, ['org:member'], "$what: X-Org-Role is the token's";
    is_deeply $h->{'x_custom'}, ['kept'], "$what: other underscore headers kept";
}

{
    my $org = $t->{clerk_organization_id};

    my $r = http(path => '/echo/org', headers => ['Authorization' => 'Bearer ' . token(),
                                                  'X_Organization_ID' => $org]);
    is $r->{status}, 200, "X_Organization_ID repeating the token's organization: 200";
    is_deeply $r->{json}{headers}{'x-organization-id'}, [$org],
        '... the upstream got X-Organization-ID';
    ok !exists $r->{json}{headers}{'x_organization_id'}, '... and no X_Organization_ID';

    $r = http(path => '/echo/org',
              headers => ['Authorization' => 'Bearer ' . token(),
                          'X_Organization_ID' => $other->{clerk_organization_id}]);
    is $r->{status}, 403, 'X_Organization_ID naming another organization: 403, '
                          . 'as X-Organization-ID would be';
    is $r->{json}{code}, 'organization_mismatch', '... organization_mismatch'
        or diag explain $r->{json};

    $r = http(path => '/echo/org', headers => ['Authorization' => 'Bearer ' . token(),
                                               'X-Organization-ID' => $org,
                                               'x_organization_id' => $org]);
    is $r->{status}, 400, 'X-Organization-ID and X_Organization_ID: 400';
    is $r->{json}{code}, 'ambiguous_organization', '... ambiguous_organization'
        or diag explain $r->{json};
}

done_testing();
