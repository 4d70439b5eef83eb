//! Unit tests of the store: snapshots, windows, Xid merging, runs, readiness, probes, jobs.

use super::*;
use crate::model::XidSource;

fn xid(gpu: u32, code: u64, secs: u64, source: XidSource) -> XidEvent {
    XidEvent {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        gpu_index: Some(gpu),
        uuid: format!("GPU-{gpu}"),
        pci_bus_id: String::new(),
        xid: code,
        sources: vec![source],
        detail: String::new(),
    }
}

const W: Duration = Duration::from_secs(10);

#[test]
fn two_sources_within_the_window_are_one_occurrence() {
    let mut recent = VecDeque::new();
    assert!(merge_xid(
        &mut recent,
        xid(0, 79, 100, XidSource::NvmlEvent),
        W,
        8
    ));
    assert!(!merge_xid(
        &mut recent,
        xid(0, 79, 105, XidSource::Kmsg),
        W,
        8
    ));
    assert_eq!(recent.len(), 1);
    assert_eq!(
        recent[0].sources,
        vec![XidSource::NvmlEvent, XidSource::Kmsg]
    );
}

#[test]
fn outside_the_window_or_same_source_or_other_gpu_are_two() {
    let mut recent = VecDeque::new();
    assert!(merge_xid(
        &mut recent,
        xid(0, 79, 100, XidSource::NvmlEvent),
        W,
        8
    ));
    assert!(merge_xid(
        &mut recent,
        xid(0, 79, 111, XidSource::Kmsg),
        W,
        8
    ));
    assert!(merge_xid(
        &mut recent,
        xid(1, 79, 111, XidSource::NvmlEvent),
        W,
        8
    ));
    assert!(merge_xid(
        &mut recent,
        xid(1, 79, 112, XidSource::NvmlEvent),
        W,
        8
    ));
    assert!(merge_xid(
        &mut recent,
        xid(1, 48, 112, XidSource::Kmsg),
        W,
        8
    ));
    assert_eq!(recent.len(), 5);
}

#[test]
fn recent_is_bounded_and_counts_are_per_gpu_and_xid() {
    let s = store(3);
    let s = s.with_xid_limits(W, 2);
    for i in 0..5 {
        s.record_xid(xid(0, 79, 100 + 20 * i, XidSource::NvmlEvent));
    }
    s.record_xid(xid(0, 79, 181, XidSource::Kmsg));
    s.record_xid(xid(1, 48, 190, XidSource::Kmsg));
    let snap = s.snapshot();
    assert_eq!(snap.xid.recent.len(), 2);
    assert_eq!(snap.xid.counts.len(), 2);
    let c = &snap.xid.counts[0];
    assert_eq!((c.gpu_index, c.xid, c.count), (Some(0), 79, 5));
    assert_eq!(
        c.first_seen,
        SystemTime::UNIX_EPOCH + Duration::from_secs(100)
    );
    assert_eq!(
        c.last_seen,
        SystemTime::UNIX_EPOCH + Duration::from_secs(180)
    );
    assert_eq!(snap.xid.counts[1].count, 1);
}

fn store(window: usize) -> Store {
    Store::new(
        NonZeroUsize::new(window).unwrap(),
        vec![
            CollectorStatus::new("gpu", Duration::from_secs(1)),
            CollectorStatus::new("host", Duration::from_secs(5)),
        ],
    )
}

fn host(load: f64) -> Sample {
    Sample::Host(HostSample {
        load_average: Some([load, 0.0, 0.0]),
        ..HostSample::default()
    })
}

#[test]
fn window_is_bounded_and_keeps_the_newest() {
    let s = store(3);
    for i in 0..10 {
        s.publish(host(f64::from(i)));
    }
    let loads: Vec<f32> = s.host_window().iter().map(|h| h.load1.unwrap()).collect();
    assert_eq!(loads, vec![7.0, 8.0, 9.0]);
    assert_eq!(
        s.snapshot().host.as_ref().unwrap().load_average.unwrap()[0],
        9.0
    );
}

#[test]
fn snapshots_are_immutable_once_handed_out() {
    let s = store(3);
    s.publish(host(1.0));
    let before = s.snapshot();
    s.publish(host(2.0));
    assert_eq!(before.host.as_ref().unwrap().load_average.unwrap()[0], 1.0);
    assert_eq!(
        s.snapshot().host.as_ref().unwrap().load_average.unwrap()[0],
        2.0
    );
}

#[test]
fn health_is_published_in_the_snapshot() {
    let s = store(3);
    assert!(s.snapshot().health.is_none());
    s.publish(host(1.0));
    s.set_health(NodeHealth::initial());
    let snap = s.snapshot();
    assert_eq!(
        snap.health.as_ref().map(|h| h.state),
        Some(crate::health::State::Unknown)
    );
    // Other writes keep it.
    s.publish(host(2.0));
    assert!(s.snapshot().health.is_some());
}

#[test]
fn run_reports_update_status_and_staleness() {
    let s = store(3);
    assert!(!s.snapshot().first_cycle_done());
    let ok = RunReport {
        duration: Duration::from_millis(3),
        finished_at: SystemTime::UNIX_EPOCH,
        outcome: Ok(()),
    };
    s.record_run("gpu", ok.clone());
    s.record_run("host", ok);
    assert!(s.snapshot().first_cycle_done());
    s.record_run(
        "gpu",
        RunReport {
            duration: Duration::from_secs(2),
            finished_at: SystemTime::UNIX_EPOCH,
            outcome: Err(("deadline", "hung".to_owned())),
        },
    );
    let snap = s.snapshot();
    let gpu = snap.collector("gpu").unwrap();
    assert_eq!((gpu.runs, gpu.failures), (2, 1));
    assert!(gpu.is_stale());
    assert_eq!(gpu.last_error_kind, Some("deadline"));
}

/// `/readyz` where GPUs are expected: ready during the start-up grace, then not while the
/// GPU collector has never read a GPU; ready once it does; a sidecar is never held back.
#[test]
fn readiness_waits_for_gpu_data_where_gpus_are_expected() {
    use crate::config::ModeSetting;
    use crate::mode::Facts;
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + secs);
    let grace = Duration::from_secs(60);
    let fail = |secs| RunReport {
        duration: Duration::from_secs(1),
        finished_at: at(secs),
        outcome: Err((
            "unavailable",
            "NVML: libnvidia-ml.so.1 not found".to_owned(),
        )),
    };
    for (setting, held_back) in [
        (ModeSetting::Host, true),
        (ModeSetting::Embedded, true),
        (ModeSetting::Sidecar, false),
    ] {
        let s = store(3).with_mode(ModeInfo::new(setting, Facts::default()));
        assert!(
            s.snapshot().readiness(at(0), grace).is_err(),
            "no cycle yet"
        );
        s.record_run("gpu", fail(1));
        s.record_run("host", fail(1));
        assert_eq!(
            s.snapshot().readiness(at(30), grace),
            Ok(()),
            "within the grace"
        );
        let late = s.snapshot().readiness(at(61), grace);
        assert_eq!(late.is_err(), held_back, "{setting:?}: {late:?}");
        if held_back {
            let why = late.unwrap_err();
            assert!(
                why.contains("no GPU data") && why.contains("not found"),
                "{why}"
            );
        }
        s.record_run(
            "gpu",
            RunReport {
                duration: Duration::from_secs(1),
                finished_at: at(70),
                outcome: Ok(()),
            },
        );
        assert_eq!(s.snapshot().readiness(at(80), grace), Ok(()));
    }
}

#[test]
fn a_hang_is_measured_from_the_start_of_its_first_missed_deadline() {
    let s = store(3);
    let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let run = |secs, duration, outcome: Result<(), (&'static str, String)>| RunReport {
        duration: Duration::from_secs(duration),
        finished_at: at(secs),
        outcome,
    };
    let failed = |kind: &'static str| Err((kind, kind.to_owned()));
    s.record_run("gpu", run(100, 0, Ok(())));
    assert_eq!(s.snapshot().gpu_stuck_for(at(100)), None);
    // An `unavailable` streak is no hang, and does not date the hang that follows.
    s.record_run("gpu", run(101, 0, failed("unavailable")));
    assert_eq!(s.snapshot().gpu_stuck_for(at(101)), None);
    // The first missed deadline started at 103 (2 s before it ended); later cycles fail
    // at once while the call is still stuck.
    s.record_run("gpu", run(105, 2, failed("deadline")));
    s.record_run("gpu", run(106, 0, failed("deadline")));
    let snap = s.snapshot();
    assert_eq!(snap.gpu_stuck_for(at(140)), Some(Duration::from_secs(37)));
    assert_eq!(snap.collector("gpu").unwrap().failing_since, Some(at(103)));
    // A clock that went backwards reads as zero, not as a panic.
    assert_eq!(snap.gpu_stuck_for(at(0)), Some(Duration::ZERO));
    s.record_run("gpu", run(107, 0, Ok(())));
    assert_eq!(s.snapshot().gpu_stuck_for(at(140)), None);
}

fn gpu_at(secs: u64) -> Sample {
    Sample::Gpu(GpuSample {
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        driver_version: None,
        cuda_driver_version: None,
        devices: Vec::new(),
    })
}

fn taken(window: &GpuWindow) -> Vec<u64> {
    window
        .points()
        .iter()
        .map(|p| {
            p.taken_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
        .collect()
}

/// The GPU window is shared, not copied: a reader keeps the points it was handed while later
/// samples go into a copy, and the window stays bounded and oldest first through the moves
/// that drop the points behind it.
#[test]
fn the_gpu_window_is_shared_bounded_and_oldest_first() {
    let s = store(3);
    assert!(s.gpu_window().points().is_empty());
    for i in 0..2 {
        s.publish(gpu_at(i));
    }
    assert_eq!(taken(&s.gpu_window()), vec![0, 1]);
    let held = s.gpu_window();
    for i in 2..20 {
        s.publish(gpu_at(i));
        let window = s.gpu_window();
        let first = i.saturating_sub(2);
        assert_eq!(taken(&window), (first..=i).collect::<Vec<_>>(), "after {i}");
    }
    assert_eq!(taken(&held), vec![0, 1]);
}

/// Each change counter moves with its part of the snapshot only: a GPU cycle (not another
/// collector's), an Xid, a clear, a probe, a report, and a health evaluation only when it
/// adds a transition.
#[test]
fn changes_count_what_moved() {
    let s = store(3);
    let changes = s.changes();
    let ok = RunReport {
        duration: Duration::from_millis(3),
        finished_at: SystemTime::UNIX_EPOCH,
        outcome: Ok(()),
    };
    s.record_run("host", ok.clone());
    s.publish(host(1.0));
    assert_eq!(*changes.borrow(), Changes::default());
    s.record_run("gpu", ok);
    s.record_xid(xid(0, 79, 100, XidSource::Kmsg));
    s.set_health(NodeHealth::initial());
    let c = *changes.borrow();
    assert_eq!((c.gpu_cycles, c.xids, c.health_transitions), (1, 1, 0));
    let mut health = NodeHealth::initial();
    std::sync::Arc::make_mut(&mut health.transitions).push(crate::health::Transition {
        at: SystemTime::UNIX_EPOCH,
        gpu: Some(0),
        uuid: "GPU-0".to_owned(),
        from: crate::health::State::Unknown,
        to: crate::health::State::Healthy,
        reasons: Vec::new(),
    });
    s.set_health(health.clone());
    s.set_health(health);
    s.clear_health(Clear {
        at: SystemTime::UNIX_EPOCH,
        gpu: None,
        by: "test".to_owned(),
    });
    let c = *changes.borrow();
    assert_eq!((c.health_transitions, c.clears), (1, 1));
}
