//! weft's dataplane: VXLAN encapsulation and decapsulation in TC (decapsulation also
//! in XDP, before GRO), wire-compatible with Flannel's vxlan backend.
//!
//! The packet path, top to bottom:
//! - [`parse`]: bounds-checked header access (the only place that compares with `data_end`);
//! - [`encap`] / [`decap`]: the tunnel's two ends: decide (tunnel and peer lookups),
//!   then rewrite and redirect — [`tunnel`] (into VXLAN) and [`classify`] (which way a
//!   decapsulated frame takes into `weft0`) are the stages they share with the fast path;
//! - [`bridge`]: routed packets for local pods past the pod bridge's transmit;
//! - [`source`]: what a pod may send from its veth (its own addresses only);
//! - [`fastpath`]: the opt-in bypass of the host stack for pod-to-pod traffic;
//! - [`nat`]: masquerade of pods' traffic leaving the cluster (`--ip-masq`), and its replies.
//!
//! Calls go one way: entry points → `encap`/`decap`/`bridge`/`nat` → `fastpath`, `nat` → the stages
//! (`tunnel`, `classify`, `parse`, `csum`, `mtu`, `maps`); no stage calls back up.
//! - [`probe`]: what the running kernel's helpers accept, asked once by the agent;
//! - [`csum`], [`mtu`]: checksum arithmetic, MTU checks;
//! - [`counters`]: one count per packet, by (hook, verdict).
//!
//! Each entry point below is a thin shim: it runs its stage and hands the
//! `Result<Verdict, Verdict>` to its hook's exit — [`finish`] for TC, [`finish_xdp`]
//! for XDP — which counts it under (hook, verdict), logs drops and turns the verdict
//! into the hook's return code.
#![no_std]
#![no_main]

mod bridge;
mod classify;
mod counters;
mod csum;
mod decap;
mod encap;
mod fastpath;
mod maps;
mod mtu;
mod nat;
mod parse;
mod probe;
mod source;
mod tunnel;

use aya_ebpf::{
    bindings::{
        TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use weft_common::counters::{Action, Hook, Verdict};

/// TC egress of `weft0`: every packet the kernel routes to a remote pod CIDR.
#[classifier]
pub fn weft_encap(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let result = encap::tc_encap(&ctx);
    finish(&ctx, Hook::Weft0Egress, len, result)
}

/// TC ingress of the uplink: every packet the node receives from the underlay.
/// VXLAN for our port and VNI is decapsulated into `weft0`; everything else passes.
#[classifier]
pub fn weft_decap(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let result = decap::tc_decap(&ctx);
    finish(&ctx, Hook::UplinkIngress, len, result)
}

/// TC ingress of each pod's host-side veth: a pod's frame with a source not its own is
/// dropped (`--pod-source-check`); with `--fast-path`, a pod's packet for a remote pod
/// is encapsulated here, skipping the host stack. Everything else passes to it.
#[classifier]
pub fn weft_pod_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let result = fastpath::tc_pod_egress(&ctx);
    finish(&ctx, Hook::PodVethIngress, len, result)
}

/// TC egress of each pod's host-side veth (`--fast-path`): what the stack delivers to
/// the pod; its flow is remembered, so the pod's replies take the stack too.
#[classifier]
pub fn weft_pod_ingress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    fastpath::tc_pod_ingress(&ctx);
    finish(&ctx, Hook::PodVethEgress, len, Ok(Verdict::Passed))
}

/// TC ingress of `weft0` (`--fast-path`): TC decap's aggregates for a local pod go
/// straight into it; everything else goes on to the stack.
#[classifier]
pub fn weft_weft0_ingress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let result = fastpath::tc_weft0_ingress(&ctx);
    finish(&ctx, Hook::Weft0Ingress, len, result)
}

/// TC egress of the pod bridge (`cni0`): a routed packet for a local pod goes to its
/// veth whole, not through the bridge's transmit (which segments super-packets).
#[classifier]
pub fn weft_bridge_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let result = bridge::tc_bridge_egress(&ctx);
    finish(&ctx, Hook::BridgeEgress, len, result)
}

/// TC egress of the uplink (`--ip-masq`): pods' traffic leaving the cluster network
/// leaves with the node's address.
#[classifier]
pub fn weft_masq(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let result = nat::tc_masq(&ctx);
    finish(&ctx, Hook::UplinkEgress, len, result)
}

/// Never attached: the agent runs it once on a crafted VXLAN frame
/// (`BPF_PROG_TEST_RUN`) to learn whether the kernel takes a decap flag.
#[classifier]
pub fn weft_probe_decap(ctx: TcContext) -> i32 {
    probe::decap_l4_udp(&ctx)
}

/// XDP of the uplink (`--decap xdp`): VXLAN for us is decapsulated before GRO, and
/// the TC program above delivers the aggregates into `weft0`.
#[xdp]
pub fn weft_decap_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    let result = decap::xdp_decap(&ctx);
    finish_xdp(&ctx, len, result)
}

/// The XDP exit: counts under (`UplinkXdp`, verdict). A decapsulated frame passes
/// on, rewritten, to GRO and TC; what is not ours (or ours but bad: TC judges it
/// again and counts the drop there) passes untouched; a drop drops.
#[inline(always)]
fn finish_xdp(ctx: &XdpContext, len: u32, result: Result<Verdict, Verdict>) -> u32 {
    let verdict = match result {
        Ok(v) | Err(v) => v,
    };
    counters::count(Hook::UplinkXdp, verdict, len);
    match result {
        Ok(_) => XDP_PASS,
        Err(reason) => {
            debug!(ctx, "weft: dropped packet of {} bytes in XDP, verdict {}", len, reason.index());
            XDP_DROP
        }
    }
}

/// The TC exit: counts the packet under (hook, verdict) and picks the TC action.
///
/// Passed and rewritten packets return `TC_ACT_UNSPEC` (TCX_NEXT), not `TC_ACT_OK`,
/// so programs after ours on the same hook still see them.
#[inline(always)]
fn finish(ctx: &TcContext, hook: Hook, len: u32, result: Result<Verdict, Verdict>) -> i32 {
    let verdict = match result {
        Ok(v) | Err(v) => v,
    };
    counters::count(hook, verdict, len);
    match result {
        Ok(v) if v.action() == Action::Redirect => TC_ACT_REDIRECT,
        Ok(_) => TC_ACT_UNSPEC,
        Err(reason) => {
            // Off the fast path: only drops log, and only when the agent enabled the level.
            debug!(ctx, "weft: dropped packet of {} bytes, verdict {}", len, reason.index());
            TC_ACT_SHOT
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach a panic; this is never called.
    loop {}
}

/// Required for the license-gated helpers (`bpf_redirect_neigh`) and aya-log.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
