//! The dead-letter list: entries the executor applied but a server refused
//! with a well-formed error (a divergence). Durable in `dead_letters.json`;
//! an operator lists them, retries one, or skips one (admin API).

use super::state_file::{self, StateFileError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;

/// One divergent entry on one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its number in the list (stable, never reused).
    pub id: u64,
    /// The server that refused it.
    pub server: String,
    /// The entry's LSN.
    pub lsn: u64,
    /// HTTP method of the entry.
    pub method: String,
    /// Logical path of the entry.
    pub path: String,
    /// What the server answered: status.
    pub status: u16,
    /// What the server answered: body (lossy UTF-8).
    pub error: String,
    /// When it was added, Unix seconds.
    pub at: f64,
    /// Tries so far (1 = the applier's own).
    pub attempts: u32,
    /// The entry's log record, base64, so it can be retried after the log
    /// segment holding it is gone.
    pub record: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    next_id: u64,
    dead_letters: Vec<DeadLetter>,
}

/// The durable list. Every change is on disk when the call returns.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    state: Mutex<FileFormat>,
}

impl DeadLetters {
    /// Loads the list from `path` (empty if missing).
    pub fn load(path: PathBuf) -> Result<Self, StateFileError> {
        let state = state_file::load(&path)?.unwrap_or_default();
        Ok(DeadLetters {
            path,
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FileFormat> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a dead letter (its `id` is assigned here) and stores the list.
    pub fn add(&self, mut letter: DeadLetter) -> Result<u64, StateFileError> {
        let mut state = self.state();
        state.next_id += 1;
        letter.id = state.next_id;
        state.dead_letters.push(letter);
        state_file::store(&self.path, &*state)?;
        Ok(state.next_id)
    }

    /// Every dead letter, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.state().dead_letters.clone()
    }

    /// One dead letter.
    pub fn get(&self, id: u64) -> Option<DeadLetter> {
        self.state()
            .dead_letters
            .iter()
            .find(|d| d.id == id)
            .cloned()
    }

    /// Removes a dead letter (resolved or skipped) and stores the list.
    pub fn remove(&self, id: u64) -> Result<Option<DeadLetter>, StateFileError> {
        let mut state = self.state();
        let Some(index) = state.dead_letters.iter().position(|d| d.id == id) else {
            return Ok(None);
        };
        let letter = state.dead_letters.remove(index);
        state_file::store(&self.path, &*state)?;
        Ok(Some(letter))
    }

    /// Records another failed try of a dead letter.
    pub fn record_attempt(
        &self,
        id: u64,
        status: u16,
        error: String,
    ) -> Result<(), StateFileError> {
        let mut state = self.state();
        if let Some(letter) = state.dead_letters.iter_mut().find(|d| d.id == id) {
            letter.attempts += 1;
            letter.status = status;
            letter.error = error;
        }
        state_file::store(&self.path, &*state)
    }

    /// How many dead letters a server has.
    pub fn count_for(&self, server: &str) -> usize {
        self.state()
            .dead_letters
            .iter()
            .filter(|d| d.server == server)
            .count()
    }

    /// How many dead letters there are.
    pub fn len(&self) -> usize {
        self.state().dead_letters.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(server: &str) -> DeadLetter {
        DeadLetter {
            id: 0,
            server: server.into(),
            lsn: 9,
            method: "POST".into(),
            path: "/api/v2/x".into(),
            status: 400,
            error: "{}".into(),
            at: 0.0,
            attempts: 1,
            record: String::new(),
        }
    }

    #[test]
    fn dead_letters_survive_a_reload_and_ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead_letters.json");
        let list = DeadLetters::load(path.clone()).unwrap();
        let a = list.add(letter("replica")).unwrap();
        let b = list.add(letter("primary")).unwrap();
        assert_ne!(a, b);
        assert!(list.remove(a).unwrap().is_some());
        let again = DeadLetters::load(path).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.count_for("primary"), 1);
        let c = again.add(letter("replica")).unwrap();
        assert!(c > b);
    }
}
