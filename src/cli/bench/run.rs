//! The load runner of `gpulse bench`: a readiness check, one warm-up request, then each
//! concurrency step with that many workers sending requests back to back, progress on stderr
//! once a second, and the report.
//!
//! Every request goes through the probe's bounded client (`collect::probe::infer`) on a
//! connection of its own, with its own deadline (`--timeout`) and the probe's
//! `max_body_bytes`. A step starts requests for `--step-duration` (or until
//! `--max-requests`), then waits for those in flight, each bounded by its deadline; it stops
//! early once [`EARLY_STOP_FAILURES`] requests failed and none succeeded, and the steps above
//! it are skipped. SIGINT/SIGTERM end the bench at once with the steps finished so far.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::{EARLY_STOP_FAILURES, Plan};
use crate::cli::say;
use crate::collect::probe::Probe;
use crate::collect::probe::infer::{Ask, Timed, infer_ask};
use crate::model::{
    BenchReport, Best, ProbeState, StepStats, StepTally, best_step, cost_per_million, percent,
};

/// How often a running step reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Finished requests buffered between the workers and the tally.
const CHANNEL: usize = 1024;

/// What every worker of a bench shares.
struct Shared {
    probe: Probe,
    model: String,
    prompt: String,
    max_tokens: u32,
    ignore_eos: bool,
    timeout: Duration,
    /// Mixed with each request's number into the seed of its random prefix.
    seed: u64,
    /// Requests sent so far over the whole bench (numbers each request's prefix).
    sent: AtomicU64,
}

impl Shared {
    /// One request with a fresh random prefix before the fixed prompt, so no prefix or
    /// response cache can answer it from an earlier one.
    async fn send(&self) -> Timed {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let mut rng = fastrand::Rng::with_seed(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let prompt = format!("{:08x} {}", rng.u32(..), self.prompt);
        let ask = Ask {
            model: &self.model,
            prompt: &prompt,
            max_tokens: self.max_tokens,
            ignore_eos: self.ignore_eos,
            timeout: self.timeout,
        };
        infer_ask(&self.probe, &ask).await
    }
}

/// Runs the plan; an error only when the HTTP client cannot be built (bad TLS settings).
/// Ends early, with what it has, when SIGINT or SIGTERM arrives.
pub async fn run(plan: Plan) -> Result<BenchReport, String> {
    let (stop_tx, stop) = watch::channel(false);
    let signals = tokio::spawn(async move {
        crate::app::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let report = run_until(plan, stop).await;
    signals.abort();
    report
}

/// [`run`] until `stop` turns true.
async fn run_until(plan: Plan, mut stop: watch::Receiver<bool>) -> Result<BenchReport, String> {
    let Plan {
        probe,
        mut settings,
        prompt,
    } = plan;
    // A new connection per request, as the probe's: llama-server closes the connection after
    // every streamed answer while announcing keep-alive, and a pooled client that reuses it
    // first loses the request ("connection closed before message completed", seen on 1 in 7
    // requests at concurrency 4).
    let probe = Probe::try_new(probe)?;
    let started_at = SystemTime::now();
    let mut steps = Vec::new();
    let mut interrupted = false;
    let stopped = 'bench: {
        // Readiness: a server that is not up fails every request; say why instead.
        let check = probe.check().await;
        if !matches!(check.state, ProbeState::Up | ProbeState::Degraded) {
            let reason = check.reason.map_or("", |r| r.as_str());
            break 'bench Some(format!(
                "the server is not ready: {} ({reason}) {}",
                check.state.as_str(),
                check.detail
            ));
        }
        if settings.model.is_empty() {
            settings.model = probe.inference_model();
        }
        say(format_args!(
            "bench: {} {} model {}: concurrency {:?}, {} each, {} output tokens per request",
            settings.kind,
            settings.url,
            if settings.model.is_empty() {
                "(server's choice)"
            } else {
                &settings.model
            },
            settings.concurrency,
            humantime::format_duration(settings.step_duration),
            settings.max_tokens,
        ));
        let shared = Arc::new(Shared {
            probe,
            model: settings.model.clone(),
            prompt,
            max_tokens: settings.max_tokens,
            ignore_eos: settings.ignore_eos,
            timeout: settings.timeout,
            seed: fastrand::u64(..),
            sent: AtomicU64::new(0),
        });
        // Warm-up: loads what a first request loads, proves the request shape, and tells the
        // prompt's length in the server's tokens. Not counted.
        let warm = tokio::select! {
            warm = shared.send() => warm,
            () = stopped(&mut stop) => {
                interrupted = true;
                break 'bench None;
            }
        };
        if !warm.sample.ok {
            break 'bench Some(format!(
                "the warm-up request failed: {}: {}",
                warm.sample.reason.map_or("", |r| r.as_str()),
                warm.sample.detail
            ));
        }
        settings.prompt_tokens_reported = warm.prompt_tokens;
        let of = settings.concurrency.len();
        for (index, &concurrency) in settings.concurrency.iter().enumerate() {
            let label = format!("step {}/{of} concurrency {concurrency}", index + 1);
            let step = Step {
                label: &label,
                concurrency,
                duration: settings.step_duration,
                max_requests: settings.max_requests,
                seed: shared.seed.rotate_left(index as u32 + 1),
                slo: settings.slo,
            };
            let (stats, cut) = step.run(&shared, &mut stop).await;
            say(format_args!("bench: {label} done: {}", summary(&stats)));
            let failed_all = stats.ok == 0;
            steps.push(stats);
            if cut {
                interrupted = true;
                break 'bench None;
            }
            if failed_all && index + 1 < of {
                break 'bench Some(format!(
                    "every request at concurrency {concurrency} failed; the higher steps were skipped"
                ));
            }
        }
        None
    };
    let best = if steps.is_empty() {
        Best {
            concurrency: None,
            reason: "no step ran".to_owned(),
        }
    } else {
        best_step(&steps, settings.slo, settings.objective)
    };
    let cost = match (&settings.price, best.concurrency) {
        (Some(price), Some(c)) => steps
            .iter()
            .find(|s| s.concurrency == c)
            .and_then(|s| cost_per_million(price.per_hour, s.output_tokens_per_second)),
        _ => None,
    };
    Ok(BenchReport {
        settings,
        started_at,
        finished_at: SystemTime::now(),
        steps,
        best,
        cost_per_million_output_tokens: cost,
        stopped,
        interrupted,
    })
}

/// Until a stop signal arrives; never when the sender is gone (no signal can come then).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One step's settings.
struct Step<'a> {
    label: &'a str,
    concurrency: u32,
    duration: Duration,
    max_requests: Option<u64>,
    seed: u64,
    slo: crate::model::Slo,
}

impl Step<'_> {
    /// Runs the step; `true` with the figures when a stop signal cut it short.
    async fn run(
        &self,
        shared: &Arc<Shared>,
        stop: &mut watch::Receiver<bool>,
    ) -> (StepStats, bool) {
        let started = Instant::now();
        let deadline = started + self.duration;
        let halt = Arc::new(AtomicBool::new(false));
        let launched = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = mpsc::channel::<Timed>(CHANNEL);
        let mut workers = JoinSet::new();
        for _ in 0..self.concurrency {
            let worker = Worker {
                shared: Arc::clone(shared),
                deadline,
                halt: Arc::clone(&halt),
                launched: Arc::clone(&launched),
                cap: self.max_requests,
                done: tx.clone(),
            };
            workers.spawn(worker.run());
        }
        drop(tx);
        let mut tally = StepTally::new(self.concurrency, self.slo, self.seed);
        let mut ticker = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopped_early = None;
        let mut cut = false;
        loop {
            tokio::select! {
                done = rx.recv() => {
                    let Some(timed) = done else { break };
                    tally.record(&timed.sample, &timed.gaps);
                    if tally.ok() == 0 && tally.failed() >= EARLY_STOP_FAILURES {
                        stopped_early = Some(format!(
                            "the first {} requests all failed",
                            tally.failed()
                        ));
                        break;
                    }
                }
                _ = ticker.tick() => {
                    let elapsed = started.elapsed().as_secs_f64();
                    say(format_args!(
                        "bench: {}: {elapsed:.0}s of {}, {} ok, {} failed, {:.0} tokens/s",
                        self.label,
                        humantime::format_duration(self.duration),
                        tally.ok(),
                        tally.failed(),
                        tally.output_tokens() as f64 / elapsed.max(1e-9),
                    ));
                }
                () = stopped(stop) => {
                    cut = true;
                    break;
                }
            }
        }
        // Early stop or a signal: the requests in flight are abandoned, not waited for.
        halt.store(true, Ordering::Relaxed);
        workers.abort_all();
        (tally.finish(started.elapsed(), stopped_early), cut)
    }
}

/// One of a step's concurrent clients: sends a request as soon as its last one finished.
struct Worker {
    shared: Arc<Shared>,
    deadline: Instant,
    halt: Arc<AtomicBool>,
    launched: Arc<AtomicU64>,
    cap: Option<u64>,
    done: mpsc::Sender<Timed>,
}

impl Worker {
    async fn run(self) {
        while Instant::now() < self.deadline && !self.halt.load(Ordering::Relaxed) {
            let n = self.launched.fetch_add(1, Ordering::Relaxed);
            if self.cap.is_some_and(|cap| n >= cap) {
                return;
            }
            let timed = self.shared.send().await;
            if self.done.send(timed).await.is_err() {
                return;
            }
        }
    }
}

/// A step's figures on one line.
fn summary(s: &StepStats) -> String {
    let ms = |q: Option<f64>| q.map_or_else(|| "-".to_owned(), |v| format!("{:.1}ms", v * 1000.0));
    let mut line = format!(
        "{:.1}s, {} ok, {} failed, {:.2} req/s, {:.1} tokens/s, TTFT p50 {} p99 {}, ITL p50 {} p99 {}, in SLO {}",
        s.elapsed.as_secs_f64(),
        s.ok,
        s.failed,
        s.requests_per_second,
        s.output_tokens_per_second,
        ms(s.ttft.p50),
        ms(s.ttft.p99),
        ms(s.inter_token.p50),
        ms(s.inter_token.p99),
        s.slo_attainment.map_or_else(|| "-".to_owned(), percent),
    );
    if let Some(f) = s.failures.first() {
        line.push_str(&format!(
            "; {} × {}: {}",
            f.count,
            f.reason.as_str(),
            f.example
        ));
    }
    line
}
