//! The score's tests: one table of ledgers and what their window must score, all through
//! [`check`]; the claims; and a property test that no tally makes the total NaN or leave 0–100.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::config::{HumanDuration, ScoreWeights};
use crate::model::{
    Bucket, GpuDevice, GpuIdentity, GpuSample, JobOutcome, LEDGER_BINS, ProbeState, ServerTally,
    ThrottleReason, bin_of,
};

/// The end of every test window: a multiple of an hour, so minute and hour buckets line up.
const END: u64 = 1_728_000_000;
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

use Component::{
    Availability as A, Completion as C, Health as H, Latency as L, Recovery as R, Throttle as T,
};

/// What a probe, a GPU and no wrapped job reach: every sub-score but the job's part of R.
fn reach() -> Reach {
    Reach {
        mode: Mode::Embedded,
        probes: 1,
        inference_probes: 1,
        metrics_probes: 1,
        gpus: true,
        job: false,
    }
}

fn state(s: ProbeState) -> usize {
    ProbeState::ALL.iter().position(|x| *x == s).unwrap()
}

/// A fully observed bucket of `span` seconds starting `ago` seconds before [`END`], where all
/// went well: a check every 15 s (up), a request a minute (within the SLOs, 100 tokens), one GPU
/// sampled healthy throughout and busy half the time.
fn healthy(ago: u64, span: u64) -> Bucket {
    let mut b = Bucket::new(END - ago, span);
    b.observed_seconds = span;
    let p = b.probe("vllm");
    p.checks[state(ProbeState::Up)] = span / 15;
    let requests = span / MINUTE;
    p.requests_ok = requests;
    p.requests_within_slo = requests;
    p.output_tokens = 100 * requests;
    p.ttft[bin_of(0.2)] = requests;
    p.e2e[bin_of(2.0)] = requests;
    let g = b.gpu("GPU-0");
    g.sampled_seconds = span;
    g.healthy_seconds = span;
    g.busy_seconds = span / 2;
    b
}

/// The window's hour as 60 healthy minute buckets, each changed by `tweak(minute, bucket)`.
fn minutes(tweak: impl Fn(u64, &mut Bucket)) -> Vec<Bucket> {
    (0..60)
        .map(|i| {
            let mut b = healthy(HOUR - i * MINUTE, MINUTE);
            tweak(i, &mut b);
            b
        })
        .collect()
}

/// One healthy bucket covering the whole window of `len` seconds, changed by `tweak`.
fn one(len: u64, tweak: impl FnOnce(&mut Bucket)) -> Vec<Bucket> {
    let mut b = healthy(len, len);
    tweak(&mut b);
    vec![b]
}

/// Bins holding `n` observations of `seconds`.
fn bins(n: u64, seconds: f64) -> [u64; LEDGER_BINS] {
    let mut b = [0; LEDGER_BINS];
    b[bin_of(seconds)] = n;
    b
}

struct Expected {
    name: &'static str,
    /// The scene: what the agent reaches, and the window `[end − len, end)`.
    reach: Reach,
    end: u64,
    len: u64,
    /// Q on 0–100, always compared.
    total: Option<f64>,
    /// Sub-scores on 0–100.
    scores: Vec<(Component, f64)>,
    unmeasured: Vec<(Component, Unmeasured)>,
    gates: Vec<(&'static str, Option<bool>)>,
    coverage: Option<f64>,
    reweighted: Option<bool>,
    /// `(key, value)` pairs that must be in a component's detail.
    detail: Vec<(Component, &'static str, &'static str)>,
    /// Per request, per 1M tokens, and both at SLO; `Some(None)`: no cost at all.
    cost: Option<Option<[Option<f64>; 4]>>,
}

impl Default for Expected {
    fn default() -> Self {
        Self {
            name: "",
            reach: reach(),
            end: END,
            len: HOUR,
            total: None,
            scores: Vec::new(),
            unmeasured: Vec::new(),
            gates: Vec::new(),
            coverage: None,
            reweighted: None,
            detail: Vec::new(),
            cost: None,
        }
    }
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 0.01
}

/// Scores `ledger` over the expected window and compares. Values within 0.01 on 0–100.
fn check(ledger: &[Bucket], config: &ScoreConfig, expected: Expected) {
    let name = expected.name;
    let evidence = Evidence::over(ledger, expected.end, expected.len);
    let window = ScoreWindow::ALL
        .into_iter()
        .find(|w| w.seconds() == expected.len)
        .unwrap_or(ScoreWindow::H1);
    let got = evaluate(window, &evidence, &expected.reach, config);
    let shown = || format!("{name}: {got:#?}");
    match (got.total, expected.total) {
        (Some(g), Some(w)) => assert!(close(g, w), "{name}: total {g}, want {w}\n{}", shown()),
        (g, w) => assert_eq!(g, w, "{name}: total\n{}", shown()),
    }
    let by = |c: Component| &got.components[Component::ALL.iter().position(|x| *x == c).unwrap()];
    for (c, want) in &expected.scores {
        let v = by(*c).value;
        assert!(
            v.is_some_and(|v| close(v, *want)),
            "{name}: {} is {v:?}, want {want}\n{}",
            c.as_str(),
            shown()
        );
    }
    for (c, want) in &expected.unmeasured {
        assert_eq!(
            by(*c).unmeasured,
            Some(*want),
            "{name}: {}\n{}",
            c.as_str(),
            shown()
        );
        assert_eq!(by(*c).value, None, "{name}: {}", c.as_str());
    }
    for (gate, want) in &expected.gates {
        let g = got.gates.iter().find(|g| g.name == *gate).unwrap();
        assert_eq!(g.open, *want, "{name}: gate {gate}: {}", g.detail);
    }
    if let Some(want) = expected.coverage {
        assert!(
            close(got.coverage, want),
            "{name}: coverage {}",
            got.coverage
        );
    }
    if let Some(want) = expected.reweighted {
        assert_eq!(got.reweighted, want, "{name}: reweighted\n{}", shown());
    }
    for (c, key, want) in &expected.detail {
        let d = &by(*c).detail;
        assert!(
            d.iter().any(|(k, v)| k == key && v.to_string() == *want),
            "{name}: {} detail lacks {key}={want}: {d:?}",
            c.as_str()
        );
    }
    if let Some(want) = expected.cost {
        let got = got.cost.as_ref().map(|c| {
            [
                c.per_request,
                c.per_million_output_tokens,
                c.per_request_at_slo,
                c.per_million_output_tokens_at_slo,
            ]
        });
        let same = |g: &Option<f64>, w: &Option<f64>| match (g, w) {
            (Some(g), Some(w)) => (g - w).abs() <= 1e-3 * w.abs().max(1e-9),
            (g, w) => g == w,
        };
        let ok = match (&got, &want) {
            (Some(g), Some(w)) => g.iter().zip(w).all(|(g, w)| same(g, w)),
            (g, w) => g.is_none() && w.is_none(),
        };
        assert!(ok, "{name}: cost {got:?}, want {want:?}");
    }
    // Whatever the case: six components in order, effective weights summing to 1 over the
    // measured ones, and normalised weights summing to 1.
    let order: Vec<_> = got.components.iter().map(|c| c.component).collect();
    assert_eq!(order, Component::ALL, "{name}");
    let effective: f64 = got.components.iter().map(|c| c.effective_weight).sum();
    let measured = got.components.iter().any(|c| c.value.is_some());
    assert!(
        !measured || (effective - 1.0).abs() < 1e-9,
        "{name}: Σ effective {effective}"
    );
    let weights: f64 = got.components.iter().map(|c| c.weight).sum();
    assert!((weights - 1.0).abs() < 1e-9, "{name}: Σ weight {weights}");
}

fn all_100() -> Vec<(Component, f64)> {
    Component::ALL.iter().map(|c| (*c, 100.0)).collect()
}

#[test]
fn a_healthy_hour_scores_100() {
    check(
        &minutes(|_, _| {}),
        &ScoreConfig::default(),
        Expected {
            name: "healthy",
            total: Some(100.0),
            scores: all_100(),
            gates: vec![("gpu_critical", Some(true)), ("availability", Some(true))],
            coverage: Some(1.0),
            reweighted: Some(false),
            detail: vec![(L, "source", "probe"), (C, "source", "probe")],
            ..Expected::default()
        },
    );
}

#[test]
fn what_cannot_be_measured_is_left_out_and_said() {
    let config = ScoreConfig::default();
    let no_probes = Reach {
        probes: 0,
        inference_probes: 0,
        metrics_probes: 0,
        ..reach()
    };
    check(
        &minutes(|_, b| b.probes.clear()),
        &config,
        Expected {
            name: "no probes",
            reach: no_probes,
            total: Some(100.0),
            scores: vec![(H, 100.0), (T, 100.0)],
            unmeasured: [A, L, C, R]
                .map(|c| (c, Unmeasured::NotMeasurable))
                .to_vec(),
            gates: vec![("availability", None), ("gpu_critical", Some(true))],
            reweighted: Some(true),
            ..Expected::default()
        },
    );
    check(
        &minutes(|_, b| b.gpus.clear()),
        &config,
        Expected {
            name: "no GPU",
            reach: Reach {
                gpus: false,
                ..reach()
            },
            total: Some(100.0),
            scores: vec![(A, 100.0), (L, 100.0), (C, 100.0), (R, 100.0)],
            unmeasured: [H, T].map(|c| (c, Unmeasured::NotMeasurable)).to_vec(),
            gates: vec![("gpu_critical", None), ("availability", Some(true))],
            reweighted: Some(true),
            ..Expected::default()
        },
    );
    check(
        &[],
        &config,
        Expected {
            name: "empty window",
            total: None,
            unmeasured: Component::ALL.map(|c| (c, Unmeasured::NoEvidence)).to_vec(),
            gates: vec![("gpu_critical", None), ("availability", None)],
            coverage: Some(0.0),
            reweighted: Some(true),
            ..Expected::default()
        },
    );
    // Nothing reaches anything: still no total, and nothing panics.
    check(
        &[],
        &config,
        Expected {
            name: "nothing reached",
            reach: Reach::default(),
            total: None,
            unmeasured: Component::ALL
                .map(|c| (c, Unmeasured::NotMeasurable))
                .to_vec(),
            ..Expected::default()
        },
    );
}

#[test]
fn unobserved_time_and_clock_trouble_are_not_imputed() {
    let config = ScoreConfig::default();
    // The clock stepped back: a bucket stamped after the window's end (100 down checks) is
    // left out; one that saw the step (2 of its 40 checks down) still counts.
    let mut ledger = vec![healthy(HOUR, 3000)];
    let mut stepped = healthy(600, 600);
    stepped.clock_steps_back = 1;
    stepped.probe("vllm").checks[state(ProbeState::Up)] = 38;
    stepped.probe("vllm").checks[state(ProbeState::Down)] = 2;
    ledger.push(stepped);
    let mut future = Bucket::new(END + MINUTE, MINUTE);
    future.observed_seconds = 60;
    future.probe("vllm").checks[state(ProbeState::Down)] = 100;
    ledger.push(future);
    check(
        &ledger,
        &config,
        Expected {
            name: "clock stepped back",
            total: Some(99.75),
            scores: vec![(A, 99.17)],
            coverage: Some(1.0),
            ..Expected::default()
        },
    );
    // The agent was down for the middle 20 minutes: coverage 2/3, and A is judged over the
    // checks it made (2 down of 160), not over imputed ones.
    let mut before = healthy(HOUR, 1200);
    before.probe("vllm").checks[state(ProbeState::Up)] = 80;
    let mut after = healthy(1200, 1200);
    after.agent_starts = 1;
    after.probe("vllm").checks[state(ProbeState::Up)] = 78;
    after.probe("vllm").checks[state(ProbeState::Down)] = 2;
    check(
        &[before, after],
        &config,
        Expected {
            name: "agent restart gap",
            total: Some(99.62),
            scores: vec![(A, 98.75), (R, 100.0)],
            coverage: Some(2.0 / 3.0),
            reweighted: Some(false),
            ..Expected::default()
        },
    );
    // The server restarted: its counters began again (the value after the reset is the
    // delta) and both buckets add up: 198 of 200.
    let ledger = minutes(|i, b| {
        let server = ServerTally {
            requests_ok: Some(if i == 0 {
                150
            } else if i == 1 {
                48
            } else {
                0
            }),
            requests_failed: Some(if i == 1 { 2 } else { 0 }),
            counter_resets: u64::from(i == 1),
            ..ServerTally::default()
        };
        b.probe("vllm").server = Some(server);
    });
    check(
        &ledger,
        &config,
        Expected {
            name: "counter reset",
            total: Some(99.8),
            scores: vec![(C, 99.0)],
            detail: vec![
                (C, "source", "server"),
                (C, "counter_resets", "1"),
                (L, "source", "probe"),
            ],
            ..Expected::default()
        },
    );
}

#[test]
fn availability_counts_loading_and_skips_start_up() {
    let config = ScoreConfig::default();
    let checks = |up: u64, loading: u64, starting: u64, down: u64| {
        one(HOUR, move |b| {
            let p = b.probe("vllm");
            p.checks = [0; 5];
            p.checks[state(ProbeState::Up)] = up;
            p.checks[state(ProbeState::Loading)] = loading;
            p.checks[state(ProbeState::Starting)] = starting;
            p.checks[state(ProbeState::Down)] = down;
        })
    };
    check(
        &checks(90, 10, 100, 0),
        &config,
        Expected {
            name: "loading is bad, starting left out",
            total: Some(96.89),
            scores: vec![(A, 90.0)],
            gates: vec![("availability", Some(true))],
            ..Expected::default()
        },
    );
    check(
        &checks(85, 0, 0, 15),
        &config,
        Expected {
            name: "availability gate",
            total: Some(0.0),
            scores: vec![(A, 85.0), (L, 100.0)],
            gates: vec![("availability", Some(false))],
            ..Expected::default()
        },
    );
    check(
        &checks(0, 0, 240, 0),
        &config,
        Expected {
            name: "only start-up",
            total: Some(100.0),
            unmeasured: vec![(A, Unmeasured::NoEvidence)],
            gates: vec![("availability", None)],
            reweighted: Some(true),
            ..Expected::default()
        },
    );
}

#[test]
fn latency_prefers_the_server_histograms_and_completion_its_counters() {
    let config = ScoreConfig::default();
    // Server histograms: 990 of 1000 within the TTFT SLO, 950 of 1000 within the latency SLO:
    // the worse marginal, 0.95, over the objective 0.99.
    let server = one(HOUR, |b| {
        b.probe("vllm").server = Some(ServerTally {
            ttft: Some(bins(1000, 0.2)),
            e2e: Some(bins(1000, 2.0)),
            ttft_within_slo: Some(990.0),
            e2e_within_slo: Some(950.0),
            ..ServerTally::default()
        });
    });
    check(
        &server,
        &config,
        Expected {
            name: "L from server histograms",
            total: Some(98.97),
            scores: vec![(L, 95.96)],
            detail: vec![
                (L, "source", "server"),
                (L, "ttft_attainment", "0.99"),
                (L, "e2e_attainment", "0.95"),
            ],
            ..Expected::default()
        },
    );
    // Histograms without SLO counts (or empty) leave L to the synthetic requests: 90 of 100.
    let probe = one(HOUR, |b| {
        let p = b.probe("vllm");
        (p.requests_ok, p.requests_failed, p.requests_within_slo) = (95, 5, 90);
        p.server = Some(ServerTally {
            ttft: Some(bins(0, 0.2)),
            ttft_within_slo: Some(0.0),
            e2e: Some(bins(10, 2.0)),
            ..ServerTally::default()
        });
    });
    check(
        &probe,
        &config,
        Expected {
            name: "L from synthetic requests",
            total: Some(96.65),
            scores: vec![(L, 90.91), (C, 95.0)],
            detail: vec![(L, "source", "probe"), (C, "source", "probe")],
            ..Expected::default()
        },
    );
    // Under completion_min_requests the server's counters give way to the synthetic requests.
    let few = one(HOUR, |b| {
        let p = b.probe("vllm");
        (p.requests_ok, p.requests_failed, p.requests_within_slo) = (9, 1, 9);
        p.server = Some(ServerTally {
            requests_ok: Some(50),
            requests_failed: Some(0),
            ..ServerTally::default()
        });
    });
    check(
        &few,
        &config,
        Expected {
            name: "C falls back to the probe",
            scores: vec![(C, 90.0), (L, 90.91)],
            total: Some(95.61),
            detail: vec![(C, "source", "probe")],
            ..Expected::default()
        },
    );
    // A server without a failure counter cannot give C (it would read 100 %).
    let no_failures = one(HOUR, |b| {
        b.probe("vllm").server = Some(ServerTally {
            requests_ok: Some(5000),
            ..ServerTally::default()
        });
    });
    check(
        &no_failures,
        &config,
        Expected {
            name: "C needs both server counters",
            total: Some(100.0),
            detail: vec![(C, "source", "probe")],
            ..Expected::default()
        },
    );
}

#[test]
fn throttling_counts_only_busy_hardware_time() {
    let config = ScoreConfig::default();
    check(
        &one(HOUR, |b| {
            let g = b.gpu("GPU-0");
            (g.busy_seconds, g.throttled_busy_seconds) = (1000, 100);
            g.throttle_reasons = vec![(ThrottleReason::HwThermalSlowdown, 100)];
        }),
        &config,
        Expected {
            name: "10 % of busy time throttled",
            total: Some(93.3),
            scores: vec![(T, 50.0)],
            detail: vec![
                (T, "throttled_share", "0.1"),
                (T, "hw_thermal_slowdown", "100"),
            ],
            ..Expected::default()
        },
    );
    check(
        &one(HOUR, |b| {
            let g = b.gpu("GPU-0");
            (g.busy_seconds, g.throttled_busy_seconds) = (1800, 0);
            g.throttle_reasons = vec![(ThrottleReason::SwPowerCap, 1800)];
        }),
        &config,
        Expected {
            name: "SW power cap is reported, not penalised",
            total: Some(100.0),
            scores: vec![(T, 100.0)],
            detail: vec![(T, "sw_power_cap", "1800")],
            ..Expected::default()
        },
    );
    check(
        &one(HOUR, |b| {
            let g = b.gpu("GPU-0");
            g.busy_seconds = 0;
            g.throttle_reasons = vec![(ThrottleReason::GpuIdle, 3600)];
        }),
        &config,
        Expected {
            name: "an idle GPU shows no throttling",
            total: Some(100.0),
            scores: vec![(H, 100.0)],
            unmeasured: vec![(T, Unmeasured::NoEvidence)],
            reweighted: Some(true),
            ..Expected::default()
        },
    );
}

#[test]
fn the_critical_gate_holds_after_the_condition_clears() {
    let config = ScoreConfig::default();
    let critical_at = |minute: u64| {
        minutes(move |i, b| {
            if i == minute {
                let g = b.gpu("GPU-0");
                (g.healthy_seconds, g.unhealthy_seconds, g.critical_seconds) = (30, 30, 30);
            }
        })
    };
    let case = |name, minute, open, total| {
        check(
            &critical_at(minute),
            &config,
            Expected {
                name,
                total: Some(total),
                scores: vec![(H, 100.0 * (1.0 - 30.0 / 3600.0))],
                gates: vec![("gpu_critical", Some(open))],
                ..Expected::default()
            },
        )
    };
    // Hold 15 min: a critical minute ending 9 min before the end holds the gate closed…
    case("critical 9 min ago", 50, false, 0.0);
    // …as does one ending 14 min before; 15 min before, the hold has just run out.
    case("critical 14 min ago", 45, false, 0.0);
    case("critical 15 min ago", 44, true, 99.92);
    case("critical 59 min ago", 0, true, 99.92);
    // A critical Xid without an unhealthy second closes it too.
    check(
        &minutes(|i, b| b.gpu("GPU-0").critical_xids = u64::from(i == 59)),
        &config,
        Expected {
            name: "critical Xid",
            total: Some(0.0),
            scores: vec![(H, 100.0)],
            gates: vec![("gpu_critical", Some(false))],
            ..Expected::default()
        },
    );
}

#[test]
fn warnings_per_day_have_an_observed_time_floor() {
    let config = ScoreConfig::default();
    check(
        &one(DAY, |b| {
            let g = b.gpu("GPU-0");
            g.warning_xids = 1;
            (g.healthy_seconds, g.unhealthy_seconds) = (DAY - 864, 864);
        }),
        &config,
        Expected {
            name: "one warning a day, 1 % unhealthy",
            len: DAY,
            total: Some(98.85),
            scores: vec![(H, 89.1)],
            detail: vec![(H, "warnings_per_day", "1")],
            ..Expected::default()
        },
    );
    // Five minutes with one warning read as 1 a day (the 1 day floor), not 288: one event
    // must not zero the live score.
    check(
        &one(300, |b| b.gpu("GPU-0").warning_xids = 1),
        &config,
        Expected {
            name: "one warning in 5 minutes",
            len: 300,
            total: Some(100.0 * 0.9_f64.powf(0.1)),
            scores: vec![(H, 90.0)],
            gates: vec![("gpu_critical", Some(true))],
            detail: vec![(H, "warnings_per_day", "1")],
            ..Expected::default()
        },
    );
    // Eleven in 5 minutes: past the limit of 10 a day even without extrapolation.
    check(
        &one(300, |b| b.gpu("GPU-0").warning_xids = 11),
        &config,
        Expected {
            name: "eleven warnings in 5 minutes",
            len: 300,
            total: Some(0.0),
            scores: vec![(H, 0.0)],
            detail: vec![(H, "warnings_per_day", "11")],
            ..Expected::default()
        },
    );
}

#[test]
fn recovery_weighs_mttr_and_incidents_per_day() {
    let config = ScoreConfig::default();
    // A probe outage of 60 s and a job failure recovered in 120 s: MTTR 90 s.
    let incidents = |len: u64| {
        one(len, |b| {
            let p = b.probe("vllm");
            (p.outages_started, p.outages_recovered) = (1, 1);
            (p.recovery_seconds_sum, p.recovery_seconds_max) = (60.0, 60.0);
            b.job.outcomes[JobOutcome::ALL
                .iter()
                .position(|o| *o == JobOutcome::Failure)
                .unwrap()] = 1;
            b.job.outcomes[JobOutcome::ALL
                .iter()
                .position(|o| *o == JobOutcome::Stopped)
                .unwrap()] = 3;
            (
                b.job.recoveries,
                b.job.recovery_seconds_sum,
                b.job.recovery_seconds_max,
            ) = (1, 120.0, 120.0);
        })
    };
    let wrapped = Reach {
        job: true,
        ..reach()
    };
    check(
        &incidents(DAY),
        &config,
        Expected {
            name: "2 incidents in a day",
            reach: wrapped,
            len: DAY,
            total: Some(99.25),
            scores: vec![(R, 86.07)],
            detail: vec![
                (R, "mttr_seconds", "90"),
                (R, "max_recovery_seconds", "120"),
                (R, "incidents", "2"),
                (R, "rate_factor", "1"),
            ],
            ..Expected::default()
        },
    );
    check(
        &incidents(HOUR),
        &config,
        Expected {
            name: "2 incidents in an hour: read as 2 that day, not 48",
            reach: wrapped,
            total: Some(99.25),
            scores: vec![(R, 86.07)],
            detail: vec![(R, "incidents_per_day", "2"), (R, "rate_factor", "1")],
            ..Expected::default()
        },
    );
    // An outage still open at the end: an incident without a recovery time yet.
    check(
        &one(DAY, |b| b.probe("vllm").outages_started = 1),
        &config,
        Expected {
            name: "open outage",
            len: DAY,
            total: Some(100.0),
            scores: vec![(R, 100.0)],
            detail: vec![(R, "incidents", "1"), (R, "open_incidents", "1")],
            ..Expected::default()
        },
    );
    // Only the wrapped job: R is measured, A/L/C cannot be.
    let job_only = Reach {
        probes: 0,
        inference_probes: 0,
        metrics_probes: 0,
        gpus: false,
        job: true,
        ..reach()
    };
    check(
        &one(HOUR, |b| {
            b.probes.clear();
            b.gpus.clear();
        }),
        &config,
        Expected {
            name: "job only",
            reach: job_only,
            total: Some(100.0),
            scores: vec![(R, 100.0)],
            unmeasured: [A, L, C, H, T]
                .map(|c| (c, Unmeasured::NotMeasurable))
                .to_vec(),
            reweighted: Some(true),
            ..Expected::default()
        },
    );
}

#[test]
fn weights_renormalise_over_what_was_measured() {
    // No GPU, A = 0.95: A's 0.3 of the remaining 0.8 is 0.375, Q = 0.95^0.375.
    let ledger = one(HOUR, |b| {
        b.gpus.clear();
        let p = b.probe("vllm");
        p.checks[state(ProbeState::Up)] = 190;
        p.checks[state(ProbeState::Down)] = 10;
    });
    let no_gpu = Reach {
        gpus: false,
        ..reach()
    };
    check(
        &ledger,
        &ScoreConfig::default(),
        Expected {
            name: "re-weighted",
            reach: no_gpu,
            total: Some(98.09),
            scores: vec![(A, 95.0)],
            reweighted: Some(true),
            ..Expected::default()
        },
    );
    // Throttle weighted 0: left out as zero_weight even though measured (T would be 50), and
    // leaving it out is not a re-weighting.
    let throttled = one(HOUR, |b| {
        let g = b.gpu("GPU-0");
        (g.busy_seconds, g.throttled_busy_seconds) = (1000, 100);
    });
    let config = ScoreConfig {
        weights: ScoreWeights {
            throttle: 0.0,
            ..ScoreWeights::default()
        },
        ..ScoreConfig::default()
    };
    check(
        &throttled,
        &config,
        Expected {
            name: "weight 0",
            total: Some(100.0),
            unmeasured: vec![(T, Unmeasured::ZeroWeight)],
            reweighted: Some(false),
            ..Expected::default()
        },
    );
}

/// provider-quality.md §4.3's example, A 0.999, L 0.97, C 0.995, H 0.9, T 0.8, R 1.0, over a
/// day: Q = 0.9591 (the reference rounds it to ≈ 0.955).
#[test]
fn the_reference_worked_example() {
    let ledger = one(DAY, |b| {
        let p = b.probe("vllm");
        p.checks = [0; 5];
        p.checks[state(ProbeState::Up)] = 9980;
        p.checks[state(ProbeState::Degraded)] = 10;
        p.checks[state(ProbeState::Loading)] = 10;
        p.checks[state(ProbeState::Starting)] = 20;
        p.server = Some(ServerTally {
            requests_ok: Some(19_900),
            requests_failed: Some(100),
            output_tokens: Some(5_000_000),
            ttft: Some(bins(20_000, 0.2)),
            e2e: Some(bins(20_000, 2.0)),
            ttft_within_slo: Some(19_900.0),
            e2e_within_slo: Some(19_206.0),
            counter_resets: 0,
        });
        let g = b.gpu("GPU-0");
        g.warning_xids = 1;
        (g.busy_seconds, g.throttled_busy_seconds) = (50_000, 2_000);
        g.throttle_reasons = vec![
            (ThrottleReason::SwPowerCap, 12_000),
            (ThrottleReason::HwThermalSlowdown, 2_000),
        ];
    });
    let config = ScoreConfig {
        price_per_hour: 2.0,
        ..ScoreConfig::default()
    };
    check(
        &ledger,
        &config,
        Expected {
            name: "worked example",
            len: DAY,
            total: Some(95.91),
            scores: vec![
                (A, 99.9),
                (L, 97.0),
                (C, 99.5),
                (H, 90.0),
                (T, 80.0),
                (R, 100.0),
            ],
            gates: vec![("gpu_critical", Some(true)), ("availability", Some(true))],
            coverage: Some(1.0),
            reweighted: Some(false),
            // 48 USD over 19,900 requests and 5M tokens; 96.03 % of them within the SLOs.
            cost: Some(Some([
                Some(48.0 / 19_900.0),
                Some(9.6),
                Some(48.0 / (19_900.0 * 0.9603)),
                Some(9.6 / 0.9603),
            ])),
            ..Expected::default()
        },
    );
}

#[test]
fn cost_uses_observed_hours_and_the_requests_seen() {
    let priced = ScoreConfig {
        price_per_hour: 2.0,
        ..ScoreConfig::default()
    };
    check(
        &minutes(|_, _| {}),
        &ScoreConfig::default(),
        Expected {
            name: "no price, no cost",
            total: Some(100.0),
            cost: Some(None),
            ..Expected::default()
        },
    );
    // Synthetic requests only: 60 in the hour, 54 within the SLOs, 100 tokens each.
    check(
        &minutes(|i, b| b.probe("vllm").requests_within_slo = u64::from(i >= 6)),
        &priced,
        Expected {
            name: "probe cost",
            total: Some(100.0 * (0.9_f64 / 0.99).powf(0.25)),
            cost: Some(Some([
                Some(2.0 / 60.0),
                Some(2.0 / 6000.0 * 1e6),
                Some(2.0 / 54.0),
                Some(2.0 / 5400.0 * 1e6),
            ])),
            ..Expected::default()
        },
    );
    // Half the hour observed costs half the price; no requests at all: no per-request cost.
    check(
        &[{
            let mut b = Bucket::new(END - HOUR, HOUR);
            b.observed_seconds = 1800;
            b
        }],
        &priced,
        Expected {
            name: "no requests",
            // No incident in the observed half hour is evidence for R; nothing else is.
            total: Some(100.0),
            scores: vec![(R, 100.0)],
            coverage: Some(0.5),
            cost: Some(Some([None; 4])),
            ..Expected::default()
        },
    );
}

fn sample(gpus: &[(&str, Option<u64>, bool)], driver: Option<&str>) -> GpuSample {
    GpuSample {
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(END),
        driver_version: driver.map(str::to_owned),
        cuda_driver_version: None,
        devices: gpus
            .iter()
            .enumerate()
            .map(|(i, (name, memory, missing))| {
                let mut d = GpuDevice {
                    identity: Arc::new(GpuIdentity {
                        index: i as u32,
                        name: (*name).to_owned(),
                        ..GpuIdentity::default()
                    }),
                    missing: *missing,
                    ..GpuDevice::default()
                };
                d.memory.total_bytes = *memory;
                d
            })
            .collect(),
    }
}

#[test]
fn claims_are_checked_against_nvml() {
    const GIB: u64 = 1 << 30;
    let h100 = "NVIDIA H100 80GB HBM3";
    let claims = |model: &str, count: u32, gib: f64, driver: &str| ScoreConfig {
        expect: crate::config::ExpectConfig {
            gpu_model: model.to_owned(),
            gpu_count: count,
            memory_per_gpu_gib: gib,
            driver_min: driver.to_owned(),
        },
        ..ScoreConfig::default()
    };
    let two = sample(
        &[
            (h100, Some(GIB * 796 / 10), false),
            (h100, Some(GIB * 796 / 10), false),
        ],
        Some("550.54.15"),
    );
    // (name, claims, sample, [(claim, observed, ok)])
    type Row<'a> = (
        &'a str,
        ScoreConfig,
        Option<&'a GpuSample>,
        Vec<(&'a str, Option<&'a str>, Option<bool>)>,
    );
    let mixed = sample(
        &[
            (h100, Some(GIB * 80), false),
            ("NVIDIA A100-SXM4-40GB", Some(GIB * 40), false),
            (h100, None, true),
        ],
        Some("535.104.05"),
    );
    let unread = sample(&[(h100, None, false)], None);
    let rows: Vec<Row> = vec![
        (
            "nothing claimed",
            claims("", 0, 0.0, ""),
            Some(&two),
            vec![],
        ),
        (
            "all hold",
            claims("h100", 2, 80.0, "550.54"),
            Some(&two),
            vec![
                ("gpu_model", Some(h100), Some(true)),
                ("gpu_count", Some("2"), Some(true)),
                ("memory_per_gpu", Some("79.6 GiB"), Some(true)),
                ("driver_min", Some("550.54.15"), Some(true)),
            ],
        ),
        (
            "a mixed node, the missing GPU not counted",
            claims("H100", 3, 80.0, "550"),
            Some(&mixed),
            vec![
                (
                    "gpu_model",
                    Some("NVIDIA H100 80GB HBM3, NVIDIA A100-SXM4-40GB"),
                    Some(false),
                ),
                ("gpu_count", Some("2"), Some(false)),
                ("memory_per_gpu", Some("80 GiB, 40 GiB"), Some(false)),
                ("driver_min", Some("535.104.05"), Some(false)),
            ],
        ),
        (
            "nothing sampled",
            claims("H100", 8, 80.0, "550"),
            None,
            vec![
                ("gpu_model", None, None),
                ("gpu_count", None, None),
                ("memory_per_gpu", None, None),
                ("driver_min", None, None),
            ],
        ),
        (
            "memory and driver unread",
            claims("", 0, 80.0, "550.54.15"),
            Some(&unread),
            vec![("memory_per_gpu", None, None), ("driver_min", None, None)],
        ),
        (
            "numeric, not text, version order",
            claims("", 0, 0.0, "550.9"),
            Some(&two),
            vec![("driver_min", Some("550.54.15"), Some(true))],
        ),
    ];
    for (name, config, gpu, want) in rows {
        let got = check_claims(&config, gpu);
        let got: Vec<_> = got
            .iter()
            .map(|c| (c.claim, c.observed.as_deref(), c.ok))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

fn arb_bins() -> impl Strategy<Value = [u64; LEDGER_BINS]> {
    prop::collection::vec(0u64..1000, LEDGER_BINS).prop_map(|v| {
        let mut b = [0; LEDGER_BINS];
        b.copy_from_slice(&v);
        b
    })
}

fn arb_server() -> impl Strategy<Value = ServerTally> {
    (
        prop::array::uniform3(prop::option::of(0u64..100_000)),
        prop::option::of(arb_bins()),
        prop::option::of(arb_bins()),
        prop::array::uniform2(prop::option::of(any::<f64>())),
        0u64..3,
    )
        .prop_map(
            |([ok, failed, tokens], ttft, e2e, [tw, ew], resets)| ServerTally {
                requests_ok: ok,
                requests_failed: failed,
                output_tokens: tokens,
                ttft,
                e2e,
                ttft_within_slo: tw,
                e2e_within_slo: ew,
                counter_resets: resets,
            },
        )
}

fn arb_bucket() -> impl Strategy<Value = Bucket> {
    (
        (0u64..90, 0u64..=120, prop::array::uniform5(0u64..1000)),
        prop::array::uniform6(0u64..1000),
        prop::array::uniform2(any::<f64>()),
        (arb_bins(), prop::option::of(arb_server())),
        prop::collection::vec(0u64..10_000, 9),
        (prop::array::uniform6(0u64..5), 0u64..5, any::<f64>()),
    )
        .prop_map(
            |(
                (minute, observed, checks),
                c,
                [sum, max],
                (ttft, server),
                g,
                (outcomes, recoveries, secs),
            )| {
                let mut b = Bucket::new(END - HOUR + minute * MINUTE, MINUTE);
                b.observed_seconds = observed;
                let p = b.probe("p");
                p.checks = checks;
                (p.outages_started, p.outages_recovered, p.requests_ok) = (c[0], c[1], c[2]);
                (p.requests_failed, p.requests_within_slo, p.output_tokens) = (c[3], c[4], c[5]);
                (p.recovery_seconds_sum, p.recovery_seconds_max) = (sum, max);
                (p.ttft, p.e2e, p.server) = (ttft, ttft, server);
                let gpu = b.gpu("GPU-0");
                gpu.sampled_seconds = g[0];
                (
                    gpu.healthy_seconds,
                    gpu.degraded_seconds,
                    gpu.unhealthy_seconds,
                ) = (g[1], g[2], g[3]);
                (gpu.critical_seconds, gpu.critical_xids, gpu.warning_xids) =
                    (g[4] % 3, g[5] % 3, g[6] % 50);
                (gpu.busy_seconds, gpu.throttled_busy_seconds) = (g[7], g[8]);
                b.job.outcomes = outcomes;
                (b.job.recoveries, b.job.recovery_seconds_sum) = (recoveries, secs);
                b
            },
        )
}

proptest! {
    #[test]
    fn the_total_is_0_to_100_or_none_and_never_nan(
        ledger in prop::collection::vec(arb_bucket(), 0..4),
        weights in prop::array::uniform6(0.0f64..1.0),
        counts in prop::array::uniform3(0usize..3),
        flags in prop::array::uniform2(any::<bool>()),
        price in 0.0f64..10.0,
    ) {
        let config = ScoreConfig {
            weights: ScoreWeights {
                availability: weights[0],
                latency: weights[1],
                completion: weights[2],
                health: weights[3],
                throttle: weights[4],
                recovery: weights[5],
            },
            price_per_hour: price,
            recovery_time_scale: HumanDuration::secs(600),
            ..ScoreConfig::default()
        };
        let reach = Reach {
            mode: Mode::Host,
            probes: counts[0],
            inference_probes: counts[1],
            metrics_probes: counts[2],
            gpus: flags[0],
            job: flags[1],
        };
        let evidence = Evidence::over(&ledger, END, HOUR);
        let got = evaluate(ScoreWindow::H1, &evidence, &reach, &config);
        if let Some(q) = got.total {
            prop_assert!((0.0..=100.0).contains(&q), "total {q}");
        }
        for c in &got.components {
            if let Some(v) = c.value {
                prop_assert!((0.0..=100.0).contains(&v), "{} {v}", c.component.as_str());
            }
            prop_assert!(c.effective_weight.is_finite() && c.weight.is_finite());
            prop_assert!(c.evidence.good.is_finite() && c.evidence.total.is_finite());
        }
        prop_assert!((0.0..=1.0).contains(&got.coverage));
        if let Some(cost) = &got.cost {
            for x in [cost.per_request, cost.per_million_output_tokens, cost.per_request_at_slo, cost.per_million_output_tokens_at_slo].into_iter().flatten() {
                prop_assert!(x.is_finite() && x >= 0.0, "cost {x}");
            }
        }
    }
}

/// A minute where lease `key` held GPU-0 (healthy, busy) for `held` seconds, with `xids`
/// critical Xids on it.
fn lease_minute(ago: u64, key: &str, held: u64, xids: u64) -> Bucket {
    let mut b = healthy(ago, MINUTE);
    let lease = b.lease(key);
    lease.held_seconds = held;
    let g = lease.gpu("GPU-0");
    g.sampled_seconds = held;
    g.healthy_seconds = held;
    g.busy_seconds = held;
    g.throttled_busy_seconds = held / 20;
    g.critical_xids = xids;
    b
}

#[test]
fn each_lease_is_scored_on_its_own_gpu_time_and_the_newest_are_kept() {
    let config = ScoreConfig::default();
    let (old, new) = ("akash1a/1/1/1/akash1p", "akash1b/2/1/1/akash1p");
    // The old lease had a critical Xid 50 minutes ago and left; the new one has held GPU-0
    // since, with 5% of its busy time throttled.
    let mut buckets = vec![lease_minute(50 * MINUTE, old, 60, 1)];
    buckets.extend((1..=10).map(|i| lease_minute(i * MINUTE, new, 60, 0)));
    let evidence: Vec<Evidence> = ScoreWindow::ALL
        .iter()
        .map(|w| Evidence::over(&buckets, END, w.seconds()))
        .collect();
    let leases = evaluate_leases(&evidence, Mode::Host, &config, 8);
    let keys: Vec<&str> = leases.iter().map(|l| l.lease.as_str()).collect();
    assert_eq!(keys, [old, new]);
    let (o, n) = (&leases[0], &leases[1]);
    assert_eq!(n.last_seen, END);
    // 5 minutes: only the new lease was there.
    assert_eq!(o.windows.first().map(|w| w.window), Some(ScoreWindow::H1));
    assert_eq!(n.windows[0].window, ScoreWindow::M5);
    let hour = |l: &LeaseScore| {
        l.windows
            .iter()
            .find(|w| w.window == ScoreWindow::H1)
            .cloned()
    };
    let (oh, nh) = (hour(o).unwrap(), hour(n).unwrap());
    // The old lease's critical Xid closes its gate: judged at the lease's last minute here,
    // inside health_hold. The new lease on the same GPU is not charged for it.
    assert_eq!(oh.total, Some(0.0));
    assert_eq!(oh.end, END - 49 * MINUTE);
    assert_eq!(nh.end, END);
    let value = |w: &WindowScore, c: Component| {
        w.components
            .iter()
            .find(|x| x.component == c)
            .unwrap()
            .value
    };
    assert_eq!(value(&nh, H), Some(100.0));
    assert!(
        nh.gates.iter().all(|g| g.open != Some(false)),
        "{:?}",
        nh.gates
    );
    // T: 5% throttled against the 20% tolerance; what the node cannot see of a lease is not
    // measurable, never perfect.
    assert!((value(&nh, T).unwrap() - 75.0).abs() < 1e-9);
    assert!(
        (nh.total.unwrap() - 100.0 * 0.75f64.powf(nh.components[4].effective_weight)).abs() < 1e-9
    );
    for c in [A, L, C, R] {
        let comp = nh.components.iter().find(|x| x.component == c).unwrap();
        assert_eq!(comp.unmeasured, Some(Unmeasured::NotMeasurable), "{c:?}");
    }
    assert_eq!(nh.observed_seconds, 600);
    assert!(nh.cost.is_none());
    // The bound keeps the most recently seen.
    let newest = evaluate_leases(&evidence, Mode::Host, &config, 1);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].lease, new);
}

/// A detail figure shows as the formatted string the score used to keep: at most 4 decimals,
/// trailing zeros dropped, no "-0", counts exact.
#[test]
fn figures_show_as_before() {
    for (x, want) in [
        (42.0, "42"),
        (0.5, "0.5"),
        (0.123_456, "0.1235"),
        (-0.000_01, "0"),
        (1e6, "1000000"),
        (0.0, "0"),
    ] {
        assert_eq!(num(x).to_string(), want, "{x}");
    }
    assert_eq!(Figure::Count(u64::MAX).to_string(), "18446744073709551615");
    assert_eq!(Figure::Word("probe").to_string(), "probe");
}
