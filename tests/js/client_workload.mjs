#!/usr/bin/env node
// Drive the whole Chroma collection and record API with the official JS
// client (npm `chromadb`, pinned in package.json / package-lock.json), and
// check read-your-writes after every write. The JS counterpart of
// tests/python/client_workload.py.
//
// Usage:
//   node client_workload.mjs URL [--seed N] [--prefix P] [--records N] [--dim D]
//                                [--header 'Name: value']... [--cleanup] [--clean-start]
//                                [--skip-tenant]
//
// URL is ONE Chroma endpoint (a Chroma server or the chroma-ha gateway),
// e.g. http://127.0.0.1:8000.
//
// In default_tenant/default_database AND in a new tenant/database
// (`<prefix>-tenant` / `<prefix>-db`, created with the AdminClient, which
// also creates, lists and deletes a scratch database) it runs:
// createCollection, a create of an existing name (must fail with
// ChromaUniqueError), getCollection, getCollections, getCollectionById,
// getOrCreateCollection (existing: metadata untouched; new), listCollections
// (paged), countCollections, add (batches and one record), add of an
// existing id (the old record stays), upsert (existing and new ids), update
// (metadata merge, document + embedding; an unknown id is ignored), get (by
// ids, where, whereDocument, both, include, limit/offset pages), peek, query
// (queryEmbeddings, with where, whereDocument and ids), count, delete by ids
// (an unknown id included) and by where, a write through a
// `client.collection(id)` handle, list-valued metadata ($contains), delete
// by whereDocument, modify (rename + metadata; index configuration), a
// create with an index configuration, a rename onto an existing name (must
// fail, nothing changes), deleteCollection, getCollection /
// deleteCollection of a missing name (ChromaNotFoundError), heartbeat,
// version, getUserIdentity and the pre-flight checks.
//
// Embeddings are ALWAYS explicit and every collection is created with
// `embeddingFunction: null`: the server then stores no embedding function,
// so the client never tries to load `@chroma-core/default-embed` (not
// installed) and never downloads a model. An embedding the client would
// have to compute is a failure of this script.
//
// Request shapes of this client that differ from the Python one: every
// embedding goes as base64 float32 (the pre-flight checks say the server
// supports it); a metadata value `null` is dropped by the client, so an
// update cannot remove a key (not tested here; the Python workload does);
// `delete` with `limit` is refused by chroma-ha on purpose (not used).
//
// Runs are deterministic for a given --seed and --prefix; two runs with
// different prefixes can run in parallel against the same endpoint.
//
// Exit 0 when every check passed, 1 on any mismatch or client error (a
// message on stderr), 2 on bad arguments. The last stdout line is a JSON
// summary:
//   {"ok": true, "client": "chromadb-js 3.x.y", "ops": {...}, "checks": N,
//    "collections": {"tenant/db": {name: count}}, ...}

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import {
  AdminClient,
  ChromaClient,
  ChromaNotFoundError,
  ChromaUniqueError,
} from "chromadb";

const DEFAULT_TENANT = "default_tenant";
const DEFAULT_DATABASE = "default_database";
const PAGE = 17;
// The index settings of the queried collection. Chroma's HNSW index is
// approximate: with its defaults (16 neighbours) a filtered query misses a
// record in about 1 collection out of 100 built like this one, straight on
// one Chroma server (measured: 3 of 300, and 0 of 300 with these settings).
// With at least as many neighbours as records the graph is complete, so the
// exact-result checks below hold for up to 128 records per collection.
const EXACT_HNSW = { max_neighbors: 128, ef_construction: 256, ef_search: 256 };

/** A read-your-writes or behaviour check failed. */
class WorkloadError extends Error {}

function clientVersion() {
  const url = new URL("./node_modules/chromadb/package.json", import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

/** A small deterministic PRNG (mulberry32): floats in [0, 1). */
function rngFrom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function close(a, b, tol = 1e-6) {
  return Math.abs(a - b) <= tol * Math.max(1, Math.abs(a), Math.abs(b));
}

function sameValue(a, b) {
  if (typeof a === "number" && typeof b === "number") return close(a, b);
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => sameValue(x, b[i]));
  }
  return a === b;
}

function sameMetadata(a, b) {
  a = a || {};
  b = b || {};
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && sameValue(a[k], b[k]));
}

const sorted = (xs) => [...xs].sort();
const sameList = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
const show = (x) => JSON.stringify(x);
const pad = (i) => String(i).padStart(5, "0");

class Workload {
  constructor(args) {
    this.args = args;
    this.rng = rngFrom(args.seed);
    let u;
    try {
      u = new URL(args.url);
    } catch {
      u = null;
    }
    if (!u || !["http:", "https:"].includes(u.protocol) || !u.hostname) {
      usage(`bad URL ${show(args.url)}: expected http://host:port`);
    }
    this.host = u.hostname.replace(/^\[(.*)\]$/, "$1");
    this.ssl = u.protocol === "https:";
    this.port = u.port ? Number(u.port) : this.ssl ? 443 : 80;
    this.headers = {};
    for (const h of args.header) {
      const at = h.indexOf(":");
      if (at < 1) usage(`bad --header ${show(h)}: expected 'Name: value'`);
      this.headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
    }
    this.ops = {};
    this.checks = 0;
    this.final = {};
  }

  // ------------------------------------------------------------ helpers
  op(name, n = 1) {
    this.ops[name] = (this.ops[name] || 0) + n;
  }

  fail(where, msg) {
    throw new WorkloadError(`[${where}] ${msg}`);
  }

  check(cond, where, msg) {
    this.checks += 1;
    if (!cond) this.fail(where, typeof msg === "function" ? msg() : msg);
  }

  /** Runs `fn`, which must throw an instance of `errorClass`. */
  async expectError(fn, errorClass, where, what) {
    try {
      await fn();
    } catch (e) {
      this.check(
        e instanceof errorClass,
        where,
        () => `${what} failed with ${e?.constructor?.name}: ${e?.message}, expected ${errorClass.name}`,
      );
      return e;
    }
    this.fail(where, `${what} succeeded, expected ${errorClass.name}`);
  }

  /** Runs `fn`, which must throw (any client error). */
  async expectSomeError(fn, where, what) {
    try {
      await fn();
    } catch (e) {
      this.check(e instanceof Error && !(e instanceof WorkloadError), where, `${what}: ${e}`);
      return e;
    }
    this.fail(where, `${what} succeeded, expected an error`);
  }

  client(tenant, database) {
    return new ChromaClient({
      host: this.host,
      port: this.port,
      ssl: this.ssl,
      tenant,
      database,
      headers: this.headers,
    });
  }

  admin() {
    return new AdminClient({ host: this.host, port: this.port, ssl: this.ssl, headers: this.headers });
  }

  embedding() {
    const e = [];
    for (let k = 0; k < this.args.dim; k++) {
      e.push(Math.fround(Number((this.rng() * 2 - 1).toFixed(6))));
    }
    return e;
  }

  pick(xs) {
    return xs[Math.floor(this.rng() * xs.length)];
  }

  /** One record: [embedding, document, metadata]. */
  newRecord(i, tag) {
    // `score` always has a fractional part so it stays a float on every path.
    const meta = {
      i,
      group: `g${i % 3}`,
      score: Math.floor(this.rng() * 100) + 0.25 + (i % 4) * 0.125,
      flag: i % 2 === 0,
      tag,
    };
    const words = [0, 1, 2].map(() => this.pick(["alpha", "beta", "gamma", "delta", "epsilon"]));
    const doc = `document ${i} ${tag} word${i % 5} ${words.join(" ")}`;
    return [this.embedding(), doc, meta];
  }

  /** get(ids) must return exactly the model's view of these ids. */
  async expectRecords(col, model, ids, where) {
    const got = await col.get({ ids: [...ids], include: ["embeddings", "documents", "metadatas"] });
    this.op("get");
    const present = ids.filter((i) => model.has(i));
    this.check(
      sameList(got.ids, present),
      where,
      () => `get(ids) returned ${show(sorted(got.ids))}, expected ${show(sorted(present))} in ${col.name}`,
    );
    got.ids.forEach((rid, k) => {
      const [emb, doc, meta] = model.get(rid);
      const gemb = got.embeddings[k] || [];
      this.check(
        gemb.length === emb.length && gemb.every((x, j) => close(x, emb[j])),
        where,
        () => `record ${rid}: embedding ${show(gemb)} != expected ${show(emb)}`,
      );
      this.check(
        got.documents[k] === doc,
        where,
        () => `record ${rid}: document ${show(got.documents[k])} != ${show(doc)}`,
      );
      this.check(
        sameMetadata(got.metadatas[k], meta),
        where,
        () => `record ${rid}: metadata ${show(got.metadatas[k])} != ${show(meta)}`,
      );
    });
  }

  /** count() and a full paged get() must match the model. */
  async expectAll(col, model, where) {
    const n = await col.count();
    this.op("count");
    this.check(n === model.size, where, () => `count() = ${n}, expected ${model.size} in ${col.name}`);
    const seen = [];
    for (let offset = 0; ; offset += PAGE) {
      const page = await col.get({ limit: PAGE, offset, include: ["documents"] });
      this.op("get");
      this.check(
        page.documents.length === page.ids.length,
        where,
        () => `get(include documents) returned ${page.documents.length} documents for ${page.ids.length} ids`,
      );
      seen.push(...page.ids);
      if (page.ids.length < PAGE) break;
    }
    this.check(
      sameList(seen, [...model.keys()]),
      where,
      () => `paged get() ids differ from the model: got ${seen.length}, expected ${model.size}`,
    );
    this.check(new Set(seen).size === seen.length, where, "paged get() returned an id twice");
  }

  async expectMissingCollection(client, name, where) {
    await this.expectError(
      () => client.getCollection({ name }),
      ChromaNotFoundError,
      where,
      `getCollection(${show(name)})`,
    );
    this.op("get_collection_missing");
  }

  async listedNames(client) {
    const names = [];
    for (let offset = 0; ; offset += 5) {
      const page = await client.listCollections({ limit: 5, offset });
      this.op("list_collections");
      names.push(...page.map((c) => c.name));
      if (page.length < 5) break;
    }
    return names;
  }

  // ------------------------------------------------------------ phases
  async setupTenant() {
    const tenant = `${this.args.prefix}-tenant`;
    const database = `${this.args.prefix}-db`;
    const admin = this.admin();
    try {
      await admin.createTenant({ name: tenant });
      this.op("create_tenant");
    } catch (e) {
      if (!(this.args.cleanStart && e instanceof ChromaUniqueError)) throw e;
      this.op("create_tenant_existing");
    }
    const t = await admin.getTenant({ name: tenant });
    this.op("get_tenant");
    this.check(t === tenant, "tenant", () => `getTenant returned ${show(t)}`);
    try {
      await admin.createDatabase({ name: database, tenant });
      this.op("create_database");
    } catch (e) {
      if (!(this.args.cleanStart && e instanceof ChromaUniqueError)) throw e;
      this.op("create_database_existing");
    }
    const d = await admin.getDatabase({ name: database, tenant });
    this.op("get_database");
    this.check(d.name === database && d.tenant === tenant, "database", () => `getDatabase returned ${show(d)}`);
    await this.expectError(
      () => admin.createDatabase({ name: database, tenant }),
      ChromaUniqueError,
      "database",
      "createDatabase of an existing name",
    );
    this.op("create_database_conflict");
    let dbs = (await admin.listDatabases({ tenant })).map((x) => x.name);
    this.op("list_databases");
    this.check(dbs.includes(database), "database", () => `listDatabases = ${show(dbs)}, missing ${database}`);
    const scratch = `${database}-scratch`;
    await admin.createDatabase({ name: scratch, tenant });
    this.op("create_database");
    const s = await admin.getDatabase({ name: scratch, tenant });
    this.op("get_database");
    this.check(s.name === scratch, "database", "scratch database not visible");
    await admin.deleteDatabase({ name: scratch, tenant });
    this.op("delete_database");
    dbs = (await admin.listDatabases({ tenant })).map((x) => x.name);
    this.op("list_databases");
    this.check(!dbs.includes(scratch), "database", () => `deleted database ${scratch} still listed: ${show(dbs)}`);
    await this.expectError(
      () => admin.getDatabase({ name: scratch, tenant }),
      ChromaNotFoundError,
      "database",
      "getDatabase of the deleted scratch database",
    );
    this.op("get_database_missing");
    return [tenant, database];
  }

  async runScope(tenant, database) {
    const scope = `${tenant}/${database}`;
    const client = this.client(tenant, database);
    const p = this.args.prefix;
    const [nameA, nameB, nameC] = [`${p}-main`, `${p}-second`, `${p}-main-renamed`];
    const w = `${scope} ${nameA}`;
    if (this.args.cleanStart) {
      for (const leftover of [nameA, nameB, nameC]) {
        try {
          await client.deleteCollection({ name: leftover });
          this.op("delete_collection_leftover");
        } catch (e) {
          if (!(e instanceof ChromaNotFoundError)) throw e;
        }
      }
    }

    // -- collections
    const metaA = { purpose: "workload", seed: this.args.seed, client: "js" };
    const col = await client.createCollection({
      name: nameA,
      metadata: metaA,
      configuration: { hnsw: EXACT_HNSW },
      embeddingFunction: null,
    });
    this.op("create_collection");
    this.check(col.name === nameA && typeof col.id === "string", w, () => `createCollection returned ${col.name} ${col.id}`);
    this.check(
      col.configuration?.embedding_function == null && col.embeddingFunction === undefined,
      w,
      () => `the collection has an embedding function: ${show(col.configuration)}`,
    );
    const got = await client.getCollection({ name: nameA });
    this.op("get_collection");
    this.check(got.id === col.id, w, () => `getCollection id ${got.id} != created ${col.id}`);
    this.check(sameMetadata(got.metadata, metaA), w, () => `collection metadata ${show(got.metadata)}`);
    const byId = await client.getCollectionById(col.id);
    this.op("get_collection_by_id");
    this.check(byId.name === nameA && byId.id === col.id, w, () => `getCollectionById returned ${byId.name} ${byId.id}`);
    await this.expectError(
      () => client.createCollection({ name: nameA, embeddingFunction: null }),
      ChromaUniqueError,
      w,
      "createCollection of an existing name",
    );
    this.op("create_collection_conflict");
    const again = await client.getOrCreateCollection({ name: nameA, metadata: { ignored: true }, embeddingFunction: null });
    this.op("get_or_create_collection");
    this.check(again.id === col.id, w, () => `getOrCreate(existing) id ${again.id} != ${col.id}`);
    const unchanged = await client.getCollection({ name: nameA });
    this.op("get_collection");
    this.check(
      sameMetadata(unchanged.metadata, metaA),
      w,
      () => `getOrCreate on an existing collection changed its metadata: ${show(unchanged.metadata)}`,
    );
    const second = await client.getOrCreateCollection({
      name: nameB,
      metadata: { kind: "second" },
      configuration: { hnsw: { space: "cosine", ef_search: 50 } },
      embeddingFunction: null,
    });
    this.op("get_or_create_collection");
    this.check(second.id !== col.id, w, "the second collection has the same id as the first");
    this.check(
      second.configuration?.hnsw?.space === "cosine" && second.configuration?.hnsw?.ef_search === 50,
      w,
      () => `getOrCreate(new, configuration) answered ${show(second.configuration)}`,
    );
    const both = await client.getCollections([nameA, nameB]);
    this.op("get_collections");
    this.check(
      show(both.map((c) => c.id)) === show([col.id, second.id]),
      w,
      () => `getCollections ids ${show(both.map((c) => c.id))}`,
    );
    let names = await this.listedNames(client);
    this.check(names.includes(nameA) && names.includes(nameB), w, () => `listCollections ${show(names)} lacks ${nameA}/${nameB}`);
    this.check(new Set(names).size === names.length, w, () => `listCollections pages repeat a name: ${show(names)}`);
    const nCols = await client.countCollections();
    this.op("count_collections");
    this.check(nCols === names.length, w, () => `countCollections() = ${nCols}, listCollections saw ${names.length}`);

    // -- records: add (batches, then one record)
    const model = new Map();
    const n = this.args.records;
    const ids = Array.from({ length: n }, (_, i) => `id-${pad(i)}`);
    const recs = ids.map((rid, i) => {
      const r = this.newRecord(i, "add");
      model.set(rid, r);
      return r;
    });
    for (let start = 0; start < n; start += 25) {
      const part = recs.slice(start, start + 25);
      await col.add({
        ids: ids.slice(start, start + 25),
        embeddings: part.map((r) => r[0]),
        documents: part.map((r) => r[1]),
        metadatas: part.map((r) => r[2]),
      });
      this.op("add");
      await this.expectRecords(col, model, ids.slice(start, start + 25), `${w} add`);
    }
    {
      const r = this.newRecord(n, "single");
      const rid = `id-${pad(n)}`;
      await col.add({ ids: [rid], embeddings: [r[0]], documents: [r[1]], metadatas: [r[2]] });
      this.op("add");
      model.set(rid, r);
      await this.expectRecords(col, model, [rid], `${w} add one`);
    }
    await this.expectAll(col, model, `${w} after add`);

    // add of an existing id (and a new one in the same call): the existing
    // record stays as it was, the new one is added (Chroma semantics).
    {
      const old = this.newRecord(0, "readd");
      const fresh = this.newRecord(n + 100, "fresh");
      const freshId = `id-${pad(n + 100)}`;
      await col.add({
        ids: [ids[0], freshId],
        embeddings: [old[0], fresh[0]],
        documents: [old[1], fresh[1]],
        metadatas: [old[2], fresh[2]],
      });
      this.op("add_existing");
      model.set(freshId, fresh);
      await this.expectRecords(col, model, [ids[0], freshId], `${w} add of an existing id keeps the old record`);
    }

    // -- upsert: some existing, some new (every field given)
    const upIds = [...ids.slice(0, Math.max(1, Math.floor(n / 5))), ...[1, 2, 3, 4, 5].map((k) => `id-${pad(n + k)}`)];
    const ups = upIds.map((rid, k) => {
      const r = this.newRecord(1000 + k, "upsert");
      const before = model.get(rid);
      model.set(rid, before ? [r[0], r[1], { ...before[2], ...r[2] }] : r);
      return r;
    });
    await col.upsert({
      ids: upIds,
      embeddings: ups.map((r) => r[0]),
      documents: ups.map((r) => r[1]),
      metadatas: ups.map((r) => r[2]),
    });
    this.op("upsert");
    await this.expectRecords(col, model, upIds, `${w} upsert`);

    // -- update: metadata merge; document + embedding; an unknown id
    const updIds = sorted(model.keys()).filter((rid) => rid.endsWith("3") || rid.endsWith("7")).slice(0, 8);
    await col.update({ ids: updIds, metadatas: updIds.map(() => ({ updated: true, round: 1 })) });
    this.op("update");
    for (const rid of updIds) {
      const [e, d, m] = model.get(rid);
      model.set(rid, [e, d, { ...m, updated: true, round: 1 }]);
    }
    await this.expectRecords(col, model, updIds, `${w} update metadata`);
    const deIds = updIds.slice(3, 5);
    const deE = deIds.map(() => this.embedding());
    const deD = deIds.map((rid) => `rewritten document ${rid} zeta`);
    await col.update({ ids: deIds, embeddings: deE, documents: deD });
    this.op("update");
    deIds.forEach((rid, k) => model.set(rid, [deE[k], deD[k], model.get(rid)[2]]));
    await this.expectRecords(col, model, deIds, `${w} update document+embedding`);
    await col.update({ ids: ["id-never-added"], metadatas: [{ updated: true }] });
    this.op("update_unknown_id");
    await this.expectRecords(col, model, ["id-never-added"], `${w} update of an unknown id adds nothing`);
    await this.expectAll(col, model, `${w} after updates`);

    // -- filtered reads
    const entries = [...model.entries()];
    const ofModel = (pred) => sorted(entries.filter(([, r]) => pred(r)).map(([rid]) => rid));
    {
      const exp = ofModel(([, , m]) => m.group === "g1");
      const res = await col.get({ where: { group: "g1" }, include: [] });
      this.op("get");
      this.check(sameList(res.ids, exp), w, () => `get(where group=g1) ${show(sorted(res.ids))} != ${show(exp)}`);
      this.check(res.documents.length === 0 && res.metadatas.length === 0, w, "get(include: []) returned fields");
    }
    {
      const exp = ofModel(([, , m]) => m.flag === true && m.score > 50);
      const res = await col.get({ where: { $and: [{ flag: true }, { score: { $gt: 50 } }] }, include: ["metadatas"] });
      this.op("get");
      this.check(sameList(res.ids, exp), w, () => `get($and flag, score>50) ${show(sorted(res.ids))} != ${show(exp)}`);
      this.check(
        res.ids.every((rid, k) => sameMetadata(res.metadatas[k], model.get(rid)[2])),
        w,
        "get(include metadatas) returned other metadata",
      );
    }
    {
      const exp = ofModel(([, , m]) => ["g0", "g2"].includes(m.group) && m.i >= 10);
      const res = await col.get({ where: { $and: [{ group: { $in: ["g0", "g2"] } }, { i: { $gte: 10 } }] }, include: [] });
      this.op("get");
      this.check(sameList(res.ids, exp), w, () => `get($in, $gte) ${show(sorted(res.ids))} != ${show(exp)}`);
    }
    {
      const exp = ofModel(([, d]) => d.includes("zeta"));
      const res = await col.get({ whereDocument: { $contains: "zeta" }, include: ["documents"] });
      this.op("get");
      this.check(sameList(res.ids, exp), w, () => `get(whereDocument contains zeta) ${show(sorted(res.ids))} != ${show(exp)}`);
      this.check(exp.length === deIds.length, w, "the rewritten documents are not all found");
    }
    {
      const exp = ofModel(([, d, m]) => m.group === "g0" && d.includes("word2"));
      const res = await col.get({ where: { group: "g0" }, whereDocument: { $contains: "word2" }, include: [] });
      this.op("get");
      this.check(sameList(res.ids, exp), w, () => `get(where g0 + contains word2) ${show(sorted(res.ids))} != ${show(exp)}`);
    }
    {
      const exp = ofModel(([, d]) => !d.includes("alpha"));
      const res = await col.get({ whereDocument: { $not_contains: "alpha" }, include: [] });
      this.op("get");
      this.check(sameList(res.ids, exp), w, () => `get(not_contains alpha) ${show(sorted(res.ids))} != ${show(exp)}`);
    }
    {
      const res = await col.get({ where: { group: "g1" }, limit: 3, offset: 1, include: ["embeddings"] });
      this.op("get");
      const all = ofModel(([, , m]) => m.group === "g1");
      this.check(
        res.ids.length === Math.min(3, Math.max(0, all.length - 1)) && res.ids.every((r) => all.includes(r)),
        w,
        () => `get(where, limit 3, offset 1) = ${show(res.ids)}`,
      );
      this.check(res.embeddings.length === res.ids.length, w, "get(include embeddings) lacks embeddings");
    }
    {
      const res = await col.peek({ limit: 4 });
      this.op("peek");
      this.check(res.ids.length === 4 && res.ids.every((r) => model.has(r)), w, () => `peek(4) = ${show(res.ids)}`);
      this.check(
        res.ids.every((rid, k) => res.documents[k] === model.get(rid)[1]),
        w,
        "peek returned other documents",
      );
    }

    // -- query with explicit embeddings
    const keys = sorted(model.keys());
    const step = Math.max(1, Math.floor(keys.length / 4));
    const probeIds = keys.filter((_, k) => k % step === 0).slice(0, 4);
    {
      const res = await col.query({
        queryEmbeddings: probeIds.map((r) => model.get(r)[0]),
        nResults: 3,
        include: ["distances", "documents", "metadatas", "embeddings"],
      });
      this.op("query");
      probeIds.forEach((rid, k) => {
        this.check(res.ids[k]?.[0] === rid, w, () => `query nearest to ${rid} returned ${show(res.ids[k])}`);
        this.check(res.ids[k].length === 3, w, () => `query nResults 3 returned ${res.ids[k].length}`);
        this.check(res.distances[k][0] <= 1e-5, w, () => `query distance to itself ${res.distances[k][0]}`);
        this.check(res.documents[k][0] === model.get(rid)[1], w, () => `query document of ${rid}`);
        this.check(sameMetadata(res.metadatas[k][0], model.get(rid)[2]), w, () => `query metadata of ${rid}`);
        this.check(
          res.embeddings[k][0].every((x, j) => close(x, model.get(rid)[0][j])),
          w,
          () => `query embedding of ${rid}`,
        );
      });
    }
    {
      const g2 = ofModel(([, , m]) => m.group === "g2");
      const res = await col.query({
        queryEmbeddings: [model.get(probeIds[0])[0]],
        nResults: model.size,
        where: { group: "g2" },
        include: ["distances"],
      });
      this.op("query");
      this.check(sameList(res.ids[0], g2), w, () => `query(where g2) ids ${show(sorted(res.ids[0]))} != ${show(g2)}`);
      const d = res.distances[0];
      this.check(d.every((x, k) => k === 0 || d[k - 1] <= x), w, "query distances are not ascending");
    }
    {
      const exp = ofModel(([, d]) => d.includes("zeta"));
      const res = await col.query({
        queryEmbeddings: [this.embedding()],
        nResults: 10,
        whereDocument: { $contains: "zeta" },
        include: ["documents"],
      });
      this.op("query");
      this.check(sameList(res.ids[0], exp), w, () => `query(whereDocument zeta) ${show(res.ids[0])} != ${show(exp)}`);
    }
    {
      const among = keys.slice(0, 6);
      const res = await col.query({ queryEmbeddings: [model.get(among[2])[0]], nResults: 2, ids: among, include: [] });
      this.op("query");
      this.check(
        res.ids[0][0] === among[2] && res.ids[0].length === 2 && res.ids[0].every((r) => among.includes(r)),
        w,
        () => `query(ids) ${show(res.ids[0])} outside ${show(among)}`,
      );
    }

    // -- delete by ids (an unknown one included), then by where
    {
      const delIds = [...keys.slice(1, 6), "id-does-not-exist"];
      const res = await col.delete({ ids: delIds });
      this.op("delete");
      this.check(Number.isInteger(res.deleted) && res.deleted >= 0, w, () => `delete(ids) answered ${show(res)}`);
      delIds.forEach((rid) => model.delete(rid));
      await this.expectRecords(col, model, delIds, `${w} delete by ids`);
      await this.expectAll(col, model, `${w} after delete by ids`);
    }
    {
      const gone = ofModel(([, , m]) => m.group === "g2");
      const res = await col.delete({ where: { group: "g2" } });
      this.op("delete_where");
      // Chroma 1.5.9's `deleted` is not the number of records removed
      // (records changed since the last flush count differently): only its
      // type is checked; the effect is checked by reading.
      this.check(Number.isInteger(res.deleted) && res.deleted >= 0, w, () => `delete(where g2) answered ${show(res)}`);
      this.check(gone.length > 0, w, "no record in group g2 to delete");
      gone.forEach((rid) => model.delete(rid));
      const left = await col.get({ where: { group: "g2" }, include: [] });
      this.op("get");
      this.check(left.ids.length === 0, w, () => `delete(where g2) left ${show(left.ids)}`);
      await this.expectAll(col, model, `${w} after delete by where`);
    }

    // -- second collection: records without documents, a write through a
    //    collection(id) handle, a rename onto a taken name, then delete it
    {
      const sIds = [0, 1, 2, 3, 4].map((i) => `s-${i}`);
      const sE = sIds.map(() => this.embedding());
      await second.add({ ids: sIds, embeddings: sE });
      this.op("add");
      const sModel = new Map(sIds.map((r, k) => [r, [sE[k], null, null]]));
      await this.expectRecords(second, sModel, sIds, `${scope} ${nameB} add without documents`);
      const handle = client.collection(second.id);
      const hE = this.embedding();
      await handle.upsert({ ids: ["s-handle"], embeddings: [hE], metadatas: [{ via: "handle" }] });
      this.op("upsert");
      sModel.set("s-handle", [hE, null, { via: "handle" }]);
      await this.expectRecords(second, sModel, ["s-handle"], `${scope} ${nameB} upsert through collection(id)`);
      this.check((await handle.count()) === sModel.size, w, "count through collection(id)");
      this.op("count");
      // list-valued metadata, $contains on it, and a delete by whereDocument
      const tE = [this.embedding(), this.embedding()];
      const tM = [{ tags: ["red", "blue"], n: 1 }, { tags: ["blue"], n: 2 }];
      const tD = ["tagged one", "tagged two remove-me"];
      await second.add({ ids: ["t-1", "t-2"], embeddings: tE, metadatas: tM, documents: tD });
      this.op("add");
      sModel.set("t-1", [tE[0], tD[0], tM[0]]);
      sModel.set("t-2", [tE[1], tD[1], tM[1]]);
      await this.expectRecords(second, sModel, ["t-1", "t-2"], `${scope} ${nameB} list-valued metadata`);
      const red = await second.get({ where: { tags: { $contains: "red" } }, include: [] });
      this.op("get");
      this.check(show(red.ids) === show(["t-1"]), w, () => `get(tags $contains red) = ${show(red.ids)}`);
      await second.delete({ whereDocument: { $contains: "remove-me" } });
      this.op("delete_where_document");
      sModel.delete("t-2");
      await this.expectAll(second, sModel, `${scope} ${nameB} after delete by whereDocument`);
      // Chroma 1.5.9 bug: deleting a COLLECTION leaves its records'
      // list-valued metadata behind (table embedding_metadata_array), and
      // SQLite hands the freed row ids to the next records added anywhere,
      // which then show the old lists. Deleting the records first (by id)
      // removes them properly, so the collection delete below leaks nothing.
      await second.delete({ ids: ["t-1"] });
      this.op("delete");
      sModel.delete("t-1");
      await this.expectRecords(second, sModel, ["t-1"], `${scope} ${nameB} delete of a list-valued record`);

      await this.expectSomeError(() => second.modify({ name: nameA }), w, "rename onto an existing name");
      this.op("modify_conflict");
      const stillA = await client.getCollection({ name: nameA });
      const stillB = await client.getCollection({ name: nameB });
      this.op("get_collection", 2);
      this.check(stillA.id === col.id && stillB.id === second.id, w, "a failed rename changed a collection");

      await client.deleteCollection({ name: nameB });
      this.op("delete_collection");
      await this.expectMissingCollection(client, nameB, `${scope} ${nameB} deleteCollection`);
      await this.expectError(
        () => client.deleteCollection({ name: nameB }),
        ChromaNotFoundError,
        w,
        "deleteCollection of a deleted collection",
      );
      this.op("delete_collection_missing");
      names = await this.listedNames(client);
      this.check(!names.includes(nameB), w, () => `deleted collection ${nameB} still listed`);
    }

    // -- modify: rename + metadata (the metadata is replaced)
    await col.modify({ name: nameC, metadata: { purpose: "renamed", round: 2 } });
    this.op("modify");
    const renamed = await client.getCollection({ name: nameC });
    this.op("get_collection");
    this.check(renamed.id === col.id, w, () => `renamed collection id ${renamed.id} != ${col.id}`);
    this.check(
      sameMetadata(renamed.metadata, { purpose: "renamed", round: 2 }),
      w,
      () => `metadata after modify ${show(renamed.metadata)}`,
    );
    await this.expectMissingCollection(client, nameA, `${w} old name after the rename`);
    await this.expectAll(renamed, model, `${scope} ${nameC} after the rename`);
    {
      const r = this.newRecord(5000, "after-rename");
      await renamed.add({ ids: ["after-rename"], embeddings: [r[0]], documents: [r[1]], metadatas: [r[2]] });
      this.op("add");
      model.set("after-rename", r);
      await this.expectRecords(renamed, model, ["after-rename"], `${scope} ${nameC} add after the rename`);
    }
    // The old handle (same id) keeps working after the rename.
    this.check((await col.count()) === model.size, w, "count through the handle from before the rename");
    this.op("count");
    const withWal = await col.count({ readLevel: "index_and_wal" });
    this.op("count");
    this.check(withWal === model.size, w, () => `count(readLevel index_and_wal) = ${withWal}`);
    // modify: the index configuration (metadata untouched)
    await renamed.modify({ configuration: { hnsw: { ef_search: 120 } } });
    this.op("modify_configuration");
    const tuned = await client.getCollection({ name: nameC });
    this.op("get_collection");
    this.check(
      tuned.configuration?.hnsw?.ef_search === 120 && sameMetadata(tuned.metadata, { purpose: "renamed", round: 2 }),
      w,
      () => `after modify(configuration): ${show(tuned.configuration)} ${show(tuned.metadata)}`,
    );

    if (this.args.cleanup) {
      await client.deleteCollection({ name: nameC });
      this.op("delete_collection");
      await this.expectMissingCollection(client, nameC, `${scope} cleanup`);
      this.final[scope] = {};
    } else {
      this.final[scope] = { [nameC]: model.size };
    }
  }

  async run() {
    const t0 = Date.now();
    const base = this.client(DEFAULT_TENANT, DEFAULT_DATABASE);
    await base.heartbeat();
    this.op("heartbeat");
    const version = await base.version();
    this.op("version");
    this.check(typeof version === "string" && version.length > 0, "version", () => `version() = ${show(version)}`);
    const identity = await base.getUserIdentity();
    this.op("get_user_identity");
    this.check(identity.tenant === DEFAULT_TENANT, "identity", () => `getUserIdentity() = ${show(identity)}`);
    const maxBatch = await base.getMaxBatchSize();
    this.op("pre_flight_checks");
    this.check(maxBatch > 25, "pre-flight", () => `getMaxBatchSize() = ${maxBatch}`);
    await this.runScope(DEFAULT_TENANT, DEFAULT_DATABASE);
    if (!this.args.skipTenant) {
      const [tenant, database] = await this.setupTenant();
      await this.runScope(tenant, database);
    }
    const ops = Object.fromEntries(Object.entries(this.ops).sort(([a], [b]) => (a < b ? -1 : 1)));
    return {
      ok: true,
      client: `chromadb-js ${clientVersion()}`,
      node: process.version,
      server_version: version,
      url: this.args.url,
      seed: this.args.seed,
      prefix: this.args.prefix,
      ops,
      total_ops: Object.values(this.ops).reduce((a, b) => a + b, 0),
      checks: this.checks,
      collections: this.final,
      elapsed_s: (Date.now() - t0) / 1000,
    };
  }
}

function usage(msg) {
  process.stderr.write(`client_workload.mjs: ${msg}\n`);
  process.stderr.write(
    "usage: node client_workload.mjs URL [--seed N] [--prefix P] [--records N] [--dim D] " +
      "[--header 'Name: value']... [--cleanup] [--clean-start] [--skip-tenant]\n",
  );
  process.exit(2);
}

function parse() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        seed: { type: "string", default: "1" },
        prefix: { type: "string", default: "jswl" },
        records: { type: "string", default: "60" },
        dim: { type: "string", default: "8" },
        header: { type: "string", multiple: true, default: [] },
        cleanup: { type: "boolean", default: false },
        "clean-start": { type: "boolean", default: false },
        "skip-tenant": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    usage(e.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    const text = readFileSync(new URL(import.meta.url), "utf8");
    const head = text.split("\n").slice(1).filter((l) => l.startsWith("//"));
    process.stdout.write(head.map((l) => l.replace(/^\/\/ ?/, "")).join("\n") + "\n");
    process.exit(0);
  }
  if (positionals.length !== 1) usage("expected exactly one URL");
  const int = (name, min) => {
    const v = Number(values[name]);
    if (!Number.isInteger(v) || v < min) usage(`--${name} must be an integer >= ${min}`);
    return v;
  };
  if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]{2,}$/.test(values.prefix)) {
    usage("--prefix: 3+ characters from [a-zA-Z0-9._-], starting with a letter or digit");
  }
  return {
    url: positionals[0],
    seed: int("seed", 0),
    prefix: values.prefix,
    records: int("records", 10),
    dim: int("dim", 2),
    header: values.header,
    cleanup: values.cleanup,
    cleanStart: values["clean-start"],
    skipTenant: values["skip-tenant"],
  };
}

const w = new Workload(parse());
try {
  process.stdout.write(JSON.stringify(await w.run()) + "\n");
} catch (e) {
  const kind = e instanceof WorkloadError ? "WORKLOAD CHECK FAILED" : "WORKLOAD ERROR";
  const error = e instanceof WorkloadError ? e.message : `${e?.constructor?.name}: ${e?.message}`;
  process.stderr.write(`${kind}: ${error} (after ops ${JSON.stringify(w.ops)})\n`);
  if (!(e instanceof WorkloadError) && e?.stack) process.stderr.write(`${e.stack}\n`);
  process.stdout.write(JSON.stringify({ ok: false, error, ops: w.ops, checks: w.checks }) + "\n");
  process.exitCode = 1;
}
