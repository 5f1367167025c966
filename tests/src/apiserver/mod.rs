//! A Kubernetes API server for tests, serving Nodes, Events, Pods and Leases over plain HTTP
//! to real clients: kube's `Client`, its runtime `watcher` and event `Recorder`,
//! and kubectl. It stands in for kube-apiserver + etcd in end-to-end tests
//! (neither can be installed here).
//!
//! It is a faithful subset rather than a mock. Served: core/v1 `nodes` and
//! `nodes/status`; core/v1 `events` and events.k8s.io/v1 `events`, one stored
//! resource in two groups (converted field by field, so each group reads what
//! the other wrote), per namespace and across all of them; core/v1 `pods` and
//! `pods/status`, per namespace and across all of them; coordination.k8s.io/v1
//! `leases` (leader election), likewise. For each:
//! discovery (legacy and aggregated), OpenAPI v2/v3,
//! list/get/create/update/patch/delete/deletecollection with resourceVersions
//! from one revision shared by every kind, optimistic concurrency, the kind's
//! strategy (Node: validation and subresource rules; Event: the legacy or the
//! strict events.k8s.io rules by the group written through, immutability on
//! strict updates, create on PUT; Pod: v1 defaults, validation of metadata and
//! containers, the server's status on create, subresource rules, an immutable
//! spec but for images, graceful deletion; Lease: `ValidateLease`), strategic/merge/JSON patches applied in the
//! request's group, label and field selectors with each group's field labels,
//! watches with bookmarks and 410 `Expired`, server-side Table printing, and
//! metav1.Status errors. The namespaces are those of a fresh cluster (default,
//! kube-system, kube-public, kube-node-lease); creating elsewhere fails as the
//! NamespaceLifecycle admission plugin fails it. Tests drive outages with
//! [`ApiServer::stop`]/[`ApiServer::resume`] and history loss with
//! [`ApiServer::compact`].
//!
//! Design: one thread accepts, one thread per connection reads requests and
//! writes responses; watch streams wait on a condition variable the store
//! signals on every write. All state is behind one mutex (writes are rare and
//! small), which also makes every write atomic with its event.
//!
//! Not served: other resources (namespaces are fixed and not a resource), pod
//! subresources other than `status` (`binding`, `log`, `exec`, `eviction`,
//! ...), what a scheduler or kubelet would do (see [`pod`]), the deprecated
//! `/api/v1/watch/` paths, events.k8s.io/v1beta1,
//! Event expiry (`--event-ttl`), server-side apply
//! (`application/apply-patch+yaml`), YAML and protobuf bodies, authentication,
//! `managedFields`, `generation`.

mod discovery;
mod event;
mod http;
mod lease;
mod meta;
mod node;
mod patch;
mod pod;
mod registry;
mod resource;
mod router;
mod schema;
mod selector;
mod status;
mod store;
mod table;
mod watch;

use std::{
    io::{self, BufReader},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

pub use self::status::{FieldError, FieldErrorKind, Status};
use self::{
    http::{ReadError, Response},
    node::Subresource,
    registry::WriteOptions,
    resource::{Api, Scope},
    router::Reply,
    store::Store,
};

/// State shared by every connection and the test's handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Signalled after every write (and on stop), for watches.
    changed: Condvar,
    requests: Mutex<Vec<String>>,
}

impl Shared {
    /// Runs a write under the store lock and wakes the watches.
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.store.lock().expect("store lock");
        let r = f(&mut store);
        self.changed.notify_all();
        r
    }
}

/// Open connections and their serving threads.
type Connections = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// One listener's worth of serving; stopping it ends its connections too.
struct Serving {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    connections: Connections,
}

/// A Kubernetes API server serving Nodes, Events and Pods; see the [module docs](self).
pub struct ApiServer {
    shared: Arc<Shared>,
    serving: Mutex<Option<Serving>>,
    addr: Mutex<SocketAddr>,
}

impl ApiServer {
    /// Serves on a listener the caller bound (possibly inside a network namespace).
    pub fn serve(listener: TcpListener) -> io::Result<ApiServer> {
        let addr = listener.local_addr()?;
        let server = ApiServer {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::default()),
                changed: Condvar::new(),
                requests: Mutex::new(Vec::new()),
            }),
            serving: Mutex::new(None),
            addr: Mutex::new(addr),
        };
        server.resume(listener)?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        *self.addr.lock().expect("addr lock")
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Writes a kubeconfig whose cluster, user and context are all "weft-test",
    /// pointing at [`ApiServer::url`] without authentication.
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: weft-test\n  cluster:\n    server: {}\n\
             users:\n- name: weft-test\n  user: {{}}\ncontexts:\n- name: weft-test\n  context:\n    \
             cluster: weft-test\n    user: weft-test\ncurrent-context: weft-test\npreferences: {{}}\n",
            self.url()
        );
        std::fs::write(path, config)
    }

    /// An outage: stops accepting and closes every open connection (watch streams
    /// end abruptly, without their final chunk). State is kept.
    pub fn stop(&self) {
        let Some(serving) = self.serving.lock().expect("serving lock").take() else {
            return;
        };
        {
            // Under the store lock, so no watch can miss the flag between its check and its wait.
            let _store = self.shared.store.lock().expect("store lock");
            serving.stop.store(true, Ordering::SeqCst);
            self.shared.changed.notify_all();
        }
        let _ = serving.accept.join();
        let connections = std::mem::take(&mut *serving.connections.lock().expect("connections lock"));
        for (stream, _) in &connections {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, thread) in connections {
            let _ = thread.join();
        }
    }

    /// Serves again on `listener` with the same state; resourceVersions continue.
    /// Stops the current listener first if there is one.
    pub fn resume(&self, listener: TcpListener) -> io::Result<()> {
        self.stop();
        let addr = listener.local_addr()?;
        // Non-blocking, so the accept loop can notice `stop` without a wake-up
        // connection (which could not reach a listener in another namespace).
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (shared, stop, connections) = (self.shared.clone(), stop.clone(), connections.clone());
            std::thread::Builder::new()
                .name(format!("apiserver-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared, &stop, &connections))?
        };
        *self.addr.lock().expect("addr lock") = addr;
        *self.serving.lock().expect("serving lock") = Some(Serving { stop, accept, connections });
        Ok(())
    }

    /// Creates a Node as `POST /api/v1/nodes` would (validation included).
    pub fn create_node(&self, node: Value) -> Result<Value, Status> {
        let decoded = Api::Nodes.decode(&node)?;
        let nodes = Scope::cluster(Api::Nodes);
        self.shared.write(|s| registry::create(s, &nodes, decoded, WriteOptions::default())).map(|w| w.object)
    }

    pub fn get_node(&self, name: &str) -> Option<Value> {
        self.shared.store.lock().expect("store lock").get(&Scope::cluster(Api::Nodes).key(name)).cloned()
    }

    /// Every Node, by name.
    pub fn nodes(&self) -> Vec<Value> {
        self.objects(&Scope::cluster(Api::Nodes))
    }

    /// Creates an Event as a POST to its group's `events` in its namespace
    /// would (`default` when it names none): events.k8s.io/v1 when its
    /// `apiVersion` says so, else core/v1. Returns it in the core/v1 shape.
    pub fn create_event(&self, event: Value) -> Result<Value, Status> {
        let api = if event["apiVersion"] == event::EVENTS_V1 { Api::Events } else { Api::CoreEvents };
        let scope = Scope::namespaced(api, event["metadata"]["namespace"].as_str().unwrap_or("default"));
        let decoded = api.decode(&event)?;
        self.shared.write(|s| registry::create(s, &scope, decoded, WriteOptions::default())).map(|w| w.object)
    }

    /// Every Event, by namespace and name, in the core/v1 shape (as
    /// `GET /api/v1/events` lists them).
    pub fn events(&self) -> Vec<Value> {
        self.objects(&Scope::cluster(Api::CoreEvents))
    }

    fn objects(&self, scope: &Scope) -> Vec<Value> {
        let store = self.shared.store.lock().expect("store lock");
        scope.objects(&store).map(|(_, o)| o.clone()).collect()
    }

    /// Changes a Node as an administrator writing storage would: `f` may change
    /// metadata, spec and status at once; the result is validated as an update
    /// (a set `podCIDR` still cannot change). Unconditional: the resourceVersion
    /// `f` sees is the current one, whatever it sets.
    pub fn update_node(&self, name: &str, f: impl FnOnce(&mut Value)) -> Result<Value, Status> {
        let nodes = Scope::cluster(Api::Nodes);
        self.shared
            .write(|s| {
                registry::update(s, &nodes, name, Subresource::Whole, WriteOptions::default(), |old| {
                    let mut new = old.clone();
                    f(&mut new);
                    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                    Api::Nodes.decode(&new)
                })
            })
            .map(|w| w.object)
    }

    /// Deletes a Node as `DELETE /api/v1/nodes/{name}` would; returns it as it
    /// was, or as marked for deletion while finalizers remain.
    pub fn delete_node(&self, name: &str) -> Result<Value, Status> {
        let nodes = Scope::cluster(Api::Nodes);
        self.shared
            .write(|s| registry::delete(s, &nodes, name, &registry::Preconditions::default(), false, None))
            .map(|d| d.object)
    }

    /// Creates a Pod as a POST to `pods` in its namespace (`default` when it
    /// names none) would: defaulted, validated, with the server's `Pending`
    /// status whatever it says (set one with [`ApiServer::update_pod`]).
    pub fn create_pod(&self, pod: Value) -> Result<Value, Status> {
        let scope = Scope::namespaced(Api::Pods, pod["metadata"]["namespace"].as_str().unwrap_or("default"));
        let decoded = Api::Pods.decode(&pod)?;
        self.shared.write(|s| registry::create(s, &scope, decoded, WriteOptions::default())).map(|w| w.object)
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store.lock().expect("store lock").get(&Scope::namespaced(Api::Pods, namespace).key(name)).cloned()
    }

    /// Every Pod, by namespace and name.
    pub fn pods(&self) -> Vec<Value> {
        self.objects(&Scope::cluster(Api::Pods))
    }

    /// Changes a Pod as a kubelet and the scheduler together would (status and
    /// spec at once); validated as an update, so the spec may still change only
    /// where the API allows. Unconditional, like [`ApiServer::update_node`].
    pub fn update_pod(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) -> Result<Value, Status> {
        let pods = Scope::namespaced(Api::Pods, namespace);
        self.shared
            .write(|s| {
                registry::update(s, &pods, name, Subresource::Whole, WriteOptions::default(), |old| {
                    let mut new = old.clone();
                    f(&mut new);
                    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                    Api::Pods.decode(&new)
                })
            })
            .map(|w| w.object)
    }

    /// Deletes a Pod with a grace period of 0, as its kubelet does once the
    /// containers are gone (or `kubectl delete --force` does): gone at once
    /// unless finalizers remain; returns it as it was.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<Value, Status> {
        let pods = Scope::namespaced(Api::Pods, namespace);
        self.shared
            .write(|s| registry::delete(s, &pods, name, &registry::Preconditions::default(), false, Some(0)))
            .map(|d| d.object)
    }

    /// Every Lease, by namespace and name.
    pub fn leases(&self) -> Vec<Value> {
        self.objects(&Scope::cluster(Api::Leases))
    }

    /// Every write to Nodes since the server started, oldest first, as
    /// `(resourceVersion, "ADDED" | "MODIFIED" | "DELETED", object)`; `None`
    /// once the history has been compacted (or outgrew what is kept): tests
    /// check what happened in between, not only the end state.
    pub fn node_history(&self) -> Option<Vec<(u64, &'static str, Value)>> {
        let store = self.shared.store.lock().expect("store lock");
        let events = store.events_after(1).ok()?;
        Some(
            events
                .filter(|e| e.key.kind == Api::Nodes.kind())
                .map(|e| {
                    let kind = match e.kind {
                        store::EventType::Added => "ADDED",
                        store::EventType::Modified => "MODIFIED",
                        store::EventType::Deleted => "DELETED",
                    };
                    (e.rv, kind, e.object.clone())
                })
                .collect(),
        )
    }

    /// Forgets the event history up to now, as etcd compaction does: a watch from
    /// an older resourceVersion gets 410 Gone (`Expired`).
    pub fn compact(&self) {
        self.shared.write(Store::compact);
    }

    /// `METHOD /path?query` of every request served, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    connections: &Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => {
                eprintln!("apiserver: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let mut conns = connections.lock().expect("connections lock");
        conns.retain(|(_, t)| !t.is_finished());
        let spawned = stream.set_nonblocking(false).and_then(|()| stream.set_nodelay(true)).and_then(|()| {
            let (shared, stop, s) = (shared.clone(), stop.clone(), stream.try_clone()?);
            std::thread::Builder::new().name("apiserver-conn".into()).spawn(move || connection(&shared, &stop, s))
        });
        match spawned {
            Ok(thread) => conns.push((stream, thread)),
            Err(e) => eprintln!("apiserver: connection setup: {e}"),
        }
    }
}

/// Serves requests on one connection until it closes or the server stops.
fn connection(shared: &Shared, stop: &AtomicBool, stream: TcpStream) {
    serve_requests(shared, stop, &stream);
    // The registry holds another handle to this socket: dropping ours would not close it.
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve_requests(shared: &Shared, stop: &AtomicBool, stream: &TcpStream) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (Ok(read_half), Ok(mut writer)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    while !stop.load(Ordering::SeqCst) {
        let req = match http::read_request(&mut reader) {
            Ok(req) => req,
            Err(ReadError::Closed | ReadError::Io) => return,
            Err(ReadError::Malformed(why)) => {
                let _ = http::write_response(&mut writer, &Response::json(400, &Status::bad_request(why).to_json()), false);
                return;
            }
            Err(ReadError::TooLarge) => {
                let _ = http::write_response(&mut writer, &Response::json(413, &Status::too_large().to_json()), false);
                return;
            }
        };
        shared.requests.lock().expect("requests lock").push(format!("{} {}", req.method, req.target));
        let sent = match router::handle(shared, &req, local) {
            Reply::Full(resp) => http::write_response(&mut writer, &resp, req.keep_alive),
            Reply::Watch(w) => watch::serve(shared, stop, &mut writer, w),
        };
        if sent.is_err() || !req.keep_alive {
            return;
        }
    }
}
