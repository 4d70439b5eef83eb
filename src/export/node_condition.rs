//! The Kubernetes node condition (`GpulseGPUHealthy` by default): the node's GPU health
//! written onto its Node object, where the scheduler's ecosystem reads it (`kubectl describe
//! node`, node-problem-detector remedies, Cluster API MachineHealthChecks, draino, alerting on
//! `kube_node_status_condition`).
//!
//! Why a condition and not only metrics: a provider's status page and the cluster's own
//! tooling look at the Node, not at Prometheus (akash-network/support #249: a provider showed
//! 8 GPUs free while one was unhealthy). Off by default; it needs RBAC (`patch nodes/status`).
//!
//! [`condition`] is pure (health in, condition out); [`run`] PATCHes `nodes/NODE/status` with
//! a strategic-merge patch (conditions merge on `type`, so other conditions are untouched)
//! when the condition changes, and again every `resync` so a condition someone removed comes
//! back. A failed PATCH is counted as exporter `node_condition` in
//! `gpulse_export_failures_total` and logged once per state change ([`ExportStats`]); it
//! never stops the agent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::collect::k8s::api;
use crate::config::{Config, ConfigError};
use crate::export::otlp::{classify_error, status_cause};
use crate::export::{ExportFailure, ExportStats, FailureReason};
use crate::health::{NodeHealth, State};
use crate::store::Store;

/// The exporter's name in `gpulse_exports_total` and `gpulse_export_failures_total`.
pub const EXPORTER: &str = "node_condition";

/// Longest condition message: Kubernetes allows more, but `kubectl describe node` shows it
/// on one line, and the details are in `/v1/health`.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// Largest API answer read (a Node object is tens of KiB; only the status matters).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Where and how the condition is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The API server's base URL, e.g. `https://10.96.0.1:443` (in-cluster).
    pub api_server: String,
    /// The service account token, re-read before every request (projected tokens rotate);
    /// empty sends none.
    pub token_file: String,
    /// The cluster CA (PEM); empty: the built-in web roots only.
    pub ca_file: String,
    /// The Node object's name.
    pub node: String,
    /// The condition's `type`.
    pub condition_type: String,
    /// How often health is compared with what was written.
    pub interval: Duration,
    /// The condition is written again after this long even when unchanged.
    pub resync: Duration,
    /// Deadline of one request, answer included.
    pub timeout: Duration,
}

impl Settings {
    /// The settings `[kubernetes]` asks for, or `None` when `node_condition` is off. `env`
    /// reads the in-cluster `KUBERNETES_SERVICE_HOST`/`_PORT` when `api_url` is empty.
    /// Errors name the key: no node name, no API server, an unreadable token or CA file.
    pub fn from_config(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let k = &config.kubernetes;
        if !k.node_condition {
            return Ok(None);
        }
        let node = config.agent.node_name.trim();
        if node.is_empty() {
            return Err(ConfigError::at_key(
                "kubernetes.node_condition",
                "needs agent.node_name, the Node to write to (the Helm chart sets \
                 GPULSE_AGENT_NODE_NAME from spec.nodeName); the host name is not used, \
                 since in a pod it is the pod's",
            ));
        }
        let api_server = api::base_url(&k.api_url, env).ok_or_else(|| {
            ConfigError::at_key(
                "kubernetes.api_url",
                "is empty and KUBERNETES_SERVICE_HOST is not set (not in a pod): \
                 set the API server's URL",
            )
        })?;
        api::token(&k.api_token_file)
            .map_err(|e| ConfigError::at_key("kubernetes.api_token_file", e))?;
        if !k.api_ca_file.is_empty() {
            crate::collect::probe::tls::install_crypto_provider();
            crate::collect::probe::tls::client_config(&k.api_ca_file, false)
                .map_err(|e| ConfigError::at_key("kubernetes.api_ca_file", e))?;
        }
        Ok(Some(Self {
            api_server,
            token_file: k.api_token_file.clone(),
            ca_file: k.api_ca_file.clone(),
            node: node.to_owned(),
            condition_type: k.node_condition_type.clone(),
            interval: k.node_condition_interval.0,
            resync: k.node_condition_resync.0,
            timeout: k.api_timeout.0,
        }))
    }
}

/// One condition as written: `status` is `True` (GPUs usable: healthy, or degraded with the
/// reasons in the message), `False` (a GPU is unhealthy: drain) or `Unknown` (not judged
/// yet, or no GPU could be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The condition for this health (pure).
pub fn condition(health: &NodeHealth) -> Condition {
    let (status, reason) = match health.state {
        State::Healthy => ("True", "GPUsHealthy"),
        State::Degraded => ("True", "GPUsDegraded"),
        State::Unhealthy => ("False", "GPUUnhealthy"),
        State::Unknown => ("Unknown", "GPUHealthUnknown"),
    };
    let mut parts: Vec<String> = Vec::new();
    for r in &health.reasons {
        parts.push(format!("node: {} ({})", r.code, r.action.as_str()));
    }
    for gpu in health.gpus.iter().filter(|g| g.state != State::Healthy) {
        let reasons: Vec<String> = gpu
            .reasons
            .iter()
            .map(|r| format!("{} ({})", r.code, r.action.as_str()))
            .collect();
        parts.push(format!(
            "GPU {} {} {}: {}",
            gpu.index,
            gpu.uuid,
            gpu.state.as_str(),
            reasons.join(", ")
        ));
    }
    let message = if parts.is_empty() {
        format!(
            "gpulse: {} GPUs {}",
            health.gpus.len(),
            health.state.as_str()
        )
    } else {
        format!("gpulse: {}", parts.join("; "))
    };
    Condition {
        status,
        reason,
        message: clip(&message, MAX_MESSAGE_CHARS),
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The strategic-merge patch of `nodes/NODE/status` that sets this one condition.
pub fn patch_body(
    condition_type: &str,
    condition: &Condition,
    heartbeat: SystemTime,
    transition: SystemTime,
) -> serde_json::Value {
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": condition_type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastHeartbeatTime": humantime::format_rfc3339_seconds(heartbeat).to_string(),
                "lastTransitionTime": humantime::format_rfc3339_seconds(transition).to_string(),
            }]
        }
    })
}

/// The Kubernetes API client for the one PATCH.
struct Client {
    http: reqwest::Client,
    url: String,
    settings: Settings,
}

impl Client {
    fn new(settings: &Settings) -> Result<Self, String> {
        let http = api::client(&settings.ca_file, &settings.api_server, settings.timeout)?;
        let url = format!(
            "{}/api/v1/nodes/{}/status",
            settings.api_server.trim_end_matches('/'),
            settings.node
        );
        Ok(Self {
            http,
            url,
            settings: settings.clone(),
        })
    }

    fn failure(&self, reason: FailureReason, cause: String) -> ExportFailure {
        ExportFailure {
            reason,
            endpoint: self.url.clone(),
            cause,
        }
    }

    async fn patch(&self, body: &serde_json::Value) -> Result<(), ExportFailure> {
        let mut request = self.http.patch(&self.url);
        let token = api::token(&self.settings.token_file)
            .map_err(|cause| self.failure(FailureReason::Other, cause))?;
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let request = request
            .header("Content-Type", "application/strategic-merge-patch+json")
            .header("Accept", "application/json")
            .body(body.to_string());
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                    break;
                }
                answer.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, answer))
        };
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Err(_) => Err(self.failure(
                FailureReason::Timeout,
                format!("no answer within {:?}", self.settings.timeout),
            )),
            Ok(Err(error)) => {
                let (reason, cause) = classify_error(&error);
                Err(self.failure(reason, cause))
            }
            Ok(Ok((status, _))) if status.is_success() => Ok(()),
            Ok(Ok((status, answer))) => Err(self.failure(
                FailureReason::Status,
                status_cause(status.as_u16(), &answer),
            )),
        }
    }
}

/// Writes the condition until `stop`: at every `interval` when it changed, and every `resync`.
pub async fn run(
    settings: Settings,
    store: Arc<Store>,
    stats: Arc<ExportStats>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match Client::new(&settings) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %error, "Kubernetes node condition off.");
            return;
        }
    };
    tracing::info!(
        node = %settings.node,
        condition = %settings.condition_type,
        api_server = %settings.api_server,
        "Kubernetes node condition on."
    );
    // What the API server holds, as far as we know: the condition and when it last changed.
    let mut written: Option<(Condition, SystemTime, Instant)> = None;
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let snapshot = store.snapshot();
        let Some(health) = snapshot.health.as_deref() else {
            continue;
        };
        if health.evaluated_at.is_none() {
            continue;
        }
        let want = condition(health);
        let now = SystemTime::now();
        let transition = match &written {
            Some((had, since, at)) if *had == want => {
                if at.elapsed() < settings.resync {
                    continue;
                }
                *since
            }
            Some((had, since, _)) if had.status == want.status => *since,
            _ => now,
        };
        let body = patch_body(&settings.condition_type, &want, now, transition);
        let result = client.patch(&body).await;
        let ok = result.is_ok();
        stats.record_with(
            EXPORTER,
            result,
            "Kubernetes node condition not written; retried every interval.",
        );
        if ok {
            written = Some((want, transition, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests;
