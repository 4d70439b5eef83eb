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
