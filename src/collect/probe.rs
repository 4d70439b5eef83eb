//! Probes of inference servers: one task per `[[probe]]`, each on its own interval.
//!
//! A check asks the server's readiness endpoint (and its model list when it has one) and
//! classifies the answer as `up`, `loading`, `degraded` or `down` with a bounded reason.
//! Hostile targets are bounded: one deadline (`timeout`) covers the whole check (connect,
//! trickling headers, body), bodies are read in chunks and cut at `max_body_bytes`, at most
//! 3 redirects are followed, and a body that is not the expected JSON is `bad_body`.
//! Checks never overlap: a hung target delays only its own next check, never another probe.
//! Synthetic requests (`probe_infer`) run on their own interval beside the checks, so a
//! hung generation never delays a readiness check either.
//!
//! `https` URLs use the rustls settings of `probe_tls`. Tokens are sent, never logged; a
//! token file is re-read when it changes (rotated secrets need no restart).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{ConfigError, ProbeConfig, ProbeKind};
use crate::model::{ProbeReason, ProbeSample, ProbeState, ProbeStatus, ServerMetrics};
use crate::promtext::Limits;
use crate::store::Store;

use super::{probe_infer, server_metrics};

/// Models kept from a model list (bounds memory and the JSON API).
const MAX_MODELS: usize = 64;
/// Redirects followed before `redirect_loop`.
const MAX_REDIRECTS: usize = 3;

/// The result of one check before timing is added.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub state: ProbeState,
    pub reason: Option<ProbeReason>,
    pub detail: String,
    pub models: Vec<String>,
}

impl Verdict {
    fn up(models: Vec<String>) -> Self {
        Self {
            state: ProbeState::Up,
            reason: None,
            detail: String::new(),
            models,
        }
    }

    fn loading(detail: impl Into<String>) -> Self {
        Self {
            state: ProbeState::Loading,
            reason: Some(ProbeReason::NotReady),
            detail: detail.into(),
            models: Vec::new(),
        }
    }

    fn down(reason: ProbeReason, detail: impl Into<String>) -> Self {
        Self {
            state: ProbeState::Down,
            reason: Some(reason),
            detail: detail.into(),
            models: Vec::new(),
        }
    }
}

/// A failed request, already classified.
pub(crate) type Failure = (ProbeReason, String);

/// Parses a model list out of a JSON answer; `None` when it is not the expected shape.
type ModelParser = fn(&serde_json::Value) -> Option<Vec<String>>;

/// One response: status and a body of at most `max_body_bytes`.
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A configured probe, ready to check.
pub struct Probe {
    config: ProbeConfig,
    client: reqwest::Client,
    token: TokenSource,
    /// The first model the last check listed: synthetic requests that name none use it.
    listed_model: Mutex<Option<String>>,
}

impl Probe {
    /// Builds the client. TLS files were checked at start ([`check_files`]); one that went
    /// bad since is logged and the probe runs with the built-in roots.
    pub fn new(config: ProbeConfig) -> Self {
        Self::try_new(config.clone()).unwrap_or_else(|error| {
            tracing::warn!(probe = %config.name, error = %error, "Probe TLS settings refused; using the built-in roots.");
            // Without a preconfigured backend reqwest would use the platform verifier (the
            // system bundle), not the built-in roots this message promises.
            let client = super::probe_tls::client_config("", false)
                .ok()
                .and_then(|tls| {
                    client_builder(&config)
                        .tls_backend_preconfigured(tls)
                        .build()
                        .ok()
                })
                .unwrap_or_default();
            Self::with_client(config, client)
        })
    }

    /// Builds the client; an error names what is wrong with the TLS settings.
    pub fn try_new(config: ProbeConfig) -> Result<Self, String> {
        super::probe_tls::install_crypto_provider();
        let tls =
            super::probe_tls::client_config(&config.tls_ca_file, config.tls_insecure_skip_verify)?;
        let client = client_builder(&config)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("HTTP client settings refused: {e}"))?;
        Ok(Self::with_client(config, client))
    }

    fn with_client(config: ProbeConfig, client: reqwest::Client) -> Self {
        let token = TokenSource::new(&config);
        Self {
            config,
            client,
            token,
            listed_model: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The model a synthetic request names: `inference_model`, else `expected_model`, else
    /// the first model the last check listed; empty lets the server pick.
    pub fn inference_model(&self) -> String {
        if !self.config.inference_model.is_empty() {
            return self.config.inference_model.clone();
        }
        if let Some(expected) = &self.config.expected_model {
            return expected.clone();
        }
        self.listed_model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// A request to `url` with the probe's headers and current token.
    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, url);
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(token) = self.token.current(&self.config.name) {
            request = request.bearer_auth(token);
        }
        request
    }

    /// One whole check, bounded by `timeout`.
    pub async fn check(&self) -> ProbeSample {
        let started = Instant::now();
        let verdict = match tokio::time::timeout(self.config.timeout.0, self.check_inner()).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict::down(
                ProbeReason::Timeout,
                format!("no full answer within {}", self.config.timeout),
            ),
        };
        let verdict = self.expect_model(verdict);
        if let Some(first) = verdict.models.first() {
            *self
                .listed_model
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(first.clone());
        }
        ProbeSample {
            state: verdict.state,
            reason: verdict.reason,
            detail: verdict.detail,
            latency: started.elapsed(),
            models: verdict.models,
            checked_at: SystemTime::now(),
        }
    }

    /// Applies `expected_model` to an `up` verdict (Triton/KServe check it themselves).
    fn expect_model(&self, verdict: Verdict) -> Verdict {
        let Some(expected) = &self.config.expected_model else {
            return verdict;
        };
        if verdict.state != ProbeState::Up
            || matches!(self.config.kind, ProbeKind::Triton | ProbeKind::Kserve)
            || !has_model_list(self.config.kind)
        {
            return verdict;
        }
        let listed = verdict
            .models
            .iter()
            .any(|m| m == expected || m.strip_suffix(":latest") == Some(expected.as_str()));
        if listed {
            verdict
        } else {
            Verdict {
                state: ProbeState::Degraded,
                reason: Some(ProbeReason::ModelMissing),
                detail: "model missing".to_owned(),
                models: verdict.models,
            }
        }
    }

    async fn check_inner(&self) -> Verdict {
        let kind = self.config.kind;
        match kind {
            ProbeKind::Tcp => self.check_tcp().await,
            ProbeKind::Http => match self.get("").await {
                Ok(r) if is_success(r.status) => Verdict::up(Vec::new()),
                Ok(r) => status_down(r.status),
                Err((reason, detail)) => Verdict::down(reason, detail),
            },
            ProbeKind::Vllm | ProbeKind::Tgi | ProbeKind::Sglang | ProbeKind::Llamacpp => {
                match self.get("/health").await {
                    Ok(r) if is_success(r.status) => {}
                    // Starting up: llama.cpp says so in a 503 body, the others answer 503
                    // until the engine is ready.
                    Ok(r) if r.status == 503 => {
                        return Verdict::loading(format!("/health answered {}", r.status));
                    }
                    Ok(r) => return status_down(r.status),
                    Err((reason, detail)) => return Verdict::down(reason, detail),
                }
                let (path, parse): (&str, ModelParser) = match kind {
                    ProbeKind::Tgi => ("/info", tgi_models),
                    _ => ("/v1/models", openai_models),
                };
                self.models(path, parse).await
            }
            ProbeKind::Openai => self.models("/v1/models", openai_models).await,
            ProbeKind::Ollama => self.models("/api/tags", ollama_models).await,
            ProbeKind::Triton | ProbeKind::Kserve => self.check_v2().await,
        }
    }

    /// KServe v2 (Triton): live, then ready, then the expected model's readiness.
    async fn check_v2(&self) -> Verdict {
        match self.get("/v2/health/live").await {
            Ok(r) if is_success(r.status) => {}
            Ok(r) => return status_down(r.status),
            Err((reason, detail)) => return Verdict::down(reason, detail),
        }
        match self.get("/v2/health/ready").await {
            Ok(r) if is_success(r.status) => {}
            Ok(r) => {
                return Verdict::loading(format!("live, /v2/health/ready answered {}", r.status));
            }
            Err((reason, detail)) => return Verdict::down(reason, detail),
        }
        let Some(model) = &self.config.expected_model else {
            return Verdict::up(Vec::new());
        };
        match self.get(&format!("/v2/models/{model}/ready")).await {
            Ok(r) if is_success(r.status) => Verdict::up(vec![model.clone()]),
            Ok(_) => Verdict {
                state: ProbeState::Degraded,
                reason: Some(ProbeReason::ModelMissing),
                detail: "model missing or not ready".to_owned(),
                models: Vec::new(),
            },
            Err((reason, detail)) => Verdict::down(reason, detail),
        }
    }

    /// Readiness through a model list: 2xx with a parseable list is up.
    async fn models(&self, path: &str, parse: ModelParser) -> Verdict {
        let r = match self.get(path).await {
            Ok(r) => r,
            Err((reason, detail)) => return Verdict::down(reason, detail),
        };
        if r.status == 503 {
            return Verdict::loading(format!("{path} answered 503"));
        }
        if !is_success(r.status) {
            return status_down(r.status);
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| parse(&v));
        match parsed {
            Some(mut models) => {
                models.truncate(MAX_MODELS);
                Verdict::up(models)
            }
            None => Verdict::down(
                ProbeReason::BadBody,
                format!("{path}: not the expected JSON"),
            ),
        }
    }

    async fn check_tcp(&self) -> Verdict {
        match tokio::net::TcpStream::connect(self.config.tcp_address()).await {
            Ok(stream) => {
                drop(stream);
                Verdict::up(Vec::new())
            }
            Err(error) => Verdict::down(io_reason(&error), error.to_string()),
        }
    }

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
        let metrics = server_metrics::lift(&text, &Limits::default());
        if metrics.series == 0 && metrics.invalid_lines > 0 && !has_valid_line(&text) {
            return Err((
                ProbeReason::BadBody,
                "not Prometheus text exposition".to_owned(),
            ));
        }
        Ok(metrics)
    }

    /// `GET base+path`, body capped at `max_body_bytes`. The caller's deadline bounds it.
    async fn get(&self, path: &str) -> Result<Response, Failure> {
        let url = format!("{}{path}", self.config.base_url());
        self.fetch(&url, self.config.max_body_bytes).await
    }

    /// `GET url`, body capped at `max`. The caller's deadline bounds it.
    pub(crate) async fn fetch(&self, url: &str, max: usize) -> Result<Response, Failure> {
        let request = self.request(reqwest::Method::GET, url);
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > max {
                return Err(too_large(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
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

pub(crate) fn too_large(max: usize) -> Failure {
    (
        ProbeReason::BodyTooLarge,
        format!("body larger than {max} bytes"),
    )
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn status_down(status: u16) -> Verdict {
    Verdict::down(ProbeReason::HttpStatus, format!("HTTP {status}"))
}

/// Whether the kind lists models (so `expected_model` can be checked).
fn has_model_list(kind: ProbeKind) -> bool {
    !matches!(kind, ProbeKind::Http | ProbeKind::Tcp)
}

fn strings(items: &[serde_json::Value], key: &str) -> Option<Vec<String>> {
    items
        .iter()
        .map(|m| m.get(key).and_then(|v| v.as_str()).map(str::to_owned))
        .collect()
}

/// OpenAI-compatible `/v1/models`: `{"data": [{"id": ...}]}`.
fn openai_models(v: &serde_json::Value) -> Option<Vec<String>> {
    strings(v.get("data")?.as_array()?, "id")
}

/// Ollama `/api/tags`: `{"models": [{"name": ...}]}`.
fn ollama_models(v: &serde_json::Value) -> Option<Vec<String>> {
    strings(v.get("models")?.as_array()?, "name")
}

/// TGI `/info`: `{"model_id": ...}`.
fn tgi_models(v: &serde_json::Value) -> Option<Vec<String>> {
    Some(vec![v.get("model_id")?.as_str()?.to_owned()])
}

fn io_reason(error: &std::io::Error) -> ProbeReason {
    match error.kind() {
        std::io::ErrorKind::TimedOut => ProbeReason::Timeout,
        std::io::ErrorKind::ConnectionRefused => ProbeReason::ConnectRefused,
        _ if error.to_string().contains("lookup") => ProbeReason::Dns,
        _ => ProbeReason::ConnectRefused,
    }
}

/// Maps a client error to a bounded reason by walking its cause chain.
pub(crate) fn classify(error: &reqwest::Error) -> Failure {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    let mut io_kind = None;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    let reason = if error.is_redirect() {
        ProbeReason::RedirectLoop
    } else if error.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
        ProbeReason::Timeout
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        ProbeReason::ConnectRefused
    } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
        ProbeReason::Dns
    } else if lower.contains("tls") || lower.contains("certificate") {
        ProbeReason::Tls
    } else if error.is_connect() {
        ProbeReason::ConnectRefused
    } else if error.is_body() || error.is_decode() {
        ProbeReason::BadBody
    } else {
        ProbeReason::HttpStatus
    };
    (reason, text)
}

/// The client settings every probe shares: bounded redirects, no proxy, connect deadline,
/// and no idle connections kept. A probe asks every few seconds, so reuse saves little, while
/// an idle keep-alive connection can cost the server a worker: llama.cpp's fixed HTTP pool
/// (`n_parallel + 4` threads) gives each one a thread for 5 s, which was seen to delay real
/// requests under load.
fn client_builder(config: &ProbeConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .no_proxy()
        .connect_timeout(config.timeout.0)
        .pool_max_idle_per_host(0)
}

/// Checks every probe's TLS files at start, so a bad CA file exits 2 like any bad config.
pub fn check_files(probes: &[ProbeConfig]) -> Result<(), ConfigError> {
    for (index, probe) in probes.iter().enumerate() {
        if let Err(message) =
            super::probe_tls::client_config(&probe.tls_ca_file, probe.tls_insecure_skip_verify)
        {
            return Err(ConfigError::at_key(
                format!("probe[{index}].tls_ca_file"),
                message,
            ));
        }
    }
    Ok(())
}

/// The probe's bearer token: from a variable (read once) or a file, re-read when the file's
/// size or modification time changes. A file that cannot be read keeps the last token.
struct TokenSource {
    file: String,
    fixed: Option<String>,
    cached: Mutex<Option<(FileStamp, Option<String>)>>,
}

/// What tells that a token file changed.
type FileStamp = (Option<SystemTime>, u64);

impl TokenSource {
    fn new(config: &ProbeConfig) -> Self {
        let fixed = if config.bearer_token_file.is_empty() && !config.bearer_token_env.is_empty() {
            match std::env::var(&config.bearer_token_env) {
                Ok(text) => trimmed(&text),
                Err(_) => {
                    tracing::warn!(probe = %config.name, variable = %config.bearer_token_env, "The probe's bearer token variable is not set; probing without a token.");
                    None
                }
            }
        } else {
            None
        };
        Self {
            file: config.bearer_token_file.clone(),
            fixed,
            cached: Mutex::new(None),
        }
    }

    fn current(&self, probe: &str) -> Option<String> {
        if self.file.is_empty() {
            return self.fixed.clone();
        }
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = std::fs::metadata(&self.file)
            .map(|m| (m.modified().ok(), m.len()))
            .map_err(|e| e.to_string());
        match (&stamp, cached.as_ref()) {
            (Ok(now), Some((seen, token))) if now == seen => token.clone(),
            (Ok(now), _) => match std::fs::read_to_string(&self.file) {
                Ok(text) => {
                    let token = trimmed(&text);
                    if cached.is_some() {
                        tracing::info!(probe, file = %self.file, "Probe bearer token file changed; using the new token.");
                    }
                    *cached = Some((*now, token.clone()));
                    token
                }
                Err(error) => Self::unreadable(probe, &self.file, &error.to_string(), &mut cached),
            },
            (Err(error), _) => Self::unreadable(probe, &self.file, error, &mut cached),
        }
    }

    /// Logs once per state change and keeps the last token read.
    fn unreadable(
        probe: &str,
        file: &str,
        error: &str,
        cached: &mut Option<(FileStamp, Option<String>)>,
    ) -> Option<String> {
        let unreadable: FileStamp = (None, u64::MAX);
        if cached.as_ref().is_none_or(|(seen, _)| *seen != unreadable) {
            tracing::warn!(
                probe,
                file,
                error,
                "Cannot read the probe's bearer token file; keeping the last token read."
            );
        }
        let last = cached.as_ref().and_then(|(_, token)| token.clone());
        *cached = Some((unreadable, last.clone()));
        last
    }
}

fn trimmed(text: &str) -> Option<String> {
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The store's entry for a configured probe (before any check).
pub fn status_for(config: &ProbeConfig) -> ProbeStatus {
    let mut status = ProbeStatus::new(&config.name, config.kind.as_str(), config.interval.0);
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
    let checks = check_loop(index, &probe, &store, state_tx, stop.clone());
    let inference = async {
        if probe.config.inference {
            inference_loop(index, &probe, &store, state_rx, stop.clone()).await;
        }
    };
    let scrapes = async {
        if probe.config.metrics {
            scrape_loop(index, &probe, &store, stop.clone()).await;
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
}

/// Scrapes the server's own metrics every `metrics_interval`, bounded by the probe's
/// `timeout` and `metrics_max_body_bytes`. Logs only changes between success and failure.
async fn scrape_loop(index: usize, probe: &Probe, store: &Store, stop: watch::Receiver<bool>) {
    let name = &probe.config.name;
    let url = probe.config.metrics_url();
    let mut every = Every::new(probe.config.metrics_interval.0, stop);
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

async fn check_loop(
    index: usize,
    probe: &Probe,
    store: &Store,
    state: watch::Sender<Option<ProbeState>>,
    stop: watch::Receiver<bool>,
) {
    let name = &probe.config.name;
    let mut every = Every::new(probe.config.interval.0, stop);
    let mut last: Option<(ProbeState, Option<ProbeReason>)> = None;
    while every.tick().await {
        let Some(sample) = every.unless_stopped(probe.check()).await else {
            return;
        };
        let now = (sample.state, sample.reason);
        if last != Some(now) {
            let reason = sample.reason.map_or("", ProbeReason::as_str);
            if sample.state == ProbeState::Up {
                tracing::info!(probe = %name, state = sample.state.as_str(), "Probe state changed.");
            } else {
                tracing::warn!(probe = %name, state = sample.state.as_str(), reason, detail = %sample.detail, "Probe state changed.");
            }
            last = Some(now);
        }
        state.send_replace(Some(sample.state));
        store.record_probe(index, sample);
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
    // The first request waits for the first check (it may name the listed model).
    if every
        .unless_stopped(state.wait_for(Option::is_some))
        .await
        .is_none()
    {
        return;
    }
    let mut last_ok: Option<bool> = None;
    while every.tick().await {
        // A server that says it is loading or down is not asked to generate: that is the
        // check's finding already, and counting it twice would skew the completion rate.
        let ready = matches!(*state.borrow(), Some(ProbeState::Up | ProbeState::Degraded));
        if !ready {
            continue;
        }
        let model = probe.inference_model();
        let Some(sample) = every
            .unless_stopped(probe_infer::infer(probe, &model))
            .await
        else {
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
    fn model_lists_parse_per_kind() {
        let v = serde_json::json!({"data": [{"id": "a"}, {"id": "b"}]});
        assert_eq!(
            openai_models(&v),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(openai_models(&serde_json::json!({"data": 3})), None);
        let v = serde_json::json!({"models": [{"name": "llama3:latest"}]});
        assert_eq!(ollama_models(&v), Some(vec!["llama3:latest".to_owned()]));
        let v = serde_json::json!({"model_id": "m"});
        assert_eq!(tgi_models(&v), Some(vec!["m".to_owned()]));
    }
}
