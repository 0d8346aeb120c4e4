#!/usr/bin/perl
# The request path never blocks: no blocking libpq call, no name lookup,
# no sleep and no file read in the nginx glue.  Configuration-time file
# reads and name resolution live in ngx_tenant_module.c only, in the
# directive handlers (checked below by function).

use strict;
use warnings;
use Test::More;
use FindBin;

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

done_testing();
