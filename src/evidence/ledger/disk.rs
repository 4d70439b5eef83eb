//! The ledger's tables in the state store (`evidence::state`): names, minute and hour records,
//! and the cursors that must survive a restart, written by a thread of its own.
//!
//! One transaction per closed minute; the writer thread does it, so a slow or hung disk never
//! stalls accounting: past [`QUEUE`] pending writes, a minute is dropped from disk (kept in
//! memory) and counted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Changes;
use crate::evidence::state::StateDb;

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

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Opens the state store in `dir` (see [`StateDb::open`]) and reads the ledger back.
pub fn open(dir: &Path) -> Result<(StateDb, Restored), String> {
    let state = StateDb::open(dir)?;
    let restored = restore(&state)?;
    Ok((state, restored))
}

/// Creates the ledger's tables when missing and reads them back.
pub fn restore(state: &StateDb) -> Result<Restored, String> {
    let file = state.path().display().to_string();
    let txn = state.begin_write().map_err(err)?;
    {
        txn.open_table(NAMES).map_err(err)?;
        txn.open_table(MINUTES).map_err(err)?;
        txn.open_table(HOURS).map_err(err)?;
        txn.open_table(META).map_err(err)?;
    }
    txn.commit()
        .map_err(|e| format!("cannot write {file}: {e}"))?;
    read(state).map_err(|e| format!("cannot read {file}: {e}"))
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
    /// Starts the thread on the open state store.
    pub fn start(db: StateDb) -> std::io::Result<Self> {
        let file = db.path().to_path_buf();
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
