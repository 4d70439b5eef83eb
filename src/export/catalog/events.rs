//! The event log's families: events recorded and held, dropped at the bound before the
//! collector acknowledged them, the OTLP outbox's backlog and last acknowledged export.

use super::{Ctx, Family, Kind, Scope, Series, flag, unix_seconds};
use crate::model::EventLogStatus;

plain_family!(node, Scope::Node);

/// A series function over the log's status, once the log is open
/// (`$value: fn(&EventLogStatus) -> Option<f64>`).
macro_rules! one {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&EventLogStatus) -> Option<f64> = $value;
            if let Some(status) = &c.snap.events {
                s.node([], value(status));
            }
        }
        series
    }};
}

pub const FAMILIES: &[Family] = &[
    node(
        "gpulse_events_recorded",
        "gpulse.events.recorded",
        "{event}",
        "Events appended to the event log (health transitions, Xids, probe outages, job runs, score reports) since the agent started.",
        Kind::Counter,
        one!(|s| Some(s.recorded_total as f64)),
    ),
    node(
        "gpulse_events_dropped",
        "gpulse.events.dropped",
        "{event}",
        "Events dropped at the event log's bound (events.max_disk_bytes, max_events) before the OTLP collector acknowledged them: lost to OTLP.",
        Kind::Counter,
        one!(|s| Some(s.dropped_total as f64)),
    ),
    node(
        "gpulse_events_held",
        "gpulse.events.held",
        "{event}",
        "Events the event log holds (served by /v1/events).",
        Kind::Gauge,
        one!(|s| Some(s.events as f64)),
    ),
    node(
        "gpulse_events_held_bytes",
        "gpulse.events.held.size",
        "By",
        "Encoded size of the events the log holds (the state file holds the same plus its pages).",
        Kind::Gauge,
        one!(|s| Some(s.bytes as f64)),
    ),
    node(
        "gpulse_events_persistent",
        "gpulse.events.persistent",
        "1",
        "1 if the event log is kept in agent.state_dir (survives restarts), 0 if only in memory.",
        Kind::Gauge,
        one!(|s| Some(flag(s.persistent))),
    ),
    node(
        "gpulse_events_write_failures",
        "gpulse.events.write_failures",
        "{write}",
        "Writes of the event log that failed (the events wait at their source and are retried).",
        Kind::Counter,
        one!(|s| Some(s.write_failures as f64)),
    ),
    node(
        "gpulse_events_outbox_pending",
        "gpulse.events.outbox.pending",
        "{event}",
        "Events the OTLP collector has not acknowledged yet (absent when OTLP log export is off).",
        Kind::Gauge,
        one!(|s| s.outbox.then(|| s.pending() as f64)),
    ),
    node(
        "gpulse_events_last_export_success_timestamp_seconds",
        "gpulse.events.last_export_success.timestamp",
        "s",
        "Unix time the OTLP collector last acknowledged a batch of events (absent before the first).",
        Kind::Gauge,
        one!(|s| s.last_export_success.map(unix_seconds)),
    ),
];
