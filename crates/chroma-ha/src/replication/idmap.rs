//! Logical collection ids. Chroma gives the same collection a different id
//! on every server; clients see one id, the *logical* id: the id from the
//! server that executed the create. This map links each logical id to the
//! physical id on every server, is kept durable as the `collections`
//! document of the [`StateStore`] (`collections.json` with the file log), and
//! adopts collections found on the servers by (tenant, database, name).
//!
//! Names are kept per server: each server applies the log in order, so a
//! lagging server may still know a collection by a name that another server
//! has already given to a different collection. A write that names a
//! collection by name (a delete, a resolution, an adoption) on a server
//! means the collection that has the name *on that server*.

use super::state_file::StateFileError;
use super::state_store::{self, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One collection as the gateway knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionEntry {
    /// The id clients see.
    pub logical: String,
    /// Tenant name.
    pub tenant: String,
    /// Database name.
    pub database: String,
    /// Its latest name: the one the latest rename applied anywhere gave it
    /// (the one clients see).
    pub name: String,
    /// Its name on each server, as far as that server has applied the log
    /// (a server yet to apply its create: the name it is created with).
    /// Absent in files written before names were kept per server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, String>,
    /// The LSN of the rename that gave it [`CollectionEntry::name`], so that
    /// a lagging server applying an earlier rename does not bring back an
    /// older name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_lsn: Option<u64>,
    /// The LSN of the create entry that made it, if the gateway saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_lsn: Option<u64>,
    /// Physical id per server name.
    pub physical: BTreeMap<String, String>,
    /// Servers that deleted it (by name): its id must never be resolved by
    /// name there again, since another collection may have taken the name.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub gone: BTreeSet<String>,
}

impl CollectionEntry {
    /// Its name on `server`: the one recorded there, else the latest name
    /// (a server that holds no link to it, or a file of an older version).
    pub fn name_on(&self, server: &str) -> &str {
        self.names.get(server).unwrap_or(&self.name)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    collections: Vec<CollectionEntry>,
}

/// The document's name in the [`StateStore`].
pub(crate) const KEY: state_store::Key = "collections";

#[derive(Debug, Default)]
struct Maps {
    by_logical: HashMap<String, CollectionEntry>,
    /// Per server index: physical id → logical id.
    by_physical: Vec<HashMap<String, String>>,
    /// Per server index: physical ids this run saw deleted there, newest
    /// last, at most [`MAX_DELETED_REMEMBERED`]. A listing sent before a
    /// delete may be answered after it: its copy of the deleted collection
    /// must not be adopted as a new one.
    deleted: Vec<(VecDeque<String>, HashSet<String>)>,
}

/// Deleted physical ids remembered per server (in memory: a listing cannot
/// outlive the run that sent it).
const MAX_DELETED_REMEMBERED: usize = 10_000;

/// The logical ↔ physical map of every server. Changes are durable once
/// [`IdMap::persist`] returns.
#[derive(Debug)]
pub struct IdMap {
    store: StateStore,
    servers: Vec<String>,
    maps: Mutex<Maps>,
    generation: AtomicU64,
    persisted: tokio::sync::Mutex<u64>,
}

impl Maps {
    /// Links `logical` to `physical` on `server`, where it is named `name`.
    fn link(
        &mut self,
        server: usize,
        servers: &[String],
        logical: &str,
        physical: &str,
        name: &str,
    ) {
        if let Some(entry) = self.by_logical.get_mut(logical) {
            if let Some(old) = entry
                .physical
                .insert(servers[server].clone(), physical.to_string())
            {
                self.by_physical[server].remove(&old);
            }
            entry
                .names
                .insert(servers[server].clone(), name.to_string());
            // It is on that server now (a create applied after a delete).
            entry.gone.remove(&servers[server]);
            self.by_physical[server].insert(physical.to_string(), logical.to_string());
        }
    }

    /// `server` no longer holds `logical`. The entry is dropped only once
    /// every server has deleted it: a lagging server that has not applied
    /// its create yet still needs it, to link its copy to the logical id
    /// that later entries name.
    fn unlink(&mut self, server: usize, servers: &[String], logical: &str) {
        let Some(entry) = self.by_logical.get_mut(logical) else {
            return;
        };
        if let Some(physical) = entry.physical.remove(&servers[server]) {
            self.by_physical[server].remove(&physical);
            let (order, set) = &mut self.deleted[server];
            if set.insert(physical.clone()) {
                order.push_back(physical);
                if order.len() > MAX_DELETED_REMEMBERED {
                    if let Some(oldest) = order.pop_front() {
                        set.remove(&oldest);
                    }
                }
            }
        }
        entry.names.remove(&servers[server]);
        entry.gone.insert(servers[server].clone());
        if entry.physical.is_empty() && servers.iter().all(|s| entry.gone.contains(s)) {
            self.by_logical.remove(logical);
        }
    }

    /// Adds a collection whose logical id is `physical` (a fresh UUID in
    /// the unlikely case that id is taken) and returns that id. Every
    /// server is to know it by `name` until it applies a rename of it.
    fn insert_new(
        &mut self,
        servers: &[String],
        physical: &str,
        tenant: &str,
        database: &str,
        name: &str,
        created_lsn: Option<u64>,
    ) -> String {
        let logical = if self.by_logical.contains_key(physical) {
            uuid::Uuid::new_v4().to_string()
        } else {
            physical.to_string()
        };
        self.by_logical.insert(
            logical.clone(),
            CollectionEntry {
                logical: logical.clone(),
                tenant: tenant.to_string(),
                database: database.to_string(),
                name: name.to_string(),
                names: servers
                    .iter()
                    .map(|s| (s.clone(), name.to_string()))
                    .collect(),
                renamed_lsn: None,
                created_lsn,
                physical: BTreeMap::new(),
                gone: BTreeSet::new(),
            },
        );
        logical
    }

    /// The collection that a collection named `name` found on `server`,
    /// and not linked there, is a copy of: among the collections known by
    /// that name on `server` that have no link there and were not deleted
    /// there, the *oldest* (one adopted from outside the log first, else
    /// the lowest creating LSN).
    ///
    /// Why the oldest: a server applies the log in order, and deletes a
    /// name before it creates it again. Every unlinked, undeleted
    /// collection of that name is one whose create the server has not
    /// applied durably yet; the copy it holds can only come from the
    /// earliest of them (its create in flight, or applied before a crash
    /// lost the link). The later ones still wait behind that one's delete.
    fn find_unlinked_by_name(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        server: &str,
    ) -> Option<String> {
        self.by_logical
            .values()
            .filter(|c| c.tenant == tenant && c.database == database && c.name_on(server) == name)
            .filter(|c| !c.physical.contains_key(server) && !c.gone.contains(server))
            .min_by(|a, b| (a.created_lsn, &a.logical).cmp(&(b.created_lsn, &b.logical)))
            .map(|c| c.logical.clone())
    }
}

impl IdMap {
    /// Loads the map from `store` (empty if it was never stored) for the
    /// servers named in priority order. Links to servers no longer
    /// configured are kept but not used.
    pub async fn load(store: StateStore, servers: Vec<String>) -> Result<Self, StateFileError> {
        let file: FileFormat = store.load(KEY).await?.unwrap_or_default();
        let mut maps = Maps {
            by_logical: HashMap::new(),
            by_physical: vec![HashMap::new(); servers.len()],
            deleted: vec![Default::default(); servers.len()],
        };
        for mut entry in file.collections {
            for (i, server) in servers.iter().enumerate() {
                if let Some(physical) = entry.physical.get(server) {
                    maps.by_physical[i].insert(physical.clone(), entry.logical.clone());
                }
            }
            // A file of an older version has only the latest name: the best
            // guess for each linked server, kept from now on so that later
            // renames on other servers do not move it.
            let linked: Vec<String> = entry.physical.keys().cloned().collect();
            for server in linked {
                if !entry.names.contains_key(&server) {
                    entry.names.insert(server, entry.name.clone());
                }
            }
            maps.by_logical.insert(entry.logical.clone(), entry);
        }
        Ok(IdMap {
            store,
            servers,
            maps: Mutex::new(maps),
            generation: AtomicU64::new(0),
            persisted: tokio::sync::Mutex::new(0),
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The physical id of `logical` on `server`.
    pub fn physical(&self, logical: &str, server: usize) -> Option<String> {
        let maps = self.maps();
        maps.by_logical
            .get(logical)?
            .physical
            .get(&self.servers[server])
            .cloned()
    }

    /// The logical id of `physical` on `server`.
    pub fn logical(&self, physical: &str, server: usize) -> Option<String> {
        self.maps().by_physical.get(server)?.get(physical).cloned()
    }

    /// The collection behind a logical id.
    pub fn get(&self, logical: &str) -> Option<CollectionEntry> {
        self.maps().by_logical.get(logical).cloned()
    }

    /// The tenants of the collections known, with Chroma's default tenant,
    /// sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants: BTreeSet<String> = self
            .maps()
            .by_logical
            .values()
            .map(|c| c.tenant.clone())
            .collect();
        tenants.insert(crate::check::DEFAULT_TENANT.to_string());
        tenants.into_iter().collect()
    }

    /// Links `logical` to `physical` on `server`, named `name` there (a
    /// collection copied onto `server` by a rebuild). Persist afterwards.
    pub fn link_copy(&self, server: usize, logical: &str, physical: &str, name: &str) {
        self.maps()
            .link(server, &self.servers, logical, physical, name);
        self.changed();
    }

    /// Number of logical collections.
    pub fn len(&self) -> usize {
        self.maps().by_logical.len()
    }

    /// Whether no collection is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that `server` applied the create entry `lsn` and holds the
    /// collection as `physical`. Returns the logical id: the one already
    /// linked to `physical`, else the one the create made on another
    /// server, else `physical` itself (this server executed the create).
    pub fn learn_created(
        &self,
        lsn: u64,
        server: usize,
        tenant: &str,
        database: &str,
        name: &str,
        physical: &str,
    ) -> String {
        let mut maps = self.maps();
        if let Some(logical) = maps.by_physical[server].get(physical).cloned() {
            // Adopted by name before this create was learned (a listing
            // raced it, or a crash lost its answer): it is this entry's
            // collection. It cannot be an older one: a delete between its
            // making and this create would have made this create make a
            // new one. Without the LSN, a lagging server's delete of an
            // earlier database would take it for one of that database's.
            let entry = maps.by_logical.get_mut(&logical);
            if let Some(created) = entry.map(|e| &mut e.created_lsn).filter(|c| c.is_none()) {
                *created = Some(lsn);
                drop(maps);
                self.changed();
            }
            return logical;
        }
        let server_name = &self.servers[server];
        let made_by_this_entry = maps
            .by_logical
            .values()
            .find(|c| c.created_lsn == Some(lsn))
            .map(|c| c.logical.clone());
        // A collection adopted by name while this create was under way (a
        // read listed it on the executor first) has no creating LSN yet.
        let adopted_meanwhile = || {
            maps.by_logical
                .values()
                .find(|c| {
                    c.created_lsn.is_none()
                        && c.tenant == tenant
                        && c.database == database
                        && c.name_on(server_name) == name
                        && !c.physical.contains_key(server_name)
                        && !c.gone.contains(server_name)
                })
                .map(|c| c.logical.clone())
        };
        let found = made_by_this_entry.or_else(adopted_meanwhile);
        let new = found.is_none();
        let logical = match found {
            Some(logical) => logical,
            None => maps.insert_new(&self.servers, physical, tenant, database, name, Some(lsn)),
        };
        tracing::debug!(server = %server_name, lsn, %database, %name, %physical, %logical, new, "id map: create linked");
        if let Some(entry) = maps.by_logical.get_mut(&logical) {
            entry.created_lsn.get_or_insert(lsn);
        }
        maps.link(server, &self.servers, &logical, physical, name);
        drop(maps);
        self.changed();
        logical
    }

    /// Adopts a collection found on `server` by (tenant, database, name)
    /// and returns its logical id: the one `physical` is linked to already,
    /// else the collection it is a copy of (the oldest of that name with no
    /// link there, see `find_unlinked_by_name`), else `physical` made a
    /// new logical id (a collection made outside the gateway). `None` for
    /// a collection this run saw deleted there: the listing that found it
    /// was answered before the delete.
    pub fn adopt(
        &self,
        server: usize,
        tenant: &str,
        database: &str,
        name: &str,
        physical: &str,
    ) -> Option<String> {
        let mut maps = self.maps();
        if let Some(logical) = maps.by_physical[server].get(physical).cloned() {
            return Some(logical);
        }
        if maps.deleted[server].1.contains(physical) {
            tracing::debug!(server = %self.servers[server], %database, %name, %physical, "id map: not adopting a collection deleted there");
            return None;
        }
        let found = maps.find_unlinked_by_name(tenant, database, name, &self.servers[server]);
        let new = found.is_none();
        let logical = match found {
            Some(logical) => logical,
            None => maps.insert_new(&self.servers, physical, tenant, database, name, None),
        };
        tracing::debug!(server = %self.servers[server], %database, %name, %physical, %logical, new, "id map: adopted by name");
        maps.link(server, &self.servers, &logical, physical, name);
        drop(maps);
        self.changed();
        Some(logical)
    }

    /// Whether `server` deleted the collection `logical` (so its name now
    /// means nothing for that id there).
    pub fn is_gone_on(&self, logical: &str, server: usize) -> bool {
        self.maps()
            .by_logical
            .get(logical)
            .is_some_and(|c| c.gone.contains(&self.servers[server]))
    }

    /// The name of `logical` on `server` (see [`CollectionEntry::name_on`]).
    pub fn name_on(&self, logical: &str, server: usize) -> Option<String> {
        let maps = self.maps();
        let entry = maps.by_logical.get(logical)?;
        Some(entry.name_on(&self.servers[server]).to_string())
    }

    /// `server` applied the delete entry `lsn` of the collection named
    /// `name` *on that server* (which may lag: another collection may have
    /// that name elsewhere already): drop its link there. A collection of
    /// that name it holds no link to and whose create came before `lsn`
    /// (one it never had) is marked gone there too; one created after
    /// `lsn` is not touched, since the server has yet to apply its create.
    pub fn forget(&self, server: usize, tenant: &str, database: &str, name: &str, lsn: u64) {
        let mut maps = self.maps();
        let server_name = &self.servers[server];
        let named = |c: &CollectionEntry| {
            c.tenant == tenant && c.database == database && c.name_on(server_name) == name
        };
        let found = maps
            .by_logical
            .values()
            .find(|c| named(c) && c.physical.contains_key(server_name))
            .map(|c| c.logical.clone());
        let doomed: Vec<String> = match found {
            Some(logical) => vec![logical],
            None => maps
                .by_logical
                .values()
                .filter(|c| named(c) && created_before(c, lsn) && !c.gone.contains(server_name))
                .map(|c| c.logical.clone())
                .collect(),
        };
        tracing::debug!(server = %server_name, lsn, %database, %name, ?doomed, "id map: collection delete applied");
        if doomed.is_empty() {
            return;
        }
        for logical in doomed {
            maps.unlink(server, &self.servers, &logical);
        }
        drop(maps);
        self.changed();
    }

    /// `server` applied the delete entry `lsn` of a whole database: drop
    /// its links there to the collections created before `lsn` (the ones
    /// created after it, in a database of the same name made again, are
    /// still to come on that server).
    pub fn forget_database(&self, server: usize, tenant: &str, database: &str, lsn: u64) {
        let mut maps = self.maps();
        let doomed: Vec<String> = maps
            .by_logical
            .values()
            .filter(|c| c.tenant == tenant && c.database == database && created_before(c, lsn))
            .map(|c| c.logical.clone())
            .collect();
        tracing::debug!(server = %self.servers[server], lsn, %database, ?doomed, "id map: database delete applied");
        for logical in doomed {
            maps.unlink(server, &self.servers, &logical);
        }
        drop(maps);
        self.changed();
    }

    /// `server` was reset: it holds no collection any more.
    pub fn forget_server(&self, server: usize) {
        let mut maps = self.maps();
        let doomed: Vec<String> = maps.by_physical[server].values().cloned().collect();
        for logical in doomed {
            maps.unlink(server, &self.servers, &logical);
        }
        drop(maps);
        self.changed();
    }

    /// `server` applied the rename entry `lsn` of `logical` to `name`. The
    /// latest name follows the rename of the highest LSN seen.
    pub fn rename(&self, logical: &str, server: usize, name: &str, lsn: u64) {
        if let Some(entry) = self.maps().by_logical.get_mut(logical) {
            entry
                .names
                .insert(self.servers[server].clone(), name.to_string());
            if entry.renamed_lsn.is_none_or(|latest| lsn >= latest) {
                entry.name = name.to_string();
                entry.renamed_lsn = Some(lsn);
            }
        }
        self.changed();
    }

    /// Makes every change so far durable (coalescing concurrent callers).
    pub async fn persist(&self) -> Result<(), StateFileError> {
        let target = self.generation.load(Ordering::Acquire);
        let mut persisted = self.persisted.lock().await;
        if *persisted >= target {
            return Ok(());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut collections: Vec<CollectionEntry> =
            self.maps().by_logical.values().cloned().collect();
        collections.sort_by(|a, b| a.logical.cmp(&b.logical));
        self.store.store(KEY, FileFormat { collections }).await?;
        *persisted = generation;
        Ok(())
    }
}

/// Whether `entry` was created before the entry `lsn` (or outside the
/// log: adopted, so before anything the gateway applies now).
fn created_before(entry: &CollectionEntry, lsn: u64) -> bool {
    entry.created_lsn.is_none_or(|created| created < lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn map(dir: &std::path::Path) -> IdMap {
        let store = StateStore::Files(dir.to_path_buf());
        IdMap::load(store, vec!["primary".into(), "replica".into()])
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_executor_names_the_logical_id_and_replicas_link_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let logical = ids.learn_created(7, 1, "t", "d", "docs", "R1");
        assert_eq!(logical, "R1", "the replica executed the create");
        assert_eq!(ids.learn_created(7, 0, "t", "d", "docs", "P1"), "R1");
        assert_eq!(ids.physical("R1", 0).as_deref(), Some("P1"));
        assert_eq!(ids.logical("P1", 0).as_deref(), Some("R1"));
        // Replaying the create is harmless.
        assert_eq!(ids.learn_created(7, 0, "t", "d", "docs", "P1"), "R1");
        ids.persist().await.unwrap();
        let again = map(dir.path()).await;
        assert_eq!(again.physical("R1", 0).as_deref(), Some("P1"));
        assert_eq!(again.physical("R1", 1).as_deref(), Some("R1"));
    }

    #[tokio::test]
    async fn a_collection_deleted_on_one_server_is_never_matched_by_name_there_again() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let old = ids.learn_created(1, 0, "t", "d", "taken", "P1");
        ids.learn_created(1, 1, "t", "d", "taken", "R1");
        ids.forget(0, "t", "d", "taken", 100);
        assert!(ids.is_gone_on(&old, 0));
        assert!(
            !ids.is_gone_on(&old, 1),
            "the replica has not deleted it yet"
        );
        // Another collection takes the name on the primary: a new id.
        let new = ids.adopt(0, "t", "d", "taken", "P2").unwrap();
        assert_ne!(new, old);
        assert_eq!(ids.physical(&old, 0), None);
        ids.persist().await.unwrap();
        assert!(
            map(dir.path()).await.is_gone_on(&old, 0),
            "kept across restarts"
        );
    }

    #[tokio::test]
    async fn adoption_links_by_name_and_a_recreated_name_gets_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let a = ids.adopt(0, "t", "d", "old", "P9").unwrap();
        assert_eq!(ids.adopt(1, "t", "d", "old", "R9").unwrap(), a);
        ids.forget(0, "t", "d", "old", 100);
        ids.forget(1, "t", "d", "old", 100);
        assert!(ids.get(&a).is_none());
        let b = ids.learn_created(20, 0, "t", "d", "old", "P10");
        assert_ne!(a, b);
        assert_eq!(ids.learn_created(20, 1, "t", "d", "old", "R10"), b);
    }

    #[tokio::test]
    async fn a_reset_forgets_one_server_only() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let a = ids.learn_created(1, 0, "t", "d", "x", "P1");
        ids.learn_created(1, 1, "t", "d", "x", "R1");
        ids.forget_server(0);
        assert_eq!(ids.physical(&a, 0), None);
        assert_eq!(ids.physical(&a, 1).as_deref(), Some("R1"));
        ids.forget_server(1);
        assert!(ids.is_empty());
    }

    /// Both servers hold `old` and `new`; the primary then deletes `old` and
    /// renames `new` to `old` (LSNs 3 and 4) while the replica lags.
    fn primary_reuses_a_deleted_name(ids: &IdMap, old: &str, new: &str) -> (String, String) {
        let a = ids.learn_created(1, 0, "t", "d", old, &format!("P-{old}"));
        ids.learn_created(1, 1, "t", "d", old, &format!("R-{old}"));
        let b = ids.learn_created(2, 0, "t", "d", new, &format!("P-{new}"));
        ids.learn_created(2, 1, "t", "d", new, &format!("R-{new}"));
        ids.forget(0, "t", "d", old, 3);
        ids.rename(&b, 0, old, 4);
        (a, b)
    }

    #[tokio::test]
    async fn a_lagging_servers_delete_by_name_unlinks_the_collection_that_had_the_name_on_that_server_not_the_one_renamed_into_it(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        // Which entry a name-keyed lookup finds depends on hash-map order:
        // enough rounds that a wrong pick cannot pass by luck.
        for round in 0..32 {
            let (old, new) = (format!("old{round}"), format!("new{round}"));
            let (a, b) = primary_reuses_a_deleted_name(&ids, &old, &new);
            // The replica catches up: its delete of `old` means `a`.
            ids.forget(1, "t", "d", &old, 100);
            assert!(
                ids.get(&a).is_none(),
                "round {round}: `a` is gone everywhere"
            );
            assert_eq!(
                ids.physical(&b, 1),
                Some(format!("R-{new}")),
                "round {round}: the replica's delete unlinked the collection renamed into the name"
            );
            assert!(!ids.is_gone_on(&b, 1), "round {round}");
            ids.rename(&b, 1, &old, 4);
            assert_eq!(ids.name_on(&b, 1), Some(old.clone()), "round {round}");
        }
    }

    #[tokio::test]
    async fn a_lagging_server_resolves_a_collection_by_the_name_it_has_on_that_server() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let (_, b) = primary_reuses_a_deleted_name(&ids, "old", "new");
        assert_eq!(ids.get(&b).unwrap().name, "old", "clients see the new name");
        assert_eq!(ids.name_on(&b, 0).as_deref(), Some("old"));
        assert_eq!(
            ids.name_on(&b, 1).as_deref(),
            Some("new"),
            "the replica has not applied the rename yet"
        );
    }

    #[tokio::test]
    async fn a_lagging_server_applying_an_earlier_rename_does_not_bring_back_an_older_latest_name()
    {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let a = ids.learn_created(1, 0, "t", "d", "first", "P1");
        ids.learn_created(1, 1, "t", "d", "first", "R1");
        ids.rename(&a, 0, "second", 5);
        ids.rename(&a, 0, "third", 6);
        ids.rename(&a, 1, "second", 5);
        assert_eq!(ids.get(&a).unwrap().name, "third");
        assert_eq!(ids.name_on(&a, 1).as_deref(), Some("second"));
        ids.rename(&a, 1, "third", 6);
        assert_eq!(ids.name_on(&a, 1).as_deref(), Some("third"));
    }

    #[tokio::test]
    async fn per_server_names_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let (a, b) = primary_reuses_a_deleted_name(&ids, "old", "new");
        ids.persist().await.unwrap();
        drop(ids);
        for _ in 0..16 {
            let again = map(dir.path()).await;
            assert_eq!(again.name_on(&b, 1).as_deref(), Some("new"));
            assert_eq!(again.name_on(&b, 0).as_deref(), Some("old"));
            again.forget(1, "t", "d", "old", 100);
            assert!(again.get(&a).is_none());
            assert_eq!(again.physical(&b, 1).as_deref(), Some("R-new"));
            // Reloaded again from the same file: `again` is not persisted.
        }
        // And the latest rename's LSN survives too.
        let again = map(dir.path()).await;
        again.rename(&b, 1, "earlier", 3);
        assert_eq!(again.get(&b).unwrap().name, "old");
    }

    #[tokio::test]
    async fn a_file_without_per_server_names_gives_each_linked_server_the_latest_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collections.json");
        let old_format = serde_json::json!({"collections": [{
            "logical": "P1", "tenant": "t", "database": "d", "name": "docs",
            "created_lsn": 1, "physical": {"primary": "P1", "replica": "R1"}
        }]});
        std::fs::write(&path, serde_json::to_vec(&old_format).unwrap()).unwrap();
        let ids = map(dir.path()).await;
        assert_eq!(ids.name_on("P1", 1).as_deref(), Some("docs"));
        // A rename on the primary does not move the replica's name.
        ids.rename("P1", 0, "renamed", 9);
        assert_eq!(ids.name_on("P1", 1).as_deref(), Some("docs"));
        ids.forget(1, "t", "d", "docs", 100);
        assert_eq!(ids.physical("P1", 1), None);
    }

    #[tokio::test]
    async fn a_collection_deleted_on_its_executor_before_a_lagging_server_applied_its_create_still_gets_linked_there(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        // The primary creates `col0` (LSN 337) and deletes it (LSN 341)
        // before the replica has applied the create.
        let a = ids.learn_created(337, 0, "t", "d", "col0", "P1");
        ids.forget(0, "t", "d", "col0", 341);
        assert_eq!(
            ids.learn_created(337, 1, "t", "d", "col0", "R1"),
            a,
            "the replica's copy is the same logical collection"
        );
        assert_eq!(ids.physical(&a, 1).as_deref(), Some("R1"));
        ids.forget(1, "t", "d", "col0", 341);
        assert!(ids.get(&a).is_none(), "deleted everywhere: dropped");
    }

    #[tokio::test]
    async fn a_lagging_servers_database_delete_leaves_the_collections_created_after_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let x = ids.learn_created(1, 0, "t", "d", "x", "P1");
        ids.learn_created(1, 1, "t", "d", "x", "R1");
        // The primary deletes the database (LSN 5), makes it again and
        // creates `y` in it (LSN 7); then the replica applies LSN 5.
        ids.forget_database(0, "t", "d", 5);
        let y = ids.learn_created(7, 0, "t", "d", "y", "P7");
        ids.forget_database(1, "t", "d", 5);
        assert!(ids.get(&x).is_none());
        assert!(!ids.is_gone_on(&y, 1), "the replica has yet to create `y`");
        assert_eq!(ids.learn_created(7, 1, "t", "d", "y", "R7"), y);
        assert_eq!(ids.physical(&y, 1).as_deref(), Some("R7"));
    }

    /// The primary creates `x` (LSN 10), deletes it (LSN 11) and creates
    /// `x` again (LSN 12) while the replica lags; the replica holds `R1`,
    /// its copy of the first `x`, that no link names yet.
    fn a_name_reused_while_the_replica_lags(ids: &IdMap) -> (String, String) {
        let first = ids.learn_created(10, 0, "t", "d", "x", "P1");
        ids.forget(0, "t", "d", "x", 11);
        let second = ids.learn_created(12, 0, "t", "d", "x", "P2");
        (first, second)
    }

    #[tokio::test]
    async fn a_lagging_servers_copy_found_by_a_listing_before_its_create_was_learned_is_linked_to_the_first_collection_of_that_name_not_the_newest(
    ) {
        // A listing (a read, or adoption after a restart that lost the
        // link) finds the replica's `x` before the applier learns it.
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let (first, second) = a_name_reused_while_the_replica_lags(&ids);
        assert_eq!(ids.adopt(1, "t", "d", "x", "R1").unwrap(), first);
        assert_eq!(ids.learn_created(10, 1, "t", "d", "x", "R1"), first);
        assert_eq!(ids.physical(&first, 1).as_deref(), Some("R1"));
        assert_eq!(ids.physical(&second, 1), None, "not created there yet");
        // The replica goes on: the delete, then the second create.
        ids.forget(1, "t", "d", "x", 11);
        assert!(ids.get(&first).is_none(), "deleted everywhere");
        assert_eq!(ids.adopt(1, "t", "d", "x", "R2").unwrap(), second);
        assert_eq!(ids.learn_created(12, 1, "t", "d", "x", "R2"), second);
        assert_eq!(ids.physical(&second, 1).as_deref(), Some("R2"));
    }

    #[tokio::test]
    async fn a_collection_renamed_before_a_lagging_server_created_it_is_still_found_there_by_the_name_it_was_created_with(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let a = ids.learn_created(10, 0, "t", "d", "x", "P1");
        ids.rename(&a, 0, "y", 11);
        assert_eq!(ids.name_on(&a, 1).as_deref(), Some("x"));
        assert_eq!(ids.adopt(1, "t", "d", "x", "R1").unwrap(), a);
        ids.rename(&a, 1, "y", 11);
        assert_eq!(ids.name_on(&a, 1).as_deref(), Some("y"));
    }

    #[tokio::test]
    async fn a_collection_adopted_on_its_executor_before_its_create_was_learned_still_gets_linked_on_a_server_that_lags_behind_an_earlier_database_delete(
    ) {
        // Seen in a crash history (seed 404): the primary executed the
        // create of `col0` (LSN 336) and the gateway died before learning
        // it; after the restart a listing adopted the primary's copy by
        // name, then the primary's replay of LSN 336 found it already done.
        // The replica, lagging, then applied a delete of the database made
        // before (LSN 231), then LSN 336.
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let adopted = ids.adopt(0, "t", "hdb1", "col0", "P1").unwrap();
        assert_eq!(
            ids.learn_created(336, 0, "t", "hdb1", "col0", "P1"),
            adopted
        );
        ids.forget_database(1, "t", "hdb1", 231);
        assert!(!ids.is_gone_on(&adopted, 1), "created after the delete");
        assert_eq!(
            ids.learn_created(336, 1, "t", "hdb1", "col0", "R1"),
            adopted,
            "the replica's copy is the same logical collection"
        );
        assert_eq!(ids.physical(&adopted, 1).as_deref(), Some("R1"));
    }

    #[tokio::test]
    async fn a_listing_answered_after_a_delete_does_not_bring_the_deleted_collection_back_as_a_new_one(
    ) {
        // Seen in a crash history (seed 101): a listing of the primary
        // answered just after it applied the delete of `col3` still held
        // it; adopting it made a phantom collection that a later create of
        // `col3` on the replica then linked to: primary 404s.
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        let a = ids.learn_created(1, 0, "t", "d", "col3", "P1");
        ids.learn_created(1, 1, "t", "d", "col3", "R1");
        ids.forget(0, "t", "d", "col3", 111);
        assert_eq!(ids.adopt(0, "t", "d", "col3", "P1"), None);
        assert_eq!(ids.len(), 1, "no phantom entry");
        ids.forget(1, "t", "d", "col3", 111);
        assert!(ids.get(&a).is_none());
        // The next `col3`, created on the replica, gets its own id and the
        // primary's copy links to it.
        let b = ids.learn_created(953, 1, "t", "d", "col3", "R2");
        assert_eq!(ids.learn_created(953, 0, "t", "d", "col3", "P2"), b);
    }

    #[tokio::test]
    async fn a_delete_by_name_on_a_server_that_never_had_the_collection_lets_it_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ids = map(dir.path()).await;
        // Adopted on the primary only (made before the gateway).
        let a = ids.adopt(0, "t", "d", "only", "P1").unwrap();
        ids.forget(0, "t", "d", "only", 9);
        assert!(ids.get(&a).is_some(), "the replica has not applied it yet");
        ids.forget(1, "t", "d", "only", 9);
        assert!(ids.get(&a).is_none());
    }
}
