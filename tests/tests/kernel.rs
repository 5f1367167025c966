//! What differs per kernel: which TC attach path the agent picks, whether the verifier
//! takes every program, and forwarding through both with content verified. Runs here
//! on the host's kernel, and in qemu guests on Debian's 6.1 and 6.12 kernels
//! (`cargo xtask test --kernels` boots them and runs this file inside).

use anyhow::{Context, Result};
use aya::programs::TcAttachType;
use weft_e2e::{
    cluster::{Cluster, Kind},
    traffic::{ping_ok, tcp_transfer},
};

/// TCX came with Linux 6.6.
fn kernel_has_tcx() -> Result<bool> {
    let release = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>());
    let (major, minor) = (parts.next(), parts.next());
    let (Some(Ok(major)), Some(Ok(minor))) = (major, minor) else {
        anyhow::bail!("cannot read the kernel version from {release:?}");
    };
    Ok((major, minor) >= (6, 6))
}

#[test]
fn this_kernels_attach_path_loads_every_program_and_forwards_verified_data() -> Result<()> {
    let tcx = kernel_has_tcx()?;
    let release = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
    println!("kernel {release}: expecting {}", if tcx { "TCX" } else { "clsact filters" });
    let mut c = Cluster::new(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)])?;
    for n in ["a", "b", "c"] {
        c.add_pod(n)?;
    }
    let expect = if tcx { "TC programs attach through TCX links" } else { "TC programs attach through clsact filters" };
    for n in ["a", "b"] {
        let log = c.agent_log(n);
        assert!(log.contains(expect), "{n} on {release}: expected {expect:?}\n{log}");
        let ns = &c.node(n).ns;
        assert_eq!(ns.tc_programs("ul0", TcAttachType::Ingress)?.len(), 1, "{n}: decap on ul0");
        assert_eq!(ns.tc_programs("weft0", TcAttachType::Egress)?.len(), 1, "{n}: encap on weft0");
    }
    let check = |c: &Cluster| -> Result<()> {
        for (from, to) in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")] {
            ping_ok(&c.pod_on(from).ns, c.pod_on(to).ip, 2).with_context(|| format!("{from} -> {to}\n{}", c.logs()))?;
            let t = tcp_transfer(&c.pod_on(from).ns, &c.pod_on(to).ns, c.pod_on(to).ip, 4 << 20)
                .with_context(|| format!("TCP {from} -> {to}\n{}", c.logs()))?;
            println!("{release}: {from} -> {to}: {} bytes verified in {:?}", t.bytes, t.elapsed);
        }
        Ok(())
    };
    check(&c)?;
    // A restarted agent takes over the attached programs on this kernel's path.
    let a = c.node_index("a");
    c.restart_agent(a, &[])?;
    let log = c.agent_log("a");
    assert!(log.contains("program=\"weft_decap\" iface=ul0 how=Replaced"), "decap replaced in place on {release}\n{log}");
    check(&c)?;
    // The XDP program through this kernel's verifier, attached natively (veths have
    // native XDP), decapsulating.
    c.restart_agent(a, &["--decap", "xdp"])?;
    let log = c.agent_log("a");
    assert!(log.contains("attached (native XDP)"), "XDP decap on {release}\n{log}");
    check(&c)
}
