//! The evidence ledger's data: per-minute (and per-hour roll-up) buckets of what the
//! provider-quality score needs, and [`Evidence`], the sum of the buckets in one window.
//!
//! Everything here is a count of what happened inside the bucket (a delta), never a running
//! total, so buckets add up: an hour is the merge of its minutes, a window the merge of its
//! buckets. Times are Unix seconds (`u64`) so the data is plain and the judgement
//! (`score::evaluate`) needs no clock. `evidence::ledger` fills, encodes and keeps them.

use super::*;

/// Seconds in a minute bucket.
pub const MINUTE_SECONDS: u64 = 60;
/// Seconds in an hourly roll-up.
pub const HOUR_SECONDS: u64 = 3600;

/// Bins of the ledger's latency histograms: [`LATENCY_BUCKETS`] then `+Inf`.
pub const LEDGER_BINS: usize = LATENCY_BUCKETS.len() + 1;

/// Observations per latency bin (not cumulative; the last bin is above every bound).
pub type Bins = [u64; LEDGER_BINS];

/// One bucket of evidence: a minute, or an hour rolled up from minutes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bucket {
    /// Unix seconds, a multiple of `span`.
    pub start: u64,
    /// [`MINUTE_SECONDS`] or [`HOUR_SECONDS`] (a window's sum: its length).
    pub span: u64,
    /// Seconds the agent was running and accounting inside the bucket (≤ `span`): the rest is
    /// unobserved (the agent was down), which the score never reads as up or down.
    pub observed_seconds: u64,
    /// Times the agent started inside the bucket.
    pub agent_starts: u64,
    /// Times the wall clock stepped backwards while accounting into this bucket.
    pub clock_steps_back: u64,
    /// Per probe, by name; sorted by name.
    pub probes: Vec<ProbeTally>,
    /// Per GPU, by UUID; sorted by UUID.
    pub gpus: Vec<GpuTally>,
    /// The wrapped job, when gpulse wraps one.
    pub job: JobTally,
    /// Per Akash lease, by key (`NamespaceLease::key`); sorted by key: what the lease's GPUs
    /// went through while the lease held them (`[kubernetes] lease_labels`).
    pub leases: Vec<LeaseTally>,
}

/// What one Akash lease's GPUs went through inside a bucket, counted only while the kubelet
/// had them assigned to the lease's namespace: a previous tenant's Xid is not the lease's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaseTally {
    /// `owner/dseq/gseq/oseq/provider` (`NamespaceLease::key`).
    pub lease: String,
    /// Seconds the lease held at least one freshly sampled GPU: its observed time.
    pub held_seconds: u64,
    /// Per GPU, by UUID; sorted by UUID. The same counts as [`Bucket::gpus`], restricted to
    /// the time the lease held the GPU.
    pub gpus: Vec<GpuTally>,
}

/// What one probe saw inside a bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeTally {
    pub probe: String,
    /// Checks by state, in [`ProbeState::ALL`] order (up, loading, starting, degraded, down).
    pub checks: [u64; 5],
    /// Outages that began (a check went `down` outside start-up).
    pub outages_started: u64,
    /// Outages that ended, and their lengths: sum and longest, seconds.
    pub outages_recovered: u64,
    pub recovery_seconds_sum: f64,
    pub recovery_seconds_max: f64,
    /// Synthetic requests.
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Requests that succeeded within both the TTFT and the latency SLO.
    pub requests_within_slo: u64,
    pub output_tokens: u64,
    /// Successful requests' time to first token and end-to-end latency.
    pub ttft: Bins,
    pub e2e: Bins,
    /// The server's own counters (lifted from its /metrics), when the probe scrapes them.
    pub server: Option<ServerTally>,
}

/// Deltas of an inference server's own counters inside a bucket (organic traffic).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerTally {
    /// Requests the server finished successfully / failed. `None`: not exposed.
    pub requests_ok: Option<u64>,
    pub requests_failed: Option<u64>,
    /// Output tokens generated.
    pub output_tokens: Option<u64>,
    /// TTFT and end-to-end latency re-binned onto [`LEDGER_BINS`] (linear within the server's
    /// buckets); `None`: the server exposes no such histogram.
    pub ttft: Option<Bins>,
    pub e2e: Option<Bins>,
    /// Requests whose TTFT (end-to-end latency) met the probe's SLO, estimated on the
    /// server's own buckets.
    pub ttft_within_slo: Option<f64>,
    pub e2e_within_slo: Option<f64>,
    /// Counter resets seen (the server restarted): the value after a reset counts as the delta.
    pub counter_resets: u64,
}

/// What one GPU went through inside a bucket, in seconds of accounting time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuTally {
    pub uuid: String,
    /// Seconds a fresh sample of this GPU was at hand.
    pub sampled_seconds: u64,
    /// Seconds per health state: healthy, degraded, unhealthy.
    pub healthy_seconds: u64,
    pub degraded_seconds: u64,
    pub unhealthy_seconds: u64,
    /// Seconds a critical condition held (an `unhealthy` state: critical Xid, lost GPU,
    /// recovery action, failed row remap…), the hard gate's input.
    pub critical_seconds: u64,
    /// Critical and warning Xid occurrences.
    pub critical_xids: u64,
    pub warning_xids: u64,
    /// Seconds the GPU was busy (utilization above the score's busy threshold).
    pub busy_seconds: u64,
    /// Busy seconds with a penalised clock-event reason active (hardware slowdown, thermal,
    /// power brake; not the software power cap, which is the operator's choice).
    pub throttled_busy_seconds: u64,
    /// Busy seconds per active reason (the software power cap included), sorted by reason.
    pub throttle_reasons: Vec<(ThrottleReason, u64)>,
}

/// The wrapped job inside a bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobTally {
    pub starts: u64,
    /// Runs ended, per [`JobOutcome::ALL`] order.
    pub outcomes: [u64; 6],
    /// Restarts that became ready again, and the time from the previous run's end to ready.
    pub recoveries: u64,
    pub recovery_seconds_sum: f64,
    pub recovery_seconds_max: f64,
}

fn add_bins(into: &mut Bins, from: &Bins) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.saturating_add(*b);
    }
}

fn add_opt_bins(into: &mut Option<Bins>, from: &Option<Bins>) {
    if let Some(from) = from {
        add_bins(into.get_or_insert([0; LEDGER_BINS]), from);
    }
}

fn add_opt(into: &mut Option<u64>, from: Option<u64>) {
    if let Some(from) = from {
        *into = Some(into.unwrap_or(0).saturating_add(from));
    }
}

fn add_opt_f(into: &mut Option<f64>, from: Option<f64>) {
    if let Some(from) = from {
        *into = Some(into.unwrap_or(0.0) + from);
    }
}

/// The entry keyed `key` in a list sorted by key, inserted (default) when missing.
fn entry<'a, T: Default>(
    list: &'a mut Vec<T>,
    key: &str,
    key_of: impl Fn(&T) -> &str,
    set_key: impl FnOnce(&mut T),
) -> &'a mut T {
    let at = match list.binary_search_by(|t| key_of(t).cmp(key)) {
        Ok(i) => i,
        Err(i) => {
            let mut fresh = T::default();
            set_key(&mut fresh);
            list.insert(i, fresh);
            i
        }
    };
    &mut list[at]
}

impl ProbeTally {
    pub fn merge(&mut self, o: &ProbeTally) {
        for (a, b) in self.checks.iter_mut().zip(&o.checks) {
            *a = a.saturating_add(*b);
        }
        self.outages_started += o.outages_started;
        self.outages_recovered += o.outages_recovered;
        self.recovery_seconds_sum += o.recovery_seconds_sum;
        self.recovery_seconds_max = self.recovery_seconds_max.max(o.recovery_seconds_max);
        self.requests_ok += o.requests_ok;
        self.requests_failed += o.requests_failed;
        self.requests_within_slo += o.requests_within_slo;
        self.output_tokens += o.output_tokens;
        add_bins(&mut self.ttft, &o.ttft);
        add_bins(&mut self.e2e, &o.e2e);
        if let Some(server) = &o.server {
            self.server
                .get_or_insert_with(Default::default)
                .merge(server);
        }
    }

    /// Checks of any state.
    pub fn checks_total(&self) -> u64 {
        self.checks.iter().sum()
    }

    /// Checks in one state.
    pub fn checks_in(&self, state: ProbeState) -> u64 {
        let i = ProbeState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.checks[i]
    }
}

impl ServerTally {
    pub fn merge(&mut self, o: &ServerTally) {
        add_opt(&mut self.requests_ok, o.requests_ok);
        add_opt(&mut self.requests_failed, o.requests_failed);
        add_opt(&mut self.output_tokens, o.output_tokens);
        add_opt_bins(&mut self.ttft, &o.ttft);
        add_opt_bins(&mut self.e2e, &o.e2e);
        add_opt_f(&mut self.ttft_within_slo, o.ttft_within_slo);
        add_opt_f(&mut self.e2e_within_slo, o.e2e_within_slo);
        self.counter_resets += o.counter_resets;
    }
}

impl GpuTally {
    pub fn merge(&mut self, o: &GpuTally) {
        self.sampled_seconds += o.sampled_seconds;
        self.healthy_seconds += o.healthy_seconds;
        self.degraded_seconds += o.degraded_seconds;
        self.unhealthy_seconds += o.unhealthy_seconds;
        self.critical_seconds += o.critical_seconds;
        self.critical_xids += o.critical_xids;
        self.warning_xids += o.warning_xids;
        self.busy_seconds += o.busy_seconds;
        self.throttled_busy_seconds += o.throttled_busy_seconds;
        for (reason, secs) in &o.throttle_reasons {
            match self
                .throttle_reasons
                .binary_search_by(|(r, _)| r.cmp(reason))
            {
                Ok(i) => self.throttle_reasons[i].1 += secs,
                Err(i) => self.throttle_reasons.insert(i, (*reason, *secs)),
            }
        }
    }
}

impl LeaseTally {
    /// The GPU's tally, created when missing.
    pub fn gpu(&mut self, uuid: &str) -> &mut GpuTally {
        entry(
            &mut self.gpus,
            uuid,
            |t| &t.uuid,
            |t| t.uuid = uuid.to_owned(),
        )
    }

    pub fn merge(&mut self, o: &LeaseTally) {
        self.held_seconds += o.held_seconds;
        for g in &o.gpus {
            self.gpu(&g.uuid).merge(g);
        }
    }

    /// Whether any GPU of the lease had a critical second or Xid.
    pub fn critical(&self) -> bool {
        self.gpus
            .iter()
            .any(|g| g.critical_seconds > 0 || g.critical_xids > 0)
    }
}

impl JobTally {
    pub fn merge(&mut self, o: &JobTally) {
        self.starts += o.starts;
        for (a, b) in self.outcomes.iter_mut().zip(&o.outcomes) {
            *a += b;
        }
        self.recoveries += o.recoveries;
        self.recovery_seconds_sum += o.recovery_seconds_sum;
        self.recovery_seconds_max = self.recovery_seconds_max.max(o.recovery_seconds_max);
    }

    /// Runs that ended, any outcome.
    pub fn ended(&self) -> u64 {
        self.outcomes.iter().sum()
    }
}

impl Bucket {
    /// An empty bucket of `span` seconds starting at `start`.
    pub fn new(start: u64, span: u64) -> Self {
        Self {
            start,
            span,
            ..Self::default()
        }
    }

    /// Unix seconds just past the bucket.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.span)
    }

    /// The probe's tally, created when missing.
    pub fn probe(&mut self, name: &str) -> &mut ProbeTally {
        entry(
            &mut self.probes,
            name,
            |t| &t.probe,
            |t| t.probe = name.to_owned(),
        )
    }

    /// The GPU's tally, created when missing.
    pub fn gpu(&mut self, uuid: &str) -> &mut GpuTally {
        entry(
            &mut self.gpus,
            uuid,
            |t| &t.uuid,
            |t| t.uuid = uuid.to_owned(),
        )
    }

    /// The lease's tally, created when missing.
    pub fn lease(&mut self, key: &str) -> &mut LeaseTally {
        entry(
            &mut self.leases,
            key,
            |t| &t.lease,
            |t| t.lease = key.to_owned(),
        )
    }

    /// Adds `other`'s counts into this bucket (start and span stay).
    pub fn merge(&mut self, other: &Bucket) {
        self.observed_seconds += other.observed_seconds;
        self.agent_starts += other.agent_starts;
        self.clock_steps_back += other.clock_steps_back;
        for p in &other.probes {
            self.probe(&p.probe).merge(p);
        }
        for g in &other.gpus {
            self.gpu(&g.uuid).merge(g);
        }
        self.job.merge(&other.job);
        for l in &other.leases {
            self.lease(&l.lease).merge(l);
        }
    }

    /// Whether nothing was accounted into the bucket.
    pub fn is_empty(&self) -> bool {
        self.observed_seconds == 0 && self.agent_starts == 0
    }
}

/// The evidence of one window: the merge of every bucket that overlaps it, and when the
/// critical GPU condition was last seen (the health gate holds for a while after it clears).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    /// Start and end of the window, Unix seconds; `sum.span` is its length.
    pub sum: Bucket,
    /// Buckets merged.
    pub buckets: u64,
    /// Unix seconds just past the last bucket holding a critical GPU second or Xid.
    pub last_critical_end: Option<u64>,
    /// Unix seconds just past the newest bucket merged.
    pub newest_end: Option<u64>,
    /// Per lease in `sum.leases` (same order): when it was last seen and last critical.
    pub lease_marks: Vec<LeaseMark>,
}

/// When a lease was last seen in a window's buckets, and last had a critical GPU condition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseMark {
    pub lease: String,
    /// Unix seconds just past the newest bucket holding the lease.
    pub last_end: u64,
    /// Unix seconds just past the newest bucket where one of its GPUs was critical.
    pub last_critical_end: Option<u64>,
}

impl Evidence {
    /// The evidence of the window `[end − len, end)`: every bucket that starts inside it. A
    /// bucket from the future (the clock stepped back) is left out.
    pub fn over<'a>(buckets: impl IntoIterator<Item = &'a Bucket>, end: u64, len: u64) -> Self {
        let mut e = Self::empty(end, len);
        for b in buckets {
            e.add(b);
        }
        e
    }

    /// A window with nothing in it yet.
    pub fn empty(end: u64, len: u64) -> Self {
        Self {
            sum: Bucket::new(end.saturating_sub(len), len),
            ..Self::default()
        }
    }

    /// Adds one bucket when it starts inside the window; returns whether it did.
    pub fn add(&mut self, b: &Bucket) -> bool {
        if b.start < self.sum.start || b.start >= self.sum.end() {
            return false;
        }
        self.sum.merge(b);
        self.buckets += 1;
        self.newest_end = Some(self.newest_end.unwrap_or(0).max(b.end()));
        if b.gpus
            .iter()
            .any(|g| g.critical_seconds > 0 || g.critical_xids > 0)
        {
            self.last_critical_end = Some(self.last_critical_end.unwrap_or(0).max(b.end()));
        }
        for l in &b.leases {
            let mark = entry(
                &mut self.lease_marks,
                &l.lease,
                |m| &m.lease,
                |m| m.lease = l.lease.clone(),
            );
            mark.last_end = mark.last_end.max(b.end());
            if l.critical() {
                mark.last_critical_end = Some(mark.last_critical_end.unwrap_or(0).max(b.end()));
            }
        }
        true
    }

    /// The window as one lease saw it, up to the lease's last minute in it: its GPUs while it
    /// held them, its held seconds as the observed time, no probes and no job (those are the
    /// node's, not the lease's). `None` when the lease is not in the window.
    pub fn of_lease(&self, key: &str) -> Option<Evidence> {
        let i = self
            .sum
            .leases
            .binary_search_by(|l| l.lease.as_str().cmp(key))
            .ok()?;
        let tally = &self.sum.leases[i];
        let mark = self.lease_marks.iter().find(|m| m.lease == key);
        // The lease's window ends with its last minute here: a lease that left while the
        // health gate held is judged closed, not cleared by time it was not here for.
        let end = mark.map_or(self.end(), |m| m.last_end.min(self.end()));
        Some(Evidence {
            sum: Bucket {
                start: self.sum.start,
                span: end.saturating_sub(self.sum.start),
                observed_seconds: tally.held_seconds,
                gpus: tally.gpus.clone(),
                ..Bucket::default()
            },
            buckets: self.buckets,
            last_critical_end: mark.and_then(|m| m.last_critical_end),
            newest_end: mark.map(|m| m.last_end),
            lease_marks: Vec::new(),
        })
    }

    /// The window's start and end, Unix seconds.
    pub fn start(&self) -> u64 {
        self.sum.start
    }

    pub fn end(&self) -> u64 {
        self.sum.end()
    }
}

/// Where the ledger stands, for the self-metrics and /v1/score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerStatus {
    /// Kept on disk in `agent.state_dir` (else in memory only: lost on restart).
    pub persistent: bool,
    /// Minute and hour records held.
    pub minutes: u64,
    pub hours: u64,
    /// Bytes of the records (in memory; the file holds the same plus the store's pages).
    pub bytes: u64,
    /// Unix seconds of the oldest record.
    pub oldest: Option<u64>,
    /// Writes to disk that failed or were dropped (the writer was behind).
    pub write_failures: u64,
    /// Records that did not decode and were skipped.
    pub undecodable: u64,
}

/// Re-bins a server's cumulative histogram delta (`(upper bound seconds, count ≤ it)`,
/// ascending, ending in `+Inf`) onto [`LEDGER_BINS`]: the cumulative count at each of our
/// bounds is read linearly within the server's bucket it falls in (as PromQL's
/// `histogram_fraction` does), so the total is kept exactly.
pub fn rebin(cumulative: &[(f64, f64)]) -> Option<Bins> {
    let total = cumulative.last().filter(|(le, _)| le.is_infinite())?.1;
    if !total.is_finite() || total < 0.0 {
        return None;
    }
    let mut bins = [0u64; LEDGER_BINS];
    let mut below = 0u64;
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        let at = cumulative_at(cumulative, *bound).round().max(0.0) as u64;
        let at = at.max(below).min(total.round() as u64);
        bins[i] = at - below;
        below = at;
    }
    bins[LEDGER_BINS - 1] = (total.round() as u64).saturating_sub(below);
    Some(bins)
}

/// The cumulative count at `x` seconds of a cumulative histogram, linear within the bucket
/// `x` falls in (0 below the first bucket's lower bound of 0).
pub fn cumulative_at(cumulative: &[(f64, f64)], x: f64) -> f64 {
    let mut lower = (0.0, 0.0);
    for &(le, count) in cumulative {
        if x <= le {
            if le.is_infinite() {
                return lower.1;
            }
            let width = le - lower.0;
            if width <= 0.0 {
                return count;
            }
            return lower.1 + (count - lower.1) * ((x - lower.0) / width).clamp(0.0, 1.0);
        }
        lower = (le, count.max(lower.1));
    }
    lower.1
}

/// Puts one latency into its bin.
pub fn bin_of(seconds: f64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(LEDGER_BINS - 1)
}

/// The `q` quantile of binned latencies (see [`bucket_quantile`]).
pub fn bins_quantile(bins: &Bins, q: f64) -> Option<f64> {
    let mut running = 0u64;
    let cumulative = LATENCY_BUCKETS.iter().zip(bins.iter()).map(|(le, n)| {
        running += n;
        (*le, running as f64)
    });
    let total: u64 = bins.iter().sum();
    let all: Vec<(f64, f64)> = cumulative.chain([(f64::INFINITY, total as f64)]).collect();
    bucket_quantile(all, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_merge_by_key_and_windows_skip_outside_buckets() {
        let mut a = Bucket::new(60, 60);
        a.observed_seconds = 60;
        a.probe("b").checks[0] = 2;
        a.probe("a").checks[4] = 1;
        a.gpu("GPU-1").critical_seconds = 5;
        let mut b = Bucket::new(120, 60);
        b.observed_seconds = 30;
        b.probe("a").checks[0] = 3;
        let future = Bucket::new(600, 60);
        let e = Evidence::over([&a, &b, &future], 180, 120);
        assert_eq!(e.buckets, 2);
        assert_eq!(e.sum.observed_seconds, 90);
        let names: Vec<_> = e.sum.probes.iter().map(|p| p.probe.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(e.sum.probes[0].checks, [3, 0, 0, 0, 1]);
        assert_eq!(e.last_critical_end, Some(120));
        assert_eq!(e.newest_end, Some(180));
    }

    #[test]
    fn rebin_keeps_the_total_and_splits_linearly() {
        // 10 requests ≤ 0.2 s, 10 more ≤ 1 s, 2 above.
        let h = [(0.2, 10.0), (1.0, 20.0), (f64::INFINITY, 22.0)];
        let bins = rebin(&h).unwrap();
        assert_eq!(bins.iter().sum::<u64>(), 22);
        // 0.1 s is half-way into (0, 0.2]: 5 requests at or below it.
        let upto_0_1: u64 = bins[..=bin_of(0.1)].iter().sum();
        assert_eq!(upto_0_1, 5);
        assert_eq!(bins[LEDGER_BINS - 1], 2);
        assert!((cumulative_at(&h, 0.6) - 15.0).abs() < 1e-9);
        assert_eq!(rebin(&[(1.0, 3.0)]), None);
    }
}
