#!/usr/bin/perl
# Per-tenant rate limits (tenant_rate_limit, tenant_tier ... rate=,
# rate_limit_override, tenant_rate_limit_by), their headers, metrics and
# configuration errors.
#
# Semantics under test (src/tenant_ratelimit.h): GCRA, one timestamp per
# key in a shared-memory zone, read and advanced under the zone's mutex.
# A rate of `limit` requests per `window` refills continuously, one
# request every window / limit (the emission interval); up to `burst`
# (default: limit) pass at once.  So, for rate=5/2s:
#
#     t=0      5 requests pass (RateLimit r=4,3,2,1,0), the 6th is refused;
#     t=0.4 s  exactly one more passes (window / limit = 0.4 s refilled);
#     t=2 s    after a whole window of silence the whole quota is back.
#
# Over a long time at most limit requests per window pass; in any one
# window at most burst + limit - 1.
#
#   1   limit N per window, the 429 problem body, Retry-After, the
#       RateLimit-Policy / RateLimit headers, the variables; a refused
#       request never reaches the upstream; GCRA refill; burst > limit
#   2   tenants do not share a quota
#   3   the tier's rate, else tenant_rate_limit's; neither: no limit
#   4   public.tenants.rate_limit_override
#   5   two workers hammering one tenant: exactly the quota passes
#   6   the state survives nginx -s reload; a reload that shrinks a
#       rate's bucket: the refusals end when Retry-After says
#   7   tenant_rate_limit_by $tenant_user_id: a second, narrower key; a
#       request the tenant's limit refuses costs the user's nothing
#   8   a tiny zone and 300 tenants: evictions, never a 500, no alert
#   9   /metrics counts the 429s per tier
#   10  configuration errors
#   11  the wall clock stepped back or forward (libfaketime): the limits
#       keep to the monotonic clock
#   12  the RateLimit headers on a response made by an error_page redirect

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use File::Temp  ();
use JSON::XS    ();
use POSIX       ();
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = '0123456789abcdef' x 4;

# An upstream that writes the X-Probe header of every request it gets to a
# file, so that a test can tell whether a request reached it.
my $TMP      = File::Temp::tempdir('t060-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $CLOSED_PORT = free_port();          # nothing listens: a 502
my $UPSTREAM_LOG = "$TMP/upstream.log";
my $upstream = echo_start(handler => sub {
    my ($req) = @_;
    if (open my $fh, '>>', $UPSTREAM_LOG) {
        print $fh (($req->{headers}{'x-probe'} || ['-'])->[0], "\n");
        close $fh;
    }
    return (404, ['Content-Type' => 'text/plain'], "no such thing\n")
        if $req->{uri} =~ m{/missing};
    return (200, ['Content-Type' => 'application/json'],
            JSON::XS->new->canonical->encode({ uri => $req->{uri},
                                               headers => $req->{headers} }));
});

# Tiers (the tenant's subscription_tier picks one):
#   fast     rate=5/2s          cases 1, 2, 4
#   plain    no rate            case 3: tenant_rate_limit's rate, or none
#   bursty   rate=1/1s burst=10 case 1: burst > limit
#   hammer   rate=20/60s        case 5 (emission interval 3 s: no refill
#                               while the clients run, so exactly 20 pass)
#   reload   rate=2/4s          case 6
#   userlim  rate=1000r/h       case 7: the tenant's limit, high
#   many     rate=100r/m        case 8
#   shrink   rate=1r/m          case 6: %%SHRINK%%, 10r/s after a reload
#   clock    rate=20/60s        case 11 (emission interval 3 s)
#   tight    rate=2/10s         case 7b, under a looser user limit
# %%RATELIMIT%% is the tenant_rate_limit line (replaced below).
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" pool=4 timeout=3s;
    tenant_cache        zone=tenants:1m ttl=60s;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  $SIGNING_KEY;

    %%RATELIMIT%%
    %%REDISLINE%%

    tenant_tier fast     features=api rate=5/2s;
    tenant_tier plain    features=api;
    tenant_tier bursty   features=api rate=1/1s burst=10;
    tenant_tier hammer   features=api rate=20/60s;
    tenant_tier reload   features=api rate=2/4s;
    tenant_tier userlim  features=api rate=1000r/h;
    tenant_tier many     features=api rate=100r/m;
    tenant_tier shrink   features=api rate=%%SHRINK%%;
    tenant_tier clock    features=api rate=20/60s;
    tenant_tier tight    features=api rate=2/10s;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        add_header X-Worker       \$pid always;
        add_header X-RL-Limit     \$tenant_ratelimit_limit always;
        add_header X-RL-Remaining \$tenant_ratelimit_remaining always;
        add_header X-Msec         \$msec always;
        add_header X-RL-Source    \$tenant_ratelimit_source always;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://$upstream->{addr};
        }

        location /user/ {
            tenant_gateway on;
            tenant_rate_limit_by \$tenant_user_id rate=2/10s;
            proxy_pass     http://$upstream->{addr};
        }

        location /userq/ {
            tenant_gateway on;
            tenant_rate_limit_by \$tenant_user_id rate=3/60s;
            proxy_pass     http://$upstream->{addr};
        }

        # case 12: responses made by error_page redirects
        location /ep/ {
            tenant_gateway on;
            proxy_intercept_errors on;
            error_page 404 = \@ep404;
            error_page 429 = \@ep429;
            error_page 502 /ep-502.json;
            location /ep/down/ {
                proxy_pass http://127.0.0.1:$CLOSED_PORT;
            }
            proxy_pass     http://$upstream->{addr};
        }

        location \@ep404 {
            return 404 '{"error":"not found"}';
        }

        location \@ep429 {
            return 429 '{"error":"slow down"}';
        }

        location = /ep-502.json {
            internal;
            return 502 '{"error":"bad gateway"}';
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF

# t/062-redis-limits.t runs this file again with the limits counted in
# Redis (T060_REDIS=1): the same cases, the same answers, but for the
# differences the file names where they arise.  The timeout is long: the
# answers are Redis's, not the fallback's (checked at the end).
our $REDIS = $ENV{T060_REDIS} ? 1 : 0;
my $REDISLINE = $REDIS ? 'tenant_redis %%REDIS%% timeout=2s;' : '';

sub http_conf {
    my ($ratelimit, $shrink) = @_;
    $shrink //= '1r/m';
    return $HTTP =~ s/%%RATELIMIT%%/$ratelimit/r =~ s/%%SHRINK%%/$shrink/r
                 =~ s/%%REDISLINE%%/$REDISLINE/r;
}

# The default rate is 3 requests a minute (the "r/m" syntax).
my $RL_DEFAULT = 'tenant_rate_limit zone=rl:1m rate=3r/m;';

# Refusals are logged at info; nothing else is expected.
error_log_allow(qr/\[info\].*tenant: refused with 429 rate_limited/);


# --- local helpers ----------------------------------------------------------

my %TOKEN;      # one token per (org, user): the token cache is not tested
my $PROBE = 0;
my %N429;       # tier => rate_limited refusals seen by this test
my %N200;       # tier => admitted requests seen by this test

sub token {
    my ($org, $user) = @_;
    $user //= 'user_test';
    return $TOKEN{"$org $user"} //= mint_token(org => $org, sub => $user);
}

# $tenant_ratelimit_source of every answer get() had
my %SOURCE;

sub tally {
    my ($tier, $r) = @_;
    $N429{$tier}++ if $r->{status} == 429 && code($r) eq 'rate_limited';
    $N200{$tier}++ if $r->{status} == 200;
}

# One request for tenant $t (a public.tenants row), on a new connection.
#   path (/api/products), user (the token's sub)
sub get {
    my ($t, %o) = @_;
    my $probe = "p$$-" . ++$PROBE;
    my $r = http(path => $o{path} // '/api/products', headers => [
        Authorization => 'Bearer ' . token($t->{clerk_organization_id}, $o{user}),
        'X-Probe'     => $probe,
    ]);
    $r->{probe} = $probe;
    tally($t->{subscription_tier}, $r);
    $SOURCE{ hdr($r, 'X-RL-Source') // '' }++;
    return $r;
}

sub code   { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub hdr    { my ($r, $n) = @_; return ($r->{headers}{lc $n} || [])->[0] }
sub brief  { my ($r) = @_; return sprintf '%s %s %s', $r->{status}, code($r),
                 $r->{error} // '' }
sub statuses { return join ' ', map { $_->{status} } @_ }

# Whether the upstream received the request with this probe.
sub upstream_saw {
    my ($probe) = @_;
    open my $fh, '<', $UPSTREAM_LOG or return 0;
    while (<$fh>) { chomp; return 1 if $_ eq $probe }
    return 0;
}

# A structured-field list of RateLimit / RateLimit-Policy:
#   "tenant";q=5;w=2, "user";q=2;w=10  ->  { tenant => { q => 5, w => 2 },
#                                            user => { q => 2, w => 10 } }
# undef when the header is absent; '?' keys when an item does not parse.
sub sf {
    my ($r, $name) = @_;
    my $v = hdr($r, $name) // return undef;
    my %items;
    for my $item (split /\s*,\s*/, $v) {
        my ($key, @params) = split /;/, $item;
        $key =~ /^"([a-z]+)"$/ or return { '?' => $v };
        $items{$1} = { map { /^([a-z]+)=(\d+)$/ ? ($1 => $2) : ('?' => $_) } @params };
    }
    return \%items;
}

# /metrics as { 'name{labels}' => value }.
sub metrics {
    my $r = http(path => '/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

sub sleep_until { my ($t) = @_; my $d = $t - time; sleep $d if $d > 0 }


# --- setup ----------------------------------------------------------------

pg_start();

my %T = (
    A        => create_tenant(tier => 'fast',    status => 'active'),
    B        => create_tenant(tier => 'fast',    status => 'active'),
    OVER     => create_tenant(tier => 'fast',    status => 'active', rate_limit => 2),
    PLAIN    => create_tenant(tier => 'plain',   status => 'active'),
    BURSTY   => create_tenant(tier => 'bursty',  status => 'active'),
    HAMMER   => create_tenant(tier => 'hammer',  status => 'active'),
    RELOAD   => create_tenant(tier => 'reload',  status => 'active'),
    USERLIM  => create_tenant(tier => 'userlim', status => 'active'),
    SHRINK   => create_tenant(tier => 'shrink',  status => 'active'),
    BACK     => create_tenant(tier => 'clock',   status => 'active'),
    FORTH    => create_tenant(tier => 'clock',   status => 'active'),
    TIGHT    => create_tenant(tier => 'tight',   status => 'active'),
    EP       => create_tenant(tier => 'fast',    status => 'active'),
);

nginx_start(workers => 2, http => http_conf($RL_DEFAULT));
is scalar(nginx_workers()), 2, 'two workers';

# Tokens minted before any timing matters.
token($T{$_}{clerk_organization_id}) for keys %T;
token($T{USERLIM}{clerk_organization_id}, $_) for qw(user_a user_b);


# --- 1. limit N per window --------------------------------------------------

{
    my $t1 = time;
    my @ok = map { get($T{A}) } 1 .. 5;
    my $last_ok = time;

    is statuses(@ok), '200 200 200 200 200', 'fast (5/2s): requests 1..5 pass';
    is_deeply [map { sf($_, 'RateLimit')->{tenant}{r} } @ok], [4, 3, 2, 1, 0],
        'requests 1..5: RateLimit "tenant";r=4..0';
    is_deeply [map { hdr($_, 'RateLimit-Policy') } @ok], [('"tenant";q=5;w=2') x 5],
        'requests 1..5: RateLimit-Policy "tenant";q=5;w=2';
    # t: seconds until the whole quota is back, 0.4 s per request used
    my @t = map { sf($_, 'RateLimit')->{tenant}{t} // -1 } @ok;
    ok !(grep { $_ < 1 || $_ > 2 } @t), "requests 1..5: RateLimit t within 1..2 s (@t)";
    is $t[-1], 2, 'request 5: t=2, the whole window to refill';
    is_deeply [map { hdr($_, 'X-RL-Limit') } @ok], [(5) x 5], '$tenant_ratelimit_limit 5';
    is_deeply [map { hdr($_, 'X-RL-Remaining') } @ok], [4, 3, 2, 1, 0],
        '$tenant_ratelimit_remaining 4..0';
    ok upstream_saw($ok[0]{probe}) && upstream_saw($ok[4]{probe}),
        'admitted requests reached the upstream';

    my $r = get($T{A});
    is $r->{status}, 429, 'request 6: 429' or diag brief($r);
    like hdr($r, 'Content-Type') // '', qr{^application/problem\+json}, '429: problem+json';
    is code($r), 'rate_limited', '429: code rate_limited';
    is $r->{json}{status}, 429, '429: status member';
    like $r->{json}{type} // '', qr{/rate_limited$}, '429: type URI';
    is $r->{json}{limit}, 5, '429: limit 5';
    is $r->{json}{window}, 2, '429: window 2 (seconds)';
    my $ra = hdr($r, 'Retry-After') // '';
    like $ra, qr/^[12]$/, "429: Retry-After 1 or 2 ($ra)";
    is $r->{json}{retryAfter}, $ra, '429: retryAfter equals Retry-After';
    ok !ref $r->{json}{limit} && $r->{body} =~ /"limit":5\b/ && $r->{body} =~ /"retryAfter":\d+\b/,
        '429: limit and retryAfter are JSON numbers';
    is hdr($r, 'RateLimit-Policy'), '"tenant";q=5;w=2', '429: RateLimit-Policy';
    is hdr($r, 'RateLimit'), "\"tenant\";r=0;t=$ra", '429: RateLimit r=0, t = Retry-After';
    is hdr($r, 'X-RL-Remaining'), 0, '429: $tenant_ratelimit_remaining 0';
    ok !upstream_saw($r->{probe}), '429: the upstream was not reached';

    # B of the same tier, meanwhile (case 2)
    my $b = get($T{B});
    is $b->{status}, 200, '2. tenant B (same tier) while A is exhausted: 200';
    is sf($b, 'RateLimit')->{tenant}{r}, 4, '2. tenant B: its own quota, r=4';
    is_deeply $b->{json}{headers}{'x-tenant-id'}, [$T{B}{id}], '2. upstream saw tenant B';
    $r = get($T{A});
    is $r->{status}, 429, '2. A still 429 after B\'s request';

    # GCRA refill: one emission interval (2 s / 5 = 0.4 s) after the first
    # request, exactly one more passes; the next needs another 0.4 s.
    sleep_until($t1 + 0.55);
    my @refill = (get($T{A}), get($T{A}));
    is statuses(@refill), '200 429',
        'after window/limit (0.4 s): exactly one more passes (GCRA refill)';
    is sf($refill[0], 'RateLimit')->{tenant}{r}, 0, 'the refilled request: r=0';
    $last_ok = time;

    # A whole window after the last admitted request: the whole quota.
    sleep_until($last_ok + 2.1);
    my @again = map { get($T{A}) } 1 .. 6;
    is statuses(@again), '200 200 200 200 200 429',
        'after the window (2.1 s): 5 pass again, the 6th 429';
    is sf($again[0], 'RateLimit')->{tenant}{r}, 4, 'after the window: r=4 again';
}

# burst > limit: tier bursty, rate=1/1s burst=10: 10 at once, then one a
# second.  After about 3 s of silence 3 requests have refilled, not 10.
{
    my @r = map { get($T{BURSTY}) } 1 .. 11;
    is statuses(@r), join(' ', ('200') x 10, '429'), 'bursty (1/1s burst=10): 10 pass at once, the 11th 429';
    is hdr($r[0], 'RateLimit-Policy'), '"tenant";q=1;w=1', 'bursty: the policy names the quota (q=1;w=1), not the burst';
    is sf($r[0], 'RateLimit')->{tenant}{r}, 9, 'bursty: first request r=9';
    is $r[10]{json}{retryAfter}, 1, 'bursty: 429 retryAfter 1';

    my $last = time;
    sleep_until($last + 3.3);
    my @later = map { get($T{BURSTY}) } 1 .. 10;
    my $n = grep { $_->{status} == 200 } @later;
    # The key's entry lives until its whole burst is back (burst / limit
    # windows), not one window: an entry dropped earlier would hand out a
    # new burst.
    ok $n >= 3 && $n <= 4,
        "bursty: 3.3 s after exhausting the burst, 3 requests have refilled (got $n: "
        . statuses(@later) . ')';
}


# --- 3. the tier's rate, else the default -------------------------------------

{
    # tier plain has no rate: tenant_rate_limit rate=3r/m applies
    my @r = map { get($T{PLAIN}) } 1 .. 4;
    is statuses(@r), '200 200 200 429', 'plain (no tier rate): the default 3r/m, 4th 429';
    is hdr($r[0], 'RateLimit-Policy'), '"tenant";q=3;w=60', 'plain: RateLimit-Policy q=3;w=60';
    is $r[3]{json}{limit}, 3, 'plain: 429 limit 3';
    is $r[3]{json}{window}, 60, 'plain: 429 window 60';
    my $ra = hdr($r[3], 'Retry-After') // '';
    ok $ra >= 19 && $ra <= 20, "plain: Retry-After one emission interval, 20 s ($ra)";
    # (the case without any default rate is at the end, with its own config)
}


# --- 4. rate_limit_override -------------------------------------------------

{
    my @r = map { get($T{OVER}) } 1 .. 3;
    is statuses(@r), '200 200 429', 'override 2 on tier fast (5/2s): third request 429';
    is hdr($r[0], 'RateLimit-Policy'), '"tenant";q=2;w=2', 'override: RateLimit-Policy q=2;w=2';
    is_deeply [map { sf($_, 'RateLimit')->{tenant}{r} } @r[0, 1]], [1, 0], 'override: r=1, 0';
    is $r[2]{json}{limit}, 2, 'override: 429 limit 2';
    is $r[2]{json}{window}, 2, 'override: 429 window 2 (the tier\'s)';
    is hdr($r[0], 'X-RL-Limit'), 2, 'override: $tenant_ratelimit_limit 2';
}


# --- 5. two workers, one tenant, concurrently -----------------------------------

{
    my $CLIENTS = 8;
    my $EACH    = 10;
    my $start   = time + 0.5;           # all children begin together
    my $org     = $T{HAMMER}{clerk_organization_id};
    my $auth    = 'Bearer ' . token($org);

    my @kids;
    for my $c (1 .. $CLIENTS) {
        pipe my $rd, my $wr or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $rd;
            sleep_until($start);
            my @out;
            for (1 .. $EACH) {
                my $r = http(path => '/api/products', headers => [Authorization => $auth]);
                push @out, [$r->{status}, code($r), hdr($r, 'X-Worker') // '?',
                            defined hdr($r, 'RateLimit') ? 1 : 0];
            }
            print $wr JSON::XS->new->encode(\@out);
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        push @kids, [$pid, $rd];
    }

    my @all;
    for (@kids) {
        my ($pid, $rd) = @$_;
        my $json = do { local $/; readline $rd };
        close $rd;
        waitpid $pid, 0;
        push @all, @{ JSON::XS->new->decode($json || '[]') };
    }
    my $took = time - $start;

    my %by;
    $by{ $_->[0] }++ for @all;
    my %workers = map { $_->[2] => 1 } @all;
    is scalar(@all), $CLIENTS * $EACH, "hammer: $CLIENTS clients x $EACH requests answered";
    is $by{200}, 20, sprintf('hammer (20/60s): exactly 20 passed over 2 workers (in %.2f s)', $took)
        or diag explain \%by;
    is $by{429}, $CLIENTS * $EACH - 20, 'hammer: all the others 429'
        or diag explain \%by;
    is scalar(grep { $_->[0] == 429 && $_->[1] ne 'rate_limited' } @all), 0,
        'hammer: every 429 is rate_limited';
    is scalar(keys %workers), 2, 'hammer: both workers answered'
        or diag explain \%workers;
    is scalar(grep { !$_->[3] } @all), 0, 'hammer: every answer has RateLimit';
    ok $took < 3, sprintf('hammer: done within one emission interval (3 s): %.2f s', $took);
    $N200{hammer} += $by{200} // 0;
    $N429{hammer} += scalar grep { $_->[0] == 429 && $_->[1] eq 'rate_limited' } @all;
}


# --- 6. across nginx -s reload ---------------------------------------------------

{
    my $t1 = time;
    my @r = map { get($T{RELOAD}) } 1 .. 3;
    is statuses(@r), '200 200 429', 'reload tier (2/4s): exhausted before the reload';

    nginx_reload();
    is scalar(nginx_workers()), 2, 'reloaded (same zone)';
    my $took = time - $t1;

    my $r = get($T{RELOAD});
    is $r->{status}, 429, sprintf('after the reload: still 429, the state was kept (%.2f s after the first request)', time - $t1)
        or diag brief($r);
    is sf($r, 'RateLimit')->{tenant}{r}, 0, 'after the reload: r=0';
    diag "the reload took $took s: longer than the 2 s emission interval" if $took > 2;

    sleep_until($t1 + 4.1);
    @r = map { get($T{RELOAD}) } 1 .. 3;
    is statuses(@r), '200 200 429', 'after the window: the quota (2) is back';
}

# A reload that shrinks a tier's bucket (1r/m, a minute, to 10r/s, a
# second) finds states up to a minute ahead in the zone it keeps: such a
# state counts as a full bucket, so a refusal's Retry-After (1 s) holds;
# it used to stay ahead, refusing with Retry-After 1 for the whole minute.
{
    my @r = map { get($T{SHRINK}) } 1 .. 2;
    is statuses(@r), '200 429', '6b. shrink (1r/m): the second request 429';

    nginx_reload(http => http_conf($RL_DEFAULT, '10r/s'));
    my $r = get($T{SHRINK});
    my $ra = 0;
    if ($REDIS) {
        # Redis counts each rate under its own key (the rate is in its
        # name): the new rate starts with a whole bucket, and the old
        # rate's refusal, held locally, does not hold the new one
        is $r->{status}, 200, '6b. Redis: after a reload to 10r/s a new key, a whole bucket: 200'
            or diag brief($r);
        is hdr($r, 'RateLimit'), '"tenant";r=9;t=1', '6b. Redis: RateLimit r=9';
        is hdr($r, 'X-RL-Source'), 'redis', '6b. Redis: asked Redis, not held by the old rate';
    } else {
        is $r->{status}, 429, '6b. after a reload to 10r/s: the state a minute ahead counts as a full bucket, 429'
            or diag brief($r);
        $ra = hdr($r, 'Retry-After') // 99;
        is $ra, 1, '6b. its Retry-After: 1 s (one request every 0.1 s)';
        is hdr($r, 'RateLimit'), '"tenant";r=0;t=1', '6b. RateLimit t=1';
    }
    sleep $ra + 0.1;
    @r = map { get($T{SHRINK}) } 1 .. 10;
    is statuses(@r), join(' ', ('200') x 10),
        '6b. Retry-After later the whole new burst (10) passes, not 429 for a minute';

    nginx_reload(http => http_conf($RL_DEFAULT));
}


# --- 7. tenant_rate_limit_by $tenant_user_id --------------------------------------

{
    my $t = $T{USERLIM};
    my @a = map { get($t, path => '/user/items', user => 'user_a') } 1 .. 3;
    is statuses(@a), '200 200 429', 'rate_limit_by user (2/10s): user_a\'s third request 429';

    is_deeply sf($a[0], 'RateLimit-Policy'),
        { tenant => { q => 1000, w => 3600 }, user => { q => 2, w => 10 } },
        'user_a, admitted: RateLimit-Policy "tenant";q=1000;w=3600, "user";q=2;w=10'
        or diag hdr($a[0], 'RateLimit-Policy');
    is hdr($a[0], 'RateLimit-Policy'), '"tenant";q=1000;w=3600, "user";q=2;w=10',
        'user_a, admitted: the tenant item first';
    is_deeply [map { sf($_, 'RateLimit')->{user}{r} } @a[0, 1]], [1, 0], 'user_a: user r=1, 0';
    is_deeply [map { sf($_, 'RateLimit')->{tenant}{r} } @a[0, 1]], [999, 998], 'user_a: tenant r=999, 998';

    my $p = sf($a[2], 'RateLimit-Policy') || {};
    is_deeply $p->{user}, { q => 2, w => 10 }, 'user_a, 429: RateLimit-Policy has the "user" item'
        or diag hdr($a[2], 'RateLimit-Policy');
    is sf($a[2], 'RateLimit')->{user}{r}, 0, 'user_a, 429: user r=0';
    is $a[2]{json}{limit}, 2, 'user_a, 429: limit 2 (the user\'s)';
    is $a[2]{json}{window}, 10, 'user_a, 429: window 10';
    like hdr($a[2], 'Retry-After') // '', qr/^[45]$/, 'user_a, 429: Retry-After 5 s (10 s / 2)';
    ok !upstream_saw($a[2]{probe}), 'user_a, 429: the upstream was not reached';

    my $b = get($t, path => '/user/items', user => 'user_b');
    is $b->{status}, 200, 'user_b of the same tenant: 200';
    is sf($b, 'RateLimit')->{user}{r}, 1, 'user_b: its own user quota, r=1';
    # the user's refusal cost the tenant nothing: a1, a2, b1 counted
    is sf($b, 'RateLimit')->{tenant}{r}, 997, 'user_b: tenant r=997 (user_a\'s 429 not counted)';

    my $plain = get($t, path => '/api/items', user => 'user_a');
    is $plain->{status}, 200, 'user_a on a location without rate_limit_by: 200';
    is hdr($plain, 'RateLimit-Policy'), '"tenant";q=1000;w=3600', 'there: only the tenant item';
}


# A request the tenant's limit refuses is given back to the user's: tier
# tight (2/10s, one request every 5 s) under a user limit of 3/60s (one
# every 20 s, so none refills here).  It used to keep the user's quota:
# the fourth request, 5 s later, was refused as "this caller's" quota.
{
    my $t  = $T{TIGHT};
    my $t0 = time;
    my @r  = map { get($t, path => '/userq/x', user => 'user_q') } 1 .. 3;
    is statuses(@r), '200 200 429', '7b. tight (2/10s) under user 3/60s: the third 429';
    is $r[2]{json}{limit}, 2, '7b. the 429 is the tenant\'s (limit 2)';
    is_deeply [map { sf($_, 'RateLimit')->{user}{r} } @r], [2, 1, 1],
        '7b. user r=2, 1, and still 1 on the tenant\'s 429';
    my $ra = hdr($r[2], 'Retry-After') // 99;
    ok $ra >= 4 && $ra <= 5, "7b. the tenant's Retry-After, 5 s ($ra)";
    sleep_until($t0 + 5.2);
    my $r = get($t, path => '/userq/x', user => 'user_q');
    is $r->{status}, 200, '7b. 5 s later (one tenant request refilled): 200, the user had one left'
        or diag brief($r) . ' ' . ($r->{json}{detail} // '');
    is sf($r, 'RateLimit')->{user}{r}, 0, '7b. and now the user\'s r=0';
}

# --- 12. error_page redirects ---------------------------------------------------

# An admitted request whose upstream answer (404 intercepted, 502 of a
# closed port) is replaced through error_page (a named location, a URI):
# the final response keeps the RateLimit headers of the request.  They
# were lost: the header filter looked for the module's ctx, which an
# internal redirect clears.  The module's own 429 is not redirected.
{
    my $t = $T{EP};
    my @r = (get($t, path => '/ep/missing'), get($t, path => '/ep/down/x'),
             get($t, path => '/ep/items'));
    is statuses(@r), '404 502 200', '12. tier fast (5/2s): 404 via @ep404, 502 via /ep-502.json, 200';
    $N200{fast} += grep { $_->{status} != 200 && !code($_) } @r;    # admitted too
    is $r[0]{body}, '{"error":"not found"}', '12. the 404 is error_page\'s';
    is $r[1]{body}, '{"error":"bad gateway"}', '12. the 502 is error_page\'s';
    is_deeply [map { (sf($_, 'RateLimit') || {})->{tenant}{r} } @r], [4, 3, 2],
        '12. RateLimit on the 404 and 502 made by error_page, as on the 200: r=4, 3, 2'
        or diag explain [map { $_->{headers} } @r];
    is scalar(grep { (hdr($_, 'RateLimit') // '') !~ /^"tenant";r=\d;t=[12]$/ } @r), 0,
        '12. ... with t=1 or 2';
    is_deeply [map { hdr($_, 'RateLimit-Policy') } @r], [('"tenant";q=5;w=2') x 3],
        '12. RateLimit-Policy on all three';
    is scalar(grep { scalar @{ $_->{headers}{ratelimit} || [] } > 1 } @r), 0,
        '12. one RateLimit header each';
    is_deeply [map { hdr($_, 'X-RL-Remaining') } @r], [4, 3, 2],
        '12. $tenant_ratelimit_remaining there too';

    my @x = map { get($t, path => '/ep/items') } 1 .. 3;
    is statuses(@x), '200 200 429', '12. then the quota runs out';
    is code($x[2]), 'rate_limited', '12. the module\'s own 429, not @ep429\'s';
    like hdr($x[2], 'RateLimit') // '', qr/^"tenant";r=0;t=\d+$/, '12. RateLimit on the 429';
}

# --- 9 (first part). /metrics so far -------------------------------------------

{
    my $m = metrics();
    for my $tier (qw(fast plain bursty hammer reload userlim)) {
        is $m->{"tenant_requests_total{outcome=\"rate_limited\",tier=\"$tier\"}"}, $N429{$tier} // 0,
            "metrics: rate_limited of tier $tier = the 429s seen (" . ($N429{$tier} // 0) . ')';
    }
    is $m->{'tenant_requests_total{outcome="admitted",tier="hammer"}'}, 20,
        'metrics: admitted of tier hammer = 20';
    # 14 keys so far (11 tenants, 3 users); idle ones expire a window + 2 s
    # after their last request and are reaped when new keys come in
    my $entries = $m->{'tenant_cache_entries{cache="ratelimit"}'};
    ok defined $entries && $entries >= 1 && $entries <= 14,
        'metrics: tenant_cache_entries{cache="ratelimit"} within 1..14 keys ('
        . ($entries // 'absent') . ')';
    is $m->{'tenant_cache_evictions_total{cache="ratelimit"}'}, 0,
        'metrics: no ratelimit evictions in a 1m zone';
}


# --- 8. a tiny zone, many tenants; 3b. no default rate ------------------------------

my @MANY;
{
    # Rows inserted directly (their schemas are not needed by the gateway).
    sql(q{INSERT INTO public.tenants (name, slug, clerk_organization_id, schema_name,
                                      subscription_tier, subscription_status, owner_email)
          SELECT 'Many ' || i, 'many-' || i, 'org_many_' || i, 'tenant_many_' || i,
                 'many', 'active', 'many' || i || '@example.test'
            FROM generate_series(1, 300) AS i});
    @MANY = sql(q{SELECT * FROM public.tenants WHERE subscription_tier = 'many' ORDER BY slug});
    is scalar(@MANY), 300, '300 tenants of tier many';
    token($_->{clerk_organization_id}) for @MANY;

    # tenant_rate_limit without rate=: only tiers with a rate are limited;
    # the zone is as small as nginx allows.
    nginx_reload(http => http_conf('tenant_rate_limit zone=rltiny:32k;'));
    my $mark = log_mark();
    my $m0 = metrics();

    my (%by, @bad);
    for my $t (@MANY) {
        my $r = get($t);
        $by{ $r->{status} }++;
        push @bad, "$t->{slug}: " . brief($r) unless $r->{status} == 200 || $r->{status} == 429;
        push @bad, "$t->{slug}: no RateLimit" unless defined hdr($r, 'RateLimit');
    }
    # each tenant again: all still within their 100r/m
    for my $t (@MANY[0 .. 49]) {
        my $r = get($t);
        $by{ $r->{status} }++;
        push @bad, "$t->{slug} again: " . brief($r) unless $r->{status} == 200 || $r->{status} == 429;
    }
    is_deeply \@bad, [], 'tiny zone, 350 requests of 300 tenants: all 200 or 429, never 500, with RateLimit'
        or diag explain \%by;
    is $by{200}, 350, 'tiny zone: all 200 (each tenant far below 100r/m)' or diag explain \%by;

    my $m = metrics();
    if ($REDIS) {
        # the states are in Redis, one key per tenant, expiring; the zone
        # keeps only refusals' holds, and nothing was refused
        # (a key lives until its bucket is full again: 0.6 s after one
        # request at 100r/m)
        my $t = $MANY[-1];
        get($t);
        my $key = "tenant:rl:{$t->{id}}:100:60000:100";
        my $ttl = redis_cli('PTTL', $key);
        ok $ttl > 0 && $ttl <= 1200, "tiny zone, Redis: the tenant's key, $key, expires when its bucket is full again (PTTL $ttl ms)";
        my $n = () = split /\n/, redis_cli('--scan', '--pattern', 'tenant:rl:*:100:60000:100');
        ok $n >= 1 && $n <= 300, "tiny zone, Redis: at most one key per tenant ($n)";
    } else {
        my $ev = $m->{'tenant_cache_evictions_total{cache="ratelimit"}'} // 0;
        ok $ev > 0, "tiny zone: tenant_cache_evictions_total{cache=\"ratelimit\"} = $ev > 0";
        my $entries = $m->{'tenant_cache_entries{cache="ratelimit"}'} // -1;
        ok $entries > 0 && $entries < 300, "tiny zone: tenant_cache_entries{cache=\"ratelimit\"} = $entries, fewer than the tenants";
    }
    is $m->{'tenant_cache_evictions_total{cache="tenant"}'}, $m0->{'tenant_cache_evictions_total{cache="tenant"}'},
        'tiny zone: the tenant cache itself evicted nothing';

    my $log = error_log(since => $mark);
    unlike $log, qr/\[(alert|crit|error)\]/, 'tiny zone: evictions are silent (no alert, crit or error)';
    unlike $log, qr/could not allocate/, 'tiny zone: never "could not allocate"';

    # still limiting after all those evictions: A (fast, rate from its tier)
    my @a = map { get($T{A}) } 1 .. 6;
    is statuses(@a), '200 200 200 200 200 429', 'tiny zone: tier fast still 5 per window';

    # 3b. no default rate and a tier without one: no limit at all
    my @p = map { get($T{PLAIN}) } 1 .. 8;
    is statuses(@p), join(' ', ('200') x 8), '3b. no default rate, tier without rate: never 429';
    is scalar(grep { defined hdr($_, 'RateLimit') || defined hdr($_, 'RateLimit-Policy') } @p), 0,
        '3b. no RateLimit / RateLimit-Policy headers at all';
    is scalar(grep { defined hdr($_, 'X-RL-Limit') || defined hdr($_, 'X-RL-Remaining') } @p), 0,
        '3b. $tenant_ratelimit_limit and _remaining empty';
}


# --- 9. /metrics counts the 429s per tier (after the reload too) ----------------------

{
    my $m = metrics();
    for my $tier (qw(fast plain bursty hammer reload userlim many)) {
        is $m->{"tenant_requests_total{outcome=\"rate_limited\",tier=\"$tier\"}"}, $N429{$tier} // 0,
            "metrics: rate_limited of tier $tier = the 429s seen (" . ($N429{$tier} // 0) . ')';
        is $m->{"tenant_requests_total{outcome=\"admitted\",tier=\"$tier\"}"}, $N200{$tier} // 0,
            "metrics: admitted of tier $tier = the 200s seen (" . ($N200{$tier} // 0) . ')';
    }
}


# --- 11. the wall clock stepped (libfaketime) ----------------------------------------

# nginx with libfaketime preloaded, its wall clock (gettimeofday, time,
# CLOCK_REALTIME) offset by what the file holds, re-read on every call;
# CLOCK_MONOTONIC left alone (DONT_FAKE_MONOTONIC), as NTP leaves it.
# The limits used the wall clock: a step back refused every tenant active
# within the step (its state ahead of "now" by more than its bucket), a
# step forward handed every tenant a new burst (its state, and its zone
# entry, behind "now").  $msec (the wall clock) in X-Msec shows the step.
SKIP: {
    my $lib = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
    skip "no $lib (scripts/deps.sh installs faketime)", 10 unless -f $lib;

    # read by the workers, which run as nobody
    chmod 0755, $TMP or die "chmod $TMP: $!";
    my $file = "$TMP/faketime";
    my $step = sub {
        open my $fh, '>', "$file.new" or die "$file.new: $!";
        print $fh "$_[0]\n";
        close $fh;
        rename "$file.new", $file or die "rename $file: $!";
    };
    $step->('+0s');

    # libfaketime reads its time file on every time(): the test's own
    # instrument, not the module's, as the blocking-call guard sees it
    error_log_allow(qr/BLOCKING\ CALL:\ fopen\("\Q$file\E"\)
                       .*\ at\ libfaketime\.so[.\d]*\(read_config_file\+/x);

    nginx_stop();
    nginx_start(workers => 2, http => http_conf($RL_DEFAULT),
                main => "env FAKETIME_TIMESTAMP_FILE;\nenv FAKETIME_NO_CACHE;\n"
                        . "env DONT_FAKE_MONOTONIC;",
                env => { LD_PRELOAD => $lib, FAKETIME_TIMESTAMP_FILE => $file,
                         FAKETIME_NO_CACHE => 1, DONT_FAKE_MONOTONIC => 1 });

    # back: one request, then the wall clock two minutes (two buckets) back
    my $r = get($T{BACK});
    is $r->{status}, 200, '11. clock (20/60s): the first request passes' or diag brief($r);
    $step->('-120s');
    $r = get($T{BACK});
    my $skew = time - (hdr($r, 'X-Msec') // 0);
    ok $skew > 110 && $skew < 130, sprintf '11. nginx\'s wall clock is 120 s back (%.1f s)', $skew;
    is $r->{status}, 200, '11. wall clock 120 s back: the second request passes'
        or diag brief($r) . ' Retry-After ' . (hdr($r, 'Retry-After') // '-');
    my $left = sf($r, 'RateLimit')->{tenant}{r} // -1;
    ok $left == 18 || $left == 19,
        "11. wall clock back: r=$left, two of 20 used (19 if 3 s went by)";
    ok +(sf($r, 'RateLimit')->{tenant}{t} // 99) <= 6,
        '11. wall clock back: t within the two requests\' 6 s, not the step';

    # forward: a tenant that used its quota, then the wall clock two
    # minutes forward
    $step->('+0s');
    my @r = map { get($T{FORTH}) } 1 .. 21;
    is statuses(@r[19, 20]), '200 429', '11. clock (20/60s): 20 pass, the 21st 429';
    $step->('+120s');
    my @after = map { get($T{FORTH}) } 1 .. 3;
    $skew = (hdr($after[0], 'X-Msec') // 0) - time;
    ok $skew > 110 && $skew < 130, sprintf '11. nginx\'s wall clock is 120 s ahead (%.1f s)', $skew;
    is statuses(@after), '429 429 429',
        '11. wall clock 120 s forward: still 429, no new burst';
    my $ra = hdr($after[0], 'Retry-After') // 99;
    ok $ra >= 1 && $ra <= 3, "11. wall clock forward: Retry-After within the 3 s interval ($ra)";
    sleep_until(time + 3.1);
    $r = get($T{FORTH});
    is $r->{status}, 200, '11. 3 s later (one interval by the monotonic clock): one passes'
        or diag brief($r);

    $step->('+0s');
}


# --- 10. configuration errors ----------------------------------------------------

# A good configuration, with (name => text) parts replaced by the case.
my %base = (
    ratelimit => 'tenant_rate_limit zone=rl:1m rate=100r/m;',
    tiers     => 'tenant_tier starter features=api;',
    location  => 'tenant_gateway on;',
);

sub conf_with {
    my (%over) = @_;
    my %p = (%base, %over);
    return <<"EOF";
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_jwt_key      %%RSA_PUB%%;
    tenant_signing_key  $SIGNING_KEY;
    $p{ratelimit}
    $p{tiers}

    server {
        listen 127.0.0.1:%%PORT%%;
        location /api/ {
            $p{location}
            proxy_pass http://127.0.0.1:9;
        }
    }
EOF
}

{
    my $c = nginx_conf_test(http => conf_with());
    ok $c->{ok}, 'config: the base configuration passes nginx -t' or diag $c->{output};
    $c = nginx_conf_test(http => conf_with(
        tiers    => 'tenant_tier starter features=api rate=10/1500ms burst=20;',
        location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id rate=60r/m burst=5;'));
    ok $c->{ok}, 'config: tier rate=10/1500ms burst=20 and rate_limit_by pass nginx -t'
        or diag $c->{output};
}

my @config_cases = (
    ['rate=abc', { ratelimit => 'tenant_rate_limit zone=rl:1m rate=abc;' },
     qr/\[emerg\].*invalid rate "rate=abc": the rate does not begin with a number/],
    ['rate=0r/s', { ratelimit => 'tenant_rate_limit zone=rl:1m rate=0r/s;' },
     qr/\[emerg\].*invalid rate "rate=0r\/s": zero requests per window/],
    ['rate=5/2 (no unit)', { ratelimit => 'tenant_rate_limit zone=rl:1m rate=5/2;' },
     qr/\[emerg\].*invalid rate "rate=5\/2": the window has no time unit/],
    ['rate=5r/w', { ratelimit => 'tenant_rate_limit zone=rl:1m rate=5r/w;' },
     qr/\[emerg\].*invalid rate "rate=5r\/w": the unit after "r\/" is not s, m, h or d/],
    ['tier rate=abc', { tiers => 'tenant_tier starter features=api rate=abc;' },
     qr/\[emerg\].*invalid rate "rate=abc"/],
    ['burst without rate (tenant_rate_limit)', { ratelimit => 'tenant_rate_limit zone=rl:1m burst=5;' },
     qr/\[emerg\].*"burst" without "rate"/],
    ['burst without rate (tenant_tier)', { tiers => 'tenant_tier starter features=api burst=5;' },
     qr/\[emerg\].*"burst" without "rate"/],
    ['burst=0', { ratelimit => 'tenant_rate_limit zone=rl:1m rate=5r/s burst=0;' },
     qr/\[emerg\].*invalid burst "burst=0"/],
    ['tenant_rate_limit without zone=', { ratelimit => 'tenant_rate_limit rate=100r/m;' },
     qr/\[emerg\].*"tenant_rate_limit" must have "zone" parameter/],
    ['zone too small', { ratelimit => 'tenant_rate_limit zone=rl:4k rate=100r/m;' },
     qr/\[emerg\].*zone "rl:4k" is too small/],
    ['zone without size', { ratelimit => 'tenant_rate_limit zone=rl rate=100r/m;' },
     qr/\[emerg\].*invalid zone "rl", expected name:size/],
    ['tenant_rate_limit twice', { ratelimit => "tenant_rate_limit zone=rl:1m;\n    tenant_rate_limit zone=rl2:1m;" },
     qr/\[emerg\].*"tenant_rate_limit" directive is duplicate/],
    ['unknown parameter', { ratelimit => 'tenant_rate_limit zone=rl:1m rate=5r/s brust=3;' },
     qr/\[emerg\].*invalid parameter "brust=3"/],
    ['tenant_rate_limit_by without rate=',
     { location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id burst=3;' },
     qr/\[emerg\].*("burst" without "rate"|"tenant_rate_limit_by" must have "rate" parameter)/],
    ['tenant_rate_limit_by, unknown parameter',
     { location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id x=1;' },
     qr/\[emerg\].*invalid parameter "x=1"/],
    # a tier's features= is not a parameter of these (it was taken and
    # ignored by tenant_rate_limit_by)
    ['tenant_rate_limit_by, features=',
     { location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id rate=2/10s features=api;' },
     qr/\[emerg\].*invalid parameter "features=api"/],
    ['tenant_rate_limit, features=',
     { ratelimit => 'tenant_rate_limit zone=rl:1m rate=5r/s features=api;' },
     qr/\[emerg\].*invalid parameter "features=api"/],
    ['tenant_rate_limit_by without rate=, only the key',
     { location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id;' },
     qr/\[emerg\].*invalid number of arguments in "tenant_rate_limit_by"/],
    ['tenant_rate_limit_by, bad rate',
     { location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id rate=2/0s;' },
     qr/\[emerg\].*invalid rate "rate=2\/0s"/],
    ['a tier rate without tenant_rate_limit',
     { ratelimit => '', tiers => 'tenant_tier starter features=api rate=5r/s;' },
     qr/\[emerg\].*the rate of tenant_tier "starter" needs "tenant_rate_limit zone=\.\.\."/],
    ['tenant_rate_limit_by without tenant_rate_limit',
     { ratelimit => '', location => 'tenant_gateway on; tenant_rate_limit_by $tenant_user_id rate=2/10s;' },
     qr/\[emerg\].*"tenant_rate_limit_by" needs "tenant_rate_limit" and its zone/],
);

for my $case (@config_cases) {
    my ($name, $over, $re) = @$case;
    my $c = nginx_conf_test(http => conf_with(%$over));
    ok !$c->{ok}, "config: $name: nginx -t fails";
    like $c->{output}, $re, "config: $name: clear message" or diag $c->{output};
}

# With Redis: every decision above was Redis's (or its hold's), none a
# fallback's.
# (The counters restart with nginx in case 11; the sources are of every
# request.)
if ($REDIS) {
    my $m = metrics();
    ok +($m->{tenant_redis_commands_total} // 0) > 0, "Redis: commands sent ($m->{tenant_redis_commands_total})";
    is $m->{"tenant_redis_fallbacks_total{reason=\"$_\"}"} // 0, 0, "Redis: no fallback ($_)"
        for qw(down timeout error);
    ok $SOURCE{redis} > 400 && $SOURCE{hold} > 10,
        "Redis: answers by Redis ($SOURCE{redis}) and by the local hold ($SOURCE{hold})";
    is join(',', sort grep { !/^(redis|hold)$/ } keys %SOURCE), '',
        'Redis: no answer by the local limiter or a fallback';
} else {
    is join(',', sort keys %SOURCE), ',local',
        '$tenant_ratelimit_source: "local", or empty without a limit';
}

done_testing();
