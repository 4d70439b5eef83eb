//! What must survive a restart or be proven later, kept on disk in `agent.state_dir`.
//!
//! * `journal`: `jobs.jsonl`, the wrapped job's events and totals across restarts: appended
//!   with one write per line, rotated by write + fsync + rename, torn lines skipped on read.
//! * `state`: `state.redb`, the one embedded database (redb) the rest keep their tables in.
//! * `ledger`: the score's evidence in it: minute buckets rolled up into hours.
//!
//! Nothing here serves or renders: exporters read what the store holds, and this module only
//! writes and reads back the files.

pub mod journal;
pub mod ledger;
pub mod state;
