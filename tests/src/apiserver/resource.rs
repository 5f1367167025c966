//! The resources served, as requests address them: which kind is stored, which
//! group-version speaks it, and the strategy of its registry (decoding,
//! conversion to and from the stored form, validation, field labels, graceful
//! deletion). Events are served by two groups over one store, like upstream's
//! one internal type.

use serde_json::Value;

use super::{
    event::{self, Version},
    lease,
    meta::{self, Decoded, NameRule},
    node::{self, Subresource},
    pod, schema,
    status::{FieldError, GroupResource, Status},
    store::{Key, Store},
};

/// The namespaces that exist (those of a fresh cluster); creating in any other
/// fails as the NamespaceLifecycle admission plugin fails it.
pub const NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

const NAMESPACES_RESOURCE: GroupResource = GroupResource { group: "", resource: "namespaces" };

/// A served resource in one group-version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// core/v1 `nodes`.
    Nodes,
    /// core/v1 `events`.
    CoreEvents,
    /// events.k8s.io/v1 `events`.
    Events,
    /// core/v1 `pods`.
    Pods,
    /// coordination.k8s.io/v1 `leases`.
    Leases,
}

impl Api {
    pub fn group(self) -> &'static str {
        match self {
            Api::Nodes | Api::CoreEvents | Api::Pods => "",
            Api::Events => "events.k8s.io",
            Api::Leases => "coordination.k8s.io",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Api::Nodes | Api::CoreEvents | Api::Pods => "v1",
            Api::Events => event::EVENTS_V1,
            Api::Leases => lease::API_VERSION,
        }
    }

    /// The kind, in the request's group and in storage alike.
    pub fn kind(self) -> &'static str {
        match self {
            Api::Nodes => "Node",
            Api::CoreEvents | Api::Events => "Event",
            Api::Pods => "Pod",
            Api::Leases => "Lease",
        }
    }

    pub fn resource(self) -> &'static str {
        match self {
            Api::Nodes => "nodes",
            Api::CoreEvents | Api::Events => "events",
            Api::Pods => "pods",
            Api::Leases => "leases",
        }
    }

    pub fn group_resource(self) -> GroupResource {
        GroupResource { group: self.group(), resource: self.resource() }
    }

    pub fn namespaced(self) -> bool {
        self != Api::Nodes
    }

    /// Whether the resource has a `status` subresource (which alone writes the
    /// status; the main resource keeps it).
    pub fn has_status(self) -> bool {
        matches!(self, Api::Nodes | Api::Pods)
    }

    /// The OpenAPI component of the kind in this group-version (strategic merge
    /// patch reads its list strategies).
    pub fn schema(self) -> &'static str {
        match self {
            Api::Nodes => schema::NODE,
            Api::CoreEvents => schema::CORE_EVENT,
            Api::Events => schema::EVENTS_EVENT,
            Api::Pods => schema::POD,
            Api::Leases => schema::LEASE,
        }
    }

    fn event_version(self) -> Option<Version> {
        match self {
            Api::Nodes | Api::Pods | Api::Leases => None,
            Api::CoreEvents => Some(Version::Core),
            Api::Events => Some(Version::EventsV1),
        }
    }

    /// Decodes a body of this group-version into the stored form.
    pub fn decode(self, v: &Value) -> Result<Decoded, Status> {
        match (self, self.event_version()) {
            (Api::Pods, _) => pod::decode_value(v),
            (Api::Leases, _) => lease::decode_value(v),
            (_, None) => node::decode_value(v),
            (_, Some(version)) => event::decode_value(v, version),
        }
    }

    pub fn decode_body(self, body: &[u8]) -> Result<Decoded, Status> {
        self.decode(&meta::parse(body)?)
    }

    /// A stored object as this group-version serves it.
    pub fn to_wire(self, stored: &Value) -> Value {
        match self {
            Api::Nodes | Api::CoreEvents | Api::Pods | Api::Leases => stored.clone(),
            Api::Events => event::to_events_v1(stored),
        }
    }

    /// Whether a PUT to a missing object creates it (the Event strategy's
    /// `AllowCreateOnUpdate`; Nodes and Pods do not).
    pub fn create_on_update(self) -> bool {
        matches!(self, Api::CoreEvents | Api::Events)
    }

    /// The strategy's `PrepareForCreate`, after the metadata's (`rest.BeforeCreate`).
    pub fn prepare_create(self, obj: &mut Value) {
        if self == Api::Pods {
            pod::prepare_create(obj);
        }
    }

    /// The grace period a DELETE of `obj` gets (`CheckGracefulDelete`): `None`
    /// for kinds deleted at once, which are all but Pods.
    pub fn grace_period(self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        (self == Api::Pods).then(|| pod::grace_period(obj, requested))
    }

    /// The strategy's `Validate`; when it passes, the metadata rules every kind
    /// meets are checked too (`rest.BeforeCreate`).
    pub fn validate_create(self, obj: &Value) -> Vec<FieldError> {
        let errs = match (self, self.event_version()) {
            (Api::Pods, _) => pod::validate(obj),
            (Api::Leases, _) => lease::validate(obj),
            (_, None) => node::validate(obj),
            (_, Some(version)) => event::validate_create(obj, version),
        };
        if !errs.is_empty() {
            return errs;
        }
        meta::validate_object_meta(obj, NameRule::PathSegment)
    }

    /// The strategy's `PrepareForUpdate`.
    pub fn prepare_update(self, new: &mut Value, old: &Value, sub: Subresource) {
        match self {
            Api::Nodes => node::prepare_update(new, old, sub),
            Api::Pods => pod::prepare_update(new, old, sub),
            Api::CoreEvents | Api::Events | Api::Leases => {}
        }
    }

    /// The common metadata rules, then the strategy's `ValidateUpdate`.
    pub fn validate_update(self, new: &Value, old: &Value) -> Vec<FieldError> {
        match (self, self.event_version()) {
            (Api::Pods, _) => pod::validate_update(new, old),
            (Api::Leases, _) => lease::validate_update(new, old),
            (_, None) => node::validate_update(new, old),
            (_, Some(version)) => {
                let rule = if version == Version::EventsV1 { NameRule::Subdomain } else { NameRule::PathSegment };
                let mut errs = meta::validate_object_meta(new, rule);
                errs.extend(meta::no_new_finalizers(new, old));
                errs.extend(event::validate_update(new, old, version));
                errs
            }
        }
    }

    /// 422 naming the kind as upstream does: Events of either group are the one
    /// internal kind, registered under the core group first; a Lease is
    /// `Lease.coordination.k8s.io`.
    pub fn invalid(self, name: &str, errs: &[FieldError]) -> Status {
        let group = if self == Api::Leases { self.group() } else { "" };
        Status::invalid(self.kind(), group, name, errs)
    }

    /// The stored label a field selector's `label` names here (`None`: not a
    /// label this resource supports).
    pub fn field_label(self, label: &str) -> Option<&'static str> {
        match (self, self.event_version()) {
            (Api::Pods, _) => pod::field_label(label),
            (Api::Leases, _) => lease::FIELD_LABELS.iter().find(|l| **l == label).copied(),
            (_, None) => node::FIELD_LABELS.iter().find(|l| **l == label).copied(),
            (_, Some(version)) => event::field_label(version, label),
        }
    }
}

/// A stored object's value for a stored field label.
pub fn field_value(obj: &Value, label: &str) -> Option<String> {
    match obj["kind"].as_str() {
        Some("Node") => node::field_label(obj, label),
        Some("Event") => event::field_value(obj, label),
        Some("Pod") => pod::field_value(obj, label),
        Some("Lease") => lease::field_value(obj, label),
        _ => None,
    }
}

/// What a request addresses: a resource and, for a namespaced one, a namespace
/// (`None`: all of them, for lists and watches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub api: Api,
    pub namespace: Option<String>,
}

impl Scope {
    pub fn cluster(api: Api) -> Scope {
        Scope { api, namespace: None }
    }

    pub fn namespaced(api: Api, namespace: &str) -> Scope {
        Scope { api, namespace: Some(namespace.to_string()) }
    }

    /// The namespace objects written here get ("" for cluster-scoped ones).
    pub fn request_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    pub fn key(&self, name: &str) -> Key {
        Key { kind: self.api.kind().to_string(), namespace: self.request_namespace().to_string(), name: name.to_string() }
    }

    pub fn contains(&self, key: &Key) -> bool {
        key.kind == self.api.kind() && self.namespace.as_deref().is_none_or(|n| key.namespace == n)
    }

    pub fn objects<'a>(&'a self, store: &'a Store) -> impl Iterator<Item = (&'a Key, &'a Value)> {
        store.range(self.api.kind(), self.namespace.as_deref())
    }

    /// NamespaceLifecycle admission: writes that may create need the namespace to exist.
    pub fn admit_create(&self) -> Result<(), Status> {
        match self.namespace.as_deref() {
            Some(ns) if !NAMESPACES.contains(&ns) => Err(Status::not_found(NAMESPACES_RESOURCE, ns)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scopes_select_kinds_and_namespaces() {
        let all = Scope::cluster(Api::Events);
        let default = Scope::namespaced(Api::CoreEvents, "default");
        let key = default.key("e1");
        assert!(all.contains(&key) && default.contains(&key));
        assert!(!Scope::namespaced(Api::Events, "kube-system").contains(&key));
        assert!(!Scope::cluster(Api::Nodes).contains(&key));
        assert!(!Scope::cluster(Api::Pods).contains(&key), "pods and events share namespaces, not keys");
        assert_eq!(Scope::cluster(Api::Nodes).key("a").namespace, "");
        let missing = Scope::namespaced(Api::Events, "nope").admit_create().unwrap_err();
        assert_eq!((missing.code, missing.message.as_str()), (404, "namespaces \"nope\" not found"));
        assert_eq!(missing.details, Some(json!({"name": "nope", "kind": "namespaces"})));
        assert!(Scope::cluster(Api::Nodes).admit_create().is_ok());
    }

    #[test]
    fn field_labels_by_group() {
        assert_eq!(Api::Nodes.field_label("spec.unschedulable"), Some("spec.unschedulable"));
        assert_eq!(Api::Nodes.field_label("type"), None);
        assert_eq!(Api::CoreEvents.field_label("type"), Some("type"));
        assert_eq!(Api::Events.field_label("regarding.name"), Some("involvedObject.name"));
        let node = json!({"kind": "Node", "metadata": {"name": "a"}});
        assert_eq!(field_value(&node, "metadata.name").as_deref(), Some("a"));
        assert_eq!(Api::Pods.field_label("spec.host"), Some("spec.nodeName"));
        assert_eq!(Api::Pods.field_label("spec.unschedulable"), None);
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"}});
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("n1"));
    }
}
