//! Flannel's network configuration (`net-conf.json`, from the kube-flannel ConfigMap),
//! read as Flannel reads it: `Network`, `Backend.Type` (must be `vxlan`),
//! `Backend.VNI`, `Backend.Port`, `Backend.MTU`. Unknown keys are reported, not fatal,
//! so an existing Flannel ConfigMap works unchanged.

use std::path::{Path, PathBuf};

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
    /// Keys weft does not use (for a warning).
    pub ignored: Vec<String>,
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

/// Keys Flannel understands that weft accepts without using (other backends' or
/// features weft does not have); anything else is reported as unknown.
const KNOWN_TOP: &[&str] =
    &["Network", "Backend", "EnableIPv4", "EnableIPv6", "IPv6Network", "SubnetLen", "SubnetMin", "SubnetMax", "EnableNFTables"];

pub fn load(path: &Path) -> Result<NetConf, NetConfError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetConfError::Read { path: path.into(), source })?;
    parse(&text).map_err(|reason| NetConfError::Invalid { path: path.into(), reason })
}

pub fn parse(text: &str) -> Result<NetConf, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let network = obj
        .get("Network")
        .and_then(Value::as_str)
        .ok_or("missing \"Network\" (the cluster's pod CIDR, e.g. \"10.244.0.0/16\")")?;
    let network: Ipv4Network = network.parse().map_err(|_| format!("\"Network\": {network:?} is not an IPv4 CIDR"))?;
    if network.network() != network.ip() {
        return Err(format!("\"Network\": {network} has host bits set"));
    }
    if obj.get("EnableIPv6").and_then(Value::as_bool) == Some(true) {
        return Err("\"EnableIPv6\": weft supports IPv4 only for now".into());
    }
    let mut ignored: Vec<String> = obj.keys().filter(|k| !KNOWN_TOP.contains(&k.as_str())).cloned().collect();

    let backend = obj.get("Backend").cloned().unwrap_or(Value::Null);
    let backend = match &backend {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err("\"Backend\" is not an object".into()),
    };
    match backend.get("Type").and_then(Value::as_str) {
        None | Some("vxlan") => {}
        Some(other) => {
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
    ignored.extend(
        backend
            .keys()
            .filter(|k| !["Type", "VNI", "Port", "MTU", "GBP", "DirectRouting", "Learning", "MacPrefix"].contains(&k.as_str()))
            .map(|k| format!("Backend.{k}")),
    );
    for unused in ["GBP", "DirectRouting"] {
        if backend.get(unused).and_then(Value::as_bool) == Some(true) {
            ignored.push(format!("Backend.{unused} (not implemented by weft)"));
        }
    }
    Ok(NetConf { network, vni: vni as u32, port: port as u16, mtu: mtu.map(|m| m as u32), ignored })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannels_default_config() {
        let c = parse(r#"{ "Network": "10.244.0.0/16", "EnableNFTables": false, "Backend": { "Type": "vxlan" } }"#).unwrap();
        assert_eq!(c, NetConf { network: "10.244.0.0/16".parse().unwrap(), vni: 1, port: 8472, mtu: None, ignored: vec![] });
    }

    #[test]
    fn backend_options_and_unknown_keys() {
        let c = parse(r#"{"Network":"10.42.0.0/16","Colour":"blue","Backend":{"Type":"vxlan","VNI":4096,"Port":4789,"MTU":1400,"Fancy":1}}"#).unwrap();
        assert_eq!((c.vni, c.port, c.mtu), (4096, 4789, Some(1400)));
        assert_eq!(c.ignored, vec!["Colour".to_string(), "Backend.Fancy".to_string()]);
    }

    #[test]
    fn rejects_what_weft_cannot_do() {
        for (text, reason) in [
            ("[]", "not a JSON object"),
            ("{", "not JSON"),
            (r#"{"Backend":{"Type":"vxlan"}}"#, "missing \"Network\""),
            (r#"{"Network":"10.244.0.1/16"}"#, "host bits"),
            (r#"{"Network":"fd00::/64"}"#, "not an IPv4 CIDR"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#, "\"vxlan\" backend only"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#, "24 bits"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":0}}"#, "not a UDP port"),
            (r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}"#, "non-negative integer"),
            (r#"{"Network":"10.244.0.0/16","EnableIPv6":true}"#, "IPv4 only"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }
}
