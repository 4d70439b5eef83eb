//! The probe `gpulse wrap` configures for its child, told from the child's command line.
//!
//! [`infer_probe`] is pure (argv and an environment lookup in, a probe out) and knows the
//! servers whose kind and port a command line shows:
//!
//! Which command lines start which kind, and where each puts its host and port, is data: the
//! [`Launcher`]s of each kind's row in `ProbeKind::caps` (vllm serve and vLLM's api_server
//! module, text-generation-launcher, tritonserver, sglang.launch_server, ollama serve,
//! llama-server, mlserver start, python -m http.server). This file applies them.
//!
//! Launchers in front are seen through: `env [VAR=VALUE…]`, `exec`, leading `VAR=VALUE`
//! assignments (which also count as environment), `sh|bash|dash -c "…"` (split on whitespace,
//! quotes stripped), and `python`, `python3`, `python3.11` with interpreter flags before `-m`.
//! A wildcard or empty host (`0.0.0.0`, `::`) is probed on `127.0.0.1`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{
    LaunchAddress, LaunchCommand, LaunchMetrics, Launcher, ModelFrom, ProbeConfig, ProbeKind,
    Synthetic,
};

/// The probe for the server `argv` starts, or `None` when the command is not one of the known
/// servers (or names a port that is not a number).
pub fn infer_probe(argv: &[String], env: impl Fn(&str) -> Option<String>) -> Option<ProbeConfig> {
    let mut inline = BTreeMap::new();
    let commands = see_through(argv, &mut inline, 0);
    let env = |name: &str| inline.get(name).cloned().or_else(|| env(name));
    // A shell script's last server command wins (`pip install … && exec vllm serve …`).
    commands.iter().rev().find_map(|argv| infer_one(argv, &env))
}

/// The probe of the first kind with a [`Launcher`] that starts `argv`.
fn infer_one(argv: &[String], env: &dyn Fn(&str) -> Option<String>) -> Option<ProbeConfig> {
    let program = basename(argv.first()?);
    let args = &argv[1..];
    let module = is_python(program).then(|| python_module(args)).flatten();
    for kind in ProbeKind::ALL {
        for launcher in kind.caps().launchers {
            let rest = match launcher.command {
                LaunchCommand::Program(name, subcommand) if name == program => match subcommand {
                    Some(sub) if args.first().map(String::as_str) != Some(sub) => continue,
                    _ => args,
                },
                LaunchCommand::PythonModule(name) => match module {
                    Some((m, rest)) if m == name => rest,
                    _ => continue,
                },
                LaunchCommand::Program(..) => continue,
            };
            // A port that is not a number gives no probe rather than a wrong one.
            let (host, port) = address(kind, launcher, rest, env)?;
            let host = probe_host(host.as_deref());
            let url = format!("http://{host}:{port}{}", launcher.path);
            let mut probe = ProbeConfig::new(kind.as_str(), kind, &url);
            probe.expected_model = served_model(launcher, rest, env);
            match launcher.metrics {
                LaunchMetrics::Off => {}
                LaunchMetrics::On => probe.metrics = true,
                LaunchMetrics::WhenFlag(name, var) => {
                    probe.metrics = rest.iter().any(|a| a == name)
                        || var.and_then(env).is_some_and(|v| truthy(&v));
                }
                LaunchMetrics::Port { flags, default } => {
                    let port = match flag(rest, flags) {
                        Some(p) => parse_port(&p)?,
                        None => default,
                    };
                    probe.metrics = true;
                    probe.metrics_url = format!("http://{host}:{port}/metrics");
                }
            }
            // The synthetic request, where the kind's needs nothing the command line lacks
            // (Triton's and KServe's need the model's own input tensor: `inference_input`).
            probe.inference = matches!(
                kind.caps().synthetic,
                Synthetic::Completions { .. } | Synthetic::OllamaGenerate
            );
            return Some(probe);
        }
    }
    None
}

/// The host (if the command line names one) and port `launcher` reads from `args` and `env`.
fn address(
    kind: ProbeKind,
    launcher: &Launcher,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(Option<String>, u16)> {
    let host = || flag(args, launcher.host_flags).or_else(|| launcher.host_env.and_then(env));
    match launcher.address {
        LaunchAddress::Flags => {
            let port = match flag(args, launcher.port_flags) {
                Some(p) => parse_port(&p)?,
                None => match launcher.port_env.and_then(env) {
                    Some(p) => parse_port(&p)?,
                    None => port_of(kind),
                },
            };
            Some((host(), port))
        }
        LaunchAddress::OllamaHost => ollama_host(env("OLLAMA_HOST").as_deref()),
        LaunchAddress::Positional { skip, default } => {
            let port = match positional(args, skip) {
                Some(p) => parse_port(p)?,
                None => default,
            };
            Some((host(), port))
        }
    }
}

/// The model the server lists, from the first of the launcher's [`ModelFrom`] places that
/// names one (`launcher.command`'s subcommand, if any, is `args[0]`).
fn served_model(
    launcher: &Launcher,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    launcher
        .model
        .iter()
        .find_map(|from| match from {
            ModelFrom::Flag(name) => flag(args, &[name]),
            ModelFrom::Env(var) => env(var),
            ModelFrom::AfterSubcommand => match launcher.command {
                LaunchCommand::Program(_, Some(_)) => {
                    args.get(1).filter(|a| !a.starts_with('-')).cloned()
                }
                _ => None,
            },
        })
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
}

/// A variable's true value as llama.cpp reads them (`1`, `true`, `on`, `enabled`).
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "enabled" | "yes"
    )
}

/// Strips launchers (`env`, `exec`, `VAR=VALUE`) off the front; assignments go into
/// `inline`. A `sh -c` script gives each of its commands (split at `;`, `&`, `|`, newlines).
fn see_through(
    argv: &[String],
    inline: &mut BTreeMap<String, String>,
    depth: usize,
) -> Vec<Vec<String>> {
    let mut rest = argv;
    loop {
        let Some(first) = rest.first() else {
            return Vec::new();
        };
        let name = basename(first);
        if name == "env" {
            rest = &rest[1..];
            // `env -i`, `env -u VAR`: flags of env itself.
            while let Some(f) = rest.first().filter(|f| f.starts_with('-')) {
                let takes_value = f == "-u" || f == "--unset" || f == "-C" || f == "--chdir";
                rest = &rest[if takes_value { 2 } else { 1 }.min(rest.len())..];
            }
        } else if name == "exec" {
            rest = &rest[1..];
        } else if let Some((var, value)) = assignment(first) {
            inline.insert(var.to_owned(), value.to_owned());
            rest = &rest[1..];
        } else if matches!(name, "sh" | "bash" | "dash" | "zsh") && depth < 4 {
            let Some(script) = rest
                .iter()
                .position(|a| a == "-c")
                .and_then(|i| rest.get(i + 1))
            else {
                return Vec::new();
            };
            return script
                .split([';', '&', '|', '\n'])
                .flat_map(|command| {
                    let words: Vec<String> = command
                        .split_whitespace()
                        .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_owned())
                        .filter(|w| !w.is_empty())
                        .collect();
                    see_through(&words, inline, depth + 1)
                })
                .collect();
        } else {
            return vec![rest.to_vec()];
        }
    }
}

/// `VAR=VALUE` with a valid variable name.
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (var, value) = word.split_once('=')?;
    let valid = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((var, value))
}

fn basename(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// `python`, `python3`, `python3.11`.
fn is_python(program: &str) -> bool {
    program
        .strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The module after `-m` and the arguments after it (interpreter flags before `-m` skipped).
fn python_module(args: &[String]) -> Option<(&str, &[String])> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "-m" {
            return Some((args.get(i + 1)?.as_str(), args.get(i + 2..).unwrap_or(&[])));
        }
        if let Some(module) = arg.strip_prefix("-m").filter(|m| !m.is_empty()) {
            return Some((module, args.get(i + 1..).unwrap_or(&[])));
        }
        if !arg.starts_with('-') {
            return None; // a script, not a module
        }
        // `-X opt` and `-W arg` take a value.
        i += if arg == "-X" || arg == "-W" { 2 } else { 1 };
    }
    None
}

/// The value of the last `--name VALUE` or `--name=VALUE` among `names`.
fn flag(args: &[String], names: &[&str]) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if names.contains(&arg.as_str()) {
            found = args.get(i + 1).cloned();
            i += 2;
            continue;
        }
        if let Some((name, value)) = arg.split_once('=')
            && names.contains(&name)
        {
            found = Some(value.to_owned());
        }
        i += 1;
    }
    found
}

/// The first argument that is neither a flag nor the value of one of `with_value`.
fn positional<'a>(args: &'a [String], with_value: &[&str]) -> Option<&'a str> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if with_value.contains(&arg.as_str()) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            return Some(arg);
        }
    }
    None
}

/// The server's default port, from the kinds table (80 for a kind without one, which no
/// rule here asks for).
fn port_of(kind: ProbeKind) -> u16 {
    kind.caps().default_port.unwrap_or(80)
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// `OLLAMA_HOST`: `host`, `host:port`, `:port`, with or without `http://`; default
/// 127.0.0.1:11434.
fn ollama_host(value: Option<&str>) -> Option<(Option<String>, u16)> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Some((None, port_of(ProbeKind::Ollama)));
    };
    let value = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .unwrap_or(value)
        .trim_end_matches('/');
    match value.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            Some((Some(host.to_owned()), parse_port(port)?))
        }
        _ => Some((Some(value.to_owned()), port_of(ProbeKind::Ollama))),
    }
}

/// The host to probe: a wildcard or empty bind address means loopback; IPv6 gets brackets.
fn probe_host(host: Option<&str>) -> String {
    let host = host.map(str::trim).unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare {
        "" | "0.0.0.0" | "::" | "*" => "127.0.0.1".to_owned(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(cmd: &str, env: &[(&str, &str)]) -> Option<(String, &'static str, String)> {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        infer_probe(&argv, |name| env.get(name).cloned())
            .map(|p| (p.name.clone(), p.kind.as_str(), p.url))
    }

    fn expect(cmd: &str, env: &[(&str, &str)], kind: &'static str, url: &str) {
        assert_eq!(
            probe(cmd, env),
            Some((kind.to_owned(), kind, url.to_owned())),
            "{cmd} {env:?}"
        );
    }

    /// Command line, environment, expected kind, expected URL.
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);

    #[test]
    fn every_launcher_in_the_kinds_table_is_recognised_with_its_default_port() {
        for kind in ProbeKind::ALL {
            for launcher in kind.caps().launchers {
                let words: Vec<&str> = match launcher.command {
                    LaunchCommand::Program(name, sub) => {
                        [Some(name), sub].into_iter().flatten().collect()
                    }
                    LaunchCommand::PythonModule(module) => vec!["python3", "-m", module],
                };
                let argv: Vec<String> = words.into_iter().map(str::to_owned).collect();
                let probe = infer_probe(&argv, |_| None).unwrap_or_else(|| panic!("{argv:?}"));
                assert_eq!(probe.kind, kind, "{argv:?}");
                let port = match launcher.address {
                    LaunchAddress::Positional { default, .. } => default,
                    _ => port_of(kind),
                };
                assert_eq!(
                    probe.url,
                    format!("http://127.0.0.1:{port}{}", launcher.path),
                    "{argv:?}"
                );
            }
        }
    }

    #[test]
    fn the_known_servers_and_their_defaults() {
        let table: &[Row<'_>] = &[
            (
                "vllm serve meta-llama/Llama-3.1-8B",
                &[],
                "vllm",
                "http://127.0.0.1:8000",
            ),
            (
                "vllm serve m --port 8001 --host 0.0.0.0",
                &[],
                "vllm",
                "http://127.0.0.1:8001",
            ),
            (
                "vllm serve m --port=9000 --host=10.0.0.5",
                &[],
                "vllm",
                "http://10.0.0.5:9000",
            ),
            (
                "/usr/local/bin/vllm serve m --host :: --port 80",
                &[],
                "vllm",
                "http://127.0.0.1:80",
            ),
            (
                "python3 -m vllm.entrypoints.openai.api_server --model m --port 8080",
                &[],
                "vllm",
                "http://127.0.0.1:8080",
            ),
            (
                "python -u -m vllm.entrypoints.openai.api_server",
                &[],
                "vllm",
                "http://127.0.0.1:8000",
            ),
            (
                "text-generation-launcher --model-id m",
                &[],
                "tgi",
                "http://127.0.0.1:3000",
            ),
            (
                "text-generation-launcher --model-id m",
                &[("PORT", "80")],
                "tgi",
                "http://127.0.0.1:80",
            ),
            (
                "text-generation-launcher --port 8080",
                &[("PORT", "80")],
                "tgi",
                "http://127.0.0.1:8080",
            ),
            (
                "tritonserver --model-repository=/models",
                &[],
                "triton",
                "http://127.0.0.1:8000",
            ),
            (
                "tritonserver --http-port 8010 --grpc-port 8011",
                &[],
                "triton",
                "http://127.0.0.1:8010",
            ),
            (
                "python3 -m sglang.launch_server --model-path m",
                &[],
                "sglang",
                "http://127.0.0.1:30000",
            ),
            (
                "python3.11 -m sglang.launch_server --port 31000 --host 0.0.0.0",
                &[],
                "sglang",
                "http://127.0.0.1:31000",
            ),
            ("ollama serve", &[], "ollama", "http://127.0.0.1:11434"),
            (
                "ollama serve",
                &[("OLLAMA_HOST", "0.0.0.0:11500")],
                "ollama",
                "http://127.0.0.1:11500",
            ),
            (
                "ollama serve",
                &[("OLLAMA_HOST", "http://10.1.1.1")],
                "ollama",
                "http://10.1.1.1:11434",
            ),
            (
                "llama-server -m model.gguf",
                &[],
                "llamacpp",
                "http://127.0.0.1:8080",
            ),
            (
                "llama-server -m model.gguf --port 8081 --host 0.0.0.0",
                &[],
                "llamacpp",
                "http://127.0.0.1:8081",
            ),
            (
                "llama-server -m model.gguf",
                &[("LLAMA_ARG_PORT", "9090")],
                "llamacpp",
                "http://127.0.0.1:9090",
            ),
            (
                "mlserver start /models",
                &[],
                "kserve",
                "http://127.0.0.1:8080",
            ),
            (
                "mlserver start .",
                &[("MLSERVER_HTTP_PORT", "9000")],
                "kserve",
                "http://127.0.0.1:9000",
            ),
            (
                "python3 -m http.server",
                &[],
                "http",
                "http://127.0.0.1:8000/",
            ),
            (
                "python3 -m http.server 8123 --bind 127.0.0.1",
                &[],
                "http",
                "http://127.0.0.1:8123/",
            ),
            (
                "python3 -m http.server -d /srv 8124",
                &[],
                "http",
                "http://127.0.0.1:8124/",
            ),
            ("vllm serve m --host ::1", &[], "vllm", "http://[::1]:8000"),
        ];
        for (cmd, env, kind, url) in table {
            expect(cmd, env, kind, url);
        }
    }

    #[test]
    fn launchers_in_front_are_seen_through() {
        expect(
            "env VLLM_X=1 vllm serve m --port 8002",
            &[],
            "vllm",
            "http://127.0.0.1:8002",
        );
        expect(
            "env -i PORT=81 text-generation-launcher",
            &[],
            "tgi",
            "http://127.0.0.1:81",
        );
        expect(
            "PORT=82 text-generation-launcher",
            &[("PORT", "80")],
            "tgi",
            "http://127.0.0.1:82",
        );
        expect("exec vllm serve m", &[], "vllm", "http://127.0.0.1:8000");
        let argv: Vec<String> = [
            "bash",
            "-c",
            "pip install x && exec vllm serve 'm' --port 8003",
        ]
        .map(str::to_owned)
        .to_vec();
        let p = infer_probe(&argv, |_| None).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:8003");
    }

    #[test]
    fn unknown_commands_and_bad_ports_give_no_probe() {
        for cmd in [
            "python3 train.py --port 8000",
            "vllm bench throughput",
            "ollama run llama3",
            "sh -c",
            "vllm serve m --port eighty",
            "vllm serve m --port 0",
            "python3 -m pip install vllm",
            "python3",
            "sleep 10",
        ] {
            assert_eq!(probe(cmd, &[]), None, "{cmd}");
        }
        assert_eq!(infer_probe(&[], |_| None), None);
        assert_eq!(
            probe("text-generation-launcher", &[("PORT", "x")]),
            None,
            "an unparsable PORT is not silently 3000"
        );
    }

    /// Expected model, metrics URL (`None`: not scraped) and inference of an inferred probe.
    type Extras = (Option<String>, Option<String>, bool);
    /// Command line, environment, what the probe should get.
    type ExtrasRow<'a> = (&'a str, &'a [(&'a str, &'a str)], Extras);

    fn extras(cmd: &str, env: &[(&str, &str)]) -> Extras {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let p = infer_probe(&argv, |name| env.get(name).cloned()).unwrap();
        let mut config = crate::config::Config::default();
        config.probe.push(p.clone());
        config.validate().unwrap_or_else(|e| panic!("{cmd}: {e}"));
        (
            p.expected_model.clone(),
            p.metrics.then(|| p.metrics_url()),
            p.inference,
        )
    }

    #[test]
    fn the_model_metrics_and_synthetic_request_come_from_the_command_line() {
        let some = |s: &str| Some(s.to_owned());
        let table: &[ExtrasRow<'_>] = &[
            (
                "vllm serve meta-llama/Llama-3.1-8B --port 8001",
                &[],
                (
                    some("meta-llama/Llama-3.1-8B"),
                    some("http://127.0.0.1:8001/metrics"),
                    true,
                ),
            ),
            (
                "vllm serve m --served-model-name llama",
                &[],
                (some("llama"), some("http://127.0.0.1:8000/metrics"), true),
            ),
            (
                "vllm serve --port 8000",
                &[],
                (None, some("http://127.0.0.1:8000/metrics"), true),
            ),
            (
                "python3 -m vllm.entrypoints.openai.api_server --model m",
                &[],
                (some("m"), some("http://127.0.0.1:8000/metrics"), true),
            ),
            (
                "text-generation-launcher --model-id bigscience/bloom-560m",
                &[],
                (
                    some("bigscience/bloom-560m"),
                    some("http://127.0.0.1:3000/metrics"),
                    true,
                ),
            ),
            (
                "text-generation-launcher",
                &[("MODEL_ID", "x/y")],
                (some("x/y"), some("http://127.0.0.1:3000/metrics"), true),
            ),
            (
                "python3 -m sglang.launch_server --model-path q/w --enable-metrics",
                &[],
                (some("q/w"), some("http://127.0.0.1:30000/metrics"), true),
            ),
            (
                "python3 -m sglang.launch_server --model-path q/w --served-model-name s",
                &[],
                (some("s"), None, true),
            ),
            (
                "llama-server -m /models/tiny.gguf --metrics",
                &[],
                (
                    some("/models/tiny.gguf"),
                    some("http://127.0.0.1:8080/metrics"),
                    true,
                ),
            ),
            (
                "llama-server -m tiny.gguf -a tiny",
                &[("LLAMA_ARG_ENDPOINT_METRICS", "1")],
                (some("tiny"), some("http://127.0.0.1:8080/metrics"), true),
            ),
            (
                "llama-server -m tiny.gguf",
                &[],
                (some("tiny.gguf"), None, true),
            ),
            ("ollama serve", &[], (None, None, true)),
            (
                "tritonserver --model-repository=/m --metrics-port 9002",
                &[],
                (None, some("http://127.0.0.1:9002/metrics"), false),
            ),
            (
                "tritonserver --model-repository=/m",
                &[],
                (None, some("http://127.0.0.1:8002/metrics"), false),
            ),
            ("mlserver start .", &[], (None, None, false)),
            ("python3 -m http.server 9", &[], (None, None, false)),
        ];
        for (cmd, env, want) in table {
            assert_eq!(&extras(cmd, env), want, "{cmd} {env:?}");
        }
    }

    #[test]
    fn every_inferred_probe_is_a_valid_config() {
        let mut config = crate::config::Config::default();
        config
            .probe
            .push(infer_probe(&["vllm".to_owned(), "serve".to_owned()], |_| None).unwrap());
        config.probe.push(
            infer_probe(
                &["python3", "-m", "http.server", "9"].map(str::to_owned),
                |_| None,
            )
            .unwrap(),
        );
        config.validate().unwrap();
    }
}
