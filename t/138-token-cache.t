#!/usr/bin/perl
# The token cache's compact entries (issue 15, item 5): a hit answers as
# the verification it remembers, and a zone holds many.
#
#   same      a token answered from the cache gives the upstream the same
#             tenant headers and $tenant_* variables as its first,
#             verified, request: v1 and v2 organization claims, roles,
#             an administrator's metadata.role on "tenant_gateway admin"
#             (with and without "sid")
#   long      claims too long for a compact entry (more than 120 bytes
#             of sub, org_id, org_role and metadata.role together): the
#             token is verified on every request, never cached, never
#             admitted with a claim cut short
#   size      a 256k zone filled with distinct tokens holds >= 3,500
#             entries per MB (<= 300 bytes an entry; the full claims
#             took ~1,050), read from tenant_cache_entries{cache="token"}

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;

my $ZONE_KB = 256;

my $http = <<"EOF2";
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m ttl=30s;
    tenant_token_cache  zone=tokens:${ZONE_KB}k;
    tenant_jwt_key      %%RSA_PUB%%;
    tenant_signing_key  0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef;
    tenant_tier         starter      features=dashboard;
    tenant_tier         enterprise   features=*;

    server {
        listen 127.0.0.1:%%PORT%%;

        proxy_set_header X-Vars "\$tenant_user_id|\$tenant_org_id|\$tenant_org_role|\$tenant_id|\$tenant_slug|\$tenant_tier|\$tenant_status|\$tenant_outcome";

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location /admin/ {
            tenant_gateway admin;
            proxy_pass     http://%%ECHO%%;
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF2

pg_start();

my $t1 = create_tenant(tier => 'enterprise', status => 'active');
my $t2 = create_tenant(tier => 'starter', status => 'active');

nginx_start(http => $http);


sub metrics {
    my $r = http(path => '/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

sub token_hits { metrics()->{'tenant_cache_hits_total{cache="token"}'} // 0 }

# What the upstream saw that comes from the token and the tenant: the
# tenant headers (but the per-request signature, timestamp and request
# id) and the variables.
sub seen {
    my ($r) = @_;
    my $h = $r->{json}{headers} || {};
    my %s = map  { ($_ => join ',', @{ $h->{$_} }) }
            grep { /^x-(tenant|user|org|organization|vars)/
                   && !/^x-tenant-(signature|timestamp|request-id)$/ }
            keys %$h;
    return \%s;
}

# --- same --------------------------------------------------------------------

my @cases = (
    ['v1 claims, org:admin' => '/api/x',
     sub   => 'user_2cachedabcdefghijklmnopqrs',
     org   => { id => $t1->{clerk_organization_id}, role => 'org:admin',
                slug => 'acme' },
     metadata => { role => 'cfo' }],
    ['v1 claims, other tenant, no role' => '/api/y',
     sub   => 'user_member',
     org   => { id => $t2->{clerk_organization_id} }],
    ['v2 claims ("o")' => '/api/z',
     v     => 2, sts => 'active',
     sub   => 'user_v2',
     org   => { id => $t1->{clerk_organization_id}, role => 'basic_member' }],
    ['administrator, session token' => '/admin/a',
     sub   => 'user_admin',
     metadata => { role => 'admin' }],
);

for my $c (@cases) {
    my ($what, $path, %claims) = @$c;
    my $token = mint_token(%claims);

    my $h0 = token_hits();
    my $miss = http(path => $path, headers => [Authorization => "Bearer $token"]);
    my $h1 = token_hits();
    my $hit = http(path => $path, headers => [Authorization => "Bearer $token"]);
    my $h2 = token_hits();

    is $miss->{status}, 200, "$what: first request admitted (verified)";
    is $h1 - $h0, 0, "$what: ... not from the cache";
    is $hit->{status}, 200, "$what: second request admitted";
    is $h2 - $h1, 1, "$what: ... from the cache";

    my ($a, $b) = (seen($miss), seen($hit));
    ok keys %$a >= ($path =~ m{^/admin/} ? 1 : 4),
        "$what: the upstream saw tenant headers and variables"
        or diag explain $a;
    is_deeply $b, $a, "$what: a hit gives the upstream what the miss gave"
        or diag explain [$a, $b];
    like $a->{'x-vars'} // '', qr/^\Q$claims{sub}\E\|/, "$what: \$tenant_user_id";
}

# the administrator's role is kept, and so is the difference "sid" makes
for my $sid ('sess_1', undef) {
    my $what = defined $sid ? 'administrator with sid' : 'administrator without sid';
    my $token = mint_token(sub => 'user_adm2', sid => $sid, metadata => { role => 'admin' });
    my @st = map { http(path => '/admin/b', headers => [Authorization => "Bearer $token"])->{status} } 1 .. 2;
    is_deeply \@st, defined $sid ? [200, 200] : [403, 403], "$what: @st (miss, then hit)";
}
{
    my $token = mint_token(sub => 'user_notadm', metadata => { role => 'cfo' });
    my @st = map { http(path => '/admin/b', headers => [Authorization => "Bearer $token"])->{status} } 1 .. 2;
    is_deeply \@st, [403, 403], "another role: @st (miss, then hit)";
}

# --- long --------------------------------------------------------------------

{
    my $sub = 'user_' . ('s' x 70);                  # 75 bytes
    my $token = mint_token(sub => $sub,
                           org => { id => $t1->{clerk_organization_id},
                                    role => 'org:' . ('r' x 40) });
    my $h0 = token_hits();
    my @r = map { http(path => '/api/long', headers => [Authorization => "Bearer $token"]) } 1 .. 3;
    is_deeply [map { $_->{status} } @r], [200, 200, 200], 'long claims: admitted each time';
    is token_hits() - $h0, 0, 'long claims: never answered from the cache';
    like seen($r[2])->{'x-vars'}, qr/^\Q$sub\E\|\Q$t1->{clerk_organization_id}\E\|org:r{40}\|/,
        'long claims: whole in the variables';
}

# --- size --------------------------------------------------------------------

{
    my $n = 1400;                 # more than the zone holds
    my $org = $t1->{clerk_organization_id};
    for my $i (1 .. $n) {
        my $token = mint_token(sub => sprintf('user_2fill%020d', $i),
                               org => { id => $org, role => 'org:member' });
        my $r = http(path => '/api/fill', headers => [Authorization => "Bearer $token"]);
        if ($r->{status} != 200) {
            fail "fill: token $i admitted"; last;
        }
    }
    my $m = metrics();
    my $entries = $m->{'tenant_cache_entries{cache="token"}'} // 0;
    my $per_mb = $entries * 1024 / $ZONE_KB;
    my $bytes = $entries ? int($ZONE_KB * 1024 / $entries) : 0;
    ok $entries < $n, "size: the zone is full ($entries entries of $n tokens)";
    cmp_ok $per_mb, '>=', 3500,
        "size: $entries entries in ${ZONE_KB}k, $per_mb per MB (~$bytes bytes an entry)";
    cmp_ok $m->{'tenant_cache_evictions_total{cache="token"}'} // 0, '>', 0,
        'size: the least recently used made room';
}

done_testing();
