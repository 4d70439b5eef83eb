//! Host families (sysinfo): CPU, memory, swap, filesystems, network, uptime.

use super::{Ctx, Dim, Family, Kind, Scope, Series, Val, dim};
use crate::model::{DiskReadings, HostSample, NetworkReadings};

const NONE: &[Dim] = &[];
const FILESYSTEM: &[Dim] = &[
    dim("mountpoint", "system.filesystem.mountpoint"),
    dim("device", "system.device"),
    dim("fstype", "system.filesystem.type"),
];
const INTERFACE: &[Dim] = &[dim("interface", "network.interface.name")];

/// A series function emitting one host reading (`$value: fn(&HostSample) -> Option<f64>`).
macro_rules! one {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&HostSample) -> Option<f64> = $value;
            if let Some(h) = &c.snap.host {
                s.node([], value(h));
            }
        }
        series
    }};
}

/// A series function emitting one value per filesystem.
macro_rules! per_disk {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&DiskReadings) -> u64 = $value;
            for d in c.snap.host.iter().flat_map(|h| &h.disks) {
                s.node(
                    [
                        Val::Str(&d.mount_point),
                        Val::Str(&d.device),
                        Val::Str(&d.filesystem),
                    ],
                    Some(value(d) as f64),
                );
            }
        }
        series
    }};
}

/// A series function emitting one counter per network interface.
macro_rules! per_interface {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&NetworkReadings) -> u64 = $value;
            for n in c.snap.host.iter().flat_map(|h| &h.networks) {
                s.node([Val::Str(&n.interface)], Some(value(n) as f64));
            }
        }
        series
    }};
}

plain_family!(host, Scope::Host);

/// `family` with labels and constant OTel attributes.
const fn labelled(
    otel_const: &'static [(&'static str, &'static str)],
    dims: &'static [Dim],
    family: Family,
) -> Family {
    Family {
        otel_const,
        dims,
        ..family
    }
}

const RECEIVE: &[(&str, &str)] = &[("network.io.direction", "receive")];
const TRANSMIT: &[(&str, &str)] = &[("network.io.direction", "transmit")];

pub const FAMILIES: &[Family] = &[
    host(
        "gpulse_host_cpu_utilization_ratio",
        "system.cpu.utilization",
        "1",
        "Fraction of CPU time busy across all cores since the previous host cycle (0-1).",
        Kind::Gauge,
        one!(|h| h.cpu_utilization),
    ),
    labelled(
        &[],
        &[dim("cpu", "cpu.logical_number")],
        host(
            "gpulse_host_cpu_core_utilization_ratio",
            "system.cpu.utilization",
            "1",
            "Fraction of CPU time busy per core since the previous host cycle (0-1).",
            Kind::Gauge,
            |c, s| {
                for (cpu, v) in c.snap.host.iter().flat_map(|h| &h.per_cpu_utilization) {
                    s.node([Val::IntText(cpu)], Some(*v));
                }
            },
        ),
    ),
    host(
        "gpulse_host_cpus",
        "system.cpu.logical.count",
        "{cpu}",
        "Logical CPUs.",
        Kind::Gauge,
        one!(|h| Some(h.cpu_count as f64)),
    ),
    labelled(
        &[],
        &[dim("window", "gpulse.window")],
        host(
            "gpulse_host_load_average",
            "gpulse.host.load_average",
            "{thread}",
            "System load average over 1, 5 and 15 minutes.",
            Kind::Gauge,
            |c, s| {
                for l in c.snap.host.iter().filter_map(|h| h.load_average) {
                    for (window, v) in [("1m", l[0]), ("5m", l[1]), ("15m", l[2])] {
                        s.node([Val::Str(window)], Some(v));
                    }
                }
            },
        ),
    ),
    host(
        "gpulse_host_memory_total_bytes",
        "system.memory.limit",
        "By",
        "Physical memory.",
        Kind::Gauge,
        one!(|h| Some(h.memory_total_bytes as f64)),
    ),
    host(
        "gpulse_host_memory_available_bytes",
        "system.linux.memory.available",
        "By",
        "Memory available to new processes without swapping.",
        Kind::Gauge,
        one!(|h| Some(h.memory_available_bytes as f64)),
    ),
    labelled(
        &[("system.memory.state", "used")],
        NONE,
        host(
            "gpulse_host_memory_used_bytes",
            "system.memory.usage",
            "By",
            "Memory in use.",
            Kind::Gauge,
            one!(|h| Some(h.memory_used_bytes as f64)),
        ),
    ),
    host(
        "gpulse_host_swap_total_bytes",
        "gpulse.host.swap.limit",
        "By",
        "Swap space.",
        Kind::Gauge,
        one!(|h| Some(h.swap_total_bytes as f64)),
    ),
    labelled(
        &[("system.paging.state", "used")],
        NONE,
        host(
            "gpulse_host_swap_used_bytes",
            "system.paging.usage",
            "By",
            "Swap space in use.",
            Kind::Gauge,
            one!(|h| Some(h.swap_used_bytes as f64)),
        ),
    ),
    labelled(
        &[],
        FILESYSTEM,
        host(
            "gpulse_host_filesystem_size_bytes",
            "system.filesystem.limit",
            "By",
            "Size of each mounted filesystem.",
            Kind::Gauge,
            per_disk!(|d| d.total_bytes),
        ),
    ),
    labelled(
        &[("system.filesystem.state", "free")],
        FILESYSTEM,
        host(
            "gpulse_host_filesystem_available_bytes",
            "system.filesystem.usage",
            "By",
            "Space available to unprivileged users on each mounted filesystem.",
            Kind::Gauge,
            per_disk!(|d| d.available_bytes),
        ),
    ),
    labelled(
        RECEIVE,
        INTERFACE,
        host(
            "gpulse_host_network_received_bytes",
            "system.network.io",
            "By",
            "Bytes received per interface.",
            Kind::Counter,
            per_interface!(|n| n.received_bytes),
        ),
    ),
    labelled(
        TRANSMIT,
        INTERFACE,
        host(
            "gpulse_host_network_transmitted_bytes",
            "system.network.io",
            "By",
            "Bytes sent per interface.",
            Kind::Counter,
            per_interface!(|n| n.transmitted_bytes),
        ),
    ),
    labelled(
        RECEIVE,
        INTERFACE,
        host(
            "gpulse_host_network_received_packets",
            "system.network.packet.count",
            "{packet}",
            "Packets received per interface.",
            Kind::Counter,
            per_interface!(|n| n.received_packets),
        ),
    ),
    labelled(
        TRANSMIT,
        INTERFACE,
        host(
            "gpulse_host_network_transmitted_packets",
            "system.network.packet.count",
            "{packet}",
            "Packets sent per interface.",
            Kind::Counter,
            per_interface!(|n| n.transmitted_packets),
        ),
    ),
    labelled(
        RECEIVE,
        INTERFACE,
        host(
            "gpulse_host_network_receive_errors",
            "system.network.errors",
            "{error}",
            "Receive errors per interface.",
            Kind::Counter,
            per_interface!(|n| n.receive_errors),
        ),
    ),
    labelled(
        TRANSMIT,
        INTERFACE,
        host(
            "gpulse_host_network_transmit_errors",
            "system.network.errors",
            "{error}",
            "Transmit errors per interface.",
            Kind::Counter,
            per_interface!(|n| n.transmit_errors),
        ),
    ),
    host(
        "gpulse_host_uptime_seconds",
        "system.uptime",
        "s",
        "Time since the host booted.",
        Kind::Gauge,
        one!(|h| h.uptime.map(|u| u.as_secs_f64())),
    ),
    host(
        "gpulse_host_boot_time_seconds",
        "gpulse.host.boot_time",
        "s",
        "Unix time the host booted.",
        Kind::Gauge,
        one!(|h| h.boot_time_seconds.map(|b| b as f64)),
    ),
];
