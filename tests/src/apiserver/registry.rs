//! The write paths of the Node resource (kube-apiserver's generic registry with
//! the Node strategy): create, update, patch and delete, with optimistic
//! concurrency, finalizers, dry runs and no-op detection (an unchanged object is
//! not written: no new resourceVersion, no event).

use serde_json::{Value, json};

use super::{
    node::{self, Decoded, Subresource},
    patch::{self, PatchError},
    schema::{NODE, Schema},
    status::Status,
    store::Store,
};

/// How a request wants unknown fields treated (`fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Per-request write options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub validation: FieldValidation,
}

/// A successful write and the warnings it earned.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

fn check_unknown(d: &Decoded, opts: WriteOptions) -> Result<Vec<String>, Status> {
    let msgs: Vec<String> = d.unknown.iter().map(|p| format!("unknown field {:?}", p)).collect();
    match opts.validation {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(msgs),
        FieldValidation::Strict if msgs.is_empty() => Ok(msgs),
        FieldValidation::Strict => Err(Status::bad_request(format!("strict decoding error: {}", msgs.join(", ")))),
    }
}

fn invalid(name: &str, errs: &[super::status::FieldError]) -> Status {
    Status::invalid("Node", "", name, errs)
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    v
}

pub fn create(store: &mut Store, d: Decoded, opts: WriteOptions) -> Result<Written, Status> {
    let warnings = check_unknown(&d, opts)?;
    let mut obj = d.node;
    if obj["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()) {
        // etcd3's storage refuses this with a plain error, which surfaces as a 500.
        return Err(Status::internal("resourceVersion should not be set on objects to be created"));
    }
    node::prepare_create(&mut obj)?;
    let errs = node::validate(&obj);
    let name = node::name(&obj).to_string();
    if !errs.is_empty() {
        return Err(invalid(&name, &errs));
    }
    if store.get(&name).is_some() {
        return Err(Status::already_exists(&name));
    }
    let object = if opts.dry_run { obj } else { store.put(obj) };
    Ok(Written { object, warnings })
}

/// Replaces `name` with what `change` makes of the current object: the common
/// path of PUT, PATCH and [`super::ApiServer::update_node`].
pub fn update(
    store: &mut Store,
    name: &str,
    sub: Subresource,
    opts: WriteOptions,
    change: impl FnOnce(&Value) -> Result<Decoded, Status>,
) -> Result<Written, Status> {
    let old = store.get(name).ok_or_else(|| Status::not_found(name))?.clone();
    let d = change(&old)?;
    let warnings = check_unknown(&d, opts)?;
    let mut new = d.node;
    let new_name = node::name(&new);
    if new_name != name {
        return Err(Status::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            return Err(Status::stale(name));
        }
        _ => {}
    }
    node::prepare_update(&mut new, &old, sub)?;
    let errs = node::validate_update(&new, &old);
    if !errs.is_empty() {
        return Err(invalid(name, &errs));
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if without_rv(&new) == without_rv(&old) {
        return Ok(Written { object: old, warnings });
    }
    if opts.dry_run {
        return Ok(Written { object: new, warnings });
    }
    let finalized =
        new["metadata"]["deletionTimestamp"].is_string() && new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
    let object = store.put(new);
    if finalized {
        // The last finalizer is gone from an object being deleted: delete it now.
        store.remove(name);
    }
    Ok(Written { object, warnings })
}

/// The PATCH content types served, as `Content-Type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub const ACCEPTED: &'static str =
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json";

    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

pub fn patch(
    store: &mut Store,
    name: &str,
    sub: Subresource,
    kind: PatchType,
    body: &[u8],
    opts: WriteOptions,
) -> Result<Written, Status> {
    let p: Value = serde_json::from_slice(body).map_err(|e| Status::bad_request(format!("error decoding patch: {e}")))?;
    update(store, name, sub, opts, |old| {
        let mut doc = old.clone();
        let applied = match kind {
            PatchType::Json => patch::json_patch(&mut doc, &p),
            PatchType::Merge if !p.is_object() => Err(PatchError::BadRequest("merge patch must be a JSON object".into())),
            PatchType::Merge => {
                patch::merge(&mut doc, &p);
                Ok(())
            }
            PatchType::Strategic => patch::strategic(&mut doc, &p, Schema::named(NODE)),
        };
        match applied {
            Ok(()) => {}
            Err(PatchError::BadRequest(m)) => return Err(Status::bad_request(m)),
            Err(PatchError::Unprocessable(m)) => {
                let mut s = Status::bad_request(m);
                (s.code, s.reason) = (422, "Invalid".into());
                return Err(s);
            }
        }
        node::decode_value(&doc)
    })
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The outcome of a DELETE.
#[derive(Debug)]
pub struct Deletion {
    /// The object as it was (deleted) or as marked for deletion.
    pub object: Value,
    /// Deleted now, rather than marked while finalizers remain.
    pub gone: bool,
}

/// Deletes `name`, or marks it for deletion while finalizers remain.
pub fn delete(store: &mut Store, name: &str, pre: &Preconditions, dry_run: bool) -> Result<Deletion, Status> {
    let current = store.get(name).ok_or_else(|| Status::not_found(name))?.clone();
    let meta = &current["metadata"];
    for (what, want, have) in
        [("UID", &pre.uid, meta["uid"].as_str()), ("ResourceVersion", &pre.resource_version, meta["resourceVersion"].as_str())]
    {
        if let Some(want) = want.as_deref().filter(|w| Some(*w) != have) {
            return Err(Status::conflict(
                name,
                &format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {}", have.unwrap_or("")),
            ));
        }
    }
    let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    if !has_finalizers {
        let object = if dry_run { current } else { store.remove(name).expect("checked above") };
        return Ok(Deletion { object, gone: true });
    }
    if meta["deletionTimestamp"].is_string() {
        return Ok(Deletion { object: current, gone: false });
    }
    let mut marked = current;
    marked["metadata"]["deletionTimestamp"] = json!(node::now());
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    let object = if dry_run { marked } else { store.put(marked) };
    Ok(Deletion { object, gone: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(v: Value) -> Decoded {
        node::decode_value(&v).unwrap()
    }

    fn setup() -> Store {
        let mut s = Store::default();
        let n = json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.0.0.0/24"},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        create(&mut s, decoded(n), WriteOptions::default()).unwrap();
        s
    }

    #[test]
    fn create_conflicts_and_strict_fields() {
        let mut s = setup();
        let again = create(&mut s, decoded(json!({"metadata": {"name": "a"}})), WriteOptions::default());
        assert_eq!(again.unwrap_err().reason, "AlreadyExists");
        let strict = WriteOptions { validation: FieldValidation::Strict, ..Default::default() };
        let e = create(&mut s, decoded(json!({"metadata": {"name": "b"}, "spec": {"nope": 1}})), strict).unwrap_err();
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.nope\"");
        let w =
            create(&mut s, decoded(json!({"metadata": {"name": "b"}, "spec": {"nope": 1}})), WriteOptions::default()).unwrap();
        assert_eq!(w.warnings, ["unknown field \"spec.nope\""]);
        let g = create(&mut s, decoded(json!({"metadata": {"generateName": "gen-"}})), WriteOptions::default()).unwrap();
        assert!(node::name(&g.object).starts_with("gen-") && node::name(&g.object).len() == 9);
    }

    #[test]
    fn patches_respect_subresources_and_no_ops() {
        let mut s = setup();
        let rv = s.rv();
        let body = br#"{"metadata":{"annotations":{"k":"v"}},"spec":{"unschedulable":true},
                        "status":{"conditions":[{"type":"NetworkUnavailable","status":"False"}]}}"#;
        let w = patch(&mut s, "a", Subresource::Status, PatchType::Strategic, body, WriteOptions::default()).unwrap();
        assert_eq!(w.object["metadata"]["annotations"]["k"], "v");
        assert!(w.object["spec"]["unschedulable"].is_null(), "status writes never change spec");
        assert_eq!(w.object["status"]["conditions"].as_array().unwrap().len(), 2);
        let w = patch(&mut s, "a", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap();
        assert_eq!(w.object["spec"]["unschedulable"], true);
        assert_eq!(w.object["status"]["conditions"].as_array().unwrap().len(), 2, "status kept by the main resource");
        let rv_now = s.rv();
        assert_eq!(rv_now, rv + 2);
        patch(&mut s, "a", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap();
        assert_eq!(s.rv(), rv_now, "a no-op patch writes nothing");
        let stale = br#"{"metadata":{"resourceVersion":"1","labels":{"x":"y"}}}"#;
        let e = patch(&mut s, "a", Subresource::Main, PatchType::Merge, stale, WriteOptions::default()).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        let cidr = br#"{"spec":{"podCIDR":"10.9.0.0/24"}}"#;
        let e = patch(&mut s, "a", Subresource::Main, PatchType::Strategic, cidr, WriteOptions::default()).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Node \"a\" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        );
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let mut s = Store::default();
        create(&mut s, decoded(json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})), WriteOptions::default())
            .unwrap();
        let marked = delete(&mut s, "f", &Preconditions::default(), false).unwrap();
        assert!(!marked.gone && marked.object["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get("f").is_some());
        let body = br#"{"metadata":{"finalizers":["example.com/more"]}}"#;
        let e = patch(&mut s, "f", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap_err();
        assert_eq!(e.code, 422);
        let body = br#"{"metadata":{"finalizers":null}}"#;
        patch(&mut s, "f", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap();
        assert!(s.get("f").is_none(), "gone with its last finalizer");
        let pre = Preconditions { uid: Some("nope".into()), resource_version: None };
        assert_eq!(delete(&mut setup(), "a", &pre, false).unwrap_err().code, 409);
    }
}
