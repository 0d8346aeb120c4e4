#!/usr/bin/perl
# The admin API (tenant_admin behind "tenant_gateway admin"):
#
#   1 auth        no token 401, a token whose metadata.role is not "admin"
#                 403 admin_required, a bad token 401; admin admitted;
#                 the __session cookie is not a token here
#  1b cross-site  what a page of another site can make an admin's browser
#                 send (the cookie, a text/plain form of JSON, a foreign
#                 or null Origin, other media types), to the admin API
#                 and the cron job: refused, nothing written; the normal
#                 Authorization + JSON path still 201, behind a TLS proxy
#                 too
#   2 create      the deployment guide's smoke body: 201, Location, the
#                 camelCase JSON; the row, the schema (9 tables, 14
#                 indexes) and the audit row in the database; trialDays
#   3 validation  bad bodies: 400 validation_failed with an "errors"
#                 array naming the fields (413 for oversized bodies), and
#                 the database unchanged, never a 500
#   4 conflicts   same slug, same organization: 409 conflict, a leftover
#                 schema: 409 schema_exists, with "field", nothing half
#                 made (t/091: schema name collisions, what a purge drops)
#   5 read        by id and by slug, 404, the list's keyset pagination
#                 followed to the end, bad limit
#   6 update      PATCH with "tenant_database_listen off": the admin API
#                 itself drops the cached row, so the very next gateway
#                 request sees a new tier or a suspension; trial end,
#                 rate-limit override; bad bodies leave the row alone;
#                 404; audit rows
#   7 delete      cancel (gateway 403 at once), ?purge=true (row and
#                 schema gone, audit kept), 404; methods 405
#   8 blocking    one worker: a create waiting on a table lock does not
#                 stop the worker from serving cached tenants
#   9 timing      20 creates: p50/p95 (diag), each < 2 s
#  10 timeout     a create that outlives tenant_database's timeout: 503,
#                 and nothing commits later
#  14 retry       a create sent again: 200 with the same tenant (no second
#                 audit row); another body for the slug or organization
#                 409; two identical creates at once: one tenant, one
#                 schema; a client gone while its create waited: it
#                 commits, and its retry gets the tenant

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use DBI         ();
use IO::Select  ();
use JSON::XS    ();
use POSIX       ();
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);


# --- configuration ----------------------------------------------------------

my $SIGNING_KEY = 'c0ffee00' x 8;
my $CRON_SECRET = 'cron-090-' . ('s' x 32);
my $DB_TIMEOUT  = 3;                        # tenant_database timeout=, s

# %%LISTEN%% is replaced below: the default (LISTEN on tenant_database's
# conninfo), or "tenant_database_listen off;" to show that the admin API
# drops cached rows itself.
my $HTTP = <<"EOF";
    tenant_database     "%%PG%%" timeout=${DB_TIMEOUT}s;
    tenant_cache        zone=tenants:1m ttl=30s;
    %%LISTEN%%
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  $SIGNING_KEY;
    tenant_cron_secret  $CRON_SECRET;
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_tier         enterprise   features=*;
    client_max_body_size    2m;
    client_body_buffer_size 128k;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /api/admin/tenants {
            tenant_gateway admin;
            tenant_admin;
        }

        location = /api/cron/expire-trials {
            tenant_cron_expire_trials;
        }

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /api/forecasts/ai {
            tenant_gateway         on;
            tenant_require_feature ai_forecasting;
            proxy_pass             http://%%ECHO%%;
        }
    }
EOF

sub http_conf {
    my (%o) = @_;
    my $l = ($o{listen} // '') eq 'off' ? 'tenant_database_listen off;'
                                        : '# tenant_database_listen: default';
    return $HTTP =~ s/%%LISTEN%%/$l/r;
}

# Provoked below: the create that outlives the timeout (part 10).
error_log_allow(
    qr/\[error\].*tenant: PostgreSQL did not answer within /,
);

my $JSON = JSON::XS->new->utf8->canonical;
my $COLL = '/api/admin/tenants';

my $ADMIN_SUB = 'user_admin_090';
my $ADMIN     = mint_token(sub => $ADMIN_SUB, metadata => { role => 'admin' },
                           exp => int(time) + 600);

my $UUID_RE = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
my $TS_RE   = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

my @FIELDS = qw(id name slug schemaName clerkOrganizationId subscriptionTier
                subscriptionStatus trialEndsAt ownerEmail rateLimitOverride
                createdAt updatedAt);


# --- local helpers ----------------------------------------------------------

# An admin API request: body is a hashref/arrayref (JSON-encoded) or a
# string (sent as is); token defaults to the admin's (undef: none).
sub api {
    my ($method, $path, %o) = @_;
    my $token = exists $o{token} ? $o{token} : $ADMIN;
    my $body  = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
    return http(method => $method, path => $path, timeout => $o{timeout} // 10,
                headers => [(defined $token ? (Authorization => "Bearer $token") : ()),
                            (defined $body ? ('Content-Type' => 'application/json') : ()),
                            @{ $o{headers} || [] }],
                (defined $body ? (body => $body) : ()));
}

sub create { my ($body, %o) = @_; return api(POST => $COLL, body => $body, %o) }

my $SEQ = 0;

# A valid create body (unique slug and organization), members overridable.
sub body_for {
    my (%o) = @_;
    my $n = ++$SEQ;
    return { name => "Admin Test $n", slug => "admin-test-$n",
             clerkOrganizationId => "org_admin_$n", subscriptionTier => 'starter',
             ownerEmail => "owner$n\@example.com", %o };
}

sub code   { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub ctype  { my ($r) = @_; return ($r->{headers}{'content-type'} || [])->[0] // '' }
sub fields { my ($r) = @_; return [map { $_->{field} } @{ $r->{json}{errors} || [] }] }
sub brief  { my ($r) = @_; return { status => $r->{status}, body => $r->{body} } }

# "200" or "403 feature_not_available".
sub outcome { my ($r) = @_; return $r->{status} == 200 ? '200' : "$r->{status} " . code($r) }

# A refusal: status, problem+json, code; never a 500.
sub problem {
    my ($r, $status, $code, $name) = @_;
    my $ok = is $r->{status}, $status, "$name: $status";
    $ok &&= like ctype($r), qr{^application/problem\+json}, "$name: problem+json";
    $ok &&= is code($r), $code, "$name: code $code";
    diag explain brief($r) unless $ok;
    return $ok;
}

sub no_500 {
    my ($r, $name) = @_;
    ok $r->{status} > 0 && $r->{status} < 500, "$name: no 5xx ($r->{status})";
}

# Everything a request could have changed: row, schema and audit counts
# and a digest of every tenants row.
sub db_state {
    my ($s) = sql(<<'SQL');
SELECT (SELECT count(*) FROM public.tenants)                       AS tenants,
       (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%') AS schemas,
       (SELECT count(*) FROM public.tenant_audit_log)              AS audit,
       (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
          FROM public.tenants t)                                    AS digest
SQL
    return $s;
}

sub base_tables {
    return sql_value(<<'SQL', $_[0]);
SELECT count(*) FROM information_schema.tables
 WHERE table_schema = $1 AND table_type = 'BASE TABLE'
SQL
}

# Indexes not made for a PRIMARY KEY or UNIQUE constraint (as in
# t/001-migrations.t).
sub explicit_indexes {
    return sql_value(<<'SQL', $_[0]);
SELECT count(*)
  FROM pg_class i
  JOIN pg_namespace n ON n.oid = i.relnamespace
 WHERE n.nspname = $1
   AND i.relkind = 'i'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = i.oid
                      AND d.refclassid = 'pg_constraint'::regclass
                      AND d.deptype = 'i')
SQL
}

sub schema_exists {
    return sql_value('SELECT count(*) FROM pg_namespace WHERE nspname = $1', $_[0]);
}

sub row { my ($id) = @_; my ($r) = sql('SELECT * FROM public.tenants WHERE id = $1', $id); return $r }

sub audit {
    my ($id) = @_;
    return sql('SELECT actor, action, details::text AS details FROM public.tenant_audit_log'
               . ' WHERE tenant_id = $1 ORDER BY id', $id);
}

sub epoch_of {
    my ($s) = @_;
    my @p = ($s // '') =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$/ or return undef;
    return timegm($p[5], $p[4], $p[3], $p[2], $p[1] - 1, $p[0]);
}

my %TOKEN;      # one member token per organization

sub gw {
    my ($org, $path) = @_;
    my $token = $TOKEN{$org} //= mint_token(org => $org, sub => "user_of_$org",
                                             exp => int(time) + 600);
    return http(path => $path // '/api/products',
                headers => [Authorization => "Bearer $token"]);
}

sub ai { my ($org) = @_; return gw($org, '/api/forecasts/ai') }

# $n gateway requests; their outcomes, deduplicated.
sub gw_outcomes {
    my ($n, $org, $path) = @_;
    my %seen;
    my @o = grep { !$seen{$_}++ } map { outcome(gw($org, $path)) } 1 .. $n;
    return \@o;
}

# Repeats $try every 20 ms until it returns true or $secs pass.
sub wait_for {
    my ($secs, $try) = @_;
    my $end = time + $secs;
    while (time < $end) {
        return 1 if $try->();
        sleep 0.02;
    }
    return 0;
}

sub percentile {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[ int($p / 100 * $#v + 0.5) ];
}


# --- setup ------------------------------------------------------------------

my $PG = pg_start();
my $NGX_PORT = nginx_start(workers => 2, http => http_conf())->{port};


# --- 1. auth ----------------------------------------------------------------

# a tenant for the cross-site requests of 1b to aim at
my $XSITE_ID = create_tenant(status => 'active')->{id};

my $SMOKE = { name => 'Smoke Test Tenant', slug => 'smoke-test-001',
              clerkOrganizationId => 'org_smoke_test',
              subscriptionTier => 'professional',
              ownerEmail => 'smoketest@capliquify.com' };

{
    my $before = db_state();

    my $r = api(GET => $COLL, token => undef);
    problem $r, 401, 'authentication_required', 'auth: no token';
    like +($r->{headers}{'www-authenticate'} || [])->[0] // '', qr/^Bearer/,
        'auth: no token: WWW-Authenticate: Bearer';

    problem create($SMOKE, token => undef), 401, 'authentication_required',
        'auth: no token, POST';

    my %refused = (
        'valid token without metadata'        => mint_token(sub => 'user_plain'),
        'metadata.role "user"'                => mint_token(metadata => { role => 'user' }),
        'metadata.role "Admin" (case)'        => mint_token(metadata => { role => 'Admin' }),
        'metadata without role'               => mint_token(metadata => { plan => 'admin' }),
        'top-level "role": "admin"'           => mint_token(role => 'admin'),
        'org:admin of an organization'        => mint_token(org => { id => 'org_x', role => 'org:admin' }),
    );
    for my $what (sort keys %refused) {
        problem api(GET => $COLL, token => $refused{$what}), 403, 'admin_required',
            "auth: $what";
    }
    problem create($SMOKE, token => $refused{'metadata.role "user"'}), 403,
        'admin_required', 'auth: metadata.role "user", POST create';

    my %bad = (
        'not a JWT'                  => ['not-a-jwt',                                   'token_malformed'],
        'admin claims, unknown key'  => [mint_token(key => 'other', metadata => { role => 'admin' }), 'unknown_key'],
        'admin claims, expired'      => [mint_token(metadata => { role => 'admin' },
                                                    iat => int(time) - 600, exp => int(time) - 300), 'token_expired'],
        'admin claims, alg none'     => [mint_token(alg => 'none', metadata => { role => 'admin' }), 'algorithm_not_allowed'],
    );
    for my $what (sort keys %bad) {
        my ($tok, $reason) = @{ $bad{$what} };
        my $r = api(GET => $COLL, token => $tok);
        problem $r, 401, 'invalid_token', "auth: $what";
        is $r->{json}{reason}, $reason, "auth: $what: reason $reason";
    }
    problem create($SMOKE, token => $bad{'admin claims, unknown key'}[0]), 401,
        'invalid_token', 'auth: bad token, POST create';

    is_deeply db_state(), $before, 'auth: refused requests changed nothing';

    $r = api(GET => "$COLL?limit=1");
    is $r->{status}, 200, 'auth: metadata.role "admin": 200';
    is ref $r->{json}{tenants}, 'ARRAY', 'auth: admin: a tenant list';

    # The admin API takes its token from Authorization only: a browser
    # sends the cookie with requests other sites make it send.  (This
    # asserted 200 before issue 12.)
    $r = http(path => "$COLL?limit=1", headers => [Cookie => "__session=$ADMIN"]);
    problem $r, 401, 'authentication_required', 'auth: admin token in the __session cookie only';
    like $r->{json}{detail} // '', qr/Authorization: Bearer only/,
        'auth: ... the detail says where the token must be';

    # the cookie still works where it belongs: gateway routes
    my $m = create_tenant(status => 'active');
    my $mt = mint_token(org => $m->{clerk_organization_id}, exp => int(time) + 600);
    is http(path => '/api/products', headers => [Cookie => "__session=$mt"])->{status}, 200,
        'auth: a member\'s __session cookie on a gateway route: still 200';
}


# --- 1b. cross-site requests --------------------------------------------------

# A page on a sibling subdomain (evil.example.com next to the gateway at
# gw.example.com: same site, so a SameSite=Lax __session cookie goes
# along) can make an admin's browser send a form: POST, a text/plain,
# urlencoded or multipart body, the cookie, and an Origin header.  It
# cannot set Authorization or any other header.
my $GW   = 'gw.example.com';
my $EVIL = 'https://evil.example.com';

sub audit_count { return sql_value('SELECT count(*) FROM public.tenant_audit_log') }

{
    my $before = db_state();
    my $audit  = audit_count();
    my $form   = body_for(subscriptionTier => 'enterprise', clerkOrganizationId => 'org_attacker');

    # the attack as the issue describes it: cookie, text/plain, JSON body
    my $r = http(method => 'POST', path => $COLL, body => $JSON->encode($form),
                 headers => [Host => $GW, Origin => $EVIL, Cookie => "__session=$ADMIN",
                             'Content-Type' => 'text/plain']);
    problem $r, 401, 'authentication_required',
        'cross-site: text/plain form of JSON, cookie, sibling Origin';

    # every admin method with the cookie alone (same-origin, JSON)
    my $id = $XSITE_ID;
    for my $m (['POST', $COLL, $form], ['PATCH', "$COLL/$id", { subscriptionTier => 'enterprise' }],
               ['DELETE', "$COLL/$id", undef], ['DELETE', "$COLL/$id?purge=true", undef],
               ['GET', "$COLL/$id", undef], ['GET', "$COLL?limit=5", undef])
    {
        my ($method, $path, $body) = @$m;
        problem api($method => $path, token => undef, body => $body,
                    headers => [Cookie => "__session=$ADMIN"]),
            401, 'authentication_required', "cross-site: $method $path with the cookie only";
    }

    # With the bearer token (which a page cannot set), each check alone.
    my %media = (
        'text/plain'                         => 'text/plain',
        'text/plain; charset=utf-8'          => 'text/plain; charset=utf-8',
        'application/x-www-form-urlencoded'  => 'application/x-www-form-urlencoded',
        'multipart/form-data'                => 'multipart/form-data; boundary=xyz',
        'application/json; charset=latin1'   => 'application/json; charset=iso-8859-1',
        'application/jsonp'                  => 'application/jsonp',
        'an empty Content-Type'              => '',
    );
    for my $what (sort keys %media) {
        my $r = http(method => 'POST', path => $COLL, body => $JSON->encode($form),
                     headers => [Authorization => "Bearer $ADMIN", 'Content-Type' => $media{$what}]);
        problem $r, 415, 'unsupported_media_type', "cross-site: POST $what";
        like $r->{json}{type} // '', qr{/unsupported_media_type$}, "cross-site: POST $what: type";
    }
    problem http(method => 'POST', path => $COLL, body => $JSON->encode($form),
                 headers => [Authorization => "Bearer $ADMIN"]),
        415, 'unsupported_media_type', 'cross-site: POST with a body and no Content-Type';
    problem http(method => 'POST', path => $COLL, body => $JSON->encode($form),
                 headers => [Authorization => "Bearer $ADMIN", 'Content-Type' => 'application/json',
                             'Content-Type' => 'text/plain']),
        415, 'unsupported_media_type', 'cross-site: POST with application/json, then text/plain';
    problem http(method => 'PATCH', path => "$COLL/$id", body => '{"subscriptionTier":"enterprise"}',
                 headers => [Authorization => "Bearer $ADMIN", 'Content-Type' => 'text/plain']),
        415, 'unsupported_media_type', 'cross-site: PATCH text/plain';
    problem http(method => 'PATCH', path => "$COLL/$id", body => '{"subscriptionTier":"enterprise"}',
                 headers => [Authorization => "Bearer $ADMIN"]),
        415, 'unsupported_media_type', 'cross-site: PATCH without a Content-Type';
    problem http(method => 'DELETE', path => "$COLL/$id",
                 headers => [Authorization => "Bearer $ADMIN", 'Content-Type' => 'text/plain']),
        415, 'unsupported_media_type', 'cross-site: DELETE declaring text/plain';

    my %origins = (
        'a sibling subdomain'               => [$GW, $EVIL],
        'Origin: null'                      => [$GW, 'null'],
        'the parent domain'                 => [$GW, 'https://example.com'],
        'the host as a prefix'              => [$GW, "https://$GW.evil.net"],
        'http:// of the https gateway'      => [$GW, "http://$GW"],
        'another port'                      => [$GW, "https://$GW:8443"],
        'a trailing slash'                  => [$GW, "https://$GW/"],
    );
    for my $what (sort keys %origins) {
        my ($host, $origin) = @{ $origins{$what} };
        for my $m (['POST', $COLL, $form], ['PATCH', "$COLL/$id", { subscriptionTier => 'enterprise' }],
                   ['DELETE', "$COLL/$id?purge=true", undef], ['GET', "$COLL?limit=1", undef])
        {
            my ($method, $path, $body) = @$m;
            my $r = api($method => $path, body => $body,
                        headers => [Host => $host, 'X-Forwarded-Proto' => 'https',
                                    Origin => $origin]);
            problem $r, 403, 'cross_origin', "cross-site: $method, $what";
        }
    }
    my $two = api(POST => $COLL, body => $form,
                  headers => [Host => $GW, 'X-Forwarded-Proto' => 'https',
                              Origin => "https://$GW", Origin => $EVIL]);
    problem $two, 403, 'cross_origin', 'cross-site: the own Origin, then a foreign one';
    like $two->{json}{type} // '', qr{/cross_origin$}, 'cross-site: type .../cross_origin';

    # the cron job: a secret a page cannot send, and the same checks
    my @cron = (Authorization => "Bearer $CRON_SECRET");
    problem http(method => 'POST', path => '/api/cron/expire-trials',
                 headers => [Cookie => "__session=$CRON_SECRET"]),
        401, 'unauthorized', 'cross-site: cron job with the secret as a cookie';
    problem http(method => 'POST', path => '/api/cron/expire-trials', body => '{}',
                 headers => [@cron, 'Content-Type' => 'text/plain']),
        415, 'unsupported_media_type', 'cross-site: cron job, text/plain';
    problem http(method => 'POST', path => '/api/cron/expire-trials',
                 headers => [@cron, Host => $GW, Origin => $EVIL]),
        403, 'cross_origin', 'cross-site: cron job, sibling Origin';
    problem http(method => 'POST', path => '/api/cron/expire-trials',
                 headers => [@cron, Origin => 'null']),
        403, 'cross_origin', 'cross-site: cron job, Origin: null';

    is_deeply db_state(), $before, 'cross-site: the refused requests changed nothing';
    is audit_count(), $audit, 'cross-site: ... and wrote no audit row';
    is sql_value(q{SELECT count(*) FROM public.tenants WHERE clerk_organization_id = 'org_attacker'}), 0,
        'cross-site: no tenant for the attacker\'s organization';

    # what a client (curl, a server, the admin's own page) sends still works
    is http(method => 'POST', path => '/api/cron/expire-trials', headers => \@cron)->{status}, 200,
        'cross-site: cron job, no Origin, no body: 200';
    is http(method => 'POST', path => '/api/cron/expire-trials', body => '{}',
            headers => [@cron, 'Content-Type' => 'application/json'])->{status}, 200,
        'cross-site: cron job, a JSON body: 200';

    my %ok = (
        'Authorization and JSON, no Origin'          => [],
        'Application/JSON'                           => ['Content-Type' => 'Application/JSON'],
        'application/json; charset=utf-8'            => ['Content-Type' => 'application/json; charset=utf-8'],
        'APPLICATION/JSON;CHARSET="UTF-8"'           => ['Content-Type' => 'APPLICATION/JSON;CHARSET="UTF-8"'],
        'its own Origin'                             => [Host => "localhost:$NGX_PORT",
                                                         Origin => "http://localhost:$NGX_PORT"],
        'its own Origin behind a TLS proxy'          => [Host => $GW, 'X-Forwarded-Proto' => 'https',
                                                         Origin => "https://$GW"],
        'its own Origin, X-Forwarded-Host'           => ['X-Forwarded-Proto' => 'https, http',
                                                         'X-Forwarded-Host' => $GW,
                                                         Origin => "https://$GW:443"],
    );
    for my $what (sort keys %ok) {
        my @h = @{ $ok{$what} };
        my %has = @h;
        my $r = http(method => 'POST', path => $COLL, body => $JSON->encode(body_for()),
                     headers => [Authorization => "Bearer $ADMIN",
                                 ($has{'Content-Type'} ? () : ('Content-Type' => 'application/json')),
                                 @h]);
        is $r->{status}, 201, "cross-site: $what: 201" or diag explain brief($r);
    }
    is api(GET => "$COLL/$id", headers => [Host => $GW, 'X-Forwarded-Proto' => 'https',
                                           Origin => "https://$GW"])->{status}, 200,
        'cross-site: GET with its own Origin: 200';
    is api(DELETE => "$COLL/" . create(body_for())->{json}{id})->{status}, 200,
        'cross-site: DELETE without a body or Content-Type: 200';
}


# --- 2. create: the deployment guide's smoke body ---------------------------

my $smoke;      # its JSON

{
    my $t0 = time;
    my $r = create($SMOKE);
    is $r->{status}, 201, 'create: smoke body: 201' or diag explain brief($r);
    like ctype($r), qr{^application/json}, 'create: application/json';

    my $j = $smoke = $r->{json} || {};
    like $j->{id} // '', $UUID_RE, 'create: id is a uuid';
    my $loc = ($r->{headers}{location} || [])->[0] // '';
    # relative: nginx made it absolute from the connection (http://) and
    # the listening port, wrong behind a TLS proxy (below)
    is $loc, "/api/admin/tenants/$j->{id}", "create: Location is /api/admin/tenants/<id> ($loc)";

    is_deeply [sort keys %$j], [sort @FIELDS], 'create: exactly the documented members';
    is $j->{name}, 'Smoke Test Tenant', 'create: name';
    is $j->{slug}, 'smoke-test-001', 'create: slug';
    is $j->{schemaName}, 'tenant_smoke_test_001', 'create: schemaName';
    is $j->{clerkOrganizationId}, 'org_smoke_test', 'create: clerkOrganizationId';
    is $j->{subscriptionTier}, 'professional', 'create: subscriptionTier';
    is $j->{subscriptionStatus}, 'trial', 'create: subscriptionStatus trial';
    is $j->{ownerEmail}, 'smoketest@capliquify.com', 'create: ownerEmail';
    ok exists $j->{rateLimitOverride} && !defined $j->{rateLimitOverride},
        'create: rateLimitOverride null';
    like $j->{trialEndsAt} // '', $TS_RE, 'create: trialEndsAt is ISO 8601 UTC';
    like $j->{createdAt} // '', $TS_RE, 'create: createdAt is ISO 8601 UTC';
    like $j->{updatedAt} // '', $TS_RE, 'create: updatedAt is ISO 8601 UTC';
    my $ends = epoch_of($j->{trialEndsAt}) // 0;
    ok abs($ends - $t0 - 14 * 86400) < 120,
        sprintf 'create: trialEndsAt 14 days ahead (%+d s off)', $ends - $t0 - 14 * 86400;
    ok abs((epoch_of($j->{createdAt}) // 0) - $t0) < 120, 'create: createdAt is now';

    # the database
    my $row = row($j->{id});
    ok $row, 'db: the row exists';
    is_deeply { map { $_ => $row->{$_} } qw(name slug clerk_organization_id schema_name
                                            subscription_tier subscription_status owner_email) },
              { name => 'Smoke Test Tenant', slug => 'smoke-test-001',
                clerk_organization_id => 'org_smoke_test', schema_name => 'tenant_smoke_test_001',
                subscription_tier => 'professional', subscription_status => 'trial',
                owner_email => 'smoketest@capliquify.com' }, 'db: the row holds the body';
    is sql_value(q{SELECT floor(extract(epoch FROM trial_ends_at))::bigint FROM public.tenants WHERE id = $1},
                 $j->{id}), $ends, 'db: trial_ends_at is the answer\'s trialEndsAt';
    is schema_exists('tenant_smoke_test_001'), 1, 'db: schema tenant_smoke_test_001 exists';
    is base_tables('tenant_smoke_test_001'), 9, 'db: 9 tables (information_schema)';
    is explicit_indexes('tenant_smoke_test_001'), 14, 'db: 14 explicit indexes (pg_catalog)';

    my @a = audit($j->{id});
    is scalar(@a), 1, 'db: one audit row';
    is $a[0]{actor}, $ADMIN_SUB, 'db: audit actor is the admin token\'s sub';
    is $a[0]{action}, 'tenant.create', 'db: audit action tenant.create';
    is_deeply $JSON->decode($a[0]{details} // '{}'), $SMOKE, 'db: audit details: the body';

    # the new tenant reaches the gateway (listener on: NOTIFY)
    is outcome(ai('org_smoke_test')), '200', 'gateway: the new professional trial: 200 on /api/forecasts/ai';

    # POSTed to the collection with a trailing slash
    my $nb = body_for();
    $r = api(POST => "$COLL/", body => $nb);
    is $r->{status}, 201, 'create: POST /api/admin/tenants/ (trailing slash): 201';
    $loc = ($r->{headers}{location} || [])->[0] // '';
    # (was .../tenants//<id>)
    unlike $loc, qr{//[^/]*$}, "create: trailing slash: Location without // ($loc)";

    # Behind a TLS proxy (Render's): the client spoke https to
    # gw.example.com, the proxy http to nginx's port.  The Location must
    # name neither http:// nor that port.
    $r = api(POST => $COLL, body => body_for(),
             headers => [Host => 'gw.example.com', 'X-Forwarded-Proto' => 'https',
                         'X-Forwarded-For' => '203.0.113.7']);
    is $r->{status}, 201, 'create behind a TLS proxy: 201' or diag explain brief($r);
    $loc = ($r->{headers}{location} || [])->[0] // '';
    is $loc, "/api/admin/tenants/$r->{json}{id}",
        "create behind a TLS proxy: Location is relative ($loc)";
    unlike $loc, qr{http://|:$NGX_PORT\b}, 'create behind a TLS proxy: Location names neither http:// nor the port';

    # trialDays
    for my $days (0, 30, 365) {
        my $nb = body_for(trialDays => $days);
        my $t = time;
        my $r = create($nb);
        is $r->{status}, 201, "create: trialDays $days: 201" or diag explain brief($r);
        my $off = (epoch_of($r->{json}{trialEndsAt}) // 0) - $t - $days * 86400;
        ok abs($off) < 120, sprintf "create: trialDays %d: trialEndsAt %d days ahead (%+d s off)",
            $days, $days, $off;
    }
}


# --- 3. validation: bad bodies, the database unchanged ----------------------

sub bad_create {
    my ($name, $body, $want, %o) = @_;
    my $status = $o{status} // 400;
    my $code   = $o{code} // 'validation_failed';

    my $before = db_state();
    my $r = create($body);
    problem $r, $status, $code, "invalid: $name";
    no_500 $r, "invalid: $name";
    if ($want) {
        is_deeply fields($r), $want, "invalid: $name: errors name @$want"
            or diag explain brief($r);
        ok !grep({ !defined $_->{reason} || $_->{reason} eq '' } @{ $r->{json}{errors} || [] }),
            "invalid: $name: every error has a reason";
    }
    is_deeply db_state(), $before, "invalid: $name: database unchanged";
    return $r;
}

{
    my $ok = { %$SMOKE, slug => 'never-made', clerkOrganizationId => 'org_never_made' };
    my $with = sub { return { %$ok, @_ } };

    bad_create 'not JSON', 'name=x&slug=y', ['body'];
    bad_create 'empty body', '', ['body'];
    bad_create 'truncated JSON', substr($JSON->encode($ok), 0, 40), ['body'];
    bad_create 'JSON array', [$ok], ['body'];
    bad_create 'JSON string', '"smoke"', ['body'];
    bad_create 'empty object', {},
        [qw(name slug clerkOrganizationId subscriptionTier ownerEmail)];

    bad_create 'name is a number', $with->(name => 42), ['name'];
    bad_create 'trialDays is a string', $with->(trialDays => '14'), ['trialDays'];
    bad_create 'slug is null', $with->(slug => undef), ['slug'];
    bad_create 'three wrong types at once',
        $with->(name => 42, slug => undef, trialDays => '14'), [qw(name slug trialDays)];

    # over the admin API's 64 KB, within client_body_buffer_size 128k
    my $r = bad_create '100 KB name', $with->(name => 'x' x 100_000), undef,
        status => 413, code => 'body_too_large';
    # 1 MB: within client_max_body_size 2m, over the buffer: a temp file
    $r = bad_create '1 MB name', $with->(name => 'x' x (1 << 20)), undef,
        status => 413, code => 'body_too_large';

    bad_create 'name of 201 bytes', $with->(name => 'n' x 201), ['name'];
    bad_create 'name empty', $with->(name => ''), ['name'];
    bad_create 'name with a control character', $with->(name => "Bell\x07Co"), ['name'];

    bad_create 'unicode slug "écho-co"', $with->(slug => "\x{e9}cho-co"), ['slug'];
    bad_create 'uppercase slug', $with->(slug => 'Smoke-Test'), ['slug'];
    bad_create 'slug with SQL metacharacters',
        $with->(slug => "x'; drop table public.tenants; --"), ['slug'];
    is sql_value(q{SELECT to_regclass('public.tenants') IS NOT NULL}), 1,
        'invalid: public.tenants still exists';
    bad_create 'slug with a NUL (\u0000)', $with->(slug => "ab\x{0}cd"), ['slug'];
    bad_create 'slug of 2 characters', $with->(slug => 'ab'), ['slug'];
    bad_create 'slug ending with -', $with->(slug => 'abc-'), ['slug'];

    bad_create 'clerkOrganizationId with a space', $with->(clerkOrganizationId => 'org x'),
        ['clerkOrganizationId'];
    bad_create 'unknown tier "gold"', $with->(subscriptionTier => 'gold'), ['subscriptionTier'];

    for my $email ('no-at-sign.example.com', 'two@@example.com', 'a@b@example.com',
                   'nodot@localhost', 'a b@example.com', '@example.com', 'a@',
                   'a@.example.com', 'a@example..com', 'a.@example.com',
                   '"quoted"@example.com', 'a@example.com,b@example.com',
                   ('l' x 65) . '@example.com', "caf\x{e9}\@example.com", '')
    {
        bad_create "malformed email \"$email\"", $with->(ownerEmail => $email), ['ownerEmail'];
    }

    bad_create 'unknown member', $with->(plan => 'gold'), ['plan'];
    bad_create 'duplicate keys',
        '{"name":"A","name":"B","slug":"never-made","clerkOrganizationId":"org_never_made",'
        . '"subscriptionTier":"starter","ownerEmail":"a@example.com"}', ['body'];
    bad_create 'trialDays 400', $with->(trialDays => 400), ['trialDays'];
    bad_create 'trialDays -1', $with->(trialDays => -1), ['trialDays'];
    bad_create 'trialDays 1.5', $with->(trialDays => 1.5), ['trialDays'];

    is sql_value(q{SELECT count(*) FROM public.tenants WHERE slug = 'never-made'
                   OR clerk_organization_id = 'org_never_made'}), 0,
        'invalid: no tenant was made from any of them';
}


# --- 4. conflicts -----------------------------------------------------------

{
    my $before = db_state();
    my $r = create({ %$SMOKE, clerkOrganizationId => 'org_other_smoke' });
    problem $r, 409, 'conflict', 'conflict: same slug, other organization';
    is $r->{json}{field}, 'slug', 'conflict: field slug';
    is_deeply db_state(), $before, 'conflict: same slug: database unchanged';

    $r = create({ %$SMOKE, slug => 'smoke-test-dup' });
    problem $r, 409, 'conflict', 'conflict: same organization, other slug';
    is $r->{json}{field}, 'clerkOrganizationId', 'conflict: field clerkOrganizationId';
    is schema_exists('tenant_smoke_test_dup'), 0, 'conflict: no half-made schema';
    is_deeply db_state(), $before, 'conflict: same organization: database unchanged';

    # a schema of that name already exists (left over): refused, not
    # adopted, and not "slug exists" (no tenant has it: GET says 404)
    sql('CREATE SCHEMA tenant_left_over');
    $before = db_state();
    $r = create(body_for(slug => 'left-over'));
    problem $r, 409, 'schema_exists', 'conflict: leftover schema tenant_left_over';
    is $r->{json}{field}, 'slug', 'conflict: leftover schema: field slug';
    is_deeply db_state(), $before, 'conflict: leftover schema: database unchanged';
    sql('DROP SCHEMA tenant_left_over');
}


# --- 5. read: one, and the list -----------------------------------------------

{
    my $by_id = api(GET => "$COLL/$smoke->{id}");
    is $by_id->{status}, 200, 'get: by id: 200';
    is_deeply $by_id->{json}, $smoke, 'get: by id: the JSON of the create';

    my $by_slug = api(GET => "$COLL/smoke-test-001");
    is $by_slug->{status}, 200, 'get: by slug: 200';
    is_deeply $by_slug->{json}, $smoke, 'get: by slug: the same JSON';

    problem api(GET => "$COLL/00000000-0000-4000-8000-000000000000"), 404, 'not_found',
        'get: unknown id';
    problem api(GET => "$COLL/no-such-tenant"), 404, 'not_found', 'get: unknown slug';
    problem api(GET => "$COLL/a/b"), 404, 'not_found', 'get: a path below a tenant';

    # keyset pagination, limit=2, followed to the end
    my (@slugs, @sizes, $bad_next);
    my $path = "$COLL?limit=2";
    my $pages = 0;
    while (defined $path && $pages++ < 100) {
        my $r = api(GET => $path);
        last unless is $r->{status}, 200, "list: page $pages: 200" or diag explain brief($r);
        my @p = @{ $r->{json}{tenants} || [] };
        push @sizes, scalar @p;
        push @slugs, map { $_->{slug} } @p;
        my $next = $r->{json}{next};
        $bad_next++ if defined $next && (!@p || $next ne $p[-1]{slug});
        $path = defined $next ? "$COLL?limit=2&after=$next" : undef;
    }
    my @want = map { $_->{slug} } sql('SELECT slug FROM public.tenants ORDER BY slug');
    is_deeply \@slugs, \@want, sprintf 'list: %d pages of limit=2 give every slug, in order (%d)',
        $pages, scalar @want;
    ok !grep({ $_ > 2 } @sizes), 'list: no page has more than 2';
    ok !$bad_next, 'list: "next" is the last slug of its page';

    my $all = api(GET => "$COLL?limit=100");
    is_deeply [map { $_->{slug} } @{ $all->{json}{tenants} || [] }], \@want,
        'list: limit=100: all of them';
    ok exists $all->{json}{next} && !defined $all->{json}{next}, 'list: limit=100: next null';
    my ($listed) = grep { $_->{id} eq $smoke->{id} } @{ $all->{json}{tenants} || [] };
    is_deeply $listed, $smoke, 'list: a tenant as GET shows it';

    for my $q ('limit=0', 'limit=101', 'limit=abc', 'limit=-1', 'limit=', 'limit=2.5') {
        my $r = api(GET => "$COLL?$q");
        problem $r, 400, 'invalid_request', "list: $q";
        is $r->{json}{field}, 'limit', "list: $q: field limit";
    }
    problem api(GET => "$COLL?after=" . ('a' x 64)), 400, 'invalid_request',
        'list: after= longer than a slug';
}


# --- 6. update, with the listener off ----------------------------------------

nginx_reload(http => http_conf(listen => 'off'));

{
    my $r = create(body_for(subscriptionTier => 'starter'));
    is $r->{status}, 201, 'patch: tenant S created (starter, trial)';
    my $S = $r->{json};
    my ($id, $org, $slug) = @$S{qw(id clerkOrganizationId slug)};
    my $updates = 0;

    # warm: the gateway caches S's row
    is_deeply gw_outcomes(4, $org, '/api/forecasts/ai'), ['403 feature_not_available'],
        'patch: starter S is refused the AI route (row cached)';

    # The listener is off: a change made in SQL is not seen (the cached
    # row stays), so whatever is seen below was dropped by the admin API.
    sql(q{UPDATE public.tenants SET subscription_tier = 'professional' WHERE id = $1}, $id);
    is_deeply gw_outcomes(4, $org, '/api/forecasts/ai'), ['403 feature_not_available'],
        'patch: a change made in SQL is not seen (listener off, row cached)';
    sql(q{UPDATE public.tenants SET subscription_tier = 'starter' WHERE id = $1}, $id);

    $r = api(PATCH => "$COLL/$id", body => { subscriptionTier => 'professional' });
    is $r->{status}, 200, 'patch: tier professional: 200' or diag explain brief($r);
    is $r->{json}{subscriptionTier}, 'professional', 'patch: the answer shows the new tier';
    is $r->{json}{slug}, $slug, 'patch: the answer is the tenant';
    $updates++;
    is outcome(ai($org)), '200', 'patch: the very next gateway request: 200 (cache dropped by the API)';
    is_deeply gw_outcomes(6, $org, '/api/forecasts/ai'), ['200'], 'patch: and the ones after: 200';

    $r = api(PATCH => "$COLL/$slug", body => { subscriptionStatus => 'suspended' });
    is $r->{status}, 200, 'patch: by slug, status suspended: 200';
    is $r->{json}{subscriptionStatus}, 'suspended', 'patch: the answer shows suspended';
    $updates++;
    is outcome(gw($org)), '403 tenant_suspended', 'patch: suspended: the very next request 403 tenant_suspended';
    is_deeply gw_outcomes(6, $org), ['403 tenant_suspended'], 'patch: and the ones after';

    $r = api(PATCH => "$COLL/$id", body => { subscriptionStatus => 'active', trialEndsAt => undef });
    is $r->{status}, 200, 'patch: status active, trialEndsAt null: 200';
    ok exists $r->{json}{trialEndsAt} && !defined $r->{json}{trialEndsAt}, 'patch: trialEndsAt null in the answer';
    is row($id)->{trial_ends_at}, undef, 'patch: trial_ends_at NULL in the database';
    is row($id)->{subscription_status}, 'active', 'patch: status active in the database';
    $updates++;
    is outcome(gw($org)), '200', 'patch: active again: 200 at once';

    for my $case (['2027-01-02T03:04:05Z',      '2027-01-02T03:04:05Z'],
                  ['2027-01-02T03:04:05+02:00', '2027-01-02T01:04:05Z'],
                  ['2028-02-29T23:59:59.123-05:30', '2028-03-01T05:29:59Z'])
    {
        my ($in, $out) = @$case;
        $r = api(PATCH => "$COLL/$id", body => { trialEndsAt => $in });
        is $r->{status}, 200, "patch: trialEndsAt $in: 200";
        is $r->{json}{trialEndsAt}, $out, "patch: trialEndsAt $in: shown as $out";
        is sql_value(q{SELECT floor(extract(epoch FROM trial_ends_at))::bigint FROM public.tenants WHERE id = $1}, $id),
            epoch_of($out), "patch: trialEndsAt $in: in the database";
        $updates++;
    }

    $r = api(PATCH => "$COLL/$id", body => { rateLimitOverride => 500 });
    is $r->{status}, 200, 'patch: rateLimitOverride 500: 200';
    is $r->{json}{rateLimitOverride}, 500, 'patch: rateLimitOverride 500 in the answer';
    ok !ref $r->{json}{rateLimitOverride} && $r->{body} =~ /"rateLimitOverride":500[,}]/,
        'patch: rateLimitOverride is a JSON number';
    is row($id)->{rate_limit_override}, 500, 'patch: rate_limit_override 500 in the database';
    $updates++;

    $r = api(PATCH => "$COLL/$id", body => { rateLimitOverride => undef });
    is $r->{status}, 200, 'patch: rateLimitOverride null: 200';
    ok exists $r->{json}{rateLimitOverride} && !defined $r->{json}{rateLimitOverride},
        'patch: rateLimitOverride null in the answer';
    is row($id)->{rate_limit_override}, undef, 'patch: rate_limit_override NULL in the database';
    $updates++;

    # invalid bodies: 400, the row and the audit log as they were
    my @bad = (
        ['empty object',            {},                                         ['body']],
        ['not JSON',                'subscriptionStatus=active',                ['body']],
        ['bad status "paused"',     { subscriptionStatus => 'paused' },         ['subscriptionStatus']],
        ['bad timestamp 2026-02-30', { trialEndsAt => '2026-02-30T00:00:00Z' }, ['trialEndsAt']],
        ['timestamp without zone',  { trialEndsAt => '2027-01-01T00:00:00' },   ['trialEndsAt']],
        ['timestamp 24:00',         { trialEndsAt => '2027-01-01T24:00:00Z' },  ['trialEndsAt']],
        ['trialEndsAt a number',    { trialEndsAt => 1767225600 },              ['trialEndsAt']],
        ['rateLimitOverride 0',     { rateLimitOverride => 0 },                 ['rateLimitOverride']],
        ['rateLimitOverride "500"', { rateLimitOverride => '500' },             ['rateLimitOverride']],
        ['unknown tier "gold"',     { subscriptionTier => 'gold' },             ['subscriptionTier']],
        ['tier null',               { subscriptionTier => undef },              ['subscriptionTier']],
        ['unknown member name',     { name => 'Renamed' },                      ['body', 'name']],
        ['valid tier + bad status', { subscriptionTier => 'enterprise', subscriptionStatus => 'x' },
                                                                                ['subscriptionStatus']],
    );
    for my $case (@bad) {
        my ($what, $body, $want) = @$case;
        my $before = db_state();
        my $r = api(PATCH => "$COLL/$id", body => $body);
        problem $r, 400, 'validation_failed', "patch invalid: $what";
        no_500 $r, "patch invalid: $what";
        is_deeply fields($r), $want, "patch invalid: $what: errors name @$want"
            or diag explain brief($r);
        is_deeply db_state(), $before, "patch invalid: $what: database unchanged";
    }
    is row($id)->{subscription_tier}, 'professional', 'patch invalid: the tier was not changed';

    for my $who ('00000000-0000-4000-8000-000000000000', 'no-such-tenant') {
        my $before = db_state();
        problem api(PATCH => "$COLL/$who", body => { subscriptionStatus => 'active' }), 404,
            'not_found', "patch: unknown tenant $who";
        is_deeply db_state(), $before, "patch: unknown tenant $who: database unchanged";
    }

    my @a = grep { $_->{action} eq 'tenant.update' } audit($id);
    is scalar(@a), $updates, "patch: one tenant.update audit row per change ($updates)";
    ok !grep({ $_->{actor} ne $ADMIN_SUB } @a), 'patch: audit actor is the admin';
    is_deeply $JSON->decode($a[0]{details}), { subscriptionTier => 'professional' },
        'patch: audit details: the body';

    # A tenant created while its organization has a negative cache entry
    # (listener off, negative_ttl 5s by default).
    my $nb = body_for();
    my $o = $nb->{clerkOrganizationId};
    is outcome(gw($o)), '403 unknown_organization', 'create, listener off: unknown organization first (negative entry)';
    is create($nb)->{status}, 201, 'create, listener off: 201';
    # the create drops the organization's negative entry itself
    is outcome(gw($o)), '200', 'create, listener off: the new tenant is admitted at once';
}


# --- 7. delete ----------------------------------------------------------------

{
    my $r = create(body_for());
    is $r->{status}, 201, 'delete: tenant D created';
    my $D = $r->{json};
    my ($id, $org, $slug, $schema) = @$D{qw(id clerkOrganizationId slug schemaName)};

    is_deeply gw_outcomes(4, $org), ['200'], 'delete: D admitted (trial; row cached)';

    $r = api(DELETE => "$COLL/$id");
    is $r->{status}, 200, 'delete: 200' or diag explain brief($r);
    is $r->{json}{subscriptionStatus}, 'cancelled', 'delete: the answer shows cancelled';
    is row($id)->{subscription_status}, 'cancelled', 'delete: cancelled in the database';
    is schema_exists($schema), 1, 'delete: the schema is kept';
    is outcome(gw($org)), '403 tenant_suspended', 'delete: the very next gateway request: 403 tenant_suspended';
    is_deeply gw_outcomes(4, $org), ['403 tenant_suspended'], 'delete: and the ones after';

    $r = api(DELETE => "$COLL/$slug?purge=true");
    is $r->{status}, 200, 'purge: 200' or diag explain brief($r);
    is $r->{json}{id}, $id, 'purge: the answer is the tenant';
    is row($id), undef, 'purge: the row is gone';
    is schema_exists($schema), 0, "purge: schema $schema is gone";
    is outcome(gw($org)), '403 unknown_organization', 'purge: the very next gateway request: 403 unknown_organization';
    is_deeply [map { $_->{action} } audit($id)], [qw(tenant.create tenant.cancel tenant.purge)],
        'purge: the audit rows are kept (create, cancel, purge)';
    ok !grep({ $_->{actor} ne $ADMIN_SUB } audit($id)), 'purge: audit actor is the admin';

    problem api(GET => "$COLL/$id"), 404, 'not_found', 'purge: GET afterwards';
    for my $who ($id, 'no-such-tenant') {
        my $before = db_state();
        problem api(DELETE => "$COLL/$who"), 404, 'not_found', "delete: unknown $who";
        problem api(DELETE => "$COLL/$who?purge=true"), 404, 'not_found', "purge: unknown $who";
        is_deeply db_state(), $before, "delete: unknown $who: database unchanged";
    }

    # methods
    my $before = db_state();
    my $x = body_for();
    for my $m (['PUT', $COLL, $x], ['PUT', "$COLL/$smoke->{id}", { subscriptionTier => 'starter' }],
               ['POST', "$COLL/x", $x], ['POST', "$COLL/$smoke->{id}", $x],
               ['PATCH', $COLL, { subscriptionTier => 'starter' }], ['DELETE', $COLL, undef])
    {
        my ($method, $path, $body) = @$m;
        my $r = api($method => $path, body => $body);
        is $r->{status}, 405, "method: $method $path: 405";
    }
    is_deeply db_state(), $before, 'method: 405s changed nothing';
}


# --- 8. provisioning does not block the worker --------------------------------

nginx_reload(workers => 1);

{
    is scalar(my @w = nginx_workers()), 1, 'blocking: one worker';
    my $c = create_tenant(status => 'active');
    my $org = $c->{clerk_organization_id};
    is outcome(gw($org)), '200', 'blocking: tenant C admitted (row cached)';

    my $lock = DBI->connect("dbi:Pg:dbname=capliquify;host=$PG->{socket};port=$PG->{port}",
                            'postgres', '', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
    $lock->begin_work;
    $lock->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');

    my $nb = body_for();
    my $bg = async_http(method => 'POST', path => $COLL, body => $JSON->encode($nb),
                        headers => [Authorization => "Bearer $ADMIN",
                                    'Content-Type' => 'application/json']);

    ok wait_for(2, sub {
        sql_value(q{SELECT count(*) FROM pg_locks
                     WHERE NOT granted AND relation = 'public.tenants'::regclass}) > 0 }),
        'blocking: the create waits for the table lock';

    my @times;
    for (1 .. 10) {
        my $r = gw($org);
        push @times, $r->{elapsed};
        is outcome($r), '200', "blocking: cached tenant while the create waits: 200 ($_)";
        sleep 0.05;
    }
    my $slowest = (sort { $b <=> $a } @times)[0];
    ok $slowest < 0.3, sprintf 'blocking: each answered in < 0.3 s (slowest %.3f s)', $slowest;
    ok !http_done($bg), 'blocking: the create is still pending';

    sleep 0.2;
    my $released = time;
    $lock->rollback;
    $lock->disconnect;

    my $r = wait_http($bg);
    is $r->{status}, 201, sprintf('blocking: after the lock is released the create completes: 201 (%.2f s after)',
                                  time - $released) or diag explain $r;
    ok time - $bg->{start} < $DB_TIMEOUT, sprintf 'blocking: within the database timeout (%.2f s)',
        time - $bg->{start};
    is sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $nb->{slug}), 1,
        'blocking: the row exists';
}


# --- 9. timing ----------------------------------------------------------------

{
    my (@t, @status);
    for (1 .. 20) {
        my $r = create(body_for(subscriptionTier => 'enterprise'));
        push @t, $r->{elapsed};
        push @status, $r->{status};
    }
    is_deeply [grep { $_ != 201 } @status], [], 'timing: 20 creates, all 201';
    ok !grep({ $_ >= 2 } @t), 'timing: each < 2 s';
    diag sprintf 'timing: create through the admin API: p50 %.1f ms, p95 %.1f ms, max %.1f ms (20 requests)',
        1000 * percentile(50, @t), 1000 * percentile(95, @t), 1000 * (sort { $b <=> $a } @t)[0];

    is sql_value(<<'SQL'), 0, 'timing: every tenant schema has 9 tables and 14 indexes';
SELECT count(*) FROM public.tenants t
CROSS JOIN LATERAL public.tenant_schema_counts(t.schema_name) c
WHERE (c.tables, c.indexes) <> (9, 14)
SQL
}


# --- 10. a create that outlives the database timeout -------------------------

{
    my $lock = DBI->connect("dbi:Pg:dbname=capliquify;host=$PG->{socket};port=$PG->{port}",
                            'postgres', '', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
    $lock->begin_work;
    $lock->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');

    my $nb = body_for();
    my $r = create($nb, timeout => $DB_TIMEOUT + 3);
    problem $r, 503, 'tenant_unavailable', 'timeout: create waiting longer than timeout=3s';
    ok $r->{elapsed} < $DB_TIMEOUT + 1, sprintf 'timeout: answered after %.2f s', $r->{elapsed};

    $lock->rollback;
    $lock->disconnect;

    # the statement was sent; when the lock goes, does it still commit?
    wait_for(1.5, sub { sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $nb->{slug}) });
    # The write ran under a lock_timeout a little under the pool's
    # timeout (migrations/005): it rolled back on the server before the
    # gateway gave up, so the 503 is true -- nothing commits later (it
    # did before: the backend went on waiting, then committed).
    is sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $nb->{slug}), 0,
        'timeout: a create answered 503 leaves no tenant behind';
    is sql_value(q{SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1},
                 'tenant_' . ($nb->{slug} =~ tr/-/_/r)), 0,
        'timeout: ... and no schema';
}



# --- 11. the admin claim's path and value -----------------------------------

# tenant_admin_role owner claim=perms.gateway: another claim, another value
{
    nginx_reload(http => http_conf() =~ s/(tenant_signing_key[^\n]*\n)/$1    tenant_admin_role   owner claim=perms.gateway;\n/r);

    my $owner = mint_token(sub => 'user_owner', perms => { gateway => 'owner' });
    my $r = api(GET => "$COLL?limit=1", token => $owner);
    is $r->{status}, 200, 'claim=perms.gateway: a token with perms.gateway "owner" is admitted';

    $r = api(GET => "$COLL?limit=1");     # metadata.role admin
    is $r->{status}, 403, 'claim=perms.gateway: metadata.role "admin" no longer is';
    is $r->{json}{code}, 'admin_required', '... admin_required';

    $r = api(GET => "$COLL?limit=1",
             token => mint_token(sub => 'user_x', perms => { gateway => 'admin' }));
    is $r->{status}, 403, 'claim=perms.gateway: another value is refused';

    $r = api(GET => "$COLL?limit=1",
             token => mint_token(sub => 'user_y', perms => 'owner'));
    is $r->{status}, 401, 'claim=perms.gateway: "perms" not an object: 401 bad_claim';
    is $r->{json}{reason}, 'bad_claim', '... reason bad_claim';

    for my $bad ('perms..gateway', '.perms', 'perms.', 'perms gateway', 'pérms') {
        my $t = nginx_conf_test(http => http_conf() =~ s/(tenant_signing_key[^\n]*\n)/$1    tenant_admin_role   owner "claim=$bad";\n/r);
        ok !$t->{ok}, "tenant_admin_role claim=\"$bad\": nginx -t fails";
        like $t->{output}, qr/invalid claim path/, '... invalid claim path';
    }

    nginx_reload(http => http_conf());
}


# --- 12. a slug shaped like another tenant's id -------------------------------

# A lowercase uuid is a valid slug: B's slug is A's id.  An identifier
# that is a uuid names the tenant with that id only, never a slug.
{
    my $a = create(body_for())->{json};
    my $b = create(body_for(slug => $a->{id}))->{json};
    is $b->{slug}, $a->{id}, 'a tenant whose slug is another tenant\'s id';

    my $r = api(GET => "$COLL/$a->{id}");
    is $r->{json}{clerkOrganizationId}, $a->{clerkOrganizationId},
        'GET by that text: the tenant with that id';

    $r = api(PATCH => "$COLL/$a->{id}", body => { subscriptionTier => 'enterprise' });
    is $r->{status}, 200, 'PATCH by that text: 200 (one row, not an error)';
    is sql_value('SELECT subscription_tier FROM public.tenants WHERE id = $1', $a->{id}),
        'enterprise', '... the tenant with that id changed';
    is sql_value('SELECT subscription_tier FROM public.tenants WHERE id = $1', $b->{id}),
        'starter', '... the one with that slug did not';

    $r = api(DELETE => "$COLL/$a->{id}?purge=true");
    is $r->{status}, 200, 'purge by that text: 200';
    is sql_value('SELECT count(*) FROM public.tenants WHERE id = $1', $a->{id}), 0,
        '... the tenant with that id is gone';
    is sql_value('SELECT count(*) FROM public.tenants WHERE id = $1', $b->{id}), 1,
        '... the one with that slug is not';
}

# --- 13. tenant_admin where the gateway admits no admin ------------------------

# ngx_tenant_admin.c, ngx_tenant_admin_handler: tenant_admin in a location
# whose access phase did not admit an admin ("tenant_gateway on", or no
# tenant_gateway at all).  nginx -t accepts both; the handler must fail
# closed: 403 admin_required, one [error], and no SQL (nothing written).
{
    my $extra = <<'EOC';
        location /gw-on/tenants {
            tenant_gateway on;
            tenant_admin;
        }

        location /no-gw/tenants {
            tenant_admin;
        }

EOC
    my $conf = http_conf() =~ s/(        location \/api\/ \{)/$extra$1/r;
    my $t = nginx_conf_test(http => $conf);
    ok $t->{ok}, 'no admin gateway: nginx -t accepts tenant_admin without "tenant_gateway admin"'
        or diag $t->{output};
    nginx_reload(http => $conf);

    # a member of an active tenant (passes "tenant_gateway on") whose token
    # also carries the admin role
    my $member = create_tenant(status => 'active', tier => 'enterprise');
    my $tok = mint_token(org => $member->{clerk_organization_id}, sub => 'user_gw_on',
                         metadata => { role => 'admin' });

    my $mark   = log_mark();
    my $before = db_state();
    my $rows   = sql_value('SELECT count(*) FROM public.tenants');

    my $nb = body_for();
    problem api(POST => '/gw-on/tenants', body => $nb, token => $tok), 403,
        'admin_required', 'tenant_gateway on + tenant_admin: POST (member token with admin role)';
    problem api(GET => '/gw-on/tenants?limit=1', token => $tok), 403,
        'admin_required', 'tenant_gateway on + tenant_admin: GET list';
    problem api(GET => "/gw-on/tenants/$member->{id}", token => $tok), 403,
        'admin_required', 'tenant_gateway on + tenant_admin: GET one';

    my $nb2 = body_for();
    problem api(POST => '/no-gw/tenants', body => $nb2), 403,
        'admin_required', 'no tenant_gateway + tenant_admin: POST (admin token)';
    problem api(POST => '/no-gw/tenants', body => body_for(), token => undef), 403,
        'admin_required', 'no tenant_gateway + tenant_admin: POST without a token';
    problem api(GET => '/no-gw/tenants?limit=1'), 403,
        'admin_required', 'no tenant_gateway + tenant_admin: GET list (admin token)';
    problem api(DELETE => "/no-gw/tenants/$member->{id}?purge=true"), 403,
        'admin_required', 'no tenant_gateway + tenant_admin: DELETE ?purge=true (admin token)';

    is sql_value('SELECT count(*) FROM public.tenants'), $rows,
        'no admin gateway: the POSTs wrote no tenant row';
    is sql_value('SELECT count(*) FROM public.tenants WHERE slug IN ($1, $2)',
                 $nb->{slug}, $nb2->{slug}), 0, 'no admin gateway: ... neither slug exists';
    is_deeply db_state(), $before, 'no admin gateway: rows, schemas, audit unchanged';
    is row($member->{id})->{subscription_status}, 'active',
        'no admin gateway: the DELETE cancelled nothing';

    my @err = error_log(since => $mark)
        =~ /^(.*\[error\].*tenant_admin needs "tenant_gateway admin".*)$/mg;
    is scalar(@err), 7, 'no admin gateway: one [error] per refused request'
        or diag explain [error_log(since => $mark)];

    # the admin location itself still works
    is api(GET => "$COLL?limit=1")->{status}, 200,
        'no admin gateway: "tenant_gateway admin" location still 200';

    nginx_reload(http => http_conf());
}


# --- 14. a retried create -------------------------------------------------------

sub creates_of {
    my ($id) = @_;
    return scalar grep { $_->{action} eq 'tenant.create' } audit($id);
}

{
    my $b = body_for(subscriptionTier => 'professional', trialDays => 30);
    my $first = create($b);
    is $first->{status}, 201, 'retry: the first create: 201';
    my $id = $first->{json}{id};

    my $again = create($b);
    is $again->{status}, 200, 'retry: the same body again: 200 (not 409)' or diag explain brief($again);
    is_deeply $again->{json}, $first->{json}, 'retry: ... the same tenant, as the first answer showed it';
    is(($again->{headers}{location} || [])->[0], "$COLL/$id", 'retry: ... Location of the tenant');
    is creates_of($id), 1, 'retry: one tenant.create audit row';
    is sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $b->{slug}), 1,
        'retry: one row';

    # the same body in other words: members in another order, spaces
    my $json = '{ "trialDays": 30, "ownerEmail": ' . $JSON->encode($b->{ownerEmail})
        . ', "subscriptionTier": "professional", "slug": ' . $JSON->encode($b->{slug})
        . ', "name": ' . $JSON->encode($b->{name}) . ', "clerkOrganizationId": '
        . $JSON->encode($b->{clerkOrganizationId}) . ' }';
    is create($json)->{status}, 200, 'retry: the same members in another order: 200';

    # trialDays absent is 14: the same as an explicit 14
    my $d = body_for();
    is create($d)->{status}, 201, 'retry: a body without trialDays: 201';
    is create({ %$d, trialDays => 14 })->{status}, 200, 'retry: ... again with trialDays 14: 200';

    my $before = db_state();
    for my $diff (['another name', name => 'Someone Else'],
                  ['another tier', subscriptionTier => 'enterprise'],
                  ['another owner email', ownerEmail => 'other@example.com'],
                  ['another trial length', trialDays => 31],
                  ['another organization', clerkOrganizationId => 'org_retry_other'],
                  ['another slug', slug => 'retry-other-slug'])
    {
        my ($what, %o) = @$diff;
        my $r = create({ %$b, %o });
        problem $r, 409, 'conflict', "retry: the same slug or organization, $what";
    }
    is_deeply db_state(), $before, 'retry: the conflicts changed nothing';

    # a tenant changed since: a late retry is a conflict
    is api(PATCH => "$COLL/$id", body => { subscriptionTier => 'enterprise' })->{status}, 200,
        'retry: the tenant is moved to enterprise';
    problem create($b), 409, 'conflict', 'retry: the first body once the tenant changed';
}

# Two identical creates at once, both held behind a table lock: the
# second waits for the first one's row and answers with it.
{
    my $lock = DBI->connect("dbi:Pg:dbname=capliquify;host=$PG->{socket};port=$PG->{port}",
                            'postgres', '', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
    $lock->begin_work;
    $lock->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');

    my $b = body_for();
    my @bg = map { async_http(method => 'POST', path => $COLL, body => $JSON->encode($b),
                              headers => [Authorization => "Bearer $ADMIN",
                                          'Content-Type' => 'application/json']) } 1 .. 2;
    ok wait_for(2, sub {
        sql_value(q{SELECT count(*) FROM pg_locks
                     WHERE NOT granted AND relation = 'public.tenants'::regclass}) >= 2 }),
        'retry at once: both creates wait for the table';
    $lock->rollback;
    $lock->disconnect;

    my @r = map { wait_http($_) } @bg;
    is_deeply [sort map { $_->{status} } @r], [200, 201], 'retry at once: one 201, one 200'
        or diag explain [map { brief($_) } @r];
    is $r[0]{json}{id} // 'a', $r[1]{json}{id} // 'b', 'retry at once: the same tenant';
    is sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $b->{slug}), 1,
        'retry at once: one row';
    is schema_exists('tenant_' . ($b->{slug} =~ tr/-/_/r)), 1, 'retry at once: one schema';
    is creates_of($r[0]{json}{id} // ''), 1, 'retry at once: one tenant.create audit row';
}

# The client goes away while its create waits: the statement was sent, so
# it commits when the lock goes (the README says so); the retry the
# client then makes gets the tenant.
{
    my $lock = DBI->connect("dbi:Pg:dbname=capliquify;host=$PG->{socket};port=$PG->{port}",
                            'postgres', '', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
    $lock->begin_work;
    $lock->do('LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE');

    my $b = body_for();
    my $gone = create($b, timeout => 0.5);
    is $gone->{status}, 0, 'disconnect: the client gave up while the create waited';
    sleep 0.3;
    $lock->rollback;
    $lock->disconnect;

    ok wait_for(3, sub { sql_value('SELECT count(*) FROM public.tenants WHERE slug = $1', $b->{slug}) }),
        'disconnect: the create committed all the same';
    my $r = create($b);
    is $r->{status}, 200, 'disconnect: the retry: 200 with the tenant' or diag explain brief($r);
    is $r->{json}{slug}, $b->{slug}, 'disconnect: ... its slug';
    is creates_of($r->{json}{id} // ''), 1, 'disconnect: one tenant.create audit row';
}

done_testing();
