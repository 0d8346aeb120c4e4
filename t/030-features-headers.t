#!/usr/bin/perl
# Tier features, the signed tenant headers, the $tenant_* variables, CORS
# preflights and configuration errors.
#
#   features   tenant_require_feature against the shipped tiers (starter,
#              professional, enterprise with "*"), the 403 problem body
#              (feature, currentTier, requiredTier, upgradeUrl), a custom
#              tenant_upgrade_url, a tier no tenant_tier declares (fail
#              closed), tenant_problem_type_base.
#   headers    what the upstream receives: every tenant header exactly
#              once with the database row's values, none of the client's
#              forged ones (any case, duplicates), the client's other
#              headers untouched; X-Tenant-Signature recomputed here
#              (HKDF-SHA256 + HMAC-SHA256, see src/tenant_sign.h).
#   variables  $tenant_* in an access log.
#   CORS       preflights pass without a token (tenant_cors_preflight),
#              refusals carry add_header ... always.
#   config     nginx -t refuses bad directives with a clear message that
#              never quotes the signing key.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use POSIX ();
use Crypt::KeyDerivation qw(hkdf);
use Digest::SHA          qw(hmac_sha256_hex);
use Time::HiRes          qw(sleep);

# ENCRYPTION_KEY of this test: 32 bytes as 64 hex digits.
my $SIGNING_KEY = join '', map { sprintf '%02x', (7 * $_ + 0xa5) % 256 } 0 .. 31;

my $DEFAULT_TYPE_BASE = 'https://capliquify.com/problems/';

# The shipped tiers (conf/nginx.conf.template), cheapest first.
my $TIERS = <<'EOF';
    tenant_tier starter       features=dashboard,inventory,basic_forecasting;
    tenant_tier professional  features=dashboard,inventory,basic_forecasting,ai_forecasting,working_capital,integrations;
    tenant_tier enterprise    features=*,sso,audit_log,white_label;
EOF

my $http = <<'EOF';
    log_format t030 '$request_uri|$status|$tenant_outcome|$tenant_id|$tenant_tier|$tenant_user_id|$tenant_org_id';

    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m ttl=30s negative_ttl=5s stale=5m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwt_key      %%RSA_PUB%%;
__TIERS__
    tenant_signing_key  __SIGNING_KEY__;

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/t030.log t030;

        proxy_set_header Host $http_host;

        location /api/ {
            tenant_gateway on;
            proxy_pass http://%%ECHO%%;
        }

        location = /api/forecasts/ai {
            tenant_gateway on;
            tenant_require_feature ai_forecasting;
            proxy_pass http://%%ECHO%%;
        }

        location = /api/inventory {
            tenant_gateway on;
            tenant_require_feature inventory;
            proxy_pass http://%%ECHO%%;
        }

        location = /api/settings/sso {
            tenant_gateway on;
            tenant_require_feature sso;
            proxy_pass http://%%ECHO%%;
        }

        location = /api/custom-upgrade {
            tenant_gateway on;
            tenant_require_feature ai_forecasting;
            tenant_upgrade_url "https://billing.example/upgrade?to=$tenant_required_tier&org=$tenant_org_id&from=$tenant_tier&feature=$tenant_feature";
            proxy_pass http://%%ECHO%%;
        }

        location = /api/type-base {
            tenant_gateway on;
            tenant_require_feature ai_forecasting;
            tenant_problem_type_base https://errors.example/p/;
            proxy_pass http://%%ECHO%%;
        }

        location /cors/ {
            tenant_gateway on;
            add_header Access-Control-Allow-Origin https://app.example always;
            proxy_pass http://%%ECHO%%;
        }

        location = /cors/ai {
            tenant_gateway on;
            tenant_require_feature ai_forecasting;
            add_header Access-Control-Allow-Origin https://app.example always;
            proxy_pass http://%%ECHO%%;
        }

        location /cors-off/ {
            tenant_gateway on;
            tenant_cors_preflight off;
            add_header Access-Control-Allow-Origin https://app.example always;
            proxy_pass http://%%ECHO%%;
        }
    }
EOF
$http =~ s/__TIERS__\n/$TIERS/;
$http =~ s/__SIGNING_KEY__/$SIGNING_KEY/;

pg_start();

# one active tenant per tier; "legacy" is a tier no tenant_tier declares
my %tenant = map { ($_ => create_tenant(tier => $_, status => 'active')) }
             qw(starter professional enterprise legacy);

my $ngx = nginx_start(http => $http);

my $access_log = "$ngx->{dir}/t030.log";


# A request as the tenant's member; returns the response.
sub as_tenant {
    my ($t, %r) = @_;

    my $token = mint_token(sub => $r{sub} // 'user_t030',
                           org => { id => $t->{clerk_organization_id},
                                    (role => $r{role}) x defined $r{role} });
    return http(path => $r{path}, method => $r{method},
                headers => ['Authorization' => "Bearer $token",
                            @{ $r{headers} || [] }]);
}


# --- features ---------------------------------------------------------------

my $upgrade = 'https://app.capliquify.com/settings/billing?plan=%s&org=%s';

# tenant (its tier), path, status, required tier when refused
my @feature_cases = (
    [starter      => '/api/forecasts/ai',  403, 'professional'],
    [professional => '/api/forecasts/ai',  200],
    [enterprise   => '/api/forecasts/ai',  200],       # features=*
    [starter      => '/api/inventory',     200],
    [professional => '/api/inventory',     200],
    [enterprise   => '/api/inventory',     200],       # features=*
    [starter      => '/api/settings/sso',  403, 'enterprise'],
    [professional => '/api/settings/sso',  403, 'enterprise'],
    [enterprise   => '/api/settings/sso',  200],
    [starter      => '/api/products',      200],       # no feature required
    # a tier no tenant_tier declares has no features: fail closed ...
    [legacy       => '/api/forecasts/ai',  403, 'professional'],
    [legacy       => '/api/inventory',     403, 'starter'],
    # ... but ungated locations let it in
    [legacy       => '/api/products',      200],
);

for my $c (@feature_cases) {
    my ($name, $path, $status, $required) = @$c;
    my $t = $tenant{$name};
    my $org = $t->{clerk_organization_id};
    my $what = "$name tenant (tier $t->{subscription_tier}) on $path";

    my $r = as_tenant($t, path => $path);
    is $r->{status}, $status, "$what: $status";

    if ($status == 200) {
        is $r->{json}{uri}, $path, "$what: reached the upstream";
        is_deeply $r->{json}{headers}{'x-tenant-tier'}, [$t->{subscription_tier}],
            "$what: upstream saw X-Tenant-Tier";
        next;
    }

    my $feature = { '/api/forecasts/ai' => 'ai_forecasting',
                    '/api/inventory'    => 'inventory',
                    '/api/settings/sso' => 'sso' }->{$path};
    is_deeply $r->{headers}{'content-type'}, ['application/problem+json'],
        "$what: problem+json";
    is_deeply $r->{json}, {
        type         => "${DEFAULT_TYPE_BASE}feature_not_available",
        title        => 'Feature not available on this plan',
        status       => 403,
        detail       => "the organization's plan does not include this feature",
        code         => 'feature_not_available',
        feature      => $feature,
        currentTier  => $t->{subscription_tier},
        requiredTier => $required,
        upgradeUrl   => sprintf($upgrade, $required, $org),
    }, "$what: problem body (feature, currentTier, requiredTier, upgradeUrl)"
        or diag $r->{body};
}

{
    my $t = $tenant{starter};
    my $org = $t->{clerk_organization_id};

    my $r = as_tenant($t, path => '/api/custom-upgrade');
    is $r->{status}, 403, 'custom tenant_upgrade_url: starter refused';
    is $r->{json}{upgradeUrl},
        "https://billing.example/upgrade?to=professional&org=$org&from=starter"
        . '&feature=ai_forecasting',
        'custom tenant_upgrade_url: $tenant_required_tier, $tenant_org_id, '
        . '$tenant_tier and $tenant_feature rendered';
    is $r->{json}{requiredTier}, 'professional', 'custom tenant_upgrade_url: requiredTier';

    $r = as_tenant($tenant{professional}, path => '/api/custom-upgrade');
    is $r->{status}, 200, 'custom tenant_upgrade_url: professional admitted';

    # An organization id may hold any visible ASCII byte (X-Organization-ID
    # and the token's claim: tenant_org_id_valid(), the table: any text):
    # in the URL each $tenant_* value is a URI component, every byte but
    # ALPHA DIGIT - . _ ~ percent-encoded; elsewhere the value is as it is.
    my $odd = create_tenant(tier => 'starter', status => 'active',
                            org => q{org_&to=enterprise#x?y=%41/"<>\\+;,'()*!@$[]{}|^`:~ok});
    my $oid = $odd->{clerk_organization_id};
    (my $want = $oid) =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    like $want, qr/^org_%26to%3Denterprise%23x%3Fy%3D%2541%2F%22/, 'the expected encoding';

    $r = as_tenant($odd, path => '/api/custom-upgrade?odd-org');
    is $r->{status}, 403, 'org id with reserved bytes: refused (feature)';
    is $r->{json}{upgradeUrl},
        "https://billing.example/upgrade?to=professional&org=$want&from=starter"
        . '&feature=ai_forecasting',
        'org id with reserved bytes: $tenant_org_id percent-encoded in upgradeUrl'
        or diag $r->{body};
    # nginx writes the access log after the answer has gone out: wait
    # for the line rather than race the worker's log phase
    my ($line) = retry_until(2, sub {
        open my $fh, '<', $access_log or die "$access_log: $!";
        (grep { m{^/api/custom-upgrade\?odd-org\|} } <$fh>)[0];
    }, sub { defined $_[0] }, 0.02);
    like $line // '', qr{\|org_&to=enterprise#x\?y=%41/}, '... but as it is in the access log';

    $r = as_tenant($t, path => '/api/type-base');
    is $r->{status}, 403, 'tenant_problem_type_base: refused';
    is $r->{json}{type}, 'https://errors.example/p/feature_not_available',
        'tenant_problem_type_base: "type" uses the base';
    is $r->{json}{code}, 'feature_not_available', 'tenant_problem_type_base: code unchanged';

    $r = http(path => '/api/type-base');
    is $r->{status}, 401, 'tenant_problem_type_base: no token, 401';
    is $r->{json}{type}, 'https://errors.example/p/authentication_required',
        'tenant_problem_type_base: applies to every refusal';

    $r = http(path => '/api/products');
    is $r->{json}{type}, "${DEFAULT_TYPE_BASE}authentication_required",
        'default problem type base elsewhere';
}


# --- headers ----------------------------------------------------------------

# HKDF-SHA256(ikm = the key's 32 bytes, salt empty, info), then
# HMAC-SHA256 over the canonical message of src/tenant_sign.h.
my $derived = hkdf(pack('H*', $SIGNING_KEY), '', 'SHA256', 32,
                   'capliquify tenant headers v1');

my @SIGNED = qw(x-tenant-id x-tenant-slug x-tenant-schema x-tenant-tier
                x-organization-id x-user-id x-org-role);

sub signature_of {
    my ($h, $key) = @_;    # tenant_headers_once()'s
    my $msg = join "\n", 'v2', $h->{'x-tenant-timestamp'}, $h->{':method'},
                         $h->{':target'}, map { $h->{$_} // '' }
                                              'x-tenant-request-id', @SIGNED;
    return 'v2=' . hmac_sha256_hex($msg, $key // $derived);
}

# The upstream's headers as name => value, checking each came once (and
# X-Tenant-Request-ID), and its request line as ':method' and ':target'
# (signed too).
sub tenant_headers_once {
    my ($json, $what, @names) = @_;
    my %h;
    push @names, 'x-tenant-request-id';
    for my $n (@names) {
        my $v = $json->{headers}{$n} || [];
        is scalar(@$v), 1, "$what: upstream got $n exactly once"
            or diag explain $v;
        $h{$n} = $v->[0];
    }
    @h{':method', ':target'} = @$json{qw(method uri)};
    return \%h;
}

my @forged = (
    'X-Tenant-ID'        => '00000000-0000-0000-0000-000000000000',
    'x-tenant-tier'      => 'enterprise',
    'X-TENANT-SCHEMA'    => 'public',
    'X-User-ID'          => 'user_admin',
    'X-Org-Role'         => 'org:admin',
    'X-Tenant-Signature' => 'v1=' . ('0' x 64),
    'x-tenant-id'        => 'second-copy',
    'X-TENANT-TIER'      => 'enterprise',
    'x-user-id'          => 'user_admin2',
    'X-ORG-ROLE'         => 'org:owner',
    'x-TeNaNt-SlUg'      => 'victim',
    'X-Tenant-Timestamp' => '1',
    'X-User-Email'       => 'admin@example.test',
    'x-tenant-signature' => 'v1=' . ('f' x 64),
);

{
    my $t = $tenant{professional};
    my ($row) = sql('SELECT id::text AS id, slug, schema_name, subscription_tier,'
                    . ' clerk_organization_id FROM public.tenants WHERE id = $1',
                    $t->{id});
    my $org = $row->{clerk_organization_id};
    my $what = 'admitted with forged headers';

    my $r = as_tenant($t, path => '/api/headers', sub => 'user_2hdr', role => 'org:member',
                      headers => [
                          'X-Request-ID'      => 'req-t030-1',
                          @forged[0 .. 11],
                          'User-Agent'        => 't030-agent/1.0',
                          'X-Organization-ID' => $org,     # repeats the token's
                          @forged[12 .. $#forged],
                          'Host'              => 'gateway.example',
                          'X-Custom'          => 'kept',
                      ]);
    is $r->{status}, 200, "$what: 200";
    my $j = $r->{json} || {};

    my $h = tenant_headers_once($j, $what, @SIGNED, 'x-tenant-timestamp',
                                'x-tenant-signature');
    is $h->{'x-tenant-id'}, $row->{id}, "$what: X-Tenant-ID is the row's id";
    is $h->{'x-tenant-slug'}, $row->{slug}, "$what: X-Tenant-Slug is the row's slug";
    is $h->{'x-tenant-schema'}, $row->{schema_name}, "$what: X-Tenant-Schema is the row's schema";
    is $h->{'x-tenant-tier'}, $row->{subscription_tier}, "$what: X-Tenant-Tier is the row's tier";
    is $h->{'x-organization-id'}, $org, "$what: X-Organization-ID is the organization";
    is $h->{'x-user-id'}, 'user_2hdr', "$what: X-User-ID is the token's sub";
    is $h->{'x-org-role'}, 'org:member', "$what: X-Org-Role is the token's role";
    like $h->{'x-tenant-timestamp'} // '', qr/^\d+$/, "$what: X-Tenant-Timestamp is unix seconds";
    ok abs(($h->{'x-tenant-timestamp'} // 0) - time) <= 5,
        "$what: X-Tenant-Timestamp is within 5 s of now";
    like $h->{'x-tenant-signature'} // '', qr/^v2=[0-9a-f]{64}$/,
        "$what: X-Tenant-Signature is v2=<64 lowercase hex>";

    is $h->{'x-tenant-signature'}, signature_of($h),
        "$what: the signature verifies, recomputed independently";

    for my $n (@SIGNED, 'x-tenant-timestamp', 'x-tenant-request-id', ':method', ':target') {
        my %alt = (%$h, $n => ($h->{$n} // '') . 'x');
        isnt signature_of(\%alt), $h->{'x-tenant-signature'},
            "$what: altering $n breaks the signature";
    }
    {
        isnt $h->{'x-tenant-signature'}, signature_of($h, pack('H*', $SIGNING_KEY)),
            "$what: the HMAC key is derived (HKDF), not the raw signing key";
    }
    {
        my %swap = (%$h, 'x-tenant-slug' => $h->{'x-tenant-schema'},
                         'x-tenant-schema' => $h->{'x-tenant-slug'});
        isnt signature_of(\%swap), $h->{'x-tenant-signature'},
            "$what: swapping slug and schema breaks the signature";
    }

    my @tenantish = sort grep { /^x-(tenant-|user-|org-role$|organization-id$)/ }
                    keys %{ $j->{headers} || {} };
    is_deeply \@tenantish, [sort @SIGNED, 'x-tenant-signature', 'x-tenant-timestamp',
                                   'x-tenant-request-id'],
        "$what: no other X-Tenant-*/X-User-* header reached the upstream (X-User-Email gone)";
    my @values = map { @{ $j->{headers}{$_} } } @tenantish;
    ok !(grep { /^(enterprise|public|user_admin2?|org:admin|org:owner|victim|1|second-copy)$/
                || $_ eq '00000000-0000-0000-0000-000000000000'
                || $_ eq 'v1=' . ('0' x 64) || $_ eq 'v1=' . ('f' x 64) } @values),
        "$what: no forged value reached the upstream" or diag explain \@values;

    is_deeply $j->{headers}{'x-request-id'}, ['req-t030-1'], "$what: X-Request-ID kept";
    is_deeply $j->{headers}{'user-agent'}, ['t030-agent/1.0'], "$what: User-Agent kept";
    is_deeply $j->{headers}{'host'}, ['gateway.example'], "$what: Host kept";
    is_deeply $j->{headers}{'x-custom'}, ['kept'], "$what: X-Custom kept";
}

{
    # no org role: X-Org-Role left out, signed as the empty string
    my $t = $tenant{starter};
    my $r = as_tenant($t, path => '/api/no-role', sub => 'user_norole');
    is $r->{status}, 200, 'no org role: 200';
    my $j = $r->{json} || {};
    ok !exists $j->{headers}{'x-org-role'}, 'no org role: X-Org-Role omitted';
    my $h = tenant_headers_once($j, 'no org role', grep { $_ ne 'x-org-role' } @SIGNED,
                                'x-tenant-timestamp', 'x-tenant-signature');
    is $h->{'x-tenant-id'}, $t->{id}, 'no org role: X-Tenant-ID';
    is $h->{'x-tenant-signature'}, signature_of($h),
        'no org role: signature verifies with an empty role';
}

{
    # a Clerk v2 token: the role comes from o.rol
    my $t = $tenant{enterprise};
    my $token = mint_token(v => 2, sub => 'user_v2',
                           org => { id => $t->{clerk_organization_id}, role => 'admin' });
    my $r = http(path => '/api/v2', headers => [Authorization => "Bearer $token",
                                                'X-Org-Role' => 'org:owner']);
    is $r->{status}, 200, 'v2 token: 200';
    my $h = tenant_headers_once($r->{json} || {}, 'v2 token', @SIGNED,
                                'x-tenant-timestamp', 'x-tenant-signature');
    is $h->{'x-org-role'}, 'admin', 'v2 token: X-Org-Role is o.rol, not the forged one';
    is $h->{'x-user-id'}, 'user_v2', 'v2 token: X-User-ID';
    is $h->{'x-tenant-signature'}, signature_of($h), 'v2 token: signature verifies';
}

{
    # many headers: the stripped list spans several parts of nginx's list
    my $t = $tenant{enterprise};
    my @custom = map { ("X-Custom-$_" => "v$_") } 1 .. 40;
    my @mixed;
    for my $i (0 .. 39) {
        push @mixed, @custom[2 * $i, 2 * $i + 1];
        push @mixed, ($i % 2 ? 'x-tenant-id' : 'X-User-Id') => "forged$i" if $i % 5 == 0;
    }
    my $r = as_tenant($t, path => '/api/many', headers => \@mixed);
    is $r->{status}, 200, 'forged headers among 40 others: 200';
    my $j = $r->{json} || {};
    is_deeply [map { $j->{headers}{"x-custom-$_"} } 1 .. 40], [map { ["v$_"] } 1 .. 40],
        'forged headers among 40 others: all 40 others arrive';
    is_deeply $j->{headers}{'x-tenant-id'}, [$t->{id}],
        'forged headers among 40 others: X-Tenant-ID once, the real one';
    is_deeply $j->{headers}{'x-user-id'}, ['user_t030'],
        'forged headers among 40 others: X-User-ID once, the real one';
    my $h = tenant_headers_once($j, 'many headers', grep { $_ ne 'x-org-role' } @SIGNED,
                                'x-tenant-timestamp', 'x-tenant-signature');
    is $h->{'x-tenant-signature'}, signature_of($h), 'many headers: signature verifies';
}

{
    # refused requests never reach the upstream, forged headers or not
    my $r = http(path => '/api/forged', headers => [@forged]);
    is $r->{status}, 401, 'forged tenant headers without a token: 401';
    is_deeply $r->{headers}{'www-authenticate'}, ['Bearer'], '... WWW-Authenticate: Bearer';
}


# --- CORS -------------------------------------------------------------------

my @preflight = (Origin => 'https://app.example',
                 'Access-Control-Request-Method' => 'POST',
                 'Access-Control-Request-Headers' => 'authorization');

{
    my $r = http(method => 'OPTIONS', path => '/cors/items?pf=1',
                 headers => [@preflight, 'X-Tenant-ID' => 'forged-in-preflight']);
    # answered by the gateway itself: an unauthenticated request never
    # reaches the upstream
    is $r->{status}, 204, 'preflight without token: 204 from the gateway';
    is $r->{body}, '', '... no body';
    ok !$r->{json}, 'preflight: not the echo upstream\'s answer';
    is_deeply $r->{headers}{'access-control-allow-origin'}, ['https://app.example'],
        'preflight: Access-Control-Allow-Origin';

    $r = http(method => 'OPTIONS', path => '/cors/items?pf=2',
              headers => [Origin => 'https://app.example']);
    is $r->{status}, 401, 'plain OPTIONS (no Access-Control-Request-Method): token needed';

    $r = http(path => '/cors/items?pf=3', headers => [@preflight]);
    is $r->{status}, 401, 'GET with Access-Control-Request-Method: token needed';

    $r = http(path => '/cors/items?pf=4', headers => [Origin => 'https://app.example']);
    is $r->{status}, 401, 'CORS GET without token: 401';
    is_deeply $r->{headers}{'access-control-allow-origin'}, ['https://app.example'],
        '401 carries Access-Control-Allow-Origin (add_header always)';
    is $r->{json}{code}, 'authentication_required', '401 problem body readable';

    $r = as_tenant($tenant{starter}, path => '/cors/ai',
                   headers => [Origin => 'https://app.example']);
    is $r->{status}, 403, 'CORS feature refusal: 403';
    is_deeply $r->{headers}{'access-control-allow-origin'}, ['https://app.example'],
        '403 carries Access-Control-Allow-Origin';

    $r = as_tenant($tenant{starter}, path => '/cors/items',
                   headers => [Origin => 'https://app.example']);
    is $r->{status}, 200, 'CORS GET with token: 200';
    is_deeply $r->{headers}{'access-control-allow-origin'}, ['https://app.example'],
        '200 carries Access-Control-Allow-Origin';

    $r = http(method => 'OPTIONS', path => '/cors/ai', headers => [@preflight]);
    is $r->{status}, 204, 'preflight to a feature-gated location: 204 too';

    $r = http(method => 'OPTIONS', path => '/cors-off/items', headers => [@preflight]);
    is $r->{status}, 401, 'tenant_cors_preflight off: preflight without token 401';
    is_deeply $r->{headers}{'access-control-allow-origin'}, ['https://app.example'],
        'tenant_cors_preflight off: the 401 carries Access-Control-Allow-Origin';
}


# --- variables in the access log ----------------------------------------------

{
    my $pro = $tenant{professional};
    my $st  = $tenant{starter};

    as_tenant($pro, path => '/api/log?admitted', sub => 'user_log1');
    as_tenant($st, path => '/api/forecasts/ai?refused', sub => 'user_log2');
    http(path => '/api/log?anonymous');

    my %want = (
        '/api/log?admitted' =>
            ['200', 'admitted', $pro->{id}, 'professional', 'user_log1',
             $pro->{clerk_organization_id}],
        '/api/forecasts/ai?refused' =>
            ['403', 'feature_not_available', $st->{id}, 'starter', 'user_log2',
             $st->{clerk_organization_id}],
        '/api/log?anonymous' =>
            ['401', 'authentication_required', '-', '-', '-', '-'],
        '/cors/items?pf=1' =>
            ['204', 'preflight', '-', '-', '-', '-'],
    );

    # the log line is written after the answer: wait a little for it
    my %got;
    for (1 .. 100) {
        open my $fh, '<', $access_log or die "$access_log: $!";
        %got = map { chomp; my @f = split /\|/, $_, -1; (shift(@f) => \@f) } <$fh>;
        last if !grep { !$got{$_} } keys %want;
        sleep 0.02;
    }
    for my $uri (sort keys %want) {
        is_deeply $got{$uri}, $want{$uri},
            "access log for $uri: status, \$tenant_outcome, \$tenant_id, \$tenant_tier, "
            . "\$tenant_user_id, \$tenant_org_id"
            or diag explain $got{$uri};
    }
}


# --- configuration errors -------------------------------------------------------

my $KEYS = TenantTest::jwt_keys();
my $nokey_dir = "$KEYS->{dir}/none";

# A key file that is a directory, or a FIFO: nginx -t used to block in
# open() on a FIFO without a writer.  This one has a writer (this process
# holds it open read-write), so that a regression fails the case instead
# of hanging the suite; the module refuses it for not being a file.
my $key_fifo = "$KEYS->{dir}/fifo.pem";
POSIX::mkfifo($key_fifo, 0600) or die "mkfifo: $!" unless -p $key_fifo;
sysopen(my $fifo_writer, $key_fifo, POSIX::O_RDWR()) or die "$key_fifo: $!";

# A good configuration, with (name => text) parts replaced by the case.
my %base = (
    database  => 'tenant_database "%%PG%%";',
    cache     => 'tenant_cache zone=tenants:1m;',
    jwt_key   => 'tenant_jwt_key %%RSA_PUB%%;',
    tiers     => $TIERS,
    signing   => "tenant_signing_key $SIGNING_KEY;",
    extra     => '',
    location  => 'tenant_gateway on; tenant_require_feature ai_forecasting;',
);

sub conf_with {
    my (%over) = @_;
    my %p = (%base, %over);
    return join "\n", @p{qw(database cache jwt_key tiers signing extra)}, <<"EOF";
    server {
        listen 127.0.0.1:%%PORT%%;
        location /api/ {
            $p{location}
            proxy_pass http://127.0.0.1:9;
        }
    }
EOF
}

{
    my $c = nginx_conf_test(http => conf_with());
    ok $c->{ok}, 'config: the base configuration passes nginx -t' or diag $c->{output};
}

my $hex63 = substr $SIGNING_KEY, 0, 63;

# name, parts, expected message
my @config_cases = (
    ['unknown feature', { location => 'tenant_gateway on; tenant_require_feature teleportation;' },
     qr/\[emerg\].*feature "teleportation" is not listed by any tenant_tier/],
    ['unknown feature, location without gateway', { location => 'tenant_require_feature teleportation;' },
     qr/\[emerg\].*feature "teleportation" is not listed by any tenant_tier/],
    ['signing key of 63 hex digits', { signing => "tenant_signing_key $hex63;" },
     qr/\[emerg\].*"tenant_signing_key" must be 64 hexadecimal digits/, $hex63],
    ['signing key of 64 characters, not hex',
     { signing => 'tenant_signing_key ' . substr($SIGNING_KEY, 0, 62) . 'zz;' },
     qr/\[emerg\].*"tenant_signing_key" must be 64 hexadecimal digits/,
     substr($SIGNING_KEY, 0, 62) . 'zz'],
    ['signing key of 66 hex digits', { signing => "tenant_signing_key ${SIGNING_KEY}ab;" },
     qr/\[emerg\].*"tenant_signing_key" must be 64 hexadecimal digits/, "${SIGNING_KEY}ab"],
    ['duplicate signing key', { extra => "tenant_signing_key $SIGNING_KEY;" },
     qr/\[emerg\].*"tenant_signing_key" directive is duplicate/, $SIGNING_KEY],
    ['gateway without signing key', { signing => '' },
     qr/\[emerg\].*"tenant_gateway" needs "tenant_signing_key"/],
    ['gateway without tenant_jwt_key', { jwt_key => '' },
     qr/\[emerg\].*"tenant_gateway" needs "tenant_jwt_key", "tenant_jwks_file" or "tenant_jwks_request"/, $SIGNING_KEY],
    ['tier name with capitals', { extra => 'tenant_tier Gold features=sso;' },
     qr/\[emerg\].*invalid tier "Gold": invalid tier name "Gold"/],
    ['tier name with a dot', { extra => 'tenant_tier gold.plus;' },
     qr/\[emerg\].*invalid tier "gold\.plus": invalid tier name/],
    ['duplicate tier', { extra => 'tenant_tier starter features=dashboard;' },
     qr/\[emerg\].*invalid tier "starter": duplicate tier "starter"/],
    ['feature name with a dash', { extra => 'tenant_tier gold features=ai-forecasting;' },
     qr/\[emerg\].*invalid tier "gold": invalid feature name "ai-forecasting"/],
    ['empty feature name', { extra => 'tenant_tier gold features=sso,,audit_log;' },
     qr/\[emerg\].*invalid tier "gold": invalid feature name ""/],
    ['tier parameter other than features=', { extra => 'tenant_tier gold feature=sso;' },
     qr/\[emerg\].*invalid parameter "feature=sso"/],
    ['tenant_cache without zone=', { cache => 'tenant_cache ttl=30s;' },
     qr/\[emerg\].*"tenant_cache" must have "zone" parameter/],
    ['duplicate tenant_database', { extra => 'tenant_database "%%PG%%";' },
     qr/\[emerg\].*"tenant_database" directive is duplicate/],
    ['tenant_jwt_algorithms HS256', { extra => 'tenant_jwt_algorithms RS256 HS256;' },
     qr/\[emerg\].*unsupported algorithm "HS256", only RS256 and ES256 are allowed/],
    ['tenant_jwt_algorithms none', { extra => 'tenant_jwt_algorithms none;' },
     qr/\[emerg\].*unsupported algorithm "none"/],
    ['tenant_jwt_key file missing', { jwt_key => "tenant_jwt_key $nokey_dir/missing.pem;" },
     qr/\[emerg\].*open\(\) "\Q$nokey_dir\E\/missing\.pem" failed/],
    ['tenant_jwt_key is a private key', { jwt_key => "tenant_jwt_key $KEYS->{rsa_key};" },
     qr/\[emerg\].*invalid key in "\Q$KEYS->{rsa_key}\E": no valid PEM "PUBLIC KEY"/],
    ['tenant_jwt_key is the JWKS (not PEM)', { jwt_key => "tenant_jwt_key $KEYS->{jwks};" },
     qr/\[emerg\].*invalid key in "\Q$KEYS->{jwks}\E": no valid PEM "PUBLIC KEY"/],
    ['tenant_jwt_key is a directory', { jwt_key => "tenant_jwt_key $KEYS->{dir};" },
     qr/\[emerg\].*"\Q$KEYS->{dir}\E" is not a readable file of at most 1m/],
    ['tenant_jwks_file is a FIFO', { jwt_key => "tenant_jwks_file $key_fifo;" },
     qr/\[emerg\].*"\Q$key_fifo\E" is not a readable file of at most 1m/],
);

my $private_pem = do { local $/; open my $f, '<', $KEYS->{rsa_key} or die $!; <$f> };
my ($private_b64) = $private_pem =~ /-----\n(\S{40})/;

for my $case (@config_cases) {
    my ($name, $over, $re, $secret) = @$case;
    my $c = nginx_conf_test(http => conf_with(%$over));
    ok !$c->{ok}, "config: $name: nginx -t fails";
    like $c->{output}, $re, "config: $name: clear message" or diag $c->{output};
    # The message never quotes the signing key, the good one or a bad one
    # (the configuration itself holds it, the messages must not).
    my @quoted = grep { $c->{output} =~ /\Q$_\E/i }
                 grep { defined } $SIGNING_KEY, $hex63, $secret;
    is_deeply \@quoted, [], "config: $name: the message quotes no signing key value";
    unlike $c->{output}, qr/\Q$private_b64\E/, "config: $name: no private key material"
        if $name =~ /private/;
}

done_testing();
