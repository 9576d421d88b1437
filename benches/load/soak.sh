#!/usr/bin/env bash
# Soak, as RELIABILITY.md reports it: `aegis serve` (release, SQLite) under a steady,
# realistic mix for an hour — remote write at 20,000 samples/s, Loki pushes of 200 lines/s,
# 50 policy evaluations/s (each answered after its decision is committed), a readiness
# probe every second — printing the server's memory, open descriptors, threads and the
# latency of evaluations and writes every 10 minutes. Afterwards the decision audit chain
# must verify.
# Usage: benches/load/soak.sh [minutes] [mark-minutes]
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-60}"
mark="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/aegis-target}"
cargo build --release --locked -q -p aegis -p aegis-benches --bins
bin="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
port="${AEGIS_BENCH_PORT:-3919}"
password="correct horse battery staple $$"
export AEGIS_DATABASE_URL="sqlite://$work/aegis.db"
export AEGIS_JWT_SECRET="soak-jwt-secret-soak-jwt-secret-0123456789"
export AEGIS_LISTEN="127.0.0.1:$port"
export AEGIS_LOG_LEVEL=warn
# One service token sends everything: its per-caller budget must cover 50 evaluations/s.
export AEGIS_RATE_LIMIT_PER_MINUTE=1000000
echo "$password" | "$bin/aegis" user create --email soak@example.com --role admin --password-stdin
"$bin/aegis" serve &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://$AEGIS_LISTEN/health" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
admin="$(curl -fs -H 'content-type: application/json' \
    -d "{\"email\": \"soak@example.com\", \"password\": \"$password\"}" \
    "http://$AEGIS_LISTEN/api/v1/auth/login" | json access_token)"
service="$(curl -fs -H 'content-type: application/json' -H "authorization: Bearer $admin" \
    -d '{"name": "soak"}' "http://$AEGIS_LISTEN/api/v1/service-tokens" | json token)"

"$bin/soak" --url "http://$AEGIS_LISTEN" --pid "$pid" --token "$service" --ingest-token "$service" \
    --minutes "$minutes" --mark-minutes "$mark" --rate 20000 --evaluate 50
kill -TERM "$pid"
wait "$pid" || true
trap 'rm -rf "$work"' EXIT
"$bin/aegis" audit verify
