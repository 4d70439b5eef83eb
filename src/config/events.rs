//! `[events]`: the event log (health transitions, Xids, probe outages, job runs, score
//! reports) kept in the state store, its bounds, and its export as OTLP log records.

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

/// `[events]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// New events are taken from what the agent sees when it changes, at most this often (an
    /// Xid waits `health.xid_dedup_window` first, so every source that saw it is listed); a
    /// failed append is retried after it.
    pub interval: HumanDuration,
    /// Largest size of the encoded events in the state store; past it the oldest events are
    /// dropped (counted in `gpulse_events_dropped_total` when not yet exported).
    pub max_disk_bytes: u64,
    /// Most events kept in the state store.
    pub max_events: u64,
    /// Most events kept in memory when there is no state store (`agent.state_dir` unset or
    /// unusable); `max_disk_bytes` bounds their size there too.
    pub max_memory_events: u64,
    /// Largest encoded event (a score report's body is the big one); a larger one is refused.
    pub max_event_bytes: u64,
    /// Export the events as OTLP log records when `[otlp]` is on.
    pub export: bool,
    /// Most events in one OTLP export.
    pub export_batch: u64,
    /// Largest encoded size of one OTLP export's events (at least one event is sent).
    pub export_batch_bytes: u64,
    /// First wait after a failed export; it doubles up to `retry_max`.
    pub retry_initial: HumanDuration,
    /// Longest wait between retries of a failed export.
    pub retry_max: HumanDuration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            interval: HumanDuration::secs(1),
            max_disk_bytes: 64 << 20,
            max_events: 250_000,
            max_memory_events: 4096,
            max_event_bytes: 64 << 10,
            export: true,
            export_batch: 512,
            export_batch_bytes: 1 << 20,
            retry_initial: HumanDuration::secs(1),
            retry_max: HumanDuration::secs(60),
        }
    }
}

impl EventsConfig {
    /// The smallest `max_disk_bytes` and `max_event_bytes`: room for a few events.
    pub const MIN_BYTES: u64 = 1024;

    /// `(key, value, min, max)` of every count and size, checked by [`Self::check`].
    pub(crate) fn bounds(&self) -> [(&'static str, u64, u64, u64); 6] {
        const GIB: u64 = 1 << 30;
        [
            (
                "events.max_disk_bytes",
                self.max_disk_bytes,
                Self::MIN_BYTES,
                16 * GIB,
            ),
            ("events.max_events", self.max_events, 1, 100_000_000),
            (
                "events.max_memory_events",
                self.max_memory_events,
                1,
                1_000_000,
            ),
            (
                "events.max_event_bytes",
                self.max_event_bytes,
                Self::MIN_BYTES,
                1 << 20,
            ),
            ("events.export_batch", self.export_batch, 1, 100_000),
            (
                "events.export_batch_bytes",
                self.export_batch_bytes,
                Self::MIN_BYTES,
                64 << 20,
            ),
        ]
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        for (key, value, min, max) in self.bounds() {
            if value < min || value > max {
                return Err(ConfigError::at_key(
                    key,
                    format!("{value} is out of range; use {min} to {max}"),
                ));
            }
        }
        if self.retry_initial > self.retry_max {
            return Err(ConfigError::at_key(
                "events.retry_initial",
                format!(
                    "{} is longer than events.retry_max ({})",
                    self.retry_initial, self.retry_max
                ),
            ));
        }
        Ok(())
    }

    /// The largest event accepted: `max_event_bytes`, and never more than the log holds.
    pub fn event_limit(&self) -> u64 {
        self.max_event_bytes.min(self.max_disk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_out_of_range_values_name_their_key() {
        assert!(EventsConfig::default().check().is_ok());
        let tiny = EventsConfig {
            max_disk_bytes: 10,
            ..EventsConfig::default()
        };
        let e = tiny.check().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("events.max_disk_bytes"));
        let zero = EventsConfig {
            export_batch: 0,
            ..EventsConfig::default()
        };
        assert_eq!(
            zero.check().unwrap_err().key.as_deref(),
            Some("events.export_batch")
        );
        let backwards = EventsConfig {
            retry_initial: HumanDuration::secs(120),
            ..EventsConfig::default()
        };
        assert_eq!(
            backwards.check().unwrap_err().key.as_deref(),
            Some("events.retry_initial")
        );
        let small = EventsConfig {
            max_disk_bytes: 4096,
            ..EventsConfig::default()
        };
        assert_eq!(small.event_limit(), 4096);
    }
}
