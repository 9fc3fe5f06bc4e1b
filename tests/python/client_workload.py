#!/usr/bin/env python3
"""Drive the whole Chroma HTTP API with the official `chromadb` client, and
check read-your-writes after every write.

Usage:
    client_workload.py URL [--seed N] [--prefix P] [--records N] [--dim D]
                           [--tenant T] [--database D] [--header 'Name: value']
                           [--cleanup] [--clean-start] [--skip-tenant]

URL is ONE Chroma endpoint (a Chroma server or the chroma-ha gateway), e.g.
http://127.0.0.1:8000.

In the default tenant/database AND in a new tenant/database (created here,
`<prefix>-tenant` / `<prefix>-db` unless given) it runs: create_collection,
duplicate create (must fail), get_collection, get_or_create_collection
(existing and new), list_collections (paged), count_collections, add,
upsert, update (metadata merge, key removal, document+embedding), get by ids,
get with where / where_document filters, query with explicit
query_embeddings (+ where), count, delete by ids, delete by where, modify
(rename + metadata), delete_collection. The admin API is used for
create_tenant / get_tenant / create_database / get_database / list_databases
and delete_database (on a scratch database).

Every write is followed at once by reads that must show it (read-your-writes);
on any mismatch the script prints a clear message to stderr and exits 1.

Embeddings are ALWAYS explicit (the client never computes any: that would
need a model download) and collections use `embedding_function=None`.
Runs are deterministic for a given --seed and --prefix; two runs with
different prefixes can run in parallel against the same endpoint.

The last stdout line is a JSON summary:
    {"ok": true, "ops": {...}, "collections": {"tenant/db": {name: count}}, ...}
"""

import argparse
import json
import math
import random
import struct
import sys
import time
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"

# The index settings of the queried collection. Chroma's HNSW index is
# approximate: with its defaults (16 neighbours) a filtered query misses a
# record in about 1 collection out of 100 built like this one, straight on
# one Chroma server, no gateway involved (measured: 3 of 300, and 0 of 300
# with these settings). With at least as many neighbours as records the
# graph is complete, so the exact-result checks below hold for up to 128
# records per collection (--records up to about 120).
EXACT_HNSW = {"max_neighbors": 128, "ef_construction": 256, "ef_search": 256}


class WorkloadError(Exception):
    """A read-your-writes or behaviour check failed."""


def f32(x):
    """Round a float to float32 precision (what Chroma stores)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def close(a, b, tol=1e-6):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and close(float(a), float(b))
    return a == b


def same_metadata(a, b):
    a = a or {}
    b = b or {}
    return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)


class Workload:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        u = urlparse(args.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SystemExit(f"bad URL {args.url!r}: expected http://host:port")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = u.scheme == "https"
        self.headers = {}
        for h in args.header or []:
            name, _, value = h.partition(":")
            self.headers[name.strip()] = value.strip()
        self.settings = Settings(anonymized_telemetry=False)
        self.ops = {}
        self.checks = 0
        self.final = {}

    # ------------------------------------------------------------ helpers
    def op(self, name, n=1):
        self.ops[name] = self.ops.get(name, 0) + n

    def fail(self, where, msg):
        raise WorkloadError(f"[{where}] {msg}")

    def check(self, cond, where, msg):
        self.checks += 1
        if not cond:
            self.fail(where, msg)

    def client(self, tenant, database):
        return chromadb.HttpClient(
            host=self.host,
            port=self.port,
            ssl=self.ssl,
            headers=self.headers or None,
            settings=self.settings,
            tenant=tenant,
            database=database,
        )

    def admin(self):
        s = Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=self.host,
            chroma_server_http_port=self.port,
            chroma_server_ssl_enabled=self.ssl,
            chroma_server_headers=self.headers or None,
            anonymized_telemetry=False,
        )
        return chromadb.AdminClient(s)

    def embedding(self):
        return [f32(round(self.rng.uniform(-1.0, 1.0), 6)) for _ in range(self.args.dim)]

    def new_record(self, i, tag):
        meta = {
            "i": i,
            "group": f"g{i % 3}",
            "score": round(self.rng.uniform(0, 100), 3),
            "flag": (i % 2 == 0),
            "tag": tag,
        }
        doc = f"document {i} {tag} word{i % 5} " + " ".join(
            self.rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"]) for _ in range(3)
        )
        return self.embedding(), doc, meta

    def expect_records(self, col, model, ids, where):
        """get(ids) must return exactly the model's view of these ids."""
        got = col.get(ids=list(ids), include=["embeddings", "documents", "metadatas"])
        self.op("get")
        present = {i for i in ids if i in model}
        got_ids = list(got["ids"])
        self.check(
            set(got_ids) == present,
            where,
            f"get(ids) returned {sorted(got_ids)}, expected {sorted(present)} in collection {col.name!r}",
        )
        for k, rid in enumerate(got_ids):
            emb, doc, meta = model[rid]
            gemb = [float(x) for x in got["embeddings"][k]]
            self.check(
                len(gemb) == len(emb) and all(close(a, b) for a, b in zip(gemb, emb)),
                where,
                f"record {rid!r}: embedding {gemb} != expected {emb}",
            )
            self.check(got["documents"][k] == doc, where, f"record {rid!r}: document {got['documents'][k]!r} != {doc!r}")
            self.check(
                same_metadata(got["metadatas"][k], meta),
                where,
                f"record {rid!r}: metadata {got['metadatas'][k]!r} != {meta!r}",
            )

    def expect_all(self, col, model, where):
        """count() and a full paged get() must match the model."""
        n = col.count()
        self.op("count")
        self.check(n == len(model), where, f"count() = {n}, expected {len(model)} in {col.name!r}")
        seen = []
        offset = 0
        while True:
            page = col.get(limit=17, offset=offset, include=["documents"])
            self.op("get")
            seen.extend(page["ids"])
            if len(page["ids"]) < 17:
                break
            offset += 17
        self.check(
            sorted(seen) == sorted(model),
            where,
            f"paged get() ids differ from model: missing {sorted(set(model) - set(seen))[:10]}, "
            f"extra {sorted(set(seen) - set(model))[:10]}",
        )

    def expect_missing_collection(self, client, name, where):
        try:
            client.get_collection(name, embedding_function=None)
        except Exception as e:  # NotFoundError in 1.5.9
            self.op("get_collection")
            self.check("not exist" in str(e).lower() or "notfound" in type(e).__name__.lower(), where,
                       f"get_collection({name!r}) failed with an unexpected error: {type(e).__name__}: {e}")
            return
        self.fail(where, f"collection {name!r} still exists")

    def listed_names(self, client):
        names = []
        offset = 0
        while True:
            page = client.list_collections(limit=5, offset=offset)
            self.op("list_collections")
            names.extend(c.name for c in page)
            if len(page) < 5:
                break
            offset += 5
        return names

    # ------------------------------------------------------------ phases
    def setup_tenant(self):
        tenant = self.args.tenant or f"{self.args.prefix}-tenant"
        database = self.args.database or f"{self.args.prefix}-db"
        admin = self.admin()
        try:
            admin.create_tenant(tenant)
            self.op("create_tenant")
        except Exception as e:
            if "already exists" not in str(e):
                raise
            self.op("create_tenant_existing")
        t = admin.get_tenant(tenant)
        self.op("get_tenant")
        self.check(t["name"] == tenant, "tenant", f"get_tenant returned {t!r}")
        try:
            admin.create_database(database, tenant=tenant)
            self.op("create_database")
        except Exception as e:
            if not (self.args.clean_start and "already exists" in str(e)):
                raise
            self.op("create_database_existing")
        d = admin.get_database(database, tenant=tenant)
        self.op("get_database")
        self.check(d["name"] == database and d["tenant"] == tenant, "database", f"get_database returned {d!r}")
        dbs = [x["name"] for x in admin.list_databases(tenant=tenant)]
        self.op("list_databases")
        self.check(database in dbs, "database", f"list_databases({tenant!r}) = {dbs}, missing {database!r}")
        # A scratch database: create, see it, delete it, see it gone.
        scratch = f"{database}-scratch"
        admin.create_database(scratch, tenant=tenant)
        self.op("create_database")
        self.check(admin.get_database(scratch, tenant=tenant)["name"] == scratch, "database", "scratch db not visible")
        admin.delete_database(scratch, tenant=tenant)
        self.op("delete_database")
        dbs = [x["name"] for x in admin.list_databases(tenant=tenant)]
        self.op("list_databases")
        self.check(scratch not in dbs, "database", f"deleted database {scratch!r} still listed: {dbs}")
        return tenant, database

    def run_scope(self, tenant, database):
        scope = f"{tenant}/{database}"
        client = self.client(tenant, database)
        p = self.args.prefix
        name_a, name_b, name_c = f"{p}-main", f"{p}-second", f"{p}-main-renamed"
        w = f"{scope} {name_a}"
        if self.args.clean_start:
            for leftover in (name_a, name_b, name_c):
                try:
                    client.delete_collection(leftover)
                    self.op("delete_collection_leftover")
                except Exception as e:
                    if "not exist" not in str(e).lower() and "notfound" not in type(e).__name__.lower():
                        raise

        # -- collections
        col = client.create_collection(
            name_a, metadata={"purpose": "workload", "seed": self.args.seed},
            configuration={"hnsw": EXACT_HNSW}, embedding_function=None
        )
        self.op("create_collection")
        got = client.get_collection(name_a, embedding_function=None)
        self.op("get_collection")
        self.check(got.id == col.id, w, f"get_collection id {got.id} != created {col.id}")
        self.check(
            same_metadata(got.metadata, {"purpose": "workload", "seed": self.args.seed}),
            w,
            f"collection metadata {got.metadata!r}",
        )
        try:
            client.create_collection(name_a, embedding_function=None)
            self.fail(w, "create_collection of an existing name succeeded")
        except WorkloadError:
            raise
        except Exception as e:
            self.op("create_collection_conflict")
            self.check("already exists" in str(e), w, f"duplicate create failed oddly: {type(e).__name__}: {e}")
        again = client.get_or_create_collection(name_a, metadata={"ignored": True}, embedding_function=None)
        self.op("get_or_create_collection")
        self.check(again.id == col.id, w, f"get_or_create(existing) id {again.id} != {col.id}")
        self.check(
            same_metadata(client.get_collection(name_a, embedding_function=None).metadata,
                          {"purpose": "workload", "seed": self.args.seed}),
            w,
            "get_or_create on an existing collection changed its metadata",
        )
        self.op("get_collection")
        second = client.get_or_create_collection(name_b, metadata={"kind": "second"}, embedding_function=None)
        self.op("get_or_create_collection")
        self.check(second.id != col.id, w, "second collection has the same id as the first")
        names = self.listed_names(client)
        self.check(name_a in names and name_b in names, w, f"list_collections {names} lacks {name_a}/{name_b}")
        n_cols = client.count_collections()
        self.op("count_collections")
        self.check(n_cols >= 2, w, f"count_collections() = {n_cols}")

        # -- records: add (batch, then single)
        model = {}
        n = self.args.records
        ids = [f"id-{i:05d}" for i in range(n)]
        embs, docs, metas = [], [], []
        for i, rid in enumerate(ids):
            e, d, m = self.new_record(i, "add")
            embs.append(e)
            docs.append(d)
            metas.append(m)
            model[rid] = (e, d, m)
        for start in range(0, n, 25):
            col.add(ids=ids[start:start + 25], embeddings=embs[start:start + 25],
                    documents=docs[start:start + 25], metadatas=metas[start:start + 25])
            self.op("add")
            self.expect_records(col, model, ids[start:start + 25], f"{w} add")
        e, d, m = self.new_record(n, "single")
        rid = f"id-{n:05d}"
        col.add(ids=rid, embeddings=[e], documents=d, metadatas=m)
        self.op("add")
        model[rid] = (e, d, m)
        self.expect_records(col, model, [rid], f"{w} add single")
        self.expect_all(col, model, f"{w} after add")

        # add of an existing id keeps the old record (Chroma semantics)
        e2, d2, m2 = self.new_record(0, "readd")
        col.add(ids=[ids[0]], embeddings=[e2], documents=[d2], metadatas=[m2])
        self.op("add_existing")
        self.expect_records(col, model, [ids[0]], f"{w} add existing id keeps the old record")

        # -- upsert: some existing, some new (all fields given)
        up_ids = ids[: max(1, n // 5)] + [f"id-{i:05d}" for i in range(n + 1, n + 6)]
        up_e, up_d, up_m = [], [], []
        for k, rid in enumerate(up_ids):
            e, d, m = self.new_record(1000 + k, "upsert")
            up_e.append(e)
            up_d.append(d)
            up_m.append(m)
            if rid in model:
                merged = dict(model[rid][2])
                merged.update(m)
                model[rid] = (e, d, merged)
            else:
                model[rid] = (e, d, m)
        col.upsert(ids=up_ids, embeddings=up_e, documents=up_d, metadatas=up_m)
        self.op("upsert")
        self.expect_records(col, model, up_ids, f"{w} upsert")

        # -- update: metadata merge, key removal, document+embedding
        upd_ids = [rid for rid in sorted(model) if rid.endswith(("3", "7"))][:8]
        col.update(ids=upd_ids, metadatas=[{"updated": True, "round": 1} for _ in upd_ids])
        self.op("update")
        for rid in upd_ids:
            e, d, m = model[rid]
            m = dict(m)
            m.update({"updated": True, "round": 1})
            model[rid] = (e, d, m)
        self.expect_records(col, model, upd_ids, f"{w} update metadata")
        col.update(ids=upd_ids[:3], metadatas=[{"round": None} for _ in upd_ids[:3]])
        self.op("update")
        for rid in upd_ids[:3]:
            e, d, m = model[rid]
            m = {k: v for k, v in m.items() if k != "round"}
            model[rid] = (e, d, m)
        self.expect_records(col, model, upd_ids[:3], f"{w} update removes a metadata key")
        de_ids = upd_ids[3:5]
        de_e = [self.embedding() for _ in de_ids]
        de_d = [f"rewritten document {rid} zeta" for rid in de_ids]
        col.update(ids=de_ids, embeddings=de_e, documents=de_d)
        self.op("update")
        for rid, e, d in zip(de_ids, de_e, de_d):
            model[rid] = (e, d, model[rid][2])
        self.expect_records(col, model, de_ids, f"{w} update document+embedding")
        self.expect_all(col, model, f"{w} after updates")

        # -- filtered reads
        exp = sorted(r for r, (_, _, m) in model.items() if m.get("group") == "g1")
        got = col.get(where={"group": "g1"}, include=[])
        self.op("get")
        self.check(sorted(got["ids"]) == exp, w, f"get(where group=g1) {sorted(got['ids'])} != {exp}")
        exp = sorted(r for r, (_, _, m) in model.items()
                     if m.get("flag") is True and isinstance(m.get("score"), (int, float)) and m["score"] > 50)
        got = col.get(where={"$and": [{"flag": True}, {"score": {"$gt": 50}}]}, include=[])
        self.op("get")
        self.check(sorted(got["ids"]) == exp, w, f"get($and flag & score>50) {sorted(got['ids'])} != {exp}")
        exp = sorted(r for r, (_, d, _) in model.items() if d is not None and "zeta" in d)
        got = col.get(where_document={"$contains": "zeta"}, include=["documents"])
        self.op("get")
        self.check(sorted(got["ids"]) == exp, w, f"get(where_document contains zeta) {sorted(got['ids'])} != {exp}")
        exp = sorted(r for r, (_, d, m) in model.items() if m.get("group") == "g0" and "word2" in d)
        got = col.get(where={"group": "g0"}, where_document={"$contains": "word2"}, include=[])
        self.op("get")
        self.check(sorted(got["ids"]) == exp, w, f"get(where g0 + contains word2) {sorted(got['ids'])} != {exp}")

        # -- query with explicit embeddings
        probe_ids = sorted(model)[:: max(1, len(model) // 4)][:4]
        res = col.query(query_embeddings=[model[r][0] for r in probe_ids], n_results=3,
                        include=["distances", "documents", "metadatas"])
        self.op("query")
        for k, rid in enumerate(probe_ids):
            top = res["ids"][k][0] if res["ids"][k] else None
            self.check(top == rid, w, f"query nearest to {rid!r} returned {res['ids'][k]}")
            self.check(res["distances"][k][0] <= 1e-5, w, f"query distance to itself {res['distances'][k][0]}")
        g2 = sorted(r for r, (_, _, m) in model.items() if m.get("group") == "g2")
        res = col.query(query_embeddings=[model[probe_ids[0]][0]], n_results=len(model), where={"group": "g2"},
                        include=["distances"])
        self.op("query")
        self.check(sorted(res["ids"][0]) == g2, w, f"query(where g2) ids {sorted(res['ids'][0])} != {g2}")

        # -- delete by ids, then by where
        del_ids = sorted(model)[1:6] + ["id-does-not-exist"]
        col.delete(ids=del_ids)
        self.op("delete")
        for rid in del_ids:
            model.pop(rid, None)
        self.expect_records(col, model, del_ids, f"{w} delete by ids")
        self.expect_all(col, model, f"{w} after delete by ids")
        col.delete(where={"group": "g2"})
        self.op("delete_where")
        gone = [r for r, (_, _, m) in model.items() if m.get("group") == "g2"]
        for rid in gone:
            model.pop(rid)
        left = col.get(where={"group": "g2"}, include=[])
        self.op("get")
        self.check(left["ids"] == [], w, f"delete(where g2) left {left['ids']}")
        self.expect_all(col, model, f"{w} after delete by where")

        # -- second collection: a few records, then delete the collection
        s_ids = [f"s-{i}" for i in range(5)]
        s_e = [self.embedding() for _ in s_ids]
        second.add(ids=s_ids, embeddings=s_e)
        self.op("add")
        s_model = {r: (e, None, None) for r, e in zip(s_ids, s_e)}
        self.expect_records(second, s_model, s_ids, f"{scope} {name_b} add without documents")
        client.delete_collection(name_b)
        self.op("delete_collection")
        self.expect_missing_collection(client, name_b, f"{scope} {name_b} delete_collection")
        names = self.listed_names(client)
        self.check(name_b not in names, w, f"deleted collection {name_b} still listed")

        # -- modify: rename + metadata (metadata is replaced)
        col.modify(name=name_c, metadata={"purpose": "renamed", "round": 2})
        self.op("modify")
        renamed = client.get_collection(name_c, embedding_function=None)
        self.op("get_collection")
        self.check(renamed.id == col.id, w, f"renamed collection id {renamed.id} != {col.id}")
        self.check(same_metadata(renamed.metadata, {"purpose": "renamed", "round": 2}), w,
                   f"metadata after modify {renamed.metadata!r}")
        self.expect_missing_collection(client, name_a, f"{w} old name after rename")
        self.expect_all(renamed, model, f"{scope} {name_c} after rename")
        # a write through the renamed handle
        e, d, m = self.new_record(5000, "after-rename")
        renamed.add(ids=["after-rename"], embeddings=[e], documents=[d], metadatas=[m])
        self.op("add")
        model["after-rename"] = (e, d, m)
        self.expect_records(renamed, model, ["after-rename"], f"{scope} {name_c} add after rename")

        final_name = name_c
        if self.args.cleanup:
            client.delete_collection(name_c)
            self.op("delete_collection")
            self.expect_missing_collection(client, name_c, f"{scope} cleanup")
            final = {}
        else:
            final = {final_name: len(model)}
        self.final[scope] = final

    def run(self):
        t0 = time.time()
        self.client(DEFAULT_TENANT, DEFAULT_DATABASE).heartbeat()
        self.op("heartbeat")
        self.run_scope(DEFAULT_TENANT, DEFAULT_DATABASE)
        if not self.args.skip_tenant:
            tenant, database = self.setup_tenant()
            self.run_scope(tenant, database)
        return {
            "ok": True,
            "url": self.args.url,
            "seed": self.args.seed,
            "prefix": self.args.prefix,
            "ops": dict(sorted(self.ops.items())),
            "total_ops": sum(self.ops.values()),
            "checks": self.checks,
            "collections": self.final,
            "elapsed_s": round(time.time() - t0, 3),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="Chroma or gateway URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix", default="wl", help="collection name prefix (3+ chars recommended)")
    ap.add_argument("--records", type=int, default=60)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--tenant", default=None, help="tenant to create (default <prefix>-tenant)")
    ap.add_argument("--database", default=None, help="database to create (default <prefix>-db)")
    ap.add_argument("--header", action="append", help="extra header 'Name: value' (repeatable)")
    ap.add_argument("--cleanup", action="store_true", help="delete the collections at the end")
    ap.add_argument("--clean-start", action="store_true",
                    help="first delete leftovers of an earlier run with the same prefix")
    ap.add_argument("--skip-tenant", action="store_true", help="only use default_tenant/default_database")
    args = ap.parse_args()
    if args.records < 10:
        ap.error("--records must be at least 10")
    w = Workload(args)
    try:
        summary = w.run()
    except WorkloadError as e:
        print(f"WORKLOAD CHECK FAILED: {e}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": str(e), "ops": w.ops, "checks": w.checks}))
        sys.exit(1)
    except Exception as e:  # an unexpected client error is a failure too
        print(f"WORKLOAD ERROR: {type(e).__name__}: {e} (after ops {w.ops})", file=sys.stderr)
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}", "ops": w.ops, "checks": w.checks}))
        sys.exit(1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
