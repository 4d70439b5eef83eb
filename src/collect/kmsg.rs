//! Xid capture from the kernel log: `NVRM: Xid (PCI:0000:17:00): 79, pid=..., ...` lines.
//!
//! A reader thread follows `health.kmsg_path` (normally `/dev/kmsg`). It starts at the end
//! of the buffer (`SEEK_END`): old boot messages are not replayed, so a restarted agent never
//! counts an Xid twice. A regular file is followed like `tail -f` from its end, which is how
//! tests feed it. The file is opened non-blocking, so the thread notices shutdown within
//! [`POLL`]. A path that cannot be opened (a sidecar usually cannot read `/dev/kmsg`) is one
//! info log line and no thread.
//!
//! The PCI bus id of a line is mapped to a GPU through the latest GPU sample's identities.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind as IoErrorKind, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::model::{XidEvent, XidSource};
use crate::store::Store;

/// How long the reader sleeps when there is nothing new.
const POLL: Duration = Duration::from_millis(200);
/// Longest line kept; longer ones are cut (kmsg records are at most ~1 KiB of text).
pub const MAX_LINE: usize = 4096;

/// One Xid line from the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgXid {
    /// Normalized PCI bus id (`dddddddd:bb:dd`, lowercase), see [`normalize_bus_id`].
    pub pci_bus_id: String,
    pub xid: u64,
    /// The rest of the line after the code (pid, process name, message, NVLink sub-code).
    pub detail: String,
}

/// Parses one kernel log line (a `/dev/kmsg` record `6,1234,5678901,-;NVRM: ...` or a
/// dmesg-style line). Only the NVIDIA driver's `NVRM: Xid (PCI:...): N` lines match; other
/// drivers, `NVRM:` lines that are not Xids, and NVSwitch `SXid` lines give `None`.
pub fn parse_xid_line(line: &str) -> Option<KmsgXid> {
    const MARKER: &str = "NVRM: Xid (";
    let start = line.find(MARKER)? + MARKER.len();
    let rest = &line[start..];
    let rest = rest.strip_prefix("PCI:")?;
    let close = rest.find(')')?;
    let pci_bus_id = normalize_bus_id(&rest[..close])?;
    let rest = rest[close + 1..].strip_prefix(':')?.trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let xid = rest[..digits].parse().ok()?;
    let detail = rest[digits..]
        .trim_start_matches(',')
        .trim()
        .chars()
        .take(512)
        .collect();
    Some(KmsgXid {
        pci_bus_id,
        xid,
        detail,
    })
}

/// Parses one raw kernel log record as the reader thread does (pure): at most [`MAX_LINE`]
/// bytes of it, decoded lossily (the kernel log is bytes, and a driver may log a name that is
/// not UTF-8; only the `NVRM: Xid` part needs to be text), then [`parse_xid_line`]. Whatever
/// the bytes, the result is bounded: a bus id of 14 characters and at most 512 of detail.
pub fn parse_xid_record(record: &[u8]) -> Option<KmsgXid> {
    let record = &record[..record.len().min(MAX_LINE)];
    parse_xid_line(&String::from_utf8_lossy(record))
}

/// A PCI bus id in one form for comparison: `0000:17:00`, `00000000:17:00.0` and
/// `17:00.0` all become `00000000:17:00` (8-digit domain, function dropped, lowercase).
pub fn normalize_bus_id(id: &str) -> Option<String> {
    let id = id.trim();
    let id = match id.rsplit_once('.') {
        Some((head, function)) if function.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => id,
    };
    let parts: Vec<&str> = id.split(':').collect();
    let (domain, bus, device) = match parts.as_slice() {
        [domain, bus, device] => (*domain, *bus, *device),
        [bus, device] => ("0", *bus, *device),
        _ => return None,
    };
    let hex = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !hex(domain, 8) || !hex(bus, 2) || !hex(device, 2) {
        return None;
    }
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let device = u8::from_str_radix(device, 16).ok()?;
    Some(format!("{domain:08x}:{bus:02x}:{device:02x}"))
}

/// Turns a parsed line into an event, naming the GPU when the latest sample has its bus id.
fn to_event(parsed: KmsgXid, store: &Store) -> XidEvent {
    let snap = store.snapshot();
    let device = snap.gpu.as_ref().and_then(|gpu| {
        gpu.devices.iter().find(|d| {
            normalize_bus_id(&d.identity.pci_bus_id).as_deref() == Some(&parsed.pci_bus_id)
        })
    });
    XidEvent {
        at: SystemTime::now(),
        gpu_index: device.map(|d| d.identity.index),
        uuid: device.map(|d| d.identity.uuid.clone()).unwrap_or_default(),
        pci_bus_id: device
            .map(|d| d.identity.pci_bus_id.clone())
            .unwrap_or(parsed.pci_bus_id),
        xid: parsed.xid,
        sources: vec![XidSource::Kmsg],
        detail: parsed.detail,
    }
}

/// Starts the reader thread on `path`. Returns `false` (after one info log) when the path
/// is empty, cannot be opened, or the thread cannot start.
pub fn start(path: &str, store: Arc<Store>, stop: watch::Receiver<bool>) -> bool {
    if path.is_empty() {
        return false;
    }
    let file = match open(path) {
        Ok(file) => file,
        Err(error) => {
            tracing::info!(path, error = %error, "Kernel log not readable; Xids come from NVML only.");
            return false;
        }
    };
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("gpulse-kmsg".to_owned())
        .spawn(move || follow(file, &owned, &store, &stop));
    match spawned {
        Ok(_) => {
            tracing::info!(path, "Reading Xids from the kernel log.");
            true
        }
        Err(error) => {
            tracing::info!(path, error = %error, "Cannot start the kernel log reader.");
            false
        }
    }
}

fn open(path: &str) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: /dev/kmsg reads would otherwise block until the next message.
        options.custom_flags(0o4000);
    }
    let mut file = options.open(path)?;
    // /dev/kmsg: skip the existing records; a regular file: start at its end.
    file.seek(SeekFrom::End(0))?;
    Ok(file)
}

fn follow(mut file: File, path: &str, store: &Store, stop: &watch::Receiver<bool>) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    while !super::stopped(stop) {
        match file.read(&mut buf) {
            Ok(0) => std::thread::sleep(POLL),
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        handle_line(&line, store);
                        line.clear();
                    } else if line.len() < MAX_LINE {
                        line.push(b);
                    }
                }
            }
            Err(e) if e.kind() == IoErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            // EPIPE: records were overwritten before we read them; reading goes on.
            Err(e) if e.raw_os_error() == Some(32) => {}
            Err(error) => {
                tracing::warn!(path, error = %error, "Kernel log read failed; kmsg Xid capture stopped.");
                return;
            }
        }
    }
}

fn handle_line(line: &[u8], store: &Store) {
    if let Some(parsed) = parse_xid_record(line) {
        let event = to_event(parsed, store);
        tracing::warn!(xid = event.xid, pci_bus_id = %event.pci_bus_id, detail = %event.detail, "Xid in the kernel log.");
        store.record_xid(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kmsg_records_and_dmesg_lines() {
        let p = parse_xid_line(
            "6,1234,5678901,-;NVRM: Xid (PCI:0000:17:00): 79, pid=1234, GPU has fallen off the bus.",
        )
        .unwrap();
        assert_eq!(p.pci_bus_id, "00000000:17:00");
        assert_eq!(p.xid, 79);
        assert_eq!(p.detail, "pid=1234, GPU has fallen off the bus.");
        let p = parse_xid_line(
            "[  812.345678] NVRM: Xid (PCI:0000:3b:00): 145, RLW_REMAP Nonfatal XC0 i0 Link 05",
        )
        .unwrap();
        assert_eq!((p.pci_bus_id.as_str(), p.xid), ("00000000:3b:00", 145));
        assert!(p.detail.starts_with("RLW_REMAP"));
    }

    #[test]
    fn ignores_other_lines() {
        for line in [
            "6,99,1,-;amdgpu 0000:03:00.0: amdgpu: GPU fault detected: 146",
            "NVRM: GPU at PCI:0000:17:00: GPU-1234",
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
            "NVRM: Xid (PCI:zz:17:00): 79, bad",
            "NVRM: Xid (PCI:0000:17:00): , no code",
            "",
        ] {
            assert_eq!(parse_xid_line(line), None, "{line}");
        }
    }

    #[test]
    fn bus_ids_normalize_across_forms() {
        for id in ["0000:17:00", "00000000:17:00.0", "17:00.0", "0000:17:00.0"] {
            assert_eq!(normalize_bus_id(id).as_deref(), Some("00000000:17:00"));
        }
        assert_eq!(
            normalize_bus_id("00000000:3B:00.0").as_deref(),
            Some("00000000:3b:00")
        );
        assert_eq!(normalize_bus_id("nonsense"), None);
    }
}

#[cfg(test)]
mod fixture {
    use super::*;

    #[test]
    fn the_fixture_gives_exactly_these_xids() {
        let text = include_str!("../../tests/data/kmsg/xid_lines.txt");
        let got: Vec<(String, u64)> = text
            .lines()
            .filter_map(parse_xid_line)
            .map(|p| (p.pci_bus_id, p.xid))
            .collect();
        let want: Vec<(String, u64)> = [
            ("17", 13),
            ("17", 31),
            ("17", 43),
            ("2a", 48),
            ("2a", 63),
            ("3b", 74),
            ("17", 79),
            ("5d", 94),
            ("5d", 95),
            ("9a", 119),
            ("9a", 120),
            ("3b", 144),
            ("3b", 145),
            ("3b", 146),
            ("3b", 147),
            ("3b", 148),
            ("3b", 149),
            ("3b", 150),
        ]
        .iter()
        .map(|(bus, xid)| (format!("00000000:{bus}:00"), *xid))
        .collect();
        assert_eq!(got, want);
        let nvlink = text
            .lines()
            .filter_map(parse_xid_line)
            .find(|p| p.xid == 149)
            .unwrap();
        assert!(
            nvlink
                .detail
                .starts_with("NETIR_LINK_DOWN Fatal XC1 i0 Link 09")
        );
    }
}
