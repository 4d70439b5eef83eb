//! `gpulse bench`'s figures, pure: a step's tally of timed requests (bounded samples, nearest-rank
//! percentiles), its summary, the best step under the SLOs and the cost per million tokens.
//!
//! The load runner (`cli/bench`) feeds each finished request to a [`StepTally`]; everything
//! here is arithmetic over what it was given, so it is tested without a server or a clock.

use std::time::{Duration, SystemTime};

use super::{InferenceSample, ProbeReason};

/// Samples kept per series and step (TTFT, inter-token gap, end to end). Past it, a uniform
/// reservoir keeps a fair sample, so a long step at high concurrency costs bounded memory.
pub const MAX_SAMPLES: usize = 100_000;

/// Failure reasons kept per step with an example each (the reasons are a bounded set).
const MAX_FAILURE_KINDS: usize = 16;

/// The objectives a request must meet: first token and whole answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slo {
    pub ttft: Duration,
    pub e2e: Duration,
}

impl Slo {
    /// Whether a request met both (a failed one never does).
    pub fn met_by(&self, sample: &InferenceSample) -> bool {
        sample.ok && sample.duration <= self.e2e && sample.ttft.is_none_or(|ttft| ttft <= self.ttft)
    }
}

/// A lease price, for the cost per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub per_hour: f64,
    pub currency: String,
}

/// What a bench was asked to do (echoed in its report).
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSettings {
    /// The configured probe's name, or `bench` for one built from `--url`.
    pub probe: String,
    pub kind: &'static str,
    pub url: String,
    /// The model named in the requests; empty: the server picks.
    pub model: String,
    /// Concurrency of each step, ascending.
    pub concurrency: Vec<u32>,
    pub step_duration: Duration,
    pub max_tokens: u32,
    /// `Some(n)`: the built-in prompt of `n` words (about `n` tokens); `None`: `--prompt`.
    pub prompt_words: Option<u32>,
    /// Characters of the fixed prompt (without the random prefix).
    pub prompt_chars: usize,
    /// Prompt tokens the server counted for the warm-up request, when it said.
    pub prompt_tokens_reported: Option<u64>,
    /// Whether requests ask the server to ignore end-of-sequence (the kind takes it).
    pub ignore_eos: bool,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Requests started per step at most.
    pub max_requests: Option<u64>,
    pub slo: Slo,
    /// The share of requests that must meet the SLOs for a step to count (`[score]
    /// latency_objective`).
    pub objective: f64,
    pub price: Option<Price>,
}

/// The 50th and 99th percentile of a series, seconds; `None` without samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Observations seen (the percentiles come from at most [`MAX_SAMPLES`] of them).
    pub count: u64,
}

/// Requests that failed for one reason, with the first one's detail.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureCount {
    pub reason: ProbeReason,
    pub count: u64,
    pub example: String,
}

/// One finished step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    pub concurrency: u32,
    /// From the step's start to its last request's end.
    pub elapsed: Duration,
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<FailureCount>,
    pub output_tokens: u64,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Output tokens of successful requests per second.
    pub output_tokens_per_second: f64,
    pub ttft: Quantiles,
    /// Gaps between stream chunks that carried tokens.
    pub inter_token: Quantiles,
    pub e2e: Quantiles,
    /// Requests that met both SLOs.
    pub slo_met: u64,
    /// `slo_met / (ok + failed)`; `None` without requests.
    pub slo_attainment: Option<f64>,
    /// Why the step stopped before its duration (every request failing).
    pub stopped_early: Option<String>,
}

impl StepStats {
    /// Whether the share of requests within the SLOs reaches `objective`.
    pub fn meets(&self, objective: f64) -> bool {
        // Counts, not a float ratio: 99 of 100 meets 0.99 exactly.
        let total = self.ok + self.failed;
        total > 0 && self.slo_met as f64 >= objective * total as f64 - 1e-9
    }
}

/// The highest concurrency that met the objective, or why none did.
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    pub concurrency: Option<u32>,
    /// For people: why this step, or why none.
    pub reason: String,
}

/// A whole bench.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub settings: BenchSettings,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub steps: Vec<StepStats>,
    pub best: Best,
    /// At the best step, with a price.
    pub cost_per_million_output_tokens: Option<f64>,
    /// Why the bench stopped before running every step (server not ready, warm-up failed,
    /// a step that failed every request).
    pub stopped: Option<String>,
    /// Stopped by SIGINT/SIGTERM; the steps so far are kept.
    pub interrupted: bool,
}

impl BenchReport {
    /// Requests that succeeded over all steps.
    pub fn ok_total(&self) -> u64 {
        self.steps.iter().map(|s| s.ok).sum()
    }
}

/// The `q` (0–1) percentile of ascending `sorted` by nearest rank: the smallest value with at
/// least `q` of the values at or below it. `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// A bounded uniform sample of a series (reservoir sampling, algorithm R) with a seeded RNG,
/// so the same inputs keep the same sample.
#[derive(Debug, Clone)]
pub struct Reservoir {
    values: Vec<f64>,
    seen: u64,
    cap: usize,
    rng: fastrand::Rng,
}

impl Reservoir {
    pub fn new(cap: usize, seed: u64) -> Self {
        Self {
            values: Vec::new(),
            seen: 0,
            cap: cap.max(1),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn push(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < self.cap {
            self.values.push(value);
        } else {
            let slot = self.rng.u64(0..self.seen);
            if let Some(kept) = usize::try_from(slot)
                .ok()
                .and_then(|i| self.values.get_mut(i))
            {
                *kept = value;
            }
        }
    }

    /// p50 and p99 of what is kept.
    pub fn quantiles(&self) -> Quantiles {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        Quantiles {
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            count: self.seen,
        }
    }
}

/// One step's requests as they finish.
#[derive(Debug, Clone)]
pub struct StepTally {
    concurrency: u32,
    slo: Slo,
    ok: u64,
    failed: u64,
    failures: Vec<FailureCount>,
    output_tokens: u64,
    slo_met: u64,
    ttft: Reservoir,
    inter_token: Reservoir,
    e2e: Reservoir,
}

impl StepTally {
    pub fn new(concurrency: u32, slo: Slo, seed: u64) -> Self {
        Self::with_cap(concurrency, slo, seed, MAX_SAMPLES)
    }

    /// With `cap` samples per series (tests use a small one).
    pub fn with_cap(concurrency: u32, slo: Slo, seed: u64, cap: usize) -> Self {
        Self {
            concurrency,
            slo,
            ok: 0,
            failed: 0,
            failures: Vec::new(),
            output_tokens: 0,
            slo_met: 0,
            ttft: Reservoir::new(cap, seed),
            inter_token: Reservoir::new(cap, seed.rotate_left(21)),
            e2e: Reservoir::new(cap, seed.rotate_left(42)),
        }
    }

    /// One finished request and the gaps between its token-carrying chunks. A failure counts
    /// by reason and adds no latency: a timeout is not a measured time.
    pub fn record(&mut self, sample: &InferenceSample, gaps: &[Duration]) {
        if self.slo.met_by(sample) {
            self.slo_met += 1;
        }
        if !sample.ok {
            self.failed += 1;
            let reason = sample.reason.unwrap_or(ProbeReason::BadBody);
            if let Some(f) = self.failures.iter_mut().find(|f| f.reason == reason) {
                f.count += 1;
            } else if self.failures.len() < MAX_FAILURE_KINDS {
                self.failures.push(FailureCount {
                    reason,
                    count: 1,
                    example: sample.detail.clone(),
                });
            }
            return;
        }
        self.ok += 1;
        self.output_tokens += sample.output_tokens.unwrap_or(0);
        if let Some(ttft) = sample.ttft {
            self.ttft.push(ttft.as_secs_f64());
        }
        for gap in gaps {
            self.inter_token.push(gap.as_secs_f64());
        }
        self.e2e.push(sample.duration.as_secs_f64());
    }

    pub fn ok(&self) -> u64 {
        self.ok
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }

    /// The step's figures over `elapsed`.
    pub fn finish(&self, elapsed: Duration, stopped_early: Option<String>) -> StepStats {
        let secs = elapsed.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let total = self.ok + self.failed;
        StepStats {
            concurrency: self.concurrency,
            elapsed,
            ok: self.ok,
            failed: self.failed,
            failures: self.failures.clone(),
            output_tokens: self.output_tokens,
            requests_per_second: rate(self.ok),
            output_tokens_per_second: rate(self.output_tokens),
            ttft: self.ttft.quantiles(),
            inter_token: self.inter_token.quantiles(),
            e2e: self.e2e.quantiles(),
            slo_met: self.slo_met,
            slo_attainment: (total > 0).then(|| self.slo_met as f64 / total as f64),
            stopped_early,
        }
    }
}

/// The highest-concurrency step whose SLO attainment reaches `objective`.
pub fn best_step(steps: &[StepStats], slo: Slo, objective: f64) -> Best {
    let within = format!(
        "{} of requests within TTFT {} and end-to-end {}",
        percent(objective),
        short(slo.ttft),
        short(slo.e2e)
    );
    if let Some(best) = steps
        .iter()
        .filter(|s| s.meets(objective))
        .max_by_key(|s| s.concurrency)
    {
        return Best {
            concurrency: Some(best.concurrency),
            reason: format!(
                "concurrency {} is the highest step with at least {within}",
                best.concurrency
            ),
        };
    }
    let closest = steps
        .iter()
        .filter_map(|s| Some((s.slo_attainment?, s.concurrency)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let reason = match closest {
        Some((share, concurrency)) => format!(
            "no step had at least {within} (closest: {} at concurrency {concurrency})",
            percent(share)
        ),
        None => "no step finished a request".to_owned(),
    };
    Best {
        concurrency: None,
        reason,
    }
}

/// What a million output tokens cost at `tokens_per_second` for `price_per_hour`; `None`
/// without throughput or price.
pub fn cost_per_million(price_per_hour: f64, tokens_per_second: f64) -> Option<f64> {
    (price_per_hour > 0.0 && tokens_per_second > 0.0)
        .then(|| price_per_hour / (tokens_per_second * 3600.0) * 1e6)
}

/// `0.99` as `99%`, `0.995` as `99.5%`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A duration as people write it: `500ms`, `2s`, `1.5s`.
fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0}s")
        } else {
            format!("{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const SLO: Slo = Slo {
        ttft: Duration::from_millis(100),
        e2e: Duration::from_millis(1000),
    };

    fn sample(ok: bool, ttft_ms: u64, e2e_ms: u64, tokens: u64) -> InferenceSample {
        InferenceSample {
            ok,
            reason: (!ok).then_some(ProbeReason::Timeout),
            detail: if ok { String::new() } else { "slow".to_owned() },
            model: "m".to_owned(),
            ttft: ok.then(|| ms(ttft_ms)),
            duration: ms(e2e_ms),
            output_tokens: ok.then_some(tokens),
            caused_load: false,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        // Of 10 values the 99th percentile is the largest: one slow request shows.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 0.99), Some(10.0));
    }

    #[test]
    fn a_full_reservoir_keeps_its_size_and_a_fair_sample() {
        let mut r = Reservoir::new(1000, 7);
        for i in 0..100_000 {
            r.push(f64::from(i));
        }
        let q = r.quantiles();
        assert_eq!(q.count, 100_000);
        assert_eq!(r.values.len(), 1000);
        let p50 = q.p50.unwrap();
        assert!((40_000.0..60_000.0).contains(&p50), "{p50}");
        assert!(q.p99.unwrap() > 95_000.0, "{q:?}");
        assert!(p50 <= q.p99.unwrap());
    }

    #[test]
    fn a_step_counts_tokens_rates_latencies_and_slo_attainment() {
        let mut t = StepTally::new(4, SLO, 1);
        t.record(&sample(true, 50, 500, 10), &[ms(10), ms(20), ms(30)]);
        t.record(&sample(true, 80, 900, 10), &[ms(40)]);
        // Misses the TTFT objective, still counts its tokens.
        t.record(&sample(true, 150, 900, 10), &[]);
        t.record(&sample(false, 0, 2000, 0), &[]);
        t.record(&sample(false, 0, 2000, 0), &[]);
        let s = t.finish(Duration::from_secs(2), None);
        assert_eq!((s.ok, s.failed, s.output_tokens, s.slo_met), (3, 2, 30, 2));
        assert_eq!(s.requests_per_second, 1.5);
        assert_eq!(s.output_tokens_per_second, 15.0);
        assert_eq!(s.slo_attainment, Some(0.4));
        assert_eq!(s.ttft.p50, Some(0.08));
        assert_eq!(s.ttft.p99, Some(0.15));
        assert_eq!(s.inter_token.count, 4);
        assert_eq!(s.inter_token.p50, Some(0.02));
        assert_eq!(s.e2e.p99, Some(0.9));
        assert_eq!(
            s.failures,
            vec![FailureCount {
                reason: ProbeReason::Timeout,
                count: 2,
                example: "slow".to_owned()
            }]
        );
        assert!(!s.meets(0.99) && s.meets(0.4));
        let empty = StepTally::new(1, SLO, 1).finish(Duration::ZERO, None);
        assert_eq!(empty.slo_attainment, None);
        assert_eq!(empty.requests_per_second, 0.0);
        assert!(!empty.meets(0.5));
    }

    fn step(concurrency: u32, met: u64, total: u64) -> StepStats {
        let mut t = StepTally::new(concurrency, SLO, 1);
        for i in 0..total {
            let e2e = if i < met { 500 } else { 5000 };
            t.record(&sample(true, 50, e2e, 8), &[]);
        }
        t.finish(Duration::from_secs(1), None)
    }

    #[test]
    fn the_best_step_is_the_highest_concurrency_meeting_the_objective() {
        let steps = [step(1, 100, 100), step(4, 99, 100), step(16, 90, 100)];
        let best = best_step(&steps, SLO, 0.99);
        assert_eq!(best.concurrency, Some(4), "{best:?}");
        assert!(
            best.reason
                .contains("99% of requests within TTFT 100ms and end-to-end 1s")
        );
        // A higher step that meets it wins even after one that did not.
        let steps = [step(1, 100, 100), step(4, 50, 100), step(16, 100, 100)];
        assert_eq!(best_step(&steps, SLO, 0.99).concurrency, Some(16));
        // None meets it: null, and the closest step named.
        let steps = [step(1, 90, 100), step(2, 95, 100), step(4, 95, 100)];
        let best = best_step(&steps, SLO, 0.99);
        assert_eq!(best.concurrency, None);
        assert!(
            best.reason.contains("closest: 95% at concurrency 2"),
            "{}",
            best.reason
        );
        let best = best_step(&[], SLO, 0.99);
        assert_eq!(
            (best.concurrency, best.reason.as_str()),
            (None, "no step finished a request")
        );
    }

    #[test]
    fn cost_per_million_tokens() {
        // 1000 tokens/s for 3.6 per hour: 3.6 M tokens an hour cost 3.6, so 1 per million.
        let cost = cost_per_million(3.6, 1000.0).unwrap();
        assert!((cost - 1.0).abs() < 1e-12, "{cost}");
        assert_eq!(cost_per_million(0.0, 1000.0), None);
        assert_eq!(cost_per_million(2.0, 0.0), None);
        assert_eq!(percent(0.99), "99%");
        assert_eq!(percent(0.995), "99.5%");
        assert_eq!(short(ms(1500)), "1.5s");
    }
}
