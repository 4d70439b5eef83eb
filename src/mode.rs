//! Run modes: where gpulse runs, and what it therefore cannot measure.
//!
//! * `embedded`: inside the workload's container (`gpulse wrap -- CMD`). NVML shows the
//!   container's own GPUs; the child's exit codes, restarts and readiness are measured; other
//!   containers' GPUs and (without privileges) the kernel log are not.
//! * `sidecar`: beside the workload without its GPU (on Akash every SDL service is its own pod
//!   and a GPU is never shared, so a separate service cannot see the inference server's GPU).
//!   Probes and host metrics only.
//! * `host`: a systemd unit or a privileged DaemonSet: every GPU and the kernel log, but not the
//!   lifecycle of a workload's processes.
//!
//! [`infer`] and [`cannot_measure`] are pure functions of what [`detect`] found (the only I/O
//! here), so both are unit-tested. The mode is decided once at startup (it labels
//! `gpulse_build_info` and the OTLP resource); the `cannot_measure` list is re-evaluated on
//! every read, because NVML can appear or disappear while the agent runs.

use std::path::Path;

use crate::config::ModeSetting;

/// Where gpulse runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Embedded,
    #[default]
    Sidecar,
    Host,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Sidecar => "sidecar",
            Self::Host => "host",
        }
    }
}

/// What [`detect`] found about the environment, at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// gpulse supervises the workload (`gpulse wrap`).
    pub wrapped: bool,
    /// Running in a container (Docker, Podman, Kubernetes, containerd, LXC).
    pub in_container: bool,
    /// The kernel log (`health.kmsg_path`) can be opened for reading.
    pub kmsg_readable: bool,
    /// NVIDIA device nodes (`/dev/nvidiactl`) are visible: a GPU was given to this container.
    pub gpu_devices_visible: bool,
}

/// The mode and how it was decided, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModeInfo {
    pub mode: Mode,
    /// `agent.mode` as configured (`auto` when inferred).
    pub setting: Option<ModeSetting>,
    pub facts: Facts,
}

impl ModeInfo {
    /// Decides the mode from the setting and the facts.
    pub fn new(setting: ModeSetting, facts: Facts) -> Self {
        Self {
            mode: infer(setting, facts),
            setting: Some(setting),
            facts,
        }
    }

    /// `agent.mode` as configured, `auto` when unknown.
    pub fn setting_str(&self) -> &'static str {
        self.setting.unwrap_or(ModeSetting::Auto).as_str()
    }
}

/// The mode: the configured one, or for `auto`: `wrap` → embedded; kernel log readable or not
/// in a container → host; NVIDIA devices visible → embedded (a GPU container, e.g. gpulse as a
/// second process); otherwise sidecar.
pub fn infer(setting: ModeSetting, facts: Facts) -> Mode {
    match setting {
        ModeSetting::Embedded => Mode::Embedded,
        ModeSetting::Sidecar => Mode::Sidecar,
        ModeSetting::Host => Mode::Host,
        ModeSetting::Auto if facts.wrapped => Mode::Embedded,
        ModeSetting::Auto if facts.kmsg_readable || !facts.in_container => Mode::Host,
        ModeSetting::Auto if facts.gpu_devices_visible => Mode::Embedded,
        ModeSetting::Auto => Mode::Sidecar,
    }
}

/// Signals this agent cannot measure where it runs (bounded codes, for the score):
///
/// * `gpu`: no GPU is sampled (no NVML in this container, no driver, or `gpu.enabled = false`):
///   no GPU readings, NVML Xid events or GPU health.
/// * `xid_kernel_log`: the kernel log is not readable, so Xids come from NVML events only
///   (which miss some, e.g. 79, 119, 120).
/// * `other_containers_gpus`: embedded: only the GPUs given to this container are visible.
/// * `job_runs`: gpulse does not supervise the workload: no exit codes, restarts, completion
///   rate or time to ready after a restart.
pub fn cannot_measure(info: &ModeInfo, gpu_sampled: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !gpu_sampled {
        out.push("gpu");
    }
    if !info.facts.kmsg_readable {
        out.push("xid_kernel_log");
    }
    if info.mode == Mode::Embedded {
        out.push("other_containers_gpus");
    }
    if !info.facts.wrapped {
        out.push("job_runs");
    }
    out
}

/// Looks at the environment: container markers, the kernel log, NVIDIA device nodes.
pub fn detect(kmsg_path: &str, wrapped: bool) -> Facts {
    let cgroup = std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
    let markers = Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("container").is_some();
    Facts {
        wrapped,
        in_container: markers || cgroup_says_container(&cgroup),
        kmsg_readable: !kmsg_path.is_empty() && std::fs::File::open(kmsg_path).is_ok(),
        gpu_devices_visible: Path::new("/dev/nvidiactl").exists(),
    }
}

/// Whether `/proc/1/cgroup` names a container runtime's cgroup (cgroup v1, or v2 without a
/// cgroup namespace).
pub fn cgroup_says_container(text: &str) -> bool {
    text.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        ["docker", "kubepods", "containerd", "libpod", "lxc", "crio"]
            .iter()
            .any(|m| path.contains(m))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(wrapped: bool, in_container: bool, kmsg: bool, devices: bool) -> Facts {
        Facts {
            wrapped,
            in_container,
            kmsg_readable: kmsg,
            gpu_devices_visible: devices,
        }
    }

    #[test]
    fn auto_follows_the_issue_rules() {
        use Mode::*;
        let auto = ModeSetting::Auto;
        // wrap → embedded, whatever else holds.
        assert_eq!(infer(auto, facts(true, true, false, false)), Embedded);
        assert_eq!(infer(auto, facts(true, false, true, true)), Embedded);
        // The host, or a container that reads the kernel log (privileged) → host.
        assert_eq!(infer(auto, facts(false, false, false, true)), Host);
        assert_eq!(infer(auto, facts(false, true, true, true)), Host);
        // A GPU container → embedded; no GPU devices → sidecar.
        assert_eq!(infer(auto, facts(false, true, false, true)), Embedded);
        assert_eq!(infer(auto, facts(false, true, false, false)), Sidecar);
    }

    #[test]
    fn an_explicit_setting_wins() {
        let f = facts(true, false, true, true);
        assert_eq!(infer(ModeSetting::Sidecar, f), Mode::Sidecar);
        assert_eq!(infer(ModeSetting::Host, f), Mode::Host);
        assert_eq!(
            infer(ModeSetting::Embedded, Facts::default()),
            Mode::Embedded
        );
    }

    #[test]
    fn cannot_measure_lists_what_each_placement_misses() {
        let embedded = ModeInfo::new(ModeSetting::Auto, facts(true, true, false, true));
        assert_eq!(
            cannot_measure(&embedded, true),
            ["xid_kernel_log", "other_containers_gpus"]
        );
        // Before (or without) a GPU sample the GPU itself is missing too.
        assert_eq!(
            cannot_measure(&embedded, false),
            ["gpu", "xid_kernel_log", "other_containers_gpus"]
        );
        let sidecar = ModeInfo::new(ModeSetting::Auto, facts(false, true, false, false));
        assert_eq!(sidecar.mode, Mode::Sidecar);
        assert_eq!(
            cannot_measure(&sidecar, false),
            ["gpu", "xid_kernel_log", "job_runs"]
        );
        let host = ModeInfo::new(ModeSetting::Auto, facts(false, false, true, true));
        assert_eq!(cannot_measure(&host, true), ["job_runs"]);
        // A privileged embedded container reads the kernel log.
        let privileged = ModeInfo::new(ModeSetting::Embedded, facts(true, true, true, true));
        assert_eq!(cannot_measure(&privileged, true), ["other_containers_gpus"]);
    }

    #[test]
    fn container_cgroups_are_recognised() {
        assert!(cgroup_says_container(
            "12:memory:/kubepods/burstable/pod1/abc\n0::/\n"
        ));
        assert!(cgroup_says_container("0::/system.slice/docker-abc.scope\n"));
        assert!(!cgroup_says_container("0::/init.scope\n"));
        assert!(!cgroup_says_container("0::/\n"));
        assert!(!cgroup_says_container(""));
    }
}
