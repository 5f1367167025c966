//! What clients read before they touch a resource: `/version`, legacy and
//! aggregated (apidiscovery.k8s.io/v2) discovery, and the OpenAPI documents.
//!
//! kubectl needs OpenAPI v3 for `create`, `apply` and `patch`: it checks the
//! PATCH operations of the kind for a `fieldValidation` query parameter and, when
//! there, leaves unknown-field checks to the server (`fieldValidation=Strict`).
//!
//! Served: the core group (`events`, `nodes`, `nodes/status`, `pods`,
//! `pods/status`), events.k8s.io (`events`) and coordination.k8s.io
//! (`leases`), each group-version with its own OpenAPI v3 document.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::{
    resource::Api,
    schema::{self, REF_PREFIX},
};

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

/// The groups served besides the core one, each with one version (v1).
pub const EVENTS_GROUP: &str = "events.k8s.io";
pub const COORDINATION_GROUP: &str = "coordination.k8s.io";

/// The named groups, in the order `/apis` lists them, and their resources.
const GROUPS: &[(&str, &[Api])] = &[(EVENTS_GROUP, &[Api::Events]), (COORDINATION_GROUP, &[Api::Leases])];

/// The resources of a named group (`None`: not a group served here).
pub fn group_apis(group: &str) -> Option<&'static [Api]> {
    GROUPS.iter().find(|(g, _)| *g == group).map(|(_, apis)| *apis)
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

fn singular(api: Api) -> &'static str {
    match api {
        Api::Nodes => "node",
        Api::CoreEvents | Api::Events => "event",
        Api::Pods => "pod",
        Api::Leases => "lease",
    }
}

fn short_names(api: Api) -> &'static [&'static str] {
    match api {
        Api::Nodes => &["no"],
        Api::CoreEvents | Api::Events => &["ev"],
        Api::Pods => &["po"],
        Api::Leases => &[],
    }
}

/// The categories a resource is in (`kubectl get all` reads `all`).
fn categories(api: Api) -> &'static [&'static str] {
    if api == Api::Pods { &["all"] } else { &[] }
}

/// A resource in a legacy `APIResourceList`.
fn resource(api: Api) -> Value {
    let mut r = json!({
        "name": api.resource(), "singularName": singular(api), "namespaced": api.namespaced(), "kind": api.kind(),
        "verbs": VERBS, "shortNames": short_names(api),
    });
    if !categories(api).is_empty() {
        r["categories"] = json!(categories(api));
    }
    r
}

/// A `status` subresource in a legacy `APIResourceList`.
fn status_resource(api: Api) -> Value {
    json!({
        "name": format!("{}/status", api.resource()), "singularName": "", "namespaced": api.namespaced(),
        "kind": api.kind(), "verbs": STATUS_VERBS,
    })
}

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
            resource(Api::CoreEvents),
            resource(Api::Nodes),
            status_resource(Api::Nodes),
            resource(Api::Pods),
            status_resource(Api::Pods),
        ],
    })
}

fn group_version(group: &str) -> Value {
    json!({ "groupVersion": format!("{group}/v1"), "version": "v1" })
}

/// `GET /apis/{group}`.
pub fn group(group: &str) -> Value {
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [group_version(group)], "preferredVersion": group_version(group),
    })
}

/// `GET /apis`: the groups besides the core one.
pub fn groups() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|(name, _)| {
            let mut g = group(name);
            let m = g.as_object_mut().expect("a group is an object");
            m.remove("kind");
            m.remove("apiVersion");
            g
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /apis/{group}/v1`.
pub fn group_resources(group: &str, apis: &[Api]) -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/v1"),
        "resources": apis.iter().map(|a| resource(*a)).collect::<Vec<_>>(),
    })
}

/// The media type of aggregated discovery, which clients check on the response.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// A resource in aggregated discovery.
fn discovered(api: Api) -> Value {
    let gvk = json!({ "group": api.group(), "version": "v1", "kind": api.kind() });
    let mut r = json!({
        "resource": api.resource(),
        "responseKind": gvk,
        "scope": if api.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": singular(api),
        "verbs": VERBS,
        "shortNames": short_names(api),
    });
    if !categories(api).is_empty() {
        r["categories"] = json!(categories(api));
    }
    if api.has_status() {
        r["subresources"] = json!([{ "subresource": "status", "responseKind": gvk, "verbs": STATUS_VERBS }]);
    }
    r
}

fn group_discovery(metadata: Value, resources: &[Api]) -> Value {
    json!({
        "metadata": metadata,
        "versions": [{
            "version": "v1",
            "resources": resources.iter().map(|a| discovered(*a)).collect::<Vec<_>>(),
            "freshness": "Current",
        }],
    })
}

/// Aggregated discovery: `/api` (the core group) or `/apis` (the named groups).
pub fn aggregated(core: bool) -> Value {
    let items = if core {
        vec![group_discovery(json!({ "creationTimestamp": null }), &[Api::CoreEvents, Api::Nodes, Api::Pods])]
    } else {
        GROUPS.iter().map(|(g, apis)| group_discovery(json!({ "name": g, "creationTimestamp": null }), apis)).collect()
    };
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items })
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty, "uniqueItems": true } })
}

fn params(kind: &str, names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| match *n {
            "name" => json!({ "name": "name", "in": "path", "required": true, "description": format!("name of the {kind}"),
                              "schema": { "type": "string", "uniqueItems": true } }),
            "namespace" => json!({ "name": "namespace", "in": "path", "required": true,
                                   "description": "object name and auth scope, such as for teams and projects",
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

fn op(api: Api, id: &str, action: &str, parameters: &[&str], body: Option<Value>, responses: &[(&str, &str)]) -> Value {
    let tag = match api.group() {
        "" => "core_v1".to_string(),
        g => format!("{}_v1", g.split('.').next().unwrap_or(g)),
    };
    let mut o = json!({
        "operationId": id,
        "tags": [tag],
        "parameters": params(api.kind(), parameters),
        "responses": responses.iter().map(|(code, schema)| {
            (code.to_string(), json!({ "description": "OK", "content": {
                "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }))
        }).chain([("401".to_string(), json!({ "description": "Unauthorized" }))]).collect::<Map<_, _>>(),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": { "group": api.group(), "version": "v1", "kind": api.kind() },
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

/// The paths of one resource, with upstream's operation ids (`listCoreV1Node`,
/// `createEventsV1NamespacedEvent`, `listCoreV1EventForAllNamespaces`, ...).
fn resource_paths(api: Api) -> Map<String, Value> {
    let (gv, prefix) = match api.group() {
        "" => ("CoreV1", "/api/v1".to_string()),
        EVENTS_GROUP => ("EventsV1", format!("/apis/{EVENTS_GROUP}/v1")),
        g => ("CoordinationV1", format!("/apis/{g}/v1")),
    };
    let (kind, one, list) = (api.kind(), api.schema(), format!("{}List", api.schema()));
    let (ns, collection, scope): (&str, String, &[&str]) = if api.namespaced() {
        ("Namespaced", format!("{prefix}/namespaces/{{namespace}}/{}", api.resource()), &["namespace", "pretty"])
    } else {
        ("", format!("{prefix}/{}", api.resource()), &["pretty"])
    };
    let deletes = ["dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy"];
    let item = |what: &str| {
        let mut p = json!({
            "get": op(api, &format!("read{gv}{ns}{kind}{what}"), "get", &[], None, &[("200", one)]),
            "put": op(api, &format!("replace{gv}{ns}{kind}{what}"), "put", WRITE, Some(body_of(one, &["*/*"])), &[("200", one), ("201", one)]),
            "patch": op(api, &format!("patch{gv}{ns}{kind}{what}"), "patch", &[WRITE, &["force"]].concat(), Some(body_of(PATCH, PATCH_TYPES)), &[("200", one), ("201", one)]),
            "parameters": params(kind, &[&["name"], scope].concat()),
        });
        if what.is_empty() {
            p["delete"] = op(
                api,
                &format!("delete{gv}{ns}{kind}"),
                "delete",
                &deletes,
                Some(body_of(DELETE_OPTIONS, &["*/*"])),
                &[("200", STATUS), ("202", STATUS)],
            );
        }
        p
    };
    let mut paths = Map::new();
    paths.insert(collection.clone(), json!({
        "get": op(api, &format!("list{gv}{ns}{kind}"), "list", LIST, None, &[("200", &list)]),
        "post": op(api, &format!("create{gv}{ns}{kind}"), "post", WRITE, Some(body_of(one, &["*/*"])), &[("200", one), ("201", one), ("202", one)]),
        "delete": op(api, &format!("delete{gv}Collection{ns}{kind}"), "deletecollection", &[&deletes[..], LIST].concat(), Some(body_of(DELETE_OPTIONS, &["*/*"])), &[("200", STATUS)]),
        "parameters": params(kind, scope),
    }));
    paths.insert(format!("{collection}/{{name}}"), item(""));
    if api.has_status() {
        paths.insert(format!("{collection}/{{name}}/status"), item("Status"));
    }
    if api.namespaced() {
        paths.insert(
            format!("{prefix}/{}", api.resource()),
            json!({
                "get": op(api, &format!("list{gv}{kind}ForAllNamespaces"), "list", LIST, None, &[("200", &list)]),
                "parameters": params(kind, &["pretty"]),
            }),
        );
    }
    paths
}

fn paths(apis: &[Api]) -> Value {
    Value::Object(apis.iter().flat_map(|a| resource_paths(*a)).collect())
}

/// Every schema named by a `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX)) {
                out.push(name.to_string());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The schemas a group-version's document holds: what its paths reach, and
/// the meta types every document carries.
fn components_for(paths: &Value) -> Map<String, Value> {
    let all = schema::components();
    let mut wanted: Vec<String> = all.keys().filter(|k| k.starts_with("io.k8s.apimachinery.")).cloned().collect();
    refs(paths, &mut wanted);
    let mut out = Map::new();
    while let Some(name) = wanted.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(s) = all.get(&name) {
            refs(s, &mut wanted);
            out.insert(name, s.clone());
        }
    }
    out
}

fn v3(apis: &[Api]) -> Value {
    let paths = paths(apis);
    let schemas = components_for(&paths);
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.34.0" },
        "paths": paths,
        "components": { "schemas": schemas },
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
    DOC.get_or_init(|| v3(&[Api::Nodes, Api::CoreEvents, Api::Pods]))
}

/// `/openapi/v3/apis/{group}/v1` (`None`: not a group served here).
pub fn openapi_v3_group(group: &str) -> Option<&'static Value> {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    let docs = DOCS.get_or_init(|| GROUPS.iter().map(|(_, apis)| v3(apis)).collect());
    GROUPS.iter().position(|(g, _)| *g == group).map(|i| &docs[i])
}

/// `/openapi/v3`: where each group-version's document lives.
pub fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    paths.insert("api/v1".into(), json!({ "serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", hash(openapi_v3_core())) }));
    for (g, _) in GROUPS {
        let doc = openapi_v3_group(g).expect("a served group");
        let path = format!("apis/{g}/v1");
        paths.insert(path.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(doc)) }));
    }
    json!({ "paths": paths })
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
        let mut paths = to_v2(&paths(&[Api::Nodes, Api::CoreEvents, Api::Events, Api::Pods, Api::Leases]));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_version_documents_its_own_resources() {
        let core = openapi_v3_core();
        let ids = |doc: &Value, path: &str| -> Vec<String> {
            let item = doc["paths"][path].as_object().unwrap_or_else(|| panic!("no {path}"));
            let mut ids: Vec<String> = item.values().filter_map(|o| o["operationId"].as_str().map(String::from)).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(core, "/api/v1/events"), ["listCoreV1EventForAllNamespaces"]);
        assert_eq!(
            ids(core, "/api/v1/namespaces/{namespace}/events/{name}"),
            [
                "deleteCoreV1NamespacedEvent",
                "patchCoreV1NamespacedEvent",
                "readCoreV1NamespacedEvent",
                "replaceCoreV1NamespacedEvent"
            ]
        );
        assert_eq!(ids(core, "/api/v1/nodes/{name}/status").len(), 3);
        assert_eq!(ids(core, "/api/v1/pods"), ["listCoreV1PodForAllNamespaces"]);
        assert_eq!(
            ids(core, "/api/v1/namespaces/{namespace}/pods/{name}/status"),
            ["patchCoreV1NamespacedPodStatus", "readCoreV1NamespacedPodStatus", "replaceCoreV1NamespacedPodStatus"]
        );
        let pod_patch = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]["parameters"];
        assert!(pod_patch.as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"), "kubectl looks for it");
        let schemas = |doc: &Value| doc["components"]["schemas"].as_object().cloned().unwrap_or_default();
        let (core_schemas, events_schemas) = (schemas(core), schemas(openapi_v3_group(EVENTS_GROUP).unwrap()));
        assert!(core_schemas.contains_key(schema::NODE) && core_schemas.contains_key(schema::CORE_EVENT));
        assert!(core_schemas.contains_key(schema::POD) && core_schemas.contains_key("io.k8s.api.core.v1.PodList"));
        assert!(core_schemas.contains_key("io.k8s.api.core.v1.Container"), "what its paths reach");
        assert!(!core_schemas.contains_key(schema::EVENTS_EVENT));
        assert!(events_schemas.contains_key("io.k8s.api.core.v1.ObjectReference"), "what its paths reach");
        assert!(!events_schemas.contains_key(schema::NODE));
        let create =
            &openapi_v3_group(EVENTS_GROUP).unwrap()["paths"]["/apis/events.k8s.io/v1/namespaces/{namespace}/events"]["post"];
        assert_eq!(create["x-kubernetes-group-version-kind"], json!({ "group": EVENTS_GROUP, "version": "v1", "kind": "Event" }));
        let root = openapi_v3_root();
        assert!(root["paths"]["apis/events.k8s.io/v1"]["serverRelativeURL"].as_str().unwrap().starts_with("/openapi/v3/apis/"));
        assert!(openapi_v2()["paths"]["/apis/events.k8s.io/v1/events"].is_object());
        assert!(openapi_v2()["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"].is_object());
        assert!(openapi_v2()["definitions"][schema::POD].is_object());
    }

    #[test]
    fn discovery_lists_every_group() {
        let names = |v: &Value| -> Vec<String> {
            v["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(names(&core_resources()), ["events", "nodes", "nodes/status", "pods", "pods/status"]);
        let pods = &core_resources()["resources"][3];
        assert_eq!((pods["namespaced"].clone(), pods["shortNames"].clone()), (json!(true), json!(["po"])));
        assert_eq!(pods["verbs"], json!(VERBS));
        assert_eq!(names(&group_resources(EVENTS_GROUP, group_apis(EVENTS_GROUP).unwrap())), ["events"]);
        assert_eq!(names(&group_resources(COORDINATION_GROUP, group_apis(COORDINATION_GROUP).unwrap())), ["leases"]);
        assert_eq!(groups()["groups"][1]["name"], COORDINATION_GROUP);
        let leases = &aggregated(false)["items"][1]["versions"][0]["resources"][0];
        assert_eq!((leases["resource"].as_str(), leases["scope"].as_str()), (Some("leases"), Some("Namespaced")));
        assert!(leases["subresources"].is_null(), "leases have no status");
        let lease_doc = openapi_v3_group(COORDINATION_GROUP).unwrap();
        let patch = &lease_doc["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]["patch"];
        assert_eq!(patch["operationId"], "patchCoordinationV1NamespacedLease");
        assert!(lease_doc["components"]["schemas"]["io.k8s.api.coordination.v1.LeaseSpec"].is_object());
        assert_eq!(groups()["groups"][0]["preferredVersion"]["groupVersion"], "events.k8s.io/v1");
        let apis = aggregated(false);
        let events = &apis["items"][0]["versions"][0]["resources"][0];
        assert_eq!((events["scope"].as_str(), events["shortNames"].clone()), (Some("Namespaced"), json!(["ev"])));
        assert_eq!(aggregated(true)["items"][0]["versions"][0]["resources"][1]["resource"], "nodes");
        let pods = &aggregated(true)["items"][0]["versions"][0]["resources"][2];
        assert_eq!((pods["resource"].as_str(), pods["scope"].as_str()), (Some("pods"), Some("Namespaced")));
        assert_eq!(pods["subresources"][0]["subresource"], "status");
        assert_eq!(pods["categories"], json!(["all"]));
    }
}
