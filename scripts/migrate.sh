#!/usr/bin/env bash
# Applies the pending migrations/*.sql to $DATABASE_URL, in filename order.
#
#   DATABASE_URL=postgresql://... scripts/migrate.sh [MIGRATIONS_DIR]
#
# - Each file runs in its own transaction together with its record in
#   public.schema_migrations (filename, checksum, applied_at): it is applied
#   whole and recorded, or not at all.  Files therefore must not contain
#   BEGIN/COMMIT themselves (nor CREATE INDEX CONCURRENTLY).
# - Everything happens in one psql session holding a session-level
#   advisory lock, so concurrent runs serialize: the second finds the files
#   recorded and applies nothing.
# - A file whose checksum differs from the one recorded when it was applied
#   is an error: write a new migration instead of editing an applied one.
#
# Prints one line per applied file and a summary.  Exit status: 0 on
# success, 1 on a failed or changed migration, 2 on a usage error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$here/../migrations}
lock_key=7263521                # pg_advisory_lock key of this script

die() {
    echo "migrate: $1" >&2
    exit "${2:-1}"
}

[ -n "${DATABASE_URL:-}" ] ||
    die "DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)" 2
[ -d "$dir" ] || die "no migrations directory $dir" 2
command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)" 2
dir=$(cd "$dir" && pwd)

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


# The psql script.  Output of the migrations themselves goes to /dev/null;
# the @@ lines (\echo) report progress to the loop below.
script() {
    local path name sum

    cat <<EOF
\\set ON_ERROR_STOP 1
\\o /dev/null
SET client_min_messages = warning;
SELECT pg_advisory_lock($lock_key);
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    filename    text        PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
EOF

    for path in "${files[@]}"; do
        name=$(basename "$path")
        sum=$(sha256sum "$path" | cut -d' ' -f1)

        cat <<EOF
SELECT count(*) = 1 AS applied,
       coalesce(bool_or(checksum <> '$sum'), false) AS changed,
       coalesce(max(checksum), '') AS old_sum
  FROM public.schema_migrations WHERE filename = '$name' \\gset
\\if :changed
\\echo @@changed $name :old_sum $sum
\\q
\\elif :applied
\\echo @@skipped $name
\\else
\\echo @@start $name
BEGIN;
\\i $(q "$path")
INSERT INTO public.schema_migrations (filename, checksum)
VALUES ('$name', '$sum');
COMMIT;
\\echo @@applied $name
\\endif
EOF
    done

    echo "SELECT pg_advisory_unlock($lock_key);"
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

applied=0
skipped=0
current=""
finished=0
changed=""

while IFS= read -r line; do
    case $line in
    "@@start "*)    current=${line#@@start } ;;
    "@@applied "*)  echo "migrate: applied ${line#@@applied }"
                    applied=$((applied + 1)); current="" ;;
    "@@skipped "*)  skipped=$((skipped + 1)) ;;
    "@@changed "*)  changed=${line#@@changed } ;;
    "@@done")       finished=1 ;;
    "@@psql-exit "*) status=${line#@@psql-exit } ;;
    *)              echo "$line" ;;
    esac
done < <(
    rc=0
    script | psql -X -q -d "$DATABASE_URL" -f - || rc=$?
    echo "@@psql-exit $rc"
)

if [ -n "$changed" ]; then
    set -- $changed
    die "$1 was changed after it was applied (recorded checksum $2, file now $3); add a new migration instead of editing an applied one"
fi

if [ "${status:-1}" -ne 0 ] || [ "$finished" -ne 1 ]; then
    if [ -n "$current" ]; then
        die "$current failed and was rolled back ($applied applied before it)"
    fi
    die "psql failed (exit ${status:-?}); $applied applied"
fi

echo "migrate: $applied applied, $skipped already applied"
