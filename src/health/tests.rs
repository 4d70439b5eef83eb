//! Table-driven tests of the health rules.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::HealthConfig;
use crate::model::{EccKind, EccScope, TempThreshold};
use crate::model::{GpuDevice, GpuIdentity, RemappedRows, ThrottleReasons, XidCount};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn device(index: u32) -> GpuDevice {
    GpuDevice {
        identity: Arc::new(GpuIdentity {
            index,
            index_label: index.to_string(),
            uuid: format!("GPU-{index}"),
            name: "Fake".to_owned(),
            ..GpuIdentity::default()
        }),
        temperature_gpu_celsius: Some(50.0),
        temperature_thresholds: vec![(TempThreshold::Slowdown, 90.0)].into(),
        throttle: Some(ThrottleReasons {
            active: 0,
            supported: 0x1FF,
        }),
        ..GpuDevice::default()
    }
}

fn sample(at: SystemTime, devices: Vec<GpuDevice>) -> GpuSample {
    GpuSample {
        taken_at: at,
        driver_version: None,
        cuda_driver_version: None,
        devices,
    }
}

fn xid(gpu: u32, xid: u64, at: SystemTime) -> XidCount {
    XidCount {
        gpu_index: Some(gpu),
        uuid: format!("GPU-{gpu}"),
        xid,
        count: 1,
        first_seen: at,
        last_seen: at,
    }
}

type Expect<'a> = (State, Action, Option<&'a str>);
type Step = (u64, Box<dyn Fn(&mut GpuDevice)>, Vec<XidCount>);

/// One evaluation of GPU 0 from scratch at `t(0)`, with this device change and these Xids.
fn eval_one(
    change: impl FnOnce(&mut GpuDevice),
    xids: Vec<XidCount>,
    policy: &Policy,
) -> GpuHealth {
    let mut d = device(0);
    change(&mut d);
    let s = sample(t(0), vec![d]);
    let window = vec![GpuWindowPoint::from(&s)];
    let log = XidLog {
        counts: xids,
        recent: Vec::new(),
    };
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &window,
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &input, policy, t(0));
    h.gpus[0].clone()
}

/// Asserts the GPU's state, action, and that `reason` (if any) is active.
fn check(name: &str, gpu: &GpuHealth, expect: Expect) {
    let (state, action, reason) = expect;
    assert_eq!(gpu.state, state, "{name}: state; reasons {:?}", gpu.reasons);
    assert_eq!(gpu.action, action, "{name}: action");
    match reason {
        Some(code) => assert!(
            gpu.reasons.iter().any(|r| r.code.label() == code),
            "{name}: reason {code} missing from {:?}",
            gpu.reasons
        ),
        None => assert!(gpu.reasons.is_empty(), "{name}: {:?}", gpu.reasons),
    }
}

#[test]
fn xid_catalog_classes() {
    let p = Policy::default();
    let mut overridden = Policy::default();
    overridden
        .xid_overrides
        .insert(13, (Severity::Ignore, Action::None));
    overridden
        .xid_overrides
        .insert(94, (Severity::Unhealthy, Action::HardwareInspection));
    let cases: Vec<(&str, u64, &Policy, Expect)> = vec![
        (
            "critical reset_gpu",
            119,
            &p,
            (State::Unhealthy, Action::ResetGpu, Some("xid_119")),
        ),
        (
            "critical reset_gpu 95",
            95,
            &p,
            (State::Unhealthy, Action::ResetGpu, Some("xid_95")),
        ),
        (
            "nvlink workflow",
            146,
            &p,
            (State::Unhealthy, Action::ResetGpu, Some("xid_146")),
        ),
        (
            "critical reboot",
            79,
            &p,
            (State::Unhealthy, Action::Reboot, Some("xid_79")),
        ),
        (
            "hardware inspection",
            48,
            &p,
            (State::Unhealthy, Action::HardwareInspection, Some("xid_48")),
        ),
        (
            "aux power",
            54,
            &p,
            (State::Unhealthy, Action::HardwareInspection, Some("xid_54")),
        ),
        (
            "restart_app",
            13,
            &p,
            (State::Degraded, Action::RestartApp, Some("xid_13")),
        ),
        (
            "restart_app range",
            100,
            &p,
            (State::Degraded, Action::RestartApp, Some("xid_100")),
        ),
        (
            "contained memory",
            94,
            &p,
            (State::Degraded, Action::RestartApp, Some("xid_94")),
        ),
        ("ignore", 63, &p, (State::Healthy, Action::None, None)),
        ("ignore 92", 92, &p, (State::Healthy, Action::None, None)),
        (
            "unknown",
            999,
            &p,
            (State::Degraded, Action::RestartApp, Some("xid_999")),
        ),
        (
            "unknown empty bucket",
            165,
            &p,
            (State::Degraded, Action::RestartApp, Some("xid_165")),
        ),
        (
            "override ignore",
            13,
            &overridden,
            (State::Healthy, Action::None, None),
        ),
        (
            "override escalate",
            94,
            &overridden,
            (State::Unhealthy, Action::HardwareInspection, Some("xid_94")),
        ),
    ];
    for (name, n, policy, expect) in cases {
        let g = eval_one(|_| {}, vec![xid(0, n, t(0))], policy);
        check(name, &g, expect);
    }
}

#[test]
fn xid_older_than_hold_time_and_other_gpus_do_not_count() {
    let p = Policy::default();
    let g = eval_one(
        |_| {},
        vec![xid(0, 79, t(0) - Duration::from_secs(601))],
        &p,
    );
    check("old", &g, (State::Healthy, Action::None, None));
    let g = eval_one(|_| {}, vec![xid(1, 79, t(0))], &p);
    check("other gpu", &g, (State::Healthy, Action::None, None));
}

#[test]
fn non_xid_signals() {
    let p = Policy::default();
    type Change = Box<dyn FnOnce(&mut GpuDevice)>;
    let cases: Vec<(&str, Change, Expect)> = vec![
        (
            "healthy",
            Box::new(|_| {}),
            (State::Healthy, Action::None, None),
        ),
        (
            "lost",
            Box::new(|d| d.lost = true),
            (State::Unhealthy, Action::Reboot, Some("gpu_lost")),
        ),
        (
            "ecc",
            Box::new(|d| {
                d.ecc_errors = vec![
                    (EccKind::Uncorrected, EccScope::Volatile, 2),
                    (EccKind::Uncorrected, EccScope::Aggregate, 9),
                ]
            }),
            (
                State::Unhealthy,
                Action::ResetGpu,
                Some("uncorrectable_ecc"),
            ),
        ),
        (
            "aggregate ecc only",
            Box::new(|d| {
                d.ecc_errors = vec![
                    (EccKind::Uncorrected, EccScope::Volatile, 0),
                    (EccKind::Uncorrected, EccScope::Aggregate, 9),
                ]
            }),
            (State::Healthy, Action::None, None),
        ),
        (
            "remap pending",
            Box::new(|d| {
                d.remapped_rows = Some(RemappedRows {
                    pending: true,
                    ..RemappedRows::default()
                })
            }),
            (State::Degraded, Action::ResetGpu, Some("row_remap_pending")),
        ),
        (
            "remap failure",
            Box::new(|d| {
                d.remapped_rows = Some(RemappedRows {
                    failure: true,
                    ..RemappedRows::default()
                })
            }),
            (
                State::Unhealthy,
                Action::HardwareInspection,
                Some("row_remap_failure"),
            ),
        ),
        (
            "retired pages pending",
            Box::new(|d| d.retired_pages_pending = Some(true)),
            (
                State::Degraded,
                Action::ResetGpu,
                Some("retired_pages_pending"),
            ),
        ),
        (
            "too hot",
            Box::new(|d| d.temperature_gpu_celsius = Some(91.0)),
            (
                State::Degraded,
                Action::None,
                Some("over_slowdown_temperature"),
            ),
        ),
        (
            "hw slowdown",
            Box::new(|d| {
                d.throttle = Some(ThrottleReasons {
                    active: 0x40,
                    supported: 0x1FF,
                })
            }),
            (State::Degraded, Action::None, Some("hw_slowdown")),
        ),
        (
            "sw power cap is not hw slowdown",
            Box::new(|d| {
                d.throttle = Some(ThrottleReasons {
                    active: 0x4,
                    supported: 0x1FF,
                })
            }),
            (State::Healthy, Action::None, None),
        ),
        (
            "recovery 0",
            Box::new(|d| d.recovery_action = Some(0)),
            (State::Healthy, Action::None, None),
        ),
        (
            "recovery reset",
            Box::new(|d| d.recovery_action = Some(1)),
            (State::Unhealthy, Action::ResetGpu, Some("recovery_action")),
        ),
        (
            "recovery reboot",
            Box::new(|d| d.recovery_action = Some(2)),
            (State::Unhealthy, Action::Reboot, Some("recovery_action")),
        ),
        (
            "recovery drain p2p",
            Box::new(|d| d.recovery_action = Some(3)),
            (State::Degraded, Action::RestartApp, Some("recovery_action")),
        ),
        (
            "recovery drain and reset",
            Box::new(|d| d.recovery_action = Some(4)),
            (State::Unhealthy, Action::ResetGpu, Some("recovery_action")),
        ),
        (
            "most severe action wins",
            Box::new(|d| {
                d.remapped_rows = Some(RemappedRows {
                    failure: true,
                    pending: true,
                    ..RemappedRows::default()
                });
                d.recovery_action = Some(2);
            }),
            (
                State::Unhealthy,
                Action::HardwareInspection,
                Some("row_remap_pending"),
            ),
        ),
    ];
    for (name, change, expect) in cases {
        check(name, &eval_one(change, Vec::new(), &p), expect);
    }
}

#[test]
fn hw_slowdown_needs_the_ratio_over_the_window() {
    let p = Policy {
        hw_slowdown_ratio: 0.5,
        ..Policy::default()
    };
    let mut window = Vec::new();
    for i in 0..10u64 {
        let mut d = device(0);
        // Slowed in 4 of the last 10 points, and in older points out of the window.
        let slowed = i < 4;
        d.throttle = Some(ThrottleReasons {
            active: if slowed { 0x80 } else { 0 },
            supported: 0x1FF,
        });
        window.push(GpuWindowPoint::from(&sample(t(i * 10), vec![d])));
    }
    let s = sample(t(90), vec![device(0)]);
    let log = XidLog::default();
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &window,
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &input, &p, t(90));
    check(
        "40% < 50%",
        &h.gpus[0],
        (State::Healthy, Action::None, None),
    );
    let p = Policy {
        hw_slowdown_ratio: 0.4,
        ..p
    };
    let h = evaluate(&NodeHealth::initial(), &input, &p, t(90));
    check(
        "40% >= 40%",
        &h.gpus[0],
        (State::Degraded, Action::None, Some("hw_slowdown")),
    );
    assert_eq!(
        hw_slowdown_share(0, &window, Duration::from_secs(25), t(90)),
        Some(0.0)
    );
}

/// The share is per GPU index, also where a point lists GPUs out of index order or with gaps
/// (a GPU missing from a cycle): the lookup by position must not pick another GPU.
#[test]
fn hw_slowdown_share_finds_each_gpu_by_index_not_position() {
    let with = |index: u32, active: u64| {
        let mut d = device(index);
        d.throttle = Some(ThrottleReasons {
            active,
            supported: 0x1FF,
        });
        d
    };
    // Position 1 holds GPU 2 (GPU 1 is missing); GPU 1's index is at no position.
    let point = GpuWindowPoint::from(&sample(t(10), vec![with(0, 0), with(2, 0x80)]));
    let window = [point];
    let share = |index| hw_slowdown_share(index, &window, Duration::from_secs(60), t(20));
    assert_eq!(share(0), Some(0.0));
    assert_eq!(share(1), None);
    assert_eq!(share(2), Some(1.0));
}

/// Runs GPU 0 through a sequence of (time, device change, Xids) and returns each state.
fn run_sequence(steps: Vec<Step>, policy: &Policy) -> Vec<NodeHealth> {
    let mut health = NodeHealth::initial();
    let mut out = Vec::new();
    for (at, change, xids) in steps {
        let mut d = device(0);
        change(&mut d);
        let s = sample(t(at), vec![d, device(1)]);
        let window = vec![GpuWindowPoint::from(&s)];
        let log = XidLog {
            counts: xids,
            recent: Vec::new(),
        };
        let input = Input {
            status: GpuStatus::Sampled,
            sample: Some(&s),
            window: &window,
            xid: &log,
            nvml_stuck: None,
            clears: &[],
        };
        health = evaluate(&health, &input, policy, t(at));
        out.push(health.clone());
    }
    out
}

#[test]
fn reasons_stick_for_hold_time_after_the_cause_is_gone() {
    let p = Policy {
        hold_time: Duration::from_secs(100),
        ..Policy::default()
    };
    let ecc: Box<dyn Fn(&mut GpuDevice)> =
        Box::new(|d| d.ecc_errors = vec![(EccKind::Uncorrected, EccScope::Volatile, 1)]);
    let clean = || -> Box<dyn Fn(&mut GpuDevice)> { Box::new(|_| {}) };
    let states = run_sequence(
        vec![
            (0, clean(), vec![]),
            (10, ecc, vec![]),
            (11, clean(), vec![]),
            (109, clean(), vec![]),
            (110, clean(), vec![]),
        ],
        &p,
    );
    let g: Vec<State> = states.iter().map(|h| h.gpus[0].state).collect();
    assert_eq!(
        g,
        [
            State::Healthy,
            State::Unhealthy,
            State::Unhealthy,
            State::Unhealthy,
            State::Healthy
        ]
    );
    let held = &states[3].gpus[0];
    assert_eq!(held.reasons[0].code, ReasonCode::UncorrectableEcc);
    assert_eq!(held.reasons[0].since, t(10));
    assert_eq!(held.since, t(10));
    // Node = worst GPU; GPU 1 stays healthy throughout.
    let node: Vec<State> = states.iter().map(|h| h.state).collect();
    assert_eq!(node, g);
    assert!(states.iter().all(|h| h.gpus[1].state == State::Healthy));
    // Transitions: node unknown→healthy, GPUs unknown→healthy, then GPU 0 and node up and down.
    let last = &states[4].transitions;
    let gpu0: Vec<(State, State)> = last
        .iter()
        .filter(|t| t.gpu == Some(0))
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        gpu0,
        [
            (State::Unknown, State::Healthy),
            (State::Healthy, State::Unhealthy),
            (State::Unhealthy, State::Healthy)
        ]
    );
}

#[test]
fn xid_holds_from_its_last_occurrence() {
    let p = Policy {
        hold_time: Duration::from_secs(100),
        ..Policy::default()
    };
    let none = || -> Box<dyn Fn(&mut GpuDevice)> { Box::new(|_| {}) };
    let states = run_sequence(
        vec![
            (0, none(), vec![xid(0, 79, t(0))]),
            (99, none(), vec![xid(0, 79, t(0))]),
            (100, none(), vec![xid(0, 79, t(0))]),
        ],
        &p,
    );
    let g: Vec<State> = states.iter().map(|h| h.gpus[0].state).collect();
    assert_eq!(g, [State::Unhealthy, State::Unhealthy, State::Healthy]);
}

#[test]
fn lost_gpu_recovers_after_it_is_back_and_hold_time_passed() {
    let p = Policy {
        hold_time: Duration::from_secs(60),
        ..Policy::default()
    };
    let lost: Box<dyn Fn(&mut GpuDevice)> = Box::new(|d| d.lost = true);
    let back = || -> Box<dyn Fn(&mut GpuDevice)> { Box::new(|_| {}) };
    let states = run_sequence(
        vec![
            (0, back(), vec![]),
            (5, lost, vec![]),
            (6, back(), vec![]),
            (64, back(), vec![]),
            (65, back(), vec![]),
        ],
        &p,
    );
    let g: Vec<State> = states.iter().map(|h| h.gpus[0].state).collect();
    assert_eq!(
        g,
        [
            State::Healthy,
            State::Unhealthy,
            State::Unhealthy,
            State::Unhealthy,
            State::Healthy
        ]
    );
    assert_eq!(states[1].action, Action::Reboot);
}

#[test]
fn a_gpu_missing_from_the_sample_is_lost() {
    let p = Policy::default();
    let s = sample(t(0), vec![device(0), device(1)]);
    let log = XidLog::default();
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &[],
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &input, &p, t(0));
    let s = sample(t(1), vec![device(0)]);
    let input = Input {
        sample: Some(&s),
        ..input
    };
    let h = evaluate(&h, &input, &p, t(1));
    check(
        "missing",
        &h.gpus[1],
        (State::Unhealthy, Action::Reboot, Some("gpu_lost")),
    );
    assert_eq!(h.state, State::Unhealthy);
}

#[test]
fn node_is_the_worst_gpu_and_unknown_until_sampled() {
    let p = Policy::default();
    let log = XidLog {
        counts: vec![xid(1, 13, t(0)), xid(2, 48, t(0))],
        recent: Vec::new(),
    };
    let s = sample(t(0), vec![device(0), device(1), device(2)]);
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &[],
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &input, &p, t(0));
    let states: Vec<State> = h.gpus.iter().map(|g| g.state).collect();
    assert_eq!(states, [State::Healthy, State::Degraded, State::Unhealthy]);
    assert_eq!(
        (h.state, h.action),
        (State::Unhealthy, Action::HardwareInspection)
    );

    let init = Input {
        status: GpuStatus::Initializing,
        sample: None,
        window: &[],
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &init, &p, t(0));
    assert_eq!(h.state, State::Unknown);
    assert_eq!(h.reasons[0].code, ReasonCode::Initializing);
    let none = Input {
        status: GpuStatus::NoGpu,
        ..init
    };
    let h = evaluate(&h, &none, &p, t(1));
    assert_eq!(h.state, State::Unknown);
    assert_eq!(h.reasons.len(), 1);
    assert_eq!(h.reasons[0].code.label(), "no_gpu");
}

#[test]
fn an_xid_without_a_gpu_counts_for_the_node() {
    let p = Policy::default();
    let mut c = xid(0, 79, t(0));
    c.gpu_index = None;
    c.uuid.clear();
    let log = XidLog {
        counts: vec![c],
        recent: Vec::new(),
    };
    let s = sample(t(0), vec![device(0)]);
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &[],
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &input, &p, t(0));
    assert_eq!(h.gpus[0].state, State::Healthy);
    assert_eq!((h.state, h.action), (State::Unhealthy, Action::Reboot));
    // An Xid for a GPU this sample does not have counts for the node too.
    let log = XidLog {
        counts: vec![xid(7, 13, t(0))],
        recent: Vec::new(),
    };
    let input = Input { xid: &log, ..input };
    let h = evaluate(&NodeHealth::initial(), &input, &p, t(0));
    assert_eq!(h.gpus[0].state, State::Healthy);
    assert_eq!(h.state, State::Degraded);
    assert_eq!(h.reasons[0].code.label(), "xid_13");
}

#[test]
fn transitions_are_bounded() {
    let p = Policy {
        hold_time: Duration::from_secs(1),
        ..Policy::default()
    };
    let mut h = NodeHealth::initial();
    let log = XidLog::default();
    for i in 0..200u64 {
        let mut d = device(0);
        d.lost = i % 2 == 0;
        let s = sample(t(i * 10), vec![d]);
        let input = Input {
            status: GpuStatus::Sampled,
            sample: Some(&s),
            window: &[],
            xid: &log,
            nvml_stuck: None,
            clears: &[],
        };
        h = evaluate(&h, &input, &p, t(i * 10));
    }
    assert_eq!(h.transitions.len(), MAX_TRANSITIONS);
}

#[test]
fn overrides_parse_and_bad_ones_name_the_key() {
    let mut c = HealthConfig::default();
    c.xid_overrides
        .insert("94".into(), "degraded:restart_app".into());
    c.xid_overrides.insert("13".into(), "ignore".into());
    c.xid_overrides
        .insert("48".into(), "unhealthy:hardware_inspection".into());
    let p = Policy::from_config(&c).unwrap();
    assert_eq!(p.xid(13).0, Severity::Ignore);
    assert_eq!(p.xid(48).1, Action::HardwareInspection);
    for (k, v) in [
        ("x", "ignore"),
        ("94", "fatal:reboot"),
        ("94", "degraded"),
        ("94", "degraded:pray"),
    ] {
        let mut c = HealthConfig::default();
        c.xid_overrides.insert(k.into(), v.into());
        let e = Policy::from_config(&c).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("health.xid_overrides"), "{k}={v}");
    }
    let c = HealthConfig {
        hw_slowdown_ratio: 0.0,
        ..HealthConfig::default()
    };
    assert!(Policy::from_config(&c).is_err());
}

#[test]
fn policy_rows_are_sorted_and_disjoint() {
    for w in XID_POLICY.windows(2) {
        assert!(w[0].first <= w[0].last && w[0].last < w[1].first, "{w:?}");
    }
}

#[test]
fn a_hung_nvml_makes_every_gpu_unhealthy_after_the_bound_and_is_held() {
    let p = Policy {
        nvml_stale_after: Duration::from_secs(30),
        ..Policy::default()
    };
    let log = XidLog::default();
    let s = sample(t(0), vec![device(0), device(1)]);
    let input = |stuck: Option<u64>| Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &[],
        xid: &log,
        nvml_stuck: stuck.map(Duration::from_secs),
        clears: &[],
    };
    // A slow stretch shorter than the bound: the last sample still judges the GPUs.
    let h = evaluate(&NodeHealth::initial(), &input(Some(29)), &p, t(29));
    assert_eq!(h.state, State::Healthy);
    let h = evaluate(&h, &input(Some(30)), &p, t(30));
    assert_eq!((h.state, h.action), (State::Unhealthy, Action::Reboot));
    for g in &h.gpus {
        assert_eq!(g.state, State::Unhealthy);
        assert_eq!(g.reasons[0].code.label(), "nvml_hung");
        assert!(
            g.reasons[0].detail.contains("30s"),
            "{}",
            g.reasons[0].detail
        );
    }
    assert!(h.reasons.is_empty(), "the GPUs carry it: {:?}", h.reasons);
    // NVML answers again: held for hold_time, like any other reason, then gone.
    let h = evaluate(&h, &input(None), &p, t(31));
    assert_eq!(h.state, State::Unhealthy);
    let later = t(31) + p.hold_time;
    let h = evaluate(&h, &input(None), &p, later);
    assert_eq!(h.state, State::Healthy);
}

#[test]
fn a_hang_before_any_sample_is_a_node_reason_not_no_gpu() {
    let p = Policy::default();
    let log = XidLog::default();
    let input = |stuck: u64| Input {
        status: GpuStatus::NoGpu,
        sample: None,
        window: &[],
        xid: &log,
        nvml_stuck: Some(Duration::from_secs(stuck)),
        clears: &[],
    };
    let h = evaluate(&NodeHealth::initial(), &input(1), &p, t(1));
    assert_eq!(h.state, State::Unknown);
    assert_eq!(h.reasons[0].code, ReasonCode::NoGpu);
    let stuck = p.nvml_stale_after.as_secs();
    let h = evaluate(&h, &input(stuck), &p, t(stuck));
    assert_eq!((h.state, h.action), (State::Unhealthy, Action::Reboot));
    assert_eq!(h.reasons.len(), 1, "{:?}", h.reasons);
    assert_eq!(h.reasons[0].code.label(), "nvml_hung");
}

#[test]
fn a_gpu_missing_from_the_device_list_says_so() {
    let h = eval_one(
        |d| {
            d.lost = true;
            d.missing = true;
        },
        Vec::new(),
        &Policy::default(),
    );
    assert_eq!((h.state, h.action), (State::Unhealthy, Action::Reboot));
    assert_eq!(h.reasons[0].code, ReasonCode::GpuLost);
    assert_eq!(h.reasons[0].detail, "missing from the device list");
}

/// One evaluation of GPU 0 with these recent Xid occurrences `(xid, detail)` at `t(0)`.
fn eval_with_events(events: &[(u64, &str)], policy: &Policy) -> GpuHealth {
    use crate::model::{XidEvent, XidSource};
    let s = sample(t(0), vec![device(0)]);
    let window = vec![GpuWindowPoint::from(&s)];
    let mut counts: Vec<XidCount> = Vec::new();
    for (code, _) in events {
        match counts.iter_mut().find(|c| c.xid == *code) {
            Some(c) => c.count += 1,
            None => counts.push(xid(0, *code, t(0))),
        }
    }
    let log = XidLog {
        counts,
        recent: events
            .iter()
            .map(|(code, detail)| XidEvent {
                at: t(0),
                gpu_index: Some(0),
                uuid: "GPU-0".to_owned(),
                pci_bus_id: String::new(),
                xid: *code,
                sources: vec![XidSource::Kmsg],
                detail: (*detail).to_owned(),
            })
            .collect(),
    };
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &window,
        xid: &log,
        nvml_stuck: None,
        clears: &[],
    };
    evaluate(&NodeHealth::initial(), &input, policy, t(0)).gpus[0].clone()
}

/// NVLink5 Xids carry the driver's own severity (the kernel-log lines of NVIDIA's Xid catalog
/// and leptonai/gpud PR #1174): `Nonfatal` must not drain a healthy GPU, `Fatal` resets it,
/// and an occurrence without text (an NVML event) keeps the catalog's default.
#[test]
fn nvlink5_xids_follow_the_severity_the_driver_printed() {
    let p = Policy::default();
    let nonfatal = "RLW_REMAP Nonfatal XC0 i0 Link 05 (0x00000000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)";
    let fatal = "NETIR_LINK_DOWN Fatal XC1 i0 Link 09 (0x00000000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)";
    type Case<'a> = (&'a str, Vec<(u64, &'a str)>, Expect<'a>);
    let cases: [Case; 5] = [
        (
            "one nonfatal",
            vec![(145, nonfatal)],
            (State::Degraded, Action::None, Some("xid_145")),
        ),
        (
            "SAW_MVB nonfatal",
            vec![(
                147,
                "SAW_MVB Nonfatal XC0 i0 Link 07 (0x00000001 0x0 0x0 0x0 0x0 0x0)",
            )],
            (State::Degraded, Action::None, Some("xid_147")),
        ),
        (
            "fatal",
            vec![(149, fatal)],
            (State::Unhealthy, Action::ResetGpu, Some("xid_149")),
        ),
        (
            "nonfatal then fatal of the same Xid",
            vec![(145, nonfatal), (145, "RLW_REMAP Fatal XC0 i0 Link 05")],
            (State::Unhealthy, Action::ResetGpu, Some("xid_145")),
        ),
        (
            "no text (NVML event)",
            vec![(146, "")],
            (State::Unhealthy, Action::ResetGpu, Some("xid_146")),
        ),
    ];
    for (name, events, expect) in cases {
        check(name, &eval_with_events(&events, &p), expect);
    }
    // An operator's override wins over the printed severity.
    let mut overridden = Policy::default();
    overridden
        .xid_overrides
        .insert(145, (Severity::Unhealthy, Action::ResetGpu));
    check(
        "overridden",
        &eval_with_events(&[(145, nonfatal)], &overridden),
        (State::Unhealthy, Action::ResetGpu, Some("xid_145")),
    );
    // A word that merely contains "fatal" is not a severity.
    assert!(!crate::model::says_nonfatal("Fatal XC0"));
    assert!(crate::model::says_nonfatal("RLW_RSP Nonfatal XC0"));
}

/// An NVLink that was active and went inactive is a reason (leptonai/gpud #1085); one that
/// was never active (an unused port) is not.
#[test]
fn an_nvlink_that_went_inactive_is_a_reason() {
    use crate::model::NvLinkReadings;
    let p = Policy::default();
    let with_links = |states: &[(u32, bool)]| {
        let mut d = device(0);
        d.nvlinks = states
            .iter()
            .map(|(link, active)| NvLinkReadings {
                link: *link,
                active: *active,
                errors: [None; 4],
            })
            .collect();
        d
    };
    let step = |prev: &NodeHealth, d: GpuDevice, at: SystemTime| {
        let s = sample(at, vec![d]);
        let window = vec![GpuWindowPoint::from(&s)];
        let log = XidLog::default();
        let input = Input {
            status: GpuStatus::Sampled,
            sample: Some(&s),
            window: &window,
            xid: &log,
            nvml_stuck: None,
            clears: &[],
        };
        evaluate(prev, &input, &p, at)
    };
    // Links 0 and 1 active, 2 never trained.
    let h = step(
        &NodeHealth::initial(),
        with_links(&[(0, true), (1, true), (2, false)]),
        t(0),
    );
    check("all up", &h.gpus[0], (State::Healthy, Action::None, None));
    assert_eq!(h.gpus[0].nvlinks_seen_active, 0b11);
    let h = step(&h, with_links(&[(0, true), (1, false), (2, false)]), t(10));
    check(
        "link 1 down",
        &h.gpus[0],
        (State::Unhealthy, Action::ResetGpu, Some("nvlink_down")),
    );
    let detail = &h.gpus[0].reasons[0].detail;
    assert!(detail.contains("NVLink 1 went inactive"), "{detail}");
    // Readings off: nothing is judged, nothing is forgotten.
    let h = step(&h, with_links(&[]), t(20));
    assert_eq!(h.gpus[0].nvlinks_seen_active, 0b11);
}

/// Evaluates GPUs 0 and 1 at `t(at)` from `previous` with these Xids and clears.
fn eval_clears(
    previous: &NodeHealth,
    at: u64,
    xids: Vec<XidCount>,
    clears: &[Clear],
    ecc_on_gpu1: bool,
) -> NodeHealth {
    let mut d1 = device(1);
    if ecc_on_gpu1 {
        d1.ecc_errors = vec![(EccKind::Uncorrected, EccScope::Volatile, 1)];
    }
    let s = sample(t(at), vec![device(0), d1]);
    let window = vec![GpuWindowPoint::from(&s)];
    let log = XidLog {
        counts: xids,
        recent: Vec::new(),
    };
    let input = Input {
        status: GpuStatus::Sampled,
        sample: Some(&s),
        window: &window,
        xid: &log,
        nvml_stuck: None,
        clears,
    };
    evaluate(previous, &input, &Policy::default(), t(at))
}

#[test]
fn a_clear_drops_reasons_seen_before_it_and_later_ones_count_again() {
    // Xid 79 on GPU 0 at t(10), an Xid that names no GPU (the node) at t(10), ECC on GPU 1.
    let node_xid = XidCount {
        gpu_index: None,
        uuid: String::new(),
        ..xid(0, 79, t(10))
    };
    let xids = vec![xid(0, 79, t(10)), node_xid];
    let h = eval_clears(&NodeHealth::initial(), 10, xids.clone(), &[], true);
    assert_eq!(h.gpus[0].state, State::Unhealthy);
    // Held long after (hold_time is 24 h by default): sticky.
    let h = eval_clears(&h, 100, xids.clone(), &[], true);
    assert_eq!(h.gpus[0].state, State::Unhealthy);

    // Clearing GPU 0 at t(150): GPU 0 healthy, GPU 1 (not cleared) and the node keep theirs.
    let gpu0 = Clear {
        at: t(150),
        gpu: Some((0, "GPU-0".to_owned())),
        by: "test".to_owned(),
    };
    let h = eval_clears(&h, 200, xids.clone(), std::slice::from_ref(&gpu0), true);
    assert_eq!(h.gpus[0].state, State::Healthy, "{:?}", h.gpus[0].reasons);
    assert_eq!(h.gpus[1].state, State::Unhealthy);
    assert!(!h.reasons.is_empty());

    // `all` at t(250): a cause that is still there (ECC on GPU 1, observed now) stays; the
    // node's old Xid goes.
    let all = Clear {
        at: t(250),
        gpu: None,
        by: "test".to_owned(),
    };
    let clears = [gpu0, all];
    let h = eval_clears(&h, 300, xids.clone(), &clears, true);
    assert!(h.reasons.is_empty(), "{:?}", h.reasons);
    assert_eq!(h.gpus[1].state, State::Unhealthy);
    // The ECC was seen after that clear, so it is held even once it is gone; a clear after
    // the repair ends it.
    let h = eval_clears(&h, 310, xids.clone(), &clears, false);
    assert_eq!(h.gpus[1].state, State::Unhealthy);
    let clears = [
        clears[0].clone(),
        clears[1].clone(),
        Clear {
            at: t(320),
            gpu: Some((1, "GPU-1".to_owned())),
            by: "test".to_owned(),
        },
    ];
    let h = eval_clears(&h, 330, xids.clone(), &clears, false);
    assert_eq!(h.state, State::Healthy, "{h:?}");

    // A new Xid after the clear counts again.
    let mut later = xids;
    later[0] = xid(0, 79, t(400));
    let h = eval_clears(&h, 410, later, &clears, false);
    assert_eq!(h.gpus[0].state, State::Unhealthy);
}
