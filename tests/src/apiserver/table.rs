//! Server-side printing: the meta.k8s.io/v1 `Table` kubectl asks for on `get`,
//! with the Node columns and cell rules of kube-apiserver's printers
//! (`pkg/printers/internalversion`). The server always fills every column;
//! kubectl hides priority-1 columns unless `-o wide`.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// What each row carries besides its cells (`includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Option<IncludeObject> {
        match s.unwrap_or_default() {
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "None" => Some(IncludeObject::None),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

fn columns() -> Value {
    let col = |name: &str, format: &str, priority: u8, description: &str| json!({ "name": name, "type": "string", "format": format, "description": description, "priority": priority });
    let addresses = "List of addresses reachable to the node. Queried from cloud provider, if available.";
    json!([
        col(
            "Name",
            "name",
            0,
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated."
        ),
        col("Status", "", 0, "The status of the node"),
        col("Roles", "", 0, "The roles of the node"),
        col("Age", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("Version", "", 0, "Kubelet Version reported by the node."),
        col("Internal-IP", "", 1, addresses),
        col("External-IP", "", 1, addresses),
        col("OS-Image", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        col("Kernel-Version", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        col(
            "Container-Runtime",
            "",
            1,
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."
        ),
    ])
}

/// `Ready`/`NotReady` from the Ready condition, `Unknown` without one, then
/// `SchedulingDisabled` for a cordoned node.
fn status(node: &Value) -> String {
    let ready = node["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
    let mut parts = vec![match ready {
        Some(c) if c["status"] == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node["spec"]["unschedulable"] == true {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

/// Roles from `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`.
fn roles(node: &Value) -> String {
    let mut roles: Vec<&str> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => Some(role),
            None if k == "kubernetes.io/role" => v.as_str(),
            None => None,
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() { "<none>".into() } else { roles.join(",") }
}

fn address(node: &Value, kind: &str) -> String {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == kind)
        .and_then(|a| a["address"].as_str())
        .unwrap_or("<none>")
        .into()
}

/// kubectl's short ages: "45s", "3m20s", "5h", "12d", "2y3d" (`duration.HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let with = |big: i64, u: &str, small: i64, v: &str| {
        if small == 0 { format!("{big}{u}") } else { format!("{big}{u}{small}{v}") }
    };
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => with(m, "m", s % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => with(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => with(d, "d", h % 24, "h"),
        _ if h < 24 * 365 * 2 => format!("{d}d"),
        _ if h < 24 * 365 * 8 => with(d / 365, "y", d % 365, "d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(node: &Value, now: Timestamp) -> String {
    match node["metadata"]["creationTimestamp"].as_str().and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"] })
}

fn row(node: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let info = &node["status"]["nodeInfo"];
    let or_unknown = |f: &str| info[f].as_str().filter(|s| !s.is_empty()).unwrap_or("<unknown>").to_string();
    let cells = json!([
        node["metadata"]["name"],
        status(node),
        roles(node),
        age(node, now),
        info["kubeletVersion"].as_str().unwrap_or_default(),
        address(node, "InternalIP"),
        address(node, "ExternalIP"),
        or_unknown("osImage"),
        or_unknown("kernelVersion"),
        or_unknown("containerRuntimeVersion"),
    ]);
    let mut row = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(node),
        IncludeObject::Object => row["object"] = node.clone(),
    }
    row
}

/// A Table of `nodes`, with the list's metadata (resourceVersion, continue).
pub fn table<'a>(nodes: impl IntoIterator<Item = &'a Value>, list_meta: Value, include: IncludeObject) -> Value {
    let now = Timestamp::now();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(),
        "rows": nodes.into_iter().map(|n| row(n, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 3600, "3d1h"),
            (100 * 86_400, "100d"),
            (3 * 365 * 86_400 + 86_400, "3y1d"),
            (9 * 365 * 86_400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn node_row() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                         "labels": {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                       "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.34.0", "osImage": ""}},
        });
        let t = table([&node], json!({"resourceVersion": "7"}), IncludeObject::Metadata);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[0..3], [json!("n1"), json!("NotReady,SchedulingDisabled"), json!("control-plane,worker")]);
        assert!(cells[3].as_str().unwrap().ends_with('s'));
        assert_eq!(
            cells[4..],
            [json!("v1.34.0"), json!("10.0.0.1"), json!("<none>"), json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 10);
        assert_eq!(status(&json!({})), "Unknown");
    }
}
