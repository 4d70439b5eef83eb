//! A value loaded from files and reloaded when they change: the TLS certificate and the
//! bearer token.
//!
//! [`Reloadable::reload`] is called on SIGHUP (forced) and on a timer (only when a file's
//! modification time or length changed since the last attempt). A failed reload is logged
//! once per attempt and keeps the current value, so a half-written or broken file never takes
//! the endpoint down; the next change of any file is tried again.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

/// Largest file read as a certificate, key or token: these are a few KiB, and a path that
/// points at something huge is a mistake better reported than read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why loading failed: the config key and file at fault, and what is wrong (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Dotted config key naming the file (`http.tls_cert_file`).
    pub key: &'static str,
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.key,
            self.path.display(),
            self.message
        )
    }
}

impl std::error::Error for LoadError {}

/// One file of a [`Reloadable`], with the config key that names it.
#[derive(Debug, Clone)]
pub struct Source {
    pub key: &'static str,
    pub path: PathBuf,
}

impl Source {
    pub fn new(key: &'static str, path: PathBuf) -> Self {
        Self { key, path }
    }

    /// Reads the whole file (at most 1 MiB).
    pub fn read(&self) -> Result<Vec<u8>, LoadError> {
        let file =
            std::fs::File::open(&self.path).map_err(|e| self.error(format!("cannot read: {e}")))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(self.error(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        Ok(bytes)
    }

    /// An error about this file.
    pub fn error(&self, message: impl Into<String>) -> LoadError {
        LoadError {
            key: self.key,
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

/// What identifies a version of a file without reading it: modification time, length and
/// inode (a rotation by rename changes it even within one timestamp tick). `None` when the
/// file cannot be stat'ed (missing during a rotation). Symlinks are followed, so a Kubernetes
/// secret volume's `..data` swap is seen.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), inode(&meta)))
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// What [`Reloadable::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// No file changed and the reload was not forced.
    Unchanged,
    /// A new value is in use.
    Reloaded,
    /// Loading failed; the previous value is still in use.
    Failed,
}

/// The loader: reads the sources and builds the value.
pub type Loader<T> = fn(&[Source]) -> Result<T, LoadError>;

/// A value built from files, swapped atomically on reload. Readers clone an `Arc`.
pub struct Reloadable<T> {
    /// What the value is, for logs ("TLS certificate", "bearer token").
    what: &'static str,
    sources: Vec<Source>,
    load: Loader<T>,
    current: RwLock<Arc<T>>,
    /// Stamps of the files at the last attempt, successful or not.
    seen: Mutex<Vec<Stamp>>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl<T> fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be a secret: never print it.
        f.debug_struct("Reloadable")
            .field("what", &self.what)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl<T> Reloadable<T> {
    /// Loads the value for the first time; an error here is a startup (config) error.
    pub fn load(
        what: &'static str,
        sources: Vec<Source>,
        load: Loader<T>,
    ) -> Result<Self, LoadError> {
        // Stamp before reading: a change during the read is then seen by the next poll.
        let seen = sources.iter().map(|s| stamp(&s.path)).collect();
        let value = load(&sources)?;
        Ok(Self {
            what,
            sources,
            load,
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The value in use.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reloads when a file changed since the last attempt, or always when `force` (SIGHUP).
    /// Blocking (reads files): call it off the async workers.
    pub fn reload(&self, force: bool) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now: Vec<Stamp> = self.sources.iter().map(|s| stamp(&s.path)).collect();
        if !force && now == *seen {
            return Reload::Unchanged;
        }
        *seen = now;
        match (self.load)(&self.sources) {
            Ok(value) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(what = self.what, files = %self.files(), "Reloaded.");
                Reload::Reloaded
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    what = self.what,
                    error = %error,
                    "Reload failed; still serving the previous one."
                );
                Reload::Failed
            }
        }
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn files(&self) -> String {
        let paths: Vec<String> = self
            .sources
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        paths.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(sources: &[Source]) -> Result<String, LoadError> {
        let bytes = sources[0].read()?;
        let text = String::from_utf8(bytes).map_err(|_| sources[0].error("not UTF-8"))?;
        if text.is_empty() {
            return Err(sources[0].error("empty"));
        }
        Ok(text)
    }

    #[test]
    fn reloads_on_change_and_keeps_the_old_value_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, "one").unwrap();
        let r = Reloadable::load("test", vec![Source::new("k", path.clone())], load_text).unwrap();
        assert_eq!(*r.current(), "one");
        assert_eq!(r.reload(false), Reload::Unchanged);

        std::fs::write(&path, "second").unwrap();
        assert_eq!(r.reload(false), Reload::Reloaded);
        assert_eq!(*r.current(), "second");

        std::fs::write(&path, "").unwrap();
        assert_eq!(r.reload(false), Reload::Failed);
        assert_eq!(*r.current(), "second");
        // Tried once per change, not on every poll.
        assert_eq!(r.reload(false), Reload::Unchanged);
        assert_eq!((r.reloads(), r.failures()), (1, 1));

        std::fs::remove_file(&path).unwrap();
        assert_eq!(r.reload(false), Reload::Failed);
        std::fs::write(&path, "third!").unwrap();
        assert_eq!(r.reload(false), Reload::Reloaded);
        assert_eq!(*r.current(), "third!");
        // Forced (SIGHUP) reloads even when nothing changed.
        assert_eq!(r.reload(true), Reload::Reloaded);
    }

    #[test]
    fn startup_errors_name_key_and_file() {
        let err = Reloadable::load(
            "test",
            vec![Source::new("http.x", PathBuf::from("/nonexistent/x"))],
            load_text,
        )
        .unwrap_err();
        assert_eq!(err.key, "http.x");
        assert_eq!(err.path, PathBuf::from("/nonexistent/x"));
        assert!(err.message.starts_with("cannot read:"), "{}", err.message);
    }
}
