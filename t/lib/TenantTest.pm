package TenantTest;

# Integration-test harness for ngx_tenant_module.
#
# A test file reads as a list of cases:
#
#     use FindBin;
#     use lib "$FindBin::Bin/lib";
#     use TenantTest;
#     use Test::More;
#
#     pg_start();                                  # throwaway cluster, migrated
#     my $t = create_tenant(tier => 'professional', status => 'active');
#     nginx_start(http => <<'EOF');
#         server {
#             listen 127.0.0.1:%%PORT%%;
#             location /api/ {
#                 # the module's directives, using %%PG%%, %%JWKS%%, ...
#                 proxy_pass http://%%ECHO%%;
#             }
#         }
#     EOF
#
#     my $r = http(path => '/api/products', headers => [
#         Authorization     => 'Bearer ' . mint_token(org => $t->{clerk_organization_id}),
#         'X-Organization-ID' => $t->{clerk_organization_id},
#     ]);
#     is $r->{status}, 200, 'valid token, active tenant';
#     is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t->{id}], 'upstream saw the tenant';
#
#     done_testing();
#
# Everything a test starts (PostgreSQL, nginx, the echo upstream) lives in
# one temp dir per test process and is stopped and removed at exit, also
# when the test dies or is interrupted (TENANT_TEST_KEEP=1 keeps the dir).
# Before done_testing() finishes, nginx is stopped and one more test checks
# its error log: it fails on [alert], [emerg], sanitizer reports, crashed
# workers and blocking calls (error_log_allow() exempts lines a test
# provokes).
#
# Blocking calls: nginx runs with build/guard/blockguard.so preloaded
# (t/guard/blockguard.c, built by make test / make guard), which writes a
# "BLOCKING CALL: ..." line to the error log when a worker that serves
# calls something that can block (a blocking libpq call, a name lookup, a
# sleep, a wait with a timeout, I/O on a blocking socket, a file opened
# by the module's code).
#
# Use done_testing(), not a fixed plan: that last check is a test too.
#
# Environment: TENANT_MODULE (the .so, default build/nginx/objs/
# ngx_tenant_module.so), NGINX (default /usr/sbin/nginx),
# TENANT_TEST_KEEP=1, TENANT_BLOCKGUARD (0: no guard; a path: that guard
# instead of build/guard/blockguard.so).

use strict;
use warnings;

use Cwd              qw(abs_path);
use DBI              ();
use Exporter         qw(import);
use File::Basename   qw(dirname);
use File::Path       qw(make_path remove_tree);
use File::Temp       ();
use IO::Select       ();
use IO::Socket::INET ();
use IO::Socket::IP   ();
use IO::Socket::UNIX ();
use JSON::XS         ();
use MIME::Base64     qw(encode_base64url);
use POSIX            qw(:sys_wait_h);
use Test::More       ();
use Test2::API       ();
use Time::HiRes      qw(time sleep);

use Crypt::JWT       qw(encode_jwt);
use Crypt::PK::ECC   ();
use Crypt::PK::RSA   ();

our @EXPORT = qw(
    pg_start pg_stop pg_kill pg_restart pg_pids pg_stall pg_unstall
    dbh sql sql_silent sql_value create_tenant
    jwt_keys mint_token jwt_raw
    echo_start echo_stop
    nginx_start nginx_reload nginx_stop nginx_conf_test nginx_workers
    nginx_instance_start nginx_instance_stop nginx_instance_workers
    error_log log_mark error_log_allow
    http async_http wait_http http_done retry_until free_port project_root
    alive pg_proxy pgbouncer_start clerk_jwks_start
    redis_start redis_stop redis_kill redis_restart redis_stall redis_unstall
    redis_cli redis_pid
);

our $ROOT   = abs_path(dirname(__FILE__) . '/../..');
# TENANT_NGINX, not NGINX: nginx reads NGINX as inherited sockets
our $NGINX  = $ENV{TENANT_NGINX} || '/usr/sbin/nginx';
our $MODULE = $ENV{TENANT_MODULE}
              || "$ROOT/build/nginx/objs/ngx_tenant_module.so";
our $GUARD  = ($ENV{TENANT_BLOCKGUARD} // '') eq '0' ? undef
              : $ENV{TENANT_BLOCKGUARD} || "$ROOT/build/guard/blockguard.so";

my $JSON  = JSON::XS->new->utf8->canonical;
my $OWNER = $$;            # forked children must not clean up

my $BASE;                  # the per-process temp dir
my $PG;                    # { dir port socket url conninfo running }
my $REDIS;                 # { dir port url pid password }
my $DBH;
my $KEYS;
my $ECHO;                  # the default echo upstream { port addr pids }
my @ECHOS;                 # all of them
my $NGX;                   # { dir port port2 opts pid log log_from }
my @LOGS;                  # [ error log path, offset at start ], checked at end
my @ALLOWED;               # error_log_allow() patterns
my $TENANT_SEQ = 0;
my $CONF_SEQ   = 0;


sub project_root { $ROOT }


# The per-process temp dir, readable by the postgres user and nginx
# workers (which run as nobody).
sub tmpdir {
    return $BASE if $BASE;
    $BASE = File::Temp::tempdir('tenant-test-XXXXXX', TMPDIR => 1,
                                CLEANUP => 0);
    chmod 0755, $BASE or die "chmod $BASE: $!";
    return $BASE;
}


# Runs a command with extra environment variables $env; returns its
# stdout (in list context: stdout and stderr).  Dies with its output on
# failure.
sub run_cmd {
    my ($env, @cmd) = @_;

    local %ENV = (%ENV, %{ $env || {} });
    my $errfile = tmpdir() . "/cmd.$$.err";

    # Interrupted meanwhile: let the command finish (a half-started
    # cluster could not be stopped), then exit as the signal would have.
    my $signal;
    local @SIG{qw(INT TERM HUP)} = (sub { $signal = shift }) x 3;

    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>', $errfile or die "$errfile: $!";
        exec @cmd or do { print STDERR "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    my $stdout = do { local $/; <$out> } // '';
    close $out;
    my $status = $?;
    my $stderr = _slurp($errfile);
    unlink $errfile;
    _exit_on_signal($signal) if $signal;

    if ($status != 0) {
        die "command failed (exit " . ($status >> 8) . "): @cmd\n"
            . $stdout . $stderr;
    }
    return wantarray ? ($stdout, $stderr) : $stdout;
}


# A TCP port on 127.0.0.1 that was free a moment ago.
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1)
        or die "free_port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}


###########################################################################
# PostgreSQL

# Starts a throwaway cluster (scripts/pg-local.sh in the temp dir: unix
# socket only, trust auth, user postgres, database capliquify) and applies
# the migrations with scripts/migrate.sh (migrate => 0: a bare database).
# tcp => 1 also listens on 127.0.0.1 (only) at the port, and tcp_conninfo
# names it "localhost".
# Returns { conninfo, url, dir, socket, port[, tcp_conninfo] }.
sub pg_start {
    my (%opt) = @_;

    return $PG if $PG && $PG->{running};

    my $dir  = tmpdir() . '/pg';
    my $port = $opt{tcp} ? free_port()
                         : 20000 + $$ % 40000;   # names the socket; no TCP
    my %env  = (PGPORT_LOCAL => $port, $opt{tcp} ? (PG_LOCAL_TCP => 1) : ());

    # Known before it starts, so that cleanup stops it whatever happens.
    $PG = { dir => $dir, port => $port, running => 1, env => \%env };
    my $url = run_cmd(\%env, "$ROOT/scripts/pg-local.sh", 'start', $dir);
    chomp $url;
    my ($host) = $url =~ /[?&]host=([^&]+)/
        or die "pg_start: unexpected URL \"$url\"";
    $host =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;

    $PG = {
        dir      => dirname($host),
        socket   => $host,
        port     => $port,
        url      => $url,
        conninfo => "host=$host port=$port dbname=capliquify user=postgres",
        running  => 1,
        env      => \%env,
        $opt{tcp} ? (tcp_conninfo =>
                     "host=localhost port=$port dbname=capliquify user=postgres")
                  : (),
    };

    migrate() if $opt{migrate} // 1;
    return $PG;
}

# scripts/migrate.sh against the test cluster; returns its output.
sub migrate {
    die "migrate: pg_start() first\n" unless $PG;
    return run_cmd({ DATABASE_URL => $PG->{url} }, "$ROOT/scripts/migrate.sh");
}

sub _pg_local {
    my ($cmd) = @_;

    return unless $PG;
    undef $DBH;
    run_cmd($PG->{env} || { PGPORT_LOCAL => $PG->{port} },
            "$ROOT/scripts/pg-local.sh", $cmd, $PG->{dir});
}

# Fast shutdown.
sub pg_stop {
    return unless $PG && $PG->{running};
    pg_unstall();
    _pg_local('stop');
    $PG->{running} = 0;
}

# Immediate shutdown: connections drop, as in an outage.
sub pg_kill {
    return unless $PG && $PG->{running};
    pg_unstall();
    _pg_local('kill');
    $PG->{running} = 0;
}

# Starts the same cluster again (same dir, socket and port).
sub pg_restart {
    die "pg_restart: pg_start() first\n" unless $PG;
    pg_unstall();
    _pg_local('stop') if $PG->{running};
    _pg_local('start');
    $PG->{running} = 1;
    return $PG;
}

# The postmaster of the running cluster and all its children (backends,
# checkpointer, ...), from postmaster.pid and /proc.
sub pg_pids {
    die "pg_pids: pg_start() first\n" unless $PG && $PG->{running};
    my ($pm) = _slurp("$PG->{dir}/data/postmaster.pid") =~ /^(\d+)/
        or die "pg_pids: no pid in $PG->{dir}/data/postmaster.pid\n";
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my ($pid, $ppid) = _slurp($stat) =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        push @kids, $pid if $ppid == $pm;
    }
    return ($pm, @kids);
}

# The database stalls: SIGSTOP to the postmaster (first: it must not fork
# new children meanwhile) and its children.  Connections stay open and
# nothing answers.  pg_unstall() (SIGCONT) ends it; pg_stop, pg_kill,
# pg_restart and the cleanup at exit call it first.  Returns how many
# processes were stopped.
my @STOPPED;

sub pg_stall {
    my ($pm) = pg_pids();
    kill 'STOP', $pm;
    push @STOPPED, $pm;
    my (undef, @kids) = pg_pids();
    kill 'STOP', @kids;
    push @STOPPED, @kids;
    return scalar @STOPPED;
}

sub pg_unstall {
    return unless @STOPPED;
    kill 'CONT', @STOPPED;
    @STOPPED = ();
}

###########################################################################
# Redis

# Starts Debian's redis-server for this test: TCP on 127.0.0.1 only, a
# free port (port => N: that one, e.g. to start again where it was), no
# persistence, in the test's temp dir.  password => 'p' requires AUTH
# (requirepass); user => 'u' with it adds an ACL user instead.  Returns
# { port url pid dir }: url is redis://[user:password@]127.0.0.1:port,
# what tenant_redis and REDIS_URL take.  Stopped at exit.
sub redis_start {
    my (%opt) = @_;

    return $REDIS if $REDIS && $REDIS->{pid} && !%opt;
    redis_stop() if $REDIS && $REDIS->{pid};

    my $dir  = tmpdir() . '/redis';
    make_path($dir);
    my $port = $opt{port} || ($REDIS && $REDIS->{port}) || free_port();
    my (@conf, @auth);
    my $cred = '';
    if (defined $opt{user}) {
        # users only from a config file (redis 7.0 takes no --user)
        _spew("$dir/users.conf", "user default off\n"
              . "user $opt{user} on >$opt{password} ~* &* +\@all\n");
        @conf = ("$dir/users.conf");
        $cred = "$opt{user}:$opt{password}@";
    } elsif (defined $opt{password}) {
        @auth = ('--requirepass', $opt{password});
        $cred = ":$opt{password}@";
    }
    my $bin = $ENV{REDIS_SERVER} || 'redis-server';

    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>>', "$dir/redis.log";
        open STDERR, '>&', \*STDOUT;
        # a config file, if any, comes first
        exec $bin, @conf, '--port', $port, '--bind', '127.0.0.1',
             '--save', '', '--appendonly', 'no', '--dir', $dir,
             '--daemonize', 'no', '--protected-mode', 'no', @auth
            or POSIX::_exit(127);
    }
    $REDIS = { dir => $dir, port => $port, pid => $pid, %opt,
               url => "redis://${cred}127.0.0.1:$port" };

    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        if ($s) {
            print $s "PING\r\n";
            my $l = <$s> // '';
            return $REDIS if $l =~ /^\+PONG|^-NOAUTH/;
        }
        die "redis_start: redis-server exited\n" . _slurp("$dir/redis.log")
            if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    die "redis_start: no answer on port $port\n";
}

sub redis_pid { $REDIS && $REDIS->{pid} }

# Stops it (SIGTERM, waits); redis_kill: SIGKILL.  Either keeps the port
# for redis_restart().
sub _redis_end {
    my ($sig) = @_;
    return unless $REDIS && $REDIS->{pid};
    redis_unstall();
    kill $sig, $REDIS->{pid};
    waitpid $REDIS->{pid}, 0;
    $REDIS->{pid} = undef;
}

sub redis_stop { _redis_end('TERM') }
sub redis_kill { _redis_end('KILL') }

# Starts it again on the same port (and the same password), empty.
sub redis_restart {
    die "redis_restart: redis_start() first\n" unless $REDIS;
    my %opt = (port => $REDIS->{port});
    $opt{$_} = $REDIS->{$_} for grep { defined $REDIS->{$_} } qw(user password);
    redis_stop();
    return redis_start(%opt);
}

# SIGSTOP: connections are accepted by the kernel and nothing answers.
sub redis_stall {
    die "redis_stall: not running\n" unless $REDIS && $REDIS->{pid};
    kill 'STOP', $REDIS->{pid};
    $REDIS->{stalled} = 1;
}

sub redis_unstall {
    return unless $REDIS && $REDIS->{stalled};
    kill 'CONT', $REDIS->{pid};
    $REDIS->{stalled} = 0;
}

# One command through redis-cli (with the test server's credentials);
# its output without the trailing newline.
sub redis_cli {
    my (@args) = @_;
    die "redis_cli: redis_start() first\n" unless $REDIS && $REDIS->{pid};
    my %env;
    $env{REDISCLI_AUTH} = $REDIS->{password} if defined $REDIS->{password};
    my @user = defined $REDIS->{user} ? ('--user', $REDIS->{user}) : ();
    my $out = run_cmd(\%env, 'redis-cli', '-h', '127.0.0.1',
                      '-p', $REDIS->{port}, @user, '--no-auth-warning', @args);
    chomp $out;
    return $out;
}


# Repeats $try every $every seconds (default 0.1) until $done->($r) or
# $secs pass; returns the last answer and the seconds it took.
sub retry_until {
    my ($secs, $try, $done, $every) = @_;
    my $start = time;
    my $r;
    while (1) {
        $r = $try->();
        last if $done->($r) || time - $start > $secs;
        sleep($every // 0.1);
    }
    return ($r, time - $start);
}

# A DBI handle to the test database (reconnects after a restart).
sub dbh {
    die "dbh: pg_start() first\n" unless $PG;
    return $DBH if $DBH && $DBH->ping;

    $DBH = DBI->connect(
        "dbi:Pg:dbname=capliquify;host=$PG->{socket};port=$PG->{port}",
        'postgres', '',
        { RaiseError => 1, PrintError => 0, AutoCommit => 1,
          AutoInactiveDestroy => 1 });
    $DBH->do('SET client_min_messages = warning');
    return $DBH;
}

# Runs one statement; returns its rows as hashrefs (none for statements
# without a result).  Placeholders: $1, $2, ... or ?.
sub sql {
    my ($query, @binds) = @_;

    my $sth = dbh()->prepare($query);
    $sth->execute(@binds);
    return () unless $sth->{NUM_OF_FIELDS};
    return @{ $sth->fetchall_arrayref({}) };
}

# The first column of the first row.
# sql() in a transaction that fires no trigger, hence no NOTIFY: a change
# as if made while nobody listened (the tenant cache cannot know of it).
sub sql_silent {
    my ($query, @binds) = @_;
    my $dbh = dbh();
    $dbh->begin_work;
    $dbh->do('SET LOCAL session_replication_role = replica');
    my @rows = sql($query, @binds);
    $dbh->commit;
    return @rows;
}

sub sql_value {
    my ($query, @binds) = @_;

    my $row = dbh()->selectrow_arrayref($query, undef, @binds);
    return $row ? $row->[0] : undef;
}

# Creates a tenant with public.create_tenant() and returns its row.
#
#   name, slug, org (clerk_organization_id), tier (starter), email,
#   trial_days (14)                              passed to create_tenant()
#   status         subscription_status, set afterwards
#   trial_ends_at  number: seconds from now (negative: in the past);
#                  string: a timestamptz; undef: NULL
#   rate_limit     rate_limit_override
#   settings       hashref, stored as jsonb
sub create_tenant {
    my (%a) = @_;

    my $n = ++$TENANT_SEQ;
    my %t = (
        name       => "Test Tenant $n",
        slug       => "tenant-$n",
        org        => "org_test_$n",
        tier       => 'starter',
        email      => "owner$n\@example.test",
        trial_days => 14,
        %a,
    );

    my ($row) = sql('SELECT * FROM public.create_tenant($1, $2, $3, $4, $5, $6)',
                    @t{qw(name slug org tier email trial_days)});

    my (@set, @val);
    if (exists $a{status}) {
        push @set, 'subscription_status = ?';
        push @val, $a{status};
    }
    if (exists $a{trial_ends_at}) {
        my $v = $a{trial_ends_at};
        if (defined $v && $v =~ /^-?\d+(\.\d+)?$/) {
            push @set, "trial_ends_at = now() + ?::float8 * interval '1 second'";
        } else {
            push @set, 'trial_ends_at = ?::timestamptz';
        }
        push @val, $v;
    }
    if (exists $a{rate_limit}) {
        push @set, 'rate_limit_override = ?';
        push @val, $a{rate_limit};
    }
    if (exists $a{settings}) {
        push @set, 'settings = ?::jsonb';
        push @val, $JSON->encode($a{settings});
    }

    if (@set) {
        ($row) = sql('UPDATE public.tenants SET ' . join(', ', @set)
                     . ' WHERE id = ? RETURNING *', @val, $row->{id});
    }
    return $row;
}


###########################################################################
# Keys and tokens

# Key pairs made once per test process with the openssl CLI:
#   rsa_key/rsa_pub      RSA-2048, kid rsa-1  (in the JWKS)
#   ec_key/ec_pub        P-256,    kid ec-1   (in the JWKS)
#   other_key/other_pub  RSA-2048, kid rsa-other (NOT in the JWKS)
#   jwks                 JWKS file; jwks_json its contents
# All values are absolute paths except jwks_json.
sub jwt_keys {
    return $KEYS if $KEYS;

    my $d = tmpdir() . '/keys';
    make_path($d);
    chmod 0755, $d;

    my %k = (dir => $d);
    for my $name (qw(rsa ec other)) {
        my @gen = $name eq 'ec'
            ? qw(-algorithm EC -pkeyopt ec_paramgen_curve:P-256)
            : qw(-algorithm RSA -pkeyopt rsa_keygen_bits:2048);
        run_cmd({}, 'openssl', 'genpkey', '-quiet', @gen,
                '-out', "$d/$name.key");
        run_cmd({}, 'openssl', 'pkey', '-in', "$d/$name.key", '-pubout',
                '-out', "$d/$name.pub");
        chmod 0644, "$d/$name.key", "$d/$name.pub";
        $k{"${name}_key"} = "$d/$name.key";
        $k{"${name}_pub"} = "$d/$name.pub";
    }

    my $rsa = Crypt::PK::RSA->new($k{rsa_pub})->export_key_jwk('public', 1);
    my $ec  = Crypt::PK::ECC->new($k{ec_pub})->export_key_jwk('public', 1);
    my $jwks = { keys => [
        { %$rsa, kid => 'rsa-1', use => 'sig', alg => 'RS256' },
        { %$ec,  kid => 'ec-1',  use => 'sig', alg => 'ES256' },
    ] };

    $k{jwks}      = "$d/jwks.json";
    $k{jwks_json} = $JSON->encode($jwks);
    open my $fh, '>', $k{jwks} or die "$k{jwks}: $!";
    print $fh $k{jwks_json};
    close $fh;
    chmod 0644, $k{jwks};

    return $KEYS = \%k;
}

my %PK;     # parsed private keys by path

# 'rsa', 'ec', 'other', a PEM path (RSA or EC) or a Crypt::PK object.
sub _private_key {
    my ($key) = @_;

    return $key if ref $key;
    my $path = jwt_keys()->{"${key}_key"} // $key;
    return $PK{$path} //= eval { Crypt::PK::RSA->new($path) }
                          // eval { Crypt::PK::ECC->new($path) }
                          // die "mint_token: no RSA or EC key in $path\n";
}

# A real signed JWT.  Options (everything else is a claim):
#   key     'rsa' (default), 'ec', 'other' (RSA, not in the JWKS), a PEM
#           path, or a Crypt::PK object; for HS*: the secret (default: the
#           bytes of the RSA public PEM, the classic confusion attack)
#   alg     RS256 for RSA keys, ES256 for EC ('none' makes an unsigned one)
#   kid     default rsa-1 / ec-1 / rsa-other; undef: no kid
#   header  extra header fields (undef values remove a field, e.g. typ)
#   org     Clerk organization: 'org_x' or { id, role, slug }; as v1
#           claims (org_id, org_role, org_slug), or with v => 2 as
#           o => { id, rol, slg }
# Claims default to sub 'user_test', sid 'sess_test' (a Clerk session
# token: JWT template tokens have no sid), iat now, exp now + 300; a claim
# given as undef is left out (sid => undef: a template-shaped token).
sub mint_token {
    my (%c) = @_;

    my %o;
    for (qw(key alg kid header org)) {
        $o{$_} = delete $c{$_} if exists $c{$_};
    }

    my $keys = jwt_keys();
    my $key  = $o{key} // 'rsa';
    my $alg  = $o{alg};
    my $pk;
    if (!defined $alg || $alg !~ /^(HS|none$)/) {
        $pk = _private_key($key);
        $alg //= ref $pk eq 'Crypt::PK::ECC' ? 'ES256' : 'RS256';
    }

    my $kid = exists $o{kid} ? $o{kid}
            : ref $key       ? undef
            : { rsa => 'rsa-1', ec => 'ec-1', other => 'rsa-other' }->{$key};

    my $now = time;
    my %claims = (sub => 'user_test', sid => 'sess_test', iat => int $now,
                  exp => int($now) + 300);

    if (defined $o{org}) {
        my $org = ref $o{org} ? $o{org} : { id => $o{org} };
        if (($c{v} // 1) == 2) {
            $claims{o} = { id => $org->{id},
                           (rol => $org->{role}) x defined $org->{role},
                           (slg => $org->{slug}) x defined $org->{slug} };
        } else {
            $claims{org_id} = $org->{id};
            $claims{org_role} = $org->{role} if defined $org->{role};
            $claims{org_slug} = $org->{slug} if defined $org->{slug};
        }
    }
    %claims = (%claims, %c);
    delete @claims{ grep { !defined $claims{$_} } keys %claims };

    my %hdr = (typ => 'JWT', (defined $kid ? (kid => $kid) : ()),
               %{ $o{header} || {} });
    delete @hdr{ grep { !defined $hdr{$_} } keys %hdr };

    my $k = $alg =~ /^HS/ ? $o{key} // _slurp($keys->{rsa_pub})
          : $alg eq 'none' ? ''
          : $pk;

    return encode_jwt(payload => \%claims, alg => $alg, key => $k,
                      extra_headers => \%hdr, allow_none => 1);
}

# A token from parts, for malformed input: header and payload are hashrefs
# (JSON-encoded) or strings (used as they are), all base64url-encoded;
# signature is raw bytes (base64url-encoded) or, with raw_signature, used
# as is.
sub jwt_raw {
    my (%p) = @_;

    my @parts = map {
        my $v = $p{$_} // {};
        encode_base64url(ref $v ? $JSON->encode($v) : $v);
    } qw(header payload);

    my $sig = defined $p{raw_signature} ? $p{raw_signature}
            : encode_base64url($p{signature} // '');
    return join '.', @parts, $sig;
}


###########################################################################
# Fake upstream

# A fake Clerk Backend API JWKS endpoint (CLERK_SECRET_KEY +
# CLERK_JWKS_URL): answers jwks => JSON to "Authorization: Bearer
# <secret>", 401 otherwise, and appends "METHOD URI AUTHORIZATION" to the
# file {hits} for each request.  Returns echo_start's hash with {hits}.
my $CLERK_JWKS_SEQ = 0;

sub clerk_jwks_start {
    my (%o) = @_;
    my $hits = tmpdir() . '/jwks-hits.' . ++$CLERK_JWKS_SEQ;
    my $srv = echo_start(handler => sub {
        my ($req) = @_;
        my $auth = $req->{headers}{authorization}[0] // '';
        open my $fh, '>>', $hits or die "$hits: $!";
        print $fh "$req->{method} $req->{uri} $auth\n";
        close $fh;
        return (401, [], '{"errors":[]}') if $auth ne "Bearer $o{secret}";
        return (200, ['Content-Type' => 'application/json'], $o{jwks});
    });
    $srv->{hits} = $hits;
    return $srv;
}

# A tiny HTTP/1.1 server on 127.0.0.1:<free port> in forked processes
# (workers, default 2), one request per connection (Connection: close).
# It answers 200 application/json:
#   { method, uri, version, headers: { lowercased name: [values in order] },
#     body }
# handler => sub { my ($req) = @_; return ($status, [name => value, ...],
# $body) } replaces that answer ($req is the hash above).
# Returns { port, addr => '127.0.0.1:port', pids }.
#
# Without arguments: the default upstream (%%ECHO%%), started once.  With
# arguments: one more server each call.
sub echo_start {
    my (%opt) = @_;

    return $ECHO if $ECHO && !%opt;

    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                    Listen => 128, ReuseAddr => 1)
        or die "echo_start: $!";
    my @pids;
    for (1 .. ($opt{workers} || 2)) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
            $SIG{PIPE} = 'IGNORE';
            while (1) {
                my $c = $srv->accept or next;       # EINTR
                eval { _echo_one($c, $opt{handler}); 1 }
                    or print STDERR "echo: $@";
                alarm 0;
                close $c;
            }
        }
        push @pids, $pid;
    }

    my $echo = { port => $srv->sockport, pids => \@pids };
    $echo->{addr} = "127.0.0.1:$echo->{port}";
    close $srv;

    push @ECHOS, $echo;
    $ECHO //= $echo unless %opt;
    return $echo;
}

sub _echo_one {
    my ($c, $handler) = @_;

    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 10;                   # a stuck client frees this worker

    my $buf = '';
    while ($buf !~ /\r?\n\r?\n/) {
        sysread($c, $buf, 65536, length $buf) or return;
    }
    my ($head, $rest) = split /\r?\n\r?\n/, $buf, 2;
    my ($line, @lines) = split /\r?\n/, $head;
    my ($method, $uri, $version) = split / /, $line, 3;

    my (%h, @list);
    for (@lines) {
        my ($n, $v) = /^([^:]*):[ \t]*(.*?)[ \t]*$/ or next;
        push @{ $h{lc $n} }, $v;
        push @list, [$n, $v];
    }

    my $body = $rest;
    if (($h{'transfer-encoding'}[0] // '') =~ /chunked/i) {
        $body = '';
        while (1) {
            while ($rest !~ /\r\n/) {
                sysread($c, $rest, 65536, length $rest) or last;
            }
            $rest =~ s/^([0-9a-fA-F]+)[^\r]*\r\n// or last;
            my $size = hex $1;
            last if $size == 0;
            while (length $rest < $size + 2) {
                sysread($c, $rest, 65536, length $rest) or last;
            }
            $body .= substr($rest, 0, $size);
            substr($rest, 0, $size + 2) = '';
        }
    } elsif (defined $h{'content-length'}) {
        my $len = $h{'content-length'}[0];
        while (length $body < $len) {
            sysread($c, $body, 65536, length $body) or last;
        }
    }

    my $req = { method => $method, uri => $uri, version => $version,
                headers => \%h, header_list => \@list, body => $body };

    my ($status, $hdrs, $out) = $handler
        ? $handler->($req)
        : (200, ['Content-Type' => 'application/json'],
           $JSON->encode({ map { $_ => $req->{$_} }
                           qw(method uri version headers body) }));
    $hdrs ||= [];
    $out  //= '';

    my $resp = "HTTP/1.1 $status Echo\r\n";
    for (my $i = 0; $i < @$hdrs; $i += 2) {
        $resp .= "$hdrs->[$i]: $hdrs->[$i + 1]\r\n";
    }
    $resp .= "Content-Length: " . length($out) . "\r\n"
           . "Connection: close\r\n\r\n" . $out;
    syswrite $c, $resp;
    alarm 0;
}

# Stops one echo server, or all of them.
sub echo_stop {
    my ($which) = @_;

    for my $echo ($which ? ($which) : @ECHOS) {
        kill 'TERM', @{ $echo->{pids} };
        waitpid $_, 0 for @{ $echo->{pids} };
    }
    @ECHOS = $which ? grep { $_ != $which } @ECHOS : ();
    undef $ECHO if !$which || ($ECHO && $ECHO == $which);
}


###########################################################################
# A TCP proxy in front of PostgreSQL that can hold answers

# pg_proxy() forks a proxy to the cluster's TCP port (pg_start(tcp => 1)
# first) and returns an object:
#   conninfo       libpq conninfo through the proxy
#   hold($text)    from now on, a connection whose client sends bytes
#                  containing $text (an organization id: a lookup's
#                  parameter) gets the server's answers held back
#   release        stops holding and delivers what was held
#   status         { accepted, open, held (bytes), complete (1: what is
#                  held ends with ReadyForQuery), holding (connections) }
#   wait_held($s)  waits up to $s seconds until an answer is held whole
# It ends with the test (or when its parent is gone).
my @PROXIES;

sub pg_proxy {
    die "pg_proxy: pg_start(tcp => 1) first\n"
        unless $PG && $PG->{tcp_conninfo};

    my $dir = tmpdir() . '/pgproxy.' . (@PROXIES + 1);
    make_path($dir);
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                    Listen => 64, ReuseAddr => 1)
        or die "pg_proxy: $!";
    my $to = $PG->{port};

    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        $SIG{PIPE} = 'IGNORE';
        _proxy_loop($srv, $to, $dir);
        POSIX::_exit(0);
    }

    my $p = bless { pid => $pid, dir => $dir, port => $srv->sockport,
                    conninfo => 'host=127.0.0.1 port=' . $srv->sockport
                                . ' dbname=capliquify user=postgres' },
                  'TenantTest::PgProxy';
    close $srv;
    push @PROXIES, $p;
    $p->status(5);          # up
    return $p;
}

sub _proxy_loop {
    my ($srv, $to, $dir) = @_;

    my $parent = getppid;
    my $sel = IO::Select->new($srv);
    my (%by_fd, %pair, $accepted);  # fileno -> pair; id -> pair
    my $status = '';

    while (getppid == $parent) {
        my $hold = -e "$dir/hold" ? _slurp("$dir/hold") : undef;
        my ($held, $complete) = (0, 0);

        for my $x (values %pair) {
            if (!defined $hold && $x->{held}) {
                syswrite $x->{c}, $x->{buf} if length $x->{buf};
                $x->{buf} = '';
                $x->{held} = 0;
            }
            $held += length $x->{buf};
            $complete = 1 if $x->{buf} =~ /Z\0\0\0\x05[ITE]\z/;
        }

        my $now = sprintf "accepted=%d open=%d held=%d complete=%d holding=%d\n",
            $accepted // 0, scalar keys %pair, $held, $complete,
            scalar grep { $_->{held} } values %pair;
        if ($now ne $status) {
            _spew("$dir/status.tmp", $now);
            rename "$dir/status.tmp", "$dir/status";
            $status = $now;
        }

        for my $fh ($sel->can_read(0.02)) {
            if ($fh == $srv) {
                my $c = $srv->accept or next;
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $to)
                    or do { close $c; next };
                my $x = { c => $c, s => $s, held => 0, buf => '',
                          id => ++$accepted };
                $by_fd{ $c->fileno } = $by_fd{ $s->fileno } = $pair{ $x->{id} } = $x;
                $sel->add($c, $s);
                next;
            }

            my $x = $by_fd{ $fh->fileno } or next;
            my $n = sysread $fh, my $data, 65536;

            if (!$n) {
                delete @by_fd{ $x->{c}->fileno, $x->{s}->fileno };
                delete $pair{ $x->{id} };
                $sel->remove($x->{c}, $x->{s});
                close $x->{c};
                close $x->{s};
                next;
            }

            if ($fh == $x->{c}) {
                $hold = -e "$dir/hold" ? _slurp("$dir/hold") : undef;
                $x->{held} = 1
                    if defined $hold && length $hold && index($data, $hold) >= 0;
                syswrite $x->{s}, $data;

            } elsif ($x->{held}) {
                $x->{buf} .= $data;

            } else {
                syswrite $x->{c}, $data;
            }
        }
    }
}

sub TenantTest::PgProxy::hold {
    my ($p, $text) = @_;
    _spew("$p->{dir}/hold.tmp", $text);
    rename "$p->{dir}/hold.tmp", "$p->{dir}/hold";
}

sub TenantTest::PgProxy::release {
    my ($p) = @_;
    unlink "$p->{dir}/hold";
    # delivered: nothing held any more
    retry_until(5, sub { $p->status }, sub { !$_[0]{held} }, 0.02);
}

sub TenantTest::PgProxy::status {
    my ($p, $wait) = @_;
    my ($line) = retry_until($wait // 0, sub { _slurp("$p->{dir}/status") },
                             sub { length $_[0] }, 0.02);
    die "pg_proxy: no status\n" unless length $line;
    return { $line =~ /(\w+)=(\d+)/g };
}

sub TenantTest::PgProxy::wait_held {
    my ($p, $secs) = @_;
    my ($st) = retry_until($secs, sub { $p->status }, sub { $_[0]{complete} },
                           0.02);
    return $st->{complete};
}

END {
    local $?;                   # the test's exit status
    if ($$ == $OWNER) {
        kill 'TERM', map { $_->{pid} } @PROXIES;
        waitpid $_->{pid}, 0 for @PROXIES;
    }
}


###########################################################################
# PgBouncer (Debian's) in front of the cluster's TCP port

# pgbouncer_start(%opt) starts one (pg_start(tcp => 1) first), as the
# user postgres (it refuses to run as root), and returns
# { port, pid, dir, conninfo }.  Options: pool_mode (transaction),
# pool_size (default_pool_size, 4), password (clients must give it, md5;
# default: trust), settings (more lines of its [pgbouncer] section).  It
# is stopped when the test ends.
my @BOUNCERS;

sub pgbouncer_start {
    my (%o) = @_;

    die "pgbouncer_start: pg_start(tcp => 1) first\n"
        unless $PG && $PG->{tcp_conninfo};
    my $bin = '/usr/sbin/pgbouncer';
    my $dir = tmpdir() . '/pgbouncer.' . (@BOUNCERS + 1);
    my $port = free_port();
    make_path($dir);
    my (undef, undef, $uid, $gid) = getpwnam('postgres')
        or die "pgbouncer_start: no user postgres\n";
    chown $uid, $gid, $dir or die "chown $dir: $!";

    my $pw = $o{password} // '';
    $pw =~ s/"/""/g;
    _spew("$dir/userlist.txt", qq{"postgres" "$pw"\n});
    _spew("$dir/pgbouncer.ini", <<"EOF");
[databases]
capliquify = host=127.0.0.1 port=$PG->{port} dbname=capliquify user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
pool_mode = @{[ $o{pool_mode} // 'transaction' ]}
auth_type = @{[ defined $o{password} ? 'md5' : 'trust' ]}
auth_file = $dir/userlist.txt
admin_users = postgres
stats_users = postgres
default_pool_size = @{[ $o{pool_size} // 4 ]}
ignore_startup_parameters = extra_float_digits,application_name
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
@{[ $o{settings} // '' ]}
EOF
    chown $uid, $gid, map { "$dir/$_" } qw(pgbouncer.ini userlist.txt);
    chmod 0600, "$dir/userlist.txt";

    run_cmd({}, 'runuser', '-u', 'postgres', '--', $bin, '-d',
            "$dir/pgbouncer.ini");
    my ($pid) = retry_until(5, sub {
        my ($p) = _slurp("$dir/pgbouncer.pid") =~ /(\d+)/;
        return $p && IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                           PeerPort => $port) ? $p : undef;
    }, sub { $_[0] }, 0.05);
    die "pgbouncer did not start: " . _slurp("$dir/pgbouncer.log") . "\n"
        unless $pid;

    my $b = { port => $port, pid => $pid, dir => $dir,
              conninfo => "host=127.0.0.1 port=$port dbname=capliquify"
                          . ' user=postgres' };
    push @BOUNCERS, $b;
    return $b;
}

END {
    local $?;
    kill 'TERM', map { $_->{pid} } @BOUNCERS if $$ == $OWNER;
}


###########################################################################
# nginx

sub _slurp {
    my ($path, $from) = @_;

    open my $fh, '<', $path or return '';
    seek $fh, $from || 0, 0;
    local $/;
    return scalar(<$fh>) // '';
}

sub _spew {
    my ($path, $text) = @_;

    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh or die "$path: $!";
}

# Replaces %%NAME%% placeholders; dies on unknown ones.
sub _expand {
    my ($text, $v) = @_;

    $text =~ s{%%([A-Z0-9_]+)%%}{
        my $name = $1;
        my $val = ref $v->{$name} eq 'CODE' ? $v->{$name}->() : $v->{$name};
        defined $val ? $val : die "nginx conf: unknown placeholder %%$name%%\n";
    }ge;
    return $text;
}

# The whole nginx.conf for opts:
#   http        snippet inside http { }
#   main        snippet at the top level (env, thread_pool, ...)
#   workers     worker_processes (1)
#   error_level error_log level (info)
#   no_module   1: no load_module line (plain nginx)
#   env         { NAME => value }: extra environment of the nginx command
#               (nginx_start; e.g. LD_PRELOAD), not a config line
# Placeholders: %%PORT%% %%PORT2%% (free ports), %%ECHO%% (127.0.0.1:port
# of the echo upstream, started on demand), %%PG%% (libpq conninfo,
# cluster started on demand), %%RSA_PUB%% %%EC_PUB%% %%JWKS%% (paths),
# %%DIR%% (nginx prefix dir), %%REDIS%% (redis://127.0.0.1:port of the
# test's redis-server, started on demand).
sub _nginx_conf {
    my ($dir, $ports, %o) = @_;

    my $keys = sub { my $k = shift; sub { jwt_keys()->{$k} } };
    my %v = (
        PORT    => $ports->[0],
        PORT2   => $ports->[1],
        DIR     => $dir,
        ECHO    => sub { echo_start()->{addr} },
        PG      => sub { pg_start()->{conninfo} },
        REDIS   => sub { redis_start()->{url} },
        RSA_PUB => $keys->('rsa_pub'),
        EC_PUB  => $keys->('ec_pub'),
        JWKS    => $keys->('jwks'),
    );

    my $load = $o{no_module} ? '' : "load_module $MODULE;\n";
    my $workers = $o{workers} || 1;
    my $level = $o{error_level} || 'info';
    my $main = _expand($o{main} // '', \%v);
    my $http = _expand($o{http} // '', \%v);

    return <<EOF;
${load}worker_processes $workers;
daemon on;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log $level;
$main
events {
    worker_connections 1024;
}

http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

$http
}
EOF
}

sub _check_module {
    my (%o) = @_;

    Test::More::BAIL_OUT("$GUARD does not exist: build it (make guard), or "
                         . "run without it (TENANT_BLOCKGUARD=0)")
        if $GUARD && !-f $GUARD;
    return if $o{no_module} || -f $MODULE;
    Test::More::BAIL_OUT("$MODULE does not exist: build it first (make)");
}

# The environment nginx starts with: the blocking-call guard preloaded
# (after any library already preloaded, e.g. a sanitizer's runtime).
sub _nginx_env {
    my ($extra) = @_;
    my %env = %{ $extra || {} };

    return \%env unless $GUARD;
    $env{LD_PRELOAD} = join ':', grep { defined && length }
                           $ENV{LD_PRELOAD}, $env{LD_PRELOAD}, $GUARD;
    return \%env;
}

sub _nginx_cmd {
    my ($dir, @args) = @_;

    return ($NGINX, '-p', "$dir/", '-c', "$dir/nginx.conf",
            '-e', "$dir/error.log", @args);
}

# Runs nginx -t on a config made from opts (as nginx_start takes them) in
# a dir of its own.  Returns { ok, output (nginx's messages), conf }.
sub nginx_conf_test {
    my (%o) = @_;

    _check_module(%o);
    my $dir = tmpdir() . '/nginx-t' . ++$CONF_SEQ;
    make_path("$dir/tmp");
    chmod 0755, $dir;
    my $conf = _nginx_conf($dir, [free_port(), free_port()], %o);
    _spew("$dir/nginx.conf", $conf);

    my $out = eval { join '', run_cmd({}, _nginx_cmd($dir, '-t')) };
    my $ok = defined $out;
    $out = $@ unless $ok;
    $out .= _slurp("$dir/error.log");
    return { ok => $ok, output => $out, conf => $conf };
}

# Starts nginx (master daemonized) with a config made from opts (see
# _nginx_conf) and waits until its port answers.  Returns
# { port, port2, dir, pid, conf }.
sub nginx_start {
    my (%o) = @_;

    die "nginx_start: already running; nginx_stop() or nginx_reload()\n"
        if $NGX && $NGX->{pid};

    $NGX = {};      # filled before nginx starts: cleanup stops it whatever happens
    return _nginx_launch($NGX, tmpdir() . '/nginx', %o);
}

# Writes a config made from opts into $dir, starts nginx from it and waits
# until it has its workers and its port answers; its error log joins
# those checked at the end.  Fills and returns $ngx: { dir port port2 opts
# conf log log_from pid }.
sub _nginx_launch {
    my ($ngx, $dir, %o) = @_;

    _check_module(%o);
    make_path("$dir/tmp");
    chmod 0755, $dir;

    my $ports = [free_port(), free_port()];
    my $conf = _nginx_conf($dir, $ports, %o);
    _spew("$dir/nginx.conf", $conf);

    my $log = "$dir/error.log";
    my $from = -s $log || 0;
    push @LOGS, [$log, $from];

    %$ngx = (%$ngx, dir => $dir, port => $ports->[0], port2 => $ports->[1],
             opts => \%o, conf => $conf, log => $log, log_from => $from);

    eval { run_cmd(_nginx_env($o{env}), _nginx_cmd($dir)); 1 }
        or die "nginx_start: nginx did not start:\n$@"
               . _slurp($log, $from) . "\nconfig:\n$conf";

    my $deadline = time + 10;
    until (-s "$dir/nginx.pid") {
        die "nginx_start: no pid file\n" . _slurp($log, $from) if time > $deadline;
        sleep 0.01;
    }
    ($ngx->{pid}) = _slurp("$dir/nginx.pid") =~ /(\d+)/;

    my $want = $o{workers} || 1;
    until (_workers_of($ngx->{pid}) >= $want
           && IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                    PeerPort => $ngx->{port}, Timeout => 1))
    {
        die "nginx_start: port $ngx->{port} does not answer\n"
            . _slurp($log, $from) if time > $deadline;
        sleep 0.02;
    }
    return $ngx;
}

# Pids of the worker processes that are not shutting down.
sub nginx_workers {
    return () unless $NGX && $NGX->{pid};
    return _workers_of($NGX->{pid});
}

sub _workers_of {
    my ($master) = @_;

    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $s = _slurp($stat);
        my ($pid, $ppid) = $s =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        next unless $ppid == $master;
        my $cmd = _slurp("/proc/$pid/cmdline");
        push @pids, $pid if $cmd =~ /^nginx: worker process\0*$/;
    }
    @pids = sort { $a <=> $b } @pids;
    return @pids;
}

# Reloads (SIGHUP), after rewriting the config when opts are given (they
# are merged into nginx_start's; ports stay).  Waits until the new
# workers run.  A reload that nginx refuses dies with the log's reason;
# with expect_fail => 1 it returns that reason instead (and the [emerg] is
# allowed).
sub nginx_reload {
    my (%o) = @_;

    die "nginx_reload: nginx is not running\n" unless $NGX && $NGX->{pid};
    my $expect_fail = delete $o{expect_fail};

    if (%o) {
        $NGX->{opts} = { %{ $NGX->{opts} }, %o };
        _check_module(%{ $NGX->{opts} });
        $NGX->{conf} = _nginx_conf($NGX->{dir}, [$NGX->{port}, $NGX->{port2}],
                                   %{ $NGX->{opts} });
        _spew("$NGX->{dir}/nginx.conf", $NGX->{conf});
    }

    my %old = map { $_ => 1 } nginx_workers();
    my $mark = log_mark();
    my $want = $NGX->{opts}{workers} || 1;
    kill 'HUP', $NGX->{pid} or die "nginx_reload: kill: $!";

    my $deadline = time + 10;
    while (1) {
        my $log = error_log(since => $mark);
        if ($log =~ /^(.*\[emerg\].*)$/m) {
            my $why = $1;
            if ($expect_fail) {
                my $re = quotemeta $why;
                error_log_allow(qr/$re/);
                return $why;
            }
            die "nginx_reload: refused: $why\n";
        }
        my @now = nginx_workers();
        my @new = grep { !$old{$_} } @now;
        last if @new >= $want && @new == @now;      # old ones retired
        die "nginx_reload: new workers did not start\n$log" if time > $deadline;
        sleep 0.02;
    }
    die "nginx_reload: expected the reload to fail, it did not\n" if $expect_fail;
    return $NGX;
}

# Whether $pid runs: it exists and is not a zombie (a daemon that exited
# stays one until whoever reaps orphans here gets to it, a second or two).
sub alive {
    my ($pid) = @_;
    return 0 unless $pid && kill 0, $pid;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my ($state) = (<$fh> // '') =~ /^\d+ \(.*\) (\S)/s;
    return ($state // 'Z') ne 'Z';
}

# Graceful stop (QUIT), then TERM, then KILL; waits for the master.
sub nginx_stop {
    return unless $NGX && $NGX->{pid};
    _nginx_halt($NGX);
}

sub _nginx_halt {
    my ($ngx) = @_;

    my $pid = $ngx->{pid};
    for my $step (['QUIT', 10], ['TERM', 5], ['KILL', 5]) {
        my ($sig, $wait) = @$step;
        last unless alive($pid);
        kill $sig, $pid;
        my $deadline = time + $wait;
        sleep 0.02 while alive($pid) && time < $deadline;
    }
    $ngx->{pid} = undef;
}

# More instances besides nginx_start()'s, for tests of several gateways
# on one machine (e.g. three sharing one PostgreSQL and one Redis): each
# its own master, prefix dir, ports and error log, from a config made from
# opts as nginx_start takes them.  Returns { name dir port port2 pid conf
# log }; http(port => $i->{port}) talks to it.  Its error log is checked
# at the end like nginx_start's; it is stopped at exit.
my @INSTANCES;
my $INSTANCE_SEQ = 0;

sub nginx_instance_start {
    my (%o) = @_;

    my $name = delete $o{name} // 'i' . ++$INSTANCE_SEQ;
    die "nginx_instance_start: bad name \"$name\"\n" unless $name =~ /^\w+$/;
    my $i = { name => $name };
    push @INSTANCES, $i;
    return _nginx_launch($i, tmpdir() . "/nginx-$name", %o);
}

# Its workers that are not shutting down.
sub nginx_instance_workers {
    my ($i) = @_;
    return () unless $i->{pid};
    return _workers_of($i->{pid});
}

# Graceful stop, as nginx_stop(); undef: all of them.
sub nginx_instance_stop {
    my ($i) = @_;
    for my $n ($i ? ($i) : @INSTANCES) {
        _nginx_halt($n) if $n->{pid};
    }
}

# The error log of the running (or last) nginx since it started, or since
# a log_mark().
sub error_log {
    my (%o) = @_;

    return '' unless $NGX;
    return _slurp($NGX->{log}, $o{since} // $NGX->{log_from});
}

# The current end of the error log, for error_log(since => $mark).
sub log_mark {
    return 0 unless $NGX;
    return -s $NGX->{log} || 0;
}

# Error log lines matching these patterns do not fail the final check.
sub error_log_allow {
    push @ALLOWED, @_;
}

my @BAD = (qr/\[alert\]/, qr/\[emerg\]/, qr/AddressSanitizer|LeakSanitizer/,
           qr/runtime error:/, qr/segfault/, qr/exited on signal/,
           qr/BLOCKING CALL:/);

# Blocking calls the guard reports that are known and left for a decision
# (each names its issue; the final check counts them in a note, so they
# stay visible).
my @BLOCKING_KNOWN = (
    # Issue 11, item 14 (for the lead): with no password in the connection
    # string, libpq's PQconnectStartParams() looks up the worker user's
    # home directory (getpwuid_r: /etc/passwd, or NSS: LDAP, sssd) and
    # stat()s ~/.pgpass on every new connection, on the worker; were the
    # file there, it would fopen() and read it too.
    qr/BLOCKING\ CALL:\ (?:getpwuid_r\(\d+\)|stat\("[^"]*\.pgpass"\))
       .*\ <\ libpq\.so[.\d]*\(PQconnectStartParams\+/x,

    # Issue 11, item 14 (for the lead): over TCP, with gssencmode left at
    # its default (prefer), libpq's PQconnectPoll() asks GSSAPI for
    # Kerberos credentials on the worker: libkrb5 reads /etc/krb5.conf
    # and the credential cache (seen in t/045).  gssencmode=disable in
    # tenant_database avoids it.
    qr/BLOCKING\ CALL:\ .*\ <\ libgssapi_krb5\.so[.\d]*[(+]
       .*\ <\ libpq\.so[.\d]*\(PQconnectPoll\+/x,
);
my $BLOCKING_KNOWN_SEEN = 0;

# The guard's lines in $text that are not known (for a log the harness
# does not watch, e.g. an nginx a test starts itself with _nginx_env()).
sub blocking_calls {
    my ($text) = @_;
    return grep { /BLOCKING CALL:/ && !_blocking_known($_) } split /\n/, $text;
}

sub _blocking_known {
    my ($line) = @_;
    return 0 unless grep { $line =~ $_ } @BLOCKING_KNOWN;
    $BLOCKING_KNOWN_SEEN++;
    return 1;
}

# Bad lines of every error log this process produced.
sub _log_problems {
    my @bad;
    $BLOCKING_KNOWN_SEEN = 0;
    for my $l (@LOGS) {
        my ($path, $from) = @$l;
        for my $line (split /\n/, _slurp($path, $from)) {
            next unless grep { $line =~ $_ } @BAD;
            next if grep { $line =~ $_ } @ALLOWED;
            next if _blocking_known($line);
            push @bad, $line;
        }
    }
    return @bad;
}


###########################################################################
# HTTP client

# Whether a response is complete without waiting for the server to close
# (a keep-alive answer): a whole body of Content-Length, the last chunk,
# or a status without a body.
sub _complete {
    my ($raw, $head_only) = @_;

    my $end = index $raw, "\r\n\r\n";
    return 0 if $end < 0;
    my $head = substr $raw, 0, $end;
    my $body = length($raw) - $end - 4;

    return 1 if $head_only || $head =~ m{^HTTP/\S+ (204|304)};
    return $body >= $1 if $head =~ /\r\ncontent-length:[ \t]*(\d+)/i;
    return $raw =~ /\r\n0\r\n(.*\r\n)?\r\n\z/s
        if $head =~ /\r\ntransfer-encoding:[^\r]*chunked/i;
    return 0;
}

# One request to nginx (127.0.0.1:%%PORT%%, or port => ...).
#   addr (127.0.0.1; an IPv6 address too), local_addr (connect from it),
#   unix (a socket path instead of addr and port),
#   method (GET), path (/), headers => [name => value, ...] (sent as given,
#   in order, duplicates and invalid values included), body, timeout (10 s)
#   Host: localhost, Connection: close and Content-Length (with a body) are
#   added unless the headers have them; raw => 'bytes' sends exactly that.
# Returns { status, reason, headers => { lowercased name => [values] },
# body, json (decoded when the type is JSON), elapsed (s), error }.
# On timeout or a connection failure, status is 0 and error says why.
sub http {
    my (%r) = @_;

    my $port = $r{port} // ($NGX && $NGX->{port})
        // die "http: no port (nginx_start() first)\n";
    my $timeout = $r{timeout} // 10;

    my $req = $r{raw};
    if (!defined $req) {
        my @h = @{ $r{headers} || [] };
        my %has;
        for (my $i = 0; $i < @h; $i += 2) {
            $has{lc $h[$i]} = 1;
        }
        push @h, Host => 'localhost' unless $has{host};
        push @h, Connection => 'close' unless $has{connection};
        push @h, 'Content-Length' => length $r{body}
            if defined $r{body} && !$has{'content-length'}
               && !$has{'transfer-encoding'};

        $req = ($r{method} // 'GET') . ' ' . ($r{path} // '/') . " HTTP/1.1\r\n";
        for (my $i = 0; $i < @h; $i += 2) {
            $req .= "$h[$i]: $h[$i + 1]\r\n";
        }
        $req .= "\r\n" . ($r{body} // '');
    }

    my $start = time;
    my $res = { status => 0, headers => {}, body => '' };
    my $s = $r{unix}
        ? IO::Socket::UNIX->new(Peer => $r{unix}, Timeout => $timeout)
        : defined $r{addr} || defined $r{local_addr}
        ? IO::Socket::IP->new(PeerHost => $r{addr} // '127.0.0.1',
                              PeerPort => $port, Timeout => $timeout,
                              (defined $r{local_addr}
                               ? (LocalHost => $r{local_addr}) : ()))
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                Timeout => $timeout);
    if (!$s) {
        $res->{error} = "connect: $!";
        return $res;
    }

    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite $s, $req, length($req) - $off, $off;
        last unless $n;         # the server may answer and close early
        $off += $n;
    }

    my $raw = '';
    my $sel = IO::Select->new($s);
    my $deadline = $start + $timeout;
    my $head_only = ($r{method} // 'GET') eq 'HEAD';
    while (!_complete($raw, $head_only)) {
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) {
            $res->{error} = 'timeout';
            last;
        }
        my $n = sysread $s, $raw, 65536, length $raw;
        last unless $n;
    }
    close $s;
    $res->{elapsed} = time - $start;
    $res->{raw} = $raw;

    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    return $res unless defined $head && $head =~ m{^HTTP/\d\.\d (\d{3}) ?([^\r\n]*)};
    @$res{qw(status reason)} = ($1, $2);
    if (defined $res->{error} && $res->{error} eq 'timeout') {
        $res->{status} = 0;     # a partial answer is not an answer
    }

    my @lines = split /\r\n/, $head;
    shift @lines;
    for (@lines) {
        my ($n, $v) = /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
        push @{ $res->{headers}{lc $n} }, $v;
    }

    $body //= '';
    if (($res->{headers}{'transfer-encoding'}[0] // '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r]*\r\n//) {
            my $size = hex $1;
            last if $size == 0;
            $out .= substr($body, 0, $size);
            substr($body, 0, $size + 2) = '';
        }
        $body = $out;
    }
    $res->{body} = $body;

    if (($res->{headers}{'content-type'}[0] // '') =~ m{[/+]json\b}) {
        $res->{json} = eval { $JSON->decode($body) };
    }
    return $res;
}


###########################################################################
# Cleanup

# Before done_testing() (or at exit with a plan): stop nginx and fail on
# bad error log lines.
Test2::API::test2_add_callback_testing_done(sub {
    return unless $$ == $OWNER && @LOGS;

    nginx_stop();
    nginx_instance_stop();
    my @bad = _log_problems();
    Test::More::note("blocking calls known and allowed (TenantTest.pm, "
                     . "\@BLOCKING_KNOWN): $BLOCKING_KNOWN_SEEN")
        if $BLOCKING_KNOWN_SEEN;
    Test::More::ok(!@bad, 'nginx error log: no alert, emerg, sanitizer '
                          . 'report, crash or blocking call')
        or Test::More::diag(join "\n", 'bad lines:', @bad);
});

# A request in a child process (for concurrent requests); wait_http()
# collects its answer, http_done() tells whether it has one.  The child
# leaves with _exit: no END blocks, no harness cleanup.
sub async_http {
    my (%req) = @_;
    pipe my $rd, my $wr or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $rd;
        my $r = eval { http(%req) } || { status => 0, error => "$@" };
        delete @$r{qw(raw)};
        print $wr JSON::XS->new->encode($r);
        close $wr;
        POSIX::_exit(0);
    }
    close $wr;
    return { pid => $pid, fh => $rd, start => time };
}

sub http_done {
    my ($h) = @_;
    return IO::Select->new($h->{fh})->can_read(0) ? 1 : 0;
}

sub wait_http {
    my ($h) = @_;
    my $json = do { local $/; readline $h->{fh} };
    close $h->{fh};
    waitpid $h->{pid}, 0;
    return JSON::XS->new->decode($json || '{"status":0,"error":"child died"}');
}


sub _cleanup {
    my ($status) = @_;

    return unless $$ == $OWNER;

    eval { pg_unstall() };      # a stalled database could not be stopped
    eval { redis_stop() };
    eval { nginx_stop() };
    eval { nginx_instance_stop() };
    if (@LOGS && ($status || !Test::More->builder->is_passing)) {
        my @tail = (split /\n/, _slurp($LOGS[-1][0], $LOGS[-1][1]))[-30 .. -1];
        print STDERR "# nginx error log, last lines:\n",
                     map { "#   $_\n" } grep { defined } @tail;
    }
    eval { echo_stop() };
    undef $DBH;
    if ($PG && $PG->{running}) {
        eval { pg_stop(); 1 } or eval { pg_kill() };
    }

    return unless $BASE;
    if ($ENV{TENANT_TEST_KEEP}) {
        print STDERR "# TENANT_TEST_KEEP: left $BASE\n";
        return;
    }
    remove_tree($BASE);
}

END {
    my $status = $?;
    _cleanup($status);
    $? = $status;
}

# Interrupted (Ctrl-C, prove's kill): exit, which runs END.
sub _exit_on_signal {
    my ($sig) = @_;
    exit 128 + { INT => 2, TERM => 15, HUP => 1 }->{$sig};
}

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = \&_exit_on_signal
        if !defined $SIG{$sig} || $SIG{$sig} eq 'DEFAULT';
}


1;
