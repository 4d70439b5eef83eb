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
//! * `events`: the event model (`gpulse.event/v1`): health transitions, Xids, probe outages,
//!   job runs and score reports as one kind of record.
//! * `event_log`: the event log in the state store (or in memory), numbered by a sequence
//!   that survives restarts, bounded, with the OTLP export's acknowledged cursor.
//! * `recorder`: the task that turns snapshot changes into events, each once.
//! * `outbox`: the task that exports the log as OTLP log records, at least once.
//!
//! Nothing here serves or renders: exporters read what the store holds (the event log is
//! read through `export::api::EventFeed`), and this module writes and reads back the files.
//!
//! Nothing here serves or renders: exporters read what the store holds, and this module only
//! writes and reads back the files (the reporter hands the API a `ReportService`, the one
//! thing served from here, so `export` never imports `evidence`).

pub mod event_log;
pub mod events;
pub mod journal;
pub mod keys;
pub mod ledger;
pub mod outbox;
pub mod recorder;
pub mod report;
pub mod reporter;
pub mod state;
