"""One writer alternating `delete where tag=a` and `update tag=a` on one
collection through a gateway: every write conflicts with the one before it,
so each pays the repeat rule's durable record before it is sent.

    python conflict_chain.py URL [--seconds S] [--json]

Prints ops/s and latency percentiles (ms). Uses only the standard library
(one keep-alive HTTP connection), so client overhead stays small and equal
across gateways.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse
import uuid

BASE = "/api/v2/tenants/default_tenant/databases/default_database"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        payload = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {payload[:200]!r}")
        return json.loads(payload) if payload else None

    name = f"chain_{uuid.uuid4().hex[:8]}"
    coll = call("POST", f"{BASE}/collections", {"name": name, "get_or_create": False})
    cpath = f"{BASE}/collections/{coll['id']}"
    call("POST", f"{cpath}/add", {
        "ids": ["x", "y"],
        "embeddings": [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]],
        "metadatas": [{"tag": "b"}, {"tag": "b"}],
    })
    latencies = []
    deadline = time.monotonic() + args.seconds
    i = 0
    while time.monotonic() < deadline:
        start = time.monotonic()
        if i % 2 == 0:
            call("POST", f"{cpath}/delete", {"where": {"tag": "a"}})
        else:
            call("POST", f"{cpath}/update", {"ids": ["x"], "metadatas": [{"tag": "a"}]})
        latencies.append(time.monotonic() - start)
        i += 1
    call("DELETE", f"{BASE}/collections/{name}")
    latencies.sort()

    def pct(p):
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    summary = {
        "ops": len(latencies),
        "ops_per_s": len(latencies) / args.seconds,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }
    print(
        f"conflict chain: {summary['ops']} writes, {summary['ops_per_s']:.1f}/s, "
        f"p50 {summary['p50_ms']:.1f} ms, p95 {summary['p95_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
