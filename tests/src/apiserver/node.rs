//! What kube-apiserver's Node registry does around storage: decoding (unknown
//! fields dropped, `podCIDR`/`podCIDRs` reconciled as the v1 conversion does),
//! the reset rules of the main resource and the `status` subresource,
//! validation on create and update, and field labels. What every kind shares
//! (system metadata, name rules) is in [`super::meta`].
//!
//! Decoding goes through k8s-openapi's typed `Node`: what the server stores is
//! always something a typed client can read back, and fields the type does not
//! know are pruned as the real server prunes them.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::{
    meta::{self, Decoded, NameRule, label_value_errors, qualified_name_errors, strs},
    status::{FieldError, Status},
};

/// Which part of a Node a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/nodes/{name}`: metadata and spec; status changes are ignored. The only
    /// part of the other kinds.
    Main,
    /// `/nodes/{name}/status`: metadata and status; spec changes are ignored.
    Status,
    /// Not an API path: a test writing storage directly changes everything.
    Whole,
}

pub fn decode_value(v: &Value) -> Result<Decoded, Status> {
    meta::check_type(v, "v1", "Node")?;
    let mut typed: Node = serde_json::from_value(v.clone())
        .map_err(|e| Status::bad_request(format!("Node in version \"v1\" cannot be handled as a Node: {e}")))?;
    // v1 → internal → v1: `podCIDR` wins when both are set and differ, and
    // `podCIDR` is always `podCIDRs[0]` on the way out.
    let spec = typed.spec.get_or_insert_default();
    let single = spec.pod_cidr.clone().filter(|c| !c.is_empty());
    let mut list = spec.pod_cidrs.clone().unwrap_or_default();
    if let Some(c) = single
        && list.first() != Some(&c)
    {
        list = vec![c];
    }
    spec.pod_cidr = list.first().cloned();
    spec.pod_cidrs = (!list.is_empty()).then_some(list);
    typed.status.get_or_insert_default();
    let node = serde_json::to_value(&typed).map_err(|e| Status::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    meta::unknown_fields(v, &node, "", &mut unknown);
    Ok(Decoded { object: node, unknown })
}

/// The Node strategy's `PrepareForUpdate`: what a write to `sub` may not change.
pub fn prepare_update(new: &mut Value, old: &Value, sub: Subresource) {
    match sub {
        Subresource::Main => new["status"] = old["status"].clone(),
        Subresource::Status => new["spec"] = old["spec"].clone(),
        Subresource::Whole => {}
    }
}

fn cidr_family(s: &str) -> Option<bool> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|_| !len.starts_with('+'))?;
    (len <= if ip.is_ipv4() { 32 } else { 128 }).then_some(ip.is_ipv4())
}

/// `ValidateNode`: what every stored Node satisfies.
pub fn validate(node: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(node, NameRule::Subdomain);
    let cidrs = strs(&node["spec"]["podCIDRs"]);
    let mut families = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        match cidr_family(c) {
            Some(f) => families.push(f),
            None => errs.push(FieldError::invalid(
                &format!("spec.podCIDRs[{i}]"),
                *c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    if cidrs.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
        errs.push(FieldError::invalid("spec.podCIDRs", json!(cidrs), "may specify no more than one CIDR for each IP family"));
    }
    let mut seen = Vec::new();
    for (i, t) in node["spec"]["taints"].as_array().into_iter().flatten().enumerate() {
        let path = format!("spec.taints[{i}]");
        let key = t["key"].as_str().unwrap_or_default();
        let effect = t["effect"].as_str().unwrap_or_default();
        match key {
            "" => errs.push(FieldError::required(&format!("{path}.key"), "")),
            k => errs.extend(qualified_name_errors(k).into_iter().map(|e| FieldError::invalid(&format!("{path}.key"), k, e))),
        }
        let value = t["value"].as_str().unwrap_or_default();
        errs.extend(label_value_errors(value).into_iter().map(|e| FieldError::invalid(&format!("{path}.value"), value, e)));
        const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
        match effect {
            "" => errs.push(FieldError::required(&format!("{path}.effect"), "")),
            e if !EFFECTS.contains(&e) => errs.push(FieldError::not_supported(&format!("{path}.effect"), e, EFFECTS)),
            _ => {}
        }
        if seen.contains(&(key, effect)) {
            let mut dup = FieldError::duplicate(&path, format!("{key}:{effect}"));
            dup.detail = "taints must be unique by key and effect pair".into();
            errs.push(dup);
        }
        seen.push((key, effect));
    }
    errs
}

/// `ValidateNodeUpdate`: [`validate`] plus what may not change once set.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate(new);
    let old_cidrs = strs(&old["spec"]["podCIDRs"]);
    if !old_cidrs.is_empty() && old_cidrs != strs(&new["spec"]["podCIDRs"]) {
        errs.push(FieldError::forbidden("spec.podCIDRs", "node updates may not change podCIDR except from \"\" to valid"));
    }
    let old_provider = old["spec"]["providerID"].as_str().unwrap_or_default();
    if !old_provider.is_empty() && Some(old_provider) != new["spec"]["providerID"].as_str() {
        errs.push(FieldError::forbidden("spec.providerID", "node updates may not change providerID except from \"\" to valid"));
    }
    errs.extend(meta::no_new_finalizers(new, old));
    errs
}

/// The field labels Nodes support.
pub const FIELD_LABELS: &[&str] = &["metadata.name", "spec.unschedulable"];

/// A Node field label's value (`None`: not a label Nodes support).
pub fn field_label(node: &Value, label: &str) -> Option<String> {
    match label {
        "metadata.name" => Some(meta::name(node).to_string()),
        "spec.unschedulable" => Some(node["spec"]["unschedulable"].as_bool().unwrap_or(false).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_prunes_unknown_fields_and_reconciles_pod_cidrs() {
        let d = decode_value(&json!({
            "metadata": {"name": "a", "bogus": 1},
            "spec": {"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.9.0/24"], "extra": null},
            "status": {"conditions": [{"type": "Ready", "status": "True", "nope": "x"}]},
        }))
        .unwrap();
        assert_eq!(d.unknown, ["metadata.bogus", "status.conditions[0].nope"]);
        assert_eq!(d.object["kind"], "Node");
        assert_eq!(d.object["spec"], json!({"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24"]}));
        let only_list = decode_value(&json!({"metadata": {"name": "a"}, "spec": {"podCIDRs": ["10.0.2.0/24"]}})).unwrap();
        assert_eq!(only_list.object["spec"]["podCIDR"], "10.0.2.0/24");
        assert_eq!(decode_value(&json!({"kind": "Pod"})).unwrap_err().code, 400);
        assert_eq!(decode_value(&json!({"metadata": {"labels": {"a": 1}}})).unwrap_err().code, 400);
    }

    #[test]
    fn validation_messages() {
        let node = |v: Value| decode_value(&v).unwrap().object;
        let errs = validate(&node(json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "bad value"}},
                                          "spec": {"podCIDR": "10.0.0.0/33"}})));
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text[0].starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{text:?}");
        assert!(text[1].starts_with("metadata.labels: Invalid value: \"bad value\""), "{text:?}");
        assert!(text[2].starts_with("spec.podCIDRs[0]: Invalid value: \"10.0.0.0/33\": must be a valid CIDR"), "{text:?}");
        let old = node(json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.0.0.0/24"}}));
        let new = node(json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.0.1.0/24"}}));
        assert_eq!(
            validate_update(&new, &old).iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
        );
        let unset = node(json!({"metadata": {"name": "a"}}));
        assert!(validate_update(&old, &unset).is_empty(), "from empty to valid is allowed");
        let dual = node(json!({"metadata": {"name": "a"}, "spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}}));
        assert!(validate(&dual).is_empty());
        let taints = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}));
        assert_eq!(
            validate(&taints)[0].to_string(),
            "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
        );
    }

    #[test]
    fn status_writes_keep_spec_and_main_writes_keep_status() {
        let old = decode_value(&json!({"metadata": {"name": "a", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"},
                                       "spec": {"unschedulable": true}, "status": {"phase": "Running"}}))
        .unwrap()
        .object;
        let mut new = decode_value(&json!({"metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {}, "status": {}}))
            .unwrap()
            .object;
        prepare_update(&mut new, &old, Subresource::Status);
        assert_eq!((new["spec"]["unschedulable"].clone(), new["status"].clone()), (json!(true), json!({})));
        let mut new = old.clone();
        new["spec"] = json!({});
        new["status"] = json!({});
        prepare_update(&mut new, &old, Subresource::Main);
        assert_eq!((new["spec"].clone(), new["status"]["phase"].as_str()), (json!({}), Some("Running")));
    }
}
