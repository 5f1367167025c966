//! What every object goes through, whatever its kind: the decoding checks
//! (apiVersion and kind, unknown fields), the metadata the server owns
//! (`rest.BeforeCreate`/`BeforeUpdate`: namespace, generated name, uid,
//! creationTimestamp) and ObjectMeta validation, with the name rules of
//! `k8s.io/apimachinery/pkg/util/validation`.

use std::io::Read;

use serde_json::{Value, json};

use super::status::{FieldError, GroupResource, Status};

/// A decoded object in its stored form and the fields of the input it did not know.
#[derive(Debug)]
pub struct Decoded {
    pub object: Value,
    pub unknown: Vec<String>,
}

/// A request body as JSON.
pub fn parse(body: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(body).map_err(|e| Status::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
}

/// Checks what a body says it is against what the endpoint serves; either may be
/// left out.
pub fn check_type(v: &Value, api_version: &str, kind: &str) -> Result<(), Status> {
    if !v.is_object() {
        return Err(Status::bad_request(format!("couldn't get version/kind; json parse error: expected an object, got {v}")));
    }
    let have_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or(api_version);
    let have_kind = v.get("kind").and_then(Value::as_str).unwrap_or(kind);
    if have_version != api_version {
        return Err(Status::bad_request(format!(
            "the API version in the data ({have_version}) does not match the expected API version ({api_version})"
        )));
    }
    if have_kind != kind {
        let version = api_version.rsplit('/').next().unwrap_or(api_version);
        return Err(Status::bad_request(format!(
            "{have_kind} in version \"{version}\" cannot be handled as a {kind}: the object provided is unrecognized or has the wrong kind"
        )));
    }
    Ok(())
}

/// Paths present (non-null) in `input` that decoding dropped.
pub fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
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

/// RFC 3339 in seconds, `secs` from now (a graceful deletion's `deletionTimestamp`).
pub fn time_in(secs: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now().as_second().saturating_add(secs);
    let t = k8s_openapi::jiff::Timestamp::from_second(t).unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metadata.generateName` + 5 characters from the same alphabet upstream uses.
fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = random_bytes::<5>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    format!("{prefix}{suffix}")
}

pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// `EnsureObjectNamespaceMatchesRequestNamespace`: an unset namespace takes the
/// request's, a cluster-scoped object loses any it was given, and any other
/// difference is refused.
pub fn ensure_namespace(obj: &mut Value, request: &str) -> Result<(), Status> {
    let have = namespace(obj);
    if have == request {
        return Ok(());
    }
    if !have.is_empty() && !request.is_empty() {
        return Err(Status::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
    }
    let meta = obj["metadata"].as_object_mut().expect("decoded objects have metadata");
    if request.is_empty() {
        meta.remove("namespace");
    } else {
        meta.insert("namespace".into(), json!(request));
    }
    Ok(())
}

/// Fills the fields the server owns on create (`rest.BeforeCreate`).
pub fn prepare_create(obj: &mut Value) {
    let meta = obj["metadata"].as_object_mut().expect("decoded objects have metadata");
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
}

/// Carries over the metadata no write may change (`rest.BeforeUpdate`); fails
/// on a UID that names another object.
pub fn prepare_update(new: &mut Value, old: &Value, gr: GroupResource) -> Result<(), Status> {
    let old_meta = &old["metadata"];
    let meta = new["metadata"].as_object_mut().expect("decoded objects have metadata");
    match meta.get("uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() && Some(uid) != old_meta["uid"].as_str() => {
            return Err(Status::conflict(
                gr,
                name(old),
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
    Ok(())
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if !s.split('.').all(label_ok) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
             start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        );
    }
    errs
}

/// `IsDNS1123Label`.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".into());
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if !ok {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
             end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        );
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn name_part_matches(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty() && edge(&b[0]) && edge(&b[b.len() - 1]) && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

const NAME_PART_REGEX: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
     alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
     '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// `IsQualifiedName`: why `k` is not a qualified name (`prefix/name` or `name`).
pub fn qualified_name_errors(k: &str) -> Vec<String> {
    let parts: Vec<&str> = k.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else {
                errs.extend(dns1123_subdomain_errors(prefix).into_iter().map(|e| format!("prefix part {e}")));
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {NAME_PART_REGEX} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !name_part_matches(name) {
        errs.push(format!("name part {NAME_PART_REGEX}"));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".into());
    }
    if !v.is_empty() && !name_part_matches(v) {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .into(),
        );
    }
    errs
}

/// What a kind's names must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `NameIsDNSSubdomain` (Nodes; Events created through events.k8s.io).
    Subdomain,
    /// `ValidatePathSegmentName`: anything that fits in a URL path segment, the
    /// rule every object meets (core/v1 Events need no more).
    PathSegment,
}

fn path_segment_errors(name: &str) -> Vec<String> {
    if let Some(bad) = [".", ".."].into_iter().find(|b| name == *b) {
        return vec![format!("may not be '{bad}'")];
    }
    ["/", "%"].into_iter().filter(|c| name.contains(c)).map(|c| format!("may not contain '{c}'")).collect()
}

pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// `ValidateObjectMeta`: name, labels, annotations, finalizers.
pub fn validate_object_meta(obj: &Value, rule: NameRule) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = &obj["metadata"];
    match meta["name"].as_str().unwrap_or_default() {
        "" => errs.push(FieldError::required("metadata.name", "name or generateName is required")),
        n => {
            let found = match rule {
                NameRule::Subdomain => dns1123_subdomain_errors(n),
                NameRule::PathSegment => path_segment_errors(n),
            };
            errs.extend(found.into_iter().map(|e| FieldError::invalid("metadata.name", n, e)));
        }
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            errs.extend(qualified_name_errors(k).into_iter().map(|e| FieldError::invalid("metadata.labels", k.as_str(), e)));
            let v = v.as_str().unwrap_or_default();
            errs.extend(label_value_errors(v).into_iter().map(|e| FieldError::invalid("metadata.labels", v, e)));
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut size = 0;
        for (k, v) in annotations {
            errs.extend(
                qualified_name_errors(&k.to_lowercase())
                    .into_iter()
                    .map(|e| FieldError::invalid("metadata.annotations", k.as_str(), e)),
            );
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        const MAX: usize = 256 * 1024;
        if size > MAX {
            errs.push(FieldError::too_long("metadata.annotations", MAX));
        }
    }
    for (i, f) in strs(&meta["finalizers"]).into_iter().enumerate() {
        let path = format!("metadata.finalizers[{i}]");
        errs.extend(qualified_name_errors(f).into_iter().map(|e| FieldError::invalid(&path, f, e)));
    }
    errs
}

/// Finalizers cannot be added to an object being deleted.
pub fn no_new_finalizers(new: &Value, old: &Value) -> Option<FieldError> {
    if !old["metadata"]["deletionTimestamp"].is_string() {
        return None;
    }
    let old_f = strs(&old["metadata"]["finalizers"]);
    let added: Vec<&str> = strs(&new["metadata"]["finalizers"]).into_iter().filter(|f| !old_f.contains(f)).collect();
    (!added.is_empty()).then(|| {
        FieldError::forbidden(
            "metadata.finalizers",
            format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_report_every_problem() {
        assert!(qualified_name_errors("example.com/MyName").is_empty());
        let empty = qualified_name_errors("");
        assert_eq!(empty[0], "name part must be non-empty");
        assert!(empty[1].starts_with("name part must consist of alphanumeric characters"), "{empty:?}");
        assert_eq!(qualified_name_errors("/x"), ["prefix part must be non-empty"]);
        assert_eq!(qualified_name_errors(&"a".repeat(64)), ["name part must be no more than 63 characters"]);
        assert!(qualified_name_errors("a/b/c")[0].starts_with("a qualified name must consist"));
        assert_eq!(label_value_errors(&"a".repeat(64)), ["must be no more than 63 characters"]);
        assert!(label_value_errors("").is_empty());
    }

    #[test]
    fn names_by_rule() {
        let named = |n: &str| json!({"metadata": {"name": n}});
        assert!(validate_object_meta(&named("Kubelet_Event.1"), NameRule::PathSegment).is_empty());
        let sub = validate_object_meta(&named("Kubelet_Event.1"), NameRule::Subdomain);
        assert!(sub[0].to_string().starts_with("metadata.name: Invalid value: \"Kubelet_Event.1\": a lowercase RFC 1123"));
        let seg: Vec<String> =
            validate_object_meta(&named("a/b%"), NameRule::PathSegment).iter().map(ToString::to_string).collect();
        assert_eq!(
            seg,
            [
                "metadata.name: Invalid value: \"a/b%\": may not contain '/'",
                "metadata.name: Invalid value: \"a/b%\": may not contain '%'"
            ]
        );
        assert_eq!(validate_object_meta(&named(".."), NameRule::PathSegment)[0].detail, "may not be '..'");
    }

    #[test]
    fn updates_keep_system_fields_and_refuse_another_uid() {
        let old = json!({"metadata": {"name": "a", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let mut new = json!({"metadata": {"name": "a", "annotations": {"x": "y"}, "selfLink": "/x"}});
        let gr = GroupResource { group: "", resource: "nodes" };
        prepare_update(&mut new, &old, gr).unwrap();
        assert_eq!(
            new["metadata"],
            json!({"name": "a", "annotations": {"x": "y"}, "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"})
        );
        let mut other = json!({"metadata": {"name": "a", "uid": "u2"}});
        assert_eq!(prepare_update(&mut other, &old, gr).unwrap_err().code, 409);
    }

    #[test]
    fn namespaces_follow_the_request() {
        let mut obj = json!({"metadata": {"name": "a"}});
        ensure_namespace(&mut obj, "default").unwrap();
        assert_eq!(namespace(&obj), "default");
        assert_eq!(ensure_namespace(&mut obj, "kube-system").unwrap_err().code, 400);
        ensure_namespace(&mut obj, "").unwrap();
        assert!(obj["metadata"].get("namespace").is_none(), "cluster-scoped objects lose a namespace");
    }
}
