//! `[[probe]]`: what an inference-server probe is configured with, its defaults and checks,
//! and [`ProbeKind::caps`], the one table of what each kind can do.
//!
//! Adding a kind: a [`ProbeKind`] variant, its row in [`ProbeKind::caps`] (and in
//! [`ProbeKind::ALL`]), with the [`Launcher`]s `gpulse wrap` recognises it by. Code elsewhere changes only for what is genuinely new: a model-list
//! shape ([`ModelList`], parsed in `collect/probe/check.rs`), a request format
//! ([`Synthetic`], built in `collect/probe/infer.rs`) or a readiness flow ([`Readiness`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration, shown};

/// What a probe talks to; what each kind can do is in [`ProbeKind::caps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Vllm,
    Tgi,
    Triton,
    Kserve,
    Sglang,
    Ollama,
    Llamacpp,
    Openai,
    Http,
    Tcp,
}

/// How a kind answers "are you ready?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A TCP connect to `host:port`.
    Connect,
    /// `GET` the URL itself; 2xx is up.
    Get,
    /// `GET` this path (503: still loading), then the model list.
    Health(&'static str),
    /// The model list alone (503: still loading).
    Models,
    /// KServe v2: `/v2/health/live`, `/v2/health/ready`, then the expected model's readiness.
    V2,
}

/// Where a kind lists its models and the JSON shape of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelList {
    /// `/v1/models`: `{"data": [{"id": …}]}`.
    OpenAi,
    /// `/info`: `{"model_id": …}`.
    Tgi,
    /// `/api/tags`: `{"models": [{"name": …}]}`.
    Ollama,
    /// No list: `/v2/models/{model}/ready` for the expected model only (checked by the
    /// readiness flow itself).
    V2,
}

impl ModelList {
    /// The path of the list (`V2` has none).
    pub const fn path(self) -> &'static str {
        match self {
            Self::OpenAi => "/v1/models",
            Self::Tgi => "/info",
            Self::Ollama => "/api/tags",
            Self::V2 => "",
        }
    }
}

/// The synthetic inference request of a kind (`inference = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synthetic {
    /// None: `inference = true` is refused.
    None,
    /// Streaming `POST /v1/completions`; `usage` asks for the usage chunk
    /// (`stream_options.include_usage`), which TGI and llama.cpp do not take; `ignore_eos`:
    /// the server takes `"ignore_eos": true` (vLLM, SGLang, llama.cpp), which `gpulse bench`
    /// sends so every answer is `max_tokens` long.
    Completions { usage: bool, ignore_eos: bool },
    /// Streaming `POST /api/generate` (NDJSON).
    OllamaGenerate,
    /// `POST /v2/models/{model}/infer` with the configured `inference_input`; needs a model.
    V2Infer,
}

/// How `gpulse wrap` tells a kind's server from the child's command line, and where that
/// command line puts the address the server listens on (read by `cli/wrap/auto_probe.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launcher {
    pub command: LaunchCommand,
    /// Flags naming the listen host and port (`--port 8001` or `--port=8001`; the last wins).
    pub host_flags: &'static [&'static str],
    pub port_flags: &'static [&'static str],
    /// Variables read when no flag names the host or port.
    pub host_env: Option<&'static str>,
    pub port_env: Option<&'static str>,
    pub address: LaunchAddress,
    /// The path probed (`/` for a static file server, else the base URL).
    pub path: &'static str,
    /// Where the command line names the model the server lists (the auto probe's
    /// `expected_model`), most telling first; none: the probe does not expect one.
    pub model: &'static [ModelFrom],
    /// Whether the server serves Prometheus metrics the auto probe should scrape, and where.
    pub metrics: LaunchMetrics,
}

/// A place on a command line that names the served model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFrom {
    /// The value of this flag (`--served-model-name m`, `--alias=m`).
    Flag(&'static str),
    /// This variable (read when no earlier source named the model).
    Env(&'static str),
    /// The first argument after the subcommand, when it is not a flag (`vllm serve MODEL`).
    AfterSubcommand,
}

/// Whether the auto probe scrapes the server's own `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchMetrics {
    /// Not at all (no Prometheus endpoint, or not one worth scraping).
    Off,
    /// Always, at the probe's URL + `/metrics`.
    On,
    /// Only when the command line turns the endpoint on (llama-server `--metrics`, sglang
    /// `--enable-metrics`): the flag, or the variable set to a true value.
    WhenFlag(&'static str, Option<&'static str>),
    /// On a port of their own (Triton `--metrics-port`, default 8002), at `/metrics`.
    Port {
        flags: &'static [&'static str],
        default: u16,
    },
}

/// The command that starts a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchCommand {
    /// A program (by file name) and the subcommand that starts the server, if it has one.
    Program(&'static str, Option<&'static str>),
    /// `python -m MODULE` (any `python3.x`; interpreter flags before `-m` are skipped).
    PythonModule(&'static str),
}

/// Where a command line spells the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchAddress {
    /// In the flags and variables of the [`Launcher`]; the port defaults to the kind's
    /// `default_port`.
    Flags,
    /// Ollama's `OLLAMA_HOST`: `host`, `host:port` or `:port`, with or without `http://`.
    OllamaHost,
    /// The first positional argument is the port (`python -m http.server 8123`), the values
    /// of `skip` flags aside; `default` without one.
    Positional {
        skip: &'static [&'static str],
        default: u16,
    },
}

impl Launcher {
    /// A launcher whose address is in `--host`/`--port`-style flags (set the rest with struct
    /// update).
    const fn flags(
        command: LaunchCommand,
        host_flags: &'static [&'static str],
        port_flags: &'static [&'static str],
    ) -> Self {
        Self {
            command,
            host_flags,
            port_flags,
            host_env: None,
            port_env: None,
            address: LaunchAddress::Flags,
            path: "",
            model: &[],
            metrics: LaunchMetrics::Off,
        }
    }
}

/// What one probe kind can do: its row of [`ProbeKind::caps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The config spelling and the `kind` label.
    pub name: &'static str,
    pub readiness: Readiness,
    /// The model list `expected_model` is checked against; `None`: models are not known.
    pub models: Option<ModelList>,
    pub synthetic: Synthetic,
    /// Serves Prometheus `/metrics` worth scraping (`metrics = true` is allowed).
    pub metrics: bool,
    /// The server's own default HTTP port, for a probe inferred from a command line.
    pub default_port: Option<u16>,
    /// The command lines `gpulse wrap` recognises as this kind's server.
    pub launchers: &'static [Launcher],
}

impl ProbeKind {
    /// Every kind, in the order documentation lists them.
    pub const ALL: [Self; 10] = [
        Self::Vllm,
        Self::Tgi,
        Self::Triton,
        Self::Kserve,
        Self::Sglang,
        Self::Ollama,
        Self::Llamacpp,
        Self::Openai,
        Self::Http,
        Self::Tcp,
    ];

    /// The one table of what each kind can do; everything kind-specific reads it.
    pub const fn caps(self) -> &'static Capabilities {
        const fn row(
            name: &'static str,
            readiness: Readiness,
            models: Option<ModelList>,
            synthetic: Synthetic,
            metrics: bool,
            default_port: Option<u16>,
        ) -> Capabilities {
            Capabilities {
                name,
                readiness,
                models,
                synthetic,
                metrics,
                default_port,
                launchers: &[],
            }
        }
        use LaunchCommand::{Program, PythonModule};
        use ModelFrom::{AfterSubcommand, Env, Flag};
        const HOST_PORT: &[&str] = &["--host"];
        const PORT: &[&str] = &["--port"];
        use ModelList as L;
        use Readiness as R;
        use Synthetic as S;
        const HEALTH: Readiness = R::Health("/health");
        const USAGE: Synthetic = S::Completions {
            usage: true,
            ignore_eos: true,
        };
        const NO_USAGE: Synthetic = S::Completions {
            usage: false,
            ignore_eos: false,
        };
        // The OpenAI API itself refuses parameters it does not know.
        const OPENAI_API: Synthetic = S::Completions {
            usage: true,
            ignore_eos: false,
        };
        const LLAMACPP_API: Synthetic = S::Completions {
            usage: false,
            ignore_eos: true,
        };
        const VLLM: Capabilities = Capabilities {
            launchers: &[
                Launcher {
                    model: &[
                        Flag("--served-model-name"),
                        AfterSubcommand,
                        Flag("--model"),
                    ],
                    metrics: LaunchMetrics::On,
                    ..Launcher::flags(Program("vllm", Some("serve")), HOST_PORT, PORT)
                },
                Launcher {
                    model: &[Flag("--served-model-name"), Flag("--model")],
                    metrics: LaunchMetrics::On,
                    ..Launcher::flags(
                        PythonModule("vllm.entrypoints.openai.api_server"),
                        HOST_PORT,
                        PORT,
                    )
                },
            ],
            ..row("vllm", HEALTH, Some(L::OpenAi), USAGE, true, Some(8000))
        };
        const TGI: Capabilities = Capabilities {
            launchers: &[Launcher {
                port_env: Some("PORT"),
                model: &[Flag("--model-id"), Env("MODEL_ID")],
                metrics: LaunchMetrics::On,
                ..Launcher::flags(
                    Program("text-generation-launcher", None),
                    &["--hostname"],
                    &["--port", "-p"],
                )
            }],
            ..row("tgi", HEALTH, Some(L::Tgi), NO_USAGE, true, Some(3000))
        };
        const TRITON: Capabilities = Capabilities {
            // No model: Triton serves a repository, and its synthetic request needs the
            // model's own input tensor (`inference_input`), which no command line shows.
            launchers: &[Launcher {
                metrics: LaunchMetrics::Port {
                    flags: &["--metrics-port"],
                    default: 8002,
                },
                ..Launcher::flags(
                    Program("tritonserver", None),
                    &["--http-address"],
                    &["--http-port"],
                )
            }],
            ..row("triton", R::V2, Some(L::V2), S::V2Infer, true, Some(8000))
        };
        // MLServer is the KServe v2 server gpulse infers (`mlserver start`).
        const KSERVE: Capabilities = Capabilities {
            launchers: &[Launcher {
                host_env: Some("MLSERVER_HOST"),
                port_env: Some("MLSERVER_HTTP_PORT"),
                ..Launcher::flags(Program("mlserver", Some("start")), &[], &[])
            }],
            ..row("kserve", R::V2, Some(L::V2), S::V2Infer, true, Some(8080))
        };
        const SGLANG: Capabilities = Capabilities {
            launchers: &[Launcher {
                model: &[
                    Flag("--served-model-name"),
                    Flag("--model-path"),
                    Flag("--model"),
                ],
                metrics: LaunchMetrics::WhenFlag("--enable-metrics", None),
                ..Launcher::flags(PythonModule("sglang.launch_server"), HOST_PORT, PORT)
            }],
            ..row("sglang", HEALTH, Some(L::OpenAi), USAGE, true, Some(30000))
        };
        const OLLAMA: Capabilities = Capabilities {
            launchers: &[Launcher {
                address: LaunchAddress::OllamaHost,
                ..Launcher::flags(Program("ollama", Some("serve")), &[], &[])
            }],
            ..row(
                "ollama",
                R::Models,
                Some(L::Ollama),
                S::OllamaGenerate,
                false,
                Some(11434),
            )
        };
        const LLAMACPP: Capabilities = Capabilities {
            launchers: &[Launcher {
                host_env: Some("LLAMA_ARG_HOST"),
                port_env: Some("LLAMA_ARG_PORT"),
                // llama-server lists its model under the alias, else the `-m` path as given.
                model: &[
                    Flag("--alias"),
                    Flag("-a"),
                    Env("LLAMA_ARG_ALIAS"),
                    Flag("--model"),
                    Flag("-m"),
                    Env("LLAMA_ARG_MODEL"),
                ],
                metrics: LaunchMetrics::WhenFlag("--metrics", Some("LLAMA_ARG_ENDPOINT_METRICS")),
                ..Launcher::flags(Program("llama-server", None), HOST_PORT, PORT)
            }],
            ..row(
                "llamacpp",
                HEALTH,
                Some(L::OpenAi),
                LLAMACPP_API,
                true,
                Some(8080),
            )
        };
        const OPENAI: Capabilities =
            row("openai", R::Models, Some(L::OpenAi), OPENAI_API, true, None);
        const HTTP: Capabilities = Capabilities {
            launchers: &[Launcher {
                address: LaunchAddress::Positional {
                    skip: &["--bind", "-b", "--directory", "-d"],
                    default: 8000,
                },
                path: "/",
                ..Launcher::flags(PythonModule("http.server"), &["--bind", "-b"], &[])
            }],
            ..row("http", R::Get, None, S::None, true, None)
        };
        const TCP: Capabilities = row("tcp", R::Connect, None, S::None, false, None);
        match self {
            Self::Vllm => &VLLM,
            Self::Tgi => &TGI,
            Self::Triton => &TRITON,
            Self::Kserve => &KSERVE,
            Self::Sglang => &SGLANG,
            Self::Ollama => &OLLAMA,
            Self::Llamacpp => &LLAMACPP,
            Self::Openai => &OPENAI,
            Self::Http => &HTTP,
            Self::Tcp => &TCP,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.caps().name
    }

    /// Every kind's name, for messages: `vllm, tgi, …, tcp`.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// One `[[probe]]`: an endpoint checked on its own interval.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Unique; the `probe` label of its metrics.
    pub name: String,
    pub kind: ProbeKind,
    /// `http://host:port[/base]` for HTTP kinds; `host:port` or `tcp://host:port` for `tcp`.
    pub url: String,
    #[serde(default = "probe_default_interval")]
    pub interval: HumanDuration,
    /// Deadline of one whole check (connect, headers, body, every request of the check).
    #[serde(default = "probe_default_timeout")]
    pub timeout: HumanDuration,
    /// How long the target may take to become ready after it (or gpulse) starts: until its
    /// first ready check, refusals read `starting`, not `down` (no outage), and checks repeat
    /// fast (250 ms, backing off to `interval`) so time-to-ready is precise. Long enough for
    /// a 70B model's weights to load.
    #[serde(default = "probe_default_startup_timeout")]
    pub startup_timeout: HumanDuration,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// File holding a bearer token sent as `Authorization: Bearer` (never logged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bearer_token_file: String,
    /// Environment variable holding a bearer token (never logged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bearer_token_env: String,
    /// Largest response body read; past it the check is `down` / `body_too_large`.
    #[serde(default = "probe_default_max_body")]
    pub max_body_bytes: usize,
    /// A model that must be listed; when absent the probe is `degraded` / `model_missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_model: Option<String>,
    /// PEM file of CA certificates trusted for an `https` URL, besides the built-in roots
    /// (for servers behind a private CA or a self-signed certificate).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_ca_file: String,
    /// Accept any certificate on an `https` URL (still encrypted, not authenticated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_insecure_skip_verify: bool,
    /// Send a synthetic inference request (the cheapest real one for the kind) every
    /// `inference_interval`, timing the first token and the whole answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inference: bool,
    #[serde(default = "probe_default_inference_interval")]
    pub inference_interval: HumanDuration,
    /// Deadline of one synthetic request, from sending to the last byte.
    #[serde(default = "probe_default_inference_timeout")]
    pub inference_timeout: HumanDuration,
    /// Model named in the request; empty: `expected_model`, else the first listed model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inference_model: String,
    #[serde(default = "probe_default_inference_prompt")]
    pub inference_prompt: String,
    /// Output tokens asked for (1 keeps the probe cheap; more measures decode speed).
    #[serde(default = "probe_default_inference_max_tokens")]
    pub inference_max_tokens: u32,
    /// `triton` / `kserve`: the JSON body of `POST /v2/models/{model}/infer` (the model's
    /// own input tensor); required there when `inference` is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inference_input: String,
    /// Time to first token (first byte for `triton` / `kserve`) a synthetic request must meet.
    #[serde(default = "probe_default_ttft_slo")]
    pub ttft_slo: HumanDuration,
    /// End-to-end latency a synthetic request must meet.
    #[serde(default = "probe_default_latency_slo")]
    pub latency_slo: HumanDuration,
    /// Scrape the server's own Prometheus /metrics every `metrics_interval` and lift its
    /// queue, throughput, latency and KV-cache series.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metrics: bool,
    /// Where the server's metrics are; empty: `url` + `/metrics` (MLServer serves them on
    /// a port of their own, e.g. `http://127.0.0.1:8082/metrics`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_url: String,
    #[serde(default = "probe_default_metrics_interval")]
    pub metrics_interval: HumanDuration,
    /// Largest /metrics body read; past it the scrape fails (`body_too_large`).
    #[serde(default = "probe_default_metrics_max_body")]
    pub metrics_max_body_bytes: usize,
}

fn probe_default_interval() -> HumanDuration {
    HumanDuration::secs(10)
}

fn probe_default_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}

fn probe_default_startup_timeout() -> HumanDuration {
    HumanDuration::secs(30 * 60)
}

fn probe_default_max_body() -> usize {
    1 << 20
}

fn probe_default_inference_interval() -> HumanDuration {
    HumanDuration::secs(30)
}

fn probe_default_inference_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

fn probe_default_inference_prompt() -> String {
    "hi".to_owned()
}

fn probe_default_inference_max_tokens() -> u32 {
    1
}

fn probe_default_ttft_slo() -> HumanDuration {
    HumanDuration::secs(1)
}

fn probe_default_latency_slo() -> HumanDuration {
    HumanDuration::secs(2)
}

fn probe_default_metrics_interval() -> HumanDuration {
    HumanDuration::secs(15)
}

fn probe_default_metrics_max_body() -> usize {
    4 << 20
}

impl ProbeConfig {
    /// A probe with every optional key at its default.
    pub fn new(name: &str, kind: ProbeKind, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            interval: probe_default_interval(),
            timeout: probe_default_timeout(),
            startup_timeout: probe_default_startup_timeout(),
            headers: BTreeMap::new(),
            bearer_token_file: String::new(),
            bearer_token_env: String::new(),
            max_body_bytes: probe_default_max_body(),
            expected_model: None,
            tls_ca_file: String::new(),
            tls_insecure_skip_verify: false,
            inference: false,
            inference_interval: probe_default_inference_interval(),
            inference_timeout: probe_default_inference_timeout(),
            inference_model: String::new(),
            inference_prompt: probe_default_inference_prompt(),
            inference_max_tokens: probe_default_inference_max_tokens(),
            inference_input: String::new(),
            ttft_slo: probe_default_ttft_slo(),
            latency_slo: probe_default_latency_slo(),
            metrics: false,
            metrics_url: String::new(),
            metrics_interval: probe_default_metrics_interval(),
            metrics_max_body_bytes: probe_default_metrics_max_body(),
        }
    }

    /// The URL of the server's own Prometheus metrics.
    pub fn metrics_url(&self) -> String {
        if self.metrics_url.is_empty() {
            format!("{}/metrics", self.base_url())
        } else {
            self.metrics_url.clone()
        }
    }

    /// Whether the kind has a synthetic inference request.
    pub const fn has_inference(kind: ProbeKind) -> bool {
        !matches!(kind.caps().synthetic, Synthetic::None)
    }

    /// The `host:port` a `tcp` probe connects to.
    pub fn tcp_address(&self) -> &str {
        self.url.strip_prefix("tcp://").unwrap_or(&self.url)
    }

    /// The base URL of an HTTP probe, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    pub(super) fn check(&self, index: usize) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| {
            ConfigError::at_key(format!("probe[{index}].{key}"), message)
        };
        if self.name.is_empty() {
            return Err(fail("name", "must not be empty".to_owned()));
        }
        if self.max_body_bytes == 0 {
            return Err(fail(
                "max_body_bytes",
                "must be greater than zero".to_owned(),
            ));
        }
        if self.inference {
            if !Self::has_inference(self.kind) {
                return Err(fail(
                    "inference",
                    format!(
                        "kind {} has no synthetic inference request (use an inference server kind)",
                        self.kind.as_str()
                    ),
                ));
            }
            if self.inference_max_tokens == 0 {
                return Err(fail(
                    "inference_max_tokens",
                    "must be at least 1".to_owned(),
                ));
            }
            if self.kind.caps().synthetic == Synthetic::V2Infer {
                if self.inference_model.is_empty() && self.expected_model.is_none() {
                    return Err(fail(
                        "inference_model",
                        "triton/kserve inference needs a model (inference_model or expected_model)"
                            .to_owned(),
                    ));
                }
                // Checked here so a typo exits 2 at start instead of failing every request.
                let input = serde_json::from_str::<serde_json::Value>(&self.inference_input);
                if !input.is_ok_and(|v| v.get("inputs").is_some_and(|i| i.is_array())) {
                    return Err(fail(
                        "inference_input",
                        "must be a KServe v2 infer body: JSON with an \"inputs\" array".to_owned(),
                    ));
                }
            }
        }
        if self.metrics && !self.kind.caps().metrics {
            return Err(fail(
                "metrics",
                format!(
                    "kind {} has no Prometheus /metrics to scrape",
                    self.kind.as_str()
                ),
            ));
        }
        if self.kind.caps().readiness == Readiness::Connect {
            let addr = self.tcp_address();
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(fail(
                    "url",
                    format!("{} is not host:port or tcp://host:port", shown(&self.url)),
                ));
            }
            return Ok(());
        }
        check_http_url(&self.url).map_err(|message| fail("url", message))?;
        if !self.metrics_url.is_empty() {
            check_http_url(&self.metrics_url).map_err(|message| fail("metrics_url", message))?;
        }
        if self.metrics_max_body_bytes == 0 {
            return Err(fail(
                "metrics_max_body_bytes",
                "must be greater than zero".to_owned(),
            ));
        }
        if self.tls_insecure_skip_verify && !self.tls_ca_file.is_empty() {
            return Err(fail(
                "tls_insecure_skip_verify",
                "is set together with tls_ca_file; choose one".to_owned(),
            ));
        }
        for (name, value) in &self.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
            if !valid_name || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(fail(
                    &format!("headers.{name}"),
                    "is not a valid HTTP header".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an `http://` or `https://` URL with a host: the only URLs probes fetch.
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{} must start with http:// or https://", shown(url)))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['?', '#', ' ', '@']) {
        return Err(format!("{} is not http(s)://host:port[/path]", shown(url)));
    }
    Ok(())
}
