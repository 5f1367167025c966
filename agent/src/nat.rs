//! Masquerade (`--ip-masq`) in user space: what the programs are told (the
//! non-masquerade list, the port range, kept out of the node's own sockets' way),
//! the collector that reclaims expired flows, and the table as `weft-agent nat list`
//! prints it. The translation itself is the eBPF programs' (`dataplane-ebpf/src/nat.rs`).

use std::{net::Ipv4Addr, ops::RangeInclusive, str::FromStr, time::Duration};

use ipnetwork::Ipv4Network;
use serde::Serialize;
use thiserror::Error;
use weft_common::{
    nat::{FLAG_INBOUND, NatEntry, NatKey, STATE_CLOSING, STATE_ESTABLISHED, timeout_secs},
    wire::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::maps::{Maps, MapsError};

#[derive(Debug, Error)]
pub enum NatError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("reading the monotonic clock")]
    Clock(#[source] std::io::Error),
    #[error("net.ipv4.ip_local_reserved_ports")]
    Sysctl(#[source] std::io::Error),
}

type Result<T> = std::result::Result<T, NatError>;

/// One range of NAT ports, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    fn len(&self) -> u32 {
        u32::from(self.max - self.min) + 1
    }
}

/// `--nat-port-range`: one or two `MIN-MAX` ranges, comma-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRanges(pub Vec<PortRange>);

impl FromStr for PortRanges {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let (a, b) = part.split_once('-').ok_or_else(|| format!("{part:?}: expected MIN-MAX"))?;
            let port = |p: &str| p.trim().parse::<u16>().map_err(|e| format!("{p:?}: {e}"));
            let (min, max) = (port(a)?, port(b)?);
            if min < 1024 || min > max {
                return Err(format!("{part}: needs 1024 <= MIN <= MAX (ports below 1024 are services')"));
            }
            ranges.push(PortRange { min, max });
        }
        ranges.sort_by_key(|r| r.min);
        if ranges.len() > 2 {
            return Err(format!("{s}: at most two ranges"));
        }
        if ranges.windows(2).any(|w| w[1].min <= w[0].max) {
            return Err(format!("{s}: the ranges overlap"));
        }
        if ranges.iter().map(PortRange::len).sum::<u32>() < 1024 {
            return Err(format!("{s}: fewer than 1024 ports; every concurrent flow to one host and port needs its own"));
        }
        Ok(PortRanges(ranges))
    }
}

impl std::fmt::Display for PortRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|r| format!("{}-{}", r.min, r.max)).collect();
        f.write_str(&parts.join(","))
    }
}

impl PortRanges {
    /// (min, max, min2, max2) as the config carries them (0, 0: no second range).
    pub fn config(&self) -> (u16, u16, u16, u16) {
        let first = self.0[0];
        let second = self.0.get(1).copied().unwrap_or(PortRange { min: 0, max: 0 });
        (first.min, first.max, second.min, second.max)
    }
}

/// The destinations never masqueraded: the cluster network first, then the extra ones.
pub fn no_masq(network: Ipv4Network, extra: &[Ipv4Network]) -> Vec<Ipv4Network> {
    let mut out = vec![network];
    for n in extra {
        // Normalised: the trie keys on the network address.
        let n = Ipv4Network::new(n.network(), n.prefix()).expect("same prefix");
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Keeps the node's own sockets off the NAT ports: the range joins
/// `net.ipv4.ip_local_reserved_ports` (of this network namespace), which the
/// kernel's automatic port choice — `connect` and `bind` to port 0 — skips. A
/// service that binds one of these ports explicitly still can; the default range
/// lies above Linux's ephemeral range, where none does by accident. Returns whether
/// the sysctl changed.
pub fn reserve_ports(wanted: &PortRanges) -> Result<bool> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let now = std::fs::read_to_string(PATH).map_err(NatError::Sysctl)?;
    let mut ranges = parse_port_list(&now);
    let missing: Vec<RangeInclusive<u16>> = wanted
        .0
        .iter()
        .map(|w| w.min..=w.max)
        .filter(|w| !ranges.iter().any(|r| r.start() <= w.start() && r.end() >= w.end()))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    ranges.extend(missing);
    std::fs::write(PATH, format_port_list(&ranges)).map_err(NatError::Sysctl)?;
    Ok(true)
}

/// Takes `wanted`'s ranges back out of `net.ipv4.ip_local_reserved_ports` (`weft-agent
/// uninstall`): those [`reserve_ports`] added, exactly; the rest is left as it is.
/// Returns the ranges removed.
pub fn release_ports(wanted: &PortRanges) -> Result<Vec<String>> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let now = std::fs::read_to_string(PATH).map_err(NatError::Sysctl)?;
    let ranges = parse_port_list(&now);
    let ours = |r: &RangeInclusive<u16>| wanted.0.iter().any(|w| *r.start() == w.min && *r.end() == w.max);
    let removed: Vec<String> = ranges.iter().filter(|r| ours(r)).map(|r| format!("{}-{}", r.start(), r.end())).collect();
    if !removed.is_empty() {
        let kept: Vec<RangeInclusive<u16>> = ranges.into_iter().filter(|r| !ours(r)).collect();
        // A newline at least: an empty write would leave the list as it was.
        std::fs::write(PATH, format_port_list(&kept) + "\n").map_err(NatError::Sysctl)?;
    }
    Ok(removed)
}

/// `1000,2000-2010` → ranges (malformed parts are skipped: the kernel wrote it).
fn parse_port_list(s: &str) -> Vec<RangeInclusive<u16>> {
    s.trim()
        .split(',')
        .filter_map(|p| {
            let p = p.trim();
            match p.split_once('-') {
                Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                None => p.parse().ok().map(|x| x..=x),
            }
        })
        .collect()
}

fn format_port_list(ranges: &[RangeInclusive<u16>]) -> String {
    ranges
        .iter()
        .map(|r| if r.start() == r.end() { r.start().to_string() } else { format!("{}-{}", r.start(), r.end()) })
        .collect::<Vec<_>>()
        .join(",")
}

/// `bpf_ktime_get_ns`'s clock (CLOCK_MONOTONIC), in nanoseconds.
pub fn now_ns() -> Result<u64> {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return Err(NatError::Clock(std::io::Error::last_os_error()));
    }
    Ok(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

/// The reply tuple a translation reserves (as the programs build it).
pub fn reply_key(orig: &NatKey, nat: &NatEntry) -> NatKey {
    let mut key = NatKey { saddr: orig.daddr, daddr: nat.addr, protocol: orig.protocol, ..Default::default() };
    if orig.protocol == IPPROTO_ICMP {
        key.dport = nat.port;
    } else {
        (key.sport, key.dport) = (orig.dport, nat.port);
    }
    key
}

/// The pod's tuple a reply entry restores.
fn original_key(reply: &NatKey, back: &NatEntry) -> NatKey {
    let dport = if reply.protocol == IPPROTO_ICMP { [0; 2] } else { reply.sport };
    NatKey { saddr: back.addr, daddr: reply.saddr, sport: back.port, dport, protocol: reply.protocol, _pad: [0; 3] }
}

fn expired(entry: &NatEntry, protocol: u8, now: u64) -> bool {
    now.saturating_sub(entry.seen_ns) > timeout_secs(protocol, entry.state) * 1_000_000_000
}

/// What one collection found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Flows past their timeout, removed with their reply entries.
    pub expired: u64,
    /// Reply entries whose flow is gone (LRU-evicted, or a race of two first packets).
    pub orphans: u64,
    /// Flows left.
    pub flows: u64,
}

/// Removes flows past their timeout (both entries) and reply entries whose flow is
/// gone. The programs treat an expired flow as live until this runs: collecting
/// every few seconds bounds how long a port stays taken past its timeout.
pub fn collect(maps: &mut Maps, now: u64) -> Result<Collected> {
    let mut c = Collected::default();
    for (key, entry) in maps.nat_out()? {
        if !expired(&entry, key.protocol, now) {
            c.flows += 1;
            continue;
        }
        maps.remove_nat_out(&key)?;
        if entry.flags & FLAG_INBOUND == 0 {
            maps.remove_nat_in(&reply_key(&key, &entry))?;
        }
        c.expired += 1;
    }
    for (key, back) in maps.nat_in()? {
        let orig = original_key(&key, &back);
        let owned = maps.nat_out_get(&orig).is_some_and(|e| reply_key(&orig, &e) == key);
        // A young entry may belong to a flow whose own entry is being written.
        if !owned && now.saturating_sub(back.seen_ns) > 1_000_000_000 {
            maps.remove_nat_in(&key)?;
            c.orphans += 1;
        }
    }
    Ok(c)
}

/// How often the agent collects: a flow's port is free again at most this long
/// after its timeout.
pub const COLLECT_EVERY: Duration = Duration::from_secs(5);

/// Runs [`collect`], keeping totals for the metrics.
#[derive(Debug, Default)]
pub struct Collector {
    pub totals: Collected,
}

impl Collector {
    pub fn run(&mut self, maps: &mut Maps) {
        match now_ns().and_then(|now| collect(maps, now)) {
            Ok(c) => {
                if c.expired + c.orphans > 0 {
                    tracing::debug!(expired = c.expired, orphans = c.orphans, flows = c.flows, "NAT table collected");
                }
                self.totals.expired += c.expired;
                self.totals.orphans += c.orphans;
                self.totals.flows = c.flows;
            }
            Err(e) => tracing::warn!("collecting the NAT table: {e:#}"),
        }
    }
}

/// One flow as `weft-agent nat list` shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Flow {
    pub protocol: &'static str,
    /// The pod's side, as the pod sent.
    pub original: String,
    /// The outside's side.
    pub remote: String,
    /// The source it leaves with (`-` for a flow the outside opened: untranslated).
    pub translated: String,
    pub state: &'static str,
    pub age_seconds: u64,
    pub idle_seconds: u64,
}

fn protocol_name(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        _ => "other",
    }
}

fn endpoint(addr: [u8; 4], port: [u8; 2], protocol: u8) -> String {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => format!("{}:{}", Ipv4Addr::from(addr), u16::from_be_bytes(port)),
        IPPROTO_ICMP => format!("{} id {}", Ipv4Addr::from(addr), u16::from_be_bytes(port)),
        _ => Ipv4Addr::from(addr).to_string(),
    }
}

/// The translation table, oldest first.
pub fn list(maps: &Maps, now: u64) -> Result<Vec<Flow>> {
    let mut flows: Vec<(u64, Flow)> = maps
        .nat_out()?
        .into_iter()
        .map(|(k, e)| {
            let state = match (e.flags & FLAG_INBOUND != 0, e.state) {
                (true, _) => "inbound",
                (_, STATE_ESTABLISHED) => "established",
                (_, STATE_CLOSING) => "closing",
                _ => "new",
            };
            let remote_port = if k.protocol == IPPROTO_ICMP { [0; 2] } else { k.dport };
            let flow = Flow {
                protocol: protocol_name(k.protocol),
                original: endpoint(k.saddr, k.sport, k.protocol),
                remote: if k.protocol == IPPROTO_ICMP {
                    Ipv4Addr::from(k.daddr).to_string()
                } else {
                    endpoint(k.daddr, remote_port, k.protocol)
                },
                translated: if e.flags & FLAG_INBOUND != 0 { "-".into() } else { endpoint(e.addr, e.port, k.protocol) },
                state,
                age_seconds: now.saturating_sub(e.created_ns) / 1_000_000_000,
                idle_seconds: now.saturating_sub(e.seen_ns) / 1_000_000_000,
            };
            (e.created_ns, flow)
        })
        .collect();
    flows.sort_by_key(|(created, _)| *created);
    Ok(flows.into_iter().map(|(_, f)| f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_refuse_what_would_break() {
        let default: PortRanges = weft_common::nat::DEFAULT_PORT_RANGES.parse().unwrap();
        assert_eq!(default.config(), (1024, 32767, 61000, 65535));
        assert_eq!(default.to_string(), weft_common::nat::DEFAULT_PORT_RANGES);
        assert_eq!("61000-65535".parse::<PortRanges>().unwrap().config(), (61000, 65535, 0, 0));
        assert_eq!("61000-65535,2000-3000".parse::<PortRanges>().unwrap().config(), (2000, 3000, 61000, 65535));
        for bad in
            ["61000", "65535-61000", "80-5000", "61000-61100", "a-b", "2000-4000,3000-5000", "2000-3000,4000-5000,6000-7000"]
        {
            assert!(bad.parse::<PortRanges>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_port_lists_round_trip() {
        let r = parse_port_list("1000,2000-2010\n");
        assert_eq!(r, [1000..=1000, 2000..=2010]);
        assert_eq!(format_port_list(&r), "1000,2000-2010");
        assert!(parse_port_list("\n").is_empty());
    }

    #[test]
    fn reply_and_original_keys_are_each_others_inverse() {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
            let sport = [0x30, 0x39];
            let orig = NatKey {
                saddr: [10, 244, 1, 5],
                daddr: [192, 0, 2, 1],
                sport,
                dport: if protocol == IPPROTO_ICMP { [0; 2] } else { [0, 80] },
                protocol,
                _pad: [0; 3],
            };
            let nat = NatEntry { addr: [198, 19, 0, 10], port: 61_234u16.to_be_bytes(), ..Default::default() };
            let reply = reply_key(&orig, &nat);
            let back = NatEntry { addr: orig.saddr, port: orig.sport, ..Default::default() };
            assert_eq!(original_key(&reply, &back), orig, "protocol {protocol}");
        }
    }

    #[test]
    fn timeouts_follow_protocol_and_state() {
        let at = |state, seen_ns| NatEntry { state, seen_ns, ..Default::default() };
        let s = 1_000_000_000u64;
        assert!(!expired(&at(STATE_ESTABLISHED, 0), IPPROTO_TCP, 3600 * s));
        assert!(expired(&at(STATE_CLOSING, 0), IPPROTO_TCP, 11 * s));
        assert!(expired(&at(0, 0), IPPROTO_UDP, 31 * s));
        assert!(!expired(&at(STATE_ESTABLISHED, 0), IPPROTO_UDP, 31 * s));
    }
}
