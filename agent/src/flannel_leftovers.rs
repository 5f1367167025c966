//! What Flannel's vxlan backend leaves on a node that weft takes over, found at start
//! and removed once weft forwards (`--flannel-leftovers remove`, the default), or
//! named in a refusal to start (`--flannel-leftovers refuse`).
//!
//! flanneld leaves, when its pod goes:
//! - `flannel.<VNI>`, a kernel vxlan device with an on-link route, a permanent
//!   neighbour and an FDB entry per peer: its routes compete with weft's for the same
//!   destinations, and its socket on the VXLAN port would take what weft's decap does
//!   not (VXLAN from hosts that are not nodes, which weft drops on purpose);
//! - with `--ip-masq`, the nat chain `FLANNEL-POSTRTG` jumped to from POSTROUTING, and
//!   with `--iptables-forward-rules` (its default) the filter chain `FLANNEL-FWD` jumped
//!   to from FORWARD: weft masquerades in eBPF, and a second masquerade in netfilter
//!   would rewrite what weft's own rules leave alone.
//!
//! Why remove rather than refuse by default: the point of a node-by-node migration is
//! that pods keep talking while the node changes hands, and nothing here is of use once
//! weft forwards. The order keeps the gap short: weft's programs are attached and its
//! routes replace `flannel.1`'s (`ip route replace` takes over the same destination
//! atomically) before the device goes, so no packet meets a missing route; a peer's
//! VXLAN packets are weft's from the moment its decap is on the uplink. Each thing
//! removed is logged on one line. What this cannot tell: whether flanneld still runs
//! on the node (it would recreate all of it) — the runbook moves Flannel's DaemonSet
//! off the node first.
//!
//! iptables: flanneld's image writes through whichever backend the node already uses
//! (legacy or nf_tables), so both are read where their tools are installed; legacy
//! tables only when the kernel has them for this namespace (`/proc/net/ip_tables_names`),
//! so that looking never loads a legacy module. No iptables tool: nothing to remove.
//! Rules are deleted by their full specification as `iptables-save` prints them, never
//! by position, so a rule another component inserts meanwhile is never hit.

use std::{fmt, path::Path, process::Command};

use clap::ValueEnum;
use thiserror::Error;

use crate::netlink::{Netlink, NetlinkError};

/// What the agent does with Flannel's leftovers at start.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Remove them once weft's dataplane forwards, one log line each.
    Remove,
    /// Refuse to start while any is there, naming each.
    Refuse,
}

/// flanneld's chains, by table.
pub const CHAINS: &[(&str, &str)] = &[("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD")];

/// An iptables backend: its tools, and whether to ask the kernel first (legacy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub name: &'static str,
    pub iptables: &'static str,
    pub save: &'static str,
    legacy: bool,
}

const NFT: Backend = Backend { name: "nf_tables", iptables: "iptables-nft", save: "iptables-nft-save", legacy: false };
const LEGACY: Backend = Backend { name: "legacy", iptables: "iptables-legacy", save: "iptables-legacy-save", legacy: true };
/// Only `iptables` installed (no `-nft`/`-legacy` names): whatever it is.
const PLAIN: Backend = Backend { name: "default", iptables: "iptables", save: "iptables-save", legacy: false };

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    Device {
        name: String,
        index: u32,
        vni: Option<u32>,
        port: Option<u16>,
    },
    /// A rule outside Flannel's chains that jumps to one of them.
    Jump {
        backend: Backend,
        table: &'static str,
        chain: String,
        rule: Vec<String>,
    },
    Chain {
        backend: Backend,
        table: &'static str,
        chain: &'static str,
        rules: usize,
    },
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        match self {
            Leftover::Device { name, vni, port, .. } => write!(
                f,
                "vxlan device {name} (VNI {}, port {}) with its routes, neighbours and FDB entries",
                opt(vni.map(|v| v.to_string())),
                opt(port.map(|p| p.to_string()))
            ),
            Leftover::Jump { backend, table, chain, rule } => {
                write!(f, "iptables ({}) rule `-t {table} -A {chain} {}`", backend.name, quote(rule))
            }
            Leftover::Chain { backend, table, chain, rules } => {
                write!(f, "iptables ({}) chain {chain} in table {table} ({rules} rules)", backend.name)
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum LeftoverError {
    #[error("looking for Flannel's device")]
    Netlink(#[from] NetlinkError),
    #[error("running {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error(
        "Flannel's leftovers on this node (--flannel-leftovers refuse): {}; stop flanneld on this node \
         (move Flannel's DaemonSet off it), then start weft with --flannel-leftovers remove (the default) \
         or remove them by hand",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Refused(Vec<Leftover>),
}

/// Everything of Flannel's on this node; iptables tables that cannot be read are
/// logged and skipped (a node without iptables has nothing there to remove).
pub async fn find(nl: &Netlink, vni: u32, port: u16) -> Result<Vec<Leftover>, LeftoverError> {
    let mut found = Vec::new();
    // flanneld names its device after the VNI (pkg/backend/vxlan: "flannel.%v").
    let name = format!("flannel.{vni}");
    if let Some(link) = nl.vxlan_by_name(&name).await? {
        if link.vni.is_some_and(|v| v != vni) || link.port.is_some_and(|p| p != port) {
            // Not the device of this network: someone else's, left alone.
            tracing::warn!(
                vni = ?link.vni, port = ?link.port,
                "a vxlan device {name} exists but not with VNI {vni} and port {port}: leaving it"
            );
        } else {
            found.push(Leftover::Device { name, index: link.index, vni: link.vni, port: link.port });
        }
    }
    let backends = backends();
    if backends.is_empty() {
        tracing::info!("no iptables tools installed: not looking for flanneld's iptables rules");
    }
    for backend in backends {
        for (table, _) in CHAINS {
            if backend.legacy && !legacy_table_exists(table) {
                continue;
            }
            match run(backend.save, &["-t", table]) {
                Ok(out) => found.extend(parse_save(backend, table, &out)),
                Err(e) => tracing::warn!(
                    "reading iptables ({}) table {table}: {e}; not looking for Flannel's rules there",
                    backend.name
                ),
            }
        }
    }
    Ok(found)
}

/// Removes `leftovers` in an order the kernel accepts (device, jumps, then chains);
/// each outcome, for the caller to log.
pub async fn remove(nl: &Netlink, mut leftovers: Vec<Leftover>) -> Vec<(Leftover, Result<(), LeftoverError>)> {
    leftovers.sort_by_key(|l| match l {
        Leftover::Device { .. } => 0,
        Leftover::Jump { .. } => 1,
        Leftover::Chain { .. } => 2,
    });
    let mut done = Vec::new();
    for l in leftovers {
        let r = match &l {
            Leftover::Device { index, .. } => nl.delete_link(*index).await.map_err(LeftoverError::from),
            Leftover::Jump { backend, table, chain, rule } => {
                let mut args = vec!["-w", "5", "-t", table, "-D", chain.as_str()];
                args.extend(rule.iter().map(String::as_str));
                run(backend.iptables, &args).map(drop)
            }
            Leftover::Chain { backend, table, chain, .. } => run(backend.iptables, &["-w", "5", "-t", table, "-F", chain])
                .and_then(|_| run(backend.iptables, &["-w", "5", "-t", table, "-X", chain]))
                .map(drop),
        };
        done.push((l, r));
    }
    done
}

/// The iptables backends whose tools are installed.
fn backends() -> Vec<Backend> {
    let both: Vec<Backend> = [NFT, LEGACY].into_iter().filter(|b| on_path(b.iptables) && on_path(b.save)).collect();
    if !both.is_empty() {
        return both;
    }
    [PLAIN].into_iter().filter(|b| on_path(b.iptables) && on_path(b.save)).collect()
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Whether the legacy table exists in this namespace (`/proc/net` is the caller's).
fn legacy_table_exists(table: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc/net/ip_tables_names")).is_ok_and(|s| s.lines().any(|l| l.trim() == table))
}

fn run(prog: &str, args: &[&str]) -> Result<String, LeftoverError> {
    let command = format!("{prog} {}", quote(args));
    let out =
        Command::new(prog).args(args).output().map_err(|source| LeftoverError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(LeftoverError::Failed { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Flannel's chains in one table's `iptables-save -t TABLE` output, and the rules of
/// other chains that jump to them (the rules inside Flannel's chains go with a flush).
pub fn parse_save(backend: Backend, table: &'static str, out: &str) -> Vec<Leftover> {
    let ours: Vec<&'static str> = CHAINS.iter().filter(|(t, _)| *t == table).map(|(_, c)| *c).collect();
    let mut jumps = Vec::new();
    let mut chains: Vec<(&'static str, usize)> = Vec::new();
    for line in out.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if let Some(c) = ours.iter().find(|c| **c == name) {
                chains.push((c, 0));
            }
            continue;
        }
        let tokens = split(line);
        let [flag, chain, rule @ ..] = tokens.as_slice() else { continue };
        if flag != "-A" {
            continue;
        }
        if let Some(entry) = chains.iter_mut().find(|(c, _)| c == chain) {
            entry.1 += 1;
            continue;
        }
        let target = rule.windows(2).find(|w| matches!(w[0].as_str(), "-j" | "--jump" | "-g" | "--goto")).map(|w| &w[1]);
        if target.is_some_and(|t| ours.contains(&t.as_str())) {
            jumps.push(Leftover::Jump { backend, table, chain: chain.clone(), rule: rule.to_vec() });
        }
    }
    jumps.extend(chains.into_iter().map(|(chain, rules)| Leftover::Chain { backend, table, chain, rules }));
    jumps
}

/// Splits an `iptables-save` rule line into arguments: whitespace-separated, with
/// double-quoted strings (comments) whose `\"` and `\\` are escapes, as iptables prints them.
pub fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_quotes, mut has_token) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            '\\' if in_quotes => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if has_token {
        out.push(cur);
    }
    out
}

/// Arguments joined for a log line, quoted where they hold spaces.
fn quote<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            if a.is_empty() || a.contains(char::is_whitespace) { format!("\"{a}\"") } else { a.to_string() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iptables-nft-save of a node where flanneld ran with --ip-masq, beside kube-proxy.
    const NAT: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-POSTROUTING - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
COMMIT
"#;

    #[test]
    fn finds_flannels_chain_and_the_jump_to_it_not_kube_proxys() {
        let found = parse_save(NFT, "nat", NAT);
        assert_eq!(
            found,
            vec![
                Leftover::Jump {
                    backend: NFT,
                    table: "nat",
                    chain: "POSTROUTING".into(),
                    rule: ["-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"].map(String::from).to_vec(),
                },
                Leftover::Chain { backend: NFT, table: "nat", chain: "FLANNEL-POSTRTG", rules: 3 },
            ]
        );
        assert_eq!(
            found[0].to_string(),
            r#"iptables (nf_tables) rule `-t nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`"#
        );
    }

    #[test]
    fn a_table_without_flannel_has_nothing_and_chains_belong_to_their_table() {
        assert!(parse_save(NFT, "filter", NAT).is_empty(), "FLANNEL-POSTRTG is a nat chain");
        let filter = "*filter\n:FORWARD ACCEPT [0:0]\n:FLANNEL-FWD - [0:0]\n\
                      -A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
                      -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\nCOMMIT\n";
        let found = parse_save(LEGACY, "filter", filter);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(matches!(&found[1], Leftover::Chain { chain: "FLANNEL-FWD", rules: 1, .. }));
        assert!(parse_save(NFT, "filter", "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n").is_empty());
    }

    #[test]
    fn splits_quoted_comments_with_escapes() {
        assert_eq!(
            split(r#"-A X -m comment --comment "a \"b\" c" -j Y"#),
            ["-A", "X", "-m", "comment", "--comment", r#"a "b" c"#, "-j", "Y"]
        );
        assert_eq!(split(r#"  --comment ""  -j Y "#), ["--comment", "", "-j", "Y"]);
    }
}
