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
    assert!(
        err.contains("`http.tls_cert_file` at GPULSE_HTTP_TLS_CERT_FILE (environment)"),
        "{err}"
    );
    assert!(err.contains("`http.tls_key_file` is empty"), "{err}");

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
        stderr(&out).contains("`http.tls_key_file` at GPULSE_HTTP_TLS_KEY_FILE (environment)"),
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
        err.contains(
            "`http.bearer_token_file` at GPULSE_HTTP_BEARER_TOKEN_FILE (environment): /nonexistent/token: cannot read"
        ),
        "{err}"
    );
}

/// Bad files, each as `(name, text, key)`: `run` refuses them before binding, and
/// `config check` (the systemd unit's ExecStartPre) must refuse them with the same line.
fn bad_files(dir: &std::path::Path) -> Vec<(&'static str, String, &'static str)> {
    let empty = dir.join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let key = dir.join("tls.key");
    std::fs::write(&key, "not a key\n").unwrap();
    let (empty, key) = (empty.display(), key.display());
    vec![
        (
            "tls cert file missing",
            format!("[http]\ntls_cert_file = \"/nonexistent/c.pem\"\ntls_key_file = \"{key}\"\n"),
            "http.tls_cert_file",
        ),
        (
            "tls key only",
            format!("[http]\ntls_key_file = \"{key}\"\n"),
            "http.tls_key_file",
        ),
        (
            "token file missing",
            "[http]\nbearer_token_file = \"/nonexistent/token\"\n".to_owned(),
            "http.bearer_token_file",
        ),
        (
            "token file empty",
            format!("[http]\nbearer_token_file = \"{empty}\"\n"),
            "http.bearer_token_file",
        ),
        ("log level warning", "[log]\nlevel = \"warning\"\n".to_owned(), "log.level"),
        ("log level loud", "[log]\nlevel = \"loud\"\n".to_owned(), "log.level"),
        (
            "probe CA file missing",
            "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"https://x:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n".to_owned(),
            "probe[0].tls_ca_file",
        ),
        (
            "duplicate probe name",
            "[[probe]]\nname = \"a\"\nkind = \"tcp\"\nurl = \"x:1\"\n\n[[probe]]\nname = \"a\"\nkind = \"tcp\"\nurl = \"x:2\"\n".to_owned(),
            "probe[1].name",
        ),
        (
            "probe url",
            "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"ftp://x:1\"\n".to_owned(),
            "probe[0].url",
        ),
        (
            "xid override",
            "[health]\nxid_overrides = { \"94\" = \"sometimes\" }\n".to_owned(),
            "health.xid_overrides",
        ),
        ("ratio", "[health]\nhw_slowdown_ratio = 2.0\n".to_owned(), "health.hw_slowdown_ratio"),
        (
            "otlp protocol",
            "[otlp]\nendpoint = \"http://c:4318\"\nprotocol = \"http/json\"\n".to_owned(),
            "otlp.protocol",
        ),
        (
            "otlp endpoint",
            "[otlp]\nendpoint = \"c:4318\"\n".to_owned(),
            "otlp.endpoint",
        ),
        (
            "state file size",
            "[wrap]\nstate_max_bytes = 10\n".to_owned(),
            "wrap.state_max_bytes",
        ),
        ("listen", "[http]\nlisten = \"nowhere\"\n".to_owned(), "http.listen"),
        ("duration", "[gpu]\ninterval = \"fast\"\n".to_owned(), "gpu.interval"),
    ]
}

#[test]
fn run_and_config_check_refuse_the_same_files_with_the_same_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (name, text, key) in bad_files(dir.path()) {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let file = path.to_str().unwrap();
        // On a taken port, exit 2 (not 1) proves the check came before any bind; a file
        // that sets the address itself is run as it is.
        let mut args = vec!["run", "--config", file];
        if !text.contains("listen") {
            args.extend(["--listen", addr.as_str()]);
        }
        let run = gpulse(&args, &[("GPULSE_GPU_NVML_LIBRARY", "/nonexistent")]);
        let check = gpulse(&["config", "check", file], &[]);
        let (run_err, check_err) = (stderr(&run), stderr(&check));
        assert_eq!(run.status.code(), Some(2), "{name}: {run_err}");
        assert_eq!(check.status.code(), Some(2), "{name}: {check_err}");
        assert_eq!(run_err.lines().count(), 1, "{name}: {run_err}");
        assert_eq!(run_err, check_err, "{name}");
        // Every error names the key and its file:line:col.
        assert!(
            run_err.contains(&format!("config key `{key}` at {file}:")),
            "{name}: {run_err}"
        );
        assert!(!run_err.contains("at configuration"), "{name}: {run_err}");
    }
}

#[test]
fn an_overridden_value_is_blamed_on_its_variable_or_flag() {
    let out = gpulse(
        &["config", "check", "/dev/null"],
        &[("GPULSE_LOG_LEVEL", "warning")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("gpulse: config key `log.level` at GPULSE_LOG_LEVEL (environment):"),
        "{err}"
    );
    assert!(err.contains("did you mean warn"), "{err}");
    let out = gpulse(&["scan", "--log-level", "loud"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`log.level` at --log-level (flag)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn listen_takes_a_host_a_bare_port_or_a_colon_port() {
    for good in ["localhost:9412", ":9412", "9412", "[::1]:9412"] {
        let out = gpulse(
            &["config", "check", "/dev/null"],
            &[("GPULSE_HTTP_LISTEN", good)],
        );
        assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr(&out));
    }
    // localhost is resolved to 127.0.0.1 and bound there: the taken port proves it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = gpulse(
        &["--listen", &format!("localhost:{port}")],
        &[("GPULSE_GPU_NVML_LIBRARY", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    let out = gpulse(&["run", "--listen", "nowhere"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("`http.listen` at --listen (flag)"), "{err}");
    assert!(err.contains(":PORT or PORT"), "{err}");
}

#[test]
fn start_up_logs_the_url_to_open_and_it_serves_the_index() {
    let agent = crate::agent::Agent::start(["demo"], std::iter::empty::<(&str, &str)>());
    let log = agent.stderr();
    let url = log
        .split_once("open http://")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `open http://…` in the start-up log:\n{log}"));
    let addr: std::net::SocketAddr = url.trim_end_matches('/').parse().unwrap();
    assert_eq!(addr, agent.addr(), "{log}");
    let index = crate::agent::http_get(addr, "/", std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(index.status, 200, "{}", index.body);
    assert!(index.body.contains("/metrics"), "{}", index.body);
}
