#!/usr/bin/perl
# The platform's health check: "tenant_health live" (GET /api/health/live
# in conf/nginx.conf.template, Render's healthCheckPath) fails only when
# this instance cannot serve, i.e. cannot verify a token: it never waits
# for or asks the database, whose state it only reports; /api/health keeps
# the deployment guide's shape (503 "disconnected" in an outage).
#
#   1   database up, killed, stalled, back (static key, one worker):
#       live 200 throughout, at once; /api/health 503 disconnected;
#       a tenant cached before the outage still reaches the upstream
#   2   database never reachable, static key: live 200
#   3   keys from a URL only, endpoint refused / answering 500: live 503
#       keys_unavailable (problem+json, Retry-After), quickly
#   4   fake Clerk up, no token ever sent: the first check fetches the
#       keys itself and answers 200 (one fetch for concurrent checks in
#       two workers); the keys verify tokens; Clerk failing later leaves
#       the check at 200 (the fetched keys stay)
#   5   slow Clerk: the check waits at most 3 s (503), the fetch goes on
#       and the next check answers 200; Clerk down at the first start,
#       up later: 200 after the interval, with no token sent
#   6   configuration: tenant_health takes nothing or "live"

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use JwksServer;
use Test::More;
use Crypt::PK::RSA ();
use IO::Socket::INET ();
use Time::HiRes    qw(time sleep);

my $SIGNING_KEY = '0123456789abcdef' x 4;
my $SK          = 'sk_test_live';
my $TIMEOUT     = 1;                    # tenant_database timeout=, seconds

error_log_allow(
    qr/\[error\].*tenant: PostgreSQL failed while /,
    qr/\[error\].*tenant: PostgreSQL did not answer within /,
    qr/\[warn\].*tenant: database unavailable, serving the cached tenant/,
    qr/\[info\].*tenant: idle PostgreSQL connection closed/,
    qr/\[error\].*tenant: health ping failed/,
    qr/\[error\].*tenant: JWKS from .* not used/,
    qr/\[error\].*connect\(\) failed .* while connecting to upstream/,
    qr/\[error\].*upstream timed out/,
);

pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active');
my $ORG  = $T->{clerk_organization_id};


# --- helpers -------------------------------------------------------------------

sub live   { return http(path => '/api/health/live', timeout => 8, @_) }
sub health { return http(path => '/api/health', timeout => 8, @_) }

my $SEQ = 0;
sub get {
    my (%o) = @_;
    my $token = mint_token(org => $ORG, sub => 'user_' . ++$SEQ);
    return http(path => '/api/orders', timeout => $o{timeout} // 8,
                headers => [Authorization => "Bearer $token"]);
}

# An organization the gateway has never seen (no row needed: the lookup
# is what fails while the database is away).
my $OFF = 0;
sub create_tenant_offline { return sprintf 'org_liveoffline%d', ++$OFF }

my $NGX;
sub nginx_port    { return $NGX->{port} }
sub alive_workers { return scalar nginx_workers() }

sub type   { my ($r) = @_; return ($r->{headers}{'content-type'} || [])->[0] // '' }
sub code   { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub brief  {
    my ($r) = @_;
    return sprintf '%s %s (%.2fs) %s %s', $r->{status}, code($r),
        $r->{elapsed} // 0, $r->{body} // '', $r->{error} // '';
}

# One server block; %o: db (conninfo), keys (key directives), jwks_port,
# jwks_timeout, workers' listen option.
sub conf {
    my (%o) = @_;
    my $db   = $o{db} // '%%PG%%';
    my $jwks = '';
    if ($o{jwks_port}) {
        my $t = $o{jwks_timeout} // 1;
        $jwks = <<EOF;
        location = /_jwks {
            internal;
            proxy_pass http://127.0.0.1:$o{jwks_port}/v1/jwks;
            proxy_set_header Authorization "Bearer $SK";
            proxy_connect_timeout ${t}s;
            proxy_read_timeout ${t}s;
            subrequest_output_buffer_size 64k;
            proxy_ignore_client_abort on;
        }
EOF
    }

    return <<EOF;
    tenant_database     "$db" pool=2 timeout=${TIMEOUT}s;
    tenant_cache        zone=tenants:1m ttl=30s negative_ttl=5s stale=5m;
    tenant_token_cache  zone=tokens:1m;
    $o{keys}
    tenant_tier         starter features=dashboard;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

$jwks
        location = /api/health {
            tenant_health;
        }

        location = /api/health/live {
            tenant_health live;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }
    }
EOF
}


# --- 1: the database goes away; the check does not ----------------------------

$NGX = nginx_start(http => conf(keys => 'tenant_jwks_file %%JWKS%%;'));

{
    my $r = live();
    is $r->{status}, 200, 'db up: live 200' or diag brief($r);
    like type($r), qr{^application/json}, 'db up: live is application/json';
    is $r->{json}{status}, 'ok', 'db up: live "status":"ok"';
    is $r->{json}{keys}, 2, 'db up: live counts the two keys of the JWKS file';
    like $r->{json}{uptime} // '', qr/^\d+$/, 'db up: live uptime';
    like $r->{json}{database} // '', qr/^(unknown|connected)$/,
        'db up: live database unknown or connected (nothing asked yet)';

    $r = get();
    is $r->{status}, 200, 'db up: tenant T served (cached now)' or diag brief($r);

    $r = health();
    is $r->{status}, 200, 'db up: /api/health 200';
    is_deeply [@{ $r->{json} }{qw(status database)}], ['healthy', 'connected'],
        'db up: /api/health healthy, connected';

    $r = live();
    is $r->{json}{database}, 'connected', 'db up: live says connected (the pool has a connection)';

    is live(method => 'HEAD')->{status}, 200, 'live: HEAD 200';
    is live(method => 'POST', body => '{}')->{status}, 405, 'live: POST 405';
}

pg_kill();
ok !eval { sql('SELECT 1'); 1 }, 'database killed';

{
    # (a worker reuses its ping's answer for a second)
    my ($r, $secs) = retry_until(3, sub { health() }, sub { $_[0]{status} == 503 });
    is $r->{status}, 503, sprintf('db killed: /api/health 503 after %.1f s', $secs) or diag brief($r);
    is_deeply [@{ $r->{json} }{qw(status database)}], ['unhealthy', 'disconnected'],
        'db killed: /api/health unhealthy, disconnected (the guide\'s shape)';
    like $r->{json}{uptime} // '', qr/^\d+$/, 'db killed: /api/health uptime';

    # What Render sees for longer than its 15 s: every check 200, at once.
    my (@bad, $last);
    for (1 .. 20) {
        $last = live(timeout => 5);
        push @bad, brief($last) unless $last->{status} == 200 && $last->{elapsed} < 0.5;
        sleep 0.05;
    }
    is_deeply \@bad, [], 'db killed: 20 live checks, all 200 in < 0.5 s';
    is $last->{json}{status}, 'ok', 'db killed: live "status":"ok"';
    is $last->{json}{database}, 'disconnected',
        'db killed: live reports what the worker last knew: disconnected';

    $r = get();
    is $r->{status}, 200, 'db killed: tenant cached before the outage still served' or diag brief($r);
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$T->{id}], 'db killed: the upstream saw tenant T';

    my $other = create_tenant_offline();
    $r = http(path => '/api/orders', timeout => 5, headers =>
              [Authorization => 'Bearer ' . mint_token(org => $other)]);
    is $r->{status}, 503, 'db killed: an uncached tenant 503 (the gateway, not the check)';
}

pg_restart();
{
    my ($r, $secs) = retry_until(5, sub { health() }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, sprintf('db back: /api/health 200 after %.1f s', $secs);
    $r = live();
    is_deeply [$r->{status}, $r->{json}{database}], [200, 'connected'], 'db back: live 200, connected';
}

# Stalled (SIGSTOP): /api/health waits up to the database timeout; the
# live check does not wait at all.
{
    sleep 1.1;          # out of the pool's fail-fast second
    pg_stall();
    my $bg = async_http(path => '/api/health', timeout => 8);
    my $bg2 = async_http(path => '/api/orders', timeout => 8, headers =>
        [Authorization => 'Bearer ' . mint_token(org => create_tenant_offline())]);
    sleep 0.1;
    my @bad;
    for (1 .. 5) {
        my $r = live(timeout => 5);
        push @bad, brief($r) unless $r->{status} == 200 && $r->{elapsed} < 0.5;
    }
    is_deeply \@bad, [], 'db stalled: live 200 in < 0.5 s, 5 times, while a ping and a lookup wait';
    my $r = wait_http($bg);
    is $r->{status}, 503, 'db stalled: /api/health 503 after the timeout' or diag brief($r);
    is $r->{json}{database}, 'disconnected', 'db stalled: /api/health disconnected';
    wait_http($bg2);
    $r = live();
    is_deeply [$r->{status}, $r->{json}{database}], [200, 'disconnected'],
        'db stalled: live 200, database disconnected';
    pg_unstall();
}

nginx_stop();


# --- 2: database never reachable, static key --------------------------------------

{
    my $dead = free_port();
    $NGX = nginx_start(http => conf(keys => 'tenant_jwt_key %%RSA_PUB%%;',
                             db => "host=127.0.0.1 port=$dead dbname=capliquify user=postgres"));
    my $r = live();
    is $r->{status}, 200, 'db never reachable, static key: live 200' or diag brief($r);
    is $r->{json}{keys}, 1, 'db never reachable: one key (tenant_jwt_key)';
    is $r->{json}{database}, 'unknown', 'db never reachable: database unknown (nothing tried yet)';

    $r = health();
    is_deeply [$r->{status}, $r->{json}{database}], [503, 'disconnected'],
        'db never reachable: /api/health 503 disconnected';

    $r = live();
    is_deeply [$r->{status}, $r->{json}{database}], [200, 'disconnected'],
        'db never reachable: live 200, now disconnected';
    nginx_stop();
}


# --- 3: no keys -------------------------------------------------------------------

my $JWKS_LINE = 'tenant_jwks_request /_jwks ttl=3s interval=1s;';

{
    my $dead = free_port();
    $NGX = nginx_start(http => conf(keys => $JWKS_LINE, jwks_port => $dead));

    my $r = live();
    is $r->{status}, 503, 'JWKS endpoint refused: live 503' or diag brief($r);
    like type($r), qr{^application/problem\+json}, 'no keys: problem+json';
    is code($r), 'keys_unavailable', 'no keys: code keys_unavailable';
    is $r->{json}{status}, 503, 'no keys: "status":503';
    is $r->{json}{keys}, 0, 'no keys: "keys":0';
    like $r->{json}{detail} // '', qr/no signing key could be fetched/, 'no keys: the detail says why';
    like $r->{json}{database} // '', qr/^(unknown|connected|disconnected)$/, 'no keys: database reported';
    like $r->{headers}{'retry-after'}[0] // '', qr/^\d+$/, 'no keys: Retry-After';
    ok $r->{elapsed} < 1.5, sprintf('no keys: answered in %.2f s', $r->{elapsed});

    # Within the interval: no new fetch, an answer at once.
    $r = live();
    ok $r->{status} == 503 && $r->{elapsed} < 0.5, 'no keys, again within the interval: 503 at once'
        or diag brief($r);

    # The gateway agrees: nothing could be served.
    $r = get();
    is $r->{status}, 503, 'no keys: a token request is refused too (503)';
    nginx_stop();
}

my $RSA = Crypt::PK::RSA->new($keys->{rsa_pub})->export_key_jwk('public', 1);
my %JWK = (rsa => { %$RSA, kid => 'rsa-1', use => 'sig', alg => 'RS256' });

my $J = JwksServer->new;
$J->set_jwks($JWK{rsa});

{
    $J->set_mode('status500');
    $NGX = nginx_start(http => conf(keys => $JWKS_LINE, jwks_port => $J->port));
    my $n0 = $J->nfetch;
    my $r = live();
    is $r->{status}, 503, 'fake Clerk answers 500: live 503' or diag brief($r);
    is code($r), 'keys_unavailable', 'Clerk 500: keys_unavailable';
    is $J->nfetch - $n0, 1, 'Clerk 500: the check asked Clerk once';
    nginx_stop();
}


# --- 4: the check fetches the keys itself ------------------------------------------

{
    $J->set_mode('ok');
    $NGX = nginx_start(workers => 2, http => conf(keys => $JWKS_LINE, jwks_port => $J->port));
    my $n0 = $J->nfetch;

    $J->set_delay(0.5);
    my @bg = map { async_http(path => '/api/health/live', timeout => 8) } 1 .. 6;
    my @r = map { wait_http($_) } @bg;
    $J->set_delay(0);
    is_deeply [map { $_->{status} } @r], [(200) x 6],
        'fresh instance, no token ever sent: 6 concurrent checks, all 200'
        or diag join "\n", map { brief($_) } @r;
    is_deeply [map { $_->{json}{keys} } @r], [(1) x 6], '... each with one key';
    is $J->nfetch - $n0, 1, '... after one fetch, started by the checks';
    my ($f) = ($J->fetches)[-1];
    is_deeply $f->{authorization}, ["Bearer $SK"], '... with the location\'s Authorization';

    my @bad;
    for (1 .. 10) {
        my $r = live();
        push @bad, brief($r) unless $r->{status} == 200 && $r->{elapsed} < 0.5;
    }
    is_deeply \@bad, [], 'keys present: 10 more checks, 200 at once';
    is $J->nfetch - $n0, 1, '... and no more fetches';

    my $r = get();
    is $r->{status}, 200, 'the fetched key verifies a token' or diag brief($r);

    # Clerk fails after the keys were fetched: they stay, so does the check.
    $J->set_mode('status500');
    sleep 3.2;                                   # past ttl=3s
    my $n1 = $J->nfetch;
    $r = get();
    is $r->{status}, 200, 'Clerk down, keys past their TTL: tokens still verified';
    retry_until(3, sub { $J->nfetch }, sub { $_[0] > $n1 });
    ok $J->nfetch > $n1, '... the refresh asked Clerk (and got a 500)';
    @bad = ();
    for (1 .. 5) {
        $r = live();
        push @bad, brief($r) unless $r->{status} == 200 && $r->{json}{keys} == 1;
    }
    is_deeply \@bad, [], 'Clerk down after the keys were fetched: live 200, keys 1';
    $J->set_mode('ok');
    nginx_stop();
}


# --- 5: bounded wait; recovery without traffic ------------------------------------------

{
    # Clerk answers after 4 s (the fetch's own timeout is 10 s here): the
    # check gives up after 3 s, the fetch goes on, and a later check
    # finds the keys.
    $J->set_delay(4);
    $NGX = nginx_start(http => conf(keys => $JWKS_LINE, jwks_port => $J->port, jwks_timeout => 10));
    my $n0 = $J->nfetch;

    my $r = live();
    is $r->{status}, 503, 'slow Clerk: live 503' or diag brief($r);
    like $r->{json}{detail} // '', qr/did not end within 3 s/, 'slow Clerk: the detail says so';
    ok $r->{elapsed} > 2.8 && $r->{elapsed} < 4, sprintf('slow Clerk: answered after %.2f s (bound 3 s)', $r->{elapsed});

    my $secs;
    ($r, $secs) = retry_until(4, sub { live() }, sub { $_[0]{status} == 200 }, 0.2);
    is $r->{status}, 200, sprintf('slow Clerk: live 200 %.1f s later, the same fetch', $secs)
        or diag brief($r);
    is $J->nfetch - $n0, 1, 'slow Clerk: one fetch';
    $J->set_delay(0);
    nginx_stop();
}

{
    # A check whose client goes away while it waits (it started the
    # fetch): nothing breaks, a later check finds keys.
    $J->set_delay(1);
    $NGX = nginx_start(http => conf(keys => $JWKS_LINE, jwks_port => $J->port, jwks_timeout => 5));
    my $gone = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => nginx_port())
        or die "connect: $!";
    print $gone "GET /api/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n";
    sleep 0.3;
    close $gone;
    my ($r, $secs) = retry_until(5, sub { live() }, sub { $_[0]{status} == 200 }, 0.2);
    is $r->{status}, 200, sprintf('client gone while its check waited: a later check 200 after %.1f s', $secs)
        or diag brief($r);
    ok alive_workers(), 'client gone: the worker is still there';
    $J->set_delay(0);
    nginx_stop();
}

{
    # Clerk down at the first start, up later: no token is ever sent, the
    # checks themselves fetch again (at most once per interval=1s).
    $J->set_mode('status500');
    $NGX = nginx_start(http => conf(keys => $JWKS_LINE, jwks_port => $J->port));
    my $r = live();
    is $r->{status}, 503, 'Clerk down at start: live 503';
    $J->set_mode('ok');
    my $secs;
    ($r, $secs) = retry_until(4, sub { live() }, sub { $_[0]{status} == 200 }, 0.2);
    is $r->{status}, 200, sprintf('Clerk back: live 200 after %.1f s, no token sent', $secs)
        or diag brief($r);
    nginx_stop();
}


# --- 6: configuration ----------------------------------------------------------------

{
    my $c = nginx_conf_test(http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { tenant_health alive; }
    }
EOF
    ok !$c->{ok}, 'tenant_health alive: refused';
    like $c->{output}, qr/invalid parameter "alive"/, '... naming the parameter';

    $c = nginx_conf_test(http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { tenant_health live; }
    }
EOF
    ok $c->{ok}, 'tenant_health live without any key directive: accepted (it answers 503)'
        or diag $c->{output};
}

done_testing();
