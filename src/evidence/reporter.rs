//! The reporter: signs a report of the last hour every `report.interval` and appends it to
//! the hash chain (`reports` and `report_meta` tables in `state.redb`, else memory), signs
//! on-demand reports, and serves the report endpoints (it is the API's
//! [`ReportService`]).
//!
//! Each chained report's `prev_report_sha256` is the hash of the one before, so a dropped,
//! replaced or reordered report breaks the chain a verifier walks. The chain keeps at most
//! `report.max_reports` (the oldest are dropped; the head lives in a meta entry, so the chain
//! goes on after them). A report that cannot be written is not chained (the head does not
//! move, the failure is counted and logged once per change). A new signing key starts a new
//! chain: its first report has no `prev_report_sha256`, and the seq goes on.
//!
//! The hourly report is signed just after each multiple of the interval (full UTC hours for
//! `1h`), once the score has been evaluated past it: its window is the hour that ended at
//! its `end` (the open minute included).

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::keys::{self, ALG, ReportKey, hex};
use super::report::{self, Signed};
use super::state::StateDb;
use crate::config::Config;
use crate::export::api::report::ReportService;
use crate::export::json::{
    ChainHeadV1, ChainV1, IDENTITY_SCHEMA_V1, IdentityV1, NodeIdentityV1, PublicKeyV1,
    REPORTS_SCHEMA_V1, ReportEntryV1, ReportFieldsV1, ReportKind, ReportParts, ReportV1, ReportsV1,
    gpu_identities, rfc3339,
};
use crate::score::ScoreWindow;
use crate::store::{LatestReport, Store};

const REPORTS: TableDefinition<u64, &[u8]> = TableDefinition::new("reports");
const REPORT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("report_meta");
/// The meta key of the chain's head.
const HEAD: &str = "head";

/// The most bytes of the running binary hashed; a larger one gets no hash.
pub const MAX_BINARY_BYTES: u64 = 1 << 30;

/// The newest chained report, kept in `report_meta` so the chain goes on after the reports
/// themselves were dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    sha256: String,
    key_fingerprint: String,
}

/// The chain as it is held in memory: the index of kept reports (and their bytes when there
/// is no state store), the head, the write failures.
#[derive(Debug, Default)]
struct Chain {
    entries: VecDeque<ReportEntryV1>,
    /// The bytes of each entry, in the same order, only without a state store.
    bytes: VecDeque<Arc<[u8]>>,
    head: Option<Head>,
    write_failures: u64,
    failing: bool,
}

/// The reporter; shared by the hourly task and the API.
pub struct Reporter {
    store: Arc<Store>,
    node: String,
    key: Result<ReportKey, String>,
    binary: OnceLock<Option<String>>,
    db: Option<StateDb>,
    max_reports: usize,
    chain: Mutex<Chain>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("node", &self.node)
            .field("key", &self.key)
            .field("db", &self.db)
            .field("max_reports", &self.max_reports)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What the state store held: the kept reports' index entries, oldest first, the head, and
/// the rows skipped because they did not verify.
struct Restored {
    entries: Vec<ReportEntryV1>,
    head: Option<Head>,
    skipped: usize,
}

/// Reads the chain back from the state store, creating its tables when missing: every kept
/// report's index entry (a row that does not parse is skipped and counted) and the head.
fn restore(db: &StateDb) -> Result<Restored, String> {
    let txn = db.begin_write().map_err(err)?;
    {
        txn.open_table(REPORTS).map_err(err)?;
        txn.open_table(REPORT_META).map_err(err)?;
    }
    txn.commit().map_err(err)?;
    let txn = db.begin_read().map_err(err)?;
    let mut entries = Vec::new();
    let mut skipped = 0;
    for row in txn.open_table(REPORTS).map_err(err)?.iter().map_err(err)? {
        let (seq, bytes) = row.map_err(err)?;
        match index_entry(bytes.value()) {
            Some(e) if e.seq == seq.value() => entries.push(e),
            _ => skipped += 1,
        }
    }
    let head = txn
        .open_table(REPORT_META)
        .map_err(err)?
        .get(HEAD)
        .map_err(err)?
        .and_then(|v| serde_json::from_slice::<Head>(v.value()).ok());
    Ok(Restored {
        entries,
        head,
        skipped,
    })
}

/// The index entry of stored report bytes, read without checking the signature again (it
/// was checked when the report was signed, and redb checksums its pages): a full chain is
/// read back at start in a fraction of the time.
fn index_entry(bytes: &[u8]) -> Option<ReportEntryV1> {
    let fields: ReportFieldsV1 = serde_json::from_slice(bytes).ok()?;
    let public = fields
        .signature
        .as_ref()
        .and_then(|s| keys::unhex(&s.public_key))?;
    Some(ReportEntryV1 {
        seq: fields.seq,
        window: fields.window,
        start: fields.start,
        end: fields.end,
        created_at: fields.created_at,
        sha256: report::sha256_hex(bytes),
        prev_report_sha256: fields.prev_report_sha256,
        key_fingerprint: keys::fingerprint(&public),
        bytes: bytes.len() as u64,
    })
}

fn entry(v: &report::Verified, bytes: usize) -> ReportEntryV1 {
    ReportEntryV1 {
        seq: v.fields.seq,
        window: v.fields.window.clone(),
        start: v.fields.start.clone(),
        end: v.fields.end.clone(),
        created_at: v.fields.created_at.clone(),
        sha256: v.sha256.clone(),
        prev_report_sha256: v.fields.prev_report_sha256.clone(),
        key_fingerprint: v.key_fingerprint(),
        bytes: bytes as u64,
    }
}

/// Appends one report in one transaction: the report, the new head, and the dropped seqs.
fn write(db: &StateDb, signed: &Signed, head: &Head, drop: &[u64]) -> Result<(), String> {
    let meta = serde_json::to_vec(head).map_err(err)?;
    let txn = db.begin_write().map_err(err)?;
    {
        let mut reports = txn.open_table(REPORTS).map_err(err)?;
        reports
            .insert(signed.fields.seq, signed.bytes.as_slice())
            .map_err(err)?;
        for seq in drop {
            reports.remove(*seq).map_err(err)?;
        }
        let mut table = txn.open_table(REPORT_META).map_err(err)?;
        table.insert(HEAD, meta.as_slice()).map_err(err)?;
    }
    txn.commit().map_err(err)
}

fn read_one(db: &StateDb, seq: u64) -> Result<Option<Vec<u8>>, String> {
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(REPORTS).map_err(err)?;
    Ok(table.get(seq).map_err(err)?.map(|v| v.value().to_vec()))
}

/// SHA-256 (hex) of the file at `path`, read in chunks up to `max` bytes.
pub fn file_sha256(path: &Path, max: u64) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = file.take(max + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Err(format!("{} is larger than {max} bytes", path.display()));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Reporter {
    /// Loads the key (see `keys::load_or_create`) and reads the chain back from `db`, logging
    /// what it found. Blocking: file I/O; call it off the async workers.
    pub fn open(config: &Config, store: Arc<Store>, db: Option<StateDb>, now: SystemTime) -> Self {
        let dir =
            (!config.agent.state_dir.is_empty()).then(|| PathBuf::from(&config.agent.state_dir));
        let key = match keys::load_or_create(dir.as_deref(), now) {
            Ok(loaded) => {
                if let Some(warning) = &loaded.warning {
                    tracing::warn!("{warning}.");
                }
                tracing::info!(fingerprint = %loaded.key.fingerprint(),
                    file = %loaded.key.path().map_or_else(|| "none (this process only)".to_owned(), |p| p.display().to_string()),
                    "Report signing key.");
                Ok(loaded.key)
            }
            Err(error) => {
                tracing::error!(error = %error,
                    "Cannot use the report signing key: no report is signed (/v1/report answers 503) until it is fixed.");
                Err(error)
            }
        };
        let mut chain = Chain::default();
        let db = match db.map(|db| (restore(&db), db)) {
            None => None,
            Some((
                Ok(Restored {
                    entries,
                    head,
                    skipped,
                }),
                db,
            )) => {
                if skipped > 0 {
                    tracing::warn!(skipped, "Kept reports that do not parse were skipped.");
                }
                chain.head = head.or_else(|| {
                    entries.last().map(|e| Head {
                        seq: e.seq,
                        sha256: e.sha256.clone(),
                        key_fingerprint: e.key_fingerprint.clone(),
                    })
                });
                chain.entries = entries.into();
                tracing::info!(reports = chain.entries.len(), head = ?chain.head.as_ref().map(|h| h.seq),
                    "Report chain opened.");
                Some(db)
            }
            Some((Err(error), _)) => {
                tracing::warn!(error = %error,
                    "Cannot read the report chain; reports are chained in memory and start over at each restart.");
                None
            }
        };
        if let (Ok(key), Some(head)) = (&key, &chain.head)
            && head.key_fingerprint != key.fingerprint()
        {
            tracing::info!(previous = %head.key_fingerprint, key = %key.fingerprint(),
                "The signing key changed: the next report starts a new chain.");
        }
        let reporter = Self {
            store,
            node: config.node_name(),
            key,
            binary: OnceLock::new(),
            db,
            max_reports: config.report.max_reports,
            chain: Mutex::new(chain),
        };
        // A lowered `max_reports` applies at once.
        let drop = reporter.prune(&mut reporter.lock());
        if let (Some(db), false) = (&reporter.db, drop.is_empty())
            && let Err(error) = drop_rows(db, &drop)
        {
            tracing::warn!(error = %error, "Cannot drop old reports from the chain's table.");
        }
        reporter
    }

    fn lock(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the oldest entries past `max_reports`; returns their seqs.
    fn prune(&self, chain: &mut Chain) -> Vec<u64> {
        let mut dropped = Vec::new();
        while chain.entries.len() > self.max_reports {
            if let Some(e) = chain.entries.pop_front() {
                dropped.push(e.seq);
            }
            chain.bytes.pop_front();
        }
        dropped
    }

    /// Sets the running binary's hash (`None`: it could not be read); the first call wins.
    pub fn set_binary_sha256(&self, sha256: Option<String>) {
        let _ = self.binary.set(sha256);
    }

    /// Whether reports can be signed.
    pub fn can_sign(&self) -> bool {
        self.key.is_ok()
    }

    /// The head's hash when it was signed by the current key (a new key starts a new chain).
    fn prev(&self, chain: &Chain, key: &ReportKey) -> Option<String> {
        chain
            .head
            .as_ref()
            .filter(|h| h.key_fingerprint == key.fingerprint())
            .map(|h| h.sha256.clone())
    }

    /// Builds and signs a report of `window` from the store's latest score.
    fn sign(
        &self,
        kind: ReportKind,
        seq: u64,
        window: ScoreWindow,
        nonce: Option<&str>,
        prev: Option<&str>,
        now: SystemTime,
    ) -> Result<Signed, String> {
        let key = self
            .key
            .as_ref()
            .map_err(|e| format!("reports cannot be signed: {e}"))?;
        let binary = self
            .binary
            .get()
            .ok_or("starting: the binary's SHA-256 is being computed")?;
        let snap = self.store.snapshot();
        let created_at = rfc3339(now);
        let parts = ReportParts {
            kind,
            seq,
            window,
            created_at: &created_at,
            node: &self.node,
            binary_sha256: binary.as_deref(),
            nonce,
            prev_report_sha256: prev,
        };
        let dto = ReportV1::build(&snap, &parts)
            .ok_or("not ready: the score is computed after the first accounting tick")?;
        report::sign(dto, key)
    }

    /// Signs the next chained report (`window=1h`) and appends it; one caller at a time
    /// (the hourly task). Blocking: writes the state store. Returns its seq.
    pub fn append(&self, now: SystemTime) -> Result<u64, String> {
        let key = self.key.as_ref().map_err(Clone::clone)?;
        let (seq, prev) = {
            let chain = self.lock();
            (
                chain.head.as_ref().map_or(1, |h| h.seq + 1),
                self.prev(&chain, key),
            )
        };
        let signed = self.sign(
            ReportKind::Hourly,
            seq,
            ScoreWindow::H1,
            None,
            prev.as_deref(),
            now,
        )?;
        let head = Head {
            seq,
            sha256: signed.sha256.clone(),
            key_fingerprint: key.fingerprint(),
        };
        let verified = report::Verified {
            fields: signed.fields.clone(),
            sha256: signed.sha256.clone(),
            public_key: key.public(),
        };
        let json: Arc<[u8]> = Arc::from(signed.bytes.as_slice());
        // The seqs the new report pushes out; only this task appends, so the chain does not
        // move between here and the commit below.
        let drop: Vec<u64> = {
            let chain = self.lock();
            let over = (chain.entries.len() + 1).saturating_sub(self.max_reports);
            chain.entries.iter().take(over).map(|e| e.seq).collect()
        };
        // The disk write happens outside the lock: the API reads the chain meanwhile.
        if let Some(db) = &self.db
            && let Err(error) = write(db, &signed, &head, &drop)
        {
            // Not chained: the head stays, so the next report links to the last kept one.
            let mut chain = self.lock();
            chain.write_failures += 1;
            if !chain.failing {
                chain.failing = true;
                tracing::warn!(error = %error, seq,
                    "Cannot write the signed report; it is not chained, and the next one is tried at the next interval.");
            }
            return Err(error);
        }
        {
            let mut chain = self.lock();
            chain
                .entries
                .push_back(entry(&verified, signed.bytes.len()));
            if self.db.is_none() {
                chain.bytes.push_back(Arc::clone(&json));
            }
            self.prune(&mut chain);
            chain.head = Some(head);
            if chain.failing {
                chain.failing = false;
                tracing::info!(seq, "Signed reports are written again.");
            }
        }
        self.store.set_latest_report(LatestReport {
            seq,
            sha256: signed.sha256.clone(),
            json,
        });
        tracing::debug!(seq, sha256 = %signed.sha256, bytes = signed.bytes.len(), "Signed report chained.");
        Ok(seq)
    }
}

fn drop_rows(db: &StateDb, seqs: &[u64]) -> Result<(), String> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut reports = txn.open_table(REPORTS).map_err(err)?;
        for seq in seqs {
            reports.remove(*seq).map_err(err)?;
        }
    }
    txn.commit().map_err(err)
}

impl ReportService for Reporter {
    fn identity(&self) -> NodeIdentityV1 {
        let snap = self.store.snapshot();
        let chain = self.lock();
        NodeIdentityV1 {
            schema: IDENTITY_SCHEMA_V1,
            node: self.node.clone(),
            mode: snap.mode.mode.as_str(),
            agent_version: env!("CARGO_PKG_VERSION"),
            binary_sha256: self.binary.get().cloned().flatten(),
            public_key: self.key.as_ref().ok().map(|k| PublicKeyV1 {
                alg: ALG,
                hex: k.public_hex(),
                base64: k.public_base64(),
                fingerprint: k.fingerprint(),
                created_at: k.created_at().to_owned(),
                persistent: k.path().is_some(),
            }),
            signing_error: self.key.as_ref().err().cloned(),
            gpus: gpu_identities(snap.gpu.as_deref()),
            akash: IdentityV1::from(snap.identity.as_ref()).akash,
            chain: ChainV1 {
                persistent: self.db.is_some(),
                reports: chain.entries.len() as u64,
                head: chain.head.as_ref().map(|h| ChainHeadV1 {
                    seq: h.seq,
                    sha256: h.sha256.clone(),
                }),
            },
        }
    }

    fn on_demand(&self, window: ScoreWindow, nonce: Option<&str>) -> Result<Vec<u8>, String> {
        let key = self
            .key
            .as_ref()
            .map_err(|e| format!("reports cannot be signed: {e}"))?;
        let prev = self.prev(&self.lock(), key);
        let signed = self.sign(
            ReportKind::OnDemand,
            0,
            window,
            nonce,
            prev.as_deref(),
            SystemTime::now(),
        )?;
        Ok(signed.bytes)
    }

    fn list(&self, since: u64, limit: usize) -> ReportsV1 {
        let chain = self.lock();
        let mut after = chain.entries.iter().filter(|e| e.seq > since);
        let reports: Vec<ReportEntryV1> = after.by_ref().take(limit).cloned().collect();
        let next_since = after.next().and(reports.last().map(|e| e.seq));
        ReportsV1 {
            schema: REPORTS_SCHEMA_V1,
            node: self.node.clone(),
            persistent: self.db.is_some(),
            max_reports: self.max_reports,
            head: chain.head.as_ref().map(|h| ChainHeadV1 {
                seq: h.seq,
                sha256: h.sha256.clone(),
            }),
            write_failures: chain.write_failures,
            reports,
            next_since,
        }
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, String> {
        {
            let chain = self.lock();
            let Some(at) = chain.entries.iter().position(|e| e.seq == seq) else {
                return Ok(None);
            };
            if self.db.is_none() {
                return Ok(chain.bytes.get(at).map(|b| b.to_vec()));
            }
        }
        match &self.db {
            Some(db) => read_one(db, seq),
            None => Ok(None),
        }
    }
}

/// The wait until the next multiple of `interval` after `now` (Unix time), and that
/// multiple in Unix seconds.
pub fn next_boundary(now: SystemTime, interval: Duration) -> (Duration, u64) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let step = interval.as_millis().max(1);
    let at = (since.as_millis() / step + 1) * step;
    let wait = u64::try_from(at - since.as_millis()).unwrap_or(u64::MAX);
    let at_secs = u64::try_from(at.div_ceil(1000)).unwrap_or(u64::MAX);
    (Duration::from_millis(wait), at_secs)
}

/// Hashes the binary, then signs and chains a report after every multiple of `interval`
/// until `stop`, each once the score has been evaluated past that multiple (waiting at
/// most two `tick`s and 5 s for it).
pub async fn run(
    reporter: Arc<Reporter>,
    interval: Duration,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let hashed =
        tokio::task::spawn_blocking(|| file_sha256(Path::new("/proc/self/exe"), MAX_BINARY_BYTES))
            .await;
    let binary = match hashed {
        Ok(Ok(sha256)) => Some(sha256),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "Cannot hash the running binary; reports carry binary_sha256 null.");
            None
        }
        Err(_) => None,
    };
    reporter.set_binary_sha256(binary);
    if !reporter.can_sign() {
        return;
    }
    loop {
        let (wait, boundary) = next_boundary(SystemTime::now(), interval);
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let deadline = Instant::now() + tick * 2 + Duration::from_secs(5);
        loop {
            let fresh = reporter
                .store
                .snapshot()
                .score
                .as_ref()
                .is_some_and(|s| s.evaluated_at >= boundary);
            if fresh || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(tick.min(Duration::from_secs(1))) => {}
            }
        }
        let signer = Arc::clone(&reporter);
        let now = SystemTime::now();
        match tokio::task::spawn_blocking(move || signer.append(now)).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::debug!(error = %error, boundary = unix(now), "No report this interval.");
            }
        }
    }
}

#[cfg(test)]
mod tests;
