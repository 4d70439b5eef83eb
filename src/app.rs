//! Wires collectors → store → exporters, runs them until shutdown, then drains with a bound.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::collect::gpu::GpuOptions;
use crate::collect::{XidCount, XidSink, gpu_xid, kmsg, probe, run_collector};
use crate::config::{Config, ConfigError, Loaded, Origins, OtlpSettings, Override};
use crate::demo::gpu_sim::{DEMO_XID_EVERY, SimGpuCollector, simulated_xid};
use crate::evidence::event_log::{self, EventLog};
use crate::evidence::reporter::Reporter;
use crate::evidence::state::StateDb;
use crate::evidence::{outbox, recorder};
use crate::export::ExportStats;
use crate::export::api::{self, ApiState, Credentials, ServeOptions};
use crate::export::otlp::logs::OtlpLogs;
use crate::export::otlp::{AgentIdentity, OtlpPush};
use crate::export::prometheus::{BuildInfo, MetricsRenderer, RenderOptions};
use crate::health;
use crate::mode::{self, ModeInfo};
use crate::model::CollectorStatus;
use crate::notify;
use crate::store::Store;

mod health_task;

/// Where GPU samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuSource {
    /// Real GPUs through NVML.
    Nvml,
    /// `gpulse demo`: this many simulated GPUs.
    Demo { gpus: u32 },
}

/// Everything the agent runs on, loaded and checked before any port is bound.
///
/// Every subcommand (`run`, `demo`, `wrap`, `scan`, `config check`) loads through
/// [`Parts::load`], so they accept and refuse the same configurations with the same one-line
/// error naming the key and where it was set.
#[derive(Debug)]
pub struct Parts {
    pub config: Config,
    /// Where each value came from, for errors found later (`wrap`'s inferred probe).
    pub origins: Origins,
    /// The OTLP push settings; `None` when push is off.
    pub otlp: Option<OtlpSettings>,
    /// The TLS certificate and bearer token, read from their files.
    pub credentials: Arc<Credentials>,
    /// The health policy (`[health]`, Xid overrides included).
    pub policy: health::Policy,
}

impl Parts {
    /// Loads `file` (if any) under `overrides` (environment, then flags), then checks what
    /// only shows after loading: the log filter, the health policy, the OTLP settings (`env`
    /// reads the `OTEL_*` variables), the probes' CA files and the server's TLS and token
    /// files. The first error wins, with its origin placed.
    pub fn load(
        file: Option<&Path>,
        overrides: &[Override],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let Loaded {
            mut config,
            mut origins,
        } = Config::load(file, overrides)?;
        // Read once here, so the resource, /metrics and /v1/snapshot agree for the whole run.
        config.agent.identity = crate::identity::Identity::from_env(&env);
        // systemd's StateDirectory= (the shipped unit) is where state goes unless
        // agent.state_dir (file, GPULSE_AGENT_STATE_DIR) names a directory itself.
        if config.agent.state_dir.is_empty()
            && let Some(dir) = env(STATE_DIRECTORY)
                .as_deref()
                .and_then(first_state_directory)
        {
            config.agent.state_dir = dir;
            origins.set(
                "agent.state_dir",
                format!("{STATE_DIRECTORY} (environment)"),
            );
        }
        let place = |error| origins.place(error);
        // `Config::load` refused unknown level words; this is tracing's own syntax check.
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
            let message = format!("invalid log filter {:?}: {error}", config.log.level);
            return Err(place(ConfigError::at_key("log.level", message)));
        }
        let policy = health::Policy::from_config(&config.health).map_err(place)?;
        let otlp = OtlpSettings::resolve(&config.otlp, &env).map_err(place)?;
        if let Some(settings) = &otlp {
            crate::export::otlp::check_ca_file(settings).map_err(place)?;
        }
        probe::check_files(&config.probe).map_err(place)?;
        crate::export::node_condition::Settings::from_config(&config, &env).map_err(place)?;
        let credentials = Arc::new(Credentials::load_with_env(&config.http, &env).map_err(place)?);
        Ok(Self {
            config,
            origins,
            otlp,
            credentials,
            policy,
        })
    }
}

/// The variable systemd sets to the unit's `StateDirectory=` paths, `:`-separated.
pub const STATE_DIRECTORY: &str = "STATE_DIRECTORY";

/// The first path of a `$STATE_DIRECTORY` value; `None` when it names none.
fn first_state_directory(value: &str) -> Option<String> {
    value
        .split(':')
        .find(|path| !path.is_empty())
        .map(str::to_owned)
}

/// An error that stops the agent (not a collector failure, which is only data).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot start the {0} collector thread: {1}")]
    Thread(&'static str, std::io::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Runs the agent on an already-bound listener until `shutdown` completes.
///
/// `config`, `otlp` and `credentials` come from [`Parts::load`], so that a bad value or file
/// is a config error before the port is bound. `otlp` is `None` when push is off.
pub async fn run(
    config: Config,
    source: GpuSource,
    otlp: Option<OtlpSettings>,
    listener: TcpListener,
    credentials: Arc<Credentials>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    run_with(config, source, otlp, listener, credentials, None, shutdown).await
}

/// The agent's async runtime with `workers` threads (`agent.worker_threads`). It does little
/// async work (blocking NVML and sysinfo calls have their own threads), and every idle worker
/// wakes when another has work to share, so one is the default. One worker is tokio's
/// current-thread scheduler, run by the thread that calls `block_on`: no worker thread to hand
/// each wake-up to, and none of the multi-thread scheduler's work-sharing bookkeeping.
pub fn runtime(workers: std::num::NonZeroUsize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers.get() == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.get())
        .enable_all()
        .build()
}

/// The store for `config`: its collectors, Xid limits, probes and run mode registered
/// (`wrapped`: `gpulse wrap` supervises a child).
pub fn new_store(config: &Config, wrapped: bool) -> Store {
    let mut statuses = Vec::new();
    if config.gpu.enabled {
        statuses.push(CollectorStatus::new("gpu", config.gpu.interval.0));
    }
    if config.host.enabled {
        statuses.push(CollectorStatus::new("host", config.host.interval.0));
    }
    if config.kubernetes.enabled() {
        statuses.push(CollectorStatus::new(
            crate::model::K8S_COLLECTOR,
            config.kubernetes.interval.0,
        ));
    }
    let facts = mode::detect(&config.health.kmsg_path, wrapped);
    Store::new(config.store.window_samples, statuses)
        .with_xid_limits(config.health.xid_dedup_window.0, config.health.max_events)
        .with_probes(config.probe.iter().map(probe::status_for).collect())
        .with_mode(ModeInfo::new(config.agent.mode, facts))
        .with_identity(config.agent.identity.clone())
}

/// [`run`] on a store built beforehand by [`new_store`] from the same config (`gpulse wrap`:
/// the job's supervisor writes into it too); `None` builds it here.
pub async fn run_with(
    mut config: Config,
    source: GpuSource,
    otlp: Option<OtlpSettings>,
    listener: TcpListener,
    credentials: Arc<Credentials>,
    store: Option<Arc<Store>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    // Every HTTP client of the process (probes, OTLP over HTTP) uses ring.
    crate::collect::probe::tls::install_crypto_provider();
    let (stop_tx, stop_rx) = watch::channel(false);
    if let GpuSource::Demo { .. } = source {
        add_demo_probe(&mut config, stop_rx.clone()).await;
    }
    let store = store.unwrap_or_else(|| Arc::new(new_store(&config, false)));
    {
        let info = store.snapshot().mode;
        tracing::info!(
            mode = info.mode.as_str(),
            setting = info.setting_str(),
            wrapped = info.facts.wrapped,
            in_container = info.facts.in_container,
            kmsg_readable = info.facts.kmsg_readable,
            gpu_devices_visible = info.facts.gpu_devices_visible,
            "Run mode."
        );
    }
    let state = open_state(&config).await;
    let reporter = open_reporter(&config, &store, state.clone()).await;
    let mut tasks = JoinSet::new();

    if config.gpu.enabled {
        let interval = config.gpu.interval.0;
        match source {
            GpuSource::Nvml => {
                let options = GpuOptions::from_config(&config.gpu, config.nvml_library());
                // Xid capture: NVML events and the kernel log on their own threads; a source
                // that cannot start logs once and the others go on.
                gpu_xid::start(&options, Arc::clone(&store), stop_rx.clone());
                kmsg::start(
                    &config.health.kmsg_path,
                    Arc::clone(&store),
                    stop_rx.clone(),
                );
                let sink_store = Arc::clone(&store);
                let sink: XidSink = Arc::new(move |event| sink_store.record_xid(event));
                let changes = store.changes();
                let xid_count: XidCount = Arc::new(move || changes.borrow().xids);
                let collector = crate::collect::gpu::start_collector(
                    options,
                    interval,
                    Some(sink),
                    Some(xid_count),
                )
                .map_err(|e| AppError::Thread("gpu", e))?;
                tasks.spawn(collector.run(Arc::clone(&store), stop_rx.clone()));
            }
            GpuSource::Demo { gpus } => {
                let simulated = crate::demo::simulated();
                tracing::info!(gpus, %simulated, "Demo mode: GPUs are simulated.");
                let collector = SimGpuCollector::new(gpus, interval);
                tasks.spawn(inject_demo_xids(Arc::clone(&store), stop_rx.clone()));
                tasks.spawn(run_collector(
                    collector,
                    interval,
                    Arc::clone(&store),
                    stop_rx.clone(),
                ));
            }
        }
    }
    if config.host.enabled {
        let collector = crate::collect::host::start_collector(&config.host)
            .map_err(|e| AppError::Thread("host", e))?;
        tasks.spawn(collector.run(Arc::clone(&store), stop_rx.clone()));
    }

    if config.kubernetes.enabled() {
        let collector = crate::collect::k8s::KubernetesCollector::new(
            config.kubernetes.clone(),
            Arc::clone(&store),
        );
        tasks.spawn(run_collector(
            collector,
            config.kubernetes.interval.0,
            Arc::clone(&store),
            stop_rx.clone(),
        ));
    }

    // One task per probe: a hung target only delays its own next check.
    for (index, probe) in config.probe.iter().enumerate() {
        tasks.spawn(probe::run_probe(
            index,
            probe.clone(),
            Arc::clone(&store),
            stop_rx.clone(),
        ));
    }

    match crate::health::Policy::from_config(&config.health) {
        Ok(policy) => {
            if config.score.enabled {
                tasks.spawn(crate::evidence::ledger::keeper::run(
                    config.clone(),
                    Arc::clone(&store),
                    policy.clone(),
                    state.clone(),
                    stop_rx.clone(),
                ));
            }
            tasks.spawn(health_task::run(
                Arc::clone(&store),
                policy,
                config.health.idle_interval.0,
                stop_rx.clone(),
            ));
        }
        // Parts::load validated it; only an unvalidated Config gets here.
        Err(error) => tracing::error!(error = %error, "Health evaluation off."),
    }

    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        gpu_source: match source {
            GpuSource::Nvml => "nvml",
            GpuSource::Demo { .. } => "demo",
        },
    };
    let node_name = config.node_name();
    let options = RenderOptions {
        dcgm_compat: config.prometheus.dcgm_compat,
        hostname: node_name.clone(),
        dcgm_hostname_label: config.prometheus.dcgm_hostname_label,
    };
    let stats = Arc::new(ExportStats::default());
    let identity = AgentIdentity {
        node_name: node_name.clone(),
        host_id: otlp
            .as_ref()
            .and_then(|_| crate::export::otlp::machine_id()),
        // The lease's attributes first: a label the user set under `[agent] labels`
        // wins over the environment.
        labels: config
            .agent
            .identity
            .attributes()
            .into_iter()
            .map(|a| (a.otel.to_owned(), a.value.to_owned()))
            .chain(config.agent.labels.clone())
            .collect(),
        gpu_source: build.gpu_source,
    };
    let logs = match &otlp {
        Some(settings) if config.events.export => {
            let mode = store.snapshot().mode.mode.as_str();
            match OtlpLogs::start(settings, &identity, mode, Arc::clone(&stats)) {
                Ok(logs) => {
                    tracing::info!(endpoint = %settings.logs_endpoint, "OTLP log export of events on.");
                    Some(logs)
                }
                Err(error) => {
                    tracing::error!(error = %error, "OTLP log export of events off.");
                    None
                }
            }
        }
        _ => None,
    };
    let event_log = open_event_log(&config, state, logs.is_some(), &store, &node_name).await;
    tasks.spawn(recorder::run(
        event_log.clone(),
        Arc::clone(&store),
        recorder::Settings {
            interval: config.events.interval.0,
            policy: health::Policy::from_config(&config.health).unwrap_or_default(),
            xid_wait: config.health.xid_dedup_window.0,
        },
        stop_rx.clone(),
    ));
    if let Some(logs) = logs {
        let drain = config.agent.shutdown_grace_period.0 / 2;
        tasks.spawn(outbox::run(
            event_log.clone(),
            logs,
            outbox::Settings::from_config(&config.events, drain),
            stop_rx.clone(),
        ));
    }
    let push = otlp.and_then(|settings| {
        match OtlpPush::start(&settings, &identity, Arc::clone(&store), Arc::clone(&stats)) {
            Ok(push) => {
                tracing::info!(
                    endpoint = %settings.endpoint,
                    protocol = ?settings.protocol,
                    interval = ?settings.interval,
                    "OTLP push on."
                );
                Some(push)
            }
            Err(error) => {
                tracing::error!(error = %error, "OTLP push off.");
                None
            }
        }
    });
    let reports = match reporter {
        Some(reporter) => {
            tasks.spawn(crate::evidence::reporter::run(
                Arc::clone(&reporter),
                config.report.interval.0,
                config.score.tick.0,
                stop_rx.clone(),
            ));
            let service: Arc<dyn api::report::ReportService> = reporter;
            Some(service)
        }
        None => None,
    };
    let state = ApiState {
        metrics: MetricsRenderer::new(Arc::clone(&store), build, options, Arc::clone(&stats)),
        store: Arc::clone(&store),
        node: Arc::from(node_name),
        score_enabled: config.score.enabled,
        ready_grace: config.gpu.ready_grace.0,
        reports,
        events: Some(Arc::new(event_log)),
        token_required: credentials.has_token(),
    };
    if credentials.is_reloadable() {
        // Installed here, before the server starts, so a SIGHUP sent to a serving agent is
        // never the default action (terminate).
        let hangup = hangup_signal();
        tasks.spawn(reload_credentials(
            Arc::clone(&credentials),
            config.http.reload_interval.0,
            hangup,
            stop_rx.clone(),
        ));
    }
    let app = api::router(state, &config.http, &credentials);
    let options = ServeOptions::new(&config.http, &credentials);
    let mut server_stop = stop_rx.clone();
    let local = listener.local_addr().ok();
    let server = tokio::spawn(api::serve(listener, app, options, async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));
    // Checked by `Parts::load`; read again here (the environment has not changed).
    if let Ok(Some(settings)) =
        crate::export::node_condition::Settings::from_config(&config, |name| {
            std::env::var(name).ok()
        })
    {
        let (store, stats) = (Arc::clone(&store), Arc::clone(&stats));
        tasks.spawn(crate::export::node_condition::run(
            settings,
            store,
            stats,
            stop_rx.clone(),
        ));
    }
    // Under systemd (Type=notify): the listener is bound, so a client is served from now on.
    notify::ready(local);
    tasks.spawn(notify::watchdog(
        Arc::clone(&store),
        notify::loops(&config),
        stop_rx.clone(),
    ));

    shutdown.await;
    tracing::info!("Shutting down.");
    notify::stopping();
    let _ = stop_tx.send(true);
    let grace = config.agent.shutdown_grace_period.0;
    let drained = tokio::time::timeout(grace, async {
        if let Some(push) = push {
            // The SDK's shutdown blocks (a last push, bounded by the OTLP timeout).
            if let Ok(Err(error)) = tokio::task::spawn_blocking(move || push.shutdown()).await {
                tracing::debug!(error = %error, "Last OTLP push failed.");
            }
        }
        while tasks.join_next().await.is_some() {}
        server.await
    })
    .await;
    match drained {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(AppError::Http(error)),
        Ok(Err(_join)) => Ok(()),
        Err(_) => {
            tracing::warn!(grace = ?grace, "Shutdown grace period elapsed; exiting with work in flight.");
            Ok(())
        }
    }
}

/// Opens the state store in `agent.state_dir` (off the async workers); `None`, with one
/// warning, when the directory is unset or unusable: what would be kept there is then kept in
/// memory and starts over at each restart.
async fn open_state(config: &Config) -> Option<StateDb> {
    if config.agent.state_dir.is_empty() {
        tracing::warn!(
            "agent.state_dir is not set: the score's evidence and the event log are kept in memory and start over at each restart."
        );
        return None;
    }
    let dir = std::path::PathBuf::from(&config.agent.state_dir);
    match tokio::task::spawn_blocking(move || StateDb::open(&dir)).await {
        Ok(Ok(state)) => Some(state),
        Ok(Err(error)) => {
            tracing::warn!(error = %error,
                "Cannot keep state in agent.state_dir; the score's evidence and the event log are kept in memory and start over at each restart.");
            None
        }
        Err(_) => None,
    }
}

/// Loads the report signing key and reads the report chain back (off the async workers);
/// `None` with `report.enabled = false`.
async fn open_reporter(
    config: &Config,
    store: &Arc<Store>,
    state: Option<StateDb>,
) -> Option<Arc<Reporter>> {
    if !config.report.enabled {
        return None;
    }
    let config = config.clone();
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        Arc::new(Reporter::open(&config, store, state, SystemTime::now()))
    })
    .await
    .ok()
}

/// Opens the event log in the state store (off the async workers), else in memory (when the
/// store is missing, or its tables cannot be read: one warning).
async fn open_event_log(
    config: &Config,
    state: Option<StateDb>,
    outbox: bool,
    store: &Arc<Store>,
    node: &str,
) -> EventLog {
    let memory = || {
        let limits = event_log::Limits::from_config(&config.events, false);
        EventLog::memory(limits, node, outbox, Some(Arc::clone(store)))
    };
    let Some(disk) = state else {
        return memory();
    };
    let limits = event_log::Limits::from_config(&config.events, true);
    let (node_owned, store_owned) = (node.to_owned(), Arc::clone(store));
    let opened = tokio::task::spawn_blocking(move || {
        EventLog::open(Some(disk), limits, &node_owned, outbox, Some(store_owned))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    opened.unwrap_or_else(|error| {
        tracing::warn!(error = %error,
            "Cannot read the event log in agent.state_dir; events are kept in memory and start over at each restart.");
        memory()
    })
}

/// The price `gpulse demo` uses unless `score.price_per_hour` is set.
pub const DEMO_PRICE_PER_HOUR: f64 = 2.0;

/// `gpulse demo`: starts the simulated inference server and probes it (`demo-llm`), so the
/// probe panels have data, and sets a price so cost appears. A failure to start it is logged
/// and the demo goes on without it.
async fn add_demo_probe(config: &mut Config, stop: watch::Receiver<bool>) {
    use crate::config::{ProbeConfig, ProbeKind};
    use crate::demo::server as demo_server;
    match demo_server::start(stop).await {
        Ok(addr) => {
            let mut probe =
                ProbeConfig::new("demo-llm", ProbeKind::Vllm, &format!("http://{addr}"));
            probe.expected_model = Some(demo_server::DEMO_MODEL.to_owned());
            // Synthetic requests every 5 s: 4 tokens, so tokens/s and both histograms move.
            probe.inference = true;
            probe.inference_interval = crate::config::HumanDuration::secs(5);
            probe.inference_max_tokens = 4;
            probe.ttft_slo = crate::config::HumanDuration(std::time::Duration::from_millis(80));
            // Its vLLM-style /metrics: queue, KV cache, tokens, TTFT.
            probe.metrics = true;
            probe.metrics_interval = crate::config::HumanDuration::secs(5);
            tracing::info!(%addr, "Demo mode: probing a simulated inference server.");
            config.probe.push(probe);
            // A price, so the score has a cost beside it (a rented H100's order of magnitude).
            if config.score.price().is_none() {
                config.score.price_per_hour = DEMO_PRICE_PER_HOUR;
                tracing::info!(
                    price_per_hour = DEMO_PRICE_PER_HOUR,
                    currency = %config.score.currency,
                    "Demo mode: simulated price for cost per inference (score.price_per_hour)."
                );
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "Demo mode: cannot start the simulated inference server.")
        }
    }
}

/// `gpulse demo`: records a simulated Xid every [`DEMO_XID_EVERY`], so the Xid panels have
/// data.
async fn inject_demo_xids(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(DEMO_XID_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate; start one period in.
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let snap = store.snapshot();
        if let Some(event) = snap.gpu.as_deref().and_then(|gpu| simulated_xid(n, gpu)) {
            tracing::info!(
                gpu = event.gpu_index,
                xid = event.xid,
                "Demo mode: simulated Xid."
            );
            store.record_xid(event);
            n += 1;
        }
    }
}

/// Reloads the TLS certificate and bearer token on SIGHUP (always) and every `interval` when
/// a file changed, until `stop`. Failures are logged by the reload and change nothing.
async fn reload_credentials(
    credentials: Arc<Credentials>,
    interval: Duration,
    mut hangup: Hangup,
    mut stop: watch::Receiver<bool>,
) {
    let mut poll = tokio::time::interval(interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await; // The first tick is immediate; the files were just loaded.
    loop {
        let force = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = poll.tick() => false,
            () = next_signal(&mut hangup) => {
                tracing::info!("SIGHUP: reloading the TLS certificate and bearer token.");
                true
            }
        };
        // Reading files can block (a hung network mount): keep it off the async workers.
        let credentials = Arc::clone(&credentials);
        let _ = tokio::task::spawn_blocking(move || credentials.reload(force)).await;
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(error = %error, "Cannot listen for SIGHUP; reloading on file changes only.");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// Completes on the next SIGHUP; never when there is no signal to wait for.
#[cfg(unix)]
async fn next_signal(hangup: &mut Hangup) {
    let received = match hangup {
        Some(signal) => signal.recv().await.is_some(),
        None => false,
    };
    if !received {
        // No handler, or the stream ended: never complete.
        *hangup = None;
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_signal(_hangup: &mut Hangup) {
    std::future::pending().await
}

/// Completes on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Default demo size: enough GPUs to make dashboards look like a real node.
pub const DEMO_GPUS: u32 = 4;
