#!/usr/bin/perl
# Configuration time: what nginx -t refuses, and the module loaded into
# configurations that do not use it (or use it around other modules).
#
#   refusals   one table of http-block snippets: every refused value
#              fails nginx -t with the module's own message (or nginx's,
#              for shared zones declared twice) pointing at the line of
#              the directive, and each boundary has an accepted
#              neighbour (pool=256 passes, pool=257 does not), so the
#              table fails in both directions;
#   unused     load_module with no tenant directive: a plain location
#              answers 200, no shared zone is added, workers exit with
#              code 0; load_module with a stream{} block and no http{}:
#              starts, serves, quits cleanly;
#   helpers    proxy_cache_path starts a cache manager and loader: they
#              hold no PostgreSQL connection, only the workers (pool) and
#              the first worker (listener) do;
#   conninfo   a host name with several addresses is handed to libpq as
#              hostaddr=a,b and libpq falls through to the second one; a
#              connection string's own keepalives settings win over the
#              listener's defaults (seen in the socket's keepalive timer);
#              a host in the abstract socket namespace (@name) is left to
#              libpq and connects.
#
# Not reachable: ngx_tenant_rate_limit_by's "must have "rate" parameter"
# (NGX_CONF_2MORE brings a parameter, and every parameter but rate= is
# refused before, burst= alone as "burst" without "rate", tested here).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use File::Path       qw(make_path);
use IO::Socket::INET ();
use Socket           qw(getaddrinfo SOCK_STREAM);

my $SIGNING_KEY = '0123456789abcdef' x 4;

my $pg   = pg_start(tcp => 1);
my $KEYS = TenantTest::jwt_keys();
my $TMP  = TenantTest::tmpdir();

sub spew {
    my ($path, $data) = @_;
    open my $f, '>', $path or die "$path: $!";
    print $f $data;
    close $f or die "$path: $!";
    chmod 0644, $path;
    return $path;
}

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or return '';
    local $/;
    return scalar <$f>;
}


# --- building blocks -----------------------------------------------------------

my $DB    = 'tenant_database "%%PG%%";';
my $CACHE = 'tenant_cache zone=tenants:1m;';
my $KEY   = 'tenant_jwt_key %%RSA_PUB%%;';
my $TIER  = 'tenant_tier starter features=api;';
my $SIGN  = "tenant_signing_key $SIGNING_KEY;";
my $RL    = 'tenant_rate_limit zone=rl:1m;';

# A server whose /api/ location has $loc (default: the gateway).
sub server {
    my ($loc) = @_;
    $loc //= 'tenant_gateway on;';
    return <<"EOF";
    server {
        listen 127.0.0.1:%%PORT%%;
        location /api/ {
            $loc
            proxy_pass http://127.0.0.1:9;
        }
    }
EOF
}

# A complete gateway configuration without the parts named in %drop.
sub gateway {
    my (%drop) = @_;
    my %p = (db => $DB, cache => $CACHE, key => $KEY, tier => $TIER,
             sign => $SIGN);
    delete @p{keys %drop};
    return join("\n", grep { defined } @p{qw(db cache key tier sign)})
           . "\n" . server();
}

# Key files at the 1 MiB limit of ngx_tenant_read_file: the real JWKS and
# the real PEM padded with whitespace to exactly 1 MiB (accepted) and to
# one byte more (refused before parsing).
my $MIB = 1024 * 1024;
my %BIG;
{
    my $jwks = slurp($KEYS->{jwks});
    my $pem  = slurp($KEYS->{rsa_pub});
    for my $n ($MIB, $MIB + 1) {
        $BIG{"jwks$n"} = spew("$TMP/jwks-$n.json",
                              $jwks . (' ' x ($n - length $jwks)));
        $BIG{"pem$n"}  = spew("$TMP/pem-$n.pem",
                              $pem . ("\n" x ($n - length $pem)));
    }
}

my $role128 = 'r' x 128;
my $path127 = 'a' x 127;


# --- refusals and their accepted neighbours -----------------------------------

# name, http-block snippet, expected [emerg] message (undef: accepted),
# the directive on the line the message points at (when the message does
# not name it).
my @cases = (
    # tenant_database parameters (ngx_tenant_database)
    ['tenant_database pool=1',    qq{tenant_database "%%PG%%" pool=1;},   undef],
    ['tenant_database pool=256',  qq{tenant_database "%%PG%%" pool=256;}, undef],
    ['tenant_database pool=0',    qq{tenant_database "%%PG%%" pool=0;},
     qr/invalid parameter "pool=0"/, 'tenant_database'],
    ['tenant_database pool=257',  qq{tenant_database "%%PG%%" pool=257;},
     qr/invalid parameter "pool=257"/, 'tenant_database'],
    ['tenant_database pool=abc',  qq{tenant_database "%%PG%%" pool=abc;},
     qr/invalid parameter "pool=abc"/, 'tenant_database'],
    ['tenant_database timeout=1ms', qq{tenant_database "%%PG%%" timeout=1ms;}, undef],
    ['tenant_database timeout=0', qq{tenant_database "%%PG%%" timeout=0;},
     qr/invalid parameter "timeout=0"/, 'tenant_database'],
    ['tenant_database timeout=0s', qq{tenant_database "%%PG%%" timeout=0s;},
     qr/invalid parameter "timeout=0s"/, 'tenant_database'],
    ['tenant_database timeout=abc', qq{tenant_database "%%PG%%" timeout=abc;},
     qr/invalid parameter "timeout=abc"/, 'tenant_database'],
    ['tenant_database unknown parameter', qq{tenant_database "%%PG%%" size=3;},
     qr/invalid parameter "size=3"/, 'tenant_database'],

    # tenant_database_listen: "off" is the only 3-byte keyword
    ['tenant_database_listen off', "$DB\ntenant_database_listen off;", undef],
    ['tenant_database_listen abc', "$DB\ntenant_database_listen abc;",
     qr/invalid PostgreSQL connection string/, 'tenant_database_listen'],
    ['tenant_database_listen ofF', "$DB\ntenant_database_listen ofF;",
     qr/invalid PostgreSQL connection string/, 'tenant_database_listen'],
    ['duplicate tenant_database_listen',
     "$DB\ntenant_database_listen off;\ntenant_database_listen off;",
     qr/"tenant_database_listen" directive is duplicate/],

    # tenant_cache (ngx_tenant_cache, ngx_tenant_cache_add)
    ['tenant_cache with every parameter',
     'tenant_cache zone=t:1m ttl=1s negative_ttl=0 stale=0;', undef],
    ['tenant_cache zone of 32k (8 pages)', 'tenant_cache zone=t:32k;', undef],
    ['tenant_cache zone of 31k', 'tenant_cache zone=t:31k;',
     qr/zone "t:31k" is too small/, 'tenant_cache'],
    ['tenant_cache zone without a name', 'tenant_cache zone=:1m;',
     qr/invalid zone ":1m", expected name:size/, 'tenant_cache'],
    ['tenant_cache zone without a size', 'tenant_cache zone=t;',
     qr/invalid zone "t", expected name:size/, 'tenant_cache'],
    ['tenant_cache zone size not a size', 'tenant_cache zone=t:abc;',
     qr/invalid zone size "t:abc"/, 'tenant_cache'],
    ['tenant_cache unknown parameter', 'tenant_cache zone=t:1m size=5;',
     qr/invalid parameter "size=5"/, 'tenant_cache'],
    ['tenant_cache stale=abc', 'tenant_cache zone=t:1m stale=abc;',
     qr/invalid parameter "stale=abc"/, 'tenant_cache'],
    ['duplicate tenant_cache', "$CACHE\ntenant_cache zone=other:1m;",
     qr/"tenant_cache" directive is duplicate/],

    # tenant_token_cache (ngx_tenant_token_cache)
    ['tenant_token_cache zone=tokens:1m', 'tenant_token_cache zone=tokens:1m;', undef],
    ['tenant_token_cache without zone=', 'tenant_token_cache tokens:1m;',
     qr/invalid parameter "tokens:1m"/, 'tenant_token_cache'],
    ['tenant_token_cache zone without a size', 'tenant_token_cache zone=tokens;',
     qr/invalid zone "tokens", expected name:size/, 'tenant_token_cache'],
    ['duplicate tenant_token_cache',
     "tenant_token_cache zone=tokens:1m;\ntenant_token_cache zone=tokens2:1m;",
     qr/"tenant_token_cache" directive is duplicate/],

    # zone names: another module's, the module's own, the same one twice
    ['limit_req zone and tenant zone, other names',
     "limit_req_zone \$binary_remote_addr zone=r:1m rate=1r/s;\n"
     . 'tenant_cache zone=t:1m;', undef],
    ['tenant_cache zone named like a limit_req zone',
     "limit_req_zone \$binary_remote_addr zone=t:1m rate=1r/s;\n"
     . 'tenant_cache zone=t:1m;',
     qr/the shared memory zone "t" is already declared for a different use/,
     'tenant_cache'],
    ['tenant_cache and tenant_token_cache, one zone name',
     "tenant_cache zone=x:1m;\ntenant_token_cache zone=x:1m;",
     qr/duplicate zone "x"/, 'tenant_token_cache'],
    ['tenant_cache and tenant_token_cache, one name, other sizes',
     "tenant_cache zone=x:1m;\ntenant_token_cache zone=x:2m;",
     qr/the size 2097152 of shared memory zone "x" conflicts with already declared size 1048576/,
     'tenant_token_cache'],
    ['tenant_cache zone=tenant_metrics, no database or tier (no metrics zone)',
     'tenant_cache zone=tenant_metrics:1m;', undef],
    ['tenant_cache zone=tenant_metrics with a tier',
     "tenant_cache zone=tenant_metrics:1m;\n$TIER",
     qr/the shared memory zone "tenant_metrics" is already declared for a different use/],
    ['tenant_cache zone=tenant_jwks, then tenant_jwks_request',
     "tenant_cache zone=tenant_jwks:1m;\ntenant_jwks_request /_jwks;",
     qr/the shared memory zone "tenant_jwks" is already declared for a different use/,
     'tenant_jwks_request'],
    ['tenant_jwks_request, then tenant_cache zone=tenant_jwks',
     "tenant_jwks_request /_jwks;\ntenant_cache zone=tenant_jwks:1m;",
     qr/the shared memory zone "tenant_jwks" is already declared for a different use/,
     'tenant_cache'],

    # tenant_jwks_request (ngx_tenant_jwks_request)
    ['tenant_jwks_request ttl=1s interval=1s',
     'tenant_jwks_request /_jwks ttl=1s interval=1s;', undef],
    ['tenant_jwks_request ttl=999ms', 'tenant_jwks_request /_jwks ttl=999ms;',
     qr/invalid parameter "ttl=999ms" \(ttl= and interval= take a time of at least 1s\)/,
     'tenant_jwks_request'],
    ['tenant_jwks_request ""', 'tenant_jwks_request "";',
     qr/"tenant_jwks_request" needs the URI of a location, "" does not start with "\/"/],
    ['duplicate tenant_jwks_request',
     "tenant_jwks_request /_jwks;\ntenant_jwks_request /_jwks2;",
     qr/"tenant_jwks_request" directive is duplicate/],

    # duplicates of the once-only directives
    ['tenant_jwt_algorithms once', 'tenant_jwt_algorithms RS256 ES256;', undef],
    ['duplicate tenant_jwt_algorithms',
     "tenant_jwt_algorithms RS256;\ntenant_jwt_algorithms ES256;",
     qr/"tenant_jwt_algorithms" directive is duplicate/],
    ['tenant_jwt_authorized_parties once',
     'tenant_jwt_authorized_parties https://a.example https://b.example;', undef],
    ['duplicate tenant_jwt_authorized_parties',
     "tenant_jwt_authorized_parties https://a.example;\n"
     . 'tenant_jwt_authorized_parties https://b.example;',
     qr/"tenant_jwt_authorized_parties" directive is duplicate/],
    ['tenant_rate_limit_by in http and again in a location',
     "$RL\ntenant_rate_limit_by \$remote_addr rate=10r/s;\n"
     . server('tenant_rate_limit_by $http_x_user rate=5r/s;'), undef],
    ['duplicate tenant_rate_limit_by in one location',
     "$RL\n" . server("tenant_rate_limit_by \$remote_addr rate=10r/s;\n"
                      . 'tenant_rate_limit_by $http_x_user rate=5r/s;'),
     qr/"tenant_rate_limit_by" directive is duplicate/],
    ['duplicate tenant_admin_role',
     "tenant_admin_role admin;\ntenant_admin_role ops;",
     qr/"tenant_admin_role" directive is duplicate/],

    # rates and bursts (ngx_tenant_rate_limit_by, ngx_tenant_rate_params)
    ['tenant_rate_limit_by ${remote_addr}',
     "$RL\ntenant_rate_limit_by \${remote_addr} rate=10r/s;", undef],
    ['tenant_rate_limit_by "${x" (unclosed variable)',
     "$RL\ntenant_rate_limit_by \"\${x\" rate=10r/s;",
     qr/the closing bracket in "x" variable is missing/, 'tenant_rate_limit_by'],
    ['tenant_rate_limit_by with burst= but no rate=',
     "$RL\ntenant_rate_limit_by \$remote_addr burst=5;",
     qr/"burst" without "rate"/, 'tenant_rate_limit_by'],
    ['tenant_rate_limit burst=100000000 (the maximum)',
     'tenant_rate_limit zone=rl:1m rate=10r/s burst=100000000;', undef],
    ['tenant_rate_limit burst=100000001',
     'tenant_rate_limit zone=rl:1m rate=10r/s burst=100000001;',
     qr/invalid burst "burst=100000001"/, 'tenant_rate_limit'],
    ['tenant_rate_limit_by burst=200000000',
     "$RL\ntenant_rate_limit_by \$remote_addr rate=10r/s burst=200000000;",
     qr/invalid burst "burst=200000000"/, 'tenant_rate_limit_by'],
    ['tenant_rate_limit burst=0',
     'tenant_rate_limit zone=rl:1m rate=10r/s burst=0;',
     qr/invalid burst "burst=0"/, 'tenant_rate_limit'],

    # tenant_admin_role (ngx_tenant_admin_role)
    ['tenant_admin_role of 128 bytes', "tenant_admin_role $role128;", undef],
    ['tenant_admin_role of 129 bytes', "tenant_admin_role ${role128}r;",
     qr/invalid role "${role128}r"/, 'tenant_admin_role'],
    ['tenant_admin_role ""', 'tenant_admin_role "";',
     qr/invalid role ""/, 'tenant_admin_role'],
    ['tenant_admin_role second parameter not claim=',
     'tenant_admin_role ops path=a.b;',
     qr/invalid parameter "path=a\.b"/, 'tenant_admin_role'],
    ['tenant_admin_role claim path with _ and -',
     'tenant_admin_role ops claim=public_metadata.gw-role;', undef],
    ['tenant_admin_role claim path of 127 bytes',
     "tenant_admin_role ops claim=$path127;", undef],
    ['tenant_admin_role claim path of 128 bytes',
     "tenant_admin_role ops claim=${path127}a;",
     qr/invalid claim path "${path127}a", expected member names joined by dots/,
     'tenant_admin_role'],
    ['tenant_admin_role claim=',
     'tenant_admin_role ops claim=;',
     qr/invalid claim path "", expected member names joined by dots/,
     'tenant_admin_role'],
    (map { +["tenant_admin_role claim=$_", "tenant_admin_role ops claim=$_;",
             qr/invalid claim path "\Q$_\E", expected member names joined by dots/,
             'tenant_admin_role'] } '.a', 'a.', 'a..b', 'a/b'),

    # tenant_upgrade_url (ngx_tenant_upgrade_url): the module's own
    # variables only, which are inserted URI-escaped; any other one would
    # be inserted as it is ($http_cookie: the session cookie in the 403)
    ['tenant_upgrade_url with the module\'s variables',
     'tenant_upgrade_url "https://b.example/up?p=$tenant_required_tier&o=${tenant_org_id}&f=$TENANT_FEATURE&t=%24x";',
     undef],
    ['tenant_upgrade_url without variables',
     'tenant_upgrade_url https://b.example/up;', undef],
    (map { +["tenant_upgrade_url with \$$_->[0]",
             "tenant_upgrade_url \"https://b.example/up?x=$_->[1]\";",
             qr/variable "\$\Q$_->[0]\E" is not allowed in "tenant_upgrade_url": only the module's own \$tenant_\* variables/,
             'tenant_upgrade_url'] }
         ['http_cookie', '$http_cookie'], ['http_cookie', '${http_cookie}'],
         ['HTTP_COOKIE', '$HTTP_COOKIE'], ['cookie___session', '$cookie___session'],
         ['http_authorization', '$tenant_org_id$http_authorization'],
         ['arg_next', '$arg_next'], ['host', '$host'], ['1', '$1'],
         ['tenant_', '$tenant_'], ['tenant_org_idx', '$tenant_org_idx']),
    ['tenant_upgrade_url with a set $tenant_ variable',
     server("set \$tenant_evil \$http_cookie;\n"
            . 'tenant_upgrade_url "https://b.example/?c=$tenant_evil";'),
     qr/variable "\$tenant_evil" is not allowed in "tenant_upgrade_url"/,
     'tenant_upgrade_url'],
    ['tenant_upgrade_url "$"', 'tenant_upgrade_url "https://b.example/$";',
     qr/invalid variable name/, 'tenant_upgrade_url'],
    ['tenant_upgrade_url "${tenant_org_id"',
     'tenant_upgrade_url "https://b.example/${tenant_org_id";',
     qr/the closing bracket in "tenant_org_id" variable is missing/,
     'tenant_upgrade_url'],
    ['duplicate tenant_upgrade_url',
     "tenant_upgrade_url https://a.example;\ntenant_upgrade_url https://b.example;",
     qr/"tenant_upgrade_url" directive is duplicate/],

    # key files of at most 1 MiB (ngx_tenant_read_file)
    ['tenant_jwks_file of exactly 1 MiB', "tenant_jwks_file $BIG{qq{jwks$MIB}};", undef],
    ['tenant_jwks_file of 1 MiB + 1 byte', "tenant_jwks_file $BIG{'jwks' . ($MIB + 1)};",
     qr/"\Q$BIG{'jwks' . ($MIB + 1)}\E" is not a readable file of at most 1m/,
     'tenant_jwks_file'],
    ['tenant_jwt_key of exactly 1 MiB', "tenant_jwt_key $BIG{qq{pem$MIB}};", undef],
    ['tenant_jwt_key of 1 MiB + 1 byte', "tenant_jwt_key $BIG{'pem' . ($MIB + 1)};",
     qr/"\Q$BIG{'pem' . ($MIB + 1)}\E" is not a readable file of at most 1m/,
     'tenant_jwt_key'],

    # (a directory or a FIFO: t/030's configuration table)

    # what tenant_gateway needs (ngx_tenant_merge_loc_conf)
    ['complete gateway', gateway(), undef],
    ['gateway without tenant_database', gateway(db => 1),
     qr/"tenant_gateway" needs "tenant_database" and "tenant_cache"/],
    ['gateway without tenant_cache', gateway(cache => 1),
     qr/"tenant_gateway" needs "tenant_database" and "tenant_cache"/],
    ['gateway without tenant_tier', gateway(tier => 1),
     qr/"tenant_gateway" needs at least one "tenant_tier"/],
);

for my $case (@cases) {
    my ($name, $http, $re, $directive) = @$case;
    my $c = nginx_conf_test(http => $http);

    if (!defined $re) {
        ok $c->{ok}, "accepted: $name" or diag $c->{output};
        next;
    }

    ok !$c->{ok}, "refused: $name";
    like $c->{output}, qr/\[emerg\] .*$re/, "refused: $name: the message says why"
        or diag $c->{output};
    next unless $directive;

    # the message points at the directive's line
    my ($line) = $c->{output} =~ /\[emerg\] .*$re.* in \S+:(\d+)/;
    my $text = defined $line ? (split /\n/, $c->{conf})[$line - 1] // '' : '';
    like $text, qr/^\s*\Q$directive\E\s/,
         "refused: $name: at the line of $directive" or diag $c->{output};
}


# --- processes and their PostgreSQL sockets ------------------------------------

# Children of the nginx master: pid => title without "nginx: " ("worker
# process", "cache manager process", ...).
sub nginx_children {
    my ($master) = @_;
    my %kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my ($pid, $ppid) = slurp($stat) =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        next unless $ppid == $master;
        (my $cmd = slurp("/proc/$pid/cmdline")) =~ s/\0+\z//;
        $kids{$pid} = $cmd =~ /^nginx: (.*)$/ ? $1 : $cmd;
    }
    return \%kids;
}

# The TCP connections process $pid holds to the PostgreSQL port, from
# /proc/net/tcp and the process's descriptors: { lport, raddr, timer,
# when } (timer 2 is the keepalive timer, when its seconds to go).
sub pg_sockets {
    my ($pid) = @_;
    my %by_inode;
    for my $table ('/proc/net/tcp', '/proc/net/tcp6') {
        for my $line (split /\n/, slurp($table)) {
            my @f = split ' ', $line;
            next unless @f > 9 && $f[3] eq '01';            # ESTABLISHED
            my ($raddr, $rport) = $f[2] =~ /^([0-9A-F]+):([0-9A-F]{4})$/ or next;
            next unless hex $rport == $pg->{port};
            my ($timer, $when) = split /:/, $f[5];
            $by_inode{$f[9]} = { lport => hex((split /:/, $f[1])[1]),
                                 raddr => $raddr, timer => hex $timer,
                                 when => hex($when) / 100 };
        }
    }
    my @socks;
    for my $fd (glob "/proc/$pid/fd/*") {
        my $link = readlink $fd // next;
        push @socks, $by_inode{$1} if $link =~ /^socket:\[(\d+)\]$/ && $by_inode{$1};
    }
    return @socks;
}

# client_port => query of the gateway's backends (TCP; the harness's own
# connection uses the unix socket).
sub tcp_backends {
    my %b = map { $_->{client_port} => $_->{query} }
            sql(q{SELECT client_port, query FROM pg_stat_activity
                  WHERE backend_type = 'client backend' AND client_addr IS NOT NULL});
    return \%b;
}

# A gateway in front of the echo upstream, on database $o{db}.
sub gateway_http {
    my (%o) = @_;
    my $pool = $o{pool} // 2;
    my $extra = $o{extra} // '';
    my $loc = $o{location} // '';
    return <<"EOF";
    tenant_database     "$o{db}" pool=$pool timeout=3s;
    tenant_cache        zone=tenants:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter features=api;
    tenant_signing_key  $SIGNING_KEY;
    $extra

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            $loc
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/health {
            tenant_health;
        }
    }
EOF
}

sub get_tenant {
    my ($t) = @_;
    return http(path => '/api/products',
                headers => [Authorization => 'Bearer '
                            . mint_token(org => $t->{clerk_organization_id})]);
}

my $PROC_FD = -r "/proc/$$/fd" && $> == 0;

# nginx with these options: a reload when one runs (cheaper than a stop,
# which takes seconds here), else a start.
sub nginx_run {
    my (%opt) = @_;
    return nginx_workers() ? nginx_reload(%opt) : nginx_start(%opt);
}


# --- the module loaded, nothing configured --------------------------------------

# ngx_tenant_init_main_conf adds the metrics zone only for a database or a
# tier; init_process returns before any pool without tenant_database.
# Shared zones are the worker's "rw-s ... /dev/zero" mappings: the same
# count as nginx without the module, and one more with a single tier (the
# control: the count does see the metrics zone).
sub shm_mappings {
    my ($pid) = @_;
    return scalar grep { m{ rw-s .*/dev/zero} } split /\n/, slurp("/proc/$pid/maps");
}

my $PLAIN = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 200 "plain\n"; }
    }
EOF

subtest 'load_module without any tenant directive' => sub {
    my %zones;
    for my $v (['without the module', no_module => 1, http => $PLAIN],
               ['module, no directive', no_module => 0, http => $PLAIN],
               ['module, one tenant_tier', no_module => 0, http => "$TIER\n$PLAIN"])
    {
        my ($name, %opt) = @$v;
        nginx_run(%opt);
        my $r = http(path => '/');
        is $r->{status}, 200, "$name: plain location 200";
        is $r->{body}, "plain\n", "$name: its body";
        my ($w) = nginx_workers();
        $zones{$name} = shm_mappings($w);
    }
    nginx_stop();

    ok $zones{'without the module'} >= 1, 'nginx has shared mappings of its own'
        or diag explain \%zones;
    is $zones{'module, no directive'}, $zones{'without the module'},
       'the module adds no shared zone when nothing is configured';
    is $zones{'module, one tenant_tier'}, $zones{'module, no directive'} + 1,
       'control: a tenant_tier adds the metrics zone';

    my $log = error_log();
    my @exits = $log =~ /worker process \d+ exited with code 0/g;
    is scalar @exits, 3, 'the three generations of workers exited with code 0';
    unlike $log, qr/exited on signal|\[alert\]|\[emerg\]/, 'no crash, no alert';
};


# --- load_module with a stream{} block and no http{} -----------------------------

# The harness always writes an http{} block: this nginx runs by hand in a
# dir of the test's temp dir.  ngx_http_cycle_get_module_main_conf is NULL
# in init_process and exit_process.
subtest 'load_module with stream{} only' => sub {
    my $stream_so = '/usr/lib/nginx/modules/ngx_stream_module.so';
    plan skip_all => "no $stream_so" unless -f $stream_so;

    my $dir = "$TMP/stream-only";
    make_path($dir);
    chmod 0755, $dir;
    my $port = free_port();
    spew("$dir/nginx.conf", <<"EOF");
load_module $stream_so;
load_module $TenantTest::MODULE;
worker_processes 1;
daemon on;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log info;

events {
    worker_connections 64;
}

stream {
    server {
        listen 127.0.0.1:$port;
        return "stream-only\\n";
    }
}
EOF
    my @cmd = ($TenantTest::NGINX, '-p', "$dir/", '-c', "$dir/nginx.conf",
               '-e', "$dir/error.log");

    ok eval { TenantTest::run_cmd({}, @cmd, '-t'); 1 }, 'nginx -t passes' or diag $@;
    ok eval { TenantTest::run_cmd({}, @cmd); 1 }, 'nginx starts' or diag $@;

    my ($master) = retry_until(5, sub { (slurp("$dir/nginx.pid") =~ /(\d+)/)[0] },
                               sub { $_[0] });
    ok $master, 'the master wrote its pid' or return;

    my ($line) = retry_until(5, sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Timeout => 2) or return '';
        my $l = <$s> // '';
        close $s;
        return $l;
    }, sub { length $_[0] });
    is $line, "stream-only\n", 'the stream server answers';

    kill 'QUIT', $master;
    my (undef, $took) = retry_until(10, sub { alive($master) }, sub { !$_[0] });
    my $gone = !alive($master);
    ok $gone, sprintf 'QUIT: the master exited (%.1f s)', $took;
    if (!$gone) {
        kill 'KILL', $master;
    }

    my $log = slurp("$dir/error.log");
    like $log, qr/worker process \d+ exited with code 0/, 'the worker exited with code 0';
    like $log, qr/\[notice\] \d+#\d+: exit\n/, 'the master logged its exit';
    unlike $log, qr/\[alert\]|\[emerg\]|\[crit\]|exited on signal/, 'no alert, emerg or crash'
        or diag $log;
};


# --- cache manager and loader: no PostgreSQL connection ---------------------------

# ngx_tenant_init_process returns at once in helper processes.  Without
# that, each would start a pool and, as ngx_worker is 0 there, a listener
# of its own.  The helpers set their title after init_process, so once it
# shows, any connection they had started would already be a socket.
subtest 'cache manager and loader hold no connection' => sub {
    plan skip_all => 'needs root to read the workers\' /proc/<pid>/fd' unless $PROC_FD;

    my $ngx = nginx_start(workers => 2, http => gateway_http(
        db => $pg->{tcp_conninfo},
        extra => 'proxy_cache_path %%DIR%%/cache keys_zone=c:1m;',
        location => 'proxy_cache c;'));

    my ($kids) = retry_until(5, sub { nginx_children($ngx->{pid}) }, sub {
        2 == grep { /^cache (manager|loader) process$/ } values %{ $_[0] } });
    my @helpers = grep { $kids->{$_} =~ /^cache (manager|loader) process$/ } keys %$kids;
    is scalar @helpers, 2, 'a cache manager and a cache loader run'
        or diag explain $kids;

    # a few uncached lookups open pool connections in the workers
    my @t = map { create_tenant(status => 'active', tier => 'starter') } 1 .. 4;
    is get_tenant($_)->{status}, 200, "tenant $_->{slug}: 200" for @t;

    my ($listen) = retry_until(5, sub { scalar grep { $_ eq 'LISTEN tenant_changed' }
                                               values %{ tcp_backends() } },
                               sub { $_[0] >= 1 });
    is $listen, 1, 'one backend LISTENs';

    is scalar(pg_sockets($_)), 0, "$kids->{$_} ($_): no connection to PostgreSQL"
        for sort @helpers;

    my @workers = nginx_workers();
    my %owner;
    for my $w (@workers) {
        $owner{$_->{lport}} = $w for pg_sockets($w);
    }
    ok keys(%owner) >= 2, 'control: the workers\' connections are seen (listener and pool)'
        or diag explain \%owner;

    # backends end a moment after their client: compare once they settle
    my ($backends) = retry_until(5, \&tcp_backends, sub {
        join(',', sort keys %{ $_[0] }) eq join(',', sort keys %owner) });
    is_deeply [sort { $a <=> $b } keys %$backends], [sort { $a <=> $b } keys %owner],
        'every TCP backend is a worker\'s connection';
    my ($lport) = grep { $backends->{$_} eq 'LISTEN tenant_changed' } keys %$backends;
    ok $lport && $owner{$lport}, 'the listener is a worker\'s';

    my @up = error_log() =~ /tenant: listening for tenant changes/g;
    is scalar @up, 1, 'one "listening for tenant changes" in the log';
};


# --- a connection string that sets keepalives ----------------------------------------

# ngx_tenant_conninfo_keepalive adds keepalives=1 keepalives_idle=60
# keepalives_interval=10 keepalives_count=3 to the listener's connection
# unless the string sets them.  The pool connects on demand, so before
# any request the worker's only connection is the listener's; its
# keepalive timer (/proc/net/tcp) tells which settings libpq used.
subtest 'keepalives set in the connection string' => sub {
    plan skip_all => 'needs root to read the workers\' /proc/<pid>/fd' unless $PROC_FD;

    for my $case (
        ['no keepalives setting', '',
         sub { $_[0]{timer} == 2 && $_[0]{when} > 10 && $_[0]{when} <= 60 },
         'keepalive timer within 60 s (the module\'s keepalives_idle=60, not the system\'s)'],
        ['keepalives_idle=7', 'keepalives_idle=7',
         sub { $_[0]{timer} == 2 && $_[0]{when} <= 7 }, 'keepalive timer within 7 s'],
        ['keepalives=0', 'keepalives=0',
         sub { $_[0]{timer} == 0 }, 'no keepalive timer'],
    ) {
        my ($name, $set, $check, $what) = @$case;
        nginx_run(workers => 1, http => gateway_http(db => "$pg->{tcp_conninfo} $set"));
        my ($w) = nginx_workers();

        my ($socks) = retry_until(5, sub {
            my @s = pg_sockets($w);
            my $b = tcp_backends();
            return [grep { ($b->{$_->{lport}} // '') eq 'LISTEN tenant_changed' } @s];
        }, sub { @{ $_[0] } == 1 && $_[0][0]{timer} != 1 });
        is scalar @$socks, 1, "$name: the listener connected";
        my $s = $socks->[0] // { timer => -1, when => -1 };
        ok $check->($s), "$name: $what"
            or diag "timer $s->{timer}, $s->{when} s to go";
        is scalar(pg_sockets($w)), 1, "$name: no other connection yet (pool on demand)";

        my $t = create_tenant(status => 'active', tier => 'starter');
        is get_tenant($t)->{status}, 200, "$name: a lookup through the pool: 200";
    }
    nginx_stop();
};


# --- a host name with several addresses ---------------------------------------------

# ngx_tenant_conninfo resolves the name at configuration time and hands
# libpq host=h,h hostaddr=a1,a2.  Where root can make a private mount
# namespace (unshare -m) for nginx, a hosts file bind-mounted over
# /etc/hosts there names pgmulti 127.0.0.2 and 127.0.0.1, and a gai.conf
# puts 127.0.0.2 first.  The server listens on 127.0.0.1 only: libpq's
# first address is refused and the lookups work only if it goes on to the
# second one.  Elsewhere: localhost, when it has several addresses (no
# check of which one serves), else skipped.
subtest 'a host name with several addresses' => sub {
    my $name = 'pgmulti';
    my $hosts = spew("$TMP/hosts", "127.0.0.1 $name\n127.0.0.2 $name\n");
    my $gai = spew("$TMP/gai.conf", "precedence ::1/128 50\n"
                                   . "precedence ::/0 40\n"
                                   . "precedence ::ffff:127.0.0.2/128 45\n"
                                   . "precedence ::ffff:0:0/96 35\n");
    # ns-run runs a command in the namespace; nginx-ns is nginx there
    my $ns_run = spew("$TMP/ns-run", <<"EOF");
#!/bin/sh
exec unshare -m sh -c 'mount --bind "\$0" /etc/hosts && mount --bind "\$1" /etc/gai.conf && shift && exec "\$@"' $hosts $gai "\$@"
EOF
    my $wrapper = spew("$TMP/nginx-ns", "#!/bin/sh\nexec $ns_run $TenantTest::NGINX \"\$@\"\n");
    chmod 0755, $ns_run, $wrapper;

    my $order = $> == 0 ? eval {
        join ' ', TenantTest::run_cmd({}, $ns_run, 'getent', 'ahosts', $name)
                  =~ /^(\S+)\s+STREAM/mg
    } // '' : '';
    my $ns = $order eq '127.0.0.2 127.0.0.1';

    my ($err, @local) = getaddrinfo('localhost', $pg->{port}, { socktype => SOCK_STREAM });
    plan skip_all => 'localhost has one address here, and there is no private mount '
                   . 'namespace (unshare -m, root only) to give a name two'
        unless $ns || @local > 1;
    plan skip_all => 'needs root to read the workers\' /proc/<pid>/fd' unless $PROC_FD;

    if ($ns) {
        ok !IO::Socket::INET->new(PeerAddr => '127.0.0.2', PeerPort => $pg->{port},
                                  Timeout => 2),
           'nothing answers on the first address (127.0.0.2)';
    } else {
        $name = 'localhost';
    }

    local $TenantTest::NGINX = $ns ? $wrapper : $TenantTest::NGINX;
    nginx_start(http => gateway_http(
        db => "host=$name port=$pg->{port} dbname=capliquify user=postgres",
        pool => 1, extra => 'tenant_database_listen off;'));

    my $t = create_tenant(status => 'active', tier => 'starter');
    my $r = get_tenant($t);
    is $r->{status}, 200, "tenant looked up through $name, a name of several addresses"
        or diag $r->{body};
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t->{id}], 'the upstream saw the tenant';
    $r = http(path => '/api/health');
    like $r->{body}, qr/"database":"connected"/, 'health: connected';

    if ($ns) {
        my ($w) = nginx_workers();
        my @s = pg_sockets($w);
        is scalar @s, 1, 'the worker holds one connection';
        is $s[0]{raddr} // '', '0100007F', '... to 127.0.0.1, the second address';
        ok exists tcp_backends()->{ $s[0]{lport} // 0 }, '... which is a backend of the server';
    }
    nginx_stop();
};


# --- a host in the abstract socket namespace ------------------------------------------

# ngx_tenant_conninfo leaves a host that starts with "@" to libpq (a
# Linux abstract unix socket): nothing to resolve.  The server gets a
# second, abstract, socket "directory" (last: the cluster restarts).
subtest 'a host in the abstract socket namespace' => sub {
    plan skip_all => 'abstract unix sockets are Linux only' unless $^O eq 'linux';

    my $abstract = "\@tenant150-$$";
    sql("ALTER SYSTEM SET unix_socket_directories = '$pg->{socket}', '$abstract'");
    pg_restart();

    my $c = nginx_conf_test(http => gateway_http(db => "host=\@no-such-150 dbname=x"));
    ok $c->{ok}, 'nginx -t: an "@" host is not resolved' or diag $c->{output};

    nginx_start(http => gateway_http(
        db => "host=$abstract port=$pg->{port} dbname=capliquify user=postgres",
        pool => 1));
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $r = get_tenant($t);
    is $r->{status}, 200, "tenant looked up through host=$abstract" or diag $r->{body};
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t->{id}], 'the upstream saw the tenant';
    my ($listen) = retry_until(5, sub {
        sql_value(q{SELECT count(*) FROM pg_stat_activity
                    WHERE query = 'LISTEN tenant_changed' AND client_port = -1}) },
        sub { $_[0] >= 1 });
    is $listen, 1, 'the listener connected through the unix socket';
    nginx_stop();
};


done_testing();
