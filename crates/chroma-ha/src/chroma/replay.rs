//! What an upstream answer means: Chroma's error bodies, the "server is
//! unwell" test, and the outcome of replaying a committed entry.

use http::StatusCode;
use serde_json::Value;

use super::operation::Operation;

/// Outcome of replaying a committed entry on a server that did not execute
/// it (or may have applied it before a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayOutcome {
    /// 2xx: the server applied it now.
    Applied,
    /// The server had applied it already (409 on a create, 404 on a
    /// delete, each with Chroma's error body): done, move on. After a
    /// create/fork, learn the physical id by name.
    AlreadyDone,
    /// A well-formed Chroma error other than the above (500 included): the
    /// server disagrees with the executor. Dead-letter it, do not retry.
    Divergent,
    /// The server is unwell or the answer is not Chroma's: retry later.
    Transient,
}

/// Whether `body` is Chroma's error JSON: an object with a string `"error"`
/// and/or a string `"message"` (every present one of the two a string).
///
/// Chroma 1.5.9 answers every error it produces itself with both, e.g.
/// `{"error":"NotFoundError","message":"Collection [x] does not exist"}`
/// (404), `"ChromaError"` (409, 422, 501), `"InvalidArgumentError"` (400),
/// `"InternalError"` (500). Its router's own 404/405 (unknown path, wrong
/// method) have an EMPTY body: those are not Chroma error bodies.
pub fn is_chroma_error_body(body: &[u8]) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let field_ok = |k: &str| map.get(k).is_none_or(Value::is_string);
    (map.contains_key("error") || map.contains_key("message"))
        && field_ok("error")
        && field_ok("message")
}

/// Whether an upstream answer means the server is unwell rather than
/// answering: 502/503/504, or a non-2xx whose body is not Chroma's error
/// JSON. Any other status, 500 included, is an answer: it goes back to the
/// client as it is and decides the entry. (Connection failures and
/// timeouts are unwell too; they never reach this function.)
pub fn is_unwell(status: StatusCode, body: &[u8]) -> bool {
    matches!(status.as_u16(), 502..=504) || (!status.is_success() && !is_chroma_error_body(body))
}

/// Statuses that, on replay, say "not now" about the server rather than
/// "no" about the entry: 401/403 (the server refuses the gateway's
/// credentials: fix the config, do not dead-letter every entry), 408 and
/// 429 (timeout, rate limit).
fn replay_retry_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 408 | 429)
}

/// Whether a 500 is Chroma's SQLite saying "database is locked" (SQLITE_BUSY,
/// code 5): its own writers collided, nothing was applied, and the same
/// request succeeds a moment later. Chroma 1.5.9 answers this to a DELETE of
/// a database while other writes run (observed in the fault tests:
/// `{"error":"InternalError","message":"Database error: error returned from
/// database: (code: 5) database is locked"}`). On replay it is "not now",
/// not a divergence. For an executed write it is no verdict either: the
/// history test saw a create/delete database answered so take effect, so
/// the write is in doubt (committed and replayed idempotently).
pub fn is_sqlite_busy(status: StatusCode, body: &[u8]) -> bool {
    const BUSY: &[u8] = b"database is locked";
    status == StatusCode::INTERNAL_SERVER_ERROR && body.windows(BUSY.len()).any(|w| w == BUSY)
}

/// Classify the answer to a REPLAYED entry of operation `op` (rules of
/// DESIGN.md "Replay outcome rules"), in this order:
/// 1. 2xx → Applied.
/// 2. [`is_unwell`], or 401/403/408/429, or a 500 "database is locked"
///    (SQLite busy) → Transient.
/// 3. 409 on create tenant/database/collection or fork; 404 on delete
///    database/collection → AlreadyDone.
/// 4. anything else (a well-formed Chroma error, 500 included) → Divergent.
pub fn replay_outcome(op: Operation, status: StatusCode, body: &[u8]) -> ReplayOutcome {
    use Operation::*;
    if status.is_success() {
        return ReplayOutcome::Applied;
    }
    if is_unwell(status, body) || replay_retry_status(status) || is_sqlite_busy(status, body) {
        return ReplayOutcome::Transient;
    }
    match (op, status.as_u16()) {
        (CreateTenant | CreateDatabase | CreateCollection | ForkCollection, 409)
        | (DeleteDatabase | DeleteCollection, 404) => ReplayOutcome::AlreadyDone,
        _ => ReplayOutcome::Divergent,
    }
}

/// Why a write of operation `op` with `body` cannot be replicated, if it
/// cannot: the gateway refuses it (400) before logging it.
///
/// A record `delete` with `limit`: Chroma 1.5.9 deletes the *first* `limit`
/// records that match, and which records are first differs between
/// servers (each stores records in the order it applied them), so the
/// servers would diverge; a repeat after a crash would delete the next
/// `limit` matching records as well.
pub fn unreplicable(op: Operation, body: &[u8]) -> Option<String> {
    if op != Operation::CollectionDelete {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let limited = value.get("limit").is_some_and(|l| !l.is_null());
    limited.then(|| {
        "chroma-ha does not accept a record delete with `limit`: Chroma deletes the first \
         `limit` matching records, which are not the same records on every server. \
         Get the ids with the same `where` and `limit` (include nothing), then delete by ids."
            .to_string()
    })
}

/// The name of the collection a create or fork makes, from its body: a
/// create names it `name`, a fork `new_name`. Used to find the collection
/// by name when a replayed create or fork is answered "already exists".
pub fn created_collection_name(op: Operation, body: &[u8]) -> Option<String> {
    let key = match op {
        Operation::CreateCollection => "name",
        Operation::ForkCollection => "new_name",
        _ => return None,
    };
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get(key)?.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use ReplayOutcome::*;

    #[test]
    fn an_existing_fork_is_found_by_its_new_name_and_a_create_by_its_name() {
        let fork = br#"{"new_name": "copy"}"#;
        assert_eq!(
            created_collection_name(ForkCollection, fork).as_deref(),
            Some("copy")
        );
        let create = br#"{"name": "c", "get_or_create": false}"#;
        assert_eq!(
            created_collection_name(CreateCollection, create).as_deref(),
            Some("c")
        );
        assert_eq!(created_collection_name(ForkCollection, create), None);
        assert_eq!(created_collection_name(CollectionAdd, create), None);
    }

    #[test]
    fn a_record_delete_with_a_limit_cannot_be_replicated_and_others_can() {
        let limited = br#"{"where": {"k": "v"}, "limit": 1}"#;
        assert!(unreplicable(CollectionDelete, limited).is_some());
        for body in [
            &br#"{"where": {"k": "v"}}"#[..],
            br#"{"where": {"k": "v"}, "limit": null}"#,
            br#"{"ids": ["a"]}"#,
            b"not json",
        ] {
            assert!(unreplicable(CollectionDelete, body).is_none());
        }
        assert!(unreplicable(CollectionGet, limited).is_none());
    }

    // Bodies exactly as Chroma 1.5.9 sent them.
    const NOT_FOUND: &[u8] =
        br#"{"error":"NotFoundError","message":"Collection [nosuch] does not exist"}"#;
    const DB_NOT_FOUND: &[u8] =
        br#"{"error":"NotFoundError","message":"Database [db2] not found"}"#;
    const EXISTS: &[u8] =
        br#"{"error":"ChromaError","message":"Collection [col1] already exists"}"#;
    const TENANT_EXISTS: &[u8] =
        br#"{"error":"ChromaError","message":"Tenant [ten1] already exists"}"#;
    const BAD: &[u8] = br#"{"error":"InvalidArgumentError","message":"Collection expecting embedding with dimension of 2, got 3"}"#;
    const UNPROCESSABLE: &[u8] = br#"{"error":"ChromaError","message":"Failed to deserialize the JSON body into the target type: missing field `name` at line 1 column 2"}"#;
    const INTERNAL: &[u8] = br#"{"error":"InternalError","message":"Database error: error returned from database: (code: 2067) UNIQUE constraint failed: collections.name, collections.database_id"}"#;

    fn s(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn chroma_error_bodies() {
        for b in [NOT_FOUND, EXISTS, BAD, UNPROCESSABLE, INTERNAL] {
            assert!(is_chroma_error_body(b));
        }
        assert!(is_chroma_error_body(br#"{"error":"X"}"#));
        assert!(is_chroma_error_body(br#"{"message":"m","extra":1}"#));
        for b in [
            &b""[..],
            b"{}",
            b"true",
            b"[]",
            b"<html>bad gateway</html>",
            br#"{"detail":"Not Found"}"#,
            br#"{"error":5,"message":"m"}"#,
            br#"{"error":"e","message":null}"#,
            br#"["error","message"]"#,
        ] {
            assert!(!is_chroma_error_body(b), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn unwell_vs_answer() {
        assert!(is_unwell(s(502), INTERNAL));
        assert!(is_unwell(s(503), b""));
        assert!(is_unwell(s(504), b"timeout"));
        assert!(is_unwell(s(404), b"")); // router 404: not Chroma's answer
        assert!(is_unwell(s(405), b""));
        assert!(!is_unwell(s(500), INTERNAL));
        assert!(!is_unwell(s(404), NOT_FOUND));
        assert!(!is_unwell(s(200), b""));
        assert!(!is_unwell(s(201), b"{}"));
    }

    #[test]
    fn replay_rules() {
        assert_eq!(replay_outcome(CollectionAdd, s(201), b"{}"), Applied);
        assert_eq!(replay_outcome(CreateCollection, s(200), b"{...}"), Applied);
        for op in [
            CreateCollection,
            CreateDatabase,
            CreateTenant,
            ForkCollection,
        ] {
            assert_eq!(replay_outcome(op, s(409), EXISTS), AlreadyDone, "{op:?}");
            assert_eq!(replay_outcome(op, s(409), b""), Transient, "{op:?}");
            assert_eq!(replay_outcome(op, s(400), BAD), Divergent, "{op:?}");
        }
        assert_eq!(
            replay_outcome(CreateTenant, s(409), TENANT_EXISTS),
            AlreadyDone
        );
        assert_eq!(
            replay_outcome(DeleteCollection, s(404), NOT_FOUND),
            AlreadyDone
        );
        assert_eq!(
            replay_outcome(DeleteDatabase, s(404), DB_NOT_FOUND),
            AlreadyDone
        );
        // 404 on anything but a delete is a divergence (the collection is
        // missing on this server), 409 on anything but a create too.
        assert_eq!(replay_outcome(CollectionAdd, s(404), NOT_FOUND), Divergent);
        assert_eq!(
            replay_outcome(CollectionDelete, s(404), NOT_FOUND),
            Divergent
        );
        assert_eq!(replay_outcome(UpdateCollection, s(409), EXISTS), Divergent);
        assert_eq!(
            replay_outcome(UpdateCollection, s(500), INTERNAL),
            Divergent
        );
        // SQLite busy inside Chroma: try again later.
        let busy = br#"{"error":"InternalError","message":"Database error: error returned from database: (code: 5) database is locked"}"#;
        for op in [DeleteDatabase, CreateCollection, CollectionAdd] {
            assert_eq!(replay_outcome(op, s(500), busy), Transient, "{op:?}");
        }
        assert_eq!(replay_outcome(DeleteDatabase, s(400), busy), Divergent);
        assert_eq!(
            replay_outcome(CreateCollection, s(422), UNPROCESSABLE),
            Divergent
        );
        assert_eq!(replay_outcome(CollectionAdd, s(400), BAD), Divergent);
        // Unwell or not Chroma's answer.
        for code in [502, 503, 504] {
            assert_eq!(replay_outcome(CollectionAdd, s(code), INTERNAL), Transient);
        }
        assert_eq!(replay_outcome(DeleteCollection, s(404), b""), Transient);
        assert_eq!(replay_outcome(CollectionAdd, s(500), b"oops"), Transient);
        for code in [401, 403, 408, 429] {
            assert_eq!(
                replay_outcome(CollectionAdd, s(code), BAD),
                Transient,
                "{code}"
            );
        }
    }
}
