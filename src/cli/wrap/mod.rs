//! `gpulse wrap [--config FILE] -- CMD ARGS…`: runs CMD as a child and the agent beside it, in
//! the same container, so the agent sees the GPU the workload rents (embedded mode).
//!
//! Order and failure rules:
//!
//! 1. The config is loaded first. If it is invalid, gpulse says so on stderr and `exec`s CMD in
//!    its place: the workload runs as if gpulse were not there.
//! 2. Signal handlers are installed, then the child is spawned ([`supervise::spawn`]). A command that
//!    cannot be started exits 127 (not found) or 126 (not executable), as a shell does.
//! 3. The state file (`agent.state_dir`) is read back, bounded in time, to number this run and
//!    count restarts; a run whose end was never recorded is finished as `unknown`.
//! 4. The agent starts on the shared store. If it cannot (the port is taken, …) the error is
//!    logged and the child runs on without it.
//! 5. Only the child's exit ends `wrap` ([`supervise::supervise`]); the agent then stops within
//!    `agent.shutdown_grace_period` (one last OTLP push included), the state file is flushed,
//!    and gpulse exits with the child's code (128 + the signal when it was killed by one).

//!
//! `auto_probe` infers the child's probe from its command line; `supervise` owns the child
//! process (spawn, signals, reaping, job events).

mod auto_probe;
pub mod supervise;

pub use auto_probe::infer_probe;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::supervise::{JobSink, Signals, Supervision};
use super::{exit, say};
use crate::app::{self, GpuSource, Parts};
use crate::config::OtlpSettings;
use crate::config::{Config, ConfigError, ProbeConfig, ProbeKind, Readiness};
use crate::evidence::journal::{self, Restored, StateWriter};
use crate::export::api::Credentials;
use crate::model::JobEvent;

/// How long reading the state file back may take before the run goes on without it.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `--no-auto-probe`, `--no-auto-metrics`, `--no-auto-inference`, `--probe-kind`,
/// `--probe-url`.
#[derive(Debug, Clone, Default)]
pub struct ProbeFlags {
    pub no_auto_probe: bool,
    pub no_auto_metrics: bool,
    pub no_auto_inference: bool,
    pub kind: Option<ProbeKind>,
    pub url: Option<String>,
}

/// Parses a probe kind (`vllm`, `tgi`, …) as the config file does.
pub fn parse_probe_kind(text: &str) -> Result<ProbeKind, String> {
    toml::Value::String(text.to_owned())
        .try_into::<ProbeKind>()
        .map_err(|_| format!("unknown probe kind {text:?} ({})", ProbeKind::names()))
}

/// The probe `wrap` adds for its child, and the name of the probe whose first `up` makes the
/// child ready.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildProbe {
    /// To add to the config; `None` when a configured `[[probe]]` of that name wins, or there
    /// is nothing to add.
    pub add: Option<ProbeConfig>,
    /// The readiness probe: the child's (added or configured under its name), else the first
    /// configured probe.
    pub ready: Option<String>,
}

/// Decides the child's probe (pure): flags first, then the command line (`wrap.auto_probe`),
/// then a configured probe of the same name wins over the inferred one.
pub fn child_probe(
    argv: &[String],
    env: impl Fn(&str) -> Option<String>,
    config: &Config,
    flags: &ProbeFlags,
) -> Result<ChildProbe, ConfigError> {
    let inferred = if flags.no_auto_probe || !config.wrap.auto_probe && flags.kind.is_none() {
        None
    } else {
        infer_probe(argv, env)
    };
    let chosen = match (flags.kind, &flags.url, inferred) {
        (None, None, inferred) => inferred,
        (kind, url, inferred) => {
            let kind = kind
                .or(inferred.as_ref().map(|p| p.kind))
                .unwrap_or(ProbeKind::Http);
            let url = match (url, inferred) {
                (Some(url), _) => url.clone(),
                // A tcp probe of the inferred server connects to its host:port.
                (None, Some(p)) if kind.caps().readiness == Readiness::Connect => p
                    .url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned(),
                (None, Some(p)) => p.url,
                (None, None) => {
                    return Err(ConfigError {
                        key: None,
                        origin: "--probe-kind (flag)".to_owned(),
                        message: "the command line tells no port; add --probe-url".to_owned(),
                    });
                }
            };
            Some(ProbeConfig::new(kind.as_str(), kind, &url))
        }
    };
    let Some(mut probe) = chosen else {
        return Ok(ChildProbe {
            add: None,
            ready: config.probe.first().map(|p| p.name.clone()),
        });
    };
    probe.interval = config.wrap.probe_interval;
    // What the command line turned on (scrapes, the synthetic request) stays on unless the
    // config or a flag says otherwise.
    if !config.wrap.auto_metrics || flags.no_auto_metrics {
        probe.metrics = false;
        probe.metrics_url.clear();
    }
    if !config.wrap.auto_inference || flags.no_auto_inference {
        probe.inference = false;
    }
    let ready = Some(probe.name.clone());
    if config.probe.iter().any(|p| p.name == probe.name) {
        return Ok(ChildProbe { add: None, ready });
    }
    Ok(ChildProbe {
        add: Some(probe),
        ready,
    })
}

/// Checks `--probe-url` as the probe it makes, before anything starts. A malformed flag is a
/// usage error (exit 2, the command not run), like an unknown flag or `--probe-kind nope`
/// (refused by clap): it is fixed on the first try at the terminal. Only an invalid *config*
/// (file, environment), which can change under a running deployment, runs the command
/// without the agent. The kind is the one the probe would get (the flag's, else the inferred
/// one, else http): it decides whether the URL must be http(s) or host:port.
pub fn check_flags(flags: &ProbeFlags, command: &[OsString]) -> Result<(), ConfigError> {
    if flags.url.is_none() {
        return Ok(());
    }
    let argv: Vec<String> = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let defaults = Config::default();
    let Ok(ChildProbe {
        add: Some(probe), ..
    }) = child_probe(&argv, |n| std::env::var(n).ok(), &defaults, flags)
    else {
        return Ok(());
    };
    let mut config = defaults;
    config.probe.push(probe);
    config.validate().map_err(|error| ConfigError {
        key: None,
        origin: "--probe-url (flag)".to_owned(),
        message: error.message,
    })
}

/// Runs `command` under supervision with the agent beside it; `agent` is `None` when the
/// config could not be loaded (the command then replaces gpulse).
pub fn run(
    agent: Result<Parts, ConfigError>,
    flags: &ProbeFlags,
    command: Vec<OsString>,
) -> ExitCode {
    let agent = match agent {
        Ok(agent) => agent,
        Err(error) => {
            say(error);
            say("running the command without the agent");
            return ExitCode::from(exec(&command));
        }
    };
    let runtime = match app::runtime(agent.config.agent.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            say(format_args!(
                "cannot start the async runtime ({error}); running the command without the agent"
            ));
            return ExitCode::from(exec(&command));
        }
    };
    let code = runtime.block_on(run_wrapped(agent, flags, command));
    // Probe and push tasks may still hold the runtime; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// Replaces gpulse with `command`; returns (an exit code) only when that fails.
fn exec(command: &[OsString]) -> u8 {
    let Some((program, args)) = command.split_first() else {
        return exit::USAGE;
    };
    let error = std::process::Command::new(program).args(args).exec();
    say(format_args!(
        "cannot run {}: {error}",
        program.to_string_lossy()
    ));
    spawn_error_code(&error)
}

/// A shell's exit code for a command it could not start.
fn spawn_error_code(error: &std::io::Error) -> u8 {
    match error.kind() {
        std::io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    }
}

async fn run_wrapped(agent: Parts, flags: &ProbeFlags, command: Vec<OsString>) -> i32 {
    let Parts {
        mut config,
        mut origins,
        otlp,
        credentials,
        ..
    } = agent;
    let grace = config.agent.shutdown_grace_period.0;
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            say(format_args!(
                "cannot install signal handlers ({error}); running the command without the agent"
            ));
            return i32::from(exec(&command));
        }
    };
    let spawned = match supervise::spawn(&command) {
        Ok(spawned) => spawned,
        Err(error) => {
            let program = command.first().map(|p| p.to_string_lossy().into_owned());
            say(format_args!(
                "cannot start {}: {error}",
                program.unwrap_or_default()
            ));
            return i32::from(spawn_error_code(&error));
        }
    };
    tracing::info!(pid = spawned.pid, program = %spawned.program, "Started the command.");

    let argv: Vec<String> = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let child_probe = match child_probe(&argv, |n| std::env::var(n).ok(), &config, flags) {
        Ok(probe) => probe,
        Err(error) => {
            tracing::error!(error = %error, "No probe for the command.");
            ChildProbe {
                add: None,
                ready: None,
            }
        }
    };
    if let Some(probe) = child_probe.add.clone() {
        tracing::info!(probe = %probe.name, kind = probe.kind.as_str(), url = %probe.url, "Probing the command's server.");
        // Its keys come from the command line (or --probe-* flags): errors say so.
        origins.set(
            format!("probe[{}]", config.probe.len()),
            "the wrapped command line",
        );
        config.probe.push(probe);
        if let Err(error) = config.validate().map_err(|e| origins.place(e)) {
            tracing::error!(error = %error, "The inferred probe is invalid; not probing it.");
            config.probe.pop();
        }
    }

    let state_dir =
        (!config.agent.state_dir.is_empty()).then(|| PathBuf::from(&config.agent.state_dir));
    let max_events = config.wrap.max_events.get();
    let restored = match &state_dir {
        Some(dir) => restore(dir.clone(), max_events, config.wrap.state_max_bytes).await,
        None => Restored::default(),
    };
    let store = Arc::new(app::new_store(&config, true).with_job(restored.log.clone(), max_events));
    // The readiness probe is `starting` from the child's start, not from its first check,
    // so time-to-ready and the start-up window count from when the command really began.
    if let Some(name) = &child_probe.ready {
        store.probe_target_started(name, spawned.started_at);
    }
    let writer = state_dir.and_then(|dir| match StateWriter::start(dir, config.wrap.state_max_bytes) {
        Ok(writer) => Some(writer),
        Err(error) => {
            tracing::warn!(error = %error, "Cannot start the job state writer; job events are kept in memory only.");
            None
        }
    });
    let writer = Arc::new(Mutex::new(writer));
    let sink: JobSink = {
        let store = Arc::clone(&store);
        let writer = Arc::clone(&writer);
        Arc::new(move |event: JobEvent| {
            if let Some(totals) = store.record_job(event.clone()) {
                let writer = writer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(writer) = writer.as_ref() {
                    writer.write(&event, &totals);
                }
            }
        })
    };
    if let Some(end) = restored.unfinished {
        tracing::warn!(
            run = end.run,
            "The previous run's end was never recorded; counting it as unknown."
        );
        sink(JobEvent::Finished(end));
    }
    let (run, previous_end) = {
        let snap = store.snapshot();
        let job = snap.job.as_deref();
        (
            job.map_or(0, |j| j.totals.starts) + 1,
            job.and_then(|j| j.last_end.as_ref()).map(|e| e.at),
        )
    };

    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = start_agent(config, otlp, credentials, Arc::clone(&store), async move {
        let _ = agent_stopped.await;
    })
    .await;

    let ready = child_probe.ready.map(|name| {
        Box::pin(supervise::ready_when_probe_up(
            Arc::clone(&store),
            name,
            spawned.started_at,
        )) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
    });
    let supervision = Supervision {
        run,
        grace,
        previous_end,
        ready,
    };
    let end = supervise::supervise(&spawned, &mut signals, supervision, &sink).await;
    let code = end.exit.map_or(1, |e| e.exit_code());
    tracing::info!(
        run,
        outcome = end.outcome.as_str(),
        exit_code = code,
        duration = ?end.duration.unwrap_or_default(),
        "The command ended."
    );

    let _ = stop_agent.send(());
    if let Some(agent) = agent {
        match tokio::time::timeout(grace + Duration::from_secs(1), agent).await {
            Ok(Ok(Err(error))) => {
                tracing::warn!(error = %error, "The agent stopped with an error.")
            }
            Err(_) => tracing::warn!("The agent did not stop in time."),
            _ => {}
        }
    }
    let writer = writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(writer) = writer {
        let flushed = tokio::task::spawn_blocking(move || writer.finish(grace)).await;
        if !matches!(flushed, Ok(true)) {
            tracing::warn!("The job state file may miss the last events.");
        }
    }
    code
}

/// Reads the state file back on a blocking thread, giving up after [`RESTORE_TIMEOUT`]. At
/// most `max_bytes` (the file's own bound) are read; lines that do not decode are skipped
/// one by one, never the whole file.
async fn restore(dir: PathBuf, max_events: usize, max_bytes: u64) -> Restored {
    let shown = dir.display().to_string();
    let read = tokio::task::spawn_blocking(move || journal::read(&dir, max_bytes));
    match tokio::time::timeout(RESTORE_TIMEOUT, read).await {
        Ok(Ok(Ok(bytes))) => {
            let restored = journal::restore(&bytes, max_events);
            if restored.skipped > 0 {
                tracing::warn!(dir = %shown, lines = restored.skipped, "Skipped unreadable lines of the job state file.");
            }
            restored
        }
        Ok(Ok(Err(error))) => {
            tracing::warn!(dir = %shown, error = %error, "Cannot read the job state file; counting from this run.");
            Restored::default()
        }
        _ => {
            tracing::warn!(dir = %shown, "Reading the job state file timed out; counting from this run.");
            Restored::default()
        }
    }
}

/// Binds and starts the agent on `store`; `None` (logged) when it cannot start.
async fn start_agent(
    config: Config,
    otlp: Option<OtlpSettings>,
    credentials: Arc<Credentials>,
    store: Arc<crate::store::Store>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<Result<(), app::AppError>>> {
    let listener = match crate::export::api::bind(config.http.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listen = %config.http.listen, error = %error, "Cannot listen; the command runs on without the agent.");
            return None;
        }
    };
    let local = listener.local_addr().unwrap_or(config.http.listen);
    let url = crate::export::api::open_url(local, credentials.is_tls());
    tracing::info!(
        listen = %local,
        url = %url,
        version = env!("CARGO_PKG_VERSION"),
        "gpulse started (wrap); open {url}"
    );
    Some(tokio::spawn(app::run_with(
        config,
        GpuSource::Nvml,
        otlp,
        listener,
        credentials,
        Some(store),
        shutdown,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn argv(cmd: &str) -> Vec<String> {
        cmd.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_inferred_probe_is_added_with_the_wrap_interval() {
        let mut config = Config::default();
        config.wrap.probe_interval = HumanDuration(Duration::from_millis(300));
        let p = child_probe(
            &argv("vllm serve m"),
            |_| None,
            &config,
            &ProbeFlags::default(),
        )
        .unwrap();
        let added = p.add.unwrap();
        assert_eq!(
            (added.name.as_str(), added.url.as_str()),
            ("vllm", "http://127.0.0.1:8000")
        );
        assert_eq!(added.interval, config.wrap.probe_interval);
        assert_eq!(p.ready.as_deref(), Some("vllm"));
    }

    #[test]
    fn a_configured_probe_of_the_same_name_wins() {
        let mut config = Config::default();
        config
            .probe
            .push(ProbeConfig::new("other", ProbeKind::Tcp, "127.0.0.1:1"));
        config.probe.push(ProbeConfig::new(
            "vllm",
            ProbeKind::Vllm,
            "http://10.0.0.1:9",
        ));
        let p = child_probe(
            &argv("vllm serve m"),
            |_| None,
            &config,
            &ProbeFlags::default(),
        )
        .unwrap();
        assert_eq!(p.add, None);
        assert_eq!(p.ready.as_deref(), Some("vllm"));
        // Nothing inferred: the first configured probe is the readiness probe.
        let p = child_probe(&argv("sleep 1"), |_| None, &config, &ProbeFlags::default()).unwrap();
        assert_eq!((p.add, p.ready.as_deref()), (None, Some("other")));
    }

    #[test]
    fn flags_override_or_turn_it_off() {
        let config = Config::default();
        let off = ProbeFlags {
            no_auto_probe: true,
            ..ProbeFlags::default()
        };
        let p = child_probe(&argv("vllm serve m"), |_| None, &config, &off).unwrap();
        assert_eq!((p.add, p.ready), (None, None));
        let url_only = ProbeFlags {
            url: Some("http://127.0.0.1:7000/health".to_owned()),
            ..ProbeFlags::default()
        };
        let p = child_probe(&argv("sleep 100"), |_| None, &config, &url_only).unwrap();
        let added = p.add.unwrap();
        assert_eq!(
            (added.kind, added.url.as_str()),
            (ProbeKind::Http, "http://127.0.0.1:7000/health")
        );
        let kind_only = ProbeFlags {
            kind: Some(ProbeKind::Openai),
            ..ProbeFlags::default()
        };
        let p = child_probe(
            &argv("vllm serve m --port 8100"),
            |_| None,
            &config,
            &kind_only,
        )
        .unwrap();
        let added = p.add.unwrap();
        assert_eq!(
            (added.name.as_str(), added.url.as_str()),
            ("openai", "http://127.0.0.1:8100")
        );
        let tcp = ProbeFlags {
            kind: Some(ProbeKind::Tcp),
            ..ProbeFlags::default()
        };
        let p = child_probe(&argv("llama-server -m x"), |_| None, &config, &tcp).unwrap();
        assert_eq!(p.add.unwrap().url, "127.0.0.1:8080");
        let err = child_probe(&argv("sleep 1"), |_| None, &config, &kind_only).unwrap_err();
        assert!(err.message.contains("--probe-url"), "{err}");
        // wrap.auto_probe = false turns inference off, not explicit flags.
        let mut no_auto = Config::default();
        no_auto.wrap.auto_probe = false;
        let p = child_probe(
            &argv("vllm serve m"),
            |_| None,
            &no_auto,
            &ProbeFlags::default(),
        )
        .unwrap();
        assert_eq!(p.add, None);
        let p = child_probe(&argv("sleep 1"), |_| None, &no_auto, &url_only).unwrap();
        assert!(p.add.is_some());
    }

    #[test]
    fn metrics_and_inference_are_on_unless_config_or_flags_turn_them_off() {
        let cmd = argv("llama-server -m m.gguf --metrics");
        let on = |config: &Config, flags: &ProbeFlags| {
            let p = child_probe(&cmd, |_| None, config, flags)
                .unwrap()
                .add
                .unwrap();
            (p.metrics, p.inference, p.expected_model)
        };
        let model = Some("m.gguf".to_owned());
        let defaults = Config::default();
        assert_eq!(
            on(&defaults, &ProbeFlags::default()),
            (true, true, model.clone())
        );
        let mut config = Config::default();
        config.wrap.auto_metrics = false;
        assert_eq!(
            on(&config, &ProbeFlags::default()),
            (false, true, model.clone())
        );
        config.wrap.auto_inference = false;
        assert_eq!(
            on(&config, &ProbeFlags::default()),
            (false, false, model.clone())
        );
        let no_metrics = ProbeFlags {
            no_auto_metrics: true,
            ..ProbeFlags::default()
        };
        assert_eq!(on(&defaults, &no_metrics), (false, true, model.clone()));
        let no_inference = ProbeFlags {
            no_auto_inference: true,
            ..ProbeFlags::default()
        };
        assert_eq!(on(&defaults, &no_inference), (true, false, model));
    }

    #[test]
    fn probe_kinds_parse_like_the_config() {
        assert_eq!(parse_probe_kind("tgi"), Ok(ProbeKind::Tgi));
        assert!(
            parse_probe_kind("nope")
                .unwrap_err()
                .contains("unknown probe kind")
        );
    }
}
