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
