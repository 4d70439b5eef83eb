//! Hostile inputs to the binary's start-up and to the config loader: environment bytes that
//! are not UTF-8, a stderr that cannot be written, edge values, oversized and special files,
//! and a fuzzed loader. Nothing here may crash gpulse or keep a wrapped command from running.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::agent::{free_port, http_get};

fn gpulse() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpulse"));
    // The tests' own environment must not configure the binary under test.
    for (name, _) in std::env::vars_os() {
        if name.as_encoded_bytes().starts_with(b"GPULSE_")
            || name.as_encoded_bytes().starts_with(b"OTEL_")
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn bytes(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_variable_that_is_not_utf8_aborts_nothing() {
    // Someone else's variable, in its value or its name: ignored by every command.
    for (name, value) in [(&b"X"[..], &b"caf\xe9"[..]), (b"\xff\xfe", b"1")] {
        let check = gpulse()
            .args(["config", "check", "/dev/null"])
            .env(bytes(name), bytes(value))
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
        let wrap = gpulse()
            .args([
                "wrap",
                "--listen",
                "127.0.0.1:0",
                "--",
                "sh",
                "-c",
                "exit 7",
            ])
            .env("GPULSE_GPU_NVML_LIBRARY", "/nonexistent")
            .env(bytes(name), bytes(value))
            .output()
            .unwrap();
        assert_eq!(wrap.status.code(), Some(7), "{}", stderr(&wrap));
        // `run` gets past loading: on a bad --listen it exits 2 on that, not on the variable.
        let run = gpulse()
            .args(["run", "--listen", "nowhere"])
            .env(bytes(name), bytes(value))
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(stderr(&run).contains("--listen (flag)"), "{}", stderr(&run));
    }
}

#[test]
fn a_gpulse_or_otel_variable_that_is_not_utf8_is_refused_naming_it() {
    for (name, value) in [
        (&b"GPULSE_LOG_LEVEL"[..], &b"de\xffbug"[..]),
        (b"OTEL_EXPORTER_OTLP_ENDPOINT", b"http://h\xe9:4318"),
    ] {
        let shown = String::from_utf8_lossy(name).into_owned();
        for args in [&["config", "check", "/dev/null"][..], &["run"]] {
            let out = gpulse()
                .args(args)
                .env(bytes(name), bytes(value))
                .output()
                .unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(&format!("{shown} (environment)")), "{err}");
            assert!(err.contains("not valid UTF-8"), "{err}");
        }
        // Under wrap an invalid configuration still runs the command, without the agent.
        let wrap = gpulse()
            .args(["wrap", "--", "sh", "-c", "exit 5"])
            .env(bytes(name), bytes(value))
            .output()
            .unwrap();
        assert_eq!(wrap.status.code(), Some(5), "{}", stderr(&wrap));
        assert!(stderr(&wrap).contains(&shown), "{}", stderr(&wrap));
    }
}

/// A stderr nobody can write to: `/dev/full` (ENOSPC) or a pipe whose read end is closed
/// (EPIPE; Rust ignores SIGPIPE, so the write fails instead of killing the process).
fn dead_stderrs() -> Vec<(&'static str, Stdio)> {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    vec![
        ("/dev/full", Stdio::from(full)),
        ("a closed pipe", Stdio::from(writer)),
    ]
}

#[test]
fn the_agent_keeps_serving_when_stderr_cannot_be_written() {
    for (what, dead) in dead_stderrs() {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = gpulse()
            .args([
                "demo",
                "--listen",
                &addr.to_string(),
                "--log-level",
                "debug",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(dead)
            .spawn()
            .unwrap();
        // Logging goes on while it serves: the start-up lines and every debug line fail.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < 3 && Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{what}: gpulse demo exited ({status}) instead of serving");
            }
            match http_get(addr, "/healthz", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => served += 1,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let alive = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(served, 3, "{what}: /healthz was not served");
        assert!(alive, "{what}: gpulse demo died");
    }
}

#[test]
fn a_wrapped_command_runs_and_keeps_its_exit_code_when_stderr_cannot_be_written() {
    for (what, dead) in dead_stderrs() {
        // With the agent beside it, logging to the dead stderr.
        let out = gpulse()
            .args([
                "wrap",
                "--listen",
                "127.0.0.1:0",
                "--",
                "sh",
                "-c",
                "sleep 2; exit 7",
            ])
            .env("GPULSE_GPU_NVML_LIBRARY", "/nonexistent")
            .stderr(dead)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{what}");
    }
    for (what, dead) in dead_stderrs() {
        // An invalid config: the error cannot be said, and the command still runs.
        let out = gpulse()
            .args(["wrap", "--log-level", "loud", "--", "sh", "-c", "exit 6"])
            .stderr(dead)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(6), "{what}");
    }
    for (what, dead) in dead_stderrs() {
        // Exit codes of the other commands are kept too.
        let out = gpulse()
            .args(["config", "check", "/nonexistent/gpulse.toml"])
            .stderr(dead)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{what}");
    }
}

#[test]
fn output_that_cannot_be_written_is_exit_1_not_a_crash() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = gpulse()
        .args(["config", "example"])
        .stdout(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write to stdout"),
        "{}",
        stderr(&out)
    );
}

/// Runs `cmd`, killing it if it has not exited within `limit` (a hang is a failure).
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} hung; stderr: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts a one-line config error (exit 2) that contains every one of `parts`.
fn assert_refused(out: &Output, parts: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for part in parts {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
}

#[test]
fn a_duration_past_a_year_is_refused_at_load_naming_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.toml");
    std::fs::write(&path, "[http]\nrequest_timeout = \"300000000000y\"\n").unwrap();
    let file = path.to_str().unwrap();
    let out = gpulse().args(["config", "check", file]).output().unwrap();
    let at_file = format!("`http.request_timeout` at {file}:2:");
    assert_refused(&out, &[&at_file, "longer than 365 days"]);
    let out = gpulse()
        .args(["config", "check", "/dev/null"])
        .env("GPULSE_HTTP_REQUEST_TIMEOUT", "366d")
        .output()
        .unwrap();
    assert_refused(&out, &["GPULSE_HTTP_REQUEST_TIMEOUT (environment)"]);
    let out = gpulse()
        .args(["run", "--interval", "100000000000s"])
        .output()
        .unwrap();
    assert_refused(&out, &["`gpu.interval` at --interval (flag)"]);
    let out = gpulse()
        .args(["config", "check", "/dev/null"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "18446744073709551615")
        .output()
        .unwrap();
    assert_refused(&out, &["OTEL_METRIC_EXPORT_INTERVAL (environment)"]);

    // The longest accepted timeout serves connections (one near u64::MAX seconds aborted
    // on the first).
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = gpulse()
        .args(["demo", "--listen", &addr.to_string()])
        .env("GPULSE_HTTP_REQUEST_TIMEOUT", "365d")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        status = http_get(addr, "/healthz", Duration::from_secs(2))
            .ok()
            .map(|r| r.status);
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!((status, alive), (Some(200), true));
}

#[test]
fn ca_files_that_would_block_are_refused_without_hanging() {
    // A probe's and the OTLP push's CA files are read like every other file a setting names:
    // a FIFO nobody writes to is refused at once, not waited on.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ca.pem");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let fifo = fifo.to_str().unwrap();
    let config = dir.path().join("gpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[[probe]]\nname = \"llm\"\nkind = \"vllm\"\nurl = \"https://127.0.0.1:8000\"\ntls_ca_file = \"{fifo}\"\n"
        ),
    )
    .unwrap();
    let limit = Duration::from_secs(10);
    let out = output_within(
        gpulse().args(["config", "check", config.to_str().unwrap()]),
        limit,
    );
    assert_refused(&out, &[fifo, "a FIFO"]);
    let out = output_within(
        gpulse()
            .args(["config", "check", "/dev/null"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4318")
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", fifo),
        limit,
    );
    assert_refused(&out, &[fifo, "a FIFO"]);
}

#[test]
fn oversized_and_special_config_files_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(10);
    let check = |file: &str| output_within(gpulse().args(["config", "check", file]), limit);
    // Endless or blocking devices (/dev/zero, a terminal, /dev/kmsg) are not read at all.
    assert_refused(&check("/dev/zero"), &["/dev/zero", "a character device"]);
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    let big = big.to_str().unwrap();
    assert_refused(&check(big), &[big, "1 MiB"]);
    // A FIFO nobody writes to: opening it for reading would wait for a writer forever.
    let fifo = dir.path().join("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    assert_refused(&check(fifo), &[fifo, "a FIFO"]);
    let run = output_within(gpulse().args(["run", "--config", fifo]), limit);
    assert_refused(&run, &["a FIFO"]);
    assert_refused(&check(dir.path().to_str().unwrap()), &["a directory"]);
    // Bytes that are not UTF-8 are placed at their line and column.
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"[agent]\nnode_name = \"caf\xe9\"\n").unwrap();
    let latin1 = latin1.to_str().unwrap();
    assert_refused(
        &check(latin1),
        &[&format!("{latin1}:2:17"), "not valid UTF-8"],
    );
    // /dev/null stays the empty config.
    assert_eq!(check("/dev/null").status.code(), Some(0));
}

#[test]
fn an_integer_over_i64_max_is_blamed_on_its_file_line_not_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "[wrap]\nstate_max_bytes = 18446744073709551615\n",
            "wrap.state_max_bytes",
        ),
        (
            "[http]\nmax_concurrent_requests = 9000000000000000000\n",
            "http.max_concurrent_requests",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x:1\"\nmax_body_bytes = 18446744073709551615\n",
            "probe[0].max_body_bytes",
        ),
    ] {
        let path = dir.path().join("int.toml");
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        let blamed = format!("`{key}` at {file}:");
        let check = gpulse().args(["config", "check", file]).output().unwrap();
        assert_refused(&check, &[&blamed]);
        // With a flag applied after the file, the file is still the one at fault.
        let run = gpulse()
            .args(["run", "--config", file, "--log-level", "info"])
            .output()
            .unwrap();
        assert_refused(&run, &[&blamed]);
        assert!(!stderr(&run).contains("--log-level"), "{}", stderr(&run));
    }
}

#[test]
fn a_long_bad_value_is_cut_in_the_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(100_000);
    let path = dir.path().join("long.toml");
    std::fs::write(
        &path,
        format!("[gpu]\ninterval = \"{long}\"\n[[probe]]\nname = \"{long}\"\nkind = \"vllm\"\nurl = \"http://{long}\"\n"),
    )
    .unwrap();
    let outs = [
        gpulse()
            .args(["config", "check", path.to_str().unwrap()])
            .output()
            .unwrap(),
        gpulse()
            .args(["config", "check", "/dev/null"])
            .env("GPULSE_HTTP_LISTEN", &long)
            .output()
            .unwrap(),
        gpulse()
            .args(["run", "--log-level", &long])
            .output()
            .unwrap(),
        gpulse()
            .args(["config", "check", "/dev/null"])
            .env(format!("GPULSE_GPU_{long}"), "1")
            .output()
            .unwrap(),
    ];
    for out in &outs {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(300)]);
        assert_eq!(err.lines().count(), 1);
        assert!(err.len() < 1200, "{} bytes: {}", err.len(), &err[..300]);
        assert!(err.contains('…'), "{err}");
    }
}

#[test]
fn wrap_refuses_a_malformed_probe_url_before_starting_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = format!("touch {}", ran.display());
    for (kind, url) in [
        (None, "not a url"),
        (Some("vllm"), "ftp://x:1"),
        (Some("tcp"), "no-port"),
    ] {
        let mut cmd = gpulse();
        cmd.args(["wrap", "--probe-url", url]);
        if let Some(kind) = kind {
            cmd.args(["--probe-kind", kind]);
        }
        let out = cmd.args(["--", "sh", "-c", &script]).output().unwrap();
        assert_refused(&out, &["--probe-url (flag)"]);
        assert!(!ran.exists(), "the command ran with --probe-url {url:?}");
    }
    // Good URLs for the kind still run the command, whose code passes through.
    for (kind, url) in [
        ("http", "http://127.0.0.1:1/health"),
        ("tcp", "127.0.0.1:1"),
    ] {
        let out = gpulse()
            .args(["wrap", "--listen", "127.0.0.1:0", "--probe-kind", kind])
            .args(["--probe-url", url, "--", "sh", "-c", "exit 3"])
            .env("GPULSE_GPU_NVML_LIBRARY", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{kind}: {}", stderr(&out));
    }
}

#[test]
fn every_environment_error_names_its_variable() {
    use gpulse::config::{Config, env_overrides};
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            let var = format!("GPULSE_{}_{}", section, key).to_ascii_uppercase();
            for bad in [
                "x",
                "-1",
                "99999999999999999999999",
                "9223372036854775807",
                "{ a = 1 }",
                "\"",
                "nan",
                "400d",
                "",
            ] {
                let overrides = env_overrides(vec![(var.clone(), bad.to_owned())]);
                let Err(err) = gpulse::app::Parts::load(None, &overrides, |_| None) else {
                    continue;
                };
                let line = err.to_string();
                assert!(
                    line.contains(&format!("{var} (environment)")),
                    "{var}={bad:?}: {line}"
                );
                assert_eq!(line.lines().count(), 1, "{line}");
            }
        }
    }
}

/// Fuzzing the loader `run` uses ([`gpulse::app::Parts::load`]): whatever the file and the
/// `GPULSE_*` variables hold, it never panics; it loads, or refuses with one bounded line
/// that names where the fault is (the file, the variable, or the default at fault).
mod fuzz {
    use std::path::Path;

    use gpulse::app::Parts;
    use gpulse::config::{Config, ConfigError, EXAMPLE, ProbeConfig, ProbeKind, env_overrides};
    use proptest::prelude::*;

    /// A string as a TOML basic string (quoted, escaped).
    fn quoted(s: &str) -> String {
        toml::Value::String(s.to_owned()).to_string()
    }

    /// Scalar TOML values of every type, including ones no key takes.
    fn scalar() -> BoxedStrategy<String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "[1-9][0-9]{18,40}".boxed(), // past i64 and u64
            "-?[0-9]{1,4}\\.[0-9]{1,4}(e[+-]?[0-9]{1,4})?".boxed(),
            prop_oneof![Just("nan"), Just("-inf"), Just("inf"), Just("0")].prop_map(str::to_owned),
            any::<bool>().prop_map(|b| b.to_string()),
            "[0-9]{1,22} ?(ns|us|ms|s|m|h|d|w|M|y)".prop_map(|s| quoted(&s)),
            "\\PC{0,40}".prop_map(|s| quoted(&s)),
            any::<String>().prop_map(|s| quoted(&s)), // control characters, odd unicode
            "[a-z0-9./:\\[\\]-]{0,30}".prop_map(|s| quoted(&s)),
            Just("1979-05-27T07:32:00Z".to_owned()),
            "[a-zA-Z0-9 =\\[\\]{}\",.#'\\\\]{0,12}".boxed(), // not a value at all
        ]
        .boxed()
    }

    fn value() -> BoxedStrategy<String> {
        prop_oneof![
            4 => scalar(),
            1 => proptest::collection::vec(scalar(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            1 => proptest::collection::vec(("[a-z0-9_]{1,6}", scalar()), 0..3).prop_map(|kv| {
                let pairs: Vec<String> =
                    kv.iter().map(|(k, v)| format!("{} = {v}", quoted(k))).collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
            1 => Just("\"x".repeat(2000)),
        ]
        .boxed()
    }

    /// Every section and its keys, as the default config serializes, plus `probe`.
    fn keys() -> Vec<(String, Vec<String>)> {
        let table = toml::Table::try_from(Config::default()).unwrap();
        let mut out: Vec<(String, Vec<String>)> = table
            .iter()
            .map(|(s, keys)| {
                (
                    s.clone(),
                    keys.as_table().unwrap().keys().cloned().collect(),
                )
            })
            .collect();
        let probe =
            toml::Table::try_from(ProbeConfig::new("p", ProbeKind::Vllm, "http://x:1")).unwrap();
        out.push(("probe".to_owned(), probe.keys().cloned().collect()));
        out
    }

    /// `key = value` for a known key of `section` (or a made-up one). `http.listen` gets
    /// values that cannot start a DNS lookup: a fuzz case must not wait on a resolver.
    fn entry(section: usize) -> BoxedStrategy<String> {
        let (name, known) = keys()[section].clone();
        let key = prop_oneof![9 => proptest::sample::select(known), 1 => "[a-z_]{1,10}".boxed()];
        (key, value())
            .prop_map(move |(key, value)| {
                let value =
                    if name == "http" && key == "listen" && value.contains(char::is_alphabetic) {
                        "\"nowhere\"".to_owned()
                    } else {
                        value
                    };
                format!("{key} = {value}")
            })
            .boxed()
    }

    /// A document: a few sections (and `[[probe]]` blocks), each with a few entries.
    fn document() -> BoxedStrategy<String> {
        let sections = keys().len();
        let block = (0..sections)
            .prop_flat_map(move |s| (Just(s), proptest::collection::vec(entry(s), 0..5)));
        proptest::collection::vec(block, 0..6)
            .prop_map(|blocks| {
                let names = keys();
                let mut text = String::new();
                for (s, entries) in blocks {
                    let name = &names[s].0;
                    if name == "probe" {
                        text.push_str("[[probe]]\n");
                    } else {
                        text.push_str(&format!("[{name}]\n"));
                    }
                    for e in entries {
                        text.push_str(&e);
                        text.push('\n');
                    }
                }
                text
            })
            .boxed()
    }

    /// The example config with a few bytes overwritten or inserted.
    fn mutated_example() -> BoxedStrategy<Vec<u8>> {
        proptest::collection::vec(
            (any::<proptest::sample::Index>(), any::<u8>(), any::<bool>()),
            1..8,
        )
        .prop_map(|edits| {
            let mut bytes = EXAMPLE.as_bytes().to_vec();
            for (at, byte, insert) in edits {
                let i = at.index(bytes.len());
                if insert {
                    bytes.insert(i, byte);
                } else {
                    bytes[i] = byte;
                }
            }
            bytes
        })
        .boxed()
    }

    /// `GPULSE_<SECTION>_<KEY>` variables with values of every shape, raw or TOML-like.
    fn env() -> BoxedStrategy<Vec<(String, String)>> {
        let one = (0..keys().len() - 1).prop_flat_map(|s| {
            let (section, known) = keys()[s].clone();
            (
                Just(section),
                prop_oneof![4 => proptest::sample::select(known), 1 => "[a-z_]{1,8}".boxed()],
                prop_oneof![value(), any::<String>(), "\\PC{0,20}".boxed()],
            )
        });
        proptest::collection::vec(one, 0..3)
            .prop_map(|vars| {
                vars.into_iter()
                    .map(|(s, k, v)| {
                        let v = if k == "listen" {
                            "nowhere".to_owned()
                        } else {
                            v
                        };
                        (format!("GPULSE_{s}_{k}").to_ascii_uppercase(), v)
                    })
                    .collect()
            })
            .boxed()
    }

    /// Loads `bytes` as the file under `vars`, as `run` does, and checks the outcome.
    fn check(dir: &Path, bytes: &[u8], vars: Vec<(String, String)>) -> Result<(), TestCaseError> {
        let path = dir.join("fuzz.toml");
        std::fs::write(&path, bytes).unwrap();
        let file = path.display().to_string();
        let overrides = env_overrides(vars);
        let Err(error) = Parts::load(Some(&path), &overrides, |_| None) else {
            return Ok(());
        };
        check_error(&error, &file)
    }

    fn check_error(error: &ConfigError, file: &str) -> Result<(), TestCaseError> {
        let line = error.to_string();
        prop_assert_eq!(line.lines().count(), 1, "{}", line);
        prop_assert!(line.len() < 2048, "{} bytes: {}", line.len(), line);
        let named = line.contains(file)
            || line.contains("(environment)")
            || (error.key.is_some() && error.origin == "built-in default");
        prop_assert!(named, "names no origin: {}", line);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn documents_of_every_shape_load_or_fail_on_one_line(doc in document(), vars in env()) {
            let dir = tempfile::tempdir().unwrap();
            check(dir.path(), doc.as_bytes(), vars)?;
        }

        #[test]
        fn random_and_mutated_bytes_load_or_fail_on_one_line(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mutated_example()]
        ) {
            let dir = tempfile::tempdir().unwrap();
            check(dir.path(), &bytes, Vec::new())?;
        }
    }
}
