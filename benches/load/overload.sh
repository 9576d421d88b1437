#!/usr/bin/env bash
# Overload, as RELIABILITY.md reports it:
#   1. the sustainable remote-write rate of `aegis serve` (release, SQLite, the engine
#      running): `remote_write_load` in a closed loop (each sender waits for its answer and
#      retries 503s) for 20 s over 4 connections;
#   2. three times that rate offered open-loop for 60 s by `ingest_overload` over 32
#      connections (Prometheus-like senders, as many shards as Prometheus starts under
#      pressure: a refused body is kept and retried with backoff), with the server's memory
#      sampled every 200 ms, until the senders' backlog has drained; every offered sample
#      must be accepted and counted by the server, and every answer must be 2xx, 429 or 503.
# Usage: benches/load/overload.sh [multiple] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
multiple="${1:-3}"
seconds="${2:-60}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/aegis-target}"
cargo build --release --locked -q -p aegis -p aegis-benches --bins
bin="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
port="${AEGIS_BENCH_PORT:-3918}"
token="overload-ingest-token-$$-0123456789"
AEGIS_DATABASE_URL="sqlite://$work/aegis.db" AEGIS_LISTEN="127.0.0.1:$port" \
AEGIS_INGEST_TOKEN="$token" AEGIS_LOG_LEVEL=warn "$bin/aegis" serve &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

echo "== sustainable rate (closed loop, 20 s, 4 connections)"
line="$("$bin/remote_write_load" "http://127.0.0.1:$port/api/v1/write" "$pid" 20 4 "$token")"
echo "$line"
sustainable="$(echo "$line" | sed -E 's/.* = ([0-9.]+) M samples\/s;.*/\1/')"
rate="$(python3 -c "print(int($sustainable * 1e6 * $multiple))")"
echo "== ${multiple}x = $rate samples/s offered open-loop for ${seconds} s"
"$bin/ingest_overload" --url "http://127.0.0.1:$port/api/v1/write" --pid "$pid" \
    --rate "$rate" --seconds "$seconds" --connections 32 --token "$token" \
    --metrics "http://127.0.0.1:$port/metrics"
echo "== server after the run"
grep -E 'VmRSS|VmHWM|Threads' "/proc/$pid/status"
echo "open fds: $(ls "/proc/$pid/fd" | wc -l)"
