#!/usr/bin/perl
# The request path never blocks: no blocking libpq call, no name lookup,
# no sleep and no file read in the nginx glue.  Configuration-time file
# reads and name resolution live in ngx_tenant_module.c only, in the
# directive handlers (checked below by function).
#
# This grep sees names in our own sources only: not a blocking call made
# inside a library we call (libpq's own lookups, a poll() inside
# PQgetResult), not one reached through a pointer or a macro, not whether
# a call runs at configuration time or on a worker.  The runtime check is
# the blocking-call guard (t/guard/blockguard.c) that every integration
# test preloads into nginx; the second half of this file proves that it
# reports what it must, and only that.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use TenantTest;
use POSIX ();

my $root = "$FindBin::Bin/..";

my @glue = (glob("$root/src/ngx_tenant_*.c"), "$root/ngx_tenant_module.c");
ok(@glue > 3, 'found the nginx glue sources');

my @forbidden = (
    qr/\bPQexec\s*\(/, qr/\bPQexecParams\s*\(/, qr/\bPQexecPrepared\s*\(/,
    qr/\bPQconnectdb\w*\s*\(/, qr/\bPQsetdbLogin\s*\(/, qr/\bPQcancel\s*\(/,
    qr/\bPQping\w*\s*\(/, qr/\bPQgetCancel\s*\(/, qr/\bPQreset\s*\(/,
    qr/\bgetaddrinfo\s*\(/, qr/\bgethostbyname\w*\s*\(/,
    qr/\bsleep\s*\(/, qr/\busleep\s*\(/, qr/\bnanosleep\s*\(/,
    qr/\bngx_msleep\s*\(/, qr/\bsystem\s*\(/, qr/\bpopen\s*\(/,
    qr/\bfopen\s*\(/,
);

for my $file (@glue) {
    open my $fh, '<', $file or die "$file: $!";
    my $src = do { local $/; <$fh> };
    $src =~ s{/\*.*?\*/}{}gs;              # comments may name them

    my @hits = grep { $src =~ $_ } @forbidden;
    (my $short = $file) =~ s{.*/}{};
    ok(!@hits, "$short calls nothing that blocks")
        or diag("blocking calls: @hits");
}

# The blocking-at-configuration-time calls stay in configuration code.

open my $fh, '<', "$root/ngx_tenant_module.c" or die $!;
my $module = do { local $/; <$fh> };

for my $call (qw(ngx_inet_resolve_host ngx_read_file)) {
    my @in = ($module =~ /^(\w+)\([^)]*\)\s*\{(?:(?!^\}).)*\b$call\b/msg);
    ok(@in, "$call is used at configuration time only");
    for my $fn (@in) {
        like($fn, qr/^ngx_tenant_(conninfo|read_file)$/,
             "$call is called from $fn, a configuration function");
    }
}

# The libpq connection is started with parameters whose host names were
# resolved at configuration time: PQconnectStart with a conninfo string
# would resolve on the worker.
my @pg = grep { /ngx_tenant_pg\.c$/ } @glue;
open $fh, '<', $pg[0] or die $!;
my $pgsrc = do { local $/; <$fh> };
unlike($pgsrc, qr/\bPQconnectStart\s*\(/, 'no PQconnectStart(conninfo)');
like($pgsrc, qr/\bPQconnectStartParams\s*\(/, 'PQconnectStartParams');
like($pgsrc, qr/\bPQflush\s*\(/, 'PQflush after sends');
like($pgsrc, qr/\bPQsocket\s*\(/, 'PQsocket re-read');


# ---- the runtime guard -------------------------------------------------------
#
# build/guard/blockguard_test makes one call, as a worker that serves
# (after an epoll_wait) unless the case is before-*; the guard preloaded
# must write its marker for the blocking ones, and nothing for the others.

my $guard = "$root/build/guard/blockguard.so";
my $prog  = "$root/build/guard/blockguard_test";
BAIL_OUT("$guard or $prog missing: make guard") unless -f $guard && -x $prog;

# Runs a case; returns what it wrote on stderr (the guard's lines).
sub guarded {
    my ($case, %env) = @_;

    local $ENV{LD_PRELOAD} = $guard;
    local @ENV{keys %env} = values %env;
    my @pg  = $case =~ /^(pq|connectdb)/ ? pg_start(migrate => 0)->{conninfo}
                                          : ();
    my $err = TenantTest::tmpdir() . "/guard.err";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDERR, '>', $err or die "$err: $!";
        exec $prog, $case, @pg or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    is($?, 0, "guard: $case ran");
    open my $fh, '<', $err or die "$err: $!";
    return do { local $/; <$fh> } // '';
}

my @reported = (
    [sleep                 => qr/BLOCKING CALL: sleep\(1\) \(pid \d+\) at /],
    [usleep                => qr/BLOCKING CALL: usleep\(1000\)/],
    [nanosleep             => qr/BLOCKING CALL: nanosleep/],
    ['getaddrinfo-name'    => qr/BLOCKING CALL: getaddrinfo\("localhost"\)/],
    [gethostbyname         => qr/BLOCKING CALL: gethostbyname\("localhost"\)/],
    [getpwuid              => qr/BLOCKING CALL: getpwuid\(\d+\)/],
    ['poll-timeout'        => qr/BLOCKING CALL: poll with a timeout of 1 ms/],
    ['connect-blocking'    => qr/BLOCKING CALL: connect\(\) on a blocking/],
    ['read-pipe-blocking'  => qr/BLOCKING CALL: read\(\) on a blocking socket/],
    ['pq-exec'             => qr/BLOCKING CALL: PQexec \(/],
    ['pq-getresult-busy'   => qr/BLOCKING CALL: PQgetResult while PQisBusy/],
    [connectdb             => qr/BLOCKING CALL: PQconnectdb \(/],
);

for my $c (@reported) {
    my ($case, $want) = @$c;
    my $err = guarded($case);
    like($err, $want, "guard reports $case");
    like($err, qr/ at .*blockguard_test\+0x/, "  with the stack (the caller)")
        if $case eq 'sleep';
}

# a libpq wait inside PQgetResult shows as the poll it makes, too
like(guarded('pq-getresult-busy'),
     qr/BLOCKING CALL: poll with a timeout of -1 ms.* < libpq/,
     'guard reports the poll() inside libpq\'s PQgetResult');

# files: only from the module's code (TENANT_BLOCKGUARD_CODE names it)
is(guarded('fopen'), '', 'guard: fopen outside the module\'s code passes');
like(guarded('fopen', TENANT_BLOCKGUARD_CODE => 'blockguard_test'),
     qr/BLOCKING CALL: fopen\("\/etc\/passwd"\) of a file/,
     'guard reports fopen from the module\'s code');

for my $case (qw(before-sleep getaddrinfo-numeric poll-zero connect-nonblocking
                 read-pipe-nonblocking pq-getresult-ready)) {
    is(guarded($case), '', "guard lets $case pass");
}

done_testing();
