//! `weft-agent uninstall`: removes everything weft created on this node and prints
//! each thing it removed — the pinned maps and links under `--bpffs-dir` (unpinning a
//! link detaches its program: TCX, XDP, the pod veths' and the bridge's), `weft0` and
//! its veth peer (their routes go with them), the CNI conflist and `subnet.env` it
//! wrote, and the NAT ports it reserved. The masquerade table is a pinned map: it goes
//! with the rest. Run it with the agent stopped (a running agent puts it all back),
//! in the node's network namespace, as the agent runs: it refuses while an agent holds
//! the pin directory's lock ([`crate::lock`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;

use crate::{
    cni, nat,
    netlink::Netlink,
    node::{WEFT0, WEFT0_PEER},
};

#[derive(Parser, Debug)]
#[command(name = "weft-agent uninstall", about = "Remove everything weft created on this node (stop the agent first)")]
pub struct Uninstall {
    /// The agent's `--bpffs-dir`.
    #[arg(long, default_value = "/sys/fs/bpf/weft")]
    pub bpffs_dir: PathBuf,
    /// The agent's `--cni-conf-dir`.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The agent's `--subnet-file`.
    #[arg(long, default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,
    /// The agent's `--nat-port-range`: its ranges leave `net.ipv4.ip_local_reserved_ports`.
    #[arg(long, default_value = weft_common::nat::DEFAULT_PORT_RANGES)]
    pub nat_port_range: nat::PortRanges,
    /// Keep subnet.env (Flannel's file format: keep it when Flannel's CNI plugin still
    /// serves pods here, or Flannel takes the node back and rewrites it anyway).
    #[arg(long)]
    pub keep_subnet_env: bool,
}

/// Whether the command line asks for `uninstall`.
pub fn wanted(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| a == "uninstall")
}

/// Removes what is there; the list of what went, one line each.
pub async fn run(u: &Uninstall) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    // Held while removing: a running agent would put it all back, and one starting now
    // waits for nothing; both are refused.
    let _lock = if u.bpffs_dir.is_dir() {
        Some(crate::lock::lock(&u.bpffs_dir).map_err(|e| match e.holder() {
            Some(holder) => anyhow::anyhow!(
                "a weft-agent is running on {} ({holder}): stop it first (a running agent puts everything back)",
                u.bpffs_dir.display()
            ),
            None => anyhow::Error::from(e),
        })?)
    } else {
        None
    };
    // Programs first: once the pins go, nothing forwards through weft0 any more.
    removed.extend(remove_pins(&u.bpffs_dir)?);
    let nl = Netlink::connect().context("opening a netlink socket")?;
    for name in [WEFT0, WEFT0_PEER] {
        if let Some(link) = nl.link_by_name(name).await? {
            nl.delete_link(link.index).await?;
            removed.push(format!("link {name} (and its routes)"));
        }
    }
    let mut files = vec![u.cni_conf_dir.join(cni::CONFLIST_NAME)];
    if !u.keep_subnet_env {
        files.push(u.subnet_file.clone());
    }
    for file in files {
        match std::fs::remove_file(&file) {
            Ok(()) => removed.push(format!("file {}", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
    for range in nat::release_ports(&u.nat_port_range)? {
        removed.push(format!("reserved ports {range} (net.ipv4.ip_local_reserved_ports)"));
    }
    Ok(removed)
}

/// Every pin under `dir` (maps, links), then the directory.
fn remove_pins(dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut pins: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    // Links before maps: each detaches its program before the maps it reads go.
    pins.sort_by_key(|p| (!p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("link_")), p.clone()));
    for pin in pins {
        if pin.is_dir() {
            removed.extend(remove_pins(&pin)?);
            continue;
        }
        crate::dataplane::unpin(&pin).with_context(|| format!("unpinning {}", pin.display()))?;
        let what = if pin.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("link_")) { "link" } else { "map" };
        removed.push(format!("pinned {what} {}", pin.display()));
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    removed.push(format!("directory {}", dir.display()));
    Ok(removed)
}
