#!/usr/bin/env perl
# render.yaml, the Render Blueprint, against Render's Blueprint
# specification (https://render.com/docs/blueprint-spec, read 2026-12-06:
# the fields, plans and properties below are the ones it documents) and
# against the gateway it deploys: every variable it sets is one the
# scripts read, its values pass scripts/render-conf.sh as Render hands
# them over (generated secrets are base64, PORT is 10000, RENDER=true),
# the pre-deploy command exists in the image and applies the migrations,
# the shutdown delay leaves the drain its margin, and the health check
# path stays 200 while PostgreSQL is down.

use strict;
use warnings;

use FindBin      qw($Bin);
use lib          "$Bin/lib";
use TenantTest;
use File::Path   qw(make_path);
use MIME::Base64 qw(encode_base64);
use POSIX        qw(WNOHANG);
use Time::HiRes  qw(sleep time);
use Test::More;

my $root   = project_root();
my $module = $ENV{TENANT_MODULE} || "$root/build/nginx/objs/ngx_tenant_module.so";

eval { require YAML::XS; 1 }
    or plan skip_all => 'YAML::XS missing (libyaml-libyaml-perl; make deps)';
plan skip_all => "$module not built (make module)" unless -f $module;

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or die "$path: $!";
    local $/;
    return scalar <$f>;
}

my $y = YAML::XS::LoadFile("$root/render.yaml");
my @svc = @{ $y->{services} || [] };
my ($web)   = grep { ($_->{type} // '') eq 'web' } @svc;
my ($cronj) = grep { ($_->{type} // '') eq 'cron' } @svc;
my ($kv)    = grep { ($_->{type} // '') eq 'keyvalue' } @svc;
my ($db)    = @{ $y->{databases} || [] };
ok $web,   'a web service';
ok $cronj, 'a cron job';
ok $db,    'a database';
ok $kv,    'a Key Value instance';


# ---- the specification's fields ------------------------------------------

my %root_fields = map { $_ => 1 } qw(services databases envVarGroups projects
                                     ungrouped previews);
my %service_fields = map { $_ => 1 } qw(name type runtime plan previews
    buildCommand startCommand schedule preDeployCommand region repo branch
    autoDeployTrigger domains healthCheckPath maxShutdownDelaySeconds
    dockerCommand dockerfilePath dockerContext registryCredential image
    numInstances scaling buildFilter rootDir disk envVars ipAllowList
    maxmemoryPolicy previewPlan);
my %db_fields = map { $_ => 1 } qw(name plan previewPlan diskSizeGB
    previewDiskSizeGB region ipAllowList postgresMajorVersion databaseName
    user readReplicas highAvailability);
my %env_fields = map { $_ => 1 } qw(key value generateValue sync
                                    fromDatabase fromService fromGroup);
my %service_plans = map { $_ => 1 } ('free', 'starter', 'standard', 'pro',
    'pro plus', 'pro max', 'pro ultra');
my %db_plans = map { $_ => 1 } qw(free basic-256mb basic-1gb basic-4gb
    pro-4gb pro-8gb pro-16gb pro-32gb pro-64gb pro-128gb pro-192gb
    pro-256gb pro-384gb pro-512gb);
my %db_properties = map { $_ => 1 } qw(connectionString host port user
                                       password database);
# fromService's properties by the referenced service's type: host, port
# and hostport of web services and private services, connectionString of
# Key Value (whose host and port the specification's example also reads)
my %svc_properties = (
    web      => { map { $_ => 1 } qw(host port hostport) },
    pserv    => { map { $_ => 1 } qw(host port hostport) },
    keyvalue => { map { $_ => 1 } qw(connectionString host port) },
);
# a Key Value instance's fields: no runtime, no build, no envVars
my %kv_fields = map { $_ => 1 } qw(name type plan previewPlan region
                                   ipAllowList maxmemoryPolicy);
my %kv_policies = map { $_ => 1 } qw(allkeys-lru volatile-lru allkeys-random
                                     volatile-random volatile-ttl noeviction);

is_deeply [grep { !$root_fields{$_} } sort keys %$y], [],
    'root: only fields of the specification';
for my $s (@svc) {
    is_deeply [grep { !$service_fields{$_} } sort keys %$s], [],
        "$s->{name}: only fields of the specification";
    ok !defined $s->{plan} || $service_plans{$s->{plan}},
        "$s->{name}: a plan of the specification";
    for my $e (@{ $s->{envVars} || [] }) {
        my $k = $e->{key} // $e->{fromGroup} // '?';
        is_deeply [grep { !$env_fields{$_} } sort keys %$e], [],
            "$s->{name}: $k: only envVar fields";
        my @how = grep { exists $e->{$_} }
                  qw(value generateValue sync fromDatabase fromService);
        is scalar @how, 1, "$s->{name}: $k: one source of value (@how)";
        ok !ref $e->{value}, "$s->{name}: $k: a string value"
            if exists $e->{value};
        if (my $fd = $e->{fromDatabase}) {
            is $fd->{name}, $db->{name}, "$k: the Blueprint's database";
            ok $db_properties{ $fd->{property} // '' }, "$k: a database property";
        }
        if (my $fs = $e->{fromService}) {
            my ($other) = grep { $_->{name} eq ($fs->{name} // '') } @svc;
            ok $other && $other->{type} eq $fs->{type},
                "$k: fromService names a service of the Blueprint and its type";
            my $prop = $fs->{property} && $other
                && $svc_properties{$other->{type}}{$fs->{property}};
            ok !!$prop != !!defined $fs->{envVarKey},
               "$k: a property or an envVarKey";
        }
    }
}
is_deeply [grep { !$db_fields{$_} } sort keys %$db], [],
    'database: only fields of the specification';
ok $db_plans{ $db->{plan} // '' }, "database: a current plan ($db->{plan})";
like $db->{postgresMajorVersion} // '', qr/^1[3-7]$/,
    'database: postgresMajorVersion a string the platform offers';
is ref $db->{ipAllowList}, 'ARRAY', 'database: ipAllowList set';
is_deeply $db->{ipAllowList}, [], '... to the private network only';


# ---- the web service against the gateway --------------------------------

is $web->{runtime}, 'docker', 'web: runtime docker';
is $web->{dockerfilePath}, './Dockerfile', 'web: the Dockerfile';
ok $web->{plan} && $web->{plan} ne 'free',
    'web: a paid plan (the pre-deploy command needs one)';

my %ev = map { $_->{key} => $_ } grep { $_->{key} } @{ $web->{envVars} };

# Every variable set is one the image's scripts read: a misspelt name
# would be set on Render and silently ignored.
my $scripts = join '', map { slurp("$root/scripts/$_") }
                       qw(entrypoint.sh render-conf.sh cpu-count.sh migrate.sh);
for my $k (sort keys %ev) {
    ok $scripts =~ /\b\Q$k\E\b/, "web: $k is read by the image's scripts";
}
for my $k (qw(CLERK_JWT_KEY CLERK_SECRET_KEY ENCRYPTION_KEY)) {
    ok exists $ev{$k}{sync} && !$ev{$k}{sync}, "web: $k sync: false (a secret)";
}
ok $ev{CRON_SECRET}{generateValue},   'web: CRON_SECRET generated';
ok $ev{METRICS_TOKEN}{generateValue}, 'web: METRICS_TOKEN generated';
is $ev{DATABASE_URL}{fromDatabase}{property}, 'connectionString',
    'web: DATABASE_URL is the database\'s internal connection string';

# Migrations: the pre-deploy command, not every instance's start.
my $pre = $web->{preDeployCommand} // '';
like $pre, qr{^/srv/gateway/scripts/migrate\.sh$}, 'web: preDeployCommand migrate.sh';
is $ev{MIGRATE_ON_START}{value}, '0', 'web: MIGRATE_ON_START=0 with a pre-deploy command';
my $dockerfile = slurp("$root/Dockerfile");
like $dockerfile, qr{^COPY [^\n]*\bscripts/migrate\.sh\b[^\n]* /srv/gateway/scripts/$}m,
    'the image holds scripts/migrate.sh at the pre-deploy path';
ok -x "$root/scripts/migrate.sh", 'migrate.sh is executable';

# Shutdown: Render's SIGKILL after maxShutdownDelaySeconds; the drain
# (SHUTDOWN_TIMEOUT) must end before, with a margin for nginx's exit.
my $delay = $web->{maxShutdownDelaySeconds};
ok defined $delay && $delay =~ /^\d+$/ && $delay >= 1 && $delay <= 300,
    'web: maxShutdownDelaySeconds in 1..300';
my $drain = $ev{SHUTDOWN_TIMEOUT}{value};
ok defined $drain && $drain =~ /^\d+$/ && $drain + 3 <= $delay,
    "web: SHUTDOWN_TIMEOUT ($drain s) at least 3 s below the delay ($delay s)";


# ---- the Key Value instance, the global rate limits --------------------------

is_deeply [grep { !$kv_fields{$_} } sort keys %$kv], [],
    'keyvalue: only the fields of a Key Value instance (no runtime)';
is ref $kv->{ipAllowList}, 'ARRAY', 'keyvalue: ipAllowList set (required)';
is_deeply $kv->{ipAllowList}, [], '... to the private network only';
ok $kv_policies{ $kv->{maxmemoryPolicy} // '' },
    'keyvalue: maxmemoryPolicy one of the specification\'s';
like $kv->{maxmemoryPolicy} // '', qr/^(volatile-|noeviction$)/,
    '... never evicting a key without a TTL';
is $kv->{region}, $web->{region},
    'keyvalue: the gateway\'s region (the private network is per region)';
is_deeply $ev{REDIS_URL}{fromService},
    { type => 'keyvalue', name => $kv->{name}, property => 'connectionString' },
    'web: REDIS_URL is the Key Value instance\'s internal URL';
{
    my $n = $web->{scaling} ? $web->{scaling}{maxInstances} : $web->{numInstances} // 1;
    is $ev{REDIS_INSTANCES}{value}, "$n",
        "web: REDIS_INSTANCES is the most instances the service runs ($n)";
}

# ---- the cron job ----------------------------------------------------------

like $cronj->{dockerCommand} // '',
    qr{POST.*Authorization: Bearer \$CRON_SECRET.*/api/cron/expire-trials}s,
    'cron: POSTs /api/cron/expire-trials with the bearer CRON_SECRET';
my %cev = map { $_->{key} => $_ } @{ $cronj->{envVars} || [] };
is $cev{CRON_SECRET}{fromService}{envVarKey}, 'CRON_SECRET', 'cron: CRON_SECRET from the gateway';
is $cev{CRON_SECRET}{fromService}{name}, $web->{name}, 'cron: that gateway';
is $cev{GATEWAY_HOSTPORT}{fromService}{property}, 'hostport',
    'cron: the gateway\'s private host:port';
like $cronj->{image}{url} // '', qr{^docker\.io/[^:]+:[0-9][\w.]*$},
    'cron: a pinned image';


# ---- the Blueprint's environment, as Render hands it over ----------------

my $pg   = pg_start(migrate => 0);
my $keys = jwt_keys();
my $tmp  = TenantTest::tmpdir();
my $echo = echo_start();

# The database: migrations by the pre-deploy command, with nothing but
# the Blueprint's DATABASE_URL.
{
    my ($out, $err) = TenantTest::run_cmd({ DATABASE_URL => $pg->{url} }, $pre =~ s{^/srv/gateway}{$root}r);
    like $out . $err, qr/applied/, 'the pre-deploy command applies the migrations';
    my ($again) = TenantTest::run_cmd({ DATABASE_URL => $pg->{url} }, $pre =~ s{^/srv/gateway}{$root}r);
    unlike $again, qr/^migrate: applied /m, '... and nothing on the next deploy';
    # Through the image's ENTRYPOINT, as a platform may run it.
    my ($via) = TenantTest::run_cmd({ DATABASE_URL => $pg->{url} },
        "$root/scripts/entrypoint.sh", $pre =~ s{^/srv/gateway}{$root}r);
    like $via, qr/^migrate: 0 applied, \d+ already applied$/m,
        '... also when passed to the entrypoint';
    ($via) = TenantTest::run_cmd({ DATABASE_URL => $pg->{url} },
        "$root/scripts/entrypoint.sh", 'migrate');
    like $via, qr/^migrate: 0 applied/m, '... or as its "migrate" command';
}

my $port = free_port();
my %env = (
    PATH           => $ENV{PATH},
    RENDER         => 'true',
    RENDER_CPU_COUNT => '0.5',
    PORT           => $port,                  # Render's is 10000
    DATABASE_URL   => $pg->{url},
    CLERK_JWT_KEY  => slurp($keys->{rsa_pub}),
    ENCRYPTION_KEY => 'ab' x 32,
    BACKEND_URL    => "http://127.0.0.1:$echo->{port}",
    MCP_URL        => "http://127.0.0.1:$echo->{port}",
    RUN_DIR        => "$tmp/render-run",
    TENANT_MODULE  => $module,
    NGINX          => $TenantTest::NGINX,
);
for my $k (sort keys %ev) {
    my $e = $ev{$k};
    if (exists $e->{value}) {
        $env{$k} = $e->{value};
    } elsif ($e->{generateValue}) {
        # "a base64-encoded 256-bit value"
        $env{$k} = encode_base64(join('', map { chr int rand 256 } 1 .. 32), '');
    }
}
like $env{CRON_SECRET}, qr{^[A-Za-z0-9+/]{43}=$}, 'a generated value as Render makes it';

{
    local %ENV = %env;
    my $out = `'$root/scripts/entrypoint.sh' --check 2>&1`;
    is $?, 0, "the Blueprint's environment passes the entrypoint's checks"
        or diag $out;
    local $env{PORT} = 10000;
    local %ENV = %env;
    $out = `'$root/scripts/entrypoint.sh' --check 2>&1`;
    is $?, 0, '... also with Render\'s default PORT 10000' or diag $out;
    for my $reserved (18012, 18013, 19099) {
        local $env{PORT} = $reserved;
        local %ENV = %env;
        $out = `'$root/scripts/entrypoint.sh' --check 2>&1`;
        isnt $?, 0, "PORT $reserved, reserved by Render: refused";
        like $out, qr/^render-conf: PORT: $reserved is reserved by Render/m, '... naming it';
    }
}

# REDIS_URL as Render hands it over (the Key Value instance's
# connectionString): redis://red-...:6379, with user "default" and a
# password once internal authentication is on.  render-conf.sh only:
# nginx -t would resolve Render's host name.
for my $url ('redis://red-d4kv8s1ecret0host0:6379',
             'redis://default:Kv8pQ2mZ7xR4tY1wE6uI3oA9sD5fG0hJ@red-d4kv8s1ecret0host0:6379')
{
    local %ENV = (%env, REDIS_URL => $url);
    my $out = `'$root/scripts/render-conf.sh' --deploy '$tmp/kv.conf' 2>&1`;
    is $?, 0, 'REDIS_URL as Render gives it'
        . ($url =~ /\@/ ? ', with internal authentication' : '') . ': rendered'
        or diag $out;
    like -e "$tmp/kv.conf" ? slurp("$tmp/kv.conf") : '',
        qr/^\s*tenant_redis\s+"\Q$url\E" timeout=5ms fallback=local instances=\Q$env{REDIS_INSTANCES}\E;$/m,
        "... tenant_redis, with the Blueprint's REDIS_INSTANCES";
    unlike $out, qr/Kv8pQ2m|red-d4kv/, '... the URL not printed';
}

# With a running Redis (a password, as with internal authentication):
# the entrypoint's checks, then the gateway below, use it.  Until the
# module has tenant_redis, nginx -t refuses it as unknown: skipped for
# that reason only, and the gateway runs without REDIS_URL.
my $redis = redis_start(password => 'kv' . join('', map { ('a'..'z', 0..9)[rand 36] } 1 .. 30));
my $with_redis;
{
    local %ENV = (%env, REDIS_URL => $redis->{url});
    my $out = `'$root/scripts/entrypoint.sh' --check 2>&1`;
    my $rc = $?;
    unlike $out, qr/\Q$redis->{password}\E/, 'REDIS_URL of a running Redis: no password printed';
    SKIP: {
        skip 'tenant_redis is not in the module yet (nginx -t: unknown directive "tenant_redis")', 1
            if $rc != 0 && $out =~ /unknown directive "tenant_redis"/;
        is $rc, 0, "... the Blueprint's environment with it passes the entrypoint's checks"
            or diag $out;
        $with_redis = $rc == 0;
    }
}
$env{REDIS_URL} = $redis->{url} if $with_redis;

# The health check path: 200 while PostgreSQL is up, and while it is
# down (Render would take the instance out of rotation, then restart
# it), when /api/health says "disconnected".
my $pid = fork // die "fork: $!";
if (!$pid) {
    %ENV = %env;
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', "$tmp/render-run.out";
    open STDERR, '>', "$tmp/render-run.err";
    exec "$root/scripts/entrypoint.sh" or POSIX::_exit(127);
}
my $path = $web->{healthCheckPath};
my ($r) = retry_until(15, sub { http(port => $port, path => $path, timeout => 2) },
                     sub { $_[0]{status} == 200 });
is $r->{status}, 200, "$path answers 200 once the gateway is up"
    or diag slurp("$tmp/render-run.err");
SKIP: {
    skip 'the gateway runs without REDIS_URL (no tenant_redis in the module yet)', 1
        unless $with_redis;
    my ($hr) = retry_until(5, sub { http(port => $port, path => '/api/health', timeout => 2) },
                           sub { $_[0]{body} =~ /"redis"\s*:\s*"connected"/ });
    like $hr->{body}, qr/"redis"\s*:\s*"connected"/,
        'with REDIS_URL: /api/health says "redis":"connected"'
        or diag $hr->{body}, slurp("$tmp/render-run.err");
}

pg_stop();
# (a worker reuses its last answer for a second: the one just above)
my ($h) = retry_until(3, sub { http(port => $port, path => '/api/health') },
                      sub { $_[0]{status} == 503 });
is $h->{status}, 503, 'database stopped: /api/health 503';
like $h->{body}, qr/"database"\s*:\s*"disconnected"/, '... "database":"disconnected"';
my $l = http(port => $port, path => $path);
is $l->{status}, 200, "... and Render's check ($path) still 200";

kill 'TERM', $pid;
my $t0 = time;
my $done;
while (time - $t0 < 30) {
    $done = waitpid($pid, WNOHANG) and last;
    sleep 0.05;
}
is $done, $pid, 'SIGTERM: the entrypoint exits';
is $? >> 8, 0, '... with status 0';

done_testing;
