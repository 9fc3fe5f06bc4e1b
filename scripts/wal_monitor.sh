#!/usr/bin/env bash
# Live view of a running chroma-ha gateway's replication, one line per
# interval:
#
#   scripts/wal_monitor.sh [--url URL] [--interval S] [--count N]
#
# Each line: time, healthy/total servers, executor of writes, last LSN of the
# log, per server its applied LSN and lag (entries and seconds, `!` marks an
# unhealthy server), log usage in percent of its cap, dead letters. Reads
# GET $CHROMA_HA_URL/status (default http://127.0.0.1:8000). An unreachable
# gateway is a line too; the monitor keeps going.
#
# Options:
#   --url URL     gateway base URL (default $CHROMA_HA_URL or http://127.0.0.1:8000)
#   --interval S  seconds between lines, fractions allowed (default 2)
#   --count N     stop after N lines (default: until Ctrl-C)
#
# Needs curl and python3 (no jq).
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

URL="${CHROMA_HA_URL:-http://127.0.0.1:8000}"
INTERVAL=2
COUNT=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --url) URL="${2:?--url needs a value}"; shift ;;
        --interval) INTERVAL="${2:?--interval needs a value}"; shift ;;
        --count) COUNT="${2:?--count needs a value}"; shift ;;
        *) echo "wal_monitor: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
URL="${URL%/}"
if [[ ! "$INTERVAL" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$INTERVAL" =~ ^0+([.]0*)?$ ]]; then
    echo "wal_monitor: --interval must be a positive number of seconds, got '$INTERVAL'" >&2
    exit 2
fi
if [[ ! "$COUNT" =~ ^[0-9]+$ ]]; then
    echo "wal_monitor: --count must be a whole number, got '$COUNT'" >&2
    exit 2
fi

trap 'echo; exit 0' INT TERM

# Formats one /status answer (the file $1) as one line.
format_line() {
    MON_BODY="$1" python3 - <<'PY'
import json
import os
import time

now = time.strftime("%H:%M:%S")
try:
    with open(os.environ["MON_BODY"], "rb") as f:
        s = json.load(f)
    if not isinstance(s, dict):
        raise ValueError("not a JSON object")
except Exception as e:  # noqa: BLE001 - show what went wrong and go on
    print(f"{now}  bad /status answer: {e}")
    raise SystemExit(0)


def n(v, default="?"):
    return default if v is None else v


inst = s.get("instances") or []
healthy = sum(1 for i in inst if i.get("healthy") is True)
log = s.get("write_ahead_log") or {}
used, cap = log.get("used_bytes"), log.get("max_bytes")
pct = f"{used * 100.0 / cap:.1f}%" if isinstance(used, (int, float)) and isinstance(cap, (int, float)) and cap else "?"
servers = []
for i in inst:
    mark = "" if i.get("healthy") is True else "!"
    lag_s = i.get("lag_seconds")
    lag_s = f"{lag_s:.1f}s" if isinstance(lag_s, (int, float)) else "?"
    servers.append(f"{mark}{n(i.get('name'))}={n(i.get('applied_lsn'))}"
                   f"(lag {n(i.get('lag_entries'))}/{lag_s})")
ready = "" if s.get("ready") is True else "  NOT READY"
print(f"{now}  healthy {healthy}/{len(inst)}  exec {s.get('executor') or 'none'}  "
      f"last_lsn {n(log.get('last_lsn'))}  {'  '.join(servers)}  "
      f"log {pct}  dead {n(log.get('dead_letters'))}{ready}")
PY
}

body_file="$(mktemp)"
trap 'rm -f "$body_file"' EXIT

echo "monitoring $URL/status every ${INTERVAL}s$([[ $COUNT -gt 0 ]] && echo ", $COUNT line(s)") (Ctrl-C to stop)"
echo "columns: time | healthy/total servers | executor | last LSN of the log | per server: name=applied LSN (lag entries/seconds; ! = unhealthy) | log used % of cap | dead letters"
i=0
while true; do
    i=$((i + 1))
    if curl -sS -o "$body_file" --max-time 5 "$URL/status" 2>"$body_file.err"; then
        format_line "$body_file"
    else
        echo "$(date +%H:%M:%S)  gateway unreachable: $(tr '\n' ' ' <"$body_file.err" | sed 's/ *$//')"
    fi
    rm -f "$body_file.err"
    if [[ $COUNT -gt 0 && $i -ge $COUNT ]]; then
        break
    fi
    # Sleep in the background so that Ctrl-C is handled at once.
    sleep "$INTERVAL" &
    wait $! || true
done
