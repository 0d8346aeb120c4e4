#!/usr/bin/perl
# A request the gateway fails with a 500 (an internal error, not a
# refusal) logs $tenant_outcome "error", as tenant_requests_total counts
# it: the log and the metrics tell the same story.
#
# No request can make the gateway fail on its own (its 500s are out of
# memory and OpenSSL failures), so one is forced: nginx runs with a small
# LD_PRELOAD library, built here, whose EVP_DigestUpdate() fails for data
# that starts with the base64url of '{"fault"' and passes everything else
# to OpenSSL.  The token cache hashes the whole token (tenant_sha256())
# before anything else, so a token whose header begins {"fault" is a 500
# at that first step, and every other token works as usual.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use Test::More;
use JSON::XS ();


my $JSON = JSON::XS->new->utf8->canonical;
my $TMP  = TenantTest::tmpdir();

# --- the fault: EVP_DigestUpdate() fails for data starting "eyJmYXVsdCI" --

my $shim = "$TMP/fail_digest.so";
{
    open my $fh, '>', "$TMP/fail_digest.c" or die "$TMP/fail_digest.c: $!";
    print $fh <<'EOF';
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

typedef int (*update_pt)(void *ctx, const void *data, size_t len);

int
EVP_DigestUpdate(void *ctx, const void *data, size_t len)
{
    static update_pt  real;

    if (len >= 11 && memcmp(data, "eyJmYXVsdCI", 11) == 0) {
        return 0;
    }

    if (real == NULL) {
        real = (update_pt) dlsym(RTLD_NEXT, "EVP_DigestUpdate");
    }

    return real(ctx, data, len);
}
EOF
    close $fh;
    system('cc', '-shared', '-fPIC', '-O1', '-o', $shim, "$TMP/fail_digest.c", '-ldl') == 0
        or BAIL_OUT('cannot build the LD_PRELOAD library');
}

pg_start();
my $t = create_tenant(status => 'active');
my $ORG = $t->{clerk_organization_id};

my $NGX;
{
    # the master loads the library; the workers are forked from it
    local $ENV{LD_PRELOAD} = $shim;
    # an ASan nginx (make test-asan) accepts a library before its runtime
    local $ENV{ASAN_OPTIONS} = join ':', grep { length } $ENV{ASAN_OPTIONS} // '',
                                                       'verify_asan_link_order=0';
    $NGX = nginx_start(http => <<'EOF');
    log_format outcome 'uri=$request_uri status=$status outcome=$tenant_outcome';

    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_token_cache  zone=tokens:1m;
    tenant_jwks_file    %%JWKS%%;
    tenant_tier         starter features=dashboard;
    tenant_signing_key  000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f;

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/outcome.log outcome;

        location /api/ {
            tenant_gateway on;
            proxy_pass     http://%%ECHO%%;
        }

        location = /metrics {
            tenant_metrics;
        }
    }
EOF
}

# The access log line of the request with this URI.
sub access_line {
    my ($uri) = @_;
    for (1 .. 50) {
        open my $fh, '<', "$NGX->{dir}/outcome.log" or die "outcome.log: $!";
        my ($l) = grep { /^uri=\Q$uri\E / } <$fh>;
        return $l if defined $l;
        select undef, undef, undef, 0.05;
    }
    return '';
}

sub errors_counted {
    my $r = http(path => '/metrics');
    return $r->{body} =~ /^tenant_requests_total\{outcome="error",tier=""\} (\d+)$/m ? $1 : 0;
}

# --- an admitted token and a refused one: the shim leaves them alone ------

my $r = http(path => '/api/ok?1', headers => [
    Authorization => 'Bearer ' . mint_token(org => $ORG)]);
is $r->{status}, 200, 'a valid token: 200 (the library passes other data on)';
like access_line('/api/ok?1'), qr/ status=200 outcome=admitted$/, '... logged admitted';

$r = http(path => '/api/none?2');
is $r->{status}, 401, 'no token: 401';
like access_line('/api/none?2'), qr/ status=401 outcome=authentication_required$/,
    '... logged with its code';

# --- the forced 500 ----------------------------------------------------------

my $before = errors_counted();
my $fault = jwt_raw(header => '{"fault":1,"alg":"RS256","kid":"rsa-1"}',
                    payload => { sub => 'user_f', exp => time + 300, org_id => $ORG });
like $fault, qr/^eyJmYXVsdCI/, 'the fault token starts with the base64url of {"fault"';

$r = http(path => '/api/fault?3', headers => [Authorization => "Bearer $fault"]);
is $r->{status}, 500, 'the token cache cannot hash the token: 500';
like access_line('/api/fault?3'), qr/ status=500 outcome=error$/,
    '500: $tenant_outcome is "error"';
is errors_counted() - $before, 1, '500: tenant_requests_total{outcome="error"} + 1';

# the same by the cookie: the same path, the same answer
$r = http(path => '/api/fault?4', headers => [Cookie => "__session=$fault"]);
is $r->{status}, 500, 'the same token as a cookie: 500';
like access_line('/api/fault?4'), qr/ status=500 outcome=error$/,
    '... $tenant_outcome "error"';

done_testing();
