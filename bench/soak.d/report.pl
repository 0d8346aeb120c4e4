#!/usr/bin/env perl
# The report of bench/soak, from what the run left: wrk's output (with
# soak.lua's "soak:" lines), the gateway's access log ("kind status
# outcome request_time"), the memory samples, /metrics before and after,
# the error log.  Prints it; exits 1 when the run failed (see bench/soak).

use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use POSIX qw(strftime floor);

my %o;
GetOptions(\%o, qw(wrk=s wrk-rc=i access=s rss=s metrics-before=s
    metrics-after=s error-log=s prepare=s tokens=s seconds=i rate=i threads=i
    connections=i warmup=i rss-limit=i rss-field=s mix=s load-start=s
    load-end=s workers-end=s hz=i)) or die "report: bad arguments\n";

my @fail;
sub slurp { open my $f, '<', $_[0] or return ''; local $/; return <$f> }

# Expected answer of each kind: status, outcome ($tenant_outcome).
my %expect = (
    ok            => [200, 'admitted'],
    ok_ai         => [200, 'admitted'],
    missing       => [401, 'authentication_required'],
    bad_sig       => [401, 'invalid_token'],
    expired       => [401, 'invalid_token'],
    invalid_org   => [400, 'invalid_organization'],
    unknown_org   => [403, 'unknown_organization'],
    feature       => [403, 'feature_not_available'],
    suspended     => [403, 'tenant_suspended'],
    trial_expired => [402, 'trial_expired'],
    rate_limited  => [429, 'rate_limited'],
);

printf "soak report, %s\n", strftime('%Y-%m-%d %H:%M UTC', gmtime);
print "=" x 72, "\n";
printf "target: %d requests/s for %d s, wrk -t%d -c%d (paced by soak.lua)\n",
    $o{rate}, $o{seconds}, $o{threads}, $o{connections};
print slurp($o{prepare});
print "machine load at start:$o{'load-start'}\n";
print "machine load at end:  $o{'load-end'}\n\n";

# --- wrk --------------------------------------------------------------------

my $wrk = slurp($o{wrk});
my %w;
my %client_status;
for (split /\n/, $wrk) {
    if (/^soak: status (\d+) (\d+)/) {
        $client_status{$1} = $2;
    } elsif (/^soak: (\S+) (.*)$/) {
        $w{$1} = $2;
    }
}
unless (defined $w{requests}) {
    print "wrk did not report (exit $o{'wrk-rc'}):\n$wrk\n";
    push @fail, 'wrk did not finish';
}
my $req  = $w{requests} // 0;
my $dur  = ($w{duration_us} // 1) / 1e6;
my $achieved = $req / $dur;
printf "requests: %d in %.1f s = %.1f requests/s (target %d: %.1f%%); "
     . "schedule slots dropped %d, furthest behind %.0f ms\n",
    $req, $dur, $achieved, $o{rate}, 100 * $achieved / $o{rate},
    $w{dropped_slots} // 0, $w{lag_max_ms} // 0;
print "  (below 95% of the target: the machine could not keep up, see the load)\n"
    if $achieved < 0.95 * $o{rate};
my $errors = $w{errors} // '';
print "socket errors: $errors\n";
push @fail, "socket errors ($errors)" if $errors =~ /=[1-9]/;
push @fail, "wrk exited $o{'wrk-rc'}" if $o{'wrk-rc'};
printf "latency (wrk, write to response): p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  "
     . "p99.9 %.2f ms  max %.2f ms  mean %.2f ms\n",
    map { ($w{$_} // 0) / 1000 }
        qw(latency_p50_us latency_p90_us latency_p99_us latency_p99.9_us
           latency_max_us latency_mean_us);
my $client_5xx = 0;
$client_5xx += $client_status{$_} for grep { $_ >= 500 } keys %client_status;
printf "status (wrk): %s\n",
    join('  ', map { "$_ $client_status{$_}" } sort keys %client_status);

# --- the access log: status per kind ----------------------------------------

my (%n, %st, %outcome, $logged, $log_5xx, %checks, @rt);
$logged = $log_5xx = 0;
open my $al, '<', $o{access} or die "report: $o{access}: $!\n";
while (<$al>) {
    my ($k, $s, $out, $rt) = split;
    next unless defined $s;
    if ($k =~ /^check_/) {
        $checks{"$k $s"}++;
        next;
    }
    $logged++;
    $log_5xx++ if $s >= 500;
    $n{$k}++;
    $st{$k}{$s}++;
    $outcome{$k}{$out}++;
}
close $al;

my %share;
my $total_share = 0;
while ($o{mix} =~ /(\w+)=([\d.]+)/g) {
    $share{$1} = $2;
    $total_share += $2;
}

# A tenant limited to 1 request a minute may pass one per minute, plus
# the full bucket it starts with.
my ($n_rl) = slurp($o{prepare}) =~ /(\d+) limited to 1\/min/;
$n_rl //= 0;
my $rl_allow = $n_rl * (floor($o{seconds} / 60) + 2);

print "\nstatus per kind (gateway access log: $logged requests";
print "; checks before the run: ", join(', ', map { "$_ $checks{$_}" } sort keys %checks)
    if %checks;
print ")\n";
printf "%-14s %-28s %7s %7s %8s %9s  %s\n", 'kind', 'expected', 'mix%', 'seen%',
    'requests', 'expected', 'other statuses';
my $mismatch = 0;
my @kinds = sort { ($n{$b} // 0) <=> ($n{$a} // 0) } keys %n;
for my $k (@kinds) {
    my $e = $expect{$k};
    my ($es, $eo) = $e ? @$e : ('?', '?');
    my $good = 0;
    my @other;
    for my $s (sort keys %{ $st{$k} }) {
        if ($e && $s == $es) {
            $good += $st{$k}{$s};
        } else {
            push @other, "$s: $st{$k}{$s}";
        }
    }
    my $bad = $n{$k} - $good;
    if ($k eq 'rate_limited') {
        my $passed = $st{$k}{200} // 0;
        $bad -= $passed;
        if ($passed > $rl_allow) {
            $bad += $passed - $rl_allow;
        }
        push @other, "(200 within the quota of $n_rl tenants: at most $rl_allow)" if $passed;
    }
    $mismatch += $bad;
    my $mixp = $k eq 'ok_ai' ? '' : $k eq 'ok' ? $share{ok} : $share{$k};
    printf "%-14s %-28s %7s %6.2f%% %8d %9d  %s\n", $k, "$es $eo",
        defined $mixp && $mixp ne '' ? sprintf('%.2f%%', 100 * $mixp / $total_share) : '',
        100 * $n{$k} / ($logged || 1), $n{$k}, $good, join(', ', @other);
}
my $ok_all = ($n{ok} // 0) + ($n{ok_ai} // 0);
printf "%-14s %-28s %6.2f%% %6.2f%%   (ok_ai: the AI route, 30%% of the ok "
     . "requests of professional and enterprise tenants)\n",
    'ok + ok_ai', '200 admitted', 100 * ($share{ok} // 0) / $total_share,
    100 * $ok_all / ($logged || 1);
my $refused = $logged - $ok_all - ($st{rate_limited}{200} // 0);
printf "refusals: %.2f%% of the requests (mix: %.2f%%)\n",
    100 * $refused / ($logged || 1), 100 * (1 - ($share{ok} // 0) / $total_share);
print "outcomes per kind: ",
    join('; ', map { my $k = $_; "$k " . join(',', map { "$_ $outcome{$k}{$_}" }
                                       sort keys %{ $outcome{$k} }) } @kinds), "\n";
my $all_5xx = $log_5xx > $client_5xx ? $log_5xx : $client_5xx;
print "\n5xx: $log_5xx in the access log, $client_5xx seen by wrk\n";
push @fail, "$all_5xx 5xx responses" if $all_5xx;
push @fail, "$mismatch responses not of their kind's status" if $mismatch;

# --- memory -----------------------------------------------------------------

my (%rss, %ticks, %load, @times, %pids, %entries);
open my $rf, '<', $o{rss} or die "report: $o{rss}: $!\n";
while (<$rf>) {
    if (/^(\d+) cache (\d+) (\d+)/) {
        $entries{$1} = [$2, $3];
        next;
    }
    my ($t, $p, $vm, $anon, $file, $shm, $tk, $l) = split;
    next unless defined $shm;
    push @times, $t unless @times && $times[-1] == $t;
    $rss{$p}{$t} = { VmRSS => $vm, RssAnon => $anon, RssFile => $file, RssShmem => $shm };
    $ticks{$p}{$t} = $tk;
    $load{$t} = $l;
    $pids{$p} = 1;
}
close $rf;
my @pids = sort { $a <=> $b } keys %pids;
my $field = $o{'rss-field'};

print "\nworker memory every ", (@times > 1 ? $times[1] - $times[0] : '?'),
    " s (kB; VmRSS = RssAnon + RssFile + RssShmem)\n";
printf "%5s %6s %14s", 't(s)', 'load1', 'tokens/tenants';
printf "  %-32s", "pid $_ VmRSS/Anon/File/Shmem" for @pids;
print "\n";
for my $t (@times) {
    printf "%5d %6s %14s", $t, $load{$t},
        $entries{$t} ? join('/', @{ $entries{$t} }) : '?';
    for my $p (@pids) {
        my $r = $rss{$p}{$t};
        printf "  %-32s", $r ? join('/', @$r{qw(VmRSS RssAnon RssFile RssShmem)}) : 'absent';
    }
    print "\n";
}

my @after = grep { $_ >= $o{warmup} } @times;
my ($cpu_total, @shm_growth) = (0);
if (@pids && @after >= 2) {
    my ($from, $to) = ($after[0], $after[-1]);
    print "\ngrowth after the warm-up, $from s to $to s (kB):\n";
    for my $p (@pids) {
        my ($a, $b) = ($rss{$p}{$from}, $rss{$p}{$to});
        unless ($a && $b) {
            print "  worker $p: absent at $from s or $to s\n";
            push @fail, "worker $p absent from part of the run";
            next;
        }
        my %g = map { $_ => $b->{$_} - $a->{$_} } qw(VmRSS RssAnon RssFile RssShmem);
        my $cpu = (($ticks{$p}{$to} // 0) - ($ticks{$p}{$times[0]} // 0)) / ($o{hz} || 100);
        $cpu_total += $cpu;
        printf "  worker %d: VmRSS %+d, RssAnon %+d, RssFile %+d, RssShmem %+d; "
             . "CPU %.1f s over the run\n", $p, @g{qw(VmRSS RssAnon RssFile RssShmem)}, $cpu;
        push @shm_growth, $g{RssShmem};
        if ($g{$field} >= $o{'rss-limit'}) {
            push @fail, "worker $p: $field grew by $g{$field} kB after the warm-up "
                      . "(limit $o{'rss-limit'} kB)";
        }
    }
    print "  the limit applies to $field: under $o{'rss-limit'} kB per worker; RssShmem "
        . "counts the pages of the\n  shared zones (token cache: 192m) the worker has "
        . "touched, which grow as the caches fill.\n";
    if ($entries{$from} && $entries{$to}) {
        my $new = $entries{$to}[0] - $entries{$from}[0];
        printf "  meanwhile the token cache went from %d to %d entries (+%d)%s\n",
            $entries{$from}[0], $entries{$to}[0], $new,
            $new > 0 ? sprintf(': %s bytes of RssShmem per new entry',
                join(', ', map { sprintf '%.0f', $_ * 1024 / $new } @shm_growth)) : '';
    }
    printf "  worker CPU: %.1f s in all, %.0f us per request\n", $cpu_total,
        $req ? 1e6 * $cpu_total / $req : 0;
} else {
    push @fail, 'too few memory samples after the warm-up';
}
my $start_pids = join ' ', grep { exists $rss{$_}{$times[0] // 0} } @pids;
my $end_pids = $o{'workers-end'} // '';
$end_pids =~ s/\s+$//;
if (@pids != 2 || $start_pids ne $end_pids) {
    push @fail, "the worker set changed (at start: $start_pids; sampled: @pids; at end: $end_pids)";
}

# --- /metrics ---------------------------------------------------------------

sub metrics {
    my %m;
    for (split /\n/, slurp($_[0])) {
        next if /^#/;
        my ($name, $labels, $v) = /^(\w+)(?:\{([^}]*)\})?\s+(\S+)/ or next;
        $m{$name}{$labels // ''} = $v;
    }
    return \%m;
}
my ($mb, $ma) = (metrics($o{'metrics-before'}), metrics($o{'metrics-after'}));
sub mval {
    my ($m, $name, $want) = @_;
    my $sum = 0;
    for my $l (keys %{ $m->{$name} || {} }) {
        $sum += $m->{$name}{$l} if !defined $want || $l =~ /$want/;
    }
    return $sum;
}
print "\n/metrics at the end (run: since the checks before the run)\n";
my %outc;
for my $l (keys %{ $ma->{tenant_requests_total} || {} }) {
    $outc{$1} = 1 if $l =~ /outcome="([^"]*)"/;
}
printf "  tenant_requests_total: %s\n", join('  ', map {
    my $r = qr/outcome="\Q$_\E"/;
    sprintf '%s %d (run %d)', $_, mval($ma, 'tenant_requests_total', $r),
        mval($ma, 'tenant_requests_total', $r) - mval($mb, 'tenant_requests_total', $r)
} sort keys %outc);
for my $c (qw(token tenant)) {
    my $r = qr/cache="$c"/;
    my ($h, $m) = (mval($ma, 'tenant_cache_hits_total', $r), mval($ma, 'tenant_cache_misses_total', $r));
    my ($hr, $mr) = ($h - mval($mb, 'tenant_cache_hits_total', $r),
                     $m - mval($mb, 'tenant_cache_misses_total', $r));
    printf "  %-6s cache: hits %d, misses %d, hit ratio %.4f (run %.4f); entries %d, "
         . "evictions %d\n", $c, $h, $m, $h / (($h + $m) || 1), $hr / (($hr + $mr) || 1),
        mval($ma, 'tenant_cache_entries', $r), mval($ma, 'tenant_cache_evictions_total', $r);
}
printf "  ratelimit zone: entries %d, evictions %d\n",
    mval($ma, 'tenant_cache_entries', qr/cache="ratelimit"/),
    mval($ma, 'tenant_cache_evictions_total', qr/cache="ratelimit"/);
printf "  tenant_db_queries_total %d (run %d), tenant_db_errors_total %d, "
     . "tenant_db_connects_total %d\n",
    mval($ma, 'tenant_db_queries_total'),
    mval($ma, 'tenant_db_queries_total') - mval($mb, 'tenant_db_queries_total'),
    mval($ma, 'tenant_db_errors_total'), mval($ma, 'tenant_db_connects_total');
my $qc = mval($ma, 'tenant_db_query_duration_seconds_count');
if ($qc) {
    printf "  tenant_db_query_duration_seconds: mean %.2f ms over %d queries\n",
        1000 * mval($ma, 'tenant_db_query_duration_seconds_sum') / $qc, $qc;
}
push @fail, 'no /metrics after the run' unless %$ma;

# --- the error log ----------------------------------------------------------

my %lvl;
my %msg;
for (split /\n/, slurp($o{'error-log'})) {
    my ($l) = /\[(\w+)\]/ or next;
    $lvl{$l}++;
    (my $m = $_) =~ s/^\S+ \S+ \[\w+\] \d+#\d+: (\*\d+ )?//;
    $m =~ s/\d+/N/g;
    $m = substr $m, 0, 160;
    $msg{"[$l] $m"}++;
}
print "\nerror log (notice and above): ",
    (%lvl ? join(', ', map { "$_ $lvl{$_}" } sort keys %lvl) : 'empty'), "\n";
my @top = sort { $msg{$b} <=> $msg{$a} } keys %msg;
printf "  %6d  %s\n", $msg{$_}, $_ for @top[0 .. ($#top < 14 ? $#top : 14)];
my $grave = ($lvl{alert} // 0) + ($lvl{crit} // 0) + ($lvl{emerg} // 0);
push @fail, "$grave [alert]/[crit]/[emerg] lines in the error log" if $grave;
push @fail, 'a worker exited on a signal' if slurp($o{'error-log'}) =~ /exited on signal/;

# --- verdict ----------------------------------------------------------------

print "\n", "=" x 72, "\n";
if (@fail) {
    print "FAIL: $_\n" for @fail;
    exit 1;
}
printf "PASS: no 5xx, every status of its kind, no socket error, both workers "
     . "alive, %s growth under %d kB per worker after %d s\n",
    $field, $o{'rss-limit'}, $o{warmup};
exit 0;
