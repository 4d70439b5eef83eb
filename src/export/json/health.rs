//! `gpulse.health/v1` (`GET /v1/health`, `gpulse scan --json`): GPU and node health with
//! reasons, transitions and recent Xids.

use serde::Serialize;

use super::*;
use crate::health::{NodeHealth, Reason};
use crate::model::XidLog;
use crate::store::Snapshot;

/// Schema id of [`HealthV1`].
pub const HEALTH_SCHEMA_V1: &str = "gpulse.health/v1";

/// Recent Xid events served by `/v1/health`, newest last.
pub const MAX_HEALTH_XID_EVENTS: usize = 256;

/// `/v1/health` (and `gpulse scan --json`).
#[derive(Debug, Serialize)]
pub struct HealthV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    /// `healthy`, `degraded`, `unhealthy` or `unknown`.
    pub state: &'static str,
    /// The most severe suggested action: `none`, `restart_app`, `reset_gpu`, `reboot`,
    /// `hardware_inspection`.
    pub action: &'static str,
    pub since: Option<String>,
    /// Absent before the first evaluation.
    pub evaluated_at: Option<String>,
    /// Node-level reasons (`initializing`, `no_gpu`, Xids that name no GPU).
    pub reasons: Vec<ReasonV1>,
    pub gpus: Vec<GpuHealthV1>,
    /// Recent Xid occurrences, oldest first.
    pub xid_events: Vec<XidEventV1>,
    /// Recent state changes, oldest first (`gpu` absent for the node).
    pub transitions: Vec<TransitionV1>,
}

#[derive(Debug, Serialize)]
pub struct GpuHealthV1 {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub state: &'static str,
    pub action: &'static str,
    pub since: String,
    pub reasons: Vec<ReasonV1>,
}

#[derive(Debug, Serialize)]
pub struct ReasonV1 {
    /// Bounded code: `xid_79`, `uncorrectable_ecc`, `gpu_lost`, …
    pub reason: String,
    pub state: &'static str,
    pub action: &'static str,
    pub detail: String,
    pub since: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct TransitionV1 {
    pub at: String,
    pub gpu: Option<u32>,
    pub uuid: String,
    pub from: &'static str,
    pub to: &'static str,
    pub reasons: Vec<String>,
}

fn reasons_v1(reasons: &[Reason]) -> Vec<ReasonV1> {
    reasons
        .iter()
        .map(|r| ReasonV1 {
            reason: r.code.label(),
            state: r.state.as_str(),
            action: r.action.as_str(),
            detail: r.detail.clone(),
            since: rfc3339(r.since),
            last_seen: rfc3339(r.last_seen),
        })
        .collect()
}

impl HealthV1 {
    /// The snapshot's health (unknown before the first evaluation) and its Xid events.
    pub fn from_snapshot(snap: &Snapshot, node: &str) -> Self {
        let initial = NodeHealth::initial();
        let health = snap.health.as_deref().unwrap_or(&initial);
        Self::from_parts(health, &snap.xid, node)
    }

    /// Pretty-printed JSON, for `gpulse scan --json`.
    pub fn to_json_pretty(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| e.to_string())
    }

    pub fn from_parts(health: &NodeHealth, xid: &XidLog, node: &str) -> Self {
        let skip = xid.recent.len().saturating_sub(MAX_HEALTH_XID_EVENTS);
        Self {
            schema: HEALTH_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            state: health.state.as_str(),
            action: health.action.as_str(),
            since: health.since.map(rfc3339),
            evaluated_at: health.evaluated_at.map(rfc3339),
            reasons: reasons_v1(&health.reasons),
            gpus: health
                .gpus
                .iter()
                .map(|g| GpuHealthV1 {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    name: g.name.clone(),
                    state: g.state.as_str(),
                    action: g.action.as_str(),
                    since: rfc3339(g.since),
                    reasons: reasons_v1(&g.reasons),
                })
                .collect(),
            xid_events: xid.recent.iter().skip(skip).map(XidEventV1::from).collect(),
            transitions: health
                .transitions
                .iter()
                .map(|t| TransitionV1 {
                    at: rfc3339(t.at),
                    gpu: t.gpu,
                    uuid: t.uuid.clone(),
                    from: t.from.as_str(),
                    to: t.to.as_str(),
                    reasons: t.reasons.clone(),
                })
                .collect(),
        }
    }
}
