//! Unit tests of the event log: sequence numbers across reopen, bounds, drops, acks, paging.

use std::time::{Duration, SystemTime};

use super::*;
use crate::evidence::events::Body;
use crate::export::json::EventV1;
use crate::model::{EventKind, EventSeverity};

fn event(n: u64) -> Event {
    Event {
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
        kind: EventKind::Xid,
        severity: EventSeverity::Warn,
        attributes: Vec::new(),
        body: Body::Text(format!("event {n}")),
    }
}

fn events(range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(event).collect()
}

const ROOMY: Limits = Limits {
    max_bytes: 1 << 20,
    max_events: 1000,
    max_event_bytes: 4096,
};

fn open(dir: &std::path::Path, limits: Limits, outbox: bool) -> EventLog {
    let db = StateDb::open(dir).unwrap();
    EventLog::open(Some(db), limits, "n1", outbox, None).unwrap()
}

fn seqs(rows: &[(u64, Vec<u8>)]) -> Vec<u64> {
    rows.iter().map(|(s, _)| *s).collect()
}

#[test]
fn sequence_numbers_and_the_job_cursor_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), ROOMY, false);
    let out = log.append(&events(0..3), Some(Some((4, 1)))).unwrap();
    assert_eq!(out.seqs, [1, 2, 3]);
    drop(log);
    let log = open(dir.path(), ROOMY, false);
    assert_eq!(log.job_cursor(), Some((4, 1)));
    let s = log.status();
    assert_eq!((s.first_seq, s.last_seq, s.events), (1, 3, 3));
    assert!(s.persistent && s.bytes > 0);
    assert_eq!(log.append(&events(3..4), None).unwrap().seqs, [4]);
    let stored = log.after(3, 10, u64::MAX).unwrap();
    let back = EventV1::decode(&stored[0].1).unwrap();
    assert_eq!(
        (back.seq, back.node.as_str(), back.kind.as_str()),
        (4, "n1", "xid")
    );
    // A reset cursor (the job's runs started over) is kept as such.
    log.append(&[], Some(None)).unwrap();
    drop(log);
    assert_eq!(open(dir.path(), ROOMY, false).job_cursor(), None);
}

#[test]
fn the_oldest_are_dropped_at_the_bounds_and_unexported_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let by_count = Limits {
        max_events: 5,
        ..ROOMY
    };
    let log = open(dir.path(), by_count, true);
    log.append(&events(0..4), None).unwrap();
    log.ack(2, SystemTime::now());
    log.append(&events(4..8), None).unwrap();
    let s = log.status();
    assert_eq!((s.first_seq, s.last_seq, s.events), (4, 8, 5));
    // 1 and 2 were acknowledged; 3 was not.
    assert_eq!(s.dropped_total, 1);
    assert_eq!(s.pending(), 5);
    assert_eq!(s.recorded_total, 8);
    drop(log);

    let dir = tempfile::tempdir().unwrap();
    let one = event(0)
        .encode(1, SystemTime::UNIX_EPOCH, "n1")
        .unwrap()
        .len() as u64;
    let by_bytes = Limits {
        max_bytes: one * 3 + one / 2,
        ..ROOMY
    };
    let log = open(dir.path(), by_bytes, false);
    for n in 0..10 {
        log.append(&events(n..n + 1), None).unwrap();
        assert!(log.status().bytes <= by_bytes.max_bytes);
    }
    let s = log.status();
    assert_eq!((s.first_seq, s.last_seq, s.events), (8, 10, 3));
    assert_eq!(
        s.dropped_total, 0,
        "without the outbox nothing is lost to it"
    );
    drop(log);
    let s = open(dir.path(), by_bytes, false).status();
    assert_eq!((s.first_seq, s.last_seq, s.events), (8, 10, 3));
}

#[test]
fn an_event_larger_than_its_limit_is_refused_and_the_rest_appended() {
    let log = EventLog::memory(
        Limits {
            max_event_bytes: 300,
            ..ROOMY
        },
        "n1",
        false,
        None,
    );
    let mut big = event(1);
    big.body = Body::Text("x".repeat(400));
    let out = log.append(&[event(0), big, event(2)], None).unwrap();
    assert_eq!(out.seqs, [1, 2]);
    assert_eq!(out.refused.len(), 1);
    assert!(
        out.refused[0].contains("max_event_bytes"),
        "{:?}",
        out.refused
    );
}

#[test]
fn acknowledgements_never_move_back_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), ROOMY, true);
    log.append(&events(0..6), None).unwrap();
    log.ack(4, SystemTime::now());
    log.ack(2, SystemTime::now());
    let s = log.status();
    assert_eq!((s.acked_seq, s.pending()), (4, 2));
    assert!(s.last_export_success.is_some());
    drop(log);
    let log = open(dir.path(), ROOMY, true);
    assert_eq!(log.status().acked_seq, 4);
    assert_eq!(seqs(&log.after(4, 10, u64::MAX).unwrap()), [5, 6]);
}

#[test]
fn batches_are_bounded_by_count_and_bytes_and_hold_at_least_one_event() {
    for log in [
        EventLog::memory(ROOMY, "n1", true, None),
        open(tempfile::tempdir().unwrap().path(), ROOMY, true),
    ] {
        log.append(&events(0..10), None).unwrap();
        assert_eq!(seqs(&log.after(0, 4, u64::MAX).unwrap()), [1, 2, 3, 4]);
        assert_eq!(seqs(&log.after(8, 4, u64::MAX).unwrap()), [9, 10]);
        assert_eq!(
            seqs(&log.after(0, 100, 1).unwrap()),
            [1],
            "one event at least"
        );
        let one = log.after(0, 1, u64::MAX).unwrap()[0].1.len() as u64;
        assert_eq!(log.after(0, 100, one * 3).unwrap().len(), 3);
        assert!(log.after(10, 4, u64::MAX).unwrap().is_empty());
    }
}

#[test]
fn pages_go_forward_from_since_or_show_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    for log in [
        EventLog::memory(ROOMY, "n1", false, None),
        open(dir.path(), ROOMY, false),
    ] {
        log.append(&events(0..7), None).unwrap();
        let page = log.page(Some(0), 3).unwrap();
        let got: Vec<u64> = page.events.iter().map(|(s, _)| *s).collect();
        assert_eq!((got, page.more), (vec![1, 2, 3], true));
        let page = log.page(Some(3), 4).unwrap();
        assert_eq!(page.events.len(), 4);
        assert!(!page.more);
        let page = log.page(None, 2).unwrap();
        let got: Vec<u64> = page.events.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, [6, 7]);
        let raw = page.events[1].1.get();
        assert!(raw.contains("\"seq\":7"), "{raw}");
        assert!(log.page(Some(7), 10).unwrap().events.is_empty());
    }
}

#[test]
fn a_memory_log_keeps_the_same_bounds() {
    let log = EventLog::memory(
        Limits {
            max_events: 3,
            ..ROOMY
        },
        "n1",
        true,
        None,
    );
    log.append(&events(0..5), None).unwrap();
    let s = log.status();
    assert!(!s.persistent);
    assert_eq!(
        (s.first_seq, s.last_seq, s.events, s.dropped_total),
        (3, 5, 3, 2)
    );
}
