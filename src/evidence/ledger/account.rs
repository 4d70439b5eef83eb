//! Accounting: what the store shows each tick becomes the current minute's counts.
//!
//! The store keeps running totals (probe checks by state, synthetic requests, Xid counts per
//! GPU, the server's own counters, the job's totals); the accountant remembers the totals it
//! last saw and adds the difference to the open bucket. GPU states and throttling are
//! durations: each tick adds its length to the state the GPU is in now. Rules:
//!
//! * A total seen for the first time is a baseline (nothing counted), except the agent's own
//!   counters (probe checks, synthetic requests, Xid counts), which start at 0 with the agent.
//! * A total lower than last time is a counter reset (the server restarted): the new value is
//!   the delta, and the reset is counted.
//! * The job's totals come back from `jobs.jsonl` after a restart; the cursor is kept in the
//!   ledger's file ([`JobCursor`]), so runs that ended while the agent was down are counted
//!   once, not lost and not counted twice.

use std::collections::HashMap;
use std::time::Duration;

use crate::health::{Policy, Severity, State};
use crate::model::{
    Bins, Bucket, GpuDevice, GpuTally, JobLog, LEDGER_BINS, LatencyHistogram, LeaseTally,
    ServerHistogram, ServerTally, ThrottleReason, cumulative_at, rebin,
};
use crate::store::Snapshot;

/// Clock-event reasons that cost the tenant performance: the hardware slowdowns and the
/// thermal software slowdown. The software power cap is the operator's setting: reported,
/// not penalised. Idle, application clocks, sync boost and display clocks are not throttling.
pub const PENALISED: [ThrottleReason; 4] = [
    ThrottleReason::HwSlowdown,
    ThrottleReason::HwThermalSlowdown,
    ThrottleReason::HwPowerBrakeSlowdown,
    ThrottleReason::SwThermalSlowdown,
];

/// Reasons recorded per GPU while busy (penalised or not).
const RECORDED: [ThrottleReason; 5] = [
    ThrottleReason::SwPowerCap,
    ThrottleReason::HwSlowdown,
    ThrottleReason::HwThermalSlowdown,
    ThrottleReason::HwPowerBrakeSlowdown,
    ThrottleReason::SwThermalSlowdown,
];

/// A probe's SLOs, for judging the server's own histograms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    pub ttft: Duration,
    pub latency: Duration,
}

/// The job totals the ledger has accounted; persisted with the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JobCursor {
    pub starts: u64,
    pub outcomes: [u64; 6],
    /// The last run whose readiness (and recovery time) was accounted.
    pub ready_run: u64,
}

impl JobCursor {
    /// 8 little-endian u64s: starts, six outcomes, ready run.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for v in [self.starts]
            .iter()
            .chain(self.outcomes.iter())
            .chain([self.ready_run].iter())
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 64 {
            return None;
        }
        let mut values = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        let mut next = || values.next().unwrap_or(0);
        let starts = next();
        let mut outcomes = [0; 6];
        for o in &mut outcomes {
            *o = next();
        }
        Some(Self {
            starts,
            outcomes,
            ready_run: next(),
        })
    }
}

#[derive(Debug, Clone, Default)]
struct InferCursor {
    ok: u64,
    failed: u64,
    within: u64,
    tokens: u64,
    ttft: [u64; LEDGER_BINS],
    e2e: [u64; LEDGER_BINS],
}

#[derive(Debug, Clone, Default)]
struct ServerCursor {
    ok: Option<f64>,
    failed: Option<f64>,
    tokens: Option<f64>,
    ttft: Option<ServerHistogram>,
    e2e: Option<ServerHistogram>,
}

#[derive(Debug, Clone, Default)]
struct ProbeCursor {
    checks: [u64; 5],
    outages: u64,
    recovered: u64,
    recovery_seconds: f64,
    infer: InferCursor,
    /// When the scrape the server cursor holds was taken (a new one is accounted once).
    scraped_at: Option<std::time::SystemTime>,
    server: Option<ServerCursor>,
}

/// The accountant: running totals last seen.
#[derive(Debug, Clone, Default)]
pub struct Accountant {
    probes: HashMap<String, ProbeCursor>,
    slos: HashMap<String, Slo>,
    xids: HashMap<(String, u64), u64>,
    /// `None` until the first look at a job (or restored from the ledger's file).
    pub job: Option<JobCursor>,
    busy_utilization: f64,
    /// Most leases one bucket accounts (`kubernetes.max_leases`).
    max_leases: usize,
}

/// Bins of a latency histogram (its per-bound counts, then the rest as `+Inf`).
fn bins_of(h: &LatencyHistogram) -> Bins {
    let mut bins = [0u64; LEDGER_BINS];
    bins[..h.per_bucket.len()].copy_from_slice(&h.per_bucket);
    let counted: u64 = h.per_bucket.iter().sum();
    bins[LEDGER_BINS - 1] = h.count.saturating_sub(counted);
    bins
}

fn delta(now: u64, before: u64) -> u64 {
    now.saturating_sub(before)
}

/// The delta of a server counter and whether it reset (`None` when not exposed now).
fn counter_delta(now: Option<f64>, before: Option<f64>) -> (Option<u64>, bool) {
    match (now, before) {
        (Some(n), Some(b)) if n >= b => (Some((n - b).round() as u64), false),
        (Some(n), Some(_)) => (Some(n.max(0.0).round() as u64), true),
        // First sight: a baseline.
        (Some(_), None) => (Some(0), false),
        (None, _) => (None, false),
    }
}

/// The delta of a cumulative server histogram as `(bound, count)` pairs, and whether it reset.
fn histogram_delta(
    now: &ServerHistogram,
    before: Option<&ServerHistogram>,
) -> Option<(Vec<(f64, f64)>, bool)> {
    if now.buckets.is_empty() {
        return None;
    }
    let Some(before) = before else {
        return Some((
            now.buckets.iter().map(|(le, _)| (*le, 0.0)).collect(),
            false,
        ));
    };
    let same_bounds = before.buckets.len() == now.buckets.len()
        && before
            .buckets
            .iter()
            .zip(&now.buckets)
            .all(|(a, b)| a.0 == b.0);
    if !same_bounds || now.count < before.count {
        return Some((now.buckets.clone(), true));
    }
    Some((
        now.buckets
            .iter()
            .zip(&before.buckets)
            .map(|((le, n), (_, b))| (*le, (n - b).max(0.0)))
            .collect(),
        false,
    ))
}

impl Accountant {
    /// An accountant for these probes' SLOs, counting a GPU busy above `busy_utilization`,
    /// and at most `max_leases` leases per bucket.
    pub fn new(slos: HashMap<String, Slo>, busy_utilization: f64, max_leases: usize) -> Self {
        Self {
            slos,
            busy_utilization,
            max_leases,
            ..Self::default()
        }
    }

    /// Adds what changed since the last call to `bucket`; `dt` is the tick's length (from a
    /// monotonic clock), `policy` classifies Xids. `gpu_fresh` says whether the GPU sample is
    /// this cycle's (a stale sample's states are not counted as observed GPU time).
    pub fn account(
        &mut self,
        snap: &Snapshot,
        bucket: &mut Bucket,
        dt: Duration,
        policy: &Policy,
        gpu_fresh: bool,
    ) {
        // Whole seconds, rounded: ticks jitter around their period by a few milliseconds.
        let secs = ((dt.as_millis() + 500) / 1000) as u64;
        bucket.observed_seconds = (bucket.observed_seconds + secs).min(bucket.span);
        if gpu_fresh {
            self.account_gpus(snap, bucket, secs);
        }
        self.account_xids(snap, bucket, policy);
        for probe in snap.probes.iter() {
            self.account_probe(probe, bucket);
        }
        if let Some(job) = &snap.job {
            self.account_job(job, bucket);
        }
    }

    fn account_gpus(&mut self, snap: &Snapshot, bucket: &mut Bucket, secs: u64) {
        let Some(sample) = &snap.gpu else {
            return;
        };
        let mut held: Vec<String> = Vec::new();
        for device in &sample.devices {
            if device.missing {
                continue;
            }
            let state = snap
                .health
                .as_ref()
                .and_then(|h| h.gpu(device.identity.index))
                .map(|g| g.state);
            let tally = self.gpu_tally(device, state, secs);
            bucket.gpu(&device.identity.uuid).merge(&tally);
            for key in self.leases_of(snap, device) {
                if let Some(lease) = self.lease_tally(bucket, &key) {
                    lease.gpu(&device.identity.uuid).merge(&tally);
                    if !held.contains(&key) {
                        lease.held_seconds += secs;
                        held.push(key);
                    }
                }
            }
        }
    }

    /// What `secs` seconds of `device` in health `state` add to its tally.
    fn gpu_tally(&self, device: &GpuDevice, state: Option<State>, secs: u64) -> GpuTally {
        let mut tally = GpuTally {
            uuid: device.identity.uuid.clone(),
            sampled_seconds: secs,
            ..GpuTally::default()
        };
        match state {
            Some(State::Healthy) => tally.healthy_seconds += secs,
            Some(State::Degraded) => tally.degraded_seconds += secs,
            Some(State::Unhealthy) => {
                tally.unhealthy_seconds += secs;
                tally.critical_seconds += secs;
            }
            Some(State::Unknown) | None => {}
        }
        if device.lost && state != Some(State::Unhealthy) {
            tally.critical_seconds += secs;
        }
        let busy = device
            .utilization
            .gpu
            .is_some_and(|u| u > self.busy_utilization);
        if !busy {
            return tally;
        }
        tally.busy_seconds += secs;
        let Some(throttle) = device.throttle else {
            return tally;
        };
        let active: Vec<ThrottleReason> = throttle
            .decoded()
            .filter(|(_, on)| *on)
            .map(|(r, _)| r)
            .collect();
        if active.iter().any(|r| PENALISED.contains(r)) {
            tally.throttled_busy_seconds += secs;
        }
        tally.throttle_reasons = active
            .into_iter()
            .filter(|r| RECORDED.contains(r))
            .map(|r| (r, secs))
            .collect();
        tally.throttle_reasons.sort();
        tally
    }

    /// The keys of the Akash leases holding `device` (or one of its MIG devices) now; none
    /// while the attribution is unknown.
    fn leases_of(&self, snap: &Snapshot, device: &GpuDevice) -> Vec<String> {
        let Some(k8s) = snap.k8s.as_deref() else {
            return Vec::new();
        };
        let mig = device
            .mig
            .iter()
            .flat_map(|m| &m.instances)
            .map(|i| i.uuid.as_str());
        k8s.leases_of(&device.identity.uuid, mig)
    }

    /// The lease's tally in `bucket`; `None` when the bucket already holds `max_leases` other
    /// leases (the bound on a bucket's size: a lease past it is not accounted there).
    fn lease_tally<'b>(&self, bucket: &'b mut Bucket, key: &str) -> Option<&'b mut LeaseTally> {
        let known = bucket.leases.iter().any(|l| l.lease == key);
        if !known && bucket.leases.len() >= self.max_leases {
            return None;
        }
        Some(bucket.lease(key))
    }

    fn account_xids(&mut self, snap: &Snapshot, bucket: &mut Bucket, policy: &Policy) {
        let uuid_of = |index: Option<u32>, uuid: &str| -> String {
            if !uuid.is_empty() {
                return uuid.to_owned();
            }
            index
                .and_then(|i| {
                    snap.gpu
                        .as_ref()?
                        .devices
                        .iter()
                        .find(|d| d.identity.index == i)
                        .map(|d| d.identity.uuid.clone())
                })
                .unwrap_or_else(|| index.map_or("unknown".to_owned(), |i| format!("gpu{i}")))
        };
        for c in &snap.xid.counts {
            let key = (uuid_of(c.gpu_index, &c.uuid), c.xid);
            let before = self.xids.insert(key.clone(), c.count).unwrap_or(0);
            let new = if c.count >= before {
                c.count - before
            } else {
                c.count
            };
            if new == 0 {
                continue;
            }
            // NVLink5 Xids whose recent occurrences all said `Nonfatal` are warnings.
            let tally = match policy.xid_count(c, &snap.xid, std::time::UNIX_EPOCH).0 {
                Severity::Unhealthy => GpuTally {
                    critical_xids: new,
                    ..GpuTally::default()
                },
                Severity::Degraded => GpuTally {
                    warning_xids: new,
                    ..GpuTally::default()
                },
                Severity::Ignore => continue,
            };
            bucket.gpu(&key.0).merge(&tally);
            // The Xid is the lease's when the lease holds the GPU as it is counted.
            let device = snap
                .gpu
                .as_ref()
                .and_then(|g| g.devices.iter().find(|d| d.identity.uuid == key.0));
            for lease in device.map_or_else(Vec::new, |d| self.leases_of(snap, d)) {
                if let Some(t) = self.lease_tally(bucket, &lease) {
                    t.gpu(&key.0).merge(&tally);
                }
            }
        }
    }

    fn account_probe(&mut self, probe: &crate::model::ProbeStatus, bucket: &mut Bucket) {
        let slo = self.slos.get(&probe.name).copied();
        let cursor = self.probes.entry(probe.name.clone()).or_default();
        let tally = bucket.probe(&probe.name);
        for (i, now) in probe.checks.iter().enumerate() {
            tally.checks[i] += delta(*now, cursor.checks[i]);
        }
        cursor.checks = probe.checks;
        tally.outages_started += delta(probe.outages_total, cursor.outages);
        cursor.outages = probe.outages_total;
        let recovered = delta(probe.recovered_total, cursor.recovered);
        if recovered > 0 {
            let took = (probe.recovery_seconds_total - cursor.recovery_seconds).max(0.0);
            tally.outages_recovered += recovered;
            tally.recovery_seconds_sum += took;
            // With one recovery per tick (the usual case) this is exact; with several, the
            // last one's length bounds the rest from below.
            let longest = probe
                .last_recovery
                .map_or(took, |d| d.as_secs_f64().max(took / recovered as f64));
            tally.recovery_seconds_max = tally.recovery_seconds_max.max(longest);
        }
        cursor.recovered = probe.recovered_total;
        cursor.recovery_seconds = probe.recovery_seconds_total;
        if let Some(inf) = &probe.inference {
            let c = &mut cursor.infer;
            tally.requests_ok += delta(inf.succeeded, c.ok);
            tally.requests_failed += delta(inf.failed, c.failed);
            tally.requests_within_slo += delta(inf.within_slo, c.within);
            tally.output_tokens += delta(inf.output_tokens_total, c.tokens);
            let ttft = bins_of(&inf.ttft);
            let e2e = bins_of(&inf.duration);
            for i in 0..LEDGER_BINS {
                tally.ttft[i] += delta(ttft[i], c.ttft[i]);
                tally.e2e[i] += delta(e2e[i], c.e2e[i]);
            }
            *c = InferCursor {
                ok: inf.succeeded,
                failed: inf.failed,
                within: inf.within_slo,
                tokens: inf.output_tokens_total,
                ttft,
                e2e,
            };
        }
        let Some(scrapes) = &probe.server else {
            return;
        };
        let Some(metrics) = &scrapes.metrics else {
            return;
        };
        if scrapes.last_at == cursor.scraped_at || scrapes.last_ok() != Some(true) {
            return;
        }
        cursor.scraped_at = scrapes.last_at;
        let before = cursor.server.take();
        let b = before.as_ref();
        let (ok, r1) = counter_delta(metrics.requests_succeeded_total, b.and_then(|b| b.ok));
        let (failed, r2) = counter_delta(metrics.requests_failed_total, b.and_then(|b| b.failed));
        let (tokens, r3) = counter_delta(metrics.generation_tokens_total, b.and_then(|b| b.tokens));
        let ttft = metrics
            .time_to_first_token
            .as_ref()
            .and_then(|h| histogram_delta(h, b.and_then(|b| b.ttft.as_ref())));
        let e2e = metrics
            .e2e_latency
            .as_ref()
            .and_then(|h| histogram_delta(h, b.and_then(|b| b.e2e.as_ref())));
        let resets = [r1, r2, r3]
            .into_iter()
            .chain(
                [ttft.as_ref().map(|t| t.1), e2e.as_ref().map(|e| e.1)]
                    .into_iter()
                    .flatten(),
            )
            .filter(|r| *r)
            .count() as u64;
        let within = |d: &Option<(Vec<(f64, f64)>, bool)>, limit: Option<Duration>| {
            Some(cumulative_at(&d.as_ref()?.0, limit?.as_secs_f64()))
        };
        let server = ServerTally {
            requests_ok: ok,
            requests_failed: failed,
            output_tokens: tokens,
            ttft: ttft.as_ref().and_then(|(d, _)| rebin(d)),
            e2e: e2e.as_ref().and_then(|(d, _)| rebin(d)),
            ttft_within_slo: within(&ttft, slo.map(|s| s.ttft)),
            e2e_within_slo: within(&e2e, slo.map(|s| s.latency)),
            counter_resets: if before.is_some() { resets } else { 0 },
        };
        tally
            .server
            .get_or_insert_with(ServerTally::default)
            .merge(&server);
        cursor.server = Some(ServerCursor {
            ok: metrics.requests_succeeded_total,
            failed: metrics.requests_failed_total,
            tokens: metrics.generation_tokens_total,
            ttft: metrics.time_to_first_token.clone(),
            e2e: metrics.e2e_latency.clone(),
        });
    }

    fn account_job(&mut self, job: &JobLog, bucket: &mut Bucket) {
        let totals = &job.totals;
        let ready_run = job.ready.as_ref().map_or(0, |r| r.run);
        let Some(cursor) = self.job else {
            // No cursor from the ledger's file: what the journal restored is a baseline.
            self.job = Some(JobCursor {
                starts: totals.starts,
                outcomes: totals.outcomes,
                ready_run,
            });
            return;
        };
        let t = &mut bucket.job;
        // Totals below the cursor: the journal was lost or reset; start over from here.
        if totals.starts < cursor.starts {
            self.job = Some(JobCursor {
                starts: totals.starts,
                outcomes: totals.outcomes,
                ready_run,
            });
            return;
        }
        t.starts += totals.starts - cursor.starts;
        for (i, n) in totals.outcomes.iter().enumerate() {
            t.outcomes[i] += delta(*n, cursor.outcomes[i]);
        }
        if let Some(ready) = &job.ready
            && ready.run > cursor.ready_run
            && let Some(recovery) = ready.recovery
        {
            let secs = recovery.as_secs_f64();
            t.recoveries += 1;
            t.recovery_seconds_sum += secs;
            t.recovery_seconds_max = t.recovery_seconds_max.max(secs);
        }
        self.job = Some(JobCursor {
            starts: totals.starts,
            outcomes: totals.outcomes,
            ready_run: ready_run.max(cursor.ready_run),
        });
    }
}
