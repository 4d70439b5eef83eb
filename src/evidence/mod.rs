//! What must survive a restart or be proven later, kept on disk in `agent.state_dir`.
//!
//! * `journal`: `jobs.jsonl`, the wrapped job's events and totals across restarts: appended
//!   with one write per line, rotated by write + fsync + rename, torn lines skipped on read.
//! * `ledger`: `ledger.redb`, the score's evidence: minute buckets rolled up into hours.
//!
//! Nothing here serves or renders: exporters read what the store holds, and this module only
//! writes and reads back the files.

pub mod journal;
pub mod ledger;
