#!/usr/bin/perl
# HTTP-level edge cases of the admin API, the cron job, refusals, the
# variables and the rate limits (docs/coverage-gaps.md rows C-39..46,
# C-53..55, D-4..10, D-19, D-21, D-24, D-26..29, D-31):
#
#   1 bare        tenant_health, tenant_metrics and the cron job without
#                 tenant_database or tiers: 503 unhealthy with an [error]
#                 line; 404; 503 cron_unavailable with an [error] line
#   2 admin URIs  answered before any SQL (the database is stalled
#                 meanwhile): /tenantsX 404, an ident over 64 bytes 404,
#                 after= over 63 bytes, empty or with 8-bit bytes 400
#   3 bodies      a chunked body over client_max_body_size: 413 from the
#                 body read; a malformed chunked body on an admin GET or
#                 DELETE, an admin refusal, the cron job, a CORS preflight
#                 and an access-phase refusal: nginx's 400, never a 500,
#                 nothing written
#   4 purge       DELETE ?purge= other than "true" cancels: row and schema
#                 kept
#   5 variables   $tenant_slug, $tenant_schema, $tenant_org_role to the
#                 upstream and the access log; empty on a 401, set on a
#                 refusal after the lookup (403 tenant_suspended); a
#                 redirect the gateway never saw logs none of them and is
#                 not counted
#   6 log level   tenant_refusal_log_level warn / error per location,
#                 default info
#   7 requests    an open-ended trial (trial_ends_at NULL) is admitted; an
#                 empty tenant_upgrade_url leaves out upgradeUrl; a CORS
#                 preflight whose Access-Control-Request-Method comes after
#                 20 other headers; a same-length header that is not it;
#                 X-Organization-IX is neither read nor removed
#   8 rate        an override on a tier without rate and no default: per
#                 60 s; the per-user limit passes, the tenant's refuses:
#                 the tenant's 429; an empty tenant_rate_limit_by key: only
#                 the tenant's limit, no "user" item
#   9 admin role  tenant_admin_role with claim=public_metadata.gw-role
#                 (path with _ and -); after a reload, a role without
#                 claim= reads metadata.role
#  10 tiers       more than 16 tier names across reloads: the 17th counts
#                 as tier="other" in /metrics
#  11 lock time   tenant_database timeout=900ms: the admin writes run under
#                 lock_timeout 450ms (half), so a write waiting on a row
#                 lock is answered 503 from PostgreSQL's 55P03, not by the
#                 pool's timeout

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use DBI         ();
use JSON::XS    ();
use Time::HiRes qw(time sleep);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = '155eda75' x 8;
my $CRON_SECRET = 'edges-155-cron-secret-0123456789abcdef';
my $COLL        = '/api/admin/tenants';
my $NGX;                            # nginx_start's answer (its dir)

# %%TIMEOUT%%, %%ROLE%% and %%TIERS%% are replaced by http_conf().
my $HTTP = <<'EOF';
    tenant_database     "%%PG%%" timeout=%%TIMEOUT%%;
    tenant_cache        zone=tenants:1m ttl=30s;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  %%KEY%%;
    tenant_cron_secret  %%CRON%%;
    tenant_rate_limit   zone=rl:1m;
    %%ROLE%%
%%TIERS%%

    log_format edges 'uri=$request_uri status=$status outcome=$tenant_outcome '
                     'slug=$tenant_slug schema=$tenant_schema role=$tenant_org_role';

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/edges.log edges;

        location /api/admin/tenants {
            tenant_gateway       admin;
            client_max_body_size 1k;
            tenant_admin;
        }

        location = /api/cron/expire-trials {
            tenant_cron_expire_trials;
        }

        location = /metrics {
            tenant_metrics;
        }

        location /api/ {
            tenant_gateway   on;
            proxy_set_header X-V-Slug   $tenant_slug;
            proxy_set_header X-V-Schema $tenant_schema;
            proxy_set_header X-V-Role   $tenant_org_role;
            proxy_pass       http://%%ECHO%%;
        }

        location /api/warn/ {
            tenant_gateway           on;
            tenant_refusal_log_level warn;
            proxy_pass               http://%%ECHO%%;
        }

        location /api/err/ {
            tenant_gateway           on;
            tenant_refusal_log_level error;
            proxy_pass               http://%%ECHO%%;
        }

        location /api/ai/ {
            tenant_gateway         on;
            tenant_require_feature ai_forecasting;
            tenant_upgrade_url     "";
            proxy_pass             http://%%ECHO%%;
        }

        location /api/ai2/ {
            tenant_gateway         on;
            tenant_require_feature ai_forecasting;
            tenant_upgrade_url     https://billing.example/up;
            proxy_pass             http://%%ECHO%%;
        }

        location /api/rl/ {
            tenant_gateway       on;
            tenant_rate_limit_by $http_x_caller rate=100r/m;
            proxy_pass           http://%%ECHO%%;
        }

        location /api/rl1/ {
            tenant_gateway       on;
            tenant_rate_limit_by $http_x_caller rate=1r/m;
            proxy_pass           http://%%ECHO%%;
        }

        location /plain/ {
            root       %%DIR%%/no-such-root;
            error_page 404 = /fallback;
        }

        location = /fallback {
            return 200 "fallback\n";
        }
    }
EOF

my $TIERS3 = <<'EOF';
    tenant_tier starter      features=dashboard;
    tenant_tier professional features=dashboard,ai_forecasting;
    tenant_tier enterprise   features=*;
EOF

# starter again, 13 new names (slots 4 to 16 of the metrics zone, after
# starter, professional and enterprise) and "late", the 17th name.
my $TIERS_MANY = join '', "    tenant_tier starter features=dashboard;\n",
    "    tenant_tier x01 features=dashboard,ai_forecasting;\n",
    map({ sprintf "    tenant_tier x%02d features=dashboard;\n", $_ } 2 .. 13),
    "    tenant_tier late features=dashboard;\n";

sub http_conf {
    my (%o) = @_;
    my %v = (TIMEOUT => $o{timeout} // '3s',
             ROLE    => $o{role} // 'tenant_admin_role gw-admin claim=public_metadata.gw-role;',
             TIERS   => $o{tiers} // $TIERS3,
             KEY     => $SIGNING_KEY,
             CRON    => $CRON_SECRET);
    return $HTTP =~ s/%%(TIMEOUT|ROLE|TIERS|KEY|CRON)%%/$v{$1}/gr;
}

my $JSON = JSON::XS->new->utf8->canonical;

my $ADMIN = mint_token(sub => 'user_admin_155', public_metadata => { 'gw-role' => 'gw-admin' },
                       exp => int(time) + 600);


# --- local helpers ----------------------------------------------------------

sub code  { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub ctype { my ($r) = @_; return ($r->{headers}{'content-type'} || [])->[0] // '' }
sub hdr   { my ($r, $n) = @_; return ($r->{headers}{lc $n} || [])->[0] }
sub up    { my ($r, $n) = @_; return ($r->{json}{headers}{lc $n} || [])->[0] }
sub brief { my ($r) = @_; return { status => $r->{status}, body => $r->{body}, error => $r->{error} } }

# A refusal: status, problem+json, code.
sub problem {
    my ($r, $status, $code, $name) = @_;
    my $ok = is $r->{status}, $status, "$name: $status";
    $ok &&= like ctype($r), qr{^application/problem\+json}, "$name: problem+json";
    $ok &&= is code($r), $code, "$name: code $code";
    diag explain brief($r) unless $ok;
    return $ok;
}

sub admin {
    my ($method, $path, %o) = @_;
    my $token = exists $o{token} ? $o{token} : $ADMIN;
    my $body  = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
    return http(method => $method, path => $path, timeout => $o{timeout} // 10,
                headers => [(defined $token ? (Authorization => "Bearer $token") : ()),
                            (defined $body ? ('Content-Type' => 'application/json') : ())],
                (defined $body ? (body => $body) : ()));
}

my %TOKEN;

# A gateway request as a member of $org (v1 claims, role org:member).
sub gw {
    my ($org, $path, %o) = @_;
    my $token = $o{token} // ($TOKEN{$org} //= mint_token(
        org => { id => $org, role => 'org:member' }, sub => "user_of_$org",
        exp => int(time) + 600));
    return http(path => $path, headers => [Authorization => "Bearer $token",
                                           @{ $o{headers} || [] }]);
}

# A request sent exactly as given: method, path, headers, then a chunked
# body of raw bytes.
sub chunked {
    my ($method, $path, $body, @h) = @_;
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n";
    for (my $i = 0; $i < @h; $i += 2) {
        $req .= "$h[$i]: $h[$i + 1]\r\n";
    }
    $req .= "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n$body";
    return http(raw => $req);
}

# The error log lines written since $mark that name $uri.
sub log_lines {
    my ($mark, $uri) = @_;
    return grep { /request: "\S+ \Q$uri\E HTTP/ } split /\n/, error_log(since => $mark);
}

# The edges access log line of $uri (the last one).
sub access_line {
    my ($uri) = @_;
    my $file = "$NGX->{dir}/edges.log";
    my ($line) = retry_until(5, sub {
        open my $fh, '<', $file or return undef;
        my @l = grep { /^uri=\Q$uri\E / } <$fh>;
        return $l[-1];
    }, sub { defined $_[0] });
    chomp $line if defined $line;
    return $line // '';
}

sub fields_of {
    my ($line) = @_;
    return { map { split /=/, $_, 2 } split / /, $line };
}

sub metrics_requests {
    my $r = http(path => '/metrics');
    my %m;
    while ($r->{body} =~ /^tenant_requests_total\{outcome="([^"]*)",tier="([^"]*)"\} (\d+)$/mg) {
        $m{"$1/$2"} = $3;
    }
    return \%m;
}

sub sum { my $s = 0; $s += $_ for @_; return $s }

sub row { my ($id) = @_; my ($r) = sql('SELECT * FROM public.tenants WHERE id = $1', $id); return $r }

sub schema_exists {
    return sql_value('SELECT count(*) FROM pg_namespace WHERE nspname = $1', $_[0]);
}

sub tenant_count { return sql_value('SELECT count(*) FROM public.tenants') }


# --- 1. bare: no tenant_database, no tiers ----------------------------------

nginx_start(http => <<"EOF");
    tenant_cron_secret $CRON_SECRET;

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /api/health { tenant_health; }
        location = /metrics    { tenant_metrics; }
        location = /api/cron/expire-trials { tenant_cron_expire_trials; }
        location /api/admin/tenants { tenant_admin; }
    }
EOF

{
    my $mark = log_mark();
    my $r = http(path => '/api/health');
    is $r->{status}, 503, 'bare: tenant_health without tenant_database: 503';
    is_deeply [@{ $r->{json} || {} }{qw(status database)}], ['unhealthy', 'disconnected'],
        'bare: health says unhealthy, disconnected' or diag explain brief($r);
    my @l = grep { /\[error\].*tenant: tenant_health without tenant_database/ }
            split /\n/, error_log(since => $mark);
    is scalar(@l), 1, 'bare: one [error] line says why';

    $r = http(path => '/metrics');
    is $r->{status}, 404, 'bare: tenant_metrics without tenant_database or tiers: 404';
    $r = http(method => 'POST', path => '/metrics', body => 'x');
    is $r->{status}, 405, 'bare: POST /metrics: 405 (the method is checked first)';

    $mark = log_mark();
    $r = http(method => 'POST', path => '/api/cron/expire-trials',
              headers => [Authorization => "Bearer $CRON_SECRET"]);
    is $r->{status}, 503, 'bare: the cron job with its secret but without tenant_database: 503';
    is(($r->{json} || {})->{code}, 'cron_unavailable', 'bare: ... cron_unavailable');
    @l = grep { /\[error\].*tenant: tenant_cron_expire_trials needs tenant_database/ }
         split /\n/, error_log(since => $mark);
    is scalar(@l), 1, 'bare: ... one [error] line says why';

    # the admin API cannot work either: 503, not 403 admin_required (no
    # token can fix a missing tenant_database)
    for my $m (['GET', "$COLL?limit=1"], ['POST', $COLL], ['DELETE', "$COLL/x"]) {
        $mark = log_mark();
        $r = http(method => $m->[0], path => $m->[1],
                  ($m->[0] eq 'POST' ? (body => '{}') : ()),
                  headers => [Authorization => 'Bearer ' . mint_token(role => 'admin')]);
        is $r->{status}, 503, "bare: tenant_admin without tenant_database, $m->[0]: 503";
        is $r->{headers}{'content-type'}[0], 'application/problem+json',
            'bare: ... problem+json';
        is(($r->{json} || {})->{code}, 'admin_unavailable', 'bare: ... admin_unavailable');
        @l = grep { /\[error\].*tenant: tenant_admin needs tenant_database/ }
             split /\n/, error_log(since => $mark);
        is scalar(@l), 1, 'bare: ... one [error] line says why';
    }
}

nginx_stop();


# --- setup ------------------------------------------------------------------

my $PG  = pg_start();
$NGX = nginx_start(http => http_conf());

{
    my $r = admin(GET => "$COLL?limit=1");
    is $r->{status}, 200, 'setup: the gw-admin token is admitted' or diag explain brief($r);
    my $m = http(method => 'POST', path => '/metrics', body => 'x');
    is $m->{status}, 405, 'metrics: POST /metrics with metrics configured: 405';
    is http(path => '/metrics')->{status}, 200, 'metrics: GET /metrics: 200';
}


# --- 2. admin URIs answered before any SQL -------------------------------------

my $T_ADMIN = create_tenant(status => 'active');
my $before  = tenant_count();

{
    # The database stops answering: an answer that needed SQL would come
    # after the pool's 3 s timeout as 503 (and mark the pool down, so the
    # next sections would fail too); these come at once.
    pg_stall();
    my %r = (
        tenantsX   => admin(GET => "${COLL}X"),
        tenants_x  => admin(GET => "${COLL}_x/$T_ADMIN->{slug}"),
        long65     => admin(GET => "$COLL/" . ('a' x 65)),
        long65d    => admin(DELETE => "$COLL/" . ('a' x 65)),
        after64    => admin(GET => "$COLL?after=" . ('a' x 64)),
        afterempty => admin(GET => "$COLL?after="),
        after8bit  => admin(GET => "$COLL?after=caf\xc3\xa9"),
    );
    pg_unstall();

    problem $r{tenantsX}, 404, 'not_found', 'admin: /api/admin/tenantsX (prefix continued)';
    problem $r{tenants_x}, 404, 'not_found', 'admin: /api/admin/tenants_x/<slug>';
    problem $r{long65}, 404, 'not_found', 'admin: GET an ident of 65 bytes';
    problem $r{long65d}, 404, 'not_found', 'admin: DELETE an ident of 65 bytes';
    problem $r{after64}, 400, 'invalid_request', 'admin: after= of 64 bytes';
    is $r{after64}{json}{field}, 'after', 'admin: after= of 64 bytes: field after';
    problem $r{afterempty}, 400, 'invalid_request', 'admin: after= empty';
    problem $r{after8bit}, 400, 'invalid_request', 'admin: after= with raw UTF-8 bytes';
    my @slow = grep { $r{$_}{elapsed} > 2 } sort keys %r;
    is_deeply \@slow, [], 'admin: all answered within 2 s with the database stalled (no SQL)';

    my $r = admin(GET => "$COLL/" . ('a' x 64));
    problem $r, 404, 'not_found', 'admin: an ident of 64 bytes is looked up (unknown slug)';
    is admin(GET => "$COLL/$T_ADMIN->{slug}")->{status}, 200, 'admin: the database answers again';
}


# --- 3. bodies: over the limit, malformed --------------------------------------

{
    my $mark = log_mark();
    my $json = $JSON->encode({ name => 'x' x 2000, slug => 'too-big', clerkOrganizationId => 'org_too_big',
                               subscriptionTier => 'starter', ownerEmail => 'a@example.com' });
    my $r = chunked(POST => "$COLL?c42=chunked", sprintf("%x\r\n%s\r\n0\r\n\r\n", length $json, $json),
                    Authorization => "Bearer $ADMIN", 'Content-Type' => 'application/json');
    is $r->{status}, 413, 'body: chunked POST over client_max_body_size 1k: 413';
    ok scalar(grep { /too large chunked body/ } split /\n/, error_log(since => $mark)),
        'body: nginx logged a too large chunked body';
    is tenant_count(), $before, 'body: 413: no tenant made';
    like access_line("$COLL?c42=chunked"), qr/ status=413 outcome=admitted /,
        'body: the access phase had admitted the admin (the 413 came from tenant_admin\'s body read)';

    # With Content-Length nginx refuses it itself, before the access phase.
    $r = admin(POST => "$COLL?c42=length", body => $json);
    is $r->{status}, 413, 'body: Content-Length over client_max_body_size: 413';
    like access_line("$COLL?c42=length"), qr/ status=413 outcome=- /,
        'body: ... answered by nginx before the access phase (no outcome)';

    # malformed chunked bodies: "zz" is not a chunk size
    my $bad = "zz\r\n";
    my @auth = (Authorization => "Bearer $ADMIN");
    my %cases = (
        'admin GET of a tenant'            => ['GET', "$COLL/$T_ADMIN->{slug}", @auth],
        'admin GET of the list'            => ['GET', "$COLL?limit=2", @auth],
        'admin DELETE of a tenant'         => ['DELETE', "$COLL/$T_ADMIN->{slug}", @auth],
        'admin refusal (/tenantsX)'        => ['GET', "${COLL}X", @auth],
        'admin location, no token (access-phase refusal)' => ['GET', $COLL],
        'cron job, right secret'           => ['POST', '/api/cron/expire-trials',
                                               Authorization => "Bearer $CRON_SECRET"],
        'cron job, wrong secret'           => ['POST', '/api/cron/expire-trials',
                                               Authorization => 'Bearer wrong'],
        'CORS preflight'                   => ['OPTIONS', '/api/items',
                                               Origin => 'https://app.example',
                                               'Access-Control-Request-Method' => 'POST'],
        'gateway refusal (no token)'       => ['GET', '/api/items'],
    );

    my $trial = create_tenant(status => 'trial', trial_ends_at => -3600);
    my $audit = sql_value('SELECT count(*) FROM public.tenant_audit_log');

    for my $what (sort keys %cases) {
        my ($method, $path, @h) = @{ $cases{$what} };
        my $mark = log_mark();
        my $r = chunked($method, $path, $bad, @h);
        is $r->{status}, 400, "malformed chunked body, $what: 400" or diag explain brief($r);
        unlike ctype($r), qr/json/, "malformed chunked body, $what: nginx's own page";
        ok scalar(grep { /client sent invalid chunked body/ } split /\n/, error_log(since => $mark)),
            "malformed chunked body, $what: nginx logged the invalid chunked body";
    }

    is row($T_ADMIN->{id})->{subscription_status}, 'active', 'malformed: the DELETE cancelled nothing';
    is row($trial->{id})->{subscription_status}, 'trial', 'malformed: the cron job expired nothing';
    is sql_value('SELECT count(*) FROM public.tenant_audit_log'), $audit, 'malformed: no audit row';

    $r = http(method => 'POST', path => '/api/cron/expire-trials',
              headers => [Authorization => "Bearer $CRON_SECRET"]);
    is $r->{status}, 200, 'cron: without a body: 200' or diag explain brief($r);
    is row($trial->{id})->{subscription_status}, 'expired', 'cron: then the ended trial is expired';
}


# --- 4. DELETE ?purge= other than "true" -----------------------------------------

{
    for my $q ('purge=false', 'purge=TRUE', 'purge=1', 'purge=true1', 'purge=') {
        my $t = create_tenant(status => 'active');
        ok schema_exists($t->{schema_name}), "purge: $q: schema $t->{schema_name} exists before";
        my $r = admin(DELETE => "$COLL/$t->{slug}?$q");
        is $r->{status}, 200, "purge: DELETE ?$q: 200" or diag explain brief($r);
        is $r->{json}{subscriptionStatus}, 'cancelled', "purge: ?$q: the answer says cancelled";
        my $row = row($t->{id});
        is $row && $row->{subscription_status}, 'cancelled', "purge: ?$q: the row is kept, cancelled";
        is schema_exists($t->{schema_name}), 1, "purge: ?$q: the schema is kept";
    }

    my $t = create_tenant(status => 'active');
    is admin(DELETE => "$COLL/$t->{slug}?purge=true")->{status}, 200, 'purge: ?purge=true: 200';
    ok !row($t->{id}), 'purge: ?purge=true: the row is gone';
    is schema_exists($t->{schema_name}), 0, 'purge: ?purge=true: the schema is gone';
}


# --- 5. variables -------------------------------------------------------------

{
    my $t = create_tenant(status => 'active');
    my $org = $t->{clerk_organization_id};

    my $v1 = mint_token(org => { id => $org, role => 'org:admin' }, sub => 'user_v1');
    my $r = gw($org, '/api/vars?v=1', token => $v1);
    is $r->{status}, 200, 'vars: v1 token admitted' or diag explain brief($r);
    is_deeply [map { up($r, $_) } qw(x-v-slug x-v-schema x-v-role)],
              [$t->{slug}, $t->{schema_name}, 'org:admin'],
        'vars: $tenant_slug, $tenant_schema, $tenant_org_role (v1) reach the upstream';
    is_deeply fields_of(access_line('/api/vars?v=1')),
              { uri => '/api/vars?v=1', status => 200, outcome => 'admitted',
                slug => $t->{slug}, schema => $t->{schema_name}, role => 'org:admin' },
        'vars: and the access log';

    my $v2 = mint_token(org => { id => $org, role => 'admin' }, v => 2, sub => 'user_v2');
    $r = gw($org, '/api/vars?v=2', token => $v2);
    is up($r, 'x-v-role'), 'admin', 'vars: $tenant_org_role of a v2 token: admin';

    my $norole = mint_token(org => $org, sub => 'user_norole');
    $r = gw($org, '/api/vars?v=none', token => $norole);
    is $r->{status}, 200, 'vars: token without a role admitted';
    ok !defined up($r, 'x-v-role'), 'vars: no role: $tenant_org_role empty (header not sent)';

    # refusals
    http(path => '/api/vars?r=401');
    is_deeply fields_of(access_line('/api/vars?r=401')),
              { uri => '/api/vars?r=401', status => 401, outcome => 'authentication_required',
                slug => '-', schema => '-', role => '-' },
        'vars: 401 (no token): slug, schema, role empty';

    gw($org, '/api/vars?r=bad', token => mint_token(key => 'other', org => { id => $org, role => 'org:admin' }));
    is_deeply fields_of(access_line('/api/vars?r=bad')),
              { uri => '/api/vars?r=bad', status => 401, outcome => 'invalid_token',
                slug => '-', schema => '-', role => '-' },
        'vars: 401 (unknown key, org:admin in it): the refused token\'s role is not logged';

    my $s = create_tenant(status => 'suspended');
    gw($s->{clerk_organization_id}, '/api/vars?r=403',
       token => mint_token(org => { id => $s->{clerk_organization_id}, role => 'org:admin' }));
    is_deeply fields_of(access_line('/api/vars?r=403')),
              { uri => '/api/vars?r=403', status => 403, outcome => 'tenant_suspended',
                slug => $s->{slug}, schema => $s->{schema_name}, role => 'org:admin' },
        'vars: 403 tenant_suspended: the tenant was found, so slug/schema/role are set (as documented)';

    # a redirect the gateway never saw: no ctx, no variables, not counted
    my $m0 = metrics_requests();
    $r = http(path => '/plain/missing?d28');
    is $r->{status}, 200, 'redirect: 404 in an unprotected location, error_page = /fallback: 200';
    is $r->{body}, "fallback\n", 'redirect: the fallback answered';
    is_deeply fields_of(access_line('/plain/missing?d28')),
              { uri => '/plain/missing?d28', status => 200, outcome => '-',
                slug => '-', schema => '-', role => '-' },
        'redirect: the access log has no tenant variable';
    is sum(values %{ metrics_requests() }), sum(values %$m0),
        'redirect: tenant_requests_total unchanged';
}


# --- 6. tenant_refusal_log_level ----------------------------------------------

{
    # told apart by path: the log's request line stops at "?"
    my %want = ('/api/items/lvl' => 'info', '/api/warn/x/lvl' => 'warn', '/api/err/x/lvl' => 'error');
    for my $uri (sort keys %want) {
        my $mark = log_mark();
        my $r = http(path => $uri);
        is $r->{status}, 401, "log level: $uri: 401";
        my ($line) = retry_until(3, sub { [log_lines($mark, $uri)] }, sub { @{ $_[0] } });
        my @refused = grep { /tenant: refused with 401 authentication_required/ } @$line;
        is scalar(@refused), 1, "log level: $uri: one refusal line";
        like $refused[0] // '', qr/\[\Q$want{$uri}\E\]/, "log level: $uri: at [$want{$uri}]";
    }
}


# --- 7. requests: trials, upgrade URL, preflight, look-alike headers ------------

{
    my $open = create_tenant(status => 'trial', trial_ends_at => undef);
    ok !defined row($open->{id})->{trial_ends_at}, 'trial: trial_ends_at is NULL';
    my $r = gw($open->{clerk_organization_id}, '/api/items?trial');
    is $r->{status}, 200, 'trial: an open-ended trial is admitted' or diag explain brief($r);
    is up($r, 'x-tenant-id'), $open->{id}, 'trial: the upstream sees the tenant';

    my $ended = create_tenant(status => 'trial', trial_ends_at => -60);
    problem gw($ended->{clerk_organization_id}, '/api/items?trial2'), 402, 'trial_expired',
        'trial: an ended trial (contrast)';

    # tenant_upgrade_url "" and a literal one (this used $arg_u, a
    # variable the client sets: refused since issue 12, item 5)
    my $st = create_tenant(status => 'active', tier => 'starter');
    $r = gw($st->{clerk_organization_id}, '/api/ai/x');
    problem $r, 403, 'feature_not_available', 'upgrade: starter on an ai_forecasting route';
    ok !exists $r->{json}{upgradeUrl}, 'upgrade: tenant_upgrade_url empty: no upgradeUrl member';
    is $r->{json}{requiredTier}, 'professional', 'upgrade: requiredTier still there';
    $r = gw($st->{clerk_organization_id}, '/api/ai2/x');
    is $r->{json}{upgradeUrl}, 'https://billing.example/up', 'upgrade: a literal tenant_upgrade_url: upgradeUrl';

    # preflight: Access-Control-Request-Method after 25 other headers (the
    # request's header list continues in a second part after 20)
    my @many = map { ("X-Filler-$_" => "v$_") } 1 .. 24;
    $r = http(method => 'OPTIONS', path => '/api/items?pf',
              headers => [Origin => 'https://app.example', @many,
                          'Access-Control-Request-Method' => 'POST']);
    is $r->{status}, 204, 'preflight: Access-Control-Request-Method as the 26th header: 204';
    $r = http(method => 'OPTIONS', path => '/api/items?pf2',
              headers => [Origin => 'https://app.example', @many,
                          'Access-Control-Request-Methox' => 'POST']);
    problem $r, 401, 'authentication_required',
        'preflight: Access-Control-Request-Methox (same length) is not a preflight';

    # X-Organization-IX: 17 bytes, not X-Organization-ID
    my $a = create_tenant(status => 'active');
    my $org = $a->{clerk_organization_id};
    $r = gw($org, '/api/items?ix', headers => ['X-Organization-IX' => 'org_somebody_else']);
    is $r->{status}, 200, 'X-Organization-IX: not read as the organization: 200' or diag explain brief($r);
    is up($r, 'x-organization-ix'), 'org_somebody_else', 'X-Organization-IX: kept for the upstream';
    is_deeply $r->{json}{headers}{'x-organization-id'}, [$org],
        'X-Organization-IX: X-Organization-ID is the token\'s';
    $r = gw($org, '/api/items?id', headers => ['X-Organization-ID' => 'org_somebody_else']);
    problem $r, 403, 'organization_mismatch', 'X-Organization-ID of another organization (contrast)';
}


# --- 8. rate limits -----------------------------------------------------------

sub burst {
    my ($n, $org, $path, @h) = @_;
    return map { gw($org, $path, headers => [@h]) } 1 .. $n;
}

sub statuses { return join ' ', map { $_->{status} } @_ }

{
    # an override on a tier without rate, and tenant_rate_limit without
    # rate=: per minute
    my $t = create_tenant(status => 'active', rate_limit => 2);
    my @r = burst(3, $t->{clerk_organization_id}, '/api/items?rl');
    is statuses(@r), '200 200 429', 'override, no tier or default rate: third request 429';
    is hdr($r[0], 'RateLimit-Policy'), '"tenant";q=2;w=60', 'override: RateLimit-Policy q=2;w=60';
    is_deeply [@{ $r[2]{json} || {} }{qw(code limit window)}], ['rate_limited', 2, 60],
        'override: 429 limit 2, window 60';

    # the per-user limit has room, the tenant's does not
    $t = create_tenant(status => 'active', rate_limit => 3);
    @r = burst(4, $t->{clerk_organization_id}, '/api/rl/x', 'X-Caller' => 'u1');
    is statuses(@r), '200 200 200 429', 'user limit 100/m, tenant 3: fourth request 429';
    is hdr($r[0], 'RateLimit-Policy'), '"tenant";q=3;w=60, "user";q=100;w=60',
        'both limits: RateLimit-Policy names both';
    is_deeply [@{ $r[3]{json} || {} }{qw(code limit window detail)}],
              ['rate_limited', 3, 60, "the organization's request quota is used up"],
        'both limits: the 429 is the tenant\'s';
    my $ra = hdr($r[3], 'Retry-After') // '';
    is $ra, $r[3]{json}{retryAfter}, 'both limits: Retry-After is retryAfter';
    ok $ra =~ /^\d+$/ && $ra >= 1 && $ra <= 20, "both limits: Retry-After within the tenant's 20 s interval ($ra)";

    # an empty tenant_rate_limit_by key: only the tenant's limit
    $t = create_tenant(status => 'active', rate_limit => 3);
    @r = burst(4, $t->{clerk_organization_id}, '/api/rl1/x');
    is statuses(@r), '200 200 200 429',
        'empty X-Caller with a 1r/m user limit: three pass (tenant quota 3), fourth 429';
    is hdr($r[0], 'RateLimit-Policy'), '"tenant";q=3;w=60', 'empty key: no "user" item';
    is $r[3]{json}{detail}, "the organization's request quota is used up", 'empty key: the 429 is the tenant\'s';

    # contrast: with a value, the 1r/m user limit applies
    $t = create_tenant(status => 'active', rate_limit => 3);
    @r = burst(2, $t->{clerk_organization_id}, '/api/rl1/x', 'X-Caller' => 'u1');
    is statuses(@r), '200 429', 'X-Caller set: the 1r/m user limit refuses the second';
    is $r[1]{json}{detail}, "this caller's request quota is used up", 'X-Caller set: the caller\'s 429';
}


# --- 9. tenant_admin_role claim= with _ and -, then without claim= ------------------

{
    problem admin(GET => "$COLL?limit=1", token => mint_token(metadata => { role => 'admin' })),
        403, 'admin_required', 'role: metadata.role admin is not read (claim=public_metadata.gw-role)';
    problem admin(GET => "$COLL?limit=1", token => mint_token(public_metadata => { 'gw-role' => 'admin' })),
        403, 'admin_required', 'role: public_metadata.gw-role "admin" is not the role';
    is admin(GET => "$COLL?limit=1")->{status}, 200, 'role: public_metadata.gw-role "gw-admin": 200';
}

nginx_reload(http => http_conf(role => 'tenant_admin_role operator;', tiers => $TIERS_MANY));

{
    my $op = mint_token(sub => 'user_operator', metadata => { role => 'operator' });
    is admin(GET => "$COLL?limit=1", token => $op)->{status}, 200,
        'role without claim=: metadata.role "operator": 200';
    problem admin(GET => "$COLL?limit=1", token => mint_token(metadata => { role => 'admin' })),
        403, 'admin_required', 'role without claim=: metadata.role "admin"';
    problem admin(GET => "$COLL?limit=1"), 403, 'admin_required',
        'role without claim=: the gw-admin token';
}


# --- 10. the 17th tier name is "other" -------------------------------------------

{
    my $late = create_tenant(status => 'active', tier => 'late');
    my $x13  = create_tenant(status => 'active', tier => 'x13');
    my $m0 = metrics_requests();
    is gw($late->{clerk_organization_id}, '/api/items?late')->{status}, 200, 'tiers: tier "late" admitted';
    is gw($x13->{clerk_organization_id}, '/api/items?x13')->{status}, 200, 'tiers: tier "x13" admitted';
    my ($m) = retry_until(3, \&metrics_requests,
                          sub { ($_[0]{'admitted/x13'} // 0) > ($m0->{'admitted/x13'} // 0) });
    is $m->{'admitted/other'} // 0, ($m0->{'admitted/other'} // 0) + 1,
        'tiers: the 17th name counts as tier="other"';
    is $m->{'admitted/x13'}, 1, 'tiers: x13 (16th slot) has its own series';
    ok !grep({ m{/late$} } keys %$m), 'tiers: no series for "late"';
    ok exists $m->{'admitted/professional'}, 'tiers: professional (an earlier config\'s) keeps its slot';
}


# --- 11. lock_timeout under a timeout of 1 s or less -----------------------------

nginx_reload(http => http_conf(role => 'tenant_admin_role operator;', tiers => $TIERS_MANY,
                               timeout => '900ms'));

{
    my $op = mint_token(sub => 'user_operator', metadata => { role => 'operator' });
    my $t = create_tenant(status => 'active');

    # record the lock_timeout each write asks for, then restore the function
    my $orig = sql_value(q{SELECT pg_get_functiondef('public.admin_lock_timeout(integer)'::regprocedure)});
    sql('CREATE TABLE public.edges_lock_ms (ms integer)');
    sql(<<'SQL');
CREATE OR REPLACE FUNCTION public.admin_lock_timeout(p_lock_ms integer)
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO public.edges_lock_ms VALUES (p_lock_ms);
    SELECT set_config('lock_timeout', greatest(p_lock_ms, 1)::text || 'ms', true);
$$
SQL

    my $r = admin(PATCH => "$COLL/$t->{slug}", token => $op, body => { rateLimitOverride => 50 });
    is $r->{status}, 200, 'lock: PATCH with timeout=900ms: 200' or diag explain brief($r);
    is_deeply [map { $_->{ms} } sql('SELECT ms FROM public.edges_lock_ms')], [450],
        'lock: the write ran with lock_timeout 450 ms (half of 900ms, not 900 - 500)';

    # a write waiting on a row lock gets PostgreSQL's lock timeout, not the pool's
    my $holder = DBI->connect("dbi:Pg:dbname=capliquify;host=$PG->{socket};port=$PG->{port}",
                              'postgres', '', { RaiseError => 1, PrintError => 0, AutoCommit => 0 });
    $holder->do('SELECT 1 FROM public.tenants WHERE id = ? FOR UPDATE', undef, $t->{id});
    my $mark = log_mark();
    $r = admin(PATCH => "$COLL/$t->{slug}", token => $op, body => { rateLimitOverride => 60 });
    $holder->rollback;
    $holder->disconnect;
    problem $r, 503, 'tenant_unavailable', 'lock: PATCH waiting on a row lock';
    my $log = error_log(since => $mark);
    like $log, qr/tenant: admin statement failed: 55P03/, 'lock: PostgreSQL answered lock_not_available (55P03)';
    unlike $log, qr/did not answer within/, 'lock: not the pool\'s timeout';
    diag sprintf 'lock: answered after %.2f s', $r->{elapsed};
    is row($t->{id})->{rate_limit_override}, 50, 'lock: the refused write changed nothing';

    sql($orig);
    sql('DROP TABLE public.edges_lock_ms');
}

done_testing();
