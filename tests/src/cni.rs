//! Pods made the way a container runtime makes them: by executing the reference CNI
//! plugins of Debian's `containernetworking-plugins` with the CNI protocol (the
//! `CNI_*` environment and the network configuration on stdin), in the node's
//! network namespace. A conflist runs its plugins in order on ADD, each given the
//! previous result, and in reverse on DEL, as libcni does.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, anyhow, bail};
use ipnetwork::Ipv4Network;
use serde_json::Value;

use crate::{netns::Netns, prereq::CNI_DIR};

fn exec_plugin(node: &Netns, command: &str, container: &str, pod: &Netns, conf: &Value) -> Result<Value> {
    let kind = conf["type"].as_str().ok_or_else(|| anyhow!("plugin without type: {conf}"))?;
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", node.path()))
        .arg(Path::new(CNI_DIR).join(kind))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
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

/// CNI ADD: the pod's IPv4 address and the final result (for CHECK).
pub fn add(node: &Netns, list: &Value, container: &str, pod: &Netns) -> Result<(Ipv4Addr, Value)> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(list)? {
        let conf = plugin_conf(list, plugin, prev.as_ref());
        prev = Some(exec_plugin(node, "ADD", container, pod, &conf)?);
    }
    let result = prev.ok_or_else(|| anyhow!("empty conflist"))?;
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

/// CNI DEL, plugins in reverse order.
pub fn del(node: &Netns, list: &Value, container: &str, pod: &Netns) -> Result<()> {
    for plugin in plugins(list)?.iter().rev() {
        exec_plugin(node, "DEL", container, pod, &plugin_conf(list, plugin, None))?;
    }
    Ok(())
}
