#!/usr/bin/env perl
# Mints a Clerk-like session token, signed for real, and prints it.
#
#   scripts/mint-token.pl --key .local/demo/jwt-private.pem --org org_demo_pro
#
# An RSA private key signs RS256, an EC P-256 key ES256.  The claims are
# those of a Clerk session token: sub, sid, iss, iat, nbf, exp, azp, and the
# active organization, either as v1 top-level claims (org_id, org_role,
# org_slug) or, with --v2, as Clerk's compact "o" claim
# ({"id","rol","slg"}, with "v":2 and "sts").  For local runs and tests only:
# the real tokens come from Clerk.

use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use Crypt::JWT qw(encode_jwt);
use Crypt::PK::RSA;
use Crypt::PK::ECC;

my %o = (
    sub  => 'user_demo',
    role => 'org:admin',
    iss  => 'https://clerk.capliquify.local',
    ttl  => 3600,
    sts  => 'active',
);

sub usage {
    print STDERR <<'EOF';
usage: scripts/mint-token.pl --key PRIVATE.pem [options]
  --key FILE            PEM private key: RSA (RS256) or EC P-256 (ES256)
  --kid ID              "kid" header (default: none)
  --sub ID              user id (default user_demo)
  --org ID              active organization id (default: none)
  --role ROLE           organization role (default org:admin)
  --slug SLUG           organization slug (default: none)
  --iss URL             issuer (default https://clerk.capliquify.local)
  --azp ORIGIN          authorized party (default: none)
  --ttl SECONDS         lifetime; negative mints an expired token (3600)
  --v2                  Clerk v2 claims: "v":2, "o":{"id","rol","slg"}, "sts"
  --sts STATUS          v2 session status (default active)
  --metadata-role ROLE  "metadata":{"role":ROLE}
EOF
    exit 2;
}

GetOptions(\%o, 'key=s', 'kid=s', 'sub=s', 'org=s', 'role=s', 'slug=s',
    'iss=s', 'azp=s', 'ttl=i', 'v2', 'sts=s', 'metadata-role=s', 'help|h')
    or usage();
usage() if $o{help} || !defined $o{key} || @ARGV;

sub fail {
    print STDERR "mint-token: @_\n";
    exit 1;
}

my ($key, $alg);
if (my $rsa = eval { Crypt::PK::RSA->new($o{key}) }) {
    fail "$o{key} is a public key; a private key signs"
        unless $rsa->is_private;
    ($key, $alg) = ($rsa, 'RS256');
} elsif (my $ec = eval { Crypt::PK::ECC->new($o{key}) }) {
    fail "$o{key} is a public key; a private key signs"
        unless $ec->is_private;
    my $curve = $ec->key2hash->{curve_name} // '';
    fail "EC key on $curve; ES256 needs P-256"
        unless $curve =~ /^(secp256r1|prime256v1|nistp256)$/i;
    ($key, $alg) = ($ec, 'ES256');
} else {
    fail "cannot read a private key from $o{key}";
}

my $now = time;
my %claims = (
    sub => $o{sub},
    sid => 'sess_demo',
    iss => $o{iss},
    iat => $now,
    nbf => $now - 10,
    exp => $now + $o{ttl},
);
$claims{azp} = $o{azp} if defined $o{azp};
$claims{metadata} = { role => $o{'metadata-role'} }
    if defined $o{'metadata-role'};

if ($o{v2}) {
    $claims{v} = 2;
    $claims{sts} = $o{sts};
    if (defined $o{org}) {
        (my $rol = $o{role}) =~ s/^org://;     # v2 roles have no prefix
        $claims{o} = { id => $o{org}, rol => $rol };
        $claims{o}{slg} = $o{slug} if defined $o{slug};
    }
} elsif (defined $o{org}) {
    $claims{org_id} = $o{org};
    $claims{org_role} = $o{role};
    $claims{org_slug} = $o{slug} if defined $o{slug};
}

my %header = (typ => 'JWT');
$header{kid} = $o{kid} if defined $o{kid};

print encode_jwt(payload => \%claims, alg => $alg, key => $key,
    extra_headers => \%header), "\n";
