//! weft's node agent.
//!
//! One module per concern:
//! - [`config`]: command line and its validation; [`compat`]: flanneld's flags weft
//!   has no use for (a warning each, or a named refusal) and Go's `-flag` spelling;
//! - [`peers`]: the node table file (static mode);
//! - [`kube_sync`], [`node_object`], [`annotations`], [`netconf`]: the node table from
//!   the API server (Kubernetes mode; the lean Node the watch keeps), Flannel's
//!   annotations and net-conf.json;
//! - [`uplink`]: which interface and address carry the tunnel;
//! - [`cni`]: subnet.env and the CNI conflist pods get their addresses from;
//!   [`cni_results`]: the pods' CNI results as the runtime cached them (who each pod is);
//! - [`flannel_leftovers`]: what Flannel left on a node weft takes over, removed or refused;
//! - [`events`]: Kubernetes Events on skipped Nodes and on this node's own problems;
//! - [`healthz`]: what the agent reports about itself (health, skipped nodes, API errors);
//! - [`http`], [`metrics`]: the health port: `/healthz` and Prometheus' `/metrics`;
//! - [`inspect`]: `weft-agent status` and `weft-agent route IP`, from the pinned state;
//! - [`uninstall`]: `weft-agent uninstall`, everything weft created on the node, removed;
//! - [`init`]: `weft-agent mount-bpffs`, `install-cni-conf`, `install-cni-plugins`: the
//!   DaemonSet's init containers (the image has no shell);
//! - [`node`]: the node model — what `weft0`, the routes and the maps should hold;
//! - [`netlink`]: links, addresses and routes over rtnetlink (Flannel's device.go, in Rust);
//! - [`bpffs`]: where pins live, and mounting bpffs only where pins outlive us;
//! - [`lock`]: one agent per pin directory (an exclusive flock on it);
//! - [`dataplane`]: loading the programs, pinning maps, attaching through pinned TCX links;
//! - [`maps`]: typed access to the pinned maps;
//! - [`nat`]: masquerade's user-space half: its settings, the collector, `nat list`;
//! - [`pods`]: the local pod endpoints, the pod bridge's egress program, and the
//!   programs on each pod veth (source check, `--fast-path`);
//! - [`probe`]: what the running kernel's BPF helpers accept;
//! - [`reconcile`]: desired vs actual, applied in the order the kernel needs;
//! - [`agent`]: the running agent — startup with rollback, node sources, addresses,
//!   device and attach plan, publishing, and the event loop with resync (a submodule each).

pub mod agent;
pub mod allocator;
pub mod annotations;
pub mod bpffs;
pub mod cni;
pub mod cni_results;
pub mod compat;
pub mod config;
pub mod dataplane;
pub mod ethtool;
pub mod events;
pub mod flannel_leftovers;
pub mod healthz;
pub mod http;
pub mod init;
pub mod inspect;
pub mod kube_sync;
pub mod lock;
pub mod maps;
pub mod metrics;
pub mod nat;
pub mod netconf;
pub mod netlink;
pub mod node;
pub mod node_object;
pub mod own_cidr;
pub mod peers;
pub mod pods;
pub mod privileges;
pub mod probe;
pub mod reassembly;
pub mod reconcile;
pub mod sysctl;
pub mod tc_netlink;
pub mod uninstall;
pub mod uplink;

/// The eBPF object built by `cargo xtask build-ebpf`.
pub static DATAPLANE_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("WEFT_EBPF_OBJECT_PATH"));
