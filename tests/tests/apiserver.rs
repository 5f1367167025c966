//! The test API server against real clients: kube's `Client` and runtime
//! `watcher`, and kubectl. Each test serves from its own network namespace
//! (nothing is bound in the root namespace) and bounds every wait.

use std::{
    future::Future,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Event as CoreEvent, Node, ObjectReference, Pod},
        events::v1::Event as EventsEvent,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event as Recorded, EventType, Recorder, Reporter},
        watcher,
    },
};
use serde_json::{Value, json};
use weft_e2e::{
    apiserver::ApiServer,
    netns::{self, Netns, PREFIX, run_id},
};

const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A server in its own namespace, a kubeconfig for it, and a scratch directory.
struct Fixture {
    api: ApiServer,
    dir: PathBuf,
    kubeconfig: PathBuf,
    // Last: the namespace goes after the server has stopped serving in it.
    ns: Netns,
}

fn listen_in(ns: &Netns, addr: &str) -> Result<TcpListener> {
    let addr = addr.to_string();
    ns.spawn(move || Ok(TcpListener::bind(addr)?)).join().map_err(|_| anyhow!("bind thread panicked"))?
}

impl Fixture {
    fn new() -> Result<Fixture> {
        weft_e2e::prereq::require();
        netns::sweep_stale();
        let id = run_id();
        let ns = Netns::new(format!("{PREFIX}api-{id}"))?;
        let api = ApiServer::serve(listen_in(&ns, "127.0.0.1:0")?)?;
        let dir = std::env::temp_dir().join(format!("{PREFIX}apiserver-{id}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)?;
        Ok(Fixture { api, dir, kubeconfig, ns })
    }

    /// The server comes back on the same address (clients keep their kubeconfig).
    fn resume(&self) -> Result<()> {
        Ok(self.api.resume(listen_in(&self.ns, &self.api.addr().to_string())?)?)
    }

    /// Runs kubectl in the namespace, with its own discovery cache; fails after
    /// [`KUBECTL_TIMEOUT`].
    fn kubectl(&self, args: &[&str]) -> Result<Output> {
        let (kubeconfig, cache) = (self.kubeconfig.display().to_string(), self.dir.join("cache").display().to_string());
        let mut full = vec!["kubectl", "--kubeconfig", &kubeconfig, "--cache-dir", &cache, "--request-timeout=20s"];
        full.extend_from_slice(args);
        let mut child = self
            .ns
            .exec_args(&full)
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning kubectl")?;
        let deadline = Instant::now() + KUBECTL_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("kubectl {args:?} did not finish in {KUBECTL_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(child.wait_with_output()?)
    }

    /// kubectl that must succeed; returns its stdout.
    fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!("kubectl {args:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs `f` with a kube client on a thread inside the namespace (its own
    /// current-thread runtime), bounded by [`CLIENT_TIMEOUT`].
    fn kube<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        let kubeconfig = self.kubeconfig.clone();
        self.ns
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let client = client(&kubeconfig).await?;
                    tokio::time::timeout(CLIENT_TIMEOUT, f(client)).await.context("kube client timed out")?
                })
            })
            .join()
            .map_err(|_| anyhow!("client thread panicked"))?
    }

    /// Raw HTTP/1.1 exchange on a fresh connection; returns the whole response.
    fn raw(&self, request: &'static [u8]) -> Result<String> {
        let addr: SocketAddr = self.api.addr();
        self.ns
            .spawn(move || {
                let mut s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(EVENT_TIMEOUT))?;
                s.write_all(request)?;
                let mut out = Vec::new();
                s.read_to_end(&mut out)?;
                Ok(String::from_utf8_lossy(&out).into_owned())
            })
            .join()
            .map_err(|_| anyhow!("raw client thread panicked"))?
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn client(kubeconfig: &std::path::Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A Node as a kubelet registers it (Ready, addresses, nodeInfo).
fn node(name: &str, ip: &str, pod_cidr: Option<&str>) -> Value {
    let now = "2026-01-01T00:00:00Z";
    let mut n = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" } },
        "spec": {},
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [{ "type": "InternalIP", "address": ip }, { "type": "Hostname", "address": name }],
            "nodeInfo": {
                "kubeletVersion": "v1.34.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.18.0",
                "containerRuntimeVersion": "containerd://2.1.0", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    });
    if let Some(c) = pod_cidr {
        n["spec"] = json!({ "podCIDR": c, "podCIDRs": [c] });
    }
    n
}

fn typed(v: Value) -> Node {
    serde_json::from_value(v).expect("a valid Node")
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> Result<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => Ok(*s),
        other => bail!("expected an API error, got {other:?}"),
    }
}

fn names(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.metadata.name.clone().unwrap_or_default()).collect()
}

fn condition_types(n: &Node) -> Vec<(String, String)> {
    let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref()).cloned().unwrap_or_default();
    conds.into_iter().map(|c| (c.type_, c.status)).collect()
}

const FLANNEL: &str = "flannel.alpha.coreos.com";

/// kube's typed client: create, get, list with selectors, the Flannel-style
/// nodes/status patches, the podCIDR rule, optimistic concurrency and delete.
#[test]
fn kube_client_crud_and_status_patches() -> Result<()> {
    let fx = Fixture::new()?;
    fx.kube(|client| async move {
        let nodes: Api<Node> = Api::all(client);
        let pp = PostParams::default();
        let a = nodes.create(&pp, &typed(node("a", "10.0.0.1", Some("10.244.1.0/24")))).await?;
        let rv_a: u64 = a.metadata.resource_version.as_deref().unwrap_or_default().parse()?;
        assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some(), "server-set metadata: {:?}", a.metadata);
        assert_eq!(condition_types(&a), [("Ready".into(), "True".into())], "a kubelet's status is kept on create");
        let dup = api_error(nodes.create(&pp, &typed(node("a", "10.0.0.1", None))).await)?;
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        let mut b = node("b", "10.0.0.2", None);
        b["metadata"]["labels"]["role"] = json!("edge");
        nodes.create(&pp, &typed(b)).await?;

        assert_eq!(nodes.get("a").await?.metadata.uid, a.metadata.uid);
        let all = nodes.list(&ListParams::default()).await?;
        assert_eq!(names(&all.items), ["a", "b"]);
        assert!(all.metadata.resource_version.as_deref().unwrap_or_default().parse::<u64>()? > rv_a);
        assert_eq!(names(&nodes.list(&ListParams::default().labels("role=edge")).await?.items), ["b"]);
        assert_eq!(names(&nodes.list(&ListParams::default().labels("role!=edge")).await?.items), ["a"]);
        assert_eq!(names(&nodes.list(&ListParams::default().fields("metadata.name=a")).await?.items), ["a"]);
        let bad = api_error(nodes.list(&ListParams::default().fields("status.phase=Running")).await)?;
        assert_eq!((bad.code, bad.message.as_str()), (400, "field label not supported: status.phase"));

        // Flannel's registration: annotations and NetworkUnavailable through nodes/status.
        let advert = json!({
            "metadata": { "annotations": {
                format!("{FLANNEL}/backend-data"): r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}"#,
                format!("{FLANNEL}/backend-type"): "vxlan",
                format!("{FLANNEL}/kube-subnet-manager"): "true",
                format!("{FLANNEL}/public-ip"): "10.0.0.1",
            }},
            "spec": { "unschedulable": true },
            "status": { "conditions": [{
                "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
                "message": "Flannel is running on this node",
                "lastTransitionTime": "2026-01-01T00:00:01Z", "lastHeartbeatTime": "2026-01-01T00:00:01Z",
            }]},
        });
        let patched = nodes.patch_status("a", &PatchParams::default(), &Patch::Strategic(&advert)).await?;
        assert_eq!(
            condition_types(&patched),
            [("Ready".into(), "True".into()), ("NetworkUnavailable".into(), "False".into())],
            "conditions merge by type"
        );
        let ann = patched.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann[&format!("{FLANNEL}/backend-data")], r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}"#);
        assert_eq!(patched.spec.as_ref().and_then(|s| s.unschedulable), None, "nodes/status never changes spec");
        assert!(patched.metadata.resource_version > a.metadata.resource_version);

        // A merge patch replaces lists whole (RFC 7386); a null deletes.
        let merge = json!({
            "metadata": { "annotations": { format!("{FLANNEL}/public-ip"): "10.0.0.9", format!("{FLANNEL}/kube-subnet-manager"): null } },
            "status": { "conditions": [{ "type": "Ready", "status": "False", "reason": "KubeletNotReady" }] },
        });
        let merged = nodes.patch_status("a", &PatchParams::default(), &Patch::Merge(&merge)).await?;
        assert_eq!(condition_types(&merged), [("Ready".into(), "False".into())]);
        let ann = merged.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.get(&format!("{FLANNEL}/public-ip")).map(String::as_str), Some("10.0.0.9"));
        assert!(!ann.contains_key(&format!("{FLANNEL}/kube-subnet-manager")));

        // The main resource changes spec, not status.
        let main = json!({ "spec": { "unschedulable": true }, "status": { "phase": "Terminated" } });
        let cordoned = nodes.patch("a", &PatchParams::default(), &Patch::Merge(&main)).await?;
        assert_eq!(cordoned.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
        assert_eq!(cordoned.status.as_ref().and_then(|s| s.phase.clone()), None);

        // podCIDR: set once (from empty), then immutable.
        let change = json!({ "spec": { "podCIDR": "10.244.9.0/24" } });
        let rejected = api_error(nodes.patch("a", &PatchParams::default(), &Patch::Strategic(&change)).await)?;
        assert_eq!((rejected.code, rejected.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            rejected.message,
            r#"Node "a" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#
        );
        let garbage = json!({ "spec": { "podCIDR": "10.244.2.0/33" } });
        let rejected = api_error(nodes.patch("b", &PatchParams::default(), &Patch::Merge(&garbage)).await)?;
        assert_eq!(rejected.code, 422);
        assert!(rejected.message.contains("spec.podCIDRs[0]: Invalid value: \"10.244.2.0/33\""), "{}", rejected.message);
        let assign = json!({ "spec": { "podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"] } });
        let b = nodes.patch("b", &PatchParams::default(), &Patch::Strategic(&assign)).await?;
        assert_eq!(b.spec.as_ref().and_then(|s| s.pod_cidrs.clone()), Some(vec!["10.244.2.0/24".to_string()]));

        // Optimistic concurrency: a replace from a stale read conflicts.
        let mut stale = a.clone();
        stale.metadata.labels.get_or_insert_default().insert("stale".into(), "yes".into());
        let conflict = api_error(nodes.replace("a", &pp, &stale).await)?;
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
        let mut fresh = nodes.get("a").await?;
        fresh.metadata.labels.get_or_insert_default().insert("fresh".into(), "yes".into());
        let replaced = nodes.replace("a", &pp, &fresh).await?;
        assert_eq!(replaced.metadata.labels.unwrap_or_default().get("fresh").map(String::as_str), Some("yes"));

        // Deleted at once: the answer is a Status naming it; then it is gone.
        let deleted = nodes.delete("b", &DeleteParams::default()).await?;
        assert!(deleted.right().is_some_and(|s| s.details.is_some_and(|d| d.name == "b")));
        let gone = api_error(nodes.get("b").await)?;
        assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
        assert_eq!(api_error(nodes.delete("b", &DeleteParams::default()).await)?.code, 404);
        Ok(())
    })
}

/// Both discovery paths: legacy (`/api`, `/api/v1`, `/apis`) and aggregated.
#[test]
fn kube_discovery_finds_nodes() -> Result<()> {
    let fx = Fixture::new()?;
    let found = fx.kube(|client| async move {
        let mut out = Vec::new();
        for aggregated in [false, true] {
            let d = kube::discovery::Discovery::new(client.clone());
            let d = if aggregated { d.run_aggregated().await? } else { d.run().await? };
            let (ar, caps) = d.resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Node")).context("Node not discovered")?;
            out.push((
                ar.plural,
                caps.scope == kube::discovery::Scope::Cluster,
                caps.supports_operation(kube::discovery::verbs::WATCH),
            ));
        }
        Ok(out)
    })?;
    assert_eq!(found, [("nodes".to_string(), true, true), ("nodes".to_string(), true, true)]);
    let requests = fx.api.requests();
    assert!(requests.iter().any(|r| r == "GET /api/v1"), "legacy discovery asked for the resource list: {requests:?}");
    Ok(())
}

/// What kube's runtime watcher yields, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String, u64),
    Delete(String),
    Error(String),
}

impl From<std::result::Result<watcher::Event<Node>, watcher::Error>> for Seen {
    fn from(e: std::result::Result<watcher::Event<Node>, watcher::Error>) -> Seen {
        let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
        match e {
            Ok(watcher::Event::Init) => Seen::Init,
            Ok(watcher::Event::InitApply(n)) => Seen::InitApply(name(&n)),
            Ok(watcher::Event::InitDone) => Seen::InitDone,
            Ok(watcher::Event::Apply(n)) => {
                let rv = n.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
                Seen::Apply(name(&n), rv)
            }
            Ok(watcher::Event::Delete(n)) => Seen::Delete(name(&n)),
            Err(e) => Seen::Error(e.to_string()),
        }
    }
}

/// kube's `watcher` (default config: bookmarks on, list-then-watch) on a thread in
/// the namespace, forwarding what it yields.
struct Watcher {
    seen: mpsc::Receiver<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Watcher {
    fn start(fx: &Fixture) -> Watcher {
        let (tx, seen) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig = fx.kubeconfig.clone();
        let thread = fx.ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let nodes: Api<Node> = Api::all(client(&kubeconfig).await?);
                let forward = watcher(nodes, watcher::Config::default()).default_backoff().for_each(|e| {
                    let _ = tx.send(Seen::from(e));
                    async {}
                });
                tokio::select! {
                    () = forward => {}
                    _ = stopped => {}
                }
                Ok(())
            })
        });
        Watcher { seen, stop: Some(stop), thread: Some(thread) }
    }

    /// Events up to and including the first that `last` accepts (errors included).
    fn until(&self, what: &str, last: impl Fn(&Seen) -> bool) -> Result<Vec<Seen>> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(e) => {
                    let done = last(&e);
                    got.push(e);
                    if done {
                        return Ok(got);
                    }
                }
                Err(_) => bail!("no {what} within {EVENT_TIMEOUT:?}; saw {got:?}"),
            }
        }
    }

    /// The next `n` events, which must not be errors.
    fn next(&self, n: usize) -> Result<Vec<Seen>> {
        let mut got = Vec::new();
        while got.len() < n {
            let e = self.seen.recv_timeout(EVENT_TIMEOUT).map_err(|_| anyhow!("watcher went quiet; saw {got:?}"))?;
            if let Seen::Error(err) = &e {
                bail!("watcher error {err}; saw {got:?}");
            }
            got.push(e);
        }
        Ok(got)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn apply_of(seen: &[Seen]) -> Vec<(&str, u64)> {
    seen.iter().filter_map(|s| if let Seen::Apply(n, rv) = s { Some((n.as_str(), *rv)) } else { None }).collect()
}

/// The watcher lists what exists, then sees each change in order: an add, an
/// update through HTTP (by another client) and through the test API, a delete.
#[test]
fn kube_watcher_sees_changes_in_order() -> Result<()> {
    let fx = Fixture::new()?;
    fx.api.create_node(node("a", "10.0.0.1", None))?;
    let w = Watcher::start(&fx);
    assert_eq!(w.next(3)?, [Seen::Init, Seen::InitApply("a".into()), Seen::InitDone]);

    fx.api.create_node(node("b", "10.0.0.2", None))?;
    fx.kube(|client| async move {
        let patch = json!({ "metadata": { "labels": { "via": "http" } } });
        Api::<Node>::all(client).patch("b", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    })?;
    fx.api.update_node("b", |n| n["status"]["phase"] = json!("Running"))?;
    fx.api.delete_node("b")?;
    let seen = w.next(4)?;
    let applies = apply_of(&seen);
    assert_eq!(applies.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["b", "b", "b"], "{seen:?}");
    assert!(applies.windows(2).all(|p| p[0].1 < p[1].1), "resourceVersions increase: {seen:?}");
    assert_eq!(seen[3], Seen::Delete("b".into()));
    Ok(())
}

/// Raw watch semantics through kube's `Api::watch`: bookmarks, selectors that
/// turn leaving the selection into DELETED, resuming from a resourceVersion, and
/// the clean end at `timeoutSeconds`.
#[test]
fn kube_raw_watch_bookmarks_selectors_and_timeout() -> Result<()> {
    let fx = Fixture::new()?;
    let mut edge = node("edge", "10.0.0.1", None);
    edge["metadata"]["labels"]["role"] = json!("edge");
    let created = fx.api.create_node(edge)?;
    let rv_created: u64 = created["metadata"]["resourceVersion"].as_str().unwrap_or_default().parse()?;
    std::thread::spawn({
        // Changes while the watch below runs: leave the selection, then come back.
        let deadline = Instant::now() + Duration::from_millis(1500);
        move || std::thread::sleep(deadline.saturating_duration_since(Instant::now()))
    })
    .join()
    .map_err(|_| anyhow!("sleeper panicked"))?;
    let (events, elapsed) = fx.kube(move |client| async move {
        let nodes: Api<Node> = Api::all(client);
        let wp = WatchParams::default().labels("role=edge").timeout(3);
        let start = Instant::now();
        let mut stream = Box::pin(nodes.watch(&wp, &rv_created.saturating_sub(1).to_string()).await?);
        let mut seen = Vec::new();
        while let Some(e) = stream.next().await {
            let e = e?;
            let kind = match &e {
                WatchEvent::Added(n) => {
                    format!("ADDED {}", n.metadata.name.clone().unwrap_or_default())
                }
                WatchEvent::Modified(n) => {
                    format!("MODIFIED {}", n.metadata.name.clone().unwrap_or_default())
                }
                WatchEvent::Deleted(n) => {
                    format!("DELETED {}", n.metadata.name.clone().unwrap_or_default())
                }
                WatchEvent::Bookmark(_) => "BOOKMARK".to_string(),
                WatchEvent::Error(s) => format!("ERROR {}", s.code),
            };
            if seen.is_empty() {
                // After the replayed ADDED, move the node out of and back into the selection.
                let out = json!({ "metadata": { "labels": { "role": "core" } } });
                nodes.patch("edge", &PatchParams::default(), &Patch::Merge(&out)).await?;
                let back = json!({ "metadata": { "labels": { "role": "edge" } } });
                nodes.patch("edge", &PatchParams::default(), &Patch::Merge(&back)).await?;
            }
            seen.push(kind);
        }
        Ok((seen, start.elapsed()))
    })?;
    assert_eq!(events[..3], ["ADDED edge", "DELETED edge", "ADDED edge"], "{events:?}");
    assert!(events[3..].iter().all(|e| e == "BOOKMARK") && events.len() >= 4, "bookmarks while idle: {events:?}");
    assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(10), "ended at timeoutSeconds: {elapsed:?}");

    // The bookmark-enabled watch kube's watcher runs (allowWatchBookmarks) is in the log.
    fx.api.compact();
    let expired = fx.kube(move |client| async move {
        let nodes: Api<Node> = Api::all(client);
        let mut stream = Box::pin(nodes.watch(&WatchParams::default().timeout(5), &rv_created.to_string()).await?);
        match stream.next().await {
            Some(Ok(WatchEvent::Error(s))) => Ok((s.code, s.reason, stream.next().await.is_none())),
            other => bail!("expected an ERROR event, got {other:?}"),
        }
    })?;
    assert_eq!(expired, (410, "Expired".to_string(), true), "one 410 Expired event, then the end");
    Ok(())
}

/// An outage during which history is lost: after `compact()` and a reconnect the
/// watcher's resumed watch is Expired (410), so it relists and converges on the
/// new state. Bookmarks before the outage do not disturb it.
#[test]
fn kube_watcher_relists_after_compaction() -> Result<()> {
    let fx = Fixture::new()?;
    let w = Watcher::start(&fx);
    assert_eq!(w.next(2)?, [Seen::Init, Seen::InitDone]);
    fx.api.create_node(node("a", "10.0.0.1", None))?;
    assert!(matches!(&w.next(1)?[..], [Seen::Apply(n, _)] if n == "a"));
    std::thread::sleep(Duration::from_millis(2500)); // bookmarks flow meanwhile
    assert!(w.seen.try_recv().is_err(), "bookmarks are not events");

    let stopping = Instant::now();
    fx.api.stop();
    assert!(stopping.elapsed() < Duration::from_secs(3), "stop with an open watch took {:?}", stopping.elapsed());
    fx.api.create_node(node("b", "10.0.0.2", None))?;
    fx.api.delete_node("a")?;
    fx.api.compact();
    let before = fx.api.requests().len();
    fx.resume()?;

    let relist = w.until("relist", |e| *e == Seen::InitDone)?;
    let init = relist.iter().position(|e| *e == Seen::Init).context(format!("no Init in {relist:?}"))?;
    assert_eq!(relist[init..], [Seen::Init, Seen::InitApply("b".into()), Seen::InitDone], "{relist:?}");
    let after: Vec<String> = fx.api.requests()[before..].to_vec();
    let watch = after.iter().position(|r| r.contains("watch=true")).context(format!("no resumed watch in {after:?}"))?;
    assert!(
        after[watch + 1..].iter().any(|r| r.starts_with("GET /api/v1/nodes?") && !r.contains("watch=")),
        "relisted: {after:?}"
    );

    // Converged: live again.
    fx.api.update_node("b", |n| n["metadata"]["labels"]["after"] = json!("relist"))?;
    assert!(matches!(&w.next(1)?[..], [Seen::Apply(n, _)] if n == "b"));
    Ok(())
}

fn node_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    role: edge\nspec:\n  podCIDR: 10.244.7.0/24\n{extra_spec}"
    )
}

/// `kubectl get nodes` and `-o wide` print the server's Table columns.
#[test]
fn kubectl_get_nodes_wide() -> Result<()> {
    let fx = Fixture::new()?;
    fx.api.create_node(node("n1", "10.0.0.1", Some("10.244.1.0/24")))?;
    let mut cp = node("n2", "10.0.0.2", None);
    cp["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
    cp["status"]["conditions"][0]["status"] = json!("False");
    cp["status"]["addresses"] =
        json!([{ "type": "InternalIP", "address": "10.0.0.2" }, { "type": "ExternalIP", "address": "203.0.113.2" }]);
    fx.api.create_node(cp)?;

    let wide = fx.kubectl_ok(&["get", "nodes", "-o", "wide"])?;
    let rows: Vec<Vec<&str>> = wide.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ],
        "{wide}"
    );
    let n1 = &rows[1];
    assert_eq!((n1[0], n1[1], n1[2], n1[4], n1[5], n1[6]), ("n1", "Ready", "<none>", "v1.34.0", "10.0.0.1", "<none>"), "{wide}");
    assert!(n1[3].ends_with('s'), "age in seconds: {wide}");
    assert_eq!(n1[7..], ["Debian", "GNU/Linux", "12", "(bookworm)", "6.18.0", "containerd://2.1.0"], "{wide}");
    let n2 = &rows[2];
    assert_eq!((n2[0], n2[1], n2[2], n2[5], n2[6]), ("n2", "NotReady", "control-plane", "10.0.0.2", "203.0.113.2"), "{wide}");

    let narrow = fx.kubectl_ok(&["get", "nodes"])?;
    assert_eq!(
        narrow.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"])
    );
    let selected = fx.kubectl_ok(&["get", "nodes", "-l", "node-role.kubernetes.io/control-plane", "-o", "name"])?;
    assert_eq!(selected.trim(), "node/n2");
    Ok(())
}

/// The kubectl commands an operator uses on nodes, each checked against the stored object.
#[test]
fn kubectl_create_annotate_patch_delete() -> Result<()> {
    let fx = Fixture::new()?;
    let file = fx.dir.join("node.yaml");
    std::fs::write(&file, node_yaml("k1", ""))?;
    let path = file.display().to_string();
    assert_eq!(fx.kubectl_ok(&["create", "-f", &path])?.trim(), "node/k1 created");
    let stored = fx.api.get_node("k1").context("created")?;
    assert_eq!(stored["spec"]["podCIDRs"], json!(["10.244.7.0/24"]));
    assert!(stored["metadata"]["uid"].is_string());

    fx.kubectl_ok(&["annotate", "node", "k1", "weft.example/owner=tests"])?;
    fx.kubectl_ok(&["patch", "node", "k1", "-p", r#"{"metadata":{"labels":{"a":"b"}}}"#])?;
    fx.kubectl_ok(&["patch", "node", "k1", "--type", "merge", "-p", r#"{"metadata":{"labels":{"role":null,"c":"d"}}}"#])?;
    fx.kubectl_ok(&[
        "patch",
        "node",
        "k1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/unschedulable","value":true}]"#,
    ])?;
    fx.kubectl_ok(&[
        "patch",
        "node",
        "k1",
        "--subresource=status",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])?;
    let n = fx.api.get_node("k1").context("still there")?;
    assert_eq!(n["metadata"]["annotations"]["weft.example/owner"], "tests");
    assert_eq!(n["metadata"]["labels"], json!({ "a": "b", "c": "d" }));
    assert_eq!(n["spec"]["unschedulable"], true);
    assert_eq!(n["status"]["conditions"][0]["type"], "Ready");

    let printed: Value = serde_json::from_str(&fx.kubectl_ok(&["get", "node", "k1", "-o", "json"])?)?;
    assert_eq!(printed, n, "get -o json prints the stored object");
    let status = fx.kubectl_ok(&["get", "node", "k1"])?;
    assert!(status.contains("Ready,SchedulingDisabled"), "{status}");

    // Unknown fields: kubectl asks for strict validation, and the server enforces it.
    std::fs::write(&file, node_yaml("k2", "  bogus: 1\n"))?;
    let strict = fx.kubectl(&["create", "-f", &path])?;
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{strict:?}"
    );

    assert_eq!(fx.kubectl_ok(&["delete", "node", "k1"])?.trim(), r#"node "k1" deleted"#);
    assert!(fx.api.get_node("k1").is_none());
    let missing = fx.kubectl(&["get", "node", "k1"])?;
    assert!(!missing.status.success());
    assert_eq!(String::from_utf8_lossy(&missing.stderr).trim(), r#"Error from server (NotFound): nodes "k1" not found"#);
    Ok(())
}

/// A podCIDR, once set, cannot change: kubectl reports the server's 422.
#[test]
fn kubectl_patch_pod_cidr_is_rejected() -> Result<()> {
    let fx = Fixture::new()?;
    fx.api.create_node(node("n1", "10.0.0.1", Some("10.244.1.0/24")))?;
    let before = fx.api.get_node("n1").context("created")?;
    for patch in [
        vec!["-p", r#"{"spec":{"podCIDR":"10.244.9.0/24"}}"#],
        vec!["--type", "merge", "-p", r#"{"spec":{"podCIDR":"10.244.9.0/24","podCIDRs":["10.244.9.0/24"]}}"#],
    ] {
        let mut args = vec!["patch", "node", "n1"];
        args.extend(patch);
        let out = fx.kubectl(&args)?;
        assert!(!out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            r#"The Node "n1" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#
        );
    }
    // With both fields set and different, `podCIDR` wins (the v1 conversion's rule):
    // changing only `podCIDRs` is no change at all.
    let only_list =
        fx.kubectl_ok(&["patch", "node", "n1", "--type", "merge", "-p", r#"{"spec":{"podCIDRs":["10.244.9.0/24"]}}"#])?;
    assert_eq!(only_list.trim(), "node/n1 patched (no change)");
    assert_eq!(fx.api.get_node("n1"), Some(before), "unchanged, same resourceVersion");
    Ok(())
}

/// Bad requests get metav1.Status errors (or a bare 400 for non-HTTP) and the
/// server keeps serving.
#[test]
fn malformed_requests_get_errors_and_the_server_survives() -> Result<()> {
    let fx = Fixture::new()?;
    let status_line = |resp: &str| resp.lines().next().unwrap_or_default().to_string();
    let cases: [(&'static [u8], &str, &str); 7] = [
        (b"NONSENSE\r\n\r\n", "HTTP/1.1 400 Bad Request", "BadRequest"),
        (b"GET /api/v1/configmaps HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 404 Not Found", "NotFound"),
        (b"PUT /api/v1/nodes HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", "HTTP/1.1 405 Method Not Allowed", "MethodNotAllowed"),
        (
            b"PATCH /api/v1/nodes/x HTTP/1.1\r\nConnection: close\r\nContent-Type: application/yaml\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 415 Unsupported Media Type",
            "UnsupportedMediaType",
        ),
        (b"POST /api/v1/nodes HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\n{nope", "HTTP/1.1 400 Bad Request", "BadRequest"),
        (
            b"POST /api/v1/nodes HTTP/1.1\r\nConnection: close\r\nContent-Length: 31\r\n\r\n{\"metadata\":{\"name\":\"Not_DNS\"}}",
            "HTTP/1.1 422 Unprocessable Entity",
            "Invalid",
        ),
        (b"GET /api/v1/nodes?watch=1&resourceVersionMatch=Exact HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 422 Unprocessable Entity", "Invalid"),
    ];
    for (request, want_status, want_reason) in cases {
        let resp = fx.raw(request).with_context(|| format!("no complete answer to {:?}", String::from_utf8_lossy(request)))?;
        assert_eq!(status_line(&resp), want_status, "{resp}");
        let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap_or_default())?;
        assert_eq!((body["kind"].as_str(), body["reason"].as_str()), (Some("Status"), Some(want_reason)), "{resp}");
    }
    let version = fx.raw(b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")?;
    assert_eq!(status_line(&version), "HTTP/1.1 200 OK");
    assert!(version.contains("\"gitVersion\":\"v1.34.0\""));
    assert!(fx.api.requests().contains(&"GET /api/v1/configmaps".to_string()), "{:?}", fx.api.requests());
    Ok(())
}

/// A MicroTime `secs_ago` seconds back, as Go writes one.
fn micro_time(secs_ago: i64) -> String {
    let t = Timestamp::now().checked_sub(SignedDuration::from_secs(secs_ago)).expect("a time in range");
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn rv_of(obj: &Value) -> Result<u64> {
    Ok(obj["metadata"]["resourceVersion"].as_str().context("a resourceVersion")?.parse()?)
}

/// kube's event `Recorder` publishing a Warning about a Node twice: a POST to
/// events.k8s.io, then a merge PATCH adding the series. The one stored Event
/// reads back through both groups with the typed client, and through the test
/// handle in the core/v1 shape; its resourceVersion follows the Node's on the
/// one revision.
#[test]
fn kube_recorder_events_read_back_through_both_groups() -> Result<()> {
    let fx = Fixture::new()?;
    let created = fx.api.create_node(node("n1", "10.0.0.1", None))?;
    let node_uid = created["metadata"]["uid"].as_str().context("a uid")?.to_string();
    let (core, v1) = fx.kube(|client| async move {
        let n1 = Api::<Node>::all(client.clone()).get("n1").await?;
        let reporter = Reporter { controller: "weft-agent".into(), instance: Some("weft-agent-n1".into()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let event = Recorded {
            type_: EventType::Warning,
            reason: "RouteFailed".into(),
            note: Some("no route to 10.0.0.2".into()),
            action: "Programming".into(),
            secondary: None,
        };
        recorder.publish(&event, &n1.object_ref(&())).await?;
        recorder.publish(&event, &n1.object_ref(&())).await?;
        let core = Api::<CoreEvent>::namespaced(client.clone(), "default").list(&ListParams::default()).await?.items;
        let v1 = Api::<EventsEvent>::all(client).list(&ListParams::default()).await?.items;
        Ok((core, v1))
    })?;
    let requests = fx.api.requests();
    let posted = requests.iter().any(|r| r.starts_with("POST /apis/events.k8s.io/v1/namespaces/default/events"));
    let patched = requests.iter().any(|r| r.starts_with("PATCH /apis/events.k8s.io/v1/namespaces/default/events/n1."));
    assert!(posted && patched, "a create, then a patch for the repeat: {requests:?}");

    let [c] = &core[..] else { bail!("one core/v1 event expected, got {core:?}") };
    let involved = &c.involved_object;
    assert_eq!(
        (involved.kind.as_deref(), involved.name.as_deref(), involved.uid.as_deref(), involved.namespace.as_deref()),
        (Some("Node"), Some("n1"), Some(node_uid.as_str()), None)
    );
    assert_eq!((c.reason.as_deref(), c.type_.as_deref()), (Some("RouteFailed"), Some("Warning")));
    assert_eq!(c.message.as_deref(), Some("no route to 10.0.0.2"), "note is message in core/v1");
    assert_eq!(
        (c.reporting_component.as_deref(), c.reporting_instance.as_deref(), c.action.as_deref()),
        (Some("weft-agent"), Some("weft-agent-n1"), Some("Programming"))
    );
    assert_eq!(c.series.as_ref().and_then(|s| s.count), Some(2), "the repeat became a series");
    assert!(c.event_time.is_some() && c.first_timestamp.is_none() && c.count.is_none(), "{c:?}");
    assert_eq!(c.metadata.namespace.as_deref(), Some("default"), "cluster-scoped objects' events go to default");

    let [e] = &v1[..] else { bail!("one events.k8s.io event expected, got {v1:?}") };
    assert_eq!(
        (e.metadata.name.as_ref(), e.metadata.resource_version.as_ref()),
        (c.metadata.name.as_ref(), c.metadata.resource_version.as_ref())
    );
    assert_eq!(e.regarding.as_ref(), Some(involved));
    assert_eq!((e.note.as_deref(), e.reporting_controller.as_deref()), (Some("no route to 10.0.0.2"), Some("weft-agent")));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(e.event_time, c.event_time);
    assert!(e.deprecated_count.is_none() && e.deprecated_first_timestamp.is_none(), "{e:?}");

    let stored = fx.api.events();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0]["message"].as_str(), stored[0]["series"]["count"].as_i64()), (Some("no route to 10.0.0.2"), Some(2)));
    assert!(rv_of(&stored[0])? > rv_of(&created)?, "one revision across kinds");
    Ok(())
}

/// An event as kube's Recorder leaves a repeated one: events.k8s.io, with a series.
fn recorded_event(namespace: &str, name: &str, node: (&str, &str), reason: &str, ty: &str, note: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": { "name": name, "namespace": namespace },
        "eventTime": micro_time(40 * 60), "series": { "count": 3, "lastObservedTime": micro_time(15 * 60) },
        "action": "Programming", "reason": reason, "type": ty, "note": note,
        "regarding": { "apiVersion": "v1", "kind": "Node", "name": node.0, "uid": node.1 },
        "reportingController": "weft-agent", "reportingInstance": format!("weft-agent-{}", node.0),
    })
}

/// An event as a kubelet records one: core/v1, old-style, with the node's name as its uid.
fn kubelet_event(name: &str, node: &str, reason: &str, ty: &str, message: &str) -> Value {
    let seconds = |t: String| t.split('.').next().unwrap_or_default().to_string() + "Z";
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": name, "namespace": "default" },
        "involvedObject": { "kind": "Node", "name": node, "uid": node },
        "reason": reason, "type": ty, "message": message,
        "source": { "component": "kubelet", "host": node },
        "firstTimestamp": seconds(micro_time(3 * 3600)), "lastTimestamp": seconds(micro_time(20 * 60)), "count": 2,
    })
}

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// What an operator runs to see events: `get events` across and within
/// namespaces, through both groups, with field selectors, and `describe node`
/// (which finds events by the node's uid and, as kubelets record them, by its
/// name). None of it warns.
#[test]
fn kubectl_shows_node_events() -> Result<()> {
    let fx = Fixture::new()?;
    let n1 = fx.api.create_node(node("n1", "10.0.0.1", Some("10.244.1.0/24")))?;
    let uid = n1["metadata"]["uid"].as_str().context("a uid")?.to_string();
    let n2 = fx.api.create_node(node("n2", "10.0.0.2", None))?;
    fx.api.create_event(recorded_event("default", "n1.route", ("n1", &uid), "RouteFailed", "Warning", "no route to 10.0.0.2"))?;
    fx.api.create_event(kubelet_event("n1.rebooted", "n1", "Rebooted", "Warning", "Node n1 has been rebooted"))?;
    fx.api.create_event(kubelet_event("n1.starting", "n1", "Starting", "Normal", "Starting kubelet."))?;
    let n2_uid = n2["metadata"]["uid"].as_str().unwrap_or_default();
    fx.api.create_event(recorded_event("kube-system", "n2.ready", ("n2", n2_uid), "NodeReady", "Normal", "Node n2 is ready"))?;

    let run = |args: &[&str]| -> Result<String> {
        let out = fx.kubectl(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.is_empty() {
            bail!("kubectl {args:?}: {stderr}{}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let all = run(&["get", "events", "-A"])?;
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(columns(lines[0]), ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{all}");
    assert_eq!(lines.len(), 5, "{all}");
    // Ages are whole minutes or hours away, so a slow run cannot change them.
    assert_eq!(columns(lines[1]), ["default", "20m", "Warning", "Rebooted", "node/n1", "Node", "n1", "has", "been", "rebooted"]);
    assert_eq!(columns(lines[2]), ["default", "15m", "Warning", "RouteFailed", "node/n1", "no", "route", "to", "10.0.0.2"]);
    assert_eq!(columns(lines[4])[..5], ["kube-system", "15m", "Normal", "NodeReady", "node/n2"], "{all}");
    assert_eq!(run(&["get", "events.v1.events.k8s.io", "-A"])?, all, "both groups print alike");

    let wide = run(&["get", "events", "-n", "default", "-o", "wide"])?;
    let route = wide.lines().find(|l| l.contains("RouteFailed")).context(wide.clone())?;
    // LAST SEEN, TYPE, REASON, OBJECT, SOURCE (2 words), MESSAGE (4), FIRST SEEN, COUNT, NAME.
    assert_eq!(columns(route)[4..], ["weft-agent,", "weft-agent-n1", "no", "route", "to", "10.0.0.2", "40m", "3", "n1.route"]);
    let rebooted = wide.lines().find(|l| l.contains("Rebooted")).context(wide.clone())?;
    assert_eq!(columns(rebooted)[4..6], ["kubelet,", "n1"]);
    assert_eq!(columns(rebooted)[columns(rebooted).len() - 3..], ["3h", "2", "n1.rebooted"]);

    let selector = "involvedObject.kind=Node,involvedObject.name=n1,type=Warning";
    let warnings = run(&["get", "events", "-A", "--field-selector", selector])?;
    let reasons: Vec<&str> = warnings.lines().skip(1).map(|l| columns(l)[3]).collect();
    assert_eq!(reasons, ["Rebooted", "RouteFailed"], "{warnings}");
    let v1 = run(&["get", "events.v1.events.k8s.io", "-A", "--field-selector", "regarding.name=n2"])?;
    assert_eq!(v1.lines().count(), 2, "{v1}");

    let described = run(&["describe", "node", "n1"])?;
    let events = described.split("Events:").nth(1).context(described.clone())?;
    let route = events.lines().find(|l| l.contains("RouteFailed")).context(described.clone())?;
    assert_eq!(
        columns(route),
        ["Warning", "RouteFailed", "15m", "(x3", "over", "40m)", "weft-agent", "no", "route", "to", "10.0.0.2"]
    );
    let rebooted = events.lines().find(|l| l.contains("Rebooted")).context(described.clone())?;
    assert_eq!(
        columns(rebooted)[..6],
        ["Warning", "Rebooted", "20m", "(x2", "over", "3h)"],
        "found by the node's name as uid: {events}"
    );
    assert_eq!(columns(rebooted)[6..], ["kubelet", "Node", "n1", "has", "been", "rebooted"]);
    assert!(events.contains("Starting kubelet.") && !events.contains("NodeReady"), "{events}");
    let requests = fx.api.requests();
    let by_uid = format!("involvedObject.uid%3D{uid}");
    assert!(requests.iter().any(|r| r.starts_with("GET /api/v1/events?") && r.contains(&by_uid)), "{requests:?}");
    Ok(())
}

fn typed_event(name: &str) -> EventsEvent {
    EventsEvent {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        event_time: Some(MicroTime(Timestamp::now())),
        action: Some("Programming".into()),
        reason: Some("RouteFailed".into()),
        note: Some("no route".into()),
        type_: Some("Warning".into()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..Default::default()
        }),
        reporting_controller: Some("weft-agent".into()),
        reporting_instance: Some("weft-agent-n1".into()),
        ..Default::default()
    }
}

/// Event writes get the real server's answers: the strict events.k8s.io rules
/// (422), the legacy core/v1 namespace rule, NamespaceLifecycle's 404, strict
/// updates that may only move the series; field selectors by group; deletes
/// through either group.
#[test]
fn event_writes_are_validated_as_upstream() -> Result<()> {
    let fx = Fixture::new()?;
    fx.kube(|client| async move {
        let pp = PostParams::default();
        let v1: Api<EventsEvent> = Api::namespaced(client.clone(), "default");
        let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");

        let mut anonymous = typed_event("e1");
        anonymous.reporting_controller = None;
        let s = api_error(v1.create(&pp, &anonymous).await)?;
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
        assert!(s.message.starts_with(r#"Event "e1" is invalid: [reportingController: Required value, "#), "{}", s.message);
        let s = api_error(Api::<EventsEvent>::namespaced(client.clone(), "nope").create(&pp, &typed_event("e1")).await)?;
        assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (404, "NotFound", r#"namespaces "nope" not found"#));

        // Old-style (no eventTime): a cluster-scoped object's events live in default.
        let legacy = CoreEvent {
            metadata: ObjectMeta { name: Some("k1".into()), ..Default::default() },
            involved_object: ObjectReference { kind: Some("Node".into()), name: Some("n1".into()), ..Default::default() },
            reason: Some("Rebooted".into()),
            ..Default::default()
        };
        let s = api_error(Api::<CoreEvent>::namespaced(client.clone(), "kube-system").create(&pp, &legacy).await)?;
        assert_eq!(s.code, 422);
        assert_eq!(
            s.message,
            r#"Event "k1" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace"#
        );
        let k1 = core.create(&pp, &legacy).await?;
        assert_eq!((k1.metadata.namespace.as_deref(), k1.count), (Some("default"), None));

        let e1 = v1.create(&pp, &typed_event("e1")).await?;
        let mut changed = e1.clone();
        changed.note = Some("another".into());
        let s = api_error(v1.replace("e1", &pp, &changed).await)?;
        assert_eq!(s.message, r#"Event "e1" is invalid: message: Invalid value: "another": field is immutable"#);
        let series = json!({ "series": { "count": 2, "lastObservedTime": micro_time(0) } });
        let moved = v1.patch("e1", &PatchParams::default(), &Patch::Merge(&series)).await?;
        assert_eq!(moved.series.map(|s| s.count), Some(2));
        let one = json!({ "series": { "count": 1, "lastObservedTime": micro_time(0) } });
        let s = api_error(v1.patch("e1", &PatchParams::default(), &Patch::Merge(&one)).await)?;
        assert_eq!(s.message, r#"Event "e1" is invalid: series.count: Invalid value: "": should be at least 2"#);

        let names = |items: Vec<CoreEvent>| items.into_iter().filter_map(|e| e.metadata.name).collect::<Vec<_>>();
        let lp = |f: &str| ListParams::default().fields(f);
        assert_eq!(names(core.list(&lp("reportingComponent=weft-agent")).await?.items), ["e1"]);
        assert_eq!(names(core.list(&lp("involvedObject.name=n1,reason=Rebooted")).await?.items), ["k1"]);
        assert_eq!(names(core.list(&lp("involvedObject.name=n2")).await?.items), Vec::<String>::new());
        let in_v1 = v1.list(&lp("regarding.name=n1,reportingController=weft-agent")).await?.items;
        assert_eq!(in_v1.into_iter().filter_map(|e| e.metadata.name).collect::<Vec<_>>(), ["e1"]);
        let s = api_error(core.list(&lp("regarding.name=n1")).await)?;
        assert_eq!((s.code, s.message.as_str()), (400, "field label not supported: regarding.name"));
        let s = api_error(v1.list(&lp("source=kubelet")).await)?;
        assert_eq!((s.code, s.message.as_str()), (400, "field label not supported: source"));

        assert!(
            core.delete("e1", &DeleteParams::default())
                .await?
                .right()
                .is_some_and(|s| s.details.is_some_and(|d| d.kind == "events"))
        );
        let s = api_error(v1.get("e1").await)?;
        assert_eq!((s.code, s.message.as_str()), (404, r#"events.events.k8s.io "e1" not found"#));
        let s = api_error(core.get("e1").await)?;
        assert_eq!(s.message, r#"events "e1" not found"#);
        Ok(())
    })
}

/// Watches of events see events only, in their namespace or all of them, in
/// either group, though Nodes share the history they replay.
#[test]
fn event_watches_see_their_scope_only() -> Result<()> {
    let fx = Fixture::new()?;
    let start = rv_of(&fx.api.create_node(node("n1", "10.0.0.1", None))?)?;
    fx.api.create_event(kubelet_event("a", "n1", "Starting", "Normal", "Starting kubelet."))?;
    fx.api.create_node(node("n2", "10.0.0.2", None))?;
    fx.api.create_event(recorded_event("kube-system", "b", ("n2", "u2"), "NodeReady", "Normal", "ready"))?;
    fx.api.update_node("n1", |n| n["metadata"]["labels"]["x"] = json!("y"))?;
    let (default, all) = fx.kube(move |client| async move {
        async fn seen<K>(api: Api<K>, from: u64) -> Result<Vec<String>>
        where
            K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        {
            let mut stream = Box::pin(api.watch(&WatchParams::default().timeout(1), &from.to_string()).await?);
            let mut out = Vec::new();
            while let Some(e) = stream.next().await {
                match e? {
                    WatchEvent::Added(o) => out.push(format!("ADDED {}", o.meta().name.clone().unwrap_or_default())),
                    WatchEvent::Modified(o) => out.push(format!("MODIFIED {}", o.meta().name.clone().unwrap_or_default())),
                    WatchEvent::Deleted(o) => out.push(format!("DELETED {}", o.meta().name.clone().unwrap_or_default())),
                    WatchEvent::Bookmark(_) => {}
                    WatchEvent::Error(s) => out.push(format!("ERROR {}", s.code)),
                }
            }
            Ok(out)
        }
        let default = seen(Api::<CoreEvent>::namespaced(client.clone(), "default"), start).await?;
        let all = seen(Api::<EventsEvent>::all(client), start).await?;
        Ok((default, all))
    })?;
    assert_eq!(default, ["ADDED a"]);
    assert_eq!(all, ["ADDED a", "ADDED b"]);
    Ok(())
}

/// Discovery, legacy and aggregated, finds Events in both groups, namespaced.
#[test]
fn kube_discovery_finds_events_in_both_groups() -> Result<()> {
    let fx = Fixture::new()?;
    let found = fx.kube(|client| async move {
        let mut out = Vec::new();
        for aggregated in [false, true] {
            let d = kube::discovery::Discovery::new(client.clone());
            let d = if aggregated { d.run_aggregated().await? } else { d.run().await? };
            for group in ["", "events.k8s.io"] {
                let gvk = kube::api::GroupVersionKind::gvk(group, "v1", "Event");
                let (ar, caps) = d.resolve_gvk(&gvk).context(format!("no Event in {group:?}"))?;
                out.push((ar.api_version, caps.scope == kube::discovery::Scope::Namespaced));
            }
        }
        Ok(out)
    })?;
    let want = [("v1".to_string(), true), ("events.k8s.io/v1".to_string(), true)];
    assert_eq!(found, [want.clone(), want].concat());
    Ok(())
}

/// A Pod as a controller would post it: one container, scheduled to `node` (or not).
fn pod(namespace: &str, name: &str, node: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": name } },
        "spec": { "containers": [{
            "name": "main", "image": "registry.example/app:1.0", "ports": [{ "containerPort": 8080 }],
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
        }] },
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// What a kubelet reports for a running pod: Running, its IP, its containers ready.
fn running(p: &mut Value, ip: &str) {
    let t = "2026-01-01T00:00:00Z";
    p["status"] = json!({
        "phase": "Running", "podIP": ip, "hostIP": "10.0.0.1", "startTime": t, "qosClass": p["status"]["qosClass"],
        "conditions": [
            { "type": "Initialized", "status": "True", "lastTransitionTime": t },
            { "type": "Ready", "status": "True", "lastTransitionTime": t },
        ],
        "containerStatuses": [{
            "name": "main", "ready": true, "restartCount": 0, "started": true, "image": "registry.example/app:1.0",
            "imageID": "", "state": { "running": { "startedAt": t } },
        }],
    });
}

fn pod_names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| format!("{}/{}", p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default()))
        .collect()
}

/// kube's typed client on Pods, as a node agent uses them: create (the
/// server's status, defaults), get, lists with the field selectors an agent
/// filters its node's pods by, status written through pods/status, 422s in the
/// real format, graceful deletion, and a watch of one node's pods.
#[test]
fn kube_client_pods_crud_selectors_and_validation() -> Result<()> {
    let fx = Fixture::new()?;
    let start = rv_of(&fx.api.create_node(node("n1", "10.0.0.1", Some("10.244.1.0/24")))?)?;
    let (events, discovered) = fx.kube(move |client| async move {
        let pp = PostParams::default();
        let default: Api<Pod> = Api::namespaced(client.clone(), "default");
        let all: Api<Pod> = Api::all(client.clone());
        let typed_pod = |ns: &str, name: &str, node: Option<&str>| -> Result<Pod> { Ok(serde_json::from_value(pod(ns, name, node))?) };

        let mut claimed = typed_pod("default", "web", Some("n1"))?;
        claimed.status = Some(serde_json::from_value(json!({ "phase": "Running" }))?);
        let web = default.create(&pp, &claimed).await?;
        assert!(web.metadata.uid.is_some() && web.metadata.creation_timestamp.is_some(), "{:?}", web.metadata);
        let status = web.status.clone().unwrap_or_default();
        assert_eq!((status.phase.as_deref(), status.qos_class.as_deref()), (Some("Pending"), Some("Burstable")), "the server's status");
        let spec = web.spec.clone().unwrap_or_default();
        assert_eq!((spec.node_name.as_deref(), spec.restart_policy.as_deref()), (Some("n1"), Some("Always")));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"), "defaulted from the tag");
        default.create(&pp, &typed_pod("default", "idle", None)?).await?;
        Api::<Pod>::namespaced(client.clone(), "kube-system").create(&pp, &typed_pod("kube-system", "dns", Some("n1"))?).await?;
        Api::<Pod>::namespaced(client.clone(), "kube-system").create(&pp, &typed_pod("kube-system", "far", Some("n2"))?).await?;
        let dup = api_error(default.create(&pp, &typed_pod("default", "web", None)?).await)?;
        assert_eq!((dup.code, dup.message.as_str()), (409, r#"pods "web" already exists"#));

        assert_eq!(default.get("web").await?.metadata.uid, web.metadata.uid);
        assert_eq!(pod_names(&all.list(&ListParams::default()).await?.items), ["default/idle", "default/web", "kube-system/dns", "kube-system/far"]);
        assert_eq!(pod_names(&default.list(&ListParams::default()).await?.items), ["default/idle", "default/web"]);
        let on_n1 = ListParams::default().fields("spec.nodeName=n1");
        assert_eq!(pod_names(&all.list(&on_n1).await?.items), ["default/web", "kube-system/dns"]);
        assert_eq!(pod_names(&default.list(&on_n1).await?.items), ["default/web"]);
        assert_eq!(pod_names(&all.list(&ListParams::default().fields("spec.nodeName=")).await?.items), ["default/idle"]);
        let labelled = ListParams::default().labels("app=dns").fields("metadata.namespace=kube-system");
        assert_eq!(pod_names(&all.list(&labelled).await?.items), ["kube-system/dns"]);

        // A kubelet's status report, through pods/status only.
        let mut report = serde_json::to_value(default.get("web").await?)?;
        running(&mut report, "10.244.1.5");
        let patched = default.patch_status("web", &PatchParams::default(), &Patch::Merge(&json!({ "status": report["status"] }))).await?;
        let status = patched.status.clone().unwrap_or_default();
        assert_eq!((status.phase.as_deref(), status.pod_ip.as_deref()), (Some("Running"), Some("10.244.1.5")));
        assert_eq!(status.pod_ips.map(|ips| ips.into_iter().map(|i| i.ip).collect::<Vec<_>>()), Some(vec!["10.244.1.5".to_string()]));
        let ignored = default.patch("web", &PatchParams::default(), &Patch::Merge(&json!({ "status": { "phase": "Failed" } }))).await?;
        assert_eq!(ignored.status.and_then(|s| s.phase).as_deref(), Some("Running"), "the main resource keeps the status");
        let running_on_n1 = ListParams::default().fields("spec.nodeName=n1,status.phase=Running");
        assert_eq!(pod_names(&all.list(&running_on_n1).await?.items), ["default/web"]);
        let live = ListParams::default().fields("spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed");
        assert_eq!(pod_names(&all.list(&live).await?.items), ["default/web", "kube-system/dns"]);
        assert_eq!(pod_names(&all.list(&ListParams::default().fields("status.podIP=10.244.1.5")).await?.items), ["default/web"]);
        let bad = api_error(all.list(&ListParams::default().fields("spec.unschedulable=true")).await)?;
        assert_eq!((bad.code, bad.message.as_str()), (400, "field label not supported: spec.unschedulable"));

        // Validation: 422 with the real message format; the namespace is the URL's.
        let mut no_image = typed_pod("default", "bad", None)?;
        no_image.spec.as_mut().context("a spec")?.containers[0].image = None;
        let s = api_error(default.create(&pp, &no_image).await)?;
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
        assert_eq!(s.message, r#"Pod "bad" is invalid: spec.containers[0].image: Required value"#);
        let cause = s.details.as_ref().and_then(|d| d.causes.first()).context("a cause")?;
        assert_eq!((cause.field.as_str(), cause.reason.as_str()), ("spec.containers[0].image", "FieldValueRequired"));
        let mut empty = typed_pod("default", "Empty_Pod", None)?;
        empty.spec.as_mut().context("a spec")?.containers.clear();
        let s = api_error(default.create(&pp, &empty).await)?;
        assert!(s.message.starts_with(r#"Pod "Empty_Pod" is invalid: [metadata.name: Invalid value: "Empty_Pod": a lowercase RFC 1123 subdomain"#), "{}", s.message);
        assert!(s.message.ends_with(", spec.containers: Required value]"), "{}", s.message);
        let s = api_error(default.create(&pp, &typed_pod("kube-system", "elsewhere", None)?).await)?;
        assert_eq!(
            (s.code, s.message.as_str()),
            (400, "the namespace of the provided object does not match the namespace sent on the request")
        );
        let s = api_error(default.patch("web", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "nodeName": "n2" } }))).await)?;
        assert_eq!(s.code, 422);
        assert!(s.message.starts_with(r#"Pod "web" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"#), "{}", s.message);
        let image = json!({ "spec": { "containers": [{ "name": "main", "image": "registry.example/app:1.1" }] } });
        let updated = default.patch("web", &PatchParams::default(), &Patch::Strategic(&image)).await?;
        assert_eq!(updated.spec.map(|s| s.containers.into_iter().map(|c| c.image.unwrap_or_default()).collect::<Vec<_>>()), Some(vec!["registry.example/app:1.1".to_string()]));

        // Deletion: an unscheduled pod goes at once, a scheduled one waits for its
        // grace period until deleted with 0 (as its kubelet would).
        assert!(default.delete("idle", &DeleteParams::default()).await?.right().is_some_and(|s| s.details.is_some_and(|d| d.name == "idle" && d.kind == "pods")));
        let terminating = default.delete("web", &DeleteParams::default()).await?.left().context("a pod being deleted")?;
        assert!(terminating.metadata.deletion_timestamp.is_some());
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
        assert!(default.get("web").await?.metadata.deletion_timestamp.is_some(), "still there meanwhile");
        assert!(default.delete("web", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?.right().is_some());
        let gone = api_error(default.get("web").await)?;
        assert_eq!((gone.code, gone.message.as_str()), (404, r#"pods "web" not found"#));

        // What n1's agent watching its pods saw of all that.
        let wp = WatchParams::default().fields("spec.nodeName=n1").timeout(1);
        let mut stream = Box::pin(all.watch(&wp, &start.to_string()).await?);
        let mut seen = Vec::new();
        while let Some(e) = stream.next().await {
            let name = |p: &Pod| format!("{}/{}", p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default());
            match e? {
                WatchEvent::Added(p) => seen.push(format!("ADDED {}", name(&p))),
                WatchEvent::Modified(p) => seen.push(format!("MODIFIED {}", name(&p))),
                WatchEvent::Deleted(p) => seen.push(format!("DELETED {}", name(&p))),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(s) => seen.push(format!("ERROR {}", s.code)),
            }
        }

        let d = kube::discovery::Discovery::new(client.clone()).run_aggregated().await?;
        let (ar, caps) = d.resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Pod")).context("Pod not discovered")?;
        let discovered = (ar.plural, caps.scope == kube::discovery::Scope::Namespaced, caps.supports_operation(kube::discovery::verbs::WATCH));
        Ok((seen, discovered))
    })?;
    assert_eq!(
        events,
        [
            "ADDED default/web",
            "ADDED kube-system/dns",
            "MODIFIED default/web",
            "MODIFIED default/web",
            "MODIFIED default/web",
            "DELETED default/web"
        ],
        "status, image, deletion mark, deletion"
    );
    assert_eq!(discovered, ("pods".to_string(), true, true));
    assert!(fx.api.pods().iter().all(|p| p["metadata"]["name"] != "web"));
    Ok(())
}

/// What an operator runs on pods: `get pods` across namespaces with `-o wide`
/// (the server's Table), field selectors, `describe node` (which lists the
/// node's running pods and their requests), strict and invalid creates, and a
/// forced delete.
#[test]
fn kubectl_gets_pods_and_describes_their_node() -> Result<()> {
    let fx = Fixture::new()?;
    let mut n1 = node("n1", "10.0.0.1", Some("10.244.1.0/24"));
    let resources = json!({ "cpu": "2", "memory": "4Gi", "pods": "110" });
    n1["status"]["capacity"] = resources.clone();
    n1["status"]["allocatable"] = resources;
    fx.api.create_node(n1)?;
    fx.api.create_node(node("n2", "10.0.0.2", None))?;
    fx.api.create_pod(pod("default", "web", Some("n1")))?;
    fx.api.update_pod("default", "web", |p| running(p, "10.244.1.5"))?;
    fx.api.create_pod(pod("kube-system", "dns", Some("n1")))?;
    fx.api.create_pod(pod("default", "job", Some("n1")))?;
    fx.api.update_pod("default", "job", |p| p["status"]["phase"] = json!("Succeeded"))?;
    fx.api.create_pod(pod("default", "far", Some("n2")))?;
    fx.api.create_pod(pod("default", "idle", None))?;

    let run = |args: &[&str]| -> Result<String> {
        let out = fx.kubectl(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.is_empty() {
            bail!("kubectl {args:?}: {stderr}{}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let wide = run(&["get", "pods", "-A", "-o", "wide"])?;
    let rows: Vec<Vec<&str>> = wide.lines().map(columns).collect();
    assert_eq!(
        rows[0],
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"],
        "{wide}"
    );
    let names: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        names,
        [("default", "far"), ("default", "idle"), ("default", "job"), ("default", "web"), ("kube-system", "dns")],
        "{wide}"
    );
    let web = &rows[4];
    assert_eq!((web[2], web[3], web[4]), ("1/1", "Running", "0"), "{wide}");
    assert!(web[5].ends_with('s'), "age in seconds: {wide}");
    assert_eq!(web[6..], ["10.244.1.5", "n1", "<none>", "<none>"], "{wide}");
    let idle = &rows[2];
    assert_eq!(idle[2..5], ["0/1", "Pending", "0"], "{wide}");
    assert_eq!(idle[6..], ["<none>", "<none>", "<none>", "<none>"], "{wide}");
    assert_eq!(rows[3][3], "Succeeded", "{wide}");

    let narrow = run(&["get", "pods"])?;
    assert_eq!(columns(narrow.lines().next().unwrap_or_default()), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{narrow}");
    assert_eq!(narrow.lines().count(), 5, "the default namespace only: {narrow}");
    let on_n1 = run(&["get", "po", "-A", "--field-selector", "spec.nodeName=n1,status.phase!=Succeeded", "-o", "name"])?;
    assert_eq!(on_n1.lines().collect::<Vec<_>>(), ["pod/web", "pod/dns"]);
    let printed: Value = serde_json::from_str(&run(&["get", "pod", "web", "-o", "json"])?)?;
    assert_eq!(Some(printed), fx.api.get_pod("default", "web"), "get -o json prints the stored object");

    let described = run(&["describe", "node", "n1"])?;
    let pods = described.split("Non-terminated Pods:").nth(1).context(described.clone())?;
    assert!(columns(pods.lines().next().unwrap_or_default()).starts_with(&["(2", "in", "total)"]), "{described}");
    let table: Vec<Vec<&str>> = pods.lines().map(columns).take_while(|c| c.first() != Some(&"Allocated")).collect();
    let web = table.iter().find(|r| r.get(1) == Some(&"web")).context(described.clone())?;
    assert_eq!(web[..10], ["default", "web", "100m", "(5%)", "0", "(0%)", "128Mi", "(3%)", "0", "(0%)"], "{described}");
    assert!(table.iter().any(|r| r[..2] == ["kube-system", "dns"]), "{described}");
    assert!(!pods.contains("job") && !pods.contains("far") && !pods.contains("idle"), "{described}");
    let requests = fx.api.requests();
    // What `kubectl describe node` asks for: the node's pods that have not finished.
    let listed = requests
        .iter()
        .find(|r| r.starts_with("GET /api/v1/pods?") && r.contains("status.phase%21%3DFailed"))
        .context(format!("{requests:?}"))?;
    assert!(listed.contains("spec.nodeName%3Dn1%2Cstatus.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed"), "{listed}");

    // Creates: strict field validation, then the server's 422 as kubectl prints it.
    let file = fx.dir.join("pod.yaml");
    let path = file.display().to_string();
    let yaml = |name: &str, container: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n2\n  containers:\n  - name: main\n{container}"
        )
    };
    std::fs::write(&file, yaml("strict", "    image: app:1\n    bogus: 1\n"))?;
    let strict = fx.kubectl(&["create", "-f", &path])?;
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains(r#"strict decoding error: unknown field "spec.containers[0].bogus""#),
        "{strict:?}"
    );
    std::fs::write(&file, yaml("no-image", ""))?;
    let invalid = fx.kubectl(&["create", "-f", &path])?;
    assert!(!invalid.status.success());
    assert_eq!(
        String::from_utf8_lossy(&invalid.stderr).trim(),
        r#"The Pod "no-image" is invalid: spec.containers[0].image: Required value"#
    );
    std::fs::write(&file, yaml("made", "    image: app:1\n"))?;
    assert_eq!(run(&["create", "-f", &path])?.trim(), "pod/made created");
    assert_eq!(fx.api.get_pod("default", "made").context("created")?["spec"]["nodeName"], "n2");

    let forced = fx.kubectl(&["delete", "pod", "web", "--grace-period=0", "--force"])?;
    assert!(forced.status.success(), "{forced:?}");
    // Newer kubectl adds "from default namespace".
    let said = String::from_utf8_lossy(&forced.stdout);
    assert!(said.starts_with(r#"pod "web" force deleted"#), "{said}");
    assert!(fx.api.get_pod("default", "web").is_none());
    Ok(())
}

fn lease(name: &str, holder: &str, duration: i32) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "leaseTransitions": 0,
                 "acquireTime": "2026-12-06T10:00:00.000000Z", "renewTime": "2026-12-06T10:00:00.000000Z"},
    }))
    .expect("a valid Lease")
}

/// Leases as leader election uses them: create, get, list, a PUT carrying the
/// resourceVersion read (a stale one is a 409 Conflict with upstream's
/// Status), merge patches, validation (422 naming `Lease.coordination.k8s.io`),
/// NamespaceLifecycle, and a watch.
#[test]
fn kube_client_leases_crud_conflicts_and_validation() -> Result<()> {
    let fx = Fixture::new()?;
    fx.kube(|client| async move {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let created = leases.create(&PostParams::default(), &lease("weft-allocator", "a", 15)).await?;
        let rv = created.metadata.resource_version.clone().context("a resourceVersion")?;
        let got = leases.get("weft-allocator").await?;
        assert_eq!(got.spec.as_ref().and_then(|s| s.holder_identity.as_deref()), Some("a"));
        assert_eq!(
            got.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()),
            Some("2026-12-06T10:00:00Z".to_string())
        );

        // Two candidates read the same version; the first PUT wins, the second conflicts.
        let mut by_b = got.clone();
        by_b.spec.as_mut().context("spec")?.holder_identity = Some("b".into());
        by_b.spec.as_mut().context("spec")?.lease_transitions = Some(1);
        let mut by_c = got.clone();
        by_c.spec.as_mut().context("spec")?.holder_identity = Some("c".into());
        let won = leases.replace("weft-allocator", &PostParams::default(), &by_b).await?;
        assert_ne!(won.metadata.resource_version.as_deref(), Some(rv.as_str()));
        let lost = api_error(leases.replace("weft-allocator", &PostParams::default(), &by_c).await)?;
        assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            lost.message,
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"weft-allocator\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
        let details = lost.details.context("details")?;
        assert_eq!(
            (details.name.as_str(), details.group.as_str(), details.kind.as_str()),
            ("weft-allocator", "coordination.k8s.io", "leases")
        );

        // A merge patch with a stale resourceVersion conflicts too; without one it applies.
        let stale = json!({"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": "c"}});
        let e = api_error(leases.patch("weft-allocator", &PatchParams::default(), &Patch::Merge(&stale)).await)?;
        assert_eq!(e.code, 409);
        let p = json!({"spec": {"renewTime": "2026-12-06T10:00:05.123456Z"}});
        let patched = leases.patch("weft-allocator", &PatchParams::default(), &Patch::Merge(&p)).await?;
        let spec = patched.spec.context("spec")?;
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions), (Some("b"), Some(1)));
        assert_eq!(spec.renew_time.map(|t| t.0.to_string()), Some("2026-12-06T10:00:05.123456Z".to_string()));

        let bad = api_error(leases.create(&PostParams::default(), &lease("zero", "a", 0)).await)?;
        assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            bad.message,
            "Lease.coordination.k8s.io \"zero\" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
        );
        let nowhere: Api<Lease> = Api::namespaced(client.clone(), "weft-nowhere");
        let mut elsewhere = lease("x", "a", 15);
        elsewhere.metadata.namespace = Some("weft-nowhere".into());
        let e = api_error(nowhere.create(&PostParams::default(), &elsewhere).await)?;
        assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"weft-nowhere\" not found"));

        // Listed per namespace and across all; a watch sees the next renewal.
        leases.create(&PostParams::default(), &lease("second", "z", 40)).await?;
        let listed = leases.list(&ListParams::default()).await?;
        let names: Vec<_> = listed.items.iter().filter_map(|l| l.metadata.name.clone()).collect();
        assert_eq!(names, ["second", "weft-allocator"]);
        assert_eq!(Api::<Lease>::all(client.clone()).list(&ListParams::default()).await?.items.len(), 2);
        let from = listed.metadata.resource_version.context("list rv")?;
        let mut stream = leases.watch(&WatchParams::default().timeout(10), &from).await?.boxed();
        let p = json!({"spec": {"renewTime": "2026-12-06T10:00:07.000000Z"}});
        leases.patch("weft-allocator", &PatchParams::default(), &Patch::Merge(&p)).await?;
        match stream.next().await.context("a watch event")?? {
            WatchEvent::Modified(l) => assert_eq!(l.metadata.name.as_deref(), Some("weft-allocator")),
            other => bail!("expected MODIFIED, got {other:?}"),
        }
        leases.delete("second", &DeleteParams::default()).await?;
        assert_eq!(api_error(leases.get("second").await)?.code, 404);
        Ok(())
    })
}

/// kubectl on Leases: create from YAML, the server's Table (`HOLDER`),
/// patch, and a replace from a stale copy refused.
#[test]
fn kubectl_leases() -> Result<()> {
    let fx = Fixture::new()?;
    let file = fx.dir.join("lease.json");
    std::fs::write(&file, serde_json::to_vec(&lease("weft-allocator", "node-a_1234", 15))?)?;
    let path = file.display().to_string();
    assert_eq!(fx.kubectl_ok(&["create", "-f", &path])?.trim(), "lease.coordination.k8s.io/weft-allocator created");
    let table = fx.kubectl_ok(&["get", "leases", "-n", "kube-system"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(columns(lines[0]), ["NAME", "HOLDER", "AGE"], "{table}");
    assert_eq!(columns(lines[1])[..2], ["weft-allocator", "node-a_1234"], "{table}");
    let stale = fx.kubectl_ok(&["get", "lease", "-n", "kube-system", "weft-allocator", "-o", "json"])?;
    fx.kubectl_ok(&[
        "patch",
        "lease",
        "-n",
        "kube-system",
        "weft-allocator",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"holderIdentity":"node-b_5678"}}"#,
    ])?;
    let holder =
        fx.kubectl_ok(&["get", "lease", "-n", "kube-system", "weft-allocator", "-o", "jsonpath={.spec.holderIdentity}"])?;
    assert_eq!(holder, "node-b_5678");
    std::fs::write(&file, stale)?;
    let out = fx.kubectl(&["replace", "-f", &path])?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"weft-allocator\": the object has been modified"
        ),
        "{out:?}"
    );
    let bad = fx.kubectl(&[
        "patch",
        "lease",
        "-n",
        "kube-system",
        "weft-allocator",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"leaseTransitions":-1}}"#,
    ])?;
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim(),
        "The Lease \"weft-allocator\" is invalid: spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
    );
    Ok(())
}

/// The allocator's write: `spec.podCIDR`/`podCIDRs` from empty with a merge
/// patch carrying the Node's resourceVersion (stale: 409), then no change of
/// it (422), as kube's client sees it.
#[test]
fn kube_client_pod_cidr_from_empty_with_resource_version() -> Result<()> {
    let fx = Fixture::new()?;
    fx.api.create_node(node("n1", "10.0.0.1", None))?;
    fx.kube(|client| async move {
        let nodes: Api<Node> = Api::all(client);
        let read = nodes.get("n1").await?;
        let rv = read.metadata.resource_version.clone().context("rv")?;
        nodes.patch("n1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await?;
        let set =
            |cidr: &str, rv: &str| json!({"metadata": {"resourceVersion": rv}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        let stale = api_error(nodes.patch("n1", &PatchParams::default(), &Patch::Merge(set("10.244.3.0/24", &rv))).await)?;
        assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
        let now = nodes.get("n1").await?.metadata.resource_version.context("rv")?;
        let done = nodes.patch("n1", &PatchParams::default(), &Patch::Merge(set("10.244.3.0/24", &now))).await?;
        assert_eq!(done.spec.as_ref().and_then(|s| s.pod_cidrs.clone()), Some(vec!["10.244.3.0/24".to_string()]));
        let latest = done.metadata.resource_version.context("rv")?;
        let again = api_error(nodes.patch("n1", &PatchParams::default(), &Patch::Merge(set("10.244.4.0/24", &latest))).await)?;
        assert_eq!((again.code, again.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            again.message,
            "Node \"n1\" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        );
        Ok(())
    })
}
