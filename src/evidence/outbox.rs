//! The outbox: the event log itself plus its "acknowledged through" cursor. The exporter
//! reads the events after the cursor in order, in bounded batches (`events.export_batch`
//! events, `events.export_batch_bytes` bytes: never more than one batch in memory), exports
//! them, and moves the cursor past a batch only once the collector acknowledged it. A failed
//! export is retried after a wait that doubles from `events.retry_initial` to
//! `events.retry_max`; the events wait in the log meanwhile (on disk, so a restart resumes
//! where the collector last answered), and only the log's bound drops them
//! (`gpulse_events_dropped_total`).
//!
//! Delivery is at least once: a batch the collector received but whose answer was lost (the
//! connection broke after it was read, the deadline passed, gpulse was killed before it
//! wrote the cursor) is sent again. Each record carries `gpulse.event.seq`, so a consumer
//! can drop what it has already seen.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::event_log::EventLog;
use crate::config::EventsConfig;
use crate::export::ExportFailure;
use crate::export::json::EventV1;
use crate::export::otlp::logs::OtlpLogs;

/// Where a batch goes: the collector, or a test's stand-in.
pub trait LogSink: Send + Sync + 'static {
    /// Exports `batch`; `Ok` only when the receiver acknowledged it.
    fn export(&self, batch: &[EventV1]) -> impl Future<Output = Result<(), ExportFailure>> + Send;
}

impl LogSink for OtlpLogs {
    fn export(&self, batch: &[EventV1]) -> impl Future<Output = Result<(), ExportFailure>> + Send {
        OtlpLogs::export(self, batch)
    }
}

/// How the outbox reads and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub batch_events: usize,
    pub batch_bytes: u64,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long shutdown may spend sending what is left.
    pub drain: Duration,
    /// Read the log again after this long without news (a missed wake-up costs no more).
    pub poll: Duration,
}

impl Settings {
    pub fn from_config(c: &EventsConfig, drain: Duration) -> Self {
        Self {
            batch_events: usize::try_from(c.export_batch).unwrap_or(usize::MAX),
            batch_bytes: c.export_batch_bytes,
            retry_initial: c.retry_initial.0,
            retry_max: c.retry_max.0,
            drain,
            poll: Duration::from_secs(5),
        }
    }
}

/// The wait before the next retry: `initial`, doubling up to `max`; reset by a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: None,
        }
    }

    /// The wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next.unwrap_or(self.initial).min(self.max);
        self.next = Some(wait.saturating_mul(2).min(self.max));
        wait
    }

    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A batch was acknowledged, through this sequence number.
    Sent(u64),
    /// Nothing is waiting.
    Empty,
    /// The export failed (counted by the sink) or the log could not be read.
    Failed,
}

/// One attempt: the next batch after the cursor, exported, the cursor moved on success.
pub async fn step<S: LogSink>(log: &EventLog, sink: &S, settings: &Settings) -> Step {
    let acked = log.status().acked_seq;
    let reader = log.clone();
    let (events, bytes) = (settings.batch_events, settings.batch_bytes);
    let rows = match tokio::task::spawn_blocking(move || reader.after(acked, events, bytes)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(error)) => {
            tracing::debug!(error = %error, "Cannot read the event log's outbox.");
            return Step::Failed;
        }
        Err(_) => return Step::Failed,
    };
    let Some(last) = rows.last().map(|(seq, _)| *seq) else {
        return Step::Empty;
    };
    let mut batch = Vec::with_capacity(rows.len());
    for (seq, bytes) in rows {
        match EventV1::decode(&bytes) {
            Ok(event) => batch.push(event),
            // Cannot happen with what this version wrote; never block the outbox on it.
            Err(error) => tracing::warn!(seq, error = %error, "Skipped an unreadable event."),
        }
    }
    if !batch.is_empty() && sink.export(&batch).await.is_err() {
        return Step::Failed;
    }
    drop(batch);
    let writer = log.clone();
    let _ = tokio::task::spawn_blocking(move || writer.ack(last, SystemTime::now())).await;
    Step::Sent(last)
}

/// Exports the log until `stop`, then spends at most `settings.drain` on what is left.
pub async fn run<S: LogSink>(
    log: EventLog,
    sink: S,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(settings.retry_initial, settings.retry_max);
    let mut failing = false;
    loop {
        if *stop.borrow() {
            break;
        }
        match step(&log, &sink, &settings).await {
            Step::Sent(_) => {
                backoff.reset();
                failing = false;
            }
            Step::Empty => {
                failing = false;
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => break,
                    () = log.appended() => {}
                    () = tokio::time::sleep(settings.poll) => {}
                }
            }
            Step::Failed => {
                failing = true;
                let wait = backoff.failed();
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // The recorder appends its last events at shutdown: give it a moment, then send what
    // fits in the time left. A collector that is failing is not waited for again.
    if failing {
        return;
    }
    let deadline = Instant::now() + settings.drain;
    let _ = tokio::time::timeout(settings.drain / 4, log.appended()).await;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, step(&log, &sink, &settings)).await {
            Ok(Step::Sent(_)) => {}
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_max_and_a_success_resets_it() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(5));
        let waits: Vec<Duration> = (0..5).map(|_| b.failed()).collect();
        assert_eq!(waits, [s(1), s(2), s(4), s(5), s(5)]);
        b.reset();
        assert_eq!(b.failed(), s(1));
    }
}
