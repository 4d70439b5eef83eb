//! Unit tests of the ledger: pushing, merging a restarted minute, roll-ups, windows, the
//! size of a week, and the file round trip.

use super::*;
use crate::model::{ServerTally, ThrottleReason};

const WEEK: u64 = 7 * 86_400;

/// A busy minute of `gpus` GPUs and `probes` probes, as a real node would fill it.
fn minute(start: u64, gpus: usize, probes: usize) -> Bucket {
    let mut b = Bucket::new(start, MINUTE_SECONDS);
    b.observed_seconds = 60;
    for p in 0..probes {
        let t = b.probe(&format!("probe-{p}"));
        t.checks[0] = 4;
        t.requests_ok = 2;
        t.requests_within_slo = 2;
        t.output_tokens = 128;
        t.ttft[4] = 1;
        t.ttft[5] = 1;
        t.e2e[7] = 2;
        t.server = Some(ServerTally {
            requests_ok: Some(1200 + start % 97),
            requests_failed: Some(start % 3),
            output_tokens: Some(150_000 + start % 1000),
            ttft: Some({
                let mut bins = [0; crate::model::LEDGER_BINS];
                bins[4] = 700;
                bins[5] = 450;
                bins[6] = 50;
                bins
            }),
            e2e: None,
            ttft_within_slo: Some(1190.5),
            e2e_within_slo: None,
            counter_resets: 0,
        });
    }
    for g in 0..gpus {
        let t = b.gpu(&format!("GPU-{g:08x}-1111-2222-3333-444444444444"));
        t.sampled_seconds = 60;
        t.healthy_seconds = 60;
        t.busy_seconds = 55;
        t.throttled_busy_seconds = 2;
        t.throttle_reasons = vec![
            (ThrottleReason::SwPowerCap, 10),
            (ThrottleReason::HwSlowdown, 2),
        ];
    }
    b
}

#[test]
fn windows_sum_the_minutes_they_hold() {
    let mut ledger = Ledger::new(WEEK, 90 * 86_400);
    for m in 0..10 {
        ledger.push_minute(&minute(6000 + m * 60, 1, 1));
    }
    let e = ledger.evidence(6600, &[300, 3600], None);
    assert_eq!(e[0].buckets, 5);
    assert_eq!(e[0].sum.observed_seconds, 300);
    assert_eq!(e[1].buckets, 10);
    assert_eq!(e[1].sum.probes[0].checks[0], 40);
}

#[test]
fn a_restart_within_a_minute_merges_into_its_record() {
    let mut ledger = Ledger::new(WEEK, 90 * 86_400);
    let mut first = Bucket::new(120, 60);
    first.observed_seconds = 20;
    first.probe("p").checks[0] = 2;
    ledger.push_minute(&first);
    let mut second = Bucket::new(120, 60);
    second.observed_seconds = 50;
    second.agent_starts = 1;
    second.probe("p").checks[4] = 1;
    let changes = ledger.push_minute(&second);
    assert_eq!(changes.minutes.len(), 1);
    let all: Vec<Bucket> = ledger.minutes().collect();
    assert_eq!(all.len(), 1);
    // Observed time is capped at the minute's length.
    assert_eq!(all[0].observed_seconds, 60);
    assert_eq!(all[0].agent_starts, 1);
    assert_eq!(all[0].probes[0].checks, [2, 0, 0, 0, 1]);
}

#[test]
fn old_minutes_roll_up_into_hours_without_losing_counts() {
    let mut ledger = Ledger::new(3600, 86_400);
    let mut deleted = 0;
    let mut hours = std::collections::BTreeSet::new();
    for m in 0..180 {
        let changes = ledger.push_minute(&minute(m * 60, 2, 1));
        deleted += changes.delete_minutes.len();
        hours.extend(changes.hours.iter().map(|(s, _)| *s));
    }
    let status = ledger.status(false, 0);
    assert_eq!(status.minutes, 60);
    assert_eq!(deleted, 120);
    assert_eq!(hours.into_iter().collect::<Vec<_>>(), [0, 3600]);
    // Three hours of evidence: two in roll-ups, one in minutes; every check is still there.
    let e = ledger.evidence(180 * 60, &[3 * 3600], None);
    assert_eq!(e[0].sum.probes[0].checks[0], 180 * 4);
    assert_eq!(e[0].sum.gpus.len(), 2);
    assert_eq!(e[0].sum.observed_seconds, 180 * 60);
    // Hours past their retention go.
    for m in 180..(180 + 26 * 60) {
        ledger.push_minute(&minute(m * 60, 0, 0));
    }
    assert!(ledger.status(false, 0).hours <= 25);
}

#[test]
fn an_out_of_order_minute_is_inserted_in_place() {
    let mut ledger = Ledger::new(WEEK, 86_400);
    ledger.push_minute(&minute(600, 0, 1));
    ledger.push_minute(&minute(120, 0, 1));
    let starts: Vec<u64> = ledger.minutes().map(|b| b.start).collect();
    assert_eq!(starts, [120, 600]);
}

/// The size of 7 days of minute buckets with 8 GPUs and 4 probes (each probe with server
/// metrics): the bound is "a few MiB".
#[test]
fn a_week_of_minutes_for_8_gpus_and_4_probes_fits_in_a_few_mib() {
    let mut ledger = Ledger::new(WEEK, 90 * 86_400);
    let minutes = WEEK / 60;
    for m in 0..minutes {
        ledger.push_minute(&minute(1_699_999_980 + m * 60, 8, 4));
    }
    let status = ledger.status(false, 0);
    assert_eq!(status.minutes, minutes);
    let per_minute = status.bytes / minutes;
    eprintln!(
        "ledger: {} minutes, {} bytes of records ({per_minute} per minute, {:.2} MiB)",
        status.minutes,
        status.bytes,
        status.bytes as f64 / (1 << 20) as f64
    );
    assert!(status.bytes < 6 << 20, "{status:?}");
    // A week's evidence is one pass over the records.
    let e = ledger.evidence(1_699_999_980 + WEEK, &[300, 3600, 86_400, WEEK], None);
    let counts: Vec<u64> = e.iter().map(|e| e.buckets).collect();
    assert_eq!(counts, [5, 60, 1440, minutes]);
}

#[test]
fn the_file_round_trips_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (db, restored) = disk::open(dir.path()).unwrap();
    assert!(restored.minutes.is_empty());
    let mut ledger = Ledger::new(3600, 86_400);
    for m in 0..90 {
        let changes = ledger.push_minute(&minute(m * 60, 2, 2));
        disk::apply(&db, &changes, &[("k".to_owned(), vec![1, 2])]).unwrap();
    }
    drop(db);
    let (_db, restored) = disk::open(dir.path()).unwrap();
    assert_eq!(restored.meta, vec![("k".to_owned(), vec![1, 2])]);
    let mut back = Ledger::restored(
        3600,
        86_400,
        restored.names,
        restored.minutes,
        restored.hours,
    );
    assert_eq!(back.status(true, 0), ledger.status(true, 0));
    let lens = [300, 3600, 86_400];
    assert_eq!(
        back.evidence(5400, &lens, None),
        ledger.evidence(5400, &lens, None)
    );
}

#[test]
fn an_unwritable_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = disk::open(&file.join("sub")).unwrap_err();
    assert!(error.contains("cannot create"), "{error}");
}
