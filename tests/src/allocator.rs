//! `weft-agent allocate-node-cidrs` replicas as processes in a namespace that
//! reaches the API server (as the Deployment's pods run them), and what tests
//! check of the API server's history: no block held by two Nodes at once.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};
use ipnetwork::Ipv4Network;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{agent::AgentProcess, apiserver::ApiServer, netns::Netns, traffic, wait_for};

/// The annotation the allocator sets with each podCIDR it writes.
pub const ANNOTATION: &str = "weft.io/allocated-pod-cidr";

/// Short timings for tests (the defaults are client-go's 15 s / 10 s / 2 s).
pub const TEST_TIMINGS: [&str; 6] = ["--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "500ms"];

pub struct Replica {
    pub process: AgentProcess,
    /// `--identity` (the Lease holds it with a random suffix).
    pub name: String,
    pub health_port: u16,
    ns_path: String,
}

impl Replica {
    /// Starts a replica in `ns` with `extra` arguments (timings, lease name).
    pub fn start(
        ns: &Netns,
        name: &str,
        kubeconfig: &Path,
        net_conf: &Path,
        health_port: u16,
        extra: &[&str],
        log_dir: &Path,
    ) -> Result<Replica> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path()))
            .arg(crate::agent_binary())
            .arg("allocate-node-cidrs")
            .arg("--kubeconfig-file")
            .arg(kubeconfig)
            .arg("--net-config-path")
            .arg(net_conf)
            .args(["--identity", name, "--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(extra);
        let process = AgentProcess::spawn(cmd, name, log_dir.join(format!("allocator-{name}.log")))?;
        Ok(Replica { process, name: name.into(), health_port, ns_path: ns.path() })
    }

    /// `GET path` on the replica's health port: (status code, body).
    pub fn get(&self, ns: &Netns, path: &str) -> Result<(u16, String)> {
        debug_assert_eq!(ns.path(), self.ns_path);
        let text = traffic::http_get(ns, self.health_port, path)?;
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("no status in {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    }

    /// One sample of `/metrics` (the line `name value` or `name{labels} value`).
    pub fn metric(&self, ns: &Netns, sample: &str) -> Result<f64> {
        let (_, body) = self.get(ns, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
            .ok_or_else(|| anyhow!("no {sample} in /metrics:\n{body}"))
    }

    /// Waits (up to `timeout`) for a sample to read `want`: the metrics follow the
    /// API server's state by the time the allocator has handled its answer.
    pub fn await_metric(&self, ns: &Netns, sample: &str, want: f64, timeout: Duration) -> Result<()> {
        let mut last = None;
        let ok = wait_for(timeout, || {
            last = Some(self.metric(ns, sample).map_err(|e| e.to_string()));
            (last == Some(Ok(want))).then_some(())
        });
        ok.ok_or_else(|| anyhow!("{sample}: {last:?} after {timeout:?}, want {want}"))
    }

    pub fn kill(&mut self) -> Result<()> {
        self.process.signal(Signal::SIGKILL)
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }
}

/// The Lease's holder (`--identity` plus suffix) and transitions, if any.
pub fn holder(api: &ApiServer, name: &str) -> Option<(String, i64)> {
    let lease = api.leases().into_iter().find(|l| l["metadata"]["name"] == name)?;
    let holder = lease["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty())?.to_string();
    Some((holder, lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0)))
}

/// Waits for a holder other than `not` (None: any); returns it and when it was seen.
pub fn wait_for_holder(api: &ApiServer, name: &str, not: Option<&str>, timeout: Duration) -> Result<(String, Instant)> {
    wait_for(timeout, || holder(api, name).filter(|(h, _)| Some(h.as_str()) != not).map(|(h, _)| (h, Instant::now())))
        .ok_or_else(|| anyhow!("no new holder of Lease {name} within {timeout:?} (was {not:?})"))
}

/// A Node's podCIDRs as stored.
pub fn pod_cidrs(node: &Value) -> Vec<String> {
    node["spec"]["podCIDRs"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(String::from)).collect()
}

fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Replays the API server's history of Nodes and fails if a podCIDR was ever
/// written to a Node while another live Node held an overlapping one, or if a
/// Node's podCIDR ever changed once set; returns how many podCIDRs were
/// written (transitions from none to one).
pub fn check_history(api: &ApiServer) -> Result<usize> {
    let history = api.node_history().ok_or_else(|| anyhow!("the API server's history was compacted: cannot check it"))?;
    let mut live: BTreeMap<String, (String, Option<Ipv4Network>)> = BTreeMap::new();
    let mut written = 0;
    for (rv, kind, node) in history {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let uid = node["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        if kind == "DELETED" {
            live.remove(&name);
            continue;
        }
        let cidr = match pod_cidrs(&node).as_slice() {
            [] => None,
            [one] => Some(one.parse::<Ipv4Network>()?),
            many => bail!("rv {rv}: Node {name} has {} podCIDRs: {many:?}", many.len()),
        };
        let before = live.get(&name).filter(|(u, _)| *u == uid).and_then(|(_, c)| *c);
        match (before, cidr) {
            (Some(b), Some(c)) if b != c => bail!("rv {rv}: Node {name}'s podCIDR changed from {b} to {c}"),
            (Some(_), None) => bail!("rv {rv}: Node {name} lost its podCIDR"),
            (None, Some(c)) => {
                written += 1;
                if let Some((other, (_, oc))) = live.iter().find(|(n, (_, oc))| **n != name && oc.is_some_and(|o| overlaps(o, c)))
                {
                    bail!("rv {rv}: Node {name} got {c} while Node {other} held {}", oc.expect("found"));
                }
            }
            _ => {}
        }
        live.insert(name, (uid, cidr));
    }
    Ok(written)
}

/// Whether `cidr` is a `/len` block between `min` and `max` inside `network`.
pub fn within(cidr: Ipv4Network, network: Ipv4Network, len: u8, min: Ipv4Addr, max: Ipv4Addr) -> bool {
    cidr.prefix() == len
        && network.contains(cidr.network())
        && cidr.network() == cidr.ip()
        && (u32::from(min)..=u32::from(max)).contains(&u32::from(cidr.network()))
}
