//! What the agent reports about itself, shared with the health port's server.
//!
//! `GET /healthz` (Flannel's `--healthz-port`), for the liveness probe: 200 from the
//! first second — also while the agent waits for its podCIDR or the API server, which
//! a restart would not speed up — and while it keeps its node programmed; 503, with
//! the reason, once no resync has succeeded for three resync periods — resyncs that
//! keep failing (an uplink gone for good, a netlink or map error that does not clear)
//! or an event loop that stopped running them — so a liveness probe restarts the agent
//! and the failure shows in the pod's status.
//!
//! `GET /readyz`, for the readiness and startup probes: 200 only once this node's
//! dataplane is fully programmed (and while `/healthz` is), else 503 with what the
//! agent is waiting for — or, degraded, why it cannot program it fully: more nodes
//! than `--max-nodes`, or this node's podCIDR changed or taken by an older Node after
//! start (live all the same: a restart would not make them fit, nor give the pods
//! their addresses back).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// What the endpoints report; the agent updates it as it works.
#[derive(Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
    /// How long without a successful resync is a failure.
    max_age: Duration,
    /// What the outer fragments' slow path did ([`crate::reassembly`]).
    reassembly: Arc<crate::reassembly::Stats>,
}

struct State {
    /// `Some(what it waits for)` until the dataplane is first fully programmed.
    starting: Option<String>,
    last_ok: Instant,
    last_error: Option<String>,
    /// Nodes the table leaves out, per reason label.
    skipped: BTreeMap<&'static str, u64>,
    /// Errors from the API server's watch (each one retried).
    api_errors: u64,
    /// NAT flows the collector removed: (past their timeout, orphaned reply entries).
    nat_reclaimed: (u64, u64),
    /// Nodes past `--max-nodes`: why, and how many are left out.
    over_limit: Option<(String, u64)>,
    /// Why the podCIDR this node serves is no longer its Node's own.
    own_cidr: Option<String>,
}

/// A copy of what `/metrics` reports from the agent's own state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub resync_age: Duration,
    pub healthy: bool,
    pub skipped: BTreeMap<&'static str, u64>,
    pub api_errors: u64,
    /// NAT entries reclaimed (expired, orphans); zero without `--ip-masq`.
    pub nat_reclaimed: (u64, u64),
    /// Nodes left out for want of room in the maps.
    pub over_limit: u64,
}

impl Health {
    /// For an agent that resyncs every `resync`: three missed or failed periods (one
    /// can be a race with the node's own network manager) and a second of slack.
    pub fn new(resync: Duration) -> Health {
        Health {
            state: Arc::new(Mutex::new(State {
                starting: Some("starting".into()),
                last_ok: Instant::now(),
                last_error: None,
                skipped: BTreeMap::new(),
                api_errors: 0,
                nat_reclaimed: (0, 0),
                over_limit: None,
                own_cidr: None,
            })),
            max_age: resync * 3 + Duration::from_secs(1),
            reassembly: Arc::default(),
        }
    }

    /// The slow path's counters, shared with its thread.
    pub fn reassembly(&self) -> &Arc<crate::reassembly::Stats> {
        &self.reassembly
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Still starting: what the agent is doing or waiting for (`/readyz` says it).
    pub fn starting(&self, what: impl Into<String>) {
        let mut s = self.state();
        if s.starting.is_some() {
            s.starting = Some(what.into());
        }
    }

    /// The dataplane is fully programmed: ready, and judged by resyncs from now on.
    pub fn started(&self) {
        let mut s = self.state();
        s.starting = None;
        s.last_ok = Instant::now();
    }

    pub fn resync_ok(&self) {
        let mut s = self.state();
        s.last_ok = Instant::now();
        s.last_error = None;
    }

    pub fn resync_failed(&self, error: String) {
        self.state().last_error = Some(error);
    }

    /// The nodes skipped now, counted per reason label.
    pub fn set_skipped(&self, skipped: BTreeMap<&'static str, u64>) {
        self.state().skipped = skipped;
    }

    /// What masquerade's collector has reclaimed so far.
    pub fn set_nat_reclaimed(&self, expired: u64, orphans: u64) {
        self.state().nat_reclaimed = (expired, orphans);
    }

    /// Nodes past `--max-nodes` (None: all fit): `/readyz` says degraded.
    pub fn set_over_limit(&self, over: Option<(String, u64)>) {
        self.state().over_limit = over;
    }

    /// This node's podCIDR problem after start (None: none): `/readyz` says degraded.
    pub fn set_own_cidr_problem(&self, problem: Option<String>) {
        self.state().own_cidr = problem;
    }

    pub fn api_error(&self) {
        self.state().api_errors += 1;
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let healthy = self.failing(now).is_none();
        let s = self.state();
        Snapshot {
            resync_age: now.saturating_duration_since(s.last_ok),
            healthy,
            skipped: s.skipped.clone(),
            api_errors: s.api_errors,
            nat_reclaimed: s.nat_reclaimed,
            over_limit: s.over_limit.as_ref().map_or(0, |o| o.1),
        }
    }

    /// `None`: healthy (live) at `now`; else why not. Starting is healthy.
    pub fn failing(&self, now: Instant) -> Option<String> {
        let s = self.state();
        if s.starting.is_some() {
            return None;
        }
        let age = now.saturating_duration_since(s.last_ok);
        (age > self.max_age).then(|| {
            let last = s.last_error.as_deref().unwrap_or("none: resyncs stopped running");
            format!("no successful resync for {} s; last error: {last}\n", age.as_secs())
        })
    }
}

impl Health {
    /// `None`: ready at `now`; else why not.
    pub fn not_ready(&self, now: Instant) -> Option<String> {
        {
            let s = self.state();
            if let Some(what) = &s.starting {
                return Some(format!("not ready: {what}\n"));
            }
            if let Some(why) = &s.own_cidr {
                return Some(format!("degraded: {why}\n"));
            }
            if let Some((why, _)) = &s.over_limit {
                return Some(format!("degraded: {why}\n"));
            }
        }
        self.failing(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_but_not_ready_while_starting_however_long_it_takes() {
        let h = Health::new(Duration::from_secs(10));
        h.starting("waiting for node a's podCIDR");
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(h.failing(later), None, "waiting is no reason to be restarted");
        assert_eq!(h.not_ready(later).as_deref(), Some("not ready: waiting for node a's podCIDR\n"));
        h.started();
        assert_eq!(h.not_ready(Instant::now()), None);
        h.starting("too late: ignored");
        assert_eq!(h.not_ready(Instant::now()), None);
        assert!(h.not_ready(Instant::now() + Duration::from_secs(32)).is_some(), "not ready when not healthy");
    }

    #[test]
    fn too_many_nodes_is_not_ready_but_live() {
        let h = Health::new(Duration::from_secs(10));
        h.started();
        h.set_over_limit(Some(("too many nodes: 3 > --max-nodes 2".into(), 1)));
        assert_eq!(h.failing(Instant::now()), None, "a restart would not help: stay live");
        assert_eq!(h.not_ready(Instant::now()).as_deref(), Some("degraded: too many nodes: 3 > --max-nodes 2\n"));
        assert_eq!(h.snapshot(Instant::now()).over_limit, 1);
        h.set_over_limit(None);
        assert_eq!(h.not_ready(Instant::now()), None);
    }

    #[test]
    fn a_pod_cidr_problem_is_not_ready_but_live_until_cleared() {
        let h = Health::new(Duration::from_secs(10));
        h.started();
        h.set_own_cidr_problem(Some("podCIDR changed from 10.244.1.0/24 to 10.244.9.0/24".into()));
        assert_eq!(h.failing(Instant::now()), None, "a restart would not give the pods their addresses back: stay live");
        let why = h.not_ready(Instant::now()).unwrap_or_default();
        assert_eq!(why, "degraded: podCIDR changed from 10.244.1.0/24 to 10.244.9.0/24\n");
        h.set_own_cidr_problem(None);
        assert_eq!(h.not_ready(Instant::now()), None);
    }

    #[test]
    fn fails_after_three_periods_without_a_good_resync_and_recovers() {
        let h = Health::new(Duration::from_secs(10));
        h.started();
        let t0 = Instant::now();
        h.resync_failed("uplink ul0 (index 2) is gone".into());
        assert!(h.failing(t0 + Duration::from_secs(30)).is_none(), "failed resyncs within three periods are tolerated");
        let why = h.failing(t0 + Duration::from_secs(32)).expect("failing");
        assert!(why.contains("no successful resync for 3") && why.contains("last error: uplink ul0 (index 2) is gone"), "{why}");
        h.resync_ok();
        assert!(h.failing(Instant::now() + Duration::from_secs(30)).is_none());
        // A loop that stops resyncing, without any error, is caught too.
        let why = h.failing(Instant::now() + Duration::from_secs(40)).expect("failing");
        assert!(why.contains("resyncs stopped running"), "{why}");
    }
}
