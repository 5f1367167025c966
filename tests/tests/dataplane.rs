//! The dataplane on real packets: three nodes on one underlay — a and b run weft, c is
//! configured exactly as Flannel's vxlan backend configures a node — with pods made
//! by the reference CNI plugins. Every check runs between every pair of nodes, in
//! both directions.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Result;
use weft_common::counters::{Hook, Verdict};
use weft_e2e::{
    cluster::{Cluster, Kind},
    netns::Netns,
    packet::{self, ETH_P_IPV4, IPPROTO_UDP, Ipv4},
    traffic::{self, next_port, ping, ping_ok, tcp_transfer, udp_receive, udp_send},
    wait_for,
};

const NODES: [&str; 3] = ["a", "b", "c"];

/// a, b: weft; c: Flannel's kernel vxlan. One pod on each.
fn mesh() -> Cluster {
    let mut c = Cluster::new(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)]).expect("cluster");
    for n in NODES {
        c.add_pod(n).expect("CNI ADD");
    }
    c
}

fn pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    NODES.iter().flat_map(|&x| NODES.iter().filter(move |&&y| y != x).map(move |&y| (x, y)))
}

/// Pods reach pods on every other node, weft↔weft and weft↔Flannel, both ways; each
/// node reaches remote pods from its own stack; the TTL drops by one per node.
#[test]
fn pods_and_nodes_reach_remote_pods_on_weft_and_flannel_nodes() -> Result<()> {
    let c = mesh();
    for (from, to) in pairs() {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        let p = ping_ok(&src.ns, dst.ip, 3).map_err(|e| anyhow::anyhow!("{e}\n{}", c.logs()))?;
        // 64 at the sender, forwarded by the sending node and the receiving node.
        assert!(p.output.contains("ttl=62"), "pod {from} -> pod {to}: expected ttl=62\n{}", p.output);
        ping_ok(&c.node(from).ns, dst.ip, 2)?;
    }
    Ok(())
}

/// Packets the pod's eth0 has received.
fn rx_packets(pod: &Netns) -> Result<u64> {
    let out = pod.sh("cat /sys/class/net/eth0/statistics/rx_packets")?;
    out.trim().parse().map_err(|e| anyhow::anyhow!("rx_packets {out:?}: {e}"))
}

/// Steady state for the aggregation checks: every pod reached once, so its node has
/// resolved it (ARP) and the agent made it an endpoint. Until then a pod's packets take
/// the bridge, which segments super-packets, as without weft.
fn known_endpoints(c: &Cluster) -> Result<()> {
    for (from, to) in pairs() {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        ping_ok(&src.ns, dst.ip, 1)?;
        if c.node(to).kind == Kind::Weft {
            let known = wait_for(Duration::from_secs(5), || {
                c.node(to).maps().ok()?.endpoints().ok()?.contains_key(&dst.ip).then_some(())
            });
            anyhow::ensure!(known.is_some(), "pod on {to} never became an endpoint\n{}", c.logs());
        }
    }
    Ok(())
}

/// Restarts the weft agents with `args` (they adopt their pinned state).
fn restart_weft_agents(c: &mut Cluster, args: &[&str]) -> Result<()> {
    for i in 0..c.nodes.len() {
        if c.nodes[i].agent.is_some() {
            c.restart_agent(i, args)?;
        }
    }
    Ok(())
}

/// ≥ 100 MB TCP between every ordered pair of pods, content checked byte by byte, with
/// the underlay's segmentation on (GSO super-packets cross the veths) and off (senders
/// put MTU-sized frames on the wire, as a NIC does). TC decap here (`--decap tc`, what
/// drivers without native XDP get); the XDP placement has its own test below. Either
/// way the pod receives aggregates: with MTU-sized frames weft0's GRO aggregates what
/// TC decapsulated, and super-packets are not segmented on the way to the pod.
#[test]
fn large_transfers_arrive_intact_between_every_pair() -> Result<()> {
    let mut c = mesh();
    restart_weft_agents(&mut c, &["--decap", "tc"])?;
    known_endpoints(&c)?;
    const BYTES: u64 = 100 * 1024 * 1024;
    for segmentation in [true, false] {
        c.set_underlay_segmentation(segmentation)?;
        for (from, to) in pairs() {
            let (src, dst) = (c.pod_on(from), c.pod_on(to));
            let rx_before = rx_packets(&dst.ns)?;
            let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, BYTES)
                .map_err(|e| anyhow::anyhow!("pod {from} -> pod {to} (segmentation {segmentation}): {e}\n{}", c.logs()))?;
            let delivered = rx_packets(&dst.ns)? - rx_before;
            println!(
                "pod {from} -> pod {to}, underlay segmentation {}: {} MiB intact in {:.2} s ({:.2} Gbit/s), {delivered} packets into the pod",
                if segmentation { "on " } else { "off" },
                t.bytes >> 20,
                t.elapsed.as_secs_f64(),
                t.gbit_per_s()
            );
            // The pod gets aggregates, ≥ 4 frames a packet, as from a Flannel receiver's
            // vxlan socket GRO. MTU-sized frames on the wire: weft0's GRO must have
            // aggregated them. Super-packets on the wire: they must not reach the pod
            // as MTU-sized frames — still marked as tunnel GSO after decap, they would
            // be segmented in software by the pod bridge (which has no tunnel offload
            // features) if handed to weft0 whole.
            if c.node(to).kind == Kind::Weft {
                assert!(
                    delivered * 4 * 1400 < BYTES,
                    "node {to}, underlay segmentation {segmentation}: {delivered} packets for {BYTES} bytes: not aggregated"
                );
            }
        }
    }
    for n in ["a", "b"] {
        let maps = c.node(n).maps()?;
        for v in [Verdict::DropResize, Verdict::DropRedirect, Verdict::DropMalformed, Verdict::DropNoTunnel] {
            assert_eq!(maps.counter(v)?.packets, 0, "node {n}: unexpected {v:?}");
        }
        assert_eq!(maps.counter(Verdict::DeliveredFromXdp)?.packets, 0, "node {n}: XDP decapsulated under --decap tc");
        // Decapsulated frames reach weft0 through its peer's queues: one per CPU (a
        // single 256-slot ring would funnel every CPU's decap), and none dropped there.
        let ns = &c.node(n).ns;
        let queues = ns.sh("ls /sys/class/net/weft0/queues")?.split_whitespace().filter(|q| q.starts_with("rx-")).count();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(queues, cpus, "node {n}: weft0 rx queues");
        let dropped = ns.sh("cat /sys/class/net/weft0_peer/statistics/tx_dropped")?;
        assert_eq!(dropped.trim(), "0", "node {n}: frames dropped on the way into weft0");
        assert!(maps.counter(Verdict::Decapsulated)?.packets > 0);
    }
    // Only TCP takes weft0's peer (its GRO aggregates nothing else): UDP goes straight
    // into weft0's ingress, and arrives. (TC decap: these agents run `--decap tc`.)
    let peer_tx =
        |n: &str| -> Result<u64> { Ok(c.node(n).ns.sh("cat /sys/class/net/weft0_peer/statistics/tx_packets")?.trim().parse()?) };
    let (src, dst) = (c.pod_on("a"), c.pod_on("b"));
    let (port, before) = (next_port(), peer_tx("b")?);
    let rx = udp_receive(&dst.ns, dst.ip, port, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    udp_send(&src.ns, dst.ip, port, 50, b"weft udp")?;
    let got = rx.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    assert_eq!(got.len(), 50, "UDP pod a -> pod b: {} of 50 datagrams", got.len());
    let through_peer = peer_tx("b")? - before;
    assert!(through_peer < 10, "node b: {through_peer} packets of a UDP flow of 50 through weft0's peer");
    // Nor do TCP segments without data, except a FIN (it must not overtake the data
    // before it): per connection node b receives SYN, ACK, FIN and ACK, one via the peer.
    let (before, decap) = (peer_tx("b")?, count(&c, "b", Verdict::Decapsulated)?);
    traffic::tcp_connect_close(&src.ns, &dst.ns, dst.ip, 50)?;
    let (through_peer, frames) = (peer_tx("b")? - before, count(&c, "b", Verdict::Decapsulated)? - decap);
    assert!(frames >= 150, "node b: {frames} frames decapsulated for 50 connections");
    let what = format!("node b: {through_peer} of {frames} handshake and teardown frames through weft0's peer");
    assert!((50..100).contains(&through_peer), "{what}: wanted the 50 FINs only");
    Ok(())
}

/// TC decap hands TCP data frames into weft0's ring of the CPU that decapsulated them, so that
/// ring's NAPI runs right there, after the receive that filled it (as Flannel's per-CPU
/// GRO cells do). By flow hash a CPU could fill a ring whose NAPI waits on another,
/// busy CPU, and the veth dropped what did not fit: CI lost 20 frames that way.
/// Sender and receiver pinned to one CPU keep the whole path on it (a veth receives
/// on the sending CPU), so that CPU's queue must carry each transfer. The agents run
/// confined to CPU 0 (as under a cgroup CPU limit or an affinity mask): weft0 still
/// needs a queue for every CPU, or the other CPUs' frames would share one.
#[test]
fn decapsulated_tcp_enters_weft0_on_the_decapsulating_cpus_queue() -> Result<()> {
    let mut c = mesh();
    let all = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    let mut cpu0 = nix::sched::CpuSet::new();
    cpu0.set(0)?;
    // Children inherit this thread's affinity: the restarted agents see one CPU.
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0)?;
    let restarted = restart_weft_agents(&mut c, &["--decap", "tc"]);
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all)?;
    restarted?;
    // MTU-sized frames on the wire, as from a NIC: only those take weft0's rings
    // (super-packets go straight into weft0 past the bridge).
    c.set_underlay_segmentation(false)?;
    let b = &c.node("b").ns;
    let per_queue = || -> Result<Vec<u64>> {
        let stats = b.sh("ethtool -S weft0")?;
        // rx_queue_N_xdp_packets counts every frame weft0's NAPI took from ring N.
        let counts: Vec<u64> = stats
            .lines()
            .filter_map(|l| l.trim().split_once(": "))
            .filter(|(key, _)| key.starts_with("rx_queue_") && key.ends_with("_xdp_packets"))
            .map(|(key, n)| n.parse().map_err(|e| anyhow::anyhow!("{key}: {n:?}: {e}")))
            .collect::<Result<_>>()?;
        anyhow::ensure!(!counts.is_empty(), "no rx_queue_N_xdp_packets in ethtool -S weft0:\n{stats}");
        Ok(counts)
    };
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count()).filter(|&i| all.is_set(i).unwrap_or(false)).collect();
    let (src, dst) = (c.pod_on("a"), c.pod_on("b"));
    // Four connections per CPU: by flow hash, all would land right 1 time in 256 on
    // two CPUs.
    for cpu in cpus.iter().flat_map(|&cpu| [cpu; 4]) {
        let before = per_queue()?;
        // Threads inherit the affinity of the thread that spawns them.
        let mut only = nix::sched::CpuSet::new();
        only.set(cpu)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &only)?;
        let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, 20 << 20);
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all)?;
        t?;
        let delta: Vec<u64> = per_queue()?.iter().zip(&before).map(|(a, b)| a - b).collect();
        let total: u64 = delta.iter().sum();
        assert!(delta.len() > cpu, "CPU {cpu} has no queue of its own on weft0: {} queues", delta.len());
        assert!(total > 1000, "CPU {cpu}: only {total} frames through weft0's rings for 20 MiB");
        assert!(delta[cpu] * 100 >= total * 99, "CPU {cpu}: frames per weft0 rx queue {delta:?}, wanted queue {cpu}");
    }
    Ok(())
}

/// A DF packet larger than weft0's MTU gets frag-needed (from the stack, at weft0),
/// one that fits passes; TTL expiry is reported by the node where it happens — on
/// the receiving node too, for a packet that arrived through the tunnel.
#[test]
fn pmtu_discovery_and_ttl_expiry_work_through_the_tunnel() -> Result<()> {
    let mut c = mesh();
    let ext = c.add_external("a")?;
    for to in ["b", "c"] {
        let dst = c.pod_on(to).ip;
        let host = &c.externals[ext];
        // 1472 + 28 = 1500 bytes: fits the external link, not weft0 (1450).
        let big = ping(&host.ns, dst, 1, "-M do -s 1472")?;
        assert_eq!(big.received, 0, "oversized DF ping must not arrive\n{}", big.output);
        assert!(big.output.contains("mtu = 1450"), "expected frag-needed with mtu 1450 from node a:\n{}", big.output);
    }
    // Only node a routes back to the external host, so the largest packet that fits
    // (1422 + 28 = 1450 bytes, exactly weft0's MTU) is sent from a's own stack.
    for to in ["b", "c"] {
        let p = ping(&c.node("a").ns, c.pod_on(to).ip, 2, "-M do -s 1422")?;
        assert_eq!(p.received, 2, "a 1450-byte DF packet fits the tunnel\n{}", p.output);
        let over = ping(&c.node("a").ns, c.pod_on(to).ip, 1, "-M do -s 1423")?;
        assert_eq!(over.received, 0, "{}", over.output);
        assert!(over.output.contains("1450"), "local EMSGSIZE names weft0's MTU:\n{}", over.output);
    }
    for (from, to) in pairs() {
        let src = &c.pod_on(from).ns;
        let dst = c.pod_on(to).ip;
        let t1 = ping(src, dst, 1, "-t 1")?;
        let gw_from = c.node(from).pod_cidr.network().octets();
        let from_gw = Ipv4Addr::new(gw_from[0], gw_from[1], gw_from[2], 1);
        assert!(
            t1.output.contains("Time to live exceeded") && t1.output.contains(&from_gw.to_string()),
            "ttl 1: node {from} ({from_gw}) must report the expiry\n{}",
            t1.output
        );
        let t2 = ping(src, dst, 1, "-t 2")?;
        assert!(
            t2.output.contains("Time to live exceeded") && t2.output.contains(&c.node(to).overlay_ip().to_string()),
            "ttl 2: node {to} must report the expiry from its tunnel address\n{}",
            t2.output
        );
    }
    Ok(())
}

/// VXLAN with our VNI from a host that is no node reaches no pod and is counted;
/// the same socket does receive from a real pod (the check can fail).
#[test]
fn vxlan_from_a_stranger_is_dropped_and_counted() -> Result<()> {
    let c = mesh();
    let b = c.node("b");
    // A host on the underlay with its own kernel vxlan device aimed at b, as an
    // attacker (or a misconfigured node) would set it up.
    let rogue = Netns::new(format!("{}{}-rogue", weft_e2e::netns::PREFIX, c.id))?;
    weft_e2e::run(&mut weft_e2e::cmd(&format!(
        "ip link add eth0 netns {} type veth peer name u-rogue netns {}",
        rogue.name, c.underlay.name
    )))?;
    c.underlay.ip("link set u-rogue master br0 up")?;
    rogue.ip("addr add 198.19.0.200/24 dev eth0")?;
    rogue.ip("link set eth0 up")?;
    rogue.ip("link add vx0 address 0a:58:0a:f4:c8:00 type vxlan id 1 local 198.19.0.200 dev eth0 dstport 8472 nolearning")?;
    rogue.ip("addr add 10.244.200.0/32 dev vx0")?;
    rogue.ip("link set vx0 up")?;
    weft_e2e::flannel::add_peer_on(
        &rogue,
        "vx0",
        &weft_e2e::flannel::Peer { underlay: b.underlay, pod_cidr: b.pod_cidr, vtep_mac: b.vtep_mac.clone() },
    )?;

    let target = c.pod_on("b");
    let before = b.maps()?.counter(Verdict::DropUnknownPeer)?.packets;
    let port = traffic::next_port();
    let listener = traffic::udp_receive(&target.ns, target.ip, port, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    traffic::udp_send(&rogue, target.ip, port, 20, b"rogue")?;
    traffic::udp_send(&c.pod_on("a").ns, target.ip, port, 5, b"legit")?;
    let got = listener.join().expect("listener")?;
    let after = b.maps()?.counter(Verdict::DropUnknownPeer)?.packets;

    assert!(got.iter().all(|d| d == b"legit"), "a datagram from the stranger reached the pod: {got:?}");
    assert_eq!(got.len(), 5, "the legit datagrams must arrive (the listener works)");
    assert!(after - before >= 20, "drop_unknown_peer moved by {} for 20 stranger packets", after - before);
    // The program's aya-log warning (agents run with --bpf-log warn) reaches the agent's log.
    let logged = wait_for(Duration::from_secs(5), || {
        c.agent_log("b").contains("VXLAN from unknown source 198.19.0.200 dropped").then_some(())
    });
    assert!(logged.is_some(), "the eBPF warning is forwarded into the agent's log:\n{}", c.agent_log("b"));
    Ok(())
}

/// A VtepMAC as the harness keeps it ("0a:58:…") in wire bytes.
fn mac_bytes(mac: &str) -> [u8; 6] {
    let bytes: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex MAC")).collect();
    bytes.try_into().expect("six bytes")
}

/// Issue 16: VXLAN from a known node's own address (what a pod on a Flannel node can
/// send: flanneld masquerades its hand-made VXLAN to the node's address) reaches
/// nothing on a weft node unless its inner packet is one a node may send there. Node
/// c (Flannel) sends b hand-made VXLAN datagrams from an ordinary UDP socket: an inner
/// source outside every pod CIDR, and one of b's own pods' addresses, to b's pod; and
/// c's pod as source to b's underlay address (b's host, not on b's overlay). None
/// arrives, each is counted under its reason; the same hand-made VXLAN with c's pod as
/// source does reach b's pod and b's tunnel address (the check can fail). TC decap
/// here (what `auto` picks on this veth underlay); `--decap xdp` below.
#[test]
fn forged_inner_addresses_from_a_known_node_are_dropped_and_counted() -> Result<()> {
    forged_inner_addresses_reach_nothing(&mesh())
}

/// The same behind `--decap xdp`: XDP decapsulates only the legitimate datagrams and
/// hands the forged ones untouched to TC, which drops and counts them.
#[test]
fn forged_inner_addresses_are_dropped_behind_xdp_decap_too() -> Result<()> {
    let mut c = mesh();
    restart_weft_agents(&mut c, &["--decap", "xdp"])?;
    let attached = wait_for(Duration::from_secs(5), || c.agent_log("b").contains("attached (native XDP)").then_some(()));
    assert!(attached.is_some(), "{}", c.agent_log("b"));
    let maps = c.node("b").maps()?;
    let at = |hook: Hook, v: Verdict| maps.counter_at(hook, v).map(|c| c.packets);
    let decap_before = at(Hook::UplinkXdp, Verdict::Decapsulated)?;
    let tc_before = at(Hook::UplinkIngress, Verdict::DropInnerSource)?;
    forged_inner_addresses_reach_nothing(&c)?;
    // The 10 legitimate datagrams went through XDP's decap (and whatever else the
    // other nodes sent b meanwhile: never fewer).
    let decapsulated = at(Hook::UplinkXdp, Verdict::Decapsulated)? - decap_before;
    assert!(decapsulated >= 10, "XDP decapsulated {decapsulated} datagrams");
    assert_eq!(at(Hook::UplinkXdp, Verdict::DropInnerSource)?, 0, "XDP leaves the verdict (and its count) to TC");
    let tc = at(Hook::UplinkIngress, Verdict::DropInnerSource)? - tc_before;
    assert_eq!(tc, 20, "TC behind XDP dropped the 20 forged sources");
    Ok(())
}

/// Node c sends b hand-made VXLAN (see the test above); b's pod and host get only
/// the legitimate datagrams, and the drops are counted exactly.
fn forged_inner_addresses_reach_nothing(c: &Cluster) -> Result<()> {
    let (b, sender) = (c.node("b"), c.node("c"));
    let (target, c_pod) = (c.pod_on("b"), c.pod_on("c"));
    let (b_mac, c_mac) = (mac_bytes(&b.vtep_mac), mac_bytes(&sender.vtep_mac));
    let vxlan_datagram = |src: Ipv4Addr, dst: Ipv4Addr, port: u16, tag: &[u8]| -> &'static [u8] {
        let inner = Ipv4::new(src, dst, IPPROTO_UDP).build(&packet::udp(40000, port, tag));
        Box::leak(packet::vxlan(0x08, 1, &packet::eth(b_mac, c_mac, ETH_P_IPV4, &inner)).into_boxed_slice())
    };
    let outside = Ipv4Addr::new(192, 0, 2, 77);
    // An address of b's pod CIDR no pod has: a local pod's, forged from outside.
    let b_local = Ipv4Addr::from(u32::from(b.pod_cidr.network()) + 200);
    let (pod_port, host_port) = (next_port(), next_port());
    let forged_source = vxlan_datagram(outside, target.ip, pod_port, b"forged source");
    let forged_local = vxlan_datagram(b_local, target.ip, pod_port, b"forged local source");
    let forged_destination = vxlan_datagram(c_pod.ip, b.underlay, host_port, b"forged destination");
    let legit_pod = vxlan_datagram(c_pod.ip, target.ip, pod_port, b"legit");
    let legit_host = vxlan_datagram(c_pod.ip, b.overlay_ip(), host_port, b"legit host");

    let maps = b.maps()?;
    let count = |v: Verdict| maps.counter(v).map(|c| c.packets);
    let (src_before, dst_before) = (count(Verdict::DropInnerSource)?, count(Verdict::DropInnerDestination)?);
    let pod_listener = udp_receive(&target.ns, target.ip, pod_port, Duration::from_secs(4));
    let host_listener = udp_receive(&b.ns, Ipv4Addr::UNSPECIFIED, host_port, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(300));
    for forged in [forged_source, forged_local, forged_destination] {
        udp_send(&sender.ns, b.underlay, 8472, 10, forged)?;
    }
    udp_send(&sender.ns, b.underlay, 8472, 5, legit_pod)?;
    udp_send(&sender.ns, b.underlay, 8472, 5, legit_host)?;
    let (to_pod, to_host) = (pod_listener.join().expect("listener")?, host_listener.join().expect("listener")?);
    let (src_drops, dst_drops) =
        (count(Verdict::DropInnerSource)? - src_before, count(Verdict::DropInnerDestination)? - dst_before);

    let text = |got: &[Vec<u8>]| got.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>();
    assert!(to_pod.iter().all(|d| d == b"legit"), "a forged datagram reached b's pod: {:?}", text(&to_pod));
    assert_eq!(to_pod.len(), 5, "the legit hand-made VXLAN must reach the pod (the check can fail): {:?}", text(&to_pod));
    assert!(to_host.iter().all(|d| d == b"legit host"), "a forged datagram reached b's host: {:?}", text(&to_host));
    assert_eq!(
        to_host.len(),
        5,
        "hand-made VXLAN to b's tunnel address must arrive: {:?}\n{}",
        text(&to_host),
        b.dataplane_state()
    );
    assert_eq!(src_drops, 20, "drop_inner_source for 20 forged sources\n{}", b.dataplane_state());
    assert_eq!(dst_drops, 10, "drop_inner_destination for 10 forged destinations\n{}", b.dataplane_state());
    // The program's warning names the sender and the forged address.
    let logged = wait_for(Duration::from_secs(5), || {
        let log = c.agent_log("b");
        (log.contains(&format!("VXLAN from node {} with inner source {outside}", sender.underlay))
            && log.contains(&format!("with inner destination {}", b.underlay)))
        .then_some(())
    });
    assert!(logged.is_some(), "the eBPF warnings reach the agent's log:\n{}", c.agent_log("b"));
    Ok(())
}

/// tshark, an independent decoder, reads weft's packets as VXLAN: VNI 1, port 8472,
/// source port from the RFC 7348 range, good outer checksum, inner MACs the VtepMACs.
#[test]
fn wire_format_decodes_as_vxlan_in_tshark() -> Result<()> {
    let c = mesh();
    let (a, b) = (c.node("a"), c.node("b"));
    let pcap = c.dir.join("a-to-b.pcap");
    let log = c.dir.join("tshark.log");
    let filter = format!("udp dst port 8472 and src host {}", a.underlay);
    let mut tshark = c
        .underlay
        .exec_args(&["tshark", "-i", "u-b", "-c", "3", "-a", "duration:15", "-f", &filter, "-w", pcap.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    // tshark's start (its dissectors load first) took over 15 s once on a loaded CI machine.
    wait_for(Duration::from_secs(60), || std::fs::read_to_string(&log).ok().filter(|l| l.contains("Capturing on")))
        .expect("tshark did not start capturing");
    // "Capturing on" can come a moment before packets are: keep pinging until tshark
    // has its three packets (it exits then), at most 10 s.
    let status = wait_for(Duration::from_secs(10), || {
        let _ = ping(&c.pod_on("a").ns, c.pod_on("b").ip, 1, "");
        tshark.try_wait().ok().flatten()
    })
    .expect("tshark captured three packets");
    assert!(status.success(), "tshark: {}", std::fs::read_to_string(&log)?);

    let out = weft_e2e::run(Command::new("tshark").args([
        "-r",
        pcap.to_str().unwrap(),
        "-d",
        "udp.port==8472,vxlan",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "vxlan.vni",
        "-e",
        "eth.src",
        "-e",
        "eth.dst",
        "-e",
        "ip.checksum.status",
        "-e",
        "icmp.type",
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "three encapsulated echo requests (tshark -c 3):\n{text}");
    for line in lines {
        let f: Vec<&str> = line.split('|').collect();
        let (pa, pb) = (c.pod_on("a").ip.to_string(), c.pod_on("b").ip.to_string());
        assert_eq!(f[0], format!("{},{pa}", a.underlay), "outer,inner source: {line}");
        assert_eq!(f[1], format!("{},{pb}", b.underlay), "outer,inner destination: {line}");
        let sport: u16 = f[2].parse()?;
        assert!(sport >= 49152, "source port {sport}: {line}");
        assert_eq!(f[3], "8472");
        assert_eq!(f[4], "1", "VNI: {line}");
        let macs_src: Vec<&str> = f[5].split(',').collect();
        let macs_dst: Vec<&str> = f[6].split(',').collect();
        assert_eq!(macs_src.get(1).copied(), Some(a.vtep_mac.as_str()), "inner source MAC: {line}");
        assert_eq!(macs_dst.get(1).copied(), Some(b.vtep_mac.as_str()), "inner destination MAC: {line}");
        assert!(f[7].starts_with('1'), "outer IPv4 checksum good (1): {line}");
        assert_eq!(f[8], "8", "ICMP echo request inside: {line}");
    }
    Ok(())
}

/// Maps are pinned with BTF: bpftool prints field names, and the counters count.
#[test]
fn pinned_maps_show_field_names_in_bpftool() -> Result<()> {
    let c = mesh();
    ping_ok(&c.pod_on("a").ns, c.pod_on("b").ip, 2)?;
    let dir = &c.node("a").bpffs_dir;
    let dump = |pin: &str| -> Result<String> {
        let out = weft_e2e::run(Command::new("bpftool").args(["map", "dump", "pinned"]).arg(dir.join(pin)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let tunnels = dump("tunnels")?;
    for field in ["prefix_len", "underlay_ip", "vni", "vtep_mac"] {
        assert!(tunnels.contains(&format!("\"{field}\"")), "tunnels dump lacks {field}:\n{tunnels}");
    }
    assert!(tunnels.contains("[198,19,0,11") || tunnels.contains("198,19,0,11"), "b's underlay in the table:\n{tunnels}");
    let config = dump("config")?;
    for field in ["abi_version", "udp_port", "uplink_ifindex", "weft0_ifindex"] {
        assert!(config.contains(&format!("\"{field}\"")), "config dump lacks {field}:\n{config}");
    }
    let peers = dump("peers")?;
    assert!(peers.contains("\"vtep_mac\""), "{peers}");
    let counters = dump("counters")?;
    assert!(counters.contains("\"packets\"") && counters.contains("\"bytes\""), "{counters}");
    assert!(c.node("a").maps()?.counter(Verdict::Encapsulated)?.packets >= 2);
    assert!(c.node("b").maps()?.counter(Verdict::Decapsulated)?.packets >= 2);
    Ok(())
}

fn count(c: &Cluster, node: &str, v: Verdict) -> Result<u64> {
    Ok(c.node(node).maps()?.counter(v)?.packets)
}

/// `--decap xdp`: VXLAN is decapsulated at the uplink's native XDP hook, before GRO,
/// and TC hands the aggregates to weft0. Between weft and Flannel nodes both ways,
/// 100 MB transfers arrive intact on a wire whose senders segment (as NICs do) and
/// on one that carries GSO super-packets; every transferred byte went through XDP,
/// and GRO aggregated it (fewer deliveries into weft0 than frames decapsulated).
/// Then `--decap tc` takes XDP off again, and traffic still flows.
#[test]
fn xdp_decap_forwards_intact_and_gro_aggregates() -> Result<()> {
    let mut c = mesh();
    restart_weft_agents(&mut c, &["--decap", "xdp"])?;
    for n in ["a", "b"] {
        let attached = wait_for(Duration::from_secs(5), || c.agent_log(n).contains("attached (native XDP)").then_some(()));
        assert!(attached.is_some(), "{}", c.agent_log(n));
        let link = c.node(n).ns.ip("-d link show ul0")?;
        assert!(link.contains("prog/xdp"), "node {n}: no XDP program on ul0:\n{link}");
    }
    const BYTES: u64 = 100 * 1024 * 1024;
    for segmentation in [false, true] {
        c.set_underlay_segmentation(segmentation)?;
        for (from, to) in pairs() {
            let weft = c.node(to).kind == Kind::Weft;
            let before =
                if weft { (count(&c, to, Verdict::Decapsulated)?, count(&c, to, Verdict::DeliveredFromXdp)?) } else { (0, 0) };
            let (src, dst) = (c.pod_on(from), c.pod_on(to));
            let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, BYTES)
                .map_err(|e| anyhow::anyhow!("pod {from} -> pod {to} (segmentation {segmentation}): {e}\n{}", c.logs()))?;
            if weft {
                let frames = count(&c, to, Verdict::Decapsulated)? - before.0;
                let delivered = count(&c, to, Verdict::DeliveredFromXdp)? - before.1;
                println!(
                    "xdp decap: pod {from} -> pod {to}, segmentation {segmentation}: {} MiB intact, {frames} frames decapsulated, {delivered} aggregates delivered",
                    t.bytes >> 20
                );
                assert!(frames >= BYTES / 1500, "node {to}: {frames} frames decapsulated in XDP for {BYTES} bytes");
                assert!(
                    delivered > 0 && delivered * 2 < frames,
                    "node {to}: GRO did not aggregate ({delivered} deliveries for {frames} frames)"
                );
            }
        }
    }
    for n in ["a", "b"] {
        let maps = c.node(n).maps()?;
        for v in [Verdict::DropResize, Verdict::DropRedirect, Verdict::DropMalformed, Verdict::DropToVtepMac] {
            assert_eq!(maps.counter(v)?.packets, 0, "node {n}: unexpected {v:?}\n{}", c.logs());
        }
    }

    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().expect("agent").stop()?;
    c.start_agent(a, &["--decap", "tc"])?;
    let removed = wait_for(Duration::from_secs(5), || c.agent_log("a").contains("removed XDP decap").then_some(()));
    assert!(removed.is_some(), "{}", c.agent_log("a"));
    let link = c.node("a").ns.ip("-d link show ul0")?;
    assert!(!link.contains("prog/xdp"), "XDP still on a's ul0:\n{link}");
    let before = count(&c, "a", Verdict::DeliveredFromXdp)?;
    let (src, dst) = (c.pod_on("b"), c.pod_on("a"));
    tcp_transfer(&src.ns, &dst.ns, dst.ip, 10 << 20)?;
    assert_eq!(count(&c, "a", Verdict::DeliveredFromXdp)?, before, "XDP still decapsulating after --decap tc");
    Ok(())
}

/// Counter of iptables rule 1 in `chain` (`-nvxL`: exact packets and bytes).
fn rule_bytes(ns: &Netns, chain: &str) -> Result<u64> {
    let out = ns.sh(&format!("iptables -nvxL {chain} 1"))?;
    let bytes = out.split_whitespace().nth(1).ok_or_else(|| anyhow::anyhow!("iptables -nvxL {chain} 1: {out:?}"))?;
    Ok(bytes.parse()?)
}

/// With super-packets on the wire (a veth underlay, offloads on), TC decap hands them
/// to weft0 whole, and the bridge's egress program sends what the host routes to a
/// pod straight to its veth: the bridge's own transmit, which would segment them in
/// software, carries next to nothing. Routing and netfilter still see every packet
/// (FORWARD counts all the bytes, and a FORWARD rule still stops a flow), multicast
/// and broadcast still take the bridge, and the transfers arrive intact.
#[test]
fn super_packets_reach_pods_whole_past_the_bridge_and_through_netfilter() -> Result<()> {
    let mut c = mesh();
    restart_weft_agents(&mut c, &["--decap", "tc"])?;
    known_endpoints(&c)?;
    c.set_underlay_segmentation(true)?;
    const BYTES: u64 = 64 << 20;
    let tx = |n: &str, dev: &str| -> Result<u64> {
        Ok(c.node(n).ns.sh(&format!("cat /sys/class/net/{dev}/statistics/tx_packets"))?.trim().parse()?)
    };
    for (from, to) in [("a", "b"), ("c", "b"), ("b", "a")] {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        let ns = &c.node(to).ns;
        ns.sh(&format!("iptables -I FORWARD 1 -d {} -p tcp", dst.ip))?;
        let (bridge_tx, peer_tx, rx) = (tx(to, "cni0")?, tx(to, "weft0_peer")?, rx_packets(&dst.ns)?);
        let bypassed = count(&c, to, Verdict::BridgeBypassed)?;
        let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, BYTES)
            .map_err(|e| anyhow::anyhow!("pod {from} -> pod {to}: {e}\n{}", c.logs()))?;
        let (bridge_tx, peer_tx) = (tx(to, "cni0")? - bridge_tx, tx(to, "weft0_peer")? - peer_tx);
        let (rx, bypassed) = (rx_packets(&dst.ns)? - rx, count(&c, to, Verdict::BridgeBypassed)? - bypassed);
        let forwarded = rule_bytes(ns, "FORWARD")?;
        ns.sh("iptables -D FORWARD 1")?;
        println!(
            "pod {from} -> pod {to}: {:.2} Gbit/s; into the pod {rx} packets, {bypassed} past the bridge, \
             {bridge_tx} through its transmit, {peer_tx} through weft0's peer; FORWARD saw {forwarded} bytes",
            t.gbit_per_s()
        );
        assert!(rx * 4 * 1400 < BYTES, "node {to}: {rx} packets into the pod for {BYTES} bytes: segmented on the way");
        assert!(bypassed >= rx * 9 / 10, "node {to}: only {bypassed} of {rx} packets past the bridge's transmit");
        assert!(bridge_tx * 20 < rx, "node {to}: the bridge transmitted {bridge_tx} packets of {rx}");
        assert!(forwarded >= BYTES, "node {to}: FORWARD counted {forwarded} bytes of a {BYTES}-byte transfer");
    }
    // A FORWARD rule still applies to bypassed traffic.
    let (src, dst) = (c.pod_on("a"), c.pod_on("b"));
    let b = &c.node("b").ns;
    b.sh(&format!("iptables -I FORWARD 1 -d {} -p tcp -j REJECT --reject-with tcp-reset", dst.ip))?;
    let blocked = tcp_transfer(&src.ns, &dst.ns, dst.ip, 1 << 20);
    b.sh("iptables -D FORWARD 1")?;
    assert!(blocked.is_err(), "a FORWARD reject on node b did not stop pod a -> pod b");
    // Broadcast and multicast are the bridge's: a broadcast ping from node b reaches its pod.
    let pod_b_rx = rx_packets(&dst.ns)?;
    let bypassed = count(&c, "b", Verdict::BridgeBypassed)?;
    dst.ns.sh("sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0")?;
    let _ = b.sh(&format!("ping -b -c 3 -i 0.2 -W 1 {}", c.node("b").pod_cidr.broadcast()));
    assert!(rx_packets(&dst.ns)? >= pod_b_rx + 3, "the pod on b got no broadcast");
    assert_eq!(count(&c, "b", Verdict::BridgeBypassed)?, bypassed, "broadcast taken past the bridge");
    for n in ["a", "b"] {
        let maps = c.node(n).maps()?;
        for v in [Verdict::DropResize, Verdict::DropRedirect, Verdict::DropMalformed] {
            assert_eq!(maps.counter(v)?.packets, 0, "node {n}: unexpected {v:?}");
        }
    }
    Ok(())
}

/// A node forwards overlay traffic on to another node: Flannel node c, its FDB
/// pointing a's VtepMAC at node b (a stale entry, or a deliberate detour), sends pod
/// c -> pod a through b. b decapsulates, routes to weft0 and encapsulates again —
/// with super-packets that still carry the first tunnel's state on a veth underlay,
/// which the kernel refuses to describe twice — and a receives it intact.
#[test]
fn a_decapsulated_packet_is_encapsulated_again_for_a_third_node() -> Result<()> {
    let c = mesh();
    let (a, b) = (c.node("a"), c.node("b"));
    c.node("c").ns.bridge(&format!("fdb replace {} dev flannel.1 dst {} self permanent", a.vtep_mac, b.underlay))?;
    let (src, dst) = (c.pod_on("c"), c.pod_on("a"));
    for segmentation in [true, false] {
        c.set_underlay_segmentation(segmentation)?;
        let (enc, dec) = (count(&c, "b", Verdict::Encapsulated)?, count(&c, "b", Verdict::Decapsulated)?);
        let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, 32 << 20)
            .map_err(|e| anyhow::anyhow!("pod c -> pod a via b (segmentation {segmentation}): {e}\n{}", c.logs()))?;
        let (enc, dec) = (count(&c, "b", Verdict::Encapsulated)? - enc, count(&c, "b", Verdict::Decapsulated)? - dec);
        println!(
            "pod c -> node b -> pod a, segmentation {segmentation}: {:.2} Gbit/s; b decapsulated {dec}, encapsulated {enc}",
            t.gbit_per_s()
        );
        assert!(dec > 100 && enc > 100, "node b did not carry the detour: {dec} decapsulated, {enc} encapsulated");
    }
    // Small packets too (the replies come back directly: ping only shows their TTL).
    ping_ok(&src.ns, dst.ip, 2)?;
    let maps = b.maps()?;
    for v in [Verdict::DropResize, Verdict::DropRedirect, Verdict::DropMalformed] {
        assert_eq!(maps.counter(v)?.packets, 0, "node b: unexpected {v:?}");
    }
    Ok(())
}
