//! Residency: vector outputs that a GPU stage made stay in device memory, so that the next GPU
//! stage of this process that reads them takes them from there instead of from storage.
//!
//! An entry is keyed by the output folder and the column, and stamped with the size and
//! modification time of the files it stands for: if the files change (another attempt, a
//! cleared task), the entry no longer matches and the stage reads the files. The newest entries
//! are kept up to a byte budget; the oldest go first.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Device bytes kept for resident outputs.
pub const RESIDENT_BYTES: u64 = 8 << 30;

/// What a folder of output files looked like when its entry was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Stamp {
    /// The folder's (or file's) files now, `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).ok()? {
                let entry = entry.ok()?;
                let meta = entry.metadata().ok()?;
                if meta.is_file() {
                    files.push((entry.path(), meta.len(), meta.modified().ok()));
                }
            }
        } else {
            let meta = std::fs::metadata(path).ok()?;
            files.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
        }
        files.sort();
        Some(Stamp(files))
    }
}

/// A matrix (rows × dim, row-major) held somewhere, with what its files looked like.
pub struct Entry<T> {
    pub rows: usize,
    pub dim: usize,
    pub data: Arc<T>,
    key: (PathBuf, String),
    stamp: Stamp,
    bytes: u64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            rows: self.rows,
            dim: self.dim,
            data: self.data.clone(),
            key: self.key.clone(),
            stamp: self.stamp.clone(),
            bytes: self.bytes,
        }
    }
}

/// The kept entries, oldest first, within a byte budget. Generic over what holds the data, so
/// that its bookkeeping is tested without a device.
pub struct Cache<T> {
    entries: Vec<Entry<T>>,
    budget: u64,
}

impl<T> Cache<T> {
    pub const fn new(budget: u64) -> Self {
        Cache {
            entries: Vec::new(),
            budget,
        }
    }

    /// Keeps `data` as the `column` of the files at `path` as they are now.
    pub fn keep(&mut self, path: &Path, column: &str, rows: usize, dim: usize, data: Arc<T>) {
        let Some(stamp) = Stamp::of(path) else {
            return;
        };
        let key = (path.to_path_buf(), column.to_string());
        let bytes = (rows * dim * 4) as u64;
        self.entries.retain(|e| e.key != key);
        if bytes > self.budget {
            return;
        }
        while self.entries.iter().map(|e| e.bytes).sum::<u64>() + bytes > self.budget {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            rows,
            dim,
            data,
            key,
            stamp,
            bytes,
        });
    }

    /// The kept `column` of the files at `path`, if they have not changed since.
    pub fn find(&mut self, path: &Path, column: &str) -> Option<Entry<T>> {
        let key = (path.to_path_buf(), column.to_string());
        let at = self.entries.iter().position(|e| e.key == key)?;
        if Stamp::of(path).as_ref() != Some(&self.entries[at].stamp) {
            self.entries.remove(at);
            return None;
        }
        // Most recently used last.
        let entry = self.entries.remove(at);
        self.entries.push(entry.clone());
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The process's resident device matrices.
pub static DEVICE: Mutex<Cache<cudarc::driver::CudaSlice<f32>>> =
    Mutex::new(Cache::new(RESIDENT_BYTES));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_only_unchanged_files_and_stay_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("product");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("part-0.parquet"), b"first").unwrap();
        let mut cache: Cache<Vec<f32>> = Cache::new(64);
        cache.keep(&out, "vector", 2, 4, Arc::new(vec![1.0; 8]));
        let found = cache.find(&out, "vector").expect("kept");
        assert_eq!((found.rows, found.dim, found.data.len()), (2, 4, 8));
        assert!(cache.find(&out, "score").is_none(), "another column");
        // Another attempt rewrote the files: the entry is dropped.
        std::fs::write(out.join("part-0.parquet"), b"second, longer").unwrap();
        assert!(cache.find(&out, "vector").is_none());
        assert!(cache.is_empty());
        // 32 bytes each: the third pushes out the least recently used.
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for p in [&a, &b, &c] {
            std::fs::create_dir_all(p).unwrap();
            std::fs::write(p.join("part-0.parquet"), b"x").unwrap();
        }
        cache.keep(&a, "vector", 2, 4, Arc::new(vec![0.0; 8]));
        cache.keep(&b, "vector", 2, 4, Arc::new(vec![0.0; 8]));
        assert!(
            cache.find(&a, "vector").is_some(),
            "a is now the most recent"
        );
        cache.keep(&c, "vector", 2, 4, Arc::new(vec![0.0; 8]));
        assert_eq!(cache.len(), 2);
        assert!(cache.find(&b, "vector").is_none(), "b was the oldest");
        assert!(cache.find(&a, "vector").is_some());
        // Larger than the whole budget: not kept.
        cache.keep(&a, "big", 100, 100, Arc::new(Vec::new()));
        assert!(cache.find(&a, "big").is_none());
    }
}
