//! gpulse: an on-node GPU agent that samples NVML, the host and inference servers, evaluates
//! health, and exports Prometheus, OTLP and JSON.
//!
//! # Layout
//!
//! Data flows one way: `collect` → `store` → `health` (pure) → `export`, which walks the
//! metric catalog and reads snapshots only; `evidence` keeps on disk what must survive a
//! restart; `cli` and `app` wire it together. `ARCHITECTURE.md` is the longer codemap.
//!
//! * `app`: the agent: `Parts::load` (every subcommand's loader), its tasks, serving, drain.
//! * `cli`: flags, logging, exit codes, the subcommands (`scan`; `wrap` and its child).
//! * `collect`: the sources: NVML, Xid events, the kernel log, the host, inference-server probes.
//! * `config`: `Config`, defaults, loading with origins, probe kinds, OTLP settings.
//! * `demo`: `gpulse demo`'s simulated GPUs and inference server.
//! * `evidence`: what survives a restart: `jobs.jsonl`, the score's ledger, the event log and its outbox.
//! * `export`: the metric catalog, `/metrics`, the OTLP push, the JSON DTOs and the HTTP API.
//! * `health`: GPU and node health states and the Xid policy, pure functions of the store's data.
//! * `identity`: who runs this node, from the environment (the Akash lease), read once at load.
//! * `mode`: where gpulse runs (embedded, sidecar, host) and what it then cannot measure.
//! * `model`: plain sample types with typed label values (no I/O, no serde, no clock).
//! * `notify`: systemd's `Type=notify` protocol: ready, stopping, the watchdog fed by the collector loops.
//! * `score`: the provider-quality score and cost per inference, pure functions of the ledger.
//! * `store`: the latest immutable snapshot, bounded windows, the Xid, probe and job logs.
//!
//! `main.rs` only calls [`cli::main`].

pub mod app;
pub mod cli;
pub mod collect;
pub mod config;
pub mod demo;
pub mod evidence;
pub mod export;
pub mod health;
pub mod identity;
pub mod mode;
pub mod model;
pub mod notify;
pub mod score;
pub mod store;
