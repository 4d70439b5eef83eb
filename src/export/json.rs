//! Versioned JSON DTOs for `/v1/snapshot` and `/v1/health`: the public, stable shape of the data.
//!
//! These types are the only place that knows JSON. Fields are added, never renamed or
//! retyped, within `gpulse.snapshot/v1`; a breaking change gets a new schema string.
//! `/v1/events` (`gpulse.events/v1`) serves [`JobEventV1`]s, which are also the lines of the
//! job state file (`crate::evidence::journal`), so that type reads back as well.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::health::{NodeHealth, Reason};
use crate::model::{
    CollectorStatus, GpuDevice, GpuSample, HostSample, InferenceStats, JobEnd, JobEvent, JobExit,
    JobLog, JobOutcome, JobReady, JobStart, JobTotals, LatencyHistogram, ServerHistogram,
    ServerScrapes, XidEvent, XidLog,
};
use crate::store::Snapshot;

/// Schema id of [`SnapshotV1`].
pub const SNAPSHOT_SCHEMA_V1: &str = "gpulse.snapshot/v1";

#[derive(Debug, Serialize)]
pub struct SnapshotV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    /// True once every collector has finished one cycle.
    pub ready: bool,
    pub collectors: Vec<CollectorV1>,
    /// Absent when no GPU sample was ever taken (no NVML).
    pub gpu: Option<GpuSectionV1>,
    pub host: Option<HostV1>,
    /// Xid counts since start and the most recent occurrences (always present, maybe empty).
    pub xid: XidLogV1,
    /// Where gpulse runs: `embedded`, `sidecar` or `host` (see `cannot_measure`).
    pub mode: &'static str,
    /// `agent.mode` as configured: `auto` or one of the modes.
    pub mode_setting: &'static str,
    /// What this agent cannot measure where it runs: `gpu`, `xid_kernel_log`,
    /// `other_containers_gpus`, `job_runs`.
    pub cannot_measure: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct XidLogV1 {
    pub counts: Vec<XidCountV1>,
    pub recent: Vec<XidEventV1>,
}

#[derive(Debug, Serialize)]
pub struct XidCountV1 {
    /// Absent when the source could not tell which GPU.
    pub gpu: Option<u32>,
    pub uuid: String,
    pub xid: u64,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct XidEventV1 {
    pub at: String,
    pub gpu: Option<u32>,
    pub uuid: String,
    pub pci_bus_id: String,
    pub xid: u64,
    /// `nvml_event`, `kmsg`, `nvml_return_code`; the first source first.
    pub sources: Vec<&'static str>,
    pub detail: String,
}

impl From<&XidEvent> for XidEventV1 {
    fn from(e: &XidEvent) -> Self {
        Self {
            at: rfc3339(e.at),
            gpu: e.gpu_index,
            uuid: e.uuid.clone(),
            pci_bus_id: e.pci_bus_id.clone(),
            xid: e.xid,
            sources: e.sources.iter().map(|s| s.as_str()).collect(),
            detail: e.detail.clone(),
        }
    }
}

impl From<&XidLog> for XidLogV1 {
    fn from(x: &XidLog) -> Self {
        Self {
            counts: x
                .counts
                .iter()
                .map(|c| XidCountV1 {
                    gpu: c.gpu_index,
                    uuid: c.uuid.clone(),
                    xid: c.xid,
                    count: c.count,
                    first_seen: rfc3339(c.first_seen),
                    last_seen: rfc3339(c.last_seen),
                })
                .collect(),
            recent: x.recent.iter().map(XidEventV1::from).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CollectorV1 {
    pub name: &'static str,
    pub interval_seconds: f64,
    pub runs: u64,
    pub failures: u64,
    pub last_success: bool,
    pub stale: bool,
    pub last_duration_seconds: f64,
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct GpuSectionV1 {
    pub sampled_at: String,
    pub driver_version: Option<String>,
    pub cuda_driver_version: Option<String>,
    pub devices: Vec<GpuV1>,
}

#[derive(Debug, Serialize)]
pub struct GpuV1 {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub pci_bus_id: String,
    pub serial: Option<String>,
    pub vbios_version: Option<String>,
    pub lost: bool,
    pub utilization: UtilizationV1,
    pub memory: MemoryV1,
    pub temperature_celsius: TemperatureV1,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub energy_joules: Option<f64>,
    pub clocks_hertz: Vec<NamedValueV1>,
    pub max_clocks_hertz: Vec<NamedValueV1>,
    pub performance_state: Option<u32>,
    pub fan_speed_ratio: Vec<NamedValueV1>,
    /// Reasons the GPU supports, each with whether it is limiting clocks now.
    pub throttle_reasons: Vec<ThrottleReasonV1>,
    pub throttle_seconds: Vec<NamedValueV1>,
    pub ecc_errors: Vec<EccV1>,
    pub retired_pages: Vec<NamedValueV1>,
    pub retired_pages_pending: Option<bool>,
    pub remapped_rows: Option<RemappedRowsV1>,
    pub pcie: PcieV1,
    pub nvlinks: Vec<NvLinkV1>,
    pub processes: Option<Vec<ProcessV1>>,
    pub mig: Option<MigV1>,
    /// The driver's recovery verdict: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P,
    /// 4 drain and reset; absent when unsupported.
    pub recovery_action: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct UtilizationV1 {
    pub gpu_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
    pub encoder_ratio: Option<f64>,
    pub decoder_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct MemoryV1 {
    pub total_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub reserved_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct TemperatureV1 {
    pub gpu: Option<f64>,
    pub memory: Option<f64>,
    pub thresholds: Vec<NamedValueV1>,
}

#[derive(Debug, Serialize)]
pub struct NamedValueV1 {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Serialize)]
pub struct ThrottleReasonV1 {
    pub reason: &'static str,
    pub active: bool,
}

#[derive(Debug, Serialize)]
pub struct EccV1 {
    pub kind: &'static str,
    pub scope: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct RemappedRowsV1 {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failure: bool,
}

#[derive(Debug, Serialize)]
pub struct PcieV1 {
    pub link_generation: Option<u32>,
    pub link_width: Option<u32>,
    pub replay_count: Option<u64>,
    pub tx_bytes_per_second: Option<f64>,
    pub rx_bytes_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct NvLinkV1 {
    pub link: u32,
    pub active: bool,
    pub errors: Vec<NamedValueV1>,
}

#[derive(Debug, Serialize)]
pub struct ProcessV1 {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    pub sm_utilization_ratio: Option<f64>,
    pub memory_utilization_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct MigV1 {
    pub enabled: bool,
    pub pending_enabled: bool,
    pub instances: Vec<MigInstanceV1>,
}

#[derive(Debug, Serialize)]
pub struct MigInstanceV1 {
    pub index: u32,
    pub uuid: String,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct HostV1 {
    pub sampled_at: Option<String>,
    pub cpu_count: usize,
    pub cpu_utilization_ratio: Option<f64>,
    pub per_cpu_utilization_ratio: Vec<NamedValueV1>,
    pub load_average: Option<[f64; 3]>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub filesystems: Vec<FilesystemV1>,
    pub networks: Vec<NetworkV1>,
    pub uptime_seconds: Option<u64>,
    pub boot_time_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct FilesystemV1 {
    pub mount_point: String,
    pub device: String,
    pub filesystem: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct NetworkV1 {
    pub interface: String,
    pub received_bytes: u64,
    pub transmitted_bytes: u64,
    pub received_packets: u64,
    pub transmitted_packets: u64,
    pub receive_errors: u64,
    pub transmit_errors: u64,
}

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

/// Schema id of [`ProbesV1`].
pub const PROBES_SCHEMA_V1: &str = "gpulse.probes/v1";

/// `/v1/probes`: every configured probe's last check and its outages.
#[derive(Debug, Serialize)]
pub struct ProbesV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    pub probes: Vec<ProbeV1>,
}

#[derive(Debug, Serialize)]
pub struct ProbeV1 {
    pub name: String,
    pub kind: &'static str,
    pub interval_seconds: f64,
    /// `up`, `loading`, `degraded`, `down`, or `unknown` before the first check.
    pub state: &'static str,
    /// Bounded: `connect_refused`, `timeout`, `http_status`, `bad_body`, `model_missing`,
    /// `tls`, `redirect_loop`, `body_too_large`, `dns`, `not_ready`; absent when up.
    pub reason: Option<&'static str>,
    pub detail: String,
    pub checked_at: Option<String>,
    pub check_duration_seconds: Option<f64>,
    pub models: Vec<String>,
    pub outages_total: u64,
    pub last_recovery_seconds: Option<f64>,
    /// Recent outages, oldest first; `end` absent while it goes on.
    pub outages: Vec<OutageV1>,
    /// Synthetic inference requests; absent when the probe does not send them.
    pub inference: Option<InferenceV1>,
    /// The server's own metrics, lifted into common names; absent when not scraped.
    pub server_metrics: Option<ServerMetricsV1>,
}

/// A probe's scrapes of the server's /metrics and what the last good one lifted.
#[derive(Debug, Serialize)]
pub struct ServerMetricsV1 {
    pub scrapes: u64,
    pub failures: u64,
    /// Absent before the first scrape.
    pub last_ok: Option<bool>,
    pub last_at: Option<String>,
    pub last_duration_seconds: f64,
    /// Bounded reason (as a check's) and detail of the last failure; absent when it worked.
    pub last_error_reason: Option<&'static str>,
    pub last_error: Option<String>,
    /// From the last successful scrape; absent before one.
    pub lifted: Option<LiftedV1>,
}

/// Counters are cumulative since the server started; `null` = the server has no such series.
#[derive(Debug, Serialize)]
pub struct LiftedV1 {
    /// Whose names were found: vllm, sglang, tgi, triton, trtllm, llamacpp, mlserver, unknown.
    pub dialect: &'static str,
    pub series: usize,
    pub invalid_lines: usize,
    pub truncated: bool,
    pub requests_running: Option<f64>,
    pub requests_waiting: Option<f64>,
    pub requests_succeeded_total: Option<f64>,
    pub requests_failed_total: Option<f64>,
    pub prompt_tokens_total: Option<f64>,
    pub generation_tokens_total: Option<f64>,
    pub kv_cache_usage_ratio: Option<f64>,
    pub preemptions_total: Option<f64>,
    pub time_to_first_token_seconds: Option<ServerHistogramV1>,
    pub e2e_request_latency_seconds: Option<ServerHistogramV1>,
    pub inter_token_latency_seconds: Option<ServerHistogramV1>,
}

/// Since the server started: count, mean, and quantiles when it has buckets.
#[derive(Debug, Serialize)]
pub struct ServerHistogramV1 {
    pub count: f64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl ServerHistogramV1 {
    fn of(h: &ServerHistogram) -> Self {
        Self {
            count: h.count,
            mean: h.mean(),
            p50: h.quantile(0.5),
            p90: h.quantile(0.9),
            p99: h.quantile(0.99),
        }
    }
}

impl ServerMetricsV1 {
    fn from_scrapes(s: &ServerScrapes) -> Self {
        Self {
            scrapes: s.attempts,
            failures: s.failures,
            last_ok: s.last_ok(),
            last_at: s.last_at.map(rfc3339),
            last_duration_seconds: s.last_duration.as_secs_f64(),
            last_error_reason: s.last_error.as_ref().map(|(r, _)| r.as_str()),
            last_error: s.last_error.as_ref().map(|(_, d)| d.clone()),
            lifted: s.metrics.as_ref().map(|m| LiftedV1 {
                dialect: m.dialect,
                series: m.series,
                invalid_lines: m.invalid_lines,
                truncated: m.truncated,
                requests_running: m.requests_running,
                requests_waiting: m.requests_waiting,
                requests_succeeded_total: m.requests_succeeded_total,
                requests_failed_total: m.requests_failed_total,
                prompt_tokens_total: m.prompt_tokens_total,
                generation_tokens_total: m.generation_tokens_total,
                kv_cache_usage_ratio: m.kv_cache_usage_ratio,
                preemptions_total: m.preemptions_total,
                time_to_first_token_seconds: m
                    .time_to_first_token
                    .as_ref()
                    .map(ServerHistogramV1::of),
                e2e_request_latency_seconds: m.e2e_latency.as_ref().map(ServerHistogramV1::of),
                inter_token_latency_seconds: m
                    .inter_token_latency
                    .as_ref()
                    .map(ServerHistogramV1::of),
            }),
        }
    }
}

/// A probe's synthetic requests since the agent started.
#[derive(Debug, Serialize)]
pub struct InferenceV1 {
    pub ttft_slo_seconds: f64,
    pub latency_slo_seconds: f64,
    pub requests_succeeded: u64,
    pub requests_failed: u64,
    /// Requests that failed or missed an SLO.
    pub slo_violations: u64,
    pub output_tokens_total: u64,
    /// Estimated from the histogram of successful requests (PromQL-style interpolation).
    pub ttft_seconds: QuantilesV1,
    pub duration_seconds: QuantilesV1,
    /// Absent until the first request.
    pub last: Option<InferenceRequestV1>,
}

#[derive(Debug, Serialize)]
pub struct QuantilesV1 {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl QuantilesV1 {
    fn of(h: &LatencyHistogram) -> Self {
        Self {
            p50: h.quantile(0.5),
            p90: h.quantile(0.9),
            p99: h.quantile(0.99),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InferenceRequestV1 {
    pub at: String,
    pub ok: bool,
    /// Same set as a check's reason; absent when ok.
    pub reason: Option<&'static str>,
    pub detail: String,
    /// The model named in the request; empty when the server picked.
    pub model: String,
    pub ttft_seconds: Option<f64>,
    pub duration_seconds: f64,
    pub output_tokens: Option<u64>,
    pub tokens_per_second: Option<f64>,
    /// Ollama: the request (re)loaded the model, so its timing includes the load.
    pub caused_load: bool,
}

impl InferenceV1 {
    fn from_stats(i: &InferenceStats) -> Self {
        Self {
            ttft_slo_seconds: i.ttft_slo.as_secs_f64(),
            latency_slo_seconds: i.latency_slo.as_secs_f64(),
            requests_succeeded: i.succeeded,
            requests_failed: i.failed,
            slo_violations: i.slo_violations,
            output_tokens_total: i.output_tokens_total,
            ttft_seconds: QuantilesV1::of(&i.ttft),
            duration_seconds: QuantilesV1::of(&i.duration),
            last: i.last.as_ref().map(|l| InferenceRequestV1 {
                at: rfc3339(l.at),
                ok: l.ok,
                reason: l.reason.map(|r| r.as_str()),
                detail: l.detail.clone(),
                model: l.model.clone(),
                ttft_seconds: l.ttft.map(|d| d.as_secs_f64()),
                duration_seconds: l.duration.as_secs_f64(),
                output_tokens: l.output_tokens,
                tokens_per_second: l.tokens_per_second(),
                caused_load: l.caused_load,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct OutageV1 {
    pub start: String,
    pub end: Option<String>,
    pub cause: &'static str,
}

impl ProbesV1 {
    pub fn from_snapshot(snap: &Snapshot, node: &str) -> Self {
        Self {
            schema: PROBES_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            probes: snap
                .probes
                .iter()
                .map(|p| ProbeV1 {
                    name: p.name.clone(),
                    kind: p.kind,
                    interval_seconds: p.interval.as_secs_f64(),
                    state: p.last.as_ref().map_or("unknown", |l| l.state.as_str()),
                    reason: p.last.as_ref().and_then(|l| l.reason).map(|r| r.as_str()),
                    detail: p
                        .last
                        .as_ref()
                        .map(|l| l.detail.clone())
                        .unwrap_or_default(),
                    checked_at: p.last.as_ref().map(|l| rfc3339(l.checked_at)),
                    check_duration_seconds: p.last.as_ref().map(|l| l.latency.as_secs_f64()),
                    models: p
                        .last
                        .as_ref()
                        .map(|l| l.models.clone())
                        .unwrap_or_default(),
                    outages_total: p.outages_total,
                    last_recovery_seconds: p.last_recovery.map(|d| d.as_secs_f64()),
                    outages: p
                        .outages
                        .iter()
                        .map(|o| OutageV1 {
                            start: rfc3339(o.start),
                            end: o.end.map(rfc3339),
                            cause: o.cause.as_str(),
                        })
                        .collect(),
                    inference: p.inference.as_ref().map(InferenceV1::from_stats),
                    server_metrics: p.server.as_ref().map(ServerMetricsV1::from_scrapes),
                })
                .collect(),
        }
    }
}

/// RFC 3339 with millisecond precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    // Times before 1970 cannot come from this machine's clock; clamp rather than fail.
    let t = if t < UNIX_EPOCH { UNIX_EPOCH } else { t };
    humantime::format_rfc3339_millis(t).to_string()
}

fn named<T: ToString>(items: &[(T, f64)]) -> Vec<NamedValueV1> {
    items
        .iter()
        .map(|(name, value)| NamedValueV1 {
            name: name.to_string(),
            value: *value,
        })
        .collect()
}

impl SnapshotV1 {
    pub fn from_snapshot(snap: &Snapshot, node: &str) -> Self {
        Self {
            schema: SNAPSHOT_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            ready: snap.first_cycle_done(),
            collectors: snap.collectors.iter().map(CollectorV1::from).collect(),
            gpu: snap.gpu.as_deref().map(GpuSectionV1::from),
            host: snap.host.as_deref().map(HostV1::from),
            xid: XidLogV1::from(snap.xid.as_ref()),
            mode: snap.mode.mode.as_str(),
            mode_setting: snap.mode.setting_str(),
            cannot_measure: crate::mode::cannot_measure(&snap.mode, snap.gpu.is_some()),
        }
    }
}

impl From<&CollectorStatus> for CollectorV1 {
    fn from(c: &CollectorStatus) -> Self {
        Self {
            name: c.name,
            interval_seconds: c.interval.as_secs_f64(),
            runs: c.runs,
            failures: c.failures,
            last_success: c.last_success,
            stale: c.is_stale(),
            last_duration_seconds: c.last_duration.as_secs_f64(),
            last_run_at: c.last_run_at.map(rfc3339),
            last_success_at: c.last_success_at.map(rfc3339),
            last_error: c.last_error.clone(),
            last_error_kind: c.last_error_kind,
        }
    }
}

impl From<&GpuSample> for GpuSectionV1 {
    fn from(g: &GpuSample) -> Self {
        Self {
            sampled_at: rfc3339(g.taken_at),
            driver_version: g.driver_version.clone(),
            cuda_driver_version: g.cuda_driver_version.clone(),
            devices: g.devices.iter().map(GpuV1::from).collect(),
        }
    }
}

impl From<&GpuDevice> for GpuV1 {
    fn from(d: &GpuDevice) -> Self {
        let id = &d.identity;
        Self {
            index: id.index,
            uuid: id.uuid.clone(),
            name: id.name.clone(),
            pci_bus_id: id.pci_bus_id.clone(),
            serial: id.serial.clone(),
            vbios_version: id.vbios_version.clone(),
            lost: d.lost,
            utilization: UtilizationV1 {
                gpu_ratio: d.utilization.gpu,
                memory_ratio: d.utilization.memory,
                encoder_ratio: d.utilization.encoder,
                decoder_ratio: d.utilization.decoder,
            },
            memory: MemoryV1 {
                total_bytes: d.memory.total_bytes,
                used_bytes: d.memory.used_bytes,
                free_bytes: d.memory.free_bytes,
                reserved_bytes: d.memory.reserved_bytes,
            },
            temperature_celsius: TemperatureV1 {
                gpu: d.temperature_gpu_celsius,
                memory: d.temperature_memory_celsius,
                thresholds: named(&d.temperature_thresholds),
            },
            power_watts: d.power_watts,
            power_limit_watts: d.power_limit_watts,
            energy_joules: d.energy_joules,
            clocks_hertz: named(&d.clocks_hertz),
            max_clocks_hertz: named(&d.max_clocks_hertz),
            performance_state: d.performance_state,
            fan_speed_ratio: named(&d.fan_speed_ratio),
            throttle_reasons: d
                .throttle
                .iter()
                .flat_map(|t| t.decoded().collect::<Vec<_>>())
                .map(|(reason, active)| ThrottleReasonV1 {
                    reason: reason.as_str(),
                    active,
                })
                .collect(),
            throttle_seconds: named(&d.throttle_seconds),
            ecc_errors: d
                .ecc_errors
                .iter()
                .map(|(kind, scope, count)| EccV1 {
                    kind: kind.as_str(),
                    scope: scope.as_str(),
                    count: *count,
                })
                .collect(),
            retired_pages: d
                .retired_pages
                .iter()
                .map(|(cause, n)| NamedValueV1 {
                    name: cause.as_str().to_owned(),
                    value: *n as f64,
                })
                .collect(),
            retired_pages_pending: d.retired_pages_pending,
            remapped_rows: d.remapped_rows.map(|r| RemappedRowsV1 {
                correctable: r.correctable,
                uncorrectable: r.uncorrectable,
                pending: r.pending,
                failure: r.failure,
            }),
            pcie: PcieV1 {
                link_generation: d.pcie.link_generation,
                link_width: d.pcie.link_width,
                replay_count: d.pcie.replay_count,
                tx_bytes_per_second: d.pcie.tx_bytes_per_second,
                rx_bytes_per_second: d.pcie.rx_bytes_per_second,
            },
            nvlinks: d
                .nvlinks
                .iter()
                .map(|l| NvLinkV1 {
                    link: l.link,
                    active: l.active,
                    errors: l
                        .errors()
                        .map(|(n, v)| NamedValueV1 {
                            name: n.as_str().to_owned(),
                            value: v as f64,
                        })
                        .collect(),
                })
                .collect(),
            processes: d.processes.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| ProcessV1 {
                        pid: p.pid,
                        used_memory_bytes: p.used_memory_bytes,
                        sm_utilization_ratio: p.sm_utilization,
                        memory_utilization_ratio: p.memory_utilization,
                    })
                    .collect()
            }),
            recovery_action: d.recovery_action,
            mig: d.mig.as_ref().map(|m| MigV1 {
                enabled: m.enabled,
                pending_enabled: m.pending_enabled,
                instances: m
                    .instances
                    .iter()
                    .map(|i| MigInstanceV1 {
                        index: i.index,
                        uuid: i.uuid.clone(),
                        memory_total_bytes: i.memory_total_bytes,
                        memory_used_bytes: i.memory_used_bytes,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<&HostSample> for HostV1 {
    fn from(h: &HostSample) -> Self {
        Self {
            sampled_at: h.taken_at.map(rfc3339),
            cpu_count: h.cpu_count,
            cpu_utilization_ratio: h.cpu_utilization,
            per_cpu_utilization_ratio: named(&h.per_cpu_utilization),
            load_average: h.load_average,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            memory_used_bytes: h.memory_used_bytes,
            swap_total_bytes: h.swap_total_bytes,
            swap_used_bytes: h.swap_used_bytes,
            filesystems: h
                .disks
                .iter()
                .map(|d| FilesystemV1 {
                    mount_point: d.mount_point.clone(),
                    device: d.device.clone(),
                    filesystem: d.filesystem.clone(),
                    total_bytes: d.total_bytes,
                    available_bytes: d.available_bytes,
                })
                .collect(),
            networks: h
                .networks
                .iter()
                .map(|n| NetworkV1 {
                    interface: n.interface.clone(),
                    received_bytes: n.received_bytes,
                    transmitted_bytes: n.transmitted_bytes,
                    received_packets: n.received_packets,
                    transmitted_packets: n.transmitted_packets,
                    receive_errors: n.receive_errors,
                    transmit_errors: n.transmit_errors,
                })
                .collect(),
            uptime_seconds: h.uptime.map(|u| u.as_secs()),
            boot_time_seconds: h.boot_time_seconds,
        }
    }
}

// ------------------------------------------------------------------ /v1/events (jobs)

/// Schema id of [`EventsV1`].
pub const EVENTS_SCHEMA_V1: &str = "gpulse.events/v1";

/// `/v1/events`: the wrapped job's summary and its recent events.
#[derive(Debug, Serialize)]
pub struct EventsV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    pub mode: &'static str,
    /// Absent when gpulse supervises no job (not `gpulse wrap`).
    pub job: Option<JobSummaryV1>,
    /// Oldest first, at most `wrap.max_events`; each has a `kind` (`job_started`, `job_ready`,
    /// `job_finished`; other kinds may be added).
    pub events: Vec<JobEventV1>,
}

/// The wrapped job now: the run in progress (or the last one) and totals across restarts.
#[derive(Debug, Serialize)]
pub struct JobSummaryV1 {
    pub running: bool,
    /// The run in progress, else the last one; absent before the first.
    pub run: Option<u64>,
    pub program: Option<String>,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    /// When this run's readiness probe was first up, and how long after its start.
    pub ready_at: Option<String>,
    pub ready_seconds: Option<f64>,
    /// From the previous run's end to this run's ready (after a restart).
    pub recovery_seconds: Option<f64>,
    /// Runs started after an earlier one (across restarts with `agent.state_dir`).
    pub restarts_total: u64,
    pub runs_total: JobRunsV1,
    pub last_outcome: Option<&'static str>,
    /// Shell convention: the exit code, or 128 + the signal number.
    pub last_exit_code: Option<i32>,
}

/// Ended runs per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobRunsV1 {
    pub success: u64,
    pub failure: u64,
    pub signal: u64,
    pub oom: u64,
    pub stopped: u64,
    pub unknown: u64,
}

impl JobRunsV1 {
    pub fn from_totals(t: &JobTotals) -> Self {
        Self {
            success: t.outcome(JobOutcome::Success),
            failure: t.outcome(JobOutcome::Failure),
            signal: t.outcome(JobOutcome::Signal),
            oom: t.outcome(JobOutcome::Oom),
            stopped: t.outcome(JobOutcome::Stopped),
            unknown: t.outcome(JobOutcome::Unknown),
        }
    }

    /// The counts in [`JobOutcome::ALL`] order.
    pub fn to_array(self) -> [u64; 6] {
        [
            self.success,
            self.failure,
            self.signal,
            self.oom,
            self.stopped,
            self.unknown,
        ]
    }
}

/// One job event, as served by `/v1/events` and stored as a line of `jobs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEventV1 {
    JobStarted {
        at: String,
        run: u64,
        program: String,
        pid: u32,
    },
    JobReady {
        at: String,
        run: u64,
        ready_seconds: f64,
        recovery_seconds: Option<f64>,
    },
    JobFinished {
        at: String,
        run: u64,
        program: String,
        pid: u32,
        started_at: String,
        /// `success`, `failure`, `signal`, `oom`, `stopped`, `unknown`.
        outcome: String,
        /// Shell convention (128 + signal when killed); absent when `unknown`.
        exit_code: Option<i32>,
        /// The signal that killed the child, if one did.
        signal: Option<i32>,
        duration_seconds: Option<f64>,
        /// OOM kills the cgroup counted during the run; absent when unreadable.
        oom_kills: Option<u64>,
        /// The first SIGTERM (15) or SIGINT (2) gpulse forwarded.
        stop_signal: Option<i32>,
        killed_after_grace: bool,
    },
}

impl From<&JobEvent> for JobEventV1 {
    fn from(e: &JobEvent) -> Self {
        match e {
            JobEvent::Started(s) => Self::JobStarted {
                at: rfc3339(s.at),
                run: s.run,
                program: s.program.clone(),
                pid: s.pid,
            },
            JobEvent::Ready(r) => Self::JobReady {
                at: rfc3339(r.at),
                run: r.run,
                ready_seconds: r.after_start.as_secs_f64(),
                recovery_seconds: r.recovery.map(|d| d.as_secs_f64()),
            },
            JobEvent::Finished(f) => Self::JobFinished {
                at: rfc3339(f.at),
                run: f.run,
                program: f.program.clone(),
                pid: f.pid,
                started_at: rfc3339(f.started_at),
                outcome: f.outcome.as_str().to_owned(),
                exit_code: f.exit.map(JobExit::exit_code),
                signal: match f.exit {
                    Some(JobExit::Signal(s)) => Some(s),
                    _ => None,
                },
                duration_seconds: f.duration.map(|d| d.as_secs_f64()),
                oom_kills: f.oom_kills,
                stop_signal: f.stop_signal,
                killed_after_grace: f.killed_after_grace,
            },
        }
    }
}

impl JobEventV1 {
    /// Back to the model (reading `jobs.jsonl`); `None` when a field is out of range.
    pub fn to_model(&self) -> Option<JobEvent> {
        let time = |s: &str| humantime::parse_rfc3339(s).ok();
        let secs = |s: f64| Duration::try_from_secs_f64(s).ok();
        Some(match self {
            Self::JobStarted {
                at,
                run,
                program,
                pid,
            } => JobEvent::Started(JobStart {
                run: *run,
                at: time(at)?,
                program: program.clone(),
                pid: *pid,
            }),
            Self::JobReady {
                at,
                run,
                ready_seconds,
                recovery_seconds,
            } => JobEvent::Ready(JobReady {
                run: *run,
                at: time(at)?,
                after_start: secs(*ready_seconds)?,
                recovery: recovery_seconds.and_then(secs),
            }),
            Self::JobFinished {
                at,
                run,
                program,
                pid,
                started_at,
                outcome,
                exit_code,
                signal,
                duration_seconds,
                oom_kills,
                stop_signal,
                killed_after_grace,
            } => JobEvent::Finished(JobEnd {
                run: *run,
                at: time(at)?,
                program: program.clone(),
                pid: *pid,
                started_at: time(started_at)?,
                outcome: JobOutcome::parse(outcome)?,
                exit: match (signal, exit_code) {
                    (Some(s), _) => Some(JobExit::Signal(*s)),
                    (None, Some(c)) => Some(JobExit::Code(*c)),
                    (None, None) => None,
                },
                duration: duration_seconds.and_then(secs),
                oom_kills: *oom_kills,
                stop_signal: *stop_signal,
                killed_after_grace: *killed_after_grace,
            }),
        })
    }
}

impl EventsV1 {
    pub fn from_snapshot(snap: &Snapshot, node: &str) -> Self {
        Self {
            schema: EVENTS_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            mode: snap.mode.mode.as_str(),
            job: snap.job.as_deref().map(JobSummaryV1::from),
            events: snap
                .job
                .iter()
                .flat_map(|j| j.recent.iter())
                .map(JobEventV1::from)
                .collect(),
        }
    }
}

impl From<&JobLog> for JobSummaryV1 {
    fn from(log: &JobLog) -> Self {
        let running = log.running.as_ref();
        let (run, program, pid, started_at) = match (running, &log.last_end) {
            (Some(r), _) => (Some(r.run), Some(&r.program), Some(r.pid), Some(r.at)),
            (None, Some(e)) => (
                Some(e.run),
                Some(&e.program),
                Some(e.pid),
                Some(e.started_at),
            ),
            (None, None) => (None, None, None, None),
        };
        let ready = log.ready.as_ref().filter(|_| running.is_some());
        Self {
            running: running.is_some(),
            run,
            program: program.cloned(),
            pid,
            started_at: started_at.map(rfc3339),
            ready_at: ready.map(|r| rfc3339(r.at)),
            ready_seconds: ready.map(|r| r.after_start.as_secs_f64()),
            recovery_seconds: ready.and_then(|r| r.recovery).map(|d| d.as_secs_f64()),
            restarts_total: log.totals.restarts(),
            runs_total: JobRunsV1::from_totals(&log.totals),
            last_outcome: log.last_end.as_ref().map(|e| e.outcome.as_str()),
            last_exit_code: log.last_exit_code(),
        }
    }
}
