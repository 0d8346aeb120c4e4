#!/usr/bin/perl
# Organization -> tenant: which organization a request is for (token
# claim, X-Organization-ID), the tenant's status, and the tenant cache
# (TTL, negative entries) in front of PostgreSQL.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = '0123456789abcdef' x 4;

# The gateway's http block; %%TTL%% is replaced below (the TTL tests reload
# with another value).
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" timeout=3s;
    tenant_cache        zone=tenants:1m ttl=%%TTL%% negative_ttl=1s stale=5m;
    # the cache's own timing is tested here: no LISTEN for changes
    tenant_database_listen off;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter      features=api;
    tenant_tier         professional features=api,reports;
    tenant_tier         enterprise   features=*;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway     on;
            tenant_upgrade_url "https://billing.test/upgrade?plan=\$tenant_required_tier&org=\$tenant_org_id";
            proxy_pass         http://%%ECHO%%;
        }
    }
EOF

sub http_conf { my ($ttl) = @_; return $HTTP =~ s/%%TTL%%/$ttl/r }


# --- local helpers ----------------------------------------------------------

# GET /api/products with a token (org => ..., or token => raw) and any
# X-Organization-ID headers (org_header => 'x' or ['x', 'y']).
sub get {
    my (%o) = @_;

    my $token = exists $o{token} ? $o{token}
              : mint_token(exists $o{org} ? (org => $o{org}) : (),
                           %{ $o{claims} || {} });
    my @h = (Authorization => "Bearer $token");
    if (exists $o{org_header}) {
        my $v = $o{org_header};
        push @h, map { ('X-Organization-ID' => $_) } ref $v ? @$v : ($v);
    }
    return http(path => $o{path} // '/api/products', headers => \@h);
}

# The upstream's view of one header, or the refusal's code.
sub upstream { my ($r, $name) = @_; return ($r->{json}{headers}{$name} || [])->[0] }
sub code     { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }

# One case: status, problem code (for refusals), and for 200 the tenant
# the upstream saw.
sub expect {
    my ($r, $status, $code, $name, %x) = @_;

    my $ok = is $r->{status}, $status, "$name: $status";
    if ($status == 200) {
        $ok &&= is upstream($r, 'x-tenant-id'), $x{tenant}{id},
            "$name: upstream saw tenant $x{tenant}{clerk_organization_id}"
            if $x{tenant};
    } else {
        $ok &&= is code($r), $code, "$name: code $code";
        like $r->{headers}{'content-type'}[0] // '', qr{^application/problem\+json},
            "$name: problem+json";
    }
    diag explain { status => $r->{status}, body => $r->{body} } unless $ok;
    return $r;
}

# Sleeps until the wall clock is at most 0.2 s into a second, so that a
# 1 s cache entry made now is still fresh for ~0.8 s (nginx's cache clock
# ticks in whole seconds).
sub second_start {
    my $frac = time - int time;
    sleep 1 - $frac if $frac > 0.2;
}

sub tenants_count { sql_value('SELECT count(*) FROM public.tenants') }


# --- setup ----------------------------------------------------------------

pg_start();

my %t = (
    active    => create_tenant(status => 'active', tier => 'professional'),
    other     => create_tenant(status => 'active'),
    trial     => create_tenant(status => 'trial',     trial_ends_at => 3600),
    trial_old => create_tenant(status => 'trial',     trial_ends_at => -3600,
                               tier => 'professional'),
    expired   => create_tenant(status => 'expired',   tier => 'starter'),
    suspended => create_tenant(status => 'suspended'),
    cancelled => create_tenant(status => 'cancelled'),
    past_due  => create_tenant(status => 'past_due'),
);
my %org = map { $_ => $t{$_}{clerk_organization_id} } keys %t;

nginx_start(http => http_conf('30s'));


# --- organization: the token's, which a header may only repeat ------------

{
    my $A = $org{active};

    expect get(org => $A, org_header => $A), 200, undef,
        'token org, same X-Organization-ID', tenant => $t{active};

    my $r = expect get(org => $A), 200, undef,
        'token org, no X-Organization-ID', tenant => $t{active};
    is upstream($r, 'x-organization-id'), $A, 'upstream X-Organization-ID is the token org';
    is upstream($r, 'x-tenant-tier'), 'professional', 'upstream X-Tenant-Tier';

    expect get(token => mint_token(v => 2, org => { id => $A, role => 'org:admin' })),
        200, undef, 'v2 token (o.id)', tenant => $t{active};

    $r = expect get(org => $A, org_header => $org{other}), 403, 'organization_mismatch',
        'header names another (existing) organization';
    is $r->{json}{organizationId}, $A,
        'organization_mismatch: organizationId is the session\'s, not the header\'s';

    $r = expect get(org_header => $A), 403, 'organization_mismatch',
        'token without org + header: no picking an organization by header';
    ok !exists $r->{json}{organizationId},
        'organization_mismatch without a session org: no organizationId (the header is not echoed)';

    expect get(), 400, 'organization_required', 'token without org, no header';

    expect get(org => $A, org_header => [$A, $A]), 400, 'ambiguous_organization',
        'two X-Organization-ID headers (same value)';
    expect get(org => $A, org_header => [$A, $org{other}]), 400, 'ambiguous_organization',
        'two X-Organization-ID headers (different values)';
    expect get(org_header => [$A, $A]), 400, 'ambiguous_organization',
        'two headers, token without org';

    # Header values outside visible ASCII, or too long.
    my @invalid = (
        ['space inside',     'org_a b'],
        ['control byte',     "org_a\x01b"],
        ['DEL',              "org_a\x7f"],
        ['UTF-8',            "org_\xc3\xa9t\xc3\xa9"],
        ['latin-1 byte',     "org_\xe9"],
        ['129 bytes',        'o' x 129],
        ['4 KB',             'o' x 4096],
    );
    for my $c (@invalid) {
        my ($name, $v) = @$c;
        expect get(org => $A, org_header => $v), 400, 'invalid_organization',
            "X-Organization-ID: $name";
    }

    # 128 bytes is allowed: the header passes and is compared with the token.
    my $long = 'org_' . ('x' x 124);
    expect get(org => $long, org_header => $long), 403, 'unknown_organization',
        'X-Organization-ID of 128 bytes = token org: looked up';
    expect get(org => $A, org_header => $long), 403, 'organization_mismatch',
        'X-Organization-ID of 128 bytes != token org: mismatch';

    # Client-sent tenant headers never reach the upstream.
    $r = http(path => '/api/products', headers => [
        Authorization => 'Bearer ' . mint_token(org => $A),
        'X-Tenant-ID'   => 'forged',
        'X-Tenant-Tier' => 'enterprise',
    ]);
    is $r->{status}, 200, 'forged X-Tenant-* headers: 200';
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t{active}{id}], 'forged X-Tenant-ID replaced';
    is_deeply $r->{json}{headers}{'x-tenant-tier'}, ['professional'], 'forged X-Tenant-Tier replaced';
}


# --- unknown organizations, SQL metacharacters ----------------------------

{
    my $r = expect get(org => 'org_does_not_exist'), 403, 'unknown_organization',
        'unknown organization';
    is $r->{json}{organizationId}, 'org_does_not_exist', 'unknown: organizationId member';

    my $before = tenants_count();

    # Org ids with SQL metacharacters but only visible ASCII reach the
    # (parameterized) lookup and find nothing.
    my @sqlish = (
        q{org_x'OR'1'='1},
        q{org_x';DROP/**/TABLE/**/public.tenants;--},
        q{org_x"||pg_sleep(5)||"},
        q{org_x\\'},
    );
    for my $o (@sqlish) {
        $r = expect get(org => $o), 403, 'unknown_organization', "token org $o";
        ok $r->{elapsed} < 2, "token org $o: answered at once";
        is $r->{json}{organizationId}, $o, "token org $o: organizationId echoed as is";
    }

    # The same with spaces: refused before any lookup as
    # invalid_organization (400), since token org ids get the header's
    # visible-ASCII rule (Clerk's ids are org_ + base62).
    my @spaced = (
        q{org_x' OR '1'='1},
        q{org_x'; DROP TABLE public.tenants; --},
    );
    for my $o (@spaced) {
        $r = get(org => $o);
        is $r->{status}, 400, "token org \"$o\": 400"
            or diag $r->{body};
        is code($r), 'invalid_organization', "token org \"$o\": invalid_organization";
    }

    is tenants_count(), $before, 'public.tenants: same number of rows';
    ok sql_value(q{SELECT to_regclass('public.tenants') IS NOT NULL}), 'public.tenants still exists';
    expect get(org => $org{active}), 200, undef, 'known tenant still resolves after the attempts',
        tenant => $t{active};
}


# --- tenant status --------------------------------------------------------

{
    my @cases = (
        # tenant      status code                  name
        ['active',    200, undef,              'active'],
        ['trial',     200, undef,              'trial, ends in an hour'],
        ['past_due',  200, undef,              'past_due: let in, the backend nags'],
        ['trial_old', 402, 'trial_expired',    'trial, ended an hour ago'],
        ['expired',   402, 'trial_expired',    'expired'],
        ['suspended', 403, 'tenant_suspended', 'suspended'],
        ['cancelled', 403, 'tenant_suspended', 'cancelled'],
    );
    for my $c (@cases) {
        my ($k, $status, $code, $name) = @$c;
        expect get(org => $org{$k}), $status, $code, "status $name",
            tenant => $t{$k};
    }

    my $r = get(org => $org{trial_old});
    is $r->{json}{currentTier}, 'professional', 'trial_expired: currentTier';
    is $r->{json}{upgradeUrl},
        "https://billing.test/upgrade?plan=professional&org=$org{trial_old}",
        'trial_expired: upgradeUrl with $tenant_required_tier and $tenant_org_id';
    is $r->{json}{status}, 402, 'trial_expired: status member';

    $r = get(org => $org{expired});
    is $r->{json}{currentTier}, 'starter', 'expired: currentTier';
    like $r->{json}{upgradeUrl} // '', qr{^https://billing\.test/upgrade\?plan=starter&org=\Q$org{expired}\E$},
        'expired: upgradeUrl';

    $r = get(org => $org{suspended});
    is $r->{json}{organizationId}, $org{suspended}, 'suspended: organizationId';
    ok !exists $r->{json}{upgradeUrl}, 'suspended: no upgradeUrl (money does not fix it)';
}


# --- negative cache (negative_ttl=1s) --------------------------------------

{
    # A tenant made under another org id, renamed to the wanted one right
    # after the 403: creating the schema takes longer than the window.
    my $want = 'org_created_later';
    my $t = create_tenant(status => 'active');

    second_start();
    expect get(org => $want), 403, 'unknown_organization', 'negative: unknown at first';
    sql('UPDATE public.tenants SET clerk_organization_id = $1 WHERE id = $2', $want, $t->{id});
    my $start = time;
    expect get(org => $want), 403, 'unknown_organization',
        'negative: tenant exists now, the cached 403 still answers';

    my $r;
    while (1) {
        $r = get(org => $want);
        last if $r->{status} == 200 || time - $start > 3;
        sleep 0.1;
    }
    my $after = time - $start;
    expect $r, 200, undef, 'negative: 200 once negative_ttl passed', tenant => $t;
    ok $after < 2.5, sprintf('negative: seen after %.2f s (negative_ttl=1s)', $after);
}


# --- positive cache TTL ---------------------------------------------------

# ttl=30s: a change in SQL is not seen within a second.
{
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $o = $t->{clerk_organization_id};

    is upstream(get(org => $o), 'x-tenant-tier'), 'starter', 'ttl=30s: warm (starter)';
    sql(q{UPDATE public.tenants SET subscription_tier = 'enterprise' WHERE id = $1}, $t->{id});

    my @seen;
    my $start = time;
    while (time - $start < 1.2) {
        push @seen, upstream(get(org => $o), 'x-tenant-tier') // 'none';
        sleep 0.2;
    }
    is_deeply [grep { $_ ne 'starter' } @seen], [],
        'ttl=30s: still starter for 1 s after the UPDATE (' . @seen . ' requests)';
}

# ttl=1s: the change is seen after a second or two.
nginx_reload(http => http_conf('1s'));
{
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $o = $t->{clerk_organization_id};

    second_start();
    is upstream(get(org => $o), 'x-tenant-tier'), 'starter', 'ttl=1s: warm (starter)';
    sql(q{UPDATE public.tenants SET subscription_tier = 'enterprise' WHERE id = $1}, $t->{id});
    my $start = time;
    is upstream(get(org => $o), 'x-tenant-tier'), 'starter', 'ttl=1s: cached right after the UPDATE';

    my $tier;
    while (1) {
        $tier = upstream(get(org => $o), 'x-tenant-tier') // 'none';
        last if $tier eq 'enterprise' || time - $start > 3;
        sleep 0.1;
    }
    my $after = time - $start;
    is $tier, 'enterprise', 'ttl=1s: the UPDATE is seen';
    ok $after < 2.5, sprintf('ttl=1s: seen after %.2f s', $after);

    # Status changes too: suspended in SQL -> 403 after the TTL.
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    $start = time;
    my $r;
    while (1) {
        $r = get(org => $o);
        last if $r->{status} != 200 || time - $start > 3;
        sleep 0.1;
    }
    expect $r, 403, 'tenant_suspended', 'ttl=1s: suspension seen after the TTL';
}

# --- a tenants row out of the module's bounds -------------------------------

# ngx_tenant_lookup.c, ngx_tenant_lookup_record (via ngx_tenant_lookup_store):
# rows the schema's CHECKs allow but the module does not accept (a rate
# above TENANT_RATE_MAX_LIMIT = 100000000, a trial end before 1970 whose
# epoch is negative) -> 503 tenant_unavailable with Retry-After and one
# [error] "has a value out of bounds"; nothing of the row reaches the
# upstream, and the bad row is not cached (fixing it is seen at once).
{
    my @bad = (
        ['rate_limit_override 200000000', {status => 'active', rate_limit => 200_000_000}],
        ['rate_limit_override 2147483647', {status => 'active', rate_limit => 2_147_483_647}],
        ['trial_ends_at 1960-01-01 (negative epoch)',
         {status => 'trial', trial_ends_at => '1960-01-01 00:00:00+00'}],
    );
    for my $c (@bad) {
        my ($name, $set) = @$c;
        my $t = create_tenant(%$set);
        my $o = $t->{clerk_organization_id};

        my $mark = log_mark();
        for my $i (1 .. 2) {
            my $r = expect get(org => $o), 503, 'tenant_unavailable', "row out of bounds, $name, try $i";
            like $r->{headers}{'retry-after'}[0] // '', qr/^\d+$/,
                "row out of bounds, $name, try $i: Retry-After";
            ok !grep({ /^x-tenant-/ } keys %{ $r->{json}{headers} || {} }),
                "row out of bounds, $name, try $i: the upstream was not reached (no X-Tenant-* seen)";
            ok !exists $r->{headers}{'x-tenant-id'},
                "row out of bounds, $name, try $i: no X-Tenant-ID in the answer";
        }
        my @err = error_log(since => $mark)
            =~ /^(.*\[error\].*tenants row of organization "\Q$o\E" has a value out of bounds.*)$/mg;
        is scalar(@err), 2, "row out of bounds, $name: one [error] per lookup (not cached)"
            or diag error_log(since => $mark);

        # repaired in SQL: looked up again at once
        sql(q{UPDATE public.tenants SET rate_limit_override = NULL,
                     subscription_status = 'active', trial_ends_at = NULL WHERE id = $1}, $t->{id});
        expect get(org => $o), 200, undef, "row out of bounds, $name: repaired: 200", tenant => $t;
    }
}

# The bounds' other side: the largest rate the module accepts, and a
# trial end far in the future (its epoch fits time_t; slug, schema and
# tier cannot exceed the record's buffers: the CHECKs are tighter), are
# served.
{
    my $t = create_tenant(status => 'active', rate_limit => 100_000_000);
    expect get(org => $t->{clerk_organization_id}), 200, undef,
        'rate_limit_override 100000000 (the maximum): 200', tenant => $t;

    $t = create_tenant(status => 'trial', trial_ends_at => '4000-01-01 00:00:00+00');
    expect get(org => $t->{clerk_organization_id}), 200, undef,
        'trial_ends_at 4000-01-01: within bounds, trial admitted', tenant => $t;
}

unlike error_log(), qr/\[crit\]/, 'error log: no [crit]';

done_testing();
