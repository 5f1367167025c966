//! The maps, declared with BTF so `bpftool map dump` names every field.
//! Layouts, names and sizes come from `weft_common`; the agent pins each map
//! under its bpffs directory and fills all but the counters.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use weft_common::{
    Ipv4Octets,
    config::DataplaneConfig,
    counters::{COUNTER_SLOTS, Counter},
    fastpath::{FlowKey, FlowSeen, LocalEndpoint},
    maps::{MAX_ENDPOINTS, MAX_NODES, MAX_STACK_FLOWS},
    nat::{DEFAULT_MAX_ENTRIES, MAX_NO_MASQ, NatEntry, NatKey},
    tunnel::{PeerNode, TunnelEndpoint},
};

/// Remote pod CIDR → the node that hosts it.
#[btf_map]
pub static WEFT_TUNNELS: LpmTrie<Ipv4Octets, TunnelEndpoint, { MAX_NODES as usize }> = LpmTrie::new();

/// Underlay address → node: the sources decap accepts VXLAN from.
#[btf_map]
pub static WEFT_PEERS: HashMap<Ipv4Octets, PeerNode, { MAX_NODES as usize }> = HashMap::new();

/// Slot 0: this node's settings.
#[btf_map]
pub static WEFT_CONFIG: Array<DataplaneConfig, 1> = Array::new();

/// Packets and bytes per (hook, verdict), per CPU.
#[btf_map]
pub static WEFT_COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

/// `--fast-path`: local pod address → its veth, for delivery into its namespace.
#[btf_map]
pub static WEFT_ENDPOINTS: HashMap<Ipv4Octets, LocalEndpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

/// `--fast-path`: flows that left through `weft0`, whose replies must take the stack.
#[btf_map]
pub static WEFT_STACK_FLOWS: LruHashMap<FlowKey, FlowSeen, { MAX_STACK_FLOWS as usize }> = LruHashMap::new();

/// `--ip-masq`: a pod's flow → its translated source (the agent sizes it, `--nat-max-entries`).
#[btf_map]
pub static WEFT_NAT_OUT: LruHashMap<NatKey, NatEntry, { DEFAULT_MAX_ENTRIES as usize }> = LruHashMap::new();

/// `--ip-masq`: a reply's tuple → the pod's address and port to restore.
#[btf_map]
pub static WEFT_NAT_IN: LruHashMap<NatKey, NatEntry, { DEFAULT_MAX_ENTRIES as usize }> = LruHashMap::new();

/// `--ip-masq`: destinations never masqueraded.
#[btf_map]
pub static WEFT_NO_MASQ: LpmTrie<Ipv4Octets, u32, { MAX_NO_MASQ as usize }> = LpmTrie::new();

/// This node's config, or `None` until the agent has written it.
#[inline(always)]
pub fn config() -> Option<&'static DataplaneConfig> {
    WEFT_CONFIG.get(0).filter(|c| c.abi_version != 0)
}
