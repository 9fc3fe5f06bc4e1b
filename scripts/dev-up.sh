#!/usr/bin/env bash
# A local chroma-ha deployment, from a fresh machine, in one command:
#
#   ./scripts/dev-up.sh [--reset]
#
# 1. Installs Chroma (chromadb==$CHROMA_VERSION, default 1.5.9) into
#    <repo>/.venv if it is missing.
# 2. Builds the gateway: cargo build --release (target/release/chroma-ha).
# 3. Starts a primary and a replica Chroma server on 127.0.0.1, each with its
#    own data under $DATA_DIR, and waits for their heartbeats.
# 4. Starts `chroma-ha serve` in front of them with its write-ahead log under
#    $DATA_DIR/gateway, and waits until GET /ready answers 200.
# 5. Prints the gateway URL, the status page and a Python example, then waits.
#    Ctrl-C (or SIGTERM) stops the three processes it started, and only those.
#
# Logs: $DATA_DIR/logs/{primary,replica,gateway}.log. Data survives restarts;
# --reset deletes $DATA_DIR first.
#
# Environment:
#   DATA_DIR       data and logs (default ./data/dev)
#   GATEWAY_PORT   gateway port  (default 8000 if free, else a free port)
#   PRIMARY_PORT   primary port  (default 8001 if free, else a free port)
#   REPLICA_PORT   replica port  (default 8002 if free, else a free port)
#   CHROMA_HA_BIN  use this gateway binary instead of building one
#   CHROMA_VERSION chromadb version to install (default 1.5.9)
#   PYTHON         interpreter used to create the venv (default python3)
#   RUST_LOG       gateway log filter (default info)
# A port given explicitly must be free.
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

RESET=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --reset) RESET=1 ;;
        *) echo "dev-up: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CHROMA_HA_BIN may be relative to where the script was started from.
if [[ -n "${CHROMA_HA_BIN:-}" && "$CHROMA_HA_BIN" != /* ]]; then
    CHROMA_HA_BIN="$PWD/$CHROMA_HA_BIN"
fi
cd "$ROOT"

CHROMA_VERSION="${CHROMA_VERSION:-1.5.9}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
# shellcheck source=lib/chroma_venv.sh
source "$ROOT/scripts/lib/chroma_venv.sh"
DATA_DIR="${DATA_DIR:-$ROOT/data/dev}"
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
LOG_DIR="$DATA_DIR/logs"

say() { printf 'dev-up: %s\n' "$*"; }
die() { printf 'dev-up: ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ processes
# PIDs of the processes this script started, in start order.
PIDS=()
NAMES=()
STOPPED=0
# The background sleep of the wait loop, while one runs.
SLEEP_PID=""

stop_all() {
    [[ $STOPPED -eq 1 ]] && return 0
    STOPPED=1
    if [[ -n "$SLEEP_PID" ]]; then
        kill -TERM "$SLEEP_PID" 2>/dev/null || true
        wait "$SLEEP_PID" 2>/dev/null || true
    fi
    local i pid
    # Stop in reverse order: the gateway first, then the replica, the primary.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[$i]}"
        if kill -0 "$pid" 2>/dev/null; then
            say "stopping ${NAMES[$i]} (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    local deadline=$((SECONDS + 15))
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[$i]}"
        while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "${NAMES[$i]} (pid $pid) did not stop; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$(cat "$DATA_DIR/dev-up.pid" 2>/dev/null || true)" == "$$" ]]; then
        rm -f "$DATA_DIR/dev-up.pid"
    fi
}

on_signal() {
    echo
    say "stopping (signal received)"
    stop_all
    say "stopped"
    exit 0
}

trap on_signal INT TERM
trap stop_all EXIT

# ------------------------------------------------------------ helpers
port_free() {
    "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

any_free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

TAKEN=" "
# pick_port NAME EXPLICIT DEFAULT: the explicit port (must be free), else the
# default if free, else any free port; never one already picked.
pick_port() {
    local name="$1" explicit="$2" default="$3" port
    if [[ -n "$explicit" ]]; then
        [[ "$explicit" =~ ^[0-9]+$ ]] || die "$name must be a port number, got '$explicit'"
        port_free "$explicit" || die "$name $explicit is in use"
        [[ "$TAKEN" != *" $explicit "* ]] || die "$name $explicit is given twice"
        port="$explicit"
    elif port_free "$default" && [[ "$TAKEN" != *" $default "* ]]; then
        port="$default"
    else
        port="$(any_free_port)"
        while [[ "$TAKEN" == *" $port "* ]]; do port="$(any_free_port)"; done
        say "port $default is busy; $name uses $port" >&2
    fi
    TAKEN+="$port "
    printf '%s' "$port"
}

http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# wait_http NAME PID URL TIMEOUT: waits for URL to answer 200 while PID lives.
wait_http() {
    local name="$1" pid="$2" url="$3" timeout="$4" log="$LOG_DIR/$1.log"
    local deadline=$((SECONDS + timeout))
    while true; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "----- last lines of $log -----" >&2
            tail -n 40 "$log" >&2 || true
            die "$name exited during start (log: $log)"
        fi
        if [[ "$(http_status "$url")" == "200" ]]; then
            return 0
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            echo "----- last lines of $log -----" >&2
            tail -n 40 "$log" >&2 || true
            die "$name did not answer 200 on $url within ${timeout}s (log: $log)"
        fi
        sleep 0.5
    done
}

ensure_chroma() {
    local have
    have="$(installed_chroma_version)"
    if [[ -n "$have" ]]; then
        [[ "$have" == "$CHROMA_VERSION" ]] ||
            say "note: .venv has chromadb $have (the tests expect $CHROMA_VERSION; ./scripts/test.sh reinstalls it)"
        return 0
    fi
    say "installing chromadb==$CHROMA_VERSION into $VENV (a few minutes, once)"
    install_chroma && [[ -n "$(installed_chroma_version)" ]] ||
        die "chromadb did not install into $VENV"
}

# start_chroma NAME PORT: starts a Chroma server; sets STARTED_PID.
start_chroma() {
    local name="$1" port="$2"
    local cfg="$DATA_DIR/$name.yaml"
    mkdir -p "$DATA_DIR/$name"
    cat >"$cfg" <<YAML
port: $port
listen_address: 127.0.0.1
persist_path: "$DATA_DIR/$name"
allow_reset: true
YAML
    printf '\n===== dev-up: %s starting %s on port %s =====\n' "$(date -u +%FT%TZ)" "$name" "$port" >>"$LOG_DIR/$name.log"
    ANONYMIZED_TELEMETRY=False PYTHONUNBUFFERED=1 \
        "$VENV/bin/chroma" run "$cfg" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    NAMES+=("$name")
    say "$name: Chroma on http://127.0.0.1:$port (pid $STARTED_PID, log $LOG_DIR/$name.log)"
}

# ------------------------------------------------------------ main
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
command -v "$PYTHON" >/dev/null || die "$PYTHON is needed"

if [[ -f "$DATA_DIR/dev-up.pid" ]]; then
    other="$(cat "$DATA_DIR/dev-up.pid" 2>/dev/null || true)"
    if [[ -n "$other" ]] && kill -0 "$other" 2>/dev/null; then
        die "another dev-up (pid $other) is using $DATA_DIR; stop it first or set DATA_DIR"
    fi
fi

if [[ $RESET -eq 1 ]]; then
    say "--reset: deleting $DATA_DIR"
    rm -rf "$DATA_DIR"
    mkdir -p "$DATA_DIR"
fi
mkdir -p "$LOG_DIR"
echo $$ >"$DATA_DIR/dev-up.pid"

ensure_chroma

if [[ -n "${CHROMA_HA_BIN:-}" ]]; then
    GATEWAY_BIN="$CHROMA_HA_BIN"
    [[ -x "$GATEWAY_BIN" ]] || die "CHROMA_HA_BIN=$GATEWAY_BIN is not executable"
else
    command -v cargo >/dev/null || die "cargo is needed to build chroma-ha (https://rustup.rs)"
    say "building chroma-ha (cargo build --release; the first build takes a few minutes)"
    cargo build --release -p chroma-ha --bin chroma-ha
    GATEWAY_BIN="$ROOT/target/release/chroma-ha"
fi

PRIMARY_PORT="$(pick_port PRIMARY_PORT "${PRIMARY_PORT:-}" 8001)"
REPLICA_PORT="$(pick_port REPLICA_PORT "${REPLICA_PORT:-}" 8002)"
GATEWAY_PORT="$(pick_port GATEWAY_PORT "${GATEWAY_PORT:-}" 8000)"
# pick_port runs in a subshell: record the picks here too.
TAKEN=" $PRIMARY_PORT $REPLICA_PORT $GATEWAY_PORT "
PRIMARY_URL="http://127.0.0.1:$PRIMARY_PORT"
REPLICA_URL="http://127.0.0.1:$REPLICA_PORT"
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"

start_chroma primary "$PRIMARY_PORT"
PRIMARY_PID=$STARTED_PID
start_chroma replica "$REPLICA_PORT"
REPLICA_PID=$STARTED_PID
wait_http primary "$PRIMARY_PID" "$PRIMARY_URL/api/v2/heartbeat" 120
say "primary is up"
wait_http replica "$REPLICA_PID" "$REPLICA_URL/api/v2/heartbeat" 120
say "replica is up"

mkdir -p "$DATA_DIR/gateway"
printf '\n===== dev-up: %s starting gateway on port %s =====\n' "$(date -u +%FT%TZ)" "$GATEWAY_PORT" >>"$LOG_DIR/gateway.log"
RUST_LOG="${RUST_LOG:-info}" "$GATEWAY_BIN" serve \
    --listen "127.0.0.1:$GATEWAY_PORT" \
    --primary "$PRIMARY_URL" \
    --replica "$REPLICA_URL" \
    --data-dir "$DATA_DIR/gateway" \
    </dev/null >>"$LOG_DIR/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
NAMES+=("gateway")
say "gateway: chroma-ha on $GATEWAY_URL (pid $GATEWAY_PID, log $LOG_DIR/gateway.log)"
wait_http gateway "$GATEWAY_PID" "$GATEWAY_URL/ready" 120

# The binary as the commands below name it: relative to the repository root
# when it is inside it (the script runs there), else absolute.
GATEWAY_SHOWN="$GATEWAY_BIN"
if [[ "$GATEWAY_BIN" == "$ROOT/"* ]]; then
    GATEWAY_SHOWN="${GATEWAY_BIN#"$ROOT/"}"
fi

cat <<INFO

chroma-ha is ready.

  Gateway (point your Chroma client here): $GATEWAY_URL
  Status page:                             $GATEWAY_URL/
  Status JSON / metrics:                   $GATEWAY_URL/status  $GATEWAY_URL/metrics
  Primary Chroma:                          $PRIMARY_URL
  Replica Chroma:                          $REPLICA_URL
  Data and logs:                           $DATA_DIR  ($LOG_DIR)

Try it with the Python client (.venv/bin/python):

import chromadb
client = chromadb.HttpClient(host="127.0.0.1", port=$GATEWAY_PORT)
client.get_or_create_collection("demo").add(ids=["doc-1"], embeddings=[[0.1, 0.2, 0.3]], documents=["hello, chroma-ha"])

Check it:  CHROMA_HA_URL=$GATEWAY_URL $GATEWAY_SHOWN status
           $GATEWAY_SHOWN check --server $PRIMARY_URL --server $REPLICA_URL

Press Ctrl-C to stop the gateway and both Chroma servers.
INFO

# Wait. The gateway exiting ends the deployment; a Chroma server exiting is
# reported (the gateway keeps serving from the other one) but not fatal.
# The gateway exits 0 only when told to stop: Ctrl-C reaches it too, and it
# may be gone before this shell runs its trap. That is a stop, not a failure.
DOWN=" "
while true; do
    if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        rc=0
        wait "$GATEWAY_PID" 2>/dev/null || rc=$?
        if [[ $rc -eq 0 ]]; then
            say "the gateway stopped; stopping the Chroma servers"
            stop_all
            say "stopped"
            exit 0
        fi
        echo "----- last lines of $LOG_DIR/gateway.log -----" >&2
        tail -n 20 "$LOG_DIR/gateway.log" >&2 || true
        say "the gateway exited (status $rc); stopping the Chroma servers"
        stop_all
        exit 1
    fi
    for name in primary replica; do
        pid=$PRIMARY_PID
        [[ $name == replica ]] && pid=$REPLICA_PID
        if [[ "$DOWN" != *" $name "* ]] && ! kill -0 "$pid" 2>/dev/null; then
            DOWN+="$name "
            say "WARNING: the $name Chroma server (pid $pid) exited; see $LOG_DIR/$name.log"
        fi
    done
    # Sleep in the background so that a signal is handled at once (stop_all
    # ends that sleep too).
    sleep 1 &
    SLEEP_PID=$!
    wait "$SLEEP_PID" 2>/dev/null || true
    SLEEP_PID=""
done
