//! The clsact filters of kernels without TCX (before 6.6), read and removed over a
//! plain synchronous rtnetlink socket (aya attaches them, but cannot list them).
//!
//! weft's filters sit at one reserved slot, [`PRIORITY`] and [`HANDLE`], on each hook:
//! a later agent's program replaces the one in that slot (`RTM_NEWTFILTER` without
//! `NLM_F_CREATE`: cls_bpf swaps the program under RCU), so the hook never runs
//! without one, as `bpf_link_update` gives TCX links.

use std::io;

use aya::programs::{TcAttachType, tc::TcHandle};
use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcFilterBpfOption, TcHandle as NlHandle, TcMessage, TcOption},
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

/// First on the hook, as TCX's `LinkOrder::first()`: VXLAN for us is decapsulated
/// before other filters judge the outer packet (weft hands the rest on with
/// `TC_ACT_UNSPEC`, which lets the next filter run).
pub const PRIORITY: u16 = 1;
/// "WF": a handle nobody else is likely to pick at priority 1.
pub const HANDLE: TcHandle = TcHandle::new(0, 0x5746);

/// One bpf filter on a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub ifindex: u32,
    pub hook: TcAttachType,
    pub priority: u16,
    pub handle: u32,
    pub name: String,
    pub prog_id: u32,
}

impl Filter {
    /// Whether it sits in weft's slot.
    pub fn is_weft_slot(&self) -> bool {
        self.priority == PRIORITY && self.handle == u32::from(HANDLE)
    }
}

fn parent(hook: TcAttachType) -> NlHandle {
    // TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS).
    NlHandle { major: 0xffff, minor: if hook == TcAttachType::Ingress { 0xfff2 } else { 0xfff3 } }
}

/// The bpf filters on `ifindex`'s `hook` (none when it has no clsact qdisc).
pub fn filters(ifindex: u32, hook: TcAttachType) -> io::Result<Vec<Filter>> {
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    msg.header.parent = parent(hook);
    let mut out = Vec::new();
    for reply in request(RouteNetlinkMessage::GetTrafficFilter(msg), NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewTrafficFilter(f) = reply else { continue };
        // Each priority's chain head comes with handle 0.
        if f.header.handle == NlHandle::from(0u32) || !f.attributes.contains(&TcAttribute::Kind("bpf".into())) {
            continue;
        }
        let (mut name, mut prog_id) = (String::new(), 0);
        for opt in f.attributes.iter().filter_map(|a| if let TcAttribute::Options(o) = a { Some(o) } else { None }).flatten() {
            match opt {
                TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = n.clone(),
                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => prog_id = *id,
                _ => {}
            }
        }
        out.push(Filter { ifindex, hook, priority: (f.header.info >> 16) as u16, handle: f.header.handle.into(), name, prog_id });
    }
    Ok(out)
}

/// The bpf filters on both hooks of every interface in this network namespace.
pub fn all_filters() -> io::Result<Vec<Filter>> {
    let mut out = Vec::new();
    for iface in nix::net::if_::if_nameindex().map_err(io::Error::from)?.iter() {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            out.extend(filters(iface.index(), hook)?);
        }
    }
    Ok(out)
}

/// Removes one filter; an interface or filter already gone is not an error.
pub fn delete(f: &Filter) -> io::Result<()> {
    let mut msg = TcMessage::default();
    msg.header.index = f.ifindex as i32;
    msg.header.parent = parent(f.hook);
    msg.header.handle = f.handle.into();
    // Protocol ETH_P_ALL (network order), as aya attaches.
    msg.header.info = (u32::from(f.priority) << 16) | u32::from((libc::ETH_P_ALL as u16).to_be());
    msg.attributes.push(TcAttribute::Kind("bpf".into()));
    match request(RouteNetlinkMessage::DelTrafficFilter(msg), NLM_F_ACK) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)) => Ok(()),
        other => other.map(drop),
    }
}

/// Sends one request and collects the replies up to its end (a dump's DONE or the ACK).
fn request(payload: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    msg.finalize();
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut replies = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) => match e.code {
                    None => return Ok(replies),
                    Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                },
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}
