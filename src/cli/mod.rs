//! Command-line interface: flags (clap), logging, and dispatch to the subcommands.
//!
//! Exit codes are in `exit` (0 success, 1 runtime failure such as a taken port, 2 usage or
//! config error, 3 unhealthy for `scan`). Every subcommand loads through
//! [`crate::app::Parts::load`], so config is fully loaded and validated before any port is
//! bound.
//!
//! * `bench`: `gpulse bench`, a short, bounded load test against an inference server.
//! * `exit`: every exit code.
//! * `health`: `gpulse health clear`, an operator's clear of sticky health reasons.
//! * `scan`: `gpulse scan`, one sample and one health verdict.
//! * `verify`: `gpulse verify`, a signed score report checked offline.
//! * `wrap`: `gpulse wrap -- CMD`, the agent beside a child it supervises.

pub mod bench;
pub mod exit;
pub mod health;
pub mod scan;
pub mod verify;
pub mod wrap;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{self, DEMO_GPUS, GpuSource, Parts};
use crate::config::{self, Config, ConfigError, LogFormat, Override, ProbeKind};
use wrap::ProbeFlags;

#[derive(Debug, Parser)]
#[command(
    name = "gpulse",
    version,
    about = "On-node GPU agent: NVML + host sampling, Prometheus /metrics and a JSON API.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default when no command is given).
    Run(RunArgs),
    /// Run the agent with simulated GPUs, so every metric is visible without a GPU.
    Demo {
        /// Number of simulated GPUs.
        #[arg(long, default_value_t = DEMO_GPUS, value_parser = clap::value_parser!(u32).range(1..=64))]
        gpus: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A short, bounded load test against an inference server (a configured probe, or
    /// --url and --kind): concurrency steps, tokens/s, TTFT and inter-token percentiles, the
    /// highest concurrency within the SLOs and the cost per 1M tokens there. Exits 0 when it
    /// completed, 1 when every request failed, 2 on a usage or config error.
    Bench(bench::BenchArgs),
    /// Sample the GPUs and the host once, evaluate health, print it and exit: 0 healthy,
    /// 1 degraded (or no GPU), 3 unhealthy, 2 usage or config error.
    Scan {
        /// Print `gpulse.health/v1` JSON instead of a table (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Output and exit codes: `table` (default), `json`, `npd` (node-problem-detector's
        /// custom plugin: exit 0 OK, 1 problem, 2 unknown; one line of at most 80 bytes) or
        /// `nagios` (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; with perfdata).
        #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
        format: ScanFormat,
        /// Exit 0 when no GPU can be read (no NVML, no driver) instead of 1.
        #[arg(long)]
        allow_no_gpu: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Act on a running agent's GPU health (`gpulse health clear GPU|all`).
    #[command(subcommand)]
    Health(health::HealthCommand),
    /// Check a signed score report offline: its signature (against --pubkey, or the key it
    /// embeds: integrity only), the nonce sent (--nonce) and the hash chain (--chain). Exits 0
    /// valid, 1 invalid (the reason on one line), 2 on a usage error or an unreadable file.
    Verify(verify::VerifyArgs),
    /// Run CMD as a child with the agent beside it, inside the workload's container:
    /// signals are forwarded, the exit code is passed through, every run is recorded, and a
    /// probe is configured from the command line. `gpulse wrap [FLAGS] -- CMD [ARGS...]`
    Wrap {
        #[command(flatten)]
        run: RunArgs,
        /// Do not configure a probe from the command line (as wrap.auto_probe = false).
        #[arg(long, conflicts_with_all = ["probe_kind", "probe_url"])]
        no_auto_probe: bool,
        /// The auto probe does not scrape the server's /metrics (as wrap.auto_metrics = false).
        #[arg(long)]
        no_auto_metrics: bool,
        /// The auto probe sends no synthetic request (as wrap.auto_inference = false).
        #[arg(long)]
        no_auto_inference: bool,
        /// Kind of the child's probe (vllm, tgi, triton, kserve, sglang, ollama, llamacpp,
        /// openai, http, tcp), overriding the one inferred from the command line.
        #[arg(long, value_name = "KIND", value_parser = wrap::parse_probe_kind)]
        probe_kind: Option<ProbeKind>,
        /// URL of the child's probe (http://host:port[/base]), overriding the inferred one.
        #[arg(long, value_name = "URL")]
        probe_url: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with GPULSE_* environment overrides applied).
    Check { file: PathBuf },
    /// Print a fully commented example config holding every default.
    Example,
}

/// Flags shared by `run` and `demo`; each overrides the file and the environment.
#[derive(Debug, Args, Clone, Default)]
struct RunArgs {
    /// TOML config file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for /metrics and the API (overrides http.listen): IP:PORT, HOST:PORT,
    /// [IPv6]:PORT, :PORT or PORT.
    #[arg(long, value_name = "[HOST]:PORT")]
    listen: Option<String>,
    /// NVML library to load (overrides gpu.nvml_library; default: system libnvidia-ml.so.1).
    #[arg(long, value_name = "PATH")]
    nvml_lib: Option<String>,
    /// GPU sampling interval, e.g. 1s or 500ms (overrides gpu.interval; the host is sampled
    /// every host.interval, 5s by default).
    #[arg(long, value_name = "DURATION")]
    interval: Option<String>,
    /// Log filter, e.g. info or debug (overrides log.level).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

impl RunArgs {
    /// The environment's `GPULSE_*` overrides, then the flags'. A `GPULSE_*` or `OTEL_*`
    /// variable that is not UTF-8 is an error; any other is skipped ([`config::environment`]).
    fn overrides(&self) -> Result<Vec<Override>, ConfigError> {
        let mut out = config::env_overrides(config::environment(std::env::vars_os())?);
        if let Some(v) = &self.listen {
            out.push(Override::flag("http", "listen", v, "--listen"));
        }
        if let Some(v) = &self.nvml_lib {
            out.push(Override::flag("gpu", "nvml_library", v, "--nvml-lib"));
        }
        if let Some(v) = &self.interval {
            out.push(Override::flag("gpu", "interval", v, "--interval"));
        }
        if let Some(v) = &self.log_level {
            out.push(Override::flag("log", "level", v, "--log-level"));
        }
        Ok(out)
    }

    /// Everything the agent runs on, checked before any port is bound ([`Parts::load`]).
    fn load(&self) -> Result<Parts, ConfigError> {
        // `env::var` returns an error (not a panic) for a variable that is not UTF-8, and
        // `overrides` has refused those among the ones read.
        Parts::load(self.config.as_deref(), &self.overrides()?, |name| {
            std::env::var(name).ok()
        })
    }
}

/// The whole command line as clap describes it: what the man pages and shell completions in
/// `packaging/` are generated from (tests/it/manpages.rs keeps them in step).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::collect::probe::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run, GpuSource::Nvml),
        Some(Command::Run(args)) => run(args, GpuSource::Nvml),
        Some(Command::Demo { gpus, run: args }) => run(args, GpuSource::Demo { gpus }),
        Some(Command::Scan {
            json,
            format,
            allow_no_gpu,
            run: args,
        }) => scan(
            &args,
            if json { ScanFormat::Json } else { format },
            allow_no_gpu,
        ),
        Some(Command::Wrap {
            run: args,
            no_auto_probe,
            no_auto_metrics,
            no_auto_inference,
            probe_kind,
            probe_url,
            command,
        }) => wrap(
            &args,
            &ProbeFlags {
                no_auto_probe,
                no_auto_metrics,
                no_auto_inference,
                kind: probe_kind,
                url: probe_url,
            },
            command,
        ),
        Some(Command::Bench(args)) => bench::main(&args),
        Some(Command::Verify(args)) => verify::main(&args),
        Some(Command::Health(command)) => health::main(&command),
        Some(Command::Config(ConfigCommand::Example)) => match out(config::EXAMPLE) {
            true => ExitCode::from(exit::OK),
            false => ExitCode::from(exit::FAILURE),
        },
        Some(Command::Config(ConfigCommand::Check { file })) => {
            // The same loader as `run`: a file `run` refuses is refused here with the same
            // line (the systemd unit runs this as ExecStartPre).
            let args = RunArgs {
                config: Some(file.clone()),
                ..RunArgs::default()
            };
            match args.load() {
                Ok(_) => {
                    // The exit code is the answer; a line that cannot be shown changes nothing.
                    let _ = out(&format!("{}: ok\n", file.display()));
                    ExitCode::from(exit::OK)
                }
                Err(error) => usage_error(&error),
            }
        }
    }
}

/// `gpulse scan --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScanFormat {
    Table,
    Json,
    Npd,
    Nagios,
}

fn scan(args: &RunArgs, format: ScanFormat, allow_no_gpu: bool) -> ExitCode {
    let parts = match args.load() {
        Ok(parts) => parts,
        Err(error) => return usage_error(&error),
    };
    let config = &parts.config;
    let report = scan::scan(config, &parts.policy);
    // Other schedulers' protocols bring their own exit codes.
    let protocol = match format {
        ScanFormat::Npd => Some(scan::render_npd(&report, allow_no_gpu)),
        ScanFormat::Nagios => Some(scan::render_nagios(&report, allow_no_gpu)),
        ScanFormat::Table | ScanFormat::Json => None,
    };
    if let Some((text, code)) = protocol {
        return if out(&text) {
            ExitCode::from(code)
        } else {
            ExitCode::from(exit::FAILURE)
        };
    }
    let json = format == ScanFormat::Json;
    let printed = if json {
        let dto = crate::export::json::HealthV1::from_parts(
            &report.health,
            &crate::model::XidLog::default(),
            &config.node_name(),
        );
        match dto.to_json_pretty() {
            Ok(text) => out(&format!("{text}\n")),
            Err(error) => {
                say(format_args!("cannot encode JSON: {error}"));
                return ExitCode::from(exit::FAILURE);
            }
        }
    } else {
        out(&scan::render_table(&report))
    };
    if json && let Some(why) = &report.no_gpu {
        say(format_args!("no GPU: {why}"));
    }
    // A verdict nobody could read is a failure, not the verdict.
    if !printed {
        return ExitCode::from(exit::FAILURE);
    }
    ExitCode::from(scan::exit_code(&report, allow_no_gpu))
}

/// `gpulse wrap`: an invalid config still runs the command (without the agent).
/// A malformed `--probe-url` is refused first (exit 2), like any malformed flag.
fn wrap(args: &RunArgs, flags: &ProbeFlags, command: Vec<OsString>) -> ExitCode {
    if let Err(error) = wrap::check_flags(flags, &command) {
        return usage_error(&error);
    }
    let loaded = args.load();
    if let Ok(parts) = &loaded {
        init_logging(&parts.config);
    }
    wrap::run(loaded, flags, command)
}

fn usage_error(error: &ConfigError) -> ExitCode {
    say(error);
    ExitCode::from(exit::USAGE)
}

/// Writes `gpulse: LINE` to stderr and carries on whatever happens. `eprintln!` panics when
/// stderr is a closed pipe or a full disk (`2>/dev/full`), which aborted gpulse, and under
/// `wrap` kept the workload from starting; a message nobody can read is no reason to stop.
pub(crate) fn say(line: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "gpulse: {line}");
}

/// Writes a command's output to stdout; `false` (said on stderr) when it cannot be written
/// (`println!` would panic on a closed pipe).
fn out(text: &str) -> bool {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => true,
        Err(error) => {
            say(format_args!("cannot write to stdout: {error}"));
            false
        }
    }
}

/// The log layer's stderr: a line that cannot be written (closed pipe, full disk) is dropped.
/// tracing-subscriber reports a failed write with `eprintln!` (panicking on the same dead
/// stderr) unless told not to; this writer never reports one, so both are covered.
struct LogStderr;

impl Write for LogStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

fn run(args: RunArgs, source: GpuSource) -> ExitCode {
    let Parts {
        config,
        otlp,
        credentials,
        ..
    } = match args.load() {
        Ok(parts) => parts,
        Err(error) => return usage_error(&error),
    };
    init_logging(&config);
    let runtime = match app::runtime(config.agent.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            say(format_args!("cannot start the async runtime: {error}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    runtime.block_on(async move {
        let listener = match crate::export::api::bind(config.http.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(listen = %config.http.listen, error = %error, "Cannot listen.");
                say(format_args!(
                    "cannot listen on {}: {error}",
                    config.http.listen
                ));
                return ExitCode::from(exit::FAILURE);
            }
        };
        let local = listener.local_addr().unwrap_or(config.http.listen);
        let url = crate::export::api::open_url(local, credentials.is_tls());
        tracing::info!(
            listen = %local,
            url = %url,
            tls = credentials.is_tls(),
            bearer_token = credentials.has_token(),
            version = env!("CARGO_PKG_VERSION"),
            "gpulse started; open {url}"
        );
        match app::run(
            config,
            source,
            otlp,
            listener,
            credentials,
            app::shutdown_signal(),
        )
        .await
        {
            Ok(()) => ExitCode::from(exit::OK),
            Err(error) => {
                tracing::error!(error = %error, "gpulse stopped.");
                ExitCode::from(exit::FAILURE)
            }
        }
    })
}

/// Logs to stderr with the configured filter (validated by [`Parts::load`]). Logging never
/// stops gpulse: lines that cannot be written are dropped ([`LogStderr`]).
fn init_logging(config: &Config) {
    let Ok(filter) = EnvFilter::try_new(&config.log.level) else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(|| LogStderr)
        .log_internal_errors(false);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
