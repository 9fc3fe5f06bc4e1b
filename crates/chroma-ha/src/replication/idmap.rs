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

/// A collection on one server: its logical id, its id there and its name
/// there (`GET /admin/servers/NAME/collections`, a backup's manifest, a
/// restored server's join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLink {
    /// The id clients see; `None` where it is not known (a collection
    /// made on the server outside the gateway and never listed through it).
    pub logical: Option<String>,
    /// Its id on the server.
    pub physical: String,
    /// Tenant name.
    pub tenant: String,
    /// Database name.
    pub database: String,
    /// Its name on the server.
    pub name: String,
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

    /// Links a collection copied onto `server` (by a rebuild, or restored
    /// from a backup) to its logical id. A logical id the map no longer
    /// knows (every server has deleted it since the copy's position) is
    /// known again, on `server` only: the server has yet to replay that
    /// delete. One without a logical id is adopted by name there. Persist
    /// afterwards.
    pub fn link_copy(&self, server: usize, link: &ServerLink) {
        let Some(logical) = &link.logical else {
            self.adopt(
                server,
                &link.tenant,
                &link.database,
                &link.name,
                &link.physical,
            );
            return;
        };
        let mut maps = self.maps();
        if !maps.by_logical.contains_key(logical) {
            maps.by_logical.insert(
                logical.clone(),
                CollectionEntry {
                    logical: logical.clone(),
                    tenant: link.tenant.clone(),
                    database: link.database.clone(),
                    name: link.name.clone(),
                    names: BTreeMap::new(),
                    renamed_lsn: None,
                    created_lsn: None,
                    physical: BTreeMap::new(),
                    gone: self
                        .servers
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != server)
                        .map(|(_, s)| s.clone())
                        .collect(),
                },
            );
        }
        maps.link(server, &self.servers, logical, &link.physical, &link.name);
        drop(maps);
        self.changed();
    }

    /// Every collection `server` holds a link to, as it is known there.
    pub fn links(&self, server: usize) -> Vec<ServerLink> {
        let maps = self.maps();
        let name = &self.servers[server];
        let mut links: Vec<ServerLink> = maps
            .by_logical
            .values()
            .filter_map(|c| {
                Some(ServerLink {
                    logical: Some(c.logical.clone()),
                    physical: c.physical.get(name)?.clone(),
                    tenant: c.tenant.clone(),
                    database: c.database.clone(),
                    name: c.name_on(name).to_string(),
                })
            })
            .collect();
        links.sort_by(|a, b| {
            (&a.tenant, &a.database, &a.name).cmp(&(&b.tenant, &b.database, &b.name))
        });
        links
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
#[path = "idmap_tests.rs"]
mod tests;
