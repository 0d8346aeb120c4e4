#!/usr/bin/env bash
# Applies the pending migrations/*.sql to $DATABASE_URL, in filename order.
#
#   DATABASE_URL=postgresql://... scripts/migrate.sh [MIGRATIONS_DIR]
#
# - Each file runs in its own transaction together with its record in
#   public.schema_migrations (filename, checksum, applied_at): it is applied
#   whole and recorded, or not at all.  Files therefore must not contain
#   BEGIN/COMMIT themselves (nor CREATE INDEX CONCURRENTLY, VACUUM, ...:
#   PostgreSQL refuses them in a transaction, and the file is rolled back).
# - That transaction first takes a transaction-scoped advisory lock
#   (pg_advisory_xact_lock), then reads the record: concurrent runs
#   serialize file by file and each file is applied once.  The lock ends
#   with the transaction, on the server connection that took it, so this
#   holds through PgBouncer in transaction mode too (a session lock would
#   be taken and released on different server connections there).
# - The waits are bounded (SET LOCAL, so nothing outlives the transaction
#   on a pooled connection): MIGRATE_LOCK_TIMEOUT (default 5s) is the
#   lock_timeout of the migrations' statements, e.g. behind a long
#   transaction that holds a lock on a table a migration alters;
#   MIGRATE_STATEMENT_TIMEOUT (default 5min) is their statement_timeout
#   and idle_in_transaction_session_timeout, and bounds the wait for
#   another run's lock.  Either ends the run with one line naming it, the
#   file rolled back.  Values: a positive integer with ms, s, min or h.
# - The password (in the URL, its password= parameter, or a key=value
#   string's password=) goes to psql in PGPASSWORD, and psql's command line
#   gets the connection string without it: the command lines of processes
#   are readable by every user (ps), their environment by their own user.
#   Error messages never repeat DATABASE_URL.
# - A file whose checksum differs from the one recorded when it was applied
#   is an error: write a new migration instead of editing an applied one.
#
# Prints one line per applied file and a summary.  Exit status: 0 on
# success, 1 on a failed or changed migration, 2 on a usage error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$here/../migrations}
lock_key=7263521                # pg_advisory_xact_lock key of this script

die() {
    echo "migrate: $1" >&2
    exit "${2:-1}"
}

[ -n "${DATABASE_URL:-}" ] ||
    die "DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)" 2
[ -d "$dir" ] || die "no migrations directory $dir" 2
command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)" 2
dir=$(cd "$dir" && pwd)

timeout_ok() {
    [[ $1 =~ ^[1-9][0-9]{0,8}(ms|s|min|h)?$ ]]
}

lock_timeout=${MIGRATE_LOCK_TIMEOUT:-5s}
timeout_ok "$lock_timeout" ||
    die "MIGRATE_LOCK_TIMEOUT: must be a positive number with ms, s, min or h, e.g. 5s (got \"$lock_timeout\")" 2
statement_timeout=${MIGRATE_STATEMENT_TIMEOUT:-5min}
timeout_ok "$statement_timeout" ||
    die "MIGRATE_STATEMENT_TIMEOUT: must be a positive number with ms, s, min or h, e.g. 5min (got \"$statement_timeout\")" 2


# DATABASE_URL split into the connection string psql gets on its command
# line, without the password, and the password: "conninfo\n" and then
# "+password" when there is one.  Read from the environment, never from a
# command line; a malformed value is reported without repeating it.
split_url() {
    perl -e '
        use strict;
        use warnings;

        my $url = $ENV{DATABASE_URL};
        my ($conninfo, $password);

        sub refuse {
            print STDERR "migrate: DATABASE_URL: $_[0]\n";
            exit 2;
        }

        sub decode {
            my ($s) = @_;
            refuse("invalid percent-encoding") if $s =~ /%(?![0-9A-Fa-f]{2})/;
            $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
            refuse("%00 in the password") if $s =~ /\0/;
            return $s;
        }

        refuse("contains control characters") if $url =~ /[[:cntrl:]]/;

        if ($url =~ m{^(postgres(?:ql)?://)(.*)\z}s) {
            # as libpq: user[:password]@ before the first "/", then the
            # parameters after "?", the last password= winning
            my ($scheme, $rest) = ($1, $2);
            if ($rest =~ m{^([^@/]*)\@(.*)\z}s) {
                my ($user, $after) = ($1, $2);
                ($user, $password) = ($1, decode($2)) if $user =~ /^([^:]*):(.*)\z/s;
                $rest = "$user\@$after";
            }
            # libpq would read "user:pa/ss@host" as a host, and report it
            refuse("\"@\" after a \"/\": percent-encode the password (\"/\" is %2F, \"@\" is %40)")
                if $rest =~ m{^[^?]*/[^?]*\@};
            if ($rest =~ /^([^?]*)\?(.*)\z/s) {
                my ($base, @keep) = ($1);
                for my $p (split /&/, $2, -1) {
                    my ($k, $v) = split /=/, $p, 2;
                    if (defined $v && decode($k) eq "password") {
                        $password = decode($v);
                    } else {
                        push @keep, $p;
                    }
                }
                $rest = @keep ? "$base?" . join("&", @keep) : $base;
            }
            $conninfo = $scheme . $rest;

        } else {
            # key = value, a value quoted in single quotes or not, with
            # backslash escapes (libpq conninfo_parse)
            $conninfo = "";
            while ($url =~ /\G(\s*)([^\s=]+)(\s*=\s*)(\x27(?:[^\x27\\]|\\.)*\x27|(?:[^\s\\]|\\.)*)/gcs) {
                my ($sp, $k, $eq, $v) = ($1, $2, $3, $4);
                if ($k ne "password") {
                    $conninfo .= "$sp$k$eq$v";
                    next;
                }
                $v = $1 if $v =~ /^\x27(.*)\x27\z/s;
                ($password = $v) =~ s/\\(.)/$1/gs;
            }
            refuse("must be a postgresql:// URL or a libpq key=value string")
                unless $url =~ /\G\s*\z/gc;
        }

        print "$conninfo\n", defined $password ? "+$password" : "";
    '
}

# Glob results are sorted; LC_ALL=C makes the order byte order.
export LC_ALL=C
shopt -s nullglob
files=("$dir"/*.sql)
shopt -u nullglob
[ "${#files[@]}" -gt 0 ] || die "no migrations in $dir" 2


# psql argument quoting: '...' with ' doubled.
q() {
    printf "'%s'" "${1//\'/\'\'}"
}


# Opens the transaction of file $1 ("" for the setup): the waits bounded,
# then the lock, after which the file's record can be trusted.  The
# advisory wait is bounded by statement_timeout alone.
begin() {
    cat <<EOF
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL statement_timeout = '$statement_timeout';
SET LOCAL idle_in_transaction_session_timeout = '$statement_timeout';
SET LOCAL lock_timeout = 0;
\\echo @@wait $1
SELECT pg_advisory_xact_lock($lock_key);
\\echo @@locked
SET LOCAL lock_timeout = '$lock_timeout';
EOF
}

# The psql script.  Output of the migrations themselves goes to /dev/null;
# the @@ lines (\echo) report progress to the loop below.  VERBOSITY
# verbose: errors carry their SQLSTATE, whatever the server's language.
script() {
    local path name sum

    cat <<EOF
\\set ON_ERROR_STOP 1
\\set VERBOSITY verbose
\\o /dev/null
EOF
    begin ""
    cat <<EOF
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    filename    text        PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMIT;
EOF

    for path in "${files[@]}"; do
        name=$(basename "$path")
        sum=$(sha256sum "$path" | cut -d' ' -f1)

        begin "$name"
        cat <<EOF
SELECT count(*) = 1 AS applied,
       coalesce(bool_or(checksum <> '$sum'), false) AS changed,
       coalesce(max(checksum), '') AS old_sum
  FROM public.schema_migrations WHERE filename = '$name' \\gset
\\if :changed
\\echo @@changed $name :old_sum $sum
ROLLBACK;
\\q
\\elif :applied
ROLLBACK;
\\echo @@skipped $name
\\else
\\echo @@start $name
\\i $(q "$path")
INSERT INTO public.schema_migrations (filename, checksum)
VALUES ('$name', '$sum');
COMMIT;
\\echo @@applied $name
\\endif
EOF
    done

    echo "\\echo @@done"
}


for path in "${files[@]}"; do
    name=$(basename "$path")
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*\.sql$ ]] ||
        die "bad migration file name \"$name\" (use [A-Za-z0-9_.-])" 2
    if grep -Eiq '^[[:space:]]*(BEGIN|COMMIT|ROLLBACK|START[[:space:]]+TRANSACTION)[[:space:]]*;' "$path"; then
        die "$name: contains its own BEGIN/COMMIT; migrate.sh wraps each file in a transaction" 2
    fi
done

# Checked before anything is sent: a refusal here is exit 2.
conn=$(split_url && echo .) || exit 2
conninfo=${conn%%$'\n'*}
password=${conn#*$'\n'}
password=${password%.}

# psql with the password in its environment only.
run_psql() {
    if [ -n "$password" ]; then
        PGPASSWORD=${password#+} psql "$@"
    else
        psql "$@"
    fi
}

applied=0
skipped=0
current=""
phase=""
sqlstate=""
finished=0
changed=""

# psql's errors come on the same pipe: shown, and their SQLSTATE kept.
while IFS= read -r line; do
    case $line in
    "@@wait"*)      current=${line#@@wait}; current=${current# }
                    phase=wait ;;
    "@@locked")     phase=locked ;;
    "@@start "*)    current=${line#@@start }; phase=apply ;;
    "@@applied "*)  echo "migrate: applied ${line#@@applied }"
                    applied=$((applied + 1)); current=""; phase="" ;;
    "@@skipped "*)  skipped=$((skipped + 1)); current=""; phase="" ;;
    "@@changed "*)  changed=${line#@@changed } ;;
    "@@done")       finished=1 ;;
    "@@psql-exit "*) status=${line#@@psql-exit } ;;
    "LOCATION: "*)  ;;
    *)              if [ -z "$sqlstate" ] &&
                       [[ $line =~ (ERROR|FATAL):\ +([0-9A-Z]{5}): ]]; then
                        sqlstate=${BASH_REMATCH[2]}
                    fi
                    echo "$line" >&2 ;;
    esac
done < <(
    rc=0
    script | run_psql -X -q -d "$conninfo" -f - 2>&1 || rc=$?
    echo "@@psql-exit $rc"
)

if [ -n "$changed" ]; then
    set -- $changed
    die "$1 was changed after it was applied (recorded checksum $2, file now $3); add a new migration instead of editing an applied one"
fi

if [ "${status:-1}" -ne 0 ] || [ "$finished" -ne 1 ]; then
    what=${current:-the migrations table}
    case $phase:$sqlstate in
    *:55P03)
        die "$what waited longer than MIGRATE_LOCK_TIMEOUT ($lock_timeout) for a lock that another transaction holds (see pg_locks and pg_stat_activity); rolled back, nothing of it applied ($applied applied before it)" ;;
    wait:57014)
        die "another migrate.sh run held the migration lock (advisory lock $lock_key) longer than MIGRATE_STATEMENT_TIMEOUT ($statement_timeout); gave up waiting ($applied applied before)" ;;
    *:57014)
        die "$what: a statement ran longer than MIGRATE_STATEMENT_TIMEOUT ($statement_timeout) or was canceled; rolled back, nothing of it applied ($applied applied before it)" ;;
    apply:*)
        die "$current failed and was rolled back ($applied applied before it)" ;;
    esac
    die "psql failed (exit ${status:-?}); $applied applied"
fi

echo "migrate: $applied applied, $skipped already applied"
