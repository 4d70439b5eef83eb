//! `gpulse.events/v2` (`GET /v1/events`): the wrapped job's summary and a page of the event
//! log (`gpulse.event/v1` events, numbered by `seq`). A [`JobEventV1`] is one line of the job
//! state file, so it deserializes too.
//!
//! v1 listed the job's own events in their own shape; v2 pages the unified log, where a job
//! event is one kind among others (its fields are attributes). The `job` summary is unchanged.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::*;
use crate::model::{
    EventLogStatus, JobEnd, JobEvent, JobExit, JobLog, JobOutcome, JobReady, JobStart, JobTotals,
};
use crate::store::Snapshot;

/// Schema id of [`EventsV2`].
pub const EVENTS_SCHEMA_V2: &str = "gpulse.events/v2";

/// `/v1/events`: the wrapped job's summary and a page of the event log.
#[derive(Debug, Serialize)]
pub struct EventsV2 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    pub mode: &'static str,
    /// Absent when gpulse supervises no job (not `gpulse wrap`).
    pub job: Option<JobSummaryV1>,
    /// Where the log stands.
    pub log: EventLogV2,
    /// The `since` asked for; absent for the newest page.
    pub since: Option<u64>,
    pub limit: usize,
    /// Pass as `since` for the next page: the last `seq` served (else `since`, else the
    /// newest `seq`).
    pub next_since: u64,
    /// More events follow this page.
    pub more: bool,
    /// Events after `since` left the log at its bound before this page.
    pub gap: bool,
    /// Oldest first, each a `gpulse.event/v1`.
    pub events: Vec<Box<RawValue>>,
}

/// The log's bounds and counters.
#[derive(Debug, Serialize)]
pub struct EventLogV2 {
    /// In the state store (survives restarts), else in memory.
    pub persistent: bool,
    /// Oldest and newest `seq` held (0 while empty).
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
    pub bytes: u64,
    /// Since the agent started.
    pub recorded_total: u64,
    pub dropped_total: u64,
    pub write_failures: u64,
    /// The OTLP log export; absent when it is off.
    pub outbox: Option<OutboxV2>,
}

/// The OTLP log export's progress through the log.
#[derive(Debug, Serialize)]
pub struct OutboxV2 {
    /// Every event up to this `seq` was acknowledged by the collector.
    pub acknowledged_seq: u64,
    /// Events held that are not acknowledged yet.
    pub pending: u64,
    pub last_success: Option<String>,
}

/// A page read from the log: `(seq, the stored event)`, oldest first.
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<(u64, Box<RawValue>)>,
    /// More events follow.
    pub more: bool,
}

impl From<&EventLogStatus> for EventLogV2 {
    fn from(s: &EventLogStatus) -> Self {
        Self {
            persistent: s.persistent,
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            events: s.events,
            bytes: s.bytes,
            recorded_total: s.recorded_total,
            dropped_total: s.dropped_total,
            write_failures: s.write_failures,
            outbox: s.outbox.then(|| OutboxV2 {
                acknowledged_seq: s.acked_seq,
                pending: s.pending(),
                last_success: s.last_export_success.map(rfc3339),
            }),
        }
    }
}

impl EventsV2 {
    /// The answer for a page read with `since` (`None`: the newest events) and `limit`.
    pub fn new(
        snap: &Snapshot,
        node: &str,
        since: Option<u64>,
        limit: usize,
        page: EventPage,
    ) -> Self {
        let status = snap.events.unwrap_or_default();
        let last_served = page.events.last().map(|(seq, _)| *seq);
        let first_served = page.events.first().map(|(seq, _)| *seq);
        let gap = match since {
            Some(since) => {
                let first = first_served.unwrap_or(status.first_seq);
                status.events > 0 && first > since.saturating_add(1)
            }
            None => false,
        };
        Self {
            schema: EVENTS_SCHEMA_V2,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            mode: snap.mode.mode.as_str(),
            job: snap.job.as_deref().map(JobSummaryV1::from),
            log: EventLogV2::from(&status),
            since,
            limit,
            next_since: last_served.or(since).unwrap_or(status.last_seq),
            more: page.more,
            gap,
            events: page.events.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

/// The wrapped job now: the run in progress (or the last one) and totals across restarts.
#[derive(Debug, Serialize)]
pub struct JobSummaryV1 {
    pub running: bool,
    /// The run in progress, else the last one; absent before the first.
    pub run: Option<u64>,
    pub program: Option<String>,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    /// When this run's readiness probe was first up, and how long after its start.
    pub ready_at: Option<String>,
    pub ready_seconds: Option<f64>,
    /// From the previous run's end to this run's ready (after a restart).
    pub recovery_seconds: Option<f64>,
    /// Runs started after an earlier one (across restarts with `agent.state_dir`).
    pub restarts_total: u64,
    pub runs_total: JobRunsV1,
    pub last_outcome: Option<&'static str>,
    /// Shell convention: the exit code, or 128 + the signal number.
    pub last_exit_code: Option<i32>,
}

/// Ended runs per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobRunsV1 {
    pub success: u64,
    pub failure: u64,
    pub signal: u64,
    pub oom: u64,
    pub stopped: u64,
    pub unknown: u64,
}

impl JobRunsV1 {
    pub fn from_totals(t: &JobTotals) -> Self {
        Self {
            success: t.outcome(JobOutcome::Success),
            failure: t.outcome(JobOutcome::Failure),
            signal: t.outcome(JobOutcome::Signal),
            oom: t.outcome(JobOutcome::Oom),
            stopped: t.outcome(JobOutcome::Stopped),
            unknown: t.outcome(JobOutcome::Unknown),
        }
    }

    /// The counts in [`JobOutcome::ALL`] order.
    pub fn to_array(self) -> [u64; 6] {
        [
            self.success,
            self.failure,
            self.signal,
            self.oom,
            self.stopped,
            self.unknown,
        ]
    }
}

/// One job event, as served by `/v1/events` and stored as a line of `jobs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEventV1 {
    JobStarted {
        at: String,
        run: u64,
        program: String,
        pid: u32,
    },
    JobReady {
        at: String,
        run: u64,
        ready_seconds: f64,
        recovery_seconds: Option<f64>,
    },
    JobFinished {
        at: String,
        run: u64,
        program: String,
        pid: u32,
        started_at: String,
        /// `success`, `failure`, `signal`, `oom`, `stopped`, `unknown`.
        outcome: String,
        /// Shell convention (128 + signal when killed); absent when `unknown`.
        exit_code: Option<i32>,
        /// The signal that killed the child, if one did.
        signal: Option<i32>,
        duration_seconds: Option<f64>,
        /// OOM kills the cgroup counted during the run; absent when unreadable.
        oom_kills: Option<u64>,
        /// The first SIGTERM (15) or SIGINT (2) gpulse forwarded.
        stop_signal: Option<i32>,
        killed_after_grace: bool,
    },
}

impl From<&JobEvent> for JobEventV1 {
    fn from(e: &JobEvent) -> Self {
        match e {
            JobEvent::Started(s) => Self::JobStarted {
                at: rfc3339(s.at),
                run: s.run,
                program: s.program.clone(),
                pid: s.pid,
            },
            JobEvent::Ready(r) => Self::JobReady {
                at: rfc3339(r.at),
                run: r.run,
                ready_seconds: r.after_start.as_secs_f64(),
                recovery_seconds: r.recovery.map(|d| d.as_secs_f64()),
            },
            JobEvent::Finished(f) => Self::JobFinished {
                at: rfc3339(f.at),
                run: f.run,
                program: f.program.clone(),
                pid: f.pid,
                started_at: rfc3339(f.started_at),
                outcome: f.outcome.as_str().to_owned(),
                exit_code: f.exit.map(JobExit::exit_code),
                signal: match f.exit {
                    Some(JobExit::Signal(s)) => Some(s),
                    _ => None,
                },
                duration_seconds: f.duration.map(|d| d.as_secs_f64()),
                oom_kills: f.oom_kills,
                stop_signal: f.stop_signal,
                killed_after_grace: f.killed_after_grace,
            },
        }
    }
}

impl JobEventV1 {
    /// Back to the model (reading `jobs.jsonl`); `None` when a field is out of range.
    pub fn to_model(&self) -> Option<JobEvent> {
        let time = |s: &str| humantime::parse_rfc3339(s).ok();
        let secs = |s: f64| Duration::try_from_secs_f64(s).ok();
        Some(match self {
            Self::JobStarted {
                at,
                run,
                program,
                pid,
            } => JobEvent::Started(JobStart {
                run: *run,
                at: time(at)?,
                program: program.clone(),
                pid: *pid,
            }),
            Self::JobReady {
                at,
                run,
                ready_seconds,
                recovery_seconds,
            } => JobEvent::Ready(JobReady {
                run: *run,
                at: time(at)?,
                after_start: secs(*ready_seconds)?,
                recovery: recovery_seconds.and_then(secs),
            }),
            Self::JobFinished {
                at,
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
            } => JobEvent::Finished(JobEnd {
                run: *run,
                at: time(at)?,
                program: program.clone(),
                pid: *pid,
                started_at: time(started_at)?,
                outcome: JobOutcome::parse(outcome)?,
                exit: match (signal, exit_code) {
                    (Some(s), _) => Some(JobExit::Signal(*s)),
                    (None, Some(c)) => Some(JobExit::Code(*c)),
                    (None, None) => None,
                },
                duration: duration_seconds.and_then(secs),
                oom_kills: *oom_kills,
                stop_signal: *stop_signal,
                killed_after_grace: *killed_after_grace,
            }),
        })
    }
}

impl From<&JobLog> for JobSummaryV1 {
    fn from(log: &JobLog) -> Self {
        let running = log.running.as_ref();
        let (run, program, pid, started_at) = match (running, &log.last_end) {
            (Some(r), _) => (Some(r.run), Some(&r.program), Some(r.pid), Some(r.at)),
            (None, Some(e)) => (
                Some(e.run),
                Some(&e.program),
                Some(e.pid),
                Some(e.started_at),
            ),
            (None, None) => (None, None, None, None),
        };
        let ready = log.ready.as_ref().filter(|_| running.is_some());
        Self {
            running: running.is_some(),
            run,
            program: program.cloned(),
            pid,
            started_at: started_at.map(rfc3339),
            ready_at: ready.map(|r| rfc3339(r.at)),
            ready_seconds: ready.map(|r| r.after_start.as_secs_f64()),
            recovery_seconds: ready.and_then(|r| r.recovery).map(|d| d.as_secs_f64()),
            restarts_total: log.totals.restarts(),
            runs_total: JobRunsV1::from_totals(&log.totals),
            last_outcome: log.last_end.as_ref().map(|e| e.outcome.as_str()),
            last_exit_code: log.last_exit_code(),
        }
    }
}
