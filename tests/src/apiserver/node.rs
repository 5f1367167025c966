//! What kube-apiserver's Node registry does around storage: decoding (unknown
//! fields dropped, `podCIDR`/`podCIDRs` reconciled as the v1 conversion does),
//! system fields on create, the reset rules of the main resource and the
//! `status` subresource, validation on create and update, and field labels.
//!
//! Decoding goes through k8s-openapi's typed `Node`: what the server stores is
//! always something a typed client can read back, and fields the type does not
//! know are pruned as the real server prunes them.

use std::{io::Read, net::IpAddr};

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::status::{FieldError, Status};

/// Which part of a Node a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/nodes/{name}`: metadata and spec; status changes are ignored.
    Main,
    /// `/nodes/{name}/status`: metadata and status; spec changes are ignored.
    Status,
    /// Not an API path: a test writing storage directly changes everything.
    Whole,
}

/// A decoded Node and the fields of the input it did not know.
#[derive(Debug)]
pub struct Decoded {
    pub node: Value,
    pub unknown: Vec<String>,
}

/// Decodes a request body as a Node.
pub fn decode(body: &[u8]) -> Result<Decoded, Status> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Status::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    decode_value(&v)
}

pub fn decode_value(v: &Value) -> Result<Decoded, Status> {
    if !v.is_object() {
        return Err(Status::bad_request(format!("couldn't get version/kind; json parse error: expected an object, got {v}")));
    }
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("Node");
    if api_version != "v1" {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version (v1)"
        )));
    }
    if kind != "Node" {
        return Err(Status::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a Node: the object provided is unrecognized or has the wrong kind"
        )));
    }
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
    unknown_fields(v, &node, "", &mut unknown);
    Ok(Decoded { node, unknown })
}

/// Paths present (non-null) in `input` that decoding dropped.
fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, iv) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match o.get(k) {
                    None if !iv.is_null() => out.push(p),
                    Some(ov) => unknown_fields(iv, ov, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0; N];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("reading /dev/urandom");
    b
}

/// A random (version 4) UUID, as `metadata.uid`.
fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// RFC 3339 in seconds, as metav1.Time serializes.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metadata.generateName` + 5 characters from the same alphabet upstream uses.
fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = random_bytes::<5>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    format!("{prefix}{suffix}")
}

/// Fills the fields the server owns on create (`rest.BeforeCreate`).
pub fn prepare_create(node: &mut Value) -> Result<(), Status> {
    let meta = node["metadata"].as_object_mut().expect("decoded nodes have metadata");
    if meta.get("namespace").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
        return Err(Status::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let prefix = meta.get("generateName").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() && !prefix.is_empty() {
        let generated = generate_name(prefix);
        meta.insert("name".into(), json!(generated));
    }
    for server_owned in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(server_owned);
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    Ok(())
}

/// Carries over what a write to `sub` may not change (`PrepareForUpdate` and
/// `rest.BeforeUpdate`); fails on a UID that names another object.
pub fn prepare_update(new: &mut Value, old: &Value, sub: Subresource) -> Result<(), Status> {
    let name = name(old).to_string();
    let old_meta = &old["metadata"];
    let meta = new["metadata"].as_object_mut().expect("decoded nodes have metadata");
    match meta.get("uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() && Some(uid) != old_meta["uid"].as_str() => {
            return Err(Status::conflict(
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old_meta["uid"].as_str().unwrap_or("")
                ),
            ));
        }
        _ => {}
    }
    for kept in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"] {
        match old_meta.get(kept) {
            Some(v) => meta.insert(kept.into(), v.clone()),
            None => meta.remove(kept),
        };
    }
    meta.remove("selfLink");
    match sub {
        Subresource::Main => new["status"] = old["status"].clone(),
        Subresource::Status => new["spec"] = old["spec"].clone(),
        Subresource::Whole => {}
    }
    Ok(())
}

pub fn name(node: &Value) -> &str {
    node["metadata"]["name"].as_str().unwrap_or_default()
}

fn dns1123_subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    (!s.split('.').all(label_ok)).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
         start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            .into()
    })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && edge(&b[0])
        && edge(&b[b.len() - 1])
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// Why `k` is not a qualified name (`prefix/name` or `name`), if it is not.
pub fn qualified_name_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(e) = dns1123_subdomain_error(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    (!name_part_ok(name)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
         alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
         '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            .into()
    })
}

/// Why `v` is not a label value, if it is not.
pub fn label_value_error(v: &str) -> Option<String> {
    (!v.is_empty() && !name_part_ok(v)).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must \
         start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for \
         validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            .into()
    })
}

fn cidr_family(s: &str) -> Option<bool> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|_| !len.starts_with('+'))?;
    (len <= if ip.is_ipv4() { 32 } else { 128 }).then_some(ip.is_ipv4())
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// `ValidateNode`: what every stored Node satisfies.
pub fn validate(node: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = &node["metadata"];
    match meta["name"].as_str().unwrap_or_default() {
        "" => errs.push(FieldError::required("metadata.name", "name or generateName is required")),
        n => errs.extend(dns1123_subdomain_error(n).map(|e| FieldError::invalid("metadata.name", n, e))),
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            errs.extend(qualified_name_error(k).map(|e| FieldError::invalid("metadata.labels", k.as_str(), e)));
            let v = v.as_str().unwrap_or_default();
            errs.extend(label_value_error(v).map(|e| FieldError::invalid("metadata.labels", v, e)));
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut size = 0;
        for (k, v) in annotations {
            errs.extend(
                qualified_name_error(&k.to_lowercase()).map(|e| FieldError::invalid("metadata.annotations", k.as_str(), e)),
            );
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        const MAX: usize = 256 * 1024;
        if size > MAX {
            errs.push(FieldError::too_long("metadata.annotations", MAX));
        }
    }
    for (i, f) in strs(&meta["finalizers"]).into_iter().enumerate() {
        errs.extend(qualified_name_error(f).map(|e| FieldError::invalid(&format!("metadata.finalizers[{i}]"), f, e)));
    }
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
            k => errs.extend(qualified_name_error(k).map(|e| FieldError::invalid(&format!("{path}.key"), k, e))),
        }
        let value = t["value"].as_str().unwrap_or_default();
        errs.extend(label_value_error(value).map(|e| FieldError::invalid(&format!("{path}.value"), value, e)));
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
    if old["metadata"]["deletionTimestamp"].is_string() {
        let old_f = strs(&old["metadata"]["finalizers"]);
        let added: Vec<&str> = strs(&new["metadata"]["finalizers"]).into_iter().filter(|f| !old_f.contains(f)).collect();
        if !added.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
            ));
        }
    }
    errs
}

/// A Node field label's value (`None`: not a label Nodes support).
pub fn field_label(node: &Value, label: &str) -> Option<String> {
    match label {
        "metadata.name" => Some(name(node).to_string()),
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
        assert_eq!(d.node["kind"], "Node");
        assert_eq!(d.node["spec"], json!({"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24"]}));
        let only_list = decode_value(&json!({"metadata": {"name": "a"}, "spec": {"podCIDRs": ["10.0.2.0/24"]}})).unwrap();
        assert_eq!(only_list.node["spec"]["podCIDR"], "10.0.2.0/24");
        assert_eq!(decode_value(&json!({"kind": "Pod"})).unwrap_err().code, 400);
        assert_eq!(decode_value(&json!({"metadata": {"labels": {"a": 1}}})).unwrap_err().code, 400);
    }

    #[test]
    fn validation_messages() {
        let node = |v: Value| decode_value(&v).unwrap().node;
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
        .node;
        let mut new =
            decode_value(&json!({"metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {}, "status": {}})).unwrap().node;
        prepare_update(&mut new, &old, Subresource::Status).unwrap();
        assert_eq!((new["spec"]["unschedulable"].clone(), new["status"].clone()), (json!(true), json!({})));
        assert_eq!((new["metadata"]["uid"].as_str(), new["metadata"]["annotations"]["x"].as_str()), (Some("u1"), Some("y")));
        let mut new = old.clone();
        new["spec"] = json!({});
        new["status"] = json!({});
        prepare_update(&mut new, &old, Subresource::Main).unwrap();
        assert_eq!((new["spec"].clone(), new["status"]["phase"].as_str()), (json!({}), Some("Running")));
        let mut other = old.clone();
        other["metadata"]["uid"] = json!("u2");
        assert_eq!(prepare_update(&mut other, &old, Subresource::Main).unwrap_err().code, 409);
    }
}
