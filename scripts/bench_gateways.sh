#!/usr/bin/env bash
# Gateways measured side by side: for each gateway given, in alternating
# rounds, against the same two local Chroma servers:
#
#   scripts/bench_gateways.sh [--rounds N] [--seconds S] GATEWAY [GATEWAY...]
#
# GATEWAY is a chroma-ha binary (its log in a fresh data directory),
# BIN@postgres: that binary with its log in PostgreSQL (a throwaway cluster
# started here from `pg_config --bindir`, a fresh database per run), or
# BIN@follower: two such gateways sharing that database, the load sent to
# the one that does not lead (every request forwarded to the leader). E.g.
# the repeat rule's cost: `OLD_BIN NEW_BIN`; the logs: `BIN BIN@postgres
# BIN@follower`.
#
# 1. one writer alternating `delete where` and `update` on one collection
#    (tests/python/conflict_chain.py): every write conflicts with the last;
# 2. the mixed load of scripts/wal_performance_test.sh (4 writers, 2 readers).
#
# Each run starts the binary as `serve` on a fresh data directory (fsync
# always) in front of a primary and a replica started here, and stops it
# afterwards; the Chroma and PostgreSQL servers are stopped at the end. Everything runs on
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
PGDIR=""
as_postgres() {
    if [[ "$(id -u)" -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n "$PGDIR" ]]; then
        as_postgres "$(pg_config --bindir)/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PGDIR"
    fi
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

PG_PORT=""
start_postgres() {
    local bindir
    bindir="$(pg_config --bindir)" || { echo "PostgreSQL is needed for @postgres (apt-get install postgresql)" >&2; exit 2; }
    PGDIR="$(mktemp -d)"
    [[ "$(id -u)" -eq 0 ]] && chown postgres "$PGDIR"
    PG_PORT="$(free_port)"
    as_postgres "$bindir/initdb" -D "$PGDIR/data" -A trust -U postgres >/dev/null
    as_postgres "$bindir/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
        -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
}

P_PORT="$(free_port)"
R_PORT="$(free_port)"
start_chroma primary "$P_PORT"
start_chroma replica "$R_PORT"

RUN=0
for round in $(seq 1 "$ROUNDS"); do
    for gateway in "${BINS[@]}"; do
        bin="${gateway%@*}"
        port="$(free_port)"
        RUN=$((RUN + 1))
        data="$WORK/gw-$RUN"
        log_args=()
        if [[ "$gateway" == *@postgres || "$gateway" == *@follower ]]; then
            [[ -n "$PG_PORT" ]] || start_postgres
            as_postgres "$(pg_config --bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "run$RUN"
            log_args=(--log-url "postgres://postgres@127.0.0.1:$PG_PORT/run$RUN")
        fi
        "$bin" serve --listen "127.0.0.1:$port" --primary "http://127.0.0.1:$P_PORT" \
            --replica "http://127.0.0.1:$R_PORT" --data-dir "$data" --fsync always \
            "${log_args[@]}" >"$data.log" 2>&1 &
        gw=$!
        wait_http "http://127.0.0.1:$port/ready"
        leader=""
        if [[ "$gateway" == *@follower ]]; then
            leader="$gw"
            port="$(free_port)"
            "$bin" serve --listen "127.0.0.1:$port" --primary "http://127.0.0.1:$P_PORT" \
                --replica "http://127.0.0.1:$R_PORT" --data-dir "$data-follower" \
                "${log_args[@]}" >"$data-follower.log" 2>&1 &
            gw=$!
            wait_http "http://127.0.0.1:$port/ready"
        fi
        echo "== round $round: $gateway"
        "$PY" "$ROOT/tests/python/conflict_chain.py" "http://127.0.0.1:$port" --seconds "$SECS"
        CHROMA_HA_URL="http://127.0.0.1:$port" "$ROOT/scripts/wal_performance_test.sh" \
            --seconds "$SECS" --writers 4 --readers 2 | grep -E "^(writes|reads|catch)" || true
        curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null \
            | grep -E "^chroma_ha_applied_state_(commits|requests|commit_seconds)_total" || true
        kill "$gw" $leader
        wait "$gw" $leader 2>/dev/null || true
    done
done
