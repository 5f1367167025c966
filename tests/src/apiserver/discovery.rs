//! What clients read before they touch a resource: `/version`, legacy and
//! aggregated (apidiscovery.k8s.io/v2) discovery, and the OpenAPI documents.
//!
//! kubectl needs OpenAPI v3 for `create`, `apply` and `patch`: it checks the
//! PATCH operations of the kind for a `fieldValidation` query parameter and, when
//! there, leaves unknown-field checks to the server (`fieldValidation=Strict`).

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::schema::{self, NODE};

/// The Kubernetes version served (the API surface of k8s-openapi's `v1_34`).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "33",
        "gitVersion": "v1.34.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-08-27T00:00:00Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": format!("linux/{}", go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

const NODE_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

/// `GET /api/v1`.
pub fn core_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
                "verbs": NODE_VERBS, "shortNames": ["no"],
            },
            { "name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node", "verbs": STATUS_VERBS },
        ],
    })
}

/// `GET /apis`: no API groups are served.
pub fn groups() -> Value {
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [] })
}

/// The media type of aggregated discovery, which clients check on the response.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Aggregated discovery: `/api` (the core group) or `/apis` (no groups).
pub fn aggregated(core: bool) -> Value {
    let gvk = json!({ "group": "", "version": "v1", "kind": "Node" });
    let items = if core {
        json!([{
            "metadata": { "creationTimestamp": null },
            "versions": [{
                "version": "v1",
                "resources": [{
                    "resource": "nodes",
                    "responseKind": gvk,
                    "scope": "Cluster",
                    "singularResource": "node",
                    "verbs": NODE_VERBS,
                    "shortNames": ["no"],
                    "subresources": [{ "subresource": "status", "responseKind": gvk, "verbs": STATUS_VERBS }],
                }],
                "freshness": "Current",
            }],
        }])
    } else {
        json!([])
    };
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items })
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty, "uniqueItems": true } })
}

fn params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| match *n {
            "name" => json!({ "name": "name", "in": "path", "required": true, "description": "name of the Node",
                              "schema": { "type": "string", "uniqueItems": true } }),
            "dryRun" => query(n, "string", "When present, indicates that modifications should not be persisted."),
            "fieldManager" => query(n, "string", "a name associated with the actor or entity that is making these changes."),
            "fieldValidation" => query(n, "string", "instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict."),
            "pretty" => query(n, "string", "If 'true', then the output is pretty printed."),
            "force" => query(n, "boolean", "Force is going to \"force\" Apply requests."),
            "allowWatchBookmarks" | "sendInitialEvents" | "watch" | "orphanDependents" => query(n, "boolean", n),
            "limit" | "timeoutSeconds" | "gracePeriodSeconds" => query(n, "integer", n),
            other => query(other, "string", other),
        })
        .collect()
}

fn op(id: &str, action: &str, parameters: &[&str], body: Option<Value>, responses: &[(&str, &str)]) -> Value {
    let mut o = json!({
        "operationId": id,
        "tags": ["core_v1"],
        "parameters": params(parameters),
        "responses": responses.iter().map(|(code, schema)| {
            (code.to_string(), json!({ "description": "OK", "content": {
                "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }))
        }).chain([("401".to_string(), json!({ "description": "Unauthorized" }))]).collect::<Map<_, _>>(),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": { "group": "", "version": "v1", "kind": "Node" },
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn body_of(schema: &str, types: &[&str]) -> Value {
    let content: Map<String, Value> = types
        .iter()
        .map(|t| (t.to_string(), json!({ "schema": { "$ref": format!("#/components/schemas/{schema}") } })))
        .collect();
    json!({ "content": content, "required": true })
}

const PATCH_TYPES: &[&str] =
    &["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"];
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const WRITE: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const LIST: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];

fn paths() -> Value {
    let node_list = "io.k8s.api.core.v1.NodeList";
    let deletes = ["dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy"];
    let item = |suffix: &str, what: &str| {
        let mut p = json!({
            "get": op(&format!("readCoreV1Node{what}"), "get", &[], None, &[("200", NODE)]),
            "put": op(&format!("replaceCoreV1Node{what}"), "put", WRITE, Some(body_of(NODE, &["*/*"])), &[("200", NODE), ("201", NODE)]),
            "patch": op(&format!("patchCoreV1Node{what}"), "patch", &[WRITE, &["force"]].concat(), Some(body_of(PATCH, PATCH_TYPES)), &[("200", NODE), ("201", NODE)]),
            "parameters": params(&["name", "pretty"]),
        });
        if suffix.is_empty() {
            p["delete"] = op(
                "deleteCoreV1Node",
                "delete",
                &deletes,
                Some(body_of(DELETE_OPTIONS, &["*/*"])),
                &[("200", STATUS), ("202", STATUS)],
            );
        }
        p
    };
    json!({
        "/api/v1/nodes": {
            "get": op("listCoreV1Node", "list", LIST, None, &[("200", node_list)]),
            "post": op("createCoreV1Node", "post", WRITE, Some(body_of(NODE, &["*/*"])), &[("200", NODE), ("201", NODE), ("202", NODE)]),
            "delete": op("deleteCoreV1CollectionNode", "deletecollection", &[&deletes[..], LIST].concat(), Some(body_of(DELETE_OPTIONS, &["*/*"])), &[("200", STATUS)]),
            "parameters": params(&["pretty"]),
        },
        "/api/v1/nodes/{name}": item("", ""),
        "/api/v1/nodes/{name}/status": item("/status", "Status"),
    })
}

fn core_v3() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.34.0" },
        "paths": paths(),
        "components": { "schemas": schema::components() },
    })
}

/// FNV-1a of the document: the `hash=` clients echo back (upstream uses SHA-512;
/// clients treat it as opaque).
fn hash(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).expect("a JSON value serializes");
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016X}")
}

/// `/openapi/v3/api/v1`.
pub fn openapi_v3_core() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(core_v3)
}

/// `/openapi/v3`: where each group-version's document lives.
pub fn openapi_v3_root() -> Value {
    json!({ "paths": { "api/v1": { "serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", hash(openapi_v3_core())) } } })
}

/// Swagger 2.0 references live under `#/definitions/`.
fn to_v2(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => (k.clone(), json!(r.replace("#/components/schemas/", "#/definitions/"))),
                    _ => (k.clone(), to_v2(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

/// v2 parameters carry their type inline; only the body has a schema.
fn v2_parameter(p: &mut Value) {
    if p["in"] == "body" {
        return;
    }
    if let Some(s) = p.as_object_mut().and_then(|m| m.remove("schema")) {
        p["type"] = s["type"].clone();
    }
}

/// `/openapi/v2`: the same schemas and paths in Swagger 2.0 form.
pub fn openapi_v2() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut paths = to_v2(&paths());
        for item in paths.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            for (key, op) in item.as_object_mut().into_iter().flatten() {
                if key == "parameters" {
                    op.as_array_mut().into_iter().flatten().for_each(v2_parameter);
                    continue;
                }
                let Some(o) = op.as_object_mut() else {
                    continue;
                };
                // v2 operations name content types and put the body among the parameters.
                if let Some(body) = o.remove("requestBody") {
                    let types: Vec<&String> = body["content"].as_object().map(|c| c.keys().collect()).unwrap_or_default();
                    let schema = body["content"].as_object().and_then(|c| c.values().next()).map(|c| c["schema"].clone());
                    o.insert("consumes".into(), json!(types));
                    o["parameters"]
                        .as_array_mut()
                        .expect("operations have parameters")
                        .push(json!({ "name": "body", "in": "body", "required": true, "schema": schema }));
                }
                o.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten().for_each(v2_parameter);
                if let Some(rs) = o.get_mut("responses").and_then(Value::as_object_mut) {
                    for r in rs.values_mut() {
                        if let Some(s) = r.get("content").map(|c| c["application/json"]["schema"].clone()) {
                            r.as_object_mut().expect("responses are objects").remove("content");
                            r["schema"] = s;
                        }
                    }
                }
                o.insert("produces".into(), json!(["application/json"]));
                o.insert("schemes".into(), json!(["https"]));
            }
        }
        json!({
            "swagger": "2.0",
            "info": { "title": "Kubernetes", "version": "v1.34.0" },
            "paths": paths,
            "definitions": to_v2(&Value::Object(schema::components().clone())),
        })
    })
}
