//! The ledger's record format: one bucket as compact bytes (postcard: varints, sparse
//! histograms, probe and GPU names as ids into the ledger's name table).
//!
//! A quiet minute of 8 GPUs and 4 probes is a few hundred bytes, so 7 days of minute buckets
//! stay within a few MiB in memory and on disk. Records carry a schema byte; a record that
//! does not decode (another schema, corruption) is skipped by the caller, never a crash.

use serde::{Deserialize, Serialize};

use crate::model::{
    Bins, Bucket, GpuTally, JobTally, LEDGER_BINS, ProbeTally, ServerTally, ThrottleReason,
};

/// The first byte of every record: V1 without leases, V2 (V1 then the per-lease tallies) with
/// them, so a ledger without Kubernetes leases stays readable by older agents.
pub const SCHEMA_V1: u8 = 1;
pub const SCHEMA_V2: u8 = 2;

/// Maps names (probe names, GPU UUIDs) to small ids and back.
pub trait Names {
    /// The id of `name`, assigning one when new; `None` when the table is full.
    fn id(&mut self, name: &str) -> Option<u32>;
    /// The name of `id`.
    fn name(&self, id: u32) -> Option<&str>;
}

#[derive(Serialize, Deserialize)]
struct BucketV1 {
    observed: u32,
    starts: u32,
    steps_back: u32,
    probes: Vec<ProbeV1>,
    gpus: Vec<GpuV1>,
    job: Option<JobV1>,
}

/// V1's fields, then the leases (postcard writes fields in order, so V2 extends V1).
#[derive(Serialize, Deserialize)]
struct BucketV2 {
    base: BucketV1,
    leases: Vec<LeaseV2>,
}

#[derive(Serialize, Deserialize)]
struct LeaseV2 {
    /// The lease key's id in the name table.
    id: u32,
    held: u32,
    gpus: Vec<GpuV1>,
}

#[derive(Serialize, Deserialize)]
struct ProbeV1 {
    id: u32,
    checks: [u64; 5],
    outages_started: u64,
    outages_recovered: u64,
    recovery_sum: f32,
    recovery_max: f32,
    ok: u64,
    failed: u64,
    within_slo: u64,
    tokens: u64,
    ttft: Vec<(u8, u64)>,
    e2e: Vec<(u8, u64)>,
    server: Option<ServerV1>,
}

#[derive(Serialize, Deserialize)]
struct ServerV1 {
    ok: Option<u64>,
    failed: Option<u64>,
    tokens: Option<u64>,
    ttft: Option<Vec<(u8, u64)>>,
    e2e: Option<Vec<(u8, u64)>>,
    ttft_within_slo: Option<f32>,
    e2e_within_slo: Option<f32>,
    resets: u64,
}

#[derive(Serialize, Deserialize)]
struct GpuV1 {
    id: u32,
    sampled: u32,
    healthy: u32,
    degraded: u32,
    unhealthy: u32,
    critical: u32,
    critical_xids: u64,
    warning_xids: u64,
    busy: u32,
    throttled_busy: u32,
    /// (index into `ThrottleReason::ALL`, seconds).
    reasons: Vec<(u8, u32)>,
}

#[derive(Serialize, Deserialize)]
struct JobV1 {
    starts: u64,
    outcomes: [u64; 6],
    recoveries: u64,
    recovery_sum: f32,
    recovery_max: f32,
}

fn sparse(bins: &Bins) -> Vec<(u8, u64)> {
    bins.iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (i as u8, *n))
        .collect()
}

fn dense(entries: &[(u8, u64)]) -> Bins {
    let mut bins = [0u64; LEDGER_BINS];
    for (i, n) in entries {
        if let Some(slot) = bins.get_mut(usize::from(*i)) {
            *slot = slot.saturating_add(*n);
        }
    }
    bins
}

fn secs32(s: u64) -> u32 {
    u32::try_from(s).unwrap_or(u32::MAX)
}

/// Encodes `bucket` (its start and span are the record's key, not in the bytes); names the
/// table cannot take are left out (and counted by the caller through `Names`).
pub fn encode(bucket: &Bucket, names: &mut impl Names) -> Vec<u8> {
    let probes = bucket
        .probes
        .iter()
        .filter_map(|p| {
            Some(ProbeV1 {
                id: names.id(&p.probe)?,
                checks: p.checks,
                outages_started: p.outages_started,
                outages_recovered: p.outages_recovered,
                recovery_sum: p.recovery_seconds_sum as f32,
                recovery_max: p.recovery_seconds_max as f32,
                ok: p.requests_ok,
                failed: p.requests_failed,
                within_slo: p.requests_within_slo,
                tokens: p.output_tokens,
                ttft: sparse(&p.ttft),
                e2e: sparse(&p.e2e),
                server: p.server.as_ref().map(|s| ServerV1 {
                    ok: s.requests_ok,
                    failed: s.requests_failed,
                    tokens: s.output_tokens,
                    ttft: s.ttft.as_ref().map(sparse),
                    e2e: s.e2e.as_ref().map(sparse),
                    ttft_within_slo: s.ttft_within_slo.map(|v| v as f32),
                    e2e_within_slo: s.e2e_within_slo.map(|v| v as f32),
                    resets: s.counter_resets,
                }),
            })
        })
        .collect();
    let gpus = encode_gpus(&bucket.gpus, names);
    let j = &bucket.job;
    let job = (*j != JobTally::default()).then_some(JobV1 {
        starts: j.starts,
        outcomes: j.outcomes,
        recoveries: j.recoveries,
        recovery_sum: j.recovery_seconds_sum as f32,
        recovery_max: j.recovery_seconds_max as f32,
    });
    let record = BucketV1 {
        observed: secs32(bucket.observed_seconds),
        starts: secs32(bucket.agent_starts),
        steps_back: secs32(bucket.clock_steps_back),
        probes,
        gpus,
        job,
    };
    let leases: Vec<LeaseV2> = bucket
        .leases
        .iter()
        .filter_map(|l| {
            Some(LeaseV2 {
                id: names.id(&l.lease)?,
                held: secs32(l.held_seconds),
                gpus: encode_gpus(&l.gpus, names),
            })
        })
        .collect();
    // Encoding plain integers, floats and vectors into a Vec cannot fail; if it ever did,
    // the record is just the schema byte, which decodes to nothing and is skipped.
    let (schema, bytes) = if leases.is_empty() {
        (SCHEMA_V1, postcard::to_allocvec(&record))
    } else {
        let record = BucketV2 {
            base: record,
            leases,
        };
        (SCHEMA_V2, postcard::to_allocvec(&record))
    };
    let mut out = vec![schema];
    if let Ok(bytes) = bytes {
        out.extend_from_slice(&bytes);
    }
    out
}

fn encode_gpus(gpus: &[GpuTally], names: &mut impl Names) -> Vec<GpuV1> {
    gpus.iter()
        .filter_map(|g| {
            Some(GpuV1 {
                id: names.id(&g.uuid)?,
                sampled: secs32(g.sampled_seconds),
                healthy: secs32(g.healthy_seconds),
                degraded: secs32(g.degraded_seconds),
                unhealthy: secs32(g.unhealthy_seconds),
                critical: secs32(g.critical_seconds),
                critical_xids: g.critical_xids,
                warning_xids: g.warning_xids,
                busy: secs32(g.busy_seconds),
                throttled_busy: secs32(g.throttled_busy_seconds),
                reasons: g
                    .throttle_reasons
                    .iter()
                    .filter_map(|(r, s)| {
                        let i = ThrottleReason::ALL.iter().position(|x| x == r)?;
                        Some((i as u8, secs32(*s)))
                    })
                    .collect(),
            })
        })
        .collect()
}

/// A GPU tally of a record; `None` when its id is missing from the name table.
fn decode_gpu(g: &GpuV1, names: &impl Names) -> Option<GpuTally> {
    let reasons = g
        .reasons
        .iter()
        .filter_map(|(i, s)| Some((*ThrottleReason::ALL.get(usize::from(*i))?, u64::from(*s))))
        .collect();
    Some(GpuTally {
        uuid: names.name(g.id)?.to_owned(),
        sampled_seconds: u64::from(g.sampled),
        healthy_seconds: u64::from(g.healthy),
        degraded_seconds: u64::from(g.degraded),
        unhealthy_seconds: u64::from(g.unhealthy),
        critical_seconds: u64::from(g.critical),
        critical_xids: g.critical_xids,
        warning_xids: g.warning_xids,
        busy_seconds: u64::from(g.busy),
        throttled_busy_seconds: u64::from(g.throttled_busy),
        throttle_reasons: reasons,
    })
}

/// Decodes a record written by [`encode`] into a bucket at `start` of `span` seconds;
/// `None` when the bytes are not a record of this schema. Ids missing from the name table
/// are dropped.
pub fn decode(bytes: &[u8], start: u64, span: u64, names: &impl Names) -> Option<Bucket> {
    let (&schema, rest) = bytes.split_first()?;
    let (r, leases) = match schema {
        SCHEMA_V1 => (postcard::from_bytes::<BucketV1>(rest).ok()?, Vec::new()),
        SCHEMA_V2 => {
            let v2: BucketV2 = postcard::from_bytes(rest).ok()?;
            (v2.base, v2.leases)
        }
        _ => return None,
    };
    let mut b = Bucket::new(start, span);
    b.observed_seconds = u64::from(r.observed).min(span);
    b.agent_starts = u64::from(r.starts);
    b.clock_steps_back = u64::from(r.steps_back);
    for p in r.probes {
        let Some(name) = names.name(p.id) else {
            continue;
        };
        let t = b.probe(name);
        t.merge(&ProbeTally {
            probe: String::new(),
            checks: p.checks,
            outages_started: p.outages_started,
            outages_recovered: p.outages_recovered,
            recovery_seconds_sum: f64::from(p.recovery_sum),
            recovery_seconds_max: f64::from(p.recovery_max),
            requests_ok: p.ok,
            requests_failed: p.failed,
            requests_within_slo: p.within_slo,
            output_tokens: p.tokens,
            ttft: dense(&p.ttft),
            e2e: dense(&p.e2e),
            server: p.server.map(|s| ServerTally {
                requests_ok: s.ok,
                requests_failed: s.failed,
                output_tokens: s.tokens,
                ttft: s.ttft.as_deref().map(dense),
                e2e: s.e2e.as_deref().map(dense),
                ttft_within_slo: s.ttft_within_slo.map(f64::from),
                e2e_within_slo: s.e2e_within_slo.map(f64::from),
                counter_resets: s.resets,
            }),
        });
    }
    // Through the keyed merges, so a record with repeats still decodes sorted.
    for g in r.gpus.iter().filter_map(|g| decode_gpu(g, names)) {
        b.gpu(&g.uuid).merge(&g);
    }
    for l in leases {
        let Some(key) = names.name(l.id) else {
            continue;
        };
        let lease = b.lease(key);
        lease.held_seconds += u64::from(l.held);
        for g in l.gpus.iter().filter_map(|g| decode_gpu(g, names)) {
            lease.gpu(&g.uuid).merge(&g);
        }
    }
    if let Some(j) = r.job {
        b.job = JobTally {
            starts: j.starts,
            outcomes: j.outcomes,
            recoveries: j.recoveries,
            recovery_seconds_sum: f64::from(j.recovery_sum),
            recovery_seconds_max: f64::from(j.recovery_max),
        };
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ThrottleReason;

    #[derive(Default)]
    struct Table(Vec<String>);

    impl Names for Table {
        fn id(&mut self, name: &str) -> Option<u32> {
            if let Some(i) = self.0.iter().position(|n| n == name) {
                return Some(i as u32);
            }
            self.0.push(name.to_owned());
            Some(self.0.len() as u32 - 1)
        }
        fn name(&self, id: u32) -> Option<&str> {
            self.0.get(id as usize).map(String::as_str)
        }
    }

    #[test]
    fn a_bucket_round_trips_and_a_quiet_minute_is_small() {
        let mut b = Bucket::new(120, 60);
        b.observed_seconds = 60;
        b.agent_starts = 1;
        let p = b.probe("vllm");
        p.checks = [4, 0, 0, 0, 0];
        p.requests_ok = 2;
        p.requests_within_slo = 2;
        p.output_tokens = 32;
        p.ttft[3] = 2;
        p.e2e[6] = 2;
        p.recovery_seconds_sum = 12.5;
        p.server = Some(ServerTally {
            requests_ok: Some(900),
            requests_failed: Some(1),
            output_tokens: None,
            ttft: Some([1; LEDGER_BINS]),
            e2e: None,
            ttft_within_slo: Some(880.5),
            e2e_within_slo: None,
            counter_resets: 1,
        });
        for i in 0..8 {
            let g = b.gpu(&format!("GPU-{i:08x}-0000-0000-0000-000000000000"));
            g.sampled_seconds = 60;
            g.healthy_seconds = 60;
            g.busy_seconds = 30;
            g.throttled_busy_seconds = 5;
            g.throttle_reasons = vec![(ThrottleReason::HwSlowdown, 5)];
        }
        b.job.starts = 1;
        b.job.recovery_seconds_max = 3.0;
        let mut names = Table::default();
        let bytes = encode(&b, &mut names);
        assert!(bytes.len() < 300, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes, 120, 60, &names), Some(b));
        assert_eq!(decode(&[9, 1, 2], 0, 60, &names), None);
        assert_eq!(decode(&[], 0, 60, &names), None);
        assert_eq!(decode(&bytes[..bytes.len() / 2], 0, 60, &names), None);
        // No leases: the V1 record older agents read.
        assert_eq!(bytes[0], SCHEMA_V1);
    }

    #[test]
    fn leases_round_trip_in_a_v2_record() {
        let mut b = Bucket::new(60, 60);
        b.observed_seconds = 60;
        b.gpu("GPU-a").sampled_seconds = 60;
        let lease = b.lease("akash1owner/42/1/1/akash1prov");
        lease.held_seconds = 45;
        let g = lease.gpu("GPU-a");
        g.sampled_seconds = 45;
        g.healthy_seconds = 40;
        g.critical_xids = 1;
        g.throttle_reasons = vec![(ThrottleReason::SwPowerCap, 3)];
        b.lease("akash1other/7/1/1/akash1prov").held_seconds = 15;
        let mut names = Table::default();
        let bytes = encode(&b, &mut names);
        assert_eq!(bytes[0], SCHEMA_V2);
        assert_eq!(decode(&bytes, 60, 60, &names), Some(b.clone()));
        // Without the lease tallies the rest is the V1 record.
        let mut plain = b.clone();
        plain.leases.clear();
        let v1 = encode(&plain, &mut names);
        assert_eq!(&bytes[1..v1.len()], &v1[1..]);
    }
}
