//! The Chroma dialect: everything the gateway knows about Chroma's HTTP API
//! (v2, Chroma 1.5.9). Pure code, no networking.
//!
//! - [`routes`]: `classify(method, path)` → operation, class (Read / Write /
//!   Passthrough), typed parameters (a collection segment is a name or an id
//!   by the route, never by its shape), path scope, metrics label.
//! - [`mod@footprint`]: what a write touches (Global ⊃ Database ⊃ Collection,
//!   refined to record ids) and when two writes conflict.
//! - [`rewrite`]: logical → physical collection ids in paths, physical →
//!   logical in responses that carry collection objects.
//! - [`replay`]: Chroma's error bodies, "server unwell" vs "answer", and the
//!   outcome of replaying an entry.
//! - [`errors`]: the gateway's own errors in Chroma's format.
//!
//! Scope decisions: `attach_function` and `detach_function` are Database
//! writes (they may create or delete the output collection);
//! `update_collection` is a Collection write unless the body renames
//! (`new_name`) or cannot be read, then Database (renames race on names);
//! `create_database` is Database{tenant, body `name`}, Global if the body
//! has none. Reads of tenant-level data and CRN gets have Global scope.
//!
//! # Verified on a real Chroma 1.5.9 (`chroma run`, local mode)
//!
//! | request | status | body |
//! |---|---|---|
//! | create tenant / database, new | 200 | `{}` |
//! | create tenant again | 409 | `{"error":"ChromaError","message":"Tenant [ten1] already exists"}` |
//! | create database again | 409 | `{"error":"ChromaError","message":"Database [db1] already exists"}` |
//! | create collection again (`get_or_create` false / absent) | 409 | `{"error":"ChromaError","message":"Collection [col1] already exists"}` |
//! | create collection, `get_or_create: true`, exists | 200 | the existing collection object |
//! | create / get / get-by-id collection | 200 | collection object, top-level `"id"` |
//! | list collections | 200 | array of collection objects |
//! | PUT modify collection (metadata) | 200 | `{}` (no collection object) |
//! | PUT rename to an existing name | 500 | `{"error":"InternalError","message":"Database error: … UNIQUE constraint failed: collections.name, collections.database_id"}` |
//! | GET/DELETE `…/collections/{x}` | | `x` is a NAME (a UUID-shaped name works; an id gives 404) |
//! | PUT `…/collections/col1`, record endpoint with a name | 400 | `InvalidArgumentError` "Collection ID is not a valid UUIDv4" |
//! | get / delete missing collection | 404 | `{"error":"NotFoundError","message":"Collection [x] does not exist"}` |
//! | delete missing database | 404 | `{"error":"NotFoundError","message":"Database [db2] not found"}` |
//! | get missing tenant | 404 | `{"error":"NotFoundError","message":"Tenant [nope] not found"}` |
//! | PATCH tenant (even a missing one) | 200 | `{}` |
//! | `add` | 201 | `{}`; an existing id keeps the old record, duplicate ids in one batch accepted |
//! | `upsert`, `update` (even of a missing id) | 200 | `{}` |
//! | record `delete` | 200 | `{"deleted":N}`; `{}` deletes nothing |
//! | wrong embedding dimension | 400 | `InvalidArgumentError` |
//! | malformed JSON body | 400 | `{"error":"InvalidArgumentError","message":"Failed to parse the request body as JSON: …"}` |
//! | JSON of the wrong type / missing field | 422 | `{"error":"ChromaError","message":"Failed to deserialize the JSON body …"}` |
//! | no `Content-Type: application/json` | 415 | `ChromaError` |
//! | fork, fork_count, search, attach/detach function (local) | 501 | `{"error":"ChromaError","message":"… unsupported/not implemented …"}` |
//! | indexing_status (local) | 500 | `InternalError` "Method scout_logs is not implemented" |
//! | GET `/api/v2/collections/{crn}` (local) | — | handler panics: empty reply, connection closed |
//! | unknown path, trailing `/`, `//` | 404 | empty body |
//! | known path, wrong method (incl. OPTIONS) | 405 | empty body |
//! | `/api/v1/...` | 410 | `{"error":"Unimplemented","message":"The v1 API is deprecated. Please use /v2 apis"}` |
//! | HEAD on a GET route | 200 | (served as GET) |
//! | record endpoint / PUT under a wrong tenant/database path | 2xx | Chroma resolves by collection id alone |
//! | `%64efault_tenant` in a path | | decoded like `default_tenant`; `/hear%74beat` is 404 |
//! | 25 MB add, 200 000 ids (> `max_batch_size` 5461) | 201 | no server-side body limit |
//! | `POST /api/v2/reset` (`allow_reset: true`) | 200 | `true` |
//! | identity / pre-flight / healthcheck / version | 200 | `{"user_id":"","tenant":"default_tenant","databases":["default_database"]}` / `{"max_batch_size":5461,"supports_base64_encoding":true}` / `{"is_executor_ready":true,"is_log_client_ready":true}` / `"1.0.0"` |

pub mod errors;
pub mod footprint;
pub(crate) mod json_scan;
pub mod operation;
pub mod replay;
pub mod rewrite;
pub mod routes;
pub mod scope;
pub mod segment;

#[cfg(test)]
mod openapi_tests;
#[cfg(test)]
mod proptests;

pub use errors::GatewayError;
pub use footprint::{footprint, hash_id, Keys, WriteFootprint};
pub use operation::{Class, CollectionSegment, Operation, ResponseIds, ScopeLevel};
pub use replay::{
    created_collection_name, is_chroma_error_body, is_sqlite_busy, is_unwell, replay_outcome,
    unreplicable, ReplayOutcome,
};
pub use rewrite::{
    collection_info, collection_infos, rewrite_path_to_physical, rewrite_response_ids,
    CollectionInfo, PathRewrite,
};
pub use routes::{classify, CollectionRef, KnownRoute, Route, UnknownRoute, UNKNOWN_LABEL};
pub use scope::Scope;
