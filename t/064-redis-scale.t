#!/usr/bin/perl
# Three gateways on one machine (issue 14, item 5): each its own nginx
# master with two workers and its own ports (nginx_instance_start), one
# PostgreSQL, one redis-server; the listener (tenant_database_listen, on
# by default) in each.  One tenant is hammered through the three in turn
# by concurrent clients; its limit, $LIMIT requests per $WINDOW s with
# burst = limit, is GCRA: after the burst, at most limit requests pass in
# any window.  Windows are counted from the clients' clocks, once the
# burst is spent (the first 429 and half a second).
#
#   a  tenant_redis (timeout=200ms, so that the machine's load causes no
#      fallback): admitted requests per window within +-2 % of the limit,
#      every one answered by Redis ($tenant_ratelimit_source "redis", no
#      fallback counted in any instance's /metrics), all three admitting;
#      without tenant_redis the same hammering admits about 3 x (each
#      instance counts alone): what makes (a) able to fail
#   b  a tenant changed through the admin API on instance 1
#      (rateLimitOverride, 20 times) is seen by instances 2 and 3
#      (NOTIFY, their listeners): delays from the PATCH sent to the first
#      answer with the new limit, p50 / p99 (diag), p99 <= 1 s
#   c  Redis stopped mid-run (fallback=local instances=3): no 5xx, no
#      request unanswered; over a window of the outage (once the local
#      bursts are spent) each instance admits at most ceil(limit / 3) and
#      the three together at most the limit (+2 %, as in a), from the
#      local limiter ("local"); Redis back: each instance answers from
#      Redis again within 2 s, and after 2 s nothing but "redis" / "hold"

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS    ();
use List::Util  qw(sum max min);
use POSIX       qw(ceil);
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $LIMIT    = 300;             # requests per window, burst = limit
my $WINDOW   = 5;               # seconds
my $CLIENTS  = 4;               # concurrent clients, each over the three
my $TOL      = 0.02;            # +-2 %
my $CHANGES  = 20;              # part b
my $SHARE    = ceil($LIMIT / 3);    # fallback=local instances=3

my $SIGNING_KEY = '64a5ca1e' x 8;

# %%REDIS_LINE%%: tenant_redis, or nothing (part a without Redis).  The
# upstream is a server of the same nginx answering from memory.
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" pool=2 timeout=3s;
    tenant_cache        zone=tenants:1m ttl=60s;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  $SIGNING_KEY;
    tenant_rate_limit   zone=rl:1m rate=$LIMIT/${WINDOW}s;
    %%REDIS_LINE%%

    tenant_tier hammer  features=api rate=$LIMIT/${WINDOW}s burst=$LIMIT;
    tenant_tier watch   features=api rate=100000/${WINDOW}s;

    server {
        listen 127.0.0.1:%%PORT%%;

        add_header X-RateLimit-Source \$tenant_ratelimit_source always;
        add_header X-RL-Limit         \$tenant_ratelimit_limit always;

        location /api/admin/tenants {
            tenant_gateway admin;
            tenant_admin;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://127.0.0.1:%%PORT2%%;
        }

        location = /metrics {
            tenant_metrics;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        access_log off;
        location / {
            return 200 "ok\\n";
        }
    }
EOF

sub http_conf {
    my (%o) = @_;
    my $line = $o{redis}
        ? 'tenant_redis %%REDIS%% timeout=200ms fallback=local instances=3;'
        : '# no tenant_redis';
    return $HTTP =~ s/%%REDIS_LINE%%/$line/r;
}


# --- local helpers ----------------------------------------------------------

my $JSON = JSON::XS->new->utf8->canonical;
my @GW;                         # the three instances

sub start_three {
    my (%o) = @_;
    nginx_instance_stop();
    @GW = map { nginx_instance_start(name => "gw$_", workers => 2,
                                     http => http_conf(%o)) } 1 .. 3;
}

sub hdr { my ($r, $n) = @_; return ($r->{headers}{lc $n} || [])->[0] }

# /metrics of one instance as { 'name{labels}' => value }.
sub metrics {
    my ($gw) = @_;
    my $r = http(port => $gw->{port}, path => '/metrics');
    my %m;
    for (split /\n/, $r->{body} // '') {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

# The sum over the three instances of every series named $name.
sub metric_sum {
    my ($name) = @_;
    my $n = 0;
    for my $gw (@GW) {
        my $m = metrics($gw);
        $n += $m->{$_} for grep { /^\Q$name\E(\{|$)/ } keys %$m;
    }
    return $n;
}

sub sleep_until { my ($t) = @_; my $d = $t - time; sleep $d if $d > 0 }

sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[max(0, ceil($p / 100 * @v) - 1)];
}

# $CLIENTS clients, each sending requests for $org one after the other,
# to the three instances in turn (client c begins at instance c % 3),
# from $start until $start + $secs.  $events: [ [ at, code ], ... ], run
# by this process meanwhile, in order.  Returns the answers, in the order
# they came, as [ time (answered), instance (0..2), status, source ].
sub hammer {
    my (%o) = @_;
    my $auth  = 'Bearer ' . mint_token(org => $o{org}, exp => int(time) + 600);
    my $start = time + 0.3;
    my $end   = $start + $o{secs};
    my @ports = map { $_->{port} } @GW;

    my @kids;
    for my $c (0 .. $CLIENTS - 1) {
        pipe my $rd, my $wr or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $rd;
            sleep_until($start);
            my @out;
            for (my $k = $c; time < $end; $k++) {
                my $i = $k % 3;
                my $r = http(port => $ports[$i], path => '/api/products',
                             timeout => 5, headers => [Authorization => $auth]);
                push @out, [time, $i, $r->{status},
                            hdr($r, 'X-RateLimit-Source') // ''];
            }
            print $wr $JSON->encode(\@out);
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        push @kids, [$pid, $rd];
    }

    for my $e (@{ $o{events} || [] }) {
        my ($at, $code) = @$e;
        sleep_until($start + $at);
        $code->();
    }

    my @all;
    for (@kids) {
        my ($pid, $rd) = @$_;
        my $json = do { local $/; readline $rd };
        close $rd;
        waitpid $pid, 0;
        push @all, @{ $JSON->decode($json || '[]') };
    }
    @all = sort { $a->[0] <=> $b->[0] } @all;
    return { start => $start, end => $end, answers => \@all };
}

# Answers with status $status in [$from, $to), optionally of one instance.
sub count_in {
    my ($h, $from, $to, $status, $inst) = @_;
    return scalar grep { $_->[0] >= $from && $_->[0] < $to && $_->[2] == $status
                         && (!defined $inst || $_->[1] == $inst) } @{ $h->{answers} };
}

sub first_429 {
    my ($h, $after) = @_;
    my ($a) = grep { $_->[2] == 429 && $_->[0] >= ($after // 0) } @{ $h->{answers} };
    return $a ? $a->[0] : undef;
}

sub statuses {
    my ($h) = @_;
    my %by;
    $by{ $_->[2] }++ for @{ $h->{answers} };
    return join ' ', map { "$_:$by{$_}" } sort keys %by;
}

sub sources {
    my ($h, $status, $from, $to) = @_;
    my %by;
    $by{ $_->[3] || '(none)' }++
        for grep { $_->[2] == $status && $_->[0] >= ($from // 0)
                   && $_->[0] < ($to // 9e9) } @{ $h->{answers} };
    return \%by;
}


# --- setup ----------------------------------------------------------------

pg_start();
my %T = (
    GLOBAL => create_tenant(tier => 'hammer', status => 'active'),
    LOCAL  => create_tenant(tier => 'hammer', status => 'active'),
    OUTAGE => create_tenant(tier => 'hammer', status => 'active'),
    WATCH  => create_tenant(tier => 'watch',  status => 'active'),
);
redis_start();

start_three(redis => 1);
is scalar(map { nginx_instance_workers($_) } @GW), 6, 'three instances, two workers each';
is scalar(keys %{{ map { $_->{pid} => 1 } @GW }}), 3, 'three nginx masters';

# every worker connected to Redis (tenant_redis_up)
{
    my ($up) = retry_until(5, sub { [map { metrics($_)->{tenant_redis_up} // 0 } @GW] },
                           sub { !grep { !$_ } @{ $_[0] } });
    is_deeply $up, [1, 1, 1], 'tenant_redis_up 1 in each instance';
}


# --- a. one tenant through the three: the limit is global ---------------------

{
    my $fb0  = metric_sum('tenant_redis_fallbacks_total');
    my $cmd0 = metric_sum('tenant_redis_commands_total');
    my $h = hammer(org => $T{GLOBAL}{clerk_organization_id}, secs => 3 + 2 * $WINDOW);
    my $fb1  = metric_sum('tenant_redis_fallbacks_total');
    my $cmd1 = metric_sum('tenant_redis_commands_total');

    my $n = @{ $h->{answers} };
    is statuses($h) =~ s/ ?(200|429):\d+//gr, '', "global: every answer 200 or 429 ($n: "
        . statuses($h) . ')';
    my $t429 = first_429($h) // $h->{end};
    my $t0 = $t429 + 0.5;
    ok $t0 + 2 * $WINDOW <= $h->{end},
        sprintf('global: the burst spent after %.2f s, two whole windows follow', $t429 - $h->{start});

    for my $k (0, 1) {
        my ($from, $to) = ($t0 + $k * $WINDOW, $t0 + ($k + 1) * $WINDOW);
        my $got = count_in($h, $from, $to, 200);
        my @per = map { count_in($h, $from, $to, 200, $_) } 0 .. 2;
        ok abs($got - $LIMIT) <= $TOL * $LIMIT,
            sprintf('global: window %d admitted %d of %d (%+.1f %%; per instance %s)',
                    $k + 1, $got, $LIMIT, 100 * ($got - $LIMIT) / $LIMIT, join '/', @per);
        ok !(grep { !$_ } @per), "global: window @{[$k + 1]}: each instance admitted some";
    }

    # the first window, from the first answer: the burst and the refill,
    # never more than burst + limit (GCRA)
    my ($first) = map { $_->[0] } grep { $_->[2] == 200 } @{ $h->{answers} };
    my $w0 = count_in($h, $first, $first + $WINDOW, 200);
    ok $w0 <= 2 * $LIMIT, "global: the first window (burst and refill) admitted $w0, at most burst + limit";

    is_deeply sources($h, 200), { redis => count_in($h, 0, 9e9, 200) },
        'global: every admitted request counted by Redis ($tenant_ratelimit_source)';
    my $s429 = sources($h, 429);
    is scalar(grep { !/^(redis|hold)$/ } keys %$s429), 0,
        'global: every refusal from Redis or the local hold: '
        . join(', ', map { "$_ $s429->{$_}" } sort keys %$s429);
    is $fb1 - $fb0, 0, 'global: no fallback (tenant_redis_fallbacks_total, the three instances)';
    diag sprintf 'global: %d requests, %d Redis commands (%.2f per request), %d held',
        $n, $cmd1 - $cmd0, ($cmd1 - $cmd0) / max(1, $n), $s429->{hold} // 0;
}


# --- b. a change on instance 1 seen by instances 2 and 3 ----------------------

{
    my $admin = mint_token(sub => 'user_admin_064', metadata => { role => 'admin' },
                           exp => int(time) + 600);
    my $token = mint_token(org => $T{WATCH}{clerk_organization_id}, exp => int(time) + 600);
    my $limit_at = sub {
        my ($gw) = @_;
        my $r = http(port => $gw->{port}, path => '/api/products',
                     headers => [Authorization => "Bearer $token"]);
        return $r->{status} == 200 ? hdr($r, 'X-RL-Limit') // '' : "status $r->{status}";
    };
    is_deeply [map { $limit_at->($_) } @GW], [(100000) x 3],
        'propagation: the tenant cached in the three (its tier\'s limit)';

    my (@delay, @missed, @bad);
    for my $c (1 .. $CHANGES) {
        my $want = 1000 + $c;
        # from the PATCH sent (its answer comes after the commit, hence
        # after the NOTIFY): an upper bound of the delay
        my $sent = time;
        my $r = http(port => $GW[0]{port}, method => 'PATCH',
                     path => "/api/admin/tenants/$T{WATCH}{id}",
                     headers => [Authorization => "Bearer $admin",
                                 'Content-Type' => 'application/json'],
                     body => $JSON->encode({ rateLimitOverride => $want }));
        push @bad, "change $c: PATCH $r->{status}" unless $r->{status} == 200;
        my %seen;
        while (keys %seen < 2 && time - $sent < 3) {
            for my $i (1, 2) {
                next if $seen{$i};
                $seen{$i} = time - $sent if $limit_at->($GW[$i]) eq $want;
            }
        }
        for my $i (1, 2) {
            if (defined $seen{$i}) { push @delay, $seen{$i} }
            else                   { push @missed, "change $c, instance " . ($i + 1) }
        }
    }
    is_deeply \@bad, [], "propagation: $CHANGES PATCHes on instance 1, each 200";
    is_deeply \@missed, [], 'propagation: every change seen by instances 2 and 3 (within 3 s)';
    my ($p50, $p99) = (pct(50, @delay), pct(99, @delay));
    diag sprintf 'propagation (admin API on instance 1 -> instances 2 and 3, %d samples): '
        . 'p50 %.0f ms, p99 %.0f ms, max %.0f ms', scalar @delay, 1000 * $p50,
        1000 * $p99, 1000 * max(@delay);
    ok @delay && $p99 <= 1, sprintf 'propagation: p99 %.0f ms <= 1 s', 1000 * $p99;
}


# --- c. Redis stopped mid-run, then back --------------------------------------

{
    my ($t_stop, $t_back);
    my $fb0 = metric_sum('tenant_redis_fallbacks_total');
    my $fb_mid;
    # 1 s global, then the outage: 1 s for the local bursts, one window
    # counted; then Redis back for 3 s.
    my $at_back = 1 + 0.3 + 1 + $WINDOW + 0.2;
    my $h = hammer(org => $T{OUTAGE}{clerk_organization_id}, secs => $at_back + 3.5,
                   events => [[1,        sub { redis_stop(); $t_stop = time }],
                              [$at_back, sub { $fb_mid = metric_sum('tenant_redis_fallbacks_total');
                                               $t_back = time; redis_restart() }]]);
    my $fb1 = metric_sum('tenant_redis_fallbacks_total');

    my @other = grep { $_->[2] != 200 && $_->[2] != 429 } @{ $h->{answers} };
    is scalar(@other), 0, 'outage: every answer 200 or 429, no 5xx, none unanswered ('
        . statuses($h) . ')';
    ok $t_back - $t_stop >= 1 + $WINDOW,
        sprintf 'outage: Redis stopped for %.2f s', $t_back - $t_stop;

    my ($from, $to) = ($t_stop + 1, $t_stop + 1 + $WINDOW);
    my @per = map { count_in($h, $from, $to, 200, $_) } 0 .. 2;
    my $total = sum(@per);
    ok !(grep { $_ > $SHARE * (1 + $TOL) } @per),
        "outage: each instance admitted at most ceil(limit/3) = $SHARE (+2 %) in a window: @per";
    ok $total <= $LIMIT * (1 + $TOL),
        "outage: the three admitted at most the limit (+2 %): $total of $LIMIT";
    ok $total >= $LIMIT * 0.9,
        "outage: and not much less (the fallback admits its share): $total";
    my $src = sources($h, 200, $from, $to);
    is_deeply [keys %$src], ['local'], 'outage: admitted by the local limiter ($tenant_ratelimit_source "local")'
        or diag explain $src;
    ok $fb_mid > $fb0, sprintf 'outage: tenant_redis_fallbacks_total counted them (+%d)', $fb_mid - $fb0;

    # back: each instance's first answer from Redis
    my @back;
    for my $i (0 .. 2) {
        my ($a) = grep { $_->[1] == $i && $_->[0] > $t_back && $_->[3] eq 'redis' }
                  @{ $h->{answers} };
        push @back, $a ? $a->[0] - $t_back : 99;
    }
    diag sprintf 'outage: Redis back, first answer from Redis after %s s (instances 1, 2, 3)',
        join ', ', map { sprintf '%.2f', $_ } @back;
    ok max(@back) <= 2, sprintf 'outage: each instance global again within 2 s (%.2f s)', max(@back);
    my $late = sources($h, 200, $t_back + 2);
    my %late = (%$late, %{ sources($h, 429, $t_back + 2) });
    delete @late{qw(redis hold)};
    is_deeply \%late, {}, 'outage: 2 s after Redis is back, no answer but from Redis (or the hold)';
    ok $h->{end} - $t_back >= 3, 'outage: the clients ran 3 s past Redis\'s return';
    diag sprintf 'outage: fallbacks %d during, %d after Redis came back',
        $fb_mid - $fb0, $fb1 - $fb_mid;
}


# --- a (without Redis). the same hammering, each instance counting alone -------

{
    start_three(redis => 0);
    my $h = hammer(org => $T{LOCAL}{clerk_organization_id}, secs => 3.5 + $WINDOW);
    my $t0 = (first_429($h) // $h->{end}) + 0.5;
    ok $t0 + $WINDOW <= $h->{end}, 'local: the burst spent, a whole window follows';
    my $got = count_in($h, $t0, $t0 + $WINDOW, 200);
    my @per = map { count_in($h, $t0, $t0 + $WINDOW, 200, $_) } 0 .. 2;
    ok $got >= 2.5 * $LIMIT,
        sprintf 'local (no tenant_redis): a window admitted %d, %.2f x the limit (per instance %s)',
            $got, $got / $LIMIT, join '/', @per;
    is_deeply [keys %{ sources($h, 200) }], ['local'], 'local: $tenant_ratelimit_source "local"';
}

done_testing();
