//! HTTPS and bearer-token authentication: serving, refusing, and reloading certificates and
//! tokens on file change (in-process) and on SIGHUP (the binary).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpulse::config::{Config, HumanDuration};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::agent::{self, Agent, HttpResponse};
use crate::api::{start, wait_ready};

const TOKEN: &str = "s3cret-T0ken";

/// A self-signed certificate for `localhost` and 127.0.0.1, with its key.
pub(crate) struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    der: CertificateDer<'static>,
}

pub(crate) fn self_signed(common_name: &str, serial: u64) -> Pair {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// Replaces `path` atomically (write aside, rename), as deployment tools do.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The cert and key files of `pair` in `dir`, and a config serving them.
pub(crate) fn tls_config(dir: &Path, pair: &Pair) -> (Config, PathBuf, PathBuf) {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    let mut config = Config::default();
    config.http.tls_cert_file = cert.display().to_string();
    config.http.tls_key_file = key.display().to_string();
    config.http.reload_interval = HumanDuration(Duration::from_millis(100));
    (config, cert, key)
}

/// A TLS client trusting exactly `trusted`.
pub(crate) fn connector(trusted: &[&Pair]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for pair in trusted {
        roots.add(pair.der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// `GET path` over HTTPS (HTTP/1.0, read to EOF); also returns the server's certificate.
pub(crate) async fn https_get(
    addr: SocketAddr,
    tls: &TlsConnector,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(HttpResponse, CertificateDer<'static>)> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut stream = tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        stream
            .write_all(agent::get_request("localhost", path, headers).as_bytes())
            .await?;
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw).await {
            // A peer closing without close_notify still delivered the whole HTTP/1.0 body.
            Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => return Err(e),
            _ => {}
        }
        Ok((agent::parse_response(&raw)?, served))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Polls `GET path` over HTTPS until `done` holds for a response (10 s at most).
async fn https_until(
    addr: SocketAddr,
    tls: &TlsConnector,
    path: &str,
    headers: &[(&str, &str)],
    what: &str,
    done: impl Fn(&HttpResponse, &CertificateDer<'static>) -> bool,
) -> (HttpResponse, CertificateDer<'static>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = https_get(addr, tls, path, headers).await;
        if let Ok((response, served)) = &last
            && done(response, served)
        {
            return (response.clone(), served.clone());
        }
        assert!(Instant::now() < deadline, "{what}: last answer {last:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_https_and_plain_http_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed("gpulse test one", 1);
    let (config, _, _) = tls_config(dir.path(), &pair);
    let agent = start(config).await;
    assert!(agent.credentials.is_tls());
    let tls = connector(&[&pair]);

    let (metrics, served) =
        https_until(agent.addr, &tls, "/metrics", &[], "no GPU data", |r, _| {
            r.status == 200 && r.body.contains("gpulse_gpu_utilization_ratio{gpu=\"1\"")
        })
        .await;
    assert_eq!(served, pair.der);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (health, _) = https_get(agent.addr, &tls, "/healthz", &[]).await.unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    // Plain HTTP on the HTTPS port: the handshake fails and no HTTP answer comes back.
    let mut plain = TcpStream::connect(agent.addr).await.unwrap();
    plain
        .write_all(agent::get_request("localhost", "/metrics", &[]).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw)).await;
    assert!(closed.is_ok(), "the plain-HTTP connection was left open");
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("HTTP/1."), "{text:?}");
    assert!(!text.contains("gpulse_"), "{text:?}");

    // A client that does not trust the certificate gets no data either.
    let stranger = connector(&[&self_signed("someone else", 9)]);
    assert!(
        https_get(agent.addr, &stranger, "/metrics", &[])
            .await
            .is_err()
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_reloaded_on_change_and_kept_when_the_new_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed("gpulse test one", 1);
    let second = self_signed("gpulse test two", 2);
    let (config, cert, key) = tls_config(dir.path(), &first);
    let agent = start(config).await;
    let tls = connector(&[&first, &second]);
    let (_, served) = https_until(agent.addr, &tls, "/healthz", &[], "not serving", |r, _| {
        r.status == 200
    })
    .await;
    assert_eq!(served, first.der);

    // Rotate: key first, then certificate (a poll in between sees a mismatch and waits).
    replace(&key, &second.key_pem);
    replace(&cert, &second.cert_pem);
    https_until(
        agent.addr,
        &tls,
        "/healthz",
        &[],
        "the new certificate was not served",
        |r, served| r.status == 200 && *served == second.der,
    )
    .await;
    let reloads = agent.credentials.reloads();
    assert!(reloads >= 1, "{reloads}");

    // A broken certificate is refused at the next poll; the second one keeps serving.
    let failures = agent.credentials.reload_failures();
    replace(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.credentials.reload_failures() == failures {
        assert!(
            Instant::now() < deadline,
            "the broken certificate was never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (metrics, served) = https_get(agent.addr, &tls, "/metrics", &[]).await.unwrap();
    assert_eq!(served, second.der);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("gpulse_build_info"));
    assert_eq!(agent.credentials.reloads(), reloads);
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_token_needs_both() {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed("gpulse test one", 1);
    let (mut config, _, _) = tls_config(dir.path(), &pair);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    config.http.bearer_token_file = token_file.display().to_string();
    let agent = start(config).await;
    let tls = connector(&[&pair]);
    let auth = format!("Bearer {TOKEN}");
    https_until(agent.addr, &tls, "/readyz", &[], "not ready", |r, _| {
        r.status == 200
    })
    .await;
    let (denied, _) = https_get(agent.addr, &tls, "/metrics", &[]).await.unwrap();
    assert_eq!(denied.status, 401);
    assert!(!denied.body.contains("gpulse_"), "{}", denied.body);
    let (metrics, _) = https_get(agent.addr, &tls, "/metrics", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("gpulse_gpu_utilization_ratio"));
    agent.shut_down().await;
}

/// `GET path` over plain HTTP with an optional bearer token: status, WWW-Authenticate, body.
async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = crate::inproc::client().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        challenge,
        response.text().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_everything_but_health_probes() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut config = Config::default();
    config.http.bearer_token_file = token_file.display().to_string();
    config.http.reload_interval = HumanDuration(Duration::from_millis(100));
    let agent = start(config).await;
    let base = agent.base.clone();
    // Probes need no token.
    wait_ready(&base).await;
    assert_eq!(get(&base, "/healthz", None).await.0, 200);
    assert_eq!(get(&base, "/readyz", None).await.0, 200);

    for path in ["/metrics", "/v1/snapshot", "/nope"] {
        let (status, challenge, body) = get(&base, path, None).await;
        assert_eq!(status, 401, "{path} without a token");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"gpulse\""),
            "{path}"
        );
        assert!(
            !body.contains("gpulse") && !body.contains("schema"),
            "{path}: {body}"
        );

        for wrong in ["s3cret-T0kem", "s3cret", "s3cret-T0ken-and-more", ""] {
            let (status, challenge, body) = get(&base, path, Some(wrong)).await;
            assert_eq!(status, 401, "{path} with token {wrong:?}");
            assert!(challenge.unwrap().starts_with("Bearer "), "{path}");
            assert!(
                !body.contains("gpulse") && !body.contains("schema"),
                "{path}: {body}"
            );
        }
    }
    // A token under another scheme is not a bearer token.
    let basic = crate::inproc::client()
        .get(format!("{base}/metrics"))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    let (status, _, metrics) = get(&base, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gpulse_gpu_utilization_ratio{gpu=\"0\""),
        "{metrics}"
    );
    let (status, _, snapshot) = get(&base, "/v1/snapshot", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(snapshot["schema"], "gpulse.snapshot/v1");
    assert_eq!(get(&base, "/nope", Some(TOKEN)).await.0, 404);

    // A new token in the file replaces the old one at the next poll.
    replace(&token_file, "n3w-token\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&base, "/metrics", Some("n3w-token")).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the new token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&base, "/metrics", Some(TOKEN)).await.0, 401);
    // An emptied file is a failed reload: the current token stays.
    let failures = agent.credentials.reload_failures();
    replace(&token_file, "\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.credentials.reload_failures() == failures {
        assert!(
            Instant::now() < deadline,
            "the empty token file was never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&base, "/metrics", Some("n3w-token")).await.0, 200);
    agent.shut_down().await;
}

#[test]
fn sighup_reloads_the_token_in_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    // Polling is off for an hour: only the signal can reload.
    let agent = Agent::start(
        ["demo", "--gpus", "1"],
        [
            (
                "GPULSE_HTTP_BEARER_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("GPULSE_HTTP_RELOAD_INTERVAL", "1h"),
        ],
    );
    let status = |token: &str| {
        agent::http_get_with(
            agent.addr(),
            "/metrics",
            &[("authorization", &format!("Bearer {token}"))],
            Duration::from_secs(10),
        )
        .unwrap()
        .status
    };
    assert_eq!(status("first-token"), 200, "{}", agent.stderr());
    replace(&token_file, "second-token\n");
    assert_eq!(status("second-token"), 401, "reloaded without a signal");

    let kill = std::process::Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("second-token") != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the token:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status("first-token"), 401);
    let log = agent.stderr();
    assert!(log.contains("SIGHUP"), "{log}");
    assert!(
        !log.contains("first-token") && !log.contains("second-token"),
        "the token was logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed("gpulse test one", 1);
    let (mut config, _, _) = tls_config(dir.path(), &pair);
    config.http.max_connections = 1;
    // The handshake is part of the first head's time.
    let timeout = Duration::from_millis(500);
    config.http.header_timeout = HumanDuration(timeout);
    let agent = start(config).await;
    let tls = connector(&[&pair]);
    https_until(agent.addr, &tls, "/healthz", &[], "not serving", |r, _| {
        r.status == 200
    })
    .await;

    // Connects and never says hello: holds the only slot until the handshake times out.
    // The clock starts before connecting: the server's handshake timer starts at accept,
    // which can come before `connect` returns here.
    let started = Instant::now();
    let mut silent = TcpStream::connect(agent.addr).await.unwrap();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "the silent connection was kept open");
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    let (health, _) = https_get(agent.addr, &tls, "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 200);
    agent.shut_down().await;
}

// ------------------------------------------------ the token from an environment variable

const ENV_TOKEN: &str = "s3cret-Env-T0ken";

#[test]
fn a_token_from_the_environment_guards_the_api_and_is_never_logged() {
    let agent = Agent::start(
        ["run"],
        [
            ("GPULSE_GPU_ENABLED", "false"),
            ("GPULSE_LOG_LEVEL", "debug"),
            ("GPULSE_HTTP_BEARER_TOKEN_ENV", "API_TOKEN"),
            ("API_TOKEN", ENV_TOKEN),
        ],
    );
    let timeout = Duration::from_secs(10);
    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(agent.get("/metrics").status, 401);
    let wrong = agent::http_get_with(
        agent.addr(),
        "/metrics",
        &[("authorization", "Bearer s3cret-Env-T0kem")],
        timeout,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {ENV_TOKEN}");
    let right = agent::http_get_with(
        agent.addr(),
        "/metrics",
        &[("authorization", &bearer)],
        timeout,
    )
    .unwrap();
    assert_eq!(right.status, 200, "{}", agent.stderr());
    assert!(!agent.stderr().contains(ENV_TOKEN), "{}", agent.stderr());
}

/// `gpulse run` with `env`: it must refuse to start (exit 2) with an error naming `needle`
/// and never showing the token.
fn refused(env: &[(&str, &str)], needle: &str) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gpulse"));
    command.args(["run", "--listen", "127.0.0.1:0"]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GPULSE_") {
            command.env_remove(name);
        }
    }
    let out = command
        .envs(env.iter().copied())
        .env("GPULSE_GPU_ENABLED", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains(ENV_TOKEN), "{stderr}");
}

#[test]
fn a_token_variable_that_is_unset_bad_or_doubled_is_a_config_error() {
    refused(
        &[("GPULSE_HTTP_BEARER_TOKEN_ENV", "NO_SUCH_TOKEN_VAR")],
        "`http.bearer_token_env` at GPULSE_HTTP_BEARER_TOKEN_ENV (environment): names the variable NO_SUCH_TOKEN_VAR, which is unset or empty",
    );
    let spaced = format!("{ENV_TOKEN} and more");
    refused(
        &[
            ("GPULSE_HTTP_BEARER_TOKEN_ENV", "API_TOKEN"),
            ("API_TOKEN", &spaced),
        ],
        "the token in API_TOKEN holds spaces",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{ENV_TOKEN}\n")).unwrap();
    refused(
        &[
            ("GPULSE_HTTP_BEARER_TOKEN_ENV", "API_TOKEN"),
            ("API_TOKEN", ENV_TOKEN),
            ("GPULSE_HTTP_BEARER_TOKEN_FILE", &file.display().to_string()),
        ],
        "set one of the two",
    );
}
