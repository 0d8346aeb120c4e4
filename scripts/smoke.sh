#!/usr/bin/env bash
# The deployment guide's smoke tests (Step 4 and Step 5) against a running
# gateway, one pass/fail line per step.
#
#   BASE_URL       the gateway (default http://127.0.0.1:8080, make run's)
#   ADMIN_TOKEN    a token whose metadata.role is admin
#   TENANT_TOKEN   a token of the organization of the professional tenant
#   STARTER_TOKEN  a token of the organization of the starter tenant
#   JWT_KEY        instead of the three tokens: the private key that signs
#                  them (default .local/demo/jwt-private.pem, make run's
#                  demo key, when it exists)
#   JWT_KID        the kid of the tokens minted with JWT_KEY (default none;
#                  needed when the gateway's keys come from a JWKS)
#   SMOKE_ORG_PROFESSIONAL, SMOKE_ORG_STARTER
#                  the two organization ids; by default the active
#                  organization of TENANT_TOKEN and STARTER_TOKEN (Clerk
#                  v1 "org_id", v2 "o":{"id"}), or, for tokens minted with
#                  JWT_KEY, org_smoke_test and org_smoke_starter
#
# Creating the tenants is idempotent (200: they exist already, or 409 if
# changed since); exit 0
# only when every step passed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${BASE_URL:-http://127.0.0.1:8080}
key=${JWT_KEY:-$root/.local/demo/jwt-private.pem}

mint() {
    "$root/scripts/mint-token.pl" --key "$key" --ttl 600 \
        ${JWT_KID:+--kid "$JWT_KID"} "$@"
}

# The active organization of a token, as the gateway reads it (src/
# tenant_jwt.c): "v":2 tokens have "o":{"id"}, the others "org_id".  The
# payload is only decoded here, not verified: the gateway verifies it.
token_org() {
    perl -MMIME::Base64=decode_base64url -MJSON::PP -e '
        my (undef, $p) = split /\./, $ARGV[0];
        my $c = eval { JSON::PP->new->decode(decode_base64url($p // "")) };
        exit 1 unless ref $c eq "HASH";
        my $v = $c->{v} // 1;
        my $org = $v == 2 ? (ref $c->{o} eq "HASH" ? $c->{o}{id} : undef)
                          : $c->{org_id};
        exit 1 unless defined $org && !ref $org && length $org;
        print $org;
    ' "$1"
}

if [ -z "${ADMIN_TOKEN:-}${TENANT_TOKEN:-}${STARTER_TOKEN:-}" ] && [ -f "$key" ]; then
    org_pro=${SMOKE_ORG_PROFESSIONAL:-org_smoke_test}
    org_starter=${SMOKE_ORG_STARTER:-org_smoke_starter}
    ADMIN_TOKEN=$(mint --sub user_smoke_admin --metadata-role admin)
    TENANT_TOKEN=$(mint --sub user_smoke --org "$org_pro")
    STARTER_TOKEN=$(mint --sub user_smoke_starter --org "$org_starter")
fi

for v in ADMIN_TOKEN TENANT_TOKEN STARTER_TOKEN; do
    [ -n "${!v:-}" ] || { echo "smoke: $v is not set (nor JWT_KEY)" >&2; exit 2; }
done

org_pro=${SMOKE_ORG_PROFESSIONAL:-$(token_org "$TENANT_TOKEN")} \
    || { echo "smoke: TENANT_TOKEN has no organization (set SMOKE_ORG_PROFESSIONAL)" >&2; exit 2; }
org_starter=${SMOKE_ORG_STARTER:-$(token_org "$STARTER_TOKEN")} \
    || { echo "smoke: STARTER_TOKEN has no organization (set SMOKE_ORG_STARTER)" >&2; exit 2; }

# a JSON string: the ids go into the create bodies
json_str() {
    perl -MJSON::PP -e 'print JSON::PP->new->allow_nonref->encode($ARGV[0])' "$1"
}

printf 'organizations: %s (professional), %s (starter)\n' "$org_pro" "$org_starter"

passed=0
failed=0

# step NAME EXPECTED_STATUS ACTUAL_STATUS BODY [PATTERN]
step() {
    local name=$1 want=$2 got=$3 body=$4 pattern=${5:-}

    if [[ " $want " == *" $got "* ]] && { [ -z "$pattern" ] || grep -Eq "$pattern" <<<"$body"; }; then
        printf 'pass  %s (%s)\n' "$name" "$got"
        passed=$((passed + 1))
    else
        printf 'FAIL  %s: expected %s%s, got %s: %.300s\n' "$name" "$want" \
            "${pattern:+ matching /$pattern/}" "$got" "$body"
        failed=$((failed + 1))
    fi
}

# req METHOD PATH TOKEN [BODY] [ORG]: sets $status and $body
req() {
    local method=$1 path=$2 token=$3 data=${4:-} org=${5:-} out
    local args=(-s -o - -w '\n%{http_code}' -X "$method" "$base$path")

    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$org" ] && args+=(-H "X-Organization-ID: $org")
    [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data "$data")

    out=$(curl "${args[@]}" 2>/dev/null) || out=$'\n000'
    status=${out##*$'\n'}
    body=${out%$'\n'*}
}

# Step 4: health
req GET /api/health ""
step "health: /api/health" 200 "$status" "$body" '"status":"healthy".*"database":"connected"'

# the platform's check (render.yaml's healthCheckPath): keys loaded
req GET /api/health/live ""
step "platform check: /api/health/live" 200 "$status" "$body" '"status":"ok".*"keys":[1-9]'

# Step 5: create the smoke-test tenant (and a starter one)
req POST /api/admin/tenants "$ADMIN_TOKEN" '{"name":"Smoke Test Tenant","slug":"smoke-test-001","clerkOrganizationId":'"$(json_str "$org_pro")"',"subscriptionTier":"professional","ownerEmail":"smoketest@capliquify.com"}'
step "create the smoke-test tenant (professional)" "201 200 409" "$status" "$body"

req POST /api/admin/tenants "$ADMIN_TOKEN" '{"name":"Smoke Starter Tenant","slug":"smoke-starter-001","clerkOrganizationId":'"$(json_str "$org_starter")"',"subscriptionTier":"starter","ownerEmail":"smoketest@capliquify.com"}'
step "create the smoke starter tenant" "201 200 409" "$status" "$body"

# query tenant data
req GET /api/products "$TENANT_TOKEN" "" "$org_pro"
step "query tenant data: /api/products" 200 "$status" "$body"

# feature flags
req GET /api/forecasts/ai "$TENANT_TOKEN" "" "$org_pro"
step "professional reaches /api/forecasts/ai" 200 "$status" "$body"

req GET /api/forecasts/ai "$STARTER_TOKEN" "" "$org_starter"
step "starter gets 403 with an upgrade URL" 403 "$status" "$body" '"upgradeUrl":"https?://'

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
