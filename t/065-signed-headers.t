#!/usr/bin/perl
# X-Tenant-Signature v2 binds the request: the method and the target as
# the upstream receives them, with the tenant headers.
#
#   verified   a Node.js backend (t/lib/signed-upstream.js) checks every
#              request with scripts/verify-signature.js, the README's
#              verifier: GET, POST and DELETE with queries, encoded
#              targets, a rewrite, proxy_pass with a URI part (verified
#              with options.target); an 8-bit target through the Perl echo
#              upstream; the signature recomputed in Perl.
#   replayed   header sets captured at the backend and sent straight to
#              it on another path, query or method, tampered, stale or
#              early, v1 or missing: refused; on the same request, refused
#              by the backend's X-Tenant-Request-ID check (the signature
#              verifies).
#   README     quotes the verifier verbatim; its known answer holds.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use IO::Socket::INET     ();
use JSON::XS             ();
use Crypt::KeyDerivation qw(hkdf);
use Digest::SHA          qw(hmac_sha256_hex);
use Time::HiRes          qw(sleep);

my $ROOT = project_root();

system('node', '-e', '') == 0
    or plan skip_all => 'node is not installed (scripts/deps.sh)';

# ENCRYPTION_KEY of this test
my $SIGNING_KEY = join '', map { sprintf '%02x', (11 * $_ + 3) % 256 } 0 .. 31;

my @SIGNED = qw(x-tenant-id x-tenant-slug x-tenant-schema x-tenant-tier
                x-organization-id x-user-id x-org-role);


# --- the Node.js backend ----------------------------------------------------

my $NODE_PORT = free_port();
my $node_pid = fork // die "fork: $!";
if (!$node_pid) {
    $ENV{ENCRYPTION_KEY} = $SIGNING_KEY;
    open STDOUT, ">", "/dev/null" or die "/dev/null: $!";
    exec 'node', "$ROOT/t/lib/signed-upstream.js", $NODE_PORT;
    die "exec node: $!";
}
END {
    if ($node_pid) {
        kill 'TERM', $node_pid;
        waitpid $node_pid, 0;
    }
}
{
    my $up;
    for (1 .. 100) {
        last if $up = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                            PeerPort => $NODE_PORT);
        sleep 0.1;
    }
    ok $up, 'the Node.js backend listens' or BAIL_OUT('no node backend');
}


# --- the gateway ------------------------------------------------------------

pg_start();
my $t = create_tenant(tier => 'professional');

nginx_start(http => <<"EOF");
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m ttl=30s negative_ttl=5s stale=5m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwt_key      %%RSA_PUB%%;
    tenant_tier         starter      features=api;
    tenant_tier         professional features=api;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/ {
            tenant_gateway on;
            proxy_set_header X-Request-ID \$request_id;
            proxy_pass http://127.0.0.1:$NODE_PORT;
        }

        location /old/ {
            tenant_gateway on;
            rewrite ^/old/(.*)\$ /new/\$1 break;
            proxy_pass http://127.0.0.1:$NODE_PORT;
        }

        location /jump/ {
            rewrite ^/jump/(.*)\$ /api/\$1 last;
        }

        location /mapped/ {
            tenant_gateway on;
            proxy_pass http://127.0.0.1:$NODE_PORT/v1/;
        }

        location /echo/ {
            tenant_gateway on;
            proxy_pass http://%%ECHO%%;
        }
    }
EOF

sub token {
    my (%o) = @_;
    return mint_token(sub => $o{sub} // 'user_t065',
                      org => { id => $o{org} // $t->{clerk_organization_id},
                               role => 'org:member' });
}

# Through the gateway: { status, json (the backend's answer), url (bytes
# the backend got as its target) }.
sub via_gateway {
    my (%r) = @_;
    my $res = http(method => $r{method}, path => $r{path}, body => $r{body},
                   headers => ['Authorization' => 'Bearer ' . token(),
                               @{ $r{headers} || [] }]);
    $res->{url} = pack 'H*', ($res->{json}{url} // '') if $res->{json};
    return $res;
}

# Straight to the backend, as someone who saw a header set would.
sub direct {
    my (%r) = @_;
    my $res = http(port => $NODE_PORT, method => $r{method}, path => $r{path},
                   body => $r{body}, headers => $r{headers} || []);
    $res->{reason} = $res->{json} ? $res->{json}{reason} : undef;
    return $res;
}

# The signed header set the backend received, as a header list.
sub header_set {
    my ($res) = @_;
    my $h = ($res->{json} || {})->{headers} || {};
    return [map { defined $h->{$_} ? ($_ => $h->{$_}) : () }
            @SIGNED, 'x-tenant-timestamp', 'x-tenant-request-id',
            'x-tenant-signature'];
}

# An independent v2 signature (README, X-Tenant-Signature).
my $DERIVED = hkdf(pack('H*', $SIGNING_KEY), '', 'SHA256', 32,
                   'capliquify tenant headers v1');

sub sign_v2 {
    my ($ts, $method, $target, %h) = @_;
    return 'v2=' . hmac_sha256_hex(join("\n", 'v2', $ts, $method, $target,
                                        map { $h{$_} // '' } 'x-tenant-request-id',
                                                             @SIGNED),
                                   $DERIVED);
}


# --- signature: requests through the gateway verify -------------------------

my %captured;

for my $c (
    [GET  => '/api/items?x=1&y=%20z',           '/api/items?x=1&y=%20z'],
    [POST => '/api/orders?draft=1',             '/api/orders?draft=1', '{"qty":2}'],
    [GET  => '/api/a%2Fb/%41/c%20d?q=%C3%A9',   '/api/a%2Fb/%41/c%20d?q=%C3%A9'],
    [GET  => '/api/./x/../dot',                 '/api/./x/../dot'],
    [GET  => '/old/thing?a=1&b=2',              '/new/thing?a=1&b=2'],
    [GET  => '/old/with%20space%2Fslash',       '/new/with%20space/slash'],
    [GET  => '/jump/x%20y/%7E?z=1',             '/api/x%20y/~?z=1'],
    [DELETE => '/mapped/item/7?force=1',        '/v1/item/7?force=1'],
) {
    my ($method, $path, $want_url, $body) = @$c;
    my $what = "$method $path";
    my $r = via_gateway(method => $method, path => $path, body => $body);
    is $r->{status}, 200, "$what: the backend verified the signature"
        or diag explain $r->{json} // $r->{body};
    is $r->{url}, $want_url, "$what: the backend's target";
    is $r->{json}{method}, $method, "$what: the backend's method";
    is $r->{json}{body}, $body, "$what: the body arrived" if defined $body;
    like $r->{json}{headers}{'x-tenant-signature'} // '', qr/^v2=[0-9a-f]{64}$/,
        "$what: X-Tenant-Signature is v2=<64 lowercase hex>";
    $captured{$path} = $r;
}

{
    # the backend's own URL is not what the gateway signed under a
    # proxy_pass with a URI part: verified only with options.target
    my $r = via_gateway(method => 'GET', path => '/mapped/item/8',
                        headers => ['X-Test-No-Map' => 1]);
    is $r->{status}, 401, 'proxy_pass with a URI part: req.url alone does not verify';
    is $r->{json}{reason}, 'bad signature', '... bad signature';
}

{
    # the same header set, recomputed here, for the same request
    my $r = $captured{'/api/items?x=1&y=%20z'};
    my %h = map { $_ => $r->{json}{headers}{$_} } @SIGNED, 'x-tenant-timestamp',
                                                  'x-tenant-request-id';
    is $r->{json}{headers}{'x-tenant-signature'},
        sign_v2($h{'x-tenant-timestamp'}, 'GET', '/api/items?x=1&y=%20z', %h),
        'the signature recomputed independently (Perl) matches';
    like $h{'x-tenant-request-id'}, qr/^[0-9a-f]{32}$/,
        'X-Tenant-Request-ID is 32 hex digits';
    is $h{'x-tenant-request-id'}, $r->{json}{headers}{'x-request-id'},
        'X-Tenant-Request-ID is $request_id (X-Request-ID, the access log)';
    isnt $h{'x-tenant-request-id'}, $captured{'/api/orders?draft=1'}{json}{headers}{'x-tenant-request-id'},
        'another request, another X-Tenant-Request-ID';
}

{
    # two requests of one user in the same second differ only in the path:
    # their signatures must differ (v1 gave both the same)
    my ($a, $b);
    for (1 .. 10) {
        $a = via_gateway(method => 'GET', path => '/api/one');
        $b = via_gateway(method => 'GET', path => '/api/two');
        last if ($a->{json}{headers}{'x-tenant-timestamp'} // 0)
                eq ($b->{json}{headers}{'x-tenant-timestamp'} // 1);
    }
    is $a->{json}{headers}{'x-tenant-timestamp'}, $b->{json}{headers}{'x-tenant-timestamp'},
        'same second for /api/one and /api/two';
    isnt $a->{json}{headers}{'x-tenant-signature'}, $b->{json}{headers}{'x-tenant-signature'},
        'same user, tenant and second, another path: another signature';
}


{
    # 8-bit bytes in the target (Node's parser refuses them, the Perl echo
    # upstream takes them): signed as the upstream receives them
    my $path = "/echo/caf\xc3\xa9?n=\xc3\xa9&m=%C3%A9";
    my $r = http(path => $path, headers => ['Authorization' => 'Bearer ' . token()]);
    is $r->{status}, 200, '8-bit target: 200';
    my $j = $r->{json} || {};
    my %h = map { $_ => ($j->{headers}{$_} || [])->[0] } @SIGNED, 'x-tenant-timestamp',
                                                         'x-tenant-signature',
                                                         'x-tenant-request-id';
    is $j->{uri}, $path, '8-bit target: the upstream got it as sent';
    is $h{'x-tenant-signature'}, sign_v2($h{'x-tenant-timestamp'}, 'GET', $j->{uri}, %h),
        '8-bit target: the signature covers its bytes';
}


{
    # control bytes never reach the signer: nginx refuses the request line
    for my $c (["\t", 'a tab'], ["\x01", 'SOH'], ["\x7f", 'DEL']) {
        my ($byte, $what) = @$c;
        my $r = http(raw => "GET /api/x${byte}y?q=${byte} HTTP/1.1\r\nHost: localhost\r\n"
                            . 'Authorization: Bearer ' . token() . "\r\n"
                            . "Connection: close\r\n\r\n");
        is $r->{status}, 400, "$what in the target: 400 from nginx, not signed";
    }
}


# --- signature: replays straight to the backend -----------------------------

{
    my $r = $captured{'/api/items?x=1&y=%20z'};
    my $set = header_set($r);

    my $d = direct(method => 'GET', path => '/api/items?x=1&y=%20z', headers => $set);
    is $d->{status}, 401, 'replay of the same request: refused';
    is $d->{reason}, 'replayed', '... by the X-Tenant-Request-ID check: the signature verified';

    for my $c (
        [GET    => '/api/admin/users',          'another path'],
        [GET    => '/api/items',                'the query left out'],
        [GET    => '/api/items?x=2&y=%20z',     'another query'],
        [GET    => '/api/items?x=1&y=%20z&a=b', 'a query parameter added'],
        [GET    => '/API/items?x=1&y=%20z',     'the path in another case'],
        [GET    => '/api/items?x=1&y=+z',       'the query encoded otherwise'],
        [DELETE => '/api/items?x=1&y=%20z',     'another method'],
        [POST   => '/api/items?x=1&y=%20z',     'POST instead of GET'],
        [HEAD   => '/api/items?x=1&y=%20z',     'HEAD instead of GET'],
    ) {
        my ($method, $path, $what) = @$c;
        my $d = direct(method => $method, path => $path, headers => $set);
        is $d->{status}, 401, "replayed header set, $what: refused";
        is $d->{reason}, 'bad signature', "... bad signature" unless $method eq 'HEAD';
    }

    my $p = $captured{'/api/orders?draft=1'};
    $d = direct(method => 'DELETE', path => '/api/orders?draft=1', headers => header_set($p));
    is $d->{status}, 401, 'replayed POST header set as DELETE: refused';

    for my $n (@SIGNED, 'x-tenant-timestamp', 'x-tenant-request-id') {
        my @tampered = @$set;
        for (my $i = 0; $i < @tampered; $i += 2) {
            $tampered[$i + 1] .= 'x' if $tampered[$i] eq $n;
        }
        $d = direct(method => 'GET', path => '/api/items?x=1&y=%20z', headers => \@tampered);
        is $d->{status}, 401, "replayed header set, $n altered: refused";
    }

    my %h = @$set;
    my @swapped = (%h, 'x-tenant-tier' => 'enterprise');
    $d = direct(method => 'GET', path => '/api/items?x=1&y=%20z', headers => \@swapped);
    is $d->{status}, 401, 'replayed header set, X-Tenant-Tier enterprise: refused';

    my @dup = (@$set, 'X-Tenant-ID' => $h{'x-tenant-id'});
    $d = direct(method => 'GET', path => '/api/items?x=1&y=%20z', headers => \@dup);
    is $d->{status}, 401, 'replayed header set with X-Tenant-ID twice: refused';

    my %n = @$set;
    delete $n{'x-tenant-signature'};
    $d = direct(method => 'GET', path => '/api/items?x=1&y=%20z', headers => [%n]);
    is $d->{status}, 401, 'no X-Tenant-Signature: refused';
    is $d->{reason}, 'no v2 signature', '... no v2 signature';

    # the mapped location's header set on the backend's own path: refused
    my $m = $captured{'/mapped/item/7?force=1'};
    $d = direct(method => 'DELETE', path => '/mapped/item/7?force=1', headers => header_set($m));
    is $d->{reason}, 'replayed',
        'mapped header set on the gateway path it was signed for: the signature verifies';
    $d = direct(method => 'DELETE', path => '/v1/item/8?force=1', headers => header_set($m));
    is $d->{status}, 401, 'mapped header set on another item: refused';
}

{
    # timestamps: validly signed here, for the exact request
    my %h = (map { $_ => $captured{'/api/items?x=1&y=%20z'}{json}{headers}{$_} } @SIGNED);
    my $path = '/api/items?x=1&y=%20z';
    my $n = 0;
    for my $c ([0, 200, 'now'], [-3600, 401, 'an hour old'], [3600, 401, 'an hour ahead'],
               [-121, 401, 'just past the 120 s window']) {
        my ($off, $want, $what) = @$c;
        my $ts = time + $off;
        $h{'x-tenant-request-id'} = sprintf '%032x', ++$n;
        my $d = direct(method => 'GET', path => $path,
                       headers => [%h, 'x-tenant-timestamp' => $ts,
                                   'x-tenant-signature' => sign_v2($ts, 'GET', $path, %h)]);
        is $d->{status}, $want, "signed timestamp $what: $want";
        is $d->{reason}, 'stale or missing timestamp', '... stale' if $want == 401;
    }

    # a v1 signature (the old scheme), valid for these values
    my $ts = time;
    my $v1 = 'v1=' . hmac_sha256_hex(join("\n", 'v1', $ts, map { $h{$_} // '' } @SIGNED),
                                     $DERIVED);
    my $d = direct(method => 'GET', path => $path,
                   headers => [%h, 'x-tenant-timestamp' => $ts, 'x-tenant-signature' => $v1]);
    is $d->{status}, 401, 'a valid v1 signature: refused';
    is $d->{reason}, 'no v2 signature', '... no v2 signature';
}


# --- the README quotes the verifier the tests run ---------------------------

{
    open my $fh, '<', "$ROOT/README.md" or die "README.md: $!";
    my $readme = do { local $/; <$fh> };
    open $fh, '<', "$ROOT/scripts/verify-signature.js" or die "verify-signature.js: $!";
    my $js = do { local $/; <$fh> };
    my ($quoted) = $readme =~ /^### X-Tenant-Signature\n.*?^```js\n(.*?)^```\n/ms;
    ok defined $quoted, 'README: X-Tenant-Signature has a js block';
    is $quoted, $js, 'README: the js block is scripts/verify-signature.js verbatim';
}


{
    # the README's known answer, through the verifier (no clock: the
    # timestamp is from 2023)
    my $js = <<'JS';
const { tenantSigningKey, verifyTenantHeaders } = require(process.argv[1]);
const key = tenantSigningKey('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
const headers = { 'x-tenant-id': 't1', 'x-tenant-slug': 'acme',
  'x-tenant-schema': 'tenant_acme', 'x-tenant-tier': 'professional',
  'x-organization-id': 'org_1', 'x-user-id': 'user_1', 'x-org-role': 'org:admin',
  'x-tenant-timestamp': '1700000000',
  'x-tenant-request-id': '0123456789abcdef0123456789abcdef',
  'x-tenant-signature': 'v2=39c6c8d58d63c0c2c29ce8556a793ca7dc39ac0ef854e89935af8948e1b793ce' };
const req = { method: 'GET', url: '/api/products?page=2', headers };
console.log(key.toString('hex'));
console.log(String(verifyTenantHeaders(req, key, { maxAgeSeconds: Infinity })));
console.log(String(verifyTenantHeaders(req, key)));
console.log(String(verifyTenantHeaders({ ...req, url: '/api/products?page=3' }, key,
                                       { maxAgeSeconds: Infinity })));
JS
    open my $fh, '-|', 'node', '-e', $js, "$ROOT/scripts/verify-signature.js"
        or die "node: $!";
    my @out = map { chomp; $_ } <$fh>;
    close $fh;
    is_deeply \@out, ['9460621557db2c6d957e48e7b9aa2c6640fdedd25fa5939e2276f6cd011e425f',
                      'null', 'stale or missing timestamp', 'bad signature'],
        'README known answer: the verifier derives the key, accepts it, '
        . 'refuses it as stale by the clock and on another target';
}


done_testing();
