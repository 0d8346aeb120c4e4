#!/usr/bin/perl
# PostgreSQL goes away, or stalls: cached tenants keep being served (also
# stale ones, past their TTL), uncached ones get a quick 503 with
# Retry-After, never a hang or a 500; the pool reconnects by itself when
# the database is back; /api/health says what is going on.  Two workers
# share the tenant cache.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use DBI              ();
use IO::Socket::INET ();
use JSON::XS    ();
use POSIX       ();
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = 'fedcba9876543210' x 4;
my $TIMEOUT     = 1;                    # tenant_database timeout=, seconds

# Two workers; reuseport spreads new connections over both.  X-Worker says
# which one answered.  %%TTL%% is replaced below.
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" pool=2 timeout=${TIMEOUT}s;
    tenant_cache        zone=tenants:1m ttl=%%TTL%% negative_ttl=5s stale=5m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter    features=api;
    tenant_tier         enterprise features=*;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        add_header X-Worker \$pid always;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/health {
            tenant_health;
        }
    }
EOF

sub http_conf { my ($ttl) = @_; return $HTTP =~ s/%%TTL%%/$ttl/r }

# The outage makes the pool log at [error] (connect failed, no answer
# within the timeout) and [warn] (stale entry served).  The final log
# check only fails on [alert]/[emerg]/crashes; these are listed anyway so
# that they stay allowed whatever that check becomes.
error_log_allow(
    qr/\[error\].*tenant: PostgreSQL failed while /,
    qr/\[error\].*tenant: PostgreSQL did not answer within /,
    qr/\[warn\].*tenant: database unavailable, serving the cached tenant/,
    qr/\[info\].*tenant: idle PostgreSQL connection closed/,
    qr/\[error\].*tenant: tenant lookup failed: /,
);


# --- local helpers ----------------------------------------------------------

my %TOKEN;      # one token per org: the token cache is not what is tested

sub get {
    my ($org, %o) = @_;
    my $token = $TOKEN{$org} //= mint_token(org => $org);
    return http(path => '/api/products', timeout => $o{timeout} // 10,
                headers => [Authorization => "Bearer $token"]);
}

sub health { return http(path => '/api/health', @_) }

sub code   { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub worker { my ($r) = @_; return ($r->{headers}{'x-worker'} || [])->[0] // '?' }
sub brief  { my ($r) = @_; return sprintf '%s %s (%.2fs) %s', $r->{status},
                 code($r), $r->{elapsed} // 0, $r->{error} // '' }


# pg_stall() (SIGSTOP to the cluster) and pg_unstall() (SIGCONT) are the
# harness's: it continues a stalled cluster before stopping it at exit.


# --- setup ----------------------------------------------------------------

my $pg = pg_start();

my %t = map { $_ => create_tenant(status => 'active') } qw(A B C D E);
my %org = map { $_ => $t{$_}{clerk_organization_id} } keys %t;

my $ngx = nginx_start(workers => 2, http => http_conf('30s'));
is scalar(nginx_workers()), 2, 'two workers';

my @all;        # every response of the outage, checked for 500s at the end

{
    my $r = health();
    is $r->{status}, 200, 'health: 200 while the database is up';
    is $r->{json}{status}, 'healthy', 'health: healthy';
    is $r->{json}{database}, 'connected', 'health: connected';
    like $r->{json}{uptime} // '', qr/^\d+$/, 'health: uptime is a whole number';

    $r = health(method => 'POST', body => '{}');
    is $r->{status}, 405, 'health: POST -> 405';
    $r = health(method => 'DELETE');
    is $r->{status}, 405, 'health: DELETE -> 405';
    $r = health(method => 'HEAD');
    is $r->{status}, 200, 'health: HEAD -> 200';
}

# Warm A (served by one worker; the other worker never saw it).
my $warm = get($org{A});
is $warm->{status}, 200, 'A: warm, 200';
is_deeply $warm->{json}{headers}{'x-tenant-id'}, [$t{A}{id}], 'A: upstream saw tenant A';
my $warmed_by = worker($warm);


# --- the database is killed -------------------------------------------------

# With a lookup in flight: the lookup waits on a table lock held by another
# session, then the server dies under it.  The dropped connection is
# noticed at once (an event), not when the timeout fires.
{
    my $locker = DBI->connect("dbi:Pg:dbname=capliquify;host=$pg->{socket};port=$pg->{port}",
                              'postgres', '', { RaiseError => 1, PrintError => 0,
                                                AutoCommit => 1, InactiveDestroy => 1 });
    $locker->begin_work;
    $locker->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');

    my $bg = async_http(path => '/api/products', timeout => 8, headers =>
                        [Authorization => 'Bearer ' . mint_token(org => $org{E})]);
    sleep 0.3;
    my $c = get($org{A}, timeout => 5);
    ok $c->{status} == 200 && $c->{elapsed} < 0.5, 'cached A while a lookup waits on a lock: fast'
        or diag brief($c);

    pg_kill();
    my $r = wait_http($bg);
    push @all, $r;
    is $r->{status}, 503, 'lookup in flight when the server dies: 503' or diag brief($r);
    is code($r), 'tenant_unavailable', 'lookup in flight: tenant_unavailable';
    ok $r->{elapsed} < $TIMEOUT,
        sprintf('lookup in flight: answered after %.2f s, before the %d s timeout', $r->{elapsed}, $TIMEOUT);
    undef $locker;
}
ok !eval { sql('SELECT 1'); 1 }, 'database killed (immediate shutdown)';

# Cached A from both workers: the cache is shared.
{
    my (%by, @bad);
    for (1 .. 20) {
        my $r = get($org{A});
        push @all, $r;
        $by{ worker($r) }++;
        push @bad, brief($r) unless $r->{status} == 200;
    }
    is_deeply \@bad, [], 'A (cached): 20 requests on new connections, all 200';
    my @others = grep { $_ ne $warmed_by } keys %by;
    ok @others, "A (cached): answered by the worker that never looked it up too"
        or diag explain { warmed_by => $warmed_by, served => \%by };
}

# Uncached B: a quick 503, whichever worker.
for my $i (1 .. 4) {
    my $r = get($org{B}, timeout => 5);
    push @all, $r;
    is $r->{status}, 503, "B (uncached), try $i: 503" or diag brief($r);
    is code($r), 'tenant_unavailable', "B, try $i: tenant_unavailable";
    like $r->{headers}{'retry-after'}[0] // '', qr/^\d+$/, "B, try $i: Retry-After";
    ok $r->{elapsed} < 3, sprintf("B, try %d: answered in %.2f s (timeout=%ds)", $i, $r->{elapsed}, $TIMEOUT);
}

{
    # A worker reuses its last ping's answer for a second: the outage
    # shows within about a second, each answer still quick.
    my ($r, $slow) = (undef, 0);
    my $start = time;
    while (1) {
        $r = health(timeout => 5);
        $slow++ if $r->{elapsed} >= 3;
        last if $r->{status} == 503 || time - $start > 4;
        sleep 0.1;
    }
    is $r->{status}, 503, 'health: 503 while the database is down';
    ok time - $start < 2.5, sprintf('health: down seen after %.2f s', time - $start);
    is $slow, 0, 'health: every answer quick meanwhile';
    is $r->{json}{status}, 'unhealthy', 'health: unhealthy';
    is $r->{json}{database}, 'disconnected', 'health: disconnected';
    like $r->{json}{uptime} // '', qr/^\d+$/, 'health: uptime';
    ok $r->{elapsed} < 3, sprintf('health: answered in %.2f s', $r->{elapsed});
}

# --- back: the pool reconnects, no reload -----------------------------------

pg_restart();
{
    my ($r, $secs) = retry_until(5, sub { get($org{B}) }, sub { $_[0]{status} == 200 });
    push @all, $r;
    is $r->{status}, 200, sprintf('B: 200 again %.1f s after the restart, no reload', $secs)
        or diag brief($r);
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t{B}{id}], 'B: upstream saw tenant B';

    ($r, $secs) = retry_until(5, sub { health() }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, sprintf('health: 200 again after %.1f s', $secs);
    is $r->{json}{database}, 'connected', 'health: connected again';

    # Both workers reconnected: a handful of new lookups all succeed.
    my @bad;
    for my $k (qw(C D E)) {
        my ($r) = retry_until(5, sub { get($org{$k}) }, sub { $_[0]{status} == 200 });
        push @bad, "$k: " . brief($r) unless $r->{status} == 200;
    }
    is_deeply \@bad, [], 'C, D, E: looked up after the restart';
}


# --- the database stalls (SIGSTOP) ------------------------------------------

# Fresh tenants (in SQL, not in the cache) for the stall.
my @S = map { "S$_" } 1 .. 8;
my %s = map { $_ => create_tenant(status => 'active') } @S, 'S9', 'S10';
my %sorg = map { $_ => $s{$_}{clerk_organization_id} } keys %s;

sleep 1.1;      # no worker is in its fail-fast second after the restart

{
    my $n = pg_stall();
    ok $n >= 2, "database stalled: SIGSTOP to the postmaster and its children ($n processes)";

    # More uncached lookups than the pools have connections (2 workers x
    # pool=2), and a health check, all at once.
    my @bg = map { async_http(path => '/api/products', timeout => 8, headers =>
                       [Authorization => 'Bearer ' . mint_token(org => $sorg{$_})]) } @S;
    my $bg_health = async_http(path => '/api/health', timeout => 8);

    # A client that gives up while its lookup waits.
    my $gone = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $ngx->{port});
    print $gone "GET /api/products HTTP/1.1\r\nHost: localhost\r\n"
              . 'Authorization: Bearer ' . mint_token(org => $sorg{S9}) . "\r\n\r\n";
    sleep 0.1;
    close $gone;

    # Meanwhile cached tenants answer at once.
    my @slow;
    for my $k ((qw(A B C)) x 3) {
        my $r = get($org{$k}, timeout => 5);
        push @all, $r;
        push @slow, "$k: " . brief($r) unless $r->{status} == 200 && $r->{elapsed} < 0.5;
    }
    is_deeply \@slow, [], 'cached A, B, C during the stall: 200 in < 0.5 s each';

    my (@bad, @slowest);
    for my $i (0 .. $#bg) {
        my $r = wait_http($bg[$i]);
        push @all, $r;
        push @slowest, $r->{elapsed} // 99;
        push @bad, "$S[$i]: " . brief($r)
            unless $r->{status} == 503 && code($r) eq 'tenant_unavailable'
                   && $r->{headers}{'retry-after'};
    }
    is_deeply \@bad, [], scalar(@S) . ' uncached lookups during the stall: 503 tenant_unavailable, Retry-After';
    my ($max) = sort { $b <=> $a } @slowest;
    ok $max < $TIMEOUT + 1.5,
        sprintf('uncached lookups: all answered within %.2f s (timeout=%ds), no hang', $max, $TIMEOUT);

    my $r = wait_http($bg_health);
    is $r->{status}, 503, 'health during the stall: 503';
    is $r->{json}{database}, 'disconnected', 'health during the stall: disconnected';
    ok $r->{elapsed} < $TIMEOUT + 1.5, sprintf('health during the stall: answered in %.2f s', $r->{elapsed});

    $r = get($org{A}, timeout => 5);
    ok $r->{status} == 200 && $r->{elapsed} < 0.5, 'cached A after the timeouts: still fast'
        or diag brief($r);

    pg_unstall();

    ($r, my $secs) = retry_until(5, sub { get($sorg{S10}) }, sub { $_[0]{status} == 200 });
    push @all, $r;
    is $r->{status}, 200, sprintf('S10: looked up %.1f s after SIGCONT', $secs) or diag brief($r);
    ($r) = retry_until(5, sub { get($sorg{S1}) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'S1 (refused during the stall): 200 now';
    ($r) = retry_until(5, sub { get($sorg{S9}) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'S9 (its client went away during the stall): 200 now';
    is scalar(nginx_workers()), 2, 'both workers still there';
}


# --- stale entries: past the TTL, the database gone -------------------------

nginx_reload(http => http_conf('1s'));
is scalar(nginx_workers()), 2, 'reloaded with ttl=1s stale=5m';

# --- the lookup gets an SQL error -------------------------------------------

# ngx_tenant_lookup.c, ngx_tenant_lookup_store: the lookup statement fails with an
# SQL error while the database is up (a renamed column): uncached tenants
# get 503 tenant_unavailable with Retry-After and one [error] "tenant
# lookup failed: <the server's message>"; a cached tenant past its TTL is
# still served (stale=5m); undoing the rename makes lookups work again.
my $renamed;        # undone at exit too, if the block dies halfway
END {
    if ($renamed) {
        eval { pg_unstall(); sql('ALTER TABLE public.tenants RENAME COLUMN subscription_tier_x TO subscription_tier') };
    }
}
{
    my %q = map { $_ => create_tenant(status => 'active') } qw(Q1 Q2 Q3);
    my %qorg = map { $_ => $q{$_}{clerk_organization_id} } keys %q;

    my $r = get($qorg{Q1});
    is $r->{status}, 200, 'SQL error: Q1 warm (ttl=1s)';

    sql('ALTER TABLE public.tenants RENAME COLUMN subscription_tier TO subscription_tier_x');
    $renamed = 1;

    my $mark = log_mark();
    $r = get($qorg{Q2}, timeout => 5);
    push @all, $r;
    is $r->{status}, 503, 'SQL error: uncached Q2: 503' or diag brief($r);
    is code($r), 'tenant_unavailable', 'SQL error: uncached Q2: tenant_unavailable';
    like $r->{headers}{'content-type'}[0] // '', qr{^application/problem\+json},
        'SQL error: uncached Q2: problem+json';
    like $r->{headers}{'retry-after'}[0] // '', qr/^\d+$/, 'SQL error: uncached Q2: Retry-After';
    ok $r->{elapsed} < 0.5, sprintf('SQL error: answered at once (%.2f s)', $r->{elapsed});
    ok !exists $r->{json}{headers}, 'SQL error: the upstream was not reached';

    my @err = error_log(since => $mark) =~ /^(.*\[error\].*tenant: tenant lookup failed: .*)$/mg;
    is scalar(@err), 1, 'SQL error: one [error] line for the failed lookup'
        or diag error_log(since => $mark);
    like $err[0] // '', qr/tenant lookup failed: ERROR:\s+column "subscription_tier" does not exist/,
        'SQL error: ... naming the failure (the server\'s message, first line)';

    # Q1 past its TTL: served from the cache while its refresh fails.
    sleep 1.5;
    my @bad;
    for my $i (1 .. 4) {
        $r = get($qorg{Q1}, timeout => 5);
        push @all, $r;
        push @bad, "try $i: " . brief($r)
            unless $r->{status} == 200 && $r->{elapsed} < 0.5
                   && ($r->{json}{headers}{'x-tenant-id'} || [])->[0] eq $q{Q1}{id};
    }
    is_deeply \@bad, [], 'SQL error: stale Q1 served (200, at once, its tenant id) x 4';
    # (the refresh runs in the background: its warn may come a moment later)
    my ($log) = retry_until(2, sub { error_log(since => $mark) },
        sub { $_[0] =~ /serving the cached tenant of organization "\Q$qorg{Q1}\E"/ });
    like $log,
        qr/\[warn\].*serving the cached tenant of organization "\Q$qorg{Q1}\E" past its TTL/,
        'SQL error: ... its background refresh failed (warn "serving the cached tenant")';

    $r = get($qorg{Q3}, timeout => 5);
    push @all, $r;
    is $r->{status}, 503, 'SQL error: another uncached tenant: 503' or diag brief($r);

    sql('ALTER TABLE public.tenants RENAME COLUMN subscription_tier_x TO subscription_tier');
    $renamed = 0;

    my $secs;
    ($r, $secs) = retry_until(5, sub { get($qorg{Q2}) }, sub { $_[0]{status} == 200 });
    push @all, $r;
    is $r->{status}, 200, sprintf('SQL error undone: Q2 looked up %.1f s later', $secs)
        or diag brief($r);
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$q{Q2}{id}], 'SQL error undone: upstream saw Q2';
    ($r) = retry_until(5, sub { get($qorg{Q3}) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'SQL error undone: Q3 200 (both workers\' connections recovered)';
    my @w;
    for (1 .. 6) {
        my $t = create_tenant(status => 'active');
        my $x = get($t->{clerk_organization_id});
        push @w, brief($x) unless $x->{status} == 200;
    }
    is_deeply \@w, [], 'SQL error undone: 6 new tenants on new connections, all 200';
    unlike error_log(since => $mark), qr/\[(alert|crit)\]/, 'SQL error: no [alert] or [crit]';
}


{
    my $r = get($org{D});
    is $r->{status}, 200, 'D: warm (ttl=1s)';

    # Stalled: a tenant past its TTL is served at once while a background
    # lookup refreshes it; the stall slows no request whose tenant is
    # cached, stale or not.
    pg_stall();
    sleep 1.5;
    for my $i (1 .. 3) {
        $r = get($org{D}, timeout => 5);
        push @all, $r;
        is $r->{status}, 200, "stale D, database stalled, request $i: 200";
        ok $r->{elapsed} < 0.5,
            sprintf('stale D, database stalled, request %d: answered at once (%.2f s)',
                    $i, $r->{elapsed});
    }
    pg_unstall();
    ($r) = retry_until(5, sub { get($org{E}) }, sub { $_[0]{status} == 200 && $_[0]{elapsed} < 0.5 });
    is $r->{status}, 200, 'after SIGCONT: E 200';

    $r = get($org{D});
    is $r->{status}, 200, 'D: warm again';
    pg_kill();
    my $mark = log_mark();
    sleep 1.5;                              # D's TTL has passed

    my @bad;
    for my $k ((qw(D A B)) x 4) {
        $r = get($org{$k}, timeout => 5);
        push @all, $r;
        push @bad, "$k: " . brief($r) unless $r->{status} == 200;
        ok $r->{elapsed} < 0.5, sprintf("stale %s: answered at once (%.2f s)", $k, $r->{elapsed});
    }
    is_deeply \@bad, [], 'D, A, B past their TTL, database down: 200 (stale served)';
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t{B}{id}], 'stale B: upstream saw tenant B';

    # (D's own refresh may have failed just before the mark, when the
    # database went away under it: any of the three will do)
    like error_log(since => $mark),
        qr/\[warn\].*serving the cached tenant of organization "(\Q$org{D}\E|\Q$org{A}\E|\Q$org{B}\E)"/,
        'error log: warn "serving the cached tenant"';

    $r = get('org_never_seen_during_outage', timeout => 5);
    push @all, $r;
    is $r->{status}, 503, 'unknown, uncached org while down: 503, not 403' or diag brief($r);
}


# --- never a 500 -------------------------------------------------------------

is_deeply [map { brief($_) } grep { $_->{status} >= 500 && $_->{status} != 503 || $_->{status} == 0 } @all],
    [], 'no 500, no hang, in ' . @all . ' requests during the outages';

unlike error_log(), qr/\[crit\]/, 'error log: no [crit]';

# libpq's messages span lines ("server closed the connection
# unexpectedly\n\tThis probably means ..."): the log keeps the first.
{
    my @stray = grep { !m{^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[} } split /\n/, error_log();
    is_deeply \@stray, [], 'error log: one line per message (no stray continuation lines)';
}

done_testing();
