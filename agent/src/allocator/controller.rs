//! One term of leadership: the view of every Node rebuilt from the API server
//! (a fresh list, then a watch), and a podCIDR written to each Node without one.
//!
//! Safety rests on three things, none of them local state:
//! - the [`Pool`] holds every block any Node's podCIDR overlaps, whoever wrote
//!   it, plus the blocks of writes in flight; a block is free again only when
//!   its Node is deleted (or a write of it was refused, which is certain);
//! - each write is a merge patch carrying the Node's resourceVersion, so a Node
//!   changed since it was read (by another allocator, or anyone) is a 409, and
//!   the API server refuses any change of a set podCIDR (422);
//! - writes start only while the [`Term`] is valid: a leader that could not
//!   renew its Lease stops before a standby may start.
//!
//! A write whose outcome is unknown (timeout, connection lost) keeps its block
//! reserved for that Node and is retried with the same block, so a write that
//! lands late can never collide with a block given to another Node.
//!
//! Each podCIDR written here carries the annotation [`ANNOTATION`]. A Node seen
//! without a podCIDR that then gets one without it was given its podCIDR by
//! someone else (kube-controller-manager with `--allocate-node-cidrs`): the
//! allocator stands aside, writes nothing more and says so (log, Event, metric,
//! `/readyz`), rather than race another allocator with another view.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    time::Duration,
};

use futures::StreamExt;
use ipnetwork::Ipv4Network;
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use thiserror::Error;
use tokio::task::JoinSet;

use super::{election::Term, metrics::Stats, pool::Pool};
use crate::{
    events::{Reason, Recorder, Regarding},
    netconf::Subnets,
    node_object::{NodeFields, WatchedNode},
};

/// Nodes as the allocator reads them: metadata and podCIDRs only (serde skips the
/// rest of each object, which a watch of every Node would otherwise keep).
type Node = WatchedNode;

/// Set with every podCIDR the allocator writes, to the CIDR written: how a
/// podCIDR written by someone else is told apart.
pub const ANNOTATION: &str = "weft.io/allocated-pod-cidr";

/// Writes running at once (each is one PATCH).
const MAX_IN_FLIGHT: usize = 16;
/// A write whose outcome is unknown is retried after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// During a burst, the metrics' view (a walk over every Node) is refreshed at most
/// this often; it is always refreshed once the work is done.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("the Lease was not renewed in time: stopped writing")]
    TermEnded,
    #[error("the Node watch ended")]
    WatchEnded,
}

/// What is known of one Node.
#[derive(Debug, Default)]
struct Seen {
    uid: Option<String>,
    resource_version: Option<String>,
    /// Its IPv4 podCIDRs (each held in the pool).
    cidrs: Vec<Ipv4Network>,
}

/// The IPv4 CIDRs of a Node's `spec.podCIDRs` (or `podCIDR`), unparsable ones left out.
fn pod_cidrs(node: &Node) -> Vec<Ipv4Network> {
    let all: Vec<&str> = match node.pod_cidrs() {
        [] => node.pod_cidr().into_iter().collect(),
        list => list.iter().map(String::as_str).collect(),
    };
    all.iter()
        .filter_map(|c| c.parse::<Ipv4Network>().ok())
        .map(|c| Ipv4Network::new(c.network(), c.prefix()).unwrap_or(c))
        .collect()
}

fn seen(node: &Node) -> Seen {
    Seen { uid: node.metadata.uid.clone(), resource_version: node.metadata.resource_version.clone(), cidrs: pod_cidrs(node) }
}

fn written_here(node: &Node, cidr: Ipv4Network) -> bool {
    node.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)).is_some_and(|v| *v == cidr.to_string())
}

/// A write's outcome, back on the loop.
type WriteResult = (String, Ipv4Network, Result<Node, kube::Error>);

pub struct Controller {
    nodes: Api<Node>,
    subnets: Subnets,
    network: Ipv4Network,
    pool: Pool,
    known: HashMap<String, Seen>,
    /// Blocks reserved for Nodes: a write is running or its outcome is unknown.
    reserved: HashMap<String, Ipv4Network>,
    running: HashSet<String>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Nodes left without a podCIDR for want of a free block (reported once each).
    exhausted: BTreeSet<String>,
    writes: JoinSet<WriteResult>,
    term: Term,
    recorder: Recorder,
    stats: Stats,
    write_timeout: Duration,
}

impl Controller {
    pub fn new(
        nodes: Api<Node>,
        network: Ipv4Network,
        subnets: Subnets,
        term: Term,
        recorder: Recorder,
        stats: Stats,
        write_timeout: Duration,
    ) -> Controller {
        Controller {
            nodes,
            subnets,
            network,
            pool: Pool::new(subnets),
            known: HashMap::new(),
            reserved: HashMap::new(),
            running: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            exhausted: BTreeSet::new(),
            writes: JoinSet::new(),
            term,
            recorder,
            stats,
            write_timeout,
        }
    }

    /// Runs until the term ends or the watch does.
    pub async fn run(mut self) -> ControllerError {
        let stream = watcher(self.nodes.clone(), watcher::Config::default()).default_backoff();
        tokio::pin!(stream);
        // A relist's Nodes, reduced to what the view keeps as they arrive.
        let mut listing: Option<Vec<(String, Seen)>> = None;
        let mut ready = false;
        let mut published = std::time::Instant::now();
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(watcher::Event::Init)) => listing = Some(Vec::new()),
                    Some(Ok(watcher::Event::InitApply(n))) => {
                        listing.get_or_insert_with(Vec::new).push((n.metadata.name.clone().unwrap_or_default(), seen(&n)));
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        self.rebuild(listing.take().unwrap_or_default());
                        ready = true;
                    }
                    Some(Ok(watcher::Event::Apply(n))) if ready => self.observe(&n),
                    Some(Ok(watcher::Event::Delete(n))) if ready => self.forget(&n),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.stats.api_error();
                        tracing::warn!("watching Nodes: {e}; retrying");
                    }
                    None => return ControllerError::WatchEnded,
                },
                Some(done) = self.writes.join_next(), if !self.writes.is_empty() => match done {
                    Ok(result) => self.written(result).await,
                    Err(e) => tracing::error!("a podCIDR write task failed: {e}"),
                },
            }
            if ready && let Err(e) = self.pump() {
                return e;
            }
            let idle = self.running.is_empty() && self.queue.is_empty();
            if idle || published.elapsed() >= PUBLISH_EVERY {
                self.publish();
                published = std::time::Instant::now();
            }
        }
    }

    /// A fresh view from a full list: the pool from what Nodes hold now, plus
    /// the blocks still reserved for writes.
    fn rebuild(&mut self, nodes: Vec<(String, Seen)>) {
        self.pool = Pool::new(self.subnets);
        self.known.clear();
        self.queue.clear();
        self.queued.clear();
        let count = nodes.len();
        for (name, seen) in nodes {
            for c in &seen.cidrs {
                self.pool.take(*c);
            }
            self.known.insert(name, seen);
        }
        self.reserved.retain(|name, _| self.known.get(name).is_some_and(|s| s.cidrs.is_empty()));
        for cidr in self.reserved.values() {
            self.pool.take(*cidr);
        }
        let mut waiting: Vec<&String> = self.known.iter().filter(|(_, s)| s.cidrs.is_empty()).map(|(n, _)| n).collect();
        waiting.sort();
        let waiting: Vec<String> = waiting.into_iter().cloned().collect();
        self.exhausted.retain(|n| waiting.contains(n));
        tracing::info!(
            nodes = count,
            without_pod_cidr = waiting.len(),
            used = self.pool.used(),
            capacity = self.pool.capacity(),
            "view rebuilt from the API server"
        );
        for name in waiting {
            self.enqueue(name);
        }
    }

    fn enqueue(&mut self, name: String) {
        if self.queued.insert(name.clone()) {
            self.queue.push_back(name);
        }
    }

    /// A Node as it is now.
    fn observe(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let prev = self.known.insert(name.clone(), seen(node)).unwrap_or_default();
        let replaced = prev.uid.is_some() && prev.uid != node.metadata.uid;
        let now = &self.known[&name].cidrs;
        if prev.cidrs != *now {
            let now = now.clone();
            for c in &prev.cidrs {
                self.pool.release(*c);
            }
            let reserved = self.reserved.remove(&name);
            for c in &now {
                if reserved == Some(*c) {
                    continue; // the reservation becomes the Node's hold
                }
                self.pool.take(*c);
            }
            match reserved {
                Some(r) if !now.contains(&r) && !now.is_empty() => self.pool.release(r),
                // Still without one: the block stays reserved for it.
                Some(r) if now.is_empty() => {
                    self.reserved.insert(name.clone(), r);
                }
                _ => {}
            }
            if !now.is_empty() {
                self.exhausted.remove(&name);
                if prev.cidrs.is_empty() && !replaced && prev.uid.is_some() && !written_here(node, now[0]) {
                    self.stand_aside(node, now[0]);
                }
            }
        }
        if self.known[&name].cidrs.is_empty() && !self.running.contains(&name) {
            self.enqueue(name);
        }
    }

    /// A Node deleted: its blocks are free again, and Nodes waiting for one retry.
    fn forget(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        if let Some(seen) = self.known.remove(&name) {
            for c in seen.cidrs {
                self.pool.release(c);
            }
        }
        if !self.running.contains(&name)
            && let Some(r) = self.reserved.remove(&name)
        {
            self.pool.release(r);
        }
        self.exhausted.remove(&name);
        let retry: Vec<String> = self.exhausted.iter().cloned().collect();
        for n in retry {
            self.enqueue(n);
        }
    }

    /// Starts writes for queued Nodes, up to [`MAX_IN_FLIGHT`].
    fn pump(&mut self) -> Result<(), ControllerError> {
        while self.running.len() < MAX_IN_FLIGHT {
            if self.stats.standing_aside() {
                self.queue.clear();
                self.queued.clear();
                return Ok(());
            }
            let Some(name) = self.queue.pop_front() else {
                return Ok(());
            };
            self.queued.remove(&name);
            let Some(seen) = self.known.get(&name) else {
                continue;
            };
            if !seen.cidrs.is_empty() || self.running.contains(&name) {
                continue;
            }
            if !self.term.valid() {
                return Err(ControllerError::TermEnded);
            }
            let rv = seen.resource_version.clone();
            let cidr = match self.reserved.get(&name) {
                Some(c) => *c,
                None => match self.pool.allocate() {
                    Some(c) => {
                        self.reserved.insert(name.clone(), c);
                        c
                    }
                    None => {
                        self.out_of_blocks(&name);
                        continue;
                    }
                },
            };
            self.running.insert(name.clone());
            let (nodes, timeout) = (self.nodes.clone(), self.write_timeout);
            self.writes.spawn(write(nodes, name, rv, cidr, timeout));
        }
        Ok(())
    }

    /// A write's outcome.
    async fn written(&mut self, (name, cidr, result): WriteResult) {
        self.running.remove(&name);
        match result {
            Ok(node) => {
                self.stats.assigned();
                tracing::info!(node = %name, pod_cidr = %cidr, "assigned");
                self.observe(&node);
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {
                // Refused, so certainly not written: the block is free again.
                if self.reserved.get(&name) == Some(&cidr) {
                    self.reserved.remove(&name);
                    self.pool.release(cidr);
                }
                if s.code == 404 {
                    return;
                }
                self.stats.conflict();
                tracing::debug!(node = %name, "write refused ({}): reading the Node again", s.message);
                self.reread(&name).await;
            }
            Err(e) => {
                // Unknown outcome: the block stays reserved for this Node.
                self.stats.api_error();
                tracing::warn!(node = %name, pod_cidr = %cidr, "writing podCIDR: {e}; retrying with the same block");
                self.reread(&name).await;
            }
        }
    }

    async fn reread(&mut self, name: &str) {
        match self.nodes.get_opt(name).await {
            Ok(Some(node)) => self.observe(&node),
            Ok(None) => {
                if let Some(known) = self.known.get(name) {
                    let node = Node {
                        metadata: kube::api::ObjectMeta { name: Some(name.into()), uid: known.uid.clone(), ..Default::default() },
                        ..Default::default()
                    };
                    self.forget(&node);
                }
            }
            Err(e) => {
                self.stats.api_error();
                tracing::warn!(node = name, "reading Node: {e}; retrying");
                self.enqueue(name.to_string());
            }
        }
    }

    fn out_of_blocks(&mut self, name: &str) {
        if !self.exhausted.insert(name.to_string()) {
            return;
        }
        let why = format!(
            "no free /{} block left in {} between {} and {} ({} blocks, all in use): Node {name} stays without a \
             podCIDR until a Node is deleted or the range is widened",
            self.subnets.len,
            self.network,
            self.subnets.min,
            self.subnets.max,
            self.pool.capacity()
        );
        tracing::warn!(node = name, "{why}");
        let uid = self.known.get(name).and_then(|s| s.uid.clone());
        self.recorder.report(Regarding { name: name.into(), uid }, Reason::CidrNotAvailable, why);
    }

    fn stand_aside(&mut self, node: &Node, cidr: Ipv4Network) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let why = format!(
            "Node {name} was given podCIDR {cidr} by another allocator (kube-controller-manager with \
             --allocate-node-cidrs?): weft's allocator stands aside and writes no podCIDR any more; run only one \
             allocator (turn this Deployment off, or kube-controller-manager's --allocate-node-cidrs)"
        );
        if self.stats.set_standing_aside(&why) {
            tracing::error!(node = %name, "{why}");
            self.recorder.report(Regarding::of(node), Reason::OtherAllocator, why);
        }
    }

    fn publish(&self) {
        let assigned = self.known.values().filter(|s| !s.cidrs.is_empty()).count() as u64;
        let without = self.known.len() as u64 - assigned;
        self.stats.set_view(assigned, without, self.exhausted.len() as u64, self.pool.used(), self.pool.capacity());
    }
}

/// One PATCH: `spec.podCIDR`, `spec.podCIDRs` and the annotation, conditional on
/// the resourceVersion read. A failure with an unknown outcome waits a little
/// before it is reported, so a retry loop against a failing server is paced.
async fn write(nodes: Api<Node>, name: String, rv: Option<String>, cidr: Ipv4Network, timeout: Duration) -> WriteResult {
    let c = cidr.to_string();
    let body = json!({
        "metadata": {"resourceVersion": rv, "annotations": {ANNOTATION: c}},
        "spec": {"podCIDR": c, "podCIDRs": [c]},
    });
    let result = match tokio::time::timeout(timeout, nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&body))).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(format!("no answer within {timeout:?}").into())),
    };
    if result.as_ref().is_err_and(|e| !matches!(e, kube::Error::Api(_))) {
        tokio::time::sleep(RETRY_AFTER).await;
    }
    (name, cidr, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cidr: Option<&str>, list: Option<&[&str]>, annotation: Option<&str>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "annotations": annotation.map(|a| json!({ANNOTATION: a}))},
            "spec": {"podCIDR": cidr, "podCIDRs": list},
        }))
        .unwrap()
    }

    #[test]
    fn pod_cidrs_are_read_as_the_api_server_writes_them() {
        assert_eq!(pod_cidrs(&node(None, None, None)), []);
        let one: Ipv4Network = "10.0.1.0/24".parse().unwrap();
        assert_eq!(pod_cidrs(&node(Some("10.0.1.0/24"), None, None)), [one]);
        assert_eq!(pod_cidrs(&node(Some("10.0.1.0/24"), Some(&["10.0.1.0/24", "fd00::/64"]), None)), [one]);
        assert_eq!(pod_cidrs(&node(Some("10.0.1.7/24"), None, None)), [one], "host bits: the block it overlaps");
        assert!(written_here(&node(Some("10.0.1.0/24"), None, Some("10.0.1.0/24")), one));
        assert!(!written_here(&node(Some("10.0.1.0/24"), None, Some("10.0.2.0/24")), one));
        assert!(!written_here(&node(Some("10.0.1.0/24"), None, None), one));
    }
}
