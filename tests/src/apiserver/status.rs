//! Failures as metav1.Status objects, worded as kube-apiserver words them: clients
//! match on `reason` and `code` (kube's watcher relists on 410, kubectl prints
//! `message` and, for `Invalid`, the field causes).

use std::fmt;

use serde_json::{Value, json};

/// A failed request, carrying the metav1.Status the API server answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    /// `metav1.StatusReason`: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

/// A resource as errors name it (`schema.GroupResource`): `nodes`, `events`,
/// `events.events.k8s.io`, `namespaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupResource {
    pub group: &'static str,
    pub resource: &'static str,
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() { f.write_str(self.resource) } else { write!(f, "{}.{}", self.resource, self.group) }
    }
}

fn resource_details(gr: GroupResource, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": gr.resource });
    if !gr.group.is_empty() {
        d["group"] = json!(gr.group);
    }
    d
}

impl Status {
    fn new(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Status {
        Status { code, reason: reason.into(), message: message.into(), details }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    pub fn not_found(gr: GroupResource, name: &str) -> Status {
        Status::new(404, "NotFound", format!("{gr} \"{name}\" not found"), Some(resource_details(gr, name)))
    }

    /// A path the server does not serve.
    pub fn no_route() -> Status {
        Status::new(404, "NotFound", "the server could not find the requested resource", Some(json!({})))
    }

    pub fn already_exists(gr: GroupResource, name: &str) -> Status {
        Status::new(409, "AlreadyExists", format!("{gr} \"{name}\" already exists"), Some(resource_details(gr, name)))
    }

    pub fn conflict(gr: GroupResource, name: &str, why: &str) -> Status {
        Status::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
            Some(resource_details(gr, name)),
        )
    }

    /// The optimistic-concurrency failure (stale `metadata.resourceVersion`).
    pub fn stale(gr: GroupResource, name: &str) -> Status {
        Status::conflict(gr, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// 422 for `kind` named `name` (kind "Node" or "Event", or "ListOptions" for
    /// bad query options). Events of both groups are reported as the core kind,
    /// the kind of the one internal type they share upstream.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Status {
        let list = errors.iter().map(FieldError::to_string).collect::<Vec<_>>();
        let summary = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let mut details = json!({
            "name": name,
            "kind": kind,
            "causes": errors.iter().map(FieldError::cause).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Status::new(422, "Invalid", format!("{qualified} \"{name}\" is invalid: {summary}"), Some(details))
    }

    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(400, "BadRequest", message, None)
    }

    pub fn method_not_allowed() -> Status {
        Status::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", Some(json!({})))
    }

    pub fn not_acceptable(accepted: &str) -> Status {
        Status::new(406, "NotAcceptable", format!("only the following media types are accepted: {accepted}"), None)
    }

    pub fn unsupported_media_type(got: &str, accepted: &str) -> Status {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({got:?}) - accepted media types include: {accepted}"),
            None,
        )
    }

    pub fn too_large() -> Status {
        Status::new(413, "RequestEntityTooLarge", "the request body is too large", None)
    }

    /// History a client asked for is gone (etcd compacted it): clients relist.
    pub fn expired(message: impl Into<String>) -> Status {
        Status::new(410, "Expired", message, None)
    }

    pub fn timeout(message: impl Into<String>) -> Status {
        Status::new(504, "Timeout", message, Some(json!({ "retryAfterSeconds": 1 })))
    }

    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(500, "InternalError", message, None)
    }
}

/// What is wrong with a field (`k8s.io/apimachinery/pkg/util/validation/field`).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    Required,
    Invalid(Value),
    Forbidden,
    Duplicate(Value),
    NotSupported(Value, Vec<&'static str>),
    TooLong(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError { field: field.into(), kind: FieldErrorKind::Required, detail: detail.into() }
    }

    pub fn invalid(field: &str, value: impl Into<Value>, detail: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), kind: FieldErrorKind::Invalid(value.into()), detail: detail.into() }
    }

    pub fn forbidden(field: &str, detail: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), kind: FieldErrorKind::Forbidden, detail: detail.into() }
    }

    pub fn duplicate(field: &str, value: impl Into<Value>) -> FieldError {
        FieldError { field: field.into(), kind: FieldErrorKind::Duplicate(value.into()), detail: String::new() }
    }

    pub fn not_supported(field: &str, value: impl Into<Value>, allowed: &[&'static str]) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(value.into(), allowed.to_vec()),
            detail: String::new(),
        }
    }

    pub fn too_long(field: &str, max: usize) -> FieldError {
        FieldError { field: field.into(), kind: FieldErrorKind::TooLong(max), detail: String::new() }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::TooLong(_) => "FieldValueTooLong",
        }
    }

    /// The message without the field, as `field.Error.ErrorBody` writes it.
    fn body(&self) -> String {
        let (mut s, detail) = match &self.kind {
            FieldErrorKind::Required => ("Required value".to_string(), self.detail.as_str()),
            FieldErrorKind::Invalid(v) => (format!("Invalid value: {v}"), self.detail.as_str()),
            FieldErrorKind::Forbidden => ("Forbidden".to_string(), self.detail.as_str()),
            FieldErrorKind::Duplicate(v) => (format!("Duplicate value: {v}"), ""),
            FieldErrorKind::NotSupported(v, allowed) => {
                let allowed = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
                (format!("Unsupported value: {v}: supported values: {allowed}"), "")
            }
            FieldErrorKind::TooLong(max) => (format!("Too long: may not be more than {max} bytes"), ""),
        };
        if !detail.is_empty() {
            s.push_str(": ");
            s.push_str(detail);
        }
        s
    }

    fn cause(&self) -> Value {
        json!({ "reason": self.reason(), "message": self.body(), "field": self.field })
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}
