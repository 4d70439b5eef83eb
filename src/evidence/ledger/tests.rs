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

mod accounting {
    //! The accountant: deltas of running totals, baselines, resets, busy-only throttling.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::demo::gpu_sim::SimGpuCollector;
    use crate::evidence::ledger::account::{Accountant, JobCursor, Slo};
    use crate::health::Policy;
    use crate::model::{
        Bucket, JobEnd, JobEvent, JobExit, JobLog, JobOutcome, JobReady, JobStart, ProbeSample,
        ProbeState, ProbeStatus, ServerHistogram, ServerMetrics, ThrottleReason, ThrottleReasons,
        XidCount, XidLog,
    };
    use crate::store::Snapshot;

    const TICK: Duration = Duration::from_secs(5);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn accountant() -> Accountant {
        let slo = Slo {
            ttft: Duration::from_millis(500),
            latency: Duration::from_secs(2),
        };
        Accountant::new(HashMap::from([("llm".to_owned(), slo)]), 0.1, 8)
    }

    fn tick(a: &mut Accountant, snap: &Snapshot) -> Bucket {
        let mut b = Bucket::new(0, 60);
        a.account(snap, &mut b, TICK, &Policy::default(), true);
        b
    }

    fn check(state: ProbeState, secs: u64) -> ProbeSample {
        ProbeSample {
            state,
            reason: None,
            detail: String::new(),
            latency: Duration::ZERO,
            models: Vec::new(),
            checked_at: at(secs),
        }
    }

    fn server(ok: f64, failed: f64, ttft: &[(f64, f64)]) -> ServerMetrics {
        ServerMetrics {
            dialect: "vllm",
            requests_succeeded_total: Some(ok),
            requests_failed_total: Some(failed),
            generation_tokens_total: Some(ok * 10.0),
            time_to_first_token: Some(ServerHistogram {
                buckets: ttft.to_vec(),
                count: ttft.last().map_or(0.0, |b| b.1),
                sum: 0.0,
            }),
            ..ServerMetrics::default()
        }
    }

    fn with_probe(probe: &ProbeStatus) -> Snapshot {
        Snapshot {
            probes: Arc::new(vec![probe.clone()]),
            ..Snapshot::default()
        }
    }

    #[test]
    fn probe_checks_count_from_zero_and_then_by_difference() {
        let mut a = accountant();
        let mut p = ProbeStatus::new("llm", "vllm", Duration::from_secs(1))
            .with_startup_timeout(Duration::from_secs(60));
        p.apply(check(ProbeState::Down, 0), 8); // start-up: starting, never an outage
        p.apply(check(ProbeState::Up, 1), 8);
        let b = tick(&mut a, &with_probe(&p));
        assert_eq!(b.probes[0].checks, [1, 0, 1, 0, 0]);
        p.apply(check(ProbeState::Down, 2), 8);
        p.apply(check(ProbeState::Up, 12), 8);
        let b = tick(&mut a, &with_probe(&p));
        assert_eq!(b.probes[0].checks, [1, 0, 0, 0, 1]);
        assert_eq!(
            (b.probes[0].outages_started, b.probes[0].outages_recovered),
            (1, 1)
        );
        assert_eq!(b.probes[0].recovery_seconds_sum, 10.0);
        assert_eq!(b.probes[0].recovery_seconds_max, 10.0);
        assert_eq!(b.observed_seconds, 5);
        let b = tick(&mut a, &with_probe(&p));
        assert_eq!(b.probes[0].checks, [0; 5]);
    }

    #[test]
    fn server_counters_start_as_a_baseline_and_survive_a_reset() {
        let mut a = accountant();
        let mut p = ProbeStatus::new("llm", "vllm", Duration::from_secs(1)).with_server_metrics();
        let scrape = |p: &mut ProbeStatus, m: ServerMetrics, secs: u64| {
            if let Some(s) = p.server.as_mut() {
                s.apply(Ok(m), Duration::ZERO, at(secs));
            }
        };
        // Counters from before the agent started are a baseline, not this minute's traffic.
        scrape(
            &mut p,
            server(
                1000.0,
                5.0,
                &[(0.25, 900.0), (1.0, 990.0), (f64::INFINITY, 1000.0)],
            ),
            1,
        );
        let b = tick(&mut a, &with_probe(&p));
        let s = b.probes[0].server.clone().unwrap();
        assert_eq!(
            (s.requests_ok, s.requests_failed, s.counter_resets),
            (Some(0), Some(0), 0)
        );
        // 100 more, 2 more failures; of the 100, TTFT: 80 ≤ 0.25 s, 10 ≤ 1 s, 10 above.
        scrape(
            &mut p,
            server(
                1100.0,
                7.0,
                &[(0.25, 980.0), (1.0, 1080.0), (f64::INFINITY, 1100.0)],
            ),
            2,
        );
        let s = tick(&mut a, &with_probe(&p)).probes[0]
            .server
            .clone()
            .unwrap();
        assert_eq!((s.requests_ok, s.requests_failed), (Some(100), Some(2)));
        assert_eq!(s.output_tokens, Some(1000));
        assert_eq!(s.ttft.map(|b| b.iter().sum::<u64>()), Some(100));
        // The SLO is 0.5 s: 80 + a third of the 10 between 0.25 s and 1 s.
        let within = s.ttft_within_slo.unwrap();
        assert!((within - (80.0 + 10.0 / 3.0)).abs() < 1e-6, "{within}");
        // The same scrape again: nothing new.
        let s = tick(&mut a, &with_probe(&p)).probes[0].server.clone();
        assert_eq!(s, None);
        // The server restarted: 30 requests since.
        scrape(
            &mut p,
            server(
                30.0,
                0.0,
                &[(0.25, 30.0), (1.0, 30.0), (f64::INFINITY, 30.0)],
            ),
            3,
        );
        let s = tick(&mut a, &with_probe(&p)).probes[0]
            .server
            .clone()
            .unwrap();
        assert_eq!((s.requests_ok, s.requests_failed), (Some(30), Some(0)));
        assert!(s.counter_resets >= 1, "{s:?}");
    }

    #[test]
    fn throttling_counts_only_while_busy_and_the_power_cap_is_not_penalised() {
        let mut a = accountant();
        let mut sim = SimGpuCollector::new(3, Duration::from_secs(1));
        let mut gpu = sim.next_sample();
        let hw = 0x8; // hw_slowdown
        let cap = 0x4; // sw_power_cap
        let set = |d: &mut crate::model::GpuDevice, util: f64, active: u64| {
            d.utilization.gpu = Some(util);
            d.throttle = Some(ThrottleReasons {
                active,
                supported: 0x1ff,
            });
        };
        set(&mut gpu.devices[0], 0.9, hw);
        set(&mut gpu.devices[1], 0.9, cap);
        set(&mut gpu.devices[2], 0.02, hw);
        let uuids: Vec<String> = gpu
            .devices
            .iter()
            .map(|d| d.identity.uuid.clone())
            .collect();
        let snap = Snapshot {
            gpu: Some(Arc::new(gpu)),
            ..Snapshot::default()
        };
        let b = tick(&mut a, &snap);
        let g = |i: usize| b.gpus.iter().find(|g| g.uuid == uuids[i]).unwrap();
        assert_eq!((g(0).busy_seconds, g(0).throttled_busy_seconds), (5, 5));
        assert_eq!(g(0).throttle_reasons, vec![(ThrottleReason::HwSlowdown, 5)]);
        assert_eq!((g(1).busy_seconds, g(1).throttled_busy_seconds), (5, 0));
        assert_eq!(g(1).throttle_reasons, vec![(ThrottleReason::SwPowerCap, 5)]);
        // Idle: a slowdown costs nothing while there is no work.
        assert_eq!((g(2).busy_seconds, g(2).throttled_busy_seconds), (0, 0));
        assert!(b.gpus.iter().all(|g| g.sampled_seconds == 5));
    }

    #[test]
    fn xids_are_classified_by_the_policy() {
        let mut a = accountant();
        let count = |xid: u64, count: u64| XidCount {
            gpu_index: Some(0),
            uuid: "GPU-a".to_owned(),
            xid,
            count,
            first_seen: at(0),
            last_seen: at(0),
        };
        let snap = |counts: Vec<XidCount>| Snapshot {
            xid: Arc::new(XidLog {
                counts,
                recent: Vec::new(),
            }),
            ..Snapshot::default()
        };
        let b = tick(&mut a, &snap(vec![count(79, 1), count(94, 2)]));
        assert_eq!((b.gpus[0].critical_xids, b.gpus[0].warning_xids), (1, 2));
        let b = tick(&mut a, &snap(vec![count(79, 1), count(94, 3)]));
        assert_eq!((b.gpus[0].critical_xids, b.gpus[0].warning_xids), (0, 1));
    }

    #[test]
    fn a_lease_is_charged_only_for_its_gpus_while_it_holds_them() {
        use crate::model::{DeviceOwner, K8sAttribution, NamespaceLease, PodRef};
        let mut sim = SimGpuCollector::new(3, Duration::from_secs(1));
        let gpu = Arc::new(sim.next_sample());
        let uuid = |i: usize| gpu.devices[i].identity.uuid.clone();
        let owner = |i: usize, namespace: &str| DeviceOwner {
            device: uuid(i),
            owner: PodRef {
                namespace: namespace.to_owned(),
                pod: "p".to_owned(),
                container: "c".to_owned(),
            },
        };
        let lease = |namespace: &str, dseq: &str| NamespaceLease {
            namespace: namespace.to_owned(),
            owner: Some("akash1tenant".to_owned()),
            dseq: Some(dseq.to_owned()),
            gseq: Some("1".to_owned()),
            oseq: Some("1".to_owned()),
            provider: Some("akash1prov".to_owned()),
        };
        let (a_key, b_key) = (lease("a", "1").key(), lease("b", "2").key());
        assert_eq!(a_key, "akash1tenant/1/1/1/akash1prov");
        let xid = |count: u64| XidCount {
            gpu_index: Some(0),
            uuid: uuid(0),
            xid: 79,
            count,
            first_seen: at(0),
            last_seen: at(0),
        };
        let snap = |owners: Vec<DeviceOwner>, xids: u64| {
            let mut devices = owners;
            devices.sort();
            Snapshot {
                gpu: Some(Arc::clone(&gpu)),
                k8s: Some(Arc::new(K8sAttribution {
                    devices,
                    leases: vec![lease("a", "1"), lease("b", "2")],
                    ..K8sAttribution::default()
                })),
                xid: Arc::new(XidLog {
                    counts: vec![xid(xids)],
                    recent: Vec::new(),
                }),
                ..Snapshot::default()
            }
        };
        let mut a = accountant();
        // GPU 0 is lease a's, GPU 1 lease b's, GPU 2 a plain namespace's: a critical Xid on
        // GPU 0 is lease a's alone.
        let b = tick(
            &mut a,
            &snap(vec![owner(0, "a"), owner(1, "b"), owner(2, "plain")], 1),
        );
        let keys: Vec<&str> = b.leases.iter().map(|l| l.lease.as_str()).collect();
        assert_eq!(keys, [a_key.as_str(), b_key.as_str()]);
        let (la, lb) = (&b.leases[0], &b.leases[1]);
        assert_eq!(la.held_seconds, 5);
        let gpus = |l: &crate::model::LeaseTally| -> Vec<String> {
            l.gpus.iter().map(|g| g.uuid.clone()).collect()
        };
        assert_eq!(gpus(la), [uuid(0)]);
        assert_eq!(
            (la.gpus[0].sampled_seconds, la.gpus[0].critical_xids),
            (5, 1)
        );
        assert_eq!(gpus(lb), [uuid(1)]);
        assert!(!lb.critical());
        // The node's tally is the same GPU's, counted once.
        let node = b.gpus.iter().find(|g| g.uuid == uuid(0)).unwrap();
        assert_eq!(node.critical_xids, 1);
        // GPU 0 moves to lease b (a's pod ended): the next Xid is b's, not a's.
        let b = tick(&mut a, &snap(vec![owner(0, "b"), owner(1, "b")], 2));
        assert_eq!(b.leases.len(), 1);
        assert_eq!(b.leases[0].lease, b_key);
        // Two GPUs, but the lease held something for 5 seconds.
        assert_eq!(b.leases[0].held_seconds, 5);
        assert_eq!(gpus(&b.leases[0]), [uuid(0), uuid(1)]);
        assert_eq!(b.leases[0].gpus[0].critical_xids, 1);
        // Unknown attribution (the collector failed): nothing is charged to any lease.
        let mut unknown = snap(vec![owner(0, "a")], 3);
        unknown.k8s = None;
        assert!(tick(&mut a, &unknown).leases.is_empty());
        // The bound: one lease per bucket, the first seen.
        let mut one = Accountant::new(HashMap::new(), 0.1, 1);
        let b = tick(&mut one, &snap(vec![owner(0, "a"), owner(1, "b")], 3));
        assert_eq!(b.leases.len(), 1);
    }

    fn job_events(log: &mut JobLog, run: u64, outcome: JobOutcome, ready_after_end: Option<u64>) {
        let start = run * 100;
        log.apply(
            JobEvent::Started(JobStart {
                run,
                at: at(start),
                program: "vllm".to_owned(),
                pid: 7,
            }),
            16,
        );
        if let Some(recovery) = ready_after_end {
            log.apply(
                JobEvent::Ready(JobReady {
                    run,
                    at: at(start + 10),
                    after_start: Duration::from_secs(10),
                    recovery: Some(Duration::from_secs(recovery)),
                }),
                16,
            );
        }
        log.apply(
            JobEvent::Finished(JobEnd {
                run,
                at: at(start + 50),
                program: "vllm".to_owned(),
                pid: 7,
                started_at: at(start),
                outcome,
                exit: Some(JobExit::Code(1)),
                duration: Some(Duration::from_secs(50)),
                oom_kills: None,
                stop_signal: None,
                killed_after_grace: false,
            }),
            16,
        );
    }

    #[test]
    fn job_runs_are_counted_once_across_an_agent_restart() {
        // A journal restored with one failed run: without a cursor, that is a baseline.
        let mut log = JobLog::default();
        job_events(&mut log, 1, JobOutcome::Failure, None);
        let snap = |log: &JobLog| Snapshot {
            job: Some(Arc::new(log.clone())),
            ..Snapshot::default()
        };
        let mut a = accountant();
        assert_eq!(tick(&mut a, &snap(&log)).job.ended(), 0);
        let cursor = a.job.unwrap();
        assert_eq!(cursor.to_bytes().len(), 64);
        assert_eq!(JobCursor::from_bytes(&cursor.to_bytes()), Some(cursor));
        // The agent restarts with that cursor (from the ledger's file); meanwhile run 2
        // failed and run 3 came up 30 s after it.
        job_events(&mut log, 2, JobOutcome::Failure, None);
        log.apply(
            JobEvent::Started(JobStart {
                run: 3,
                at: at(300),
                program: "vllm".to_owned(),
                pid: 8,
            }),
            16,
        );
        log.apply(
            JobEvent::Ready(JobReady {
                run: 3,
                at: at(310),
                after_start: Duration::from_secs(10),
                recovery: Some(Duration::from_secs(30)),
            }),
            16,
        );
        let mut restarted = accountant();
        restarted.job = Some(cursor);
        let b = tick(&mut restarted, &snap(&log));
        assert_eq!(b.job.starts, 2);
        assert_eq!(b.job.ended(), 1);
        assert_eq!((b.job.recoveries, b.job.recovery_seconds_sum), (1, 30.0));
        // Nothing new: nothing counted twice.
        let b = tick(&mut restarted, &snap(&log));
        assert_eq!((b.job.starts, b.job.ended(), b.job.recoveries), (0, 0, 0));
    }
}
