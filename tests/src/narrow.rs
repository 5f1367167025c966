//! A smaller-MTU hop on the underlay path to one node (issue 16, MTU parity): a VPN,
//! GRE or a cloud path that carries less than the nodes' 1500 bytes.
//!
//! ```text
//!  node (ul0 1500) ── r1 ══ narrow link (both ends `mtu`) ══ r2 ── switch (br0) ── other nodes
//! ```
//!
//! The node's switch port (`u-<node>`, the other end of its `ul0`) moves from the
//! switch into router `r1`; `r2` joins the switch. Both routers answer ARP for the
//! addresses behind them (proxy ARP), so no node changes its address, routes or
//! uplink: the agents keep running while the path changes under them. Every packet
//! between the node and the others crosses the narrow link, where a router fragments
//! what has DF clear and drops (with frag-needed) what has it set.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::{
    cluster::{Cluster, UPLINK_MTU},
    netns::{self, Netns},
};

/// `r1`'s address on the node's side (ARP needs a source the node finds on-link).
const R1_SIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 251);
/// `r2`'s address on the switch.
const R2_SIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 250);
/// The narrow link's two ends.
const NARROW_R1: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
const NARROW_R2: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 2);

/// The two routers; their namespaces go when this is dropped (the moved switch port
/// with `r1`'s, taking the node's `ul0` with it).
pub struct NarrowPath {
    pub r1: Netns,
    pub r2: Netns,
    /// The narrow link's device in `r1` (towards `r2`) and in `r2` (towards `r1`).
    pub r1_dev: &'static str,
    pub r2_dev: &'static str,
}

/// Puts node `name` of `c` behind two routers joined by a link of MTU `mtu`.
pub fn behind_narrow_link(c: &Cluster, name: &str, mtu: u32) -> Result<NarrowPath> {
    let node = c.node(name);
    let port = format!("u-{name}");
    let r1 = Netns::new(format!("{}{}-r1", netns::PREFIX, c.id))?;
    let r2 = Netns::new(format!("{}{}-r2", netns::PREFIX, c.id))?;
    for r in [&r1, &r2] {
        // New namespaces start with forwarding off and may inherit a strict rp_filter.
        r.sh("sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")?;
    }
    crate::run(&mut crate::cmd(&format!(
        "ip link add n1 netns {} mtu {mtu} type veth peer name n2 netns {} mtu {mtu}",
        r1.name, r2.name
    )))?;
    crate::run(&mut crate::cmd(&format!(
        "ip link add r2-sw netns {} mtu {UPLINK_MTU} type veth peer name u-r2 netns {} mtu {UPLINK_MTU}",
        r2.name, c.underlay.name
    )))?;
    c.underlay.ip("link set u-r2 master br0 up")?;

    r1.ip(&format!("addr add {NARROW_R1}/30 dev n1"))?;
    r1.ip("link set n1 up")?;
    r2.ip(&format!("addr add {NARROW_R2}/30 dev n2"))?;
    r2.ip("link set n2 up")?;
    r2.ip(&format!("addr add {R2_SIDE}/24 dev r2-sw"))?;
    r2.ip("link set r2-sw up")?;
    r2.ip(&format!("route add {}/32 via {NARROW_R1} dev n2", node.underlay))?;
    r2.sh("sysctl -q -w net.ipv4.conf.r2-sw.proxy_arp=1 net.ipv4.conf.r2-sw.rp_filter=0 net.ipv4.conf.n2.rp_filter=0")?;

    // The node's port leaves the switch for r1.
    c.underlay.ip(&format!("link set {port} netns {}", r1.name)).with_context(|| format!("moving {port} into r1"))?;
    r1.ip(&format!("addr add {R1_SIDE}/32 dev {port}"))?;
    r1.ip(&format!("link set {port} up"))?;
    r1.ip(&format!("route add {}/32 dev {port}", node.underlay))?;
    r1.ip(&format!("route add 198.19.0.0/24 via {NARROW_R2} dev n1"))?;
    r1.sh(&format!(
        "sysctl -q -w net.ipv4.conf.{port}.proxy_arp=1 net.ipv4.conf.{port}.rp_filter=0 net.ipv4.conf.n1.rp_filter=0"
    ))?;

    // Every node forgets the old neighbour (the node's MAC, or the others' for it).
    for n in &c.nodes {
        n.ns.ip("neigh flush dev ul0")?;
    }
    Ok(NarrowPath { r1, r2, r1_dev: "n1", r2_dev: "n2" })
}

impl NarrowPath {
    /// IPv4 fragments the two routers made (`Ip: FragCreates` in each namespace's
    /// `/proc/net/snmp`; only the narrow link needs any), both directions together.
    pub fn fragments_created(&self) -> Result<u64> {
        let mut total = 0;
        for r in [&self.r1, &self.r2] {
            let snmp = r.sh("cat /proc/net/snmp")?;
            total += snmp_counter(&snmp, "Ip", "FragCreates").context("no Ip FragCreates in /proc/net/snmp")?;
        }
        Ok(total)
    }
}

/// A counter from `/proc/net/snmp`'s header/value line pairs.
fn snmp_counter(snmp: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let header = lines.next()?;
    let values = lines.next()?;
    let i = header.split_whitespace().position(|h| h == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}
