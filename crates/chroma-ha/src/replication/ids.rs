//! Collection ids: logical ids to a server's physical ids in paths and
//! back in responses, resolution by name, adoption of collections that
//! existed before the gateway, and what each applied write teaches the id
//! map.

use super::adoption::Listing;
use super::applier::Work;
use super::Replicator;
use crate::backend::UpstreamResponse;
use crate::chroma::{
    collection_info, collection_infos, rewrite_path_to_physical, rewrite_response_ids,
    CollectionRef, KnownRoute, Operation, PathRewrite, ResponseIds,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

impl Replicator {
    /// The request path with the logical collection id replaced by server
    /// `index`'s physical id (resolved by name if not yet known).
    pub(super) async fn physical_path(&self, index: usize, method: &Method, path: &str) -> String {
        let rewrite =
            |p: &str| rewrite_path_to_physical(method, p, |l| self.idmap.physical(l, index));
        match rewrite(path) {
            PathRewrite::NoCollectionId => path.to_string(),
            PathRewrite::Rewritten(p) => p,
            PathRewrite::Unmapped { logical } => {
                if self.resolve(index, &logical).await.is_some() {
                    if let PathRewrite::Rewritten(p) = rewrite(path) {
                        return p;
                    }
                }
                path.to_string()
            }
        }
    }

    /// Finds `logical`'s physical id on server `index` by the collection's
    /// name, and remembers it. The collection of that name there may be
    /// the copy of an older collection of the same name whose create the
    /// server applied first (see `IdMap::adopt`): then that one is linked,
    /// and `logical` is not there yet.
    pub(super) async fn resolve(&self, index: usize, logical: &str) -> Option<String> {
        let entry = self.idmap.get(logical)?;
        if self.idmap.is_gone_on(logical, index) {
            // Deleted there: another collection may have taken its name.
            return None;
        }
        let name = self.idmap.name_on(logical, index)?;
        let response = self
            .get_by_name(index, &entry.tenant, &entry.database, &name)
            .await?;
        let info = collection_info(&response.body)?;
        let linked = self
            .idmap
            .adopt(index, &entry.tenant, &entry.database, &info.name, &info.id);
        self.persist_idmap().await;
        (linked.as_deref() == Some(logical)).then_some(info.id)
    }

    pub(super) async fn get_by_name(
        &self,
        index: usize,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Option<UpstreamResponse> {
        use crate::chroma::segment::encode;
        let path = format!(
            "/api/v2/tenants/{}/databases/{}/collections/{}",
            encode(tenant),
            encode(database),
            encode(name)
        );
        let backend = &self.backends.all()[index];
        match backend
            .client()
            .send(Method::GET, &path, HeaderMap::new(), Bytes::new())
            .await
        {
            Ok(r) if r.status.is_success() => Some(r),
            _ => None,
        }
    }

    pub(super) async fn persist_idmap(&self) {
        if let Err(e) = self.idmap.persist().await {
            tracing::error!(error = %e, "saving the collection id map failed");
        }
    }

    /// Updates the id map after server `index` applied `work` (or found it
    /// already done), and returns the answer to give a client: for "already
    /// done" answers, the answer the write would have had. `Err` (why, and
    /// the answer back) when a create was found already done but the
    /// collection it made could not be looked up there: nothing links it
    /// yet, so the entry must be tried again, not counted as applied. A
    /// fresh answer (`already_done` false) is never an `Err`.
    pub(super) async fn learn(
        &self,
        index: usize,
        lsn: u64,
        work: &Work,
        response: UpstreamResponse,
        already_done: bool,
    ) -> Result<UpstreamResponse, (String, UpstreamResponse)> {
        let Some(route) = &work.route else {
            return Ok(response);
        };
        let tenant = route.tenant.as_deref().unwrap_or_default();
        let database = route.database.as_deref().unwrap_or_default();
        let response = match route.op {
            Operation::CreateCollection | Operation::ForkCollection => {
                let found = if already_done {
                    let name = crate::chroma::created_collection_name(route.op, &work.entry.body);
                    match name {
                        Some(name) => self.get_by_name(index, tenant, database, &name).await,
                        None => None,
                    }
                } else {
                    Some(response.clone())
                };
                match found {
                    Some(found) => {
                        if let Some(info) = collection_info(&found.body) {
                            let logical = self
                                .idmap
                                .learn_created(lsn, index, tenant, database, &info.name, &info.id);
                            tracing::debug!(
                                server = index,
                                lsn,
                                %logical,
                                physical = %info.id,
                                already_done,
                                "collection create learned"
                            );
                        }
                        found
                    }
                    None if already_done => {
                        let why = format!(
                            "the collection LSN {lsn} creates exists already, and looking it \
                             up by name failed"
                        );
                        return Err((why, response));
                    }
                    None => response,
                }
            }
            Operation::DeleteCollection => {
                if let Some(CollectionRef::Name(name)) = &route.collection {
                    self.idmap.forget(index, tenant, database, name, lsn);
                }
                ok_if(already_done, response)
            }
            Operation::DeleteDatabase => {
                self.idmap.forget_database(index, tenant, database, lsn);
                ok_if(already_done, response)
            }
            Operation::CreateDatabase | Operation::CreateTenant => ok_if(already_done, response),
            Operation::UpdateCollection => {
                let new_name = serde_json::from_slice::<serde_json::Value>(&work.entry.body)
                    .ok()
                    .and_then(|v| v.get("new_name").and_then(|n| n.as_str()).map(String::from));
                if let (Some(name), Some(logical)) = (new_name, route.collection_id()) {
                    self.idmap.rename(logical, index, &name, lsn);
                }
                response
            }
            Operation::Reset => {
                self.idmap.forget_server(index);
                self.adopted.clear();
                response
            }
            _ => response,
        };
        self.persist_idmap().await;
        Ok(response)
    }

    /// Rewrites physical ids in a response of `work` for its client.
    pub(super) fn to_client(
        &self,
        index: usize,
        work: &Work,
        response: UpstreamResponse,
    ) -> UpstreamResponse {
        match &work.route {
            Some(route) => self.rewrite_for_client(index, route.op, response),
            None => response,
        }
    }

    pub(super) fn rewrite_for_client(
        &self,
        index: usize,
        op: Operation,
        mut response: UpstreamResponse,
    ) -> UpstreamResponse {
        if response.status.is_success() {
            if let Some(body) =
                rewrite_response_ids(op, &response.body, |p| self.idmap.logical(p, index))
            {
                response.body = Bytes::from(body);
            }
        }
        response
    }

    /// Links collections a read returned that the map does not know yet.
    pub(super) async fn adopt_from_response(
        &self,
        index: usize,
        route: &KnownRoute,
        response: &UpstreamResponse,
    ) {
        if !response.status.is_success() {
            return;
        }
        let infos = match route.op.response_ids() {
            ResponseIds::Collection => collection_info(&response.body).map(|i| vec![i]),
            ResponseIds::CollectionList => collection_infos(&response.body),
            _ => None,
        };
        let mut changed = false;
        for info in infos.unwrap_or_default() {
            if self.idmap.logical(&info.id, index).is_some() {
                continue;
            }
            let tenant = info
                .tenant
                .clone()
                .or_else(|| route.tenant.clone())
                .unwrap_or_default();
            let database = info
                .database
                .clone()
                .or_else(|| route.database.clone())
                .unwrap_or_default();
            self.ensure_adopted(&tenant, &database).await;
            if self.idmap.logical(&info.id, index).is_none() {
                changed |= self
                    .idmap
                    .adopt(index, &tenant, &database, &info.name, &info.id)
                    .is_some();
            }
        }
        if changed {
            self.persist_idmap().await;
        }
    }

    /// Once per (tenant, database), server and run: lists the scope's
    /// collections on every healthy server (primary first) and links them
    /// by name, so logical ids of collections made before the gateway are
    /// the primary's ids. Concurrent first references wait for the listing
    /// in progress; a server unhealthy now is listed on a later reference
    /// once it is healthy; a database no server has is not remembered (see
    /// `adoption`).
    pub async fn ensure_adopted(&self, tenant: &str, database: &str) {
        let servers = self.backends.all();
        let adopted = self
            .adopted
            .ensure(
                tenant,
                database,
                servers.len(),
                |i| servers[i].health().is_healthy(),
                |i| self.adopt_listing(i, tenant, database),
            )
            .await;
        if adopted {
            self.persist_idmap().await;
        }
    }

    /// Lists (tenant, database)'s collections on server `index` and adopts
    /// them by name.
    async fn adopt_listing(&self, index: usize, tenant: &str, database: &str) -> Listing {
        use crate::chroma::segment::encode;
        let backend = &self.backends.all()[index];
        let mut offset = 0usize;
        loop {
            let path = format!(
                "/api/v2/tenants/{}/databases/{}/collections?limit=1000&offset={offset}",
                encode(tenant),
                encode(database)
            );
            let page = match backend
                .client()
                .send(Method::GET, &path, HeaderMap::new(), Bytes::new())
                .await
            {
                Ok(r) if r.status.is_success() => collection_infos(&r.body).unwrap_or_default(),
                Ok(r) if r.status == StatusCode::NOT_FOUND => return Listing::Missing,
                _ => return Listing::Failed,
            };
            for info in &page {
                // A collection deleted meanwhile is left out (`None`).
                let _ = self
                    .idmap
                    .adopt(index, tenant, database, &info.name, &info.id);
            }
            if page.len() < 1000 {
                return Listing::Listed;
            }
            offset += page.len();
        }
    }
}

fn ok_if(already_done: bool, response: UpstreamResponse) -> UpstreamResponse {
    if !already_done {
        return response;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    UpstreamResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"{}"),
    }
}
