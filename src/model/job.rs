//! The wrapped job (`gpulse wrap`): events, outcomes, totals and the pure `JobLog::apply`.

use std::time::{Duration, SystemTime};

use super::*;

/// Upper bounds (seconds) of `gpulse_job_duration_seconds`: a crash loop (seconds), a batch
/// job (minutes to hours), a server (days, a week). Runs beyond the last go to `+Inf`.
pub const JOB_DURATION_BUCKETS: [f64; 9] = [
    1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0, 604800.0,
];

/// How a run of the wrapped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Exit code 0, no stop signal forwarded.
    Success,
    /// A non-zero exit code.
    Failure,
    /// Killed by a signal gpulse did not forward (and not the OOM killer).
    Signal,
    /// Did not succeed, and the container's cgroup counted an OOM kill during the run.
    Oom,
    /// Ended (any way but OOM) after gpulse forwarded SIGTERM or SIGINT: `docker stop`, an
    /// eviction, a redeploy.
    Stopped,
    /// The end was never recorded: the wrapper itself died with the child (a cgroup-wide OOM
    /// kill, SIGKILL of the container, a node failure). Found by the next wrapper.
    Unknown,
}

/// The same spelling on both exporters.
impl LabelValue for JobOutcome {
    fn prom(self) -> &'static str {
        self.as_str()
    }

    fn otel(self) -> &'static str {
        self.as_str()
    }
}

impl JobOutcome {
    pub const ALL: [Self; 6] = [
        Self::Success,
        Self::Failure,
        Self::Signal,
        Self::Oom,
        Self::Stopped,
        Self::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Signal => "signal",
            Self::Oom => "oom",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The outcome of a run that ended with `exit`: OOM first (a run that did not succeed
    /// while the cgroup counted an OOM kill), then stopped (gpulse forwarded a stop signal),
    /// then the exit itself.
    pub fn classify(exit: JobExit, stop_forwarded: bool, oom_kills: Option<u64>) -> Self {
        let succeeded = exit == JobExit::Code(0);
        if !succeeded && oom_kills.is_some_and(|n| n > 0) {
            return Self::Oom;
        }
        if stop_forwarded {
            return Self::Stopped;
        }
        match exit {
            JobExit::Code(0) => Self::Success,
            JobExit::Code(_) => Self::Failure,
            JobExit::Signal(_) => Self::Signal,
        }
    }
}

/// How the child process ended, as `waitpid` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobExit {
    Code(i32),
    Signal(i32),
}

impl JobExit {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

/// The child started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStart {
    /// Run number, counted from 1 across restarts when `agent.state_dir` is set.
    pub run: u64,
    pub at: SystemTime,
    /// The basename of the command (`vllm`, `python3`); arguments are never recorded, they
    /// may hold secrets (`--api-key`).
    pub program: String,
    pub pid: u32,
}

/// The child's readiness probe answered `up` for the first time in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReady {
    pub run: u64,
    pub at: SystemTime,
    /// From the child's start to ready.
    pub after_start: Duration,
    /// From the previous run's end to ready: the recovery time after a restart.
    pub recovery: Option<Duration>,
}

/// The child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub run: u64,
    pub at: SystemTime,
    pub program: String,
    pub pid: u32,
    pub started_at: SystemTime,
    pub outcome: JobOutcome,
    /// `None` for [`JobOutcome::Unknown`].
    pub exit: Option<JobExit>,
    /// `None` for [`JobOutcome::Unknown`].
    pub duration: Option<Duration>,
    /// OOM kills the container's cgroup counted during the run; `None` when unreadable.
    pub oom_kills: Option<u64>,
    /// The first stop signal (SIGTERM, SIGINT) gpulse forwarded, if any.
    pub stop_signal: Option<i32>,
    /// gpulse sent SIGKILL because the child outlived `agent.shutdown_grace_period` after a
    /// forwarded stop signal.
    pub killed_after_grace: bool,
}

/// One entry of the job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    Started(JobStart),
    Ready(JobReady),
    Finished(JobEnd),
}

impl JobEvent {
    pub fn run(&self) -> u64 {
        match self {
            Self::Started(e) => e.run,
            Self::Ready(e) => e.run,
            Self::Finished(e) => e.run,
        }
    }

    pub fn at(&self) -> SystemTime {
        match self {
            Self::Started(e) => e.at,
            Self::Ready(e) => e.at,
            Self::Finished(e) => e.at,
        }
    }
}

/// Counts over every run recorded (restored from the state file across restarts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobTotals {
    /// Runs started.
    pub starts: u64,
    /// Runs ended, per [`JobOutcome`] (in [`JobOutcome::ALL`] order).
    pub outcomes: [u64; 6],
    /// Runs whose duration is known, per bucket of [`JOB_DURATION_BUCKETS`] (not cumulative;
    /// the last is `+Inf`).
    pub duration_buckets: [u64; JOB_DURATION_BUCKETS.len() + 1],
    pub duration_sum_seconds: f64,
}

impl JobTotals {
    pub fn outcome(&self, outcome: JobOutcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// Restarts: runs started after an earlier one.
    pub fn restarts(&self) -> u64 {
        self.starts.saturating_sub(1)
    }

    /// Runs whose duration is known (the histogram's count).
    pub fn duration_count(&self) -> u64 {
        self.duration_buckets.iter().sum()
    }

    fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Started(_) => self.starts += 1,
            JobEvent::Ready(_) => {}
            JobEvent::Finished(end) => {
                self.outcomes[end.outcome.index()] += 1;
                if let Some(d) = end.duration {
                    let secs = d.as_secs_f64();
                    let bucket = JOB_DURATION_BUCKETS
                        .iter()
                        .position(|le| secs <= *le)
                        .unwrap_or(JOB_DURATION_BUCKETS.len());
                    self.duration_buckets[bucket] += 1;
                    self.duration_sum_seconds += secs;
                }
            }
        }
    }
}

/// The wrapped job as the store keeps it: totals, the current run, the last end, and the
/// most recent events (bounded).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobLog {
    pub totals: JobTotals,
    /// The run in progress.
    pub running: Option<JobStart>,
    /// Readiness of the run in progress, once its probe was up.
    pub ready: Option<JobReady>,
    /// The last run that ended (possibly before a restart).
    pub last_end: Option<JobEnd>,
    /// Oldest first.
    pub recent: Vec<JobEvent>,
    /// Runs up to this number were read back from the state file (started by earlier
    /// wrappers); 0 when nothing was.
    pub restored_through: u64,
}

impl JobLog {
    /// Takes in one event, keeping at most `max_events` of them.
    pub fn apply(&mut self, event: JobEvent, max_events: usize) {
        self.totals.apply(&event);
        match &event {
            JobEvent::Started(start) => {
                self.running = Some(start.clone());
                self.ready = None;
            }
            JobEvent::Ready(ready) => {
                if self.running.as_ref().is_some_and(|r| r.run == ready.run) {
                    self.ready = Some(ready.clone());
                }
            }
            JobEvent::Finished(end) => {
                if self.running.as_ref().is_some_and(|r| r.run == end.run) {
                    self.running = None;
                }
                self.last_end = Some(end.clone());
            }
        }
        if max_events == 0 {
            return;
        }
        while self.recent.len() >= max_events {
            self.recent.remove(0);
        }
        self.recent.push(event);
    }

    /// The exit code (shell convention) of the last run that ended with a known exit.
    pub fn last_exit_code(&self) -> Option<i32> {
        self.last_end
            .as_ref()
            .and_then(|e| e.exit)
            .map(JobExit::exit_code)
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn start(run: u64, secs: u64) -> JobEvent {
        JobEvent::Started(JobStart {
            run,
            at: at(secs),
            program: "vllm".to_owned(),
            pid: 7,
        })
    }

    fn end(run: u64, secs: u64, outcome: JobOutcome, exit: JobExit, took: u64) -> JobEvent {
        JobEvent::Finished(JobEnd {
            run,
            at: at(secs),
            program: "vllm".to_owned(),
            pid: 7,
            started_at: at(secs - took),
            outcome,
            exit: Some(exit),
            duration: Some(Duration::from_secs(took)),
            oom_kills: Some(0),
            stop_signal: None,
            killed_after_grace: false,
        })
    }

    #[test]
    fn outcomes_are_classified_oom_then_stopped_then_exit() {
        use JobExit::{Code, Signal as Killed};
        use JobOutcome::*;
        assert_eq!(JobOutcome::classify(Code(0), false, Some(0)), Success);
        assert_eq!(JobOutcome::classify(Code(3), false, None), Failure);
        assert_eq!(JobOutcome::classify(Killed(9), false, Some(0)), Signal);
        assert_eq!(JobOutcome::classify(Killed(9), false, None), Signal);
        assert_eq!(JobOutcome::classify(Killed(9), false, Some(1)), Oom);
        // A shell exiting 137 after its own child was OOM-killed.
        assert_eq!(JobOutcome::classify(Code(137), false, Some(2)), Oom);
        // A worker was OOM-killed but the job still succeeded.
        assert_eq!(JobOutcome::classify(Code(0), false, Some(1)), Success);
        assert_eq!(JobOutcome::classify(Code(0), true, Some(0)), Stopped);
        assert_eq!(JobOutcome::classify(Killed(9), true, Some(0)), Stopped);
        assert_eq!(JobOutcome::classify(Killed(9), true, Some(1)), Oom);
        assert_eq!(Killed(9).exit_code(), 137);
        assert_eq!(Code(3).exit_code(), 3);
        for o in JobOutcome::ALL {
            assert_eq!(JobOutcome::parse(o.as_str()), Some(o));
        }
    }

    #[test]
    fn the_log_counts_runs_restarts_and_durations_and_stays_bounded() {
        let mut log = JobLog::default();
        log.apply(start(1, 100), 3);
        assert_eq!(log.running.as_ref().map(|r| r.run), Some(1));
        log.apply(end(1, 105, JobOutcome::Failure, JobExit::Code(3), 5), 3);
        assert!(log.running.is_none());
        assert_eq!(log.last_exit_code(), Some(3));
        log.apply(start(2, 110), 3);
        log.apply(
            JobEvent::Ready(JobReady {
                run: 2,
                at: at(150),
                after_start: Duration::from_secs(40),
                recovery: Some(Duration::from_secs(45)),
            }),
            3,
        );
        assert_eq!(log.ready.as_ref().map(|r| r.run), Some(2));
        log.apply(
            end(2, 7310, JobOutcome::Signal, JobExit::Signal(9), 7200),
            3,
        );
        let t = &log.totals;
        assert_eq!(t.starts, 2);
        assert_eq!(t.restarts(), 1);
        assert_eq!(t.outcome(JobOutcome::Failure), 1);
        assert_eq!(t.outcome(JobOutcome::Signal), 1);
        assert_eq!(t.duration_count(), 2);
        assert_eq!(t.duration_buckets[1], 1, "5 s is in the le=10 bucket");
        assert_eq!(t.duration_buckets[6], 1, "2 h is in the le=14400 bucket");
        assert_eq!(t.duration_sum_seconds, 7205.0);
        assert_eq!(log.last_exit_code(), Some(137));
        assert_eq!(log.recent.len(), 3);
        assert_eq!(log.recent[0].run(), 2);
        // An unknown end has no duration and no exit code.
        log.apply(start(3, 8000), 3);
        log.apply(
            JobEvent::Finished(JobEnd {
                outcome: JobOutcome::Unknown,
                exit: None,
                duration: None,
                ..match end(3, 8001, JobOutcome::Unknown, JobExit::Code(0), 1) {
                    JobEvent::Finished(e) => e,
                    _ => unreachable!(),
                }
            }),
            3,
        );
        assert_eq!(log.totals.duration_count(), 2);
        assert_eq!(log.totals.outcome(JobOutcome::Unknown), 1);
        assert_eq!(log.last_exit_code(), None);
    }
}
