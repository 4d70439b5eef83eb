//! One readiness check: the kind's readiness endpoint and model list (or a TCP connect),
//! classified as `up`, `loading`, `degraded` or `down` with a bounded reason, the whole check
//! under one `timeout`; `expected_model` turns a missing model into `degraded`.

use std::sync::PoisonError;
use std::time::SystemTime;

use tokio::time::Instant;

use crate::config::{ModelList, Readiness};
use crate::model::{ProbeReason, ProbeSample, ProbeState};

use super::http::{Probe, io_reason};

/// Models kept from a model list (bounds memory and the JSON API).
const MAX_MODELS: usize = 64;

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

/// Parses a model list out of a JSON answer; `None` when it is not the expected shape.
type ModelParser = fn(&serde_json::Value) -> Option<Vec<String>>;

impl Probe {
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
            || matches!(self.config.kind.caps().models, None | Some(ModelList::V2))
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
        let caps = self.config.kind.caps();
        match caps.readiness {
            Readiness::Connect => self.check_tcp().await,
            Readiness::Get => match self.get("").await {
                Ok(r) if is_success(r.status) => Verdict::up(Vec::new()),
                Ok(r) => status_down(r.status),
                Err((reason, detail)) => Verdict::down(reason, detail),
            },
            Readiness::Health(path) => {
                match self.get(path).await {
                    Ok(r) if is_success(r.status) => {}
                    // Starting up: llama.cpp says so in a 503 body, the others answer 503
                    // until the engine is ready.
                    Ok(r) if r.status == 503 => {
                        return Verdict::loading(format!("{path} answered {}", r.status));
                    }
                    Ok(r) => return status_down(r.status),
                    Err((reason, detail)) => return Verdict::down(reason, detail),
                }
                self.listed_models(caps.models).await
            }
            Readiness::Models => self.listed_models(caps.models).await,
            Readiness::V2 => self.check_v2().await,
        }
    }

    /// Readiness through the kind's model list; a kind without one is up here.
    async fn listed_models(&self, list: Option<ModelList>) -> Verdict {
        let parse: ModelParser = match list {
            Some(ModelList::OpenAi) => openai_models,
            Some(ModelList::Tgi) => tgi_models,
            Some(ModelList::Ollama) => ollama_models,
            None | Some(ModelList::V2) => return Verdict::up(Vec::new()),
        };
        let path = list.map_or("", ModelList::path);
        self.models(path, parse).await
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
}

pub(super) fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn status_down(status: u16) -> Verdict {
    Verdict::down(ProbeReason::HttpStatus, format!("HTTP {status}"))
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
