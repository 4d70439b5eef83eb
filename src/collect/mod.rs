//! Collectors: one source per file, each run on its own interval by [`run_collector`].
//!
//! * `gpu`: NVML through nvml-wrapper (the only module that imports it).
//! * `gpu_xid`: NVML critical-Xid events on their own thread.
//! * `kmsg`: `NVRM: Xid` lines from the kernel log on their own thread.
//! * `host`: CPU, memory, load, disks, network and uptime through sysinfo.
//! * `k8s`: per-pod attribution from the kubelet's pod-resources socket and `/proc/<pid>/cgroup`.
//! * `probe`: inference-server and endpoint probes (HTTP through reqwest, TCP connect), their
//!   synthetic requests, `/metrics` scrapes and TLS settings.
//! * `paced`: the dedicated thread that keeps blocking cycles (NVML, /proc, statfs) off the
//!   runtime, on its own schedule ([`PacedCollector::run`] stores them under a deadline), so
//!   an idle agent's runtime wakes once per cycle.
//!
//! The runner, not each collector, times every cycle, records success and duration in the
//! store, and logs only when a collector's state changes (ok → failing, failing → ok, or a
//! different failure class), so a missing driver is one log line, not one per second.

pub mod gpu;
pub mod gpu_xid;
pub mod host;
pub mod k8s;
pub mod kmsg;
pub mod paced;
pub mod probe;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::model::{Sample, XidEvent};
use crate::store::{RunReport, Store};
use paced::{Finished, Paced};

/// The error and its sources on one line: the top-level message of a wrapped error is often
/// only "transport error" (tonic) or the URL (reqwest); the cause is further down.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Where a collector hands Xid occurrences it infers (normally [`Store::record_xid`]).
pub type XidSink = Arc<dyn Fn(XidEvent) + Send + Sync>;

/// How many Xid occurrences were recorded so far, from any source (normally the store's
/// change counter): the NVML collector reads every NVLink again in the cycle after it moves,
/// since a link going down comes with an Xid (74) before its next scheduled read.
pub type XidCount = Arc<dyn Fn() -> u64 + Send + Sync>;

/// For the Xid threads: true once shutdown was asked for, or the agent that owned the sender
/// is gone.
pub(crate) fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// A source of samples. `collect` must respect its own deadline: the runner does not cancel it.
pub trait Collector: Send + 'static {
    /// Stable name used in metrics (`collector` label) and logs.
    fn name(&self) -> &'static str;
    /// Takes one sample.
    fn collect(&mut self) -> impl Future<Output = Result<Sample, CollectError>> + Send;
}

/// Why a cycle produced no fresh sample. `kind` is a bounded label; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Failure classes of a collector cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The source does not exist here (no NVML, no driver). A normal state, retried.
    Unavailable,
    /// The cycle missed its deadline, or the previous one is still stuck in a blocking call.
    Deadline,
    /// Anything else.
    Failed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Deadline => "deadline",
            Self::Failed => "failed",
        }
    }
}

impl CollectError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

/// Runs `collector` every `interval` until `shutdown` turns true, publishing into `store`.
///
/// Missed ticks are delayed, not bursted: a slow cycle never causes a catch-up storm.
pub async fn run_collector<C: Collector>(
    mut collector: C,
    interval: Duration,
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = collector.name();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_state: Option<Result<(), ErrorKind>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let started = Instant::now();
        let result = collector.collect().await;
        let finished = Finished {
            result,
            duration: started.elapsed(),
            finished_at: SystemTime::now(),
        };
        last_state = Some(store_cycle(name, &store, last_state, finished));
    }
    tracing::debug!(collector = name, "Collector stopped.");
}

/// A collector whose blocking cycles run on a [`Paced`] thread (NVML, host);
/// [`PacedCollector::run`] stores them.
#[derive(Debug)]
pub struct PacedCollector {
    /// The `collector` label.
    pub name: &'static str,
    /// What the deadline messages call the source (`NVML`, `host`).
    pub source: &'static str,
    pub paced: Paced<Result<Sample, CollectError>>,
    /// The thread's schedule.
    pub interval: Duration,
    /// How long a cycle may run past its due time before it is reported stuck.
    pub timeout: Duration,
}

impl PacedCollector {
    /// Stores the cycles the thread finishes until `shutdown` turns true. When none finished
    /// within `interval + timeout` of the previous one, the cycle is stuck (a blocking call
    /// hung): `deadline` is recorded then and every `interval` after that, and the store keeps
    /// serving the last good sample, until the late cycle arrives.
    pub async fn run(self, store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
        let Self {
            name,
            source,
            paced,
            interval,
            timeout,
        } = self;
        let mut last_state: Option<Result<(), ErrorKind>> = None;
        // Missed cycles in a row: the first is "did not finish", the next "still blocked".
        let mut missed = 0u32;
        loop {
            let wait = if missed == 0 {
                interval + timeout
            } else {
                interval
            };
            let finished = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                finished = tokio::time::timeout(wait, paced.next()) => finished,
            };
            let finished = match finished {
                Ok(finished) => {
                    missed = 0;
                    finished
                }
                Err(_) => {
                    missed = missed.saturating_add(1);
                    let message = if missed == 1 {
                        format!(
                            "{source} cycle did not finish within {timeout:?}; serving the last good sample"
                        )
                    } else {
                        format!(
                            "a {source} call from an earlier cycle is still blocked; serving the last good sample"
                        )
                    };
                    Finished {
                        result: Err(CollectError::new(ErrorKind::Deadline, message)),
                        // The stuck cycle's own running time: the store dates the hang from its
                        // start (`failing_since`), not from the previous result.
                        duration: paced.running_for().unwrap_or(wait),
                        finished_at: SystemTime::now(),
                    }
                }
            };
            last_state = Some(store_cycle(name, &store, last_state, finished));
        }
        tracing::debug!(collector = name, "Collector stopped.");
    }
}

/// Publishes a cycle's sample, records the run, and logs a change of state once; returns the
/// state for the next call.
fn store_cycle(
    name: &str,
    store: &Store,
    last_state: Option<Result<(), ErrorKind>>,
    finished: Finished<Result<Sample, CollectError>>,
) -> Result<(), ErrorKind> {
    let Finished {
        result,
        duration,
        finished_at,
    } = finished;
    let state = result.as_ref().map(|_| ()).map_err(|e| e.kind);
    log_transition(name, last_state, &result);
    let outcome = match result {
        Ok(sample) => {
            store.publish(sample);
            Ok(())
        }
        Err(error) => Err((error.kind.as_str(), error.message)),
    };
    store.record_run(
        name,
        RunReport {
            duration,
            finished_at,
            outcome,
        },
    );
    state
}

fn log_transition(
    name: &str,
    previous: Option<Result<(), ErrorKind>>,
    result: &Result<Sample, CollectError>,
) {
    let now = result.as_ref().map(|_| ()).map_err(|e| e.kind);
    if previous == Some(now) {
        return;
    }
    match result {
        Ok(_) if previous.is_some() => tracing::info!(collector = name, "Collector recovered."),
        Ok(_) => tracing::debug!(collector = name, "Collector took its first sample."),
        Err(error) if error.kind == ErrorKind::Unavailable => {
            tracing::warn!(collector = name, error = %error.message, "Collector source unavailable; will retry.")
        }
        Err(error) => {
            tracing::error!(collector = name, kind = error.kind.as_str(), error = %error.message, "Collector failing; serving its last good sample.")
        }
    }
}
