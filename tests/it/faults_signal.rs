//! Fault suite: SIGTERM drains the real binary within `agent.shutdown_grace_period`, also when
//! an NVML call is hung and while clients hold connections open.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_nvml::FakeNvml;

const GRACE: Duration = Duration::from_secs(1);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` with a short deadline; the status line, or `None` when nothing answered.
fn status(port: u16, path: &str) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    response.lines().next().map(str::to_owned)
}

fn start(fake: &FakeNvml, port: u16) -> Child {
    let config = fake.dir().join("gpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nshutdown_grace_period = \"{}ms\"\n[gpu]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            GRACE.as_millis()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gpulse"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--nvml-lib")
        .arg(fake.lib_path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while status(port, "/readyz").is_none_or(|s| !s.contains(" 200 ")) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gpulse never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Sends SIGTERM and returns how long the process took to exit, and whether it exited 0.
fn terminate(mut child: Child) -> (Duration, bool) {
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let sent = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return (sent.elapsed(), exit.success());
        }
        if sent.elapsed() > Duration::from_secs(15) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("gpulse did not exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_exits_promptly_and_cleanly() {
    let fake = FakeNvml::new("gpus=2\n");
    let port = free_port();
    let (took, ok) = terminate(start(&fake, port));
    assert!(ok, "exit status was not 0");
    assert!(took < GRACE + Duration::from_secs(1), "took {took:?}");
}

#[test]
fn sigterm_drains_within_the_grace_period_with_nvml_hung_and_clients_connected() {
    let fake = FakeNvml::new("gpus=2\n");
    let port = free_port();
    let child = start(&fake, port);
    // An NVML call that never returns, and clients that connect and say nothing.
    fake.set_config("gpus=2\nhang=nvmlDeviceGetPowerUsage\n");
    let silent: Vec<TcpStream> = (0..32)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let (took, ok) = terminate(child);
    drop(silent);
    assert!(ok, "exit status was not 0");
    // The grace period bounds the drain; a little more for process exit on a busy machine.
    assert!(took < GRACE + Duration::from_secs(2), "took {took:?}");
}
