//! Flannel's network configuration (`net-conf.json`, from the kube-flannel ConfigMap),
//! read as Flannel reads it. Every key Flannel documents is used (`Network`,
//! `Backend.Type`, `Backend.VNI`, `Backend.Port`, `Backend.MTU`), accepted with a
//! warning saying why it has no effect here, or refused with the reason; unknown keys
//! are warned about, not fatal, so an existing Flannel ConfigMap works unchanged.
//! Keys match case-insensitively, as Go's `encoding/json` matches them for Flannel.
//! `SubnetLen`, `SubnetMin` and `SubnetMax` are read and checked as Flannel's
//! `pkg/subnet/config.go` does; only the allocator (`allocate-node-cidrs`) uses
//! them: an agent takes its subnet from its Node's podCIDR.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnetwork::Ipv4Network;
use serde_json::Value;
use thiserror::Error;
use weft_common::wire::{DEFAULT_PORT, DEFAULT_VNI};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConf {
    /// The cluster's pod network: every node's podCIDR must lie inside it.
    pub network: Ipv4Network,
    pub vni: u32,
    pub port: u16,
    /// Tunnel MTU override (`Backend.MTU`); default: uplink MTU − 50.
    pub mtu: Option<u32>,
    /// How `Network` is cut into node subnets (what the allocator hands out).
    pub subnets: Subnets,
    /// One line per key that has no effect here, and why (for the log).
    pub warnings: Vec<String>,
}

/// `SubnetLen`, `SubnetMin`, `SubnetMax` with Flannel's defaults applied: node
/// subnets are the `/len` blocks of `Network` from `min` to `max`, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnets {
    pub len: u8,
    /// The first block (its network address).
    pub min: Ipv4Addr,
    /// The last block (its network address).
    pub max: Ipv4Addr,
}

impl Subnets {
    /// Flannel's rules: a `SubnetLen` of at most 30 that fits four times in
    /// `Network`; by default 24 when `Network` is a /22 or larger, else
    /// `Network`'s length + 2 (a /28 at the smallest); `SubnetMin` defaults to the
    /// second block (the first holds the network's own address), `SubnetMax` to
    /// the last; both inside `Network` and on a block boundary.
    pub fn new(network: Ipv4Network, len: Option<u8>, min: Option<Ipv4Addr>, max: Option<Ipv4Addr>) -> Result<Subnets, String> {
        let prefix = network.prefix();
        let len = match len {
            Some(l) if l > 30 => return Err("\"SubnetLen\" must be less than /31".into()),
            Some(l) if l < prefix + 2 => {
                return Err(format!("\"SubnetLen\": {network} must be able to accommodate at least four /{l} subnets"));
            }
            Some(l) => l,
            None if prefix > 28 => return Err(format!("\"Network\": {network} is too small; the minimum useful prefix is /28")),
            None if prefix <= 22 => 24,
            None => prefix + 2,
        };
        let size = 1u32 << (32 - len);
        let base = u32::from(network.network());
        let last = base + ((1u64 << (32 - prefix)) as u32).wrapping_sub(size);
        let mask = u32::MAX << (32 - len);
        let check = |key: &str, a: Ipv4Addr| {
            if !network.contains(a) {
                Err(format!("\"{key}\": {a} is not in the range of the Network {network}"))
            } else if u32::from(a) & mask != u32::from(a) {
                Err(format!("\"{key}\": {a} is not on a SubnetLen (/{len}) boundary"))
            } else {
                Ok(a)
            }
        };
        let min = min.map_or(Ok(Ipv4Addr::from(base + size)), |a| check("SubnetMin", a))?;
        let max = max.map_or(Ok(Ipv4Addr::from(last)), |a| check("SubnetMax", a))?;
        Ok(Subnets { len, min, max })
    }
}

#[derive(Debug, Error)]
pub enum NetConfError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Top-level keys Flannel documents; anything else is warned about as unknown.
const KNOWN_TOP: &[&str] = &[
    "Network",
    "Backend",
    "EnableIPv4",
    "EnableIPv6",
    "IPv6Network",
    "SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "IPv6SubnetLen",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
    "EnableNFTables",
];

/// vxlan backend keys Flannel documents.
const KNOWN_VXLAN: &[&str] = &["Type", "VNI", "Port", "MTU", "GBP", "DirectRouting", "Learning", "MacPrefix", "Name"];

/// `obj` with its keys spelled as in `known` when they match case-insensitively.
fn canonical(obj: &serde_json::Map<String, Value>, known: &[&str]) -> serde_json::Map<String, Value> {
    obj.iter()
        .map(|(k, v)| {
            let key = known.iter().find(|n| n.eq_ignore_ascii_case(k)).map_or_else(|| k.clone(), |n| (*n).to_owned());
            (key, v.clone())
        })
        .collect()
}

pub fn load(path: &Path) -> Result<NetConf, NetConfError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetConfError::Read { path: path.into(), source })?;
    parse(&text).map_err(|reason| NetConfError::Invalid { path: path.into(), reason })
}

pub fn parse(text: &str) -> Result<NetConf, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = canonical(v.as_object().ok_or("not a JSON object")?, KNOWN_TOP);
    let flag = |key: &str| obj.get(key).and_then(Value::as_bool);
    let network = obj
        .get("Network")
        .and_then(Value::as_str)
        .ok_or("missing \"Network\" (the cluster's pod CIDR, e.g. \"10.244.0.0/16\")")?;
    let network: Ipv4Network = network.parse().map_err(|_| format!("\"Network\": {network:?} is not an IPv4 CIDR"))?;
    if network.network() != network.ip() {
        return Err(format!("\"Network\": {network} has host bits set"));
    }
    if flag("EnableIPv6") == Some(true) {
        return Err("\"EnableIPv6\": weft supports IPv4 only for now".into());
    }
    if flag("EnableIPv4") == Some(false) {
        return Err("\"EnableIPv4\": false leaves weft, an IPv4 overlay, nothing to do".into());
    }
    let mut warnings: Vec<String> =
        obj.keys().filter(|k| !KNOWN_TOP.contains(&k.as_str())).map(|k| format!("{k:?}: unknown key, ignored")).collect();
    let mut no_effect = |key: &str, why: &str| {
        if obj.contains_key(key) {
            warnings.push(format!("{key:?} has no effect in weft: {why}"));
        }
    };
    let ipv4_only = "weft's overlay is IPv4 only";
    for key in ["IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax"] {
        no_effect(key, ipv4_only);
    }
    if flag("EnableNFTables") == Some(true) {
        warnings.push("\"EnableNFTables\" has no effect in weft: it installs neither iptables nor nftables rules".into());
    }

    let subnets = {
        let len = match obj.get("SubnetLen") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|l| *l <= 32).ok_or("\"SubnetLen\" is not a prefix length")? as u8),
        };
        let addr = |key: &str| -> Result<Option<Ipv4Addr>, String> {
            match obj.get(key) {
                // Flannel's zero value means "the default".
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_str().map(str::parse::<Ipv4Addr>) {
                    Some(Ok(a)) if a.is_unspecified() => Ok(None),
                    Some(Ok(a)) => Ok(Some(a)),
                    _ => Err(format!("\"{key}\": {v} is not an IPv4 address")),
                },
            }
        };
        Subnets::new(network, len, addr("SubnetMin")?, addr("SubnetMax")?)?
    };
    let backend = match obj.get("Backend") {
        Some(Value::Object(m)) => canonical(m, KNOWN_VXLAN),
        // Flannel's code then runs its udp backend, which weft does not speak.
        None | Some(Value::Null) => {
            return Err("no \"Backend\": Flannel then runs its udp backend; weft implements \"vxlan\": \"Backend\": {\"Type\": \"vxlan\"}".into());
        }
        Some(_) => return Err("\"Backend\" is not an object".into()),
    };
    match backend.get("Type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("vxlan") => {}
        other => {
            return Err(format!("\"Backend.Type\": {other:?}; weft implements Flannel's \"vxlan\" backend only"));
        }
    }
    let int = |key: &str| -> Result<Option<u64>, String> {
        match backend.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(format!("\"Backend.{key}\" is not a non-negative integer")),
        }
    };
    let vni = int("VNI")?.unwrap_or(u64::from(DEFAULT_VNI));
    if vni > 0xff_ffff {
        return Err(format!("\"Backend.VNI\": {vni} does not fit in 24 bits"));
    }
    let port = int("Port")?.unwrap_or(u64::from(DEFAULT_PORT));
    if port == 0 || port > 65535 {
        return Err(format!("\"Backend.Port\": {port} is not a UDP port"));
    }
    let mtu = int("MTU")?;
    if let Some(m) = mtu
        && !(576..=65535).contains(&m)
    {
        return Err(format!("\"Backend.MTU\": {m} is out of range"));
    }
    let on = |key: &str| backend.get(key).and_then(Value::as_bool) == Some(true);
    if on("GBP") {
        return Err("\"Backend.GBP\": weft does not implement VXLAN Group Based Policy".into());
    }
    warnings.extend(
        backend.keys().filter(|k| !KNOWN_VXLAN.contains(&k.as_str())).map(|k| format!("\"Backend.{k}\": unknown key, ignored")),
    );
    if on("DirectRouting") {
        warnings.push(
            "\"Backend.DirectRouting\" has no effect in weft: it encapsulates to every node, those on its own subnet \
             included (Flannel nodes routing directly still interoperate)"
                .into(),
        );
    }
    if on("Learning") {
        warnings.push("\"Backend.Learning\" has no effect in weft: it has no kernel vxlan device to learn on".into());
    }
    for key in ["MacPrefix", "Name"] {
        if backend.contains_key(key) {
            warnings.push(format!("\"Backend.{key}\" has no effect in weft: it is Flannel's on Windows only"));
        }
    }
    Ok(NetConf { network, vni: vni as u32, port: port as u16, mtu: mtu.map(|m| m as u32), subnets, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannels_default_config() {
        let c = parse(r#"{ "Network": "10.244.0.0/16", "EnableNFTables": false, "Backend": { "Type": "vxlan" } }"#).unwrap();
        let subnets = Subnets { len: 24, min: "10.244.1.0".parse().unwrap(), max: "10.244.255.0".parse().unwrap() };
        assert_eq!(
            c,
            NetConf { network: "10.244.0.0/16".parse().unwrap(), vni: 1, port: 8472, mtu: None, subnets, warnings: vec![] }
        );
    }

    #[test]
    fn subnets_follow_flannels_rules() {
        let sub = |net: &str, len, min: Option<&str>, max: Option<&str>| {
            Subnets::new(net.parse().unwrap(), len, min.map(|m| m.parse().unwrap()), max.map(|m| m.parse().unwrap()))
        };
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(sub("10.0.0.0/22", None, None, None).unwrap(), Subnets { len: 24, min: a("10.0.1.0"), max: a("10.0.3.0") });
        assert_eq!(sub("10.0.0.0/24", None, None, None).unwrap(), Subnets { len: 26, min: a("10.0.0.64"), max: a("10.0.0.192") });
        assert_eq!(sub("10.0.0.0/28", None, None, None).unwrap().len, 30);
        assert!(sub("10.0.0.0/29", None, None, None).unwrap_err().contains("too small"));
        assert!(sub("10.0.0.0/16", Some(31), None, None).unwrap_err().contains("less than /31"));
        assert!(sub("10.0.0.0/16", Some(17), None, None).unwrap_err().contains("at least four"));
        let s = sub("10.244.0.0/16", Some(25), Some("10.244.4.0"), Some("10.244.200.128")).unwrap();
        assert_eq!(s, Subnets { len: 25, min: a("10.244.4.0"), max: a("10.244.200.128") });
        assert!(sub("10.244.0.0/16", None, Some("10.245.0.0"), None).unwrap_err().contains("not in the range"));
        assert!(sub("10.244.0.0/16", None, None, Some("10.244.3.128")).unwrap_err().contains("boundary"));
        let c = parse(r#"{"Network":"10.244.0.0/16","SubnetLen":26,"SubnetMin":"0.0.0.0","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.subnets, Subnets { len: 26, min: a("10.244.0.64"), max: a("10.244.255.192") });
        assert!(
            parse(r#"{"Network":"10.244.0.0/16","SubnetMin":"x","Backend":{"Type":"vxlan"}}"#).unwrap_err().contains("SubnetMin")
        );
    }

    #[test]
    fn every_documented_key_is_used_warned_about_or_refused() {
        let c = parse(
            r#"{"network":"10.244.0.0/16","EnableIPv4":true,"EnableIPv6":false,"IPv6Network":"fd00::/56","SubnetLen":25,
                "SubnetMin":"10.244.4.0","SubnetMax":"10.244.200.0","EnableNFTables":true,
                "Backend":{"type":"VXLAN","vni":7,"DirectRouting":true,"Learning":true,"MacPrefix":"0E-2A","GBP":false}}"#,
        )
        .unwrap();
        assert_eq!((c.network.to_string().as_str(), c.vni), ("10.244.0.0/16", 7), "keys match case-insensitively");
        let w = c.warnings.join("\n");
        for key in ["IPv6Network", "EnableNFTables", "DirectRouting", "Learning", "MacPrefix"] {
            assert!(w.contains(key), "{key} not warned about:\n{w}");
        }
        assert_eq!(c.warnings.len(), 5, "{w}");
        assert_eq!((c.subnets.len, c.subnets.min.to_string().as_str()), (25, "10.244.4.0"), "used by the allocator");
        for (text, reason) in [
            (r#"{"Network":"10.244.0.0/16","EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#, "nothing to do"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":true}}"#, "Group Based Policy"),
            (r#"{"Network":"10.244.0.0/16"}"#, "udp backend"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn backend_options_and_unknown_keys() {
        let c = parse(r#"{"Network":"10.42.0.0/16","Colour":"blue","Backend":{"Type":"vxlan","VNI":4096,"Port":4789,"MTU":1400,"Fancy":1}}"#).unwrap();
        assert_eq!((c.vni, c.port, c.mtu), (4096, 4789, Some(1400)));
        assert_eq!(c.warnings, ["\"Colour\": unknown key, ignored", "\"Backend.Fancy\": unknown key, ignored"]);
    }

    #[test]
    fn rejects_what_weft_cannot_do() {
        for (text, reason) in [
            ("[]", "not a JSON object"),
            ("{", "not JSON"),
            (r#"{"Backend":{"Type":"vxlan"}}"#, "missing \"Network\""),
            (r#"{"Network":"10.244.0.1/16","Backend":{"Type":"vxlan"}}"#, "host bits"),
            (r#"{"Network":"fd00::/64"}"#, "not an IPv4 CIDR"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#, "\"vxlan\" backend only"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#, "24 bits"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":0}}"#, "not a UDP port"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}"#, "non-negative integer"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}"#, "IPv4 only"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }
}
