#!/usr/bin/perl
# Compact tenant entries (issue 15, item 5): a cached tenant takes a slab
# chunk of 256 bytes (its key up to 32 bytes, the packed row of 152 bytes,
# the node's header), so that 100,000 tenants fit in 32 MB.
#
#   round trip  rows with the longest values the schema allows (slug of
#               63, a schema that is not tenant_<slug> of 63, a tier of
#               48, an organization id of 128: its key is a SHA-256), each
#               answered from the database then from the cache: every
#               field the same ($tenant_id, _slug, _schema, _tier,
#               _status, _org_id; trial_ends_at: a trial that ends while
#               cached is refused from the cache)
#   long key    a change of the tenant with the 128-byte organization id
#               reaches its (hashed) cache entry (NOTIFY)
#   too long    a row whose texts do not fit (slug 63 + tier 48) is served
#               right but not cached (a warning; a query per request)
#   fill        a 512k zone filled with (negative) entries: entries per MB
#               >= 3,125, the density of 100,000 tenants in 32 MB

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


my $PG = pg_start();

my $TIER48 = 't' . ('0123456789abcdef' x 3);
$TIER48 = substr($TIER48, 0, 48);

my $NGX = nginx_start(workers => 1, http => <<"EOF");
    tenant_database         "%%PG%%" pool=2 timeout=3s;
    tenant_cache            zone=tenants:512k ttl=60s negative_ttl=10m;
    tenant_token_cache      zone=tokens:4m;
    tenant_jwks_file        %%JWKS%%;
    tenant_signing_key      0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d;
    tenant_tier             starter features=api;
    tenant_tier             $TIER48 features=api;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            add_header X-T "\$tenant_id|\$tenant_slug|\$tenant_schema|\$tenant_tier|\$tenant_status|\$tenant_org_id" always;
            proxy_pass     http://%%ECHO%%;
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF

error_log_allow(
    qr/\[warn\].*tenant: the tenants row of organization "org_089_long" is too long to be cached/,
);

# rows cached before the listener is up are looked up again when it is
my ($up) = retry_until(10, sub { error_log() }, sub { $_[0] =~ /listening for tenant changes/ });
like $up, qr/listening for tenant changes/, 'the listener is up';

my $LOG = dirname(sql_value('SHOW data_directory')) . '/postgres.log';
sql(q{ALTER SYSTEM SET log_statement = 'all'});
sql('SELECT pg_reload_conf()');
sleep 0.2;

sub queries {
    my ($org, $from) = @_;
    open my $fh, '<', $LOG or die "$LOG: $!";
    seek $fh, $from, 0;
    my @l = grep { /parameters: \$1 = '\Q$org\E'/ } <$fh>;
    return scalar @l;
}

sub metric {
    my ($name) = @_;
    my $r = http(path => '/metrics');
    return $r->{body} =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

my %TOKEN;
sub gw {
    my ($org) = @_;
    my $r = http(path => '/api/things',
                 headers => [Authorization => 'Bearer ' . ($TOKEN{$org} //= mint_token(org => $org)),
                             'X-Organization-ID' => $org]);
    return ($r->{status}, ($r->{headers}{'x-t'} || [])->[0] // '');
}

sub expected {
    my ($org) = @_;
    my ($row) = sql(q{SELECT id::text AS id, slug, schema_name, subscription_tier,
                             subscription_status, clerk_organization_id
                      FROM public.tenants WHERE clerk_organization_id = $1}, $org);
    return join '|', @$row{qw(id slug schema_name subscription_tier subscription_status
                              clerk_organization_id)};
}


# --- round trip --------------------------------------------------------------

my $SLUG63 = 'a' . ('-b1c2d3e4f' x 6) . 'z';            # 63, with dashes
my $ORG128 = 'org_' . ('x' x 124);

my @CASES = (
    [ 'slug of 63, schema tenant_<slug>',
      { org => 'org_089_slug63_0123456789abcde', slug => $SLUG63 } ],
    [ 'schema of 63, not tenant_<slug>', { org => 'org_089_schema63', slug => 'ab1' },
      'tenant_' . ('s' x 56) ],
    [ "tier of 48, past_due", { org => 'org_089_tier48', slug => 'tier-48', tier => $TIER48,
                               status => 'past_due' } ],
    [ 'organization id of 128', { org => $ORG128, slug => 'org-128' } ],
);

for my $c (@CASES) {
    my ($what, $a, $schema) = @$c;
    my $t = create_tenant(status => 'active', %$a);
    if ($schema) {
        sql(q{UPDATE public.tenants SET schema_name = $1 WHERE id = $2}, $schema, $t->{id});
    }
    my $org = $a->{org};
    sleep 0.3;                  # the log has the test's own statements
    my $from = -s $LOG;
    my ($st1, $x1) = gw($org);
    my ($st2, $x2) = gw($org);
    sleep 0.3;
    is queries($org, $from), 1, "round trip, $what: ... cached (one query)";
    my $want = expected($org);
    is "$st1 $x1", "200 $want", "round trip, $what: from the database";
    is "$st2 $x2", "200 $want", "round trip, $what: from the cache, every field the same";
}

{
    my $t = create_tenant(org => 'org_089_trial', slug => 'trial-089', status => 'trial',
                          trial_ends_at => 3);
    sleep 0.3;
    my $from = -s $LOG;
    my ($st) = gw('org_089_trial');
    is $st, 200, 'trial end: a trial that ends in 3 s, admitted (cached)';
    sleep 3.5;
    ($st) = gw('org_089_trial');
    is $st, 402, 'trial end: refused once it ended, from the cache (trial_ends_at kept)';
    is queries('org_089_trial', $from), 1, 'trial end: ... one query in all';
}


# --- long key ----------------------------------------------------------------

{
    my $mark = log_mark();
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended'
          WHERE clerk_organization_id = $1}, $ORG128);
    my ($st) = retry_until(3, sub { (gw($ORG128))[0] }, sub { $_[0] == 403 }, 0.1);
    is $st, 403, 'long key: the change of the 128-byte organization reached its entry at once (ttl=60s)';
}


# --- too long ----------------------------------------------------------------

{
    my $org = 'org_089_long';
    create_tenant(org => $org, slug => 'z' . ('-y1x2w3v4u' x 6) . 'q', tier => $TIER48,
                  status => 'active');
    sleep 0.3;
    my $from = -s $LOG;
    my $mark = log_mark();
    my @r = map { join ' ', gw($org) } 1 .. 3;
    sleep 0.3;
    is queries($org, $from), 3, 'too long: not cached (a query per request)';
    my $want = expected($org);
    is_deeply \@r, [("200 $want") x 3], 'too long: served right, every field';
    like error_log(since => $mark), qr/\[warn\].*"org_089_long" is too long to be cached \(\d+ bytes of text, 117 fit\)/,
        'too long: a warning says so';
}


# --- fill --------------------------------------------------------------------

sub send_all {
    my (@orgs) = @_;
    my @s;
    for my $org (@orgs) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $NGX->{port})
            or die "connect: $!";
        my $tok = $TOKEN{$org} //= mint_token(org => $org);
        syswrite $s, "GET /api/things HTTP/1.0\r\nHost: localhost\r\n"
                     . "Authorization: Bearer $tok\r\nX-Organization-ID: $org\r\n\r\n";
        push @s, $s;
    }
    my %st;
    my $sel = IO::Select->new(@s);
    my %buf;
    my $until = time + 30;
    while ($sel->count && time < $until) {
        for my $s ($sel->can_read(1)) {
            my $n = sysread $s, my $chunk, 65536;
            if ($n) { $buf{fileno $s} .= $chunk } else { $sel->remove($s) }
        }
    }
    for (@s) {
        my ($code) = ($buf{fileno $_} // '') =~ m{^HTTP/1\.\d (\d+)};
        $st{$code // 'none'}++;
        close $_;
    }
    return \%st;
}

{
    my %st;
    my $e0 = 0;
    for my $batch (0 .. 14) {
        my $st = send_all(map { "org_089_fill_${batch}_$_" } 1 .. 200);
        $st{$_} += $st->{$_} for keys %$st;
    }
    is_deeply \%st, { 403 => 3000 }, 'fill: 3,000 unknown organizations, 403 each';
    my $entries = metric('tenant_cache_entries{cache="tenant"}');
    my $ev = metric('tenant_cache_evictions_total{cache="tenant"}');
    my $per_mb = $entries * 2;
    diag "fill: a 512k zone holds $entries entries ($per_mb a MB, "
        . int(512 * 1024 / $entries) . " bytes an entry with the zone's overhead); $ev evicted";
    ok $ev > 0, 'fill: the zone is full (entries were evicted)';
    cmp_ok $per_mb, '>=', 3125, 'fill: >= 3,125 entries a MB (100,000 in 32 MB)';
}

sql(q{ALTER SYSTEM RESET log_statement});
sql('SELECT pg_reload_conf()');

done_testing();
