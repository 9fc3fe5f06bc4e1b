//! Named durable cursors: `cursors/NAME.cursor` holds
//! `magic "CHAWALCR" | lsn u64 | crc32c u32` (20 bytes), replaced atomically
//! (write a temporary file, fsync it, rename it over, fsync the directory).

use crate::error::{Result, WalError};
use crate::fs::FileSystem;
use crate::segment::read_fully;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CURSOR_MAGIC: &[u8; 8] = b"CHAWALCR";
const CURSOR_LEN: usize = 20;
/// Suffix of cursor files.
pub const CURSOR_SUFFIX: &str = ".cursor";
/// Folder of cursor files inside the log directory.
pub const CURSOR_DIR: &str = "cursors";

/// Checks that a name can be a cursor file name.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(WalError::InvalidCursorName(name.to_string()))
    }
}

fn encode(lsn: u64) -> [u8; CURSOR_LEN] {
    let mut buf = [0u8; CURSOR_LEN];
    buf[..8].copy_from_slice(CURSOR_MAGIC);
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&buf[..16]);
    buf[16..].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(buf: &[u8], path: &Path) -> Result<u64> {
    let corrupt = |reason: &str| WalError::Corruption {
        file: path.to_path_buf(),
        offset: 0,
        reason: reason.to_string(),
    };
    if buf.len() != CURSOR_LEN {
        return Err(corrupt("cursor file has the wrong length"));
    }
    if &buf[..8] != CURSOR_MAGIC {
        return Err(corrupt("not a cursor file: bad magic"));
    }
    let crc = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if crc32c::crc32c(&buf[..16]) != crc {
        return Err(corrupt("cursor CRC32C mismatch"));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&buf[8..16]);
    Ok(u64::from_le_bytes(lsn))
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{CURSOR_SUFFIX}"))
}

/// Durably records that cursor `name` is at `lsn`. On return the new value
/// survives a crash; if it fails, the old value is still in place.
pub fn store(fs: &dyn FileSystem, dir: &Path, name: &str, lsn: u64) -> Result<()> {
    let target = cursor_path(dir, name);
    let tmp = dir.join(format!("{name}{CURSOR_SUFFIX}.tmp"));
    let ctx = |what: &str| format!("{what} cursor file {}", tmp.display());
    let mut file = fs
        .create(&tmp)
        .map_err(|e| WalError::io(ctx("creating"), e))?;
    file.write_at(&encode(lsn), 0)
        .map_err(|e| WalError::io(ctx("writing"), e))?;
    file.sync_data()
        .map_err(|e| WalError::io(ctx("syncing"), e))?;
    drop(file);
    fs.rename(&tmp, &target)
        .map_err(|e| WalError::io(format!("renaming cursor into {}", target.display()), e))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io(format!("syncing directory {}", dir.display()), e))
}

/// Removes a cursor durably.
pub fn remove(fs: &dyn FileSystem, dir: &Path, name: &str) -> Result<()> {
    let path = cursor_path(dir, name);
    fs.remove_file(&path)
        .map_err(|e| WalError::io(format!("removing cursor {}", path.display()), e))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io(format!("syncing directory {}", dir.display()), e))
}

/// Reads every cursor of the directory; leftover temporary files of an
/// interrupted store are ignored (the old value stands).
pub fn load_all(fs: &dyn FileSystem, dir: &Path) -> Result<BTreeMap<String, u64>> {
    let mut cursors = BTreeMap::new();
    let paths = fs
        .list_dir(dir)
        .map_err(|e| WalError::io(format!("listing {}", dir.display()), e))?;
    for path in paths {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(CURSOR_SUFFIX))
        else {
            continue;
        };
        if validate_name(name).is_err() {
            continue;
        }
        let file = fs
            .open(&path)
            .map_err(|e| WalError::io(format!("opening {}", path.display()), e))?;
        let mut buf = [0u8; CURSOR_LEN + 1];
        let n = read_fully(file.as_ref(), &mut buf, 0, &path)?;
        cursors.insert(name.to_string(), decode(&buf[..n], &path)?);
    }
    Ok(cursors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemFs;

    #[test]
    fn stored_cursor_is_read_back_after_a_crash() {
        let fs = MemFs::new();
        let dir = Path::new("/log/cursors");
        fs.create_dir_all(dir).unwrap();
        store(&fs, dir, "primary", 41).unwrap();
        store(&fs, dir, "primary", 42).unwrap();
        store(&fs, dir, "replica-1", 7).unwrap();
        fs.crash(3);
        let all = load_all(&fs, dir).unwrap();
        assert_eq!(all.get("primary"), Some(&42));
        assert_eq!(all.get("replica-1"), Some(&7));
    }

    #[test]
    fn corrupt_cursor_file_is_a_corruption_error() {
        let fs = MemFs::new();
        let dir = Path::new("/log/cursors");
        store(&fs, dir, "a", 5).unwrap();
        let path = dir.join("a.cursor");
        let mut bytes = fs.read(&path).unwrap();
        bytes[9] ^= 0xff;
        fs.write(&path, bytes);
        assert!(matches!(
            load_all(&fs, dir),
            Err(WalError::Corruption { .. })
        ));
    }

    #[test]
    fn names_are_restricted_to_safe_file_names() {
        assert!(validate_name("replica-1.a_b").is_ok());
        for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
