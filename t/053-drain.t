#!/usr/bin/env perl
# Graceful deploys: scripts/entrypoint.sh run for real, signalled while
# requests are in flight.  A deploy on Render sends SIGTERM to the
# container's main process and kills it after maxShutdownDelaySeconds;
# nginx takes SIGTERM as a fast stop, so the entrypoint keeps nginx as its
# child and turns TERM (and QUIT, INT) into nginx's graceful SIGQUIT,
# bounded by worker_shutdown_timeout (SHUTDOWN_TIMEOUT).
#
#   1  SHUTDOWN_TIMEOUT: rendered as worker_shutdown_timeout, 25 s by
#      default; 0, 296, "10s", "ten": one line naming it
#   2  SIGTERM, SIGQUIT, SIGINT, and SIGTERM twice, to the entrypoint with
#      requests in flight (three slow /api/ requests with 100 KB bodies, a
#      slow one on a reused keep-alive connection, an /mcp/ event stream
#      of 1.6 s) and an idle keep-alive connection: a new connection is
#      refused at once, the idle one is closed, every request in flight
#      completes with 200 and its whole body, the entrypoint exits 0, the
#      nginx master and its workers are gone
#   3  the same as PID 1 of a PID namespace (unshare), as in a container:
#      bash there gets only the signals it traps
#   4  a stream longer than SHUTDOWN_TIMEOUT (2 s): cut at the bound, and
#      the entrypoint still exits 0 within the bound and a margin
#   5  SIGTERM with nothing in flight: exit 0 at once; SIGTERM while it
#      starts: exit 0, no nginx left
#   6  SIGHUP: forwarded, nginx reloads (new workers), the entrypoint
#      stays; nginx killed by itself: the entrypoint exits with its status

use strict;
use warnings;

use FindBin          qw($Bin);
use lib              "$Bin/lib";
use TenantTest;
use Errno            qw(ECONNREFUSED);
use IO::Select       ();
use IO::Socket::INET ();
use JSON::XS         ();
use POSIX            qw(WNOHANG);
use Time::HiRes      qw(sleep time);
use Test::More;

my $root   = project_root();
my $entry  = "$root/scripts/entrypoint.sh";
my $module = $ENV{TENANT_MODULE} || "$root/build/nginx/objs/ngx_tenant_module.so";
my $tmp    = TenantTest::tmpdir();

plan skip_all => "$module not built (make module)" unless -f $module;

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or return '';
    local $/;
    return scalar(<$f>) // '';
}

my $pg   = pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active');
my $AUTH = 'Bearer ' . mint_token(org => $T->{clerk_organization_id},
                                  exp => int(time) + 3600);
my $enc  = 'ab' x 32;
my $cron = 'c' x 40;


# ---- the upstream ----------------------------------------------------------
#
# One process per connection, so that any number of requests wait at once.
#   /api/slow?id=ID&ms=MS&bytes=N   waits MS ms, then N bytes (body_of)
#   /mcp/stream?id=ID&n=N&ms=MS     an event stream (chunked): N events,
#                                   one every MS ms
#   anything else                   "fast", at once
# Every request with an id is recorded in $seen when it arrives.

my $seen = "$tmp/upstream-seen";

sub body_of {
    my ($id, $bytes) = @_;
    my $unit = "$id:0123456789abcdef\n";
    return substr($unit x (int($bytes / length $unit) + 1), 0, $bytes);
}

sub event_of { "id: $_[0]\ndata: {\"n\":$_[0]}\n\n" }

sub upstream_one {
    my ($c) = @_;
    local $SIG{ALRM} = sub { POSIX::_exit(0) };
    alarm 30;
    my $buf = '';
    while ($buf !~ /\r\n\r\n/) {
        sysread($c, $buf, 65536, length $buf) or return;
    }
    my ($path) = $buf =~ m{^\S+ (\S+)};
    my %q = ($path =~ /[?&](\w+)=([\w-]+)/g);
    if (defined $q{id}) {
        open my $f, '>>', $seen or die "$seen: $!";
        syswrite $f, "$q{id}\n";
        close $f;
    }
    if ($path =~ m{^/api/slow}) {
        sleep $q{ms} / 1000;
        my $body = body_of($q{id}, $q{bytes});
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            . "Content-Length: " . length($body) . "\r\n"
            . "Connection: close\r\n\r\n" . $body;
    } elsif ($path =~ m{^/mcp/stream}) {
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            . "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
            . "Connection: close\r\n\r\n" or return;
        for my $k (1 .. $q{n}) {
            my $e = event_of($k);
            syswrite $c, sprintf("%x\r\n%s\r\n", length $e, $e) or return;
            sleep $q{ms} / 1000;
        }
        syswrite $c, "0\r\n\r\n";
    } else {
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            . "Content-Length: 4\r\nConnection: close\r\n\r\nfast";
    }
}

my $up = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                               Listen => 128, ReuseAddr => 1)
    or die "upstream: $!";
my $up_port = $up->sockport;
my $up_pid  = fork // die "fork: $!";
if (!$up_pid) {
    setpgrp 0, 0;
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
    $SIG{CHLD} = 'IGNORE';
    $SIG{PIPE} = 'IGNORE';
    while (1) {
        my $c = $up->accept or next;
        my $k = fork;
        if (defined $k && !$k) {
            close $up;
            eval { upstream_one($c) };
            POSIX::_exit(0);
        }
        close $c;
    }
}
close $up;
my $owner = $$;
END { kill 'TERM', -$up_pid if $up_pid && $$ == $owner }

# Waits until the upstream has seen every id of @ids.
sub upstream_saw {
    my (@ids) = @_;
    my $deadline = time + 5;
    while (time < $deadline) {
        my %got = map { $_ => 1 } split /\n/, slurp($seen);
        return 1 unless grep { !$got{$_} } @ids;
        sleep 0.02;
    }
    return 0;
}


# ---- the entrypoint --------------------------------------------------------

my %good = (
    DATABASE_URL   => $pg->{url},
    CLERK_JWT_KEY  => slurp($keys->{rsa_pub}),
    ENCRYPTION_KEY => $enc,
    CRON_SECRET    => $cron,
    TENANT_MODULE  => $module,
    NGINX          => $TenantTest::NGINX,
    BACKEND_URL    => "http://127.0.0.1:$up_port",
    MCP_URL        => "http://127.0.0.1:$up_port",
    LOG_LEVEL      => 'info',
    %{ TenantTest::_nginx_env() },       # the blocking-call guard
);

# Variables of the guide that must not leak in from the caller.
my @ours = qw(DATABASE_URL CLERK_JWT_KEY CLERK_JWKS_FILE CLERK_JWKS_URL
              CLERK_SECRET_KEY RESOLVER CLERK_ISSUER
              CLERK_AUTHORIZED_PARTIES ENCRYPTION_KEY CRON_SECRET BACKEND_URL
              MCP_URL DEMO_PORT CORS_ORIGIN RATE_LIMIT_MAX RATE_LIMIT_WINDOW
              MAX_REQUEST_SIZE LOG_LEVEL UPGRADE_URL METRICS_ALLOW PORT
              RUN_DIR TENANT_MODULE UPSTREAM_CA_FILE NODE_ENV MIGRATE_ON_START
              TEST_ONLY_CLERK_SECRET_TO_LOOPBACK SHUTDOWN_TIMEOUT NGINX);

my $seq = 0;

sub env_for {
    my (%set) = @_;
    my %env = (%good, RUN_DIR => "$tmp/run" . ++$seq, PORT => free_port(),
               %set);
    delete @env{ grep { !defined $env{$_} } keys %env };
    return \%env;
}

sub spawn {
    my ($env, $out, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        delete @ENV{@ours};
        $ENV{$_} = $env->{$_} for grep { $_ ne 'label' } keys %$env;
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT);
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', "$out.out" or die;
        open STDERR, '>', "$out.err" or die;
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

# /proc: the parent pid of a process, its children, whether it is alive
# (a zombie is not).
sub ppid_of {
    my $s = slurp("/proc/$_[0]/stat");
    return $s =~ /^\d+ \(.*\) (\S) (\d+)/s ? ($2, $1) : ();
}

sub children_of {
    my ($pid) = @_;
    return sort { $a <=> $b } grep { ((ppid_of($_))[0] // 0) == $pid }
        map { m{/proc/(\d+)/stat$} ? $1 : () } glob '/proc/[0-9]*/stat';
}

sub alive_pid {
    my ($pid) = @_;
    my (undef, $state) = ppid_of($pid);
    return defined $state && $state ne 'Z';
}

sub master_of {
    my ($r) = @_;
    my ($m) = grep { slurp("/proc/$_/cmdline") =~ /^nginx: master/ }
        children_of($r->{pid});
    return $m;
}

sub workers_of {
    my ($master) = @_;
    return grep { slurp("/proc/$_/cmdline") =~ /^nginx: worker/ }
        children_of($master);
}

# Starts the entrypoint (through @wrap: unshare ...) and waits for
# /api/health.  Returns { pid (the entrypoint), env, out, master, workers }.
sub start {
    my ($env, @wrap) = @_;
    my $out = "$tmp/entry" . ++$seq;
    my $pid = spawn($env, $out, @wrap, $entry);
    my $r = { pid => $pid, env => $env, out => $out };
    my $deadline = time + 20;
    my $status = 0;
    while (time < $deadline) {
        last if waitpid($pid, WNOHANG) == $pid;
        $status = http(port => $env->{PORT}, path => '/api/health',
                       timeout => 2)->{status};
        last if $status == 200;
        sleep 0.05;
    }
    is $status, 200, "$env->{label}: /api/health answers"
        or diag slurp("$out.err");
    if (@wrap) {            # unshare forks: the entrypoint is its child
        ($r->{pid}) = children_of($pid);
        $r->{wrapper} = $pid;
    }
    $r->{master}  = master_of($r);
    ok $r->{master}, "$env->{label}: nginx's master is the entrypoint's child";
    # (an entrypoint that execs nginx: the rest of the case still runs)
    $r->{master} //= $r->{pid}
        if slurp("/proc/$r->{pid}/cmdline") =~ /^nginx: master/;
    $r->{workers} = [ workers_of($r->{master} // 0) ];
    ok @{ $r->{workers} }, "$env->{label}: nginx's workers run";
    return $r;
}

# Waits up to $secs for the entrypoint (or its wrapper) to exit; returns
# its wait status, or undef (and kills it) when it does not.
sub finish {
    my ($r, $secs) = @_;
    my $pid = $r->{wrapper} // $r->{pid};
    my $deadline = time + $secs;
    while (time < $deadline) {
        return $? if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return undef;
}

# The nginx log lines that fail a test (TenantTest's final check does not
# see this log): alerts, crashes, blocking calls.
sub log_ok {
    my ($r, $label) = @_;
    my $err = slurp("$r->{out}.err");
    my @bad = grep { /\[(alert|emerg)\]|exited on signal|Sanitizer/ } split /\n/, $err;
    push @bad, TenantTest::blocking_calls($err);
    ok !@bad, "$label: no alert, crash or blocking call in nginx's log"
        or diag join "\n", @bad;
    unlike slurp("$r->{out}.out") . $err, qr/\Q$enc\E|\Q$cron\E/,
        "$label: no secret in the output";
}

sub gone {
    my ($r, $label) = @_;
    my @left = grep { alive_pid($_) } $r->{master}, @{ $r->{workers} };
    ok !@left, "$label: nginx's master and workers are gone" or diag "left: @left";
    kill 'KILL', @left if @left;
}


# ---- clients ---------------------------------------------------------------

# A keep-alive connection: a fast request, then (in flight at the signal)
# a slow one on the same connection.  In a child, like async_http.
sub keepalive_pair {
    my ($port, $id) = @_;
    pipe my $rd, my $wr or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $rd;
        my @res;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Timeout => 5);
        for my $path ('/api/fast', "/api/slow?id=$id&ms=1500&bytes=100000") {
            last unless $s;
            syswrite $s, "GET $path HTTP/1.1\r\nHost: localhost\r\n"
                . "Authorization: $AUTH\r\n\r\n";
            my $raw = '';
            my $sel = IO::Select->new($s);
            while (!TenantTest::_complete($raw)) {
                last unless $sel->can_read(10);
                sysread($s, $raw, 65536, length $raw) or last;
            }
            my ($head, $body) = split /\r\n\r\n/, $raw, 2;
            my ($status) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
            my ($conn) = ($head // '') =~ /\r\nConnection: *([^\r]*)/i;
            push @res, { status => $status // 0, body => $body // '',
                         connection => $conn // '' };
        }
        print $wr JSON::XS->new->encode(\@res);
        close $wr;
        POSIX::_exit(0);
    }
    close $wr;
    return { pid => $pid, fh => $rd };
}

sub keepalive_done { http_done($_[0]) }

sub keepalive_wait {
    my ($h) = @_;
    my $json = do { local $/; readline $h->{fh} };
    close $h->{fh};
    waitpid $h->{pid}, 0;
    return JSON::XS->new->decode($json || '[]');
}

# An idle keep-alive connection: one request answered, left open.
sub idle_keepalive {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 5) or die "connect: $!";
    syswrite $s, "GET /api/fast HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: $AUTH\r\n\r\n";
    my $raw = '';
    my $sel = IO::Select->new($s);
    while (!TenantTest::_complete($raw)) {
        last unless $sel->can_read(5);
        sysread($s, $raw, 65536, length $raw) or last;
    }
    return ($s, $raw =~ m{^HTTP/1\.1 200 .*fast\z}s);
}

# Whether a new connection is refused, within $secs.
sub refused_within {
    my ($port, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Timeout => 1);
        return 1 if !$s && $! == ECONNREFUSED;
        close $s if $s;
        sleep 0.02;
    }
    return 0;
}

# Whether the server closes $s within $secs (EOF, or a reset).
sub closed_within {
    my ($s, $secs) = @_;
    return 0 unless IO::Select->new($s)->can_read($secs);
    my $n = sysread $s, my $buf, 4096;
    return !$n;
}

sub api { async_http(port => $_[0], path => $_[1], timeout => 15,
                     headers => [Authorization => $AUTH]) }


# ---- 1. SHUTDOWN_TIMEOUT ----------------------------------------------------

{
    my $conf = "$tmp/render.conf";
    my $run = sub {
        my ($env) = @_;
        my $out = "$tmp/render" . ++$seq;
        waitpid spawn($env, $out, "$root/scripts/render-conf.sh", '--deploy', $conf), 0;
        return ($? >> 8, slurp("$out.err"));
    };
    my ($rc, $err) = $run->(env_for(label => 'default'));
    is $rc, 0, 'SHUTDOWN_TIMEOUT unset: renders' or diag $err;
    like slurp($conf), qr/^worker_shutdown_timeout 25s;$/m,
        'SHUTDOWN_TIMEOUT unset: worker_shutdown_timeout 25s';
    ($rc, $err) = $run->(env_for(SHUTDOWN_TIMEOUT => ' 007 '));
    is $rc, 0, 'SHUTDOWN_TIMEOUT=" 007 ": renders' or diag $err;
    like slurp($conf), qr/^worker_shutdown_timeout 7s;$/m,
        'SHUTDOWN_TIMEOUT=" 007 ": worker_shutdown_timeout 7s';
    for my $bad ('0', '296', '10s', 'ten', '-1', '1' . '0' x 12) {
        ($rc, $err) = $run->(env_for(SHUTDOWN_TIMEOUT => $bad));
        is $rc, 1, "SHUTDOWN_TIMEOUT=$bad: exit 1";
        like $err, qr/\Arender-conf: SHUTDOWN_TIMEOUT: must be 1-295 seconds[^\n]*\n\z/,
            "SHUTDOWN_TIMEOUT=$bad: one line naming it" or diag $err;
    }
}


# ---- 2, 3. signals with requests in flight ---------------------------------

my $case = 0;

sub drain_case {
    my ($label, $signals, @wrap) = @_;
    my $env = env_for(label => $label);
    my $port = $env->{PORT};
    my $r = start($env, @wrap);
    return unless $r->{master};
    my $n = ++$case;

    my ($idle, $idle_ok) = idle_keepalive($port);
    ok $idle_ok, "$label: an idle keep-alive connection (one answer)";

    my %slow = map { ("s$n-$_" => api($port, "/api/slow?id=s$n-$_&ms=1500&bytes=100000")) } 1 .. 3;
    my $pair   = keepalive_pair($port, "k$n");
    my $stream = api($port, "/mcp/stream?id=m$n&n=8&ms=200");
    ok upstream_saw(keys %slow, "k$n", "m$n"),
        "$label: five requests in flight at the upstream";

    my ($first, @more) = @$signals;
    kill $first, $r->{pid};
    my $t0 = time;

    ok refused_within($port, 1), "$label: a new connection is refused at once";
    my @done = grep { http_done($_) } values %slow, $stream;
    push @done, 'keep-alive' if keepalive_done($pair);
    ok !@done, "$label: ... while the requests in flight are still running"
        or diag scalar(@done) . ' done';
    ok closed_within($idle, 1), "$label: the idle keep-alive connection is closed";
    for my $sig (@more) {
        kill $sig, $r->{pid};
        pass "$label: then SIG$sig, during the drain";
    }

    for my $id (sort keys %slow) {
        my $res = wait_http($slow{$id});
        is $res->{status}, 200, "$label: /api/slow $id: 200" or diag explain $res;
        ok $res->{body} eq body_of($id, 100000), "$label: /api/slow $id: the whole body";
    }
    my @pair = @{ keepalive_wait($pair) };
    is $pair[0]{status}, 200, "$label: keep-alive: the first request, before the signal";
    is $pair[1]{status}, 200, "$label: keep-alive: the second, in flight: 200";
    ok(($pair[1]{body} // '') eq body_of("k$n", 100000),
       "$label: keep-alive: its whole body");
    is lc($pair[1]{connection} // ''), 'close',
        "$label: keep-alive: \"Connection: close\" with it";
    my $res = wait_http($stream);
    is $res->{status}, 200, "$label: /mcp/ stream: 200";
    is $res->{body}, join('', map { event_of($_) } 1 .. 8),
        "$label: /mcp/ stream: every event";

    my $st = finish($r, 10);
    my $took = time - $t0;
    is $st, 0, "$label: the entrypoint exits 0"
        or diag 'wait status ' . ($st // 'none: killed') . "\n" . slurp("$r->{out}.err");
    cmp_ok $took, '<', 4, "$label: ... once the requests are done";
    gone($r, $label);
    like slurp("$r->{out}.err"), qr/^entrypoint: SIG$first: graceful stop/m,
        "$label: the entrypoint says so";
    log_ok($r, $label);
}

drain_case('SIGTERM', ['TERM']);
drain_case('SIGQUIT', ['QUIT']);
drain_case('SIGINT',  ['INT']);
drain_case('SIGTERM twice', ['TERM', 'TERM']);

SKIP: {
    system('unshare --pid --fork true >/dev/null 2>&1') == 0
        or skip 'unshare --pid not permitted here', 1;
    drain_case('PID 1, SIGTERM', ['TERM'], qw(unshare --pid --fork));
}


# ---- 4. a stream longer than SHUTDOWN_TIMEOUT -------------------------------

{
    my $label = 'SHUTDOWN_TIMEOUT=2';
    my $env = env_for(label => $label, SHUTDOWN_TIMEOUT => 2);
    my $r = start($env);
    my $stream = api($env->{PORT}, "/mcp/stream?id=long&n=40&ms=200");
    ok upstream_saw('long'), "$label: an 8 s stream in flight";
    sleep 0.3;
    kill 'TERM', $r->{pid};
    my $t0 = time;
    my $res = wait_http($stream);
    my $cut = $stream->{start} + ($res->{elapsed} // 0) - $t0;
    my @events = $res->{body} =~ /^data: /mg;
    ok @events > 1 && @events < 40,
        "$label: the stream is cut (" . scalar(@events) . " of 40 events)";
    ok $cut > 1.5 && $cut < 3.5, "$label: ... at the bound (after ${\ sprintf '%.1f', $cut} s)";
    my $st = finish($r, 10);
    my $took = time - $t0;
    is $st, 0, "$label: the entrypoint exits 0" or diag slurp("$r->{out}.err");
    cmp_ok $took, '<', 4, "$label: ... within the bound and a margin";
    gone($r, $label);
    log_ok($r, $label);
}


# ---- 5. nothing in flight; a signal while it starts -------------------------

{
    my $label = 'idle SIGTERM';
    my $r = start(env_for(label => $label));
    kill 'TERM', $r->{pid};
    my $t0 = time;
    my $st = finish($r, 10);
    is $st, 0, "$label: exit 0";
    cmp_ok time - $t0, '<', 1, "$label: at once";
    gone($r, $label);
    log_ok($r, $label);
}

# Whether a process has a handler for SIGTERM (/proc: SigCgt, bit 15).
sub catches_term {
    my ($mask) = slurp("/proc/$_[0]/status") =~ /^SigCgt:\s*([0-9a-f]+)/m;
    return defined $mask && (hex(substr $mask, -4) & (1 << 14));
}

# As soon as the entrypoint traps SIGTERM (during render-conf.sh, before
# nginx starts), and 0.3 s after the start (nginx -t, nginx starting).
for my $delay ('trap', 0.3) {
    my $label = $delay eq 'trap' ? 'SIGTERM as soon as it is trapped'
                                 : "SIGTERM ${delay}s after the start";
    my $env = env_for(label => $label);
    my $out = "$tmp/entry" . ++$seq;
    my $pid = spawn($env, $out, $entry);
    if ($delay eq 'trap') {
        my $deadline = time + 5;
        sleep 0.001 until (slurp("/proc/$pid/cmdline") =~ /entrypoint\.sh/
                           && catches_term($pid)) || time > $deadline;
    } else {
        sleep $delay;
    }
    kill 'TERM', $pid;
    my $st = finish({ pid => $pid }, 10);
    is $st, 0, "$label: exit 0"
        or diag 'wait status ' . ($st // 'none') . "\n" . slurp("$out.err");
    like slurp("$out.err"), qr/^entrypoint: SIGTERM: stopping before nginx starts$/m,
        "$label: before nginx started" if $delay eq 'trap';
    my @left = grep { slurp("/proc/$_/cmdline") =~ /\Q$env->{RUN_DIR}\E/ }
        map { m{/proc/(\d+)/cmdline$} ? $1 : () } glob '/proc/[0-9]*/cmdline';
    ok !@left, "$label: no nginx left";
    kill 'KILL', @left if @left;
}


# ---- 6. SIGHUP; nginx dying by itself ----------------------------------------

{
    my $label = 'SIGHUP';
    my $r = start(env_for(label => $label));
    my @old = @{ $r->{workers} };
    kill 'HUP', $r->{pid};
    my @new;
    for (1 .. 100) {
        my %old = map { $_ => 1 } @old;
        @new = grep { !$old{$_} } workers_of($r->{master});
        last if @new && !grep { alive_pid($_) } @old;
        sleep 0.05;
    }
    ok @new && !grep({ alive_pid($_) } @old),
        "$label: nginx reloaded (new workers, the old ones gone)";
    ok alive_pid($r->{pid}), "$label: the entrypoint runs on";
    is http(port => $r->{env}{PORT}, path => '/api/health')->{status}, 200,
        "$label: and serves";
    $r->{workers} = \@new;
    kill 'TERM', $r->{pid};
    is finish($r, 10), 0, "$label: then SIGTERM: exit 0";
    gone($r, $label);
}

{
    my $label = 'nginx killed';
    my $r = start(env_for(label => $label));
    kill 'KILL', $r->{master};
    my $st = finish($r, 5);
    is $st, 137 << 8, "$label: the entrypoint exits 137 (128 + SIGKILL)";
    like slurp("$r->{out}.err"), qr/^entrypoint: nginx exited by itself \(status 137\)$/m,
        "$label: and says so";
    # its orphaned workers, started by this test
    kill 'KILL', grep { alive_pid($_) } @{ $r->{workers} };
}

done_testing;
