//! Encapsulation at `weft0`'s TC egress.
//!
//! The kernel routes packets for remote pod CIDRs to `weft0` (as Flannel routes them
//! to `flannel.1`), after forwarding has already lowered the TTL and checked `weft0`'s
//! MTU (frag-needed is the stack's, not ours). Here:
//! 1. parse: Ethernet + IPv4;
//! 2. decide: longest-prefix match of the inner destination in `WEFT_TUNNELS`;
//! 3. rewrite: open 50 bytes right after the Ethernet header and write outer IPv4,
//!    UDP, VXLAN and the inner Ethernet header there; the frame's own Ethernet header
//!    becomes the outer one;
//! 4. redirect: `bpf_redirect_neigh` to the uplink routes the outer destination and
//!    fills in the outer MACs, resolving the next hop (ARP) if needed.
//!
//! Step 3 first masquerades a flow from outside the cluster network to this node's
//! tunnel address (`--ip-masq`, [`nat::masq_to_tunnel`]). Steps 3 and 4 are
//! [`tunnel::encapsulate`], which the fast path shares. With `--fast-path`
//! on, step 2 also remembers the flow (see [`fastpath::remember_stack_flow`]).

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use weft_common::{
    config::FLAG_FAST_PATH,
    counters::Verdict,
    wire::{ETH_HLEN, ETH_P_IPV4},
};

use crate::{
    fastpath, maps, nat,
    parse::{EthHdr, Ipv4Hdr, Packet},
    tunnel,
};

pub fn tc_encap(ctx: &TcContext) -> Result<Verdict, Verdict> {
    // parse
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let eth: &EthHdr = pkt.header(0).ok_or(Verdict::DropMalformed)?;
    if u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
        return Err(Verdict::DropNotIpv4);
    }
    let ip: &Ipv4Hdr = pkt.header(ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    if !ip.is_valid() {
        return Err(Verdict::DropMalformed);
    }

    // decide
    let cfg = maps::config().ok_or(Verdict::DropNoConfig)?;
    let peer = *maps::WEFT_TUNNELS.get(&Key::new(32, ip.daddr)).ok_or(Verdict::DropNoTunnel)?;
    if cfg.flags & FLAG_FAST_PATH != 0 {
        fastpath::remember_stack_flow(pkt, ip);
    }
    let tos = ip.tos;

    // rewrite: a flow from outside to another node's pod takes our tunnel address
    // (`--ip-masq`), then the tunnel.
    nat::masq_to_tunnel(ctx, cfg, pkt, ip)?;
    tunnel::encapsulate(ctx, cfg, &peer, tos)?;
    Ok(Verdict::Encapsulated)
}
