#!/usr/bin/perl
# No secret in the logs, at any LOG_LEVEL the shipped configuration
# accepts.
#
# The shipped configuration (conf/nginx.conf.template rendered by
# scripts/render-conf.sh) runs at every LOG_LEVEL render-conf.sh accepts
# (the names are read from its "case" statement, so a new one is tested
# too), with keys fetched from a JWKS URL with CLERK_SECRET_KEY as bearer,
# and gets requests that carry every kind of secret:
#
#   bearer      a session token in Authorization (admitted)
#   cookie      a session token in the __session cookie (admitted)
#   expired     an expired token (refused: a refusal line at info)
#   cron        POST /api/cron/expire-trials with the CRON_SECRET bearer
#   jwks        the JWKS fetch, with CLERK_SECRET_KEY as bearer
#   long        a Cookie header over large_client_header_buffers, the
#               __session token first (nginx's info line quotes it)
#   invalid     a header whose name nginx finds invalid ("_"), a token
#               as its value (nginx's info line quotes the line)
#   query       no token, a development token in the query string
#               (__clerk_db_jwt) and a code in the Referer's query (a
#               refusal line at info: nginx's context quotes the request
#               line and the referrer; the module's handler stops each
#               at "?")
#
# then greps the error log (stderr) and the access log (stdout) for each
# secret: whole, a token's payload and signature, another secret's first
# 24 characters (what a truncated line keeps).  A run whose log does not
# show what its level should (the refusal line at info, one access-log
# line per request) fails too: an empty log proves nothing.
#
# nginx's debug log (every request header) is only behind
# UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS=1: refused with NODE_ENV=production
# and by the container's entrypoint; and with it, the same grep finds the
# secrets (the probe works).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use IO::Socket::INET ();
use POSIX       qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $root   = project_root();
my $render = "$root/scripts/render-conf.sh";
my $entry  = "$root/scripts/entrypoint.sh";
my $nginx  = $TenantTest::NGINX;
my $tmp    = TenantTest::tmpdir();

plan skip_all => "$TenantTest::MODULE not built (make module)"
    unless -f $TenantTest::MODULE;

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or return '';
    local $/;
    return scalar(<$f>) // '';
}

sub rand_hex { return join '', map { sprintf '%02x', int rand 256 } 1 .. $_[0] }

my $pg   = pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active', tier => 'professional');
my $ORG  = $T->{clerk_organization_id};

my $SK   = 'sk_test_' . rand_hex(20);
my $CRON = rand_hex(24);
my $ENC  = rand_hex(32);

# The JWKS endpoint: wants CLERK_SECRET_KEY as bearer, records the fetches.
my $jwks = clerk_jwks_start(secret => $SK, jwks => $keys->{jwks_json});
my $HITS = $jwks->{hits};
my $upstream = echo_start();

# Every name of LOG_LEVEL's "case" in render-conf.sh.
my ($case) = slurp($render) =~ /\bcase \$\{log_level,,\} in\n(.*?)\n\s*esac/s;
my @levels = map { split /\|/ } ($case // '') =~ /^\s*([a-z|]+)\)/mg;
ok scalar @levels >= 8, 'the accepted LOG_LEVEL names, from render-conf.sh: '
    . "@levels";
my %accepted = map { $_ => 1 } @levels;
for my $documented (qw(debug info notice warn error crit alert emerg trace
                       verbose silly http warning fatal))
{
    ok $accepted{$documented}, "documented LOG_LEVEL $documented is accepted";
}

# The variables render-conf.sh and entrypoint.sh read: none from the caller.
my @ours = qw(DATABASE_URL CLERK_JWT_KEY CLERK_JWKS_FILE CLERK_JWKS_URL
              CLERK_SECRET_KEY RESOLVER CLERK_ISSUER CLERK_AUTHORIZED_PARTIES
              ENCRYPTION_KEY CRON_SECRET BACKEND_URL MCP_URL DEMO_PORT
              CORS_ORIGIN RATE_LIMIT_MAX RATE_LIMIT_WINDOW MAX_REQUEST_SIZE
              REDIS_URL REDIS_TIMEOUT REDIS_FALLBACK REDIS_INSTANCES
              LOG_LEVEL UPGRADE_URL METRICS_ALLOW METRICS_TOKEN RENDER PORT
              RUN_DIR TENANT_MODULE
              UPSTREAM_CA_FILE NODE_ENV MIGRATE_ON_START NGINX
              UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS
              TEST_ONLY_CLERK_SECRET_TO_LOOPBACK);
delete @ENV{@ours};

my $seq = 0;

sub env_for {
    my (%set) = @_;
    my %env = (
        DATABASE_URL     => $pg->{url},
        CLERK_SECRET_KEY => $SK,
        CLERK_JWKS_URL   => "http://127.0.0.1:$jwks->{port}/v1/jwks",
        TEST_ONLY_CLERK_SECRET_TO_LOOPBACK => 1,    # a fake Clerk
        ENCRYPTION_KEY   => $ENC,
        CRON_SECRET      => $CRON,
        BACKEND_URL      => "http://$upstream->{addr}",
        MCP_URL          => "http://$upstream->{addr}",
        TENANT_MODULE    => $TenantTest::MODULE,
        PORT             => free_port(),
        DEMO_PORT        => free_port(),
        RUN_DIR          => "$tmp/run" . ++$seq,
        %set,
    );
    delete @env{ grep { !defined $env{$_} } keys %env };
    return \%env;
}

# (exit status, stdout, stderr) of a command run with exactly that env.
sub run {
    my ($env, @cmd) = @_;
    my $out = "$tmp/cmd" . ++$seq;
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

# A session token of the tenant's organization, signed by the key the JWKS
# serves.
sub token { return mint_token(org => $ORG, kid => 'rsa-1', sub => 'user_' . rand_hex(4), @_) }

# The secrets of one run, by name.
my %secret;

# Renders the shipped configuration with %set, runs nginx on it in the
# foreground (stdout: the access log, stderr: the error log), sends the
# requests, stops it.  Returns { error_log, access_log, label }.
sub gateway_run {
    my ($label, %set) = @_;

    my $env = env_for(%set);
    my $dir = $env->{RUN_DIR};
    my $conf = "$dir/nginx.conf";
    my ($rc, undef, $err) = run($env, $render, $conf);
    is $rc, 0, "$label: render-conf.sh renders" or diag $err;
    return undef if $rc;

    my $port = $env->{PORT};
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        %ENV = (PATH => $ENV{PATH}, %{ TenantTest::_nginx_env() });
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', "$dir/stdout.log" or die;
        open STDERR, '>', "$dir/stderr.log" or die;
        exec $nginx, '-p', "$dir/", '-e', 'stderr', '-c', $conf,
             '-g', 'daemon off;'
            or POSIX::_exit(127);
    }
    my $up;
    for (1 .. 100) {
        last if $up = IO::Socket::INET->new("127.0.0.1:$port");
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.1;
    }
    ok $up, "$label: the gateway listens" or diag slurp("$dir/stderr.log");
    close $up if $up;

    my $hits_before = () = split /\n/, slurp($HITS);
    my %tok = map { $_ => token() } qw(bearer cookie long invalid);
    $tok{expired} = token(exp => time - 600, iat => time - 900);
    %secret = (%tok, CLERK_SECRET_KEY => $SK, CRON_SECRET => $CRON,
               ENCRYPTION_KEY => $ENC, query => 'dvb_' . rand_hex(16),
               referrer => 'rt_' . rand_hex(16));

    my $r = http(port => $port, path => '/api/products',
                 headers => [Authorization => "Bearer $tok{bearer}"]);
    is $r->{status}, 200, "$label: bearer token admitted" or diag $r->{body};

    $r = http(port => $port, path => '/mcp/sse',
              headers => [Cookie => "theme=dark; __session=$tok{cookie}"]);
    is $r->{status}, 200, "$label: __session cookie admitted"
        or diag $r->{body};

    $r = http(port => $port, path => '/api/products',
              headers => [Authorization => "Bearer $tok{expired}"]);
    is $r->{status}, 401, "$label: expired token refused";

    $r = http(port => $port, path => "/api/products?__clerk_db_jwt=$secret{query}",
              headers => [Referer => "https://app.example/sso-callback?code=$secret{referrer}"]);
    is $r->{status}, 401, "$label: no token, a token in the query and the Referer: refused";

    $r = http(port => $port, method => 'POST', path => '/api/cron/expire-trials',
              headers => [Authorization => "Bearer $CRON"]);
    is $r->{status}, 200, "$label: cron job with its secret" or diag $r->{body};

    $r = http(port => $port, path => '/api/products',
              headers => [Cookie => "__session=$tok{long}; pad=" . ('p' x 9000)]);
    ok $r->{status} == 400 || $r->{status} == 494,
        "$label: a Cookie header over the buffers: 400";

    $r = http(port => $port, path => '/api/products',
              headers => [X_Session_Token => $tok{invalid},
                          Authorization => "Bearer $tok{bearer}"]);
    is $r->{status}, 200, "$label: a header with an invalid name is ignored";

    my @hits = split /\n/, slurp($HITS);
    ok @hits > $hits_before && (split / /, $hits[-1], 3)[2] eq "Bearer $SK",
        "$label: the keys were fetched with CLERK_SECRET_KEY";

    kill 'QUIT', $pid;
    my $done;
    for (1 .. 100) {
        last if $done = waitpid($pid, WNOHANG) == $pid;
        sleep 0.1;
    }
    if (!$done) { kill 'KILL', $pid; waitpid $pid, 0 }
    ok $done, "$label: nginx stops";

    my $error_log = slurp("$dir/stderr.log");
    unlike $error_log, qr/\[(alert|emerg|crit)\]|exited on signal|AddressSanitizer/,
        "$label: no alert or crash";
    is_deeply [TenantTest::blocking_calls($error_log)], [],
        "$label: no blocking call (the guard)";
    return { label => $label, error_log => $error_log,
             access_log => slurp("$dir/stdout.log") };
}

# The secrets found in a run's logs: [ log, secret name ] pairs.
sub leaks {
    my ($run) = @_;
    my @found;
    for my $log (qw(error_log access_log)) {
        for my $name (sort keys %secret) {
            my $s = $secret{$name};
            # a token's payload and signature (its header is the same in
            # every token), whatever the log cut off; another secret's
            # first 24 characters
            my @probe = ($s, $s =~ /^[\w-]+\.[\w-]+\.[\w-]+$/
                             ? (split /\./, $s)[1, 2] : substr($s, 0, 24));
            push @found, [$log, $name]
                if grep { index($run->{$log}, $_) >= 0 } @probe;
        }
    }
    return @found;
}

for my $level (@levels) {
    my $run = gateway_run("LOG_LEVEL=$level", LOG_LEVEL => $level) or next;
    is_deeply [map { "$_->[1] in the $_->[0]" } leaks($run)], [],
        "LOG_LEVEL=$level: no secret, token or cookie in the logs";

    my @access = grep { /^\{/ } split /\n/, $run->{access_log};
    ok @access >= 5, "LOG_LEVEL=$level: the access log has the requests"
        or diag $run->{access_log};

    # what the level shows: the refusal line at info (and the verbose
    # names), not at warn
    my $shows_info = $run->{error_log} =~ /tenant: refused with 401 invalid_token/;
    if ($level =~ /^(debug|trace|verbose|silly|info|http)$/) {
        ok $shows_info, "LOG_LEVEL=$level: the refusal line is logged"
            or diag $run->{error_log};
        like $run->{error_log},
            qr{tenant: refused with 401 \w+[^\n]*, request: "GET /api/products\?\.\.\. HTTP/1\.1", host: "localhost", referrer: "https://app\.example/sso-callback\?\.\.\."},
            "LOG_LEVEL=$level: its context stops the request line and the referrer at \"?\"";
    } elsif ($level =~ /^(warn|warning|error|crit|fatal|alert|emerg)$/) {
        ok !$shows_info, "LOG_LEVEL=$level: no info line";
    }
}


# ---- the request context, HTTP/1.1 and HTTP/2, an upstream that fails ------
#
# The context nginx appends to a request's error log lines (request line,
# upstream URI, referrer) stops at "?", also for HTTP/2 (whose request
# line nginx builds) and for nginx's own lines (an upstream refusing the
# connection, at error).

{
    my $down = free_port();
    my $ngx = nginx_start(http => <<"CONF");
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_tier         professional features=api;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  @{[ 'ab' x 32 ]};

    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:%%PORT2%% http2;

        location /api/ {
            tenant_gateway  on;
            proxy_pass      http://127.0.0.1:$down;
        }
    }
CONF
    my $port2 = $ngx->{port2};
    my $tok = token();
    my %q = map { $_ => 'q' . rand_hex(16) } qw(h1 h2 h1_502 h2_502);
    my %ref = map { $_ => 'r' . rand_hex(16) } keys %q;
    my $mark = log_mark();

    for my $k (sort keys %q) {
        my $path = "/api/$k?__clerk_db_jwt=$q{$k}";
        my @h = (Referer => "https://app.example/cb?code=$ref{$k}");
        push @h, Authorization => "Bearer $tok" if $k =~ /502/;
        my $status;
        if ($k =~ /^h2/) {
            my @args = map { ('-H', "$h[2 * $_]: $h[2 * $_ + 1]") } 0 .. $#h / 2;
            open my $c, '-|', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}',
                '--http2-prior-knowledge', '--max-time', '10', @args,
                "http://127.0.0.1:$port2$path" or die "curl: $!";
            $status = <$c>;
            close $c;
        } else {
            $status = http(path => $path, headers => \@h)->{status};
        }
        my $want = $k =~ /502/ ? 502 : 401;
        is $status, $want, "context $k: $want";
    }
    error_log_allow(qr/connect\(\) failed \(111: Connection refused\)/);
    my $log = error_log(since => $mark);
    for my $k (sort keys %q) {
        unlike $log, qr/\Q$q{$k}\E/, "context $k: the query string's token is not logged";
        unlike $log, qr/\Q$ref{$k}\E/, "context $k: the referrer's query is not logged";
        my $proto = $k =~ /^h2/ ? 'HTTP/2\.0' : 'HTTP/1\.1';
        like $log, qr{request: "GET /api/$k\?\.\.\. $proto", (?:upstream: "[^"]*", )?host: "[^"]*", referrer: "https://app\.example/cb\?\.\.\."},
            "context $k: the request line and the referrer up to \"?\"";
    }
    like $log, qr{connect\(\) failed .* upstream: "http://127\.0\.0\.1:$down/api/h1_502\?\.\.\."},
        'context: the upstream URI up to "?"';
    nginx_stop();
}


# ---- nginx's debug log: only behind the unsafe switch, never in production --

{
    my ($rc, $out, $err) = run(env_for(UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS => 1,
                                       NODE_ENV => 'production'),
                               $render, "$tmp/prod.conf");
    is $rc, 1, 'UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS=1 with NODE_ENV=production: refused';
    like $err, qr/\Arender-conf: UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS: [^\n]*\n\z/,
        '... one line naming it' or diag $err;

    ($rc, $out, $err) = run(env_for(UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS => 'yes'),
                            $render, "$tmp/yes.conf");
    is $rc, 1, 'UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS=yes: refused (0 or 1)';

    my $env = env_for(UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS => 1);
    ($rc, $out, $err) = run({ %$env, NGINX => $nginx }, $entry, '--check');
    is $rc, 1, 'the container\'s entrypoint refuses UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS=1';
    like $err, qr/\Aentrypoint: UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS: [^\n]*\n\z/,
        '... one line naming it' or diag $err;
    ok !-e "$env->{RUN_DIR}/nginx.conf", '... before rendering anything';

    # the image sends CLERK_SECRET_KEY to Clerk only and refuses the
    # loopback test switch: a keyless local JWKS URL here
    $env = env_for(UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS => 0);
    delete @$env{qw(CLERK_SECRET_KEY TEST_ONLY_CLERK_SECRET_TO_LOOPBACK)};
    ($rc, $out, $err) = run({ %$env, NGINX => $nginx }, $entry, '--check');
    is $rc, 0, '... =0 is off: the entrypoint passes' or diag $err;
}

SKIP: {
    my $v = `'$nginx' -V 2>&1`;
    skip 'nginx built without --with-debug: no debug log to probe', 3
        unless $v =~ /--with-debug/;
    my $run = gateway_run('UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS=1',
                          UNSAFE_NGINX_DEBUG_LOG_WITH_SECRETS => 1);
    my %leaked = map { $_->[1] => 1 } leaks($run);
    ok $leaked{bearer} && $leaked{CRON_SECRET} && $leaked{cookie},
        'the probe works: with nginx\'s debug log, the grep finds the secrets';
}

done_testing();
