//! Exporters: they read [`crate::store::Snapshot`]s and never call collectors.
//!
//! * `prometheus`: renders `/metrics` (Prometheus text or OpenMetrics).
//! * `dcgm`: the dcgm-exporter-compatible `DCGM_FI_*` families `prometheus` adds when
//!   `[prometheus] dcgm_compat` is on.
//! * `json`: the versioned JSON DTOs of `/v1/*` (model types are never serialized directly).
//! * `api`: the axum router and server with its bounds (timeouts, concurrency, body size).

pub mod api;
pub mod dcgm;
pub mod json;
pub mod prometheus;
