#!/usr/bin/perl
# The test harness itself (t/lib/TenantTest.pm), with a plain nginx (no
# module): echo upstream, HTTP client, nginx start/reload/stop, keys and
# tokens.  Needs no build.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Crypt::JWT       qw(decode_jwt);
use IO::Socket::INET ();
use JSON::XS         qw(decode_json);

# --- nginx with a plain proxy_pass to the echo upstream -------------------

my $ngx = nginx_start(no_module => 1, workers => 2, http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;

        location / {
            proxy_pass http://%%ECHO%%;
        }

        location = /jwks.json {
            default_type application/json;
            alias %%JWKS%%;
        }

        location = /teapot {
            default_type application/problem+json;
            return 418 '{"type":"teapot"}';
        }
    }
EOF

ok -s "$ngx->{dir}/nginx.conf", 'nginx.conf written';
unlike $ngx->{conf}, qr/load_module/, 'no_module: no load_module line';
like $ngx->{conf}, qr/listen 127\.0\.0\.1:$ngx->{port};/, '%%PORT%% replaced';
is scalar(nginx_workers()), 2, 'two workers';

{
    my $r = http(path => '/some/path?x=1', headers => [
        'X-Dup'   => 'first',
        'X-Other' => 'o',
        'x-dup'   => 'second',
    ]);
    is $r->{status}, 200, 'proxied GET: 200';
    is $r->{json}{method}, 'GET', 'upstream saw the method';
    is $r->{json}{uri}, '/some/path?x=1', 'upstream saw the URI';
    is_deeply $r->{json}{headers}{'x-dup'}, ['first', 'second'],
        'upstream saw both copies of a header, in order';
    is_deeply $r->{headers}{'content-type'}, ['application/json'],
        'response headers are lowercased arrays';
    ok $r->{elapsed} > 0 && $r->{elapsed} < 5, 'elapsed time measured';
}

{
    my $r = http(method => 'POST', path => '/submit',
                 headers => ['Content-Type' => 'application/json'],
                 body => '{"a":1}');
    is $r->{status}, 200, 'proxied POST: 200';
    is $r->{json}{body}, '{"a":1}', 'upstream saw the body';
}

{
    my $r = http(path => '/jwks.json');
    is $r->{status}, 200, 'static JWKS served';
    is_deeply [sort map { $_->{kid} } @{ $r->{json}{keys} }], ['ec-1', 'rsa-1'],
        'JWKS has kids rsa-1 and ec-1';
}

{
    my $r = http(path => '/teapot');
    is $r->{status}, 418, 'any status comes back';
    is $r->{json}{type}, 'teapot', 'problem+json is decoded';
}

{
    my $r = http(headers => ['X-Bad' => "a\x00b"]);
    is $r->{status}, 400, 'invalid header value is sent as is (nginx: 400)';

    $r = http(raw => "GARBAGE\r\n\r\n");
    is $r->{status}, 400, 'raw request bytes';

    $r = http(headers => [Connection => 'keep-alive'], timeout => 3);
    is $r->{status}, 200, 'keep-alive answer is complete without a close';
    ok $r->{elapsed} < 2, 'keep-alive answer did not wait for the timeout';
}

{
    my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                       Listen => 1) or die $!;
    my $r = http(port => $silent->sockport, timeout => 0.5);
    is $r->{status}, 0, 'no answer: status 0';
    is $r->{error}, 'timeout', 'no answer: timeout';
}

{
    my $odd = echo_start(handler => sub {
        my ($req) = @_;
        return (503, ['Retry-After' => 7, 'X-Seen' => $req->{uri}], 'busy');
    });
    isnt $odd->{port}, echo_start()->{port}, 'a second echo server';
    my $r = http(port => $odd->{port}, path => '/q');
    is $r->{status}, 503, 'custom handler: status';
    is_deeply $r->{headers}{'x-seen'}, ['/q'], 'custom handler: headers';
    is $r->{body}, 'busy', 'custom handler: body';
    echo_stop($odd);
    is http(port => $odd->{port})->{status}, 0, 'stopped echo server is gone';
    is http()->{status}, 200, 'default echo server still up';
}

# --- reload, config test, error log --------------------------------------

{
    my @before = nginx_workers();
    nginx_reload(http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            return 200 "reloaded\n";
        }
    }
EOF
    my @after = nginx_workers();
    is scalar(@after), 2, 'reload: two new workers';
    ok !(grep { my $p = $_; grep { $_ == $p } @before } @after), 'reload: all workers new';
    is http()->{body}, "reloaded\n", 'reload: new config serves';

    my $why = nginx_reload(expect_fail => 1, http => 'no_such_directive on;');
    like $why, qr/\[emerg\].*unknown directive "no_such_directive"/,
        'refused reload returns the reason';
    is http()->{body}, "reloaded\n", 'refused reload: old config still serves';

    my $t = nginx_conf_test(no_module => 1, http => 'no_such_directive on;');
    ok !$t->{ok}, 'nginx_conf_test: bad config fails';
    like $t->{output}, qr/unknown directive "no_such_directive"/, 'nginx_conf_test: reason';
    ok nginx_conf_test(no_module => 1, http => '')->{ok}, 'nginx_conf_test: good config passes';

    my $mark = log_mark();
    http(path => '/nope', raw => "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    like error_log(since => $mark), qr/client sent duplicate host header/,
        'error_log(since => mark) sees new lines';
}

{
    # The final check finds bad lines, unless allowed.
    open my $fh, '>>', "$ngx->{dir}/error.log" or die;
    print $fh "2025/01/01 00:00:00 [alert] 1#1: synthetic harness self-check\n";
    close $fh;
    is_deeply [TenantTest::_log_problems()],
        ['2025/01/01 00:00:00 [alert] 1#1: synthetic harness self-check'],
        'an [alert] line is found';
    error_log_allow(qr/synthetic harness self-check/);
    is_deeply [TenantTest::_log_problems()], [], 'allowed lines are not';
}

{
    # The blocking-call guard runs in the workers, and its marker fails the
    # final check; the known blocking calls (@BLOCKING_KNOWN) do not.
    my ($w) = nginx_workers();
    open my $maps, '<', "/proc/$w/maps" or die "/proc/$w/maps: $!";
    my $mapped = do { local $/; <$maps> };
    if ($TenantTest::GUARD) {
        like $mapped, qr/\Q$TenantTest::GUARD\E/, 'the guard is loaded in the worker';
    } else {
        unlike $mapped, qr/blockguard/, 'TENANT_BLOCKGUARD=0: no guard in the worker';
    }

    my $line = '2025/01/01 00:00:00 [warn] 1#1: BLOCKING CALL: sleep(1) (pid 1) '
               . 'at ngx_tenant_module.so+0x1 < nginx(main+0x2)';
    my $known = '2025/01/01 00:00:00 [warn] 1#1: BLOCKING CALL: stat("/x/.pgpass") '
                . '(pid 1) at libpq.so.5+0x3 < libpq.so.5(PQconnectStartParams+0x4) < x';
    open my $fh, '>>', "$ngx->{dir}/error.log" or die;
    print $fh "$line\n$known\n";
    close $fh;
    is_deeply [TenantTest::_log_problems()], [$line],
        'a BLOCKING CALL line is found, a known one is not';
    error_log_allow(qr/BLOCKING CALL: sleep\(1\) \(pid 1\)/);
}

# --- keys and tokens -----------------------------------------------------

{
    my $k = jwt_keys();
    ok -s $k->{$_}, "$_ exists" for qw(rsa_key rsa_pub ec_key ec_pub other_key jwks);
    my $jwks = decode_json($k->{jwks_json});
    my %by_kid = map { $_->{kid} => $_ } @{ $jwks->{keys} };
    is $by_kid{'rsa-1'}{kty}, 'RSA', 'rsa-1 is RSA';
    ok $by_kid{'rsa-1'}{n} && $by_kid{'rsa-1'}{e}, 'rsa-1 has n and e';
    is $by_kid{'ec-1'}{crv}, 'P-256', 'ec-1 is P-256';
    ok $by_kid{'ec-1'}{x} && $by_kid{'ec-1'}{y}, 'ec-1 has x and y';
    unlike $k->{jwks_json}, qr/"d"/, 'no private parts in the JWKS';

    my ($h, $c) = decode_jwt(token => mint_token(org => 'org_1'), kid_keys => $jwks,
                             decode_header => 1);
    is $h->{alg}, 'RS256', 'default alg RS256';
    is $h->{kid}, 'rsa-1', 'default kid rsa-1';
    is $c->{sub}, 'user_test', 'default sub';
    is $c->{org_id}, 'org_1', 'v1 org claim';
    is $c->{exp} - $c->{iat}, 300, 'exp = iat + 300';
    ok !exists $c->{nbf}, 'no nbf unless given';

    ($h, $c) = decode_jwt(token => mint_token(key => 'ec', v => 2, iss => 'https://clerk.test',
                                              org => { id => 'org_2', role => 'admin', slug => 'two' }),
                          kid_keys => $jwks, decode_header => 1);
    is $h->{alg}, 'ES256', 'ec key: ES256';
    is $h->{kid}, 'ec-1', 'ec key: kid ec-1';
    is_deeply $c->{o}, { id => 'org_2', rol => 'admin', slg => 'two' }, 'v2 org claims';
    is $c->{iss}, 'https://clerk.test', 'iss';

    my $t = mint_token(key => 'other');
    ok !eval { decode_jwt(token => $t, kid_keys => $jwks); 1 },
        'other key: not verifiable with the JWKS';

    $t = mint_token(exp => undef, kid => undef, header => { typ => undef, x5u => 'http://evil' });
    ($h, $c) = decode_jwt(token => $t, key => \do { local $/; open my $f, '<', $k->{rsa_pub}; <$f> },
                          decode_header => 1, verify_exp => 0);
    ok !exists $c->{exp}, 'claim given as undef is left out';
    ok !exists $h->{kid} && !exists $h->{typ}, 'kid and header fields can be removed';
    is $h->{x5u}, 'http://evil', 'extra header field';

    ($h) = decode_jwt(token => mint_token(alg => 'HS256'), decode_header => 1,
                      key => do { local $/; open my $f, '<', $k->{rsa_pub}; <$f> });
    is $h->{alg}, 'HS256', 'HS256 token signed with the public key bytes';
    is decode_jwt(token => mint_token(alg => 'HS256', key => 's3cret'), key => 's3cret')->{sub},
        'user_test', 'HS256 with a given secret';
    my @parts = split /\./, mint_token(alg => 'none'), -1;
    is $parts[2], '', 'alg none: empty signature';

    is jwt_raw(header => { alg => 'none' }, payload => 'not json', raw_signature => '!!'),
        'eyJhbGciOiJub25lIn0.bm90IGpzb24.!!', 'jwt_raw';
}

# --- PostgreSQL conninfo placeholder -------------------------------------

{
    my $pg = pg_start();
    like $pg->{conninfo}, qr/^host=\/\S+ port=\d+ dbname=capliquify user=postgres$/,
        'conninfo is libpq key=value';
    my $t = create_tenant(status => 'active', trial_ends_at => -3600, rate_limit => 7,
                          settings => { a => 1 });
    is $t->{subscription_status}, 'active', 'create_tenant: status';
    is $t->{rate_limit_override}, 7, 'create_tenant: rate limit';
    ok sql_value('SELECT trial_ends_at < now() FROM public.tenants WHERE id = $1', $t->{id}),
        'create_tenant: trial_ends_at relative seconds';
    my $c = nginx_conf_test(no_module => 1, http => '# %%PG%%');
    like $c->{conf}, qr/# \Q$pg->{conninfo}\E/, '%%PG%% replaced';
    ok !eval { nginx_conf_test(no_module => 1, http => '%%NOPE%%'); 1 },
        'unknown placeholder dies';

    pg_kill();
    ok !eval { sql('SELECT 1'); 1 }, 'pg_kill: database unreachable';
    pg_restart();
    is sql_value('SELECT count(*) FROM public.tenants WHERE id = $1', $t->{id}), 1,
        'pg_restart: same cluster, data kept, dbh reconnects';
    pg_stop();
    pg_restart();
    is sql_value('SELECT 1'), 1, 'pg_restart after pg_stop';
}

# --- a missing module fails the test file --------------------------------

{
    local $ENV{TENANT_MODULE} = '/nonexistent/ngx_tenant_module.so';
    my $out = qx{$^X -I$FindBin::Bin/lib -MTenantTest -MTest::More -e 'nginx_start(); done_testing' 2>&1};
    isnt $?, 0, 'missing module: non-zero exit';
    like $out, qr/Bail out!.*ngx_tenant_module\.so does not exist/, 'missing module: bails out';
}

done_testing();
