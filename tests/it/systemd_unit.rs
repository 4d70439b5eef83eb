//! The shipped systemd unit (`systemd/gpulse.service`): `systemd-analyze verify` finds nothing
//! to say, `systemd-analyze security --offline=yes` scores it at 3.0 or below, and the lines
//! that make host mode work are there (the kernel log's capability, the NVIDIA devices, the
//! state directory, `Type=notify` with a watchdog) while the ones that would break it are not.
//! The sysusers.d snippet creates the user the unit runs as.
//!
//! Both `systemd-analyze` checks skip without the tool (Debian's `systemd` package) and fail
//! instead under `GPULSE_CI=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tidy::root;

/// The highest exposure score the unit may have (systemd-analyze's 0.0 – 10.0 scale).
const MAX_EXPOSURE: f64 = 3.0;

fn unit_text() -> String {
    std::fs::read_to_string(root().join("systemd/gpulse.service")).unwrap()
}

/// `[Service]`'s settings: every value of each key, in order (a key may repeat).
fn service_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        out.entry(key.to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

/// `systemd-analyze`, or `None` (a loud skip, a failure under CI) when it is not installed.
fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        crate::skip::not_installed(
            "systemd-analyze",
            "apt-get install systemd (Debian), as .ci/run does",
        );
    }
    found
}

/// The unit as `gpulse.service` in a temporary directory, with `/usr/bin/gpulse` replaced by
/// the binary under test (verify checks that every command exists and is executable).
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let text = unit_text().replace("/usr/bin/gpulse", env!("CARGO_BIN_EXE_gpulse"));
    let path = dir.join("gpulse.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn systemd_analyze_verify_finds_nothing_to_say() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new(tool)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on an unknown key or a bad value (it ignores the line): any output is
    // a finding.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn systemd_analyze_security_scores_the_unit_at_most_3() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
    let out = Command::new(tool)
        .args(["security", "--offline=yes", "--no-pager", &threshold])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line:\n{stdout}"));
    // "→ Overall exposure level for gpulse.service: 2.0 OK 🙂"
    let score: f64 = overall
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {overall:?}"));
    eprintln!("{}", overall.trim());
    assert!(
        out.status.success() && score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE} ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_runs_unprivileged_and_still_reads_the_kernel_log_and_the_gpus() {
    let s = service_settings(&unit_text());
    let one = |key: &str| -> &str {
        match s.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}= should be set once, is {other:?}"),
        }
    };
    let all = |key: &str| -> Vec<&str> {
        s.get(key)
            .map(|v| v.iter().flat_map(|v| v.split_whitespace()).collect())
            .unwrap_or_default()
    };
    // A fixed system user (the sysusers snippet's), not root and not a dynamic one.
    assert_eq!(one("User"), "gpulse");
    assert_eq!(one("Group"), "gpulse");
    assert!(!s.contains_key("DynamicUser"));
    assert_eq!(one("SupplementaryGroups"), "video");
    // /dev/kmsg under kernel.dmesg_restrict=1: CAP_SYSLOG, ambient and in the bounding set,
    // nothing more, and the device itself allowed.
    assert_eq!(all("AmbientCapabilities"), ["CAP_SYSLOG"]);
    assert_eq!(all("CapabilityBoundingSet"), ["CAP_SYSLOG"]);
    let allowed: Vec<&str> = s["DeviceAllow"].iter().map(String::as_str).collect();
    assert_eq!(one("DevicePolicy"), "closed");
    assert!(allowed.contains(&"/dev/kmsg r"), "{allowed:?}");
    assert!(allowed.contains(&"char-nvidia* rw"), "{allowed:?}");
    // Lines that would hide the kernel log or the GPUs, or void the capability.
    for key in [
        "ProtectKernelLogs",
        "PrivateDevices",
        "PrivateUsers",
        "ProtectProc",
        "ProcSubset",
    ] {
        assert!(!s.contains_key(key), "{key}= must not be set: {:?}", s[key]);
    }
    // State, readiness and the watchdog.
    assert_eq!(one("StateDirectory"), "gpulse");
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    let watchdog = one("WatchdogSec");
    assert!(watchdog.ends_with('s') && watchdog != "0s", "{watchdog}");
    // A config error is checked before the start and never restarted.
    assert_eq!(
        one("ExecStartPre"),
        "/usr/bin/gpulse config check /etc/gpulse/gpulse.toml"
    );
    assert_eq!(one("RestartPreventExitStatus"), "2");
}

#[test]
fn the_sysusers_snippet_creates_the_units_user_in_the_video_group() {
    let text = std::fs::read_to_string(root().join("systemd/gpulse.sysusers")).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(lines.iter().any(|l| l[..2] == ["u", "gpulse"]), "{lines:?}");
    assert!(
        lines.iter().any(|l| l[..] == ["m", "gpulse", "video"]),
        "{lines:?}"
    );
}

#[test]
fn systemd_sysusers_accepts_the_snippet() {
    let tool = Path::new("/usr/bin/systemd-sysusers");
    if !tool.exists() {
        crate::skip::not_installed("systemd-sysusers", "apt-get install systemd (Debian)");
        return;
    }
    // --dry-run reads the real /etc/passwd and /etc/group and writes nothing.
    let out = Command::new(tool)
        .arg("--dry-run")
        .arg(root().join("systemd/gpulse.sysusers"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("Failed") && !stderr.contains("ignoring"),
        "systemd-sysusers --dry-run: {}\n{stderr}",
        out.status
    );
}
