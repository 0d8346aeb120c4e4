#!/usr/bin/env perl
# The shipped configuration: scripts/render-conf.sh (validation of the
# deployment environment, rendering of conf/nginx.conf.template), nginx -t
# on the result, and scripts/mint-token.pl.
#
# Plain Test::More: no database and no running nginx needed.

use strict;
use warnings;

use FindBin          qw($Bin);
use File::Temp       qw(tempdir);
use Crypt::JWT       qw(decode_jwt);
use Crypt::PK::RSA   ();
use Crypt::PK::ECC   ();
use Test::More;

my $root   = "$Bin/..";
my $render = "$root/scripts/render-conf.sh";
my $mint   = "$root/scripts/mint-token.pl";
my $module = "$root/build/nginx/objs/ngx_tenant_module.so";
my $tmp    = tempdir('tenant-050-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or die "$path: $!";
    local $/;
    return scalar <$f>;
}

sub spew {
    my ($path, $data) = @_;
    open my $f, '>', $path or die "$path: $!";
    print $f $data;
    close $f or die "$path: $!";
    return $path;
}


# ---- keys --------------------------------------------------------------------

my $rsa = Crypt::PK::RSA->new;
$rsa->generate_key(256, 65537);                 # 2048 bits
my $rsa_pub  = $rsa->export_key_pem('public_x509');
my $rsa_priv = spew("$tmp/rsa.pem", $rsa->export_key_pem('private'));

my $ec = Crypt::PK::ECC->new;
$ec->generate_key('secp256r1');
my $ec_pub  = $ec->export_key_pem('public_short');     # named curve
my $ec_explicit = $ec->export_key_pem('public');       # explicit params
my $ec_priv = spew("$tmp/ec.pem", $ec->export_key_pem('private'));

my $small = Crypt::PK::RSA->new;
$small->generate_key(128, 65537);               # 1024 bits
my $small_pub = $small->export_key_pem('public_x509');

my $jwks = spew("$tmp/jwks.json", '{"keys":['
    . $rsa->export_key_jwk('public') =~ s/^\{/{"kid":"k1","use":"sig",/r
    . ']}');
spew("$tmp/nokeys.json", '{"keys":[]}');
spew("$tmp/notjson.json", 'keys');


# ---- render-conf.sh ------------------------------------------------------------

my $enc_key = 'ab' x 32;
my $cron    = 'c' x 40;
my $db_pass = 'pw-s3cret-9f8e';

my %good = (
    DATABASE_URL   => "postgresql://gateway:$db_pass\@db.internal:5432/app",
    CLERK_JWT_KEY  => $rsa_pub,
    ENCRYPTION_KEY => $enc_key,
    CRON_SECRET    => $cron,
    TENANT_MODULE  => $module,
);

my $n = 0;

# Runs render-conf.sh with exactly %good plus %set, minus the keys whose
# value is undef.  Returns {rc, err (stderr lines), conf, out, run}.
sub render {
    my (%set) = @_;
    my %env = (%good, %set);
    delete $env{$_} for grep { !defined $env{$_} } keys %env;

    $n++;
    my $run = "$tmp/run$n";
    my $out = "$tmp/out$n/nginx.conf";
    $env{RUN_DIR} //= $run;

    local %ENV = (PATH => $ENV{PATH}, %env);
    system("'$render' '$out' 2>'$tmp/err$n' </dev/null");

    my @err = split /\n/, slurp("$tmp/err$n");
    return {
        rc   => $? >> 8,
        err  => [grep { !/^render-conf: (warning: |worker_processes \d|database connections: )/ } @err],
        warn => [grep { /^render-conf: warning: / } @err],
        out  => $out,
        run  => $env{RUN_DIR},
        conf => -e $out ? slurp($out) : undef,
    };
}

{
    my $r = render();
    is $r->{rc}, 0, 'good environment renders';
    is_deeply $r->{err}, [], '... nothing but warnings on stderr';
    my $c = $r->{conf} // '';

    is sprintf('%o', (stat $r->{out})[2] & 07777), '600',
        '... conf written with mode 0600';
    unlike $c, qr/\$\{[A-Z][A-Z0-9_]*\}/, '... no unreplaced ${NAME}';
    unlike $c, qr/^\s*#%|^##/m, '... no template markers or template comments';

    like $c, qr/^load_module "\Q$module\E";$/m, '... loads the module';
    like $c, qr/^error_log\s+stderr info;$/m, '... error_log to stderr at info';
    like $c, qr/^pid\s+\Q$r->{run}\E\/nginx\.pid;$/m, '... pid under RUN_DIR';
    like $c, qr/^\s*client_body_temp_path\s+\Q$r->{run}\E\//m,
        '... temp paths under RUN_DIR';
    unlike $c, qr/^\s*daemon\b/m, '... daemon left to the command line';
    like $c, qr/^\s*tenant_database\s+"postgresql:\/\/gateway:\Q$db_pass\E\@db\.internal:5432\/app"/m,
        '... tenant_database';
    like $c, qr/^\s*tenant_cache\s+zone=\w+:\w+/m, '... tenant_cache';
    like $c, qr/^\s*tenant_token_cache\s+zone=\w+:\w+;/m, '... tenant_token_cache';
    like $c, qr/^\s*tenant_jwt_algorithms\s+RS256 ES256;/m, '... algorithms';
    like $c, qr/^\s*tenant_signing_key\s+$enc_key;/m, '... signing key';
    like $c, qr/^\s*tenant_tier starter\s+features=dashboard,inventory,basic_forecasting;/m,
        '... tier starter';
    like $c, qr/^\s*tenant_tier professional\s+features=dashboard,inventory,basic_forecasting,ai_forecasting,working_capital,integrations;/m,
        '... tier professional';
    like $c, qr/^\s*tenant_tier enterprise\s+features=\*,sso,audit_log,white_label;/m,
        '... tier enterprise';
    like $c, qr/^\s*tenant_upgrade_url\s+"https:\/\/app\.capliquify\.com\/settings\/billing\?plan=\$tenant_required_tier&org=\$tenant_org_id";/m,
        '... default upgrade URL, nginx variables untouched';
    like $c, qr/^\s*client_max_body_size 10m;/m, '... 10mb -> 10m';
    like $c, qr/^\s*listen\s+8080;/m, '... listens on 8080';
    like $c, qr/location = \/api\/health \{\s*(?:error_log\s+stderr info;\s*)?tenant_health;\s*\}/,
        '... open health location';
    like $c, qr/location = \/api\/health\/live \{[^}]*tenant_health live;\s*\}/,
        '... open liveness location (the platform\'s check)';
    like $c, qr/location \/api\/ \{[^}]*tenant_gateway\s+on;[^}]*proxy_pass/,
        '... /api/ is gated and proxied';
    like $c, qr/^\s*tenant_feature_route\s+\/api\/forecasts\/ai\s+ai_forecasting;/m,
        '... /api/forecasts/ai requires ai_forecasting in every location '
        . '(tenant_feature_route, not a location of its own)';
    unlike $c, qr/location\s+(=\s*)?\/api\/forecasts/,
        '... and no location of its own that variants would bypass';
    like $c, qr/location \/mcp\/ \{[^}]*tenant_gateway\s+on;[^}]*proxy_pass\s+http:\/\/mcp;/,
        '... /mcp/ is gated and proxied';
    like $c, qr/log_format tenant_json escape=json/, '... JSON access log';
    like $c, qr/tenant_rate_limit\s+zone=ratelimit:10m rate=100\/60000ms;/,
        '... per-tenant rate limit from RATE_LIMIT_MAX / RATE_LIMIT_WINDOW';
    like $c, qr/location = \/api\/cron\/expire-trials \{\s*(?:error_log\s+stderr info;\s*)?tenant_cron_expire_trials;/,
        '... the trial expiration job';
    like $c, qr/tenant_cron_secret\s+\S{32,};/, '... its secret';
    like $c, qr/location = \/metrics \{[^}]*allow\s+127\.0\.0\.1;[^}]*deny\s+all;\s*tenant_metrics;/,
        '... /metrics for this machine only';
    my ($mloc) = $c =~ /(location = \/metrics \{[^}]*\})/;
    unlike $mloc // '', qr/allow\s+all|tenant_metrics_token/,
        '... without METRICS_TOKEN: no token and no other address';
    like $c, qr/add_header\s+Access-Control-Allow-Origin\s+\$gw_cors_origin\s+always;/,
        '... CORS headers with always';
    like $c, qr/upstream backend \{\s*server 127\.0\.0\.1:8081;/,
        '... no BACKEND_URL: backend is the demo upstream';
    like $c, qr/listen\s+127\.0\.0\.1:8081;/, '... demo server present';
    like $c, qr/"x-tenant-signature":"\$demo_tenant_signature"/,
        '... demo server echoes the signature header';
    unlike $c, qr/tenant_jwt_issuer|tenant_jwt_authorized_parties|tenant_jwks_file/,
        '... optional directives left out';
    unlike $c, qr/proxy_ssl_verify/, '... no TLS settings without https upstream';
    ok !grep({ /\Q$db_pass\E|\Q$enc_key\E|\Q$cron\E/ } @{$r->{warn}}),
        '... no secret in the warnings';

    my ($key_file) = $c =~ /^\s*tenant_jwt_key\s+(\S+);/m;
    ok defined $key_file && -f $key_file, '... CLERK_JWT_KEY written to a file';
    if (defined $key_file && -f $key_file) {
        is sprintf('%o', (stat $key_file)[2] & 07777), '600', '... key file 0600';
        is slurp($key_file), $rsa_pub, '... key file holds the PEM';
    }
    my @left = glob("$tmp/out$n/.nginx.conf.*");
    is_deeply \@left, [], '... no temp file left behind';
}

{
    my $r = render(
        CLERK_ISSUER             => 'https://clerk.capliquify.com',
        CLERK_AUTHORIZED_PARTIES => 'https://app.capliquify.com, http://localhost:5173',
        CLERK_JWKS_FILE          => $jwks,
        BACKEND_URL              => 'https://api.internal',
        MCP_URL                  => 'http://10.0.0.7:3001/',
        CORS_ORIGIN              => 'https://app.capliquify.com,http://localhost:5173',
        PORT                     => '9090',
        LOG_LEVEL                => 'WARNING',
        MAX_REQUEST_SIZE         => '512KB',
        UPGRADE_URL              => 'https://billing.example.com/up?t=$tenant_required_tier',
    );
    my $c = $r->{conf} // '';
    is $r->{rc}, 0, 'all optional variables set: renders';
    like $c, qr/^\s*tenant_jwt_issuer\s+"https:\/\/clerk\.capliquify\.com";/m,
        '... issuer';
    like $c, qr/^\s*tenant_jwt_authorized_parties\s+"https:\/\/app\.capliquify\.com" "http:\/\/localhost:5173";/m,
        '... authorized parties';
    like $c, qr/^\s*tenant_jwks_file\s+\Q$jwks\E;/m, '... JWKS file';
    like $c, qr/^\s*tenant_jwt_key\s+/m, '... and the PEM key too';
    like $c, qr/upstream backend \{\s*server api\.internal:443;/,
        '... https backend on 443';
    like $c, qr/set \$gw_upstream_host\s+api\.internal;/, '... Host header';
    like $c, qr/proxy_pass\s+https:\/\/backend;/, '... proxied with https';
    like $c, qr/proxy_ssl_verify\s+on;/, '... upstream certificate verified';
    like $c, qr/upstream mcp \{\s*server 10\.0\.0\.7:3001;/, '... mcp upstream';
    unlike $c, qr/listen\s+127\.0\.0\.1:8081;/, '... no demo server';
    like $c, qr/"https:\/\/app\.capliquify\.com"\s+\$http_origin;\s*"http:\/\/localhost:5173"\s+\$http_origin;/,
        '... CORS allowlist';
    like $c, qr/^\s*listen\s+9090;/m, '... PORT';
    like $c, qr/^error_log\s+stderr warn;/m, '... LOG_LEVEL WARNING -> warn';
    like $c, qr/client_max_body_size 512k;/, '... 512KB -> 512k';
    like $c, qr/tenant_upgrade_url\s+"https:\/\/billing\.example\.com\/up\?t=\$tenant_required_tier";/,
        '... UPGRADE_URL';
    is_deeply $r->{warn}, [], '... no warnings';
}

# METRICS_TOKEN and METRICS_ALLOW: the /metrics location as rendered.
{
    my $tok = 'Mt0k-' . ('q' x 30) . '+/=';
    my $loc = sub { my ($c) = @_; ($c // '') =~ /(location = \/metrics \{[^}]*\})/ ? $1 : '' };

    my $r = render(METRICS_TOKEN => $tok);
    is $r->{rc}, 0, 'METRICS_TOKEN alone: rendered' or diag join "\n", @{$r->{err}};
    my $m = $loc->($r->{conf});
    like $m, qr/allow\s+127\.0\.0\.1;\s*allow\s+::1;\s*allow all;\s*deny\s+all;\s*tenant_metrics;\s*tenant_metrics_token\s+\Q$tok\E;/,
        '... every address may try, with the token';
    is_deeply $r->{err}, [], '... no error';
    is_deeply [grep { /METRICS|\Q$tok\E/ } @{$r->{warn}}], [], '... no warning about it, never the token';

    $r = render(METRICS_TOKEN => $tok, METRICS_ALLOW => '10.0.0.0/8, 192.168.1.7');
    $m = $loc->($r->{conf});
    like $m, qr/allow\s+::1;\s*allow 10\.0\.0\.0\/8;\s*allow 192\.168\.1\.7;\s*deny\s+all;\s*tenant_metrics;\s*tenant_metrics_token\s+\Q$tok\E;/,
        'METRICS_TOKEN and METRICS_ALLOW: those addresses, with the token';
    unlike $m, qr/allow all/, '... and no other';

    $r = render(METRICS_ALLOW => '10.0.0.0/8');
    $m = $loc->($r->{conf});
    like $m, qr/allow 10\.0\.0\.0\/8;\s*deny\s+all;\s*tenant_metrics;\s*\}/,
        'METRICS_ALLOW alone (not on Render): those addresses, no token, as before';

    for my $all ('0.0.0.0/0', '::/0', '10.0.0.0/00') {
        $r = render(METRICS_TOKEN => $tok, METRICS_ALLOW => $all);
        is $r->{rc}, 0, "METRICS_ALLOW=$all with METRICS_TOKEN: rendered";
        like $loc->($r->{conf}), qr/allow \Q$all\E;[^}]*tenant_metrics_token/, '... with the token';
    }

    # Render: RENDER=true in every service's environment
    $r = render(RENDER => 'true', METRICS_ALLOW => '10.0.0.0/8', METRICS_TOKEN => $tok);
    is $r->{rc}, 0, 'RENDER=true, METRICS_ALLOW and METRICS_TOKEN: rendered';
    like $loc->($r->{conf}), qr/allow 10\.0\.0\.0\/8;[^}]*tenant_metrics_token\s+\Q$tok\E;/,
        '... with the token';
    $r = render(RENDER => 'true');
    is $r->{rc}, 0, 'RENDER=true without METRICS_ALLOW: rendered (this machine only)';
    like $loc->($r->{conf}), qr/allow\s+::1;\s*deny\s+all;\s*tenant_metrics;\s*\}/, '... as before';
    $r = render(RENDER => 'true', METRICS_TOKEN => $tok);
    like $loc->($r->{conf}), qr/allow all;[^}]*tenant_metrics_token/,
        'RENDER=true with METRICS_TOKEN alone: every address, with the token';
}

{
    my $r = render(CORS_ORIGIN => '*');
    like $r->{conf} // '', qr/"~\."\s+"\*";/, 'CORS_ORIGIN=* allows any origin';

    $r = render(DATABASE_URL => 'postgresql://u:p"a\\b@h/db');
    like $r->{conf} // '', qr/tenant_database\s+"postgresql:\/\/u:p\\"a\\\\b\@h\/db"/,
        'quotes and backslashes in DATABASE_URL are escaped';

    $r = render(DATABASE_URL => 'host=/run/pg dbname=app user=gw');
    is $r->{rc}, 0, 'libpq key=value DATABASE_URL accepted';

    (my $one_line = $rsa_pub) =~ s/\n/\\n/g;
    $r = render(CLERK_JWT_KEY => $one_line);
    is $r->{rc}, 0, 'PEM with literal \n accepted';

    $r = render(CLERK_JWT_KEY => $ec_pub);
    is $r->{rc}, 0, 'EC P-256 public key accepted';

    $r = render(CLERK_JWT_KEY => undef, CLERK_JWKS_FILE => $jwks);
    is $r->{rc}, 0, 'CLERK_JWKS_FILE alone is enough';
    unlike $r->{conf} // '', qr/tenant_jwt_key/, '... no tenant_jwt_key line';

    # Keys fetched from Clerk: CLERK_SECRET_KEY alone is enough (the
    # deployment guide's variable), CLERK_JWKS_URL defaults to the
    # Backend API; the secret goes to the internal location only.
    my $sk = 'sk_test_' . ('Ab9' x 12);
    $r = render(CLERK_JWT_KEY => undef, CLERK_SECRET_KEY => $sk,
                RESOLVER => '10.0.0.2 [fd00::53]:5353');
    is $r->{rc}, 0, 'CLERK_SECRET_KEY alone is enough';
    my $c = $r->{conf} // '';
    like $c, qr{^\s*tenant_jwks_request\s+/_tenant/jwks ttl=10m interval=30s;}m,
        '... tenant_jwks_request';
    like $c, qr{location = /_tenant/jwks \{\s*internal;}, '... internal location';
    like $c, qr{set \$gw_jwks_url\s+"https://api\.clerk\.com/v1/jwks";},
        '... Backend API URL by default';
    like $c, qr{proxy_set_header\s+Authorization "Bearer \Q$sk\E";},
        '... the secret as bearer';
    like $c, qr{^\s*resolver\s+10\.0\.0\.2 \[fd00::53\]:5353 valid=300s;}m,
        '... RESOLVER';
    like $c, qr{^\s*proxy_ssl_trusted_certificate\s+/\S+;}m,
        '... https verified with the CA file';
    unlike $c, qr/tenant_jwt_key/, '... no tenant_jwt_key line';
    unlike join("\n", @{$r->{err}}, @{$r->{warn}}), qr/\Q$sk\E/,
        '... the secret is not printed';

    $r = render(CLERK_JWT_KEY => undef, RESOLVER => '10.0.0.2',
                CLERK_JWKS_URL => 'https://clerk.app.example/.well-known/jwks.json');
    is $r->{rc}, 0, 'CLERK_JWKS_URL without secret (Frontend API)';
    $c = $r->{conf} // '';
    like $c, qr{set \$gw_jwks_url\s+"https://clerk\.app\.example/\.well-known/jwks\.json";},
        '... that URL';
    unlike $c, qr/Authorization "Bearer/, '... no Authorization line';

    # The secret goes to Clerk's Backend API only (in either spelling of
    # its host), or, behind the test-only switch, to a fake Clerk on the
    # loopback.
    for my $url ('https://api.clerk.com/v1/jwks', 'https://API.Clerk.com:443/v1/jwks') {
        $r = render(CLERK_SECRET_KEY => $sk, CLERK_JWKS_URL => $url,
                    RESOLVER => '10.0.0.2');
        is $r->{rc}, 0, "CLERK_SECRET_KEY with CLERK_JWKS_URL $url"
            or diag join "\n", @{$r->{err}};
        like $r->{conf} // '', qr{proxy_set_header\s+Authorization "Bearer \Q$sk\E";},
            '... the secret as bearer';
    }

    $r = render(CLERK_SECRET_KEY => $sk, CLERK_JWKS_URL => 'http://127.0.0.1:9/jwks',
                TEST_ONLY_CLERK_SECRET_TO_LOOPBACK => 1, RESOLVER => undef);
    is $r->{rc}, 0, 'http:// JWKS URL on 127.0.0.1 with the secret (test-only switch), besides the PEM key';
    like $r->{conf} // '', qr/tenant_jwt_key/, '... the PEM key stays';
    like $r->{conf} // '', qr{proxy_set_header\s+Authorization "Bearer \Q$sk\E";},
        '... the secret as bearer';

    $r = render(ENCRYPTION_KEY => "  $enc_key\n");
    is $r->{rc}, 0, 'surrounding blanks are ignored';

    # debug and trace: info (nginx's debug log records every header;
    # t/056-log-secrets.t)
    for my $case (['debug', 'info'], ['trace', 'info'], ['Info', 'info'],
                  ['notice', 'notice'], ['warn', 'warn'], ['error', 'error'],
                  ['fatal', 'crit'])
    {
        $r = render(LOG_LEVEL => $case->[0]);
        like $r->{conf} // '', qr/^error_log\s+stderr $case->[1];$/m,
            "LOG_LEVEL $case->[0] -> $case->[1]";
    }

    for my $case (['10mb', '10m'], ['10MB', '10m'], ['1m', '1m'],
                  ['64kb', '64k'], ['64k', '64k'], ['4096', '4096'],
                  ['1gb', '1g'])
    {
        $r = render(MAX_REQUEST_SIZE => $case->[0]);
        like $r->{conf} // '', qr/client_max_body_size $case->[1];/,
            "MAX_REQUEST_SIZE $case->[0] -> $case->[1]";
    }
}

# Each: the variables to change, the variable the error must name.
my @bad = (
    [{ DATABASE_URL => undef },                         'DATABASE_URL'],
    [{ DATABASE_URL => '' },                            'DATABASE_URL'],
    [{ DATABASE_URL => "mysql://u:$db_pass\@h/db" },    'DATABASE_URL'],
    [{ DATABASE_URL => "postgresql://u:$db_pass\@h/d\nb" }, 'DATABASE_URL'],
    [{ CLERK_JWT_KEY => undef },                        'CLERK_JWT_KEY'],
    [{ CLERK_JWT_KEY => 'not a key' },                  'CLERK_JWT_KEY'],
    [{ CLERK_JWT_KEY => slurp($rsa_priv) },             'CLERK_JWT_KEY'],
    [{ CLERK_JWT_KEY => $small_pub },                   'CLERK_JWT_KEY'],
    [{ CLERK_JWT_KEY => $ec_explicit },                 'CLERK_JWT_KEY'],
    [{ CLERK_JWT_KEY => $rsa_pub =~ s/A/B/gr },         'CLERK_JWT_KEY'],
    [{ CLERK_JWT_KEY => undef, CLERK_JWKS_FILE => "$tmp/none.json" },
                                                        'CLERK_JWKS_FILE'],
    [{ CLERK_JWT_KEY => undef, CLERK_JWKS_FILE => "$tmp/nokeys.json" },
                                                        'CLERK_JWKS_FILE'],
    [{ CLERK_JWT_KEY => undef, CLERK_JWKS_FILE => "$tmp/notjson.json" },
                                                        'CLERK_JWKS_FILE'],
    [{ CLERK_JWKS_URL => 'http://clerk.example.com/jwks' }, 'CLERK_JWKS_URL'],
    [{ CLERK_JWKS_URL => 'ftp://clerk.example.com/jwks' }, 'CLERK_JWKS_URL'],
    [{ CLERK_JWKS_URL => 'https://clerk.example.com/$uri' }, 'CLERK_JWKS_URL'],
    [{ CLERK_SECRET_KEY => 'sk_test_' . ('a' x 20) . '";x' }, 'CLERK_SECRET_KEY'],
    # the secret key goes to Clerk's Backend API host only
    (map { [{ CLERK_SECRET_KEY => 'sk_test_' . ('s' x 20), CLERK_JWKS_URL => $_,
              RESOLVER => '10.0.0.2' }, 'CLERK_JWKS_URL'] }
         'https://clerk.app.example/.well-known/jwks.json',
         'https://api.clerk.com.evil.example/v1/jwks',
         'https://evil.example/api.clerk.com/v1/jwks',
         'https://api.clerk.com:8443/v1/jwks',
         'https://api.clerk.dev/v1/jwks',
         'https://127.0.0.1/v1/jwks',
         'http://127.0.0.1:9/v1/jwks',
         'http://localhost:9/v1/jwks'),
    [{ CLERK_SECRET_KEY => 'sk_test_' . ('s' x 20), RESOLVER => '10.0.0.2',
       CLERK_JWKS_URL => 'https://evil.example/v1/jwks',
       TEST_ONLY_CLERK_SECRET_TO_LOOPBACK => 1 },       'CLERK_JWKS_URL'],
    [{ TEST_ONLY_CLERK_SECRET_TO_LOOPBACK => 'yes' },   'TEST_ONLY_CLERK_SECRET_TO_LOOPBACK'],
    [{ CLERK_SECRET_KEY => 'sk_test_' . ('a' x 20), RESOLVER => '10.0.0.2;' },
                                                        'RESOLVER'],
    [{ CLERK_ISSUER => 'http://clerk.example.com' },    'CLERK_ISSUER'],
    [{ CLERK_ISSUER => 'clerk.example.com' },           'CLERK_ISSUER'],
    [{ CLERK_AUTHORIZED_PARTIES => 'https://a.example/' }, 'CLERK_AUTHORIZED_PARTIES'],
    [{ CLERK_AUTHORIZED_PARTIES => 'a.example' },       'CLERK_AUTHORIZED_PARTIES'],
    [{ ENCRYPTION_KEY => undef },                       'ENCRYPTION_KEY'],
    [{ ENCRYPTION_KEY => 'ab' x 31 },                   'ENCRYPTION_KEY'],
    [{ ENCRYPTION_KEY => 'ab' x 33 },                   'ENCRYPTION_KEY'],
    [{ ENCRYPTION_KEY => 'zz' x 32 },                   'ENCRYPTION_KEY'],
    [{ CRON_SECRET => undef },                          'CRON_SECRET'],
    [{ CRON_SECRET => 'x' x 31 },                       'CRON_SECRET'],
    [{ BACKEND_URL => 'ftp://backend' },                'BACKEND_URL'],
    [{ BACKEND_URL => 'http://backend/api' },           'BACKEND_URL'],
    [{ BACKEND_URL => 'http://backend:70000' },         'BACKEND_URL'],
    [{ MCP_URL => "https://u:$db_pass\@mcp" },          'MCP_URL'],
    [{ NODE_ENV => 'production' },                      'BACKEND_URL'],
    [{ NODE_ENV => 'production', BACKEND_URL => 'http://10.0.0.2' },
                                                        'MCP_URL'],
    [{ RATE_LIMIT_MAX => '0' },                         'RATE_LIMIT_MAX'],
    [{ RATE_LIMIT_MAX => 'ten' },                       'RATE_LIMIT_MAX'],
    [{ RATE_LIMIT_WINDOW => '-1' },                     'RATE_LIMIT_WINDOW'],
    [{ RATE_LIMIT_WINDOW => '1.5' },                    'RATE_LIMIT_WINDOW'],
    [{ RATE_LIMIT_WINDOW => '86400001' },               'RATE_LIMIT_WINDOW'],
    [{ RATE_LIMIT_MAX => '5000', RATE_LIMIT_WINDOW => '1' }, 'RATE_LIMIT_MAX'],
    [{ METRICS_ALLOW => '10.0.0.0/8; deny all' },       'METRICS_ALLOW'],
    # to the world without a token; on Render any METRICS_ALLOW is: public
    # requests reach the instance from Render's proxy on a private address
    [{ METRICS_ALLOW => '0.0.0.0/0' },                  'METRICS_ALLOW'],
    [{ METRICS_ALLOW => '10.0.0.1, ::/0' },             'METRICS_ALLOW'],
    [{ METRICS_ALLOW => 'all' },                        'METRICS_ALLOW'],
    [{ RENDER => 'true', METRICS_ALLOW => '10.0.0.0/8' }, 'METRICS_TOKEN'],
    [{ RENDER => 'true', METRICS_ALLOW => '192.168.7.7' }, 'METRICS_TOKEN'],
    [{ METRICS_TOKEN => 'T0ken-' . ('y' x 25) },        'METRICS_TOKEN'],
    [{ METRICS_TOKEN => 'T0ken-' . ('y' x 30) . '!' },  'METRICS_TOKEN'],
    [{ METRICS_TOKEN => 'T0ken-' . ('y' x 30) . ' z' }, 'METRICS_TOKEN'],
    [{ METRICS_TOKEN => 'T0ken-' . ('y' x 30) . '";' }, 'METRICS_TOKEN'],
    [{ CRON_SECRET => ('x' x 31) . ' y' },              'CRON_SECRET'],
    [{ MAX_REQUEST_SIZE => '0' },                       'MAX_REQUEST_SIZE'],
    [{ MAX_REQUEST_SIZE => '1.5mb' },                   'MAX_REQUEST_SIZE'],
    [{ MAX_REQUEST_SIZE => '10tb' },                    'MAX_REQUEST_SIZE'],
    [{ LOG_LEVEL => 'loud' },                           'LOG_LEVEL'],
    [{ PORT => '0' },                                   'PORT'],
    [{ PORT => '65536' },                               'PORT'],
    [{ PORT => 'http' },                                'PORT'],
    [{ PORT => '8081' },                                'DEMO_PORT'],
    [{ DEMO_PORT => 'x' },                              'DEMO_PORT'],
    [{ UPGRADE_URL => 'javascript:alert(1)' },          'UPGRADE_URL'],
    [{ UPGRADE_URL => 'https://x.example/"' },          'UPGRADE_URL'],
    # nginx variables other than the module's: live in the 403 bodies
    [{ UPGRADE_URL => 'https://x.example/?c=$http_cookie' }, 'UPGRADE_URL'],
    [{ UPGRADE_URL => 'https://x.example/?c=${http_cookie}' }, 'UPGRADE_URL'],
    [{ UPGRADE_URL => 'https://x.example/?o=$tenant_org_id$cookie___session' },
                                                        'UPGRADE_URL'],
    [{ UPGRADE_URL => 'https://x.example/?h=$host' },   'UPGRADE_URL'],
    [{ UPGRADE_URL => 'https://x.example/$1' },         'UPGRADE_URL'],
    [{ UPGRADE_URL => 'https://x.example/?p=$' },       'UPGRADE_URL'],
    [{ CORS_ORIGIN => 'https://a.example/path' },       'CORS_ORIGIN'],
    [{ RUN_DIR => "$tmp/with space" },                  'RUN_DIR'],
    [{ TENANT_MODULE => "$tmp/a;b.so" },                'TENANT_MODULE'],
);

for my $case (@bad) {
    my ($set, $var) = @$case;
    my $what = join ', ', map {
        my $v = $set->{$_};
        !defined $v        ? "$_ unset"
        : length $v > 40   ? "$_=" . substr($v, 0, 24) =~ s/\n/\\n/gr . '...'
        :                    "$_=" . ($v =~ s/\n/\\n/gr)
    } sort keys %$set;

    my $r = render(%$set);
    subtest "refused: $what" => sub {
        is $r->{rc}, 1, 'exit status 1';
        is scalar @{$r->{err}}, 1, 'one line on stderr'
            or diag join "\n", @{$r->{err}};
        is scalar @{$r->{warn}}, 0, 'no warnings before it';
        like $r->{err}[0] // '', qr/^render-conf: \Q$var\E: \S/,
            "the line names $var";
        my $err = join "\n", @{$r->{err}};
        unlike $err, qr/\Q$db_pass\E/, 'no database password';
        unlike $err, qr/\Q$_\E/, 'no secret value'
            for grep { defined && length >= 16 }
                map { $set->{$_} } grep { /KEY|SECRET|TOKEN/ } keys %$set;
        ok !-e $r->{out}, 'no configuration written';
    };
}

# UPGRADE_URL: the module's variables, in either spelling, and %24.
{
    my $url = 'https://b.example/up?p=${tenant_required_tier}&o=$TENANT_ORG_ID&d=%24';
    my $r = render(UPGRADE_URL => $url);
    is $r->{rc}, 0, 'UPGRADE_URL with ${tenant_...}, $TENANT_..., %24: rendered'
        or diag join "\n", @{$r->{err}};
    like $r->{conf} // '', qr/^\s*tenant_upgrade_url\s+"\Q$url\E";/m, '... as it is';
}

# No variable's value is live where nginx expands variables: each one
# set to a value with $http_cookie in it is refused, or lands only in a
# directive that takes its text literally.
for my $case (
    [DATABASE_URL     => 'postgresql://u:p$http_cookie@h/db'],
    [CLERK_ISSUER     => 'https://clerk.example.com/$http_cookie'],
    [CLERK_JWKS_URL   => 'https://clerk.example.com/$http_cookie'],
    [CLERK_SECRET_KEY => 'sk_test_$http_cookie'],
    [RESOLVER         => '$http_cookie', CLERK_SECRET_KEY => 'sk_test_' . ('a' x 20)],
    [CLERK_AUTHORIZED_PARTIES => 'https://$http_cookie.example'],
    [CRON_SECRET      => ('x' x 32) . '$http_cookie'],
    [METRICS_TOKEN    => ('x' x 32) . '$http_cookie'],
    [BACKEND_URL      => 'http://$http_cookie'],
    [MCP_URL          => 'http://$http_cookie:80'],
    [CORS_ORIGIN      => 'https://a.example$http_cookie'],
    [UPGRADE_URL      => 'https://b.example/?c=$http_cookie'],
    [METRICS_ALLOW    => '$http_cookie'],
    [MAX_REQUEST_SIZE => '1m$http_cookie'],
    [LOG_LEVEL        => 'info$http_cookie'],
    [PORT             => '80$http_cookie'],
    [DEMO_PORT        => '80$http_cookie'],
    [RATE_LIMIT_MAX   => '1$http_cookie'],
    [RATE_LIMIT_WINDOW => '1$http_cookie'],
    [REDIS_URL        => 'redis://:p$http_cookie@kv.internal:6379'],
    [REDIS_TIMEOUT    => '5$http_cookie'],
    [REDIS_FALLBACK   => 'local$http_cookie'],
    [REDIS_INSTANCES  => '2$http_cookie'],
    [RUN_DIR          => "$tmp/\$http_cookie"],
    [TENANT_MODULE    => "$tmp/\$http_cookie.so"],
    [CLERK_JWKS_FILE  => "$tmp/\$http_cookie.json"],
    [UPSTREAM_CA_FILE => "$tmp/\$http_cookie.pem", BACKEND_URL => 'https://b.example'],
) {
    my ($var, $v, %more) = @$case;
    my $r = render(%more, $var => $v);
    # tenant_redis takes its URL literally (tenant_redis_url_parse)
    my @live = grep { /\$http_cookie/ && !/^\s*(tenant_database|tenant_jwt_issuer|tenant_redis)\s/ }
        split /\n/, $r->{conf} // '';
    ok $r->{rc} == 1 || ($r->{rc} == 0 && !@live),
        "$var with \$http_cookie: refused, or not where nginx expands variables"
        or diag "rc $r->{rc}: ", join "\n", @live;
}

# A rate over nine digits is refused for its limit, not as "not a
# positive integer"; leading zeros are only zeros.
for my $case (['RATE_LIMIT_MAX', '1000000000', qr/at most 100000000\b/],
              ['RATE_LIMIT_MAX', '99999999999999999999', qr/at most 100000000\b/],
              ['RATE_LIMIT_WINDOW', '1000000000', qr/at most 86400000\b/],
              ['RATE_LIMIT_WINDOW', '18446744073709551617', qr/at most 86400000\b/])
{
    my ($var, $v, $want) = @$case;
    my $r = render($var => $v);
    is $r->{rc}, 1, "$var=$v: refused";
    like $r->{err}[0] // '', qr/^render-conf: \Q$var\E: $want/,
        "$var=$v: the line names the limit" or diag join "\n", @{$r->{err}};
}
{
    my $r = render(RATE_LIMIT_MAX => '0000000000100', RATE_LIMIT_WINDOW => '000000000060000');
    is $r->{rc}, 0, 'RATE_LIMIT_MAX and _WINDOW with leading zeros: rendered'
        or diag join "\n", @{$r->{err}};
    like $r->{conf} // '', qr/tenant_rate_limit\s+zone=ratelimit:10m rate=100\/60000ms;/,
        '... as 100 per 60000 ms';
}


# ---- REDIS_* (global limits, tenant_redis) -------------------------------------

my $kv_pass = 'Kv-pa55-9b7c2e41';
my $kv_host = 'red-d4kv8s1ecret0host';
my $kv_url  = "redis://default:$kv_pass\@$kv_host:6379";

# the tenant_redis block as the template adds it after tenant_rate_limit
sub without_redis {
    my ($c) = @_;
    $c =~ s/^(\s*tenant_rate_limit\s[^\n]*\n)\n(?:[ ]*#[^\n]*\n)*[ ]*tenant_redis\s[^\n]*\n/$1/m;
    return $c;
}

{
    my $run = "$tmp/redis-run";
    my $off = render(RUN_DIR => $run);
    my $c = $off->{conf} // '';
    is $off->{rc}, 0, 'REDIS_URL unset: rendered';
    unlike $c, qr/tenant_redis|REDIS/, '... no tenant_redis line, no comment about it';
    is_deeply $off->{warn}, [grep { !/REDIS/ } @{$off->{warn}}], '... no warning about Redis';

    for my $empty ('', "  \t") {
        my $r = render(RUN_DIR => $run, REDIS_URL => $empty);
        is $r->{rc}, 0, 'REDIS_URL empty or blank: rendered';
        is $r->{conf}, $c, '... the configuration identical to REDIS_URL unset';
    }

    my $r = render(RUN_DIR => $run, REDIS_URL => $kv_url);
    my $on = $r->{conf} // '';
    is $r->{rc}, 0, 'REDIS_URL set: rendered' or diag join "\n", @{$r->{err}};
    my @lines = grep { /^\s*tenant_redis\s/ } split /\n/, $on;
    is scalar @lines, 1, '... one tenant_redis line';
    is $lines[0] // '',
        qq{    tenant_redis        "$kv_url" timeout=5ms fallback=local instances=1;},
        '... the URL quoted, timeout=5ms fallback=local instances=1 by default';
    like $on, qr/tenant_rate_limit\s[^\n]*\n\n(?:\s*#[^\n]*\n)*\s*tenant_redis\s/,
        '... next to tenant_rate_limit, with its comment';
    like $on, qr/^\s*#[^\n]*fallback=local[^\n]*\n(?:\s*#[^\n]*\n)*?[^\n]*fallback=open/m,
        '... the comment says what fallback=local and fallback=open do';
    isnt without_redis($on), $on, '... (the block is found)';
    is without_redis($on), $c,
        '... and nothing else differs from the configuration without REDIS_URL';
    is sprintf('%o', (stat $r->{out})[2] & 07777), '600',
        '... the configuration, which holds the password, mode 0600';
    unlike join("\n", @{$r->{err}}, @{$r->{warn}}), qr/\Q$kv_pass\E|\Q$kv_host\E/,
        '... the URL is not printed';
    is_deeply $r->{warn}, [grep { !/REDIS/ } @{$r->{warn}}], '... no warning about Redis';

    # an existing file of another mode is replaced, not rewritten in place
    my $pre = "$tmp/out" . ($n + 1) . '/nginx.conf';
    mkdir "$tmp/out" . ($n + 1);
    spew($pre, "old\n");
    chmod 0644, $pre;
    $r = render(RUN_DIR => $run, REDIS_URL => $kv_url);
    is $r->{out}, $pre, 'a conf file of mode 0644 already there';
    is sprintf('%o', (stat $pre)[2] & 07777), '600', '... is replaced by one of mode 0600';
    like slurp($pre), qr/^\s*tenant_redis\s+"\Q$kv_url\E"/m, '... holding the URL';
}

# Each: the variables, the tenant_redis line's parameters after the URL.
for my $case (
    [{ REDIS_TIMEOUT => '1' },                 'timeout=1ms fallback=local instances=1'],
    [{ REDIS_TIMEOUT => '1000' },              'timeout=1000ms fallback=local instances=1'],
    [{ REDIS_TIMEOUT => ' 0025 ' },            'timeout=25ms fallback=local instances=1'],
    [{ REDIS_FALLBACK => 'open' },             'timeout=5ms fallback=open instances=1'],
    [{ REDIS_FALLBACK => 'OPEN' },             'timeout=5ms fallback=open instances=1'],
    [{ REDIS_FALLBACK => 'local' },            'timeout=5ms fallback=local instances=1'],
    [{ REDIS_INSTANCES => '3' },               'timeout=5ms fallback=local instances=3'],
    [{ REDIS_INSTANCES => '1000' },            'timeout=5ms fallback=local instances=1000'],
    [{ REDIS_TIMEOUT => '10', REDIS_FALLBACK => 'open', REDIS_INSTANCES => '4' },
                                               'timeout=10ms fallback=open instances=4'],
) {
    my ($set, $want) = @$case;
    my $what = join ', ', map { "$_=$set->{$_}" } sort keys %$set;
    my $r = render(%$set, REDIS_URL => $kv_url);
    is $r->{rc}, 0, "REDIS_URL with $what: rendered" or diag join "\n", @{$r->{err}};
    like $r->{conf} // '', qr/^\s*tenant_redis\s+"\Q$kv_url\E" \Q$want\E;$/m, "... $want";
}

# The URL's forms: Render's internal URL, with internal authentication
# (user default), an ACL user, a password alone, a database, IPv6, a
# percent-encoded password, RFC 3986's sub-delimiters left as they are.
for my $url ("redis://$kv_host:6379",
             $kv_url,
             "redis://gateway:$kv_pass\@10.0.0.9:6380/2",
             "redis://:$kv_pass\@kv.internal",
             'redis://:p%40ss%2Fw%3Fo%23rd@kv.internal:6379/',
             "redis://:$kv_pass\@[fd00::9]:6379/15",
             "REDIS://:$kv_pass\@kv.internal/0",
             "redis://:a!b\$c&d'e(f)g*h+i,j;k=l:m\@kv.internal:1",
             'redis://127.0.0.1:65535') {
    my $r = render(REDIS_URL => $url);
    is $r->{rc}, 0, "REDIS_URL $url: rendered" or diag join "\n", @{$r->{err}};
    like $r->{conf} // '', qr/^\s*tenant_redis\s+"\Q$url\E" timeout=5ms /m, '... as it is';
}

# Each: the variables, the variable named, what the line says.  None
# may print the URL or any part of it (the password, the host).
my $tls = qr/^render-conf: REDIS_URL: rediss:\/\/ \(TLS\) is not supported by the gateway; use the Key Value instance's internal redis:\/\/ URL$/;
for my $case (
    [{ REDIS_URL => "rediss://default:$kv_pass\@$kv_host:6379" }, 'REDIS_URL', $tls],
    [{ REDIS_URL => "REDISS://:$kv_pass\@$kv_host" },              'REDIS_URL', $tls],
    [{ REDIS_URL => "http://default:$kv_pass\@$kv_host:6379" },    'REDIS_URL', qr/redis:\/\/ URL.*other schemes/],
    [{ REDIS_URL => "unix://:$kv_pass\@/run/$kv_host.sock" },      'REDIS_URL', qr/other schemes/],
    [{ REDIS_URL => "$kv_host:6379" },                             'REDIS_URL', qr/must be a redis:\/\//],
    [{ REDIS_URL => "garbage $kv_pass" },                          'REDIS_URL', qr/spaces/],
    [{ REDIS_URL => "garbage-$kv_pass" },                          'REDIS_URL', qr/must be a redis:\/\//],
    [{ REDIS_URL => "$kv_url\x01x" },                              'REDIS_URL', qr/control/],
    [{ REDIS_URL => "redis://:$kv_pass\x7f\@$kv_host" },           'REDIS_URL', qr/control/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host\n:6379" },        'REDIS_URL', qr/control/],
    [{ REDIS_URL => "redis://:p\xc3\xa4$kv_pass\@$kv_host" },      'REDIS_URL', qr/non-ASCII/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:6379/16" },       'REDIS_URL', qr/database number/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:6379/01" },       'REDIS_URL', qr/database number/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:6379/db" },       'REDIS_URL', qr/database number/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:0" },             'REDIS_URL', qr/port/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:65536" },         'REDIS_URL', qr/port/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:06379" },         'REDIS_URL', qr/port/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host:" },              'REDIS_URL', qr/host/],
    [{ REDIS_URL => "redis://:$kv_pass\@" },                       'REDIS_URL', qr/host/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host;x" },             'REDIS_URL', qr/host/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host?ssl=1" },         'REDIS_URL', qr/query/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host#x" },             'REDIS_URL', qr/query/],
    [{ REDIS_URL => "redis://:$kv_pass\@$kv_host/0/\@x" },         'REDIS_URL', qr/after the host/],
    [{ REDIS_URL => "redis://:$kv_pass\@x\@$kv_host" },            'REDIS_URL', qr/more than one/],
    [{ REDIS_URL => "redis://:$kv_pass\"\@$kv_host" },             'REDIS_URL', qr/percent-encoded/],
    [{ REDIS_URL => "redis://:$kv_pass\\\@$kv_host" },             'REDIS_URL', qr/percent-encoded/],
    [{ REDIS_URL => "redis://$kv_pass\@$kv_host" },                'REDIS_URL', qr/without a password/],
    [{ REDIS_URL => "redis://default:\@$kv_host" },                'REDIS_URL', qr/empty password/],
    [{ REDIS_TIMEOUT => '0' },                                     'REDIS_TIMEOUT', qr/1-1000 milliseconds/],
    [{ REDIS_TIMEOUT => '1001' },                                  'REDIS_TIMEOUT', qr/1-1000 milliseconds/],
    [{ REDIS_TIMEOUT => '5ms' },                                   'REDIS_TIMEOUT', qr/1-1000 milliseconds/],
    [{ REDIS_TIMEOUT => '-5' },                                    'REDIS_TIMEOUT', qr/1-1000 milliseconds/],
    [{ REDIS_TIMEOUT => '2.5' },                                   'REDIS_TIMEOUT', qr/1-1000 milliseconds/],
    [{ REDIS_TIMEOUT => '99999999999999999999' },                  'REDIS_TIMEOUT', qr/1-1000 milliseconds/],
    [{ REDIS_FALLBACK => 'closed' },                               'REDIS_FALLBACK', qr/local .* or open/],
    [{ REDIS_FALLBACK => 'local;' },                               'REDIS_FALLBACK', qr/local .* or open/],
    [{ REDIS_FALLBACK => '1' },                                    'REDIS_FALLBACK', qr/local .* or open/],
    [{ REDIS_INSTANCES => '0' },                                   'REDIS_INSTANCES', qr/1-1000/],
    [{ REDIS_INSTANCES => '1001' },                                'REDIS_INSTANCES', qr/1-1000/],
    [{ REDIS_INSTANCES => 'three' },                               'REDIS_INSTANCES', qr/1-1000/],
    [{ REDIS_INSTANCES => '1e3' },                                 'REDIS_INSTANCES', qr/1-1000/],
) {
    my ($set, $var, $says) = @$case;
    my %set = (REDIS_URL => $kv_url, %$set);
    my $what = join ', ', map { "$_=" . ($set{$_} =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ger) }
                          sort keys %$set;
    my $r = render(%set);
    subtest "refused: $what" => sub {
        is $r->{rc}, 1, 'exit status 1';
        is scalar @{$r->{err}}, 1, 'one line on stderr' or diag join "\n", @{$r->{err}};
        like $r->{err}[0] // '', qr/^render-conf: \Q$var\E: \S/, "the line names $var";
        like $r->{err}[0] // '', $says, '... and says what is wrong';
        my $all = join "\n", @{$r->{err}}, @{$r->{warn}};
        unlike $all, qr/\Q$kv_pass\E/, 'no password';
        unlike $all, qr/\Q$kv_host\E/, 'no host';
        ok !-e $r->{out}, 'no configuration written';
    };
}

# REDIS_TIMEOUT, REDIS_FALLBACK, REDIS_INSTANCES without REDIS_URL:
# validated all the same, a warning that they do nothing.
{
    my $r = render(REDIS_TIMEOUT => '20', REDIS_FALLBACK => 'open', REDIS_INSTANCES => '3');
    is $r->{rc}, 0, 'REDIS_TIMEOUT, _FALLBACK, _INSTANCES without REDIS_URL: rendered';
    unlike $r->{conf} // '', qr/tenant_redis/, '... no tenant_redis';
    is scalar(grep { /^render-conf: warning: REDIS_(TIMEOUT|FALLBACK|INSTANCES) is set but not used \(REDIS_URL is empty/ } @{$r->{warn}}),
        3, '... a warning for each, naming REDIS_URL';
    $r = render(REDIS_INSTANCES => '0');
    is $r->{rc}, 1, '... and refused when malformed (REDIS_INSTANCES=0)';
}


# ---- nginx -t ------------------------------------------------------------------

my $nginx = -x '/usr/sbin/nginx' ? '/usr/sbin/nginx' : undef;

sub nginx_t {
    my ($conf, $prefix) = @_;
    my $out = `'$nginx' -t -q -p '$prefix' -e stderr -c '$conf' -g 'daemon off;' 2>&1`;
    return ($? >> 8, $out);
}

{
    ok $nginx, 'nginx is installed';

    # The plain-nginx part of the template, whatever the module's state:
    # module directives commented out, its variables stubbed with maps.
    for my $set ({}, { BACKEND_URL => 'http://127.0.0.1:3000',
                       MCP_URL => 'http://127.0.0.1:3001',
                       CORS_ORIGIN => 'https://a.example',
                       CLERK_ISSUER => 'https://clerk.example.com',
                       REDIS_URL => 'redis://:pw@127.0.0.1:1' })
    {
        my $r = render(%$set, PORT => 18000 + $n, DEMO_PORT => 19000 + $n);
        my $c = $r->{conf} // '';
        my %vars = map { $_ => 1 } $c =~ /\$(tenant_\w+)/g;
        $c =~ s/^(\s*)(load_module|tenant_\w+)\b/$1# $2/mg;
        my $maps = join '', map { "    map \"\" \$$_ { default \"\"; }\n" }
            sort keys %vars;
        $c =~ s/^http \{\n/http {\n$maps/m;
        my $stub = spew("$tmp/stub$n.conf", $c);
        my ($rc, $out) = nginx_t($stub, $r->{run});
        is $rc, 0, 'nginx -t: template syntax with the module stubbed out'
            . (%$set ? ' (upstreams set)' : ' (demo upstream)')
            or diag $out;
    }
}

{
    # make test builds the module first: a missing one is a failure
    ok -e $module, "the module is built ($module)";

    my $r = render(PORT => 18000 + $n, DEMO_PORT => 19000 + $n,
                   DATABASE_URL => 'postgresql://postgres@127.0.0.1:1/none',
                   CLERK_ISSUER => 'https://clerk.example.com',
                   CLERK_AUTHORIZED_PARTIES => 'http://localhost:5173',
                   CLERK_JWKS_FILE => $jwks);
    my ($rc, $out) = nginx_t($r->{out}, $r->{run});
    is $rc, 0, 'nginx -t accepts the rendered configuration with the module'
        or diag $out;

    $r = render(PORT => 18000 + $n, DEMO_PORT => 19000 + $n,
                DATABASE_URL => 'postgresql://postgres@127.0.0.1:1/none',
                METRICS_TOKEN => 'k7Jd9sP2vQ8xN4mL1zR6tY3wE5uI0oA2bC7dF9gH1jK=',
                METRICS_ALLOW => '10.0.0.0/8', RENDER => 'true');
    ($rc, $out) = nginx_t($r->{out}, $r->{run});
    is $rc, 0, '... and with METRICS_TOKEN and METRICS_ALLOW on Render'
        or diag $out;

    $r = render(PORT => 18000 + $n, DEMO_PORT => 19000 + $n,
                DATABASE_URL => 'postgresql://postgres@127.0.0.1:1/none',
                CLERK_JWT_KEY => undef, RESOLVER => '127.0.0.1',
                CLERK_SECRET_KEY => 'sk_test_' . ('x' x 30));
    ($rc, $out) = nginx_t($r->{out}, $r->{run});
    is $rc, 0, '... and with keys from CLERK_SECRET_KEY (JWKS URL)'
        or diag $out;

    # tenant_redis: the host is resolved at start, never connected by
    # nginx -t (port 1: nothing listens).  Until the module has the
    # directive, nginx -t refuses it as unknown: skipped for that reason
    # only, any other refusal fails.
    for my $set ({ REDIS_URL => "redis://default:$kv_pass\@127.0.0.1:1" },
                 { REDIS_URL => 'redis://localhost:1/3', REDIS_FALLBACK => 'open',
                   REDIS_TIMEOUT => 1000, REDIS_INSTANCES => 1000 })
    {
        $r = render(%$set, PORT => 18000 + $n, DEMO_PORT => 19000 + $n,
                    DATABASE_URL => 'postgresql://postgres@127.0.0.1:1/none');
        ($rc, $out) = nginx_t($r->{out}, $r->{run});
        SKIP: {
            skip 'tenant_redis is not in the module yet (nginx -t: unknown directive "tenant_redis")', 2
                if $rc != 0 && $out =~ /unknown directive "tenant_redis"/;
            is $rc, 0, "... and with REDIS_URL $set->{REDIS_URL}"
                . (keys %$set > 1 ? ' fallback=open, the bounds' : '')
                or diag $out;
            unlike $out, qr/\Q$kv_pass\E/, '... nginx prints no password';
        }
    }
}


# ---- mint-token.pl -------------------------------------------------------------

sub mint {
    my $cmd = join ' ', map { "'$_'" } $mint, @_;
    my $out = `$cmd 2>&1`;
    chomp $out;
    return ($? >> 8, $out);
}

{
    my ($rc, $tok) = mint('--key', $rsa_priv, '--org', 'org_demo_starter',
                          '--kid', 'k1', '--slug', 'demo-starter',
                          '--azp', 'http://localhost:5173');
    is $rc, 0, 'mint-token: RS256 token';
    like $tok, qr/^[\w-]+\.[\w-]+\.[\w-]+$/, '... prints only the token';
    my ($h, $p) = eval {
        decode_jwt(token => $tok, key => \$rsa_pub, decode_header => 1,
                   accepted_alg => 'RS256');
    };
    ok $p, '... verifies with the public key' or diag $@;
    is $h->{alg}, 'RS256', '... alg RS256';
    is $h->{kid}, 'k1', '... kid';
    is $p->{sub}, 'user_demo', '... default sub';
    is $p->{org_id}, 'org_demo_starter', '... org_id';
    is $p->{org_role}, 'org:admin', '... default org_role';
    is $p->{org_slug}, 'demo-starter', '... org_slug';
    is $p->{azp}, 'http://localhost:5173', '... azp';
    ok $p->{exp} - $p->{iat} == 3600, '... default ttl 3600';
    ok $p->{nbf} <= time && $p->{iss}, '... nbf and iss';
}

{
    my ($rc, $tok) = mint('--key', $ec_priv, '--org', 'org_x', '--v2',
                          '--role', 'org:member', '--slug', 'x-co',
                          '--metadata-role', 'admin', '--sub', 'user_42',
                          '--iss', 'https://clerk.example.com', '--ttl', '60');
    is $rc, 0, 'mint-token: ES256 v2 token';
    my ($h, $p) = eval {
        decode_jwt(token => $tok, key => \$ec_pub, decode_header => 1,
                   accepted_alg => 'ES256');
    };
    ok $p, '... verifies with the EC public key' or diag $@;
    is $h->{alg}, 'ES256', '... alg ES256';
    is $p->{v}, 2, '... v 2';
    is_deeply $p->{o}, { id => 'org_x', rol => 'member', slg => 'x-co' },
        '... compact "o" claim, role without org: prefix';
    ok !exists $p->{org_id}, '... no v1 org claims';
    is $p->{sts}, 'active', '... sts';
    is_deeply $p->{metadata}, { role => 'admin' }, '... metadata.role';
    is $p->{sub}, 'user_42', '... sub';
    is $p->{iss}, 'https://clerk.example.com', '... iss';
    is $p->{exp} - $p->{iat}, 60, '... ttl';
}

{
    my ($rc, $tok) = mint('--key', $rsa_priv, '--ttl', '-60');
    my $p = eval { decode_jwt(token => $tok, key => \$rsa_pub) };
    ok !$p && $@ =~ /exp/, 'mint-token: negative ttl gives an expired token';

    ($rc) = mint('--key', spew("$tmp/pub.pem", $rsa_pub));
    is $rc, 1, 'mint-token: a public key is refused';
    ($rc) = mint('--org', 'x');
    is $rc, 2, 'mint-token: --key is required';
}

done_testing();
