#!/usr/bin/perl
# A .env file (the README's `docker run --env-file .env`) holds every
# secret of the deployment: it must never be committed nor reach an
# image.  Checked here:
#
#   git      .env, .env.local, .env.production in the checkout are
#            ignored (git check-ignore) and none is tracked;
#   docker   they are excluded from the build context by .dockerignore
#            (its rules as Docker applies them: patterns relative to the
#            context root, *, ?, ** and [...], a directory's exclusion
#            covering its files, the last matching line winning, "!"
#            taking a path back), and every COPY/ADD of the Dockerfile
#            from the context names no such file;
#   control  the matcher itself: a .dockerignore without the .env lines
#            lets .env through, one with "!.env" after them too.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use TenantTest qw(project_root);
use Test::More;

my $root = project_root();
my @secret_files = ('.env', '.env.local', '.env.production', 'conf/.env');

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or die "$path: $!";
    local $/;
    return scalar <$f>;
}


# ---- git -------------------------------------------------------------------

SKIP: {
    my $top = `git -C '$root' rev-parse --show-toplevel 2>/dev/null`;
    chomp $top;
    skip 'not a git checkout', 2 * @secret_files + 1 unless $top;

    for my $f (@secret_files) {
        system('git', '-C', $root, 'check-ignore', '-q', '--no-index', $f);
        is $? >> 8, 0, "git ignores $f";
    }
    my @tracked = grep { length } split /\n/,
        `git -C '$root' ls-files -- .env '.env.*' '**/.env' '**/.env.*'`;
    is_deeply \@tracked, [], 'no .env file is tracked';

    # and the files .gitignore keeps are still committed
    for my $f ('Dockerfile', 'scripts/render-conf.sh') {
        system('git', '-C', $root, 'check-ignore', '-q', '--no-index', $f);
        is $? >> 8, 1, "git does not ignore $f";
    }
}


# ---- .dockerignore ---------------------------------------------------------

# The .dockerignore lines as [negated, regex], Docker's way: comments and
# blank lines skipped, a leading "/" dropped, "**" any number of
# directories, "*" and "?" within one path element.
sub dockerignore_rules {
    my ($text) = @_;
    my @rules;
    for my $line (split /\n/, $text) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '' || $line =~ /^#/;
        my $neg = $line =~ s/^!//;
        $line =~ s{^/+}{};
        $line =~ s{/+$}{};
        my $re = '';
        while (length $line) {
            if    ($line =~ s{^\*\*/}{})  { $re .= '(?:.*/)?' }
            elsif ($line =~ s{^\*\*}{})   { $re .= '.*' }
            elsif ($line =~ s{^\*}{})     { $re .= '[^/]*' }
            elsif ($line =~ s{^\?}{})     { $re .= '[^/]' }
            elsif ($line =~ s{^(\[[^\]]*\])}{}) { $re .= $1 }
            else  { $line =~ s/^(.)//s; $re .= quotemeta $1 }
        }
        push @rules, [$neg, qr/^$re$/];
    }
    return @rules;
}

# Whether Docker leaves PATH (relative to the context) out: the last rule
# that matches the path or one of its parent directories decides.
sub excluded {
    my ($path, @rules) = @_;
    my @parts = split m{/}, $path;
    my @prefixes = map { join '/', @parts[0 .. $_] } 0 .. $#parts;
    my $out = 0;
    for my $r (@rules) {
        my ($neg, $re) = @$r;
        $out = !$neg if grep { $_ =~ $re } @prefixes;
    }
    return $out;
}

my $ignore = -e "$root/.dockerignore" ? slurp("$root/.dockerignore") : '';
my @rules = dockerignore_rules($ignore);
for my $f (@secret_files) {
    ok excluded($f, @rules), ".dockerignore leaves $f out of the build context";
}
for my $f ('Dockerfile', 'scripts/render-conf.sh', 'conf/nginx.conf.template',
           'src/ngx_tenant_access.c', 'migrations')
{
    ok !excluded($f, @rules), ".dockerignore keeps $f (the build needs it)";
}

# the matcher, on rules known to let .env through
{
    my @none = dockerignore_rules("build/\n.git/\n");
    ok !excluded('.env', @none), 'control: without a .env line, .env is in the context';
    my @back = dockerignore_rules("$ignore\n!.env\n");
    ok !excluded('.env', @back), 'control: "!.env" last takes it back';
    ok excluded('build/nginx/objs/x.o', dockerignore_rules("build/\n")),
        'control: a directory covers its files';
}


# ---- the Dockerfile's COPY and ADD -------------------------------------------

my $dockerfile = slurp("$root/Dockerfile") =~ s/\\\n/ /gr;
my @copies;
for (split /\n/, $dockerfile) {
    next if /^\s*(#|$)/;
    my ($ins, $args) = /^\s*(COPY|ADD)\s+(.*?)\s*$/i or next;
    my @w = grep { !/^--(chown|chmod|link|parents)\b/ } split ' ', $args;
    next if grep { /^--from=/ } @w;             # from a stage, not the context
    pop @w;                                     # the destination
    push @copies, [uc $ins, @w];
}
ok @copies, 'the Dockerfile copies from the build context';
for my $c (@copies) {
    my ($ins, @src) = @$c;
    is $ins, 'COPY', "@src: COPY, not ADD (no URL or archive unpacked)";
    for my $src (@src) {
        (my $s = $src) =~ s{^\./}{};
        unlike $s, qr/(^|\/)\.env/, "$ins $src: names no .env file";
        for my $f (@secret_files) {
            # a source that covers the file (".", a directory, a glob)
            my ($re) = map { $_->[1] } dockerignore_rules($s eq '.' ? '**' : "$s\n");
            my $covers = $s eq '.' || $f =~ $re
                         || index($f, "$s/") == 0;
            ok !$covers || excluded($f, @rules),
                "$ins $src: $f does not reach the image";
        }
    }
}

done_testing();
