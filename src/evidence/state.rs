//! The state store: `state.redb` in `agent.state_dir`, the one embedded database for what
//! gpulse keeps on disk besides the job journal (the score's ledger, and each later user's
//! own tables), opened once per process and shared.
//!
//! redb commits are atomic and checksummed (copy-on-write pages, two commit slots), so a
//! `kill -9` or a power cut during a write leaves the last committed state. Its first write of
//! a new file is not: a file is therefore built as `state.redb.tmp`, synced and renamed into
//! place. Only one process may hold the file; a second gets an error, not a corruption.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;

/// The file inside `agent.state_dir`.
pub const FILE_NAME: &str = "state.redb";

/// redb's page cache: what gpulse reads back it holds in memory itself, so the cache serves
/// writes and the odd read.
pub const CACHE_BYTES: usize = 4 << 20;

/// The path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The open state store; clones share one database.
#[derive(Clone)]
pub struct StateDb {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish()
    }
}

impl Deref for StateDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl StateDb {
    /// Opens `dir/state.redb`, creating `dir` and the file (atomically) when missing.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = path(dir);
        if !file.exists() {
            let tmp = dir.join(format!("{FILE_NAME}.tmp"));
            // A leftover `.tmp` is a first write cut short: never a database to keep.
            let _ = std::fs::remove_file(&tmp);
            drop(create(&tmp)?);
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
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(file),
        })
    }

    /// The file's path, for logs.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens or creates a database at `file`, with a first (empty) commit that proves the file
/// is writable now rather than at the first real write.
fn create(file: &Path) -> Result<Database, String> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(file)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let txn = db
        .begin_write()
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    txn.commit()
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(db)
}
