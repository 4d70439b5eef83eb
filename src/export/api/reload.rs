//! A value loaded from files and reloaded when they change: the TLS certificate and the
//! bearer token.
//!
//! [`Reloadable::reload`] is called on SIGHUP (forced) and on a timer (only when a file's
//! modification time or length changed since the last attempt). A failed reload is logged
//! once per attempt and keeps the current value, so a half-written or broken file never takes
//! the endpoint down; the next change of any file is tried again.
//!
//! Reading is bounded, because a file that never answers would otherwise wedge reloading for
//! good (and with it rotation, SIGHUP and the runtime's exit, which waits for blocking
//! tasks): files are opened non-blocking and must be regular files (a FIFO or a device is
//! refused at once), at most 1 MiB is read, and every read runs on the value's own reader
//! thread under `http.reload_timeout`. A read stuck past it (a hung network mount) fails the
//! attempt, and later attempts fail fast until that read returns; nothing ever joins the
//! stuck thread, so shutdown never waits for it.

use std::fmt;
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::files::{DevNull, read_small_file};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

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
        self.read_with_metadata().map(|(bytes, _)| bytes)
    }

    /// Reads the whole file (at most 1 MiB) and returns its metadata (permissions) too. Only a
    /// regular file is read: opening a FIFO would wait for a writer, reading a device might
    /// never end.
    pub fn read_with_metadata(&self) -> Result<(Vec<u8>, Metadata), LoadError> {
        read_small_file(&self.path, DevNull::Refused).map_err(|message| self.error(message))
    }

    /// A warning when this secret file (the private key, the bearer token) can be read by
    /// users other than its owner, who could then use it; `meta` is the file that was read.
    pub fn readable_by_others(&self, meta: &Metadata) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                return Some(format!(
                    "{} ({}) is readable by other users (mode {mode:o}); make it owner-only \
                     (chmod 600, or defaultMode 0400 on a Kubernetes secret volume)",
                    self.key,
                    self.path.display()
                ));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        None
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

fn stamps(sources: &[Source]) -> Vec<Stamp> {
    sources.iter().map(|s| stamp(&s.path)).collect()
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

/// The loader: reads the sources and builds the value, adding to the list what deserves a
/// warning but does not stop the value from being used (an expired certificate, a token file
/// others can read).
pub type Loader<T> = fn(&[Source], &mut Vec<String>) -> Result<T, LoadError>;

/// A value built from files, swapped atomically on reload. Readers clone an `Arc`.
pub struct Reloadable<T> {
    /// What the value is, for logs ("TLS certificate", "bearer token").
    what: &'static str,
    sources: Vec<Source>,
    reader: Reader<T>,
    /// Longest wait for one attempt (stamping and loading the files).
    deadline: Duration,
    current: RwLock<Arc<T>>,
    /// Stamps of the files at the last attempt that finished, successful or not.
    seen: Mutex<Vec<Stamp>>,
    reloads: AtomicU64,
    failures: AtomicU64,
    /// The first load's warnings, kept until logging is set up (it is configured by the same
    /// config that names these files): see [`Reloadable::take_startup_warnings`].
    startup_warnings: Mutex<Vec<String>>,
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

impl<T: Send + 'static> Reloadable<T> {
    /// Loads the value for the first time, waiting at most `deadline`; an error here is a
    /// startup (config) error.
    pub fn load(
        what: &'static str,
        sources: Vec<Source>,
        load: Loader<T>,
        deadline: Duration,
    ) -> Result<Self, LoadError> {
        let reader = Reader::spawn(sources.clone(), load)
            .map_err(|e| first_error(&sources, format!("cannot start a thread to read it: {e}")))?;
        let (seen, (value, warnings)) = match reader.attempt(None, deadline) {
            Ok(Attempt::Loaded(seen, result)) => (seen, result?),
            Ok(Attempt::Unchanged) => {
                return Err(first_error(&sources, "internal error: nothing was read"));
            }
            Err(why) => return Err(first_error(&sources, why.message(&sources, deadline))),
        };
        Ok(Self {
            what,
            sources,
            reader,
            deadline,
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            startup_warnings: Mutex::new(warnings),
        })
    }

    /// The warnings of the first load (empty the second time): the caller logs them once
    /// logging is up. Reloads log theirs at once.
    pub fn take_startup_warnings(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .startup_warnings
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The value in use.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reloads when a file changed since the last attempt, or always when `force` (SIGHUP).
    /// Blocking for at most the deadline given to [`Reloadable::load`]: call it off the async
    /// workers.
    pub fn reload(&self, force: bool) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let compare = (!force).then(|| seen.clone());
        let result = match self.reader.attempt(compare, self.deadline) {
            Ok(Attempt::Unchanged) => return Reload::Unchanged,
            Ok(Attempt::Loaded(now, result)) => {
                *seen = now;
                result
            }
            // The files' stamps stay as they were, so the next poll tries again once the
            // stuck read has returned.
            Err(why) => Err(first_error(
                &self.sources,
                why.message(&self.sources, self.deadline),
            )),
        };
        match result {
            Ok((value, warnings)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(what = self.what, files = %self.files(), "Reloaded.");
                for warning in warnings {
                    tracing::warn!(what = self.what, "{warning}.");
                }
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
}

impl<T> Reloadable<T> {
    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn files(&self) -> String {
        files(&self.sources)
    }
}

fn files(sources: &[Source]) -> String {
    let paths: Vec<String> = sources
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    paths.join(", ")
}

/// An error about the value as a whole (no one file is known to be at fault): named after the
/// first file.
fn first_error(sources: &[Source], message: impl Into<String>) -> LoadError {
    match sources.first() {
        Some(source) => source.error(message),
        None => LoadError {
            key: "http",
            path: PathBuf::new(),
            message: message.into(),
        },
    }
}

/// What one attempt on the reader thread found.
enum Attempt<T> {
    /// The stamps equal the ones compared against: nothing was read.
    Unchanged,
    /// The files' stamps before reading, and what loading them gave (with its warnings).
    Loaded(Vec<Stamp>, Result<(T, Vec<String>), LoadError>),
}

/// Why an attempt gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stuck {
    /// An earlier attempt is still blocked in the file system.
    Busy,
    /// This attempt did not finish within the deadline; it goes on in the background.
    TimedOut,
    /// The reader thread is gone.
    Stopped,
}

impl Stuck {
    fn message(self, sources: &[Source], deadline: Duration) -> String {
        let files = files(sources);
        match self {
            Stuck::Busy => format!(
                "an earlier read of {files} has still not returned (a hung file system?); \
                 not tried again until it does"
            ),
            Stuck::TimedOut => format!(
                "reading {files} took longer than {} (http.reload_timeout; a hung file \
                 system?)",
                humantime::format_duration(deadline)
            ),
            Stuck::Stopped => "internal error: the reader thread is gone".to_owned(),
        }
    }
}

/// A request to the reader thread: the stamps to compare with (`None`: read regardless) and
/// where to answer.
type Request<T> = (Option<Vec<Stamp>>, SyncSender<Attempt<T>>);

/// The thread that stats and reads a value's files, one attempt at a time, so a read that
/// never returns blocks one thread of ours, once, and no caller (compare
/// `collect::paced`, the same idea for the collectors).
struct Reader<T> {
    requests: SyncSender<Request<T>>,
    /// An attempt is in flight (set by the caller, cleared by the thread when it finishes).
    busy: Arc<AtomicBool>,
}

impl<T: Send + 'static> Reader<T> {
    fn spawn(sources: Vec<Source>, load: Loader<T>) -> io::Result<Self> {
        // Capacity 1: `busy` lets at most one request in at a time.
        let (requests, inbox) = mpsc::sync_channel::<Request<T>>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&busy);
        std::thread::Builder::new()
            .name("gpulse-reload".to_owned())
            .spawn(move || {
                // Ends when the `Reloadable` (the sender) is dropped.
                while let Ok((compare, reply)) = inbox.recv() {
                    // Stamp before reading: a change during the read is then seen next time.
                    let now = stamps(&sources);
                    let attempt = match compare {
                        Some(seen) if seen == now => Attempt::Unchanged,
                        _ => {
                            let mut warnings = Vec::new();
                            let result = load(&sources, &mut warnings);
                            Attempt::Loaded(now, result.map(|value| (value, warnings)))
                        }
                    };
                    done.store(false, Ordering::Release);
                    // The caller may have given up at its deadline; then the result is dropped.
                    let _ = reply.send(attempt);
                }
            })?;
        Ok(Self { requests, busy })
    }

    /// One attempt, waiting at most `deadline` for it.
    fn attempt(
        &self,
        compare: Option<Vec<Stamp>>,
        deadline: Duration,
    ) -> Result<Attempt<T>, Stuck> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Stuck::Busy);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        match self.requests.try_send((compare, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Stuck::Busy),
            Err(TrySendError::Disconnected(_)) => {
                self.busy.store(false, Ordering::Release);
                return Err(Stuck::Stopped);
            }
        }
        match answer.recv_timeout(deadline) {
            Ok(attempt) => Ok(attempt),
            Err(RecvTimeoutError::Timeout) => Err(Stuck::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(Stuck::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn load_text(sources: &[Source], _: &mut Vec<String>) -> Result<String, LoadError> {
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
        let r = Reloadable::load(
            "test",
            vec![Source::new("k", path.clone())],
            load_text,
            SECOND,
        )
        .unwrap();
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
            SECOND,
        )
        .unwrap_err();
        assert_eq!(err.key, "http.x");
        assert_eq!(err.path, PathBuf::from("/nonexistent/x"));
        assert!(
            err.message.starts_with("cannot read file:"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_fifo_or_directory_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        let err =
            Reloadable::load("test", vec![Source::new("k", fifo)], load_text, SECOND).unwrap_err();
        assert!(err.message.contains("FIFO"), "{err}");
        assert!(started.elapsed() < SECOND, "{:?}", started.elapsed());
        let err = Source::new("k", dir.path().to_owned()).read().unwrap_err();
        assert!(err.message.contains("directory"), "{err}");
    }

    /// Blocks (like a read on a hung mount) while the file holds "hang".
    fn load_hanging(sources: &[Source], warnings: &mut Vec<String>) -> Result<String, LoadError> {
        let text = load_text(sources, warnings)?;
        if text == "hang" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(text)
    }

    #[test]
    fn a_read_that_hangs_fails_at_the_deadline_and_blocks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, "one").unwrap();
        let deadline = Duration::from_millis(200);
        let r = Reloadable::load(
            "test",
            vec![Source::new("k", path.clone())],
            load_hanging,
            deadline,
        )
        .unwrap();
        std::fs::write(&path, "hang").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(r.reload(true), Reload::Failed);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        // While that read is stuck, attempts fail at once instead of piling up threads.
        let started = std::time::Instant::now();
        assert_eq!(r.reload(true), Reload::Failed);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(*r.current(), "one");
        // Once the stuck read returns, the next change is picked up.
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&path, "two").unwrap();
        assert_eq!(r.reload(false), Reload::Reloaded);
        assert_eq!(*r.current(), "two");
        assert_eq!((r.reloads(), r.failures()), (1, 2));
    }
}
