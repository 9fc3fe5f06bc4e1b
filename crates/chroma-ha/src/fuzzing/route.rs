//! The harness of the route classifier.

use http::Method;

use crate::chroma::operation::{CollectionSegment, Operation};
use crate::chroma::routes::{classify, CollectionRef, Route};
use crate::chroma::segment;

/// Methods the first input byte picks from (the last ones are not Chroma's).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
];

/// Splits `data` into a method (its first byte picks one of [`METHODS`])
/// and a path (the rest, as lossy UTF-8); `None` for empty input.
fn method_and_path(data: &[u8]) -> Option<(Method, String)> {
    let (&pick, rest) = data.split_first()?;
    let name = METHODS[usize::from(pick) % METHODS.len()];
    let method = Method::from_bytes(name.as_bytes()).ok()?;
    Some((method, String::from_utf8_lossy(rest).into_owned()))
}

/// Classifies the method and path in `data` (see [`method_and_path`]) and
/// checks the route's guarantees: a known route has the request's method
/// (HEAD served as GET) and as many segments as its template, exactly the
/// parameters its template names, a collection typed by the operation, and
/// renders to a path that classifies back to the same route; an unknown
/// route's shape stays bounded. Every path segment survives percent
/// decoding and re-encoding.
pub fn check_route(data: &[u8]) {
    let Some((method, path)) = method_and_path(data) else {
        return;
    };
    for raw in path.split('/') {
        let decoded = segment::decode(raw);
        assert_eq!(segment::decode(&segment::encode(&decoded)), decoded);
    }
    let route = classify(&method, &path);
    let _ = route.scope();
    let _ = route.class();
    match &route {
        Route::Unknown(unknown) => {
            assert_eq!(route.metrics_label(), crate::chroma::UNKNOWN_LABEL);
            let segments = unknown.shape.split('/').count();
            assert!(segments <= 18, "unbounded shape {:?}", unknown.shape);
        }
        Route::Known(known) => {
            let op = known.op;
            let served_as = if method == Method::HEAD {
                Method::GET
            } else {
                method.clone()
            };
            assert_eq!(op.method(), served_as, "{method} {path} is {op:?}");
            let template = op.template();
            assert_eq!(route.metrics_label(), template);
            assert_eq!(
                template.split('/').count(),
                path.split('/').count(),
                "{path} does not have the shape of {template}"
            );
            check_parameters(op, known);
            let rendered = known.render();
            assert_eq!(
                classify(&op.method(), &rendered),
                route,
                "{method} {path} renders to {rendered}, which classifies otherwise"
            );
        }
    }
}

fn check_parameters(op: Operation, known: &crate::chroma::routes::KnownRoute) {
    let t = op.template();
    let has = |param: &str| t.contains(param);
    assert_eq!(
        known.tenant.is_some(),
        has("{tenant}") || has("{tenant_name}")
    );
    assert_eq!(known.database.is_some(), has("{database}"));
    assert_eq!(
        known.function.is_some(),
        has("{name}") || has("{function_name}")
    );
    assert_eq!(known.crn.is_some(), has("{crn}"));
    match (op.collection_segment(), &known.collection) {
        (CollectionSegment::None, None)
        | (CollectionSegment::Name, Some(CollectionRef::Name(_)))
        | (CollectionSegment::Id, Some(CollectionRef::Id(_))) => {}
        (want, got) => panic!("{op:?}: collection {got:?}, expected {want:?}"),
    }
}
