#!/usr/bin/perl
# Graceful operations: nginx -s reload under load drops no request, new
# keys apply without a restart, nginx -s quit finishes in-flight requests.
#
#   1   wrk runs against the gateway (2 workers) while nginx is reloaded
#       4 times with changed tiers, an added key and a changed tenant
#       cache ttl: every response is a 2xx, no socket errors
#   2   a kid-less token signed by the EC key, refused while only the
#       JWKS is configured, is admitted after the reload that added
#       tenant_jwt_key %%EC_PUB%%
#   3   QUIT while 5 requests wait on a slow upstream: all 5 get their 200

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use File::Temp  ();
use POSIX       ();
use Time::HiRes qw(time sleep);

my $WRK = '/usr/bin/wrk';
plan skip_all => "wrk is not installed" unless -x $WRK;

my $SIGNING_KEY = '0123456789abcdef' x 4;
my $TMP = File::Temp::tempdir('t110-XXXXXX', TMPDIR => 1, CLEANUP => 1);

pg_start();
my $t   = create_tenant(tier => 'professional', status => 'active');
my $org = $t->{clerk_organization_id};
my $token = mint_token(org => $org);

# An upstream that answers after 1 s (case 3).
my $slow = echo_start(workers => 5, handler => sub {
    sleep 1;
    return (200, ['Content-Type' => 'text/plain'], 'slow');
});

# The gateway proxies /api/ to a `return 200` server in the same nginx
# (%%PORT2%%): fast, and reloaded along with the rest.
#   %%TIERS%%  tenant_tier lines    %%KEYS%%  key directives
#   %%TTL%%    the tenant cache ttl
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" pool=4 timeout=3s;
    tenant_cache        zone=tenants:1m ttl=%%TTL%%;
    tenant_token_cache  zone=tokens:1m;
    tenant_signing_key  $SIGNING_KEY;
%%KEYS%%
%%TIERS%%

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://127.0.0.1:%%PORT2%%;
        }

        location /slow/ {
            tenant_gateway on;
            proxy_pass     http://$slow->{addr};
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        access_log off;
        location / {
            return 200 "ok";
        }
    }
EOF

my %BASE = (
    ttl   => '60s',
    keys  => "    tenant_jwks_file    %%JWKS%%;",
    tiers => "    tenant_tier starter      features=api;\n"
           . "    tenant_tier professional features=api,reports;\n",
);

sub http_conf {
    my (%o) = (%BASE, @_);
    return $HTTP =~ s/%%TTL%%/$o{ttl}/r
                 =~ s/%%KEYS%%/$o{keys}/r
                 =~ s/%%TIERS%%/$o{tiers}/r;
}

# The reloads of case 1, in order; each one keeps the previous changes.
my @STEPS = (
    # a tier added
    [tiers => "    tenant_tier starter      features=api;\n"
            . "    tenant_tier professional features=api,reports;\n"
            . "    tenant_tier enterprise   features=*;\n"],
    # tiers reordered
    [tiers => "    tenant_tier enterprise   features=*;\n"
            . "    tenant_tier professional features=api,reports;\n"
            . "    tenant_tier starter      features=api;\n"],
    # a key added: a PEM without kid besides the JWKS
    [keys  => "    tenant_jwks_file    %%JWKS%%;\n"
            . "    tenant_jwt_key      %%EC_PUB%%;"],
    # the tenant cache ttl changed
    [ttl   => '30s'],
);

my $ngx = nginx_start(workers => 2, http => http_conf());

sub api {
    my ($tok, $path) = @_;
    return http(path => $path // '/api/x',
                headers => [Authorization => "Bearer $tok"]);
}

my $r = api($token);
is $r->{status}, 200, 'the professional tenant is admitted (and cached)';
is $r->{body}, 'ok', 'answered by the return-200 server';

# Kid-less, signed by the EC key: only a kid-less PEM key verifies it.
my $ec_token = mint_token(org => $org, key => 'ec', kid => undef);
$r = api($ec_token);
is $r->{status}, 401, 'a kid-less EC token is refused with only the JWKS';


# --- 1: reloads under load --------------------------------------------------

{
    # Connection: close makes wrk open a new connection per request.  With
    # keep-alive, an old worker closes its idle keep-alive connections at
    # a reload; a request wrk has just sent on such a connection is lost in
    # the race and counted as a read error, though no request nginx
    # accepted was dropped (clients retry idempotent requests on such a
    # close).  What this case tests is that every request nginx accepts
    # during a reload gets its answer.
    my $out = "$TMP/wrk.out";
    my $url = "http://127.0.0.1:$ngx->{port}/api/x";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec { $WRK } $WRK, '-t2', '-c16', '-d8s', '-H', "Authorization: Bearer $token",
             '-H', 'Connection: close', $url; }
        { no warnings; POSIX::_exit(127) }
    }

    my %conf;
    my $alive_after_last;       # the last reload happened under load
    my $start = time;
    sleep 1;
    for my $i (0 .. $#STEPS) {
        %conf = (%conf, @{ $STEPS[$i] });
        eval { nginx_reload(http => http_conf(%conf)); 1 }
            or fail("reload $i: $@");
        $alive_after_last = waitpid($pid, POSIX::WNOHANG()) == 0
            if $i == $#STEPS;
        sleep 1.5;
    }
    %BASE = (%BASE, %conf);

    ok $alive_after_last, 'wrk was still running after the last reload';
    waitpid $pid, 0 if $alive_after_last;
    is $?, 0, 'wrk exited 0';
    my $text = do { local (@ARGV, $/) = $out; <> } // '';
    note $text;

    my ($req) = $text =~ /(\d+) requests in/;
    my ($non2xx) = $text =~ /Non-2xx or 3xx responses:\s*(\d+)/;
    my @sock = $text =~ /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/;
    @sock = (0, 0, 0, 0) unless @sock;
    $non2xx //= 0;

    ok defined $req && $req > 1000, 'wrk: more than 1000 requests'
        or diag $text;
    is $non2xx, 0, 'wrk: no non-2xx response during the reloads';
    is_deeply \@sock, [0, 0, 0, 0],
        'wrk: no connect, read, write or timeout error';
    note sprintf 'wrk: %s requests, %d non-2xx, socket errors %s, %.1f s',
        $req // '?', $non2xx, "@sock", time - $start;

    $r = api($token);
    is $r->{status}, 200, 'still admitted after the reloads';
}


# --- 2: the key added by a reload applies --------------------------------------

$r = api($ec_token);
is $r->{status}, 200, 'the kid-less EC token is admitted after the reload'
    or diag explain $r;


# --- 3: QUIT finishes in-flight requests -------------------------------------

{
    my @kids;
    for my $i (1 .. 5) {
        my $out = "$TMP/slow.$i";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $res = api($token, "/slow/$i");
            open my $fh, '>', $out or POSIX::_exit(1);
            print $fh "$res->{status} " . ($res->{body} // '') . "\n";
            close $fh;
            POSIX::_exit(0);
        }
        push @kids, [$pid, $out];
    }

    # Wait until the upstream has the requests (they take 1 s each; the
    # echo server has 5 processes: they all finish about 1 s after sending).
    sleep 0.5;
    my $start = time;
    ok kill('QUIT', $ngx->{pid}), 'QUIT sent to the master';

    waitpid $_->[0], 0 for @kids;
    my @got = map { my $s = do { local (@ARGV, $/) = $_->[1]; <> } // '';
                    chomp $s; $s } @kids;
    is_deeply \@got, [('200 slow') x 5],
        'all 5 in-flight requests completed with 200 after QUIT';

    my $deadline = time + 10;
    sleep 0.05 while kill(0, $ngx->{pid}) && time < $deadline;
    ok !kill(0, $ngx->{pid}), 'the master exited after QUIT';
    note sprintf 'QUIT to exit: %.1f s', time - $start;
}

done_testing();
