#!/usr/bin/perl
# Refresh traffic while the LISTEN/NOTIFY listener is up (issue 15, item
# 3): changes arrive pushed, so cached rows live for tenant_cache's
# listen_ttl (1h by default) instead of its ttl (2 s here); when the
# listener is down, ttl again, counted from when it stopped.  PostgreSQL
# logs every statement (log_statement=all); the test counts the lookups of
# each organization in its log.  The listener connects as a role of its
# own, so that the test can keep it from coming back (NOLOGIN) after
# pg_terminate_backend.
#
#   up        the listener up: 20 cached tenants requested every 0.5 s for
#             3 TTLs: no query
#   outage    the listener's backend terminated, its role NOLOGIN: a
#             tenant suspended meanwhile (its NOTIFY lost) is refused
#             within the TTL; the rows are refreshed at the TTL again
#             (2 queries or more each over 3 TTLs)
#   back      the role may log in again, the listener is back: every row
#             cached while it was away is checked once at its next use
#             (one query each), then none for 3 TTLs

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use File::Basename   qw(dirname);
use Time::HiRes      qw(time sleep);


my $PG = pg_start();
my $ROLE = 'listen_088';
sql(qq{CREATE ROLE $ROLE LOGIN});

my $NGX = nginx_start(workers => 2, http => <<"EOF");
    tenant_database         "$PG->{conninfo}" pool=2 timeout=3s;
    tenant_database_listen  "host=$PG->{socket} port=$PG->{port} dbname=capliquify user=$ROLE";
    tenant_cache            zone=tenants:1m ttl=2s stale=5m;
    tenant_token_cache      zone=tokens:1m;
    tenant_jwks_file        %%JWKS%%;
    tenant_signing_key      0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d;
    tenant_tier             starter features=api;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }
    }
EOF

error_log_allow(
    qr/\[warn\].*tenant: stopped listening for tenant changes/,
    qr/\[error\].*tenant: PostgreSQL failed while reading/,
    qr/\[error\].*tenant: .*PostgreSQL.*not permitted to log in/,
    qr/\[error\].*tenant: .*connect.*listen_088/,
    qr/\[error\].*listen_088/,
    qr/\[error\].*terminating connection due to administrator command/,
);

sub listening {
    my ($mark, $secs) = @_;
    my ($log) = retry_until($secs, sub { error_log(since => $mark) },
                            sub { $_[0] =~ /tenant: listening for tenant changes/ });
    return $log =~ /tenant: listening for tenant changes/;
}

ok listening(undef, 10), 'the listener is up';

my $LOG = dirname(sql_value('SHOW data_directory')) . '/postgres.log';
sql(q{ALTER SYSTEM SET log_statement = 'all'});
sql('SELECT pg_reload_conf()');
sleep 0.2;

sub queries {
    my ($org, $from) = @_;
    open my $fh, '<', $LOG or die "$LOG: $!";
    seek $fh, $from, 0;
    return scalar grep { /parameters: \$1 = '\Q$org\E'/ } <$fh>;
}

my @T = map {
    create_tenant(org => "org_088_${_}_x", slug => "t088-$_", status => 'active')
} 1 .. 20;
my %TOKEN = map { ($_->{clerk_organization_id} => mint_token(org => $_->{clerk_organization_id})) } @T;

sub gw {
    my ($org) = @_;
    my $r = http(path => '/api/things',
                 headers => [Authorization => "Bearer $TOKEN{$org}",
                             'X-Organization-ID' => $org]);
    return $r->{status} . ($r->{json}{type} && $r->{json}{type} =~ m{/([a-z_]+)$} ? " $1" : '');
}

# Requests every tenant every 0.5 s for $secs: the statuses seen.
sub rounds {
    my ($secs) = @_;
    my %st;
    my $until = time + $secs;
    while (time < $until) {
        $st{ gw($_->{clerk_organization_id}) }++ for @T;
        sleep 0.5;
    }
    return join ', ', map { "$st{$_} x $_" } sort keys %st;
}

sub counts {
    my ($from) = @_;
    return map { queries($_->{clerk_organization_id}, $from) } @T;
}


# --- up ----------------------------------------------------------------------

{
    my @st = map { gw($_->{clerk_organization_id}) } @T;
    is scalar(grep { $_ eq '200' } @st), 20, 'up: 20 tenants admitted (now cached)';

    my $from = -s $LOG;
    like rounds(6.5), qr/^\d+ x 200$/, 'up: requests for 3 TTLs, all admitted';
    my @q = counts($from);
    my $sum = 0;
    $sum += $_ for @q;
    is $sum, 0, 'up: no refresh query for 3 TTLs while the listener is up';
}


# --- outage ------------------------------------------------------------------

{
    my $mark = log_mark();
    sql(qq{ALTER ROLE $ROLE NOLOGIN});
    my $n = sql_value(q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                        WHERE usename = $1}, $ROLE);
    is $n, 1, 'outage: the listener\'s backend terminated';
    my ($log) = retry_until(5, sub { error_log(since => $mark) },
                            sub { $_[0] =~ /stopped listening for tenant changes/ });
    like $log, qr/stopped listening for tenant changes/, 'outage: the gateway saw it';

    my $from = -s $LOG;
    my $t0 = time;
    my $s = $T[0];
    my $org = $s->{clerk_organization_id};
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $s->{id});
    my ($st) = retry_until(6, sub { gw($org) }, sub { $_[0] =~ /tenant_suspended/ }, 0.1);
    my $took = time - $t0;
    is $st, '403 tenant_suspended', 'outage: a change made meanwhile (no NOTIFY) is seen';
    cmp_ok $took, '<', 2 + 1, sprintf('outage: ... within the TTL (2 s; %.1f s)', $took);

    rounds(6.5);
    my @q = counts($from);
    is scalar(grep { $_ >= 2 } @q), 20, 'outage: every row refreshed at the TTL again (2+ queries each in 3 TTLs: '
        . join(' ', @q) . ')';
}


# --- back --------------------------------------------------------------------

{
    my $mark = log_mark();
    sql(qq{ALTER ROLE $ROLE LOGIN});
    ok listening($mark, 40), 'back: the listener reconnected';

    my $from = -s $LOG;
    rounds(6.5);
    my @q = counts($from);
    is_deeply \@q, [(1) x 20], 'back: each row checked once (cached while nobody listened), '
        . 'then no refresh for 3 TTLs';
}

sql(q{ALTER SYSTEM RESET log_statement});
sql('SELECT pg_reload_conf()');

done_testing();
