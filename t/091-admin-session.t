#!/usr/bin/perl
# Who is an administrator: "tenant_gateway admin" takes the role only from
# a Clerk session token (issue 12, item 4).  A JWT template of the same
# Clerk instance signs with the same keys; one that maps "metadata" from
# the user's unsafe_metadata (which users write from the browser) would
# otherwise make every user an administrator.  Clerk's session tokens
# carry "sid" (the session's id); template tokens carry jti and none
# (Clerk's "Session tokens" and "JWT templates" documentation).
#
#   1 session     sid + metadata.role "admin": 200 (GET and POST), v1
#                 and v2, RS256 and ES256
#   2 template    the same claims without sid (jti instead, as a template
#                 token has): 403 admin_session_required, problem+json,
#                 the database unchanged; sid empty, a number,
#                 true, an array, an object, only inside act or metadata:
#                 the same
#   3 role        the role is checked first: no sid and another role is
#                 403 admin_required; a top-level "role" is not
#                 metadata.role
#   4 cache       answers from the token cache keep the difference: a
#                 template token refused again, a session token admitted
#                 again
#   5 gateway     tenant locations do not need sid: a template token
#                 with an organization is admitted there
#   6 cron        tenant_cron_expire_trials keeps its own secret: 200
#                 with it, 401 with an administrator's session token
#   7 off         tenant_admin_require_session off (reload): the template
#                 token is an administrator's again (cached or not), the
#                 role still required
#   8 config      nginx -t: bad value, duplicate, wrong context

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS ();


my $SIGNING_KEY = 'c0ffee00' x 8;
my $CRON_SECRET = 'cron-secret-' . ('9' x 32);

my $HTTP = <<"EOF";
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m ttl=30s;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_signing_key  $SIGNING_KEY;
    tenant_tier         starter      features=dashboard;
    tenant_tier         enterprise   features=*;
    tenant_cron_secret  $CRON_SECRET;
    %%SESSION%%

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
    }
EOF

sub http_conf {
    my ($session) = @_;
    my $line = defined $session ? "tenant_admin_require_session $session;"
                                : '# tenant_admin_require_session: default';
    return $HTTP =~ s/%%SESSION%%/$line/r;
}

my $JSON = JSON::XS->new->utf8->canonical;
my $COLL = '/api/admin/tenants';

sub api {
    my ($method, $path, %o) = @_;
    my $body = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
    return http(method => $method, path => $path,
                headers => [(defined $o{token} ? (Authorization => "Bearer $o{token}") : ()),
                            (defined $body ? ('Content-Type' => 'application/json') : ()),
                            @{ $o{headers} || [] }],
                (defined $body ? (body => $body) : ()));
}

sub code  { my ($r) = @_; return $r->{json} ? $r->{json}{code} // '' : '' }
sub ctype { my ($r) = @_; return ($r->{headers}{'content-type'} || [])->[0] // '' }

sub problem {
    my ($r, $status, $code, $name) = @_;
    my $ok = is $r->{status}, $status, "$name: $status";
    $ok &&= like ctype($r), qr{^application/problem\+json}, "$name: problem+json";
    $ok &&= is code($r), $code, "$name: code $code";
    diag explain { status => $r->{status}, body => $r->{body} } unless $ok;
    return $ok;
}

my $SEQ = 0;
sub body_for {
    my $n = ++$SEQ;
    return { name => "Session Test $n", slug => "session-test-$n",
             clerkOrganizationId => "org_session_$n", subscriptionTier => 'starter',
             ownerEmail => "owner$n\@example.com" };
}

sub tenant_count { return sql_value('SELECT count(*) FROM public.tenants') }

# A session token: what Clerk's session endpoint mints (sid, azp, v2: v,
# sts), with the role from public_metadata.
sub session_token {
    my (%c) = @_;
    return mint_token(sub => 'user_admin_091', sid => 'sess_2b7Qm3kXyZ',
                      azp => 'https://app.example.com',
                      metadata => { role => 'admin' }, %c);
}

# A JWT template token: the same instance's key, the default claims Clerk
# gives template tokens (azp exp iat iss jti nbf sub), no sid.
sub template_token {
    my (%c) = @_;
    return mint_token(sub => 'user_attacker_091', sid => undef,
                      jti => '10db7f531a90cb2faea4',
                      azp => 'https://app.example.com',
                      nbf => int(time) - 5,
                      metadata => { role => 'admin' }, %c);
}

pg_start();
my $t = create_tenant(tier => 'enterprise', status => 'active');
nginx_start(http => http_conf());


# --- 1 session --------------------------------------------------------------

{
    for my $case (['v1 RS256', session_token()],
                  ['v2 RS256', session_token(v => 2, sts => 'active')],
                  ['v1 ES256', session_token(key => 'ec')],
                  ['v2 ES256', session_token(key => 'ec', v => 2, sts => 'active')])
    {
        my ($what, $tok) = @$case;
        my $r = api(GET => "$COLL?limit=1", token => $tok);
        is $r->{status}, 200, "session: $what session token, metadata.role admin: 200";
    }

    my $before = tenant_count();
    my $r = api(POST => $COLL, token => session_token(), body => body_for());
    is $r->{status}, 201, 'session: POST create with a session token: 201';
    is tenant_count(), $before + 1, 'session: the tenant was created';
}


# --- 2 template -------------------------------------------------------------

{
    my $before = tenant_count();
    my $tok = template_token();

    my $r = api(GET => "$COLL?limit=1", token => $tok);
    problem $r, 403, 'admin_session_required',
        'template: no sid, metadata.role admin, GET';
    like $r->{json}{detail} // '', qr/session token.*"sid".*JWT template/,
        'template: the detail says why';
    like $r->{json}{type} // '', qr/admin_session_required$/,
        'template: a stable type';
    is $r->{json}{status}, 403, 'template: status member 403';

    problem api(POST => $COLL, token => $tok, body => body_for()), 403,
        'admin_session_required', 'template: no sid, POST create';
    problem api(GET => "$COLL?limit=1", token => template_token(key => 'ec', v => 2, sts => 'active')),
        403, 'admin_session_required', 'template: v2-shaped, ES256, no sid';

    # What an attacker would try instead of a missing sid.
    my %sid = (
        'sid ""'              => { sid => '' },
        'sid 12345'           => { sid => 12345 },
        'sid true'            => { sid => JSON::XS::true() },
        'sid ["sess_x"]'      => { sid => ['sess_x'] },
        'sid {"id":"sess_x"}' => { sid => { id => 'sess_x' } },
        'sid only in act'     => { act => { sid => 'sess_x', sub => 'user_x', iss => 'https://dashboard.clerk.com' } },
        'sid only in metadata' => { metadata => { role => 'admin', sid => 'sess_x' } },
    );
    for my $what (sort keys %sid) {
        my $tok = mint_token(sub => 'user_attacker_091', sid => undef,
                             metadata => { role => 'admin' }, %{ $sid{$what} });
        problem api(GET => "$COLL?limit=1", token => $tok), 403,
            'admin_session_required', "template: $what";
    }

    is tenant_count(), $before, 'template: nothing was created';
    like error_log(), qr/refused with 403 admin_session_required/,
        'template: the refusal is logged';
}


# --- 3 role -----------------------------------------------------------------

{
    problem api(GET => "$COLL?limit=1", token => template_token(metadata => { role => 'user' })),
        403, 'admin_required', 'role: no sid and metadata.role "user": admin_required first';
    problem api(GET => "$COLL?limit=1", token => session_token(metadata => undef, role => 'admin')),
        403, 'admin_required', 'role: session token, top-level "role" admin, no metadata';
    problem api(GET => "$COLL?limit=1", token => session_token(metadata => { role => 'Admin' })),
        403, 'admin_required', 'role: session token, metadata.role "Admin"';
    problem api(GET => "$COLL?limit=1", token => session_token(metadata => undef,
                                                                unsafe_metadata => { role => 'admin' })),
        403, 'admin_required', 'role: session token, unsafe_metadata.role admin is not read';
}


# --- 4 cache ----------------------------------------------------------------

{
    my $tmpl = template_token(sub => 'user_cached_template');
    my $sess = session_token(sub => 'user_cached_session');

    for my $round (1 .. 2) {
        problem api(GET => "$COLL?limit=1", token => $tmpl), 403,
            'admin_session_required', "cache: template token, request $round";
        is api(GET => "$COLL?limit=1", token => $sess)->{status}, 200,
            "cache: session token, request $round: 200";
    }
}


# --- 5 gateway --------------------------------------------------------------

{
    my $org = $t->{clerk_organization_id};
    my $r = http(path => '/api/products', headers => [
        Authorization       => 'Bearer ' . template_token(org => $org),
        'X-Organization-ID' => $org,
    ]);
    is $r->{status}, 200, 'gateway: a template token on a tenant location: 200';
    is_deeply $r->{json}{headers}{'x-tenant-id'}, [$t->{id}],
        'gateway: the upstream saw the tenant';
}


# --- 6 cron -----------------------------------------------------------------

{
    my $cron = sub { http(method => 'POST', path => '/api/cron/expire-trials',
                          headers => [Authorization => "Bearer $_[0]"]) };

    my $r = $cron->($CRON_SECRET);
    is $r->{status}, 200, 'cron: its own secret: 200';
    ok defined $r->{json}{expired}, 'cron: the job answered';

    is $cron->(session_token())->{status}, 401,
        'cron: an administrator\'s session token is not the cron secret: 401';
}


# --- 7 off ------------------------------------------------------------------

{
    my $cached = template_token(sub => 'user_cached_template_off');
    problem api(GET => "$COLL?limit=1", token => $cached), 403,
        'admin_session_required', 'off: before the reload, refused (and cached)';

    nginx_reload(http => http_conf('off'));

    is api(GET => "$COLL?limit=1", token => $cached)->{status}, 200,
        'off: the cached template token is admitted';
    is api(GET => "$COLL?limit=1", token => template_token())->{status}, 200,
        'off: a fresh template token is admitted';
    is api(GET => "$COLL?limit=1", token => session_token())->{status}, 200,
        'off: a session token still is';
    problem api(GET => "$COLL?limit=1", token => template_token(metadata => { role => 'user' })),
        403, 'admin_required', 'off: the role is still required';

    nginx_reload(http => http_conf('on'));

    problem api(GET => "$COLL?limit=1", token => $cached), 403,
        'admin_session_required', 'on again: the cached template token is refused';
}


# --- 8 config ---------------------------------------------------------------

{
    my $base = http_conf() =~ s/^.*tenant_admin_require_session: default\n//mr;

    my %bad = (
        'value "maybe"' => ["tenant_admin_require_session maybe;\n",
                            qr/invalid value "maybe"/],
        'duplicate'     => ["tenant_admin_require_session on;\n"
                            . "tenant_admin_require_session off;\n",
                            qr/is duplicate/],
        'in a server'   => [undef, qr/"tenant_admin_require_session" directive is not allowed here/],
    );
    for my $what (sort keys %bad) {
        my ($lines, $re) = @{ $bad{$what} };
        my $http = defined $lines
            ? $lines . $base
            : $base =~ s/(server \{\n)/$1        tenant_admin_require_session off;\n/r;
        my $c = nginx_conf_test(http => $http);
        ok !$c->{ok}, "config: $what: nginx -t fails";
        like $c->{output}, $re, "config: $what: says why";
    }

    ok nginx_conf_test(http => http_conf('off'))->{ok}, 'config: off accepted';
}

done_testing();
