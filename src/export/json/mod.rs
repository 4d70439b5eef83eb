//! Versioned JSON DTOs: the public, stable shape of the data, one file per schema.
//!
//! These types are the only place that knows JSON. Fields are added, never renamed or
//! retyped, within a schema; a breaking change gets a new schema string.
//!
//! * `snapshot`: `gpulse.snapshot/v1` (`/v1/snapshot`).
//! * `health`: `gpulse.health/v1` (`/v1/health`, `gpulse scan --json`).
//! * `probes`: `gpulse.probes/v1` (`/v1/probes`).
//! * `score`: `gpulse.score/v1` (`/v1/score`).
//! * `report`: `gpulse.report/v1` (a signed score report), `gpulse.reports/v1` (the chain's
//!   index) and `gpulse.identity/v1` (the signing key and the hardware it reports on).
//! * `event`: `gpulse.event/v1`, one event of the event log (stored, served, exported).
//! * `events`: `gpulse.events/v2` (`/v1/events`): the job summary and a page of the event
//!   log; its [`JobEventV1`]s are the lines of the job state file
//!   (`crate::evidence::journal`), so that type reads back as well.
//! * `bench`: `gpulse.bench/v1` (`gpulse bench --json`).

use std::time::{SystemTime, UNIX_EPOCH};

mod bench;
mod event;
mod events;
mod health;
mod probes;
mod report;
mod score;
mod snapshot;

pub use bench::*;
pub use event::*;
pub use events::*;
pub use health::*;
pub use probes::*;
pub use report::*;
pub use score::*;
pub use snapshot::*;

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
