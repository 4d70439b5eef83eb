//! Exporters: they read [`crate::store::Snapshot`]s and never call collectors.
//!
//! * `prometheus`: renders `/metrics` (Prometheus text or OpenMetrics).
//! * `json`: the versioned JSON DTOs of `/v1/*` (model types are never serialized directly).
//! * `api`: the axum router and our hyper accept loop with their bounds (timeouts,
//!   concurrency, body size, connections).
//! * `tls`: the rustls configuration from PEM files; `auth`: the bearer token check;
//!   `reload`: how both are reloaded on SIGHUP and file change.

pub mod api;
pub mod auth;
pub mod json;
pub mod prometheus;
pub mod reload;
pub mod tls;
