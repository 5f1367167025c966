//! The free and taken node subnets of `Network`: pure bookkeeping, no I/O.
//!
//! A block is taken while any Node's podCIDR overlaps it, whoever wrote that
//! podCIDR (kube-controller-manager's may have another size, or lie outside
//! `SubnetMin`..`SubnetMax`) or while a write of it to a Node is in flight. The
//! search for a free block starts after the last one handed out (as
//! kube-controller-manager's `CidrSet` does), so a burst of Nodes costs one step
//! each rather than a scan from the start; it wraps around once before it reports
//! exhaustion.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

use crate::netconf::Subnets;

/// An address range, both ends included, as u32s.
type Range = (u32, u32);

fn range(net: Ipv4Network) -> Range {
    let start = u32::from(net.network());
    (start, start + (u32::MAX >> net.prefix().min(31)) * u32::from(net.prefix() < 32))
}

#[derive(Debug)]
pub struct Pool {
    subnets: Subnets,
    /// Taken ranges by start, each with the number of holders (two Nodes may
    /// carry one CIDR when someone else wrote them: freed when both are gone).
    taken: BTreeMap<u32, (u32, u32)>,
    /// Where the next search starts (a block's start).
    next: u32,
    /// The longest taken range minus one: a range overlapping `[s, e]` starts
    /// in `[s - span, e]`.
    span: u32,
}

impl Pool {
    pub fn new(subnets: Subnets) -> Pool {
        Pool { subnets, taken: BTreeMap::new(), next: u32::from(subnets.min), span: 0 }
    }

    fn size(&self) -> u32 {
        1 << (32 - self.subnets.len)
    }

    /// Blocks between `SubnetMin` and `SubnetMax`.
    pub fn capacity(&self) -> u64 {
        u64::from((u32::from(self.subnets.max) - u32::from(self.subnets.min)) / self.size()) + 1
    }

    /// Whether any taken range overlaps `r`.
    fn overlaps(&self, (start, end): Range) -> bool {
        self.taken.range(start.saturating_sub(self.span)..=end).any(|(_, (e, _))| *e >= start)
    }

    /// Marks `cidr` as taken (a Node carries it, or a write of it is in flight).
    pub fn take(&mut self, cidr: Ipv4Network) {
        let (start, end) = range(cidr);
        self.span = self.span.max(end - start);
        let entry = self.taken.entry(start).or_insert((end, 0));
        entry.0 = entry.0.max(end);
        entry.1 += 1;
    }

    /// Gives back one hold on `cidr` (its Node is gone, or the write failed for good).
    pub fn release(&mut self, cidr: Ipv4Network) {
        let (start, _) = range(cidr);
        if let Some(entry) = self.taken.get_mut(&start) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.taken.remove(&start);
            }
        }
    }

    /// Blocks of the pool a Node holds or a write holds.
    pub fn used(&self) -> u64 {
        let (min, max) = (u32::from(self.subnets.min), u32::from(self.subnets.max) + self.size() - 1);
        let size = u64::from(self.size());
        self.taken
            .iter()
            .filter(|(s, (e, _))| **s <= max && *e >= min)
            .map(|(s, (e, _))| (u64::from((*e).min(max)) - u64::from((*s).max(min)) + 1).div_ceil(size))
            .sum()
    }

    /// The next free block, taken at once; `None` when every block overlaps a
    /// taken range (the pool is exhausted).
    pub fn allocate(&mut self) -> Option<Ipv4Network> {
        let (min, max, size) = (u32::from(self.subnets.min), u32::from(self.subnets.max), self.size());
        let count = self.capacity();
        let mut at = if (min..=max).contains(&self.next) { self.next } else { min };
        for _ in 0..count {
            if !self.overlaps((at, at + size - 1)) {
                let cidr = Ipv4Network::new(Ipv4Addr::from(at), self.subnets.len).expect("a valid prefix length");
                self.take(cidr);
                self.next = if at >= max { min } else { at + size };
                return Some(cidr);
            }
            at = if at >= max { min } else { at + size };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(net: &str, len: u8, min: Option<&str>, max: Option<&str>) -> Pool {
        let subnets =
            Subnets::new(net.parse().unwrap(), Some(len), min.map(|m| m.parse().unwrap()), max.map(|m| m.parse().unwrap()))
                .unwrap();
        Pool::new(subnets)
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn hands_out_each_block_once_then_reports_exhaustion() {
        let mut p = pool("10.0.0.0/22", 24, None, None);
        assert_eq!(p.capacity(), 3, "the first block is skipped, as Flannel skips it");
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(got, [net("10.0.1.0/24"), net("10.0.2.0/24"), net("10.0.3.0/24")]);
        assert_eq!((p.allocate(), p.used()), (None, 3));
        p.release(net("10.0.2.0/24"));
        assert_eq!(p.allocate(), Some(net("10.0.2.0/24")), "a freed block is reused");
    }

    #[test]
    fn foreign_cidrs_of_any_size_are_avoided() {
        let mut p = pool("10.0.0.0/16", 24, Some("10.0.4.0"), Some("10.0.11.0"));
        p.take(net("10.0.4.0/23")); // two blocks, written by someone else
        p.take(net("10.0.7.128/25")); // half a block
        p.take(net("10.9.0.0/24")); // outside Network: irrelevant
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        let want: Vec<_> = ["10.0.6.0/24", "10.0.8.0/24", "10.0.9.0/24", "10.0.10.0/24", "10.0.11.0/24"].map(net).into();
        assert_eq!(got, want);
        assert_eq!(p.used(), 8);
        p.take(net("10.0.0.0/16"));
        p.release(net("10.0.9.0/24"));
        assert_eq!(p.allocate(), None, "a CIDR spanning the network blocks everything");
    }

    #[test]
    fn a_cidr_held_twice_is_freed_by_its_last_holder() {
        let mut p = pool("10.0.0.0/24", 26, None, Some("10.0.0.64"));
        p.take(net("10.0.0.64/26"));
        p.take(net("10.0.0.64/26"));
        p.release(net("10.0.0.64/26"));
        assert_eq!(p.allocate(), None);
        p.release(net("10.0.0.64/26"));
        assert_eq!(p.allocate(), Some(net("10.0.0.64/26")));
    }

    #[test]
    fn the_search_continues_after_the_last_block() {
        let mut p = pool("10.0.0.0/16", 24, None, None);
        assert_eq!(p.allocate(), Some(net("10.0.1.0/24")));
        assert_eq!(p.allocate(), Some(net("10.0.2.0/24")));
        p.release(net("10.0.1.0/24"));
        assert_eq!(p.allocate(), Some(net("10.0.3.0/24")), "not the block just freed");
        assert_eq!(p.capacity(), 255);
    }
}
