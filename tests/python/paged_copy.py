"""The floor for `chroma-ha rebuild`'s copy speed: a plain paged copy of
every collection of one database from a source Chroma server to a target,
over the HTTP API v2 with the standard library only. One page read, then
written, then the next (no overlap), `--page-size` records per request.

Prints one JSON line: {"records", "bytes", "seconds", "records_per_second",
"mib_per_second"}; "bytes" counts the JSON of the pages read, like the
rebuild's figure.
"""
import argparse
import json
import time
import urllib.request


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        raw = resp.read()
    return raw


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--tenant", default="default_tenant")
    p.add_argument("--database", default="default_database")
    p.add_argument("--page-size", type=int, default=1000)
    a = p.parse_args()
    base = "/api/v2/tenants/%s/databases/%s/collections" % (a.tenant, a.database)
    started = time.monotonic()
    records = nbytes = 0
    for c in json.loads(call("GET", a.source + base + "?limit=100000")):
        body = {"name": c["name"], "metadata": c.get("metadata")}
        if c.get("configuration_json"):
            body["configuration"] = c["configuration_json"]
        created = json.loads(call("POST", a.target + base, body))
        offset = 0
        while True:
            raw = call("POST", "%s%s/%s/get" % (a.source, base, c["id"]),
                       {"include": ["documents", "metadatas", "embeddings", "uris"],
                        "limit": a.page_size, "offset": offset})
            page = json.loads(raw)
            n = len(page["ids"])
            if n:
                add = {"ids": page["ids"], "embeddings": page["embeddings"]}
                for col in ("documents", "metadatas", "uris"):
                    vals = page.get(col)
                    if vals and any(v not in (None, {}) for v in vals):
                        add[col] = vals
                call("POST", "%s%s/%s/add" % (a.target, base, created["id"]), add)
            records += n
            nbytes += len(raw)
            offset += n
            if n < a.page_size:
                break
    secs = time.monotonic() - started
    print(json.dumps({"records": records, "bytes": nbytes, "seconds": secs,
                      "records_per_second": records / secs,
                      "mib_per_second": nbytes / 1048576 / secs}))


if __name__ == "__main__":
    main()
