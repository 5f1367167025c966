//! Label and field selectors (`labelSelector=`, `fieldSelector=` on lists and
//! watches), with the grammar and the field labels of the real API: each
//! resource supports its own labels, named in its group-version, and they are
//! evaluated on the stored form.

use serde_json::Value;

use super::{
    meta::{label_value_errors, qualified_name_errors},
    resource::{self, Api},
    status::Status,
};

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Greater(String, i64),
    Less(String, i64),
}

/// `metadata.labels` selector; matches everything when empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses (`a in (x,y),b`).
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn bad(s: &str, why: &str) -> Status {
    Status::bad_request(format!("unable to parse requirement: {s:?}: {why}"))
}

fn check_key(k: &str, whole: &str) -> Result<String, Status> {
    if !qualified_name_errors(k).is_empty() {
        return Err(bad(whole, &format!("invalid label key {k:?}")));
    }
    Ok(k.to_string())
}

fn check_value(v: &str, whole: &str) -> Result<String, Status> {
    if !label_value_errors(v).is_empty() {
        return Err(bad(whole, &format!("invalid label value {v:?}")));
    }
    Ok(v.to_string())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, Status> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top_level(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad(s, "empty requirement"));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Requirement::NotExists(check_key(k.trim(), s)?)
            } else if let Some(open) = p.find('(') {
                let close = p.strip_suffix(')').ok_or_else(|| bad(s, "missing ')'"))?;
                let mut head = p[..open].split_whitespace();
                let (Some(k), Some(op), None) = (head.next(), head.next(), head.next()) else {
                    return Err(bad(s, "expected 'key in (...)' or 'key notin (...)'"));
                };
                let k = check_key(k, s)?;
                let values = close[open + 1..].split(',').map(|v| check_value(v.trim(), s)).collect::<Result<Vec<_>, _>>()?;
                match op {
                    "in" => Requirement::In(k, values),
                    "notin" => Requirement::NotIn(k, values),
                    _ => return Err(bad(s, &format!("unknown operator {op:?}"))),
                }
            } else if let Some((k, v)) = p.split_once("!=") {
                Requirement::NotEquals(check_key(k.trim(), s)?, check_value(v.trim(), s)?)
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Requirement::Equals(check_key(k.trim(), s)?, check_value(v.trim(), s)?)
            } else if let Some((k, v)) = p.split_once('>') {
                let n = v.trim().parse().map_err(|_| bad(s, "'>' needs an integer"))?;
                Requirement::Greater(check_key(k.trim(), s)?, n)
            } else if let Some((k, v)) = p.split_once('<') {
                let n = v.trim().parse().map_err(|_| bad(s, "'<' needs an integer"))?;
                Requirement::Less(check_key(k.trim(), s)?, n)
            } else {
                Requirement::Exists(check_key(p, s)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Greater(k, n) => num(k).is_some_and(|x| x > *n),
            Requirement::Less(k, n) => num(k).is_some_and(|x| x < *n),
        })
    }
}

/// `fieldSelector` over the field labels of a resource, held as stored labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(&'static str, bool, String)>);

/// Splits at `sep` unless escaped with a backslash, unescaping as it goes.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let (mut out, mut cur, mut chars) = (Vec::new(), String::new(), s.chars());
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c == sep => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl FieldSelector {
    /// Parses a selector over `api`'s field labels, as its group-version names them.
    pub fn parse(s: &str, api: Api) -> Result<FieldSelector, Status> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for term in split_escaped(s, ',') {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(Status::bad_request(format!("invalid selector: '{s}'; can't understand '{term}'")));
            };
            let Some(stored) = api.field_label(field) else {
                return Err(Status::bad_request(format!("field label not supported: {field}")));
            };
            terms.push((stored, equal, value.to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(f, equal, v)| (resource::field_value(obj, f).as_deref() == Some(v.as_str())) == *equal)
    }
}

/// Both selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selector_grammar() {
        let n = json!({"metadata": {"name": "a", "labels": {"role": "edge", "zone": "z1", "n": "5"}}});
        for (sel, want) in [
            ("", true),
            ("role=edge", true),
            ("role==edge,zone=z1", true),
            ("role!=edge", false),
            ("role", true),
            ("!role", false),
            ("!missing", true),
            ("zone in (z1, z2),role", true),
            ("zone notin (z1)", false),
            ("missing notin (z1)", true),
            ("n>4,n<6", true),
            ("n>5", false),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&n), want, "{sel}");
        }
        for bad in ["a=b,", "zone in z1", "bad key!=x", "a=b c"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_supports_node_fields_only() {
        let parse = |s| FieldSelector::parse(s, Api::Nodes);
        let n = json!({"kind": "Node", "metadata": {"name": "a"}, "spec": {"unschedulable": true}});
        assert!(parse("metadata.name=a").unwrap().matches(&n));
        assert!(!parse("metadata.name!=a").unwrap().matches(&n));
        assert!(parse("spec.unschedulable=true,metadata.name==a").unwrap().matches(&n));
        assert!(!parse("spec.unschedulable=true").unwrap().matches(&json!({"kind": "Node", "metadata": {"name": "b"}})));
        let err = parse("status.phase=Running").unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "field label not supported: status.phase"));
    }

    #[test]
    fn event_field_selectors_in_both_groups() {
        let ev = json!({"kind": "Event", "metadata": {"name": "e", "namespace": "default"},
                        "involvedObject": {"kind": "Node", "name": "n1", "uid": "u1"}, "type": "Warning",
                        "reportingComponent": "weft-agent", "source": {}});
        // What `kubectl describe node` asks for: an empty value selects an unset field.
        let describe = "involvedObject.kind=Node,involvedObject.name=n1,involvedObject.namespace=,involvedObject.uid=u1";
        assert!(FieldSelector::parse(describe, Api::CoreEvents).unwrap().matches(&ev));
        assert!(!FieldSelector::parse("involvedObject.uid=n1", Api::CoreEvents).unwrap().matches(&ev));
        assert!(FieldSelector::parse("source=weft-agent,type!=Normal", Api::CoreEvents).unwrap().matches(&ev));
        assert!(FieldSelector::parse("regarding.name=n1,reportingController=weft-agent", Api::Events).unwrap().matches(&ev));
        assert!(FieldSelector::parse("regarding.name=n1", Api::CoreEvents).is_err());
        assert!(FieldSelector::parse("source=weft-agent", Api::Events).is_err());
        assert!(FieldSelector::parse("spec.unschedulable=true", Api::CoreEvents).is_err());
    }
}
