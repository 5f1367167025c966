//! Typed access to the pinned maps, in the layouts of `weft_common`.
//!
//! The agent takes them from the loaded object; tools and tests open them from their
//! pins. Keys are converted here and only here (LPM keys: prefix length in host order,
//! address in network order).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuArray, lpm_trie::Key},
};
use ipnetwork::Ipv4Network;
use thiserror::Error;
use weft_common::{
    ABI_VERSION, Ipv4Octets,
    config::DataplaneConfig,
    counters::{Counter, Hook, Verdict, counter_index},
    fastpath::{FlowKey, FlowSeen, LocalEndpoint},
    maps::{self as spec, MapSpec},
    nat::{NatEntry, NatKey},
    tunnel::{PeerNode, TunnelEndpoint},
};

#[derive(Debug, Error)]
pub enum MapsError {
    #[error("map {0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error("map {name}: {op}")]
    Map {
        name: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
    #[error("removing pinned map {path} whose layout changed")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, MapsError>;

fn err(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, op, source }
}

pub struct Maps {
    tunnels: LpmTrie<MapData, Ipv4Octets, TunnelEndpoint>,
    peers: HashMap<MapData, Ipv4Octets, PeerNode>,
    config: Array<MapData, DataplaneConfig>,
    counters: PerCpuArray<MapData, Counter>,
    endpoints: HashMap<MapData, Ipv4Octets, LocalEndpoint>,
    stack_flows: HashMap<MapData, FlowKey, FlowSeen>,
    nat_out: HashMap<MapData, NatKey, NatEntry>,
    nat_in: HashMap<MapData, NatKey, NatEntry>,
    no_masq: LpmTrie<MapData, Ipv4Octets, u32>,
}

/// How a map was found at its pin path before loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinState {
    /// Nothing pinned: the loader creates and pins it.
    Absent,
    /// Pinned with the expected layout: the loader reuses it, entries and all.
    Adopted,
    /// Pinned with another layout (an older weft): unpinned, the loader creates a new one.
    Replaced,
}

/// Checks every pinned map's layout against `weft_common::maps` (with the sizes
/// `sizes` gives the NAT maps) before loading, because aya reuses a pinned map
/// without comparing type, key or value size.
pub fn prepare_pins(dir: &Path, sizes: &Sizes) -> Result<Vec<(&'static str, PinState)>> {
    // Maps pinned by an agent of another ABI version may keep their sizes and still
    // mean something else (a renumbered index, a reused field): all of them go.
    if let Some(found) = pinned_abi_version(dir).filter(|v| *v != 0 && *v != ABI_VERSION) {
        tracing::warn!(found, ours = ABI_VERSION, "pinned maps are of another ABI version: replacing them all");
        for s in spec::ALL {
            let path = dir.join(s.pin);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|source| MapsError::Unpin { path: path.clone(), source })?;
            }
        }
        return Ok(spec::ALL.iter().map(|s| (s.name, PinState::Replaced)).collect());
    }
    spec::ALL
        .iter()
        .map(|s| {
            let s = &sizes.apply(*s);
            let path = dir.join(s.pin);
            if !path.exists() {
                return Ok((s.name, PinState::Absent));
            }
            match MapInfo::from_pin(&path) {
                Ok(info) if layout_matches(&info, s) => Ok((s.name, PinState::Adopted)),
                found => {
                    tracing::warn!(
                        map = s.name,
                        path = %path.display(),
                        found = ?found.as_ref().map(|i| (i.key_size(), i.value_size(), i.max_entries())),
                        "pinned map has another layout: replacing it (its entries are rebuilt)"
                    );
                    std::fs::remove_file(&path).map_err(|source| MapsError::Unpin { path: path.clone(), source })?;
                    Ok((s.name, PinState::Replaced))
                }
            }
        })
        .collect()
}

/// The `abi_version` of the pinned config, if one is pinned and readable; a config
/// of another size is of another version (`u32::MAX`).
fn pinned_abi_version(dir: &Path) -> Option<u32> {
    let path = dir.join(spec::CONFIG.pin);
    if !path.exists() {
        return None;
    }
    let info = MapInfo::from_pin(&path).ok()?;
    if info.value_size() != spec::CONFIG.value_size {
        return Some(u32::MAX);
    }
    let data = MapData::from_pin(&path).ok()?;
    let array: Array<MapData, DataplaneConfig> = Array::try_from(Map::Array(data)).ok()?;
    array.get(&0, 0).ok().map(|c| c.abi_version)
}

/// Map sizes set on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Entries of each NAT map (`--nat-max-entries`).
    pub nat: u32,
    /// Entries of the tunnel and peer maps: remote nodes (`--max-nodes`).
    pub nodes: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { nat: spec::NAT_OUT.max_entries, nodes: spec::MAX_NODES }
    }
}

impl Sizes {
    /// `s` as this agent creates it.
    pub fn apply(&self, s: MapSpec) -> MapSpec {
        if s.name == spec::NAT_OUT.name || s.name == spec::NAT_IN.name {
            MapSpec { max_entries: self.nat, ..s }
        } else if s.name == spec::TUNNELS.name || s.name == spec::PEERS.name {
            MapSpec { max_entries: self.nodes, ..s }
        } else {
            s
        }
    }
}

impl MapsError {
    /// Whether this is an insert into a full map (`E2BIG` from a hash map, `ENOSPC`
    /// from an LPM trie).
    pub fn is_full(&self) -> bool {
        match self {
            MapsError::Map { source: MapError::SyscallError(e), .. } => {
                matches!(e.io_error.raw_os_error(), Some(libc::E2BIG) | Some(libc::ENOSPC))
            }
            _ => false,
        }
    }
}

fn layout_matches(info: &MapInfo, s: &MapSpec) -> bool {
    let type_matches = info.map_type().map(|t| t as u32 == s.map_type).unwrap_or(false);
    type_matches && info.key_size() == s.key_size && info.value_size() == s.value_size && info.max_entries() == s.max_entries
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map> {
    ebpf.take_map(name).ok_or(MapsError::Missing(name))
}

fn open(dir: &Path, s: &MapSpec) -> Result<Map> {
    let data = MapData::from_pin(dir.join(s.pin)).map_err(err(s.name, "opening pin"))?;
    Map::from_map_data(data).map_err(err(s.name, "opening pin"))
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_maps(|s| take(ebpf, s.name))
    }

    /// Opens the maps pinned under `dir` by a running (or exited) agent.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::from_maps(|s| open(dir, s))
    }

    fn from_maps(mut get: impl FnMut(&MapSpec) -> Result<Map>) -> Result<Self> {
        fn typed<T: TryFrom<Map, Error = MapError>>(get: &mut impl FnMut(&MapSpec) -> Result<Map>, s: &MapSpec) -> Result<T> {
            get(s)?.try_into().map_err(err(s.name, "typing"))
        }
        Ok(Maps {
            tunnels: typed(&mut get, &spec::TUNNELS)?,
            peers: typed(&mut get, &spec::PEERS)?,
            config: typed(&mut get, &spec::CONFIG)?,
            counters: typed(&mut get, &spec::COUNTERS)?,
            endpoints: typed(&mut get, &spec::ENDPOINTS)?,
            stack_flows: typed(&mut get, &spec::STACK_FLOWS)?,
            nat_out: typed(&mut get, &spec::NAT_OUT)?,
            nat_in: typed(&mut get, &spec::NAT_IN)?,
            no_masq: typed(&mut get, &spec::NO_MASQ)?,
        })
    }

    pub fn tunnels(&self) -> Result<BTreeMap<Ipv4Network, TunnelEndpoint>> {
        let name = spec::TUNNELS.name;
        self.tunnels
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(err(name, "iterating"))?;
                let net = Ipv4Network::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8)
                    .expect("the kernel stores prefix lengths ≤ 32 for a 4-byte key");
                Ok((net, v))
            })
            .collect()
    }

    /// The entry the datapath would use for `ip` (longest prefix match), if any.
    pub fn tunnel_for(&self, ip: Ipv4Addr) -> Option<TunnelEndpoint> {
        self.tunnels.get(&Key::new(32, ip.octets()), 0).ok()
    }

    pub fn set_tunnel(&mut self, cidr: Ipv4Network, endpoint: TunnelEndpoint) -> Result<()> {
        let key = Key::new(u32::from(cidr.prefix()), cidr.network().octets());
        self.tunnels.insert(&key, endpoint, 0).map_err(err(spec::TUNNELS.name, "inserting"))
    }

    pub fn remove_tunnel(&mut self, cidr: Ipv4Network) -> Result<()> {
        let key = Key::new(u32::from(cidr.prefix()), cidr.network().octets());
        match self.tunnels.remove(&key) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(err(spec::TUNNELS.name, "removing")),
        }
    }

    pub fn peers(&self) -> Result<BTreeMap<Ipv4Addr, PeerNode>> {
        let name = spec::PEERS.name;
        self.peers.iter().map(|r| r.map(|(k, v)| (Ipv4Addr::from(k), v)).map_err(err(name, "iterating"))).collect()
    }

    /// The node at underlay address `ip`, if it is one decap accepts VXLAN from.
    pub fn peer(&self, ip: Ipv4Addr) -> Option<PeerNode> {
        self.peers.get(&ip.octets(), 0).ok()
    }

    pub fn set_peer(&mut self, ip: Ipv4Addr, peer: PeerNode) -> Result<()> {
        self.peers.insert(ip.octets(), peer, 0).map_err(err(spec::PEERS.name, "inserting"))
    }

    pub fn remove_peer(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.peers.remove(&ip.octets()) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(err(spec::PEERS.name, "removing")),
        }
    }

    pub fn config(&self) -> Result<DataplaneConfig> {
        self.config.get(&0, 0).map_err(err(spec::CONFIG.name, "reading"))
    }

    pub fn set_config(&mut self, config: DataplaneConfig) -> Result<()> {
        self.config.set(0, config, 0).map_err(err(spec::CONFIG.name, "writing"))
    }

    /// Packets and bytes per verdict, summed over CPUs.
    /// One (hook, verdict)'s total over the CPUs.
    pub fn counter_at(&self, hook: Hook, verdict: Verdict) -> Result<Counter> {
        let per_cpu = self.counters.get(&counter_index(hook, verdict), 0).map_err(err(spec::COUNTERS.name, "reading"))?;
        Ok(per_cpu
            .iter()
            .fold(Counter::default(), |acc, c| Counter { packets: acc.packets + c.packets, bytes: acc.bytes + c.bytes }))
    }

    /// Every (hook, verdict) with its total over the CPUs.
    pub fn counters_by_hook(&self) -> Result<Vec<(Hook, Verdict, Counter)>> {
        let mut out = Vec::with_capacity(Hook::ALL.len() * Verdict::ALL.len());
        for hook in Hook::ALL {
            for verdict in Verdict::ALL {
                out.push((hook, verdict, self.counter_at(hook, verdict)?));
            }
        }
        Ok(out)
    }

    /// Every verdict with its total over hooks and CPUs.
    pub fn counters(&self) -> Result<Vec<(Verdict, Counter)>> {
        let by_hook = self.counters_by_hook()?;
        Ok(Verdict::ALL
            .iter()
            .map(|&v| {
                let sum = by_hook.iter().filter(|(_, hv, _)| *hv == v).fold(Counter::default(), |acc, (_, _, c)| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                });
                (v, sum)
            })
            .collect())
    }

    /// One verdict's total over hooks and CPUs.
    pub fn counter(&self, verdict: Verdict) -> Result<Counter> {
        Ok(self.counters()?.into_iter().find(|(v, _)| *v == verdict).map(|(_, c)| c).unwrap_or_default())
    }

    /// `--fast-path`: the local pods it delivers to.
    pub fn endpoints(&self) -> Result<BTreeMap<Ipv4Addr, LocalEndpoint>> {
        let name = spec::ENDPOINTS.name;
        self.endpoints.iter().map(|r| r.map(|(k, v)| (Ipv4Addr::from(k), v)).map_err(err(name, "iterating"))).collect()
    }

    pub fn set_endpoint(&mut self, ip: Ipv4Addr, endpoint: LocalEndpoint) -> Result<()> {
        self.endpoints.insert(ip.octets(), endpoint, 0).map_err(err(spec::ENDPOINTS.name, "inserting"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.endpoints.remove(&ip.octets()) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(err(spec::ENDPOINTS.name, "removing")),
        }
    }

    /// `--ip-masq`: every flow's translation (keyed by the pod's tuple).
    pub fn nat_out(&self) -> Result<Vec<(NatKey, NatEntry)>> {
        self.nat_out.iter().map(|r| r.map_err(err(spec::NAT_OUT.name, "iterating"))).collect()
    }

    /// `--ip-masq`: every reply tuple and the pod's address and port it restores.
    pub fn nat_in(&self) -> Result<Vec<(NatKey, NatEntry)>> {
        self.nat_in.iter().map(|r| r.map_err(err(spec::NAT_IN.name, "iterating"))).collect()
    }

    pub fn nat_out_get(&self, key: &NatKey) -> Option<NatEntry> {
        self.nat_out.get(key, 0).ok()
    }

    pub fn remove_nat_out(&mut self, key: &NatKey) -> Result<()> {
        match self.nat_out.remove(key) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(err(spec::NAT_OUT.name, "removing")),
        }
    }

    pub fn remove_nat_in(&mut self, key: &NatKey) -> Result<()> {
        match self.nat_in.remove(key) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(err(spec::NAT_IN.name, "removing")),
        }
    }

    /// `--ip-masq`: the destinations never masqueraded.
    pub fn no_masq(&self) -> Result<Vec<Ipv4Network>> {
        self.no_masq
            .keys()
            .map(|r| {
                let k = r.map_err(err(spec::NO_MASQ.name, "iterating"))?;
                Ok(Ipv4Network::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8).expect("prefix lengths ≤ 32"))
            })
            .collect()
    }

    /// Makes the non-masquerade list exactly `nets`.
    pub fn set_no_masq(&mut self, nets: &[Ipv4Network]) -> Result<()> {
        let key = |n: &Ipv4Network| Key::new(u32::from(n.prefix()), n.network().octets());
        for old in self.no_masq()? {
            if !nets.contains(&old) {
                self.no_masq.remove(&key(&old)).map_err(err(spec::NO_MASQ.name, "removing"))?;
            }
        }
        for n in nets {
            self.no_masq.insert(&key(n), 1, 0).map_err(err(spec::NO_MASQ.name, "inserting"))?;
        }
        Ok(())
    }

    /// `--fast-path`: the flows remembered as leaving through `weft0`.
    pub fn stack_flows(&self) -> Result<Vec<FlowKey>> {
        let name = spec::STACK_FLOWS.name;
        self.stack_flows.keys().map(|r| r.map_err(err(name, "iterating"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use weft_common::counters::{Action, COUNTER_SLOTS, DropReason, Hook, Verdict, counter_index};

    /// Hooks, verdicts and drop reasons keep their numbers (counters already pinned,
    /// dashboards and `bpftool` readers rely on them); new ones are appended.
    #[test]
    fn numbers_never_change() {
        let hooks: Vec<(u32, &str)> = Hook::ALL.iter().map(|h| (h.index(), h.name())).collect();
        assert_eq!(
            hooks,
            [
                (0, "weft0_egress"),
                (1, "uplink_ingress"),
                (2, "uplink_xdp"),
                (3, "pod_veth_ingress"),
                (4, "pod_veth_egress"),
                (5, "weft0_ingress"),
                (6, "bridge_egress"),
                (7, "uplink_egress")
            ]
        );
        let reasons: Vec<(u8, &str)> = Verdict::ALL.iter().filter_map(|v| v.drop_reason()).map(|r| (r as u8, r.name())).collect();
        assert_eq!(
            reasons,
            [
                (1, "no_tunnel"),
                (2, "unknown_peer"),
                (3, "malformed"),
                (4, "not_ipv4"),
                (5, "no_config"),
                (6, "resize"),
                (7, "redirect"),
                (8, "ecn_not_ect"),
                (9, "to_vtep_mac"),
                (10, "nat_exhausted"),
                (11, "nat_fragment"),
                (12, "nat_error"),
                (13, "inner_source"),
                (14, "inner_destination"),
                (15, "spoofed_source")
            ]
        );
        assert_eq!(DropReason::ToVtepMac as u8, 9);
        let last: Vec<(u32, &str)> = Verdict::ALL[21..].iter().map(|v| (v.index(), v.name())).collect();
        assert_eq!(
            last,
            [(21, "drop_inner_source"), (22, "drop_inner_destination"), (23, "drop_spoofed_source"), (24, "tunnel_fragment")]
        );
        for v in Verdict::ALL {
            assert_eq!(v.is_drop(), v.action() == Action::Drop, "{v:?}");
            assert_eq!(Verdict::from_index(v.index()), Some(v));
        }
        // Every (hook, verdict) has its own slot inside the map.
        let mut slots: Vec<u32> = Hook::ALL.iter().flat_map(|&h| Verdict::ALL.map(|v| counter_index(h, v))).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), Hook::ALL.len() * Verdict::ALL.len());
        assert!(slots.iter().all(|&s| s < COUNTER_SLOTS));
    }
}
