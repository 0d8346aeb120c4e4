#!/usr/bin/perl
# Tenant changes take effect at once: LISTEN/NOTIFY invalidation of the
# shared tenant cache, and the trial expiration job.
#
#   listen    migration 004 NOTIFYs "tenant_changed" with the organization
#             id on every change of public.tenants; the first worker
#             LISTENs (tenant_database_listen, default tenant_database's
#             conninfo) and drops the row from the shared cache, so both
#             workers see an upgrade, a suspension, a deletion, a new
#             tenant (its negative entry) or a renamed organization within
#             a second although ttl=30s negative_ttl=30s, also several
#             tenants changed by one statement.  With
#             "tenant_database_listen off" the same change is not seen.
#   restart   the listener survives a database restart, its backend
#             being terminated, a longer outage (retries after 1, 2, 4 s)
#             and its worker being killed: warn when lost, notice when
#             back, and since notifications sent meanwhile are lost,
#             cached rows are looked up again and negative entries
#             dropped (shown with changes made without firing the
#             trigger); cached tenants, also past their TTL, are served
#             while the database is down.
#   cron      POST /api/cron/expire-trials (tenant_cron_expire_trials):
#             Bearer tenant_cron_secret, the JSON answer, the database
#             (status, audit rows), the gateway's 402 at once (also
#             without the listener: the job drops the cached rows
#             itself), idempotence (twice, and two at once), 401/405/503.
#   config    nginx -t: short tenant_cron_secret, bad
#             tenant_database_listen conninfo.
#   fixed     a tenant_cron_secret that nginx -t accepted but no bearer
#             token could carry; the job without tenant_cache crashed the
#             worker.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS    ();
use POSIX       ();
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = '00112233445566778899aabbccddeeff' x 2;
my $CRON_SECRET = 'cron-secret-0123456789abcdef-ABCDEF.xyz';     # 39 chars
my $TIMEOUT     = 2;                    # tenant_database timeout=, seconds

# Two workers, reuseport spreads new connections over both; X-Worker says
# which one answered, X-Tenant-Status what the gateway used (refusals
# carry "always" headers too).  %%LISTEN%% is replaced below.
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" pool=2 timeout=${TIMEOUT}s;
    tenant_cache        zone=tenants:1m ttl=30s negative_ttl=30s stale=5m;
    %%LISTEN%%
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter      features=dashboard,basic_forecasting;
    tenant_tier         professional features=dashboard,basic_forecasting,ai_forecasting;
    tenant_tier         enterprise   features=*;
    tenant_signing_key  $SIGNING_KEY;
    tenant_cron_secret  %%SECRET%%;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        add_header X-Worker        \$pid always;
        add_header X-Tenant-Status \$tenant_status always;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/forecasts/ai {
            tenant_gateway         on;
            tenant_require_feature ai_forecasting;
            proxy_pass             http://%%ECHO%%;
        }

        location = /api/cron/expire-trials {
            tenant_cron_expire_trials;
        }
    }
EOF

# listen => undef: no directive (the default, tenant_database's conninfo);
# 'off'; or a conninfo string.  secret => tenant_cron_secret's value.
sub http_conf {
    my (%o) = @_;
    my $l = !defined $o{listen} ? '# tenant_database_listen: default'
          : $o{listen} eq 'off' ? 'tenant_database_listen off;'
          :                       qq{tenant_database_listen "$o{listen}";};
    my $s = $o{secret} // $CRON_SECRET;
    return $HTTP =~ s/%%LISTEN%%/$l/r =~ s/%%SECRET%%/"$s"/r;
}

# The database goes away on purpose below.
error_log_allow(
    qr/\[warn\].*tenant: stopped listening for tenant changes/,
    qr/\[error\].*tenant: PostgreSQL failed while /,
    qr/\[error\].*tenant: PostgreSQL did not answer within /,
    qr/\[warn\].*tenant: database unavailable, serving the cached tenant/,
    qr/\[info\].*tenant: idle PostgreSQL connection closed/,
    qr/\[error\].*tenant: expiring trials failed/,
);


# --- local helpers ----------------------------------------------------------

my %TOKEN;      # one token per org: the token cache is not what is tested

sub get {
    my ($org, %o) = @_;
    my $token = $TOKEN{$org} //= mint_token(org => $org);
    return http(path => $o{path} // '/api/products', timeout => $o{timeout} // 10,
                headers => [Authorization => "Bearer $token"]);
}

sub ai { my ($org) = @_; return get($org, path => '/api/forecasts/ai') }

sub code     { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub worker   { my ($r) = @_; return ($r->{headers}{'x-worker'} || [])->[0] // '?' }
sub hstatus  { my ($r) = @_; return ($r->{headers}{'x-tenant-status'} || [])->[0] // '' }
sub upstream { my ($r, $name) = @_; return ($r->{json}{headers}{$name} || [])->[0] }
sub brief    { my ($r) = @_; return sprintf '%s %s (%.2fs, worker %s) %s', $r->{status},
                   code($r), $r->{elapsed} // 0, worker($r), $r->{error} // '' }

# "200" or "403 feature_not_available": what a response says, in one word.
sub outcome { my ($r) = @_; return $r->{status} == 200 ? '200' : "$r->{status} " . code($r) }

# retry_until (the harness's), every 50 ms.
sub poll { my ($secs, $try, $done) = @_; return retry_until($secs, $try, $done, 0.05) }

# n requests on new connections; { outcomes => [...], workers => {pid => n} }.
sub burst {
    my ($n, $try) = @_;
    my (%by, @out);
    for (1 .. $n) {
        my $r = $try->();
        $by{ worker($r) }++;
        push @out, outcome($r);
    }
    return { outcomes => \@out, workers => \%by };
}

sub uniq { my %s; return grep { !$s{$_}++ } @_ }

my $LISTENING = qr/\[notice\].*tenant: listening for tenant changes/;
my $STOPPED   = qr/\[warn\].*tenant: stopped listening for tenant changes/;

sub count_of { my ($re) = @_; my @m = error_log() =~ /$re/g; return scalar @m }

# Waits until the error log has more than $n lines matching $re; returns
# the seconds waited (undef: not within $secs).
sub wait_log {
    my ($re, $n, $secs) = @_;
    my $start = time;
    while (time - $start < $secs) {
        return time - $start if count_of($re) > $n;
        sleep 0.05;
    }
    return undef;
}



# --- setup ----------------------------------------------------------------

my $pg = pg_start();

my $ngx = nginx_start(workers => 2, http => http_conf());
is scalar(nginx_workers()), 2, 'two workers';

{
    my $secs = wait_log($LISTENING, 0, 5);
    ok defined $secs, sprintf('listener: "listening for tenant changes" after start (%.2f s)', $secs // -1);
    is count_of($LISTENING), 1, 'listener: one notice (one listener for both workers)';
}


# --- 1. an upgrade in SQL is seen at once, by both workers ------------------

{
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $o = $t->{clerk_organization_id};

    my $b = burst(12, sub { ai($o) });
    is_deeply [uniq @{ $b->{outcomes} }], ['403 feature_not_available'],
        'upgrade: starter on an ai_forecasting route: 403 feature_not_available (12 requests)';
    ok keys %{ $b->{workers} } >= 2, 'upgrade: both workers answered the 403'
        or diag explain $b->{workers};
    is ai($o)->{json}{currentTier}, 'starter', 'upgrade: currentTier starter';

    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $t->{id});

    # Until both workers have answered 200 (or 1.5 s); nothing but 200
    # once the first one has.
    my (%first, @after, $start);
    $start = time;
    my $seen;
    while (time - $start < 1.5) {
        my $r = ai($o);
        my $w = worker($r);
        if ($seen) {
            push @after, brief($r) unless $r->{status} == 200;
        }
        if ($r->{status} == 200) {
            $seen //= time - $start;
            $first{$w} //= time - $start;
        }
        last if keys %first >= 2;
        sleep 0.05;
    }
    ok defined $seen && $seen < 1,
        sprintf('upgrade: 200 %.2f s after the UPDATE (ttl=30s)', $seen // -1);
    is scalar(keys %first), 2, 'upgrade: both workers answered 200'
        or diag explain \%first;
    ok !grep({ $_ >= 1 } values %first), 'upgrade: each worker within 1 s'
        or diag explain \%first;
    is_deeply \@after, [], 'upgrade: no 403 after the first 200';

    $b = burst(12, sub { ai($o) });
    is_deeply [uniq @{ $b->{outcomes} }], ['200'], 'upgrade: 12 more requests, all 200';
    ok keys %{ $b->{workers} } >= 2, 'upgrade: ... from both workers' or diag explain $b->{workers};
    my $r = ai($o);
    is upstream($r, 'x-tenant-tier'), 'professional', 'upgrade: upstream X-Tenant-Tier professional';
}


# --- 1b. without the listener the TTL rules --------------------------------

my $quiet;      # changed while nobody listened
{
    my $before = count_of($LISTENING);
    nginx_reload(http => http_conf(listen => 'off'));
    is scalar(nginx_workers()), 2, 'listen off: reloaded, two workers';

    $quiet = create_tenant(status => 'active', tier => 'starter');
    my $o = $quiet->{clerk_organization_id};
    is outcome(ai($o)), '403 feature_not_available', 'listen off: starter: 403';

    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $quiet->{id});
    my $start = time;
    my @seen;
    while (time - $start < 2) {
        push @seen, outcome(ai($o));
        sleep 0.1;
    }
    is_deeply [uniq @seen], ['403 feature_not_available'],
        'listen off: the upgrade is not seen for 2 s (' . @seen . ' requests, ttl=30s)';
    is count_of($LISTENING), $before, 'listen off: no listener started';
}

# Back on, with an explicit conninfo: the new listener starts, and the row
# changed meanwhile is looked up again (served while that runs).
{
    my $before = count_of($LISTENING);
    nginx_reload(http => http_conf(listen => $pg->{conninfo}));
    my $secs = wait_log($LISTENING, $before, 5);
    ok defined $secs, sprintf('listen "conninfo": listening after the reload (%.2f s)', $secs // -1);

    my ($r, $after) = poll(1.5, sub { ai($quiet->{clerk_organization_id}) },
                           sub { $_[0]{status} == 200 });
    is outcome($r), '200', 'listen back: the upgrade made while nobody listened is seen';
    ok $after < 1, sprintf('listen back: after %.2f s (rows past their TTL on (re)connect)', $after);
}


# --- 2. suspension, deletion, a renamed organization ------------------------

{
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $o = $t->{clerk_organization_id};

    my $b = burst(6, sub { get($o) });
    is_deeply [uniq @{ $b->{outcomes} }], ['200'], 'suspend: active tenant: 200';

    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    my ($r, $secs) = poll(1.5, sub { get($o) }, sub { $_[0]{status} != 200 });
    is outcome($r), '403 tenant_suspended', 'suspend: 403 tenant_suspended';
    ok $secs < 1, sprintf('suspend: seen after %.2f s', $secs);
    is $r->{json}{organizationId}, $o, 'suspend: organizationId';
    $b = burst(8, sub { get($o) });
    is_deeply [uniq @{ $b->{outcomes} }], ['403 tenant_suspended'],
        'suspend: 8 more requests (' . join(', ', map { "$_ x$b->{workers}{$_}" } sort keys %{ $b->{workers} })
        . '): all 403';

    sql('DELETE FROM public.tenants WHERE id = $1', $t->{id});
    ($r, $secs) = poll(1.5, sub { get($o) }, sub { code($_[0]) eq 'unknown_organization' });
    is outcome($r), '403 unknown_organization', 'delete: 403 unknown_organization';
    ok $secs < 1, sprintf('delete: seen after %.2f s', $secs);
    is $r->{json}{organizationId}, $o, 'delete: organizationId';
}

# UPDATE of clerk_organization_id: both the old and the new id are
# announced; the new one had a negative entry.
{
    my $t = create_tenant(status => 'active');
    my $old = $t->{clerk_organization_id};
    my $new = "org_renamed_$$";

    is outcome(get($old)), '200', 'rename: old org id: 200';
    is outcome(get($new)), '403 unknown_organization', 'rename: new org id: 403 (negative entry)';

    sql('UPDATE public.tenants SET clerk_organization_id = $1 WHERE id = $2', $new, $t->{id});
    my ($r, $secs) = poll(1.5, sub { get($new) }, sub { $_[0]{status} == 200 });
    is outcome($r), '200', 'rename: new org id: 200';
    ok $secs < 1, sprintf('rename: new id seen after %.2f s', $secs);
    is upstream($r, 'x-tenant-id'), $t->{id}, 'rename: upstream saw the tenant';

    ($r, $secs) = poll(1.5, sub { get($old) }, sub { $_[0]{status} != 200 });
    is outcome($r), '403 unknown_organization', 'rename: old org id: 403 unknown_organization';
    ok $secs < 1, sprintf('rename: old id gone after %.2f s', $secs);
}


# One statement changes several tenants: one notification each, all
# handled (a single read may bring several).
{
    my @t = map { create_tenant(status => 'active', tier => 'starter') } 1 .. 4;
    my @o = map { $_->{clerk_organization_id} } @t;
    is_deeply [map { outcome(ai($_)) } @o], [('403 feature_not_available') x 4],
        'bulk: 4 starter tenants: 403 on the ai route';

    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = ANY($1::uuid[])},
        '{' . join(',', map { $_->{id} } @t) . '}');
    my $start = time;
    my %seen;
    while (time - $start < 1.5 && keys %seen < @o) {
        for my $o (grep { !exists $seen{$_} } @o) {
            $seen{$o} = time - $start if ai($o)->{status} == 200;
        }
        sleep 0.05;
    }
    is scalar(keys %seen), 4, 'bulk: one UPDATE of 4 tenants: all 4 upgraded'
        or diag explain \%seen;
    ok !grep({ $_ >= 1 } values %seen), 'bulk: ... each within 1 s' or diag explain \%seen;
}


my $STALE_ORG;   # a tenant not asked for after part 3: stale after a reconnect

# --- 3. negative entries (negative_ttl=30s) ---------------------------------

{
    my $o = "org_created_later_$$";
    is outcome(get($o)), '403 unknown_organization', 'create: unknown org: 403';
    is outcome(get($o)), '403 unknown_organization', 'create: again 403 (negative entry)';

    my $t = create_tenant(org => $o, status => 'active');
    $STALE_ORG = $o;
    my ($r, $secs) = poll(1.5, sub { get($o) }, sub { $_[0]{status} == 200 });
    is outcome($r), '200', 'create: the new tenant: 200';
    ok $secs < 1, sprintf('create: seen after %.2f s (negative_ttl=30s)', $secs);
    is upstream($r, 'x-tenant-id'), $t->{id}, 'create: upstream saw the new tenant';
}

# The negative entry really lives on without a notification; any
# announced change of the row then ends it.
{
    my $o = "org_silent_$$";
    is outcome(get($o)), '403 unknown_organization', 'silent create: unknown org: 403';

    my ($t) = sql_silent('SELECT * FROM public.create_tenant($1, $2, $3, $4, $5, $6)',
                         "Silent $$", "silent-$$", $o, 'starter', "silent$$\@example.test", 14);
    my $start = time;
    my @seen;
    while (time - $start < 1) {
        push @seen, outcome(get($o));
        sleep 0.1;
    }
    is_deeply [uniq @seen], ['403 unknown_organization'],
        'silent create (no NOTIFY): still 403 for 1 s (' . @seen . ' requests)';

    sql('UPDATE public.tenants SET updated_at = now() WHERE id = $1', $t->{id});
    my ($r, $secs) = poll(1.5, sub { get($o) }, sub { $_[0]{status} == 200 });
    is outcome($r), '200', 'silent create, then an announced UPDATE: 200';
    ok $secs < 1, sprintf('... after %.2f s', $secs);
}


# --- 4. the listener survives a database restart ----------------------------

{
    my $K = create_tenant(status => 'active', tier => 'starter');
    my $L = create_tenant(status => 'active', tier => 'starter');
    my $N = "org_born_during_outage_$$";
    my %o = (K => $K->{clerk_organization_id}, L => $L->{clerk_organization_id});

    is outcome(get($o{K})), '200', 'restart: K warm';
    is upstream(get($o{L}), 'x-tenant-tier'), 'starter', 'restart: L warm (starter)';
    is outcome(get($N)), '403 unknown_organization', 'restart: N unknown (negative entry)';

    # Changes nobody is told about (the trigger does not fire), as if made
    # while the listener was away.
    sql_silent(q{UPDATE public.tenants SET subscription_tier = 'enterprise' WHERE id = $1}, $L->{id});
    my ($t_n) = sql_silent('SELECT * FROM public.create_tenant($1, $2, $3, $4, $5, $6)',
                           "Born $$", "born-$$", $N, 'starter', "born$$\@example.test", 14);
    sleep 0.3;
    is upstream(get($o{L}), 'x-tenant-tier'), 'starter', 'restart: silent change of L not seen (no NOTIFY)';
    is outcome(get($N)), '403 unknown_organization', 'restart: silent insert of N not seen (no NOTIFY)';

    my $warns = count_of($STOPPED);
    my $notices = count_of($LISTENING);

    pg_kill();
    my $secs = wait_log($STOPPED, $warns, 3);
    ok defined $secs, sprintf('restart: [warn] "stopped listening for tenant changes" %.2f s after the kill', $secs // -1);
    is count_of($STOPPED), $warns + 1, 'restart: one warning';

    my $b = burst(10, sub { get($o{K}, timeout => 5) });
    is_deeply [uniq @{ $b->{outcomes} }], ['200'], 'restart: database down: cached K served, 10 x 200';
    $b = burst(4, sub { get($o{L}, timeout => 5) });
    is_deeply [uniq @{ $b->{outcomes} }], ['200'], 'restart: database down: cached L served';

    my $down = time;
    pg_restart();
    my $restarted = time;
    $secs = wait_log($LISTENING, $notices, 10);
    ok defined $secs && $secs < 5,
        sprintf('restart: listening again %.2f s after the restart (%.2f s after the kill)',
                $secs // -1, time - $down);
    is count_of($LISTENING), $notices + 1, 'restart: one more "listening" notice';
    is count_of($STOPPED), $warns + 1, 'restart: no further warning once back';

    # What changed while nobody listened: L looked up again, N's negative
    # entry dropped.
    my ($r, $after) = poll(1.5, sub { get($o{L}) },
                           sub { (upstream($_[0], 'x-tenant-tier') // '') eq 'enterprise' });
    is upstream($r, 'x-tenant-tier'), 'enterprise', 'restart: L refreshed after the reconnect (enterprise)';
    ok $after < 1, sprintf('restart: ... after %.2f s', $after);
    ($r, $after) = poll(1.5, sub { get($N) }, sub { $_[0]{status} == 200 });
    is outcome($r), '200', 'restart: N (negative entry) dropped after the reconnect: 200';
    ok $after < 1, sprintf('restart: ... after %.2f s', $after);
    is upstream($r, 'x-tenant-id'), $t_n->{id}, 'restart: upstream saw N';

    # And notifications work again.
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $K->{id});
    ($r, $after) = poll(1.5, sub { get($o{K}) }, sub { $_[0]{status} != 200 });
    is outcome($r), '403 tenant_suspended', 'restart: K suspended in SQL: 403';
    ok $after < 1, sprintf('restart: ... seen after %.2f s', $after);
}


# The listener's own connection is ended (pg_terminate_backend, as a DBA
# or an idle timeout would): warn, back after about 1 s; a change made in
# between is seen once it is back.
{
    my $t = create_tenant(status => 'active', tier => 'starter');
    my $o = $t->{clerk_organization_id};
    is outcome(ai($o)), '403 feature_not_available', 'terminate: starter: 403';

    my $warns = count_of($STOPPED);
    my $notices = count_of($LISTENING);
    my ($n) = sql_value(q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                           WHERE query = 'LISTEN tenant_changed' AND state = 'idle'});
    is $n, 1, 'terminate: one idle "LISTEN tenant_changed" backend, terminated';
    my $start = time;
    my $w = wait_log($STOPPED, $warns, 2);
    ok defined $w, sprintf('terminate: [warn] stopped listening (%.2f s)', $w // -1);

    # Nobody listens: this notification is lost.  Only while the listener
    # is still away, also once the answer is in: its LISTEN may be
    # registered on the server (and get this notification) before it
    # logs "listening", which it does before it handles notifications.
    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $t->{id});
    my $meanwhile = ai($o);
    if (count_of($LISTENING) == $notices) {
        is outcome($meanwhile), '403 feature_not_available',
            'terminate: the upgrade made meanwhile: not seen yet';
    } else {
        note 'terminate: the listener came back before the answer; not checked';
    }

    my $back = wait_log($LISTENING, $notices, 4);
    my $gap = time - $start;
    ok defined $back && $gap > 0.7 && $gap < 2.5,
        sprintf('terminate: listening again after %.2f s (retry after 1 s)', $gap);

    my ($r, $secs) = poll(1.5, sub { ai($o) }, sub { $_[0]{status} == 200 });
    is outcome($r), '200', 'terminate: the upgrade made while nobody listened is seen';
    ok $secs < 1, sprintf('terminate: ... %.2f s after the listener is back', $secs);

    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    ($r, $secs) = poll(1.5, sub { ai($o) }, sub { $_[0]{status} != 200 });
    is outcome($r), '403 tenant_suspended', 'terminate: and notifications work again';
    ok $secs < 1, sprintf('terminate: ... seen after %.2f s', $secs);
}

# A longer outage: the listener retries after 1 s, then 2 s, 4 s, ...
# (not once a second), and is back at its next try after the restart.
{
    my ($lpid) = error_log() =~ /.*\[notice\] (\d+)#\d+: tenant: listening for tenant changes/s;
    my $warns = count_of($STOPPED);
    my $notices = count_of($LISTENING);

    pg_kill();
    my $killed = time;
    my $mark = log_mark();
    ok defined wait_log($STOPPED, $warns, 3), 'backoff: [warn] stopped listening';

    sleep(4.5 - (time - $killed)) if time - $killed < 4.5;         # no requests: only the listener tries
    my @tries = error_log(since => $mark)
        =~ /\[error\] \Q$lpid\E#\d+: tenant: PostgreSQL failed while connecting/g;
    ok @tries >= 2 && @tries <= 3,
        sprintf('backoff: %d connection attempts in the first 4.5 s of the outage (1 s, 3 s: doubling)',
                scalar @tries) or diag error_log(since => $mark);

    # Rows marked past their TTL by the last reconnect, and not asked for
    # since, are served while the database is down (stale-while-revalidate).
    my $m2 = log_mark();
    my $b = burst(4, sub { get($STALE_ORG, timeout => 5) });
    is_deeply [uniq @{ $b->{outcomes} }], ['200'],
        'backoff: a row past its TTL (marked at the last reconnect), database down: 200';
    like error_log(since => $m2),
        qr/\[warn\].*serving the cached tenant of organization "\Q$STALE_ORG\E" past its TTL/,
        'backoff: ... served stale, with the warning';

    pg_restart();
    my $secs = wait_log($LISTENING, $notices, 8);
    ok defined $secs, sprintf('backoff: listening again %.2f s after the restart, %.2f s after the kill',
                              $secs // -1, time - $killed);
    ok time - $killed > 6, 'backoff: ... at the try 7 s after the kill (1 + 2 + 4)';
    is count_of($STOPPED), $warns + 1, 'backoff: one warning for the whole outage';

    my $t = create_tenant(status => 'active');
    my $o = $t->{clerk_organization_id};
    is outcome(get($o)), '200', 'backoff: a new tenant: 200';
    sql(q{UPDATE public.tenants SET subscription_status = 'suspended' WHERE id = $1}, $t->{id});
    my ($r, $after) = poll(1.5, sub { get($o) }, sub { $_[0]{status} != 200 });
    is outcome($r), '403 tenant_suspended', 'backoff: notifications work again';
    ok $after < 1, sprintf('backoff: ... seen after %.2f s', $after);
}

# The workers die (SIGKILL): the master starts new ones, and the new first
# worker listens.
{
    my $notices = count_of($LISTENING);
    my $mark = log_mark();
    my @old = nginx_workers();
    kill 'KILL', @old;
    my %old = map { $_ => 1 } @old;
    my $start = time;
    sleep 0.05 until (grep { !$old{$_} } nginx_workers()) >= 2 || time - $start > 5;
    is scalar(grep { !$old{$_} } nginx_workers()), 2, 'respawn: two new workers';
    my $secs = wait_log($LISTENING, $notices, 5);
    ok defined $secs, sprintf('respawn: listening again (%.2f s)', $secs // -1);
    is count_of($LISTENING), $notices + 1, 'respawn: one listener';

    # the crashes this provoked, and only those
    error_log_allow(map { qr/\Q$_\E/ }
        error_log(since => $mark) =~ /^(.*\[alert\].*worker process \d+ exited on signal 9.*)$/mg);

    my $t = create_tenant(status => 'active');
    my $o = $t->{clerk_organization_id};
    is outcome(get($o)), '200', 'respawn: a new tenant: 200';
    sql('DELETE FROM public.tenants WHERE id = $1', $t->{id});
    my ($r, $after) = poll(1.5, sub { get($o) }, sub { $_[0]{status} != 200 });
    is outcome($r), '403 unknown_organization', 'respawn: deletion seen';
    ok $after < 1, sprintf('respawn: ... after %.2f s', $after);
}


# --- 5. POST /api/cron/expire-trials ----------------------------------------

sub cron {
    my (%o) = @_;
    my @h = exists $o{auth} ? defined $o{auth} ? (Authorization => $o{auth}) : ()
                            : (Authorization => "Bearer $CRON_SECRET");
    return http(method => $o{method} // 'POST', path => '/api/cron/expire-trials',
                timeout => $o{timeout} // 10, headers => \@h,
                (defined $o{body} ? (body => $o{body}) : ()));
}

sub trial_status {
    my ($id) = @_;
    return sql_value('SELECT subscription_status FROM public.tenants WHERE id = $1', $id);
}

sub audit_rows {
    return sql(q{SELECT tenant_id::text AS tenant_id, actor, action, details
                   FROM public.tenant_audit_log
                  WHERE action = 'trial_expired' ORDER BY id});
}

{
    my %t = (
        old    => create_tenant(status => 'trial', trial_ends_at => -3600, tier => 'professional'),
        minute => create_tenant(status => 'trial', trial_ends_at => -60),
        just   => create_tenant(status => 'trial', trial_ends_at => -5),
        future => create_tenant(status => 'trial', trial_ends_at => 3600),
        active => create_tenant(status => 'active', trial_ends_at => -7200),
        never  => create_tenant(status => 'trial', trial_ends_at => undef),
    );
    my @ended = qw(old minute just);
    my %o = map { $_ => $t{$_}{clerk_organization_id} } keys %t;

    is_deeply [sort map { $_->{id} } sql(q{SELECT id::text AS id FROM public.tenants
                                           WHERE subscription_status = 'trial' AND trial_ends_at < now()})],
        [sort map { $t{$_}{id} } @ended], 'cron: the database has exactly the 3 ended trials';

    # The gateway itself refuses an ended trial from trial_ends_at; the rows
    # are cached with status "trial".
    for my $k (@ended) {
        my $r = get($o{$k});
        is outcome($r), '402 trial_expired', "cron: $k: ended trial, before the job: 402 trial_expired";
        is hstatus($r), 'trial', "cron: $k: ... cached as status trial";
    }
    is outcome(get($o{future})), '200', 'cron: future trial: 200';
    is outcome(get($o{active})), '200', 'cron: active (trial_ends_at in the past): 200';

    # Refused calls change nothing.
    my $near = substr($CRON_SECRET, 0, -1) . (substr($CRON_SECRET, -1) eq 'z' ? 'y' : 'z');
    my @refused = (
        ['one character different', "Bearer $near"],
        ['shorter (a prefix)',      'Bearer ' . substr($CRON_SECRET, 0, -1)],
        ['longer',                  "Bearer ${CRON_SECRET}x"],
        ['no Authorization',        undef],
        ['Basic',                   'Basic ' . 'Y3Jvbjp' . 'zZWNyZXQ='],
        ['Basic with the secret',   "Basic $CRON_SECRET"],
        ['the secret, no scheme',   $CRON_SECRET],
        ['Bearer, empty',           'Bearer '],
        ['the signing key',         "Bearer $SIGNING_KEY"],
    );
    for my $c (@refused) {
        my ($name, $auth) = @$c;
        my $r = cron(auth => $auth);
        my $ok = is $r->{status}, 401, "cron: $name: 401";
        $ok &&= is code($r), 'unauthorized', "cron: $name: code unauthorized";
        $ok &&= like $r->{headers}{'content-type'}[0] // '', qr{^application/problem\+json},
            "cron: $name: problem+json";
        $ok &&= is_deeply $r->{headers}{'www-authenticate'}, ['Bearer'], "cron: $name: WWW-Authenticate: Bearer";
        diag brief($r), ' ', $r->{body} unless $ok;
    }
    {
        my $r = cron(method => 'GET');
        is $r->{status}, 405, 'cron: GET (with the secret): 405';
        $r = cron(method => 'GET', auth => undef);
        is $r->{status}, 405, 'cron: GET without a secret: 405';
        $r = cron(method => 'PUT', body => '{}');
        is $r->{status}, 405, 'cron: PUT: 405';
    }
    is_deeply [map { trial_status($t{$_}{id}) } @ended], [('trial') x 3],
        'cron: refused calls expired nothing';
    is scalar(audit_rows()), 0, 'cron: refused calls wrote no audit rows';

    # The job.
    my $r = cron(body => '{}');
    is $r->{status}, 200, 'cron: POST with the secret: 200' or diag brief($r), ' ', $r->{body};
    like $r->{headers}{'content-type'}[0] // '', qr{^application/json\b}, 'cron: application/json';
    my $j = $r->{json} || {};
    is $j->{expired}, 3, 'cron: expired 3';
    is_deeply [map { $_->{slug} } @{ $j->{tenants} || [] }], [map { $t{$_}{slug} } @ended],
        'cron: tenants by trial end (slugs)';
    is_deeply [map { $_->{id} } @{ $j->{tenants} || [] }], [map { $t{$_}{id} } @ended],
        'cron: ids';
    is_deeply [map { $_->{organizationId} } @{ $j->{tenants} || [] }], [map { $o{$_} } @ended],
        'cron: organizationIds';
    my @iso = map {
        sql_value(q{SELECT to_char(trial_ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                      FROM public.tenants WHERE id = $1}, $t{$_}{id})
    } @ended;
    is_deeply [map { $_->{trialEndsAt} } @{ $j->{tenants} || [] }], \@iso,
        'cron: trialEndsAt, ISO 8601 UTC (' . join(', ', @iso) . ')';
    is_deeply [sort map { join ',', sort keys %$_ } @{ $j->{tenants} || [] }],
        [('id,organizationId,slug,trialEndsAt') x 3], 'cron: members of each tenant';

    is_deeply [map { trial_status($t{$_}{id}) } @ended], [('expired') x 3],
        'cron: database: the 3 ended trials are expired';
    is trial_status($t{future}{id}), 'trial', 'cron: database: future trial untouched';
    is trial_status($t{active}{id}), 'active', 'cron: database: active tenant untouched';
    is trial_status($t{never}{id}), 'trial', 'cron: database: trial without an end untouched';

    my @audit = audit_rows();
    is_deeply [map { $_->{tenant_id} } @audit], [map { $t{$_}{id} } @ended],
        'cron: 3 audit rows, one per expired tenant';
    is_deeply [uniq map { "$_->{actor}/$_->{action}" } @audit], ['cron/trial_expired'],
        "cron: audit rows: actor 'cron', action 'trial_expired'";

    # The gateway sees it at once.
    for my $k (@ended) {
        my ($g, $secs) = poll(1, sub { get($o{$k}) }, sub { hstatus($_[0]) eq 'expired' });
        is outcome($g), '402 trial_expired', "cron: $k: after the job: 402 trial_expired";
        is hstatus($g), 'expired', "cron: $k: ... from the expired row";
        ok $secs < 0.5, sprintf("cron: $k: ... at once (%.2f s)", $secs);
        is $g->{json}{currentTier}, $t{$k}{subscription_tier}, "cron: $k: currentTier";
        like $g->{json}{upgradeUrl} // '', qr/\Q$o{$k}\E/, "cron: $k: upgradeUrl";
    }
    is outcome(get($o{future})), '200', 'cron: future trial: still 200';

    # Twice: harmless.
    $r = cron();
    is $r->{status}, 200, 'cron: again: 200';
    is_deeply $r->{json}, { expired => 0, tenants => [] }, 'cron: again: expired 0, no tenants';
    is scalar(audit_rows()), 3, 'cron: again: no new audit rows';

    # The scheme is case-insensitive.
    for my $scheme (qw(bearer BEARER)) {
        $r = cron(auth => "$scheme $CRON_SECRET");
        is $r->{status}, 200, "cron: \"$scheme <secret>\": 200" or diag brief($r), ' ', $r->{body};
        is $r->{json}{expired}, 0, "cron: \"$scheme <secret>\": expired 0";
    }
}

# Two runs at once: each ended trial is expired (and audited) once.
{
    my @t = map { create_tenant(status => 'trial', trial_ends_at => -100 - $_) } 1 .. 2;
    my $audit = scalar audit_rows();
    my @bg = map { async_http(method => 'POST', path => '/api/cron/expire-trials',
                              headers => [Authorization => "Bearer $CRON_SECRET"]) } 1 .. 2;
    my @r = map { wait_http($_) } @bg;
    is_deeply [map { $_->{status} } @r], [200, 200], 'cron, two at once: both 200';
    is_deeply [sort map { $_->{id} } map { @{ $_->{json}{tenants} || [] } } @r],
        [sort map { $_->{id} } @t], 'cron, two at once: each trial in exactly one answer';
    is scalar(audit_rows()), $audit + 2, 'cron, two at once: one audit row each';
}

# Without the listener, the job drops the cached rows itself.
{
    nginx_reload(http => http_conf(listen => 'off'));
    my $t = create_tenant(status => 'trial', trial_ends_at => -30);
    my $o = $t->{clerk_organization_id};

    my $r = get($o);
    is outcome($r), '402 trial_expired', 'cron, listen off: ended trial: 402';
    is hstatus($r), 'trial', 'cron, listen off: cached as trial';

    $r = cron();
    is $r->{status}, 200, 'cron, listen off: 200';
    is_deeply [map { $_->{organizationId} } @{ $r->{json}{tenants} || [] }], [$o],
        'cron, listen off: expired the one tenant';

    my $b = burst(8, sub { get($o) });
    my @st = uniq map { hstatus(get($o)) } 1 .. 4;
    is_deeply [uniq @{ $b->{outcomes} }], ['402 trial_expired'], 'cron, listen off: 402 afterwards';
    is_deeply \@st, ['expired'], 'cron, listen off: the expired row at once, both workers (ttl=30s)';
}


# --- 6. configuration --------------------------------------------------------

{
    my $conf = sub {
        my ($secret, $listen) = @_;
        my $h = http_conf(listen => 'off', secret => $secret);
        $h =~ s/tenant_database_listen off;/$listen/ if defined $listen;
        return $h;
    };

    my $c = nginx_conf_test(http => $conf->($CRON_SECRET));
    ok $c->{ok}, 'config: the base configuration passes nginx -t' or diag $c->{output};

    for my $s (['tooshort', 'tooshort'], ['31 characters', 'x' x 31]) {
        my ($name, $secret) = @$s;
        $c = nginx_conf_test(http => $conf->($secret));
        ok !$c->{ok}, "config: tenant_cron_secret $name: nginx -t fails";
        like $c->{output}, qr/"tenant_cron_secret" must be at least 32 characters/,
            "config: tenant_cron_secret $name: clear message" or diag $c->{output};
    }
    $c = nginx_conf_test(http => $conf->('y' x 32));
    ok $c->{ok}, 'config: tenant_cron_secret of 32 characters passes' or diag $c->{output};

    $c = nginx_conf_test(http => $conf->($CRON_SECRET, 'tenant_database_listen "bogus=1 password=hunter2";'));
    ok !$c->{ok}, 'config: tenant_database_listen "bogus=1": nginx -t fails';
    like $c->{output}, qr/invalid PostgreSQL connection string/,
        'config: tenant_database_listen "bogus=1": clear message' or diag $c->{output};
    unlike $c->{output}, qr/hunter2/, 'config: ... the conninfo (password) is not quoted';

    $c = nginx_conf_test(http => $conf->($CRON_SECRET, "tenant_database_listen off;\n    tenant_database_listen off;"));
    ok !$c->{ok}, 'config: tenant_database_listen twice: nginx -t fails';
    like $c->{output}, qr/"tenant_database_listen" directive is duplicate/, 'config: ... is duplicate'
        or diag $c->{output};

    $c = nginx_conf_test(http => $conf->($CRON_SECRET,
        'tenant_database_listen "postgresql://postgres@localhost:5432/capliquify";'));
    ok $c->{ok}, 'config: tenant_database_listen with a URL passes' or diag $c->{output};
}


# --- 6b. known bugs -------------------------------------------------------------

# tenant_cron_secret takes any string of 32 characters, but the job only
# reads a token68 bearer token ([A-Za-z0-9-._~+/]+=*): a secret with any
# other character passes nginx -t and can never be presented.
# (scripts/render-conf.sh checks CRON_SECRET for this; the directive does
# not.)
{
    my $odd = 'abcdefghijklmnopqrstuvwxyz!0123456789';
    my $c = nginx_conf_test(http => http_conf(secret => $odd));
    my $r;
    if ($c->{ok}) {
        nginx_reload(http => http_conf(secret => $odd));
        $r = cron(auth => "Bearer $odd");
        nginx_reload(http => http_conf());
    }
    # a secret no "Authorization: Bearer" header can carry ('!' is not a
    # token68 character) is refused at configuration time
    ok !$c->{ok} || $r->{status} == 200,
        'config: a tenant_cron_secret nginx -t accepts can be presented'
        or diag $c->{ok} ? 'nginx -t accepted it; the job answered ' . brief($r)
                         : $c->{output};
    like $c->{output}, qr/"tenant_cron_secret" must be a bearer token/,
        'config: ... with a clear message';
}

# tenant_cron_expire_trials without tenant_cache (an instance that only
# runs the job): nginx -t accepts it, and a run that expires a trial
# crashes the worker (the cached rows are dropped from a cache that does
# not exist).
{
    my $cron_only = <<"EOF2";
    tenant_database     "%%PG%%" timeout=${TIMEOUT}s;
    tenant_cron_secret  $CRON_SECRET;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        location = /api/cron/expire-trials {
            tenant_cron_expire_trials;
        }
    }
EOF2
    my $c = nginx_conf_test(http => $cron_only);
    my ($r, @crash, $t);
    if ($c->{ok}) {
        nginx_reload(http => $cron_only);
        $r = cron();
        is_deeply $r->{json}, { expired => 0, tenants => [] },
            'no tenant_cache: nothing to expire: 200, expired 0' or diag brief($r);

        $t = create_tenant(status => 'trial', trial_ends_at => -10);
        my $mark = log_mark();
        $r = cron();
        sleep 0.3;
        @crash = error_log(since => $mark)
            =~ /^(.*\[alert\].*worker process \d+ exited on signal \d+.*)$/mg;
        error_log_allow(map { qr/\Q$_\E/ } @crash);     # this one, reported below
        is trial_status($t->{id}), 'expired', 'no tenant_cache: the trial was expired in the database';
    }
    # an instance that only runs the job (no tenant_cache) answers too
    ok !$c->{ok} || ($r->{status} == 200 && ($r->{json}{expired} // 0) == 1 && !@crash),
        'no tenant_cache: the job answers 200 with the expired trial (or nginx -t refuses it)'
        or diag 'answer: ', brief($r), ' crash: ', join(' | ', @crash);
    nginx_reload(http => http_conf());
}


# --- 6c. the job without tenant_cron_secret ---------------------------------

# ngx_tenant_cron.c, ngx_tenant_cron_handler: tenant_cron_expire_trials in a
# configuration without tenant_cron_secret.  nginx -t accepts it; the job
# must fail closed: 503 cron_unavailable (problem+json) whatever the
# Authorization header says, one [error] per call, and no trial expired.
{
    my $no_secret = http_conf() =~ s/^[ \t]*tenant_cron_secret[^\n]*\n//mr;
    unlike $no_secret, qr/tenant_cron_secret/, 'no secret: the directive is gone from the configuration';
    my $c = nginx_conf_test(http => $no_secret);
    ok $c->{ok}, 'no secret: nginx -t accepts tenant_cron_expire_trials without tenant_cron_secret'
        or diag $c->{output};

    SKIP: {
        skip 'nginx -t refuses it: the handler\'s check cannot be reached', 1 unless $c->{ok};

        nginx_reload(http => $no_secret);
        my $t = create_tenant(status => 'trial', trial_ends_at => -50);
        my $audit = scalar audit_rows();
        my $mark = log_mark();

        my @auth = (['the old secret', "Bearer $CRON_SECRET"], ['no Authorization', undef],
                    ['an empty bearer token', 'Bearer '], ['any token', 'Bearer x']);
        for my $a (@auth) {
            my ($name, $auth) = @$a;
            my $r = cron(auth => $auth, body => '{}');
            my $ok = is $r->{status}, 503, "no secret, $name: 503";
            $ok &&= is code($r), 'cron_unavailable', "no secret, $name: cron_unavailable";
            $ok &&= like $r->{headers}{'content-type'}[0] // '', qr{^application/problem\+json},
                "no secret, $name: problem+json";
            ok !exists $r->{json}{expired}, "no secret, $name: no job answer";
            diag brief($r), ' ', $r->{body} unless $ok;
        }
        my $r = cron(method => 'GET');
        is $r->{status}, 405, 'no secret: GET still 405';

        is trial_status($t->{id}), 'trial', 'no secret: the ended trial was not expired';
        is scalar(audit_rows()), $audit, 'no secret: no audit row';
        my @err = error_log(since => $mark)
            =~ /^(.*\[error\].*tenant_cron_expire_trials needs tenant_database and tenant_cron_secret.*)$/mg;
        is scalar(@err), scalar(@auth), 'no secret: one [error] per refused call'
            or diag error_log(since => $mark);

        nginx_reload(http => http_conf());
        $r = cron();
        is $r->{status}, 200, 'no secret: with the secret back, the job runs: 200';
        is trial_status($t->{id}), 'expired', 'no secret: ... and expires that trial';
    }
}


# --- 7. the job while the database is down ----------------------------------

{
    pg_kill();
    for my $i (1 .. 2) {
        my $r = cron(timeout => $TIMEOUT + 5);
        is $r->{status}, 503, "cron, database down, try $i: 503" or diag brief($r), ' ', $r->{body};
        is code($r), 'tenant_unavailable', "cron, database down, try $i: tenant_unavailable";
        like $r->{headers}{'content-type'}[0] // '', qr{^application/problem\+json},
            "cron, database down, try $i: problem+json";
        like $r->{headers}{'retry-after'}[0] // '', qr/^\d+$/, "cron, database down, try $i: Retry-After";
        ok $r->{elapsed} < $TIMEOUT + 0.5,
            sprintf("cron, database down, try %d: answered in %.2f s (timeout=%ds)", $i, $r->{elapsed}, $TIMEOUT);
    }
    my $r = cron(auth => 'Bearer nope');
    is $r->{status}, 401, 'cron, database down, wrong secret: still 401';
}

unlike error_log(), qr/\[crit\]/, 'error log: no [crit]';

done_testing();
