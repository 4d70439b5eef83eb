//! The store: a bounded window per source and the latest immutable snapshot.
//!
//! The latest full sample of each source lives in the snapshot; the window keeps compact
//! fixed-size points (`GpuWindowPoint`, `HostWindowPoint`) of the last `window_samples` cycles
//! for trends and the score, so history costs tens of bytes per GPU per cycle.
//!
//! Collectors write through [`Store::publish`] and [`Store::record_run`]; exporters only call
//! [`Store::snapshot`], which hands out an `Arc` of a snapshot that is never mutated. A new
//! snapshot is built (cheaply: it holds `Arc`s) on every write, so readers never wait for a
//! collector and never see a half-updated state.
//!
//! Tasks that act on what changed (health, the event recorder) wait on [`Store::changes`]
//! instead of polling on a timer: one counter per part of the snapshot they read moves when
//! that part does, so an idle agent wakes them only when there is something new.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::ScoreConfig;
use crate::health::{Clear, GpuStatus, MAX_CLEARS, NodeHealth};
use crate::identity::Identity;
use crate::mode::{Mode, ModeInfo};
use crate::model::{
    CollectorStatus, EventLogStatus, Evidence, GpuSample, GpuWindowPoint, HostSample,
    HostWindowPoint, InferenceSample, JobEvent, JobLog, JobTotals, K8S_COLLECTOR, K8sAttribution,
    LedgerStatus, ProbeReason, ProbeSample, ProbeStatus, Sample, ServerMetrics, XidCount, XidEvent,
    XidLog,
};
use crate::score::{ClaimCheck, LeaseScore, Reach, ScoreWindow, WindowScore};

/// Outages kept per probe for /v1/probes.
pub const MAX_PROBE_OUTAGES: usize = 32;

/// Distinct (GPU, Xid) pairs counted; past this, new pairs are dropped (and logged once).
const MAX_XID_COUNTS: usize = 1024;

/// Everything exporters read, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The latest successful GPU sample (possibly stale; see the `gpu` collector status).
    pub gpu: Option<Arc<GpuSample>>,
    /// The latest successful host sample.
    pub host: Option<Arc<HostSample>>,
    /// Status of every registered collector, in registration order.
    pub collectors: Vec<CollectorStatus>,
    /// Xid counts and recent occurrences.
    pub xid: Arc<XidLog>,
    /// The latest health evaluation; `None` until the health task has run once.
    pub health: Option<Arc<NodeHealth>>,
    /// Every configured probe, in configuration order.
    pub probes: Arc<Vec<ProbeStatus>>,
    /// Where the agent runs and what it found at startup.
    pub mode: ModeInfo,
    /// Who runs this node, from the environment (the Akash lease); read once at load.
    pub identity: Arc<Identity>,
    /// The wrapped job (`gpulse wrap`); `None` when gpulse supervises nothing.
    pub job: Option<Arc<JobLog>>,
    /// The provider-quality score and the ledger behind it; `None` until the ledger keeper
    /// has run once (or when `score.enabled` is off).
    pub score: Option<Arc<ScoreState>>,
    /// Where the event log and its OTLP outbox stand; `None` until the event log is open.
    pub events: Option<EventLogStatus>,
    /// The newest chained signed report (`gpulse.report/v1`); `None` before the first.
    pub latest_report: Option<Arc<LatestReport>>,
    /// Which pod and container holds each GPU and runs each GPU process (`[kubernetes]`);
    /// `None` when off, before the first cycle, and after a failed one (never stale).
    pub k8s: Option<Arc<K8sAttribution>>,
    /// Operator clears of sticky health reasons, oldest first, at most `MAX_CLEARS`.
    pub health_clears: Arc<Vec<Clear>>,
}

/// A signed report just appended to the chain, as the reporter published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestReport {
    pub seq: u64,
    /// Hex SHA-256 of `json`.
    pub sha256: String,
    /// The report's exact bytes (canonical JSON), as `/v1/reports/SEQ` serves them.
    pub json: Arc<[u8]>,
}

/// The score as the ledger keeper last computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreState {
    /// Unix seconds of the evaluation.
    pub evaluated_at: u64,
    /// One per window, in [`ScoreWindow::ALL`] order.
    pub windows: Vec<WindowScore>,
    pub claims: Vec<ClaimCheck>,
    pub reach: Reach,
    /// The evidence each window was scored on, in [`ScoreWindow::ALL`] order (what a signed
    /// report summarises).
    pub evidence: Vec<Evidence>,
    pub ledger: LedgerStatus,
    /// The weights and constants the windows were computed with.
    pub config: Arc<ScoreConfig>,
    /// The per-lease view (`[kubernetes] lease_labels`), sorted by lease key.
    pub leases: Vec<LeaseScore>,
}

impl ScoreState {
    /// The score of one window.
    pub fn window(&self, window: ScoreWindow) -> Option<&WindowScore> {
        self.windows.iter().find(|w| w.window == window)
    }
}

impl Snapshot {
    /// The status of the named collector, if registered.
    pub fn collector(&self, name: &str) -> Option<&CollectorStatus> {
        self.collectors.iter().find(|c| c.name == name)
    }

    /// True once every registered collector has finished at least one cycle, successful or not.
    pub fn first_cycle_done(&self) -> bool {
        self.collectors.iter().all(|c| c.runs > 0)
    }

    /// How long the `gpu` collector has missed its deadline on every cycle (NVML hung).
    pub fn gpu_stuck_for(&self, now: SystemTime) -> Option<Duration> {
        self.collector("gpu").and_then(|c| c.stuck_for(now))
    }

    /// Whether the agent serves what the operator asked for, as of `now`: every collector has
    /// finished a cycle, and — where GPUs are expected (mode embedded or host, the `gpu`
    /// collector on) — the GPU collector has read a GPU at least once, or is still within
    /// `grace` of its start. `Err` says why not, for `/readyz`'s body. (A GPU collector that
    /// never succeeded serves no GPU data: "ready" would be a lie; dcgm-exporter PR #744.)
    pub fn readiness(&self, now: SystemTime, grace: Duration) -> Result<(), String> {
        if !self.first_cycle_done() {
            return Err("waiting for the first collector cycle".to_owned());
        }
        let expects_gpus = matches!(self.mode.mode, Mode::Embedded | Mode::Host);
        let Some(gpu) = self.collector("gpu").filter(|_| expects_gpus) else {
            return Ok(());
        };
        if gpu.last_success_at.is_some() {
            return Ok(());
        }
        let since = gpu.first_run_at.unwrap_or(now);
        if now.duration_since(since).unwrap_or_default() < grace {
            return Ok(());
        }
        Err(format!(
            "no GPU data: the GPU collector has not read a GPU in {}s since it started (mode {}; last error: {})",
            now.duration_since(since).unwrap_or_default().as_secs(),
            self.mode.mode.as_str(),
            gpu.last_error.as_deref().unwrap_or("none")
        ))
    }

    /// Where the `gpu` collector stands, as health's input needs it.
    pub fn gpu_status(&self) -> GpuStatus {
        match (self.collector("gpu"), &self.gpu) {
            (_, Some(_)) => GpuStatus::Sampled,
            (Some(c), None) if c.runs == 0 => GpuStatus::Initializing,
            _ => GpuStatus::NoGpu,
        }
    }
}

/// How one collector cycle ended, as the runner reports it.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub duration: Duration,
    pub finished_at: SystemTime,
    /// `Ok(())` when a fresh sample was published; otherwise the failure class and message.
    pub outcome: Result<(), (&'static str, String)>,
}

/// A bounded FIFO: pushing past capacity drops the oldest entry.
#[derive(Debug)]
struct Window<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Window<T> {
    fn new(capacity: NonZeroUsize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity.get().min(1024)),
            capacity: capacity.get(),
        }
    }

    fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }
}

/// The GPU window: the last `capacity` points, kept contiguous so that a reader borrows them
/// as one slice ([`Store::gpu_window`] hands out an `Arc`, not a copy). Up to `capacity`
/// older points stay behind them and are dropped in one move every `capacity` pushes.
#[derive(Debug, Clone)]
pub struct GpuWindow {
    points: Vec<GpuWindowPoint>,
    capacity: usize,
}

impl GpuWindow {
    fn new(capacity: NonZeroUsize) -> Self {
        Self {
            points: Vec::with_capacity(capacity.get().min(1024)),
            capacity: capacity.get(),
        }
    }

    fn push(&mut self, point: GpuWindowPoint) {
        if self.points.len() >= self.capacity.saturating_mul(2) {
            self.points.drain(..self.points.len() - self.capacity);
        }
        self.points.push(point);
    }

    /// The points in the window, oldest first.
    pub fn points(&self) -> &[GpuWindowPoint] {
        let skip = self.points.len().saturating_sub(self.capacity);
        &self.points[skip..]
    }
}

/// Counters of what changed in the store, one per part of the snapshot that a task waits on
/// ([`Store::changes`]). Each only grows; a waiter compares the ones it reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// GPU collector cycles finished (a sample or a failure recorded).
    pub gpu_cycles: u64,
    /// Xid occurrences recorded or merged.
    pub xids: u64,
    /// Operator clears of health reasons.
    pub clears: u64,
    /// Health evaluations that added a transition.
    pub health_transitions: u64,
    /// Probe checks, outages and scrapes recorded.
    pub probes: u64,
    /// Job events recorded (`gpulse wrap`).
    pub job: u64,
    /// Signed reports chained.
    pub reports: u64,
}

#[derive(Debug)]
struct Windows {
    /// Shared with readers; a push while one holds it copies it first (`Arc::make_mut`).
    gpu: Arc<GpuWindow>,
    host: Window<HostWindowPoint>,
    xid: XidState,
    /// Job events kept for /v1/events (`wrap.max_events`).
    job_max_events: usize,
}

/// The Xid history behind `Snapshot.xid`.
#[derive(Debug)]
struct XidState {
    dedup_window: Duration,
    max_events: usize,
    recent: VecDeque<XidEvent>,
    counts: Vec<XidCount>,
    counts_full_logged: bool,
}

/// Whether `a` and `b` are the same occurrence seen by different sources: same GPU, same Xid,
/// within `window` of each other, and `b` comes from a source `a` does not list yet (one
/// source reporting the same Xid twice is two occurrences).
pub fn same_occurrence(a: &XidEvent, b: &XidEvent, window: Duration) -> bool {
    let same_gpu = a.gpu_index == b.gpu_index
        && (a.uuid.is_empty() || b.uuid.is_empty() || a.uuid == b.uuid)
        && (a.gpu_index.is_some()
            || a.uuid == b.uuid && (a.pci_bus_id == b.pci_bus_id || a.pci_bus_id.is_empty()));
    let gap =
        a.at.duration_since(b.at)
            .or_else(|_| b.at.duration_since(a.at))
            .unwrap_or(Duration::ZERO);
    same_gpu && a.xid == b.xid && gap <= window && b.sources.iter().all(|s| !a.sources.contains(s))
}

/// Merges `event` into `recent` (newest last): when an earlier event is the same occurrence,
/// its source list grows and `false` is returned; otherwise the event is appended, the
/// oldest dropped past `max`, and `true` is returned (a new occurrence to count).
pub fn merge_xid(
    recent: &mut VecDeque<XidEvent>,
    event: XidEvent,
    window: Duration,
    max: usize,
) -> bool {
    if let Some(existing) = recent
        .iter_mut()
        .rev()
        .find(|e| same_occurrence(e, &event, window))
    {
        for source in event.sources {
            if !existing.sources.contains(&source) {
                existing.sources.push(source);
            }
        }
        if existing.uuid.is_empty() {
            existing.uuid = event.uuid;
        }
        if existing.pci_bus_id.is_empty() {
            existing.pci_bus_id = event.pci_bus_id;
        }
        if existing.detail.is_empty() {
            existing.detail = event.detail;
        }
        return false;
    }
    if max == 0 {
        return true;
    }
    while recent.len() >= max {
        recent.pop_front();
    }
    recent.push_back(event);
    true
}

/// Shared between collectors (writers) and exporters (readers).
#[derive(Debug)]
pub struct Store {
    latest: RwLock<Arc<Snapshot>>,
    /// Serializes writers; readers never take it.
    windows: Mutex<Windows>,
    /// What changed, for the tasks that wait on it ([`Store::changes`]).
    changes: watch::Sender<Changes>,
}

impl Store {
    /// A store keeping `window` samples per source, with these collectors registered.
    pub fn new(window: NonZeroUsize, collectors: Vec<CollectorStatus>) -> Self {
        Self {
            latest: RwLock::new(Arc::new(Snapshot {
                collectors,
                ..Snapshot::default()
            })),
            windows: Mutex::new(Windows {
                gpu: Arc::new(GpuWindow::new(window)),
                host: Window::new(window),
                xid: XidState {
                    dedup_window: Duration::from_secs(10),
                    max_events: 256,
                    recent: VecDeque::new(),
                    counts: Vec::new(),
                    counts_full_logged: false,
                },
                job_max_events: 256,
            }),
            changes: watch::Sender::new(Changes::default()),
        }
    }

    /// A receiver of the store's change counters: `changed`/`wait_for` complete when a part
    /// of the snapshot moved, so a task re-reads the snapshot only when there is news.
    pub fn changes(&self) -> watch::Receiver<Changes> {
        self.changes.subscribe()
    }

    fn signal(&self, change: impl FnOnce(&mut Changes)) {
        self.changes.send_modify(change);
    }

    /// Sets the Xid de-duplication window and the number of recent occurrences kept
    /// (`health.xid_dedup_window`, `health.max_events`).
    pub fn with_xid_limits(self, dedup_window: Duration, max_events: usize) -> Self {
        {
            let mut windows = self.lock_windows();
            windows.xid.dedup_window = dedup_window;
            windows.xid.max_events = max_events;
        }
        self
    }

    /// Records one Xid occurrence from any source. The same Xid on the same GPU reported by
    /// another source within the de-duplication window is merged into the first report
    /// (counted once, both sources listed).
    pub fn record_xid(&self, event: XidEvent) {
        let mut windows = self.lock_windows();
        let state = &mut windows.xid;
        let key = (event.gpu_index, event.uuid.clone(), event.xid, event.at);
        let new = merge_xid(
            &mut state.recent,
            event,
            state.dedup_window,
            state.max_events,
        );
        if new {
            let (gpu_index, uuid, xid, at) = key;
            let room = state.counts.len() < MAX_XID_COUNTS;
            match state
                .counts
                .iter_mut()
                .find(|c| c.gpu_index == gpu_index && c.uuid == uuid && c.xid == xid)
            {
                Some(count) => {
                    count.count += 1;
                    count.first_seen = count.first_seen.min(at);
                    count.last_seen = count.last_seen.max(at);
                }
                None if room => {
                    state.counts.push(XidCount {
                        gpu_index,
                        uuid,
                        xid,
                        count: 1,
                        first_seen: at,
                        last_seen: at,
                    });
                    state.counts.sort_by(|a, b| {
                        (a.gpu_index, &a.uuid, a.xid).cmp(&(b.gpu_index, &b.uuid, b.xid))
                    });
                }
                None => {
                    if !state.counts_full_logged {
                        state.counts_full_logged = true;
                        tracing::warn!(
                            max = MAX_XID_COUNTS,
                            "Too many distinct (GPU, Xid) pairs; new pairs are not counted."
                        );
                    }
                }
            }
        }
        let log = Arc::new(XidLog {
            counts: state.counts.clone(),
            recent: state.recent.iter().cloned().collect(),
        });
        self.update(|snap| snap.xid = log);
        drop(windows);
        self.signal(|c| c.xids += 1);
    }

    /// Sets the environment identity (read once by `app::Parts::load`).
    pub fn with_identity(self, identity: Identity) -> Self {
        {
            let _writer = self.lock_windows();
            let identity = Arc::new(identity);
            self.update(|snap| snap.identity = identity);
        }
        self
    }

    /// Sets where the agent runs.
    pub fn with_mode(self, mode: ModeInfo) -> Self {
        {
            let _writer = self.lock_windows();
            self.update(|snap| snap.mode = mode);
        }
        self
    }

    /// Registers the wrapped job with its history (restored from the state file), keeping at
    /// most `max_events` events.
    pub fn with_job(self, log: JobLog, max_events: usize) -> Self {
        {
            let mut windows = self.lock_windows();
            windows.job_max_events = max_events;
            let log = Arc::new(log);
            self.update(|snap| snap.job = Some(log));
        }
        self
    }

    /// Records one job event and returns the totals after it (for the state file), or
    /// `None` when no job is registered.
    pub fn record_job(&self, event: JobEvent) -> Option<JobTotals> {
        let windows = self.lock_windows();
        let mut totals = None;
        self.update(|snap| {
            if let Some(job) = &snap.job {
                let mut next = JobLog::clone(job);
                next.apply(event, windows.job_max_events);
                totals = Some(next.totals.clone());
                snap.job = Some(Arc::new(next));
            }
        });
        drop(windows);
        self.signal(|c| c.job += 1);
        totals
    }

    /// Records an operator's clear of sticky health reasons; the next evaluation applies it.
    pub fn clear_health(&self, clear: Clear) {
        let _writer = self.lock_windows();
        self.update(|snap| {
            let mut clears = Vec::clone(&snap.health_clears);
            if clears.len() >= MAX_CLEARS {
                clears.remove(0);
            }
            clears.push(clear);
            snap.health_clears = Arc::new(clears);
        });
        self.signal(|c| c.clears += 1);
    }

    /// The latest snapshot. Cheap: one lock held for an `Arc` clone.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.latest.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer panicked mid-swap; the Arc inside is still a whole snapshot.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Adds a fresh sample to its window and makes it the latest.
    pub fn publish(&self, sample: Sample) {
        let mut windows = self.lock_windows();
        self.update(|snap| match sample {
            Sample::Gpu(gpu) => {
                Arc::make_mut(&mut windows.gpu).push(GpuWindowPoint::from(&gpu));
                snap.gpu = Some(Arc::new(gpu));
            }
            Sample::Host(host) => {
                windows.host.push(HostWindowPoint::from(&host));
                snap.host = Some(Arc::new(host));
            }
            Sample::K8s(k8s) => snap.k8s = Some(Arc::new(k8s)),
        });
    }

    /// Records how a collector cycle ended.
    pub fn record_run(&self, name: &str, report: RunReport) {
        self.record_run_locked(name, report);
        if name == "gpu" {
            self.signal(|c| c.gpu_cycles += 1);
        }
    }

    fn record_run_locked(&self, name: &str, report: RunReport) {
        let _writer = self.lock_windows();
        self.update(|snap| {
            if let Some(status) = snap.collectors.iter_mut().find(|c| c.name == name) {
                status.runs += 1;
                if status.first_run_at.is_none() {
                    status.first_run_at = Some(
                        report
                            .finished_at
                            .checked_sub(report.duration)
                            .unwrap_or(report.finished_at),
                    );
                }
                status.last_duration = report.duration;
                status.last_run_at = Some(report.finished_at);
                match &report.outcome {
                    Ok(()) => {
                        status.last_success = true;
                        status.last_success_at = Some(report.finished_at);
                        status.last_error = None;
                        status.last_error_kind = None;
                        status.failing_since = None;
                    }
                    Err((kind, message)) => {
                        // A new run of failures when the class changes: a hang is measured
                        // from its first missed deadline, not from an earlier `unavailable`.
                        if status.last_error_kind != Some(*kind) || status.failing_since.is_none() {
                            status.failing_since = Some(
                                report
                                    .finished_at
                                    .checked_sub(report.duration)
                                    .unwrap_or(report.finished_at),
                            );
                        }
                        status.failures += 1;
                        // A pod may have gone since the last good cycle: attribution is
                        // absent, never wrong, so it is not served stale.
                        if name == K8S_COLLECTOR {
                            snap.k8s = None;
                        }
                        status.last_success = false;
                        status.last_error = Some(message.clone());
                        status.last_error_kind = Some(kind);
                    }
                }
            }
        });
    }

    /// Registers the configured probes (before any check is recorded).
    pub fn with_probes(self, probes: Vec<ProbeStatus>) -> Self {
        {
            let _writer = self.lock_windows();
            self.update(|snap| snap.probes = Arc::new(probes));
        }
        self
    }

    /// Records one check of the probe at `index` (its position in the configuration).
    pub fn record_probe(&self, index: usize, sample: ProbeSample) {
        self.update_probe(index, |status| status.apply(sample, MAX_PROBE_OUTAGES));
        self.signal(|c| c.probes += 1);
    }

    /// The target of the probe `name` (wrap's child) started at `at`: the probe is
    /// `starting` until its first ready check. The probe's loop reads this at its next check
    /// and from then on re-checks fast. `false` when no probe has that name.
    pub fn probe_target_started(&self, name: &str, at: SystemTime) -> bool {
        let index = self.snapshot().probes.iter().position(|p| p.name == name);
        match index {
            Some(index) => {
                self.update_probe(index, |status| status.target_started(at));
                self.signal(|c| c.probes += 1);
                true
            }
            None => false,
        }
    }

    /// Records one synthetic request of the probe at `index`.
    pub fn record_inference(&self, index: usize, sample: InferenceSample) {
        self.update_probe(index, |status| {
            if let Some(stats) = status.inference.as_mut() {
                stats.apply(sample);
            }
        });
    }

    /// Records one scrape of the server metrics of the probe at `index`.
    pub fn record_server_scrape(
        &self,
        index: usize,
        result: Result<ServerMetrics, (ProbeReason, String)>,
        took: Duration,
        at: SystemTime,
    ) {
        self.update_probe(index, |status| {
            if let Some(scrapes) = status.server.as_mut() {
                scrapes.apply(result, took, at);
            }
        });
    }

    /// Publishes a new snapshot with the probe at `index` changed by `change` (copy on write:
    /// readers keep the probe list they hold).
    fn update_probe(&self, index: usize, change: impl FnOnce(&mut ProbeStatus)) {
        let _writer = self.lock_windows();
        self.update(|snap| {
            let mut probes = Vec::clone(&snap.probes);
            if let Some(status) = probes.get_mut(index) {
                change(status);
            }
            snap.probes = Arc::new(probes);
        });
    }

    /// Replaces the health evaluation.
    pub fn set_health(&self, health: impl Into<Arc<NodeHealth>>) {
        let writer = self.lock_windows();
        let health = health.into();
        let mut transitioned = false;
        self.update(|snap| {
            let before = snap.health.as_ref().and_then(|h| h.transitions.last());
            transitioned = before != health.transitions.last();
            snap.health = Some(health);
        });
        drop(writer);
        if transitioned {
            self.signal(|c| c.health_transitions += 1);
        }
    }

    /// Publishes the score.
    pub fn set_score(&self, score: ScoreState) {
        let _writer = self.lock_windows();
        let score = Arc::new(score);
        self.update(|snap| snap.score = Some(score));
    }

    /// Publishes the newest chained signed report.
    pub fn set_latest_report(&self, report: LatestReport) {
        let writer = self.lock_windows();
        let report = Arc::new(report);
        self.update(|snap| snap.latest_report = Some(report));
        drop(writer);
        self.signal(|c| c.reports += 1);
    }

    /// Publishes where the event log stands.
    pub fn set_events(&self, status: EventLogStatus) {
        let _writer = self.lock_windows();
        self.update(|snap| snap.events = Some(status));
    }

    /// The GPU window (its points oldest first: [`GpuWindow::points`]), shared, not copied:
    /// hold it only while reading, since the next GPU sample copies a window still held.
    pub fn gpu_window(&self) -> Arc<GpuWindow> {
        Arc::clone(&self.lock_windows().gpu)
    }

    /// The host points in the window, oldest first.
    pub fn host_window(&self) -> Vec<HostWindowPoint> {
        self.lock_windows().host.items.iter().copied().collect()
    }

    fn lock_windows(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copy-on-write update of the latest snapshot. Callers hold the windows lock, so
    /// writers are serialized and no update is lost.
    fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut next = Snapshot::clone(&self.snapshot());
        change(&mut next);
        let next = Arc::new(next);
        match self.latest.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

#[cfg(test)]
mod tests;
