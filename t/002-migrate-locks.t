#!/usr/bin/perl
# scripts/migrate.sh under contention, through PgBouncer (Debian's) in
# transaction mode with a password:
#   (a) two runs at once are mutually exclusive, file by file, and no
#       advisory lock is left on any server connection afterwards (a
#       session lock through transaction pooling is taken on one server
#       connection and "released" on another);
#   (b) the waits are bounded: behind a long transaction holding a lock on
#       public.tenants, a migration fails after MIGRATE_LOCK_TIMEOUT, a
#       slow statement after MIGRATE_STATEMENT_TIMEOUT, and a second run
#       gives up on the first after MIGRATE_STATEMENT_TIMEOUT, each with
#       one line naming it and nothing half-applied;
#   (c) the password is on no process's command line (ps, /proc/*/cmdline)
#       while migrate.sh runs, nor in its messages.
# MIGRATE_SCRIPT: another migrate.sh (e.g. main's) to run these against.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use File::Path  qw(make_path);
use POSIX       qw(:sys_wait_h _exit setpgid);
use Time::HiRes qw(time sleep);

plan skip_all => 'pgbouncer not installed (scripts/deps.sh)'
    unless -x '/usr/sbin/pgbouncer';

my $root    = project_root();
my $migrate = $ENV{MIGRATE_SCRIPT} || "$root/scripts/migrate.sh";
my $pg      = pg_start(tcp => 1, migrate => 0);
my $tmp     = TenantTest::tmpdir();

# Characters a URL must encode and a key=value string must quote.
my $PW = sprintf "pw-%08x\@:/?&=%% x'\\\"y", int rand 2**32;
(my $pw_url = $PW) =~ s/([^A-Za-z0-9._~-])/sprintf '%%%02X', ord $1/ge;
(my $pw_kv = $PW) =~ s/(['\\])/\\$1/g;

# server_round_robin: consecutive transactions of one client go to
# different server connections, as they do when other clients (the
# gateway's pools) share the bouncer.
my $b = pgbouncer_start(password => $PW, pool_size => 4,
                        settings => 'server_round_robin = 1');
our $URL = "postgresql://postgres:$pw_url\@127.0.0.1:$b->{port}/capliquify";
my $KV  = "host=127.0.0.1 port=$b->{port} dbname=capliquify user=postgres"
          . " password='$pw_kv'";

# A migrations dir of its own: name => SQL.
my $DIRS = 0;
sub mdir {
    my (%files) = @_;
    my $dir = "$tmp/migrations." . ++$DIRS;
    make_path($dir);
    for my $f (keys %files) {
        open my $fh, '>', "$dir/$f" or die "$dir/$f: $!";
        print $fh $files{$f};
        close $fh;
    }
    return $dir;
}

# migrate.sh in the background, in a process group of its own; its
# output goes to a file.
my $RUNS = 0;
sub start_migrate {
    my ($dir, %env) = @_;
    my $out = "$tmp/migrate." . ++$RUNS;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgid(0, 0);
        $ENV{DATABASE_URL} = $URL;
        @ENV{ keys %env } = values %env;
        open STDOUT, '>', $out or _exit(127);
        open STDERR, '>&', \*STDOUT or _exit(127);
        exec $migrate, $dir or _exit(127);
    }
    return { pid => $pid, out => $out, t0 => time };
}

# Waits up to $secs for it; a run still going then is killed (group).
# Returns { rc, out, secs, hung }.
sub finish {
    my ($run, $secs) = @_;
    my $hung = 1;
    while (time - $run->{t0} < $secs) {
        if (waitpid($run->{pid}, WNOHANG) == $run->{pid}) {
            $hung = 0;
            last;
        }
        sleep 0.05;
    }
    if ($hung) {
        kill 'KILL', -$run->{pid};
        waitpid $run->{pid}, 0;
    }
    my $rc = $? >> 8;
    return { rc => $hung ? -1 : $rc, out => TenantTest::_slurp($run->{out}),
             secs => time - $run->{t0}, hung => $hung };
}

sub run_migrate {
    my ($dir, %env) = @_;
    return finish(start_migrate($dir, %env), 30);
}

sub advisory_locks {
    return sql_value(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'});
}

# Backends of other sessions running $text.
sub running {
    my ($text) = @_;
    return sql_value(q{SELECT count(*) FROM pg_stat_activity
                        WHERE pid <> pg_backend_pid() AND state = 'active'
                          AND strpos(query, $1) > 0}, $text);
}

sub wait_running {
    my ($text, $secs) = @_;
    my ($n) = retry_until($secs, sub { running($text) }, sub { $_[0] }, 0.05);
    return $n;
}

# Several server connections in the pool, idle.
sub fill_pool {
    my @c = map {
        DBI->connect("dbi:Pg:dbname=capliquify;host=127.0.0.1;port=$b->{port}",
                     'postgres', $PW, { RaiseError => 1, PrintError => 0,
                                        AutoCommit => 0 })
    } 1 .. 3;
    $_->do('SELECT 1') for @c;
    $_->commit for @c;
    $_->disconnect for @c;
}

sub recorded {
    return sql_value('SELECT count(*) FROM public.schema_migrations WHERE filename = $1',
                     $_[0]);
}

sub column_exists {
    return sql_value(q{SELECT count(*) FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'tenants'
                          AND column_name = $1}, $_[0]);
}


# --- the real migrations, through the bouncer --------------------------------

fill_pool();
{
    my $r = run_migrate("$root/migrations");
    is $r->{rc}, 0, 'through PgBouncer (transaction mode, password): migrations applied'
        or diag $r->{out};
    my $n = () = glob "$root/migrations/*.sql";
    like $r->{out}, qr/^migrate: $n applied, 0 already applied$/m, "... all $n";
    is advisory_locks(), 0, '... and no advisory lock left on any server connection';

    fill_pool();
    $r = run_migrate("$root/migrations");
    is $r->{rc}, 0, 'a second run succeeds' or diag $r->{out};
    like $r->{out}, qr/^migrate: 0 applied, $n already applied$/m, '... and applies nothing';
    is advisory_locks(), 0, '... no advisory lock left';
}


# --- (a) two runs at once ----------------------------------------------------

{
    my $dir = mdir('006_slow.sql' => <<'SQL',
CREATE TABLE public.migrate_probe (n int);
INSERT INTO public.migrate_probe VALUES (1);
SELECT pg_sleep(5);
SQL
                   '007_after.sql' => "INSERT INTO public.migrate_probe VALUES (2);\n");
    fill_pool();
    my $first = start_migrate($dir);
    ok wait_running('pg_sleep(5)', 10), 'run 1 is in the slow migration';
    my $second = start_migrate($dir);
    my ($waiting) = retry_until(3, sub {
        sql_value(q{SELECT count(*) FROM pg_locks
                     WHERE locktype = 'advisory' AND NOT granted})
    }, sub { $_[0] }, 0.05);
    is $waiting, 1, 'run 2 waits for the advisory lock';
    ok running('pg_sleep(5)') == 1 && waitpid($second->{pid}, WNOHANG) == 0,
       '... while run 1 is still in the slow migration';

    my @r = (finish($first, 30), finish($second, 30));
    is_deeply [map { $_->{rc} } @r], [0, 0], 'both runs succeed'
        or diag map { $_->{out} } @r;
    is scalar(() = join('', map { $_->{out} } @r) =~ /^migrate: applied 006_slow\.sql$/mg), 1,
        '006 applied by one run only';
    is_deeply [map { $_->{n} } sql('SELECT n FROM public.migrate_probe ORDER BY n')], [1, 2],
        'each file ran once, in order';
    is recorded('006_slow.sql') + recorded('007_after.sql'), 2, 'each recorded once';
    is advisory_locks(), 0, 'no advisory lock left on any server connection';
}

# The second run gives up on a first that takes too long.
{
    my $dir = mdir('008_slower.sql' => "SELECT pg_sleep(6);\n");
    fill_pool();
    my $first = start_migrate($dir);
    ok wait_running('pg_sleep(6)', 10), 'run 1 is in a 6 s migration';
    my $r = finish(start_migrate($dir, MIGRATE_STATEMENT_TIMEOUT => '1s'), 20);
    is $r->{rc}, 1, 'run 2 with MIGRATE_STATEMENT_TIMEOUT=1s: exit 1' or diag $r->{out};
    ok !$r->{hung} && waitpid($first->{pid}, WNOHANG) == 0,
       sprintf 'run 2 ... gave up after %.1f s, before run 1 ended', $r->{secs};
    like $r->{out}, qr/^migrate: another migrate\.sh run held the migration lock .* longer than MIGRATE_STATEMENT_TIMEOUT \(1s\)/m,
        'run 2 ... says why' or diag $r->{out};
    $r = finish($first, 30);
    is $r->{rc}, 0, 'run 1 succeeds' or diag $r->{out};
    is recorded('008_slower.sql'), 1, '008 recorded once';
    is advisory_locks(), 0, 'no advisory lock left';
}


# --- (b) bounded waits ---------------------------------------------------------

# A long transaction that read public.tenants (a report, a stuck
# client): ALTER TABLE needs the lock it holds.
{
    my $dir = mdir('010_alter_tenants.sql' =>
                   "ALTER TABLE public.tenants ADD COLUMN migrate_probe int;\n");
    my $long = DBI->connect("dbi:Pg:dbname=capliquify;host=$pg->{socket};port=$pg->{port}",
                            'postgres', '', { RaiseError => 1, AutoCommit => 0,
                                              AutoInactiveDestroy => 1 });
    $long->do('SELECT count(*) FROM public.tenants');

    my $r = finish(start_migrate($dir), 25);
    ok !$r->{hung}, sprintf 'behind a long transaction: migrate ends (%.1f s)', $r->{secs};
    is $r->{rc}, 1, '... exit 1' or diag $r->{out};
    ok $r->{secs} >= 4.5 && $r->{secs} < 15, '... after the default MIGRATE_LOCK_TIMEOUT (5s)';
    like $r->{out}, qr/^migrate: 010_alter_tenants\.sql waited longer than MIGRATE_LOCK_TIMEOUT \(5s\) for a lock/m,
        '... names the file and the setting';
    is column_exists('migrate_probe'), 0, '... nothing of it applied';
    is recorded('010_alter_tenants.sql'), 0, '... not recorded';

    $r = finish(start_migrate($dir, MIGRATE_LOCK_TIMEOUT => '500ms'), 25);
    is $r->{rc}, 1, 'MIGRATE_LOCK_TIMEOUT=500ms: exit 1' or diag $r->{out};
    ok $r->{secs} < 4.5, sprintf '... after %.1f s (before the default 5s)', $r->{secs};
    like $r->{out}, qr/MIGRATE_LOCK_TIMEOUT \(500ms\)/, '... names it';

    $long->rollback;
    $long->disconnect;
    $r = run_migrate($dir);
    is $r->{rc}, 0, 'the long transaction gone: applied' or diag $r->{out};
    is column_exists('migrate_probe'), 1, '... the column exists';
    is advisory_locks(), 0, '... no advisory lock left';
}

{
    my $dir = mdir('011_slow_statement.sql' =>
                   "CREATE TABLE public.half_done (n int);\nSELECT pg_sleep(30);\n");
    my $r = finish(start_migrate($dir, MIGRATE_STATEMENT_TIMEOUT => '1s'), 20);
    is $r->{rc}, 1, 'a 30 s statement, MIGRATE_STATEMENT_TIMEOUT=1s: exit 1' or diag $r->{out};
    ok $r->{secs} < 6, sprintf '... after %.1f s', $r->{secs};
    like $r->{out}, qr/^migrate: 011_slow_statement\.sql: a statement ran longer than MIGRATE_STATEMENT_TIMEOUT \(1s\)/m,
        '... names the file and the setting';
    is sql_value(q{SELECT to_regclass('public.half_done') IS NULL}), 1, '... rolled back';
    is recorded('011_slow_statement.sql'), 0, '... not recorded';
}

for my $case (['MIGRATE_LOCK_TIMEOUT', 'abc'], ['MIGRATE_LOCK_TIMEOUT', '0'],
              ['MIGRATE_STATEMENT_TIMEOUT', '5 min'],
              ['MIGRATE_STATEMENT_TIMEOUT', "1s'; DROP TABLE public.tenants; --"]) {
    my ($var, $value) = @$case;
    my $r = run_migrate("$root/migrations", $var => $value);
    is $r->{rc}, 2, "$var=\"$value\": usage error";
    like $r->{out}, qr/\Amigrate: \Q$var\E: must be a positive number with ms, s, min or h[^\n]*\n\z/,
        '... one line naming it';
}


# --- (c) the password is on no command line --------------------------------------

# Every process's command line while $run is in its slow migration.
sub cmdlines {
    my @all;
    for my $f (glob '/proc/[0-9]*/cmdline') {
        my $c = TenantTest::_slurp($f);
        push @all, join ' ', split /\0/, $c if length $c;
    }
    return @all;
}

for my $case (['a URL', $URL], ['a key=value string', $KV]) {
    my ($what, $url) = @$case;
    my $dir = mdir("020_sleep.$DIRS.sql" => "SELECT pg_sleep(1.5);\n");
    local $URL = $url;
    my $run = start_migrate($dir);
    ok wait_running('pg_sleep(1.5)', 10), "$what: migrate is in a slow migration";
    my @lines = cmdlines();
    my @psql = grep { m{^\S*/psql } && /\b$b->{port}\b/ } @lines;
    is scalar(@psql), 1, "$what: its psql is running" or diag explain \@psql;
    my $pw_bare = $PW =~ s/^pw-(\w+).*/$1/sr;     # the random part
    is_deeply [grep { index($_, $pw_bare) >= 0 } @lines], [],
        "$what: no process's command line holds the password (" . @lines . ' read)';
    my $r = finish($run, 20);
    is $r->{rc}, 0, "$what: applied (the bouncer checked the password)" or diag $r->{out};
    unlike $r->{out}, qr/\Q$pw_bare\E/, "$what: output without the password";
}

{
    (my $wrong = $URL) =~ s/pw-/wrong-/;
    local $URL = $wrong;
    my $r = run_migrate(mdir('021_never.sql' => "SELECT 1;\n"));
    is $r->{rc}, 1, 'a wrong password: exit 1' or diag $r->{out};
    like $r->{out}, qr/password authentication failed/, '... the server said why';
    my $pw_bare = $PW =~ s/^pw-(\w+).*/$1/sr;
    unlike $r->{out}, qr/\Q$pw_bare\E|127\.0\.0\.1:\d+\/capliquify/,
        '... without the password or the URL';
}

{
    local $URL = "postgresql://postgres:a/b\@127.0.0.1:$b->{port}/capliquify";
    my $r = run_migrate("$root/migrations");
    is $r->{rc}, 2, 'an unencoded "/" in the password: usage error';
    like $r->{out}, qr/\Amigrate: DATABASE_URL: "\@" after a "\/": percent-encode the password[^\n]*\n\z/,
        '... one line, without the URL';
}

done_testing();
