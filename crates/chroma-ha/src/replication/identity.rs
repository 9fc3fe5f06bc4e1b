//! The log's identity: a random id given to a log when a gateway first
//! starts on it, kept as the `log_identity` state document
//! (`DATA_DIR/log_identity.json` with the file log; copied by
//! `chroma-ha log migrate`). LSNs mean something only within one log: a
//! backup records the id of the log it was taken through, and a restored
//! backup joins only that log ([`crate::rebuild::join`]).
//!
//! ```text
//! {"id": "6f1c0a52-8c1e-4f0e-9a57-0b1d3f6f0e21"}
//! ```

use super::state_file::StateFileError;
use super::state_store::{Key, StateStore};
use serde::{Deserialize, Serialize};

/// The document's name in the [`StateStore`].
pub(crate) const KEY: Key = "log_identity";

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    id: String,
}

/// The log's id: the stored one, else a new one, stored first.
pub(crate) async fn load_or_create(store: &StateStore) -> Result<String, StateFileError> {
    if let Some(identity) = store.load::<Identity>(KEY).await? {
        return Ok(identity.id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    store.store(KEY, Identity { id: id.clone() }).await?;
    tracing::info!(log_id = %id, "the log was given its identity");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_log_keeps_the_identity_it_was_first_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Files(dir.path().to_path_buf());
        let first = load_or_create(&store).await.unwrap();
        assert_eq!(load_or_create(&store).await.unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        let elsewhere = load_or_create(&StateStore::Files(other.path().to_path_buf()))
            .await
            .unwrap();
        assert_ne!(elsewhere, first, "another log, another identity");
    }
}
