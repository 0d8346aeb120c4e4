#!/usr/bin/env perl
# The soak's data, made before the run (bench/soak):
#
#   DIR/tenants.tsv   rows of public.tenants, for one COPY
#   DIR/tokens.tsv    "kind<TAB>ai<TAB>token" lines, every token distinct
#
#   bench/soak.d/prepare.pl --dir DIR --key rsa.pem [--tenants 10000]
#       [--tokens 100000] [--ttl 7200] [--jobs 2]
#
# Tenants (slug soak-N, organization org_soak_N), 1% suspended (a fifth
# of them cancelled), 1% with an ended trial (a fifth of them expired),
# 0.2% limited to 1 request per minute (rate_limit_override = 1), the
# rest in good standing (active, past_due, or a trial ending in 30 days)
# on starter (40%), professional (45%) or enterprise (15%).
#
# Token kinds (share of the tokens; bench/soak.d/soak.lua chooses the
# share of the requests):
#   ok             89%   a tenant in good standing  (200)
#   feature         2%   a starter tenant, sent to the AI route (403)
#   expired         2%   exp an hour ago                         (401)
#   bad_sig         2%   a good token with one signature byte changed (401)
#   unknown_org     2%   an organization with no row             (403)
#   suspended       1%   a suspended or cancelled tenant         (403)
#   trial_expired   1%   an ended trial                          (402)
#   rate_limited  0.5%   a tenant with rate_limit_override = 1   (429)
#   invalid_org   0.5%   an organization id with spaces          (400)
# "ai" is 1 for ok tokens whose tier has ai_forecasting.
#
# RS256 like Clerk's, signed with OpenSSL (Crypt::OpenSSL::RSA, about
# 0.3 ms a token; CryptX, which scripts/mint-token.pl uses, takes 4 ms),
# in --jobs processes.

use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use Crypt::OpenSSL::RSA;
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);
use Time::HiRes qw(time);

my %o = (tenants => 10000, tokens => 100000, ttl => 7200, jobs => 2);
GetOptions(\%o, 'dir=s', 'key=s', 'tenants=i', 'tokens=i', 'ttl=i', 'jobs=i')
    && defined $o{dir} && defined $o{key}
    or die "usage: $0 --dir DIR --key RSA.pem [--tenants N] [--tokens N] [--ttl S] [--jobs N]\n";
$o{tenants} >= 100 or die "prepare: at least 100 tenants\n";
$o{tokens} >= 1000 or die "prepare: at least 1000 tokens\n";
$o{jobs} = 1 if $o{jobs} < 1;

my $t0  = time;
my $now = int $t0;
my $T   = $o{tenants};

sub ts { strftime('%Y-%m-%d %H:%M:%S+00', gmtime $_[0]) }

# --- tenants ---------------------------------------------------------------

my $n_susp  = int($T * 0.01);
my $n_trial = int($T * 0.01);
my $n_rl    = int($T * 0.002) || 2;
my (@good, @starter, @susp, @trial, @rl, %tier);

open my $tf, '>', "$o{dir}/tenants.tsv" or die "prepare: $o{dir}/tenants.tsv: $!\n";
for my $i (1 .. $T) {
    my ($tier, $status, $ends, $limit) = ('professional', 'active', '\N', '\N');
    my $org = "org_soak_$i";
    if ($i <= $n_susp) {
        $status = $i % 5 ? 'suspended' : 'cancelled';
        push @susp, $org;
    } elsif ($i <= $n_susp + $n_trial) {
        if ($i % 5) {
            ($status, $ends) = ('trial', ts($now - 86400));
        } else {
            $status = 'expired';
        }
        push @trial, $org;
    } elsif ($i <= $n_susp + $n_trial + $n_rl) {
        $limit = 1;
        push @rl, $org;
    } else {
        my $m = $i % 20;
        $tier = $m < 8 ? 'starter' : $m < 17 ? 'professional' : 'enterprise';
        my $s = $i % 10;
        ($status, $ends) = ('trial', ts($now + 30 * 86400)) if $s == 0;
        $status = 'past_due' if $s == 1;
        push @good, $org;
        push @starter, $org if $tier eq 'starter';
    }
    $tier{$org} = $tier;
    print $tf join("\t", "Soak Tenant $i", "soak-$i", $org, "tenant_soak_$i",
                   $tier, $status, $ends, "owner$i\@soak.example", $limit), "\n";
}
close $tf or die "prepare: tenants.tsv: $!\n";

# --- the token plan --------------------------------------------------------

my $N = $o{tokens};
my @shares = (
    [feature => 0.02], [expired => 0.02], [bad_sig => 0.02],
    [unknown_org => 0.02], [suspended => 0.01], [trial_expired => 0.01],
    [rate_limited => 0.005], [invalid_org => 0.005],
);
my %count;
my $rest = $N;
for (@shares) {
    $count{$_->[0]} = int($N * $_->[1]) || 1;
    $rest -= $count{$_->[0]};
}
$count{ok} = $rest;

my %orgs = (
    ok => \@good, feature => \@starter, expired => \@good, bad_sig => \@good,
    suspended => \@susp, trial_expired => \@trial, rate_limited => \@rl,
);

# [kind, ai, org, exp, corrupt]
my @plan;
for my $kind (qw(ok feature expired bad_sig unknown_org suspended
                 trial_expired rate_limited invalid_org)) {
    for my $j (0 .. $count{$kind} - 1) {
        my $org = $kind eq 'unknown_org' ? "org_soak_unknown_$j"
                : $kind eq 'invalid_org' ? "org_soak invalid $j"
                : $orgs{$kind}[$j % @{ $orgs{$kind} }];
        my $ai  = $kind eq 'ok' && $tier{$org} ne 'starter' ? 1 : 0;
        my $exp = $kind eq 'expired' ? $now - 3600 : $now + $o{ttl};
        push @plan, [$kind, $ai, $org, $exp, $kind eq 'bad_sig'];
    }
}

# --- minting ---------------------------------------------------------------

sub b64u {
    my $s = encode_base64($_[0], '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

my $pem = do {
    local $/;
    open my $f, '<', $o{key} or die "prepare: $o{key}: $!\n";
    <$f>;
};
my $header = b64u('{"alg":"RS256","typ":"JWT"}');

sub mint {
    my ($rsa, $k, $p) = @_;
    my ($kind, $ai, $org, $exp, $corrupt) = @$p;
    my $iat = $exp - $o{ttl};
    my $payload = sprintf '{"sub":"user_soak_%d","sid":"sess_soak_%d",'
        . '"iss":"https://clerk.soak.local","iat":%d,"nbf":%d,"exp":%d,'
        . '"org_id":"%s","org_role":"org:member"}',
        $k, $k, $iat, $iat - 10, $exp, $org;
    my $input = "$header." . b64u($payload);
    my $sig = b64u($rsa->sign($input));
    if ($corrupt) {
        # one character in the middle: another value, still base64url
        my $at = int(length($sig) / 2);
        my $c  = substr $sig, $at, 1;
        substr($sig, $at, 1) = $c eq 'A' ? 'B' : 'A';
    }
    return "$kind\t$ai\t$input.$sig\n";
}

my @kids;
for my $job (0 .. $o{jobs} - 1) {
    my $pid = fork // die "prepare: fork: $!\n";
    if ($pid == 0) {
        my $rsa = Crypt::OpenSSL::RSA->new_private_key($pem);
        $rsa->use_sha256_hash;
        $rsa->use_pkcs1_padding;
        open my $out, '>', "$o{dir}/tokens.$job" or die "prepare: $!\n";
        for (my $k = $job; $k < @plan; $k += $o{jobs}) {
            print $out mint($rsa, $k, $plan[$k]);
        }
        close $out or die "prepare: tokens.$job: $!\n";
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
my $failed = 0;
for (@kids) {
    waitpid $_, 0;
    $failed++ if $?;
}
die "prepare: $failed minting processes failed\n" if $failed;

open my $all, '>', "$o{dir}/tokens.tsv" or die "prepare: tokens.tsv: $!\n";
my $lines = 0;
for my $job (0 .. $o{jobs} - 1) {
    open my $in, '<', "$o{dir}/tokens.$job" or die "prepare: $!\n";
    while (<$in>) {
        print $all $_;
        $lines++;
    }
    close $in;
    unlink "$o{dir}/tokens.$job";
}
close $all or die "prepare: tokens.tsv: $!\n";
die "prepare: $lines tokens written, $N planned\n" unless $lines == $N;

printf "prepare: %d tenants (%d good, %d starter, %d suspended/cancelled, "
     . "%d ended trials, %d limited to 1/min)\n",
     $T, scalar @good, scalar @starter, scalar @susp, scalar @trial, scalar @rl;
printf "prepare: %d RS256 tokens minted in %.1f s with %d processes (%s)\n",
     $N, time - $t0, $o{jobs},
     join(', ', map { "$_ $count{$_}" }
          sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count);
