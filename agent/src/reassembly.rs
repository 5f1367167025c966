//! The slow path for outer IPv4 fragments: VXLAN datagrams a smaller-MTU hop on the
//! underlay fragmented (weft's and Flannel's outer packets leave with DF clear, as a
//! kernel vxlan device without `df` sends them).
//!
//! The uplink's TC ingress runs before the stack reassembles, and a fragment cannot
//! be decapsulated alone: decap passes the first fragment of a datagram to our port
//! (counted `tunnel_fragment`) and the later ones (no port to see), and the stack
//! reassembles them at local delivery (`ip_defrag`, or conntrack's defrag). This
//! module holds the UDP socket on the tunnel port they are delivered to — Flannel's
//! `flannel.1` has the kernel's vxlan socket there — applies decap's acceptance rules
//! ([`decide`]: a known node, our VNI, an IPv4 inner frame, the inner addresses decap
//! admits, RFC 6040's ECN) against the same pinned maps, and sends the inner frame out
//! of `weft0`'s veth peer, so it arrives on `weft0` as TC decap's frames do.
//!
//! Only what TC decap passed reaches the socket: fragments, and VXLAN it leaves to
//! the stack (another VNI, or everything before the agent has written the config);
//! the rules drop the latter exactly as decap would. While another socket holds the
//! port (`flannel.1` during a migration, until the agent removes it) the bind is
//! retried every [`RETRY`], with one log line when it fails and one when it succeeds.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};
use thiserror::Error;
use weft_common::{
    config::DataplaneConfig,
    wire::{ETH_HLEN, ETH_P_IPV4, VXLAN_FLAG_VNI, VXLAN_HLEN},
};

use crate::maps::Maps;

/// How often a failed bind is retried.
pub const RETRY: Duration = Duration::from_secs(2);
/// Receive timeout: how soon a changed underlay address or port is noticed when idle.
const IDLE: Duration = Duration::from_secs(2);
/// Room for a reassembled datagram: the largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked for: a burst of reassembled datagrams waits here.
const RCVBUF: usize = 4 << 20;

/// Why a reassembled datagram was not delivered (the metric's `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// From a source that is not a known node.
    UnknownPeer,
    /// Too short, no VNI flag, or an invalid inner IPv4 header.
    Malformed,
    /// Another VNI: not ours (no other VXLAN device can own a port we hold).
    OtherVni,
    /// An inner frame that is not IPv4.
    NotIpv4,
    /// The inner source is no address the sending node may send from.
    InnerSource,
    /// The inner destination is not on this node, nor in another node's pod CIDR.
    InnerDestination,
    /// Outer CE, inner packet not ECN-capable (RFC 6040).
    EcnNotEct,
    /// Sending the inner frame into `weft0` failed.
    Inject,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::UnknownPeer,
        Reject::Malformed,
        Reject::OtherVni,
        Reject::NotIpv4,
        Reject::InnerSource,
        Reject::InnerDestination,
        Reject::EcnNotEct,
        Reject::Inject,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reject::UnknownPeer => "unknown_peer",
            Reject::Malformed => "malformed",
            Reject::OtherVni => "other_vni",
            Reject::NotIpv4 => "not_ipv4",
            Reject::InnerSource => "inner_source",
            Reject::InnerDestination => "inner_destination",
            Reject::EcnNotEct => "ecn_not_ect",
            Reject::Inject => "inject",
        }
    }
}

/// What the slow path did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    delivered: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
    bound: AtomicBool,
}

impl Stats {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// The socket holds the tunnel port.
    pub fn bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    fn count(&self, outcome: Result<(), Reject>) {
        match outcome {
            Ok(()) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(r) => self.rejected[r as usize].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The tables decap reads: the pinned maps in the agent.
pub trait Tables {
    /// `ip` is a known node's underlay address (decap's `WEFT_PEERS`).
    fn is_peer(&self, ip: Ipv4Addr) -> bool;
    /// `ip` lies in a remote node's pod CIDR (decap's `WEFT_TUNNELS`).
    fn in_tunnels(&self, ip: Ipv4Addr) -> bool;
}

impl Tables for Maps {
    fn is_peer(&self, ip: Ipv4Addr) -> bool {
        self.peer(ip).is_some()
    }

    fn in_tunnels(&self, ip: Ipv4Addr) -> bool {
        self.tunnel_for(ip).is_some()
    }
}

/// Decap's decision on a reassembled VXLAN datagram (`payload`: the UDP payload) from
/// `from`, whose outer header had type of service `outer_tos`: the frame to send into
/// `weft0` (to our VtepMAC, from the sender's, the inner IPv4 packet with CE copied in
/// as RFC 6040 says), or why not. The same rules, in the same order, as the
/// dataplane's `decap::inspect` and `check_inner_addresses`.
pub fn decide(
    payload: &[u8],
    from: Ipv4Addr,
    outer_tos: u8,
    cfg: &DataplaneConfig,
    tables: &impl Tables,
) -> Result<Vec<u8>, Reject> {
    let vxlan = payload.get(..VXLAN_HLEN).ok_or(Reject::Malformed)?;
    if vxlan[0] & VXLAN_FLAG_VNI == 0 {
        return Err(Reject::Malformed);
    }
    if u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]) != cfg.vni {
        return Err(Reject::OtherVni);
    }
    if !tables.is_peer(from) {
        return Err(Reject::UnknownPeer);
    }
    let inner_eth = payload.get(VXLAN_HLEN..VXLAN_HLEN + ETH_HLEN).ok_or(Reject::Malformed)?;
    if u16::from_be_bytes([inner_eth[12], inner_eth[13]]) != ETH_P_IPV4 {
        return Err(Reject::NotIpv4);
    }
    let ip = &payload[VXLAN_HLEN + ETH_HLEN..];
    let ihl = usize::from(ip.first().ok_or(Reject::Malformed)? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return Err(Reject::Malformed);
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if src != from && !tables.in_tunnels(src) {
        return Err(Reject::InnerSource);
    }
    if !in_pod_cidr(dst, cfg) && !tables.in_tunnels(dst) {
        return Err(Reject::InnerDestination);
    }
    let outer_ce = outer_tos & 0x03 == 0x03;
    let inner_ecn = ip[1] & 0x03;
    if outer_ce && inner_ecn == 0 {
        return Err(Reject::EcnNotEct);
    }

    let mut frame = Vec::with_capacity(ETH_HLEN + ip.len());
    frame.extend_from_slice(&cfg.vtep_mac);
    frame.extend_from_slice(&inner_eth[6..12]);
    frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    frame.extend_from_slice(ip);
    if outer_ce && inner_ecn != 0x03 {
        let header = &mut frame[ETH_HLEN..ETH_HLEN + ihl];
        header[1] |= 0x03;
        header[10..12].copy_from_slice(&[0, 0]);
        let sum = ipv4_checksum(header);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(frame)
}

/// `addr` is in this node's pod CIDR (the config's, as decap reads it).
fn in_pod_cidr(addr: Ipv4Addr, cfg: &DataplaneConfig) -> bool {
    let prefix = u32::from(cfg.pod_prefix).min(32);
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(addr) & mask == u32::from_be_bytes(cfg.pod_cidr) & mask
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Debug, Error)]
pub enum ReassemblyError {
    #[error("reading the dataplane config from the pinned maps")]
    Maps(#[source] crate::maps::MapsError),
    #[error("binding UDP {0}")]
    Bind(SocketAddrV4, #[source] io::Error),
    #[error("setting up the tunnel socket: {0}")]
    Socket(&'static str, #[source] io::Error),
}

/// Starts the slow path on its own thread (blocking sockets: a datagram at a time, off
/// the event loop). It runs for the agent's life; a failure to read the maps ends it
/// with an error line (the fast paths do not depend on it).
pub fn spawn(bpffs_dir: PathBuf, stats: Arc<Stats>) {
    let run = move || {
        if let Err(e) = run(&bpffs_dir, &stats) {
            tracing::error!("outer fragments are no longer reassembled: {:#}", anyhow::Error::from(e));
        }
        stats.bound.store(false, Ordering::Relaxed);
    };
    if let Err(e) = std::thread::Builder::new().name("reassembly".into()).spawn(run) {
        tracing::error!("cannot start the reassembly thread ({e}): outer fragments are not decapsulated");
    }
}

fn run(bpffs_dir: &std::path::Path, stats: &Stats) -> Result<(), ReassemblyError> {
    let maps = Maps::open_pinned(bpffs_dir).map_err(ReassemblyError::Maps)?;
    let inject = Injector::new()?;
    let mut failing: Option<String> = None;
    loop {
        let cfg = maps.config().map_err(ReassemblyError::Maps)?;
        let at = SocketAddrV4::new(Ipv4Addr::from(cfg.underlay_ip), cfg.udp_port);
        let socket = match bind(at) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("{:#}", anyhow::Error::from(e));
                if failing.as_ref() != Some(&why) {
                    tracing::warn!(
                        "{why}: outer fragments (a smaller-MTU underlay hop) are not decapsulated until it is free \
                         (another socket on the port: flannel.1 of Flannel, during a migration?); retrying every {}s",
                        RETRY.as_secs()
                    );
                    failing = Some(why);
                }
                std::thread::sleep(RETRY);
                continue;
            }
        };
        failing = None;
        stats.bound.store(true, Ordering::Relaxed);
        tracing::info!(%at, "tunnel socket bound: outer fragments are reassembled and decapsulated here");
        serve(&socket, at, &maps, &inject, stats)?;
        stats.bound.store(false, Ordering::Relaxed);
    }
}

/// A UDP socket on the tunnel port that reports each datagram's type of service.
fn bind(at: SocketAddrV4) -> Result<UdpSocket, ReassemblyError> {
    let socket = UdpSocket::bind(at).map_err(|e| ReassemblyError::Bind(at, e))?;
    setsockopt(&socket, sockopt::IpRecvTos, &true).map_err(|e| ReassemblyError::Socket("IP_RECVTOS", io::Error::from(e)))?;
    // A smaller buffer is only fewer datagrams waiting: not worth failing over.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &RCVBUF);
    socket.set_read_timeout(Some(IDLE)).map_err(|e| ReassemblyError::Socket("SO_RCVTIMEO", e))?;
    Ok(socket)
}

/// Receives until the config says another address or port (then the caller binds again).
fn serve(socket: &UdpSocket, at: SocketAddrV4, maps: &Maps, inject: &Injector, stats: &Stats) -> Result<(), ReassemblyError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut cmsg = nix::cmsg_space!(u8);
    loop {
        let received = {
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            match recvmsg::<SockaddrIn>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
                Ok(msg) => {
                    let tos = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::Ipv4Tos(t) => Some(t),
                            _ => None,
                        })
                    });
                    msg.address.map(|a| (a.ip(), msg.bytes, tos.unwrap_or(0)))
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => None,
                Err(e) => return Err(ReassemblyError::Socket("recvmsg", io::Error::from(e))),
            }
        };
        let cfg = maps.config().map_err(ReassemblyError::Maps)?;
        if SocketAddrV4::new(Ipv4Addr::from(cfg.underlay_ip), cfg.udp_port) != at {
            tracing::info!(%at, "the tunnel address or port changed: binding again");
            return Ok(());
        }
        let Some((from, len, tos)) = received else { continue };
        let outcome = decide(&buf[..len], from, tos, &cfg, maps)
            .and_then(|frame| inject.send(&frame, cfg.weft0_peer_ifindex).map_err(|_| Reject::Inject));
        stats.count(outcome);
    }
}

/// Sends frames out of a link with an `AF_PACKET` socket: out of `weft0`'s veth peer,
/// they arrive on `weft0` as TC decap's do.
struct Injector {
    fd: OwnedFd,
}

impl Injector {
    fn new() -> Result<Injector, ReassemblyError> {
        // Protocol 0: this socket only sends, it receives nothing.
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(ReassemblyError::Socket("AF_PACKET socket", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Injector { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn send(&self, frame: &[u8], ifindex: u32) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IPV4.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `addr` outlive the call; the lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const A_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x00];
    const B_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x00];
    const B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    /// Node b is known, with pod CIDR 10.244.2.0/24; we are 10.244.1.0/24.
    struct Known(BTreeSet<Ipv4Addr>);

    impl Tables for Known {
        fn is_peer(&self, ip: Ipv4Addr) -> bool {
            self.0.contains(&ip)
        }
        fn in_tunnels(&self, ip: Ipv4Addr) -> bool {
            ip.octets()[..3] == [10, 244, 2]
        }
    }

    fn cfg() -> DataplaneConfig {
        DataplaneConfig { vni: 1, vtep_mac: A_MAC, pod_cidr: [10, 244, 1, 0], pod_prefix: 24, ..Default::default() }
    }

    fn inner(src: Ipv4Addr, dst: Ipv4Addr, tos: u8) -> Vec<u8> {
        let mut ip = vec![0x45, tos, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&[0u8; 8]);
        ip
    }

    fn datagram(vni: u32, ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let v = vni.to_be_bytes();
        let mut d = vec![VXLAN_FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0];
        d.extend_from_slice(&A_MAC);
        d.extend_from_slice(&B_MAC);
        d.extend_from_slice(&ethertype.to_be_bytes());
        d.extend_from_slice(ip);
        d
    }

    fn run(d: &[u8], from: Ipv4Addr, tos: u8) -> Result<Vec<u8>, Reject> {
        decide(d, from, tos, &cfg(), &Known([B].into()))
    }

    const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
    const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);

    /// Should frame the inner packet for weft0 exactly as TC decap does.
    #[test]
    fn delivers_the_inner_packet_to_the_vtep_mac() {
        let ip = inner(POD_B, POD_A, 0);
        let frame = run(&datagram(1, ETH_P_IPV4, &ip), B, 0).unwrap();
        assert_eq!(&frame[..6], &A_MAC);
        assert_eq!(&frame[6..12], &B_MAC);
        assert_eq!(&frame[12..14], &ETH_P_IPV4.to_be_bytes());
        assert_eq!(&frame[14..], &ip[..]);
    }

    /// Should refuse what decap refuses, for the same reason.
    #[test]
    fn rejects_what_decap_drops() {
        let ok = inner(POD_B, POD_A, 0);
        let rogue = Ipv4Addr::new(198, 19, 0, 66);
        assert_eq!(run(&datagram(1, ETH_P_IPV4, &ok), rogue, 0), Err(Reject::UnknownPeer));
        assert_eq!(run(&datagram(2, ETH_P_IPV4, &ok), B, 0), Err(Reject::OtherVni));
        assert_eq!(run(&datagram(1, 0x0806, &ok), B, 0), Err(Reject::NotIpv4));
        assert_eq!(run(&datagram(1, ETH_P_IPV4, &ok)[..20], B, 0), Err(Reject::Malformed));
        let mut no_flag = datagram(1, ETH_P_IPV4, &ok);
        no_flag[0] = 0;
        assert_eq!(run(&no_flag, B, 0), Err(Reject::Malformed));
        let forged = inner(Ipv4Addr::new(192, 0, 2, 1), POD_A, 0);
        assert_eq!(run(&datagram(1, ETH_P_IPV4, &forged), B, 0), Err(Reject::InnerSource));
        let elsewhere = inner(POD_B, Ipv4Addr::new(192, 0, 2, 1), 0);
        assert_eq!(run(&datagram(1, ETH_P_IPV4, &elsewhere), B, 0), Err(Reject::InnerDestination));
        // The sender's own address is a source a node may use.
        assert!(run(&datagram(1, ETH_P_IPV4, &inner(B, POD_A, 0)), B, 0).is_ok());
    }

    /// Should follow RFC 6040: CE outside is copied in, or drops a not-ECT packet.
    #[test]
    fn copies_ce_as_rfc_6040_says() {
        assert_eq!(run(&datagram(1, ETH_P_IPV4, &inner(POD_B, POD_A, 0)), B, 0x03), Err(Reject::EcnNotEct));
        let frame = run(&datagram(1, ETH_P_IPV4, &inner(POD_B, POD_A, 0x02)), B, 0x03).unwrap();
        assert_eq!(frame[14 + 1] & 0x03, 0x03, "CE set inside");
        assert_eq!(ipv4_checksum(&frame[14..34]), 0, "inner checksum still verifies");
    }
}
