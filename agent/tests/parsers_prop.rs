//! Property tests of the parsers of untrusted input (issue 16): Flannel's node
//! annotations, net-conf.json and the static node table. Each never panics on
//! arbitrary input; what a printer writes reads back the same; valid generated input
//! parses to what was generated; invalid input is refused with a reason naming what
//! is wrong.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnetwork::Ipv4Network;
use k8s_openapi::{
    api::core::v1::{Node, NodeSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use proptest::{collection, prelude::*};
use serde_json::{Value, json};
use weft_agent::{
    annotations::{self, Advert, BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP, SUBNET_MANAGER, Skip},
    netconf,
    peers::{self, Mac},
};

// ---------------------------------------------------------------- generators

/// A unicast, non-zero MAC (what a VtepMAC must be).
fn unicast_mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>().prop_filter_map("unicast, not zero", |mut m| {
        m[0] &= 0xfe;
        (m != [0; 6]).then_some(Mac(m))
    })
}

/// A network address with its prefix (host bits clear).
fn network(prefix: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = Ipv4Network> {
    (any::<u32>(), prefix).prop_map(|(a, p)| {
        let mask = if p == 0 { 0 } else { u32::MAX << (32 - u32::from(p)) };
        Ipv4Network::new(Ipv4Addr::from(a & mask), p).unwrap()
    })
}

/// Arbitrary JSON, biased towards the keys the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Network".to_owned()),
        Just("network".to_owned()),
        Just("Backend".to_owned()),
        Just("Type".to_owned()),
        Just("VNI".to_owned()),
        Just("Port".to_owned()),
        Just("MTU".to_owned()),
        Just("GBP".to_owned()),
        Just("EnableIPv4".to_owned()),
        Just("EnableIPv6".to_owned()),
        Just("VtepMAC".to_owned()),
        "[a-zA-Z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!("vxlan")),
        Just(json!("10.244.0.0/16")),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            collection::btree_map(key.clone(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `s` with each ASCII letter's case flipped at random (keys match case-insensitively).
fn recase(s: &str, flips: u64) -> String {
    s.chars().enumerate().map(|(i, c)| if flips >> (i % 64) & 1 == 1 { c.to_ascii_lowercase() } else { c }).collect()
}

fn node(annotations: BTreeMap<String, String>, pod_cidr: Option<String>) -> Node {
    Node {
        metadata: ObjectMeta { name: Some("n".into()), annotations: Some(annotations), ..Default::default() },
        spec: Some(NodeSpec { pod_cidr, ..Default::default() }),
        ..Default::default()
    }
}

/// The annotations a patch sets.
fn annotations_of(patch: &Value) -> BTreeMap<String, String> {
    patch["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

// ---------------------------------------------------------------- net-conf.json

proptest! {
    /// Arbitrary text and arbitrary JSON: an answer, never a panic.
    #[test]
    fn netconf_never_panics(text in ".{0,200}", value in json_value()) {
        let _ = netconf::parse(&text);
        let _ = netconf::parse(&value.to_string());
        // Inside a plausible frame too, so the parser gets past "Network" and "Backend".
        let framed = json!({ "Network": "10.244.0.0/16", "Backend": value });
        let _ = netconf::parse(&framed.to_string());
    }

    /// A valid config, keys in any case, parses to what was generated. (Valid: at most
    /// a /28 without `SubnetLen`, as Flannel's config.go requires.)
    #[test]
    fn netconf_valid_parses_to_what_was_generated(
        net in network(1..=28),
        vni in proptest::option::of(0u32..=0xff_ffff),
        port in proptest::option::of(1u16..=65535),
        mtu in proptest::option::of(576u32..=65535),
        flips in any::<u64>(),
    ) {
        let mut backend = serde_json::Map::new();
        backend.insert(recase("Type", flips), json!(recase("vxlan", flips.rotate_left(7))));
        if let Some(v) = vni { backend.insert(recase("VNI", flips >> 3), json!(v)); }
        if let Some(p) = port { backend.insert(recase("Port", flips >> 5), json!(p)); }
        if let Some(m) = mtu { backend.insert(recase("MTU", flips >> 9), json!(m)); }
        let text = json!({ recase("Network", flips >> 11): net.to_string(), recase("Backend", flips >> 17): backend }).to_string();
        let c = netconf::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(c.network, net);
        prop_assert_eq!(c.vni, vni.unwrap_or(1));
        prop_assert_eq!(c.port, port.unwrap_or(8472));
        prop_assert_eq!(c.mtu, mtu);
        prop_assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    /// Out-of-range numbers, host bits and other backends are refused, naming the key.
    #[test]
    fn netconf_invalid_is_refused_with_the_key(
        net in network(8..=24),
        host in 1u32..=255,
        vni in 0x100_0000u64..=u64::from(u32::MAX),
        mtu in prop_oneof![0u64..576, 65536u64..=1 << 40],
        backend in "[a-z]{2,8}".prop_filter("not vxlan", |b| b != "vxlan"),
        small in network(29..=32),
    ) {
        let ok = |b: Value| json!({ "Network": net.to_string(), "Backend": b }).to_string();
        let refused = |text: String, key: &str| -> Result<(), TestCaseError> {
            match netconf::parse(&text) {
                Ok(c) => Err(TestCaseError::fail(format!("{text} accepted as {c:?}"))),
                Err(e) if e.contains(key) => Ok(()),
                Err(e) => Err(TestCaseError::fail(format!("{text}: reason {e:?} does not name {key}"))),
            }
        };
        refused(ok(json!({ "Type": "vxlan", "VNI": vni })), "VNI")?;
        refused(ok(json!({ "Type": "vxlan", "Port": 0 })), "Port")?;
        refused(ok(json!({ "Type": "vxlan", "MTU": mtu })), "MTU")?;
        refused(ok(json!({ "Type": backend })), "Backend.Type")?;
        refused(json!({ "Network": small.to_string(), "Backend": { "Type": "vxlan" } }).to_string(), "Network")?;
        let with_host = Ipv4Addr::from(u32::from(net.network()) | (host & !u32::from(net.mask())).max(1));
        if with_host != net.network() {
            refused(json!({ "Network": format!("{with_host}/{}", net.prefix()), "Backend": { "Type": "vxlan" } }).to_string(), "host bits")?;
        }
    }
}

// ---------------------------------------------------------------- node table

/// A valid node table: distinct names, underlay addresses and VtepMACs, disjoint pod
/// CIDRs (10.<i>.<j>.0/24), with comments, blank lines and odd spacing.
fn node_table() -> impl Strategy<Value = (Vec<peers::NodeEntry>, String)> {
    collection::vec((unicast_mac(), any::<u16>(), 0usize..4, any::<bool>()), 1..20).prop_map(|rows| {
        let mut entries = Vec::new();
        let mut text = String::new();
        let mut macs = std::collections::BTreeSet::new();
        for (i, (mac, salt, space, comment)) in rows.into_iter().enumerate() {
            if !macs.insert(mac) {
                continue;
            }
            let e = peers::NodeEntry {
                name: format!("node-{i}-{salt}"),
                underlay_ip: Ipv4Addr::new(192, 0, (i / 250) as u8 + 2, (i % 250) as u8 + 1),
                pod_cidr: Ipv4Network::new(Ipv4Addr::new(10, (salt >> 8) as u8 % 8 + 8 * (i as u8 % 30), salt as u8, 0), 24)
                    .unwrap(),
                vtep_mac: mac,
            };
            if entries.iter().any(|o: &peers::NodeEntry| o.pod_cidr.overlaps(e.pod_cidr)) {
                continue;
            }
            let sep = [" ", "\t", "   ", " \t "][space];
            if comment {
                text += "# a comment line\n\n";
            }
            text += &format!(
                "{sep}{}{sep}{}{sep}{}{sep}{}{}\n",
                e.name,
                e.underlay_ip,
                e.pod_cidr,
                e.vtep_mac,
                if comment { " # trailing" } else { "" }
            );
            entries.push(e);
        }
        (entries, text)
    })
}

proptest! {
    /// Arbitrary text: a table or a line-numbered reason, never a panic; the line
    /// named is one of the text's.
    #[test]
    fn node_table_never_panics(text in "([ -~\t]{0,60}\n){0,8}", lines in collection::vec("[a-z0-9.:/# ]{0,40}", 0..8)) {
        for t in [text, lines.join("\n")] {
            if let Err((line, reason)) = peers::parse(&t) {
                prop_assert!(line >= 1 && line <= t.lines().count(), "line {} of {:?}", line, t);
                prop_assert!(!reason.is_empty());
            }
        }
    }

    /// A valid table parses to what was generated, in file order.
    #[test]
    fn node_table_valid_parses_to_what_was_generated((entries, text) in node_table()) {
        let t = peers::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
        prop_assert_eq!(t.nodes, entries);
    }

    /// A second line reusing a node's name, address or VtepMAC is refused on that line.
    #[test]
    fn node_table_duplicates_are_refused_on_their_line((entries, text) in node_table(), which in 0usize..3) {
        let first = &entries[0];
        let dup = match which {
            0 => format!("{} 198.51.100.1 172.16.0.0/24 02:00:00:00:00:01", first.name),
            1 => format!("dup {} 172.16.0.0/24 02:00:00:00:00:01", first.underlay_ip),
            _ => format!("dup 198.51.100.1 172.16.0.0/24 {}", first.vtep_mac),
        };
        let t = format!("{text}{dup}\n");
        // The duplicate MAC could collide with a generated one only through 02:00:…:01.
        prop_assume!(entries.iter().all(|e| e.vtep_mac.to_string() != "02:00:00:00:00:01"));
        let err = peers::parse(&t).expect_err("a duplicate is refused");
        prop_assert_eq!(err.0, t.lines().count(), "{:?}", err);
    }

    /// A VtepMAC prints and reads back as itself.
    #[test]
    fn mac_round_trips(mac in unicast_mac()) {
        prop_assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
    }
}

// ---------------------------------------------------------------- annotations

proptest! {
    /// Arbitrary annotation values (and podCIDRs): an answer, never a panic.
    #[test]
    fn annotations_never_panic(
        backend_type in prop_oneof![Just("vxlan".to_owned()), ".{0,10}"],
        data in prop_oneof![json_value().prop_map(|v| v.to_string()), ".{0,40}"],
        ip in prop_oneof![any::<Ipv4Addr>().prop_map(|a| a.to_string()), ".{0,20}"],
        cidr in prop_oneof![network(0..=32).prop_map(|n| n.to_string()), "[0-9./:a-f]{0,24}"],
        vni in any::<u32>(),
    ) {
        let a = BTreeMap::from([
            (BACKEND_TYPE.to_owned(), backend_type),
            (BACKEND_DATA.to_owned(), data),
            (PUBLIC_IP.to_owned(), ip.clone()),
            (SUBNET_MANAGER.to_owned(), "true".to_owned()),
            (annotations::PUBLIC_IP_OVERWRITE.to_owned(), ip),
        ]);
        let n = node(a, Some(cidr));
        let _ = annotations::parse_peer(&n, vni);
        let _ = annotations::own_vtep_mac(&n);
        let _ = annotations::pod_cidr(&n);
        let _ = annotations::public_ip_overwrite(&n, "10.244.0.0/16".parse().unwrap());
    }

    /// What this node advertises (`advert_patch`) is what its peers read back.
    #[test]
    fn advert_round_trips(ip in any::<Ipv4Addr>(), vni in 0u32..=0xff_ffff, mac in unicast_mac()) {
        let advert = Advert { public_ip: ip, vni, vtep_mac: mac };
        let n = node(annotations_of(&annotations::advert_patch(&advert)), None);
        prop_assert_eq!(annotations::parse_peer(&n, vni), Ok(advert));
        prop_assert_eq!(annotations::own_vtep_mac(&n), Some(mac));
    }

    /// Another VNI, a bad VtepMAC or public-ip: refused as malformed, naming it.
    #[test]
    fn advert_invalid_is_refused_with_a_reason(
        ip in any::<Ipv4Addr>(),
        vni in 0u32..=0xff_ffff,
        other in 0u32..=0xff_ffff,
        mac in "[0-9a-z:]{0,20}",
        bad_ip in "[0-9a-z.]{0,20}",
    ) {
        let with = |data: Value, public_ip: &str| {
            let advert = Advert { public_ip: ip, vni, vtep_mac: Mac([2, 0, 0, 0, 0, 1]) };
            let mut a = annotations_of(&annotations::advert_patch(&advert));
            a.insert(BACKEND_DATA.to_owned(), data.to_string());
            a.insert(PUBLIC_IP.to_owned(), public_ip.to_owned());
            annotations::parse_peer(&node(a, None), vni)
        };
        let malformed = |r: Result<Advert, Skip>, what: &str| match r {
            Err(Skip::Malformed(why)) if why.contains(what) => Ok(()),
            other => Err(TestCaseError::fail(format!("expected a malformed {what}, got {other:?}"))),
        };
        if other != vni {
            malformed(with(json!({ "VNI": other, "VtepMAC": "02:00:00:00:00:01" }), &ip.to_string()), "VNI")?;
        }
        if mac.parse::<Mac>().is_err() {
            malformed(with(json!({ "VNI": vni, "VtepMAC": mac }), &ip.to_string()), "MAC")?;
        }
        if bad_ip.parse::<Ipv4Addr>().is_err() {
            malformed(with(json!({ "VNI": vni, "VtepMAC": "02:00:00:00:00:01" }), &bad_ip), "public-ip")?;
        }
    }

    /// A podCIDR reads back as the network it names; one with host bits is refused.
    #[test]
    fn pod_cidr_round_trips(net in network(0..=32), host in 1u32..) {
        let n = node(BTreeMap::new(), Some(net.to_string()));
        prop_assert_eq!(annotations::pod_cidr(&n), Ok(Some(net)));
        let with_host = Ipv4Addr::from(u32::from(net.network()) | (host & !u32::from(net.mask())));
        if with_host != net.network() {
            let n = node(BTreeMap::new(), Some(format!("{with_host}/{}", net.prefix())));
            let err = annotations::pod_cidr(&n).expect_err("host bits are refused");
            prop_assert!(err.contains("host bits"), "{}", err);
        }
    }
}
