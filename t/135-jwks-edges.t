#!/usr/bin/perl
# JWKS from a URL, the edges t/130 leaves out (docs/coverage-gaps.md rows
# C-21, C-22, C-47, C-50, D-1, D-2, D-20, D-22, D-32, D-33, D-34, D-39):
#
#   metrics     before the first fetch: 0 keys, age -1; again after a
#               reload to another URI (the zone is reset)
#   subrequests log_subrequest on logs the fetch, the gateway counts its
#               request once; nginx runs no access phase in subrequests,
#               so an SSI include of a gateway location is not gated (the
#               module's subrequest checks in the JWKS code are never
#               reached)
#   refusals    an expired token and a bad signature with a fetched kid:
#               401 at once, no fetch
#   rotation    a document of the same length (other crc32), and one of the
#               same length and the same crc32: both replace the keys
#   failures    an empty 200, a 70 KB document (over the module's 64k,
#               under subrequest_output_buffer_size 128k): keys kept; a
#               document over subrequest_output_buffer_size: refused, and
#               the request that started the refresh is still answered; a
#               second failure within the interval is not logged again
#   too many    a reload that adds a tenant_jwt_key next to a fetched
#               document of 16 keys: one [alert] in the worker, the static
#               key still works; a reload without it uses the 16 again
#   reloads     another tenant_jwks_request URI drops the old keys and
#               fetches from the new one; the same URI with its location
#               proxied elsewhere keeps the old keys until the next fetch;
#               a fetch from the old URI still in flight at the reload is
#               not stored (its waiting request: 503 keys_unavailable)
#   shutdown    worker_shutdown_timeout ends a request waiting on a slow
#               fetch: the claim is given back (the next request fetches
#               at once, not 30 s later) and the fetch is not counted as
#               failed
#
# One worker (the [alert] is per worker), ttl=60s (no background refresh,
# but in one phase), interval=1s.  The JWKS servers are
# t/lib/JwksServer.pm.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use JwksServer;
use Test::More;
use Compress::Zlib qw(crc32);
use Crypt::PK::RSA ();
use JSON::XS       ();
use Time::HiRes    qw(time sleep);

my $JSON     = JSON::XS->new->utf8->canonical;
my $INTERVAL = 1;           # seconds, tenant_jwks_request interval=
my $SIGNING_KEY = 'a1b2c3d4e5f60718' x 4;

pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active');
my $ORG  = $T->{clerk_organization_id};


# --- JWKs and the JWKS servers -----------------------------------------------

# The public JWK of a harness key ('rsa', 'other') under a kid.
sub jwk {
    my ($name, $kid) = @_;
    my $pk = Crypt::PK::RSA->new($keys->{"${name}_pub"})->export_key_jwk('public', 1);
    return { %$pk, use => 'sig', alg => 'RS256', kid => $kid };
}

my $J1 = JwksServer->new;           # the first issuer: rsa keys
my $J2 = JwksServer->new;           # another issuer: rsa-other
$J1->set_jwks(jwk(rsa => 'rsa-aaaaaaaa'));
$J2->set_jwks(jwk(other => 'rsa-other'));

# A kid of the length of $kid ("rsa-" and random letters) whose document
# (jwk 'rsa') has the crc32 of $doc, which is as long: 4 of its bytes are
# solved for (crc32 is affine in the bytes at fixed positions), the rest
# drawn until those 4 are letters or digits too.
sub crc_twin {
    my ($doc, $kid) = @_;

    my $n = length $doc;
    my $tmpl = JwksServer->doc(jwk(rsa => 'X' x length $kid));
    die "crc_twin: lengths differ\n" unless length $tmpl == $n;
    my $at = index($tmpl, 'X' x length $kid) + length($kid) - 4;

    # what flipping bit $i of those 4 bytes does to the crc32
    my $zero = crc32("\0" x $n);
    my %pivot;                      # highest bit => [crc effect, bits]
    for my $i (0 .. 31) {
        my $d = "\0" x $n;
        substr($d, $at + int($i / 8), 1) = chr(1 << ($i % 8));
        my ($v, $c) = (crc32($d) ^ $zero, 1 << $i);
        for my $b (reverse 0 .. 31) {
            next unless $v & (1 << $b);
            if (!$pivot{$b}) { $pivot{$b} = [$v, $c]; last }
            $v ^= $pivot{$b}[0];
            $c ^= $pivot{$b}[1];
        }
    }
    die "crc_twin: singular\n" unless keys %pivot == 32;

    my $want = crc32($doc);
    my @abc = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
    for (1 .. 100_000) {
        my $try = 'rsa-' . join '', map { $abc[rand @abc] } 1 .. length($kid) - 8;
        $try .= 'AAAA';
        my $d = JwksServer->doc(jwk(rsa => $try));
        my ($t, $flip) = (crc32($d) ^ $want, 0);
        for my $b (reverse 0 .. 31) {
            next unless $t & (1 << $b);
            $t ^= $pivot{$b}[0];
            $flip ^= $pivot{$b}[1];
        }
        my $tail = join '', map { chr(ord(substr $try, -4 + $_, 1) ^ (($flip >> 8 * $_) & 255)) }
                            0 .. 3;
        next unless $tail =~ /^[A-Za-z0-9]{4}\z/;
        substr($try, -4) = $tail;
        $d = JwksServer->doc(jwk(rsa => $try));
        return ($try, $d) if crc32($d) == $want && $d ne $doc;
    }
    die "crc_twin: none found\n";
}


# An upstream that answers after 0.3 s (a JWKS fetch started with the
# request ends first).
my $SLOW = echo_start(handler => sub {
    my ($req) = @_;
    sleep 0.3;
    return (200, ['Content-Type' => 'application/json'],
            $JSON->encode({ uri => $req->{uri}, headers => $req->{headers} }));
});


# --- configuration --------------------------------------------------------------

# %o: uri (tenant_jwks_request's, /_jwks), first / second (the servers
# /_jwks and /_jwks2 proxy to), interval, keys (static key directives),
# buffer (their subrequest_output_buffer_size, 128k), ttl (60).
sub conf {
    my (%o) = @_;
    my $uri      = $o{uri} // '/_jwks';
    my $p1       = ($o{first} // $J1)->port;
    my $p2       = ($o{second} // $J2)->port;
    my $interval = $o{interval} // $INTERVAL;
    my $static   = $o{keys} // '';
    my $buffer   = $o{buffer} // '128k';
    my $ttl      = $o{ttl} // 60;
    # without it the body's length is unknown until it ends
    my $length   = $o{no_length} ? 'proxy_hide_header Content-Length;' : '';
    my $jwks_loc = sub {
        my ($loc, $port) = @_;
        return <<EOF;
        location = $loc {
            internal;
            proxy_pass http://127.0.0.1:$port/v1/jwks;
            proxy_read_timeout 8s;
            subrequest_output_buffer_size $buffer;
            $length
        }
EOF
    };
    my $locs = $jwks_loc->('/_jwks', $p1) . $jwks_loc->('/_jwks2', $p2);

    return <<EOF;
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_request $uri ttl=${ttl}s interval=${interval}s;
    $static
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_signing_key  $SIGNING_KEY;

    log_format uris '\$uri \$status';

    server {
        listen 127.0.0.1:%%PORT%%;
        log_subrequest on;
        access_log %%DIR%%/uris.log uris;

$locs
        location /api/ {
            tenant_gateway on;
            proxy_pass http://%%ECHO%%;
        }

        location /slow/ {
            tenant_gateway on;
            proxy_pass http://$SLOW->{addr};
        }

        location = /page {
            ssi on;
            default_type text/html;
            return 200 '<!--# include virtual="/api/orders" -->';
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF
}


# --- helpers ----------------------------------------------------------------------

my $SEQ = 0;

# A token nobody used before: key 'rsa' unless given, kid rsa-aaaaaaaa.
sub tok { return mint_token(org => $ORG, sub => 'user_' . ++$SEQ, kid => 'rsa-aaaaaaaa', @_) }

sub get {
    my ($token, $path) = @_;
    return http(path => $path // '/api/orders', timeout => 8,
                headers => [Authorization => "Bearer $token"]);
}

sub brief {
    my ($r) = @_;
    my $j = $r->{json} || {};
    return sprintf '%s %s/%s (%.2fs)%s', $r->{status}, $j->{code} // '', $j->{reason} // '',
        $r->{elapsed} // 0, $r->{error} ? " $r->{error}" : '';
}

sub admitted {
    my ($r, $name) = @_;
    subtest "$name: admitted" => sub {
        is $r->{status}, 200, 'status 200' or diag brief($r);
        is_deeply $r->{json}{headers}{'x-tenant-id'}, [$T->{id}], 'upstream saw the tenant';
    };
}

sub refused {
    my ($r, $name, $status, $code, $reason) = @_;
    subtest "$name: $status $code" . (defined $reason ? "/$reason" : '') => sub {
        is $r->{status}, $status, "status $status" or diag brief($r);
        my $j = $r->{json} || {};
        is $j->{code}, $code, 'code';
        is $j->{reason}, $reason, 'reason';
    };
}

sub unknown_kid { refused($_[0], $_[1], 401, 'invalid_token', 'unknown_key') }

# /metrics as { name{labels} => value }, plus admitted (summed over tiers).
sub metrics {
    my %m = map { /^(tenant_\S+) (-?\d+)$/ ? ($1 => $2) : () }
            split /\n/, http(path => '/metrics')->{body} // '';
    $m{admitted} = 0;
    $m{admitted} += $m{$_} for grep { /^tenant_requests_total\{outcome="admitted"/ } keys %m;
    $m{ok}  = $m{'tenant_jwks_fetches_total{result="ok"}'};
    $m{err} = $m{'tenant_jwks_fetches_total{result="error"}'};
    return \%m;
}

# The module's own JWKS failure lines (not nginx's upstream errors).
sub jwks_errors {
    my ($mark) = @_;
    return grep { /\[error\].*tenant: JWKS from / } split /\n/, error_log(since => $mark);
}

sub sleep_until { my ($t) = @_; my $d = $t - time; sleep $d if $d > 0 }

# Past the interval since the last fetch of either server (a fetch's time
# is when the server got it, after the claim).
sub past_interval {
    my ($t1, $t2) = ($J1->last_fetch_t, $J2->last_fetch_t);
    sleep_until(($t1 > $t2 ? $t1 : $t2) + $INTERVAL + 0.1);
}

sub fetched { return $J1->nfetch + $J2->nfetch }

sub uris_log { my $p = "$_[0]{dir}/uris.log"; open my $fh, '<', $p or return ''; local $/; <$fh> }


# ============================================================================
# --- before the first fetch, the first fetch, subrequests ---

my $ngx = nginx_start(http => conf());

subtest 'metrics before the first fetch: no keys, age -1 (D-22)' => sub {
    my $m = metrics();
    is $m->{tenant_jwks_keys}, 0, 'tenant_jwks_keys 0';
    is $m->{tenant_jwks_age_seconds}, -1, 'tenant_jwks_age_seconds -1';
    is $m->{ok} . '/' . $m->{err}, '0/0', 'no fetch counted';
    is fetched(), 0, 'no fetch made';
};

admitted get(tok()), 'first request: the fetch, then the token';
is $J1->nfetch, 1, 'first request: one fetch';

subtest 'log_subrequest on: the fetch is logged, the request counted once (D-33)' => sub {
    my $m = metrics();
    is $m->{admitted}, 1, 'tenant_requests_total: one admitted request';
    is $m->{tenant_jwks_keys}, 1, 'tenant_jwks_keys 1';
    my ($log) = retry_until(3, sub { uris_log($ngx) }, sub { $_[0] =~ m{^/api/orders 200$}m });
    like $log, qr{^/_jwks 200$}m, 'access log: the subrequest /_jwks';
    like $log, qr{^/api/orders 200$}m, 'access log: the request';
};

subtest 'an SSI include of a gateway location is not gated: no access phase in subrequests (D-32)' => sub {
    my $r = http(path => '/page');
    is $r->{status}, 200, 'the page: 200' or diag brief($r);
    my $inc = eval { $JSON->decode($r->{body}) } || {};
    is $inc->{uri}, '/api/orders', 'the include reached the upstream without a token';
    ok !exists $inc->{headers}{'x-tenant-id'}, '... and without a tenant';
};


# --- tokens refused for other reasons than the kid (D-1), rotation to a
# document of the same length (D-39) ---

my $DOC_A = JwksServer->doc(jwk(rsa => 'rsa-aaaaaaaa'));
my $TWIN;                   # the kid of the same-crc document, in use after
{
    my $doc_b = JwksServer->doc(jwk(rsa => 'rsa-bbbbbbbb'));
    is length $doc_b, length $DOC_A, 'rotation: same length';
    isnt crc32($doc_b), crc32($DOC_A), '... other crc32';
    $J1->set_doc($doc_b);
    past_interval();
    my $n = $J1->nfetch;

    # past the interval, with another document to fetch: still no fetch
    refused get(tok(iat => int(time) - 900, exp => int(time) - 600)),
        'expired, kid of the fetched JWKS', 401, 'invalid_token', 'token_expired';
    refused get(tok(key => 'other')),
        'signed by another key, kid of the fetched JWKS', 401, 'invalid_token', 'bad_signature';
    is $J1->nfetch - $n, 0, 'expired and bad signature: no fetch (past the interval)';

    admitted get(tok(kid => 'rsa-bbbbbbbb')), 'same length, other crc32: the new kid';
    is $J1->nfetch - $n, 1, '... after one fetch';
    unknown_kid get(tok()), '... the old kid is gone';

    ($TWIN, my $doc_c) = crc_twin($doc_b, 'rsa-bbbbbbbb');
    is crc32($doc_c), crc32($doc_b), "same length, same crc32 (kid $TWIN)";
    my $mark = log_mark();
    $J1->set_doc($doc_c);
    past_interval();
    admitted get(tok(kid => $TWIN)), 'same length and crc32: the new kid (bytes compared)';
    like error_log(since => $mark), qr/\[notice\].*tenant: JWKS from "\/_jwks": 1 keys/,
        '... logged as a new document';
    unknown_kid get(tok(kid => 'rsa-bbbbbbbb')), '... the old kid is gone';
}


# --- failures keep the keys: empty, over 64k (D-34, C-47) ---

# The document $doc is fetched for an unknown kid, refused with $why.
sub bad_fetch {
    my ($name, $doc, $why) = @_;
    subtest "$name: refused, the keys kept" => sub {
        $J1->set_doc($doc);
        past_interval();
        my $mark = log_mark();
        my ($n, $m) = ($J1->nfetch, metrics());
        unknown_kid get(tok(kid => 'not-there')), 'the unknown kid';
        is $J1->nfetch - $n, 1, 'one fetch';
        is metrics()->{err} - $m->{err}, 1, 'counted as failed';
        my @e = jwks_errors($mark);
        is scalar @e, 1, 'one [error] line' or diag error_log(since => $mark);
        like $e[0] // '', $why, '... saying why';
        admitted get(tok(kid => $TWIN)), 'the last good keys still in use';
    };
}

bad_fetch('an empty 200 (Content-Length: 0)', '', qr/empty response/);
bad_fetch('a 70 KB document', $JSON->encode({ keys => [jwk(rsa => 'rsa-aaaaaaaa')],
                                              padding => 'x' x 70_000 }),
          qr/larger than 64k/);

# Over subrequest_output_buffer_size: nginx's postpone filter would fail
# the subrequest's output, and ngx_http_output_filter() then set c->error
# on the connection that the subrequest shares with the client (the
# request that started the refresh got no answer).  The module's body
# filter swallows such a body before that.  Past the ttl (1s here) a
# verified request starts a background refresh and goes on to its
# upstream (0.3 s): the refresh fails first, the request is answered.
# Both ways the body can outgrow the buffer: a Content-Length over it
# (known at the first buffer), and a length known only at the end (the
# body grows past it).
for my $v (['Content-Length', 0], ['no length', 1]) {
    my ($how, $no_length) = @$v;
    nginx_reload(http => conf(buffer => '4k', ttl => 1, no_length => $no_length));
    $J1->set_doc(JwksServer->doc(jwk(rsa => 'rsa-aaaaaaaa')) . (' ' x 10_000));
    past_interval();
    my ($mark, $n) = (log_mark(), $J1->nfetch);
    my $r = get(tok(kid => $TWIN), '/slow/orders');
    is $J1->nfetch - $n, 1, "over subrequest_output_buffer_size ($how): a background refresh";
    my ($e) = retry_until(2, sub { [jwks_errors($mark)] }, sub { @{ $_[0] } });
    like $e->[0] // '', qr/larger than subrequest_output_buffer_size/,
        '... refused, an [error] line saying why' or diag error_log(since => $mark);
    admitted $r, "over subrequest_output_buffer_size ($how): the request that started the refresh";
    admitted get(tok(kid => $TWIN)), '... the last good keys stay in use';
    $J1->set_jwks(jwk(rsa => 'rsa-aaaaaaaa'));
}
nginx_reload(http => conf());
$J1->set_jwks(jwk(rsa => 'rsa-aaaaaaaa'));


# --- a second failure within the interval is not logged (D-20) ---
#
# A failure after 0.9 s (logged), a fetch 1.1 s after the first that fails
# at once, about 0.2 s after the first was logged: counted, not logged.

{
    $J1->set_mode('status500');
    $J1->set_delay(0.9);
    past_interval();
    my $mark = log_mark();
    my ($n, $m) = ($J1->nfetch, metrics());
    unknown_kid get(tok(kid => 'd20-first')), 'failing endpoint, slow: unknown kid';
    $J1->set_delay(0);
    sleep_until($J1->last_fetch_t + $INTERVAL + 0.1);
    unknown_kid get(tok(kid => 'd20-second')), 'failing endpoint, fast, 1.1 s later: unknown kid';
    is $J1->nfetch - $n, 2, 'two fetches';
    is metrics()->{err} - $m->{err}, 2, 'both counted as failed';
    my @e = jwks_errors($mark);
    is scalar @e, 1, 'one [error] line for both (the second within the interval of the first)'
        or diag join "\n", @e;
    like $e[0] // '', qr/status 500/, '... the first: status 500';
    $J1->set_mode('ok');
}


# --- static keys and fetched ones over TENANT_JWKS_MAX_KEYS (C-50) ---

error_log_allow(qr/\[alert\].*tenant: JWKS of generation \d+ not usable: too many keys/);
{
    $J1->set_jwks(map { jwk(rsa => sprintf 'many-%02d', $_) } 1 .. 16);
    past_interval();
    admitted get(tok(kid => 'many-16')), '16 fetched keys';

    my $mark = log_mark();
    nginx_reload(http => conf(keys => 'tenant_jwt_key %%EC_PUB%%;'));
    admitted get(tok(key => 'ec', kid => undef)), 'reload with a tenant_jwt_key: the static key';
    unknown_kid get(tok(kid => 'many-01')), '... a fetched kid: unknown (17 keys are too many)';
    admitted get(tok(key => 'ec', kid => undef)), '... the static key again';
    my @alerts = grep { /\[alert\]/ } split /\n/, error_log(since => $mark);
    is scalar @alerts, 1, 'one [alert] in the worker' or diag join "\n", @alerts;
    like $alerts[0] // '', qr/JWKS of generation \d+ not usable: too many keys/, '... saying why';

    nginx_reload(http => conf());
    admitted get(tok(kid => 'many-01')), 'reload without it: the 16 fetched keys again';
}


# --- reloads: another URI, the same URI proxied elsewhere (D-2) ---

{
    my ($n1, $n2) = ($J1->nfetch, $J2->nfetch);
    nginx_reload(http => conf(uri => '/_jwks2'));
    my $m = metrics();
    is $m->{tenant_jwks_keys} . '/' . $m->{tenant_jwks_age_seconds}, '0/-1',
        'reload to another URI: the document is dropped (0 keys, age -1)';
    unknown_kid get(tok(kid => 'many-01')), 'another URI: a kid of the old endpoint';
    is $J2->nfetch - $n2, 1, '... after a fetch from the new endpoint';
    admitted get(tok(key => 'other', kid => 'rsa-other')), 'another URI: its kid rsa-other';
    is $J1->nfetch - $n1, 0, 'the old endpoint not asked';
}

{
    $J1->set_jwks(jwk(rsa => 'rsa-aaaaaaaa'));
    my ($n1, $n2) = ($J1->nfetch, $J2->nfetch);
    nginx_reload(http => conf(uri => '/_jwks2', second => $J1));
    admitted get(tok(key => 'other', kid => 'rsa-other')),
        'same URI, its location proxied to another issuer: the old issuer\'s key still in use';
    is fetched() - $n1 - $n2, 0, '... without a fetch';
    past_interval();
    admitted get(tok()), '... until a fetch (unknown kid): the new issuer\'s kid';
    is $J1->nfetch - $n1, 1, '... fetched from the new issuer';
    unknown_kid get(tok(key => 'other', kid => 'rsa-other')), '... then the old issuer\'s kid is gone';
}


# --- a fetch from the old URI in flight at the reload ---
#
# The reload resets the zone and drops the old worker's claim; when the
# old worker's fetch ends, its document is refused for its URI (it used
# to be stored, and the new workers took the old issuer's keys as the
# new URI's).  The request that waited on it has no keys left in the
# reset zone: 503 keys_unavailable, to be retried (by a new worker).

{
    # now: /_jwks2 proxied to J1 (rsa-aaaaaaaa); J1 answers in 1.2 s
    $J1->set_delay(1.2);
    past_interval();
    my $n1 = $J1->nfetch;
    my $a = async_http(path => '/api/orders', timeout => 8,
                       headers => [Authorization => 'Bearer ' . tok(kid => 'in-flight')]);
    my (undef, $secs) = retry_until(3, sub { $J1->nfetch }, sub { $_[0] > $n1 });
    is $J1->nfetch - $n1, 1, 'in flight: the old worker fetches from the old URI';

    my $n2 = $J2->nfetch;
    nginx_reload(http => conf(uri => '/_jwks', first => $J2));
    refused(wait_http($a), 'in flight: the request that waited on the old URI\'s fetch',
            503, 'keys_unavailable', undef);
    $J1->set_delay(0);

    unknown_kid get(tok()), 'after the reload to J2\'s URI: the old issuer\'s kid';
    admitted get(tok(key => 'other', kid => 'rsa-other')), 'after the reload: the new issuer\'s kid';
    ok $J2->nfetch - $n2 >= 1, '... fetched from the new URI';
    unknown_kid get(tok()), '... then the old issuer\'s kid is refused';
}


# --- a request waiting on a fetch ends at worker_shutdown_timeout (C-21, C-22) ---
#
# The old worker's shutdown timer terminates the request (it never reads
# the client: "Read first" 3 in docs/coverage-gaps.md): the pool cleanup
# gives the claim back with the fetch not done.  The subrequest never
# finishes, so no failure is recorded.

nginx_reload(http => conf(uri => '/_jwks', first => $J2), main => 'worker_shutdown_timeout 1s;');
{
    $J2->set_delay(5);
    past_interval();
    my ($old) = nginx_workers();
    my ($n, $m, $mark) = ($J2->nfetch, metrics(), log_mark());
    my $a = async_http(path => '/api/orders', timeout => 10,
                       headers => [Authorization => 'Bearer ' . tok(kid => 'rsa-late')]);
    retry_until(3, sub { $J2->nfetch }, sub { $_[0] > $n });
    is $J2->nfetch - $n, 1, 'shutdown: the request waits on a slow fetch';
    $J2->set_jwks(jwk(other => 'rsa-other'), jwk(rsa => 'rsa-late'));
    $J2->set_delay(0);

    my $t0 = time;
    nginx_reload();
    my $r = wait_http($a);
    is $r->{status}, 0, 'shutdown: the waiting request is closed without an answer'
        or diag brief($r);
    my $took = time - $t0;
    ok $took > 0.5 && $took < 5, sprintf('... %.2f s after the reload (worker_shutdown_timeout 1s)', $took);
    my (undef, $gone) = retry_until(5, sub { alive($old) }, sub { !$_[0] });
    # alive(): a zombie the master has not reaped yet has exited too
    ok !alive($old), sprintf('... the old worker exited (%.2f s)', $gone);

    sleep_until($J2->last_fetch_t + $INTERVAL + 0.2);
    my $r2 = get(tok(kid => 'rsa-late'));
    admitted $r2, 'shutdown: the next unknown kid fetches at once (the claim was given back)';
    ok(($r2->{elapsed} // 99) < 3, sprintf('... in %.2f s, not after the 30 s claim', $r2->{elapsed} // -1));
    is $J2->nfetch - $n, 2, '... one more fetch';
    is metrics()->{err} - $m->{err}, 0, 'the abandoned fetch is not counted as failed';
    is scalar(jwks_errors($mark)), 0, '... nor logged as a JWKS failure';
}

done_testing();
