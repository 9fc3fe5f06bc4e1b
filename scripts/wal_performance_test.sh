#!/usr/bin/env bash
# Load test of a running chroma-ha gateway with the official Python client:
#
#   scripts/wal_performance_test.sh [--url URL] [--writers N] [--readers N]
#       [--seconds S] [--batch B] [--dim D] [--catchup-timeout S] [--json] [--keep]
#
# For S seconds, N writer threads add batches of B records (explicit random
# embeddings of dimension D, a document and a metadata each) to a fresh
# collection through the gateway, while reader threads query and get by id.
# Then it prints writes/s (requests and records), reads/s, and latency
# percentiles p50/p95/p99 of each; waits until every server has applied the
# log up to the last write (from GET /status) and prints that catch-up time
# and the largest lag seen during the run; and deletes its collection
# (unless --keep). Percentiles are nearest-rank: p95 is the smallest latency
# at least 95% of the requests did not exceed.
#
# Options (defaults in brackets):
#   --url URL             gateway base URL [$CHROMA_HA_URL or http://127.0.0.1:8000]
#   --writers N           writer threads [4]
#   --readers N           reader threads [2]
#   --seconds S           duration of the load [10]
#   --batch B             records per add request [10]
#   --dim D               embedding dimension [128]
#   --catchup-timeout S   longest wait for the servers to catch up [120]
#   --json                print the summary as one JSON line at the end too
#   --keep                keep the collection (to inspect the records on each
#                         server); its name is printed
#
# Bounded in time: the whole run is stopped after S + catchup-timeout + 120 s.
# Exit status: 0 done, 1 some requests failed or the servers did not catch up,
# 2 bad arguments or no Python client. Uses <repo>/.venv/bin/python (made by
# ./scripts/dev-up.sh or ./scripts/test.sh) or $CHROMA_HA_PYTHON.
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
URL="${CHROMA_HA_URL:-http://127.0.0.1:8000}"
WRITERS=4
READERS=2
SECONDS_=10
BATCH=10
DIM=128
CATCHUP=120
JSON=0
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --url) URL="${2:?--url needs a value}"; shift ;;
        --writers) WRITERS="${2:?--writers needs a value}"; shift ;;
        --readers) READERS="${2:?--readers needs a value}"; shift ;;
        --seconds) SECONDS_="${2:?--seconds needs a value}"; shift ;;
        --batch) BATCH="${2:?--batch needs a value}"; shift ;;
        --dim) DIM="${2:?--dim needs a value}"; shift ;;
        --catchup-timeout) CATCHUP="${2:?--catchup-timeout needs a value}"; shift ;;
        --json) JSON=1 ;;
        --keep) KEEP=1 ;;
        *) echo "wal_performance_test: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
URL="${URL%/}"

check_int() { # NAME VALUE MIN
    if [[ ! "$2" =~ ^[0-9]+$ ]] || [[ "$2" -lt "$3" ]]; then
        echo "wal_performance_test: $1 must be a whole number >= $3, got '$2'" >&2
        exit 2
    fi
}
check_int --writers "$WRITERS" 1
check_int --readers "$READERS" 0
check_int --seconds "$SECONDS_" 1
check_int --batch "$BATCH" 1
check_int --dim "$DIM" 1
check_int --catchup-timeout "$CATCHUP" 0

PY="${CHROMA_HA_PYTHON:-$ROOT/.venv/bin/python}"
if ! "$PY" -c 'import chromadb' 2>/dev/null; then
    echo "wal_performance_test: $PY cannot import chromadb; run ./scripts/dev-up.sh or ./scripts/test.sh first (they create .venv)" >&2
    exit 2
fi

LIMIT=$((SECONDS_ + CATCHUP + 120))
# SIGINT first so that Python cleans up its collection; SIGKILL 15 s later.
status=0
PERF_URL="$URL" PERF_WRITERS="$WRITERS" PERF_READERS="$READERS" PERF_SECONDS="$SECONDS_" \
PERF_BATCH="$BATCH" PERF_DIM="$DIM" PERF_CATCHUP="$CATCHUP" PERF_JSON="$JSON" PERF_KEEP="$KEEP" \
ANONYMIZED_TELEMETRY=False PYTHONUNBUFFERED=1 \
    timeout --foreground -s INT -k 15 "$LIMIT" "$PY" - <<'PY' || status=$?
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request

import chromadb
import numpy as np


def on_sigint(_sig, _frame):
    """The first Ctrl-C stops the run (and cleans up); later ones are ignored
    so that the cleanup finishes."""
    if not on_sigint.seen:
        on_sigint.seen = True
        raise KeyboardInterrupt


on_sigint.seen = False
signal.signal(signal.SIGINT, on_sigint)

env = os.environ
URL = env["PERF_URL"]
WRITERS = int(env["PERF_WRITERS"])
READERS = int(env["PERF_READERS"])
DURATION = float(env["PERF_SECONDS"])
BATCH = int(env["PERF_BATCH"])
DIM = int(env["PERF_DIM"])
CATCHUP = float(env["PERF_CATCHUP"])
AS_JSON = env.get("PERF_JSON") == "1"
KEEP = env.get("PERF_KEEP") == "1"

u = urllib.parse.urlparse(URL)
if u.scheme not in ("http", "https") or not u.hostname:
    print(f"wal_performance_test: bad URL {URL!r}", file=sys.stderr)
    sys.exit(2)
port = u.port or (443 if u.scheme == "https" else 80)


def get_status():
    """GET /status as a dict, or None when the gateway does not offer it."""
    try:
        with urllib.request.urlopen(URL + "/status", timeout=5) as r:
            s = json.load(r)
            return s if isinstance(s, dict) else None
    except Exception:  # noqa: BLE001 - no status means no catch-up figures
        return None


def pct(values, p):
    """Nearest-rank percentile: the smallest value that at least p% of the
    values do not exceed."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))
    return v[k]


def pms(values, p):
    """Percentile in milliseconds, or None without values (valid JSON)."""
    return pct(values, p) * 1000.0 if values else None


def lat_line(values):
    ms = [x * 1000.0 for x in values]
    if not ms:
        return "no successful requests"
    return (f"p50 {pct(ms, 50):.1f} ms  p95 {pct(ms, 95):.1f} ms  "
            f"p99 {pct(ms, 99):.1f} ms  max {max(ms):.1f} ms")


try:
    client = chromadb.HttpClient(host=u.hostname, port=port, ssl=u.scheme == "https")
    client.heartbeat()
except Exception as e:  # noqa: BLE001
    print(f"wal_performance_test: cannot reach {URL}: {e}", file=sys.stderr)
    sys.exit(2)

name = f"chroma_ha_perf_{os.getpid()}_{int(time.time())}"
print(f"chroma-ha performance test against {URL}")
print(f"  {WRITERS} writer(s) x batch {BATCH}, {READERS} reader(s), {DURATION:g} s, "
      f"dimension {DIM}, collection {name}")

lock = threading.Lock()
known_ids = []
# Readers start once a write is acknowledged: they measure reads of data, and
# Chroma 1.5.9 can fail a query on a collection nothing was written to yet
# ("Error creating hnsw segment reader: Nothing found on disk",
# chroma-core/chroma#4212), which says nothing about the gateway.
data_written = threading.Event()
write_lat, read_lat = [], []
write_err, read_err = [0], [0]
first_errors = []
max_lag = {}
stop = threading.Event()
collection = None
exit_code = 0
summary = {"url": URL, "collection": name, "writers": WRITERS, "readers": READERS,
           "seconds": DURATION, "batch": BATCH, "dim": DIM}


def note_error(kind, e):
    with lock:
        if len(first_errors) < 5:
            first_errors.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")


def writer(w):
    rng = np.random.default_rng(1000 + w)
    seq = 0
    while not stop.is_set():
        ids = [f"w{w}-{seq + j}" for j in range(BATCH)]
        seq += BATCH
        emb = rng.random((BATCH, DIM), dtype=np.float32).tolist()
        docs = [f"document {i} from writer {w}" for i in ids]
        metas = [{"writer": w, "n": seq + j} for j in range(BATCH)]
        t = time.perf_counter()
        try:
            collection.add(ids=ids, embeddings=emb, documents=docs, metadatas=metas)
        except Exception as e:  # noqa: BLE001 - count and go on
            with lock:
                write_err[0] += 1
            note_error("write", e)
            time.sleep(0.05)
            continue
        dt = time.perf_counter() - t
        with lock:
            write_lat.append(dt)
            known_ids.extend(ids)
        data_written.set()


def reader(r):
    rng = np.random.default_rng(2000 + r)
    n = 0
    while not data_written.wait(0.1):
        if stop.is_set():
            return
    while not stop.is_set():
        n += 1
        t = time.perf_counter()
        try:
            if n % 2 == 0:
                with lock:
                    some = known_ids[int(rng.integers(len(known_ids)))] if known_ids else "none"
                collection.get(ids=[some])
            else:
                collection.query(query_embeddings=rng.random((1, DIM), dtype=np.float32).tolist(),
                                 n_results=5)
        except Exception as e:  # noqa: BLE001 - count and go on
            with lock:
                read_err[0] += 1
            note_error("read", e)
            time.sleep(0.05)
            continue
        dt = time.perf_counter() - t
        with lock:
            read_lat.append(dt)


def sampler():
    while not stop.wait(0.5):
        s = get_status()
        for inst in (s or {}).get("instances") or []:
            lag = inst.get("lag_entries")
            if isinstance(lag, (int, float)):
                key = inst.get("name") or inst.get("url") or "?"
                max_lag[key] = max(max_lag.get(key, 0), lag)


try:
    collection = client.create_collection(name, embedding_function=None)
    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(r,), daemon=True) for r in range(READERS)]
    mon = threading.Thread(target=sampler, daemon=True)
    started = time.perf_counter()
    for t in threads:
        t.start()
    mon.start()
    while time.perf_counter() - started < DURATION:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    writes_done = time.perf_counter()
    mon.join()

    wr, rd = len(write_lat), len(read_lat)
    print(f"writes: {wr} requests ({wr * BATCH} records) in {elapsed:.1f} s = "
          f"{wr / elapsed:.1f} req/s ({wr * BATCH / elapsed:.0f} records/s); errors {write_err[0]}")
    print(f"  latency: {lat_line(write_lat)}")
    print(f"reads:  {rd} requests in {elapsed:.1f} s = {rd / elapsed:.1f} req/s; errors {read_err[0]}")
    print(f"  latency: {lat_line(read_lat)}")
    for line in first_errors:
        print(f"  first errors: {line}")
    summary.update({
        "write_requests": wr, "write_records": wr * BATCH, "write_errors": write_err[0],
        "writes_per_s": wr / elapsed, "records_per_s": wr * BATCH / elapsed,
        "write_p50_ms": pms(write_lat, 50), "write_p95_ms": pms(write_lat, 95),
        "write_p99_ms": pms(write_lat, 99),
        "write_max_ms": max(write_lat) * 1000.0 if write_lat else None,
        "elapsed_s": elapsed,
        "read_requests": rd, "read_errors": read_err[0], "reads_per_s": rd / elapsed,
        "read_p50_ms": pms(read_lat, 50), "read_p95_ms": pms(read_lat, 95),
        "read_p99_ms": pms(read_lat, 99),
        "read_max_ms": max(read_lat) * 1000.0 if read_lat else None,
    })
    if write_err[0] or read_err[0]:
        exit_code = 1

    # Catch-up: every server applies the log up to the last write.
    s = get_status()
    target = ((s or {}).get("write_ahead_log") or {}).get("last_lsn")
    if s is None or not isinstance(target, int):
        print("catch-up: skipped (no /status with write_ahead_log.last_lsn at this URL)")
        summary["catchup_s"] = None
    else:
        summary["catchup_lsn"] = target
        deadline = writes_done + CATCHUP
        behind = {}
        while True:
            behind = {}
            for inst in (s or {}).get("instances") or []:
                applied = inst.get("applied_lsn")
                key = inst.get("name") or inst.get("url") or "?"
                lag = inst.get("lag_entries")
                if isinstance(lag, (int, float)):
                    max_lag[key] = max(max_lag.get(key, 0), lag)
                if not isinstance(applied, int) or applied < target:
                    behind[key] = applied
            if not behind or time.perf_counter() >= deadline:
                break
            time.sleep(0.05)
            s = get_status()
        took = time.perf_counter() - writes_done
        lags = ", ".join(f"{k} {v:.0f}" for k, v in sorted(max_lag.items())) or "not reported"
        print(f"largest lag seen (entries): {lags}")
        summary["max_lag_entries"] = max_lag
        if behind:
            print(f"catch-up: NOT DONE within {CATCHUP:g} s; behind LSN {target}: "
                  + ", ".join(f"{k} at {v}" for k, v in sorted(behind.items())))
            summary["catchup_s"] = None
            exit_code = 1
        else:
            print(f"catch-up: every server applied the log up to LSN {target} "
                  f"{took:.2f} s after the last write")
            summary["catchup_s"] = took
except KeyboardInterrupt:
    stop.set()
    print("interrupted", file=sys.stderr)
    exit_code = 1
except Exception as e:  # noqa: BLE001 - report, clean up, fail
    stop.set()
    print(f"wal_performance_test: failed: {type(e).__name__}: {e}", file=sys.stderr)
    exit_code = 1
finally:
    stop.set()
    if collection is not None and KEEP:
        print(f"cleanup: collection {name} kept (--keep)")
    elif collection is not None:
        try:
            client.delete_collection(name)
            print(f"cleanup: collection {name} deleted")
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: could not delete collection {name}: {e}", file=sys.stderr)
            exit_code = 1

if AS_JSON:
    print(json.dumps(summary, default=str))
sys.exit(exit_code)
PY
if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "wal_performance_test: stopped after ${LIMIT}s (time limit)" >&2
    exit 1
fi
exit "$status"
