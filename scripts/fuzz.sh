#!/usr/bin/env bash
# Runs libFuzzer targets built by `make fuzz-build`, one after the other.
#
#   scripts/fuzz.sh SECONDS [NAME...]     (default: every t/fuzz/fuzz_*.c)
#
# Each target runs SECONDS (FUZZ_SECONDS_<name> in the environment
# overrides it for one target) on build/fuzz/corpus-<name>: the seeds of
# t/fuzz/corpus/<name>/ copied in, with what earlier runs found; its
# dictionary t/fuzz/<name>.dict if there is one.  Crash inputs go to
# build/fuzz/artifacts-<name>/, the output to build/fuzz/<name>.log.
# Nothing is written into t/.  Prints a line per target (executions,
# coverage), then "N passed, M failed"; exits 1 if any target crashed.
set -uo pipefail

cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { echo "usage: $0 SECONDS [NAME...]" >&2; exit 2; }

seconds=$1
shift

if [ $# -eq 0 ]; then
    set -- $(ls t/fuzz/fuzz_*.c | sed 's|.*/fuzz_\(.*\)\.c|\1|')
fi

out=${BUILD:-build}/fuzz
passed=0
failed=0

for name in "$@"; do
    bin=$out/fuzz_$name
    corpus=$out/corpus-$name
    artifacts=$out/artifacts-$name
    log=$out/$name.log

    if [ ! -x "$bin" ]; then
        echo "fuzz_$name: FAILED: $bin is not built (make fuzz-build)"
        failed=$((failed + 1))
        continue
    fi

    mkdir -p "$corpus" "$artifacts"
    cp t/fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null

    var=FUZZ_SECONDS_$name
    secs=${!var:-$seconds}

    args=(-max_total_time="$secs" -print_final_stats=1 -timeout=10
          -rss_limit_mb=2048 -artifact_prefix="$artifacts/")

    [ -f t/fuzz/"$name".dict ] && args+=(-dict=t/fuzz/"$name".dict)

    # tokens up to TENANT_JWT_MAX_LEN and beyond; RSA keys up to 8192 bits
    case $name in
    jwt)  args+=(-max_len=9000) ;;
    jwks) args+=(-max_len=8192) ;;
    esac

    "$bin" "${args[@]}" "$corpus" > "$log" 2>&1
    rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 \
          | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[bKM]?b?')

    if [ $rc -eq 0 ]; then
        echo "fuzz_$name: ok: ${execs:-?} execs in ${secs}s, ${cov:-cov: ?}"
        passed=$((passed + 1))

    else
        echo "fuzz_$name: FAILED (exit $rc): ${execs:-?} execs," \
             "${cov:-cov: ?}; log $log"
        grep -E 'ERROR|SUMMARY|^    #[0-9]+ .* in [^_]|Test unit written' \
            "$log" | grep -v 'in fuzzer::' | head -20 | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done

echo "$passed passed, $failed failed"

[ $failed -eq 0 ]
