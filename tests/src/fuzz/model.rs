//! The reference model: what each program is meant to do with a frame, written from
//! the README, the programs' module docs and issue 16 — not from their code. One
//! function per program; each returns the [`Expected`] outcome (return code, the
//! counted (hook, verdict), the output frame) and the state it leaves behind
//! ([`Effect`]s: flows the stack carried, NAT entries).
//!
//! Parts other work is changing are isolated so they adapt in a few lines:
//! [`pod_source_check`] (a pod's own source address on its veth), [`outer_ip_free`]
//! (the outer header's ID and flags: not compared) and [`outer_fragment`] (what
//! decap does with an outer fragment).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    ops::Range,
};

use weft_common::{
    config::{DataplaneConfig, FLAG_FAST_PATH, FLAG_MASQUERADE, FLAG_SOURCE_CHECK, FLAG_XDP_DECAP},
    counters::{Hook, Verdict},
    fastpath::LocalEndpoint,
    nat::KUBE_PROXY_MASQ_MARK,
    tunnel::TunnelEndpoint,
};

use super::check::{OutSpec, Sum};
use crate::testrun::{TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
/// The ifindex `BPF_PROG_TEST_RUN` gives a TC program's skb (`lo`).
pub const TEST_RUN_IFINDEX: u32 = 1;

/// The programs, by where they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prog {
    Encap,
    Decap,
    DecapXdp,
    PodEgress,
    PodIngress,
    Weft0Ingress,
    BridgeEgress,
    Masq,
}

impl Prog {
    pub const ALL: [Prog; 8] = [
        Prog::Encap,
        Prog::Decap,
        Prog::DecapXdp,
        Prog::PodEgress,
        Prog::PodIngress,
        Prog::Weft0Ingress,
        Prog::BridgeEgress,
        Prog::Masq,
    ];

    pub fn name(self) -> &'static str {
        use weft_common::maps::programs::*;
        match self {
            Prog::Encap => ENCAP,
            Prog::Decap => DECAP,
            Prog::DecapXdp => DECAP_XDP,
            Prog::PodEgress => POD_EGRESS,
            Prog::PodIngress => POD_INGRESS,
            Prog::Weft0Ingress => WEFT0_INGRESS,
            Prog::BridgeEgress => BRIDGE_EGRESS,
            Prog::Masq => MASQ,
        }
    }

    pub fn hook(self) -> Hook {
        crate::testrun::hook_of(self.name())
    }
}

/// A TCP/UDP flow as the fast path remembers it.
pub type Flow = (Ipv4Addr, Ipv4Addr, u16, u16, u8);

/// A NAT tuple (source, destination, source port, destination port, protocol); ICMP
/// echo: the identifier as source port outwards, as destination port back.
pub type NatTuple = (Ipv4Addr, Ipv4Addr, u16, u16, u8);

/// A `WEFT_NAT_OUT` entry: the translated source, or an inbound flow left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatOut {
    To(Ipv4Addr, u16),
    Inbound,
}

/// What the test installed, and the state the programs have built since.
#[derive(Clone, Debug)]
pub struct World {
    pub cfg: DataplaneConfig,
    /// (network, prefix) → node.
    pub tunnels: Vec<(Ipv4Addr, u8, TunnelEndpoint)>,
    pub peers: BTreeSet<Ipv4Addr>,
    pub endpoints: BTreeMap<Ipv4Addr, LocalEndpoint>,
    pub no_masq: Vec<(Ipv4Addr, u8)>,
    pub stack_flows: BTreeSet<Flow>,
    pub nat_out: BTreeMap<NatTuple, NatOut>,
    /// Reply tuple → the original source (address, port).
    pub nat_in: BTreeMap<NatTuple, (Ipv4Addr, u16)>,
}

/// A state change a run makes, applied once the run has been compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    RememberFlow(Flow),
    /// A new translation; `port_at`: where the output holds the port the program chose
    /// (None: no port, protocols without one).
    NatNew {
        orig: NatTuple,
        to: Ipv4Addr,
        port_at: Option<usize>,
    },
    NatInbound(NatTuple),
}

/// The expected outcome of one run.
#[derive(Clone, Debug)]
pub enum Expected {
    /// `BPF_PROG_TEST_RUN` refuses the input (a TC frame with an IPv4 ethertype and no
    /// whole IPv4 header): the kernel's rule, not the program's.
    Refused,
    Ran {
        code: u32,
        verdict: Verdict,
        out: OutSpec,
        effects: Vec<Effect>,
    },
}

pub fn in_prefix(addr: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let prefix = u32::from(prefix.min(32));
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(addr) & mask == u32::from(net) & mask
}

impl World {
    fn configured(&self) -> bool {
        self.cfg.abi_version != 0
    }
    fn flag(&self, f: u32) -> bool {
        self.configured() && self.cfg.flags & f != 0
    }
    /// The node hosting `addr`'s pod CIDR (longest prefix).
    pub fn tunnel(&self, addr: Ipv4Addr) -> Option<TunnelEndpoint> {
        self.tunnels.iter().filter(|(n, p, _)| in_prefix(addr, *n, *p)).max_by_key(|(_, p, _)| *p).map(|(_, _, t)| *t)
    }
    fn underlay(&self) -> Ipv4Addr {
        self.cfg.underlay_ip.into()
    }
    fn pod_cidr(&self) -> (Ipv4Addr, u8) {
        (self.cfg.pod_cidr.into(), self.cfg.pod_prefix)
    }
    fn in_cluster(&self, a: Ipv4Addr) -> bool {
        let p = self.cfg.cluster_prefix;
        (1..=32).contains(&p) && in_prefix(a, self.cfg.cluster_net.into(), p)
    }
    fn seen_on_stack(&self, f: &Flow) -> bool {
        self.stack_flows.contains(f) || self.stack_flows.contains(&(f.1, f.0, f.3, f.2, f.4))
    }
    fn fits_weft0(&self, len: usize) -> bool {
        // test_run's skbs are never GSO: the length against weft0's MTU plus Ethernet.
        self.cfg.weft0_mtu == 0 || len <= self.cfg.weft0_mtu as usize + 14
    }
}

// ---------------------------------------------------------------- reading frames

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn ethertype(f: &[u8]) -> u16 {
    be16(f, 12)
}

/// An IPv4 header as read at some offset (whole 20 bytes present).
#[derive(Clone, Copy, Debug)]
struct Ip {
    off: usize,
    version: u8,
    hlen: usize,
    tos: u8,
    tot_len: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl Ip {
    fn at(f: &[u8], off: usize) -> Option<Ip> {
        let h = f.get(off..off + 20)?;
        Some(Ip {
            off,
            version: h[0] >> 4,
            hlen: usize::from(h[0] & 0x0f) * 4,
            tos: h[1],
            tot_len: be16(h, 2),
            frag: be16(h, 6),
            ttl: h[8],
            proto: h[9],
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        })
    }
    fn valid(&self) -> bool {
        self.version == 4 && self.hlen >= 20
    }
    fn fragment(&self) -> bool {
        self.frag & 0x3fff != 0
    }
    fn later_fragment(&self) -> bool {
        self.frag & 0x1fff != 0
    }
    fn l4(&self) -> usize {
        self.off + self.hlen
    }
    fn header(&self) -> Range<usize> {
        self.off..self.off + self.hlen
    }
    /// The pseudo-header's addresses.
    fn addrs(&self) -> Range<usize> {
        self.off + 12..self.off + 20
    }
}

/// The TCP/UDP flow of a whole datagram, if its ports are there.
fn flow_of(f: &[u8], ip: &Ip) -> Option<Flow> {
    if !(ip.proto == TCP || ip.proto == UDP) || ip.fragment() {
        return None;
    }
    let p = f.get(ip.l4()..ip.l4() + 4)?;
    Some((ip.src, ip.dst, be16(p, 0), be16(p, 2), ip.proto))
}

/// The flow the stack carried: ports of a TCP/UDP packet that has them (first fragments too).
fn stack_flow_of(f: &[u8], ip: &Ip) -> Option<Flow> {
    if !(ip.proto == TCP || ip.proto == UDP) || ip.later_fragment() {
        return None;
    }
    let p = f.get(ip.l4()..ip.l4() + 4)?;
    Some((ip.src, ip.dst, be16(p, 0), be16(p, 2), ip.proto))
}

// ---------------------------------------------------------------- output building

/// An output under construction: bytes plus what is left free and the checksum rules.
struct Out {
    spec: OutSpec,
    /// Offset in the input of the output's byte 0 (decapsulation moves the inner frame).
    delta: isize,
}

impl Out {
    fn from(bytes: Vec<u8>) -> Out {
        Out { spec: OutSpec { expect: bytes, ..Default::default() }, delta: 0 }
    }
    fn set(&mut self, at: usize, v: &[u8]) {
        self.spec.expect[at..at + v.len()].copy_from_slice(v);
    }
    fn free(&mut self, r: Range<usize>) {
        self.spec.free.push(r);
    }
    /// The checksum over these output ranges (which hold the same bytes as the
    /// input's, moved by `delta`, but for rewritten fields) keeps its sum.
    fn kept(&mut self, output: Vec<Range<usize>>) {
        let input = output.iter().map(|r| shift(r, self.delta)).collect();
        self.spec.sums.push(Sum::Kept { input, output });
    }
    fn kept_one(&mut self, output: Range<usize>) {
        self.kept(vec![output]);
    }
}

fn shift(r: &Range<usize>, by: isize) -> Range<usize> {
    (r.start as isize + by) as usize..(r.end as isize + by) as usize
}

// ---------------------------------------------------------------- the programs

fn ran(code: u32, verdict: Verdict, out: OutSpec, effects: Vec<Effect>) -> Expected {
    Expected::Ran { code, verdict, out, effects }
}

fn tc_pass(f: &[u8]) -> Expected {
    ran(TC_ACT_UNSPEC, Verdict::Passed, OutSpec::same(f), vec![])
}

fn tc_drop(f: &[u8], v: Verdict) -> Expected {
    ran(TC_ACT_SHOT, v, OutSpec { dropped: true, ..OutSpec::same(f) }, vec![])
}

/// What `BPF_PROG_TEST_RUN` refuses for TC programs (kernel, not weft): an IPv4 or
/// IPv6 ethertype without a whole network header behind it.
fn refused_by_test_run(f: &[u8]) -> bool {
    match ethertype(f) {
        ETH_P_IPV4 => f.len() < 14 + 20,
        0x86dd => f.len() < 14 + 40,
        _ => false,
    }
}

/// Runs the model of `prog` on frame `f` (with `skb->mark` = `mark`).
pub fn expect(w: &World, prog: Prog, f: &[u8], mark: u32) -> Expected {
    if prog != Prog::DecapXdp && refused_by_test_run(f) {
        return Expected::Refused;
    }
    match prog {
        Prog::Encap => encap(w, f, mark),
        Prog::Decap => decap(w, f),
        Prog::DecapXdp => decap_xdp(w, f),
        Prog::PodEgress => pod_egress(w, f),
        Prog::PodIngress => pod_ingress(w, f),
        Prog::Weft0Ingress => weft0_ingress(w, f),
        Prog::BridgeEgress => bridge_egress(w, f),
        Prog::Masq => masq(w, f, mark),
    }
}

/// `weft0`'s egress: what the stack routes to a remote pod CIDR leaves as VXLAN to
/// the node that hosts it. Not IPv4, a bad IPv4 header, no config or no node for the
/// destination: dropped (never leaked unencapsulated onto the uplink). With
/// `--ip-masq` a flow from outside the cluster network gets this node's tunnel address.
fn encap(w: &World, f: &[u8], mark: u32) -> Expected {
    if ethertype(f) != ETH_P_IPV4 {
        return tc_drop(f, Verdict::DropNotIpv4);
    }
    let Some(ip) = Ip::at(f, 14).filter(Ip::valid) else {
        return tc_drop(f, Verdict::DropMalformed);
    };
    if !w.configured() {
        return tc_drop(f, Verdict::DropNoConfig);
    }
    let Some(peer) = w.tunnel(ip.dst) else {
        return tc_drop(f, Verdict::DropNoTunnel);
    };
    let mut effects = vec![];
    if w.flag(FLAG_FAST_PATH)
        && let Some(flow) = stack_flow_of(f, &ip)
    {
        effects.push(Effect::RememberFlow(flow));
    }
    // Flannel's last masquerade rule: outside → another node's pod, via this node.
    let mut inner = Out::from(f.to_vec());
    if w.flag(FLAG_MASQUERADE)
        && w.cfg.pod_prefix != 0
        && !w.in_cluster(ip.src)
        && w.in_cluster(ip.dst)
        && mark & KUBE_PROXY_MASQ_MARK == 0
    {
        match masquerade(w, f, &ip, w.cfg.pod_cidr.into(), &mut inner) {
            Err(v) => return tc_drop(f, v),
            Ok(e) => effects.extend(e.unwrap_or_default()),
        }
    }
    ran(TC_ACT_REDIRECT, Verdict::Encapsulated, encapsulated(w, f, inner, &peer), effects_shifted(effects, 50))
}

/// NAT ports chosen in the inner frame move with it when the frame is encapsulated.
fn effects_shifted(effects: Vec<Effect>, by: usize) -> Vec<Effect> {
    effects
        .into_iter()
        .map(|e| match e {
            Effect::NatNew { orig, to, port_at } => Effect::NatNew { orig, to, port_at: port_at.map(|p| p + by) },
            e => e,
        })
        .collect()
}

/// The outer header's bytes encapsulation may set as it likes, not compared: the ID
/// (random, so that fragments of different packets never mix). The flags word is
/// compared: zero, DF clear as `flannel.1` sends (issue 16's MTU parity), so a
/// smaller-MTU hop may fragment.
fn outer_ip_free() -> Range<usize> {
    14 + 4..14 + 6
}

/// The VXLAN frame Flannel's `flannel.1` would send for `f` (as rewritten in
/// `inner`): the frame's own Ethernet header outside, outer IPv4 (ECN per RFC 6040,
/// TTL 64, UDP), UDP from RFC 7348's source range to our port without checksum,
/// VXLAN with the I flag and the node's VNI, inner Ethernet VtepMAC to VtepMAC.
fn encapsulated(w: &World, f: &[u8], inner: Out, peer: &TunnelEndpoint) -> OutSpec {
    let n = f.len() + 50;
    let mut e = Vec::with_capacity(n);
    e.extend_from_slice(&f[..14]);
    let ecn = match f[15] & 3 {
        3 => 2,
        x => x,
    };
    let total = (n - 14) as u16;
    e.extend_from_slice(&[0x45, ecn]);
    e.extend_from_slice(&total.to_be_bytes());
    e.extend_from_slice(&[0, 0, 0, 0, 64, UDP, 0, 0]);
    e.extend_from_slice(&w.cfg.underlay_ip);
    e.extend_from_slice(&peer.underlay_ip);
    e.extend_from_slice(&[0, 0]);
    e.extend_from_slice(&w.cfg.udp_port.to_be_bytes());
    e.extend_from_slice(&(total - 20).to_be_bytes());
    e.extend_from_slice(&[0, 0]);
    let vni = peer.vni.to_be_bytes();
    e.extend_from_slice(&[0x08, 0, 0, 0, vni[1], vni[2], vni[3], 0]);
    e.extend_from_slice(&peer.vtep_mac);
    e.extend_from_slice(&w.cfg.vtep_mac);
    e.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    e.extend_from_slice(&inner.spec.expect[14..]);
    let mut spec = OutSpec { expect: e, ..Default::default() };
    spec.free.push(outer_ip_free());
    spec.free.push(24..26); // outer checksum: must verify
    spec.sums.push(Sum::Valid(14..34));
    spec.free.push(34..36);
    spec.ports.push((34, vec![49152..=65535]));
    for r in inner.spec.free {
        spec.free.push(shift(&r, 50));
    }
    for s in inner.spec.sums {
        spec.sums.push(match s {
            Sum::Kept { input, output } => Sum::Kept { input, output: output.iter().map(|r| shift(r, 50)).collect() },
            Sum::Valid(r) => Sum::Valid(shift(&r, 50)),
        });
    }
    for (at, r) in inner.spec.ports {
        spec.ports.push((at + 50, r));
    }
    spec
}

/// Why a frame on the uplink is not decapsulated.
enum NotDecap {
    /// Not VXLAN for us: the stack's (and masquerade's replies).
    NotOurs,
    /// The first fragment of a datagram to our port: passed, counted, for the stack's
    /// reassembly and the agent's tunnel socket (issue 16's MTU parity).
    Fragment,
    Drop(Verdict),
}

/// A VXLAN frame for this node, judged: its inner IPv4 header's offset, or why not.
/// Ours: a whole IPv4/UDP datagram to our underlay address and port, VNI flag set
/// (else malformed), our VNI (another VNI may be another device's). Then it must come
/// from a known node, carry a whole inner Ethernet + IPv4 header, and be a packet a
/// node may send here (issue 16); CE outside needs an ECN-capable inner packet.
fn inspect(w: &World, f: &[u8]) -> Result<Ip, NotDecap> {
    use NotDecap::*;
    if ethertype(f) != ETH_P_IPV4 {
        return Err(NotOurs);
    }
    let ip = Ip::at(f, 14).ok_or(NotOurs)?;
    if !ip.valid() || ip.proto != UDP || ip.dst != w.underlay() {
        return Err(NotOurs);
    }
    if ip.later_fragment() {
        return Err(NotOurs);
    }
    let udp = ip.l4();
    if f.len() < udp + 8 || be16(f, udp + 2) != w.cfg.udp_port {
        return Err(NotOurs);
    }
    if ip.fragment() {
        return Err(Fragment);
    }
    let vx = udp + 8;
    let Some(vxlan) = f.get(vx..vx + 8) else {
        return Err(Drop(Verdict::DropMalformed));
    };
    if vxlan[0] & 0x08 == 0 {
        return Err(Drop(Verdict::DropMalformed));
    }
    if u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]) != w.cfg.vni {
        return Err(NotOurs);
    }
    if !w.peers.contains(&ip.src) {
        return Err(Drop(Verdict::DropUnknownPeer));
    }
    let ieth = vx + 8;
    if f.len() < ieth + 14 {
        return Err(Drop(Verdict::DropMalformed));
    }
    if be16(f, ieth + 12) != ETH_P_IPV4 {
        return Err(Drop(Verdict::DropNotIpv4));
    }
    let inner = Ip::at(f, ieth + 14).filter(Ip::valid).ok_or(Drop(Verdict::DropMalformed))?;
    // Issue 16: the source a node may send from, then a destination here (or a detour's).
    if inner.src != ip.src && w.tunnel(inner.src).is_none() {
        return Err(Drop(Verdict::DropInnerSource));
    }
    let (net, prefix) = w.pod_cidr();
    if !in_prefix(inner.dst, net, prefix) && w.tunnel(inner.dst).is_none() {
        return Err(Drop(Verdict::DropInnerDestination));
    }
    if ip.tos & 3 == 3 && inner.tos & 3 == 0 {
        return Err(Drop(Verdict::DropEcnNotEct));
    }
    Ok(inner)
}

/// The inner IPv4 packet of a decapsulated frame, at `at` in the output: CE from
/// outside copied in (RFC 6040), its checksum kept right.
fn inner_with_ce(outer_tos: u8, inner: &Ip, out: &mut Out, at: usize) {
    if outer_tos & 3 == 3 && inner.tos & 3 != 3 {
        out.set(at + 1, &[inner.tos | 3]);
        out.free(at + 10..at + 12);
        out.kept_one(at..at + inner.hlen);
    }
}

/// The uplink's TC ingress.
fn decap(w: &World, f: &[u8]) -> Expected {
    if !w.configured() {
        return tc_pass(f);
    }
    // XDP's inner frames come to our VtepMAC, which no frame on the wire may carry.
    if f[..6] == w.cfg.vtep_mac {
        if !w.flag(FLAG_XDP_DECAP) || ethertype(f) != ETH_P_IPV4 {
            return tc_drop(f, Verdict::DropToVtepMac);
        }
        return deliver(w, Out::from(f.to_vec()), f, Verdict::DeliveredFromXdp);
    }
    match inspect(w, f) {
        Err(NotDecap::NotOurs) => unmasq_uplink(w, f),
        Err(NotDecap::Fragment) => ran(TC_ACT_UNSPEC, Verdict::TunnelFragment, OutSpec::same(f), vec![]),
        Err(NotDecap::Drop(v)) => tc_drop(f, v),
        Ok(inner) => {
            let ieth = inner.off - 14;
            let mut bytes = Vec::with_capacity(f.len() - ieth);
            bytes.extend_from_slice(&w.cfg.vtep_mac);
            bytes.extend_from_slice(&f[ieth + 6..ieth + 12]);
            bytes.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
            bytes.extend_from_slice(&f[inner.off..]);
            let mut out = Out { delta: (inner.off - 14) as isize, ..Out::from(bytes) };
            inner_with_ce(f[15], &inner, &mut out, 14);
            deliver(w, out, f, Verdict::Decapsulated)
        }
    }
}

/// Into `weft0` (or, with `--fast-path`, straight into a local pod), after an answer
/// to a flow masqueraded to our tunnel address got its client back. `out` holds the
/// frame as delivered so far; `input` is the program's input (checksum rules).
fn deliver(w: &World, mut out: Out, input: &[u8], verdict: Verdict) -> Expected {
    // `--ip-masq`: an answer to our tunnel address.
    let frame = out.spec.expect.clone();
    if w.flag(FLAG_MASQUERADE)
        && w.cfg.pod_prefix != 0
        && let Some(ip) = Ip::at(&frame, 14)
        && ip.dst == Ipv4Addr::from(w.cfg.pod_cidr)
        && ip.valid()
        && !ip.later_fragment()
        && let Err(v) = unmasq(w, &frame, &ip, &mut out)
    {
        return tc_drop(input, v);
    }
    let frame = out.spec.expect.clone();
    let via_peer =
        verdict == Verdict::Decapsulated && aggregatable(&frame) && w.cfg.weft0_peer_ifindex != 0 && w.fits_weft0(frame.len());
    if w.flag(FLAG_FAST_PATH) && !via_peer && to_pod(w, &frame, &mut out) {
        return ran(TC_ACT_REDIRECT, Verdict::FastDelivered, out.spec, vec![]);
    }
    ran(TC_ACT_REDIRECT, verdict, out.spec, vec![])
}

/// What GRO could merge with other frames of its flow: TCP carrying data (by its IP
/// total length; 0 is a BIG TCP packet's), or ending the stream (FIN, RST, which keep
/// the data's path), fragments (they carry data), or a TCP header we cannot see.
fn aggregatable(f: &[u8]) -> bool {
    let Some(ip) = Ip::at(f, 14) else { return false };
    if ip.proto != TCP {
        return false;
    }
    if ip.fragment() || ip.tot_len == 0 {
        return true;
    }
    let Some(tcp) = f.get(ip.l4()..ip.l4() + 14) else { return true };
    let doff = usize::from(tcp[12] >> 4) * 4;
    usize::from(ip.tot_len) > ip.hlen + doff || tcp[13] & 0x05 != 0
}

/// The fast path's delivery into a local pod: a valid, whole TCP/UDP datagram with TTL
/// left, for a pod in the endpoints, of a flow this node's stack has not carried; it
/// gets the pod's MAC from its gateway's and a TTL lowered by one. Writes `out`.
fn to_pod(w: &World, f: &[u8], out: &mut Out) -> bool {
    let Some(ip) = Ip::at(f, 14) else { return false };
    if !ip.valid() || ip.ttl <= 1 {
        return false;
    }
    let Some(flow) = flow_of(f, &ip) else { return false };
    let Some(pod) = w.endpoints.get(&ip.dst) else { return false };
    if w.seen_on_stack(&flow) {
        return false;
    }
    out.set(0, &pod.mac);
    out.set(6, &pod.gw_mac);
    lower_ttl(out, &ip);
    true
}

/// TTL − 1, the header checksum kept right (a bad one stays as bad).
fn lower_ttl(out: &mut Out, ip: &Ip) {
    out.set(ip.off + 8, &[ip.ttl - 1]);
    out.free(ip.off + 10..ip.off + 12);
    out.kept_one(ip.header());
}

/// The uplink's XDP: decapsulates what TC would into the inner Ethernet frame, to our
/// VtepMAC, before GRO; drops a frame that comes to our VtepMAC from the wire; leaves
/// everything else, bad frames included, to TC (which judges and counts them).
fn decap_xdp(w: &World, f: &[u8]) -> Expected {
    let pass = || ran(XDP_PASS, Verdict::Passed, OutSpec::same(f), vec![]);
    if !w.configured() {
        return pass();
    }
    if f[..6] == w.cfg.vtep_mac {
        return ran(XDP_DROP, Verdict::DropToVtepMac, OutSpec { dropped: true, ..OutSpec::same(f) }, vec![]);
    }
    let inner = match inspect(w, f) {
        Ok(inner) => inner,
        Err(NotDecap::Fragment) => return ran(XDP_PASS, Verdict::TunnelFragment, OutSpec::same(f), vec![]),
        Err(_) => return pass(),
    };
    let ieth = inner.off - 14;
    let mut bytes = f[ieth..].to_vec();
    bytes[..6].copy_from_slice(&w.cfg.vtep_mac);
    let mut out = Out { delta: ieth as isize, ..Out::from(bytes) };
    inner_with_ce(f[15], &inner, &mut out, 14);
    ran(XDP_PASS, Verdict::Decapsulated, out.spec, vec![])
}

/// The source check (issue 16): whether `f`, sent by the pod on its own veth, is its
/// own IPv4 (the address its endpoint records, from the endpoint's MAC, on that veth);
/// with `check` on, a frame claiming any other sender — IPv4 source, or ARP sender
/// pair — is dropped, and a truncated IPv4 or ARP header is malformed. Anything else
/// (other protocols, a header that is not IPv4's) is not judged.
fn pod_source_check(w: &World, f: &[u8], check: bool) -> Result<bool, Verdict> {
    let own =
        |addr: Ipv4Addr, mac: &[u8]| w.endpoints.get(&addr).is_some_and(|pod| pod.ifindex == TEST_RUN_IFINDEX && pod.mac == mac);
    if f.len() < 14 {
        return Ok(false);
    }
    match ethertype(f) {
        ETH_P_IPV4 => match Ip::at(f, 14) {
            None if check => Err(Verdict::DropMalformed),
            None => Ok(false),
            Some(ip) if !ip.valid() => Ok(false),
            Some(ip) if own(ip.src, &f[6..12]) => Ok(true),
            Some(_) if check => Err(Verdict::DropSpoofedSource),
            Some(_) => Ok(false),
        },
        0x0806 if check => {
            let Some(arp) = f.get(14..14 + 28) else { return Err(Verdict::DropMalformed) };
            let (sha, spa) = (&arp[8..14], Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]));
            if sha == &f[6..12] && own(spa, sha) { Ok(false) } else { Err(Verdict::DropSpoofedSource) }
        }
        _ => Ok(false),
    }
}

/// A pod veth's TC ingress: the source check (`--pod-source-check`), then (`--fast-path`)
/// a whole TCP/UDP datagram from the pod, for a remote pod, with TTL left, of a flow the
/// stack has not carried, fitting `weft0`'s MTU, leaves as VXLAN with its TTL lowered;
/// everything else goes to the stack.
fn pod_egress(w: &World, f: &[u8]) -> Expected {
    let (fast, check) = (w.flag(FLAG_FAST_PATH), w.flag(FLAG_SOURCE_CHECK));
    if !fast && !check {
        return tc_pass(f);
    }
    match pod_source_check(w, f, check) {
        Err(v) => return tc_drop(f, v),
        Ok(false) => return tc_pass(f),
        Ok(true) if !fast => return tc_pass(f),
        Ok(true) => {}
    }
    let Some(ip) = Ip::at(f, 14).filter(Ip::valid) else { return tc_pass(f) };
    let Some(flow) = flow_of(f, &ip) else { return tc_pass(f) };
    let Some(peer) = w.tunnel(ip.dst) else { return tc_pass(f) };
    if ip.ttl <= 1 || w.seen_on_stack(&flow) || !w.fits_weft0(f.len()) {
        return tc_pass(f);
    }
    let mut inner = Out::from(f.to_vec());
    lower_ttl(&mut inner, &ip);
    ran(TC_ACT_REDIRECT, Verdict::FastEncapsulated, encapsulated(w, f, inner, &peer), vec![])
}

/// A pod veth's TC egress (`--fast-path`): passes everything; remembers the flows from
/// remote pods the stack delivers, so the pod's replies take the stack too.
fn pod_ingress(w: &World, f: &[u8]) -> Expected {
    let mut effects = vec![];
    if w.flag(FLAG_FAST_PATH)
        && ethertype(f) == ETH_P_IPV4
        && let Some(ip) = Ip::at(f, 14).filter(Ip::valid)
        && w.tunnel(ip.src).is_some()
        && let Some(flow) = stack_flow_of(f, &ip)
    {
        effects.push(Effect::RememberFlow(flow));
    }
    ran(TC_ACT_UNSPEC, Verdict::Passed, OutSpec::same(f), effects)
}

/// `weft0`'s TC ingress (`--fast-path`): TCP data after `weft0`'s GRO goes into its
/// local pod where the fast path may take it; the rest to the stack.
fn weft0_ingress(w: &World, f: &[u8]) -> Expected {
    if !w.flag(FLAG_FAST_PATH) || ethertype(f) != ETH_P_IPV4 || !aggregatable(f) {
        return tc_pass(f);
    }
    let mut out = Out::from(f.to_vec());
    if to_pod(w, f, &mut out) {
        return ran(TC_ACT_REDIRECT, Verdict::FastDelivered, out.spec, vec![]);
    }
    tc_pass(f)
}

/// The pod bridge's TC egress: a unicast IPv4 frame for a local pod's address and MAC
/// goes to that pod's veth unchanged, as the bridge's FDB would send it; the rest
/// (broadcast, multicast, ARP, unknown pods or MACs) stays the bridge's.
fn bridge_egress(w: &World, f: &[u8]) -> Expected {
    if f[0] & 1 != 0 || ethertype(f) != ETH_P_IPV4 {
        return tc_pass(f);
    }
    let Some(ip) = Ip::at(f, 14) else { return tc_pass(f) };
    match w.endpoints.get(&ip.dst) {
        Some(pod) if pod.mac == f[..6] => ran(TC_ACT_REDIRECT, Verdict::BridgeBypassed, OutSpec::same(f), vec![]),
        _ => tc_pass(f),
    }
}

/// The uplink's TC egress (`--ip-masq`): Flannel's rules. A pod's packet (source in
/// the cluster network) to neither a non-masquerade destination nor multicast, not
/// marked by kube-proxy, leaves from the node's address.
fn masq(w: &World, f: &[u8], mark: u32) -> Expected {
    if !w.flag(FLAG_MASQUERADE) || ethertype(f) != ETH_P_IPV4 {
        return tc_pass(f);
    }
    let Some(ip) = Ip::at(f, 14) else { return tc_pass(f) };
    if !ip.valid()
        || !w.in_cluster(ip.src)
        || ip.dst.octets()[0] & 0xf0 == 0xe0
        || mark & KUBE_PROXY_MASQ_MARK != 0
        || w.no_masq.iter().any(|(n, p)| in_prefix(ip.dst, *n, *p))
    {
        return tc_pass(f);
    }
    let mut out = Out::from(f.to_vec());
    match masquerade(w, f, &ip, w.cfg.masq_ip.into(), &mut out) {
        Err(v) => tc_drop(f, v),
        Ok(None) => tc_pass(f),
        Ok(Some(effects)) => ran(TC_ACT_UNSPEC, Verdict::Masqueraded, out.spec, effects),
    }
}

// ---------------------------------------------------------------- masquerade

/// Where a translated flow's fields are: the NAT tuple, the port's offset (TCP/UDP
/// source or destination port, ICMP echo identifier) and the L4 checksum's.
struct NatFlow {
    tuple: NatTuple,
    port_at: Option<usize>,
    check_at: Option<usize>,
}

/// The NAT tuple of a packet: TCP and UDP by port, ICMP echo (out) / echo reply (back)
/// by identifier, other protocols by address alone. The L4 header must be whole (TCP
/// 20 bytes, UDP and ICMP 8): a packet too short to hold its ports and checksum is
/// not translated. ICMP other than echo: None (errors are translated by their quote).
fn nat_flow(f: &[u8], ip: &Ip, outbound: bool) -> Option<NatFlow> {
    let l4 = ip.l4();
    let whole = |n: usize| f.len() >= l4 + n;
    match ip.proto {
        TCP | UDP => {
            if !whole(if ip.proto == TCP { 20 } else { 8 }) {
                return None;
            }
            let (s, d) = (be16(f, l4), be16(f, l4 + 2));
            let check = if ip.proto == TCP { l4 + 16 } else { l4 + 6 };
            let port_at = if outbound { l4 } else { l4 + 2 };
            Some(NatFlow { tuple: (ip.src, ip.dst, s, d, ip.proto), port_at: Some(port_at), check_at: Some(check) })
        }
        ICMP => {
            if !whole(8) {
                return None;
            }
            let id = be16(f, l4 + 4);
            let tuple = match (f[l4], outbound) {
                (8, true) => (ip.src, ip.dst, id, 0, ICMP),
                (0, false) => (ip.src, ip.dst, 0, id, ICMP),
                _ => return None,
            };
            Some(NatFlow { tuple, port_at: Some(l4 + 4), check_at: Some(l4 + 2) })
        }
        p => Some(NatFlow { tuple: (ip.src, ip.dst, 0, 0, p), port_at: None, check_at: None }),
    }
}

pub fn reply_tuple(orig: &NatTuple, to: Ipv4Addr, port: u16) -> NatTuple {
    if orig.4 == ICMP { (orig.1, to, 0, port, ICMP) } else { (orig.1, to, orig.3, port, orig.4) }
}

/// Rewrites the address at `addr_at` (source or destination of `ip`) and, with
/// `port`, the port at its offset, keeping the IPv4 and L4 checksums' sums (UDP
/// without a checksum keeps none).
fn nat_rewrite(
    out: &mut Out,
    f: &[u8],
    ip: &Ip,
    addr_at: usize,
    addr: Ipv4Addr,
    port: Option<(usize, Option<u16>)>,
    check_at: Option<usize>,
) {
    out.set(addr_at, &addr.octets());
    out.free(ip.off + 10..ip.off + 12);
    out.kept_one(ip.header());
    if let Some((at, value)) = port {
        match value {
            Some(v) => out.set(at, &v.to_be_bytes()),
            None => out.free(at..at + 2),
        }
    }
    if let Some(c) = check_at {
        let udp_none = ip.proto == UDP && f[c..c + 2] == [0, 0];
        if !udp_none {
            out.free(c..c + 2);
            let seg = ip.l4()..f.len();
            out.kept(if ip.proto == ICMP { vec![seg] } else { vec![ip.addrs(), seg] });
        }
    }
}

/// Source NAT of `f`'s packet to `to`: the flow's translation, or a new one (the port
/// is the program's random pick: left free, read back, checked for range and
/// uniqueness by the runner). A later fragment has no ports: its address alone.
/// Ok(None), `out` untouched: left alone (no flow, or an inbound flow).
fn masquerade(w: &World, f: &[u8], ip: &Ip, to: Ipv4Addr, out: &mut Out) -> Result<Option<Vec<Effect>>, Verdict> {
    if ip.later_fragment() {
        nat_rewrite(out, f, ip, ip.off + 12, to, None, None);
        return Ok(Some(vec![]));
    }
    let Some(flow) = nat_flow(f, ip, true) else { return Ok(None) };
    let ported = flow.port_at.is_some();
    let (addr, port, effects) = match w.nat_out.get(&flow.tuple) {
        Some(NatOut::Inbound) => return Ok(None),
        Some(NatOut::To(a, p)) => (*a, Some(*p), vec![]),
        None => {
            if !ported && w.nat_in.contains_key(&reply_tuple(&flow.tuple, to, 0)) {
                return Err(Verdict::DropNatExhausted);
            }
            let effect = Effect::NatNew { orig: flow.tuple, to, port_at: flow.port_at };
            (to, if ported { None } else { Some(0) }, vec![effect])
        }
    };
    let port = flow.port_at.map(|at| (at, port));
    nat_rewrite(out, f, ip, ip.off + 12, addr, port, flow.check_at);
    Ok(Some(effects))
}

/// The uplink's ingress for what is not VXLAN (`--ip-masq`): replies to masqueraded
/// flows get their pod back; a flow the outside opens to a pod is noted, so the pod's
/// replies leave untranslated.
fn unmasq_uplink(w: &World, f: &[u8]) -> Expected {
    if !w.flag(FLAG_MASQUERADE) || ethertype(f) != ETH_P_IPV4 {
        return tc_pass(f);
    }
    let Some(ip) = Ip::at(f, 14) else { return tc_pass(f) };
    if !ip.valid() || ip.later_fragment() {
        return tc_pass(f);
    }
    if ip.dst != Ipv4Addr::from(w.cfg.masq_ip) {
        let mut effects = vec![];
        if w.in_cluster(ip.dst)
            && !w.in_cluster(ip.src)
            && ip.proto != ICMP
            && let Some(flow) = nat_flow(f, &ip, false)
        {
            let (s, d, sp, dp, p) = flow.tuple;
            effects.push(Effect::NatInbound((d, s, dp, sp, p)));
        }
        return ran(TC_ACT_UNSPEC, Verdict::Passed, OutSpec::same(f), effects);
    }
    let mut out = Out::from(f.to_vec());
    match unmasq(w, f, &ip, &mut out) {
        Err(v) => tc_drop(f, v),
        Ok(false) => tc_pass(f),
        Ok(true) => ran(TC_ACT_UNSPEC, Verdict::Unmasqueraded, out.spec, vec![]),
    }
}

/// Destination NAT back to a translated flow's original source; an ICMP error about
/// one of our translated packets gets its quote translated back. Leaves `out` as is
/// when the packet belongs to no translated flow. A reply's fragment cannot be
/// translated whole (later ones carry no port): dropped.
fn unmasq(w: &World, f: &[u8], ip: &Ip, out: &mut Out) -> Result<bool, Verdict> {
    let l4 = ip.l4();
    if ip.proto == ICMP && f.len() >= l4 + 8 && matches!(f[l4], 3 | 11 | 12) {
        return Ok(icmp_error(w, f, ip, out));
    }
    let Some(flow) = nat_flow(f, ip, false) else { return Ok(false) };
    let Some(&(addr, port)) = w.nat_in.get(&flow.tuple) else { return Ok(false) };
    if ip.fragment() {
        return Err(Verdict::DropNatFragment);
    }
    let port = flow.port_at.map(|at| (at, Some(port)));
    nat_rewrite(out, f, ip, ip.off + 16, addr, port, flow.check_at);
    Ok(true)
}

/// An ICMP error (unreachable, time exceeded, parameter problem) quoting a packet we
/// translated — its quote's reply tuple is one of ours — goes to the pod with the
/// quote as the pod sent it: quoted source and port, quoted checksums, ICMP checksum,
/// outer destination. Anything else about no flow of ours passes.
fn icmp_error(w: &World, f: &[u8], ip: &Ip, out: &mut Out) -> bool {
    let q = ip.l4() + 8;
    let Some(quoted) = Ip::at(f, q) else { return false };
    if !quoted.valid() || quoted.later_fragment() {
        return false;
    }
    let ql4 = quoted.l4();
    let (key, port_at, check_at) = match quoted.proto {
        TCP | UDP if f.len() >= ql4 + 4 => {
            let key = (quoted.dst, quoted.src, be16(f, ql4 + 2), be16(f, ql4), quoted.proto);
            (key, ql4, if quoted.proto == UDP { ql4 + 6 } else { ql4 + 16 })
        }
        ICMP if f.len() >= ql4 + 8 && f[ql4] == 8 => ((quoted.dst, quoted.src, 0, be16(f, ql4 + 4), ICMP), ql4 + 4, ql4 + 2),
        _ => return false,
    };
    let Some(&(addr, port)) = w.nat_in.get(&key) else { return false };
    // The outer header: destination and checksum.
    out.set(ip.off + 16, &addr.octets());
    out.free(ip.off + 10..ip.off + 12);
    out.kept_one(ip.header());
    // The quote: source address, its header checksum, port, and the quoted L4
    // checksum where the quote reaches it (UDP's 0, none, stays).
    out.set(q + 12, &addr.octets());
    out.free(q + 10..q + 12);
    out.kept_one(quoted.header());
    out.set(port_at, &port.to_be_bytes());
    if f.len() >= check_at + 2 && !(quoted.proto == UDP && f[check_at..check_at + 2] == [0, 0]) {
        out.free(check_at..check_at + 2);
        let seg = ql4..f.len();
        out.kept(if quoted.proto == ICMP { vec![seg] } else { vec![quoted.addrs(), seg] });
    }
    // The ICMP message's checksum covers all of the quote.
    out.free(ip.l4() + 2..ip.l4() + 4);
    out.kept_one(ip.l4()..f.len());
    true
}
