//! Flannel's node annotations: how a node says "reach my pods through me", and how
//! weft reads every other node's.
//!
//! A vxlan node carries `flannel.alpha.coreos.com/backend-type: vxlan`,
//! `backend-data: {"VNI":1,"VtepMAC":"…"}`, `public-ip` and
//! `kube-subnet-manager: "true"`; `public-ip-overwrite`, set by an operator,
//! replaces the node's own detected address.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnetwork::Ipv4Network;
use serde_json::{Value, json};

use crate::{node_object::NodeFields, peers::Mac};

pub const PREFIX: &str = "flannel.alpha.coreos.com";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const PUBLIC_IP_OVERWRITE: &str = "flannel.alpha.coreos.com/public-ip-overwrite";
pub const SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// What a node advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub public_ip: Ipv4Addr,
    pub vni: u32,
    pub vtep_mac: Mac,
}

/// Why a node is not (yet) a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No annotations yet, another backend, or not managed through the API server:
    /// normal for a node that is still joining; not worth a warning.
    NotVxlan(String),
    /// Annotated for vxlan but unusable: warn once.
    Malformed(String),
}

impl Skip {
    /// Every [`Skip::label`].
    pub const LABELS: [&'static str; 2] = ["not_vxlan", "invalid"];

    /// The reason as a metric label: `not_vxlan` (not a peer yet, or not one of ours),
    /// `invalid` (annotated for vxlan but unusable: bad annotations or podCIDR).
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NotVxlan(_) => "not_vxlan",
            Skip::Malformed(_) => "invalid",
        }
    }
}

/// The node's annotations, borrowed (an empty map when it has none).
fn annotations(node: &impl NodeFields) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    node.meta().annotations.as_ref().unwrap_or(&NONE)
}

/// The VtepMAC this node advertised before (reused on restart so peers stay valid).
pub fn own_vtep_mac(node: &impl NodeFields) -> Option<Mac> {
    let data = annotations(node).get(BACKEND_DATA)?;
    let v: Value = serde_json::from_str(data).ok()?;
    v.get("VtepMAC")?.as_str()?.parse().ok()
}

/// The operator's override of this node's public address, if usable (see
/// [`unusable_address`]; `network` is the cluster network).
pub fn public_ip_overwrite(node: &impl NodeFields, network: Ipv4Network) -> Result<Option<Ipv4Addr>, String> {
    match annotations(node).get(PUBLIC_IP_OVERWRITE) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| format!("{PUBLIC_IP_OVERWRITE}: {s:?} is not an IPv4 address"))?;
            match unusable_address(ip, network) {
                Some(why) => Err(format!("{PUBLIC_IP_OVERWRITE}: {ip} {why}")),
                None => Ok(Some(ip)),
            }
        }
    }
}

/// Why `ip` cannot be a node's underlay (tunnel) address, or `None` if it can: it
/// must be unicast IPv4 that packets can be sent to across the underlay, by kubelet's
/// rules for a node IP (no unspecified, loopback, link-local or multicast address) plus
/// the limited broadcast, and outside the cluster network, whose addresses are pods'
/// (a tunnel to one would be routed back into the overlay). Link-local is refused
/// though two nodes on one link could use it: it is never routed off the link, and
/// 169.254.169.254 is the cloud metadata server, where a forged annotation would
/// send a node's tunnel. Class E (240/4) is allowed: some clouds number nodes there.
pub fn unusable_address(ip: Ipv4Addr, network: Ipv4Network) -> Option<String> {
    let why = if ip.is_unspecified() || ip.octets()[0] == 0 {
        "is in 0.0.0.0/8 (\"this host\"), not an address to send to".to_owned()
    } else if ip.is_loopback() {
        "is a loopback address".to_owned()
    } else if ip.is_link_local() {
        "is link-local (169.254.0.0/16: not routed off its link)".to_owned()
    } else if ip.is_multicast() {
        "is a multicast address".to_owned()
    } else if ip.is_broadcast() {
        "is the broadcast address".to_owned()
    } else if network.contains(ip) {
        format!("lies inside the cluster network {network} (pods' addresses)")
    } else {
        return None;
    };
    Some(why)
}

/// Reads a peer's advertisement; `vni` is ours (a different VNI cannot talk to us).
pub fn parse_peer(node: &impl NodeFields, vni: u32) -> Result<Advert, Skip> {
    let a = annotations(node);
    match a.get(BACKEND_TYPE).map(String::as_str) {
        Some("vxlan") => {}
        Some(other) => return Err(Skip::NotVxlan(format!("backend-type {other:?}"))),
        None => return Err(Skip::NotVxlan("no flannel annotations yet".into())),
    }
    if a.get(SUBNET_MANAGER).map(String::as_str) != Some("true") {
        return Err(Skip::NotVxlan(format!("{SUBNET_MANAGER} is not \"true\"")));
    }
    let data = a.get(BACKEND_DATA).ok_or_else(|| Skip::Malformed(format!("{BACKEND_DATA} is missing")))?;
    let v: Value = serde_json::from_str(data).map_err(|e| Skip::Malformed(format!("{BACKEND_DATA}: not JSON ({e})")))?;
    let peer_vni =
        v.get("VNI").and_then(Value::as_u64).ok_or_else(|| Skip::Malformed(format!("{BACKEND_DATA}: no integer VNI")))?;
    if peer_vni != u64::from(vni) {
        return Err(Skip::Malformed(format!("{BACKEND_DATA}: VNI {peer_vni}, this cluster uses {vni}")));
    }
    let mac = v.get("VtepMAC").and_then(Value::as_str).ok_or_else(|| Skip::Malformed(format!("{BACKEND_DATA}: no VtepMAC")))?;
    let vtep_mac: Mac = mac.parse().map_err(|e| Skip::Malformed(format!("{BACKEND_DATA}: {e}")))?;
    let ip = a.get(PUBLIC_IP).ok_or_else(|| Skip::Malformed(format!("{PUBLIC_IP} is missing")))?;
    let public_ip: Ipv4Addr = ip.parse().map_err(|_| Skip::Malformed(format!("{PUBLIC_IP}: {ip:?} is not an IPv4 address")))?;
    Ok(Advert { public_ip, vni: peer_vni as u32, vtep_mac })
}

/// The node's IPv4 pod CIDR (`spec.podCIDRs`, else `spec.podCIDR`); `Ok(None)` while unassigned.
pub fn pod_cidr(node: &impl NodeFields) -> Result<Option<Ipv4Network>, String> {
    let cidrs: Vec<&str> = match node.pod_cidrs() {
        [] => node.pod_cidr().filter(|c| !c.is_empty()).into_iter().collect(),
        many => many.iter().map(String::as_str).collect(),
    };
    for c in cidrs {
        if c.contains(':') {
            continue; // IPv6: not yet
        }
        let net: Ipv4Network = c.parse().map_err(|_| format!("podCIDR {c:?} is not a CIDR"))?;
        if net.network() != net.ip() {
            return Err(format!("podCIDR {c} has host bits set"));
        }
        return Ok(Some(net));
    }
    Ok(None)
}

/// The node's InternalIP as the kubelet reports it.
pub fn internal_ip(node: &impl NodeFields) -> Option<Ipv4Addr> {
    node.addresses().iter().find(|a| a.type_ == "InternalIP").and_then(|a| a.address.parse().ok())
}

/// Whether the node's `NetworkUnavailable` condition is `False`.
pub fn network_available(node: &impl NodeFields) -> bool {
    node.conditions().iter().any(|c| c.type_ == "NetworkUnavailable" && c.status == "False")
}

/// The metadata patch that advertises this node, in Flannel's format.
pub fn advert_patch(advert: &Advert) -> Value {
    json!({
        "metadata": {
            "annotations": {
                BACKEND_TYPE: "vxlan",
                BACKEND_DATA: json!({ "VNI": advert.vni, "VtepMAC": advert.vtep_mac.to_string() }).to_string(),
                PUBLIC_IP: advert.public_ip.to_string(),
                SUBNET_MANAGER: "true",
            }
        }
    })
}

/// The status patch that clears `NetworkUnavailable` once the dataplane is up.
pub fn network_available_patch(now: &str) -> Value {
    json!({
        "status": {
            "conditions": [{
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": "WeftIsUp",
                "message": "weft is running on this node",
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_skip_label_is_listed() {
        for skip in [Skip::NotVxlan(String::new()), Skip::Malformed(String::new())] {
            assert!(Skip::LABELS.contains(&skip.label()), "{skip:?}");
        }
    }

    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(annotations: &[(&str, &str)], cidr: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec { pod_cidr: cidr.map(Into::into), ..Default::default() });
        n
    }

    const GOOD: [(&str, &str); 4] = [
        (BACKEND_TYPE, "vxlan"),
        (BACKEND_DATA, r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}"#),
        (PUBLIC_IP, "198.19.0.11"),
        (SUBNET_MANAGER, "true"),
    ];

    fn with(key: &str, value: Option<&str>) -> Node {
        let mut a: Vec<(&str, &str)> = GOOD.iter().copied().filter(|(k, _)| *k != key).collect();
        if let Some(v) = value {
            a.push((key, v));
        }
        node(&a, Some("10.244.2.0/24"))
    }

    #[test]
    fn reads_a_flannel_vxlan_node() {
        let a = parse_peer(&node(&GOOD, Some("10.244.2.0/24")), 1).unwrap();
        assert_eq!(a.public_ip, Ipv4Addr::new(198, 19, 0, 11));
        assert_eq!(a.vtep_mac.to_string(), "0a:58:0a:f4:02:00");
        assert_eq!(own_vtep_mac(&node(&GOOD, None)).unwrap().to_string(), "0a:58:0a:f4:02:00");
    }

    #[test]
    fn skips_nodes_that_are_not_vxlan_peers_quietly() {
        assert!(matches!(parse_peer(&node(&[], None), 1), Err(Skip::NotVxlan(_))));
        assert!(matches!(parse_peer(&with(BACKEND_TYPE, Some("host-gw")), 1), Err(Skip::NotVxlan(_))));
        assert!(matches!(parse_peer(&with(SUBNET_MANAGER, None), 1), Err(Skip::NotVxlan(_))));
        assert!(matches!(parse_peer(&with(SUBNET_MANAGER, Some("false")), 1), Err(Skip::NotVxlan(_))));
    }

    #[test]
    fn reports_malformed_annotations() {
        let cases = [
            (with(BACKEND_DATA, None), "is missing"),
            (with(BACKEND_DATA, Some("{not json")), "not JSON"),
            (with(BACKEND_DATA, Some(r#"{"VtepMAC":"0a:58:0a:f4:02:00"}"#)), "no integer VNI"),
            (with(BACKEND_DATA, Some(r#"{"VNI":2,"VtepMAC":"0a:58:0a:f4:02:00"}"#)), "VNI 2, this cluster uses 1"),
            (with(BACKEND_DATA, Some(r#"{"VNI":1}"#)), "no VtepMAC"),
            (with(BACKEND_DATA, Some(r#"{"VNI":1,"VtepMAC":"zz:58:0a:f4:02:00"}"#)), "is not hex"),
            (with(BACKEND_DATA, Some(r#"{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}"#)), "multicast"),
            (with(PUBLIC_IP, None), "public-ip is missing"),
            (with(PUBLIC_IP, Some("fe80::1")), "not an IPv4 address"),
        ];
        for (n, reason) in cases {
            match parse_peer(&n, 1) {
                Err(Skip::Malformed(m)) => assert!(m.contains(reason), "{m} lacks {reason}"),
                other => panic!("expected Malformed({reason}), got {other:?}"),
            }
        }
    }

    #[test]
    fn unusable_addresses_are_named_and_usable_ones_pass() {
        let network: Ipv4Network = "10.244.0.0/16".parse().unwrap();
        let cases = [
            ("0.0.0.0", "0.0.0.0/8"),
            ("0.1.2.3", "0.0.0.0/8"),
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("10.244.3.7", "inside the cluster network 10.244.0.0/16"),
            ("10.244.0.0", "inside the cluster network"),
        ];
        for (ip, why) in cases {
            let said = unusable_address(ip.parse().unwrap(), network);
            assert!(said.as_deref().is_some_and(|s| s.contains(why)), "{ip}: {said:?} lacks {why}");
        }
        for ip in ["198.19.0.11", "10.0.0.1", "10.245.0.1", "192.168.1.1", "240.0.0.1", "100.64.0.1"] {
            assert_eq!(unusable_address(ip.parse().unwrap(), network), None, "{ip}");
        }
    }

    #[test]
    fn an_unusable_public_ip_overwrite_is_an_error_naming_it() {
        let network: Ipv4Network = "10.244.0.0/16".parse().unwrap();
        let n = |v: &str| node(&[(PUBLIC_IP_OVERWRITE, v)], None);
        assert_eq!(public_ip_overwrite(&n("192.0.2.9"), network), Ok(Some(Ipv4Addr::new(192, 0, 2, 9))));
        assert_eq!(public_ip_overwrite(&n(""), network), Ok(None));
        let e = public_ip_overwrite(&n("127.0.0.1"), network).unwrap_err();
        assert!(e.contains(PUBLIC_IP_OVERWRITE) && e.contains("127.0.0.1 is a loopback address"), "{e}");
        let e = public_ip_overwrite(&n("10.244.9.9"), network).unwrap_err();
        assert!(e.contains("inside the cluster network"), "{e}");
    }

    #[test]
    fn pod_cidr_prefers_the_ipv4_of_pod_cidrs() {
        let mut n = node(&[], Some("10.244.1.0/24"));
        assert_eq!(pod_cidr(&n).unwrap(), Some("10.244.1.0/24".parse().unwrap()));
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["fd00:1::/64".into(), "10.244.7.0/24".into()]);
        assert_eq!(pod_cidr(&n).unwrap(), Some("10.244.7.0/24".parse().unwrap()));
        assert_eq!(pod_cidr(&node(&[], None)).unwrap(), None);
        assert_eq!(pod_cidr(&node(&[], Some(""))).unwrap(), None);
        assert!(pod_cidr(&node(&[], Some("10.244.1.9/24"))).unwrap_err().contains("host bits"));
        assert!(pod_cidr(&node(&[], Some("banana"))).unwrap_err().contains("not a CIDR"));
    }

    #[test]
    fn advert_patch_is_flannels_format() {
        let a = Advert { public_ip: Ipv4Addr::new(198, 19, 0, 10), vni: 1, vtep_mac: "0a:58:0a:f4:01:00".parse().unwrap() };
        let p = advert_patch(&a);
        let ann = &p["metadata"]["annotations"];
        assert_eq!(ann[BACKEND_TYPE], "vxlan");
        assert_eq!(ann[BACKEND_DATA], r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}"#);
        assert_eq!(ann[PUBLIC_IP], "198.19.0.10");
        assert_eq!(ann[SUBNET_MANAGER], "true");
        // What weft writes, weft (and so Flannel's parser, same format) reads back.
        let mut n = node(&[], Some("10.244.1.0/24"));
        n.metadata.annotations =
            Some(ann.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect());
        assert_eq!(parse_peer(&n, 1).unwrap(), a);
    }
}
