//! The pods' CNI results, as the container runtime cached them: the source of truth for
//! which address and MAC each pod veth may carry.
//!
//! libcni (containerd's and CRI-O's CNI library) keeps each attachment's final ADD result
//! in `<cache dir>/results/<network>-<container id>-<ifname>`, a `cniCacheV1` JSON object
//! whose `result` is the CNI result: `interfaces` (for the bridge plugin: the bridge,
//! the host-side veth, the pod's `eth0` with its `sandbox`) and `ips`, each pointing at
//! its interface by index. The address IPAM gave a pod and the MAC of its `eth0` come
//! from there, not from anything the pod sends: an ARP reply or a frame claiming a
//! neighbour's address changes nothing. An attachment is written after ADD returns and
//! removed by DEL; files whose veth is gone (a runtime that crashed mid-DEL) are ignored
//! by the caller, which matches them against the bridge's live ports.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use ipnetwork::Ipv4Network;
use serde::Deserialize;
use thiserror::Error;
use weft_common::MacAddr;

/// libcni's default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// One pod attachment: its address, its `eth0` MAC and the host end of its veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub host_veth: String,
    /// When the runtime wrote it: the newer of two claims on one address wins.
    pub written: SystemTime,
}

#[derive(Debug, Error)]
pub enum ResultError {
    #[error("not JSON of a libcni cache entry: {0}")]
    Json(#[from] serde_json::Error),
    #[error("kind {0:?}, not cniCacheV1")]
    Kind(String),
    #[error("no IPv4 address in {0}")]
    NoAddress(Ipv4Network),
    #[error("address {0}: {1}")]
    Interface(Ipv4Addr, &'static str),
    #[error("MAC {0:?} of the pod's interface is not a MAC")]
    Mac(String),
}

#[derive(Deserialize)]
struct CacheEntry {
    kind: String,
    result: Option<CniResult>,
}

#[derive(Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
}

#[derive(Deserialize)]
struct Interface {
    name: String,
    #[serde(default)]
    mac: String,
    /// Set for interfaces inside the pod's namespace.
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct IpConfig {
    address: String,
    interface: Option<usize>,
}

/// The attachments with an address in `pod_cidr` whose host veth `is_port` (a live port
/// of the bridge), by address — the newest wins where two files claim one — from
/// `<cache_dir>/results`. Unreadable entries are skipped with a debug line (another
/// network's, or a runtime's partial write caught mid-way). A missing directory is no
/// attachment (no pod yet, or a runtime without libcni).
pub fn read(
    cache_dir: &Path,
    pod_cidr: Ipv4Network,
    bridge: &str,
    is_port: impl Fn(&str) -> bool,
) -> BTreeMap<Ipv4Addr, Attachment> {
    let dir = cache_dir.join("results");
    let mut found: BTreeMap<Ipv4Addr, Attachment> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        let written = entry.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse(&bytes, pod_cidr, bridge, written).map_err(|e| e.to_string()));
        match parsed {
            Ok(Some(a)) if is_port(&a.host_veth) => {
                if found.get(&a.ip).is_none_or(|old| old.written < a.written) {
                    found.insert(a.ip, a);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(file = %path.display(), "CNI result skipped: {e}"),
        }
    }
    found
}

/// One cache entry: `Ok(None)` when it is no pod of `pod_cidr` on `bridge` (another
/// network's attachment).
pub fn parse(bytes: &[u8], pod_cidr: Ipv4Network, bridge: &str, written: SystemTime) -> Result<Option<Attachment>, ResultError> {
    let entry: CacheEntry = serde_json::from_slice(bytes)?;
    if entry.kind != "cniCacheV1" {
        return Err(ResultError::Kind(entry.kind));
    }
    let Some(result) = entry.result else {
        return Ok(None);
    };
    let Some((ip, interface)) = result.ips.iter().find_map(|c| {
        let net: Ipv4Network = c.address.parse().ok()?;
        pod_cidr.contains(net.ip()).then_some((net.ip(), c.interface))
    }) else {
        return Ok(None);
    };
    let pod_if = interface
        .and_then(|i| result.interfaces.get(i))
        .ok_or(ResultError::Interface(ip, "its interface index names no interface"))?;
    if pod_if.sandbox.as_deref().is_none_or(str::is_empty) {
        return Err(ResultError::Interface(ip, "its interface is not in a pod's namespace"));
    }
    let mac = parse_mac(&pod_if.mac).ok_or_else(|| ResultError::Mac(pod_if.mac.clone()))?;
    // The host end: the one interface outside any sandbox that is not the bridge.
    let mut host = result.interfaces.iter().filter(|i| i.sandbox.as_deref().is_none_or(str::is_empty) && i.name != bridge);
    let (Some(host_veth), None) = (host.next(), host.next()) else {
        return Err(ResultError::Interface(ip, "not exactly one host-side interface besides the bridge"));
    };
    Ok(Some(Attachment { ip, mac, host_veth: host_veth.name.clone(), written }))
}

fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What containerd's libcni wrote for a pod of the bridge + host-local + portmap
    /// conflist (the result as the bridge plugin returns it, portmap passing it on).
    fn entry(ip: &str, pod_mac: &str, host: &str) -> String {
        format!(
            r#"{{"kind":"cniCacheV1","containerId":"3f69","config":"e30=","ifName":"eth0","networkName":"cbr0",
               "netns":"/var/run/netns/cni-1","cniArgs":[["K8S_POD_NAME","web"]],
               "result":{{"cniVersion":"1.0.0","interfaces":[
                   {{"name":"cni0","mac":"6e:0b:5a:00:00:01"}},
                   {{"name":"{host}","mac":"c2:51:7e:00:00:02"}},
                   {{"name":"eth0","mac":"{pod_mac}","sandbox":"/var/run/netns/cni-1"}}],
                 "ips":[{{"interface":2,"address":"{ip}","gateway":"10.244.1.1"}}],
                 "routes":[{{"dst":"0.0.0.0/0"}}],"dns":{{}}}}}}"#
        )
    }

    const CIDR: &str = "10.244.1.0/24";

    fn parse_str(s: &str) -> Result<Option<Attachment>, ResultError> {
        parse(s.as_bytes(), CIDR.parse().unwrap(), "cni0", SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn a_bridge_result_gives_the_pods_address_mac_and_host_veth() {
        let a = parse_str(&entry("10.244.1.7/24", "0a:58:0a:f4:01:07", "veth1a2b3c4d")).unwrap().unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 7));
        assert_eq!(a.mac, [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x07]);
        assert_eq!(a.host_veth, "veth1a2b3c4d");
    }

    #[test]
    fn other_networks_and_bad_entries_are_no_endpoint() {
        assert!(parse_str(&entry("192.168.9.7/24", "0a:58:0a:f4:01:07", "veth1")).unwrap().is_none());
        assert!(matches!(parse_str(&entry("10.244.1.7/24", "zz", "veth1")), Err(ResultError::Mac(_))));
        assert!(matches!(parse_str(&entry("10.244.1.7/24", "0a:58:0a:f4:01", "veth1")), Err(ResultError::Mac(_))));
        assert!(matches!(parse_str(r#"{"kind":"other"}"#), Err(ResultError::Kind(_))));
        assert!(matches!(parse_str("{"), Err(ResultError::Json(_))));
        let no_sandbox = entry("10.244.1.7/24", "0a:58:0a:f4:01:07", "veth1").replace(r#","sandbox":"/var/run/netns/cni-1""#, "");
        assert!(matches!(parse_str(&no_sandbox), Err(ResultError::Interface(..))));
        let bad_index = entry("10.244.1.7/24", "0a:58:0a:f4:01:07", "veth1").replace(r#""interface":2"#, r#""interface":9"#);
        assert!(matches!(parse_str(&bad_index), Err(ResultError::Interface(..))));
    }

    #[test]
    fn the_newest_file_wins_an_address() {
        let dir = std::env::temp_dir().join(format!("weft-cni-results-{}", std::process::id()));
        let results = dir.join("results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join("cbr0-old-eth0"), entry("10.244.1.7/24", "0a:00:00:00:00:01", "vethold")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(results.join("cbr0-new-eth0"), entry("10.244.1.7/24", "0a:00:00:00:00:02", "vethnew")).unwrap();
        std::fs::write(results.join("cbr0-junk-eth0"), "not json").unwrap();
        // A stale entry (its veth gone) never claims an address from a live pod.
        std::fs::write(results.join("cbr0-stale-eth0"), entry("10.244.1.8/24", "0a:00:00:00:00:03", "vethgone")).unwrap();
        let found = read(&dir, CIDR.parse().unwrap(), "cni0", |veth| veth != "vethgone");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[&Ipv4Addr::new(10, 244, 1, 7)].host_veth, "vethnew");
        assert!(read(Path::new("/nonexistent/weft"), CIDR.parse().unwrap(), "cni0", |_| true).is_empty());
    }
}
