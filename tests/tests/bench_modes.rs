//! Every topology the bench measures forwards traffic intact, on both of its wires:
//! built by the bench's own code (host-gw, Flannel's kernel vxlan, weft with XDP
//! decap, weft with TC decap, weft with the fast path), 100 MB each way between the
//! pods, content
//! checked byte by byte — first with the veths' offloads on, then on the simulated
//! NIC wire (segmentation off towards the wire, GRO on the receiving uplink).

use anyhow::{Result, anyhow};
use weft_e2e::{
    bench::{Mode, Topology, apply_nic},
    traffic::tcp_transfer,
};

const BYTES: u64 = 100 * 1024 * 1024;

fn transfers(t: &Topology, wire: &str) -> Result<()> {
    let c = &t.cluster;
    for (from, to) in [("a", "b"), ("b", "a")] {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        let r = tcp_transfer(&src.ns, &dst.ns, dst.ip, BYTES)
            .map_err(|e| anyhow!("{} on the {wire} wire, pod {from} -> pod {to}: {e}\n{}", t.mode.name(), c.logs()))?;
        println!("{:<8} {wire:<4} pod {from} -> pod {to}: {} MiB intact", t.mode.name(), r.bytes >> 20);
    }
    Ok(())
}

/// The masquerade bench's topologies (host-gw and Flannel with flanneld's iptables
/// masquerade, weft with --ip-masq): pod a -> internet host, intact on both wires.
#[test]
fn every_masquerade_bench_mode_forwards_intact_on_both_wires() -> Result<()> {
    for mode in [Mode::HostGw, Mode::Flannel, Mode::Weft] {
        let t = Topology::build_for(mode, &[], true)?;
        let c = &t.cluster;
        let host = &c.internet.as_ref().expect("internet").host;
        for wire in ["veth", "nic"] {
            if wire == "nic" {
                apply_nic(c)?;
            }
            let r = tcp_transfer(&c.pod_on("a").ns, &host.ns, host.ip, BYTES)
                .map_err(|e| anyhow!("{} on the {wire} wire, pod a -> internet: {e}\n{}", t.mode.name(), c.logs()))?;
            println!("{:<8} {wire:<4} pod a -> internet host: {} MiB intact", t.mode.name(), r.bytes >> 20);
        }
    }
    Ok(())
}

#[test]
fn every_bench_mode_forwards_intact_on_both_wires() -> Result<()> {
    for mode in Mode::ALL {
        let t = Topology::build(mode, &[])?;
        transfers(&t, "veth")?;
        apply_nic(&t.cluster)?;
        transfers(&t, "nic")?;
    }
    Ok(())
}
