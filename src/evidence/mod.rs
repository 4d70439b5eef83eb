//! What must survive a restart or be proven later, kept on disk in `agent.state_dir`.
//!
//! * `journal`: `jobs.jsonl`, the wrapped job's events and totals across restarts: appended
//!   with one write per line, rotated by write + fsync + rename, torn lines skipped on read.
//! * `state`: `state.redb`, the one embedded database (redb) the rest keep their tables in.
//! * `ledger`: the score's evidence in it: minute buckets rolled up into hours.
//! * `keys`: the ed25519 key that signs score reports (`report.key`, mode 0600).
//! * `report`: a report's canonical bytes (RFC 8785), signature, hash chain and verification
//!   (pure).
//! * `reporter`: the hourly signed report and its hash chain (tables in `state.redb`), the
//!   on-demand report, and what the report endpoints serve.
//!
//! Nothing here serves or renders: exporters read what the store holds, and this module only
//! writes and reads back the files (the reporter hands the API a `ReportService`, the one
//! thing served from here, so `export` never imports `evidence`).

pub mod journal;
pub mod keys;
pub mod ledger;
pub mod report;
pub mod reporter;
pub mod state;
