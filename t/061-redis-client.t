#!/usr/bin/perl
# The gateway's Redis client (tenant_redis), end to end through
# /api/health, whose "redis" field is a PING sent through the worker's
# connection: the handshake (AUTH with a password, with an ACL user,
# SELECT), a wrong password (one clear line, without the password, and
# nginx serves on), Redis restarted, Redis stopped with SIGSTOP (health
# answers at once, and the connection comes back after SIGCONT), the
# tenant_redis_* metrics, one connection per worker, and what nginx -t
# refuses.  The status of /api/health never depends on Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use POSIX       ();
use Time::HiRes qw(time sleep);

my $SIGNING_KEY = '0123456789abcdef' x 4;

pg_start();

sub http_block {
    my ($redis) = @_;
    return <<"EOF";
    tenant_database     "%%PG%%" pool=2 timeout=2s;
    tenant_redis        $redis;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter features=api;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/health {
            tenant_health;
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF
}

sub health { http(path => '/api/health') }

sub redis_state {
    my $r = health();
    return $r->{json} ? ($r->{json}{redis} // 'absent') : "status $r->{status}";
}

# the state within $secs, and the seconds it took
sub wait_redis {
    my ($want, $secs) = @_;
    my ($r, $took) = retry_until($secs, \&health,
        sub { $_[0]->{json} && ($_[0]->{json}{redis} // '') eq $want }, 0.05);
    return (($r->{json} && $r->{json}{redis}) // "status $r->{status}", $took,
            $r);
}

sub metric {
    my ($name) = @_;
    my $body = http(path => '/metrics')->{body} // '';
    return $body =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

sub gateway_clients {
    my $list = redis_cli('CLIENT', 'LIST');
    # redis-cli's own connection has cmd=client
    return grep { !/cmd=client/ } split /\n/, $list;
}

# timeout=100ms: a loaded test machine must not turn a PONG into a timeout
my $T = 'timeout=100ms';


# --- no password -----------------------------------------------------------

my $redis = redis_start();

nginx_start(http => http_block("%%REDIS%% $T"), workers => 2);

my ($state, $took, $r) = wait_redis('connected', 3);
is $state, 'connected', 'health: "redis":"connected"';
is $r->{status}, 200, '... status 200';
like $r->{body}, qr/"database":"connected","redis":"connected"/,
    '... next to the database';

like redis_cli('INFO', 'memory'), qr/^number_of_cached_scripts:1\r?$/m,
    'the handshake loaded the rate script';

my @clients = gateway_clients();
is scalar(@clients), 2, 'one connection per worker (2 workers)'
    or diag join "\n", @clients;

is metric('tenant_redis_up'), 1, 'tenant_redis_up 1';
my $commands = metric('tenant_redis_commands_total');
ok defined $commands && $commands >= 1, "tenant_redis_commands_total ($commands)";
like http(path => '/metrics')->{body},
    qr/^tenant_redis_command_duration_seconds_bucket\{le="0.00025"\} \d+$/m,
    'the latency histogram';
sleep 1.1;    # health's answer is reused for a second
health();
cmp_ok metric('tenant_redis_commands_total'), '>', $commands,
    'a health check sends a command';
for my $series ('tenant_redis_timeouts_total',
                'tenant_redis_errors_total{kind="connect"}',
                'tenant_redis_errors_total{kind="protocol"}',
                'tenant_redis_errors_total{kind="reply"}',
                'tenant_redis_reconnects_total',
                'tenant_redis_fallbacks_total{reason="down"}',
                'tenant_redis_held_total',
                'tenant_redis_command_duration_seconds_count')
{
    ok defined metric($series), "$series exposed";
}


# --- a reload --------------------------------------------------------------
# New workers connect; the old ones close theirs when they exit.

my @before = sort map { /\bid=(\d+)/ ? $1 : '?' } gateway_clients();
nginx_reload();
my ($after) = retry_until(5, sub { [gateway_clients()] },
    sub { @{ $_[0] } == 2
          && !grep { my $id = /\bid=(\d+)/ ? $1 : ''; grep { $_ eq $id } @before }
                  @{ $_[0] } }, 0.1);
is scalar(@$after), 2, 'reload: two connections, the new workers\'';
($state) = wait_redis('connected', 3);
is $state, 'connected', '... health: connected';


# --- Redis restarted --------------------------------------------------------

my $reconnects = metric('tenant_redis_reconnects_total');
my $connect_errors = metric('tenant_redis_errors_total{kind="connect"}');
redis_restart();
# from when it answers again: the gateway's workers are its clients again
# after at most the longest backoff (1 s)
my $t0 = time;
my ($n) = retry_until(3, sub { scalar gateway_clients() },
                      sub { $_[0] == 2 }, 0.05);
$took = time - $t0;
is $n, 2, 'Redis restarted: both workers connected again';
cmp_ok $took, '<', 1.5, sprintf('... %.2f s after it answered', $took);
($state) = wait_redis('connected', 2);
is $state, 'connected', '... health: connected';
cmp_ok metric('tenant_redis_reconnects_total'), '>', $reconnects,
    'tenant_redis_reconnects_total moved';
cmp_ok metric('tenant_redis_errors_total{kind="connect"}'), '>',
    $connect_errors, 'tenant_redis_errors_total{kind="connect"} moved';
is scalar(gateway_clients()), 2, 'one connection per worker again';


# --- a reply after its timeout ---------------------------------------------
# A script keeps Redis busy for 700 ms (less than connect_timeout): the
# PING times out (100 ms), its PONG comes later and is dropped, and the
# same connection serves on.

my @ids = sort map { /\bid=(\d+)/ ? $1 : '?' } gateway_clients();
my $timeouts = metric('tenant_redis_timeouts_total');
sleep 1.1;    # past the reused answer
my $busy = fork // die "fork: $!";
if (!$busy) {
    redis_cli('EVAL', 'local t = redis.call("TIME") '
              . 'local s = t[1] * 1000000 + t[2] '
              . 'repeat t = redis.call("TIME") '
              . 'until t[1] * 1000000 + t[2] - s > 700000 return 1', 0);
    POSIX::_exit(0);
}
sleep 0.25;    # redis-cli started, the script running
$r = health();
is $r->{json}{redis}, 'disconnected', 'Redis busy 700 ms: the PING timed out';
cmp_ok metric('tenant_redis_timeouts_total'), '>', $timeouts,
    '... counted in tenant_redis_timeouts_total';
waitpid $busy, 0;
sleep 1.1;
$r = health();
is $r->{json}{redis}, 'connected', '... then connected, the late PONG dropped';
is_deeply [sort map { /\bid=(\d+)/ ? $1 : '?' } gateway_clients()], \@ids,
    '... on the same connections';


# --- SIGSTOP --------------------------------------------------------------

my $mark = log_mark();
redis_stall();
sleep 1.1;    # past the reused answer
$t0 = time;
$r = health();
my $elapsed = time - $t0;
is $r->{json}{redis}, 'disconnected', 'Redis stopped (SIGSTOP): disconnected';
cmp_ok $elapsed, '<', 1, sprintf('... answered in %.3f s', $elapsed);
is $r->{status}, 200, '... the status stays 200';
cmp_ok metric('tenant_redis_timeouts_total'), '>=', 1,
    'tenant_redis_timeouts_total moved';
sleep 1.5;    # the connection is declared stalled
like error_log(since => $mark), qr/\[error\].*tenant: Redis at 127\.0\.0\.1:\d+ left a command unanswered/,
    'the stalled connection is logged';
redis_unstall();
($state, $took) = wait_redis('connected', 4);
is $state, 'connected', sprintf('SIGCONT: connected again (%.2f s)', $took);

nginx_stop();


# --- a password ---------------------------------------------------------

$redis = redis_start(password => 's3cret-pass');
nginx_start(http => http_block("$redis->{url} $T"));
($state) = wait_redis('connected', 3);
is $state, 'connected', 'AUTH password: connected';
nginx_stop();


# --- an ACL user ---------------------------------------------------------

$redis = redis_start(user => 'gateway', password => 'acl-pass-42');
nginx_start(http => http_block("$redis->{url} $T"));
($state) = wait_redis('connected', 3);
is $state, 'connected', 'AUTH user password: connected';
like redis_cli('CLIENT', 'LIST'), qr/user=gateway\b.*/, '... as the user';
nginx_stop();


# --- a wrong password ----------------------------------------------------

$redis = redis_start(password => 'right-pass');
my $wrong = "redis://:wrong-pass-xyz\@127.0.0.1:$redis->{port}";
nginx_start(http => http_block("$wrong $T"));
$mark = log_mark();
sleep 2.5;    # a few attempts
$r = health();
is $r->{status}, 200, 'wrong password: nginx serves, health 200';
is $r->{json}{redis}, 'disconnected', '... "redis":"disconnected"';
my $log = error_log();
my @lines = grep { /tenant: Redis/ } split /\n/, $log;
my @refused = grep { /\[error\].*refused AUTH: WRONGPASS/ } @lines;
is scalar(@refused), 1, 'one [error] line over the attempts'
    or diag join "\n", @lines;
unlike $log, qr/wrong-pass-xyz/, 'the password is in no log line';
cmp_ok metric('tenant_redis_errors_total{kind="connect"}'), '>=', 2,
    'each attempt counted';
is metric('tenant_redis_up'), 0, 'tenant_redis_up 0';
nginx_stop();


# --- SELECT --------------------------------------------------------------

$redis = redis_start();
nginx_start(http => http_block("$redis->{url}/3 $T"));
($state) = wait_redis('connected', 3);
is $state, 'connected', 'SELECT 3: connected';
my @db = map { /\bdb=(\d+)/ ? $1 : '?' } gateway_clients();
is_deeply \@db, [3], '... the connection is on db 3';
nginx_stop();


# --- Redis down when nginx starts -------------------------------------------

$redis = redis_start();
redis_stop();
nginx_start(http => http_block("$redis->{url} $T"));
sleep 2;    # attempts at 100, 200, 400, 800 ms
$r = health();
is $r->{status}, 200, 'Redis down at start: nginx serves, health 200';
is $r->{json}{redis}, 'disconnected', '... "redis":"disconnected"';
@lines = grep { /tenant: .*Redis/ } split /\n/, error_log();
is scalar(grep { /\[error\].*cannot connect to Redis at 127\.0\.0\.1:\d+ \(111: Connection refused\)/ } @lines), 1,
    '... one [error] line, with the reason' or diag join "\n", @lines;
unlike error_log(), qr/connect\(\) to .* failed/, "... and not nginx's own per attempt";
cmp_ok metric('tenant_redis_reconnects_total'), '>=', 3,
    '... attempts again and again (backoff)';
redis_restart();
($state, $took) = wait_redis('connected', 3);
is $state, 'connected', sprintf('Redis started: connected (%.2f s)', $took);
like error_log(), qr/\[notice\].*tenant: Redis at 127\.0\.0\.1:\d+ is ready again/,
    '... a [notice] says so';
nginx_stop();


# --- nginx -t refusals -------------------------------------------------------

sub conf_test {
    my ($line) = @_;
    return nginx_conf_test(http => "tenant_redis $line;\n");
}

my @refusals = (
    [ 'rediss://:tls-secret@127.0.0.1:6379', qr/rediss:\/\/ \(TLS\)/,
      'tls-secret', 'rediss://' ],
    [ 'redis://:bad-secret@127.0.0.1:6379/x', qr/tenant_redis: the Redis URL/,
      'bad-secret', 'a bad URL' ],
    [ 'redis://:p-secret@127.0.0.1:6379 nope=1', qr/unknown parameter "nope"/,
      'p-secret', 'an unknown parameter' ],
    [ 'redis://:p-secret@127.0.0.1 redis://:p-secret@127.0.0.1',
      qr/parameter 2 is not one of/, 'p-secret', 'a second URL' ],
    [ 'redis://:p-secret@127.0.0.1 timeout=0', qr/invalid "timeout=0"/,
      'p-secret', 'timeout=0' ],
    [ 'redis://:p-secret@127.0.0.1 instances=0', qr/invalid "instances=0"/,
      'p-secret', 'instances=0' ],
    [ 'redis://:unres-secret@nonexistent.invalid:6379',
      qr/tenant_redis: cannot resolve the host "nonexistent.invalid"/,
      'unres-secret', 'an unresolvable host' ],
);

for my $c (@refusals) {
    my ($line, $re, $secret, $what) = @$c;
    my $t = conf_test($line);
    ok !$t->{ok}, "nginx -t refuses $what";
    like $t->{output}, $re, '... saying why' or diag $t->{output};
    unlike $t->{output}, qr/\Q$secret\E/, '... without the password';
}

my $t = conf_test('redis://127.0.0.1:6379 timeout=5ms connect_timeout=1s '
                  . 'fallback=open instances=3 prefix=gw:');
ok $t->{ok}, 'every parameter accepted' or diag $t->{output};

done_testing();
