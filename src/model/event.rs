//! The event log's vocabulary: the kinds of events, their severities, and where the log and
//! its OTLP outbox stand (for the self-metrics and `/v1/events`).

use std::time::SystemTime;

/// What an event records. The spelling is the event's `kind` on every wire (`/v1/events`,
/// OTLP `gpulse.event.kind`); kinds are added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A GPU's or the node's health state changed.
    HealthTransition,
    /// An Xid occurrence (after de-duplication across sources).
    Xid,
    /// A probe's target went down.
    ProbeOutageStarted,
    /// A probe's target is back (with the outage's length).
    ProbeOutageEnded,
    /// The wrapped job started a run.
    JobStarted,
    /// The wrapped job's readiness probe was first up in a run.
    JobReady,
    /// A run of the wrapped job ended.
    JobFinished,
    /// A signed score report (its body is the report's JSON, verbatim).
    ScoreReport,
    /// An operator cleared sticky health reasons (`gpulse health clear`).
    HealthCleared,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: [Self; 9] = [
        Self::HealthTransition,
        Self::Xid,
        Self::ProbeOutageStarted,
        Self::ProbeOutageEnded,
        Self::JobStarted,
        Self::JobReady,
        Self::JobFinished,
        Self::ScoreReport,
        Self::HealthCleared,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HealthTransition => "health_transition",
            Self::Xid => "xid",
            Self::ProbeOutageStarted => "probe_outage_started",
            Self::ProbeOutageEnded => "probe_outage_ended",
            Self::JobStarted => "job_started",
            Self::JobReady => "job_ready",
            Self::JobFinished => "job_finished",
            Self::ScoreReport => "score_report",
            Self::HealthCleared => "health_cleared",
        }
    }

    /// The OpenTelemetry log record's `event_name`.
    pub const fn event_name(self) -> &'static str {
        match self {
            Self::HealthTransition => "gpulse.health_transition",
            Self::Xid => "gpulse.xid",
            Self::ProbeOutageStarted => "gpulse.probe_outage_started",
            Self::ProbeOutageEnded => "gpulse.probe_outage_ended",
            Self::JobStarted => "gpulse.job_started",
            Self::JobReady => "gpulse.job_ready",
            Self::JobFinished => "gpulse.job_finished",
            Self::ScoreReport => "gpulse.score_report",
            Self::HealthCleared => "gpulse.health_cleared",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// How much an event matters, mapped onto OpenTelemetry's severity numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventSeverity {
    Info,
    Warn,
    Error,
}

impl EventSeverity {
    pub const ALL: [Self; 3] = [Self::Info, Self::Warn, Self::Error];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// OpenTelemetry's `severity_text`.
    pub const fn otel_text(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where the event log and its outbox stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventLogStatus {
    /// Kept in the state store (`agent.state_dir`), else in memory only (lost on restart).
    pub persistent: bool,
    /// The oldest and newest sequence numbers held; both 0 while the log is empty.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Events held and their encoded size.
    pub events: u64,
    pub bytes: u64,
    /// Events appended since the agent started.
    pub recorded_total: u64,
    /// Events removed at the log's bound before the OTLP exporter acknowledged them, since
    /// the agent started (only counted while the outbox is on).
    pub dropped_total: u64,
    /// Appends or acknowledgements that could not be written (the events stay at their
    /// source and are retried; an acknowledgement is kept in memory).
    pub write_failures: u64,
    /// The OTLP log export is on: the log is its outbox.
    pub outbox: bool,
    /// Every event up to this sequence number was acknowledged by the collector.
    pub acked_seq: u64,
    /// When the collector last acknowledged a batch.
    pub last_export_success: Option<SystemTime>,
}

impl EventLogStatus {
    /// Events held that the collector has not acknowledged (0 while the outbox is off).
    pub fn pending(&self) -> u64 {
        if !self.outbox || self.events == 0 {
            return 0;
        }
        let first_unacked = self.acked_seq.saturating_add(1).max(self.first_seq);
        (self.last_seq + 1).saturating_sub(first_unacked)
    }
}
