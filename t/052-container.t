#!/usr/bin/env perl
# The container: scripts/entrypoint.sh (validation, nginx -t, migrations,
# nginx in the foreground), scripts/build-module.sh, the Dockerfile's
# consistency with them.  No Docker engine needed: every
# step the Dockerfile runs is one of these scripts.

use strict;
use warnings;

use FindBin      qw($Bin);
use lib          "$Bin/lib";
use TenantTest;
use File::Path   qw(make_path);
use File::Copy   qw(copy);
use HTTP::Tiny   ();
use IO::Select   ();
use Socket       qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use POSIX        qw(WNOHANG);
use Time::HiRes  qw(sleep time);
use Test::More;

my $root   = project_root();
my $entry  = "$root/scripts/entrypoint.sh";
my $module = $ENV{TENANT_MODULE} || "$root/build/nginx/objs/ngx_tenant_module.so";
my $tmp    = TenantTest::tmpdir();

plan skip_all => "$module not built (make module)" unless -f $module;

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or die "$path: $!";
    local $/;
    return scalar <$f>;
}

my $pg   = pg_start(migrate => 0);           # a fresh, bare database
my $keys = jwt_keys();
my $port = free_port();
my $enc  = 'ab' x 32;
my $cron = 'c' x 40;

my %good = (
    DATABASE_URL   => $pg->{url},
    CLERK_JWT_KEY  => slurp($keys->{rsa_pub}),
    ENCRYPTION_KEY => $enc,
    CRON_SECRET    => $cron,
    TENANT_MODULE  => $module,
    NGINX          => $TenantTest::NGINX,   # the pair make test-asan sets
    PORT           => $port,
    DEMO_PORT      => free_port(),
    BACKEND_URL    => "http://127.0.0.1:" . free_port(),
    MCP_URL        => "http://127.0.0.1:" . free_port(),
);

# Variables of the guide that must not leak in from the caller.
my @ours = qw(DATABASE_URL CLERK_JWT_KEY CLERK_JWKS_FILE CLERK_JWKS_URL
              CLERK_SECRET_KEY RESOLVER CLERK_ISSUER
              CLERK_AUTHORIZED_PARTIES ENCRYPTION_KEY CRON_SECRET BACKEND_URL
              MCP_URL DEMO_PORT CORS_ORIGIN RATE_LIMIT_MAX RATE_LIMIT_WINDOW
              REDIS_URL REDIS_TIMEOUT REDIS_FALLBACK REDIS_INSTANCES
              MAX_REQUEST_SIZE LOG_LEVEL UPGRADE_URL METRICS_ALLOW METRICS_TOKEN
              RENDER PORT
              RUN_DIR TENANT_MODULE UPSTREAM_CA_FILE NODE_ENV MIGRATE_ON_START
              TEST_ONLY_CLERK_SECRET_TO_LOOPBACK
              NGINX);

my $seq = 0;

# The environment for a run: %good plus %set, minus keys set to undef.
sub env_for {
    my (%set) = @_;
    my %env = (%good, RUN_DIR => "$tmp/run" . ++$seq, %set);
    delete @env{ grep { !defined $env{$_} } keys %env };
    return \%env;
}

sub spawn {
    my ($env, $out, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        delete @ENV{@ours};
        @ENV{keys %$env} = values %$env;
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', "$out.out" or die;
        open STDERR, '>', "$out.err" or die;
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

# Runs a command to completion: (exit status, stdout, stderr).
sub run {
    my ($env, @cmd) = @_;
    my $out = "$tmp/cmd" . ++$seq;
    waitpid spawn($env, $out, @cmd), 0;
    my $rc = $? >> 8;
    return ($rc, slurp("$out.out"), slurp("$out.err"));
}


# ---- (a) --check with a complete environment -----------------------------

{
    my $env = env_for();
    my ($rc, $out, $err) = run($env, $entry, '--check');
    is $rc, 0, 'entrypoint --check: exit 0 with a complete environment'
        or diag $err;
    ok -s "$env->{RUN_DIR}/nginx.conf", 'the conf is rendered into RUN_DIR';
    like slurp("$env->{RUN_DIR}/nginx.conf"), qr/listen\s+$port;/,
        'on PORT';
    ok !-s "$env->{RUN_DIR}/nginx.pid", '--check starts no nginx (nginx -t leaves an empty pid file)';
    for my $secret ($enc, $cron, $pg->{url}) {
        unlike "$out$err", qr/\Q$secret\E/, 'no secret in the output';
    }
}


# ---- (b) missing or malformed variables: one line naming it ---------------

my @bad = (
    [DATABASE_URL   => undef],
    [DATABASE_URL   => 'mysql://u:p@h/db'],
    [CLERK_JWT_KEY  => undef],
    [CLERK_JWT_KEY  => 'not a key'],
    [ENCRYPTION_KEY => undef],
    [ENCRYPTION_KEY => 'zz' x 32],
    [CRON_SECRET    => undef],
    [CRON_SECRET    => 'short'],
    [PORT           => 'http'],
    [TENANT_MODULE  => "$tmp/missing.so"],
    [MIGRATE_ON_START => 'yes'],
);
for my $case (@bad) {
    my ($name, $value) = @$case;
    my $what = defined $value ? 'malformed' : 'missing';
    my ($rc, $out, $err) = run(env_for($name => $value), $entry, '--check');
    is $rc, 1, "$name $what: exit 1";
    my @lines = split /\n/, $err;
    is scalar @lines, 1, "$name $what: one line" or diag $err;
    like $lines[0] // '', qr/\b$name\b/, "$name $what: the line names it";
    unlike $err, qr/\Q$enc\E|\Q$cron\E/, "$name $what: no secret printed";
}

# The image never serves the demo upstream of make run (it echoes the
# signed tenant headers back to clients): BACKEND_URL and MCP_URL are
# required whatever NODE_ENV says, and the test-only switches are refused.
for my $case ([BACKEND_URL => [BACKEND_URL => undef]],
              [BACKEND_URL => [BACKEND_URL => undef, NODE_ENV => 'development']],
              [BACKEND_URL => [BACKEND_URL => undef, MCP_URL => undef, NODE_ENV => 'test']],
              [MCP_URL     => [MCP_URL => undef, NODE_ENV => '']],
              [MCP_URL     => [MCP_URL => undef, NODE_ENV => 'production']],
              [TEST_ONLY_CLERK_SECRET_TO_LOOPBACK =>
                  [TEST_ONLY_CLERK_SECRET_TO_LOOPBACK => 1,
                   CLERK_SECRET_KEY => 'sk_test_' . ('q' x 24),
                   CLERK_JWKS_URL => 'http://127.0.0.1:9/v1/jwks']])
{
    my ($name, $set) = @$case;
    my %set = @$set;
    my $what = join ', ', map { defined $set{$_} ? "$_=$set{$_}" : "$_ unset" }
        sort keys %set;
    my $env = env_for(%set);
    my ($rc, $out, $err) = run($env, $entry, '--check');
    is $rc, 1, "$what: exit 1";
    like $err, qr/\Arender-conf: \Q$name\E: [^\n]+\n\z/,
        "$what: one line naming $name" or diag $err;
    ok !-e "$env->{RUN_DIR}/nginx.conf", "$what: nothing rendered";
}

# nginx -t refusing the rendered file: one line too.
{
    my $bogus = "$tmp/bogus.so";
    open my $f, '>', $bogus or die; print $f "not an ELF\n"; close $f;
    my ($rc, $out, $err) = run(env_for(TENANT_MODULE => $bogus), $entry, '--check');
    is $rc, 1, 'nginx -t refuses: exit 1';
    # after render-conf.sh's two lines (the workers, the connections)
    like $err, qr/\A(render-conf: (worker_processes|database connections)[^\n]*\n){2}entrypoint: nginx -t refused [^\n]*\n\z/,
        'nginx -t refuses: one line' or diag $err;
}


# ---- (c), (d) nginx in the foreground, MIGRATE_ON_START --------------------

my $http = HTTP::Tiny->new(timeout => 2);

# Starts the entrypoint, waits for /api/health, stops it with SIGQUIT.
sub serve {
    my ($label, %set) = @_;
    my $env = env_for(%set);
    my $out = "$tmp/serve" . ++$seq;
    my $pid = spawn($env, $out, $entry);

    my ($status, $exited) = (0);
    my $deadline = time + 30;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) { $exited = 1; last }
        my $res = $http->get("http://127.0.0.1:$env->{PORT}/api/health");
        $status = $res->{status};
        last if $status == 200;
        sleep 0.2;
    }
    is $status, 200, "$label: /api/health answers 200"
        or diag slurp("$out.err");
    if (!$exited) {
        my $res = $http->get("http://127.0.0.1:$env->{PORT}/api/health/live");
        is $res->{status}, 200, "$label: /api/health/live answers 200"
            or diag $res->{content};
        like $res->{content}, qr/^\{"status":"ok","uptime":\d+,"keys":\d+,"database":"\w+"\}$/,
            "$label: /api/health/live body" or diag $res->{content};
    }

    # nginx runs as the entrypoint's child (t/053-drain.t: the entrypoint
    # turns a deploy's SIGTERM into nginx's graceful SIGQUIT)
    my $master = -s "$env->{RUN_DIR}/nginx.pid"
        ? slurp("$env->{RUN_DIR}/nginx.pid") =~ s/\s+//gr : '';
    my ($ppid) = slurp("/proc/$master/stat") =~ /^\d+ \(.*\) \S (\d+)/s
        if $master =~ /^\d+$/ && -r "/proc/$master/stat";
    is $ppid, $pid, "$label: the nginx master is the entrypoint's child"
        unless $exited;
    kill 'QUIT', $pid unless $exited;
    my $done = $exited;
    for (1 .. 150) {
        last if $done;
        $done = waitpid($pid, WNOHANG) == $pid;
        sleep 0.1 unless $done;
    }
    if (!$done) { kill 'KILL', $pid; waitpid $pid, 0 }
    ok $done && !$exited, "$label: SIGQUIT stops it";
    is $? >> 8, 0, "$label: exit status 0" if $done && !$exited;
    return (slurp("$out.out"), slurp("$out.err"));
}

my $migrated = "SELECT to_regclass('public.schema_migrations') IS NOT NULL";

{
    my ($out, $err) = serve('MIGRATE_ON_START unset');
    unlike "$out$err", qr/\Q$enc\E|\Q$cron\E/, 'no secret in the output';
    ok !sql_value($migrated), 'MIGRATE_ON_START unset: no migration applied';
}

{
    my ($out, $err) = serve('MIGRATE_ON_START=1', MIGRATE_ON_START => 1);
    my @files = glob "$root/migrations/*.sql";
    ok sql_value($migrated), 'MIGRATE_ON_START=1: schema_migrations exists';
    is sql_value('SELECT count(*) FROM public.schema_migrations'),
        scalar @files, 'MIGRATE_ON_START=1: every migration applied';
    ok sql_value("SELECT to_regclass('public.tenants') IS NOT NULL"),
        'MIGRATE_ON_START=1: public.tenants exists';
}


# ---- (g) the access log, whoever owns stdout ------------------------------
#
# nginx opens its access log by name; open("/dev/stdout") fails for a
# socket (6: No such device or address) whoever runs it, and for a pipe or
# file of another user (13: Permission denied), which is what a container
# runtime hands a non-root USER.  The entrypoint's FIFO and copier write
# to the inherited descriptor instead: the access log line arrives.

sub serve_stdout {
    my ($kind) = @_;
    my $env = env_for();
    my ($r, $w);
    my ($uid, $gid);
    if ($kind eq 'a socket') {
        socketpair($r, $w, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
            or die "socketpair: $!";
    } else {
        pipe($r, $w) or die "pipe: $!";
        (undef, undef, $uid, $gid) = getpwnam('nobody')
            or die "no user nobody";
        make_path($env->{RUN_DIR});
        chown $uid, $gid, $env->{RUN_DIR} or die "chown: $!";
    }
    my $err = "$tmp/stdout" . ++$seq . '.err';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        delete @ENV{@ours};
        @ENV{keys %$env} = values %$env;
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>&', $w or POSIX::_exit(125);
        open STDERR, '>', $err or POSIX::_exit(125);
        if (defined $uid) {
            $) = "$gid $gid";
            $( = $gid;
            POSIX::setuid($uid) or POSIX::_exit(126);
        }
        exec $entry or POSIX::_exit(127);
    }
    close $w;

    my $agent = "t052-stdout-$$-" . int rand 1e9;
    my $ua = HTTP::Tiny->new(timeout => 2, agent => $agent);
    my ($status, $exited) = (0);
    my $deadline = time + 30;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) { $exited = 1; last }
        $status = $ua->get("http://127.0.0.1:$env->{PORT}/api/health")->{status};
        last if $status == 200;
        sleep 0.2;
    }
    is $status, 200, "stdout $kind: /api/health answers 200"
        or diag slurp($err);

    kill 'QUIT', $pid unless $exited;
    my $done = $exited;
    for (1 .. 150) {
        last if $done;
        $done = waitpid($pid, WNOHANG) == $pid;
        sleep 0.1 unless $done;
    }
    if (!$done) { kill 'KILL', $pid; waitpid $pid, 0 }
    ok $done && !$exited, "stdout $kind: SIGQUIT stops it";
    is $? >> 8, 0, "stdout $kind: exit status 0" if $done && !$exited;

    # Everything the copier wrote, up to its end (EOF: nginx is gone).
    my ($out, $eof) = ('', 0);
    my $sel = IO::Select->new($r);
    my $until = time + 10;
    while (time < $until && $sel->can_read($until - time)) {
        sysread($r, $out, 65536, length $out) or do { $eof = 1; last };
    }
    close $r;
    ok $eof, "stdout $kind: the copier ends with nginx (end of file)";
    my ($line) = grep { /"user_agent":"\Q$agent\E"/ } split /\n/, $out;
    ok $line, "stdout $kind: the access log line arrives" or diag $out;
    like $line // '', qr/\A\{.*"uri":"\/api\/health".*"status":200\b/,
        "stdout $kind: ... as JSON, the request's URI and status";
    unlike slurp($err), qr{/dev/stdout|\[(emerg|alert)\]},
        "stdout $kind: no open() failure nor alert on stderr";
    ok -p "$env->{RUN_DIR}/access-log.fifo",
        "stdout $kind: the access log is RUN_DIR/access-log.fifo, a FIFO";
}

# render-conf.sh --access-log PATH: the access_log line; /dev/stdout
# without it (make run, t/056).
{
    my $render = "$root/scripts/render-conf.sh";
    my $env = env_for();
    my $conf = "$env->{RUN_DIR}/nginx.conf";
    my ($rc, $out, $err) = run($env, $render, $conf);
    like $rc ? '' : slurp($conf), qr{^\s*access_log /dev/stdout tenant_json;$}m,
        'render-conf.sh: access_log /dev/stdout by default' or diag $err;
    ($rc, $out, $err) = run($env, $render, '--deploy', '--access-log',
                            "$tmp/access.fifo", $conf);
    like $rc ? '' : slurp($conf), qr{^\s*access_log \Q$tmp\E/access\.fifo tenant_json;$}m,
        'render-conf.sh --access-log PATH: access_log PATH' or diag $err;
    unlike slurp($conf), qr{^\s*access_log /dev/stdout}m, "... and no access_log /dev/stdout";
    ($rc, $out, $err) = run($env, $render, '--access-log', "$tmp/a;b", $conf);
    is $rc, 1, 'render-conf.sh --access-log with a ";": exit 1';
    like $err, qr/\Arender-conf: --access-log: [^\n]*\n\z/, '... one line naming it';
    ($rc, $out, $err) = run($env, $render, '--access-log', $conf);
    is $rc, 2, 'render-conf.sh --access-log without OUT_FILE: usage, exit 2';
}

serve_stdout('a socket');
SKIP: {
    skip 'not root: no other user to run the entrypoint as', 7 if $> != 0;
    serve_stdout('a pipe of root, the entrypoint as nobody');
}


# ---- (e) the Dockerfile ---------------------------------------------------

my $dockerfile = slurp("$root/Dockerfile") =~ s/\\\n/ /gr;
my (@stages, $stage);
for (split /\n/, $dockerfile) {
    next if /^\s*(#|$)/;
    my ($ins, $args) = /^\s*(\w+)\s+(.*?)\s*$/ or next;
    $ins = uc $ins;
    if ($ins eq 'FROM') {
        push @stages, $stage = { from => $args, lines => [] };
        next;
    }
    push @{ $stage->{lines} }, [$ins, $args];
}
is scalar @stages, 2, 'Dockerfile: two stages';
my ($build, $runtime) = @stages;
like $build->{from},   qr/^debian:bookworm\s+AS\s+build$/i, 'build stage: FROM debian:bookworm';
like $runtime->{from}, qr/^debian:bookworm-slim\b/, 'runtime stage: FROM debian:bookworm-slim';

my %exercised = ('build-module.sh' => 1, 'entrypoint.sh' => 1,
                 'deps.sh' => 1);
for my $s (@stages) {
    for (@{ $s->{lines} }) {
        my ($ins, $args) = @$_;
        next unless $ins =~ /^(RUN|ENTRYPOINT|HEALTHCHECK|CMD)$/;
        for my $script ($args =~ m{scripts/([\w.-]+\.sh)}g) {
            ok -x "$root/scripts/$script", "Dockerfile $ins: scripts/$script exists";
            ok $exercised{$script}, "Dockerfile $ins: scripts/$script is exercised here";
        }
    }
}

my %rt;
push @{ $rt{$_->[0]} }, $_->[1] for @{ $runtime->{lines} };
my ($user) = @{ $rt{USER} || [] };
ok defined $user && $user !~ /^(root|0)(:|$)/, 'runtime: USER is not root';
ok $rt{EXPOSE}, 'runtime: EXPOSE';
like "@{ $rt{HEALTHCHECK} || [] }", qr{CMD .*/api/health/live"}, 'runtime: HEALTHCHECK on /api/health/live';
my ($ep) = @{ $rt{ENTRYPOINT} || [] };
like $ep // '', qr{^\["/srv/gateway/scripts/entrypoint\.sh"\]$}, 'runtime: ENTRYPOINT';

# build-module.sh as the build stage runs it (but building nothing: the
# module must already be up to date), into the directory the runtime
# stage copies from.
{
    # The packages of the build in a layer of their own, before the
    # sources: what scripts/deps.sh --build installs, all there on a
    # machine that built the module.
    my @bl = @{ $build->{lines} };
    my ($deps_at) = grep { $bl[$_][0] eq 'RUN'
                           && $bl[$_][1] =~ m{^scripts/deps\.sh --build$} } 0 .. $#bl;
    my ($src_at) = grep { $bl[$_][0] eq 'COPY' && $bl[$_][1] =~ /^\.\s/ } 0 .. $#bl;
    ok defined $deps_at && defined $src_at && $deps_at < $src_at,
        'build stage: RUN scripts/deps.sh --build before COPY . .';
    like $bl[$deps_at - 1][1] // '', qr{^scripts/deps\.sh\s+scripts/$},
        '... after copying scripts/deps.sh alone' if defined $deps_at;
    my ($rc, $out, $err) = run({}, "$root/scripts/deps.sh", '--build');
    is "$rc $out$err", '0 ', 'scripts/deps.sh --build: nothing missing here';

    my ($run) = map { $_->[1] }
        grep { $_->[0] eq 'RUN' && $_->[1] =~ /build-module/ } @bl;
    like $run // '', qr{^scripts/build-module\.sh --no-deps \S+$},
        'build stage: RUN scripts/build-module.sh --no-deps DEST';
    my ($dest) = ($run // '') =~ m{scripts/build-module\.sh\s+(?:--\S+\s+)*(\S+)};
    ok $dest, 'build stage: RUN scripts/build-module.sh DEST';
    my ($copy) = grep { m{^--from=build\s} } @{ $rt{COPY} || [] };
    like $copy // '', qr{^--from=build\s+\Q$dest\E/ngx_tenant_module\.so\s+/usr/lib/nginx/modules/},
        'runtime: copies the module from the build stage\'s DEST';

    my $out_dir = "$tmp/out";
    ($rc, $out, $err) = run({}, "$root/scripts/build-module.sh",
                               '--no-deps', '--if-up-to-date', $out_dir);
    is $rc, 0, 'build-module.sh: exit 0' or diag $err;
    my $last = (split /\n/, $out)[-1] // '';
    is $last, "$out_dir/ngx_tenant_module.so", 'build-module.sh: prints the module path';
    ok -s $last, 'build-module.sh: the module is there';
}

# The runtime layout: the runtime stage's COPY lines (from the context)
# into a fake root, then entrypoint --check from there, the module at the
# image's path.
{
    my $fake = "$tmp/image";
    for my $args (@{ $rt{COPY} || [] }) {
        next if $args =~ /^--from/;
        my @w = split ' ', $args;
        my $dest = pop @w;
        for my $src (@w) {
            if (-d "$root/$src") {
                make_path("$fake$dest");
                copy($_, "$fake$dest/") or die "$_: $!" for glob "$root/$src/*";
            } else {
                make_path("$fake$dest");
                copy("$root/$src", "$fake$dest/") or die "$src: $!";
                chmod 0755, "$fake$dest/" . ($src =~ s{.*/}{}r);
            }
        }
    }
    my $env = env_for(TENANT_MODULE => $module);
    my ($rc, $out, $err) = run($env, "$fake/srv/gateway/scripts/entrypoint.sh", '--check');
    is $rc, 0, 'the image layout: entrypoint --check passes' or diag $err;

    # the demo upstream is not in the image: refused by the entrypoint,
    # and render-conf.sh run by hand there cannot render it either
    ok -e "$root/conf/demo-upstream.conf.template"
        && !-e "$fake/srv/gateway/conf/demo-upstream.conf.template",
        'the image layout: no demo upstream template';
    $env = env_for(BACKEND_URL => undef);
    ($rc, $out, $err) = run($env, "$fake/srv/gateway/scripts/entrypoint.sh", '--check');
    is $rc, 1, 'the image layout, BACKEND_URL unset: entrypoint refuses';
    like $err, qr/\Arender-conf: BACKEND_URL: required [^\n]*demo upstream[^\n]*\n\z/,
        '... one line: BACKEND_URL required, no demo upstream' or diag $err;
    $env = env_for(BACKEND_URL => undef);
    ($rc, $out, $err) = run($env, "$fake/srv/gateway/scripts/render-conf.sh",
                            "$env->{RUN_DIR}/nginx.conf");
    is $rc, 1, 'the image layout, BACKEND_URL unset: render-conf.sh by hand fails';
    ok !-e "$env->{RUN_DIR}/nginx.conf", '... nothing rendered' or diag $err;
    ok -x "$fake/srv/gateway/scripts/migrate.sh", 'the image layout: migrate.sh';
    my @files = glob "$fake/srv/gateway/migrations/*.sql";
    ok scalar @files, 'the image layout: migrations';
}


# render.yaml: t/057-render-yaml.t.

done_testing;
