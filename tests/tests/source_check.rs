//! Issue 16: pods send only as themselves. A pod's veth drops IPv4 and ARP whose
//! sender is not the pod its CNI result recorded, on the default path and the fast
//! path; a pod that claims a neighbour's address (even before the neighbour exists)
//! never receives the neighbour's traffic.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use aya::programs::TcAttachType;
use weft_common::counters::{Hook, Verdict};
use weft_e2e::{
    cluster::{Cluster, Kind, Pod},
    packet::{self, ETH_P_ARP, IPPROTO_UDP, Ipv4},
    traffic::{next_port, raw_frame_send, raw_ipv4_send, udp_receive, udp_send},
    wait_for,
};

/// Two weft nodes; pods a-0 and a-1 on a, b-0 on b; every pod veth carrying its programs.
fn cluster(agent_args: &[&str]) -> Result<Cluster> {
    let mut c = Cluster::new_with_agent_args(&[("a", Kind::Weft), ("b", Kind::Weft)], agent_args)?;
    for node in ["a", "a", "b"] {
        let i = c.add_pod(node)?;
        wait_checked(&c, &c.pods[i])?;
    }
    Ok(c)
}

/// The host end of `pod`'s veth, from its CNI result (the bridge plugin's second interface).
fn host_veth(pod: &Pod) -> String {
    pod.result["interfaces"][1]["name"].as_str().expect("host veth in the CNI result").to_owned()
}

fn mac_of(pod: &Pod) -> Result<[u8; 6]> {
    let text = pod.ns.sh("cat /sys/class/net/eth0/address")?;
    let bytes: Vec<u8> = text.trim().split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("MAC {text}"))
}

/// Waits until `pod`'s veth carries the pod programs (the agent read its CNI result).
fn wait_checked(c: &Cluster, pod: &Pod) -> Result<()> {
    let (node, veth) = (c.node(&pod.node), host_veth(pod));
    let on = wait_for(Duration::from_secs(10), || {
        node.ns.tc_programs(&veth, TcAttachType::Ingress).ok().filter(|p| p.iter().any(|(_, n)| n == "weft_pod_egress"))
    });
    on.map(|_| ()).with_context(|| format!("{veth} of pod {} never got weft_pod_egress:\n{}", pod.name, c.agent_log(&pod.node)))
}

fn spoofed_drops(c: &Cluster, node: &str) -> Result<u64> {
    Ok(c.node(node).maps()?.counter_at(Hook::PodVethIngress, Verdict::DropSpoofedSource)?.packets)
}

/// Pod a-0 sends UDP from its raw socket with a neighbour's address (a-1's, same node),
/// a remote pod's (b-0's) and an outside address, to a remote and a local pod; then
/// the same datagrams with its own address. Only its own arrive, and every spoofed one
/// is counted at a-0's veth.
fn spoofed_sources_go_nowhere(c: &Cluster) -> Result<()> {
    let (a0, a1, b0) = (&c.pods[0], &c.pods[1], &c.pods[2]);
    let port = next_port();
    let datagram =
        |src: Ipv4Addr, dst: Ipv4Addr, tag: &[u8]| Ipv4::new(src, dst, IPPROTO_UDP).build(&packet::udp(40000, port, tag));
    let outside = Ipv4Addr::new(192, 0, 2, 9);
    let before = spoofed_drops(c, "a")?;
    let to_b0 = udp_receive(&b0.ns, Ipv4Addr::UNSPECIFIED, port, Duration::from_secs(4));
    let to_a1 = udp_receive(&a1.ns, Ipv4Addr::UNSPECIFIED, port, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(300));
    for src in [a1.ip, b0.ip, outside] {
        raw_ipv4_send(&a0.ns, datagram(src, b0.ip, b"spoofed"), 5)?;
    }
    for src in [b0.ip, outside] {
        raw_ipv4_send(&a0.ns, datagram(src, a1.ip, b"spoofed"), 5)?;
    }
    raw_ipv4_send(&a0.ns, datagram(a0.ip, b0.ip, b"own"), 5)?;
    raw_ipv4_send(&a0.ns, datagram(a0.ip, a1.ip, b"own"), 5)?;
    let (at_b0, at_a1) = (to_b0.join().expect("listener")?, to_a1.join().expect("listener")?);
    let drops = spoofed_drops(c, "a")? - before;
    let text = |got: &[Vec<u8>]| got.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>();
    assert!(at_b0.iter().chain(&at_a1).all(|d| d == b"own"), "a spoofed datagram arrived: {:?} {:?}", text(&at_b0), text(&at_a1));
    assert_eq!((at_b0.len(), at_a1.len()), (5, 5), "the pod's own datagrams arrive (the check can fail)\n{}", c.logs());
    assert_eq!(drops, 25, "drop_spoofed_source at a-0's veth\n{}", c.node("a").dataplane_state());
    Ok(())
}

#[test]
fn spoofed_sources_are_dropped_and_counted() -> Result<()> {
    let c = cluster(&[])?;
    spoofed_sources_go_nowhere(&c)?;
    // Without the fast path, the veth's egress (what is delivered to the pod) runs nothing.
    let veth = host_veth(&c.pods[0]);
    assert_eq!(c.node("a").ns.tc_programs(&veth, TcAttachType::Egress)?, vec![], "programs on {veth}'s egress");
    Ok(())
}

#[test]
fn spoofed_sources_are_dropped_and_counted_on_the_fast_path() -> Result<()> {
    let c = cluster(&["--fast-path"])?;
    spoofed_sources_go_nowhere(&c)?;
    // The fast path carried the pod's own datagram to b-0: the check sits before it.
    let fast = c.node("a").maps()?.counter_at(Hook::PodVethIngress, Verdict::FastEncapsulated)?.packets;
    assert!(fast >= 5, "a-0's own datagrams to b-0 took the fast path ({fast})");
    Ok(())
}

/// Pod a-0 takes the address host-local gives next, before any pod has it: it adds
/// it to its `eth0` and announces it (gratuitous ARP, and its kernel answers ARP for
/// it). The next pod on a gets that address, and everything sent to it — from the
/// remote pod b-0 (routed by node a) and from a-1 (over the bridge) — reaches it, not
/// a-0.
fn pre_claimed_address_stays_with_its_pod(mut c: Cluster) -> Result<()> {
    let (a0, a1) = (&c.pods[0], &c.pods[1]);
    let next = Ipv4Addr::from(u32::from(a1.ip) + 1);
    let a0_mac = mac_of(a0)?;
    a0.ns.ip(&format!("addr add {next}/32 dev eth0"))?;
    let before = spoofed_drops(&c, "a")?;
    let garp = packet::eth([0xff; 6], a0_mac, ETH_P_ARP, &packet::arp(2, a0_mac, next, [0xff; 6], next));
    raw_frame_send(&a0.ns, "eth0", garp, 5)?;
    let drops = spoofed_drops(&c, "a")? - before;
    assert!(drops >= 5, "a-0's forged ARP dropped at its veth ({drops})\n{}", c.node("a").dataplane_state());

    let i = c.add_pod("a")?;
    let victim = &c.pods[i];
    assert_eq!(victim.ip, next, "host-local gives the next address (the test's premise)");
    wait_checked(&c, victim)?;
    let (a0, a1, b0, victim) = (&c.pods[0], &c.pods[1], &c.pods[2], &c.pods[i]);
    let port = next_port();
    let at_victim = udp_receive(&victim.ns, Ipv4Addr::UNSPECIFIED, port, Duration::from_secs(5));
    let at_thief = udp_receive(&a0.ns, Ipv4Addr::UNSPECIFIED, port, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    udp_send(&b0.ns, next, port, 10, b"from b-0")?;
    udp_send(&a1.ns, next, port, 10, b"from a-1")?;
    let (victim_got, thief_got) = (at_victim.join().expect("listener")?, at_thief.join().expect("listener")?);
    assert!(thief_got.is_empty(), "the pre-claiming pod received {} datagrams for its neighbour", thief_got.len());
    assert_eq!(victim_got.len(), 20, "the pod that owns the address receives its traffic\n{}", c.logs());
    // The host's neighbour entry for the address, if routing made one (the fast path
    // delivers without it), is the owner's MAC, never the thief's.
    let neigh = c.node("a").ns.ip(&format!("neigh show {next}"))?;
    let hex = |mac: [u8; 6]| mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let (owner_mac, thief_mac) = (hex(mac_of(victim)?), hex(a0_mac));
    assert!(!neigh.contains(&thief_mac), "node a's neighbour table: {neigh} (thief {thief_mac})");
    assert!(neigh.trim().is_empty() || neigh.contains(&owner_mac), "node a's neighbour table: {neigh} (owner {owner_mac})");
    Ok(())
}

#[test]
fn a_pre_claimed_address_stays_with_the_pod_it_was_given_to() -> Result<()> {
    pre_claimed_address_stays_with_its_pod(cluster(&[])?)
}

#[test]
fn a_pre_claimed_address_stays_with_the_pod_it_was_given_to_on_the_fast_path() -> Result<()> {
    pre_claimed_address_stays_with_its_pod(cluster(&["--fast-path"])?)
}

/// `--pod-source-check=false` (for pods that route others' traffic): nothing is
/// dropped for its source — which is also what shows the tests above can fail.
#[test]
fn with_the_check_off_a_pod_may_send_as_another() -> Result<()> {
    let mut c = Cluster::new_with_agent_args(&[("a", Kind::Weft), ("b", Kind::Weft)], &["--pod-source-check=false"])?;
    for node in ["a", "a", "b"] {
        c.add_pod(node)?;
    }
    let (a0, a1) = (&c.pods[0], &c.pods[1]);
    let port = next_port();
    let at_a1 = udp_receive(&a1.ns, Ipv4Addr::UNSPECIFIED, port, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let spoofed = Ipv4::new(Ipv4Addr::new(192, 0, 2, 9), a1.ip, IPPROTO_UDP).build(&packet::udp(40000, port, b"spoofed"));
    raw_ipv4_send(&a0.ns, spoofed, 5)?;
    assert_eq!(at_a1.join().expect("listener")?.len(), 5, "{}", c.logs());
    assert_eq!(spoofed_drops(&c, "a")?, 0);
    let veth = host_veth(a0);
    assert!(c.node("a").ns.tc_programs(&veth, TcAttachType::Ingress)?.is_empty(), "no program on {veth}");
    Ok(())
}
