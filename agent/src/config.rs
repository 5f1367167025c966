//! The command line. Tests and operators script against it: keep it stable.
//!
//! flanneld's own flags and their `FLANNELD_*` environment variables are accepted
//! too, so kube-flannel.yml's container spec runs unchanged: those weft implements
//! are its flags below; the others are under "Accepted from flanneld" and
//! [`crate::compat`] says, once, what each does here (nothing, and why) or refuses it
//! with the reason.

use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum, builder::BoolishValueParser};
use ipnetwork::Ipv4Network;
use weft_common::{
    nat::DEFAULT_MAX_ENTRIES,
    wire::{DEFAULT_PORT, DEFAULT_VNI},
};

use crate::nat::PortRanges;

#[derive(Parser, Debug, Clone)]
#[command(name = "weft-agent", version, about = "weft's node agent: an eBPF VXLAN overlay, wire-compatible with Flannel")]
pub struct Args {
    /// Static mode: the node table, one `NAME UNDERLAY_IPV4 POD_CIDR VTEP_MAC` per line,
    /// this node's included; `#` starts a comment. Re-read on SIGHUP and when it
    /// changes. Without it, the agent learns the nodes from the Kubernetes API server.
    #[arg(long, value_name = "FILE")]
    pub peers: Option<PathBuf>,

    /// This node's name (its Node object, or its line in the node table) [Kubernetes
    /// mode default: as flanneld, the `spec.nodeName` of the agent's own Pod, named by
    /// $POD_NAME and $POD_NAMESPACE].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Kubernetes mode (flanneld's flag for it): nodes and their pod CIDRs come from
    /// the API server. weft's mode whenever --peers is absent.
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR", conflicts_with = "peers", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub kube_subnet_mgr: bool,

    /// Underlay interface, by name or address; repeatable: the first that exists wins
    /// [default: the interface holding this node's own address (node table entry; or
    /// the Node's public-ip-overwrite, --public-ip or InternalIP), else the interface
    /// of the default route].
    #[arg(long, value_name = "IFACE", env = "FLANNELD_IFACE", action = ArgAction::Append)]
    pub iface: Vec<String>,

    /// Underlay interface: the first whose name matches and has an IPv4 address;
    /// repeatable, tried after every --iface.
    #[arg(long, value_name = "REGEX", env = "FLANNELD_IFACE_REGEX", action = ArgAction::Append)]
    pub iface_regex: Vec<String>,

    /// Address to advertise to other nodes [default: the uplink's address; the
    /// Node's `flannel.alpha.coreos.com/public-ip-overwrite` annotation wins over both].
    #[arg(long, value_name = "IPV4", env = "FLANNELD_PUBLIC_IP")]
    pub public_ip: Option<std::net::Ipv4Addr>,

    /// Kubernetes mode: kubeconfig to reach the API server [default: in-cluster
    /// config, or $KUBECONFIG].
    #[arg(long, value_name = "FILE", env = "FLANNELD_KUBECONFIG_FILE")]
    pub kubeconfig_file: Option<PathBuf>,

    /// Kubernetes mode: the API server's URL, over the kubeconfig's or the in-cluster one.
    #[arg(long, value_name = "URL", env = "FLANNELD_KUBE_API_URL")]
    pub kube_api_url: Option<String>,

    /// Kubernetes mode: set the Node's NetworkUnavailable condition to False once this
    /// node is advertised (flanneld's default); false leaves the condition alone.
    #[arg(long, env = "FLANNELD_SET_NODE_NETWORK_UNAVAILABLE", num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub set_node_network_unavailable: bool,

    /// Flannel's network configuration (the kube-flannel ConfigMap's net-conf.json);
    /// static mode reads it only for --ip-masq (its `Network` is the cluster network).
    #[arg(long, value_name = "FILE", env = "FLANNELD_NET_CONFIG_PATH", default_value = "/etc/kube-flannel/net-conf.json")]
    pub net_config_path: PathBuf,

    /// Kubernetes mode: where to write Flannel's subnet.env (for Flannel's CNI plugin).
    #[arg(long, value_name = "FILE", env = "FLANNELD_SUBNET_FILE", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,

    /// Kubernetes mode: the CNI configuration directory.
    #[arg(long, value_name = "DIR", env = "WEFT_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// Kubernetes mode: the conflist to write, completed for this node (as the
    /// ConfigMap's `cni-conf.json` in manifests/weft.yaml): in its `bridge` plugin, the
    /// host-local ranges (this node's podCIDR), `mtu` and `bridge` where it leaves them
    /// out; everything it sets is kept [default: bridge, host-local and portmap as
    /// manifests/cni-conf.json]. Re-read at every resync.
    #[arg(long, value_name = "FILE", env = "WEFT_CNI_CONF_TEMPLATE")]
    pub cni_conf_template: Option<PathBuf>,

    /// Kubernetes mode: write the CNI conflist (auto: only if the directory holds no other CNI config).
    #[arg(long, value_enum, default_value_t = CniConf::Auto)]
    pub cni_conf: CniConf,

    /// Kubernetes mode: host-local's dataDir in the conflist [default: the plugin's own,
    /// /var/lib/cni/networks/cbr0, where Flannel's pods' addresses are recorded too].
    #[arg(long, value_name = "DIR", env = "WEFT_CNI_IPAM_DATA_DIR")]
    pub cni_ipam_data_dir: Option<PathBuf>,

    /// Address for the health endpoint (`/healthz`, `/readyz`, `/metrics`). The
    /// default, every address, is Flannel's: kube-flannel.yml's probes reach the pod IP,
    /// which under hostNetwork is the node's IP, so a loopback default would break that
    /// manifest with weft's image in it. Where probes run in the node's namespace
    /// (weft's own manifest), 127.0.0.1 keeps the port off the network. Either way the
    /// server is bounded: header and connection timeouts, a cap on connections.
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "0.0.0.0")]
    pub healthz_ip: std::net::IpAddr,

    /// Port for the health endpoint; 0 disables it.
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    pub healthz_port: u16,

    /// bpffs directory for pinned maps and links (mounts bpffs at /sys/fs/bpf if
    /// it is missing and this process is in the host's mount namespace).
    #[arg(long, value_name = "DIR", env = "WEFT_BPFFS_DIR", default_value = "/sys/fs/bpf/weft")]
    pub bpffs_dir: PathBuf,

    /// VXLAN network identifier [default: 1; Kubernetes mode: net-conf.json's Backend.VNI].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=0xff_ffff))]
    pub vni: Option<u32>,

    /// VXLAN UDP port [default: 8472; Kubernetes mode: net-conf.json's Backend.Port].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Level of the eBPF programs' own log (rare events: drops, malformed packets),
    /// forwarded into this log.
    #[arg(long, value_enum, default_value_t = BpfLogLevel::Off)]
    pub bpf_log: BpfLogLevel,

    /// Log lines as text (for people) or JSON, one object per line (for collectors:
    /// `timestamp`, `level`, `target`, `fields.message` and the event's own fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WEFT_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Where VXLAN is decapsulated. `xdp`: at the uplink's native (driver) XDP hook,
    /// before GRO, so the inner flows are aggregated as Flannel's vxlan socket
    /// aggregates them (GRO is turned on for the uplink); TC then hands the aggregates
    /// to weft0. `tc`: at the uplink's TC ingress alone (every driver), TCP data then
    /// through weft0's veth peer, whose GRO aggregates. `auto`: xdp where the driver has
    /// native XDP and is not a veth (a veth's XDP copies every frame and disables its
    /// peer's GSO), else tc. Either way the inner packet arrives on weft0, as on flannel.1.
    #[arg(long, value_enum, default_value_t = DecapMode::Auto)]
    pub decap: DecapMode,

    /// How TC programs attach. `tcx`: TCX links (Linux 6.6+). `netlink`: cls_bpf
    /// filters on the clsact qdisc, first on each hook (priority 1, handle 0:5746),
    /// as tc(8) makes them: the only way before 6.6. `auto`: tcx where the kernel has it.
    /// Either way a restarted agent swaps its programs in without a gap.
    #[arg(long, value_enum, default_value_t = TcAttach::Auto, env = "WEFT_TC_ATTACH")]
    pub tc_attach: TcAttach,

    /// Opt-in fast path for pod-to-pod traffic between nodes: encapsulate at the pod
    /// bridge and deliver straight into the destination pod's namespace, skipping the
    /// host's routing, conntrack and netfilter on both ends (so NetworkPolicy and host
    /// firewall rules do not see these packets). Flows that leave through the host
    /// stack (e.g. to a Service address) keep the stack both ways. See the README.
    #[arg(long)]
    pub fast_path: bool,

    /// Pods send only as themselves: a pod veth's TC ingress drops IPv4 packets and ARP
    /// whose source address or MAC is not the pod's own, as its CNI result recorded
    /// (counted as `drop_spoofed_source`). On by default; off only for pods that must
    /// route others' traffic.
    #[arg(long, env = "WEFT_POD_SOURCE_CHECK", num_args = 0..=1, require_equals = true, default_value_t = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub pod_source_check: bool,

    /// libcni's cache directory, where the container runtime keeps each pod's CNI
    /// result (`results/`): who each pod veth's pod is, for the source check and the
    /// fast path.
    #[arg(long, value_name = "DIR", env = "WEFT_CNI_CACHE_DIR", default_value = crate::cni_results::DEFAULT_CACHE_DIR)]
    pub cni_cache_dir: PathBuf,

    /// Masquerade pods' traffic leaving the cluster network (net-conf.json's
    /// `Network`) to the node's address, in eBPF on the uplink: Flannel's --ip-masq,
    /// with its rules (see the README). Off by default, as in flanneld.
    #[arg(long, env = "FLANNELD_IP_MASQ", num_args = 0..=1, require_equals = true, default_value_t = false,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub ip_masq: bool,

    /// With --ip-masq: destinations never masqueraded besides the cluster network
    /// (comma-separated CIDRs, like ip-masq-agent's nonMasqueradeCIDRs).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub non_masquerade_cidrs: Vec<Ipv4Network>,

    /// With --ip-masq: the source ports masqueraded flows get, picked at random (as
    /// MASQUERADE --random-fully), one or two ranges. Added to
    /// net.ipv4.ip_local_reserved_ports so the node's own connections never take
    /// one; the default lies outside Linux's ephemeral range (32768-60999) as well.
    #[arg(long, value_name = "MIN-MAX[,MIN-MAX]", default_value = weft_common::nat::DEFAULT_PORT_RANGES)]
    pub nat_port_range: PortRanges,

    /// With --ip-masq: flows the NAT table holds (least recently used go first when
    /// it is full); about 100 bytes of kernel memory each, twice.
    #[arg(long, default_value_t = DEFAULT_MAX_ENTRIES, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub nat_max_entries: u32,

    /// Remote nodes this node can tunnel to: the size of the tunnel and peer maps (about
    /// 100 bytes of kernel memory per node, each). Beyond it, the nodes that do not fit
    /// (the newest Nodes; the node table file's last lines) are left out with an error
    /// naming this flag, `weft_peers_skipped{reason="over_limit"}` and a 503 from
    /// `/readyz`; the agent stays live and keeps serving the nodes that fit.
    #[arg(long, env = "WEFT_MAX_NODES", default_value_t = weft_common::maps::MAX_NODES,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_nodes: u32,

    /// Flannel's leftovers on a node moved from Flannel (`flannel.<VNI>`, flanneld's
    /// FLANNEL-POSTRTG and FLANNEL-FWD iptables chains and the jumps to them): `remove`
    /// them once weft forwards, one log line each; or `refuse` to start while any is there.
    #[arg(long, value_enum, default_value_t = crate::flannel_leftovers::Policy::Remove)]
    pub flannel_leftovers: crate::flannel_leftovers::Policy,

    /// Seconds between full resyncs of link, routes and maps with the node table.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,

    #[command(flatten)]
    pub flanneld: FlanneldOnly,
}

/// flanneld's flags that weft has no use for: [`crate::compat`] warns that each has
/// no effect here (and why), or refuses it with the reason. Values are kept as given.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Accepted from flanneld")]
pub struct FlanneldOnly {
    /// etcd mode's: refused (weft has no etcd mode).
    #[arg(long, value_name = "URLS", env = "FLANNELD_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// etcd mode's: refused.
    #[arg(long, value_name = "PREFIX", env = "FLANNELD_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd mode's: refused.
    #[arg(long, value_name = "FILE", env = "FLANNELD_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<String>,
    /// etcd mode's: refused.
    #[arg(long, value_name = "FILE", env = "FLANNELD_ETCD_CERTFILE")]
    pub etcd_certfile: Option<String>,
    /// etcd mode's: refused.
    #[arg(long, value_name = "FILE", env = "FLANNELD_ETCD_CAFILE")]
    pub etcd_cafile: Option<String>,
    /// etcd mode's: refused.
    #[arg(long, value_name = "USER", env = "FLANNELD_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// etcd mode's: refused.
    #[arg(long, value_name = "PASSWORD", env = "FLANNELD_ETCD_PASSWORD")]
    pub etcd_password: Option<String>,
    /// etcd mode's: no effect.
    #[arg(long, value_name = "MINUTES", env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN")]
    pub subnet_lease_renew_margin: Option<String>,
    /// Refused: weft's overlay is IPv4 only.
    #[arg(long, value_name = "IPV6", env = "FLANNELD_PUBLIC_IPV6")]
    pub public_ipv6: Option<String>,
    /// Refused: name the uplink with --iface or --iface-regex.
    #[arg(long, value_name = "IPV4", env = "FLANNELD_IFACE_CAN_REACH")]
    pub iface_can_reach: Option<String>,
    /// Refused unless Flannel's own (flannel.alpha.coreos.com).
    #[arg(long, value_name = "PREFIX", env = "FLANNELD_KUBE_ANNOTATION_PREFIX")]
    pub kube_annotation_prefix: Option<String>,
    /// No effect: weft installs no iptables rules.
    #[arg(long, value_name = "SECONDS", env = "FLANNELD_IPTABLES_RESYNC")]
    pub iptables_resync: Option<String>,
    /// No effect: weft installs no iptables rules.
    #[arg(long, env = "FLANNELD_IPTABLES_FORWARD_RULES", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub iptables_forward_rules: Option<bool>,
    /// No effect: weft's NAT ports are always picked at random.
    #[arg(long, env = "FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub ip_masq_fully_random_disable: Option<bool>,
    /// Refused when true: weft adds no blackhole route.
    #[arg(long, env = "FLANNELD_IP_BLACKHOLE_ROUTE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub ip_blackhole_route: Option<bool>,
    /// klog's verbosity: no effect (weft's log level is RUST_LOG).
    #[arg(long = "v", value_name = "LEVEL", env = "FLANNELD_V")]
    pub klog_v: Option<String>,
    /// klog's: no effect.
    #[arg(long, value_name = "SPEC", env = "FLANNELD_VMODULE")]
    pub vmodule: Option<String>,
    /// klog's: no effect.
    #[arg(long = "log_backtrace_at", value_name = "FILE:LINE", env = "FLANNELD_LOG_BACKTRACE_AT")]
    pub log_backtrace_at: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapMode {
    Auto,
    Xdp,
    Tc,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAttach {
    Auto,
    Tcx,
    Netlink,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniConf {
    Auto,
    Always,
    Never,
}

/// VNI and port for static mode, where no net-conf.json says otherwise.
pub const STATIC_DEFAULTS: (u32, u16) = (DEFAULT_VNI, DEFAULT_PORT);

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl BpfLogLevel {
    /// The value for aya-log's `AYA_LOG_LEVEL` global: `aya_log_common::Level` numbering, 0 = off.
    pub fn aya_level(self) -> u8 {
        match self {
            BpfLogLevel::Off => 0,
            BpfLogLevel::Error => 1,
            BpfLogLevel::Warn => 2,
            BpfLogLevel::Info => 3,
            BpfLogLevel::Debug => 4,
            BpfLogLevel::Trace => 5,
        }
    }
}
