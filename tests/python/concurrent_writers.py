#!/usr/bin/env python3
"""Concurrent writers with an exact record of what was acknowledged, for
zero-loss checks.

Two sub-commands:

  run URL --out STATE.json [--threads N] [--collections C] [--ops N]
          [--duration S] [--batch B] [--seed N] [--prefix P] [--dim D]
          [--tenant T] [--database D] [--timeout S] [--header 'Name: value']
      N threads write (add / upsert / delete by ids) with EXPLICIT embeddings
      into C collections `<prefix>-0 .. <prefix>-(C-1)` (created with
      get_or_create_collection, embedding_function=None). Each thread owns its
      ids (`<prefix>-t<thread>-<n>`), so threads never touch the same record
      and the expected final state does not depend on how their writes
      interleave. Every operation is recorded with its outcome: "ok" (the
      endpoint acknowledged it) or "error" (the client raised; the write may
      or may not have happened). Failures do not stop the thread; it goes on
      after a short pause (the point is to keep writing through faults).
      STATE.json holds: every operation, per-op counts, and the expected
      final content per collection:
        expected[collection][id] = {"document", "metadata", "embedding"}
          for ids whose last write was acknowledged and is a present record,
        absent[collection] = ids whose last acknowledged write deleted them,
        uncertain[collection] = ids whose last write raised (either outcome
          is acceptable).
      Prints a JSON summary line; exits 0 even when writes failed (use
      --fail-on-error to exit 2 if any write raised).

  verify URL --state STATE.json [--tenant T] [--database D]
      Reads every collection of the state file and checks: every expected
      record is present with the same document, metadata and embedding;
      every absent id is absent; no id exists that no writer ever wrote.
      Prints a JSON summary line; exits 1 on any lost or wrong record.

URL is one endpoint: a Chroma server or the chroma-ha gateway.
"""

import argparse
import json
import random
import struct
import sys
import threading
import time
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def close(a, b, tol=1e-6):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def parse_url(url):
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise SystemExit(f"bad URL {url!r}: expected http://host:port")
    return u.hostname, u.port or (443 if u.scheme == "https" else 80), u.scheme == "https"


def parse_headers(raw):
    headers = {}
    for h in raw or []:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    return headers or None


def make_client(args, timeout):
    host, port, ssl = parse_url(args.url)
    client = chromadb.HttpClient(
        host=host,
        port=port,
        ssl=ssl,
        headers=parse_headers(args.header),
        settings=Settings(anonymized_telemetry=False),
        tenant=args.tenant,
        database=args.database,
    )
    if timeout:
        try:  # chromadb 1.5.9 uses an httpx client without any timeout
            import httpx

            client._server._session.timeout = httpx.Timeout(timeout)
        except Exception:
            pass
    return client


def client_with_retry(args, deadline):
    last = None
    while time.time() < deadline:
        try:
            return make_client(args, args.timeout)
        except Exception as e:  # endpoint down: keep trying until the deadline
            last = e
            time.sleep(0.2)
    raise SystemExit(f"cannot connect to {args.url}: {last}")


class Writer(threading.Thread):
    def __init__(self, tid, args, names, t_end, start_barrier):
        super().__init__(name=f"writer-{tid}", daemon=True)
        self.tid = tid
        self.args = args
        self.names = names
        self.t_end = t_end
        self.barrier = start_barrier
        self.rng = random.Random(args.seed * 1000 + tid)
        self.log = []
        self.next_id = 0
        self.version = 0
        # ids this thread believes present / uncertain, per collection
        self.present = {n: set() for n in names}
        self.uncertain = {n: set() for n in names}

    def content(self, rid):
        self.version += 1
        emb = [f32(round(self.rng.uniform(-1, 1), 6)) for _ in range(self.args.dim)]
        doc = f"{rid} v{self.version}"
        meta = {"thread": self.tid, "v": self.version, "kind": "cw"}
        return emb, doc, meta

    def fresh_ids(self, k):
        out = []
        for _ in range(k):
            out.append(f"{self.args.prefix}-t{self.tid}-{self.next_id}")
            self.next_id += 1
        return out

    def run(self):
        args = self.args
        self.barrier.wait()
        try:
            client = client_with_retry(args, self.t_end + 30)
        except SystemExit as e:
            self.log.append({"thread": self.tid, "seq": 0, "op": "connect", "ok": False, "error": str(e)})
            return
        cols = {}
        seq = 0
        while seq < args.ops and time.time() < self.t_end:
            seq += 1
            name = self.names[self.rng.randrange(len(self.names))]
            r = self.rng.random()
            known = sorted(self.present[name] | self.uncertain[name])
            if r < 0.5 or not known:
                op = "add"
                ids = self.fresh_ids(args.batch)
            elif r < 0.8:
                op = "upsert"
                k = max(1, args.batch // 2)
                ids = self.rng.sample(known, min(k, len(known))) + self.fresh_ids(args.batch - k)
            else:
                op = "delete"
                ids = self.rng.sample(known, min(max(1, args.batch // 2), len(known)))
            rec = {"thread": self.tid, "seq": seq, "op": op, "collection": name, "ids": ids,
                   "t_start": round(time.time(), 4)}
            if op != "delete":
                contents = [self.content(rid) for rid in ids]
                rec["records"] = {rid: {"embedding": e, "document": d, "metadata": m}
                                  for rid, (e, d, m) in zip(ids, contents)}
            try:
                col = cols.get(name)
                if col is None:
                    col = client.get_collection(name, embedding_function=None)
                    cols[name] = col
                if op == "add":
                    col.add(ids=ids, embeddings=[c[0] for c in contents], documents=[c[1] for c in contents],
                            metadatas=[c[2] for c in contents])
                elif op == "upsert":
                    col.upsert(ids=ids, embeddings=[c[0] for c in contents], documents=[c[1] for c in contents],
                               metadatas=[c[2] for c in contents])
                else:
                    col.delete(ids=ids)
                rec["ok"] = True
                for rid in ids:
                    self.uncertain[name].discard(rid)
                    if op == "delete":
                        self.present[name].discard(rid)
                    else:
                        self.present[name].add(rid)
            except Exception as e:
                rec["ok"] = False
                rec["error"] = f"{type(e).__name__}: {e}"[:300]
                for rid in ids:
                    self.present[name].discard(rid)
                    self.uncertain[name].add(rid)
                time.sleep(args.error_sleep)
            rec["t_end"] = round(time.time(), 4)
            self.log.append(rec)


def expected_state(names, ops):
    """Replay the per-thread op logs (ids are disjoint across threads)."""
    state = {n: {} for n in names}  # id -> ("present", content) | ("absent",) | ("uncertain",)
    for rec in sorted(ops, key=lambda r: (r["thread"], r["seq"])):
        if rec.get("op") not in ("add", "upsert", "delete"):
            continue
        st = state[rec["collection"]]
        for rid in rec["ids"]:
            prev = st.get(rid, ("absent",))
            if not rec["ok"]:
                st[rid] = ("uncertain",)
            elif rec["op"] == "delete":
                st[rid] = ("absent",)
            elif rec["op"] == "upsert":
                st[rid] = ("present", rec["records"][rid])
            else:  # add keeps an existing record
                if prev[0] == "absent":
                    st[rid] = ("present", rec["records"][rid])
                elif prev[0] == "uncertain":
                    st[rid] = ("uncertain",)
    expected = {n: {rid: v[1] for rid, v in st.items() if v[0] == "present"} for n, st in state.items()}
    absent = {n: sorted(rid for rid, v in st.items() if v[0] == "absent") for n, st in state.items()}
    uncertain = {n: sorted(rid for rid, v in st.items() if v[0] == "uncertain") for n, st in state.items()}
    return expected, absent, uncertain


def cmd_run(args):
    names = [f"{args.prefix}-{i}" for i in range(args.collections)]
    t0 = time.time()
    setup = client_with_retry(args, t0 + 30)
    for n in names:
        setup.get_or_create_collection(n, metadata={"purpose": "concurrent_writers"}, embedding_function=None)
    t_end = t0 + args.duration if args.duration else float("inf")
    barrier = threading.Barrier(args.threads)
    writers = [Writer(t, args, names, t_end, barrier) for t in range(args.threads)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    ops = [rec for w in writers for rec in w.log]
    expected, absent, uncertain = expected_state(names, ops)
    counts = {}
    for rec in ops:
        key = f"{rec['op']}_{'ok' if rec['ok'] else 'error'}"
        counts[key] = counts.get(key, 0) + 1
    acked_ids = sorted({rid for rec in ops if rec["ok"] and rec["op"] != "delete" for rid in rec["ids"]})
    state = {
        "url": args.url,
        "tenant": args.tenant,
        "database": args.database,
        "seed": args.seed,
        "prefix": args.prefix,
        "threads": args.threads,
        "collections": names,
        "counts": counts,
        "acknowledged_write_ids": acked_ids,
        "expected": expected,
        "absent": absent,
        "uncertain": uncertain,
        "ops": ops,
    }
    with open(args.out, "w") as f:
        json.dump(state, f)
    failed = sum(v for k, v in counts.items() if k.endswith("_error"))
    summary = {
        "ok": failed == 0 or not args.fail_on_error,
        "ops": len(ops),
        "counts": dict(sorted(counts.items())),
        "failed_ops": failed,
        "expected_records": sum(len(v) for v in expected.values()),
        "uncertain_records": sum(len(v) for v in uncertain.values()),
        "elapsed_s": round(time.time() - t0, 3),
        "state_file": args.out,
    }
    print(json.dumps(summary))
    if failed and args.fail_on_error:
        sys.exit(2)


def cmd_verify(args):
    with open(args.state) as f:
        state = json.load(f)
    args.tenant = args.tenant or state["tenant"]
    args.database = args.database or state["database"]
    client = make_client(args, args.timeout)
    problems = []
    written = {n: set() for n in state["collections"]}
    for rec in state["ops"]:
        if rec.get("collection") in written:
            written[rec["collection"]].update(rec["ids"])
    checked = 0
    for name in state["collections"]:
        col = client.get_collection(name, embedding_function=None)
        got = {}
        offset = 0
        while True:
            page = col.get(limit=500, offset=offset, include=["embeddings", "documents", "metadatas"])
            for k, rid in enumerate(page["ids"]):
                got[rid] = (list(map(float, page["embeddings"][k])), page["documents"][k], page["metadatas"][k])
            if len(page["ids"]) < 500:
                break
            offset += 500
        for rid, exp in state["expected"][name].items():
            checked += 1
            if rid not in got:
                problems.append(f"{name}: acknowledged record {rid!r} is MISSING")
                continue
            emb, doc, meta = got[rid]
            if doc != exp["document"]:
                problems.append(f"{name}: record {rid!r} document {doc!r} != expected {exp['document']!r}")
            if (meta or {}) != exp["metadata"]:
                problems.append(f"{name}: record {rid!r} metadata {meta!r} != expected {exp['metadata']!r}")
            if len(emb) != len(exp["embedding"]) or not all(close(a, b) for a, b in zip(emb, exp["embedding"])):
                problems.append(f"{name}: record {rid!r} embedding differs from the acknowledged one")
        for rid in state["absent"][name]:
            checked += 1
            if rid in got:
                problems.append(f"{name}: record {rid!r} was deleted (acknowledged) but is present")
        for rid in got:
            if rid not in written[name]:
                problems.append(f"{name}: record {rid!r} was never written by any writer")
    summary = {"ok": not problems, "checked": checked, "problems": len(problems), "first_problems": problems[:20]}
    print(json.dumps(summary))
    if problems:
        for p in problems[:50]:
            print(f"ZERO-LOSS CHECK FAILED: {p}", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="write concurrently and record outcomes")
    r.add_argument("url")
    r.add_argument("--out", required=True, help="state file to write (JSON)")
    r.add_argument("--threads", type=int, default=4)
    r.add_argument("--collections", type=int, default=1)
    r.add_argument("--ops", type=int, default=50, help="operations per thread")
    r.add_argument("--duration", type=float, default=0, help="stop after S seconds (0 = no limit)")
    r.add_argument("--batch", type=int, default=4, help="ids per operation")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--prefix", default="cw")
    r.add_argument("--dim", type=int, default=8)
    r.add_argument("--error-sleep", type=float, default=0.05, help="pause after a failed write")
    r.add_argument("--fail-on-error", action="store_true", help="exit 2 if any write raised")
    v = sub.add_parser("verify", help="check an endpoint against a state file")
    v.add_argument("url")
    v.add_argument("--state", required=True)
    for p in (r, v):
        p.add_argument("--tenant", default=None if p is v else "default_tenant")
        p.add_argument("--database", default=None if p is v else "default_database")
        p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
        p.add_argument("--header", action="append", help="extra header 'Name: value' (repeatable)")
    args = ap.parse_args()
    if args.cmd == "run":
        if args.threads < 1 or args.collections < 1 or args.batch < 2:
            ap.error("need --threads >= 1, --collections >= 1, --batch >= 2")
        cmd_run(args)
    else:
        cmd_verify(args)


if __name__ == "__main__":
    main()
