//! Choosing the underlay interface and this node's public (underlay) address, as
//! Flannel does: `--iface` (a name or an address), `--iface-regex`, else the
//! interface holding the node's own address (static mode: its node-table entry;
//! Kubernetes mode: its `public-ip-overwrite`, `--public-ip` or InternalIP, the first
//! one an interface holds), else the interface of the default route.
//! `--public-ip` (or the node's `public-ip-overwrite` annotation) overrides the address.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::netlink::{Link, Netlink, NetlinkError};

#[derive(Debug, Error)]
pub enum UplinkError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("interface {0} (--iface) does not exist")]
    NoSuchIface(String),
    #[error("no interface holds {0} (--iface)")]
    NoIfaceWithAddress(Ipv4Addr),
    #[error("--iface-regex {0:?} is not a valid regular expression: {1}")]
    BadRegex(String, String),
    #[error("no interface matches --iface-regex {0:?} and has an IPv4 address")]
    NoRegexMatch(String),
    #[error("no interface holds this node's address {0}, and there is no default route; pass --iface")]
    NotFound(Ipv4Addr),
    #[error("no default route to pick the uplink from; pass --iface")]
    NoDefaultRoute,
    #[error("the uplink {0} has no IPv4 address; pass --public-ip")]
    NoAddress(String),
}

/// How the operator asked for the uplink: as flanneld, each `--iface` in turn (a name
/// or an address), then each `--iface-regex` (on names; the first matching interface
/// with an IPv4 address), the first match winning.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub iface: Vec<String>,
    pub iface_regex: Vec<String>,
}

/// The uplink and the first IPv4 address on it.
pub struct Uplink {
    pub link: Link,
    pub address: Option<Ipv4Addr>,
}

async fn with_address(nl: &Netlink, link: Link) -> Result<Uplink, UplinkError> {
    let address = nl.addresses(link.index).await?.first().map(|(a, _)| *a);
    Ok(Uplink { link, address })
}

/// Picks the uplink; `own_addresses` are the node's known addresses, most specific first.
pub async fn select(nl: &Netlink, sel: &Selector, own_addresses: &[Ipv4Addr]) -> Result<Uplink, UplinkError> {
    let mut missing = None;
    for iface in &sel.iface {
        if let Ok(ip) = iface.parse::<Ipv4Addr>() {
            match nl.link_with_address(ip).await? {
                Some(link) => return Ok(Uplink { link, address: Some(ip) }),
                None => missing = missing.or(Some(UplinkError::NoIfaceWithAddress(ip))),
            }
            continue;
        }
        match nl.link_by_name(iface).await? {
            Some(link) => return with_address(nl, link).await,
            None => missing = missing.or_else(|| Some(UplinkError::NoSuchIface(iface.clone()))),
        }
    }
    for pattern in &sel.iface_regex {
        let re = regex_lite::Regex::new(pattern).map_err(|e| UplinkError::BadRegex(pattern.clone(), e.to_string()))?;
        for link in nl.links().await? {
            if re.is_match(&link.name) {
                let up = with_address(nl, link).await?;
                if up.address.is_some() {
                    return Ok(up);
                }
            }
        }
        missing = missing.or_else(|| Some(UplinkError::NoRegexMatch(pattern.clone())));
    }
    // Asked for and not found: never fall back to a guess.
    if let Some(e) = missing {
        return Err(e);
    }
    for &ip in own_addresses {
        if let Some(link) = nl.link_with_address(ip).await? {
            return Ok(Uplink { link, address: Some(ip) });
        }
    }
    let default = nl.routes().await?.into_iter().find(|r| r.destination.prefix() == 0 && r.oif.is_some());
    let Some(oif) = default.and_then(|r| r.oif) else {
        return Err(own_addresses.first().copied().map(UplinkError::NotFound).unwrap_or(UplinkError::NoDefaultRoute));
    };
    let link = nl.link_by_index(oif).await?.ok_or(UplinkError::NoDefaultRoute)?;
    with_address(nl, link).await
}
