#!/usr/bin/env perl
# The image, built and run here: no Docker engine and no registry, but
# Debian's buildah (chroot isolation) and base images made by debootstrap
# (scripts/image-base.sh, cached in /var/cache/ngx-tenant-image).  `make
# image-test` runs it; in `make test` only with IMAGE_TEST=1 (a cold build
# takes minutes: README, "Container and Render").
#
#   1  scripts/image-build.sh: buildah bud --isolation chroot --pull=never
#      of the Dockerfile; the image's user, entrypoint, health check
#   2  render.yaml's preDeployCommand in the image, as the image's user,
#      with render.yaml's environment (DATABASE_URL: a PostgreSQL on
#      127.0.0.1: chroot isolation shares the host's network)
#   3  the image's ENTRYPOINT as its non-root USER with that environment,
#      stdout and stderr pipes of root (as buildah and other runtimes hand
#      them out: open("/dev/stdout") is refused to the user): render.yaml's
#      healthCheckPath, /api/health, the image's HEALTHCHECK path; a
#      request with a real token through to the echo upstream, signed
#      (X-Tenant-Signature); its access log line on the container's stdout
#   4  SIGTERM to the container's main process with a slow request in
#      flight: the request completes (200, its whole body), new connections
#      are refused, exit status 0, the request's access log line copied
#
#   IMAGE_TEST=1      run (anything else: skip)
#   IMAGE_CACHE, IMAGE_STORAGE, ...: scripts/image-base.sh

use strict;
use warnings;

use FindBin      qw($Bin);
use lib          "$Bin/lib";
use TenantTest;
use Errno        qw(ECONNREFUSED);
use IO::Socket::INET ();
use JSON::PP     ();
use MIME::Base64 qw(encode_base64);
use POSIX        qw(WNOHANG);
use Time::HiRes  qw(sleep time);
use Test::More;

plan skip_all => 'IMAGE_TEST=1 builds and runs the image with buildah '
    . '(make image-test; minutes without the base image cache)'
    unless ($ENV{IMAGE_TEST} // '') eq '1';

my $root = project_root();
my $tmp  = TenantTest::tmpdir();

# Asked for: what is missing fails, it is not skipped.
my @missing = grep { system("command -v $_ >/dev/null 2>&1") != 0 }
              qw(buildah debootstrap);
if ($> != 0 || @missing) {
    fail($> != 0 ? 'IMAGE_TEST=1 needs root (buildah, debootstrap)'
                 : "IMAGE_TEST=1: missing @missing (scripts/deps.sh)");
    done_testing;
    exit;
}
eval { require YAML::XS; 1 } or BAIL_OUT('YAML::XS missing (make deps)');

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or return '';
    local $/;
    return scalar(<$f>) // '';
}

my $cache   = $ENV{IMAGE_CACHE} || '/var/cache/ngx-tenant-image';
my $storage = $ENV{IMAGE_STORAGE} || "$cache/storage";
my @buildah = ('buildah', $storage eq 'default' ? ()
                          : ('--root', "$storage/root",
                             '--runroot', "$storage/runroot"));
my $tag = 'localhost/ngx-tenant-gateway:t160';
my $JSON = JSON::PP->new->canonical;

# Runs a command: (exit status, stdout, stderr, seconds).
my $seq = 0;
sub run {
    my (@cmd) = @_;
    my $out = "$tmp/t160." . ++$seq;
    my $t0 = time;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', "$out.out" or POSIX::_exit(125);
        open STDERR, '>', "$out.err" or POSIX::_exit(125);
        exec @cmd or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return ($? >> 8, slurp("$out.out"), slurp("$out.err"), time - $t0);
}


# ---- 1 the build ------------------------------------------------------------

my $cold = !glob("$cache/debian-*.tar");
my ($rc, $out, $err, $secs) = run("$root/scripts/image-base.sh");
is $rc, 0, 'image-base.sh: debian:bookworm(-slim) from debootstrap' or diag $err;
diag sprintf 'base images: %.0f s (%s)', $secs,
    $cold ? 'cold: debootstrap' : 'the cached tarball';

($rc, $out, $err, $secs) = run("$root/scripts/image-build.sh", $tag);
is $rc, 0, 'image-build.sh: buildah bud --isolation chroot --pull=never'
    or BAIL_OUT("the image did not build:\n" . substr($err, -3000));
my ($iid) = $out =~ /^([0-9a-f]{64})$/m;
ok $iid, 'image-build.sh prints the image ID';
my $cached = () = $err =~ /^\[\s*\d+s\] --> Using cache /mg;
diag sprintf 'buildah bud: %.0f s (%d steps from the layer cache)', $secs, $cached;
# The steps that took 3 s or more (image-build.sh stamps each line).
{
    my @steps;
    for (split /\n/, $err) {
        push @steps, $1, $2 if m{^\[\s*(\d+)s\] (\[\d+/\d+\] STEP .{0,60})}
                            || m{^image-build: \[\s*(\d+)s\] (built)};
    }
    for (my $i = 0; $i + 2 < @steps; $i += 2) {
        my $d = $steps[$i + 2] - $steps[$i];
        diag sprintf '  %4d s  %s', $d, $steps[$i + 1] if $d >= 3;
    }
}

($rc, $out) = run(@buildah, 'inspect', '--type', 'image', $iid);
my $cfg = (eval { $JSON->decode($out) } || {})->{Docker}{config} || {};
my $user = $cfg->{User} // '';
like $user, qr/^[a-z_][a-z0-9_-]*$/, "the image's USER: $user";
isnt $user, 'root', '... not root';
my @entry = @{ $cfg->{Entrypoint} || [] };
is_deeply \@entry, ['/srv/gateway/scripts/entrypoint.sh'], 'the ENTRYPOINT';
my ($hc_path) = join(' ', @{ ($cfg->{Healthcheck} || {})->{Test} || [] })
    =~ m{http://127\.0\.0\.1:\$\{PORT\}(/[^"\s]*)};
ok $hc_path, "the HEALTHCHECK (kept: docker format): GET $hc_path"
    or diag explain $cfg->{Healthcheck};


# ---- render.yaml's environment ------------------------------------------------

my $y = YAML::XS::LoadFile("$root/render.yaml");
my ($web) = grep { ($_->{type} // '') eq 'web' } @{ $y->{services} || [] };
ok $web && ($web->{dockerfilePath} // '') eq './Dockerfile',
    'render.yaml: the web service builds this Dockerfile';

my $pg   = pg_start(migrate => 0, tcp => 1);
my $keys = jwt_keys();
my $port = free_port();

# The upstream: echoes (TenantTest's echo answer); /api/slow/ answers
# after 3 s with a 64 KB body.
my $slow_body = join '', map { sprintf "%07d\n", $_ } 1 .. 8192;
my $echo = echo_start(handler => sub {
    my ($req) = @_;
    if ($req->{uri} =~ m{^/api/slow/}) {
        sleep 3;
        return (200, ['Content-Type' => 'text/plain'], $slow_body);
    }
    return (200, ['Content-Type' => 'application/json'],
            $JSON->encode({ map { $_ => $req->{$_} }
                            qw(method uri version headers body) }));
});

# What Render would set: values as render.yaml gives them, generated ones
# (base64, as Render generates them), the database's connection string,
# the sync: false ones the operator sets, and Render's own PORT and RENDER.
my %ours = (
    CLERK_JWT_KEY  => slurp($keys->{rsa_pub}),
    ENCRYPTION_KEY => join('', map { sprintf '%02x', int rand 256 } 1 .. 32),
    BACKEND_URL    => "http://$echo->{addr}",
    MCP_URL        => "http://$echo->{addr}",
);
my (%env, @unset);
for my $v (@{ $web->{envVars} || [] }) {
    my $k = $v->{key};
    if (exists $v->{value}) {
        $env{$k} = $v->{value};
    } elsif ($v->{generateValue}) {
        $env{$k} = encode_base64(join('', map { chr int rand 256 } 1 .. 32), '');
    } elsif ($v->{fromDatabase}) {
        is $v->{fromDatabase}{property}, 'connectionString',
            "render.yaml: $k is the database's connection string";
        $env{$k} = "postgresql://postgres\@127.0.0.1:$pg->{port}/capliquify";
    } elsif (exists $ours{$k}) {
        $env{$k} = $ours{$k};
    } else {
        push @unset, $k;
    }
}
note "render.yaml's variables left unset (optional here): @unset" if @unset;
ok !grep({ !exists $env{$_} } keys %ours),
    'render.yaml has every variable this test sets: ' . join(' ', sort keys %ours);
%env = (%env, PORT => $port, RENDER => 'true');

my @env_args = map { ('-e', "$_=$env{$_}") } sort keys %env;

# Working containers of the image (one for the pre-deploy command, one
# for the service, as Render runs them); stopped and removed at the end.
my @ctrs;
my ($run, $main);
sub container {
    my $name = "ngx-tenant-t160-$$-" . (@ctrs + 1);
    my ($rc, $out, $err) = run(@buildah, 'from', '--pull=never', '--name', $name, $iid);
    is $rc, 0, "buildah from: working container $name" or BAIL_OUT($err);
    push @ctrs, $name;
    return $name;
}
END {
    if ($run && kill 0, $run) {
        kill 'TERM', $main if $main;
        for (1 .. 50) { last if waitpid($run, WNOHANG) == $run; sleep 0.1 }
        if (kill 0, $run) { kill 'KILL', $main if $main; kill 'KILL', $run; waitpid $run, 0 }
    }
    run(@buildah, 'rm', $_) for @ctrs;
}


# ---- 2 the pre-deploy command --------------------------------------------------

{
    my @cmd = split ' ', $web->{preDeployCommand} // '';
    ok @cmd, "render.yaml: preDeployCommand @cmd";
    my ($rc, $out, $err, $secs) = run(@buildah, 'run', '--isolation', 'chroot',
                                      @env_args, container(), '--', @entry, @cmd);
    is $rc, 0, 'preDeployCommand through the ENTRYPOINT, as the image\'s user: exit 0'
        or diag $err;
    my @files = glob "$root/migrations/*.sql";
    is sql_value('SELECT count(*) FROM public.schema_migrations'), scalar @files,
        '... every migration applied';
}


# ---- 3 the service ----------------------------------------------------------------

# The container's processes: those under buildah-chroot-exec, below
# our buildah run.
sub children_of {
    my ($top) = @_;
    my %kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my ($pid, $ppid) = slurp($stat) =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        push @{ $kids{$ppid} }, $pid;
    }
    my @all;
    my @todo = ($top);
    while (defined(my $p = shift @todo)) {
        push @all, @{ $kids{$p} || [] };
        push @todo, @{ $kids{$p} || [] };
    }
    return @all;
}

sub main_process {
    my ($top) = @_;
    for my $pid (children_of($top)) {
        my ($ppid) = slurp("/proc/$pid/stat") =~ /^\d+ \(.*\) \S+ (\d+)/s or next;
        return $pid if slurp("/proc/$ppid/cmdline") =~ /^buildah-chroot-exec\0/;
    }
    return undef;
}

my $out_file = "$tmp/container.out";
my $err_file = "$tmp/container.err";
my $ctr = container();
my $t_start = time;
$run = fork // die "fork: $!";
if (!$run) {
    open STDIN,  '<', '/dev/null';
    open STDOUT, '>', $out_file or POSIX::_exit(125);
    open STDERR, '>', $err_file or POSIX::_exit(125);
    exec @buildah, 'run', '--isolation', 'chroot', @env_args, $ctr, '--', @entry
        or POSIX::_exit(127);
}

my ($status, $exited) = (0);
my $deadline = time + 60;
while (time < $deadline) {
    if (waitpid($run, WNOHANG) == $run) { $exited = $?; last }
    $main //= main_process($run);
    $status = http(port => $port, path => '/api/health', timeout => 2)->{status};
    last if $status == 200;
    sleep 0.25;
}
$main //= main_process($run);
is $status, 200, 'the container serves /api/health: 200'
    or diag slurp($err_file);
diag sprintf 'container start to /api/health 200: %.1f s', time - $t_start;
BAIL_OUT("the container did not start:\n" . slurp($err_file)) if $status != 200;

ok $main, "the container's main process (pid " . ($main // '?') . ')';
my %st = map { /^(\w+):\s*(.*)$/ ? ($1 => $2) : () } split /\n/, slurp("/proc/$main/status");
my ($uid) = split ' ', $st{Uid} // '';
my $passwd = slurp("/proc/$main/root/etc/passwd");
my ($image_uid) = $passwd =~ /^\Q$user\E:[^:]*:(\d+):/m;
ok defined $uid && defined $image_uid && $uid == $image_uid && $uid != 0,
    "it runs as the image's user $user (uid $uid)";
like slurp("/proc/$main/cmdline"), qr{\Q$entry[0]\E}, '... the ENTRYPOINT';

# The runtime's stdout, as the problem was: a pipe of root, 0600, that
# the user cannot open() by name.
my @fd1 = stat "/proc/$main/fd/1";
ok @fd1 && $fd1[4] == 0 && ($fd1[2] & 0777) == 0600 && ($fd1[2] & 0170000) == 0010000,
    "the container's stdout is a pipe of root, mode 0600 (open(\"/dev/stdout\") refused to $user)";

{
    my %why;
    push @{ $why{$web->{healthCheckPath} // '/'} }, "render.yaml's healthCheckPath";
    push @{ $why{$hc_path} }, "the image's HEALTHCHECK" if $hc_path;
    for my $path (sort keys %why) {
        my $r = http(port => $port, path => $path);
        is $r->{status}, 200, "GET $path: 200 (" . join(', ', @{ $why{$path} }) . ')';
    }
}
{
    my $r = http(port => $port, path => '/api/health');
    is $r->{json}{database}, 'connected', '/api/health: the database connected';
}

my $T = create_tenant(status => 'active', tier => 'professional');
my $agent = "t160-$$-" . int rand 1e9;
{
    my $tok = mint_token(org => $T->{clerk_organization_id});
    my $r = http(port => $port, path => '/api/products?x=1',
                 headers => [Authorization => "Bearer $tok",
                             'User-Agent' => $agent]);
    is $r->{status}, 200, 'a request with a real token: 200' or diag $r->{body};
    my $h = ($r->{json} || {})->{headers} || {};
    is $r->{json}{uri}, '/api/products?x=1', '... through to the upstream';
    like $h->{'x-tenant-signature'}[0] // '', qr/\S{16}/, '... signed: X-Tenant-Signature';
    is $h->{'x-tenant-id'}[0], $T->{id}, '... X-Tenant-Id the tenant';
    my $r2 = http(port => $port, path => '/api/products',
                  headers => ['User-Agent' => $agent]);
    is $r2->{status}, 401, 'without a token: 401';
}

sub access_lines {
    my ($re) = @_;
    return grep { /"user_agent":"\Q$agent\E"/ && $_ =~ $re }
           split /\n/, slurp($out_file);
}
my @lines;
for (1 .. 40) {
    last if @lines = access_lines(qr{"uri":"/api/products".*"status":200});
    sleep 0.1;
}
ok @lines, 'its access log line on the container\'s stdout' or diag slurp($out_file);
my $line = eval { JSON::PP->new->decode($lines[0] // '') } || {};
is $line->{tenant_id}, $T->{id}, '... JSON, with the tenant';
unlike slurp($err_file), qr{/dev/stdout|\[(emerg|alert|crit)\]},
    'stderr: no open() failure, alert or crash';


# ---- 4 SIGTERM: drain -------------------------------------------------------------

{
    my $tok = mint_token(org => $T->{clerk_organization_id});
    my $slow = async_http(port => $port, path => '/api/slow/1', timeout => 20,
                          headers => [Authorization => "Bearer $tok",
                                      'User-Agent' => $agent]);
    sleep 1;                    # the request is at the upstream
    my @procs = children_of($run);
    ok kill('TERM', $main), "SIGTERM to the container's main process";
    my $refused;
    for (1 .. 20) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Timeout => 1);
        if (!$s) { $refused = $! == ECONNREFUSED; last }
        close $s;
        sleep 0.1;
    }
    ok $refused, 'new connections refused while it drains';
    my $r = wait_http($slow);
    is $r->{status}, 200, 'the request in flight completes: 200';
    ok $r->{body} eq $slow_body, '... with its whole body';

    my $done;
    for (1 .. 300) {
        last if $done = waitpid($run, WNOHANG) == $run;
        sleep 0.1;
    }
    my $st = $?;
    if ($done) { undef $run } else { diag 'still running: killed at the end' }
    ok $done, 'the container stops';
    is $st >> 8, 0, 'exit status 0' if $done;
    my @left = grep { -e "/proc/$_" } @procs;
    ok @procs && !@left, 'no process of it left (nginx, its workers, the copier)'
        or diag "left: @left";
    ok access_lines(qr{"uri":"/api/slow/1".*"status":200}),
        "the drained request's access log line, copied before the end";
}

done_testing;
