//! This node's own podCIDR after start, re-checked on every Node change and resync.
//!
//! The agent serves the podCIDR its Node had when it started: `weft0`'s address, the
//! local routes, decap's "for this node" check, subnet.env and the CNI conflist, and
//! so the addresses its pods already hold. Kubernetes treats `spec.podCIDR` as
//! set-once, but a Node deleted and recreated (by an operator, an autoscaler, a kubelet
//! re-registering) gets whatever range the allocator hands out, possibly another, and
//! the range it gave up may go to a newer Node meanwhile; a server without the
//! set-once validation lets it be edited.
//!
//! Such a change is reported, not followed: an error in the log, a Warning Event on the
//! Node, `/readyz` "degraded" (live all the same: a restart would not give the pods
//! their addresses back) — and the old state keeps being served. Why not switch:
//! the pods on this node keep their addresses from the old range until they are
//! recreated, so a switch would cut them off as surely (peers now route the new range
//! here and the old one nowhere) while new pods would get the new range on a bridge
//! whose gateway is the old one's; only draining the node gives every pod an address
//! in the new range, and that is the operator's call. Flannel does not switch either:
//! its kube subnet manager reads the podCIDR once (`AcquireLease`) and does not watch
//! its own lease (`WatchLease` is unimplemented there); it takes a new range only
//! when restarted, after which the bridge plugin fails new pods ("cni0 already has an
//! IP address different from …") until `cni0` is removed. The runbook (README):
//! drain, restart the agent, uncordon.
//!
//! An overlap is judged by age, as for peers ([`crate::kube_sync::peers`]): the older
//! Node keeps the range. A Node older than ours whose podCIDR overlaps the range we
//! serve holds it legitimately (ours was recreated after it got it): a problem of this
//! node's. A newer one is that node's problem (its agent reports it; ours skips it).

use std::sync::Arc;

use ipnetwork::Ipv4Network;
use thiserror::Error;

use crate::{annotations, node_object::WatchedNode};

/// Why the range this node serves is no longer its Node's own.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum OwnCidrProblem {
    #[error("the Node object is gone (deleted?); keeping {serving}")]
    NodeGone { serving: Ipv4Network },
    #[error("the Node has no podCIDR any more; keeping {serving}, which this node's pods hold")]
    Unassigned { serving: Ipv4Network },
    #[error("the Node's podCIDR is unusable ({reason}); keeping {serving}, which this node's pods hold")]
    Malformed { serving: Ipv4Network, reason: String },
    #[error(
        "podCIDR changed from {serving} to {now} (Node recreated or edited): keeping {serving}, which this node's pods \
         hold; drain the node and restart weft-agent to take {now}"
    )]
    Changed { serving: Ipv4Network, now: Ipv4Network },
    #[error(
        "podCIDR {serving} overlaps {theirs} of node {other}, an older Node: that node keeps the range and peers route it \
         there; drain this node and recreate its Node to get a free range"
    )]
    Overlaps { serving: Ipv4Network, other: String, theirs: Ipv4Network },
}

/// `None`: the Node named `own` still has `serving`, and no older Node overlaps it.
pub fn check(own: &str, serving: Ipv4Network, nodes: &[Arc<WatchedNode>]) -> Option<OwnCidrProblem> {
    let age = |n: &WatchedNode| (n.metadata.creation_timestamp.clone().map(|t| t.0), n.metadata.name.clone());
    let Some(me) = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(own)) else {
        return Some(OwnCidrProblem::NodeGone { serving });
    };
    match annotations::pod_cidr(me.as_ref()) {
        Ok(Some(now)) if now != serving => return Some(OwnCidrProblem::Changed { serving, now }),
        Ok(Some(_)) => {}
        Ok(None) => return Some(OwnCidrProblem::Unassigned { serving }),
        Err(reason) => return Some(OwnCidrProblem::Malformed { serving, reason }),
    }
    let mine = age(me);
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(own) && age(n) < mine)
        .filter_map(|n| Some((n, annotations::pod_cidr(n.as_ref()).ok()??)))
        .filter(|(_, theirs)| overlap(*theirs, serving))
        .min_by_key(|(n, _)| age(n))
        .map(|(n, theirs)| OwnCidrProblem::Overlaps { serving, other: n.metadata.name.clone().unwrap_or_default(), theirs })
}

fn overlap(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

impl OwnCidrProblem {
    /// Worth an Event on the Node (a Node that is gone cannot carry one).
    pub fn on_the_node(&self) -> bool {
        !matches!(self, OwnCidrProblem::NodeGone { .. })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::node_object::WatchedSpec;

    fn node(name: &str, cidr: Option<&str>, age: i64) -> Arc<WatchedNode> {
        let mut n = WatchedNode::default();
        n.metadata.name = Some(name.into());
        n.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap()));
        n.spec = Some(WatchedSpec { pod_cidr: cidr.map(String::from), ..Default::default() });
        Arc::new(n)
    }

    fn net(c: &str) -> Ipv4Network {
        c.parse().unwrap()
    }

    #[test]
    fn unchanged_and_unchallenged_is_fine_and_newer_overlaps_are_theirs() {
        let nodes =
            [node("a", Some("10.244.1.0/24"), 5), node("b", Some("10.244.2.0/24"), 1), node("n", Some("10.244.1.0/25"), 9)];
        assert_eq!(check("a", net("10.244.1.0/24"), &nodes), None);
    }

    #[test]
    fn a_changed_gone_or_unusable_pod_cidr_is_reported_keeping_the_served_one() {
        let serving = net("10.244.1.0/24");
        let changed = check("a", serving, &[node("a", Some("10.244.50.0/24"), 0)]);
        assert_eq!(changed, Some(OwnCidrProblem::Changed { serving, now: net("10.244.50.0/24") }));
        let text = changed.unwrap().to_string();
        assert!(text.contains("from 10.244.1.0/24 to 10.244.50.0/24") && text.contains("drain the node"), "{text}");
        assert_eq!(check("a", serving, &[node("b", Some("10.244.2.0/24"), 0)]), Some(OwnCidrProblem::NodeGone { serving }));
        assert_eq!(check("a", serving, &[node("a", None, 0)]), Some(OwnCidrProblem::Unassigned { serving }));
        assert!(matches!(check("a", serving, &[node("a", Some("10.244.1.7/24"), 0)]), Some(OwnCidrProblem::Malformed { .. })));
        assert!(!OwnCidrProblem::NodeGone { serving }.on_the_node());
    }

    #[test]
    fn an_older_node_overlapping_the_served_range_is_reported_oldest_first() {
        let serving = net("10.244.2.0/24");
        let nodes = [
            node("b", Some("10.244.2.0/24"), 10),
            node("young", Some("10.244.2.0/25"), 20),
            node("x", Some("10.244.2.128/25"), 5),
            node("w", Some("10.244.0.0/16"), 3),
            node("v", Some("10.244.3.0/24"), 1),
        ];
        let p = check("b", serving, &nodes);
        assert_eq!(p, Some(OwnCidrProblem::Overlaps { serving, other: "w".into(), theirs: net("10.244.0.0/16") }));
        assert!(p.unwrap().to_string().contains("of node w, an older Node"));
        let p = check("b", serving, &nodes[..3]);
        assert_eq!(p, Some(OwnCidrProblem::Overlaps { serving, other: "x".into(), theirs: net("10.244.2.128/25") }));
        // A change is reported before an overlap: it is the cause.
        let recreated = [node("b", Some("10.244.9.0/24"), 10), node("x", Some("10.244.2.0/24"), 5)];
        assert!(matches!(check("b", serving, &recreated), Some(OwnCidrProblem::Changed { .. })));
    }
}
