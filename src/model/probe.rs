//! Probes of inference servers: check results, outage bookkeeping (`ProbeStatus::apply`),
//! synthetic requests and their fixed-bucket histograms, server-metrics scrapes.

use std::time::{Duration, SystemTime};

use super::*;

/// What a probe found, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeState {
    /// Live, ready, and the expected model (if any) is listed.
    Up,
    /// Live but not ready yet (weights loading, Triton live-not-ready, 503 while starting).
    Loading,
    /// The target (re)started and has not been ready since: refused or not ready here is
    /// start-up, not an outage (until `startup_timeout`). The reason says which.
    Starting,
    /// Ready, but the expected model is missing or readiness is partial.
    Degraded,
    /// Not reachable or answering wrong; see the reason.
    Down,
}

/// The same spelling on both exporters.
impl LabelValue for ProbeState {
    fn prom(self) -> &'static str {
        self.as_str()
    }

    fn otel(self) -> &'static str {
        self.as_str()
    }
}

impl ProbeState {
    pub const ALL: [Self; 5] = [
        Self::Up,
        Self::Loading,
        Self::Starting,
        Self::Degraded,
        Self::Down,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Loading => "loading",
            Self::Starting => "starting",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// Why a probe is not `up`: a bounded set, safe as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeReason {
    ConnectRefused,
    Timeout,
    HttpStatus,
    BadBody,
    ModelMissing,
    Tls,
    RedirectLoop,
    BodyTooLarge,
    Dns,
    /// Up but not ready (only with `loading`).
    NotReady,
}

impl ProbeReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::Timeout => "timeout",
            Self::HttpStatus => "http_status",
            Self::BadBody => "bad_body",
            Self::ModelMissing => "model_missing",
            Self::Tls => "tls",
            Self::RedirectLoop => "redirect_loop",
            Self::BodyTooLarge => "body_too_large",
            Self::Dns => "dns",
            Self::NotReady => "not_ready",
        }
    }
}

/// One check of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSample {
    pub state: ProbeState,
    pub reason: Option<ProbeReason>,
    /// For people (JSON API, logs): e.g. the HTTP status; never a label, never a secret.
    pub detail: String,
    /// How long the whole check took (readiness, and the model list when asked).
    pub latency: Duration,
    /// Models the server listed (bounded), when it has a model list.
    pub models: Vec<String>,
    pub checked_at: SystemTime,
}

/// Upper bounds (seconds) of the agent's own latency histograms: from a 5 ms first token on a
/// warm small model to a 2-minute answer under heavy load.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A latency histogram on [`LATENCY_BUCKETS`]: fixed size, whatever the request count.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// Observations at or below each bound (not cumulative; `+Inf` is `count`).
    pub per_bucket: [u64; LATENCY_BUCKETS.len()],
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            per_bucket: [0; LATENCY_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| secs <= bound) {
            self.per_bucket[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Estimates the `q` quantile (0..=1) like PromQL's `histogram_quantile` (see
    /// [`bucket_quantile`]). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let buckets = self
            .cumulative()
            .map(|(bound, n)| (bound, n as f64))
            .chain([(f64::INFINITY, self.count as f64)]);
        bucket_quantile(buckets, q)
    }

    /// `(upper bound, cumulative count)` per bucket, as Prometheus exposes them.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BUCKETS
            .iter()
            .zip(self.per_bucket.iter())
            .scan(0u64, |total, (&bound, &n)| {
                *total += n;
                Some((bound, *total))
            })
    }
}

/// One synthetic inference request (the cheapest real request for the server's kind).
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceSample {
    /// A complete, well-formed answer arrived (2xx, parseable, at least one token or output).
    pub ok: bool,
    /// Why it failed; `None` when `ok`.
    pub reason: Option<ProbeReason>,
    /// For people (JSON API, logs): HTTP status, server error text (bounded); never a label.
    pub detail: String,
    /// The model named in the request; empty when the server picks.
    pub model: String,
    /// Time to the first token (streaming kinds) or first response byte (KServe v2).
    pub ttft: Option<Duration>,
    /// Sending the request to the last byte of the answer.
    pub duration: Duration,
    /// Tokens generated: the server's own count when it sends one, else streamed chunks.
    pub output_tokens: Option<u64>,
    /// Ollama only: the request (re)loaded the model, so the timing includes a load.
    pub caused_load: bool,
    pub at: SystemTime,
}

impl InferenceSample {
    /// Output tokens per second of the whole request (`output_tokens / duration`).
    pub fn tokens_per_second(&self) -> Option<f64> {
        let tokens = self.output_tokens?;
        let secs = self.duration.as_secs_f64();
        (self.ok && secs > 0.0).then(|| tokens as f64 / secs)
    }
}

/// A probe's synthetic-request history: counters and latency histograms since start.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceStats {
    pub ttft_slo: Duration,
    pub latency_slo: Duration,
    pub last: Option<InferenceSample>,
    pub succeeded: u64,
    pub failed: u64,
    /// Requests that succeeded within both SLOs.
    pub within_slo: u64,
    /// Requests that failed or missed an SLO.
    pub slo_violations: u64,
    pub output_tokens_total: u64,
    /// Successful requests only: a timeout is counted as a failure, not as a latency.
    pub ttft: LatencyHistogram,
    pub duration: LatencyHistogram,
}

impl InferenceStats {
    pub fn new(ttft_slo: Duration, latency_slo: Duration) -> Self {
        Self {
            ttft_slo,
            latency_slo,
            last: None,
            succeeded: 0,
            failed: 0,
            within_slo: 0,
            slo_violations: 0,
            output_tokens_total: 0,
            ttft: LatencyHistogram::default(),
            duration: LatencyHistogram::default(),
        }
    }

    /// Whether a request met both SLOs (a failed request never does).
    pub fn meets_slo(&self, sample: &InferenceSample) -> bool {
        sample.ok
            && sample.duration <= self.latency_slo
            && sample.ttft.is_none_or(|t| t <= self.ttft_slo)
    }

    pub fn apply(&mut self, sample: InferenceSample) {
        if sample.ok {
            self.succeeded += 1;
            if let Some(ttft) = sample.ttft {
                self.ttft.observe(ttft);
            }
            self.duration.observe(sample.duration);
            self.output_tokens_total += sample.output_tokens.unwrap_or(0);
        } else {
            self.failed += 1;
        }
        if self.meets_slo(&sample) {
            self.within_slo += 1;
        } else {
            self.slo_violations += 1;
        }
        self.last = Some(sample);
    }
}

/// A probe's scrapes of the server's own /metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerScrapes {
    pub attempts: u64,
    pub failures: u64,
    /// The last scrape's failure (`None` when it succeeded): reason and detail.
    pub last_error: Option<(ProbeReason, String)>,
    pub last_at: Option<SystemTime>,
    pub last_duration: Duration,
    /// What the last successful scrape lifted (kept while later scrapes fail).
    pub metrics: Option<ServerMetrics>,
}

impl ServerScrapes {
    pub fn apply(
        &mut self,
        result: Result<ServerMetrics, (ProbeReason, String)>,
        took: Duration,
        at: SystemTime,
    ) {
        self.attempts += 1;
        self.last_at = Some(at);
        self.last_duration = took;
        match result {
            Ok(metrics) => {
                self.last_error = None;
                self.metrics = Some(metrics);
            }
            Err(error) => {
                self.failures += 1;
                self.last_error = Some(error);
            }
        }
    }

    /// Whether the last scrape succeeded (`None` before the first).
    pub fn last_ok(&self) -> Option<bool> {
        self.last_at.map(|_| self.last_error.is_none())
    }
}

/// A span of time a probe was `down`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutage {
    pub start: SystemTime,
    /// `None` while the outage goes on.
    pub end: Option<SystemTime>,
    pub cause: ProbeReason,
}

/// Where a probe stands with its target's start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Not checked yet, never told of a start: the first check opens the start-up.
    Pending,
    /// Starting since then (the target's (re)start, or the probe's first check).
    Since(SystemTime),
    /// Ready once since the last start, or the start-up ran past `startup_timeout`.
    Done,
}

/// A probe's latest check and outage history, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStatus {
    pub name: String,
    pub kind: &'static str,
    pub interval: Duration,
    /// `None` until the first check finished.
    pub last: Option<ProbeSample>,
    /// The most recent outages, oldest first (bounded).
    pub outages: Vec<ProbeOutage>,
    /// Outages started since the agent started.
    pub outages_total: u64,
    /// How long the last finished outage lasted.
    pub last_recovery: Option<Duration>,
    /// The start-up in progress, if any: while it lasts, `down` and `loading` read `starting`.
    pub startup: Startup,
    /// How long a start-up may last before refusals count as an outage again.
    pub startup_timeout: Duration,
    /// From the last start (of the target, else of the probe) to its first ready check.
    pub last_ready_after: Option<Duration>,
    /// Checks since the agent started, by the state they were judged (after start-up
    /// handling), in [`ProbeState::ALL`] order: the ledger takes deltas of these.
    pub checks: [u64; 5],
    /// Outages that ended since the agent started, and their summed length in seconds.
    pub recovered_total: u64,
    pub recovery_seconds_total: f64,
    /// Synthetic requests, when the probe sends them.
    pub inference: Option<InferenceStats>,
    /// Scrapes of the server's own metrics, when the probe reads them.
    pub server: Option<ServerScrapes>,
}

impl ProbeStatus {
    pub fn new(name: &str, kind: &'static str, interval: Duration) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            interval,
            last: None,
            outages: Vec::new(),
            outages_total: 0,
            last_recovery: None,
            startup: Startup::Pending,
            startup_timeout: Duration::ZERO,
            last_ready_after: None,
            checks: [0; 5],
            recovered_total: 0,
            recovery_seconds_total: 0.0,
            inference: None,
            server: None,
        }
    }

    /// The same probe, scraping the server's own metrics.
    pub fn with_server_metrics(mut self) -> Self {
        self.server = Some(ServerScrapes::default());
        self
    }

    /// The same probe, sending synthetic requests judged against these SLOs.
    pub fn with_inference(mut self, ttft_slo: Duration, latency_slo: Duration) -> Self {
        self.inference = Some(InferenceStats::new(ttft_slo, latency_slo));
        self
    }

    /// The same probe, counting refusals as start-up for `timeout` after each start.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// When the current start-up began; `None` when the probe is not starting.
    pub fn starting_since(&self) -> Option<SystemTime> {
        match self.startup {
            Startup::Since(since) => Some(since),
            Startup::Pending | Startup::Done => None,
        }
    }

    /// The target (re)started at `at`: a start-up begins. An outage still open ends there,
    /// because from then on the target is starting, and starting is never an outage.
    pub fn target_started(&mut self, at: SystemTime) {
        if let Some(open) = self.outages.last_mut().filter(|o| o.end.is_none()) {
            open.end = Some(at.max(open.start));
        }
        self.startup = Startup::Since(at);
    }

    /// Takes in a check. While starting (since the target's start or the probe's first
    /// check, until the first `up`/`degraded` or `startup_timeout`), `down` and `loading`
    /// read `starting`: never an outage, never a recovery. Otherwise an outage starts when
    /// the probe goes `down`, and ends (recording the recovery time) at the first check that
    /// is not `down`. Keeps `max_outages`.
    pub fn apply(&mut self, mut sample: ProbeSample, max_outages: usize) {
        let at = sample.checked_at;
        let since = match self.startup {
            Startup::Pending => Some(at),
            Startup::Since(since) => Some(since),
            Startup::Done => None,
        };
        if let Some(since) = since {
            let elapsed = at.duration_since(since).unwrap_or_default();
            if matches!(sample.state, ProbeState::Up | ProbeState::Degraded) {
                self.startup = Startup::Done;
                self.last_ready_after = Some(elapsed);
            } else if elapsed < self.startup_timeout {
                self.startup = Startup::Since(since);
                sample.state = ProbeState::Starting;
                self.count_check(sample.state);
                self.last = Some(sample);
                return;
            } else {
                // Past the timeout: this check is judged like any other from here on.
                self.startup = Startup::Done;
            }
        }
        let open = self.outages.last_mut().filter(|o| o.end.is_none());
        match (sample.state, sample.reason, open) {
            (ProbeState::Down, _, Some(_)) => {}
            (ProbeState::Down, reason, None) => {
                self.outages_total += 1;
                if max_outages > 0 {
                    if self.outages.len() >= max_outages {
                        self.outages.remove(0);
                    }
                    self.outages.push(ProbeOutage {
                        start: at,
                        end: None,
                        cause: reason.unwrap_or(ProbeReason::HttpStatus),
                    });
                }
            }
            (_, _, Some(open)) => {
                open.end = Some(at);
                let took = at.duration_since(open.start).unwrap_or_default();
                self.last_recovery = Some(took);
                self.recovered_total += 1;
                self.recovery_seconds_total += took.as_secs_f64();
            }
            (_, _, None) => {}
        }
        self.count_check(sample.state);
        self.last = Some(sample);
    }

    fn count_check(&mut self, state: ProbeState) {
        if let Some(i) = ProbeState::ALL.iter().position(|s| *s == state) {
            self.checks[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_buckets_and_quantiles() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [3, 40, 60, 70, 200_000] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count, 5);
        assert!((h.sum - 200.173).abs() < 1e-9);
        let cumulative: Vec<_> = h.cumulative().collect();
        assert_eq!(cumulative[0], (0.005, 1));
        assert_eq!(cumulative[3], (0.05, 2));
        assert_eq!(cumulative[4], (0.1, 4));
        // The 200 s one is past every bound: only in +Inf.
        assert_eq!(cumulative.last(), Some(&(120.0, 4)));
        // Rank 2.5 falls in (0.05, 0.1] holding ranks 3..4: a quarter of the way in.
        assert!((h.quantile(0.5).unwrap() - 0.0625).abs() < 1e-9);
        assert_eq!(h.quantile(1.0), Some(120.0));
        assert_eq!(h.quantile(0.0), Some(0.0));
    }

    fn inference(ok: bool, ttft_ms: u64, total_ms: u64) -> InferenceSample {
        InferenceSample {
            ok,
            reason: (!ok).then_some(ProbeReason::Timeout),
            detail: String::new(),
            model: "m".to_owned(),
            ttft: ok.then(|| Duration::from_millis(ttft_ms)),
            duration: Duration::from_millis(total_ms),
            output_tokens: ok.then_some(4),
            caused_load: false,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn inference_stats_count_outcomes_slo_and_tokens() {
        let mut s = InferenceStats::new(Duration::from_millis(100), Duration::from_millis(500));
        s.apply(inference(true, 50, 200));
        s.apply(inference(true, 150, 200)); // first token too slow
        s.apply(inference(true, 50, 900)); // whole answer too slow
        s.apply(inference(false, 0, 10_000));
        assert_eq!((s.succeeded, s.failed), (3, 1));
        assert_eq!((s.within_slo, s.slo_violations), (1, 3));
        assert_eq!(s.output_tokens_total, 12);
        // Failures are not latencies.
        assert_eq!(s.duration.count, 3);
        assert_eq!(s.ttft.count, 3);
        assert_eq!(s.last.as_ref().map(|l| l.ok), Some(false));
        let fast = inference(true, 50, 200);
        assert_eq!(fast.tokens_per_second(), Some(20.0));
    }

    fn check(state: ProbeState, secs: u64) -> ProbeSample {
        ProbeSample {
            state,
            reason: (state == ProbeState::Down).then_some(ProbeReason::Timeout),
            detail: String::new(),
            latency: Duration::ZERO,
            models: Vec::new(),
            checked_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn an_outage_opens_on_down_and_closes_with_its_recovery_time() {
        let mut s = ProbeStatus::new("p", "vllm", Duration::from_secs(1));
        s.apply(check(ProbeState::Up, 1), 4);
        assert_eq!((s.outages_total, s.outages.len()), (0, 0));
        s.apply(check(ProbeState::Down, 2), 4);
        s.apply(check(ProbeState::Down, 3), 4);
        assert_eq!(s.outages_total, 1);
        assert_eq!(s.outages[0].end, None);
        assert_eq!(s.outages[0].cause, ProbeReason::Timeout);
        assert_eq!(s.last_recovery, None);
        s.apply(check(ProbeState::Loading, 7), 4);
        assert_eq!(
            s.outages[0].end,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(7))
        );
        assert_eq!(s.last_recovery, Some(Duration::from_secs(5)));
        s.apply(check(ProbeState::Up, 8), 4);
        assert_eq!(s.outages_total, 1);
        assert_eq!(s.last.as_ref().map(|l| l.state), Some(ProbeState::Up));
    }

    #[test]
    fn starting_is_neither_an_outage_nor_a_recovery() {
        let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let mut s = ProbeStatus::new("p", "vllm", Duration::from_secs(10))
            .with_startup_timeout(Duration::from_secs(60));
        assert_eq!(s.startup, Startup::Pending);
        s.apply(check(ProbeState::Down, 1), 4);
        assert_eq!(s.last.as_ref().map(|l| l.state), Some(ProbeState::Starting));
        assert_eq!(
            s.last.as_ref().and_then(|l| l.reason),
            Some(ProbeReason::Timeout)
        );
        assert_eq!(s.starting_since(), Some(t(1)));
        s.apply(check(ProbeState::Loading, 30), 4);
        assert_eq!(s.last.as_ref().map(|l| l.state), Some(ProbeState::Starting));
        s.apply(check(ProbeState::Up, 41), 4);
        assert_eq!((s.outages_total, s.last_recovery), (0, None));
        assert_eq!(s.last_ready_after, Some(Duration::from_secs(40)));
        assert_eq!(s.starting_since(), None);
        // Once ready, down is an outage again.
        s.apply(check(ProbeState::Down, 50), 4);
        assert_eq!(s.outages_total, 1);
        // A restart ends the outage where it began starting, and starts again.
        s.target_started(t(55));
        assert_eq!(s.outages[0].end, Some(t(55)));
        s.apply(check(ProbeState::Down, 56), 4);
        assert_eq!(s.last.as_ref().map(|l| l.state), Some(ProbeState::Starting));
        s.apply(check(ProbeState::Up, 58), 4);
        assert_eq!((s.outages_total, s.last_recovery), (1, None));
        assert_eq!(s.last_ready_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_start_up_past_its_timeout_is_an_outage() {
        let mut s = ProbeStatus::new("p", "vllm", Duration::from_secs(10))
            .with_startup_timeout(Duration::from_secs(60));
        s.target_started(SystemTime::UNIX_EPOCH);
        s.apply(check(ProbeState::Down, 59), 4);
        assert_eq!(s.outages_total, 0);
        s.apply(check(ProbeState::Down, 60), 4);
        assert_eq!(s.last.as_ref().map(|l| l.state), Some(ProbeState::Down));
        assert_eq!(s.outages_total, 1);
        assert_eq!(s.last_ready_after, None);
    }

    #[test]
    fn the_outage_log_is_bounded_but_the_count_is_not() {
        let mut s = ProbeStatus::new("p", "tcp", Duration::from_secs(1));
        for i in 0..10 {
            s.apply(check(ProbeState::Down, i * 2), 3);
            s.apply(check(ProbeState::Up, i * 2 + 1), 3);
        }
        assert_eq!(s.outages_total, 10);
        assert_eq!(s.outages.len(), 3);
        assert_eq!(
            s.outages[2].start,
            SystemTime::UNIX_EPOCH + Duration::from_secs(18)
        );
        let mut none = ProbeStatus::new("p", "tcp", Duration::from_secs(1));
        none.apply(check(ProbeState::Down, 1), 0);
        none.apply(check(ProbeState::Up, 2), 0);
        assert_eq!((none.outages_total, none.outages.len()), (1, 0));
    }
}
