//! What kube-apiserver's Event registry does around storage. Events are one
//! resource served by two groups: core/v1 `events` (kubectl, client-go's old
//! recorder) and events.k8s.io/v1 `events` (kube's `Recorder`, client-go's new
//! one). Upstream both convert to one internal type; here that is the core/v1
//! shape, as Go serializes it, and events.k8s.io/v1 is a renaming of its fields
//! (`involvedObject` ↔ `regarding`, `message` ↔ `note`, `source` ↔
//! `deprecatedSource`, ...), so either group reads what the other wrote.
//!
//! Decoding goes through k8s-openapi's typed Events of the request's group, so
//! unknown fields are pruned as the real server prunes them. Validation depends
//! on the group a write came through (`ValidateEventCreate`/`Update`): core/v1
//! keeps the legacy rules, strict only for "new" events (those with an
//! `eventTime`); events.k8s.io/v1 adds the strict rules and, on update,
//! immutability of everything but the series and metadata.

use k8s_openapi::api::{
    core::v1::{Event as CoreEvent, EventSeries},
    events::v1::Event as EventsEvent,
};
use serde_json::{Map, Value, json};

use super::{
    meta::{self, Decoded, NameRule, dns1123_subdomain_errors, qualified_name_errors},
    status::{FieldError, Status},
};

/// The group-version a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// core/v1, the stored shape.
    Core,
    /// events.k8s.io/v1.
    EventsV1,
}

pub const EVENTS_V1: &str = "events.k8s.io/v1";

impl Version {
    pub fn api_version(self) -> &'static str {
        match self {
            Version::Core => "v1",
            Version::EventsV1 => EVENTS_V1,
        }
    }
}

/// core/v1 field ↔ events.k8s.io/v1 field, for the fields that differ; the
/// rest (metadata, reason, type, action, eventTime, series, related,
/// reportingInstance) have one name in both.
const RENAMES: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn renamed(mut v: Value, to: Version) -> Value {
    let m = v.as_object_mut().expect("events are objects");
    for (core, events) in RENAMES {
        let (from, into) = if to == Version::EventsV1 { (core, events) } else { (events, core) };
        if let Some(x) = m.remove(from) {
            m.insert(into.into(), x);
        }
    }
    m.insert("apiVersion".into(), json!(to.api_version()));
    v
}

/// Drops `keys` whose value is the empty string (Go's `omitempty`).
fn omit_empty(m: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if m.get(*k).and_then(Value::as_str) == Some("") {
            m.remove(*k);
        }
    }
}

/// Drops the empty strings of a nested struct whose fields are all `omitempty`.
fn omit_empty_fields(v: Option<&mut Value>) {
    if let Some(Value::Object(o)) = v {
        o.retain(|_, x| x.as_str() != Some(""));
    }
}

/// The core/v1 Event as Go writes it: value-typed fields are always there
/// (`involvedObject`, `source`, the timestamps as `null`, the reporting fields
/// as ""), `omitempty` ones only when set.
fn shape_core(mut v: Value) -> Value {
    let m = v.as_object_mut().expect("events are objects");
    omit_empty(m, &["reason", "message", "type", "action"]);
    if m.get("count").and_then(Value::as_i64) == Some(0) {
        m.remove("count");
    }
    for reference in ["involvedObject", "source", "related"] {
        omit_empty_fields(m.get_mut(reference));
    }
    for always in ["involvedObject", "source"] {
        m.entry(always).or_insert_with(|| json!({}));
    }
    for time in ["firstTimestamp", "lastTimestamp", "eventTime"] {
        m.entry(time).or_insert(Value::Null);
    }
    for reporting in ["reportingComponent", "reportingInstance"] {
        m.entry(reporting).or_insert_with(|| json!(""));
    }
    if let Some(Value::Object(s)) = m.get_mut("series") {
        if s.get("count").and_then(Value::as_i64) == Some(0) {
            s.remove("count");
        }
        s.entry("lastObservedTime").or_insert(Value::Null);
    }
    v
}

/// The events.k8s.io/v1 form of a stored Event, as Go writes that type.
pub fn to_events_v1(stored: &Value) -> Value {
    let mut v = renamed(stored.clone(), Version::EventsV1);
    let m = v.as_object_mut().expect("events are objects");
    omit_empty(m, &["reportingController", "reportingInstance"]);
    for always in ["regarding", "deprecatedSource"] {
        m.entry(always).or_insert_with(|| json!({}));
    }
    for time in ["eventTime", "deprecatedFirstTimestamp", "deprecatedLastTimestamp"] {
        m.entry(time).or_insert(Value::Null);
    }
    if let Some(Value::Object(s)) = m.get_mut("series") {
        s.entry("count").or_insert_with(|| json!(0));
        s.entry("lastObservedTime").or_insert(Value::Null);
    }
    v
}

/// Decodes a body of `version` into the stored form.
pub fn decode_value(v: &Value, version: Version) -> Result<Decoded, Status> {
    meta::check_type(v, version.api_version(), "Event")?;
    let cannot = |e: serde_json::Error| Status::bad_request(format!("Event in version \"v1\" cannot be handled as a Event: {e}"));
    let internal = |e: serde_json::Error| Status::internal(e.to_string());
    // events.k8s.io/v1's typed series requires `lastObservedTime`, but Go decodes
    // a missing one as the zero time, which validation then reports: the series
    // decodes on its own, through core/v1's type (all optional, same fields).
    let mut body = v.clone();
    let series = body.as_object_mut().and_then(|m| m.remove("series")).filter(|s| !s.is_null());
    let mut pruned = match version {
        Version::Core => serde_json::to_value(serde_json::from_value::<CoreEvent>(body).map_err(cannot)?),
        Version::EventsV1 => serde_json::to_value(serde_json::from_value::<EventsEvent>(body).map_err(cannot)?),
    }
    .map_err(internal)?;
    if let Some(s) = series {
        let typed: EventSeries = serde_json::from_value(s).map_err(cannot)?;
        pruned["series"] = serde_json::to_value(typed).map_err(internal)?;
    }
    let mut unknown = Vec::new();
    meta::unknown_fields(v, &pruned, "", &mut unknown);
    let core = if version == Version::Core { pruned } else { renamed(pruned, Version::Core) };
    Ok(Decoded { object: shape_core(core), unknown })
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

fn at_most(field: &str, max: usize) -> FieldError {
    FieldError::invalid(field, "", format!("can have at most {max} characters"))
}

/// `legacyValidateEvent`: what every Event satisfies, whichever group wrote it.
fn legacy(ev: &Value, version: Version) -> Vec<FieldError> {
    let mut errs = Vec::new();
    // core/v1 names the field by its core/v1 name; the rest by the internal one.
    let controller_field = if version == Version::Core { "reportingComponent" } else { "reportingController" };
    let ns = meta::namespace(ev);
    let involved_ns = text(&ev["involvedObject"]["namespace"]);
    let mismatch = || FieldError::invalid("involvedObject.namespace", involved_ns, "does not match event.namespace");
    if ev["eventTime"].is_null() {
        // An old-style event: a cluster-scoped object's events may live in "" or
        // "default", a namespaced object's in its own namespace.
        let agrees = if involved_ns.is_empty() { ns.is_empty() || ns == "default" } else { ns == involved_ns };
        if !agrees {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        let controller = text(&ev["reportingComponent"]);
        if controller.is_empty() {
            errs.push(FieldError::required(controller_field, ""));
        }
        errs.extend(qualified_name_errors(controller).into_iter().map(|e| FieldError::invalid(controller_field, controller, e)));
        for (field, max) in [("reportingInstance", REPORTING_INSTANCE_MAX), ("action", ACTION_MAX), ("reason", REASON_MAX)] {
            let value = text(&ev[field]);
            if value.is_empty() {
                errs.push(FieldError::required(field, ""));
            }
            if value.len() > max {
                errs.push(at_most(field, max));
            }
        }
        if text(&ev["message"]).len() > NOTE_MAX {
            errs.push(at_most("message", NOTE_MAX));
        }
    }
    errs.extend(dns1123_subdomain_errors(ns).into_iter().map(|e| FieldError::invalid("namespace", ns, e)));
    errs
}

fn series_errors(ev: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(series) = ev["series"].as_object() {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(FieldError::invalid("series.count", "", "should be at least 2"));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    errs
}

/// `ValidateEventCreate`.
pub fn validate_create(ev: &Value, version: Version) -> Vec<FieldError> {
    let mut errs = legacy(ev, version);
    if version == Version::Core {
        return errs;
    }
    errs.extend(meta::validate_object_meta(ev, NameRule::Subdomain));
    errs.extend(series_errors(ev));
    if ev["eventTime"].is_null() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = text(&ev["type"]);
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid("type", "", format!("has invalid value: {ty}")));
    }
    // The deprecated fields, by their internal names as upstream reports them.
    for time in ["firstTimestamp", "lastTimestamp"] {
        if !ev[time].is_null() {
            errs.push(FieldError::invalid(time, "", "needs to be unset"));
        }
    }
    if ev["count"].as_i64().unwrap_or(0) != 0 {
        errs.push(FieldError::invalid("count", "", "needs to be unset"));
    }
    if !text(&ev["source"]["component"]).is_empty() || !text(&ev["source"]["host"]).is_empty() {
        errs.push(FieldError::invalid("source", "", "needs to be unset"));
    }
    errs
}

/// `ValidateEventUpdate`, less the metadata rules every kind shares.
pub fn validate_update(new: &Value, old: &Value, version: Version) -> Vec<FieldError> {
    let mut errs = legacy(new, version);
    if version == Version::Core {
        return errs;
    }
    if new["series"] != old["series"] {
        errs.extend(series_errors(new));
    }
    // Upstream checks `reason` twice, so a changed reason is reported twice.
    // Times are stored at microsecond precision, what the comparison tolerates.
    for (field, stored) in [
        ("involvedObject", "involvedObject"),
        ("reason", "reason"),
        ("message", "message"),
        ("source", "source"),
        ("firstTimestamp", "firstTimestamp"),
        ("lastTimestamp", "lastTimestamp"),
        ("count", "count"),
        ("reason", "reason"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("action", "action"),
        ("related", "related"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
    ] {
        if new[stored] != old[stored] {
            errs.push(FieldError::invalid(field, new[stored].clone(), "field is immutable"));
        }
    }
    errs
}

/// The field labels of core/v1 Events, which are also the stored ones.
const CORE_LABELS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The stored label a field selector's label names in `version` (`None`: not
/// supported there). events.k8s.io/v1 speaks its own names and has no `source`.
pub fn field_label(version: Version, label: &str) -> Option<&'static str> {
    let core = |l: &str| CORE_LABELS.iter().find(|c| **c == l).copied();
    match version {
        Version::Core => core(label),
        Version::EventsV1 => match label {
            "metadata.name" | "metadata.namespace" | "reason" | "type" => core(label),
            "reportingController" => Some("reportingComponent"),
            l => {
                let field = l.strip_prefix("regarding.")?;
                CORE_LABELS.iter().find(|c| c.strip_prefix("involvedObject.") == Some(field)).copied()
            }
        },
    }
}

/// The value of a stored label (`ToSelectableFields`); absent fields are "".
pub fn field_value(ev: &Value, label: &str) -> Option<String> {
    let value = match label {
        "metadata.name" => meta::name(ev),
        "metadata.namespace" => meta::namespace(ev),
        "reason" | "type" | "reportingComponent" => text(&ev[label]),
        "source" => match text(&ev["source"]["component"]) {
            "" => text(&ev["reportingComponent"]),
            component => component,
        },
        l => text(&ev["involvedObject"][l.strip_prefix("involvedObject.")?]),
    };
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kube's `Recorder` posts for a Node.
    fn recorded() -> Value {
        json!({
            "apiVersion": EVENTS_V1, "kind": "Event",
            "metadata": {"name": "n1.1845a3c2f0e8d000", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.123456Z",
            "action": "Programming", "reason": "RouteFailed", "note": "no route to 10.0.0.2", "type": "Warning",
            "regarding": {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u-1"},
            "reportingController": "weft.example/agent", "reportingInstance": "weft-agent-n1",
        })
    }

    #[test]
    fn groups_convert_both_ways_without_loss() {
        let d = decode_value(&recorded(), Version::EventsV1).unwrap();
        assert!(d.unknown.is_empty(), "{:?}", d.unknown);
        let core = d.object;
        assert_eq!((core["apiVersion"].as_str(), core["message"].as_str()), (Some("v1"), Some("no route to 10.0.0.2")));
        assert_eq!(core["involvedObject"]["name"], "n1");
        assert_eq!(core["reportingComponent"], "weft.example/agent");
        assert_eq!((core["firstTimestamp"].clone(), core["source"].clone()), (Value::Null, json!({})), "Go's zero values");
        let back = to_events_v1(&core);
        assert_eq!(back["regarding"], recorded()["regarding"]);
        assert_eq!((back["note"].clone(), back["deprecatedSource"].clone()), (recorded()["note"].clone(), json!({})));
        assert_eq!(decode_value(&back, Version::EventsV1).unwrap().object, core, "a round trip changes nothing");
        let legacy = json!({"metadata": {"name": "x", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n1"},
                            "count": 3, "source": {"component": "kubelet", "host": "n1"}, "reason": "Rebooted",
                            "firstTimestamp": "2026-01-01T00:00:00Z", "bogus": 1});
        let d = decode_value(&legacy, Version::Core).unwrap();
        assert_eq!(d.unknown, ["bogus"]);
        let v1 = to_events_v1(&d.object);
        assert_eq!((v1["deprecatedCount"].as_i64(), v1["deprecatedSource"]["host"].as_str()), (Some(3), Some("n1")));
        assert_eq!((v1["eventTime"].clone(), v1["reportingController"].clone()), (Value::Null, Value::Null));
        assert_eq!(decode_value(&v1, Version::EventsV1).unwrap().object, d.object);
        let series = json!({"metadata": {"name": "s"}, "series": {"count": 2}});
        assert_eq!(decode_value(&series, Version::EventsV1).unwrap().object["series"]["lastObservedTime"], Value::Null);
        assert_eq!(decode_value(&json!({"kind": "Node"}), Version::Core).unwrap_err().code, 400);
        assert_eq!(decode_value(&json!({"apiVersion": "v1"}), Version::EventsV1).unwrap_err().code, 400);
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn strict_rules_for_events_k8s_io() {
        let ok = decode_value(&recorded(), Version::EventsV1).unwrap().object;
        assert!(validate_create(&ok, Version::EventsV1).is_empty(), "{:?}", validate_create(&ok, Version::EventsV1));
        let mut bare = recorded();
        for f in ["reportingController", "action", "eventTime"] {
            bare.as_object_mut().unwrap().remove(f);
        }
        bare["type"] = json!("Odd");
        bare["deprecatedCount"] = json!(2);
        let ev = decode_value(&bare, Version::EventsV1).unwrap().object;
        let got = messages(&validate_create(&ev, Version::EventsV1));
        // Without an eventTime the legacy rules are the old-style ones: nothing about reporting.
        assert_eq!(
            got,
            [
                "eventTime: Required value",
                "type: Invalid value: \"\": has invalid value: Odd",
                "count: Invalid value: \"\": needs to be unset",
            ]
        );
        let mut no_controller = recorded();
        no_controller.as_object_mut().unwrap().remove("reportingController");
        let ev = decode_value(&no_controller, Version::EventsV1).unwrap().object;
        let got = messages(&validate_create(&ev, Version::EventsV1));
        assert_eq!(got[0], "reportingController: Required value");
        assert_eq!(got[1], "reportingController: Invalid value: \"\": name part must be non-empty");
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            messages(&validate_create(&ev, Version::Core))[0],
            "reportingComponent: Required value",
            "core/v1 names its own field"
        );
        let mut elsewhere = ok.clone();
        elsewhere["metadata"]["namespace"] = json!("kube-public");
        assert_eq!(
            messages(&validate_create(&elsewhere, Version::EventsV1)),
            ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
        );
        let mut long = ok.clone();
        long["message"] = json!("x".repeat(1025));
        assert_eq!(
            messages(&validate_create(&long, Version::EventsV1)),
            ["message: Invalid value: \"\": can have at most 1024 characters"]
        );
    }

    #[test]
    fn legacy_rules_for_core_v1() {
        let old_style = |ns: &str, involved_ns: Option<&str>| {
            let mut e =
                json!({"metadata": {"name": "Kubelet_Event", "namespace": ns}, "involvedObject": {"kind": "Pod", "name": "p"}});
            if let Some(n) = involved_ns {
                e["involvedObject"]["namespace"] = json!(n);
            }
            decode_value(&e, Version::Core).unwrap().object
        };
        assert!(validate_create(&old_style("default", None), Version::Core).is_empty(), "names need not be subdomains");
        assert!(validate_create(&old_style("kube-system", Some("kube-system")), Version::Core).is_empty());
        assert_eq!(
            messages(&validate_create(&old_style("kube-system", None), Version::Core)),
            ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
        );
        assert_eq!(validate_create(&old_style("default", Some("other")), Version::Core).len(), 1);
    }

    #[test]
    fn updates_through_events_k8s_io_may_only_move_the_series() {
        let old = decode_value(&recorded(), Version::EventsV1).unwrap().object;
        let mut next = recorded();
        next["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        let new = decode_value(&next, Version::EventsV1).unwrap().object;
        assert!(validate_update(&new, &old, Version::EventsV1).is_empty());
        next["series"]["count"] = json!(1);
        next["note"] = json!("changed");
        let new = decode_value(&next, Version::EventsV1).unwrap().object;
        assert_eq!(
            messages(&validate_update(&new, &old, Version::EventsV1)),
            [
                "series.count: Invalid value: \"\": should be at least 2",
                "message: Invalid value: \"changed\": field is immutable"
            ]
        );
        assert!(validate_update(&new, &old, Version::Core).is_empty(), "core/v1 updates are not checked for immutability");
    }

    #[test]
    fn field_labels_per_group() {
        assert_eq!(field_label(Version::Core, "involvedObject.uid"), Some("involvedObject.uid"));
        assert_eq!(field_label(Version::Core, "regarding.uid"), None);
        assert_eq!(field_label(Version::EventsV1, "regarding.uid"), Some("involvedObject.uid"));
        assert_eq!(field_label(Version::EventsV1, "reportingController"), Some("reportingComponent"));
        assert_eq!(field_label(Version::EventsV1, "involvedObject.uid"), None);
        assert_eq!(field_label(Version::EventsV1, "source"), None);
        assert_eq!(field_label(Version::Core, "spec.unschedulable"), None);
        let ev = decode_value(&recorded(), Version::EventsV1).unwrap().object;
        assert_eq!(field_value(&ev, "involvedObject.uid").as_deref(), Some("u-1"));
        assert_eq!(field_value(&ev, "involvedObject.namespace").as_deref(), Some(""));
        assert_eq!(field_value(&ev, "source").as_deref(), Some("weft.example/agent"), "falls back to the controller");
        assert_eq!(field_value(&ev, "type").as_deref(), Some("Warning"));
    }
}
