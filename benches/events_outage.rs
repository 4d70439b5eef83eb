//! A long collector outage, measured: events are appended to the event log in the state store
//! (as the recorder does, one transaction per tick) while the OTLP receiver is down, the
//! outbox trying (and failing) to export one batch every tick; then the receiver comes back
//! and the outbox drains. Reported: the process's RSS (now and peak), the log's encoded bytes,
//! events held and dropped, the size of `state.redb`, and the append and drain rates.
//!
//! Two outages: 10 minutes of a sick 8-GPU node (10 events a second: an Xid storm, flapping
//! probes, health transitions), and 1,000,000 events (10 times `events.max_events`, 5 times
//! `events.max_disk_bytes` encoded) to show the bound holding.
//!
//! `cargo bench --bench events_outage` (add `-- --quick` for 200,000 events in the second).

// A bench may stop at a failed step: a panic here is a failed measurement.
#![allow(clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gpulse::config::EventsConfig;
use gpulse::evidence::event_log::{EventLog, Limits};
use gpulse::evidence::events::Event;
use gpulse::evidence::outbox::{self, LogSink, Step};
use gpulse::evidence::state::StateDb;
use gpulse::export::json::EventV1;
use gpulse::export::{ExportFailure, FailureReason};
use gpulse::health::{Policy, State, Transition};
use gpulse::model::{ProbeOutage, ProbeReason, ProbeStatus, XidEvent, XidSource};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss() -> String {
    format!(
        "RSS {} MiB (peak {} MiB)",
        status_kib("VmRSS:") / 1024,
        status_kib("VmHWM:") / 1024
    )
}

/// A receiver that is down.
struct Down;

impl LogSink for Down {
    async fn export(&self, _: &[EventV1]) -> Result<(), ExportFailure> {
        Err(ExportFailure {
            reason: FailureReason::Refused,
            endpoint: "http://collector:4318/v1/logs".to_owned(),
            cause: "connection refused".to_owned(),
        })
    }
}

/// A receiver that is back: counts what it acknowledges.
struct Up(AtomicU64);

impl LogSink for Up {
    fn export(&self, batch: &[EventV1]) -> impl Future<Output = Result<(), ExportFailure>> + Send {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        async { Ok(()) }
    }
}

/// The `n`-th event of a sick 8-GPU node with 4 probes: mostly Xids (with the kernel log's
/// detail), an outage start or end of a probe every 10th, a GPU transition every 25th.
fn event(n: u64, policy: &Policy, probes: &[ProbeStatus]) -> Event {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + n * 100);
    let gpu = (n % 8) as u32;
    if n.is_multiple_of(25) {
        return Event::health(&Transition {
            at,
            gpu: Some(gpu),
            uuid: format!("GPU-{gpu:08x}-1111-2222-3333-444444444444"),
            from: State::Healthy,
            to: State::Degraded,
            reasons: vec!["xid_13".to_owned(), "hw_slowdown".to_owned()],
        });
    }
    if n.is_multiple_of(10) {
        let p = &probes[(n / 10 % 4) as usize];
        let outage = ProbeOutage {
            start: at,
            end: Some(at + Duration::from_secs(12)),
            cause: ProbeReason::Timeout,
        };
        return match Event::outage_ended(p, &outage) {
            Some(ended) if n.is_multiple_of(20) => ended,
            _ => Event::outage_started(p, &outage),
        };
    }
    Event::xid(
        &XidEvent {
            at,
            gpu_index: Some(gpu),
            uuid: format!("GPU-{gpu:08x}-1111-2222-3333-444444444444"),
            pci_bus_id: format!("00000000:{:02x}:00.0", 0x18 + gpu),
            xid: [13, 31, 43, 79][(n % 4) as usize],
            sources: vec![XidSource::NvmlEvent, XidSource::Kmsg],
            detail: format!(
                "pid={}, name=python3, Ch 00000008, intr 00000000",
                4000 + n % 97
            ),
        },
        policy,
    )
}

/// Appends `total` events in ticks of `per_tick`, the outbox failing one export per tick.
fn outage(
    runtime: &tokio::runtime::Runtime,
    log: &EventLog,
    settings: &outbox::Settings,
    total: u64,
    per_tick: u64,
    label: &str,
) {
    let policy = Policy::default();
    let probes: Vec<ProbeStatus> = (0..4)
        .map(|p| ProbeStatus::new(&format!("llm-{p}"), "vllm", Duration::from_secs(10)))
        .collect();
    let started = Instant::now();
    let mut n = 0;
    let mut failed = 0u64;
    while n < total {
        let batch: Vec<Event> = (n..(n + per_tick).min(total))
            .map(|i| event(i, &policy, &probes))
            .collect();
        n += batch.len() as u64;
        log.append(&batch, None).expect("append");
        if runtime.block_on(outbox::step(log, &Down, settings)) == Step::Failed {
            failed += 1;
        }
        if n % (total / 4).max(1) < per_tick {
            let s = log.status();
            println!(
                "  {label}: {n} appended, {} held ({} MiB encoded), {} dropped, {}",
                s.events,
                s.bytes >> 20,
                s.dropped_total,
                rss()
            );
        }
    }
    let took = started.elapsed();
    println!(
        "  {label}: {total} events in {took:.2?} ({:.0} events/s with one failed export per tick: {failed})",
        total as f64 / took.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = EventsConfig::default();
    let settings = outbox::Settings::from_config(&config, Duration::from_secs(1));
    let limits = Limits::from_config(&config, true);
    println!(
        "bounds: events.max_disk_bytes {} MiB, events.max_events {}, export batch {} events / {} KiB; start {}",
        limits.max_bytes >> 20,
        limits.max_events,
        settings.batch_events,
        settings.batch_bytes >> 10,
        rss()
    );
    for (label, total, per_tick) in [
        ("10 minutes at 10 events/s", 6_000u64, 10u64),
        (
            "1,000,000 events",
            if quick { 200_000 } else { 1_000_000 },
            100,
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = StateDb::open(dir.path()).expect("state store");
        let file = db.path().to_path_buf();
        let log = EventLog::open(Some(db), limits, "node-7", true, None).expect("event log");
        println!("{label}, receiver down:");
        outage(&runtime, &log, &settings, total, per_tick, label);
        let s = log.status();
        let size = std::fs::metadata(&file).map_or(0, |m| m.len());
        println!(
            "  held {} events ({} bytes encoded, {:.0} bytes each), {} dropped unexported, pending {}; state.redb {:.1} MiB; {}",
            s.events,
            s.bytes,
            s.bytes as f64 / s.events.max(1) as f64,
            s.dropped_total,
            s.pending(),
            size as f64 / f64::from(1 << 20),
            rss()
        );
        // The receiver is back: the outbox drains, a batch at a time.
        let up = Up(AtomicU64::new(0));
        let started = Instant::now();
        let mut batches = 0;
        while let Step::Sent(_) = runtime.block_on(outbox::step(&log, &up, &settings)) {
            batches += 1;
        }
        let took = started.elapsed();
        println!(
            "  receiver back: {} events in {batches} batches in {took:.2?}, pending {}; {}",
            up.0.load(Ordering::Relaxed),
            log.status().pending(),
            rss()
        );
        drop(log);
        let reopened = Instant::now();
        let db = StateDb::open(dir.path()).expect("state store");
        let log = EventLog::open(Some(db), limits, "node-7", true, None).expect("event log");
        println!(
            "  reopened in {:.2?}: {:?}",
            reopened.elapsed(),
            log.status()
        );
    }
}
