#!/usr/bin/perl
# JWT verification at the gateway: token sources (Authorization: Bearer,
# the __session cookie), algorithms and keys (PEM, JWKS, kid), malformed
# and oversized tokens, time claims and leeway, issuer and authorized
# parties, claim hygiene (CR/LF, length), Clerk org claims v1 and v2, the
# shared-memory token cache and its tie to the verification policy across
# reloads.
#
# Every refusal is checked for: status, application/problem+json, "code"
# and "reason", the WWW-Authenticate header, and that the upstream was not
# reached: the echo upstream here is one of our own (echo_start with a
# handler) that answers like the default one and also appends a line per
# request to a file, so each case can compare the upstream's request count
# before and after.
#
# One nginx, reloaded between phases (the JWT directives are http-level):
#
#   A  PEM RSA key + JWKS (rsa-1, ec-1), RS256 ES256, leeway 5s, issuer,
#      authorized parties, token cache             most of the cases
#   B  as A, other issuer                          cached token vs. policy
#   B2 as B, leeway 10min then 0s                  cached nbf vs. leeway
#   C  JWKS only, RS256 only, leeway 0s            ES256 refused, cache expiry
#   D  one PEM RSA key, no kid                     the single-key fallback
#   E  three PEM keys (rsa, ec, other)             several kid-less keys

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Crypt::PK::ECC   ();
use Crypt::PK::RSA   ();
use File::Temp       ();
use Fcntl            qw(O_WRONLY O_APPEND O_CREAT);
use JSON::XS         ();
use MIME::Base64     qw(encode_base64url decode_base64url);
use Time::HiRes      qw(time sleep);

my $JSON = JSON::XS->new->utf8->canonical;

my $ISS  = 'https://clerk.capliquify.test';
my $ISS2 = 'https://clerk.other.test';
my @AZP  = ('https://app.capliquify.test', 'http://localhost:3000');

pg_start();
my $keys = jwt_keys();
my $t1   = create_tenant(status => 'active');
my $t2   = create_tenant(status => 'active', tier => 'professional');
my $ORG  = $t1->{clerk_organization_id};

# The upstream: the default echo answer, and one line per request in $HITS.
my $HITS = File::Temp->new(TEMPLATE => 'tenant-010-hits-XXXXXX', TMPDIR => 1);
my $echo = echo_start(handler => sub {
    my ($req) = @_;
    sysopen my $fh, "$HITS", O_WRONLY | O_APPEND | O_CREAT or die "$HITS: $!";
    syswrite $fh, "$req->{uri}\n";
    close $fh;
    return (200, ['Content-Type' => 'application/json'],
            $JSON->encode({ map { $_ => $req->{$_} } qw(method uri version headers body) }));
});

# Requests the upstream has received so far.
sub upstream_hits {
    open my $fh, '<', "$HITS" or return 0;
    my $n = 0;
    $n++ while <$fh>;
    return $n;
}
my $hits_seen = 0;


# ---- configuration ---------------------------------------------------------

# The http{} snippet.  %o: keys (directive lines), algorithms, leeway,
# issuer, azp (arrayref).  Port 1 has big header buffers, so that the
# module's own size limit is what a 16 KB token meets; port 2 keeps
# nginx's defaults (8k).
sub conf {
    my (%o) = @_;

    my $policy = '';
    $policy .= "tenant_jwt_algorithms $o{algorithms};\n" if $o{algorithms};
    $policy .= "tenant_jwt_leeway $o{leeway};\n"         if defined $o{leeway};
    $policy .= "tenant_jwt_issuer \"$o{issuer}\";\n"     if $o{issuer};
    $policy .= "tenant_jwt_authorized_parties @{ $o{azp} };\n" if $o{azp};

    my $location = <<EOF;
        location /api/ {
            tenant_gateway on;
            proxy_pass http://$echo->{addr};
        }
EOF

    return <<EOF;
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_token_cache  zone=tokens:1m;
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_signing_key  000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f;

$o{keys}
$policy

    server {
        listen 127.0.0.1:%%PORT%%;
        large_client_header_buffers 4 32k;
$location
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
$location
    }
EOF
}

my %PHASE_A = (
    keys   => "tenant_jwt_key %%RSA_PUB%%;\ntenant_jwks_file %%JWKS%%;",
    leeway => '5s', issuer => $ISS, azp => \@AZP,
);


# ---- helpers ---------------------------------------------------------------

# Claims every token of phases A and B needs; mint_token() drops a claim
# given as undef, so tok(iss => undef) has none.
my %DEFAULTS = (org => $ORG, iss => $ISS, azp => $AZP[0]);

sub tok { mint_token(%DEFAULTS, @_) }

# GET /api/orders with these headers, on port 1 unless the first argument
# is a port number.
sub get {
    my (@h) = @_;
    my $port = @h % 2 ? shift @h : undef;
    return http(path => '/api/orders', headers => \@h,
                (defined $port ? (port => $port) : ()));
}

# The same with "Authorization: Bearer <token>": bearer($token [, $port],
# more headers).
sub bearer {
    my ($token, @h) = @_;
    my @port = @h % 2 ? (shift @h) : ();
    return get(@port, Authorization => "Bearer $token", @h);
}

# A token from raw parts, really signed: header hashref, payload hashref
# or string (as is), key 'rsa' | 'ec' | 'other'.
sub sign_raw {
    my (%p) = @_;

    my $b64 = sub { encode_base64url(ref $_[0] ? $JSON->encode($_[0]) : $_[0]) };
    my $input = $b64->($p{header}) . '.' . $b64->($p{payload});
    my $key = $p{key} // 'rsa';
    my $sig = $key eq 'ec'
        ? Crypt::PK::ECC->new($keys->{ec_key})->sign_message_rfc7518($input, 'SHA256')
        : Crypt::PK::RSA->new($keys->{"${key}_key"})->sign_message($input, 'SHA256', 'v1.5');
    return "$input." . encode_base64url($sig);
}

# The claims a valid token of phase A has, for sign_raw / jwt_raw.
sub claims { return { sub => 'user_raw', exp => int(time) + 300, org_id => $ORG,
                      iss => $ISS, azp => $AZP[0], @_ } }

sub admitted {
    my ($r, $name, %want) = @_;

    my $tenant = $want{tenant} || $t1;
    subtest "$name: admitted" => sub {
        is $r->{status}, 200, 'status 200'
            or diag "$r->{status} $r->{body}";
        is upstream_hits() - $hits_seen, 1, 'upstream reached, once';
        $hits_seen = upstream_hits();
        my $h = $r->{json}{headers} || {};
        is_deeply $h->{'x-tenant-id'}, [$tenant->{id}], 'X-Tenant-ID';
        is_deeply $h->{'x-organization-id'}, [$tenant->{clerk_organization_id}],
            'X-Organization-ID';
        is_deeply $h->{'x-user-id'}, [$want{user} // 'user_test'], 'X-User-ID = sub';
        if (exists $want{role}) {
            is_deeply $h->{'x-org-role'}, defined $want{role} ? [$want{role}] : undef,
                'X-Org-Role';
        }
        ok $h->{'x-tenant-signature'}, 'signed';
    };
}

# status, problem+json, code, reason (undef: no "reason" member), the
# WWW-Authenticate header, and no upstream.
sub refused {
    my ($r, $name, $status, $code, $reason) = @_;

    subtest "$name: $status $code" . ($reason ? " ($reason)" : '') => sub {
        is $r->{status}, $status, "status $status"
            or diag "$r->{status} $r->{body}";
        is $r->{headers}{'content-type'}[0], 'application/problem+json',
            'problem+json';
        my $j = $r->{json} || {};
        is $j->{code}, $code, 'code';
        is $j->{type}, "https://capliquify.com/problems/$code", 'type';
        is $j->{status}, $status, 'status member';
        ok length($j->{title} // ''), 'title';
        is $j->{reason}, $reason, 'reason';

        my $www = $r->{headers}{'www-authenticate'};
        if ($code eq 'invalid_token') {
            is scalar(@{ $www || [] }), 1, 'one WWW-Authenticate';
            like $www->[0] // '',
                qr/^Bearer error="invalid_token", error_description="[^"\r\n]+"$/,
                'WWW-Authenticate: Bearer error="invalid_token"';
            is $j->{detail}, ($www->[0] // '') =~ /error_description="([^"]*)"/ && $1,
                'detail = error_description';
        } elsif ($code eq 'authentication_required') {
            is_deeply $www, ['Bearer'], 'WWW-Authenticate: Bearer';
        }

        is upstream_hits(), $hits_seen, 'upstream not reached';
        $hits_seen = upstream_hits();
        ok !exists $j->{headers}, 'not the echo body';
    };
}

sub invalid { refused($_[0], $_[1], 401, 'invalid_token', $_[2]) }


# ============================================================================
# Phase A: PEM key + JWKS, issuer, authorized parties, leeway 5s

my $ngx = nginx_start(http => conf(%PHASE_A));

# ---- algorithms and keys --------------------------------------------------

admitted bearer(tok(kid => undef)), 'RS256, no kid: the PEM key';
admitted bearer(tok(key => 'ec')), 'ES256 via JWKS (kid ec-1)';
admitted bearer(tok(key => 'rsa', kid => 'rsa-1')), 'RS256 via JWKS (kid rsa-1)';

invalid bearer(tok(key => 'other')),
    'kid rsa-other names no key and the kid-less PEM key does not verify it',
    'unknown_key';
invalid bearer(tok(key => 'other', kid => undef)),
    'signed by a key not configured, no kid (the PEM key is tried)', 'bad_signature';
invalid bearer(tok(kid => 'ec-1', key => 'rsa')),
    'RS256 signed by rsa, kid ec-1 (an EC key never verifies RS256)', 'unknown_key';
invalid bearer(sign_raw(header => { alg => 'ES256', kid => 'rsa-1' }, payload => claims(),
                        key => 'ec')),
    'ES256 signed by ec, kid rsa-1 (an RSA key never verifies ES256)', 'unknown_key';
{
    # a real ES256 signature (64 bytes) under an RS256 header for rsa-1
    my (undef, $p, $s) = split /\./, tok(key => 'ec');
    my $h = encode_base64url($JSON->encode({ alg => 'RS256', kid => 'rsa-1', typ => 'JWT' }));
    invalid bearer("$h.$p.$s"), 'RS256 header with an ES256 signature', 'bad_signature';
}
{
    # a valid token with one signature byte changed
    my ($h, $p, $s) = split /\./, tok();
    my $sig = decode_base64url($s);
    substr($sig, 10, 1) ^= "\x01";
    invalid bearer("$h.$p." . encode_base64url($sig)), 'signature tampered', 'bad_signature';

    # and with the payload changed under the old signature
    my $c = $JSON->decode(decode_base64url($p));
    $c->{sub} = 'user_admin';
    invalid bearer("$h." . encode_base64url($JSON->encode($c)) . ".$s"),
        'payload tampered', 'bad_signature';
}

invalid bearer(jwt_raw(header => { alg => 'none', typ => 'JWT' }, payload => claims())),
    'alg none, unsigned', 'algorithm_not_allowed';
invalid bearer(jwt_raw(header => { alg => 'none' }, payload => claims(),
                       signature => 'x' x 256)),
    'alg none with a signature', 'algorithm_not_allowed';
invalid bearer(tok(alg => 'HS256')),
    'HS256 keyed with the PEM public key bytes', 'algorithm_not_allowed';
invalid bearer(tok(alg => 'HS256', kid => 'rsa-1')),
    'HS256 keyed with the PEM, kid rsa-1', 'algorithm_not_allowed';
invalid bearer(sign_raw(header => { alg => 'rs256', kid => 'rsa-1' }, payload => claims())),
    'alg "rs256" (case matters)', 'algorithm_not_allowed';
invalid bearer(sign_raw(header => { alg => 'PS256', kid => 'rsa-1' }, payload => claims())),
    'alg PS256', 'algorithm_not_allowed';

# ---- malformed tokens -----------------------------------------------------

{
    my $good = tok();
    my ($h, $p, $s) = split /\./, $good;

    invalid bearer("$h.$p"), '2 segments', 'token_malformed';
    invalid bearer("$good.$s"), '4 segments', 'token_malformed';
    invalid bearer("$good."), '4 segments, last one empty', 'token_malformed';
    invalid bearer(".$p.$s"), 'empty header segment', 'token_malformed';
    invalid bearer("$h..$s"), 'empty payload segment', 'token_malformed';
    invalid bearer('x' x 40), 'no dots at all', 'token_malformed';
    invalid bearer("$h+.$p.$s"), '"+" (base64, not base64url) in the header',
        'token_malformed';
    invalid bearer("$h.$p/.$s"), '"/" (base64, not base64url) in the payload',
        'token_malformed';
    invalid bearer("$h.$p.$s!"), '"!" in the signature', 'token_malformed';
    invalid bearer("$h.$p.${s}=="), 'padding "=="', 'token_malformed';
    my $h1 = $h . 'A' x ((1 - length $h) % 4);
    invalid bearer("$h1.$p.$s"), 'header of a length no base64url has (4n+1)',
        'token_malformed';

    invalid get(Authorization => 'Bearer '), 'empty Bearer', 'token_malformed';
    invalid get(Authorization => 'Bearer'), 'Bearer without a token', 'token_malformed';
    invalid get(Authorization => 'Basic dXNlcjpwYXNz'), '"Basic" Authorization',
        'token_malformed';
    invalid get(Authorization => "Bearer$good"), 'no space after Bearer', 'token_malformed';
    invalid get(Authorization => "Bearer $good extra"), 'token followed by more',
        'token_malformed';
    invalid get(Authorization => "Token $good"), 'another scheme', 'token_malformed';
}

invalid bearer(jwt_raw(header => 'not json', payload => claims())),
    'header not JSON', 'token_bad_header';
invalid bearer(jwt_raw(header => '["RS256"]', payload => claims())),
    'header JSON but not an object', 'token_bad_header';
invalid bearer(sign_raw(header => { kid => 'rsa-1' }, payload => claims())),
    'header without alg', 'token_bad_header';
invalid bearer(sign_raw(header => { alg => 'RS256', kid => 'rsa-1', crit => ['exp'] },
                        payload => claims())),
    'header with crit', 'token_bad_header';
invalid bearer(jwt_raw(header => { alg => 'RS256', kid => 'rsa-1' }, payload => 'not json',
                       signature => 'x' x 256)),
    'payload not JSON, bad signature (signature checked first)', 'bad_signature';
invalid bearer(sign_raw(header => { alg => 'RS256', kid => 'rsa-1' }, payload => 'not json')),
    'payload not JSON, validly signed', 'token_bad_payload';
invalid bearer(sign_raw(header => { alg => 'RS256', kid => 'rsa-1' }, payload => '[1,2]')),
    'payload a JSON array, validly signed', 'token_bad_payload';

# ---- size -------------------------------------------------------------------

{
    # A validly signed token of exactly $len bytes (a "pad" claim and a
    # header field adjust the length; not every length of one segment
    # exists in base64url).
    my $sized = sub {
        my ($len) = @_;
        for my $hx (0 .. 3) {
            my $base = length tok(pad => '', header => { x => 'h' x $hx });
            my $n0 = int(($len - $base) * 3 / 4);
            for my $n ($n0 - 6 .. $n0 + 6) {
                next if $n < 0;
                my $t = tok(pad => 'p' x $n, header => { x => 'h' x $hx });
                return $t if length $t == $len;
            }
        }
        die "no token of $len bytes\n";
    };

    my $max = $sized->(8192);
    admitted bearer($max), 'token of exactly 8192 bytes';
    invalid bearer($sized->(8193)), 'token of 8193 bytes', 'token_too_large';

    my $big = tok(pad => 'p' x 12_000);
    ok length($big) > 16_000, 'a 16 KB token (' . length($big) . ' bytes)';
    invalid bearer($big), '16 KB token, 32k header buffers', 'token_too_large';
    invalid get(Cookie => "__session=$big"), '16 KB __session cookie', 'token_too_large';

    my $r = bearer($big, $ngx->{port2});
    subtest '16 KB token, nginx default header buffers: 4xx from nginx, no upstream' => sub {
        ok $r->{status} >= 400 && $r->{status} < 500, "4xx ($r->{status})";
        is upstream_hits(), $hits_seen, 'upstream not reached';
        $hits_seen = upstream_hits();
    };
    admitted bearer(tok(), $ngx->{port2}), 'port 2 (default buffers) admits a normal token';
}

# ---- time claims (leeway 5s) -------------------------------------------------

{
    my $now = int time;
    invalid bearer(tok(exp => $now - 60)), 'expired a minute ago', 'token_expired';
    invalid bearer(tok(exp => $now - 10)), 'expired 10 s ago (leeway 5 s)', 'token_expired';
    admitted bearer(tok(exp => $now - 2)), 'expired 2 s ago, within the leeway';
    invalid bearer(tok(nbf => $now + 60)), 'nbf a minute ahead', 'token_not_yet_valid';
    admitted bearer(tok(nbf => $now + 2)), 'nbf 2 s ahead, within the leeway';
    admitted bearer(tok(nbf => $now - 60)), 'nbf in the past';
    invalid bearer(tok(exp => undef)), 'no exp', 'bad_claim';
    invalid bearer(tok(exp => "$now")), 'exp a string', 'bad_claim';
    invalid bearer(tok(nbf => 'soon')), 'nbf a string', 'bad_claim';
    admitted bearer(tok(exp => $now + 300.5)), 'exp a real number';

    # times outside +-2^62 are refused: exp + leeway cannot overflow (an
    # exp of 2^63 - 1 was a token valid forever, never cached)
    my $i64_max = 9223372036854775807;
    my $i64_min = -9223372036854775807 - 1;
    invalid bearer(tok(exp => $i64_max)), 'exp 2^63 - 1', 'bad_claim';
    invalid bearer(tok(exp => $i64_max)), 'exp 2^63 - 1, again', 'bad_claim';
    invalid bearer(tok(exp => 4611686018427387905)), 'exp 2^62 + 1', 'bad_claim';
    invalid bearer(tok(nbf => $i64_min)), 'nbf -2^63', 'bad_claim';
    invalid bearer(tok(iat => $i64_max)), 'iat 2^63 - 1', 'bad_claim';
}

# ---- issuer and authorized parties ----------------------------------------

admitted bearer(tok(iss => $ISS)), 'iss matches';
invalid bearer(tok(iss => $ISS2)), 'iss wrong', 'bad_issuer';
invalid bearer(tok(iss => undef)), 'iss missing', 'bad_issuer';
invalid bearer(tok(iss => "$ISS/")), 'iss with a trailing slash', 'bad_issuer';
invalid bearer(tok(iss => 42)), 'iss a number', 'bad_claim';

admitted bearer(tok(azp => $AZP[0])), 'azp: the first authorized party';
admitted bearer(tok(azp => $AZP[1])), 'azp: the second authorized party';
invalid bearer(tok(azp => 'https://evil.test')), 'azp not authorized',
    'bad_authorized_party';
invalid bearer(tok(azp => undef)), 'azp missing', 'bad_authorized_party';
invalid bearer(tok(azp => uc $AZP[0])), 'azp in another case', 'bad_authorized_party';

# ---- claim hygiene ------------------------------------------------------------

invalid bearer(tok(sub => "user_a\r\nX-Tenant-ID: forged")), 'CR/LF in sub', 'bad_claim';
invalid bearer(tok(sub => "user_a\nX-Evil: 1")), 'LF in sub', 'bad_claim';
invalid bearer(tok(org => "$ORG\r\nX-Evil: 1")), 'CR/LF in org_id', 'bad_claim';
invalid bearer(tok(org => { id => $ORG, role => "admin\r\nX-Evil: 1" })),
    'CR/LF in org_role', 'bad_claim';
invalid bearer(tok(v => 2, org => { id => "$ORG\nX-Evil: 1" })), 'LF in v2 o.id', 'bad_claim';
invalid bearer(tok(v => 2, org => { id => $ORG, role => "a\tb" })), 'TAB in v2 o.rol',
    'bad_claim';
# (jansson refuses "\u0000" in any JSON string: the payload does not parse)
invalid bearer(tok(v => 2, org => { id => $ORG, role => "a\x00b" })), 'NUL in v2 o.rol',
    'token_bad_payload';
invalid bearer(tok(sub => "user\x7f")), 'DEL in sub', 'bad_claim';
invalid bearer(tok(sub => 'u' x 200)), '200-byte sub', 'bad_claim';
invalid bearer(tok(sub => 'u' x 129)), '129-byte sub', 'bad_claim';
admitted bearer(tok(sub => 'u' x 128)), '128-byte sub', user => 'u' x 128;
invalid bearer(tok(sub => undef)), 'no sub', 'bad_claim';
invalid bearer(tok(sub => '')), 'empty sub', 'bad_claim';
invalid bearer(tok(sub => 12345)), 'sub a number', 'bad_claim';
invalid bearer(tok(org_id => [$ORG], org => undef)), 'org_id an array', 'bad_claim';
invalid bearer(tok(v => 3)), 'v 3', 'bad_claim';

# ---- Clerk organization claims v1 and v2 ----------------------------------

admitted bearer(tok(org => { id => $ORG, role => 'org:admin', slug => 'one' }),
                'X-Organization-ID' => $ORG),
    'v1 org_id / org_role (X-Organization-ID repeats it)', role => 'org:admin';
admitted bearer(tok(org => { id => $t2->{clerk_organization_id}, role => 'org:member' })),
    'v1, the other tenant', tenant => $t2, role => 'org:member';
admitted bearer(tok(v => 2, org => { id => $t2->{clerk_organization_id}, role => 'admin',
                                     slug => 'two' }, sts => 'active')),
    'v2 o.id / o.rol, sts active', tenant => $t2, role => 'admin';
admitted bearer(tok(v => 2, org => { id => $ORG, role => 'member' })),
    'v2 without sts', role => 'member';
admitted bearer(tok(org => $ORG)), 'no role: no X-Org-Role', role => undef;
invalid bearer(tok(v => 2, org => { id => $ORG, role => 'admin' }, sts => 'pending')),
    'v2 sts pending', 'session_pending';
invalid bearer(tok(v => 2, org => { id => $ORG }, o => 'org_x')), 'v2 o not an object',
    'bad_claim';
refused bearer(tok(org => $ORG), 'X-Organization-ID' => $t2->{clerk_organization_id}),
    'X-Organization-ID is not the token\'s org', 403, 'organization_mismatch';
refused bearer(tok(org => undef)), 'token without an org', 400, 'organization_required';
{
    # a v2 token's org claims are o.*, not the v1 top-level ones
    my $r = bearer(tok(v => 2, org => undef, org_id => $ORG));
    refused $r, 'v2 token with only a v1 org_id', 400, 'organization_required';
}

# ---- token sources ----------------------------------------------------------

admitted get(Cookie => '__session=' . tok()), 'cookie __session';
admitted get(Cookie => 'theme=dark; __session=' . tok() . '; lang=en'),
    'cookie __session among others';
admitted get(Authorization => 'bearer ' . tok()), 'lowercase "bearer"';
admitted get(Authorization => 'BEARER ' . tok()), 'uppercase "BEARER"';
invalid get(Authorization => 'Bearer garbage', Cookie => '__session=' . tok()),
    'bad Authorization + good cookie: Authorization wins', 'token_malformed';
invalid get(Authorization => 'Bearer ' . tok(exp => int(time) - 60),
            Cookie => '__session=' . tok()),
    'expired Authorization + good cookie', 'token_expired';
invalid get(Authorization => 'Basic dXNlcjpwYXNz', Cookie => '__session=' . tok()),
    'Basic Authorization + good cookie', 'token_malformed';
admitted get(Authorization => 'Bearer ' . tok(sub => 'user_header'),
             Cookie => '__session=' . tok(sub => 'user_cookie')),
    'two good tokens: the Authorization one is used', user => 'user_header';


# The cookie is read by tenant_cookie_value() in every Cookie line: the
# name is case-sensitive, a quoted value is unquoted, two different
# __session values (in one line or two) are refused as ambiguous.
refused get(Cookie => '__Session=' . tok()), 'cookie __Session (another name)',
    401, 'authentication_required';
refused get(Cookie => '__SESSION=' . tok()), 'cookie __SESSION (another name)',
    401, 'authentication_required';
admitted get(Cookie => '__Session=junk; __session=' . tok(sub => 'user_lower')),
    'cookies __Session and __session: __session taken', user => 'user_lower';
admitted get(Cookie => '__session="' . tok() . '"'), 'cookie __session, quoted value';
admitted get(Cookie => 'a=b; __session=' . tok()), 'cookie a=b; __session';
admitted get(Cookie => "a=b;	__session=" . tok() . " 	"), 'cookie, tab and trailing blanks';
admitted get(Cookie => 'a=b', Cookie => '__session=' . tok(sub => 'user_line2')),
    'two Cookie lines, __session in the second', user => 'user_line2';
{
    my $t = tok(sub => 'user_twice');
    admitted get(Cookie => "__session=$t", Cookie => "x=1; __session=$t"),
        'two Cookie lines, the same __session in both', user => 'user_twice';
    admitted get(Cookie => "__session=$t; __session=\"$t\""),
        'one line, the same __session twice (once quoted)', user => 'user_twice';
    my $other = tok(sub => 'user_other');
    invalid get(Cookie => "__session=$t", Cookie => "__session=$other"),
        'two Cookie lines, two different __session tokens', 'token_malformed';
    invalid get(Cookie => "__session=$t; a=b; __session=$other"),
        'one line, two different __session tokens', 'token_malformed';
    invalid get(Cookie => "__session=; __session=$t"),
        'an empty __session, then a token', 'token_malformed';
    invalid get(Cookie => "__session=$t", Cookie => '__session=junk'),
        'a token, then junk in a second line', 'token_malformed';

    # Clerk's other cookies: __session_<suffix> (suffixed copies) and
    # __client_uat are other names, never __session nor a second value
    admitted get(Cookie => "__session_Xy12ab=junk; __client_uat=1700000000; "
                           . "__session=$t; __session_=x"),
        'cookie __session among __session_<suffix> and __client_uat',
        user => 'user_twice';
    refused get(Cookie => "__session_Xy12ab=$t; __client_uat=1700000000"),
        'cookies __session_<suffix> and __client_uat only', 401,
        'authentication_required';
}

refused get(), 'no token', 401, 'authentication_required';
refused get(Cookie => 'session=abc; __clerk_db_jwt=x'), 'cookies, none __session',
    401, 'authentication_required';
refused get(Cookie => '__session='), 'empty __session cookie', 401, 'authentication_required';

# ---- token cache --------------------------------------------------------------

{
    my $t = tok(sub => 'user_cached');
    admitted bearer($t), 'token cache: first use', user => 'user_cached';
    admitted bearer($t), 'token cache: same token again', user => 'user_cached';
    admitted get(Cookie => "__session=$t"), 'token cache: same token as a cookie',
        user => 'user_cached';
    # the cache key is the whole token: a tampered copy is verified afresh
    my ($h, $p, $s) = split /\./, $t;
    my $sig = decode_base64url($s);
    substr($sig, -1, 1) ^= "\x01";
    invalid bearer("$h.$p." . encode_base64url($sig)),
        'token cache: tampered copy of a cached token', 'bad_signature';
}


# ============================================================================
# Phase B: reload with another issuer.  Cache entries are tied to the
# policy: a token cached under the old one is verified again.

my $cached_iss1 = tok(sub => 'user_iss1');
admitted bearer($cached_iss1), 'before reload: iss 1 token cached', user => 'user_iss1';
my $cached_ec = tok(key => 'ec', sub => 'user_ec');
admitted bearer($cached_ec), 'before reload: ES256 token cached', user => 'user_ec';

nginx_reload(http => conf(%PHASE_A, issuer => $ISS2));

invalid bearer($cached_iss1), 'after reload (issuer 2): token cached under issuer 1',
    'bad_issuer';
admitted bearer(tok(iss => $ISS2)), 'after reload: issuer 2 token';

# ---- B2: only the leeway changes (10min -> 0s) --------------------------------
#
# The token's nbf is two minutes ahead: inside a leeway of 10 minutes, still
# ahead after the reload to 0s however long that reload takes here.
{
    nginx_reload(http => conf(%PHASE_A, issuer => $ISS2, leeway => '10m'));

    my $nbf = int(time) + 120;
    my $early = tok(iss => $ISS2, nbf => $nbf, sub => 'user_early');
    admitted bearer($early), 'leeway 10min: nbf 2 min ahead admitted (and cached)',
        user => 'user_early';

    nginx_reload(http => conf(%PHASE_A, issuer => $ISS2, leeway => '0s'));

    invalid bearer(tok(iss => $ISS2, nbf => $nbf, sub => 'user_early2')),
        'leeway 0s: a fresh token with nbf ahead', 'token_not_yet_valid';

    # The token cache's entries are tied to the leeway too, and a cache
    # hit checks nbf again: the same token, cached under leeway 10min, is
    # refused like a fresh one.
    invalid bearer($early), 'leeway 0s: the cached token with nbf ahead',
        'token_not_yet_valid';
}


# ============================================================================
# Phase C: JWKS only, RS256 only, leeway 0s

nginx_reload(http => conf(keys => 'tenant_jwks_file %%JWKS%%;', algorithms => 'RS256',
                          leeway => '0s'));

invalid bearer(tok(key => 'other')),
    'JWKS only: kid rsa-other is not in the set', 'unknown_key';
%DEFAULTS = (org => $ORG);

admitted bearer(tok(kid => 'rsa-1')), 'RS256 only: RS256 token (kid rsa-1)';
invalid bearer(tok(key => 'ec')), 'RS256 only: ES256 token, ec-1 in the JWKS',
    'algorithm_not_allowed';
invalid bearer($cached_ec), 'RS256 only: the ES256 token cached in phase A',
    'algorithm_not_allowed';
invalid bearer(tok(kid => undef)), 'JWKS only: RS256 without kid', 'unknown_key';

{
    # A token cached while valid is refused once it expires (leeway 0s).
    my $exp = int(time) + 2;
    my $t = tok(exp => $exp, sub => 'user_short');
    admitted bearer($t), 'short-lived token: first use', user => 'user_short';
    admitted bearer($t), 'short-lived token: again, from the cache', user => 'user_short';
    sleep 0.05 while time < $exp + 1.1;
    invalid bearer($t), 'short-lived token after its exp', 'token_expired';
    invalid get(Cookie => "__session=$t"), 'short-lived token after its exp, as a cookie',
        'token_expired';
}


# ============================================================================
# Phase D: one PEM RSA key, no kid: it verifies tokens with any kid

nginx_reload(http => conf(keys => 'tenant_jwt_key %%RSA_PUB%%;'));

admitted bearer(tok(kid => undef)), 'single PEM key: no kid';
admitted bearer(tok(kid => 'ins_2abcDEF')), 'single PEM key: a Clerk kid';
invalid bearer(tok(key => 'other', kid => undef)),
    'single PEM key: signed by another key, no kid', 'bad_signature';
invalid bearer(tok(key => 'other')),
    'single PEM key: signed by another key, kid rsa-other (a rotated key)',
    'unknown_key';
invalid bearer(tok(key => 'ec', kid => undef)),
    'single PEM RSA key: ES256 token', 'unknown_key';


# ============================================================================
# Phase E: several PEM keys (tenant_jwt_key may repeat), none with a kid

nginx_reload(http => conf(keys => join "\n", map { "tenant_jwt_key $keys->{$_};" }
                                              qw(rsa_pub ec_pub other_pub)));

admitted bearer(tok(kid => undef)), 'three PEM keys: RS256 by the first, no kid';
# Every kid-less key of the token's type is tried (an RSA and an EC key,
# or an old and a new key during a rotation), also for Clerk tokens, whose
# kid names none of them.
admitted bearer(tok(key => 'ec', kid => undef)), 'three PEM keys: ES256, no kid';
admitted bearer(tok(key => 'other', kid => undef)),
    'three PEM keys: RS256 by the third, no kid';
admitted bearer(tok(kid => 'ins_2abcDEF')), 'three PEM keys: RS256 by the first, a Clerk kid';

done_testing();
