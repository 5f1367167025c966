//! From a parsed request to a reply: routing, content negotiation, query options
//! and their validation, and the shapes of list, Table and metadata responses.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde_json::{Value, json};

use super::{
    Shared, discovery,
    http::{Request, Response},
    node::Subresource,
    registry::{self, FieldValidation, PatchType, Preconditions, WriteOptions},
    resource::{Api, Scope},
    selector::{FieldSelector, LabelSelector, Selectors},
    status::{FieldError, Status},
    store::Key,
    table::{self, IncludeObject},
    watch::{Start, WatchRequest},
};

/// A complete response, or a watch the connection streams.
pub enum Reply {
    Full(Response),
    Watch(WatchRequest),
}

/// How objects and lists are rendered, from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Table(IncludeObject),
    Metadata,
}

const TABLE_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const METADATA_TYPE: &str = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io";

impl Output {
    /// Renders one stored object of `api` as this output asks.
    pub fn object(self, api: Api, obj: &Value) -> Value {
        match self {
            Output::Json => api.to_wire(obj),
            Output::Table(include) => {
                table::table(api, [obj], json!({ "resourceVersion": obj["metadata"]["resourceVersion"] }), include)
            }
            Output::Metadata => table::partial_metadata(obj),
        }
    }

    fn list<'a>(self, api: Api, items: impl IntoIterator<Item = &'a Value>, meta: Value) -> Value {
        match self {
            Output::Json => json!({
                "kind": format!("{}List", api.kind()), "apiVersion": api.api_version(), "metadata": meta,
                "items": items.into_iter().map(|o| api.to_wire(o)).collect::<Vec<_>>(),
            }),
            Output::Table(include) => table::table(api, items, meta, include),
            Output::Metadata => json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                "items": items.into_iter().map(table::partial_metadata).collect::<Vec<_>>(),
            }),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Output::Json => "application/json",
            Output::Table(_) => TABLE_TYPE,
            Output::Metadata => METADATA_TYPE,
        }
    }
}

/// One `Accept` clause: media type and parameters.
struct MediaRange {
    ty: String,
    params: BTreeMap<String, String>,
    q: f32,
}

fn accept_clauses(req: &Request) -> Vec<MediaRange> {
    let accept = req.header("accept").filter(|a| !a.trim().is_empty()).unwrap_or("*/*");
    let mut clauses: Vec<MediaRange> = accept
        .split(',')
        .map(|c| {
            let mut parts = c.split(';');
            let ty = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let params: BTreeMap<String, String> = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            let q = params.get("q").and_then(|q| q.parse().ok()).unwrap_or(1.0);
            MediaRange { ty, params, q }
        })
        .collect();
    clauses.sort_by(|a, b| b.q.total_cmp(&a.q));
    clauses
}

fn json_like(ty: &str) -> bool {
    matches!(ty, "application/json" | "application/*" | "*/*")
}

/// The best output `Accept` allows for objects, or 406.
pub fn negotiate(req: &Request) -> Result<Output, Status> {
    let include = IncludeObject::parse(req.param("includeObject"))
        .ok_or_else(|| Status::bad_request("includeObject must be one of None, Metadata or Object"))?;
    for c in accept_clauses(req).into_iter().filter(|c| json_like(&c.ty)) {
        let meta_v1 =
            c.params.get("g").map(String::as_str) == Some("meta.k8s.io") && c.params.get("v").map(String::as_str) == Some("v1");
        match c.params.get("as").map(String::as_str) {
            None => return Ok(Output::Json),
            Some("Table") if meta_v1 => return Ok(Output::Table(include)),
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") if meta_v1 => {
                return Ok(Output::Metadata);
            }
            Some(_) => {}
        }
    }
    Err(Status::not_acceptable(&format!("application/json, {TABLE_TYPE}, {METADATA_TYPE}")))
}

/// Whether the client prefers aggregated discovery to the legacy documents.
fn wants_aggregated(req: &Request) -> bool {
    for c in accept_clauses(req).into_iter().filter(|c| json_like(&c.ty)) {
        let p = |k: &str| c.params.get(k).map(String::as_str);
        match (p("as"), p("g"), p("v")) {
            (None, ..) => return false,
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => {
                return true;
            }
            _ => {}
        }
    }
    false
}

fn ok(body: &Value) -> Reply {
    Reply::Full(Response::json(200, body))
}

fn failure(s: &Status) -> Response {
    Response::json(s.code, &s.to_json())
}

/// Answers `req`, which arrived on a connection to `local`.
pub fn handle(shared: &Shared, req: &Request, local: SocketAddr) -> Reply {
    match route(shared, req, local) {
        Ok(r) => r,
        Err(s) => Reply::Full(failure(&s)),
    }
}

fn route(shared: &Shared, req: &Request, local: SocketAddr) -> Result<Reply, Status> {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let get_only = |r: Reply| {
        if req.method == "GET" { Ok(r) } else { Err(Status::method_not_allowed()) }
    };
    let events = |api, ns: &str| Scope::namespaced(api, ns);
    let pods = |ns: &str| Scope::namespaced(Api::Pods, ns);
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz"] => get_only(Reply::Full(Response::text(200, "ok"))),
        ["version"] => get_only(ok(&discovery::version())),
        ["api"] if wants_aggregated(req) => {
            get_only(Reply::Full(Response::with_type(200, discovery::AGGREGATED, &discovery::aggregated(true))))
        }
        ["api"] => get_only(ok(&discovery::api_versions(&local.to_string()))),
        ["apis"] if wants_aggregated(req) => {
            get_only(Reply::Full(Response::with_type(200, discovery::AGGREGATED, &discovery::aggregated(false))))
        }
        ["apis"] => get_only(ok(&discovery::groups())),
        ["api", "v1"] => get_only(ok(&discovery::core_resources())),
        ["apis", g] if discovery::group_apis(g).is_some() => get_only(ok(&discovery::group(g))),
        ["apis", g, "v1"] if let Some(apis) = discovery::group_apis(g) => get_only(ok(&discovery::group_resources(g, apis))),
        ["openapi", "v2"] => get_only(ok(discovery::openapi_v2())),
        ["openapi", "v3"] => get_only(ok(&discovery::openapi_v3_root())),
        ["openapi", "v3", "api", "v1"] => get_only(ok(discovery::openapi_v3_core())),
        ["openapi", "v3", "apis", g, "v1"] if let Some(doc) = discovery::openapi_v3_group(g) => get_only(ok(doc)),
        ["api", "v1", "nodes"] => collection(shared, req, &Scope::cluster(Api::Nodes)),
        ["api", "v1", "nodes", name] => item(shared, req, &Scope::cluster(Api::Nodes), name, Subresource::Main),
        ["api", "v1", "nodes", name, "status"] => item(shared, req, &Scope::cluster(Api::Nodes), name, Subresource::Status),
        ["api", "v1", "events"] => all_namespaces(shared, req, Api::CoreEvents),
        ["api", "v1", "namespaces", ns, "events"] => collection(shared, req, &events(Api::CoreEvents, ns)),
        ["api", "v1", "namespaces", ns, "events", name] => {
            item(shared, req, &events(Api::CoreEvents, ns), name, Subresource::Main)
        }
        ["apis", discovery::EVENTS_GROUP, "v1", "events"] => all_namespaces(shared, req, Api::Events),
        ["apis", discovery::EVENTS_GROUP, "v1", "namespaces", ns, "events"] => collection(shared, req, &events(Api::Events, ns)),
        ["apis", discovery::EVENTS_GROUP, "v1", "namespaces", ns, "events", name] => {
            item(shared, req, &events(Api::Events, ns), name, Subresource::Main)
        }
        ["apis", discovery::COORDINATION_GROUP, "v1", "leases"] => all_namespaces(shared, req, Api::Leases),
        ["apis", discovery::COORDINATION_GROUP, "v1", "namespaces", ns, "leases"] => {
            collection(shared, req, &Scope::namespaced(Api::Leases, ns))
        }
        ["apis", discovery::COORDINATION_GROUP, "v1", "namespaces", ns, "leases", name] => {
            item(shared, req, &Scope::namespaced(Api::Leases, ns), name, Subresource::Main)
        }
        ["api", "v1", "pods"] => all_namespaces(shared, req, Api::Pods),
        ["api", "v1", "namespaces", ns, "pods"] => collection(shared, req, &pods(ns)),
        ["api", "v1", "namespaces", ns, "pods", name] => item(shared, req, &pods(ns), name, Subresource::Main),
        ["api", "v1", "namespaces", ns, "pods", name, "status"] => item(shared, req, &pods(ns), name, Subresource::Status),
        _ => Err(Status::no_route()),
    }
}

/// A collection: `/nodes`, or a namespace's `/events` or `/pods`.
fn collection(shared: &Shared, req: &Request, scope: &Scope) -> Result<Reply, Status> {
    match req.method.as_str() {
        "GET" => list_or_watch(shared, req, scope),
        "POST" => create(shared, req, scope),
        "DELETE" => delete_collection(shared, req, scope),
        _ => Err(Status::method_not_allowed()),
    }
}

/// `/events` or `/pods` of every namespace: lists and watches only.
fn all_namespaces(shared: &Shared, req: &Request, api: Api) -> Result<Reply, Status> {
    match req.method.as_str() {
        "GET" => list_or_watch(shared, req, &Scope::cluster(api)),
        _ => Err(Status::method_not_allowed()),
    }
}

fn item(shared: &Shared, req: &Request, scope: &Scope, name: &str, sub: Subresource) -> Result<Reply, Status> {
    let api = scope.api;
    match (req.method.as_str(), sub) {
        ("GET", _) => {
            let output = negotiate(req)?;
            let store = shared.store.lock().expect("store lock");
            let obj = store.get(&scope.key(name)).ok_or_else(|| Status::not_found(api.group_resource(), name))?;
            Ok(Reply::Full(Response::with_type(200, output.content_type(), &output.object(api, obj))))
        }
        ("PUT", _) => {
            let (output, opts) = (negotiate(req)?, write_options(req)?);
            check_json_body(req)?;
            let decoded = api.decode_body(&req.body)?;
            let w = if sub == Subresource::Main {
                shared.write(|s| registry::replace(s, scope, name, decoded, opts))?
            } else {
                shared.write(|s| registry::update(s, scope, name, sub, opts, |_| Ok(decoded)))?
            };
            Ok(written(if w.created { 201 } else { 200 }, output, api, w))
        }
        ("PATCH", _) => {
            let (output, opts) = (negotiate(req)?, write_options(req)?);
            let ct = req.header("content-type").unwrap_or_default();
            let kind = PatchType::from_content_type(ct).ok_or_else(|| Status::unsupported_media_type(ct, PatchType::ACCEPTED))?;
            let w = shared.write(|s| registry::patch(s, scope, name, sub, kind, &req.body, opts))?;
            Ok(written(200, output, api, w))
        }
        ("DELETE", Subresource::Main) => {
            let (pre, dry_run, grace) = delete_options(req)?;
            let output = negotiate(req)?;
            let d = shared.write(|s| registry::delete(s, scope, name, &pre, dry_run, grace))?;
            if d.gone {
                // Deleted at once: kube-apiserver answers with a Status naming it.
                let meta = &d.object["metadata"];
                let mut details = json!({ "name": meta["name"], "kind": api.resource(), "uid": meta["uid"] });
                if !api.group().is_empty() {
                    details["group"] = json!(api.group());
                }
                return Ok(ok(
                    &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details }),
                ));
            }
            let obj = d.object;
            Ok(Reply::Full(Response::with_type(200, output.content_type(), &output.object(api, &obj))))
        }
        _ => Err(Status::method_not_allowed()),
    }
}

fn written(code: u16, output: Output, api: Api, w: registry::Written) -> Reply {
    let mut r = Response::with_type(code, output.content_type(), &output.object(api, &w.object));
    r.warnings = w.warnings;
    Reply::Full(r)
}

/// Request bodies are JSON (what kubectl and kube send); YAML and protobuf get 415.
fn check_json_body(req: &Request) -> Result<(), Status> {
    let ct = req.header("content-type").unwrap_or("application/json");
    match ct.split(';').next().unwrap_or_default().trim() {
        "application/json" | "" => Ok(()),
        other => Err(Status::unsupported_media_type(other, "application/json")),
    }
}

fn write_options(req: &Request) -> Result<WriteOptions, Status> {
    let dry_run = match req.param("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(Status::bad_request(format!("invalid dry run option {other:?}: only \"All\" is supported")));
        }
    };
    let validation = match req.param("fieldValidation").unwrap_or_default() {
        "" | "Warn" => FieldValidation::Warn,
        "Ignore" => FieldValidation::Ignore,
        "Strict" => FieldValidation::Strict,
        other => {
            return Err(Status::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            )));
        }
    };
    Ok(WriteOptions { dry_run, validation })
}

fn create(shared: &Shared, req: &Request, scope: &Scope) -> Result<Reply, Status> {
    let (output, opts) = (negotiate(req)?, write_options(req)?);
    check_json_body(req)?;
    let decoded = scope.api.decode_body(&req.body)?;
    let w = shared.write(|s| registry::create(s, scope, decoded, opts))?;
    Ok(written(201, output, scope.api, w))
}

/// DeleteOptions from the query and the body (which wins): preconditions, dry
/// run, `gracePeriodSeconds`.
fn delete_options(req: &Request) -> Result<(Preconditions, bool, Option<i64>), Status> {
    let mut dry_run = write_options(req)?.dry_run;
    let mut grace = number::<i64>(req, "gracePeriodSeconds")?;
    let mut pre = Preconditions::default();
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let body: Value =
            serde_json::from_slice(&req.body).map_err(|e| Status::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
        pre.uid = text(&body["preconditions"]["uid"]);
        pre.resource_version = text(&body["preconditions"]["resourceVersion"]);
        dry_run |= body["dryRun"].as_array().is_some_and(|d| d.iter().any(|x| x == "All"));
        grace = body["gracePeriodSeconds"].as_i64().or(grace);
    }
    Ok((pre, dry_run, grace))
}

/// A boolean query parameter, read as the API server converts them.
fn flag(req: &Request, name: &str) -> bool {
    req.param(name).is_some_and(|v| !(v == "0" || v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("f")))
}

fn number<T: std::str::FromStr>(req: &Request, name: &str) -> Result<Option<T>, Status> {
    match req.param(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| Status::bad_request(format!("{name}: invalid value {v:?}"))),
    }
}

fn parse_rv(rv: &str) -> Result<u64, Status> {
    rv.parse().map_err(|_| Status::bad_request(format!("invalid resource version {rv:?}")))
}

fn selectors(req: &Request, api: Api) -> Result<Selectors, Status> {
    Ok(Selectors {
        labels: LabelSelector::parse(req.param("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(req.param("fieldSelector").unwrap_or_default(), api)?,
    })
}

/// `ValidateListOptions`: the combinations of resourceVersion, resourceVersionMatch
/// and sendInitialEvents the API accepts.
fn validate_list_options(req: &Request, watch: bool) -> Result<(), Status> {
    let rv = req.param("resourceVersion").unwrap_or_default();
    let rv_match = req.param("resourceVersionMatch").unwrap_or_default();
    let send_initial = req.param("sendInitialEvents").is_some();
    let mut errs = Vec::new();
    if !matches!(rv_match, "" | "NotOlderThan" | "Exact") {
        errs.push(FieldError::not_supported("resourceVersionMatch", rv_match, &["Exact", "NotOlderThan", ""]));
    }
    if send_initial {
        if !watch {
            errs.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
        }
        if rv_match != "NotOlderThan" {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !flag(req, "allowWatchBookmarks") {
            errs.push(FieldError::forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if watch && !rv_match.is_empty() {
        errs.push(FieldError::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    } else if !rv_match.is_empty() && rv.is_empty() {
        errs.push(FieldError::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    } else if rv_match == "Exact" && rv == "0" {
        errs.push(FieldError::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ));
    }
    if errs.is_empty() { Ok(()) } else { Err(Status::invalid("ListOptions", "meta.k8s.io", "", &errs)) }
}

/// Watches default to between 30 and 60 minutes upstream; one fixed value will do.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

fn list_or_watch(shared: &Shared, req: &Request, scope: &Scope) -> Result<Reply, Status> {
    let output = negotiate(req)?;
    let watch = flag(req, "watch");
    validate_list_options(req, watch)?;
    let selectors = selectors(req, scope.api)?;
    let rv = req.param("resourceVersion").unwrap_or_default();
    if watch {
        let start = match (flag(req, "sendInitialEvents"), rv) {
            (true, _) => Start::Now { initial: true, end_bookmark: true },
            (false, "" | "0") => Start::Now { initial: true, end_bookmark: false },
            (false, rv) => Start::After(parse_rv(rv)?),
        };
        let timeout = number::<u64>(req, "timeoutSeconds")?.map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        return Ok(Reply::Watch(WatchRequest {
            scope: scope.clone(),
            selectors,
            start,
            bookmarks: flag(req, "allowWatchBookmarks"),
            timeout,
            output,
        }));
    }
    let limit = number::<usize>(req, "limit")?.filter(|l| *l > 0);
    let exact = req.param("resourceVersionMatch") == Some("Exact");
    let store = shared.store.lock().expect("store lock");
    let within = |k: &Key| scope.contains(k);
    let (objects, list_rv, after): (BTreeMap<Key, Value>, u64, Option<(String, String)>) = match req
        .param("continue")
        .filter(|c| !c.is_empty())
    {
        Some(token) => {
            if !rv.is_empty() && rv != "0" {
                return Err(Status::bad_request("specifying resource version is not allowed when using continue"));
            }
            let (at, after) = decode_continue(token)?;
            let snap = store.snapshot_at(at, within).map_err(|_| {
                    Status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
                })?;
            (snap, at, Some(after))
        }
        None if exact => {
            let at = parse_rv(rv)?;
            if at > store.rv() {
                return Err(too_large(at, store.rv()));
            }
            let snap = store
                .snapshot_at(at, within)
                .map_err(|_| Status::expired("The resourceVersion for the provided list is too old."))?;
            (snap, at, None)
        }
        None => {
            let at = if rv.is_empty() { 0 } else { parse_rv(rv)? };
            // NotOlderThan a revision this server has not reached: upstream waits
            // a few seconds for it, then gives up.
            let (store, timed_out) =
                shared.changed.wait_timeout_while(store, Duration::from_secs(3), |s| s.rv() < at).expect("store lock");
            if timed_out.timed_out() && store.rv() < at {
                return Err(too_large(at, store.rv()));
            }
            let current = store.rv();
            let objects = scope.objects(&store).map(|(k, v)| (k.clone(), v.clone())).collect();
            drop(store);
            (objects, current, None)
        }
    };
    let mut matching = objects
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|(ns, name)| (&k.namespace, &k.name) > (ns, name)))
        .filter(|(_, o)| selectors.matches(o))
        .peekable();
    let mut items = Vec::new();
    while let Some(o) = matching.next_if(|_| limit.is_none_or(|l| items.len() < l)) {
        items.push(o);
    }
    let remaining = matching.count();
    let mut meta = json!({ "resourceVersion": list_rv.to_string() });
    if remaining > 0 {
        let (last, _) = items.last().expect("a limit of at least one");
        meta["continue"] = json!(encode_continue(list_rv, &last.namespace, &last.name));
        meta["remainingItemCount"] = json!(remaining);
    }
    let items = items.into_iter().map(|(_, o)| o);
    Ok(Reply::Full(Response::with_type(200, output.content_type(), &output.list(scope.api, items, meta))))
}

fn too_large(want: u64, have: u64) -> Status {
    let mut s = Status::timeout(format!("Too large resource version: {want}, current: {have}"));
    if let Some(d) = s.details.as_mut() {
        d["causes"] = json!([{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }]);
    }
    s
}

/// Continue tokens are opaque to clients: the list's revision and the last
/// namespace and name (neither can hold a `/`), hex-encoded.
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    format!("{rv}/{namespace}/{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), Status> {
    let bad = || Status::bad_request("continue key is not valid: invalid token");
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rv, last) = text.split_once('/').ok_or_else(bad)?;
    let (namespace, name) = last.split_once('/').ok_or_else(bad)?;
    Ok((rv.parse().map_err(|_| bad())?, (namespace.to_string(), name.to_string())))
}

fn delete_collection(shared: &Shared, req: &Request, scope: &Scope) -> Result<Reply, Status> {
    validate_list_options(req, false)?;
    let (selectors, (_, dry_run, grace), output) = (selectors(req, scope.api)?, delete_options(req)?, negotiate(req)?);
    let (deleted, rv) = shared.write(|s| {
        let names: Vec<String> = scope.objects(s).filter(|(_, o)| selectors.matches(o)).map(|(k, _)| k.name.clone()).collect();
        let deleted: Vec<Value> = names
            .iter()
            .filter_map(|n| registry::delete(s, scope, n, &Preconditions::default(), dry_run, grace).ok())
            .map(|d| d.object)
            .collect();
        (deleted, s.rv())
    });
    Ok(Reply::Full(Response::with_type(
        200,
        output.content_type(),
        &output.list(scope.api, &deleted, json!({ "resourceVersion": rv.to_string() })),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        assert_eq!(decode_continue(&encode_continue(42, "", "node-a")).unwrap(), (42, (String::new(), "node-a".into())));
        let token = encode_continue(7, "kube-system", "e.1");
        assert_eq!(decode_continue(&token).unwrap(), (7, ("kube-system".into(), "e.1".into())));
        assert!(decode_continue("zz").is_err());
    }
}
