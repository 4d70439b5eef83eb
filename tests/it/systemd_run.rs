//! gpulse under systemd, without systemd: the notify protocol on a fake `NOTIFY_SOCKET` (a
//! datagram socket this test binds), `$STATE_DIRECTORY` as the state directory, and the
//! host-mode warning when the kernel log cannot be read.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use gpulse::app::Parts;
use gpulse::config::Override;

use crate::agent::{Agent, http_get};
use crate::fake_nvml::FakeNvml;

/// `run` on `fake` with `config` (TOML) and `env`.
fn args(fake: &FakeNvml, config: &str) -> Vec<OsString> {
    let path = fake.dir().join("gpulse.toml");
    std::fs::write(&path, config).unwrap();
    vec![
        "run".into(),
        "--config".into(),
        path.into(),
        "--nvml-lib".into(),
        fake.lib_path().into(),
    ]
}

const CONFIG: &str = "[agent]\nshutdown_grace_period = \"1s\"\n[gpu]\ninterval = \"100ms\"\n[host]\ninterval = \"200ms\"\n";

/// A datagram socket standing in for systemd's notify socket.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (socket, path)
}

/// The messages received within `window` (each datagram's lines joined by `|`).
fn messages(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            out.push(text.trim_end().replace('\n', "|"));
        }
    }
    out
}

/// The first message received within `limit`.
fn next_message(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(
                String::from_utf8_lossy(&buf[..n])
                    .trim_end()
                    .replace('\n', "|"),
            );
        }
    }
    None
}

fn env(pairs: &[(&str, &std::ffi::OsStr)]) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> =
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "".into())];
    out.extend(
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), v.to_os_string())),
    );
    out
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let fake = FakeNvml::new("gpus=1\n");
    let (socket, path) = notify_socket(fake.dir());
    let env = env(&[
        ("NOTIFY_SOCKET", path.as_os_str()),
        // 400 ms: a ping every 200 ms. No WATCHDOG_PID: it is meant for whoever reads it.
        ("WATCHDOG_USEC", "400000".as_ref()),
    ]);
    let mut agent = Agent::spawn(&args(&fake, CONFIG), &env);
    // The first message is READY=1, and once it is sent the agent answers.
    let first = next_message(&socket, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no notification\n{}", agent.stderr()));
    assert!(
        first.starts_with("READY=1|STATUS=Serving on 127.0.0.1:"),
        "{first}"
    );
    let health = http_get(agent.addr(), "/healthz", Duration::from_secs(5)).unwrap();
    assert_eq!(health.status, 200, "{}", agent.stderr());
    // The collector loops run: pings every 200 ms.
    let later = messages(&socket, Duration::from_millis(1500));
    let pings = later.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        pings >= 4,
        "{pings} pings in 1.5 s: {later:?}\n{}",
        agent.stderr()
    );
    let (_, status) = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let last = messages(&socket, Duration::from_millis(300));
    assert!(last.iter().any(|m| m.starts_with("STOPPING=1")), "{last:?}");
}

#[test]
fn no_watchdog_pings_unless_systemd_asks_this_process() {
    let fake = FakeNvml::new("gpus=1\n");
    let (socket, path) = notify_socket(fake.dir());
    // WATCHDOG_PID names another process (pid 1): the watchdog is not this one's.
    let env = env(&[
        ("NOTIFY_SOCKET", path.as_os_str()),
        ("WATCHDOG_USEC", "200000".as_ref()),
        ("WATCHDOG_PID", "1".as_ref()),
    ]);
    let agent = Agent::start(args(&fake, CONFIG), env);
    let got = messages(&socket, Duration::from_secs(1));
    assert!(got.iter().any(|m| m.starts_with("READY=1")), "{got:?}");
    assert!(!got.iter().any(|m| m.contains("WATCHDOG")), "{got:?}");
    drop(agent);
}

#[test]
fn state_directory_is_the_state_dir_unless_one_is_configured() {
    let env =
        |dir: &'static str| move |name: &str| (name == "STATE_DIRECTORY").then(|| dir.to_owned());
    let parts = Parts::load(None, &[], env("/var/lib/gpulse")).unwrap();
    assert_eq!(parts.config.agent.state_dir, "/var/lib/gpulse");
    assert_eq!(
        parts.origins.of("agent.state_dir"),
        "STATE_DIRECTORY (environment)"
    );
    // Several StateDirectory= paths: the first.
    let parts = Parts::load(None, &[], env("/var/lib/gpulse:/var/lib/other")).unwrap();
    assert_eq!(parts.config.agent.state_dir, "/var/lib/gpulse");
    // agent.state_dir set (file, variable or flag) wins.
    let set = Override {
        section: "agent".into(),
        key: "state_dir".into(),
        raw: "/srv/gpulse".into(),
        origin: "GPULSE_AGENT_STATE_DIR (environment)".into(),
    };
    let parts = Parts::load(None, &[set], env("/var/lib/gpulse")).unwrap();
    assert_eq!(parts.config.agent.state_dir, "/srv/gpulse");
    // Neither: nothing on disk.
    let parts = Parts::load(None, &[], |_: &str| None).unwrap();
    assert_eq!(parts.config.agent.state_dir, "");
}

#[test]
fn the_agent_keeps_its_state_in_state_directory() {
    let fake = FakeNvml::new("gpus=1\n");
    let state = fake.dir().join("state");
    std::fs::create_dir(&state).unwrap();
    let agent = Agent::start(
        args(&fake, CONFIG),
        env(&[("STATE_DIRECTORY", state.as_os_str())]),
    );
    assert!(
        state.join("state.redb").exists(),
        "no state.redb in $STATE_DIRECTORY\n{}",
        agent.stderr()
    );
    assert!(!agent.stderr().contains("agent.state_dir is not set"));
}

/// The agent in `mode` with a kernel log path that does not exist.
fn without_kernel_log(mode: &str) -> (FakeNvml, Agent) {
    let fake = FakeNvml::new("gpus=1\n");
    let missing = fake.dir().join("no-kmsg");
    let config = format!(
        "[agent]\nmode = \"{mode}\"\n[gpu]\ninterval = \"100ms\"\n[health]\nkmsg_path = \"{}\"\n",
        missing.display()
    );
    let agent = Agent::start(args(&fake, &config), env(&[]));
    (fake, agent)
}

#[test]
fn host_mode_warns_with_the_fix_when_the_kernel_log_is_unreadable() {
    let (_fake, agent) = without_kernel_log("host");
    let stderr = agent.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("Kernel log not readable in host mode"))
        .unwrap_or_else(|| panic!("no host-mode kernel log warning:\n{stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("no such file") && line.contains("mount /dev/kmsg"),
        "{line}"
    );
    // And as data: the snapshot says what this agent cannot measure.
    let snapshot: serde_json::Value = serde_json::from_str(&agent.get_ok("/v1/snapshot")).unwrap();
    assert_eq!(snapshot["mode"], "host", "{snapshot}");
    let cannot = snapshot["cannot_measure"].as_array().unwrap();
    assert!(cannot.iter().any(|c| c == "xid_kernel_log"), "{cannot:?}");
}

#[test]
fn other_modes_note_an_unreadable_kernel_log_at_info() {
    let (_fake, agent) = without_kernel_log("sidecar");
    let stderr = agent.stderr();
    assert!(!stderr.contains("in host mode"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("Kernel log not readable"))
        .unwrap_or_else(|| panic!("no kernel log line:\n{stderr}"));
    assert!(line.contains("INFO"), "{line}");
}
