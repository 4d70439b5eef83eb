//! Unit tests of the recorder's cursors: each source's events once, in time order, Xids after
//! their de-duplication window, job events across a restart, nothing moved by a failed write.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::health::{NodeHealth, State};
use crate::model::{
    EventKind, JobEnd, JobExit, JobLog, JobOutcome, JobStart, ProbeOutage, ProbeReason,
    ProbeStatus, XidLog,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

const WAIT: Duration = Duration::from_secs(10);

fn transition(secs: u64, gpu: Option<u32>, to: State) -> Transition {
    Transition {
        at: at(secs),
        gpu,
        uuid: String::new(),
        from: State::Unknown,
        to,
        reasons: Vec::new(),
    }
}

fn with_transitions(snap: &mut Snapshot, list: Vec<Transition>) {
    snap.health = Some(Arc::new(NodeHealth {
        transitions: list.into(),
        ..NodeHealth::initial()
    }));
}

fn kinds(events: &[Event]) -> Vec<(EventKind, SystemTime)> {
    events.iter().map(|e| (e.kind, e.time)).collect()
}

#[test]
fn health_transitions_are_recorded_once_and_a_failed_write_keeps_them() {
    let mut d = Deriver::new(Policy::default(), WAIT, None);
    let mut snap = Snapshot::default();
    let now = Instant::now();
    let t1 = transition(10, None, State::Healthy);
    let t2 = transition(10, Some(0), State::Healthy);
    with_transitions(&mut snap, vec![t1.clone(), t2.clone()]);
    let (events, cursors) = d.derive(&snap, now, false);
    assert_eq!(events.len(), 2);
    // Not committed (the write failed): the same events again.
    let (again, cursors2) = d.derive(&snap, now, false);
    assert_eq!(again, events);
    assert_eq!(cursors2, cursors);
    d.commit(cursors);
    assert!(d.derive(&snap, now, false).0.is_empty());
    // One more, with the oldest rolled off the bounded list.
    let t3 = transition(20, Some(0), State::Degraded);
    with_transitions(&mut snap, vec![t2, t3.clone()]);
    let (events, cursors) = d.derive(&snap, now, false);
    assert_eq!(kinds(&events), [(EventKind::HealthTransition, at(20))]);
    d.commit(cursors);
    assert!(d.derive(&snap, now, false).0.is_empty());
}

fn xid_snapshot(events: Vec<XidEvent>) -> Snapshot {
    Snapshot {
        xid: Arc::new(XidLog {
            counts: Vec::new(),
            recent: events,
        }),
        ..Snapshot::default()
    }
}

fn xid(secs: u64, source: XidSource) -> XidEvent {
    XidEvent {
        at: at(secs),
        gpu_index: Some(0),
        uuid: String::new(),
        pci_bus_id: String::new(),
        xid: 79,
        sources: vec![source],
        detail: String::new(),
    }
}

#[test]
fn an_xid_waits_for_its_window_so_every_source_is_listed() {
    let mut d = Deriver::new(Policy::default(), WAIT, None);
    let start = Instant::now();
    let first = xid(100, XidSource::NvmlEvent);
    let (events, c) = d.derive(&xid_snapshot(vec![first.clone()]), start, false);
    assert!(events.is_empty(), "too early");
    d.commit(c);
    // The kernel log reports it too: merged (and its uuid filled in), same key.
    let mut merged = first;
    merged.sources.push(XidSource::Kmsg);
    merged.uuid = "GPU-a".to_owned();
    let snap = xid_snapshot(vec![merged]);
    let (events, c) = d.derive(&snap, start + WAIT, false);
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .attributes
            .iter()
            .any(|(k, v)| *k == "gpulse.xid.sources"
                && *v == AttrV1::List(vec!["nvml_event".into(), "kmsg".into()]))
    );
    d.commit(c);
    assert!(d.derive(&snap, start + WAIT * 2, false).0.is_empty());
    // At shutdown a waiting Xid is recorded at once.
    let snap = xid_snapshot(vec![
        xid(100, XidSource::NvmlEvent),
        xid(200, XidSource::Kmsg),
    ]);
    let (events, _) = d.derive(&snap, start + WAIT * 2, true);
    assert_eq!(kinds(&events), [(EventKind::Xid, at(200))]);
}

use crate::export::json::AttrV1;

#[test]
fn outages_start_and_end_once_each_in_time_order() {
    let mut d = Deriver::new(Policy::default(), WAIT, None);
    let mut p = ProbeStatus::new("llm", "vllm", Duration::from_secs(1));
    p.outages.push(ProbeOutage {
        start: at(50),
        end: Some(at(60)),
        cause: ProbeReason::Timeout,
    });
    p.outages.push(ProbeOutage {
        start: at(70),
        end: None,
        cause: ProbeReason::ConnectRefused,
    });
    let mut snap = Snapshot {
        probes: Arc::new(vec![p.clone()]),
        ..Snapshot::default()
    };
    with_transitions(&mut snap, vec![transition(65, None, State::Degraded)]);
    let now = Instant::now();
    let (events, c) = d.derive(&snap, now, false);
    assert_eq!(
        kinds(&events),
        [
            (EventKind::ProbeOutageStarted, at(50)),
            (EventKind::ProbeOutageEnded, at(60)),
            (EventKind::HealthTransition, at(65)),
            (EventKind::ProbeOutageStarted, at(70)),
        ]
    );
    d.commit(c);
    p.outages[1].end = Some(at(80));
    snap.probes = Arc::new(vec![p]);
    let (events, c) = d.derive(&snap, now, false);
    assert_eq!(kinds(&events), [(EventKind::ProbeOutageEnded, at(80))]);
    d.commit(c);
    assert!(d.derive(&snap, now, false).0.is_empty());
}

fn job_log(events: Vec<JobEvent>) -> JobLog {
    let mut log = JobLog::default();
    for e in events {
        log.apply(e, 100);
    }
    log
}

fn started(run: u64, secs: u64) -> JobEvent {
    JobEvent::Started(JobStart {
        run,
        at: at(secs),
        program: "vllm".to_owned(),
        pid: 7,
    })
}

fn finished(run: u64, secs: u64) -> JobEvent {
    JobEvent::Finished(JobEnd {
        run,
        at: at(secs),
        program: "vllm".to_owned(),
        pid: 7,
        started_at: at(secs - 1),
        outcome: JobOutcome::Failure,
        exit: Some(JobExit::Code(1)),
        duration: Some(Duration::from_secs(1)),
        oom_kills: None,
        stop_signal: None,
        killed_after_grace: false,
    })
}

#[test]
fn job_events_restored_after_a_restart_are_not_recorded_twice() {
    let now = Instant::now();
    let mut snap = Snapshot {
        job: Some(Arc::new(job_log(vec![started(1, 10), finished(1, 11)]))),
        ..Snapshot::default()
    };
    let mut d = Deriver::new(Policy::default(), WAIT, None);
    let (events, c) = d.derive(&snap, now, false);
    assert_eq!(events.len(), 2);
    assert_eq!(d.job_change(&c), Some(Some((1, 2))));
    d.commit(c);
    // A new wrapper: the log kept the cursor; jobs.jsonl brings run 1 back with run 2.
    let mut d = Deriver::new(Policy::default(), WAIT, Some((1, 2)));
    snap.job = Some(Arc::new(job_log(vec![
        started(1, 10),
        finished(1, 11),
        started(2, 20),
    ])));
    let (events, c) = d.derive(&snap, now, false);
    assert_eq!(kinds(&events), [(EventKind::JobStarted, at(20))]);
    d.commit(c);
    // The state file was removed: runs start over at 1, and are recorded again.
    snap.job = Some(Arc::new(job_log(vec![started(1, 30)])));
    let (events, c) = d.derive(&snap, now, false);
    assert_eq!(kinds(&events), [(EventKind::JobStarted, at(30))]);
    assert_eq!(d.job_change(&c), Some(Some((1, 0))));
}

/// A signed report chained after start becomes one `score_report` event carrying its exact
/// bytes and its own creation time; the report already chained at start is not recorded again.
#[test]
fn a_newly_chained_report_is_recorded_once_with_its_bytes() {
    use crate::store::LatestReport;
    let report = |seq: u64, created: &str| LatestReport {
        seq,
        sha256: format!("{seq:064x}"),
        json: Arc::from(
            format!(r#"{{"created_at":"{created}","schema":"gpulse.report/v1","seq":{seq}}}"#)
                .into_bytes(),
        ),
    };
    let mut d = Deriver::new(Policy::default(), WAIT, None);
    let now = Instant::now();
    let mut snap = Snapshot {
        latest_report: Some(Arc::new(report(7, "2026-11-27T13:00:01.000Z"))),
        ..Snapshot::default()
    };
    let (events, cursors) = d.derive(&snap, now, false);
    assert!(
        events.is_empty(),
        "the report restored at start: {events:?}"
    );
    d.commit(cursors);
    snap.latest_report = Some(Arc::new(report(8, "2026-11-27T14:00:01.000Z")));
    let (events, cursors) = d.derive(&snap, now, false);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::ScoreReport);
    assert_eq!(
        events[0].time,
        humantime::parse_rfc3339("2026-11-27T14:00:01.000Z").unwrap()
    );
    let wire = events[0].to_v1(1, events[0].time, "n").unwrap();
    let text = serde_json::to_string(&wire).unwrap();
    assert!(text.contains(r#""seq":8"#), "{text}");
    d.commit(cursors);
    assert!(d.derive(&snap, now, false).0.is_empty());
}
