//! A process's pod from `/proc/<pid>/cgroup`: the pod UID and container id in its cgroup path.
//!
//! The kubelet puts every container in a cgroup under `kubepods`, in either driver's spelling:
//! cgroupfs (`/kubepods/burstable/pod<uid>/<id>`) or systemd
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
//! cri-containerd-<id>.scope`, with `_` for `-` in the UID; `docker-`, `crio-` too), on cgroup
//! v1 (one line per controller) and v2 (`0::/…`). Parsing is pure; [`read`] takes the proc root
//! so tests run on a fake tree.

use std::io::Read;
use std::path::Path;

/// Where a process runs, as its cgroup says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodCgroup {
    /// The pod's UID, dashed (`0a1b…-…`).
    pub pod_uid: String,
    /// The container id (64 hex digits), when the path names one.
    pub container_id: Option<String>,
}

/// Largest cgroup file read (a real one is a few hundred bytes; v1 has a dozen lines).
const MAX_CGROUP_BYTES: u64 = 16 << 10;

/// Reads and parses `<proc_root>/<pid>/cgroup`; `None` when it cannot be read or names no pod.
pub fn read(proc_root: &Path, pid: u32) -> Option<PodCgroup> {
    let file = std::fs::File::open(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let mut text = String::new();
    file.take(MAX_CGROUP_BYTES).read_to_string(&mut text).ok()?;
    parse(&text)
}

/// The pod of a cgroup file's contents, from the first line under `kubepods`.
pub fn parse(text: &str) -> Option<PodCgroup> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        if !path.contains("kubepods") {
            return None;
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (at, pod_uid) = segments
            .iter()
            .enumerate()
            .find_map(|(i, s)| pod_uid(s).map(|uid| (i, uid)))?;
        let container_id = segments.get(at + 1).and_then(|s| container_id(s));
        Some(PodCgroup {
            pod_uid,
            container_id,
        })
    })
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let raw = match segment.strip_suffix(".slice") {
        Some(slice) => &slice[slice.rfind("-pod")? + 4..],
        None => segment.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    let valid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then(|| uid.to_ascii_lowercase())
}

/// `<id>` (cgroupfs) or `<runtime>-<id>.scope` (systemd), for a 64-hex-digit id.
fn container_id(segment: &str) -> Option<String> {
    let raw = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = ["cri-containerd-", "docker-", "crio-", "containerd-"]
        .iter()
        .find_map(|p| raw.strip_prefix(p))
        .unwrap_or(raw);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
    const ID: &str = "4f2a9c0e1b7d3a5c6e8f0a1b2c3d4e5f67890abcdef0123456789abcdef01234";

    #[test]
    fn both_drivers_and_both_cgroup_versions() {
        let expected = Some(PodCgroup {
            pod_uid: UID.into(),
            container_id: Some(ID.into()),
        });
        let systemd_uid = UID.replace('-', "_");
        let cases = [
            format!("0::/kubepods/burstable/pod{UID}/{ID}\n"),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_uid}.slice/cri-containerd-{ID}.scope\n"
            ),
            format!(
                "12:pids:/kubepods.slice/kubepods-pod{systemd_uid}.slice/docker-{ID}.scope\n11:memory:/kubepods.slice/kubepods-pod{systemd_uid}.slice/docker-{ID}.scope\n"
            ),
            format!(
                "1:name=systemd:/user.slice\n0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_uid}.slice/crio-{ID}.scope\n"
            ),
        ];
        for case in &cases {
            assert_eq!(parse(case), expected, "{case}");
        }
    }

    #[test]
    fn no_pod_outside_kubepods_or_on_a_malformed_path() {
        assert_eq!(
            parse("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
        assert_eq!(parse("0::/system.slice/containerd.service\n"), None);
        assert_eq!(parse("0::/kubepods/burstable/podnot-a-uid/abc\n"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("garbage"), None);
        // The pod's own cgroup (no container segment): the pod, no container.
        assert_eq!(
            parse(&format!("0::/kubepods/pod{UID}\n")),
            Some(PodCgroup {
                pod_uid: UID.into(),
                container_id: None
            })
        );
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("42")).unwrap();
        std::fs::write(
            dir.path().join("42/cgroup"),
            format!("0::/kubepods/pod{UID}/{ID}\n"),
        )
        .unwrap();
        assert_eq!(read(dir.path(), 42).unwrap().pod_uid, UID);
        assert_eq!(read(dir.path(), 43), None);
    }
}
