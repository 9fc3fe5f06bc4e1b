//! The closed list of Chroma 1.5.9 HTTP operations and their static facts.
//!
//! One variant per `operationId` of `reference/chroma-1.5.9-openapi.json`;
//! the test in `openapi_tests.rs` checks that this list and the spec agree
//! exactly (path template, method, operationId).

use http::Method;

/// Whether a request reads, writes, or is not known to the dialect.
///
/// `Write` requests go through the log; `Read` requests never change a
/// server's data (some are POST: `get`, `query`, `search`); `Passthrough`
/// is what an unknown route gets: the dialect cannot say, the caller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Changes no data on the server; safe to send to any caught-up server.
    Read,
    /// Changes data; must be logged and applied on every server.
    Write,
    /// Not a known Chroma operation (or a known path with the wrong method).
    Passthrough,
}

/// The three nested levels of write scopes: Global ⊃ Database ⊃ Collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeLevel {
    /// One record collection (its records, its metadata).
    Collection,
    /// One database of one tenant (its collections, their names).
    Database,
    /// Everything (tenants, reset).
    Global,
}

/// How the route's collection segment is to be read.
///
/// Decided by the route, never by the shape of the segment: a collection
/// *name* may look like a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectionSegment {
    /// The route has no collection segment.
    None,
    /// The segment is a collection name (`GET`/`DELETE …/collections/{x}`).
    Name,
    /// The segment is a collection id (PUT, by-id, every record endpoint).
    Id,
}

/// Where the collection ids are in a 2xx response body of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseIds {
    /// No collection id in the body: it must be passed through untouched.
    None,
    /// The body is one `Collection` object: its top-level `"id"`.
    Collection,
    /// The body is an array of `Collection` objects: each one's `"id"`.
    CollectionList,
    /// `{"attached_function": {"input_collection_id", "output_collection_id"}}`.
    AttachedFunction,
}

/// One Chroma HTTP API operation, named after its OpenAPI `operationId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `GET /api/v2/auth/identity`
    GetUserIdentity,
    /// `GET /api/v2/collections/{crn}`
    GetCollectionByCrn,
    /// `GET /api/v2/healthcheck`
    Healthcheck,
    /// `GET /api/v2/heartbeat`
    Heartbeat,
    /// `GET /api/v2/pre-flight-checks`
    PreFlightChecks,
    /// `POST /api/v2/reset`
    Reset,
    /// `POST /api/v2/tenants`
    CreateTenant,
    /// `GET /api/v2/tenants/{tenant_name}`
    GetTenant,
    /// `PATCH /api/v2/tenants/{tenant_name}`
    UpdateTenant,
    /// `GET /api/v2/tenants/{tenant}/databases`
    ListDatabases,
    /// `POST /api/v2/tenants/{tenant}/databases`
    CreateDatabase,
    /// `GET /api/v2/tenants/{tenant}/databases/{database}`
    GetDatabase,
    /// `DELETE /api/v2/tenants/{tenant}/databases/{database}`
    DeleteDatabase,
    /// `GET …/collections`
    ListCollections,
    /// `POST …/collections`
    CreateCollection,
    /// `GET …/collections/by-id/{collection_id}`
    GetCollectionById,
    /// `GET …/collections/{collection_id}` (the segment is a NAME)
    GetCollection,
    /// `PUT …/collections/{collection_id}` (the segment is an ID)
    UpdateCollection,
    /// `DELETE …/collections/{collection_id}` (the segment is a NAME)
    DeleteCollection,
    /// `POST …/collections/{collection_id}/add`
    CollectionAdd,
    /// `POST …/collections/{collection_id}/attached_functions/{name}/detach`
    DetachFunction,
    /// `GET …/collections/{collection_id}/count`
    CollectionCount,
    /// `POST …/collections/{collection_id}/delete`
    CollectionDelete,
    /// `POST …/collections/{collection_id}/fork`
    ForkCollection,
    /// `GET …/collections/{collection_id}/fork_count`
    ForkCount,
    /// `POST …/collections/{collection_id}/functions/attach`
    AttachFunction,
    /// `GET …/collections/{collection_id}/functions/{function_name}`
    GetAttachedFunction,
    /// `POST …/collections/{collection_id}/get`
    CollectionGet,
    /// `GET …/collections/{collection_id}/indexing_status`
    IndexingStatus,
    /// `POST …/collections/{collection_id}/query`
    CollectionQuery,
    /// `POST …/collections/{collection_id}/search`
    CollectionSearch,
    /// `POST …/collections/{collection_id}/update`
    CollectionUpdate,
    /// `POST …/collections/{collection_id}/upsert`
    CollectionUpsert,
    /// `GET /api/v2/tenants/{tenant}/databases/{database}/collections_count`
    CountCollections,
    /// `GET /api/v2/version`
    Version,
}

use Operation::*;

impl Operation {
    /// Every operation, once each, in spec order.
    pub const ALL: [Operation; 35] = [
        GetUserIdentity,
        GetCollectionByCrn,
        Healthcheck,
        Heartbeat,
        PreFlightChecks,
        Reset,
        CreateTenant,
        GetTenant,
        UpdateTenant,
        ListDatabases,
        CreateDatabase,
        GetDatabase,
        DeleteDatabase,
        ListCollections,
        CreateCollection,
        GetCollectionById,
        GetCollection,
        UpdateCollection,
        DeleteCollection,
        CollectionAdd,
        DetachFunction,
        CollectionCount,
        CollectionDelete,
        ForkCollection,
        ForkCount,
        AttachFunction,
        GetAttachedFunction,
        CollectionGet,
        IndexingStatus,
        CollectionQuery,
        CollectionSearch,
        CollectionUpdate,
        CollectionUpsert,
        CountCollections,
        Version,
    ];

    /// The OpenAPI `operationId`, exactly as in the 1.5.9 spec.
    pub fn operation_id(self) -> &'static str {
        match self {
            GetUserIdentity => "get_user_identity",
            GetCollectionByCrn => "get_collection_by_crn",
            Healthcheck => "healthcheck",
            Heartbeat => "heartbeat",
            PreFlightChecks => "pre_flight_checks",
            Reset => "reset",
            CreateTenant => "create_tenant",
            GetTenant => "get_tenant",
            UpdateTenant => "update_tenant",
            ListDatabases => "list_databases",
            CreateDatabase => "create_database",
            GetDatabase => "get_database",
            DeleteDatabase => "delete_database",
            ListCollections => "list_collections",
            CreateCollection => "create_collection",
            GetCollectionById => "get_collection_by_id",
            GetCollection => "get_collection",
            UpdateCollection => "update_collection",
            DeleteCollection => "delete_collection",
            CollectionAdd => "collection_add",
            DetachFunction => "detach_function",
            CollectionCount => "collection_count",
            CollectionDelete => "collection_delete",
            ForkCollection => "fork_collection",
            ForkCount => "fork_count",
            AttachFunction => "attach_function",
            GetAttachedFunction => "get_attached_function",
            CollectionGet => "collection_get",
            IndexingStatus => "indexing_status",
            CollectionQuery => "collection_query",
            CollectionSearch => "collection_search",
            CollectionUpdate => "collection_update",
            CollectionUpsert => "collection_upsert",
            CountCollections => "count_collections",
            Version => "version",
        }
    }

    /// The OpenAPI path template, exactly as in the spec; a bounded set of
    /// strings, fit for metrics labels.
    pub fn template(self) -> &'static str {
        macro_rules! coll {
            ($tail:literal) => {
                concat!(
                    "/api/v2/tenants/{tenant}/databases/{database}/collections",
                    $tail
                )
            };
        }
        match self {
            GetUserIdentity => "/api/v2/auth/identity",
            GetCollectionByCrn => "/api/v2/collections/{crn}",
            Healthcheck => "/api/v2/healthcheck",
            Heartbeat => "/api/v2/heartbeat",
            PreFlightChecks => "/api/v2/pre-flight-checks",
            Reset => "/api/v2/reset",
            CreateTenant => "/api/v2/tenants",
            GetTenant | UpdateTenant => "/api/v2/tenants/{tenant_name}",
            ListDatabases | CreateDatabase => "/api/v2/tenants/{tenant}/databases",
            GetDatabase | DeleteDatabase => "/api/v2/tenants/{tenant}/databases/{database}",
            ListCollections | CreateCollection => coll!(""),
            GetCollectionById => coll!("/by-id/{collection_id}"),
            GetCollection | UpdateCollection | DeleteCollection => coll!("/{collection_id}"),
            CollectionAdd => coll!("/{collection_id}/add"),
            DetachFunction => coll!("/{collection_id}/attached_functions/{name}/detach"),
            CollectionCount => coll!("/{collection_id}/count"),
            CollectionDelete => coll!("/{collection_id}/delete"),
            ForkCollection => coll!("/{collection_id}/fork"),
            ForkCount => coll!("/{collection_id}/fork_count"),
            AttachFunction => coll!("/{collection_id}/functions/attach"),
            GetAttachedFunction => coll!("/{collection_id}/functions/{function_name}"),
            CollectionGet => coll!("/{collection_id}/get"),
            IndexingStatus => coll!("/{collection_id}/indexing_status"),
            CollectionQuery => coll!("/{collection_id}/query"),
            CollectionSearch => coll!("/{collection_id}/search"),
            CollectionUpdate => coll!("/{collection_id}/update"),
            CollectionUpsert => coll!("/{collection_id}/upsert"),
            CountCollections => "/api/v2/tenants/{tenant}/databases/{database}/collections_count",
            Version => "/api/v2/version",
        }
    }

    /// The HTTP method of the operation (HEAD requests are routed as GET).
    pub fn method(self) -> Method {
        match self {
            Reset | CreateTenant | CreateDatabase | CreateCollection | CollectionAdd
            | DetachFunction | CollectionDelete | ForkCollection | AttachFunction
            | CollectionGet | CollectionQuery | CollectionSearch | CollectionUpdate
            | CollectionUpsert => Method::POST,
            UpdateTenant => Method::PATCH,
            UpdateCollection => Method::PUT,
            DeleteDatabase | DeleteCollection => Method::DELETE,
            _ => Method::GET,
        }
    }

    /// Read or Write (never Passthrough: that is for unknown routes).
    pub fn class(self) -> Class {
        if self.write_level().is_some() {
            Class::Write
        } else {
            Class::Read
        }
    }

    /// For a write, the level of its scope as decided by the route; `None`
    /// for reads. Two writes refine it from the body (see `footprint`):
    /// `create_database` is Global when its body names no database, and
    /// `update_collection` is Database when it renames (or its body is not
    /// understood). `attach_function`/`detach_function` are Database because
    /// they may create or delete the output collection.
    pub fn write_level(self) -> Option<ScopeLevel> {
        match self {
            Reset | CreateTenant | UpdateTenant => Some(ScopeLevel::Global),
            CreateDatabase | DeleteDatabase | CreateCollection | DeleteCollection
            | ForkCollection | AttachFunction | DetachFunction => Some(ScopeLevel::Database),
            UpdateCollection | CollectionAdd | CollectionDelete | CollectionUpdate
            | CollectionUpsert => Some(ScopeLevel::Collection),
            _ => None,
        }
    }

    /// Whether the route's collection segment is a name, an id, or absent.
    pub fn collection_segment(self) -> CollectionSegment {
        match self {
            GetCollection | DeleteCollection => CollectionSegment::Name,
            GetCollectionById | UpdateCollection | CollectionAdd | DetachFunction
            | CollectionCount | CollectionDelete | ForkCollection | ForkCount | AttachFunction
            | GetAttachedFunction | CollectionGet | IndexingStatus | CollectionQuery
            | CollectionSearch | CollectionUpdate | CollectionUpsert => CollectionSegment::Id,
            _ => CollectionSegment::None,
        }
    }

    /// The index of the collection segment in the path split on `/`
    /// (index 0 is the empty string before the leading `/`); `None` when the
    /// route has no collection segment.
    pub fn collection_segment_index(self) -> Option<usize> {
        match self.collection_segment() {
            CollectionSegment::None => None,
            _ if self == GetCollectionById => Some(9),
            _ => Some(8),
        }
    }

    /// Where a 2xx response of this operation carries collection ids.
    /// `update_collection` answers `{}` on 1.5.9 (verified), so `None`.
    pub fn response_ids(self) -> ResponseIds {
        match self {
            CreateCollection | GetCollection | GetCollectionById | ForkCollection
            | GetCollectionByCrn => ResponseIds::Collection,
            ListCollections => ResponseIds::CollectionList,
            GetAttachedFunction => ResponseIds::AttachedFunction,
            _ => ResponseIds::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_unique_and_templates_index_the_collection_segment() {
        let mut seen = std::collections::HashSet::new();
        for op in Operation::ALL {
            assert!(seen.insert(op), "{op:?} twice");
            let segs: Vec<&str> = op.template().split('/').collect();
            match op.collection_segment_index() {
                Some(i) => assert_eq!(segs[i], "{collection_id}", "{op:?}"),
                None => assert!(!segs.contains(&"{collection_id}"), "{op:?}"),
            }
        }
    }

    #[test]
    fn classes_follow_write_level() {
        assert_eq!(CollectionQuery.class(), Class::Read);
        assert_eq!(CollectionGet.class(), Class::Read);
        assert_eq!(CollectionAdd.class(), Class::Write);
        assert_eq!(Reset.write_level(), Some(ScopeLevel::Global));
    }
}
