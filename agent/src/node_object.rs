//! The Node as the agent watches it: only the fields it reads.
//!
//! The watch keeps every Node of the cluster in memory. `k8s_openapi`'s `Node`
//! carries the whole object model — spec and status are mostly fields weft never
//! reads (images, node info, capacity, config sources, taints…), ~1.3 KiB per Node
//! even when empty. [`WatchedNode`] deserialises the same JSON into the few fields
//! weft reads; serde skips the rest without allocating it. [`NodeFields`] lets the
//! annotation and table code read either type (a full `Node` comes from `GET`).

use std::borrow::Cow;

use k8s_openapi::{
    ClusterResourceScope,
    api::core::v1::{Node, NodeAddress, NodeCondition},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize};

/// A Node with the fields weft reads (`/api/v1/nodes`, same JSON).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WatchedNode {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<WatchedSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WatchedStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WatchedSpec {
    #[serde(rename = "podCIDR", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidrs: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WatchedStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
    /// Kept for this node only (NetworkUnavailable is ours to clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<NodeCondition>>,
}

impl kube::Resource for WatchedNode {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What weft reads of a Node, from either representation.
pub trait NodeFields {
    fn meta(&self) -> &ObjectMeta;
    fn pod_cidr(&self) -> Option<&str>;
    fn pod_cidrs(&self) -> &[String];
    fn addresses(&self) -> &[NodeAddress];
    fn conditions(&self) -> &[NodeCondition];
}

/// `Node` and `WatchedNode` name these fields alike: one body serves both.
macro_rules! node_fields {
    ($node:ty) => {
        impl NodeFields for $node {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn pod_cidr(&self) -> Option<&str> {
                self.spec.as_ref()?.pod_cidr.as_deref()
            }
            fn pod_cidrs(&self) -> &[String] {
                self.spec.as_ref().and_then(|s| s.pod_cidrs.as_deref()).unwrap_or_default()
            }
            fn addresses(&self) -> &[NodeAddress] {
                self.status.as_ref().and_then(|s| s.addresses.as_deref()).unwrap_or_default()
            }
            fn conditions(&self) -> &[NodeCondition] {
                self.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default()
            }
        }
    };
}

node_fields!(WatchedNode);
node_fields!(Node);

#[cfg(test)]
mod tests {
    use super::*;

    /// The watch's JSON (a full Node, as the API server sends it) lands in the few
    /// fields weft reads, and reads the same through both types.
    #[test]
    fn a_full_node_reads_the_same_both_ways() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "n1", "resourceVersion": "7",
                "annotations": { "flannel.alpha.coreos.com/public-ip": "10.0.0.1", "other": "x" },
                "labels": { "kubernetes.io/hostname": "n1" } },
            "spec": { "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "kind://n1",
                "taints": [{ "key": "k", "effect": "NoSchedule" }] },
            "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.1" }],
                "conditions": [{ "type": "Ready", "status": "True" }],
                "images": [{ "names": ["a"], "sizeBytes": 1 }],
                "nodeInfo": { "machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "k",
                    "osImage": "o", "containerRuntimeVersion": "c", "kubeletVersion": "v", "kubeProxyVersion": "p",
                    "operatingSystem": "linux", "architecture": "amd64" } }
        });
        let lean: WatchedNode = serde_json::from_value(json.clone()).unwrap();
        let full: Node = serde_json::from_value(json).unwrap();
        fn view(n: &impl NodeFields) -> (Option<String>, Option<String>, Vec<String>, Vec<String>, usize) {
            (
                n.meta().name.clone(),
                n.pod_cidr().map(str::to_owned),
                n.pod_cidrs().to_vec(),
                n.addresses().iter().map(|a| a.address.clone()).collect(),
                n.conditions().len(),
            )
        }
        assert_eq!(view(&lean), view(&full));
        assert_eq!(lean.metadata.annotations, full.metadata.annotations);
    }
}
