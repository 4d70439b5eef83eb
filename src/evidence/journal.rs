//! The job state file, `jobs.jsonl` in `agent.state_dir`: job events that survive restarts.
//!
//! `gpulse wrap` does not restart its child; the container's restart policy starts a new
//! `gpulse wrap`, which reads this file back ([`restore`]) to number its run, count restarts
//! and outcomes, and measure recovery time. One JSON object per line (`gpulse.job-state/v1`):
//! the event (a [`JobEventV1`], as `/v1/events` serves it) and the totals after it, so the
//! counts survive the rotation that drops old lines.
//!
//! Writes happen on a thread of their own ([`StateWriter`]), so a hung disk never delays the
//! child's supervision. A line is appended with one write (after a newline if an earlier
//! write was cut short); past `wrap.state_max_bytes` the newest lines that fit in half of it
//! are written to `jobs.jsonl.tmp`, synced, and renamed over the file, so the file is never
//! half-rewritten.
//!
//! The file is read as bytes, split on `\n`, and each line decoded on its own: a line that is
//! not UTF-8, not JSON, not this schema, or whose totals are impossible (a write cut short by
//! a crash or a full disk, the NUL-filled tail some filesystems leave after a crash) is
//! skipped, and only that line is lost. Rotation copies only lines that parse, so the rotated
//! file is valid whatever the old one held. Reads take at most the newest `state_max_bytes`
//! of the file, so a file grown past its bound cannot cost more memory than the bound.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::export::json::{JobEventV1, JobRunsV1};
use crate::model::{JOB_DURATION_BUCKETS, JobEnd, JobEvent, JobLog, JobOutcome, JobTotals};

/// File name inside `agent.state_dir`.
pub const FILE_NAME: &str = "jobs.jsonl";

/// Schema id of every line.
pub const STATE_SCHEMA_V1: &str = "gpulse.job-state/v1";

/// Largest count a line may carry. Far above any real restart count, and far below
/// `u64::MAX`, so a hostile or corrupted line cannot make a later `+ 1` or sum overflow.
const MAX_COUNT: u64 = 1 << 48;

#[derive(Debug, Serialize, Deserialize)]
struct LineV1 {
    schema: String,
    event: JobEventV1,
    totals: TotalsV1,
}

#[derive(Debug, Serialize, Deserialize)]
struct TotalsV1 {
    starts: u64,
    runs: JobRunsV1,
    duration_sum_seconds: f64,
    /// Per bucket of `JOB_DURATION_BUCKETS`, then `+Inf`; not cumulative.
    duration_buckets: Vec<u64>,
}

impl From<&JobTotals> for TotalsV1 {
    fn from(t: &JobTotals) -> Self {
        Self {
            starts: t.starts,
            runs: JobRunsV1::from_totals(t),
            duration_sum_seconds: t.duration_sum_seconds,
            duration_buckets: t.duration_buckets.to_vec(),
        }
    }
}

impl TotalsV1 {
    /// Whether these totals could have been written by a wrapper: every count below
    /// [`MAX_COUNT`], no more ends than starts, no more timed runs than ends, a finite
    /// non-negative duration sum. Anything else is corruption that happens to parse.
    fn plausible(&self) -> bool {
        let ends = self
            .runs
            .to_array()
            .iter()
            .try_fold(0u64, |sum, n| sum.checked_add(*n));
        let timed = self
            .duration_buckets
            .iter()
            .try_fold(0u64, |sum, n| sum.checked_add(*n));
        match (ends, timed) {
            (Some(ends), Some(timed)) => {
                self.starts <= MAX_COUNT
                    && ends <= self.starts
                    && timed <= ends
                    && self.duration_sum_seconds.is_finite()
                    && self.duration_sum_seconds >= 0.0
            }
            _ => false,
        }
    }

    fn to_model(&self) -> JobTotals {
        let mut totals = JobTotals {
            starts: self.starts,
            outcomes: self.runs.to_array(),
            ..JobTotals::default()
        };
        // A file written with other buckets keeps its counts but restarts the histogram.
        if self.duration_buckets.len() == JOB_DURATION_BUCKETS.len() + 1 {
            totals
                .duration_buckets
                .copy_from_slice(&self.duration_buckets);
            totals.duration_sum_seconds = self.duration_sum_seconds;
        }
        totals
    }
}

/// One line of the file: the event and the totals after it.
pub fn encode_line(event: &JobEvent, totals: &JobTotals) -> Result<String, String> {
    serde_json::to_string(&LineV1 {
        schema: STATE_SCHEMA_V1.to_owned(),
        event: JobEventV1::from(event),
        totals: TotalsV1::from(totals),
    })
    .map_err(|e| e.to_string())
}

/// What a new wrapper learns from the file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Restored {
    /// Totals of the last line, the last `max_events` events, the last end; `running` is the
    /// run whose end was never recorded, if any.
    pub log: JobLog,
    /// The end to record for that run (outcome `unknown`), so it is counted once.
    pub unfinished: Option<JobEnd>,
    /// Lines that did not parse.
    pub skipped: usize,
}

/// One line of the file (without its newline), if it is a valid state line: UTF-8, JSON of
/// this schema, an event the model takes, and plausible totals. `None` for anything else.
fn parse_line(line: &[u8]) -> Option<(JobEvent, TotalsV1)> {
    let text = std::str::from_utf8(line).ok()?;
    let parsed = serde_json::from_str::<LineV1>(text).ok()?;
    if parsed.schema != STATE_SCHEMA_V1 || !parsed.totals.plausible() {
        return None;
    }
    Some((parsed.event.to_model()?, parsed.totals))
}

/// The lines of `bytes`, split on `\n`, without the blank ones. A zeroed tail is a line (of
/// NULs) like any other: it does not parse, so it is counted as skipped, which tells the
/// operator that writes were lost.
fn lines(bytes: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// Reads the file's bytes back (pure): every line is decoded on its own, and one that does
/// not parse is counted in `skipped` and costs nothing else.
pub fn restore(bytes: &[u8], max_events: usize) -> Restored {
    let mut log = JobLog::default();
    let mut totals = None;
    let mut skipped = 0;
    for line in lines(bytes) {
        match parse_line(line) {
            Some((event, t)) => {
                log.apply(event, max_events);
                totals = Some(t);
            }
            None => skipped += 1,
        }
    }
    log.totals = totals.map(|t| t.to_model()).unwrap_or_default();
    log.restored_through = log.totals.starts;
    let unfinished = log.running.as_ref().map(|start| {
        // The last thing known of the run: its readiness, else its start.
        let last_seen = log
            .recent
            .iter()
            .filter(|e| e.run() == start.run)
            .map(JobEvent::at)
            .max()
            .unwrap_or(start.at);
        JobEnd {
            run: start.run,
            at: last_seen,
            program: start.program.clone(),
            pid: start.pid,
            started_at: start.at,
            outcome: JobOutcome::Unknown,
            exit: None,
            duration: None,
            oom_kills: None,
            stop_signal: None,
            killed_after_grace: false,
        }
    });
    Restored {
        log,
        unfinished,
        skipped,
    }
}

/// The file's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the newest `limit` bytes of the file; a missing file is empty. When the file is
/// longer, the first (partial) line of what was read is dropped, so every line returned is
/// whole. Never fails on the content: decoding is [`restore`]'s job, line by line.
pub fn read(dir: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut file = match std::fs::File::open(path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(limit);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    // `take`: the file may grow while it is read; what was asked for is the bound.
    file.take(limit).read_to_end(&mut bytes)?;
    if start > 0 {
        // Began mid-file: the bytes up to the first newline are the end of a line whose
        // start was not read.
        let first_line = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first_line);
    }
    Ok(bytes)
}

/// Appends `line` (without its newline), rotating first when the file would pass `max_bytes`.
pub fn append(dir: &Path, line: &str, max_bytes: u64) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file_path = path(dir);
    let len = std::fs::metadata(&file_path).map_or(0, |m| m.len());
    if len + line.len() as u64 + 1 > max_bytes {
        return rotate(dir, line, max_bytes);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&file_path)?;
    let mut buf = String::with_capacity(line.len() + 2);
    if len > 0 {
        let mut last = [0u8; 1];
        // A line cut short by a crash must not swallow this one.
        if file.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
            buf.push('\n');
        }
    }
    buf.push_str(line);
    buf.push('\n');
    (&file).write_all(buf.as_bytes())
}

/// Rewrites the file with its newest valid lines that fit in half of `max_bytes`, plus
/// `line`. Lines that do not parse are left behind, so the new file is valid whatever the
/// old one held (bad bytes, a torn line, a zeroed tail).
fn rotate(dir: &Path, line: &str, max_bytes: u64) -> io::Result<()> {
    let bytes = read(dir, max_bytes)?;
    let budget = usize::try_from(max_bytes / 2).unwrap_or(usize::MAX);
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut size = line.len() + 1;
    for old in lines(&bytes).rev().filter(|l| parse_line(l).is_some()) {
        if size + old.len() + 1 > budget {
            break;
        }
        size += old.len() + 1;
        kept.push(old);
    }
    let mut out = Vec::with_capacity(size);
    for old in kept.iter().rev() {
        out.extend_from_slice(old);
        out.push(b'\n');
    }
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir))
}

/// Appends lines on a thread of its own; [`StateWriter::finish`] waits (bounded) for the rest.
#[derive(Debug)]
pub struct StateWriter {
    lines: Option<mpsc::Sender<String>>,
    done: mpsc::Receiver<()>,
}

impl StateWriter {
    /// Starts the writer thread for `dir`.
    pub fn start(dir: PathBuf, max_bytes: u64) -> io::Result<Self> {
        let (lines, rx) = mpsc::channel::<String>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("gpulse-job-state".to_owned())
            .spawn(move || {
                let mut failing = false;
                for line in rx {
                    match append(&dir, &line, max_bytes) {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(dir = %dir.display(), "Writing the job state file works again.");
                        }
                        Ok(()) => {}
                        Err(error) if !failing => {
                            failing = true;
                            tracing::warn!(dir = %dir.display(), error = %error, "Cannot write the job state file; job events are kept in memory only.");
                        }
                        Err(_) => {}
                    }
                }
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            lines: Some(lines),
            done,
        })
    }

    /// Queues one event with the totals after it.
    pub fn write(&self, event: &JobEvent, totals: &JobTotals) {
        match encode_line(event, totals) {
            Ok(line) => {
                if let Some(lines) = &self.lines {
                    let _ = lines.send(line);
                }
            }
            Err(error) => tracing::warn!(error = %error, "Cannot encode a job event."),
        }
    }

    /// Stops taking lines and waits up to `timeout` for the queued ones to be written;
    /// whether they were.
    pub fn finish(mut self, timeout: Duration) -> bool {
        self.lines = None;
        self.done.recv_timeout(timeout).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobExit, JobReady, JobStart};
    use std::time::SystemTime;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn started(run: u64, secs: u64) -> JobEvent {
        JobEvent::Started(JobStart {
            run,
            at: at(secs),
            program: "vllm".to_owned(),
            pid: 40 + run as u32,
        })
    }

    fn finished(run: u64, secs: u64, took: u64, exit: JobExit) -> JobEvent {
        JobEvent::Finished(JobEnd {
            run,
            at: at(secs),
            program: "vllm".to_owned(),
            pid: 40 + run as u32,
            started_at: at(secs - took),
            outcome: JobOutcome::classify(exit, false, Some(0)),
            exit: Some(exit),
            duration: Some(Duration::from_secs(took)),
            oom_kills: Some(0),
            stop_signal: None,
            killed_after_grace: false,
        })
    }

    /// The lines a wrapper would write for `events`.
    fn lines(events: &[JobEvent]) -> String {
        let mut log = JobLog::default();
        let mut out = String::new();
        for e in events {
            log.apply(e.clone(), 100);
            out.push_str(&encode_line(e, &log.totals).unwrap());
            out.push('\n');
        }
        out
    }

    #[test]
    fn events_and_totals_round_trip() {
        let events = [
            started(1, 1_000),
            finished(1, 1_005, 5, JobExit::Code(3)),
            started(2, 1_010),
            JobEvent::Ready(JobReady {
                run: 2,
                at: at(1_040),
                after_start: Duration::from_millis(30_500),
                recovery: Some(Duration::from_secs(35)),
            }),
            finished(2, 1_100, 90, JobExit::Signal(9)),
        ];
        let restored = restore(lines(&events).as_bytes(), 100);
        assert_eq!(restored.skipped, 0);
        assert_eq!(restored.unfinished, None);
        assert_eq!(restored.log.recent, events);
        let t = &restored.log.totals;
        assert_eq!(t.starts, 2);
        assert_eq!(t.outcome(JobOutcome::Failure), 1);
        assert_eq!(t.outcome(JobOutcome::Signal), 1);
        assert_eq!(t.duration_count(), 2);
        assert_eq!(restored.log.last_exit_code(), Some(137));
    }

    #[test]
    fn a_run_without_an_end_is_finished_as_unknown() {
        let text = lines(&[started(1, 1_000), finished(1, 1_005, 5, JobExit::Code(0))])
            + &lines(&[started(2, 1_010)]).replace("\"starts\":1", "\"starts\":2")
            + "{\"schema\":\"gpulse.job-state/v1\",\"event\":{\"kind\":\"job_fin";
        let restored = restore(text.as_bytes(), 100);
        assert_eq!(restored.skipped, 1, "the torn last line");
        let end = restored.unfinished.unwrap();
        assert_eq!(
            (end.run, end.outcome, end.exit),
            (2, JobOutcome::Unknown, None)
        );
        assert_eq!(end.at, at(1_010));
        assert_eq!(restored.log.totals.starts, 2);
    }

    #[test]
    fn the_file_rotates_whole_lines_and_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4096u64;
        let mut log = JobLog::default();
        for run in 1..=200u64 {
            for e in [
                started(run, run * 10),
                finished(run, run * 10 + 5, 5, JobExit::Code(0)),
            ] {
                log.apply(e.clone(), 100);
                append(dir.path(), &encode_line(&e, &log.totals).unwrap(), max).unwrap();
                let len = std::fs::metadata(path(dir.path())).unwrap().len();
                assert!(len <= max, "{len} > {max}");
            }
        }
        let restored = restore(&read(dir.path(), max).unwrap(), 1000);
        assert_eq!(restored.skipped, 0);
        assert_eq!(restored.log.totals.starts, 200);
        assert_eq!(restored.log.totals.outcome(JobOutcome::Success), 200);
        assert!(restored.log.recent.len() < 400);
        assert_eq!(restored.log.recent.last().map(JobEvent::run), Some(200));
        assert!(!dir.path().join("jobs.jsonl.tmp").exists());
    }

    #[test]
    fn an_append_after_a_torn_line_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{\"torn").unwrap();
        let e = started(1, 1);
        let mut log = JobLog::default();
        log.apply(e.clone(), 10);
        append(dir.path(), &encode_line(&e, &log.totals).unwrap(), 1 << 20).unwrap();
        let restored = restore(&read(dir.path(), 1 << 20).unwrap(), 10);
        assert_eq!(restored.skipped, 1);
        assert_eq!(restored.log.recent, vec![e]);
    }

    #[test]
    fn the_writer_thread_drains_before_finish() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StateWriter::start(dir.path().join("sub"), 1 << 20).unwrap();
        let e = started(1, 1);
        let mut log = JobLog::default();
        log.apply(e.clone(), 10);
        writer.write(&e, &log.totals);
        assert!(writer.finish(Duration::from_secs(5)));
        let restored = restore(&read(&dir.path().join("sub"), 1 << 20).unwrap(), 10);
        assert_eq!(restored.log.recent, vec![e]);
    }
}
