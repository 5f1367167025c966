//! `weft-agent status` and `weft-agent route IP`: what this node's dataplane holds, read
//! from the pinned maps and links and the kernel — the same state the programs read —
//! so both work beside a running agent and with none running.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use clap::{Parser, Subcommand, ValueEnum};
use ipnetwork::Ipv4Network;
use serde::Serialize;
use weft_common::{
    MacAddr,
    config::{FLAG_BRIDGE_BYPASS, FLAG_DECAP_L4_UDP, FLAG_FAST_PATH},
    maps::{links, programs as names},
};

use crate::maps::Maps;

#[derive(Parser, Debug)]
#[command(name = "weft-agent", about = "Inspect this node's weft dataplane (run in the node's network namespace)")]
pub struct Tool {
    #[command(subcommand)]
    pub command: Command,
    /// The running (or stopped) agent's `--bpffs-dir`.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/weft")]
    pub bpffs_dir: PathBuf,
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// This node, its attach points, peers, local pods and counters.
    Status,
    /// Where a packet to IP goes: a local pod, a remote node, or the host stack.
    Route { ip: Ipv4Addr },
    /// Masquerade's table (`--ip-masq`).
    Nat {
        #[command(subcommand)]
        command: NatCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum NatCommand {
    /// Every flow: protocol, the pod's and the remote's addresses, the translated
    /// source, state, age and idle time (like `cilium bpf nat list`).
    List,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// Whether the command line asks for the tool rather than the daemon.
pub fn wanted(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| a == "status" || a == "route" || a == "nat")
}

pub fn run(tool: Tool) -> Result<()> {
    let maps = Maps::open_pinned(&tool.bpffs_dir)
        .with_context(|| format!("no weft maps pinned under {} (is --bpffs-dir the agent's?)", tool.bpffs_dir.display()))?;
    match tool.command {
        Command::Status => {
            let s = status(&maps, &tool.bpffs_dir)?;
            print(tool.output, &s, render_status)
        }
        Command::Route { ip } => {
            let r = route(&maps, ip)?;
            print(tool.output, &r, render_route)
        }
        Command::Nat { command: NatCommand::List } => {
            let flows = crate::nat::list(&maps, crate::nat::now_ns()?)?;
            print(tool.output, &flows, render_nat)
        }
    }
}

fn print<T: Serialize>(output: Output, value: &T, text: fn(&T) -> String) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Text => print!("{}", text(value)),
    }
    Ok(())
}

fn mac(m: MacAddr) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ifname(index: u32) -> String {
    nix::net::if_::if_indextoname(index).map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("#{index}"))
}

#[derive(Serialize)]
pub struct Status {
    pub node: Node,
    pub attachments: Vec<Attachment>,
    pub peers: Vec<Peer>,
    pub local_pods: Vec<LocalPod>,
    pub counters: Vec<CounterRow>,
}

#[derive(Serialize)]
pub struct Node {
    pub name: Option<String>,
    pub pod_cidr: Option<String>,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: String,
    pub vni: u32,
    pub udp_port: u16,
    pub uplink: String,
    pub decap: &'static str,
    pub fast_path: bool,
    pub bridge_bypass: bool,
    pub kernel_clears_tunnel_state: bool,
    pub abi_version: u32,
}

#[derive(Serialize)]
pub struct Attachment {
    pub pin: String,
    pub program: String,
    pub program_id: u32,
}

#[derive(Serialize)]
pub struct Peer {
    pub pod_cidr: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: String,
    pub vni: u32,
}

#[derive(Serialize)]
pub struct LocalPod {
    pub ip: Ipv4Addr,
    pub mac: String,
    pub veth: String,
}

#[derive(Serialize)]
pub struct CounterRow {
    pub hook: &'static str,
    pub action: &'static str,
    pub verdict: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

fn pod_cidr(c: &weft_common::config::DataplaneConfig) -> Option<Ipv4Network> {
    (c.pod_prefix != 0).then(|| Ipv4Network::new(Ipv4Addr::from(c.pod_cidr), c.pod_prefix).ok()).flatten()
}

pub fn status(maps: &Maps, bpffs_dir: &Path) -> Result<Status> {
    let c = maps.config()?;
    let decap = if bpffs_dir.join(links::DECAP_XDP).exists() { "xdp" } else { "tc" };
    let node = Node {
        name: c.node_name.as_str().filter(|n| !n.is_empty()).map(str::to_owned),
        pod_cidr: pod_cidr(&c).map(|n| n.to_string()),
        underlay_ip: Ipv4Addr::from(c.underlay_ip),
        vtep_mac: mac(c.vtep_mac),
        vni: c.vni,
        udp_port: c.udp_port,
        uplink: ifname(c.uplink_ifindex),
        decap,
        fast_path: c.flags & FLAG_FAST_PATH != 0,
        bridge_bypass: c.flags & FLAG_BRIDGE_BYPASS != 0,
        kernel_clears_tunnel_state: c.flags & FLAG_DECAP_L4_UDP != 0,
        abi_version: c.abi_version,
    };
    let programs: Vec<(u32, String)> =
        loaded_programs().filter_map(Result::ok).map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned())).collect();
    let mut attachments = Vec::new();
    let mut pins: Vec<_> = std::fs::read_dir(bpffs_dir)?.flatten().map(|e| e.path()).collect();
    pins.sort();
    for path in pins.into_iter().filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("link_"))) {
        // A TCX or XDP link, or (netlink path) the program its clsact filter runs.
        let id = match PinnedLink::from_pin(&path).map(FdLink::from).map(|l| l.info()) {
            Ok(Ok(info)) => info.program_id(),
            _ => match aya::programs::ProgramInfo::from_pin(&path) {
                Ok(info) => info.id(),
                Err(_) => continue,
            },
        };
        let kernel_name = programs.iter().find(|(p, _)| *p == id).map(|(_, n)| n.as_str()).unwrap_or_default();
        let program = names::from_kernel_name(kernel_name).unwrap_or(kernel_name).to_owned();
        let pin = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        attachments.push(Attachment { pin, program, program_id: id });
    }
    let peers = maps
        .tunnels()?
        .into_iter()
        .map(|(cidr, t)| Peer {
            pod_cidr: cidr.to_string(),
            underlay_ip: Ipv4Addr::from(t.underlay_ip),
            vtep_mac: mac(t.vtep_mac),
            vni: t.vni,
        })
        .collect();
    let local_pods =
        maps.endpoints()?.into_iter().map(|(ip, e)| LocalPod { ip, mac: mac(e.mac), veth: ifname(e.ifindex) }).collect();
    let counters = maps
        .counters_by_hook()?
        .into_iter()
        .filter(|(_, _, c)| c.packets > 0)
        .map(|(h, v, c)| CounterRow {
            hook: h.name(),
            action: v.action().name(),
            verdict: v.drop_reason().map_or(v.name(), |r| r.name()),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    Ok(Status { node, attachments, peers, local_pods, counters })
}

fn render_status(s: &Status) -> String {
    let n = &s.node;
    let mut out = format!(
        "node {}: pod CIDR {}, underlay {}, VtepMAC {}, VNI {}, port {}, uplink {}, decap {}{}{}\n",
        n.name.as_deref().unwrap_or("(unnamed)"),
        n.pod_cidr.as_deref().unwrap_or("unknown"),
        n.underlay_ip,
        n.vtep_mac,
        n.vni,
        n.udp_port,
        n.uplink,
        n.decap,
        if n.fast_path { ", fast path" } else { "" },
        if n.bridge_bypass { ", past the bridge" } else { "" },
    );
    out += "\nATTACHMENT                      PROGRAM              ID\n";
    for a in &s.attachments {
        out += &format!("{:<31} {:<20} {}\n", a.pin, a.program, a.program_id);
    }
    out += "\nPEER POD CIDR      UNDERLAY         VTEP MAC           VNI\n";
    for p in &s.peers {
        out += &format!("{:<18} {:<16} {:<18} {}\n", p.pod_cidr, p.underlay_ip, p.vtep_mac, p.vni);
    }
    out += "\nLOCAL POD          MAC                VETH\n";
    for p in &s.local_pods {
        out += &format!("{:<18} {:<18} {}\n", p.ip, p.mac, p.veth);
    }
    out += "\nHOOK               ACTION    VERDICT              PACKETS        BYTES\n";
    for c in &s.counters {
        out += &format!("{:<18} {:<9} {:<18} {:>10} {:>12}\n", c.hook, c.action, c.verdict, c.packets, c.bytes);
    }
    out
}

#[derive(Serialize)]
pub struct Route {
    pub ip: Ipv4Addr,
    /// `local-pod`, `local-pod-cidr` (not resolved yet), `remote-node` or `host-stack`.
    pub kind: &'static str,
    pub description: String,
    pub pod_cidr: Option<String>,
    pub node_underlay_ip: Option<Ipv4Addr>,
    pub node_vtep_mac: Option<String>,
    pub vni: Option<u32>,
    pub device: Option<String>,
}

pub fn route(maps: &Maps, ip: Ipv4Addr) -> Result<Route> {
    let c = maps.config()?;
    let own = pod_cidr(&c);
    let blank = Route {
        ip,
        kind: "host-stack",
        description: String::new(),
        pod_cidr: None,
        node_underlay_ip: None,
        node_vtep_mac: None,
        vni: None,
        device: None,
    };
    if let Some(pod) = maps.endpoints()?.get(&ip) {
        let veth = ifname(pod.ifindex);
        return Ok(Route {
            kind: "local-pod",
            description: format!("{ip}: local pod (MAC {}) behind veth {veth}", mac(pod.mac)),
            pod_cidr: own.map(|n| n.to_string()),
            device: Some(veth),
            ..blank
        });
    }
    if let Some(own) = own.filter(|n| n.contains(ip)) {
        return Ok(Route {
            kind: "local-pod-cidr",
            description: format!("{ip}: this node's pod CIDR {own}, no pod known there: the host stack and the bridge"),
            pod_cidr: Some(own.to_string()),
            ..blank
        });
    }
    let tunnels = maps.tunnels()?;
    if let Some(t) = maps.tunnel_for(ip) {
        let cidr = tunnels.iter().filter(|(n, _)| n.contains(ip)).max_by_key(|(n, _)| n.prefix()).map(|(n, _)| n.to_string());
        let (under, vtep) = (Ipv4Addr::from(t.underlay_ip), mac(t.vtep_mac));
        return Ok(Route {
            kind: "remote-node",
            description: format!(
                "{ip}: remote pod CIDR {} on node {under} (VtepMAC {vtep}): weft0, VXLAN VNI {} out of {}",
                cidr.as_deref().unwrap_or("?"),
                t.vni,
                ifname(c.uplink_ifindex)
            ),
            pod_cidr: cidr,
            node_underlay_ip: Some(under),
            node_vtep_mac: Some(vtep),
            vni: Some(t.vni),
            device: Some("weft0".into()),
            ..blank
        });
    }
    Ok(Route { description: format!("{ip}: not in the overlay: the host stack routes it"), ..blank })
}

fn render_route(r: &Route) -> String {
    format!("{}\n", r.description)
}

fn render_nat(flows: &Vec<crate::nat::Flow>) -> String {
    let mut out = format!(
        "{:<6} {:<24} {:<24} {:<24} {:<12} {:>8} {:>8}\n",
        "PROTO", "ORIGINAL", "REMOTE", "TRANSLATED", "STATE", "AGE", "IDLE"
    );
    for f in flows {
        out += &format!(
            "{:<6} {:<24} {:<24} {:<24} {:<12} {:>7}s {:>7}s\n",
            f.protocol, f.original, f.remote, f.translated, f.state, f.age_seconds, f.idle_seconds
        );
    }
    out
}
