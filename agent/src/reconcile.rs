//! Desired vs actual, applied in the order the kernel needs.
//!
//! Level-triggered: every resync reads what the maps and `weft0`'s routes hold and
//! applies only the difference, so unchanged peers (and their flows) are never
//! touched, and entries of nodes that vanished while the agent was down are swept.
//!
//! Order: a peer is accepted for decap and has its tunnel entry before its route
//! exists (as Flannel adds the route last), so the first routed packet finds its
//! tunnel; removal runs the other way round. Removals go first: in a full map (at
//! `--max-nodes`) a node replacing another only fits once the other is gone.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnetwork::Ipv4Network;
use thiserror::Error;

use crate::{
    maps::{Maps, MapsError},
    netlink::{Netlink, NetlinkError, Route},
    node::Desired,
};

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// Entries to write and keys to delete to turn `actual` into `desired`.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff<K, V> {
    pub upsert: Vec<(K, V)>,
    pub remove: Vec<K>,
}

impl<K, V> Diff<K, V> {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(desired: &BTreeMap<K, V>, actual: &BTreeMap<K, V>) -> Diff<K, V> {
    Diff {
        upsert: desired.iter().filter(|(k, v)| actual.get(k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        remove: actual.keys().filter(|k| !desired.contains_key(k)).cloned().collect(),
    }
}

/// `weft0`'s routes as destination → on-link gateway; a route without an on-link
/// gateway maps to 0.0.0.0, so it differs from every desired route and is replaced.
pub fn actual_routes(routes: &[Route]) -> BTreeMap<Ipv4Network, Ipv4Addr> {
    routes.iter().map(|r| (r.destination, r.gateway.filter(|_| r.onlink).unwrap_or(Ipv4Addr::UNSPECIFIED))).collect()
}

/// What one pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub upserted: usize,
    pub removed: usize,
}

/// Makes maps and routes equal to `desired`. Without `known`, reads what the kernel
/// holds (the periodic, level-triggered pass, which also sweeps what others changed);
/// with `known` — what the last pass applied — writes only the difference, without
/// dumping thousands of entries per Node event.
pub async fn apply(
    maps: &mut Maps,
    nl: &Netlink,
    weft0: u32,
    desired: &Desired,
    known: Option<&Desired>,
) -> Result<Changes, ReconcileError> {
    let (peers, tunnels, current_routes, routes) = match known {
        Some(k) => {
            let routes = k
                .routes
                .iter()
                .map(|(dst, gw)| Route { destination: *dst, gateway: Some(*gw), oif: Some(weft0), onlink: true })
                .collect();
            (diff(&desired.peers, &k.peers), diff(&desired.tunnels, &k.tunnels), routes, diff(&desired.routes, &k.routes))
        }
        None => {
            let current_routes = nl.routes_via(weft0).await?;
            let routes = diff(&desired.routes, &actual_routes(&current_routes));
            (diff(&desired.peers, &maps.peers()?), diff(&desired.tunnels, &maps.tunnels()?), current_routes, routes)
        }
    };
    let mut changes = Changes::default();
    for cidr in &routes.remove {
        if let Some(route) = current_routes.iter().find(|r| r.destination == *cidr) {
            nl.del_route(route).await?;
        }
    }
    for cidr in &tunnels.remove {
        tracing::info!(%cidr, "tunnel entry removed");
        maps.remove_tunnel(*cidr)?;
    }
    for ip in &peers.remove {
        maps.remove_peer(*ip)?;
    }
    changes.removed = peers.remove.len() + tunnels.remove.len() + routes.remove.len();

    for (ip, peer) in &peers.upsert {
        maps.set_peer(*ip, *peer)?;
    }
    for (cidr, endpoint) in &tunnels.upsert {
        tracing::info!(%cidr, underlay = %Ipv4Addr::from(endpoint.underlay_ip), "tunnel entry set");
        maps.set_tunnel(*cidr, *endpoint)?;
    }
    for (cidr, gateway) in &routes.upsert {
        nl.replace_onlink_route(*cidr, *gateway, weft0).await?;
    }
    changes.upserted = peers.upsert.len() + tunnels.upsert.len() + routes.upsert.len();
    Ok(changes)
}

/// Writes the desired peers and tunnels, nothing else: before a start swaps its
/// programs into an earlier agent's live links, so maps it had to create anew (their
/// layout changed) already hold every peer when its programs start using them.
/// Removals and routes are left to [`apply`], after the swap.
/// An adopted map still holding nodes that are gone may be full: what does not fit
/// now is written by [`apply`], after its removals.
pub fn seed(maps: &mut Maps, desired: &Desired) -> Result<(), ReconcileError> {
    let full_is_later = |r: Result<(), MapsError>| match r {
        Err(e) if e.is_full() => Ok(()),
        r => r,
    };
    for (ip, peer) in &desired.peers {
        full_is_later(maps.set_peer(*ip, *peer))?;
    }
    for (cidr, endpoint) in &desired.tunnels {
        full_is_later(maps.set_tunnel(*cidr, *endpoint))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(entries: &[(u8, u32)]) -> BTreeMap<u8, u32> {
        entries.iter().copied().collect()
    }

    #[test]
    fn diff_writes_new_and_changed_removes_stale_keeps_equal() {
        let d = diff(&m(&[(1, 10), (2, 20), (3, 30)]), &m(&[(2, 20), (3, 31), (4, 40)]));
        assert_eq!(d, Diff { upsert: vec![(1, 10), (3, 30)], remove: vec![4] });
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        assert!(diff(&m(&[(1, 10)]), &m(&[(1, 10)])).is_empty());
        assert!(diff::<u8, u32>(&m(&[]), &m(&[])).is_empty());
    }

    #[test]
    fn routes_without_onlink_gateway_differ_from_desired() {
        let net: Ipv4Network = "10.244.2.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 244, 2, 0);
        let ok = Route { destination: net, gateway: Some(gw), oif: Some(5), onlink: true };
        let not_onlink = Route { onlink: false, ..ok.clone() };
        assert_eq!(actual_routes(&[ok])[&net], gw);
        assert_eq!(actual_routes(&[not_onlink])[&net], Ipv4Addr::UNSPECIFIED);
    }
}
