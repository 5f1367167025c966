//! Pods made the way a container runtime makes them: by executing the reference CNI
//! plugins of Debian's `containernetworking-plugins` with the CNI protocol (the
//! `CNI_*` environment and the network configuration on stdin), in the node's
//! network namespace. A conflist runs its plugins in order on ADD, each given the
//! previous result, and in reverse on DEL, as libcni does; like libcni, ADD caches
//! the final result in `<cache>/results/<network>-<container>-<ifname>` (a
//! `cniCacheV1` object) and DEL removes it.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, anyhow, bail};
use ipnetwork::Ipv4Network;
use serde_json::Value;

use crate::{netns::Netns, prereq::CNI_DIR};

/// The pod's interface, as kubelet's runtimes name it.
const IFNAME: &str = "eth0";

fn exec_plugin(node: &Netns, command: &str, container: &str, pod: &Netns, conf: &Value) -> Result<Value> {
    let kind = conf["type"].as_str().ok_or_else(|| anyhow!("plugin without type: {conf}"))?;
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", node.path()))
        .arg(Path::new(CNI_DIR).join(kind))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_PATH", CNI_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("executing CNI plugin {kind}"))?;
    child.stdin.take().expect("piped").write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "CNI {command} with {kind} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if out.stdout.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("CNI {command} result of {kind}"))
}

fn plugin_conf(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn plugins(list: &Value) -> Result<&Vec<Value>> {
    list["plugins"].as_array().ok_or_else(|| anyhow!("conflist without plugins: {list}"))
}

/// Where libcni caches a result.
fn cache_file(cache: &Path, list: &Value, container: &str) -> PathBuf {
    cache.join("results").join(format!("{}-{container}-{IFNAME}", list["name"].as_str().unwrap_or_default()))
}

/// CNI ADD: the pod's IPv4 address and the final result (for CHECK), cached under
/// `cache` as libcni caches it.
pub fn add(node: &Netns, list: &Value, container: &str, pod: &Netns, cache: &Path) -> Result<(Ipv4Addr, Value)> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(list)? {
        let conf = plugin_conf(list, plugin, prev.as_ref());
        prev = Some(exec_plugin(node, "ADD", container, pod, &conf)?);
    }
    let result = prev.ok_or_else(|| anyhow!("empty conflist"))?;
    // libcni's cachedInfo: the config travels base64-encoded (Go's []byte in JSON).
    let entry = serde_json::json!({
        "kind": "cniCacheV1",
        "containerId": container,
        "config": base64_encode(list.to_string().as_bytes()),
        "ifName": IFNAME,
        "networkName": list["name"],
        "netns": pod.path(),
        "result": result,
    });
    let file = cache_file(cache, list, container);
    std::fs::create_dir_all(file.parent().expect("results dir"))?;
    std::fs::write(&file, entry.to_string()).with_context(|| format!("writing {}", file.display()))?;
    let addr = result["ips"][0]["address"].as_str().ok_or_else(|| anyhow!("no IP in CNI result {result}"))?;
    let net: Ipv4Network = addr.parse().with_context(|| format!("CNI result address {addr}"))?;
    Ok((net.ip(), result))
}

/// CNI CHECK with the result of ADD.
pub fn check(node: &Netns, list: &Value, container: &str, pod: &Netns, add_result: &Value) -> Result<()> {
    for plugin in plugins(list)? {
        exec_plugin(node, "CHECK", container, pod, &plugin_conf(list, plugin, Some(add_result)))?;
    }
    Ok(())
}

/// CNI DEL, plugins in reverse order; then the cached result goes.
pub fn del(node: &Netns, list: &Value, container: &str, pod: &Netns, cache: &Path) -> Result<()> {
    for plugin in plugins(list)?.iter().rev() {
        exec_plugin(node, "DEL", container, pod, &plugin_conf(list, plugin, None))?;
    }
    match std::fs::remove_file(cache_file(cache, list, container)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Standard base64 with padding (RFC 4648), as Go's encoding/json writes `[]byte`.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
