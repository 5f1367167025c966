//! Map and program names, pin names, and sizes.
//!
//! A map's object name (≤ 15 bytes, the kernel's limit) is what the eBPF crate
//! declares and what `bpftool map list` shows; its pin name is the file under the
//! agent's bpffs directory.

/// A map both sides know: its object name, pin file name, type and geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub pin: &'static str,
    /// `enum bpf_map_type` value.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;

/// Remote nodes a weft node can tunnel to (pod CIDRs in the LPM trie, underlay
/// addresses in the peer hash): the default of the agent's `--max-nodes`, which sizes
/// both maps. Flannel's default /16 network with /24 node subnets has 256;
/// Kubernetes supports 5,000 nodes; this leaves room for a /12 of /24s.
pub const MAX_NODES: u32 = 8192;

pub const TUNNELS: MapSpec = MapSpec {
    name: "WEFT_TUNNELS",
    pin: "tunnels",
    map_type: BPF_MAP_TYPE_LPM_TRIE,
    key_size: 4 + 4,
    value_size: core::mem::size_of::<crate::tunnel::TunnelEndpoint>() as u32,
    max_entries: MAX_NODES,
};

pub const PEERS: MapSpec = MapSpec {
    name: "WEFT_PEERS",
    pin: "peers",
    map_type: BPF_MAP_TYPE_HASH,
    key_size: 4,
    value_size: core::mem::size_of::<crate::tunnel::PeerNode>() as u32,
    max_entries: MAX_NODES,
};

pub const CONFIG: MapSpec = MapSpec {
    name: "WEFT_CONFIG",
    pin: "config",
    map_type: BPF_MAP_TYPE_ARRAY,
    key_size: 4,
    value_size: core::mem::size_of::<crate::config::DataplaneConfig>() as u32,
    max_entries: 1,
};

pub const COUNTERS: MapSpec = MapSpec {
    name: "WEFT_COUNTERS",
    pin: "counters",
    map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
    key_size: 4,
    value_size: core::mem::size_of::<crate::counters::Counter>() as u32,
    max_entries: crate::counters::COUNTER_SLOTS,
};

/// Local pods the fast path delivers to: far above Kubernetes' pods per node (110
/// by default); a pod beyond it takes the stack path.
pub const MAX_ENDPOINTS: u32 = 4096;

/// Flows through `weft0` the fast path remembers. An evicted flow's replies would
/// skip conntrack: size it above the node's concurrent NATed pod flows.
pub const MAX_STACK_FLOWS: u32 = 65_536;

pub const ENDPOINTS: MapSpec = MapSpec {
    name: "WEFT_ENDPOINTS",
    pin: "endpoints",
    map_type: BPF_MAP_TYPE_HASH,
    key_size: 4,
    value_size: core::mem::size_of::<crate::fastpath::LocalEndpoint>() as u32,
    max_entries: MAX_ENDPOINTS,
};

pub const STACK_FLOWS: MapSpec = MapSpec {
    name: "WEFT_STACK_FLOWS",
    pin: "stack_flows",
    map_type: BPF_MAP_TYPE_LRU_HASH,
    key_size: core::mem::size_of::<crate::fastpath::FlowKey>() as u32,
    value_size: core::mem::size_of::<crate::fastpath::FlowSeen>() as u32,
    max_entries: MAX_STACK_FLOWS,
};

/// `--ip-masq`: pod tuple → translated source (see `crate::nat`). Its size is
/// `--nat-max-entries` (this is the default), like [`NAT_IN`]'s.
pub const NAT_OUT: MapSpec = MapSpec {
    name: "WEFT_NAT_OUT",
    pin: "nat_out",
    map_type: BPF_MAP_TYPE_LRU_HASH,
    key_size: core::mem::size_of::<crate::nat::NatKey>() as u32,
    value_size: core::mem::size_of::<crate::nat::NatEntry>() as u32,
    max_entries: crate::nat::DEFAULT_MAX_ENTRIES,
};

/// `--ip-masq`: reply tuple → the original source to restore.
pub const NAT_IN: MapSpec = MapSpec { name: "WEFT_NAT_IN", pin: "nat_in", ..NAT_OUT };

/// `--ip-masq`: destinations never masqueraded (the cluster network and
/// `--non-masquerade-cidrs`), an LPM trie of IPv4 prefixes.
pub const NO_MASQ: MapSpec = MapSpec {
    name: "WEFT_NO_MASQ",
    pin: "no_masq",
    map_type: BPF_MAP_TYPE_LPM_TRIE,
    key_size: 4 + 4,
    value_size: 4,
    max_entries: crate::nat::MAX_NO_MASQ,
};

/// Every pinned map.
pub const ALL: [MapSpec; 9] = [TUNNELS, PEERS, CONFIG, COUNTERS, ENDPOINTS, STACK_FLOWS, NAT_OUT, NAT_IN, NO_MASQ];

/// Program names (the `#[classifier]` function names).
pub mod programs {
    /// TC egress of `weft0`: encapsulate.
    pub const ENCAP: &str = "weft_encap";
    /// TC ingress of the uplink: decapsulate.
    pub const DECAP: &str = "weft_decap";
    /// XDP on the uplink: decapsulation before GRO (see `--decap`).
    pub const DECAP_XDP: &str = "weft_decap_xdp";
    /// TC ingress of each pod's host-side veth (`--fast-path`): encapsulate pod → remote pod.
    pub const POD_EGRESS: &str = "weft_pod_egress";
    /// TC egress of each pod's host-side veth (`--fast-path`): remember stack flows.
    pub const POD_INGRESS: &str = "weft_pod_ingress";
    /// TC ingress of `weft0` (`--fast-path`): TC decap's aggregates straight into their pod.
    pub const WEFT0_INGRESS: &str = "weft_weft0_ingress";
    /// TC egress of the pod bridge: routed packets for local pods straight to their veths.
    pub const BRIDGE_EGRESS: &str = "weft_bridge_egress";
    /// TC egress of the uplink (`--ip-masq`): masquerade pods' traffic leaving the cluster.
    pub const MASQ: &str = "weft_masq";
    /// Never attached: run once through `BPF_PROG_TEST_RUN` to ask the kernel whether
    /// `bpf_skb_adjust_room` takes `BPF_F_ADJ_ROOM_DECAP_L4_UDP`.
    pub const PROBE_DECAP_L4_UDP: &str = "weft_probe_decap";

    /// Every program in the object.
    pub const ALL: [&str; 9] =
        [ENCAP, DECAP, DECAP_XDP, POD_EGRESS, POD_INGRESS, WEFT0_INGRESS, BRIDGE_EGRESS, MASQ, PROBE_DECAP_L4_UDP];

    /// The kernel keeps the first 15 bytes of a program's name (`BPF_OBJ_NAME_LEN` - 1).
    pub const KERNEL_NAME_LEN: usize = 15;

    /// Our program whose name the kernel shows as `kernel_name`, whole.
    pub fn from_kernel_name(kernel_name: &str) -> Option<&'static str> {
        ALL.into_iter().find(|p| p.as_bytes()[..p.len().min(KERNEL_NAME_LEN)] == *kernel_name.as_bytes())
    }
}

/// Pin names of the TCX links under the agent's bpffs directory.
pub mod links {
    pub const ENCAP: &str = "link_encap";
    pub const DECAP: &str = "link_decap";
    pub const DECAP_XDP: &str = "link_decap_xdp";
    /// `--fast-path` only.
    pub const WEFT0_INGRESS: &str = "link_weft0_ingress";
    pub const BRIDGE_EGRESS: &str = "link_bridge_egress";
    /// `--ip-masq` only.
    pub const MASQ: &str = "link_masq";
    /// One per pod veth: this prefix and the veth's ifindex.
    pub const POD_EGRESS_PREFIX: &str = "link_pod_egress_";
    pub const POD_INGRESS_PREFIX: &str = "link_pod_ingress_";
}
