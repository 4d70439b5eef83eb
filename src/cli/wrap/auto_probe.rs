//! The probe `gpulse wrap` configures for its child, told from the child's command line.
//!
//! [`infer_probe`] is pure (argv and an environment lookup in, a probe out) and knows the
//! servers whose kind and port a command line shows:
//!
//! | command | kind | port (default) | host flag |
//! |---|---|---|---|
//! | `vllm serve`, `python -m vllm.entrypoints.openai.api_server` | vllm | `--port` (8000) | `--host` |
//! | `text-generation-launcher` | tgi | `--port`, env `PORT` (3000) | `--hostname` |
//! | `tritonserver` | triton | `--http-port` (8000) | `--http-address` |
//! | `python -m sglang.launch_server` | sglang | `--port` (30000) | `--host` |
//! | `ollama serve` | ollama | env `OLLAMA_HOST` (11434) | env `OLLAMA_HOST` |
//! | `llama-server` | llamacpp | `--port`, env `LLAMA_ARG_PORT` (8080) | `--host`, env `LLAMA_ARG_HOST` |
//! | `mlserver start` | kserve | env `MLSERVER_HTTP_PORT` (8080) | env `MLSERVER_HOST` |
//! | `python -m http.server [PORT]` | http | positional (8000) | `--bind`, `-b` |
//!
//! Launchers in front are seen through: `env [VAR=VALUE…]`, `exec`, leading `VAR=VALUE`
//! assignments (which also count as environment), `sh|bash|dash -c "…"` (split on whitespace,
//! quotes stripped), and `python`, `python3`, `python3.11` with interpreter flags before `-m`.
//! A wildcard or empty host (`0.0.0.0`, `::`) is probed on `127.0.0.1`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{ProbeConfig, ProbeKind};

/// The probe for the server `argv` starts, or `None` when the command is not one of the known
/// servers (or names a port that is not a number).
pub fn infer_probe(argv: &[String], env: impl Fn(&str) -> Option<String>) -> Option<ProbeConfig> {
    let mut inline = BTreeMap::new();
    let commands = see_through(argv, &mut inline, 0);
    let env = |name: &str| inline.get(name).cloned().or_else(|| env(name));
    // A shell script's last server command wins (`pip install … && exec vllm serve …`).
    commands.iter().rev().find_map(|argv| infer_one(argv, &env))
}

fn infer_one(argv: &[String], env: &dyn Fn(&str) -> Option<String>) -> Option<ProbeConfig> {
    let program = basename(argv.first()?);
    let args = &argv[1..];
    let (kind, host, port, path) = match program {
        "vllm" if args.first().map(String::as_str) == Some("serve") => {
            let (host, port) = host_port(args, &["--host"], &["--port"], port_of(ProbeKind::Vllm))?;
            (ProbeKind::Vllm, host, port, "")
        }
        "text-generation-launcher" => {
            let port = match flag(args, &["--port", "-p"]) {
                Some(p) => parse_port(&p)?,
                None => env("PORT").map_or(Some(port_of(ProbeKind::Tgi)), |p| parse_port(&p))?,
            };
            (ProbeKind::Tgi, flag(args, &["--hostname"]), port, "")
        }
        "tritonserver" => {
            let (host, port) = host_port(
                args,
                &["--http-address"],
                &["--http-port"],
                port_of(ProbeKind::Triton),
            )?;
            (ProbeKind::Triton, host, port, "")
        }
        "ollama" if args.first().map(String::as_str) == Some("serve") => {
            let (host, port) = ollama_host(env("OLLAMA_HOST").as_deref())?;
            (ProbeKind::Ollama, host, port, "")
        }
        "llama-server" => {
            let port = match flag(args, &["--port"]) {
                Some(p) => parse_port(&p)?,
                None => env("LLAMA_ARG_PORT")
                    .map_or(Some(port_of(ProbeKind::Llamacpp)), |p| parse_port(&p))?,
            };
            let host = flag(args, &["--host"]).or_else(|| env("LLAMA_ARG_HOST"));
            (ProbeKind::Llamacpp, host, port, "")
        }
        "mlserver" if args.first().map(String::as_str) == Some("start") => {
            let port = env("MLSERVER_HTTP_PORT")
                .map_or(Some(port_of(ProbeKind::Kserve)), |p| parse_port(&p))?;
            (ProbeKind::Kserve, env("MLSERVER_HOST"), port, "")
        }
        _ if is_python(program) => {
            let (module, rest) = python_module(args)?;
            match module {
                "vllm.entrypoints.openai.api_server" => {
                    let (host, port) =
                        host_port(rest, &["--host"], &["--port"], port_of(ProbeKind::Vllm))?;
                    (ProbeKind::Vllm, host, port, "")
                }
                "sglang.launch_server" => {
                    let (host, port) =
                        host_port(rest, &["--host"], &["--port"], port_of(ProbeKind::Sglang))?;
                    (ProbeKind::Sglang, host, port, "")
                }
                "http.server" => {
                    let port = match positional(rest, &["--bind", "-b", "--directory", "-d"]) {
                        Some(p) => parse_port(p)?,
                        None => 8000,
                    };
                    (ProbeKind::Http, flag(rest, &["--bind", "-b"]), port, "/")
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let url = format!("http://{}:{port}{path}", probe_host(host.as_deref()));
    Some(ProbeConfig::new(kind.as_str(), kind, &url))
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

fn host_port(
    args: &[String],
    host_flags: &[&str],
    port_flags: &[&str],
    default_port: u16,
) -> Option<(Option<String>, u16)> {
    let port = match flag(args, port_flags) {
        Some(p) => parse_port(&p)?,
        None => default_port,
    };
    Some((flag(args, host_flags), port))
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
