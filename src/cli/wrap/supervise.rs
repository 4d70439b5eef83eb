//! The wrapped child of `gpulse wrap -- CMD`: spawning it, forwarding signals, reaping it,
//! and recording each run as [`JobEvent`]s.
//!
//! * The child runs in its own process group with stdin, stdout and stderr inherited
//!   (untouched). When stdin is a terminal gpulse owns, the child's group is made the
//!   terminal's foreground group (as tini does), so Ctrl-C reaches the child once, from the
//!   kernel, and an interactive child can read the terminal.
//! * SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to gpulse are forwarded to the
//!   child (the process, not its group: the child decides how to stop its workers, as if it
//!   were the container's entrypoint). `agent.shutdown_grace_period` after the first forwarded
//!   SIGTERM or SIGINT, the child's whole process group gets SIGKILL.
//! * Every exited process is reaped (`waitpid(-1)`), so gpulse can be a container's PID 1:
//!   orphaned grandchildren re-parented to it do not stay zombies. gpulse makes itself a child
//!   subreaper, so this holds when it is not PID 1 too (`docker run --init`, a shell). gpulse
//!   has no other children, so no other code's exit status is taken.
//! * Signal handlers are installed ([`Signals::install`]) before the child is spawned, so a
//!   signal in between is forwarded, not lost.
//!
//! Outcomes are classified by [`JobOutcome::classify`] (pure, in `model`); the OOM evidence is
//! the container cgroup's `oom_kill` counter, read before and after the run
//! ([`cgroup_oom_kills`]). Arguments are never recorded (they may hold secrets): an event names
//! only the program.

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, kill_process_group, wait};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::model::{JobEnd, JobEvent, JobExit, JobOutcome, JobReady, JobStart, ProbeState};
use crate::store::Store;

/// Where the supervisor hands job events (normally the store and the state file).
pub type JobSink = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// How often the readiness watch reads the store, and the reaper's safety poll.
const POLL: Duration = Duration::from_millis(200);
const REAP_POLL: Duration = Duration::from_secs(1);

/// Signals forwarded to the child, and whether they start the kill grace period.
const FORWARDED: [(SignalKind, Signal, &str, bool); 6] = [
    (SignalKind::terminate(), Signal::TERM, "SIGTERM", true),
    (SignalKind::interrupt(), Signal::INT, "SIGINT", true),
    (SignalKind::hangup(), Signal::HUP, "SIGHUP", false),
    (SignalKind::quit(), Signal::QUIT, "SIGQUIT", false),
    (SignalKind::user_defined1(), Signal::USR1, "SIGUSR1", false),
    (SignalKind::user_defined2(), Signal::USR2, "SIGUSR2", false),
];

/// The handlers of every forwarded signal and SIGCHLD, installed before the child starts.
#[derive(Debug)]
pub struct Signals {
    forwarded: Vec<tokio::signal::unix::Signal>,
    child: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; must run inside the tokio runtime.
    pub fn install() -> io::Result<Self> {
        let forwarded = FORWARDED
            .iter()
            .map(|(kind, ..)| signal(*kind))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            forwarded,
            child: signal(SignalKind::child())?,
        })
    }
}

/// The index (in [`FORWARDED`]) of the next forwarded signal received.
async fn next_forwarded(forwarded: &mut [tokio::signal::unix::Signal]) -> usize {
    let waits = forwarded.iter_mut().enumerate().map(|(i, s)| {
        Box::pin(async move {
            s.recv().await;
            i
        })
    });
    futures_select_all(waits).await
}

/// Completes with the output of the first future to complete.
async fn futures_select_all<F: Future<Output = usize> + Unpin>(
    futures: impl IntoIterator<Item = F>,
) -> usize {
    let mut futures: Vec<F> = futures.into_iter().collect();
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(i) = Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A started child.
#[derive(Debug, Clone)]
pub struct Spawned {
    pub pid: u32,
    /// Basename of the command.
    pub program: String,
    pub started_at: SystemTime,
    /// The cgroup's OOM-kill count when the child started, when readable.
    oom_kills_before: Option<u64>,
}

/// Starts `argv` in its own process group with inherited stdio. An error is the OS's
/// (not found, permission denied).
pub fn spawn(argv: &[OsString]) -> io::Result<Spawned> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    };
    let oom_kills_before = cgroup_oom_kills();
    // Orphans of the child's tree are re-parented to gpulse (as to a container's PID 1), and
    // reaped by `reap`, so none stays a zombie whether or not gpulse is PID 1.
    if let Err(error) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::debug!(error = %error, "Cannot become a child subreaper.");
    }
    let child = Command::new(program).args(args).process_group(0).spawn()?;
    let pid = child.id();
    // std's Child neither kills nor reaps on drop; the reaper below owns the pid from here.
    drop(child);
    give_terminal(pid);
    Ok(Spawned {
        pid,
        program: program_name(program),
        started_at: SystemTime::now(),
        oom_kills_before,
    })
}

/// The basename of `program`, lossily as UTF-8.
pub fn program_name(program: &OsString) -> String {
    Path::new(program)
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// When stdin is a terminal whose foreground group is ours, hands it to the child's group
/// (then continues the group, in case the child read the terminal first and was stopped).
fn give_terminal(pid: u32) {
    use rustix::termios::{isatty, tcgetpgrp, tcsetpgrp};
    let stdin = io::stdin();
    if !isatty(&stdin) {
        return;
    }
    let Some(child) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    match tcgetpgrp(&stdin) {
        Ok(foreground) if foreground == rustix::process::getpgrp() => {}
        _ => return,
    }
    if tcsetpgrp(&stdin, child).is_ok() {
        let _ = kill_process_group(child, Signal::CONT);
    }
}

/// What [`supervise`] needs besides the child.
pub struct Supervision {
    /// This run's number (1 + the runs recorded before).
    pub run: u64,
    /// How long the child may outlive a forwarded SIGTERM or SIGINT before SIGKILL.
    pub grace: Duration,
    /// When the previous run ended (from the state file), for the recovery time.
    pub previous_end: Option<SystemTime>,
    /// Completes when the child's readiness probe is first up in this run
    /// ([`ready_when_probe_up`]); `None` without a probe.
    pub ready: Option<Pin<Box<dyn Future<Output = SystemTime> + Send>>>,
}

/// Records the start, forwards signals, records readiness, reaps the child and records its
/// end; returns the end. Only the child's exit ends it.
pub async fn supervise(
    spawned: &Spawned,
    signals: &mut Signals,
    supervision: Supervision,
    sink: &JobSink,
) -> JobEnd {
    let Supervision {
        run,
        grace,
        previous_end,
        ready,
    } = supervision;
    sink(JobEvent::Started(JobStart {
        run,
        at: spawned.started_at,
        program: spawned.program.clone(),
        pid: spawned.pid,
    }));
    let pid = i32::try_from(spawned.pid).ok().and_then(Pid::from_raw);
    let mut ready = ready;
    let mut stop_signal: Option<i32> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed_after_grace = false;
    let mut poll = tokio::time::interval(REAP_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exit = loop {
        if let Some(exit) = reap(pid) {
            break exit;
        }
        tokio::select! {
            _ = signals.child.recv() => {}
            _ = poll.tick() => {}
            index = next_forwarded(&mut signals.forwarded) => {
                let (_, sig, name, stops) = FORWARDED[index];
                tracing::info!(signal = name, pid = spawned.pid, "Forwarding the signal to the child.");
                if let Some(pid) = pid {
                    let _ = kill_process(pid, sig);
                }
                if stops && stop_signal.is_none() {
                    stop_signal = Some(sig.as_raw());
                    kill_at = Some(Instant::now() + grace);
                }
            }
            at = ready_or_never(&mut ready), if ready.is_some() => {
                ready = None;
                let after_start = at.duration_since(spawned.started_at).unwrap_or_default();
                let recovery = previous_end.and_then(|end| at.duration_since(end).ok());
                tracing::info!(after = ?after_start, "The child is ready.");
                sink(JobEvent::Ready(JobReady { run, at, after_start, recovery }));
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                kill_at = None;
                killed_after_grace = true;
                tracing::warn!(grace = ?grace, pid = spawned.pid, "The child outlived the grace period; sending SIGKILL to its process group.");
                if let Some(pid) = pid {
                    let _ = kill_process_group(pid, Signal::KILL);
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
        }
    };
    let at = SystemTime::now();
    let oom_kills = match (spawned.oom_kills_before, cgroup_oom_kills()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let outcome = JobOutcome::classify(exit, stop_signal.is_some(), oom_kills);
    let end = JobEnd {
        run,
        at,
        program: spawned.program.clone(),
        pid: spawned.pid,
        started_at: spawned.started_at,
        outcome,
        exit: Some(exit),
        duration: Some(at.duration_since(spawned.started_at).unwrap_or_default()),
        oom_kills,
        stop_signal,
        killed_after_grace,
    };
    sink(JobEvent::Finished(end.clone()));
    end
}

/// The readiness future, or never without one.
async fn ready_or_never(
    ready: &mut Option<Pin<Box<dyn Future<Output = SystemTime> + Send>>>,
) -> SystemTime {
    match ready {
        Some(ready) => ready.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reaps every exited process; returns the child's exit once it is among them.
fn reap(child: Option<Pid>) -> Option<JobExit> {
    loop {
        match wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if Some(pid) != child {
                    tracing::debug!(
                        pid = pid.as_raw_nonzero().get(),
                        "Reaped an orphaned process."
                    );
                    continue;
                }
                if let Some(code) = status.exit_status() {
                    return Some(JobExit::Code(code));
                }
                if let Some(signal) = status.terminating_signal() {
                    return Some(JobExit::Signal(signal));
                }
            }
            Ok(None) => return None,
            Err(rustix::io::Errno::INTR) => {}
            // ECHILD: nothing left to wait for; the child is gone and its status with it.
            Err(error) => {
                tracing::error!(error = %error, "Cannot wait for the child; treating it as failed.");
                return Some(JobExit::Code(1));
            }
        }
    }
}

/// Completes with the time of the first `up` check of the probe `name` at or after `since`.
pub async fn ready_when_probe_up(store: Arc<Store>, name: String, since: SystemTime) -> SystemTime {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = store.snapshot();
        let up = snap
            .probes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.last.as_ref())
            .filter(|l| l.state == ProbeState::Up && l.checked_at >= since);
        if let Some(last) = up {
            return last.checked_at;
        }
    }
}

/// The container cgroup's OOM-kill count (cgroup v2 `memory.events`, v1
/// `memory.oom_control`), when readable.
pub fn cgroup_oom_kills() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    oom_files(&cgroups)
        .into_iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| parse_oom_kill(&text))
}

/// Candidate files holding the OOM-kill counter for the cgroups in `/proc/self/cgroup`: the
/// process's own cgroup first, then the root of the (namespaced) hierarchy.
pub fn oom_files(proc_self_cgroup: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            out.push(Path::new("/sys/fs/cgroup").join(path).join("memory.events"));
            out.push(PathBuf::from("/sys/fs/cgroup/memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = Path::new("/sys/fs/cgroup/memory");
            out.push(base.join(path).join("memory.oom_control"));
            out.push(base.join("memory.oom_control"));
        }
    }
    out
}

/// The `oom_kill N` line of `memory.events` or `memory.oom_control`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counters_parse() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(parse_oom_kill(v1), Some(5));
        assert_eq!(parse_oom_kill("oom 1\n"), None);
    }

    #[test]
    fn oom_files_follow_the_cgroup_version() {
        let v2 = oom_files("0::/kubepods/pod1/abc\n");
        assert_eq!(
            v2,
            [
                PathBuf::from("/sys/fs/cgroup/kubepods/pod1/abc/memory.events"),
                PathBuf::from("/sys/fs/cgroup/memory.events")
            ]
        );
        let v1 = oom_files("5:cpu,cpuacct:/x\n4:memory:/docker/abc\n");
        assert_eq!(
            v1,
            [
                PathBuf::from("/sys/fs/cgroup/memory/docker/abc/memory.oom_control"),
                PathBuf::from("/sys/fs/cgroup/memory/memory.oom_control")
            ]
        );
        assert!(oom_files("garbage").is_empty());
    }

    #[test]
    fn program_names_are_basenames() {
        assert_eq!(program_name(&OsString::from("/usr/bin/python3")), "python3");
        assert_eq!(program_name(&OsString::from("vllm")), "vllm");
    }
}
