//! What pods on this node get their addresses from.
//!
//! - `subnet.env` (Flannel's format, `/run/flannel/subnet.env`): Flannel's own CNI
//!   plugin reads it, so it keeps working unchanged on a node moved to weft.
//!   `FLANNEL_IPMASQ` says whether the agent masquerades (`--ip-masq`), as flanneld
//!   writes it; Flannel's plugin has the bridge masquerade when it does not.
//! - A conflist for the reference plugins (`bridge` with `host-local` IPAM over the
//!   node's pod CIDR, and `portmap`), written when no other CNI config is there.
//!
//! Both are written atomically (a temporary file renamed over the old one), so a
//! runtime never reads half a file.

use std::{
    io,
    path::{Path, PathBuf},
};

use ipnetwork::Ipv4Network;
use serde_json::{Value, json};
use thiserror::Error;

/// The conflist's file name: sorts before most others, as the runtime picks the first.
pub const CONFLIST_NAME: &str = "10-weft.conflist";

/// The pod bridge the conflist names (Flannel's); `--fast-path` attaches to its ports.
pub const BRIDGE: &str = "cni0";

/// The conflist's network name: Flannel's (kube-flannel.yml's cni-conf.json, which its
/// plugin hands to `bridge` and `host-local`). On a node moved from Flannel this keeps
/// three things continuous: host-local's allocations (its default state directory is
/// `/var/lib/cni/networks/<name>`, so a new pod never gets an address a pod made
/// under Flannel still holds), the runtime's cached ADD results (keyed by network
/// name: CHECK and DEL of those pods get their prevResult), and portmap's per-network
/// chains (DEL finds what ADD made).
pub const NETWORK_NAME: &str = "cbr0";

/// host-local's state directory for [`conflist`] without `--cni-ipam-data-dir`:
/// Flannel's, by the plugin's default.
pub const DEFAULT_IPAM_DATA_DIR: &str = "/var/lib/cni/networks/cbr0";

#[derive(Debug, Error)]
#[error("writing {path}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `contents` to `path` atomically, creating the directory.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), WriteError> {
    let err = |source| WriteError { path: path.into(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

pub fn subnet_env(network: Ipv4Network, subnet: Ipv4Network, mtu: u32, ip_masq: bool) -> String {
    // Flannel writes the subnet's first address (the bridge's gateway) with its prefix.
    let first = subnet.nth(1).unwrap_or(subnet.network());
    format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n",
        subnet.prefix()
    )
}

pub fn conflist(subnet: Ipv4Network, mtu: u32, ipam_data_dir: Option<&Path>) -> Value {
    let mut ipam = json!({ "type": "host-local", "ranges": [[{ "subnet": subnet.to_string() }]] });
    if let Some(dir) = ipam_data_dir {
        ipam["dataDir"] = json!(dir);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": true,
                // weft masquerades pod → outside traffic itself; the bridge's rule would
                // also rewrite pod → remote-pod traffic.
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": mtu,
                "ipam": ipam,
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
}

/// What a `--cni-conf-template` lacks for weft to complete it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("not a conflist: no \"plugins\" array")]
    NoPlugins,
    #[error("no \"bridge\" plugin: weft fills in its IPAM ranges")]
    NoBridge,
    #[error("the bridge plugin names bridge {0:?}: weft's programs attach to {BRIDGE}")]
    OtherBridge(String),
    #[error("the bridge plugin's IPAM is {0:?}: only host-local gets this node's podCIDR")]
    OtherIpam(String),
}

/// An operator's conflist (the ConfigMap's `cni-conf.json`, as Flannel's), completed
/// for this node: in the `bridge` plugin, what is left out — `ipam` (host-local over
/// the node's pod CIDR, the ranges filled in when absent), `mtu`, `bridge` ([`BRIDGE`]) —
/// and the network `name` ([`NETWORK_NAME`]). What the template sets is kept: the
/// operator may add plugins (bandwidth, tuning), hairpin or promiscuous modes.
pub fn conflist_from_template(
    template: &Value,
    subnet: Ipv4Network,
    mtu: u32,
    ipam_data_dir: Option<&Path>,
) -> Result<Value, TemplateError> {
    let mut list = template.clone();
    if list.get("name").is_none() {
        list["name"] = json!(NETWORK_NAME);
    }
    let plugins = list.get_mut("plugins").and_then(Value::as_array_mut).ok_or(TemplateError::NoPlugins)?;
    let bridge = plugins.iter_mut().find(|p| p["type"] == "bridge").ok_or(TemplateError::NoBridge)?;
    match bridge.get("bridge").and_then(Value::as_str) {
        None => bridge["bridge"] = json!(BRIDGE),
        Some(BRIDGE) => {}
        Some(other) => return Err(TemplateError::OtherBridge(other.to_owned())),
    }
    if bridge.get("mtu").is_none() {
        bridge["mtu"] = json!(mtu);
    }
    if bridge.get("ipam").is_none() {
        bridge["ipam"] = json!({ "type": "host-local" });
    }
    let ipam = &mut bridge["ipam"];
    match ipam["type"].as_str() {
        Some("host-local") => {}
        other => return Err(TemplateError::OtherIpam(other.unwrap_or_default().to_owned())),
    }
    if ipam.get("ranges").is_none() && ipam.get("subnet").is_none() {
        ipam["ranges"] = json!([[{ "subnet": subnet.to_string() }]]);
    }
    if let (None, Some(dir)) = (ipam.get("dataDir"), ipam_data_dir) {
        ipam["dataDir"] = json!(dir);
    }
    Ok(list)
}

/// The config file a runtime uses from `dir`: the first in lexical order, as
/// containerd and CRI-O pick it.
pub fn first_config(dir: &Path) -> Option<PathBuf> {
    let mut all = other_configs(dir);
    all.push(dir.join(CONFLIST_NAME));
    all.into_iter().filter(|p| p.exists()).min_by(|a, b| a.file_name().cmp(&b.file_name()))
}

/// CNI config files other than ours in `dir` (a runtime would use them).
pub fn other_configs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name != CONFLIST_NAME && [".conf", ".conflist", ".json"].iter().any(|ext| name.ends_with(ext))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_env_is_flannels_format() {
        let env = subnet_env("10.244.0.0/16".parse().unwrap(), "10.244.3.0/24".parse().unwrap(), 1450, true);
        assert_eq!(env, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
        let off = subnet_env("10.244.0.0/16".parse().unwrap(), "10.244.3.0/24".parse().unwrap(), 1450, false);
        assert!(off.ends_with("FLANNEL_IPMASQ=false\n"), "{off}");
    }

    #[test]
    fn conflist_uses_the_reference_plugins_without_bridge_masquerade() {
        let c = conflist("10.244.3.0/24".parse().unwrap(), 1450, None);
        let bridge = &c["plugins"][0];
        assert_eq!(
            (bridge["type"].as_str(), bridge["ipMasq"].as_bool(), bridge["mtu"].as_u64()),
            (Some("bridge"), Some(false), Some(1450))
        );
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert!(bridge["ipam"].get("dataDir").is_none());
        // host-local's default state directory is /var/lib/cni/networks/<network name>:
        // Flannel's network name continues Flannel's allocations on a migrated node.
        assert_eq!(c["name"], NETWORK_NAME);
        assert_eq!(std::path::Path::new("/var/lib/cni/networks").join(NETWORK_NAME), std::path::Path::new(DEFAULT_IPAM_DATA_DIR));
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn a_template_is_completed_for_the_node_and_keeps_what_it_sets() {
        let subnet = "10.244.3.0/24".parse().unwrap();
        let manifest = serde_json::from_str::<Value>(include_str!("../../manifests/cni-conf.json")).unwrap();
        // The manifest's template gives what the agent would write without one.
        assert_eq!(conflist_from_template(&manifest, subnet, 1450, None), Ok(conflist(subnet, 1450, None)));
        let custom = json!({
            "cniVersion": "1.0.0",
            "plugins": [
                { "type": "bridge", "mtu": 1400, "hairpinMode": false, "ipam": { "type": "host-local", "dataDir": "/x" } },
                { "type": "bandwidth", "capabilities": { "bandwidth": true } }
            ]
        });
        let done = conflist_from_template(&custom, subnet, 1450, Some(Path::new("/y"))).unwrap();
        let bridge = &done["plugins"][0];
        assert_eq!((bridge["mtu"].as_u64(), bridge["hairpinMode"].as_bool()), (Some(1400), Some(false)));
        assert_eq!((bridge["bridge"].as_str(), done["name"].as_str()), (Some(BRIDGE), Some(NETWORK_NAME)));
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/x");
        assert_eq!(done["plugins"][1]["type"], "bandwidth");

        let err = |t: Value| conflist_from_template(&t, subnet, 1450, None).unwrap_err();
        assert_eq!(err(json!({"name": "x"})), TemplateError::NoPlugins);
        assert_eq!(err(json!({"plugins": [{"type": "flannel"}]})), TemplateError::NoBridge);
        assert_eq!(err(json!({"plugins": [{"type": "bridge", "bridge": "br0"}]})), TemplateError::OtherBridge("br0".into()));
        assert_eq!(
            err(json!({"plugins": [{"type": "bridge", "ipam": {"type": "whereabouts"}}]})),
            TemplateError::OtherIpam("whereabouts".into())
        );
    }

    #[test]
    fn atomic_write_and_other_configs() {
        let dir = std::env::temp_dir().join(format!("weft-cni-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_atomic(&dir.join(CONFLIST_NAME), "{}").unwrap();
        assert!(other_configs(&dir).is_empty(), "our own file does not count");
        std::fs::write(dir.join("10-flannel.conflist"), "{}").unwrap();
        std::fs::write(dir.join("README"), "").unwrap();
        assert_eq!(other_configs(&dir), vec![dir.join("10-flannel.conflist")]);
        write_atomic(&dir.join(CONFLIST_NAME), "{\"a\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(CONFLIST_NAME)).unwrap(), "{\"a\":1}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3, "no temporary file left");
        // The runtime's pick: the first in lexical order ("10-flannel" < "10-weft").
        assert_eq!(first_config(&dir), Some(dir.join("10-flannel.conflist")));
        std::fs::remove_file(dir.join("10-flannel.conflist")).unwrap();
        assert_eq!(first_config(&dir), Some(dir.join(CONFLIST_NAME)));
        std::fs::write(dir.join("99-other.conf"), "{}").unwrap();
        assert_eq!(first_config(&dir), Some(dir.join(CONFLIST_NAME)), "ours sorts first");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
