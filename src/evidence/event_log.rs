//! The event log: encoded `gpulse.event/v1` events by sequence number, in the state store
//! (tables `events` and `events_meta` of `state.redb`), or in memory without one.
//!
//! Every append is one transaction: the events, the next sequence number, the log's size, the
//! job cursor, and the oldest events dropped to stay within `[events] max_disk_bytes` and
//! `max_events`, so a `kill -9` at any moment leaves either the whole append or none of it,
//! and sequence numbers never repeat. The OTLP export's cursor (every event through it
//! acknowledged by the collector) is kept beside them (`outbox`); an event dropped at the
//! bound before it was acknowledged is counted (`dropped_total`).
//!
//! A failed write changes nothing: the caller keeps what it could not append and tries again;
//! the failure is counted and logged once per change of state. Calls are blocking (disk I/O):
//! make them off the async workers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::events::Event;
use super::state::StateDb;
use crate::config::EventsConfig;
use crate::export::api::EventFeed;
use crate::export::api::events::MAX_PAGE_BYTES;
use crate::export::json::{EventPage, raw_event};
use crate::model::EventLogStatus;
use crate::store::Store;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("events_meta");

const NEXT_SEQ: &str = "next_seq";
const BYTES: &str = "bytes";
const ACKED: &str = "acked";
const JOB_RUN: &str = "job_run";
const JOB_RANK: &str = "job_rank";

/// The log's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Encoded bytes held.
    pub max_bytes: u64,
    /// Events held.
    pub max_events: u64,
    /// Largest encoded event.
    pub max_event_bytes: u64,
}

impl Limits {
    /// The bounds of the log in the state store (`disk`) or in memory.
    pub fn from_config(c: &EventsConfig, disk: bool) -> Self {
        Self {
            max_bytes: c.max_disk_bytes,
            max_events: if disk {
                c.max_events
            } else {
                c.max_memory_events
            },
            max_event_bytes: c.event_limit(),
        }
    }
}

/// The job cursor: the last job event recorded, as `(run, rank)` (started 0, ready 1,
/// finished 2). Kept with the events, because the job's events come back from `jobs.jsonl`
/// after a restart and must not be recorded twice.
pub type JobCursor = Option<(u64, u8)>;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Appended {
    /// Sequence numbers given, in order.
    pub seqs: Vec<u64>,
    /// Events refused (larger than `max_event_bytes`, or not encodable), with why.
    pub refused: Vec<String>,
}

/// The log; clones share it.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("status", &self.status())
            .finish()
    }
}

struct Inner {
    disk: Option<StateDb>,
    limits: Limits,
    node: String,
    /// Held across each write, so the figures below always match what was committed.
    state: Mutex<Mirror>,
    /// A copy of the figures, taken after each write: what readers see without waiting for a
    /// write in progress (a slow disk must not stall an async task asking for the status).
    shown: Mutex<(EventLogStatus, JobCursor)>,
    store: Option<Arc<Store>>,
    appended: tokio::sync::Notify,
}

struct Mirror {
    status: EventLogStatus,
    next_seq: u64,
    job: JobCursor,
    /// The events themselves, without a state store.
    memory: VecDeque<(u64, Vec<u8>)>,
    /// A write is failing now (logged once per change).
    failing: bool,
}

impl Mirror {
    fn new(persistent: bool, outbox: bool) -> Self {
        Self {
            status: EventLogStatus {
                persistent,
                outbox,
                ..EventLogStatus::default()
            },
            next_seq: 1,
            job: None,
            memory: VecDeque::new(),
            failing: false,
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl EventLog {
    /// Opens the log in the state store (creating its tables), or in memory with `None`.
    /// `outbox`: the OTLP log export is on, so acknowledgements and drops are tracked.
    pub fn open(
        disk: Option<StateDb>,
        limits: Limits,
        node: &str,
        outbox: bool,
        store: Option<Arc<Store>>,
    ) -> Result<Self, String> {
        let mut mirror = Mirror::new(disk.is_some(), outbox);
        if let Some(db) = &disk {
            restore(db, &mut mirror).map_err(|e| format!("{}: {e}", db.path().display()))?;
        }
        Ok(Self::from_mirror(disk, mirror, limits, node, store))
    }

    /// A log in memory only (no state store): it cannot fail to open.
    pub fn memory(limits: Limits, node: &str, outbox: bool, store: Option<Arc<Store>>) -> Self {
        Self::from_mirror(None, Mirror::new(false, outbox), limits, node, store)
    }

    fn from_mirror(
        disk: Option<StateDb>,
        mirror: Mirror,
        limits: Limits,
        node: &str,
        store: Option<Arc<Store>>,
    ) -> Self {
        let shown = Mutex::new((mirror.status, mirror.job));
        let log = Self {
            inner: Arc::new(Inner {
                disk,
                limits,
                node: node.to_owned(),
                state: Mutex::new(mirror),
                shown,
                store,
                appended: tokio::sync::Notify::new(),
            }),
        };
        log.publish();
        log
    }

    fn lock(&self) -> MutexGuard<'_, Mirror> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shown(&self) -> (EventLogStatus, JobCursor) {
        *self.inner.shown.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the log stands (as of the last write; never waits for one in progress).
    pub fn status(&self) -> EventLogStatus {
        self.shown().0
    }

    /// The job cursor read back at open (or last appended).
    pub fn job_cursor(&self) -> JobCursor {
        self.shown().1
    }

    /// Ends a write: shows its figures, then publishes them in the store.
    fn release(&self, mirror: MutexGuard<'_, Mirror>) {
        let figures = (mirror.status, mirror.job);
        drop(mirror);
        *self.inner.shown.lock().unwrap_or_else(|p| p.into_inner()) = figures;
        self.publish();
    }

    /// The node name events carry.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Completes after the next append (or at once when one happened since the last wait).
    pub async fn appended(&self) {
        self.inner.appended.notified().await;
    }

    fn publish(&self) {
        if let Some(store) = &self.inner.store {
            store.set_events(self.status());
        }
    }

    /// Appends `events` in order (and the job cursor, when `Some`) in one transaction,
    /// dropping the oldest past the bounds. `Err` when nothing could be written: the caller
    /// keeps the events and tries again later.
    pub fn append(&self, events: &[Event], job: Option<JobCursor>) -> Result<Appended, String> {
        let now = SystemTime::now();
        let mut out = Appended::default();
        let mut mirror = self.lock();
        let mut encoded = Vec::with_capacity(events.len());
        let mut seq = mirror.next_seq;
        for event in events {
            match event.encode(seq, now, &self.inner.node) {
                Ok(bytes) if bytes.len() as u64 <= self.inner.limits.max_event_bytes => {
                    encoded.push((seq, bytes));
                    out.seqs.push(seq);
                    seq += 1;
                }
                Ok(bytes) => out.refused.push(format!(
                    "a {} event of {} bytes is larger than events.max_event_bytes ({})",
                    event.kind.as_str(),
                    bytes.len(),
                    self.inner.limits.max_event_bytes
                )),
                Err(e) => out.refused.push(format!(
                    "cannot encode a {} event: {e}",
                    event.kind.as_str()
                )),
            }
        }
        if encoded.is_empty() && job.is_none() {
            return Ok(out);
        }
        let result = match &self.inner.disk {
            Some(db) => append_disk(db, &mut mirror, &self.inner.limits, &encoded, job),
            None => {
                append_memory(&mut mirror, &self.inner.limits, encoded);
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                mirror.next_seq = seq;
                mirror.status.recorded_total += out.seqs.len() as u64;
                if let Some(job) = job {
                    mirror.job = job;
                }
                self.write_ok(&mut mirror);
                self.release(mirror);
                if !out.seqs.is_empty() {
                    self.inner.appended.notify_one();
                }
                Ok(out)
            }
            Err(e) => {
                self.write_failed(&mut mirror, "append", &e);
                self.release(mirror);
                Err(e)
            }
        }
    }

    fn write_ok(&self, mirror: &mut Mirror) {
        if mirror.failing {
            mirror.failing = false;
            tracing::info!("Writing the event log works again.");
        }
    }

    fn write_failed(&self, mirror: &mut Mirror, what: &str, error: &str) {
        mirror.status.write_failures += 1;
        if !mirror.failing {
            mirror.failing = true;
            tracing::warn!(what, error = %error,
                "Cannot write the event log; events wait at their source and the write is retried.");
        }
    }

    /// Records that the collector acknowledged every event through `seq` (never moves back).
    /// A failed write keeps the acknowledgement in memory (so nothing is sent twice by this
    /// process) and is counted; after a restart those events may be sent again.
    pub fn ack(&self, seq: u64, at: SystemTime) {
        let mut mirror = self.lock();
        mirror.status.last_export_success = Some(at);
        if seq > mirror.status.acked_seq {
            mirror.status.acked_seq = seq;
            if let Some(db) = &self.inner.disk {
                match write_ack(db, seq) {
                    Ok(()) => self.write_ok(&mut mirror),
                    Err(e) => self.write_failed(&mut mirror, "acknowledgement", &e),
                }
            }
        }
        self.release(mirror);
    }

    /// At most `max_events` events after `seq`, oldest first, stopping once `max_bytes` are
    /// read (at least one event is returned when there is one).
    pub fn after(
        &self,
        seq: u64,
        max_events: usize,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let take = |rows: &mut dyn Iterator<Item = Result<(u64, Vec<u8>), String>>| {
            let mut out = Vec::new();
            let mut bytes = 0u64;
            for row in rows {
                let (k, v) = row?;
                bytes += v.len() as u64;
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push((k, v));
                if out.len() >= max_events {
                    break;
                }
            }
            Ok(out)
        };
        let start = seq.saturating_add(1);
        match &self.inner.disk {
            Some(db) => {
                let txn = db.begin_read().map_err(err)?;
                let table = txn.open_table(EVENTS).map_err(err)?;
                let mut rows = table.range(start..).map_err(err)?.map(|row| {
                    row.map(|(k, v)| (k.value(), v.value().to_vec()))
                        .map_err(err)
                });
                take(&mut rows)
            }
            None => {
                let mirror = self.lock();
                let mut rows = mirror
                    .memory
                    .iter()
                    .filter(|(k, _)| *k >= start)
                    .map(|(k, v)| Ok((*k, v.clone())));
                take(&mut rows)
            }
        }
    }

    /// The newest `limit` events, oldest first, stopping once `max_bytes` are read (at least
    /// one event).
    fn newest(&self, limit: usize, max_bytes: u64) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let take = |rows: &mut dyn Iterator<Item = Result<(u64, Vec<u8>), String>>| {
            let mut out = Vec::new();
            let mut bytes = 0u64;
            for row in rows.take(limit) {
                let (k, v) = row?;
                bytes += v.len() as u64;
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push((k, v));
            }
            out.reverse();
            Ok(out)
        };
        match &self.inner.disk {
            Some(db) => {
                let txn = db.begin_read().map_err(err)?;
                let table = txn.open_table(EVENTS).map_err(err)?;
                let mut rows = table.iter().map_err(err)?.rev().map(|row| {
                    row.map(|(k, v)| (k.value(), v.value().to_vec()))
                        .map_err(err)
                });
                take(&mut rows)
            }
            None => {
                let mirror = self.lock();
                let mut rows = mirror.memory.iter().rev().map(|(k, v)| Ok((*k, v.clone())));
                take(&mut rows)
            }
        }
    }
}

impl EventFeed for EventLog {
    fn page(&self, since: Option<u64>, limit: usize) -> Result<EventPage, String> {
        let last = self.status().last_seq;
        let rows = match since {
            None => self.newest(limit, MAX_PAGE_BYTES)?,
            Some(since) => self.after(since, limit, MAX_PAGE_BYTES)?,
        };
        let more = since.is_some() && rows.last().is_some_and(|(seq, _)| *seq < last);
        let mut page = EventPage {
            events: Vec::with_capacity(rows.len()),
            more,
        };
        for (seq, bytes) in rows {
            // redb checksums its pages, so a bad record is a bug, not a bad disk: skip it.
            match raw_event(bytes) {
                Ok(event) => page.events.push((seq, event)),
                Err(e) => tracing::debug!(seq, error = %e, "Skipped an unreadable event."),
            }
        }
        Ok(page)
    }
}

/// Reads the log's figures back from the state store, creating its tables when missing.
fn restore(db: &StateDb, mirror: &mut Mirror) -> Result<(), String> {
    let txn = db.begin_write().map_err(err)?;
    txn.open_table(EVENTS).map_err(err)?;
    txn.open_table(META).map_err(err)?;
    txn.commit().map_err(err)?;
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(EVENTS).map_err(err)?;
    let meta = txn.open_table(META).map_err(err)?;
    let get = |key: &str| -> Result<Option<u64>, String> {
        Ok(meta.get(key).map_err(err)?.map(|v| v.value()))
    };
    let first = table.first().map_err(err)?.map(|(k, _)| k.value());
    let last = table.last().map_err(err)?.map(|(k, _)| k.value());
    let events = table.len().map_err(err)?;
    let bytes = match get(BYTES)? {
        Some(bytes) => bytes,
        // Written by every append; recount only if it is missing.
        None => {
            let mut sum = 0u64;
            for row in table.iter().map_err(err)? {
                sum += row.map_err(err)?.1.value().len() as u64;
            }
            sum
        }
    };
    let s = &mut mirror.status;
    s.first_seq = first.unwrap_or(0);
    s.last_seq = last.unwrap_or(0);
    s.events = events;
    s.bytes = if events == 0 { 0 } else { bytes };
    s.acked_seq = get(ACKED)?.unwrap_or(0);
    mirror.next_seq = get(NEXT_SEQ)?.unwrap_or(1).max(last.map_or(1, |l| l + 1));
    mirror.job = match (get(JOB_RUN)?, get(JOB_RANK)?) {
        (Some(run), Some(rank)) if run > 0 => Some((run, u8::try_from(rank).unwrap_or(2))),
        _ => None,
    };
    Ok(())
}

fn append_disk(
    db: &StateDb,
    mirror: &mut Mirror,
    limits: &Limits,
    encoded: &[(u64, Vec<u8>)],
    job: Option<JobCursor>,
) -> Result<(), String> {
    let txn = db.begin_write().map_err(err)?;
    let mut status = mirror.status;
    let next = encoded.last().map_or(mirror.next_seq, |(seq, _)| seq + 1);
    {
        let mut table = txn.open_table(EVENTS).map_err(err)?;
        let mut meta = txn.open_table(META).map_err(err)?;
        let mut bytes = if status.events == 0 { 0 } else { status.bytes };
        for (seq, value) in encoded {
            table.insert(*seq, value.as_slice()).map_err(err)?;
            bytes += value.len() as u64;
        }
        let mut events = table.len().map_err(err)?;
        while events > 1 && (bytes > limits.max_bytes || events > limits.max_events) {
            let Some((k, v)) = table.pop_first().map_err(err)? else {
                break;
            };
            let (seq, len) = (k.value(), v.value().len() as u64);
            drop((k, v));
            bytes = bytes.saturating_sub(len);
            events -= 1;
            if status.outbox && seq > status.acked_seq {
                status.dropped_total += 1;
            }
        }
        status.first_seq = table.first().map_err(err)?.map_or(0, |(k, _)| k.value());
        status.last_seq = table.last().map_err(err)?.map_or(0, |(k, _)| k.value());
        status.events = events;
        status.bytes = bytes;
        meta.insert(NEXT_SEQ, next).map_err(err)?;
        meta.insert(BYTES, bytes).map_err(err)?;
        if let Some(cursor) = job {
            // Run 0 is no run: the cursor was reset.
            let (run, rank) = cursor.unwrap_or((0, 0));
            meta.insert(JOB_RUN, run).map_err(err)?;
            meta.insert(JOB_RANK, u64::from(rank)).map_err(err)?;
        }
    }
    txn.commit().map_err(err)?;
    mirror.status = status;
    Ok(())
}

fn append_memory(mirror: &mut Mirror, limits: &Limits, encoded: Vec<(u64, Vec<u8>)>) {
    let s = &mut mirror.status;
    for (seq, value) in encoded {
        s.bytes += value.len() as u64;
        mirror.memory.push_back((seq, value));
    }
    while mirror.memory.len() > 1
        && (s.bytes > limits.max_bytes || mirror.memory.len() as u64 > limits.max_events)
    {
        let Some((seq, value)) = mirror.memory.pop_front() else {
            break;
        };
        s.bytes = s.bytes.saturating_sub(value.len() as u64);
        if s.outbox && seq > s.acked_seq {
            s.dropped_total += 1;
        }
    }
    s.events = mirror.memory.len() as u64;
    s.first_seq = mirror.memory.front().map_or(0, |(k, _)| *k);
    s.last_seq = mirror.memory.back().map_or(0, |(k, _)| *k);
}

fn write_ack(db: &StateDb, seq: u64) -> Result<(), String> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut meta = txn.open_table(META).map_err(err)?;
        meta.insert(ACKED, seq).map_err(err)?;
    }
    txn.commit().map_err(err)
}

#[cfg(test)]
mod tests;
