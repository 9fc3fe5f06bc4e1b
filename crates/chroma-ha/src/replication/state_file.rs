//! Small JSON state files replaced atomically: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory. A reader sees
//! the old or the new content, never a mix, across a crash.

use serde::{de::DeserializeOwned, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// I/O on the file or its directory.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The log's database could not read or write a shared state document
    /// (see `state_store`).
    #[error("the shared state `{key}`: {source}")]
    Shared {
        /// The document.
        key: &'static str,
        /// The error.
        #[source]
        source: wal::WalError,
    },
    /// The file exists but is not valid JSON of the expected shape.
    #[error("{path} is not valid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the file, `Ok(None)` if it does not exist.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateFileError::Invalid {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Io {
            context: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces the file with `value` durably.
pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<(), StateFileError> {
    let io = |context: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateFileError::Io {
            context,
            path: p,
            source,
        }
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    file.write_all(&bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming over", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Runs blocking file work off the runtime's threads; a task that could
/// not run is reported as an I/O error while doing `what` on `path`.
pub async fn on_blocking_thread<T: Send + 'static>(
    what: &'static str,
    path: &Path,
    work: impl FnOnce() -> Result<T, StateFileError> + Send + 'static,
) -> Result<T, StateFileError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(StateFileError::Io {
            context: what,
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_value_loads_back_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(load::<Vec<u32>>(&path).unwrap(), None);
        store(&path, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(load::<Vec<u32>>(&path).unwrap(), Some(vec![1, 2, 3]));
        std::fs::write(&path, b"{oops").unwrap();
        assert!(matches!(
            load::<Vec<u32>>(&path),
            Err(StateFileError::Invalid { .. })
        ));
    }
}
