//! The write paths of every resource (kube-apiserver's generic registry with
//! each kind's strategy, from [`super::resource`]): create, update, patch and
//! delete, with optimistic concurrency, finalizers, graceful deletion (Pods),
//! dry runs and no-op detection (an unchanged object is not written: no new
//! resourceVersion, no event).

use serde_json::{Value, json};

use super::{
    meta::{self, Decoded},
    node::Subresource,
    patch::{self, PatchError},
    resource::Scope,
    schema::Schema,
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
    /// Created (by a create, or by an update of a kind that creates on update).
    pub created: bool,
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

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    v
}

/// `POST` to a collection: `scope` names the resource and the request's namespace.
pub fn create(store: &mut Store, scope: &Scope, d: Decoded, opts: WriteOptions) -> Result<Written, Status> {
    let warnings = check_unknown(&d, opts)?;
    let mut obj = d.object;
    meta::ensure_namespace(&mut obj, scope.request_namespace())?;
    scope.admit_create()?;
    meta::prepare_create(&mut obj);
    scope.api.prepare_create(&mut obj);
    let name = meta::name(&obj).to_string();
    let errs = scope.api.validate_create(&obj);
    if !errs.is_empty() {
        return Err(scope.api.invalid(&name, &errs));
    }
    if obj["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()) {
        // etcd3's storage refuses this with a plain error, which surfaces as a 500.
        return Err(Status::internal("resourceVersion should not be set on objects to be created"));
    }
    if store.get(&scope.key(&name)).is_some() {
        return Err(Status::already_exists(scope.api.group_resource(), &name));
    }
    let object = if opts.dry_run { obj } else { store.put(obj) };
    Ok(Written { object, warnings, created: true })
}

/// The update handler's `checkName`: the body names the object on the URL.
fn check_name(obj: &Value, scope: &Scope, name: &str) -> Result<(), Status> {
    let body_name = meta::name(obj);
    if body_name != name {
        return Err(Status::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let (have, want) = (meta::namespace(obj), scope.request_namespace());
    if !want.is_empty() && !have.is_empty() && have != want {
        return Err(Status::bad_request(format!(
            "the namespace of the object ({have}) does not match the namespace on the request ({want})"
        )));
    }
    Ok(())
}

/// `PUT`: replaces `name`, or creates it where the kind allows that.
pub fn replace(store: &mut Store, scope: &Scope, name: &str, d: Decoded, opts: WriteOptions) -> Result<Written, Status> {
    if store.get(&scope.key(name)).is_none() && scope.api.create_on_update() {
        check_name(&d.object, scope, name)?;
        let mut d = d;
        // Storage assigns the revision of what it creates.
        if let Some(m) = d.object["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        return create(store, scope, d, opts);
    }
    update(store, scope, name, Subresource::Main, opts, |_| Ok(d))
}

/// Replaces `name` with what `change` makes of the current object: the common
/// path of PUT, PATCH and [`super::ApiServer::update_node`].
pub fn update(
    store: &mut Store,
    scope: &Scope,
    name: &str,
    sub: Subresource,
    opts: WriteOptions,
    change: impl FnOnce(&Value) -> Result<Decoded, Status>,
) -> Result<Written, Status> {
    let (api, gr, key) = (scope.api, scope.api.group_resource(), scope.key(name));
    let old = store.get(&key).ok_or_else(|| Status::not_found(gr, name))?.clone();
    let d = change(&old)?;
    let warnings = check_unknown(&d, opts)?;
    let mut new = d.object;
    check_name(&new, scope, name)?;
    meta::ensure_namespace(&mut new, scope.request_namespace())?;
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            return Err(Status::stale(gr, name));
        }
        _ => {}
    }
    meta::prepare_update(&mut new, &old, gr)?;
    api.prepare_update(&mut new, &old, sub);
    let errs = api.validate_update(&new, &old);
    if !errs.is_empty() {
        return Err(api.invalid(name, &errs));
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if without_rv(&new) == without_rv(&old) {
        return Ok(Written { object: old, warnings, created: false });
    }
    if opts.dry_run {
        return Ok(Written { object: new, warnings, created: false });
    }
    let finalized =
        new["metadata"]["deletionTimestamp"].is_string() && new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
    let object = store.put(new);
    if finalized {
        // The last finalizer is gone from an object being deleted: delete it now.
        store.remove(&key);
    }
    Ok(Written { object, warnings, created: false })
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

/// `PATCH`: the patch applies to the object as the request's group-version
/// serves it, and the result decodes as a body of that group-version would.
pub fn patch(
    store: &mut Store,
    scope: &Scope,
    name: &str,
    sub: Subresource,
    kind: PatchType,
    body: &[u8],
    opts: WriteOptions,
) -> Result<Written, Status> {
    let p: Value = serde_json::from_slice(body).map_err(|e| Status::bad_request(format!("error decoding patch: {e}")))?;
    let api = scope.api;
    update(store, scope, name, sub, opts, |old| {
        let mut doc = api.to_wire(old);
        let applied = match kind {
            PatchType::Json => patch::json_patch(&mut doc, &p),
            PatchType::Merge if !p.is_object() => Err(PatchError::BadRequest("merge patch must be a JSON object".into())),
            PatchType::Merge => {
                patch::merge(&mut doc, &p);
                Ok(())
            }
            PatchType::Strategic => patch::strategic(&mut doc, &p, Schema::named(api.schema())),
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
        api.decode(&doc)
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

/// `rest.BeforeDelete` of a graceful kind: the object marked with the
/// deletion's time and grace period, when it is to wait (a new deletion with a
/// grace period, or a shorter one than a pending deletion's); `Err` with the
/// object unchanged while a pending deletion keeps waiting. `Ok(None)`: delete
/// as a kind without grace periods would.
fn graceful(current: &Value, requested: Option<i64>, period: i64) -> Result<Option<Value>, Value> {
    let meta = &current["metadata"];
    if meta["deletionTimestamp"].is_string() {
        let pending = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        if pending == 0 {
            return Ok(None);
        }
        // Only a shorter grace period, and only when the request names one.
        let Some(shorter) = requested.filter(|r| *r < pending) else {
            return Err(current.clone());
        };
        let since = meta["deletionTimestamp"].as_str().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        let mut marked = current.clone();
        if let Some(t) = since {
            let at = k8s_openapi::jiff::Timestamp::from_second(t.as_second() - pending + shorter).unwrap_or(t);
            marked["metadata"]["deletionTimestamp"] = json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(shorter);
        return Ok(Some(marked));
    }
    if period == 0 {
        return Ok(None);
    }
    let mut marked = current.clone();
    marked["metadata"]["deletionTimestamp"] = json!(meta::time_in(period));
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(period);
    Ok(Some(marked))
}

/// Deletes `name`, or marks it for deletion while finalizers remain or, for a
/// graceful kind (Pods), for its grace period (`grace`: the request's
/// `gracePeriodSeconds`). Nothing here ends a grace period: the deletion waits
/// for a client to delete again with a grace period of 0, as a kubelet does.
pub fn delete(
    store: &mut Store,
    scope: &Scope,
    name: &str,
    pre: &Preconditions,
    dry_run: bool,
    grace: Option<i64>,
) -> Result<Deletion, Status> {
    let (gr, key) = (scope.api.group_resource(), scope.key(name));
    let current = store.get(&key).ok_or_else(|| Status::not_found(gr, name))?.clone();
    let meta = &current["metadata"];
    for (what, want, have) in
        [("UID", &pre.uid, meta["uid"].as_str()), ("ResourceVersion", &pre.resource_version, meta["resourceVersion"].as_str())]
    {
        if let Some(want) = want.as_deref().filter(|w| Some(*w) != have) {
            return Err(Status::conflict(
                gr,
                name,
                &format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {}", have.unwrap_or("")),
            ));
        }
    }
    let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    if let Some(period) = scope.api.grace_period(&current, grace) {
        match graceful(&current, grace, period) {
            Err(pending) => return Ok(Deletion { object: pending, gone: false }),
            Ok(Some(marked)) if marked["metadata"]["deletionGracePeriodSeconds"] != 0 || has_finalizers => {
                let object = if dry_run { marked } else { store.put(marked) };
                return Ok(Deletion { object, gone: false });
            }
            Ok(_) => {}
        }
    }
    if !has_finalizers {
        let object = if dry_run { current } else { store.remove(&key).expect("checked above") };
        return Ok(Deletion { object, gone: true });
    }
    if meta["deletionTimestamp"].is_string() {
        return Ok(Deletion { object: current, gone: false });
    }
    let mut marked = current;
    marked["metadata"]["deletionTimestamp"] = json!(meta::now());
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    let object = if dry_run { marked } else { store.put(marked) };
    Ok(Deletion { object, gone: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Api;

    fn decoded(v: Value) -> Decoded {
        Api::Nodes.decode(&v).unwrap()
    }

    fn nodes() -> Scope {
        Scope::cluster(Api::Nodes)
    }

    fn setup() -> Store {
        let mut s = Store::default();
        let n = json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.0.0.0/24"},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        create(&mut s, &nodes(), decoded(n), WriteOptions::default()).unwrap();
        s
    }

    #[test]
    fn create_conflicts_and_strict_fields() {
        let mut s = setup();
        let again = create(&mut s, &nodes(), decoded(json!({"metadata": {"name": "a"}})), WriteOptions::default());
        assert_eq!(again.unwrap_err().reason, "AlreadyExists");
        let strict = WriteOptions { validation: FieldValidation::Strict, ..Default::default() };
        let e = create(&mut s, &nodes(), decoded(json!({"metadata": {"name": "b"}, "spec": {"nope": 1}})), strict).unwrap_err();
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.nope\"");
        let w =
            create(&mut s, &nodes(), decoded(json!({"metadata": {"name": "b"}, "spec": {"nope": 1}})), WriteOptions::default())
                .unwrap();
        assert_eq!(w.warnings, ["unknown field \"spec.nope\""]);
        let g =
            create(&mut s, &nodes(), decoded(json!({"metadata": {"generateName": "gen-"}})), WriteOptions::default()).unwrap();
        assert!(meta::name(&g.object).starts_with("gen-") && meta::name(&g.object).len() == 9);
    }

    #[test]
    fn patches_respect_subresources_and_no_ops() {
        let mut s = setup();
        let rv = s.rv();
        let body = br#"{"metadata":{"annotations":{"k":"v"}},"spec":{"unschedulable":true},
                        "status":{"conditions":[{"type":"NetworkUnavailable","status":"False"}]}}"#;
        let w = patch(&mut s, &nodes(), "a", Subresource::Status, PatchType::Strategic, body, WriteOptions::default()).unwrap();
        assert_eq!(w.object["metadata"]["annotations"]["k"], "v");
        assert!(w.object["spec"]["unschedulable"].is_null(), "status writes never change spec");
        assert_eq!(w.object["status"]["conditions"].as_array().unwrap().len(), 2);
        let w = patch(&mut s, &nodes(), "a", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap();
        assert_eq!(w.object["spec"]["unschedulable"], true);
        assert_eq!(w.object["status"]["conditions"].as_array().unwrap().len(), 2, "status kept by the main resource");
        let rv_now = s.rv();
        assert_eq!(rv_now, rv + 2);
        patch(&mut s, &nodes(), "a", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap();
        assert_eq!(s.rv(), rv_now, "a no-op patch writes nothing");
        let stale = br#"{"metadata":{"resourceVersion":"1","labels":{"x":"y"}}}"#;
        let e = patch(&mut s, &nodes(), "a", Subresource::Main, PatchType::Merge, stale, WriteOptions::default()).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        let cidr = br#"{"spec":{"podCIDR":"10.9.0.0/24"}}"#;
        let e = patch(&mut s, &nodes(), "a", Subresource::Main, PatchType::Strategic, cidr, WriteOptions::default()).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Node \"a\" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        );
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let mut s = Store::default();
        create(
            &mut s,
            &nodes(),
            decoded(json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})),
            WriteOptions::default(),
        )
        .unwrap();
        let marked = delete(&mut s, &nodes(), "f", &Preconditions::default(), false, None).unwrap();
        assert!(!marked.gone && marked.object["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&nodes().key("f")).is_some());
        let body = br#"{"metadata":{"finalizers":["example.com/more"]}}"#;
        let e = patch(&mut s, &nodes(), "f", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap_err();
        assert_eq!(e.code, 422);
        let body = br#"{"metadata":{"finalizers":null}}"#;
        patch(&mut s, &nodes(), "f", Subresource::Main, PatchType::Merge, body, WriteOptions::default()).unwrap();
        assert!(s.get(&nodes().key("f")).is_none(), "gone with its last finalizer");
        let pre = Preconditions { uid: Some("nope".into()), resource_version: None };
        assert_eq!(delete(&mut setup(), &nodes(), "a", &pre, false, None).unwrap_err().code, 409);
    }

    fn recorded(name: &str) -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name},
            "eventTime": "2026-01-01T00:00:00.000001Z", "action": "Sync", "reason": "Failed", "type": "Warning",
            "regarding": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
            "reportingController": "weft-agent", "reportingInstance": "n1",
        })
    }

    #[test]
    fn events_are_namespaced_and_share_the_revision() {
        let mut s = setup();
        let rv = s.rv();
        let (v1, core) = (Scope::namespaced(Api::Events, "default"), Scope::namespaced(Api::CoreEvents, "default"));
        let w = create(&mut s, &v1, Api::Events.decode(&recorded("e1")).unwrap(), WriteOptions::default()).unwrap();
        assert_eq!(w.object["metadata"]["namespace"], "default", "from the request");
        assert_eq!(w.object["metadata"]["resourceVersion"], (rv + 1).to_string(), "one revision for every kind");
        assert_eq!(s.get(&core.key("e1")), Some(&w.object), "both groups read the one stored Event");
        let mut copy = w.object.clone();
        copy["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        let again = create(&mut s, &core, Api::CoreEvents.decode(&copy).unwrap(), WriteOptions::default()).unwrap_err();
        assert_eq!(again.message, "events \"e1\" already exists");
        let nope = Scope::namespaced(Api::Events, "nope");
        let e = create(&mut s, &nope, Api::Events.decode(&recorded("e2")).unwrap(), WriteOptions::default()).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"nope\" not found"));
        let mut elsewhere = recorded("e2");
        elsewhere["metadata"]["namespace"] = json!("kube-system");
        let e = create(&mut s, &v1, Api::Events.decode(&elsewhere).unwrap(), WriteOptions::default()).unwrap_err();
        assert_eq!(e.message, "the namespace of the provided object does not match the namespace sent on the request");
        let mut bare = recorded("e2");
        bare.as_object_mut().unwrap().remove("reportingController");
        let e = create(&mut s, &v1, Api::Events.decode(&bare).unwrap(), WriteOptions::default()).unwrap_err();
        assert_eq!((e.code, e.details.as_ref().unwrap()["kind"].as_str()), (422, Some("Event")));
        assert!(e.message.starts_with("Event \"e2\" is invalid: [reportingController: Required value, "), "{}", e.message);
    }

    #[test]
    fn event_series_patches_and_puts_that_create() {
        let mut s = Store::default();
        let v1 = Scope::namespaced(Api::Events, "default");
        create(&mut s, &v1, Api::Events.decode(&recorded("e1")).unwrap(), WriteOptions::default()).unwrap();
        // What kube's Recorder sends for a repeat: the whole event, with a series.
        let mut repeat = recorded("e1");
        repeat["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        let body = serde_json::to_vec(&repeat).unwrap();
        let w = patch(&mut s, &v1, "e1", Subresource::Main, PatchType::Merge, &body, WriteOptions::default()).unwrap();
        assert_eq!(w.object["series"]["count"], 2);
        let changed = br#"{"note": "another"}"#;
        let e = patch(&mut s, &v1, "e1", Subresource::Main, PatchType::Merge, changed, WriteOptions::default()).unwrap_err();
        assert_eq!(e.message, "Event \"e1\" is invalid: message: Invalid value: \"another\": field is immutable");
        let core = Scope::namespaced(Api::CoreEvents, "default");
        let w = patch(
            &mut s,
            &core,
            "e1",
            Subresource::Main,
            PatchType::Strategic,
            br#"{"message": "another"}"#,
            WriteOptions::default(),
        );
        assert_eq!(w.unwrap().object["message"], "another", "core/v1 keeps the legacy rules");
        assert_eq!(
            patch(&mut s, &v1, "e9", Subresource::Main, PatchType::Merge, b"{}", WriteOptions::default()).unwrap_err().code,
            404
        );
        let put = Api::Events.decode(&recorded("e9")).unwrap();
        let w = replace(&mut s, &v1, "e9", put, WriteOptions::default()).unwrap();
        assert!(w.created && w.object["metadata"]["uid"].is_string(), "a PUT creates a missing event");
        let wrong = Api::Events.decode(&recorded("e8")).unwrap();
        assert_eq!(replace(&mut s, &v1, "e7", wrong, WriteOptions::default()).unwrap_err().code, 400);
        let gone = delete(&mut s, &core, "e9", &Preconditions::default(), false, None).unwrap();
        assert!(gone.gone);
        assert!(s.get(&v1.key("e9")).is_none());
    }

    fn web(node: &str) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"nodeName": node, "containers": [{"name": "nginx", "image": "nginx:1.27"}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn pods_get_the_server_status_and_graceful_deletion() {
        let mut s = Store::default();
        let pods = Scope::namespaced(Api::Pods, "default");
        let w = create(&mut s, &pods, Api::Pods.decode(&web("n1")).unwrap(), WriteOptions::default()).unwrap();
        assert_eq!(w.object["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}), "status is the server's on create");
        let e = create(&mut s, &pods, Api::Pods.decode(&json!({"metadata": {"name": "x"}})).unwrap(), WriteOptions::default())
            .unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (422, "Pod \"x\" is invalid: spec.containers: Required value"));
        let running = br#"{"status": {"phase": "Running", "podIP": "10.244.1.5"}}"#;
        let w = patch(&mut s, &pods, "web", Subresource::Status, PatchType::Strategic, running, WriteOptions::default()).unwrap();
        assert_eq!(w.object["status"]["podIPs"], json!([{"ip": "10.244.1.5"}]));
        let moved = br#"{"spec": {"nodeName": "n2"}}"#;
        let e = patch(&mut s, &pods, "web", Subresource::Main, PatchType::Merge, moved, WriteOptions::default()).unwrap_err();
        assert!(
            e.message.starts_with("Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields"),
            "{}",
            e.message
        );
        assert!(replace(&mut s, &pods, "nope", Api::Pods.decode(&web("n1")).unwrap(), WriteOptions::default()).is_err());

        // Scheduled: the pod's grace period, then only shorter ones, then 0 deletes.
        let d = delete(&mut s, &pods, "web", &Preconditions::default(), false, None).unwrap();
        assert!(!d.gone && d.object["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(d.object["metadata"]["deletionGracePeriodSeconds"], 30);
        let rv = s.rv();
        let again = delete(&mut s, &pods, "web", &Preconditions::default(), false, Some(60)).unwrap();
        assert!(!again.gone && s.rv() == rv, "a longer grace period changes nothing");
        let d = delete(&mut s, &pods, "web", &Preconditions::default(), false, Some(5)).unwrap();
        assert_eq!(d.object["metadata"]["deletionGracePeriodSeconds"], 5);
        let d = delete(&mut s, &pods, "web", &Preconditions::default(), false, Some(0)).unwrap();
        assert!(d.gone && s.get(&pods.key("web")).is_none());
        // Unscheduled: deleted at once.
        create(&mut s, &pods, Api::Pods.decode(&web("")).unwrap(), WriteOptions::default()).unwrap();
        assert!(delete(&mut s, &pods, "web", &Preconditions::default(), false, None).unwrap().gone);
    }
}
