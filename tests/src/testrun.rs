//! The programs on crafted frames through `BPF_PROG_TEST_RUN`: a private copy of the
//! object (nothing pinned, nothing attached), its maps, one node's config, and runs
//! that return the return code and the frame as the program left it. Shared by the
//! scenario tests (`tests/prog_test_run.rs`) and the reference-model fuzzing
//! ([`crate::fuzz`]).
//!
//! Node under test ("a"): underlay 198.19.0.1, VtepMAC 0a:58:0a:f4:01:00, VNI 1,
//! port 8472, pod CIDR 10.244.1.0/24. Known peer "b": 198.19.0.2, 10.244.2.0/24,
//! VtepMAC 0a:58:0a:f4:02:00.

use std::net::Ipv4Addr;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
};
use weft_agent::{DATAPLANE_OBJECT, maps::Maps};
use weft_common::{
    ABI_VERSION,
    config::DataplaneConfig,
    counters::{Counter, Hook, Verdict},
    maps::programs::{BRIDGE_EGRESS, DECAP, DECAP_XDP, ENCAP, MASQ, POD_EGRESS, POD_INGRESS, PROBE_DECAP_L4_UDP, WEFT0_INGRESS},
    tunnel::{PeerNode, TunnelEndpoint},
};

pub const TC_ACT_UNSPEC: u32 = -1i32 as u32;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_PASS: u32 = 2;
pub const XDP_DROP: u32 = 1;

pub const A_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const A_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x00];
pub const B_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
pub const B_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x00];
pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
pub const ROGUE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 66);
/// Node a's uplink MAC, as `VxlanFrame` addresses underlay frames.
pub const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

pub struct Dataplane {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

/// Node a's config.
pub fn config() -> DataplaneConfig {
    DataplaneConfig {
        abi_version: ABI_VERSION,
        vni: 1,
        underlay_ip: A_IP.octets(),
        udp_port: 8472,
        vtep_mac: A_MAC,
        pod_cidr: [10, 244, 1, 0],
        pod_prefix: 24,
        uplink_ifindex: 1,
        weft0_ifindex: 1,
        ..Default::default()
    }
}

/// Loads a private copy of the programs and maps (nothing pinned, nothing attached);
/// `configured`: node a's config, b's tunnel and b as a peer.
pub fn dataplane(configured: bool) -> Dataplane {
    let mut ebpf = EbpfLoader::new().load(DATAPLANE_OBJECT).expect("loading the object");
    for name in [ENCAP, DECAP, POD_EGRESS, POD_INGRESS, WEFT0_INGRESS, BRIDGE_EGRESS, MASQ, PROBE_DECAP_L4_UDP] {
        let p: &mut SchedClassifier = ebpf.program_mut(name).expect("program").try_into().expect("classifier");
        p.load().expect("verifier accepts the program");
    }
    let x: &mut Xdp = ebpf.program_mut(DECAP_XDP).expect("program").try_into().expect("xdp");
    x.load().expect("verifier accepts the XDP program");
    let mut maps = Maps::take(&mut ebpf).expect("maps");
    if configured {
        maps.set_config(config()).unwrap();
        maps.set_tunnel(
            "10.244.2.0/24".parse().unwrap(),
            TunnelEndpoint { underlay_ip: B_IP.octets(), vni: 1, vtep_mac: B_MAC, _pad: [0; 2] },
        )
        .unwrap();
        maps.set_peer(B_IP, PeerNode { vtep_mac: B_MAC, ..Default::default() }).unwrap();
    }
    Dataplane { ebpf, maps }
}

impl Dataplane {
    /// Runs `prog` on `frame`; returns the verdict and the frame as the program left it.
    pub fn run(&self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_marked(prog, frame, 0)
    }

    /// As [`Dataplane::run`], with `skb->mark` set to `mark`.
    pub fn run_marked(&self, prog: &str, frame: &[u8], mark: u32) -> (u32, Vec<u8>) {
        self.try_run(prog, frame, mark).expect("BPF_PROG_TEST_RUN")
    }

    /// Runs TC program `prog` on `frame` with `skb->mark` = `mark` (the context's
    /// `mark`, the first field test_run lets a caller set); the kernel's refusal of
    /// the input (a frame with an IPv4 ethertype but no whole IPv4 header) is an error.
    pub fn try_run(&self, prog: &str, frame: &[u8], mark: u32) -> Result<(u32, Vec<u8>), ProgramError> {
        let p: &SchedClassifier = self.ebpf.program(prog).unwrap().try_into().unwrap();
        // Room for what encap adds (+50) and then some.
        let mut out = vec![0u8; frame.len() + 128];
        // struct __sk_buff up to `mark`: len and pkt_type (must be 0), then mark.
        let mut ctx = [0u8; 12];
        ctx[8..].copy_from_slice(&mark.to_ne_bytes());
        let ctx_in = (mark != 0).then_some(&ctx[..]);
        let TestRunResult { return_value, duration: _, data_size_out, ctx_size_out: _ } =
            p.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ctx_in, ..Default::default() })?;
        out.truncate(data_size_out as usize);
        Ok((return_value, out))
    }

    /// Runs the XDP decap program on `frame`: its return code and the frame as left.
    pub fn try_run_xdp(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let p: &Xdp = self.ebpf.program(DECAP_XDP).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 128];
        let r = p.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Runs the XDP decap program; asserts its return code and that only
    /// (`UplinkXdp`, `verdict`)'s counter moved, by one packet and the frame's bytes.
    /// Returns the frame as left.
    pub fn expect_xdp(&self, frame: &[u8], code: u32, verdict: Verdict) -> Vec<u8> {
        let before = self.maps.counters_by_hook().unwrap();
        let (rc, out) = self.try_run_xdp(frame).expect("BPF_PROG_TEST_RUN (XDP)");
        assert_eq!(rc, code, "XDP return code (expected {verdict:?})");
        self.assert_counted(&before, Hook::UplinkXdp, verdict, frame.len());
        out
    }

    /// Only (`hook`, `verdict`) moved since `before`: by one packet of `len` bytes.
    pub fn assert_counted(&self, before: &[(Hook, Verdict, Counter)], hook: Hook, verdict: Verdict, len: usize) {
        let after = self.maps.counters_by_hook().unwrap();
        for ((h, v, b), (_, _, a)) in before.iter().zip(&after) {
            let hit = *h == hook && *v == verdict;
            let (packets, bytes) = (a.packets - b.packets, a.bytes - b.bytes);
            assert_eq!(packets, u64::from(hit), "counter ({}, {}) moved by {packets} packets", h.name(), v.name());
            assert_eq!(bytes, if hit { len as u64 } else { 0 }, "counter ({}, {}) moved by {bytes} bytes", h.name(), v.name());
        }
    }

    /// Runs and asserts the return code, and that exactly (`prog`'s hook, `verdict`)'s
    /// counter moved, by one packet and the frame's bytes.
    pub fn expect(&self, prog: &str, frame: &[u8], code: u32, verdict: Verdict) -> Vec<u8> {
        let before = self.maps.counters_by_hook().unwrap();
        let (rc, out) = self.run(prog, frame);
        assert_eq!(rc, code, "{prog}: return code (expected verdict {verdict:?})");
        self.assert_counted(&before, hook_of(prog), verdict, frame.len());
        out
    }
}

/// The hook each program is attached at.
pub fn hook_of(prog: &str) -> Hook {
    match prog {
        ENCAP => Hook::Weft0Egress,
        DECAP => Hook::UplinkIngress,
        DECAP_XDP => Hook::UplinkXdp,
        POD_EGRESS => Hook::PodVethIngress,
        POD_INGRESS => Hook::PodVethEgress,
        WEFT0_INGRESS => Hook::Weft0Ingress,
        BRIDGE_EGRESS => Hook::BridgeEgress,
        MASQ => Hook::UplinkEgress,
        other => panic!("no hook for {other}"),
    }
}
