#!/usr/bin/env bash
# `make run`: the gateway in the foreground, ready to try.
#
# Uses the environment of the deployment guide (see scripts/render-conf.sh)
# and fills what is missing with a local demo setup:
#
#   DATABASE_URL unset     the embedded PostgreSQL (scripts/pg-local.sh,
#                          .local/pg), with two demo tenants seeded
#   no CLERK_JWT_KEY       a demo RSA key pair in .local/demo (made once):
#   nor CLERK_JWKS_FILE    mint tokens with scripts/mint-token.pl
#   ENCRYPTION_KEY or      generated once into .local/demo/secrets (0600)
#   CRON_SECRET unset
#
# then applies the migrations, renders RUN_DIR/nginx.conf (default
# .local/run), checks it with nginx -t and execs nginx in the foreground.
# Ctrl-C stops the gateway; the embedded PostgreSQL keeps running
# (scripts/stop.sh stops it).  SEED_DEMO=1 seeds the demo tenants into a
# DATABASE_URL of your own as well.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cwd=$PWD
cd "$root"

demo_dir=$root/.local/demo
export RUN_DIR=${RUN_DIR:-$root/.local/run}
case $RUN_DIR in /*) ;; *) RUN_DIR=$cwd/$RUN_DIR ;; esac
conf=$RUN_DIR/nginx.conf

say() {
    printf 'run: %s\n' "$*"
}

die() {
    printf 'run: %s\n' "$*" >&2
    exit 1
}

# A path as the user can type it from where make was started.
shown() {
    case $1 in
        "$cwd"/*) printf '%s' "${1#"$cwd"/}" ;;
        *)        printf '%s' "$1" ;;
    esac
}

trap 'echo; say "interrupted; the embedded PostgreSQL (if started) keeps running: scripts/stop.sh stops it"; exit 130' INT TERM

for tool in nginx openssl psql perl; do
    command -v "$tool" >/dev/null || die "$tool not found (make deps)"
done

pid_file=$RUN_DIR/nginx.pid
if [ -s "$pid_file" ]; then
    pid=$(cat "$pid_file")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
       && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
        die "a gateway is already running (pid $pid, $(shown "$RUN_DIR")); scripts/stop.sh stops it"
    fi
fi
# Left over by a killed nginx: its unix socket would block the bind.
rm -f "$pid_file"

# .local is shared with pg-local.sh and the nginx workers: 0755.
(umask 022 && mkdir -p "$root/.local")
(umask 077 && mkdir -p "$demo_dir")


# ---- database --------------------------------------------------------------

embedded=
if [ -z "${DATABASE_URL:-}" ]; then
    say "DATABASE_URL unset: using the embedded PostgreSQL (.local/pg)"
    url=$(scripts/pg-local.sh start) || die "the embedded PostgreSQL did not start"
    DATABASE_URL=$(tail -n 1 <<< "$url")
    embedded=1
fi
export DATABASE_URL

scripts/migrate.sh || die "migrations failed (see above)"


# ---- demo keys and secrets -------------------------------------------------

demo_key=
if [ -z "${CLERK_JWT_KEY:-}" ] && [ -z "${CLERK_JWKS_FILE:-}" ]; then
    demo_key=$demo_dir/jwt-private.pem
    if [ ! -s "$demo_key" ] || [ ! -s "$demo_dir/jwt-public.pem" ]; then
        (umask 077 &&
         openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
             -out "$demo_key" 2>/dev/null &&
         openssl pkey -in "$demo_key" -pubout -out "$demo_dir/jwt-public.pem") \
            || die "could not generate the demo key pair in $(shown "$demo_dir")"
        say "DEMO: generated an RSA key pair in $(shown "$demo_dir") (instead of Clerk's key)"
    else
        say "DEMO: using the RSA key pair in $(shown "$demo_dir") (instead of Clerk's key)"
    fi
    CLERK_JWT_KEY=$(cat "$demo_dir/jwt-public.pem")
    export CLERK_JWT_KEY
fi

if [ -z "${ENCRYPTION_KEY:-}" ] || [ -z "${CRON_SECRET:-}" ]; then
    secrets=$demo_dir/secrets
    if [ ! -s "$secrets" ]; then
        (umask 077 && {
            printf '# Demo secrets for scripts/run.sh: local use only.\n'
            printf 'ENCRYPTION_KEY=%s\n' "$(openssl rand -hex 32)"
            printf 'CRON_SECRET=%s\n' "$(openssl rand -hex 32)"
        } > "$secrets") || die "could not write $(shown "$secrets")"
        say "DEMO: generated ENCRYPTION_KEY and CRON_SECRET into $(shown "$secrets")"
    fi
    # Read, not sourced: only the two names, only their expected shapes.
    while IFS='=' read -r name value; do
        case $name in
            ENCRYPTION_KEY|CRON_SECRET)
                [[ $value =~ ^[0-9A-Za-z]+$ ]] || continue
                if [ -z "${!name:-}" ]; then
                    export "$name=$value"
                    say "DEMO: $name from $(shown "$secrets")"
                fi ;;
        esac
    done < "$secrets"
fi


# ---- demo tenants ----------------------------------------------------------

seeded=
if [ -n "$embedded" ] || [ "${SEED_DEMO:-0}" = 1 ]; then
    # Created only when absent (a demo tenant you suspended stays so).
    psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" >/dev/null <<'SQL' \
        || die "seeding the demo tenants failed (see above)"
SET client_min_messages = warning;
DO $seed$
DECLARE
    d  record;
    t  public.tenants;
BEGIN
    FOR d IN
        SELECT * FROM (VALUES
            ('Demo Pro',     'demo-pro',     'org_demo_pro',     'professional'),
            ('Demo Starter', 'demo-starter', 'org_demo_starter', 'starter')
        ) AS v(name, slug, org, tier)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM public.tenants
                       WHERE clerk_organization_id = d.org) THEN
            t := public.create_tenant(d.name, d.slug, d.org, d.tier,
                                      'owner@' || d.slug || '.example');
            UPDATE public.tenants SET subscription_status = 'active'
             WHERE id = t.id;
        END IF;
    END LOOP;
END
$seed$;
SQL
    seeded=$(psql -X -q -At -d "$DATABASE_URL" -c "
        SELECT string_agg(format('%s (%s, %s)', clerk_organization_id,
                                 subscription_tier, subscription_status),
                          ', ' ORDER BY clerk_organization_id)
          FROM public.tenants
         WHERE clerk_organization_id IN ('org_demo_pro', 'org_demo_starter')")
    say "demo tenants: $seeded"
fi


# ---- configuration ---------------------------------------------------------

scripts/render-conf.sh "$conf" || exit 1
nginx -t -q -p "$RUN_DIR" -e stderr -c "$conf" -g 'daemon off;' \
    || die "nginx -t refused $(shown "$conf") (see above)"

port=$(sed -n 's/^ *listen  *\([0-9]*\);.*/\1/p' "$conf" | head -n 1)
base=http://127.0.0.1:$port


# ---- banner ----------------------------------------------------------------

key_arg=$(shown "$demo_dir/jwt-private.pem")
mint=$(shown "$root/scripts/mint-token.pl")

echo
echo "  CapLiquify gateway on $base  (Ctrl-C stops it)"
echo
echo "  health:  curl $base/api/health"
if [ -n "$demo_key" ]; then
    echo
    echo "  DEMO MODE: the key pair and secrets in $(shown "$demo_dir") are for local use only."
    echo "  mint a token:"
    echo "    $mint --key $key_arg --org org_demo_starter"
    if [ -n "$seeded" ]; then
        echo
        echo "  org_demo_pro (professional) reaches the API -> 200, the demo upstream echoes the signed headers:"
        echo "    curl -i $base/api/products -H \"Authorization: Bearer \$($mint --key $key_arg --org org_demo_pro)\" -H 'X-Organization-ID: org_demo_pro'"
        echo
        echo "  org_demo_starter (starter) has no ai_forecasting -> 403 with an upgradeUrl:"
        echo "    curl -i $base/api/forecasts/ai -H \"Authorization: Bearer \$($mint --key $key_arg --org org_demo_starter)\" -H 'X-Organization-ID: org_demo_starter'"
    fi
fi
if [ -n "$embedded" ]; then
    echo
    echo "  database: the embedded PostgreSQL keeps running after Ctrl-C; scripts/stop.sh stops it"
    echo "            psql '$DATABASE_URL'"
fi
echo

trap - INT TERM
exec nginx -p "$RUN_DIR" -e stderr -c "$conf" -g 'daemon off;'
