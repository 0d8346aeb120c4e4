#!/usr/bin/perl
# `make smoke` (scripts/smoke.sh, the deployment guide's Step 4 and
# Step 5) against the shipped configuration: conf/nginx.conf.template
# rendered by scripts/render-conf.sh from the guide's environment, with
# the demo upstream, a throwaway PostgreSQL and a real key; then with
# given tokens (the organization ids read from them, Clerk v1 and v2) and
# with SMOKE_ORG_* over minted tokens.

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
my $jwks = clerk_jwks_start(secret => $SK, jwks => $keys->{jwks_json});
my $HITS = $jwks->{hits};

shipped('PEM key (CLERK_JWT_KEY)', {
    CLERK_JWT_KEY => scalar do { local (@ARGV, $/) = $keys->{rsa_pub}; <> },
}, {});

shipped('keys from a JWKS URL (CLERK_SECRET_KEY, CLERK_JWKS_URL)', {
    CLERK_SECRET_KEY => $SK,
    CLERK_JWKS_URL   => "http://127.0.0.1:$jwks->{port}/v1/jwks",
    TEST_ONLY_CLERK_SECRET_TO_LOOPBACK => 1,    # a fake Clerk
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

    # stdout and stderr of the daemonized nginx go to files of the test dir;
    # the blocking-call guard is preloaded as the harness does
    TenantTest::run_cmd({}, $nginx, '-p', $dir, '-c', $conf, '-t');
    {
        local @ENV{keys %{ TenantTest::_nginx_env() }}
            = values %{ TenantTest::_nginx_env() };
        system("$nginx -p '$dir' -c '$conf' -g 'daemon on;' "
               . ">'$dir/stdout.log' 2>'$dir/stderr.log'") == 0
            or BAIL_OUT("nginx with the shipped configuration did not start");
    }

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

    like $smoke, qr/^7 passed, 0 failed$/m, 'make smoke: every step passes';
    for my $step ('health: /api/health',
                  'create the smoke-test tenant (professional)',
                  'query tenant data: /api/products',
                  'professional reaches /api/forecasts/ai',
                  'starter gets 403 with an upgrade URL')
    {
        like $smoke, qr/^pass  \Q$step\E/m, "smoke: $step";
    }

    # run twice: the tenants exist already (200, a retry), everything still passes
    ($smoke) = eval {
        TenantTest::run_cmd({ BASE_URL => "http://127.0.0.1:$port",
                              JWT_KEY => $keys->{rsa_key}, %$smoke_env },
                            "$root/scripts/smoke.sh");
    };
    like $smoke // $@, qr/^7 passed, 0 failed$/m, 'make smoke twice: still passes';

    # a request line nginx refuses itself (%00 in the path) has no URI:
    # its 400 must still be the problem+json one, not a 500
    my $r = http(port => $port, path => '/api/forecasts/ai%00');
    is $r->{status}, 400, 'a request line nginx refuses: 400'
        or diag $r->{body};
    is $r->{json}{title}, 'Bad Request', '... as problem+json';

    is sql_value(q{SELECT count(*) FROM public.tenants
                   WHERE slug IN ('smoke-test-001', 'smoke-starter-001')}), 2,
        'the smoke tenants exist once each';

    # Tokens as Clerk issues them, given instead of JWT_KEY: the
    # organization ids come from the tokens (v2 "o":{"id"}, v1 "org_id"),
    # not from the script; then from SMOKE_ORG_* over minted tokens.
    my %kid = $smoke_env->{JWT_KID} ? (kid => $smoke_env->{JWT_KID}) : ();
    my $admin = mint_token(%kid, sub => 'user_smoke_admin', metadata => { role => 'admin' });
    my $purge = sub {
        for my $slug ('smoke-test-001', 'smoke-starter-001') {
            my $r = http(port => $port, method => 'DELETE',
                         path => "/api/admin/tenants/$slug?purge=true",
                         headers => [Authorization => "Bearer $admin"]);
            is $r->{status}, 200, "purge $slug: 200";
        }
    };
    my %orgs = (PRO => 'org_2Nf8ZkQpSmokePro', STARTER => 'org_2Nf8ZkQpSmokeStarter');

    $purge->();
    ($smoke) = eval {
        TenantTest::run_cmd({ BASE_URL => "http://127.0.0.1:$port",
                              JWT_KEY => '/nonexistent',
                              ADMIN_TOKEN => $admin,
                              TENANT_TOKEN => mint_token(%kid, sub => 'user_smoke', v => 2,
                                                         org => { id => $orgs{PRO}, role => 'admin' }),
                              STARTER_TOKEN => mint_token(%kid, sub => 'user_smoke_starter',
                                                          org => $orgs{STARTER}) },
                            "$root/scripts/smoke.sh");
    };
    $smoke //= $@;
    like $smoke, qr/^7 passed, 0 failed$/m,
        'make smoke with given tokens (v2 and v1): every step passes' or diag $smoke;
    is_deeply [map { $_->{clerk_organization_id} }
               sql(q{SELECT clerk_organization_id FROM public.tenants
                     WHERE slug IN ('smoke-test-001', 'smoke-starter-001') ORDER BY slug})],
        [$orgs{STARTER}, $orgs{PRO}], '... the tenants have the tokens\' organizations';

    $purge->();
    ($smoke) = eval {
        TenantTest::run_cmd({ BASE_URL => "http://127.0.0.1:$port",
                              JWT_KEY => $keys->{rsa_key}, %$smoke_env,
                              SMOKE_ORG_PROFESSIONAL => "$orgs{PRO}_env",
                              SMOKE_ORG_STARTER => "$orgs{STARTER}_env" },
                            "$root/scripts/smoke.sh");
    };
    $smoke //= $@;
    like $smoke, qr/^7 passed, 0 failed$/m,
        'make smoke with SMOKE_ORG_* (minted tokens): every step passes' or diag $smoke;
    is sql_value(q{SELECT count(*) FROM public.tenants
                   WHERE clerk_organization_id IN ($1, $2)}, "$orgs{PRO}_env",
                 "$orgs{STARTER}_env"), 2, '... the tenants have those organizations';

    # back to the script's own ids for the next configuration
    $purge->();

    kill 'QUIT', $pid if $pid;
    for (1 .. 50) { last unless $pid && kill 0, $pid; sleep 0.1 }

    my $log = do { local (@ARGV, $/) = "$dir/stderr.log"; <> } // '';
    unlike $log, qr/\[(alert|emerg|crit)\]|signal 11|AddressSanitizer/,
        'the shipped gateway logged no alert, crit or crash';
    is_deeply [TenantTest::blocking_calls($log)], [],
        'the shipped gateway\'s workers made no blocking call (the guard)';
}

done_testing();
