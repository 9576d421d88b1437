#!/usr/bin/env bash
# Load benchmark of the HTTP front door, as BENCHMARKS.md reports it:
#   1. authenticated POST /api/v1/policy/evaluate with wrk (JWT of a service account,
#      access check through the policy engine, evaluation, decision audit);
#   2. afterwards, every decision must be in the audit chain (`aegis audit verify`);
#   3. login (argon2id at OWASP cost) at 20 concurrent connections.
# Usage: benches/load/run.sh [evaluate-seconds] [connections]. Needs wrk and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-30}"
connections="${2:-64}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/aegis-target}"
cargo build --release --locked -q
bin="$CARGO_TARGET_DIR/release/aegis"

work="$(mktemp -d)"
port="${AEGIS_BENCH_PORT:-3917}"
password="load-test-password-$$"
export AEGIS_DATABASE_URL="sqlite://$work/aegis.db"
export AEGIS_JWT_SECRET="load-test-secret-load-test-secret-0123456789"
export AEGIS_LISTEN="127.0.0.1:$port"
# The benchmark measures throughput, not the limiter: budgets far above what it sends.
export AEGIS_RATE_LIMIT_PER_MINUTE=1000000000
export AEGIS_LOGIN_LIMIT_PER_ACCOUNT_PER_MINUTE=1000000
export AEGIS_LOGIN_LIMIT_PER_IP_PER_MINUTE=1000000
export AEGIS_LOG_LEVEL=warn

echo "$password" | "$bin" user create --email bench@example.com --role service --password-stdin
"$bin" serve &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://$AEGIS_LISTEN/health" >/dev/null && break; sleep 0.1; done

login_body="{\"email\": \"bench@example.com\", \"password\": \"$password\"}"
token="$(curl -fs -H 'content-type: application/json' -d "$login_body" "http://$AEGIS_LISTEN/api/v1/auth/login" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

echo "== evaluate: ${duration}s, $connections connections, 2 wrk threads"
AEGIS_TOKEN="$token" wrk -t2 -c"$connections" -d"${duration}s" --latency \
  -s benches/load/evaluate.lua "http://$AEGIS_LISTEN/api/v1/policy/evaluate" | tee "$work/wrk.txt"

echo "== login: 20s, 20 connections"
AEGIS_EMAIL=bench@example.com AEGIS_PASSWORD="$password" wrk -t2 -c20 -d20s --latency \
  -s benches/load/login.lua "http://$AEGIS_LISTEN/api/v1/auth/login"

# Stop gracefully (flushes the decision queue), then count and verify the chain.
kill -TERM "$pid"
wait "$pid" || true
sent="$(awk '/^requests /{print $2}' "$work/wrk.txt" | tr -d ,)"
recorded="$(sqlite3 "$work/aegis.db" "SELECT COUNT(*) FROM policy_audit_logs WHERE action = 'scale_up'")"
echo "== audit: $sent evaluate responses, $recorded scale_up decisions recorded"
"$bin" audit verify
if [ "$recorded" -lt "$sent" ]; then
  echo "FAIL: decisions missing from the audit log" >&2
  exit 1
fi
