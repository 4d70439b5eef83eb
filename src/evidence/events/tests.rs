//! Unit tests of the event model: each kind's attributes, severity, body and wire form.

use std::time::{Duration, SystemTime};

use super::*;
use crate::export::json::EventV1;
use crate::health::{Action, State};
use crate::model::{JobEnd, JobExit, JobReady, JobStart, ProbeReason, XidSource};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn attr<'a>(e: &'a Event, key: &str) -> Option<&'a AttrV1> {
    e.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn wire(e: &Event) -> EventV1 {
    EventV1::decode(&e.encode(42, at(2_000), "node-1").unwrap()).unwrap()
}

#[test]
fn a_gpu_transition_names_the_gpu_states_and_reasons() {
    let t = Transition {
        at: at(1_000),
        gpu: Some(1),
        uuid: "GPU-b".to_owned(),
        from: State::Healthy,
        to: State::Unhealthy,
        reasons: vec!["xid_79".to_owned()],
    };
    let e = Event::health(&t);
    assert_eq!(e.kind, EventKind::HealthTransition);
    assert_eq!(e.severity, EventSeverity::Error);
    assert_eq!(e.time, at(1_000));
    assert_eq!(attr(&e, "gpulse.gpu.index"), Some(&AttrV1::Int(1)));
    assert_eq!(attr(&e, "hw.id"), Some(&AttrV1::Str("GPU-b".to_owned())));
    assert_eq!(
        attr(&e, "gpulse.health.reasons"),
        Some(&AttrV1::List(vec!["xid_79".to_owned()]))
    );
    let w = wire(&e);
    assert_eq!(
        (w.seq, w.kind.as_str(), w.severity.as_str()),
        (42, "health_transition", "error")
    );
    assert_eq!(w.time, "1970-01-01T00:16:40.000Z");
    assert_eq!(w.observed_time, "1970-01-01T00:33:20.000Z");
    assert_eq!(
        w.body_text(),
        "GPU 1 health changed from healthy to unhealthy (xid_79)."
    );
    let node = Event::health(&Transition {
        gpu: None,
        uuid: String::new(),
        from: State::Unknown,
        to: State::Healthy,
        reasons: Vec::new(),
        ..t
    });
    assert_eq!(node.severity, EventSeverity::Info);
    assert_eq!(
        attr(&node, "gpulse.health.scope"),
        Some(&AttrV1::Str("node".to_owned()))
    );
    assert_eq!(attr(&node, "hw.id"), None);
}

#[test]
fn an_xid_carries_its_sources_and_what_the_policy_makes_of_it() {
    let e = XidEvent {
        at: at(1_000),
        gpu_index: Some(0),
        uuid: "GPU-a".to_owned(),
        pci_bus_id: "0000:3b:00.0".to_owned(),
        xid: 79,
        sources: vec![XidSource::NvmlEvent, XidSource::Kmsg],
        detail: "fell off the bus".to_owned(),
    };
    let policy = Policy::default();
    let ev = Event::xid(&e, &policy);
    assert_eq!(ev.severity, EventSeverity::Error);
    assert_eq!(attr(&ev, "gpulse.gpu.xid"), Some(&AttrV1::Int(79)));
    assert_eq!(
        attr(&ev, "gpulse.xid.sources"),
        Some(&AttrV1::List(vec![
            "nvml_event".to_owned(),
            "kmsg".to_owned()
        ]))
    );
    assert_eq!(
        attr(&ev, "gpulse.xid.action"),
        Some(&AttrV1::Str(Action::Reboot.as_str().to_owned()))
    );
    assert!(wire(&ev).body_text().starts_with("Xid 79 on GPU 0"));
    // An ignored Xid is informational.
    let mut policy = Policy::default();
    policy
        .xid_overrides
        .insert(79, (crate::health::Severity::Ignore, Action::None));
    assert_eq!(Event::xid(&e, &policy).severity, EventSeverity::Info);
}

#[test]
fn an_outage_starts_and_ends_with_its_recovery_time() {
    let p = ProbeStatus::new("llm", "vllm", Duration::from_secs(10));
    let mut o = ProbeOutage {
        start: at(100),
        end: None,
        cause: ProbeReason::ConnectRefused,
    };
    let started = Event::outage_started(&p, &o);
    assert_eq!(
        (started.kind, started.severity, started.time),
        (EventKind::ProbeOutageStarted, EventSeverity::Warn, at(100))
    );
    assert_eq!(
        attr(&started, "gpulse.probe.cause"),
        Some(&AttrV1::Str("connect_refused".to_owned()))
    );
    assert!(Event::outage_ended(&p, &o).is_none());
    o.end = Some(at(142));
    let ended = Event::outage_ended(&p, &o).unwrap();
    assert_eq!(
        (ended.kind, ended.time),
        (EventKind::ProbeOutageEnded, at(142))
    );
    assert_eq!(
        attr(&ended, "gpulse.probe.recovery_seconds"),
        Some(&AttrV1::Double(42.0))
    );
    assert_eq!(
        wire(&ended).body_text(),
        "Probe llm is back after 42.0 s (connect_refused)."
    );
}

#[test]
fn job_events_keep_the_fields_of_the_job_state_file() {
    let started = Event::job(&JobEvent::Started(JobStart {
        run: 3,
        at: at(10),
        program: "vllm".to_owned(),
        pid: 7,
    }));
    assert_eq!(started.kind, EventKind::JobStarted);
    assert_eq!(attr(&started, "gpulse.job.pid"), Some(&AttrV1::Int(7)));
    let ready = Event::job(&JobEvent::Ready(JobReady {
        run: 3,
        at: at(51),
        after_start: Duration::from_millis(41_200),
        recovery: Some(Duration::from_millis(47_900)),
    }));
    assert_eq!(
        attr(&ready, "gpulse.job.recovery_seconds"),
        Some(&AttrV1::Double(47.9))
    );
    let oom = Event::job(&JobEvent::Finished(JobEnd {
        run: 3,
        at: at(7_210),
        program: "vllm".to_owned(),
        pid: 7,
        started_at: at(10),
        outcome: JobOutcome::Oom,
        exit: Some(JobExit::Signal(9)),
        duration: Some(Duration::from_secs(7_200)),
        oom_kills: Some(1),
        stop_signal: None,
        killed_after_grace: false,
    }));
    assert_eq!(
        (oom.kind, oom.severity),
        (EventKind::JobFinished, EventSeverity::Error)
    );
    assert_eq!(attr(&oom, "gpulse.job.exit_code"), Some(&AttrV1::Int(137)));
    assert_eq!(attr(&oom, "gpulse.job.signal"), Some(&AttrV1::Int(9)));
    assert_eq!(
        attr(&oom, "gpulse.job.stop_signal"),
        None,
        "absent, not null"
    );
    assert_eq!(
        attr(&oom, "gpulse.job.outcome"),
        Some(&AttrV1::Str("oom".to_owned()))
    );
    assert_eq!(
        wire(&oom).body_text(),
        "Run 3 of vllm ended: oom, exit code 137."
    );
}

#[test]
fn a_score_report_keeps_its_json_byte_for_byte() {
    let report = r#"{"schema":"x","sig":"ab==", "n":1.50}"#.to_owned();
    let e = Event::score_report(
        at(5),
        report.clone(),
        vec![("gpulse.score.window", str("1h"))],
    )
    .unwrap();
    let w = wire(&e);
    assert_eq!(w.kind, "score_report");
    assert_eq!(w.body.get(), report);
    assert_eq!(w.body_text(), report);
    assert!(Event::score_report(at(5), "{oops".to_owned(), Vec::new()).is_err());
}
