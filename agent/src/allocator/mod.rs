//! `weft-agent allocate-node-cidrs`: gives every Node without `spec.podCIDR` a
//! block of `Network` (net-conf.json's `SubnetLen`, `SubnetMin`, `SubnetMax`),
//! for clusters whose kube-controller-manager does not (`--allocate-node-cidrs`
//! off), where Flannel waits forever for "pod cidr not assigned".
//!
//! It runs as a small Deployment of a few replicas rather than in the
//! DaemonSet: it must run before any node has pod networking (host network,
//! tolerating not-ready nodes), one replica at a time is enough for any cluster,
//! and a Deployment keeps its RBAC (patching every Node) off the agent on every
//! node. Replicas elect a leader on a Lease ([`election`]); the leader runs the
//! [`controller`], the others stand by. Its health port serves `/healthz`,
//! `/readyz` and `/metrics` ([`metrics`]).

pub mod controller;
pub mod election;
pub mod metrics;
pub mod pool;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::time::Instant;

use self::{
    controller::Controller,
    election::{Attempt, Elector, Term, Timings},
    metrics::Stats,
};
use crate::{events::Recorder, healthz::Health, kube_sync, netconf, node_object::WatchedNode};

/// The reporting controller of the allocator's Events.
pub const CONTROLLER: &str = "weft-allocator";

/// `weft-agent allocate-node-cidrs [OPTIONS]`.
#[derive(Parser, Debug, Clone)]
#[command(name = "weft-agent allocate-node-cidrs", about = "Assign podCIDRs to Nodes from net-conf.json's Network")]
pub struct AllocateArgs {
    /// Flannel's net-conf.json: `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`.
    #[arg(long, default_value = "/etc/kube-flannel/net-conf.json")]
    pub net_config_path: PathBuf,
    #[arg(long)]
    pub kubeconfig_file: Option<PathBuf>,
    #[arg(long)]
    pub kube_api_url: Option<String>,
    /// Where the Lease lives (the Deployment's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    #[arg(long, default_value = "weft-node-cidr-allocator")]
    pub lease_name: String,
    /// This replica's name in the Lease (a random suffix is added, as client-go adds a UUID).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,
    /// `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub health_addr: SocketAddr,
    #[arg(long, value_enum, default_value_t = crate::config::LogFormat::Text)]
    pub log_format: crate::config::LogFormat,
}

/// `15s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 15s, 500ms)");
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Whether the command line asks for `allocate-node-cidrs`.
pub fn wanted(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| a == "allocate-node-cidrs")
}

fn random_suffix() -> String {
    use std::io::Read;
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn identity(args: &AllocateArgs) -> String {
    let base = args.identity.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "weft-allocator".into())
    });
    format!("{base}_{}", random_suffix())
}

/// Runs until SIGTERM or SIGINT, releasing the Lease if it holds it.
pub async fn run(args: AllocateArgs) -> Result<()> {
    let conf = netconf::load(&args.net_config_path)?;
    for w in &conf.warnings {
        tracing::warn!("net-conf.json: {w}");
    }
    let timings =
        Timings { lease_duration: args.lease_duration, renew_deadline: args.renew_deadline, retry_period: args.retry_period };
    timings.check().map_err(anyhow::Error::msg).context("leader election timings")?;
    let stats = Stats::default();
    stats.set_capacity(pool::Pool::new(conf.subnets).capacity());
    serve_health(args.health_addr, stats.clone()).await?;
    let client = kube_sync::client(args.kubeconfig_file.as_deref(), args.kube_api_url.as_deref()).await?;
    let me = identity(&args);
    tracing::info!(
        identity = %me,
        network = %conf.network,
        subnet_len = conf.subnets.len,
        subnet_min = %conf.subnets.min,
        subnet_max = %conf.subnets.max,
        lease = %format!("{}/{}", args.lease_namespace, args.lease_name),
        "node CIDR allocator starting"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let mut elector = Elector::new(leases, &args.lease_namespace, &args.lease_name, &me, timings);
    let recorder = Recorder::new(client.clone(), me.clone(), Health::new(Duration::from_secs(3600))).as_controller(CONTROLLER);
    let nodes: Api<WatchedNode> = Api::all(client);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut last_holder = String::new();
    loop {
        let attempt = tokio::select! {
            () = &mut shutdown => return Ok(()),
            a = elector.try_acquire_or_renew(timings.retry_period) => a,
        };
        match attempt {
            Ok(Attempt::Held(at)) => {
                last_holder.clear();
                let term = Leadership { elector: &mut elector, timings, stats: &stats };
                let ctl = |t: Term| {
                    // A write must not outlive the term's margin (lease duration − renew deadline).
                    let write_timeout = (timings.lease_duration - timings.renew_deadline).min(Duration::from_secs(5));
                    Controller::new(nodes.clone(), conf.network, conf.subnets, t, recorder.clone(), stats.clone(), write_timeout)
                };
                if term.lead(at, ctl, &mut shutdown).await {
                    return Ok(());
                }
            }
            Ok(Attempt::Other(holder)) => {
                if holder != last_holder {
                    tracing::info!(leader = %holder, "standing by");
                    last_holder = holder;
                }
            }
            Err(e) => {
                stats.api_error();
                tracing::warn!("leader election: {:#}", anyhow::Error::from(e));
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(jittered(timings.retry_period)) => {}
        }
    }
}

/// client-go's jitter: up to 1.2 x the period, so candidates do not move in step.
fn jittered(period: Duration) -> Duration {
    let r = u32::from_str_radix(&random_suffix()[..4], 16).unwrap_or(0);
    period + period.mul_f64(0.2 * f64::from(r) / 65535.0)
}

struct Leadership<'a> {
    elector: &'a mut Elector,
    timings: Timings,
    stats: &'a Stats,
}

impl Leadership<'_> {
    /// Leads from `at` (when the winning attempt began): runs the controller and
    /// renews every retry period, until a renewal misses the deadline (the
    /// controller is stopped: false) or shutdown (the Lease is released: true).
    async fn lead(
        self,
        at: std::time::Instant,
        controller: impl Fn(Term) -> Controller,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        let deadline = self.timings.renew_deadline;
        let (tx, term) = Term::channel(at + deadline);
        self.stats.set_leader(true);
        tracing::info!(identity = self.elector.identity(), "leading: allocating podCIDRs");
        let mut task = tokio::spawn(controller(term.clone()).run());
        let mut last = at;
        let mut next = Instant::now() + self.timings.retry_period;
        let outcome = loop {
            tokio::select! {
                () = &mut *shutdown => {
                    task.abort();
                    match self.elector.release(self.timings.retry_period).await {
                        Ok(()) => tracing::info!("shutting down: Lease released"),
                        Err(e) => tracing::warn!("shutting down: releasing the Lease: {:#}", anyhow::Error::from(e)),
                    }
                    break true;
                }
                ended = &mut task => {
                    match ended {
                        Ok(e) => tracing::warn!("allocation stopped: {e}; starting it again"),
                        Err(e) => tracing::error!("allocation task failed: {e}; starting it again"),
                    }
                    task = tokio::spawn(controller(term.clone()).run());
                }
                () = tokio::time::sleep_until(next) => {
                    next = Instant::now() + self.timings.retry_period;
                    let left = (last + deadline).saturating_duration_since(std::time::Instant::now());
                    match self.elector.try_acquire_or_renew(left.min(self.timings.retry_period)).await {
                        Ok(Attempt::Held(t)) => {
                            last = t;
                            let _ = tx.send(t + deadline);
                        }
                        Ok(Attempt::Other(holder)) => {
                            tracing::warn!(leader = %holder, "lost the Lease: stopped writing");
                            break false;
                        }
                        Err(e) => {
                            self.stats.api_error();
                            tracing::warn!("renewing the Lease: {:#}", anyhow::Error::from(e));
                        }
                    }
                    if !term.valid() {
                        tracing::warn!(deadline = ?deadline, "the Lease was not renewed within the renew deadline: stopped writing");
                        break false;
                    }
                }
            }
        };
        task.abort();
        self.stats.set_leader(false);
        outcome
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn serve_health(addr: SocketAddr, stats: Stats) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the health port {addr}"))?;
    tracing::info!(%addr, "health and metrics endpoint listening");
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(stats));
    tokio::spawn(crate::http::bounded::serve(listener, app, crate::http::bounded::Limits::default()));
    Ok(())
}

async fn readyz(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    match stats.not_ready() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], stats.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err() && parse_duration("3h").is_err());
    }

    #[test]
    fn defaults_are_client_gos() {
        let a = AllocateArgs::parse_from(["weft-agent allocate-node-cidrs"]);
        assert_eq!(
            Timings { lease_duration: a.lease_duration, renew_deadline: a.renew_deadline, retry_period: a.retry_period },
            Timings::DEFAULT
        );
        assert!(wanted(&["weft-agent".into(), "allocate-node-cidrs".into()]));
    }
}
