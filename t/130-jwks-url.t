#!/usr/bin/perl
# JWKS from a URL: tenant_jwks_request uri [ttl=time] [interval=time].
#
# The module fetches the JWKS through a subrequest to an internal location
# (proxy_pass to the identity provider), keeps the raw document in a
# shared-memory zone with a generation counter (each worker re-parses when
# it changes; the zone survives a reload while the uri stays the same),
# and:
#
#   first use   no JWKS yet: the first request that needs keys fetches and
#               waits, other requests (in any worker) wait for that fetch;
#   ttl         an older document is refreshed in the background (the
#               request that notices is verified with the current keys);
#   unknown kid fetches and waits, at most once per interval across all
#               workers, else 401 invalid_token (unknown_key) at once;
#   failures    (connection refused, status != 200, malformed JSON, no
#               usable key, too big, timeout) keep the last good keys, log
#               an [error] line with "JWKS" at most once per interval;
#   no keys     503 keys_unavailable with Retry-After, upstream not reached;
#   removal     a kid gone from a refreshed JWKS is refused, also for a
#               token in the token cache (the cache is tied to the JWKS);
#   subrequest  GET, none of the client's headers (Authorization, Cookie,
#               Content-Length of a POST, ...), the location's own
#               proxy_set_header Authorization.
#
# The JWKS server is t/lib/JwksServer.pm (an echo_start handler driven by
# files: mode ok, status500, malformed, nokeys, slow, delay, and this
# file's enc and huge; the document "ok" serves); it records one JSON line
# per request (time, method, uri, the Authorization / Cookie /
# Content-Length headers it got, mode), which counts the fetches.  The
# upstream is an echo of our own that counts its requests too.
#
# Phases (ttl=3s interval=1s, two workers, reuseport):
#
#   1   first request (a POST with a body and a cookie), 20 more from
#       both workers, rotation (new kid), reload, unknown-kid flood,
#       interval and ttl measured to the millisecond, not rounded to
#       whole seconds (a fetch at S-0.2 and an unknown kid at S+0.1: one
#       fetch; a document 2.3 s old with ttl=3s: no refresh), removal
#       (also of a cached token)
#   2   failures with the last good keys: 500 (log rate), malformed JSON,
#       {"keys":[]}, only "use":"enc", too big, slow (background: requests
#       not delayed), connection refused
#   3   fresh nginx without keys: endpoint down -> 503 keys_unavailable;
#       slow endpoint -> 503 after the timeout, no hang; recovery with
#       concurrent first-use requests (one fetch); static keys next to
#       fetched ones (reload keeps the fetched ones), static keys with the
#       endpoint down
#   4   configuration: bad ttl / interval / uri / parameter, a gateway
#       with only tenant_jwks_request passes nginx -t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use JwksServer;
use Test::More;
use Crypt::PK::RSA ();
use Fcntl          qw(O_WRONLY O_APPEND O_CREAT);
use File::Temp     ();
use JSON::XS       ();
use Time::HiRes    qw(time sleep);

my $JSON = JSON::XS->new->utf8->canonical;

my $TTL      = 3;         # seconds, tenant_jwks_request ttl=
my $INTERVAL = 1;         # seconds, interval=
my $TIMEOUT  = 1;         # proxy_connect_timeout / proxy_read_timeout
my $SIGNING_KEY = 'a1b2c3d4e5f60718' x 4;
my $SK = 'sk_test_jwks';

pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active');
my $ORG  = $T->{clerk_organization_id};

my $TMP = File::Temp::tempdir('t130-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $TMP;


# --- JWKs -------------------------------------------------------------------

sub jwk {
    my ($name, %extra) = @_;
    my $pk = Crypt::PK::RSA->new($keys->{"${name}_pub"})->export_key_jwk('public', 1);
    return { %$pk, use => 'sig', alg => 'RS256', %extra };
}

my %JWK = (
    rsa   => jwk('rsa',   kid => 'rsa-1'),
    other => jwk('other', kid => 'rsa-other'),
);

sub jwks_doc { return $JSON->encode({ keys => [@_] }) }


# --- the JWKS server ----------------------------------------------------------
# (t/lib/JwksServer.pm, with two modes of this file's own)

my $J = JwksServer->new(modes => {
    enc  => sub {
        return (200, ['Content-Type' => 'application/json'],
                jwks_doc({ %{ $JWK{rsa} }, use => 'enc', alg => 'RSA-OAEP' }));
    },
    # rsa-1 and 300 more keys: about 130 KB, over the 64k buffer
    huge => sub {
        my @junk = map { { %{ $JWK{other} }, kid => "junk-$_" } } 1 .. 300;
        return (200, ['Content-Type' => 'application/json'], jwks_doc($JWK{rsa}, @junk));
    },
});

sub set_mode { $J->set_mode(@_) }
sub set_jwks { $J->set_jwks(@_) }

set_mode('ok');
set_jwks($JWK{rsa});

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar(<$fh>) // '';
}

# The fetches so far, as hashes.
sub fetches      { return $J->fetches }
sub nfetch       { return $J->nfetch }
sub last_fetch_t { return $J->last_fetch_t }


# --- the upstream -------------------------------------------------------------

my $UP_HITS = "$TMP/upstream";
my $upstream = echo_start(handler => sub {
    my ($req) = @_;
    sysopen my $fh, $UP_HITS, O_WRONLY | O_APPEND | O_CREAT or die "$UP_HITS: $!";
    syswrite $fh, "$req->{uri}\n";
    close $fh;
    return (200, ['Content-Type' => 'application/json'],
            $JSON->encode({ map { $_ => $req->{$_} } qw(method uri version headers body) }));
});

sub upstream_hits { my @l = split /\n/, slurp($UP_HITS); return scalar @l }


# --- configuration ------------------------------------------------------------

# %o: port (of the JWKS server), jwks (the tenant_jwks_request line),
# keys (static key directives).
sub conf {
    my (%o) = @_;
    my $port = $o{port} // $J->port;
    my $line = $o{jwks} // "tenant_jwks_request /_jwks ttl=${TTL}s interval=${INTERVAL}s;";
    my $static = $o{keys} // '';
    my $server = $o{server_gateway} ? 'tenant_gateway on;' : '';

    return <<EOF;
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_token_cache  zone=tokens:1m;
    $line
    $static
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        add_header X-Worker \$pid always;
        $server

        location = /_jwks {
            internal;
            proxy_pass http://127.0.0.1:$port/v1/jwks;
            proxy_set_header Authorization "Bearer $SK";
            proxy_connect_timeout ${TIMEOUT}s;
            proxy_read_timeout ${TIMEOUT}s;
            subrequest_output_buffer_size 64k;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass http://$upstream->{addr};
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF
}


# --- helpers --------------------------------------------------------------------

my $SEQ = 0;

# A token nobody used before (not in the token cache): key 'rsa' (kid
# rsa-1) unless given.
sub tok { return mint_token(org => $ORG, sub => 'user_' . ++$SEQ, @_) }

sub get {
    my ($token, @h) = @_;
    return http(path => '/api/orders', timeout => 8,
                headers => [Authorization => "Bearer $token", @h]);
}

sub worker { my ($r) = @_; return ($r->{headers}{'x-worker'} || [])->[0] // '?' }
sub code   { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub brief  {
    my ($r) = @_;
    return sprintf '%s %s%s (%.2fs, worker %s)%s', $r->{status}, code($r),
        ($r->{json} && $r->{json}{reason} ? "/$r->{json}{reason}" : ''),
        $r->{elapsed} // 0, worker($r), $r->{error} ? " $r->{error}" : '';
}

my $up_seen = 0;

sub admitted {
    my ($r, $name) = @_;
    subtest "$name: admitted" => sub {
        is $r->{status}, 200, 'status 200' or diag brief($r) . " $r->{body}";
        is upstream_hits() - $up_seen, 1, 'upstream reached, once';
        is_deeply $r->{json}{headers}{'x-tenant-id'}, [$T->{id}], 'upstream saw the tenant';
    };
    $up_seen = upstream_hits();
}

sub refused {
    my ($r, $name, $status, $code, $reason) = @_;
    subtest "$name: $status $code" . ($reason ? " ($reason)" : '') => sub {
        is $r->{status}, $status, "status $status" or diag brief($r) . " $r->{body}";
        is $r->{headers}{'content-type'}[0], 'application/problem+json', 'problem+json';
        my $j = $r->{json} || {};
        is $j->{code}, $code, 'code';
        is $j->{type}, "https://capliquify.com/problems/$code", 'type';
        is $j->{status}, $status, 'status member';
        is $j->{reason}, $reason, 'reason' if defined $reason;
        if ($status == 503) {
            like $r->{headers}{'retry-after'}[0] // '', qr/^[1-9][0-9]*$/,
                'Retry-After: a number of seconds';
        }
        is upstream_hits(), $up_seen, 'upstream not reached';
    };
    $up_seen = upstream_hits();
}

sub unknown_kid { refused($_[0], $_[1], 401, 'invalid_token', 'unknown_key') }

# Repeats $try every $pause s until it returns true or $secs pass;
# returns the seconds it took (undef: never).
sub poll {
    my ($secs, $try, $pause) = @_;
    my $start = time;
    while (1) {
        return time - $start if $try->();
        return undef if time - $start > $secs;
        sleep $pause // 0.05;
    }
}

sub sleep_until { my ($t) = @_; my $d = $t - time; sleep $d if $d > 0 }

# nginx's own upstream errors (which also name the subrequest /_jwks and
# the upstream's /v1/jwks, in lowercase) are not the module's line.
my $NGINX_UPSTREAM = qr/connect\(\) failed|upstream timed out|too big subrequest response|upstream buffer is too small|upstream prematurely closed|no live upstreams|upstream sent/;

sub jwks_errors {
    my ($mark) = @_;
    return grep { /\[error\]/ && /JWKS/ && !/$NGINX_UPSTREAM/ }
           split /\n/, error_log(since => $mark);
}

# A round of requests with fresh rsa-other tokens until $done (or $secs);
# returns { n, bad => [briefs of non-200s], slow => [briefs over $max s],
# max (slowest elapsed) }.
sub traffic {
    my (%o) = @_;
    my $max = $o{max} // 0.5;
    my %res = (n => 0, bad => [], slow => [], max => 0);
    my $start = time;
    while (1) {
        my $r = get(tok(key => 'other'));
        $res{n}++;
        push @{ $res{bad} }, brief($r) unless $r->{status} == 200;
        push @{ $res{slow} }, brief($r) if ($r->{elapsed} // 99) > $max;
        $res{max} = $r->{elapsed} if ($r->{elapsed} // 0) > $res{max};
        last if $o{done} && $o{done}->();
        last if time - $start > $o{secs};
        sleep $o{pause} // 0.05;
    }
    $up_seen = upstream_hits();
    return \%res;
}


# ============================================================================
# Phase 1: the happy path

my $ngx = nginx_start(workers => 2, http => conf());
is scalar(nginx_workers()), 2, 'two workers';
is nfetch(), 0, 'no fetch before the first request';

# ---- 1. first request: a POST with a body and a cookie ----------------------

my $cached_rsa;             # admitted, so in the token cache
{
    my $body  = $JSON->encode({ order => 'x' x 1200 });
    $cached_rsa = tok();
    my $r = http(method => 'POST', path => '/api/orders', timeout => 8, body => $body,
                 headers => [Authorization     => "Bearer $cached_rsa",
                             Cookie            => 'theme=dark; sid=client-cookie-secret',
                             'Content-Type'    => 'application/json',
                             'X-Client-Marker' => 'client-only']);
    admitted $r, 'first request (POST, body, cookie): the fetch, then the token';
    ok(($r->{elapsed} // 99) < 2, sprintf('first request: answered in %.2f s (no hang)',
                                         $r->{elapsed} // -1));
    is $r->{json}{method}, 'POST', 'first request: upstream got the POST';
    is $r->{json}{body}, $body, 'first request: upstream got the whole body';

    my @f = fetches();
    is scalar(@f), 1, 'first request: exactly one fetch';
    my $f = $f[0] || {};
    is $f->{method}, 'GET', 'fetch: GET';
    is $f->{uri}, '/v1/jwks', 'fetch: /v1/jwks';
    is_deeply $f->{authorization}, ["Bearer $SK"],
        'fetch: the location\'s Authorization only (not the client\'s token)';
    is $f->{cookie}, undef, 'fetch: no Cookie';
    ok !defined $f->{content_length} || $f->{content_length}[0] eq '0',
        'fetch: no Content-Length of the POST'
        or diag explain $f->{content_length};
    is $f->{body_len}, 0, 'fetch: no body';
    is $f->{marker}, undef, 'fetch: no other client header (X-Client-Marker)';
}

# ---- 2. many more requests, both workers: no more fetches -------------------

{
    my (%workers, @bad);
    for (1 .. 20) {
        my $r = get(tok());
        $workers{ worker($r) }++;
        push @bad, brief($r) unless $r->{status} == 200;
    }
    $up_seen = upstream_hits();
    is_deeply \@bad, [], '20 more requests, fresh tokens: all 200';
    is scalar(keys %workers), 2, '... answered by both workers' or diag explain \%workers;
    is nfetch(), 1, '... still one fetch (the JWKS is shared)';
    admitted get($cached_rsa), 'the first token again (cached)';
}

# ---- 3. rotation: a new kid is fetched without a reload ---------------------

{
    set_jwks($JWK{rsa}, $JWK{other});
    sleep_until(last_fetch_t() + $INTERVAL + 0.1);
    my $n = nfetch();
    my $r = get(tok(key => 'other'));
    admitted $r, 'rotation: kid rsa-other, now in the JWKS';
    is nfetch() - $n, 1, 'rotation: one fetch (unknown kid)';
    admitted get(tok()), 'rotation: kid rsa-1 still admitted';

    # the other worker re-parses the shared JWKS (new generation)
    my (%workers, @bad);
    for (1 .. 12) {
        my $r = get(tok(key => 'other'));
        $workers{ worker($r) }++;
        push @bad, brief($r) unless $r->{status} == 200;
    }
    $up_seen = upstream_hits();
    is_deeply \@bad, [], 'rotation: 12 more rsa-other tokens admitted';
    is scalar(keys %workers), 2, '... by both workers' or diag explain \%workers;
    is nfetch() - $n, 1, '... without another fetch';
}

# ---- 10. reload with the same configuration: the keys stay -------------------

{
    my $n = nfetch();
    my $last = last_fetch_t();
    nginx_reload();
    my %workers;
    my @r = map { get(tok(key => $_ % 2 ? 'other' : 'rsa')) } 1 .. 6;
    $workers{ worker($_) }++ for @r;
    my $stale = time - $last > $TTL;    # then a background refresh is allowed
    is_deeply [map { $_->{status} } @r], [(200) x 6],
        'reload: rsa-1 and rsa-other (fetched before the reload) admitted'
        or diag join "\n", map { brief($_) } @r;
    $up_seen = upstream_hits();
    ok nfetch() - $n <= ($stale ? 1 : 0),
        'reload: no new fetch (the shared zone survived)' . ($stale ? ' (ttl passed: <= 1)' : '')
        or diag nfetch() - $n . ' fetches';
    admitted get($cached_rsa), 'reload: the cached token';
}

# ---- 4. unknown-kid flood: at most one fetch per interval --------------------

{
    my $n = nfetch();
    my $up = upstream_hits();
    my $start = time;
    my @bg = map { async_http(path => '/api/orders', timeout => 8, headers =>
                       [Authorization => 'Bearer ' . tok(kid => sprintf 'bogus-%d-%06d', $_,
                                                         int rand 1e6)]) } 1 .. 20;
    my @r = map { wait_http($_) } @bg;
    my $took = time - $start;
    my @bad = map { brief($_) }
              grep { $_->{status} != 401 || code($_) ne 'invalid_token'
                     || ($_->{json}{reason} // '') ne 'unknown_key' } @r;
    is_deeply \@bad, [], 'flood: 20 random kids at once: all 401 invalid_token (unknown_key)';
    is upstream_hits(), $up, 'flood: upstream not reached';
    my $allowed = 1 + int($took / $INTERVAL);
    ok nfetch() - $n <= $allowed,
        sprintf('flood: %d fetch(es) in %.2f s (at most %d: one per interval)',
                nfetch() - $n, $took, $allowed);
    my @slow = grep { ($_->{elapsed} // 99) > 2 } @r;
    is scalar(@slow), 0, 'flood: every refusal within 2 s';
    unknown_kid get(tok(kid => 'bogus-single')), 'one more random kid';
}

# ---- 4b. the interval and the ttl are not rounded to whole seconds ------------
#
# A fetch late in a second, at S - 0.2 (S a whole second): one more
# unknown kid 0.3 s later (just past S) must not fetch again (interval 1s),
# and a request 2.3 s after the fetch must not refresh (ttl 3s).

# The next whole second S with at least 0.3 s to go before S - 0.2.
sub next_second { my $s = int(time) + 1; $s++ if $s - 0.2 - time < 0.1; return $s }

{
    sleep_until(last_fetch_t() + $INTERVAL + 0.05);
    my $s = next_second();
    sleep_until($s - 0.2);
    my $n = nfetch();
    my $r1 = get(tok(kid => 'bogus-edge-1'));
    sleep_until($s + 0.1);
    my $r2 = get(tok(kid => 'bogus-edge-2'));
    my @t = map { sprintf '%+.3f', $_->{t} - $s } (fetches())[$n .. nfetch() - 1];
    is nfetch() - $n, 1, 'interval: two unknown kids 0.3 s apart (at S-0.2 and S+0.1): '
        . 'one fetch' or diag 'fetches at S' . join ', S', @t;
    is $r1->{status} . $r2->{status}, '401401', 'interval: both refused';
    $up_seen = upstream_hits();
}

{
    sleep_until(last_fetch_t() + $INTERVAL + 0.05);
    my $s = next_second();
    sleep_until($s - 0.2);
    my $n = nfetch();
    get(tok(kid => 'bogus-ttl'));       # the fetch, at S - 0.2
    is nfetch() - $n, 1, 'ttl: an unknown kid fetched at S-0.2';
    my $t0 = last_fetch_t();
    sleep_until($t0 + 2.3);
    $n = nfetch();
    my $r = get(tok());
    is $r->{status}, 200, 'ttl: a known kid 2.3 s later admitted';
    sleep 0.3;
    my @t = map { sprintf '%.3f s after', $_->{t} - $t0 } (fetches())[$n .. nfetch() - 1];
    is nfetch() - $n, 0, 'ttl: the document, 2.3 s old (ttl 3s), is not refreshed'
        or diag 'refreshed: ' . join ', ', @t;
    $up_seen = upstream_hits();
}

# ---- 5. removal: rsa-1 gone after a background refresh ------------------------

{
    set_jwks($JWK{other});
    sleep_until(last_fetch_t() + $TTL + 0.2);
    my $n = nfetch();
    my $r = get(tok(key => 'other'));
    admitted $r, 'removal: past the ttl, a request with a known kid';
    ok(($r->{elapsed} // 99) < 0.5, sprintf('removal: ... not waiting for the refresh (%.2f s)',
                                           $r->{elapsed} // -1));
    my $secs = poll(2, sub { nfetch() > $n });
    ok defined $secs, 'removal: that request started a background refresh';

    # until the refreshed JWKS is in use (in whichever worker answers)
    my $gone = poll(3, sub { get(tok())->{status} == 401 }, 0.1);
    $up_seen = upstream_hits();
    ok defined $gone, sprintf('removal: a fresh rsa-1 token is refused after %.2f s',
                              $gone // -1);

    unknown_kid get(tok()), 'removal: fresh token, kid rsa-1';
    unknown_kid get($cached_rsa), 'removal: the cached rsa-1 token';

    # in both workers: the cached token and rsa-other
    my (%w_cached, %w_other, @bad);
    for (1 .. 12) {
        my $r = get($cached_rsa);
        $w_cached{ worker($r) }++;
        push @bad, 'cached rsa-1: ' . brief($r)
            unless $r->{status} == 401 && ($r->{json}{reason} // '') eq 'unknown_key';
        $r = get(tok(key => 'other'));
        $w_other{ worker($r) }++;
        push @bad, 'rsa-other: ' . brief($r) unless $r->{status} == 200;
    }
    $up_seen = upstream_hits();
    is_deeply \@bad, [], 'removal: 12 times the cached rsa-1 token refused (unknown_key), '
        . '12 fresh rsa-other tokens admitted';
    is scalar(keys %w_cached), 2, '... the cached token refused by both workers'
        or diag explain \%w_cached;
    is scalar(keys %w_other), 2, '... rsa-other admitted by both workers'
        or diag explain \%w_other;
}


# ============================================================================
# Phase 2: failures keep the last good keys (now: rsa-other only)

# ---- 6. status 500: keys kept, the error logged at most once per interval ----

{
    set_mode('status500');
    my $mark = log_mark();
    my $n = nfetch();
    # past the ttl a request starts a refresh; keep going 3 s after it
    my $first;          # the first failed fetch
    my $res = traffic(secs => $TTL + 6, done => sub {
        my ($f) = grep { $_->{mode} eq 'status500' } fetches();
        $first //= $f->{t} if $f;
        return $first && time - $first > 3;
    });
    sleep 0.3;
    my $span = time - ($first // time);
    my @f = grep { $_->{mode} eq 'status500' } fetches();
    ok @f >= 1, 'status 500: a refresh was attempted (ttl passed)';
    is_deeply $res->{bad}, [], "status 500: $res->{n} requests with kid rsa-other all admitted";
    is_deeply $res->{slow}, [], 'status 500: none slower than 0.5 s';
    my @e = jwks_errors($mark);
    ok @e >= 1, 'status 500: an [error] line about the JWKS' or diag error_log(since => $mark);
    my $allowed = 1 + int($span / $INTERVAL);
    ok @e <= $allowed, sprintf('status 500: %d such lines in %.1f s (at most %d)',
                               scalar @e, $span, $allowed)
        or diag join "\n", @e;
    note sprintf '%d fetches while failing for %.1f s (%d requests)',
        nfetch() - $n, $span, $res->{n};
    note "JWKS error line: $e[0]" if @e;
}

# ---- 7. a document that is not a usable JWKS: keys kept -------------------------

# While the document is older than the ttl a request starts a refresh
# again; waits for the next fetch in $mode, then for its [error] line.
sub bad_document {
    my ($mode, $name) = @_;

    set_mode($mode);
    my $mark = log_mark();
    sleep $INTERVAL + 0.1;          # the error log's once-per-interval
    my $n = nfetch();
    my $res = traffic(secs => $TTL + $INTERVAL + 2, done => sub { nfetch() > $n });
    ok nfetch() > $n, "$name: a refresh fetched it";
    is_deeply $res->{bad}, [], "$name: $res->{n} requests with kid rsa-other admitted";
    is_deeply $res->{slow}, [], "$name: none slower than 0.5 s";
    my $logged = poll(2, sub { jwks_errors($mark) > 0 });
    ok defined $logged, "$name: an [error] line about the JWKS"
        or diag error_log(since => $mark);
    admitted get(tok(key => 'other')), "$name: kid rsa-other (the last good keys)";
    unknown_kid get(tok()), "$name: kid rsa-1 (in the bad document) not taken from it";
}

bad_document('malformed', 'malformed JSON');
bad_document('nokeys',    '{"keys":[]}');
bad_document('enc',       'only a "use":"enc" key');
bad_document('huge',      'a 130 KB document (64k buffer)');

# ---- 8. slow endpoint: the refresh does not delay requests --------------------------

{
    set_mode('slow');
    my $mark = log_mark();
    sleep $INTERVAL + 0.1;
    my $n = nfetch();
    my $res = traffic(secs => $TTL + $INTERVAL + 2, done => sub { nfetch() > $n });
    ok nfetch() > $n, 'slow: a refresh started';
    is_deeply $res->{bad}, [], "slow: $res->{n} requests admitted";
    is_deeply $res->{slow}, [], 'slow: none slower than 0.5 s';

    # during the refresh (the server sleeps 2 s, nginx gives up after 1 s)
    my @r = map { my $r = get(tok(key => 'other')); sleep 0.1; $r } 1 .. 4;
    is_deeply [map { $_->{status} } @r], [(200) x 4],
        'slow: kid rsa-other admitted during the refresh'
        or diag join "\n", map { brief($_) } @r;
    ok !grep({ ($_->{elapsed} // 99) >= 0.5 } @r),
        'slow: ... each in less than 0.5 s: ' . join ', ', map { sprintf '%.3f', $_->{elapsed} // -1 } @r;
    $up_seen = upstream_hits();

    my $logged = poll(3, sub { jwks_errors($mark) > 0 });
    ok defined $logged, 'slow: an [error] line about the JWKS (timed out)'
        or diag error_log(since => $mark);
    like error_log(since => $mark), qr/\[error\].*upstream timed out/,
        'slow: nginx timed the fetch out';

    admitted get(tok(key => 'other')), 'slow: kid rsa-other after the timeout';
    my $r = get(tok());
    unknown_kid $r, 'slow: kid rsa-1 (served too late) not taken';
    ok(($r->{elapsed} // 99) < $TIMEOUT * 2 + 1,
       sprintf('slow: the unknown kid answered in %.2f s', $r->{elapsed} // -1));
    set_mode('ok');
}

# ---- 6b. endpoint down: connection refused, keys kept -------------------------------

{
    set_jwks($JWK{rsa}, $JWK{other});   # what a fetch would get, were it up
    $J->stop;
    my $mark = log_mark();
    sleep $INTERVAL + 0.1;
    my $start = time;           # requests for 2 s at least, and until logged
    my $res = traffic(secs => $TTL + $INTERVAL + 2,
                      done => sub { time - $start > 2 && jwks_errors($mark) > 0 });
    ok jwks_errors($mark) > 0, 'down: an [error] line about the JWKS'
        or diag error_log(since => $mark);
    is_deeply $res->{bad}, [], "down: $res->{n} requests with kid rsa-other admitted";
    is_deeply $res->{slow}, [], 'down: none slower than 0.5 s';
    unknown_kid get(tok()), 'down: kid rsa-1 refused (no new keys)';
}


# ============================================================================
# Phase 3: no keys

# ---- 6c. metrics: what the fetches above did ----------------------------------------

{
    my $r = http(path => '/metrics');
    my %m = map { /^(tenant_jwks_\S+) (-?\d+)$/ ? ($1 => $2) : () }
            split /\n/, $r->{body} // '';
    cmp_ok $m{'tenant_jwks_fetches_total{result="ok"}'} // -1, '>=', 3,
        'metrics: good fetches counted';
    cmp_ok $m{'tenant_jwks_fetches_total{result="error"}'} // -1, '>=', 6,
        'metrics: failed fetches counted (500, bad documents, slow, down)';
    is $m{tenant_jwks_keys}, 1, 'metrics: the one key of the last good document';
    cmp_ok $m{tenant_jwks_age_seconds} // -1, '>=', 0,
        'metrics: the age of the last good document';
}

# ---- 9. fresh nginx, endpoint down, no static key: 503 -------------------------------

nginx_stop();
$ngx = nginx_start(workers => 2, http => conf(port => $J->port));

{
    my $mark = log_mark();
    my $r = get(tok());
    refused $r, 'no keys, endpoint down', 503, 'keys_unavailable';
    ok(($r->{elapsed} // 99) < 2 * $TIMEOUT + 1,
       sprintf('no keys, endpoint down: answered in %.2f s', $r->{elapsed} // -1));
    $r = get(tok());
    refused $r, 'no keys, endpoint down, again', 503, 'keys_unavailable';
    ok(($r->{elapsed} // 99) < 2 * $TIMEOUT + 1,
       sprintf('... answered in %.2f s', $r->{elapsed} // -1));
    refused get(tok(key => 'other')), 'no keys, endpoint down, kid rsa-other',
        503, 'keys_unavailable';
    refused http(path => '/api/orders'), 'no keys: no token at all', 401,
        'authentication_required';
    my $logged = poll(2, sub { jwks_errors($mark) > 0 });
    ok defined $logged, 'no keys: an [error] line about the JWKS'
        or diag error_log(since => $mark);
}

# ---- 9b. a slow endpoint: 503 after the timeout, not a hang --------------------------

my $jwks2 = $J->another;   # the same mode, document and hits
{
    set_mode('slow');
    nginx_reload(http => conf(port => $jwks2->port));
    sleep $INTERVAL + 0.1;
    my $n = nfetch();
    my $r = get(tok());
    refused $r, 'no keys, slow endpoint', 503, 'keys_unavailable';
    is nfetch() - $n, 1, 'no keys, slow endpoint: the request fetched';
    ok(($r->{elapsed} // 99) >= 0.8 * $TIMEOUT && $r->{elapsed} < 2 * $TIMEOUT + 1,
       sprintf('no keys, slow endpoint: waited for the fetch, then gave up: %.2f s',
               $r->{elapsed} // -1));
}

# ---- 9c. recovery: concurrent first-use requests wait for one fetch ------------------

{
    set_mode('delay');                  # 0.5 s, then the JWKS
    sleep_until(last_fetch_t() + $TIMEOUT + $INTERVAL + 0.2);
    my $n = nfetch();
    my @bg = map { async_http(path => '/api/orders', timeout => 8, headers =>
                       [Authorization => 'Bearer ' . tok(key => $_ % 2 ? 'other' : 'rsa')]) }
             1 .. 8;
    my @r = map { wait_http($_) } @bg;
    is_deeply [map { $_->{status} } @r], [(200) x 8],
        'recovery: 8 requests at once while the first fetch runs: all admitted'
        or diag join "\n", map { brief($_) } @r;
    is upstream_hits() - $up_seen, 8, 'recovery: upstream reached 8 times';
    $up_seen = upstream_hits();
    is nfetch() - $n, 1, 'recovery: one fetch for all of them';
    my %w = map { (worker($_) => 1) } @r;
    note 'recovery: workers ' . join ', ', sort keys %w;
    admitted get(tok()), 'recovery: kid rsa-1';
}

# ---- 12. static keys next to the fetched ones --------------------------------------------

{
    set_mode('ok');
    my $n = nfetch();
    my $last = last_fetch_t();
    nginx_reload(http => conf(port => $jwks2->port, keys => 'tenant_jwks_file %%JWKS%%;'));
    admitted get(tok(key => 'ec')), 'static + fetched: ec-1 from tenant_jwks_file';
    admitted get(tok(key => 'other')), 'static + fetched: rsa-other, fetched before the reload';
    admitted get(tok()), 'static + fetched: rsa-1';
    my $stale = time - $last > $TTL;
    ok nfetch() - $n <= ($stale ? 1 : 0), 'static + fetched: no fetch (the zone survived)';
}

{
    $jwks2->stop;
    nginx_stop();
    nginx_start(workers => 2, http => conf(port => $jwks2->port,
                                           keys => 'tenant_jwks_file %%JWKS%%;'));
    my $r = get(tok());
    admitted $r, 'static keys, endpoint down: rsa-1 from tenant_jwks_file (no 503)';
    ok(($r->{elapsed} // 99) < 2 * $TIMEOUT + 1, sprintf('... in %.2f s', $r->{elapsed} // -1));
    admitted get(tok(key => 'ec')), 'static keys, endpoint down: ec-1';
    unknown_kid get(tok(key => 'other')), 'static keys, endpoint down: rsa-other unknown';
}

# ---- 13. "tenant_gateway on" for the whole server: the fetch is not gated --------------
# (nginx runs no access phase for subrequests: the JWKS location inherits
# tenant_gateway and still fetches without a token)

{
    my $srv = echo_start(handler => sub {
        return (200, ['Content-Type' => 'application/json'], jwks_doc($JWK{rsa}));
    });
    nginx_stop();
    nginx_start(workers => 2, http => conf(port => $srv->{port}, server_gateway => 1));
    admitted get(tok()), 'server-wide tenant_gateway: the JWKS location still fetches';
    nginx_stop();
    echo_stop($srv);
}


# ============================================================================
# Phase 4: configuration

{
    my $c = nginx_conf_test(http => conf());
    ok $c->{ok}, 'config: tenant_jwks_request ttl=3s interval=1s passes nginx -t'
        or diag $c->{output};
    $c = nginx_conf_test(http => conf(jwks => 'tenant_jwks_request /_jwks;'));
    ok $c->{ok}, 'config: tenant_jwks_request with the defaults, the gateway\'s only keys, '
        . 'passes nginx -t' or diag $c->{output};
    $c = nginx_conf_test(http => conf(jwks => 'tenant_jwks_request /_jwks ttl=10m;',
                                      keys => 'tenant_jwt_key %%RSA_PUB%%;'));
    ok $c->{ok}, 'config: with tenant_jwt_key too' or diag $c->{output};
    $c = nginx_conf_test(http => conf(jwks => '# no keys at all'));
    ok !$c->{ok}, 'config: tenant_gateway without any keys fails';
    like $c->{output}, qr/\[emerg\][^\n]*tenant_gateway/, '... naming tenant_gateway'
        or diag $c->{output};
}

my @config_cases = (
    ['ttl=0',              'tenant_jwks_request /_jwks ttl=0;',            qr/ttl/],
    ['ttl=abc',            'tenant_jwks_request /_jwks ttl=abc;',          qr/ttl/],
    ['interval=abc',       'tenant_jwks_request /_jwks interval=abc;',     qr/interval/],
    ['uri without "/"',    'tenant_jwks_request v1/jwks-noslash;',         qr/\buri\b|v1\/jwks-noslash/i],
    ['unknown parameter',  'tenant_jwks_request /_jwks foo=1;',            qr/foo/],
    ['no uri',             'tenant_jwks_request;',                         qr/tenant_jwks_request/],
);

for my $case (@config_cases) {
    my ($name, $line, $re) = @$case;
    my $c = nginx_conf_test(http => conf(jwks => $line));
    ok !$c->{ok}, "config: $name: nginx -t fails";
    like $c->{output}, qr/\[emerg\][^\n]*(?:$re)/, "config: $name: clear message"
        or diag $c->{output};
}

done_testing();
