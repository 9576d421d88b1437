#!/usr/bin/env bash
# Remote write end to end: the same bodies over HTTP to Aegis, to Prometheus
# (--web.enable-remote-write-receiver) and to VictoriaMetrics, each measured in samples per
# CPU-second of the receiving process. Needs Debian's prometheus and victoria-metrics.
# Usage: benches/load/remote_write.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-20}"
connections="${2:-4}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/aegis-target}"
cargo build --release --locked -q -p aegis -p aegis-benches --bin aegis --bin remote_write_load
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
wait_up() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 never came up" >&2; exit 1; }

# Aegis, with a service token.
password="remote write drill $$"
export AEGIS_DATABASE_URL="sqlite://$work/aegis.db" AEGIS_LISTEN=127.0.0.1:3931 AEGIS_LOG_LEVEL=warn
export AEGIS_JWT_SECRET="load-secret-load-secret-load-secret-0123"
echo "$password" | "$bin/aegis" user create --email rwbench@example.com --role admin --password-stdin >/dev/null
"$bin/aegis" serve & pids+=($!); aegis_pid=$!
wait_up http://127.0.0.1:3931/health
admin="$(curl -fs -H 'content-type: application/json' -d "{\"email\":\"rwbench@example.com\",\"password\":\"$password\"}" \
  http://127.0.0.1:3931/api/v1/auth/login | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
token="$(curl -fs -H "authorization: Bearer $admin" -H 'content-type: application/json' -d '{"name":"load"}' \
  http://127.0.0.1:3931/api/v1/service-tokens | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

prometheus --config.file=/dev/null --storage.tsdb.path="$work/prom" --web.listen-address=127.0.0.1:3932 \
  --web.enable-remote-write-receiver >/dev/null 2>&1 & pids+=($!); prom_pid=$!
victoria-metrics -storageDataPath="$work/vm" -httpListenAddr=127.0.0.1:3933 >/dev/null 2>&1 & pids+=($!); vm_pid=$!
wait_up http://127.0.0.1:3932/-/ready
wait_up http://127.0.0.1:3933/health

"$bin/remote_write_load" http://127.0.0.1:3931/api/v1/write "$aegis_pid" "$seconds" "$connections" "$token"
"$bin/remote_write_load" http://127.0.0.1:3932/api/v1/write "$prom_pid" "$seconds" "$connections"
"$bin/remote_write_load" http://127.0.0.1:3933/api/v1/write "$vm_pid" "$seconds" "$connections"
