//! The probe collector against real third-party inference servers: llama.cpp's `llama-server`
//! (built from the llama-cpp-python sdist by `.ci/llama-server.sh`) on a generated tiny GGUF,
//! and MLServer (KServe V2, Triton's endpoints; `.ci/mlserver.sh`) with an sklearn model and a
//! slow-loading custom one. Each server is started once per test (MLServer takes ~10 s) and put
//! through its states: refused, loading, up, model missing, saturated, hung (SIGSTOP), killed.
//!
//! The servers are found through `GPULSE_LLAMA_SERVER`, `GPULSE_TINY_GGUF`, `GPULSE_MLSERVER`
//! and `GPULSE_MLSERVER_MODELS` (what the scripts print). Without them a test prints a
//! `SKIPPED (not installed)` line and passes, unless `GPULSE_CI=1`, where a missing server fails.
//!
//! The helpers (`LlamaServer`, `MlServer`, `observe`) are meant for more assertions on the same
//! servers: start one, point a `Probe` or the in-process agent at its `url`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpulse::app::GpuSource;
use gpulse::collect::probe::Probe;
use gpulse::collect::probe::infer::infer;
use gpulse::config::{HumanDuration, ProbeConfig, ProbeKind};
use gpulse::model::{ProbeReason, ProbeSample, ProbeState};

use crate::agent::free_port;
use crate::probe::{agent_config, probe_json};

/// The path in `var`, or `None` (a skip) when it is unset or missing; with `GPULSE_CI=1` a
/// missing path fails the test instead, so CI cannot pass by skipping.
fn required_path(var: &str, script: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if path.is_none() {
        crate::skip::not_installed(
            &format!("{var} is unset or missing"),
            &format!("run `eval \"$({script})\"`"),
        );
    }
    path
}

/// The state and reason of a sample, for compact assertions and logs.
type Seen = (ProbeState, Option<ProbeReason>);

fn seen(s: &ProbeSample) -> Seen {
    (s.state, s.reason)
}

fn probe_config(kind: ProbeKind, url: &str, expected_model: Option<&str>) -> ProbeConfig {
    let mut c = ProbeConfig::new("real", kind, url);
    // Loopback answers take milliseconds; 1 s keeps the hung-server checks short.
    c.timeout = HumanDuration(Duration::from_secs(1));
    c.expected_model = expected_model.map(str::to_owned);
    c
}

async fn check(kind: ProbeKind, url: &str, expected_model: Option<&str>) -> ProbeSample {
    Probe::new(probe_config(kind, url, expected_model))
        .check()
        .await
}

/// Checks `probe` every `every` until a sample satisfies `done` or `limit` passes; returns the
/// distinct (state, reason) pairs in the order first seen, with the final sample.
pub async fn observe(
    probe: &Probe,
    every: Duration,
    limit: Duration,
    done: impl Fn(&ProbeSample) -> bool,
) -> (Vec<Seen>, ProbeSample) {
    let deadline = Instant::now() + limit;
    let mut order: Vec<Seen> = Vec::new();
    loop {
        let s = probe.check().await;
        if !order.contains(&seen(&s)) {
            order.push(seen(&s));
        }
        if done(&s) {
            return (order, s);
        }
        assert!(
            Instant::now() < deadline,
            "no wanted sample within {limit:?}; seen {order:?}, last {s:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to `target`: a pid, or `-PGID` for a group.
fn signal(target: &str, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", target])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {target}: {status}");
}

/// A child process with its output in a temp file, killed (with its process group when it
/// leads one) on drop.
struct Guard {
    child: Child,
    log: tempfile::NamedTempFile,
    group: bool,
}

impl Guard {
    fn spawn(mut command: Command, group: bool) -> Guard {
        let log = tempfile::NamedTempFile::new().unwrap();
        if group {
            // MLServer forks inference workers; killing the group reaps them too.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {command:?}: {e}"));
        Guard { child, log, group }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log.path()).unwrap_or_default()).into_owned()
    }

    /// Whether the process has exited (without reaping a live one).
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn kill(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status `url` answers with; `None` while nothing answers HTTP.
async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    Some(client.get(url).send().await.ok()?.status().as_u16())
}

/// Starts a server on fresh ports until one listens: `spawn()` starts it, its `probe_url` is
/// asked until the status satisfies `accept`. A port taken between choosing and binding makes
/// the server exit; then new ports are tried.
async fn start_listening<T>(
    what: &str,
    limit: Duration,
    mut spawn: impl FnMut() -> (T, String),
    accept: impl Fn(u16) -> bool,
    guard: impl Fn(&mut T) -> &mut Guard,
) -> T {
    let client = crate::inproc::client();
    for _ in 0..3 {
        let (mut server, probe_url) = spawn();
        let deadline = Instant::now() + limit;
        loop {
            if status(&client, &probe_url).await.is_some_and(&accept) {
                return server;
            }
            if guard(&mut server).exited() {
                eprintln!(
                    "{what} exited before listening; retrying on other ports:\n{}",
                    guard(&mut server).output()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not answer {probe_url} within {limit:?}:\n{}",
                guard(&mut server).output()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    panic!("{what} never started listening");
}

/// The llama.cpp binary and model from the environment (see the module doc).
pub fn llama_paths() -> Option<(PathBuf, PathBuf)> {
    let server = required_path("GPULSE_LLAMA_SERVER", ".ci/llama-server.sh")?;
    let model = required_path("GPULSE_TINY_GGUF", ".ci/llama-server.sh")?;
    Some((server, model))
}

/// A running `llama-server` on the tiny GGUF, model alias `tiny-llama`, 2 slots, `/metrics`
/// and `/slots` on; killed on drop.
pub struct LlamaServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub pid: u32,
    guard: Guard,
}

impl LlamaServer {
    /// The alias the server lists its model under (`-a`).
    pub const MODEL: &'static str = "tiny-llama";

    /// Spawns the server on `port` without waiting for it.
    pub fn spawn(paths: &(PathBuf, PathBuf), port: u16, extra_args: &[&str]) -> LlamaServer {
        let mut command = Command::new(&paths.0);
        command
            .arg("-m")
            .arg(&paths.1)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            // One thread: the machine is shared, and a slow server makes the queue visible.
            .args(["--metrics", "--slots", "-c", "512", "-np", "2", "-t", "1"])
            // Its HTTP pool has n_parallel + 4 fixed threads, each held by a keep-alive
            // connection until 5 s idle, and adds a thread only when none is idle at enqueue:
            // a burst of connections can then wait seconds for a free thread (seen: 8 requests
            // from a pooling client took 5 s instead of 0.5 s). Enough fixed threads for every
            // connection of a test keep the timings about the server, not the pool.
            .args(["--threads-http", "16"])
            .args(["-a", Self::MODEL])
            .args(extra_args);
        let guard = Guard::spawn(command, false);
        LlamaServer {
            url: format!("http://127.0.0.1:{port}"),
            pid: guard.child.id(),
            guard,
        }
    }

    /// Starts the server on a free port and waits until it answers HTTP (it may still be
    /// loading). `None` when the binary or model is not configured (a skip).
    pub async fn start(extra_args: &[&str]) -> Option<LlamaServer> {
        let paths = llama_paths()?;
        Some(
            start_listening(
                "llama-server",
                Duration::from_secs(30),
                || {
                    let s = Self::spawn(&paths, free_port(), extra_args);
                    let health = format!("{}/health", s.url);
                    (s, health)
                },
                // Any answer: 503 while the model loads, 200 after.
                |_| true,
                |s| &mut s.guard,
            )
            .await,
        )
    }

    /// Sends a signal to the server (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        signal(&self.pid.to_string(), name);
    }

    /// Kills the server and waits for it to exit.
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        self.guard.output()
    }
}

/// A `/v1/completions` request of `max_tokens` tokens; returns status and JSON body.
async fn complete(
    client: &reqwest::Client,
    url: &str,
    max_tokens: u32,
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("{url}/v1/completions"))
        .json(&serde_json::json!({
            "model": LlamaServer::MODEL,
            "prompt": "Hello",
            "max_tokens": max_tokens,
            "temperature": 0,
            // Random weights may sample an end-of-text early; the load test needs long answers.
            "ignore_eos": true,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// llama.cpp from refused to loading to up, the expected model, a real completion, a queue
/// under load, a hung (stopped) server and its recovery in the agent, then a killed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_through_its_states() {
    let Some(paths) = llama_paths() else {
        return;
    };
    let client = crate::inproc::client();

    // Before the server exists: refused. Then the probe, polled fast from the spawn on, must
    // see it load (503, `Loading model`) and come up.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let probe = Probe::new(probe_config(ProbeKind::Llamacpp, &url, None));
    let before = probe.check().await;
    // Anything else means another process took the free port in between (a rare race).
    assert_eq!(
        seen(&before),
        (ProbeState::Down, Some(ProbeReason::ConnectRefused)),
        "port {port}: {before:?}"
    );
    let mut server = LlamaServer::spawn(&paths, port, &[]);
    let (order, up) = observe(
        &probe,
        Duration::from_millis(2),
        Duration::from_secs(30),
        |s| s.state == ProbeState::Up,
    )
    .await;
    eprintln!("llama-server start as the probe saw it: {order:?}");
    assert_eq!(
        order[0],
        (ProbeState::Down, Some(ProbeReason::ConnectRefused))
    );
    assert!(
        order.contains(&(ProbeState::Loading, Some(ProbeReason::NotReady))),
        "loading never seen: {order:?}\n{}",
        server.output()
    );
    assert!(
        order.iter().all(
            |s| *s == (ProbeState::Down, Some(ProbeReason::ConnectRefused))
                || *s == (ProbeState::Loading, Some(ProbeReason::NotReady))
                || s.0 == ProbeState::Up
        ),
        "{order:?}"
    );
    assert_eq!(up.models, vec![LlamaServer::MODEL.to_owned()]);

    // The expected model is listed; another one is not.
    let s = check(ProbeKind::Llamacpp, &url, Some(LlamaServer::MODEL)).await;
    assert_eq!(seen(&s), (ProbeState::Up, None), "{s:?}");
    let s = check(ProbeKind::Llamacpp, &url, Some("other-model")).await;
    assert_eq!(
        seen(&s),
        (ProbeState::Degraded, Some(ProbeReason::ModelMissing))
    );
    // The server answers the OpenAI model list too.
    let s = check(ProbeKind::Openai, &url, Some(LlamaServer::MODEL)).await;
    assert_eq!(seen(&s), (ProbeState::Up, None), "{s:?}");

    // A real 1-token completion: the cheapest proof that it generates.
    let (status, body) = complete(&client, &url, 1).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["text"].is_string(), "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 1, "{body}");

    // gpulse's synthetic request: a streamed 1-token completion, timed to its first token.
    let mut synthetic = probe_config(ProbeKind::Llamacpp, &url, None);
    synthetic.inference = true;
    synthetic.metrics = true;
    let synthetic = Probe::new(synthetic);
    let s = infer(&synthetic, LlamaServer::MODEL).await;
    assert!(s.ok, "{s:?}\n{}", server.output());
    let ttft = s.ttft.unwrap();
    assert!(ttft > Duration::ZERO && ttft <= s.duration, "{s:?}");
    assert_eq!(s.output_tokens, Some(1), "{s:?}");
    eprintln!(
        "synthetic 1-token completion: ttft {ttft:?}, total {:?}",
        s.duration
    );
    // The server's own metrics, through gpulse's parser: the llama.cpp dialect, the tokens
    // of the requests so far.
    let idle = synthetic.scrape(&format!("{url}/metrics")).await.unwrap();
    assert_eq!(idle.dialect, "llamacpp", "{idle:?}");
    assert!(idle.generation_tokens_total.unwrap() >= 2.0, "{idle:?}");
    assert!(idle.prompt_tokens_total.unwrap() > 0.0, "{idle:?}");
    assert_eq!(idle.requests_waiting, Some(0.0), "{idle:?}");

    // Saturation: 8 long completions on 2 slots queue up (requests_deferred), while the
    // health endpoint, and so the probe, stays up.
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { complete(&client, &url, 200).await })
        })
        .collect();
    let (mut max_deferred, mut max_processing, mut probes) = (0.0_f64, 0.0_f64, Vec::new());
    let (mut max_lifted_waiting, mut queued_request) = (0.0_f64, None);
    while !load.iter().all(tokio::task::JoinHandle::is_finished) {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let deferred = metric(&text, "llamacpp:requests_deferred").unwrap();
        let processing = metric(&text, "llamacpp:requests_processing").unwrap();
        max_deferred = max_deferred.max(deferred);
        max_processing = max_processing.max(processing);
        if deferred > 0.0 {
            probes.push(seen(&probe.check().await));
            // The queue as gpulse lifts it: llamacpp:requests_deferred → requests_waiting.
            let lifted = synthetic.scrape(&format!("{url}/metrics")).await.unwrap();
            max_lifted_waiting = max_lifted_waiting.max(lifted.requests_waiting.unwrap());
            // A synthetic request waits in the queue too, and still completes.
            if queued_request.is_none() {
                queued_request = Some(infer(&synthetic, LlamaServer::MODEL).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in load {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 200, "{body}");
    }
    eprintln!("under load: max deferred {max_deferred}, max processing {max_processing}");
    assert!(max_deferred > 0.0, "no request was ever deferred");
    assert_eq!(max_processing, 2.0);
    assert!(max_lifted_waiting > 0.0, "the lifted queue stayed empty");
    let queued = queued_request.unwrap();
    assert!(queued.ok, "{queued:?}");
    eprintln!(
        "synthetic request while queued: ttft {:?} (idle {ttft:?})",
        queued.ttft
    );
    assert!(
        !probes.is_empty() && probes.iter().all(|s| *s == (ProbeState::Up, None)),
        "probes while queued: {probes:?}"
    );

    // The agent probes it too; a stopped process accepts connections (the kernel's backlog)
    // but never answers: a timeout within the 1 s deadline, and an outage.
    let mut c = probe_config(ProbeKind::Llamacpp, &url, Some(LlamaServer::MODEL));
    c.name = "llama".to_owned();
    c.interval = HumanDuration(Duration::from_millis(100));
    c.inference = true;
    c.inference_interval = HumanDuration(Duration::from_millis(200));
    c.metrics = true;
    c.metrics_interval = HumanDuration(Duration::from_millis(200));
    let agent =
        crate::inproc::start(agent_config(vec![c]), GpuSource::Demo { gpus: 1 }, None).await;
    // Up, synthetic requests succeeding, the server's metrics lifted: all in /metrics.
    let metrics = agent
        .wait_for("/metrics", "probe up, inference and server metrics", |b| {
            b.contains(r#"gpulse_probe_up{probe="llama",kind="llamacpp"} 1"#)
                && b.contains(r#"gpulse_probe_inference_success{probe="llama",kind="llamacpp"} 1"#)
                && b.contains(
                    r#"gpulse_server_generation_tokens_total{probe="llama",kind="llamacpp"}"#,
                )
        })
        .await;
    assert!(
        metrics.contains(
            r#"gpulse_probe_inference_time_to_first_token_seconds_count{probe="llama",kind="llamacpp"}"#
        ),
        "{metrics}"
    );
    let p = probe_json(&agent.get("/v1/probes").await, "llama");
    assert_eq!(p["inference"]["last"]["model"], LlamaServer::MODEL, "{p}");
    assert_eq!(p["inference"]["last"]["output_tokens"], 1, "{p}");
    assert_eq!(p["server_metrics"]["lifted"]["dialect"], "llamacpp", "{p}");
    assert_eq!(p["server_metrics"]["last_ok"], true, "{p}");
    server.signal("STOP");
    let started = Instant::now();
    let s = probe.check().await;
    let took = started.elapsed();
    assert_eq!(
        seen(&s),
        (ProbeState::Down, Some(ProbeReason::Timeout)),
        "{s:?}"
    );
    // Cut at the 1 s deadline; the slack absorbs a loaded machine.
    assert!(took < Duration::from_millis(1000 + 1000), "{took:?}");
    let body = agent
        .wait_for("/v1/probes", "a timeout outage", |b| {
            probe_json(b, "llama")["state"] == "down"
        })
        .await;
    let p = probe_json(&body, "llama");
    assert_eq!(p["reason"], "timeout", "{p}");
    assert_eq!(p["outages_total"], 1, "{p}");
    assert_eq!(p["outages"][0]["cause"], "timeout", "{p}");
    assert!(p["outages"][0]["end"].is_null(), "{p}");

    // Resumed: up again, and the outage has an end and a length.
    server.signal("CONT");
    let metrics = agent
        .wait_for("/metrics", "recovery", |b| {
            b.contains(r#"gpulse_probe_up{probe="llama",kind="llamacpp"} 1"#)
                && b.contains("gpulse_probe_last_recovery_seconds{")
        })
        .await;
    let recovery = metric(
        &metrics,
        r#"gpulse_probe_last_recovery_seconds{probe="llama",kind="llamacpp"}"#,
    )
    .unwrap();
    assert!(recovery > 0.0, "{metrics}");
    let p = probe_json(&agent.get("/v1/probes").await, "llama");
    assert_eq!(p["state"], "up", "{p}");
    assert!(p["outages"][0]["end"].is_string(), "{p}");
    assert_eq!(seen(&probe.check().await), (ProbeState::Up, None));

    // Killed: the port is closed again.
    server.kill();
    assert_eq!(
        seen(&probe.check().await),
        (ProbeState::Down, Some(ProbeReason::ConnectRefused))
    );
    let body = agent
        .wait_for("/v1/probes", "a refused outage", |b| {
            probe_json(b, "llama")["reason"] == "connect_refused"
        })
        .await;
    let p = probe_json(&body, "llama");
    assert_eq!(
        (&p["state"], &p["outages_total"]),
        (&"down".into(), &2.into()),
        "{p}"
    );
    agent.shut_down().await;
}

/// A prompt longer than the context is refused with 400 while the server stays up: a failed
/// request is not a failed server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_refuses_a_prompt_over_its_context_and_stays_up() {
    // 2 slots share `-c 512`: 256 tokens each, so a 400-token prompt does not fit.
    let Some(server) = LlamaServer::start(&[]).await else {
        return;
    };
    let (_, up) = observe(
        &Probe::new(probe_config(ProbeKind::Llamacpp, &server.url, None)),
        Duration::from_millis(10),
        Duration::from_secs(30),
        |s| s.state == ProbeState::Up,
    )
    .await;
    assert_eq!(up.models, vec![LlamaServer::MODEL.to_owned()]);
    let response = crate::inproc::client()
        .post(format!("{}/v1/completions", server.url))
        .json(&serde_json::json!({"prompt": "hello ".repeat(400), "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "exceed_context_size_error", "{body}");
    let s = check(ProbeKind::Llamacpp, &server.url, Some(LlamaServer::MODEL)).await;
    assert_eq!(
        seen(&s),
        (ProbeState::Up, None),
        "{s:?}\n{}",
        server.output()
    );
}

/// The MLServer binary and model repository template from the environment.
pub fn mlserver_paths() -> Option<(PathBuf, PathBuf)> {
    let server = required_path("GPULSE_MLSERVER", ".ci/mlserver.sh")?;
    let models = required_path("GPULSE_MLSERVER_MODELS", ".ci/mlserver.sh")?;
    Some((server, models))
}

/// A running MLServer on a copy of the model repository (`iris`, `echo`), on free loopback
/// ports; killed with its workers on drop.
pub struct MlServer {
    /// The HTTP API (KServe V2): `http://127.0.0.1:PORT`.
    pub url: String,
    /// Prometheus `/metrics` is on its own port: `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
    guard: Guard,
    _dir: tempfile::TempDir,
}

impl MlServer {
    /// Copies the repository, writes settings.json with fresh ports and spawns `mlserver start`
    /// without waiting. `echo` takes `load_delay` to load.
    fn spawn(paths: &(PathBuf, PathBuf), load_delay: Duration) -> MlServer {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&paths.1, dir.path());
        let (http, grpc, metrics) = (free_port(), free_port(), free_port());
        let settings = serde_json::json!({
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "host": "127.0.0.1",
        });
        std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
        let mut command = Command::new(&paths.0);
        command
            .args(["start", "."])
            .current_dir(dir.path())
            .env("ECHO_LOAD_DELAY", load_delay.as_secs_f64().to_string());
        let guard = Guard::spawn(command, true);
        MlServer {
            url: format!("http://127.0.0.1:{http}"),
            metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
            guard,
            _dir: dir,
        }
    }

    /// Starts MLServer and waits until it is live (its models may still be loading). `None`
    /// when it is not configured (a skip).
    pub async fn start(load_delay: Duration) -> Option<MlServer> {
        let paths = mlserver_paths()?;
        Some(
            start_listening(
                "mlserver",
                Duration::from_secs(60),
                || {
                    let s = Self::spawn(&paths, load_delay);
                    let live = format!("{}/v2/health/live", s.url);
                    (s, live)
                },
                |status| status == 200,
                |s| &mut s.guard,
            )
            .await,
        )
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        self.guard.output()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// MLServer as `kserve` and `triton`: live but not ready (400) while `echo` loads, then up;
/// the expected model; real inference; a model unloaded and reloaded at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_through_its_states() {
    let started = Instant::now();
    let Some(server) = MlServer::start(Duration::from_secs(6)).await else {
        return;
    };
    eprintln!("mlserver live after {:?}", started.elapsed());
    let client = crate::inproc::client();
    let url = server.url.clone();

    // Live, not ready while echo sleeps in load(): loading, and the raw answer is MLServer's 400.
    let kserve = Probe::new(probe_config(ProbeKind::Kserve, &url, None));
    let first = kserve.check().await;
    assert_eq!(
        seen(&first),
        (ProbeState::Loading, Some(ProbeReason::NotReady)),
        "{first:?}\n{}",
        server.output()
    );
    let ready = client
        .get(format!("{url}/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 400);
    let triton = check(ProbeKind::Triton, &url, None).await;
    assert_eq!(
        seen(&triton),
        (ProbeState::Loading, Some(ProbeReason::NotReady))
    );
    let (order, _) = observe(
        &kserve,
        Duration::from_millis(100),
        Duration::from_secs(60),
        |s| s.state == ProbeState::Up,
    )
    .await;
    assert_eq!(
        order,
        vec![
            (ProbeState::Loading, Some(ProbeReason::NotReady)),
            (ProbeState::Up, None)
        ]
    );
    eprintln!("mlserver ready after {:?}", started.elapsed());

    // Both kinds, with and without the expected model.
    for kind in [ProbeKind::Kserve, ProbeKind::Triton] {
        for model in ["iris", "echo"] {
            let s = check(kind, &url, Some(model)).await;
            assert_eq!(seen(&s), (ProbeState::Up, None), "{kind:?} {model}: {s:?}");
            assert_eq!(s.models, vec![model.to_owned()]);
        }
        let s = check(kind, &url, Some("nosuch")).await;
        assert_eq!(
            seen(&s),
            (ProbeState::Degraded, Some(ProbeReason::ModelMissing)),
            "{kind:?}: {s:?}"
        );
    }

    // Real inference through the V2 protocol: setosa is class 0; echo reverses.
    let (status, body) = post_json(
        &client,
        &format!("{url}/v2/models/iris/infer"),
        serde_json::json!({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                       "data": [5.1, 3.5, 1.4, 0.2]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], serde_json::json!([0]), "{body}");
    let (status, body) = post_json(
        &client,
        &format!("{url}/v2/models/echo/infer"),
        serde_json::json!({"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                                       "data": ["hello"]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["outputs"][0]["data"],
        serde_json::json!(["olleh"]),
        "{body}"
    );
    let metrics = client
        .get(&server.metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("model_infer_request_success_total{"),
        "{metrics}"
    );

    // gpulse's synthetic request: a v2 infer with the configured input, then a wrong shape
    // (MLServer answers 500 with the sklearn error).
    let mut c = probe_config(ProbeKind::Kserve, &url, Some("iris"));
    c.inference = true;
    c.inference_input = r#"{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#.to_owned();
    c.metrics = true;
    c.metrics_url = server.metrics_url.clone();
    let synthetic = Probe::new(c.clone());
    let s = infer(&synthetic, "iris").await;
    assert!(s.ok && s.ttft.is_some(), "{s:?}");
    c.inference_input =
        r#"{"inputs":[{"name":"input-0","shape":[1,3],"datatype":"FP32","data":[5.1,3.5,1.4]}]}"#
            .to_owned();
    let bad = infer(&Probe::new(c), "iris").await;
    assert_eq!(bad.reason, Some(ProbeReason::HttpStatus), "{bad:?}");
    assert!(
        bad.detail.starts_with("HTTP 500") && bad.detail.contains("features"),
        "{bad:?}"
    );
    // The server's counters, lifted from its metrics port: 2 good iris calls (the one above
    // and the probe's) and the echo one; the wrong shape counted as a failure.
    let lifted = synthetic.scrape(&server.metrics_url).await.unwrap();
    assert_eq!(lifted.dialect, "mlserver", "{lifted:?}");
    assert!(
        lifted.requests_succeeded_total.unwrap() >= 3.0,
        "{lifted:?}"
    );
    assert!(lifted.requests_failed_total.unwrap() >= 1.0, "{lifted:?}");
    let e2e = lifted.e2e_latency.as_ref().unwrap();
    assert!(e2e.count >= 3.0 && e2e.mean().unwrap() > 0.0, "{lifted:?}");

    // Unloaded at run time: the server stays ready (it covers only registered models), so the
    // plain probe stays up and only the expected-model probe sees it.
    let (status, body) = post_json(
        &client,
        &format!("{url}/v2/repository/models/echo/unload"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo = Probe::new(probe_config(ProbeKind::Kserve, &url, Some("echo")));
    assert_eq!(
        seen(&echo.check().await),
        (ProbeState::Degraded, Some(ProbeReason::ModelMissing))
    );
    assert_eq!(seen(&kserve.check().await), (ProbeState::Up, None));

    // Loaded again: load() sleeps again, and while a model loads the whole server is not
    // ready (400), so both probes are loading until it returns.
    let reload = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            post_json(
                &client,
                &format!("{url}/v2/repository/models/echo/load"),
                serde_json::json!({}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for probe in [&echo, &kserve] {
        assert_eq!(
            seen(&probe.check().await),
            (ProbeState::Loading, Some(ProbeReason::NotReady))
        );
    }
    let (status, body) = reload.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (order, _) = observe(
        &echo,
        Duration::from_millis(100),
        Duration::from_secs(10),
        |s| s.state == ProbeState::Up,
    )
    .await;
    assert_eq!(order.last(), Some(&(ProbeState::Up, None)));
}

/// A `gpulse wrap` process; on drop it gets SIGTERM first (forwarded to its child, so the
/// wrapped server does not outlive the test), then SIGKILL.
struct WrapGuard(Guard);

impl Drop for WrapGuard {
    fn drop(&mut self) {
        // Not `signal`: it asserts, and a drop while panicking must not panic again.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &self.0.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.0.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `gpulse wrap -- llama-server … --metrics` with no `[[probe]]` and no probe flag: the auto
/// probe expects the model the command line names, scrapes `/metrics` and sends the synthetic
/// request, so lifted server metrics and a TTFT appear; start-up is `starting`, not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_under_wrap_gets_metrics_and_ttft_with_no_probe_written() {
    let Some(paths) = llama_paths() else {
        return;
    };
    let client = crate::inproc::client();
    let (port, listen) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_gpulse"));
    command
        .args(["wrap", "--listen", &format!("127.0.0.1:{listen}"), "--"])
        .arg(&paths.0)
        .arg("-m")
        .arg(&paths.1)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--metrics", "-c", "512", "-np", "1", "-t", "1"]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GPULSE_") {
            command.env_remove(name);
        }
    }
    command.env("GPULSE_GPU_ENABLED", "false");
    let mut wrap = WrapGuard(Guard::spawn(command, false));
    let url = format!("http://127.0.0.1:{listen}/v1/probes");
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = loop {
        let body = match client.get(&url).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let probe = body["probes"][0].clone();
        let lifted = !probe["server_metrics"]["lifted"].is_null();
        let ttft = probe["inference"]["last"]["ttft_seconds"]
            .as_f64()
            .is_some();
        if lifted && ttft {
            break probe;
        }
        assert!(
            Instant::now() < deadline && !wrap.0.exited(),
            "no lifted metrics and TTFT from the auto probe: {probe}\n{}",
            wrap.0.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(probe["name"], "llamacpp", "{probe}");
    assert_eq!(probe["state"], "up", "{probe}");
    assert_eq!(probe["outages_total"], 0, "{probe}");
    assert_eq!(probe["server_metrics"]["lifted"]["dialect"], "llamacpp");
    assert_eq!(probe["inference"]["last"]["ok"], true, "{probe}");
    // The model id llama-server lists without `-a` is the `-m` path as given.
    assert_eq!(
        probe["inference"]["last"]["model"],
        paths.1.to_string_lossy().as_ref(),
        "{probe}"
    );
    assert_eq!(probe["models"][0], paths.1.to_string_lossy().as_ref());
    drop(wrap);
}
