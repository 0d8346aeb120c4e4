#!/usr/bin/perl
# Answers that were on their way when the tenant changed, and lookups
# whose client went away.  The pool reaches PostgreSQL through a proxy
# (pg_proxy) that holds back the answers to a lookup of one organization:
# PostgreSQL has answered with the old row, the answer waits in the
# proxy while the test changes the tenant, then it is delivered.  The
# listener connects directly (no proxy).  Two workers: the one that gets
# the NOTIFY is not always the one that looks up.
#
#   lookup    (issue 11, item 3) a request's lookup answered "active", the
#             tenant suspended (UPDATE, its trigger's NOTIFY processed),
#             then the answer delivered: the request asks again and is
#             refused, and so is the next one (not admitted from a cache
#             filled with the old row)
#   refresh   the same with the background refresh of a row past its TTL:
#             the stale row is served to the request that started the
#             refresh, not to the ones after the change
#   admin     the same with the change made through tenant_admin (PATCH),
#             the listener off: the admin API's own invalidation holds
#   cron      the same with the trial job (listener off): a past trial
#             becomes "expired" while the answer ("trial") is held; the
#             gateway's status ($tenant_status) is "expired" afterwards,
#             not the old row's "trial" (both are refused with 402)
#   evicted   the same in a small zone where lookups of other (unknown)
#             organizations evict the suspended tenant's tombstone before
#             the held answer arrives: still not cached (the zone's floor)
#   reconnect the listener's connection lost and back while the answer
#             is held: everything is invalidated, the held answer is not
#             cached
#   abort     (issue 11, item 11) the client goes away (HTTP/1.1: closes
#             its socket; HTTP/2: curl gives up) while its lookup is held:
#             the request ends at once (499), its query runs on detached:
#             no PostgreSQL connection is closed or opened, and the
#             answer, once delivered, is cached (the next request of that
#             organization makes no query)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use IO::Socket::INET ();
use POSIX            ();
use Time::HiRes      qw(time sleep);


my $DEBUG = `$TenantTest::NGINX -V 2>&1` =~ /--with-debug/;
plan skip_all => 'needs a debug build of nginx (its debug log says when '
               . 'a NOTIFY was processed)' unless $DEBUG;

my $SIGNING_KEY = '0a1b2c3d' x 8;
my $CRON_SECRET = 'cron-secret-086-0123456789abcdefghij';
my $PG    = pg_start(tcp => 1);
my $PROXY = pg_proxy();
my $ADMIN = mint_token(sub => 'user_admin_086', metadata => { role => 'admin' },
                       exp => int(time) + 900);

sub conf {
    my ($listen, $ttl, $zone) = @_;
    $ttl //= '1s';
    $zone //= '1m';
    return <<"EOF";
    tenant_database         "$PROXY->{conninfo}" pool=2 timeout=5s;
    tenant_database_listen  $listen;
    tenant_cache            zone=tenants:$zone ttl=$ttl listen_ttl=$ttl stale=5m;
    tenant_token_cache      zone=tokens:1m;
    tenant_jwks_file        %%JWKS%%;
    tenant_signing_key      $SIGNING_KEY;
    tenant_tier             starter features=api;
    tenant_cron_secret      "$CRON_SECRET";

    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:%%PORT2%% http2;
        add_header X-Tenant-Status \$tenant_status always;

        location = /api/cron/expire-trials {
            tenant_cron_expire_trials;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location /api/admin/tenants {
            tenant_gateway admin;
            tenant_admin;
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF
}

my $NGX = nginx_start(workers => 2, error_level => 'debug',
                      http => conf(qq{"$PG->{conninfo}"}));

error_log_allow(
    qr/\[warn\].*tenant: stopped listening for tenant changes/,
    qr/\[info\].*tenant: idle PostgreSQL connection closed/,
    qr/\[error\].*tenant: PostgreSQL failed while reading/,
);

my %TOKEN;

# A gateway request of tenant $t: its answer, or (async) its handle.
sub gw_args {
    my ($t) = @_;
    my $org = $t->{clerk_organization_id};
    return (path => '/api/things', timeout => 15,
            headers => [Authorization => 'Bearer '
                            . ($TOKEN{$org} //= mint_token(org => $org)),
                        'X-Organization-ID' => $org]);
}

sub gw       { return http(gw_args(@_)) }
sub gw_async { return async_http(gw_args(@_)) }

sub suspended {
    my ($r) = @_;
    return $r->{status} == 403 && ($r->{json}{type} // '') =~ /tenant_suspended$/;
}

# A lookup of tenant $t whose answer (the old row) PostgreSQL gave and the
# proxy holds: the request's handle.
sub held_lookup {
    my ($t, $what) = @_;
    $PROXY->hold($t->{clerk_organization_id});
    my $h = gw_async($t);
    ok $PROXY->wait_held(10), "$what: the lookup was answered (the old row), the answer is held";
    return $h;
}

sub brief { my ($r) = @_; return "$r->{status} " . ($r->{json}{type} // '') }

# Waits until a worker logged that the organization changed (NOTIFY).
sub wait_notified {
    my ($org, $mark) = @_;
    my ($ok) = retry_until(5, sub { error_log(since => $mark) },
                           sub { $_[0] =~ /tenant: organization "\Q$org\E" changed/ });
    return $ok =~ /tenant: organization "\Q$org\E" changed/;
}

# Suspends tenant $t in the database (its trigger sends the NOTIFY) and
# waits until the gateway processed the notification.
sub suspend_notified {
    my ($t, $what) = @_;
    my $mark = log_mark();
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    ok wait_notified($t->{clerk_organization_id}, $mark),
        "$what: suspended, the gateway processed the NOTIFY";
}

sub metric {
    my ($name) = @_;
    my $r = http(path => '/metrics');
    my $sum = 0;
    $sum += $1 while $r->{body} =~ /^\Q$name\E(?:\{[^}]*\})? (\d+)$/mg;
    return $sum;
}

my $SEQ = 0;
sub tenant {
    my $n = ++$SEQ;
    # organization ids that no other one contains: the proxy matches bytes
    return create_tenant(org => "org_086_${n}_x", slug => "t086-$n", status => 'active');
}


# --- lookup ------------------------------------------------------------------

{
    my $t = tenant();
    my $h = held_lookup($t, 'lookup');

    suspend_notified($t, 'lookup');

    $PROXY->release;
    my $r = wait_http($h);
    ok suspended($r), 'lookup: the request whose answer was overtaken asks again: 403 suspended'
        or diag brief($r);

    $r = gw($t);
    ok suspended($r), 'lookup: the next request is refused (the old row was not cached)'
        or diag brief($r);
}


# --- refresh -----------------------------------------------------------------

{
    my $t = tenant();
    my $org = $t->{clerk_organization_id};

    is gw($t)->{status}, 200, 'refresh: active tenant admitted (cached)';
    sleep 1.5;                          # past ttl=1s

    $PROXY->hold($org);
    my $r = gw($t);
    is $r->{status}, 200, 'refresh: past its TTL, the row is served while it is refreshed';
    ok $PROXY->wait_held(10), 'refresh: the refresh was answered (active), the answer is held';

    suspend_notified($t, 'refresh');

    $PROXY->release;
    sleep 0.5;                          # the refresh's answer is handled

    for my $i (1 .. 3) {
        $r = gw($t);
        ok suspended($r), "refresh: request $i after the change is refused"
            or diag brief($r);
    }
}


# --- reconnect ---------------------------------------------------------------

{
    my $t = tenant();
    my $org = $t->{clerk_organization_id};

    my $h = held_lookup($t, 'reconnect');

    # The change is made while nobody listens: the listener learns of it
    # only by listening again (every row invalidated).
    my $mark = log_mark();
    sql(q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE query = 'LISTEN tenant_changed'});
    my ($lost) = retry_until(5, sub { error_log(since => $mark) },
                             sub { $_[0] =~ /stopped listening/ });
    like $lost, qr/stopped listening for tenant changes/, 'reconnect: the listener lost its connection';
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    my ($back) = retry_until(10, sub { error_log(since => $mark) },
                             sub { $_[0] =~ /listening for tenant changes\n/ });
    like $back, qr/\[notice\].*tenant: listening for tenant changes\n/, 'reconnect: the listener is back';

    $PROXY->release;
    my $r = wait_http($h);
    ok suspended($r), 'reconnect: the request asks again: 403 suspended' or diag brief($r);
    $r = gw($t);
    ok suspended($r), 'reconnect: the next request is refused' or diag brief($r);
}


# --- admin (listener off: the admin API's own invalidation) ------------------

# ttl=30s: the abort part counts queries (no refresh may run)
nginx_stop();
$NGX = nginx_start(workers => 2, error_level => 'debug', http => conf('off', '30s'));

{
    my $t = tenant();
    my $h = held_lookup($t, 'admin');

    my $r = http(method => 'PATCH', path => "/api/admin/tenants/$t->{id}",
                 headers => [Authorization => "Bearer $ADMIN",
                             'Content-Type' => 'application/json'],
                 body => '{"subscriptionStatus":"suspended"}');
    is $r->{status}, 200, 'admin: PATCH suspended answered 200';

    $PROXY->release;
    $r = wait_http($h);
    ok suspended($r), 'admin: the request asks again: 403 suspended' or diag brief($r);
    $r = gw($t);
    ok suspended($r), 'admin: the next request is refused' or diag brief($r);
}

{
    my $t = create_tenant(org => 'org_086_trial_x', slug => 't086-trial',
                          status => 'trial', trial_ends_at => -60);
    my $h = held_lookup($t, 'cron');

    my $r = http(method => 'POST', path => '/api/cron/expire-trials',
                 headers => [Authorization => "Bearer $CRON_SECRET"]);
    is $r->{json}{expired}, 1, 'cron: the trial job expired the trial';

    $PROXY->release;
    for my $which ('the request that asks again', 'the next request') {
        $r = $which eq 'the next request' ? gw($t) : wait_http($h);
        is "$r->{status} " . ($r->{headers}{'x-tenant-status'}[0] // ''), '402 expired',
            "cron: $which: 402, the new row's status (expired)";
    }
}



# --- abort -------------------------------------------------------------------

# Client $how (a sub: sends the request of tenant $t, returns once the
# client is gone) while its lookup is held.
sub abort_case {
    my ($what, $t, $how) = @_;
    my $org = $t->{clerk_organization_id};

    $PROXY->hold($org);
    my $mark = log_mark();
    my $st0 = $PROXY->status;
    my $q0 = metric('tenant_db_queries_total');

    $how->($t);

    my ($log) = retry_until(3, sub { error_log(since => $mark) },
                            sub { $_[0] =~ /request gone, its lookup of organization "\Q$org\E" runs on/ });
    like $log, qr/request gone, its lookup of organization "\Q$org\E" runs on/,
        "abort $what: the request ended when its client went away, its lookup runs on";
    like $log, qr/\[info\].*client prematurely closed connection/,
        "abort $what: nginx logged the client's close";

    my $e0 = metric('tenant_cache_entries{cache="tenant"}');
    $PROXY->release;
    my ($e1) = retry_until(5, sub { metric('tenant_cache_entries{cache="tenant"}') },
                           sub { $_[0] > $e0 });
    is $e1, $e0 + 1, "abort $what: the answer went into the cache (tenant_cache_entries + 1)";
    my $st1 = $PROXY->status;
    is_deeply [@$st1{qw(accepted open)}], [@$st0{qw(accepted open)}],
        "abort $what: no PostgreSQL connection closed or opened ($st1->{open} open, "
        . "$st1->{accepted} accepted)";

    my $r = gw($t);
    is $r->{status}, 200, "abort $what: the next request of the organization: 200";
    is metric('tenant_db_queries_total') - $q0, 1,
        "abort $what: ... served from the cache (one query in all: the aborted one's)";
    is $PROXY->status->{accepted}, $st0->{accepted}, "abort $what: still no new connection";
}

is gw(tenant())->{status}, 200, 'abort: a first lookup opens a pool connection';
is gw(tenant())->{status}, 200, 'abort: a second lookup';

abort_case('HTTP/1.1', tenant(), sub {
    my ($t) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $NGX->{port})
        or die "connect: $!";
    my %h = gw_args($t);
    my @h = @{ $h{headers} };
    syswrite $s, "GET $h{path} HTTP/1.1\r\nHost: localhost\r\n"
                 . join('', map { "$h[2 * $_]: $h[2 * $_ + 1]\r\n" } 0 .. $#h / 2)
                 . "\r\n";
    ok $PROXY->wait_held(10), 'abort HTTP/1.1: the lookup was answered, the answer is held';
    close $s;
});

abort_case('HTTP/2', tenant(), sub {
    my ($t) = @_;
    my %h = gw_args($t);
    my @h = @{ $h{headers} };
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        { exec 'curl', '-s', '--http2-prior-knowledge', '--max-time', '30',
               (map { ('-H', "$h[2 * $_]: $h[2 * $_ + 1]") } 0 .. $#h / 2),
               "http://127.0.0.1:$NGX->{port2}$h{path}" }
        POSIX::_exit(127);
    }
    ok $PROXY->wait_held(10), 'abort HTTP/2: the lookup was answered, the answer is held';
    kill 'TERM', $pid;                  # the client gives up
    waitpid $pid, 0;
});



# --- evicted (a small zone: the tombstone is evicted by the LRU) -------------

nginx_stop();
$NGX = nginx_start(workers => 2, error_level => 'debug',
                   http => conf(qq{"$PG->{conninfo}"}, '30s', '32k'));

{
    my $t = tenant();
    my $h = held_lookup($t, 'evicted');

    suspend_notified($t, 'evicted');

    # unknown organizations: each a lookup and a negative entry, until the
    # LRU has evicted more entries than the zone holds
    my $ev0 = metric('tenant_cache_evictions_total{cache="tenant"}');
    my ($n, $ev) = (0, 0);
    while ($n < 400) {
        my $u = { clerk_organization_id => "org_086_unknown_" . ++$n . '_x' };
        gw($u);
        $ev = metric('tenant_cache_evictions_total{cache="tenant"}') - $ev0;
        last if $ev > 2 * metric('tenant_cache_entries{cache="tenant"}');
    }
    ok $ev > 0, "evicted: $n lookups of unknown organizations, $ev evictions";

    $PROXY->release;
    my $r = wait_http($h);
    ok suspended($r), 'evicted: the request asks again: 403 suspended' or diag brief($r);
    $r = gw($t);
    ok suspended($r), 'evicted: the next request is refused' or diag brief($r);
}


done_testing();
