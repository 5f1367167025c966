//! The node table file of the static mode.
//!
//! One node per line, this node's own included:
//!
//! ```text
//! # NAME   UNDERLAY_IPV4  POD_CIDR       VTEP_MAC
//! node-a   192.0.2.10     10.244.1.0/24  0a:58:0a:f4:01:00
//! ```
//!
//! The file is untrusted input: every problem is reported with its line, and a table
//! with any problem is rejected whole (the agent keeps its last good table).

use std::{
    collections::HashMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnetwork::Ipv4Network;
use thiserror::Error;
use weft_common::MacAddr;

/// A node: where its pods live and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Network,
    pub vtep_mac: Mac,
}

/// A unicast MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub MacAddr);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| format!("MAC {s:?} has fewer than 6 octets"))?;
            if part.len() != 2 {
                return Err(format!("MAC {s:?}: octet {part:?} is not two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("MAC {s:?}: {part:?} is not hex"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC {s:?} has more than 6 octets"));
        }
        if out[0] & 1 != 0 {
            return Err(format!("MAC {s:?} is multicast; a VtepMAC must be unicast"));
        }
        if out == [0; 6] {
            return Err(format!("MAC {s:?} is all zero"));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Error)]
pub enum PeersError {
    #[error("reading node table {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line { path: PathBuf, line: usize, reason: String },
    #[error("{path}: node {name:?} (this node) is not in the table")]
    OwnNodeMissing { path: PathBuf, name: String },
}

/// Every node of the cluster, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTable {
    pub nodes: Vec<NodeEntry>,
}

impl NodeTable {
    /// This node and the others.
    pub fn split<'a>(&'a self, own: &str) -> Option<(&'a NodeEntry, impl Iterator<Item = &'a NodeEntry>)> {
        let me = self.nodes.iter().find(|n| n.name == own)?;
        Some((me, self.nodes.iter().filter(move |n| n.name != own)))
    }
}

pub fn load(path: &Path) -> Result<NodeTable, PeersError> {
    let text = std::fs::read_to_string(path).map_err(|source| PeersError::Read { path: path.into(), source })?;
    parse(&text).map_err(|(line, reason)| PeersError::Line { path: path.into(), line, reason })
}

/// Parses a node table; on error, the 1-based line and the reason.
pub fn parse(text: &str) -> Result<NodeTable, (usize, String)> {
    let mut nodes: Vec<NodeEntry> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut macs: HashMap<Mac, usize> = HashMap::new();
    let mut cidrs: Vec<(Ipv4Network, usize)> = Vec::new();

    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let [name, ip, cidr, mac] = fields[..] else {
            return Err((line, format!("expected 4 fields `NAME UNDERLAY_IPV4 POD_CIDR VTEP_MAC`, found {}", fields.len())));
        };
        let underlay_ip: Ipv4Addr = ip.parse().map_err(|_| (line, format!("{ip:?} is not an IPv4 address")))?;
        if underlay_ip.is_unspecified() || underlay_ip.is_multicast() || underlay_ip.is_broadcast() {
            return Err((line, format!("{ip} cannot be a node's underlay address")));
        }
        let pod_cidr: Ipv4Network = cidr.parse().map_err(|_| (line, format!("{cidr:?} is not an IPv4 CIDR")))?;
        if !(8..=30).contains(&pod_cidr.prefix()) {
            return Err((line, format!("pod CIDR {cidr}: prefix length must be 8..=30")));
        }
        if pod_cidr.network() != pod_cidr.ip() {
            return Err((
                line,
                format!("pod CIDR {cidr} has host bits set (did you mean {}/{}?)", pod_cidr.network(), pod_cidr.prefix()),
            ));
        }
        let vtep_mac: Mac = mac.parse().map_err(|e| (line, e))?;

        if let Some(first) = names.insert(name.to_owned(), line) {
            return Err((line, format!("node {name:?} is already defined on line {first}")));
        }
        if let Some(first) = ips.insert(underlay_ip, line) {
            return Err((line, format!("underlay address {underlay_ip} is already used on line {first}")));
        }
        if let Some(first) = macs.insert(vtep_mac, line) {
            return Err((line, format!("VtepMAC {vtep_mac} is already used on line {first}")));
        }
        if let Some((other, first)) = cidrs.iter().find(|(c, _)| c.overlaps(pod_cidr)) {
            return Err((line, format!("pod CIDR {pod_cidr} overlaps {other} on line {first}")));
        }
        cidrs.push((pod_cidr, line));
        nodes.push(NodeEntry { name: name.to_owned(), underlay_ip, pod_cidr, vtep_mac });
    }
    Ok(NodeTable { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# a comment
node-a 192.0.2.10 10.244.1.0/24 0a:58:0a:f4:01:00

node-b 192.0.2.11 10.244.2.0/24 0a:58:0a:f4:02:00 # trailing comment
";

    #[test]
    fn parses_nodes_comments_and_blank_lines() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[1].name, "node-b");
        assert_eq!(t.nodes[1].underlay_ip, Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(t.nodes[1].pod_cidr, "10.244.2.0/24".parse().unwrap());
        assert_eq!(t.nodes[1].vtep_mac, Mac([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x00]));
        let (me, others) = t.split("node-a").unwrap();
        assert_eq!(me.name, "node-a");
        assert_eq!(others.map(|n| n.name.as_str()).collect::<Vec<_>>(), ["node-b"]);
        assert!(t.split("node-z").is_none());
    }

    fn error_of(text: &str) -> (usize, String) {
        parse(text).expect_err("should be rejected")
    }

    #[test]
    fn rejects_bad_lines_with_line_number_and_reason() {
        let cases: &[(&str, usize, &str)] = &[
            ("a 192.0.2.1 10.244.1.0/24", 1, "expected 4 fields"),
            ("\na 192.0.2.x 10.244.1.0/24 0a:00:00:00:00:01", 2, "not an IPv4 address"),
            ("a 0.0.0.0 10.244.1.0/24 0a:00:00:00:00:01", 1, "cannot be a node's underlay"),
            ("a 192.0.2.1 10.244.1.0 0a:00:00:00:00:01", 1, "prefix length"),
            ("a 192.0.2.1 10.244.1.0/33 0a:00:00:00:00:01", 1, "not an IPv4 CIDR"),
            ("a 192.0.2.1 10.244.1.5/24 0a:00:00:00:00:01", 1, "host bits set (did you mean 10.244.1.0/24?)"),
            ("a 192.0.2.1 10.244.1.0/24 0a:00:00:00:01", 1, "fewer than 6 octets"),
            ("a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01:02", 1, "more than 6 octets"),
            ("a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:zz", 1, "is not hex"),
            ("a 192.0.2.1 10.244.1.0/24 01:00:5e:00:00:01", 1, "multicast"),
            ("a 192.0.2.1 10.244.1.0/24 00:00:00:00:00:00", 1, "all zero"),
            (
                "a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01\na 192.0.2.2 10.244.2.0/24 0a:00:00:00:00:02",
                2,
                "already defined on line 1",
            ),
            (
                "a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01\nb 192.0.2.1 10.244.2.0/24 0a:00:00:00:00:02",
                2,
                "192.0.2.1 is already used on line 1",
            ),
            (
                "a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01\nb 192.0.2.2 10.244.2.0/24 0a:00:00:00:00:01",
                2,
                "VtepMAC 0a:00:00:00:00:01 is already used",
            ),
            (
                "a 192.0.2.1 10.244.0.0/16 0a:00:00:00:00:01\nb 192.0.2.2 10.244.2.0/24 0a:00:00:00:00:02",
                2,
                "overlaps 10.244.0.0/16 on line 1",
            ),
        ];
        for (text, line, reason) in cases {
            let (l, r) = error_of(text);
            assert_eq!((l, r.contains(reason)), (*line, true), "{text:?} gave line {l}: {r}");
        }
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = std::env::temp_dir().join(format!("weft-peers-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nodes");
        std::fs::write(&path, "a b c\n").unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:1: expected 4 fields", path.display())), "{msg}");
        let missing = load(&dir.join("absent")).unwrap_err().to_string();
        assert!(missing.contains("reading node table"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Arbitrary bytes never panic the parser (a cheap stand-in for a fuzzer).
    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"ab019./:# \n\t-zfx";
        for _ in 0..20_000 {
            let len = (seed % 64) as usize;
            let mut s = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            let _ = parse(&s);
        }
        let _ = parse(GOOD);
    }
}
