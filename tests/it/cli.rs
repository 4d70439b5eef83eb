//! The binary's command line: exit codes, one-line config errors, and validation before bind.

use std::net::TcpListener;
use std::process::{Command, Output};

fn gpulse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpulse"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn example_config_passes_check() {
    let example = gpulse(&["config", "example"], &[]);
    assert_eq!(example.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpulse.toml");
    std::fs::write(&path, &example.stdout).unwrap();
    let check = gpulse(&["config", "check", path.to_str().unwrap()], &[]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(String::from_utf8_lossy(&check.stdout).ends_with(": ok\n"));
}

#[test]
fn bad_config_exits_2_with_one_line_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[agent]\nnode_name = \"n1\"\n\n[gpu]\ninterval = \"fast\"\n",
    )
    .unwrap();
    let out = gpulse(&["config", "check", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`gpu.interval`"), "{err}");
    assert!(err.contains(&format!("{}:5:", path.display())), "{err}");
}

#[test]
fn bad_probes_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "[[probe]]\nname = \"a\"\nkind = \"nope\"\nurl = \"http://x:1\"\n",
            "`probe.kind`",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"ftp://x:1\"\n",
            "`probe[0].url`",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"tcp\"\nurl = \"x:1\"\ninference = true\n",
            "`probe[0].inference`",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"kserve\"\nurl = \"http://x:1\"\ninference = true\ninference_model = \"iris\"\ninference_input = \"{\\\"inputs\\\": 1}\"\n",
            "`probe[0].inference_input`",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"https://x:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
            "`probe[0].tls_ca_file`",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"tcp\"\nurl = \"x:1\"\n\n[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://x\"\n",
            "`probe[1].name`",
        ),
    ] {
        let path = dir.path().join("probe.toml");
        std::fs::write(&path, text).unwrap();
        let out = gpulse(&["config", "check", path.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn bad_env_and_flags_exit_2_naming_their_origin() {
    let out = gpulse(
        &["config", "check", "/dev/null"],
        &[("GPULSE_HOST_PER_CPU", "sometimes")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("GPULSE_HOST_PER_CPU (environment)"),
        "{}",
        stderr(&out)
    );

    let out = gpulse(&["run", "--interval", "0ms"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--interval (flag)"),
        "{}",
        stderr(&out)
    );

    let out = gpulse(&["run", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_is_validated_before_the_port_is_bound() {
    // The port is taken: a bind attempt would fail with exit 1. Exit 2 proves validation came first.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = gpulse(&["--listen", &addr, "--log-level", "[[["], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("log.level"), "{}", stderr(&out));

    let out = gpulse(
        &["--listen", &addr],
        &[("GPULSE_GPU_NVML_LIBRARY", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot listen"), "{}", stderr(&out));
}

#[test]
fn unreadable_config_file_is_a_usage_error() {
    let out = gpulse(&["--config", "/nonexistent/gpulse.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read file"),
        "{}",
        stderr(&out)
    );
}

/// Runs the agent on a port that is taken, so exit 2 (not 1) proves the files were checked
/// before any bind; returns the exit code and the one line of stderr.
fn run_on_taken_port(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = gpulse(&["demo", "--listen", &addr], env);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    (out.status.code(), err)
}

#[test]
fn unreadable_or_half_configured_tls_exits_2_before_bind() {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let missing = "/nonexistent/tls.crt";
    let (code, err) = run_on_taken_port(&[
        ("GPULSE_HTTP_TLS_CERT_FILE", missing),
        ("GPULSE_HTTP_TLS_KEY_FILE", key),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`http.tls_cert_file`"), "{err}");
    assert!(err.contains(missing), "{err}");

    let (code, err) = run_on_taken_port(&[("GPULSE_HTTP_TLS_CERT_FILE", cert)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`http.tls_key_file`"), "{err}");
    assert!(err.contains("`http.tls_cert_file` is set"), "{err}");

    // The certificate as the key: the key file is at fault.
    let (code, err) = run_on_taken_port(&[
        ("GPULSE_HTTP_TLS_CERT_FILE", cert),
        ("GPULSE_HTTP_TLS_KEY_FILE", cert),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`http.tls_key_file`"), "{err}");
    assert!(err.contains("no PRIVATE KEY"), "{err}");

    // `config check` catches the half-configured case too.
    let out = gpulse(
        &["config", "check", "/dev/null"],
        &[("GPULSE_HTTP_TLS_KEY_FILE", key)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`http.tls_cert_file`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_or_missing_token_file_exits_2_before_bind() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let (code, err) = run_on_taken_port(&[("GPULSE_HTTP_BEARER_TOKEN_FILE", empty)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`http.bearer_token_file`"), "{err}");
    assert!(err.contains(empty), "{err}");
    assert!(err.contains("empty"), "{err}");

    let (code, err) = run_on_taken_port(&[("GPULSE_HTTP_BEARER_TOKEN_FILE", "/nonexistent/token")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`http.bearer_token_file` at /nonexistent/token"),
        "{err}"
    );
}
