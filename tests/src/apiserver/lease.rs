//! What kube-apiserver's Lease registry (coordination.k8s.io/v1) does around
//! storage: decoding through k8s-openapi's typed `Lease` (unknown fields
//! pruned), and `ValidateLease` (name a DNS subdomain, a positive
//! `leaseDurationSeconds`, a non-negative `leaseTransitions`, a known
//! `strategy`, `preferredHolder` only with one). The strategy has no
//! `PrepareForUpdate` and no status: a PUT replaces the whole object, and
//! leader election relies only on the generic optimistic concurrency.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{Value, json};

use super::{
    meta::{self, Decoded, NameRule},
    status::{FieldError, Status},
};

pub const API_VERSION: &str = "coordination.k8s.io/v1";

/// The coordinated leader election strategies the API accepts.
const STRATEGIES: &[&str] = &["OldestEmulationVersion"];

pub fn decode_value(v: &Value) -> Result<Decoded, Status> {
    meta::check_type(v, API_VERSION, "Lease")?;
    let typed: Lease = serde_json::from_value(v.clone())
        .map_err(|e| Status::bad_request(format!("Lease in version \"v1\" cannot be handled as a Lease: {e}")))?;
    let lease = serde_json::to_value(&typed).map_err(|e| Status::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    meta::unknown_fields(v, &lease, "", &mut unknown);
    Ok(Decoded { object: lease, unknown })
}

/// `ValidateLease` (on create and, unchanged, on update: `ValidateLeaseUpdate`
/// adds only the common metadata rules).
pub fn validate(lease: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(lease, NameRule::Subdomain);
    let spec = &lease["spec"];
    if let Some(d) = spec["leaseDurationSeconds"].as_i64().filter(|d| *d <= 0) {
        errs.push(FieldError::invalid("spec.leaseDurationSeconds", d, "must be greater than 0"));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64().filter(|t| *t < 0) {
        errs.push(FieldError::invalid("spec.leaseTransitions", t, "must be greater than or equal to 0"));
    }
    let strategy = spec["strategy"].as_str().unwrap_or_default();
    if !strategy.is_empty() && !STRATEGIES.contains(&strategy) {
        errs.push(FieldError::not_supported("spec.strategy", strategy, STRATEGIES));
    }
    if spec["preferredHolder"].as_str().is_some_and(|p| !p.is_empty()) && strategy.is_empty() {
        errs.push(FieldError::forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"));
    }
    errs
}

/// `ValidateLeaseUpdate`: the metadata's update rules, then [`validate`].
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate(new);
    errs.extend(meta::no_new_finalizers(new, old));
    errs
}

/// Leases support only the generic field labels.
pub const FIELD_LABELS: &[&str] = &["metadata.name", "metadata.namespace"];

pub fn field_value(lease: &Value, label: &str) -> Option<String> {
    match label {
        "metadata.name" => Some(meta::name(lease).to_string()),
        "metadata.namespace" => Some(meta::namespace(lease).to_string()),
        _ => None,
    }
}

/// The Table columns `kubectl get leases` shows (upstream's printer: Name, Holder, Age).
pub fn holder(lease: &Value) -> Value {
    json!(lease["spec"]["holderIdentity"].as_str().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(spec: Value) -> Value {
        decode_value(&json!({"apiVersion": API_VERSION, "kind": "Lease",
                             "metadata": {"name": "weft-allocator", "namespace": "kube-system"}, "spec": spec}))
        .unwrap()
        .object
    }

    #[test]
    fn decodes_typed_and_prunes_unknown_fields() {
        let d = decode_value(&json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "bogus": 1,
                                     "renewTime": "2026-01-01T00:00:00.000001Z"}}))
        .unwrap();
        assert_eq!(d.unknown, ["spec.bogus"]);
        assert_eq!(d.object["spec"]["renewTime"], "2026-01-01T00:00:00.000001Z", "MicroTime keeps microseconds");
        assert_eq!(decode_value(&json!({"kind": "Node"})).unwrap_err().code, 400);
        let wrong = decode_value(&json!({"spec": {"leaseDurationSeconds": "15"}})).unwrap_err();
        assert!(wrong.message.starts_with("Lease in version \"v1\" cannot be handled as a Lease"), "{wrong}");
    }

    #[test]
    fn validation_messages() {
        let text = |v: &Value| validate(v).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(validate(&lease(json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}))).is_empty());
        assert_eq!(
            text(&lease(json!({"leaseDurationSeconds": 0, "leaseTransitions": -1}))),
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        assert_eq!(
            text(&lease(json!({"preferredHolder": "b"}))),
            ["spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined"]
        );
        assert_eq!(
            text(&lease(json!({"strategy": "Newest"}))),
            ["spec.strategy: Unsupported value: \"Newest\": supported values: \"OldestEmulationVersion\""]
        );
    }
}
