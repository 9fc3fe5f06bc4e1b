//! # fuzz-corpus — fuzz harnesses as plain tests
//!
//! The fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer) each call one
//! harness, `check_*(data: &[u8])`, that panics when a decoder breaks one of
//! its properties. This crate lets the same harness run under `cargo test` on
//! the stable toolchain: [`exercise`] feeds it every committed input in
//! `fuzz/corpus/<target>/` and then a fixed number of inputs mutated from
//! them with a seeded generator, so a run is deterministic and repeatable.
//!
//! A failing input is written to `target/fuzz-failures/<target>-<n>.bin`
//! and named in the panic message; copy it into the corpus when the bug is
//! fixed, so it stays a regression input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The committed corpus directory of `target`: `fuzz/corpus/<target>` at the
/// workspace root.
pub fn corpus_dir(target: &str) -> PathBuf {
    workspace_root().join("fuzz").join("corpus").join(target)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Every file of the committed corpus of `target`, sorted by name, with its
/// bytes. Panics (this is test code) when the directory is missing or
/// empty: a harness without seeds would test almost nothing.
pub fn load(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("reading corpus file {}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// What [`exercise`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exercised {
    /// Committed corpus inputs run.
    pub corpus: usize,
    /// Mutated inputs run.
    pub mutated: usize,
}

/// Runs `check` on every committed input of `target`, then on `mutations`
/// inputs derived from them by seeded random edits (bit flips, byte
/// changes, inserts, deletes, truncation, splices of two inputs, runs of
/// "interesting" bytes). Panics, naming the saved input, if `check` panics.
pub fn exercise(target: &str, mutations: usize, check: impl Fn(&[u8])) -> Exercised {
    let corpus = load(target);
    for (path, bytes) in &corpus {
        run_one(
            target,
            &format!("corpus file {}", path.display()),
            bytes,
            &check,
        );
    }
    let seeds: Vec<&[u8]> = corpus.iter().map(|(_, b)| b.as_slice()).collect();
    let mut rng = StdRng::seed_from_u64(seed_of(target));
    for n in 0..mutations {
        let input = mutate(&mut rng, &seeds);
        run_one(target, &format!("mutated input #{n}"), &input, &check);
    }
    Exercised {
        corpus: corpus.len(),
        mutated: mutations,
    }
}

/// A fixed seed per target (FNV-1a of its name), so runs repeat exactly.
fn seed_of(target: &str) -> u64 {
    target.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn run_one(target: &str, what: &str, input: &[u8], check: &impl Fn(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_ok() {
        return;
    }
    let saved = save_failure(target, input);
    panic!(
        "fuzz harness {target} failed on {what} ({} bytes), saved to {}",
        input.len(),
        saved.display()
    );
}

fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = workspace_root().join("target").join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let mut n = 0;
    loop {
        let path = dir.join(format!("{target}-{n}.bin"));
        if !path.exists() {
            let _ = std::fs::write(&path, input);
            return path;
        }
        n += 1;
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'/', b'%', b'.',
    b'=', b'\n', b' ', b'u', b'E', b'D',
];

/// One input derived from the seeds by one to four random edits.
pub fn mutate(rng: &mut StdRng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut data = match seeds.len() {
        0 => Vec::new(),
        n => seeds[rng.random_range(0..n)].to_vec(),
    };
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let b = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let count = rng.random_range(1..=8);
                data.splice(i..i, std::iter::repeat_n(b, count));
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 16));
                data.drain(i..j);
            }
            4 if len > 0 => data.truncate(rng.random_range(0..len)),
            5 if !seeds.is_empty() => {
                let other = seeds[rng.random_range(0..seeds.len())];
                let from = rng.random_range(0..=other.len());
                let to = rng.random_range(from..=other.len());
                let at = rng.random_range(0..=len);
                data.splice(at..at, other[from..to].iter().copied());
            }
            6 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(0..len);
                data.swap(i, j);
            }
            _ => {
                let i = rng.random_range(0..=len);
                data.insert(i, rng.random());
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_deterministic_for_a_seed() {
        let seeds: [&[u8]; 2] = [b"hello world", b"{\"a\":1}"];
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| mutate(&mut rng, &seeds))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutation_changes_most_inputs() {
        let seeds: [&[u8]; 1] = [b"some seed input of a fair length"];
        let mut rng = StdRng::seed_from_u64(1);
        let changed = (0..200)
            .filter(|_| mutate(&mut rng, &seeds) != seeds[0])
            .count();
        assert!(
            changed > 180,
            "only {changed} of 200 mutations changed the input"
        );
    }
}
