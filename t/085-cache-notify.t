#!/usr/bin/perl
# The shared tenant cache under keys that collide, its LISTEN/NOTIFY
# invalidation at the edges, its zone on a reload, and a health ping
# that PostgreSQL answers with an error.
#
#   collision  the tenant zone's rbtree is keyed by crc32 of the
#              organization id (ngx_tenant_cache.c): three ids with the
#              same crc32, forged here (crc32 is affine over GF(2)), two
#              of them tenants with their own tier and slug, the third
#              unknown.  Each request gets its own tenant's signed
#              headers, in three fill orders, served from the cache while
#              the database is stalled; the unknown one's negative entry
#              shadows neither; a NOTIFY for one drops that one only.
#   notify     payloads the listener must ignore: empty, 129 and 300
#              bytes (longer than an organization id); the 129-byte one
#              would, cut to 128, name a cached tenant.  A later valid
#              NOTIFY still evicts.
#   zone       a reload that gives the tenant zone's name to the token
#              cache and back ("another kind") is refused with [emerg];
#              the old workers keep serving from the old zone.
#   listen     the listener's LISTEN times out (its reconnect meets a
#              stalled database): it retries later (backoff), listens
#              again once the database answers, and NOTIFY works again.
#   health     "SELECT 1" answered with an SQL error (not a broken
#              connection): /api/health 503 unhealthy at once, the
#              connection kept, 200 again when the error is gone.  The
#              pool's sessions run serializable read-only deferrable
#              transactions with statement_timeout=300ms, so an open
#              serializable transaction makes every snapshot wait, and
#              the wait ends in "canceling statement due to statement
#              timeout".
#
# Rows of docs/coverage-gaps.md: D-3, C-37, C-35, C-36, C-38.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use Compress::Zlib       qw(crc32);
use Crypt::KeyDerivation qw(hkdf);
use DBI                  ();
use Digest::SHA          qw(hmac_sha256_hex);
use Time::HiRes          qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = 'fedcba9876543210' x 4;
my $TIMEOUT     = 2;                    # tenant_database timeout=, seconds

my $pg = pg_start();

# The health part's pool (C-38): every statement in a serializable
# read-only deferrable transaction, cancelled after 300 ms of waiting.
my $DEFERRING = "$pg->{conninfo} options='-c default_transaction_isolation=serializable"
              . ' -c default_transaction_read_only=on -c default_transaction_deferrable=on'
              . " -c statement_timeout=300'";

# %%DB%%: tenant_database's conninfo; %%TZONE%% / %%KZONE%%: the zone
# names of tenant_cache / tenant_token_cache.  The listener has its own
# (plain) conninfo.
my $HTTP = <<"EOF";
    tenant_database         "%%DB%%" pool=1 timeout=${TIMEOUT}s;
    tenant_database_listen  "$pg->{conninfo}";
    tenant_cache            zone=%%TZONE%%:1m ttl=30s negative_ttl=30s stale=5m;
    tenant_token_cache      zone=%%KZONE%%:1m;
    tenant_jwks_file        %%JWKS%%;
    tenant_tier             starter      features=api;
    tenant_tier             professional features=api,reports;
    tenant_tier             enterprise   features=*;
    tenant_signing_key      $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;
        add_header X-Tenant-Status \$tenant_status always;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/health {
            tenant_health;
        }
    }
EOF

sub http_conf {
    my (%o) = @_;
    my %v = (DB => $pg->{conninfo}, TZONE => 'tenants', KZONE => 'tokens', %o);
    return $HTTP =~ s/%%(DB|TZONE|KZONE)%%/$v{$1}/gr;
}

# --- local helpers ----------------------------------------------------------

my %TOKEN;      # one token per organization

sub get {
    my ($org) = @_;
    my $token = $TOKEN{$org} //= mint_token(org => $org);
    return http(path => '/api/products', timeout => $TIMEOUT + 5,
                headers => [Authorization => "Bearer $token"]);
}

sub health { return http(path => '/api/health', timeout => $TIMEOUT + 5) }

sub code     { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub upstream { my ($r, $name) = @_; return ($r->{json}{headers}{$name} || [])->[0] }
sub tier     { my ($r) = @_; return upstream($r, 'x-tenant-tier') // '' }
sub outcome  { my ($r) = @_; return $r->{status} == 200 ? '200' : "$r->{status} " . code($r) }

sub poll { my ($secs, $try, $done) = @_; return retry_until($secs, $try, $done, 0.05) }

# The signature the upstream must see (README, X-Tenant-Signature).
my $DERIVED = hkdf(pack('H*', $SIGNING_KEY), '', 'SHA256', 32, 'capliquify tenant headers v1');
my @SIGNED  = qw(x-tenant-id x-tenant-slug x-tenant-schema x-tenant-tier
                 x-organization-id x-user-id x-org-role);

# What the upstream saw of the tenant: "id slug schema tier org", plus
# "bad signature" when X-Tenant-Signature does not match them.
sub seen {
    my ($r) = @_;
    return outcome($r) unless $r->{status} == 200;
    my %h = map { $_ => upstream($r, $_) // '' } @SIGNED, 'x-tenant-timestamp',
                                                  'x-tenant-request-id';
    my $want = 'v2=' . hmac_sha256_hex(join("\n", 'v2', $h{'x-tenant-timestamp'},
                                            @{ $r->{json} }{qw(method uri)},
                                            @h{'x-tenant-request-id', @SIGNED}),
                                       $DERIVED);
    return join ' ', @h{qw(x-tenant-id x-tenant-slug x-tenant-schema x-tenant-tier
                           x-organization-id)},
                     (upstream($r, 'x-tenant-signature') // '') eq $want ? () : 'bad signature';
}

# The same for a tenants row as it is now in the database.
sub row_seen {
    my ($t) = @_;
    my ($row) = sql('SELECT * FROM public.tenants WHERE id = $1', $t->{id});
    return join ' ', @$row{qw(id slug schema_name subscription_tier clerk_organization_id)};
}


sub set_tier_silently {
    my ($t, $tier) = @_;
    sql_silent('UPDATE public.tenants SET subscription_tier = $1 WHERE id = $2', $tier, $t->{id});
}

# NOTIFY tenant_changed, one transaction per payload, in this order.
sub notify { sql(q{SELECT pg_notify('tenant_changed', $1)}, $_) for @_ }

my $SENTINEL;   # a tenant of its own, for barrier()

# Returns once the listener has handled every notification sent before:
# the sentinel, cached, is changed silently and then announced; its new
# tier shows once that notification, the last one sent, was handled
# (one connection delivers them in commit order).
sub barrier {
    my $o = $SENTINEL->{clerk_organization_id};
    my $now = tier(get($o));                     # cached, if it was not
    my $next = $now eq 'starter' ? 'professional' : 'starter';
    set_tier_silently($SENTINEL, $next);
    notify($o);
    my ($r) = poll(3, sub { get($o) }, sub { tier($_[0]) eq $next });
    return tier($r) eq $next;
}

my $LISTENING = qr/\[notice\].*tenant: listening for tenant changes/;
my $STOPPED   = qr/\[warn\].*tenant: stopped listening for tenant changes/;
my $NO_ANSWER = qr/\[error\].*tenant: PostgreSQL did not answer within /;

sub count_of { my ($re, $since) = @_; my @m = error_log(since => $since) =~ /$re/g; return scalar @m }

# Waits until the log has more than $n lines matching $re; the seconds
# waited, or undef.
sub wait_log {
    my ($re, $n, $secs) = @_;
    my (undef, $took) = poll($secs, sub { count_of($re) }, sub { $_[0] > $n });
    return count_of($re) > $n ? $took : undef;
}


# --- colliding organization ids ---------------------------------------------

# crc32 (the tenant zone's key, ngx_crc32_short: CRC-32 as zlib has it) of
# a string of fixed length is affine in its bits: flipping a set of bits
# changes the crc by the XOR of what each flip alone changes.  Each of
# the $n suffix characters may be any of a c e g i k m o ('a' with bits
# 1..3 flipped), so 3n flips; Gaussian elimination over GF(2) picks the
# flips that take crc32(prefix . 'a' x $n) to $target.
sub forge {
    my ($prefix, $target, $n) = @_;

    my $base = $prefix . ('a' x $n);
    my $crc0 = crc32($base);
    my (@flips, %basis);        # basis: pivot bit => [vector, flips used]

    my $reduce = sub {
        my ($v, $m) = @_;
        for my $p (sort { $b <=> $a } keys %basis) {
            next unless $v & (1 << $p);
            $v ^= $basis{$p}[0];
            $m ^= $basis{$p}[1];
        }
        return ($v, $m);
    };

    for my $i (0 .. $n - 1) {
        for my $bit (0x02, 0x04, 0x08) {
            my $s = $base;
            substr($s, length($prefix) + $i, 1) = chr(ord('a') ^ $bit);
            push @flips, [length($prefix) + $i, $bit];
            my ($v, $m) = $reduce->(crc32($s) ^ $crc0, 1 << $#flips);
            next unless $v;
            my $p = 31;
            $p-- until $v & (1 << $p);
            $basis{$p} = [$v, $m];
        }
    }

    my ($rest, $m) = $reduce->($target ^ $crc0, 0);
    die "forge: no suffix of $n characters reaches the crc\n" if $rest;

    my $s = $base;
    for my $j (grep { $m & (1 << $_) } 0 .. $#flips) {
        my ($pos, $bit) = @{ $flips[$j] };
        substr($s, $pos, 1) = chr(ord(substr($s, $pos, 1)) ^ $bit);
    }
    return $s;
}

is crc32('123456789'), 0xcbf43926, 'crc32: the CRC-32 check value (nginx\'s ngx_crc32_short is this crc)';

my %ORG;
{
    my $start = time;
    $ORG{A} = 'org_crc_a_' . ('a' x 14);
    $ORG{B} = forge('org_crc_b_', crc32($ORG{A}), 14);
    $ORG{C} = forge('org_crc_c_', crc32($ORG{A}), 14);
    my $took = time - $start;

    note "colliding ids: @ORG{qw(A B C)}, crc32 ", sprintf('%08x', crc32($ORG{A}));
    is_deeply [map { crc32($ORG{$_}) } qw(B C)], [(crc32($ORG{A})) x 2],
        'collision: three organization ids with the same crc32';
    is scalar(keys %{{ map { $_ => 1 } values %ORG }}), 3, 'collision: ... that are three different ids';
    ok !grep({ !/^org_crc_[abc]_[acegikmo]{14}\z/ } values %ORG),
        'collision: ... of letters only (valid organization ids)';
    ok $took < 1, sprintf('collision: forged in %.3f s', $took);
}


# --- setup ----------------------------------------------------------------

my %T = (
    A => create_tenant(org => $ORG{A}, slug => 'crc-a', tier => 'starter', status => 'active'),
    B => create_tenant(org => $ORG{B}, slug => 'crc-b', tier => 'professional', status => 'active'),
);
$SENTINEL = create_tenant(status => 'active', tier => 'starter');

nginx_start(http => http_conf());
ok defined wait_log($LISTENING, 0, 5), 'setup: the listener listens';


# --- 1. colliding ids: each its own tenant, in three fill orders -----------

# Fills the cache in the given order (every entry dropped first), then
# asks again for all three while the database is stalled: only the cache
# can answer, so each answer is its own key's entry.
sub fill_and_check {
    my ($name, @order) = @_;

    notify(@ORG{qw(A B C)});
    ok barrier(), "$name: the three entries dropped (barrier)";

    my %want = (A => row_seen($T{A}), B => row_seen($T{B}),
                C => '403 unknown_organization');
    for my $k (@order) {
        my $r = get($ORG{$k});
        is seen($r), $want{$k}, "$name: $k from the database: its own tenant";
        is $r->{json}{organizationId}, $ORG{C}, "$name: C: organizationId is C's" if $k eq 'C';
    }

    pg_stall();
    my @got = map { my $k = $_; [$k, seen(get($ORG{$k}))] } (@order, reverse @order);
    pg_unstall();
    is_deeply \@got, [map { [$_, $want{$_}] } @order, reverse @order],
        "$name: database stalled: each from its own cache entry, signed (6 requests)";
}

fill_and_check('order A, B, C', qw(A B C));
fill_and_check('order C, B, A', qw(C B A));     # the negative entry first
fill_and_check('order B, C, A', qw(B C A));


# --- 2. colliding ids: a NOTIFY drops that entry only ----------------------

{
    # All three cached (part 1); then changed without a NOTIFY: each
    # entry shows the old row until it is dropped.
    set_tier_silently($T{A}, 'enterprise');
    set_tier_silently($T{B}, 'enterprise');
    ($T{C}) = sql_silent('SELECT * FROM public.create_tenant($1, $2, $3, $4, $5, $6)',
                         'Collider C', 'crc-c', $ORG{C}, 'enterprise', 'c@example.test', 14);
    sql_silent(q{UPDATE public.tenants SET subscription_status = 'active' WHERE id = $1}, $T{C}{id});
    ok barrier(), 'evict: no notification pending';
    is_deeply [map { my $r = get($ORG{$_}); tier($r) || outcome($r) } qw(A B C)],
        ['starter', 'professional', '403 unknown_organization'],
        'evict: silent changes not seen (A starter, B professional, C unknown)';

    notify($ORG{A});
    my ($r, $secs) = poll(2, sub { get($ORG{A}) }, sub { tier($_[0]) eq 'enterprise' });
    is seen($r), row_seen($T{A}), sprintf('evict: NOTIFY A: A looked up again (%.2f s)', $secs);
    is seen(get($ORG{B})), join(' ', $T{B}{id}, 'crc-b', $T{B}{schema_name}, 'professional', $ORG{B}),
        'evict: ... B, same crc, still its cached row (professional)';
    is outcome(get($ORG{C})), '403 unknown_organization', 'evict: ... C\'s negative entry kept';

    notify($ORG{C});
    ($r, $secs) = poll(2, sub { get($ORG{C}) }, sub { $_[0]{status} == 200 });
    is seen($r), row_seen($T{C}), sprintf('evict: NOTIFY C: C\'s tenant (%.2f s)', $secs);
    is tier(get($ORG{B})), 'professional', 'evict: ... B still its cached row';

    notify($ORG{B});
    ($r, $secs) = poll(2, sub { get($ORG{B}) }, sub { tier($_[0]) eq 'enterprise' });
    is seen($r), row_seen($T{B}), sprintf('evict: NOTIFY B: B looked up again (%.2f s)', $secs);
    is_deeply [map { seen(get($ORG{$_})) } qw(A B C)], [map { row_seen($T{$_}) } qw(A B C)],
        'evict: all three their own rows';
}


# --- 3. NOTIFY payloads that name no organization ---------------------------

{
    # 128 bytes: the longest organization id.
    my $long = 'x' x 128;
    my $X = create_tenant(org => $long, status => 'active', tier => 'starter');
    ok barrier(), 'payload: the INSERT\'s own notification handled';
    is tier(get($long)), 'starter', 'payload: a 128-byte organization id: 200, starter (cached)';
    set_tier_silently($X, 'professional');

    notify('', 'x' x 129, 'x' x 300);
    ok barrier(), 'payload: empty, 129 and 300 bytes sent, handled';
    is tier(get($long)), 'starter',
        'payload: ... none dropped the 128-byte one (the 129-byte payload is not cut to 128)';

    notify($long);
    my ($r, $secs) = poll(2, sub { get($long) }, sub { tier($_[0]) eq 'professional' });
    is seen($r), row_seen($X), sprintf('payload: a valid NOTIFY afterwards still evicts (%.2f s)', $secs);
}


# --- 4. a zone's name given to another kind of zone on reload --------------

{
    my @workers = nginx_workers();
    is_deeply [map { seen(get($ORG{$_})) } qw(A B)], [map { row_seen($T{$_}) } qw(A B)],
        'zone: A and B cached';

    my $why = nginx_reload(expect_fail => 1, http => http_conf(TZONE => 'tokens', KZONE => 'tenants'));
    like $why, qr/\[emerg\].*tenant: zone "(tokens|tenants)" holds entries of another kind; use another zone name or restart/,
        'zone: names swapped between tenant_cache and tenant_token_cache: reload refused';
    is_deeply [nginx_workers()], \@workers, 'zone: ... the old worker keeps running';

    pg_stall();
    my @got = map { seen(get($ORG{$_})) } qw(A B);
    pg_unstall();
    is_deeply \@got, [map { row_seen($T{$_}) } qw(A B)],
        'zone: ... and serves A and B from the old zone (database stalled)';

    my $notices = count_of($LISTENING);
    nginx_reload(http => http_conf());
    is seen(get($ORG{A})), row_seen($T{A}), 'zone: reload with the names back: A still served';
    ok defined wait_log($LISTENING, $notices, 5), 'zone: ... and the new worker listens';
}


# --- 5. the listener's LISTEN times out ------------------------------------

{
    my $notices = count_of($LISTENING);
    my $warns = count_of($STOPPED);
    my $errors = count_of($NO_ANSWER);

    # (the backend of the listener the reload retired may linger a moment)
    my $listeners = sub {
        [map { $_->{pid} } sql(q{SELECT pid FROM pg_stat_activity
                                  WHERE query = 'LISTEN tenant_changed' AND state = 'idle'})];
    };
    my ($pids) = poll(3, $listeners, sub { @{ $_[0] } == 1 });
    is scalar(@$pids), 1, 'listen: one listener backend';
    ok sql_value('SELECT pg_terminate_backend($1)', $pids->[0]), 'listen: ... terminated';
    ok defined wait_log($STOPPED, $warns, 3), 'listen: [warn] stopped listening';

    # Its retry (1 s later) connects to a database that does not answer:
    # the LISTEN request times out.
    pg_stall();
    my $stalled = time;
    my $t = wait_log($NO_ANSWER, $errors, $TIMEOUT + 4);
    ok defined $t, sprintf('listen: the retry against the stalled database timed out (%.2f s)',
                           time - $stalled);
    is count_of($LISTENING), $notices, 'listen: ... not listening meanwhile';

    pg_unstall();
    my $back = wait_log($LISTENING, $notices, 6);
    ok defined $back, sprintf('listen: listening again %.2f s after the database answers', $back // -1);
    ok !defined $back || $back > 1,
        'listen: ... at the next retry (backoff), not at once';
    is count_of($NO_ANSWER), $errors + 1, 'listen: one timeout';

    my $X = create_tenant(status => 'active', tier => 'starter');
    my $o = $X->{clerk_organization_id};
    is tier(get($o)), 'starter', 'listen: a new tenant, cached';
    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $X->{id});
    my ($r, $secs) = poll(2, sub { get($o) }, sub { tier($_[0]) eq 'professional' });
    is tier($r), 'professional', sprintf('listen: notifications work again (%.2f s)', $secs);
}


# --- 6. the health ping answered with an SQL error -------------------------

{
    nginx_reload(http => http_conf(DB => $DEFERRING));

    my ($r) = poll(5, \&health, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'health: healthy';
    is $r->{json}{database}, 'connected', 'health: database connected';
    my @pids = map { $_->{pid} } sql(q{SELECT pid FROM pg_stat_activity
                                        WHERE query = 'SELECT 1' AND state = 'idle'
                                          AND pid <> pg_backend_pid()});
    is scalar(@pids), 1, 'health: one pool connection ran the ping';

    # A serializable transaction that has a snapshot: the pool's
    # deferrable snapshot waits for it, statement_timeout ends the wait.
    my $blocker = DBI->connect("dbi:Pg:dbname=capliquify;host=$pg->{socket};port=$pg->{port}",
                               'postgres', '', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
    $blocker->do('BEGIN ISOLATION LEVEL SERIALIZABLE');
    $blocker->do('SELECT 2');

    my $mark = log_mark();
    ($r) = poll(5, \&health, sub { $_[0]{status} != 200 });
    is $r->{status}, 503, 'health: SELECT 1 cancelled by statement_timeout: 503';
    is $r->{json}{status}, 'unhealthy', 'health: ... status unhealthy';
    is $r->{json}{database}, 'disconnected', 'health: ... database disconnected';
    ok $r->{elapsed} < $TIMEOUT, sprintf('health: ... in %.2f s, an answer (timeout=%ds)',
                                         $r->{elapsed}, $TIMEOUT);
    my $log = error_log(since => $mark);
    unlike $log, qr/PostgreSQL (failed while|did not answer)/, 'health: ... not a connection failure';
    like $log, qr/\[error\].*tenant: health ping failed: 57014 canceling statement due to statement timeout/,
        'health: ... the error log says why (it said nothing)';
    is_deeply [map { $_->{pid} } sql(q{SELECT pid FROM pg_stat_activity WHERE pid = $1}, $pids[0])],
        [$pids[0]], 'health: ... the pool\'s connection kept';

    $blocker->do('COMMIT');
    $blocker->disconnect;
    ($r) = poll(5, \&health, sub { $_[0]{status} == 200 });
    is $r->{status}, 200, 'health: the transaction ended: healthy again';
    is_deeply [map { $_->{pid} } sql(q{SELECT pid FROM pg_stat_activity
                                        WHERE query = 'SELECT 1' AND state = 'idle'
                                          AND pid <> pg_backend_pid()})],
        [$pids[0]], 'health: ... on the same connection';
}

unlike error_log(), qr/\[crit\]/, 'error log: no [crit]';

done_testing();
