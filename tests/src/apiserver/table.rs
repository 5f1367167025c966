//! Server-side printing: the meta.k8s.io/v1 `Table` kubectl asks for on `get`,
//! with the Node, Event and Pod columns and cell rules of kube-apiserver's printers
//! (`pkg/printers/internalversion`). The server always fills every column;
//! kubectl hides priority-1 columns unless `-o wide`. Cells come from the
//! stored form (upstream prints the internal type), so both groups of Events
//! print alike; a row's object is in the request's group-version.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{lease, resource::Api};

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

fn col(name: &str, format: &str, priority: u8, description: &str) -> Value {
    json!({ "name": name, "type": "string", "format": format, "description": description, "priority": priority })
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.";

fn node_columns() -> Value {
    let addresses = "List of addresses reachable to the node. Queried from cloud provider, if available.";
    json!([
        col("Name", "name", 0, NAME_DESCRIPTION),
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

/// `translateTimestampSince`: the age of a (micro)time, `None` when unset.
fn since(t: &Value, now: Timestamp) -> Option<String> {
    let t = t.as_str()?.parse::<Timestamp>().ok()?;
    Some(human_duration(now.as_second() - t.as_second()))
}

fn age(node: &Value, now: Timestamp) -> String {
    since(&node["metadata"]["creationTimestamp"], now).unwrap_or_else(|| "<unknown>".into())
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"] })
}

fn node_cells(node: &Value, now: Timestamp) -> Value {
    let info = &node["status"]["nodeInfo"];
    let or_unknown = |f: &str| info[f].as_str().filter(|s| !s.is_empty()).unwrap_or("<unknown>").to_string();
    json!([
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
    ])
}

fn event_columns() -> Value {
    json!([
        col("Last Seen", "", 0, "The time at which the most recent occurrence of this event was recorded."),
        col("Type", "", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
        col(
            "Reason",
            "",
            0,
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."
        ),
        col("Object", "", 0, "The object that this event is about."),
        col(
            "Subobject",
            "",
            1,
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."
        ),
        col("Source", "", 1, "The component reporting this event. Should be a short machine understandable string."),
        col("Message", "", 0, "A human-readable description of the status of this operation."),
        col("First Seen", "", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
        col("Count", "", 1, "The number of times this event has occurred."),
        col("Name", "name", 1, NAME_DESCRIPTION),
    ])
}

fn first_non_empty<'a>(a: &'a Value, b: &'a Value) -> &'a str {
    a.as_str().filter(|s| !s.is_empty()).or(b.as_str()).unwrap_or_default()
}

/// `formatEventSource`: the deprecated source, else the reporting controller
/// and instance.
fn event_source(ev: &Value) -> String {
    let component = first_non_empty(&ev["source"]["component"], &ev["reportingComponent"]);
    match first_non_empty(&ev["source"]["host"], &ev["reportingInstance"]) {
        "" => component.to_string(),
        instance => format!("{component}, {instance}"),
    }
}

/// `printEvent`: first seen falls back to `eventTime`, last seen to first seen;
/// a series overrides last seen and count; a count of 0 (the new API's
/// singletons) prints as 1.
fn event_cells(ev: &Value, now: Timestamp) -> Value {
    let unknown = || "<unknown>".to_string();
    let first = since(&ev["firstTimestamp"], now).or_else(|| since(&ev["eventTime"], now)).unwrap_or_else(unknown);
    let mut last = since(&ev["lastTimestamp"], now).unwrap_or_else(|| first.clone());
    let mut count = ev["count"].as_i64().unwrap_or(0);
    if let Some(series) = ev["series"].as_object() {
        last = since(&series["lastObservedTime"], now).unwrap_or_else(unknown);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let involved = &ev["involvedObject"];
    let kind = involved["kind"].as_str().unwrap_or_default().to_lowercase();
    let object = match involved["name"].as_str().unwrap_or_default() {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    json!([
        last,
        ev["type"].as_str().unwrap_or_default(),
        ev["reason"].as_str().unwrap_or_default(),
        object,
        involved["fieldPath"].as_str().unwrap_or_default(),
        event_source(ev),
        ev["message"].as_str().unwrap_or_default().trim(),
        first,
        count,
        ev["metadata"]["name"],
    ])
}

fn pod_columns() -> Value {
    json!([
        col("Name", "name", 0, NAME_DESCRIPTION),
        col("Ready", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "", 0, "The aggregate status of the containers in this pod."),
        col(
            "Restarts",
            "",
            0,
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."
        ),
        col("Age", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("IP", "", 1, "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
        col(
            "Node",
            "",
            1,
            "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename"
        ),
        col(
            "Nominated Node",
            "",
            1,
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled."
        ),
        col(
            "Readiness Gates",
            "",
            1,
            "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates"
        ),
    ])
}

fn condition_true(pod: &Value, ty: &str) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == ty && c["status"] == "True")
}

/// The later of `latest` and a container's last termination.
fn last_termination(latest: Option<Timestamp>, status: &Value) -> Option<Timestamp> {
    let finished = status["lastState"]["terminated"]["finishedAt"].as_str().and_then(|t| t.parse::<Timestamp>().ok());
    latest.max(finished)
}

/// `Signal:N` or `ExitCode:N` for a terminated state without a reason.
fn exit(terminated: &Value) -> String {
    match terminated["signal"].as_i64().unwrap_or(0) {
        0 => format!("ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or(0)),
        signal => format!("Signal:{signal}"),
    }
}

/// `printPod`: READY counts ready running containers (and started sidecars),
/// STATUS is the phase (or the status' reason) overridden by the first init
/// container still in the way, then by the containers' waiting or terminated
/// reasons, and `Terminating` once deletion is under way; RESTARTS adds when
/// the last restart was. Also the row's `Completed` condition for finished pods.
fn pod_cells(pod: &Value, now: Timestamp) -> (Value, Option<Value>) {
    let (spec, status) = (&pod["spec"], &pod["status"]);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let phase = text(&status["phase"]);
    let mut reason = match text(&status["reason"]) {
        r if r.is_empty() => phase.clone(),
        r => r,
    };
    if list(&status["conditions"]).iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let init_specs = list(&spec["initContainers"]);
    let sidecar = |name: &Value| init_specs.iter().any(|c| &c["name"] == name && c["restartPolicy"].as_str() == Some("Always"));
    let total = list(&spec["containers"]).len() + init_specs.iter().filter(|c| sidecar(&c["name"])).count();
    let (mut ready, mut restarts, mut sidecar_restarts) = (0, 0, 0);
    let (mut last_restart, mut last_sidecar_restart) = (None, None);
    let mut initializing = false;
    for (i, c) in list(&status["initContainerStatuses"]).iter().enumerate() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        last_restart = last_termination(last_restart, c);
        let is_sidecar = sidecar(&c["name"]);
        if is_sidecar {
            sidecar_restarts += c["restartCount"].as_i64().unwrap_or(0);
            last_sidecar_restart = last_termination(last_sidecar_restart, c);
        }
        let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
        if terminated.is_object() && terminated["exitCode"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        if is_sidecar && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        reason = if terminated.is_object() {
            match text(&terminated["reason"]) {
                r if r.is_empty() => format!("Init:{}", exit(terminated)),
                r => format!("Init:{r}"),
            }
        } else if waiting.is_object() && !matches!(text(&waiting["reason"]).as_str(), "" | "PodInitializing") {
            format!("Init:{}", text(&waiting["reason"]))
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut running = false;
        for c in list(&status["containerStatuses"]).iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            last_restart = last_termination(last_restart, c);
            let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
            if waiting.is_object() && !text(&waiting["reason"]).is_empty() {
                reason = text(&waiting["reason"]);
            } else if terminated.is_object() && !text(&terminated["reason"]).is_empty() {
                reason = text(&terminated["reason"]);
            } else if terminated.is_object() {
                reason = exit(terminated);
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            reason = if condition_true(pod, "Ready") { "Running" } else { "NotReady" }.into();
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        if text(&status["reason"]) == "NodeLost" {
            reason = "Unknown".into();
        } else if !matches!(phase.as_str(), "Succeeded" | "Failed") {
            reason = "Terminating".into();
        }
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now.as_second() - t.as_second())),
        _ => restarts.to_string(),
    };
    let or_none = |s: String| if s.is_empty() { "<none>".to_string() } else { s };
    let gates = list(&spec["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(&status["conditions"]);
        let met = gates
            .iter()
            .filter(|g| conditions.iter().find(|c| c["type"] == g["conditionType"]).is_some_and(|c| c["status"] == "True"))
            .count();
        format!("{met}/{}", gates.len())
    };
    let cells = json!([
        pod["metadata"]["name"],
        format!("{ready}/{total}"),
        reason,
        restarts,
        age(pod, now),
        or_none(text(&status["podIPs"][0]["ip"])),
        or_none(text(&spec["nodeName"])),
        or_none(text(&status["nominatedNodeName"])),
        readiness_gates,
    ]);
    let completed =
        |reason: &str, message: &str| json!([{ "type": "Completed", "status": "True", "reason": reason, "message": message }]);
    let conditions = match phase.as_str() {
        "Succeeded" => Some(completed("Succeeded", "The pod has completed successfully.")),
        "Failed" => Some(completed("Failed", "The pod failed.")),
        _ => None,
    };
    (cells, conditions)
}

fn row(api: Api, obj: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let (cells, conditions) = match api {
        Api::Nodes => (node_cells(obj, now), None),
        Api::CoreEvents | Api::Events => (event_cells(obj, now), None),
        Api::Pods => pod_cells(obj, now),
        Api::Leases => (json!([obj["metadata"]["name"], lease::holder(obj), age(obj, now)]), None),
    };
    let mut row = json!({ "cells": cells });
    if let Some(c) = conditions {
        row["conditions"] = c;
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(obj),
        IncludeObject::Object => row["object"] = api.to_wire(obj),
    }
    row
}

/// A Table of stored objects of `api`, with the list's metadata (resourceVersion, continue).
pub fn table<'a>(api: Api, objects: impl IntoIterator<Item = &'a Value>, list_meta: Value, include: IncludeObject) -> Value {
    let now = Timestamp::now();
    let columns = match api {
        Api::Nodes => node_columns(),
        Api::CoreEvents | Api::Events => event_columns(),
        Api::Pods => pod_columns(),
        Api::Leases => json!([
            col("Name", "name", 0, NAME_DESCRIPTION),
            col("Holder", "", 0, "HolderIdentity contains the identity of the holder of a current lease."),
            col("Age", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        ]),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": objects.into_iter().map(|o| row(api, o, include, now)).collect::<Vec<_>>(),
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
        let t = table(Api::Nodes, [&node], json!({"resourceVersion": "7"}), IncludeObject::Metadata);
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

    #[test]
    fn pod_rows() {
        let created = ago(600);
        let running = json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}],
                     "readinessGates": [{"conditionType": "example.com/gate"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}], "conditions": [{"type": "example.com/gate", "status": "True"}],
                       "containerStatuses": [
                           {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(7200)}}},
                           {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        });
        let t = table(Api::Pods, [&running], json!({}), IncludeObject::None);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "1/2", "CrashLoopBackOff", "2 (120m ago)", "10m", "10.244.1.5", "n1", "<none>", "1/1"])
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(t["columnDefinitions"][5]["name"], "IP");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let cells = pod_cells(&pending, Timestamp::now()).0;
        assert_eq!(cells, json!(["p", "0/1", "Pending", "0", "<unknown>", "<none>", "<none>", "<none>", "<none>"]));
        let mut deleting = pending.clone();
        deleting["metadata"]["deletionTimestamp"] = json!(ago(0));
        assert_eq!(pod_cells(&deleting, Timestamp::now()).0[2], "Terminating");
        let init = json!({"metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "setup", "state": {"terminated": {"exitCode": 0}}},
                {"name": "proxy", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        let cells = pod_cells(&init, Timestamp::now()).0;
        assert_eq!((cells[1].as_str(), cells[2].as_str()), (Some("0/2"), Some("Init:1/2")));
        let done = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let (cells, conditions) = pod_cells(&done, Timestamp::now());
        assert_eq!(cells[2], "Completed");
        assert_eq!(conditions.unwrap()[0]["reason"], "Succeeded");
    }

    fn ago(secs: i64) -> String {
        let t = Timestamp::now().as_second() - secs;
        Timestamp::from_second(t).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
    }

    #[test]
    fn event_rows() {
        // A new-API event with a series, as kube's Recorder leaves it.
        let series = json!({
            "metadata": {"name": "n1.abc", "namespace": "default"}, "type": "Warning", "reason": "Failed",
            "message": " no route \n", "involvedObject": {"kind": "Node", "name": "n1"}, "source": {},
            "eventTime": ago(300), "firstTimestamp": null, "lastTimestamp": null,
            "series": {"count": 3, "lastObservedTime": ago(30)},
            "reportingComponent": "weft-agent", "reportingInstance": "a",
        });
        let t = table(Api::Events, [&series], json!({}), IncludeObject::Object);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["30s", "Warning", "Failed", "node/n1", "", "weft-agent, a", "no route", "5m", 3, "n1.abc"])
        );
        assert_eq!(t["rows"][0]["object"]["apiVersion"], "events.k8s.io/v1", "the object in the request's group");
        assert_eq!(t["columnDefinitions"][4]["priority"], 1);
        // An old-API event: deprecated source, count, and no name for the object.
        let legacy = json!({
            "metadata": {"name": "x"}, "type": "Normal", "reason": "Starting", "involvedObject": {"kind": "Node"},
            "source": {"component": "kubelet", "host": "n1"}, "count": 0,
            "firstTimestamp": ago(7200), "lastTimestamp": null, "eventTime": null, "reportingComponent": "",
        });
        let cells = event_cells(&legacy, Timestamp::now());
        assert_eq!(cells, json!(["120m", "Normal", "Starting", "node", "", "kubelet, n1", "", "120m", 1, "x"]));
        let nothing = event_cells(&json!({"metadata": {"name": "y"}}), Timestamp::now());
        assert_eq!(
            (cells[5].clone(), nothing[0].clone(), nothing[7].clone()),
            (json!("kubelet, n1"), json!("<unknown>"), json!("<unknown>"))
        );
    }
}
