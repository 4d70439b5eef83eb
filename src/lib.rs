//! gpulse: an on-node GPU agent that samples NVML and the host and exports Prometheus and JSON.
//!
//! # Layout
//!
//! Data flows one way: `collect` → `store` → `export`.
//!
//! * `config`: the TOML/env/flag configuration, its defaults, validation and the commented example.
//! * `model`: plain sample types that collectors produce and exporters read (no I/O, no serde).
//! * `collect`: one source per file (`gpu` for NVML, `host` for
//!   sysinfo), the shared runner that times each cycle, and the deadline worker that keeps a
//!   hung blocking call from stalling anything else.
//! * `store`: a bounded window per source plus the latest immutable snapshot.
//! * `export`: `/metrics` rendering (`prometheus`), the JSON DTOs, the HTTP router and server
//!   (`api`), HTTPS (`tls`) and bearer-token authentication (`auth`).
//! * `health`: GPU and node health states, pure functions of the snapshot, window and Xid log.
//! * `mode`: where gpulse runs (embedded, sidecar, host) and what it then cannot measure.
//! * `app`: wires the pieces together and runs until shutdown.
//! * `cli`: command-line parsing, logging, exit codes and the subcommands (`scan`, `wrap`:
//!   the agent beside a child it supervises); `main.rs` only calls [`cli::main`].

pub mod app;
pub mod cli;
pub mod collect;
pub mod config;
pub mod demo;
pub mod evidence;
pub mod export;
pub mod health;
pub mod mode;
pub mod model;
pub mod store;
