//! Property tests: path parsing round trips and id rewriting.

use http::Method;
use proptest::prelude::*;

use super::operation::{CollectionSegment, Operation, ResponseIds};
use super::rewrite::{rewrite_path_to_physical, rewrite_response_ids, PathRewrite};
use super::routes::{classify, CollectionRef, KnownRoute, Route};

fn uuid_string() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

/// Path values: UUID-shaped, Chroma-valid names, or arbitrary text
/// (slashes, `%`, `?`, unicode) that must survive encoding.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        uuid_string(),
        "[a-zA-Z0-9][a-zA-Z0-9._-]{1,20}[a-zA-Z0-9]",
        "\\PC{1,12}",
        Just("by-id".to_owned()),
        Just("attach".to_owned()),
        Just("collections".to_owned()),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    proptest::sample::select(Operation::ALL.to_vec())
}

fn known_route() -> impl Strategy<Value = KnownRoute> {
    (operation(), value(), value(), value(), value(), value()).prop_map(
        |(op, tenant, database, collection, function, crn)| {
            let t = op.template();
            KnownRoute {
                op,
                tenant: (t.contains("{tenant}") || t.contains("{tenant_name}")).then_some(tenant),
                database: t.contains("{database}").then_some(database),
                collection: match op.collection_segment() {
                    CollectionSegment::None => None,
                    CollectionSegment::Name => Some(CollectionRef::Name(collection)),
                    CollectionSegment::Id => Some(CollectionRef::Id(collection)),
                },
                function: (t.contains("{name}") || t.contains("{function_name}"))
                    .then_some(function),
                crn: t.contains("{crn}").then_some(crn),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn classify_inverts_render(route in known_route()) {
        let path = route.render();
        let back = classify(&route.op.method(), &path);
        prop_assert_eq!(back, Route::Known(route));
    }

    #[test]
    fn head_is_get(route in known_route()) {
        prop_assume!(route.op.method() == Method::GET);
        let path = route.render();
        prop_assert_eq!(classify(&Method::HEAD, &path), classify(&Method::GET, &path));
    }

    #[test]
    fn path_rewrite_changes_only_the_id_segment(
        route in known_route(),
        physical in uuid_string(),
        query in proptest::option::of("[a-z_=&0-9]{0,20}"),
    ) {
        let path = route.render();
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let method = route.op.method();
        let out = rewrite_path_to_physical(&method, &target, |_| Some(physical.clone()));
        match route.collection_id() {
            None => prop_assert_eq!(out, PathRewrite::NoCollectionId),
            Some(_) => {
                let PathRewrite::Rewritten(new) = out else {
                    return Err(TestCaseError::fail("not rewritten"));
                };
                let index = route.op.collection_segment_index().unwrap_or(usize::MAX);
                let (new_path, new_query) = new.split_once('?').map_or((new.as_str(), None), |(p, q)| (p, Some(q)));
                prop_assert_eq!(new_query, query.as_deref());
                let old: Vec<&str> = path.split('/').collect();
                let new_segs: Vec<&str> = new_path.split('/').collect();
                prop_assert_eq!(old.len(), new_segs.len());
                for (i, (a, b)) in old.iter().zip(&new_segs).enumerate() {
                    if i == index {
                        prop_assert_eq!(*b, physical.as_str());
                    } else {
                        prop_assert_eq!(a, b);
                    }
                }
                let mut expect = route.clone();
                expect.collection = Some(CollectionRef::Id(physical.clone()));
                prop_assert_eq!(classify(&method, new_path), Route::Known(expect));
            }
        }
        // No mapping: nothing is sent with a wrong id.
        let unmapped = rewrite_path_to_physical(&method, &target, |_| None);
        match route.collection_id() {
            None => prop_assert_eq!(unmapped, PathRewrite::NoCollectionId),
            Some(id) => prop_assert_eq!(unmapped, PathRewrite::Unmapped { logical: id.to_owned() }),
        }
    }

    #[test]
    fn response_rewrite_maps_ids_and_nothing_else(
        ids in proptest::collection::vec(uuid_string(), 0..5),
        names in proptest::collection::vec("\\PC{0,8}", 5),
        floats in proptest::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 5),
        known in proptest::collection::vec(any::<bool>(), 5),
        pretty in any::<bool>(),
    ) {
        // A list of collection objects, each with an inner "id" inside
        // metadata that must NOT be touched.
        let objs: Vec<serde_json::Value> = ids.iter().enumerate().map(|(i, id)| serde_json::json!({
            "name": names[i],
            "id": id,
            "metadata": {"id": id, "f": floats[i]},
            "tenant": "t",
        })).collect();
        let list = serde_json::Value::Array(objs);
        let body = if pretty { serde_json::to_vec_pretty(&list) } else { serde_json::to_vec(&list) }.unwrap();
        let map = |p: &str| {
            let i = ids.iter().position(|x| x == p)?;
            known[i].then(|| format!("L-{p}"))
        };
        let out = rewrite_response_ids(Operation::ListCollections, &body, map);
        let new_body = out.clone().unwrap_or_else(|| body.clone());
        let mut expect: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for (i, obj) in expect.as_array_mut().unwrap().iter_mut().enumerate() {
            if let Some(l) = map(&ids[i]) {
                obj["id"] = serde_json::Value::String(l);
            }
        }
        let got: serde_json::Value = serde_json::from_slice(&new_body).unwrap();
        prop_assert_eq!(got, expect);
        prop_assert_eq!(out.is_none(), ids.iter().all(|id| map(id).is_none()));
        // Identity when the closure knows nothing.
        prop_assert_eq!(rewrite_response_ids(Operation::ListCollections, &body, |_| None), None);
        // Single collection objects behave the same.
        for (i, obj) in list.as_array().unwrap().iter().enumerate() {
            let one = serde_json::to_vec(obj).unwrap();
            let out = rewrite_response_ids(Operation::GetCollectionById, &one, map);
            match map(&ids[i]) {
                None => prop_assert_eq!(out, None),
                Some(l) => {
                    let v: serde_json::Value = serde_json::from_slice(&out.unwrap()).unwrap();
                    prop_assert_eq!(v["id"].as_str(), Some(l.as_str()));
                    // Compare with the original text parsed the same way (f64 text
                    // does not always survive a Value round trip).
                    let orig: serde_json::Value = serde_json::from_slice(&one).unwrap();
                    prop_assert_eq!(&v["metadata"], &orig["metadata"]);
                    prop_assert_eq!(&v["name"], &orig["name"]);
                }
            }
        }
    }

    #[test]
    fn record_endpoint_bodies_are_untouched(
        op in operation(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        id in uuid_string(),
    ) {
        prop_assume!(op.response_ids() == ResponseIds::None);
        let json = format!(r#"{{"id":"{id}","ids":["{id}"]}}"#);
        prop_assert_eq!(rewrite_response_ids(op, &body, |_| Some("x".into())), None);
        prop_assert_eq!(rewrite_response_ids(op, json.as_bytes(), |_| Some("x".into())), None);
    }

    #[test]
    fn classify_never_panics(path in "(/[a-z%0-9:_-]{0,8}){0,12}", m in proptest::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])) {
        let full = format!("/api/v2{path}");
        let r = classify(&m, &full);
        let _ = (r.class(), r.scope(), r.metrics_label());
    }
}
