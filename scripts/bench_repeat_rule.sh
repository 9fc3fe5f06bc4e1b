#!/usr/bin/env bash
# What the repeat rule costs, measured side by side: for each gateway binary
# given, in alternating rounds, against the same two local Chroma servers:
#
#   scripts/bench_repeat_rule.sh [--rounds N] [--seconds S] BIN [BIN...]
#
# 1. one writer alternating `delete where` and `update` on one collection
#    (tests/python/conflict_chain.py): every write conflicts with the last;
# 2. the mixed load of scripts/wal_performance_test.sh (4 writers, 2 readers).
#
# Each run starts the binary as `serve` on a fresh data directory (fsync
# always) in front of a primary and a replica started here, and stops it
# afterwards; the Chroma servers are stopped at the end. Everything runs on
# 127.0.0.1 with free ports; data goes to a temporary directory that is
# removed at the end. Needs .venv with chromadb (./scripts/test.sh makes it).
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=2
SECS=10
BINS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --seconds) SECS="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[[ ${#BINS[@]} -gt 0 ]] || { usage >&2; exit 2; }
PY="$ROOT/.venv/bin/python"
CHROMA="$ROOT/.venv/bin/chroma"
[[ -x "$PY" && -x "$CHROMA" ]] || { echo "no .venv with chromadb (run ./scripts/test.sh)" >&2; exit 2; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
    local url="$1"
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$url did not answer" >&2
    return 1
}

start_chroma() {
    local name="$1" port="$2"
    cat >"$WORK/$name.yaml" <<EOF
port: $port
listen_address: "127.0.0.1"
persist_path: "$WORK/$name"
allow_reset: true
EOF
    ANONYMIZED_TELEMETRY=False "$CHROMA" run "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$port/api/v2/heartbeat"
}

P_PORT="$(free_port)"
R_PORT="$(free_port)"
start_chroma primary "$P_PORT"
start_chroma replica "$R_PORT"

for round in $(seq 1 "$ROUNDS"); do
    for bin in "${BINS[@]}"; do
        port="$(free_port)"
        data="$WORK/gw-$round-$(basename "$bin")-$RANDOM"
        "$bin" serve --listen "127.0.0.1:$port" --primary "http://127.0.0.1:$P_PORT" \
            --replica "http://127.0.0.1:$R_PORT" --data-dir "$data" --fsync always \
            >"$data.log" 2>&1 &
        gw=$!
        wait_http "http://127.0.0.1:$port/ready"
        echo "== round $round: $bin"
        "$PY" "$ROOT/tests/python/conflict_chain.py" "http://127.0.0.1:$port" --seconds "$SECS"
        CHROMA_HA_URL="http://127.0.0.1:$port" "$ROOT/scripts/wal_performance_test.sh" \
            --seconds "$SECS" --writers 4 --readers 2 | grep -E "^(writes|reads|catch)" || true
        curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null \
            | grep -E "^chroma_ha_applied_state_(commits|requests|commit_seconds)_total" || true
        kill "$gw"
        wait "$gw" 2>/dev/null || true
    done
done
