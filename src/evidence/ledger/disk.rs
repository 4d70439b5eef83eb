//! The ledger on disk: `ledger.redb` in `agent.state_dir`, one redb database (names, minute
//! and hour records, the cursors that must survive a restart), written by a thread of its own.
//!
//! Why redb: a pure-Rust embedded store whose commits are atomic and crash-safe (copy-on-write
//! pages with checksums, two commit slots), so `kill -9` or a power cut during a write leaves
//! the last committed state, never a torn record — no repair code of ours. It is small (no C
//! library), and its page cache is bounded ([`CACHE_BYTES`]). One transaction per closed
//! minute; the writer thread does it, so a slow or hung disk never stalls accounting: past
//! [`QUEUE`] pending writes, a minute is dropped from disk (kept in memory) and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Changes;

/// The file inside `agent.state_dir`.
pub const FILE_NAME: &str = "ledger.redb";

/// redb's page cache; the ledger itself is held in memory, so the cache only serves writes.
pub const CACHE_BYTES: usize = 4 << 20;

/// Writes waiting for the writer thread.
pub const QUEUE: usize = 16;

const NAMES: TableDefinition<u32, &str> = TableDefinition::new("names");
const MINUTES: TableDefinition<u64, &[u8]> = TableDefinition::new("minutes");
const HOURS: TableDefinition<u64, &[u8]> = TableDefinition::new("hours");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What the file held at open.
#[derive(Debug, Default)]
pub struct Restored {
    pub names: Vec<(u32, String)>,
    pub minutes: Vec<(u64, Vec<u8>)>,
    pub hours: Vec<(u64, Vec<u8>)>,
    pub meta: Vec<(String, Vec<u8>)>,
}

/// The path of the ledger file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Opens (creating `dir` and the file when missing) and reads everything back.
///
/// A new file is built as `ledger.redb.tmp`, its tables committed, synced and then renamed
/// into place: redb's first write of a file is not atomic, so a `kill -9` during it would
/// leave a file that is not a database. A leftover `.tmp` is such a torn first write and is
/// removed.
pub fn open(dir: &Path) -> Result<(Database, Restored), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = path(dir);
    if !file.exists() {
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let db = create(&tmp)?;
        drop(db);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &file)
            .map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let db = create(&file)?;
    let restored = read(&db).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok((db, restored))
}

/// Opens or creates the database at `file` with every table present (the write also proves
/// the directory is writable now, not at the first minute).
fn create(file: &Path) -> Result<Database, String> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(file)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let txn = db.begin_write().map_err(err)?;
    {
        txn.open_table(NAMES).map_err(err)?;
        txn.open_table(MINUTES).map_err(err)?;
        txn.open_table(HOURS).map_err(err)?;
        txn.open_table(META).map_err(err)?;
    }
    txn.commit()
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(db)
}

fn read(db: &Database) -> Result<Restored, String> {
    let txn = db.begin_read().map_err(err)?;
    let mut out = Restored::default();
    for row in txn.open_table(NAMES).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        out.names.push((k.value(), v.value().to_owned()));
    }
    for row in txn.open_table(MINUTES).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        out.minutes.push((k.value(), v.value().to_vec()));
    }
    for row in txn.open_table(HOURS).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        out.hours.push((k.value(), v.value().to_vec()));
    }
    for row in txn.open_table(META).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        out.meta.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

/// Applies one push's changes and the meta entries in one transaction.
pub fn apply(db: &Database, changes: &Changes, meta: &[(String, Vec<u8>)]) -> Result<(), String> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut names = txn.open_table(NAMES).map_err(err)?;
        for (id, name) in &changes.names {
            names.insert(*id, name.as_str()).map_err(err)?;
        }
        let mut minutes = txn.open_table(MINUTES).map_err(err)?;
        for (start, bytes) in &changes.minutes {
            minutes.insert(*start, bytes.as_slice()).map_err(err)?;
        }
        for start in &changes.delete_minutes {
            minutes.remove(*start).map_err(err)?;
        }
        let mut hours = txn.open_table(HOURS).map_err(err)?;
        for (start, bytes) in &changes.hours {
            hours.insert(*start, bytes.as_slice()).map_err(err)?;
        }
        for start in &changes.delete_hours {
            hours.remove(*start).map_err(err)?;
        }
        let mut table = txn.open_table(META).map_err(err)?;
        for (key, bytes) in meta {
            table.insert(key.as_str(), bytes.as_slice()).map_err(err)?;
        }
    }
    txn.commit().map_err(err)
}

/// One write for the writer thread.
pub struct Write {
    pub changes: Changes,
    pub meta: Vec<(String, Vec<u8>)>,
}

/// The writer thread: owns the database, applies writes in order, counts failures.
pub struct Writer {
    tx: Option<mpsc::SyncSender<Write>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failures: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the thread on an open database.
    pub fn start(db: Database, file: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Write>(QUEUE);
        let failures = Arc::new(AtomicU64::new(0));
        let counted = failures.clone();
        let thread = std::thread::Builder::new()
            .name("gpulse-ledger".to_owned())
            .spawn(move || {
                let mut failing = false;
                for w in rx {
                    match apply(&db, &w.changes, &w.meta) {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(file = %file.display(), "Ledger writes work again.");
                        }
                        Ok(()) => {}
                        Err(e) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                            if !failing {
                                failing = true;
                                tracing::warn!(file = %file.display(), error = %e,
                                    "Cannot write the score ledger; evidence is kept in memory and writes are retried each minute.");
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            failures,
        })
    }

    /// Queues a write; when the queue is full the write is dropped and counted.
    pub fn write(&self, write: Write) {
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(write).is_ok());
        if !sent {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes that failed or were dropped.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits up to `timeout` for pending writes; `false` when the thread
    /// was still busy (it is left to finish on its own).
    pub fn finish(mut self, timeout: Duration) -> bool {
        self.tx.take();
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().is_ok()
    }
}
