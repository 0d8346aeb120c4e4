#!/usr/bin/perl
# Single flight (issue 15, item 4): requests of one worker for an
# organization that is not cached wait for one query.  PostgreSQL logs
# every statement (log_statement=all) and the test counts the lookups of
# each organization in its log.  The pool reaches PostgreSQL through a
# proxy (pg_proxy) that holds back the answer to a lookup, so that all the
# requests are waiting before it comes; the listener connects directly.
#
#   flight    50 concurrent requests of one uncached organization, the
#             answer held until they all wait: 50 x 200, one query
#   failure   20 requests wait for a lookup that times out (the proxy
#             never answers): all 20 get the same 503, one query
#   gone      10 requests wait, 4 of their clients go away: the other 6
#             are answered (200), one query
#   changed   10 requests wait for a lookup answered "active"; the tenant
#             is suspended (its NOTIFY processed) before the answer comes:
#             every one of them is refused (403 suspended), after a
#             second query (two in all)
#   restart   a fresh gateway (one worker, its listener up) in front of
#             150 active tenants, 3 concurrent requests each: one query
#             per organization; with two workers, at most two (one per
#             worker: the flight is per worker)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use IO::Select       ();
use IO::Socket::INET ();
use File::Basename   qw(dirname);
use Time::HiRes      qw(time sleep);


my $DEBUG = `$TenantTest::NGINX -V 2>&1` =~ /--with-debug/;
plan skip_all => 'needs a debug build of nginx (its debug log says when '
               . 'a request joined a lookup)' unless $DEBUG;

my $PG    = pg_start(tcp => 1);
my $PROXY = pg_proxy();

sub conf {
    my ($db) = @_;
    return <<"EOF";
    tenant_database         "$db" pool=2 timeout=3s;
    tenant_database_listen  "$PG->{conninfo}";
    tenant_cache            zone=tenants:4m ttl=30s stale=5m;
    tenant_token_cache      zone=tokens:4m;
    tenant_jwks_file        %%JWKS%%;
    tenant_signing_key      '0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d';
    tenant_tier             starter features=api;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }
    }
EOF
}

my $NGX = nginx_start(workers => 1, error_level => 'debug',
                      http => conf($PROXY->{conninfo}));

error_log_allow(
    qr/\[error\].*tenant: PostgreSQL .*timed out/,
    qr/\[error\].*tenant: PostgreSQL failed while reading/,
    qr/\[info\].*tenant: idle PostgreSQL connection closed/,
    qr/\[warn\].*tenant: stopped listening for tenant changes/,
);

# PostgreSQL's statement log, counted from now on.
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

my %TOKEN;

# Opens a connection per organization in @orgs and sends its request:
# the sockets, still to be read (finish()).
sub send_all {
    my (@orgs) = @_;
    my @s;
    for my $org (@orgs) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $NGX->{port})
            or die "connect: $!";
        my $tok = $TOKEN{$org} //= mint_token(org => $org);
        syswrite $s, "GET /api/things HTTP/1.0\r\nHost: localhost\r\n"
                     . "Authorization: Bearer $tok\r\n"
                     . "X-Organization-ID: $org\r\n\r\n";
        push @s, $s;
    }
    return @s;
}

# Reads the answers: "status type" for each socket, in order.
sub finish {
    my (@s) = @_;
    my %buf;
    my $sel = IO::Select->new(@s);
    my $until = time + 20;
    while ($sel->count && time < $until) {
        for my $s ($sel->can_read(1)) {
            my $n = sysread $s, my $chunk, 65536;
            if ($n) {
                $buf{fileno $s} .= $chunk;
            } else {
                $sel->remove($s);
            }
        }
    }
    return map {
        my $b = $buf{fileno $_} // '';
        my ($st) = $b =~ m{^HTTP/1\.\d (\d{3})};
        my ($type) = $b =~ m{"type"\s*:\s*"[^"]*/([a-z_]+)"};
        close $_;
        ($st // 'none') . ($type ? " $type" : '');
    } @s;
}

sub tally { my %n; $n{$_}++ for @_; join ', ', map { "$n{$_} x $_" } sort keys %n }

# Waits until the worker's debug log shows $n requests joining the lookup
# of $org.
sub wait_joined {
    my ($org, $mark, $n) = @_;
    my ($log) = retry_until(10, sub { error_log(since => $mark) }, sub {
        my @j = $_[0] =~ /waiting for the lookup of organization "\Q$org\E"/g;
        @j >= $n;
    });
    my @j = $log =~ /waiting for the lookup of organization "\Q$org\E"/g;
    return scalar @j;
}

# A new active tenant, once the gateway processed the NOTIFYs of its
# creation (an invalidation while a lookup is out makes it ask again, and
# later requests not join it: the counts below would vary).
my $SEQ = 0;
sub tenant {
    my $n = ++$SEQ;
    my $org = "org_087_${n}_x";
    my $mark = log_mark();
    my $t = create_tenant(org => $org, slug => "t087-$n", status => 'active');
    my $re = qr/tenant: organization "\Q$org\E" changed/;
    retry_until(5, sub { my @n = error_log(since => $mark) =~ /$re/g; scalar @n },
                sub { $_[0] >= 2 });
    sleep 0.1;
    return $t;
}


# --- flight ------------------------------------------------------------------

{
    my $org = tenant()->{clerk_organization_id};
    my $from = -s $LOG;
    my $mark = log_mark();

    $PROXY->hold($org);
    my @s = send_all(($org) x 50);
    ok $PROXY->wait_held(10), 'flight: the lookup was answered, the answer is held';
    is wait_joined($org, $mark, 49), 49, 'flight: the 49 other requests joined the lookup in flight';
    $PROXY->release;

    is tally(finish(@s)), '50 x 200', 'flight: 50 requests, all admitted';
    is queries($org, $from), 1, 'flight: one query in PostgreSQL for the 50';
}


# --- failure -----------------------------------------------------------------

{
    my $org = tenant()->{clerk_organization_id};
    my $from = -s $LOG;
    my $mark = log_mark();

    $PROXY->hold($org);
    my @s = send_all(($org) x 20);
    ok $PROXY->wait_held(10), 'failure: the answer is held (and stays so)';
    is wait_joined($org, $mark, 19), 19, 'failure: 19 requests joined the lookup';

    my $t0 = time;
    my @r = finish(@s);
    my $took = time - $t0;
    is tally(@r), '20 x 503 tenant_unavailable',
        'failure: the lookup timed out, all 20 get the same 503';
    cmp_ok $took, '<', 5, sprintf('failure: ... within the timeout (3 s; %.1f s)', $took);
    $PROXY->release;
    is queries($org, $from), 1, 'failure: one query in PostgreSQL for the 20';
}


# --- gone --------------------------------------------------------------------

{
    my $org = tenant()->{clerk_organization_id};
    my $from = -s $LOG;
    my $mark = log_mark();

    $PROXY->hold($org);
    my @s = send_all(($org) x 10);
    ok $PROXY->wait_held(10), 'gone: the answer is held';
    is wait_joined($org, $mark, 9), 9, 'gone: 9 requests joined the lookup';

    close $_ for splice @s, 0, 4;
    my ($log) = retry_until(5, sub { error_log(since => $mark) }, sub {
        my @c = $_[0] =~ /client prematurely closed connection/g;
        @c >= 4;
    });
    my @c = $log =~ /client prematurely closed connection/g;
    is scalar @c, 4, 'gone: 4 clients went away while waiting (nginx logged it)';
    unlike $log, qr/request gone, its lookup of organization "\Q$org\E"/,
        'gone: ... the lookup still has waiters, not orphaned';

    $PROXY->release;
    is tally(finish(@s)), '6 x 200', 'gone: the 6 others are answered: 200';
    is queries($org, $from), 1, 'gone: one query in PostgreSQL';
}


# --- changed -----------------------------------------------------------------

{
    my $t = tenant();
    my $org = $t->{clerk_organization_id};
    my $from = -s $LOG;
    my $mark = log_mark();

    $PROXY->hold($org);
    my @s = send_all(($org) x 10);
    ok $PROXY->wait_held(10), 'changed: the lookup was answered (active), the answer is held';
    is wait_joined($org, $mark, 9), 9, 'changed: 9 requests joined the lookup';

    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    my ($log) = retry_until(5, sub { error_log(since => $mark) },
                            sub { $_[0] =~ /tenant: organization "\Q$org\E" changed/ });
    like $log, qr/tenant: organization "\Q$org\E" changed/,
        'changed: suspended, the gateway processed the NOTIFY';

    $PROXY->release;
    is tally(finish(@s)), '10 x 403 tenant_suspended',
        'changed: every waiting request is refused (asked again)';
    is queries($org, $from), 2, 'changed: two queries (the overtaken one, the second)';
}


# --- restart -----------------------------------------------------------------

my @ORGS = map {
    create_tenant(org => "org_087_r${_}_x", slug => "t087-r$_", status => 'active')
        ->{clerk_organization_id}
} 1 .. 150;
$TOKEN{$_} //= mint_token(org => $_) for @ORGS;

for my $workers (1, 2) {
    nginx_stop();
    $NGX = nginx_start(workers => $workers, error_level => 'info',
                       http => conf($PG->{tcp_conninfo}));

    # rows cached before the listener is up are looked up once more when
    # it is (a change may have been missed): the burst comes after
    my ($up) = retry_until(10, sub { error_log() }, sub { $_[0] =~ /listening for tenant changes/ });
    like $up, qr/listening for tenant changes/, "restart ($workers worker(s)): the listener is up";
    my $from = -s $LOG;

    my @s = send_all(map { ($_) x 3 } @ORGS);
    is tally(finish(@s)), '450 x 200', "restart ($workers worker(s)): 450 requests, all admitted";

    my %q = map { ($_ => queries($_, $from)) } @ORGS;
    my $max = 0;
    my $sum = 0;
    for (values %q) { $max = $_ if $_ > $max; $sum += $_ }
    diag "restart ($workers worker(s)): $sum lookups for 150 organizations, at most $max each";
    is scalar(grep { $_ >= 1 } values %q), 150, "restart ($workers worker(s)): every organization looked up";
    cmp_ok $max, '<=', $workers, "restart ($workers worker(s)): at most one query per organization and worker";
}

sql(q{ALTER SYSTEM RESET log_statement});
sql('SELECT pg_reload_conf()');

done_testing();
