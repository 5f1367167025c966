//! What flanneld makes of a Node, for the Flannel nodes the harness emulates: the
//! kube subnet manager's `nodeToLease` (pkg/subnet/kube/kube.go), then the vxlan
//! backend's `handleSubnetEvents` (pkg/backend/vxlan/vxlan_network.go). A Node either
//! is no lease at all (flanneld ignores it silently), a lease flanneld programs, or one
//! it rejects with a log line and skips, leaving every other node alone:
//! - `public-ip` must parse as Go's `ip.ParseIP4` parses it (IPv4, or IPv4-mapped IPv6):
//!   else "Error turning node to lease: invalid IP address format";
//! - the podCIDR as Go's `net.ParseCIDR` (from `podCIDRs` when set, its IPv4 entry);
//! - `backend-type` must be vxlan ("ignoring non-vxlan");
//! - `backend-data` must decode into `{VNI uint32, VtepMAC hardwareAddr}`, the MAC
//!   through Go's `net.ParseMAC`: else "error decoding subnet lease JSON";
//! - a MAC `net.ParseMAC` accepts but `flannel.1` cannot take (EUI-64, InfiniBand's 20
//!   bytes) or none at all fails at flanneld's `AddARP`, which also skips the node.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::Ipv4Network;
use serde_json::Value;

const P: &str = "flannel.alpha.coreos.com";

/// A node's lease as flanneld programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub public_ip: Ipv4Addr,
    /// Lower-case, colon-separated (Go's `HardwareAddr.String()`).
    pub vtep_mac: String,
    pub pod_cidr: Ipv4Network,
}

/// A lease flanneld skips: why (its log line), and the podCIDR if it had one (flanneld
/// keeps what it programmed for a node whose update it rejects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub why: String,
    pub pod_cidr: Option<Ipv4Network>,
}

/// `None`: not a kube-subnet-manager lease (flanneld ignores the Node silently).
pub fn lease(node: &Value) -> Option<Result<Lease, Rejected>> {
    let a = &node["metadata"]["annotations"];
    if a[format!("{P}/kube-subnet-manager")] != "true" {
        return None;
    }
    let reject = |why: String, pod_cidr: Option<Ipv4Network>| Some(Err(Rejected { why, pod_cidr }));
    let public_ip = match parse_ip4(a[format!("{P}/public-ip")].as_str().unwrap_or_default()) {
        Ok(ip) => ip,
        Err(e) => return reject(format!("Error turning node to lease: {e}"), None),
    };
    let pod_cidr = match pod_cidr(&node["spec"]) {
        Ok(c) => c,
        Err(e) => return reject(format!("Error turning node to lease: {e}"), None),
    };
    let backend = a[format!("{P}/backend-type")].as_str().unwrap_or_default();
    if backend != "vxlan" {
        return reject(format!("ignoring non-vxlan v4Subnet({pod_cidr}): type={backend}"), Some(pod_cidr));
    }
    let data = a[format!("{P}/backend-data")].as_str().unwrap_or_default();
    let vtep_mac = match vxlan_attrs(data) {
        Ok(Some(mac)) if mac.len() == 6 => mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        Ok(_) => return reject(format!("AddARP failed: no 6-byte VtepMAC in {data}"), Some(pod_cidr)),
        Err(e) => return reject(format!("error decoding subnet lease JSON: {e}"), Some(pod_cidr)),
    };
    Some(Ok(Lease { public_ip, vtep_mac, pod_cidr }))
}

/// Go's `ip.ParseIP4`: `net.ParseIP`, then `To4`.
fn parse_ip4(s: &str) -> Result<Ipv4Addr, &'static str> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(ip)) => ip.to_ipv4_mapped().ok_or("invalid IPv4 address format"),
        Err(_) => Err("invalid IP address format"),
    }
}

/// The IPv4 podCIDR as `nodeToLease` finds it, masked as `net.ParseCIDR` returns it.
fn pod_cidr(spec: &Value) -> Result<Ipv4Network, String> {
    let parse = |s: &str| -> Result<Option<Ipv4Network>, String> {
        match s.parse::<ipnetwork::IpNetwork>() {
            Ok(ipnetwork::IpNetwork::V4(n)) => Ok(Some(Ipv4Network::new(n.network(), n.prefix()).map_err(|e| e.to_string())?)),
            Ok(ipnetwork::IpNetwork::V6(_)) => Ok(None),
            Err(_) => Err(format!("invalid CIDR address: {s}")),
        }
    };
    let cidrs: Vec<&str> = spec["podCIDRs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let found = match cidrs.len() {
        0 => parse(spec["podCIDR"].as_str().unwrap_or_default())?,
        1 | 2 => {
            let mut v4 = None;
            for c in cidrs {
                if let Some(n) = parse(c)? {
                    v4 = Some(n);
                    break;
                }
            }
            v4
        }
        _ => return Err("pod cidrs should be IPv4/IPv6 only or dualstack".into()),
    };
    found.ok_or_else(|| "missing IPv4 address on n.Spec.PodCIDRs".into())
}

/// `json.Unmarshal` of backend-data into flanneld's `vxlanLeaseAttrs`: the VtepMAC's
/// bytes (None when absent), or the decoding error.
fn vxlan_attrs(data: &str) -> Result<Option<Vec<u8>>, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let obj = match v {
        // Unmarshalling null into a struct leaves it zero.
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        other => return Err(format!("cannot unmarshal {other} into vxlanLeaseAttrs")),
    };
    // Go matches field names case-insensitively.
    let field = |name: &str| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    match field("VNI") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {}
        Some(other) => return Err(format!("cannot unmarshal {other} into Go struct field VNI of type uint32")),
    }
    match field("VtepMAC") {
        None => Ok(None),
        // hardwareAddr's UnmarshalJSON accepts only a quoted string (it sees null too).
        Some(Value::String(s)) => parse_mac(s).map(Some),
        Some(_) => Err("error parsing hardware addr".into()),
    }
}

/// Go's `net.ParseMAC`: EUI-48, EUI-64 or 20-byte InfiniBand addresses, as
/// `xx:xx:…`, `xx-xx-…` or `xxxx.xxxx.…`.
pub fn parse_mac(s: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("address {s}: invalid MAC address");
    let b = s.as_bytes();
    if b.len() < 14 {
        return Err(invalid());
    }
    let (group, sep) = match (b[2], b[4]) {
        (b':' | b'-', _) => (2, b[2]),
        (_, b'.') => (4, b'.'),
        _ => return Err(invalid()),
    };
    if !(b.len() + 1).is_multiple_of(group + 1) {
        return Err(invalid());
    }
    let groups: Vec<&str> = s.split(sep as char).collect();
    let n = groups.len() * group / 2;
    if ![6, 8, 20].contains(&n) || groups.iter().any(|g| g.len() != group || !g.bytes().all(|c| c.is_ascii_hexdigit())) {
        return Err(invalid());
    }
    let hex = groups.concat();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| invalid())).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(public_ip: &str, data: &str, spec: Value) -> Value {
        json!({
            "metadata": { "annotations": {
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/public-ip": public_ip,
                "flannel.alpha.coreos.com/backend-data": data,
            }},
            "spec": spec,
        })
    }

    fn cidr(c: &str) -> Value {
        json!({ "podCIDR": c, "podCIDRs": [c] })
    }

    #[test]
    fn a_lease_flanneld_accepts_is_programmed_normalised() {
        let l = lease(&node("198.19.0.11", r#"{"VNI":1,"VtepMAC":"0A-58-0A-F4-02-00"}"#, cidr("10.244.2.0/24")));
        let want = Lease {
            public_ip: "198.19.0.11".parse().unwrap(),
            vtep_mac: "0a:58:0a:f4:02:00".into(),
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
        };
        assert_eq!(l, Some(Ok(want.clone())));
        // IPv4-mapped public-ip (Go's To4), dotted MAC, host bits in the podCIDR (masked),
        // dual stack with IPv6 first.
        let spec = json!({ "podCIDR": "fd00::/64", "podCIDRs": ["fd00::/64", "10.244.2.7/24"] });
        let l = lease(&node("::ffff:198.19.0.11", r#"{"vni":1,"vtepmac":"0a58.0af4.0200"}"#, spec));
        assert_eq!(l, Some(Ok(want)));
    }

    #[test]
    fn leases_flanneld_rejects_say_why() {
        let c = || cidr("10.244.2.0/24");
        let cases = [
            ("198.19.0.11", r#"{"VNI":1,"VtepMAC":"zz"}"#, c(), "error decoding subnet lease JSON: address zz: invalid MAC"),
            ("198.19.0.11", r#"{"VNI":1,"VtepMAC":"zz:58:0a:f4:02:00"}"#, c(), "error decoding subnet lease JSON"),
            ("198.19.0.11", r#"{"VNI":1,"VtepMAC":null}"#, c(), "error parsing hardware addr"),
            ("198.19.0.11", r#"{"VNI":-1,"VtepMAC":"0a:58:0a:f4:02:00"}"#, c(), "field VNI"),
            ("198.19.0.11", "not json", c(), "error decoding subnet lease JSON"),
            ("198.19.0.11", r#"{"VNI":1}"#, c(), "AddARP failed"),
            ("198.19.0.11", r#"{"VNI":1,"VtepMAC":"00:00:00:00:fe:80:00:00"}"#, c(), "AddARP failed"),
            ("198.19.0.300", r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}"#, c(), "invalid IP address format"),
            ("fd00::1", r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}"#, c(), "invalid IPv4 address format"),
            ("198.19.0.11", r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}"#, json!({}), "invalid CIDR address"),
            ("198.19.0.11", r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}"#, cidr("fd00::/64"), "missing IPv4"),
        ];
        for (ip, data, spec, why) in cases {
            match lease(&node(ip, data, spec)) {
                Some(Err(r)) => assert!(r.why.contains(why), "{ip} {data}: {} lacks {why:?}", r.why),
                other => panic!("{ip} {data}: {other:?}"),
            }
        }
        let mut host_gw = node("198.19.0.11", "{}", c());
        host_gw["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-type"] = json!("host-gw");
        let r = lease(&host_gw).unwrap().unwrap_err();
        assert!(r.why.contains("ignoring non-vxlan") && r.pod_cidr == Some("10.244.2.0/24".parse().unwrap()), "{r:?}");
        let mut unmanaged = node("198.19.0.11", "{}", c());
        unmanaged["metadata"]["annotations"] = json!({});
        assert_eq!(lease(&unmanaged), None, "not a kube-subnet-manager lease: ignored silently");
    }

    #[test]
    fn parse_mac_takes_what_gos_takes() {
        for ok in ["0a:58:0a:f4:02:00", "0A-58-0A-F4-02-00", "0a58.0af4.0200", "02:00:5e:10:00:00:00:01"] {
            assert!(parse_mac(ok).is_ok(), "{ok}");
        }
        for bad in ["zz", "0a:58:0a:f4:02", "0a:58:0a:f4:02:0", "0a:58-0a:f4:02:00", "0a:58:0a:f4:02:00:11", "0a580af40200"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
