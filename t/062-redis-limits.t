#!/usr/bin/perl
# The limits counted in Redis (tenant_redis): every case of
# t/060-ratelimit.t run again, with a real redis-server, and the same
# answers (429s, problem bodies, Retry-After, RateLimit headers, refunds,
# two workers sharing one limit exactly, reloads, a stepped wall clock),
# but where the file says how Redis differs: a new rate is a new key (the
# rate is in the key's name), the states live in Redis with a TTL instead
# of the zone.  And: every answer came from Redis or the local
# over-limit hold, none from a fallback ($tenant_ratelimit_source).
#
# Failure semantics (Redis down, stalled, slow): t/063-redis-faults.t;
# several instances: t/064-redis-scale.t.

use strict;
use warnings;
use FindBin;

$ENV{T060_REDIS} = 1;
my $file = "$FindBin::Bin/060-ratelimit.t";
do $file;
die $@ if $@;
