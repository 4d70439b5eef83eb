//! Fault suite: SIGTERM drains the real binary within `agent.shutdown_grace_period`, also when
//! an NVML call is hung and while clients hold connections open.

use std::net::TcpStream;
use std::time::Duration;

use crate::agent::Agent;
use crate::fake_nvml::FakeNvml;

const GRACE: Duration = Duration::from_secs(1);

/// The agent on `fake` with a 1 s grace period and a GPU deadline well under it.
fn start(fake: &FakeNvml) -> Agent {
    let config = fake.dir().join("gpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nshutdown_grace_period = \"{}ms\"\n[gpu]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n",
            GRACE.as_millis()
        ),
    )
    .unwrap();
    Agent::start(
        [
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--nvml-lib".as_ref(),
            fake.lib_path().as_os_str(),
        ],
        [("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
    )
}

#[test]
fn sigterm_exits_promptly_and_cleanly() {
    let fake = FakeNvml::new("gpus=2\n");
    let mut agent = start(&fake);
    let (took, status) = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(took < GRACE + Duration::from_secs(1), "took {took:?}");
}

#[test]
fn sigterm_drains_within_the_grace_period_with_nvml_hung_and_clients_connected() {
    let fake = FakeNvml::new("gpus=2\n");
    let mut agent = start(&fake);
    // An NVML call that never returns, and clients that connect and say nothing.
    fake.set_config("gpus=2\nhang=nvmlDeviceGetPowerUsage\n");
    let silent: Vec<TcpStream> = (0..32)
        .filter_map(|_| TcpStream::connect(agent.addr()).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let (took, status) = agent.terminate(Duration::from_secs(15));
    drop(silent);
    assert!(status.success(), "{status}");
    // The grace period bounds the drain; a little more for process exit on a busy machine.
    assert!(took < GRACE + Duration::from_secs(2), "took {took:?}");
}
