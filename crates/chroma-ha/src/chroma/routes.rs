//! The route table: which Chroma operation a (method, path) is, and its
//! parameters.
//!
//! Mirrors Chroma 1.5.9's axum router, checked on the real server:
//! static segments match the raw path exactly (`/hear%74beat` is 404),
//! parameters are percent-decoded, an empty parameter is accepted except as
//! the last segment (a trailing `/` is 404), a static segment wins over a
//! parameter at the same place (`GET …/functions/attach` is 405, not
//! `get_attached_function("attach")`; `POST …/collections/by-id/add` is 405),
//! HEAD is served as GET, and a known path with another method is 405.
//! Everything that Chroma would not route is `Route::Unknown`.

use http::Method;

use super::operation::{Class, CollectionSegment, Operation};
use super::scope::Scope;
use super::segment;

/// A collection as a route names it: by name or by id, decided by the route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CollectionRef {
    /// A collection name (`GET`/`DELETE …/collections/{name}`).
    Name(String),
    /// A collection id (`PUT …/collections/{id}`, `by-id`, record endpoints).
    Id(String),
}

/// A request that matched one Chroma operation, with its decoded parameters.
///
/// Each `Some` field is present exactly when the operation's template has
/// that parameter; values are percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KnownRoute {
    /// The operation.
    pub op: Operation,
    /// `{tenant}` or `{tenant_name}`.
    pub tenant: Option<String>,
    /// `{database}`.
    pub database: Option<String>,
    /// `{collection_id}`, typed by the route as a name or an id.
    pub collection: Option<CollectionRef>,
    /// `{name}` (detach) or `{function_name}` (get attached function).
    pub function: Option<String>,
    /// `{crn}` of `GET /api/v2/collections/{crn}`: `tenant:database:name`.
    pub crn: Option<String>,
}

/// A request that is not a Chroma 1.5.9 operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownRoute {
    /// The path with every segment that is not a known static word replaced
    /// by `{}`, cut after 16 segments: a bounded set of strings, fit for a
    /// warn-once-per-shape log line.
    pub shape: String,
}

/// The answer of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// A known operation.
    Known(KnownRoute),
    /// Anything Chroma 1.5.9 would answer 404/405 to, or a newer API.
    Unknown(UnknownRoute),
}

/// Most segments an unknown shape shows before `/…`.
const MAX_SHAPE_SEGMENTS: usize = 16;

/// Label for unknown routes in metrics.
pub const UNKNOWN_LABEL: &str = "unknown";

/// Find the operation of `method` + `path` (the URL path without query
/// string, e.g. `/api/v2/heartbeat`).
///
/// Guarantees: never panics; a collection segment is typed as Name or Id by
/// the route alone; `classify(op.method(), &route.render())` gives the route
/// back for every known route.
pub fn classify(method: &Method, path: &str) -> Route {
    match match_known(method, path) {
        Some(known) => Route::Known(known),
        None => Route::Unknown(UnknownRoute {
            shape: shape_of(path),
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

fn verb_of(method: &Method) -> Option<Verb> {
    match *method {
        Method::GET | Method::HEAD => Some(Verb::Get),
        Method::POST => Some(Verb::Post),
        Method::PUT => Some(Verb::Put),
        Method::PATCH => Some(Verb::Patch),
        Method::DELETE => Some(Verb::Delete),
        _ => None,
    }
}

fn match_known(method: &Method, path: &str) -> Option<KnownRoute> {
    use Operation::*;
    use Verb::*;
    let verb = verb_of(method)?;
    let rest = path.strip_prefix("/api/v2/")?;
    if rest.is_empty() || rest.ends_with('/') {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let mut r = KnownRoute {
        op: Heartbeat,
        tenant: None,
        database: None,
        collection: None,
        function: None,
        crn: None,
    };
    let op = match segs.as_slice() {
        ["auth", "identity"] if verb == Get => GetUserIdentity,
        ["healthcheck"] if verb == Get => Healthcheck,
        ["heartbeat"] if verb == Get => Heartbeat,
        ["pre-flight-checks"] if verb == Get => PreFlightChecks,
        ["version"] if verb == Get => Version,
        ["reset"] if verb == Post => Reset,
        ["collections", crn] if verb == Get => {
            r.crn = Some(segment::decode(crn));
            GetCollectionByCrn
        }
        ["tenants"] if verb == Post => CreateTenant,
        ["tenants", t] => {
            r.tenant = Some(segment::decode(t));
            match verb {
                Get => GetTenant,
                Patch => UpdateTenant,
                _ => return None,
            }
        }
        ["tenants", t, "databases", tail @ ..] => {
            r.tenant = Some(segment::decode(t));
            match_database(verb, tail, &mut r)?
        }
        _ => return None,
    };
    r.op = op;
    Some(r)
}

/// Segments after `/api/v2/tenants/{tenant}/databases`.
fn match_database(verb: Verb, tail: &[&str], r: &mut KnownRoute) -> Option<Operation> {
    use Operation::*;
    use Verb::*;
    let (d, tail) = match tail {
        [] => {
            return match verb {
                Get => Some(ListDatabases),
                Post => Some(CreateDatabase),
                _ => None,
            }
        }
        [d, tail @ ..] => (d, tail),
    };
    r.database = Some(segment::decode(d));
    match tail {
        [] => match verb {
            Get => Some(GetDatabase),
            Delete => Some(DeleteDatabase),
            _ => None,
        },
        ["collections_count"] if verb == Get => Some(CountCollections),
        ["collections"] => match verb {
            Get => Some(ListCollections),
            Post => Some(CreateCollection),
            _ => None,
        },
        ["collections", "by-id", id] => {
            // Static `by-id` wins: other methods are 405 on Chroma.
            (verb == Get).then(|| set_collection(r, GetCollectionById, id))
        }
        ["collections", x] => {
            let op = match verb {
                Get => GetCollection,
                Put => UpdateCollection,
                Delete => DeleteCollection,
                _ => return None,
            };
            Some(set_collection(r, op, x))
        }
        ["collections", id, action] => {
            let op = match (*action, verb) {
                ("add", Post) => CollectionAdd,
                ("count", Get) => CollectionCount,
                ("delete", Post) => CollectionDelete,
                ("fork", Post) => ForkCollection,
                ("fork_count", Get) => ForkCount,
                ("get", Post) => CollectionGet,
                ("indexing_status", Get) => IndexingStatus,
                ("query", Post) => CollectionQuery,
                ("search", Post) => CollectionSearch,
                ("update", Post) => CollectionUpdate,
                ("upsert", Post) => CollectionUpsert,
                _ => return None,
            };
            Some(set_collection(r, op, id))
        }
        ["collections", id, "functions", "attach"] => {
            (verb == Post).then(|| set_collection(r, AttachFunction, id))
        }
        ["collections", id, "functions", f] if verb == Get => {
            r.function = Some(segment::decode(f));
            Some(set_collection(r, GetAttachedFunction, id))
        }
        ["collections", id, "attached_functions", f, "detach"] if verb == Post => {
            r.function = Some(segment::decode(f));
            Some(set_collection(r, DetachFunction, id))
        }
        _ => None,
    }
}

fn set_collection(r: &mut KnownRoute, op: Operation, raw: &str) -> Operation {
    let value = segment::decode(raw);
    r.collection = match op.collection_segment() {
        CollectionSegment::Name => Some(CollectionRef::Name(value)),
        CollectionSegment::Id => Some(CollectionRef::Id(value)),
        CollectionSegment::None => None,
    };
    op
}

/// The shape of an unknown path: known static words kept, the rest `{}`.
fn shape_of(path: &str) -> String {
    let mut out = String::new();
    for (i, seg) in path.split('/').enumerate() {
        if i > MAX_SHAPE_SEGMENTS {
            out.push_str("/…");
            break;
        }
        if i > 0 {
            out.push('/');
        }
        if seg.is_empty() || is_static_word(seg) {
            out.push_str(seg);
        } else {
            out.push_str("{}");
        }
    }
    out
}

/// Appends `value` percent-encoded as a parameter segment. A value that
/// would read as a static word (`attach`, `by-id`, …) gets its first byte
/// escaped too: Chroma matches static segments on the raw path and decodes
/// parameters, so `%61ttach` is the parameter `attach`, where `attach`
/// would be routed as the static segment.
fn push_parameter(out: &mut String, value: &str) {
    let encoded = segment::encode(value);
    match encoded.as_bytes().first() {
        Some(&first) if is_static_word(&encoded) => {
            out.push_str(&format!("%{first:02X}"));
            out.push_str(&encoded[1..]);
        }
        _ => out.push_str(&encoded),
    }
}

fn is_static_word(seg: &str) -> bool {
    seg == "v1"
        || Operation::ALL.iter().any(|op| {
            op.template()
                .split('/')
                .any(|t| t == seg && !t.starts_with('{'))
        })
}

impl KnownRoute {
    /// The canonical path of this route: the template with each parameter
    /// percent-encoded (a value spelled like a static word, such as
    /// `attach` or `by-id`, with its first byte escaped as well, so that
    /// it stays a parameter). `classify(op.method(), &render())` returns
    /// `self`, for every known route.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, t) in self.op.template().split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let value = match t {
                "{tenant}" | "{tenant_name}" => self.tenant.as_deref(),
                "{database}" => self.database.as_deref(),
                "{collection_id}" => self.collection.as_ref().map(|c| match c {
                    CollectionRef::Name(v) | CollectionRef::Id(v) => v.as_str(),
                }),
                "{name}" | "{function_name}" => self.function.as_deref(),
                "{crn}" => self.crn.as_deref(),
                _ => {
                    out.push_str(t);
                    continue;
                }
            };
            push_parameter(&mut out, value.unwrap_or_default());
        }
        out
    }

    /// The collection id of the route, if the route addresses one by id.
    pub fn collection_id(&self) -> Option<&str> {
        match &self.collection {
            Some(CollectionRef::Id(id)) => Some(id),
            _ => None,
        }
    }

    fn database_scope(&self) -> Scope {
        Scope::Database {
            tenant: self.tenant.clone().unwrap_or_default(),
            database: self.database.clone().unwrap_or_default(),
        }
    }

    /// The data this request reads or may change, from the path alone.
    ///
    /// `None` for operations that touch no data (heartbeat, version,
    /// healthcheck, pre-flight-checks, identity). For a write this scope
    /// contains the scope of its `footprint` (which may be narrower: a
    /// `create_database` is Global here, Database there). Tenant-level
    /// requests are Global (there is no tenant level); a CRN is Global
    /// (its first part is a tenant *resource* name, not a tenant name).
    pub fn scope(&self) -> Option<Scope> {
        use Operation::*;
        match self.op {
            GetUserIdentity | Healthcheck | Heartbeat | PreFlightChecks | Version => None,
            Reset | CreateTenant | GetTenant | UpdateTenant | ListDatabases | CreateDatabase
            | GetCollectionByCrn => Some(Scope::Global),
            GetDatabase | DeleteDatabase | ListCollections | CreateCollection
            | CountCollections | GetCollection | DeleteCollection | UpdateCollection
            | ForkCollection | AttachFunction | DetachFunction => Some(self.database_scope()),
            GetCollectionById | CollectionAdd | CollectionCount | CollectionDelete | ForkCount
            | GetAttachedFunction | CollectionGet | IndexingStatus | CollectionQuery
            | CollectionSearch | CollectionUpdate | CollectionUpsert => Some(Scope::Collection {
                tenant: self.tenant.clone().unwrap_or_default(),
                database: self.database.clone().unwrap_or_default(),
                collection: self.collection_id().unwrap_or_default().to_owned(),
            }),
        }
    }
}

impl Route {
    /// The operation, or `None` for an unknown route.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Route::Known(k) => Some(k.op),
            Route::Unknown(_) => None,
        }
    }

    /// Read, Write, or Passthrough (unknown).
    pub fn class(&self) -> Class {
        match self {
            Route::Known(k) => k.op.class(),
            Route::Unknown(_) => Class::Passthrough,
        }
    }

    /// A bounded label for metrics: the OpenAPI path template of a known
    /// route, [`UNKNOWN_LABEL`] otherwise.
    pub fn metrics_label(&self) -> &'static str {
        match self {
            Route::Known(k) => k.op.template(),
            Route::Unknown(_) => UNKNOWN_LABEL,
        }
    }

    /// The route's collection segment, typed by the route.
    pub fn collection(&self) -> Option<&CollectionRef> {
        match self {
            Route::Known(k) => k.collection.as_ref(),
            Route::Unknown(_) => None,
        }
    }

    /// [`KnownRoute::scope`]; an unknown route is `Some(Global)` (nothing
    /// is known about what it touches).
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Route::Known(k) => k.scope(),
            Route::Unknown(_) => Some(Scope::Global),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    const T: &str = "/api/v2/tenants/default_tenant/databases/default_database";
    const UUID_NAME: &str = "11111111-2222-3333-4444-555555555555";

    fn op(method: Method, path: &str) -> Option<Operation> {
        classify(&method, path).operation()
    }

    #[test]
    fn uuid_shaped_name_stays_a_name_under_get_and_delete() {
        for m in [Method::GET, Method::DELETE] {
            let r = classify(&m, &format!("{T}/collections/{UUID_NAME}"));
            assert_eq!(
                r.collection(),
                Some(&CollectionRef::Name(UUID_NAME.into())),
                "{m}"
            );
        }
        let r = classify(&Method::PUT, &format!("{T}/collections/{UUID_NAME}"));
        assert_eq!(r.collection(), Some(&CollectionRef::Id(UUID_NAME.into())));
        let r = classify(&Method::PUT, &format!("{T}/collections/not-a-uuid"));
        assert_eq!(
            r.collection(),
            Some(&CollectionRef::Id("not-a-uuid".into()))
        );
        let r = classify(&Method::GET, &format!("{T}/collections/by-id/plainname"));
        assert_eq!(r.collection(), Some(&CollectionRef::Id("plainname".into())));
        let r = classify(&Method::POST, &format!("{T}/collections/plainname/add"));
        assert_eq!(r.collection(), Some(&CollectionRef::Id("plainname".into())));
    }

    #[test]
    fn static_segments_win_like_chroma() {
        // A collection literally named "by-id".
        assert_eq!(
            op(Method::GET, &format!("{T}/collections/by-id")),
            Some(GetCollection)
        );
        assert_eq!(
            op(Method::GET, &format!("{T}/collections/by-id/add")),
            Some(GetCollectionById)
        );
        assert_eq!(
            op(Method::POST, &format!("{T}/collections/by-id/add")),
            None
        );
        assert_eq!(
            op(Method::GET, &format!("{T}/collections/x/functions/attach")),
            None
        );
        assert_eq!(
            op(Method::POST, &format!("{T}/collections/x/functions/f")),
            None
        );
        assert_eq!(
            op(Method::GET, &format!("{T}/collections/x/functions/f")),
            Some(GetAttachedFunction)
        );
    }

    #[test]
    fn methods_paths_and_edges() {
        assert_eq!(op(Method::HEAD, "/api/v2/heartbeat"), Some(Heartbeat));
        assert_eq!(op(Method::POST, "/api/v2/heartbeat"), None);
        assert_eq!(op(Method::OPTIONS, "/api/v2/heartbeat"), None);
        assert_eq!(op(Method::GET, "/api/v2/heartbeat/"), None);
        assert_eq!(op(Method::GET, "/api/v2//heartbeat"), None);
        assert_eq!(op(Method::GET, "/api/v2/hear%74beat"), None);
        assert_eq!(op(Method::GET, "/api/v1/heartbeat"), None);
        assert_eq!(op(Method::GET, "/api/v2"), None);
        assert_eq!(op(Method::GET, "/api/v2/"), None);
        assert_eq!(op(Method::GET, "/"), None);
        assert_eq!(op(Method::GET, ""), None);
        assert_eq!(op(Method::GET, "/api/v2/tenants"), None);
        assert_eq!(
            op(Method::POST, "/api/v2/tenants/a/databases/collections"),
            None
        );
        // Empty parameters in the middle are routed by Chroma, not at the end.
        let r = classify(&Method::GET, "/api/v2/tenants//databases/db1");
        assert_eq!(r.operation(), Some(GetDatabase));
        assert_eq!(op(Method::GET, "/api/v2/tenants/t/databases/"), None);
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let r = classify(
            &Method::GET,
            "/api/v2/tenants/%64efault_tenant/databases/d%20b/collections/col%31",
        );
        let Route::Known(k) = r else { panic!() };
        assert_eq!(k.tenant.as_deref(), Some("default_tenant"));
        assert_eq!(k.database.as_deref(), Some("d b"));
        assert_eq!(k.collection, Some(CollectionRef::Name("col1".into())));
        let r = classify(&Method::GET, "/api/v2/collections/t%3Ad%3Ac");
        let Route::Known(k) = r else { panic!() };
        assert_eq!(k.crn.as_deref(), Some("t:d:c"));
    }

    #[test]
    fn unknown_shapes_hide_variable_segments() {
        let shape = |m: Method, p: &str| match classify(&m, p) {
            Route::Unknown(u) => u.shape,
            Route::Known(k) => panic!("{k:?}"),
        };
        assert_eq!(
            shape(
                Method::GET,
                "/api/v2/tenants/acme/databases/db/collections/x/y/z"
            ),
            "/api/v2/tenants/{}/databases/{}/collections/{}/{}/{}"
        );
        assert_eq!(
            shape(Method::GET, "/api/v2/heartbeat/"),
            "/api/v2/heartbeat/"
        );
        assert_eq!(
            shape(Method::POST, "/api/v2/heartbeat"),
            "/api/v2/heartbeat"
        );
        assert_eq!(shape(Method::GET, "/api/v1/heartbeat"), "/api/v1/heartbeat");
        assert_eq!(shape(Method::GET, "/api/v3/something"), "/api/{}/{}");
        let long = "/a".repeat(100);
        let s = shape(Method::GET, &long);
        assert!(s.ends_with("/…") && s.len() < 100, "{s}");
        assert_eq!(classify(&Method::GET, &long).metrics_label(), UNKNOWN_LABEL);
    }

    #[test]
    fn path_scopes() {
        let scope = |m: Method, p: &str| classify(&m, p).scope();
        let db = Scope::Database {
            tenant: "default_tenant".into(),
            database: "default_database".into(),
        };
        assert_eq!(scope(Method::GET, "/api/v2/heartbeat"), None);
        assert_eq!(scope(Method::GET, "/api/v2/tenants/x"), Some(Scope::Global));
        assert_eq!(
            scope(Method::GET, &format!("{T}/collections/n")),
            Some(db.clone())
        );
        assert_eq!(scope(Method::PUT, &format!("{T}/collections/i")), Some(db));
        assert_eq!(
            scope(Method::POST, &format!("{T}/collections/i/query")),
            Some(Scope::Collection {
                tenant: "default_tenant".into(),
                database: "default_database".into(),
                collection: "i".into()
            })
        );
        assert_eq!(scope(Method::GET, "/nope"), Some(Scope::Global));
    }

    #[test]
    fn metrics_label_is_the_template() {
        let r = classify(&Method::POST, &format!("{T}/collections/abc/upsert"));
        assert_eq!(
            r.metrics_label(),
            "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/upsert"
        );
    }
}
