#!/usr/bin/perl
# How the gateway reaches PostgreSQL: host names resolved when nginx reads
# its configuration (never on a worker), every address of the name tried
# (localhost is ::1 and 127.0.0.1; the server listens on 127.0.0.1 only,
# so libpq's first socket fails and it opens another, which usually gets
# the same descriptor number), connection strings that would make libpq
# block refused, secrets kept out of messages, and /api/health, which
# needs no token, unable to starve tenant lookups of connections.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use POSIX       ();
use Socket      qw(getaddrinfo AF_INET6 SOCK_STREAM);
use Time::HiRes qw(time sleep);

my $SIGNING_KEY = '0123456789abcdef' x 4;

my $pg = pg_start(tcp => 1);
my $tenant = create_tenant(status => 'active', tier => 'starter');
my $org = $tenant->{clerk_organization_id};

{
    my ($err, @res) = getaddrinfo('localhost', $pg->{port},
                                  { socktype => SOCK_STREAM });
    my $v6 = grep { $_->{family} == AF_INET6 } @res;
    diag($v6 ? 'localhost has an IPv6 address: libpq switches sockets'
             : 'localhost is IPv4 only here: one socket');
}

sub http_block {
    my (%o) = @_;
    my $db = $o{db} // $pg->{tcp_conninfo};
    return <<"EOF";
    tenant_database     "$db" pool=$o{pool} timeout=2s;
    tenant_cache        zone=tenants:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter features=api;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/health {
            tenant_health;
        }
    }
EOF
}

sub get {
    my ($o) = @_;
    return http(path => '/api/products',
                headers => [Authorization => 'Bearer ' . mint_token(org => $o)]);
}


# --- a host name, every address -------------------------------------------

nginx_start(http => http_block(pool => 2));

my $r = get($org);
is $r->{status}, 200, 'tenant looked up through "host=localhost"'
    or diag $r->{body};
is_deeply $r->{json}{headers}{'x-tenant-id'}, [$tenant->{id}],
    'the upstream saw the tenant';

$r = http(path => '/api/health');
is $r->{status}, 200, 'health through "host=localhost"';
like $r->{body}, qr/"database":"connected"/, '... connected';

unlike error_log(), qr/epoll_ctl|\[alert\]/,
    'no epoll error when libpq switches sockets';


# --- health cannot starve lookups -----------------------------------------

# 40 concurrent health checks, then uncached tenants: with a pool of 2,
# the checks share one ping per worker, and the lookups all succeed.
{
    my @t = map { create_tenant(status => 'active', tier => 'starter') } 1 .. 4;
    my @kids;
    for (1 .. 40) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $h = http(path => '/api/health', timeout => 5);
            POSIX::_exit($h->{status} == 200 ? 0 : 1);
        }
        push @kids, $pid;
    }

    my @bad;
    for my $t (@t) {
        my $x = get($t->{clerk_organization_id});
        push @bad, "$t->{clerk_organization_id}: $x->{status}"
            unless $x->{status} == 200;
    }

    my $failed = 0;
    for (@kids) { waitpid $_, 0; $failed++ if $? }

    is_deeply \@bad, [], 'uncached lookups during a health flood: all 200';
    is $failed, 0, '40 concurrent health checks: all 200';
}

nginx_stop();


# --- the first address refuses: libpq opens another socket ----------------

# Nothing listens on 127.0.0.2: libpq's first socket is refused and closed
# inside PQconnectPoll(), and the next one usually gets its number.  The
# pool must watch the new socket, not the number.
nginx_start(http => http_block(
    pool => 1,
    db   => "hostaddr=127.0.0.2,127.0.0.1 host=db,db port=$pg->{port} "
            . "dbname=capliquify user=postgres"));

for my $i (1 .. 3) {
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $x = get($t->{clerk_organization_id});
    is $x->{status}, 200, "second address after a refused first, lookup $i"
        or diag $x->{body};
    ok $x->{elapsed} < 1.5, sprintf('... answered in %.2f s', $x->{elapsed});
}

unlike error_log(), qr/epoll_ctl|\[alert\]/,
    'no epoll error across the socket switch';

nginx_stop();


# --- connection strings that would block, or leak -------------------------

my @refused = (
    [ 'service=capliquify',
      qr/"service" in tenant_database would read the service file/,
      'service= (a file read per connection) refused' ],
    [ 'host=db1.invalid,db2.invalid dbname=x',
      qr/several hosts in tenant_database need "hostaddr"/,
      'several host names (resolved by libpq on a worker) refused' ],
    [ 'host=no-such-host.invalid dbname=x',
      qr/host "no-such-host\.invalid" of tenant_database could not be resolved/,
      'a name that does not resolve stops nginx at start' ],
    [ 'postgresql://app:s3cr3t-pw@db.example/x?bogus_option=1',
      qr/invalid PostgreSQL connection string/,
      'an invalid connection string refused' ],
    [ '', qr/empty PostgreSQL connection string/, 'empty refused' ],
);

for my $case (@refused) {
    my ($db, $re, $name) = @$case;
    my $t = nginx_conf_test(http => http_block(pool => 1, db => $db));
    ok !$t->{ok}, $name;
    like $t->{output}, $re, '... with a clear message';
    unlike $t->{output}, qr/s3cr3t-pw/, '... without the password';
}

{
    my $t = nginx_conf_test(
        http => http_block(pool => 1,
                           db => "hostaddr=127.0.0.1,127.0.0.1 host=a,b "
                                 . "port=$pg->{port} dbname=capliquify"));
    ok $t->{ok}, 'several hosts with hostaddr: accepted (nothing to resolve)'
        or diag $t->{output};
}


# --- the server refuses the connection during the handshake ---------------

# ngx_tenant_pg.c, ngx_tenant_pg_poll: PQconnectPoll() fails after the
# socket connected (the server's FATAL in the startup handshake).  The test
# cluster uses trust auth, so a wrong password cannot fail: an unknown
# database and an unknown role do.  Expected: 503 tenant_unavailable with
# Retry-After well within timeout=2s (a second one at once), one [error]
# naming the server's reason (not the password), health 503, no crash;
# the next nginx with a good conninfo works.
for my $case (
    [ 'unknown database', "dbname=no_such_db_045 user=postgres",
      qr/database "no_such_db_045" does not exist/ ],
    [ 'unknown role',     "dbname=capliquify user=no_such_role_045",
      qr/role "no_such_role_045" does not exist/ ],
) {
    my ($name, $rest, $why) = @$case;
    nginx_start(http => http_block(
        pool => 2,
        db   => "host=localhost port=$pg->{port} $rest password=s3cr3t-pw"));
    my $mark = log_mark();

    my $t = create_tenant(status => 'active', tier => 'starter');
    my @r = map { get($t->{clerk_organization_id}) } 1 .. 3;
    for my $i (0 .. $#r) {
        my $x = $r[$i];
        my $n = $i + 1;
        is $x->{status}, 503, "$name, lookup $n: 503" or diag $x->{body};
        like $x->{body}, qr/"code":"tenant_unavailable"/, "$name, lookup $n: tenant_unavailable";
        like $x->{headers}{'retry-after'}[0] // '', qr/^\d+$/, "$name, lookup $n: Retry-After";
        ok $x->{elapsed} < 1.5, sprintf("$name, lookup $n: answered in %.2f s (timeout=2s)", $x->{elapsed});
    }

    my $h = http(path => '/api/health', timeout => 5);
    is $h->{status}, 503, "$name: health 503";
    like $h->{body}, qr/"database":"disconnected"/, "$name: health: disconnected";

    my $log = error_log(since => $mark);
    my @err = $log =~ /^(.*\[error\].*tenant: PostgreSQL failed while connecting to PostgreSQL: .*)$/mg;
    ok @err >= 1, "$name: an [error] for the failed connection" or diag $log;
    like $err[0] // '', $why, "$name: ... naming the server's reason";
    unlike $log, qr/s3cr3t-pw/, "$name: ... without the password";
    unlike $log, qr/\[alert\]|\[crit\]|exited on signal/, "$name: no crash, no [alert]/[crit]";
    is scalar(nginx_workers()), 1, "$name: the worker is still there";

    nginx_stop();
}

nginx_start(http => http_block(pool => 2));
{
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $x = get($t->{clerk_organization_id});
    is $x->{status}, 200, 'a good conninfo again: 200' or diag $x->{body};
}
nginx_stop();

done_testing();
