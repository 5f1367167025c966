//! MTU parity with Flannel (issue 16): outer packets leave with DF clear, as
//! `flannel.1` (a kernel vxlan device without `df`) sends them, so a smaller-MTU hop
//! on the underlay fragments them; the receiver reassembles — the kernel for
//! Flannel, the stack and then the agent's tunnel socket for weft — and the transfer
//! completes. `Backend.MTU` larger than the uplink carries is refused at start.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Result, anyhow, ensure};
use weft_common::counters::{Hook, Verdict};
use weft_e2e::{
    agent::run_to_exit,
    cluster::{Cluster, Kind},
    narrow::behind_narrow_link,
    netns::Netns,
    traffic::{http_get, ping, ping_ok, tcp_transfer},
    wait_for,
};

const HEALTHZ_PORT: &str = "8471";
/// The narrow link: IPv6's minimum, a common tunnel MTU; the nodes have 1500.
const NARROW_MTU: u32 = 1280;
const TRANSFER: u64 = 8 << 20;

/// `/metrics` of node `ns`'s agent (its health port on loopback).
fn metrics(ns: &Netns) -> Result<String> {
    let r = wait_for(Duration::from_secs(5), || http_get(ns, HEALTHZ_PORT.parse().ok()?, "/metrics").ok())
        .ok_or_else(|| anyhow!("/metrics does not answer"))?;
    ensure!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The value of the sample `series` (name and labels, as exposed) in a `/metrics` body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Captures up to `count` VXLAN packets on `ns`'s `ul0` while `traffic` runs (at most
/// 15 s); returns tshark's fields per packet: outer source, outer DF, outer MF, outer
/// IP ID, inner DF (from the decoded VXLAN payload).
fn capture_outer_flags(ns: &Netns, dir: &std::path::Path, count: u32, mut traffic: impl FnMut()) -> Result<Vec<Vec<String>>> {
    let pcap = dir.join(format!("{}-flags.pcap", ns.name));
    let log = dir.join(format!("{}-tshark.log", ns.name));
    let n = count.to_string();
    let mut tshark = ns
        .exec_args(&["tshark", "-i", "ul0", "-c", &n, "-a", "duration:15", "-f", "udp port 8472", "-w", pcap.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .map_err(|e| anyhow!("tshark (apt-get install tshark): {e}"))?;
    // tshark's start (its dissectors load first) took over 15 s once on a loaded CI machine.
    wait_for(Duration::from_secs(60), || std::fs::read_to_string(&log).ok().filter(|l| l.contains("Capturing on")))
        .ok_or_else(|| anyhow!("tshark did not start capturing: {}", std::fs::read_to_string(&log).unwrap_or_default()))?;
    let status = wait_for(Duration::from_secs(15), || {
        traffic();
        tshark.try_wait().ok().flatten()
    });
    if status.is_none() {
        let _ = tshark.kill();
        let _ = tshark.wait();
    }
    let out = weft_e2e::run(Command::new("tshark").args([
        "-r",
        pcap.to_str().unwrap(),
        "-d",
        "udp.port==8472,vxlan",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "ip.src",
        "-e",
        "ip.flags.df",
        "-e",
        "ip.flags.mf",
        "-e",
        "ip.id",
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('|').map(str::to_owned).collect()).collect())
}

/// tshark prints a flag as 0/1 or False/True, depending on its version.
fn flag(field: &str) -> bool {
    matches!(field, "1" | "True" | "true")
}

/// The outer header on the wire, seen from a Flannel node: weft's packets to it carry
/// the same flags as its own `flannel.1`'s (DF clear, whatever the inner DF — ping
/// sets it), and an IP ID that changes from packet to packet.
#[test]
fn outer_flags_match_flannel() -> Result<()> {
    let mut c = Cluster::new(&[("b", Kind::Weft), ("c", Kind::Flannel)])?;
    for n in ["b", "c"] {
        c.add_pod(n)?;
    }
    ping_ok(&c.pod_on("c").ns, c.pod_on("b").ip, 2).map_err(|e| anyhow!("{e}\n{}", c.logs()))?;
    let (b, cn) = (c.node("b"), c.node("c"));
    // Pings both ways: each sender sends requests (inner DF set: ping's default) and
    // replies (inner DF clear).
    let packets = capture_outer_flags(&cn.ns, &c.dir, 16, || {
        let _ = ping(&c.pod_on("c").ns, c.pod_on("b").ip, 1, "");
        let _ = ping(&c.pod_on("b").ns, c.pod_on("c").ip, 1, "");
    })?;
    println!("outer headers on c's uplink (source|DF|MF|ID, outer,inner where tunnelled):");
    for p in &packets {
        println!("  {}", p.join("|"));
    }
    for (sender, underlay) in [("weft (b)", b.underlay), ("Flannel (c)", cn.underlay)] {
        let from: Vec<&Vec<String>> = packets.iter().filter(|p| p[0].split(',').next() == Some(&underlay.to_string())).collect();
        ensure!(from.len() >= 2, "fewer than 2 VXLAN packets from {sender} captured: {packets:?}");
        let mut ids = std::collections::BTreeSet::new();
        let mut inner_df = 0;
        for p in &from {
            let df: Vec<&str> = p[1].split(',').collect();
            let mf: Vec<&str> = p[2].split(',').collect();
            ensure!(df.len() == 2 && mf.len() == 2, "{sender}: not decoded as VXLAN over IPv4: {p:?}");
            ensure!(!flag(df[0]) && !flag(mf[0]), "{sender}: outer DF/MF set: {p:?}");
            inner_df += usize::from(flag(df[1]));
            ids.insert(p[3].split(',').next().unwrap_or_default().to_owned());
        }
        ensure!(inner_df > 0, "{sender}: no packet with inner DF set captured (DF not inherited is unchecked): {from:?}");
        ensure!(ids.len() == from.len(), "{sender}: outer IP IDs repeat: {from:?}");
    }
    Ok(())
}

/// A router pair with a 1280-byte link between node a and the rest (nodes at 1500):
/// 8 MiB pod-to-pod transfers, content checked, complete weft ↔ weft (a ↔ b) and
/// weft ↔ Flannel (a ↔ c), both directions, with the nodes' uplink segmentation on
/// and off. The routers fragmented; a's and b's
/// programs passed the first fragments (`tunnel_fragment`) and their agents
/// delivered the reassembled datagrams (`weft_reassembled_delivered_total`).
#[test]
fn narrow_underlay_hop_fragments_and_transfers_complete() -> Result<()> {
    let args = ["--healthz-ip", "127.0.0.1", "--healthz-port", HEALTHZ_PORT];
    let mut c = Cluster::new_with_agent_args(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)], &args)?;
    for n in ["a", "b", "c"] {
        c.add_pod(n)?;
    }
    for n in ["a", "b"] {
        let ns = &c.node(n).ns;
        let bound =
            wait_for(Duration::from_secs(10), || metrics(ns).ok().filter(|m| sample(m, "weft_tunnel_socket_bound") == Some(1.0)));
        ensure!(bound.is_some(), "{n}: the tunnel socket is not bound\n{}", c.logs());
    }
    let path = behind_narrow_link(&c, "a", NARROW_MTU)?;
    // Proxy ARP answers after a short delay: let the first pings find the new path.
    for to in ["b", "c"] {
        let reached = wait_for(Duration::from_secs(10), || {
            ping(&c.pod_on("a").ns, c.pod_on(to).ip, 1, "").ok().filter(|p| p.received == 1)
        });
        ensure!(reached.is_some(), "a -> {to} over the routers\n{}", c.logs());
    }
    // GSO super-packets cross the veth wire whole (the routers segment, then fragment
    // each segment); with segmentation off, as a NIC sends, each frame is fragmented.
    for segmentation in [true, false] {
        c.set_underlay_segmentation(segmentation)?;
        for (from, to) in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")] {
            let t = tcp_transfer(&c.pod_on(from).ns, &c.pod_on(to).ns, c.pod_on(to).ip, TRANSFER)
                .map_err(|e| anyhow!("{from} -> {to} (segmentation {segmentation}): {e:#}\n{}", c.logs()))?;
            println!(
                "narrow hop {NARROW_MTU}, sender segmentation {segmentation}: {from} -> {to}: {} MiB intact in {:?}",
                TRANSFER >> 20,
                t.elapsed
            );
        }
    }

    let fragments = path.fragments_created()?;
    println!("routers made {fragments} fragments");
    ensure!(fragments > 0, "the routers fragmented nothing: the narrow link was not crossed");
    for n in ["a", "b"] {
        let first = c.node(n).maps()?.counter_at(Hook::UplinkIngress, Verdict::TunnelFragment)?.packets;
        let body = metrics(&c.node(n).ns)?;
        let delivered = sample(&body, "weft_reassembled_delivered_total").unwrap_or(0.0);
        let dropped: f64 = body
            .lines()
            .filter(|l| l.starts_with("weft_reassembled_dropped_total{"))
            .filter_map(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
            .sum();
        println!(
            "{n}: {first} first fragments passed by decap, {delivered} datagrams reassembled and delivered, {dropped} dropped"
        );
        ensure!(first > 0, "{n}: decap saw no outer fragment\n{}", c.node(n).dataplane_state());
        ensure!(delivered > 0.0, "{n}: the agent delivered no reassembled datagram\n{body}");
        ensure!(dropped == 0.0, "{n}: the agent dropped reassembled datagrams\n{body}");
    }
    drop(c);
    drop(path);
    Ok(())
}

/// While another socket holds the tunnel port (Flannel's `flannel.1` during a
/// migration, until the agent removes it; here a kernel vxlan device it does not
/// know), the agent starts and forwards all the same, says once that it cannot bind,
/// and binds within a retry or two once the port is free.
#[test]
fn tunnel_socket_waits_for_the_port() -> Result<()> {
    let args = ["--healthz-ip", "127.0.0.1", "--healthz-port", HEALTHZ_PORT];
    let mut c = Cluster::new_with_agent_args(&[("a", Kind::Weft), ("b", Kind::Weft)], &args)?;
    for n in ["a", "b"] {
        c.add_pod(n)?;
    }
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().expect("agent").stop()?;
    let ns = &c.nodes[a].ns;
    ns.ip("link add vxhold type vxlan id 1 dstport 8472 dev ul0 nolearning")?;
    ns.ip("link set vxhold up")?;
    c.start_agent(a, &args)?;
    let ns = &c.node("a").ns;
    ensure!(metrics(ns).is_ok_and(|m| sample(&m, "weft_tunnel_socket_bound") == Some(0.0)), "bound while vxhold holds 8472");
    ping_ok(&c.pod_on("b").ns, c.pod_on("a").ip, 2).map_err(|e| anyhow!("b -> a while the port is held: {e}\n{}", c.logs()))?;
    let warned = c.agent_log("a");
    println!("{}", warned.lines().filter(|l| l.contains("binding UDP")).collect::<Vec<_>>().join("\n"));
    ensure!(
        warned.contains("binding UDP 198.19.0.10:8472") && warned.contains("retrying every 2s"),
        "no bind warning:\n{warned}"
    );

    ns.ip("link del vxhold")?;
    let bound =
        wait_for(Duration::from_secs(10), || metrics(ns).ok().filter(|m| sample(m, "weft_tunnel_socket_bound") == Some(1.0)));
    ensure!(bound.is_some(), "not bound 10 s after the port was freed\n{}", c.logs());
    let log = c.agent_log("a");
    ensure!(log.matches("retrying every 2s").count() == 1, "the bind failure is logged more than once:\n{log}");
    ensure!(log.contains("tunnel socket bound"), "{log}");
    Ok(())
}

/// `Backend.MTU` above the uplink's MTU less VXLAN's 50 bytes: the agent refuses to
/// start, naming both numbers; at the limit it starts.
#[test]
fn backend_mtu_larger_than_the_uplink_allows_is_refused() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft)])?;
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().expect("agent").stop()?;
    let net_conf = c.control().net_conf.clone();
    let original = std::fs::read_to_string(&net_conf)?;
    let with_mtu = |mtu: u32| -> Result<()> {
        let mut conf: serde_json::Value = serde_json::from_str(&original)?;
        conf["Backend"]["MTU"] = mtu.into();
        Ok(std::fs::write(&net_conf, conf.to_string())?)
    };

    with_mtu(1451)?;
    let (status, out) = run_to_exit(c.agent_command(a, &[]), Duration::from_secs(60))?;
    ensure!(!status.success(), "the agent started with Backend.MTU 1451 on a 1500 uplink:\n{out}");
    println!("refused: {}", out.lines().filter(|l| l.contains("Backend.MTU")).collect::<Vec<_>>().join("\n"));
    for part in ["Backend.MTU 1451", "ul0", "MTU 1500", "1450"] {
        ensure!(out.contains(part), "{part:?} missing from the agent's error:\n{out}");
    }

    with_mtu(1450)?;
    c.start_agent(a, &[])?;
    let mtu =
        wait_for(Duration::from_secs(20), || c.node("a").ns.ip("-o link show weft0").ok().filter(|l| l.contains("mtu 1450")));
    ensure!(mtu.is_some(), "weft0 not at Backend.MTU 1450\n{}", c.logs());
    Ok(())
}
