//! The OpenAPI schemas of the kinds served (Node, core/v1 and events.k8s.io/v1
//! Event, Pod, and the meta types around them), in the shape kube-apiserver
//! publishes under `/openapi/v3`.
//!
//! They are the one statement of the kinds' structure here: the OpenAPI
//! documents are built from them, and strategic merge patch reads their list
//! strategies
//! (`x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key`, from the Go
//! struct tags upstream) from it, so what clients are told and what the server
//! does cannot drift apart.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

pub const REF_PREFIX: &str = "#/components/schemas/";
pub const NODE: &str = "io.k8s.api.core.v1.Node";
pub const CORE_EVENT: &str = "io.k8s.api.core.v1.Event";
pub const EVENTS_EVENT: &str = "io.k8s.api.events.v1.Event";
pub const POD: &str = "io.k8s.api.core.v1.Pod";
pub const LEASE: &str = "io.k8s.api.coordination.v1.Lease";

fn r(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn strings() -> Value {
    json!({ "type": "array", "items": string(), "x-kubernetes-list-type": "atomic" })
}

fn atomic_list(item: &str) -> Value {
    json!({ "type": "array", "items": r(item), "x-kubernetes-list-type": "atomic" })
}

/// A list merged by `key` under strategic merge patch (and server-side apply).
fn keyed_list(item: &str, key: &str) -> Value {
    json!({
        "type": "array",
        "items": r(item),
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": [key],
        "x-kubernetes-patch-merge-key": key,
        "x-kubernetes-patch-strategy": "merge",
    })
}

fn object(props: Value, required: &[&str]) -> Value {
    let mut o = json!({ "type": "object", "properties": props });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "version": version, "kind": kind }])
}

fn build() -> Map<String, Value> {
    let map_of = |v: Value| json!({ "type": "object", "additionalProperties": v });
    let int64 = json!({ "type": "integer", "format": "int64" });
    let int32 = json!({ "type": "integer", "format": "int32" });
    let mut node = object(
        json!({
            "apiVersion": string(),
            "kind": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.core.v1.NodeSpec"),
            "status": r("io.k8s.api.core.v1.NodeStatus"),
        }),
        &[],
    );
    node["description"] =
        json!("Node is a worker node in Kubernetes. Each node will have a unique identifier in the cache (i.e. in etcd).");
    node["x-kubernetes-group-version-kind"] = gvk("", "v1", "Node");
    let mut node_list = object(
        json!({
            "apiVersion": string(),
            "items": { "type": "array", "items": r(NODE) },
            "kind": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
        }),
        &["items"],
    );
    node_list["x-kubernetes-group-version-kind"] = gvk("", "v1", "NodeList");
    let mut status = object(
        json!({
            "apiVersion": string(),
            "code": int32,
            "details": r("io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails"),
            "kind": string(),
            "message": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
            "reason": string(),
            "status": string(),
        }),
        &[],
    );
    status["x-kubernetes-group-version-kind"] = gvk("", "v1", "Status");
    let config_source = "io.k8s.api.core.v1.NodeConfigSource";
    let micro_time = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
    let time = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
    let reference = "io.k8s.api.core.v1.ObjectReference";
    let source = "io.k8s.api.core.v1.EventSource";
    let mut core_event = object(
        json!({
            "action": string(), "apiVersion": string(), "count": int32, "eventTime": r(micro_time),
            "firstTimestamp": r(time), "involvedObject": r(reference), "kind": string(),
            "lastTimestamp": r(time), "message": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"), "reason": string(),
            "related": r(reference), "reportingComponent": string(), "reportingInstance": string(),
            "series": r("io.k8s.api.core.v1.EventSeries"), "source": r(source), "type": string(),
        }),
        &["metadata", "involvedObject"],
    );
    core_event["description"] = json!(
        "Event is a report of an event somewhere in the cluster.  Events have a limited retention time and triggers and messages may evolve with time.  Event consumers should not rely on the timing of an event with a given Reason reflecting a consistent underlying trigger, or the continued existence of events with that Reason.  Events should be treated as informative, best-effort, supplemental data."
    );
    core_event["x-kubernetes-group-version-kind"] = gvk("", "v1", "Event");
    let mut events_event = object(
        json!({
            "action": string(), "apiVersion": string(), "deprecatedCount": int32,
            "deprecatedFirstTimestamp": r(time), "deprecatedLastTimestamp": r(time),
            "deprecatedSource": r(source), "eventTime": r(micro_time), "kind": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"), "note": string(),
            "reason": string(), "regarding": r(reference), "related": r(reference),
            "reportingController": string(), "reportingInstance": string(),
            "series": r("io.k8s.api.events.v1.EventSeries"), "type": string(),
        }),
        &["eventTime"],
    );
    events_event["description"] = json!(
        "Event is a report of an event somewhere in the cluster. It generally denotes some state change in the system. Events have a limited retention time and triggers and messages may evolve with time.  Event consumers should not rely on the timing of an event with a given Reason reflecting a consistent underlying trigger, or the continued existence of events with that Reason.  Events should be treated as informative, best-effort, supplemental data."
    );
    events_event["x-kubernetes-group-version-kind"] = gvk("events.k8s.io", "v1", "Event");
    let list = |item: &str, group: &str, version: &str, kind: &str| {
        let mut l = object(
            json!({
                "apiVersion": string(),
                "items": { "type": "array", "items": r(item) },
                "kind": string(),
                "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
            }),
            &["items"],
        );
        l["x-kubernetes-group-version-kind"] = gvk(group, version, kind);
        l
    };
    let mut object_reference = object(
        json!({
            "apiVersion": string(), "fieldPath": string(), "kind": string(), "name": string(),
            "namespace": string(), "resourceVersion": string(), "uid": string(),
        }),
        &[],
    );
    object_reference["x-kubernetes-map-type"] = json!("atomic");
    let event_schemas = json!({
        CORE_EVENT: core_event,
        "io.k8s.api.core.v1.EventList": list(CORE_EVENT, "", "v1", "EventList"),
        "io.k8s.api.core.v1.EventSeries": object(json!({ "count": int32, "lastObservedTime": r(micro_time) }), &[]),
        source: object(json!({ "component": string(), "host": string() }), &[]),
        reference: object_reference,
        EVENTS_EVENT: events_event,
        "io.k8s.api.events.v1.EventList": list(EVENTS_EVENT, "events.k8s.io", "v1", "EventList"),
        "io.k8s.api.events.v1.EventSeries": object(
            json!({ "count": int32, "lastObservedTime": r(micro_time) }),
            &["count", "lastObservedTime"],
        ),
        micro_time: { "type": "string", "format": "date-time" },
    });
    let schemas = json!({
        NODE: node,
        "io.k8s.api.core.v1.NodeList": node_list,
        "io.k8s.api.core.v1.NodeSpec": object(json!({
            "configSource": r(config_source),
            "externalID": string(),
            "podCIDR": string(),
            "podCIDRs": {
                "type": "array", "items": string(),
                "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge",
            },
            "providerID": string(),
            "taints": atomic_list("io.k8s.api.core.v1.Taint"),
            "unschedulable": { "type": "boolean" },
        }), &[]),
        "io.k8s.api.core.v1.Taint": object(json!({
            "effect": string(), "key": string(),
            "timeAdded": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"), "value": string(),
        }), &["key", "effect"]),
        config_source: object(json!({ "configMap": r("io.k8s.api.core.v1.ConfigMapNodeConfigSource") }), &[]),
        "io.k8s.api.core.v1.ConfigMapNodeConfigSource": object(json!({
            "kubeletConfigKey": string(), "name": string(), "namespace": string(),
            "resourceVersion": string(), "uid": string(),
        }), &["namespace", "name", "kubeletConfigKey"]),
        "io.k8s.api.core.v1.NodeStatus": object(json!({
            "addresses": keyed_list("io.k8s.api.core.v1.NodeAddress", "type"),
            "allocatable": map_of(r("io.k8s.apimachinery.pkg.api.resource.Quantity")),
            "capacity": map_of(r("io.k8s.apimachinery.pkg.api.resource.Quantity")),
            "conditions": keyed_list("io.k8s.api.core.v1.NodeCondition", "type"),
            "config": r("io.k8s.api.core.v1.NodeConfigStatus"),
            "daemonEndpoints": r("io.k8s.api.core.v1.NodeDaemonEndpoints"),
            "features": r("io.k8s.api.core.v1.NodeFeatures"),
            "images": atomic_list("io.k8s.api.core.v1.ContainerImage"),
            "nodeInfo": r("io.k8s.api.core.v1.NodeSystemInfo"),
            "phase": string(),
            "runtimeHandlers": atomic_list("io.k8s.api.core.v1.NodeRuntimeHandler"),
            "volumesAttached": atomic_list("io.k8s.api.core.v1.AttachedVolume"),
            "volumesInUse": strings(),
        }), &[]),
        "io.k8s.api.core.v1.NodeAddress": object(json!({ "address": string(), "type": string() }), &["type", "address"]),
        "io.k8s.api.core.v1.NodeCondition": object(json!({
            "lastHeartbeatTime": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
            "lastTransitionTime": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
            "message": string(), "reason": string(), "status": string(), "type": string(),
        }), &["type", "status"]),
        "io.k8s.api.core.v1.NodeConfigStatus": object(json!({
            "active": r(config_source), "assigned": r(config_source),
            "error": string(), "lastKnownGood": r(config_source),
        }), &[]),
        "io.k8s.api.core.v1.NodeDaemonEndpoints": object(json!({
            "kubeletEndpoint": r("io.k8s.api.core.v1.DaemonEndpoint"),
        }), &[]),
        "io.k8s.api.core.v1.DaemonEndpoint": object(json!({ "Port": int32 }), &["Port"]),
        "io.k8s.api.core.v1.NodeFeatures": object(json!({ "supplementalGroupsPolicy": { "type": "boolean" } }), &[]),
        "io.k8s.api.core.v1.ContainerImage": object(json!({ "names": strings(), "sizeBytes": int64 }), &[]),
        "io.k8s.api.core.v1.NodeSystemInfo": object(json!({
            "architecture": string(), "bootID": string(), "containerRuntimeVersion": string(),
            "kernelVersion": string(), "kubeProxyVersion": string(), "kubeletVersion": string(),
            "machineID": string(), "operatingSystem": string(), "osImage": string(),
            "swap": r("io.k8s.api.core.v1.NodeSwapStatus"), "systemUUID": string(),
        }), &["machineID", "systemUUID", "bootID", "kernelVersion", "osImage", "containerRuntimeVersion",
              "kubeletVersion", "kubeProxyVersion", "operatingSystem", "architecture"]),
        "io.k8s.api.core.v1.NodeSwapStatus": object(json!({ "capacity": int64 }), &[]),
        "io.k8s.api.core.v1.NodeRuntimeHandler": object(json!({
            "features": r("io.k8s.api.core.v1.NodeRuntimeHandlerFeatures"), "name": string(),
        }), &[]),
        "io.k8s.api.core.v1.NodeRuntimeHandlerFeatures": object(json!({
            "recursiveReadOnlyMounts": { "type": "boolean" }, "userNamespaces": { "type": "boolean" },
        }), &[]),
        "io.k8s.api.core.v1.AttachedVolume": object(json!({ "devicePath": string(), "name": string() }), &["name", "devicePath"]),
        "io.k8s.apimachinery.pkg.api.resource.Quantity": { "type": "string", "format": "quantity" },
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time": { "type": "string", "format": "date-time" },
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": object(json!({
            "annotations": map_of(string()),
            "creationTimestamp": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
            "deletionGracePeriodSeconds": int64,
            "deletionTimestamp": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
            "finalizers": {
                "type": "array", "items": string(),
                "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge",
            },
            "generateName": string(),
            "generation": int64,
            "labels": map_of(string()),
            "managedFields": atomic_list("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"),
            "name": string(),
            "namespace": string(),
            "ownerReferences": keyed_list("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference", "uid"),
            "resourceVersion": string(),
            "selfLink": string(),
            "uid": string(),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference": object(json!({
            "apiVersion": string(), "blockOwnerDeletion": { "type": "boolean" },
            "controller": { "type": "boolean" }, "kind": string(), "name": string(), "uid": string(),
        }), &["apiVersion", "kind", "name", "uid"]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry": object(json!({
            "apiVersion": string(), "fieldsType": string(), "fieldsV1": { "type": "object" },
            "manager": string(), "operation": string(), "subresource": string(),
            "time": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta": object(json!({
            "continue": string(), "remainingItemCount": int64, "resourceVersion": string(), "selfLink": string(),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status": status,
        "io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails": object(json!({
            "causes": atomic_list("io.k8s.apimachinery.pkg.apis.meta.v1.StatusCause"),
            "group": string(), "kind": string(), "name": string(),
            "retryAfterSeconds": int32, "uid": string(),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.StatusCause": object(json!({
            "field": string(), "message": string(), "reason": string(),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions": object(json!({
            "apiVersion": string(), "dryRun": strings(), "gracePeriodSeconds": int64,
            "ignoreStoreReadErrorWithClusterBreakingPotential": { "type": "boolean" },
            "kind": string(), "orphanDependents": { "type": "boolean" },
            "preconditions": r("io.k8s.apimachinery.pkg.apis.meta.v1.Preconditions"),
            "propagationPolicy": string(),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Preconditions": object(json!({
            "resourceVersion": string(), "uid": string(),
        }), &[]),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch": {
            "type": "object",
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent": object(json!({
            "object": { "type": "object" }, "type": string(),
        }), &["type", "object"]),
    });
    let (Value::Object(mut m), Value::Object(events), Value::Object(pods)) = (schemas, event_schemas, pod_schemas()) else {
        unreachable!()
    };
    m.extend(events);
    m.extend(pods);
    m.extend(lease_schemas(list(LEASE, "coordination.k8s.io", "v1", "LeaseList")));
    m
}

/// Lease, LeaseSpec and LeaseList (`list`).
fn lease_schemas(list: Value) -> Map<String, Value> {
    let int32 = json!({ "type": "integer", "format": "int32" });
    let micro_time = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
    let mut lease = object(
        json!({
            "apiVersion": string(), "kind": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.coordination.v1.LeaseSpec"),
        }),
        &[],
    );
    lease["description"] = json!("Lease defines a lease concept.");
    lease["x-kubernetes-group-version-kind"] = gvk("coordination.k8s.io", "v1", "Lease");
    let spec = object(
        json!({
            "acquireTime": r(micro_time), "holderIdentity": string(), "leaseDurationSeconds": int32,
            "leaseTransitions": int32, "preferredHolder": string(), "renewTime": r(micro_time), "strategy": string(),
        }),
        &[],
    );
    let Value::Object(m) = json!({
        LEASE: lease,
        "io.k8s.api.coordination.v1.LeaseSpec": spec,
        "io.k8s.api.coordination.v1.LeaseList": list,
        micro_time: { "type": "string", "format": "date-time" },
    }) else {
        unreachable!()
    };
    m
}

/// Pod and what it holds. Every field of the v1 types is named with its list
/// strategy (what strategic merge patch and kubectl's patches need); the
/// structs no validation or printing here reads (affinity, probes, security
/// contexts, volume sources, ...) are plain objects.
fn pod_schemas() -> Value {
    let int64 = json!({ "type": "integer", "format": "int64" });
    let int32 = json!({ "type": "integer", "format": "int32" });
    let boolean = json!({ "type": "boolean" });
    let opaque = json!({ "type": "object" });
    let time = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
    let quantities = json!({ "type": "object", "additionalProperties": r("io.k8s.apimachinery.pkg.api.resource.Quantity") });
    let container = "io.k8s.api.core.v1.Container";
    let mut pod = object(
        json!({
            "apiVersion": string(),
            "kind": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.core.v1.PodSpec"),
            "status": r("io.k8s.api.core.v1.PodStatus"),
        }),
        &[],
    );
    pod["description"] = json!(
        "Pod is a collection of containers that can run on a host. This resource is created by clients and scheduled onto hosts."
    );
    pod["x-kubernetes-group-version-kind"] = gvk("", "v1", "Pod");
    let mut pod_list = object(
        json!({
            "apiVersion": string(),
            "items": { "type": "array", "items": r(POD) },
            "kind": string(),
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
        }),
        &["items"],
    );
    pod_list["x-kubernetes-group-version-kind"] = gvk("", "v1", "PodList");
    let mut ports = keyed_list("io.k8s.api.core.v1.ContainerPort", "containerPort");
    ports["x-kubernetes-list-map-keys"] = json!(["containerPort", "protocol"]);
    let container_fields = json!({
        "args": strings(), "command": strings(),
        "env": keyed_list("io.k8s.api.core.v1.EnvVar", "name"),
        "envFrom": atomic_list("io.k8s.api.core.v1.EnvFromSource"),
        "image": string(), "imagePullPolicy": string(), "lifecycle": opaque, "livenessProbe": opaque,
        "name": string(), "ports": ports, "readinessProbe": opaque,
        "resizePolicy": atomic_list("io.k8s.api.core.v1.ContainerResizePolicy"),
        "resources": r("io.k8s.api.core.v1.ResourceRequirements"), "restartPolicy": string(),
        "securityContext": opaque, "startupProbe": opaque, "stdin": boolean, "stdinOnce": boolean,
        "terminationMessagePath": string(), "terminationMessagePolicy": string(), "tty": boolean,
        "volumeDevices": keyed_list("io.k8s.api.core.v1.VolumeDevice", "devicePath"),
        "volumeMounts": keyed_list("io.k8s.api.core.v1.VolumeMount", "mountPath"),
        "workingDir": string(),
    });
    let state = "io.k8s.api.core.v1.ContainerState";
    json!({
        POD: pod,
        "io.k8s.api.core.v1.PodList": pod_list,
        "io.k8s.api.core.v1.PodSpec": object(json!({
            "activeDeadlineSeconds": int64, "affinity": opaque, "automountServiceAccountToken": boolean,
            "containers": keyed_list(container, "name"),
            "dnsConfig": opaque, "dnsPolicy": string(), "enableServiceLinks": boolean,
            "ephemeralContainers": keyed_list(container, "name"),
            "hostAliases": keyed_list("io.k8s.api.core.v1.HostAlias", "ip"),
            "hostIPC": boolean, "hostNetwork": boolean, "hostPID": boolean, "hostUsers": boolean,
            "hostname": string(),
            "imagePullSecrets": keyed_list("io.k8s.api.core.v1.LocalObjectReference", "name"),
            "initContainers": keyed_list(container, "name"),
            "nodeName": string(), "nodeSelector": { "type": "object", "additionalProperties": string() },
            "os": opaque, "overhead": quantities, "preemptionPolicy": string(), "priority": int32,
            "priorityClassName": string(), "readinessGates": atomic_list("io.k8s.api.core.v1.PodReadinessGate"),
            "restartPolicy": string(), "runtimeClassName": string(), "schedulerName": string(),
            "securityContext": opaque, "serviceAccount": string(), "serviceAccountName": string(),
            "setHostnameAsFQDN": boolean, "shareProcessNamespace": boolean, "subdomain": string(),
            "terminationGracePeriodSeconds": int64,
            "tolerations": atomic_list("io.k8s.api.core.v1.Toleration"),
            "volumes": keyed_list("io.k8s.api.core.v1.Volume", "name"),
        }), &["containers"]),
        container: object(container_fields, &["name"]),
        "io.k8s.api.core.v1.ContainerPort": object(json!({
            "containerPort": int32, "hostIP": string(), "hostPort": int32, "name": string(), "protocol": string(),
        }), &["containerPort"]),
        "io.k8s.api.core.v1.EnvVar": object(json!({ "name": string(), "value": string(), "valueFrom": opaque }), &["name"]),
        "io.k8s.api.core.v1.EnvFromSource": object(json!({
            "configMapRef": opaque, "prefix": string(), "secretRef": opaque,
        }), &[]),
        "io.k8s.api.core.v1.ContainerResizePolicy": object(json!({
            "resourceName": string(), "restartPolicy": string(),
        }), &["resourceName", "restartPolicy"]),
        "io.k8s.api.core.v1.ResourceRequirements": object(json!({
            "claims": atomic_list("io.k8s.api.core.v1.ResourceClaim"), "limits": quantities, "requests": quantities,
        }), &[]),
        "io.k8s.api.core.v1.ResourceClaim": object(json!({ "name": string(), "request": string() }), &["name"]),
        "io.k8s.api.core.v1.VolumeDevice": object(json!({ "devicePath": string(), "name": string() }), &["name", "devicePath"]),
        "io.k8s.api.core.v1.VolumeMount": object(json!({
            "mountPath": string(), "mountPropagation": string(), "name": string(), "readOnly": boolean,
            "recursiveReadOnly": string(), "subPath": string(), "subPathExpr": string(),
        }), &["name", "mountPath"]),
        "io.k8s.api.core.v1.HostAlias": object(json!({ "hostnames": strings(), "ip": string() }), &["ip"]),
        "io.k8s.api.core.v1.LocalObjectReference": object(json!({ "name": string() }), &[]),
        "io.k8s.api.core.v1.PodReadinessGate": object(json!({ "conditionType": string() }), &["conditionType"]),
        "io.k8s.api.core.v1.Toleration": object(json!({
            "effect": string(), "key": string(), "operator": string(), "tolerationSeconds": int64, "value": string(),
        }), &[]),
        "io.k8s.api.core.v1.Volume": object(json!({
            "configMap": opaque, "downwardAPI": opaque, "emptyDir": opaque, "hostPath": opaque, "name": string(),
            "persistentVolumeClaim": opaque, "projected": opaque, "secret": opaque,
        }), &["name"]),
        "io.k8s.api.core.v1.PodStatus": object(json!({
            "conditions": keyed_list("io.k8s.api.core.v1.PodCondition", "type"),
            "containerStatuses": atomic_list("io.k8s.api.core.v1.ContainerStatus"),
            "ephemeralContainerStatuses": atomic_list("io.k8s.api.core.v1.ContainerStatus"),
            "hostIP": string(), "hostIPs": keyed_list("io.k8s.api.core.v1.HostIP", "ip"),
            "initContainerStatuses": atomic_list("io.k8s.api.core.v1.ContainerStatus"),
            "message": string(), "nominatedNodeName": string(), "observedGeneration": int64, "phase": string(),
            "podIP": string(), "podIPs": keyed_list("io.k8s.api.core.v1.PodIP", "ip"), "qosClass": string(),
            "reason": string(), "resize": string(), "startTime": r(time),
        }), &[]),
        "io.k8s.api.core.v1.PodCondition": object(json!({
            "lastProbeTime": r(time), "lastTransitionTime": r(time), "message": string(),
            "observedGeneration": int64, "reason": string(), "status": string(), "type": string(),
        }), &["type", "status"]),
        "io.k8s.api.core.v1.HostIP": object(json!({ "ip": string() }), &["ip"]),
        "io.k8s.api.core.v1.PodIP": object(json!({ "ip": string() }), &["ip"]),
        "io.k8s.api.core.v1.ContainerStatus": object(json!({
            "allocatedResources": quantities, "containerID": string(), "image": string(), "imageID": string(),
            "lastState": r(state), "name": string(), "ready": boolean, "resources": opaque,
            "restartCount": int32, "started": boolean, "state": r(state), "stopSignal": string(),
            "user": opaque, "volumeMounts": opaque,
        }), &["name", "ready", "restartCount", "image", "imageID"]),
        state: object(json!({
            "running": r("io.k8s.api.core.v1.ContainerStateRunning"),
            "terminated": r("io.k8s.api.core.v1.ContainerStateTerminated"),
            "waiting": r("io.k8s.api.core.v1.ContainerStateWaiting"),
        }), &[]),
        "io.k8s.api.core.v1.ContainerStateRunning": object(json!({ "startedAt": r(time) }), &[]),
        "io.k8s.api.core.v1.ContainerStateTerminated": object(json!({
            "containerID": string(), "exitCode": int32, "finishedAt": r(time), "message": string(),
            "reason": string(), "signal": int32, "startedAt": r(time),
        }), &["exitCode"]),
        "io.k8s.api.core.v1.ContainerStateWaiting": object(json!({ "message": string(), "reason": string() }), &[]),
    })
}

/// `components.schemas` of the core/v1 OpenAPI v3 document.
pub fn components() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(build)
}

/// How strategic merge patch combines a list (upstream's patch strategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the old one (no strategy; "atomic").
    Replace,
    /// A set of scalars: the union, old order first.
    MergeScalars,
    /// Elements matched by the value of this key and merged.
    MergeBy(&'static str),
}

/// A position in the schema, followed along an object as patches walk it.
#[derive(Debug, Clone, Copy)]
pub struct Schema(&'static Value);

impl Schema {
    /// The schema of the named component ([`NODE`]...).
    pub fn named(name: &str) -> Option<Schema> {
        components().get(name).map(Schema)
    }

    fn resolve(v: &'static Value) -> Option<Schema> {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => Schema::named(r.strip_prefix(REF_PREFIX)?),
            None => Some(Schema(v)),
        }
    }

    /// The schema of a property (or of any value, for a map).
    pub fn field(self, name: &str) -> Option<Schema> {
        let v = self.0.get("properties").and_then(|p| p.get(name)).or_else(|| self.0.get("additionalProperties"))?;
        Schema::resolve(v)
    }

    /// The schema of a list's elements.
    pub fn items(self) -> Option<Schema> {
        Schema::resolve(self.0.get("items")?)
    }

    pub fn list_strategy(self) -> ListStrategy {
        if self.0.get("x-kubernetes-patch-strategy").and_then(Value::as_str) != Some("merge") {
            return ListStrategy::Replace;
        }
        // The only merge keys this schema uses; `'static` keeps the enum `Copy`.
        match self.0.get("x-kubernetes-patch-merge-key").and_then(Value::as_str) {
            None => ListStrategy::MergeScalars,
            Some("type") => ListStrategy::MergeBy("type"),
            Some("uid") => ListStrategy::MergeBy("uid"),
            Some("name") => ListStrategy::MergeBy("name"),
            Some("ip") => ListStrategy::MergeBy("ip"),
            Some("containerPort") => ListStrategy::MergeBy("containerPort"),
            Some("mountPath") => ListStrategy::MergeBy("mountPath"),
            Some("devicePath") => ListStrategy::MergeBy("devicePath"),
            Some(other) => unreachable!("merge key {other} missing from ListStrategy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &[&str]) -> Schema {
        path.iter().fold(Schema::named(NODE).unwrap(), |s, p| s.field(p).unwrap_or_else(|| panic!("no {p}")))
    }

    #[test]
    fn strategies_follow_the_upstream_struct_tags() {
        assert_eq!(at(&["status", "conditions"]).list_strategy(), ListStrategy::MergeBy("type"));
        assert_eq!(at(&["status", "addresses"]).list_strategy(), ListStrategy::MergeBy("type"));
        assert_eq!(at(&["metadata", "ownerReferences"]).list_strategy(), ListStrategy::MergeBy("uid"));
        assert_eq!(at(&["metadata", "finalizers"]).list_strategy(), ListStrategy::MergeScalars);
        assert_eq!(at(&["spec", "podCIDRs"]).list_strategy(), ListStrategy::MergeScalars);
        // Taints are atomic upstream (`+listType=atomic`, no patch strategy).
        assert_eq!(at(&["spec", "taints"]).list_strategy(), ListStrategy::Replace);
        assert!(at(&["metadata", "labels"]).field("any").is_some());
        assert!(Schema::named(NODE).unwrap().field("bogus").is_none());
        let pod =
            |path: &[&str]| path.iter().fold(Schema::named(POD).unwrap(), |s, p| s.field(p).unwrap_or_else(|| panic!("no {p}")));
        assert_eq!(pod(&["spec", "containers"]).list_strategy(), ListStrategy::MergeBy("name"));
        let container = pod(&["spec", "containers"]).items().unwrap();
        assert_eq!(container.field("ports").unwrap().list_strategy(), ListStrategy::MergeBy("containerPort"));
        assert_eq!(container.field("volumeMounts").unwrap().list_strategy(), ListStrategy::MergeBy("mountPath"));
        assert_eq!(pod(&["spec", "tolerations"]).list_strategy(), ListStrategy::Replace);
        assert_eq!(pod(&["status", "conditions"]).list_strategy(), ListStrategy::MergeBy("type"));
        assert_eq!(pod(&["status", "podIPs"]).list_strategy(), ListStrategy::MergeBy("ip"));
        assert_eq!(pod(&["status", "containerStatuses"]).list_strategy(), ListStrategy::Replace);
        for event in [CORE_EVENT, EVENTS_EVENT] {
            let finalizers = Schema::named(event).and_then(|s| s.field("metadata")).and_then(|m| m.field("finalizers"));
            assert_eq!(finalizers.map(Schema::list_strategy), Some(ListStrategy::MergeScalars), "{event}");
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let name = r.strip_prefix(REF_PREFIX).unwrap();
                        assert!(components().contains_key(name), "dangling {r}");
                    }
                    m.values().for_each(walk);
                }
                Value::Array(a) => a.iter().for_each(walk),
                _ => {}
            }
        }
        components().values().for_each(walk);
    }
}
