//! What kube-apiserver's Pod registry does around storage: decoding (unknown
//! fields dropped, `podIP`/`podIPs` and `hostIP`/`hostIPs` reconciled as the v1
//! conversion does, the v1 defaults applied), the create and update rules of
//! the main resource and of `pods/status`, validation, graceful deletion and
//! field labels. What every kind shares is in [`super::meta`].
//!
//! As for Nodes, decoding goes through k8s-openapi's typed `Pod`, so what is
//! stored is what a typed client reads back and unknown fields are pruned as
//! the real server prunes them.
//!
//! A faithful subset: validation covers the metadata, the containers (names,
//! images, ports, pull policy), `restartPolicy`, `nodeName`, and on update the
//! immutability of the spec and the status' IPs; volumes, probes, resources,
//! security contexts and affinity are stored as given but not validated. The
//! admission plugins that change pods (ServiceAccount's token volume,
//! DefaultTolerationSeconds, Priority) are not run, and there is no scheduler
//! or kubelet: a pod stays as written until a client changes it, and a
//! graceful deletion stays pending until a client deletes with a shorter grace
//! period (as a kubelet does with 0).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

use super::{
    meta::{self, Decoded, NameRule, dns1123_label_errors, dns1123_subdomain_errors},
    node::Subresource,
    status::{FieldError, Status},
};

/// Reconciles a single-valued field with its list form (`podIP`/`podIPs`):
/// the single one wins when both are set and differ, and is always the list's
/// first element on the way out (the v1 conversion both ways).
fn reconcile_ips(status: &mut Map<String, Value>, single: &str, list: &str) {
    let one = status.get(single).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    let mut ips: Vec<Value> = status.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(ip) = one
        && ips.first().and_then(|f| f["ip"].as_str()) != Some(ip.as_str())
    {
        ips = vec![json!({ "ip": ip })];
    }
    match ips.first().and_then(|f| f["ip"].as_str()).map(String::from) {
        Some(first) => {
            status.insert(single.into(), json!(first));
            status.insert(list.into(), Value::Array(ips));
        }
        None => {
            status.remove(single);
            status.remove(list);
        }
    }
}

/// `SetDefaults_Container`: the pull policy from the image's tag (`Always` for
/// `latest` or no tag, unless pinned by digest), the termination message,
/// port protocols, and requests from limits.
fn default_container(c: &mut Map<String, Value>) {
    if c.get("imagePullPolicy").and_then(Value::as_str).is_none_or(str::is_empty) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or_default();
        let latest = !image.contains('@') && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
        c.insert("imagePullPolicy".into(), json!(if latest { "Always" } else { "IfNotPresent" }));
    }
    for (field, default) in [("terminationMessagePath", "/dev/termination-log"), ("terminationMessagePolicy", "File")] {
        if c.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            c.insert(field.into(), json!(default));
        }
    }
    for port in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if port.get("protocol").and_then(Value::as_str).is_none_or(str::is_empty) {
            port["protocol"] = json!("TCP");
        }
    }
    let resources = c.entry("resources").or_insert_with(|| json!({}));
    if let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() {
        let requests = resources.as_object_mut().expect("an object").entry("requests").or_insert_with(|| json!({}));
        if let Some(r) = requests.as_object_mut() {
            for (k, v) in limits {
                r.entry(k).or_insert(v);
            }
        }
    }
}

/// `SetDefaults_Pod`/`SetDefaults_PodSpec`: what a v1 Pod reads back with.
fn apply_defaults(pod: &mut Value) {
    let spec = pod["spec"].as_object_mut().expect("decoded pods have a spec");
    for (field, default) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ] {
        if spec.get(field).is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
            spec.insert(field.into(), default);
        }
    }
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(c) = c.as_object_mut() {
                default_container(c);
            }
        }
    }
}

pub fn decode_value(v: &Value) -> Result<Decoded, Status> {
    meta::check_type(v, "v1", "Pod")?;
    let mut typed: Pod = serde_json::from_value(v.clone())
        .map_err(|e| Status::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {e}")))?;
    typed.spec.get_or_insert_default();
    typed.status.get_or_insert_default();
    let mut pod = serde_json::to_value(&typed).map_err(|e| Status::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    meta::unknown_fields(v, &pod, "", &mut unknown);
    let status = pod["status"].as_object_mut().expect("set above");
    reconcile_ips(status, "podIP", "podIPs");
    reconcile_ips(status, "hostIP", "hostIPs");
    apply_defaults(&mut pod);
    Ok(Decoded { object: pod, unknown })
}

/// cpu and memory of a container's requests or limits (`GetPodQOS` looks at no other).
fn compute<'a>(c: &'a Value, which: &str) -> Vec<(&'a str, &'a Value)> {
    let set = &c["resources"][which];
    ["cpu", "memory"].into_iter().filter_map(|r| set.get(r).map(|q| (r, q))).collect()
}

/// `GetPodQOS`: BestEffort without cpu or memory requests and limits anywhere,
/// Guaranteed when every container limits both and requests what it limits,
/// else Burstable. Quantities compare as written (`1` and `1000m` differ here).
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> =
        ["initContainers", "containers"].iter().flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten()).collect();
    if containers.iter().all(|c| compute(c, "requests").is_empty() && compute(c, "limits").is_empty()) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = compute(c, "limits");
        limits.len() == 2 && compute(c, "requests") == limits
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// The Pod strategy's `PrepareForCreate`: the status is the server's
/// (`Pending`, with the pod's QoS class), whatever the body says.
pub fn prepare_create(pod: &mut Value) {
    pod["status"] = json!({ "phase": "Pending", "qosClass": qos_class(pod) });
}

/// `PrepareForUpdate` of `pods` (status kept) and of `pods/status` (spec and
/// owner references kept).
pub fn prepare_update(new: &mut Value, old: &Value, sub: Subresource) {
    match sub {
        Subresource::Main => new["status"] = old["status"].clone(),
        Subresource::Status => {
            new["spec"] = old["spec"].clone();
            match old["metadata"].get("ownerReferences") {
                Some(o) => new["metadata"]["ownerReferences"] = o.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove("ownerReferences");
                    }
                }
            }
        }
        Subresource::Whole => {}
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];

/// `validateContainerPorts`.
fn port_errors(c: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}.ports[{i}]");
        match p["containerPort"].as_i64().unwrap_or(0) {
            0 => errs.push(FieldError::required(&format!("{at}.containerPort"), "")),
            n if !(1..=65535).contains(&n) => {
                errs.push(FieldError::invalid(&format!("{at}.containerPort"), n, "must be between 1 and 65535, inclusive"));
            }
            _ => {}
        }
        match text(&p["protocol"]) {
            "" => errs.push(FieldError::required(&format!("{at}.protocol"), "")),
            proto if !PROTOCOLS.contains(&proto) => {
                errs.push(FieldError::not_supported(&format!("{at}.protocol"), proto, PROTOCOLS));
            }
            _ => {}
        }
    }
    errs
}

/// `validateContainers` and `validateInitContainers`: names (DNS labels,
/// unique across both lists), images, ports, pull policy.
fn container_errors(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    if containers.is_empty() {
        errs.push(FieldError::required("spec.containers", ""));
    }
    let init = spec["initContainers"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (list, items) in [("containers", containers), ("initContainers", init)] {
        for (i, c) in items.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            let name = text(&c["name"]);
            let name_path = format!("{path}.name");
            if name.is_empty() {
                errs.push(FieldError::required(&name_path, ""));
            } else {
                errs.extend(dns1123_label_errors(name).into_iter().map(|e| FieldError::invalid(&name_path, name, e)));
            }
            let image = text(&c["image"]);
            if image.is_empty() {
                errs.push(FieldError::required(&format!("{path}.image"), ""));
            } else if image.trim() != image {
                errs.push(FieldError::invalid(&format!("{path}.image"), image, "must not have leading or trailing whitespace"));
            }
            errs.extend(port_errors(c, &path));
            let pull = text(&c["imagePullPolicy"]);
            if !PULL_POLICIES.contains(&pull) {
                errs.push(FieldError::not_supported(&format!("{path}.imagePullPolicy"), pull, PULL_POLICIES));
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(&name_path, name));
            } else {
                names.push(name);
            }
        }
    }
    errs
}

/// `ValidatePodCreate` (less what is not modelled; see the module docs).
pub fn validate(pod: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(pod, NameRule::Subdomain);
    let spec = &pod["spec"];
    errs.extend(container_errors(spec));
    let restart = text(&spec["restartPolicy"]);
    if !RESTART_POLICIES.contains(&restart) {
        errs.push(FieldError::not_supported("spec.restartPolicy", restart, RESTART_POLICIES));
    }
    let node = text(&spec["nodeName"]);
    if !node.is_empty() {
        errs.extend(dns1123_subdomain_errors(node).into_iter().map(|e| FieldError::invalid("spec.nodeName", node, e)));
    }
    errs
}

/// The spec fields an update may change (`ValidatePodUpdate`), in its words.
const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
     `spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` \
     (allow it to be set to 1 if it was previously negative)";

/// `new`'s spec with what an update may change taken from `old`: equal to
/// `old`'s spec exactly when the update changes nothing else.
fn munged_spec(new: &Value, old: &Value) -> Value {
    let mut spec = new["spec"].clone();
    for list in ["containers", "initContainers"] {
        let old_list = old["spec"][list].as_array().map(Vec::as_slice).unwrap_or_default();
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut)
            && items.len() == old_list.len()
        {
            for (c, o) in items.iter_mut().zip(old_list) {
                c["image"] = o["image"].clone();
                // The pull policy was defaulted from the new image.
                c["imagePullPolicy"] = o["imagePullPolicy"].clone();
            }
        }
    }
    let old_tolerations = old["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    let new_tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let only_added = old_tolerations.iter().all(|t| new_tolerations.contains(t));
    let m = spec.as_object_mut().expect("decoded pods have a spec");
    for field in ["activeDeadlineSeconds", "terminationGracePeriodSeconds", "tolerations"] {
        if field == "tolerations" && !only_added {
            continue;
        }
        match old["spec"].get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    spec
}

fn ip_errors(status: &Value, list: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut families = Vec::new();
    let ips = status[list].as_array().map(Vec::as_slice).unwrap_or_default();
    for (i, entry) in ips.iter().enumerate() {
        let ip = text(&entry["ip"]);
        match ip.parse::<IpAddr>() {
            Ok(a) => families.push(a.is_ipv4()),
            Err(_) => errs.push(FieldError::invalid(
                &format!("status.{list}[{i}].ip"),
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )),
        }
    }
    if ips.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
        errs.push(FieldError::invalid(
            &format!("status.{list}"),
            json!(ips),
            "may specify no more than one IP for each IP family",
        ));
    }
    errs
}

/// `ValidatePodUpdate` and `ValidatePodStatusUpdate`: the spec may change only
/// where [`UPDATABLE`] says (upstream appends a diff of the specs to the
/// message; it is left out here), the status' IPs must be IPs.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate(new);
    if munged_spec(new, old) != old["spec"] {
        errs.push(FieldError::forbidden("spec", format!("pod updates may not change fields other than {UPDATABLE}")));
    }
    if new["status"] != old["status"] {
        errs.extend(ip_errors(&new["status"], "podIPs"));
        errs.extend(ip_errors(&new["status"], "hostIPs"));
        let nominated = text(&new["status"]["nominatedNodeName"]);
        if !nominated.is_empty() && nominated != text(&old["status"]["nominatedNodeName"]) {
            errs.extend(
                dns1123_subdomain_errors(nominated)
                    .into_iter()
                    .map(|e| FieldError::invalid("status.nominatedNodeName", nominated, e)),
            );
        }
    }
    errs.extend(meta::no_new_finalizers(new, old));
    errs
}

/// The Pod strategy's `CheckGracefulDelete`: the grace period a DELETE gets,
/// the request's or the pod's own (`terminationGracePeriodSeconds`), but 0 for
/// a pod no node runs (unscheduled, or finished).
pub fn grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let mut period = requested.or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(0);
    if text(&pod["spec"]["nodeName"]).is_empty() || matches!(text(&pod["status"]["phase"]), "Failed" | "Succeeded") {
        period = 0;
    }
    if period < 0 { 1 } else { period }
}

/// The field labels core/v1 Pods support (`spec.host`, the old name of
/// `spec.nodeName`, is translated).
pub const FIELD_LABELS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];

/// The stored label a field selector's label names (`None`: not supported).
pub fn field_label(label: &str) -> Option<&'static str> {
    if label == "spec.host" {
        return Some("spec.nodeName");
    }
    FIELD_LABELS.iter().find(|l| **l == label).copied()
}

/// A Pod field label's value (`ToSelectableFields`). `status.podIPs` is a
/// label the server accepts but never sets, so it is always "".
pub fn field_value(pod: &Value, label: &str) -> Option<String> {
    let spec = &pod["spec"];
    let value = match label {
        "metadata.name" => meta::name(pod).to_string(),
        "metadata.namespace" => meta::namespace(pod).to_string(),
        "spec.nodeName" | "spec.restartPolicy" | "spec.schedulerName" | "spec.serviceAccountName" => {
            text(&spec[label.strip_prefix("spec.")?]).to_string()
        }
        "spec.hostNetwork" => spec["hostNetwork"].as_bool().unwrap_or(false).to_string(),
        "status.phase" => text(&pod["status"]["phase"]).to_string(),
        "status.podIP" => text(&pod["status"]["podIPs"][0]["ip"]).to_string(),
        "status.nominatedNodeName" => text(&pod["status"]["nominatedNodeName"]).to_string(),
        "status.podIPs" => String::new(),
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Value {
        decode_value(&v).unwrap().object
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    fn nginx() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"nodeName": "n1", "containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}})
    }

    #[test]
    fn decode_prunes_defaults_and_reconciles_ips() {
        let d = decode_value(&json!({
            "metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "a", "image": "busybox", "nope": true},
                                    {"name": "b", "image": "registry:5000/b:v1", "resources": {"limits": {"cpu": "1"}}}]},
            "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.9.9"}], "hostIPs": [{"ip": "10.0.0.1"}]},
        }))
        .unwrap();
        assert_eq!(d.unknown, ["metadata.bogus", "spec.containers[0].nope"]);
        let p = d.object;
        assert_eq!((p["kind"].as_str(), p["apiVersion"].as_str()), (Some("Pod"), Some("v1")));
        let spec = &p["spec"];
        assert_eq!(
            (spec["restartPolicy"].clone(), spec["dnsPolicy"].clone(), spec["schedulerName"].clone()),
            (json!("Always"), json!("ClusterFirst"), json!("default-scheduler"))
        );
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always", "no tag is latest");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent", "a registry port is not a tag");
        assert_eq!(spec["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(spec["containers"][1]["resources"]["requests"], json!({"cpu": "1"}), "requests default to limits");
        assert_eq!(p["status"]["podIPs"], json!([{"ip": "10.244.1.5"}]), "podIP wins when they differ");
        assert_eq!(p["status"]["hostIP"], "10.0.0.1", "hostIP is hostIPs[0]");
        assert_eq!(pod(nginx())["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(decode_value(&json!({"kind": "Node"})).unwrap_err().code, 400);
        assert_eq!(decode_value(&json!({"spec": {"containers": {}}})).unwrap_err().code, 400);
        let bare = pod(json!({"metadata": {"name": "p"}}));
        assert_eq!(bare["spec"]["containers"], json!([]), "missing containers decode as none, for validation to report");
    }

    #[test]
    fn create_sets_the_status_and_qos() {
        let mut p = pod(nginx());
        p["status"] = json!({"phase": "Running"});
        prepare_create(&mut p);
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        let mut g = pod(json!({"metadata": {"name": "g"}, "spec": {"containers": [
            {"name": "a", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}));
        prepare_create(&mut g);
        assert_eq!(g["status"]["qosClass"], "Guaranteed");
        let mut b = pod(json!({"metadata": {"name": "b"}, "spec": {"containers": [
            {"name": "a", "image": "x", "resources": {"requests": {"memory": "1Gi"}}}]}}));
        prepare_create(&mut b);
        assert_eq!(b["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn validation_messages() {
        assert!(validate(&pod(nginx())).is_empty(), "{:?}", validate(&pod(nginx())));
        assert_eq!(
            messages(&validate(&pod(json!({"metadata": {"name": "p"}, "spec": {}})))),
            ["spec.containers: Required value"]
        );
        let bad = pod(json!({"metadata": {"name": "Bad_Pod"}, "spec": {"nodeName": "N_1", "restartPolicy": "Sometimes",
            "containers": [{"name": "a", "image": ""}, {"name": "a", "image": " x", "ports": [{"containerPort": 70000, "protocol": "ICMP"}]},
                           {"image": "y", "imagePullPolicy": "Maybe"}],
            "initContainers": [{"name": "Init", "image": "z"}]}}));
        let got = messages(&validate(&bad));
        assert!(got[0].starts_with("metadata.name: Invalid value: \"Bad_Pod\": a lowercase RFC 1123 subdomain"), "{got:?}");
        assert_eq!(
            got[1..8],
            [
                "spec.containers[0].image: Required value",
                "spec.containers[1].image: Invalid value: \" x\": must not have leading or trailing whitespace",
                "spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[1].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[1].name: Duplicate value: \"a\"",
                "spec.containers[2].name: Required value",
                "spec.containers[2].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            ]
        );
        assert!(
            got[8].starts_with("spec.initContainers[0].name: Invalid value: \"Init\": a lowercase RFC 1123 label"),
            "{got:?}"
        );
        assert_eq!(
            got[9],
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert!(got[10].starts_with("spec.nodeName: Invalid value: \"N_1\""), "{got:?}");
        assert_eq!(got.len(), 11, "{got:?}");
    }

    #[test]
    fn updates_may_change_images_and_status_only_through_their_rules() {
        let old = pod(nginx());
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        image["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        assert!(validate_update(&image, &old).is_empty(), "{:?}", validate_update(&image, &old));
        let mut moved = old.clone();
        moved["spec"]["nodeName"] = json!("n2");
        let got = messages(&validate_update(&moved, &old));
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"));
        let mut status = old.clone();
        status["status"] =
            json!({"phase": "Running", "podIPs": [{"ip": "10.244.1.300"}, {"ip": "10.244.1.4"}, {"ip": "fd00::1"}]});
        let got = messages(&validate_update(&status, &old));
        assert_eq!(
            got[0],
            "status.podIPs[0].ip: Invalid value: \"10.244.1.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
        assert!(got[1].starts_with("status.podIPs: Invalid value: "), "{got:?}");
    }

    #[test]
    fn status_writes_keep_spec_and_main_writes_keep_status() {
        let mut old = pod(nginx());
        old["status"] = json!({"phase": "Running"});
        old["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u"}]);
        let mut new = pod(json!({"metadata": {"name": "web"}, "spec": {"containers": []}, "status": {"phase": "Failed"}}));
        prepare_update(&mut new, &old, Subresource::Status);
        assert_eq!((new["spec"].clone(), new["status"]["phase"].as_str()), (old["spec"].clone(), Some("Failed")));
        assert_eq!(new["metadata"]["ownerReferences"], old["metadata"]["ownerReferences"]);
        let mut main = old.clone();
        main["status"] = json!({});
        prepare_update(&mut main, &old, Subresource::Main);
        assert_eq!(main["status"]["phase"], "Running");
    }

    #[test]
    fn grace_periods() {
        let scheduled = pod(nginx());
        assert_eq!(grace_period(&scheduled, None), 30, "the pod's own");
        assert_eq!(grace_period(&scheduled, Some(5)), 5);
        assert_eq!(grace_period(&scheduled, Some(-3)), 1);
        let mut done = scheduled.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(grace_period(&done, Some(5)), 0);
        let mut unscheduled = scheduled.clone();
        unscheduled["spec"]["nodeName"] = json!("");
        assert_eq!(grace_period(&unscheduled, None), 0);
    }

    #[test]
    fn field_labels() {
        let mut p = pod(nginx());
        p["status"] = json!({"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]});
        assert_eq!(field_label("spec.host"), Some("spec.nodeName"));
        assert_eq!(field_label("spec.unschedulable"), None);
        for (label, want) in [
            ("metadata.namespace", "default"),
            ("spec.nodeName", "n1"),
            ("spec.restartPolicy", "Always"),
            ("spec.hostNetwork", "false"),
            ("spec.serviceAccountName", ""),
            ("status.phase", "Running"),
            ("status.podIP", "10.244.1.5"),
            ("status.podIPs", ""),
        ] {
            assert_eq!(field_value(&p, label).as_deref(), Some(want), "{label}");
        }
        assert_eq!(field_value(&p, "bogus"), None);
    }
}
