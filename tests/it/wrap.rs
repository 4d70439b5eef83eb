//! `gpulse wrap -- CMD` with the real binary and real children (`sh -c`, `python3 -m
//! http.server`): exit codes passed through, signals forwarded, SIGKILL after the grace
//! period, output untouched, job events and metrics while the child runs and across restarts
//! (the state file), the auto-configured probe, and the child outliving agent failures.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gpulse::model::{JobEnd, JobEvent, JobExit, JobOutcome, JobReady, JobStart};
use gpulse::store::Store;
use rustix::process::{Pid, Signal, kill_process, kill_process_group};

use crate::agent::{free_port, http_get};

const LIMIT: Duration = Duration::from_secs(20);

/// Records what `gpulse wrap` would for a child that failed once and was restarted: run 1
/// ended with exit 3 after 90 s, run 2 started and became ready (for the OTLP test).
pub fn record_two_runs(store: &Arc<Store>) {
    let now = SystemTime::now();
    let ago = |s: u64| now - Duration::from_secs(s);
    for event in [
        JobEvent::Started(JobStart {
            run: 1,
            at: ago(200),
            program: "vllm".to_owned(),
            pid: 41,
        }),
        JobEvent::Finished(JobEnd {
            run: 1,
            at: ago(110),
            program: "vllm".to_owned(),
            pid: 41,
            started_at: ago(200),
            outcome: JobOutcome::Failure,
            exit: Some(JobExit::Code(3)),
            duration: Some(Duration::from_secs(90)),
            oom_kills: Some(0),
            stop_signal: None,
            killed_after_grace: false,
        }),
        JobEvent::Started(JobStart {
            run: 2,
            at: ago(100),
            program: "vllm".to_owned(),
            pid: 42,
        }),
        JobEvent::Ready(JobReady {
            run: 2,
            at: ago(60),
            after_start: Duration::from_secs(40),
            recovery: Some(Duration::from_secs(50)),
        }),
    ] {
        store.record_job(event);
    }
}

/// A running `gpulse wrap`, its stdout and stderr in files; killed (with its child's group)
/// on drop.
struct Wrapped {
    child: Child,
    addr: SocketAddr,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

impl Wrapped {
    /// `gpulse wrap --listen 127.0.0.1:PORT FLAGS -- COMMAND` with `env` (inherited `GPULSE_*`
    /// removed; GPU sampling off unless `env` turns it on).
    fn spawn(flags: &[&str], env: &[(&str, &str)], command: &[&str]) -> Wrapped {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stdout = tempfile::NamedTempFile::new().unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpulse"));
        cmd.arg("wrap");
        if !flags.contains(&"--listen") {
            cmd.arg("--listen").arg(addr.to_string());
        }
        cmd.args(flags)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout.reopen().unwrap()))
            .stderr(Stdio::from(stderr.reopen().unwrap()));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GPULSE_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("GPULSE_GPU_ENABLED", "false");
        cmd.envs(
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        let child = cmd.spawn().unwrap();
        Wrapped {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    /// [`Wrapped::spawn`], then waits for the agent's `/readyz`, retrying on a taken port.
    fn start(flags: &[&str], env: &[(&str, &str)], command: &[&str]) -> Wrapped {
        for _ in 0..5 {
            let mut w = Wrapped::spawn(flags, env, command);
            let deadline = Instant::now() + LIMIT;
            loop {
                if w.stderr().contains("Cannot listen") {
                    break; // another process took the port: try another
                }
                if let Ok(r) = http_get(w.addr, "/readyz", Duration::from_secs(2))
                    && r.status == 200
                {
                    return w;
                }
                if let Ok(Some(status)) = w.child.try_wait() {
                    panic!("gpulse wrap exited early ({status}):\n{}", w.stderr());
                }
                assert!(
                    Instant::now() < deadline,
                    "agent not ready:\n{}",
                    w.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no free port in 5 attempts");
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32).unwrap()
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal).unwrap();
    }

    /// Waits (bounded) for gpulse to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gpulse wrap did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn get(&self, path: &str) -> String {
        let r = http_get(self.addr, path, Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!("GET {path}: {e}\n{}", self.stderr());
        });
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    }

    fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get(path)).unwrap()
    }

    /// Polls `path` (JSON) until `ok` holds; returns it.
    fn wait_json(
        &self,
        path: &str,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v = self.json(path);
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what}: {v:#}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout.path()).unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `gpulse wrap` to its end without waiting for the agent; (status, stdout, stderr).
fn run_to_end(
    flags: &[&str],
    env: &[(&str, &str)],
    command: &[&str],
) -> (ExitStatus, String, String) {
    let mut w = Wrapped::spawn(flags, env, command);
    let status = w.wait();
    (status, w.stdout(), w.stderr())
}

/// The `jobs.jsonl` events in `dir`, as JSON.
fn state_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("jobs.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
        .collect()
}

fn last_finished(dir: &Path) -> serde_json::Value {
    state_events(dir)
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "job_finished")
        .expect("a job_finished event")
}

/// Waits until `file` exists (the child wrote its marker).
fn wait_file(file: &Path, w: &Wrapped) {
    let deadline = Instant::now() + LIMIT;
    while !file.exists() {
        assert!(Instant::now() < deadline, "no {file:?}:\n{}", w.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

#[test]
fn exit_codes_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let state = [("GPULSE_AGENT_STATE_DIR", dir.path().to_str().unwrap())];
    let (status, _, err) = run_to_end(&[], &state, &sh("exit 0"));
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(last_finished(dir.path())["outcome"], "success");
    let (status, _, err) = run_to_end(&[], &state, &sh("exit 3"));
    assert_eq!(status.code(), Some(3), "{err}");
    let end = last_finished(dir.path());
    assert_eq!(
        (
            end["outcome"].as_str(),
            end["exit_code"].as_i64(),
            end["run"].as_u64()
        ),
        (Some("failure"), Some(3), Some(2))
    );
}

#[test]
fn a_child_killed_by_a_signal_exits_128_plus_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let state = [("GPULSE_AGENT_STATE_DIR", dir.path().to_str().unwrap())];
    let (status, _, err) = run_to_end(&[], &state, &sh("kill -9 $$"));
    assert_eq!(status.code(), Some(137), "{err}");
    let end = last_finished(dir.path());
    assert_eq!(end["outcome"], "signal", "{end}");
    assert_eq!(end["signal"], 9);
    assert_eq!(end["exit_code"], 137);
    assert_eq!(end["killed_after_grace"], false);
}

#[test]
fn the_childs_output_passes_through_untouched() {
    let (status, out, err) = run_to_end(
        &[],
        &[],
        &sh("echo hello-from-child; echo err-from-child >&2; printf 'no newline'"),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello-from-child\nno newline");
    assert!(err.contains("err-from-child\n"), "{err}");
}

#[test]
fn a_command_that_cannot_start_exits_127() {
    let (status, _, err) = run_to_end(&[], &[], &["/nonexistent/gpulse-test-cmd"]);
    assert_eq!(status.code(), Some(127), "{err}");
    assert!(
        err.contains("cannot start /nonexistent/gpulse-test-cmd"),
        "{err}"
    );
}

#[test]
fn an_invalid_config_still_runs_the_command() {
    let (status, out, err) = run_to_end(
        &[],
        &[("GPULSE_GPU_INTERVAL", "fast")],
        &sh("echo ran; exit 4"),
    );
    assert_eq!(status.code(), Some(4), "{err}");
    assert_eq!(out, "ran\n");
    assert!(
        err.contains("gpu.interval") && err.contains("without the agent"),
        "{err}"
    );
}

#[test]
fn the_child_runs_on_when_the_agent_cannot_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (status, out, err) = run_to_end(
        &["--listen", &port],
        &[],
        &sh("sleep 0.5; echo still-here; exit 5"),
    );
    assert_eq!(status.code(), Some(5), "{err}");
    assert_eq!(out, "still-here\n");
    assert!(err.contains("Cannot listen"), "{err}");
}

/// The child traps SIGHUP (keeps running) and `stop` (writes and exits 0).
fn forwarding(stop: Signal, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'echo HUP >> {m}' HUP; trap 'echo {name} >> {m}; exit 0' {name}; \
         touch {r}; while :; do sleep 0.05; done",
        m = marker.display(),
        r = ready.display(),
    );
    let mut w = Wrapped::start(
        &[],
        &[("GPULSE_AGENT_STATE_DIR", dir.path().to_str().unwrap())],
        &sh(&script),
    );
    wait_file(&ready, &w);
    w.signal(Signal::HUP);
    let deadline = Instant::now() + LIMIT;
    while std::fs::read_to_string(&marker).unwrap_or_default() != "HUP\n" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not forwarded:\n{}",
            w.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped gpulse"
    );
    w.signal(stop);
    let status = w.wait();
    assert_eq!(status.code(), Some(0), "{}", w.stderr());
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("HUP\n{name}\n")
    );
    let end = last_finished(dir.path());
    assert_eq!(end["outcome"], "stopped", "{end}");
    assert_eq!(end["stop_signal"], stop.as_raw());
    assert_eq!(end["exit_code"], 0);
}

#[test]
fn sigterm_and_sighup_reach_the_child() {
    forwarding(Signal::TERM, "TERM");
}

#[test]
fn sigint_and_sighup_reach_the_child() {
    forwarding(Signal::INT, "INT");
}

#[test]
fn a_child_ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut w = Wrapped::start(
        &[],
        &[
            ("GPULSE_AGENT_SHUTDOWN_GRACE_PERIOD", "1s"),
            ("GPULSE_AGENT_STATE_DIR", dir.path().to_str().unwrap()),
        ],
        &sh(&script),
    );
    wait_file(&ready, &w);
    let sent = Instant::now();
    w.signal(Signal::TERM);
    let status = w.wait();
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(137), "{}", w.stderr());
    assert!(took >= Duration::from_millis(900), "killed after {took:?}");
    assert!(took < Duration::from_secs(8), "killed after {took:?}");
    let end = last_finished(dir.path());
    assert_eq!(end["outcome"], "stopped", "{end}");
    assert_eq!(end["killed_after_grace"], true);
    assert_eq!(end["signal"], 9);
    assert_eq!(end["stop_signal"], 15);
}

/// Every event of the log, oldest first (`/v1/events` pages the unified log).
const ALL_EVENTS: &str = "/v1/events?since=0&limit=1000";

/// The job events of a `/v1/events` answer as `(kind, run)`, oldest first.
fn job_events(v: &serde_json::Value) -> Vec<(String, u64)> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("job_"))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["attributes"]["gpulse.job.run"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The attributes of the job event `kind` of `run`, once recorded.
fn job_event(v: &serde_json::Value, kind: &str, run: u64) -> Option<serde_json::Value> {
    v["events"]
        .as_array()?
        .iter()
        .find(|e| e["kind"] == kind && e["attributes"]["gpulse.job.run"] == run)
        .map(|e| e["attributes"].clone())
}

#[test]
fn events_and_metrics_while_running_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = [("GPULSE_AGENT_STATE_DIR", dir.path().to_str().unwrap())];
    // Run 1 fails.
    let (status, _, err) = run_to_end(&[], &state, &sh("exit 3"));
    assert_eq!(status.code(), Some(3), "{err}");

    // Run 2 (a restart) runs until it is killed together with its wrapper.
    let w = Wrapped::start(&[], &state, &sh("while :; do sleep 0.05; done"));
    let events = w.wait_json(ALL_EVENTS, "run 2", |v| {
        v["job"]["run"] == 2 && job_event(v, "job_started", 2).is_some()
    });
    assert_eq!(events["schema"], "gpulse.events/v2");
    assert_eq!(events["mode"], "embedded");
    let job = &events["job"];
    assert_eq!(job["running"], true);
    assert_eq!(job["program"], "sh");
    assert_eq!(job["restarts_total"], 1);
    assert_eq!(job["runs_total"]["failure"], 1);
    assert_eq!(job["last_exit_code"], 3);
    assert_eq!(job["last_outcome"], "failure");
    let kinds = job_events(&events);
    let kinds: Vec<(&str, u64)> = kinds.iter().map(|(k, r)| (k.as_str(), *r)).collect();
    assert_eq!(
        kinds,
        [("job_started", 1), ("job_finished", 1), ("job_started", 2)]
    );
    let child_pid = job["pid"].as_i64().unwrap() as i32;

    let metrics = w.get("/metrics");
    for line in [
        "gpulse_job_runs_total{outcome=\"failure\"} 1",
        "gpulse_job_runs_total{outcome=\"success\"} 0",
        "gpulse_job_restarts_total 1",
        "gpulse_job_running{program=\"sh\"} 1",
        "gpulse_job_last_exit_code 3",
        "gpulse_job_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("mode=\"embedded\""), "{metrics}");
    let snapshot = w.json("/v1/snapshot");
    assert_eq!(snapshot["mode"], "embedded");
    assert_eq!(snapshot["mode_setting"], "auto");
    let cannot: Vec<&str> = snapshot["cannot_measure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(cannot.contains(&"gpu"), "GPU sampling is off: {cannot:?}");
    assert!(cannot.contains(&"other_containers_gpus"), "{cannot:?}");
    assert!(!cannot.contains(&"job_runs"), "{cannot:?}");

    // The wrapper dies with no chance to record the end (as in a cgroup-wide OOM kill);
    // then its orphaned child goes too. (First, run 2's start must be on disk.)
    let deadline = Instant::now() + LIMIT;
    while !state_events(dir.path())
        .iter()
        .any(|e| e["kind"] == "job_started" && e["run"] == 2)
    {
        assert!(Instant::now() < deadline, "run 2 never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_process(w.pid(), Signal::KILL).unwrap();
    let pid = Pid::from_raw(child_pid).unwrap();
    let _ = kill_process_group(pid, Signal::KILL);
    drop(w);

    // Run 3 finds run 2 unfinished and counts it as unknown.
    let mut w = Wrapped::start(&[], &state, &sh("while :; do sleep 0.05; done"));
    let events = w.wait_json(ALL_EVENTS, "run 3", |v| {
        v["job"]["run"] == 3 && job_event(v, "job_started", 3).is_some()
    });
    let job = &events["job"];
    assert_eq!(job["restarts_total"], 2);
    assert_eq!(job["runs_total"]["unknown"], 1);
    assert_eq!(job["runs_total"]["failure"], 1);
    let unknown = job_event(&events, "job_finished", 2).unwrap();
    assert_eq!(unknown["gpulse.job.outcome"], "unknown");
    assert!(unknown["gpulse.job.exit_code"].is_null());
    // Each job event once in the log, though every wrapper read jobs.jsonl back.
    let kinds = job_events(&events);
    let kinds: Vec<(&str, u64)> = kinds.iter().map(|(k, r)| (k.as_str(), *r)).collect();
    assert_eq!(
        kinds,
        [
            ("job_started", 1),
            ("job_finished", 1),
            ("job_started", 2),
            ("job_finished", 2),
            ("job_started", 3)
        ]
    );
    w.signal(Signal::TERM);
    assert_eq!(w.wait().code(), Some(143), "{}", w.stderr());
    let kinds: Vec<String> = state_events(dir.path())
        .iter()
        .map(|e| format!("{}:{}", e["kind"].as_str().unwrap(), e["run"]))
        .collect();
    assert_eq!(
        kinds,
        [
            "job_started:1",
            "job_finished:1",
            "job_started:2",
            "job_finished:2",
            "job_started:3",
            "job_finished:3"
        ]
    );
}

/// Waits for the probe `name` to be `up` in /v1/probes and the job to be ready.
fn wait_up_and_ready(w: &Wrapped, name: &str) {
    let probes = w.wait_json("/v1/probes", "the probe up", |v| {
        v["probes"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["state"] == "up"))
    });
    let probe = probes["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
        .clone();
    assert_eq!(probe["kind"], "http");
    let events = w.wait_json(ALL_EVENTS, "job_ready", |v| {
        !v["job"]["ready_at"].is_null() && job_events(v).iter().any(|(k, _)| k == "job_ready")
    });
    assert!(events["job"]["ready_seconds"].as_f64().unwrap() >= 0.0);
    assert!(w.get("/metrics").contains("gpulse_job_ready_seconds "));
}

#[test]
fn the_auto_probe_finds_a_wrapped_http_server() {
    let port = free_port().to_string();
    let mut w = Wrapped::start(
        &[],
        &[("GPULSE_WRAP_PROBE_INTERVAL", "200ms")],
        &["python3", "-m", "http.server", &port, "--bind", "127.0.0.1"],
    );
    wait_up_and_ready(&w, "http");
    w.signal(Signal::TERM);
    // python's default SIGTERM action: killed by the signal.
    assert_eq!(w.wait().code(), Some(143), "{}", w.stderr());
}

#[test]
fn the_probe_flags_point_at_a_server_the_command_line_hides() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut w = Wrapped::start(
        &["--probe-url", &url],
        &[
            ("GPULSE_WRAP_PROBE_INTERVAL", "200ms"),
            ("P", &port.to_string()),
        ],
        &sh("exec python3 -m http.server $P --bind 127.0.0.1"),
    );
    wait_up_and_ready(&w, "http");
    w.signal(Signal::TERM);
    assert_eq!(w.wait().code(), Some(143), "{}", w.stderr());
}

#[test]
fn wrap_needs_a_command_after_the_double_dash() {
    for args in [&["wrap"][..], &["wrap", "sh", "-c", "exit 0"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_gpulse"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// `(pid, ppid, state, comm)` of every process, from /proc.
fn processes() -> Vec<(i32, i32, char, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 2..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        out.push((pid, ppid, state, comm));
    }
    out
}

#[test]
fn orphans_of_the_child_are_reaped() {
    // The subshell exits at once, orphaning `sleep 0.3`, which is re-parented to gpulse.
    let mut w = Wrapped::spawn(&[], &[], &sh("(sleep 0.3 &); sleep 2; exit 0"));
    let gpulse = w.child.id() as i32;
    let deadline = Instant::now() + LIMIT;
    let orphan = loop {
        let found = processes()
            .into_iter()
            .find(|(_, ppid, _, comm)| *ppid == gpulse && comm == "sleep");
        if let Some((pid, ..)) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no orphan re-parented to gpulse:\n{}",
            w.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // Once it exits, gpulse reaps it: no zombie left behind while the child still runs.
    let deadline = Instant::now() + LIMIT;
    while Path::new(&format!("/proc/{orphan}")).exists() {
        let state = processes().into_iter().find(|p| p.0 == orphan).map(|p| p.2);
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} not reaped (state {state:?}):\n{}",
            w.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the child still runs"
    );
    assert_eq!(w.wait().code(), Some(0), "{}", w.stderr());
}

/// Without `wrap` there is no job: `/v1/events` says so, and `job_runs` cannot be measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wrap_there_is_no_job() {
    let mut config = gpulse::config::Config::default();
    config.agent.mode = gpulse::config::ModeSetting::Sidecar;
    let agent = crate::inproc::start(config, gpulse::app::GpuSource::Demo { gpus: 1 }, None).await;
    let events = agent.get_json(ALL_EVENTS).await;
    assert_eq!(events["schema"], "gpulse.events/v2");
    assert_eq!(events["mode"], "sidecar");
    assert!(events["job"].is_null(), "{events}");
    assert_eq!(job_events(&events), []);
    let snapshot = agent.get_json("/v1/snapshot").await;
    assert_eq!(snapshot["mode"], "sidecar");
    assert_eq!(snapshot["mode_setting"], "sidecar");
    let cannot = snapshot["cannot_measure"].as_array().unwrap();
    assert!(
        cannot.contains(&serde_json::json!("job_runs")),
        "{cannot:?}"
    );
    let metrics = agent.get("/metrics").await;
    assert!(metrics.contains("mode=\"sidecar\""), "{metrics}");
    assert!(
        !metrics.contains("gpulse_job_"),
        "no job families without wrap"
    );
    agent.shut_down().await;
}

/// The events of the valid lines of `jobs.jsonl` in `dir` (bytes; other lines skipped).
fn valid_state_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read(dir.join("jobs.jsonl"))
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .map(|v| v["event"].clone())
        .collect()
}

#[test]
fn a_state_file_with_bad_bytes_keeps_its_history_and_still_rotates() {
    // Issue 12 #4: one invalid UTF-8 byte (a torn write splitting a multi-byte program name)
    // used to make the whole file unreadable: the next wrapper counted from run 1, and once
    // the file reached its bound every rotation failed.
    let dir = tempfile::tempdir().unwrap();
    let state = [
        ("GPULSE_AGENT_STATE_DIR", dir.path().to_str().unwrap()),
        ("GPULSE_WRAP_STATE_MAX_BYTES", "16384"),
    ];
    let (status, _, err) = run_to_end(&[], &state, &sh("exit 3"));
    assert_eq!(status.code(), Some(3), "{err}");
    let file = dir.path().join("jobs.jsonl");
    let mut bytes = std::fs::read(&file).unwrap();
    // A started line cut inside "é" (0xC3 0xA9), then a line of random bytes.
    bytes.extend_from_slice(
        b"{\"schema\":\"gpulse.job-state/v1\",\"event\":{\"program\":\"caf\xc3\n",
    );
    bytes.extend_from_slice(b"\xff\xfe\x00\x80garbage\xc0\xaf\n");
    std::fs::write(&file, &bytes).unwrap();

    let (status, _, err) = run_to_end(&[], &state, &sh("exit 0"));
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("Skipped unreadable lines"), "{err}");
    let end = valid_state_events(dir.path())
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "job_finished")
        .unwrap();
    assert_eq!(end["run"], 2, "run 1 was forgotten:\n{err}");

    // Fill the file to its bound with bad bytes (a NUL-filled tail, as some filesystems leave
    // after a crash): the next append must rotate, keep the counts and leave a valid file.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.resize(16384 - 10, 0);
    std::fs::write(&file, &bytes).unwrap();
    let (status, _, err) = run_to_end(&[], &state, &sh("exit 4"));
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(!err.contains("Cannot write the job state file"), "{err}");
    let rotated = std::fs::read(&file).unwrap();
    assert!(
        rotated.len() < 16384 / 2,
        "not rotated: {} bytes",
        rotated.len()
    );
    let text = String::from_utf8(rotated).expect("the rotated file is valid UTF-8");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every rotated line parses");
    }
    let end = last_finished(dir.path());
    assert_eq!(
        (end["run"].as_u64(), end["exit_code"].as_i64()),
        (Some(3), Some(4))
    );
}

/// Seconds from `since` until something accepts connections on `port` (polled every 10 ms):
/// the truth a wrapped server's `ready_seconds` is compared with.
fn seconds_until_listening(port: u16, since: Instant) -> f64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(10));
    }
    since.elapsed().as_secs_f64()
}

/// One `gpulse wrap` of a server that opens its port after `delay_s`, at the default 10 s probe
/// interval: `starting` (never `down`) until up, no outage, and `ready_seconds` close to when
/// the port really opened. Returns the `/v1/events` answer once ready, and the wrapper.
fn wrap_slow_server(dir: &Path, delay_s: u32) -> (serde_json::Value, Wrapped) {
    let port = free_port();
    let script = format!("sleep {delay_s}; exec python3 -m http.server {port} --bind 127.0.0.1");
    let spawned = Instant::now();
    let w = Wrapped::start(
        &[],
        &[("GPULSE_AGENT_STATE_DIR", dir.to_str().unwrap())],
        &sh(&script),
    );
    if delay_s >= 2 {
        let probes = w.wait_json("/v1/probes", "the probe starting", |v| {
            v["probes"][0]["state"] == "starting"
        });
        assert_eq!(probes["probes"][0]["reason"], "connect_refused");
        assert!(probes["probes"][0]["starting_since"].is_string());
        assert!(
            w.get("/metrics")
                .contains(r#"gpulse_probe_state{probe="http",kind="http",state="starting"} 1"#),
            "{}",
            w.get("/metrics")
        );
    }
    let truth = seconds_until_listening(port, spawned);
    let events = w.wait_json(ALL_EVENTS, "job_ready", |v| {
        v["job"]["run"]
            .as_u64()
            .is_some_and(|run| job_event(v, "job_ready", run).is_some())
    });
    let probe = w.json("/v1/probes")["probes"][0].clone();
    assert_eq!(probe["state"], "up", "{probe}");
    assert_eq!(probe["outages_total"], 0, "{probe}");
    assert!(probe["last_recovery_seconds"].is_null(), "{probe}");
    let ready = events["job"]["ready_seconds"].as_f64().unwrap();
    // The child starts a few ms after gpulse, so `truth` is a little over the real value.
    assert!(
        (ready - truth).abs() < 0.5,
        "ready_seconds {ready} vs the port open after {truth}:\n{}",
        w.stderr()
    );
    let stderr = w.stderr();
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("probe")),
        "{stderr}"
    );
    (events, w)
}

#[test]
fn a_slow_starting_server_is_starting_not_down_and_its_restart_records_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (events, mut w) = wrap_slow_server(dir.path(), 5);
    assert!(events["job"]["recovery_seconds"].is_null());
    w.signal(Signal::TERM);
    assert_eq!(w.wait().code(), Some(143), "{}", w.stderr());
    // The restart (a new wrapper on the same state directory, as a container restart):
    // starting again, and its time from the previous end to ready is its recovery time.
    let (events, mut w) = wrap_slow_server(dir.path(), 2);
    let ready = job_event(&events, "job_ready", 2).unwrap_or_else(|| panic!("{events}"));
    let recovery = ready["gpulse.job.recovery_seconds"].as_f64().unwrap();
    assert!(
        recovery >= ready["gpulse.job.ready_seconds"].as_f64().unwrap() && recovery < 10.0,
        "{ready}"
    );
    w.signal(Signal::TERM);
    assert_eq!(w.wait().code(), Some(143), "{}", w.stderr());
}
