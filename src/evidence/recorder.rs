//! The recorder: when a source it reads changes in the store (at most once per
//! `events.interval`), it compares the latest snapshot with its cursors and appends what is
//! new to the event log, each event once, with its source's own time.
//!
//! The sources are the store's bounded logs, so each tick's work is bounded by them (64
//! health transitions, `health.max_events` Xids, 32 outages per probe, `wrap.max_events` job
//! events):
//!
//! * health transitions: the last one recorded, found again in the list (everything after it
//!   is new); the list starts empty at each start, like the cursor;
//! * Xids: recorded once an occurrence has been seen for `health.xid_dedup_window` (by then
//!   every source that reports it is merged in), or at shutdown; keyed by (time, GPU, Xid,
//!   first source), which a merge does not change;
//! * probe outages: per probe and outage start, whether its start and its end were recorded;
//! * operator clears of health reasons: like health transitions (the store keeps the last 64);
//! * job events: `(run, rank)` of the last one recorded, kept in the event log's own
//!   transaction, because `jobs.jsonl` brings the job's events back after a restart.
//!
//! Cursors move only once the append is committed: a failed write leaves them where they
//! were, so the next tick appends the same events again (nothing lost, nothing twice).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::event_log::{EventLog, JobCursor};
use super::events::Event;
use crate::export::json::AttrV1;
use crate::health::{Policy, Transition};
use crate::model::{JobEvent, XidEvent, XidSource};
use crate::store::{Changes, Snapshot, Store};

/// An Xid occurrence's identity: what a merge of another source's report leaves unchanged.
type XidKey = (SystemTime, Option<u32>, u64, Option<XidSource>);

fn xid_key(e: &XidEvent) -> XidKey {
    (e.at, e.gpu_index, e.xid, e.sources.first().copied())
}

/// Whether an outage's start and end were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutageSeen {
    start: SystemTime,
    ended: bool,
}

/// Where recording stands in each source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursors {
    health: Option<Transition>,
    xids: Vec<XidKey>,
    outages: BTreeMap<String, Vec<OutageSeen>>,
    job: JobCursor,
    /// The sequence number of the last signed report recorded; primed from the first
    /// snapshot, so a report restored from the chain at start is not recorded again.
    report: Option<u64>,
    report_primed: bool,
    /// The last operator clear recorded (its time and target), found again in the store's
    /// list like the health transitions.
    clear: Option<crate::health::Clear>,
}

fn job_rank(e: &JobEvent) -> u8 {
    match e {
        JobEvent::Started(_) => 0,
        JobEvent::Ready(_) => 1,
        JobEvent::Finished(_) => 2,
    }
}

/// Turns snapshots into new events.
#[derive(Debug)]
pub struct Deriver {
    cursors: Cursors,
    policy: Policy,
    xid_wait: Duration,
    /// When each Xid occurrence not yet recorded was first seen (by this clock, so a wall
    /// clock step does not hold it back).
    xid_first_seen: Vec<(XidKey, Instant)>,
}

impl Deriver {
    /// Starts from the job cursor the log kept; `xid_wait` is `health.xid_dedup_window`.
    pub fn new(policy: Policy, xid_wait: Duration, job: JobCursor) -> Self {
        Self {
            cursors: Cursors {
                job,
                ..Cursors::default()
            },
            policy,
            xid_wait,
            xid_first_seen: Vec::new(),
        }
    }

    /// The events in `snap` that are new, oldest first, and the cursors that record them.
    /// `flush` records waiting Xids at once (shutdown). Call [`Deriver::commit`] with the
    /// cursors once the events are appended.
    pub fn derive(&mut self, snap: &Snapshot, now: Instant, flush: bool) -> (Vec<Event>, Cursors) {
        let mut next = self.cursors.clone();
        let mut events = Vec::new();
        if let Some(health) = &snap.health {
            let list = &health.transitions;
            let start = next
                .health
                .as_ref()
                .and_then(|last| list.iter().rposition(|t| t == last))
                .map_or(0, |i| i + 1);
            events.extend(list[start..].iter().map(Event::health));
            if let Some(last) = list.last() {
                next.health = Some(last.clone());
            }
        }
        let clears = &snap.health_clears;
        let start = next
            .clear
            .as_ref()
            .and_then(|last| clears.iter().rposition(|c| c == last))
            .map_or(0, |i| i + 1);
        events.extend(clears[start..].iter().map(Event::health_cleared));
        if let Some(last) = clears.last() {
            next.clear = Some(last.clone());
        }
        self.derive_xids(snap, now, flush, &mut next, &mut events);
        derive_outages(snap, &mut next, &mut events);
        derive_jobs(snap, &mut next, &mut events);
        derive_report(snap, &mut next, &mut events);
        // Sources interleave: number the tick's events in the order they happened.
        events.sort_by_key(|e| e.time);
        (events, next)
    }

    fn derive_xids(
        &mut self,
        snap: &Snapshot,
        now: Instant,
        flush: bool,
        next: &mut Cursors,
        events: &mut Vec<Event>,
    ) {
        let present: Vec<XidKey> = snap.xid.recent.iter().map(xid_key).collect();
        // Keys of occurrences that left the store's log can never come back.
        next.xids.retain(|k| present.contains(k));
        self.xid_first_seen.retain(|(k, _)| present.contains(k));
        for (event, key) in snap.xid.recent.iter().zip(present) {
            if next.xids.contains(&key) {
                continue;
            }
            let first_seen = match self.xid_first_seen.iter().find(|(k, _)| *k == key) {
                Some((_, at)) => *at,
                None => {
                    self.xid_first_seen.push((key, now));
                    now
                }
            };
            if flush || now.saturating_duration_since(first_seen) >= self.xid_wait {
                events.push(Event::xid(event, &self.policy));
                next.xids.push(key);
            }
        }
    }

    /// Makes `cursors` (from [`Deriver::derive`]) the current ones: their events are in the log.
    pub fn commit(&mut self, cursors: Cursors) {
        self.xid_first_seen
            .retain(|(k, _)| !cursors.xids.contains(k));
        self.cursors = cursors;
    }

    /// The job cursor to write with the events of `cursors`, when it moved.
    pub fn job_change(&self, cursors: &Cursors) -> Option<JobCursor> {
        (cursors.job != self.cursors.job).then_some(cursors.job)
    }
}

/// A newly chained signed report becomes a `score_report` event whose body is the report's
/// exact JSON (so a collector can forward it verbatim and it still verifies), at the time the
/// report says it was made.
fn derive_report(snap: &Snapshot, next: &mut Cursors, events: &mut Vec<Event>) {
    let latest = snap.latest_report.as_deref();
    if !next.report_primed {
        next.report_primed = true;
        next.report = latest.map(|r| r.seq);
        return;
    }
    let Some(report) = latest.filter(|r| Some(r.seq) != next.report) else {
        return;
    };
    next.report = Some(report.seq);
    let json = String::from_utf8_lossy(&report.json).into_owned();
    let time = serde_json::from_str::<serde_json::Value>(&json)
        .ok()
        .and_then(|v| v.get("created_at")?.as_str().map(str::to_owned))
        .and_then(|t| humantime::parse_rfc3339(&t).ok())
        .unwrap_or_else(SystemTime::now);
    let attributes = vec![
        (
            "gpulse.report.seq",
            AttrV1::Int(i64::try_from(report.seq).unwrap_or(i64::MAX)),
        ),
        ("gpulse.report.sha256", AttrV1::Str(report.sha256.clone())),
    ];
    match Event::score_report(time, json, attributes) {
        Ok(event) => events.push(event),
        Err(error) => {
            tracing::warn!(seq = report.seq, error = %error, "Cannot record a signed report as an event.")
        }
    }
}

fn derive_outages(snap: &Snapshot, next: &mut Cursors, events: &mut Vec<Event>) {
    next.outages
        .retain(|name, _| snap.probes.iter().any(|p| p.name == *name));
    for probe in snap.probes.iter() {
        let seen = next.outages.entry(probe.name.clone()).or_default();
        seen.retain(|s| probe.outages.iter().any(|o| o.start == s.start));
        for outage in &probe.outages {
            let index = match seen.iter().position(|s| s.start == outage.start) {
                Some(i) => i,
                None => {
                    events.push(Event::outage_started(probe, outage));
                    seen.push(OutageSeen {
                        start: outage.start,
                        ended: false,
                    });
                    seen.len() - 1
                }
            };
            if !seen[index].ended
                && let Some(ended) = Event::outage_ended(probe, outage)
            {
                events.push(ended);
                seen[index].ended = true;
            }
        }
    }
}

fn derive_jobs(snap: &Snapshot, next: &mut Cursors, events: &mut Vec<Event>) {
    let Some(job) = &snap.job else {
        return;
    };
    let newest = job.recent.iter().map(JobEvent::run).max();
    // Run numbers went back (the job state file was removed): start over.
    if let (Some((run, _)), Some(newest)) = (next.job, newest)
        && newest < run
    {
        next.job = None;
    }
    for event in &job.recent {
        let at = (event.run(), job_rank(event));
        if next.job.is_none_or(|cursor| at > cursor) {
            events.push(Event::job(event));
            next.job = Some(at);
        }
    }
}

/// What the recorder needs besides the log.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub policy: Policy,
    pub xid_wait: Duration,
}

/// One tick: derive, append (off the async workers), commit the cursors on success. False
/// when the append failed: the same events are derived again at the next tick.
async fn tick(deriver: &mut Deriver, log: &EventLog, snap: Arc<Snapshot>, flush: bool) -> bool {
    let (events, cursors) = deriver.derive(&snap, Instant::now(), flush);
    let job = deriver.job_change(&cursors);
    if events.is_empty() && job.is_none() {
        deriver.commit(cursors);
        return true;
    }
    let writer = log.clone();
    let appended = tokio::task::spawn_blocking(move || writer.append(&events, job)).await;
    // A failed write is counted and logged by the log.
    if let Ok(Ok(out)) = appended {
        for why in &out.refused {
            tracing::warn!(reason = %why, "An event was refused by the event log.");
        }
        deriver.commit(cursors);
        return true;
    }
    false
}

/// The store's change counters of the sources the recorder reads.
fn sources(c: &Changes) -> [u64; 6] {
    [
        c.health_transitions,
        c.clears,
        c.xids,
        c.probes,
        c.job,
        c.reports,
    ]
}

impl Deriver {
    /// When the earliest Xid occurrence still waiting for its window is due.
    fn next_xid_due(&self) -> Option<Instant> {
        self.xid_first_seen
            .iter()
            .map(|(_, seen)| *seen + self.xid_wait)
            .min()
    }
}

/// Completes at `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs the recorder until `stop`, then records what is left (waiting Xids included).
///
/// It ticks when a source it reads changed in the store ([`Store::changes`]) or a waiting Xid
/// is due, at most once per `interval` (news within `interval` of the last tick waits for
/// it); after a failed append it ticks again `interval` later. An idle agent never wakes it.
pub async fn run(
    log: EventLog,
    store: Arc<Store>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let mut deriver = Deriver::new(settings.policy, settings.xid_wait, log.job_cursor());
    let mut changes = store.changes();
    loop {
        let seen = sources(&changes.borrow_and_update());
        let done = tick(&mut deriver, &log, store.snapshot(), false).await;
        let ticked = Instant::now();
        if done {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                changed = changes.wait_for(|c| sources(c) != seen) => {
                    // The store outlives this task (it holds an Arc): never an error.
                    if changed.is_err() {
                        break;
                    }
                }
                () = sleep_until(deriver.next_xid_due()) => {}
            }
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep_until((ticked + settings.interval).into()) => {}
        }
    }
    tick(&mut deriver, &log, store.snapshot(), true).await;
}

#[cfg(test)]
mod tests;
