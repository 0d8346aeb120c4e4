#!/usr/bin/perl
# The Redis-backed limiter when Redis is away, slow or wrong: a real
# redis-server (with a password) and a real nginx (two workers), every
# answer timed and its path read from $tenant_ratelimit_source
# (X-RateLimit-Source).  The configuration throughout:
#
#     tenant_redis redis://:pw@127.0.0.1:PORT timeout=20ms
#                  connect_timeout=300ms fallback=local instances=3;
#
#   1. never started  nothing listens on the port: every request answered
#                     at once (no wait for a timeout), source "local" at
#                     ceil(10 / 3) = 4 of the "low" tier's 10/60s;
#                     tenant_redis_fallbacks_total{reason="down"} counts
#                     each one; the [warn] fallback line at most once per
#                     10 s per worker over a burst, the client's connect
#                     failures as rarely; /api/health 200 "disconnected";
#                     fallback=open (a reload): everything admitted,
#                     source "open", no 429.  Redis started on the port:
#                     global ("redis") on both workers within 2 s.
#   2. stop, kill     redis_stop then redis_kill under two client loops:
#                     no 5xx, no answer slower than timeout + slack, each
#                     answer without Redis counted as a fallback,
#                     reconnects counted; back to "redis" within 2 s of
#                     each restart.  The restarted Redis is empty: the
#                     global count starts a fresh window.
#   3. SIGSTOP        requests wait about the timeout (20 ms), then fall
#                     back (reason timeout); once the oldest command is
#                     older than connect_timeout (300 ms) the connection
#                     is given up and requests fall back at once (reason
#                     down); SIGCONT: global within 2 s.
#   4. slow           CLIENT PAUSE 150 ms, and a Lua script busy for
#                     150 ms (Redis blocked, as DEBUG SLEEP would: DEBUG
#                     is off in Redis 7): requests meanwhile fall back
#                     after the timeout, never hang; the connection is
#                     kept (the late replies are read and dropped: no
#                     reconnect), global again right after.
#   5. error reply    the tenant's key made a hash (the script's GET fails
#                     with WRONGTYPE): fallback reason error, errors
#                     counted, never a 5xx; the key removed: global again.
#                     SCRIPT FLUSH: NOSCRIPT handled by the client (Redis
#                     counts the NOSCRIPT errors), no fallback at all.
#
# Throughout: /api/health 200, no 5xx, the password in no log line; over
# the whole run, per worker, the [warn] fallback line never twice within
# 10 s and the client's [error] lines once per state change (or 10 s);
# (the harness) no [alert] or crash in the error log.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS    ();
use List::Util  qw(sum0 max min);
use POSIX       ();
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = '6363636363636363' x 4;
my $TIMEOUT     = 0.020;            # tenant_redis timeout=, seconds
my $CONNECT     = 0.300;            # connect_timeout=
my $SLACK       = 0.200;            # scheduling on a shared 2-core machine
my $BACK        = 2;                # back to global within, seconds
my $JSON        = JSON::XS->new->utf8->canonical;
my $TMP         = TenantTest::tmpdir();

my $RPORT = free_port();            # Redis comes here later (case 1)
my $RPASS = sprintf 'faults-%08x%08x', int(rand 2**32), int(rand 2**32);
my $RURL  = "redis://:$RPASS\@127.0.0.1:$RPORT";

# Tiers: low 10/60s (fallback ceil(10/3) = 4 a minute: no refill while the
# test runs); high, 1000000/60s, never reached (not even its fallback
# share, 333334), for traffic.  The upstream is a server
# of the same nginx (fast: the timings are the limiter's).
sub conf {
    my (%o) = @_;
    my $fallback = $o{fallback} // 'local';
    return <<"EOF";
    tenant_database     "%%PG%%" pool=2 timeout=3s;
    tenant_cache        zone=tenants:1m ttl=60s;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  $SIGNING_KEY;

    tenant_rate_limit   zone=rl:1m rate=100r/m;
    tenant_redis        $RURL timeout=20ms connect_timeout=300ms
                        fallback=$fallback instances=3;

    tenant_tier low     features=api rate=10/60s;
    tenant_tier high    features=api rate=1000000/60s;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        add_header X-Worker           \$pid always;
        add_header X-RateLimit-Source \$tenant_ratelimit_source always;
        add_header X-RL-Remaining     \$tenant_ratelimit_remaining always;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://127.0.0.1:%%PORT2%%;
        }

        location = /api/health {
            tenant_health;
        }

        location = /metrics {
            tenant_metrics;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        access_log off;
        location / {
            default_type application/json;
            return 200 '{"upstream":true}';
        }
    }
EOF
}

# What the faults make nginx log (the final check only fails on [alert],
# [emerg] and crashes; listed so that they stay allowed).
error_log_allow(
    qr/\[error\].*tenant: .*redis/i,
    qr/\[warn\].*tenant: .*redis/i,
    qr/\[info\].*tenant: refused with 429 rate_limited/,
);


# --- local helpers ----------------------------------------------------------

my %TOKEN;

sub token { my ($t) = @_; return $TOKEN{$t->{id}} //= mint_token(org => $t->{clerk_organization_id}) }

sub hdr { my ($r, $n) = @_; return ($r->{headers}{lc $n} || [])->[0] }

# One request of tenant $t: { st el src w rem t0 } (src: the header).
sub get {
    my ($t, %o) = @_;
    my $t0 = time;
    my $r = http(path => '/api/products', timeout => $o{timeout} // 5,
                 headers => [Authorization => 'Bearer ' . token($t)]);
    return { st => $r->{status}, el => $r->{elapsed} // time - $t0,
             src => hdr($r, 'X-RateLimit-Source') // '-',
             w => hdr($r, 'X-Worker') // '?', rem => hdr($r, 'X-RL-Remaining'),
             t0 => $t0, err => $r->{error} };
}

sub health { return http(path => '/api/health', timeout => 5) }

sub brief { my ($x) = @_; return sprintf '%s %s w%s (%.4fs)%s', $x->{st}, $x->{src},
                $x->{w}, $x->{el}, $x->{err} ? " $x->{err}" : '' }

sub srcs     { return join ' ', map { $_->{src} } @_ }
sub statuses { return join ' ', map { $_->{st} } @_ }
sub bad      { return grep { $_->{st} == 0 || $_->{st} >= 500 } @_ }
sub count    { my ($src, @x) = @_; return scalar grep { $_->{src} eq $src } @x }

sub pct {
    my ($p, @v) = @_;
    return 0 unless @v;
    @v = sort { $a <=> $b } @v;
    return $v[ int($p * $#v + 0.5) ];
}

sub timing {
    my (@x) = @_;
    my @el = map { $_->{el} } @x;
    return sprintf 'n=%d p50 %.1f ms, p99 %.1f ms, max %.1f ms, avg %.1f ms',
        scalar @el, 1000 * pct(0.5, @el), 1000 * pct(0.99, @el),
        1000 * (max(@el) // 0), 1000 * (@el ? sum0(@el) / @el : 0);
}

# GET /metrics as { 'name{labels}' => value }.
sub metrics {
    my $r = http(path => '/metrics');
    die "metrics: GET /metrics answered $r->{status}\n" unless $r->{status} == 200;
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

sub fb { my ($reason) = @_; return "tenant_redis_fallbacks_total{reason=\"$reason\"}" }

# $m1 - $m0 for a metric (absent: 0).
sub delta { my ($m0, $m1, $name) = @_; return ($m1->{$name} // 0) - ($m0->{$name} // 0) }

sub fallbacks {
    my ($m0, $m1) = @_;
    return sum0 map { delta($m0, $m1, fb($_)) } qw(down timeout error);
}

# Requests of tenant $t, one after the other, until $secs pass or $max
# were sent.
sub burst {
    my ($t, %o) = @_;
    my $end = time + ($o{secs} // 1e9);
    my @x;
    while (time < $end && @x < ($o{max} // 1e9)) {
        push @x, get($t);
    }
    return @x;
}

# Requests of tenant $t every 50 ms until every worker's latest answer came
# from Redis (and each worker answered at least once), at most $secs.
# Returns (seconds taken or undef, the answers).
sub wait_global {
    my ($t, $secs) = @_;
    my $start = time;
    my %want = map { $_ => 1 } nginx_workers();
    my (%last, @x);
    while (time - $start < $secs) {
        my $x = get($t, timeout => 2);
        push @x, $x;
        $last{ $x->{w} } = $x->{src};
        return (time - $start, @x)
            if !grep { ($last{$_} // '') ne 'redis' } keys %want;
        sleep 0.05;
    }
    return (undef, @x);
}

# The error log's lines since $mark matching $re, per worker pid.
sub log_lines_by_pid {
    my ($mark, $re) = @_;
    my %n;
    for (split /\n/, error_log(since => $mark)) {
        next unless $_ =~ $re;
        my ($pid) = /\[\w+\] (\d+)#/ or next;
        $n{$pid}++;
    }
    return \%n;
}

# Client loops in forked processes (one request after the other, a new
# connection each, so reuseport spreads them over both workers), every
# fifth one an /api/health, until traffic_stop().  Each answer is a JSON
# line in a file of the client's own.
my $TRAFFIC_SEQ = 0;

sub traffic_start {
    my ($t, $clients) = @_;
    my $id = ++$TRAFFIC_SEQ;
    my $stop = "$TMP/traffic-$id.stop";
    token($t);
    my @kids;
    for my $c (1 .. $clients) {
        my $file = "$TMP/traffic-$id-$c.jsonl";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open my $out, '>', $file or POSIX::_exit(1);
            $out->autoflush(1);
            my $end = time + 30;
            for (my $i = 0; !-e $stop && time < $end; $i++) {
                my $x;
                if ($i % 5 == 4) {
                    my $t0 = time;
                    my $r = health();
                    $x = { st => $r->{status}, el => $r->{elapsed} // time - $t0,
                           src => 'health', w => hdr($r, 'X-Worker') // '?',
                           t0 => $t0, err => $r->{error} };
                } else {
                    $x = eval { get($t) } || { st => 0, el => 0, src => '-',
                                               w => '?', t0 => time, err => "$@" };
                }
                print $out $JSON->encode($x), "\n";
            }
            close $out;
            POSIX::_exit(0);
        }
        push @kids, { pid => $pid, file => $file };
    }
    return { stop => $stop, kids => \@kids };
}

sub traffic_stop {
    my ($tr) = @_;
    open my $fh, '>', $tr->{stop} or die "$tr->{stop}: $!";
    close $fh;
    my @res;
    for my $k (@{ $tr->{kids} }) {
        waitpid $k->{pid}, 0;
        open my $in, '<', $k->{file} or next;
        push @res, map { $JSON->decode($_) } grep { /\S/ } <$in>;
    }
    return sort { $a->{t0} <=> $b->{t0} } @res;
}

# Redis's INFO as { field => value }.
sub redis_info {
    my ($section) = @_;
    my %i;
    for (split /\r?\n/, redis_cli('INFO', $section)) {
        $i{$1} = $2 if /^([^#:][^:]*):(.*)$/;
    }
    return \%i;
}

sub noscript_errors {
    my $v = redis_info('errorstats')->{errorstat_NOSCRIPT} // '';
    return $v =~ /count=(\d+)/ ? $1 : 0;
}

sub script_loads {
    my $v = redis_info('commandstats')->{'cmdstat_script|load'} // '';
    return $v =~ /calls=(\d+)/ ? $1 : 0;
}

# A script that keeps Redis busy for $ms (Redis runs one command at a
# time: every other client waits), in a child; returns its pid.
sub redis_busy {
    my ($ms) = @_;
    my $lua = "local function us() local t = redis.call('TIME') "
            . "return t[1] * 1000000 + t[2] end "
            . "local s = us() while us() - s < $ms * 1000 do end return 1";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        $ENV{REDISCLI_AUTH} = $RPASS;
        exec 'redis-cli', '-h', '127.0.0.1', '-p', $RPORT, '--no-auth-warning',
             'EVAL', $lua, '0'
            or POSIX::_exit(127);
    }
    return $pid;
}

# The keys the limiter keeps in Redis; the name of a tenant's (prefix,
# {id}, limit, window in ms, burst: src/tenant_ratelimit_redis.h).
sub rl_keys { return grep { length } split /\n/, redis_cli('KEYS', 'tenant:rl:*') }
sub rl_key  { my ($t, $limit, $ms) = @_; return "tenant:rl:{$t->{id}}:$limit:$ms:$limit" }


# --- setup ----------------------------------------------------------------

pg_start();

my %T = (
    LOW   => create_tenant(tier => 'low',  status => 'active'),   # case 1
    OPEN  => create_tenant(tier => 'low',  status => 'active'),   # case 1, open
    HIGH  => create_tenant(tier => 'high', status => 'active'),   # traffic
    FRESH => create_tenant(tier => 'low',  status => 'active'),   # case 2
    ERR   => create_tenant(tier => 'high', status => 'active'),   # case 5
);
token($_) for values %T;

my $BEGIN = time;
nginx_start(workers => 2, http => conf());
my @WORKERS = nginx_workers();
is scalar(@WORKERS), 2, 'two workers';
my %TIMES;


# --- 1. Redis never started ---------------------------------------------------

{
    my $h = health();
    is $h->{status}, 200, '1. /api/health 200 without Redis';
    is $h->{json} && $h->{json}{redis}, 'disconnected', '1. /api/health says redis "disconnected"';

    my $m0 = metrics();
    is $m0->{tenant_redis_up}, 0, '1. tenant_redis_up 0';
    my $mark = log_mark();
    my $t0 = time;

    my @low = burst($T{LOW}, max => 8);
    is statuses(@low), '200 200 200 200 429 429 429 429',
        '1. low (10/60s), fallback=local instances=3: ceil(10/3) = 4 pass, then 429';
    is srcs(@low), join(' ', ('local') x 8), '1. source "local" for all 8';
    is join(' ', map { $_->{rem} // '-' } @low[0 .. 3]), '3 2 1 0',
        '1. $tenant_ratelimit_remaining counts down from the fallback limit 4';

    my @high = burst($T{HIGH}, max => 60);
    is scalar(bad(@low, @high)), 0, '1. no 5xx' or diag map { brief($_) . "\n" } bad(@low, @high);
    is count('local', @high), 60, '1. high: 60 answers from the local limiter';
    my @all = (@low, @high);
    my $avg = sum0(map { $_->{el} } @all) / @all;
    cmp_ok $avg, '<', 0.050, sprintf '1. answered at once: %.1f ms on average (< 50)', 1000 * $avg;
    cmp_ok max(map { $_->{el} } @all), '<', $TIMEOUT + $SLACK, '1. and none near a timeout';
    diag '1. never started: ' . timing(@all);
    $TIMES{never} = timing(@all);

    my $m1 = metrics();
    is delta($m0, $m1, fb('down')), 68, '1. tenant_redis_fallbacks_total{reason="down"} +68, one per request';
    is delta($m0, $m1, fb('timeout')) + delta($m0, $m1, fb('error')), 0,
        '1. no timeout or error fallbacks';
    is delta($m0, $m1, 'tenant_redis_commands_total'), 0, '1. no command sent';

    # the [warn] fallback line: at most once per 10 s per worker
    my $secs = time - $t0;
    my $warn = log_lines_by_pid($mark, qr/\[warn\].*tenant: .*redis/i);
    my $allowed = 1 + int($secs / 10);
    ok sum0(values %$warn) >= 1, '1. the fallback is logged at [warn]'
        or diag error_log(since => $mark);
    ok !(grep { $_ > $allowed } values %$warn),
        sprintf '1. at most %d [warn] fallback line(s) per worker over %.1f s and 68 fallbacks (%s)',
            $allowed, $secs, join(', ', map { "$_: $warn->{$_}" } sort keys %$warn);

    # the client's own connect failures: not once per attempt either
    $secs = time - $BEGIN;
    my $err = log_lines_by_pid(0, qr/\[error\].*tenant: .*[Rr]edis/);
    $allowed = 2 + int($secs / 10);
    ok !(grep { $_ > $allowed } values %$err),
        sprintf '1. connect failures logged at most %d times per worker in %.1f s (%s)',
            $allowed, $secs, join(', ', map { "$_: $err->{$_}" } sort keys %$err);

    # fallback=open
    nginx_reload(http => conf(fallback => 'open'));
    $m0 = metrics();
    my @open = burst($T{OPEN}, max => 14);
    is statuses(@open), join(' ', (200) x 14), '1. fallback=open: 14 requests of a 10/60s tenant, all 200';
    is srcs(@open), join(' ', ('open') x 14), '1. fallback=open: source "open"';
    $m1 = metrics();
    is delta($m0, $m1, fb('down')), 14, '1. fallback=open: fallbacks{reason="down"} +14';
    is health()->{status}, 200, '1. /api/health 200';

    # back to fallback=local, then Redis comes up on the port
    nginx_reload(http => conf());
    @WORKERS = nginx_workers();
    redis_start(port => $RPORT, password => $RPASS);
    my ($took, @x) = wait_global($T{HIGH}, 5);
    ok defined $took && $took <= $BACK,
        sprintf '1. Redis started: "redis" on both workers within %d s (%s)', $BACK,
            defined $took ? sprintf('%.2f s', $took) : 'never';
    diag sprintf '1. Redis started: global on both workers after %s (%d requests: %s)',
        defined $took ? sprintf('%.3f s', $took) : 'never', scalar @x, srcs(@x);
    $TIMES{start} = $took;
    is scalar(bad(@x)), 0, '1. no 5xx meanwhile';

    $h = health();
    is $h->{status}, 200, '1. /api/health 200 with Redis';
    is $h->{json} && $h->{json}{redis}, 'connected', '1. /api/health says redis "connected"';
    is metrics()->{tenant_redis_up}, 1, '1. tenant_redis_up 1';
}

# Redis as it should be: the baseline.
{
    my @x = burst($T{HIGH}, max => 40);
    is srcs(@x), join(' ', ('redis') x 40), 'baseline: 40 requests, all from Redis';
    is statuses(@x), join(' ', (200) x 40), 'baseline: all 200';
    diag 'baseline (Redis up): ' . timing(@x);
    $TIMES{baseline} = timing(@x);

    my @f = burst($T{FRESH}, max => 3);
    is join(' ', map { "$_->{src}:$_->{rem}" } @f), 'redis:9 redis:8 redis:7',
        'fresh: 3 requests of 10/60s counted in Redis (remaining 9, 8, 7)';
    my $key = rl_key($T{FRESH}, 10, 60000);
    is join(' ', grep { $_ eq $key } rl_keys()), $key, "fresh: Redis has its key $key";
}


# --- 2. Redis stopped, then killed, under traffic ------------------------------

{
    my $m0 = metrics();
    my $tr = traffic_start($T{HIGH}, 2);
    sleep 0.5;

    redis_stop();
    my $t_stopped = time;
    sleep 1;
    redis_restart();
    my $t_up = time;
    my ($back1, @w1) = wait_global($T{HIGH}, 5);

    sleep 0.3;
    redis_kill();
    my $t_killed = time;
    sleep 1;
    redis_restart();
    my $t_up2 = time;
    my ($back2, @w2) = wait_global($T{HIGH}, 5);
    sleep 0.3;

    my @x = traffic_stop($tr);
    my $m1 = metrics();
    my @api = grep { $_->{src} ne 'health' } @x;
    my @hl  = grep { $_->{src} eq 'health' } @x;

    cmp_ok scalar(@api), '>=', 50, sprintf '2. client loops: %d requests, %d health checks',
        scalar @api, scalar @hl;
    is scalar(bad(@x, @w1, @w2)), 0, '2. no 5xx, no failed request'
        or diag map { brief($_) . "\n" } bad(@x, @w1, @w2);
    is join(' ', grep { $_ != 200 } map { $_->{st} } @api, @w1, @w2), '', '2. every request 200';
    is join(' ', grep { $_ != 200 } map { $_->{st} } @hl), '', '2. every /api/health 200';
    my $slow = max(map { $_->{el} } @api, @w1, @w2);
    cmp_ok $slow, '<', $TIMEOUT + $SLACK,
        sprintf '2. slowest answer %.1f ms (< timeout + %d ms)', 1000 * $slow, 1000 * $SLACK;
    diag '2. stop/kill under traffic: ' . timing(@api);
    $TIMES{stopkill} = timing(@api);

    # (redis_start polls every 50 ms: Redis may listen a little before)
    my @down1 = grep { $_->{t0} > $t_stopped && $_->{t0} + $_->{el} < $t_up - 0.1 } @api;
    my @down2 = grep { $_->{t0} > $t_killed && $_->{t0} + $_->{el} < $t_up2 - 0.1 } @api;
    cmp_ok scalar(@down1), '>=', 5, sprintf '2. %d requests while stopped', scalar @down1;
    is join(' ', grep { $_ ne 'local' } map { $_->{src} } @down1), '', '2. all "local" while stopped';
    cmp_ok scalar(@down2), '>=', 5, sprintf '2. %d requests while killed', scalar @down2;
    is join(' ', grep { $_ ne 'local' } map { $_->{src} } @down2), '', '2. all "local" while killed';

    my $local = count('local', @api, @w1, @w2);
    is fallbacks($m0, $m1), $local,
        "2. tenant_redis_fallbacks_total: +$local, one per answer without Redis";
    cmp_ok delta($m0, $m1, fb('down')), '>=', 1, '2. reason="down" among them';
    cmp_ok delta($m0, $m1, 'tenant_redis_reconnects_total'), '>=', 2,
        '2. tenant_redis_reconnects_total grew (two outages)';

    ok defined $back1 && $back1 <= $BACK, sprintf '2. after the stop: global within %d s (%s)',
        $BACK, defined $back1 ? sprintf('%.2f s', $back1) : 'never';
    ok defined $back2 && $back2 <= $BACK, sprintf '2. after the kill: global within %d s (%s)',
        $BACK, defined $back2 ? sprintf('%.2f s', $back2) : 'never';
    diag sprintf '2. back to global on both workers: %s after the stop, %s after the kill',
        map { defined $_ ? sprintf('%.3f s', $_) : 'never' } $back1, $back2;
    @TIMES{qw(stop kill)} = ($back1, $back2);

    # once both workers answered from Redis, they stay there
    my @after = grep { $_->{t0} > $t_up2 + ($back2 // $BACK) } @api;
    cmp_ok scalar(@after), '>=', 5, sprintf '2. %d requests of the loops after that', scalar @after;
    is join(' ', grep { $_ ne 'redis' } map { $_->{src} } @after), '',
        '2. all of them "redis"';

    # the restarted Redis is empty: FRESH's count starts again
    is join(' ', grep { /\Q$T{FRESH}{id}\E/ } rl_keys()), '',
        '2. the restarted Redis has no key of tenant FRESH';
    my $f = get($T{FRESH});
    is "$f->{st} $f->{src} $f->{rem}", '200 redis 9',
        '2. FRESH after the restart: counted in Redis from a fresh window (remaining 9, not 6)';
}


# --- 3. SIGSTOP --------------------------------------------------------------

{
    my ($ready) = wait_global($T{HIGH}, 3);
    ok defined $ready, '3. both workers global before the stall';

    my $m0 = metrics();
    redis_stall();
    my $t0 = time;
    my @a = burst($T{HIGH}, secs => 0.8);
    my $mA = metrics();
    my @b = burst($T{HIGH}, max => 20);
    my $mB = metrics();
    my $h = health();
    redis_unstall();
    my $t_cont = time;
    my ($back, @w) = wait_global($T{HIGH}, 5);

    is scalar(bad(@a, @b, @w)), 0, '3. no 5xx' or diag map { brief($_) . "\n" } bad(@a, @b, @w);
    is join(' ', grep { $_ ne 'local' } map { $_->{src} } @a, @b), '',
        sprintf '3. all %d requests during the stall: "local"', @a + @b;
    my $slow = max(map { $_->{el} } @a, @b);
    cmp_ok $slow, '<', $TIMEOUT + $SLACK,
        sprintf '3. none waited much more than the timeout: slowest %.1f ms', 1000 * $slow;
    cmp_ok $a[0]{el}, '>=', $TIMEOUT - 0.003,
        sprintf '3. the first request waited for the timeout (%.1f ms)', 1000 * $a[0]{el};
    cmp_ok delta($m0, $mA, fb('timeout')), '>=', 1,
        sprintf '3. the first 0.8 s: fallbacks{reason="timeout"} +%d',
            delta($m0, $mA, fb('timeout'));
    cmp_ok delta($m0, $mA, 'tenant_redis_timeouts_total'), '>=', 1, '3. tenant_redis_timeouts_total grew';
    my @waited = grep { $_->{el} >= $TIMEOUT - 0.003 } @a;
    my $last_wait = @waited ? $waited[-1]{t0} - $t0 : 0;
    is delta($mA, $mB, fb('down')), 20, '3. after connect_timeout: 20 requests, fallbacks{reason="down"} +20';
    is delta($mA, $mB, fb('timeout')), 0, '3. and no more timeouts: the connection was given up';
    is $mB->{tenant_redis_up}, 0, '3. tenant_redis_up 0';
    cmp_ok pct(0.5, map { $_->{el} } @b), '<', $TIMEOUT - 0.005,
        sprintf '3. those answered at once: p50 %.1f ms', 1000 * pct(0.5, map { $_->{el} } @b);
    is $h->{status}, 200, '3. /api/health 200 during the stall';
    ok defined $back && $back <= $BACK, sprintf '3. SIGCONT: global within %d s (%s)',
        $BACK, defined $back ? sprintf('%.2f s', $back) : 'never';
    diag sprintf '3. stall: first %s: %s (%d waited, the last at %.0f ms); then %s; SIGCONT -> global after %s',
        '0.8 s', timing(@a), scalar @waited, 1000 * $last_wait, timing(@b),
        defined $back ? sprintf('%.3f s', $back) : 'never';
    $TIMES{stall} = $back;
}


# --- 4. slow Redis -----------------------------------------------------------

for my $how ('CLIENT PAUSE', 'busy script') {
    my ($ready) = wait_global($T{HIGH}, 3);
    ok defined $ready, "4. $how: both workers global before";

    my $m0 = metrics();
    my $busy;
    if ($how eq 'CLIENT PAUSE') {
        is redis_cli('CLIENT', 'PAUSE', 150, 'ALL'), 'OK', '4. CLIENT PAUSE 150 ALL';
    } else {
        $busy = redis_busy(150);
        sleep 0.03;                     # redis-cli starting, the script running
    }
    my $t0 = time;
    my @x = burst($T{HIGH}, secs => 0.25);
    if ($busy) {
        waitpid $busy, 0;
        is $?, 0, '4. busy script: redis-cli EVAL succeeded';
    } else {
        sleep 0.05 while time < $t0 + 0.2;
    }
    my $m1 = metrics();
    my @late = burst($T{HIGH}, max => 20);
    my $m2 = metrics();

    is scalar(bad(@x, @late)), 0, "4. $how: no 5xx" or diag map { brief($_) . "\n" } bad(@x, @late);
    my $slow = max(map { $_->{el} } @x);
    cmp_ok $slow, '<', $TIMEOUT + $SLACK,
        sprintf '4. %s: slowest answer %.1f ms', $how, 1000 * $slow;
    my @fb = grep { $_->{src} eq 'local' } @x;
    cmp_ok scalar(@fb), '>=', 1, sprintf '4. %s: %d of %d requests fell back', $how,
        scalar @fb, scalar @x;
    cmp_ok delta($m0, $m1, fb('timeout')), '>=', 1,
        sprintf '4. %s: fallbacks{reason="timeout"} +%d', $how, delta($m0, $m1, fb('timeout'));
    is delta($m0, $m2, 'tenant_redis_reconnects_total'), 0,
        "4. $how: no reconnect (the late replies were read and dropped)";
    is delta($m0, $m2, 'tenant_redis_errors_total{kind="protocol"}'), 0, "4. $how: no protocol error";
    is srcs(@late), join(' ', ('redis') x 20), "4. $how: over, the next 20 requests: \"redis\"";
    is fallbacks($m1, $m2), 0, "4. $how: no fallback counted after it";
    diag sprintf '4. %s: %s; %d fell back', $how, timing(@x), scalar @fb;
    $TIMES{$how} = timing(@x);
}


# --- 5. error replies, NOSCRIPT -----------------------------------------------

{
    my ($ready) = wait_global($T{HIGH}, 3);
    ok defined $ready, '5. both workers global before';

    # (a key of 1000000/60s lives 1 ms per request: named, not looked for)
    my @key = (rl_key($T{ERR}, 1000000, 60000));
    my $first = get($T{ERR});
    is "$first->{st} $first->{src}", '200 redis', '5. ERR: counted in Redis';

    redis_cli('DEL', $key[0]);
    is redis_cli('HSET', $key[0], 'not', 'a-number'), 1, "5. HSET $key[0]";
    my $m0 = metrics();
    my @x = burst($T{ERR}, max => 6);
    my $m1 = metrics();
    is statuses(@x), join(' ', (200) x 6), '5. the key a hash (WRONGTYPE in the script): 6 requests, all 200';
    is srcs(@x), join(' ', ('local') x 6), '5. source "local"';
    is delta($m0, $m1, fb('error')), 6, '5. fallbacks{reason="error"} +6';
    is delta($m0, $m1, 'tenant_redis_errors_total{kind="reply"}'), 6, '5. tenant_redis_errors_total{kind="reply"} +6';
    is delta($m0, $m1, 'tenant_redis_reconnects_total'), 0, '5. an error reply keeps the connection';

    redis_cli('DEL', $key[0]);
    @x = burst($T{ERR}, max => 4);
    is srcs(@x), 'redis redis redis redis', '5. the key removed: "redis" again';

    # SCRIPT FLUSH: the next EVALSHA of each worker gets NOSCRIPT
    my $ns0 = noscript_errors();
    my $ld0 = script_loads();
    is redis_cli('SCRIPT', 'FLUSH'), 'OK', '5. SCRIPT FLUSH';
    $m0 = metrics();
    @x = burst($T{HIGH}, max => 12);
    $m1 = metrics();
    is srcs(@x), join(' ', ('redis') x 12), '5. after SCRIPT FLUSH: 12 requests, all "redis"';
    is fallbacks($m0, $m1), 0, '5. no fallback counted';
    my %w = map { $_->{w} => 1 } @x;
    my $ns = noscript_errors() - $ns0;
    cmp_ok $ns, '>=', 1, "5. Redis answered NOSCRIPT $ns time(s) (workers seen: " . keys(%w) . ')';
    cmp_ok script_loads() - $ld0, '>=', $ns, '5. and the script was loaded again after each';
}


# --- end ----------------------------------------------------------------------

{
    is health()->{status}, 200, '/api/health 200 at the end';

    # the [warn] fallback lines over the whole run (thousands of
    # fallbacks in several outages): never two of one worker within 10 s
    # (the log's times are whole seconds: 9 apart at least)
    my (%when, $n);
    for (split /\n/, error_log(since => 0)) {
        my ($ts, $pid) = m{^(\d+/\d+/\d+ \d+:\d+:\d+) \[warn\] (\d+)#.*tenant: .*redis}i or next;
        my ($h, $mi, $se) = $ts =~ /(\d+):(\d+):(\d+)$/;
        push @{ $when{$pid} }, 3600 * $h + 60 * $mi + $se;
        $n++;
    }
    my @close;
    for my $pid (sort keys %when) {
        my @t = @{ $when{$pid} };
        push @close, map { "$pid: $t[$_ - 1] -> $t[$_]" } grep { $t[$_] - $t[$_ - 1] < 9 } 1 .. $#t;
    }
    # the client's failure lines: once per state change (a failure after
    # "ready again"), else at most once per 10 s, per worker
    my (%err_at, @often, $nerr);
    for (split /\n/, error_log(since => 0)) {
        my ($h, $mi, $se, $level, $pid) =
            m{^\d+/\d+/\d+ (\d+):(\d+):(\d+) \[(\w+)\] (\d+)#} or next;
        if ($level eq 'notice' && /tenant: Redis at .* is ready again/) {
            delete $err_at{$pid};
        } elsif ($level eq 'error' && /tenant: .*Redis/) {
            my $at = 3600 * $h + 60 * $mi + $se;
            push @often, "$pid: $err_at{$pid} -> $at"
                if defined $err_at{$pid} && $at - $err_at{$pid} < 9;
            $err_at{$pid} = $at;
            $nerr++;
        }
    }
    # nor one line per connect attempt at any level (nginx's connect()
    # failed, at [error] each time, or the errno at [info])
    my @attempts = grep { /connect\(\) failed|tenant: Redis connect\(\)/ } split /\n/, error_log(since => 0);
    is scalar(@attempts), 0, 'the whole run: no line per connect attempt (connect() failed)'
        or diag join "\n", @attempts[0 .. min(4, $#attempts)];
    is join('; ', @often), '',
        sprintf 'the whole run: %d [error] Redis lines, each the first after "ready again" or 10 s '
            . 'after the last', $nerr // 0;

    my $m = metrics();
    my $total = fallbacks({}, $m);
    is join('; ', @close), '',
        sprintf 'the whole run: %d [warn] fallback lines for %d fallbacks, none within 10 s of the '
            . 'last of its worker', $n // 0, $total;
    diag sprintf 'fallbacks: down %d, timeout %d, error %d; commands %d, timeouts %d, reconnects %d',
        (map { $m->{ fb($_) } // -1 } qw(down timeout error)),
        map { $m->{"tenant_redis_${_}_total"} // -1 } qw(commands timeouts reconnects);
    my $log = error_log(since => 0);
    ok index($log, $RPASS) < 0, 'the Redis password is in no log line';
    diag "timings: " . join '; ', map { "$_: " . (defined $TIMES{$_}
        ? ($TIMES{$_} =~ /^[\d.]+$/ ? sprintf('%.3f s', $TIMES{$_}) : $TIMES{$_}) : 'never') }
        sort keys %TIMES;
    diag sprintf 'run time %.1f s', time - $BEGIN;
}

done_testing();
