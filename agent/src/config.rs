//! The command line. Tests and operators script against it: keep it stable.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use weft_common::wire::{DEFAULT_PORT, DEFAULT_VNI};

#[derive(Parser, Debug, Clone)]
#[command(name = "weft-agent", version, about = "weft's node agent: an eBPF VXLAN overlay, wire-compatible with Flannel")]
pub struct Args {
    /// Node table: one `NAME UNDERLAY_IPV4 POD_CIDR VTEP_MAC` per line, this node's
    /// included; `#` starts a comment. Re-read on SIGHUP and when it changes.
    #[arg(long, value_name = "FILE")]
    pub peers: PathBuf,

    /// This node's name in the node table.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// Underlay interface [default: the interface holding this node's underlay address].
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// bpffs directory for pinned maps and links (mounts bpffs at /sys/fs/bpf if
    /// it is missing and this process is in the host's mount namespace).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/weft")]
    pub bpffs_dir: PathBuf,

    /// VXLAN network identifier.
    #[arg(long, default_value_t = DEFAULT_VNI, value_parser = clap::value_parser!(u32).range(0..=0xff_ffff))]
    pub vni: u32,

    /// VXLAN UDP port.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Level of the eBPF programs' own log (rare events: drops, malformed packets),
    /// forwarded into this log.
    #[arg(long, value_enum, default_value_t = BpfLogLevel::Off)]
    pub bpf_log: BpfLogLevel,

    /// Seconds between full resyncs of link, routes and maps with the node table.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl BpfLogLevel {
    /// The value for aya-log's `AYA_LOG_LEVEL` global: `aya_log_common::Level` numbering, 0 = off.
    pub fn aya_level(self) -> u8 {
        match self {
            BpfLogLevel::Off => 0,
            BpfLogLevel::Error => 1,
            BpfLogLevel::Warn => 2,
            BpfLogLevel::Info => 3,
            BpfLogLevel::Debug => 4,
            BpfLogLevel::Trace => 5,
        }
    }
}
