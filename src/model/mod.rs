//! Plain sample types that collectors produce and exporters read: no I/O, no serde, no clocks.
//!
//! Every optional reading is an `Option` (or an empty list): `None` means the device said
//! NotSupported / NoPermission or the call failed, and exporters omit it. A reading is never
//! replaced by 0.

use std::time::{Duration, SystemTime};

/// A typed label value: its Prometheus label value and its OpenTelemetry attribute value.
/// Readings are keyed by these enums, not by strings, so a misspelt key cannot compile (a
/// string key that matched nothing silently dropped the reading).
pub trait LabelValue: Copy {
    fn prom(self) -> &'static str;
    fn otel(self) -> &'static str;
}

/// Declares a label enum with both spellings, in one place per value.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $prom:literal / $otel:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The Prometheus spelling (also the JSON one).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $prom),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl LabelValue for $name {
            fn prom(self) -> &'static str {
                self.as_str()
            }

            fn otel(self) -> &'static str {
                match self {
                    $(Self::$variant => $otel),+
                }
            }
        }
    };
}

mod bench;
mod event;
mod gpu;
mod host;
mod job;
mod k8s;
mod ledger;
mod probe;
mod server;
mod window;
mod xid;

pub use bench::*;
pub use event::*;
pub use gpu::*;
pub use host::*;
pub use job::*;
pub use k8s::*;
pub use ledger::*;
pub use probe::*;
pub use server::*;
pub use window::*;
pub use xid::*;

/// A sample from any collector, as handed to the store.
#[derive(Debug, Clone)]
pub enum Sample {
    Gpu(GpuSample),
    Host(HostSample),
    /// The Kubernetes attribution (`collect::k8s`).
    K8s(K8sAttribution),
}

/// The health of one collector as of its last cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorStatus {
    pub name: &'static str,
    pub interval: Duration,
    /// Cycles attempted.
    pub runs: u64,
    /// Cycles that failed or missed their deadline.
    pub failures: u64,
    /// Whether the last cycle produced a fresh sample.
    pub last_success: bool,
    pub last_duration: Duration,
    /// When the first cycle began (the collector's start, for readiness' start-up grace).
    pub first_run_at: Option<SystemTime>,
    pub last_run_at: Option<SystemTime>,
    pub last_success_at: Option<SystemTime>,
    /// Why the last cycle failed, for the JSON API and logs (never a metric label).
    pub last_error: Option<String>,
    /// The failure class of the last cycle (`unavailable`, `deadline`, `failed`), bounded.
    pub last_error_kind: Option<&'static str>,
    /// When the current run of failures of `last_error_kind` began (the start of its first
    /// cycle); `None` after a success. Health reads it to tell a hang from a slow cycle.
    pub failing_since: Option<SystemTime>,
}

impl CollectorStatus {
    /// A collector that has not run yet.
    pub fn new(name: &'static str, interval: Duration) -> Self {
        Self {
            name,
            interval,
            runs: 0,
            failures: 0,
            last_success: false,
            last_duration: Duration::ZERO,
            first_run_at: None,
            last_run_at: None,
            last_success_at: None,
            last_error: None,
            last_error_kind: None,
            failing_since: None,
        }
    }

    /// True when the data served is older than the last attempt: the last cycle failed
    /// but an earlier one succeeded.
    pub fn is_stale(&self) -> bool {
        !self.last_success && self.last_success_at.is_some()
    }

    /// How long every cycle has missed its deadline (the source is hung), as of `now`;
    /// `None` unless the last cycle was a `deadline` failure.
    pub fn stuck_for(&self, now: SystemTime) -> Option<Duration> {
        if self.last_error_kind != Some("deadline") {
            return None;
        }
        let since = self.failing_since?;
        Some(now.duration_since(since).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
