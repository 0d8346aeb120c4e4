#!/usr/bin/perl
# Fault injection against a real nginx (two workers) and a real
# PostgreSQL, with client traffic running while the fault happens; every
# answer is counted.
#
#   1. crash     PostgreSQL SIGKILLed (postmaster and backends) under two
#                client loops: every request of a cached tenant is 200,
#                past its TTL too; an uncached tenant gets 503
#                tenant_unavailable with Retry-After at once; after a
#                restart the pools reconnect without a reload and
#                tenant_db_connects_total grows.  (t/040 covers a lookup
#                in flight, /api/health and single requests; here it is
#                the outage under continuous traffic.)
#   2. stall     PostgreSQL SIGSTOPped: cached tenants (fresh, then past
#                their TTL) answer as fast as before, measured over 200
#                requests before and 200 during the stall; uncached ones
#                get a 503 within timeout + 1 s; SIGCONT and recovery.
#   3. zone full tenant_cache and tenant_token_cache zones of 32k (the
#                least the module takes) and 300 tenants / 500 distinct tokens
#                from two concurrent clients: all 200 with the right
#                tenant, evictions counted, no alert or crit.  (t/060
#                covers the rate-limit zone.)
#   4. worker    a worker SIGKILLed with requests in flight (a slow
#                upstream) and a client loop running: the master starts
#                another, the other worker's requests finish, no request
#                hangs, the shared caches and counters survive (a cached
#                tenant and token need no new query and no new
#                verification; tenant_requests_total does not go back).
#                Without the listener: a new first worker would mark
#                every cached row past its TTL (t/080 covers that).
#   5. disk full the http error log and the access log on a 256k tmpfs,
#                filled up: answers (200, 401, 403) unchanged, nginx stays
#                up, and logging resumes once there is space again.
#
# Runs as root (the tmpfs mount; case 5 is skipped when mount is refused).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS    ();
use List::Util  qw(sum0 max);
use POSIX       ();
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = '5a5b5c5d5e5f6061' x 4;
my $TIMEOUT     = 2;                # tenant_database timeout=, seconds
my $CACHED_MAX  = 0.2;              # bound for a cached tenant's answer, seconds
my $BEGIN       = time;
my $JSON        = JSON::XS->new->utf8->canonical;
my $TMP         = TenantTest::tmpdir();

# The slow upstream: it notes which nginx worker sent the request
# (X-Nginx-Worker), then answers once the test creates $SLOW_RELEASE (at
# most 4 s later).  A fixed delay let a loaded machine answer some of the
# victim's requests before the kill.
my $SLOW_LOG     = "$TMP/slow-requests.log";
my $SLOW_RELEASE = "$TMP/slow-release";
my $SLOW = echo_start(workers => 12, handler => sub {
    my ($req) = @_;
    if (open my $fh, '>>', $SLOW_LOG) {
        print $fh (($req->{headers}{'x-nginx-worker'} || [])->[0] // '?'), "\n";
        close $fh;
    }
    my $until = time + 4;
    sleep 0.02 while !-e $SLOW_RELEASE && time < $until;
    return (200, ['Content-Type' => 'application/json'],
            $JSON->encode({ slow => 1, headers => $req->{headers} }));
});

# Options: ttl, tenant_zone, token_zone, listen (a tenant_database_listen
# line), http_log (extra http-level lines), server_log (server-level).
sub conf {
    my (%o) = @_;
    my $ttl    = $o{ttl}         // '1s';
    my $tzone  = $o{tenant_zone} // 'tenants:1m';
    my $kzone  = $o{token_zone}  // 'tokens:1m';
    my $listen = $o{listen}      // '';
    my $hlog   = $o{http_log}    // '';
    my $slog   = $o{server_log}  // '';
    return <<"EOF";
    tenant_database     "%%PG%%" pool=2 timeout=${TIMEOUT}s;
    $listen
    tenant_cache        zone=$tzone ttl=$ttl negative_ttl=1s stale=60s;
    tenant_token_cache  zone=$kzone;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter features=api;
    tenant_signing_key  $SIGNING_KEY;
    $hlog

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        add_header X-Worker \$pid always;
        $slog

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location /slow/ {
            tenant_gateway     on;
            proxy_set_header   X-Nginx-Worker \$pid;
            proxy_read_timeout 5s;
            proxy_pass         http://$SLOW->{addr};
        }

        location = /metrics {
            allow 127.0.0.1;
            deny  all;
            tenant_metrics;
        }
    }
EOF
}


# --- local helpers ----------------------------------------------------------

my %TOKEN;      # one token per org unless told otherwise

sub token { my ($org) = @_; return $TOKEN{$org} //= mint_token(org => $org) }

sub get {
    my ($org, %o) = @_;
    my @h = defined $o{token} ? ($o{token} eq '' ? () : (Authorization => "Bearer $o{token}"))
                              : (Authorization => 'Bearer ' . token($org));
    push @h, @{ $o{headers} || [] };
    return http(path => $o{path} // '/api/products', timeout => $o{timeout} // 5,
                headers => \@h);
}

sub code   { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub worker { my ($r) = @_; return ($r->{headers}{'x-worker'} || [])->[0] // '?' }
sub seen   { my ($r) = @_; return (($r->{json} || {})->{headers}{'x-tenant-id'} || [])->[0] // '' }
sub brief  { my ($r) = @_; return sprintf '%s %s (%.3fs)%s', $r->{status}, code($r),
                 $r->{elapsed} // 0, $r->{error} ? " $r->{error}" : '' }

sub pct {
    my ($p, @v) = @_;
    return 0 unless @v;
    @v = sort { $a <=> $b } @v;
    return $v[ int($p * $#v + 0.5) ];
}

# GET /metrics as { 'name{labels}' => value }.
sub metrics {
    my $r = http(path => '/metrics');
    die "metrics: GET /metrics answered " . brief($r) . "\n" unless $r->{status} == 200;
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

sub requests_of { my ($m) = @_; return { map { $_ => $m->{$_} } grep { /^tenant_requests_total\{/ } keys %$m } }
sub requests_sum { my ($m) = @_; return sum0 values %{ requests_of($m) } }

# Metrics once the log phase counted at least $n more requests than $m0
# (counting follows the answer), or after a second.
sub metrics_after {
    my ($m0, $n) = @_;
    my $start = time;
    my $m;
    while (1) {
        $m = metrics();
        last if requests_sum($m) >= requests_sum($m0) + $n || time - $start > 1;
        sleep 0.05;
    }
    return $m;
}


# Client loops in forked processes: each sends one request after the
# other, a new connection each (reuseport spreads them over both
# workers), until traffic_stop(), `secs` pass or `max` requests were
# sent.  $next->($client, $i) returns (label, http() arguments).  Each
# answer is a JSON line in a file of its own (a pipe would fill up while
# the test is busy elsewhere).
my $TRAFFIC_SEQ = 0;

sub traffic_start {
    my (%o) = @_;
    my $id = ++$TRAFFIC_SEQ;
    my $stop = "$TMP/traffic-$id.stop";
    my @kids;
    for my $c (1 .. $o{clients}) {
        my $file = "$TMP/traffic-$id-$c.jsonl";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open my $out, '>', $file or POSIX::_exit(1);
            $out->autoflush(1);
            my $end = time + $o{secs};
            for (my $i = 0; $i < $o{max} && time < $end && !-e $stop; $i++) {
                my ($label, @req) = $o{next}->($c, $i);
                my $t0 = time;
                my $r = eval { http(@req) } || { status => 0, error => "$@" };
                print $out $JSON->encode({
                    label => $label, t0 => $t0, t1 => time, st => $r->{status},
                    code => code($r), el => $r->{elapsed} // time - $t0,
                    w => worker($r), ra => ($r->{headers}{'retry-after'} || [])->[0],
                    ct => ($r->{headers}{'content-type'} || [])->[0],
                    tid => seen($r), err => $r->{error} }), "\n";
            }
            close $out;
            POSIX::_exit(0);
        }
        push @kids, { pid => $pid, file => $file };
    }
    return { stop => $stop, kids => \@kids };
}

sub traffic_stop {
    my ($t) = @_;
    open my $fh, '>', $t->{stop} or die "$t->{stop}: $!";
    close $fh;
    my @res;
    for my $k (@{ $t->{kids} }) {
        waitpid $k->{pid}, 0;
        open my $in, '<', $k->{file} or next;
        push @res, map { $JSON->decode($_) } grep { /\S/ } <$in>;
    }
    return @res;
}

# The clients of traffic_start() stop by themselves once their plan is
# done; waits for that (at most $secs).
sub traffic_stop_when_done {
    my ($tr, $secs) = @_;
    my $deadline = time + $secs;
    for my $k (@{ $tr->{kids} }) {
        while (waitpid($k->{pid}, POSIX::WNOHANG()) == 0 && time < $deadline) {
            sleep 0.05;
        }
    }
    return traffic_stop($tr);
}

sub tbrief { my ($x) = @_; return sprintf '%s: %s %s (%.3fs)%s', $x->{label}, $x->{st},
                 $x->{code} // '', $x->{el}, $x->{err} ? " $x->{err}" : '' }

# How many answers each worker gave: { pid => n }.
sub by_worker {
    my %n;
    $n{ $_->{w} }++ for @_;
    return \%n;
}

# PostgreSQL crashes: SIGKILL to the postmaster and all its children (the
# postmaster stopped first, so it forks no new ones meanwhile).  Waits
# until they are gone: a dead postmaster stays a zombie until init reaps
# it (up to ~2 s here), and pg_ctl would count it as running.  Then
# pg_kill() finds no server and only marks the cluster stopped, so that
# pg_restart() starts it again.
sub pg_crash {
    my ($pm) = pg_pids();
    kill 'STOP', $pm;
    my @pids = pg_pids();
    kill 'KILL', @pids;
    my $deadline = time + 10;
    sleep 0.05 while grep({ -e "/proc/$_" } @pids) && time < $deadline;
    my @left = grep { -e "/proc/$_" } @pids;
    die "pg_crash: processes left: @left\n" if @left;
    pg_kill();
    return scalar @pids;
}


# --- setup ----------------------------------------------------------------

pg_start();

my %t = map { $_ => create_tenant(status => 'active') }
        qw(A B C K U1 U2 V1 V2 V3 V4 V5 V6 W1 W2);
$t{SUSP} = create_tenant(status => 'suspended');
my %org = map { $_ => $t{$_}{clerk_organization_id} } keys %t;
token($org{$_}) for keys %org;

my $ngx = nginx_start(workers => 2, http => conf());
my @W0 = nginx_workers();
is scalar(@W0), 2, 'two workers';

# A, B, C cached (the zone is shared: one lookup each does).
for my $k (qw(A B C)) {
    my $r = get($org{$k});
    is $r->{status}, 200, "$k: warm" or diag brief($r);
}


# --- 1. PostgreSQL SIGKILLed under traffic --------------------------------------

{
    my $m0 = metrics();
    my @cached = qw(A B C);
    my $tr = traffic_start(clients => 2, secs => 20, max => 4000, next => sub {
        my ($c, $i) = @_;
        my $k = $cached[($i + $c) % 3];
        return ($k, path => '/api/products', timeout => 5,
                headers => [Authorization => 'Bearer ' . token($org{$k})]);
    });
    sleep 0.5;

    my $t_kill = time;
    my $n = pg_crash();
    my $down = time;
    ok $n >= 3, "crash: SIGKILL to the postmaster and its children ($n processes), gone after "
                . sprintf('%.2f s', $down - $t_kill);
    ok !eval { sql('SELECT 1'); 1 }, 'crash: the database is unreachable';

    # Uncached U1 and U2 while the database is down.
    my @bad;
    my $tries = 0;
    for my $k ((qw(U1 U2)) x 3) {
        my $r = get($org{$k}, timeout => 8);
        $tries++;
        push @bad, "$k: " . brief($r)
            unless $r->{status} == 503 && code($r) eq 'tenant_unavailable'
                   && ($r->{headers}{'retry-after'}[0] // '') =~ /^\d+$/
                   && ($r->{headers}{'content-type'}[0] // '') =~ m{^application/problem\+json}
                   && $r->{elapsed} < $TIMEOUT + 1;
        sleep 0.2;
    }
    is_deeply \@bad, [], "crash: uncached U1, U2 ($tries requests): 503 problem+json "
                         . "tenant_unavailable with Retry-After, each within ${\($TIMEOUT + 1)} s";

    # Down for more than the TTL (1 s): the cached rows are past it.
    my $wait = $t_kill + 1.8 - time;
    sleep $wait if $wait > 0;

    my $master = $ngx->{pid};
    my $t_restart = time;
    pg_restart();
    my $t_up = time;
    my ($r, $secs) = retry_until(5, sub { get($org{U1}) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, sprintf('crash: U1 looked up %.2f s after the restart, no reload', $secs)
        or diag brief($r);
    is seen($r), $t{U1}{id}, 'crash: upstream saw U1';
    is $ngx->{pid}, $master, 'crash: same master';
    is_deeply [nginx_workers()], \@W0, 'crash: same workers (no reload, no respawn)';
    ($r) = retry_until(5, sub { get($org{U2}) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'crash: U2 looked up too' or diag brief($r);

    sleep 0.5;
    my @res = traffic_stop($tr);
    my @during = grep { $_->{t0} >= $t_kill && $_->{t1} <= $t_up } @res;
    my @stale  = grep { $_->{t0} >= $t_kill + 1.2 && $_->{t1} <= $t_up } @res;
    my @non200 = grep { $_->{st} != 200 } @res;
    my @wrong  = grep { $_->{st} == 200 && $_->{tid} ne $t{ $_->{label} }{id} } @res;
    my @el = map { $_->{el} } @res;
    my $w = by_worker(@res);
    diag sprintf 'crash: %d cached requests (%d during the outage, %d past the TTL), '
                 . 'p50 %.4f s, max %.4f s, per worker %s',
                 scalar @res, scalar @during, scalar @stale, pct(0.5, @el), max(@el),
                 join ' ', map { "$_:$w->{$_}" } sort keys %$w;
    ok @res >= 100, scalar(@res) . ' cached requests sent during case 1';
    ok @during >= 20, scalar(@during) . ' of them while the database was down';
    ok @stale >= 5, scalar(@stale) . ' of them past the 1 s TTL, database still down';
    is_deeply [map { tbrief($_) } @non200[0 .. ($#non200 > 9 ? 9 : $#non200)]], [],
        'crash: every cached request answered 200 (' . scalar(@non200) . ' did not)';
    is scalar(@wrong), 0, 'crash: each with the right tenant upstream';
    is scalar(grep { $w->{$_} } @W0), 2, 'crash: both workers answered cached tenants';
    ok max(@el) < 1, sprintf('crash: slowest cached answer %.3f s', max(@el));

    my $m1 = metrics();
    my ($c0, $c1) = map { $_->{tenant_db_connects_total} // 0 } $m0, $m1;
    cmp_ok $c1, '>', $c0, "crash: tenant_db_connects_total increased ($c0 -> $c1)";
    my ($e0, $e1) = map { $_->{tenant_db_errors_total} // 0 } $m0, $m1;
    cmp_ok $e1, '>', $e0, "crash: tenant_db_errors_total increased ($e0 -> $e1)";
}


# --- 2. PostgreSQL stalled (SIGSTOP) under traffic ---------------------------

sleep 1.1;      # no worker is in its fail-fast second after the recovery

{
    # A, B, C fresh in the cache; then 200 requests, the database up,
    # paced as during the stall.
    get($org{$_}) for qw(A B C);
    my @cached = qw(A B C);
    my (@before, @bad_before);
    for my $i (0 .. 199) {
        my $r = get($org{ $cached[$i % 3] });
        push @before, $r->{elapsed};
        push @bad_before, brief($r) unless $r->{status} == 200;
        sleep 0.01;
    }
    is_deeply \@bad_before, [], 'stall: 200 cached requests before: all 200';

    my $n = pg_stall();
    my $t_stall = time;
    ok $n >= 3, "stall: SIGSTOP to the postmaster and its children ($n processes)";

    # Uncached lookups: a first wave at once, a second one later (past the
    # first wave's timeouts).
    my @bg = map { [$_, async_http(path => '/api/products', timeout => 8,
                       headers => [Authorization => 'Bearer ' . token($org{$_})])] } qw(V1 V2 V3 V4);

    # 200 cached requests spread over ~2.5 s: past the 1 s TTL, each
    # refresh goes to the stalled database.
    my (@during, @bad);
    my %wk;
    for my $i (0 .. 199) {
        if ($i == 120) {
            push @bg, map { [$_, async_http(path => '/api/products', timeout => 8,
                               headers => [Authorization => 'Bearer ' . token($org{$_})])] } qw(V5 V6);
        }
        my $r = get($org{ $cached[$i % 3] });
        push @during, $r->{elapsed};
        $wk{ worker($r) }++;
        push @bad, brief($r) unless $r->{status} == 200;
        sleep 0.01;
    }
    my $stalled_for = time - $t_stall;

    my (@ubad, @uel);
    for my $b (@bg) {
        my ($k, $h) = @$b;
        my $r = wait_http($h);
        push @uel, $r->{elapsed} // 99;
        push @ubad, "$k: " . brief($r)
            unless $r->{status} == 503 && code($r) eq 'tenant_unavailable'
                   && ($r->{headers}{'retry-after'}[0] // '') =~ /^\d+$/;
    }

    my $r = get($org{A});
    push @during, $r->{elapsed};
    push @bad, brief($r) unless $r->{status} == 200;
    pg_unstall();
    my $t_cont = time;

    diag sprintf 'stall: cached before: p50 %.4f s, max %.4f s; during (%.1f s stalled): '
                 . 'p50 %.4f s, max %.4f s; uncached: max %.3f s',
                 pct(0.5, @before), max(@before), $stalled_for,
                 pct(0.5, @during), max(@during), max(@uel);
    is_deeply \@bad, [], 'stall: ' . scalar(@during) . ' cached requests during the stall: all 200';
    ok $stalled_for > 1.5, sprintf('stall: lasted %.1f s, past the 1 s TTL', $stalled_for);
    is scalar(grep { $wk{$_} } @W0), 2, 'stall: both workers answered';
    ok max(@during) < $CACHED_MAX,
        sprintf('stall: slowest cached answer %.4f s < %.1f s (before: %.4f s; database timeout %d s)',
                max(@during), $CACHED_MAX, max(@before), $TIMEOUT);
    ok pct(0.5, @during) < pct(0.5, @before) + 0.02,
        sprintf('stall: median cached answer %.4f s, before %.4f s', pct(0.5, @during), pct(0.5, @before));
    is_deeply \@ubad, [], 'stall: ' . scalar(@bg) . ' uncached lookups: 503 tenant_unavailable, Retry-After';
    ok max(@uel) < $TIMEOUT + 1,
        sprintf('stall: uncached answered within %.3f s (timeout %d s + 1 s), no hang', max(@uel), $TIMEOUT);

    ($r, my $secs) = retry_until(5, sub { get($org{V1}) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, sprintf('stall: V1 looked up %.2f s after SIGCONT', $secs) or diag brief($r);
    is seen($r), $t{V1}{id}, 'stall: upstream saw V1';
    my @after = map { get($org{$_}) } qw(A B C);
    is_deeply [map { $_->{status} } @after], [(200) x 3], 'stall: cached A, B, C 200 after SIGCONT'
        or diag join ', ', map { brief($_) } @after;
    # A worker whose lookup timed out less than a second ago still
    # answers 503 at once (README, tenant_database): V5 and V6 timed out
    # just before the SIGCONT.
    for my $k (qw(V5 V6)) {
        ($r, $secs) = retry_until(4, sub { get($org{$k}) }, sub { $_[0]{status} == 200 });
        ok $r->{status} == 200 && time - $t_cont < 2.5,
            sprintf('stall: %s (refused during the stall) 200 %.2f s after SIGCONT', $k, time - $t_cont)
            or diag brief($r);
    }
    is_deeply [nginx_workers()], \@W0, 'stall: same workers';
}


# --- 3. tiny zones, many tenants and tokens ---------------------------------------

{
    # The rows only (the gateway never reads a tenant's schema):
    # public.create_tenant() takes ~25 ms each.
    sql(q{INSERT INTO public.tenants (name, slug, clerk_organization_id, schema_name,
                                      subscription_tier, subscription_status, owner_email)
          SELECT 'Many ' || i, 'many-' || i, 'org_many_' || i, 'tenant_many_' || i,
                 'starter', 'active', 'many' || i || '@example.test'
            FROM generate_series(1, 300) AS i});
    my @many = sql(q{SELECT id::text AS id, clerk_organization_id AS org
                       FROM public.tenants WHERE slug LIKE 'many-%' ORDER BY slug});
    is scalar(@many), 300, 'zone full: 300 more tenants';
    my %id = map { $_->{org} => $_->{id} } @many;
    token($_->{org}) for @many;
    my @many_tokens = map { mint_token(org => $org{W1}, sub => "user_many_$_") } 1 .. 200;

    # 32k is the least the module takes (8 pages); 31k is refused.
    my $ct = nginx_conf_test(http => conf(tenant_zone => 'tenants_31k:31k'));
    ok !$ct->{ok} && $ct->{output} =~ /\[emerg\] zone "tenants_31k:31k" is too small/,
        'zone full: a 31k zone is refused, 32k is the smallest';

    nginx_reload(http => conf(ttl => '60s', tenant_zone => 'tenants_tiny:32k',
                              token_zone => 'tokens_tiny:32k'));
    my $mark = log_mark();
    my $m0 = metrics();

    # Two clients at once: the first two passes over 300 tenants (each
    # with its own token), then 200 tokens of one tenant.
    my @plan = ((map { [$_->{org}, token($_->{org}), $_->{id}] } @many),
                (map { [$_->{org}, token($_->{org}), $_->{id}] } @many[0 .. 59]),
                (map { [$org{W1}, $_, $t{W1}{id}] } @many_tokens));
    my $tr = traffic_start(clients => 2, secs => 30, max => int((@plan + 1) / 2), next => sub {
        my ($c, $i) = @_;
        my $p = $plan[2 * $i + $c - 1] or return ('none', path => '/metrics');
        return ($p->[2], path => '/api/products', timeout => 5,
                headers => [Authorization => "Bearer $p->[1]"]);
    });
    my @res = grep { $_->{label} ne 'none' } traffic_stop_when_done($tr, 30);

    my @non200 = grep { $_->{st} != 200 } @res;
    my @wrong  = grep { $_->{st} == 200 && $_->{tid} ne $_->{label} } @res;
    my %st; $st{ $_->{st} }++ for @res;
    is scalar(@res), scalar(@plan), 'zone full: ' . scalar(@plan) . ' requests sent';
    is_deeply [map { tbrief($_) } @non200[0 .. ($#non200 > 9 ? 9 : $#non200)]], [],
        'zone full: all 200, no 500 (' . join(', ', map { "$_: $st{$_}" } sort keys %st) . ')';
    is scalar(@wrong), 0, 'zone full: each with its own tenant upstream';

    my $m = metrics_after($m0, scalar @plan);
    my %ev = map { $_ => ($m->{"tenant_cache_evictions_total{cache=\"$_\"}"} // 0)
                        - ($m0->{"tenant_cache_evictions_total{cache=\"$_\"}"} // 0) } qw(tenant token);
    my %en = map { $_ => $m->{"tenant_cache_entries{cache=\"$_\"}"} // -1 } qw(tenant token);
    diag "zone full: evictions tenant $ev{tenant}, token $ev{token}; "
         . "entries tenant $en{tenant}, token $en{token}";
    ok $ev{tenant} > 0, "zone full: tenant_cache_evictions_total{cache=\"tenant\"} grew by $ev{tenant}";
    ok $ev{token} > 0, "zone full: tenant_cache_evictions_total{cache=\"token\"} grew by $ev{token}";
    ok $en{tenant} > 0 && $en{tenant} < 300, "zone full: $en{tenant} tenant entries, fewer than the tenants";
    ok $en{token} > 0 && $en{token} < 500, "zone full: $en{token} token entries, fewer than the tokens";

    my $log = error_log(since => $mark);
    my @loud = grep { /\[(alert|crit|emerg)\]/ } split /\n/, $log;
    is_deeply \@loud, [], 'zone full: no alert, crit or emerg in the error log';
    unlike $log, qr/could not allocate/, 'zone full: never "could not allocate"';

    # Still a working cache: A looked up again, then served from it.
    my $r = get($org{A});
    is $r->{status}, 200, 'zone full: A 200' or diag brief($r);
    is scalar(nginx_workers()), 2, 'zone full: two workers still there';
}

# --- 4. a worker SIGKILLed with requests in flight ---------------------------

{
    # ttl=60s: K stays fresh; no listener, whose start in a new first
    # worker marks every cached row past its TTL (README, t/080), so that
    # any query would be news.
    nginx_reload(http => conf(ttl => '60s', listen => 'tenant_database_listen off;'));
    my @w = nginx_workers();
    is scalar(@w), 2, 'worker: reloaded, two workers';

    my $r = get($org{K});
    is $r->{status}, 200, 'worker: K warm' or diag brief($r);
    get($org{K}) for 1 .. 6;
    my $m0 = metrics();

    unlink $SLOW_LOG, $SLOW_RELEASE;
    my $tr = traffic_start(clients => 2, secs => 20, max => 4000, next => sub {
        return ('K', path => '/api/products', timeout => 5,
                headers => [Authorization => 'Bearer ' . token($org{K})]);
    });
    my @slow = map { async_http(path => '/slow/x', timeout => 5,
                                headers => [Authorization => 'Bearer ' . token($org{K})]) } 1 .. 10;
    my (%inflight, $lines);
    my $start = time;
    while (time - $start < 3) {
        open my $fh, '<', $SLOW_LOG or do { sleep 0.02; next };
        my @l = grep { /^\d+$/ } map { chomp; $_ } <$fh>;
        %inflight = ();
        $inflight{$_}++ for @l;
        last if ($lines = @l) >= 10;
        sleep 0.02;
    }
    is $lines, 10, 'worker: 10 slow requests in flight at the upstream';
    my ($victim) = sort { $inflight{$b} <=> $inflight{$a} } grep { my $p = $_; grep { $_ == $p } @w } keys %inflight;
    ok $victim, "worker: victim $victim has " . ($inflight{$victim} // 0) . ' requests in flight';
    my ($survivor) = grep { $_ != $victim } @w;

    my $mark = log_mark();
    my $t_kill = time;
    kill 'KILL', $victim;
    my @now;
    while (time - $t_kill < 5) {
        @now = nginx_workers();
        last if @now == 2 && !grep { $_ == $victim } @now;
        sleep 0.02;
    }
    my $respawn = time - $t_kill;
    my ($new) = grep { $_ != $survivor && $_ != $victim } @now;
    ok @now == 2 && $new, sprintf('worker: the master started worker %s %.2f s after the kill',
                                  $new // '?', $respawn)
        or diag "workers now: @now";
    error_log_allow(qr/\[alert\].*worker process $victim exited on signal 9/);
    like error_log(since => $mark), qr/\[alert\].*worker process $victim exited on signal 9/,
        'worker: nginx logged "worker process ... exited on signal 9" (alert, allowed)';

    # the survivor's requests may now be answered
    open my $release, '>', $SLOW_RELEASE or die "$SLOW_RELEASE: $!";
    close $release;

    my (@done, @dropped, @other);
    for my $h (@slow) {
        my $s = wait_http($h);
        if ($s->{status} == 200) { push @done, $s }
        elsif ($s->{status} == 0 && !$s->{error}) { push @dropped, $s }
        else { push @other, $s }
    }
    diag sprintf 'worker: slow requests: %d finished, %d dropped with the worker, %d other',
                 scalar @done, scalar @dropped, scalar @other;
    is scalar(@dropped), $inflight{$victim}, "worker: the victim's $inflight{$victim} slow requests: connection closed"
        or diag explain [map { brief($_) } @dropped, @other];
    is scalar(@done), 10 - $inflight{$victim}, "worker: the survivor's slow requests: 200";
    is_deeply [grep { $_ ne $survivor } map { worker($_) } @done], [], 'worker: ... answered by the survivor';
    is_deeply [map { brief($_) } @other], [], 'worker: no slow request timed out or failed otherwise';
    ok max(map { $_->{elapsed} } @dropped, @done) < 3,
        sprintf('worker: every slow request ended within %.2f s', max(map { $_->{elapsed} } @dropped, @done));

    sleep 0.5;
    my @res = traffic_stop($tr);
    my @after = grep { $_->{t0} > $t_kill + 0.05 } @res;
    my @lost  = grep { $_->{st} != 200 } @res;
    my @late  = grep { $_->{st} != 200 && $_->{t0} > $t_kill + 0.05 } @res;
    my @hung  = grep { ($_->{err} // '') eq 'timeout' } @res;
    my @el = map { $_->{el} } @after;
    diag sprintf 'worker: client loops: %d requests, %d after the kill (p50 %.4f s, max %.4f s), '
                 . '%d not 200 (connections the victim held)',
                 scalar @res, scalar @after, pct(0.5, @el), max(@el) // 0, scalar @lost;
    ok @after >= 20, scalar(@after) . ' loop requests after the kill';
    is_deeply [map { tbrief($_) } @late], [], 'worker: every loop request sent after the kill: 200';
    is_deeply [map { tbrief($_) } @hung], [], 'worker: no loop request hung';
    ok @lost <= 2, scalar(@lost) . ' loop requests lost with the victim (at most one per client)';
    ok max(@el) < 1, sprintf('worker: slowest loop request after the kill %.3f s', max(@el));

    my (@bad, %wk);
    for (1 .. 20) {
        my $x = get($org{K});
        $wk{ worker($x) }++;
        push @bad, brief($x) unless $x->{status} == 200 && seen($x) eq $t{K}{id};
    }
    is_deeply \@bad, [], 'worker: 20 more requests of K: 200, tenant K';
    ok $wk{$new}, "worker: the new worker $new answered " . ($wk{$new} // 0) . ' of them';

    my $n200 = (grep { $_->{st} == 200 } @res) + @done + 20;
    my $m1 = metrics_after($m0, $n200);
    my $q = 'tenant_db_queries_total';
    is $m1->{$q}, $m0->{$q}, "worker: no database query for cached K ($q $m0->{$q} -> $m1->{$q})";
    for my $k ('tenant_cache_misses_total{cache="tenant"}', 'tenant_cache_misses_total{cache="token"}',
               'tenant_cache_entries{cache="tenant"}', 'tenant_cache_entries{cache="token"}') {
        is $m1->{$k}, $m0->{$k}, "worker: $k unchanged ($m0->{$k} -> " . ($m1->{$k} // 'none') . ')';
    }
    my $hk = 'tenant_cache_hits_total{cache="tenant"}';
    cmp_ok $m1->{$hk} - $m0->{$hk}, '>=', $n200 - 2, "worker: $hk grew with the requests";
    my ($r0, $r1) = (requests_of($m0), requests_of($m1));
    my @back = grep { ($r1->{$_} // 0) < $r0->{$_} } sort keys %$r0;
    is_deeply \@back, [], 'worker: no tenant_requests_total series went back';
    my $ak = 'tenant_requests_total{outcome="admitted",tier="starter"}';
    my $d = ($r1->{$ak} // 0) - ($r0->{$ak} // 0);
    ok $d >= $n200 - 2 && $d <= $n200,
        "worker: admitted/starter grew by $d for $n200 answers seen 200 (requests the victim answered may miss their log phase)";
}


# --- 5. disk full for the logs -------------------------------------------------

my ($FULL, $MOUNTED);

END {
    local $?;
    if ($MOUNTED) {
        eval { nginx_stop() };
        system("umount '$FULL' 2>/dev/null") == 0 or system('umount', '-l', $FULL);
    }
}

SKIP: {
    $FULL = "$ngx->{dir}/full";
    mkdir $FULL;
    my $out = `mount -t tmpfs -o size=256k,mode=0755 tmpfs '$FULL' 2>&1`;
    skip "disk full: cannot mount a tmpfs (" . ($out =~ s/\s+$//r) . "); needs root and mount permission", 1
        if $?;
    $MOUNTED = 1;

    # nginx core's own report of a failed access log write, should it
    # reach the main log (it goes to the http error log, which is full)
    error_log_allow(qr/\[alert\].*write\(\) to "\Q$FULL\E\/access\.log" failed \(28: No space left on device\)/);

    nginx_reload(http => conf(http_log => "error_log $FULL/error.log info;",
                              server_log => "access_log $FULL/access.log;"));
    my @w = nginx_workers();
    is scalar(@w), 2, 'disk full: reloaded, logs on the tmpfs';

    my %A = (acc => "$FULL/access.log", err => "$FULL/error.log");
    my $sizes = sub { return { map { $_ => (-s $A{$_} // 0) } keys %A } };

    # The mix: valid (200), no token (401), a token signed by an unknown
    # key (401), another organization in X-Organization-ID (403), a
    # suspended tenant (403).
    my $bad_key = mint_token(org => $org{A}, key => 'other');
    my @mix = (
        ['200 ',                         sub { get($org{$_[0]}) }],
        ['401 authentication_required',  sub { get($org{A}, token => '') }],
        ['401 invalid_token',            sub { get($org{A}, token => $bad_key) }],
        ['403 organization_mismatch',    sub { get($org{A}, headers => ['X-Organization-ID' => $org{B}]) }],
        ['403 tenant_suspended',         sub { get($org{SUSP}) }],
    );
    my $outcome = sub { my ($r) = @_; return "$r->{status} " . ($r->{status} == 200 ? '' : code($r)) };

    my $s0 = $sizes->();
    my @first = map { $_->[1]->('A') } @mix;
    is_deeply [map { $outcome->($_) } @first], [map { $_->[0] } @mix], 'disk full: the mix, space left';
    my $s1 = $sizes->();
    ok $s1->{acc} > $s0->{acc} && $s1->{err} > $s0->{err},
        "disk full: with space, both logs grow (access $s0->{acc} -> $s1->{acc}, error $s0->{err} -> $s1->{err})";

    my $dd = `dd if=/dev/zero of='$FULL/fill' bs=4k 2>&1`;
    like $dd, qr/No space left on device/, 'disk full: dd filled the tmpfs (ENOSPC)';
    my $probe = do {
        my $pf;
        open($pf, '>>', "$FULL/probe") && (print $pf 'x' x 10) && close($pf);
    };
    ok !$probe, 'disk full: not one more byte fits';

    my $s2 = $sizes->();
    my (@bad, %n);
    my @orgs = qw(A B C);
    for my $i (0 .. 79) {
        my $m = $mix[$i % @mix];
        my $r = $m->[1]->($orgs[$i % 3]);
        $n{ $m->[0] }++;
        push @bad, "$m->[0]: " . brief($r) unless $outcome->($r) eq $m->[0];
    }
    is_deeply \@bad, [], 'disk full: 80 requests (' . join(', ', map { "$n{$_} x $_" } sort keys %n)
                         . '), each answered as with space';
    ok kill(0, $ngx->{pid}) && (`cat /proc/$ngx->{pid}/stat 2>/dev/null` =~ /^\d+ \(.*\) [^Z]/s),
        'disk full: the master is running';
    is_deeply [nginx_workers()], \@w, 'disk full: the same workers (none died)';
    # (a tmpfs counts whole pages: a file still fills its last page)
    my $s3 = $sizes->();
    my $page_end = sub { my ($n) = @_; return 4096 * int(($n + 4095) / 4096) };
    ok $s3->{acc} <= $page_end->($s2->{acc}) && $s3->{err} <= $page_end->($s2->{err}),
        "disk full: the logs grew at most to the end of their last page (access $s2->{acc} -> $s3->{acc}, "
        . "error $s2->{err} -> $s3->{err}): the writes failed";
    my $lines = () = (do { open my $fh, '<', $A{acc}; local $/; <$fh> } // '') =~ /\n/g;
    ok $lines < @first + 80, "disk full: $lines access log lines for " . (@first + 80) . ' requests';

    unlink "$FULL/fill", "$FULL/probe";
    my $t_free = time;
    my ($r, $secs) = retry_until(4, sub {
        $mix[0][1]->('A');
        my $x = $mix[1][1]->();
        my $s = $sizes->();
        return { ok => $s->{acc} > $s3->{acc} && $s->{err} > $s3->{err} };
    }, sub { $_[0]{ok} });
    ok $r->{ok}, sprintf('disk full: space freed, both logs written again after %.2f s', $secs);
    my $acc = do { open my $fh, '<', $A{acc}; local $/; <$fh> } // '';
    my $err = do { open my $fh, '<', $A{err}; local $/; <$fh> } // '';
    like substr($acc, $s3->{acc}), qr{"GET /api/products HTTP/1\.1" 200 }, 'disk full: a new access log line';
    like substr($err, $s3->{err}), qr/\[info\].*tenant: /, 'disk full: a new error log line';
    my @loud = grep { /\[(alert|crit|emerg)\]/ } split /\n/, $err;
    diag "disk full: the tmpfs error log's alert/crit lines: " . scalar(@loud) if @loud;
    is_deeply [grep { !m{write\(\) to "\Q$FULL\E/access\.log" failed \(28: } } @loud], [],
        'disk full: no alert, crit or emerg in the http error log (but nginx\'s own for the access log)';

    nginx_reload(http => conf());
    my $ok = 0;
    for (1 .. 30) {
        last if $ok = system("umount '$FULL' 2>/dev/null") == 0;
        sleep 0.1;
    }
    ok $ok, 'disk full: the tmpfs unmounted (nginx let go of its files)';
    $MOUNTED = 0 if $ok;
}


# --- the end ----------------------------------------------------------------

unlike error_log(), qr/\[crit\]/, 'error log: no [crit]';
diag sprintf 'runtime so far: %.1f s', time - $BEGIN;

done_testing();
