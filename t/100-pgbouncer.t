#!/usr/bin/perl
# The gateway behind PgBouncer (Debian's pgbouncer) in transaction mode:
# the pool keeps no session state and names no prepared statement, so
# tenant lookups (uncached and cached, both workers), /api/health and the
# admin API work through it.  LISTEN cannot work through transaction
# pooling: with tenant_database_listen giving a direct connection string
# a change made in SQL is seen at once; without it (the listener going
# through the bouncer too) it is usually not (the TTL brings it), which is
# why the directive exists.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS    ();
use Time::HiRes qw(time sleep);

my $BOUNCER_BIN = '/usr/sbin/pgbouncer';
plan skip_all => 'pgbouncer not installed (scripts/deps.sh)' unless -x $BOUNCER_BIN;

my $SIGNING_KEY = '0123456789abcdef' x 4;
my $JSON = JSON::XS->new->utf8->canonical;

my $pg = pg_start(tcp => 1);


# --- PgBouncer --------------------------------------------------------------

my $bouncer = pgbouncer_start(settings => 'stats_period = 1');
my ($bport, $bpid) = @$bouncer{qw(port pid)};
ok kill(0, $bpid), "pgbouncer started (pid $bpid, port $bport)";

# One admin console command; rows as hashrefs.
sub bouncer_show {
    my ($what) = @_;
    my $out = TenantTest::run_cmd({}, 'psql', '-X', '-q', '-A', '-F', "\t", '-P', 'footer=off',
                                  '-h', '127.0.0.1', '-p', $bport, '-U', 'postgres',
                                  '-c', "SHOW $what", 'pgbouncer');
    my ($head, @lines) = split /\n/, $out;
    my @cols = split /\t/, $head // '';
    return map { my %r; @r{@cols} = split /\t/, $_, -1; \%r } @lines;
}

sub capliquify_row {
    my ($what) = @_;
    my ($r) = grep { ($_->{database} // '') eq 'capliquify' } bouncer_show($what);
    return $r || {};
}


# --- nginx --------------------------------------------------------------------

my $BOUNCED = "host=127.0.0.1 port=$bport dbname=capliquify user=postgres";
my $DIRECT  = $pg->{tcp_conninfo};

sub http_conf {
    my (%o) = @_;
    my $l = $o{listen} ? qq{tenant_database_listen "$o{listen}";}
                       : '# tenant_database_listen: default (through the bouncer)';
    return <<"EOF";
    tenant_database     "$BOUNCED" pool=4 timeout=2s;
    $l
    tenant_cache        zone=tenants:1m ttl=3s negative_ttl=3s;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        add_header X-Worker \$pid always;

        location /api/admin/tenants {
            tenant_gateway admin;
            tenant_admin;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/forecasts/ai {
            tenant_gateway         on;
            tenant_require_feature ai_forecasting;
            proxy_pass             http://%%ECHO%%;
        }

        location = /api/health {
            tenant_health;
        }
    }
EOF
}

my %TOKEN;
sub get {
    my ($org, $path) = @_;
    my $t = $TOKEN{$org} //= mint_token(org => $org);
    return http(path => $path // '/api/products', headers => [Authorization => "Bearer $t"]);
}
sub worker { my ($r) = @_; return ($r->{headers}{'x-worker'} || [])->[0] // '?' }

my $ADMIN = mint_token(metadata => { role => 'admin' }, exp => int(time) + 600);
sub api {
    my ($method, $path, $body) = @_;
    return http(method => $method, path => $path,
                headers => [Authorization => "Bearer $ADMIN",
                            (defined $body ? ('Content-Type' => 'application/json') : ())],
                (defined $body ? (body => $JSON->encode($body)) : ()));
}

# retry_until (the harness's), every 50 ms.
sub poll { my ($secs, $try, $done) = @_; return retry_until($secs, $try, $done, 0.05) }

my $LISTENING = qr/\[notice\].*tenant: listening for tenant changes/;

nginx_start(workers => 2, http => http_conf(listen => $DIRECT));
is scalar(nginx_workers()), 2, 'two workers';
{
    my $start = time;
    sleep 0.05 until error_log() =~ $LISTENING || time - $start > 5;
    like error_log(), $LISTENING, 'the direct listener is listening';
}


# --- (a) tenant lookups through the bouncer ----------------------------------

my @t = map { create_tenant(status => 'active', tier => 'starter') } 1 .. 30;
{
    my (@bad, %workers);
    my $cached = $t[0]{clerk_organization_id};
    for my $t (@t) {
        # an uncached tenant, then a cached one, each on a new connection
        for my $o ($t->{clerk_organization_id}, $cached) {
            my $r = get($o);
            $workers{ worker($r) }++;
            push @bad, "$o: $r->{status} $r->{body}"
                unless $r->{status} == 200
                       && ($r->{json}{headers}{'x-tenant-id'}[0] // '') eq
                          ($o eq $cached ? $t[0]{id} : $t->{id});
        }
    }
    is_deeply \@bad, [], '30 uncached tenants interleaved with a cached one: 60 x 200, right tenant';
    ok keys %workers >= 2, 'both workers looked tenants up' or diag explain \%workers;

    my $r = get('org_nobody_here');
    is $r->{status}, 403, 'an unknown organization: 403 (the lookup answered)';
    is $r->{json}{code}, 'unknown_organization', '... unknown_organization';
}


# --- (b) health ---------------------------------------------------------------

for my $i (1 .. 4) {
    my $r = http(path => '/api/health');
    is $r->{status}, 200, "health through the bouncer ($i): 200";
    like $r->{body}, qr/"database":"connected"/, "health ($i): connected";
}


# --- (c) the admin API --------------------------------------------------------

{
    my $coll = '/api/admin/tenants';
    my $r = api(POST => $coll, { name => 'Bounced', slug => 'bounced', clerkOrganizationId => 'org_bounced',
                                 subscriptionTier => 'starter', ownerEmail => 'o@example.test' });
    is $r->{status}, 201, 'admin: create: 201' or diag $r->{body};
    my $id = $r->{json}{id} // 'none';

    $r = api(PATCH => "$coll/bounced", { subscriptionTier => 'professional' });
    is $r->{status}, 200, 'admin: PATCH: 200' or diag $r->{body};
    is $r->{json}{subscriptionTier}, 'professional', 'admin: PATCH: professional';

    $r = api(GET => "$coll/$id");
    is $r->{status}, 200, 'admin: GET by id: 200' or diag $r->{body};
    is $r->{json}{slug}, 'bounced', 'admin: GET: the tenant';

    $r = api(GET => "$coll?limit=5");
    is $r->{status}, 200, 'admin: list: 200' or diag $r->{body};
    is scalar @{ $r->{json}{tenants} || [] }, 5, 'admin: list: 5 tenants';

    $r = api(DELETE => "$coll/bounced");
    is $r->{status}, 200, 'admin: DELETE: 200' or diag $r->{body};
    is $r->{json}{subscriptionStatus}, 'cancelled', 'admin: DELETE: cancelled';
    is sql_value('SELECT subscription_status FROM public.tenants WHERE slug = $1', 'bounced'),
        'cancelled', 'admin: the database says cancelled';
}


# --- (d) a change in SQL, seen through the direct listener --------------------

{
    my $t = $t[1];
    my $o = $t->{clerk_organization_id};
    is get($o, '/api/forecasts/ai')->{status}, 403, 'listen direct: starter on the ai route: 403';
    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $t->{id});
    my ($r, $secs) = poll(1.5, sub { get($o, '/api/forecasts/ai') }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'listen direct: the upgrade made in SQL is seen';
    ok $secs < 1, sprintf('listen direct: ... after %.2f s (ttl=3s)', $secs);
}


# --- (e) the traffic went through the bouncer ---------------------------------

{
    sleep 1.2;      # stats_period = 1
    my $s = capliquify_row(q{STATS});
    ok(($s->{total_xact_count} // 0) >= 36,
       "SHOW STATS: total_xact_count $s->{total_xact_count} (>= 31 uncached lookups and 5 admin calls)")
        or diag explain $s;
    my $p = capliquify_row('POOLS');
    is $p->{pool_mode}, 'transaction', 'SHOW POOLS: pool_mode transaction';
    ok(($p->{sv_active} // 0) + ($p->{sv_idle} // 0) + ($p->{sv_used} // 0) <= 4,
       "SHOW POOLS: at most default_pool_size server connections") or diag explain $p;
    my @clients = grep { ($_->{database} // '') eq 'capliquify' } bouncer_show('CLIENTS');
    ok @clients >= 1, scalar(@clients) . ' gateway client connection(s) on the bouncer';
}


# --- (f) the listener through the bouncer: changes are not seen ---------------

# Without tenant_database_listen the listener uses tenant_database's
# conninfo, i.e. the bouncer: its LISTEN runs on whichever server
# connection serves that one transaction, which then goes back to the
# pool; the NOTIFY reaches the listener's client connection only by
# chance.  This is why tenant_database_listen takes a direct connection
# string.
{
    nginx_reload(http => http_conf());
    is scalar(nginx_workers()), 2, 'listen via the bouncer: reloaded, two workers';
    sleep 0.5;

    my $t = $t[2];
    my $o = $t->{clerk_organization_id};
    is get($o, '/api/forecasts/ai')->{status}, 403, 'listen via the bouncer: starter: 403';
    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $t->{id});
    my $start = time;
    my @seen;
    while (time - $start < 1.5) {
        push @seen, get($o, '/api/forecasts/ai')->{status};
        sleep 0.1;
    }
    # Usually not seen; but now and then (1 run in 5 here) the server
    # connection that ran the LISTEN happens to deliver the NOTIFY to the
    # listener anyway, so this is reported, not asserted: what matters is
    # that it cannot be relied upon.
    my $got = grep { $_ == 200 } @seen;
    is_deeply [grep { $_ != 403 && $_ != 200 } @seen], [],
        'listen via the bouncer: 1.5 s after the UPDATE, only 403 or 200 (' . @seen . ' requests)';
    note $got ? "listen via the bouncer: the upgrade happened to be seen ($got of " . @seen . ')'
              : 'listen via the bouncer: the upgrade was NOT seen within 1.5 s (ttl=3s)';

    # Still served, and the TTL (3 s) brings the change.
    my ($r, $secs) = poll(4, sub { get($o, '/api/forecasts/ai') }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, sprintf('listen via the bouncer: seen after the TTL (%.2f s more)', $secs);

    is get($t[3]{clerk_organization_id})->{status}, 200, 'listen via the bouncer: lookups still work';
    ok kill(0, $bpid), 'pgbouncer still running';
}

unlike error_log(), qr/\[crit\]/, 'error log: no [crit]';

done_testing();
