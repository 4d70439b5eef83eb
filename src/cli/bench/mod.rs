//! `gpulse bench`: its flags, the plan they make with the config (pure, every bound checked
//! before a request is sent), its output (a table, or `gpulse.bench/v1` JSON) and exit code.
//!
//! * `run`: the load runner (readiness check, warm-up, the concurrency steps, progress).
//!
//! Exit codes: 0 a completed bench with at least one successful request, 1 every request
//! failed (or the server was not ready, or the bench was interrupted), 2 a usage or config
//! error (one line naming the flag or key and its origin).

mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{exit, say};
use crate::config::{
    Config, ConfigError, HumanDuration, Origins, ProbeConfig, ProbeKind, Synthetic,
};
use crate::model::{BenchReport, BenchSettings, Price, Slo, percent};

/// Most concurrent requests in one step.
pub const MAX_CONCURRENCY: u32 = 256;
/// Most steps in one bench.
pub const MAX_STEPS: usize = 16;
/// Longest bench: steps × step duration (each step may then wait up to `--timeout` for the
/// requests in flight).
pub const MAX_TOTAL: Duration = Duration::from_secs(3600);
/// Longest per-request deadline.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Most output tokens asked per request.
pub const MAX_TOKENS: u32 = 4096;
/// Most words of the built-in prompt.
pub const MAX_PROMPT_WORDS: u32 = 16_384;
/// Longest `--prompt`, bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Failed requests without one success after which a step stops early.
pub const EARLY_STOP_FAILURES: u64 = 10;

/// `gpulse bench`'s flags.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// TOML config file: its [[probe]]s and [score] latency_objective, price_per_hour,
    /// currency (GPULSE_* variables apply as for `run`).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The configured [[probe]] to load (default: the only one configured).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["url", "kind"])]
    pub probe: Option<String>,
    /// The server's URL (http(s)://host:port[/base]) instead of a configured probe; needs --kind.
    #[arg(long, value_name = "URL", requires = "kind")]
    pub url: Option<String>,
    /// The server's kind with --url: vllm, tgi, sglang, ollama, llamacpp or openai.
    #[arg(long, value_name = "KIND", requires = "url", value_parser = super::wrap::parse_probe_kind)]
    pub kind: Option<ProbeKind>,
    /// Model named in the requests (default: the probe's inference_model or expected_model,
    /// else the first model the server lists).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Concurrent requests of each step, comma-separated (at most 16 steps, each 1–256).
    #[arg(long, value_name = "N,N,…", default_value = "1,4,16,64")]
    pub concurrency: String,
    /// How long each step starts requests (steps × duration at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub step_duration: String,
    /// Output tokens asked per request (1–4096).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_tokens: u32,
    /// Words of the built-in fixed prompt, about as many tokens (default 128).
    #[arg(long, value_name = "N", conflicts_with = "prompt")]
    pub prompt_tokens: Option<u32>,
    /// A fixed prompt of your own instead of the built-in one (at most 64 KiB).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Time to first token a request must meet (default: the probe's ttft_slo).
    #[arg(long, value_name = "DURATION")]
    pub ttft_slo: Option<String>,
    /// End-to-end latency a request must meet (default: the probe's latency_slo).
    #[arg(long, value_name = "DURATION")]
    pub latency_slo: Option<String>,
    /// Requests started per step at most.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: Option<u64>,
    /// Deadline of one request (default: the probe's inference_timeout; at most 10m).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Let the server stop at end-of-sequence (by default vLLM, SGLang and llama.cpp are asked
    /// to ignore it, so every answer is --max-tokens long).
    #[arg(long)]
    pub no_ignore_eos: bool,
    /// Print `gpulse.bench/v1` JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a bench will do: the probe it loads and every setting, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub probe: ProbeConfig,
    /// `model` is empty until the readiness check names one (when no flag or key did).
    pub settings: BenchSettings,
    /// The fixed prompt; each request puts a random prefix before it.
    pub prompt: String,
}

/// An error about a flag: `config at --FLAG (flag): MESSAGE`.
fn flag_error(flag: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: None,
        origin: format!("{flag} (flag)"),
        message: message.into(),
    }
}

/// Whether `kind` has a streaming text request `gpulse bench` can time token by token.
pub fn benchable(kind: ProbeKind) -> bool {
    matches!(
        kind.caps().synthetic,
        Synthetic::Completions { .. } | Synthetic::OllamaGenerate
    )
}

/// The kinds [`benchable`] accepts, for messages.
fn benchable_names() -> String {
    ProbeKind::ALL
        .into_iter()
        .filter(|k| benchable(*k))
        .map(ProbeKind::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn not_benchable(kind: ProbeKind) -> String {
    format!(
        "kind {} has no streaming text request to benchmark (gpulse bench takes {})",
        kind.as_str(),
        benchable_names()
    )
}

/// The probe to load: `--url`/`--kind`, `--probe NAME`, or the only configured one.
fn pick_probe(
    args: &BenchArgs,
    config: &Config,
    origins: &Origins,
) -> Result<ProbeConfig, ConfigError> {
    if let (Some(url), Some(kind)) = (&args.url, args.kind) {
        if !benchable(kind) {
            return Err(flag_error("--kind", not_benchable(kind)));
        }
        let probe = ProbeConfig::new("bench", kind, url);
        // The same checks as a configured probe's (URL form, scheme).
        let mut check = Config::default();
        check.probe.push(probe.clone());
        check
            .validate()
            .map_err(|error| flag_error("--url", error.message))?;
        return Ok(probe);
    }
    let names = || {
        config
            .probe
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index = match &args.probe {
        Some(name) => config
            .probe
            .iter()
            .position(|p| &p.name == name)
            .ok_or_else(|| {
                let configured = if config.probe.is_empty() {
                    "none is configured".to_owned()
                } else {
                    format!("configured: {}", names())
                };
                flag_error(
                    "--probe",
                    format!(
                        "no [[probe]] named {} ({configured})",
                        crate::config::shown(name)
                    ),
                )
            })?,
        None => match config.probe.len() {
            0 => {
                return Err(origins.place(ConfigError::at_key(
                    "probe",
                    "no [[probe]] is configured; give --url URL --kind KIND, or a config with one",
                )));
            }
            1 => 0,
            n => {
                return Err(ConfigError {
                    key: Some("probe".to_owned()),
                    origin: origins.of("probe[1]"),
                    message: format!(
                        "{n} probes are configured ({}); choose one with --probe NAME",
                        names()
                    ),
                });
            }
        },
    };
    let probe = config.probe[index].clone();
    if !benchable(probe.kind) {
        let key = format!("probe[{index}].kind");
        return Err(ConfigError {
            origin: origins.of(&key),
            key: Some(key),
            message: format!(
                "probe {}: {}",
                crate::config::shown(&probe.name),
                not_benchable(probe.kind)
            ),
        });
    }
    Ok(probe)
}

/// `1,4,16,64` → ascending, distinct, each 1..=256, at most 16.
pub fn parse_concurrency(text: &str) -> Result<Vec<u32>, String> {
    let mut steps = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let n: u32 = part.parse().map_err(|_| {
            format!(
                "{} is not a list of numbers like 1,4,16,64",
                crate::config::shown(text)
            )
        })?;
        if !(1..=MAX_CONCURRENCY).contains(&n) {
            return Err(format!(
                "concurrency {n} is out of range; use 1 to {MAX_CONCURRENCY}"
            ));
        }
        steps.push(n);
    }
    steps.sort_unstable();
    steps.dedup();
    if steps.len() > MAX_STEPS {
        return Err(format!("{} steps; at most {MAX_STEPS}", steps.len()));
    }
    Ok(steps)
}

fn duration_flag(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    HumanDuration::parse(text)
        .map(|d| d.0)
        .map_err(|message| flag_error(flag, message))
}

/// Words the built-in prompt cycles through: plain English, about one token each in common
/// tokenizers.
const PROMPT_WORDS: &[&str] = &[
    "the",
    "old",
    "lighthouse",
    "keeper",
    "walked",
    "down",
    "to",
    "the",
    "shore",
    "every",
    "morning",
    "and",
    "wrote",
    "in",
    "his",
    "book",
    "what",
    "the",
    "sea",
    "had",
    "left",
    "on",
    "the",
    "sand",
    "a",
    "rope",
    "a",
    "shell",
    "a",
    "green",
    "bottle",
    "with",
    "a",
    "letter",
    "inside",
    "and",
    "one",
    "day",
    "a",
    "small",
    "boat",
    "with",
    "no",
    "name",
    "so",
    "he",
    "began",
    "to",
    "tell",
    "the",
    "story",
    "of",
    "where",
    "it",
    "came",
    "from",
    "and",
    "who",
    "had",
    "sailed",
    "it",
    "last",
];

/// The built-in fixed prompt of `words` words.
pub fn builtin_prompt(words: u32) -> String {
    PROMPT_WORDS
        .iter()
        .cycle()
        .take(words as usize)
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks the flags against the loaded config and makes the plan (pure).
pub fn plan(args: &BenchArgs, config: &Config, origins: &Origins) -> Result<Plan, ConfigError> {
    let probe = pick_probe(args, config, origins)?;
    let concurrency =
        parse_concurrency(&args.concurrency).map_err(|m| flag_error("--concurrency", m))?;
    let step_duration = duration_flag("--step-duration", &args.step_duration)?;
    let total = step_duration.saturating_mul(concurrency.len() as u32);
    if total > MAX_TOTAL {
        return Err(flag_error(
            "--step-duration",
            format!(
                "{} steps of {} take {}, over the limit of {}",
                concurrency.len(),
                humantime::format_duration(step_duration),
                humantime::format_duration(total),
                humantime::format_duration(MAX_TOTAL)
            ),
        ));
    }
    if !(1..=MAX_TOKENS).contains(&args.max_tokens) {
        return Err(flag_error(
            "--max-tokens",
            format!("{} is out of range; use 1 to {MAX_TOKENS}", args.max_tokens),
        ));
    }
    let (prompt, prompt_words) = match (&args.prompt, args.prompt_tokens) {
        (Some(text), _) => {
            if text.trim().is_empty() || text.len() > MAX_PROMPT_BYTES {
                return Err(flag_error(
                    "--prompt",
                    format!("must be 1 byte to {} KiB of text", MAX_PROMPT_BYTES / 1024),
                ));
            }
            (text.clone(), None)
        }
        (None, words) => {
            let words = words.unwrap_or(128);
            if !(1..=MAX_PROMPT_WORDS).contains(&words) {
                return Err(flag_error(
                    "--prompt-tokens",
                    format!("{words} is out of range; use 1 to {MAX_PROMPT_WORDS}"),
                ));
            }
            (builtin_prompt(words), Some(words))
        }
    };
    let ttft = match &args.ttft_slo {
        Some(text) => duration_flag("--ttft-slo", text)?,
        None => probe.ttft_slo.0,
    };
    let e2e = match &args.latency_slo {
        Some(text) => duration_flag("--latency-slo", text)?,
        None => probe.latency_slo.0,
    };
    let timeout = match &args.timeout {
        Some(text) => duration_flag("--timeout", text)?,
        None => probe.inference_timeout.0,
    };
    if timeout > MAX_TIMEOUT {
        return Err(flag_error(
            "--timeout",
            format!(
                "{} is over the limit of {}",
                humantime::format_duration(timeout),
                humantime::format_duration(MAX_TIMEOUT)
            ),
        ));
    }
    let model = match &args.model {
        Some(model) => model.clone(),
        None if !probe.inference_model.is_empty() => probe.inference_model.clone(),
        None => probe.expected_model.clone().unwrap_or_default(),
    };
    let ignore_eos = !args.no_ignore_eos
        && matches!(
            probe.kind.caps().synthetic,
            Synthetic::Completions {
                ignore_eos: true,
                ..
            }
        );
    let score = &config.score;
    let settings = BenchSettings {
        probe: probe.name.clone(),
        kind: probe.kind.as_str(),
        url: probe.base_url().to_owned(),
        model,
        concurrency,
        step_duration,
        max_tokens: args.max_tokens,
        prompt_words,
        prompt_chars: prompt.chars().count(),
        prompt_tokens_reported: None,
        ignore_eos,
        timeout,
        max_requests: args.max_requests,
        slo: Slo { ttft, e2e },
        objective: score.latency_objective,
        price: score.price().map(|per_hour| Price {
            per_hour,
            currency: score.currency.clone(),
        }),
    };
    Ok(Plan {
        probe,
        settings,
        prompt,
    })
}

/// `gpulse bench`: load, plan, run, print; the exit code.
pub fn main(args: &BenchArgs) -> ExitCode {
    let run_args = super::RunArgs {
        config: args.config.clone(),
        ..super::RunArgs::default()
    };
    let parts = match run_args.load() {
        Ok(parts) => parts,
        Err(error) => return super::usage_error(&error),
    };
    let plan = match plan(args, &parts.config, &parts.origins) {
        Ok(plan) => plan,
        Err(error) => return super::usage_error(&error),
    };
    super::init_logging(&parts.config);
    let runtime = match crate::app::runtime(parts.config.agent.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            say(format_args!("cannot start the async runtime: {error}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    let report = match runtime.block_on(run::run(plan)) {
        Ok(report) => report,
        Err(error) => {
            // The HTTP client refused the probe's TLS settings (checked at load; changed since).
            say(format_args!("cannot set up the HTTP client: {error}"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let printed = if args.json {
        match crate::export::json::BenchV1::from_report(&report).to_json_pretty() {
            Ok(text) => super::out(&format!("{text}\n")),
            Err(error) => {
                say(format_args!("cannot encode JSON: {error}"));
                return ExitCode::from(exit::FAILURE);
            }
        }
    } else {
        super::out(&render_table(&report))
    };
    if let Some(why) = &report.stopped {
        say(format_args!("bench stopped: {why}"));
    }
    if !printed {
        return ExitCode::from(exit::FAILURE);
    }
    ExitCode::from(exit_code(&report))
}

/// 0 for a completed bench with a successful request; 1 when every request failed or it was
/// interrupted.
pub fn exit_code(report: &BenchReport) -> u8 {
    if report.interrupted || report.ok_total() == 0 {
        exit::FAILURE
    } else {
        exit::OK
    }
}

/// Milliseconds, or `-` without a value.
fn millis(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| format!("{:.1}", s * 1000.0))
}

/// The human summary: one row per step, then the best step and its cost.
pub fn render_table(report: &BenchReport) -> String {
    use std::fmt::Write as _;
    let s = &report.settings;
    let mut out = String::new();
    let model = if s.model.is_empty() {
        "(server's choice)"
    } else {
        &s.model
    };
    let _ = writeln!(
        out,
        "gpulse bench: {} {} model {model}, {} output tokens per request, SLO TTFT {} / e2e {}",
        s.kind,
        s.url,
        s.max_tokens,
        humantime::format_duration(s.slo.ttft),
        humantime::format_duration(s.slo.e2e),
    );
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>6} {:>8} {:>9} {:>17} {:>17} {:>19} {:>7}",
        "conc",
        "ok",
        "failed",
        "req/s",
        "tokens/s",
        "TTFT p50/p99 ms",
        "ITL p50/p99 ms",
        "e2e p50/p99 ms",
        "in SLO"
    );
    for step in &report.steps {
        let pair = |q: &crate::model::Quantiles| format!("{}/{}", millis(q.p50), millis(q.p99));
        let _ = writeln!(
            out,
            "{:>5} {:>7} {:>6} {:>8.2} {:>9.1} {:>17} {:>17} {:>19} {:>7}",
            step.concurrency,
            step.ok,
            step.failed,
            step.requests_per_second,
            step.output_tokens_per_second,
            pair(&step.ttft),
            pair(&step.inter_token),
            pair(&step.e2e),
            step.slo_attainment.map_or_else(|| "-".to_owned(), percent),
        );
        for f in &step.failures {
            let _ = writeln!(
                out,
                "      {} × {}: {}",
                f.count,
                f.reason.as_str(),
                f.example
            );
        }
        if let Some(why) = &step.stopped_early {
            let _ = writeln!(out, "      stopped early: {why}");
        }
    }
    match report.best.concurrency {
        Some(c) => {
            let _ = writeln!(out, "best concurrency: {c} ({})", report.best.reason);
        }
        None => {
            let _ = writeln!(out, "best concurrency: none ({})", report.best.reason);
        }
    }
    match (&s.price, report.cost_per_million_output_tokens) {
        (Some(price), Some(cost)) => {
            let _ = writeln!(
                out,
                "cost: {cost:.4} {} per 1M output tokens at {} {}/h",
                price.currency, price.per_hour, price.currency
            );
        }
        (Some(_), None) => {
            let _ = writeln!(out, "cost: none (no step met the objective)");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "cost: set [score] price_per_hour for the cost per 1M tokens"
            );
        }
    }
    if report.interrupted {
        let _ = writeln!(out, "interrupted: the steps above ran before the signal");
    }
    out
}

#[cfg(test)]
mod tests;
