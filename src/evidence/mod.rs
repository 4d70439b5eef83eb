//! What must survive a restart or be proven later, kept on disk in `agent.state_dir`.
//!
//! * `journal`: `jobs.jsonl`, the wrapped job's events and totals across restarts: appended
//!   with one write per line, rotated by write + fsync + rename, torn lines skipped on read.
//! * `state`: `state.redb`, the one embedded database (redb) the rest keep their tables in.
//! * `ledger`: the score's evidence in it: minute buckets rolled up into hours.
//! * `events`: the event model (`gpulse.event/v1`): health transitions, Xids, probe outages,
//!   job runs and score reports as one kind of record.
//! * `event_log`: the event log in the state store (or in memory), numbered by a sequence
//!   that survives restarts, bounded, with the OTLP export's acknowledged cursor.
//! * `recorder`: the task that turns snapshot changes into events, each once.
//! * `outbox`: the task that exports the log as OTLP log records, at least once.
//!
//! Nothing here serves or renders: exporters read what the store holds (the event log is
//! read through `export::api::EventFeed`), and this module writes and reads back the files.

pub mod event_log;
pub mod events;
pub mod journal;
pub mod ledger;
pub mod outbox;
pub mod recorder;
pub mod state;
