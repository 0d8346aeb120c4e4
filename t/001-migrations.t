#!/usr/bin/perl
# Migrations (scripts/migrate.sh) and tenant provisioning
# (public.create_tenant / drop_tenant_schema) on a throwaway cluster.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX       qw(_exit);

my $root    = project_root();
my $migrate = "$root/scripts/migrate.sh";
my @files   = map { s{.*/}{}r } glob "$root/migrations/*.sql";

my $pg = pg_start(migrate => 0);


# Runs migrate.sh; returns (exit status, stdout + stderr).
sub run_migrate {
    my (%env) = @_;

    local %ENV = (%ENV, DATABASE_URL => $pg->{url}, %env);
    delete $ENV{DATABASE_URL} unless defined $ENV{DATABASE_URL};
    my $dir = delete $ENV{MIGRATIONS_DIR};
    my $out = qx{$migrate @{[ $dir // '' ]} 2>&1};
    return ($? >> 8, $out);
}

sub slurp {
    open my $fh, '<', $_[0] or die "$_[0]: $!";
    local $/;
    return scalar <$fh>;
}

sub applied_lines { scalar(() = $_[0] =~ /^migrate: applied /mg) }

# Explicitly created indexes of a schema, counted without the helper:
# indexes that no constraint owns (pg_depend, deptype 'i').
sub explicit_indexes {
    my ($schema) = @_;
    return sql_value(<<'SQL', $schema);
SELECT count(*)
  FROM pg_class i
  JOIN pg_namespace n ON n.oid = i.relnamespace
 WHERE n.nspname = $1
   AND i.relkind = 'i'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = i.oid
                      AND d.refclassid = 'pg_constraint'::regclass
                      AND d.deptype = 'i')
SQL
}

sub base_tables {
    my ($schema) = @_;
    return sql_value(<<'SQL', $schema);
SELECT count(*) FROM information_schema.tables
 WHERE table_schema = $1 AND table_type = 'BASE TABLE'
SQL
}

sub schema_exists {
    return sql_value('SELECT count(*) FROM pg_namespace WHERE nspname = $1',
                     $_[0]);
}

sub tenant_rows { sql_value('SELECT count(*) FROM public.tenants') }


# --- migrate.sh -------------------------------------------------------

my $N = scalar(@files);
is $N, 7, 'seven migration files';

{
    my ($rc, $out) = run_migrate(DATABASE_URL => undef);
    isnt $rc, 0, 'no DATABASE_URL: non-zero exit';
    is $out, "migrate: DATABASE_URL is not set (e.g. postgresql://user\@host:5432/db)\n",
        'no DATABASE_URL: one clear line';
}

{
    my ($rc, $out) = run_migrate();
    is $rc, 0, 'fresh database: migrate succeeds' or diag $out;
    is applied_lines($out), $N, "fresh database: applies $N files";
    like $out, qr/^migrate: applied \Q$_\E$/m, "prints $_" for @files;
    like $out, qr/^migrate: $N applied, 0 already applied$/m, 'summary';
}

{
    my ($rc, $out) = run_migrate();
    is $rc, 0, 'second run succeeds';
    is applied_lines($out), 0, 'second run applies nothing';
    like $out, qr/^migrate: 0 applied, $N already applied$/m, 'second summary';
}

is_deeply [map { $_->{filename} } sql('SELECT filename FROM public.schema_migrations ORDER BY 1')],
    \@files, 'schema_migrations records each file';

# Two concurrent runs against another fresh database.  The test holds
# migrate.sh's advisory lock first, so both runs are sure to overlap.
{
    sql('CREATE DATABASE concurrent');
    (my $url = $pg->{url}) =~ s{/capliquify\?}{/concurrent?};
    my ($key) = slurp($migrate) =~ /^lock_key=(\d+)/m;
    ok $key, 'lock key found in migrate.sh';

    my $holder = DBI->connect("dbi:Pg:dbname=concurrent;host=$pg->{socket};port=$pg->{port}",
                              'postgres', '', { RaiseError => 1, AutoInactiveDestroy => 1 });
    $holder->do('SELECT pg_advisory_lock(?)', undef, $key);

    my @kids;
    for my $i (1, 2) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            $ENV{DATABASE_URL} = $url;
            exec "$migrate > $pg->{dir}/../concurrent.$i 2>&1" or _exit(127);
        }
        push @kids, $pid;
    }

    sleep 0.5;
    is waitpid($kids[0], POSIX::WNOHANG()) + waitpid($kids[1], POSIX::WNOHANG()), 0,
        'both runs wait for the lock';
    $holder->do('SELECT pg_advisory_unlock(?)', undef, $key);

    my @outs;
    for my $i (0, 1) {
        waitpid $kids[$i], 0;
        is $? >> 8, 0, 'concurrent run ' . ($i + 1) . ' succeeds';
        push @outs, slurp("$pg->{dir}/../concurrent." . ($i + 1));
    }
    # the lock is taken per file (scripts/migrate.sh), so the two runs may
    # share the files; each is applied by one of them
    my @applied = map { /^migrate: applied (\S+)$/mg } @outs;
    is_deeply [sort @applied], [sort @files],
        "the two runs applied the $N files once between them" or diag @outs;
    is $holder->selectrow_array('SELECT count(*) FROM public.schema_migrations'), $N,
        'each file recorded once';
    is $holder->selectrow_array(
        q{SELECT count(*) FROM pg_proc WHERE proname = 'create_tenant'}), 1,
        'functions installed once';
    $holder->disconnect;
}

# An applied file that changed, and a failing new one.
{
    my $dir = "$pg->{dir}/../migrations-copy";
    mkdir $dir or die "$dir: $!";
    system('cp', glob("$root/migrations/*.sql"), $dir) == 0 or die 'cp';

    open my $fh, '>>', "$dir/002_tenant_schema_functions.sql" or die;
    print $fh "-- edited after it was applied\n";
    close $fh;
    my ($rc, $out) = run_migrate(MIGRATIONS_DIR => $dir);
    isnt $rc, 0, 'changed applied file: error';
    like $out, qr/^migrate: 002_tenant_schema_functions\.sql was changed after it was applied/m,
        'changed applied file: clear message';

    system('cp', "$root/migrations/002_tenant_schema_functions.sql", $dir) == 0 or die 'cp';
    open $fh, '>', "$dir/004_broken.sql" or die;
    print $fh "CREATE TABLE public.half_done (id int);\nSELECT no_such_function();\n";
    close $fh;
    ($rc, $out) = run_migrate(MIGRATIONS_DIR => $dir);
    isnt $rc, 0, 'failing migration: error';
    like $out, qr/^migrate: 004_broken\.sql failed and was rolled back/m,
        'failing migration: names the file';
    is sql_value(q{SELECT to_regclass('public.half_done') IS NULL}), 1,
        'failing migration: its table was rolled back';
    is sql_value(q{SELECT count(*) FROM public.schema_migrations WHERE filename = '004_broken.sql'}), 0,
        'failing migration: not recorded';
}

# 001 and 002 can be re-run by hand (IF NOT EXISTS / OR REPLACE).
for my $f (@files) {
    my $out = qx{psql -X -q -v ON_ERROR_STOP=1 -d '$pg->{url}' -f '$root/migrations/$f' 2>&1};
    is $?, 0, "$f re-runs by hand" or diag $out;
}


# --- provisioning -------------------------------------------------------

my $acme = create_tenant(name => 'Acme Manufacturing', slug => 'acme-mfg',
                         org => 'org_acme', tier => 'professional');
is $acme->{schema_name}, 'tenant_acme_mfg', 'schema name from the slug';
is $acme->{subscription_status}, 'trial', 'new tenants start in trial';
is $acme->{subscription_tier}, 'professional', 'tier stored';
ok abs(sql_value(q{SELECT extract(epoch FROM trial_ends_at - now() - interval '14 days')
                     FROM public.tenants WHERE id = $1}, $acme->{id})) < 60,
   'trial ends in 14 days';
is base_tables('tenant_acme_mfg'), 9, 'exactly 9 tables (information_schema)';
is explicit_indexes('tenant_acme_mfg'), 14, 'exactly 14 explicit indexes (pg_depend)';
is_deeply [sql('SELECT * FROM public.tenant_schema_counts($1)', 'tenant_acme_mfg')],
    [{ tables => 9, indexes => 14 }], 'tenant_schema_counts agrees';

sql(q{UPDATE public.tenants SET subscription_status = 'active' WHERE id = $1}, $acme->{id});
ok sql_value('SELECT updated_at > created_at FROM public.tenants WHERE id = $1', $acme->{id}),
   'updated_at trigger';

# Duplicates fail and leave nothing.
{
    my $rows = tenant_rows();
    my $schemas = sql_value(q{SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'});

    ok !eval { create_tenant(slug => 'acme-mfg', org => 'org_other'); 1 },
       'duplicate slug: error';
    like $@, qr/tenants_slug_key/, 'duplicate slug: names the constraint';

    ok !eval { create_tenant(slug => 'acme-two', org => 'org_acme'); 1 },
       'duplicate organization: error';
    ok !schema_exists('tenant_acme_two'), 'duplicate organization: no schema';

    is tenant_rows(), $rows, 'duplicates: no new row';
    is sql_value(q{SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'}),
       $schemas, 'duplicates: no new schema';
}

# A failure while provisioning leaves no row.
{
    sql('CREATE SCHEMA tenant_preexisting');
    ok !eval { create_tenant(slug => 'preexisting'); 1 },
       'schema already exists: error';
    like $@, qr/schema "tenant_preexisting" already exists/, 'schema already exists: message';
    is sql_value(q{SELECT count(*) FROM public.tenants WHERE slug = 'preexisting'}), 0,
       'schema already exists: no tenants row';
    is base_tables('tenant_preexisting'), 0, 'schema already exists: left untouched';
    sql('DROP SCHEMA tenant_preexisting');

    # Fails after the schema and 8 of the 9 tables exist.
    sql(<<'SQL');
CREATE FUNCTION public.fail_last_table() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                WHERE object_identity LIKE '%.working_capital_snapshots') THEN
        RAISE EXCEPTION 'injected failure';
    END IF;
END $$
SQL
    sql('CREATE EVENT TRIGGER fail_last_table ON ddl_command_end '
        . 'WHEN TAG IN (\'CREATE TABLE\') EXECUTE FUNCTION public.fail_last_table()');
    ok !eval { create_tenant(slug => 'half-way'); 1 }, 'failure mid-DDL: error';
    like $@, qr/injected failure/, 'failure mid-DDL: the injected one';
    sql('DROP EVENT TRIGGER fail_last_table');
    sql('DROP FUNCTION public.fail_last_table()');
    is sql_value(q{SELECT count(*) FROM public.tenants WHERE slug = 'half-way'}), 0,
       'failure mid-DDL: no row';
    ok !schema_exists('tenant_half_way'), 'failure mid-DDL: no schema';
}

# Bad input.
ok !eval { create_tenant(slug => 'Bad_Slug'); 1 }, 'invalid slug: error';
like $@, qr/invalid tenant slug "Bad_Slug"/, 'invalid slug: message';
{
    my $slug = 'ab' . ('-long' x 11) . '-slugs';    # 63 characters
    is length $slug, 63, 'longest slug';
    my $t = create_tenant(slug => $slug);
    is length $t->{schema_name}, 63, 'longest slug: schema name fits in 63';
    ok schema_exists($t->{schema_name}), 'longest slug: schema created under that name';
}

# drop_tenant_schema removes both.
{
    my $t = create_tenant(slug => 'short-lived');
    ok schema_exists('tenant_short_lived'), 'schema before drop';
    is sql_value('SELECT public.drop_tenant_schema($1)', $t->{id}), 1, 'drop: true';
    ok !schema_exists('tenant_short_lived'), 'drop: schema gone';
    is sql_value('SELECT count(*) FROM public.tenants WHERE id = $1', $t->{id}), 0,
       'drop: row gone';
    is sql_value('SELECT public.drop_tenant_schema($1)', $t->{id}), 0,
       'drop of an unknown tenant: false';
}

# Provisioning time.
{
    my @ms;
    for my $i (1 .. 20) {
        my $t0 = time;
        my $t = create_tenant(slug => "speed-$i");
        push @ms, (time - $t0) * 1000;
        is explicit_indexes($t->{schema_name}) . '/' . base_tables($t->{schema_name}),
           '14/9', "speed-$i: 9 tables, 14 indexes";
    }
    my @sorted = sort { $a <=> $b } @ms;
    ok $sorted[-1] < 1000, 'each of 20 provisionings under 1 s';
    diag sprintf 'create_tenant: min %.1f ms, median %.1f ms, max %.1f ms',
        $sorted[0], $sorted[10], $sorted[-1];
}

# The verification queries of 003 run (read-only) and see the tenants.
{
    my $out = qx{psql -X -v ON_ERROR_STOP=1 -d '$pg->{url}' -f '$root/migrations/003_testing_queries.sql' 2>&1};
    is $?, 0, '003 queries run' or diag $out;
    like $out, qr/\btenant_acme_mfg\b/, '003 lists tenant schemas';
    like $out, qr/create_tenant\s*\|\s*FUNCTION/, '003 lists the functions';
    is sql_value(<<'SQL'), 0, 'every tenant schema has 9 tables and 14 indexes';
SELECT count(*) FROM public.tenants t
CROSS JOIN LATERAL public.tenant_schema_counts(t.schema_name) c
WHERE (c.tables, c.indexes) <> (9, 14)
SQL
}

done_testing();
