#!/usr/bin/perl
# `make smoke` (scripts/smoke.sh, the deployment guide's Step 4 and
# Step 5) against the shipped configuration: conf/nginx.conf.template
# rendered by scripts/render-conf.sh from the guide's environment, with
# the demo upstream, a throwaway PostgreSQL and a real key.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Time::HiRes qw(sleep);

my $root = project_root();
my $pg   = pg_start();
my $keys = jwt_keys();

my %base = (
    DATABASE_URL   => $pg->{url},
    ENCRYPTION_KEY => '0123456789abcdef' x 4,
    CRON_SECRET    => 'c' x 40,
    LOG_LEVEL      => $ENV{SMOKE_LOG_LEVEL} || 'info',
    TENANT_MODULE  => $TenantTest::MODULE,
);
my $nginx = $TenantTest::NGINX;     # NGINX and TENANT_MODULE: make test-asan

# Clerk's keys fetched at run time (CLERK_SECRET_KEY + CLERK_JWKS_URL):
# a JWKS endpoint of our own that wants the secret as bearer.
my $SK   = 'sk_test_' . ('Zq7' x 12);
my $HITS = TenantTest::tmpdir() . '/jwks-hits';
my $jwks = echo_start(handler => sub {
    my ($req) = @_;
    my $auth = $req->{headers}{authorization}[0] // '';
    open my $fh, '>>', $HITS or die "$HITS: $!";
    print $fh "$req->{method} $req->{uri} $auth\n";
    close $fh;
    return (401, [], '{"errors":[]}') if $auth ne "Bearer $SK";
    return (200, ['Content-Type' => 'application/json'], $keys->{jwks_json});
});

shipped('PEM key (CLERK_JWT_KEY)', {
    CLERK_JWT_KEY => scalar do { local (@ARGV, $/) = $keys->{rsa_pub}; <> },
}, {});

shipped('keys from a JWKS URL (CLERK_SECRET_KEY, CLERK_JWKS_URL)', {
    CLERK_SECRET_KEY => $SK,
    CLERK_JWKS_URL   => "http://127.0.0.1:$jwks->{port}/v1/jwks",
}, { JWT_KID => 'rsa-1' });

my @hits = do { local @ARGV = $HITS; <> };
ok @hits >= 1 && @hits <= 2, 'the JWKS was fetched once or twice (workers)'
    or diag @hits;
like $hits[0] // '', qr{^GET /v1/jwks Bearer \Q$SK\E$}, '... GET, with the secret';

sub shipped {
    my ($label, $set, $smoke_env) = @_;

    my $dir  = TenantTest::tmpdir() . '/shipped' . (keys(%$smoke_env) ? 2 : 1);
    my $port = free_port();
    my %env  = (%base, %$set, PORT => $port, DEMO_PORT => free_port(),
                RUN_DIR => $dir);

    note "---- the shipped configuration: $label";

    my $conf = "$dir/nginx.conf";
    my ($out) = TenantTest::run_cmd(\%env, "$root/scripts/render-conf.sh", $conf);
    ok -s $conf, 'the shipped configuration renders';

    # stdout and stderr of the daemonized nginx go to files of the test dir
    TenantTest::run_cmd({}, $nginx, '-p', $dir, '-c', $conf, '-t');
    system("$nginx -p '$dir' -c '$conf' -g 'daemon on;' "
           . ">'$dir/stdout.log' 2>'$dir/stderr.log'") == 0
        or BAIL_OUT("nginx with the shipped configuration did not start");

    my $pid;
    for (1 .. 50) {
        last if -s "$dir/nginx.pid" && IO::Socket::INET->new("127.0.0.1:$port");
        sleep 0.1;
    }
    chomp($pid = do { local (@ARGV, $/) = "$dir/nginx.pid"; <> } // '');
    ok $pid, "the gateway runs (pid $pid)";

    my ($smoke, $err) = eval {
        TenantTest::run_cmd({ BASE_URL => "http://127.0.0.1:$port",
                              JWT_KEY => $keys->{rsa_key}, %$smoke_env },
                            "$root/scripts/smoke.sh");
    };
    $smoke //= $@;
    diag $smoke;

    like $smoke, qr/^6 passed, 0 failed$/m, 'make smoke: every step passes';
    for my $step ('health: /api/health',
                  'create the smoke-test tenant (professional)',
                  'query tenant data: /api/products',
                  'professional reaches /api/forecasts/ai',
                  'starter gets 403 with an upgrade URL')
    {
        like $smoke, qr/^pass  \Q$step\E/m, "smoke: $step";
    }

    # run twice: the tenants exist already (409), everything still passes
    ($smoke) = eval {
        TenantTest::run_cmd({ BASE_URL => "http://127.0.0.1:$port",
                              JWT_KEY => $keys->{rsa_key}, %$smoke_env },
                            "$root/scripts/smoke.sh");
    };
    like $smoke // $@, qr/^6 passed, 0 failed$/m, 'make smoke twice: still passes';

    # a request line nginx refuses itself (%00 in the path) has no URI:
    # its 400 must still be the problem+json one, not a 500
    my $r = http(port => $port, path => '/api/forecasts/ai%00');
    is $r->{status}, 400, 'a request line nginx refuses: 400'
        or diag $r->{body};
    is $r->{json}{title}, 'Bad Request', '... as problem+json';

    is sql_value(q{SELECT count(*) FROM public.tenants
                   WHERE slug IN ('smoke-test-001', 'smoke-starter-001')}), 2,
        'the smoke tenants exist once each';

    kill 'QUIT', $pid if $pid;
    for (1 .. 50) { last unless $pid && kill 0, $pid; sleep 0.1 }

    my $log = do { local (@ARGV, $/) = "$dir/stderr.log"; <> } // '';
    unlike $log, qr/\[(alert|emerg|crit)\]|signal 11|AddressSanitizer/,
        'the shipped gateway logged no alert, crit or crash';
}

done_testing();
