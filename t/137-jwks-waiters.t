#!/usr/bin/perl
# Requests waiting for a JWKS fetch (tenant_jwks_request) that another
# request started (issue 11, item 12).
#
# A waiting request has no timer of its own: it waits in its worker's
# queue; the worker that fetches wakes its queue when the fetch ends, and
# every other worker looks at the shared zone on one timer of its own.
# Before, each waiting request polled on a 20 ms timer for up to 30 s, so
# a flood of tokens with invented kids during a slow fetch multiplied the
# wake-ups (each ran the request's phases again).
#
#   flood       while the JWKS server takes 2 s, a first request fetches
#               and N more wait (half with the document's kid, half with
#               invented kids): the first ones admitted, the invented ones
#               401 unknown_key, all at the end of the fetch; each request
#               was run again by an event a few times, not once per 20 ms
#               (the debug log's "http run request" lines are counted: a
#               bound of 3 per request, where polling gives about 70 for
#               a 4 s fetch); with two workers, both had waiters
#   aborted     clients that go away while they wait are detached (their
#               requests end, 499, the others are still woken, no crash)
#   after       an invented kid after the fetch is refused at once
#               (within the interval), without waiting or fetching
#   fetcher     the client of the fetching request goes away: with the
#               shipped JWKS location (proxy_ignore_client_abort on) the
#               fetch ends and the waiters are admitted
#
# Once with one worker (the waiters are in the fetching worker), once with
# two (reuseport: some wait in the other one, woken by its timer).
# URL only, interval=10s, ttl=60s.  The JWKS server is t/lib/JwksServer.pm.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use JwksServer;
use Test::More;
use Crypt::PK::RSA ();
use Time::HiRes    qw(time sleep);

my $DELAY       = 4;          # seconds the JWKS server takes
my $N           = 20;         # waiting requests per flood
my $ABORTED     = 4;          # ... and clients that go away meanwhile
my $SIGNING_KEY = 'a1b2c3d4e5f60718' x 4;

pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active');
my $ORG  = $T->{clerk_organization_id};

my $J = JwksServer->new;
{
    my $pk = Crypt::PK::RSA->new($keys->{rsa_pub})->export_key_jwk('public', 1);
    $J->set_jwks({ %$pk, use => 'sig', alg => 'RS256', kid => 'ins_a' });
}

sub conf {
    my $port = $J->port;
    return <<EOF;
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_request /_jwks ttl=60s interval=10s;
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        location = /_jwks {
            internal;
            proxy_pass http://127.0.0.1:$port/v1/jwks;
            proxy_read_timeout 8s;
            subrequest_output_buffer_size 64k;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass http://%%ECHO%%;
        }
    }
EOF
}

my $SEQ = 0;

# A token nobody used before: the document's kid, or an invented one
# (signed by a key the document does not have).
sub good { mint_token(org => $ORG, sub => 'user_' . ++$SEQ, kid => 'ins_a') }
sub made_up { mint_token(org => $ORG, sub => 'user_' . ++$SEQ, key => 'other',
                         kid => 'made_up_' . $SEQ) }

sub start { async_http(path => '/api/orders', timeout => 15,
                       headers => [Authorization => "Bearer $_[0]"]) }

sub brief {
    my ($r) = @_;
    my $j = $r->{json} || {};
    return sprintf '%s %s/%s (%.2fs)%s', $r->{status}, $j->{code} // '', $j->{reason} // '',
        $r->{elapsed} // 0, $r->{error} ? " $r->{error}" : '';
}

for my $workers (1, 2) {
    $J->set_delay($DELAY);
    nginx_start(http => conf(), workers => $workers, error_level => 'debug');
    my $base = $J->nfetch;
    my $mark = log_mark();

    subtest "$workers worker(s): a flood of waiters during a slow fetch" => sub {
        # tokens first: signing them takes longer than the fetch
        my @tok_good = map { good() } 1 .. $N / 2;
        my @tok_made_up = map { made_up() } 1 .. $N / 2;
        my @tok_gone = map { made_up() } 1 .. $ABORTED;

        my $t0 = time;
        my $first = start(good());
        sleep 0.3;                          # the fetch is under way

        my @good = map { start($_) } @tok_good;
        my @made_up = map { start($_) } @tok_made_up;
        my @gone = map { start($_) } @tok_gone;
        ok !http_done($_), 'a waiter is still waiting' for $first, @good[0, 1];
        sleep 0.3;
        kill 'KILL', $_->{pid} for @gone;   # their clients go away
        waitpid $_->{pid}, 0 for @gone;

        my $r = wait_http($first);
        is $r->{status}, 200, 'the request that fetched: admitted' or diag brief($r);

        my (%got, $slowest);
        for my $h (@good, @made_up) {
            my $w = wait_http($h);
            my $what = $w->{status} == 200 ? '200'
                     : "$w->{status} " . ($w->{json}{reason} // '');
            $got{$what}++;
            $slowest = $w->{elapsed} if !defined $slowest || $w->{elapsed} > $slowest;
        }
        is_deeply \%got, { 200 => scalar @good, '401 unknown_key' => scalar @made_up },
            'the waiters: the known kid admitted, the invented ones unknown_key';
        cmp_ok time - $t0, '<', $DELAY + 5, 'all answered soon after the fetch ended';
        is $J->nfetch - $base, 1, 'one fetch';

        # the requests' phases, run again on every wake-up
        my $log = error_log(since => $mark);
        my $runs = () = $log =~ /http run request: /g;
        my $requests = 1 + $N + $ABORTED;
        cmp_ok $runs, '<=', 3 * $requests,
            "requests run by an event $runs times for $requests requests "
            . '(bounded, not once per 20 ms)';

        my %workers = map { /#(\d+): .*tenant: JWKS wait for fetch/ ? ($1 => 1) : () }
                      split /\n/, $log;
        is scalar(keys %workers), $workers, "waiters in each of the $workers worker(s)";

        my $closed = () = $log =~ /client prematurely closed connection/g;
        cmp_ok $closed, '>=', $ABORTED, 'the clients that went away: their requests ended';

        # after the fetch: an invented kid is refused at once
        $J->set_delay(0);
        my $t = time;
        my $after = wait_http(start(made_up()));
        is $after->{status} . ' ' . ($after->{json}{reason} // ''), '401 unknown_key',
            'an invented kid after the fetch: unknown_key';
        cmp_ok time - $t, '<', 1.5, '... at once';
        is $J->nfetch - $base, 1, '... no fetch';
    };

    nginx_stop();
}

# The request that fetches is the first one that needed the keys: its
# client may go away (a browser tab closed, an attacker's request sent
# and dropped) while the others wait for the same fetch.  The fetch must
# still end and serve them: else every request is refused (503
# keys_unavailable before any key, 401 unknown_key at a rotation) until
# "interval" is over, and one dropped request per interval keeps it so.
# The JWKS location is the shipped one (conf/nginx.conf.template).

sub shipped_jwks_location {
    my $tpl = do {
        open my $f, '<', project_root() . '/conf/nginx.conf.template' or die "template: $!";
        local $/;
        <$f>;
    };
    my ($loc) = $tpl =~ m{^(\s*location = /_tenant/jwks \{.*?^\s*\})}ms
        or die "no /_tenant/jwks location in the template";
    my %var = (RESOLVER => '127.0.0.1', CLERK_SECRET_KEY => 'sk_test_x',
               CLERK_JWKS_URL => 'http://127.0.0.1:' . $J->port . '/v1/jwks');
    $loc =~ s/\$\{(\w+)\}/$var{$1} \/\/ die "template: \${$1}"/ge;
    return $loc;
}

{
    my $conf = conf();
    my $shipped = shipped_jwks_location();
    $conf =~ s{/_jwks ttl=}{/_tenant/jwks ttl=};
    $conf =~ s{\n\s*location = /_jwks \{.*?\n        \}\n}{\n$shipped\n}s
        or die 'conf: no /_jwks location';

    $J->set_delay(2);
    nginx_start(http => $conf, workers => 1);
    my $base = $J->nfetch;

    subtest 'the client of the fetching request goes away' => sub {
        my @tok = map { good() } 1 .. 5;
        my $first = start(good());
        my ($n) = retry_until(2, sub { $J->nfetch - $base }, sub { $_[0] }, 0.05);
        is $n, 1, 'the first request fetches';
        my @waiting = map { start($_) } @tok;
        sleep 0.3;
        kill 'KILL', $first->{pid};         # its client goes away
        waitpid $first->{pid}, 0;

        my %got;
        for my $h (@waiting) {
            my $w = wait_http($h);
            $got{"$w->{status} " . ($w->{json}{reason} // '')}++;
        }
        is_deeply \%got, { '200 ' => scalar @waiting },
            'the requests that waited for its fetch: admitted';
        my $r = http(path => '/api/orders',
                     headers => [Authorization => 'Bearer ' . good()]);
        is $r->{status}, 200, 'the next request: admitted, without a fetch'
            or diag brief($r);
        is $J->nfetch - $base, 1, 'one fetch';
    };

    nginx_stop();
}

$J->stop;

done_testing();
