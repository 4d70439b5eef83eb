//! Fills the score's evidence ledger with 7 days of minute buckets for 8 GPUs and 4 probes
//! (each probe with server metrics), then reports what it costs: bytes of records, the
//! process's RSS before and after, the size of `state.redb` written as the agent writes it
//! (one commit per minute), the time to reopen it, and the time of one pass that sums the four
//! score windows (the keeper's once-a-minute work).
//!
//! `cargo bench --bench ledger_fill` (add `-- --quick` for a day instead of a week).

// A bench may stop at a failed step: a panic here is a failed measurement.
#![allow(clippy::expect_used)]

use std::time::Instant;

use gpulse::evidence::ledger::{Ledger, disk};
use gpulse::model::{Bucket, LEDGER_BINS, MINUTE_SECONDS, ServerTally, ThrottleReason};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A busy minute: every probe checked 4 times with 2 synthetic requests and server traffic,
/// every GPU sampled, busy, sometimes throttled; values vary so records are not all alike.
fn minute(start: u64) -> Bucket {
    let mut b = Bucket::new(start, MINUTE_SECONDS);
    b.observed_seconds = 60;
    let m = start / 60;
    for p in 0..4 {
        let t = b.probe(&format!("probe-{p}"));
        t.checks[0] = 4;
        t.requests_ok = 2;
        t.requests_within_slo = 2 - u64::from(m.is_multiple_of(50));
        t.output_tokens = 64 + m % 7;
        t.ttft[4 + (m % 2) as usize] = 2;
        t.e2e[6 + (m % 3) as usize] = 2;
        let mut ttft = [0; LEDGER_BINS];
        (ttft[4], ttft[5], ttft[6]) = (700 + m % 13, 450 + m % 29, 50 + m % 5);
        t.server = Some(ServerTally {
            requests_ok: Some(1200 + m % 97),
            requests_failed: Some(m % 3),
            output_tokens: Some(150_000 + m % 1000),
            ttft: Some(ttft),
            e2e: Some(ttft),
            ttft_within_slo: Some(1190.5),
            e2e_within_slo: Some(1180.25),
            counter_resets: 0,
        });
    }
    for g in 0..8u64 {
        let t = b.gpu(&format!("GPU-{g:08x}-1111-2222-3333-444444444444"));
        t.sampled_seconds = 60;
        t.healthy_seconds = 60;
        t.busy_seconds = 40 + (m + g) % 20;
        t.throttled_busy_seconds = (m + g) % 4;
        t.throttle_reasons = vec![
            (ThrottleReason::SwPowerCap, (m + g) % 11),
            (ThrottleReason::HwSlowdown, (m + g) % 4),
        ];
    }
    b
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let days = if quick { 1 } else { 7 };
    let minutes = days * 1440;
    let t0 = 1_699_999_980u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _) = disk::open(dir.path()).expect("open ledger file");
    let rss_before = rss_kib();
    let mut ledger = Ledger::new(7 * 86_400, 90 * 86_400);
    let started = Instant::now();
    for i in 0..minutes {
        let changes = ledger.push_minute(&minute(t0 + i * 60));
        disk::apply(&db, &changes, &[]).expect("write");
    }
    let fill = started.elapsed();
    let rss_after = rss_kib();
    let status = ledger.status(true, 0);
    drop(db);
    let file = std::fs::metadata(gpulse::evidence::state::path(dir.path())).map_or(0, |m| m.len());
    let started = Instant::now();
    let (db, restored) = disk::open(dir.path()).expect("reopen");
    let back = Ledger::restored(
        7 * 86_400,
        90 * 86_400,
        restored.names,
        restored.minutes,
        restored.hours,
    );
    let reopen = started.elapsed();
    drop(db);
    let mut ledger = back;
    let started = Instant::now();
    let windows = ledger.evidence(t0 + minutes * 60, &[300, 3600, 86_400, 7 * 86_400], None);
    let pass = started.elapsed();
    assert_eq!(windows[3].buckets.min(minutes), minutes.min(10_080));
    println!("ledger_fill: {days} d of minutes, 8 GPUs, 4 probes with server metrics");
    println!(
        "  records in memory: {} minutes, {} bytes ({:.2} MiB, {} B/minute)",
        status.minutes,
        status.bytes,
        status.bytes as f64 / 1048576.0,
        status.bytes / status.minutes.max(1)
    );
    println!(
        "  RSS: {rss_before} KiB before, {rss_after} KiB after ({:+.2} MiB)",
        (rss_after as f64 - rss_before as f64) / 1024.0
    );
    println!(
        "  state.redb: {file} bytes ({:.2} MiB), one commit per minute: {:.2?} for {minutes} commits ({:.2?} each)",
        file as f64 / 1048576.0,
        fill,
        fill / minutes as u32
    );
    println!("  reopen and restore: {reopen:.2?}; one pass summing 5m/1h/24h/7d: {pass:.2?}");
}
