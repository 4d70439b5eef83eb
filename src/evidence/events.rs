//! The event model: everything worth telling later (health transitions, Xids, probe outages,
//! job runs, score reports) as one [`Event`], encoded as one versioned wire format
//! (`gpulse.event/v1`, `crate::export::json::EventV1`) with its sequence number, its own
//! original time and the time it was recorded.
//!
//! Each constructor takes one item of the store's bounded logs (a `Transition`, an `XidEvent`,
//! a `ProbeOutage`, a `JobEvent`) and is pure; `recorder` decides which items are new.
//! Attribute names follow OpenTelemetry's style (`hw.id`, `gpulse.gpu.index`), the same on
//! `/v1/events` and on the OTLP log record.

use std::time::SystemTime;

use crate::export::json::{
    AttrV1, EVENT_SCHEMA_V1, EventV1, JobEventV1, json_body, rfc3339, text_body,
};
use crate::health::{Clear, Policy, Severity, State, Transition};
use crate::model::{
    EventKind, EventSeverity, JobEvent, JobOutcome, ProbeOutage, ProbeStatus, XidEvent,
};

/// What an event says beyond its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A sentence for people.
    Text(String),
    /// A JSON document kept byte for byte (a signed score report).
    Json(String),
}

/// One event before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened, by its source's clock.
    pub time: SystemTime,
    pub kind: EventKind,
    pub severity: EventSeverity,
    pub attributes: Vec<(&'static str, AttrV1)>,
    pub body: Body,
}

fn str(s: impl Into<String>) -> AttrV1 {
    AttrV1::Str(s.into())
}

fn int(n: impl Into<i64>) -> AttrV1 {
    AttrV1::Int(n.into())
}

/// A count as an attribute (saturating: a u64 past i64::MAX is no real count).
fn count(n: u64) -> AttrV1 {
    AttrV1::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn state_severity(state: State) -> EventSeverity {
    match state {
        State::Healthy | State::Unknown => EventSeverity::Info,
        State::Degraded => EventSeverity::Warn,
        State::Unhealthy => EventSeverity::Error,
    }
}

impl Event {
    /// A change of a GPU's or the node's health state.
    pub fn health(t: &Transition) -> Self {
        let mut attributes = vec![(
            "gpulse.health.scope",
            str(if t.gpu.is_some() { "gpu" } else { "node" }),
        )];
        if let Some(gpu) = t.gpu {
            attributes.push(("gpulse.gpu.index", int(gpu)));
        }
        if !t.uuid.is_empty() {
            attributes.push(("hw.id", str(&t.uuid)));
        }
        attributes.push(("gpulse.health.from", str(t.from.as_str())));
        attributes.push(("gpulse.health.to", str(t.to.as_str())));
        attributes.push(("gpulse.health.reasons", AttrV1::List(t.reasons.clone())));
        let who = match t.gpu {
            Some(gpu) => format!("GPU {gpu} health"),
            None => "Node health".to_owned(),
        };
        let why = if t.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.reasons.join(", "))
        };
        Self {
            time: t.at,
            kind: EventKind::HealthTransition,
            severity: state_severity(t.to),
            attributes,
            body: Body::Text(format!("{who} changed from {} to {}{why}.", t.from, t.to)),
        }
    }

    /// An operator's clear of sticky health reasons.
    pub fn health_cleared(c: &Clear) -> Self {
        let mut attributes = vec![(
            "gpulse.health.scope",
            str(if c.gpu.is_some() { "gpu" } else { "node" }),
        )];
        let what = match &c.gpu {
            Some((index, uuid)) => {
                attributes.push(("gpulse.gpu.index", int(*index)));
                attributes.push(("hw.id", str(uuid)));
                format!("GPU {index}")
            }
            None => "every GPU and the node".to_owned(),
        };
        attributes.push(("gpulse.health.cleared_by", str(&c.by)));
        Self {
            time: c.at,
            kind: EventKind::HealthCleared,
            severity: EventSeverity::Warn,
            attributes,
            body: Body::Text(format!(
                "An operator ({}) cleared the health reasons of {what}.",
                c.by
            )),
        }
    }

    /// An Xid occurrence, with what the health policy makes of it.
    pub fn xid(e: &XidEvent, policy: &Policy) -> Self {
        let (severity, action, description) = policy.xid(e.xid);
        let mut attributes = Vec::new();
        if let Some(gpu) = e.gpu_index {
            attributes.push(("gpulse.gpu.index", int(gpu)));
        }
        if !e.uuid.is_empty() {
            attributes.push(("hw.id", str(&e.uuid)));
        }
        if !e.pci_bus_id.is_empty() {
            attributes.push(("gpulse.gpu.pci_bus_id", str(&e.pci_bus_id)));
        }
        attributes.push(("gpulse.gpu.xid", count(e.xid)));
        attributes.push((
            "gpulse.xid.sources",
            AttrV1::List(e.sources.iter().map(|s| s.as_str().to_owned()).collect()),
        ));
        let (event_severity, policy_severity) = match severity {
            Severity::Ignore => (EventSeverity::Info, "ignore"),
            Severity::Degraded => (EventSeverity::Warn, "degraded"),
            Severity::Unhealthy => (EventSeverity::Error, "unhealthy"),
        };
        attributes.push(("gpulse.xid.severity", str(policy_severity)));
        attributes.push(("gpulse.xid.action", str(action.as_str())));
        attributes.push(("gpulse.xid.description", str(description)));
        let gpu = match e.gpu_index {
            Some(gpu) => format!("GPU {gpu}"),
            None if !e.pci_bus_id.is_empty() => format!("the GPU at {}", e.pci_bus_id),
            None => "an unknown GPU".to_owned(),
        };
        let detail = if e.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", e.detail)
        };
        Self {
            time: e.at,
            kind: EventKind::Xid,
            severity: event_severity,
            attributes,
            body: Body::Text(format!("Xid {} on {gpu} ({description}){detail}", e.xid)),
        }
    }

    fn probe_attributes(p: &ProbeStatus, o: &ProbeOutage) -> Vec<(&'static str, AttrV1)> {
        vec![
            ("gpulse.probe.name", str(&p.name)),
            ("gpulse.probe.kind", str(p.kind)),
            ("gpulse.probe.cause", str(o.cause.as_str())),
        ]
    }

    /// A probe's target went down.
    pub fn outage_started(p: &ProbeStatus, o: &ProbeOutage) -> Self {
        Self {
            time: o.start,
            kind: EventKind::ProbeOutageStarted,
            severity: EventSeverity::Warn,
            attributes: Self::probe_attributes(p, o),
            body: Body::Text(format!("Probe {} is down ({}).", p.name, o.cause.as_str())),
        }
    }

    /// A probe's target is back; `None` while the outage goes on.
    pub fn outage_ended(p: &ProbeStatus, o: &ProbeOutage) -> Option<Self> {
        let end = o.end?;
        let seconds = end
            .duration_since(o.start)
            .unwrap_or_default()
            .as_secs_f64();
        let mut attributes = Self::probe_attributes(p, o);
        attributes.push(("gpulse.probe.outage_start", str(rfc3339(o.start))));
        attributes.push(("gpulse.probe.recovery_seconds", AttrV1::Double(seconds)));
        Some(Self {
            time: end,
            kind: EventKind::ProbeOutageEnded,
            severity: EventSeverity::Info,
            attributes,
            body: Body::Text(format!(
                "Probe {} is back after {seconds:.1} s ({}).",
                p.name,
                o.cause.as_str()
            )),
        })
    }

    /// A job event, with the fields `jobs.jsonl` keeps as attributes.
    pub fn job(e: &JobEvent) -> Self {
        let mut a: Vec<(&'static str, AttrV1)> = Vec::new();
        let (kind, severity, body) = match JobEventV1::from(e) {
            JobEventV1::JobStarted {
                run, program, pid, ..
            } => {
                a.push(("gpulse.job.run", count(run)));
                a.push(("gpulse.job.program", str(&program)));
                a.push(("gpulse.job.pid", int(pid)));
                let body = format!("Run {run} of {program} started (pid {pid}).");
                (EventKind::JobStarted, EventSeverity::Info, body)
            }
            JobEventV1::JobReady {
                run,
                ready_seconds,
                recovery_seconds,
                ..
            } => {
                a.push(("gpulse.job.run", count(run)));
                a.push(("gpulse.job.ready_seconds", AttrV1::Double(ready_seconds)));
                if let Some(r) = recovery_seconds {
                    a.push(("gpulse.job.recovery_seconds", AttrV1::Double(r)));
                }
                let body = format!("Run {run} is ready after {ready_seconds:.1} s.");
                (EventKind::JobReady, EventSeverity::Info, body)
            }
            JobEventV1::JobFinished {
                run,
                program,
                pid,
                started_at,
                outcome,
                exit_code,
                signal,
                duration_seconds,
                oom_kills,
                stop_signal,
                killed_after_grace,
                ..
            } => {
                a.push(("gpulse.job.run", count(run)));
                a.push(("gpulse.job.program", str(&program)));
                a.push(("gpulse.job.pid", int(pid)));
                a.push(("gpulse.job.started_at", str(started_at)));
                a.push(("gpulse.job.outcome", str(&outcome)));
                let optional = [
                    ("gpulse.job.exit_code", exit_code.map(int)),
                    ("gpulse.job.signal", signal.map(int)),
                    (
                        "gpulse.job.duration_seconds",
                        duration_seconds.map(AttrV1::Double),
                    ),
                    ("gpulse.job.oom_kills", oom_kills.map(count)),
                    ("gpulse.job.stop_signal", stop_signal.map(int)),
                ];
                a.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
                a.push((
                    "gpulse.job.killed_after_grace",
                    AttrV1::Bool(killed_after_grace),
                ));
                let severity = match JobOutcome::parse(&outcome) {
                    Some(JobOutcome::Success | JobOutcome::Stopped) => EventSeverity::Info,
                    Some(JobOutcome::Oom) => EventSeverity::Error,
                    _ => EventSeverity::Warn,
                };
                let exit = exit_code.map_or(String::new(), |c| format!(", exit code {c}"));
                let body = format!("Run {run} of {program} ended: {outcome}{exit}.");
                (EventKind::JobFinished, severity, body)
            }
        };
        Self {
            time: e.at(),
            kind,
            severity,
            attributes: a,
            body: Body::Text(body),
        }
    }

    /// A score report whose body is `report` (JSON, kept byte for byte); an error when it is
    /// not JSON.
    pub fn score_report(
        time: SystemTime,
        report: String,
        attributes: Vec<(&'static str, AttrV1)>,
    ) -> Result<Self, String> {
        // Checked here, so the append does not fail later on what the caller can fix.
        let body = json_body(report)?;
        Ok(Self {
            time,
            kind: EventKind::ScoreReport,
            severity: EventSeverity::Info,
            attributes,
            body: Body::Json(body.get().to_owned()),
        })
    }

    /// The wire form with its sequence number, the time it was recorded and the node.
    pub fn to_v1(&self, seq: u64, observed: SystemTime, node: &str) -> Result<EventV1, String> {
        let body = match &self.body {
            Body::Text(text) => text_body(text)?,
            Body::Json(json) => json_body(json.clone())?,
        };
        Ok(EventV1 {
            schema: EVENT_SCHEMA_V1.to_owned(),
            seq,
            time: rfc3339(self.time),
            observed_time: rfc3339(observed),
            kind: self.kind.as_str().to_owned(),
            severity: self.severity.as_str().to_owned(),
            node: node.to_owned(),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            body,
        })
    }

    /// The stored bytes of [`Event::to_v1`].
    pub fn encode(&self, seq: u64, observed: SystemTime, node: &str) -> Result<Vec<u8>, String> {
        self.to_v1(seq, observed, node)?.encode()
    }
}

#[cfg(test)]
mod tests;
