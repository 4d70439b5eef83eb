//! `gpulse scan` on the fake NVML: the table, the JSON, and the exit codes per health state.

use std::process::{Command, Output};

use crate::fake_nvml::FakeNvml;

fn scan(fake: Option<&FakeNvml>, extra: &[&str]) -> Output {
    let lib = fake.map_or_else(
        || "/nonexistent/libnvidia-ml.so.1".to_owned(),
        |f| f.lib_path().display().to_string(),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpulse"));
    cmd.args(["scan", "--nvml-lib", &lib]).args(extra);
    // Config from the environment would change the verdict.
    for (name, _) in std::env::vars() {
        if name.starts_with("GPULSE_") {
            cmd.env_remove(name);
        }
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn healthy_gpus_exit_0_with_a_table() {
    let fake = FakeNvml::new("gpus=2\n");
    let out = scan(Some(&fake), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("GPU "), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" healthy ") && l.contains("H100"))
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("node: healthy (action: none)"), "{text}");
}

#[test]
fn uncorrectable_ecc_exits_3_and_the_json_names_the_reason() {
    let fake = FakeNvml::new("gpus=2\ngpu1.ecc_uncorrected_volatile=2\n");
    let out = scan(Some(&fake), &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["schema"], "gpulse.health/v1");
    assert_eq!(v["state"], "unhealthy");
    assert_eq!(v["gpus"][0]["state"], "healthy");
    assert_eq!(v["gpus"][1]["state"], "unhealthy");
    assert_eq!(v["gpus"][1]["reasons"][0]["reason"], "uncorrectable_ecc");
    assert_eq!(v["gpus"][1]["reasons"][0]["action"], "reset_gpu");
}

#[test]
fn hw_slowdown_now_is_degraded_in_a_scan() {
    // No window in a scan: a hardware slowdown active now is 100 % of it.
    let fake = FakeNvml::new("gpus=2\ngpu0.throttle=0x8\n");
    let out = scan(Some(&fake), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["gpus"][0]["reasons"][0]["reason"], "hw_slowdown");
}

#[test]
fn pending_row_remap_is_degraded_with_reset_gpu() {
    let fake = FakeNvml::new("gpus=2\ngpu1.remap_pending=1\n");
    let out = scan(Some(&fake), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["state"], "degraded");
    assert_eq!(v["action"], "reset_gpu");
    assert_eq!(v["gpus"][1]["reasons"][0]["reason"], "row_remap_pending");
}

#[test]
fn a_lost_gpu_exits_3() {
    let fake = FakeNvml::new("gpus=2\nlost=1\n");
    let out = scan(Some(&fake), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("gpu_lost"), "{text}");
    assert!(text.contains("node: unhealthy (action: reboot)"), "{text}");
}

#[test]
fn no_nvml_exits_1_unless_allowed() {
    let out = scan(None, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("No GPU: "), "{text}");
    assert!(text.contains("node: no_gpu"), "{text}");
    let out = scan(None, &["--allow-no-gpu", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["state"], "unknown");
    assert_eq!(v["reasons"][0]["reason"], "no_gpu");
}

/// Before: a scan whose NVML cycle hit `gpu.timeout` reported "No GPU" and exited 0 with
/// `--allow-no-gpu`. A timeout is a wedged driver, not a node without GPUs.
#[test]
fn a_hung_nvml_is_unhealthy_even_with_allow_no_gpu() {
    let fake = FakeNvml::new("gpus=2\nhang=nvmlDeviceGetPowerUsage\n");
    let out = scan(Some(&fake), &["--allow-no-gpu"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.starts_with("NVML hung: NVML did not answer within"),
        "{text}"
    );
    assert!(!text.contains("No GPU"), "{text}");
    assert!(text.contains("node: unhealthy (action: reboot)"), "{text}");
    let out = scan(Some(&fake), &["--allow-no-gpu", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["state"], "unhealthy");
    assert_eq!(v["reasons"][0]["reason"], "nvml_hung");
    assert_eq!(v["reasons"][0]["action"], "reboot");
}

#[test]
fn a_bad_override_exits_2_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_gpulse"))
        .args(["scan", "--nvml-lib", "/nonexistent"])
        .env("GPULSE_HEALTH_XID_OVERRIDES", "{ \"94\" = \"fatal\" }")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("health.xid_overrides"), "{err}");
}

/// `--format npd` (node-problem-detector's custom plugin: 0 OK, 1 problem, 2 unknown, one line
/// of at most 80 bytes) and `--format nagios` (0 OK, 2 CRITICAL, 3 UNKNOWN, perfdata) on the
/// fake NVML.
#[test]
fn npd_and_nagios_formats_follow_their_protocols() {
    let healthy = FakeNvml::new("gpus=2\n");
    let out = scan(Some(&healthy), &["--format", "npd"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "2 GPUs healthy\n")
    );
    let broken = FakeNvml::new("gpus=2\ngpu1.ecc_uncorrected_volatile=2\n");
    let out = scan(Some(&broken), &["--format", "npd"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.lines().count(), 1);
    assert!(text.trim_end().len() <= 80, "{text}");
    assert!(
        text.starts_with("GPU 1 unhealthy: uncorrectable_ecc"),
        "{text}"
    );
    assert_eq!(scan(None, &["--format", "npd"]).status.code(), Some(2));

    let out = scan(Some(&broken), &["--format", "nagios"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.starts_with("GPULSE CRITICAL - GPU 1 unhealthy"),
        "{text}"
    );
    assert!(text.contains("| gpus=2;;;0 healthy=1;;;0"), "{text}");
    let out = scan(None, &["--format", "nagios"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("GPULSE UNKNOWN - no GPU"));
    // `--json` and `--format` cannot both be given: a usage error.
    assert_eq!(
        scan(Some(&healthy), &["--json", "--format", "npd"])
            .status
            .code(),
        Some(2)
    );
}
