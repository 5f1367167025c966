//! The three PATCH flavours of the API server, applied to an object's JSON:
//!
//! - JSON merge patch (RFC 7386, `application/merge-patch+json`): objects merge,
//!   `null` deletes, anything else (lists included) replaces;
//! - strategic merge patch (`application/strategic-merge-patch+json`): a merge patch
//!   whose lists follow the schema's patch strategy (conditions merge by `type`,
//!   finalizers as a set, ...), with the `$patch`, `$deleteFromPrimitiveList` and
//!   `$setElementOrder` directives kubectl emits;
//! - JSON patch (RFC 6902, `application/json-patch+json`): a list of operations on
//!   JSON pointers.

use serde_json::{Map, Value};

use super::schema::{ListStrategy, Schema};

/// Why a patch could not be applied: malformed (400) or inapplicable (422).
#[derive(Debug, PartialEq)]
pub enum PatchError {
    BadRequest(String),
    Unprocessable(String),
}

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

const DIRECTIVE: &str = "$patch";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const ELEMENT_ORDER: &str = "$setElementOrder/";

/// Strategic merge patch of `target` (an object of `schema`) with `patch`.
pub fn strategic(target: &mut Value, patch: &Value, schema: Option<Schema>) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::BadRequest(format!("strategic merge patch must be an object, got {patch}")));
    };
    strategic_map(target, p, schema)
}

fn strategic_map(target: &mut Value, patch: &Map<String, Value>, schema: Option<Schema>) -> Result<(), PatchError> {
    match patch.get(DIRECTIVE).map(|d| d.as_str()) {
        None | Some(Some("merge")) => {}
        // `$patch: replace` on a map: the patch (less the directive) is the new map.
        Some(Some("replace")) => {
            let mut m = patch.clone();
            m.remove(DIRECTIVE);
            *target = Value::Object(m);
            return Ok(());
        }
        Some(Some("delete")) => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => {
            return Err(PatchError::BadRequest(format!("unknown patch type {other:?} in map")));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in patch {
        if k == DIRECTIVE || k.starts_with(ELEMENT_ORDER) {
            // Ordering hints from `kubectl apply`; the merged order is already the
            // old order followed by new elements.
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_FROM) {
            let Value::Array(gone) = v else {
                return Err(PatchError::BadRequest(format!("{k} must be a list")));
            };
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(PatchError::BadRequest(format!("unsupported strategic merge patch directive {k:?}")));
        }
        let sub = schema.and_then(|s| s.field(k));
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(pm) => strategic_map(t.entry(k.clone()).or_insert(Value::Null), pm, sub)?,
            Value::Array(pl) => {
                let strategy = sub.map_or(ListStrategy::Replace, Schema::list_strategy);
                let old = t.remove(k);
                let merged = strategic_list(old, pl, strategy, sub.and_then(Schema::items))?;
                t.insert(k.clone(), merged);
            }
            scalar => {
                t.insert(k.clone(), scalar.clone());
            }
        }
    }
    Ok(())
}

fn strategic_list(
    old: Option<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    items: Option<Schema>,
) -> Result<Value, PatchError> {
    // A `{"$patch": "replace"}` element turns any strategy into replacement.
    let replace = patch.iter().any(|e| e.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    let mut list = match old {
        Some(Value::Array(l)) if !replace => l,
        _ => Vec::new(),
    };
    let patch = patch.iter().filter(|e| e.get(DIRECTIVE).and_then(Value::as_str) != Some("replace"));
    match strategy {
        _ if replace => list.extend(patch.cloned()),
        ListStrategy::Replace => list = patch.cloned().collect(),
        ListStrategy::MergeScalars => {
            for e in patch {
                if e.is_object() || e.is_array() {
                    return Err(PatchError::BadRequest(format!("expected a scalar list element, got {e}")));
                }
                if !list.contains(e) {
                    list.push(e.clone());
                }
            }
        }
        ListStrategy::MergeBy(key) => {
            for e in patch {
                let Value::Object(em) = e else {
                    return Err(PatchError::BadRequest(format!("expected a map list element, got {e}")));
                };
                let Some(id) = em.get(key) else {
                    return Err(PatchError::BadRequest(format!("map: {e} does not contain declared merge key: {key}")));
                };
                let pos = list.iter().position(|o| o.get(key) == Some(id));
                match (em.get(DIRECTIVE).and_then(Value::as_str), pos) {
                    (Some("delete"), Some(i)) => {
                        list.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => strategic_map(&mut list[i], em, items)?,
                    (_, None) => {
                        let mut fresh = Value::Object(Map::new());
                        strategic_map(&mut fresh, em, items)?;
                        list.push(fresh);
                    }
                }
            }
        }
    }
    Ok(Value::Array(list))
}

/// RFC 6901 pointer to its unescaped tokens.
fn pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatchError::BadRequest(format!("JSON pointer {p:?} does not start with '/'")));
    };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if token == "-" && allow_end {
        return Some(len);
    }
    // RFC 6901: no leading zeros, no signs.
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: usize = token.parse().ok()?;
    (i < len || (allow_end && i == len)).then_some(i)
}

/// The container holding `path`'s last token, and that token.
fn parent<'a>(doc: &'a mut Value, path: &'a [String], op: &str) -> Result<(&'a mut Value, &'a str), PatchError> {
    let (last, init) =
        path.split_last().ok_or_else(|| PatchError::Unprocessable(format!("{op}: cannot target the document root")))?;
    let mut cur = doc;
    for t in init {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => array_index(t, a.len(), false).and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::Unprocessable(format!("{op}: doc is missing path: /{}", path.join("/"))))?;
    }
    Ok((cur, last.as_str()))
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, t| match cur {
        Value::Object(m) => m.get(t),
        Value::Array(a) => array_index(t, a.len(), false).and_then(|i| a.get(i)),
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let missing = || PatchError::Unprocessable(format!("add operation does not apply: doc is missing path: /{}", path.join("/")));
    match parent(doc, path, "add")? {
        (Value::Object(m), key) => {
            m.insert(key.to_string(), value);
        }
        (Value::Array(a), key) => {
            let i = array_index(key, a.len(), true).ok_or_else(missing)?;
            a.insert(i, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, PatchError> {
    let missing =
        || PatchError::Unprocessable(format!("remove operation does not apply: doc is missing path: /{}", path.join("/")));
    match parent(doc, path, "remove")? {
        (Value::Object(m), key) => m.remove(key).ok_or_else(missing),
        (Value::Array(a), key) => {
            let i = array_index(key, a.len(), false).ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902; all operations apply or none do.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::BadRequest("a JSON patch must be a list of operations".into()));
    };
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| -> Result<Vec<String>, PatchError> {
            let p = op.get(name).and_then(Value::as_str);
            pointer(p.ok_or_else(|| PatchError::BadRequest(format!("operation {op} has no string {name:?}")))?)
        };
        let value = || op.get("value").cloned().ok_or_else(|| PatchError::BadRequest(format!("operation {op} has no \"value\"")));
        let path = field("path")?;
        match op.get("op").and_then(Value::as_str) {
            Some("add") => add(&mut doc, &path, value()?)?,
            Some("remove") => {
                remove(&mut doc, &path)?;
            }
            Some("replace") => {
                let v = value()?;
                if path.is_empty() {
                    doc = v;
                } else {
                    remove(&mut doc, &path).map_err(|_| {
                        PatchError::Unprocessable(format!(
                            "replace operation does not apply: doc is missing key: /{}",
                            path.join("/")
                        ))
                    })?;
                    add(&mut doc, &path, v)?;
                }
            }
            Some("move") => {
                let from = field("from")?;
                if path.starts_with(&from) && path.len() > from.len() {
                    return Err(PatchError::Unprocessable("move operation cannot move a value into itself".into()));
                }
                let v = remove(&mut doc, &from)?;
                add(&mut doc, &path, v)?;
            }
            Some("copy") => {
                let from = field("from")?;
                let v = get(&doc, &from).cloned().ok_or_else(|| {
                    PatchError::Unprocessable(format!(
                        "copy operation does not apply: doc is missing from path: /{}",
                        from.join("/")
                    ))
                })?;
                add(&mut doc, &path, v)?;
            }
            Some("test") => {
                if get(&doc, &path) != Some(&value()?) {
                    return Err(PatchError::Unprocessable(format!("testing value /{} failed: test failed", path.join("/"))));
                }
            }
            other => {
                return Err(PatchError::BadRequest(format!("unexpected operation {other:?} in JSON patch")));
            }
        }
    }
    *target = doc;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::schema::NODE;

    fn node_schema() -> Option<Schema> {
        Schema::named(NODE)
    }

    #[test]
    fn merge_patch_follows_rfc7386_examples() {
        // RFC 7386 appendix A, a selection.
        for (orig, patch, want) in [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
        ] {
            let mut t = orig.clone();
            merge(&mut t, &patch);
            assert_eq!(t, want, "{orig} + {patch}");
        }
    }

    #[test]
    fn strategic_merges_conditions_by_type_and_replaces_taints() {
        let mut node = json!({
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}], "podCIDRs": ["10.0.0.0/24"]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "NetworkUnavailable", "status": "True", "reason": "NoRoute"},
            ]},
            "metadata": {"finalizers": ["x"], "labels": {"keep": "1", "drop": "2"}},
        });
        let patch = json!({
            "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
            "status": {"conditions": [
                {"type": "NetworkUnavailable", "status": "False", "reason": null},
                {"type": "MemoryPressure", "status": "False"},
            ]},
            "metadata": {"finalizers": ["y", "x"], "labels": {"drop": null, "new": "3"}},
        });
        strategic(&mut node, &patch, node_schema()).unwrap();
        assert_eq!(node["spec"]["taints"], json!([{"key": "b", "effect": "NoExecute"}]));
        assert_eq!(
            node["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"},
                {"type": "NetworkUnavailable", "status": "False"},
                {"type": "MemoryPressure", "status": "False"},
            ])
        );
        assert_eq!(node["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(node["metadata"]["labels"], json!({"keep": "1", "new": "3"}));
        assert_eq!(node["spec"]["podCIDRs"], json!(["10.0.0.0/24"]));
    }

    #[test]
    fn strategic_directives() {
        let mut node = json!({
            "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n"}]},
        });
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "$setElementOrder/finalizers": ["b"],
                         "labels": {"$patch": "replace", "y": "2"}},
            "status": {"addresses": [{"type": "Hostname", "$patch": "delete"}]},
        });
        strategic(&mut node, &patch, node_schema()).unwrap();
        assert_eq!(node["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(node["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(node["status"]["addresses"], json!([{"type": "InternalIP", "address": "10.0.0.1"}]));
        let missing_key = json!({"status": {"conditions": [{"status": "True"}]}});
        assert!(matches!(strategic(&mut node, &missing_key, node_schema()), Err(PatchError::BadRequest(_))));
    }

    #[test]
    fn json_patch_follows_rfc6902() {
        let mut doc = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "add", "path": "/list/0", "value": 0},
                {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
                {"op": "copy", "from": "/list/3", "path": "/three"},
                {"op": "move", "from": "/three", "path": "/metadata/three"},
                {"op": "remove", "path": "/list/1"},
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"metadata": {"labels": {"a/b": "2"}, "three": 3}, "list": [0, 2, 3]}));
        let before = doc.clone();
        let failing = json!([{"op": "remove", "path": "/list/0"}, {"op": "test", "path": "/list/0", "value": 0}]);
        assert!(matches!(json_patch(&mut doc, &failing), Err(PatchError::Unprocessable(_))));
        assert_eq!(doc, before, "a failed patch changes nothing");
        assert!(matches!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])), Err(PatchError::Unprocessable(_))));
        assert!(matches!(json_patch(&mut doc, &json!({"op": "add"})), Err(PatchError::BadRequest(_))));
    }
}
