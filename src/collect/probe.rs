//! Probes of inference servers: one task per `[[probe]]`, each on its own interval.
//!
//! A check asks the server's readiness endpoint (and its model list when it has one) and
//! classifies the answer as `up`, `loading`, `degraded` or `down` with a bounded reason.
//! Hostile targets are bounded: one deadline (`timeout`) covers the whole check (connect,
//! trickling headers, body), bodies are read in chunks and cut at `max_body_bytes`, at most
//! 3 redirects are followed, and a body that is not the expected JSON is `bad_body`.
//! Checks never overlap: a hung target delays only its own next check, never another probe.
//!
//! The HTTP client is reqwest without a TLS backend of its own: `https` is not supported yet
//! (config validation refuses it). Tokens are sent, never logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{ProbeConfig, ProbeKind};
use crate::model::{ProbeReason, ProbeSample, ProbeState};
use crate::store::Store;

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
type Failure = (ProbeReason, String);

/// Parses a model list out of a JSON answer; `None` when it is not the expected shape.
type ModelParser = fn(&serde_json::Value) -> Option<Vec<String>>;

/// One response: status and a body of at most `max_body_bytes`.
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// A configured probe, ready to check.
pub struct Probe {
    config: ProbeConfig,
    client: reqwest::Client,
    token: Option<String>,
}

impl Probe {
    /// Builds the client; a token that cannot be read is logged (without its value) and the
    /// probe runs without one.
    pub fn new(config: ProbeConfig) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .no_proxy()
            .connect_timeout(config.timeout.0)
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(probe = %config.name, error = %error, "Probe client settings refused; using defaults.");
                reqwest::Client::new()
            });
        let token = read_token(&config);
        Self {
            config,
            client,
            token,
        }
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

    /// `GET base+path`, body capped at `max_body_bytes`. The caller's deadline bounds it.
    async fn get(&self, path: &str) -> Result<Response, Failure> {
        let url = format!("{}{path}", self.config.base_url());
        let mut request = self.client.get(&url);
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let max = self.config.max_body_bytes;
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

fn too_large(max: usize) -> Failure {
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
fn classify(error: &reqwest::Error) -> Failure {
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

/// The bearer token from its file or variable, trimmed; `None` when neither is set.
fn read_token(config: &ProbeConfig) -> Option<String> {
    let token = if !config.bearer_token_file.is_empty() {
        match std::fs::read_to_string(&config.bearer_token_file) {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(probe = %config.name, file = %config.bearer_token_file, error = %error, "Cannot read the probe's bearer token file; probing without a token.");
                return None;
            }
        }
    } else if !config.bearer_token_env.is_empty() {
        match std::env::var(&config.bearer_token_env) {
            Ok(text) => text,
            Err(_) => {
                tracing::warn!(probe = %config.name, variable = %config.bearer_token_env, "The probe's bearer token variable is not set; probing without a token.");
                return None;
            }
        }
    } else {
        return None;
    };
    let token = token.trim().to_owned();
    (!token.is_empty()).then_some(token)
}

/// Checks the probe at `index` every `interval` until `stop`, recording into `store`. Logs
/// only state changes.
pub async fn run_probe(
    index: usize,
    config: ProbeConfig,
    store: Arc<Store>,
    mut stop: watch::Receiver<bool>,
) {
    let name = config.name.clone();
    let interval: Duration = config.interval.0;
    let probe = Probe::new(config);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(ProbeState, Option<ProbeReason>)> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let sample = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            sample = probe.check() => sample,
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
        store.record_probe(index, sample);
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
