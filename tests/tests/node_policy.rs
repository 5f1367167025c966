//! manifests/node-policy.yaml, the ValidatingAdmissionPolicy that keeps a weft agent to
//! its own Node, evaluated as the API server evaluates it: its own CEL expressions, read
//! from the manifest (never a copy), run by an independent CEL interpreter (cel-rust)
//! against admission requests for the changes the agent really makes (its own
//! advertisement and NetworkUnavailable patches, from the agent's code) and for those
//! it must not make.
//!
//! The API server's order is followed: matchConstraints (resource, operation), then
//! matchConditions (all true, or the policy does not apply), then the variables in
//! order (each sees the earlier ones as `variables.<name>`), then every validation;
//! an expression that fails to evaluate denies (`failurePolicy: Fail`). What this
//! cannot show: the API server's type-checking of the expressions against the Node
//! schema (cel-rust is dynamically typed) — `kubernetes-validate` checks the
//! manifest's shape, a real 1.30+ API server would check the types.

use std::{collections::HashMap, sync::Arc};

use anyhow::{Result, anyhow, bail, ensure};
use cel::{Context, Program, Value as Cel, objects::Key};
use serde_json::{Value, json};
use weft_agent::annotations::{self, Advert};
use weft_e2e::kube::node_manifest;

const WEFT_SA: &str = "system:serviceaccount:weft-system:weft";
const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";

fn policy_documents() -> Result<Vec<Value>> {
    weft_e2e::manifests::documents("node-policy.yaml")
}

/// One compiled expression with what the manifest says about it.
struct Expr {
    name: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
}

fn compile(source: &str) -> Result<Program> {
    Program::compile(source).map_err(|e| anyhow!("CEL does not parse: {source}: {e}"))
}

/// The policy as the API server holds it.
struct Policy {
    resources: Vec<String>,
    operations: Vec<String>,
    match_conditions: Vec<Expr>,
    variables: Vec<Expr>,
    validations: Vec<Expr>,
}

fn exprs(list: &Value, key: &str) -> Result<Vec<Expr>> {
    list.as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| {
            let source = e[key].as_str().ok_or_else(|| anyhow!("entry {i} has no {key}: {e}"))?;
            Ok(Expr {
                name: e["name"].as_str().map_or_else(|| format!("validation {i}"), String::from),
                program: compile(source)?,
                message: e["message"].as_str().map(String::from),
                message_expression: e["messageExpression"].as_str().map(compile).transpose()?,
            })
        })
        .collect()
}

/// What admission decides for one request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The policy does not apply (matchConstraints or matchConditions).
    NotMatched,
    Allowed,
    /// Denied, with every failing validation's message.
    Denied(Vec<String>),
}

impl Policy {
    fn load() -> Result<Policy> {
        let docs = policy_documents()?;
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .ok_or_else(|| anyhow!("no ValidatingAdmissionPolicy in manifests/node-policy.yaml"))?;
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
            .ok_or_else(|| anyhow!("no ValidatingAdmissionPolicyBinding"))?;
        ensure!(binding["spec"]["policyName"] == policy["metadata"]["name"], "the binding names another policy");
        ensure!(binding["spec"]["validationActions"] == json!(["Deny"]), "the binding must deny, not only warn or audit");
        ensure!(binding["spec"].get("paramRef").is_none(), "the policy takes no parameters");
        let spec = &policy["spec"];
        ensure!(spec["failurePolicy"] == "Fail", "an expression that cannot be evaluated must deny");
        let rules = spec["matchConstraints"]["resourceRules"].as_array().ok_or_else(|| anyhow!("no resourceRules"))?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
        };
        let mut resources = Vec::new();
        let mut operations = Vec::new();
        for r in rules {
            ensure!(r["apiGroups"] == json!([""]) && r["apiVersions"] == json!(["v1"]), "core v1 only: {r}");
            resources.extend(strings(&r["resources"]));
            operations.extend(strings(&r["operations"]));
        }
        Ok(Policy {
            resources,
            operations,
            match_conditions: exprs(&spec["matchConditions"], "expression")?,
            variables: exprs(&spec["variables"], "expression")?,
            validations: exprs(&spec["validations"], "expression")?,
        })
    }

    /// Admission of `request` (an AdmissionRequest as the API server builds it).
    fn admit(&self, request: &Value) -> Result<Verdict> {
        let resource = match request["subResource"].as_str() {
            Some(sub) if !sub.is_empty() => format!("{}/{sub}", request["resource"]["resource"].as_str().unwrap_or_default()),
            _ => request["resource"]["resource"].as_str().unwrap_or_default().to_string(),
        };
        let operation = request["operation"].as_str().unwrap_or_default();
        if !self.resources.contains(&resource) || !self.operations.iter().any(|o| o == operation) {
            return Ok(Verdict::NotMatched);
        }
        let mut ctx = Context::default();
        ctx.add_variable("request", cel::to_value(request)?)?;
        ctx.add_variable("object", cel::to_value(&request["object"])?)?;
        ctx.add_variable("oldObject", cel::to_value(&request["oldObject"])?)?;
        for m in &self.match_conditions {
            match m.program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Ok(Verdict::NotMatched),
                // failurePolicy Fail: an error in a match condition rejects.
                other => return Ok(Verdict::Denied(vec![format!("matchCondition {}: {other:?}", m.name)])),
            }
        }
        let mut variables: HashMap<Key, Cel> = HashMap::new();
        for v in &self.variables {
            ctx.add_variable_from_value("variables", variables.clone());
            match v.program.execute(&ctx) {
                Ok(value) => variables.insert(Key::String(Arc::new(v.name.clone())), value),
                Err(e) => return Ok(Verdict::Denied(vec![format!("variable {}: {e:?}", v.name)])),
            };
        }
        ctx.add_variable_from_value("variables", variables);
        let mut denied = Vec::new();
        for v in &self.validations {
            match v.program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => denied.push(match (&v.message_expression, &v.message) {
                    (Some(p), _) => match p.execute(&ctx) {
                        Ok(Cel::String(s)) => s.to_string(),
                        other => bail!("{}: messageExpression gave {other:?}", v.name),
                    },
                    (None, Some(m)) => m.clone(),
                    (None, None) => format!("{} failed", v.name),
                }),
                other => denied.push(format!("{}: evaluation error {other:?}", v.name)),
            }
        }
        Ok(if denied.is_empty() { Verdict::Allowed } else { Verdict::Denied(denied) })
    }
}

/// A Node as registered, advertised and networked: what an agent patches.
fn node(name: &str, third_octet: u8) -> Value {
    let mut n = node_manifest(
        name,
        format!("198.19.0.{}", 10 + third_octet).parse().unwrap(),
        format!("10.244.{third_octet}.0/24").parse().unwrap(),
    );
    n["metadata"]["annotations"] = json!({ "node.alpha.kubernetes.io/ttl": "0" });
    n
}

/// The result of a strategic-merge patch of the shapes the agent sends: annotations
/// merged key by key, status conditions merged by `type` (their patchMergeKey).
fn patched(node: &Value, patch: &Value) -> Value {
    let mut out = node.clone();
    if let Some(ann) = patch["metadata"]["annotations"].as_object() {
        let target = out["metadata"].as_object_mut().unwrap().entry("annotations").or_insert_with(|| json!({}));
        for (k, v) in ann {
            target[k] = v.clone();
        }
    }
    for c in patch["status"]["conditions"].as_array().into_iter().flatten() {
        let list = out["status"]["conditions"].as_array_mut().unwrap();
        match list.iter_mut().find(|old| old["type"] == c["type"]) {
            Some(old) => old.as_object_mut().unwrap().extend(c.as_object().unwrap().clone()),
            None => list.push(c.clone()),
        }
    }
    out
}

/// The AdmissionRequest for `user` (with `extra`) changing `old` into `new` through
/// nodes/status (`sub` = "status") or nodes itself.
fn request(user: &str, extra: Option<Value>, sub: &str, old: &Value, new: &Value) -> Value {
    let mut user_info =
        json!({ "username": user, "uid": "3c1f2b", "groups": ["system:serviceaccounts", "system:authenticated"] });
    if let Some(extra) = extra {
        user_info["extra"] = extra;
    }
    json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": { "group": "", "version": "v1", "kind": "Node" },
        "resource": { "group": "", "version": "v1", "resource": "nodes" },
        "subResource": sub,
        "name": new["metadata"]["name"],
        "operation": "UPDATE",
        "userInfo": user_info,
        "object": new,
        "oldObject": old,
        "options": { "kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1" },
        "dryRun": false,
    })
}

/// A pod-bound token's extra info: the pod, and the node it was scheduled to.
fn bound_to(node: &str) -> Option<Value> {
    Some(json!({
        "authentication.kubernetes.io/pod-name": [format!("weft-{node}x9")],
        "authentication.kubernetes.io/pod-uid": ["9d0c5a86-2b1e-4b8e-9d55-0f1c1b7f4a10"],
        NODE_NAME_KEY: [node],
        "authentication.kubernetes.io/node-uid": ["5b2e0f5c-6e21-4b61-8c3e-6d0c6c0f9a11"],
        "authentication.kubernetes.io/credential-id": ["JTI=1f2e3d4c"],
    }))
}

fn advert_patch(node_octet: u8) -> Value {
    annotations::advert_patch(&Advert {
        public_ip: format!("198.19.0.{}", 10 + node_octet).parse().unwrap(),
        vni: 1,
        vtep_mac: format!("0a:58:0a:f4:{node_octet:02x}:00").parse().unwrap(),
    })
}

/// A change made to a Node object in a test.
type Change = fn(&mut Value);

fn denied_with(verdict: &Verdict, needle: &str) -> bool {
    matches!(verdict, Verdict::Denied(m) if m.iter().any(|m| m.contains(needle)))
}

/// The agent's two real patches on its own Node, through nodes/status with its
/// pod-bound token: allowed, every expression evaluating cleanly.
#[test]
fn an_agent_may_advertise_and_clear_network_unavailable_on_its_own_node() -> Result<()> {
    let p = Policy::load()?;
    let a = node("a", 1);
    for patch in [advert_patch(1), annotations::network_available_patch("2026-12-06T23:00:00Z")] {
        let new = patched(&a, &patch);
        assert_ne!(new, a, "the patch changes something");
        assert_eq!(p.admit(&request(WEFT_SA, bound_to("a"), "status", &a, &new))?, Verdict::Allowed, "patch {patch}");
    }
    // Re-advertising over an older advertisement (a new VtepMAC or address) too.
    let advertised = patched(&a, &advert_patch(1));
    let moved = patched(&advertised, &advert_patch(7));
    assert_eq!(p.admit(&request(WEFT_SA, bound_to("a"), "status", &advertised, &moved))?, Verdict::Allowed);
    Ok(())
}

/// The same patches on another node, by an agent whose token is bound to node a:
/// denied, the message naming both nodes.
#[test]
fn an_agent_may_not_change_another_node() -> Result<()> {
    let p = Policy::load()?;
    let b = node("b", 2);
    for patch in [advert_patch(1), annotations::network_available_patch("2026-12-06T23:00:00Z")] {
        for sub in ["status", ""] {
            let v = p.admit(&request(WEFT_SA, bound_to("a"), sub, &b, &patched(&b, &patch)))?;
            assert!(denied_with(&v, "a weft agent on node a may not change node b"), "{sub:?} {patch}: {v:?}");
        }
    }
    Ok(())
}

/// A token that carries no node-name claim (a Secret-based token, a server before
/// 1.30; extra info absent, or present without the claim) or more than one: denied,
/// even on "its own" Node.
#[test]
fn a_token_without_one_node_name_claim_is_denied() -> Result<()> {
    let p = Policy::load()?;
    let a = node("a", 1);
    let new = patched(&a, &advert_patch(1));
    let mut two = bound_to("a").unwrap();
    two[NODE_NAME_KEY] = json!(["a", "b"]);
    let mut without = bound_to("a").unwrap();
    without.as_object_mut().unwrap().remove(NODE_NAME_KEY);
    for (what, extra) in [("no extra", None), ("extra without the claim", Some(without)), ("two claims", Some(two))] {
        let v = p.admit(&request(WEFT_SA, extra, "status", &a, &new))?;
        assert!(denied_with(&v, "carries no node-name claim"), "{what}: {v:?}");
    }
    Ok(())
}

/// On its own Node an agent changes only what it publishes: a label, the spec, another
/// annotation, another condition, the addresses are each denied with their message.
#[test]
fn on_its_own_node_an_agent_changes_only_its_annotations_and_condition() -> Result<()> {
    let p = Policy::load()?;
    let a = patched(&node("a", 1), &advert_patch(1));
    let cases: [(&str, Change); 7] = [
        ("a weft agent may not change a Node's labels", |n| n["metadata"]["labels"]["weft.io/dataplane"] = json!("weft")),
        ("a weft agent may not change a Node's spec", |n| n["spec"]["taints"] = json!([{ "key": "x", "effect": "NoSchedule" }])),
        ("a weft agent may not change a Node's spec", |n| n["spec"]["podCIDR"] = json!("10.244.9.0/24")),
        ("only flannel.alpha.coreos.com/ annotations", |n| {
            n["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = json!("30")
        }),
        ("only flannel.alpha.coreos.com/ annotations", |n| {
            n["metadata"]["annotations"].as_object_mut().unwrap().remove("node.alpha.kubernetes.io/ttl");
        }),
        ("only the NetworkUnavailable condition", |n| n["status"]["conditions"][0]["status"] = json!("False")),
        ("may not change a Node's addresses", |n| n["status"]["addresses"][0]["address"] = json!("198.19.0.99")),
    ];
    for (message, change) in cases {
        let mut new = a.clone();
        change(&mut new);
        let v = p.admit(&request(WEFT_SA, bound_to("a"), "status", &a, &new))?;
        assert!(denied_with(&v, message), "expected {message:?}: {v:?}");
        assert!(matches!(&v, Verdict::Denied(m) if m.len() == 1), "only that validation fails: {v:?}");
    }
    Ok(())
}

/// Everyone else is not judged by this policy (matchConditions): the kubelet, another
/// service account, an administrator — on any Node, whatever they change; nor are
/// operations and resources outside its rules.
#[test]
fn other_users_and_requests_are_unaffected() -> Result<()> {
    let p = Policy::load()?;
    let b = node("b", 2);
    let mut relabelled = patched(&b, &advert_patch(2));
    relabelled["metadata"]["labels"]["weft.io/dataplane"] = json!("flannel");
    for user in [
        "system:node:b",
        "system:serviceaccount:kube-flannel:flannel",
        "system:serviceaccount:weft-system:weft2",
        "kubernetes-admin",
    ] {
        for extra in [None, bound_to("a")] {
            assert_eq!(p.admit(&request(user, extra, "status", &b, &relabelled))?, Verdict::NotMatched, "{user}");
        }
    }
    let mut create = request(WEFT_SA, bound_to("a"), "", &Value::Null, &b);
    create["operation"] = json!("CREATE");
    assert_eq!(p.admit(&create)?, Verdict::NotMatched, "CREATE is RBAC's to refuse (weft has no create verb)");
    let mut pod = request(WEFT_SA, bound_to("a"), "", &b, &b);
    pod["resource"]["resource"] = json!("pods");
    assert_eq!(p.admit(&pod)?, Verdict::NotMatched);
    Ok(())
}
