//! Probes of inference servers: one task per `[[probe]]`, each on its own interval.
//!
//! A check asks the server's readiness endpoint (and its model list when it has one) and
//! classifies the answer as `up`, `loading`, `degraded` or `down` with a bounded reason.
//! Hostile targets are bounded: one deadline (`timeout`) covers the whole check (connect,
//! trickling headers, body), bodies are read in chunks and cut at `max_body_bytes`, at most
//! 3 redirects are followed, and a body that is not the expected JSON is `bad_body`.
//! Checks never overlap: a hung target delays only its own next check, never another probe.
//! Synthetic requests (`infer`) run on their own interval beside the checks, so a hung
//! generation never delays a readiness check either.
//!
//! * `http`: the bounded client every request goes through (headers, token, size caps).
//! * `check`: one readiness check per kind.
//! * `infer`: the synthetic request per kind, timed.
//! * `scrape`: lifts the server's own `/metrics` into common names, through `promtext`.
//! * `promtext`: a std-only Prometheus/OpenMetrics text parser.
//! * `tls`: each probe's rustls client settings.
//!
//! `https` URLs use the rustls settings of `tls`. Tokens are sent, never logged; a token file
//! is re-read when it changes (rotated secrets need no restart).

mod check;
mod http;
pub mod infer;
pub mod promtext;
pub mod scrape;
pub mod tls;

pub use check::Verdict;
pub use http::Probe;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{ConfigError, ProbeConfig};
use crate::model::{ProbeReason, ProbeState, ProbeStatus, ServerMetrics};
use crate::store::Store;

use self::check::is_success;
use self::http::Failure;
use self::promtext::Limits;

impl Probe {
    /// One scrape of the server's metrics at `url`, lifted into common names. A 2xx body
    /// with no valid exposition line at all (e.g. a JSON endpoint) is `bad_body`.
    pub async fn scrape(&self, url: &str) -> Result<ServerMetrics, Failure> {
        let max = self.config.metrics_max_body_bytes;
        let response = tokio::time::timeout(self.config.timeout.0, self.fetch(url, max))
            .await
            .map_err(|_| {
                (
                    ProbeReason::Timeout,
                    format!("no full answer within {}", self.config.timeout),
                )
            })??;
        if !is_success(response.status) {
            return Err((ProbeReason::HttpStatus, format!("HTTP {}", response.status)));
        }
        let text = String::from_utf8_lossy(&response.body);
        let metrics = scrape::lift(&text, &Limits::default());
        if metrics.series == 0 && metrics.invalid_lines > 0 && !has_valid_line(&text) {
            return Err((
                ProbeReason::BadBody,
                "not Prometheus text exposition".to_owned(),
            ));
        }
        Ok(metrics)
    }
}

/// Whether any line looks like a sample or a metadata comment, so a body whose families
/// are all unknown to the lift is still a valid (if uninteresting) exposition.
fn has_valid_line(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("# TYPE ") || line.starts_with("# HELP ")
    })
}

/// Checks every probe's TLS files at start, so a bad CA file exits 2 like any bad config.
pub fn check_files(probes: &[ProbeConfig]) -> Result<(), ConfigError> {
    for (index, probe) in probes.iter().enumerate() {
        if let Err(message) = tls::client_config(&probe.tls_ca_file, probe.tls_insecure_skip_verify)
        {
            return Err(ConfigError::at_key(
                format!("probe[{index}].tls_ca_file"),
                message,
            ));
        }
    }
    Ok(())
}

/// The store's entry for a configured probe (before any check).
pub fn status_for(config: &ProbeConfig) -> ProbeStatus {
    let mut status = ProbeStatus::new(&config.name, config.kind.as_str(), config.interval.0)
        .with_startup_timeout(config.startup_timeout.0);
    if config.inference {
        status = status.with_inference(config.ttft_slo.0, config.latency_slo.0);
    }
    if config.metrics {
        status = status.with_server_metrics();
    }
    status
}

/// Runs the probe at `index` until `stop`: checks every `interval` and, when configured,
/// synthetic requests every `inference_interval`, each loop on its own so neither waits
/// for the other. Logs only state changes.
pub async fn run_probe(
    index: usize,
    config: ProbeConfig,
    store: Arc<Store>,
    stop: watch::Receiver<bool>,
) {
    let probe = Arc::new(Probe::new(config));
    // The last check's state: synthetic requests only go to a server that says it is ready.
    let (state_tx, state_rx) = watch::channel(None);
    let scrape_state = state_rx.clone();
    let checks = check_loop(index, &probe, &store, state_tx, stop.clone());
    let inference = async {
        if probe.config.inference {
            inference_loop(index, &probe, &store, state_rx, stop.clone()).await;
        }
    };
    let scrapes = async {
        if probe.config.metrics {
            scrape_loop(index, &probe, &store, scrape_state, stop.clone()).await;
        }
    };
    tokio::join!(checks, inference, scrapes);
}

/// A probe loop's clock: ticks every period (a late tick is delayed, not burst) until `stop`.
struct Every {
    ticker: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

impl Every {
    fn new(period: std::time::Duration, stop: watch::Receiver<bool>) -> Self {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { ticker, stop }
    }

    /// Waits for the next tick; `false` once stopping.
    async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.stop.wait_for(|stop| *stop) => false,
            _ = self.ticker.tick() => true,
        }
    }

    /// Runs `work` to its end; `None` when stopping comes first.
    async fn unless_stopped<F: std::future::Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::select! {
            _ = self.stop.wait_for(|stop| *stop) => None,
            out = work => Some(out),
        }
    }

    /// Waits for the check loop's first ready state (the scrape and request loops start
    /// there); `false` only when stopped first.
    async fn until_ready(&mut self, state: &mut watch::Receiver<Option<ProbeState>>) -> bool {
        self.unless_stopped(state.wait_for(is_ready))
            .await
            .is_some()
    }
}

/// Scrapes the server's own metrics every `metrics_interval`, bounded by the probe's
/// `timeout` and `metrics_max_body_bytes`. Logs only changes between success and failure.
async fn scrape_loop(
    index: usize,
    probe: &Probe,
    store: &Store,
    mut state: watch::Receiver<Option<ProbeState>>,
    stop: watch::Receiver<bool>,
) {
    let name = &probe.config.name;
    let url = probe.config.metrics_url();
    let mut every = Every::new(probe.config.metrics_interval.0, stop);
    // The first scrape waits for the server's first ready check: a starting server has no
    // metrics yet, and failing scrapes while it loads would be noise, not news. From then on
    // a failed scrape is news (the check loop says whether the server went down).
    if !every.until_ready(&mut state).await {
        return;
    }
    let mut last_ok: Option<bool> = None;
    while every.tick().await {
        let started = Instant::now();
        let Some(result) = every.unless_stopped(probe.scrape(&url)).await else {
            return;
        };
        let ok = result.is_ok();
        if last_ok != Some(ok) {
            match &result {
                Ok(m) => {
                    tracing::info!(probe = %name, url = %url, dialect = m.dialect, series = m.series, "Scraping the server's metrics.")
                }
                Err((reason, detail)) => {
                    tracing::warn!(probe = %name, url = %url, reason = reason.as_str(), detail = %detail, "Cannot scrape the server's metrics.")
                }
            }
            last_ok = Some(ok);
        }
        store.record_server_scrape(index, result, started.elapsed(), SystemTime::now());
    }
}

/// Whether a check says the server serves requests (`up`, or `degraded`: ready, another model).
fn is_ready(state: &Option<ProbeState>) -> bool {
    matches!(state, Some(ProbeState::Up | ProbeState::Degraded))
}

/// The first re-check of a start-up, and the shortest.
const STARTUP_RECHECK: Duration = Duration::from_millis(250);

/// The wait before the next check: `interval`, except while the target is starting, when it
/// is a twentieth of the time spent starting (at least 250 ms or `interval` if shorter, at
/// most `interval`), so the
/// time to ready is known to within about 5 % (a 5 s start to ~250 ms, a 10 min load to the
/// interval) at the cost of a few dozen refused connects.
pub fn next_check_in(interval: Duration, starting_for: Option<Duration>) -> Duration {
    match starting_for {
        Some(elapsed) => (elapsed / 20).clamp(STARTUP_RECHECK.min(interval), interval),
        None => interval,
    }
}

async fn check_loop(
    index: usize,
    probe: &Probe,
    store: &Store,
    state: watch::Sender<Option<ProbeState>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = &probe.config.name;
    let interval = probe.config.interval.0;
    let mut last: Option<(ProbeState, Option<ProbeReason>)> = None;
    // Checks are spaced from the start of one to the start of the next (like an interval
    // with delayed missed ticks), so a slow check does not stretch the period.
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let sample = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            sample = probe.check() => sample,
        };
        let checked_at = sample.checked_at;
        store.record_probe(index, sample);
        // The store's bookkeeping decides `starting` (it knows when the target started).
        let snap = store.snapshot();
        let Some(recorded) = snap
            .probes
            .get(index)
            .and_then(|p| p.last.as_ref().map(|l| (p, l)))
        else {
            return;
        };
        let (status, sample) = recorded;
        let now = (sample.state, sample.reason);
        if last != Some(now) {
            let reason = sample.reason.map_or("", ProbeReason::as_str);
            match sample.state {
                ProbeState::Up => {
                    tracing::info!(probe = %name, state = sample.state.as_str(), "Probe state changed.")
                }
                // Start-up is expected, not a warning.
                ProbeState::Starting => {
                    tracing::info!(probe = %name, state = sample.state.as_str(), reason, detail = %sample.detail, "Probe state changed: the target is starting.")
                }
                _ => {
                    tracing::warn!(probe = %name, state = sample.state.as_str(), reason, detail = %sample.detail, "Probe state changed.")
                }
            }
            last = Some(now);
        }
        state.send_replace(Some(sample.state));
        let starting_for = status
            .starting_since()
            .map(|since| checked_at.duration_since(since).unwrap_or_default());
        next = (started + next_check_in(interval, starting_for)).max(Instant::now());
    }
}

async fn inference_loop(
    index: usize,
    probe: &Probe,
    store: &Store,
    mut state: watch::Receiver<Option<ProbeState>>,
    stop: watch::Receiver<bool>,
) {
    let name = &probe.config.name;
    let mut every = Every::new(probe.config.inference_interval.0, stop);
    // The first request waits for the first ready check (it may name the listed model), so
    // a server that takes minutes to start gets its first request as soon as it is ready,
    // not up to an `inference_interval` later.
    if !every.until_ready(&mut state).await {
        return;
    }
    let mut last_ok: Option<bool> = None;
    while every.tick().await {
        // A server that says it is loading or down is not asked to generate: that is the
        // check's finding already, and counting it twice would skew the completion rate.
        if !is_ready(&state.borrow()) {
            continue;
        }
        let model = probe.inference_model();
        let Some(sample) = every.unless_stopped(infer::infer(probe, &model)).await else {
            return;
        };
        if last_ok != Some(sample.ok) {
            if sample.ok {
                tracing::info!(probe = %name, model = %sample.model, "Synthetic inference requests succeed.");
            } else {
                let reason = sample.reason.map_or("", ProbeReason::as_str);
                tracing::warn!(probe = %name, model = %sample.model, reason, detail = %sample.detail, "Synthetic inference request failed.");
            }
            last_ok = Some(sample.ok);
        }
        store.record_inference(index, sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_is_rechecked_fast_then_at_the_interval() {
        let interval = Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert_eq!(next_check_in(interval, None), interval);
        assert_eq!(next_check_in(interval, Some(ms(10))), ms(250));
        assert_eq!(next_check_in(interval, Some(ms(5_000))), ms(250));
        assert_eq!(next_check_in(interval, Some(ms(60_000))), ms(3_000));
        assert_eq!(next_check_in(interval, Some(ms(600_000))), interval);
        // A shorter interval is never slowed down (and clamp's min stays <= max).
        assert_eq!(next_check_in(ms(100), Some(ms(10))), ms(100));
    }
}
