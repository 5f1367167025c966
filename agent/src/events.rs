//! Kubernetes Events on Nodes: a Warning on a Node weft skips as a peer (and a
//! Normal one when its fix is taken up), and Warnings on this node's own Node for
//! problems with itself, so `kubectl describe node` shows what one agent's log
//! would otherwise hold alone.
//!
//! Every agent sees the same skipped Node. Rather than one Event per agent (a
//! thousand for one bad annotation in a thousand-node cluster), an Event's name is
//! derived from what it says (the Node's uid, reason and note): the first agent to
//! post it creates it and the others get `409 AlreadyExists`, which is success. The
//! caller reports once per change; the name makes that once per cluster.
//!
//! Events are posted as events.k8s.io/v1 in `default`, where Events about
//! cluster-scoped objects live. Posting never blocks the agent: a failure is logged
//! and counted as an API error, and the dataplane does not wait for it.

use std::time::Duration;

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

use crate::{healthz::Health, node_object::NodeFields};

/// The reporting controller, as Events name it.
pub const CONTROLLER: &str = "weft-agent";
/// Where Events about Nodes go.
pub const NAMESPACE: &str = "default";
/// An Event's note is at most this many bytes (the API server's limit).
const NOTE_MAX: usize = 1024;
/// A post that takes longer is given up (and counted).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an Event is posted: its reason, type and action, fixed per kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Another Node is annotated for VXLAN but unusable (annotation, podCIDR).
    PeerSkipped,
    /// A Node skipped before is a peer again.
    PeerAccepted,
    /// This node's `public-ip-overwrite` is unusable; the address in use is kept.
    InvalidAddress,
    /// This node's podCIDR is unusable; the agent does not start.
    InvalidPodCIDR,
    /// This node's podCIDR changed, or an older Node's overlaps it, after start; the
    /// agent keeps serving the range its pods hold.
    PodCIDRConflict,
    /// Bringing the dataplane back to the node table failed; retried every resync.
    ResyncFailed,
    /// The allocator found no free block for this Node (kube-controller-manager's
    /// reason for the same condition).
    CidrNotAvailable,
    /// This Node got its podCIDR from another allocator: weft's stands aside.
    OtherAllocator,
}

impl Reason {
    /// (reason, type, action) as the Event carries them.
    fn fields(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Reason::PeerSkipped => ("PeerSkipped", "Warning", "SkipPeer"),
            Reason::PeerAccepted => ("PeerAccepted", "Normal", "AddPeer"),
            Reason::InvalidAddress => ("InvalidAddress", "Warning", "KeepAddress"),
            Reason::InvalidPodCIDR => ("InvalidPodCIDR", "Warning", "Exit"),
            Reason::PodCIDRConflict => ("PodCIDRConflict", "Warning", "KeepPodCIDR"),
            Reason::ResyncFailed => ("ResyncFailed", "Warning", "Retry"),
            Reason::CidrNotAvailable => ("CIDRNotAvailable", "Warning", "Allocate"),
            Reason::OtherAllocator => ("OtherAllocator", "Warning", "StandAside"),
        }
    }
}

/// The Node an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub name: String,
    pub uid: Option<String>,
}

impl Regarding {
    pub fn of(node: &impl NodeFields) -> Regarding {
        let meta = node.meta();
        Regarding { name: meta.name.clone().unwrap_or_default(), uid: meta.uid.clone() }
    }
}

/// Posts Events as this node's agent.
#[derive(Clone)]
pub struct Recorder {
    api: Api<Event>,
    /// This node's name (or the allocator replica's identity): the reporting instance.
    instance: String,
    controller: &'static str,
    health: Health,
}

impl Recorder {
    pub fn new(client: Client, instance: String, health: Health) -> Recorder {
        Recorder { api: Api::namespaced(client, NAMESPACE), instance, controller: CONTROLLER, health }
    }

    /// Reports as another controller (the allocator: `weft-allocator`).
    pub fn as_controller(mut self, controller: &'static str) -> Recorder {
        self.controller = controller;
        self
    }

    /// Posts in the background (the agent's loop never waits on the API server for it).
    pub fn report(&self, regarding: Regarding, reason: Reason, note: String) {
        let this = self.clone();
        tokio::spawn(async move { this.post(&regarding, reason, &note).await });
    }

    /// Posts and waits (at most [`TIMEOUT`]): for an agent about to exit.
    pub async fn post(&self, regarding: &Regarding, reason: Reason, note: &str) {
        let event = self.event(regarding, reason, note);
        let name = event.metadata.name.clone().unwrap_or_default();
        match tokio::time::timeout(TIMEOUT, self.api.create(&PostParams::default(), &event)).await {
            Ok(Ok(_)) => tracing::debug!(event = %name, "posted"),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => tracing::debug!(event = %name, "already posted"),
            Ok(Err(e)) => self.failed(&name, &e.to_string()),
            Err(_) => self.failed(&name, &format!("no answer in {TIMEOUT:?}")),
        }
    }

    fn failed(&self, name: &str, why: &str) {
        self.health.api_error();
        tracing::warn!(event = %name, "posting an Event: {why}");
    }

    fn event(&self, regarding: &Regarding, reason: Reason, note: &str) -> Event {
        let (reason_text, type_, action) = reason.fields();
        let note = truncate(note, NOTE_MAX);
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(regarding, reason_text, note)),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(type_.into()),
            reason: Some(reason_text.into()),
            action: Some(action.into()),
            note: Some(note.into()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(regarding.name.clone()),
                uid: regarding.uid.clone(),
                ..Default::default()
            }),
            reporting_controller: Some(self.controller.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

/// `NODE.HASH`: the same for every agent that reports the same thing about the
/// same Node (the uid tells a Node deleted and created again under its name apart).
fn event_name(regarding: &Regarding, reason: &str, note: &str) -> String {
    let mut hash = Fnv::default();
    for part in [regarding.uid.as_deref().unwrap_or(""), reason, note] {
        hash.write(part.as_bytes());
        hash.write(&[0]);
    }
    // Names are DNS subdomains of at most 253 characters; node names are too.
    format!("{}.{:016x}", truncate(&regarding.name, 253 - 17), hash.0)
}

/// FNV-1a: stable across builds and machines (std's hasher is neither).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, uid: &str) -> Regarding {
        Regarding { name: name.into(), uid: Some(uid.into()) }
    }

    #[test]
    fn names_are_the_same_for_every_agent_and_differ_per_change() {
        let a = event_name(&node("n1", "u1"), "PeerSkipped", "bad annotation");
        assert_eq!(a, event_name(&node("n1", "u1"), "PeerSkipped", "bad annotation"));
        assert!(a.starts_with("n1.") && a.len() == 3 + 16, "{a}");
        assert_ne!(a, event_name(&node("n1", "u1"), "PeerSkipped", "another reason"));
        assert_ne!(a, event_name(&node("n1", "u2"), "PeerSkipped", "bad annotation"));
        assert_ne!(a, event_name(&node("n1", "u1"), "PeerAccepted", "bad annotation"));
        // A known FNV-1a value, so a change of hash (and of every name) is noticed.
        let mut h = Fnv::default();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn long_names_and_notes_fit_the_api_limits() {
        let long = "n".repeat(253);
        assert_eq!(event_name(&node(&long, "u"), "R", "x").len(), 253);
        let note = "é".repeat(600); // 1,200 bytes
        let cut = truncate(&note, NOTE_MAX);
        assert!(cut.len() <= NOTE_MAX && cut.len() >= NOTE_MAX - 1);
    }
}
