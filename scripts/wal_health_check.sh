#!/usr/bin/env bash
# Health check of a running chroma-ha gateway, for cron, monitoring agents or
# a load balancer's external check:
#
#   scripts/wal_health_check.sh [--url URL] [--quiet]
#
# Reads GET $CHROMA_HA_URL/status (default http://127.0.0.1:8000) and prints
# one line per finding (CRITICAL: first, then WARNING:), then a summary line
# (OK:, DEGRADED: or CRITICAL:). --quiet leaves the summary out unless all is
# well. Exit status:
#   0  healthy
#   1  degraded: a server unhealthy, draining or its applier paused, lag or
#      log usage above the WARN thresholds, dead letters present
#   2  critical: gateway unreachable, not ready, lag or log usage above the
#      CRIT thresholds
#
# Thresholds (environment; per server for lag, percent of max_bytes for the
# log):
#   WARN_LAG_ENTRIES (default 1000)   CRIT_LAG_ENTRIES (default 100000)
#   WARN_LAG_SECONDS (default 60)     CRIT_LAG_SECONDS (default 600)
#   WARN_WAL_PCT     (default 70)     CRIT_WAL_PCT     (default 90)
#   TIMEOUT          seconds to wait for the gateway (default 5)
# A threshold is exceeded when the value is strictly above it. A bad
# argument or threshold also exits 2 (with a message on stderr).
#
# Needs curl and python3 (no jq).
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

URL="${CHROMA_HA_URL:-http://127.0.0.1:8000}"
QUIET=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --url) URL="${2:?--url needs a value}"; shift ;;
        --quiet | -q) QUIET=1 ;;
        *) echo "wal_health_check: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
URL="${URL%/}"

for var in WARN_LAG_ENTRIES CRIT_LAG_ENTRIES WARN_LAG_SECONDS CRIT_LAG_SECONDS WARN_WAL_PCT CRIT_WAL_PCT TIMEOUT; do
    value="${!var:-}"
    if [[ -n "$value" && ! "$value" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
        echo "wal_health_check: $var must be a number, got '$value'" >&2
        exit 2
    fi
done

body_file="$(mktemp)"
trap 'rm -f "$body_file"' EXIT

code=0
http_code="$(curl -sS -o "$body_file" -w '%{http_code}' --max-time "${TIMEOUT:-5}" "$URL/status" 2>"$body_file.err")" || code=$?
if [[ $code -ne 0 ]]; then
    reason="$(tr '\n' ' ' <"$body_file.err" | sed 's/ *$//')"
    rm -f "$body_file.err"
    echo "CRITICAL: gateway unreachable at $URL (${reason:-curl exit $code})"
    exit 2
fi
rm -f "$body_file.err"

WARN_LAG_ENTRIES="${WARN_LAG_ENTRIES:-1000}" CRIT_LAG_ENTRIES="${CRIT_LAG_ENTRIES:-100000}" \
WARN_LAG_SECONDS="${WARN_LAG_SECONDS:-60}" CRIT_LAG_SECONDS="${CRIT_LAG_SECONDS:-600}" \
WARN_WAL_PCT="${WARN_WAL_PCT:-70}" CRIT_WAL_PCT="${CRIT_WAL_PCT:-90}" \
HC_URL="$URL" HC_HTTP_CODE="$http_code" HC_BODY="$body_file" HC_QUIET="$QUIET" \
    python3 - <<'PY'
import json
import os
import sys

env = os.environ
url = env["HC_URL"]
quiet = env.get("HC_QUIET") == "1"
th = {k: float(env[k]) for k in (
    "WARN_LAG_ENTRIES", "CRIT_LAG_ENTRIES", "WARN_LAG_SECONDS",
    "CRIT_LAG_SECONDS", "WARN_WAL_PCT", "CRIT_WAL_PCT")}

raw = b""
try:
    with open(env["HC_BODY"], "rb") as f:
        raw = f.read()
    status = json.loads(raw)
    if not isinstance(status, dict):
        raise ValueError("not a JSON object")
except Exception as e:  # noqa: BLE001 - any unreadable answer is critical
    snippet = raw[:120].decode("utf-8", "replace")
    print(f"CRITICAL: gateway at {url} answered HTTP {env['HC_HTTP_CODE']} "
          f"without usable status JSON ({e}): {snippet!r}")
    sys.exit(2)

findings = []  # (level, text); level 1 = warning, 2 = critical


def add(level, text):
    findings.append((level, text))


def size(n):
    """Bytes as the largest binary unit that keeps a figure of at least 1."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def num(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


if status.get("ready") is not True:
    reason = status.get("not_ready_reason") or status.get("reason")
    add(2, "gateway is not ready" + (f": {reason}" if reason else ""))

instances = status.get("instances") or []
healthy = sum(1 for i in instances if i.get("healthy") is True)
total = len(instances)
if total and healthy == 0:
    add(2, f"no server is healthy (0/{total})")

for inst in instances:
    name = inst.get("name") or inst.get("url") or "?"
    state = inst.get("state")
    if inst.get("healthy") is not True:
        err = inst.get("last_error")
        add(1, f"server {name} is unhealthy (state {state or '?'})"
               + (f": {err}" if err else ""))
    elif state == "draining":
        add(1, f"server {name} is draining (maintenance)")
    if inst.get("applier") == "paused":
        add(1, f"server {name}: applier is paused")
    if inst.get("applier") == "dead_letters_full":
        add(2, f"server {name}: applier stopped at a refused entry, the dead-letter list is full "
               "(retry or skip dead letters, or raise replication.max_dead_letters)")
    lag = num(inst.get("lag_entries"))
    lag_s = num(inst.get("lag_seconds"))
    if lag > th["CRIT_LAG_ENTRIES"]:
        add(2, f"server {name} lags {lag:.0f} entries (critical above {th['CRIT_LAG_ENTRIES']:g})")
    elif lag > th["WARN_LAG_ENTRIES"]:
        add(1, f"server {name} lags {lag:.0f} entries (warning above {th['WARN_LAG_ENTRIES']:g})")
    if lag_s > th["CRIT_LAG_SECONDS"]:
        add(2, f"server {name} lags {lag_s:.1f} s (critical above {th['CRIT_LAG_SECONDS']:g} s)")
    elif lag_s > th["WARN_LAG_SECONDS"]:
        add(1, f"server {name} lags {lag_s:.1f} s (warning above {th['WARN_LAG_SECONDS']:g} s)")
    dead = num(inst.get("dead_letters"))
    if dead > 0:
        add(1, f"server {name} has {dead:.0f} dead letter(s) (GET /admin/dead-letters; retry or skip each)")

log = status.get("write_ahead_log") or {}
used = num(log.get("used_bytes"), -1)
cap = num(log.get("max_bytes"), 0)
pct = None
if used >= 0 and cap > 0:
    pct = used * 100.0 / cap
    if pct > th["CRIT_WAL_PCT"]:
        add(2, f"log uses {pct:.1f}% of its {size(cap)} cap "
               f"(critical above {th['CRIT_WAL_PCT']:g}%; writes get 507 at 100%)")
    elif pct > th["WARN_WAL_PCT"]:
        add(1, f"log uses {pct:.1f}% of its {size(cap)} cap "
               f"(warning above {th['WARN_WAL_PCT']:g}%)")
if status.get("dead_letters_full") is True:
    add(1, status.get("dead_letters_message") or "the dead-letter list is full")
log_dead = num(log.get("dead_letters"))
per_server_dead = sum(num(i.get("dead_letters")) for i in instances)
if log_dead > 0 and per_server_dead == 0:
    add(1, f"log has {log_dead:.0f} dead letter(s) (GET /admin/dead-letters; retry or skip each)")

level = max((lvl for lvl, _ in findings), default=0)
for lvl, text in sorted(findings, key=lambda f: -f[0]):
    print(("CRITICAL: " if lvl == 2 else "WARNING: ") + text)
if not quiet or level == 0:
    verdict = {0: "OK", 1: "DEGRADED", 2: "CRITICAL"}[level]
    pct_text = f"{pct:.1f}%" if pct is not None else "?"
    ready = json.dumps(status.get("ready"))
    print(f"{verdict}: {url} ready={ready} servers {healthy}/{total} healthy, "
          f"executor {status.get('executor') or 'none'}, last LSN {log.get('last_lsn', '?')}, "
          f"log {pct_text} of cap, dead letters {log_dead:.0f}")
sys.exit(level)
PY
