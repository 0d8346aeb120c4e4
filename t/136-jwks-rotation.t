#!/usr/bin/perl
# A key rotation at the identity provider, for every combination of key
# sources the README documents (tenant_jwt_key, tenant_jwks_file,
# tenant_jwks_request):
#
#   with a URL  the old kid is admitted; the server rotates to a new kid
#               (another key); a token of the new kid is admitted after
#               exactly one fetch, whatever else is configured: a PEM key
#               without kid (Clerk's CLERK_JWT_KEY) next to the URL must
#               not turn the new kid into a bad signature that never
#               fetches (issue 11, item 2); the old kid after the rotation:
#               admitted while a configured key still has it (the PEM, the
#               file), unknown_key with the URL only
#   without     the new kid is refused 401 unknown_key (not bad_signature:
#               the PEM key is not the token's key, a rotated
#               CLERK_JWT_KEY), no fetch, no wait
#   any         a token without kid, signed by another key: bad_signature;
#               a kid that names a key, signed by another: bad_signature,
#               and no fetch
#
# The old key is the harness' 'rsa' key (kid ins_old in a JWKS), the new
# one its 'other' key (kid ins_new).  One worker, interval=1s, ttl=60s.
# The JWKS server is t/lib/JwksServer.pm.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest;
use JwksServer;
use Test::More;
use Crypt::PK::RSA ();
use File::Temp     ();
use Time::HiRes    qw(time sleep);

my $INTERVAL    = 1;          # seconds, tenant_jwks_request interval=
my $SIGNING_KEY = 'a1b2c3d4e5f60718' x 4;

pg_start();
my $keys = jwt_keys();
my $T    = create_tenant(status => 'active');
my $ORG  = $T->{clerk_organization_id};

my $TMP = File::Temp::tempdir('t136-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $TMP;

# The public JWK of a harness key ('rsa', 'other') under a kid.
sub jwk {
    my ($name, $kid) = @_;
    my $pk = Crypt::PK::RSA->new($keys->{"${name}_pub"})->export_key_jwk('public', 1);
    return { %$pk, use => 'sig', alg => 'RS256', kid => $kid };
}

my $OLD = JwksServer->doc(jwk(rsa => 'ins_old'));
my $NEW = JwksServer->doc(jwk(other => 'ins_new'));

# the JWKS file: the old key, as a snapshot of the document
my $FILE = "$TMP/jwks-old.json";
{
    open my $fh, '>', $FILE or die "$FILE: $!";
    print $fh $OLD;
    close $fh;
    chmod 0644, $FILE;
}

my $J = JwksServer->new;


# %o: pem, file, url (the key sources).
sub conf {
    my (%o) = @_;
    my $port = $J->port;
    my $src = ($o{pem} ? "tenant_jwt_key $keys->{rsa_pub};\n" : '')
            . ($o{file} ? "    tenant_jwks_file $FILE;\n" : '')
            . ($o{url} ? "    tenant_jwks_request /_jwks ttl=60s interval=${INTERVAL}s;\n" : '');

    return <<EOF;
    tenant_database     "%%PG%%";
    tenant_cache        zone=tenants:1m;
    tenant_token_cache  zone=tokens:1m;
    $src
    tenant_tier         starter      features=dashboard;
    tenant_tier         professional features=dashboard,ai_forecasting;
    tenant_signing_key  $SIGNING_KEY;

    server {
        listen 127.0.0.1:%%PORT%%;

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

# A token nobody used before (no token cache hit).
sub tok { return mint_token(org => $ORG, sub => 'user_' . ++$SEQ, @_) }

sub get {
    my ($token) = @_;
    return http(path => '/api/orders', timeout => 8,
                headers => [Authorization => "Bearer $token"]);
}

sub brief {
    my ($r) = @_;
    my $j = $r->{json} || {};
    return sprintf '%s %s/%s (%.2fs)%s', $r->{status}, $j->{code} // '', $j->{reason} // '',
        $r->{elapsed} // 0, $r->{error} ? " $r->{error}" : '';
}

sub admitted {
    my ($r, $name) = @_;
    subtest "$name: admitted" => sub {
        is $r->{status}, 200, 'status 200' or diag brief($r);
        is_deeply $r->{json}{headers}{'x-tenant-id'}, [$T->{id}], 'upstream saw the tenant';
    };
}

sub refused {
    my ($r, $name, $reason) = @_;
    subtest "$name: 401 invalid_token/$reason" => sub {
        is $r->{status}, 401, 'status 401' or diag brief($r);
        my $j = $r->{json} || {};
        is $j->{code}, 'invalid_token', 'code';
        is $j->{reason}, $reason, 'reason';
    };
}

sub sleep_until { my ($t) = @_; my $d = $t - time; sleep $d if $d > 0 }

my @COMBOS = (
    [ 'PEM only',         { pem => 1 } ],
    [ 'JWKS file only',   { file => 1 } ],
    [ 'URL only',         { url => 1 } ],
    [ 'PEM + URL',        { pem => 1, url => 1 } ],
    [ 'file + URL',       { file => 1, url => 1 } ],
    [ 'PEM + file',       { pem => 1, file => 1 } ],
    [ 'PEM + file + URL', { pem => 1, file => 1, url => 1 } ],
);

for my $c (@COMBOS) {
    my ($name, $o) = @$c;

    $J->set_mode('ok');
    $J->set_doc($OLD);
    my $base = $J->nfetch;         # the hits of the servers before
    nginx_start(http => conf(%$o));

    subtest $name => sub {
        admitted get(tok(kid => 'ins_old')), 'the old kid';

        # the first request fetched (URL only: and waited; with a static
        # key, in the background): the next fetch is one interval later
        if ($o->{url}) {
            my ($n) = retry_until(3, sub { $J->nfetch - $base }, sub { $_[0] >= 1 });
            is $n, 1, 'the first request: one fetch';
            sleep_until($J->last_fetch_t + $INTERVAL + 0.2);
        }

        refused get(tok(kid => undef, key => 'other')),
            'no kid, signed by a key the PEM is not', 'bad_signature'
            if $o->{pem};
        refused get(tok(kid => 'ins_old', key => 'other')),
            'the old kid, signed by another key', 'bad_signature'
            if $o->{file} || $o->{url};

        my $n = $J->nfetch;
        is $n - $base, $o->{url} ? 1 : 0, 'none of them fetched';

        # --- the rotation ---
        $J->set_doc($NEW);

        if ($o->{url}) {
            admitted get(tok(kid => 'ins_new', key => 'other')),
                'after the rotation, the new kid';
            is $J->nfetch, $n + 1, '... after one fetch';

            if ($o->{pem} || $o->{file}) {
                admitted get(tok(kid => 'ins_old')),
                    'the old kid: a configured key still has it';
            } else {
                refused get(tok(kid => 'ins_old')),
                    'the old kid, gone from the document', 'unknown_key';
            }

            admitted get(tok(kid => 'ins_new', key => 'other')),
                'the new kid again';
            is $J->nfetch, $n + 1, '... no other fetch';
        } else {
            my $r = get(tok(kid => 'ins_new', key => 'other'));
            refused $r, 'after the rotation, the new kid (no URL to fetch it)',
                'unknown_key';
            cmp_ok $r->{elapsed}, '<', 2, '... at once';
            is $J->nfetch, $base, '... no fetch';
        }
    };

    nginx_stop();
}

$J->stop;

done_testing();
