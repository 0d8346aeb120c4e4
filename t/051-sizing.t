#!/usr/bin/env perl
# Sizing: worker_processes from the container's CPUs (scripts/cpu-count.sh,
# against fake cgroup trees), the database connection budget
# (DATABASE_POOL_SIZE, scripts/render-conf.sh), and the budget held by a
# running gateway: two workers, PostgreSQL made slow by a lock on
# public.tenants, many lookups at once; pg_stat_activity never shows a
# worker over its share, nor the instance over DATABASE_POOL_SIZE, also
# when the lock outlasts the pool's timeout (a connection whose query
# timed out stays the pool's until its answer comes, up to twice the
# timeout: src/ngx_tenant_pg.c, ngx_tenant_pg_hold), with no setting on
# the gateway's role.

use strict;
use warnings;

use FindBin          qw($Bin);
use lib              "$Bin/lib";
use File::Path       qw(make_path);
use File::Basename   qw(dirname);
use IO::Socket::INET ();
use POSIX            qw(:sys_wait_h);
use Time::HiRes      qw(time sleep);
use Test::More;

use TenantTest;

my $root   = project_root();
my $cpus   = "$root/scripts/cpu-count.sh";
my $render = "$root/scripts/render-conf.sh";
my $module = $ENV{TENANT_MODULE} || "$root/build/nginx/objs/ngx_tenant_module.so";
my $nginx  = $TenantTest::NGINX;
my $tmp    = TenantTest::tmpdir();
my $seq    = 0;

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or die "$path: $!";
    local $/;
    return scalar <$f>;
}

sub spew {
    my ($path, $data) = @_;
    make_path(dirname($path));
    open my $f, '>', $path or die "$path: $!";
    print $f $data;
    close $f or die "$path: $!";
}

# A fake cgroup tree: { relative path => contents }; v2 when it has
# cgroup.controllers.  Returns its root.
sub tree {
    my (%files) = @_;
    my $dir = "$tmp/cg" . ++$seq;
    make_path($dir);
    spew("$dir/$_", $files{$_}) for keys %files;
    return $dir;
}

# A PATH whose nproc says $n (the process's affinity, which the machine's
# real nproc would report).
sub fake_nproc {
    my ($n) = @_;
    my $bin = "$tmp/bin" . ++$seq;
    spew("$bin/nproc", "#!/bin/sh\necho $n\n");
    chmod 0755, "$bin/nproc";
    return "$bin:$ENV{PATH}";
}

# Runs a command with exactly %env (plus PATH unless given): (exit status,
# stdout, stderr).
sub run {
    my ($env, @cmd) = @_;
    my $out = "$tmp/run" . ++$seq;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        %ENV = (PATH => $ENV{PATH}, %$env);
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', "$out.out" or die;
        open STDERR, '>', "$out.err" or die;
        exec @cmd or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return ($? >> 8, slurp("$out.out"), slurp("$out.err"));
}


# ---- scripts/cpu-count.sh against fake cgroup trees ----------------------

# [label, files, nproc, extra env, expected count, expected reason]
my @cpu_cases = (
    ['v2 cpu.max 50000/100000: half a CPU is 1 worker',
     { 'cgroup.controllers' => "cpu cpuset\n", 'cpu.max' => "50000 100000\n",
       'cpuset.cpus.effective' => "0-15\n" }, 16, {},
     1, qr/\(least of: cgroup v2 cpu\.max 50000\/100000 = 0\.5 CPUs; cpuset 0-15 = 16 CPUs; nproc 16, rounded up\)/],
    ['v2 cpu.max 150000/100000: rounded up to 2',
     { 'cgroup.controllers' => '', 'cpu.max' => "150000 100000\n" }, 16, {},
     2, qr/cpu\.max 150000\/100000 = 1\.5 CPUs; nproc 16, rounded up\)/],
    ['v2 cpu.max 200000/100000: 2',
     { 'cgroup.controllers' => '', 'cpu.max' => "200000 100000\n" }, 16, {},
     2, qr/cpu\.max 200000\/100000 = 2 CPUs; nproc 16\)$/m],
    ['v2 cpu.max "max": the cpuset "0-3,8" counts 5',
     { 'cgroup.controllers' => '', 'cpu.max' => "max 100000\n",
       'cpuset.cpus.effective' => "0-3,8\n" }, 16, {},
     5, qr/\(least of: cpuset 0-3,8 = 5 CPUs; nproc 16\)/],
    ['v2 cpu.max "max", no cpuset: nproc',
     { 'cgroup.controllers' => '', 'cpu.max' => "max 100000\n" }, 3, {},
     3, qr/\(least of: nproc 3\)/],
    ['v2: the affinity (nproc) below the cpuset wins',
     { 'cgroup.controllers' => '', 'cpuset.cpus.effective' => "0-7\n" }, 2, {},
     2, qr/cpuset 0-7 = 8 CPUs; nproc 2\)/],
    ['v1 cpu/ quota 300000 / period 100000: 3',
     { 'cpu/cpu.cfs_quota_us' => "300000\n", 'cpu/cpu.cfs_period_us' => "100000\n",
       'cpuset/cpuset.effective_cpus' => "0-15\n" }, 16, {},
     3, qr/cgroup v1 cpu\.cfs_quota_us\/cfs_period_us 300000\/100000 = 3 CPUs; cpuset 0-15 = 16 CPUs; nproc 16\)/],
    ['v1 cpu,cpuacct/ quota 50000 / period 100000: 1',
     { 'cpu,cpuacct/cpu.cfs_quota_us' => "50000\n",
       'cpu,cpuacct/cpu.cfs_period_us' => "100000\n" }, 8, {},
     1, qr/50000\/100000 = 0\.5 CPUs; nproc 8, rounded up\)/],
    ['v1 quota -1 (no limit): the cpuset (cpuset.cpus)',
     { 'cpu,cpuacct/cpu.cfs_quota_us' => "-1\n",
       'cpu,cpuacct/cpu.cfs_period_us' => "100000\n",
       'cpuset/cpuset.cpus' => "2-5\n" }, 16, {},
     4, qr/\(least of: cpuset 2-5 = 4 CPUs; nproc 16\)/],
    ['no limit at all on a big host: at most 64',
     {}, 200, {},
     64, qr/\(least of: nproc 200, at most 64\)/],
    ['RENDER_CPU_COUNT=0.5 where no quota is visible: 1',
     { 'cgroup.controllers' => '', 'cpu.max' => "max 100000\n" }, 64,
     { RENDER_CPU_COUNT => '0.5' },
     1, qr/nproc 64; RENDER_CPU_COUNT 0\.5, rounded up\)/],
    ['RENDER_CPU_COUNT=4 above the quota: the quota wins',
     { 'cgroup.controllers' => '', 'cpu.max' => "200000 100000\n" }, 64,
     { RENDER_CPU_COUNT => '4' },
     2, qr/= 2 CPUs; nproc 64; RENDER_CPU_COUNT 4\)/],
    ['WORKER_PROCESSES=3 overrides the detection',
     { 'cgroup.controllers' => '', 'cpu.max' => "50000 100000\n" }, 16,
     { WORKER_PROCESSES => '3' },
     3, qr/\(WORKER_PROCESSES\)$/m],
    ['WORKER_PROCESSES=auto: detected',
     { 'cgroup.controllers' => '', 'cpu.max' => "150000 100000\n" }, 16,
     { WORKER_PROCESSES => 'auto' },
     2, qr/least of: cgroup v2/],
);

for my $c (@cpu_cases) {
    my ($label, $files, $nproc, $env, $want, $why) = @$c;
    my ($rc, $out, $err) = run({ CGROUP_ROOT => tree(%$files),
                                 PATH => fake_nproc($nproc), %$env }, $cpus);
    subtest $label => sub {
        is $rc, 0, 'exit 0';
        is $out, "$want\n", "worker_processes $want";
        like $err, qr/^cpu-count: worker_processes $want \(/m, 'says what it chose';
        like $err, $why, '... and why';
        unlike $err, qr/warning/, 'no warning';
    };
}

# Files that do not parse: a warning each, ignored, never a crash.
{
    my $cg = tree('cgroup.controllers' => '', 'cpu.max' => "lots 100000\n",
                  'cpuset.cpus.effective' => "3-1\n");
    my ($rc, $out, $err) = run({ CGROUP_ROOT => $cg, PATH => fake_nproc(6) }, $cpus);
    is $rc, 0, 'garbage cpu.max and cpuset: exit 0';
    is $out, "6\n", 'garbage cpu.max and cpuset: ignored, nproc counts';
    like $err, qr/^cpu-count: warning: cgroup v2 cpu\.max: cannot read "lots 100000" in \S+cpu\.max, ignored$/m,
        'garbage cpu.max: a warning naming the file';
    like $err, qr/^cpu-count: warning: cpuset: cannot read "3-1" in \S+cpuset\.cpus\.effective, ignored$/m,
        'garbage cpuset: a warning naming the file';

    $cg = tree('cpu/cpu.cfs_quota_us' => "12abc\n", 'cpu/cpu.cfs_period_us' => "100000\n",
               'cpuset/cpuset.effective_cpus' => "0-1,x\n");
    ($rc, $out, $err) = run({ CGROUP_ROOT => $cg, PATH => fake_nproc(5),
                              RENDER_CPU_COUNT => 'two' }, $cpus);
    is $rc, 0, 'garbage v1 quota, cpuset, RENDER_CPU_COUNT: exit 0';
    is $out, "5\n", '... all ignored';
    is scalar(() = $err =~ /^cpu-count: warning: /mg), 3, '... three warnings';
    like $err, qr/warning: RENDER_CPU_COUNT "two" is not a number of CPUs, ignored/,
        '... RENDER_CPU_COUNT named';

    $cg = tree('cgroup.controllers' => '', 'cpu.max' => "0 100000\n");
    ($rc, $out, $err) = run({ CGROUP_ROOT => $cg, PATH => fake_nproc(4) }, $cpus);
    is $out, "4\n", 'a zero quota: ignored (with a warning)';
    like $err, qr/warning: cgroup v2 cpu\.max: cannot read "0 100000"/, '... warned';
}

# WORKER_PROCESSES that is not a count: refused, one line.
for my $bad ('0', '65', 'two', '-1', '2.5', '1e3') {
    my ($rc, $out, $err) = run({ CGROUP_ROOT => tree(), PATH => fake_nproc(2),
                                 WORKER_PROCESSES => $bad }, $cpus);
    is $rc, 1, "WORKER_PROCESSES=$bad: refused";
    like $err, qr/\Acpu-count: WORKER_PROCESSES: must be a number of workers 1-64, or auto [^\n]*\(got "\Q$bad\E"\)\n\z/,
        "WORKER_PROCESSES=$bad: one line naming it";
    is $out, '', "WORKER_PROCESSES=$bad: no count";
}


# ---- render-conf.sh: workers and the connection budget --------------------

my $keys = jwt_keys();
my %base = (
    DATABASE_URL   => 'postgresql://gateway:pw@127.0.0.1:5432/app',
    CLERK_JWT_KEY  => slurp($keys->{rsa_pub}),
    ENCRYPTION_KEY => 'ab' x 32,
    CRON_SECRET    => 'c' x 40,
    TENANT_MODULE  => $module,
    BACKEND_URL    => 'http://127.0.0.1:9',
    MCP_URL        => 'http://127.0.0.1:9',
);

# Renders with %base plus %set; returns { rc, err, conf, out }.
sub render {
    my (%set) = @_;
    my $run = "$tmp/render" . ++$seq;
    my %env = (%base, RUN_DIR => $run, %set);
    delete @env{ grep { !defined $env{$_} } keys %env };
    my ($rc, undef, $err) = run(\%env, $render, '--deploy', "$run/nginx.conf");
    return { rc => $rc, err => $err,
             conf => -e "$run/nginx.conf" ? slurp("$run/nginx.conf") : undef };
}

sub pool_of    { ($_[0]{conf} // '') =~ /^\s*tenant_database\s+"[^"]*"\s+pool=(\d+)\s/m ? $1 : undef }
sub workers_of { ($_[0]{conf} // '') =~ /^worker_processes\s+(\S+);$/m ? $1 : undef }

{
    my $r = render(WORKER_PROCESSES => 2, DATABASE_POOL_SIZE => 10);
    is $r->{rc}, 0, '2 workers, DATABASE_POOL_SIZE=10: renders' or diag $r->{err};
    is workers_of($r), 2, '... worker_processes 2';
    is pool_of($r), 4, '... pool=4: floor((10 - 1) / 2)';
    like $r->{err}, qr/^render-conf: worker_processes 2 \(WORKER_PROCESSES\)$/m,
        '... says the workers and why';
    like $r->{err}, qr/^render-conf: database connections: 2 workers × 4 \+ 1 listener = 9 of DATABASE_POOL_SIZE=10$/m,
        '... prints the arithmetic';

    $r = render(WORKER_PROCESSES => 4, DATABASE_POOL_SIZE => 5);
    is pool_of($r), 1, '4 workers, DATABASE_POOL_SIZE=5: pool=1';
    like $r->{err}, qr/4 workers × 1 \+ 1 listener = 5 of DATABASE_POOL_SIZE=5$/m, '... printed';

    $r = render(WORKER_PROCESSES => 1, DATABASE_POOL_SIZE => 2);
    is pool_of($r), 1, '1 worker, DATABASE_POOL_SIZE=2: pool=1';
    like $r->{err}, qr/database connections: 1 worker × 1 \+ 1 listener = 2 of DATABASE_POOL_SIZE=2$/m,
        '... printed';

    $r = render(WORKER_PROCESSES => 3, DATABASE_POOL_SIZE => undef);
    is pool_of($r), 4, 'DATABASE_POOL_SIZE unset: 4 per worker (as before)';
    like $r->{err}, qr/3 workers × 4 \+ 1 listener = 13 of DATABASE_POOL_SIZE=13 \(the default: 4 per worker \+ 1 listener\)$/m,
        '... printed as the default';

    $r = render(WORKER_PROCESSES => 2, DATABASE_POOL_SIZE => 100000);
    is pool_of($r), 256, 'DATABASE_POOL_SIZE=100000: at most 256 per worker (the directive\'s limit)';
    like $r->{err}, qr/2 workers × 256 \+ 1 listener = 513 of DATABASE_POOL_SIZE=100000 \(at most 256 per worker\)$/m,
        '... said';

    # both paths (the entrypoint, make run) render with the detected count
    $r = render(CGROUP_ROOT => tree('cgroup.controllers' => '', 'cpu.max' => "50000 100000\n"),
                PATH => fake_nproc(32), RENDER_CPU_COUNT => '0.5',
                DATABASE_POOL_SIZE => 3);
    is workers_of($r), 1, 'half a CPU in cpu.max on a 32-CPU host: worker_processes 1';
    is pool_of($r), 2, '... and the whole budget but the listener for it';
    like $r->{err}, qr/^render-conf: worker_processes 1 \(least of: cgroup v2 cpu\.max 50000\/100000 = 0\.5 CPUs; nproc 32; RENDER_CPU_COUNT 0\.5, rounded up\)$/m,
        '... and why';
    my ($line) = grep { /^render-conf: (worker_processes|database)/ } split /\n/, $r->{err};
    ok $r->{err} !~ /^render-conf: warning/m, '... no warning';
    ok $line, 'one line each';

    $r = render(CGROUP_ROOT => tree('cgroup.controllers' => '', 'cpu.max' => "x y z\n"),
                PATH => fake_nproc(2));
    is $r->{rc}, 0, 'a cpu.max that does not parse: renders all the same';
    like $r->{err}, qr/^render-conf: warning: cgroup v2 cpu\.max: cannot read "x y z"/m,
        '... with a warning';
    is workers_of($r), 2, '... from the affinity';
}

# Refusals: exit 1, one line naming the variable, no configuration.
for my $case (
    [{ WORKER_PROCESSES => 2, DATABASE_POOL_SIZE => 2 },
     qr/\Arender-conf: DATABASE_POOL_SIZE: 2 leaves no connection for each of the 2 workers: \(2 - 1 listener\) \/ 2 workers = 0 per worker; set at least 3, or a lower WORKER_PROCESSES\n\z/],
    [{ WORKER_PROCESSES => 8, DATABASE_POOL_SIZE => 5 },
     qr/\Arender-conf: DATABASE_POOL_SIZE: 5 leaves no connection for each of the 8 workers: \(5 - 1 listener\) \/ 8 workers = 0 per worker; set at least 9,/],
    [{ WORKER_PROCESSES => 1, DATABASE_POOL_SIZE => 1 },
     qr/\Arender-conf: DATABASE_POOL_SIZE: 1 leaves no connection for each of the 1 worker: \(1 - 1 listener\) \/ 1 worker = 0 per worker; set at least 2\n\z/],
    [{ DATABASE_POOL_SIZE => 'ten' },
     qr/\Arender-conf: DATABASE_POOL_SIZE: must be a positive integer, the connections one instance opens to PostgreSQL \(got "ten"\)\n\z/],
    [{ DATABASE_POOL_SIZE => '0' },
     qr/\Arender-conf: DATABASE_POOL_SIZE: must be a positive integer/],
    [{ WORKER_PROCESSES => 'many' },
     qr/\Arender-conf: WORKER_PROCESSES: must be a number of workers 1-64, or auto \(the container's CPUs\) \(got "many"\)\n\z/],
) {
    my ($set, $want) = @$case;
    my $what = join ' ', map { "$_=$set->{$_}" } sort keys %$set;
    my $r = render(%$set);
    is $r->{rc}, 1, "$what: refused";
    like $r->{err}, $want, "$what: one line, with the arithmetic" or diag $r->{err};
    ok !defined $r->{conf}, "$what: no configuration written";
}


# ---- the budget held: 2 workers, a slow database, many lookups -------------

unless (-f $module) {
    diag "$module not built (make module): the running gateway is not tested";
    done_testing();
    exit 0;
}

my $POOL_SIZE = 5;                  # 2 workers × 2 + 1 listener
my $SHARE     = 2;
my $ROLE      = 'gw051';            # the gateway's connections, whoever names them
my $N         = 24;                 # concurrent lookups, each a new org

my $pg = pg_start();
# no client_connection_check_interval on it: the budget holds without
sql("CREATE ROLE $ROLE LOGIN SUPERUSER");
my $url = $pg->{url} =~ s{^postgresql://postgres@}{postgresql://$ROLE\@}r;
isnt $url, $pg->{url}, 'the gateway connects as its own role';

my @orgs = map { create_tenant(tier => 'professional')->{clerk_organization_id} } 1 .. $N;
my @late = map { create_tenant(tier => 'professional')->{clerk_organization_id} } 1 .. 16;
my $echo = echo_start();

my $run  = "$tmp/gateway";
my $port = free_port();
my %env  = (%base, DATABASE_URL => $url, RUN_DIR => $run, PORT => $port,
            BACKEND_URL => "http://$echo->{addr}", MCP_URL => "http://$echo->{addr}",
            WORKER_PROCESSES => 2, DATABASE_POOL_SIZE => $POOL_SIZE);
my ($rc, undef, $err) = run(\%env, $render, '--deploy', "$run/nginx.conf");
is $rc, 0, 'render-conf.sh: 2 workers, DATABASE_POOL_SIZE=5' or diag $err;
like $err, qr/2 workers × 2 \+ 1 listener = 5 of DATABASE_POOL_SIZE=5/, '... 2 per worker';

my $ngx = fork // die "fork: $!";
if (!$ngx) {
    %ENV = (PATH => $ENV{PATH}, %{ TenantTest::_nginx_env() });
    open STDIN,  '<', '/dev/null';
    open STDOUT, '>', "$run/stdout.log" or die;
    open STDERR, '>', "$run/stderr.log" or die;
    exec $nginx, '-p', "$run/", '-e', 'stderr', '-c', "$run/nginx.conf",
         '-g', 'daemon off;'
        or POSIX::_exit(127);
}
END { if ($ngx) { kill 'KILL', $ngx; waitpid $ngx, 0 } }

my $up;
for (1 .. 100) {
    last if $up = IO::Socket::INET->new("127.0.0.1:$port");
    last if waitpid($ngx, WNOHANG) == $ngx;
    sleep 0.1;
}
ok $up, 'the gateway listens' or diag slurp("$run/stderr.log");
close $up if $up;

# The gateway's backends: application_name => count, and the total of
# its role.
sub backends {
    my %n;
    for my $row (sql(q{SELECT application_name, count(*) AS n FROM pg_stat_activity
                       WHERE usename = $1 GROUP BY 1}, $ROLE)) {
        $n{ $row->{application_name} } = $row->{n};
        $n{_total} += $row->{n};
    }
    $n{_total} //= 0;
    return \%n;
}

my ($seen) = retry_until(10, \&backends, sub { $_[0]{'ngx_tenant listener'} });
is $seen->{'ngx_tenant listener'}, 1, 'the listener: one connection, named "ngx_tenant listener"';

# Lookups block behind the lock; the pools fill up; the rest wait in them.
my $locker = DBI->connect("dbi:Pg:host=$pg->{socket};port=$pg->{port};dbname=capliquify",
                          'postgres', '', { RaiseError => 1, AutoCommit => 0 });
$locker->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');

my @tokens = map { mint_token(org => $_) } @orgs;
my @reqs = map {
    async_http(port => $port, path => '/api/products', timeout => 30,
               headers => [Authorization => "Bearer $_"])
} @tokens;

# the other users of the database: the health ping, the trial job
my $health = async_http(port => $port, path => '/api/health', timeout => 30);
my $cron = async_http(port => $port, method => 'POST', timeout => 30,
                      path => '/api/cron/expire-trials',
                      headers => [Authorization => "Bearer $base{CRON_SECRET}"]);

my (%most, $waiting_most);
my $until = time + 3;                         # under the pool's timeout=5s
while (time < $until) {
    my $n = backends();
    for (keys %$n) {
        $most{$_} = $n->{$_} if ($most{$_} // 0) < $n->{$_};
    }
    my $w = sql_value(q{SELECT count(*) FROM pg_stat_activity
                        WHERE usename = $1 AND wait_event_type = 'Lock'}, $ROLE);
    $waiting_most = $w if ($waiting_most // 0) < $w;
    sleep 0.05;
}
$locker->commit;
$locker->disconnect;

my @workers = grep { /^ngx_tenant worker \d+$/ } keys %most;
note join ', ', map { "$_: $most{$_}" } sort keys %most;
ok $waiting_most >= $SHARE, "lookups piled up behind the lock ($waiting_most at once)";
ok @workers >= 1, 'worker connections are named "ngx_tenant worker N"'
    or diag explain \%most;
ok !(grep { $most{$_} > $SHARE } @workers),
    "no worker ever had more than its share of $SHARE"
    or diag explain \%most;
ok +(grep { $most{$_} == $SHARE } @workers),
    'a worker used its whole share (the budget was the limit)'
    or diag explain \%most;
cmp_ok $most{_total}, '<=', $POOL_SIZE,
    "the instance never had more than DATABASE_POOL_SIZE=$POOL_SIZE connections";
is_deeply [sort grep { !/^(_total|ngx_tenant listener|ngx_tenant worker \d+)$/ } keys %most], [],
    'every connection of the gateway is a worker\'s pool or the listener'
    or diag explain \%most;

my %status;
$status{ wait_http($_)->{status} }++ for @reqs;
is_deeply \%status, { 200 => $N }, "the lock released: all $N requests answered 200"
    or diag explain \%status;
is wait_http($health)->{status}, 200, '/api/health answered meanwhile';
is wait_http($cron)->{status}, 200, 'the trial job ran (through the pool)';
cmp_ok backends()->{_total}, '<=', $POOL_SIZE, 'afterwards: still within the budget';

# tenant_db_connections{state="busy"}, from /metrics.
sub busy_gauge {
    my $r = http(port => $port, path => '/metrics');
    my ($n) = ($r->{body} // '') =~ /^tenant_db_connections\{state="busy"\} (\d+)$/m;
    return $n;
}

# The pids of the workers' backends; only those waiting for a lock with
# $waiting.
sub worker_pids {
    my ($waiting) = @_;
    return sort { $a <=> $b } map { $_->{pid} }
        sql(q{SELECT pid FROM pg_stat_activity
              WHERE usename = $1 AND application_name LIKE 'ngx_tenant worker %'
                AND (NOT $2 OR wait_event_type = 'Lock')}, $ROLE, $waiting ? 1 : 0);
}

my $send = sub {
    map { async_http(port => $port, path => '/api/products', timeout => 30,
                     headers => [Authorization => "Bearer $_"]) } @_
};

sub lock_tenants {
    my $dbh = DBI->connect("dbi:Pg:host=$pg->{socket};port=$pg->{port};dbname=capliquify",
                           'postgres', '', { RaiseError => 1, AutoCommit => 0 });
    $dbh->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');
    return $dbh;
}

# A stall longer than the pool's timeout (5 s), shorter than twice it,
# with traffic going on, and no setting on the role: the first lookups
# are answered 503 at 5 s, but their connections stay the pool's, busy,
# until their answers come (ngx_tenant_pg_hold): the server's backends,
# still waiting for the lock, are the pool's own, no new connection comes
# on top of them.  The later lookups queue for those connections and are
# answered when the lock goes.  (Until the pool kept them, it closed them
# at the timeout: their backends stayed, waiting for the lock, and new
# connections came on top, 6 to 9 for a budget of 5.)
{
    my @first  = map { mint_token(org => $_) } @late[0 .. 7];
    my @second = map { mint_token(org => $_) } @late[8 .. 15];
    my $mark = length slurp("$run/stderr.log");

    $locker = lock_tenants();
    my $start = time;
    my @wave1 = $send->(@first);
    my (@wave2, %top, @held, $busy, $released);
    while (time < $start + 8.5) {
        if (!@held && time > $start + 5.8) {
            # after the timeout, before the next lookups
            @held = worker_pids(1);
            $busy = busy_gauge();
        }
        @wave2 = $send->(@second) if !@wave2 && time > $start + 6.5;
        my $n = backends();
        $top{$_} = $n->{$_} for grep { ($top{$_} // 0) < $n->{$_} } keys %$n;
        sleep 0.05;
    }
    $locker->commit;
    $locker->disconnect;
    note 'stall over the timeout: ', join ', ', map { "$_: $top{$_}" } sort keys %top;

    my (%s1, %s2);
    $s1{ wait_http($_)->{status} }++ for @wave1;
    $s2{ wait_http($_)->{status} }++ for @wave2;
    is_deeply \%s1, { 503 => 8 }, 'a stall over the timeout: the first lookups fail (503)'
        or diag explain \%s1;
    is_deeply \%s2, { 200 => 8 }, '... the later ones, queued for the held connections, succeed once it ends'
        or diag explain \%s2;
    ok !(grep { /^ngx_tenant worker/ && $top{$_} > $SHARE } keys %top),
        "... no worker ever over its share of $SHARE, without client_connection_check_interval"
        or diag explain \%top;
    cmp_ok $top{_total}, '<=', $POOL_SIZE, "... nor the instance over DATABASE_POOL_SIZE=$POOL_SIZE";

    ok @held >= 1 && @held <= 2 * $SHARE,
        '... after the timeout, the workers\' backends are still there: ' . scalar(@held);
    is $busy, scalar(@held), '... each one busy in the metrics (tenant_db_connections{state="busy"})';
    my %now = map { $_ => 1 } worker_pids();
    is_deeply [grep { !$now{$_} } @held], [],
        '... and still the pool\'s after the stall: kept, not closed and replaced';

    my $log = substr slurp("$run/stderr.log"), $mark;
    my @answered = $log =~ /\[info\].*tenant: PostgreSQL answered \d+ms after the query was sent, nobody waits for it any more: answer \(PGRES_TUPLES_OK\) dropped, connection kept/g;
    is scalar(@answered), scalar(@held), '... their late answers dropped, logged once each ([info])';
    unlike $log, qr/still busy/, '... none reached the deadline';
}

# A stall past twice the timeout: a held connection is closed at that
# deadline, once, with a warning (its backend stays until its statement
# ends: the limit the README tells of); the requests queued for it get a
# new one, answered when the lock goes.  Nothing hangs, nothing is 500.
{
    my @new    = map { create_tenant(tier => 'professional')->{clerk_organization_id} } 1 .. 8;
    my @first  = map { mint_token(org => $_) } @new[0 .. 3];
    my @second = map { mint_token(org => $_) } @new[4 .. 7];
    my $mark = length slurp("$run/stderr.log");

    $locker = lock_tenants();
    my $start = time;
    my @wave1 = $send->(@first);
    my (@wave2, @held);
    while (time < $start + 11) {
        @held = worker_pids(1) if !@held && time > $start + 5.8;
        @wave2 = $send->(@second) if !@wave2 && time > $start + 8;
        sleep 0.05;
    }
    $locker->commit;
    $locker->disconnect;

    my (%s1, %s2);
    $s1{ wait_http($_)->{status} }++ for @wave1;
    $s2{ wait_http($_)->{status} }++ for @wave2;
    is_deeply \%s1, { 503 => 4 }, 'a stall past twice the timeout: the first lookups fail (503)'
        or diag explain \%s1;
    is_deeply \%s2, { 200 => 4 }, '... the later ones, on new connections, succeed once it ends'
        or diag explain \%s2;

    my $log = substr slurp("$run/stderr.log"), $mark;
    my @closed = $log =~ /\[warn\].*tenant: PostgreSQL still busy (\d+)ms after a query that nobody waits for was sent: connection closed, its backend may run on until the statement ends/g;
    ok @held >= 1, 'the workers\' backends held after the timeout: ' . scalar(@held);
    is scalar(@closed), scalar(@held), '... each closed at the deadline, one [warn] each';
    ok @closed && !(grep { $_ < 9900 || $_ > 10500 } @closed),
        "... twice the timeout after the query (@closed ms)";
}

# The server stopped (SIGSTOP): the connections whose queries time out
# stay held, busy, until the deadline (twice the timeout), then are
# closed; lookups sent meanwhile wait for a connection at most the
# timeout, as they did before (or, on a connection left idle, are held in
# turn): each is answered 503 in time, none hangs, none is 500.  After
# SIGCONT the gateway looks tenants up again.
{
    my @new = map { create_tenant(tier => 'professional')->{clerk_organization_id} } 1 .. 9;
    my @first  = map { mint_token(org => $_) } @new[0 .. 3];
    my @second = map { mint_token(org => $_) } @new[4 .. 7];
    my $after  = mint_token(org => $new[8]);

    pg_stall();
    my $start = time;
    my @wave1 = $send->(@first);
    my ($busy_held, $busy_after, @wave2, $wave2_at, @series);
    while (time < $start + 11.5) {
        $busy_held = busy_gauge() if !defined $busy_held && time > $start + 7;
        $busy_after = busy_gauge() if !defined $busy_after && time > $start + 10.6;
        push @series, sprintf '%.1f:%s', time - $start, busy_gauge() if time > $start + 6;
        if (!@wave2 && time > $start + 6.2) {
            @wave2 = $send->(@second);
            $wave2_at = time;
        }
        sleep 0.05;
    }
    my (@r1, @r2);
    push @r1, wait_http($_) for @wave1;
    push @r2, wait_http($_) for @wave2;
    pg_unstall();

    my @late = grep { $_->{status} != 503 || $_->{elapsed} > 6.5 } @r1, @r2;
    is_deeply [map { "$_->{status} $_->{elapsed}" } @late], [],
        'server stopped: every lookup answered 503 within the timeout (+1.5 s), none hangs, none 500';
    ok $busy_held >= 1, "... after the timeout, the held connections busy in the metrics ($busy_held)";
    cmp_ok $busy_after, '<', $busy_held,
        "... past the deadline, the first ones closed: $busy_after busy (the later lookups' own)"
        or diag "@series";

    my ($r) = retry_until(10, sub {
        http(port => $port, path => '/api/products', timeout => 10,
             headers => [Authorization => "Bearer $after"]) }, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, '... after SIGCONT, a lookup: 200';
    my ($n) = retry_until(10, \&backends, sub { $_[0]{_total} <= $POOL_SIZE });
    cmp_ok $n->{_total}, '<=', $POOL_SIZE, '... within the budget';
}

kill 'QUIT', $ngx;
my $done;
for (1 .. 100) {
    last if $done = waitpid($ngx, WNOHANG) == $ngx;
    sleep 0.1;
}
ok $done, 'nginx stops';
$ngx = 0 if $done;

my $log = slurp("$run/stderr.log");
unlike $log, qr/\[(alert|emerg|crit)\]|exited on signal|AddressSanitizer/,
    'no alert or crash';
is_deeply [TenantTest::blocking_calls($log)], [], 'no blocking call (the guard)';

done_testing();
