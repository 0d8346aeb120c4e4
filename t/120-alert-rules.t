#!/usr/bin/perl
# conf/alerts.yml: valid Prometheus rules (promtool check rules) over
# metrics the gateway exports (names taken from src/ngx_tenant_metrics.c).

use strict;
use warnings;
use Test::More;
use FindBin;

my $root  = "$FindBin::Bin/..";
my $rules = "$root/conf/alerts.yml";

ok(-f $rules, 'conf/alerts.yml exists') or BAIL_OUT('no conf/alerts.yml');

# promtool: required when scripts/deps.sh installs prometheus.

open my $dfh, '<', "$root/scripts/deps.sh" or die "deps.sh: $!";
my $deps = do { local $/; <$dfh> };
my $promtool_expected = $deps =~ /^\s*[^#\n]*\bprometheus\b(?!-)/m;

SKIP: {
    if (!-x '/usr/bin/promtool') {
        fail('promtool installed (scripts/deps.sh lists prometheus)')
            if $promtool_expected;
        skip('promtool not installed and scripts/deps.sh does not list '
             . 'prometheus', 1) unless $promtool_expected;
        last SKIP;
    }

    my $out = `/usr/bin/promtool check rules '$rules' 2>&1`;
    my $rc  = $? >> 8;
    ok($rc == 0 && $out =~ /SUCCESS/, 'promtool check rules conf/alerts.yml')
        or diag($out);
}

# The YAML itself, and the expressions.

my @exprs;
my $have_yaml = eval { require YAML::XS; 1 };

SKIP: {
    skip('YAML::XS not installed', 3) unless $have_yaml;

    my $doc = eval { YAML::XS::LoadFile($rules) };
    ok($doc && ref $doc->{groups} eq 'ARRAY', 'alerts.yml parses, has groups')
        or diag($@);

    my @r = map { @{ $_->{rules} || [] } } @{ $doc->{groups} || [] };
    ok(@r >= 5, scalar(@r) . ' rules');
    ok(!(grep { !$_->{alert} || !$_->{expr} || !$_->{labels}{severity} } @r),
       'every rule has alert, expr and a severity');
    @exprs = map { $_->{expr} } @r;
}

unless (@exprs) {           # no YAML module: take the expr lines as text
    open my $fh, '<', $rules or die $!;
    my $text = do { local $/; <$fh> };
    while ($text =~ /^\s*expr:\s*(\|[^\n]*\n((?:\s{10,}[^\n]*\n)+)|([^\n]+))/mg) {
        push @exprs, defined $2 ? $2 : $3;
    }
}

ok(@exprs, 'found the rule expressions');

# Metric names the module exports.

open my $mfh, '<', "$root/src/ngx_tenant_metrics.c" or die $!;
my $src = do { local $/; <$mfh> };

my %exported;
$exported{$1} = 1 while $src =~ /"(tenant_[a-z_]+)[\s{"]/g;

for my $h (grep { /_duration_seconds$/ } keys %exported) {
    $exported{"${h}_$_"} = 1 for qw(bucket sum count);
}

ok($exported{tenant_requests_total} && $exported{tenant_db_errors_total},
   'found the exported metric names in ngx_tenant_metrics.c');

my %builtin = map { $_ => 1 } qw(up);
my %used;

for my $e (@exprs) {
    (my $x = $e) =~ s/"[^"]*"//g;                  # label values
    $x =~ s/\{[^}]*\}//g;                          # matchers
    $x =~ s/\[[^\]]*\]//g;                         # ranges
    $x =~ s/\bby\s*\([^)]*\)//g;                   # grouping labels
    while ($x =~ /\b([a-z_][a-z0-9_]*)\b(?!\s*\()/g) {
        my $w = $1;
        next if $w =~ /^(?:and|or|unless|by|without|on|ignoring|bool|offset|le)$/;
        $used{$w} = 1;
    }
}

ok(%used, 'metrics used: ' . join(', ', sort keys %used));

for my $m (sort keys %used) {
    ok($exported{$m} || $builtin{$m}, "$m is exported by the gateway")
        or diag("exported: " . join(' ', sort keys %exported));
}

ok($used{tenant_requests_total}, 'an error-rate rule');
ok($used{tenant_db_query_duration_seconds_bucket}, 'a database p95 rule');
ok($used{up}, 'a scrape rule');

# Access-log fields the rules' text sends the operator to ("the access
# log's status field", "the access log ($request_time)") exist in the
# shipped log_format of conf/nginx.conf.template.

open my $tfh, '<', "$root/conf/nginx.conf.template" or die "template: $!";
my $template = do { local $/; <$tfh> };
my ($format) = $template =~ /^\s*log_format\s+tenant_json\b[^']*((?:'[^']*'\s*)+);/m;
ok(defined $format, 'the shipped log_format tenant_json') or $format = '';
my %field = map { $_ => 1 } $format =~ /"(\w+)":/g;
my %var   = map { $_ => 1 } $format =~ /\$(\w+)/g;
ok($field{outcome} && $var{tenant_outcome}, 'log_format: fields and variables read');

open my $afh, '<', $rules or die $!;
my $text = do { local $/; <$afh> };
$text =~ s/\s+/ /g;                     # phrases broken over lines
$text =~ s/ ?# ?/ /g;                   # and over comment lines

my @named;
push @named, map { [field => $_] } $text =~ /\baccess log's (\w+) field/g;
push @named, map { [var => $_] } $text =~ /\baccess log \(\$(\w+)\)/g;
ok(@named >= 2, scalar(@named) . ' access-log fields named in alerts.yml');

for my $n (@named) {
    my ($kind, $name) = @$n;
    ok($kind eq 'field' ? $field{$name} : $var{$name},
       "alerts.yml names access-log $kind \"$name\": in log_format tenant_json")
        or diag('fields: ' . join(' ', sort keys %field));
}

done_testing();
