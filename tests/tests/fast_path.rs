//! `--fast-path` on real packets: a and b run weft with the fast path, c is a Flannel
//! node (kernel vxlan), one pod on each, pods made by the reference CNI plugins.
//!
//! What the fast path promises, checked here: pod-to-pod traffic between nodes
//! arrives intact without the host stack (the nodes' FORWARD chain never sees it),
//! with Flannel peers too; what it must leave to the stack still goes there — a
//! Service's NAT in both directions, TTL expiry, packets too big for the tunnel; and
//! turning it off takes it off the pod bridge.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Result, anyhow};
use aya::programs::TcAttachType;
use rstest::rstest;
use weft_common::{
    counters::Verdict,
    fastpath::FlowKey,
    maps::{links, programs},
};
use weft_e2e::{
    cluster::{Cluster, Kind},
    traffic::{next_port, ping, ping_ok, tcp_transfer, tcp_transfer_via, udp_receive, udp_send_ttl},
    wait_for,
};

const NODES: [&str; 3] = ["a", "b", "c"];
const WEFT: [&str; 2] = ["a", "b"];
const POD_NET: &str = "10.244.0.0/16";

/// The mesh with the fast path on a and b; every pod has talked to every other (ARP
/// done, so the endpoints are known) and each weft node counts forwarded pod traffic.
fn cluster(extra: &[&str]) -> Cluster {
    let args: Vec<&str> = ["--fast-path"].iter().chain(extra).copied().collect();
    let mut c =
        Cluster::new_with_agent_args(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)], &args).expect("cluster");
    for n in NODES {
        c.add_pod(n).expect("CNI ADD");
    }
    for (from, to) in pairs() {
        ping_ok(&c.pod_on(from).ns, c.pod_on(to).ip, 1).expect("warm-up ping");
    }
    for n in WEFT {
        // A rule without a target only counts: pod traffic the stack forwards.
        c.node(n)
            .ns
            .sh(&format!("iptables -w -I FORWARD 1 -s {POD_NET} -d {POD_NET} -m comment --comment weft-test"))
            .expect("iptables (apt-get install iptables)");
        let pod = c.pod_on(n).ip;
        let known =
            wait_for(Duration::from_secs(5), || c.node(n).maps().ok()?.endpoints().ok()?.contains_key(&pod).then_some(()));
        assert!(known.is_some(), "node {n}: pod {pod} never became a fast-path endpoint\n{}", c.logs());
    }
    c
}

fn pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    NODES.iter().flat_map(|&x| NODES.iter().filter(move |&&y| y != x).map(move |&y| (x, y)))
}

/// Packets node `n`'s stack forwarded between pod addresses (the counting rule).
fn forwarded(c: &Cluster, n: &str) -> Result<u64> {
    let line = c.node(n).ns.sh("iptables -w -L FORWARD 1 -v -x -n")?;
    line.split_whitespace().next().and_then(|p| p.parse().ok()).ok_or_else(|| anyhow!("node {n}: no counting rule: {line}"))
}

fn count(c: &Cluster, n: &str, v: Verdict) -> Result<u64> {
    Ok(c.node(n).maps()?.counter(v)?.packets)
}

/// 100 MB between every pair, both ways, with and without GSO on the wire: intact,
/// encapsulated at the sending weft node's pod bridge, delivered straight into the
/// receiving weft node's pod, and not one packet through either weft node's FORWARD
/// chain. (The Service test below shows the same counter counting stack traffic.)
/// XDP decap here (`auto` picks TC on these veth uplinks: its own test is below).
#[test]
fn fast_path_forwards_intact_without_the_host_stack() -> Result<()> {
    let c = cluster(&["--decap", "xdp"]);
    const BYTES: u64 = 100 * 1024 * 1024;
    let fwd_before: Vec<u64> = WEFT.iter().map(|n| forwarded(&c, n)).collect::<Result<_>>()?;
    for segmentation in [true, false] {
        c.set_underlay_segmentation(segmentation)?;
        for (from, to) in pairs() {
            let weft = |n: &str| c.node(n).kind == Kind::Weft;
            let enc = if weft(from) { count(&c, from, Verdict::FastEncapsulated)? } else { 0 };
            let del = if weft(to) { count(&c, to, Verdict::FastDelivered)? } else { 0 };
            let (src, dst) = (c.pod_on(from), c.pod_on(to));
            let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, BYTES)
                .map_err(|e| anyhow!("pod {from} -> pod {to} (segmentation {segmentation}): {e}\n{}", c.logs()))?;
            println!("fast path: pod {from} -> pod {to}, segmentation {segmentation}: {} MiB intact", t.bytes >> 20);
            if weft(from) {
                let n = count(&c, from, Verdict::FastEncapsulated)? - enc;
                assert!(n > 0, "node {from}: nothing encapsulated at the pod bridge\n{}", c.node(from).dataplane_state());
            }
            if weft(to) {
                let n = count(&c, to, Verdict::FastDelivered)? - del;
                assert!(n > 0, "node {to}: nothing delivered straight to the pod\n{}", c.node(to).dataplane_state());
            }
        }
    }
    for (n, before) in WEFT.iter().zip(fwd_before) {
        assert_eq!(
            forwarded(&c, n)?,
            before,
            "node {n}: pod traffic went through the host stack\n{}",
            c.node(n).dataplane_state()
        );
        let maps = c.node(n).maps()?;
        for v in [Verdict::DropResize, Verdict::DropRedirect, Verdict::DropMalformed, Verdict::DropToVtepMac] {
            assert_eq!(maps.counter(v)?.packets, 0, "node {n}: unexpected {v:?}\n{}", c.logs());
        }
    }
    Ok(())
}

/// What the fast path must leave to the stack goes there:
/// - a Service address translated on node a (kube-proxy's DNAT on the client's node):
///   the flow leaves through weft0 and is remembered, so the replies also take the
///   stack and conntrack reverses the NAT — the transfer arrives intact;
/// - a DNAT on the server's node (a hostPort): the stack delivers the flow to the pod,
///   its veth remembers it, and the pod's replies take the stack too;
/// - TTL expiry, on UDP the fast path carries and on ping: the node where it expires
///   reports it, as without the fast path;
/// - a packet too big for weft0: frag-needed with weft0's MTU from the sending node.
///
/// With either decap placement (they deliver to pods from different hooks).
#[rstest]
#[case::xdp("xdp")]
#[case::tc("tc")]
fn fast_path_leaves_nat_ttl_and_mtu_to_the_stack(#[case] decap: &str) -> Result<()> {
    let c = cluster(&["--resync-seconds", "3600", "--decap", decap]);
    let (a, b) = (c.pod_on("a"), c.pod_on("b"));

    let service = Ipv4Addr::new(10, 96, 0, 10);
    c.node("a").ns.sh(&format!("iptables -w -t nat -A PREROUTING -d {service}/32 -p tcp -j DNAT --to-destination {}", b.ip))?;
    let fwd = forwarded(&c, "a")?;
    let t = tcp_transfer_via(&a.ns, &b.ns, b.ip, service, 10 << 20)
        .map_err(|e| anyhow!("pod a -> Service {service} -> pod b: {e}\n{}", c.logs()))?;
    println!("fast path: pod a -> Service -> pod b: {} MiB intact", t.bytes >> 20);
    assert!(forwarded(&c, "a")? > fwd, "node a: the Service flow did not go through the stack");
    let flows = c.node("a").maps()?.stack_flows()?;
    let remembered = |k: &FlowKey| k.saddr == a.ip.octets() && k.daddr == b.ip.octets() && k.protocol == 6;
    assert!(flows.iter().any(remembered), "node a: the NATed flow is not remembered: {flows:?}");

    // A hostPort-style DNAT on the server's node: pod b connects to node a's own
    // address, a's stack translates it to pod a and delivers it through the bridge;
    // pod a's replies must take the stack too (conntrack restores node a's address as
    // their source), or pod b would see them come from pod a and reset.
    let node_a = c.node("a").underlay;
    c.node("a").ns.sh(&format!("iptables -w -t nat -A PREROUTING -d {node_a}/32 -p tcp -j DNAT --to-destination {}", a.ip))?;
    let t = tcp_transfer_via(&b.ns, &a.ns, a.ip, node_a, 10 << 20)
        .map_err(|e| anyhow!("pod b -> node a {node_a} (DNAT to pod a): {e}\n{}", c.logs()))?;
    println!("fast path: pod b -> node a's address -> pod a: {} MiB intact", t.bytes >> 20);

    // TTL on UDP, which the fast path carries (ping's ICMP always takes the stack):
    // with TTL 2 a datagram expires at the receiving node (each node lowers it once),
    // with TTL 3 it arrives. Both ways between weft nodes and from the Flannel node.
    for (from, to) in [("a", "b"), ("c", "a")] {
        for (ttl, arrives) in [(2, false), (3, true)] {
            let (src, dst) = (c.pod_on(from), c.pod_on(to));
            let port = next_port();
            let rx = udp_receive(&dst.ns, dst.ip, port, Duration::from_secs(1));
            std::thread::sleep(Duration::from_millis(100));
            udp_send_ttl(&src.ns, dst.ip, port, 3, b"ttl probe", ttl)?;
            let got = rx.join().map_err(|_| anyhow!("receiver panicked"))??;
            assert_eq!(!got.is_empty(), arrives, "UDP with TTL {ttl}, pod {from} -> pod {to}: {} datagrams arrived", got.len());
        }
    }

    for (from, to) in [("a", "b"), ("c", "a")] {
        let src = &c.pod_on(from).ns;
        let dst = c.pod_on(to).ip;
        let gw = c.node(from).pod_cidr.network().octets();
        let from_gw = Ipv4Addr::new(gw[0], gw[1], gw[2], 1);
        let t1 = ping(src, dst, 1, "-t 1")?;
        assert!(
            t1.output.contains("Time to live exceeded") && t1.output.contains(&from_gw.to_string()),
            "ttl 1, pod {from} -> pod {to}: node {from} ({from_gw}) must report the expiry\n{}",
            t1.output
        );
        let t2 = ping(src, dst, 1, "-t 2")?;
        let to_overlay = c.node(to).overlay_ip().to_string();
        assert!(
            t2.output.contains("Time to live exceeded") && t2.output.contains(&to_overlay),
            "ttl 2, pod {from} -> pod {to}: node {to} ({to_overlay}) must report the expiry\n{}",
            t2.output
        );
    }

    // A smaller tunnel MTU than the pods': the fast path hands the packet to the stack,
    // which answers as it does for weft0 (the agent's resync would restore 1450).
    c.node("a").ns.ip("link set weft0 mtu 1400")?;
    let big = ping(&a.ns, b.ip, 1, "-M do -s 1422")?;
    assert_eq!(big.received, 0, "a 1450-byte DF packet must not cross a 1400-byte tunnel\n{}", big.output);
    assert!(big.output.contains("mtu = 1400"), "expected frag-needed with weft0's MTU from node a:\n{}", big.output);
    let fits = ping(&a.ns, b.ip, 2, "-M do -s 1372")?;
    assert_eq!(fits.received, 2, "a 1400-byte DF packet fits\n{}", fits.output);
    Ok(())
}

/// The pinned links of node `n`'s pod veths.
fn pod_link_pins(c: &Cluster, n: &str) -> Result<Vec<std::path::PathBuf>> {
    Ok(std::fs::read_dir(&c.node(n).bpffs_dir)?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(links::POD_EGRESS_PREFIX) || name.starts_with(links::POD_INGRESS_PREFIX)
        })
        .map(|e| e.path())
        .collect())
}

/// The host end of the veth of node `n`'s pod (the bridge's port).
fn pod_veth(c: &Cluster, n: &str) -> Result<String> {
    let out = c.node(n).ns.sh("ip -o link show master cni0 type veth")?;
    let name = out.split(": ").nth(1).and_then(|s| s.split('@').next()).ok_or_else(|| anyhow!("no pod veth on {n}: {out}"))?;
    Ok(name.to_owned())
}

/// Restarting with the fast path adopts the pod veths' pinned links; a new pod gets
/// the program, and its veth's pin goes with it; restarting without the fast path (and
/// the source check) takes the programs off every pod veth, and traffic keeps
/// flowing (b still sends to a over its fast path; a receives through weft0).
#[test]
fn fast_path_restarts_follows_pods_and_turns_off() -> Result<()> {
    let mut c = cluster(&[]);
    let ai = c.node_index("a");
    assert_eq!(pod_link_pins(&c, "a")?.len(), 2, "two pinned links per pod veth");
    let weft0_pin = c.node("a").bpffs_dir.join(links::WEFT0_INGRESS);
    assert!(weft0_pin.exists(), "no pinned link on weft0's ingress");
    let veth = pod_veth(&c, "a")?;
    let on = |c: &Cluster, iface: &str, hook| -> Result<Vec<String>> {
        Ok(c.node("a").ns.tc_programs(iface, hook)?.into_iter().map(|(_, name)| name).collect())
    };
    // The kernel truncates program names to 15 bytes.
    assert_eq!(on(&c, "weft0", TcAttachType::Ingress)?, [&programs::WEFT0_INGRESS[..15]]);
    assert_eq!(on(&c, &veth, TcAttachType::Ingress)?, [&programs::POD_EGRESS[..15]]);
    assert_eq!(on(&c, &veth, TcAttachType::Egress)?, [&programs::POD_INGRESS[..15]]);
    c.restart_agent(ai, &["--fast-path"])?;
    let log = c.agent_log("a");
    // Both programs on the pod's veth adopted through their pins, none made anew (the
    // encap and decap lines also say how=Replaced: count only the fast path's).
    let fast: Vec<&str> = log.lines().filter(|l| l.contains("attached (pod veth)")).collect();
    assert!(fast.len() == 2 && fast.iter().all(|l| l.contains("how=Replaced")), "fast-path links not adopted:\n{log}");
    // And weft0's: still exactly one program there, the new agent's.
    let weft0 = log.lines().find(|l| l.contains(&format!("program=\"{}\"", programs::WEFT0_INGRESS)));
    assert!(weft0.is_some_and(|l| l.contains("how=Replaced")), "weft0's fast-path link not adopted:\n{log}");
    assert_eq!(on(&c, "weft0", TcAttachType::Ingress)?, [&programs::WEFT0_INGRESS[..15]]);

    let extra = c.add_pod("a")?;
    let more = wait_for(Duration::from_secs(5), || (pod_link_pins(&c, "a").ok()?.len() == 4).then_some(()));
    assert!(more.is_some(), "no links for the new pod's veth\n{}", c.agent_log("a"));
    let extra_ip = c.pods[extra].ip;
    ping_ok(&c.pods[extra].ns, c.pod_on("b").ip, 1)?;
    let known =
        wait_for(Duration::from_secs(5), || c.node("a").maps().ok()?.endpoints().ok()?.contains_key(&extra_ip).then_some(()));
    assert!(known.is_some(), "the new pod {extra_ip} never became an endpoint\n{}", c.agent_log("a"));
    c.del_pod(extra)?;
    let fewer = wait_for(Duration::from_secs(5), || (pod_link_pins(&c, "a").ok()?.len() == 2).then_some(()));
    assert!(fewer.is_some(), "the deleted pod's links are still pinned\n{}", c.agent_log("a"));
    let gone =
        wait_for(Duration::from_secs(5), || (!c.node("a").maps().ok()?.endpoints().ok()?.contains_key(&extra_ip)).then_some(()));
    assert!(gone.is_some(), "the deleted pod {extra_ip} is still an endpoint");

    // Off, the source check still on (the default): only its program stays, at the
    // veth's ingress; the flow-remembering one at its egress goes.
    c.restart_agent(ai, &[])?;
    let pins = pod_link_pins(&c, "a")?;
    assert!(pins.len() == 1 && pins[0].to_string_lossy().contains(links::POD_EGRESS_PREFIX), "{pins:?}");
    assert_eq!(on(&c, &veth, TcAttachType::Ingress)?, [&programs::POD_EGRESS[..15]]);
    assert_eq!(on(&c, &veth, TcAttachType::Egress)?, Vec::<String>::new());
    // Off with the source check too: nothing of weft's is left on the pod veths.
    c.restart_agent(ai, &["--pod-source-check=false"])?;
    assert_eq!(pod_link_pins(&c, "a")?, Vec::<std::path::PathBuf>::new(), "pins left after --fast-path was turned off");
    let ns = &c.node("a").ns;
    for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
        let progs = ns.tc_programs(&veth, hook)?;
        assert!(progs.is_empty(), "programs still on {veth} ({hook:?}): {progs:?}");
    }
    assert!(!weft0_pin.exists(), "weft0's fast-path link still pinned after --fast-path was turned off");
    let progs = ns.tc_programs("weft0", TcAttachType::Ingress)?;
    assert!(progs.is_empty(), "programs still on weft0's ingress: {progs:?}");
    // The endpoints stay for the bridge's egress program, which both modes run; with
    // the config flag off, nothing delivers past weft0 (checked below).
    let endpoints: Vec<_> = c.node("a").maps()?.endpoints()?.into_keys().collect();
    assert_eq!(endpoints, [c.pod_on("a").ip], "endpoints after --fast-path was turned off");
    assert_eq!(ns.tc_programs("cni0", TcAttachType::Egress)?.len(), 1, "the bridge's egress program");

    let enc = count(&c, "a", Verdict::FastEncapsulated)?;
    let del = count(&c, "a", Verdict::FastDelivered)?;
    let b_enc = count(&c, "b", Verdict::FastEncapsulated)?;
    let a_stack = count(&c, "a", Verdict::DeliveredFromXdp)? + count(&c, "a", Verdict::Decapsulated)?;
    for (from, to) in [("a", "b"), ("b", "a")] {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        tcp_transfer(&src.ns, &dst.ns, dst.ip, 10 << 20).map_err(|e| anyhow!("pod {from} -> pod {to}: {e}\n{}", c.logs()))?;
    }
    assert_eq!(count(&c, "a", Verdict::FastEncapsulated)?, enc, "node a still encapsulates at the pod veth");
    assert_eq!(count(&c, "a", Verdict::FastDelivered)?, del, "node a still delivers past weft0");
    assert!(count(&c, "b", Verdict::FastEncapsulated)? > b_enc, "node b stopped using its fast path");
    let a_stack_now = count(&c, "a", Verdict::DeliveredFromXdp)? + count(&c, "a", Verdict::Decapsulated)?;
    assert!(a_stack_now > a_stack, "node a did not receive through weft0");
    Ok(())
}

/// With `--decap tc` (no XDP) the fast path delivers what TC decapsulated straight to
/// the pod as well: 100 MB both ways between the weft nodes and from the Flannel node,
/// intact, and still nothing through FORWARD, on both wires. Aggregated either way:
/// MTU-sized frames (senders segment) after weft0's GRO, GSO super-packets (a veth
/// underlay with offloads on) whole, straight from the uplink.
#[test]
fn fast_path_works_with_tc_decap() -> Result<()> {
    let c = cluster(&["--decap", "tc"]);
    let fwd: Vec<u64> = WEFT.iter().map(|n| forwarded(&c, n)).collect::<Result<_>>()?;
    for segmenting_wire in [true, false] {
        c.set_underlay_segmentation(!segmenting_wire)?;
        for (from, to) in [("a", "b"), ("b", "a"), ("c", "a")] {
            let counter = |v| -> Result<_> { Ok(c.node(to).maps()?.counter(v)?) };
            let (del0, dec0) = (counter(Verdict::FastDelivered)?, counter(Verdict::Decapsulated)?);
            let (src, dst) = (c.pod_on(from), c.pod_on(to));
            tcp_transfer(&src.ns, &dst.ns, dst.ip, 100 << 20)
                .map_err(|e| anyhow!("pod {from} -> pod {to} (segmenting wire: {segmenting_wire}): {e}\n{}", c.logs()))?;
            let (del1, dec1) = (counter(Verdict::FastDelivered)?, counter(Verdict::Decapsulated)?);
            let (packets, bytes) = (del1.packets - del0.packets, del1.bytes - del0.bytes);
            let (decap, decap_bytes) = (dec1.packets - dec0.packets, dec1.bytes - dec0.bytes);
            let what = format!(
                "node {to}, segmenting wire {segmenting_wire}: {packets} fast deliveries ({bytes} B), \
                 {decap} frames decapsulated and not delivered at the uplink ({decap_bytes} B)"
            );
            assert!(bytes > 100 << 20, "{what}: not all 100 MiB delivered straight to the pod");
            // 100 MiB is ~75,000 MTU-sized packets: aggregates are many times fewer.
            assert!(packets < 75_000 / 4, "{what}: not aggregated");
            if segmenting_wire {
                assert!(decap > 70_000, "{what}: the wire did not carry MTU-sized frames");
            } else {
                // Super-packets go in whole: only what the sender did not aggregate
                // (short tails, the handshake) goes through weft0's peer.
                assert!(decap_bytes < (100 << 20) / 4, "{what}: super-packets segmented on the way");
            }
        }
    }
    for (n, before) in WEFT.iter().zip(fwd) {
        assert_eq!(forwarded(&c, n)?, before, "node {n}: pod traffic went through the host stack");
    }
    Ok(())
}
