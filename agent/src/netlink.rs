//! Links, addresses and routes over rtnetlink: the primitives the node model is built
//! from, each idempotent where the kernel allows (Flannel's device.go plays this role).
//!
//! Everything here works on the calling process's network namespace, so an agent
//! started with `nsenter --net=...` manages that node only. Reads go over netlink, not
//! `/sys/class/net`, which under `nsenter --net` still describes the root namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressMessage},
        link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope},
    },
};
use thiserror::Error;
use weft_common::MacAddr;

#[derive(Debug, Error)]
#[error("netlink: {op}")]
pub struct NetlinkError {
    pub op: String,
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        errno_of(&self.source)
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn op(what: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError { op: what(), source }
}

/// What the agent needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub kind: Option<InfoKind>,
    pub up: bool,
    pub noarp: bool,
    /// Id of the program at the native (driver) XDP hook, if any.
    pub xdp_drv_prog: Option<u32>,
    /// The bridge (or bond) this link is a port of.
    pub master: Option<u32>,
    /// The other end's ifindex (a veth's peer: `IFLA_LINK`).
    pub peer: Option<u32>,
}

impl Link {
    fn from_message(m: LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mtu: 0,
            mac: None,
            kind: None,
            up: m.header.flags.contains(LinkFlags::Up),
            noarp: m.header.flags.contains(LinkFlags::Noarp),
            xdp_drv_prog: None,
            master: None,
            peer: None,
        };
        for attr in m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Controller(index) => link.master = Some(index),
                LinkAttribute::Link(index) => link.peer = Some(index),
                LinkAttribute::Address(a) if a.len() == 6 => link.mac = a.try_into().ok(),
                LinkAttribute::Xdp(xdp) => {
                    for x in xdp {
                        if let LinkXdp::DrvProgId(id) = x {
                            link.xdp_drv_prog = Some(id).filter(|id| *id != 0);
                        }
                    }
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k);
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A kernel vxlan device (Flannel's `flannel.<VNI>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanLink {
    pub index: u32,
    pub vni: Option<u32>,
    pub port: Option<u16>,
}

/// A route in the main table, as far as the node model cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub onlink: bool,
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;

impl Netlink {
    /// Opens a netlink socket in the current network namespace; needs a tokio runtime.
    pub fn connect() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        self.handle.link().get().execute().map_ok(Link::from_message).try_collect().await.map_err(op(|| "listing links".into()))
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_name(name.to_owned()).execute();
        match stream.try_next().await {
            Ok(m) => Ok(m.map(Link::from_message)),
            Err(e) if matches!(errno_of(&e), Some(ENODEV)) => Ok(None),
            Err(e) => Err(op(|| format!("looking up link {name}"))(e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(m) => Ok(m.map(Link::from_message)),
            Err(e) if matches!(errno_of(&e), Some(ENODEV)) => Ok(None),
            Err(e) => Err(op(|| format!("looking up link {index}"))(e)),
        }
    }

    /// The kernel vxlan device named `name`, if there is one: its ifindex, VNI and UDP
    /// destination port (as the kernel reports them).
    pub async fn vxlan_by_name(&self, name: &str) -> Result<Option<VxlanLink>> {
        let mut stream = self.handle.link().get().match_name(name.to_owned()).execute();
        let msg = match stream.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if matches!(errno_of(&e), Some(ENODEV)) => return Ok(None),
            Err(e) => return Err(op(|| format!("looking up link {name}"))(e)),
        };
        let index = msg.header.index;
        let (mut is_vxlan, mut vni, mut port) = (false, None, None);
        for attr in msg.attributes {
            let LinkAttribute::LinkInfo(infos) = attr else { continue };
            for info in infos {
                match info {
                    LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                    LinkInfo::Data(InfoData::Vxlan(data)) => {
                        for d in data {
                            match d {
                                InfoVxlan::Id(id) => vni = Some(id),
                                InfoVxlan::Port(p) => port = Some(p),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(is_vxlan.then_some(VxlanLink { index, vni, port }))
    }

    /// Every neighbour entry of `family` (`ip neigh`; `bridge fdb` for AF_BRIDGE).
    async fn neighbour_dump(&self, family: AddressFamily, what: &'static str) -> Result<Vec<NeighbourMessage>> {
        self.handle.neighbours().get().set_address_family(family).execute().try_collect().await.map_err(op(|| what.into()))
    }

    /// The IPv4 neighbours of link `index` that have a usable MAC (not incomplete or
    /// failed), as (address, MAC).
    pub async fn neighbours(&self, index: u32) -> Result<Vec<(Ipv4Addr, MacAddr)>> {
        Ok(self
            .neighbour_dump(AddressFamily::Inet, "listing neighbours")
            .await?
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .filter(|m| {
                matches!(
                    m.header.state,
                    NeighbourState::Reachable
                        | NeighbourState::Stale
                        | NeighbourState::Delay
                        | NeighbourState::Probe
                        | NeighbourState::Permanent
                )
            })
            .filter_map(|m| {
                let mut ip = None;
                let mut mac = None;
                for attr in m.attributes {
                    match attr {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(a),
                        NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::try_from(l.as_slice()).ok(),
                        _ => {}
                    }
                }
                Some((ip?, mac?))
            })
            .collect())
    }

    /// The MACs a bridge has learned on its ports (`bridge fdb show br`, without the
    /// ports' own addresses), as (MAC, port ifindex).
    pub async fn bridge_fdb(&self, bridge: u32) -> Result<Vec<(MacAddr, u32)>> {
        Ok(self
            .neighbour_dump(AddressFamily::Bridge, "listing the bridge FDB")
            .await?
            .into_iter()
            // The ports' own addresses are permanent ("local") entries.
            .filter(|m| m.header.state != NeighbourState::Permanent)
            .filter_map(|m| {
                let mut mac = None;
                let mut master = None;
                for attr in m.attributes {
                    match attr {
                        NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::try_from(l.as_slice()).ok(),
                        NeighbourAttribute::Controller(b) => master = Some(b),
                        _ => {}
                    }
                }
                (master == Some(bridge) && m.header.ifindex != bridge).then_some((mac?, m.header.ifindex))
            })
            .collect())
    }

    /// IPv4 addresses (address, prefix length) on a link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(op(|| format!("listing addresses of link {index}")))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| ipv4_of(&m).map(|ip| (ip, m.header.prefix_len)))
            .collect())
    }

    /// Every IPv4 address in this namespace, with the index of the link holding it
    /// (one dump).
    pub async fn all_addresses(&self) -> Result<Vec<(u32, Ipv4Addr)>> {
        let msgs: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await.map_err(op(|| "listing addresses".to_string()))?;
        Ok(msgs.into_iter().filter_map(|m| ipv4_of(&m).map(|ip| (m.header.index, ip))).collect())
    }

    /// The link that holds `ip`, if any.
    pub async fn link_with_address(&self, ip: Ipv4Addr) -> Result<Option<Link>> {
        for link in self.links().await? {
            if self.addresses(link.index).await?.iter().any(|(a, _)| *a == ip) {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    /// Creates a veth pair `name` ↔ `peer` in this namespace.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(op(|| format!("creating veth pair {name}/{peer}")))
    }

    /// Sets MAC, MTU, ARP and up state of a link in one request.
    pub async fn configure_link(&self, index: u32, mac: Option<MacAddr>, mtu: u32, arp: bool) -> Result<()> {
        let mut msg = LinkUnspec::new_with_index(index).mtu(mtu).arp(arp).up();
        if let Some(mac) = mac {
            msg = msg.address(mac.to_vec());
        }
        self.handle.link().set(msg.build()).execute().await.map_err(op(|| format!("configuring link {index}")))
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(e) if matches!(errno_of(&e), Some(ENODEV)) => Ok(()),
            r => r.map_err(op(|| format!("deleting link {index}"))),
        }
    }

    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(op(|| format!("adding {ip}/{prefix} to link {index}")))
    }

    pub async fn del_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        match self.handle.address().del(msg).execute().await {
            Err(e) if matches!(errno_of(&e), Some(EADDRNOTAVAIL)) => Ok(()),
            r => r.map_err(op(|| format!("removing {ip}/{prefix} from link {index}"))),
        }
    }

    /// IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(op(|| "listing routes".into()))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.table == RouteMessage::default().header.table || m.header.table == 254)
            .filter_map(route_from_message)
            .collect())
    }

    /// Routes whose output interface is `oif`.
    pub async fn routes_via(&self, oif: u32) -> Result<Vec<Route>> {
        Ok(self.routes().await?.into_iter().filter(|r| r.oif == Some(oif)).collect())
    }

    /// `ip route replace DEST via GW dev OIF onlink`, as Flannel routes a remote pod
    /// CIDR to `flannel.1`.
    pub async fn replace_onlink_route(&self, destination: Ipv4Network, gateway: Ipv4Addr, oif: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination.network(), destination.prefix())
            .gateway(gateway)
            .output_interface(oif)
            .onlink()
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(op(|| format!("route {destination} via {gateway} dev {oif} onlink")))
    }

    /// Deletes the route to `route.destination` via its output interface, whoever
    /// added it: as `ip route del` does, the protocol is left unspecified and the scope
    /// "nowhere", which the kernel reads as "any" (the builder's defaults, protocol
    /// static and scope universe, would match only our own routes).
    pub async fn del_route(&self, route: &Route) -> Result<()> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination.network(), route.destination.prefix())
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere);
        if let Some(oif) = route.oif {
            b = b.output_interface(oif);
        }
        match self.handle.route().del(b.build()).execute().await {
            Err(e) if matches!(errno_of(&e), Some(ESRCH | ENOENT)) => Ok(()),
            r => r.map_err(op(|| format!("deleting route {}", route.destination))),
        }
    }
}

fn route_from_message(m: RouteMessage) -> Option<Route> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(Route {
        destination: Ipv4Network::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
    })
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The IPv4 address an address message carries, if it is one.
fn ipv4_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}
