//! The wrapped job's families (`gpulse wrap`): runs per outcome, restarts, exit code,
//! duration histogram, readiness and recovery (totals restored from the state file).

use super::{
    AsVal as _, Ctx, Family, Hist, Id, Kind, OtlpHistogram, Scope, Series, Val, dim, flag,
    unix_seconds,
};
use crate::model::{JOB_DURATION_BUCKETS, JobLog, JobOutcome, JobReady};

plain_family!(job, Scope::Job);

/// A series function over the job log, when wrapping (`$value: fn(&JobLog) -> Option<f64>`).
macro_rules! one {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&JobLog) -> Option<f64> = $value;
            if let Some(job) = &c.snap.job {
                s.node([], value(job));
            }
        }
        series
    }};
}

/// The readiness of the current run.
fn ready(job: &JobLog) -> Option<&JobReady> {
    job.ready.as_ref().filter(|_| job.running.is_some())
}

/// The OTel instrument whose callback records the run durations (see `OtlpHistogram::Recorded`).
pub const RUNS_OTEL: &str = "gpulse.job.runs";

pub const FAMILIES: &[Family] = &[
    Family {
        dims: &[dim("outcome", "gpulse.job.outcome")],
        ..job(
            "gpulse_job_runs",
            RUNS_OTEL,
            "{run}",
            "Runs of the wrapped command that ended, by outcome (success, failure, signal, oom, stopped, unknown); across restarts when agent.state_dir is set.",
            Kind::Counter,
            |c, s| {
                if let Some(job) = &c.snap.job {
                    for o in JobOutcome::ALL {
                        s.node([o.val()], Some(job.totals.outcome(o) as f64));
                    }
                }
            },
        )
    },
    job(
        "gpulse_job_restarts",
        "gpulse.job.restarts",
        "{restart}",
        "Runs of the wrapped command started after an earlier one (container restarts), from agent.state_dir.",
        Kind::Counter,
        one!(|j| Some(j.totals.restarts() as f64)),
    ),
    Family {
        dims: &[dim("program", "gpulse.job.program")],
        ..job(
            "gpulse_job_running",
            "gpulse.job.running",
            "1",
            "1 while the wrapped command runs.",
            Kind::Gauge,
            |c, s| {
                if let Some(job) = &c.snap.job {
                    let program = job
                        .running
                        .as_ref()
                        .map(|r| r.program.as_str())
                        .or(job.last_end.as_ref().map(|e| e.program.as_str()))
                        .unwrap_or("");
                    s.node([Val::Str(program)], Some(flag(job.running.is_some())));
                }
            },
        )
    },
    job(
        "gpulse_job_last_exit_code",
        "gpulse.job.last_exit_code",
        "1",
        "Exit code of the last run that ended (128 + the signal number when killed by one).",
        Kind::Gauge,
        one!(|j| j.last_exit_code().map(f64::from)),
    ),
    job(
        "gpulse_job_start_time_seconds",
        "gpulse.job.start_time",
        "s",
        "Unix time the current run of the wrapped command started.",
        Kind::Gauge,
        one!(|j| j.running.as_ref().map(|r| unix_seconds(r.at))),
    ),
    job(
        "gpulse_job_ready_seconds",
        "gpulse.job.ready",
        "s",
        "Time from the current run's start until its readiness probe was first up.",
        Kind::Gauge,
        one!(|j| ready(j).map(|r| r.after_start.as_secs_f64())),
    ),
    job(
        "gpulse_job_recovery_seconds",
        "gpulse.job.recovery",
        "s",
        "Time from the previous run's end until the current run was ready (recovery after a restart).",
        Kind::Gauge,
        one!(|j| ready(j).and_then(|r| r.recovery).map(|d| d.as_secs_f64())),
    ),
    // On /metrics from the stored bucket counts (restored runs included); on OTLP a recorded
    // histogram of the runs that ended while this wrapper ran.
    job(
        "gpulse_job_duration_seconds",
        "gpulse.job.duration",
        "s",
        "Duration of the wrapped command's runs whose end was recorded.",
        Kind::Histogram(OtlpHistogram::Recorded {
            with: RUNS_OTEL,
            bounds: &JOB_DURATION_BUCKETS,
        }),
        |c, s| {
            if let Some(job) = &c.snap.job {
                s.histogram(Id::None, Hist::Job(&job.totals));
            }
        },
    ),
];
